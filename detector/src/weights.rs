//! Darknet `.weights` reading: header, then per-convolution floats in cfg order, with batch
//! norm folded into each convolution's weights and bias at load.

use super::darknet::{ConvSpec, LayerSpec, NetworkSpec};

/// `gamma / sqrt(var + eps)`: darknet and OpenCV use 1e-6. The PyTorch/candle default 1e-5 moves
/// the heads by ≈1e-3 against the reference (docs/detector.md), 7× our measured error.
const BATCH_NORM_EPS: f32 = 1e-6;

/// A `.weights` file that does not fit the cfg.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file is shorter than the header.
    #[error("the weights file is {found} bytes, shorter than darknet's header; re-run scripts/fetch-assets.sh")]
    NoHeader {
        /// Bytes found.
        found: usize,
    },
    /// The cfg needs a different number of bytes than the file holds.
    #[error("the weights file has {found} bytes but the cfg needs {expected} ({which}); the cfg and weights do not belong together — re-run scripts/fetch-assets.sh")]
    SizeMismatch {
        /// Bytes the cfg implies (header included).
        expected: usize,
        /// Bytes in the file.
        found: usize,
        /// `"file too short"` or `"file too long"`.
        which: &'static str,
    },
}

/// One convolution ready to run: batch norm already folded in.
#[derive(Debug, Clone)]
pub struct FoldedConv {
    /// The layer's cfg.
    pub spec: ConvSpec,
    /// Input channels.
    pub in_channels: usize,
    /// Weights in OIHW order: `filters × in_channels × size × size`.
    pub weight: Vec<f32>,
    /// One bias per filter.
    pub bias: Vec<f32>,
}

/// The channel count each layer outputs, derived from the cfg.
pub fn output_channels(spec: &NetworkSpec) -> Vec<usize> {
    let mut channels: Vec<usize> = Vec::with_capacity(spec.layers.len());
    for layer in &spec.layers {
        let previous = channels.last().copied().unwrap_or(spec.input.channels);
        channels.push(match layer {
            LayerSpec::Conv(conv) => conv.filters,
            LayerSpec::Route { layers } => layers.iter().map(|&i| channels[i]).sum(),
            LayerSpec::MaxPool { .. } | LayerSpec::Upsample { .. } | LayerSpec::Yolo(_) => previous,
        });
    }
    channels
}

/// Reads every convolution's weights from `bytes` (a whole `.weights` file), in cfg order.
///
/// The file must hold exactly what the cfg needs: a short or long file is an error giving both
/// sizes, because a silent partial load would produce garbage detections.
pub fn load(spec: &NetworkSpec, bytes: &[u8]) -> Result<Vec<FoldedConv>, WeightsError> {
    let header = header_len(bytes)?;
    let channels = output_channels(spec);
    let mut inputs = Vec::new();
    for (index, layer) in spec.layers.iter().enumerate() {
        if let LayerSpec::Conv(conv) = layer {
            let c_in = if index == 0 { spec.input.channels } else { channels[index - 1] };
            inputs.push((*conv, c_in));
        }
    }
    let floats: usize = inputs.iter().map(|(conv, c_in)| floats_for(conv, *c_in)).sum();
    let expected = header + floats * 4;
    if bytes.len() != expected {
        let which = if bytes.len() < expected { "file too short" } else { "file too long" };
        return Err(WeightsError::SizeMismatch { expected, found: bytes.len(), which });
    }
    let mut reader = FloatReader { bytes: &bytes[header..] };
    Ok(inputs.into_iter().map(|(spec, c_in)| read_conv(&mut reader, spec, c_in)).collect())
}

/// Darknet's header: major, minor, revision (i32), then `seen` as u64 from version 0.2 on.
fn header_len(bytes: &[u8]) -> Result<usize, WeightsError> {
    if bytes.len() < 16 {
        return Err(WeightsError::NoHeader { found: bytes.len() });
    }
    let word = |i: usize| i32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let (major, minor) = (word(0), word(4));
    Ok(if major * 10 + minor >= 2 && major < 1000 { 20 } else { 16 })
}

fn floats_for(conv: &ConvSpec, c_in: usize) -> usize {
    let per_filter = if conv.batch_normalize { 4 } else { 1 };
    conv.filters * per_filter + conv.filters * c_in * conv.size * conv.size
}

struct FloatReader<'a> {
    bytes: &'a [u8],
}

impl FloatReader<'_> {
    /// Takes `n` little-endian f32s; the caller has checked the total size.
    fn take(&mut self, n: usize) -> Vec<f32> {
        let (head, rest) = self.bytes.split_at(n * 4);
        self.bytes = rest;
        head.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }
}

fn read_conv(reader: &mut FloatReader, spec: ConvSpec, in_channels: usize) -> FoldedConv {
    let filters = spec.filters;
    let mut bias = reader.take(filters);
    let bn = spec.batch_normalize.then(|| {
        let gamma = reader.take(filters);
        let mean = reader.take(filters);
        let var = reader.take(filters);
        (gamma, mean, var)
    });
    let mut weight = reader.take(filters * in_channels * spec.size * spec.size);
    if let Some((gamma, mean, var)) = bn {
        fold_batch_norm(&mut weight, &mut bias, &gamma, &mean, &var);
    }
    FoldedConv { spec, in_channels, weight, bias }
}

/// Folds `y = gamma·(conv(x) − mean)/sqrt(var + eps) + beta` into the conv:
/// `W' = W·s`, `b' = beta − mean·s` with `s = gamma/sqrt(var + eps)` per output channel.
/// On entry `bias` holds beta.
pub fn fold_batch_norm(weight: &mut [f32], bias: &mut [f32], gamma: &[f32], mean: &[f32], var: &[f32]) {
    let per_filter = weight.len() / bias.len();
    for (o, row) in weight.chunks_exact_mut(per_filter).enumerate() {
        let scale = gamma[o] / (var[o] + BATCH_NORM_EPS).sqrt();
        row.iter_mut().for_each(|w| *w *= scale);
        bias[o] -= mean[o] * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::super::darknet;
    use super::*;

    const TINY: &str = include_str!("../../tests/fixtures/yolo/yolov3-tiny.cfg");

    fn header() -> Vec<u8> {
        [0i32, 2, 0].iter().flat_map(|v| v.to_le_bytes()).chain(7u64.to_le_bytes()).collect()
    }

    #[test]
    fn the_stock_cfg_needs_exactly_the_stock_file_size() {
        let spec = darknet::parse(TINY).unwrap();
        let err = load(&spec, &header()).unwrap_err();
        // 35,434,956 bytes: the size of the published yolov3-tiny.weights.
        assert!(matches!(err, WeightsError::SizeMismatch { expected: 35_434_956, found: 20, .. }), "{err}");
        assert!(err.to_string().contains("too short"));
    }

    #[test]
    fn short_and_long_files_report_both_sizes() {
        let spec = darknet::parse(
            "[net]\nwidth=4\nheight=4\nchannels=1\n[convolutional]\nfilters=2\nsize=1\nactivation=linear\n",
        )
        .unwrap();
        // 2 biases + 2 weights.
        let mut file = header();
        file.extend([0.5f32, -1.0, 2.0, 3.0].iter().flat_map(|v| v.to_le_bytes()));
        let convs = load(&spec, &file).unwrap();
        assert_eq!(convs[0].bias, vec![0.5, -1.0]);
        assert_eq!(convs[0].weight, vec![2.0, 3.0]);
        file.extend([0u8; 4]);
        let err = load(&spec, &file).unwrap_err();
        assert!(matches!(err, WeightsError::SizeMismatch { expected: 36, found: 40, which: "file too long" }));
        assert!(matches!(load(&spec, &file[..10]), Err(WeightsError::NoHeader { found: 10 })));
    }

    #[test]
    fn batch_norm_folds_into_weight_and_bias() {
        let (mut w, mut b) = (vec![1.0, 2.0, 3.0, 4.0], vec![0.5, 0.0]);
        fold_batch_norm(&mut w, &mut b, &[2.0, 1.0], &[1.0, -2.0], &[4.0 - BATCH_NORM_EPS, 1.0 - BATCH_NORM_EPS]);
        // s = [2/2, 1/1] = [1, 1]; b = beta - mean·s.
        assert_eq!(w, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(b, vec![-0.5, 2.0]);
    }

    #[test]
    fn channels_flow_through_routes() {
        let spec = darknet::parse(TINY).unwrap();
        let channels = output_channels(&spec);
        assert_eq!(channels[20], 384, "route -1, 8 concatenates 128 + 256");
        assert_eq!(channels[15], 255);
    }
}
