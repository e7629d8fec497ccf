//! One request of a load run, in each mode.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use super::{Image, LoadOptions, Record};

/// The shortest wait of the async mode between status polls.
const POLL: Duration = Duration::from_millis(20);
/// The longest wait of [`Poll::Proportional`] between status polls.
const POLL_MAX: Duration = Duration::from_secs(1);

/// How often the async mode looks at a job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Every 20 ms: fixed runs and ramps keep few jobs in flight and read latencies to 20 ms.
    Every20Ms,
    /// After a tenth of the job's age, 20 ms to 1 s: a replay with hundreds of jobs in flight
    /// polls tens of times a second, not thousands, and reads a latency at most a tenth long.
    Proportional,
}

impl Poll {
    /// The wait before the next look at a job sent `age` ago.
    pub fn wait(self, age: Duration) -> Duration {
        match self {
            Poll::Every20Ms => POLL,
            Poll::Proportional => (age / 10).clamp(POLL, POLL_MAX),
        }
    }
}

/// How each request is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `POST /api/detect` with `{"id", "image": base64}`, waiting for the answer (CloudDetect).
    Json,
    /// `POST /upload[/zone]` as a multipart form with the file in `myfile`, waiting.
    Multipart,
    /// `POST /api/jobs`, then poll `GET /api/jobs/{id}` until done.
    Async,
}

impl Mode {
    /// `json`, `multipart` or `async`, as records and CSV rows name it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Json => "json",
            Mode::Multipart => "multipart",
            Mode::Async => "async",
        }
    }
}

/// A shared HTTP client and what every request needs.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    mode: Mode,
    zone: Option<String>,
    token: Option<String>,
    timeout: Duration,
    poll: Poll,
}

/// `builder` trusting the certificates in the PEM file `ca_cert` (`--ca-cert`) besides the
/// system's roots: a front end's self-signed certificate, or the CA that signed it.
pub fn trust_ca_cert(
    builder: reqwest::ClientBuilder,
    ca_cert: Option<&Path>,
) -> anyhow::Result<reqwest::ClientBuilder> {
    let Some(path) = ca_cert else { return Ok(builder) };
    let pem = std::fs::read(path).with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("--ca-cert {} holds no PEM certificate", path.display()))?;
    anyhow::ensure!(!certificates.is_empty(), "--ca-cert {} holds no PEM certificate", path.display());
    Ok(builder.tls_certs_merge(certificates))
}

impl Client {
    /// A client with a connection per concurrent request, trusting `options.ca_cert` besides
    /// the system's roots.
    pub fn new(options: &LoadOptions) -> anyhow::Result<Self> {
        let builder = reqwest::Client::builder().pool_max_idle_per_host(options.concurrency).timeout(options.timeout);
        let http =
            trust_ca_cert(builder, options.ca_cert.as_deref())?.build().context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            url: options.url.trim_end_matches('/').to_string(),
            mode: options.mode,
            zone: options.zone.clone(),
            token: options.token.clone(),
            timeout: options.timeout,
            poll: Poll::Every20Ms,
        })
    }

    /// This client, polling async jobs as `poll` says.
    pub fn polling(self, poll: Poll) -> Self {
        Self { poll, ..self }
    }

    /// Sends one image and waits for its result. `run_started` dates the request within the run;
    /// `users` is how many clients were sending at the time.
    pub async fn send(&self, index: usize, image: &Image, run_started: Instant, users: usize) -> Record {
        let started = Instant::now();
        let client_id = uuid::Uuid::new_v4().to_string();
        let outcome = match self.mode {
            Mode::Json => self.detect(&client_id, image).await,
            Mode::Multipart => self.upload(image).await,
            Mode::Async => self.job(&client_id, image, started).await,
        };
        let mut record = Record {
            index,
            file: image.name.clone(),
            mode: self.mode.name(),
            status: 0,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            detector_ms: None,
            objects: None,
            labels: String::new(),
            correct: None,
            error: String::new(),
            started_s: started.duration_since(run_started).as_secs_f64(),
            users,
        };
        match outcome {
            Err(e) => record.error = e,
            Ok((status, body)) => {
                record.status = status;
                if status != 200 {
                    record.error =
                        body.get("detail").and_then(Value::as_str).unwrap_or("unexpected status").to_string();
                } else if self.mode == Mode::Json && body.get("id").and_then(Value::as_str) != Some(client_id.as_str())
                {
                    record.error = "the answer did not echo the request's id".into();
                } else {
                    fill(&mut record, &body);
                }
            }
        }
        record
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.post(format!("{}{path}", self.url));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn detect(&self, client_id: &str, image: &Image) -> Result<(u16, Value), String> {
        // Built by hand: a UUID and base64 need no escaping, and re-serializing a 250 kB string
        // per request would count the client's own work as service latency.
        let body = format!(r#"{{"id":"{client_id}","image":"{}"}}"#, image.base64);
        let request = self.post("/api/detect").header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        read(request.send().await).await
    }

    async fn upload(&self, image: &Image) -> Result<(u16, Value), String> {
        let part = reqwest::multipart::Part::bytes(image.bytes.clone()).file_name(image.name.clone());
        let form = reqwest::multipart::Form::new().part("myfile", part);
        let path = match &self.zone {
            Some(zone) => format!("/upload/{zone}"),
            None => "/upload".to_string(),
        };
        read(self.post(&path).multipart(form).send().await).await
    }

    async fn job(&self, client_id: &str, image: &Image, started: Instant) -> Result<(u16, Value), String> {
        let mut body = json!({ "id": client_id, "image": image.base64 });
        if let Some(zone) = &self.zone {
            body["zone"] = json!(zone);
        }
        let (status, accepted) = read(self.post("/api/jobs").json(&body).send().await).await?;
        if status != 202 {
            return Ok((status, accepted));
        }
        let status_url = accepted.get("status_url").and_then(Value::as_str).ok_or("202 without status_url")?;
        loop {
            let mut request = self.http.get(format!("{}{status_url}", self.url));
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let (status, job) = read(request.send().await).await?;
            match job.get("status").and_then(Value::as_str) {
                Some("done") => return Ok((status, job.get("result").cloned().unwrap_or(Value::Null))),
                Some("failed") => {
                    let error = job.get("error").and_then(Value::as_str).unwrap_or("failed");
                    return Ok((422, json!({ "detail": error })));
                }
                _ if status != 200 => return Ok((status, job)),
                _ if started.elapsed() > self.timeout => return Err("timed out waiting for the job".into()),
                _ => tokio::time::sleep(self.poll.wait(started.elapsed())).await,
            }
        }
    }
}

async fn read(sent: reqwest::Result<reqwest::Response>) -> Result<(u16, Value), String> {
    let response = sent.map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| format!("reading the answer failed: {e}"))?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn fill(record: &mut Record, result: &Value) {
    let objects = result.get("objects").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut labels: Vec<&str> = objects.iter().filter_map(|o| o.get("label").and_then(Value::as_str)).collect();
    labels.sort_unstable();
    labels.dedup();
    record.labels = labels.join(";");
    record.objects = Some(objects.len());
    record.detector_ms = result.get("timings").map(|t| {
        ["preprocess_ms", "inference_ms", "postprocess_ms"]
            .iter()
            .filter_map(|k| t.get(k).and_then(Value::as_f64))
            .sum()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportional_polls_wait_a_tenth_of_the_age_within_bounds() {
        assert_eq!(Poll::Every20Ms.wait(Duration::from_secs(30)), POLL);
        assert_eq!(Poll::Proportional.wait(Duration::from_millis(50)), POLL, "never below 20 ms");
        assert_eq!(Poll::Proportional.wait(Duration::from_secs(3)), Duration::from_millis(300));
        assert_eq!(Poll::Proportional.wait(Duration::from_secs(60)), POLL_MAX, "never above 1 s");
    }
}
