//! `skyburst render-user-data --pool NAME`: prints exactly the user-data the controller launches
//! an instance of that pool with (the same function renders both).

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::RenderUserDataArgs;
use crate::config::{Config, ProviderKind};
use crate::{app, boot};

/// Reads the pinned release's manifest from the release bucket and prints the user-data.
pub fn run(config: &Config, args: &RenderUserDataArgs) -> anyhow::Result<ExitCode> {
    let pool = config
        .pools
        .iter()
        .find(|p| p.name == args.pool)
        .with_context(|| format!("no pool {:?} in [[pools]]", args.pool))?;
    anyhow::ensure!(
        pool.provider != ProviderKind::Local,
        "pool {} is a local pool: its workers are processes on this machine and get no user-data",
        pool.name
    );
    let pinned = boot::pin_controller_certificate(config, None).context(boot::PIN_HELP)?;
    let user_data = app::runtime()?.block_on(async {
        let store = app::store(config, "render-user-data").await?;
        let release = boot::fetch_release(config, store.as_ref()).await?;
        anyhow::Ok(boot::render_user_data(&pinned, pool, &release))
    })?;
    print!("{user_data}");
    Ok(ExitCode::SUCCESS)
}
