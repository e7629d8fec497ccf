//! The object store seam: buckets of keyed blobs, as S3 has them. Images, results and control
//! records all live here; queue messages carry only their keys.
//!
//! [`purge`] removes objects in bulk for operators (`skyburst admin purge-store`).

pub mod local;
pub mod purge;
#[cfg(feature = "aws")]
pub mod s3;

use std::time::SystemTime;

use async_trait::async_trait;

/// The result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What `head` and `list` report about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key inside its bucket.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last write.
    pub modified: SystemTime,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object under that key.
    #[error("no object {key} in bucket {bucket}")]
    NotFound {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// The key would escape its bucket or is not one Skyburst writes.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The store could not be read or written; retry later.
    #[error("object store bucket {bucket} is unavailable: {cause}; check that it exists and is writable")]
    Unavailable {
        /// Bucket.
        bucket: String,
        /// What failed underneath (the file system, the SDK) or what the backend said.
        #[source]
        cause: crate::error::Cause,
    },
}

impl StoreError {
    /// Whether trying the same call again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// Buckets of objects.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Writes `bytes` under `key`, replacing any object there; readers see the old or the new
    /// object, never a part.
    async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<()>;

    /// Reads a whole object.
    async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>>;

    /// Size and time of an object without reading it.
    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo>;

    /// Objects whose key starts with `prefix`, sorted by key.
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Removes an object; removing one that is not there succeeds.
    async fn delete(&self, bucket: &str, key: &str) -> Result<()>;

    /// Writes `bytes` under `key` only if the object there is still `expected` (`None`: only
    /// if there is none); `Ok(false)` if another writer got there first. The controller's
    /// lease rests on this (S3 has it as conditional writes, If-Match / If-None-Match).
    async fn swap(&self, bucket: &str, key: &str, expected: Option<Vec<u8>>, bytes: Vec<u8>) -> Result<bool>;
}

/// Checks a key: 1..=1024 bytes of `/`-separated segments of `A-Z a-z 0-9 . _ -`, no empty,
/// `.` or `..` segment and no segment starting with `.` (the local store's temp files do).
pub fn check_key(key: &str) -> Result<()> {
    let invalid = |reason| Err(StoreError::InvalidKey { key: key.to_string(), reason });
    if key.is_empty() || key.len() > 1024 {
        return invalid("keys are 1..=1024 bytes");
    }
    for segment in key.split('/') {
        if segment.is_empty() || segment.starts_with('.') {
            return invalid("segments between '/' must be non-empty and must not start with '.'");
        }
        if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return invalid("only A-Z, a-z, 0-9, '.', '_', '-' and '/' are allowed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_their_bucket() {
        for bad in ["", "../etc/passwd", "a//b", "/abs", "a/../b", ".hidden", "a/.tmp", "sp ace", "a\\b"] {
            assert!(check_key(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["images/3f2a", "results/abc.json", "control/heartbeats/worker-1"] {
            check_key(good).unwrap();
        }
    }
}
