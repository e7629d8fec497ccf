//! One AWS SDK session for every AWS client of a process (SQS, S3, EC2): region and credentials
//! only from the SDK's default chain, an optional endpoint override (an emulator, a VPC
//! endpoint), the timeouts that turn a frozen endpoint into an error instead of a hung request,
//! and an optional log of every call made (to check IAM policies against).

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::imds::{self, region::ImdsRegionProvider};
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_ec2::config::{ConfigBag, Intercept, ProvideCredentials, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

use crate::error_chain;

/// The instance metadata service is probed for a region and credentials only when nothing else
/// gave them; off EC2 it does not answer, so one attempt of 1 s (the SDK's default is 4 attempts,
/// up to 30 s) keeps a missing-credentials error quick.
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest the whole credential chain may take at start-up (profile, web identity, ECS, IMDS).
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach AWS; from the `[aws]` config section.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// Region; `None`: the SDK's chain (`AWS_REGION`, the profile, instance metadata).
    pub region: Option<String>,
    /// One endpoint for every service (an emulator or a private endpoint); `None`: AWS's own.
    pub endpoint_url: Option<String>,
    /// Longest one call may take, retries included.
    pub operation_timeout: Duration,
    /// Longest one attempt may take.
    pub attempt_timeout: Duration,
    /// Longest a TCP + TLS connect may take.
    pub connect_timeout: Duration,
    /// Attempts per call, with the SDK's standard backoff.
    pub max_attempts: u32,
    /// Append `<role> <service>:<Operation>` for every call to this file.
    pub call_log: Option<PathBuf>,
    /// Names this process in the call log (`serve`, `worker`, `controller`, ...).
    pub role: String,
    /// Credentials from this provider instead of the default chain (a Nova worker's vended
    /// credentials); `None`: the default chain.
    pub credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
}

/// Why the AWS session could not be set up. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AwsSetupError {
    /// No region anywhere.
    #[error("no AWS region: set aws.region in the config, or AWS_REGION, or a region in the AWS profile")]
    NoRegion,
    /// The default chain found no credentials.
    #[error(
        "no AWS credentials: tried the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), the shared \
         files (~/.aws/credentials, ~/.aws/config, AWS_PROFILE), a web identity token (AWS_WEB_IDENTITY_TOKEN_FILE), \
         the ECS container endpoint and EC2 instance metadata (1 s probe); the chain said: {0}"
    )]
    NoCredentials(String),
    /// The call log cannot be opened.
    #[error("cannot open aws.call_log {path}: {source}")]
    CallLog {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A loaded session: the SDK config plus the interceptor every client must carry.
#[derive(Clone, Debug)]
pub struct AwsSession {
    /// Region, credentials, endpoint, timeouts, retries.
    pub sdk: SdkConfig,
    /// `Some` when `call_log` is set.
    pub call_log: Option<CallLog>,
}

impl AwsSession {
    /// Loads region and credentials from the default chain and checks that credentials resolve,
    /// so a missing or broken source is reported at start-up, not on the first request.
    pub async fn load(settings: &AwsSettings) -> Result<Self, AwsSetupError> {
        let imds =
            imds::Client::builder().max_attempts(1).connect_timeout(IMDS_TIMEOUT).read_timeout(IMDS_TIMEOUT).build();
        let region = match &settings.region {
            Some(region) => Some(Region::new(region.clone())),
            // The default chain's order, with the short IMDS probe.
            None => {
                RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
                    .or_else(ProfileFileRegionProvider::new())
                    .or_else(ImdsRegionProvider::builder().imds_client(imds.clone()).build())
                    .region()
                    .await
            }
        };
        let region = region.ok_or(AwsSetupError::NoRegion)?;
        let credentials = match &settings.credentials {
            Some(given) => given.clone(),
            None => SharedCredentialsProvider::new(
                DefaultCredentialsChain::builder().region(region.clone()).imds_client(imds).build().await,
            ),
        };
        match tokio::time::timeout(CREDENTIALS_TIMEOUT, credentials.provide_credentials()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(AwsSetupError::NoCredentials(error_chain(&e))),
            Err(_) => return Err(AwsSetupError::NoCredentials(format!("no answer within {CREDENTIALS_TIMEOUT:?}"))),
        }
        let timeouts = TimeoutConfig::builder()
            .operation_timeout(settings.operation_timeout)
            .operation_attempt_timeout(settings.attempt_timeout)
            .connect_timeout(settings.connect_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .credentials_provider(credentials)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts));
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let call_log = match &settings.call_log {
            Some(path) => Some(CallLog::open(path.clone(), &settings.role)?),
            None => None,
        };
        Ok(Self { sdk: loader.load().await, call_log })
    }

    /// True when an endpoint override is set (emulators need path-style S3 addressing).
    pub fn has_endpoint_override(&self) -> bool {
        self.sdk.endpoint_url().is_some()
    }

    /// An EC2 client on this session.
    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        let mut config = aws_sdk_ec2::config::Builder::from(&self.sdk);
        if let Some(log) = &self.call_log {
            config = config.interceptor(log.clone());
        }
        aws_sdk_ec2::Client::from_conf(config.build())
    }
}

/// Appends one line per AWS call, `<role> <service>:<Operation>`. The IAM policy test reads it to
/// compare what each role calls with what its policy grants.
#[derive(Clone, Debug)]
pub struct CallLog {
    role: String,
    file: Arc<Mutex<std::fs::File>>,
}

impl CallLog {
    fn open(path: PathBuf, role: &str) -> Result<Self, AwsSetupError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| AwsSetupError::CallLog { path, source })?;
        Ok(Self { role: role.to_string(), file: Arc::new(Mutex::new(file)) })
    }
}

impl Intercept for CallLog {
    fn name(&self) -> &'static str {
        "SkyburstCallLog"
    }

    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(call) = cfg.load::<Metadata>() {
            let line = format!("{} {}:{}\n", self.role, call.service(), call.name());
            // One write per line on an O_APPEND file: lines from several processes do not mix.
            let mut file = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let _ = file.write_all(line.as_bytes());
        }
        Ok(())
    }
}
