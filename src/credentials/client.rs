//! The worker's side: an AWS SDK credentials provider that exchanges the one-time token from
//! the user-data, then renews with the refresh token 5 minutes before expiry. The refresh token
//! is kept in a file (mode 0600), so a restarted worker renews instead of needing the spent
//! one-time token.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::provider::{error::CredentialsError, future, ProvideCredentials};
use aws_credential_types::Credentials;

use super::{CredentialsRequest, VendedCredentials};

/// Renew this long before expiry: longer than a batch (≤ 1 min) plus retries.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

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
    /// token in `refresh_file`.
    pub fn new(url: String, instance_id: String, token: String, refresh_file: PathBuf) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("a plain HTTP client");
        Self { url, instance_id, token, refresh_file, http, cached: Default::default() }
    }

    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
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
        let response = self.http.post(&self.url).json(&request).send().await.map_err(|e| failed(e.to_string()))?;
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
