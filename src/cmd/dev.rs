//! `skyburst dev fleet-agent`: plays the hypervisor for clouds that run no machines (moto's EC2,
//! Nova's fake virt driver). For each running instance of this deployment it reads the instance's real
//! user-data back from the cloud, takes the worker config cloud-init would write, and starts a
//! local `skyburst worker` named after the instance once the pool's `boot_seconds` have passed;
//! when the instance is terminated it stops the worker. A worker that exits is started again,
//! as systemd's `Restart=on-failure` would. Never part of a production path.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::DevCommand;
use crate::config::Config;

/// Runs a `dev` subcommand.
pub fn run(config: &Config, command: &DevCommand, config_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let _ = config_file;
    #[cfg(feature = "dev-tools")]
    {
        let DevCommand::FleetAgent(args) = command;
        crate::app::runtime()?.block_on(agent::run(config, args))?;
        Ok(ExitCode::SUCCESS)
    }
    #[cfg(not(feature = "dev-tools"))]
    {
        let _ = (config, command);
        anyhow::bail!("`skyburst dev` needs a build with `--features dev-tools`")
    }
}

#[cfg(feature = "dev-tools")]
mod agent {
    use std::collections::{HashMap, HashSet};
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use skyburst_providers::ec2::Ec2Provider;
    use skyburst_providers::nova::NovaProvider;
    use skyburst_providers::{Instance, InstanceState, Provider};
    use tokio::process::{Child, Command};

    use crate::cli::FleetAgentArgs;
    use crate::config::{Config, PoolConfig, ProviderKind};
    use crate::{app, boot, shutdown};

    /// How long a stopped worker may take to finish its batch before it is killed.
    const STOP_TIMEOUT: Duration = Duration::from_secs(15);

    /// Config keys the agent passes on to its workers from its own environment; any other
    /// `SKYBURST_*` would override the user-data's config, which a real instance never sees.
    const PASSED_ON: [&str; 1] = ["SKYBURST_AWS__CALL_LOG"];

    /// A pool's cloud, with the one call the agent needs beyond [`Provider`]: the user-data an
    /// instance was started with.
    enum Cloud {
        Ec2(Box<Ec2Provider>),
        Nova(Box<NovaProvider>),
    }

    impl Cloud {
        async fn list(&self) -> skyburst_providers::Result<Vec<Instance>> {
            match self {
                Cloud::Ec2(ec2) => ec2.list().await,
                Cloud::Nova(nova) => nova.list().await,
            }
        }

        async fn user_data(&self, id: &str) -> skyburst_providers::Result<String> {
            match self {
                Cloud::Ec2(ec2) => ec2.user_data(id).await,
                Cloud::Nova(nova) => nova.user_data(id).await,
            }
        }
    }

    struct Agent {
        pools: Vec<(PoolConfig, Cloud)>,
        work_dir: PathBuf,
        program: PathBuf,
        model_dir: PathBuf,
        /// When each instance was first seen running: its worker starts `boot_seconds` later.
        first_seen: HashMap<String, Instant>,
        workers: HashMap<String, Child>,
    }

    pub(super) async fn run(config: &Config, args: &FleetAgentArgs) -> anyhow::Result<()> {
        let session = app::aws::session(config, "fleet-agent").await?;
        let mut pools = Vec::new();
        for pool in &config.pools {
            let cloud = match (&pool.provider, &session) {
                (ProviderKind::Ec2, Some(session)) => {
                    Cloud::Ec2(Box::new(app::aws::ec2_provider(config, pool, session)))
                }
                (ProviderKind::Nova, _) => Cloud::Nova(Box::new(app::nova::nova_provider(config, pool)?)),
                _ => continue,
            };
            pools.push((pool.clone(), cloud));
        }
        anyhow::ensure!(!pools.is_empty(), "this config has no ec2 or nova pool: nothing to play the hypervisor for");
        std::fs::create_dir_all(&args.work_dir)
            .with_context(|| format!("cannot create {}", args.work_dir.display()))?;
        let mut agent = Agent {
            pools,
            work_dir: std::fs::canonicalize(&args.work_dir)?,
            program: std::env::current_exe().context("cannot find this program's path")?,
            model_dir: config.detector.model_dir.clone(),
            first_seen: HashMap::new(),
            workers: HashMap::new(),
        };
        let (_signal, mut stop) = shutdown::on_signal();
        println!("skyburst dev fleet-agent: watching {} pool(s)", agent.pools.len());
        let interval = Duration::from_secs_f64(args.interval_seconds.clamp(0.05, 60.0));
        while !*stop.borrow() {
            agent.tick().await;
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
        agent.stop_all().await;
        Ok(())
    }

    impl Agent {
        async fn tick(&mut self) {
            let mut alive = HashSet::new();
            let mut due = Vec::new();
            for (index, (pool, provider)) in self.pools.iter().enumerate() {
                let instances = match provider.list().await {
                    Ok(instances) => instances,
                    Err(e) => {
                        // The cloud did not answer: stop no worker on its say-so this look.
                        tracing::warn!(pool = %pool.name, error = %e, "cannot list instances");
                        alive.extend(self.workers.keys().cloned());
                        continue;
                    }
                };
                for instance in instances {
                    if !matches!(instance.state, InstanceState::Running | InstanceState::Pending) {
                        continue;
                    }
                    let seen = *self.first_seen.entry(instance.id.clone()).or_insert_with(Instant::now);
                    if !self.workers.contains_key(&instance.id)
                        && seen.elapsed() >= Duration::from_secs_f64(pool.boot_seconds)
                    {
                        due.push((index, instance.id.clone()));
                    }
                    alive.insert(instance.id);
                }
            }
            for (index, id) in due {
                if let Err(e) = self.start(index, &id).await {
                    tracing::warn!(instance = %id, error = %format!("{e:#}"), "cannot start the instance's worker");
                }
            }
            self.first_seen.retain(|id, _| alive.contains(id));
            let gone: Vec<String> = self.workers.keys().filter(|id| !alive.contains(*id)).cloned().collect();
            for id in gone {
                if let Some(child) = self.workers.remove(&id) {
                    println!("skyburst dev fleet-agent: instance {id} is gone; stopping its worker");
                    tokio::spawn(stop(child));
                }
            }
            self.workers.retain(|id, child| match child.try_wait() {
                Ok(None) => true,
                status => {
                    // Started again on the next look, as systemd's Restart=on-failure would.
                    tracing::warn!(instance = %id, ?status, "worker exited; restarting it");
                    false
                }
            });
        }

        /// Starts the worker instance `id` of pool `index` runs, from its user-data.
        async fn start(&mut self, index: usize, id: &str) -> anyhow::Result<()> {
            let (pool, provider) = &self.pools[index];
            let user_data = provider.user_data(id).await?;
            let worker_config = boot::worker_config_from_user_data(&user_data)?;
            let config_file = self.work_dir.join(format!("{id}.toml"));
            std::fs::write(&config_file, worker_config)?;
            let log = std::fs::File::create(self.work_dir.join(format!("{id}.log")))?;
            let mut command = Command::new(&self.program);
            command
                .arg("--config")
                .arg(&config_file)
                .arg("--data-dir")
                .arg(self.work_dir.join(id))
                .args(["worker", "--instance-id", id])
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            for (key, _) in
                std::env::vars().filter(|(k, _)| k.starts_with("SKYBURST_") && !PASSED_ON.contains(&k.as_str()))
            {
                command.env_remove(key);
            }
            // The instance's model directory is this machine's.
            command.env("SKYBURST_DETECTOR__MODEL_DIR", &self.model_dir);
            if let Cloud::Nova(_) = provider {
                // A Nova server has no instance role and no keys: its worker gets AWS
                // credentials from the controller's vending endpoint, or none.
                for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"] {
                    command.env_remove(key);
                }
            }
            let child = command.spawn().context("cannot start skyburst worker")?;
            println!(
                "skyburst dev fleet-agent: instance {id} of pool {} booted; worker pid {:?}",
                pool.name,
                child.id()
            );
            self.workers.insert(id.to_string(), child);
            Ok(())
        }

        async fn stop_all(&mut self) {
            let stopping: Vec<_> = self.workers.drain().map(|(_, child)| tokio::spawn(stop(child))).collect();
            for handle in stopping {
                let _ = handle.await;
            }
        }
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
    async fn stop(mut child: Child) {
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(STOP_TIMEOUT, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}
