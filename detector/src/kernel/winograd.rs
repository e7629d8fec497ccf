//! Winograd F(m×m, 3×3) for 3×3 stride-1 layers: F(2×2, 3×3) and F(4×4, 3×3).
//!
//! Each m×m block of outputs comes from an n×n input tile (n = m + 2): `Y = Aᵀ [U ⊙ V] A` with
//! `U = G g Gᵀ` (weights, transformed once per process) and `V = Bᵀ d B` (input). Summed over
//! channels, the n² element-wise products become n² GEMMs `[tiles × C] · [C × filters]` run by
//! the same micro-kernels. Per output and channel pair that is 16/4 = 4 multiplies for F(2×2)
//! and 36/16 = 2.25 for F(4×4), against 9 for direct convolution.
//!
//! The price of F(4×4) is rounding: its transforms have entries up to 8, where F(2×2)'s are
//! ±1 and ½. With the interpolation points 0, ±1, ½ and −2 (rather than the textbook ±2),
//! a 512-channel layer's error is 8.6× F(2×2)'s instead of 22× (1.3e-5 against 1.5e-6 on
//! outputs of magnitude ≈ 2.7, measured in f32 against f64). On the whole network the heads
//! moved from 1.4–2.2e-5 to 1.7–2.4e-5 of stock candle's (the bar is 1e-4).

use std::ops::Range;

use super::micro::{NR, WR};
use super::pack::Geometry;

/// Which transform a layer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// F(2×2, 3×3): 4×4 tiles, the most accurate.
    F2,
    /// F(4×4, 3×3): 6×6 tiles, 1.8× fewer multiplies than F(2×2).
    F4,
}

impl Variant {
    /// Elements of a transformed tile (n²): the number of GEMMs.
    pub fn positions(self) -> usize {
        match self {
            Self::F2 => F2::N * F2::N,
            Self::F4 => F4::N * F4::N,
        }
    }
}

/// One variant's transforms. `G` is a table (the weights are transformed once, in f64); `Bᵀ`
/// and `Aᵀ` are written out as code, one vectorised pass per output row, so that every
/// coefficient is a constant the compiler folds (×1 and ×−1 become additions and subtractions).
pub trait Transform {
    /// Outputs per tile side (m).
    const M: usize;
    /// Inputs per tile side: `M + 2`.
    const N: usize;
    /// `G` (N × 3), exact in f64: `U` is computed in f64 and rounded once.
    const G: [[f64; 3]; 6];

    /// `out[offsets[i]..][..len] = Σₖ Bᵀ[i][k] · d[k][..len]` for the N rows of `Bᵀ`.
    fn apply_bt(d: [&[f32]; 6], out: &mut [f32], offsets: [usize; 6], len: usize);

    /// `out[offsets[i]..][..len] = Σₖ Aᵀ[i][k] · d[k][..len]` for the M rows of `Aᵀ`.
    fn apply_at(d: [&[f32]; 6], out: &mut [f32], offsets: [usize; 4], len: usize);
}

/// `out = Σ c · source` over `out.len()` floats, 8 at a time as `[f32; 8]` steps (one AVX
/// vector each; the scalar tail only serves lengths that are not a multiple of 8, in tests).
/// A plain loop over the floats left LLVM a scalar epilogue of 1–8 iterations, so the per-tile
/// passes (8 floats) ran entirely scalar: 2.7 ns per transformed value, 4.6 ms per forward.
#[inline(always)]
fn combine<const K: usize>(out: &mut [f32], terms: [(f32, &[f32]); K]) {
    let len = out.len();
    let (vectors, tail) = out.as_chunks_mut::<LANES>();
    let sources = terms.map(|(c, source)| (c, source[..len].as_chunks::<LANES>().0));
    for (x, o) in vectors.iter_mut().enumerate() {
        // −0 + y = y exactly, so the first addition folds away.
        let mut sum = [-0.0f32; LANES];
        for (c, source) in &sources {
            for (s, v) in sum.iter_mut().zip(&source[x]) {
                *s += c * v;
            }
        }
        *o = sum;
    }
    let done = len - tail.len();
    for (x, o) in tail.iter_mut().enumerate() {
        *o = terms.iter().fold(-0.0, |sum, (c, source)| sum + c * source[done + x]);
    }
}

/// F(2×2, 3×3) on the points 0, ±1 (Lavin & Gray's matrices).
pub struct F2;

impl Transform for F2 {
    const M: usize = 2;
    const N: usize = 4;
    const G: [[f64; 3]; 6] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0], [0.0; 3], [0.0; 3]];

    /// `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`.
    #[inline(always)]
    fn apply_bt([d0, d1, d2, d3, ..]: [&[f32]; 6], out: &mut [f32], [o0, o1, o2, o3, ..]: [usize; 6], len: usize) {
        combine(&mut out[o0..][..len], [(1.0, d0), (-1.0, d2)]);
        combine(&mut out[o1..][..len], [(1.0, d1), (1.0, d2)]);
        combine(&mut out[o2..][..len], [(1.0, d2), (-1.0, d1)]);
        combine(&mut out[o3..][..len], [(1.0, d1), (-1.0, d3)]);
    }

    /// `Aᵀ = [1 1 1 0; 0 1 −1 −1]`.
    #[inline(always)]
    fn apply_at([d0, d1, d2, d3, ..]: [&[f32]; 6], out: &mut [f32], [o0, o1, ..]: [usize; 4], len: usize) {
        combine(&mut out[o0..][..len], [(1.0, d0), (1.0, d1), (1.0, d2)]);
        combine(&mut out[o1..][..len], [(1.0, d1), (-1.0, d2), (-1.0, d3)]);
    }
}

/// F(4×4, 3×3) on the points 0, 1, −1, ½, −2 and ∞ (Toom–Cook, the 1/∏(pᵢ − pⱼ) factors in G).
/// Every `Bᵀ` and `Aᵀ` entry is a multiple of 1/8, so those products are exact (the sums still
/// round).
pub struct F4;

impl Transform for F4 {
    const M: usize = 4;
    const N: usize = 6;
    const G: [[f64; 3]; 6] = [
        [1.0, 0.0, 0.0],
        [1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
        [-1.0 / 3.0, 1.0 / 3.0, -1.0 / 3.0],
        [-16.0 / 15.0, -8.0 / 15.0, -4.0 / 15.0],
        [1.0 / 15.0, -2.0 / 15.0, 4.0 / 15.0],
        [0.0, 0.0, 1.0],
    ];

    /// `Bᵀ` rows: `[1 −1.5 −2 1.5 1 0]`, `[0 −1 .5 2.5 1 0]`, `[0 1 −2.5 .5 1 0]`,
    /// `[0 −2 −1 2 1 0]`, `[0 .5 −1 −.5 1 0]`, `[0 1 −1.5 −2 1.5 1]`.
    #[inline(always)]
    fn apply_bt(
        [d0, d1, d2, d3, d4, d5]: [&[f32]; 6],
        out: &mut [f32],
        [o0, o1, o2, o3, o4, o5]: [usize; 6],
        len: usize,
    ) {
        combine(&mut out[o0..][..len], [(1.0, d0), (-1.5, d1), (-2.0, d2), (1.5, d3), (1.0, d4)]);
        combine(&mut out[o1..][..len], [(-1.0, d1), (0.5, d2), (2.5, d3), (1.0, d4)]);
        combine(&mut out[o2..][..len], [(1.0, d1), (-2.5, d2), (0.5, d3), (1.0, d4)]);
        combine(&mut out[o3..][..len], [(-2.0, d1), (-1.0, d2), (2.0, d3), (1.0, d4)]);
        combine(&mut out[o4..][..len], [(0.5, d1), (-1.0, d2), (-0.5, d3), (1.0, d4)]);
        combine(&mut out[o5..][..len], [(1.0, d1), (-1.5, d2), (-2.0, d3), (1.5, d4), (1.0, d5)]);
    }

    /// `Aᵀ` rows: `[1 1 1 1 1 0]`, `[0 1 −1 .5 −2 0]`, `[0 1 1 .25 4 0]`, `[0 1 −1 .125 −8 1]`.
    #[inline(always)]
    fn apply_at([d0, d1, d2, d3, d4, d5]: [&[f32]; 6], out: &mut [f32], [o0, o1, o2, o3]: [usize; 4], len: usize) {
        combine(&mut out[o0..][..len], [(1.0, d0), (1.0, d1), (1.0, d2), (1.0, d3), (1.0, d4)]);
        combine(&mut out[o1..][..len], [(1.0, d1), (-1.0, d2), (0.5, d3), (-2.0, d4)]);
        combine(&mut out[o2..][..len], [(1.0, d1), (1.0, d2), (0.25, d3), (4.0, d4)]);
        combine(&mut out[o3..][..len], [(1.0, d1), (-1.0, d2), (0.125, d3), (-8.0, d4), (1.0, d5)]);
    }
}

/// Weights in the Winograd domain: for each of the n² positions, panels of 16 filters, k-major
/// over input channels — the micro-kernels' packed right-hand side.
#[derive(Debug, Clone)]
pub struct WinogradWeights {
    data: Vec<f32>,
    channels: usize,
    filter_panels: usize,
    variant: Variant,
}

impl WinogradWeights {
    /// Transforms OIHW 3×3 weights: `U = G g Gᵀ`.
    pub fn new(weight: &[f32], filters: usize, channels: usize, variant: Variant) -> Self {
        assert_eq!(weight.len(), filters * channels * 9, "weights must be filters × channels × 3 × 3");
        let filter_panels = filters.div_ceil(NR);
        let mut data = vec![0.0; variant.positions() * filter_panels * channels * NR];
        for filter in 0..filters {
            for channel in 0..channels {
                let g: &[f32; 9] = weight[(filter * channels + channel) * 9..][..9].try_into().expect("nine taps");
                let u = match variant {
                    Variant::F2 => transform_weight::<F2>(g),
                    Variant::F4 => transform_weight::<F4>(g),
                };
                for (position, &value) in u[..variant.positions()].iter().enumerate() {
                    let panel = (position * filter_panels + filter / NR) * channels + channel;
                    data[panel * NR + filter % NR] = value;
                }
            }
        }
        Self { data, channels, filter_panels, variant }
    }

    /// Filter panel `panel` at `position`, channels `depth`: `depth.len() × 16` floats.
    pub fn panel(&self, position: usize, panel: usize, depth: Range<usize>) -> &[f32] {
        let start = (position * self.filter_panels + panel) * self.channels;
        &self.data[(start + depth.start) * NR..(start + depth.end) * NR]
    }

    /// Number of 16-filter panels.
    pub fn filter_panels(&self) -> usize {
        self.filter_panels
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(self.data.as_slice())
    }

    /// The transform these weights are for.
    pub fn variant(&self) -> Variant {
        self.variant
    }
}

/// `G g Gᵀ` for one 3×3 kernel (row-major in, N × N row-major out), in f64.
fn transform_weight<T: Transform>(g: &[f32; 9]) -> [f32; 36] {
    let mut t = [[0.0f64; 3]; 6];
    for (i, row) in t.iter_mut().enumerate().take(T::N) {
        for (x, value) in row.iter_mut().enumerate() {
            *value = (0..3).map(|k| T::G[i][k] * f64::from(g[3 * k + x])).sum();
        }
    }
    let mut u = [0.0f32; 36];
    for i in 0..T::N {
        for j in 0..T::N {
            u[i * T::N + j] = (0..3).map(|k| t[i][k] * T::G[j][k]).sum::<f64>() as f32;
        }
    }
    u
}

/// The tiling of one layer's output for a batch: per image `rows × columns` tiles of m×m
/// outputs, the images' tiles one after another (tile `t` is tile `t mod per_image` of image
/// `t / per_image`), so that one GEMM row panel may hold tiles of two images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiles {
    /// Tile rows: ⌈output rows / m⌉.
    pub rows: usize,
    /// Tile columns: ⌈output columns / m⌉.
    pub columns: usize,
    /// Outputs per tile side.
    pub side: usize,
    /// Images in the batch.
    pub images: usize,
}

impl Tiles {
    /// Tiles of `side × side` outputs covering `g`'s output in each of `images` images.
    pub fn new(g: &Geometry, side: usize, images: usize) -> Self {
        Self { rows: g.out_height.div_ceil(side), columns: g.out_width.div_ceil(side), side, images }
    }

    /// Tiles of one image.
    pub fn per_image(&self) -> usize {
        self.rows * self.columns
    }

    /// All tiles of all images.
    pub fn count(&self) -> usize {
        self.per_image() * self.images
    }

    /// Image, tile row and tile column of tile `t`.
    pub fn locate(&self, t: usize) -> (usize, usize, usize) {
        let local = t % self.per_image();
        (t / self.per_image(), local / self.columns, local % self.columns)
    }

    /// Panels of [`WR`] tiles (the micro-kernels' rows).
    pub fn panels(&self) -> usize {
        self.count().div_ceil(WR)
    }

    /// Rows of the zero-extended input the tiles read: `m·rows + 2` (≥ the padded height).
    pub fn input_rows(&self) -> usize {
        self.side * self.rows + 2
    }

    /// Columns of the zero-extended input: `m·columns + 2`.
    pub fn input_columns(&self) -> usize {
        self.side * self.columns + 2
    }
}

/// Channels transformed together: one AVX vector, lane `c` holding channel `c` of a block.
pub const LANES: usize = 8;

/// The zero-extended input of one image and a block of up to [`LANES`] channels, interleaved by
/// channel (`block[(y · input_columns + x) · LANES + c]`), so that every step of the input
/// transform is a vector operation over the block's channels, whatever the map's width.
///
/// `planes` are the block's channels (each `height × width`, the layer's unpadded input) and
/// `padding` the zeros before the first row and column; lanes past the last plane stay zero.
#[inline(always)]
pub fn interleave_block(
    planes: &[&[f32]],
    (height, width): (usize, usize),
    padding: usize,
    tiles: &Tiles,
    block: &mut Vec<f32>,
) {
    debug_assert!(planes.len() <= LANES);
    let (rows, columns) = (tiles.input_rows(), tiles.input_columns());
    block.clear();
    block.resize(rows * columns * LANES, 0.0);
    for y in 0..height {
        let row = &mut block[((y + padding) * columns + padding) * LANES..][..width * LANES];
        for (c, plane) in planes.iter().enumerate() {
            let source = &plane[y * width..][..width];
            for (x, &value) in source.iter().enumerate() {
                row[x * LANES + c] = value;
            }
        }
    }
}

/// `V = Bᵀ d B` for every tile of one image and one channel block ([`interleave_block`]'s
/// layout). `emit(tile, v)` receives each tile (row-major within the image) with its n²
/// positions × [`LANES`] channels, `v[p · LANES + c]`; `work` is scratch space.
///
/// Per tile row, `Bᵀ d` runs once over the whole width (vectors of `input_columns · 8`); then
/// `(Bᵀ d) B` per tile reads its n columns of that, each one vector of 8 channels.
#[inline(always)]
pub fn transform_input_block<T: Transform>(
    block: &[f32],
    tiles: &Tiles,
    work: &mut Vec<f32>,
    mut emit: impl FnMut(usize, &[f32]),
) {
    let (m, n) = (T::M, T::N);
    debug_assert_eq!(tiles.side, m);
    let row_len = tiles.input_columns() * LANES;
    work.resize(n * row_len + n * n * LANES, 0.0);
    let (rows, tile) = work.split_at_mut(n * row_len);
    let row_offsets = std::array::from_fn(|i| i * row_len);
    for ty in 0..tiles.rows {
        let d = std::array::from_fn(|k| if k < n { &block[(m * ty + k) * row_len..][..row_len] } else { &[][..] });
        T::apply_bt(d, rows, row_offsets, row_len);
        for tx in 0..tiles.columns {
            for i in 0..n {
                let first = i * row_len + m * tx * LANES;
                let taps = std::array::from_fn(|k| if k < n { &rows[first + k * LANES..][..LANES] } else { &[][..] });
                let targets = std::array::from_fn(|j| (i * n + j) * LANES);
                T::apply_bt(taps, tile, targets, LANES);
            }
            emit(ty * tiles.columns + tx, tile);
        }
    }
}

/// `Y = Aᵀ M A` for a run of `count` filters of one tile. Position `p`'s product sums are at
/// `products[p · step..][..count]`; output `i` (row-major m×m) goes to `y[i · count..][..count]`;
/// `work` is scratch space.
/// Two steps of vectorised passes over the filters: `t = Aᵀ M` by columns of `M`, then
/// `Y = t A` by rows of `t`.
#[inline(always)]
pub fn transform_output<T: Transform>(products: &[f32], step: usize, count: usize, y: &mut [f32], work: &mut Vec<f32>) {
    let (m, n) = (T::M, T::N);
    // t[i][b] at (i · n + b) · count.
    work.resize(m * n * count, 0.0);
    for b in 0..n {
        let column = std::array::from_fn(|a| if a < n { &products[(a * n + b) * step..][..count] } else { &[][..] });
        T::apply_at(column, work, std::array::from_fn(|i| (i * n + b) * count), count);
    }
    for i in 0..m {
        let row = std::array::from_fn(|b| if b < n { &work[(i * n + b) * count..][..count] } else { &[][..] });
        T::apply_at(row, y, std::array::from_fn(|j| (i * m + j) * count), count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 3×3 correlation of an n×n tile: the m×m valid outputs.
    fn direct(d: &[f32], n: usize, g: &[f32; 9]) -> Vec<f32> {
        let m = n - 2;
        (0..m * m).map(|i| (0..9).map(|k| d[(i / m + k / 3) * n + i % m + k % 3] * g[k]).sum()).collect()
    }

    /// The input transform of `planes` (each already zero-extended to the tiling's input
    /// size): `v[c][p · count + t]` for channel `c`, position `p`, tile `t`.
    fn transform_planes<T: Transform>(planes: &[&[f32]], tiles: &Tiles) -> Vec<Vec<f32>> {
        let (n, count) = (T::N, tiles.count());
        let side = (tiles.input_rows(), tiles.input_columns());
        let mut block = Vec::new();
        interleave_block(planes, side, 0, tiles, &mut block);
        let mut v = vec![vec![0.0f32; n * n * count]; planes.len()];
        transform_input_block::<T>(&block, tiles, &mut Vec::new(), |t, values| {
            for (c, v) in v.iter_mut().enumerate() {
                (0..n * n).for_each(|p| v[p * count + t] = values[p * LANES + c]);
            }
        });
        v
    }

    fn one_tile<T: Transform>() {
        let (m, n) = (T::M, T::N);
        let g: [f32; 9] = std::array::from_fn(|i| (i as f32 * 0.37).sin());
        let d: Vec<f32> = (0..n * n).map(|i| (i as f32 * 0.71).cos()).collect();
        let u = transform_weight::<T>(&g);
        let tiles = Tiles { rows: 1, columns: 1, side: m, images: 1 };
        let v = transform_planes::<T>(&[&d], &tiles).remove(0);
        let products: Vec<f32> = (0..n * n).map(|i| u[i] * v[i]).collect();
        let mut y = vec![0.0f32; m * m];
        transform_output::<T>(&products, 1, 1, &mut y, &mut Vec::new());
        let (fast, slow) = (y, direct(&d, n, &g));
        for (a, b) in fast.iter().zip(&slow) {
            assert!((a - b).abs() < 1e-5, "{fast:?} vs {slow:?}");
        }
    }

    #[test]
    fn one_tile_equals_direct_correlation() {
        one_tile::<F2>();
        one_tile::<F4>();
    }

    /// Two tile rows and three columns with distinct values, in five channels of a block: each
    /// tile and each lane reads its own window of its own channel.
    fn tiles_read_their_own_windows<T: Transform>() {
        let (m, n) = (T::M, T::N);
        let tiles = Tiles { rows: 2, columns: 3, side: m, images: 1 };
        let (rows, columns) = (tiles.input_rows(), tiles.input_columns());
        let planes: Vec<Vec<f32>> =
            (0..5).map(|c| (0..rows * columns).map(|i| ((i * 7919 + c * 31) % 113) as f32 / 113.0).collect()).collect();
        let slices: Vec<&[f32]> = planes.iter().map(Vec::as_slice).collect();
        let v = transform_planes::<T>(&slices, &tiles);
        let one = Tiles { rows: 1, columns: 1, side: m, images: 1 };
        for (c, plane) in planes.iter().enumerate() {
            for t in 0..tiles.count() {
                let (ty, tx) = (t / tiles.columns, t % tiles.columns);
                let window: Vec<f32> = (0..n * n).map(|i| plane[(m * ty + i / n) * columns + m * tx + i % n]).collect();
                let expected = transform_planes::<T>(&[&window], &one).remove(0);
                for (p, &value) in expected.iter().enumerate() {
                    assert_eq!(v[c][p * tiles.count() + t], value, "channel {c} tile {t} position {p}");
                }
            }
        }
    }

    #[test]
    fn every_tile_transforms_its_own_window() {
        tiles_read_their_own_windows::<F2>();
        tiles_read_their_own_windows::<F4>();
    }

    /// The interleaved block puts the input at (padding, padding) with zeros around it and in
    /// the lanes past the last channel.
    #[test]
    fn interleaving_pads_with_zeros() {
        let tiles = Tiles { rows: 2, columns: 2, side: 2, images: 1 };
        let planes: Vec<Vec<f32>> = (0..3).map(|c| (1..=9).map(|v| (10 * c + v) as f32).collect()).collect();
        let slices: Vec<&[f32]> = planes.iter().map(Vec::as_slice).collect();
        let mut block = vec![f32::NAN; 3];
        interleave_block(&slices, (3, 3), 1, &tiles, &mut block);
        let columns = tiles.input_columns();
        assert_eq!(block.len(), tiles.input_rows() * columns * LANES);
        for y in 0..tiles.input_rows() {
            for x in 0..columns {
                for c in 0..LANES {
                    let inside = (1..4).contains(&y) && (1..4).contains(&x) && c < 3;
                    let expected = if inside { planes[c][(y - 1) * 3 + x - 1] } else { 0.0 };
                    assert_eq!(block[(y * columns + x) * LANES + c], expected, "({y}, {x}) lane {c}");
                }
            }
        }
    }

    #[test]
    fn weight_panels_are_k_major_by_filter() {
        // 17 filters → two panels; filter 16 lands in lane 0 of panel 1.
        let (filters, channels) = (17, 2);
        let weight: Vec<f32> = (0..filters * channels * 9).map(|i| (i / 9) as f32).collect();
        for variant in [Variant::F2, Variant::F4] {
            let w = WinogradWeights::new(&weight, filters, channels, variant);
            assert_eq!(w.filter_panels(), 2);
            // Position 0 of U is g[0][0] in both: the kernel's constant (filter·channels + channel).
            let panel = w.panel(0, 1, 0..2);
            assert_eq!((panel[0], panel[NR]), (32.0, 33.0));
            assert_eq!(panel[1], 0.0, "lanes past the last filter are zero");
        }
    }
}
