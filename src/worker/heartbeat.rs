//! The worker's heartbeat: what it is doing, written to `control/heartbeats/<instance>` every
//! `worker.heartbeat_seconds` and on every change, and its view of drain requests.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skyburst_policies::Activity;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::control::{self, Heartbeat};
use crate::job;
use crate::store::ObjectStore;

/// Reports one worker's activity.
pub struct Heartbeats {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    interval: Duration,
    /// The record as it will next be written.
    current: Mutex<Heartbeat>,
    /// Rung on every change so the writer does not wait for the next interval.
    changed: Notify,
    /// The latest drain lookup and its answer: the worker asks before every batch, and a
    /// store round trip per job (an S3 HEAD is ~10 ms) is not worth a faster drain.
    drain_seen: Mutex<Option<(Instant, bool)>>,
}

/// How long a drain lookup is reused.
const DRAIN_LOOKUP_EVERY: Duration = Duration::from_millis(500);

impl Heartbeats {
    /// A reporter for `instance` of `pool`, starting idle.
    pub fn new(store: Arc<dyn ObjectStore>, bucket: String, instance: &str, pool: &str, interval: Duration) -> Self {
        let current = Heartbeat {
            instance: instance.into(),
            pool: pool.into(),
            activity: Activity::Idle,
            job: None,
            at_ms: job::now_ms(),
            jobs_done: 0,
            busy_ms: 0,
        };
        Self {
            store,
            bucket,
            interval,
            current: Mutex::new(current),
            changed: Notify::new(),
            drain_seen: Mutex::new(None),
        }
    }

    /// Marks the worker busy with `job`.
    pub fn busy(&self, job: String) {
        self.update(|h| {
            h.activity = Activity::Busy;
            h.job = Some(job);
        });
    }

    /// Marks a batch of `jobs` finished after `took`, and the worker idle.
    pub fn finished(&self, jobs: u64, took: Duration) {
        self.update(|h| {
            h.activity = Activity::Idle;
            h.job = None;
            h.jobs_done += jobs;
            h.busy_ms += took.as_millis() as u64;
        });
    }

    /// Marks the worker drained (true) or back to idle after a drain was taken back.
    pub fn drained(&self, drained: bool) {
        let activity = if drained { Activity::Drained } else { Activity::Idle };
        self.update(|h| h.activity = activity);
    }

    /// True if the controller asked this instance to drain, looked up at most every
    /// [`DRAIN_LOOKUP_EVERY`]; a store error counts as no (the worker keeps working rather than
    /// idling on a flaky store).
    pub async fn drain_requested(&self) -> bool {
        if let Some((at, answer)) = *self.drain_seen.lock().expect("drain lock") {
            if at.elapsed() < DRAIN_LOOKUP_EVERY {
                return answer;
            }
        }
        let key = control::drain_key(&self.current.lock().expect("heartbeat lock").instance);
        let answer = self.store.head(&self.bucket, &key).await.is_ok();
        *self.drain_seen.lock().expect("drain lock") = Some((Instant::now(), answer));
        answer
    }

    fn update(&self, change: impl FnOnce(&mut Heartbeat)) {
        let mut current = self.current.lock().expect("heartbeat lock");
        let before = (current.activity, current.job.clone());
        change(&mut current);
        if before != (current.activity, current.job.clone()) {
            self.changed.notify_one();
        }
    }

    /// Writes the record on every change and every interval until `shutdown`, then removes it.
    pub fn spawn(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                self.write().await;
                tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => break,
                    _ = self.changed.notified() => {}
                    _ = tokio::time::sleep(self.interval) => {}
                }
            }
            let key = control::heartbeat_key(&self.current.lock().expect("heartbeat lock").instance);
            let _ = self.store.delete(&self.bucket, &key).await;
        })
    }

    async fn write(&self) {
        let record = {
            let mut current = self.current.lock().expect("heartbeat lock");
            current.at_ms = job::now_ms();
            current.clone()
        };
        let json = serde_json::to_vec(&record).expect("a heartbeat always serializes");
        if let Err(e) = self.store.put(&self.bucket, &control::heartbeat_key(&record.instance), json).await {
            tracing::warn!(error = %e, "cannot write the heartbeat; the controller may think this worker stuck");
        }
    }
}
