//! The worker's side: an AWS SDK credentials provider that exchanges the one-time token from
//! the user-data, then renews with the refresh token 5 minutes before expiry. The refresh token
//! is kept in a file (mode 0600), so a restarted worker renews instead of needing the spent
//! one-time token. The endpoint is HTTPS (plain HTTP only to loopback); with a pin, the
//! controller's certificate is the only one accepted ([`crate::tls::pin`]).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::provider::{error::CredentialsError, future, ProvideCredentials};
use aws_credential_types::Credentials;

use super::{CredentialsRequest, VendedCredentials};
use crate::tls::Pin;

/// Renew this long before expiry: longer than a batch (≤ 1 min) plus retries.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// Why the worker cannot use the configured endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Plain HTTP to another machine.
    #[error(
        "credentials.url = {0:?} is plain HTTP off loopback: the credentials would cross the network in \
         cleartext. Use the controller's https:// URL"
    )]
    Cleartext(String),
    /// A pin with a URL that is not HTTPS.
    #[error("credentials.controller_cert_sha256 pins a certificate, but credentials.url = {0:?} is not https://")]
    PinWithoutTls(String),
    /// The HTTP client could not be built.
    #[error("cannot build the credentials client: {0}")]
    Client(#[source] reqwest::Error),
}

/// An HTTPS client for `url`: trusting only the certificate `pin` names, or the system's roots
/// without one. Plain HTTP is accepted to loopback only.
pub fn endpoint_client(url: &str, pin: Option<Pin>) -> Result<reqwest::Client, EndpointError> {
    if crate::tls::is_cleartext_off_loopback(url) {
        return Err(EndpointError::Cleartext(url.to_string()));
    }
    let builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    let builder = match pin {
        Some(_) if !url.starts_with("https://") => return Err(EndpointError::PinWithoutTls(url.to_string())),
        Some(pin) => builder.tls_backend_preconfigured(crate::tls::pin::client_config(pin)),
        None => builder,
    };
    builder.build().map_err(EndpointError::Client)
}

/// Credentials from the controller's `/v1/credentials`.
#[derive(Debug)]
pub struct VendedCredentialsProvider {
    url: String,
    instance_id: String,
    token: String,
    refresh_file: PathBuf,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<(Credentials, SystemTime)>>,
}

impl VendedCredentialsProvider {
    /// A provider for server `instance_id` with its one-time `token`, keeping its refresh
    /// token in `refresh_file`; `url` is reached as [`endpoint_client`] says.
    pub fn new(
        url: String,
        pin: Option<Pin>,
        instance_id: String,
        token: String,
        refresh_file: PathBuf,
    ) -> Result<Self, EndpointError> {
        let http = endpoint_client(&url, pin)?;
        Ok(Self { url, instance_id, token, refresh_file, http, cached: Default::default() })
    }

    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        // One exchange at a time: two concurrent first calls would spend the token twice.
        let mut cached = self.cached.lock().await;
        if let Some((credentials, expires)) = cached.as_ref() {
            if SystemTime::now() + RENEW_BEFORE < *expires {
                return Ok(credentials.clone());
            }
        }
        let refresh = std::fs::read_to_string(&self.refresh_file).ok().map(|t| t.trim().to_string());
        let request = CredentialsRequest {
            instance_id: self.instance_id.clone(),
            token: refresh.is_none().then(|| self.token.clone()),
            refresh_token: refresh,
        };
        let failed = |what: String| CredentialsError::provider_error(format!("{}: {what}", self.url));
        let response = self.http.post(&self.url).json(&request).send().await.map_err(|e| {
            failed(match crate::tls::pin::PinMismatch::find(&e) {
                Some(mismatch) => mismatch.to_string(),
                None => crate::error::error_chain(&e),
            })
        })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(failed(format!("HTTP {status}: {}", body.trim())));
        }
        let vended: VendedCredentials = response.json().await.map_err(|e| failed(e.to_string()))?;
        self.keep_refresh_token(&vended.refresh_token).map_err(|e| failed(e.to_string()))?;
        let expires = UNIX_EPOCH + Duration::from_millis(vended.expires_at_ms.max(0) as u64);
        let credentials = Credentials::new(
            vended.access_key_id,
            vended.secret_access_key,
            Some(vended.session_token),
            Some(expires),
            "skyburst-vended",
        );
        *cached = Some((credentials.clone(), expires));
        Ok(credentials)
    }

    /// Writes the refresh token (mode 0600, replaced atomically).
    fn keep_refresh_token(&self, token: &str) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = self.refresh_file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temporary = self.refresh_file.with_extension("tmp");
        let mut file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
        file.write_all(token.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &self.refresh_file)
    }
}

impl ProvideCredentials for VendedCredentialsProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.credentials())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A one-connection-at-a-time HTTP peer on 127.0.0.1 that answers each POST with the next
    /// lifetime in `lifetimes_s` and records the request bodies.
    fn vending_peer(lifetimes_s: Vec<u64>) -> (String, Arc<Mutex<Vec<CredentialsRequest>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/credentials", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for (n, lifetime) in lifetimes_s.into_iter().enumerate() {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                record.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                let expires_at_ms =
                    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64 + lifetime as i64 * 1000;
                let answer = serde_json::to_string(&VendedCredentials {
                    access_key_id: format!("ASIA{n}"),
                    secret_access_key: "secret".into(),
                    session_token: "session".into(),
                    expires_at_ms,
                    refresh_token: format!("refresh-{n}"),
                })
                .unwrap();
                let mut stream = stream;
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                )
                .unwrap();
            }
        });
        (url, seen)
    }

    /// The first call spends the one-time token; credentials are reused while more than 5
    /// minutes remain; then renewed with the refresh token, which is kept on disk (0600) and
    /// rotated, so a restarted worker renews without the spent token.
    #[tokio::test]
    async fn spends_the_token_once_then_renews_with_rotating_refresh_tokens() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials/i-1.refresh");
        // 1 h, then 2 min (inside the renewal window), then 1 h.
        let (url, seen) = vending_peer(vec![3600, 120, 3600]);
        let provider =
            VendedCredentialsProvider::new(url.clone(), None, "i-1".into(), "one-time".into(), file.clone()).unwrap();
        let first = provider.provide_credentials().await.unwrap();
        let again = provider.provide_credentials().await.unwrap();
        assert_eq!((first.access_key_id(), again.access_key_id()), ("ASIA0", "ASIA0"), "cached");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "refresh-0");
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

        // Force a renewal: drop the cache as a restarted worker would have none.
        let restarted =
            VendedCredentialsProvider::new(url, None, "i-1".into(), "one-time".into(), file.clone()).unwrap();
        let short = restarted.provide_credentials().await.unwrap();
        assert_eq!(short.access_key_id(), "ASIA1");
        let renewed = restarted.provide_credentials().await.unwrap();
        assert_eq!(renewed.access_key_id(), "ASIA2", "2 minutes left: renewed");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "refresh-2");

        let requests = seen.lock().unwrap().clone();
        let sent: Vec<(Option<&str>, Option<&str>)> =
            requests.iter().map(|r| (r.token.as_deref(), r.refresh_token.as_deref())).collect();
        assert_eq!(sent, [(Some("one-time"), None), (None, Some("refresh-0")), (None, Some("refresh-1"))]);
        assert!(requests.iter().all(|r| r.instance_id == "i-1"));
    }

    #[test]
    fn cleartext_off_loopback_and_pins_without_tls_are_refused() {
        let pin: Pin = "00".repeat(32).parse().unwrap();
        let refused = |url: &str, pin| endpoint_client(url, pin).unwrap_err().to_string();
        assert!(refused("http://10.0.0.5:9464/v1/credentials", None).contains("cleartext"));
        assert!(refused("http://10.0.0.5:9464/v1/credentials", Some(pin)).contains("cleartext"));
        assert!(refused("http://127.0.0.1:9464/v1/credentials", Some(pin)).contains("not https://"));
        endpoint_client("http://127.0.0.1:9464/v1/credentials", None).unwrap();
        endpoint_client("https://10.0.0.5:9464/v1/credentials", None).unwrap();
        endpoint_client("https://10.0.0.5:9464/v1/credentials", Some(pin)).unwrap();
    }
}
