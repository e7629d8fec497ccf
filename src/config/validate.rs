//! Range checks on a deserialized [`Config`]: pure (no I/O, no environment), collecting every
//! problem so an operator fixes them in one pass.

use super::{Config, DeviceKind, PoolConfig, ProviderKind, QueueBackend, StoreBackend};

/// Longest queue or bucket name; SQS allows 80 characters, S3 63.
const MAX_NAME: usize = 63;

/// Returns every out-of-range value, one line each naming the key and the accepted range.
pub fn validate(config: &Config) -> Result<(), Vec<String>> {
    let d = &config.detector;
    let mut problems = Vec::new();
    let mut check = |ok: bool, problem: String| {
        if !ok {
            problems.push(problem);
        }
    };
    check(d.threshold > 0.0 && d.threshold <= 1.0, format!("detector.threshold = {} must be in (0, 1]", d.threshold));
    check(d.nms_iou > 0.0 && d.nms_iou <= 1.0, format!("detector.nms_iou = {} must be in (0, 1]", d.nms_iou));
    check(d.max_pixels > 0, "detector.max_pixels must be positive".to_string());
    check((1..=256).contains(&d.threads), format!("detector.threads = {} must be in 1..=256", d.threads));
    check((1..=64).contains(&d.batch_size), format!("detector.batch_size = {} must be in 1..=64", d.batch_size));
    check(
        d.device == DeviceKind::Cpu || cfg!(feature = "cuda"),
        "detector.device = \"cuda\" needs a build with `--features cuda`".to_string(),
    );
    check(!d.model_dir.as_os_str().is_empty(), "detector.model_dir must not be empty".to_string());
    service(config, &mut check);
    fleet(config, &mut check);
    cloud(config, &mut check);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn service(config: &Config, check: &mut impl FnMut(bool, String)) {
    let (f, q, s, w) = (&config.frontend, &config.queue, &config.store, &config.worker);
    check(!f.bind.trim().is_empty(), "frontend.bind must be an address such as 127.0.0.1".into());
    check(
        (1..=300).contains(&f.wait_seconds),
        format!("frontend.wait_seconds = {} must be in 1..=300", f.wait_seconds),
    );
    check(
        (1024..=1 << 30).contains(&f.max_body_bytes),
        format!("frontend.max_body_bytes = {} must be in 1024..=1073741824", f.max_body_bytes),
    );
    check(
        f.body_grace_seconds.is_finite() && (0.5..=600.0).contains(&f.body_grace_seconds),
        format!("frontend.body_grace_seconds = {} must be in 0.5..=600", f.body_grace_seconds),
    );
    check(
        (256..=1 << 30).contains(&f.body_min_bytes_per_second),
        format!("frontend.body_min_bytes_per_second = {} must be in 256..=1073741824", f.body_min_bytes_per_second),
    );
    check(
        (1..=4096).contains(&f.max_file_name_bytes),
        format!("frontend.max_file_name_bytes = {} must be in 1..=4096", f.max_file_name_bytes),
    );
    check(
        (16..=65536).contains(&f.max_connections),
        format!("frontend.max_connections = {} must be in 16..=65536", f.max_connections),
    );
    check(
        (1..=65536).contains(&f.max_waiting),
        format!("frontend.max_waiting = {} must be in 1..=65536", f.max_waiting),
    );
    check(f.tokens.iter().all(|t| t.len() >= 16), "frontend.tokens: every token needs at least 16 characters".into());
    tls_pair("frontend.tls", &f.tls, check);
    check(
        (1..=43_200).contains(&q.visibility_timeout_seconds),
        format!("queue.visibility_timeout_seconds = {} must be in 1..=43200", q.visibility_timeout_seconds),
    );
    check((1..=1000).contains(&q.max_receives), format!("queue.max_receives = {} must be in 1..=1000", q.max_receives));
    check((1..=100).contains(&q.max_attempts), format!("queue.max_attempts = {} must be in 1..=100", q.max_attempts));
    check(
        (1..=14).contains(&q.retention_days),
        format!("queue.retention_days = {} must be in 1..=14", q.retention_days),
    );
    check(
        (1..=14).contains(&q.dead_letter_retention_days),
        format!("queue.dead_letter_retention_days = {} must be in 1..=14", q.dead_letter_retention_days),
    );
    check(
        (0.01..=3600.0).contains(&w.job_deadline_seconds),
        format!("worker.job_deadline_seconds = {} must be in 0.01..=3600", w.job_deadline_seconds),
    );
    check(
        (1..=20).contains(&q.long_poll_seconds),
        format!("queue.long_poll_seconds = {} must be in 1..=20", q.long_poll_seconds),
    );
    check(
        (1..=50).contains(&q.poll_interval_ms),
        format!("queue.poll_interval_ms = {} must be in 1..=50", q.poll_interval_ms),
    );
    check(
        (1..=10).contains(&w.jobs_per_receive),
        format!("worker.jobs_per_receive = {} must be in 1..=10", w.jobs_per_receive),
    );
    // Checked with the longest port: the default id is a resource name on any port.
    let instance_id = f.instance_id_on(u16::MAX);
    for (key, name) in [
        ("frontend.instance_id", &instance_id),
        ("queue.requests", &q.requests),
        ("queue.responses_prefix", &q.responses_prefix),
        ("store.input_bucket", &s.input_bucket),
        ("store.output_bucket", &s.output_bucket),
        ("worker.pool", &w.pool),
        ("controller.deployment", &config.controller.deployment),
    ] {
        check(
            is_resource_name(name),
            format!("{key} = {name:?} must be 1..={MAX_NAME} characters of a-z, 0-9 and '-', starting with a letter or digit"),
        );
    }
    check(!config.embedded.data_dir.as_os_str().is_empty(), "embedded.data_dir must not be empty".into());
    check(config.embedded.workers <= 64, format!("embedded.workers = {} must be in 0..=64", config.embedded.workers));
}

fn fleet(config: &Config, check: &mut impl FnMut(bool, String)) {
    let (sc, c, w) = (&config.scaling, &config.controller, &config.worker);
    if let Err(e) = skyburst_policies::Caps::try_new(sc.min, sc.max) {
        check(false, e.to_string());
    }
    check(sc.max <= 1000, format!("scaling.max = {} must be at most 1000", sc.max));
    check(sc.debounce_checks >= 1, "scaling.debounce_checks must be at least 1".into());
    check(sc.debounce_checks <= 100, format!("scaling.debounce_checks = {} must be at most 100", sc.debounce_checks));
    let positive = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && v > 0.0);
    check(positive(sc.target_per_instance), "scaling.target_per_instance must be positive".into());
    check(positive(sc.latency_objective_seconds), "scaling.latency_objective_seconds must be positive".into());
    check(positive(Some(sc.fallback_target)), "scaling.fallback_target must be positive".into());
    check(sc.max_launches_per_tick >= 1, "scaling.max_launches_per_tick must be at least 1".into());
    for (key, v) in [
        ("scaling.boot_timeout_seconds", sc.boot_timeout_seconds),
        ("scaling.heartbeat_timeout_seconds", sc.heartbeat_timeout_seconds),
        ("scaling.unavailable_grace_seconds", sc.unavailable_grace_seconds),
        ("controller.lease_seconds", c.lease_seconds),
    ] {
        check(v.is_finite() && v > 0.0, format!("{key} = {v} must be positive"));
    }
    check(
        (0.1..=300.0).contains(&c.tick_seconds),
        format!("controller.tick_seconds = {} must be in 0.1..=300", c.tick_seconds),
    );
    check(
        c.lease_seconds >= 2.0 * c.tick_seconds,
        format!(
            "controller.lease_seconds = {} must be at least two ticks ({} s)",
            c.lease_seconds,
            2.0 * c.tick_seconds
        ),
    );
    check(
        (0.1..=60.0).contains(&w.heartbeat_seconds),
        format!("worker.heartbeat_seconds = {} must be in 0.1..=60", w.heartbeat_seconds),
    );
    check(
        sc.heartbeat_timeout_seconds >= 2.0 * w.heartbeat_seconds,
        format!(
            "scaling.heartbeat_timeout_seconds = {} must be at least two heartbeats ({} s), or healthy workers look stuck",
            sc.heartbeat_timeout_seconds,
            2.0 * w.heartbeat_seconds
        ),
    );
    check(!c.metrics_bind.trim().is_empty(), "controller.metrics_bind must be an address such as 127.0.0.1".into());
    tls_pair("controller.tls", &c.tls, check);
    check(!config.pools.is_empty(), "pools: at least one [[pools]] entry is needed".into());
    let mut names = std::collections::BTreeSet::new();
    for p in &config.pools {
        check(
            is_resource_name(&p.name),
            format!("pools: name {:?} must be 1..={MAX_NAME} characters of a-z, 0-9 and '-'", p.name),
        );
        check(names.insert(&p.name), format!("pools: the name {:?} is used twice", p.name));
        check(p.quota <= 1000, format!("pools.{}.quota = {} must be at most 1000", p.name, p.quota));
        check(
            (1..=64).contains(&p.workers_per_instance),
            format!("pools.{}.workers_per_instance must be in 1..=64", p.name),
        );
        for (key, v) in [
            ("boot_seconds", p.boot_seconds),
            ("shutdown_seconds", p.shutdown_seconds),
            ("price_per_hour", p.price_per_hour),
            ("boot_delay_seconds", p.boot_delay_seconds),
        ] {
            check(v.is_finite() && v >= 0.0, format!("pools.{}.{key} = {v} must be zero or more", p.name));
        }
        for (key, v) in [
            ("billing_minimum_seconds", p.billing_minimum_seconds),
            ("billing_increment_seconds", p.billing_increment_seconds),
        ] {
            if let Some(v) = v {
                check((0.0..=86_400.0).contains(&v), format!("pools.{}.{key} = {v} must be in 0..=86400", p.name));
            }
        }
    }
    let sim = &config.simulate;
    check(
        sim.service_mean_seconds.is_finite() && sim.service_mean_seconds > 0.0,
        "simulate.service_mean_seconds must be positive".into(),
    );
    check(
        sim.service_sigma.is_finite() && sim.service_sigma >= 0.0,
        "simulate.service_sigma must be zero or more".into(),
    );
}

/// One minute, in days: the shortest retention of the embedded store (tests, soaks).
const MIN_RETENTION_DAYS: f64 = 1.0 / 1440.0;

fn cloud(config: &Config, check: &mut impl FnMut(bool, String)) {
    let a = &config.aws;
    for (key, v, range) in [
        ("operation_timeout_seconds", a.operation_timeout_seconds, 0.5..=120.0),
        ("attempt_timeout_seconds", a.attempt_timeout_seconds, 0.5..=60.0),
        ("connect_timeout_seconds", a.connect_timeout_seconds, 0.1..=30.0),
    ] {
        check(range.contains(&v), format!("aws.{key} = {v} must be in {}..={}", range.start(), range.end()));
    }
    check((1..=10).contains(&a.max_attempts), format!("aws.max_attempts = {} must be in 1..=10", a.max_attempts));
    check(
        a.endpoint_url.as_deref().is_none_or(|u| u.starts_with("http://") || u.starts_with("https://")),
        format!("aws.endpoint_url = {:?} must start with http:// or https://", a.endpoint_url.as_deref().unwrap_or("")),
    );
    check(a.region.as_deref().is_none_or(|r| !r.trim().is_empty()), "aws.region must not be empty when set".into());
    let days = config.store.retention_days;
    if config.store.backend == StoreBackend::S3 {
        check(
            (1.0..=3650.0).contains(&days) && days.fract() == 0.0,
            format!("store.retention_days = {days} must be a whole number of days in 1..=3650 for S3 (its lifecycle rules count days)"),
        );
    } else {
        check(
            (MIN_RETENTION_DAYS..=3650.0).contains(&days),
            format!(
                "store.retention_days = {days} must be in {MIN_RETENTION_DAYS:.4}..=3650 (one minute to ten years)"
            ),
        );
    }
    let b = &config.boot;
    check(!b.version.trim().is_empty(), "boot.version must not be empty".into());
    check(b.model_dir.is_absolute(), format!("boot.model_dir = {} must be an absolute path", b.model_dir.display()));
    if let Some(bucket) = &b.release_bucket {
        check(is_resource_name(bucket), format!("boot.release_bucket = {bucket:?} must be a bucket name"));
    }
    for pool in &config.pools {
        pool_settings(pool, check);
    }
    vending(config, check);
}

/// Nova workers reaching SQS or S3 need vended credentials: they have no instance role, and
/// long-lived keys never go into user-data.
fn vending(config: &Config, check: &mut impl FnMut(bool, String)) {
    let c = &config.credentials;
    check(
        (900..=43200).contains(&c.duration_seconds),
        format!("credentials.duration_seconds = {} must be in 900..=43200 (STS's bounds)", c.duration_seconds),
    );
    check(
        c.refresh_grace_seconds <= 600,
        format!("credentials.refresh_grace_seconds = {} must be in 0..=600", c.refresh_grace_seconds),
    );
    let on_aws = config.queue.backend == QueueBackend::Sqs || config.store.backend == StoreBackend::S3;
    if let Some(pool) = config.pools.iter().find(|p| p.provider == ProviderKind::Nova).filter(|_| on_aws) {
        for (key, set) in [("role_arn", c.role_arn.is_some()), ("url", c.url.is_some())] {
            check(
                set,
                format!(
                    "credentials.{key} must be set: workers of the nova pool {:?} reach SQS/S3 with credentials \
                     the controller vends (they have no instance role)",
                    pool.name
                ),
            );
        }
    }
    if let Some(arn) = &c.role_arn {
        check(
            arn.starts_with("arn:") && arn.contains(":role/"),
            format!("credentials.role_arn = {arn:?} is not a role ARN"),
        );
    }
    if let Some(url) = &c.url {
        check(
            url.starts_with("http://") || url.starts_with("https://"),
            format!("credentials.url = {url:?} must be an http(s) URL"),
        );
        check(
            !crate::tls::is_cleartext_off_loopback(url),
            format!(
                "credentials.url = {url:?} is plain HTTP off loopback: credentials would cross the network in \
                 cleartext. Serve the controller over TLS (controller.tls.cert and .key) and use https://"
            ),
        );
        check(
            c.controller_cert_sha256.is_none() || url.starts_with("https://"),
            format!(
                "credentials.controller_cert_sha256 pins a certificate, but credentials.url = {url:?} is not https://"
            ),
        );
    }
}

/// `[SECTION.tls]`: a certificate and its key, or neither.
fn tls_pair(section: &str, files: &crate::tls::TlsFiles, check: &mut impl FnMut(bool, String)) {
    check(
        files.cert.is_some() == files.key.is_some(),
        format!("{section}: set both cert and key (PEM files), or neither for plain HTTP"),
    );
}

/// Each provider's required settings are set, and none meant for another provider is.
fn pool_settings(p: &PoolConfig, check: &mut impl FnMut(bool, String)) {
    let name = &p.name;
    let required: &[(&str, bool)] = match p.provider {
        ProviderKind::Local => &[],
        ProviderKind::Ec2 => &[("image", p.image.is_empty()), ("flavor", p.flavor.is_empty())],
        ProviderKind::Nova => {
            &[("image", p.image.is_empty()), ("flavor", p.flavor.is_empty()), ("network", p.network.is_empty())]
        }
    };
    for (key, missing) in required {
        check(!missing, format!("pools.{name}.{key} must be set for a {:?} pool", p.provider).to_lowercase());
    }
    let foreign: &[(&str, bool)] = match p.provider {
        ProviderKind::Local => &[
            ("image", !p.image.is_empty()),
            ("flavor", !p.flavor.is_empty()),
            ("network", !p.network.is_empty()),
            ("subnets", !p.subnets.is_empty()),
            ("security_groups", !p.security_groups.is_empty()),
            ("key_name", p.key_name.is_some()),
            ("instance_profile", p.instance_profile.is_some()),
        ],
        ProviderKind::Ec2 => &[("network", !p.network.is_empty()), ("boot_delay_seconds", p.boot_delay_seconds > 0.0)],
        ProviderKind::Nova => &[
            ("subnets", !p.subnets.is_empty()),
            ("instance_profile", p.instance_profile.is_some()),
            ("boot_delay_seconds", p.boot_delay_seconds > 0.0),
        ],
    };
    for (key, set) in foreign {
        check(!set, format!("pools.{name}.{key} does not apply to a {:?} pool; remove it", p.provider).to_lowercase());
    }
    check(
        (8..=1024).contains(&p.root_volume_gb),
        format!("pools.{name}.root_volume_gb = {} must be in 8..=1024", p.root_volume_gb),
    );
}

/// A name valid as an SQS queue, an S3 bucket, a file name and a tag value alike.
pub fn is_resource_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}
