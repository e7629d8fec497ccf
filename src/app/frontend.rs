//! The front end's parts: its state (queues, store, index, its own response queue) and its
//! bearer tokens.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use super::backends::{backends, response_queue};
use crate::config::Config;
use crate::frontend::auth::Tokens;
use crate::frontend::{AppState, Settings};
use crate::index::ResultIndex;

/// The front end's state, with `shutdown` turning true when it should stop.
pub async fn frontend(config: &Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<AppState> {
    let backends = backends(config, "serve").await?;
    let f = &config.frontend;
    let index_path = config.embedded.data_dir.join("index.db");
    let index = ResultIndex::open(&index_path)?;
    let responses = response_queue(config, &backends).await?;
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
        instance_id: f.instance_id.clone(),
        long_poll: Duration::from_secs(config.queue.long_poll_seconds),
    };
    Ok(AppState {
        settings,
        requests: backends.queues.requests,
        dead_letters: backends.queues.dead_letters,
        responses,
        store: backends.store,
        index,
        waiters: Default::default(),
        shutdown,
        metrics: Default::default(),
        finished: Arc::new(watch::channel(0).0),
        probe: Default::default(),
    })
}

/// The bearer tokens from `frontend.tokens` and `frontend.tokens_file`.
pub fn tokens(config: &Config) -> anyhow::Result<Tokens> {
    let mut tokens = config.frontend.tokens.clone();
    if let Some(path) = &config.frontend.tokens_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read frontend.tokens_file {}", path.display()))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            anyhow::ensure!(line.len() >= 16, "a token in {} is shorter than 16 characters", path.display());
            tokens.push(line.to_string());
        }
    }
    Ok(Tokens::new(&tokens))
}
