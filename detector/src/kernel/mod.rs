//! The detector's convolution kernel: a GEMM on our own micro-kernels with bias, leaky ReLU and
//! (where one follows) darknet's max-pool fused into the write-out, as a candle custom op.
//!
//! Every layer is `[filters × depth] · [depth × pixels]` (depth = in_channels·k·k), with the
//! weights packed into 6-filter panels once at load ([`pack::PackedWeights`]) and the
//! micro-kernels ([`micro`]) multiplying 6 filters × 16 pixels at a time. The pixels come one of
//! three ways, chosen per layer and input size:
//! - in place: wide stride-1 layers (conv0, conv2) read a zero-padded copy of the input directly;
//! - packed: each task packs the patches of a chunk of output pixels, one depth slice at a time,
//!   into L2-sized panels ([`pack::pack_patches`]); 1×1 and strided layers;
//! - Winograd ([`winograd`]): 3×3 stride-1 layers on narrow maps, and on wide ones from 32
//!   channels (conv4–14, conv21): n² GEMMs on transformed tiles, F(4×4, 3×3) on 26²–104²
//!   maps and F(2×2, 3×3) on 13² ones (see [`F4_MIN_SIDE`]).
//!
//! Each task's sums land in a task-local block that the write-out turns into activations, pooled
//! first when a max-pool follows, so conv0's 11 MB full-resolution output never reaches memory.
//!
//! Stock candle `conv2d` ran yolov3-tiny at ≈ 4× OpenCV's time on these 2-core machines and the
//! `gemm` crate at ≈ 1.5× (it repacks the weights on every call); stock candle stays the oracle.
//!
//! This is the only module where `unsafe` is allowed: the micro-kernels' raw pointers and the
//! disjoint writes of parallel tasks into one output buffer. Each block says why it is sound.
#![allow(unsafe_code)]

mod micro;
mod pack;
mod winograd;

use std::cell::RefCell;
use std::ops::Range;
use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

use super::pool::MaxPool;
use micro::{Tile, MR, NR, WR};
use pack::{pack_patches, Geometry, PackedWeights};
use winograd::{Tiles, Transform, Variant, WinogradWeights, F2, F4};

/// Depth rows per slice: a 6-filter weight slice is then ≤ 6 KiB and a 16-pixel patch panel
/// ≤ 16 KiB, so both stay in the 32 KiB L1 while a micro-kernel runs.
const DEPTH_SLICE: usize = 256;
/// Patch floats packed per task and slice: 32 Ki floats = 128 KiB, an eighth of the 1 MiB L2,
/// leaving room for the task's output block and the weight slices streaming through.
const PATCH_BLOCK_FLOATS: usize = 32 * 1024;
/// Output-block floats per task when patches are read in place: 128 KiB of L2 again.
const OUTPUT_BLOCK_FLOATS: usize = 32 * 1024;
/// Padded input width from which stride-1 layers read patches in place. The in-place layout
/// computes the `k − 1` padding columns of every row as well and drops them: ≤ 2/48 ≈ 4 % extra
/// from here (yolov3-tiny's conv0–6, 418 down to 54 columns), 7–13 % on the 28- and 15-column
/// maps, which pack instead (their 256+ filters make packing cheap by comparison).
const IN_PLACE_MIN_WIDTH: usize = 48;
/// Output side from which 3×3 layers run Winograd F(4×4, 3×3) rather than F(2×2, 3×3).
/// Measured on yolov3-tiny, one thread: conv6 (52²) 2.9 → 2.35 ms, conv21 (26²) 7.4–8.0 →
/// 6.5 ms, conv8 (26²) even; but conv12 (13²) 11.2 → 12.6 ms: F(4×4)'s 4×4 tiles cover 16²
/// outputs (51 % waste), and its 75 MB of transformed weights (2.25× F(2×2)'s) serve only 16
/// tiles each, so the layer waits on memory.
const F4_MIN_SIDE: usize = 20;
/// Floats of one Winograd task's product blocks (n² positions × tiles × filters): 364 KiB, so
/// they stay in the 1 MiB L2 until the output transform. That is a whole 26² map for F(4×4)
/// (49 tiles in 7 panels) × 48 filters: each filter panel's weights are read from memory once
/// per image. With a third of that (4 tile panels), conv21 took 8.5 ms instead of 6.5.
const WINOGRAD_BLOCK_FLOATS: usize = 36 * 54 * 48;
/// 16-filter panels per Winograd task: see [`WINOGRAD_BLOCK_FLOATS`]. Layers whose weights
/// stream from memory ([`streams_from_memory`]) take one panel per task instead: a step's 16 KiB
/// of weights (256 channels × 16 filters) then stay in the 32 KiB L1 while the task's 7 tile
/// panels use them, where 3 panels' 48 KiB went back to L2 for each. On a Zen 3 core (512 KiB
/// L2, AVX2), one thread, medians of 6 interleaved rounds: conv12 −8 %, conv14 −7 %, conv10 and
/// conv21 within ±3 %; whole forward −2.7 % (−2.2 % on two threads). conv4, conv6 and conv8
/// (≤ 4.7 MB of weights) lost 12–26 % with one panel, so they keep 3. On Zen 4 (1 MiB L2,
/// AVX-512) 1, 2 or 3 panels measured within ±0.5 ms.
const WINOGRAD_FILTER_PANELS: usize = 3;
/// Input channels from which wide maps (read in place otherwise) run as Winograd too: with
/// fewer, the GEMMs are too shallow to pay for the transforms. Measured on yolov3-tiny, once
/// the transforms ran 8 floats a step: conv4 (32 channels, 104²) 3.80 → 3.4 ms on one thread
/// and 2.2–2.5 → 1.95 on two; conv2 (16 channels, 208²) 4.0 → 6.1 ms, so it stays in place.
const WINOGRAD_MIN_CHANNELS: usize = 32;
/// Winograd weights from which each GEMM step (position × depth slice) prefetches the next
/// step's weight panels, a part per tile panel. Larger weights come from memory every image:
/// the first tile panel of each step waited on them (conv12's 33.5 MB ran its GEMMs at ≈ 84
/// GFLOPS against 110 on cached panels). Measured, one thread: conv12 10.9 → 9.9 ms, conv21
/// 5.8 → 5.3; conv6 (1.2 MB) and conv8 (4.7 MB) gained nothing and lost a little.
const PREFETCH_MIN_BYTES: usize = 8 << 20;

/// Whether a layer's Winograd weights come from memory every image (see [`PREFETCH_MIN_BYTES`]):
/// its GEMM steps prefetch and its tasks take one filter panel each.
fn streams_from_memory(weights: &WinogradWeights) -> bool {
    weights.bytes() >= PREFETCH_MIN_BYTES
}
/// Tasks per thread on multi-threaded runs, so a core slowed by a neighbour's process does not
/// hold up the layer (two tasks of equal size would).
const TASKS_PER_THREAD: usize = 2;

thread_local! {
    /// Each thread's packed patches and output block, reused across tasks, layers and images
    /// (allocating 128 KiB+ per task would map and fault fresh pages every time).
    static BUFFERS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// The zero-padded input of in-place layers, and the Winograd-domain input,
    /// reused likewise. Taken out while in use: a thread waiting on its tasks may run another
    /// image's layer meanwhile.
    static PADDED: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// A convolution with folded batch norm, bias, optional leaky ReLU and an optional max-pool
/// after it, as one candle custom op.
#[derive(Debug, Clone)]
pub struct FusedConv {
    weights: PackedWeights,
    /// The Winograd-domain weights of 3×3 stride-1 layers, F(2×2) then F(4×4), each built on
    /// first use: a layer runs on one map size, so it only ever builds one of them.
    winograd: Option<[OnceLock<WinogradWeights>; 2]>,
    /// Off only in tests that hold the packed path of 3×3 layers to the oracle.
    allow_winograd: bool,
    /// Set only by tests that hold one variant to the oracle on every map size.
    forced_variant: Option<Variant>,
    /// One per filter.
    bias: Vec<f32>,
    in_channels: usize,
    filters: usize,
    size: usize,
    stride: usize,
    padding: usize,
    /// `max(x, 0.1·x)` after the bias when true; identity otherwise.
    leaky: bool,
    /// Darknet max-pool applied to the activations before they are written.
    pool: Option<MaxPool>,
    /// Micro-kernels by rows − 1: AVX2 + FMA where the CPU has them.
    tiles: [Tile; MR],
    /// The same set's kernels for Winograd panels, up to [`WR`] rows.
    winograd_tiles: [Tile; WR],
}

/// Which filters and which output pixels one task computes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Task {
    /// Weight panels (6 filters each).
    panels: Range<usize>,
    /// Output pixels in the layer's block space ([`FusedConv::row_stride`] floats per output
    /// row); whole rows of pooling windows when a pool is fused.
    pixels: Range<usize>,
}

/// One Winograd task: 7-tile panels × 16-filter panels.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WinogradTask {
    tile_panels: Range<usize>,
    filter_panels: Range<usize>,
}

/// Where one image's patches come from.
enum Patches<'a> {
    /// Packed per task and depth slice into 16-pixel panels.
    Packed(&'a [f32]),
    /// Read in place from the zero-padded input (`c × (h + 2p) × (w + 2p)` plus slack), depth
    /// row `k` at `offsets[k]` from the output pixel's block-space index.
    InPlace { padded: &'a [f32], offsets: Vec<usize> },
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
        let weights = PackedWeights::new(&weight, filters, in_channels * size * size);
        let winograd = (size == 3 && stride == 1).then(Default::default);
        let (tiles, winograd_tiles) = (micro::tiles(), micro::winograd_tiles());
        let (pool, allow_winograd, forced_variant) = (None, true, None);
        Self {
            weights,
            winograd,
            allow_winograd,
            forced_variant,
            bias,
            in_channels,
            filters,
            size,
            stride,
            padding,
            leaky,
            pool,
            tiles,
            winograd_tiles,
        }
    }

    /// The same op with `pool` applied to its output.
    pub fn with_pool(self, pool: MaxPool) -> Self {
        Self { pool: Some(pool), ..self }
    }

    /// (filters, input channels, kernel side).
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.filters, self.in_channels, self.size)
    }

    /// The weights back in OIHW order (for stock candle's copy of the layer).
    pub fn oihw_weights(&self) -> Vec<f32> {
        self.weights.unpack()
    }

    /// One bias per filter.
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// `conv 3→16 3×3` (`+ maxpool 2/2`) style summary for profiles.
    pub fn describe(&self) -> String {
        let conv = format!("conv {}→{} {}×{}", self.in_channels, self.filters, self.size, self.size);
        match self.pool {
            Some(pool) => format!("{conv} + maxpool {}/{}", pool.size, pool.stride),
            None => conv,
        }
    }

    fn geometry(&self, height: usize, width: usize) -> candle_core::Result<Geometry> {
        let span = |input: usize| (input + 2 * self.padding).checked_sub(self.size).map(|d| d / self.stride + 1);
        let (Some(out_height), Some(out_width)) = (span(height), span(width)) else {
            candle_core::bail!("fused conv: input {height}×{width} is smaller than the {0}×{0} kernel", self.size)
        };
        let (size, stride, padding) = (self.size, self.stride, self.padding);
        Ok(Geometry { channels: self.in_channels, height, width, out_height, out_width, size, stride, padding })
    }

    /// Output rows and columns after the fused pool, if any.
    fn output_side(&self, g: &Geometry) -> (usize, usize) {
        match self.pool {
            Some(pool) => (pool.output_len(g.out_height), pool.output_len(g.out_width)),
            None => (g.out_height, g.out_width),
        }
    }

    /// 3×3 stride-1 layers run as Winograd on maps too narrow to read in place, and on wide
    /// ones from [`WINOGRAD_MIN_CHANNELS`] input channels.
    fn uses_winograd(&self, g: &Geometry) -> bool {
        let deep_enough = !self.reads_in_place(g) || self.in_channels >= WINOGRAD_MIN_CHANNELS;
        self.winograd.is_some() && self.allow_winograd && deep_enough
    }

    /// F(4×4) from [`F4_MIN_SIDE`] outputs a side, F(2×2) below (see there).
    fn winograd_variant(&self, g: &Geometry) -> Variant {
        match self.forced_variant {
            Some(variant) => variant,
            None if g.out_height.min(g.out_width) >= F4_MIN_SIDE => Variant::F4,
            None => Variant::F2,
        }
    }

    /// The Winograd-domain weights for `variant`, transformed on first use.
    fn winograd_weights(&self, variant: Variant) -> &WinogradWeights {
        let slots = self.winograd.as_ref().expect("uses_winograd checked for a 3×3 stride-1 layer");
        let slot = &slots[match variant {
            Variant::F2 => 0,
            Variant::F4 => 1,
        }];
        slot.get_or_init(|| WinogradWeights::new(&self.weights.unpack(), self.filters, self.in_channels, variant))
    }

    /// A 2×2 stride-2 pool takes exactly one Winograd tile per output: the max of its four.
    fn pools_per_tile(&self) -> bool {
        self.pool.is_some_and(|pool| pool.size == 2 && pool.stride == 2)
    }

    /// Stride-1 layers on wide maps read their patches in place (see [`IN_PLACE_MIN_WIDTH`]).
    fn reads_in_place(&self, g: &Geometry) -> bool {
        g.stride == 1 && !g.is_pointwise() && g.padded_width() >= IN_PLACE_MIN_WIDTH
    }

    /// Floats per output row in the block space: the padded width in place (each row carries
    /// `k − 1` junk columns), the output width when packed.
    fn row_stride(&self, g: &Geometry) -> usize {
        if self.reads_in_place(g) {
            g.padded_width()
        } else {
            g.out_width
        }
    }

    /// Splits one image's work into tasks: chunks of output pixels sized for L2, times filter
    /// groups when there are too few chunks to keep every thread busy (13×13 layers: 169
    /// pixels, up to 1024 filters).
    fn tasks(&self, g: &Geometry, threads: usize) -> Vec<Task> {
        let budget = if self.reads_in_place(g) {
            OUTPUT_BLOCK_FLOATS / (self.weights.panels() * MR)
        } else {
            PATCH_BLOCK_FLOATS / g.depth().div_ceil(g.depth().div_ceil(DEPTH_SLICE))
        };
        let chunks = self.chunks(g, budget.max(NR));
        let wanted = if threads > 1 { threads * TASKS_PER_THREAD } else { 1 };
        let groups = wanted.div_ceil(chunks.len()).clamp(1, self.weights.panels());
        let mut tasks = Vec::with_capacity(groups * chunks.len());
        for panels in split_evenly(self.weights.panels(), groups) {
            tasks.extend(chunks.iter().map(|pixels| Task { panels: panels.clone(), pixels: pixels.clone() }));
        }
        tasks
    }

    /// Block-space chunks of about `budget` pixels: whole 16-pixel panels, whole rows in place,
    /// or whole rows of pooling windows when a pool is fused (the whole map when its windows
    /// overlap).
    fn chunks(&self, g: &Geometry, budget: usize) -> Vec<Range<usize>> {
        let row = self.row_stride(g);
        let pixels = g.out_height * row;
        let unit = match self.pool {
            Some(pool) if pool.size > pool.stride => return std::iter::once(0..pixels).collect(),
            Some(pool) => pool.stride * row,
            None if self.reads_in_place(g) => row,
            None => NR,
        };
        let units = pixels.div_ceil(unit);
        let count = units.div_ceil((budget / unit).max(1));
        split_evenly(units, count).into_iter().map(|r| r.start * unit..(r.end * unit).min(pixels)).collect()
    }

    /// Runs one image through the packed or in-place GEMM: `input` is CHW, `output` is
    /// `filters × output pixels`.
    fn run_image(&self, input: &[f32], g: &Geometry, output: &mut [f32], threads: usize) {
        let tasks = self.tasks(g, threads);
        let (mut padded, spare) = PADDED.with_borrow_mut(std::mem::take);
        let patches = if self.reads_in_place(g) {
            // One padded row and 32 floats of slack: the last output row's panel reads up to
            // `k + 30` floats past the planes (see `multiply`'s check).
            pad_input(input, g, (g.padded_height(), g.padded_width()), g.padded_width() + 32, &mut padded, threads);
            Patches::InPlace { padded: &padded, offsets: in_place_offsets(g) }
        } else {
            Patches::Packed(input)
        };
        let out = SharedOutput(output.as_mut_ptr());
        let run = |task: &Task| {
            BUFFERS.with_borrow_mut(|(packed, block)| {
                self.multiply(&patches, g, task, packed, block);
                // SAFETY: tasks cover disjoint (filters × pixels) blocks of the output, which
                // `output` holds in full (`cpu_fwd` sizes it from the same geometry).
                vectorised(
                    #[inline(always)]
                    || unsafe { self.write_out(block, g, task, out) },
                );
            });
        };
        for_each_task(&tasks, threads, run);
        drop(patches);
        PADDED.with_borrow_mut(|slot| *slot = (padded, spare));
    }

    /// A whole batch through Winograd (`input` NCHW, `output` N × filters × output pixels): the
    /// input transform (parallel over channels), then tasks of (tile panels × filter panels)
    /// that run the n² GEMMs and the output transform. The images' tiles share the GEMMs, so
    /// each weight panel streams from memory once per batch rather than once per image.
    fn run_winograd(&self, input: &[f32], g: &Geometry, output: &mut [f32], images: usize, threads: usize) {
        let weights = self.winograd_weights(self.winograd_variant(g));
        match weights.variant() {
            Variant::F2 => self.run_winograd_with::<F2>(weights, input, g, output, images, threads),
            Variant::F4 => self.run_winograd_with::<F4>(weights, input, g, output, images, threads),
        }
    }

    fn run_winograd_with<T: Transform>(
        &self,
        weights: &WinogradWeights,
        input: &[f32],
        g: &Geometry,
        output: &mut [f32],
        images: usize,
        threads: usize,
    ) {
        let tiles = Tiles::new(g, T::M, images);
        let mut transformed = PADDED.with_borrow_mut(|(_, transformed)| std::mem::take(transformed));
        transform_input::<T>(input, g, &tiles, &mut transformed, threads);
        let out = SharedOutput(output.as_mut_ptr());
        let tasks = self.winograd_tasks(&tiles, weights);
        let run = |task: &WinogradTask| {
            BUFFERS.with_borrow_mut(|(map, block)| {
                self.winograd_multiply(weights, &transformed, &tiles, task, block);
                // SAFETY: tasks cover disjoint (filters × tiles) blocks of the output (whole
                // maps when a pool is fused), which `output` holds in full.
                vectorised(
                    #[inline(always)]
                    || unsafe { self.winograd_write_out::<T>(block, &tiles, g, task, map, out) },
                );
            });
        };
        for_each_task(&tasks, threads, run);
        PADDED.with_borrow_mut(|(_, slot)| *slot = transformed);
    }

    /// Tile-panel chunks (one for the whole map when a pool is fused) × filter-panel chunks.
    fn winograd_tasks(&self, tiles: &Tiles, weights: &WinogradWeights) -> Vec<WinogradTask> {
        let whole_map = self.pool.is_some() && !self.pools_per_tile();
        let filter_panels = if streams_from_memory(weights) { 1 } else { WINOGRAD_FILTER_PANELS };
        let per_chunk = WINOGRAD_BLOCK_FLOATS / (weights.variant().positions() * WR * filter_panels * NR);
        let tile_chunks = if whole_map { 1 } else { tiles.panels().div_ceil(per_chunk) };
        let filter_chunks = weights.filter_panels().div_ceil(filter_panels);
        let mut tasks = Vec::with_capacity(tile_chunks * filter_chunks);
        for tile_panels in split_evenly(tiles.panels(), tile_chunks) {
            for filters in split_evenly(weights.filter_panels(), filter_chunks) {
                tasks.push(WinogradTask { tile_panels: tile_panels.clone(), filter_panels: filters });
            }
        }
        tasks
    }

    /// The task's n² product blocks: block `position` holds `tiles × filters` (rows of
    /// `filter_panels·16` floats), summed over all input channels.
    fn winograd_multiply(
        &self,
        weights: &WinogradWeights,
        transformed: &[f32],
        tiles: &Tiles,
        task: &WinogradTask,
        block: &mut Vec<f32>,
    ) {
        let ldc = task.filter_panels.len() * NR;
        let per_position = task.tile_panels.len() * WR * ldc;
        let positions = weights.variant().positions();
        block.resize(positions * per_position, 0.0);
        let channels = self.in_channels;
        let slices = split_evenly(channels, channels.div_ceil(DEPTH_SLICE));
        let (steps, prefetch) = (positions * slices.len(), streams_from_memory(weights));
        // Step `step`: a position and a depth slice of it.
        let at = |step: usize| (step / slices.len(), slices[step % slices.len()].clone());
        for step in 0..steps {
            let (position, slice) = at(step);
            let kc = slice.len();
            // The next step's weights, a part per tile panel while this step computes.
            let next = (prefetch && step + 1 < steps).then(|| at(step + 1));
            for (row, tile_panel) in task.tile_panels.clone().enumerate() {
                if let Some((position, slice)) = &next {
                    for panel in task.filter_panels.clone() {
                        prefetch_part(weights.panel(*position, panel, slice.clone()), row, task.tile_panels.len());
                    }
                }
                // A short last panel (where a batch's tiles are not a multiple of 7) runs the
                // kernel for its real rows only.
                let rows = WR.min(tiles.count() - tile_panel * WR);
                let tile = self.winograd_tiles[rows - 1];
                let start = ((position * tiles.panels() + tile_panel) * channels + slice.start) * WR;
                let inputs = &transformed[start..start + kc * WR];
                for (column, filter_panel) in task.filter_panels.clone().enumerate() {
                    let filters = weights.panel(position, filter_panel, slice.clone());
                    let c = &mut block[position * per_position + row * WR * ldc + column * NR..];
                    // SAFETY: `inputs` holds kc × 7 floats (read `rows` per k, 7 apart),
                    // `filters` kc × 16 read at the packed offsets 16·k (k < kc ≤
                    // DEPTH_SLICE); `c` starts at row `row·7`, column `column·16` of a
                    // `panels·7 × ldc` block.
                    unsafe {
                        let offsets = packed_offsets().as_ptr();
                        tile(kc, inputs.as_ptr(), WR, offsets, filters.as_ptr(), c.as_mut_ptr(), ldc, slice.start > 0);
                    }
                }
            }
        }
    }

    /// The output transform, bias, activation and fused pool of one task.
    ///
    /// # Safety
    /// `out` must point to a live `filters × output pixels` buffer in which no other thread
    /// touches this task's filters × tiles (the whole map, with a pool) meanwhile.
    #[inline(always)]
    unsafe fn winograd_write_out<T: Transform>(
        &self,
        block: &[f32],
        tiles: &Tiles,
        g: &Geometry,
        task: &WinogradTask,
        map: &mut Vec<f32>,
        out: SharedOutput,
    ) {
        let m = T::M;
        let ldc = task.filter_panels.len() * NR;
        let per_position = task.tile_panels.len() * WR * ldc;
        let first_filter = task.filter_panels.start * NR;
        let filters = first_filter..(task.filter_panels.end * NR).min(self.filters);
        let first_tile = task.tile_panels.start * WR;
        let tile_range = first_tile..(task.tile_panels.end * WR).min(tiles.count());
        let (height, width) = (g.out_height, g.out_width);
        let plane = height * width;
        // With any other pool the task holds whole maps: raw sums go to `map`, pooled below.
        let per_tile = self.pools_per_tile();
        let pooled = self.pool.is_some() && !per_tile;
        if pooled {
            map.resize(tiles.images * filters.len() * plane, 0.0);
        }
        let (pooled_height, pooled_width) = self.output_side(g);
        let pooled_plane = pooled_height * pooled_width;
        // Where each image's output starts in `out`.
        let per_image_out = self.filters * pooled_plane;
        let count = filters.len();
        let (bias, leaky) = (&self.bias[filters.clone()], self.leaky);
        // Per task: m² × count outputs of one tile, and the transform's scratch.
        let (mut transformed, mut work) = (vec![0.0f32; m * m * count], Vec::new());
        for tile in tile_range {
            let (image, ty, tx) = tiles.locate(tile);
            let image_out = image * per_image_out;
            let row = (tile - first_tile) * ldc;
            winograd::transform_output::<T>(&block[row..], per_position, count, &mut transformed, &mut work);
            let outputs: [&[f32]; 16] =
                std::array::from_fn(|i| if i < m * m { &transformed[i * count..][..count] } else { &[][..] });
            let valid = |i: usize| m * ty + i / m < height && m * tx + i % m < width;
            if per_tile {
                // Each 2×2 block of the tile is one pooled output; edge tiles keep their valid
                // outputs (darknet pools a partial window over what it covers).
                for (py, px) in (0..m * m / 4).map(|b| (b / (m / 2), b % (m / 2))) {
                    let (oy, ox) = ((m / 2) * ty + py, (m / 2) * tx + px);
                    if oy >= pooled_height || ox >= pooled_width {
                        continue;
                    }
                    let window = [0, 1, m, m + 1].map(|d| 2 * py * m + 2 * px + d);
                    let pixel = oy * pooled_width + ox;
                    let [a, b, c, d] = window.map(|i| outputs[i]);
                    let full = window.iter().all(|&i| valid(i));
                    let first = image_out + first_filter * pooled_plane + pixel;
                    for (j, &bias) in bias.iter().enumerate() {
                        let max = if full {
                            a[j].max(b[j]).max(c[j].max(d[j]))
                        } else {
                            window
                                .iter()
                                .filter(|&&i| valid(i))
                                .map(|&i| outputs[i][j])
                                .fold(f32::NEG_INFINITY, f32::max)
                        };
                        // SAFETY: pooled pixel `pixel` of this filter's plane lies in this
                        // task's tile (pooled windows do not overlap) and filter only.
                        unsafe { out.write(first + j * pooled_plane, activate(max + bias, leaky)) };
                    }
                }
                continue;
            }
            for (i, values) in outputs.iter().enumerate() {
                if !valid(i) {
                    continue;
                }
                let pixel = (m * ty + i / m) * width + m * tx + i % m;
                if pooled {
                    for (j, &value) in values.iter().enumerate() {
                        map[(image * count + j) * plane + pixel] = value;
                    }
                    continue;
                }
                // One float per filter plane. `bias` and `leaky` are locals: read through
                // `self` inside the loop, they were reloaded after every store (the raw output
                // might alias them). With the fixed-size panel slots of the input transform,
                // 38.9 → 37.6 ms per forward (bus.jpg, one thread, −0.1 to −0.3 ms on every
                // Winograd layer).
                let first = image_out + first_filter * plane + pixel;
                for (j, (&value, &bias)) in values.iter().zip(bias).enumerate() {
                    // SAFETY: this pixel of this filter's plane belongs to this task's tile
                    // and filter, which no other task has.
                    unsafe { out.write(first + j * plane, activate(value + bias, leaky)) };
                }
            }
        }
        let Some(pool) = self.pool.filter(|_| pooled) else { return };
        for image in 0..tiles.images {
            for filter in filters.clone() {
                let sums = &map[(image * count + filter - first_filter) * plane..][..plane];
                let rows = Rows { sums, first_row: 0, height, width, stride: width };
                let bias = bias[filter - first_filter];
                let start = image * per_image_out + filter * pooled_plane;
                // SAFETY: this filter's whole pooled plane, which only this task writes.
                let dst = unsafe { out.slice(start, pooled_plane) };
                rows.pool_into(pool, 0..pooled_height, dst, |m| activate(m + bias, leaky));
            }
        }
    }

    /// The task's raw sums into `block`: one row of `ldc = panels·16` floats per filter.
    fn multiply(&self, patches: &Patches, g: &Geometry, task: &Task, packed: &mut Vec<f32>, block: &mut Vec<f32>) {
        let pixel_panels = task.pixels.len().div_ceil(NR);
        let ldc = pixel_panels * NR;
        block.resize(task.panels.len() * MR * ldc, 0.0);
        let depth = g.depth();
        for (index, slice) in split_evenly(depth, depth.div_ceil(DEPTH_SLICE)).into_iter().enumerate() {
            let kc = slice.len();
            // Panel `column`'s patches start at `base + first + column · step`.
            let (base, offsets, first, step): (&[f32], &[usize], usize, usize) = match patches {
                Patches::Packed(input) => {
                    packed.resize(pixel_panels * kc * NR, 0.0);
                    pack_patches(input, g, task.pixels.clone(), slice.clone(), packed);
                    (packed, &packed_offsets()[..kc], 0, kc * NR)
                }
                Patches::InPlace { padded, offsets } => (padded, &offsets[slice.clone()], task.pixels.start, NR),
            };
            let furthest = first + (pixel_panels - 1) * step + offsets.iter().max().copied().unwrap_or(0) + NR;
            assert!(furthest <= base.len(), "patch reads must stay inside their buffer");
            for (local, panel) in task.panels.clone().enumerate() {
                let weights = self.weights.slice(panel, slice.clone());
                let rows = self.weights.rows(panel);
                let tile = self.tiles[rows - 1];
                for column in 0..pixel_panels {
                    let c = &mut block[local * MR * ldc + column * NR..];
                    // SAFETY: `weights` holds kc × rows floats and `offsets` kc entries; every
                    // read `base + first + column·step + offsets[k] + j` (j < 16) is below
                    // `furthest ≤ base.len()`, checked above; `c` starts at row `local·6`,
                    // column `column·16` of a block with `panels·6` rows of `ldc` floats.
                    unsafe {
                        let pixels = base.as_ptr().add(first + column * step);
                        tile(kc, weights.as_ptr(), rows, offsets.as_ptr(), pixels, c.as_mut_ptr(), ldc, index > 0);
                    }
                }
            }
        }
    }

    /// Bias, activation and the fused pool from the task's `block` into the output.
    ///
    /// # Safety
    /// `out` must point to a live `filters × output pixels` buffer in which no other thread
    /// touches this task's filters × pixels (pooled rows, with a pool) meanwhile.
    #[inline(always)]
    unsafe fn write_out(&self, block: &[f32], g: &Geometry, task: &Task, out: SharedOutput) {
        let ldc = task.pixels.len().div_ceil(NR) * NR;
        let first = task.panels.start * MR;
        let filters = first..(task.panels.end * MR).min(self.filters);
        let (out_height, out_width) = self.output_side(g);
        let stride = self.row_stride(g);
        let rows = task.pixels.start / stride..task.pixels.end.div_ceil(stride);
        for filter in filters {
            let sums = &block[(filter - first) * ldc..][..task.pixels.len()];
            let bias = self.bias[filter];
            let finish = |sum: f32| activate(sum + bias, self.leaky);
            let plane = filter * out_height * out_width;
            let map = Rows { sums, first_row: rows.start, height: g.out_height, width: g.out_width, stride };
            match self.pool {
                None if stride == g.out_width => {
                    // SAFETY: the task's pixels of this filter's plane, which only it writes.
                    let dst = unsafe { out.slice(plane + task.pixels.start, task.pixels.len()) };
                    dst.iter_mut().zip(sums).for_each(|(d, &s)| *d = finish(s));
                }
                None => {
                    // SAFETY: the task's whole rows of this filter's plane, which only it writes.
                    let dst = unsafe { out.slice(plane + rows.start * out_width, rows.len() * out_width) };
                    for (y, dst_row) in rows.clone().zip(dst.chunks_exact_mut(out_width)) {
                        dst_row.iter_mut().zip(map.row(y)).for_each(|(d, &s)| *d = finish(s));
                    }
                }
                Some(pool) => {
                    let pooled = rows.start / pool.stride..rows.end.div_ceil(pool.stride).min(out_height);
                    // SAFETY: the pooled rows whose windows lie in the task's rows; chunks
                    // start at multiples of the stride and windows do not overlap (or the
                    // task holds the whole map), so no other task writes them.
                    let dst = unsafe { out.slice(plane + pooled.start * out_width, pooled.len() * out_width) };
                    map.pool_into(pool, pooled, dst, finish);
                }
            }
        }
    }
}

/// Runs `f` from a copy compiled for AVX2 + FMA when the CPU has them. The crate targets
/// baseline x86-64 (SSE2), so the transforms, write-outs and pools would otherwise run 4 floats
/// per instruction; `f` and what it calls must be `#[inline(always)]` to be compiled into the
/// copy. Only instruction selection changes (Rust does not contract `a * b + c` into an FMA), so
/// the results are bit-identical.
#[inline(always)]
fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { avx2(f) };
    }
    f()
}

/// Asks for part `part` of `parts` of `data` to be brought into L2: a hint, which never
/// faults and changes no result.
#[inline(always)]
fn prefetch_part(data: &[f32], part: usize, parts: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let lines = data.len().div_ceil(16);
        for line in lines * part / parts..lines * (part + 1) / parts {
            let address = data[line * 16..].as_ptr().cast();
            // SAFETY: SSE is part of x86-64; a prefetch reads nothing into the program and
            // never faults, and the address lies inside `data` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(address) };
        }
    }
}

/// Runs `run` on every task: on rayon's pool when there are threads to share, inline otherwise,
/// so a 1-thread forward pays no fork-join.
fn for_each_task<T: Sync>(tasks: &[T], threads: usize, run: impl Fn(&T) + Sync + Send) {
    if threads > 1 && tasks.len() > 1 {
        tasks.par_iter().for_each(run);
    } else {
        tasks.iter().for_each(run);
    }
}

/// `16·k` for every depth row of a slice: where packed panels keep row `k`.
fn packed_offsets() -> &'static [usize] {
    static OFFSETS: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
    OFFSETS.get_or_init(|| (0..DEPTH_SLICE).map(|k| k * NR).collect())
}

/// Depth row `k = (c·size + ky)·size + kx` of the padded input, relative to an output pixel's
/// block-space index `oy·(w + 2p) + ox`: `c·plane + ky·(w + 2p) + kx`.
fn in_place_offsets(g: &Geometry) -> Vec<usize> {
    let (row, plane) = (g.padded_width(), g.padded_width() * g.padded_height());
    let taps = g.size * g.size;
    (0..g.depth()).map(|k| (k / taps) * plane + (k % taps / g.size) * row + k % g.size).collect()
}

/// Copies CHW `input` into `padded` as `rows × columns` planes with the input at
/// `(padding, padding)` and zeros around it, plus `slack` zeros after the last plane.
fn pad_input(
    input: &[f32],
    g: &Geometry,
    (rows, columns): (usize, usize),
    slack: usize,
    padded: &mut Vec<f32>,
    threads: usize,
) {
    let (plane, p) = (rows * columns, g.padding);
    padded.resize(g.channels * plane + slack, 0.0);
    let (planes, tail) = padded.split_at_mut(g.channels * plane);
    tail.fill(0.0);
    let fill = |(source, target): (&[f32], &mut [f32])| {
        target[..p * columns].fill(0.0);
        let (body, bottom) = target[p * columns..].split_at_mut(g.height * columns);
        for (src, dst) in source.chunks_exact(g.width).zip(body.chunks_exact_mut(columns)) {
            dst[..p].fill(0.0);
            dst[p..p + g.width].copy_from_slice(src);
            dst[p + g.width..].fill(0.0);
        }
        bottom.fill(0.0);
    };
    let per_channel = g.height * g.width;
    if threads > 1 {
        input.par_chunks_exact(per_channel).zip(planes.par_chunks_exact_mut(plane)).for_each(fill);
    } else {
        input.chunks_exact(per_channel).zip(planes.chunks_exact_mut(plane)).for_each(fill);
    }
}

/// The Winograd-domain input: `V[position][tile panel][channel][lane]`, the micro-kernels'
/// packed left-hand side (7 tiles per panel, k-major over channels), from the batch's NCHW
/// `input`. Tasks of one image × 8 channels run in parallel: each interleaves its channels
/// ([`winograd::interleave_block`]), transforms them 8 at a time, gathers a panel's 7 tiles and
/// then writes each position's 8 channels × 7 lanes as one contiguous run.
///
/// Writing each tile's values straight to its slots instead cost as much as the transform
/// itself: a tile's n² positions lie `panels · channels · 24` bytes apart, a multiple of 4 KiB
/// on conv12 (27 × 4096), so its 36–108 scattered stores fought over a few L1 sets.
fn transform_input<T: Transform>(
    input: &[f32],
    g: &Geometry,
    tiles: &Tiles,
    transformed: &mut Vec<f32>,
    threads: usize,
) {
    transformed.resize(T::N * T::N * tiles.panels() * g.channels * WR, 0.0);
    let target = SharedOutput(transformed.as_mut_ptr());
    let run = |scratch: &mut Scratch, (image, first): (usize, usize)| {
        // SAFETY: `target` is `transformed`, sized for `tiles` and `g` just above; blocks are
        // distinct (image, channels) pairs, so no two tasks write the same slots.
        vectorised(
            #[inline(always)]
            || unsafe { transform_channel_block::<T>(input, g, tiles, (image, first), target, scratch) },
        )
    };
    let blocks: Vec<(usize, usize)> = (0..tiles.images)
        .flat_map(|image| (0..g.channels).step_by(winograd::LANES).map(move |first| (image, first)))
        .collect();
    if threads > 1 {
        blocks.into_par_iter().for_each_init(Default::default, run);
    } else {
        let mut scratch = Default::default();
        blocks.into_iter().for_each(|block| run(&mut scratch, block));
    }
}

/// A thread's interleaved block, transform scratch and panel buffer, reused across blocks.
type Scratch = (Vec<f32>, Vec<f32>, Vec<f32>);

/// [`transform_input`] for one image and up to 8 channels from `first`: interleave, transform,
/// and write the tiles a 7-tile panel at a time.
///
/// # Safety
/// `target` must point to the live Winograd-domain buffer for `tiles` and `g.channels`, in which
/// no other thread writes this image's tiles of these channels meanwhile.
#[inline(always)]
unsafe fn transform_channel_block<T: Transform>(
    input: &[f32],
    g: &Geometry,
    tiles: &Tiles,
    (image, first): (usize, usize),
    target: SharedOutput,
    (block, work, panel): &mut Scratch,
) {
    const LANES: usize = winograd::LANES;
    let (positions, channels) = (T::N * T::N, g.channels);
    let lanes = LANES.min(channels - first);
    let per_channel = g.height * g.width;
    let planes: Vec<&[f32]> =
        (first..first + lanes).map(|c| &input[(image * channels + c) * per_channel..][..per_channel]).collect();
    winograd::interleave_block(&planes, (g.height, g.width), g.padding, tiles, block);
    // `panel[(position · 8 + c) · 7 + lane]`: one panel's values, laid out as its slots.
    panel.resize(positions * LANES * WR, 0.0);
    let mine = image * tiles.per_image()..(image + 1) * tiles.per_image();
    winograd::transform_input_block::<T>(
        block,
        tiles,
        work,
        #[inline(always)]
        |local: usize, values: &[f32]| {
            let tile = mine.start + local;
            let lane = tile % WR;
            // A fixed-size view per position, so that the 8 stores need no bounds checks
            // (`lane < 7`) and unroll.
            for (position, values) in values.chunks_exact(LANES).enumerate() {
                let slots: &mut [f32; LANES * WR] = (&mut panel[position * LANES * WR..][..LANES * WR])
                    .try_into()
                    .expect("a position's slots are 8 × 7 floats");
                for (c, &value) in values[..lanes].iter().enumerate() {
                    slots[c * WR + lane] = value;
                }
            }
            if lane + 1 == WR || tile + 1 == mine.end {
                // The panel's lanes that hold this image's tiles: all 7 but where a panel straddles
                // two images.
                let held = (tile - lane).max(mine.start) % WR..lane + 1;
                let slots = |position: usize| ((position * tiles.panels() + tile / WR) * channels + first) * WR;
                // SAFETY: as the caller guarantees, for these channels' slots of this panel.
                unsafe { write_panel(panel, positions, lanes * WR, held, slots, target) };
            }
        },
    );
}

/// Writes a gathered panel: for each position, `len` floats (the block's channels × 7 lanes)
/// to `slots(position)`, only the lanes in `held` unless the panel is all this image's.
///
/// # Safety
/// Every slot run must lie in the live buffer, and no other thread may write the `held` lanes
/// (or, for a full panel, any of them) meanwhile.
#[inline(always)]
unsafe fn write_panel(
    panel: &[f32],
    positions: usize,
    len: usize,
    held: Range<usize>,
    slots: impl Fn(usize) -> usize,
    target: SharedOutput,
) {
    let full = held == (0..WR);
    for position in 0..positions {
        let values = &panel[position * winograd::LANES * WR..][..len];
        if full {
            // SAFETY: as the caller guarantees; a full panel's slots are all this task's.
            unsafe { target.slice(slots(position), len) }.copy_from_slice(values);
            continue;
        }
        for (offset, &value) in values.iter().enumerate().filter(|(i, _)| held.contains(&(i % WR))) {
            // SAFETY: as the caller guarantees; the other lanes belong to another image's task.
            unsafe { target.write(slots(position) + offset, value) };
        }
    }
}

/// A task's raw sums for whole rows `first_row..` of a `height × width` map, `stride` floats
/// apart in the block.
struct Rows<'a> {
    sums: &'a [f32],
    first_row: usize,
    height: usize,
    width: usize,
    stride: usize,
}

impl Rows<'_> {
    #[inline(always)]
    fn row(&self, y: usize) -> &[f32] {
        &self.sums[(y - self.first_row) * self.stride..][..self.width]
    }

    /// Pools output rows `pooled` into `dst` (their rows, `pool.output_len(width)` wide). The
    /// activation is applied after the max: it is monotonic, so the result is the same.
    #[inline(always)]
    fn pool_into(&self, pool: MaxPool, pooled: Range<usize>, dst: &mut [f32], finish: impl Fn(f32) -> f32) {
        let out_width = pool.output_len(self.width);
        for (py, out_row) in pooled.zip(dst.chunks_exact_mut(out_width)) {
            let window = py * pool.stride..(py * pool.stride + pool.size).min(self.height);
            if pool.size == 2 && pool.stride == 2 && window.len() == 2 && self.width.is_multiple_of(2) {
                // Five of yolov3-tiny's six pools: pairs of rows, pairs of columns.
                let (top, bottom) = (self.row(window.start), self.row(window.start + 1));
                for ((d, t), b) in out_row.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
                    *d = finish(t[0].max(t[1]).max(b[0].max(b[1])));
                }
                continue;
            }
            if pool.size == 2 && pool.stride == 1 {
                // conv10's pool: the max of each pixel, its right, lower and lower-right
                // neighbours (those inside the map): rows first, then columns.
                let top = self.row(window.start);
                let rows: Vec<f32> = match window.len() {
                    2 => top.iter().zip(self.row(window.start + 1)).map(|(a, b)| a.max(*b)).collect(),
                    _ => top.to_vec(),
                };
                let pairs = rows.windows(2).map(|pair| pair[0].max(pair[1]));
                for (d, max) in out_row.iter_mut().zip(pairs.chain(rows.last().copied())) {
                    *d = finish(max);
                }
                continue;
            }
            for (px, d) in out_row.iter_mut().enumerate() {
                let columns = px * pool.stride..(px * pool.stride + pool.size).min(self.width);
                let max = window
                    .clone()
                    .flat_map(|y| self.row(y)[columns.clone()].iter().copied())
                    .fold(f32::NEG_INFINITY, f32::max);
                *d = finish(max);
            }
        }
    }
}

/// Darknet's leaky ReLU (slope 0.1) when `leaky`, identity otherwise.
#[inline]
fn activate(x: f32, leaky: bool) -> f32 {
    if leaky && x < 0.0 {
        0.1 * x
    } else {
        x
    }
}

/// `0..n` in `parts` contiguous ranges whose lengths differ by at most one.
fn split_evenly(n: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    (0..parts).map(|i| i * n / parts..(i + 1) * n / parts).collect()
}

/// A raw output pointer shared by tasks that write disjoint regions.
#[derive(Clone, Copy)]
struct SharedOutput(*mut f32);

impl SharedOutput {
    /// `len` floats from `offset`.
    ///
    /// # Safety
    /// They must lie in the live buffer and no other thread may access them meanwhile.
    unsafe fn slice<'a>(self, offset: usize, len: usize) -> &'a mut [f32] {
        // SAFETY: as the caller guarantees.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(offset), len) }
    }

    /// Writes one float at `offset` (neighbouring floats may belong to other threads).
    ///
    /// # Safety
    /// `offset` must lie in the live buffer and no other thread may access it meanwhile.
    unsafe fn write(self, offset: usize, value: f32) {
        // SAFETY: as the caller guarantees.
        unsafe { self.0.add(offset).write(value) }
    }
}
// SAFETY: the pointer is only dereferenced through `slice`, for disjoint regions of a buffer
// that outlives the parallel loop in `run_image`.
unsafe impl Send for SharedOutput {}
// SAFETY: as above; no two tasks touch the same element.
unsafe impl Sync for SharedOutput {}

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
        let geometry = self.geometry(height, width)?;
        let (out_height, out_width) = self.output_side(&geometry);
        let per_image_in = channels * height * width;
        let per_image_out = self.filters * out_height * out_width;
        let mut output = vec![0.0f32; batch * per_image_out];
        let threads = rayon::current_num_threads();
        if self.uses_winograd(&geometry) {
            // The batch's tiles share each GEMM. A tile's sums do not depend on which panel
            // it lands in, so a batch's results are bit-identical to single runs.
            self.run_winograd(&data[start..end], &geometry, &mut output, batch, threads);
        } else {
            // Images one after another, each using every thread: their GEMMs are wide enough.
            let images = data[start..end].chunks_exact(per_image_in);
            for (image, out) in images.zip(output.chunks_exact_mut(per_image_out)) {
                self.run_image(image, &geometry, out, threads);
            }
        }
        Ok((CpuStorage::F32(output), Shape::from((batch, self.filters, out_height, out_width))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    /// A random layer, with its OIHW weights and bias kept for the oracle.
    struct Case {
        conv: FusedConv,
        weight: Tensor,
        bias: Tensor,
    }

    fn random_case(c_in: usize, filters: usize, size: usize, stride: usize, padding: usize, leaky: bool) -> Case {
        let dev = Device::Cpu;
        // Unit-variance outputs whatever the depth, as batch norm gives the real layers: the 1e-4
        // bar then means the same thing for depth 27 and depth 2700.
        let std = 1.0 / ((c_in * size * size) as f32).sqrt();
        let weight = Tensor::randn(0f32, std, (filters, c_in, size, size), &dev).unwrap();
        let bias = Tensor::randn(0f32, 0.5, filters, &dev).unwrap();
        let flat = weight.flatten_all().unwrap().to_vec1().unwrap();
        let conv = FusedConv::new(flat, bias.to_vec1().unwrap(), c_in, size, stride, padding, leaky);
        Case { conv, weight, bias: bias.reshape((1, filters, 1, 1)).unwrap() }
    }

    /// The same layer through stock candle: conv2d, bias, leaky ReLU, then the (separately
    /// tested) darknet max-pool op.
    fn stock(case: &Case, x: &Tensor) -> Tensor {
        let conv = &case.conv;
        let y = x.conv2d(&case.weight, conv.padding, conv.stride, 1, 1).unwrap().broadcast_add(&case.bias).unwrap();
        let y = if conv.leaky { candle_nn::ops::leaky_relu(&y, 0.1).unwrap() } else { y };
        match conv.pool {
            Some(pool) => y.apply_op1_no_bwd(&pool).unwrap(),
            None => y,
        }
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// (c_in, filters, k, stride, pad, h, w, leaky).
    type LayerShape = (usize, usize, usize, usize, usize, usize, usize, bool);

    /// The shapes yolov3-tiny uses plus odd ones.
    /// Padded widths ≥ 48 read in place, narrower ones and strided or 1×1 layers pack.
    const SHAPES: [LayerShape; 12] = [
        (3, 16, 3, 1, 1, 37, 29, true),
        (3, 16, 3, 1, 1, 97, 41, true),
        (32, 64, 3, 1, 1, 64, 64, true),
        (5, 7, 3, 2, 1, 70, 33, false),
        (16, 70, 3, 1, 1, 20, 300, true),
        (64, 33, 1, 1, 0, 13, 13, false),
        (5, 7, 3, 2, 1, 15, 16, true),
        (4, 3, 5, 1, 2, 9, 11, false),
        (8, 129, 3, 1, 0, 6, 7, true),
        (300, 20, 3, 1, 1, 13, 13, true),
        (4, 3, 5, 1, 2, 9, 60, false),
        (3, 5, 3, 1, 0, 10, 50, true),
    ];

    fn assert_matches_stock(case: &Case, shape: impl std::fmt::Debug, h: usize, w: usize) {
        for batch in [1, 4] {
            let x = Tensor::randn(0f32, 1.0, (batch, case.conv.in_channels, h, w), &Device::Cpu).unwrap();
            let fast = x.apply_op1_no_bwd(&case.conv).unwrap();
            let oracle = stock(case, &x);
            assert_eq!(fast.dims(), oracle.dims(), "{shape:?}");
            let diff = max_abs_diff(&fast, &oracle);
            let (conv, variant) = (case.conv.describe(), case.conv.forced_variant);
            assert!(diff < 1e-4, "{shape:?} {conv} Winograd {variant:?} batch {batch}: max |Δ| = {diff}");
        }
    }

    /// The case as built (Winograd variant by map size), then with each variant forced.
    fn each_variant(case: Case) -> Vec<Case> {
        let forced = [None, Some(Variant::F2), Some(Variant::F4)];
        let with = |forced_variant| FusedConv { forced_variant, ..case.conv.clone() };
        forced.map(|v| Case { conv: with(v), weight: case.weight.clone(), bias: case.bias.clone() }).into()
    }

    #[test]
    fn matches_stock_candle_on_random_inputs() {
        for shape @ (c_in, filters, k, s, p, h, w, leaky) in SHAPES {
            for case in each_variant(random_case(c_in, filters, k, s, p, leaky)) {
                assert_matches_stock(&case, shape, h, w);
            }
        }
    }

    #[test]
    fn portable_kernels_match_stock_candle_too() {
        for shape @ (c_in, filters, k, s, p, h, w, leaky) in SHAPES {
            let mut case = random_case(c_in, filters, k, s, p, leaky);
            case.conv.tiles = micro::portable_tiles();
            case.conv.winograd_tiles = micro::portable_winograd_tiles();
            for case in each_variant(case) {
                assert_matches_stock(&case, shape, h, w);
            }
        }
    }

    #[test]
    fn packed_path_of_winograd_shapes_matches_stock_candle_too() {
        for shape @ (c_in, filters, k, s, p, h, w, leaky) in SHAPES {
            let mut case = random_case(c_in, filters, k, s, p, leaky);
            case.conv.allow_winograd = false;
            assert_matches_stock(&case, shape, h, w);
        }
    }

    #[test]
    fn fused_pools_match_conv_then_pool() {
        for (shape, pool) in [
            ((3, 16, 3, 1, 1, 40, 52), MaxPool { size: 2, stride: 2 }),
            ((16, 32, 3, 1, 1, 26, 26), MaxPool { size: 2, stride: 2 }),
            ((8, 12, 3, 1, 1, 13, 13), MaxPool { size: 2, stride: 1 }),
            ((4, 5, 3, 1, 1, 11, 9), MaxPool { size: 2, stride: 2 }),
            ((4, 5, 3, 1, 1, 12, 7), MaxPool { size: 3, stride: 2 }),
            ((300, 8, 3, 1, 1, 30, 30), MaxPool { size: 2, stride: 2 }),
        ] {
            let (c_in, filters, k, s, p, h, w) = shape;
            let mut case = random_case(c_in, filters, k, s, p, true);
            case.conv = case.conv.with_pool(pool);
            for case in each_variant(case) {
                assert_matches_stock(&case, (shape, pool), h, w);
            }
        }
    }

    /// Batched Winograd layers put several images' tiles in one GEMM (49 tiles a 26² map in
    /// F(4×4) and a 13² map in F(2×2): panels of 6 straddle images), with and without fused
    /// pools; packed and in-place layers run image by image. Either way each image's result
    /// equals its single run bit for bit, so a job's answer does not depend on its batch.
    #[test]
    fn batch_rows_equal_single_runs_exactly() {
        let cases = [
            // 6² tiles of F(4×4) on 22² and of F(2×2) on 12²: 5 panels of 7 and a tile, so
            // panels straddle images.
            (8, 24, 22, None),
            (8, 24, 12, None),
            (8, 24, 26, None),
            (70, 20, 13, Some(MaxPool { size: 2, stride: 1 })),
            (70, 20, 26, Some(MaxPool { size: 2, stride: 2 })),
            (3, 16, 52, Some(MaxPool { size: 2, stride: 2 })),
        ];
        for (c_in, filters, side, pool) in cases {
            let mut case = random_case(c_in, filters, 3, 1, 1, true);
            if let Some(pool) = pool {
                case.conv = case.conv.with_pool(pool);
            }
            let x = Tensor::randn(0f32, 1.0, (4, c_in, side, side), &Device::Cpu).unwrap();
            let batched = x.apply_op1_no_bwd(&case.conv).unwrap();
            for i in 0..4 {
                let single = x.narrow(0, i, 1).unwrap().apply_op1_no_bwd(&case.conv).unwrap();
                let diff = max_abs_diff(&batched.narrow(0, i, 1).unwrap(), &single);
                assert_eq!(diff, 0.0, "{c_in}→{filters} on {side}² with {pool:?}, image {i}");
            }
        }
    }

    #[test]
    fn rejects_wrong_input_without_panicking() {
        let conv = random_case(3, 4, 3, 1, 0, true).conv;
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
    fn tasks_cover_every_filter_and_pixel_exactly_once() {
        // (c_in, filters, h=w, pool): yolov3-tiny's conv0, conv6, conv10, conv12 and conv21.
        for (c_in, filters, side, pool) in [
            (3, 16, 416, Some(MaxPool { size: 2, stride: 2 })),
            (64, 128, 52, Some(MaxPool { size: 2, stride: 2 })),
            (256, 512, 13, Some(MaxPool { size: 2, stride: 1 })),
            (512, 1024, 13, None),
            (384, 256, 26, None),
        ] {
            let mut conv = random_case(c_in, filters, 3, 1, 1, true).conv;
            conv.pool = pool;
            let g = conv.geometry(side, side).unwrap();
            let row = conv.row_stride(&g);
            let pixels = g.out_height * row;
            for threads in [1, 2, 3, 16] {
                let tasks = conv.tasks(&g, threads);
                let mut seen = vec![0u8; conv.weights.panels() * pixels];
                for task in &tasks {
                    for panel in task.panels.clone() {
                        task.pixels.clone().for_each(|p| seen[panel * pixels + p] += 1);
                    }
                    if let Some(pool) = pool.filter(|p| p.size <= p.stride) {
                        assert_eq!(task.pixels.start % (pool.stride * row), 0, "chunks start on a window row");
                    }
                }
                assert!(seen.iter().all(|&n| n == 1), "{} at {threads} threads", conv.describe());
                assert!(threads == 1 || tasks.len() >= threads, "every thread gets work");
            }
        }
    }
}
