//! The front end's parts: its state (queues, store, index, its own response queue) and its
//! bearer tokens.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use super::backends::{backends, response_queue};
use crate::config::{Config, QueueBackend, StoreBackend};
use crate::frontend::auth::{Scopes, Tokens};
use crate::frontend::disk::Floor;
use crate::frontend::upkeep::Retention;
use crate::frontend::{AppState, Settings};
use crate::index::ResultIndex;

/// The state of a front end listening on `port` (its instance id, and so its response queue,
/// may depend on it: [`crate::config::FrontendConfig::instance_id_on`]), with `shutdown`
/// turning true when it should stop.
pub async fn frontend(config: &Config, port: u16, shutdown: watch::Receiver<bool>) -> anyhow::Result<AppState> {
    let backends = backends(config, "serve").await?;
    let f = &config.frontend;
    let index_path = config.embedded.data_dir.join("index.db");
    let index = ResultIndex::open(&index_path)?;
    let instance_id = f.instance_id_on(port);
    let responses = response_queue(config, &backends, &instance_id).await?;
    let settings = Settings {
        wait: Duration::from_secs(f.wait_seconds),
        max_body: f.max_body_bytes,
        body_grace: Duration::from_secs_f64(f.body_grace_seconds),
        body_min_rate: f.body_min_bytes_per_second,
        max_file_name: f.max_file_name_bytes,
        max_waiting: f.max_waiting,
        max_connections: f.max_connections,
        max_pixels: config.detector.max_pixels,
        input_bucket: config.store.input_bucket.clone(),
        output_bucket: config.store.output_bucket.clone(),
        instance_id,
        long_poll: Duration::from_secs(config.queue.long_poll_seconds),
        max_receives: config.queue.max_receives,
        retention: retention(config),
        disk_floor: disk_floor(config),
    };
    Ok(AppState {
        settings,
        requests: backends.queues.requests,
        dead_letters: backends.queues.dead_letters,
        responses,
        replies: crate::worker::ReplyQueues::new(backends.queues.open),
        store: backends.store,
        index,
        waiters: Default::default(),
        shutdown,
        metrics: Default::default(),
        finished: Arc::new(watch::channel(0).0),
        probe: Default::default(),
    })
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// What the upkeep task keeps: jobs for `store.retention_days`; the embedded queues'
/// messages for their retention (SQS keeps its own); the embedded store is swept for objects
/// without an index row (S3's lifecycle rules expire its own).
fn retention(config: &Config) -> Retention {
    let q = &config.queue;
    Retention {
        jobs: Duration::from_secs_f64(config.store.retention_days * DAY.as_secs_f64()),
        messages: DAY * q.retention_days,
        dead_letters: DAY * q.dead_letter_retention_days,
        sweep_store: config.store.backend == StoreBackend::Embedded,
    }
}

/// `store.min_free_mb` of the data directory, when something in it grows with uploads (the
/// embedded store or queue; the result index always does, but by a few hundred bytes a job).
fn disk_floor(config: &Config) -> Option<Floor> {
    let embedded = config.store.backend == StoreBackend::Embedded || config.queue.backend == QueueBackend::Embedded;
    (embedded && config.store.min_free_mb > 0).then(|| Floor {
        dir: config.embedded.data_dir.clone(),
        min_free_bytes: config.store.min_free_mb * 1024 * 1024,
    })
}

/// The bearer tokens: `frontend.tokens` (each with `submit` and `read`) and the lines of
/// `frontend.tokens_file`, `TOKEN` or `TOKEN submit,read,admin` (blank lines and `#` comments
/// skipped; a token alone gets `submit` and `read`).
pub fn tokens(config: &Config) -> anyhow::Result<Tokens> {
    let mut tokens: Vec<(String, Scopes)> =
        config.frontend.tokens.iter().map(|t| (t.clone(), Scopes::SUBMIT_READ)).collect();
    if let Some(path) = &config.frontend.tokens_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read frontend.tokens_file {}", path.display()))?;
        tokens.extend(parse_tokens_file(&text).with_context(|| format!("in frontend.tokens_file {}", path.display()))?);
    }
    Ok(Tokens::new(&tokens))
}

/// The tokens and scopes of a tokens file; an error names the line (never the token).
fn parse_tokens_file(text: &str) -> anyhow::Result<Vec<(String, Scopes)>> {
    let lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    lines
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(number, line)| {
            let mut words = line.split_whitespace();
            let token = words.next().unwrap_or_default();
            anyhow::ensure!(token.len() >= 16, "line {number}: the token is shorter than 16 characters");
            let scopes = match words.next() {
                Some(scopes) => Scopes::parse(scopes).map_err(|e| anyhow::anyhow!("line {number}: {e}"))?,
                None => Scopes::SUBMIT_READ,
            };
            anyhow::ensure!(
                words.next().is_none(),
                "line {number}: write `TOKEN scope,scope`, without spaces in the list"
            );
            Ok((token.to_string(), scopes))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_file_gives_each_token_its_scopes() {
        let text = "# dashboards\nreader-token-0123456789 read\n\nsubmitter-token-0123456 submit\nplain-token-0123456789\nadmin-token-0123456789 admin,read\n";
        let tokens = parse_tokens_file(text).unwrap();
        let scopes: Vec<Scopes> = tokens.iter().map(|(_, s)| *s).collect();
        assert_eq!(scopes[0], Scopes { read: true, ..Scopes::default() });
        assert_eq!(scopes[1], Scopes { submit: true, ..Scopes::default() });
        assert_eq!(scopes[2], Scopes::SUBMIT_READ);
        assert!(scopes[3].admin && scopes[3].read);
        let short = parse_tokens_file("short read\n").unwrap_err().to_string();
        assert!(short.contains("line 1") && !short.contains("short read"), "{short}");
        assert!(parse_tokens_file("long-enough-token-012 root\n").unwrap_err().to_string().contains("root"));
    }
}
