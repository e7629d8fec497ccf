//! The detector's convolution kernel: im2col into one GEMM (the `gemm` crate candle itself uses),
//! with bias and leaky ReLU fused into each output tile while it is still in cache.
//!
//! Stock candle `conv2d` runs yolov3-tiny at ≈5× OpenCV's time on these 2-core machines, worst on
//! the thin early layers (3→16 at 416² reaches 2–3.5 GFLOPS). Here every layer is one
//! `[filters × K] · [K × pixels]` product, split into output tiles that run on rayon's pool, so
//! both cores stay busy even on layers with 16 filters. Stock candle stays the oracle in tests.
//!
//! This is the only module where `unsafe` is allowed: the raw-pointer `gemm` call and the
//! disjoint tile writes. Each block says why it is sound.
#![allow(unsafe_code)]

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

/// Output columns per tile. 256 columns × up to 64 filters = 64 KiB of output per tile, which
/// stays in the 512 KiB L2 for the fused bias + activation pass.
const TILE_COLUMNS: usize = 256;
/// Layers with at most this many filters on maps of at least [`THIN_MIN_ROWS`] rows are tiled by
/// output rows (conv0–6 of yolov3-tiny); deeper layers share one im2col buffer.
const THIN_FILTERS: usize = 128;
/// See [`THIN_FILTERS`]: 52 rows is conv6's map; conv8 (26 rows) has too few rows to split well.
const THIN_MIN_ROWS: usize = 32;
/// Floats of im2col data per row-tile: 64 Ki floats = 256 KiB, half the 512 KiB L2, leaving room
/// for the output block and the GEMM's packed panels.
const L2_BUDGET_FLOATS: usize = 64 * 1024;
/// Filters per tile; with [`TILE_COLUMNS`] this gives ≥ 8 tiles per layer at 13×13 (conv12:
/// 1024 filters → 16 × 1 tiles), enough to balance two threads.
const TILE_ROWS: usize = 64;

/// A convolution with folded batch norm, bias and optional leaky ReLU, as one candle custom op.
#[derive(Debug, Clone)]
pub struct FusedConv {
    /// Row-major `[filters, in_channels × size × size]` (OIHW flattened).
    weight: Vec<f32>,
    /// One per filter.
    bias: Vec<f32>,
    in_channels: usize,
    filters: usize,
    size: usize,
    stride: usize,
    padding: usize,
    /// `max(x, 0.1·x)` after the bias when true; identity otherwise.
    leaky: bool,
}

/// The spatial geometry of one convolution on one image.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    channels: usize,
    height: usize,
    width: usize,
    out_height: usize,
    out_width: usize,
}

impl Geometry {
    fn pixels(&self) -> usize {
        self.out_height * self.out_width
    }
}

impl FusedConv {
    /// Builds the op from OIHW weights. Panics on inconsistent lengths: callers build it from a
    /// [`super::weights::FoldedConv`], whose sizes the loader has checked against the cfg.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        weight: Vec<f32>,
        bias: Vec<f32>,
        in_channels: usize,
        size: usize,
        stride: usize,
        padding: usize,
        leaky: bool,
    ) -> Self {
        let filters = bias.len();
        assert_eq!(weight.len(), filters * in_channels * size * size, "weight length must be filters × in × k × k");
        assert!(size > 0 && stride > 0, "kernel size and stride must be positive");
        Self { weight, bias, in_channels, filters, size, stride, padding, leaky }
    }

    /// `conv 3→16 3×3` style summary for profiles.
    pub fn describe(&self) -> String {
        format!("conv {}→{} {}×{}", self.in_channels, self.filters, self.size, self.size)
    }

    fn geometry(&self, height: usize, width: usize) -> candle_core::Result<Geometry> {
        let span = |input: usize| (input + 2 * self.padding).checked_sub(self.size).map(|d| d / self.stride + 1);
        match (span(height), span(width)) {
            (Some(out_height), Some(out_width)) => {
                Ok(Geometry { channels: self.in_channels, height, width, out_height, out_width })
            }
            _ => candle_core::bail!("fused conv: input {height}×{width} is smaller than the {0}×{0} kernel", self.size),
        }
    }

    /// A 1×1, stride-1, unpadded convolution reads its input directly as the GEMM's right side.
    fn is_pointwise(&self) -> bool {
        self.size == 1 && self.stride == 1 && self.padding == 0
    }

    /// Runs one image: `input` is CHW, `output` is `filters × pixels`.
    fn run_image(&self, input: &[f32], geometry: Geometry, columns: &mut [f32], output: &mut [f32]) {
        let out = SharedOutput(output.as_mut_ptr());
        if self.is_pointwise() {
            self.run_filter_tiled(input, geometry.pixels(), out);
        } else if self.is_row_tiled(geometry) {
            self.run_row_tiled(input, geometry, out);
        } else {
            im2col(input, geometry, self.size, self.stride, self.padding, columns);
            self.run_filter_tiled(columns, geometry.pixels(), out);
        }
    }

    /// Thin layers on large maps (conv0–6: ≤ 128 filters, ≥ 52 rows): each task lays out the
    /// patches of a few output rows in its own L2-sized buffer and multiplies all filters by
    /// them, so the im2col data (27×173056 floats = 18 MB for conv0) never goes to memory.
    fn run_row_tiled(&self, input: &[f32], g: Geometry, out: SharedOutput) {
        let depth = self.depth();
        let rows_per_tile = (L2_BUDGET_FLOATS / (depth * g.out_width)).clamp(1, g.out_height);
        let blocks: Vec<std::ops::Range<usize>> = (0..g.out_height)
            .step_by(rows_per_tile)
            .map(|first| first..(first + rows_per_tile).min(g.out_height))
            .collect();
        let run = |buffer: &mut Vec<f32>, rows: &std::ops::Range<usize>| {
            let cols = rows.len() * g.out_width;
            buffer.resize(depth * cols, 0.0);
            im2col_rows(input, g, (self.size, self.stride, self.padding), rows.clone(), &mut buffer[..depth * cols]);
            // SAFETY: output rows `rows` of every filter are `[first·ow, first·ow + cols)` within
            // each `pixels`-long filter row of the output; blocks are disjoint, so tasks never
            // write the same element. `buffer` holds `depth × cols` floats.
            unsafe { self.tile_product(0..self.filters, cols, buffer, cols, out, rows.start * g.out_width, g.pixels()) }
        };
        if rayon::current_num_threads() > 1 {
            blocks.par_iter().for_each_init(Vec::new, run);
        } else {
            let mut buffer = Vec::new();
            blocks.iter().for_each(|rows| run(&mut buffer, rows));
        }
    }

    /// Deep layers on small maps (and every 1×1 conv): one shared right-hand side
    /// (`depth × pixels`), split into filter × column tiles.
    fn run_filter_tiled(&self, rhs: &[f32], pixels: usize, out: SharedOutput) {
        let run = |(rows, cols): &Tile| {
            // SAFETY: `rhs[cols.start..]` with row stride `pixels` holds `depth` rows of at least
            // `cols.len()` floats; tiles are disjoint blocks of the `filters × pixels` output.
            unsafe { self.tile_product(rows.clone(), cols.len(), &rhs[cols.start..], pixels, out, cols.start, pixels) }
        };
        let tiles = tiles(self.filters, pixels);
        if rayon::current_num_threads() > 1 {
            tiles.par_iter().for_each(run);
        } else {
            tiles.iter().for_each(run);
        }
    }

    /// `out[f][offset + j] = act(bias[f] + Σ_k weight[f][k] · rhs[k·rhs_stride + j])` for `f` in
    /// `filters`, `j < cols`, where `out` rows are `out_stride` apart.
    ///
    /// # Safety
    /// `rhs` must hold `depth` rows of `rhs_stride` floats with `cols ≤ rhs_stride` (the last row
    /// may stop after `cols`); `out` must point to a live buffer of `self.filters × out_stride`
    /// floats with `offset + cols ≤ out_stride`; no other thread may touch this block meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_product(
        &self,
        filters: std::ops::Range<usize>,
        cols: usize,
        rhs: &[f32],
        rhs_stride: usize,
        out: SharedOutput,
        offset: usize,
        out_stride: usize,
    ) {
        let depth = self.depth();
        debug_assert!(rhs.len() >= (depth - 1) * rhs_stride + cols && offset + cols <= out_stride);
        // SAFETY: the caller guarantees the extents above; `weight` holds `filters × depth`.
        unsafe {
            gemm::gemm(
                filters.len(),
                cols,
                depth,
                out.at(filters.start * out_stride + offset),
                1,
                out_stride as isize,
                false,
                self.weight.as_ptr().add(filters.start * depth),
                1,
                depth as isize,
                rhs.as_ptr(),
                1,
                rhs_stride as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
            for filter in filters {
                let values = std::slice::from_raw_parts_mut(out.at(filter * out_stride + offset), cols);
                bias_activate(values, self.bias[filter], self.leaky);
            }
        }
    }

    fn is_row_tiled(&self, g: Geometry) -> bool {
        !self.is_pointwise() && self.filters <= THIN_FILTERS && g.out_height >= THIN_MIN_ROWS
    }

    fn depth(&self) -> usize {
        self.in_channels * self.size * self.size
    }
}

/// A raw output pointer shared by tile tasks that write disjoint regions.
#[derive(Clone, Copy)]
struct SharedOutput(*mut f32);

impl SharedOutput {
    /// The element at `offset`. A method (not `.0`) so closures capture the whole `Sync` wrapper.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}
// SAFETY: the pointer is only dereferenced inside `run_image`, where each task writes a
// disjoint tile of a buffer that outlives the parallel loop.
unsafe impl Send for SharedOutput {}
// SAFETY: as above; no two tasks touch the same element.
unsafe impl Sync for SharedOutput {}

type Tile = (std::ops::Range<usize>, std::ops::Range<usize>);

/// Splits `filters × pixels` into tiles of at most [`TILE_ROWS`] × [`TILE_COLUMNS`].
fn tiles(filters: usize, pixels: usize) -> Vec<Tile> {
    let mut tiles = Vec::with_capacity(filters.div_ceil(TILE_ROWS) * pixels.div_ceil(TILE_COLUMNS));
    for row in (0..filters).step_by(TILE_ROWS) {
        for col in (0..pixels).step_by(TILE_COLUMNS) {
            tiles.push((row..(row + TILE_ROWS).min(filters), col..(col + TILE_COLUMNS).min(pixels)));
        }
    }
    tiles
}

/// Adds the bias and applies darknet's leaky ReLU (slope 0.1) in place.
fn bias_activate(values: &mut [f32], bias: f32, leaky: bool) {
    if leaky {
        values.iter_mut().for_each(|v| {
            let x = *v + bias;
            *v = if x > 0.0 { x } else { 0.1 * x };
        });
    } else {
        values.iter_mut().for_each(|v| *v += bias);
    }
}

/// Lays out every `k×k` input patch as a column: row `(c·k + ky)·k + kx`, column `oy·ow + ox`
/// holds `input[c][oy·s + ky − p][ox·s + kx − p]`, or 0 outside the image.
fn im2col(input: &[f32], g: Geometry, size: usize, stride: usize, padding: usize, columns: &mut [f32]) {
    let per_channel = size * size * g.pixels();
    let fill = |(c, block): (usize, &mut [f32])| {
        let plane = &input[c * g.height * g.width..(c + 1) * g.height * g.width];
        fill_channel(plane, g, (size, stride, padding), 0..g.out_height, block);
    };
    let columns = &mut columns[..g.channels * per_channel];
    if rayon::current_num_threads() > 1 {
        columns.par_chunks_mut(per_channel).enumerate().for_each(fill);
    } else {
        columns.chunks_mut(per_channel).enumerate().for_each(fill);
    }
}

/// im2col restricted to output rows `rows`: `depth × (rows.len() · ow)`.
fn im2col_rows(
    input: &[f32],
    g: Geometry,
    kernel: (usize, usize, usize),
    rows: std::ops::Range<usize>,
    columns: &mut [f32],
) {
    let per_channel = kernel.0 * kernel.0 * rows.len() * g.out_width;
    for (c, block) in columns.chunks_exact_mut(per_channel).enumerate() {
        let plane = &input[c * g.height * g.width..(c + 1) * g.height * g.width];
        fill_channel(plane, g, kernel, rows.clone(), block);
    }
}

/// The `k·k` im2col rows of one input channel, for output rows `rows`.
fn fill_channel(
    plane: &[f32],
    g: Geometry,
    (size, stride, padding): (usize, usize, usize),
    rows: std::ops::Range<usize>,
    block: &mut [f32],
) {
    let len = rows.len() * g.out_width;
    for (kernel_index, row) in block.chunks_exact_mut(len).enumerate() {
        let (ky, kx) = (kernel_index / size, kernel_index % size);
        for (oy, out_row) in rows.clone().zip(row.chunks_exact_mut(g.out_width)) {
            im2col_segment(plane, g, (ky, kx), stride, padding, oy, out_row);
        }
    }
}

/// Output row `oy` of one im2col row: the input plane shifted by `(ky, kx)`, sampled with `stride`.
fn im2col_segment(
    plane: &[f32],
    g: Geometry,
    (ky, kx): (usize, usize),
    stride: usize,
    padding: usize,
    oy: usize,
    out_row: &mut [f32],
) {
    let iy = (oy * stride + ky).wrapping_sub(padding);
    if iy >= g.height {
        out_row.fill(0.0);
        return;
    }
    let src = &plane[iy * g.width..(iy + 1) * g.width];
    if stride == 1 {
        // Valid outputs are those with 0 ≤ ox + kx − p < width: copy them as one slice.
        let first = padding.saturating_sub(kx).min(g.out_width);
        let last = (g.width + padding).saturating_sub(kx).min(g.out_width).max(first);
        out_row[..first].fill(0.0);
        if last > first {
            out_row[first..last].copy_from_slice(&src[first + kx - padding..last + kx - padding]);
        }
        out_row[last..].fill(0.0);
    } else {
        for (ox, value) in out_row.iter_mut().enumerate() {
            let ix = (ox * stride + kx).wrapping_sub(padding);
            *value = if ix < g.width { src[ix] } else { 0.0 };
        }
    }
}

impl CustomOp1 for FusedConv {
    fn name(&self) -> &'static str {
        "skyburst-fused-conv"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, channels, height, width) = layout.shape().dims4()?;
        if channels != self.in_channels {
            candle_core::bail!("fused conv: expected {} input channels, got {channels}", self.in_channels);
        }
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("fused conv: only f32 input is supported");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("fused conv: the input must be contiguous");
        };
        let input = &data[start..end];
        let geometry = self.geometry(height, width)?;
        let pixels = geometry.pixels();
        let per_image_in = channels * height * width;
        let per_image_out = self.filters * pixels;
        let shared_columns = !self.is_pointwise() && !self.is_row_tiled(geometry);
        let mut columns = if shared_columns { vec![0.0; self.depth() * pixels] } else { Vec::new() };
        let mut output = vec![0.0f32; batch * per_image_out];
        // Images run one after another, each using every thread: batch-4 results are then
        // bit-identical to four batch-1 runs, and the column buffer is reused.
        for (image, out) in input.chunks_exact(per_image_in).zip(output.chunks_exact_mut(per_image_out)) {
            self.run_image(image, geometry, &mut columns, out);
        }
        let shape = Shape::from((batch, self.filters, geometry.out_height, geometry.out_width));
        Ok((CpuStorage::F32(output), shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    /// The same convolution through stock candle: conv2d, bias, leaky ReLU.
    fn stock(conv: &FusedConv, x: &Tensor) -> Tensor {
        let dev = x.device();
        let w =
            Tensor::from_vec(conv.weight.clone(), (conv.filters, conv.in_channels, conv.size, conv.size), dev).unwrap();
        let b = Tensor::from_vec(conv.bias.clone(), (1, conv.filters, 1, 1), dev).unwrap();
        let y = x.conv2d(&w, conv.padding, conv.stride, 1, 1).unwrap().broadcast_add(&b).unwrap();
        if conv.leaky {
            candle_nn::ops::leaky_relu(&y, 0.1).unwrap()
        } else {
            y
        }
    }

    fn random_conv(c_in: usize, filters: usize, size: usize, stride: usize, padding: usize, leaky: bool) -> FusedConv {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.2, filters * c_in * size * size, &dev).unwrap().to_vec1().unwrap();
        let b = Tensor::randn(0f32, 0.5, filters, &dev).unwrap().to_vec1().unwrap();
        FusedConv::new(w, b, c_in, size, stride, padding, leaky)
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    #[test]
    fn matches_stock_candle_on_random_inputs() {
        let cases = [
            // (c_in, filters, k, stride, pad, h, w, leaky): the shapes yolov3-tiny uses plus odd ones.
            (3, 16, 3, 1, 1, 37, 29, true),
            (3, 16, 3, 1, 1, 97, 41, true),
            (32, 64, 3, 1, 1, 64, 64, true),
            (5, 7, 3, 2, 1, 70, 33, false),
            (16, 70, 3, 1, 1, 20, 300, true),
            (64, 33, 1, 1, 0, 13, 13, false),
            (5, 7, 3, 2, 1, 15, 16, true),
            (4, 3, 5, 1, 2, 9, 11, false),
            (8, 129, 3, 1, 0, 6, 7, true),
        ];
        for (c_in, filters, k, s, p, h, w, leaky) in cases {
            let conv = random_conv(c_in, filters, k, s, p, leaky);
            for batch in [1, 4] {
                let x = Tensor::randn(0f32, 1.0, (batch, c_in, h, w), &Device::Cpu).unwrap();
                let fast = x.apply_op1_no_bwd(&conv).unwrap();
                let oracle = stock(&conv, &x);
                assert_eq!(fast.dims(), oracle.dims());
                let diff = max_abs_diff(&fast, &oracle);
                assert!(diff < 1e-4, "case {:?} batch {batch}: max |Δ| = {diff}", (c_in, filters, k, s, p, h, w));
            }
        }
    }

    #[test]
    fn batch_rows_equal_single_runs_exactly() {
        let conv = random_conv(8, 24, 3, 1, 1, true);
        let x = Tensor::randn(0f32, 1.0, (4, 8, 26, 26), &Device::Cpu).unwrap();
        let batched = x.apply_op1_no_bwd(&conv).unwrap();
        for i in 0..4 {
            let single = x.narrow(0, i, 1).unwrap().apply_op1_no_bwd(&conv).unwrap();
            assert_eq!(max_abs_diff(&batched.narrow(0, i, 1).unwrap(), &single), 0.0);
        }
    }

    #[test]
    fn rejects_wrong_input_without_panicking() {
        let conv = random_conv(3, 4, 3, 1, 0, true);
        let wrong_channels = Tensor::zeros((1, 2, 8, 8), DType::F32, &Device::Cpu).unwrap();
        assert!(wrong_channels.apply_op1_no_bwd(&conv).is_err());
        let too_small = Tensor::zeros((1, 3, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(too_small.apply_op1_no_bwd(&conv).is_err());
        let wrong_dtype = Tensor::zeros((1, 3, 8, 8), DType::F64, &Device::Cpu).unwrap();
        assert!(wrong_dtype.apply_op1_no_bwd(&conv).is_err());
        let strided = Tensor::zeros((1, 8, 8, 3), DType::F32, &Device::Cpu).unwrap().permute((0, 3, 1, 2)).unwrap();
        assert!(strided.apply_op1_no_bwd(&conv).is_err(), "non-contiguous input is refused, not misread");
    }

    #[test]
    fn tiles_cover_the_output_exactly_once() {
        for (filters, pixels) in [(16, 173_056), (1024, 169), (255, 676), (1, 1)] {
            let covered: usize = tiles(filters, pixels).iter().map(|(r, c)| r.len() * c.len()).sum();
            assert_eq!(covered, filters * pixels);
        }
    }
}
