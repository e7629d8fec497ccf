//! Graceful shutdown: SIGTERM (orchestrators, `skyburst up`) and SIGINT (Ctrl-C) both mean
//! "finish what you hold, then exit".
//!
//! So does the end of `skyburst up`'s [`Lifeline`]: `up` keeps the write end of a pipe and its
//! parts (and the workers the controller starts, which inherit it from the controller) hold
//! the read end, named by [`LIFELINE_VAR`]. When every copy of the write end is closed, which
//! the kernel does however `up` ends, SIGKILL included, a read returns end-of-file and each
//! part shuts down as on SIGTERM, so none outlives `up` holding its port.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;

use tokio::sync::watch;

/// The environment variable that hands a part of `skyburst up` the lifeline's read end: the
/// number of the inherited file descriptor. Not a config key.
pub const LIFELINE_VAR: &str = "SKYBURST_UP_LIFELINE_FD";

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signalled() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler cannot fail");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler cannot fail");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// A flag that turns true on the first signal (call inside a runtime), or when the lifeline
/// this process inherited through [`LIFELINE_VAR`] ends.
pub fn on_signal() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(false);
    let flag = tx.clone();
    tokio::spawn(async move {
        signalled().await;
        let _ = flag.send(true);
    });
    if let Some(value) = std::env::var_os(LIFELINE_VAR) {
        match open_inherited(&value.to_string_lossy()) {
            Ok(pipe) => watch_lifeline(pipe, tx.clone()),
            Err(e) => tracing::warn!(var = LIFELINE_VAR, error = %e, "not watching the lifeline of skyburst up"),
        }
    }
    (tx, rx)
}

/// The pipe whose write end `skyburst up` holds for as long as it runs.
pub struct Lifeline {
    /// Close-on-exec: no child holds a copy, so the pipe ends with this process.
    _write: OwnedFd,
    /// Inherited by every child (not close-on-exec); its number goes in [`LIFELINE_VAR`].
    read: OwnedFd,
}

impl Lifeline {
    /// Creates the pipe.
    pub fn new() -> Result<Self, LifelineError> {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(LifelineError::Create)?;
        fcntl(&read, FcntlArg::F_SETFD(FdFlag::empty())).map_err(LifelineError::Create)?;
        Ok(Self { _write: write, read })
    }

    /// `(LIFELINE_VAR, fd)`: what a child's environment needs to watch the lifeline.
    pub fn env(&self) -> (&'static str, String) {
        (LIFELINE_VAR, self.read.as_raw_fd().to_string())
    }
}

/// Why the lifeline could not be made or watched.
#[derive(Debug, thiserror::Error)]
pub enum LifelineError {
    /// `pipe2` or `fcntl` failed.
    #[error("cannot create the lifeline pipe")]
    Create(#[source] nix::Error),
    /// The variable is not a file descriptor number.
    #[error("{0:?} is not a file descriptor number")]
    NotANumber(String),
    /// The descriptor is not open here.
    #[error("cannot open the inherited descriptor {0}")]
    Open(i32, #[source] std::io::Error),
    /// The descriptor is something other than a pipe.
    #[error("descriptor {0} is not a pipe")]
    NotAPipe(i32),
}

/// Opens the inherited read end `fd` anew through `/proc/self/fd` (turning a bare number into
/// a file would need `unsafe`); the inherited descriptor stays open for this process's own
/// children.
fn open_inherited(fd: &str) -> Result<File, LifelineError> {
    let number: i32 = fd.trim().parse().map_err(|_| LifelineError::NotANumber(fd.to_string()))?;
    let file = File::open(format!("/proc/self/fd/{number}")).map_err(|e| LifelineError::Open(number, e))?;
    let is_pipe = file.metadata().map_err(|e| LifelineError::Open(number, e))?.file_type().is_fifo();
    if is_pipe {
        Ok(file)
    } else {
        Err(LifelineError::NotAPipe(number))
    }
}

/// Turns `flag` true once `pipe` reads end-of-file. A blocking read on a thread of its own:
/// nothing is ever written, so it wakes only then.
fn watch_lifeline(pipe: File, flag: watch::Sender<bool>) {
    let spawned = std::thread::Builder::new().name("lifeline".into()).spawn(move || {
        if let Err(e) = read_to_end_of_file(pipe) {
            tracing::warn!(error = %e, "cannot read the lifeline of skyburst up; not watching it");
            return;
        }
        let _ = flag.send(true);
        tracing::warn!("skyburst up is gone; shutting down");
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the thread that watches the lifeline of skyburst up");
    }
}

fn read_to_end_of_file(mut pipe: File) -> std::io::Result<()> {
    let mut buffer = [0u8; 64];
    loop {
        match pipe.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_read_end_is_inherited_and_the_write_end_is_not() {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        let lifeline = Lifeline::new().unwrap();
        let flags = |fd: &OwnedFd| FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
        assert!(!flags(&lifeline.read).contains(FdFlag::FD_CLOEXEC));
        assert!(flags(&lifeline._write).contains(FdFlag::FD_CLOEXEC));
        assert_eq!(lifeline.env().1, lifeline.read.as_raw_fd().to_string());
    }

    #[test]
    fn the_watch_fires_when_the_write_end_closes_and_not_before() {
        let lifeline = Lifeline::new().unwrap();
        let pipe = open_inherited(&lifeline.env().1).unwrap();
        let (flag, mut seen) = watch::channel(false);
        watch_lifeline(pipe, flag);
        std::thread::sleep(Duration::from_millis(100));
        assert!(!*seen.borrow_and_update(), "the write end is still open");
        drop(lifeline);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !*seen.borrow() {
            assert!(std::time::Instant::now() < deadline, "no end-of-file within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_bad_variable_is_refused_with_the_reason() {
        assert!(matches!(open_inherited("x"), Err(LifelineError::NotANumber(_))));
        assert!(matches!(open_inherited("999999"), Err(LifelineError::Open(999999, _))));
        let file = tempfile::tempfile().unwrap();
        let fd = file.as_raw_fd().to_string();
        assert!(matches!(open_inherited(&fd), Err(LifelineError::NotAPipe(_))));
    }
}
