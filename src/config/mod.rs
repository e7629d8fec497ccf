//! The one typed configuration tree. Layered: built-in defaults → TOML file (`--config`) →
//! environment. Unknown keys are rejected; [`validate`] then checks every value and reports all
//! problems.
//!
//! An environment variable is a config key when it reads `SKYBURST_<SECTION>__<KEY>` (more `__`
//! for deeper levels) and `<SECTION>` names a section of the tree, such as `FRONTEND` or
//! `DETECTOR`: `SKYBURST_DETECTOR__THRESHOLD=0.4`. Any other `SKYBURST_*` variable (a script's
//! `SKYBURST_BIN`, say) is not config: [`ignored_env_vars`] names them, and the binary warns
//! about each and goes on, except the variables the binary sets for its own parts
//! ([`INTERNAL_ENV_VARS`]). A wrong key inside a section is still an error.

mod cloud;
mod scaling;
mod service;
mod validate;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use cloud::{AwsConfig, BootConfig, CredentialsConfig};
pub use scaling::{
    ControllerConfig, Distribution, PoolConfig, ProviderKind, ScalingConfig, SimulateConfig, DEFAULT_SLO_OBJECTIVE_S,
};
pub use service::{
    default_data_dir, EmbeddedConfig, FrontendConfig, QueueBackend, QueueConfig, StoreBackend, StoreConfig,
    WorkerConfig,
};
pub use validate::validate;

use skyburst_detector::ResizeMode;

/// The environment prefix reserved for config keys. Test harness variables use other names.
pub const ENV_PREFIX: &str = "SKYBURST";

/// `SKYBURST_*` variables that are not config but are not ignored either: `skyburst up` sets
/// them for its parts.
pub const INTERNAL_ENV_VARS: &[&str] = &[crate::shutdown::LIFELINE_VAR];

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The object detector every worker and `skyburst detect` run.
    pub detector: DetectorConfig,
    /// The HTTP front end.
    pub frontend: FrontendConfig,
    /// The job queue and response queues.
    pub queue: QueueConfig,
    /// The object store (images and results).
    pub store: StoreConfig,
    /// Detector workers.
    pub worker: WorkerConfig,
    /// The one-machine deployment (`skyburst up`).
    pub embedded: EmbeddedConfig,
    /// The scaling policy and the caps on the fleet.
    pub scaling: ScalingConfig,
    /// The reconcile loop.
    pub controller: ControllerConfig,
    /// Pools of worker instances, filled in `priority` order. Default: one `local` pool.
    pub pools: Vec<PoolConfig>,
    /// The simulator's workload model.
    pub simulate: SimulateConfig,
    /// How to reach AWS (SQS, S3, EC2).
    pub aws: AwsConfig,
    /// What a cloud worker installs when it boots.
    pub boot: BootConfig,
    /// AWS credentials vended to workers without an instance role.
    pub credentials: CredentialsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            detector: DetectorConfig::default(),
            frontend: FrontendConfig::default(),
            queue: QueueConfig::default(),
            store: StoreConfig::default(),
            worker: WorkerConfig::default(),
            embedded: EmbeddedConfig::default(),
            scaling: ScalingConfig::default(),
            controller: ControllerConfig::default(),
            pools: vec![PoolConfig::local_default()],
            simulate: SimulateConfig::default(),
            aws: AwsConfig::default(),
            boot: BootConfig::default(),
            credentials: CredentialsConfig::default(),
        }
    }
}

/// Where the compute runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// The CPU, with the fused convolution kernel.
    #[default]
    Cpu,
    /// The first CUDA GPU (build with `--features cuda`); candle's own convolution.
    Cuda,
}

/// `[detector]`: the model and how it is run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Directory holding `yolov3-tiny.cfg`, `yolov3-tiny.weights` and `coco.names`;
    /// `scripts/fetch-assets.sh` fills the default, `~/.cache/skyburst/models`. A leading `~/`
    /// means the home directory.
    pub model_dir: PathBuf,
    /// `letterbox` (keep aspect, pad with gray; the default) or `stretch`.
    pub resize: ResizeMode,
    /// Minimum objectness × class probability to report, in (0, 1]. Default 0.25.
    #[serde(serialize_with = "shortest_f32")]
    pub threshold: f32,
    /// IoU above which NMS drops the weaker of two boxes of one class, in (0, 1]. Default 0.45.
    #[serde(serialize_with = "shortest_f32")]
    pub nms_iou: f32,
    /// Images declaring more pixels than this are refused before decoding. Default 40 M
    /// (a 50000×50000 PNG header is a few bytes but would decode into 7.5 GB).
    pub max_pixels: u64,
    /// Threads per detector process, 1..=256. Default 1: on a 2-core worker, two 1-thread
    /// processes serve more images per second than one 2-thread process (scripts/bench-detector.sh).
    pub threads: usize,
    /// Images per forward pass, 1..=64. Default 1.
    pub batch_size: usize,
    /// `cpu` (default) or `cuda`.
    pub device: DeviceKind,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            model_dir: default_model_dir(),
            resize: ResizeMode::Letterbox,
            threshold: 0.25,
            nms_iou: 0.45,
            max_pixels: 40_000_000,
            threads: 1,
            batch_size: 1,
            device: DeviceKind::Cpu,
        }
    }
}

/// Writes an `f32` as the shortest decimal that reads back to it (`0.45`, not the
/// `0.44999998807907104` its widening to `f64` would print): configs are printed for people
/// (`config check`) and rendered into workers' user-data.
fn shortest_f32<S: serde::Serializer>(value: &f32, serializer: S) -> Result<S::Ok, S::Error> {
    let shortest: f64 = value.to_string().parse().expect("a float's own text parses");
    serializer.serialize_f64(shortest)
}

/// `~/.cache/skyburst/models`, honouring `XDG_CACHE_HOME` as the fetch script does.
pub fn default_model_dir() -> PathBuf {
    cache_dir().join("models")
}

/// `~/.cache/skyburst` (or `$XDG_CACHE_HOME/skyburst`).
pub fn cache_dir() -> PathBuf {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => home_dir().join(".cache"),
    };
    base.join("skyburst")
}

pub(crate) fn home_dir() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"))
}

/// Why the configuration could not be used; every problem is listed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file does not exist.
    #[error("config file {} does not exist", .0.display())]
    NoFile(PathBuf),
    /// The file or environment could not be read or has an unknown key or a wrong type.
    #[error("cannot load the configuration: {0}\n  (keys are documented in examples/configs/embedded.toml; environment keys look like SKYBURST_DETECTOR__THRESHOLD)")]
    Load(#[source] config::ConfigError),
    /// Values that are out of range, one line each.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Layers defaults, the optional TOML file and `SKYBURST_*` environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::NoFile(path.to_path_buf()));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let sections = sections();
        let env: config::Map<String, String> =
            env.into_iter().filter(|(k, _)| section_of(k).is_some_and(|s| sections.contains(&s))).collect();
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            // `SKYBURST_FRONTEND__TOKENS=a,b`: the one list-valued key.
            .list_separator(",")
            .with_list_parse_key("frontend.tokens")
            .source(Some(env));
        let layered = builder.add_source(environment).build().map_err(ConfigError::Load)?;
        let mut config: Config = layered.try_deserialize().map_err(ConfigError::Load)?;
        config.detector.model_dir = expand_home(&config.detector.model_dir);
        config.embedded.data_dir = expand_home(&config.embedded.data_dir);
        config.frontend.tokens_file = config.frontend.tokens_file.as_deref().map(expand_home);
        config.aws.call_log = config.aws.call_log.as_deref().map(expand_home);
        validate(&config).map_err(ConfigError::Invalid)?;
        Ok(config)
    }
}

/// The `SKYBURST_*` variables in `env` that are neither config keys nor [`INTERNAL_ENV_VARS`]
/// (see the module doc), sorted.
pub fn ignored_env_vars(env: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let sections = sections();
    let mut ignored: Vec<String> = env
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| {
            k.strip_prefix(ENV_PREFIX).is_some_and(|r| r.starts_with('_'))
                && !section_of(k).is_some_and(|s| sections.contains(&s))
                && !INTERNAL_ENV_VARS.contains(&k.as_str())
        })
        .collect();
    ignored.sort();
    ignored
}

/// `detector` for `SKYBURST_DETECTOR__THRESHOLD`; `None` unless the name has the form
/// `SKYBURST_<SECTION>__<KEY>`.
fn section_of(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?.strip_prefix('_')?;
    let (section, key) = rest.split_once("__")?;
    (!section.is_empty() && !key.is_empty()).then(|| section.to_ascii_lowercase())
}

/// The tree's sections (its tables: `detector`, `frontend`, ...), read from the type itself so
/// a new section is settable from the environment without touching this list.
fn sections() -> Vec<String> {
    let tree = serde_json::to_value(Config::default()).expect("the default config serializes");
    let tables = tree.as_object().expect("the config is a table");
    tables.iter().filter(|(_, v)| v.is_object()).map(|(k, _)| k.clone()).collect()
}

fn expand_home(path: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => home_dir().join(rest),
        Err(_) => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn only_variables_that_name_a_section_are_config() {
        let vars = env(&[
            ("SKYBURST_BIN", "/usr/bin/skyburst"),
            ("SKYBURST_SOMETHING__ELSE", "x"),
            ("SKYBURST_DETECTOR", "x"),
            ("SKYBURST_POOLS__0__NAME", "x"),
            ("SKYBURSTING", "x"),
            ("SKYBURST_UP_LIFELINE_FD", "3"),
            ("SKYBURST_DETECTOR__THRESHOLD", "0.5"),
            ("HOME", "/root"),
        ]);
        let config = Config::load_with_env(None, vars.clone()).unwrap();
        assert_eq!(config.detector.threshold, 0.5);
        assert_eq!(
            ignored_env_vars(vars),
            ["SKYBURST_BIN", "SKYBURST_DETECTOR", "SKYBURST_POOLS__0__NAME", "SKYBURST_SOMETHING__ELSE"]
        );
        assert!(sections().contains(&"credentials".to_string()) && !sections().contains(&"pools".to_string()));
        // A wrong key inside a real section is still refused.
        assert!(Config::load_with_env(None, env(&[("SKYBURST_FRONTEND__PROT", "1")])).is_err());
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(config, Config::default());
        assert!(config.detector.model_dir.ends_with("skyburst/models"));
    }

    #[test]
    fn file_then_environment_override() {
        let file = write("[detector]\nthreshold = 0.4\nresize = \"stretch\"\nmodel_dir = \"~/models\"\n");
        let config = Config::load_with_env(Some(file.path()), env(&[("SKYBURST_DETECTOR__THRESHOLD", "0.6")])).unwrap();
        assert_eq!(config.detector.threshold, 0.6);
        assert_eq!(config.detector.resize, ResizeMode::Stretch);
        assert_eq!(config.detector.model_dir, home_dir().join("models"));
    }

    #[test]
    fn unknown_keys_are_rejected_in_file_and_environment() {
        let file = write("[detector]\nthreshhold = 0.4\n");
        let err = Config::load_with_env(Some(file.path()), env(&[])).unwrap_err();
        assert!(err.to_string().contains("threshhold"), "{err}");
        let err = Config::load_with_env(None, env(&[("SKYBURST_DETECTOR__COLOUR", "red")])).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let err = Config::load_with_env(None, env(&[("SKYBURST_DETECTOR__RESIZE", "crop")])).unwrap_err();
        assert!(err.to_string().contains("crop"), "{err}");
    }

    #[test]
    fn every_invalid_value_is_reported_at_once() {
        let file = write("[detector]\nthreshold = 1.5\nnms_iou = 0.0\nthreads = 0\n");
        let Err(ConfigError::Invalid(problems)) = Config::load_with_env(Some(file.path()), env(&[])) else {
            panic!("expected invalid values")
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn scaling_pools_and_controller_are_validated_together() {
        let file = write(
            "[scaling]\nmin = 5\nmax = 4\npolicy = \"backlog-per-instance\"\n\
             [controller]\ntick_seconds = 2.0\nlease_seconds = 3.0\n\
             [[pools]]\nname = \"a\"\nprovider = \"local\"\nquota = 2\n\
             [[pools]]\nname = \"a\"\nprovider = \"ec2\"\nquota = 2\nprice_per_hour = -1.0\n",
        );
        let Err(ConfigError::Invalid(problems)) = Config::load_with_env(Some(file.path()), env(&[])) else {
            panic!("expected invalid values")
        };
        let all = problems.join("\n");
        for needle in ["scaling.min = 5", "lease_seconds = 3", "used twice", "pools.a.price_per_hour"] {
            assert!(all.contains(needle), "{needle:?} missing from {all}");
        }
        let err = Config::load_with_env(None, env(&[("SKYBURST_SCALING__POLICY", "fastest")])).unwrap_err();
        assert!(err.to_string().contains("fastest"), "{err}");
        let file = write("[[pools]]\nname = \"p\"\nprovider = \"local\"\nquota = 3\nflavour = \"x\"\n");
        let err = Config::load_with_env(Some(file.path()), env(&[])).unwrap_err();
        assert!(err.to_string().contains("flavour"), "unknown pool keys are refused: {err}");
    }

    /// A Nova pool on SQS/S3 needs the vending settings (its servers have no instance role);
    /// bad values and unknown keys in `[credentials]` are reported.
    #[test]
    fn nova_workers_on_aws_need_credential_vending() {
        let nova = "[queue]\nbackend = \"sqs\"\n[[pools]]\nname = \"private\"\nprovider = \"nova\"\n\
                    quota = 2\nimage = \"img\"\nflavor = \"m1\"\nnetwork = \"none\"\n";
        let Err(ConfigError::Invalid(problems)) = Config::load_with_env(Some(write(nova).path()), env(&[])) else {
            panic!("expected invalid values")
        };
        let all = problems.join("\n");
        assert!(
            all.contains("credentials.role_arn must be set") && all.contains("credentials.url must be set"),
            "{all}"
        );
        let bad = format!(
            "{nova}[credentials]\nrole_arn = \"skyburst-worker\"\nurl = \"10.0.0.5:9464\"\nduration_seconds = 60\n"
        );
        let Err(ConfigError::Invalid(problems)) = Config::load_with_env(Some(write(&bad).path()), env(&[])) else {
            panic!("expected invalid values")
        };
        let all = problems.join("\n");
        for needle in ["not a role ARN", "must be an http(s) URL", "duration_seconds = 60"] {
            assert!(all.contains(needle), "{needle:?} missing from {all}");
        }
        let role = "role_arn = \"arn:aws:iam::1:role/w\"";
        for (url, extra, problem) in [
            ("http://10.0.0.5:9464/v1/credentials", "", "is plain HTTP off loopback"),
            (
                "http://127.0.0.1:9464/v1/credentials",
                &format!("controller_cert_sha256 = \"{}\"\n", "0".repeat(64)),
                "is not https://",
            ),
        ] {
            let text = format!("{nova}[credentials]\n{role}\nurl = \"{url}\"\n{extra}");
            let Err(ConfigError::Invalid(problems)) = Config::load_with_env(Some(write(&text).path()), env(&[])) else {
                panic!("{url} {extra}: expected invalid values")
            };
            assert!(problems.join("\n").contains(problem), "{problem:?} missing from {problems:?}");
        }
        let good = format!("{nova}[credentials]\n{role}\nurl = \"https://10.0.0.5:9464/v1/credentials\"\n");
        Config::load_with_env(Some(write(&good).path()), env(&[])).unwrap();
        let unknown = format!("{good}secret = \"x\"\n");
        let err = Config::load_with_env(Some(write(&unknown).path()), env(&[])).unwrap_err();
        assert!(err.to_string().contains("secret"), "unknown keys are refused: {err}");
    }

    #[test]
    fn the_default_instance_id_names_host_and_port_and_an_explicit_one_wins() {
        let config = Config::load_with_env(None, env(&[])).unwrap();
        let (a, b) = (config.frontend.instance_id_on(8080), config.frontend.instance_id_on(8081));
        assert_ne!(a, b, "two front ends on one host get two response queues");
        assert_eq!(a, config.frontend.instance_id_on(8080), "a restart on the same port keeps its queue");
        let host = crate::host::name_fragment(32);
        assert_eq!(a, format!("frontend-{host}-8080"));
        assert!(validate::is_resource_name(&config.frontend.instance_id_on(u16::MAX)));
        let explicit = Config::load_with_env(None, env(&[("SKYBURST_FRONTEND__INSTANCE_ID", "web-1")])).unwrap();
        assert_eq!(explicit.frontend.instance_id_on(8080), "web-1");
        let err = Config::load_with_env(None, env(&[("SKYBURST_FRONTEND__INSTANCE_ID", "Web_1")])).unwrap_err();
        assert!(err.to_string().contains("frontend.instance_id = \"Web_1\""), "{err}");
    }

    #[test]
    fn the_default_is_one_local_pool_scaled_by_slo() {
        let config = Config::load_with_env(None, env(&[("SKYBURST_SCALING__MAX", "4")])).unwrap();
        assert_eq!(config.pools.len(), 1);
        assert_eq!(config.pools[0].provider, ProviderKind::Local);
        assert_eq!(config.scaling.caps().max(), 4);
        assert_eq!(config.scaling.policy(config.controller.tick_seconds).name(), "slo");
    }

    #[test]
    fn printed_floats_read_as_written() {
        let text = toml::to_string(&Config::default()).unwrap();
        assert!(text.contains("nms_iou = 0.45\n") && text.contains("threshold = 0.25\n"), "{text}");
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back.detector.nms_iou, 0.45);
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let err = Config::load_with_env(Some(Path::new("/nonexistent/skyburst.toml")), env(&[])).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }
}
