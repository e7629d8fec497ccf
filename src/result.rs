//! The result of detecting objects in one image: the CloudDetect shape (`objects` with `label`,
//! `accuracy`, `rectangle`) plus the model's identity and timings (../shared/DESIGN.md).

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
