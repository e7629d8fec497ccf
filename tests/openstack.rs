//! The Nova provider against a real OpenStack control plane (Keystone, Placement, Glance,
//! Neutron server and Nova with the fake virt driver) that scripts/test.sh starts once per run
//! (scripts/openstack-local/). Servers boot without a NIC (`network = "none"`): the local plane
//! has no L2 agent to bind ports.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use skyburst_providers::nova::{cloud_config, cloud_config_from, NovaProvider, NovaSettings};

use crate::support::openstack::{Admin, TenantGone};
use skyburst_providers::{InstanceState, LaunchSpec, Provider, TAG_DEPLOYMENT, TAG_LAUNCH_ID, TAG_POOL};

/// The plane's fixture image and flavor (scripts/lib/openstack.sh).
const IMAGE: &str = "11111111-2222-3333-4444-555555555555";
const FLAVOR: &str = "1";

fn provider(deployment: &str) -> NovaProvider {
    let cloud = cloud_config().unwrap_or_else(|e| {
        panic!("{e}\nthe Nova tests need the local OpenStack plane: run scripts/test.sh, or scripts/openstack-local/start.sh and its exports")
    });
    let settings = NovaSettings {
        pool: "private".into(),
        deployment: deployment.into(),
        flavor: FLAVOR.into(),
        network: "none".into(),
        security_groups: Vec::new(),
        key_name: None,
    };
    NovaProvider::new(settings, cloud)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// Servers are created with the deployment, pool and launch-id tags and found by them; a retried
/// launch id creates nothing; they go BUILD → ACTIVE; deleting them (twice) empties the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The plane's lock is a std lock held for the whole test on purpose: nothing else in this
// runtime takes it.
#[allow(clippy::await_holding_lock)]
async fn nova_launches_lists_retries_and_deletes_by_tag() {
    let _plane = crate::support::openstack::shared_plane();
    let deployment = unique("nova");
    let nova = provider(&deployment);
    let tags =
        BTreeMap::from([(TAG_DEPLOYMENT.to_string(), deployment.clone()), (TAG_POOL.to_string(), "private".into())]);
    let spec = LaunchSpec {
        image: IMAGE.into(),
        flavor: FLAVOR.into(),
        network: String::new(),
        user_data: "#cloud-config\n".into(),
        tags,
        launch_id: unique("launch"),
        instance_tokens: Vec::new(),
    };
    let launched = nova.launch(&spec, 2).await.unwrap();
    assert_eq!(launched.len(), 2, "{launched:?}");
    let mut ids: Vec<String> = launched.iter().map(|i| i.id.clone()).collect();
    ids.sort();
    let mut again: Vec<String> = nova.launch(&spec, 2).await.unwrap().into_iter().map(|i| i.id).collect();
    again.sort();
    assert_eq!(again, ids, "the same launch id creates nothing new");
    assert!(provider(&unique("other")).list().await.unwrap().is_empty(), "scoped by deployment");

    let started = Instant::now();
    loop {
        let listed = nova.list().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|i| i.tags[TAG_LAUNCH_ID] == spec.launch_id && i.launched_at_ms > 0), "{listed:?}");
        if listed.iter().all(|i| i.state == InstanceState::Running) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not ACTIVE within 60 s: {listed:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let limits = nova.limits().await.unwrap();
    assert!(limits.in_use >= 2 && limits.max_instances.is_some_and(|max| max >= 2), "{limits:?}");
    // Flavor 1 (1 vCPU, 512 MiB) under the default quotas (10 instances, 20 vCPUs, 50 GiB):
    // instances bind first.
    let room = limits.room.expect("the plane reports limits");
    assert!(room <= limits.max_instances.unwrap() - limits.in_use, "{limits:?}");

    for id in &ids {
        nova.terminate(id).await.unwrap();
    }
    let started = Instant::now();
    while !nova.list().await.unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "servers not gone within 60 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for id in &ids {
        nova.terminate(id).await.unwrap();
    }
}

/// Keystone application credentials authenticate as well as passwords
/// (`OS_AUTH_TYPE=v3applicationcredential` with `OS_APPLICATION_CREDENTIAL_ID` / `_SECRET`), and
/// the project's limits size the pool's room for the flavor.
#[test]
fn an_application_credential_authenticates_and_limits_give_room() {
    let _plane = crate::support::openstack::shared_plane();
    let admin = Admin::connect();
    let tenant = admin.create_tenant(&unique("appcred"));
    let _gone = TenantGone(&admin, &tenant);
    let (id, secret) = admin.create_application_credential(&tenant);
    let vars = [
        ("OS_AUTH_URL", admin.keystone()),
        ("OS_AUTH_TYPE", "v3applicationcredential"),
        ("OS_APPLICATION_CREDENTIAL_ID", &id),
        ("OS_APPLICATION_CREDENTIAL_SECRET", &secret),
        ("OS_REGION_NAME", "RegionOne"),
    ];
    let cloud = cloud_config_from(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
    let settings = NovaSettings {
        pool: "private".into(),
        deployment: unique("appcred"),
        flavor: FLAVOR.into(),
        network: "none".into(),
        security_groups: Vec::new(),
        key_name: None,
    };
    let nova = NovaProvider::new(settings, cloud);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert!(runtime.block_on(nova.list()).unwrap().is_empty());
    // A fresh project's default quotas (10 instances, 20 vCPUs, 50 GiB) and flavor 1 (1 vCPU,
    // 512 MiB): instances bind, at 10.
    admin.set_instance_quota(&tenant.project_id, 3);
    let limits = runtime.block_on(nova.limits()).unwrap();
    assert_eq!((limits.max_instances, limits.in_use, limits.room), (Some(3), 0, Some(3)), "{limits:?}");
}
