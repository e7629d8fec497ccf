//! Open-loop replay of an arrival trace (`skyburst load --trace`): each job of the trace is sent
//! at its arrival time divided by the time scale, whatever the answers to the earlier ones, so a
//! live fleet sees the very arrivals `skyburst simulate` replays in simulated time (the same
//! [`Trace`] and [`Trace::arrivals`]).
//!
//! Everything is bounded. Before anything is sent, the trace's jobs and its time-scaled length are
//! checked against [`ReplayPlan`]'s limits. At most `max_in_flight` requests are outstanding: a
//! send due while that many wait is held until one answers (counted, and its lateness shows in
//! the send lag), and given up once it is `timeout` late. Each request gives up after `timeout`
//! too, so a replay ends within its last send's time plus twice the timeout.
//!
//! [`schedule`] is pure; [`run`] sends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::request::{Client, Mode, Poll};
use super::{check_labels, read_expectations, read_images, summarize, Image, LoadOptions, Record, Summary};
use crate::simulate::trace::{Arrivals, Trace};

/// Most requests outstanding that `--max-in-flight` may allow.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Most jobs that `--max-jobs` may allow: a record per job is kept for the report.
pub const MAX_JOBS: u64 = 1_000_000;
/// Longest replay that `--max-replay-seconds` may allow: 30 days.
pub const MAX_REPLAY_SECONDS: f64 = 30.0 * 86_400.0;

/// How a trace is replayed, and its limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayPlan {
    /// Trace seconds per wall second: at 10, an arrival at trace time t is sent at t/10 s.
    pub time_scale: f64,
    /// Most requests outstanding at once.
    pub max_in_flight: usize,
    /// Most jobs the trace may hold.
    pub max_jobs: u64,
    /// Longest the replay may last once time-scaled (to its last send).
    pub max_duration: Duration,
    /// A send held this long past its time by `max_in_flight` is given up; each request gives
    /// up after this long too.
    pub timeout: Duration,
}

impl ReplayPlan {
    /// Checks the limits; errors name the option to change.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.time_scale.is_finite() && (0.001..=1_000_000.0).contains(&self.time_scale),
            "--time-scale must be from 0.001 to 1000000 (10 replays ten times faster), not {}",
            self.time_scale
        );
        anyhow::ensure!(
            (1..=MAX_IN_FLIGHT).contains(&self.max_in_flight),
            "--max-in-flight must be in 1..={MAX_IN_FLIGHT}"
        );
        anyhow::ensure!((1..=MAX_JOBS).contains(&self.max_jobs), "--max-jobs must be in 1..={MAX_JOBS}");
        anyhow::ensure!(
            !self.max_duration.is_zero() && self.max_duration.as_secs_f64() <= MAX_REPLAY_SECONDS,
            "--max-replay-seconds must be positive and at most {MAX_REPLAY_SECONDS} (30 days)"
        );
        anyhow::ensure!(!self.timeout.is_zero(), "--timeout-seconds must be at least 1");
        Ok(())
    }
}

/// When each job of a trace is sent, from the start of the replay, in order: its arrival time
/// divided by the time scale.
#[derive(Debug, Clone)]
pub struct Schedule<'a> {
    arrivals: Arrivals<'a>,
    time_scale: f64,
}

impl Iterator for Schedule<'_> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let t = self.arrivals.peek()?;
        self.arrivals.advance();
        Some(Duration::from_secs_f64(t / self.time_scale))
    }
}

/// The schedule of `trace` under `plan`, or why it cannot be replayed: no jobs, more than
/// `max_jobs`, or longer than `max_duration` once time-scaled.
pub fn schedule<'a>(trace: &'a Trace, plan: &ReplayPlan) -> anyhow::Result<Schedule<'a>> {
    plan.validate()?;
    // A trace's total fits a u64: parsing refuses counts that add up past it.
    match trace.jobs() {
        0 => anyhow::bail!("the trace has no jobs: every row's count is 0"),
        jobs if jobs <= plan.max_jobs => {}
        jobs => anyhow::bail!(
            "the trace has {jobs} jobs, more than --max-jobs {}: raise --max-jobs (at most {MAX_JOBS}), or replay a part of it",
            plan.max_jobs
        ),
    }
    let lasts_s = trace.duration_s() / plan.time_scale;
    anyhow::ensure!(
        lasts_s <= plan.max_duration.as_secs_f64(),
        "the trace lasts {lasts_s:.1} s at --time-scale {}, longer than --max-replay-seconds {}: \
         replay it faster (a larger --time-scale) or raise --max-replay-seconds",
        plan.time_scale,
        plan.max_duration.as_secs_f64()
    );
    Ok(Schedule { arrivals: trace.arrivals(), time_scale: plan.time_scale })
}

/// A finished replay: the load summary and how punctual the sends were.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// Jobs in the trace.
    pub jobs: u64,
    /// Trace seconds per wall second.
    pub time_scale: f64,
    /// When the last job was due, seconds from the start.
    pub schedule_s: f64,
    /// Answers, failures and latencies of the requests (given-up sends count as failed).
    pub summary: Summary,
    /// How late sends left after their time, ms: median.
    pub lag_p50_ms: f64,
    /// 95th percentile, ms.
    pub lag_p95_ms: f64,
    /// Latest, ms.
    pub lag_max_ms: f64,
    /// Sends held because `max_in_flight` requests were outstanding.
    pub held: usize,
    /// Sends given up: held past the timeout.
    pub unsent: usize,
    /// The most requests outstanding at once.
    pub peak_in_flight: usize,
    /// The limit on them.
    pub max_in_flight: usize,
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "trace       {} jobs due over {:.1} s (time scale ×{}); {} sent",
            self.jobs,
            self.schedule_s,
            self.time_scale,
            self.summary.requests - self.unsent
        )?;
        writeln!(f, "{}", self.summary)?;
        write!(
            f,
            "send lag ms p50 {:.1}  p95 {:.1}  max {:.1}  (peak {} in flight; {} sends held by --max-in-flight {}, {} given up)",
            self.lag_p50_ms,
            self.lag_p95_ms,
            self.lag_max_ms,
            self.peak_in_flight,
            self.held,
            self.max_in_flight,
            self.unsent
        )
    }
}

/// What every request task needs.
struct Shared<P> {
    client: Client,
    mode: Mode,
    images: Vec<Image>,
    expected: HashMap<String, Vec<String>>,
    progress: P,
    started: Instant,
}

/// What the sender saw.
struct Sent {
    records: Vec<Record>,
    /// Send lag in microseconds, 3 significant digits.
    lags: Histogram<u64>,
    held: usize,
    unsent: usize,
    peak_in_flight: usize,
}

/// Replays `trace` against `options.url` (`options.requests` and `concurrency` do not apply);
/// `progress` is told of each finished request. Async jobs are polled after a tenth of their age
/// ([`Poll::Proportional`]), so hundreds in flight do not flood the front end with polls.
pub async fn run(
    options: &LoadOptions,
    trace: &Trace,
    plan: &ReplayPlan,
    progress: impl Fn(&Record) + Send + Sync + 'static,
) -> anyhow::Result<(Vec<Record>, ReplayReport)> {
    let schedule = schedule(trace, plan)?;
    let schedule_s = trace.duration_s() / plan.time_scale;
    let shared = Arc::new(Shared {
        client: Client::new(options)?.polling(Poll::Proportional),
        mode: options.mode,
        images: read_images(&options.images)?,
        expected: match &options.expect {
            Some(path) => read_expectations(path)?,
            None => HashMap::new(),
        },
        progress,
        started: Instant::now(),
    });
    let mut sent = send_all(&shared, schedule, plan).await?;
    let wall = shared.started.elapsed();
    sent.records.sort_by_key(|r| r.index);
    let lag = |q: f64| sent.lags.value_at_quantile(q) as f64 / 1000.0;
    let report = ReplayReport {
        jobs: sent.records.len() as u64,
        time_scale: plan.time_scale,
        schedule_s,
        summary: summarize(&sent.records, wall),
        lag_p50_ms: lag(0.50),
        lag_p95_ms: lag(0.95),
        lag_max_ms: sent.lags.max() as f64 / 1000.0,
        held: sent.held,
        unsent: sent.unsent,
        peak_in_flight: sent.peak_in_flight,
        max_in_flight: plan.max_in_flight,
    };
    Ok((sent.records, report))
}

/// Sends each job at its time, each in a task of its own, and collects every record.
async fn send_all<P: Fn(&Record) + Send + Sync + 'static>(
    shared: &Arc<Shared<P>>,
    schedule: Schedule<'_>,
    plan: &ReplayPlan,
) -> anyhow::Result<Sent> {
    let slots = Arc::new(Semaphore::new(plan.max_in_flight));
    let lags = Histogram::new(3).expect("3 significant digits is valid");
    let mut sent = Sent { records: Vec::new(), lags, held: 0, unsent: 0, peak_in_flight: 0 };
    let mut tasks = JoinSet::new();
    for (index, at) in schedule.enumerate() {
        let due = shared.started + at;
        tokio::time::sleep_until(due.into()).await;
        let Some(slot) = take_slot(&slots, due, plan.timeout, &mut sent).await else {
            sent.records.push(unsent_record(shared, index, due, plan));
            continue;
        };
        let _ = sent.lags.record((due.elapsed().as_micros() as u64).max(1));
        let in_flight = plan.max_in_flight - slots.available_permits();
        sent.peak_in_flight = sent.peak_in_flight.max(in_flight);
        tasks.spawn(send_one(shared.clone(), index, in_flight, slot));
        while let Some(done) = tasks.try_join_next() {
            sent.records.push(done.context("a replay request panicked")?);
        }
    }
    while let Some(done) = tasks.join_next().await {
        sent.records.push(done.context("a replay request panicked")?);
    }
    Ok(sent)
}

/// A free slot under `max_in_flight`, waiting for one (and counting the send held) if none is
/// free; `None` once the send is `timeout` late.
async fn take_slot(
    slots: &Arc<Semaphore>,
    due: Instant,
    timeout: Duration,
    sent: &mut Sent,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(slot) = slots.clone().try_acquire_owned() {
        return Some(slot);
    }
    sent.held += 1;
    let waited = tokio::time::timeout_at((due + timeout).into(), slots.clone().acquire_owned()).await;
    match waited {
        Ok(slot) => Some(slot.expect("the semaphore is never closed")),
        Err(_) => {
            sent.unsent += 1;
            None
        }
    }
}

/// Sends job `index` and checks its answer; the slot is freed when it is done.
async fn send_one<P: Fn(&Record) + Send + Sync>(
    shared: Arc<Shared<P>>,
    index: usize,
    in_flight: usize,
    _slot: OwnedSemaphorePermit,
) -> Record {
    let image = &shared.images[index % shared.images.len()];
    let mut record = shared.client.send(index, image, shared.started, in_flight).await;
    check_labels(&mut record, &shared.expected);
    (shared.progress)(&record);
    record
}

/// The record of a send given up after being held past the timeout.
fn unsent_record<P: Fn(&Record)>(shared: &Shared<P>, index: usize, due: Instant, plan: &ReplayPlan) -> Record {
    let image = &shared.images[index % shared.images.len()];
    let record = Record {
        index,
        file: image.name.clone(),
        mode: shared.mode.name(),
        status: 0,
        latency_ms: 0.0,
        detector_ms: None,
        objects: None,
        labels: String::new(),
        correct: None,
        error: format!(
            "not sent: --max-in-flight ({}) requests were still outstanding {} s past its time",
            plan.max_in_flight,
            plan.timeout.as_secs()
        ),
        started_s: due.duration_since(shared.started).as_secs_f64(),
        users: plan.max_in_flight,
    };
    (shared.progress)(&record);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(time_scale: f64) -> ReplayPlan {
        ReplayPlan {
            time_scale,
            max_in_flight: 8,
            max_jobs: 1000,
            max_duration: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        }
    }

    fn seconds(trace: &Trace, plan: &ReplayPlan) -> Vec<f64> {
        schedule(trace, plan).unwrap().map(|d| d.as_secs_f64()).collect()
    }

    #[test]
    fn send_times_are_the_arrival_times_divided_by_the_time_scale() {
        let trace = Trace::parse("t_seconds,count\n0,4\n10,0\n20,2\n30,3\n").unwrap();
        let at_1 = seconds(&trace, &plan(1.0));
        assert_eq!(at_1, [0.0, 2.5, 5.0, 7.5, 20.0, 25.0, 30.0, 30.0, 30.0]);
        let at_10 = seconds(&trace, &plan(10.0));
        assert_eq!(at_10.len(), at_1.len());
        for (fast, slow) in at_10.iter().zip(&at_1) {
            assert!((fast * 10.0 - slow).abs() < 1e-9, "{fast} × 10 ≠ {slow}");
        }
        // Slower than real time works too: half speed doubles every time.
        assert_eq!(seconds(&trace, &plan(0.5))[1], 5.0);
    }

    #[test]
    fn every_job_of_the_trace_is_sent_once_in_order() {
        // Counts that do not divide their spans, a burst at one instant, and an empty row.
        let trace = Trace::parse("t_seconds,count\n0,7\n3,0\n3.5,1000\n3.5,0\n4,13\n9,5\n").unwrap();
        let times = seconds(&trace, &ReplayPlan { max_jobs: 2000, ..plan(3.0) });
        assert_eq!(times.len() as u64, trace.jobs());
        assert_eq!(times.len(), 7 + 1000 + 13 + 5);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "in order");
        // Durations hold whole nanoseconds.
        let at = |s: f64| times.iter().filter(|&&t| (t - s).abs() < 1e-9).count();
        assert_eq!(at(3.5 / 3.0), 1000, "the burst at one instant");
        assert_eq!(at(3.0), 5, "the last row's jobs at its time");
        assert!(times.iter().all(|&t| t <= 3.0 + 1e-9), "none after the last row");
    }

    #[test]
    fn traces_past_the_limits_are_refused_with_the_option_to_change() {
        let long = Trace::parse("t_seconds,count\n0,10\n120,1\n").unwrap();
        let err = schedule(&long, &plan(1.0)).unwrap_err().to_string();
        assert!(err.contains("lasts 120.0 s") && err.contains("--time-scale"), "{err}");
        assert!(schedule(&long, &plan(2.0)).is_ok(), "60 s at ×2 fits the 60 s limit");
        let many = Trace::parse("t_seconds,count\n0,1001\n").unwrap();
        let err = schedule(&many, &plan(1.0)).unwrap_err().to_string();
        assert!(err.contains("1001 jobs") && err.contains("--max-jobs 1000"), "{err}");
        let huge = Trace::parse(&format!("t_seconds,count\n0,{}\n", u64::MAX)).unwrap();
        let err = schedule(&huge, &plan(1.0)).unwrap_err().to_string();
        assert!(err.contains(&format!("{} jobs", u64::MAX)), "{err}");
        let empty = Trace::parse("t_seconds,count\n0,0\n5,0\n").unwrap();
        assert!(schedule(&empty, &plan(1.0)).unwrap_err().to_string().contains("no jobs"));
    }

    #[test]
    fn plans_are_checked() {
        assert!(plan(1.0).validate().is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e7] {
            let err = plan(bad).validate().unwrap_err().to_string();
            assert!(err.contains("--time-scale"), "{bad}: {err}");
        }
        assert!(ReplayPlan { max_in_flight: 0, ..plan(1.0) }.validate().is_err());
        assert!(ReplayPlan { max_in_flight: MAX_IN_FLIGHT + 1, ..plan(1.0) }.validate().is_err());
        assert!(ReplayPlan { max_jobs: 0, ..plan(1.0) }.validate().is_err());
        assert!(ReplayPlan { max_duration: Duration::ZERO, ..plan(1.0) }.validate().is_err());
        assert!(ReplayPlan { timeout: Duration::ZERO, ..plan(1.0) }.validate().is_err());
    }
}
