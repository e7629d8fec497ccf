//! Validated limits: quantities with rules get a constructor that refuses bad values, so no
//! other code re-checks bare numbers.

use serde::{Deserialize, Serialize};

/// A limit that cannot be used, with the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidLimit {
    /// `scaling.min` above `scaling.max`.
    #[error("scaling.min = {min} is above scaling.max = {max}: lower min or raise max")]
    MinAboveMax {
        /// The lower cap.
        min: u32,
        /// The upper cap.
        max: u32,
    },
    /// `scaling.max` of zero would never run a worker.
    #[error("scaling.max must be at least 1 (the seeds use 19)")]
    ZeroMax,
    /// A debounce of zero checks would act before seeing anything.
    #[error("scaling.debounce_checks must be at least 1")]
    ZeroDebounce,
}

/// The total-instance bounds over all pools: `scaling.min` ..= `scaling.max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caps {
    min: u32,
    max: u32,
}

impl Caps {
    /// The seeds' cap: at most 19 app instances (one of 20 in an AWS account's default limit
    /// was the web tier).
    pub const SEED_MAX: u32 = 19;

    /// `min ..= max` instances in all pools together.
    pub fn try_new(min: u32, max: u32) -> Result<Self, InvalidLimit> {
        if max == 0 {
            return Err(InvalidLimit::ZeroMax);
        }
        if min > max {
            return Err(InvalidLimit::MinAboveMax { min, max });
        }
        Ok(Self { min, max })
    }

    /// The lowest total; instances kept warm even with an empty queue.
    pub fn min(&self) -> u32 {
        self.min
    }

    /// The highest total, stopping instances included.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// `n` within the caps and no more than `quota` (the sum of pool quotas).
    pub fn clamp(&self, n: u64, quota: u32) -> u32 {
        let upper = self.max.min(quota);
        n.min(upper as u64).max(self.min.min(upper) as u64) as u32
    }
}

impl Default for Caps {
    fn default() -> Self {
        Self { min: 0, max: Self::SEED_MAX }
    }
}

/// How many consecutive checks must agree before capacity is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Debounce(u32);

impl Debounce {
    /// `checks` ≥ 1; 1 acts at once.
    pub fn try_new(checks: u32) -> Result<Self, InvalidLimit> {
        if checks == 0 {
            Err(InvalidLimit::ZeroDebounce)
        } else {
            Ok(Self(checks))
        }
    }

    /// The number of checks.
    pub fn checks(&self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_refuse_impossible_bounds() {
        assert_eq!(Caps::try_new(5, 4), Err(InvalidLimit::MinAboveMax { min: 5, max: 4 }));
        assert_eq!(Caps::try_new(0, 0), Err(InvalidLimit::ZeroMax));
        assert_eq!(Debounce::try_new(0), Err(InvalidLimit::ZeroDebounce));
        assert_eq!(Caps::default().max(), 19);
    }

    #[test]
    fn clamp_respects_min_max_and_quota() {
        let caps = Caps::try_new(2, 19).unwrap();
        assert_eq!(caps.clamp(0, 100), 2);
        assert_eq!(caps.clamp(24, 100), 19);
        assert_eq!(caps.clamp(24, 10), 10);
        // A quota below min wins: the pools cannot hold more.
        assert_eq!(caps.clamp(0, 1), 1);
    }
}
