//! `GET /api/stats`: images and objects counted per time bucket (30 s by default), bucketed by
//! the server so that every dashboard draws the same bars.
//!
//! Buckets are aligned to the Unix epoch (a 30 s bucket starts at :00 or :30), and the series is
//! contiguous from the bucket holding `since` to the one holding `until`, empty buckets
//! included: a chart draws it as is, and a client polling with the last bucket's start as `since`
//! gets that bucket again, now complete, plus any newer ones.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::query::parse_time;
use super::views::timestamp;
use super::AppState;
use crate::index::{head_count, BucketCounts, LabelCount};

/// The default bucket: the dashboard's bar chart.
const DEFAULT_BUCKET: Duration = Duration::from_secs(30);
/// Buckets a default window holds (30 minutes of 30 s buckets).
const DEFAULT_BUCKETS: i64 = 60;
/// Most buckets one answer holds: a day of 30 s buckets.
pub const MAX_BUCKETS: i64 = 2880;
/// The largest bucket.
const MAX_BUCKET: Duration = Duration::from_secs(86_400);

/// Filters for `GET /api/stats`.
#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Bucket size in whole seconds, written like `30s`, `5m` or `1h`; default 30s, at most 1 day.
    pub bucket: Option<String>,
    /// Start (RFC 3339), rounded down to a bucket edge; default 60 buckets before `until`.
    pub since: Option<String>,
    /// End (RFC 3339), exclusive; default now.
    pub until: Option<String>,
    /// Only this zone; default all images, with or without a zone.
    pub zone: Option<String>,
}

/// One bucket.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BucketView {
    /// Bucket start (RFC 3339).
    pub start: String,
    /// Bucket start, ms since the Unix epoch.
    pub start_ms: i64,
    /// Images done in the bucket.
    pub images: u64,
    /// Objects found in them.
    pub objects: u64,
    /// People among them.
    pub head_count: u64,
    /// Objects per label, people first.
    pub labels: Vec<LabelCount>,
}

/// `GET /api/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsBody {
    /// Bucket size, seconds.
    pub bucket_seconds: u64,
    /// Start of the first bucket (RFC 3339).
    pub since: String,
    /// End of the window (RFC 3339), exclusive.
    pub until: String,
    /// Every bucket from `since` to `until`, oldest first.
    pub buckets: Vec<BucketView>,
}

/// Images and objects per time bucket.
#[utoipa::path(
    get, path = "/api/stats", params(StatsQuery),
    responses(
        (status = 200, description = "Counts per bucket", body = StatsBody),
        (status = 400, description = "Bad bucket, time or zone", body = ErrorBody),
    )
)]
pub async fn stats(state: web::Data<AppState>, query: web::Query<StatsQuery>) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    if let Some(zone) = &query.zone {
        super::intake::check_zone(zone)?;
    }
    let bucket = parse_bucket(query.bucket.as_deref())?;
    let bucket_ms = bucket.as_millis() as i64;
    let until_ms = match &query.until {
        Some(text) => parse_time("until", "bad_until", text)?,
        None => crate::job::now_ms(),
    };
    let since_ms = match &query.since {
        Some(text) => parse_time("since", "bad_since", text)?,
        None => until_ms - DEFAULT_BUCKETS * bucket_ms,
    };
    let window = Window::new(since_ms, until_ms, bucket_ms)?;
    let counts = state.index.buckets(query.zone, window.first_ms, window.until_ms, bucket_ms).await?;
    Ok(HttpResponse::Ok().json(StatsBody {
        bucket_seconds: bucket.as_secs(),
        since: timestamp(window.first_ms),
        until: timestamp(window.until_ms),
        buckets: window.series(counts),
    }))
}

/// `30s`, `5m`, `1h`…: whole seconds from 1 s to a day.
fn parse_bucket(text: Option<&str>) -> Result<Duration, ApiError> {
    let Some(text) = text else { return Ok(DEFAULT_BUCKET) };
    let bad = |why: String| ApiError::bad_request("bad_bucket", format!("bucket={text:?} {why}; e.g. 30s, 5m or 1h"));
    let bucket = humantime::parse_duration(text).map_err(|e| bad(format!("is not a duration ({e})")))?;
    if bucket.subsec_nanos() != 0 || bucket < Duration::from_secs(1) || bucket > MAX_BUCKET {
        return Err(bad("must be whole seconds from 1s to 1 day".into()));
    }
    Ok(bucket)
}

/// The buckets one answer covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    /// Start of the first bucket: `since` rounded down to a bucket edge.
    first_ms: i64,
    /// End of the window, exclusive.
    until_ms: i64,
    bucket_ms: i64,
}

impl Window {
    fn new(since_ms: i64, until_ms: i64, bucket_ms: i64) -> Result<Self, ApiError> {
        if until_ms <= since_ms {
            return Err(ApiError::bad_request("bad_window", "until must be later than since"));
        }
        let first_ms = since_ms.div_euclid(bucket_ms) * bucket_ms;
        let window = Self { first_ms, until_ms, bucket_ms };
        if window.len() > MAX_BUCKETS {
            let detail = format!(
                "{} buckets between since and until; at most {MAX_BUCKETS}: use a larger bucket or a shorter window",
                window.len()
            );
            return Err(ApiError::bad_request("too_many_buckets", detail));
        }
        Ok(window)
    }

    /// Buckets from the first to the one holding the last millisecond before `until`.
    fn len(&self) -> i64 {
        (self.until_ms - 1 - self.first_ms).div_euclid(self.bucket_ms) + 1
    }

    /// The contiguous series, with zeros where `counts` (sorted by start) has no row.
    fn series(&self, counts: Vec<BucketCounts>) -> Vec<BucketView> {
        let mut counts = counts.into_iter().peekable();
        (0..self.len())
            .map(|i| {
                let start_ms = self.first_ms + i * self.bucket_ms;
                let found = counts.next_if(|c| c.start_ms == start_ms);
                let (images, labels) = found.map_or((0, Vec::new()), |c| (c.images, c.labels));
                let objects = labels.iter().map(|l| l.count).sum();
                let head_count = head_count(&labels);
                BucketView { start: timestamp(start_ms), start_ms, images, objects, head_count, labels }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(start_ms: i64, images: u64, labels: &[(&str, u64)]) -> BucketCounts {
        let labels = labels.iter().map(|(l, c)| LabelCount { label: l.to_string(), count: *c }).collect();
        BucketCounts { start_ms, images, labels }
    }

    #[test]
    fn the_window_starts_on_a_bucket_edge_and_ends_with_the_bucket_holding_until() {
        let w = Window::new(61_000, 120_000, 30_000).unwrap();
        assert_eq!((w.first_ms, w.len()), (60_000, 2), "60–90 s and 90–120 s; 120 s itself is out");
        assert_eq!(Window::new(61_000, 120_001, 30_000).unwrap().len(), 3);
        assert_eq!(Window::new(60_000, 60_001, 30_000).unwrap().len(), 1);
    }

    #[test]
    fn the_series_is_contiguous_with_zeros_where_nothing_finished() {
        let w = Window::new(0, 150_000, 30_000).unwrap();
        let series = w.series(vec![counts(30_000, 2, &[("person", 3), ("bus", 1)]), counts(120_000, 1, &[])]);
        let starts: Vec<i64> = series.iter().map(|b| b.start_ms).collect();
        assert_eq!(starts, [0, 30_000, 60_000, 90_000, 120_000]);
        let figures: Vec<(u64, u64, u64)> = series.iter().map(|b| (b.images, b.objects, b.head_count)).collect();
        assert_eq!(figures, [(0, 0, 0), (2, 4, 3), (0, 0, 0), (0, 0, 0), (1, 0, 0)]);
        assert_eq!(series[1].start, "1970-01-01T00:00:30.000Z");
    }

    #[test]
    fn bad_windows_and_buckets_are_refused_with_a_reason() {
        assert!(Window::new(10, 10, 30_000).is_err(), "empty window");
        assert!(Window::new(0, (MAX_BUCKETS + 1) * 1000, 1000).is_err(), "too many buckets");
        assert!(Window::new(0, MAX_BUCKETS * 1000, 1000).is_ok());
        assert_eq!(parse_bucket(None).unwrap(), Duration::from_secs(30));
        assert_eq!(parse_bucket(Some("5m")).unwrap(), Duration::from_secs(300));
        for bad in ["0s", "1500ms", "2days", "soon", "-30s"] {
            assert!(parse_bucket(Some(bad)).is_err(), "{bad} accepted");
        }
    }
}
