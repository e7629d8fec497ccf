//! Requests waiting for their job's final answer, keyed by job id. The response listener
//! completes them; a request that gives up removes itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::job::Outcome;

/// Pending synchronous requests. A std mutex: held for one map operation, never across an await.
#[derive(Clone, Default)]
pub struct Waiters {
    pending: Arc<Mutex<HashMap<Uuid, oneshot::Sender<Outcome>>>>,
}

impl Waiters {
    /// Registers interest in `job_id` before the job is queued, so a fast answer is not missed.
    pub fn register(&self, job_id: Uuid) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(job_id, tx);
        rx
    }

    /// Hands a final outcome to the request waiting for it, if any.
    pub fn complete(&self, job_id: Uuid, outcome: Outcome) {
        if let Some(tx) = self.lock().remove(&job_id) {
            let _ = tx.send(outcome);
        }
    }

    /// Stops waiting for `job_id` (timeout, shutdown, or the job could not be queued).
    pub fn forget(&self, job_id: Uuid) {
        self.lock().remove(&job_id);
    }

    /// How many requests are waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<Outcome>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}
