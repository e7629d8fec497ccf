//! `skyburst admin`: administration of a running front end through its `/api/admin/` routes,
//! over HTTP(S) with the token from `--token` or `BEARER_TOKEN` (`admin` scope), trusting
//! `--ca-cert` as `skyburst load` does. Commands that remove or move something need `--yes`:
//! without it they say what would be done, change nothing and exit 2.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, Url};
use serde_json::Value;

use crate::cli::{AdminArgs, AdminBucket, AdminCommand, AdminQueue};

/// The exit code of a command that needs `--yes` and was not given it (clap's usage errors
/// exit 2 too: the command line was not enough).
pub const EXIT_UNCONFIRMED: u8 = 2;

/// How long one call may take: a purge of a large bucket deletes object by object.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Runs an `admin` subcommand.
pub fn run(args: &AdminArgs) -> anyhow::Result<ExitCode> {
    if let Some(plan) = unconfirmed(&args.command) {
        eprintln!("{plan}. Nothing was changed: pass --yes to do it.");
        return Ok(ExitCode::from(EXIT_UNCONFIRMED));
    }
    anyhow::ensure!(
        args.token.is_none() || args.insecure || !crate::tls::is_cleartext_off_loopback(&args.url),
        "refusing to send the token to {} over plain HTTP: it would cross the network in cleartext. \
         Use the front end's https:// URL (with --ca-cert for a self-signed certificate), or pass --insecure",
        args.url
    );
    let (method, url) = request(&args.url, &args.command)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let body = runtime.block_on(call(args, method, url))?;
    match args.json {
        true => println!("{}", serde_json::to_string_pretty(&body)?),
        false => print!("{}", render(&args.command, &body)),
    }
    Ok(ExitCode::SUCCESS)
}

/// What a destructive command would do, when `--yes` is missing; `None` when it may go ahead.
fn unconfirmed(command: &AdminCommand) -> Option<String> {
    let plan = match command {
        AdminCommand::Queues | AdminCommand::DeadLetters { .. } => return None,
        AdminCommand::Redrive { yes: true, .. }
        | AdminCommand::DropMessage { yes: true, .. }
        | AdminCommand::PurgeQueue { yes: true, .. }
        | AdminCommand::PurgeStore { yes: true, .. }
        | AdminCommand::DeleteJob { yes: true, .. } => return None,
        AdminCommand::Redrive { message: None, .. } => {
            "this would move every dead-lettered message back to the request queue".to_string()
        }
        AdminCommand::Redrive { message: Some(id), .. } => {
            format!("this would move dead-lettered message {id} back to the request queue")
        }
        AdminCommand::DropMessage { id, .. } => format!("this would remove dead-lettered message {id}"),
        AdminCommand::PurgeQueue { queue, .. } => format!("this would remove every message of {}", queue_words(*queue)),
        AdminCommand::PurgeStore { bucket, prefix, older_than, .. } => {
            let mut plan = format!("this would remove every object of the {} bucket", bucket_name(*bucket));
            if let Some(prefix) = prefix {
                let _ = write!(plan, " under {prefix:?}");
            }
            if let Some(older_than) = older_than {
                let _ = write!(plan, " last written before {older_than}");
            }
            plan + " (control/ and releases/ are kept unless --prefix names them)"
        }
        AdminCommand::DeleteJob { id, .. } => {
            format!("this would delete job {id}: its image, its result and its index row")
        }
    };
    Some(plan)
}

fn queue_words(queue: AdminQueue) -> &'static str {
    match queue {
        AdminQueue::Requests => "the request queue (queued jobs are lost)",
        AdminQueue::DeadLetters => "the dead-letter queue",
    }
}

fn bucket_name(bucket: AdminBucket) -> &'static str {
    match bucket {
        AdminBucket::Input => "input",
        AdminBucket::Output => "output",
    }
}

/// The route and URL a command calls, path segments and query values encoded.
fn request(base: &str, command: &AdminCommand) -> anyhow::Result<(Method, Url)> {
    let mut url = Url::parse(base).with_context(|| format!("--url {base:?} is not a URL"))?;
    let (method, segments, query): (Method, Vec<&str>, Vec<(&str, String)>) = match command {
        AdminCommand::Queues => (Method::GET, vec!["queues"], vec![]),
        AdminCommand::DeadLetters { limit } => (Method::GET, vec!["dead-letters"], vec![("limit", limit.to_string())]),
        AdminCommand::Redrive { message, .. } => {
            let query = message.iter().map(|id| ("message_id", id.clone())).collect();
            (Method::POST, vec!["dead-letters", "redrive"], query)
        }
        AdminCommand::DropMessage { id, .. } => (Method::DELETE, vec!["dead-letters", "messages", id.as_str()], vec![]),
        AdminCommand::PurgeQueue { queue, .. } => {
            let name = match queue {
                AdminQueue::Requests => "requests",
                AdminQueue::DeadLetters => "dead-letters",
            };
            (Method::POST, vec!["queues", name, "purge"], vec![])
        }
        AdminCommand::PurgeStore { bucket, prefix, older_than, .. } => {
            let mut query = vec![("bucket", bucket_name(*bucket).to_string())];
            query.extend(prefix.iter().map(|p| ("prefix", p.clone())));
            query.extend(older_than.iter().map(|t| ("older_than", t.clone())));
            (Method::POST, vec!["store", "purge"], query)
        }
        AdminCommand::DeleteJob { id, .. } => (Method::DELETE, vec!["jobs", id.as_str()], vec![]),
    };
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--url {base:?} cannot take a path"))?
        .pop_if_empty()
        .extend(["api", "admin"])
        .extend(segments);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok((method, url))
}

/// Calls the route; a status other than 2xx is an error with the front end's `detail`.
async fn call(args: &AdminArgs, method: Method, url: Url) -> anyhow::Result<Value> {
    let builder = reqwest::Client::builder().timeout(TIMEOUT);
    let client = crate::load::trust_ca_cert(builder, args.ca_cert.as_deref())?
        .build()
        .context("cannot build the HTTP client")?;
    let mut request = client.request(method.clone(), url.clone());
    if let Some(token) = &args.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.with_context(|| format!("{method} {url} failed"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let detail = body["detail"].as_str().unwrap_or("no detail");
        let code = body["error"].as_str().unwrap_or("error");
        anyhow::bail!("{method} {} answered {status}: {code}: {detail}", url.path());
    }
    Ok(body)
}

/// The answer as text for a person.
fn render(command: &AdminCommand, body: &Value) -> String {
    match command {
        AdminCommand::Queues => render_queues(body),
        AdminCommand::DeadLetters { .. } => render_dead_letters(body),
        AdminCommand::Redrive { .. } => {
            let mut text = format!(
                "moved {} message(s) from {} to {} ({})\n",
                body["moved"],
                text(&body["from"]),
                text(&body["to"]),
                text(&body["method"])
            );
            if let Some(note) = body["note"].as_str() {
                let _ = writeln!(text, "note: {note}");
            }
            text
        }
        AdminCommand::DropMessage { .. } => {
            format!("removed message {} from {}\n", text(&body["message_id"]), text(&body["queue"]))
        }
        AdminCommand::PurgeQueue { .. } => {
            format!("removed {} message(s) from {}\n", body["removed"], text(&body["queue"]))
        }
        AdminCommand::PurgeStore { .. } => render_store_purge(body),
        AdminCommand::DeleteJob { .. } => render_deleted_job(body),
    }
}

/// A JSON string as is, anything else (missing: `-`) as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn render_queues(body: &Value) -> String {
    let mut out = String::new();
    for (label, key) in [("requests", "requests"), ("dead letters", "dead_letters"), ("responses", "responses")] {
        let q = &body[key];
        let _ = writeln!(
            out,
            "{label:<13} {:<40} visible {:>6}  in flight {:>6}  delayed {:>6}",
            text(&q["name"]),
            q["visible"],
            q["in_flight"],
            q["delayed"]
        );
    }
    out
}

fn render_dead_letters(body: &Value) -> String {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let mut out = format!("{} dead-lettered message(s) in {}\n", messages.len(), text(&body["queue"]));
    for m in &messages {
        let _ = write!(
            out,
            "{}  job {}  zone {}  received {}  sent {}",
            text(&m["message_id"]),
            text(&m["job_id"]),
            text(&m["zone"]),
            m["receive_count"],
            text(&m["sent_at"])
        );
        if let Some(attempts) = m["attempts"].as_u64() {
            let _ = write!(out, "  attempts {attempts}");
        }
        if let Some(error) = m["last_error"].as_str() {
            let _ = write!(out, "  last error: {error}");
        }
        if let Some(body) = m["unreadable"].as_str() {
            let _ = write!(out, "  unreadable body: {body:?}");
        }
        out.push('\n');
    }
    out
}

fn render_store_purge(body: &Value) -> String {
    let mut out = format!(
        "removed {} object(s), {} bytes, from {}/{}",
        body["removed"],
        body["bytes"],
        text(&body["bucket"]),
        body["prefix"].as_str().unwrap_or_default()
    );
    if let Some(cutoff) = body["older_than"].as_str() {
        let _ = write!(out, " last written before {cutoff}");
    }
    let _ = writeln!(out, "; kept {} under control/ or releases/", body["protected"]);
    for key in body["keys"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  {}", text(key));
    }
    if body["keys_truncated"].as_bool() == Some(true) {
        out.push_str("  … (only the first keys are listed)\n");
    }
    out
}

fn render_deleted_job(body: &Value) -> String {
    let removed: Vec<String> = body["removed"].as_array().into_iter().flatten().map(text).collect();
    let row = if body["index_row"].as_bool() == Some(true) { "index row removed" } else { "no index row" };
    let objects = if removed.is_empty() { "no objects".to_string() } else { removed.join(", ") };
    format!("deleted job {}: removed {objects}; {row}\n", text(&body["job_id"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_built_with_encoded_segments_and_queries() {
        let purge = AdminCommand::PurgeStore {
            bucket: AdminBucket::Output,
            prefix: Some("results/".into()),
            older_than: Some("2026-11-24T10:00:00+01:00".into()),
            yes: true,
        };
        let (method, url) = request("https://front.example:8443/", &purge).unwrap();
        assert_eq!(method, Method::POST);
        assert_eq!(
            url.as_str(),
            "https://front.example:8443/api/admin/store/purge?bucket=output&prefix=results%2F&older_than=2026-11-24T10%3A00%3A00%2B01%3A00"
        );
        let drop = AdminCommand::DropMessage { id: "a/b c".into(), yes: true };
        let (method, url) = request("http://127.0.0.1:8080/skyburst", &drop).unwrap();
        assert_eq!((method, url.path()), (Method::DELETE, "/skyburst/api/admin/dead-letters/messages/a%2Fb%20c"));
    }

    #[test]
    fn destructive_commands_say_what_they_would_do_without_yes() {
        let redrive = AdminCommand::Redrive { message: Some("7".into()), yes: false };
        assert!(unconfirmed(&redrive).unwrap().contains("message 7"));
        assert!(unconfirmed(&AdminCommand::Redrive { message: None, yes: true }).is_none());
        assert!(unconfirmed(&AdminCommand::Queues).is_none());
        let purge = AdminCommand::PurgeStore {
            bucket: AdminBucket::Input,
            prefix: Some("images/".into()),
            older_than: Some("7d".into()),
            yes: false,
        };
        let plan = unconfirmed(&purge).unwrap();
        assert!(plan.contains("input bucket") && plan.contains("images/") && plan.contains("7d"), "{plan}");
    }
}
