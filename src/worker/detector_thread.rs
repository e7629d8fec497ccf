//! The worker's detector thread: every batch a worker detects runs on this one long-lived
//! thread.
//!
//! On tokio's blocking pool each batch ran on whichever idle pool thread woke first, and the
//! local queue and store use that pool too: under load 6 threads took turns at the detector
//! within 5 s. Each switch left the kernel's per-thread buffers (up to ≈ 4 MB of padded and
//! Winograd-domain input) and glibc's per-thread malloc arena cold on the new thread.
//!
//! The thread is also the first member of the detector's rayon pool, so a parallel loop in the
//! forward (the stand-alone max-pool's at one thread, the kernel's too at two) starts on it. On
//! rayon's global pool the loop was handed to a pool thread while this one slept, and that thread
//! then spun in `sched_yield` (≈ 14 calls per forward, strace) on a core the other worker's
//! detector keeps busy: 0.7–5 % fewer images/s at concurrency 4 (6 interleaved pairs).

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};

use tokio::sync::oneshot;

use crate::result::DetectionResult;
use skyburst_detector::{Detector, LoadedImage};

/// Per image of a batch: the result, or why it failed (an undecodable image, say).
pub type Outcomes = Vec<Result<DetectionResult, String>>;

/// Why a batch got no outcomes at all. Its jobs stay in the queue and come back.
#[derive(Debug, thiserror::Error)]
pub enum DetectorThreadError {
    /// A bug: the detector panicked on this batch (the thread goes on with the next).
    #[error("the detector panicked ({0}); the jobs will come back, and a bug report with this message helps")]
    Panicked(String),
    /// The thread is gone; only a restart brings it back.
    #[error("the detector thread has stopped; restart the worker")]
    Stopped,
}

struct Batch {
    images: Vec<Vec<u8>>,
    done: oneshot::Sender<Result<Outcomes, DetectorThreadError>>,
}

/// A handle to the thread; the thread ends when the handle is dropped.
pub struct DetectorThread {
    batches: mpsc::Sender<Batch>,
}

impl DetectorThread {
    /// Starts the thread that runs `detector` with `threads` threads (itself and `threads − 1`
    /// rayon helpers).
    pub fn spawn(detector: Arc<Detector>, threads: usize) -> std::io::Result<Self> {
        let (batches, received) = mpsc::channel::<Batch>();
        std::thread::Builder::new().name("detector".into()).spawn(move || {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads.max(1))
                .thread_name(|i| format!("detector-{i}"))
                .use_current_thread()
                .build();
            if let Err(e) = &pool {
                // Still correct on the global pool, only slower.
                tracing::warn!(error = %e, "cannot build the detector's thread pool; using rayon's global pool");
            }
            for batch in received {
                let ran = catch_unwind(AssertUnwindSafe(|| run_detector(&detector, &batch.images)));
                // The worker may have stopped waiting (shutdown); nobody to tell then.
                let _ = batch.done.send(ran.map_err(|panic| DetectorThreadError::Panicked(panic_message(&*panic))));
            }
        })?;
        Ok(Self { batches })
    }

    /// Hands `images` to the detector thread, which starts decoding and detecting them at once;
    /// the returned future resolves with their outcomes. The caller is free to do other work
    /// (answer the previous batch) before it awaits them.
    pub fn submit(&self, images: Vec<Vec<u8>>) -> impl Future<Output = Result<Outcomes, DetectorThreadError>> {
        let (done, outcome) = oneshot::channel();
        let sent = self.batches.send(Batch { images, done });
        async move {
            sent.map_err(|_| DetectorThreadError::Stopped)?;
            outcome.await.map_err(|_| DetectorThreadError::Stopped)?
        }
    }
}

/// Decodes and detects a batch; per image the result or why it failed.
fn run_detector(detector: &Detector, images: &[Vec<u8>]) -> Outcomes {
    let loaded: Vec<Result<LoadedImage, String>> =
        images.iter().map(|bytes| detector.load_image(bytes).map_err(|e| e.to_string())).collect();
    let good: Vec<&LoadedImage> = loaded.iter().filter_map(|l| l.as_ref().ok()).collect();
    let mut detected = match detector.detect_images(&good) {
        Ok(results) => results.into_iter().map(|d| Ok(DetectionResult::from(d))).collect::<Vec<_>>(),
        Err(e) => good.iter().map(|_| Err(format!("the detector failed: {e}"))).collect(),
    }
    .into_iter();
    loaded
        .into_iter()
        .map(|l| match l {
            Ok(_) => detected.next().unwrap_or_else(|| Err("the detector returned too few results".into())),
            Err(reason) => Err(reason),
        })
        .collect()
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_string(),
        (_, Some(text)) => text.clone(),
        _ => "no message".to_string(),
    }
}
