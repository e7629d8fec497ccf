//! The arrival rate: jobs per second reaching the queue, which no queue reports directly. Each
//! check gives the backlog (queued + in service) and how many jobs have been finished so far;
//! what arrived since the previous check is the backlog's change plus the jobs finished in
//! between. The rate is smoothed exponentially over two windows, weighting each check by its
//! length, so checks that come late or early count for what they cover: the short window is
//! the rate, and the two windows' difference is its trend (a linear ramp lags each window by
//! that window's length, so the difference of the two over the difference of the lags is the
//! ramp's slope).
//!
//! The controller counts finished jobs from the workers' heartbeats (a few seconds late, which
//! the smoothing absorbs); the simulator counts them exactly. Both feed this same meter.

use serde::{Deserialize, Serialize};

use crate::observation::Arrivals;

/// Exponentially smoothed arrival rates over a short and a long window, carried between checks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ArrivalMeter {
    /// Time constants of the smoothing, seconds: short < long.
    windows_s: (f64, f64),
    /// The previous check: (seconds, backlog, finished so far).
    last: Option<(f64, u64, u64)>,
    /// The latest check that saw a job arrive, or the first check.
    last_arrival_s: Option<f64>,
    /// Jobs per second over each window, once two checks have been seen.
    rates: Option<(f64, f64)>,
}

impl Default for ArrivalMeter {
    /// The windows the controller and the simulator use: 30 s and 120 s.
    fn default() -> Self {
        Self::new(30.0, 120.0)
    }
}

impl ArrivalMeter {
    /// A meter smoothing over `short_s` and `long_s` seconds (at least 1 s each, the long one
    /// at least twice the short one).
    pub fn new(short_s: f64, long_s: f64) -> Self {
        let short = if short_s.is_finite() { short_s.max(1.0) } else { 30.0 };
        let long = if long_s.is_finite() { long_s.max(2.0 * short) } else { 4.0 * short };
        Self { windows_s: (short, long), last: None, last_arrival_s: None, rates: None }
    }

    /// Takes one check at `at_s` seconds (any monotonic origin): the backlog, and the jobs
    /// finished since some fixed start (a count that only grows). Returns the rate and trend.
    ///
    /// A backlog that shrank by more than the jobs finished (messages deleted by an operator,
    /// expired, dead-lettered, or finishes not yet reported) counts as no arrivals, never as a
    /// negative rate. A clock that did not advance leaves the rates as they were.
    pub fn observe(&mut self, at_s: f64, backlog: u64, finished: u64) -> Option<Arrivals> {
        let Some((then, last_backlog, last_finished)) = self.last else {
            self.last = Some((at_s, backlog, finished));
            self.last_arrival_s = Some(at_s);
            return self.arrivals();
        };
        let elapsed = at_s - then;
        if elapsed.is_nan() || elapsed <= 0.0 {
            return self.arrivals();
        }
        let done = finished.saturating_sub(last_finished);
        let arrived = (backlog + done).saturating_sub(last_backlog);
        let sample = arrived as f64 / elapsed;
        if arrived > 0 {
            self.last_arrival_s = Some(at_s);
        }
        let smooth = |rate: f64, window: f64| rate + (1.0 - (-elapsed / window).exp()) * (sample - rate);
        // Both windows start from nothing: a burst in the first seconds must not read as a rate
        // sustained over the long window. A steady load is reached within the short window.
        let (short, long) = self.rates.unwrap_or((0.0, 0.0));
        self.rates = Some((smooth(short, self.windows_s.0), smooth(long, self.windows_s.1)));
        self.last = Some((at_s, backlog, finished.max(last_finished)));
        self.arrivals()
    }

    /// The rate over the short window and its trend, once two checks have been seen.
    pub fn arrivals(&self) -> Option<Arrivals> {
        let (short, long) = self.rates?;
        let quiet_s = match (self.last, self.last_arrival_s) {
            (Some((now, _, _)), Some(arrival)) => (now - arrival).max(0.0),
            _ => 0.0,
        };
        Some(Arrivals {
            rate: short,
            sustained: long,
            trend: (short - long) / (self.windows_s.1 - self.windows_s.0),
            quiet_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `rate` jobs/s for `seconds`, in 5 s checks, with the backlog held at `backlog`.
    fn feed(meter: &mut ArrivalMeter, t: &mut f64, finished: &mut u64, rate: f64, seconds: f64, backlog: u64) {
        let end = *t + seconds;
        while *t < end - 1e-9 {
            *t += 5.0;
            *finished += (rate * 5.0) as u64;
            meter.observe(*t, backlog, *finished);
        }
    }

    #[test]
    fn arrivals_are_the_backlog_change_plus_the_jobs_finished() {
        let mut meter = ArrivalMeter::new(60.0, 240.0);
        assert_eq!(meter.observe(0.0, 10, 0), None, "one check is no rate");
        // 5 s later: backlog 20 (10 more) and 40 finished: 50 arrived, 10 jobs/s, of which
        // each window has taken its share (both start from nothing).
        let a = meter.observe(5.0, 20, 40).unwrap();
        assert!((a.rate - 10.0 * (1.0 - (-5.0f64 / 60.0).exp())).abs() < 1e-9, "{a:?}");
        assert!((a.sustained - 10.0 * (1.0 - (-5.0f64 / 240.0).exp())).abs() < 1e-9, "{a:?}");
        // A steady 10 jobs/s, long past both windows, reads 10 with no trend.
        let (mut t, mut finished) = (5.0, 40);
        feed(&mut meter, &mut t, &mut finished, 10.0, 7200.0, 20);
        let a = meter.arrivals().unwrap();
        assert!((a.rate - 10.0).abs() < 1e-6 && (a.sustained - 10.0).abs() < 1e-6 && a.trend.abs() < 1e-6, "{a:?}");
    }

    #[test]
    fn the_rate_follows_a_change_over_its_window_and_the_trend_is_a_ramps_slope() {
        let mut meter = ArrivalMeter::new(60.0, 240.0);
        meter.observe(0.0, 0, 0);
        let (mut t, mut finished) = (0.0, 0);
        feed(&mut meter, &mut t, &mut finished, 10.0, 3600.0, 0);
        // Arrivals jump from 10 to 30 jobs/s: after one short window the rate has covered 63 %,
        // the long window less, and the trend is rising.
        feed(&mut meter, &mut t, &mut finished, 30.0, 60.0, 0);
        let a = meter.arrivals().unwrap();
        assert!((a.rate - (30.0 - 20.0 * (-1.0f64).exp())).abs() < 1e-6, "{a:?}");
        assert!(a.sustained < a.rate && a.trend > 0.0, "a step up is a rising trend: {a:?}");
        // A ramp of 0.1 jobs/s per second, long past both windows: the trend is its slope.
        let mut ramp = ArrivalMeter::new(30.0, 120.0);
        let mut arrived = 0.0;
        for k in 0..=720 {
            let t = f64::from(k) * 5.0;
            ramp.observe(t, 0, arrived as u64);
            arrived += 0.1 * (t + 2.5) * 5.0;
        }
        let a = ramp.arrivals().unwrap();
        assert!((a.trend - 0.1).abs() < 0.005, "{a:?}");
    }

    #[test]
    fn a_backlog_emptied_by_hand_is_not_a_negative_rate_and_a_stuck_clock_changes_nothing() {
        let mut meter = ArrivalMeter::default();
        let none = |quiet_s| Some(Arrivals { rate: 0.0, sustained: 0.0, trend: 0.0, quiet_s });
        meter.observe(0.0, 1000, 0);
        assert_eq!(meter.observe(5.0, 0, 10), none(5.0), "a purge is no arrivals");
        assert_eq!(meter.observe(5.0, 50, 10), none(5.0), "no time passed");
        // A counter that went back (a restarted count) is not a huge arrival either.
        assert_eq!(meter.observe(10.0, 0, 0), none(10.0));
        // One job arrives: the quiet starts again.
        assert_eq!(meter.observe(15.0, 1, 0).unwrap().quiet_s, 0.0);
        assert_eq!(meter.observe(20.0, 0, 1).unwrap().quiet_s, 5.0);
        assert_eq!(ArrivalMeter::new(f64::NAN, 10.0).windows_s, (30.0, 60.0));
    }
}
