//! Graceful shutdown: SIGTERM (orchestrators, `skyburst up`) and SIGINT (Ctrl-C) both mean
//! "finish what you hold, then exit".

use tokio::sync::watch;

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

/// A flag that turns true on the first signal (call inside a runtime).
pub fn on_signal() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(false);
    let flag = tx.clone();
    tokio::spawn(async move {
        signalled().await;
        let _ = flag.send(true);
    });
    (tx, rx)
}
