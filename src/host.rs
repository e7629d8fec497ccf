//! This process's name where several processes meet: worker instance ids, controller lease
//! holders and log lines.

/// `<hostname>-<pid>`: unique on a machine, readable in logs.
pub fn process_id() -> String {
    let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}
