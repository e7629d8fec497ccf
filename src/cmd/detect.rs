//! `skyburst detect IMAGE... [--json] [--threshold T] [--annotate OUT_DIR]`.
//!
//! Every image gets an answer: a result, or an error line naming the file; one bad file does
//! not stop the others, and the exit status is 1 if any failed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::cli::DetectArgs;
use crate::config::Config;
use crate::result::DetectionResult;
use skyburst_detector::{annotate, Detector, LoadedImage};

/// Runs detection on every file in `args`.
pub fn run(config: &Config, args: &DetectArgs) -> anyhow::Result<ExitCode> {
    let mut config = config.clone();
    if let Some(threshold) = args.threshold {
        anyhow::ensure!(threshold > 0.0 && threshold <= 1.0, "--threshold {threshold} must be in (0, 1]");
        config.detector.threshold = threshold;
    }
    if let Some(dir) = &args.annotate {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create --annotate directory {}", dir.display()))?;
    }
    skyburst_detector::set_threads(config.detector.threads);
    let detector = crate::app::detector(&config)?;
    let mut stdout = std::io::stdout().lock();
    let mut failures = 0;
    // `detector.batch_size` images share one forward pass; each keeps its own result or error.
    for chunk in args.images.chunks(config.detector.batch_size) {
        for (path, outcome) in chunk.iter().zip(detect_chunk(&detector, chunk, args.annotate.as_deref())) {
            let name = file_name(path);
            match outcome {
                Ok(mut result) => {
                    result.file = Some(name);
                    print_result(&mut stdout, &result, args.json)?;
                }
                Err(err) => {
                    failures += 1;
                    if args.json {
                        writeln!(stdout, "{}", json!({ "file": name, "error": format!("{err:#}") }))?;
                    } else {
                        eprintln!("error: {}: {err:#}", path.display());
                    }
                }
            }
        }
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

fn load(detector: &Detector, path: &Path) -> anyhow::Result<LoadedImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(detector.load_image(&bytes)?)
}

/// Detects a chunk of files with one forward pass over those that loaded.
fn detect_chunk(
    detector: &Detector,
    paths: &[PathBuf],
    annotate_dir: Option<&Path>,
) -> Vec<anyhow::Result<DetectionResult>> {
    let loaded: Vec<anyhow::Result<LoadedImage>> = paths.iter().map(|p| load(detector, p)).collect();
    let batch: Vec<&LoadedImage> = loaded.iter().filter_map(|l| l.as_ref().ok()).collect();
    let mut results = match detector.detect_images(&batch) {
        Ok(results) => results.into_iter(),
        Err(err) => {
            let err = format!("{err:#}");
            return loaded.into_iter().map(|l| l.and_then(|_| Err(anyhow::anyhow!("{err}")))).collect();
        }
    };
    loaded
        .into_iter()
        .zip(paths)
        .map(|(loaded, path)| {
            let loaded = loaded?;
            let detections = results.next().expect("one result per loaded image");
            if let Some(dir) = annotate_dir {
                let out = annotated_path(dir, path);
                annotate::annotate(&loaded.image, &detections.objects)
                    .save(&out)
                    .with_context(|| format!("cannot write {}", out.display()))?;
                tracing::info!(file = %out.display(), "annotated image written");
            }
            Ok(DetectionResult::from(detections))
        })
        .collect()
}

/// `OUT_DIR/<name>`: JPEG and PNG keep their name; other formats are written as PNG.
fn annotated_path(dir: &Path, input: &Path) -> PathBuf {
    let stem = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    let ext = input.extension().map(|e| e.to_string_lossy().to_lowercase());
    match ext.as_deref() {
        Some(ext @ ("jpg" | "jpeg" | "png")) => dir.join(format!("{stem}.{ext}")),
        _ => dir.join(format!("{stem}.png")),
    }
}

fn print_result(out: &mut impl Write, result: &DetectionResult, json: bool) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(result)?)?;
        return Ok(());
    }
    let t = result.timings;
    writeln!(
        out,
        "{} ({}×{}): {} object(s); preprocess {:.0} ms, inference {:.0} ms",
        result.file.as_deref().unwrap_or("-"),
        result.width,
        result.height,
        result.objects.len(),
        t.preprocess_ms,
        t.inference_ms,
    )?;
    for o in &result.objects {
        let r = o.rectangle;
        writeln!(
            out,
            "  {:<14} {:.2}  left {} top {} width {} height {}",
            o.label, o.accuracy, r.left, r.top, r.width, r.height
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotated_names_keep_jpeg_and_png_and_use_png_otherwise() {
        let dir = Path::new("/out");
        assert_eq!(annotated_path(dir, Path::new("a/bus.jpg")), Path::new("/out/bus.jpg"));
        assert_eq!(annotated_path(dir, Path::new("x.PNG")), Path::new("/out/x.png"));
        assert_eq!(annotated_path(dir, Path::new("anim.gif")), Path::new("/out/anim.png"));
        assert_eq!(annotated_path(dir, Path::new("noext")), Path::new("/out/noext.png"));
    }
}
