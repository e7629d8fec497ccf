//! A build without the `openstack` feature: a `nova` pool says which build has it.

use std::sync::Arc;

use skyburst_providers::Provider;

use crate::config::{Config, PoolConfig};

/// A `nova` pool in a build without OpenStack.
pub fn nova_pool(_: &Config, pool: &PoolConfig) -> anyhow::Result<Arc<dyn Provider>> {
    anyhow::bail!(
        "pool {} uses provider \"nova\": this build has no OpenStack support; build with `--features openstack`",
        pool.name
    )
}
