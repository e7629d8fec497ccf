//! Where log lines go. Every command logs to stderr, filtered by `RUST_LOG` (default `info`);
//! stdout stays free for results. `skyburst up` instead writes its own and its parts' full log
//! to a [`LogFile`] and shows only warnings and errors on the console, so a person running it
//! sees the demo and what went wrong, not every part's start-up lines.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// A log file bounded by rotation: once it holds [`LogFile::LIMIT`] bytes it becomes
/// `<name>.1` (replacing the previous one) and a new file starts, so `up` keeps at most twice
/// the limit however long it runs. Cloning shares the file.
#[derive(Clone)]
pub struct LogFile {
    inner: Arc<Mutex<Rotating>>,
}

struct Rotating {
    path: PathBuf,
    file: File,
    /// Bytes in the current file.
    written: u64,
    limit: u64,
}

impl LogFile {
    /// 64 MiB: days of `up`'s INFO lines at the demo's pace, and a few hours under a load test.
    pub const LIMIT: u64 = 64 << 20;

    /// Opens (appending to) the log at `path`, creating its folder.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Self::with_limit(path, Self::LIMIT)
    }

    /// As [`LogFile::open`], rotating at `limit` bytes.
    pub fn with_limit(path: &Path, limit: u64) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        let rotating = Rotating { path: path.to_path_buf(), file, written, limit };
        Ok(Self { inner: Arc::new(Mutex::new(rotating)) })
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.lock().path.clone()
    }

    /// Appends whole lines (one write, so lines from several writers never interleave).
    pub fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.lock().append(bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rotating> {
        // A writer that panicked mid-line leaves at worst a torn line: keep logging.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Rotating {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.written > 0 && self.written + bytes.len() as u64 > self.limit {
            self.rotate()?;
        }
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `RUST_LOG` (default `info`), with the SDKs' noisiest targets turned down unless named.
fn env_filter() -> EnvFilter {
    // aws_config logs each credential source that found nothing as a warning; the error a
    // missing credential gives names them all. openstack_sdk logs three errors per call to an
    // unreachable Nova (one per version-discovery URL); the provider reports it once, as
    // `Unavailable`. Either comes back when RUST_LOG names it.
    let requested = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let mut directives = vec![requested.clone()];
    for (target, level) in [("aws_config", "error"), ("openstack_sdk", "off")] {
        if !requested.contains(target) {
            directives.push(format!("{target}={level}"));
        }
    }
    EnvFilter::try_new(directives.join(","))
        .unwrap_or_else(|_| EnvFilter::new("info,aws_config=error,openstack_sdk=off"))
}

/// Logs to stderr, or with `file` to that file with only warnings and errors on stderr. Colours
/// only on a terminal: a pipe (`up` reading its parts, CI) or a file gets plain text.
///
/// A line that cannot be written is dropped quietly: a part of a killed `up` still shuts down
/// gracefully with its stderr a broken pipe, and tracing's own report of the failure would
/// panic the task that logged.
pub fn init(file: Option<LogFile>) {
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal();
    let Some(file) = file else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(env_filter())
            .with_ansi(colour)
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
            .try_init();
        return;
    };
    let to_file =
        tracing_subscriber::fmt::layer().with_ansi(false).with_writer(move || file.clone()).with_filter(env_filter());
    let to_console = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .with_filter(LevelFilter::WARN);
    let _ = tracing_subscriber::registry().with(to_file).with(to_console).try_init();
}

/// Whether a line of another process's log (tracing's format, any colours stripped) is a
/// warning or an error, or not a log line at all (a panic message, say): what the console
/// still shows while the rest goes to the file.
pub fn worth_showing(line: &str) -> bool {
    let plain = strip_ansi(line);
    let mut words = plain.split_whitespace();
    match (words.next(), words.next()) {
        // `2026-12-07T16:43:02.123Z  INFO target: message`
        (Some(time), Some(level)) if time.contains('T') && time.ends_with('Z') => {
            matches!(level, "WARN" | "ERROR")
        }
        _ => !plain.trim().is_empty(),
    }
}

/// `line` without terminal colour codes (a part started by hand on a terminal may still send
/// them).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_errors_and_foreign_lines_are_shown_the_rest_is_not() {
        assert!(!worth_showing("2026-12-07T16:43:02.123456Z  INFO skyburst::worker: started"));
        assert!(!worth_showing("2026-12-07T16:43:02.123456Z DEBUG skyburst::controller: decision"));
        assert!(worth_showing("2026-12-07T16:43:02.123456Z  WARN skyburst::worker: retrying"));
        assert!(worth_showing("\u{1b}[2m2026-12-07T16:43:02.123456Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m x: y"));
        assert!(worth_showing("thread 'main' panicked at src/main.rs:1:1"));
        assert!(!worth_showing("   "));
    }

    #[test]
    fn the_file_rotates_at_its_limit_keeping_one_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs").join("up.log");
        let log = LogFile::with_limit(&path, 100).unwrap();
        for i in 0..30 {
            log.append(format!("line {i:03} of the log\n").as_bytes()).unwrap();
        }
        let current = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(dir.path().join("logs").join("up.log.1")).unwrap().len();
        assert!(current <= 100 && old <= 100, "{current} {old}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("line 029 of the log\n"), "{text}");
    }
}
