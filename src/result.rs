//! The result of detecting objects in one image: the CloudDetect shape (`objects` with `label`,
//! `accuracy`, `rectangle`) plus the model's identity and timings. These are wire types: the detector crate's own types
//! ([`skyburst_detector::Detections`]) are converted here, so the detector never names HTTP.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A box in displayed (EXIF-rotated) image pixels, rounded and clipped to the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Rectangle {
    /// Left edge, 0-based.
    pub left: u32,
    /// Top edge, 0-based.
    pub top: u32,
    /// Width; `left + width ≤ image width`.
    pub width: u32,
    /// Height; `top + height ≤ image height`.
    pub height: u32,
}

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DetectedObject {
    /// COCO class name, e.g. `person`.
    pub label: String,
    /// objectness × class probability, 0..1.
    pub accuracy: f32,
    /// Where it is.
    pub rectangle: Rectangle,
}

/// Milliseconds spent in each stage for one image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Timings {
    /// Decoding and resizing to the network input.
    pub preprocess_ms: f64,
    /// The forward pass (its share when the image ran in a batch).
    pub inference_ms: f64,
    /// Decoding the heads and NMS.
    pub postprocess_ms: f64,
}

/// The result for one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DetectionResult {
    /// The client's id, echoed back (CloudDetect); absent when the client sent none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The file name, when the image came from a file or a multipart upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Objects found, highest accuracy first.
    pub objects: Vec<DetectedObject>,
    /// Displayed image width in pixels.
    pub width: u32,
    /// Displayed image height in pixels.
    pub height: u32,
    /// sha256 of the weights that produced this result.
    pub model: String,
    /// Where the time went.
    pub timings: Timings,
}

// === conversions from the detector's types ===

impl From<skyburst_detector::PixelBox> for Rectangle {
    fn from(b: skyburst_detector::PixelBox) -> Self {
        Self { left: b.left, top: b.top, width: b.width, height: b.height }
    }
}

impl From<skyburst_detector::Detection> for DetectedObject {
    fn from(d: skyburst_detector::Detection) -> Self {
        Self { label: d.label, accuracy: d.score, rectangle: d.bbox.into() }
    }
}

impl From<skyburst_detector::Timings> for Timings {
    fn from(t: skyburst_detector::Timings) -> Self {
        Self { preprocess_ms: t.preprocess_ms, inference_ms: t.inference_ms, postprocess_ms: t.postprocess_ms }
    }
}

impl From<skyburst_detector::Detections> for DetectionResult {
    /// A result with no client id or file name yet: the entry point adds those.
    fn from(d: skyburst_detector::Detections) -> Self {
        Self {
            id: None,
            file: None,
            objects: d.objects.into_iter().map(DetectedObject::from).collect(),
            width: d.width,
            height: d.height,
            model: d.model,
            timings: d.timings.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skyburst_detector::{Detection, Detections, PixelBox};

    #[test]
    fn detections_become_the_clouddetect_shape() {
        let detections = Detections {
            objects: vec![Detection {
                label: "bus".into(),
                score: 0.875,
                bbox: PixelBox { left: 1, top: 2, width: 3, height: 4 },
            }],
            width: 810,
            height: 1080,
            model: "abc".into(),
            timings: skyburst_detector::Timings { preprocess_ms: 1.0, inference_ms: 2.0, postprocess_ms: 3.0 },
        };
        let json = serde_json::to_value(DetectionResult::from(detections)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "objects": [{"label": "bus", "accuracy": 0.875, "rectangle": {"left": 1, "top": 2, "width": 3, "height": 4}}],
                "width": 810, "height": 1080, "model": "abc",
                "timings": {"preprocess_ms": 1.0, "inference_ms": 2.0, "postprocess_ms": 3.0}
            })
        );
    }
}
