//! The `ec2` provider: a pool's instances are EC2 instances, tagged with the deployment, the pool
//! and the launch id. Launches require IMDSv2, encrypt the root volume, tag instances and
//! volumes, and try the configured subnets in order when one has no capacity.

pub mod errors;

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceAttributeName, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceType, ResourceType,
    Tag, TagSpecification, VolumeType,
};
use base64::Engine;
use tokio::sync::Mutex;

use crate::aws::AwsSession;
use crate::{Instance, LaunchSpec, Limits, Provider, ProviderError, Result, TAG_DEPLOYMENT, TAG_LAUNCH_ID, TAG_POOL};

/// A pool's EC2-only settings; the image, instance type and user-data come with each
/// [`LaunchSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Settings {
    /// The pool: named in errors, matched by `list`.
    pub pool: String,
    /// The deployment: matched by `list`.
    pub deployment: String,
    /// Subnet ids, tried in order when one has no capacity; empty: the default VPC.
    pub subnets: Vec<String>,
    /// Security group ids.
    pub security_groups: Vec<String>,
    /// EC2 key pair for SSH; `None`: no key (the worker needs none).
    pub key_name: Option<String>,
    /// Instance profile whose role the worker uses for SQS and S3.
    pub instance_profile: Option<String>,
    /// Size of the encrypted root volume, GiB.
    pub root_volume_gb: u32,
}

/// Runs a pool's instances on EC2.
#[derive(Debug)]
pub struct Ec2Provider {
    settings: Ec2Settings,
    client: aws_sdk_ec2::Client,
    /// (AMI, its root device name): the encrypted-root mapping must name the AMI's own device.
    root_device: Mutex<Option<(String, String)>>,
}

impl Ec2Provider {
    /// A provider on `session`'s region, credentials and endpoint.
    pub fn new(settings: Ec2Settings, session: &AwsSession) -> Self {
        Self { settings, client: session.ec2(), root_device: Mutex::new(None) }
    }

    /// The user-data an instance was launched with (what cloud-init on it reads). The local
    /// fleet agent reads it back to start the worker it describes.
    pub async fn user_data(&self, id: &str) -> Result<String> {
        let answer = self
            .client
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await
            .map_err(|e| self.error(e))?;
        let encoded = answer.user_data().and_then(|v| v.value()).unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| self.invalid(format!("user-data of {id} is not base64: {e}")))?;
        String::from_utf8(bytes).map_err(|e| self.invalid(format!("user-data of {id} is not UTF-8: {e}")))
    }

    fn error<E, R>(&self, error: aws_sdk_ec2::error::SdkError<E, R>) -> ProviderError
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        errors::from_sdk(&self.settings.pool, error)
    }

    fn invalid(&self, detail: String) -> ProviderError {
        ProviderError::Invalid { pool: self.settings.pool.clone(), cause: detail.into() }
    }

    /// Instances of this pool in `states`, with more filters; every page.
    async fn describe(&self, states: &[&str], extra: Vec<Filter>) -> Result<Vec<Instance>> {
        let filter = |name: &str, values: &[&str]| {
            Filter::builder().name(name).set_values(Some(values.iter().map(|v| v.to_string()).collect())).build()
        };
        let mut request = self
            .client
            .describe_instances()
            .filters(filter(&format!("tag:{TAG_DEPLOYMENT}"), &[&self.settings.deployment]))
            .filters(filter(&format!("tag:{TAG_POOL}"), &[&self.settings.pool]))
            .filters(filter("instance-state-name", states));
        for f in extra {
            request = request.filters(f);
        }
        let mut pages = request.into_paginator().send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error(e))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                found.extend(self.instance(instance));
            }
        }
        Ok(found)
    }

    fn instance(&self, described: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
        let state = described.state().and_then(|s| s.name()).and_then(errors::instance_state)?;
        let tags = described
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
            .collect();
        Some(Instance {
            id: described.instance_id()?.to_string(),
            state,
            launched_at_ms: described.launch_time().map_or(0, |t| t.to_millis().unwrap_or(0).max(0) as u64),
            tags,
        })
    }

    /// The AMI's root device name (`/dev/xvda` on Amazon Linux, `/dev/sda1` on Debian's).
    async fn root_device(&self, image: &str) -> Result<String> {
        let mut cached = self.root_device.lock().await;
        if let Some((ami, device)) = cached.as_ref() {
            if ami == image {
                return Ok(device.clone());
            }
        }
        let answer = self.client.describe_images().image_ids(image).send().await.map_err(|e| self.error(e))?;
        let device = answer
            .images()
            .first()
            .and_then(|i| i.root_device_name())
            .ok_or_else(|| self.invalid(format!("AMI {image} is not visible in this region; check the pool's image")))?
            .to_string();
        *cached = Some((image.to_string(), device.clone()));
        Ok(device)
    }

    /// One RunInstances in one subnet (`None`: the default VPC).
    async fn run(&self, spec: &LaunchSpec, count: u32, subnet: Option<&str>, attempt: usize) -> Result<Vec<Instance>> {
        let s = &self.settings;
        let root = self.root_device(&spec.image).await?;
        let mut tags: BTreeMap<String, String> = spec.tags.clone();
        tags.insert(TAG_LAUNCH_ID.into(), spec.launch_id.clone());
        tags.entry("Name".into()).or_insert_with(|| format!("{}-{}", s.deployment, s.pool));
        let tagged = |kind: ResourceType| {
            let tags = tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build());
            TagSpecification::builder().resource_type(kind).set_tags(Some(tags.collect())).build()
        };
        let volume = EbsBlockDevice::builder()
            .encrypted(true)
            .volume_size(s.root_volume_gb as i32)
            .volume_type(VolumeType::Gp3)
            .delete_on_termination(true)
            .build();
        // IMDSv2 only, one hop: a container on the worker cannot reach the instance's role.
        let metadata = InstanceMetadataOptionsRequest::builder()
            .http_tokens(HttpTokensState::Required)
            .http_endpoint(InstanceMetadataEndpointState::Enabled)
            .http_put_response_hop_limit(1)
            .build();
        let answer = self
            .client
            .run_instances()
            .image_id(&spec.image)
            .instance_type(InstanceType::from(spec.flavor.as_str()))
            // All or nothing: EC2 then answers InsufficientInstanceCapacity and the next subnet
            // (another zone) gets the whole request, instead of a few here and the rest nowhere.
            .min_count(count as i32)
            .max_count(count as i32)
            .set_subnet_id(subnet.map(str::to_string))
            .set_security_group_ids((!s.security_groups.is_empty()).then(|| s.security_groups.clone()))
            .set_key_name(s.key_name.clone())
            .set_iam_instance_profile(
                s.instance_profile.as_ref().map(|name| IamInstanceProfileSpecification::builder().name(name).build()),
            )
            .user_data(base64::engine::general_purpose::STANDARD.encode(&spec.user_data))
            .client_token(client_token(&spec.launch_id, attempt))
            .metadata_options(metadata)
            .block_device_mappings(BlockDeviceMapping::builder().device_name(root).ebs(volume).build())
            .tag_specifications(tagged(ResourceType::Instance))
            .tag_specifications(tagged(ResourceType::Volume))
            .send()
            .await
            .map_err(|e| self.error(e))?;
        Ok(answer.instances().iter().filter_map(|i| self.instance(i)).collect())
    }
}

/// The idempotency token of one launch in its `attempt`-th subnet. EC2 answers a request
/// repeated with the same token with the instances the first one started, so an SDK retry after a
/// lost answer starts nothing more; another subnet is another request (a reused token with other
/// parameters is refused), so it gets its own token. EC2 takes at most 64 ASCII characters.
fn client_token(launch_id: &str, attempt: usize) -> String {
    let token = format!("skyburst-{launch_id}-{attempt}");
    token.chars().filter(char::is_ascii).take(64).collect()
}

/// Tries `launch` in each subnet in order until one is not out of capacity; every other error
/// ends the launch. `Capacity` from the last subnet if all were full.
async fn in_order<'a, F, Fut>(subnets: &[Option<&'a str>], mut launch: F) -> Result<Vec<Instance>>
where
    F: FnMut(usize, Option<&'a str>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Instance>>>,
{
    let mut full = None;
    for (attempt, subnet) in subnets.iter().enumerate() {
        match launch(attempt, *subnet).await {
            Ok(instances) => return Ok(instances),
            Err(e @ ProviderError::Capacity { .. }) => {
                tracing::warn!(subnet = ?subnet, error = %e, "no capacity; trying the next subnet");
                full = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(full.expect("at least one subnet was tried"))
}

#[async_trait]
impl Provider for Ec2Provider {
    async fn launch(&self, spec: &LaunchSpec, count: u32) -> Result<Vec<Instance>> {
        // A retried launch (same launch id) returns what the first one started.
        let launch_tag = Filter::builder().name(format!("tag:{TAG_LAUNCH_ID}")).values(&spec.launch_id).build();
        let started = self.describe(&["pending", "running"], vec![launch_tag]).await?;
        if !started.is_empty() {
            tracing::info!(pool = %self.settings.pool, launch_id = %spec.launch_id, found = started.len(), "launch already done");
            return Ok(started);
        }
        let subnets: Vec<Option<&str>> = match self.settings.subnets.as_slice() {
            [] => vec![None],
            subnets => subnets.iter().map(|s| Some(s.as_str())).collect(),
        };
        in_order(&subnets, |attempt, subnet| self.run(spec, count, subnet, attempt)).await
    }

    async fn terminate(&self, id: &str) -> Result<()> {
        match self.client.terminate_instances().instance_ids(id).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().and_then(|s| s.meta().code()) == Some("InvalidInstanceID.NotFound") => {
                Ok(())
            }
            Err(e) => Err(self.error(e)),
        }
    }

    async fn list(&self) -> Result<Vec<Instance>> {
        self.describe(&errors::LISTED_STATES, Vec::new()).await
    }

    /// EC2's limits are vCPU quotas (Service Quotas), which this provider does not read: a launch
    /// past them answers `VcpuLimitExceeded`, mapped to `Quota`. `in_use` is this pool's count.
    async fn limits(&self) -> Result<Limits> {
        let in_use = self.describe(&["pending", "running"], Vec::new()).await?.len() as u32;
        Ok(Limits { max_instances: None, in_use, room: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InstanceState;

    fn started(subnet: &str) -> Instance {
        Instance { id: format!("i-{subnet}"), state: InstanceState::Pending, launched_at_ms: 1, tags: BTreeMap::new() }
    }

    fn run(answers: &[(&str, &str)]) -> (Result<Vec<Instance>>, Vec<usize>) {
        let subnets: Vec<Option<&str>> = answers.iter().map(|(s, _)| Some(*s)).collect();
        let tried = std::sync::Mutex::new(Vec::new());
        let outcome = block_on(in_order(&subnets, |attempt, subnet| {
            tried.lock().unwrap().push(attempt);
            let answer = answers[attempt].1;
            let subnet = subnet.unwrap().to_string();
            async move {
                match answer {
                    "ok" => Ok(vec![started(&subnet)]),
                    code => Err(errors::from_code("public", code, "from a test")),
                }
            }
        }));
        (outcome, tried.into_inner().unwrap())
    }

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    #[test]
    fn a_retry_reuses_the_token_and_another_subnet_gets_its_own() {
        assert_eq!(client_token("abc123", 0), client_token("abc123", 0));
        assert_ne!(client_token("abc123", 0), client_token("abc123", 1));
        assert_ne!(client_token("abc123", 0), client_token("abd123", 0));
        assert!(client_token(&"x".repeat(100), 3).len() <= 64);
    }

    #[test]
    fn a_full_subnet_hands_the_launch_to_the_next() {
        let (outcome, tried) = run(&[("a", "InsufficientInstanceCapacity"), ("b", "ok"), ("c", "ok")]);
        assert_eq!(outcome.unwrap()[0].id, "i-b");
        assert_eq!(tried, [0, 1], "c is not tried once b launched");
    }

    #[test]
    fn every_subnet_full_is_capacity_and_other_errors_stop_at_once() {
        let (outcome, tried) = run(&[("a", "InsufficientInstanceCapacity"), ("b", "InsufficientInstanceCapacity")]);
        assert_eq!(outcome.unwrap_err().kind(), "capacity");
        assert_eq!(tried, [0, 1]);
        let (outcome, tried) = run(&[("a", "VcpuLimitExceeded"), ("b", "ok")]);
        assert_eq!(outcome.unwrap_err().kind(), "quota", "a quota is the account's, not the subnet's");
        assert_eq!(tried, [0]);
    }
}
