//! The controller's parts: every configured pool with its provider and its instances'
//! user-data, the policy and planner from `[scaling]`, and (with AWS) the credentials vendor.

use std::path::Path;

use anyhow::Context;
use std::time::Duration;

use super::backends::backends;
use super::{aws, pools};
use crate::config::{Config, ProviderKind};
use crate::controller::{Controller, ControllerSettings, Pool};

/// The controller with every configured pool's provider. `config_file` is passed on to the
/// worker processes the `local` pool starts; `served` is the certificate the controller serves
/// `/v1/credentials` with, whose SHA-256 Nova workers are given.
pub async fn controller(
    config: &Config,
    config_file: Option<&Path>,
    dry_run: bool,
    served: Option<crate::tls::Pin>,
) -> anyhow::Result<Controller> {
    let backends = backends(config, "controller").await?;
    let pinned = crate::boot::pin_controller_certificate(config, served).context(crate::boot::PIN_HELP)?;
    // Every cloud pool's user-data pins the same release: its manifest is read once.
    let release = match config.pools.iter().any(|p| p.provider != ProviderKind::Local) {
        true => Some(crate::boot::fetch_release(config, backends.store.as_ref()).await?),
        false => None,
    };
    let mut pools = Vec::new();
    for p in &config.pools {
        let user_data = match &release {
            Some(release) if p.provider != ProviderKind::Local => crate::boot::render_user_data(&pinned, p, release),
            _ => String::new(),
        };
        let vends_credentials = config.credentials.vended_to(p);
        let provider = pools::provider(config, p, config_file, &backends)?;
        pools.push(Pool { config: p.clone(), provider, user_data, vends_credentials });
    }
    let sc = &config.scaling;
    let settings = ControllerSettings {
        id: format!("controller-{}", crate::host::process_id()),
        tick: Duration::from_secs_f64(config.controller.tick_seconds),
        dry_run,
        caps: sc.caps(),
        planner: sc.planner(),
        decisions_kept: config.controller.decisions_kept,
        deployment: config.controller.deployment.clone(),
        bucket: config.store.output_bucket.clone(),
        unavailable_grace: Duration::from_secs_f64(sc.unavailable_grace_seconds),
        lease_ttl: Duration::from_secs_f64(config.controller.lease_seconds),
    };
    let mut controller = Controller::new(
        settings,
        sc.policy(config.controller.tick_seconds),
        pools,
        backends.queues.requests.clone(),
        backends.store.clone(),
    );
    aws::attach_credential_vendor(&mut controller, config, &backends)?;
    Ok(controller)
}
