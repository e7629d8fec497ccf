//! The detector against the OpenCV DNN reference (`tests/fixtures/yolo/`, copied from the
//! project's measured reference data) and against stock candle.

use candle_core::{Device, Tensor};
use serde_json::Value;
use skyburst_detector::preprocess::{self, ResizeMode};
use skyburst_detector::Detection;
use skyburst_detector::{ConvPath, Detector, DetectorOptions};

use crate::support::{detector, fixture, image, max_abs_diff, model_dir, npy};

fn heads_match_reference(variant: &str) {
    let input = npy(&format!("yolo/bus_{variant}_input_1x3x416x416.npy"));
    let heads = detector().network().forward(&input, ConvPath::Fused).unwrap();
    let expected = [
        npy(&format!("yolo/bus_{variant}_head13_conv15_1x255x13x13.npy")),
        npy(&format!("yolo/bus_{variant}_head26_conv22_1x255x26x26.npy")),
    ];
    for (ours, reference) in heads.iter().zip(&expected) {
        let diff = max_abs_diff(ours, reference);
        eprintln!("{variant} head {:?}: max |Δ| vs OpenCV = {diff:.3e}", ours.dims());
        assert!(diff <= 1e-3, "{variant} head {:?}: max |Δ| = {diff} > 1e-3", ours.dims());
    }
}

#[test]
fn fused_heads_match_opencv_on_the_saved_letterbox_input() {
    heads_match_reference("letterbox");
}

#[test]
fn fused_heads_match_opencv_on_the_saved_stretch_input() {
    heads_match_reference("resize");
}

#[test]
fn fused_network_matches_stock_candle_on_random_inputs() {
    let net = detector().network();
    for batch in [1, 4] {
        let input = Tensor::rand(0f32, 1.0, (batch, 3, 416, 416), &Device::Cpu).unwrap();
        let fused = net.forward(&input, ConvPath::Fused).unwrap();
        let stock = net.forward(&input, ConvPath::Stock).unwrap();
        for (f, s) in fused.iter().zip(&stock) {
            let diff = max_abs_diff(f, s);
            eprintln!("batch {batch} head {:?}: max |Δ| fused vs stock = {diff:.3e}", f.dims());
            assert!(diff <= 1e-4, "batch {batch}: max |Δ| = {diff} > 1e-4");
        }
    }
}

#[test]
fn a_batch_of_four_equals_four_single_passes() {
    let net = detector().network();
    let input = Tensor::rand(0f32, 1.0, (4, 3, 416, 416), &Device::Cpu).unwrap();
    let batched = net.forward(&input, ConvPath::Fused).unwrap();
    for i in 0..4 {
        let single = net.forward(&input.narrow(0, i, 1).unwrap(), ConvPath::Fused).unwrap();
        for (b, s) in batched.iter().zip(&single) {
            let diff = max_abs_diff(&b.narrow(0, i, 1).unwrap(), s);
            assert!(diff <= 1e-5, "image {i}: batch-4 vs batch-1 max |Δ| = {diff}");
        }
    }
}

#[test]
fn preprocessing_matches_the_saved_input_tensors() {
    let decoded = preprocess::decode(&std::fs::read(image("bus.jpg")).unwrap(), 40_000_000).unwrap();
    for (variant, mode) in [("letterbox", ResizeMode::Letterbox), ("resize", ResizeMode::Stretch)] {
        let prepared = preprocess::prepare(&decoded, (416, 416), mode);
        let ours = Tensor::from_vec(prepared.chw, (1, 3, 416, 416), &Device::Cpu).unwrap();
        let reference = npy(&format!("yolo/bus_{variant}_input_1x3x416x416.npy"));
        let mean: f32 = (&ours - &reference).unwrap().abs().unwrap().mean_all().unwrap().to_scalar().unwrap();
        eprintln!("{variant}: mean |Δ| vs OpenCV input = {:.3}/255", mean * 255.0);
        assert!(mean <= 2.0 / 255.0, "{variant}: mean |Δ| = {}/255 > 2/255", mean * 255.0);
    }
}

fn iou(ours: &Detection, ltwh: &[f32]) -> f32 {
    let r = ours.bbox;
    let (ax1, ay1, ax2, ay2) = (r.left as f32, r.top as f32, (r.left + r.width) as f32, (r.top + r.height) as f32);
    let (bx1, by1, bx2, by2) = (ltwh[0], ltwh[1], ltwh[0] + ltwh[2], ltwh[1] + ltwh[3]);
    let inter = (ax2.min(bx2) - ax1.max(bx1)).max(0.0) * (ay2.min(by2) - ay1.max(by1)).max(0.0);
    inter / ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter)
}

#[test]
fn strong_reference_detections_are_found_on_the_real_images() {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("yolo/reference_detections.json")).unwrap()).unwrap();
    let stretch = DetectorOptions { resize: ResizeMode::Stretch, ..DetectorOptions::default() };
    let stretch = Detector::load(&model_dir(), stretch, &Device::Cpu).unwrap();
    let mut checked = 0;
    for case in reference["results"].as_array().unwrap() {
        let (name, variant) = (case["image"].as_str().unwrap(), case["variant"].as_str().unwrap());
        let detector = if variant == "letterbox" { detector() } else { &stretch };
        let (result, _) = detector.detect_bytes(&std::fs::read(image(name)).unwrap()).unwrap();
        assert_eq!(
            (result.width, result.height),
            (case["width"].as_u64().unwrap() as u32, case["height"].as_u64().unwrap() as u32)
        );
        for expected in case["detections"].as_array().unwrap() {
            let score = expected["score"].as_f64().unwrap() as f32;
            if score < 0.6 {
                continue;
            }
            let label = expected["label"].as_str().unwrap();
            let ltwh: Vec<f32> =
                expected["box_ltwh"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            let found = result
                .objects
                .iter()
                .find(|o| o.label == label && iou(o, &ltwh) >= 0.8 && (o.score - score).abs() <= 0.1);
            assert!(found.is_some(), "{name} ({variant}): no {label} {score} at {ltwh:?}; ours: {:#?}", result.objects);
            checked += 1;
        }
    }
    assert_eq!(checked, 7, "the reference has 7 detections with score ≥ 0.6 over both images and variants");
}
