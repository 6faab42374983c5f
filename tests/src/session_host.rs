//! A host that is only a session: an agent enrolled for real whose session the test holds by
//! hand, reporting what the test chooses and answering tasks as the test says, touching
//! nothing on this machine.

use std::time::Duration;

use cordon_api::agents::AgentStatus;
use cordon_protocol::{
    hello::{AgentHello, HelloOutcome},
    message::{AgentMessage, ControllerMessage, Task},
};
use tokio_util::sync::CancellationToken;

use crate::{agent_tls, hello_for, open_session, Deployment, TestAgent};

/// A session held for an enrolled agent; closed when dropped.
pub struct SessionHost {
    /// The agent's id.
    pub id: String,
    _agent: TestAgent,
    shutdown: CancellationToken,
}

impl SessionHost {
    /// Enrols an agent, opens its session with [`hello_for`] as `edit` changes it, heartbeats
    /// every 200 ms, sends the messages `on_task` gives for each task (called with the agent's
    /// id; none: unanswered), and returns once the controller shows the host online.
    pub async fn start(
        deployment: &Deployment,
        edit: impl FnOnce(&mut AgentHello),
        mut on_task: impl FnMut(&str, Task) -> Vec<AgentMessage> + Send + 'static,
    ) -> Self {
        let agent = deployment.enroll_agent().await;
        let mut hello = hello_for(&agent.id);
        edit(&mut hello);
        let (answer, mut conn) =
            open_session(deployment.agent_addr, agent_tls(agent.data_dir()), &hello)
                .await
                .expect("simulated host session");
        assert!(
            matches!(answer.outcome, HelloOutcome::Accepted { .. }),
            "{answer:?}"
        );
        let id = agent.id.clone();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let agent_id = id.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(200));
            let mut seq = 0;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticker.tick() => {
                        seq += 1;
                        if conn.send(&AgentMessage::Heartbeat { seq }).await.is_err() { return; }
                    }
                    message = conn.recv::<ControllerMessage>() => match message {
                        Ok(Some(ControllerMessage::Task(task))) => {
                            for reply in on_task(&agent_id, task) {
                                if conn.send(&reply).await.is_err() { return; }
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => return,
                    },
                }
            }
        });
        deployment.wait_for_status(&id, AgentStatus::Online).await;
        SessionHost {
            id,
            _agent: agent,
            shutdown,
        }
    }
}

impl Drop for SessionHost {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
