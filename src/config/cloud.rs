//! The config sections of the cloud deployments: how to reach AWS (`[aws]`), what a cloud
//! worker installs when it boots (`[boot]`), and the AWS credentials the controller vends to
//! workers without an instance role (`[credentials]`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[aws]`: how every AWS client of the process reaches AWS. Region and credentials come from
/// the SDK's default chain (environment, profile, web identity, ECS, instance metadata), never
/// from this file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// Region, e.g. `eu-west-1`. Unset (the default): `AWS_REGION`, the profile's region, or the
    /// instance's own (metadata).
    pub region: Option<String>,
    /// One endpoint for SQS, S3 and EC2: an emulator (`http://127.0.0.1:5000`) or a private
    /// endpoint. Unset (the default): AWS's own endpoints. S3 is addressed path-style when set.
    pub endpoint_url: Option<String>,
    /// Longest one AWS call may take, retries included, 0.5..=120 s. Default 10: past it the
    /// front end answers 503 with Retry-After instead of holding the request.
    pub operation_timeout_seconds: f64,
    /// Longest one attempt may take, 0.5..=60 s. Default 4 (an SQS send or an S3 put of a
    /// 10 MiB image takes well under a second in-region). Long polls get their wait on top.
    pub attempt_timeout_seconds: f64,
    /// Longest a connection may take to open, 0.1..=30 s. Default 2.
    pub connect_timeout_seconds: f64,
    /// Attempts per call with the SDK's standard backoff, 1..=10. Default 3.
    pub max_attempts: u32,
    /// Append one line per AWS call, `<role> <service>:<Operation>`, to this file: what each
    /// process needs from IAM. Unset (the default): off.
    pub call_log: Option<PathBuf>,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            operation_timeout_seconds: 10.0,
            attempt_timeout_seconds: 4.0,
            connect_timeout_seconds: 2.0,
            max_attempts: 3,
            call_log: None,
        }
    }
}

/// `[boot]`: what a cloud instance installs at boot (`skyburst render-user-data`). The release
/// (binary and model) is published by `scripts/publish-worker.sh` under
/// `releases/<version>/` with a manifest of sha256 sums; the user-data pins the version and the
/// sums, so an instance never runs a binary other than the one rendered for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootConfig {
    /// Bucket holding `releases/<version>/`. Unset (the default): `store.output_bucket`.
    pub release_bucket: Option<String>,
    /// Release the workers run. Default: this binary's version.
    pub version: String,
    /// Where the instance keeps the model files. Default `/var/lib/skyburst/models`.
    pub model_dir: PathBuf,
}

impl Default for BootConfig {
    fn default() -> Self {
        Self {
            release_bucket: None,
            version: env!("CARGO_PKG_VERSION").into(),
            model_dir: PathBuf::from("/var/lib/skyburst/models"),
        }
    }
}

/// `[credentials]`: short-lived AWS credentials for workers that have no instance role (Nova
/// servers reaching SQS and S3). The controller assumes `role_arn` with STS for each worker and
/// serves the result at `url`; a worker calls it once with the one-time token from its
/// user-data (bound to its server id), then with the refresh token each answer carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsConfig {
    /// Controller: the role assumed for workers; its permissions are further scoped to this
    /// deployment's queues and buckets by a session policy. Unset (the default): no vending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// Controller: the vended credentials' lifetime, 900..=43200 s (STS's bounds). Default
    /// 3600; workers renew them 5 minutes before they expire.
    pub duration_seconds: u32,
    /// Controller: seconds a rotated refresh token stays good, so a worker whose answer was
    /// lost on the way can ask again with the token it holds. 0..=600, default 60.
    pub refresh_grace_seconds: u32,
    /// The controller's `/v1/credentials` endpoint as workers reach it, e.g.
    /// `https://10.0.0.5:9464/v1/credentials` (served on `controller.metrics_bind` and
    /// `metrics_port`). Rendered into Nova workers' config. Plain `http://` only to loopback:
    /// credentials never cross a network in cleartext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The SHA-256 of the controller's certificate: a worker accepts that certificate and no
    /// other. Rendered into Nova workers' config from `controller.tls.cert` unless set here
    /// (set it when a proxy with another certificate fronts the controller). Unset on a
    /// worker: the URL's certificate is checked against the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_cert_sha256: Option<crate::tls::Pin>,
    /// Worker: its one-time token, rendered into its user-data per server; useless once used
    /// and on any other server. Never set by hand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl CredentialsConfig {
    /// True if `pool`'s instances get vended credentials: Nova servers (no instance role) when
    /// a role is configured. The controller then gives each a one-time token, and its workers'
    /// config names the endpoint.
    pub fn vended_to(&self, pool: &super::PoolConfig) -> bool {
        pool.provider == super::ProviderKind::Nova && self.role_arn.is_some()
    }
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        Self {
            role_arn: None,
            duration_seconds: 3600,
            refresh_grace_seconds: 60,
            url: None,
            controller_cert_sha256: None,
            token: None,
        }
    }
}
