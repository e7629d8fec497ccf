//! The controller's side: checks a worker's token or refresh token against its server and the
//! store, then assumes the workers' role with STS.

use std::sync::Arc;
use std::time::Duration;

use skyburst_providers::{Instance, Provider, TAG_TOKEN_SHA256};

use super::{new_token, record_key, sha256_hex, CredentialsRecord, CredentialsRequest, VendedCredentials};
use crate::job;
use crate::store::{ObjectStore, StoreError};

/// Why credentials were not vended.
#[derive(Debug, thiserror::Error)]
pub enum VendError {
    /// The request is not good for this server (HTTP 403): a wrong, used or stale token, or a
    /// server that is not (or no longer) one of this deployment's.
    #[error("refused: {0}")]
    Refused(String),
    /// Malformed (HTTP 400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The cloud, the store or STS did not answer (HTTP 503): the worker retries.
    #[error("unavailable: {0}")]
    Unavailable(#[source] crate::error::Cause),
}

/// How long a listing of the vending pools answers for: a worker's first exchange comes a boot
/// (minutes) after its launch, so a listing this fresh always holds it.
const LISTING_TTL: Duration = Duration::from_secs(2);

/// Vends credentials for the instances of `pools`.
pub struct CredentialVendor {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    duration: Duration,
    session_policy: String,
    store: Arc<dyn ObjectStore>,
    bucket: String,
    pools: Vec<Arc<dyn Provider>>,
    /// How long a rotated refresh token stays good.
    refresh_grace: Duration,
    /// The latest listing of the pools' instances, and when it was made.
    listing: tokio::sync::Mutex<Option<(std::time::Instant, Vec<Instance>)>>,
}

impl CredentialVendor {
    /// A vendor assuming `role_arn` for `duration`, scoped by `session_policy`, for the
    /// instances of `pools`; records go to `bucket`'s `control/credentials/`.
    pub fn new(
        session: &skyburst_providers::aws::AwsSession,
        role_arn: String,
        duration: Duration,
        session_policy: String,
        (store, bucket): (Arc<dyn ObjectStore>, String),
        pools: Vec<Arc<dyn Provider>>,
        refresh_grace: Duration,
    ) -> Self {
        let mut config = aws_sdk_sts::config::Builder::from(&session.sdk);
        if let Some(log) = &session.call_log {
            config = config.interceptor(log.clone());
        }
        let sts = aws_sdk_sts::Client::from_conf(config.build());
        let listing = tokio::sync::Mutex::new(None);
        Self { sts, role_arn, duration, session_policy, store, bucket, pools, refresh_grace, listing }
    }

    /// Checks `request` and answers fresh credentials with the next refresh token. The store's
    /// record is read first; the cloud is asked (through [`Self::instance`]'s short-lived
    /// listing) only for a request the record does not already refuse.
    pub async fn vend(&self, request: &CredentialsRequest) -> Result<VendedCredentials, VendError> {
        let id = &request.instance_id;
        let well_formed = |t: &str| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit());
        let key = record_key(id);
        let current = match self.store.get(&self.bucket, &key).await {
            Ok(bytes) => Some(bytes),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(VendError::Unavailable(e.into())),
        };
        let expected = match (&request.token, &request.refresh_token) {
            (Some(token), None) if well_formed(token) => {
                if current.is_some() {
                    return Err(VendError::Refused(format!(
                        "server {id}'s one-time token was already used; renew with the refresh token"
                    )));
                }
                let instance = self.instance(id).await?;
                if instance.tags.get(TAG_TOKEN_SHA256) != Some(&sha256_hex(token)) {
                    return Err(VendError::Refused(format!("the token was not issued to server {id}")));
                }
                None
            }
            (None, Some(refresh)) if well_formed(refresh) => {
                let record: Option<CredentialsRecord> =
                    current.as_deref().and_then(|bytes| serde_json::from_slice(bytes).ok());
                match record {
                    Some(record) if self.accepts(&record, refresh) => {}
                    Some(_) => return Err(VendError::Refused(format!("not server {id}'s current refresh token"))),
                    None => return Err(VendError::Refused(format!("no credentials were issued to server {id}"))),
                }
                // Its refresh token dies with the server.
                self.instance(id).await?;
                current
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(VendError::Refused(format!("a token for server {id} that no server was given")))
            }
            _ => return Err(VendError::BadRequest("send exactly one of `token` and `refresh_token`".into())),
        };
        let mut vended = self.assume(id).await?;
        let refresh = new_token();
        let previous_sha256 = request.refresh_token.as_deref().map(sha256_hex);
        let record = CredentialsRecord { refresh_sha256: refresh.sha256, issued_at_ms: job::now_ms(), previous_sha256 };
        let bytes = serde_json::to_vec(&record).expect("the record serializes");
        match self.store.swap(&self.bucket, &key, expected, bytes).await {
            Ok(true) => {
                vended.refresh_token = refresh.token;
                Ok(vended)
            }
            // Another request with the same token won the race; these credentials are dropped.
            Ok(false) => Err(VendError::Refused(format!("server {id}'s token was used by a concurrent request"))),
            Err(e) => Err(VendError::Unavailable(e.into())),
        }
    }

    /// Whether `refresh` is the record's current refresh token, or the one it replaced within
    /// the grace period.
    fn accepts(&self, record: &CredentialsRecord, refresh: &str) -> bool {
        let hash = sha256_hex(refresh);
        let in_grace = job::now_ms() - record.issued_at_ms < self.refresh_grace.as_millis() as i64;
        record.refresh_sha256 == hash || (in_grace && record.previous_sha256.as_deref() == Some(hash.as_str()))
    }

    /// The server `id` among the pools' instances, from a listing at most [`LISTING_TTL`] old:
    /// however many requests name servers that do not exist, the clouds are listed at most once
    /// per that time, and one request at a time does it.
    async fn instance(&self, id: &str) -> Result<Instance, VendError> {
        let mut listing = self.listing.lock().await;
        let fresh = listing.as_ref().is_some_and(|(at, _)| at.elapsed() < LISTING_TTL);
        if !fresh {
            let mut all = Vec::new();
            for pool in &self.pools {
                all.extend(pool.list().await.map_err(|e| VendError::Unavailable(e.into()))?);
            }
            *listing = Some((std::time::Instant::now(), all));
        }
        let found = listing.as_ref().and_then(|(_, all)| all.iter().find(|i| i.id == id).cloned());
        found.ok_or_else(|| {
            VendError::Refused(format!("server {id} is not an instance of this deployment's vending pools"))
        })
    }

    /// STS AssumeRole for server `id`, scoped by the session policy.
    async fn assume(&self, id: &str) -> Result<VendedCredentials, VendError> {
        // Session names: 2..=64 of [\w+=,.@-]; the server id shows in CloudTrail.
        let session_name: String = format!("skyburst-{id}")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(*c))
            .take(64)
            .collect();
        let answer = self
            .sts
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(session_name)
            .duration_seconds(self.duration.as_secs() as i32)
            .policy(&self.session_policy)
            .send()
            .await
            .map_err(|e| {
                let message = format!("STS AssumeRole: {}", skyburst_providers::error_chain(&e));
                VendError::Unavailable(crate::error::explained(message, e))
            })?;
        let c = answer.credentials().ok_or_else(|| VendError::Unavailable("STS answered no credentials".into()))?;
        let expires_at_ms = c.expiration().to_millis().map_err(|e| {
            VendError::Unavailable(crate::error::explained(format!("STS answered an unusable expiry: {e}"), e))
        })?;
        Ok(VendedCredentials {
            access_key_id: c.access_key_id().to_string(),
            secret_access_key: c.secret_access_key().to_string(),
            session_token: c.session_token().to_string(),
            expires_at_ms,
            refresh_token: String::new(),
        })
    }
}
