//! What a cloud worker receives at boot: the cloud-init user-data rendered from
//! `images/cloud-init/worker.yaml` (the worker's config, the pinned release, the install script
//! and the systemd unit), and the release it pins: `releases/<version>/` in the release bucket,
//! published with a manifest of sha256 sums by `scripts/publish-worker.sh`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{
    AwsConfig, Config, CredentialsConfig, DetectorConfig, PoolConfig, QueueConfig, StoreConfig, WorkerConfig,
};
use crate::store::ObjectStore;

const TEMPLATE: &str = include_str!("../images/cloud-init/worker.yaml");
const INSTALL_SCRIPT: &str = include_str!("../images/boot/install-worker.sh");
const SYSTEMD_UNIT: &str = include_str!("../images/systemd/skyburst-worker.service");

/// Where the worker's config is written on the instance (the fleet agent reads it back).
pub const WORKER_CONFIG_PATH: &str = "/etc/skyburst/worker.toml";
/// The model files a release carries, from `detector.model_dir`.
pub const MODEL_FILES: [&str; 3] = ["yolov3-tiny.cfg", "yolov3-tiny.weights", "coco.names"];

/// `releases/<version>/manifest.json`: every file of a release with its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// The release's version.
    pub version: String,
    /// Path inside the release (`skyburst`, `models/yolov3-tiny.weights`, ...) → sha256, hex.
    pub files: BTreeMap<String, String>,
}

/// The key of a file of a release.
pub fn release_key(version: &str, path: &str) -> String {
    format!("releases/{version}/{path}")
}

/// The release bucket: `boot.release_bucket`, else the output bucket.
pub fn release_bucket(config: &Config) -> &str {
    config.boot.release_bucket.as_deref().unwrap_or(&config.store.output_bucket)
}

/// Reads the manifest of `boot.version`.
pub async fn fetch_release(config: &Config, store: &dyn ObjectStore) -> anyhow::Result<Release> {
    let (bucket, version) = (release_bucket(config), &config.boot.version);
    let key = release_key(version, "manifest.json");
    let bytes = store.get(bucket, &key).await.with_context(|| {
        format!("cannot read release {version} ({bucket}/{key}); publish it first with scripts/publish-worker.sh")
    })?;
    let release: Release =
        serde_json::from_slice(&bytes).with_context(|| format!("{bucket}/{key} is not a release manifest"))?;
    anyhow::ensure!(release.version == *version, "{bucket}/{key} describes version {}", release.version);
    Ok(release)
}

/// Uploads the binary and the model files, then the manifest (last, so a manifest never names a
/// file that is not there yet).
pub async fn publish(
    config: &Config,
    store: &dyn ObjectStore,
    binary: &Path,
    model_dir: &Path,
) -> anyhow::Result<Release> {
    let mut files = vec![("skyburst".to_string(), binary.to_path_buf())];
    files.extend(MODEL_FILES.iter().map(|f| (format!("models/{f}"), model_dir.join(f))));
    let (bucket, version) = (release_bucket(config), &config.boot.version);
    let mut release = Release { version: version.clone(), files: BTreeMap::new() };
    for (path, file) in files {
        let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let sum = hex(&Sha256::digest(&bytes));
        store
            .put(bucket, &release_key(version, &path), bytes)
            .await
            .with_context(|| format!("cannot upload {} to {bucket}", file.display()))?;
        release.files.insert(path, sum);
    }
    let manifest = serde_json::to_vec_pretty(&release).expect("serializes");
    store.put(bucket, &release_key(version, "manifest.json"), manifest).await.context("cannot upload the manifest")?;
    Ok(release)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sections of the config a worker on an instance needs.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerBootConfig {
    detector: DetectorConfig,
    queue: QueueConfig,
    store: StoreConfig,
    worker: WorkerConfig,
    aws: AwsConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    credentials: Option<CredentialsConfig>,
}

/// The config file a worker of `pool` runs with: this deployment's queue, store, detector and
/// AWS settings, with the pool's name and the instance's model directory.
pub fn worker_config(config: &Config, pool: &PoolConfig) -> String {
    let mut boot = WorkerBootConfig {
        detector: config.detector.clone(),
        queue: config.queue.clone(),
        store: config.store.clone(),
        worker: config.worker.clone(),
        aws: config.aws.clone(),
        // Nova workers have no instance role: the controller vends their credentials for the
        // one-time token each server's user-data gets in place of the placeholder.
        credentials: config.credentials.vended_to(pool).then(|| CredentialsConfig {
            url: config.credentials.url.clone(),
            controller_cert_sha256: config.credentials.controller_cert_sha256,
            token: Some(skyburst_providers::TOKEN_PLACEHOLDER.into()),
            ..CredentialsConfig::default()
        }),
    };
    boot.detector.model_dir = config.boot.model_dir.clone();
    boot.worker.pool = pool.name.clone();
    // A path on the controller's machine; an operator enables it on workers explicitly.
    boot.aws.call_log = None;
    let body = toml::to_string(&boot).expect("the config serializes to TOML");
    format!("# Skyburst worker of pool {} (rendered by skyburst render-user-data).\n{body}", pool.name)
}

/// What to do when [`pin_controller_certificate`] cannot read the certificate.
pub const PIN_HELP: &str = "cannot pin controller.tls.cert, whose SHA-256 Nova workers are given (they accept \
                            that certificate only): run where the certificate is, or set \
                            credentials.controller_cert_sha256";

/// `config` with `credentials.controller_cert_sha256` filled in when workers reach the
/// controller over HTTPS and no pin is set: the pin rendered into Nova workers' config, so they
/// accept the controller's own certificate and no other. It is `served`, the fingerprint of the
/// certificate the controller serves, or else that of the file `controller.tls.cert`.
pub fn pin_controller_certificate(
    config: &Config,
    served: Option<crate::tls::Pin>,
) -> Result<Config, crate::tls::TlsError> {
    let mut pinned = config.clone();
    let c = &mut pinned.credentials;
    let https = c.url.as_deref().is_some_and(|url| url.starts_with("https://"));
    if let (true, None, Some(cert)) = (https, c.controller_cert_sha256, &config.controller.tls.cert) {
        c.controller_cert_sha256 = Some(match served {
            Some(pin) => pin,
            None => crate::tls::file_fingerprint(cert)?,
        });
    }
    Ok(pinned)
}

/// The user-data an instance of `pool` is launched with.
pub fn render_user_data(config: &Config, pool: &PoolConfig, release: &Release) -> String {
    let env = [
        ("RELEASE_BUCKET", release_bucket(config).to_string()),
        ("RELEASE_VERSION", release.version.clone()),
        ("RELEASE_ENDPOINT", config.aws.endpoint_url.clone().unwrap_or_default()),
        ("RELEASE_REGION", config.aws.region.clone().unwrap_or_default()),
        ("MODEL_DIR", config.boot.model_dir.display().to_string()),
    ];
    let release_env: String = env.iter().map(|(k, v)| format!("{k}={}\n", shell_quote(v))).collect();
    let sums: String = release
        .files
        .iter()
        .filter(|(path, _)| path.as_str() != "manifest.json")
        .map(|(path, sum)| format!("{sum}  {path}\n"))
        .collect();
    let files = [
        ("worker_config", worker_config(config, pool)),
        ("release_env", release_env),
        ("release_sums", sums),
        ("install_script", INSTALL_SCRIPT.to_string()),
        ("systemd_unit", SYSTEMD_UNIT.to_string()),
    ];
    fill(TEMPLATE, &files)
}

/// Replaces each line `<indent>{{name}}` with the named text, every line at `<indent>` (a YAML
/// block scalar's body).
fn fill(template: &str, files: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() * 4);
    for line in template.lines() {
        let trimmed = line.trim_start();
        let name = trimmed.strip_prefix("{{").and_then(|rest| rest.strip_suffix("}}"));
        match name.and_then(|n| files.iter().find(|(f, _)| *f == n)) {
            Some((_, text)) => {
                let indent = &line[..line.len() - trimmed.len()];
                for text_line in text.lines() {
                    if text_line.is_empty() {
                        out.push('\n');
                    } else {
                        out.push_str(indent);
                        out.push_str(text_line);
                        out.push('\n');
                    }
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Single-quotes a value for a shell `.` file.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The worker config written by user-data (the `write_files` entry at [`WORKER_CONFIG_PATH`]).
#[cfg(feature = "dev-tools")]
pub fn worker_config_from_user_data(user_data: &str) -> anyhow::Result<String> {
    #[derive(Deserialize)]
    struct CloudConfig {
        #[serde(default)]
        write_files: Vec<WriteFile>,
    }
    #[derive(Deserialize)]
    struct WriteFile {
        path: String,
        #[serde(default)]
        content: String,
    }
    anyhow::ensure!(user_data.starts_with("#cloud-config"), "the user-data is not a #cloud-config document");
    let parsed: CloudConfig = serde_yaml_ng::from_str(user_data).context("the user-data is not valid YAML")?;
    parsed
        .write_files
        .into_iter()
        .find(|f| f.path == WORKER_CONFIG_PATH)
        .map(|f| f.content)
        .with_context(|| format!("the user-data writes no {WORKER_CONFIG_PATH}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;

    fn ec2_pool() -> PoolConfig {
        PoolConfig {
            name: "public".into(),
            provider: ProviderKind::Ec2,
            image: "ami-12c6146b".into(),
            flavor: "t3.medium".into(),
            ..PoolConfig::local_default()
        }
    }

    fn release() -> Release {
        let files = [("skyburst", "ab"), ("models/yolov3-tiny.weights", "cd"), ("models/coco.names", "ef")];
        Release { version: "1.2.3".into(), files: files.iter().map(|(p, s)| (p.to_string(), s.to_string())).collect() }
    }

    #[test]
    fn the_worker_config_is_the_deployments_with_the_pool_and_the_instance_model_dir() {
        let mut config = Config::default();
        config.queue.requests = "jobs".into();
        config.aws.endpoint_url = Some("http://10.0.0.5:5000".into());
        config.aws.call_log = Some("/tmp/calls".into());
        config.frontend.tokens = vec!["a-secret-token-of-16".into()];
        let text = worker_config(&config, &ec2_pool());
        let parsed: WorkerBootConfig = toml::from_str(&text).unwrap();
        assert_eq!(parsed.worker.pool, "public");
        assert_eq!(parsed.queue.requests, "jobs");
        assert_eq!(parsed.detector.model_dir, Path::new("/var/lib/skyburst/models"));
        assert_eq!(parsed.aws.endpoint_url.as_deref(), Some("http://10.0.0.5:5000"));
        assert_eq!(parsed.aws.call_log, None);
        assert!(!text.contains("a-secret-token"), "front-end tokens never reach a worker");
    }

    /// A Nova worker's config carries the endpoint and the token placeholder (each server's
    /// own token replaces it at launch), never the role; an EC2 worker's carries neither.
    #[test]
    fn nova_workers_get_the_vending_endpoint_and_a_token_placeholder() {
        let mut config = Config::default();
        config.credentials.role_arn = Some("arn:aws:iam::1:role/nova-worker".into());
        config.credentials.url = Some("http://10.0.0.5:9464/v1/credentials".into());
        let nova = PoolConfig { name: "private".into(), provider: ProviderKind::Nova, ..ec2_pool() };
        let text = worker_config(&config, &nova);
        let parsed: Config = toml::from_str(&text).unwrap();
        assert_eq!(parsed.credentials.url, config.credentials.url);
        assert_eq!(parsed.credentials.token.as_deref(), Some(skyburst_providers::TOKEN_PLACEHOLDER));
        assert_eq!(parsed.credentials.role_arn, None, "{text}");
        assert!(!worker_config(&config, &ec2_pool()).contains("[credentials]"));
    }

    #[test]
    fn placeholders_take_their_column_and_unknown_lines_stay() {
        let filled = fill("a:\n  b: |\n    {{x}}\n  {{unknown}}\n", &[("x", "one\n\ntwo\n".into())]);
        assert_eq!(filled, "a:\n  b: |\n    one\n\n    two\n  {{unknown}}\n");
    }

    #[test]
    fn user_data_pins_the_release_and_leaves_no_placeholder() {
        let config = Config::default();
        let text = render_user_data(&config, &ec2_pool(), &release());
        assert!(text.starts_with("#cloud-config\n"));
        assert!(!text.contains("{{"), "a placeholder was left:\n{text}");
        assert!(text.contains("ab  skyburst\n") && text.contains("cd  models/yolov3-tiny.weights\n"));
        assert!(text.contains("RELEASE_VERSION='1.2.3'"));
        assert!(text.contains("ExecStart=/bin/sh -c 'exec /usr/local/bin/skyburst --config /etc/skyburst/worker.toml"));
    }

    #[cfg(feature = "dev-tools")]
    #[test]
    fn the_worker_config_reads_back_from_the_user_data() {
        let config = Config::default();
        let pool = ec2_pool();
        let text = render_user_data(&config, &pool, &release());
        assert_eq!(worker_config_from_user_data(&text).unwrap(), worker_config(&config, &pool));
        assert!(worker_config_from_user_data("#!/bin/sh\necho hi\n").is_err());
    }

    #[test]
    fn values_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
