//! The response listener: reads this front end's response queue, records each answer in the
//! index, wakes the request waiting for it, then deletes the message (in that order, so a crash
//! in between only replays an idempotent update).

use std::time::Duration;

use tokio::sync::watch;

use super::AppState;
use crate::job::JobResponse;

/// How long a response stays hidden while this listener handles it; handling takes milliseconds.
const VISIBILITY: Duration = Duration::from_secs(30);
/// Pause after a failure (index or queue down) before trying again.
const BACKOFF: Duration = Duration::from_secs(1);
/// Responses taken per receive: SQS's maximum.
const BATCH: usize = 10;

/// Runs until `shutdown` turns true.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let wait = state.settings.long_poll;
    loop {
        let received = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            received = state.responses.receive(BATCH, wait, VISIBILITY) => received,
        };
        let deliveries = match received {
            Ok(deliveries) => deliveries,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the response queue; retrying");
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        for delivery in deliveries {
            let response: JobResponse = match serde_json::from_str(&delivery.body) {
                Ok(response) => response,
                Err(e) => {
                    // Not ours to answer: drop it rather than let it block the queue.
                    tracing::error!(message_id = %delivery.message_id, error = %e, "unreadable response dropped");
                    let _ = state.responses.delete(&delivery.receipt).await;
                    continue;
                }
            };
            let job_id = response.job_id;
            match record(&state, response).await {
                Ok(_) => {
                    if let Err(e) = state.responses.delete(&delivery.receipt).await {
                        tracing::warn!(%job_id, error = %e, "response handled but not deleted; it will be replayed");
                    }
                }
                Err(e) => {
                    tracing::warn!(%job_id, error = %e, "cannot record the response; it will come back");
                    tokio::time::sleep(BACKOFF).await;
                }
            }
        }
    }
}

/// Records an answer: in the index, and if it made the job final, in the metrics, the event
/// stream and to the request waiting for it. Returns whether it made the job final.
pub async fn record(state: &AppState, response: JobResponse) -> Result<bool, crate::index::IndexError> {
    let (job_id, detector_ms, outcome) = (response.job_id, response.detector_ms, response.outcome.clone());
    let became_final = state.index.apply(response).await?;
    if became_final {
        state.metrics.job_finished(&outcome, detector_ms);
        state.finished.send_modify(|count| *count += 1);
        state.waiters.complete(job_id, outcome);
    }
    Ok(became_final)
}
