//! [`QueueAdmin`] for the embedded queue: the rows themselves are read, moved and deleted, so a
//! peek changes nothing and a redrive within one database file is one transaction.

use std::any::Any;

use async_trait::async_trait;
use rusqlite::params;

use super::{move_by_receiving, Peeked, QueueAdmin, RedriveMethod, Redriven, Result};
use crate::queue::local::LocalQueue;
use crate::queue::Queue;

#[async_trait]
impl QueueAdmin for LocalQueue {
    async fn peek(&self, max: usize) -> Result<Vec<Peeked>> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = self
            .with_db(move |conn, this| {
                let mut select = conn.prepare_cached(
                    "SELECT id, body, receive_count, sent_at_ms FROM messages WHERE queue = ?1 ORDER BY id LIMIT ?2",
                )?;
                let rows = select.query_map(params![this.name, max], |row| {
                    Ok(Peeked {
                        message_id: row.get::<_, i64>(0)?.to_string(),
                        body: row.get(1)?,
                        receive_count: row.get(2)?,
                        sent_at_ms: Some(row.get(3)?),
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(rows)
    }

    async fn purge(&self) -> Result<u64> {
        let removed = self
            .with_db(|conn, this| {
                let removed = conn.prepare_cached("DELETE FROM messages WHERE queue = ?1")?.execute([&this.name])?;
                this.committed();
                Ok(removed as u64)
            })
            .await?;
        Ok(removed)
    }

    async fn drop_message(&self, id: &str) -> Result<bool> {
        // Row ids are numbers: any other id names no message here.
        let Ok(id) = id.parse::<i64>() else { return Ok(false) };
        let removed = self
            .with_db(move |conn, this| {
                let removed = conn
                    .prepare_cached("DELETE FROM messages WHERE queue = ?1 AND id = ?2")?
                    .execute(params![this.name, id])?;
                this.committed();
                Ok(removed)
            })
            .await?;
        Ok(removed > 0)
    }

    async fn redrive_to(&self, target: &dyn Queue, id: Option<&str>) -> Result<Redriven> {
        let same_file = target
            .as_any()
            .downcast_ref::<LocalQueue>()
            .filter(|t| t.queues.path() == self.queues.path())
            .map(|t| t.name.clone());
        let Some(target_name) = same_file else {
            let moved = move_by_receiving(self, target, id).await?;
            return Ok(Redriven { moved, method: RedriveMethod::ReceiveSendDelete, note: None });
        };
        // Row ids are numbers: any other id names no message here.
        let id = match id.map(str::parse::<i64>) {
            Some(Err(_)) => return Ok(Redriven { moved: 0, method: RedriveMethod::MoveRows, note: None }),
            other => other.and_then(|id| id.ok()),
        };
        let moved = self.with_db(move |conn, this| move_rows(conn, this, &target_name, id)).await?;
        Ok(Redriven { moved, method: RedriveMethod::MoveRows, note: None })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Moves the rows of `from` (every one, or row `id`) to the queue `to`: visible now, receive count
/// reset, any receipt void.
fn move_rows(conn: &mut rusqlite::Connection, from: &LocalQueue, to: &str, id: Option<i64>) -> rusqlite::Result<u64> {
    let moved = conn
        .prepare_cached(
            "UPDATE messages SET queue = ?1, receive_count = 0, receipt = NULL, visible_at_ms = ?2
             WHERE queue = ?3 AND (?4 IS NULL OR id = ?4)",
        )?
        .execute(params![to, crate::job::now_ms(), from.name, id])?;
    from.committed();
    Ok(moved as u64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::queue::local::LocalQueues;
    use crate::queue::QueueDepth;

    const VIS: Duration = Duration::from_millis(50);

    /// A request queue that dead-letters after one receive, its dead-letter queue, and `n`
    /// messages moved there by a receiver that never deleted them.
    async fn dead_lettered(dir: &tempfile::TempDir, n: usize) -> (LocalQueue, LocalQueue) {
        let db = LocalQueues::open(&dir.path().join("queue.db"), Duration::from_millis(5)).unwrap();
        let requests = db.queue("jobs", Some(("jobs-dlq", 1)));
        for i in 0..n {
            requests.send(&format!("job {i}"), Duration::ZERO).await.unwrap();
        }
        assert_eq!(requests.receive(n, Duration::ZERO, VIS).await.unwrap().len(), n);
        tokio::time::sleep(VIS * 2).await;
        assert!(requests.receive(n, Duration::ZERO, VIS).await.unwrap().is_empty(), "moved on this receive");
        (requests, db.queue("jobs-dlq", None))
    }

    #[tokio::test]
    async fn a_peek_reads_rows_without_changing_them() {
        let dir = tempfile::tempdir().unwrap();
        let (_, dlq) = dead_lettered(&dir, 2).await;
        let first = dlq.peek(10).await.unwrap();
        assert_eq!(first.iter().map(|p| p.body.as_str()).collect::<Vec<_>>(), ["job 0", "job 1"]);
        assert_eq!(dlq.peek(10).await.unwrap(), first, "a second peek sees the same");
        assert_eq!(dlq.peek(1).await.unwrap().len(), 1);
        assert_eq!(dlq.depth().await.unwrap(), QueueDepth { visible: 2, in_flight: 0, delayed: 0 });
    }

    #[tokio::test]
    async fn redrive_moves_one_or_all_rows_back_with_the_count_reset() {
        let dir = tempfile::tempdir().unwrap();
        let (requests, dlq) = dead_lettered(&dir, 3).await;
        let ids: Vec<String> = dlq.peek(10).await.unwrap().into_iter().map(|p| p.message_id).collect();
        let one = dlq.redrive_to(&requests, Some(&ids[1])).await.unwrap();
        assert_eq!((one.moved, one.method), (1, RedriveMethod::MoveRows));
        assert_eq!(dlq.redrive_to(&requests, Some("no-such-id")).await.unwrap().moved, 0);
        let back = requests.receive(10, Duration::ZERO, VIS).await.unwrap();
        assert_eq!((back.len(), back[0].body.as_str(), back[0].receive_count), (1, "job 1", 1));
        assert_eq!(dlq.redrive_to(&requests, None).await.unwrap().moved, 2);
        assert_eq!(dlq.depth().await.unwrap(), QueueDepth::default());
        assert_eq!(requests.depth().await.unwrap().visible, 2);
    }

    #[tokio::test]
    async fn drop_and_purge_delete_rows_of_their_own_queue_only() {
        let dir = tempfile::tempdir().unwrap();
        let (requests, dlq) = dead_lettered(&dir, 3).await;
        requests.send("waiting", Duration::ZERO).await.unwrap();
        let id = dlq.peek(1).await.unwrap().remove(0).message_id;
        assert!(dlq.drop_message(&id).await.unwrap());
        assert!(!dlq.drop_message(&id).await.unwrap(), "gone already");
        assert!(!dlq.drop_message("x").await.unwrap());
        let other = requests.peek(1).await.unwrap().remove(0).message_id;
        assert!(!dlq.drop_message(&other).await.unwrap(), "a row of another queue is not this queue's");
        assert_eq!(dlq.purge().await.unwrap(), 2);
        assert_eq!(requests.depth().await.unwrap().visible, 1);
    }

    #[tokio::test]
    async fn a_target_in_another_file_gets_copies_by_receive_send_delete() {
        let dir = tempfile::tempdir().unwrap();
        let (_, dlq) = dead_lettered(&dir, 2).await;
        let elsewhere = tempfile::tempdir().unwrap();
        let other = LocalQueues::open(&elsewhere.path().join("queue.db"), Duration::from_millis(5)).unwrap();
        let target = other.queue("jobs", None);
        let redriven = dlq.redrive_to(&target, None).await.unwrap();
        assert_eq!((redriven.moved, redriven.method), (2, RedriveMethod::ReceiveSendDelete));
        assert_eq!(target.depth().await.unwrap().visible, 2);
        assert_eq!(dlq.depth().await.unwrap(), QueueDepth::default());
    }
}
