//! The whole service on the emulated cloud, from a test copy of `examples/configs/aws.toml`
//! (cap 4): the front end on SQS and S3, the controller launching and terminating EC2
//! instances, and `skyburst dev fleet-agent` starting a worker for each instance from the
//! user-data it was launched with.

use std::time::Duration;

use skyburst_providers::Provider;

use crate::support::moto::{self, bootstrap_and_publish, config_file, endpoint, unique};
use crate::support::service::{one_at_a_time, Service};
use crate::support::{run, skyburst};

const IMAGES: usize = 30;

fn counter(metrics: &str, name: &str) -> f64 {
    metrics.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// 30 images: every one answered; instances launched, then terminated as the queue drains;
/// nothing left in the request queue; and each part's AWS calls match its IAM policy.
#[test]
fn thirty_images_on_the_emulated_cloud() {
    let _heavy = one_at_a_time();
    let endpoint = endpoint();
    let name = unique("e2e");
    let text = moto::aws_config(&endpoint, &name);
    bootstrap_and_publish(config_file(&text).path());
    let calls = tempfile::NamedTempFile::new().unwrap();
    let log = calls.path().to_str().unwrap();
    let mut service = Service::start_with_config(Some(&text), &[("AWS__CALL_LOG", log)]);
    let metrics_url = service.start_controller(&[]);
    service.start_fleet_agent();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config_copy = config_file(&text);
    let ec2 = moto::ec2_provider(&runtime, &endpoint, &text, 0);

    let jobs = service.post_images(IMAGES, "img");
    for (i, job) in jobs.iter().enumerate() {
        let answer = service.wait_for_job(job, Duration::from_secs(240));
        if i == 0 {
            // An instance was launched with exactly what `render-user-data` prints.
            let instance = answer["worker"].as_str().unwrap();
            let launched_with = runtime.block_on(ec2.user_data(instance)).unwrap();
            let (code, rendered, stderr) =
                run(skyburst().arg("--config").arg(config_copy.path()).args(["render-user-data", "--pool", "public"]));
            assert_eq!(code, 0, "{stderr}");
            assert_eq!(rendered, launched_with);
        }
        assert_eq!(answer["status"], "done", "{answer}");
        let labels: Vec<&str> =
            answer["result"]["objects"].as_array().unwrap().iter().map(|o| o["label"].as_str().unwrap()).collect();
        let expected = if i % 2 == 0 { "bus" } else { "tie" };
        assert!(labels.contains(&"person") && labels.contains(&expected), "{labels:?}");
        assert!(answer["worker"].as_str().unwrap().starts_with("i-"), "answered by an EC2 instance: {answer}");
        assert_eq!(answer["pool"], "public");
    }
    // A worker answers before it deletes the message (so a crash in between redelivers it, never
    // loses it): the last deletes land just after the last answers.
    service.wait_until(Duration::from_secs(15), |s| s.queued() == 0);

    // The queue is empty: the controller scales in to min 0 and terminates every instance. The
    // slo policy releases the last ones once no job has arrived for the pool's relaunch cost
    // (shutdown 30 s + boot 1 s + EC2's 60 s billing minimum: relaunching sooner costs more than
    // idling), then the checks over a tenth of it must agree: a minute on top for all that.
    let relaunch = Duration::from_secs(30 + 1 + 60);
    service.wait_until(relaunch + Duration::from_secs(60), |_| runtime.block_on(ec2.list()).unwrap().is_empty());
    let metrics = service.get_text(&metrics_url);
    let (launched, terminated) =
        (counter(&metrics, "skyburst_launches_total"), counter(&metrics, "skyburst_terminations_total"));
    assert!((1.0..=4.0).contains(&launched), "launched within the cap of 4: {metrics}");
    assert_eq!(terminated, launched, "every instance launched was terminated: {metrics}");

    drop(service);
    super::iam::check_policies_against(&std::fs::read_to_string(calls.path()).unwrap());
}
