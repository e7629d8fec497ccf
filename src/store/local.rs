//! The embedded object store: one directory per bucket under a root, one file per object.
//! Writes go to a temp file in the target's directory and are renamed into place, so a reader
//! or a crash never sees half an object. In a durable bucket (the input bucket: uploads exist
//! nowhere else) the file and then its directory are fsynced before a write returns, so an
//! acknowledged upload survives a power cut too; results and control records can be made again
//! (a job whose result a power cut took is answered from the index or run again) and skip it.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{check_key, ObjectInfo, ObjectStore, Result, StoreError};

/// Buckets as directories under `root`.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// The bucket whose writes are fsynced.
    durable: Option<String>,
}

impl LocalStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), durable: None }
    }

    /// Writes to `bucket` are on disk, file and directory entry, when `put` returns.
    pub fn durable(self, bucket: &str) -> Self {
        Self { durable: Some(bucket.to_string()), ..self }
    }

    fn path(&self, bucket: &str, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        check_key(bucket)?;
        Ok(self.root.join(bucket).join(key))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        bucket: &str,
        key: &str,
        f: impl FnOnce(PathBuf) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = self.path(bucket, key)?;
        let outcome = tokio::task::spawn_blocking(move || f(path)).await;
        let io_result = outcome.unwrap_or_else(|join| Err(std::io::Error::other(join)));
        io_result.map_err(|e| match e.kind() {
            ErrorKind::NotFound => StoreError::NotFound { bucket: bucket.into(), key: key.into() },
            _ => StoreError::Unavailable { bucket: bucket.into(), cause: e.into() },
        })
    }
}

fn write_atomically(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("object path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("object");
    let temp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let written = write_file(&temp, bytes, durable).and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    match durable {
        // The rename is durable once the directory entry is: fsync the directory.
        true => std::fs::File::open(dir)?.sync_all(),
        false => Ok(()),
    }
}

/// Writes `bytes` to a new file at `path`, waiting until they are on disk when `durable`.
fn write_file(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    match durable {
        true => file.sync_all(),
        false => Ok(()),
    }
}

/// Compare-and-swap under an exclusive lock on a sibling `.<name>.lock` file (hidden from
/// `list`), so two processes cannot both see the old value and both write.
fn swap_locked(path: &Path, expected: Option<&[u8]>, bytes: &[u8]) -> std::io::Result<bool> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("object path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("object");
    let lock = std::fs::File::create(dir.join(format!(".{name}.lock")))?;
    lock.lock()?;
    let current = match std::fs::read(path) {
        Ok(current) => Some(current),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if current.as_deref() != expected {
        return Ok(false);
    }
    write_atomically(path, bytes, false).map(|()| true)
}

fn info(key: String, meta: &std::fs::Metadata) -> std::io::Result<ObjectInfo> {
    Ok(ObjectInfo { key, size: meta.len(), modified: meta.modified()? })
}

/// Every object file under `dir`, with keys relative to `bucket_root`; temp files skipped.
fn walk(bucket_root: &Path, dir: &Path, out: &mut Vec<ObjectInfo>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            walk(bucket_root, &path, out)?;
        } else if let Ok(relative) = path.strip_prefix(bucket_root) {
            out.push(info(relative.to_string_lossy().into_owned(), &meta)?);
        }
    }
    Ok(())
}

/// The deepest directory every key with `prefix` lies under: `images/` and `images/ab` both
/// give `images`; `res` gives the bucket root. Listing walks only it.
fn prefix_dir(prefix: &str) -> &Path {
    let dir = match prefix.rfind('/') {
        Some(slash) => &prefix[..slash],
        None => "",
    };
    // A prefix that could not be a key's directory (`..`, a leading `/`) lists from the root,
    // where the key filter below still applies.
    match dir.split('/').all(|s| !s.is_empty() && !s.starts_with('.')) {
        true => Path::new(dir),
        false => Path::new(""),
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<()> {
        let durable = self.durable.as_deref() == Some(bucket);
        self.blocking(bucket, key, move |path| write_atomically(&path, &bytes, durable)).await.map_err(|e| match e {
            // A missing parent directory cannot be "not found" for a write: the store is broken.
            StoreError::NotFound { bucket, .. } => {
                StoreError::Unavailable { bucket, cause: "a directory on the object's path is missing".into() }
            }
            other => other,
        })
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        self.blocking(bucket, key, std::fs::read).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        let owned = key.to_string();
        self.blocking(bucket, key, move |path| info(owned, &std::fs::metadata(path)?)).await
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>> {
        check_key(bucket)?;
        let root = self.root.join(bucket);
        let prefix = prefix.to_string();
        let listed = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            match walk(&root, &root.join(prefix_dir(&prefix)), &mut all) {
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {}
                other => other?,
            }
            all.retain(|o| o.key.starts_with(&prefix));
            all.sort_by(|a, b| a.key.cmp(&b.key));
            Ok::<_, std::io::Error>(all)
        })
        .await
        .unwrap_or_else(|join| Err(std::io::Error::other(join)));
        listed.map_err(|e| StoreError::Unavailable { bucket: bucket.into(), cause: e.into() })
    }

    async fn swap(&self, bucket: &str, key: &str, expected: Option<Vec<u8>>, bytes: Vec<u8>) -> Result<bool> {
        self.blocking(bucket, key, move |path| swap_locked(&path, expected.as_deref(), &bytes)).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        match self.blocking(bucket, key, std::fs::remove_file).await {
            Err(StoreError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn objects_round_trip_and_list_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        store.put("in", "images/b", b"bee".to_vec()).await.unwrap();
        store.put("in", "images/a", b"ay".to_vec()).await.unwrap();
        store.put("in", "results/a.json", b"{}".to_vec()).await.unwrap();
        assert_eq!(store.get("in", "images/a").await.unwrap(), b"ay");
        assert_eq!(store.head("in", "images/b").await.unwrap().size, 3);
        let keys: Vec<_> = store.list("in", "images/").await.unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["images/a", "images/b"]);
        assert!(store.list("empty", "").await.unwrap().is_empty());
        let keys: Vec<_> = store.list("in", "res").await.unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["results/a.json"], "a prefix that ends inside a segment");
        let keys: Vec<_> = store.list("in", "images/b").await.unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["images/b"]);
        assert!(store.list("in", "images/b/c").await.unwrap().is_empty(), "a prefix under a file");
        assert!(store.list("in", "nothing/here/").await.unwrap().is_empty());
        store.delete("in", "images/a").await.unwrap();
        store.delete("in", "images/a").await.unwrap();
        assert!(matches!(store.get("in", "images/a").await, Err(StoreError::NotFound { .. })));
    }

    #[test]
    fn listing_starts_in_the_prefix_directory() {
        assert_eq!(prefix_dir("control/heartbeats/"), Path::new("control/heartbeats"));
        assert_eq!(prefix_dir("images/ab"), Path::new("images"));
        assert_eq!(prefix_dir("images"), Path::new(""));
        assert_eq!(prefix_dir("../x/"), Path::new(""));
        assert_eq!(prefix_dir("/abs/"), Path::new(""));
    }

    #[tokio::test]
    async fn swap_writes_only_over_the_expected_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        assert!(store.swap("b", "control/lease", None, b"one".to_vec()).await.unwrap());
        assert!(!store.swap("b", "control/lease", None, b"two".to_vec()).await.unwrap(), "not absent any more");
        assert!(!store.swap("b", "control/lease", Some(b"two".to_vec()), b"x".to_vec()).await.unwrap());
        assert!(store.swap("b", "control/lease", Some(b"one".to_vec()), b"three".to_vec()).await.unwrap());
        assert_eq!(store.get("b", "control/lease").await.unwrap(), b"three");
        let keys: Vec<_> = store.list("b", "").await.unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["control/lease"], "the lock file stays hidden");
        // Racing swappers from the same old value: exactly one wins.
        let wins = futures_util::future::join_all((0..8).map(|i| {
            let store = store.clone();
            async move { store.swap("b", "control/lease", Some(b"three".to_vec()), vec![i]).await.unwrap() }
        }))
        .await;
        assert_eq!(wins.iter().filter(|w| **w).count(), 1);
    }

    #[tokio::test]
    async fn a_replaced_object_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        // The fsynced path and the other one leave the same files.
        let store = LocalStore::new(dir.path()).durable("b");
        store.put("b", "k", b"old".to_vec()).await.unwrap();
        store.put("b", "k", b"new".to_vec()).await.unwrap();
        assert_eq!(store.get("b", "k").await.unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path().join("b")).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn an_unwritable_bucket_is_unavailable_not_missing() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the bucket directory should be: fails even for root, unlike chmod.
        std::fs::write(dir.path().join("b"), b"").unwrap();
        let store = LocalStore::new(dir.path());
        let err = store.put("b", "images/x", b"x".to_vec()).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(matches!(store.get("b", "images/x").await, Err(StoreError::Unavailable { .. })));
    }

    #[tokio::test]
    async fn bad_keys_are_refused() {
        let store = LocalStore::new("/nonexistent");
        assert!(matches!(store.get("b", "../x").await, Err(StoreError::InvalidKey { .. })));
    }
}
