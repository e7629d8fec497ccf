//! The detector worker (`skyburst worker`): long-poll the request queue, fetch the images,
//! detect in batches, write each result to the output bucket, answer on the job's reply queue,
//! and only then delete the request. A crash at any point leaves the request to come back
//! after its visibility timeout; a repeated answer is harmless because the index keeps the first.
//!
//! Every job ends: an attempt that fails with an error (the image cannot be fetched, the
//! detector fails) re-queues the job with its `attempts` one higher and a growing delay, and
//! at `queue.max_attempts` moves it to the dead-letter queue, where the front end fails it
//! (`dead_lettered`) with the last error. A batch that runs past its deadline is given up
//! (`failed: deadline`, or re-queued to run alone when several shared it) and the worker
//! exits, since a hung detector thread cannot be stopped: its supervisor starts a fresh one.

pub mod detector_thread;
pub mod heartbeat;
pub mod reply;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::job::{self, reason, JobRequest, JobResponse, JobResult, Outcome};
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
    /// Attempts ending in an error before a job is dead-lettered (`queue.max_attempts`).
    pub max_attempts: u32,
    /// Longest the detector may take per image (`worker.job_deadline_seconds`).
    pub deadline: Duration,
}

/// Why [`Worker::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Asked to (a signal): everything in hand was answered.
    Shutdown,
    /// The detector ran past its deadline; its thread is stuck, so this process must be
    /// replaced. The jobs in hand were answered or given back.
    DetectorHung,
}

/// A worker and the parts it talks to.
pub struct Worker {
    settings: WorkerSettings,
    requests: Arc<dyn Queue>,
    /// Where a job goes after `max_attempts` failed attempts (and an unreadable message at once).
    dead_letters: Arc<dyn Queue>,
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
    /// A failed attempt, for this reason: re-queue or dead-letter it ([`Worker::retry`]).
    Retry(String),
}

impl Worker {
    /// A worker over the given parts.
    pub fn new(
        settings: WorkerSettings,
        (requests, dead_letters): (Arc<dyn Queue>, Arc<dyn Queue>),
        replies: ReplyQueues,
        store: Arc<dyn ObjectStore>,
        detector: DetectorThread,
        heartbeats: Arc<Heartbeats>,
    ) -> Self {
        Self { settings, requests, dead_letters, replies, store, detector, heartbeats }
    }

    /// Takes and runs jobs until `shutdown` turns true; a batch in progress is finished and
    /// answered first.
    ///
    /// A batch's answers wait until the next batch is on the detector: between two forward
    /// passes the detector thread then waits for one receive and one store read, instead of
    /// also the result write and the three queue commits of answering (≈ 2 ms of each 45 ms
    /// job at concurrency 4, during which that core had nothing to do).
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Stopped {
        let s = &self.settings;
        tracing::info!(instance = %s.instance, pool = %s.pool, queue = %self.requests.name(), "worker started");
        let beating = self.heartbeats.clone().spawn(shutdown.clone());
        let mut unanswered = Vec::new();
        let mut stopped = Stopped::Shutdown;
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
                    let hung;
                    (unanswered, hung) = self.process(deliveries, std::mem::take(&mut unanswered)).await;
                    self.heartbeats.finished(count, started.elapsed());
                    if hung {
                        stopped = Stopped::DetectorHung;
                        break;
                    }
                }
                Err(e) => {
                    self.answer_all(std::mem::take(&mut unanswered)).await;
                    tracing::warn!(error = %e, "cannot read the request queue; retrying");
                    tokio::time::sleep(BACKOFF).await;
                }
            }
        }
        self.answer_all(unanswered).await;
        if stopped == Stopped::DetectorHung {
            // No more heartbeats from this process: the controller and `up` see it go.
            beating.abort();
        } else {
            let _ = beating.await;
        }
        tracing::info!(instance = %s.instance, ?stopped, "worker stopped");
        stopped
    }

    /// Runs a receive's jobs; answers `unanswered` (the previous batch) once the first new batch
    /// is on the detector, and returns the last batch's answers, still to be sent, and whether
    /// the detector hung (the rest of the receive was given back).
    async fn process(&self, deliveries: Vec<Delivery>, mut unanswered: Vec<Answer>) -> (Vec<Answer>, bool) {
        let hidden = Arc::new(KeptHidden(self.keep_hidden(&deliveries)));
        let mut jobs = Vec::new();
        for delivery in deliveries {
            match serde_json::from_str::<JobRequest>(&delivery.body) {
                Ok(request) => jobs.push(Job { delivery, request, _hidden: hidden.clone() }),
                Err(e) => self.bury(&delivery, &e.to_string()).await,
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
                Step::Retry(error) => self.retry(&job, error, false).await,
            }
        }
        let mut chunks = chunks(ready, self.settings.batch_size).into_iter();
        for chunk in chunks.by_ref() {
            let (jobs, bytes): (Vec<Job>, Vec<Vec<u8>>) = chunk.into_iter().unzip();
            let limit = self.settings.deadline * jobs.len() as u32;
            let detecting = tokio::time::timeout(limit, self.detector.submit(bytes));
            self.answer_all(std::mem::take(&mut unanswered)).await;
            for job in &jobs {
                self.answer(job, Outcome::Started, 0.0).await.ok();
            }
            match detecting.await {
                Ok(Ok(outcomes)) => {
                    unanswered = jobs.into_iter().zip(outcomes).map(|(job, o)| answer_for(job, o)).collect()
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "no detections for this batch");
                    for job in &jobs {
                        self.retry(job, format!("the detector failed: {e}"), false).await;
                    }
                }
                Err(_) => {
                    self.hung(&jobs, limit).await;
                    for (job, _) in chunks.flatten() {
                        self.give_back(&job).await;
                    }
                    return (unanswered, true);
                }
            }
        }
        (unanswered, false)
    }

    /// The detector ran past `limit` on `jobs`: a job alone fails with `deadline`; jobs that
    /// shared the batch are re-queued to run alone, so the one that hangs is found and the
    /// others finish.
    async fn hung(&self, jobs: &[Job], limit: Duration) {
        tracing::error!(
            jobs = jobs.len(),
            limit_s = limit.as_secs_f64(),
            "the detector ran past its deadline; this worker exits"
        );
        if let [job] = jobs {
            let detail = format!(
                "the detector did not finish the image within {:.2} s (worker.job_deadline_seconds); the worker was replaced",
                limit.as_secs_f64()
            );
            self.finish(job, Outcome::Failed { reason: reason::with(reason::DEADLINE, detail) }, 0.0).await;
            return;
        }
        for job in jobs {
            let detail =
                format!("a batch of {} images ran past its deadline of {:.2} s", jobs.len(), limit.as_secs_f64());
            self.retry(job, reason::with(reason::DEADLINE, detail), true).await;
        }
    }

    /// An attempt failed with `error`: re-queue the job with its attempts one higher, after a
    /// delay that doubles with each (2 s, 4 s, … at most 60 s), or move it to the dead-letter
    /// queue at `queue.max_attempts`. If neither send works, the message is left to come back
    /// after its visibility timeout.
    async fn retry(&self, job: &Job, error: String, alone: bool) {
        let job_id = job.request.job_id;
        let mut request = job.request.clone();
        request.attempts += 1;
        request.last_error = Some(error);
        request.alone |= alone;
        let body = serde_json::to_string(&request).expect("a JobRequest always serializes");
        let (queue, delay) = match request.attempts >= self.settings.max_attempts {
            true => (&self.dead_letters, Duration::ZERO),
            false => (&self.requests, retry_delay(request.attempts)),
        };
        if let Err(e) = queue.send(&body, delay).await {
            tracing::warn!(%job_id, error = %e, "cannot re-queue a failed attempt; the job will come back");
            return;
        }
        let error = request.last_error.as_deref().unwrap_or_default();
        let what = if delay.is_zero() { "attempt failed; job dead-lettered" } else { "attempt failed; job re-queued" };
        tracing::warn!(%job_id, attempts = request.attempts, queue = %queue.name(), %error, "{what}");
        if let Err(e) = self.requests.delete(&job.delivery.receipt).await {
            tracing::warn!(%job_id, error = %e, "re-queued but not deleted; the job may run twice");
        }
    }

    /// A message that is not a job can never succeed: straight to the dead-letter queue.
    async fn bury(&self, delivery: &Delivery, error: &str) {
        let id = &delivery.message_id;
        match self.dead_letters.send(&delivery.body, Duration::ZERO).await {
            Ok(_) => {
                tracing::error!(message_id = %id, %error, "unreadable job message moved to the dead-letter queue");
                if let Err(e) = self.requests.delete(&delivery.receipt).await {
                    tracing::warn!(message_id = %id, error = %e, "cannot delete an unreadable message");
                }
            }
            Err(e) => tracing::error!(message_id = %id, error = %e, "unreadable job message left in the queue"),
        }
    }

    /// Makes a job it will not run visible again at once, for another worker.
    async fn give_back(&self, job: &Job) {
        if let Err(e) = self.requests.extend_visibility(&job.delivery.receipt, Duration::ZERO).await {
            tracing::warn!(job_id = %job.request.job_id, error = %e, "cannot give a job back; it comes back after its visibility timeout");
        }
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
                tracing::warn!(%job_id, error = %e, "cannot fetch the image");
                Step::Retry(format!("cannot fetch the image: {e}"))
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

/// Batches of at most `size` jobs; a job marked `alone` gets a batch of its own.
fn chunks<T: AsRef<JobRequest>>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut open = false;
    for item in items {
        let alone = item.as_ref().alone;
        match out.last_mut() {
            Some(last) if open && !alone && last.len() < size.max(1) => last.push(item),
            _ => {
                out.push(vec![item]);
                open = !alone;
            }
        }
    }
    out
}

impl AsRef<JobRequest> for (Job, Vec<u8>) {
    fn as_ref(&self) -> &JobRequest {
        &self.0.request
    }
}

/// The delay before attempt `attempts + 1`: 2 s doubling, at most 60 s.
fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempts.min(6))).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(alone: bool) -> JobRequest {
        JobRequest {
            job_id: uuid::Uuid::new_v4(),
            bucket: "b".into(),
            key: "k".into(),
            zone: None,
            client_id: None,
            file: None,
            reply_queue: "r".into(),
            enqueued_at_ms: 0,
            attempts: 0,
            last_error: None,
            alone,
        }
    }

    impl AsRef<JobRequest> for JobRequest {
        fn as_ref(&self) -> &JobRequest {
            self
        }
    }

    #[test]
    fn a_job_marked_alone_gets_a_batch_of_its_own() {
        let jobs = vec![request(false), request(false), request(true), request(false), request(false), request(false)];
        let sizes: Vec<(usize, bool)> = chunks(jobs, 2).iter().map(|c| (c.len(), c[0].alone)).collect();
        assert_eq!(sizes, [(2, false), (1, true), (2, false), (1, false)]);
        let two_alone = chunks(vec![request(true), request(true)], 4);
        assert_eq!(two_alone.len(), 2);
    }

    #[test]
    fn retries_wait_longer_each_time_up_to_a_minute() {
        let delays: Vec<u64> = (1..=8).map(|a| retry_delay(a).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
