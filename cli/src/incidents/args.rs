//! What `cordon incidents` takes: its subcommands and their arguments.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use cordon_api::incidents::{Stage, MAX_TIER};

#[derive(Debug, Subcommand)]
pub enum IncidentsCommand {
    /// Incidents, most recently changed first.
    List {
        /// Only incidents in this stage (alert, assessment, collection, analysis, escalation,
        /// response, investigation, remediation, closed, false_positive).
        #[arg(long, value_parser = parse_stage)]
        stage: Option<Stage>,
        /// Only incidents that are not closed or false positive.
        #[arg(long)]
        open: bool,
        /// Only incidents involving this agent (id, id prefix or hostname).
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
    },
    /// One incident: its header, hosts, containment still active, and the timeline.
    Show {
        /// The incident's id, or a unique prefix of it.
        id: String,
    },
    /// Open an incident by hand (it starts in the alert stage).
    #[command(
        after_help = "Example:\n  cordon incidents create --title 'beacon from web-1' --kind c2 \
                            --severity high --agent web-1 --label env=prod"
    )]
    Create {
        /// One line saying what happened.
        #[arg(long)]
        title: String,
        /// What kind of incident: malware, c2, brute_force, ransomware, or any word playbooks
        /// are written for (a-z, 0-9, '_', '-', '.').
        #[arg(long)]
        kind: String,
        /// low, medium (default), high or critical.
        #[arg(long)]
        severity: Option<String>,
        /// A host involved (hostname, agent id or id prefix); repeat for more.
        #[arg(long = "agent")]
        agents: Vec<String>,
        /// A label, e.g. env=prod; repeat for more.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Who works on it.
        #[arg(long)]
        assignee: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Move an incident to another stage.
    #[command(
        after_help = "Stages: alert → assessment → collection → analysis → escalation → \
                            response → investigation → remediation → closed, or false_positive.\n\
                            Open stages move freely, but never back to alert; false_positive only \
                            up to analysis; closed from remediation, or earlier with --force \
                            --reason; closing while containment is active needs --force --reason; \
                            a closed incident reopens into assessment only, with --reason."
    )]
    Stage {
        /// The incident's id, or a unique prefix of it.
        id: String,
        /// The stage to move to.
        #[arg(value_parser = parse_stage)]
        stage: Stage,
        /// Why (kept on the timeline; needed with --force and to reopen).
        #[arg(long)]
        reason: Option<String>,
        /// Past the rules that can be overridden (closing early or with containment still
        /// active); needs --reason.
        #[arg(long)]
        force: bool,
    },
    /// Set who works on an incident, or clear it with --none.
    Assign {
        /// The incident's id, or a unique prefix of it.
        id: String,
        /// The person (or queue) it is assigned to.
        #[arg(required_unless_present = "none", conflicts_with = "none")]
        user: Option<String>,
        /// Unassign it.
        #[arg(long)]
        none: bool,
    },
    /// Escalate an incident to a higher tier and, optionally, a team or role.
    Escalate {
        /// The incident's id, or a unique prefix of it.
        id: String,
        /// The tier it goes to (1-5); default: one above the current.
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=MAX_TIER))]
        tier: Option<i64>,
        /// The team or role taking it, e.g. ir-team or forensics.
        #[arg(long)]
        to: Option<String>,
        /// Why (kept on the timeline).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Change an incident's severity (low, medium, high, critical).
    Severity {
        /// The incident's id, or a unique prefix of it.
        id: String,
        /// low, medium, high or critical.
        severity: String,
    },
    /// Add a comment to an incident's timeline.
    Comment {
        /// The incident's id, or a unique prefix of it.
        id: String,
        /// The comment (quote it).
        text: String,
    },
    /// Close an incident (from remediation; earlier only with --force --reason), or mark it a
    /// false positive (up to analysis).
    Close {
        /// The incident's id, or a unique prefix of it.
        id: String,
        /// It was a false positive: nothing happened.
        #[arg(long)]
        false_positive: bool,
        /// Why (kept on the timeline; needed with --force).
        #[arg(long)]
        reason: Option<String>,
        /// Close early or with containment still active; needs --reason.
        #[arg(long)]
        force: bool,
    },
    /// Hosts of an incident.
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// Attach an existing task, hunt, action or evidence to an incident (its host joins the
    /// incident); what happens to it then shows on the timeline.
    Attach {
        /// The incident's id, or a unique prefix of it.
        id: String,
        #[command(flatten)]
        what: AttachWhat,
    },
    /// The incident's report: summary, hosts, timeline, evidence with hashes (re-verified),
    /// actions with signers and verified receipts, containment still active.
    Report {
        /// The incident's id, or a unique prefix of it.
        id: String,
        /// markdown (default) or json (the default with --json).
        #[arg(long, value_enum)]
        format: Option<ReportFormat>,
        /// Write the report to this file (never overwritten) instead of printing it.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// The incidents most like this one, most similar first: why (shared observables, hosts
    /// and alert rules, weighted by how rare they are), how each ended, and the containment
    /// that ran there.
    Similar {
        /// The incident's id, or a unique prefix of it.
        id: String,
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=50))]
        limit: u64,
        /// Share of all incidents above which a shared thing is noise.
        #[arg(long, default_value_t = cordon_api::similar::DEFAULT_NOISE_SHARE)]
        noise_share: f64,
    },
    /// Propose again what worked on similar incidents that were closed and never reopened,
    /// mapped onto this incident's hosts and files: pending actions you approve with your own
    /// key (cordon approve ACTION). Nothing is signed or run; suggesting twice proposes
    /// nothing twice.
    Suggest {
        /// The incident's id, or a unique prefix of it.
        id: String,
    },
    /// The incident's observables for other tools: a STIX 2.1 bundle (observed data for every
    /// value, an indicator and a sighting for each malicious or suspicious one) or a MISP event.
    Export {
        /// The incident's id, or a unique prefix of it.
        id: String,
        #[arg(long, value_enum, default_value = "stix")]
        format: ExportFormat,
        /// Write it to this file (never overwritten) instead of printing it.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// Add hosts (agent ids or hostnames) to an incident.
    Add {
        /// The incident's id, or a unique prefix of it.
        id: String,
        #[arg(required = true)]
        agents: Vec<String>,
    },
}

/// Exactly one thing to attach.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct AttachWhat {
    /// A task id or unique prefix (e.g. from `cordon ps --agent A`).
    #[arg(long)]
    pub task: Option<String>,
    /// A hunt id or unique prefix.
    #[arg(long)]
    pub hunt: Option<String>,
    /// A containment action id or unique prefix.
    #[arg(long)]
    pub action: Option<String>,
    /// Stored evidence, by SHA-256 or a unique prefix of it.
    #[arg(long)]
    pub evidence: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Stix,
    Misp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Markdown,
    Json,
}

fn parse_stage(s: &str) -> Result<Stage, String> {
    s.parse::<Stage>().map_err(|e| e.to_string())
}
