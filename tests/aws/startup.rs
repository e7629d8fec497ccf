//! Start-up against AWS: missing credentials and an unreachable endpoint are clear errors
//! within seconds, naming what was tried; nothing hangs.

use std::time::{Duration, Instant};

use crate::support::moto::{aws_config, config_file, unique};
use crate::support::{run, skyburst};

/// With no credentials anywhere, `serve`, `worker` and `controller` stop at once and list every
/// source the SDK's chain tried (the instance-metadata probe is bounded).
#[test]
fn missing_credentials_name_every_source_tried() {
    let home = tempfile::tempdir().unwrap();
    let file = config_file(&aws_config("http://127.0.0.1:9", &unique("nocreds")));
    for command in ["serve", "worker", "controller"] {
        let mut skyburst = skyburst();
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
            skyburst.env_remove(key);
        }
        skyburst.env("HOME", home.path()).arg("--config").arg(file.path()).arg(command);
        let started = Instant::now();
        let (code, _, stderr) = run(&mut skyburst);
        assert_ne!(code, 0, "{command} started without credentials");
        assert!(started.elapsed() < Duration::from_secs(15), "{command} took {:?}", started.elapsed());
        for source in ["no AWS credentials", "AWS_ACCESS_KEY_ID", "~/.aws/credentials", "instance metadata"] {
            assert!(stderr.contains(source), "{command}: {source:?} missing from {stderr}");
        }
    }
}

/// An endpoint where nothing listens: each part exits with an error naming it, after the
/// configured retries, well within its timeouts.
#[test]
fn an_unreachable_endpoint_is_named() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{closed}");
    let file = config_file(&aws_config(&endpoint, &unique("unreachable")));
    for command in ["serve", "worker", "controller"] {
        let started = Instant::now();
        let (code, _, stderr) = run(skyburst().arg("--config").arg(file.path()).arg(command));
        assert_ne!(code, 0, "{command} started against {endpoint}");
        assert!(stderr.contains(&endpoint), "{command}: the endpoint is named: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(20), "{command} took {:?}", started.elapsed());
    }
}
