//! Each adapter against moto: SQS visibility, redelivery, dead letters and depth; S3 round
//! trips and conditional writes; EC2 launch, list by tag and state, retried launches, terminate.

use std::collections::BTreeMap;
use std::time::Duration;

use skyburst::queue::sqs::SqsQueues;
use skyburst::queue::{Queue, QueueDepth, QueueError};
use skyburst::store::s3::S3Store;
use skyburst::store::{ObjectStore, StoreError};
use skyburst_providers::ec2::{Ec2Provider, Ec2Settings};
use skyburst_providers::{InstanceState, LaunchSpec, Provider, TAG_DEPLOYMENT, TAG_LAUNCH_ID, TAG_POOL};

use crate::support::moto::{self, bootstrap_and_publish, config_file, ec2_query, endpoint, unique, AMI};
use crate::support::{run, skyburst};

const NOW: Duration = Duration::ZERO;

/// `aws bootstrap` creates the queues with their redrive policy; the request queue redelivers
/// after the visibility timeout with a growing receive count, dead-letters after
/// `max_receives`, and reports its depth; a second bootstrap changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_redelivers_dead_letters_and_counts() {
    let endpoint = endpoint();
    let name = unique("sqs");
    let text = moto::aws_config(&endpoint, &name).replace("max_receives = 10", "max_receives = 2");
    assert!(text.contains("max_receives = 2"), "the example's max_receives changed: update this test");
    let file = config_file(&text);
    bootstrap_and_publish(file.path());
    let (code, stdout, stderr) = run(skyburst().arg("--config").arg(file.path()).args(["aws", "bootstrap"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("{name}-requests: exists")), "a second bootstrap finds everything: {stdout}");

    let sqs = SqsQueues::new(&moto::session(&endpoint).await);
    let jobs = sqs.queue(&format!("{name}-requests"));
    let second = Duration::from_secs(1);
    let id = jobs.send("poison", NOW).await.unwrap();
    jobs.send("later", Duration::from_secs(30)).await.unwrap();
    assert_eq!(jobs.depth().await.unwrap(), QueueDepth { visible: 1, in_flight: 0, delayed: 1 });

    let first = jobs.receive(10, second, second).await.unwrap();
    assert_eq!((first.len(), first[0].message_id.as_str(), first[0].receive_count), (1, id.as_str(), 1));
    assert!(jobs.receive(10, Duration::ZERO, second).await.unwrap().is_empty(), "hidden while in flight");
    assert_eq!(jobs.depth().await.unwrap(), QueueDepth { visible: 0, in_flight: 1, delayed: 1 });

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let again = jobs.receive(10, second, second).await.unwrap();
    assert_eq!((again[0].message_id.as_str(), again[0].receive_count), (id.as_str(), 2), "redelivered");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(jobs.receive(10, second, second).await.unwrap().is_empty(), "a third receive dead-letters it");
    let dead = sqs.queue(&format!("{name}-requests-dlq")).receive(10, second, second).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
}

/// Extending visibility keeps a message hidden past its timeout; a deleted message's receipt
/// is stale; deleting twice succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_extends_visibility_and_spots_stale_receipts() {
    let endpoint = endpoint();
    let sqs = SqsQueues::new(&moto::session(&endpoint).await);
    let name = unique("vis");
    let queue = sqs.create(&name, Default::default()).await.unwrap();
    queue.send("job", NOW).await.unwrap();
    let held = queue.receive(1, Duration::from_secs(1), Duration::from_secs(1)).await.unwrap().remove(0);
    queue.extend_visibility(&held.receipt, Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(queue.receive(1, Duration::ZERO, Duration::from_secs(1)).await.unwrap().is_empty(), "still hidden");
    queue.delete(&held.receipt).await.unwrap();
    queue.delete(&held.receipt).await.unwrap();
    let stale = queue.extend_visibility(&held.receipt, Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(stale, QueueError::StaleReceipt { .. }), "{stale}");
    assert_eq!(queue.depth().await.unwrap(), QueueDepth::default());
    let missing = sqs.queue(&unique("never-created")).depth().await.unwrap_err();
    assert!(missing.to_string().contains("skyburst aws bootstrap"), "{missing}");
}

/// Objects round-trip with their size; lists are sorted and scoped by prefix; a missing key is
/// `NotFound`; `swap` writes only over what it expects (S3's conditional writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_round_trips_and_swaps_conditionally() {
    let endpoint = endpoint();
    let name = unique("s3");
    bootstrap_and_publish(config_file(&moto::aws_config(&endpoint, &name)).path());
    let store = S3Store::new(&moto::session(&endpoint).await);
    let bucket = format!("{name}-output");
    let image = vec![7u8; 6 << 20];
    store.put(&bucket, "images/b", image.clone()).await.unwrap();
    store.put(&bucket, "images/a", b"small".to_vec()).await.unwrap();
    store.put(&bucket, "results/a.json", b"{}".to_vec()).await.unwrap();
    assert_eq!(store.get(&bucket, "images/b").await.unwrap(), image, "a 6 MiB object round-trips");
    assert_eq!(store.head(&bucket, "images/b").await.unwrap().size, 6 << 20);
    let keys: Vec<String> = store.list(&bucket, "images/").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys, ["images/a", "images/b"]);
    store.delete(&bucket, "images/a").await.unwrap();
    store.delete(&bucket, "images/a").await.unwrap();
    assert!(matches!(store.get(&bucket, "images/a").await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.head(&bucket, "images/a").await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.get(&bucket, "../escape").await, Err(StoreError::InvalidKey { .. })));

    let lease = "control/lease";
    assert!(store.swap(&bucket, lease, None, b"one".to_vec()).await.unwrap(), "created when absent");
    assert!(!store.swap(&bucket, lease, None, b"two".to_vec()).await.unwrap(), "not over an existing one");
    assert!(!store.swap(&bucket, lease, Some(b"zero".to_vec()), b"two".to_vec()).await.unwrap(), "not over another");
    assert!(store.swap(&bucket, lease, Some(b"one".to_vec()), b"two".to_vec()).await.unwrap(), "over the expected");
    assert_eq!(store.get(&bucket, lease).await.unwrap(), b"two");
    let gone = store.get(&unique("no-such-bucket"), "k").await.unwrap_err();
    assert!(gone.to_string().contains("skyburst aws bootstrap"), "{gone}");
}

fn provider(session: &skyburst_providers::aws::AwsSession, deployment: &str) -> Ec2Provider {
    let settings = Ec2Settings {
        pool: "public".into(),
        deployment: deployment.into(),
        subnets: Vec::new(),
        security_groups: Vec::new(),
        key_name: None,
        instance_profile: None,
        root_volume_gb: 12,
    };
    Ec2Provider::new(settings, session)
}

/// A launch starts tagged instances with IMDSv2 required, an encrypted tagged root volume and
/// the user-data; a retry with the same launch id starts nothing; `list` sees only this
/// deployment's pool and drops terminated instances; terminating twice succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_launches_lists_retries_and_terminates() {
    let endpoint = endpoint();
    let session = moto::session(&endpoint).await;
    let deployment = unique("ec2");
    let ec2 = provider(&session, &deployment);
    let tags =
        BTreeMap::from([(TAG_DEPLOYMENT.to_string(), deployment.clone()), (TAG_POOL.to_string(), "public".into())]);
    let spec = LaunchSpec {
        image: AMI.into(),
        flavor: "t3.medium".into(),
        network: String::new(),
        user_data: "#cloud-config\nruncmd: [[echo, hi]]\n".into(),
        tags,
        launch_id: unique("launch"),
        instance_tokens: Vec::new(),
    };
    let launched = ec2.launch(&spec, 2).await.unwrap();
    assert_eq!(launched.len(), 2);
    let retried = ec2.launch(&spec, 2).await.unwrap();
    let ids = |list: &[skyburst_providers::Instance]| {
        let mut ids: Vec<String> = list.iter().map(|i| i.id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&retried), ids(&launched), "the same launch id starts nothing new");
    let listed = ec2.list().await.unwrap();
    assert_eq!(ids(&listed), ids(&launched));
    for instance in &listed {
        assert_eq!(instance.state, InstanceState::Running, "moto has no pending phase");
        assert_eq!(instance.tags[TAG_LAUNCH_ID], spec.launch_id);
        assert_eq!(instance.tags[TAG_DEPLOYMENT], deployment);
        assert!(instance.launched_at_ms > 0);
    }
    assert_eq!(ec2.user_data(&listed[0].id).await.unwrap(), spec.user_data, "user-data round-trips");
    assert!(provider(&session, &unique("other")).list().await.unwrap().is_empty(), "scoped by deployment");

    let described = ec2_query(&endpoint, &[("Action", "DescribeInstances"), ("InstanceId.1", &listed[0].id)]).await;
    assert!(described.contains("<httpTokens>required</httpTokens>"), "IMDSv2 required: {described}");
    let volumes = ec2_query(
        &endpoint,
        &[
            ("Action", "DescribeVolumes"),
            ("Filter.1.Name", "tag:skyburst:launch-id"),
            ("Filter.1.Value.1", &spec.launch_id),
        ],
    )
    .await;
    assert_eq!(volumes.matches("<encrypted>true</encrypted>").count(), 2, "encrypted, tagged root volumes: {volumes}");
    assert_eq!(volumes.matches("<size>12</size>").count(), 2, "{volumes}");

    ec2.terminate(&listed[0].id).await.unwrap();
    ec2.terminate(&listed[0].id).await.unwrap();
    let left = ec2.list().await.unwrap();
    assert_eq!(ids(&left), [listed[1].id.clone()]);
    assert_eq!(ec2.limits().await.unwrap().in_use, 1);
    ec2.terminate(&listed[1].id).await.unwrap();
}

/// An AMI the region does not have is refused before anything is launched, with an error that
/// names it and the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_reports_a_bad_image_as_invalid() {
    let endpoint = endpoint();
    let session = moto::session(&endpoint).await;
    let ec2 = provider(&session, &unique("bad"));
    let spec = LaunchSpec {
        image: "ami-00000000".into(),
        flavor: "t3.micro".into(),
        launch_id: unique("l"),
        ..Default::default()
    };
    let err = ec2.launch(&spec, 1).await.unwrap_err();
    assert_eq!(err.kind(), "invalid", "{err}");
    assert!(err.to_string().contains("ami-00000000") && err.to_string().contains("public"), "{err}");
}
