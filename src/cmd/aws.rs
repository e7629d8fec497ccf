//! `skyburst aws bootstrap` (queues and buckets, idempotent) and `skyburst aws publish-worker`
//! (the release cloud workers install at boot).

use std::process::ExitCode;

use crate::cli::AwsCommand;
use crate::config::Config;

/// Runs an `aws` subcommand.
pub fn run(config: &Config, command: &AwsCommand) -> anyhow::Result<ExitCode> {
    #[cfg(feature = "aws")]
    {
        crate::app::runtime()?.block_on(async {
            match command {
                AwsCommand::Bootstrap => enabled::bootstrap(config).await,
                AwsCommand::PublishWorker(args) => enabled::publish_worker(config, args).await,
            }
        })?;
        Ok(ExitCode::SUCCESS)
    }
    #[cfg(not(feature = "aws"))]
    {
        let _ = (config, command);
        anyhow::bail!("`skyburst aws` needs a build with `--features aws`")
    }
}

#[cfg(feature = "aws")]
mod enabled {
    use std::collections::HashMap;

    use anyhow::Context;
    use aws_sdk_s3::types::{
        AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
        CreateBucketConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
        PublicAccessBlockConfiguration,
    };
    use aws_sdk_sqs::types::QueueAttributeName as A;
    use skyburst_providers::aws::AwsSession;
    use skyburst_providers::error_chain;

    use crate::cli::PublishWorkerArgs;
    use crate::config::{Config, QueueBackend, StoreBackend};
    use crate::queue::sqs::SqsQueues;
    use crate::store::s3::S3Store;

    /// SQS's longest retention: a dead letter waits 14 days for someone to look at it.
    const DLQ_RETENTION_SECONDS: u32 = 14 * 24 * 3600;

    pub(super) async fn bootstrap(config: &Config) -> anyhow::Result<()> {
        let session = crate::app::aws::session(config, "bootstrap").await?.context(
            "this config uses no AWS: set queue.backend = \"sqs\" and store.backend = \"s3\" (examples/configs/aws.toml)",
        )?;
        if config.queue.backend == QueueBackend::Sqs {
            queues(config, &session).await?;
        }
        if config.store.backend == StoreBackend::S3 {
            let s3 = S3Store::new(&session);
            let region = session.sdk.region().map(|r| r.to_string()).unwrap_or_default();
            let s = &config.store;
            // Validated: a whole number of days for S3.
            let days = s.retention_days as u32;
            bucket(&s3, &region, &s.input_bucket, Retention::Everything(days)).await?;
            bucket(&s3, &region, &s.output_bucket, Retention::Under("results/", days)).await?;
            let release = crate::boot::release_bucket(config);
            if release != s.input_bucket && release != s.output_bucket {
                bucket(&s3, &region, release, Retention::Forever).await?;
            }
        }
        Ok(())
    }

    async fn queues(config: &Config, session: &AwsSession) -> anyhow::Result<()> {
        let q = &config.queue;
        let sqs = SqsQueues::new(session);
        let dlq_name = format!("{}-dlq", q.requests);
        let attributes = HashMap::from([(A::MessageRetentionPeriod, DLQ_RETENTION_SECONDS.to_string())]);
        let (dlq, created) = sqs.ensure(&dlq_name, attributes).await?;
        say(&dlq_name, created, "dead-letter queue");
        let redrive = serde_json::json!({
            "deadLetterTargetArn": sqs.arn(&dlq).await?,
            "maxReceiveCount": q.max_receives.to_string(),
        });
        let attributes = HashMap::from([
            (A::VisibilityTimeout, q.visibility_timeout_seconds.to_string()),
            (A::ReceiveMessageWaitTimeSeconds, q.long_poll_seconds.to_string()),
            (A::RedrivePolicy, redrive.to_string()),
        ]);
        let (_, created) = sqs.ensure(&q.requests, attributes).await?;
        say(&q.requests, created, &format!("request queue, dead letters after {} receives", q.max_receives));
        Ok(())
    }

    /// Which objects of a bucket expire.
    enum Retention {
        /// Every object, after so many days (images).
        Everything(u32),
        /// Objects under a prefix (results, not control records).
        Under(&'static str, u32),
        /// None (releases).
        Forever,
    }

    /// Creates a bucket (private, public access blocked) and sets its lifecycle rules: the
    /// retention, and unfinished uploads aborted after one day.
    async fn bucket(s3: &S3Store, region: &str, name: &str, retention: Retention) -> anyhow::Result<()> {
        let client = s3.client();
        // Asked first: S3 in us-east-1 answers a repeated CreateBucket with success.
        let exists = match client.head_bucket().bucket(name).send().await {
            Ok(_) => true,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => false,
            Err(e) => anyhow::bail!("cannot look up bucket {name}: {}", error_chain(&e)),
        };
        let mut request = client.create_bucket().bucket(name);
        // us-east-1 takes no location constraint (and refuses one).
        if region != "us-east-1" && !region.is_empty() {
            let location = BucketLocationConstraint::from(region);
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder().location_constraint(location).build(),
            );
        }
        if !exists {
            request.send().await.map_err(|e| anyhow::anyhow!("cannot create bucket {name}: {}", error_chain(&e)))?;
        }
        let block = PublicAccessBlockConfiguration::builder()
            .block_public_acls(true)
            .ignore_public_acls(true)
            .block_public_policy(true)
            .restrict_public_buckets(true)
            .build();
        client
            .put_public_access_block()
            .bucket(name)
            .public_access_block_configuration(block)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot block public access to bucket {name}: {}", error_chain(&e)))?;
        let uploads = LifecycleRule::builder()
            .id("skyburst-abort-uploads")
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build())
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder().days_after_initiation(1).build(),
            )
            .build()?;
        let (expiring, what) = match retention {
            Retention::Everything(days) => (Some(("", days)), format!("objects expire after {days} days")),
            Retention::Under(prefix, days) => (Some((prefix, days)), format!("{prefix}* expire after {days} days")),
            Retention::Forever => (None, "nothing expires".to_string()),
        };
        let mut rules = vec![uploads];
        if let Some((prefix, days)) = expiring {
            let expire = LifecycleRule::builder()
                .id("skyburst-retention")
                .status(ExpirationStatus::Enabled)
                .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
                .expiration(LifecycleExpiration::builder().days(days as i32).build())
                .build()?;
            rules.insert(0, expire);
        }
        client
            .put_bucket_lifecycle_configuration()
            .bucket(name)
            .lifecycle_configuration(BucketLifecycleConfiguration::builder().set_rules(Some(rules)).build()?)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot set the lifecycle rule of bucket {name}: {}", error_chain(&e)))?;
        say(name, !exists, &format!("bucket, {what}"));
        Ok(())
    }

    fn say(name: &str, created: bool, what: &str) {
        let verb = if created { "created" } else { "exists, settings applied" };
        println!("{name}: {verb} ({what})");
    }

    pub(super) async fn publish_worker(config: &Config, args: &PublishWorkerArgs) -> anyhow::Result<()> {
        let binary = match &args.binary {
            Some(path) => path.clone(),
            None => std::env::current_exe().context("cannot find this program's path")?,
        };
        let store = crate::app::store(config, "publish-worker").await?;
        let release = crate::boot::publish(config, store.as_ref(), &binary, &config.detector.model_dir).await?;
        let bucket = crate::boot::release_bucket(config);
        println!("published release {} to {bucket}/releases/{}/:", release.version, release.version);
        for (path, sum) in &release.files {
            println!("  {sum}  {path}");
        }
        Ok(())
    }
}
