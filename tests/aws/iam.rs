//! The least-privilege IAM policies in `images/iam/`: each grants its part exactly the actions
//! of the AWS calls that part makes (recorded by `aws.call_log` during the end-to-end run), and
//! names the queues, buckets and deployment of `examples/configs/aws.toml`.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

/// The parts with a policy: (role in the call log, policy file).
const ROLES: [(&str, &str); 3] = [("serve", "frontend"), ("worker", "worker"), ("controller", "controller")];

/// Add-on policies: the front end's administration routes (`skyburst admin`).
const ADD_ONS: [&str; 1] = ["frontend-admin"];

/// Calls a part makes only on paths a short end-to-end run does not take.
const RARE: [(&str, &str, &str); 5] = [
    ("worker", "SQS:ChangeMessageVisibility", "extends a batch's visibility only after a third of the timeout"),
    ("worker", "SQS:SendMessage", "re-queues or dead-letters a job only when an attempt fails"),
    ("serve", "S3:ListObjectsV2", "lists old readiness stamps once a minute, from 5 s after start"),
    ("serve", "S3:DeleteObject", "removes a stored image only when its job cannot be queued"),
    ("worker", "S3:DeleteObject", "removes its heartbeat when it stops"),
];

/// The IAM actions one SDK call (`Service:Operation`, as the call log writes it) needs.
fn actions(call: &str) -> Vec<String> {
    let (service, operation) = call.split_once(':').unwrap_or_else(|| panic!("bad call {call:?}"));
    let service = service.to_lowercase();
    match (service.as_str(), operation) {
        ("s3", "ListObjectsV2") => vec!["s3:ListBucket".into()],
        ("s3", "HeadObject") => vec!["s3:GetObject".into()],
        // Tags in the launch request need CreateTags; an instance profile needs PassRole.
        ("ec2", "RunInstances") => vec!["ec2:RunInstances".into(), "ec2:CreateTags".into(), "iam:PassRole".into()],
        _ => vec![format!("{service}:{operation}")],
    }
}

fn policy(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("images/iam/{name}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn granted(policy: &Value) -> BTreeSet<String> {
    let statements = policy["Statement"].as_array().unwrap();
    statements.iter().flat_map(|s| s["Action"].as_array().unwrap()).map(|a| a.as_str().unwrap().to_string()).collect()
}

/// Compares each policy with the calls its part made (plus [`RARE`]). Called by the end-to-end
/// test with its call log.
pub fn check_policies_against(call_log: &str) {
    for (role, file) in ROLES {
        let mut calls: BTreeSet<&str> = call_log
            .lines()
            .filter_map(|line| line.split_once(' '))
            .filter(|(r, _)| *r == role)
            .map(|(_, call)| call)
            .collect();
        assert!(!calls.is_empty(), "no call of {role} was logged");
        calls.extend(RARE.iter().filter(|(r, _, _)| *r == role).map(|(_, call, _)| *call));
        let needed: BTreeSet<String> = calls.iter().flat_map(|c| actions(c)).collect();
        let granted = granted(&policy(file));
        let missing: Vec<_> = needed.difference(&granted).collect();
        let extra: Vec<_> = granted.difference(&needed).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "images/iam/{file}.json: missing {missing:?}, not needed {extra:?}"
        );
    }
}

/// Compares `frontend-admin.json` with the calls the front end made in the administration test:
/// with `frontend.json` it grants every one, and each of its actions is one of them.
pub fn check_admin_policy_against(call_log: &str) {
    let calls: BTreeSet<&str> = call_log
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(role, _)| *role == "serve")
        .map(|(_, call)| call)
        .collect();
    let needed: BTreeSet<String> = calls.iter().flat_map(|c| actions(c)).collect();
    let add_on = granted(&policy("frontend-admin"));
    let both: BTreeSet<String> = granted(&policy("frontend")).union(&add_on).cloned().collect();
    let missing: Vec<_> = needed.difference(&both).collect();
    let extra: Vec<_> = add_on.difference(&needed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "images/iam/frontend-admin.json: missing {missing:?}, not needed {extra:?} (calls: {calls:?})"
    );
}

/// Every statement allows named actions (no wildcards) on named resources, and the policies
/// name what the example config names.
#[test]
fn policies_are_explicit_and_match_the_example_config() {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs/aws.toml")).unwrap();
    let config: toml::Table = toml::from_str(&example).unwrap();
    let names = [
        config["queue"]["requests"].as_str().unwrap(),
        config["queue"]["responses_prefix"].as_str().unwrap(),
        config["store"]["input_bucket"].as_str().unwrap(),
        config["store"]["output_bucket"].as_str().unwrap(),
    ];
    let mut all = String::new();
    for file in ROLES.iter().map(|(_, file)| *file).chain(ADD_ONS) {
        let policy = policy(file);
        assert_eq!(policy["Version"], "2012-10-17");
        for statement in policy["Statement"].as_array().unwrap() {
            assert_eq!(statement["Effect"], "Allow", "{file}: {statement}");
            assert!(statement["Resource"].is_string() || statement["Resource"].is_array(), "{file}: {statement}");
            for action in statement["Action"].as_array().unwrap() {
                assert!(!action.as_str().unwrap().contains('*'), "{file}: no wildcard actions: {action}");
            }
        }
        all.push_str(&policy.to_string());
    }
    for name in names {
        assert!(all.contains(name), "no policy names {name}");
    }
    let deployment = config["controller"]["deployment"].as_str().unwrap();
    let controller = policy("controller").to_string();
    assert!(controller.contains(deployment), "terminations are limited to deployment {deployment}");
    assert!(granted(&policy("worker")).iter().all(|a| !a.starts_with("ec2:")), "workers launch nothing");
}
