//! The workload generator (`skyburst load`): N requests from a folder of images at a fixed
//! concurrency, in one of three modes, checking answers against expected labels; reports
//! success counts, latency percentiles (HdrHistogram) and throughput, and optionally a CSV row
//! per request. [`ramp`] adds closed-loop users step by step; [`replay`] sends an arrival
//! trace's jobs open-loop, at their (time-scaled) times.

pub mod experiment;
pub mod plot;
pub mod ramp;
pub mod replay;
mod request;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use hdrhistogram::Histogram;
use serde::Serialize;

pub use request::{trust_ca_cert, Mode};

/// What to send and where.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Base URL of the service, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Folder of images (JPEG, PNG, BMP, GIF, WebP), sent in name order, round robin.
    pub images: PathBuf,
    /// Requests in all.
    pub requests: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// How each request is made.
    pub mode: Mode,
    /// `file,labels` CSV: each `;`-separated label must be found in that file's answer.
    pub expect: Option<PathBuf>,
    /// Upload zone (multipart and async modes).
    pub zone: Option<String>,
    /// Give up on one request after this long.
    pub timeout: Duration,
    /// Bearer token, if the service wants one.
    pub token: Option<String>,
    /// PEM certificates trusted besides the system's roots (an HTTPS front end's own).
    pub ca_cert: Option<PathBuf>,
}

/// One image to send.
pub struct Image {
    /// File name.
    pub name: String,
    /// Contents.
    pub bytes: Vec<u8>,
    /// Contents, base64.
    pub base64: String,
}

/// The outcome of one request: a CSV row.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// 0-based request number.
    pub index: usize,
    /// Image file name.
    pub file: String,
    /// json, multipart or async.
    pub mode: &'static str,
    /// Final HTTP status; 0 when the request failed in transport.
    pub status: u16,
    /// Client-measured time to the final answer, ms.
    pub latency_ms: f64,
    /// The server's detector time (preprocess + inference + postprocess), ms.
    pub detector_ms: Option<f64>,
    /// Objects found.
    pub objects: Option<usize>,
    /// Labels found, `;`-separated, sorted.
    pub labels: String,
    /// Whether the answer had every expected label (empty without `--expect`).
    pub correct: Option<bool>,
    /// What went wrong.
    pub error: String,
    /// When it was sent, seconds from the start of the run.
    pub started_s: f64,
    /// Clients sending at the time (the concurrency; the ramp's current step).
    pub users: usize,
}

impl Record {
    /// A 200 with a result.
    pub fn ok(&self) -> bool {
        self.status == 200 && self.error.is_empty()
    }
}

#[cfg(test)]
impl Record {
    /// A JSON-mode record of `a.jpg` for tests.
    pub(crate) fn for_test(status: u16, latency_ms: f64, users: usize, started_s: f64) -> Self {
        Self {
            index: 0,
            file: "a.jpg".into(),
            mode: "json",
            status,
            latency_ms,
            detector_ms: None,
            objects: None,
            labels: String::new(),
            correct: None,
            error: String::new(),
            started_s,
            users,
        }
    }
}

/// Counts and percentiles over a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Requests sent.
    pub requests: usize,
    /// Answered with a result.
    pub succeeded: usize,
    /// Everything else.
    pub failed: usize,
    /// Answers checked against `--expect`.
    pub checked: usize,
    /// Checked answers with every expected label.
    pub correct: usize,
    /// HTTP statuses seen (0 = transport error), with counts.
    pub statuses: BTreeMap<u16, usize>,
    /// Latency of successful requests, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Wall time of the run, s.
    pub wall_s: f64,
    /// Successful requests per second of wall time.
    pub throughput: f64,
}

impl Summary {
    /// Every request succeeded and every checked answer was correct.
    pub fn all_good(&self) -> bool {
        self.failed == 0 && self.correct == self.checked
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let statuses: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
        writeln!(
            f,
            "requests    {}  succeeded {}  failed {}  (HTTP {})",
            self.requests,
            self.succeeded,
            self.failed,
            statuses.join(", ")
        )?;
        if self.checked > 0 {
            writeln!(f, "correct     {}/{} answers had every expected label", self.correct, self.checked)?;
        }
        writeln!(
            f,
            "latency ms  p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
            self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms
        )?;
        write!(f, "throughput  {:.2} images/s over {:.2} s", self.throughput, self.wall_s)
    }
}

/// Reads the images in `dir`, sorted by name.
pub fn read_images(dir: &Path) -> anyhow::Result<Vec<Image>> {
    const EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "bmp", "gif", "webp"];
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the image folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    paths.sort();
    anyhow::ensure!(!paths.is_empty(), "no images (.jpg, .png, .bmp, .gif, .webp) in {}", dir.display());
    paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let base64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
            Ok(Image { name, bytes, base64 })
        })
        .collect()
}

/// Reads `file,labels` rows (a header row first; labels `;`-separated).
pub fn read_expectations(path: &Path) -> anyhow::Result<HashMap<String, Vec<String>>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut expected = HashMap::new();
    for (line, row) in reader.records().enumerate() {
        let row = row.with_context(|| format!("{}: bad CSV row {}", path.display(), line + 2))?;
        let file = row.get(0).unwrap_or("").trim().to_string();
        let labels = row.get(1).unwrap_or("").split(';').map(|l| l.trim().to_string()).filter(|l| !l.is_empty());
        anyhow::ensure!(!file.is_empty(), "{}: row {} has no file name", path.display(), line + 2);
        expected.insert(file, labels.collect());
    }
    Ok(expected)
}

/// Runs the load; `progress` is told of each finished request.
pub async fn run(
    options: &LoadOptions,
    progress: impl Fn(&Record) + Send + Sync + 'static,
) -> anyhow::Result<(Vec<Record>, Summary)> {
    let images = Arc::new(read_images(&options.images)?);
    let expected = Arc::new(match &options.expect {
        Some(path) => read_expectations(path)?,
        None => HashMap::new(),
    });
    let client = request::Client::new(options)?;
    let next = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(progress);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let concurrency = options.concurrency.clamp(1, options.requests.max(1));
    for _ in 0..concurrency {
        let (client, images, expected, next, progress) =
            (client.clone(), images.clone(), expected.clone(), next.clone(), progress.clone());
        let total = options.requests;
        tasks.push(tokio::spawn(async move {
            let mut records = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return records;
                }
                let image = &images[index % images.len()];
                let mut record = client.send(index, image, started, concurrency).await;
                check_labels(&mut record, &expected);
                progress(&record);
                records.push(record);
            }
        }));
    }
    let mut records = Vec::new();
    for task in tasks {
        records.extend(task.await.context("a load task panicked")?);
    }
    records.sort_by_key(|r| r.index);
    let summary = summarize(&records, started.elapsed());
    Ok((records, summary))
}

/// Marks a successful answer correct when it has every label expected for its file.
fn check_labels(record: &mut Record, expected: &HashMap<String, Vec<String>>) {
    if let (true, Some(labels)) = (record.ok(), expected.get(&record.file)) {
        let found: Vec<&str> = record.labels.split(';').collect();
        record.correct = Some(labels.iter().all(|l| found.contains(&l.as_str())));
    }
}

/// Counts and percentiles.
pub fn summarize(records: &[Record], wall: Duration) -> Summary {
    // Microseconds, 3 significant digits: 0.1 % error from 1 µs to an hour.
    let mut histogram = Histogram::<u64>::new(3).expect("3 significant digits is valid");
    let mut statuses = BTreeMap::new();
    for r in records {
        *statuses.entry(r.status).or_insert(0) += 1;
        if r.ok() {
            let _ = histogram.record((r.latency_ms * 1000.0).max(1.0) as u64);
        }
    }
    let succeeded = records.iter().filter(|r| r.ok()).count();
    let at = |q: f64| if histogram.is_empty() { 0.0 } else { histogram.value_at_quantile(q) as f64 / 1000.0 };
    let wall_s = wall.as_secs_f64();
    Summary {
        requests: records.len(),
        succeeded,
        failed: records.len() - succeeded,
        checked: records.iter().filter(|r| r.correct.is_some()).count(),
        correct: records.iter().filter(|r| r.correct == Some(true)).count(),
        statuses,
        p50_ms: at(0.50),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
        max_ms: if histogram.is_empty() { 0.0 } else { histogram.max() as f64 / 1000.0 },
        wall_s,
        throughput: if wall_s > 0.0 { succeeded as f64 / wall_s } else { 0.0 },
    }
}

/// Writes one CSV row per request.
pub fn write_csv(path: &Path, records: &[Record]) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    for record in records {
        writer.serialize(record)?;
    }
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: usize, status: u16, latency_ms: f64, correct: Option<bool>) -> Record {
        Record { index, correct, ..Record::for_test(status, latency_ms, 1, index as f64) }
    }

    #[test]
    fn summaries_count_failures_and_take_percentiles_of_successes() {
        let mut records: Vec<Record> = (1..=100).map(|i| record(i, 200, i as f64, Some(true))).collect();
        records.push(record(101, 503, 1.0, None));
        records.push(record(102, 200, 5.0, Some(false)));
        let s = summarize(&records, Duration::from_secs(2));
        assert_eq!((s.requests, s.succeeded, s.failed), (102, 101, 1));
        assert_eq!((s.checked, s.correct), (101, 100));
        assert!((s.p50_ms - 50.0).abs() < 0.5, "{}", s.p50_ms);
        assert!((s.p99_ms - 99.0).abs() < 0.5, "{}", s.p99_ms);
        assert_eq!(s.statuses[&503], 1);
        assert!(!s.all_good());
        assert!((s.throughput - 50.5).abs() < 1e-9);
    }

    #[test]
    fn expectations_are_read_from_csv() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.csv");
        std::fs::write(&path, "file,labels\nbus.jpg,bus;person\nzidane.jpg,person\n").unwrap();
        let expected = read_expectations(&path).unwrap();
        assert_eq!(expected["bus.jpg"], ["bus", "person"]);
        assert_eq!(expected["zidane.jpg"], ["person"]);
    }
}
