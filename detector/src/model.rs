//! The network: layers built from a parsed cfg and folded weights, and the forward pass that
//! returns each detection head's raw (pre-sigmoid) output.

use std::sync::OnceLock;

use candle_core::{Device, Module, Result, Tensor};

use super::darknet::{Activation, LayerSpec, NetworkSpec, YoloSpec};
use super::kernel::FusedConv;
use super::pool::MaxPool;
use super::weights::FoldedConv;

/// Which convolution implementation the forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvPath {
    /// The fused im2col + GEMM kernel ([`super::kernel`]) and darknet max-pool
    /// ([`super::pool`]); CPU only. The default on CPU.
    #[default]
    Fused,
    /// Stock `candle_nn::Conv2d` + leaky ReLU + `max_pool2d`: the oracle in tests, and the path
    /// on CUDA.
    Stock,
}

/// One convolution in both forms. The stock form is built from the fused op's weights on first
/// use: CPU workers never run it, and its copy of the weights was ≈ 35 MB of each worker's RSS.
struct ConvLayer {
    fused: FusedConv,
    stock: OnceLock<candle_nn::Conv2d>,
    config: candle_nn::Conv2dConfig,
    leaky: bool,
    device: Device,
}

impl ConvLayer {
    /// `pool`, when given, is fused into the kernel's output (the stock path still runs it as
    /// its own layer).
    fn load(conv: FoldedConv, pool: Option<MaxPool>, device: &Device) -> Result<Self> {
        let spec = conv.spec;
        let leaky = spec.activation == Activation::Leaky;
        let config = candle_nn::Conv2dConfig { padding: spec.padding, stride: spec.stride, ..Default::default() };
        let fused =
            FusedConv::new(conv.weight, conv.bias, conv.in_channels, spec.size, spec.stride, spec.padding, leaky);
        let fused = match pool {
            Some(pool) => fused.with_pool(pool),
            None => fused,
        };
        Ok(Self { fused, stock: OnceLock::new(), config, leaky, device: device.clone() })
    }

    /// Stock candle's `Conv2d` with the same weights, built on first use.
    fn stock(&self) -> Result<&candle_nn::Conv2d> {
        if let Some(stock) = self.stock.get() {
            return Ok(stock);
        }
        let (filters, channels, size) = self.fused.shape();
        let weight = Tensor::from_vec(self.fused.oihw_weights(), (filters, channels, size, size), &self.device)?;
        let bias = Tensor::from_slice(self.fused.bias(), filters, &self.device)?;
        let built = candle_nn::Conv2d::new(weight, Some(bias), self.config);
        Ok(self.stock.get_or_init(|| built))
    }

    fn forward(&self, x: &Tensor, path: ConvPath) -> Result<Tensor> {
        match path {
            ConvPath::Fused => x.contiguous()?.apply_op1_no_bwd(&self.fused),
            ConvPath::Stock => {
                let y = self.stock()?.forward(x)?;
                if self.leaky {
                    candle_nn::ops::leaky_relu(&y, 0.1)
                } else {
                    Ok(y)
                }
            }
        }
    }
}

enum Layer {
    Conv(Box<ConvLayer>),
    /// `fused`: the preceding conv already pooled its output on the fused path.
    MaxPool {
        size: usize,
        stride: usize,
        fused: bool,
    },
    Route(Vec<usize>),
    Upsample(usize),
    Yolo,
}

/// A detection head: where its raw output comes from and how to decode it.
#[derive(Debug, Clone)]
pub struct Head {
    /// Index of the layer whose output the head reads.
    pub source: usize,
    /// Anchors and classes from the cfg.
    pub yolo: YoloSpec,
}

/// YOLOv3-tiny (or any network made of the supported sections) ready to run.
pub struct Darknet {
    layers: Vec<Layer>,
    heads: Vec<Head>,
    device: Device,
}

impl Darknet {
    /// Builds the network on `device` from its cfg and the weights read for it, in cfg order.
    pub fn new(spec: &NetworkSpec, convs: Vec<FoldedConv>, device: &Device) -> Result<Self> {
        let mut convs = convs.into_iter();
        let mut layers = Vec::with_capacity(spec.layers.len());
        let mut heads = Vec::new();
        let fusable = fusable_pools(&spec.layers);
        for (index, layer) in spec.layers.iter().enumerate() {
            layers.push(match layer {
                LayerSpec::Conv(_) => {
                    let conv =
                        convs.next().ok_or_else(|| candle_core::Error::Msg("fewer weights than convs".into()))?;
                    let pool = match spec.layers.get(index + 1) {
                        Some(&LayerSpec::MaxPool { size, stride }) if fusable[index + 1] => {
                            Some(MaxPool { size, stride })
                        }
                        _ => None,
                    };
                    Layer::Conv(Box::new(ConvLayer::load(conv, pool, device)?))
                }
                LayerSpec::MaxPool { size, stride } => {
                    Layer::MaxPool { size: *size, stride: *stride, fused: fusable[index] }
                }
                LayerSpec::Route { layers } => Layer::Route(layers.clone()),
                LayerSpec::Upsample { stride } => Layer::Upsample(*stride),
                LayerSpec::Yolo(yolo) => {
                    let source = index.checked_sub(1).ok_or_else(|| candle_core::Error::Msg("yolo first".into()))?;
                    heads.push(Head { source, yolo: yolo.clone() });
                    Layer::Yolo
                }
            });
        }
        Ok(Self { layers, heads, device: device.clone() })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A short description of each layer (`conv 3→16 3×3`, `maxpool 2/2`, …) for profiles.
    pub fn describe(&self) -> Vec<String> {
        self.layers
            .iter()
            .map(|layer| match layer {
                Layer::Conv(c) => c.fused.describe(),
                Layer::MaxPool { size, stride, fused: false } => format!("maxpool {size}/{stride}"),
                Layer::MaxPool { size, stride, fused: true } => {
                    format!("maxpool {size}/{stride} (fused into the conv)")
                }
                Layer::Route(sources) => format!("route {sources:?}"),
                Layer::Upsample(stride) => format!("upsample ×{stride}"),
                Layer::Yolo => "yolo".to_string(),
            })
            .collect()
    }

    /// The detection heads in cfg order (13×13 first for yolov3-tiny).
    pub fn heads(&self) -> &[Head] {
        &self.heads
    }

    /// Runs a `batch × 3 × H × W` input and returns each head's raw `batch × (A·(5+C)) × h × w`
    /// output, in [`Self::heads`] order.
    pub fn forward(&self, input: &Tensor, path: ConvPath) -> Result<Vec<Tensor>> {
        self.forward_observed(input, path, |_, _| {})
    }

    /// As [`Self::forward`], calling `observe(layer index, output)` after each layer — the
    /// per-layer profile in `benches/detector.rs` times the gaps between calls.
    pub fn forward_observed(
        &self,
        input: &Tensor,
        path: ConvPath,
        mut observe: impl FnMut(usize, &Tensor),
    ) -> Result<Vec<Tensor>> {
        let mut outputs: Vec<Tensor> = Vec::with_capacity(self.layers.len());
        for (index, layer) in self.layers.iter().enumerate() {
            let x = outputs.last().unwrap_or(input);
            let y = match layer {
                Layer::Conv(conv) => conv.forward(x, path)?,
                Layer::MaxPool { size, stride, fused } => match path {
                    ConvPath::Fused if *fused => x.clone(),
                    ConvPath::Fused => x.contiguous()?.apply_op1_no_bwd(&MaxPool { size: *size, stride: *stride })?,
                    ConvPath::Stock => stock_max_pool(x, *size, *stride)?,
                },
                Layer::Route(sources) => {
                    let parts: Vec<&Tensor> = sources.iter().map(|&i| &outputs[i]).collect();
                    Tensor::cat(&parts, 1)?
                }
                Layer::Upsample(stride) => {
                    let (_, _, h, w) = x.dims4()?;
                    x.upsample_nearest2d(h * stride, w * stride)?
                }
                Layer::Yolo => x.clone(),
            };
            observe(index, &y);
            outputs.push(y);
        }
        Ok(self.heads.iter().map(|head| outputs[head.source].clone()).collect())
    }
}

/// Which layers are max-pools the fused kernel can fold into the conv before them: the conv's
/// full-resolution output must feed nothing else (conv8 of yolov3-tiny also feeds a route, so
/// its pool runs on its own). Saves the pool's pass over memory: 1.7 ms of a 1-thread forward
/// for conv0's 11 MB output alone.
fn fusable_pools(layers: &[LayerSpec]) -> Vec<bool> {
    let routed: Vec<usize> = layers
        .iter()
        .filter_map(|layer| match layer {
            LayerSpec::Route { layers } => Some(layers.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    (0..layers.len())
        .map(|index| {
            let after_conv = index.checked_sub(1).filter(|&conv| matches!(layers[conv], LayerSpec::Conv(_)));
            matches!(layers[index], LayerSpec::MaxPool { .. }) && after_conv.is_some_and(|conv| !routed.contains(&conv))
        })
        .collect()
}

/// Darknet's max-pool in stock candle ops (the oracle): with stride 1 it pads one row and column
/// at the bottom-right, so a 13×13 map stays 13×13. Replicating the edge equals −∞ padding.
fn stock_max_pool(x: &Tensor, size: usize, stride: usize) -> Result<Tensor> {
    if stride == 1 && size > 1 {
        let padded = x.pad_with_same(2, 0, size - 1)?.pad_with_same(3, 0, size - 1)?;
        padded.max_pool2d_with_stride(size, 1)
    } else {
        x.max_pool2d_with_stride(size, stride)
    }
}
