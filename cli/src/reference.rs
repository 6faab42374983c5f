//! The CLI reference, `docs/cli-reference.md`: every command's `--help`, generated from the
//! same clap definitions the binary parses with, so the document and `--help` never disagree.
//! A test fails when the committed file is not what this generates; regenerate it with
//! `CORDON_BLESS=1 cargo test -p cordon-cli reference`.

use clap::{Command, CommandFactory};

/// The reference, as Markdown.
pub fn markdown() -> String {
    let mut cli = scrub(crate::Cli::command());
    cli.build();
    let mut out = String::from(
        "# `cordon` CLI reference\n\n\
         Every command's `--help`, generated from the CLI's own definitions (see\n\
         `cli/src/reference.rs`); the guide is [cli.md](cli.md).\n",
    );
    walk(&mut cli, "cordon", &mut out);
    out
}

/// `cmd` with no environment variable's value shown (the generator's environment is not the
/// reader's), all the way down.
fn scrub(cmd: Command) -> Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    let cmd = cmd.mut_args(|arg| arg.hide_env_values(true));
    names
        .iter()
        .fold(cmd, |cmd, name| cmd.mut_subcommand(name, scrub))
}

fn walk(cmd: &mut Command, path: &str, out: &mut String) {
    let help = cmd.render_long_help().to_string();
    let help: Vec<&str> = help.trim_end().lines().map(str::trim_end).collect();
    out.push_str(&format!(
        "\n## `{path}`\n\n```text\n{}\n```\n",
        help.join("\n")
    ));
    for sub in cmd.get_subcommands_mut() {
        if sub.get_name() == "help" {
            continue;
        }
        let path = format!("{path} {}", sub.get_name());
        walk(sub, &path, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli-reference.md");
        let generated = markdown();
        if std::env::var_os("CORDON_BLESS").is_some() {
            std::fs::write(path, &generated).unwrap_or_else(|e| panic!("write {path}: {e}"));
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} is not what the CLI's definitions say; regenerate it with \
             CORDON_BLESS=1 cargo test -p cordon-cli reference"
        );
    }

    #[test]
    fn every_command_is_in_it_and_no_environment_leaks_in() {
        let text = markdown();
        for command in ["## `cordon quarantined`", "## `cordon incidents hosts add`"] {
            assert!(text.contains(command), "{command} missing");
        }
        assert!(!text.contains("[env: CORDON_URL="), "env values are hidden");
        assert!(text.contains("[env: CORDON_URL]"));
    }
}
