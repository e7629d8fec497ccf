//! One provider per `[[pools]]` entry: worker processes on this machine (`local`), Nova servers
//! or EC2 instances.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use skyburst_providers::local::{LocalProvider, LocalSettings};
use skyburst_providers::Provider;

use super::backends::Backends;
use super::{aws, nova};
use crate::config::{Config, PoolConfig, ProviderKind};

/// The provider of `pool`. `config_file` is passed on to the worker processes a `local` pool
/// starts.
pub fn provider(
    config: &Config,
    pool: &PoolConfig,
    config_file: Option<&Path>,
    backends: &Backends,
) -> anyhow::Result<Arc<dyn Provider>> {
    match pool.provider {
        ProviderKind::Local => Ok(Arc::new(local_provider(config, pool, config_file)?)),
        ProviderKind::Nova => nova::nova_pool(config, pool),
        ProviderKind::Ec2 => aws::ec2_pool(config, pool, backends),
    }
}

/// The `local` pool: `skyburst worker` processes of this very binary, with the same config
/// file and data directory, registered in `<data_dir>/control/local-<pool>.json`.
pub fn local_provider(config: &Config, pool: &PoolConfig, config_file: Option<&Path>) -> anyhow::Result<LocalProvider> {
    let program = std::env::current_exe().context("cannot find this program's path to start workers")?;
    let data_dir = &config.embedded.data_dir;
    let mut args = Vec::new();
    if let Some(file) = config_file {
        args.extend(["--config".to_string(), file.display().to_string()]);
    }
    args.extend(["--data-dir".to_string(), data_dir.display().to_string()]);
    args.extend(["worker", "--instance-id", "{id}", "--pool", &pool.name].map(String::from));
    if pool.boot_delay_seconds > 0.0 {
        args.extend(["--boot-delay-seconds".to_string(), pool.boot_delay_seconds.to_string()]);
    }
    let settings = LocalSettings {
        pool: pool.name.clone(),
        program,
        args,
        boot_delay: Duration::from_secs_f64(pool.boot_delay_seconds),
        registry: data_dir.join("control").join(format!("local-{}.json", pool.name)),
        // A batch of 64 images at ~100 ms each finishes within it.
        stop_timeout: Duration::from_secs(15),
        memory_per_instance: pool.memory_mb << 20,
    };
    LocalProvider::new(settings).with_context(|| format!("cannot open the local pool {}", pool.name))
}
