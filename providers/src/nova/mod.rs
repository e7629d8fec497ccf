//! The `nova` provider: a pool's instances are OpenStack Nova servers, found by server tags for
//! the deployment, the pool and the launch (compute microversion 2.52, which introduced tags at
//! create), with the same facts in metadata for people reading the server.
//!
//! Built on `openstack_sdk`: it reads credentials the way every OpenStack tool does (`clouds.yaml`
//! and `secure.yaml` on the standard paths with `OS_CLOUD`, or the `OS_*` variables), speaks
//! Keystone v3 with the service catalog, and re-authenticates on a 401.

pub mod mapping;

// Links Keystone's application-credential auth plugin, which registers itself with
// openstack_sdk at start-up (see providers/Cargo.toml).
extern crate openstack_sdk_auth_applicationcredential as _;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use openstack_sdk::api::compute::v2::flavor::get_20 as flavor;
use openstack_sdk::api::compute::v2::limit::list_21 as limits;
use openstack_sdk::api::compute::v2::server::{create_252, delete, get_20 as server, list_detailed_21};
use openstack_sdk::api::{ignore, paged, ApiError, Pagination, QueryAsync};
pub use openstack_sdk::config::CloudConfig;
use openstack_sdk::config::ConfigFile;
use openstack_sdk::types::ServiceType;
use openstack_sdk::AsyncOpenStack;
use serde::Deserialize;

use crate::{
    Cause, Instance, LaunchSpec, Limits, Provider, ProviderError, Result, TAG_DEPLOYMENT, TAG_LAUNCH_ID, TAG_POOL,
    TAG_TOKEN_SHA256, TOKEN_PLACEHOLDER,
};

/// The compute microversion of listings and reads: 2.52 added server tags at create (tag
/// filters came in 2.26; `OS-EXT-SRV-ATTR:user_data` in 2.3).
const MICROVERSION: &str = "compute 2.52";

fn microversion() -> (http::HeaderName, http::HeaderValue) {
    (http::HeaderName::from_static("openstack-api-version"), http::HeaderValue::from_static(MICROVERSION))
}

/// A pool's Nova-only settings; image, flavor and user-data come with each [`LaunchSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NovaSettings {
    /// The pool: named in errors, matched by `list`.
    pub pool: String,
    /// The deployment: matched by `list`.
    pub deployment: String,
    /// The flavor's id: its vCPUs and RAM size the project's room in [`Provider::limits`].
    pub flavor: String,
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
    /// The flavor's size, read once.
    flavor: tokio::sync::OnceCell<FlavorSize>,
}

/// What one server of the pool's flavor takes from the project's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct FlavorSize {
    /// Virtual CPUs.
    pub vcpus: u64,
    /// Memory, MiB.
    pub ram: u64,
}

/// The `absolute` part of Nova's `GET /limits`; -1 means unlimited.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbsoluteLimits {
    /// Servers the project may run.
    pub max_total_instances: i64,
    /// Servers it runs.
    pub total_instances_used: i64,
    /// vCPUs it may use.
    pub max_total_cores: i64,
    /// vCPUs it uses.
    pub total_cores_used: i64,
    /// RAM it may use, MiB.
    #[serde(rename = "maxTotalRAMSize")]
    pub max_total_ram_size: i64,
    /// RAM it uses, MiB.
    #[serde(rename = "totalRAMUsed")]
    pub total_ram_used: i64,
}

impl std::fmt::Debug for NovaProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NovaProvider").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// The cloud to use: `OS_CLOUD`'s entry of `clouds.yaml` (+ `secure.yaml`), else the `OS_*`
/// variables, from this process's environment.
pub fn cloud_config() -> std::result::Result<CloudConfig, String> {
    cloud_config_from(std::env::vars())
}

/// As [`cloud_config`], from the given variables (a process acting for another project).
pub fn cloud_config_from(vars: impl IntoIterator<Item = (String, String)>) -> std::result::Result<CloudConfig, String> {
    let vars: std::collections::HashMap<String, String> =
        vars.into_iter().filter(|(k, _)| k.starts_with("OS_")).collect();
    if let Some(name) = vars.get("OS_CLOUD") {
        let files = ConfigFile::new().map_err(|e| format!("cannot read clouds.yaml: {e}"))?;
        return files
            .get_cloud_config(name)
            .map_err(|e| format!("cannot read cloud {name:?} from clouds.yaml: {e}"))?
            .ok_or_else(|| {
                format!(
                    "OS_CLOUD={name} but no cloud of that name in clouds.yaml \
                     (./clouds.yaml, ~/.config/openstack/, /etc/openstack/)"
                )
            });
    }
    if !vars.contains_key("OS_AUTH_URL") {
        return Err("no OpenStack credentials: set OS_CLOUD (an entry of clouds.yaml) or the OS_* variables \
                    (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, ...)"
            .into());
    }
    // What openstack_sdk's `CloudConfig::from_env` does, on these variables: OS_REGION_NAME,
    // OS_INTERFACE and OS_CACERT set the cloud; the rest (OS_AUTH_URL, OS_USERNAME,
    // OS_APPLICATION_CREDENTIAL_ID, ...) its auth.
    let source = || {
        config::Config::builder()
            .add_source(config::Environment::with_prefix("os").source(Some(vars.clone().into_iter().collect())))
            .build()
            .map_err(|e| format!("cannot read the OS_* variables: {e}"))
    };
    let mut cloud: CloudConfig =
        source()?.try_deserialize().map_err(|e| format!("cannot read the OS_* variables: {e}"))?;
    cloud.auth = Some(source()?.try_deserialize().map_err(|e| format!("cannot read the OS_* auth variables: {e}"))?);
    Ok(cloud)
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
        Self { settings, cloud, session: Default::default(), flavor: Default::default() }
    }

    /// Runs `query` on the session (see [`Self::query_found`]); a missing resource is `Invalid`.
    async fn query<Q, T>(&self, query: &Q) -> Result<T>
    where
        Q: QueryAsync<T, AsyncOpenStack> + Sync,
        T: Send,
    {
        self.query_found(query).await?.ok_or_else(|| self.invalid("HTTP 404: not found"))
    }

    /// Runs `query` on the session: `None` if Nova answers 404. A refused token (expired or
    /// revoked: HTTP 401) is renewed by authenticating again from the credentials, and the
    /// query is sent once more.
    async fn query_found<Q, T>(&self, query: &Q) -> Result<Option<T>>
    where
        Q: QueryAsync<T, AsyncOpenStack> + Sync,
        T: Send,
    {
        let mut renewed = false;
        loop {
            let session = self.session().await?;
            match query.query_async(session.as_ref()).await {
                Ok(answer) => return Ok(Some(answer)),
                Err(e) if status(&e) == Some(404) => return Ok(None),
                Err(e) if !renewed && status(&e) == Some(401) => {
                    tracing::info!(pool = %self.settings.pool, "OpenStack token refused; authenticating again");
                    *self.session.lock().await = None;
                    renewed = true;
                }
                Err(e) => return self.checked(Err(self.error(e))).await,
            }
        }
    }

    /// The user-data a server was created with (admin only: `OS-EXT-SRV-ATTR:user_data`,
    /// microversion 2.3 and later). The fleet agent reads it as a booting server would.
    pub async fn user_data(&self, id: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "OS-EXT-SRV-ATTR:user_data", default)]
            user_data: Option<String>,
        }
        let request = server::Request::builder()
            .id(id)
            .headers([microversion()].into_iter().map(|(k, v)| (Some(k), v)))
            .build()
            .map_err(|e| self.invalid(e))?;
        let answer: Answer = self.query(&request).await?;
        let encoded = answer
            .user_data
            .ok_or_else(|| self.invalid(format!("server {id} shows no user-data: reading it needs an admin role")))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| self.invalid(format!("user-data of {id} is not base64: {e}")))?;
        String::from_utf8(bytes).map_err(|e| self.invalid(format!("user-data of {id} is not UTF-8: {e}")))
    }

    /// The pool flavor's vCPUs and RAM, read once.
    async fn flavor_size(&self) -> Result<FlavorSize> {
        self.flavor
            .get_or_try_init(|| async {
                let request = flavor::Request::builder()
                    .id(self.settings.flavor.as_str())
                    .build()
                    .map_err(|e| self.invalid(e))?;
                // openstack_sdk answers the `flavor` object itself.
                self.query::<_, FlavorSize>(&request).await
            })
            .await
            .copied()
    }

    fn invalid(&self, cause: impl Into<Cause>) -> ProviderError {
        ProviderError::Invalid { pool: self.settings.pool.clone(), cause: cause.into() }
    }

    /// The session: Keystone v3 authentication and Nova from the catalog, made once and again
    /// after [`Self::forget_session`].
    async fn session(&self) -> Result<Arc<AsyncOpenStack>> {
        let mut held = self.session.lock().await;
        if let Some(session) = held.as_ref() {
            return Ok(session.clone());
        }
        let unavailable = |e: openstack_sdk::OpenStackError| ProviderError::Unavailable {
            pool: self.settings.pool.clone(),
            cause: crate::explained(format!("cannot authenticate or find Nova in the catalog: {e}"), e),
        };
        let session =
            AsyncOpenStack::builder(&self.cloud).disable_auth_cache(true).connect().await.map_err(unavailable)?;
        session.discover_service_endpoint(&ServiceType::Compute).await.map_err(unavailable)?;
        let session = Arc::new(session);
        *held = Some(session.clone());
        Ok(session)
    }

    /// Drops the session after a failure to authenticate or to reach the cloud: the next call
    /// authenticates afresh from the credentials.
    async fn checked<T>(&self, outcome: Result<T>) -> Result<T> {
        if let Err(ProviderError::Auth { .. } | ProviderError::Unavailable { .. }) = &outcome {
            *self.session.lock().await = None;
        }
        outcome
    }

    fn tag(key: &str, value: &str) -> String {
        format!("{key}={value}")
    }

    /// Maps a failed call by its status and Nova's message, keeping the client's error.
    fn error<E: std::error::Error + Send + Sync + 'static>(&self, e: ApiError<E>) -> ProviderError {
        let pool = &self.settings.pool;
        let answer = match &e {
            ApiError::OpenStack { status, msg, .. } => Some((status.as_u16(), msg.clone())),
            ApiError::OpenStackService { status, data, .. } => Some((status.as_u16(), data.clone())),
            ApiError::OpenStackUnrecognized { status, obj, .. } => Some((status.as_u16(), obj.to_string())),
            _ => None,
        };
        match answer {
            Some((status, message)) => {
                let cause = crate::explained(format!("HTTP {status}: {message}"), e);
                mapping::with_cause(pool, status, &message, cause)
            }
            None => ProviderError::Unavailable { pool: pool.clone(), cause: e.into() },
        }
    }

    /// This pool's servers carrying every tag in `tags` (and ours).
    async fn servers(&self, extra: &[String]) -> Result<Vec<Instance>> {
        let s = &self.settings;
        let mut tags = vec![Self::tag(TAG_DEPLOYMENT, &s.deployment), Self::tag(TAG_POOL, &s.pool)];
        tags.extend_from_slice(extra);
        // Nova ignores the `tags` filter below microversion 2.26; the generated request is 2.1.
        let (name, value) = microversion();
        let request = list_detailed_21::Request::builder()
            .tags(tags.join(","))
            .header(name, value)
            .build()
            .map_err(|e| self.invalid(e))?;
        let found: Vec<Server> = self.query(&paged(request, Pagination::All)).await?;
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
            |e: &dyn std::fmt::Display| ProviderError::Invalid { pool: s.pool.clone(), cause: e.to_string().into() };
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
        let mut metadata: BTreeMap<String, String> = spec.tags.clone();
        metadata.insert(TAG_LAUNCH_ID.into(), spec.launch_id.clone());
        let mut user_data = spec.user_data.clone();
        if let Some(token) = spec.instance_tokens.get(index as usize) {
            user_data = user_data.replace(TOKEN_PLACEHOLDER, &token.token);
            metadata.insert(TAG_TOKEN_SHA256.into(), token.sha256.clone());
        }
        let mut server = create_252::ServerBuilder::default();
        server
            .name(format!("{}-{}-{}-{index}", s.deployment, s.pool, spec.launch_id))
            .image_ref(spec.image.clone())
            .flavor_ref(spec.flavor.clone())
            .networks(networks)
            .user_data(base64::engine::general_purpose::STANDARD.encode(&user_data))
            .tags(tags.into_iter().map(Into::into).collect::<Vec<_>>())
            .metadata(metadata.into_iter());
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
        let created: Created = self.query(&request).await?;
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
        let request = delete::Request::builder().id(id).build().map_err(|e| self.invalid(e))?;
        // `None`: already gone.
        self.query_found(&ignore(request)).await.map(|_| ())
    }

    async fn list(&self) -> Result<Vec<Instance>> {
        self.servers(&[]).await
    }

    /// The project's limits and use (`GET /limits`), and how many more servers of the pool's
    /// flavor they leave room for.
    async fn limits(&self) -> Result<Limits> {
        #[derive(Deserialize)]
        struct Answer {
            absolute: AbsoluteLimits,
        }
        let request = limits::Request::builder().build().map_err(|e| self.invalid(e))?;
        let answer: Answer = self.query(&request).await?;
        let flavor = self.flavor_size().await?;
        Ok(mapping::limits(&answer.absolute, flavor))
    }
}

/// The HTTP status of a failed call, if Nova or Keystone answered.
fn status<E: std::error::Error + Send + Sync + 'static>(e: &ApiError<E>) -> Option<u16> {
    match e {
        ApiError::OpenStack { status, .. }
        | ApiError::OpenStackService { status, .. }
        | ApiError::OpenStackUnrecognized { status, .. } => Some(status.as_u16()),
        _ => None,
    }
}
