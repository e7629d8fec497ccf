//! Removing objects in bulk, for operators: everything under a prefix, optionally only what is
//! older than a time. The controller's records (`control/`) and worker releases (`releases/`)
//! are kept unless the prefix names them: a bucket-wide purge must not take the controller's
//! lease and heartbeats, or the release cloud workers install at boot.

use std::time::SystemTime;

use futures_util::{stream, StreamExt, TryStreamExt};

use super::{check_key, ObjectInfo, ObjectStore, Result};

/// Prefixes a purge keeps unless its own prefix starts with one of them.
pub const PROTECTED: [&str; 2] = ["control/", "releases/"];

/// Deletes in flight at once (S3 takes one object per `DeleteObject`).
const PARALLEL_DELETES: usize = 16;

/// Which objects of a bucket to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeFilter {
    /// Keys starting with this; empty: the whole bucket.
    pub prefix: String,
    /// Only objects last written before this time.
    pub older_than: Option<SystemTime>,
}

/// What a purge removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    /// The keys removed, sorted.
    pub keys: Vec<String>,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Objects that matched but were kept as [`PROTECTED`].
    pub protected: u64,
}

impl PurgeFilter {
    /// Checks the prefix: empty, or a key's characters (a trailing `/` allowed).
    pub fn check(&self) -> Result<()> {
        if self.prefix.is_empty() {
            return Ok(());
        }
        check_key(self.prefix.strip_suffix('/').unwrap_or(&self.prefix))
    }

    /// Whether `object` goes.
    fn selects(&self, object: &ObjectInfo) -> bool {
        object.key.starts_with(&self.prefix) && self.older_than.is_none_or(|cutoff| object.modified < cutoff)
    }

    /// Whether `key` lies under a protected prefix this filter does not name.
    fn protects(&self, key: &str) -> bool {
        PROTECTED.iter().any(|p| key.starts_with(p) && !self.prefix.starts_with(p))
    }
}

/// Removes the objects of `bucket` that `filter` selects, but not [`PROTECTED`] ones.
pub async fn purge(store: &dyn ObjectStore, bucket: &str, filter: &PurgeFilter) -> Result<Purged> {
    filter.check()?;
    let (doomed, kept): (Vec<ObjectInfo>, Vec<ObjectInfo>) = store
        .list(bucket, &filter.prefix)
        .await?
        .into_iter()
        .filter(|o| filter.selects(o))
        .partition(|o| !filter.protects(&o.key));
    // Collected first: a lazy `map` would make the future not `Send` for a spawned task (the
    // upkeep's sweep), as its closure's borrow is then higher-ranked.
    let deletes: Vec<_> = doomed.iter().map(|o| store.delete(bucket, &o.key)).collect();
    stream::iter(deletes).buffer_unordered(PARALLEL_DELETES).try_collect::<Vec<()>>().await?;
    Ok(Purged {
        bytes: doomed.iter().map(|o| o.size).sum(),
        keys: doomed.into_iter().map(|o| o.key).collect(),
        protected: kept.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::local::LocalStore;

    async fn keys(store: &LocalStore) -> Vec<String> {
        store.list("b", "").await.unwrap().into_iter().map(|o| o.key).collect()
    }

    #[tokio::test]
    async fn a_purge_takes_its_prefix_but_not_control_records_unless_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        for key in ["results/a.json", "results/b.json", "images/c", "control/lease", "releases/v1/skyburst"] {
            store.put("b", key, b"xy".to_vec()).await.unwrap();
        }
        let filter = |prefix: &str| PurgeFilter { prefix: prefix.into(), older_than: None };
        let results = purge(&store, "b", &filter("results/")).await.unwrap();
        assert_eq!((results.keys.len(), results.bytes, results.protected), (2, 4, 0));
        let all = purge(&store, "b", &filter("")).await.unwrap();
        assert_eq!((all.keys, all.protected), (vec!["images/c".to_string()], 2));
        assert_eq!(keys(&store).await, ["control/lease", "releases/v1/skyburst"]);
        assert_eq!(purge(&store, "b", &filter("control/")).await.unwrap().keys, ["control/lease"]);
        assert!(purge(&store, "b", &filter("../x")).await.is_err());
        assert!(purge(&store, "b", &filter("/")).await.is_err());
    }

    #[tokio::test]
    async fn an_age_limit_keeps_newer_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        store.put("b", "images/old", b"x".to_vec()).await.unwrap();
        store.put("b", "images/new", b"x".to_vec()).await.unwrap();
        let old = SystemTime::now() - Duration::from_secs(10 * 86_400);
        std::fs::File::options().write(true).open(dir.path().join("b/images/old")).unwrap().set_modified(old).unwrap();
        let cutoff = SystemTime::now() - Duration::from_secs(7 * 86_400);
        let filter = PurgeFilter { prefix: String::new(), older_than: Some(cutoff) };
        assert_eq!(purge(&store, "b", &filter).await.unwrap().keys, ["images/old"]);
        assert_eq!(keys(&store).await, ["images/new"]);
    }
}
