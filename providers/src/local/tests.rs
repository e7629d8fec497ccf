//! Tests of the local provider: its state mapping, then real `/bin/sh` processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::process;
use super::registry::{Entry, Registry, RegistryFile};
use super::{verdict, LocalProvider, LocalSettings, Verdict};
use crate::{Instance, InstanceState, LaunchSpec, Provider, ProviderError, TAG_LAUNCH_ID, TAG_POOL};

/// A worker stand-in: one process (`exec` replaces the shell) that lives until signalled.
const SLEEPER: &[&str] = &["-c", "exec sleep 1000", "{id}"];

/// SIGKILLs every live process the registry names, and any extra children, when a test ends,
/// passed or failed.
struct Cleanup {
    registry: PathBuf,
    extra: Vec<std::process::Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(registry) = RegistryFile::open(self.registry.clone(), "cleanup".into()).and_then(|f| f.load()) {
            for e in registry.instances.iter().filter(|e| process::is_alive(e.pid, e.start_time)) {
                let _ = process::signal(e.pid, Signal::SIGKILL);
            }
        }
        for child in &mut self.extra {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn settings(dir: &Path, args: &[&str]) -> LocalSettings {
    LocalSettings {
        pool: "local".into(),
        program: "/bin/sh".into(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        boot_delay: Duration::ZERO,
        registry: dir.join("control/local-local.json"),
        stop_timeout: Duration::from_secs(2),
        memory_per_instance: 0,
    }
}

fn provider(settings: &LocalSettings) -> (LocalProvider, Cleanup) {
    let cleanup = Cleanup { registry: settings.registry.clone(), extra: Vec::new() };
    (LocalProvider::new(settings.clone()).expect("provider"), cleanup)
}

fn spec(launch_id: &str) -> LaunchSpec {
    LaunchSpec {
        launch_id: launch_id.into(),
        tags: BTreeMap::from([("skyburst:deployment".into(), "test".into())]),
        ..LaunchSpec::default()
    }
}

fn entries(settings: &LocalSettings) -> Vec<Entry> {
    RegistryFile::open(settings.registry.clone(), "test".into()).and_then(|f| f.load()).expect("registry").instances
}

fn entry(settings: &LocalSettings, id: &str) -> Entry {
    entries(settings).into_iter().find(|e| e.id == id).unwrap_or_else(|| panic!("{id} not in the registry"))
}

fn states(instances: &[Instance]) -> Vec<(String, InstanceState)> {
    instances.iter().map(|i| (i.id.clone(), i.state)).collect()
}

/// Lists every 100 ms until `done` holds, for at most 5 s.
async fn list_until(p: &LocalProvider, done: impl Fn(&[Instance]) -> bool) -> Vec<Instance> {
    let mut last = Vec::new();
    for _ in 0..50 {
        last = p.list().await.expect("list");
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached within 5 s; last list: {:?}", states(&last));
}

/// Waits up to 5 s for `path` to exist.
async fn wait_for_file(path: &Path) {
    for _ in 0..50 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} not created within 5 s", path.display());
}

fn all(state: InstanceState) -> impl Fn(&[Instance]) -> bool {
    move |list| !list.is_empty() && list.iter().all(|i| i.state == state)
}

#[test]
fn verdict_maps_liveness_and_times_to_states() {
    let (boot, stop) = (Duration::from_secs(10), Duration::from_secs(5));
    let mut e = Entry {
        id: "p-l-0".into(),
        pid: 4242,
        start_time: 1,
        launch_id: "l".into(),
        launched_at_ms: 100_000,
        tags: BTreeMap::new(),
        stopping_since_ms: None,
    };
    assert_eq!(verdict(&e, true, 100_000, boot, stop), Verdict::Report(InstanceState::Pending));
    assert_eq!(verdict(&e, true, 109_999, boot, stop), Verdict::Report(InstanceState::Pending));
    assert_eq!(verdict(&e, true, 110_000, boot, stop), Verdict::Report(InstanceState::Running));
    // A clock that went backwards keeps it pending rather than failing.
    assert_eq!(verdict(&e, true, 50_000, boot, stop), Verdict::Report(InstanceState::Pending));
    assert_eq!(verdict(&e, false, 100_000, boot, stop), Verdict::Report(InstanceState::Error));
    e.stopping_since_ms = Some(200_000);
    assert_eq!(verdict(&e, true, 204_999, boot, stop), Verdict::Report(InstanceState::Stopping));
    assert_eq!(verdict(&e, true, 205_000, boot, stop), Verdict::Kill);
    assert_eq!(verdict(&e, false, 201_000, boot, stop), Verdict::Forget);
}

#[tokio::test]
async fn launch_reports_pending_then_running_with_tags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(dir.path(), SLEEPER);
    s.boot_delay = Duration::from_secs(1);
    let (p, _cleanup) = provider(&s);

    let launched = p.launch(&spec("a1"), 2).await.expect("launch");
    assert_eq!(
        states(&launched),
        [("local-a1-0".into(), InstanceState::Pending), ("local-a1-1".into(), InstanceState::Pending)]
    );
    let tags = &launched[0].tags;
    assert_eq!(tags.get(TAG_LAUNCH_ID).map(String::as_str), Some("a1"));
    assert_eq!(tags.get(TAG_POOL).map(String::as_str), Some("local"));
    assert_eq!(tags.get("skyburst:deployment").map(String::as_str), Some("test"));
    assert_eq!(p.limits().await.expect("limits").in_use, 2);

    let running = list_until(&p, all(InstanceState::Running)).await;
    assert_eq!(running.len(), 2);
}

#[tokio::test]
async fn a_retried_launch_starts_only_the_missing_instances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), SLEEPER);
    let (p, _cleanup) = provider(&s);

    p.launch(&spec("b1"), 2).await.expect("launch");
    let pids: Vec<u32> = entries(&s).iter().map(|e| e.pid).collect();
    let again = p.launch(&spec("b1"), 2).await.expect("retry");
    assert_eq!(again.len(), 2);
    assert_eq!(entries(&s).iter().map(|e| e.pid).collect::<Vec<_>>(), pids);

    let more = p.launch(&spec("b1"), 3).await.expect("retry with a larger count");
    assert_eq!(more.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["local-b1-0", "local-b1-1", "local-b1-2"]);
    assert_eq!(entries(&s)[..2].iter().map(|e| e.pid).collect::<Vec<_>>(), pids);
    assert_eq!(p.list().await.expect("list").len(), 3);
}

#[tokio::test]
async fn terminate_stops_the_process_and_forgets_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), SLEEPER);
    let (p, _cleanup) = provider(&s);
    p.launch(&spec("c1"), 1).await.expect("launch");
    let e = entry(&s, "local-c1-0");

    p.terminate("local-c1-0").await.expect("terminate");
    assert!(entry(&s, "local-c1-0").stopping_since_ms.is_some());
    let listed = p.list().await.expect("list");
    assert!(listed.iter().all(|i| i.state == InstanceState::Stopping), "{:?}", states(&listed));
    list_until(&p, <[Instance]>::is_empty).await;
    assert!(!process::is_alive(e.pid, e.start_time));
    assert!(entries(&s).is_empty());
    p.terminate("local-c1-0").await.expect("terminating a gone instance succeeds");
}

#[tokio::test]
async fn terminating_an_unknown_instance_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (p, _cleanup) = provider(&settings(dir.path(), SLEEPER));
    p.terminate("local-nope-0").await.expect("unknown id");
}

#[tokio::test]
async fn a_process_killed_from_outside_is_an_error_until_terminated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), SLEEPER);
    let (p, _cleanup) = provider(&s);
    p.launch(&spec("d1"), 1).await.expect("launch");
    let e = entry(&s, "local-d1-0");

    process::signal(e.pid, Signal::SIGKILL).expect("kill");
    list_until(&p, all(InstanceState::Error)).await;
    p.terminate("local-d1-0").await.expect("terminate");
    assert!(p.list().await.expect("list").is_empty());
    assert!(entries(&s).is_empty());
}

#[tokio::test]
async fn a_second_provider_adopts_the_running_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), SLEEPER);
    let (first, _cleanup) = provider(&s);
    first.launch(&spec("e1"), 2).await.expect("launch");
    let before = entries(&s);

    // A restarted controller: a fresh provider on the same registry, without the child handles.
    let second = LocalProvider::new(s.clone()).expect("second provider");
    let listed = second.list().await.expect("list");
    assert_eq!(
        states(&listed),
        [("local-e1-0".into(), InstanceState::Running), ("local-e1-1".into(), InstanceState::Running)]
    );
    assert_eq!(second.launch(&spec("e1"), 2).await.expect("retry").len(), 2);
    assert_eq!(entries(&s), before);

    for i in &listed {
        second.terminate(&i.id).await.expect("terminate");
    }
    list_until(&second, <[Instance]>::is_empty).await;
    assert!(before.iter().all(|e| !process::is_alive(e.pid, e.start_time)));
}

#[tokio::test]
async fn a_process_ignoring_sigterm_is_killed_after_the_stop_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The worker ignores SIGTERM, then creates $1 so the test knows the trap is in place.
    let ready = dir.path().join("ready");
    let script = "trap '' TERM; : > \"$1\"; while :; do sleep 0.1; done";
    let mut s = settings(dir.path(), &["-c", script, "{id}", ready.to_str().expect("utf-8 path")]);
    s.stop_timeout = Duration::from_millis(500);
    let (p, _cleanup) = provider(&s);
    p.launch(&spec("f1"), 1).await.expect("launch");
    let e = entry(&s, "local-f1-0");
    wait_for_file(&ready).await;

    p.terminate("local-f1-0").await.expect("terminate");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(process::is_alive(e.pid, e.start_time), "SIGTERM should have been ignored");
    assert_eq!(states(&p.list().await.expect("list")), [("local-f1-0".into(), InstanceState::Stopping)]);
    list_until(&p, <[Instance]>::is_empty).await;
    assert!(!process::is_alive(e.pid, e.start_time));
}

#[tokio::test]
async fn stop_all_stops_every_instance_even_stubborn_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready");
    let script = "trap '' TERM; : > \"$1\"; while :; do sleep 0.1; done";
    let mut stubborn = settings(dir.path(), &["-c", script, "{id}", ready.to_str().expect("utf-8 path")]);
    stubborn.stop_timeout = Duration::from_millis(500);
    let (p, _cleanup) = provider(&stubborn);
    p.launch(&spec("g1"), 1).await.expect("launch");
    wait_for_file(&ready).await;
    // Same registry, a well-behaved program: both kinds end up in one pool.
    let polite =
        LocalProvider::new(LocalSettings { args: vec!["-c".into(), "exec sleep 1000".into()], ..stubborn.clone() })
            .expect("provider");
    polite.launch(&spec("g2"), 2).await.expect("launch");
    let before = entries(&stubborn);
    assert_eq!(before.len(), 3);

    p.stop_all().await.expect("stop_all");
    assert!(before.iter().all(|e| !process::is_alive(e.pid, e.start_time)));
    assert!(entries(&stubborn).is_empty());
    assert_eq!(p.limits().await.expect("limits").in_use, 0);
}

#[tokio::test]
async fn a_reused_pid_is_not_taken_for_ours() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), SLEEPER);
    let (p, mut cleanup) = provider(&s);
    // A live process that is not ours: same PID as the entry, another start time.
    let (stranger, start_time) =
        process::spawn(Path::new("/bin/sh"), &["-c".into(), "exec sleep 1000".into()]).expect("spawn");
    let pid = stranger.id();
    cleanup.extra.push(stranger);
    let file = RegistryFile::open(s.registry.clone(), "local".into()).expect("registry");
    let old = Entry {
        id: "local-h1-0".into(),
        pid,
        start_time: start_time.wrapping_sub(1),
        launch_id: "h1".into(),
        launched_at_ms: 0,
        tags: BTreeMap::new(),
        stopping_since_ms: None,
    };
    file.save(&Registry { instances: vec![old.clone()] }).expect("save");

    assert_eq!(states(&p.list().await.expect("list")), [("local-h1-0".into(), InstanceState::Error)]);
    p.terminate("local-h1-0").await.expect("terminate");
    assert!(p.list().await.expect("list").is_empty());
    file.save(&Registry { instances: vec![old] }).expect("save");
    p.stop_all().await.expect("stop_all");
    assert!(p.list().await.expect("list").is_empty());
    assert!(process::is_alive(pid, start_time), "the stranger must not be signalled");
}

#[tokio::test]
async fn a_missing_program_is_invalid_and_says_what_to_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(dir.path(), SLEEPER);
    s.program = dir.path().join("no-such-worker");
    let (p, _cleanup) = provider(&s);
    let err = p.launch(&spec("i1"), 2).await.expect_err("missing program");
    assert!(matches!(err, ProviderError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-worker") && err.to_string().contains("program"), "{err}");
    assert!(entries(&s).is_empty());
}

#[tokio::test]
async fn an_empty_launch_id_is_invalid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (p, _cleanup) = provider(&settings(dir.path(), SLEEPER));
    let err = p.launch(&spec(""), 1).await.expect_err("empty launch id");
    assert!(matches!(err, ProviderError::Invalid { .. }), "{err:?}");
}

#[tokio::test]
async fn launches_stop_at_the_machines_available_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(dir.path(), SLEEPER);
    s.memory_per_instance = u64::MAX / 2;
    let (p, _cleanup) = provider(&s);
    let err = p.launch(&spec("big"), 2).await.expect_err("nothing fits");
    assert!(err.is_full(), "Capacity, so the controller bursts to the next pool: {err:?}");
    assert!(err.to_string().contains("MiB of memory available"), "{err}");
    assert!(entries(&s).is_empty());
    // Room for about two: three asked, two started.
    let available = super::process::available_memory().unwrap();
    s.memory_per_instance = available * 2 / 5;
    let (p, _cleanup) = provider(&s);
    let started = p.launch(&spec("some"), 3).await.expect("some fit");
    assert_eq!(started.len(), 2, "{started:?}");
}
