//! `skyburst detect` as a user runs it: the real binary, real files, real output.

use std::io::Cursor;

use serde_json::Value;
use skyburst_detector::model_files::WEIGHTS;

use crate::support::{image, model_dir, run, skyburst};

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

#[test]
fn json_gives_one_result_per_image_in_the_result_shape() {
    model_dir();
    let (code, stdout, stderr) =
        run(skyburst().args(["detect", "--json"]).arg(image("bus.jpg")).arg(image("zidane.jpg")));
    assert_eq!(code, 0, "{stderr}");
    let results = json_lines(&stdout);
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["file"], "bus.jpg");
    assert_eq!(results[1]["file"], "zidane.jpg");
    assert_eq!(results[0]["model"], WEIGHTS.1);
    assert_eq!((results[0]["width"].as_u64(), results[0]["height"].as_u64()), (Some(810), Some(1080)));
    let objects = results[1]["objects"].as_array().unwrap();
    let accuracies: Vec<f64> = objects.iter().map(|o| o["accuracy"].as_f64().unwrap()).collect();
    assert!(accuracies.windows(2).all(|w| w[0] >= w[1]), "sorted by accuracy: {accuracies:?}");
    assert_eq!(objects[0]["label"], "person");
    assert!(accuracies[0] > 0.9, "zidane.jpg: the reference finds a person at 0.93");
    for o in objects {
        let r = &o["rectangle"];
        let right = r["left"].as_u64().unwrap() + r["width"].as_u64().unwrap();
        let bottom = r["top"].as_u64().unwrap() + r["height"].as_u64().unwrap();
        assert!(right <= 1280 && bottom <= 720, "clipped to the image: {o}");
    }
}

#[test]
fn threshold_flag_filters_weak_objects() {
    model_dir();
    let (code, stdout, _) = run(skyburst().args(["detect", "--json", "--threshold", "0.9"]).arg(image("bus.jpg")));
    assert_eq!(code, 0);
    let objects = json_lines(&stdout)[0]["objects"].as_array().unwrap().clone();
    assert_eq!(objects.len(), 1, "only the 0.97 person passes 0.9: {objects:?}");
    let (code, _, stderr) = run(skyburst().args(["detect", "--threshold", "1.5"]).arg(image("bus.jpg")));
    assert_ne!(code, 0);
    assert!(stderr.contains("--threshold"), "{stderr}");
}

#[test]
fn annotate_writes_each_image_with_boxes_drawn() {
    model_dir();
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) =
        run(skyburst().arg("detect").arg(image("zidane.jpg")).arg("--annotate").arg(out.path().join("drawn")));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("zidane.jpg (1280×720)") && stdout.contains("person"), "{stdout}");
    let drawn = image::open(out.path().join("drawn/zidane.jpg")).unwrap().into_rgb8();
    let original = image::open(image("zidane.jpg")).unwrap().into_rgb8();
    assert_eq!(drawn.dimensions(), original.dimensions());
    // Zidane's box (left ≈ 728, top ≈ 23): its left edge is drawn in a solid label colour.
    let changed = (100..600).filter(|&y| drawn.get_pixel(728, y) != original.get_pixel(728, y)).count();
    assert!(changed > 300, "the box edge at x = 728 is drawn ({changed} of 500 pixels changed)");
}

fn bomb_png() -> Vec<u8> {
    // A PNG declaring 50000×50000 RGB (7.5 GB decoded) in a few dozen bytes: the header and the
    // start of a compressed data chunk, as a decompression bomb arrives.
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(Cursor::new(&mut bytes), 50_000, 50_000);
    encoder.set_color(png::ColorType::Rgb);
    let mut writer = encoder.write_header().unwrap();
    writer.write_chunk(png::chunk::IDAT, &[0x78, 0x9c, 0xed, 0xc1, 0x01, 0x0d]).unwrap();
    drop(writer);
    assert!(bytes.len() < 100);
    bytes
}

fn tiny_png() -> Vec<u8> {
    let mut bytes = Vec::new();
    image::RgbImage::new(1, 1).write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes
}

#[test]
fn bad_images_get_clear_errors_and_the_good_ones_still_get_results() {
    model_dir();
    let dir = tempfile::tempdir().unwrap();
    let bus = std::fs::read(image("bus.jpg")).unwrap();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("empty.jpg", Vec::new(), "empty"),
        ("text.jpg", b"definitely not an image".to_vec(), "not a supported image"),
        ("truncated.jpg", bus[..bus.len() / 2].to_vec(), "truncated"),
        ("tiny.png", tiny_png(), "1×1"),
        ("bomb.png", bomb_png(), "50000×50000"),
    ];
    let mut command = skyburst();
    command.args(["detect", "--json"]);
    for (name, bytes, _) in &cases {
        std::fs::write(dir.path().join(name), bytes).unwrap();
        command.arg(dir.path().join(name));
    }
    command.arg(image("bus.jpg")).arg(dir.path().join("missing.jpg"));
    let (code, stdout, stderr) = run(&mut command);
    assert_eq!(code, 1, "any failed image makes the exit status 1; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), cases.len() + 2, "every input gets exactly one line");
    for ((name, _, expected), line) in cases.iter().zip(&lines) {
        assert_eq!(line["file"], *name);
        let error = line["error"].as_str().unwrap_or_else(|| panic!("{name}: expected an error, got {line}"));
        assert!(error.contains(expected), "{name}: {error}");
    }
    assert!(lines[cases.len()]["objects"].as_array().is_some_and(|o| !o.is_empty()), "bus.jpg still detected");
    assert!(lines[cases.len() + 1]["error"].as_str().unwrap().contains("cannot read"));
}

#[test]
fn a_missing_model_names_the_command_to_run() {
    let empty = tempfile::tempdir().unwrap();
    let (code, _, stderr) =
        run(skyburst().env("SKYBURST_DETECTOR__MODEL_DIR", empty.path()).arg("detect").arg(image("bus.jpg")));
    assert_eq!(code, 1);
    assert!(stderr.contains("scripts/fetch-assets.sh"), "{stderr}");
}

#[test]
fn config_problems_exit_64_with_every_problem_listed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[detector]\nthreshold = 2.0\nthreads = 0\n").unwrap();
    let (code, _, stderr) = run(skyburst().arg("--config").arg(&file).args(["config", "check"]));
    assert_eq!(code, 64);
    assert!(stderr.contains("detector.threshold") && stderr.contains("detector.threads"), "{stderr}");

    std::fs::write(&file, "[detector]\nthreshhold = 0.3\n").unwrap();
    let (code, _, stderr) = run(skyburst().arg("--config").arg(&file).args(["config", "check"]));
    assert_eq!(code, 64);
    assert!(stderr.contains("threshhold"), "{stderr}");

    let (code, _, stderr) = run(skyburst().env("SKYBURST_DETECTOR__NOPE", "1").args(["config", "check"]));
    assert_eq!(code, 64, "unknown environment keys are rejected too: {stderr}");

    let (code, stdout, _) = run(skyburst().args(["config", "check"]));
    assert_eq!(code, 0);
    assert!(stdout.contains("threshold = 0.25"), "{stdout}");
}

#[test]
fn batched_detection_gives_the_same_objects_and_keeps_per_image_errors() {
    model_dir();
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let files = [image("bus.jpg"), empty, image("zidane.jpg"), image("bus.jpg")];
    let objects = |batch: &str| {
        let (code, stdout, stderr) =
            run(skyburst().env("SKYBURST_DETECTOR__BATCH_SIZE", batch).args(["detect", "--json"]).args(&files));
        assert_eq!(code, 1, "the empty file fails: {stderr}");
        json_lines(&stdout)
            .into_iter()
            .map(|l| l.get("objects").cloned().unwrap_or(l["error"].clone()))
            .collect::<Vec<_>>()
    };
    let (single, batched) = (objects("1"), objects("3"));
    assert_eq!(single.len(), 4);
    assert!(single[1].as_str().unwrap().contains("empty"));
    assert_eq!(single, batched, "batch 3 (one failing) must equal batch 1");
}
