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

/// Vends credentials for the instances of `pools`.
pub struct CredentialVendor {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    duration: Duration,
    session_policy: String,
    store: Arc<dyn ObjectStore>,
    bucket: String,
    pools: Vec<Arc<dyn Provider>>,
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
    ) -> Self {
        let mut config = aws_sdk_sts::config::Builder::from(&session.sdk);
        if let Some(log) = &session.call_log {
            config = config.interceptor(log.clone());
        }
        let sts = aws_sdk_sts::Client::from_conf(config.build());
        Self { sts, role_arn, duration, session_policy, store, bucket, pools }
    }

    /// Checks `request` and answers fresh credentials with the next refresh token.
    pub async fn vend(&self, request: &CredentialsRequest) -> Result<VendedCredentials, VendError> {
        let id = &request.instance_id;
        let instance = self.instance(id).await?;
        let key = record_key(id);
        let current = match self.store.get(&self.bucket, &key).await {
            Ok(bytes) => Some(bytes),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(VendError::Unavailable(e.into())),
        };
        let expected = match (&request.token, &request.refresh_token) {
            (Some(token), None) => {
                if instance.tags.get(TAG_TOKEN_SHA256) != Some(&sha256_hex(token)) {
                    return Err(VendError::Refused(format!("the token was not issued to server {id}")));
                }
                if current.is_some() {
                    return Err(VendError::Refused(format!(
                        "server {id}'s one-time token was already used; renew with the refresh token"
                    )));
                }
                None
            }
            (None, Some(refresh)) => {
                let record: Option<CredentialsRecord> =
                    current.as_deref().and_then(|bytes| serde_json::from_slice(bytes).ok());
                match record {
                    Some(record) if record.refresh_sha256 == sha256_hex(refresh) => current,
                    Some(_) => return Err(VendError::Refused(format!("not server {id}'s current refresh token"))),
                    None => return Err(VendError::Refused(format!("no credentials were issued to server {id}"))),
                }
            }
            _ => return Err(VendError::BadRequest("send exactly one of `token` and `refresh_token`".into())),
        };
        let mut vended = self.assume(id).await?;
        let refresh = new_token();
        let record = CredentialsRecord { refresh_sha256: refresh.sha256, issued_at_ms: job::now_ms() };
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

    /// The server `id` among the pools' instances.
    async fn instance(&self, id: &str) -> Result<Instance, VendError> {
        for pool in &self.pools {
            let listed = pool.list().await.map_err(|e| VendError::Unavailable(e.into()))?;
            if let Some(instance) = listed.into_iter().find(|i| i.id == id) {
                return Ok(instance);
            }
        }
        Err(VendError::Refused(format!("server {id} is not an instance of this deployment's vending pools")))
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
                let message = format!("STS AssumeRole: {}", skyburst_providers::aws::error_chain(&e));
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
