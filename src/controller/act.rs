//! Carrying out a plan: launches, terminations and drain requests, idempotent and tolerant of
//! provider errors. A pool that answers `Capacity` or `Quota` is marked full and the rest of
//! the demand is re-planned onto the next pool within the same check.

use std::sync::Arc;

use skyburst_policies::{
    plan, Action, Activity, InstanceState, InstanceView, Observation, Plan, PlannerConfig, PoolHealth,
};
use skyburst_providers::{LaunchSpec, ProviderError, TAG_DEPLOYMENT, TAG_POOL};

use super::metrics::Metrics;
use super::Pool;
use crate::control::{self, DrainRequest};
use crate::job;
use crate::store::ObjectStore;

/// Carries out plans.
pub struct Actor {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) bucket: String,
    pub(super) deployment: String,
    pub(super) metrics: Arc<Metrics>,
}

/// What acting on a plan did.
pub struct Acted {
    /// Every action taken or attempted, re-plans included.
    pub plan: Plan,
    /// Errors met, one line each.
    pub errors: Vec<String>,
    /// The observation with the actions applied: launched instances pending, terminated ones
    /// stopping, drains marked.
    pub observation: Observation,
}

impl Actor {
    /// Carries out `first` (planned for `desired` on `observation`); re-plans after a pool
    /// turns out full, at most once per pool.
    pub async fn act(
        &self,
        pools: &[Pool],
        desired: u32,
        mut observation: Observation,
        config: &PlannerConfig,
        first: Plan,
    ) -> Acted {
        let mut done = Plan { actions: Vec::new(), notes: first.notes.clone() };
        let mut errors = Vec::new();
        let mut current = first;
        for _ in 0..=pools.len() {
            let mut replan = false;
            for action in current.actions {
                let launch = matches!(action, Action::Launch { .. });
                let outcome = self.carry_out(pools, &action, &mut observation).await;
                done.actions.push(action);
                if let Err(e) = outcome {
                    errors.push(e.to_string());
                    // A launch that left its pool full or unreachable: the planner bursts past
                    // such a pool, so the rest of the demand goes to the next one now.
                    replan = launch && matches!(e.pool_health(), PoolHealth::Full | PoolHealth::Unavailable);
                    if replan {
                        break;
                    }
                }
            }
            if !replan {
                break;
            }
            current = plan(desired, &observation, config);
            done.notes.extend(current.notes.iter().map(|n| format!("re-plan: {n}")));
        }
        Acted { plan: done, errors, observation }
    }

    async fn carry_out(&self, pools: &[Pool], action: &Action, o: &mut Observation) -> Result<(), ProviderError> {
        match action {
            Action::Launch { pool, count } => {
                let handle = find(pools, pool)?;
                let spec = self.spec(handle, *count);
                match handle.provider.launch(&spec, *count).await {
                    Ok(started) => {
                        self.metrics.launched(pool, started.len() as u64);
                        let short = *count as usize - started.len().min(*count as usize);
                        let view = pool_view(o, pool);
                        view.instances.extend(started.into_iter().map(|i| InstanceView {
                            id: i.id,
                            state: InstanceState::Pending,
                            activity: Activity::Unknown,
                            heartbeat_age_s: None,
                            age_s: 0.0,
                        }));
                        if short == 0 {
                            return Ok(());
                        }
                        // A partial launch: the cloud had room for fewer; the rest bursts on.
                        view.health = PoolHealth::Full;
                        let e = ProviderError::Capacity {
                            pool: pool.clone(),
                            cause: format!("started {} of {count}", *count as usize - short).into(),
                        };
                        self.metrics.provider_error(pool, &e);
                        Err(e)
                    }
                    Err(e) => {
                        self.metrics.provider_error(pool, &e);
                        pool_view(o, pool).health = e.pool_health();
                        Err(e)
                    }
                }
            }
            Action::Terminate { pool, id, reason } => {
                let handle = find(pools, pool)?;
                handle.provider.terminate(id).await.inspect_err(|e| self.metrics.provider_error(pool, e))?;
                self.metrics.terminated(pool, reason);
                let _ = self.store.delete(&self.bucket, &control::drain_key(id)).await;
                if handle.vends_credentials {
                    // Its refresh token dies with it (the vendor also checks the server exists).
                    let _ = self.store.delete(&self.bucket, &crate::credentials::record_key(id)).await;
                }
                set(o, pool, id, |i| i.state = InstanceState::Stopping);
                Ok(())
            }
            Action::Drain { pool, id } => {
                let record = serde_json::to_vec(&DrainRequest { at_ms: job::now_ms() }).expect("serializes");
                self.store
                    .put(&self.bucket, &control::drain_key(id), record)
                    .await
                    .map_err(|e| store_error(pool, e))?;
                set(o, pool, id, |i| i.activity = Activity::Draining);
                Ok(())
            }
            Action::Undrain { pool, id } => {
                self.store.delete(&self.bucket, &control::drain_key(id)).await.map_err(|e| store_error(pool, e))?;
                set(o, pool, id, |i| i.activity = Activity::Busy);
                Ok(())
            }
        }
    }

    fn spec(&self, pool: &Pool, count: u32) -> LaunchSpec {
        let c = &pool.config;
        let tags = [(TAG_DEPLOYMENT, self.deployment.as_str()), (TAG_POOL, c.name.as_str())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LaunchSpec {
            image: c.image.clone(),
            flavor: c.flavor.clone(),
            network: c.network.clone(),
            user_data: pool.user_data.clone(),
            tags,
            // Short and unique per decision; a retry of this same call reuses it.
            launch_id: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            instance_tokens: if pool.vends_credentials {
                (0..count).map(|_| crate::credentials::new_token()).collect()
            } else {
                Vec::new()
            },
        }
    }
}

fn find<'a>(pools: &'a [Pool], name: &str) -> Result<&'a Pool, ProviderError> {
    pools.iter().find(|p| p.config.name == name).ok_or_else(|| ProviderError::Invalid {
        pool: name.into(),
        cause: "the planner named a pool that is not configured (a bug)".into(),
    })
}

fn pool_view<'a>(o: &'a mut Observation, pool: &str) -> &'a mut skyburst_policies::PoolView {
    o.pools.iter_mut().find(|p| p.name == pool).expect("plans name only observed pools")
}

fn set(o: &mut Observation, pool: &str, id: &str, change: impl FnOnce(&mut InstanceView)) {
    if let Some(instance) = pool_view(o, pool).instances.iter_mut().find(|i| i.id == id) {
        change(instance);
    }
}

fn store_error(pool: &str, e: crate::store::StoreError) -> ProviderError {
    // Reported with the provider errors; the pool's health is left as it was.
    let cause = skyburst_providers::explained(format!("cannot write the drain request: {e}"), e);
    ProviderError::Invalid { pool: pool.into(), cause }
}
