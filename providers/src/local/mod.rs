//! The `local` provider: each instance is a worker process on this machine, tracked in a JSON
//! registry so that a restarted controller adopts the processes it left running.

mod process;
mod registry;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use nix::sys::signal::Signal;
use tokio::sync::Mutex;

use self::registry::{Entry, Registry, RegistryFile};
use crate::{Instance, InstanceState, LaunchSpec, Limits, Provider, ProviderError, Result, TAG_LAUNCH_ID, TAG_POOL};

/// How long `stop_all` waits past `stop_timeout` for SIGKILLed processes to be gone: SIGKILL
/// acts at once, so this only covers reaping and a loaded machine.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// How often `stop_all` looks again.
const STOP_POLL: Duration = Duration::from_millis(100);

/// How one pool of local workers is started and stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSettings {
    /// The pool: named in errors and set as the [`TAG_POOL`] tag.
    pub pool: String,
    /// The executable to start, e.g. the `skyburst` binary.
    pub program: PathBuf,
    /// Its arguments; every `{id}` is replaced by the instance id.
    pub args: Vec<String>,
    /// An instance is reported `Pending` until this long after launch (the worker itself waits
    /// that long; the provider only reports it).
    pub boot_delay: Duration,
    /// The registry file, e.g. `<data_dir>/control/local-<pool>.json`; parent directories are
    /// created.
    pub registry: PathBuf,
    /// Terminating sends SIGTERM, then SIGKILL once this has passed.
    pub stop_timeout: Duration,
    /// Memory one instance needs, in bytes; a launch starts only as many as the machine's
    /// available memory (`MemAvailable`) holds and answers `Capacity` when none fits. 0: no
    /// check.
    pub memory_per_instance: u64,
}

/// Runs a pool's instances as processes on this machine.
#[derive(Debug)]
pub struct LocalProvider {
    /// How to start and stop workers.
    settings: LocalSettings,
    /// The registry file, re-read on every call: the file alone is the truth, so this provider
    /// and one started after a controller restart act on the same state.
    registry: RegistryFile,
    /// Handles of the processes this provider spawned, by instance id, kept only so `try_wait`
    /// reaps them when they exit; processes adopted from an earlier controller are init's
    /// children and need no reaping. The mutex also serialises every read-modify-write of the
    /// registry file. A tokio mutex because `stop_all` holds it while it waits, so nothing is
    /// launched during shutdown. Only in-process locking: one controller acts per deployment (it
    /// holds the lease), so no other process writes the file.
    children: Mutex<HashMap<String, Child>>,
}

/// What one registry entry means now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// List it in this state.
    Report(InstanceState),
    /// Terminated more than `stop_timeout` ago and still alive: SIGKILL it, list it as stopping.
    Kill,
    /// Terminated and gone: drop it from the registry and do not list it.
    Forget,
}

/// Maps a process's liveness and the entry's times to what the provider reports: the local
/// provider's one state-mapping function.
fn verdict(entry: &Entry, alive: bool, now_ms: u64, boot_delay: Duration, stop_timeout: Duration) -> Verdict {
    let elapsed = |since: u64| Duration::from_millis(now_ms.saturating_sub(since));
    match (entry.stopping_since_ms, alive) {
        (Some(_), false) => Verdict::Forget,
        (Some(since), true) if elapsed(since) >= stop_timeout => Verdict::Kill,
        (Some(_), true) => Verdict::Report(InstanceState::Stopping),
        // Died without being terminated: the controller terminates and replaces it.
        (None, false) => Verdict::Report(InstanceState::Error),
        (None, true) if elapsed(entry.launched_at_ms) < boot_delay => Verdict::Report(InstanceState::Pending),
        (None, true) => Verdict::Report(InstanceState::Running),
    }
}

fn now_ms() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

fn instance(entry: &Entry, state: InstanceState) -> Instance {
    Instance { id: entry.id.clone(), state, launched_at_ms: entry.launched_at_ms, tags: entry.tags.clone() }
}

/// Reaps every spawned child that has exited.
fn reap_all(children: &mut HashMap<String, Child>) {
    children.retain(|_, child| !process::reap(child));
}

/// Drops the handle of an instance that is gone, reaping it first: it may have exited after
/// `reap_all` ran, and a dropped `Child` is never reaped.
fn forget_child(children: &mut HashMap<String, Child>, id: &str) {
    if let Some(mut child) = children.remove(id) {
        process::reap(&mut child);
    }
}

// === impl LocalProvider ===

impl LocalProvider {
    /// How many of `wanted` new instances the available memory holds; `Capacity` if none.
    fn room_in_memory(&self, wanted: usize) -> Result<usize> {
        let need = self.settings.memory_per_instance;
        if need == 0 || wanted == 0 {
            return Ok(wanted);
        }
        let available = process::available_memory().map_err(|e| ProviderError::Unavailable {
            pool: self.settings.pool.clone(),
            cause: crate::explained(format!("cannot read the available memory: {e}"), e),
        })?;
        let fits = (available / need) as usize;
        if fits == 0 {
            return Err(ProviderError::Capacity {
                pool: self.settings.pool.clone(),
                cause: format!("{} MiB of memory available, a worker needs {} MiB", available >> 20, need >> 20).into(),
            });
        }
        Ok(fits.min(wanted))
    }

    /// Checks that `/proc` is readable and the registry can be read, creating its directory.
    /// Processes listed in an existing registry are adopted.
    pub fn new(settings: LocalSettings) -> Result<Self> {
        if let Err(e) = process::stat(std::process::id()) {
            return Err(ProviderError::Invalid {
                pool: settings.pool,
                cause: crate::explained(
                    format!("cannot read /proc/<pid>/stat ({e}); the local provider needs Linux with /proc mounted"),
                    e,
                ),
            });
        }
        let registry = RegistryFile::open(settings.registry.clone(), settings.pool.clone())?;
        registry.load()?;
        Ok(Self { settings, registry, children: Mutex::new(HashMap::new()) })
    }

    /// Terminates every instance and waits until all are gone: SIGTERM, then SIGKILL after
    /// `stop_timeout`. Fails if any is still alive `stop_timeout` plus a second later.
    pub async fn stop_all(&self) -> Result<()> {
        let deadline = Instant::now() + self.settings.stop_timeout + STOP_GRACE;
        let mut children = self.children.lock().await;
        let mut registry = self.registry.load()?;
        let now = now_ms();
        for entry in registry.instances.iter_mut().filter(|e| e.stopping_since_ms.is_none()) {
            // Dead ones are marked too, so the sweep below forgets them; only live ones are
            // signalled, as a dead one's PID may belong to another process by now.
            entry.stopping_since_ms = Some(now);
            if !process::is_alive(entry.pid, entry.start_time) {
                continue;
            }
            if let Err(e) = process::signal(entry.pid, Signal::SIGTERM) {
                tracing::warn!(pool = %self.settings.pool, instance = %entry.id, pid = entry.pid, error = %e, "cannot send SIGTERM");
            }
        }
        self.registry.save(&registry)?;
        loop {
            self.sweep(&mut registry, &mut children)?;
            if registry.instances.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let left: Vec<String> =
                    registry.instances.iter().map(|e| format!("{} (pid {})", e.id, e.pid)).collect();
                return Err(ProviderError::Unavailable {
                    pool: self.settings.pool.clone(),
                    cause: format!(
                        "still running after SIGKILL: {}; check them with `ps -o pid,stat,cmd -p <pid>`",
                        left.join(", ")
                    )
                    .into(),
                });
            }
            tokio::time::sleep(STOP_POLL).await;
        }
    }

    /// Reconciles the registry with the processes: reaps our exited children, SIGKILLs overdue
    /// stopping instances, forgets stopped ones (saving the file if any were), and returns what
    /// is left as instances.
    fn sweep(&self, registry: &mut Registry, children: &mut HashMap<String, Child>) -> Result<Vec<Instance>> {
        reap_all(children);
        let now = now_ms();
        let before = registry.instances.len();
        let mut listed = Vec::with_capacity(before);
        registry.instances.retain(|entry| {
            let alive = process::is_alive(entry.pid, entry.start_time);
            match verdict(entry, alive, now, self.settings.boot_delay, self.settings.stop_timeout) {
                Verdict::Forget => {
                    forget_child(children, &entry.id);
                    return false;
                }
                Verdict::Kill => {
                    tracing::warn!(pool = %self.settings.pool, instance = %entry.id, pid = entry.pid, "still running after SIGTERM and the stop timeout; sending SIGKILL");
                    if let Err(e) = process::signal(entry.pid, Signal::SIGKILL) {
                        tracing::warn!(pool = %self.settings.pool, instance = %entry.id, pid = entry.pid, error = %e, "cannot send SIGKILL");
                    }
                    listed.push(instance(entry, InstanceState::Stopping));
                }
                Verdict::Report(state) => listed.push(instance(entry, state)),
            }
            true
        });
        if registry.instances.len() != before {
            self.registry.save(registry)?;
        }
        Ok(listed)
    }

    /// Starts the instance `id` and returns its registry entry.
    fn start(&self, spec: &LaunchSpec, id: String) -> Result<(Entry, Child)> {
        let args: Vec<String> = self.settings.args.iter().map(|a| a.replace("{id}", &id)).collect();
        let (child, start_time) = process::spawn(&self.settings.program, &args).map_err(|e| ProviderError::Invalid {
            pool: self.settings.pool.clone(),
            cause: crate::explained(
                format!(
                    "cannot start `{}` for instance {id} ({e}); set the pool's local `program` to an executable worker binary",
                    self.settings.program.display()
                ),
                e,
            ),
        })?;
        let mut tags = spec.tags.clone();
        tags.insert(TAG_LAUNCH_ID.to_owned(), spec.launch_id.clone());
        tags.insert(TAG_POOL.to_owned(), self.settings.pool.clone());
        tracing::info!(pool = %self.settings.pool, instance = %id, pid = child.id(), "started local worker");
        let entry = Entry {
            id,
            pid: child.id(),
            start_time,
            launch_id: spec.launch_id.clone(),
            launched_at_ms: now_ms(),
            tags,
            stopping_since_ms: None,
        };
        Ok((entry, child))
    }
}

#[async_trait]
impl Provider for LocalProvider {
    async fn launch(&self, spec: &LaunchSpec, count: u32) -> Result<Vec<Instance>> {
        if spec.launch_id.is_empty() {
            return Err(ProviderError::Invalid {
                pool: self.settings.pool.clone(),
                cause: "launch id is empty; every launch needs a unique id so a retry does not start more".into(),
            });
        }
        let mut children = self.children.lock().await;
        let mut registry = self.registry.load()?;
        let mut started = Vec::new();
        let mut failure = None;
        let missing: Vec<String> = (0..count)
            .map(|n| format!("{}-{}-{n}", self.settings.pool, spec.launch_id))
            // A retry: those already started are not started again.
            .filter(|id| !registry.instances.iter().any(|e| &e.id == id))
            .collect();
        let fits = self.room_in_memory(missing.len())?;
        for id in missing.into_iter().take(fits) {
            match self.start(spec, id) {
                Ok((entry, child)) => {
                    started.push(entry.id.clone());
                    children.insert(entry.id.clone(), child);
                    registry.instances.push(entry);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Err(e) = self.registry.save(&registry) {
            // Unrecorded processes would run unseen by every later call: stop them now.
            for id in &started {
                if let Some(mut child) = children.remove(id) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            return Err(e);
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let listed = self.sweep(&mut registry, &mut children)?;
        Ok(listed.into_iter().filter(|i| i.tags.get(TAG_LAUNCH_ID) == Some(&spec.launch_id)).collect())
    }

    async fn terminate(&self, id: &str) -> Result<()> {
        let mut children = self.children.lock().await;
        let mut registry = self.registry.load()?;
        reap_all(&mut children);
        let Some(pos) = registry.instances.iter().position(|e| e.id == id) else {
            return Ok(()); // already gone
        };
        let entry = &mut registry.instances[pos];
        if !process::is_alive(entry.pid, entry.start_time) {
            registry.instances.remove(pos);
            forget_child(&mut children, id);
            return self.registry.save(&registry);
        }
        if entry.stopping_since_ms.is_some() {
            return Ok(()); // already stopping; `list` escalates to SIGKILL
        }
        process::signal(entry.pid, Signal::SIGTERM).map_err(|e| ProviderError::Invalid {
            pool: self.settings.pool.clone(),
            cause: crate::explained(
                format!(
                    "cannot send SIGTERM to instance {id} (pid {}): {e}; stop it by hand, then remove it from {}",
                    entry.pid,
                    self.registry.path().display()
                ),
                e,
            ),
        })?;
        tracing::info!(pool = %self.settings.pool, instance = %id, pid = entry.pid, "sent SIGTERM to local worker");
        entry.stopping_since_ms = Some(now_ms());
        self.registry.save(&registry)
    }

    async fn list(&self) -> Result<Vec<Instance>> {
        let mut children = self.children.lock().await;
        let mut registry = self.registry.load()?;
        self.sweep(&mut registry, &mut children)
    }

    async fn limits(&self) -> Result<Limits> {
        let _children = self.children.lock().await;
        let in_use = self.registry.load()?.instances.len();
        Ok(Limits { max_instances: None, in_use: u32::try_from(in_use).unwrap_or(u32::MAX), room: None })
    }
}

#[cfg(test)]
mod tests;
