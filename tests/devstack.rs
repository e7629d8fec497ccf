//! devstack/: the private cloud's bootstrap. DevStack itself cannot run here (it builds a whole
//! cloud on KVM and OVN), so its files are checked as files (bash -n, shellcheck,
//! systemd-analyze, the user-data's YAML), and the bootstrap steps the local OpenStack plane
//! supports (image, flavor, key pair, security group) run against it, twice. That plane
//! (scripts/openstack-local/, started by scripts/test.sh) has neither tenant networks nor routers,
//! so the network and frontend steps are checked only up to their first call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn devstack() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("devstack")
}

/// Runs a command and returns (exit code, stdout, stderr); a missing program fails the test with
/// what to install.
fn output(command: &mut Command) -> (i32, String, String) {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = command.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {program}: {e}; install it (shellcheck, systemd, cloud-init: scripts/install-image-tools.sh; \
             openstack: python3-openstackclient, installed by scripts/openstack-local/setup.sh)"
        )
    });
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command that must succeed and returns its stdout.
fn succeed(command: &mut Command) -> String {
    let described = format!("{command:?}");
    let (code, stdout, stderr) = output(command);
    assert_eq!(code, 0, "{described} failed:\n{stdout}\n{stderr}");
    stdout
}

/// The `[[local|localrc]]` section of local.conf: the part stack.sh sources as bash.
fn localrc() -> String {
    let conf = std::fs::read_to_string(devstack().join("local.conf")).unwrap();
    let section = conf.split("[[local|localrc]]").nth(1).expect("local.conf has a [[local|localrc]] section");
    section.split("\n[[").next().unwrap().to_string()
}

/// Every shell script under devstack/ passes `bash -n` and shellcheck; so does local.conf's
/// localrc section (sourced by stack.sh as bash); the front end's systemd units pass
/// `systemd-analyze verify` (with ExecStart pointed at the binary built here, since
/// /usr/local/bin/skyburst is the image's).
#[test]
fn devstack_scripts_pass_bash_n_shellcheck_and_systemd_analyze() {
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(devstack())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sh"))
        .collect();
    scripts.sort();
    assert!(scripts.iter().any(|s| s.ends_with("bootstrap.sh")), "{scripts:?}");
    for script in &scripts {
        succeed(Command::new("bash").arg("-n").arg(script));
        succeed(Command::new("shellcheck").arg(script));
    }

    let dir = tempfile::tempdir().unwrap();
    let section = dir.path().join("localrc.sh");
    std::fs::write(&section, localrc()).unwrap();
    succeed(Command::new("bash").arg("-n").arg(&section));
    // SC2034 (assigned but unused): DevStack reads these variables after sourcing the file.
    succeed(Command::new("shellcheck").args(["--shell=bash", "--exclude=SC2034"]).arg(&section));

    let binary = env!("CARGO_BIN_EXE_skyburst");
    let mut units = Vec::new();
    for name in ["skyburst-frontend.service", "skyburst-controller.service"] {
        let text = std::fs::read_to_string(devstack().join(name)).unwrap();
        assert!(text.contains("ExecStart=/usr/local/bin/skyburst "), "{name}: {text}");
        let unit = dir.path().join(name);
        std::fs::write(&unit, text.replace("/usr/local/bin/skyburst", binary)).unwrap();
        units.push(unit);
    }
    let (code, stdout, stderr) = output(Command::new("systemd-analyze").arg("verify").args(&units));
    // Unknown keys and bad values are only warnings (exit 0): any output is a failure here.
    assert!(code == 0 && stdout.is_empty() && stderr.is_empty(), "systemd-analyze verify: {code}\n{stdout}\n{stderr}");
}

/// `bootstrap.sh --print-user-data` (no cloud call) renders a cloud-config that `cloud-init
/// schema` accepts and that writes the operator's config byte for byte, the two units and
/// make-tls.sh as committed, the port and cloud asked for, and the TLS files' paths; runcmd makes
/// the key pairs on the instance (with the front end's public name), so no private key is in
/// user-data; a config holding bearer tokens, or a plain-HTTP credentials.url off loopback, is
/// refused, since any process on the instance can read user-data back from the metadata service.
#[cfg(feature = "dev-tools")]
#[test]
fn frontend_user_data_carries_the_config_and_units_but_no_tokens() {
    let config_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs/hybrid.toml");
    let user_data = succeed(
        Command::new("bash")
            .arg(devstack().join("bootstrap.sh"))
            .args(["--print-user-data", "--frontend-port", "8443", "--os-cloud", "private-cloud"])
            .args(["--frontend-name", "skyburst.example.org", "--config"])
            .arg(&config_path),
    );
    assert!(user_data.starts_with("#cloud-config\n"), "{user_data}");
    assert!(!user_data.contains("PRIVATE KEY"), "a private key in user-data:\n{user_data}");
    let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&user_data).unwrap();
    let files: BTreeMap<String, String> = parsed["write_files"]
        .as_sequence()
        .expect("write_files")
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), f["content"].as_str().unwrap().to_string()))
        .collect();
    let config = std::fs::read_to_string(&config_path).unwrap();
    assert_eq!(files["/etc/skyburst/skyburst.toml"], config);
    for unit in ["skyburst-frontend.service", "skyburst-controller.service"] {
        let committed = std::fs::read_to_string(devstack().join(unit)).unwrap();
        assert_eq!(files[&format!("/etc/systemd/system/{unit}")], committed, "{unit}");
        assert!(committed.lines().any(|l| l == "ExecReload=/bin/kill -HUP $MAINPID"), "{unit}: {committed}");
    }
    let make_tls = "/usr/local/lib/skyburst/make-tls.sh";
    assert_eq!(files[make_tls], std::fs::read_to_string(devstack().join("make-tls.sh")).unwrap());
    let environment = &files["/etc/skyburst/environment"];
    for line in [
        "SKYBURST_FRONTEND__BIND=0.0.0.0",
        "SKYBURST_FRONTEND__PORT=8443",
        "OS_CLOUD=private-cloud",
        "SKYBURST_FRONTEND__TLS__CERT=/etc/skyburst/tls/frontend.crt",
        "SKYBURST_FRONTEND__TLS__KEY=/etc/skyburst/tls/frontend.key",
        "SKYBURST_CONTROLLER__TLS__CERT=/etc/skyburst/tls/controller.crt",
        "SKYBURST_CONTROLLER__TLS__KEY=/etc/skyburst/tls/controller.key",
    ] {
        assert!(environment.lines().any(|l| l == line), "{line} missing from\n{environment}");
    }
    let dir = tempfile::tempdir().unwrap();
    let rendered = dir.path().join("user-data.yaml");
    std::fs::write(&rendered, &user_data).unwrap();
    let schema = succeed(Command::new("cloud-init").args(["schema", "--config-file"]).arg(&rendered));
    assert!(schema.contains("Valid cloud-config"), "{schema}");
    let runcmd = format!("{:?}", parsed["runcmd"]);
    assert!(runcmd.contains("skyburst-frontend.service") && runcmd.contains("skyburst-controller.service"), "{runcmd}");
    // The key pairs are made before the units are enabled, with the front end's public name.
    let commands: Vec<String> = parsed["runcmd"].as_sequence().unwrap().iter().map(|c| format!("{c:?}")).collect();
    let made = commands.iter().position(|c| c.contains(make_tls) && c.contains("skyburst.example.org"));
    let enabled = commands.iter().position(|c| c.contains("\"enable\""));
    assert!(made.is_some() && made < enabled, "{runcmd}");

    let with_tokens = dir.path().join("tokens.toml");
    std::fs::write(&with_tokens, "[frontend]\ntokens = [\"0123456789abcdef0123\"]\n").unwrap();
    let (code, stdout, stderr) = output(
        Command::new("bash")
            .arg(devstack().join("bootstrap.sh"))
            .arg("--print-user-data")
            .arg("--config")
            .arg(&with_tokens),
    );
    assert!(code != 0 && stdout.is_empty() && stderr.contains("frontend.tokens"), "{code}\n{stdout}\n{stderr}");

    let cleartext = dir.path().join("cleartext.toml");
    std::fs::write(&cleartext, config.replace("https://10.0.0.5:", "http://10.0.0.5:")).unwrap();
    let (code, stdout, stderr) = output(
        Command::new("bash")
            .arg(devstack().join("bootstrap.sh"))
            .arg("--print-user-data")
            .arg("--config")
            .arg(&cleartext),
    );
    assert!(code != 0 && stdout.is_empty() && stderr.contains("credentials.url"), "{code}\n{stdout}\n{stderr}");
}

// === the local OpenStack plane ===

/// `openstack ARGS -f json`, parsed.
fn openstack(args: &[&str]) -> Value {
    let stdout = succeed(Command::new("openstack").args(args).args(["-f", "json"]));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("openstack {args:?}: {e}: {stdout}"))
}

/// A share of the plane (see `support::openstack`); fails (never skips) when it is not up,
/// saying how to start it.
fn require_plane() -> std::sync::RwLockReadGuard<'static, ()> {
    let plane = crate::support::openstack::shared_plane();
    let (code, _, stderr) = if std::env::var_os("OS_AUTH_URL").is_some() || std::env::var_os("OS_CLOUD").is_some() {
        output(Command::new("openstack").args(["token", "issue", "-f", "value", "-c", "id"]))
    } else {
        (1, String::new(), "no OS_AUTH_URL or OS_CLOUD in the environment".into())
    };
    assert!(
        code == 0,
        "the devstack tests need the local OpenStack plane: run scripts/test.sh, or \
         scripts/openstack-local/start.sh and eval its exports\n{stderr}"
    );
    plane
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// Deletes everything a run made with this prefix, even when an assertion failed first.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let prefix = &self.0;
        let ids = |args: &[&str], name: &str| -> Vec<String> {
            let (_, stdout, _) =
                output(Command::new("openstack").args(args).args(["-f", "value", "-c", "ID", "-c", "Name"]));
            stdout
                .lines()
                .filter_map(|line| line.split_once(' '))
                .filter(|(_, n)| *n == name)
                .map(|(id, _)| id.to_string())
                .collect()
        };
        let worker = format!("{prefix}-worker");
        for id in ids(&["image", "list", "--name", &worker], &worker) {
            output(Command::new("openstack").args(["image", "delete", &id]));
        }
        for id in ids(&["flavor", "list", "--all"], &worker) {
            output(Command::new("openstack").args(["flavor", "delete", &id]));
        }
        let group = format!("{prefix}-frontend");
        for id in ids(&["security", "group", "list"], &group) {
            output(Command::new("openstack").args(["security", "group", "delete", &id]));
        }
        output(Command::new("openstack").args(["keypair", "delete", &format!("{prefix}-admin")]));
    }
}

/// A qcow2 header (version 3, 64 KiB clusters, 1 GiB virtual size) padded to 4 KiB: Glance reads
/// the virtual size from it, and bootstrap.sh checks the magic.
fn tiny_qcow2() -> Vec<u8> {
    let mut header = b"QFI\xfb".to_vec();
    header.extend(3u32.to_be_bytes()); // version
    header.extend([0u8; 12]); // no backing file (offset, size)
    header.extend(16u32.to_be_bytes()); // cluster_bits
    header.extend((1u64 << 30).to_be_bytes()); // virtual size
    header.extend([0u8; 40]); // no encryption, L1 table, refcount table or snapshots
    header.extend([0u8; 24]); // feature bits
    header.extend(4u32.to_be_bytes()); // refcount_order (16-bit refcounts)
    header.extend(104u32.to_be_bytes()); // header_length
    assert_eq!(header.len(), 104);
    header.resize(4096, 0);
    header
}

/// "created|found <kind> <name> <id>" lines of a bootstrap.sh run, as (verb, kind, name) → id.
fn records(stdout: &str) -> BTreeMap<(String, String), (String, String)> {
    stdout
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert!(fields.len() == 4 && ["created", "found"].contains(&fields[0]), "unexpected line {line:?}");
            ((fields[1].to_string(), fields[2].to_string()), (fields[0].to_string(), fields[3].to_string()))
        })
        .collect()
}

/// On the real plane, `bootstrap.sh --only image,flavor,keypair,secgroup` uploads the image
/// (active), creates the flavor (2 vCPU, 4096 MiB, 20 GB), the key pair (the given public key)
/// and a security group whose ingress is exactly tcp/22 and tcp/8080 from the admin CIDR and
/// tcp/9464 (the controller's credentials endpoint) from the workers' subnet; a
/// second run finds all of it and creates nothing (same ids, same counts).
#[test]
fn bootstrap_creates_then_only_finds_image_flavor_keypair_and_secgroup() {
    let _plane = require_plane();
    let prefix = unique("bst");
    let _cleanup = Cleanup(prefix.clone());
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("worker.qcow2");
    std::fs::write(&image, tiny_qcow2()).unwrap();
    let key = dir.path().join("admin");
    succeed(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", &prefix, "-f"]).arg(&key));
    let public_key = std::fs::read_to_string(dir.path().join("admin.pub")).unwrap();
    let admin_cidr = "198.51.100.0/24";

    let bootstrap = || {
        let mut command = Command::new("bash");
        command
            .arg(devstack().join("bootstrap.sh"))
            .args(["--only", "image,flavor,keypair,secgroup", "--prefix", &prefix, "--admin-cidr", admin_cidr])
            .arg("--image-file")
            .arg(&image)
            .arg("--public-key")
            .arg(dir.path().join("admin.pub"));
        command
    };
    let first = records(&succeed(&mut bootstrap()));
    let (worker, group, keypair) =
        (format!("{prefix}-worker"), format!("{prefix}-frontend"), format!("{prefix}-admin"));
    let rule = |port: u16| format!("{group}:tcp/{port}<-{admin_cidr}");
    // The workers' subnet (bootstrap.sh's default) reaches the controller's credentials endpoint.
    let workers = format!("{group}:tcp/9464<-10.42.0.0/24");
    let expected = [
        ("image", worker.clone()),
        ("flavor", worker.clone()),
        ("keypair", keypair.clone()),
        ("security-group", group.clone()),
        ("security-group-rule", rule(22)),
        ("security-group-rule", rule(8080)),
        ("security-group-rule", workers),
    ];
    let id = |kind: &str, name: &str| first[&(kind.to_string(), name.to_string())].1.clone();
    assert_eq!(first.len(), expected.len(), "{first:?}");
    for (kind, name) in &expected {
        let (verb, _) =
            first.get(&(kind.to_string(), name.clone())).unwrap_or_else(|| panic!("no {kind} {name}: {first:?}"));
        assert_eq!(verb, "created", "{kind} {name}");
    }

    // What the cloud holds, asked through the openstack CLI.
    let shown = openstack(&["image", "show", &id("image", &worker)]);
    assert_eq!((shown["status"].as_str(), shown["disk_format"].as_str()), (Some("active"), Some("qcow2")), "{shown}");
    assert_eq!((shown["size"].as_u64(), shown["virtual_size"].as_u64()), (Some(4096), Some(1 << 30)), "{shown}");
    let flavor = openstack(&["flavor", "show", &id("flavor", &worker)]);
    let size = (flavor["vcpus"].as_u64(), flavor["ram"].as_u64(), flavor["disk"].as_u64());
    assert_eq!(size, (Some(2), Some(4096), Some(20)), "{flavor}");
    let pair = openstack(&["keypair", "show", &keypair]);
    assert_eq!(pair["fingerprint"].as_str(), Some(id("keypair", &keypair).as_str()), "{pair}");
    let stored = succeed(Command::new("openstack").args(["keypair", "show", "--public-key", &keypair]));
    let key_of = |text: &str| text.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(key_of(&stored), key_of(&public_key));
    let ingress = |group_id: &str| -> Vec<(String, String, String, String)> {
        let rules = openstack(&["security", "group", "rule", "list", group_id, "--ingress"]);
        let mut rules: Vec<_> = rules
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let field = |k: &str| r[k].as_str().unwrap_or("-").to_string();
                (field("Ethertype"), field("IP Protocol"), field("Port Range"), field("IP Range"))
            })
            .collect();
        rules.sort();
        rules
    };
    let wanted = |port: &str| ("IPv4".to_string(), "tcp".to_string(), format!("{port}:{port}"), admin_cidr.to_string());
    let group_id = id("security-group", &group);
    let from_workers = ("IPv4".to_string(), "tcp".to_string(), "9464:9464".to_string(), "10.42.0.0/24".to_string());
    let exactly = vec![wanted("22"), wanted("8080"), from_workers];
    assert_eq!(ingress(&group_id), exactly);

    // The second run finds every one of them and creates nothing.
    let second = records(&succeed(&mut bootstrap()));
    assert_eq!(second.keys().collect::<Vec<_>>(), first.keys().collect::<Vec<_>>());
    for (key, (verb, second_id)) in &second {
        assert_eq!((verb.as_str(), second_id), ("found", &first[key].1), "{key:?}");
    }
    let images = openstack(&["image", "list", "--name", &worker]);
    assert_eq!(images.as_array().map(Vec::len), Some(1), "{images}");
    let groups = succeed(Command::new("openstack").args(["security", "group", "list", "-f", "value", "-c", "Name"]));
    assert_eq!(groups.lines().filter(|name| *name == group).count(), 1, "{groups}");
    assert_eq!(ingress(&group_id), exactly);
}

/// The network step looks for the external network before it makes anything: on the plane,
/// which has none (no L3 service), it stops with what to pass, and no network is left behind.
#[test]
fn network_step_needs_an_external_network_and_makes_nothing_without_one() {
    let _plane = require_plane();
    let prefix = unique("bsn");
    let (code, stdout, stderr) = output(
        Command::new("bash").arg(devstack().join("bootstrap.sh")).args(["--only", "network", "--prefix", &prefix]),
    );
    assert!(
        code != 0
            && stdout.is_empty()
            && stderr.contains("no external network 'public'")
            && stderr.contains("--external-network"),
        "{code}\n{stdout}\n{stderr}"
    );
    let networks = openstack(&["network", "list", "--name", &format!("{prefix}-private")]);
    assert_eq!(networks.as_array().map(Vec::len), Some(0), "{networks}");
}
