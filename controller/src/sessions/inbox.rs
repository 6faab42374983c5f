//! One agent session's way into the domain. The gateway opens an inbox once the agent's hello
//! checks out, hands it every message the agent sends and every task it could not send, and
//! closes it when the connection ends; what each message means (a start to write, a result to
//! store, evidence to assemble, a file change, a new policy) is decided here.

use std::{net::SocketAddr, time::Duration};

use cordon_protocol::{
    inventory::Inventory,
    message::{AgentMessage, TaskResult},
};
use tokio::time::Instant;

use crate::{
    now_ms,
    sessions::{registry::Registration, starts::Starts, transfer::Transfers},
    state::Shared,
    watches::ChangeWriter,
};

/// How often a connected agent's last-seen time is written to the store. Heartbeats in between
/// only touch memory, so 10,000 agents do not turn into a write storm.
const LAST_SEEN_WRITE_INTERVAL: Duration = Duration::from_secs(30);

/// What one session has brought in and not finished with.
pub struct Inbox {
    controller: Shared,
    agent_id: String,
    conn_id: u64,
    transfers: Transfers,
    changes: ChangeWriter,
    // Starts are written with their task's end when it comes soon (see `starts`).
    starts: Starts,
    last_seen_written: Instant,
}

impl Inbox {
    /// Registers the session of `agent_id` (replacing an older one) and records it in the
    /// store. The registration is the gateway's: what to send the agent, and when to hang up.
    /// An error is the reason to give the agent.
    pub async fn open(
        controller: &Shared,
        agent_id: &str,
        peer: SocketAddr,
        inventory: &Inventory,
    ) -> Result<(Inbox, Registration), String> {
        let registration = controller.registry.register(agent_id, peer, now_ms());
        if let Err(e) = controller
            .store
            .agent_connected(agent_id, inventory, now_ms())
            .await
        {
            tracing::error!(%agent_id, error = %e, "cannot record agent session in the store");
            controller
                .registry
                .unregister(agent_id, registration.conn_id);
            return Err("controller store unavailable; try again later".into());
        }
        let inbox = Inbox {
            controller: controller.clone(),
            agent_id: agent_id.to_string(),
            conn_id: registration.conn_id,
            transfers: Transfers::default(),
            changes: ChangeWriter::new(controller, agent_id),
            starts: Starts::default(),
            last_seen_written: Instant::now(),
        };
        Ok((inbox, registration))
    }

    /// The agent has been told it is accepted: what waited for it goes out (the session loop
    /// drains it), and its file watches too, in case it restarted and lost them.
    pub async fn accepted(&self) {
        self.controller.dispatch_queued(&self.agent_id).await;
        self.controller.resend_watches(&self.agent_id).await;
    }

    /// One message from the agent.
    pub async fn receive(&mut self, message: AgentMessage) {
        let controller = &self.controller;
        let agent_id = self.agent_id.as_str();
        match message {
            AgentMessage::Heartbeat { .. } => {
                if self.last_seen_written.elapsed() >= LAST_SEEN_WRITE_INTERVAL {
                    self.last_seen_written = Instant::now();
                    controller.presence.seen(agent_id, now_ms());
                }
            }
            AgentMessage::TaskStarted { task_id } => {
                let overflow = self.starts.push(task_id, now_ms(), Instant::now());
                controller.tasks_started(agent_id, overflow).await;
            }
            AgentMessage::TaskResult(result) => self.finished(result).await,
            AgentMessage::Chunk(chunk) => {
                self.transfers.push(controller, agent_id, chunk).await;
            }
            AgentMessage::Event(event) => self.changes.push(event).await,
            AgentMessage::PolicyChanged(policy) => {
                controller.agent_policy_changed(agent_id, policy).await;
            }
        }
    }

    /// A task the gateway could not send, with the failure it ends with instead.
    pub async fn undeliverable(&mut self, result: TaskResult) {
        self.finished(result).await;
    }

    async fn finished(&mut self, result: TaskResult) {
        let started_at_ms = self.starts.take(&result.task_id);
        // In-memory tasks (pings, load tests) first; otherwise a stored task.
        if let Some(result) = self.controller.registry.complete(&self.agent_id, result) {
            let staged = self.transfers.finish(&result.task_id);
            self.controller
                .task_finished(&self.agent_id, result, staged, started_at_ms)
                .await;
        }
    }

    /// When the oldest start held back is due to be written alone, if one is held.
    pub fn next_due(&self) -> Option<Instant> {
        self.starts.next_due()
    }

    /// Writes the starts that are due.
    pub async fn write_due(&mut self) {
        let due = self.starts.take_due(Instant::now());
        self.controller.tasks_started(&self.agent_id, due).await;
    }

    /// The connection has ended. Unless a newer session of the same agent replaced this one
    /// (then the agent is still online, and what it was sent is in that session's hands), the
    /// agent is offline and what it was sent is queued again.
    pub async fn close(self) {
        if self
            .controller
            .registry
            .unregister(&self.agent_id, self.conn_id)
        {
            self.controller.presence.gone(&self.agent_id, now_ms());
            self.controller.agent_disconnected(&self.agent_id).await;
        }
    }
}
