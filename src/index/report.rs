//! The index's read side: per-zone totals, counts per time bucket and the numbered stream of
//! finished jobs, each one SQL query over the rows the write side keeps.

use rusqlite::{params, Connection};
use uuid::Uuid;

use super::{BucketCounts, FinishedEvent, JobStatus, LabelCount, ZoneSummary, ZoneTotals, PERSON};
use crate::job::JobResult;

/// Objects per label in one result.
pub fn label_counts(result: &JobResult) -> Vec<(String, u64)> {
    let mut counts: std::collections::BTreeMap<&str, u64> = Default::default();
    for object in &result.detection.objects {
        *counts.entry(&object.label).or_default() += 1;
    }
    counts.into_iter().map(|(label, n)| (label.to_string(), n)).collect()
}

fn sorted_labels(mut labels: Vec<LabelCount>) -> Vec<LabelCount> {
    labels.sort_by(|a, b| {
        (b.label == PERSON).cmp(&(a.label == PERSON)).then(b.count.cmp(&a.count)).then(a.label.cmp(&b.label))
    });
    labels
}

/// People among `labels`: the `person` count.
pub fn head_count(labels: &[LabelCount]) -> u64 {
    labels.iter().find(|l| l.label == PERSON).map_or(0, |l| l.count)
}

pub(super) fn finished_after(c: &mut Connection, after: i64, limit: u32) -> rusqlite::Result<Vec<FinishedEvent>> {
    let mut jobs = c.prepare(
        "SELECT finished_seq, job_id, status, zone, file, finished_at_ms, error FROM jobs
         WHERE finished_seq > ?1 ORDER BY finished_seq LIMIT ?2",
    )?;
    let mut events: Vec<FinishedEvent> = jobs
        .query_map(params![after, limit], |r| {
            Ok(FinishedEvent {
                seq: r.get(0)?,
                job_id: Uuid::parse_str(&r.get::<_, String>(1)?).unwrap_or_default(),
                status: JobStatus::parse(&r.get::<_, String>(2)?),
                zone: r.get(3)?,
                file: r.get(4)?,
                finished_at_ms: r.get(5)?,
                head_count: 0,
                labels: Vec::new(),
                error: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut labels = c.prepare("SELECT label, count FROM labels WHERE job_id = ?1")?;
    for event in &mut events {
        let found = labels
            .query_map([event.job_id.to_string()], |r| Ok(LabelCount { label: r.get(0)?, count: r.get(1)? }))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        event.labels = sorted_labels(found);
        event.head_count = head_count(&event.labels);
    }
    Ok(events)
}

pub(super) fn buckets(
    c: &mut Connection,
    zone: Option<&str>,
    since_ms: i64,
    until_ms: i64,
    bucket_ms: i64,
) -> rusqlite::Result<Vec<BucketCounts>> {
    // Times are positive, so SQLite's integer division floors.
    let filter =
        "j.status = 'done' AND j.finished_at_ms >= ?2 AND j.finished_at_ms < ?3 AND (?4 IS NULL OR j.zone = ?4)";
    let mut images = c.prepare(&format!(
        "SELECT (j.finished_at_ms / ?1) * ?1 AS start, COUNT(*) FROM jobs j WHERE {filter} GROUP BY start ORDER BY start"
    ))?;
    let mut out: Vec<BucketCounts> = images
        .query_map(params![bucket_ms, since_ms, until_ms, zone], |r| {
            Ok(BucketCounts { start_ms: r.get(0)?, images: r.get(1)?, labels: Vec::new() })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut labels = c.prepare(&format!(
        "SELECT (j.finished_at_ms / ?1) * ?1 AS start, l.label, SUM(l.count) FROM labels l
         JOIN jobs j ON j.job_id = l.job_id WHERE {filter} GROUP BY start, l.label"
    ))?;
    let rows = labels.query_map(params![bucket_ms, since_ms, until_ms, zone], |r| {
        Ok((r.get::<_, i64>(0)?, LabelCount { label: r.get(1)?, count: r.get(2)? }))
    })?;
    for row in rows {
        let (start, label) = row?;
        if let Ok(i) = out.binary_search_by_key(&start, |b| b.start_ms) {
            out[i].labels.push(label);
        }
    }
    for bucket in &mut out {
        bucket.labels = sorted_labels(std::mem::take(&mut bucket.labels));
    }
    Ok(out)
}

pub(super) fn zones(c: &mut Connection) -> rusqlite::Result<(Vec<ZoneSummary>, ZoneTotals)> {
    // The totals the write side keeps (`super::totals`): a row per zone, a row per zone and label.
    let mut stmt = c.prepare_cached(
        "SELECT zone, images, last_job_id, last_finished_at_ms, last_head_count FROM zone_totals ORDER BY zone",
    )?;
    let mut per_zone: Vec<ZoneSummary> = stmt
        .query_map([], |r| {
            Ok(ZoneSummary {
                zone: r.get(0)?,
                totals: ZoneTotals { images: r.get(1)?, head_count: 0, labels: Vec::new() },
                last_job_id: Uuid::parse_str(&r.get::<_, String>(2)?).unwrap_or_default(),
                last_finished_at_ms: r.get(3)?,
                last_head_count: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut label_stmt = c.prepare_cached("SELECT zone, label, count FROM zone_labels ORDER BY zone")?;
    let rows = label_stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, LabelCount { label: r.get(1)?, count: r.get(2)? })))?;
    for row in rows {
        let (zone, label) = row?;
        if let Ok(i) = per_zone.binary_search_by(|z| z.zone.as_str().cmp(&zone)) {
            per_zone[i].totals.labels.push(label);
        }
    }
    for zone in &mut per_zone {
        zone.totals.labels = sorted_labels(std::mem::take(&mut zone.totals.labels));
        zone.totals.head_count = head_count(&zone.totals.labels);
    }
    let mut totals = ZoneTotals { images: 0, head_count: 0, labels: Vec::new() };
    let mut all: std::collections::BTreeMap<String, u64> = Default::default();
    for zone in &per_zone {
        totals.images += zone.totals.images;
        for l in &zone.totals.labels {
            *all.entry(l.label.clone()).or_default() += l.count;
        }
    }
    totals.labels = sorted_labels(all.into_iter().map(|(label, count)| LabelCount { label, count }).collect());
    totals.head_count = head_count(&totals.labels);
    Ok((per_zone, totals))
}
