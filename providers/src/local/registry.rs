//! The local provider's registry, its "cloud truth": the instances it started, kept in one JSON
//! file so that a restarted controller finds and adopts the processes it left running.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{ProviderError, Result};

/// One instance: a process this provider (or an earlier controller) started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Entry {
    /// `<pool>-<launch_id>-<n>`.
    pub(super) id: String,
    /// The worker's PID.
    pub(super) pid: u32,
    /// Field 22 of `/proc/<pid>/stat` at launch: tells our process from a later one with its PID.
    pub(super) start_time: u64,
    /// The launch request that started it.
    pub(super) launch_id: String,
    /// When it was started, milliseconds since the Unix epoch (wall clock: it must survive a
    /// controller restart).
    pub(super) launched_at_ms: u64,
    /// Its tags, the launch id and pool included.
    pub(super) tags: BTreeMap<String, String>,
    /// When it was sent SIGTERM, milliseconds since the Unix epoch; `None` until terminated.
    pub(super) stopping_since_ms: Option<u64>,
}

/// The whole file: entries in launch order.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Registry {
    /// Every instance not yet known to be stopped.
    pub(super) instances: Vec<Entry>,
}

/// Where the registry lives, and the pool named in its errors.
#[derive(Debug, Clone)]
pub(super) struct RegistryFile {
    /// The JSON file.
    path: PathBuf,
    /// The pool, for error messages.
    pool: String,
}

impl RegistryFile {
    /// Names the file and creates its parent directories.
    pub(super) fn open(path: PathBuf, pool: String) -> Result<Self> {
        let file = Self { path, pool };
        if let Some(dir) = file.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| file.io_error("cannot create the directory of", e))?;
        }
        Ok(file)
    }

    /// The file's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the registry; a missing file is an empty registry.
    pub(super) fn load(&self) -> Result<Registry> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Registry::default()),
            Err(e) => return Err(self.io_error("cannot read", e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| ProviderError::Invalid {
            pool: self.pool.clone(),
            cause: crate::explained(
                format!(
                    "the local registry {} is not valid ({e}); fix it, or stop the worker processes it lists and delete it",
                    self.path.display()
                ),
                e,
            ),
        })
    }

    /// Writes the registry atomically: a reader (or a crash) sees the old file or the new one,
    /// never half of one.
    pub(super) fn save(&self, registry: &Registry) -> Result<()> {
        let mut tmp = OsString::from(self.path.as_os_str());
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write = || -> io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&serde_json::to_vec_pretty(registry)?)?;
            // Durable before the rename: after a power cut the registry still names every
            // process we started, or else the new processes are not adopted and must be found
            // by hand. Writes happen only on launch, terminate and reaping, so the cost is small.
            file.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io_error("cannot write", e)
        })
    }

    fn io_error(&self, what: &str, e: io::Error) -> ProviderError {
        let message = format!(
            "{what} the local registry {} ({e}); check that the data directory exists, is writable and is not full",
            self.path.display()
        );
        ProviderError::Unavailable { pool: self.pool.clone(), cause: crate::explained(message, e) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            id: id.into(),
            pid: 4242,
            start_time: 17,
            launch_id: "l1".into(),
            launched_at_ms: 1_700_000_000_000,
            tags: BTreeMap::from([("k".into(), "v".into())]),
            stopping_since_ms: Some(1_700_000_000_500),
        }
    }

    #[test]
    fn round_trips_and_creates_parent_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = RegistryFile::open(dir.path().join("control/local-p.json"), "p".into()).expect("open");
        assert_eq!(file.load().expect("missing file"), Registry::default());
        let registry = Registry { instances: vec![entry("p-l1-0"), entry("p-l1-1")] };
        file.save(&registry).expect("save");
        assert_eq!(file.load().expect("load"), registry);
        assert!(!dir.path().join("control/local-p.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_invalid_and_says_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = RegistryFile::open(dir.path().join("local-p.json"), "p".into()).expect("open");
        fs::write(file.path(), "{ not json").expect("write");
        let err = file.load().expect_err("corrupt");
        assert!(matches!(err, ProviderError::Invalid { .. }), "{err:?}");
        assert!(err.to_string().contains("delete it"), "{err}");
    }

    #[test]
    fn an_unwritable_place_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The registry's "directory" is a plain file, so nothing can be written under it.
        fs::write(dir.path().join("blocker"), "").expect("write");
        let err = RegistryFile::open(dir.path().join("blocker/local-p.json"), "p".into()).expect_err("blocked");
        assert!(matches!(err, ProviderError::Unavailable { .. }), "{err:?}");
    }
}
