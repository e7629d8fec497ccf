//! Skyburst's detector: YOLOv3-tiny (COCO) on candle, loaded from darknet's own files: image
//! bytes → [`Detections`]. It knows nothing of HTTP, queues or config files: the service converts
//! its types to the wire format and builds [`DetectorOptions`] from its config.
//!
//! `unsafe` is denied in the crate and allowed in one module, [`kernel`], where each block says
//! why it is sound; the dev profile builds this crate at `opt-level = 3` (the workspace's
//! `Cargo.toml`), so the service's own crates keep their debug checks.
//!
//! # Layout
//! - [`model_files`]: finds the cfg, weights and names and checks their sha256.
//! - [`darknet`]: parses the cfg into plain data.
//! - [`weights`]: reads the `.weights` file and folds batch norm into the convolutions.
//! - [`model`]: builds the network and runs the forward pass.
//! - [`kernel`]: the fused im2col + GEMM convolution (the only `unsafe` in the crate).
//! - [`pool`]: darknet's max-pool as a parallel custom op.
//! - [`preprocess`]: decode, orientation, letterbox or stretch.
//! - [`postprocess`]: head decoding and NMS, pure.
//! - [`annotate`]: draws boxes and labels.

#![deny(unsafe_code)]

pub mod annotate;
pub mod darknet;
pub mod kernel;
pub mod model;
pub mod model_files;
pub mod pool;
pub mod postprocess;
pub mod preprocess;
pub mod weights;

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Tensor};
use image::RgbImage;

pub use candle_core::Device;
pub use model::ConvPath;
pub use preprocess::{ImageError, Prepared, ResizeMode};

use darknet::{CfgError, LayerSpec};
use model::Darknet;
use model_files::{ModelFileError, ModelFiles};
use postprocess::{Candidate, HeadLayout};
use weights::WeightsError;

/// Everything that can go wrong loading the model or detecting.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    /// A model file is missing or not the pinned one.
    #[error(transparent)]
    ModelFile(#[from] ModelFileError),
    /// The cfg has an unsupported or malformed section.
    #[error(transparent)]
    Cfg(#[from] CfgError),
    /// The weights do not fit the cfg.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// `coco.names` does not have one name per class.
    #[error("coco.names has {found} names but the cfg's heads predict {expected} classes; run `scripts/fetch-assets.sh --models-only`")]
    Labels {
        /// Names in the file.
        found: usize,
        /// Classes in the cfg.
        expected: usize,
    },
    /// The cfg has no `[yolo]` head, so there is nothing to decode.
    #[error("the cfg defines no [yolo] head; it is not a detector")]
    NoHeads,
    /// The image could not be used.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// candle failed while building or running the network.
    #[error("the network failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// A box in displayed (EXIF-rotated) image pixels, rounded and clipped to the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelBox {
    /// Left edge, 0-based.
    pub left: u32,
    /// Top edge, 0-based.
    pub top: u32,
    /// Width; `left + width ≤ image width`.
    pub width: u32,
    /// Height; `top + height ≤ image height`.
    pub height: u32,
}

/// One object found in an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Class name from `coco.names`, e.g. `person`.
    pub label: String,
    /// Objectness × class probability, 0..1.
    pub score: f32,
    /// Where it is.
    pub bbox: PixelBox,
}

/// Milliseconds spent in each stage for one image.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Decoding and resizing to the network input.
    pub preprocess_ms: f64,
    /// The forward pass (its share when the image ran in a batch).
    pub inference_ms: f64,
    /// Decoding the heads and NMS.
    pub postprocess_ms: f64,
}

/// What the detector found in one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Detections {
    /// Objects found, highest score first.
    pub objects: Vec<Detection>,
    /// Displayed image width in pixels.
    pub width: u32,
    /// Displayed image height in pixels.
    pub height: u32,
    /// sha256 of the weights that found them.
    pub model: String,
    /// Where the time went.
    pub timings: Timings,
}

/// An image decoded and fitted to the network input, ready for [`Detector::detect_images`].
pub struct LoadedImage {
    /// The decoded image in displayed orientation.
    pub image: RgbImage,
    /// Its network input and placement.
    pub prepared: Prepared,
    /// Milliseconds spent decoding and resizing.
    pub preprocess_ms: f64,
}

/// Tuning that does not change the network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorOptions {
    /// Keep boxes whose objectness × class probability is at least this (default 0.25).
    pub threshold: f32,
    /// Suppress a box whose IoU with a better box of its class is above this (default 0.45).
    pub nms_iou: f32,
    /// Letterbox (default) or stretch.
    pub resize: ResizeMode,
    /// Refuse images declaring more pixels than this, before decoding (default 40 M).
    pub max_pixels: u64,
    /// Convolution implementation (fused on CPU by default).
    pub conv_path: ConvPath,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        Self {
            threshold: 0.25,
            nms_iou: 0.45,
            resize: ResizeMode::Letterbox,
            max_pixels: 40_000_000,
            conv_path: ConvPath::Fused,
        }
    }
}

/// A loaded YOLOv3-tiny ready to detect.
pub struct Detector {
    net: Darknet,
    input: (usize, usize),
    labels: Vec<String>,
    model_sha256: String,
    options: DetectorOptions,
}

impl Detector {
    /// Loads and verifies the model files in `model_dir` and builds the network on `device`.
    pub fn load(model_dir: &Path, options: DetectorOptions, device: &Device) -> Result<Self, DetectorError> {
        Self::from_files(ModelFiles::read(model_dir)?, options, device)
    }

    /// Builds the detector from already-read model files.
    pub fn from_files(files: ModelFiles, mut options: DetectorOptions, device: &Device) -> Result<Self, DetectorError> {
        let spec = darknet::parse(&files.cfg)?;
        let convs = weights::load(&spec, &files.weights)?;
        let labels: Vec<String> = files.names.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
        let classes = spec.layers.iter().find_map(|l| match l {
            LayerSpec::Yolo(y) => Some(y.classes),
            _ => None,
        });
        let classes = classes.ok_or(DetectorError::NoHeads)?;
        if labels.len() != classes {
            return Err(DetectorError::Labels { found: labels.len(), expected: classes });
        }
        // The fused kernel is a CPU custom op; on CUDA, candle's own conv runs.
        if !device.is_cpu() {
            options.conv_path = ConvPath::Stock;
        }
        let net = Darknet::new(&spec, convs, device)?;
        if options.conv_path == ConvPath::Fused {
            // One forward on a blank input builds each layer's Winograd weights for its map size
            // (they are made on first use) and faults in the kernel's buffers, so the first job
            // is not the slow one.
            let input = (1, spec.input.channels, spec.input.height, spec.input.width);
            net.forward(&Tensor::zeros(input, DType::F32, device)?, ConvPath::Fused)?;
        }
        let model_sha256 = model_files::sha256_hex(&files.weights);
        Ok(Self { net, input: (spec.input.width, spec.input.height), labels, model_sha256, options })
    }

    /// The options in force.
    pub fn options(&self) -> &DetectorOptions {
        &self.options
    }

    /// sha256 of the weights: the `model` field of results.
    pub fn model_sha256(&self) -> &str {
        &self.model_sha256
    }

    /// The class names, in class-index order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The network, for tests and benchmarks that feed it tensors directly.
    pub fn network(&self) -> &Darknet {
        &self.net
    }

    /// Decodes image bytes (size-checked before decoding, EXIF-oriented, RGB) and fits the image
    /// to the network input, timing both.
    pub fn load_image(&self, bytes: &[u8]) -> Result<LoadedImage, ImageError> {
        let started = Instant::now();
        let image = preprocess::decode(bytes, self.options.max_pixels)?;
        let prepared = preprocess::prepare(&image, self.input, self.options.resize);
        Ok(LoadedImage { image, prepared, preprocess_ms: started.elapsed().as_secs_f64() * 1e3 })
    }

    /// Stacks prepared images into one `batch × 3 × H × W` tensor on the model's device.
    pub fn input_tensor(&self, batch: &[&Prepared]) -> Result<Tensor, DetectorError> {
        let (w, h) = self.input;
        // Whole-slice copies: collecting element by element took 0.3–0.5 ms per image.
        let mut data = Vec::with_capacity(batch.len() * 3 * h * w);
        batch.iter().for_each(|p| data.extend_from_slice(&p.chw));
        Ok(Tensor::from_vec(data, (batch.len(), 3, h, w), self.net.device())?)
    }

    /// Detects objects in a batch of loaded images with one forward pass: one result per image,
    /// objects highest accuracy first, with the batch's inference and post-processing time
    /// shared equally among its images.
    pub fn detect_images(&self, batch: &[&LoadedImage]) -> Result<Vec<Detections>, DetectorError> {
        let started = Instant::now();
        let prepared: Vec<&Prepared> = batch.iter().map(|l| &l.prepared).collect();
        let (objects, forward_ms) = self.detect_batch(&prepared)?;
        let n = batch.len().max(1) as f64;
        let inference_ms = forward_ms / n;
        let postprocess_ms = (started.elapsed().as_secs_f64() * 1e3 - forward_ms) / n;
        Ok(batch
            .iter()
            .zip(objects)
            .map(|(loaded, objects)| Detections {
                objects,
                width: loaded.image.width(),
                height: loaded.image.height(),
                model: self.model_sha256.clone(),
                timings: Timings { preprocess_ms: loaded.preprocess_ms, inference_ms, postprocess_ms },
            })
            .collect())
    }

    /// One forward pass over `batch`: one object list per image and the pass's milliseconds.
    fn detect_batch(&self, batch: &[&Prepared]) -> Result<(Vec<Vec<Detection>>, f64), DetectorError> {
        if batch.is_empty() {
            return Ok((Vec::new(), 0.0));
        }
        let started = Instant::now();
        let heads = self.net.forward(&self.input_tensor(batch)?, self.options.conv_path)?;
        // Copy each head to host memory once; per-image slices index into it.
        let heads: Vec<(Vec<f32>, usize, usize)> = heads
            .iter()
            .map(|t| {
                let (_, _, rows, cols) = t.dims4()?;
                Ok((t.flatten_all()?.to_vec1::<f32>()?, rows, cols))
            })
            .collect::<Result<_, candle_core::Error>>()?;
        let forward_ms = started.elapsed().as_secs_f64() * 1e3;
        let objects =
            batch.iter().enumerate().map(|(i, prepared)| self.objects(&heads, i, batch.len(), prepared)).collect();
        Ok((objects, forward_ms))
    }

    /// Loads and detects one image; returns its result and the decoded image (for annotation).
    pub fn detect_bytes(&self, bytes: &[u8]) -> Result<(Detections, RgbImage), DetectorError> {
        let loaded = self.load_image(bytes)?;
        let result = self.detect_images(&[&loaded])?.pop().expect("one result per image");
        Ok((result, loaded.image))
    }

    /// Decodes image `index` of the batch from the host copies of the heads.
    fn objects(
        &self,
        heads: &[(Vec<f32>, usize, usize)],
        index: usize,
        batch: usize,
        prepared: &Prepared,
    ) -> Vec<Detection> {
        let mut candidates: Vec<Candidate> = Vec::new();
        for (head, (data, rows, cols)) in self.net.heads().iter().zip(heads) {
            let per_image = data.len() / batch;
            let layout = HeadLayout {
                rows: *rows,
                cols: *cols,
                anchors: &head.yolo.anchors,
                classes: head.yolo.classes,
                input: self.input,
            };
            let raw = &data[index * per_image..(index + 1) * per_image];
            candidates.extend(postprocess::decode_head(raw, layout, self.options.threshold));
        }
        postprocess::non_max_suppression(candidates, self.options.nms_iou)
            .into_iter()
            .map(|c| self.to_object(c, prepared))
            .collect()
    }

    /// Maps a candidate to displayed image pixels, rounded and clipped.
    fn to_object(&self, c: Candidate, prepared: &Prepared) -> Detection {
        let p = prepared.placement;
        let clip = |v: f32, max: u32| v.round().clamp(0.0, max as f32) as u32;
        let (left, right) =
            (clip(p.to_image_x(c.bbox.x1), p.image_width), clip(p.to_image_x(c.bbox.x2), p.image_width));
        let (top, bottom) =
            (clip(p.to_image_y(c.bbox.y1), p.image_height), clip(p.to_image_y(c.bbox.y2), p.image_height));
        Detection {
            label: self.labels[c.class].clone(),
            score: c.score,
            bbox: PixelBox { left, top, width: right - left, height: bottom - top },
        }
    }
}

/// Sizes rayon's global pool, which the fused kernel and candle's CPU ops share. Call once,
/// before the first detection; later calls keep the first size.
pub fn set_threads(threads: usize) {
    if rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().is_err() {
        tracing::debug!(threads, "rayon pool already initialised; keeping its size");
    }
}
