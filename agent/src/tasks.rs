//! Runs one task and produces its result. Collectors and actions plug in here, one module each.

use cordon_protocol::message::{TaskError, TaskErrorCode, TaskKind, TaskOutput};

/// Runs `kind`. Tasks this agent version cannot do are answered `Unsupported`, never ignored.
pub async fn execute(kind: TaskKind) -> Result<TaskOutput, TaskError> {
    match kind {
        TaskKind::Ping => Ok(TaskOutput::Pong),
        TaskKind::Inventory => tokio::task::spawn_blocking(crate::inventory::collect)
            .await
            .map(TaskOutput::Inventory)
            .map_err(|e| TaskError {
                code: TaskErrorCode::Internal,
                message: format!("inventory collection failed: {e}"),
            }),
        other => Err(TaskError {
            code: TaskErrorCode::Unsupported,
            message: format!(
                "agent {} does not support task {}",
                env!("CARGO_PKG_VERSION"),
                task_name(&other)
            ),
        }),
    }
}

fn task_name(kind: &TaskKind) -> &'static str {
    match kind {
        TaskKind::Ping => "ping",
        TaskKind::Inventory => "inventory",
        TaskKind::Processes { .. } => "processes",
        TaskKind::ProcessDetail { .. } => "process detail",
        TaskKind::Network => "network",
        TaskKind::System => "system",
        TaskKind::FileStat { .. } => "file stat",
        TaskKind::FileHash { .. } => "file hash",
        TaskKind::ListDir(_) => "directory listing",
        TaskKind::FetchFile { .. } => "file fetch",
        TaskKind::Snapshot => "snapshot",
        TaskKind::Watch { .. } => "watch",
        TaskKind::Unwatch { .. } => "unwatch",
        TaskKind::Hunt(_) => "hunt",
        TaskKind::Action(_) => "containment action",
    }
}
