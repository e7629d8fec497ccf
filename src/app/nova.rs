//! Nova pools: the OpenStack side of the composition root. Built with the `openstack` feature;
//! `without_nova.rs` stands in for it otherwise.

use std::sync::Arc;

use skyburst_providers::nova::{cloud_config, NovaProvider, NovaSettings};
use skyburst_providers::Provider;

use crate::config::{Config, PoolConfig};

/// A `nova` pool's provider, on the cloud `OS_CLOUD` (clouds.yaml) or the `OS_*` variables name.
pub fn nova_provider(config: &Config, pool: &PoolConfig) -> anyhow::Result<NovaProvider> {
    let cloud = cloud_config().map_err(anyhow::Error::msg)?;
    let settings = NovaSettings {
        pool: pool.name.clone(),
        deployment: config.controller.deployment.clone(),
        flavor: pool.flavor.clone(),
        network: pool.network.clone(),
        security_groups: pool.security_groups.clone(),
        key_name: pool.key_name.clone(),
    };
    Ok(NovaProvider::new(settings, cloud))
}

/// A `nova` pool, as the controller holds it.
pub fn nova_pool(config: &Config, pool: &PoolConfig) -> anyhow::Result<Arc<dyn Provider>> {
    Ok(Arc::new(nova_provider(config, pool)?))
}
