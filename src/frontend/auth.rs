//! Optional bearer-token authentication with scopes. Tokens are compared by their sha256
//! digests so the comparison takes the same time whichever byte differs.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// Routes a load balancer or orchestrator probes without credentials.
const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];
/// The one route that also takes the token as `?access_token=`: a browser's `EventSource`
/// cannot send headers.
const QUERY_TOKEN_PATH: &str = "/api/events";

/// What a token may do. `submit`: send images and read one's own jobs; `read`: dashboards,
/// results, events, the fleet, metrics and every job; `admin`: everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes {
    /// Send images; read the jobs this token sent.
    pub submit: bool,
    /// Read everything.
    pub read: bool,
    /// Everything, administration included.
    pub admin: bool,
}

impl Scopes {
    /// `submit` and `read`: what a token without scopes (`frontend.tokens`) may do.
    pub const SUBMIT_READ: Scopes = Scopes { submit: true, read: true, admin: false };
    /// Every scope: authentication is off.
    pub const ALL: Scopes = Scopes { submit: true, read: true, admin: true };

    /// Parses `submit,read`; an unknown scope is an error naming it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut scopes = Scopes::default();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "submit" => scopes.submit = true,
                "read" => scopes.read = true,
                "admin" => scopes.admin = true,
                other => return Err(format!("unknown scope {other:?}; scopes are submit, read and admin")),
            }
        }
        if scopes == Scopes::default() {
            return Err("no scope given; scopes are submit, read and admin".into());
        }
        Ok(scopes)
    }

    fn allows(self, needed: Needed) -> bool {
        self.admin
            || match needed {
                Needed::Submit => self.submit,
                Needed::Read => self.read,
                Needed::SubmitOrRead => self.submit || self.read,
                Needed::Admin => false,
            }
    }
}

/// Who sent a request, as the token check found it; in the request's extensions for handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The first 16 hex digits of the token's sha256, recorded with the jobs it submits;
    /// `None` when authentication is off.
    pub id: Option<String>,
    /// What it may do.
    pub scopes: Scopes,
}

impl Caller {
    /// Whether it may read a job that `submitter` sent: `read` and `admin` read every job,
    /// `submit` only its own.
    pub fn may_read_job(&self, submitter: Option<&str>) -> bool {
        self.scopes.read || self.scopes.admin || (self.id.is_some() && self.id.as_deref() == submitter)
    }
}

/// The caller the token check found for `req`; every scope where no check ran (a test's bare
/// app).
pub fn caller(req: &actix_web::HttpRequest) -> Caller {
    req.extensions().get::<Caller>().cloned().unwrap_or(Caller { id: None, scopes: Scopes::ALL })
}

/// The scope a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needed {
    /// Sending images.
    Submit,
    /// Reading everything.
    Read,
    /// Administration: the routes under `/api/admin/`.
    Admin,
    /// Either scope: one job (its submitter, which the handler checks, or a reader) and the
    /// OpenAPI document.
    SubmitOrRead,
}

/// The scope `method` on the route `pattern` needs.
fn needed(method: &actix_web::http::Method, pattern: Option<&str>) -> Needed {
    match (method.as_str(), pattern) {
        ("POST", Some("/api/detect" | "/upload" | "/upload/{zone}" | "/api/jobs")) => Needed::Submit,
        (_, Some("/api/jobs/{job_id}" | "/api/jobs/{job_id}/image")) => Needed::SubmitOrRead,
        (_, Some("/api/openapi.json")) => Needed::SubmitOrRead,
        (_, Some(pattern)) if pattern.starts_with("/api/admin/") => Needed::Admin,
        _ => Needed::Read,
    }
}

/// The accepted tokens' digests and scopes; empty means authentication is off.
#[derive(Clone, Default)]
pub struct Tokens(Vec<([u8; 32], Scopes)>);

impl Tokens {
    /// From the configured tokens and their scopes.
    pub fn new(tokens: &[(String, Scopes)]) -> Self {
        Self(tokens.iter().map(|(t, scopes)| (Sha256::digest(t.as_bytes()).into(), *scopes)).collect())
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// The caller presenting `presented`, if it is a configured token. Every digest is
    /// compared, so the time taken does not say which token came close.
    fn caller(&self, presented: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let found = self.0.iter().fold(None, |found, (t, scopes)| if *t == digest { Some(*scopes) } else { found });
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        found.map(|scopes| Caller { id: Some(id), scopes })
    }
}

/// Without tokens on a loopback address, requests must name a loopback host: a web page a user
/// opens can point its own domain's DNS at 127.0.0.1 (DNS rebinding) and have the browser read
/// this front end's answers, but its requests carry that domain as `Host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopbackHostOnly(pub bool);

/// Whether `host` (a `Host` header: `name[:port]`) names this machine's loopback.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => {
            host.rsplit_once(':').map_or(host, |(name, port)| if port.parse::<u16>().is_ok() { name } else { host })
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `?access_token=` on [`QUERY_TOKEN_PATH`].
fn query_token(req: &ServiceRequest) -> Option<String> {
    if req.path() != QUERY_TOKEN_PATH {
        return None;
    }
    let query = web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string()).ok()?;
    query.get("access_token").cloned()
}

/// Rejects requests without a valid `Authorization: Bearer <token>` when tokens are set, and
/// requests whose token lacks the route's scope; puts the [`Caller`] in the request's extensions.
/// The query-string token of `/api/events` is taken only with the `read` scope (a URL ends up
/// in logs and histories; a dashboard token is the one to risk there).
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let tokens = req.app_data::<web::Data<Tokens>>().map(|t| t.get_ref().clone()).unwrap_or_default();
    let guard = req.app_data::<web::Data<LoopbackHostOnly>>().is_some_and(|g| g.0);
    let host = req.headers().get(actix_web::http::header::HOST).and_then(|h| h.to_str().ok());
    if guard && !host.is_none_or(loopback_host) {
        let error = ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_host",
            "without tokens this front end answers only requests addressed to localhost or 127.0.0.1; \
             set frontend.tokens to serve other names",
        );
        return Ok(req.into_response(error.error_response()));
    }
    let open = OPEN_PATHS.contains(&req.path()) || super::dashboard::serves(req.path());
    if !tokens.enabled() || open {
        req.extensions_mut().insert(Caller { id: None, scopes: Scopes::ALL });
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    }
    let bearer = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let caller = match bearer {
        Some(token) => tokens.caller(&token),
        None => query_token(&req).and_then(|token| tokens.caller(&token)).filter(|c| c.scopes.read || c.scopes.admin),
    };
    let Some(caller) = caller else {
        let error = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <token>` with one of the tokens in frontend.tokens or frontend.tokens_file",
        );
        return Ok(req.into_response(error.error_response()));
    };
    let needed = needed(req.method(), req.match_pattern().as_deref());
    if !caller.scopes.allows(needed) {
        let scope = match needed {
            Needed::Submit => "submit",
            Needed::Admin => "admin",
            _ => "read",
        };
        let error = ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token lacks the {scope} scope that {} {} needs", req.method(), req.path()),
        );
        return Ok(req.into_response(error.error_response()));
    }
    req.extensions_mut().insert(caller);
    next.call(req).await.map(ServiceResponse::map_into_boxed_body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::Method;

    #[test]
    fn only_loopback_hosts_pass_the_rebinding_guard() {
        for host in ["127.0.0.1:8080", "localhost", "LOCALHOST:80", "[::1]:8080", "127.0.0.2"] {
            assert!(loopback_host(host), "{host}");
        }
        for host in ["evil.example:8080", "example.com", "10.0.0.1:8080", "[2001:db8::1]:80", "localhost.evil.example"]
        {
            assert!(!loopback_host(host), "{host}");
        }
    }

    #[test]
    fn scopes_parse_and_unknown_ones_are_named() {
        assert_eq!(Scopes::parse("submit, read").unwrap(), Scopes::SUBMIT_READ);
        assert!(Scopes::parse("admin").unwrap().admin);
        assert!(Scopes::parse("root").unwrap_err().contains("\"root\""));
        assert!(Scopes::parse("").is_err());
    }

    #[test]
    fn each_route_needs_its_scope() {
        let submit = Scopes { submit: true, ..Scopes::default() };
        let read = Scopes { read: true, ..Scopes::default() };
        let admin = Scopes { admin: true, ..Scopes::default() };
        let post = |p| needed(&Method::POST, Some(p));
        let get = |p| needed(&Method::GET, Some(p));
        for route in ["/api/detect", "/upload", "/upload/{zone}", "/api/jobs"] {
            assert!(submit.allows(post(route)) && !read.allows(post(route)) && admin.allows(post(route)), "{route}");
        }
        for route in
            ["/api/zones", "/api/stats", "/api/events", "/api/results", "/api/queues", "/api/fleet", "/metrics"]
        {
            assert!(!submit.allows(get(route)) && read.allows(get(route)) && admin.allows(get(route)), "{route}");
        }
        for route in ["/api/jobs/{job_id}", "/api/jobs/{job_id}/image", "/api/openapi.json"] {
            assert!(submit.allows(get(route)) && read.allows(get(route)), "{route}");
        }
        assert!(!submit.allows(needed(&Method::GET, None)), "an unmatched path needs read");
        let both = Scopes::SUBMIT_READ;
        for (method, route) in [
            (Method::GET, "/api/admin/queues"),
            (Method::POST, "/api/admin/queues/{queue}/purge"),
            (Method::GET, "/api/admin/dead-letters"),
            (Method::POST, "/api/admin/dead-letters/redrive"),
            (Method::DELETE, "/api/admin/dead-letters/messages/{message_id}"),
            (Method::POST, "/api/admin/store/purge"),
            (Method::DELETE, "/api/admin/jobs/{job_id}"),
        ] {
            let scope = needed(&method, Some(route));
            assert!(!both.allows(scope) && admin.allows(scope), "{method} {route} needs admin");
        }
    }

    #[test]
    fn a_submitter_reads_only_its_own_jobs() {
        let me = Caller { id: Some("ab".into()), scopes: Scopes { submit: true, ..Scopes::default() } };
        assert!(me.may_read_job(Some("ab")));
        assert!(!me.may_read_job(Some("cd")) && !me.may_read_job(None));
        let reader = Caller { id: Some("ef".into()), scopes: Scopes { read: true, ..Scopes::default() } };
        assert!(reader.may_read_job(Some("ab")) && reader.may_read_job(None));
    }
}
