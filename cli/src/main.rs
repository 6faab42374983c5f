//! `cordon`: the responder CLI. All of it lives in the `cordon_cli` library.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cordon_cli::main().await
}
