//! The controller's lease in the store: only its holder acts, so two controllers of one
//! deployment (a restart overlapping, a standby) never launch for the same backlog twice.

use std::sync::Arc;
use std::time::Duration;

use crate::control::{Lease, LEASE};
use crate::job;
use crate::store::{ObjectStore, StoreError};

/// Takes and renews the lease for one controller.
pub struct LeaseKeeper {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    holder: String,
    ttl: Duration,
}

impl LeaseKeeper {
    /// A keeper for `holder`, whose lease lasts `ttl` unless renewed.
    pub fn new(store: Arc<dyn ObjectStore>, bucket: String, holder: String, ttl: Duration) -> Self {
        Self { store, bucket, holder, ttl }
    }

    /// Takes the lease if it is free, lapsed or ours, and renews it; false if another holds it.
    /// Expiry is wall-clock time: controllers on different machines need synchronised clocks
    /// (NTP keeps them within milliseconds; the lease lasts seconds).
    pub async fn hold(&self) -> Result<bool, StoreError> {
        let current = match self.store.get(&self.bucket, LEASE).await {
            Ok(bytes) => Some(bytes),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let now = job::now_ms();
        if let Some(lease) = current.as_deref().and_then(|b| serde_json::from_slice::<Lease>(b).ok()) {
            if lease.holder != self.holder && lease.expires_at_ms > now {
                return Ok(false);
            }
        }
        let renewed = Lease { holder: self.holder.clone(), expires_at_ms: now + self.ttl.as_millis() as i64 };
        let bytes = serde_json::to_vec(&renewed).expect("a lease always serializes");
        self.store.swap(&self.bucket, LEASE, current, bytes).await
    }

    /// Gives the lease up (on a clean stop) so a successor need not wait for it to lapse.
    pub async fn release(&self) {
        if let Ok(bytes) = self.store.get(&self.bucket, LEASE).await {
            let ours = serde_json::from_slice::<Lease>(&bytes).is_ok_and(|l| l.holder == self.holder);
            if ours {
                let lapsed = serde_json::to_vec(&Lease { holder: self.holder.clone(), expires_at_ms: 0 })
                    .expect("a lease always serializes");
                let _ = self.store.swap(&self.bucket, LEASE, Some(bytes), lapsed).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    fn keeper(store: &Arc<dyn ObjectStore>, holder: &str, ttl_ms: u64) -> LeaseKeeper {
        LeaseKeeper::new(store.clone(), "out".into(), holder.into(), Duration::from_millis(ttl_ms))
    }

    #[tokio::test]
    async fn one_holder_at_a_time_until_it_lapses_or_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()));
        let (a, b) = (keeper(&store, "a", 300), keeper(&store, "b", 300));
        assert!(a.hold().await.unwrap());
        assert!(!b.hold().await.unwrap(), "a holds it");
        assert!(a.hold().await.unwrap(), "a renews");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(b.hold().await.unwrap(), "a's lease lapsed");
        assert!(!a.hold().await.unwrap());
        b.release().await;
        assert!(a.hold().await.unwrap(), "b released it");
    }
}
