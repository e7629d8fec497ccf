//! The free-space floor: below `store.min_free_mb` in the data directory uploads are refused
//! with `507` before the disk fills. Reads, deletes and the retention task go on (SQLite needs
//! room in its WAL even to delete), and uploads resume as soon as space is back.

use std::path::PathBuf;

use actix_web::http::StatusCode;

use super::error::ApiError;

/// A directory and the free space it must keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    /// The data directory.
    pub dir: PathBuf,
    /// Uploads stop below this many free bytes.
    pub min_free_bytes: u64,
}

impl Floor {
    /// Bytes free for an unprivileged writer on the directory's file system (`statvfs`, a
    /// microsecond: cheap enough for every upload).
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        let stats = nix::sys::statvfs::statvfs(&self.dir).map_err(std::io::Error::from)?;
        Ok(stats.blocks_available() as u64 * stats.fragment_size() as u64)
    }

    /// Why uploads are refused now, if they are: too little space, or the directory cannot be
    /// looked at.
    pub fn problem(&self) -> Option<String> {
        match self.free_bytes() {
            Ok(free) if free >= self.min_free_bytes => None,
            Ok(free) => Some(format!(
                "only {} MB are free in {}, below store.min_free_mb = {}: uploads are refused until space is \
                 freed (the retention task deletes jobs older than store.retention_days; `skyburst admin` purges)",
                free / (1024 * 1024),
                self.dir.display(),
                self.min_free_bytes / (1024 * 1024)
            )),
            Err(e) => Some(format!("cannot read the free space of {}: {e}", self.dir.display())),
        }
    }

    /// `Ok` while there is room for an upload, else `507 Insufficient Storage`.
    pub fn check(&self) -> Result<(), ApiError> {
        match self.problem() {
            None => Ok(()),
            Some(detail) => Err(ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", detail)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_stop_below_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let free = Floor { dir: dir.path().into(), min_free_bytes: 0 }.free_bytes().unwrap();
        assert!(free > 0);
        assert!(Floor { dir: dir.path().into(), min_free_bytes: 1 }.check().is_ok());
        let high = Floor { dir: dir.path().into(), min_free_bytes: free + (1 << 40) };
        assert_eq!(high.check().unwrap_err().status(), StatusCode::INSUFFICIENT_STORAGE);
        assert!(high.problem().unwrap().contains("store.min_free_mb"));
        let gone = Floor { dir: dir.path().join("missing"), min_free_bytes: 1 };
        assert!(gone.problem().unwrap().contains("cannot read the free space"));
    }
}
