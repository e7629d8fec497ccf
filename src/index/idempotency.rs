//! Idempotency keys: a client that retries a submission after a lost answer sends the same
//! `Idempotency-Key` and gets the job the first try made, never a second one. A key names one
//! job for a day, per token (two tokens may use the same key).

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Result, ResultIndex};

/// How long a key names its job: a day, as Stripe and the IETF draft suggest.
pub const KEY_LIFETIME_MS: i64 = 24 * 3600 * 1000;

/// A key as a submission brings it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The token's id; empty without tokens.
    pub submitter: String,
    /// The client's key.
    pub key: String,
    /// SHA-256 of what was submitted (image, zone, client id), hex: the same key with another
    /// request is the client's mistake, not a retry.
    pub digest: String,
}

impl IdempotencyKey {
    /// A key for a submission of `parts` (the image bytes and each field that shapes the job).
    pub fn new(submitter: Option<&str>, key: &str, parts: &[&[u8]]) -> Self {
        let mut hash = Sha256::new();
        for part in parts {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        let digest = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Self { submitter: submitter.unwrap_or_default().to_string(), key: key.to_string(), digest }
    }
}

/// What claiming a key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key is new (or its day is over): it now names the job being submitted.
    New,
    /// A retry: the key already names this job, submitted with the same request.
    Existing(Uuid),
    /// The key names this job, submitted with a different request.
    Mismatch(Uuid),
}

impl ResultIndex {
    /// Claims `key` for `job_id`, atomically: of concurrent submissions with one key exactly one
    /// gets [`Claim::New`], the others the job it names.
    pub async fn claim_key(&self, key: IdempotencyKey, job_id: Uuid, now_ms: i64) -> Result<Claim> {
        self.with_db(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found: Option<(String, String)> = tx
                .prepare_cached(
                    "SELECT job_id, digest FROM idempotency_keys
                     WHERE submitter = ?1 AND key = ?2 AND created_at_ms > ?3",
                )?
                .query_row(params![key.submitter, key.key, now_ms - KEY_LIFETIME_MS], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let claim = match found {
                Some((job, digest)) => {
                    let job = Uuid::parse_str(&job).unwrap_or_default();
                    if digest == key.digest {
                        Claim::Existing(job)
                    } else {
                        Claim::Mismatch(job)
                    }
                }
                None => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO idempotency_keys (submitter, key, job_id, digest, created_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        key.submitter,
                        key.key,
                        job_id.to_string(),
                        key.digest,
                        now_ms
                    ])?;
                    Claim::New
                }
            };
            tx.commit()?;
            Ok(claim)
        })
        .await
    }

    /// Frees `key` if it still names `job_id`: the submission failed, so a retry must make a job.
    pub async fn release_key(&self, key: IdempotencyKey, job_id: Uuid) -> Result<()> {
        self.with_db(move |c| {
            c.prepare_cached("DELETE FROM idempotency_keys WHERE submitter = ?1 AND key = ?2 AND job_id = ?3")?
                .execute(params![key.submitter, key.key, job_id.to_string()])
                .map(|_| ())
        })
        .await
    }

    /// Deletes keys older than a day, at most `limit`; returns how many.
    pub async fn expire_keys(&self, now_ms: i64, limit: u32) -> Result<usize> {
        self.with_db(move |c| {
            c.prepare_cached(
                "DELETE FROM idempotency_keys WHERE (submitter, key) IN
                 (SELECT submitter, key FROM idempotency_keys WHERE created_at_ms <= ?1 LIMIT ?2)",
            )?
            .execute(params![now_ms - KEY_LIFETIME_MS, limit])
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_claims_of_one_key_make_one_job() {
        let dir = tempfile::tempdir().unwrap();
        let index = ResultIndex::open(&dir.path().join("index.db")).unwrap();
        let key = IdempotencyKey::new(Some("token-a"), "retry-1", &[b"image", b"zone"]);
        let claims = futures_util::future::join_all((0..8).map(|_| {
            let (index, key) = (index.clone(), key.clone());
            let job_id = Uuid::new_v4();
            async move { (job_id, index.claim_key(key, job_id, 1_000).await.unwrap()) }
        }))
        .await;
        let winners: Vec<Uuid> = claims.iter().filter(|(_, c)| *c == Claim::New).map(|(id, _)| *id).collect();
        assert_eq!(winners.len(), 1);
        assert!(claims.iter().all(|(_, c)| matches!(c, Claim::New | Claim::Existing(_))));
        assert!(claims.iter().all(|(_, c)| *c == Claim::New || *c == Claim::Existing(winners[0])));
        // Another request under the same key is a mismatch; another token's key is its own.
        let other = IdempotencyKey::new(Some("token-a"), "retry-1", &[b"another image", b"zone"]);
        assert_eq!(index.claim_key(other, Uuid::new_v4(), 1_001).await.unwrap(), Claim::Mismatch(winners[0]));
        let theirs = IdempotencyKey::new(Some("token-b"), "retry-1", &[b"image", b"zone"]);
        assert_eq!(index.claim_key(theirs, Uuid::new_v4(), 1_001).await.unwrap(), Claim::New);
        // A failed submission frees its key; a day later the key is free too.
        index.release_key(key.clone(), winners[0]).await.unwrap();
        let again = Uuid::new_v4();
        assert_eq!(index.claim_key(key.clone(), again, 1_002).await.unwrap(), Claim::New);
        let next_day = 1_002 + KEY_LIFETIME_MS;
        assert_eq!(index.claim_key(key.clone(), Uuid::new_v4(), next_day).await.unwrap(), Claim::New);
        assert_eq!(index.expire_keys(next_day + 1, 100).await.unwrap(), 1, "token-b's key");
    }
}
