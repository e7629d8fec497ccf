//! A build without the `aws` feature: the AWS parts of the composition root, each of which a
//! config can still name, and each of which then says which build has it.

use std::sync::Arc;

use skyburst_providers::Provider;

use super::backends::{Backends, Queues};
use crate::config::{Config, PoolConfig};
use crate::controller::Controller;
use crate::queue::Queue;
use crate::store::ObjectStore;

/// No session can exist in this build.
pub enum Session {}

/// No AWS session: nothing in this build can use one.
pub async fn session_for(_: &Config, _: &str, _: Option<&str>) -> anyhow::Result<Option<Session>> {
    Ok(None)
}

/// `queue.backend = "sqs"` in a build without AWS.
pub async fn sqs_queues(_: &Config, _: Option<&Session>) -> anyhow::Result<Queues> {
    anyhow::bail!("queue.backend = \"sqs\" needs a build with `--features aws`")
}

/// `store.backend = "s3"` in a build without AWS.
pub fn s3_store(_: Option<&Session>) -> anyhow::Result<Arc<dyn ObjectStore>> {
    anyhow::bail!("store.backend = \"s3\" needs a build with `--features aws`")
}

/// An SQS response queue in a build without AWS.
pub async fn create_response_queue(_: &Config, _: Option<&Session>, _: &str) -> anyhow::Result<Arc<dyn Queue>> {
    anyhow::bail!("queue.backend = \"sqs\" needs a build with `--features aws`")
}

/// An `ec2` pool in a build without AWS.
pub fn ec2_pool(_: &Config, pool: &PoolConfig, _: &Backends) -> anyhow::Result<Arc<dyn Provider>> {
    anyhow::bail!(
        "pool {} uses provider \"ec2\": this build has no AWS support; build with `--features aws`",
        pool.name
    )
}

/// Vended credentials are for SQS and S3, which this build cannot use: nothing to attach.
pub fn attach_credential_vendor(_: &mut Controller, _: &Config, _: &Backends) -> anyhow::Result<()> {
    Ok(())
}
