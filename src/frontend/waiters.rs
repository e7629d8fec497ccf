//! Requests waiting for their job's final answer, keyed by job id. The response listener
//! completes them; a request that gives up removes itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::job::Outcome;

/// Pending synchronous requests (several may wait for one job: retries with one
/// `Idempotency-Key`). A std mutex: held for one map operation, never across an await.
#[derive(Clone, Default)]
pub struct Waiters {
    pending: Arc<Mutex<HashMap<Uuid, Vec<oneshot::Sender<Outcome>>>>>,
}

impl Waiters {
    /// Registers interest in `job_id` before the job is queued, so a fast answer is not missed.
    pub fn register(&self, job_id: Uuid) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.lock().entry(job_id).or_default().push(tx);
        rx
    }

    /// Hands a final outcome to every request waiting for it.
    pub fn complete(&self, job_id: Uuid, outcome: Outcome) {
        for tx in self.lock().remove(&job_id).unwrap_or_default() {
            let _ = tx.send(outcome.clone());
        }
    }

    /// Forgets the requests for `job_id` that stopped waiting (dropped their receiver: a
    /// timeout, shutdown, or the job could not be queued).
    pub fn forget(&self, job_id: Uuid) {
        let mut pending = self.lock();
        if let Some(waiting) = pending.get_mut(&job_id) {
            waiting.retain(|tx| !tx.is_closed());
            if waiting.is_empty() {
                pending.remove(&job_id);
            }
        }
    }

    /// How many requests are waiting.
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<oneshot::Sender<Outcome>>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}
