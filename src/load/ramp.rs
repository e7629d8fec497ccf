//! Load ramps (`skyburst load --ramp`): closed-loop users, each sending one image, waiting for
//! the answer, thinking, and sending the next. The ramp starts with `start_users`, adds
//! `step_users` every `step_interval`, and stops at the first failed request, when a step's p95
//! passes the SLO, after the step at `max_users`, or at `max_duration`: it always ends by itself.
//!
//! [`judge`] decides after each step and is pure; [`run`] drives real users against a service.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::Notify;

use super::{check_labels, read_expectations, read_images, request, summarize, LoadOptions, Record};

/// How users are added and when the ramp stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RampPlan {
    /// Users in the first step.
    pub start_users: usize,
    /// Users added per step.
    pub step_users: usize,
    /// Length of a step.
    pub step_interval: Duration,
    /// The last step's users.
    pub max_users: usize,
    /// How long the step at `max_users` lasts (a confirmation run holds its level longer).
    pub hold: Duration,
    /// Pause of each user between an answer and its next request.
    pub think: Duration,
    /// A step whose p95 response time passes this ends the ramp.
    pub slo: Duration,
    /// The whole ramp stops after this long.
    pub max_duration: Duration,
}

impl RampPlan {
    /// Checks the plan: positive users, steps and times.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.start_users >= 1, "--users-start must be at least 1");
        anyhow::ensure!(self.step_users >= 1, "--users-step must be at least 1");
        anyhow::ensure!(
            (self.start_users..=1024).contains(&self.max_users),
            "--users-max must be from --users-start ({}) to 1024",
            self.start_users
        );
        anyhow::ensure!(self.step_interval >= Duration::from_millis(100), "--step-seconds must be at least 0.1");
        anyhow::ensure!(self.hold >= Duration::from_millis(100), "the last step must last at least 0.1 s");
        anyhow::ensure!(!self.slo.is_zero(), "--slo-ms must be positive");
        anyhow::ensure!(self.max_duration >= self.step_interval, "--max-seconds must cover at least one step");
        Ok(())
    }
}

/// One step's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepStats {
    /// Users sending during the step.
    pub users: usize,
    /// Requests the step's users sent.
    pub requests: usize,
    /// Answered with a result.
    pub succeeded: usize,
    /// Everything else.
    pub failed: usize,
    /// Mean response time of successes, ms.
    pub mean_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// Successes per second of the step.
    pub throughput: f64,
}

impl StepStats {
    /// The figures of the requests sent at `users` users over `length`.
    pub fn of(records: &[Record], users: usize, length: Duration) -> Self {
        let step: Vec<Record> = records.iter().filter(|r| r.users == users).cloned().collect();
        let summary = summarize(&step, length);
        let ok: Vec<f64> = step.iter().filter(|r| r.ok()).map(|r| r.latency_ms).collect();
        let mean_ms = if ok.is_empty() { 0.0 } else { ok.iter().sum::<f64>() / ok.len() as f64 };
        Self {
            users,
            requests: summary.requests,
            succeeded: summary.succeeded,
            failed: summary.failed,
            mean_ms,
            p50_ms: summary.p50_ms,
            p95_ms: summary.p95_ms,
            throughput: summary.throughput,
        }
    }

    /// Every request answered, within the SLO at p95.
    pub fn good(&self, slo: Duration) -> bool {
        self.failed == 0 && self.succeeded > 0 && self.p95_ms <= slo.as_secs_f64() * 1000.0
    }
}

/// Why the ramp ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StopReason {
    /// A request failed (any status but 200, or a transport error).
    FirstFailure {
        /// Users at the time.
        users: usize,
        /// What the failed request got.
        detail: String,
    },
    /// A step's p95 passed the SLO.
    SloExceeded {
        /// Users in that step.
        users: usize,
        /// Its p95, ms.
        p95_ms: f64,
    },
    /// The step at the most users completed within the SLO.
    MaxUsers,
    /// The time limit came first.
    TimeLimit,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FirstFailure { users, detail } => write!(f, "first failure at {users} users ({detail})"),
            Self::SloExceeded { users, p95_ms } => write!(f, "p95 {p95_ms:.0} ms passed the SLO at {users} users"),
            Self::MaxUsers => write!(f, "reached --users-max within the SLO"),
            Self::TimeLimit => write!(f, "reached --max-seconds"),
        }
    }
}

/// What to do after a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Go on with this many users.
    Continue(usize),
    /// Stop.
    Stop(StopReason),
}

/// The decision after a completed step at `step.users`, `elapsed` into the ramp.
pub fn judge(plan: &RampPlan, step: &StepStats, elapsed: Duration) -> Verdict {
    let slo_ms = plan.slo.as_secs_f64() * 1000.0;
    if step.failed > 0 {
        let detail = format!("{} of {} requests failed", step.failed, step.requests);
        return Verdict::Stop(StopReason::FirstFailure { users: step.users, detail });
    }
    if step.succeeded > 0 && step.p95_ms > slo_ms {
        return Verdict::Stop(StopReason::SloExceeded { users: step.users, p95_ms: step.p95_ms });
    }
    if step.users >= plan.max_users {
        return Verdict::Stop(StopReason::MaxUsers);
    }
    if elapsed + plan.step_interval > plan.max_duration {
        return Verdict::Stop(StopReason::TimeLimit);
    }
    Verdict::Continue((step.users + plan.step_users).min(plan.max_users))
}

/// A finished ramp.
#[derive(Debug, Clone, Serialize)]
pub struct RampReport {
    /// Every step, in order (the last may be cut short by a failure).
    pub steps: Vec<StepStats>,
    /// Why it ended.
    pub stop: StopReason,
    /// The most users of a step with every request answered within the SLO; 0 if none.
    pub max_good_users: usize,
    /// Wall time, s.
    pub wall_s: f64,
}

impl RampReport {
    /// The good step with the most users. The step the ramp stopped on for a failure or the
    /// SLO is not good, even if answers that came back after the verdict pull its figures
    /// under the bar.
    pub fn best_step(&self, slo: Duration) -> Option<&StepStats> {
        let failed = match self.stop {
            StopReason::FirstFailure { users, .. } | StopReason::SloExceeded { users, .. } => Some(users),
            StopReason::MaxUsers | StopReason::TimeLimit => None,
        };
        self.steps.iter().filter(|s| s.good(slo) && Some(s.users) != failed).max_by_key(|s| s.users)
    }
}

impl std::fmt::Display for RampReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "users  requests  failed  mean ms  p50 ms  p95 ms  images/s")?;
        for s in &self.steps {
            writeln!(
                f,
                "{:>5}  {:>8}  {:>6}  {:>7.1}  {:>6.1}  {:>6.1}  {:>8.2}",
                s.users, s.requests, s.failed, s.mean_ms, s.p50_ms, s.p95_ms, s.throughput
            )?;
        }
        writeln!(f, "stopped: {}", self.stop)?;
        write!(f, "max users with 100 % success within the SLO: {} (over {:.1} s)", self.max_good_users, self.wall_s)
    }
}

/// State the users share.
struct Shared {
    client: request::Client,
    images: Vec<super::Image>,
    expected: HashMap<String, Vec<String>>,
    records: Mutex<Vec<Record>>,
    next_index: AtomicUsize,
    /// The current step's users; a request records it when sent.
    users: AtomicUsize,
    stop: AtomicBool,
    failed: Notify,
    think: Duration,
    started: Instant,
}

/// Runs a ramp against `options.url` (`options.requests` and `concurrency` do not apply);
/// `progress` is told of each finished request.
pub async fn run(
    options: &LoadOptions,
    plan: &RampPlan,
    progress: impl Fn(&Record) + Send + Sync + 'static,
) -> anyhow::Result<(Vec<Record>, RampReport)> {
    plan.validate()?;
    let shared = Arc::new(Shared {
        client: request::Client::new(options)?,
        images: read_images(&options.images)?,
        expected: match &options.expect {
            Some(path) => read_expectations(path)?,
            None => HashMap::new(),
        },
        records: Mutex::new(Vec::new()),
        next_index: AtomicUsize::new(0),
        users: AtomicUsize::new(plan.start_users),
        stop: AtomicBool::new(false),
        failed: Notify::new(),
        think: plan.think,
        started: Instant::now(),
    });
    let progress = Arc::new(progress);
    let mut tasks = Vec::new();
    // (users, length) of each step; the figures are taken again from every record at the end,
    // when requests in flight at a step's end have come back.
    let mut steps = Vec::new();
    let mut users = plan.start_users;
    let stop = loop {
        while tasks.len() < users {
            let (shared, progress) = (shared.clone(), progress.clone());
            tasks.push(tokio::spawn(async move { user(&shared, &*progress).await }));
        }
        let step_started = Instant::now();
        let length = if users >= plan.max_users { plan.hold } else { plan.step_interval };
        tokio::select! {
            _ = tokio::time::sleep(length) => {}
            _ = shared.failed.notified() => {}
        }
        steps.push((users, step_started.elapsed()));
        let verdict = {
            let records = shared.records.lock().unwrap_or_else(|p| p.into_inner());
            // A late answer of an earlier step may be the failure: it ends the ramp all the same.
            match records.iter().find(|r| !r.ok()) {
                Some(failed) => {
                    let detail = format!("HTTP {} {}", failed.status, failed.error).trim().to_string();
                    Verdict::Stop(StopReason::FirstFailure { users: failed.users, detail })
                }
                None => judge(plan, &StepStats::of(&records, users, step_started.elapsed()), shared.started.elapsed()),
            }
        };
        match verdict {
            Verdict::Continue(next) => {
                users = next;
                shared.users.store(users, Ordering::SeqCst);
            }
            Verdict::Stop(reason) => break reason,
        }
    };
    shared.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.context("a load user panicked")?;
    }
    let wall_s = shared.started.elapsed().as_secs_f64();
    let mut records = std::mem::take(&mut *shared.records.lock().unwrap_or_else(|p| p.into_inner()));
    records.sort_by_key(|r| r.index);
    let steps: Vec<StepStats> =
        steps.into_iter().map(|(users, length)| StepStats::of(&records, users, length)).collect();
    let mut report = RampReport { steps, stop, max_good_users: 0, wall_s };
    report.max_good_users = report.best_step(plan.slo).map_or(0, |s| s.users);
    Ok((records, report))
}

/// One closed-loop user: send, wait for the answer, think, until the ramp stops.
async fn user(shared: &Shared, progress: &(impl Fn(&Record) + Send + Sync)) {
    while !shared.stop.load(Ordering::SeqCst) {
        let index = shared.next_index.fetch_add(1, Ordering::Relaxed);
        let image = &shared.images[index % shared.images.len()];
        let users = shared.users.load(Ordering::SeqCst);
        let mut record = shared.client.send(index, image, shared.started, users).await;
        check_labels(&mut record, &shared.expected);
        progress(&record);
        let failed = !record.ok();
        shared.records.lock().unwrap_or_else(|p| p.into_inner()).push(record);
        if failed {
            // The ramp stops at the first failure: no need to wait for the step's end.
            shared.failed.notify_one();
        }
        if !shared.think.is_zero() {
            tokio::time::sleep(shared.think).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> RampPlan {
        RampPlan {
            start_users: 1,
            step_users: 2,
            step_interval: Duration::from_secs(10),
            max_users: 7,
            hold: Duration::from_secs(10),
            think: Duration::ZERO,
            slo: Duration::from_secs(2),
            max_duration: Duration::from_secs(90),
        }
    }

    fn record(users: usize, status: u16, latency_ms: f64) -> Record {
        Record::for_test(status, latency_ms, users, 0.0)
    }

    fn step(users: usize, latencies: &[f64], failures: usize) -> StepStats {
        let mut records: Vec<Record> = latencies.iter().map(|&ms| record(users, 200, ms)).collect();
        records.extend((0..failures).map(|_| record(users, 503, 5.0)));
        records.push(record(users + 1, 200, 99_999.0)); // another step's: ignored
        StepStats::of(&records, users, Duration::from_secs(10))
    }

    #[test]
    fn a_step_counts_only_its_own_users_requests() {
        let s = step(3, &[100.0, 200.0, 300.0, 400.0], 1);
        assert_eq!((s.users, s.requests, s.succeeded, s.failed), (3, 5, 4, 1));
        assert!((s.mean_ms - 250.0).abs() < 1e-9);
        assert!((s.throughput - 0.4).abs() < 1e-9, "4 successes over 10 s");
    }

    #[test]
    fn the_ramp_adds_users_until_the_cap_then_stops() {
        let p = plan();
        let at = Duration::from_secs(10);
        assert_eq!(judge(&p, &step(1, &[100.0], 0), at), Verdict::Continue(3));
        assert_eq!(judge(&p, &step(5, &[100.0], 0), at), Verdict::Continue(7), "the last step is capped");
        assert_eq!(judge(&p, &step(7, &[100.0], 0), at), Verdict::Stop(StopReason::MaxUsers));
    }

    #[test]
    fn a_failure_or_a_slow_p95_ends_the_ramp() {
        let p = plan();
        let at = Duration::from_secs(10);
        let failed = judge(&p, &step(3, &[100.0; 20], 1), at);
        assert!(matches!(failed, Verdict::Stop(StopReason::FirstFailure { users: 3, .. })), "{failed:?}");
        // 19 fast answers and 2 slow ones: p95 is a slow one.
        let mut latencies = vec![100.0; 19];
        latencies.extend([2500.0, 2600.0]);
        let slow = judge(&p, &step(3, &latencies, 0), at);
        assert!(matches!(slow, Verdict::Stop(StopReason::SloExceeded { users: 3, p95_ms }) if p95_ms > 2000.0));
        // Just under the SLO is within it (percentiles are kept to 0.1 %).
        assert_eq!(judge(&p, &step(3, &[1990.0], 0), at), Verdict::Continue(5));
    }

    #[test]
    fn the_time_limit_stops_before_a_step_that_would_pass_it() {
        let p = plan();
        assert_eq!(judge(&p, &step(3, &[100.0], 0), Duration::from_secs(80)), Verdict::Continue(5));
        assert_eq!(judge(&p, &step(3, &[100.0], 0), Duration::from_secs(81)), Verdict::Stop(StopReason::TimeLimit));
    }

    #[test]
    fn the_best_step_is_the_largest_good_one() {
        let slo = Duration::from_secs(2);
        let steps = vec![step(1, &[100.0], 0), step(3, &[300.0], 0), step(5, &[900.0], 1)];
        let report = RampReport { steps, stop: StopReason::MaxUsers, max_good_users: 3, wall_s: 30.0 };
        assert_eq!(report.best_step(slo).map(|s| s.users), Some(3));
        // A step the ramp stopped on is not good, whatever late answers did to its figures.
        let stopped = RampReport { stop: StopReason::SloExceeded { users: 3, p95_ms: 2100.0 }, ..report.clone() };
        assert_eq!(stopped.best_step(slo).map(|s| s.users), Some(1));
        assert!(!step(2, &[], 0).good(slo), "a step without answers proves nothing");
    }

    #[test]
    fn plans_are_checked() {
        assert!(plan().validate().is_ok());
        assert!(RampPlan { start_users: 0, ..plan() }.validate().is_err());
        assert!(RampPlan { max_users: 0, ..plan() }.validate().is_err());
        assert!(RampPlan { max_duration: Duration::from_secs(1), ..plan() }.validate().is_err());
    }
}
