//! Each pool's ceiling: the configured `quota`, lowered to what the cloud's own limits leave room
//! for (a Nova project's instances, vCPUs and RAM for the pool's flavor). The planner then bursts
//! past a private cloud that is full by its project limits without first being refused.

use std::collections::HashMap;

use skyburst_policies::{Observation, PoolHealth};

use super::Pool;

/// How long a pool's limits are trusted while they leave the pool its configured quota. They
/// change only when an operator edits quotas or other tenants start or stop servers, and a
/// launch past them is refused (`Quota`) and re-planned onto the next pool in the same check,
/// so one `GET /limits` per 30 s per pool is enough (6 ticks at the default 5 s). Limits that
/// bind (below the configured quota) are read every check, so room that opens up is used at
/// once rather than burst past for up to 30 s.
pub const REFRESH_MS: i64 = 30_000;

/// The pools' cloud ceilings, as last read.
#[derive(Debug, Default)]
pub struct Ceilings {
    known: HashMap<String, Known>,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    /// Instances this pool may hold by the cloud's limits: ours when read + the room then.
    /// `None`: the cloud reports no limit.
    ceiling: Option<u32>,
    at_ms: i64,
}

impl Ceilings {
    /// Reads the limits of every healthy pool whose reading is older than [`REFRESH_MS`], then
    /// lowers each pool's quota in `observation` to its ceiling. A pool whose limits cannot be
    /// read keeps its configured quota (its `list` answered, so launches will tell).
    pub async fn apply(&mut self, pools: &[Pool], observation: &mut Observation, now_ms: i64) {
        for view in &mut observation.pools {
            let Some(pool) = pools.iter().find(|p| p.config.name == view.name) else { continue };
            let stale = self.known.get(&view.name).is_none_or(|k| {
                let binding = k.ceiling.is_some_and(|ceiling| ceiling < view.quota);
                binding || now_ms - k.at_ms >= REFRESH_MS
            });
            if stale && view.health == PoolHealth::Ok {
                match pool.provider.limits().await {
                    Ok(limits) => {
                        let ours = view.instances.len() as u32;
                        let ceiling = limits.room.map(|room| ours.saturating_add(room));
                        self.known.insert(view.name.clone(), Known { ceiling, at_ms: now_ms });
                    }
                    Err(e) => tracing::warn!(pool = %view.name, error = %e, "cannot read the cloud's limits"),
                }
            }
            if let Some(ceiling) = self.known.get(&view.name).and_then(|k| k.ceiling) {
                if ceiling < view.quota {
                    tracing::debug!(pool = %view.name, quota = view.quota, ceiling, "the cloud's limits lower the pool's ceiling");
                    view.quota = ceiling;
                }
            }
        }
    }

    /// Forgets `pool`'s limits (after the cloud refused a launch by quota), so the next check
    /// reads them again.
    pub fn forget(&mut self, pool: &str) {
        self.known.remove(pool);
    }
}
