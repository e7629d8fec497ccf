//! A server's certificate, swapped in place while it runs: on SIGHUP, and when the files
//! change (looked at every [`POLL`]). A renewal that leaves a bad pair (a key that is not the
//! certificate's, a half-written file) is logged and the current certificate kept, so a
//! mistake never takes the service down; new connections get the new certificate, open ones
//! keep theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use super::{read_chain, read_key, Pin, TlsError};

/// How often the files are looked at for a change.
pub const POLL: Duration = Duration::from_secs(5);

/// What identifies a version of the files: a renewal changes one of these (certbot replaces
/// the symlinks' targets; `cp` rewrites in place).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<Option<(SystemTime, u64, u64)>>);

impl Stamp {
    fn of(paths: [&Path; 2]) -> Self {
        use std::os::unix::fs::MetadataExt;
        Stamp(
            paths
                .iter()
                .map(|p| {
                    std::fs::metadata(p)
                        .ok()
                        .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), m.ino()))
                })
                .collect(),
        )
    }
}

/// The certificate a server presents, and where it comes from.
#[derive(Debug)]
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamp at the last load attempt, good or not.
    seen: Mutex<Stamp>,
}

impl Certificates {
    /// Loads the pair, or says why it cannot serve.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let seen = Stamp::of([cert, key]);
        let current = certified_key(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(current),
            seen: Mutex::new(seen),
        }))
    }

    /// A server config presenting the current certificate, whatever it becomes.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        rustls::ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.clone())
    }

    /// The fingerprint of the certificate served now.
    pub fn fingerprint(&self) -> Pin {
        super::fingerprint(&self.current().cert[0])
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Reads the files again and serves them if they are a good pair; on error the current
    /// certificate stays.
    pub fn reload(&self) -> Result<Pin, TlsError> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Stamp::of([&self.cert, &self.key]);
        let fresh = certified_key(&self.cert, &self.key)?;
        let pin = super::fingerprint(&fresh.cert[0]);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(pin)
    }

    /// True if the files changed since the last load attempt.
    fn changed(&self) -> bool {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) != Stamp::of([&self.cert, &self.key])
    }

    /// Reloads on SIGHUP and when the files change, until `shutdown` turns true. `what` names
    /// the server in the log; `when_replaced`, if any, is logged as a warning when a reload
    /// brings a different certificate (the controller's: its clients pin it).
    pub async fn watch(
        self: Arc<Self>,
        what: &'static str,
        when_replaced: Option<&'static str>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: certificates reload only when their files change");
                None
            }
        };
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                Some(()) = async { hangup.as_mut()?.recv().await } => "SIGHUP",
                _ = poll.tick() => match self.changed() {
                    true => "the files changed",
                    false => continue,
                },
            };
            let before = self.fingerprint();
            match self.reload() {
                Ok(pin) => {
                    tracing::info!(server = what, cert = %self.cert.display(), sha256 = %pin, why, "certificate reloaded");
                    if let Some(warning) = when_replaced.filter(|_| pin != before) {
                        tracing::warn!(server = what, old = %before, new = %pin, "{warning}");
                    }
                }
                Err(e) => tracing::error!(
                    server = what, why, error = %crate::error::error_chain(&e),
                    "certificate not reloaded; still serving the previous one"
                ),
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The pair as rustls serves it; the key must be the certificate's.
fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_chain(cert)?;
    let der = read_key(key)?;
    let pair = |source| TlsError::Key { cert: cert.to_path_buf(), key: key.to_path_buf(), source };
    let certified = CertifiedKey::from_der(chain, der, &super::provider()).map_err(pair)?;
    // `from_der` lets a key whose public half is unknown through; this provider always knows it.
    certified.keys_match().map_err(pair)?;
    Ok(Arc::new(certified))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path) -> Pin {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
        crate::tls::file_fingerprint(&dir.join("cert.pem")).unwrap()
    }

    #[test]
    fn a_mismatched_or_missing_key_is_refused_and_the_current_pair_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let first = write_pair(dir.path());
        let certificates = Certificates::load(&cert, &key).unwrap();
        assert_eq!(certificates.fingerprint(), first);
        let other = tempfile::tempdir().unwrap();
        write_pair(other.path());
        std::fs::copy(other.path().join("key.pem"), &key).unwrap();
        let error = certificates.reload().unwrap_err();
        assert!(matches!(error, TlsError::Key { .. }), "{error}");
        assert_eq!(certificates.fingerprint(), first, "still serving the good pair");
        std::fs::write(&key, "not a key").unwrap();
        assert!(matches!(certificates.reload().unwrap_err(), TlsError::Pem { .. }));
        std::fs::remove_file(&key).unwrap();
        assert!(matches!(certificates.reload().unwrap_err(), TlsError::Read { .. }));
        std::fs::write(&cert, "").unwrap();
        assert!(matches!(Certificates::load(&cert, &key).unwrap_err(), TlsError::NoCertificate { .. }));
    }

    /// SIGHUP reloads even when the files look unchanged to the poll (here: their new stamp is
    /// recorded as already seen).
    #[tokio::test]
    async fn sighup_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        write_pair(dir.path());
        let certificates = Certificates::load(&cert, &key).unwrap();
        let (stop, shutdown) = watch::channel(false);
        let watcher = tokio::spawn(certificates.clone().watch("test", None, shutdown));
        // Let the watcher install its handler before the signal comes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let second = write_pair(dir.path());
        *certificates.seen.lock().unwrap() = Stamp::of([&cert, &key]);
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while certificates.fingerprint() != second && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(certificates.fingerprint(), second);
        stop.send(true).unwrap();
        watcher.await.unwrap();
    }
}
