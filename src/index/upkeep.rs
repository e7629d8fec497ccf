//! Keeping the index true and bounded without a person: jobs whose message was never sent or
//! whose answer was lost ([`ResultIndex::stale`]), and retention ([`ResultIndex::expire`]).

use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::{totals, JobStatus, Result, ResultIndex};

/// An unfinished job older than the reconciler's threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct StaleJob {
    /// The job.
    pub job_id: Uuid,
    /// Queued or running.
    pub status: JobStatus,
    /// Whether its message was ever sent: `false` means the front end stopped between
    /// indexing it and queueing it.
    pub sent: bool,
    /// Upload zone.
    pub zone: Option<String>,
    /// The client's id.
    pub client_id: Option<String>,
    /// Uploaded file name.
    pub file: Option<String>,
    /// Queued at, ms.
    pub queued_at_ms: i64,
}

impl ResultIndex {
    /// Records that `job_id`'s message is on the queue.
    pub async fn mark_sent(&self, job_id: Uuid, at_ms: i64) -> Result<()> {
        self.with_db(move |c| {
            c.prepare_cached("UPDATE jobs SET sent_at_ms = ?2 WHERE job_id = ?1")?
                .execute(params![job_id.to_string(), at_ms])
                .map(|_| ())
        })
        .await
    }

    /// Unfinished jobs queued before `before_ms`, oldest first, at most `limit`.
    pub async fn stale(&self, before_ms: i64, limit: u32) -> Result<Vec<StaleJob>> {
        self.with_db(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT job_id, status, sent_at_ms IS NOT NULL, zone, client_id, file, queued_at_ms FROM jobs
                 WHERE status IN ('queued', 'running') AND queued_at_ms < ?1 ORDER BY queued_at_ms LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![before_ms, limit], |r| {
                Ok(StaleJob {
                    job_id: Uuid::parse_str(&r.get::<_, String>(0)?).unwrap_or_default(),
                    status: JobStatus::parse(&r.get::<_, String>(1)?),
                    sent: r.get(2)?,
                    zone: r.get(3)?,
                    client_id: r.get(4)?,
                    file: r.get(5)?,
                    queued_at_ms: r.get(6)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Deletes up to `limit` finished jobs that finished before `before_ms`, oldest first; returns the deleted jobs' ids, so their objects can
    /// go too. One transaction per call: call again while it returns `limit` ids.
    pub async fn expire(&self, before_ms: i64, limit: u32) -> Result<Vec<Uuid>> {
        self.with_db(move |c| {
            let ids: Vec<String> = c
                .prepare_cached("SELECT job_id FROM jobs WHERE finished_at_ms < ?1 ORDER BY finished_at_ms LIMIT ?2")?
                .query_map(params![before_ms, limit], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            delete(c, &ids)?;
            Ok(ids.iter().filter_map(|id| Uuid::parse_str(id).ok()).collect())
        })
        .await
    }

    /// Deletes jobs (rows, labels, their part of the zone totals); returns how many existed.
    pub async fn delete_jobs(&self, job_ids: Vec<Uuid>) -> Result<usize> {
        self.with_db(move |c| delete(c, &job_ids.iter().map(Uuid::to_string).collect::<Vec<_>>())).await
    }
}

/// Deletes the jobs `ids` in one transaction; returns how many rows there were.
fn delete(c: &mut Connection, ids: &[String]) -> rusqlite::Result<usize> {
    let tx = c.transaction()?;
    let mut deleted = 0;
    for id in ids {
        let row: Option<(Option<String>, String)> = tx
            .prepare_cached("SELECT zone, status FROM jobs WHERE job_id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((zone, status)) = row else { continue };
        if let (Some(zone), JobStatus::Done) = (&zone, JobStatus::parse(&status)) {
            totals::remove(&tx, zone, id)?;
        }
        tx.prepare_cached("DELETE FROM labels WHERE job_id = ?1")?.execute([id])?;
        deleted += tx.prepare_cached("DELETE FROM jobs WHERE job_id = ?1")?.execute([id])?;
    }
    tx.commit()?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{done, finish};
    use super::super::{schema, NewJob, ZoneSummary};
    use super::*;
    use crate::job::{JobResponse, Outcome};

    /// A zone as the tests compare it: name, images, sorted labels, latest job, its time and
    /// its people.
    type Zone = (String, u64, Vec<(String, u64)>, String, i64, u64);

    /// The zones as v3 computed them, from every job's labels: what the kept totals must equal.
    fn zones_by_scan(c: &Connection) -> Vec<Zone> {
        let mut zones: Vec<Zone> = c
            .prepare("SELECT zone, COUNT(*) FROM jobs WHERE zone IS NOT NULL AND status = 'done' GROUP BY zone ORDER BY zone")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, Vec::new(), String::new(), 0, 0)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for z in &mut zones {
            z.2 = c
                .prepare("SELECT label, SUM(count) FROM labels WHERE zone = ?1 GROUP BY label ORDER BY label")
                .unwrap()
                .query_map([&z.0], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            (z.3, z.4) = c
                .query_row(
                    "SELECT job_id, finished_at_ms FROM jobs WHERE zone = ?1 AND status = 'done'
                     ORDER BY finished_at_ms DESC, job_id LIMIT 1",
                    [&z.0],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            z.5 = c
                .query_row(
                    "SELECT COALESCE(SUM(count), 0) FROM labels WHERE job_id = ?1 AND label = 'person'",
                    [&z.3],
                    |r| r.get(0),
                )
                .unwrap();
        }
        zones
    }

    fn kept(zones: &[ZoneSummary]) -> Vec<Zone> {
        zones
            .iter()
            .map(|z| {
                let mut labels: Vec<(String, u64)> =
                    z.totals.labels.iter().map(|l| (l.label.clone(), l.count)).collect();
                labels.sort();
                (
                    z.zone.clone(),
                    z.totals.images,
                    labels,
                    z.last_job_id.to_string(),
                    z.last_finished_at_ms,
                    z.last_head_count,
                )
            })
            .collect()
    }

    async fn same_as_scan(index: &ResultIndex, path: &std::path::Path) {
        let (zones, totals) = index.zones().await.unwrap();
        let scanned = zones_by_scan(&Connection::open(path).unwrap());
        assert_eq!(kept(&zones), scanned);
        assert_eq!(totals.images, scanned.iter().map(|z| z.1).sum::<u64>());
    }

    const LABELS: [&str; 4] = ["person", "car", "dog", "bus"];

    /// 300 jobs in 7 zones (and none), finishing out of order with ties, then deleted by age and
    /// one by one: after each step the kept totals equal a scan of every job.
    #[tokio::test]
    async fn zone_totals_follow_finishes_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        let index = ResultIndex::open(&path).unwrap();
        let mut ids = Vec::new();
        let mut seed = 7u64;
        for i in 0..300u64 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let zone = ["a", "b", "c", "d", "e", "f", "g"].get((seed >> 33) as usize % 8).copied();
            let labels: Vec<&str> = (0..(seed >> 40) % 5).map(|k| LABELS[((seed >> (20 + k)) % 4) as usize]).collect();
            // Times repeat and go backwards now and then: workers' clocks disagree.
            let at = 1_000 + (i as i64 / 3) * 10 - ((seed >> 50) % 3) as i64 * 10;
            ids.push(finish(&index, zone, at, &labels).await);
        }
        same_as_scan(&index, &path).await;
        let expired = index.expire(1_500, 1_000).await.unwrap();
        assert!(!expired.is_empty());
        same_as_scan(&index, &path).await;
        assert_eq!(index.delete_jobs(ids[250..270].to_vec()).await.unwrap(), 20);
        same_as_scan(&index, &path).await;
        let rest = index.expire(i64::MAX, 1_000).await.unwrap();
        assert_eq!(expired.len() + rest.len() + 20, 300);
        assert!(index.zones().await.unwrap().0.is_empty(), "no zone outlives its last job");
    }

    /// A v3 file (the schema before unattended operation) with finished jobs in zones opens as
    /// v4 with the same zone totals, and its rows count as sent.
    #[tokio::test]
    async fn an_index_from_v3_is_migrated_with_its_totals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        let c = Connection::open(&path).unwrap();
        schema::migrate_to(&c, 3).unwrap();
        for i in 0..50 {
            let id = Uuid::new_v4().to_string();
            let zone = ["north", "south", "east"][i % 3];
            c.execute(
                "INSERT INTO jobs (job_id, zone, status, queued_at_ms, finished_at_ms, finished_seq) VALUES (?1, ?2, 'done', 1, ?3, ?4)",
                params![id, zone, 100 + i as i64, i as i64 + 1],
            )
            .unwrap();
            for (label, n) in [("person", i % 4), ("car", 1 + i % 2)].into_iter().filter(|(_, n)| *n > 0) {
                c.execute(
                    "INSERT INTO labels (job_id, zone, label, count) VALUES (?1, ?2, ?3, ?4)",
                    params![id, zone, label, n],
                )
                .unwrap();
            }
        }
        c.execute("INSERT INTO jobs (job_id, status, queued_at_ms) VALUES ('67e55044-10b1-426f-9247-bb680e5fe0c8', 'queued', 5)", [])
            .unwrap();
        drop(c);
        let index = ResultIndex::open(&path).unwrap();
        same_as_scan(&index, &path).await;
        assert_eq!(index.zones().await.unwrap().0.len(), 3);
        let stale = index.stale(i64::MAX, 10).await.unwrap();
        assert_eq!(stale.len(), 1);
        assert!(stale[0].sent, "rows from before v4 were queued");
        let version: i64 =
            Connection::open(&path).unwrap().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, schema::VERSION);
    }

    #[tokio::test]
    async fn a_job_never_sent_is_stale_until_marked_sent() {
        let dir = tempfile::tempdir().unwrap();
        let index = ResultIndex::open(&dir.path().join("index.db")).unwrap();
        let job_id = Uuid::new_v4();
        let job = NewJob {
            job_id,
            client_id: None,
            zone: Some("z".into()),
            file: None,
            queued_at_ms: 1_000,
            submitter: None,
        };
        index.insert(job).await.unwrap();
        assert!(index.stale(1_000, 10).await.unwrap().is_empty(), "not older than the threshold");
        let stale = index.stale(2_000, 10).await.unwrap();
        assert_eq!((stale[0].job_id, stale[0].sent, stale[0].zone.as_deref()), (job_id, false, Some("z")));
        index.mark_sent(job_id, 1_001).await.unwrap();
        assert!(index.stale(2_000, 10).await.unwrap()[0].sent);
    }

    /// A job failed as dead-lettered takes a later worker answer (an operator redrove it); any
    /// other failed or done job keeps its first final answer.
    #[tokio::test]
    async fn only_a_dead_lettered_job_takes_a_later_answer() {
        let dir = tempfile::tempdir().unwrap();
        let index = ResultIndex::open(&dir.path().join("index.db")).unwrap();
        let failed = |job_id, reason: &str| JobResponse {
            job_id,
            outcome: Outcome::Failed { reason: reason.into() },
            instance: "frontend".into(),
            pool: "".into(),
            detector_ms: 0.0,
            at_ms: 10,
        };
        let (buried, bad) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(index.apply(failed(buried, "dead_lettered: delivered 10 times")).await.unwrap());
        assert!(index.apply(failed(bad, "cannot decode the image")).await.unwrap());
        assert!(!index.apply(failed(buried, "dead_lettered: again")).await.unwrap());
        assert!(!index.apply(done(bad, 20, &["dog"])).await.unwrap(), "a real failure is final");
        assert!(index.apply(done(buried, 20, &["dog"])).await.unwrap(), "redriven and done");
        let record = index.job(buried).await.unwrap().unwrap();
        assert_eq!((record.status, record.error), (JobStatus::Done, None));
        assert_eq!(index.finished_after(0, 10).await.unwrap().len(), 2, "one event per job, the latest");
    }

    /// Deleting every finished job (a quiet spell longer than the retention) does not give
    /// event numbers again: a client's Last-Event-ID stays behind the next event.
    #[tokio::test]
    async fn event_numbers_are_never_given_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        let index = ResultIndex::open(&path).unwrap();
        for at in [1_000, 2_000, 3_000] {
            finish(&index, Some("gate"), at, &["person"]).await;
        }
        assert_eq!(index.last_seq().await.unwrap(), 3);
        assert_eq!(index.expire(i64::MAX, 100).await.unwrap().len(), 3);
        assert_eq!(index.last_seq().await.unwrap(), 3, "deletions do not lower it");
        finish(&index, None, 4_000, &[]).await;
        let events = index.finished_after(3, 10).await.unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
        drop(index);
        assert_eq!(ResultIndex::open(&path).unwrap().last_seq().await.unwrap(), 4, "kept across a restart");
    }
}
