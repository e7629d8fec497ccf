//! What the service's own errors keep as their cause: the failure underneath (an SDK error, a
//! SQLite or I/O error) or, where there is none, the backend's own words. The same vocabulary
//! as the providers crate's errors, so a cause reads the same whichever layer reports it.

pub use skyburst_providers::{explained, Cause};

/// `error` and every cause under it, joined by `: ` (what `{:#}` prints for anyhow errors),
/// for a log line or an answer that must say why a TLS handshake or an HTTP call failed.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let line = next.to_string();
        // Wrappers often repeat their source's words; say each once.
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = next.source();
    }
    text
}
