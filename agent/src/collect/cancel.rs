//! Cancellation for collectors, which run on blocking threads: aborting the async task that
//! waits for one cannot stop the thread, so every long loop (hashing, streaming, walking a tree,
//! hashing executables) checks a [`Cancel`] that is set when that task is cancelled or dropped.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use cordon_protocol::message::{TaskError, TaskErrorCode};

use super::task_error;

/// Whether the task a collector works for is still wanted. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag nobody sets (tests, benchmarks, containment actions, which are never cancelled).
    pub fn never() -> Self {
        Self::default()
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The error a collector that stopped for it returns.
    pub fn error(what: &str) -> TaskError {
        task_error(
            TaskErrorCode::Cancelled,
            format!("{what}: cancelled; the work stopped"),
        )
    }
}

/// Sets its [`Cancel`] when dropped: hold it in the async task, hand [`CancelOnDrop::cancel`]
/// to the blocking thread.
#[derive(Debug, Default)]
pub struct CancelOnDrop(Cancel);

impl CancelOnDrop {
    pub fn cancel(&self) -> Cancel {
        self.0.clone()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0 .0.store(true, Ordering::Relaxed);
    }
}
