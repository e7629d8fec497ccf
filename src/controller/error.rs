//! Why a check could not be made, and what the loop does about it: [`error_policy`] maps each
//! kind of failure to retry now, back off (with that kind's own base and ceiling) or report, in
//! one place, after kube-rs's `error_policy`.

use std::time::Duration;

use crate::queue::QueueError;
use crate::store::StoreError;

/// A failure that stops a check, or pauses a pool. A provider error while listing or acting
/// does not stop a check: it marks its pool's health and the planner goes past it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request queue's depth could not be read: no decision without the backlog.
    #[error("cannot read the request queue: {0}")]
    Queue(#[source] QueueError),
    /// Heartbeats or drain requests could not be read: no decision without knowing who is busy.
    #[error("cannot read the workers' records: {0}")]
    Records(#[source] StoreError),
    /// The lease could not be read or renewed: acting without it could double the fleet.
    #[error("cannot read the lease: {0}")]
    Lease(#[source] StoreError),
    /// A cloud asked us to slow down: no launches in that pool for a while, and no burst past it.
    #[error("pool {pool} is throttled by its cloud")]
    Throttled {
        /// The pool.
        pool: String,
    },
}

/// What the loop does after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Check again at the next tick: the failure is one a new attempt may clear at once.
    RetryNow,
    /// Wait `base` ticks, doubling with every failure in a row, up to `max` ticks: an outage or
    /// a throttle that asking every tick would only prolong.
    BackOff {
        /// Ticks after the first failure.
        base: u32,
        /// The longest wait, in ticks.
        max: u32,
    },
    /// Only an operator can fix it (a deleted queue, a bug): log it as an error and check again
    /// every `every` ticks, so the fix is noticed.
    Report {
        /// Ticks between checks.
        every: u32,
    },
}

impl Next {
    /// The wait before the next check after `streak` failures in a row (1 for the first).
    pub fn wait(self, tick: Duration, streak: u32) -> Duration {
        match self {
            Next::RetryNow => tick,
            Next::BackOff { base, max } => {
                let doublings = streak.saturating_sub(1).min(31);
                tick * base.saturating_mul(1u32 << doublings).min(max)
            }
            Next::Report { every } => tick * every,
        }
    }
}

/// The one place that decides, per kind of failure:
/// - an unreachable queue or store: back off from one tick, doubling up to 8 ticks (40 s at the
///   default 5 s tick), so an outage is not met with a request every tick and recovery is
///   noticed within 8 ticks;
/// - a queue that does not exist or a key the store refuses: report (an operator must create the
///   queue; a refused key is a bug), checking every 8 ticks;
/// - a receipt or object that vanished between two calls: retry at the next tick;
/// - a throttled pool: back off from one tick, doubling up to 32 ticks (2 min 40 s at 5 s), as
///   the SDKs' own retry policies do.
pub fn error_policy(error: &Error) -> Next {
    const OUTAGE: Next = Next::BackOff { base: 1, max: 8 };
    const OPERATOR: Next = Next::Report { every: 8 };
    match error {
        Error::Queue(QueueError::Unavailable { .. }) => OUTAGE,
        Error::Queue(QueueError::Missing { .. }) => OPERATOR,
        Error::Queue(QueueError::StaleReceipt { .. }) => Next::RetryNow,
        Error::Records(e) | Error::Lease(e) => match e {
            StoreError::Unavailable { .. } => OUTAGE,
            StoreError::InvalidKey { .. } => OPERATOR,
            StoreError::NotFound { .. } => Next::RetryNow,
        },
        Error::Throttled { .. } => Next::BackOff { base: 1, max: 32 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_down() -> StoreError {
        StoreError::Unavailable { bucket: "b".into(), cause: "disk full".into() }
    }

    #[test]
    fn outages_back_off_to_eight_ticks() {
        let tick = Duration::from_secs(5);
        let next = error_policy(&Error::Records(store_down()));
        let waits: Vec<u64> = (1..=6).map(|streak| next.wait(tick, streak).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 40, 40]);
        let queue = QueueError::Unavailable { queue: "q".into(), cause: "refused".into() };
        assert_eq!(error_policy(&Error::Queue(queue)), next);
    }

    #[test]
    fn what_only_an_operator_can_fix_is_reported_and_races_retry() {
        assert_eq!(error_policy(&Error::Queue(QueueError::Missing { queue: "q".into() })), Next::Report { every: 8 });
        let refused = StoreError::InvalidKey { key: "../x".into(), reason: "escapes" };
        assert_eq!(error_policy(&Error::Lease(refused)), Next::Report { every: 8 });
        let gone = StoreError::NotFound { bucket: "b".into(), key: "k".into() };
        assert_eq!(error_policy(&Error::Records(gone)), Next::RetryNow);
        assert_eq!(Next::RetryNow.wait(Duration::from_secs(5), 9), Duration::from_secs(5));
    }

    #[test]
    fn throttling_backs_off_further_than_an_outage() {
        let next = error_policy(&Error::Throttled { pool: "p".into() });
        let ticks: Vec<u32> =
            (1..=8).map(|streak| next.wait(Duration::from_secs(1), streak).as_secs() as u32).collect();
        assert_eq!(ticks, [1, 2, 4, 8, 16, 32, 32, 32]);
    }

    #[test]
    fn the_cause_is_kept() {
        let e = Error::Records(store_down());
        let store = std::error::Error::source(&e).expect("the store error");
        assert!(store.source().is_some_and(|cause| cause.to_string() == "disk full"));
    }
}
