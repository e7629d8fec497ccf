//! The AWS side of the composition root: the SDK session, SQS queues, the S3 store, EC2 pools and
//! the vendor of Nova workers' credentials. Built with the `aws` feature; `without_aws.rs` stands
//! in for it otherwise.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use skyburst_providers::aws::{AwsSession, AwsSettings};
use skyburst_providers::ec2::{Ec2Provider, Ec2Settings};
use skyburst_providers::Provider;

use super::backends::{Backends, Queues};
use crate::config::{Config, PoolConfig, ProviderKind, QueueBackend, StoreBackend};
use crate::controller::Controller;
use crate::credentials::client::VendedCredentialsProvider;
use crate::credentials::vendor::CredentialVendor;
use crate::queue::sqs::SqsQueues;
use crate::queue::Queue;
use crate::store::s3::S3Store;
use crate::store::ObjectStore;
use crate::worker::reply::OpenQueue;

/// The SDK session every AWS adapter shares.
pub type Session = AwsSession;

/// Whether any part of the config lives on AWS.
fn uses_aws(config: &Config) -> bool {
    config.queue.backend == QueueBackend::Sqs
        || config.store.backend == StoreBackend::S3
        || config.pools.iter().any(|p| p.provider == ProviderKind::Ec2)
}

/// The AWS session, when the config uses AWS; `None` otherwise.
pub async fn session(config: &Config, role: &str) -> anyhow::Result<Option<Session>> {
    session_for(config, role, None).await
}

/// As [`session`], for the worker of `instance`: vended credentials when the config carries a
/// one-time token (`credentials.token`, rendered into a Nova worker's user-data).
pub async fn session_for(config: &Config, role: &str, instance: Option<&str>) -> anyhow::Result<Option<Session>> {
    if !uses_aws(config) {
        return Ok(None);
    }
    let c = &config.credentials;
    let credentials = match (&c.token, &c.url, instance) {
        (Some(token), Some(url), Some(instance)) => {
            // Kept across restarts: the one-time token is spent after the first exchange.
            let refresh_file = config.embedded.data_dir.join("credentials").join(format!("{instance}.refresh"));
            let provider = VendedCredentialsProvider::new(
                url.clone(),
                c.controller_cert_sha256,
                instance.to_string(),
                token.clone(),
                refresh_file,
            )?;
            Some(aws_credential_types::provider::SharedCredentialsProvider::new(provider))
        }
        (Some(_), None, _) => anyhow::bail!("credentials.token is set but credentials.url is not: set both or neither"),
        _ => None,
    };
    let a = &config.aws;
    let settings = AwsSettings {
        region: a.region.clone(),
        endpoint_url: a.endpoint_url.clone(),
        operation_timeout: Duration::from_secs_f64(a.operation_timeout_seconds),
        attempt_timeout: Duration::from_secs_f64(a.attempt_timeout_seconds),
        connect_timeout: Duration::from_secs_f64(a.connect_timeout_seconds),
        max_attempts: a.max_attempts,
        call_log: a.call_log.clone(),
        role: role.to_string(),
        credentials,
    };
    Ok(Some(AwsSession::load(&settings).await?))
}

/// The session a config that uses AWS has loaded.
fn loaded<'a>(session: Option<&'a Session>, what: &str) -> anyhow::Result<&'a Session> {
    session.with_context(|| format!("{what} needs an AWS session, and none was loaded"))
}

/// The SQS queues; fails if the request queue cannot be found, naming the endpoint.
pub async fn sqs_queues(config: &Config, session: Option<&Session>) -> anyhow::Result<Queues> {
    let sqs = SqsQueues::new(loaded(session, "queue.backend = \"sqs\"")?);
    let q = &config.queue;
    let requests = sqs.queue(&q.requests);
    requests.url().await.with_context(|| format!("cannot open the request queue on SQS at {}", endpoint(config)))?;
    let dead_letters = Arc::new(sqs.queue(&format!("{}-dlq", q.requests)));
    let open: OpenQueue = Arc::new(move |name: &str| Arc::new(sqs.queue(name)) as Arc<dyn Queue>);
    Ok(Queues { requests: Arc::new(requests), dead_letters, open })
}

/// The S3 store.
pub fn s3_store(session: Option<&Session>) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Ok(Arc::new(S3Store::new(loaded(session, "store.backend = \"s3\"")?)))
}

/// A front end's response queue on SQS, created if missing.
pub async fn create_response_queue(
    config: &Config,
    session: Option<&Session>,
    name: &str,
) -> anyhow::Result<Arc<dyn Queue>> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let sqs = SqsQueues::new(loaded(session, "queue.backend = \"sqs\"")?);
    // Answers older than a day have no one waiting for them (SQS keeps 4 days by default).
    let attributes = [(A::MessageRetentionPeriod, "86400".to_string())].into_iter().collect();
    let queue = sqs
        .create(name, attributes)
        .await
        .with_context(|| format!("cannot create the response queue {name} on SQS at {}", endpoint(config)))?;
    Ok(Arc::new(queue))
}

/// The AWS endpoint in messages: the override, or the region's own.
fn endpoint(config: &Config) -> String {
    match (&config.aws.endpoint_url, &config.aws.region) {
        (Some(url), _) => url.clone(),
        (None, Some(region)) => format!("AWS region {region}"),
        (None, None) => "AWS (region from the environment)".into(),
    }
}

/// An `ec2` pool's provider.
pub fn ec2_provider(config: &Config, pool: &PoolConfig, session: &Session) -> Ec2Provider {
    let settings = Ec2Settings {
        pool: pool.name.clone(),
        deployment: config.controller.deployment.clone(),
        subnets: pool.subnets.clone(),
        security_groups: pool.security_groups.clone(),
        key_name: pool.key_name.clone(),
        instance_profile: pool.instance_profile.clone(),
        root_volume_gb: pool.root_volume_gb,
    };
    Ec2Provider::new(settings, session)
}

/// An `ec2` pool, on the session the config's EC2 pools loaded.
pub fn ec2_pool(config: &Config, pool: &PoolConfig, backends: &Backends) -> anyhow::Result<Arc<dyn Provider>> {
    let what = format!("pool {} (provider \"ec2\")", pool.name);
    Ok(Arc::new(ec2_provider(config, pool, loaded(backends.aws.as_ref(), &what)?)))
}

/// Gives the controller the vendor of Nova workers' AWS credentials, when
/// `credentials.role_arn` is set.
pub fn attach_credential_vendor(
    controller: &mut Controller,
    config: &Config,
    backends: &Backends,
) -> anyhow::Result<()> {
    let Some(role_arn) = &config.credentials.role_arn else { return Ok(()) };
    let session = backends.aws.as_ref().context(
        "credentials.role_arn is set but this config uses no AWS queue or store: vended credentials are for SQS and S3",
    )?;
    let policy = crate::credentials::policy::worker_session_policy(config).to_string();
    let vending: Vec<Arc<dyn Provider>> =
        controller.pools().iter().filter(|p| p.vends_credentials).map(|p| p.provider.clone()).collect();
    controller.vendor = Some(Arc::new(CredentialVendor::new(
        session,
        role_arn.clone(),
        Duration::from_secs(config.credentials.duration_seconds.into()),
        policy,
        (backends.store.clone(), config.store.output_bucket.clone()),
        vending,
        Duration::from_secs(config.credentials.refresh_grace_seconds.into()),
    )));
    Ok(())
}
