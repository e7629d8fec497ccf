//! The controller's Prometheus metrics, served at `/metrics` on `controller.metrics_port`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use skyburst_policies::{Observation, StuckReason, TerminateReason};
use skyburst_providers::ProviderError;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolState {
    pool: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcome {
    kind: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolReason {
    pool: String,
    reason: String,
}

/// Counters and gauges of one controller.
pub struct Metrics {
    registry: Registry,
    ticks: Counter,
    backlog: Gauge,
    delayed: Gauge,
    desired: Gauge,
    capacity: Gauge,
    instances: Family<PoolState, Gauge>,
    launches: Family<PoolLabel, Counter>,
    terminations: Family<PoolReason, Counter>,
    provider_errors: Family<PoolReason, Counter>,
    throughput: Gauge<f64, AtomicU64>,
    arrivals: Gauge<f64, AtomicU64>,
    blind_checks: Counter,
    backoff_seconds: Gauge<f64, AtomicU64>,
    credentials: Family<KindOutcome, Counter>,
}

impl Metrics {
    /// Registers every metric under the `skyburst_` prefix.
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("skyburst"),
            ticks: Counter::default(),
            backlog: Gauge::default(),
            delayed: Gauge::default(),
            desired: Gauge::default(),
            capacity: Gauge::default(),
            instances: Family::default(),
            launches: Family::default(),
            terminations: Family::default(),
            provider_errors: Family::default(),
            throughput: Gauge::default(),
            arrivals: Gauge::default(),
            blind_checks: Counter::default(),
            backoff_seconds: Gauge::default(),
            credentials: Family::default(),
        };
        let r = &mut m.registry;
        r.register("controller_ticks", "Checks made", m.ticks.clone());
        r.register("queue_backlog", "Visible + in-flight request messages", m.backlog.clone());
        r.register("queue_delayed", "Delayed request messages", m.delayed.clone());
        r.register("desired_instances", "Instances the policy wants", m.desired.clone());
        r.register("capacity_instances", "Running + pending instances", m.capacity.clone());
        r.register("instances", "Instances by pool and state", m.instances.clone());
        r.register("launches", "Instances launched", m.launches.clone());
        r.register("terminations", "Instances terminated, by reason", m.terminations.clone());
        r.register("provider_errors", "Provider calls that failed, by kind", m.provider_errors.clone());
        r.register(
            "controller_blind_checks",
            "Checks skipped because the queue or the store could not be read",
            m.blind_checks.clone(),
        );
        r.register(
            "controller_backoff_seconds",
            "Wait before the next check (grows while checks fail)",
            m.backoff_seconds.clone(),
        );
        r.register(
            "credential_requests",
            "Requests for vended credentials, by kind (token, refresh) and outcome",
            m.credentials.clone(),
        );
        r.register(
            "instance_throughput_jobs_per_second",
            "Median jobs per second of one busy instance",
            m.throughput.clone(),
        );
        r.register(
            "arrivals_jobs_per_second",
            "Jobs per second arriving on the request queue, averaged over about 30 s",
            m.arrivals.clone(),
        );
        m
    }

    /// Records one check's observation and target.
    pub fn observed(&self, o: &Observation, desired: u32) {
        self.ticks.inc();
        self.backlog.set(o.backlog as i64);
        self.delayed.set(o.delayed as i64);
        self.desired.set(desired as i64);
        self.capacity.set(o.capacity() as i64);
        self.instances.clear();
        for pool in &o.pools {
            for i in &pool.instances {
                let state = format!("{:?}", i.state).to_lowercase();
                self.instances.get_or_create(&PoolState { pool: pool.name.clone(), state }).inc();
            }
        }
        if let Some(rate) = o.throughput_per_instance {
            self.throughput.set(rate);
        }
        if let Some(arrivals) = o.arrivals {
            self.arrivals.set(arrivals.rate);
        }
    }

    /// Records a check that could not see the queue or the store, and the wait before the next.
    pub fn blind(&self, next_in: std::time::Duration) {
        self.blind_checks.inc();
        self.backoff_seconds.set(next_in.as_secs_f64());
    }

    /// Records a check that saw everything: the next one comes after one tick.
    pub fn sighted(&self, tick: std::time::Duration) {
        self.backoff_seconds.set(tick.as_secs_f64());
    }

    /// Counts launched instances.
    pub fn launched(&self, pool: &str, count: u64) {
        self.launches.get_or_create(&PoolLabel { pool: pool.into() }).inc_by(count);
    }

    /// Counts a termination.
    pub fn terminated(&self, pool: &str, reason: &TerminateReason) {
        let reason = match reason {
            TerminateReason::ScaleIn => "scale_in".to_string(),
            TerminateReason::Drained => "drained".to_string(),
            TerminateReason::Stuck(StuckReason::BootTimeout) => "stuck_boot_timeout".into(),
            TerminateReason::Stuck(StuckReason::NoHeartbeat) => "stuck_no_heartbeat".into(),
            TerminateReason::Stuck(StuckReason::ErrorState) => "stuck_error_state".into(),
        };
        self.terminations.get_or_create(&PoolReason { pool: pool.into(), reason }).inc();
    }

    /// Counts a failed provider call by its kind.
    pub fn provider_error(&self, pool: &str, e: &ProviderError) {
        self.provider_errors.get_or_create(&PoolReason { pool: pool.into(), reason: e.kind().into() }).inc();
    }

    /// Counts a request for vended credentials.
    pub fn credentials(&self, kind: &str, outcome: &str) {
        self.credentials.get_or_create(&KindOutcome { kind: kind.into(), outcome: outcome.into() }).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skyburst_policies::{Activity, InstanceState, InstanceView, PoolHealth, PoolView};

    #[test]
    fn the_exposition_names_every_metric_with_its_labels() {
        let metrics = Metrics::new();
        let instance = |id: &str, state| InstanceView {
            id: id.into(),
            state,
            activity: Activity::Busy,
            heartbeat_age_s: Some(1.0),
            age_s: 10.0,
        };
        let pool = PoolView {
            name: "private".into(),
            priority: 1,
            quota: 8,
            boot_seconds: 45.0,
            shutdown_seconds: 0.0,
            billing_minimum_seconds: 0.0,
            health: PoolHealth::Ok,
            instances: vec![instance("a", InstanceState::Running), instance("b", InstanceState::Pending)],
        };
        let o = Observation {
            backlog: 12,
            delayed: 1,
            pools: vec![pool],
            throughput_per_instance: Some(6.5),
            arrivals: Some(skyburst_policies::Arrivals { rate: 2.5, sustained: 2.0, trend: 0.01, quiet_s: 0.0 }),
        };
        metrics.observed(&o, 6);
        metrics.launched("private", 4);
        metrics.terminated("private", &TerminateReason::Stuck(StuckReason::NoHeartbeat));
        metrics.provider_error("public", &ProviderError::Quota { pool: "public".into(), cause: "x".into() });
        let text = metrics.encode();
        for line in [
            "skyburst_queue_backlog 12",
            "skyburst_desired_instances 6",
            "skyburst_capacity_instances 2",
            "skyburst_instances{pool=\"private\",state=\"pending\"} 1",
            "skyburst_launches_total{pool=\"private\"} 4",
            "skyburst_terminations_total{pool=\"private\",reason=\"stuck_no_heartbeat\"} 1",
            "skyburst_provider_errors_total{pool=\"public\",reason=\"quota\"} 1",
            "skyburst_controller_ticks_total 1",
            "skyburst_instance_throughput_jobs_per_second 6.5",
            "skyburst_arrivals_jobs_per_second 2.5",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }
}
