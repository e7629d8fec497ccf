//! The session policy of vended credentials: `images/iam/worker.json` (the worker's
//! least-privilege policy) with this deployment's queue and bucket names. STS grants the
//! intersection of the role's policy and this one, so a role shared by several deployments
//! still reaches only this deployment's queues and buckets.

use serde_json::{json, Value};

use crate::config::Config;

/// The worker's policy for `config`'s queues and buckets.
pub fn worker_session_policy(config: &Config) -> Value {
    let (q, s) = (&config.queue, &config.store);
    let statement = |sid: &str, actions: &[&str], resource: Value| json!({"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resource});
    json!({
        "Version": "2012-10-17",
        "Statement": [
            statement(
                "TakeJobs",
                &["sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"],
                json!(format!("arn:aws:sqs:*:*:{}", q.requests)),
            ),
            statement(
                "RetryAndDeadLetter",
                &["sqs:GetQueueUrl", "sqs:SendMessage"],
                json!([format!("arn:aws:sqs:*:*:{}", q.requests), format!("arn:aws:sqs:*:*:{}-dlq", q.requests)]),
            ),
            statement("Answer", &["sqs:GetQueueUrl", "sqs:SendMessage"], json!(format!("arn:aws:sqs:*:*:{}-*", q.responses_prefix))),
            statement("ReadImages", &["s3:GetObject"], json!(format!("arn:aws:s3:::{}/images/*", s.input_bucket))),
            statement("WriteResults", &["s3:PutObject"], json!(format!("arn:aws:s3:::{}/results/*", s.output_bucket))),
            statement(
                "HeartbeatsAndDrainRequests",
                &["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
                json!([
                    format!("arn:aws:s3:::{}/control/heartbeats/*", s.output_bucket),
                    format!("arn:aws:s3:::{}/control/drain/*", s.output_bucket),
                ]),
            ),
        ]
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The session policy is `images/iam/worker.json` (written for `examples/configs/aws.toml`)
    /// statement for statement, with the config's names: the two cannot drift apart.
    #[test]
    fn the_session_policy_is_the_workers_iam_policy_for_this_deployment() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = Config::load_with_env(Some(&root.join("examples/configs/aws.toml")), Vec::new()).unwrap();
        let file: Value = serde_json::from_slice(&std::fs::read(root.join("images/iam/worker.json")).unwrap()).unwrap();
        assert_eq!(worker_session_policy(&config), file);

        let mut other = config.clone();
        other.queue.requests = "other-requests".into();
        other.store.output_bucket = "other-output".into();
        let text = worker_session_policy(&other).to_string();
        assert!(text.contains(":other-requests\"") && text.contains(":::other-output/results/*"), "{text}");
        assert!(!text.contains(&config.queue.requests), "{text}");
    }
}
