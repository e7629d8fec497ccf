//! The `nova` provider: a pool's instances are OpenStack Nova servers, found by server tags for
//! the deployment, the pool and the launch (compute microversion 2.52, which introduced tags at
//! create), with the same facts in metadata for people reading the server.
//!
//! Built on `openstack_sdk`: it reads credentials the way every OpenStack tool does (`clouds.yaml`
//! and `secure.yaml` on the standard paths with `OS_CLOUD`, or the `OS_*` variables), speaks
//! Keystone v3 with the service catalog, and re-authenticates on a 401.

pub mod mapping;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use openstack_sdk::api::compute::v2::limit::list_21 as limits;
use openstack_sdk::api::compute::v2::server::{create_252, delete, list_detailed_21};
use openstack_sdk::api::{ignore, paged, ApiError, Pagination, QueryAsync};
use openstack_sdk::config::{CloudConfig, ConfigFile};
use openstack_sdk::types::ServiceType;
use openstack_sdk::AsyncOpenStack;
use serde::Deserialize;

use crate::{Instance, LaunchSpec, Limits, Provider, ProviderError, Result, TAG_DEPLOYMENT, TAG_LAUNCH_ID, TAG_POOL};

/// The compute microversion of every listing: 2.52 added server tags at create (tag filters
/// came in 2.26).
const MICROVERSION: &str = "compute 2.52";

/// A pool's Nova-only settings; image, flavor and user-data come with each [`LaunchSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NovaSettings {
    /// The pool: named in errors, matched by `list`.
    pub pool: String,
    /// The deployment: matched by `list`.
    pub deployment: String,
    /// The network's id, or `none` for servers without a NIC (a control plane without an L2
    /// agent, as in the tests).
    pub network: String,
    /// Security group names.
    pub security_groups: Vec<String>,
    /// Key pair for SSH.
    pub key_name: Option<String>,
}

/// Runs a pool's instances on Nova.
pub struct NovaProvider {
    settings: NovaSettings,
    cloud: CloudConfig,
    /// Authenticated on first use and again after any answer that refuses the token (expired or
    /// revoked), so an unreachable Keystone at start-up is `Unavailable`, not a failed start.
    session: tokio::sync::Mutex<Option<Arc<AsyncOpenStack>>>,
}

impl std::fmt::Debug for NovaProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NovaProvider").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// The cloud to use: `OS_CLOUD`'s entry of `clouds.yaml` (+ `secure.yaml`), else the `OS_*`
/// variables.
pub fn cloud_config() -> std::result::Result<CloudConfig, String> {
    if let Ok(name) = std::env::var("OS_CLOUD") {
        let files = ConfigFile::new().map_err(|e| format!("cannot read clouds.yaml: {e}"))?;
        return files
            .get_cloud_config(&name)
            .map_err(|e| format!("cannot read cloud {name:?} from clouds.yaml: {e}"))?
            .ok_or_else(|| {
                format!(
                    "OS_CLOUD={name} but no cloud of that name in clouds.yaml \
                     (./clouds.yaml, ~/.config/openstack/, /etc/openstack/)"
                )
            });
    }
    if std::env::var("OS_AUTH_URL").is_err() {
        return Err("no OpenStack credentials: set OS_CLOUD (an entry of clouds.yaml) or the OS_* variables \
                    (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, ...)"
            .into());
    }
    CloudConfig::from_env().map_err(|e| format!("cannot read the OS_* variables: {e}"))
}

#[derive(Deserialize)]
struct Server {
    id: String,
    status: String,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl NovaProvider {
    /// A provider for `cloud`; nothing is contacted until the first call.
    pub fn new(settings: NovaSettings, cloud: CloudConfig) -> Self {
        Self { settings, cloud, session: Default::default() }
    }

    /// The session: Keystone v3 authentication and Nova from the catalog, made once and again
    /// after [`Self::forget_session`].
    async fn session(&self) -> Result<Arc<AsyncOpenStack>> {
        let mut held = self.session.lock().await;
        if let Some(session) = held.as_ref() {
            return Ok(session.clone());
        }
        let unavailable = |e: &dyn std::fmt::Display| ProviderError::Unavailable {
            pool: self.settings.pool.clone(),
            detail: format!("cannot authenticate or find Nova in the catalog: {e}"),
        };
        let session = AsyncOpenStack::builder(&self.cloud)
            .disable_auth_cache(true)
            .connect()
            .await
            .map_err(|e| unavailable(&e))?;
        session.discover_service_endpoint(&ServiceType::Compute).await.map_err(|e| unavailable(&e))?;
        let session = Arc::new(session);
        *held = Some(session.clone());
        Ok(session)
    }

    /// Drops the session after a refused token: the next call authenticates afresh from the
    /// credentials (a revoked token cannot renew itself).
    async fn checked<T>(&self, outcome: Result<T>) -> Result<T> {
        if let Err(ProviderError::Auth { .. } | ProviderError::Unavailable { .. }) = &outcome {
            *self.session.lock().await = None;
        }
        outcome
    }

    fn tag(key: &str, value: &str) -> String {
        format!("{key}={value}")
    }

    fn error<E: std::error::Error + Send + Sync + 'static>(&self, e: &ApiError<E>) -> ProviderError {
        let pool = &self.settings.pool;
        match e {
            ApiError::OpenStack { status, msg, .. } => mapping::from_status(pool, status.as_u16(), msg),
            ApiError::OpenStackService { status, data, .. } => mapping::from_status(pool, status.as_u16(), data),
            ApiError::OpenStackUnrecognized { status, obj, .. } => {
                mapping::from_status(pool, status.as_u16(), &obj.to_string())
            }
            other => ProviderError::Unavailable { pool: pool.clone(), detail: other.to_string() },
        }
    }

    /// This pool's servers carrying every tag in `tags` (and ours).
    async fn servers(&self, extra: &[String]) -> Result<Vec<Instance>> {
        let s = &self.settings;
        let mut tags = vec![Self::tag(TAG_DEPLOYMENT, &s.deployment), Self::tag(TAG_POOL, &s.pool)];
        tags.extend_from_slice(extra);
        // Nova ignores the `tags` filter below microversion 2.26; the generated request is 2.1.
        let request = list_detailed_21::Request::builder()
            .tags(tags.join(","))
            .header(
                http::HeaderName::from_static("openstack-api-version"),
                http::HeaderValue::from_static(MICROVERSION),
            )
            .build()
            .map_err(|e| ProviderError::Invalid { pool: s.pool.clone(), detail: e.to_string() })?;
        let session = self.session().await?;
        let found: Vec<Server> = self
            .checked(paged(request, Pagination::All).query_async(session.as_ref()).await.map_err(|e| self.error(&e)))
            .await?;
        Ok(found.into_iter().filter_map(|server| self.instance(server)).collect())
    }

    fn instance(&self, server: Server) -> Option<Instance> {
        let state = mapping::server_state(&server.status)?;
        let mut tags: BTreeMap<String, String> = server.metadata;
        tags.insert(TAG_DEPLOYMENT.into(), self.settings.deployment.clone());
        tags.insert(TAG_POOL.into(), self.settings.pool.clone());
        let launched_at_ms = server
            .created
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        Some(Instance { id: server.id, state, launched_at_ms, tags })
    }

    async fn create(&self, spec: &LaunchSpec, index: u32) -> Result<String> {
        let s = &self.settings;
        let invalid =
            |e: &dyn std::fmt::Display| ProviderError::Invalid { pool: s.pool.clone(), detail: e.to_string() };
        let tags = vec![
            Self::tag(TAG_DEPLOYMENT, &s.deployment),
            Self::tag(TAG_POOL, &s.pool),
            Self::tag(TAG_LAUNCH_ID, &spec.launch_id),
        ];
        let networks = if s.network == "none" {
            create_252::ServerNetworks::F2(create_252::NetworksStringEnum::None)
        } else {
            let network =
                create_252::NetworksBuilder::default().uuid(s.network.clone()).build().map_err(|e| invalid(&e))?;
            create_252::ServerNetworks::F1(vec![network])
        };
        let mut server = create_252::ServerBuilder::default();
        server
            .name(format!("{}-{}-{}-{index}", s.deployment, s.pool, spec.launch_id))
            .image_ref(spec.image.clone())
            .flavor_ref(spec.flavor.clone())
            .networks(networks)
            .user_data(base64::engine::general_purpose::STANDARD.encode(&spec.user_data))
            .tags(tags.into_iter().map(Into::into).collect::<Vec<_>>())
            .metadata(
                spec.tags
                    .iter()
                    .chain([(&TAG_LAUNCH_ID.to_string(), &spec.launch_id)])
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        if let Some(key) = &s.key_name {
            server.key_name(key.clone());
        }
        if !s.security_groups.is_empty() {
            let groups = s
                .security_groups
                .iter()
                .map(|name| create_252::SecurityGroupsBuilder::default().name(name.clone()).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| invalid(&e))?;
            server.security_groups(groups);
        }
        let request = create_252::Request::builder()
            .server(server.build().map_err(|e| invalid(&e))?)
            .build()
            .map_err(|e| invalid(&e))?;
        #[derive(Deserialize)]
        struct Created {
            id: String,
        }
        let session = self.session().await?;
        let created: Created =
            self.checked(request.query_async(session.as_ref()).await.map_err(|e| self.error(&e))).await?;
        Ok(created.id)
    }
}

#[async_trait]
impl Provider for NovaProvider {
    async fn launch(&self, spec: &LaunchSpec, count: u32) -> Result<Vec<Instance>> {
        // A retried launch (same launch id) returns what the first one started.
        let started = self.servers(&[Self::tag(TAG_LAUNCH_ID, &spec.launch_id)]).await?;
        if !started.is_empty() {
            return Ok(started);
        }
        let mut ids = Vec::new();
        for index in 0..count {
            match self.create(spec, index).await {
                Ok(id) => ids.push(id),
                // Some started: report those; the controller re-plans the rest.
                Err(e) if !ids.is_empty() && e.is_full() => break,
                Err(e) => return Err(e),
            }
        }
        let listed = self.servers(&[Self::tag(TAG_LAUNCH_ID, &spec.launch_id)]).await?;
        Ok(listed.into_iter().filter(|i| ids.contains(&i.id)).collect())
    }

    async fn terminate(&self, id: &str) -> Result<()> {
        let request = delete::Request::builder()
            .id(id)
            .build()
            .map_err(|e| ProviderError::Invalid { pool: self.settings.pool.clone(), detail: e.to_string() })?;
        let session = self.session().await?;
        match ignore(request).query_async(session.as_ref()).await {
            Ok(()) => Ok(()),
            // Already gone.
            Err(ApiError::OpenStack { status, .. } | ApiError::OpenStackService { status, .. })
                if status.as_u16() == 404 =>
            {
                Ok(())
            }
            Err(e) => self.checked(Err(self.error(&e))).await,
        }
    }

    async fn list(&self) -> Result<Vec<Instance>> {
        self.servers(&[]).await
    }

    /// The project's instance quota and use (`GET /limits`).
    async fn limits(&self) -> Result<Limits> {
        #[derive(Deserialize)]
        struct Absolute {
            #[serde(rename = "maxTotalInstances")]
            max_total_instances: i64,
            #[serde(rename = "totalInstancesUsed")]
            total_instances_used: i64,
        }
        #[derive(Deserialize)]
        struct Answer {
            absolute: Absolute,
        }
        let request = limits::Request::builder()
            .build()
            .map_err(|e| ProviderError::Invalid { pool: self.settings.pool.clone(), detail: e.to_string() })?;
        let session = self.session().await?;
        let answer: Answer =
            self.checked(request.query_async(session.as_ref()).await.map_err(|e| self.error(&e))).await?;
        let a = answer.absolute;
        // -1 is "unlimited".
        let max_instances = u32::try_from(a.max_total_instances).ok();
        Ok(Limits { max_instances, in_use: a.total_instances_used.max(0) as u32 })
    }
}
