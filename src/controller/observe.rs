//! One check's observation: queue depth, every pool's instances from its provider, and the
//! workers' heartbeats and drain requests from the store, turned into a pure
//! [`Observation`] for the policy and the planner.

use std::collections::HashMap;
use std::sync::Arc;

use skyburst_policies::{Activity, InstanceState, InstanceView, Observation, PoolHealth, PoolView};
use skyburst_providers::{Instance, ProviderError};

use super::{Error, Pool};
use crate::control::{self, Heartbeat};
use crate::job;
use crate::queue::Queue;
use crate::store::{ObjectStore, StoreError};

/// What a pool's provider said last time it answered.
#[derive(Debug, Clone)]
pub struct LastKnown {
    /// Its instances.
    pub instances: Vec<Instance>,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

/// Reads the world.
pub struct Observer {
    pub(super) requests: Arc<dyn Queue>,
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) bucket: String,
    /// Seconds a pool's last-known instances stand in for an unreachable cloud.
    pub(super) unavailable_grace_s: f64,
    /// Heartbeats older than this with no instance listed are deleted.
    pub(super) heartbeat_timeout_s: f64,
}

/// An observation and the problems met making it.
pub struct Observed {
    /// For the policy and the planner.
    pub observation: Observation,
    /// Provider errors by pool (the pool's health says what the planner makes of them).
    pub errors: Vec<String>,
    /// Jobs each worker instance has finished since it started, from its latest heartbeat.
    pub jobs_done: HashMap<String, u64>,
}

/// The jobs finished by the whole fleet, counted from the workers' heartbeats: each instance's
/// counter only grows while it lives, so the fleet's count grows by each counter's increase.
/// A worker seen for the first time adds all it has done (it started after the previous look,
/// or this controller did); one that restarted (its counter went down) adds its new count.
#[derive(Debug, Default)]
pub struct FinishedJobs {
    /// The counter of each instance at the previous look.
    last: HashMap<String, u64>,
    /// The fleet's total.
    total: u64,
}

impl FinishedJobs {
    /// Takes this check's counters; returns the fleet's total so far. Instances that no longer
    /// report are forgotten, so the map holds at most the fleet.
    pub fn count(&mut self, jobs_done: &HashMap<String, u64>) -> u64 {
        for (id, &done) in jobs_done {
            let before = self.last.get(id).copied().unwrap_or(0);
            self.total += if done >= before { done - before } else { done };
        }
        self.last = jobs_done.clone();
        self.total
    }
}

/// The heartbeats and drain requests in the store.
struct WorkerRecords {
    heartbeats: HashMap<String, Heartbeat>,
    drains: Vec<String>,
}

impl Observer {
    /// Observes the queue, the pools and the workers. A queue or store failure is an error
    /// (no decision without knowing the backlog and who is busy); a provider failure marks
    /// its pool's health and is reported.
    pub async fn observe(&self, pools: &[Pool], last: &mut HashMap<String, LastKnown>) -> Result<Observed, Error> {
        let depth = self.requests.depth().await.map_err(Error::Queue)?;
        let records = self.worker_records().await.map_err(Error::Records)?;
        let now = job::now_ms();
        let mut errors = Vec::new();
        let mut views = Vec::new();
        for pool in pools {
            let (health, instances) = match pool.provider.list().await {
                Ok(instances) => {
                    last.insert(pool.config.name.clone(), LastKnown { instances: instances.clone(), at_ms: now });
                    let failed = failed_launches(&instances);
                    if !failed.is_empty() {
                        errors.push(format!(
                            "{}: {} went to an error state (a cloud that cannot place servers, such as Nova's \
                             NoValidHost); deleting them and bursting past the pool this check",
                            pool.config.name,
                            failed.join(", ")
                        ));
                    }
                    (if failed.is_empty() { PoolHealth::Ok } else { PoolHealth::Full }, instances)
                }
                Err(e) => {
                    errors.push(e.to_string());
                    stand_in(&e, last.get(&pool.config.name), now, self.unavailable_grace_s)
                }
            };
            let instances = instances.iter().map(|i| view(i, &records, now)).collect();
            views.push(PoolView {
                name: pool.config.name.clone(),
                priority: pool.config.priority,
                quota: pool.config.quota,
                boot_seconds: pool.config.boot_seconds,
                shutdown_seconds: pool.config.shutdown_seconds,
                billing_minimum_seconds: pool.config.billing().minimum_s,
                health,
                instances,
            });
        }
        self.forget_stale(&records, &views, now).await;
        let throughput = median(records.heartbeats.values().filter_map(Heartbeat::throughput).collect());
        let observation = Observation {
            backlog: depth.backlog(),
            delayed: depth.delayed,
            pools: views,
            throughput_per_instance: throughput,
            // The controller's meter fills it in: it needs the previous checks.
            arrivals: None,
        };
        let jobs_done = records.heartbeats.iter().map(|(id, beat)| (id.clone(), beat.jobs_done)).collect();
        Ok(Observed { observation, errors, jobs_done })
    }

    async fn worker_records(&self) -> Result<WorkerRecords, StoreError> {
        let mut heartbeats = HashMap::new();
        for object in self.store.list(&self.bucket, control::HEARTBEATS).await? {
            let Some(id) = control::instance_of(control::HEARTBEATS, &object.key) else { continue };
            match self.store.get(&self.bucket, &object.key).await {
                Ok(bytes) => match serde_json::from_slice::<Heartbeat>(&bytes) {
                    Ok(heartbeat) => {
                        heartbeats.insert(id.to_string(), heartbeat);
                    }
                    Err(e) => tracing::warn!(key = %object.key, error = %e, "unreadable heartbeat ignored"),
                },
                // Deleted between list and get: the worker stopped.
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let drains = self
            .store
            .list(&self.bucket, control::DRAINS)
            .await?
            .iter()
            .filter_map(|o| control::instance_of(control::DRAINS, &o.key).map(str::to_string))
            .collect();
        Ok(WorkerRecords { heartbeats, drains })
    }

    /// Removes heartbeats and drain requests of instances no pool lists any more.
    async fn forget_stale(&self, records: &WorkerRecords, pools: &[PoolView], now: i64) {
        let listed = |id: &str| pools.iter().any(|p| p.instances.iter().any(|i| i.id == id));
        for (id, beat) in &records.heartbeats {
            if !listed(id) && (now - beat.at_ms) as f64 / 1000.0 > self.heartbeat_timeout_s {
                let _ = self.store.delete(&self.bucket, &control::heartbeat_key(id)).await;
            }
        }
        for id in records.drains.iter().filter(|id| !listed(id)) {
            let _ = self.store.delete(&self.bucket, &control::drain_key(id)).await;
        }
    }
}

/// The instances in an error state. A server goes to ERROR when the cloud accepted it but could
/// not place it (Nova's NoValidHost: no compute host with room, or none enabled), so launching
/// more there this check would only make more of them: the pool counts as full.
fn failed_launches(instances: &[Instance]) -> Vec<String> {
    instances.iter().filter(|i| i.state == InstanceState::Error).map(|i| i.id.clone()).collect()
}

/// What to assume about a pool whose provider failed (DESIGN.md, "Provider errors"): its
/// health, and the instances it last listed.
fn stand_in(error: &ProviderError, last: Option<&LastKnown>, now: i64, grace_s: f64) -> (PoolHealth, Vec<Instance>) {
    let health = error.pool_health();
    let known = last.map(|l| l.instances.clone()).unwrap_or_default();
    match health {
        PoolHealth::AuthFailed => {
            tracing::error!(error = %error, "a cloud refused our credentials; no launches there until fixed");
        }
        PoolHealth::Unavailable => {
            let fresh = last.is_some_and(|l| (now - l.at_ms) as f64 / 1000.0 <= grace_s);
            // Within the grace period its instances count as pending (they may be working
            // fine); after it, they no longer hold back a burst to the next pool.
            let known = if fresh {
                known.into_iter().map(|i| Instance { state: InstanceState::Pending, ..i }).collect()
            } else {
                Vec::new()
            };
            return (health, known);
        }
        _ => {}
    }
    (health, known)
}

fn view(instance: &Instance, records: &WorkerRecords, now: i64) -> InstanceView {
    let beat = records.heartbeats.get(&instance.id);
    let reported = beat.map_or(Activity::Unknown, |b| b.activity);
    let activity = if records.drains.contains(&instance.id) {
        // The worker does not know about the drain until between batches.
        if reported == Activity::Drained {
            Activity::Drained
        } else {
            Activity::Draining
        }
    } else if reported == Activity::Drained {
        // A drain taken back: the worker resumes at its next look.
        Activity::Idle
    } else {
        reported
    };
    // A cloud reports an instance running once it has booted, before its worker has started
    // (moto at once, EC2 a minute early): until the first heartbeat it is still pending.
    let state = match (instance.state, beat) {
        (InstanceState::Running, None) => InstanceState::Pending,
        (state, _) => state,
    };
    InstanceView {
        id: instance.id.clone(),
        state,
        activity,
        heartbeat_age_s: beat.map(|b| ((now - b.at_ms) as f64 / 1000.0).max(0.0)),
        age_s: ((now - instance.launched_at_ms as i64) as f64 / 1000.0).max(0.0),
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, state: InstanceState) -> Instance {
        Instance { id: id.into(), state, launched_at_ms: 1_000, tags: Default::default() }
    }

    fn beat(id: &str, activity: Activity, at_ms: i64) -> Heartbeat {
        Heartbeat { instance: id.into(), pool: "p".into(), activity, job: None, at_ms, jobs_done: 0, busy_ms: 0 }
    }

    #[test]
    fn heartbeats_and_drain_requests_become_activities() {
        let records = WorkerRecords {
            heartbeats: HashMap::from([
                ("busy".to_string(), beat("busy", Activity::Busy, 9_000)),
                ("asked".to_string(), beat("asked", Activity::Busy, 9_000)),
                ("done".to_string(), beat("done", Activity::Drained, 9_000)),
                ("undrained".to_string(), beat("undrained", Activity::Drained, 9_000)),
            ]),
            drains: vec!["asked".into(), "done".into()],
        };
        let activity = |id: &str| view(&instance(id, InstanceState::Running), &records, 10_000).activity;
        assert_eq!(activity("busy"), Activity::Busy);
        assert_eq!(activity("asked"), Activity::Draining, "asked, batch not finished");
        assert_eq!(activity("done"), Activity::Drained);
        assert_eq!(activity("undrained"), Activity::Idle, "the drain was taken back");
        let booting = view(&instance("new", InstanceState::Pending), &records, 10_000);
        assert_eq!((booting.activity, booting.heartbeat_age_s, booting.age_s), (Activity::Unknown, None, 9.0));
        assert_eq!(view(&instance("busy", InstanceState::Running), &records, 10_000).heartbeat_age_s, Some(1.0));
    }

    #[test]
    fn the_fleets_finished_jobs_add_each_counters_increase() {
        let mut finished = FinishedJobs::default();
        let counts = |pairs: &[(&str, u64)]| pairs.iter().map(|(id, n)| (id.to_string(), *n)).collect();
        assert_eq!(finished.count(&counts(&[("a", 10), ("b", 3)])), 13, "first seen: all they did");
        assert_eq!(finished.count(&counts(&[("a", 15), ("b", 3)])), 18);
        // b is gone (its jobs stay counted), c is new, a restarted (its counter went back).
        assert_eq!(finished.count(&counts(&[("a", 2), ("c", 4)])), 24);
        assert_eq!(finished.last.len(), 2, "only the instances that report are remembered");
    }

    #[test]
    fn servers_in_an_error_state_are_failed_launches() {
        let listed = [
            instance("ok", InstanceState::Running),
            instance("no-valid-host", InstanceState::Error),
            instance("booting", InstanceState::Pending),
        ];
        assert_eq!(failed_launches(&listed), ["no-valid-host"]);
        assert!(failed_launches(&listed[..1]).is_empty());
    }

    #[test]
    fn a_running_instance_is_pending_until_its_worker_reports() {
        let records = WorkerRecords { heartbeats: HashMap::new(), drains: Vec::new() };
        let booted = view(&instance("new", InstanceState::Running), &records, 10_000);
        assert_eq!(booted.state, InstanceState::Pending, "the cloud says running; no worker has reported yet");
        let stopping = view(&instance("old", InstanceState::Stopping), &records, 10_000);
        assert_eq!(stopping.state, InstanceState::Stopping);
    }

    #[test]
    fn an_unreachable_cloud_keeps_its_instances_as_pending_for_the_grace_period() {
        let down = ProviderError::Unavailable { pool: "p".into(), cause: "timeout".into() };
        let last = LastKnown { instances: vec![instance("a", InstanceState::Running)], at_ms: 0 };
        let (health, within) = stand_in(&down, Some(&last), 60_000, 120.0);
        assert_eq!(health, PoolHealth::Unavailable);
        assert_eq!(within[0].state, InstanceState::Pending);
        let (_, after) = stand_in(&down, Some(&last), 121_000, 120.0);
        assert!(after.is_empty(), "after the grace period demand bursts on");
        let throttled = ProviderError::Throttled { pool: "p".into(), cause: "slow down".into() };
        let (health, kept) = stand_in(&throttled, Some(&last), 500_000, 120.0);
        assert_eq!((health, kept[0].state), (PoolHealth::Throttled, InstanceState::Running));
        let auth = ProviderError::Auth { pool: "p".into(), cause: "denied".into() };
        assert_eq!(stand_in(&auth, None, 0, 120.0).0, PoolHealth::AuthFailed);
    }
}
