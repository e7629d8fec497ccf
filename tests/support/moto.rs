//! The AWS emulator the AWS tests run against: the moto server scripts/test.sh starts once per
//! run (`MOTO_ENDPOINT`), or a private one a test may freeze. Every test uses its own queue,
//! bucket and deployment names, so tests share the server without seeing each other.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skyburst_providers::aws::{AwsSession, AwsSettings};

/// One of moto's built-in AMIs in us-east-1 (Ubuntu, root device `/dev/sda1`).
pub const AMI: &str = "ami-1e749f67";

/// The shared moto server's URL. A missing server is a failure with the command that starts one.
pub fn endpoint() -> String {
    let credentials = std::env::var("AWS_ACCESS_KEY_ID").is_ok() && std::env::var("AWS_SECRET_ACCESS_KEY").is_ok();
    match std::env::var("MOTO_ENDPOINT") {
        Ok(url) if credentials => url,
        _ => panic!(
            "the AWS tests need a moto server and fake credentials: run scripts/test.sh, or \
             `eval \"$(scripts/moto-server.sh)\"` first (it sets MOTO_ENDPOINT and AWS_* test values)"
        ),
    }
}

/// A name no other test uses: lowercase letters, digits and '-', valid for queues and buckets.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// An SDK session on `endpoint`, with the test process's fake credentials.
pub async fn session(endpoint: &str) -> AwsSession {
    let settings = AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.into()),
        operation_timeout: Duration::from_secs(20),
        attempt_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        max_attempts: 3,
        call_log: None,
        role: "test".into(),
        credentials: None,
    };
    AwsSession::load(&settings).await.expect("test credentials are in the environment")
}

/// `examples/configs/<example>` with the test knobs every cloud test shares: fresh queue,
/// bucket and deployment names under `name`, moto at `endpoint`, cap 4, tick 0.5 s, visibility
/// 2 s and a 1 s long poll (as `Service` sets them).
pub fn test_config(example: &str, endpoint: &str, name: &str) -> toml::Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs").join(example);
    let mut config: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let text = |s: &str| toml::Value::String(s.into());
    let settings: [(&str, &str, toml::Value); 16] = [
        ("queue", "requests", text(&format!("{name}-requests"))),
        ("queue", "responses_prefix", text(&format!("{name}-responses"))),
        ("queue", "visibility_timeout_seconds", 2.into()),
        ("queue", "long_poll_seconds", 1.into()),
        ("store", "input_bucket", text(&format!("{name}-input"))),
        ("store", "output_bucket", text(&format!("{name}-output"))),
        ("aws", "region", text("us-east-1")),
        ("aws", "endpoint_url", text(endpoint)),
        ("detector", "model_dir", text(&super::model_dir().display().to_string())),
        ("scaling", "max", 4.into()),
        ("scaling", "debounce_checks", 2.into()),
        ("controller", "deployment", text(name)),
        ("controller", "tick_seconds", 0.5.into()),
        ("controller", "lease_seconds", 2.0.into()),
        ("controller", "metrics_bind", text("127.0.0.1")),
        ("controller", "metrics_port", 0.into()),
    ];
    for (section, key, value) in settings {
        set(&mut config, section, key, value);
    }
    config
}

/// Sets `[section] key = value` in `config`.
pub fn set(config: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let table = config.entry(section).or_insert_with(|| toml::Value::Table(Default::default()));
    table.as_table_mut().unwrap().insert(key.into(), value);
}

/// A test copy of `examples/configs/aws.toml` on `endpoint` ([`test_config`]): its pool capped
/// at 4, moto's AMI in the default VPC.
pub fn aws_config(endpoint: &str, name: &str) -> String {
    let mut config = test_config("aws.toml", endpoint, name);
    let pool = config["pools"].as_array_mut().unwrap()[0].as_table_mut().unwrap();
    pool.insert("quota".into(), 4.into());
    pool.insert("boot_seconds".into(), 1.0.into());
    pool.insert("image".into(), toml::Value::String(AMI.into()));
    pool.insert("flavor".into(), toml::Value::String("t3.medium".into()));
    for key in ["subnets", "security_groups", "instance_profile"] {
        pool.remove(key);
    }
    toml::to_string(&config).unwrap()
}

/// The EC2 provider of pool `pool` in the config `text`, as the controller builds it, on a
/// session with the test's fake credentials: what a test lists and reads user-data with.
pub fn ec2_provider(
    runtime: &tokio::runtime::Runtime,
    endpoint: &str,
    text: &str,
    pool: usize,
) -> skyburst_providers::ec2::Ec2Provider {
    let file = config_file(text);
    let config = skyburst::config::Config::load_with_env(Some(file.path()), Vec::new()).unwrap();
    let session = runtime.block_on(session(endpoint));
    skyburst::app::aws::ec2_provider(&config, &config.pools[pool], &session)
}

/// Writes a config to a temporary file.
pub fn config_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

/// `skyburst --config FILE aws bootstrap`, then `aws publish-worker` with a stand-in binary
/// (the fleet agent runs this machine's build, not the published one): what an operator does
/// before starting the service.
pub fn bootstrap_and_publish(config: &Path) {
    for args in [vec!["aws", "bootstrap"], vec!["aws", "publish-worker", "--binary", "/bin/true"]] {
        let (code, stdout, stderr) = super::run(super::skyburst().arg("--config").arg(config).args(&args));
        assert_eq!(code, 0, "{args:?}: {stdout}\n{stderr}");
    }
}

/// A moto server of the test's own, for faults that would disturb other tests (SIGSTOP).
pub struct MotoServer {
    /// Its URL.
    pub endpoint: String,
    /// The server process.
    pub child: Child,
}

impl MotoServer {
    /// Starts one on a free port and waits until it answers (about 1 s; EC2's first call takes
    /// 1-2 s more).
    pub fn start() -> Self {
        let program = super::venv_program("MOTO_VENV", "moto-venv", "moto_server", "install-moto.sh");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto is installed (scripts/install-moto.sh)");
        let endpoint = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let http = reqwest::blocking::Client::new();
        while http.get(format!("{endpoint}/moto-api/data.json")).send().is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "moto did not start on {endpoint}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { endpoint, child }
    }

    /// The server's process id (to freeze it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One EC2 Query API call straight to moto (which checks no signature), for facts the provider
/// does not expose: the launch settings EC2 recorded. Returns the XML answer.
pub async fn ec2_query(endpoint: &str, params: &[(&str, &str)]) -> String {
    let mut all = vec![("Version", "2016-11-15")];
    all.extend_from_slice(params);
    reqwest::Client::new()
        .post(endpoint)
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
        )
        .form(&all)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
