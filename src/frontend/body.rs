//! Request bodies within their limits: a body is cut as soon as it passes its size, arrives
//! slower than the minimum rate, or (multipart) spends too long in a preamble or a part's
//! headers, so no client can make the front end hold memory, CPU or a connection for long.
//!
//! [`Bounded`] wraps the raw payload, so the limits hold whatever reads it: the whole-body
//! reader here and actix-multipart's parser alike (the parser buffers a part's headers until
//! their blank line and rescans them per chunk; unbounded, one endless header costs memory and
//! quadratic time).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::error::ApiError;
use super::Settings;

/// Longest multipart preamble (before the first boundary) or part header block. Browsers and
/// HTTP libraries send none and about 150 bytes; 8 KiB leaves room for long file names.
pub const MAX_MULTIPART_HEAD: usize = 8 * 1024;

/// The limits one body is read under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body, in bytes.
    pub max: usize,
    /// Time allowed before the minimum rate applies.
    pub grace: Duration,
    /// Slowest accepted rate, bytes per second.
    pub min_rate: u64,
}

impl Limits {
    /// The front end's limits.
    pub fn of(settings: &Settings) -> Self {
        Self { max: settings.max_body, grace: settings.body_grace, min_rate: settings.body_min_rate }
    }

    /// When a body of `read` bytes, started at `started`, must have arrived by.
    fn deadline(&self, started: Instant, read: usize) -> Instant {
        started + self.grace + Duration::from_secs_f64(read as f64 / self.min_rate as f64)
    }
}

/// Why a body was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    TooLarge,
    TooSlow,
    HeadTooLong,
}

/// A payload stream that fails once the body breaks its [`Limits`], and for a multipart body,
/// once a preamble or a part's header block passes [`MAX_MULTIPART_HEAD`].
pub struct Bounded<S> {
    inner: S,
    limits: Limits,
    started: Instant,
    read: usize,
    deadline: Pin<Box<Sleep>>,
    framing: Option<Framing>,
    cut: Rc<Cell<Option<Cut>>>,
}

/// Why a [`Bounded`] body was cut, readable after the body went to a parser that reports only
/// "payload error".
pub struct Verdict {
    limits: Limits,
    cut: Rc<Cell<Option<Cut>>>,
}

impl<S> Bounded<S> {
    /// `inner` under `limits`; with `boundary`, its multipart framing is watched too.
    pub fn new(inner: S, limits: Limits, boundary: Option<&str>) -> (Self, Verdict) {
        let started = Instant::now();
        let deadline = Box::pin(tokio::time::sleep_until(limits.deadline(started, 0)));
        let cut = Rc::new(Cell::new(None));
        let verdict = Verdict { limits, cut: cut.clone() };
        let body = Self { inner, limits, started, read: 0, deadline, framing: boundary.map(Framing::new), cut };
        (body, verdict)
    }

    fn fail(&mut self, cut: Cut) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.cut.set(Some(cut));
        let error = match cut {
            Cut::TooLarge => PayloadError::Overflow,
            Cut::TooSlow => PayloadError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "body too slow")),
            Cut::HeadTooLong => PayloadError::Io(std::io::Error::other("multipart head too long")),
        };
        Poll::Ready(Some(Err(error)))
    }
}

impl Verdict {
    /// The error a cut body is answered with, if it was cut; the connection is then closed.
    pub fn error(&self) -> Option<ApiError> {
        self.cut.get().map(|cut| self.answer(cut).closing())
    }

    fn answer(&self, cut: Cut) -> ApiError {
        match cut {
            Cut::TooLarge => too_large(self.limits.max),
            Cut::TooSlow => too_slow(&self.limits),
            Cut::HeadTooLong => ApiError::bad_request(
                "multipart_head_too_long",
                format!(
                    "a multipart preamble or part header block is longer than {MAX_MULTIPART_HEAD} bytes; \
                     send the file as a plain form field"
                ),
            ),
        }
    }
}

impl<S> Stream for Bounded<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.cut.get().is_some() {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return self.fail(Cut::TooSlow);
        }
        let chunk = match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => chunk,
            other => return other,
        };
        self.read += chunk.len();
        if self.read > self.limits.max {
            return self.fail(Cut::TooLarge);
        }
        if self.framing.as_mut().is_some_and(|f| !f.feed(&chunk)) {
            return self.fail(Cut::HeadTooLong);
        }
        let deadline = self.limits.deadline(self.started, self.read);
        self.deadline.as_mut().reset(deadline);
        Poll::Ready(Some(Ok(chunk)))
    }
}

/// 413 for a body over `frontend.max_body_bytes`.
pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is larger than {limit} bytes (frontend.max_body_bytes); send a smaller image"),
    )
}

/// 408 for a body slower than the minimum rate.
fn too_slow(limits: &Limits) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_too_slow",
        format!(
            "the request body arrived slower than {} bytes/s after {:.0} s (frontend.body_min_bytes_per_second); \
             nothing was kept, send it again on a faster link",
            limits.min_rate,
            limits.grace.as_secs_f64()
        ),
    )
}

// === multipart framing ===

/// Where a multipart body is: before the first boundary, in a part's headers, in its content,
/// or after the closing boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preamble,
    Head,
    Content,
    Epilogue,
}

/// Follows a multipart body's framing chunk by chunk, counting the bytes of each preamble and
/// header block; contents are bounded by the body's size alone.
struct Framing {
    /// `\r\n--<boundary>`: a boundary line (the body's first one may lack the `\r\n`).
    delimiter: Vec<u8>,
    phase: Phase,
    /// Bytes spent in the current preamble or header block.
    spent: usize,
    /// The last bytes seen, so a delimiter split across chunks is still found.
    carry: Vec<u8>,
    /// Just past a boundary: `--` next means the closing boundary, anything else a part's head.
    after_boundary: bool,
}

impl Framing {
    fn new(boundary: &str) -> Self {
        let delimiter = format!("\r\n--{boundary}").into_bytes();
        // The body starts as if after a line break, so a first line `--<boundary>` matches.
        Self { delimiter, phase: Phase::Preamble, spent: 0, carry: b"\r\n".to_vec(), after_boundary: false }
    }

    /// Takes the next chunk; false once a preamble or header block is too long.
    fn feed(&mut self, chunk: &[u8]) -> bool {
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(chunk);
        let mut at = 0;
        loop {
            if self.after_boundary {
                if data.len() - at < 2 {
                    self.carry = data[at..].to_vec();
                    return true;
                }
                self.after_boundary = false;
                if data[at..].starts_with(b"--") {
                    self.phase = Phase::Epilogue;
                }
            }
            let (needle, next): (&[u8], Phase) = match self.phase {
                Phase::Preamble | Phase::Content => (&self.delimiter, Phase::Head),
                Phase::Head => (b"\r\n\r\n", Phase::Content),
                Phase::Epilogue => return true,
            };
            match memchr::memmem::find(&data[at..], needle) {
                Some(found) => {
                    self.spent += found;
                    if self.over() {
                        return false;
                    }
                    at += found + needle.len();
                    self.phase = next;
                    self.spent = 0;
                    self.after_boundary = next == Phase::Head;
                }
                None => {
                    // Keep enough to find a needle that straddles this chunk and the next.
                    let keep = (needle.len() - 1).min(data.len() - at);
                    self.spent += data.len() - at - keep;
                    self.carry = data[data.len() - keep..].to_vec();
                    return !self.over();
                }
            }
        }
    }

    fn over(&self) -> bool {
        matches!(self.phase, Phase::Preamble | Phase::Head) && self.spent > MAX_MULTIPART_HEAD
    }
}

/// The `boundary` parameter of a `multipart/*` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim().eq_ignore_ascii_case("boundary").then(|| value.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(framing: &mut Framing, body: &[u8], chunk: usize) -> bool {
        body.chunks(chunk).all(|c| framing.feed(c))
    }

    fn form(head: &str, content: &[u8]) -> Vec<u8> {
        let mut body = format!("--XyZ\r\n{head}\r\n\r\n").into_bytes();
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n--XyZ--\r\n");
        body
    }

    #[test]
    fn a_normal_form_passes_in_any_chunking_with_any_content() {
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let body = form("Content-Disposition: form-data; name=\"myfile\"; filename=\"bus.jpg\"", &content);
        for chunk in [1, 2, 7, 64, 4096, body.len()] {
            let mut framing = Framing::new("XyZ");
            assert!(feed_all(&mut framing, &body, chunk), "chunk {chunk}");
            assert_eq!(framing.phase, Phase::Epilogue, "chunk {chunk}");
        }
    }

    #[test]
    fn an_endless_header_or_preamble_is_cut_once_past_the_limit() {
        let endless_header = format!("--XyZ\r\nContent-Disposition: form-data; name=\"{}", "a".repeat(100_000));
        let mut framing = Framing::new("XyZ");
        let fed: usize = endless_header.as_bytes().chunks(1000).take_while(|c| framing.feed(c)).count();
        assert!(fed * 1000 <= MAX_MULTIPART_HEAD + 2000, "cut after {fed} chunks");
        // Counted to within a boundary's length (the bytes kept to find a split boundary).
        let preamble = "x".repeat(MAX_MULTIPART_HEAD + 16);
        assert!(!Framing::new("XyZ").feed(preamble.as_bytes()));
        // A long content is fine: it is bounded by the body's size alone.
        let mut framing = Framing::new("XyZ");
        assert!(feed_all(
            &mut framing,
            &form("Content-Disposition: form-data; name=\"myfile\"", &[b'a'; 100_000]),
            333
        ));
    }

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        assert_eq!(boundary("multipart/form-data; boundary=XyZ").as_deref(), Some("XyZ"));
        assert_eq!(boundary("multipart/form-data; charset=utf-8; Boundary=\"a b\"").as_deref(), Some("a b"));
        assert_eq!(boundary("multipart/form-data"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_body_is_cut_at_its_deadline_and_a_large_one_at_its_size() {
        use futures_util::StreamExt;
        let limits = Limits { max: 10, grace: Duration::from_secs(5), min_rate: 1024 };
        // One byte, then silence: cut 5 s (plus 1 ms for the byte) after the start.
        let slow = futures_util::stream::iter([Ok(Bytes::from_static(b"a"))]).chain(futures_util::stream::pending());
        let (mut body, verdict) = Bounded::new(Box::pin(slow), limits, None);
        assert!(body.next().await.unwrap().is_ok());
        let started = Instant::now();
        assert!(body.next().await.unwrap().is_err());
        assert!(started.elapsed() >= Duration::from_secs(4), "{:?}", started.elapsed());
        assert_eq!(verdict.error().unwrap().status(), StatusCode::REQUEST_TIMEOUT);
        let big = futures_util::stream::iter([Ok(Bytes::from_static(b"0123456789a"))]);
        let (mut body, verdict) = Bounded::new(big, limits, None);
        assert!(body.next().await.unwrap().is_err());
        assert_eq!(verdict.error().unwrap().status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
