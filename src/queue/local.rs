//! The embedded durable queue: SQLite in WAL mode, shared by every process on the machine
//! through one database file. Same semantics as SQS: visibility timeout, receive count, and a
//! dead-letter queue after `max_receives`.
//!
//! Durability: `synchronous = NORMAL` in WAL mode keeps every commit through a crash or a kill of
//! any process; a power cut may lose the last commits, always a suffix in commit order. Sends to
//! a queue opened with [`LocalQueues::durable_queue`] (the request queue) commit with `FULL`,
//! which also makes every earlier commit durable: a job the front end acknowledged survives a
//! power cut. Everything after it (receives, answers, deletes) may be rolled back by one only
//! together with what came later, which leaves a job to be redelivered, never lost: one fsync
//! per job instead of one per commit (`scripts/bench-ab.sh` measured ≈ 8 commits a job).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::Notify;

use super::doorbell::Doorbell;
use super::{Delivery, Queue, QueueDepth, QueueError, Receipt, Result};

/// Bumped with every schema change; [`LocalQueues::open`] migrates older files.
const SCHEMA_VERSION: i64 = 1;

/// One SQLite file holding any number of named queues.
#[derive(Clone)]
pub struct LocalQueues {
    db: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// How often a waiting receive looks again without being woken (`queue.poll_interval_ms`,
    /// at most 50 ms). A look at an unchanged file is one `PRAGMA data_version` (≈ 2 µs).
    poll_interval: Duration,
    /// Commits made through this connection: `data_version` only counts other connections'.
    local_commits: Arc<AtomicU64>,
    /// Rings on every commit by any process; started by the first receive.
    doorbell: Arc<OnceLock<Option<Arc<Notify>>>>,
}

/// What a queue looked like at its last full look, to skip looking again while nothing changed.
#[derive(Debug, Default)]
struct LastLook {
    /// (`PRAGMA data_version`, local commits) when it was taken.
    version: Option<(i64, u64)>,
    /// When the earliest hidden or delayed message becomes visible, ms.
    next_visible_ms: Option<i64>,
}

impl LocalQueues {
    /// Opens (creating if needed) the queue database at `path`.
    pub fn open(path: &Path, poll_interval: Duration) -> Result<Self> {
        fn unavailable(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> QueueError {
            let message = format!("{e}; check that the data directory is writable");
            QueueError::Unavailable { queue: path.display().to_string(), cause: crate::error::explained(message, e) }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| unavailable(path, e))?;
        }
        let conn = Connection::open(path).map_err(|e| unavailable(path, e))?;
        migrate(&conn).map_err(|e| unavailable(path, e))?;
        Ok(Self {
            db: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
            poll_interval,
            local_commits: Default::default(),
            doorbell: Default::default(),
        })
    }

    /// The queue `name`; messages received `max_receives` times without being deleted move to
    /// `dead_letter` on their next receive (SQS's redrive policy).
    pub fn queue(&self, name: &str, dead_letter: Option<(&str, u32)>) -> LocalQueue {
        LocalQueue {
            queues: self.clone(),
            name: name.to_string(),
            dead_letter: dead_letter.map(|(queue, max)| (queue.to_string(), max)),
            durable_sends: false,
            last_look: Default::default(),
        }
    }

    /// As [`LocalQueues::queue`], with every send on disk before it returns (`synchronous =
    /// FULL` for that commit): the request queue, whose sends the front end acknowledges.
    pub fn durable_queue(&self, name: &str, dead_letter: Option<(&str, u32)>) -> LocalQueue {
        LocalQueue { durable_sends: true, ..self.queue(name, dead_letter) }
    }

    fn doorbell(&self) -> Option<Arc<Notify>> {
        self.doorbell.get_or_init(|| Doorbell::watch(&self.path).map(|d| d.notify())).clone()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Sets up a connection to a database file several processes share and returns its schema
/// version (`user_version`). The result index uses it too. `synchronous = NORMAL`: durable
/// against a crash of any process (see the module doc for power cuts).
pub(crate) fn shared_connection(conn: &Connection) -> rusqlite::Result<i64> {
    conn.busy_handler(Some(wait_for_lock))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// How long a connection waits for another process's write lock before it fails. Writes take
/// well under a millisecond, so this only passes if something is badly wrong.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// The busy handler: several processes write the file, so a connection waits for the lock in
/// steps of 50 µs, growing by 50 µs a try up to 2 ms, for up to [`LOCK_WAIT`]. SQLite's own
/// handler (`busy_timeout`) sleeps 1, 2, 5, 10 … ms, 10× longer than a write holds the lock:
/// strace counted 150–210 ms of those sleeps per process in 5 s at concurrency 4 (≈ 3 ms per
/// job per worker, `bench-pipeline.sh`'s setting), and 28–53 ms with this handler.
fn wait_for_lock(attempt: i32) -> bool {
    lock_wait_step(attempt).map(std::thread::sleep).is_some()
}

/// The sleep before try `attempt + 1`: 50 µs · (attempt + 1), at most 2 ms; `None` once the
/// sleeps before it add up to [`LOCK_WAIT`] (the time asleep, which the lock checks between
/// them only lengthen).
fn lock_wait_step(attempt: i32) -> Option<Duration> {
    const FIRST: Duration = Duration::from_micros(50);
    const LONGEST: Duration = Duration::from_millis(2);
    let growing = LONGEST.as_micros() / FIRST.as_micros(); // tries before the cap: 40
    let n = u128::from(attempt.unsigned_abs());
    let slept_us = if n <= growing {
        FIRST.as_micros() * n * (n + 1) / 2
    } else {
        FIRST.as_micros() * growing * (growing + 1) / 2 + (n - growing) * LONGEST.as_micros()
    };
    (slept_us < LOCK_WAIT.as_micros()).then(|| (FIRST * (attempt.unsigned_abs() + 1)).min(LONGEST))
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version = shared_connection(conn)?;
    if version < 1 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS messages (
                 id            INTEGER PRIMARY KEY AUTOINCREMENT,
                 queue         TEXT    NOT NULL,
                 body          TEXT    NOT NULL,
                 sent_at_ms    INTEGER NOT NULL,
                 visible_at_ms INTEGER NOT NULL,
                 receive_count INTEGER NOT NULL DEFAULT 0,
                 receipt       TEXT
             );
             CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (queue, visible_at_ms, id);
             CREATE UNIQUE INDEX IF NOT EXISTS messages_by_receipt ON messages (receipt);
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
    }
    Ok(())
}

// The DDL above writes `user_version = 1`: bumping the schema means a migration here.
const _: () = assert!(SCHEMA_VERSION == 1);

/// Milliseconds since the Unix epoch: the clock every process on the machine shares.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// One named queue inside a [`LocalQueues`] file.
#[derive(Clone)]
pub struct LocalQueue {
    pub(super) queues: LocalQueues,
    pub(super) name: String,
    /// Dead-letter queue and the receive count that sends a message there.
    dead_letter: Option<(String, u32)>,
    /// Whether a send waits for the disk (see the module doc).
    durable_sends: bool,
    last_look: Arc<Mutex<LastLook>>,
}

impl LocalQueue {
    /// Runs `f` on the connection off the async runtime: SQLite calls block, for up to the busy
    /// timeout when another process holds the write lock.
    pub(super) async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &LocalQueue) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut conn = this.queues.db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn, &this)
        })
        .await;
        match outcome {
            Ok(result) => result.map_err(|e| self.unavailable(e)),
            Err(join) => Err(self.unavailable(join)),
        }
    }

    fn unavailable(&self, e: impl std::error::Error + Send + Sync + 'static) -> QueueError {
        let message = format!("{e} (database {})", self.queues.path.display());
        QueueError::Unavailable { queue: self.name.clone(), cause: crate::error::explained(message, e) }
    }

    fn version(&self, conn: &Connection) -> rusqlite::Result<(i64, u64)> {
        let data_version = conn.prepare_cached("PRAGMA data_version")?.query_row([], |row| row.get(0))?;
        Ok((data_version, self.queues.local_commits.load(Ordering::Acquire)))
    }

    /// True when nothing can have changed since the last full look: no commit anywhere and no
    /// hidden message come due. Never blocks: a busy connection means "look".
    fn unchanged(&self) -> bool {
        let Ok(conn) = self.queues.db.try_lock() else { return false };
        let Ok(version) = self.version(&conn) else { return false };
        let last = self.last_look.lock().unwrap_or_else(|p| p.into_inner());
        last.version == Some(version) && last.next_visible_ms.is_none_or(|due| now_ms() < due)
    }

    pub(super) fn committed(&self) {
        self.queues.local_commits.fetch_add(1, Ordering::AcqRel);
    }

    fn try_receive(&self, conn: &mut Connection, max: usize, visibility: Duration) -> rusqlite::Result<Vec<Delivery>> {
        // Read the version before looking, so a commit racing the look forces another look.
        let version = self.version(conn)?;
        let deliveries = self.take(conn, max, visibility)?;
        let next_visible_ms: Option<i64> = conn
            .prepare_cached("SELECT MIN(visible_at_ms) FROM messages WHERE queue = ?1")?
            .query_row(params![self.name], |row| row.get(0))?;
        *self.last_look.lock().unwrap_or_else(|p| p.into_inner()) =
            LastLook { version: Some((version.0, self.queues.local_commits.load(Ordering::Acquire))), next_visible_ms };
        Ok(deliveries)
    }

    fn take(&self, conn: &mut Connection, max: usize, visibility: Duration) -> rusqlite::Result<Vec<Delivery>> {
        let now = now_ms();
        // A cheap read first: most polls of an idle queue find nothing and need no write lock.
        let ready: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM messages WHERE queue = ?1 AND visible_at_ms <= ?2)")?
            .query_row(params![self.name, now], |row| row.get(0))?;
        if !ready {
            return Ok(Vec::new());
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some((dlq, max_receives)) = &self.dead_letter {
            let moved = tx
                .prepare_cached(
                    "UPDATE messages SET queue = ?1, receive_count = 0, receipt = NULL, visible_at_ms = ?2
                 WHERE queue = ?3 AND visible_at_ms <= ?2 AND receive_count >= ?4",
                )?
                .execute(params![dlq, now, self.name, max_receives])?;
            if moved > 0 {
                tracing::warn!(queue = %self.name, dead_letter = %dlq, moved, "messages moved to the dead-letter queue");
            }
        }
        let mut deliveries = Vec::new();
        {
            let mut select = tx.prepare_cached(
                "SELECT id, body, receive_count FROM messages
                 WHERE queue = ?1 AND visible_at_ms <= ?2 ORDER BY visible_at_ms, id LIMIT ?3",
            )?;
            let mut update = tx.prepare_cached(
                "UPDATE messages SET visible_at_ms = ?1, receive_count = ?2, receipt = ?3 WHERE id = ?4",
            )?;
            let rows: Vec<(i64, String, u32)> = select
                .query_map(params![self.name, now, max as i64], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let hidden_until = now + visibility.as_millis() as i64;
            for (id, body, count) in rows {
                let receipt = uuid::Uuid::new_v4().to_string();
                update.execute(params![hidden_until, count + 1, receipt, id])?;
                deliveries.push(Delivery {
                    message_id: id.to_string(),
                    body,
                    receipt: Receipt(receipt),
                    receive_count: count + 1,
                });
            }
        }
        tx.commit()?;
        self.committed();
        Ok(deliveries)
    }
}

#[async_trait]
impl Queue for LocalQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, body: &str, delay: Duration) -> Result<String> {
        let body = body.to_string();
        self.with_db(move |conn, this| {
            let now = now_ms();
            if this.durable_sends {
                conn.pragma_update(None, "synchronous", "FULL")?;
            }
            let inserted = conn
                .prepare_cached("INSERT INTO messages (queue, body, sent_at_ms, visible_at_ms) VALUES (?1, ?2, ?3, ?4)")
                .and_then(|mut insert| insert.execute(params![this.name, body, now, now + delay.as_millis() as i64]));
            if this.durable_sends {
                conn.pragma_update(None, "synchronous", "NORMAL")?;
            }
            inserted?;
            this.committed();
            Ok(conn.last_insert_rowid().to_string())
        })
        .await
    }

    async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        let max = max.max(1);
        let doorbell = self.queues.doorbell();
        loop {
            // Registered before looking, so a commit between the look and the wait still wakes us.
            let rung = doorbell.as_ref().map(|d| d.notified());
            tokio::pin!(rung);
            if let Some(rung) = rung.as_mut().as_pin_mut() {
                rung.enable();
            }
            if !self.unchanged() {
                let batch = self.with_db(move |conn, this| this.try_receive(conn, max, visibility)).await?;
                if !batch.is_empty() {
                    return Ok(batch);
                }
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let poll = tokio::time::sleep(self.queues.poll_interval.min(left));
            match rung.as_mut().as_pin_mut() {
                Some(rung) => {
                    tokio::select! {
                        _ = rung => {}
                        _ = poll => {}
                    }
                }
                None => poll.await,
            }
        }
    }

    async fn delete(&self, receipt: &Receipt) -> Result<()> {
        let receipt = receipt.0.clone();
        self.with_db(move |conn, this| {
            conn.prepare_cached("DELETE FROM messages WHERE receipt = ?1")?.execute(params![receipt])?;
            this.committed();
            Ok(())
        })
        .await
    }

    async fn extend_visibility(&self, receipt: &Receipt, timeout: Duration) -> Result<()> {
        let receipt = receipt.0.clone();
        let changed = self
            .with_db(move |conn, this| {
                let changed = conn
                    .prepare_cached("UPDATE messages SET visible_at_ms = ?1 WHERE receipt = ?2")?
                    .execute(params![now_ms() + timeout.as_millis() as i64, receipt])?;
                this.committed();
                Ok(changed)
            })
            .await?;
        match changed {
            0 => Err(QueueError::StaleReceipt { queue: self.name.clone() }),
            _ => Ok(()),
        }
    }

    async fn expire(&self, retention: Duration, limit: u32) -> Result<u64> {
        let before = now_ms() - retention.as_millis() as i64;
        self.with_db(move |conn, this| {
            let deleted = conn
                .prepare_cached(
                    "DELETE FROM messages WHERE id IN
                     (SELECT id FROM messages WHERE queue = ?1 AND sent_at_ms < ?2 ORDER BY id LIMIT ?3)",
                )?
                .execute(params![this.name, before, limit])?;
            this.committed();
            Ok(deleted as u64)
        })
        .await
    }

    async fn depth(&self) -> Result<QueueDepth> {
        self.with_db(|conn, this| {
            conn.prepare_cached(
                "SELECT
                     COALESCE(SUM(visible_at_ms <= ?2), 0),
                     COALESCE(SUM(visible_at_ms > ?2 AND receive_count > 0), 0),
                     COALESCE(SUM(visible_at_ms > ?2 AND receive_count = 0), 0)
                 FROM messages WHERE queue = ?1",
            )?
            .query_row(params![this.name, now_ms()], |row| {
                Ok(QueueDepth { visible: row.get(0)?, in_flight: row.get(1)?, delayed: row.get(2)? })
            })
        })
        .await
    }
}

/// Whether a row exists for `receipt` (tests).
#[cfg(test)]
fn holds(conn: &Connection, receipt: &Receipt) -> bool {
    use rusqlite::OptionalExtension;
    conn.query_row("SELECT 1 FROM messages WHERE receipt = ?1", params![receipt.0], |_| Ok(()))
        .optional()
        .unwrap()
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIS: Duration = Duration::from_millis(300);
    const NOW: Duration = Duration::ZERO;

    fn queues(dir: &tempfile::TempDir) -> LocalQueues {
        LocalQueues::open(&dir.path().join("queue.db"), Duration::from_millis(10)).unwrap()
    }

    #[test]
    fn lock_waits_start_at_50_microseconds_grow_to_2_ms_and_stop_after_5_s() {
        let step = lock_wait_step;
        assert_eq!(step(0), Some(Duration::from_micros(50)));
        assert_eq!(step(3), Some(Duration::from_micros(200)));
        // 0.96 s asleep before try 501; 5.16 s before try 2 601.
        assert_eq!(step(500), Some(Duration::from_millis(2)));
        assert_eq!(step(2_600), None);
    }

    /// A writer blocked by another connection's open write transaction waits for the lock
    /// instead of failing with "database is locked", then commits. (Giving up after
    /// [`LOCK_WAIT`] is the step schedule's `None`, tested above.)
    #[test]
    fn a_blocked_writer_waits_for_the_lock_and_then_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        drop(queues(&dir));
        let holder = Connection::open(&path).unwrap();
        shared_connection(&holder).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let writer = std::thread::spawn(move || {
            let conn = Connection::open(&path).unwrap();
            shared_connection(&conn).unwrap();
            let started = Instant::now();
            conn.execute("DELETE FROM messages WHERE id = -1", []).unwrap();
            started.elapsed()
        });
        std::thread::sleep(Duration::from_millis(30));
        holder.execute_batch("COMMIT").unwrap();
        let waited = writer.join().unwrap();
        assert!(waited >= Duration::from_millis(25), "the writer did not wait for the lock ({waited:?})");
    }

    #[tokio::test]
    async fn a_received_message_is_hidden_until_its_visibility_timeout_passes() {
        let dir = tempfile::tempdir().unwrap();
        let q = queues(&dir).queue("jobs", None);
        q.send("one", NOW).await.unwrap();
        let first = q.receive(10, NOW, VIS).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].receive_count, 1);
        assert!(q.receive(10, NOW, VIS).await.unwrap().is_empty(), "hidden while in flight");
        assert_eq!(q.depth().await.unwrap(), QueueDepth { visible: 0, in_flight: 1, delayed: 0 });
        let again = q.receive(10, Duration::from_secs(2), VIS).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].message_id, first[0].message_id);
        assert_eq!(again[0].receive_count, 2);
        assert_ne!(again[0].receipt, first[0].receipt);
        assert!(matches!(q.extend_visibility(&first[0].receipt, VIS).await, Err(QueueError::StaleReceipt { .. })));
        q.delete(&again[0].receipt).await.unwrap();
        q.delete(&again[0].receipt).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
    }

    #[tokio::test]
    async fn delayed_messages_are_counted_and_appear_later() {
        let dir = tempfile::tempdir().unwrap();
        let q = queues(&dir).queue("jobs", None);
        q.send("later", Duration::from_millis(200)).await.unwrap();
        assert_eq!(q.depth().await.unwrap().delayed, 1);
        assert!(q.receive(1, NOW, VIS).await.unwrap().is_empty());
        assert_eq!(q.receive(1, Duration::from_secs(2), VIS).await.unwrap()[0].body, "later");
    }

    #[tokio::test]
    async fn extending_visibility_keeps_a_message_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let q = queues(&dir).queue("jobs", None);
        q.send("long job", NOW).await.unwrap();
        let got = q.receive(1, NOW, VIS).await.unwrap();
        q.extend_visibility(&got[0].receipt, Duration::from_secs(30)).await.unwrap();
        assert!(q.receive(1, VIS * 2, VIS).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_message_received_max_receives_times_moves_to_the_dead_letter_queue() {
        let dir = tempfile::tempdir().unwrap();
        let db = queues(&dir);
        let q = db.queue("jobs", Some(("jobs-dlq", 2)));
        let dlq = db.queue("jobs-dlq", None);
        q.send("poison", NOW).await.unwrap();
        for _ in 0..2 {
            assert_eq!(q.receive(1, Duration::from_secs(2), Duration::from_millis(50)).await.unwrap().len(), 1);
        }
        assert!(q.receive(1, Duration::from_millis(300), VIS).await.unwrap().is_empty());
        assert_eq!(dlq.depth().await.unwrap().visible, 1);
        assert_eq!(dlq.receive(1, NOW, VIS).await.unwrap()[0].body, "poison");
    }

    #[tokio::test]
    async fn messages_survive_reopening_the_file_and_are_shared_between_handles() {
        let dir = tempfile::tempdir().unwrap();
        queues(&dir).queue("jobs", None).send("kept", NOW).await.unwrap();
        let reopened = queues(&dir).queue("jobs", None);
        let other = queues(&dir).queue("other", None);
        assert!(other.receive(1, NOW, VIS).await.unwrap().is_empty(), "queues are separate");
        let got = reopened.receive(5, NOW, VIS).await.unwrap();
        assert_eq!(got.len(), 1);
        let conn = reopened.queues.db.lock().unwrap();
        assert!(holds(&conn, &got[0].receipt));
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
        assert_eq!(synchronous, 1, "NORMAL between durable sends");
    }

    #[tokio::test]
    async fn a_durable_send_leaves_the_connection_as_it_found_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = queues(&dir);
        let q = db.durable_queue("jobs", None);
        q.send("kept", NOW).await.unwrap();
        let synchronous: i64 = db.db.lock().unwrap().pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
        assert_eq!(synchronous, 1);
        assert_eq!(q.receive(1, NOW, VIS).await.unwrap()[0].body, "kept");
    }

    #[tokio::test]
    async fn messages_older_than_the_retention_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let db = queues(&dir);
        let (q, other) = (db.queue("jobs", None), db.queue("other", None));
        q.send("old", NOW).await.unwrap();
        other.send("old elsewhere", NOW).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        q.send("new", NOW).await.unwrap();
        assert_eq!(q.expire(Duration::from_millis(30), 10).await.unwrap(), 1);
        let left = q.receive(10, NOW, VIS).await.unwrap();
        assert_eq!(left.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(), ["new"]);
        assert_eq!(other.depth().await.unwrap().visible, 1, "only its own queue");
    }

    #[tokio::test]
    async fn a_waiting_receive_wakes_soon_after_a_send() {
        let dir = tempfile::tempdir().unwrap();
        let db = queues(&dir);
        let q = db.queue("jobs", None);
        let sender = db.queue("jobs", None);
        let waiter = tokio::spawn(async move { q.receive(1, Duration::from_secs(5), VIS).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        sender.send("wake", NOW).await.unwrap();
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(got[0].body, "wake");
    }
}
