//! Dead letters: a job whose message reaches the dead-letter queue ends `failed`, with a
//! reason starting `dead_lettered:` and the last error, and the request waiting for it is
//! answered. The message stays in the dead-letter queue (for its retention) for an operator to
//! look at and redrive; a redriven job that then completes takes its new answer.
//!
//! Every front end reads the dead-letter queue; the first to see a message records the failure
//! in its index and sends it to the job's own front end (the reply queue the message names),
//! whose listener answers its waiter. Doing it twice changes nothing: a final job stays final.
//!
//! A message is hidden only while it is handled (milliseconds) and made visible again at once,
//! so an operator's peek, drop and redrive (`skyburst admin`; SQS moves and peeks only visible
//! messages) always find it. The reader remembers the messages it handled; once it has gone
//! through as many known ones in a row as the queue holds (a whole round: SQS hands messages out
//! in no order, the embedded queue oldest first), it pauses for [`IDLE`].

use std::time::Duration;

use tokio::sync::watch;

use super::AppState;
use crate::job::{self, reason, JobRequest, JobResponse, Outcome};
use crate::queue::Delivery;

/// How long a dead letter stays hidden while it is handled, should this front end stop midway.
const HANDLING: Duration = Duration::from_secs(30);
/// The pause after a whole round of messages already handled.
const IDLE: Duration = Duration::from_secs(30);
/// Message ids remembered as handled; the oldest are forgotten first (looking at one again
/// costs an index read).
const REMEMBERED: usize = 100_000;
/// Pause after a failure before trying again.
const BACKOFF: Duration = Duration::from_secs(5);
/// Messages per receive: SQS's maximum.
const BATCH: usize = 10;

/// Runs until `shutdown` turns true.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut handled = Handled::default();
    // Messages already handled received since the last new one.
    let mut known_in_a_row = 0u64;
    loop {
        let received = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            received = state.dead_letters.receive(BATCH, state.settings.long_poll, HANDLING) => received,
        };
        let pause = match received {
            Ok(deliveries) => {
                let mut new = false;
                for delivery in &deliveries {
                    if handled.insert(&delivery.message_id) {
                        new = true;
                        handle(&state, delivery).await;
                    }
                    if let Err(e) = state.dead_letters.extend_visibility(&delivery.receipt, Duration::ZERO).await {
                        tracing::warn!(error = %e, "cannot make a dead letter visible again; it is after 30 s");
                    }
                }
                known_in_a_row = if new { 0 } else { known_in_a_row + deliveries.len() as u64 };
                let round = state.dead_letters.depth().await.map_or(0, |d| d.visible + d.in_flight);
                let idle = deliveries.is_empty() || (!new && known_in_a_row >= round);
                if idle {
                    known_in_a_row = 0;
                }
                // An empty receive already waited its long poll.
                (idle && !deliveries.is_empty()).then_some(IDLE)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the dead-letter queue; retrying");
                Some(BACKOFF)
            }
        };
        if let Some(pause) = pause {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// The ids of the dead letters handled, oldest forgotten first past [`REMEMBERED`].
#[derive(Default)]
struct Handled {
    ids: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
}

impl Handled {
    /// Remembers `id`; whether it is new.
    fn insert(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_string()) {
            return false;
        }
        self.order.push_back(id.to_string());
        if self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        true
    }
}

/// Fails the job of one dead letter, unless it already ended.
async fn handle(state: &AppState, delivery: &Delivery) {
    let request: JobRequest = match serde_json::from_str(&delivery.body) {
        Ok(request) => request,
        Err(e) => {
            if delivery.receive_count == 1 {
                tracing::error!(message_id = %delivery.message_id, error = %e, "an unreadable message is in the dead-letter queue; see `skyburst admin dead-letters`");
            }
            return;
        }
    };
    let job_id = request.job_id;
    match state.index.job(job_id).await {
        Ok(Some(record)) if record.finished_at_ms.is_some() => return,
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(%job_id, error = %e, "cannot read the index; the dead letter comes back");
            return;
        }
    }
    let response = JobResponse {
        job_id,
        outcome: Outcome::Failed { reason: why(&request, state.settings.max_receives) },
        instance: state.settings.instance_id.clone(),
        pool: String::new(),
        detector_ms: 0.0,
        at_ms: job::now_ms(),
    };
    if request.reply_queue != state.responses.name() {
        let body = serde_json::to_string(&response).expect("a JobResponse always serializes");
        if let Err(e) = state.replies.get(&request.reply_queue).send(&body, Duration::ZERO).await {
            tracing::warn!(%job_id, queue = %request.reply_queue, error = %e, "cannot tell the job's front end it failed");
        }
    }
    match super::listener::record(state, response).await {
        Ok(_) => tracing::warn!(%job_id, attempts = request.attempts, "dead-lettered job failed"),
        Err(e) => tracing::warn!(%job_id, error = %e, "cannot record a dead-lettered job; it comes back"),
    }
}

/// The reason a dead-lettered job shows: its last error, or that no worker ever answered.
fn why(request: &JobRequest, max_receives: u32) -> String {
    let detail = match &request.last_error {
        Some(error) => format!("{} failed attempts (queue.max_attempts); the last: {error}", request.attempts),
        None => format!(
            "delivered {max_receives} times (queue.max_receives) without an answer: the worker crashed, was killed \
             or hung each time"
        ),
    };
    reason::with(reason::DEAD_LETTERED, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_ids_are_remembered_up_to_a_bound() {
        let mut handled = Handled::default();
        assert!(handled.insert("a"));
        assert!(!handled.insert("a"));
        for i in 0..REMEMBERED {
            handled.insert(&i.to_string());
        }
        assert_eq!(handled.ids.len(), REMEMBERED);
        assert!(handled.insert("a"), "the oldest was forgotten");
    }

    #[test]
    fn the_reason_names_the_last_error_or_the_deliveries() {
        let mut request: JobRequest = serde_json::from_str(
            r#"{"job_id":"67e55044-10b1-426f-9247-bb680e5fe0c8","bucket":"b","key":"k","reply_queue":"r","enqueued_at_ms":1}"#,
        )
        .unwrap();
        assert_eq!(
            why(&request, 10),
            "dead_lettered: delivered 10 times (queue.max_receives) without an answer: the worker crashed, was killed or hung each time"
        );
        request.attempts = 3;
        request.last_error = Some("the detector failed: out of memory".into());
        assert!(why(&request, 10).starts_with("dead_lettered: 3 failed attempts"));
        assert!(why(&request, 10).ends_with("the last: the detector failed: out of memory"));
    }
}
