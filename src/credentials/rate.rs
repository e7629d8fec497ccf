//! Per-address token buckets for the credentials endpoint: a worker exchanges its token once and
//! renews about once an hour, so a handful of requests a minute from one address is plenty, and
//! anything beyond is refused before it reaches the store or a cloud.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Requests one address may make at once.
pub const BURST: u32 = 20;
/// Requests per minute one address may make in the long run.
pub const PER_MINUTE: u32 = 12;
/// Addresses tracked at once: beyond, the least recently seen is forgotten (a full bucket).
pub const MAX_ADDRESSES: usize = 4096;

/// Token buckets by source address.
pub struct RateLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    burst: f64,
    per_second: f64,
    max_addresses: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(BURST, PER_MINUTE, MAX_ADDRESSES)
    }
}

impl RateLimiter {
    /// `burst` requests at once, `per_minute` in the long run, `max_addresses` tracked.
    pub fn new(burst: u32, per_minute: u32, max_addresses: usize) -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
            burst: f64::from(burst),
            per_second: f64::from(per_minute) / 60.0,
            max_addresses,
        }
    }

    /// Takes one request from `address`'s bucket at `now`, or says how long until one is free.
    pub fn check(&self, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&address) && buckets.len() >= self.max_addresses {
            let oldest = buckets.iter().min_by_key(|(_, b)| b.at).map(|(a, _)| *a);
            if let Some(oldest) = oldest {
                buckets.remove(&oldest);
            }
        }
        let bucket = buckets.entry(address).or_insert(Bucket { tokens: self.burst, at: now });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_long_run_rate_per_address() {
        let limiter = RateLimiter::new(3, 60, 16);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(a, start).is_ok());
        }
        let wait = limiter.check(a, start).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO, "{wait:?}");
        assert!(limiter.check(b, start).is_ok(), "another address has its own bucket");
        assert!(limiter.check(a, start + Duration::from_secs(1)).is_ok(), "one a second at 60 a minute");
        assert!(limiter.check(a, start + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_least_recent_address() {
        let limiter = RateLimiter::new(1, 1, 4);
        let start = Instant::now();
        let address = |i: u8| IpAddr::from([10, 0, 0, i]);
        for i in 0..4 {
            assert!(limiter.check(address(i), start + Duration::from_millis(u64::from(i))).is_ok());
        }
        assert!(limiter.check(address(9), start + Duration::from_millis(10)).is_ok());
        assert_eq!(limiter.buckets.lock().unwrap().len(), 4);
        // 10.0.0.0 was forgotten: it starts with a full bucket again.
        assert!(limiter.check(address(0), start + Duration::from_millis(11)).is_ok());
        assert!(limiter.check(address(3), start + Duration::from_millis(12)).is_err(), "still remembered");
    }
}
