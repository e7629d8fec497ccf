//! The index's schema and its forward-only migrations: `user_version` counts the steps
//! applied, and opening a file runs the ones it lacks, each in its own transaction.

use rusqlite::Connection;

/// The steps, oldest first; step `n` (1-based) takes a file from version `n - 1` to `n`.
const MIGRATIONS: &[&str] = &[
    // v1: a row per job, and its objects per label.
    "CREATE TABLE IF NOT EXISTS jobs (
         job_id TEXT PRIMARY KEY, client_id TEXT, zone TEXT, file TEXT,
         status TEXT NOT NULL, queued_at_ms INTEGER NOT NULL,
         started_at_ms INTEGER, finished_at_ms INTEGER,
         worker_instance TEXT, worker_pool TEXT, model TEXT, detector_ms REAL,
         error TEXT, result TEXT
     );
     CREATE INDEX IF NOT EXISTS jobs_by_finish ON jobs (zone, finished_at_ms);
     CREATE TABLE IF NOT EXISTS labels (
         job_id TEXT NOT NULL, zone TEXT, label TEXT NOT NULL, count INTEGER NOT NULL,
         PRIMARY KEY (job_id, label)
     );",
    // v2: `finished_seq` numbers jobs in the order this index saw them finish: the event id
    // of `/api/events`, which a reconnecting client sends back as `Last-Event-ID`. (Worker
    // clocks may disagree by milliseconds, so `finished_at_ms` cannot serve as a cursor.)
    "ALTER TABLE jobs ADD COLUMN finished_seq INTEGER;
     UPDATE jobs SET finished_seq = (
         SELECT COUNT(*) FROM jobs AS earlier WHERE earlier.status IN ('done', 'failed')
         AND (earlier.finished_at_ms, earlier.job_id) <= (jobs.finished_at_ms, jobs.job_id)
     ) WHERE status IN ('done', 'failed');
     CREATE UNIQUE INDEX jobs_by_seq ON jobs (finished_seq);",
    // v3: which token submitted each job, so a `submit`-scoped token reads only its own.
    "ALTER TABLE jobs ADD COLUMN submitter TEXT;",
    // v4: unattended operation.
    // - `sent_at_ms`: when the job's message was queued; a row without one is a job whose
    //   front end died between the index and the queue (the reconciler re-queues it). Rows
    //   from before v4 were queued.
    // - per-zone totals kept as jobs finish and are deleted, so `/api/zones` reads one row per
    //   zone and its labels instead of every job's labels;
    // - indexes for `/api/stats` (done jobs by finish time), retention (jobs by finish time),
    //   the reconciler (unfinished jobs by age);
    // - idempotency keys: one job per (token, key) for a day.
    "ALTER TABLE jobs ADD COLUMN sent_at_ms INTEGER;
     UPDATE jobs SET sent_at_ms = queued_at_ms;
     CREATE TABLE zone_totals (
         zone TEXT PRIMARY KEY, images INTEGER NOT NULL,
         last_job_id TEXT NOT NULL, last_finished_at_ms INTEGER NOT NULL, last_head_count INTEGER NOT NULL
     );
     CREATE TABLE zone_labels (
         zone TEXT NOT NULL, label TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (zone, label)
     ) WITHOUT ROWID;
     INSERT INTO zone_totals (zone, images, last_job_id, last_finished_at_ms, last_head_count)
         SELECT zone, COUNT(*), '', 0, 0 FROM jobs WHERE zone IS NOT NULL AND status = 'done' GROUP BY zone;
     UPDATE zone_totals SET (last_job_id, last_finished_at_ms) = (
         SELECT job_id, finished_at_ms FROM jobs WHERE jobs.zone = zone_totals.zone AND status = 'done'
         ORDER BY finished_at_ms DESC, job_id LIMIT 1
     );
     UPDATE zone_totals SET last_head_count = (
         SELECT COALESCE(SUM(count), 0) FROM labels WHERE labels.job_id = zone_totals.last_job_id AND label = 'person'
     );
     INSERT INTO zone_labels (zone, label, count)
         SELECT l.zone, l.label, SUM(l.count) FROM labels l JOIN jobs j ON j.job_id = l.job_id
         WHERE l.zone IS NOT NULL AND j.status = 'done' GROUP BY l.zone, l.label;
     CREATE INDEX jobs_done_by_finish ON jobs (finished_at_ms) WHERE status = 'done';
     CREATE INDEX jobs_by_finished_at ON jobs (finished_at_ms) WHERE finished_at_ms IS NOT NULL;
     CREATE INDEX jobs_unfinished ON jobs (queued_at_ms) WHERE status IN ('queued', 'running');
     CREATE TABLE idempotency_keys (
         submitter TEXT NOT NULL, key TEXT NOT NULL, job_id TEXT NOT NULL, digest TEXT NOT NULL,
         created_at_ms INTEGER NOT NULL, PRIMARY KEY (submitter, key)
     ) WITHOUT ROWID;
     CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at_ms);",
    // v5: event numbers from a counter that deletions do not lower (they were MAX + 1, so
    // deleting the newest finished job, or all of them after a quiet spell longer than the
    // retention, gave its number again).
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
     INSERT INTO counters (name, value) VALUES ('finished_seq', (SELECT COALESCE(MAX(finished_seq), 0) FROM jobs));",
];

/// The version a file has once [`migrate`] ran.
pub(super) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Sets the connection up and brings the file to [`VERSION`].
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    migrate_to(conn, VERSION)
}

/// Brings the file to `target` (tests build older files with it). Each step checks the
/// version again under the write lock, so processes opening the file at once apply it once.
pub(super) fn migrate_to(conn: &Connection, target: i64) -> rusqlite::Result<()> {
    let version = crate::queue::local::shared_connection(conn)?;
    for (step, sql) in MIGRATIONS.iter().enumerate().take(target as usize).skip(version.max(0) as usize) {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let now: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let applied = match now > step as i64 {
            true => Ok(()),
            false => conn.execute_batch(&format!("{sql} PRAGMA user_version = {};", step + 1)),
        };
        match applied {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
    Ok(())
}
