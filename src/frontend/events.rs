//! `GET /api/events`: finished jobs as Server-Sent Events, for the dashboard.
//!
//! Each event's id is the job's place in the order this front end's index saw jobs finish
//! ([`crate::index::FinishedEvent::seq`]), which the index keeps across restarts. A browser's
//! `EventSource` reconnects by itself (after the `retry` the stream announces) and sends the
//! last id it saw as `Last-Event-ID`; the stream then replays every job finished since, from
//! the index, before going live. So a dashboard catches up after a front-end restart without
//! a reload and without losing a job.

use std::collections::VecDeque;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use tokio::sync::watch;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::index::{FinishedEvent, ResultIndex};

/// How soon a browser reconnects after the stream breaks (a restart takes about a second).
const RETRY: Duration = Duration::from_secs(2);
/// A comment line this often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events read from the index per query while catching up.
const PAGE: u32 = 200;

/// Where to start, for clients that cannot set `Last-Event-ID`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Replay jobs finished after this event id; without it (and without `Last-Event-ID`) the
    /// stream starts with the next job to finish.
    pub after: Option<i64>,
    /// The bearer token, for browsers' `EventSource`, which cannot send headers (checked by
    /// the token middleware).
    pub access_token: Option<String>,
}

/// Finished jobs as Server-Sent Events (`event: job`, JSON data, the event id in `id`).
#[utoipa::path(
    get, path = "/api/events", params(EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "The last event id seen; the stream replays every job since")),
    responses(
        (status = 200, description = "text/event-stream of `job` events", body = FinishedEvent, content_type = "text/event-stream"),
        (status = 400, description = "Bad Last-Event-ID or after", body = ErrorBody),
    )
)]
pub async fn events(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let header = request.headers().get("Last-Event-ID").map(|v| v.to_str().unwrap_or("").trim().to_string());
    let after = match (header, query.after) {
        (Some(text), _) if !text.is_empty() => text.parse::<i64>().map_err(|_| {
            ApiError::bad_request("bad_last_event_id", format!("Last-Event-ID {text:?} is not an event id (a number)"))
        })?,
        (_, Some(after)) => after,
        _ => state.index.last_seq().await?,
    };
    let stream = EventStream {
        index: state.index.clone(),
        finished: state.finished.subscribe(),
        shutdown: state.shutdown.clone(),
        last: after,
        pending: VecDeque::from([Bytes::from(format!("retry: {}\n\n", RETRY.as_millis()))]),
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        // nginx and similar proxies would otherwise buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures_util::stream::unfold(stream, EventStream::next)))
}

/// One client's stream.
struct EventStream {
    index: ResultIndex,
    /// Changes whenever a job finishes.
    finished: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    /// The last event id sent.
    last: i64,
    /// Frames ready to send.
    pending: VecDeque<Bytes>,
}

impl EventStream {
    /// The next frame, or `None` when the front end shuts down (the client reconnects to the
    /// next one) or the index fails (likewise, with its `Last-Event-ID`).
    async fn next(mut self) -> Option<(Result<Bytes, actix_web::Error>, Self)> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Some((Ok(frame), self));
            }
            if *self.shutdown.borrow() {
                return None;
            }
            match self.index.finished_after(self.last, PAGE).await {
                Ok(events) if !events.is_empty() => {
                    for event in events {
                        self.last = event.seq;
                        self.pending.push_back(frame(&event));
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "event stream: cannot read the index; closing it");
                    return None;
                }
            }
            tokio::select! {
                changed = self.finished.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                changed = self.shutdown.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = tokio::time::sleep(KEEP_ALIVE) => self.pending.push_back(Bytes::from_static(b": keep-alive\n\n")),
            }
        }
    }
}

/// `id`, `event` and one `data` line (JSON has no raw newlines).
fn frame(event: &FinishedEvent) -> Bytes {
    let data = serde_json::to_string(event).expect("a FinishedEvent always serializes");
    Bytes::from(format!("id: {}\nevent: job\ndata: {data}\n\n", event.seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{JobStatus, LabelCount};

    #[test]
    fn a_frame_is_one_id_one_event_and_one_line_of_json() {
        let event = FinishedEvent {
            seq: 42,
            job_id: uuid::Uuid::nil(),
            status: JobStatus::Done,
            zone: Some("gate\n<1>".into()),
            file: None,
            finished_at_ms: 1,
            head_count: 2,
            labels: vec![LabelCount { label: "person".into(), count: 2 }],
            error: None,
        };
        let text = String::from_utf8(frame(&event).to_vec()).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[..2], ["id: 42", "event: job"]);
        assert!(lines[2].starts_with("data: {") && lines[2].contains(r#""zone":"gate\n<1>""#), "{text}");
        assert_eq!(lines[3..], ["", ""], "a blank line ends the event");
    }
}
