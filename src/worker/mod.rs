//! The detector worker (`skyburst worker`): long-poll the request queue, fetch the images,
//! detect in batches, write each result to the output bucket, answer on the job's reply queue,
//! and only then delete the request. A crash at any point leaves the request to come back
//! after its visibility timeout; a repeated answer is harmless because the index keeps the first.

pub mod detector_thread;
pub mod heartbeat;
pub mod reply;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::job::{self, JobRequest, JobResponse, JobResult, Outcome};
use crate::queue::{Delivery, Queue, QueueError};
use crate::store::{ObjectStore, StoreError};
pub use detector_thread::DetectorThread;
pub use heartbeat::Heartbeats;
pub use reply::ReplyQueues;

/// Pause after the request queue fails before polling it again.
const BACKOFF: Duration = Duration::from_secs(1);
/// How often a drained worker looks whether its drain request was taken back.
const DRAINED_POLL: Duration = Duration::from_millis(500);

/// Who this worker is and how it takes work.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Instance id, reported with every answer.
    pub instance: String,
    /// Pool, reported with every answer.
    pub pool: String,
    /// Messages per receive.
    pub jobs_per_receive: usize,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Longest receive wait.
    pub long_poll: Duration,
    /// How long a taken job stays hidden; extended every third of it while the batch runs.
    pub visibility: Duration,
    /// Bucket for results.
    pub output_bucket: String,
}

/// A worker and the parts it talks to.
pub struct Worker {
    settings: WorkerSettings,
    requests: Arc<dyn Queue>,
    replies: ReplyQueues,
    store: Arc<dyn ObjectStore>,
    detector: DetectorThread,
    heartbeats: Arc<Heartbeats>,
}

/// A request message and its parsed job.
struct Job {
    delivery: Delivery,
    request: JobRequest,
    /// Shared by the jobs of one receive; the last one finished or dropped stops extending
    /// their visibility.
    _hidden: Arc<KeptHidden>,
}

/// Stops extending a receive's visibility when dropped.
struct KeptHidden(JoinHandle<()>);

impl Drop for KeptHidden {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A detected job, its answer not yet sent.
struct Answer {
    job: Job,
    outcome: Outcome,
    detector_ms: f64,
}

/// The answer for a job from its detection outcome.
fn answer_for(job: Job, detected: Result<crate::result::DetectionResult, String>) -> Answer {
    let r = &job.request;
    let (outcome, detector_ms) = match detected {
        Ok(mut detection) => {
            detection.id = r.client_id.clone();
            detection.file = r.file.clone();
            let t = detection.timings;
            let ms = t.preprocess_ms + t.inference_ms + t.postprocess_ms;
            (Outcome::Done { result: JobResult { job_id: r.job_id, zone: r.zone.clone(), detection } }, ms)
        }
        Err(reason) => (Outcome::Failed { reason }, 0.0),
    };
    Answer { job, outcome, detector_ms }
}

/// Where a job stands after a step.
enum Step<T> {
    Next(T),
    /// Final: answer with this.
    Answer(Outcome, f64),
    /// Leave the message; it comes back after the visibility timeout.
    Retry,
}

impl Worker {
    /// A worker over the given parts.
    pub fn new(
        settings: WorkerSettings,
        requests: Arc<dyn Queue>,
        replies: ReplyQueues,
        store: Arc<dyn ObjectStore>,
        detector: DetectorThread,
        heartbeats: Arc<Heartbeats>,
    ) -> Self {
        Self { settings, requests, replies, store, detector, heartbeats }
    }

    /// Takes and runs jobs until `shutdown` turns true; a batch in progress is finished and
    /// answered first.
    ///
    /// A batch's answers wait until the next batch is on the detector: between two forward
    /// passes the detector thread then waits for one receive and one store read, instead of
    /// also the result write and the three queue commits of answering (≈ 2 ms of each 45 ms
    /// job at concurrency 4, during which that core had nothing to do).
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let s = &self.settings;
        tracing::info!(instance = %s.instance, pool = %s.pool, queue = %self.requests.name(), "worker started");
        let beating = self.heartbeats.clone().spawn(shutdown.clone());
        let mut unanswered = Vec::new();
        loop {
            if self.heartbeats.drain_requested().await {
                self.answer_all(std::mem::take(&mut unanswered)).await;
                // Between batches: nothing in hand. Stay up (the controller terminates this
                // instance) and take work again if the request is taken back.
                self.heartbeats.drained(true);
                tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => break,
                    _ = tokio::time::sleep(DRAINED_POLL) => continue,
                }
            }
            self.heartbeats.drained(false);
            // With answers in hand, only look: an empty queue must not hold them back.
            let wait = if unanswered.is_empty() { s.long_poll } else { Duration::ZERO };
            let received = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                received = self.requests.receive(s.jobs_per_receive, wait, s.visibility) => received,
            };
            match received {
                Ok(deliveries) if deliveries.is_empty() => self.answer_all(std::mem::take(&mut unanswered)).await,
                Ok(deliveries) => {
                    let (count, started) = (deliveries.len() as u64, Instant::now());
                    unanswered = self.process(deliveries, std::mem::take(&mut unanswered)).await;
                    self.heartbeats.finished(count, started.elapsed());
                }
                Err(e) => {
                    self.answer_all(std::mem::take(&mut unanswered)).await;
                    tracing::warn!(error = %e, "cannot read the request queue; retrying");
                    tokio::time::sleep(BACKOFF).await;
                }
            }
        }
        self.answer_all(unanswered).await;
        let _ = beating.await;
        tracing::info!(instance = %s.instance, "worker stopped");
    }

    /// Runs a receive's jobs; answers `unanswered` (the previous batch) once the first new batch
    /// is on the detector, and returns the last batch's answers, still to be sent.
    async fn process(&self, deliveries: Vec<Delivery>, mut unanswered: Vec<Answer>) -> Vec<Answer> {
        let hidden = Arc::new(KeptHidden(self.keep_hidden(&deliveries)));
        let mut jobs = Vec::new();
        for delivery in deliveries {
            match serde_json::from_str::<JobRequest>(&delivery.body) {
                Ok(request) => jobs.push(Job { delivery, request, _hidden: hidden.clone() }),
                // Nobody to answer: leave it; after queue.max_receives it goes to the
                // dead-letter queue for an operator to look at.
                Err(e) => tracing::error!(
                    message_id = %delivery.message_id,
                    receive_count = delivery.receive_count,
                    error = %e,
                    "unreadable job message left for the dead-letter queue"
                ),
            }
        }
        if let Some(first) = jobs.first() {
            self.heartbeats.busy(first.request.job_id.to_string());
        }
        let mut ready = Vec::new();
        for job in jobs {
            match self.fetch(&job).await {
                Step::Next(bytes) => ready.push((job, bytes)),
                Step::Answer(outcome, ms) => self.finish(&job, outcome, ms).await,
                Step::Retry => {}
            }
        }
        for chunk in chunks(ready, self.settings.batch_size) {
            let (jobs, bytes): (Vec<Job>, Vec<Vec<u8>>) = chunk.into_iter().unzip();
            let detecting = self.detector.submit(bytes);
            self.answer_all(std::mem::take(&mut unanswered)).await;
            for job in &jobs {
                self.answer(job, Outcome::Started, 0.0).await.ok();
            }
            match detecting.await {
                Ok(outcomes) => {
                    unanswered = jobs.into_iter().zip(outcomes).map(|(job, o)| answer_for(job, o)).collect()
                }
                // The jobs stay in the queue and come back after their visibility timeout.
                Err(e) => tracing::error!(error = %e, "no detections for this batch"),
            }
        }
        unanswered
    }

    async fn fetch(&self, job: &Job) -> Step<Vec<u8>> {
        let (job_id, r) = (job.request.job_id, &job.request);
        match self.store.get(&r.bucket, &r.key).await {
            Ok(bytes) => Step::Next(bytes),
            Err(e @ StoreError::NotFound { .. }) | Err(e @ StoreError::InvalidKey { .. }) => {
                tracing::warn!(%job_id, error = %e, "image missing");
                Step::Answer(Outcome::Failed { reason: format!("the image is gone from the store: {e}") }, 0.0)
            }
            Err(e) => {
                tracing::warn!(%job_id, error = %e, "cannot fetch the image; the job will come back");
                Step::Retry
            }
        }
    }

    async fn answer_all(&self, answers: Vec<Answer>) {
        for Answer { job, outcome, detector_ms } in answers {
            self.finish(&job, outcome, detector_ms).await;
        }
    }

    /// Result to the store, answer to the reply queue, then delete the request.
    async fn finish(&self, job: &Job, outcome: Outcome, detector_ms: f64) {
        let job_id = job.request.job_id;
        let response = self.response(job_id, outcome, detector_ms);
        let json = serde_json::to_vec(&response).expect("a JobResponse always serializes");
        let key = job::result_key(job_id);
        if let Err(e) = self.store.put(&self.settings.output_bucket, &key, json).await {
            tracing::warn!(%job_id, error = %e, "cannot store the result; the job will come back");
            return;
        }
        if let Err(e) = self.send(&job.request, &response).await {
            tracing::warn!(%job_id, error = %e, "cannot send the answer; the job will come back");
            return;
        }
        match self.requests.delete(&job.delivery.receipt).await {
            Ok(()) => match &response.outcome {
                Outcome::Failed { reason } => tracing::warn!(%job_id, %reason, "job failed"),
                _ => tracing::info!(%job_id, detector_ms = format!("{detector_ms:.1}"), "job done"),
            },
            Err(e) => tracing::warn!(%job_id, error = %e, "answered but not deleted; a duplicate answer may follow"),
        }
    }

    async fn answer(&self, job: &Job, outcome: Outcome, detector_ms: f64) -> Result<(), QueueError> {
        let response = self.response(job.request.job_id, outcome, detector_ms);
        self.send(&job.request, &response).await.inspect_err(|e| {
            tracing::warn!(job_id = %job.request.job_id, error = %e, "cannot send a progress answer");
        })
    }

    async fn send(&self, request: &JobRequest, response: &JobResponse) -> Result<(), QueueError> {
        let body = serde_json::to_string(response).expect("a JobResponse always serializes");
        self.replies.get(&request.reply_queue).send(&body, Duration::ZERO).await.map(|_| ())
    }

    fn response(&self, job_id: uuid::Uuid, outcome: Outcome, detector_ms: f64) -> JobResponse {
        JobResponse {
            job_id,
            outcome,
            instance: self.settings.instance.clone(),
            pool: self.settings.pool.clone(),
            detector_ms,
            at_ms: job::now_ms(),
        }
    }

    /// Extends the batch's visibility every third of the timeout until aborted, so a long
    /// batch is not handed to a second worker while this one is still on it.
    fn keep_hidden(&self, deliveries: &[Delivery]) -> JoinHandle<()> {
        let receipts: Vec<_> = deliveries.iter().map(|d| d.receipt.clone()).collect();
        let (queue, visibility) = (self.requests.clone(), self.settings.visibility);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(visibility / 3).await;
                for receipt in &receipts {
                    if let Err(e) = queue.extend_visibility(receipt, visibility).await {
                        tracing::warn!(error = %e, "cannot extend a job's visibility");
                    }
                }
            }
        })
    }
}

fn chunks<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    for item in items {
        match out.last_mut() {
            Some(last) if last.len() < size.max(1) => last.push(item),
            _ => out.push(vec![item]),
        }
    }
    out
}
