//! Skyburst's clouds behind one [`Provider`] trait. Each adapter maps its cloud's instance
//! states to [`InstanceState`] in one tested function and its errors to [`ProviderError`],
//! the taxonomy the controller acts on (docs/controller.md).
//!
//! # Layout
//! - this file: the trait, [`LaunchSpec`], [`Instance`], [`Limits`], [`ProviderError`].
//! - [`local`]: instances are `skyburst worker` processes on this machine (the embedded default).
//! - [`ec2`] (feature `aws`): EC2 instances; [`aws`] sets up the SDK session every AWS client
//!   of the process shares.
//! - [`nova`] (feature `openstack`): OpenStack Nova servers.

#![forbid(unsafe_code)]

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "aws")]
pub mod ec2;
pub mod local;
#[cfg(feature = "openstack")]
pub mod nova;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
pub use skyburst_policies::InstanceState;
use skyburst_policies::PoolHealth;

/// Tag naming the deployment an instance belongs to; `list` returns only ours.
pub const TAG_DEPLOYMENT: &str = "skyburst:deployment";
/// Tag naming the instance's pool.
pub const TAG_POOL: &str = "skyburst:pool";
/// Tag naming the launch request, so a retried launch finds its instances.
pub const TAG_LAUNCH_ID: &str = "skyburst:launch-id";

/// Metadata holding the sha256 (hex) of an instance's one-time credentials token, by which the
/// controller binds the token to the instance.
pub const TAG_TOKEN_SHA256: &str = "skyburst:token-sha256";
/// Stands in the user-data for the instance's one-time token; replaced per instance.
pub const TOKEN_PLACEHOLDER: &str = "@@SKYBURST_INSTANCE_TOKEN@@";

/// One instance's one-time credentials token (clouds without instance roles: Nova).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceToken {
    /// The token: replaces [`TOKEN_PLACEHOLDER`] in that instance's user-data.
    pub token: String,
    /// Its sha256 (hex): set as the instance's [`TAG_TOKEN_SHA256`] metadata.
    pub sha256: String,
}

/// `Result` with [`ProviderError`].
pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// What to start. Providers never read files: the caller renders user-data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// Machine image (AMI id, Glance image); unused by `local`.
    pub image: String,
    /// Instance type or Nova flavor; unused by `local`.
    pub flavor: String,
    /// Network or subnet; unused by `local`.
    pub network: String,
    /// cloud-init user-data; unused by `local`.
    pub user_data: String,
    /// Tags set on every instance; the provider adds [`TAG_LAUNCH_ID`].
    pub tags: BTreeMap<String, String>,
    /// Unique per launch decision: a retry with the same id does not start more instances.
    pub launch_id: String,
    /// One per instance, for providers whose instances get vended credentials (Nova); empty
    /// elsewhere.
    pub instance_tokens: Vec<InstanceToken>,
}

/// One instance as its cloud reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The cloud's id.
    pub id: String,
    /// The cloud's state, mapped.
    pub state: InstanceState,
    /// When it was launched, milliseconds since the Unix epoch.
    pub launched_at_ms: u64,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// What the cloud lets this deployment run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Instances the account or project may run, if the cloud says.
    pub max_instances: Option<u32>,
    /// Instances running now in the account or project (ours and others').
    pub in_use: u32,
    /// How many more of this pool's instances the account or project can start now, by every
    /// limit the cloud reports (for Nova: instances, vCPUs and RAM for the pool's flavor);
    /// `None` where it reports none (EC2's vCPU quotas are in Service Quotas, `local` has none).
    pub room: Option<u32>,
}

/// What the cloud or the system answered: the cause a [`ProviderError`] keeps (an SDK error,
/// an I/O error, or the cloud's own words where that is all there is).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure with the words that explain it to an operator: `message` says what was being done
/// and what to do, `source` is what failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Explained {
    message: String,
    #[source]
    source: Cause,
}

/// `message` as a [`Cause`] whose source is `error`.
pub fn explained(message: impl Into<String>, error: impl Into<Cause>) -> Cause {
    Box::new(Explained { message: message.into(), source: error.into() })
}

/// The error and its sources on one line, each said once: an SDK's or an HTTP client's
/// top-level messages are often generic ("error sending request").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Why a provider call failed, in the taxonomy the controller acts on. Each variant keeps what
/// the cloud answered as its [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The cloud has no room of this kind now: re-plan onto the next pool in the same tick.
    #[error("{pool}: no capacity now ({cause}); launches go to the next pool")]
    Capacity {
        /// The pool.
        pool: String,
        /// What the cloud answered.
        #[source]
        cause: Cause,
    },
    /// The account or project quota is reached: re-plan onto the next pool in the same tick.
    #[error("{pool}: quota reached ({cause}); raise the quota or lower the pool's `quota`")]
    Quota {
        /// The pool.
        pool: String,
        /// What the cloud answered.
        #[source]
        cause: Cause,
    },
    /// The cloud cannot be reached: check its endpoint and network.
    #[error("{pool}: cloud unreachable ({cause}); check the endpoint and the network")]
    Unavailable {
        /// The pool.
        pool: String,
        /// What failed on the way.
        #[source]
        cause: Cause,
    },
    /// The cloud asks us to slow down: back off, no burst.
    #[error("{pool}: throttled by the cloud ({cause}); backing off")]
    Throttled {
        /// The pool.
        pool: String,
        /// What the cloud answered.
        #[source]
        cause: Cause,
    },
    /// Credentials were missing or refused: an operator must fix them.
    #[error("{pool}: credentials refused ({cause}); check the cloud credentials in the environment")]
    Auth {
        /// The pool.
        pool: String,
        /// What the cloud or the credential chain answered.
        #[source]
        cause: Cause,
    },
    /// A bad request or an unexpected answer: a bug or a wrong setting, not retried.
    #[error("{pool}: {cause}")]
    Invalid {
        /// The pool.
        pool: String,
        /// What was wrong.
        #[source]
        cause: Cause,
    },
}

impl ProviderError {
    /// True for `Capacity` and `Quota`: the pool is full now and the next pool should be tried.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Capacity { .. } | Self::Quota { .. })
    }

    /// What the planner makes of a pool whose cloud answered this (DESIGN.md, "Provider
    /// errors"): full and unreachable pools are burst past; throttled and refused ones stop
    /// the burst. A bad request counts as unreachable: nothing more goes there this tick.
    pub fn pool_health(&self) -> PoolHealth {
        match self {
            Self::Capacity { .. } | Self::Quota { .. } => PoolHealth::Full,
            Self::Unavailable { .. } | Self::Invalid { .. } => PoolHealth::Unavailable,
            Self::Throttled { .. } => PoolHealth::Throttled,
            Self::Auth { .. } => PoolHealth::AuthFailed,
        }
    }

    /// The variant's name in metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Capacity { .. } => "capacity",
            Self::Quota { .. } => "quota",
            Self::Unavailable { .. } => "unavailable",
            Self::Throttled { .. } => "throttled",
            Self::Auth { .. } => "auth",
            Self::Invalid { .. } => "invalid",
        }
    }

    /// True if the same call may succeed later without anyone acting.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Capacity { .. } | Self::Quota { .. } | Self::Unavailable { .. } | Self::Throttled { .. })
    }
}

/// A cloud that runs worker instances for one pool of one deployment.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Starts `count` instances (tagged with `spec.tags` and the launch id). Idempotent: a
    /// retry with the same `spec.launch_id` returns the instances already started.
    async fn launch(&self, spec: &LaunchSpec, count: u32) -> Result<Vec<Instance>>;
    /// Stops an instance; one that is already gone counts as stopped.
    async fn terminate(&self, id: &str) -> Result<()>;
    /// Every instance of this deployment and pool, stopping ones included.
    async fn list(&self) -> Result<Vec<Instance>>;
    /// The account's or project's instance limits.
    async fn limits(&self) -> Result<Limits>;
}
