//! Per-zone totals kept up to date as jobs finish and as they are deleted, so `/api/zones`
//! reads a row per zone and its labels instead of every job's labels (v4 of the schema).

use rusqlite::{params, OptionalExtension, Transaction};

use super::PERSON;

/// Adds a done job of `zone` with `labels` (objects per label) finished at `at_ms`. The latest
/// job is the one finished last, the smallest id among equals (as the v3 query ordered them);
/// every expression of the update reads the row as it was.
pub(super) fn add(
    tx: &Transaction<'_>,
    zone: &str,
    job_id: &str,
    at_ms: i64,
    labels: &[(String, u64)],
) -> rusqlite::Result<()> {
    let heads = labels.iter().find(|(l, _)| l == PERSON).map_or(0, |(_, n)| *n);
    tx.prepare_cached(
        "INSERT INTO zone_totals (zone, images, last_job_id, last_finished_at_ms, last_head_count)
         VALUES (?1, 1, ?2, ?3, ?4)
         ON CONFLICT (zone) DO UPDATE SET images = images + 1,
             last_job_id = CASE WHEN ?3 > last_finished_at_ms OR (?3 = last_finished_at_ms AND ?2 < last_job_id)
                 THEN ?2 ELSE last_job_id END,
             last_head_count = CASE WHEN ?3 > last_finished_at_ms OR (?3 = last_finished_at_ms AND ?2 < last_job_id)
                 THEN ?4 ELSE last_head_count END,
             last_finished_at_ms = MAX(last_finished_at_ms, ?3)",
    )?
    .execute(params![zone, job_id, at_ms, heads])?;
    for (label, count) in labels {
        tx.prepare_cached(
            "INSERT INTO zone_labels (zone, label, count) VALUES (?1, ?2, ?3)
             ON CONFLICT (zone, label) DO UPDATE SET count = count + ?3",
        )?
        .execute(params![zone, label, count])?;
    }
    Ok(())
}

/// Takes a done job of `zone` out of its totals (it is being deleted; its `labels` rows still
/// exist). A zone left without images disappears; one that lost its latest job gets the next.
pub(super) fn remove(tx: &Transaction<'_>, zone: &str, job_id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE zone_labels SET count = count - COALESCE(
             (SELECT count FROM labels WHERE labels.job_id = ?2 AND labels.label = zone_labels.label), 0)
         WHERE zone = ?1",
    )?
    .execute(params![zone, job_id])?;
    tx.prepare_cached("DELETE FROM zone_labels WHERE zone = ?1 AND count <= 0")?.execute([zone])?;
    tx.prepare_cached("UPDATE zone_totals SET images = images - 1 WHERE zone = ?1")?.execute([zone])?;
    let left: Option<(i64, String)> = tx
        .prepare_cached("SELECT images, last_job_id FROM zone_totals WHERE zone = ?1")?
        .query_row([zone], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match left {
        Some((images, _)) if images <= 0 => {
            tx.prepare_cached("DELETE FROM zone_totals WHERE zone = ?1")?.execute([zone])?;
        }
        Some((_, last)) if last == job_id => {
            // The latest job of a zone that still has older ones: the newest of those, other
            // than the one being deleted.
            let next: Option<(String, i64)> = tx
                .prepare_cached(
                    "SELECT job_id, finished_at_ms FROM jobs WHERE zone = ?1 AND status = 'done' AND job_id != ?2
                     ORDER BY finished_at_ms DESC, job_id LIMIT 1",
                )?
                .query_row(params![zone, job_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((next, at)) = next {
                let heads: u64 = tx
                    .prepare_cached("SELECT COALESCE(SUM(count), 0) FROM labels WHERE job_id = ?1 AND label = ?2")?
                    .query_row(params![next, PERSON], |r| r.get(0))?;
                tx.prepare_cached(
                    "UPDATE zone_totals SET last_job_id = ?2, last_finished_at_ms = ?3, last_head_count = ?4 WHERE zone = ?1",
                )?
                .execute(params![zone, next, at, heads])?;
            }
        }
        _ => {}
    }
    Ok(())
}
