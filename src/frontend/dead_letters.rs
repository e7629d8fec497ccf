//! Dead letters: a job whose message reaches the dead-letter queue ends `failed`, with a
//! reason starting `dead_lettered:` and the last error, and the request waiting for it is
//! answered. The message stays in the dead-letter queue (for its retention) for an operator to
//! look at and redrive; a redriven job that then completes takes its new answer.
//!
//! Every front end reads the dead-letter queue; the first to see a message records the failure
//! in its index and sends it to the job's own front end (the reply queue the message names),
//! whose listener answers its waiter. Doing it twice changes nothing: a final job stays final.
//!
//! The reader only peeks ([`crate::queue::admin::QueueAdmin::peek`]: the embedded queue reads
//! the rows, SQS receives with a visibility timeout of 0), so a dead letter is never hidden
//! from an operator's peek, drop or redrive (`skyburst admin`; SQS moves and peeks only visible
//! messages) and never counted as received. It remembers the messages it handled (for
//! [`FORGET`]) and looks again after [`POLL`], slowing to [`IDLE`] while nothing new comes.

use std::time::Duration;

use tokio::sync::watch;

use super::AppState;
use crate::job::{self, reason, JobRequest, JobResponse, Outcome};
use crate::queue::admin::Peeked;

/// The pause after a look that found a new dead letter; each look that finds none doubles it,
/// up to [`IDLE`]. A waiting client hears of a dead-lettered job within [`IDLE`], and an idle
/// SQS dead-letter queue costs a few receives a minute, not one a second.
const POLL: Duration = Duration::from_secs(1);
/// The longest pause between looks.
const IDLE: Duration = Duration::from_secs(8);
/// Messages looked at per look; more are looked at in the next one.
const PEEK: usize = 1000;
/// Message ids remembered as handled; the oldest are forgotten first (looking at one again
/// costs an index read).
const REMEMBERED: usize = 100_000;
/// Pause after a failure before trying again.
const BACKOFF: Duration = Duration::from_secs(5);
/// How long handled ids are remembered: then every dead letter is looked at again (an index
/// read each), which finds a job an operator redrove and that was dead-lettered once more
/// (the embedded queue keeps a message's id when it moves it).
const FORGET: Duration = Duration::from_secs(600);

/// Runs until `shutdown` turns true.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut handled = Handled::default();
    let mut remembered_since = tokio::time::Instant::now();
    let mut idle = POLL;
    loop {
        if remembered_since.elapsed() >= FORGET {
            (handled, remembered_since) = (Handled::default(), tokio::time::Instant::now());
        }
        let pause = match state.dead_letters.peek(PEEK).await {
            Ok(peeked) => {
                let mut new = false;
                for letter in &peeked {
                    if handled.insert(&letter.message_id) {
                        new = true;
                        handle(&state, letter).await;
                    }
                }
                idle = if new { POLL } else { (idle * 2).min(IDLE) };
                idle
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the dead-letter queue; retrying");
                BACKOFF
            }
        };
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(pause) => {}
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
async fn handle(state: &AppState, letter: &Peeked) {
    let request: JobRequest = match serde_json::from_str(&letter.body) {
        Ok(request) => request,
        Err(e) => {
            tracing::error!(message_id = %letter.message_id, error = %e, "an unreadable message is in the dead-letter queue; see `skyburst admin dead-letters`");
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
