//! Packing both GEMM operands into the panels the micro-kernels stream through.
//!
//! - Weights (`filters × depth`, depth = in_channels·k·k) are packed once at load into panels of
//!   up to 6 filters, k-major, so a panel's slice for depth rows `k0..k1` is contiguous.
//! - Input patches (im2col) are packed per task, straight from the NCHW input into panels of 16
//!   output pixels, k-major, for one depth slice at a time: an L2-sized block that is never
//!   materialised as a whole im2col matrix (conv0's would be 18 MB).

use std::ops::Range;

use super::micro::{MR, NR};

/// Convolution weights packed into panels of [`MR`] filters.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    data: Vec<f32>,
    filters: usize,
    depth: usize,
}

impl PackedWeights {
    /// Packs row-major `filters × depth` weights.
    pub fn new(weight: &[f32], filters: usize, depth: usize) -> Self {
        assert_eq!(weight.len(), filters * depth, "weights must be filters × depth");
        let mut data = Vec::with_capacity(filters * depth);
        for first in (0..filters).step_by(MR) {
            let rows = MR.min(filters - first);
            for k in 0..depth {
                data.extend((first..first + rows).map(|f| weight[f * depth + k]));
            }
        }
        Self { data, filters, depth }
    }

    /// The row-major `filters × depth` weights these panels were packed from.
    pub fn unpack(&self) -> Vec<f32> {
        let mut weight = vec![0.0; self.filters * self.depth];
        for panel in 0..self.panels() {
            let rows = self.rows(panel);
            for (k, values) in self.slice(panel, 0..self.depth).chunks_exact(rows).enumerate() {
                for (i, &value) in values.iter().enumerate() {
                    weight[(panel * MR + i) * self.depth + k] = value;
                }
            }
        }
        weight
    }

    /// Number of panels.
    pub fn panels(&self) -> usize {
        self.filters.div_ceil(MR)
    }

    /// Filters in panel `panel` (6, or fewer for the last).
    pub fn rows(&self, panel: usize) -> usize {
        MR.min(self.filters - panel * MR)
    }

    /// Panel `panel` restricted to depth rows `depth`: `depth.len() × rows` floats, k-major.
    pub fn slice(&self, panel: usize, depth: Range<usize>) -> &[f32] {
        let rows = self.rows(panel);
        let start = panel * MR * self.depth;
        &self.data[start + depth.start * rows..start + depth.end * rows]
    }
}

/// The spatial geometry of one convolution on one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Input channels.
    pub channels: usize,
    /// Input rows.
    pub height: usize,
    /// Input columns.
    pub width: usize,
    /// Output rows.
    pub out_height: usize,
    /// Output columns.
    pub out_width: usize,
    /// Kernel side.
    pub size: usize,
    /// Step between patches.
    pub stride: usize,
    /// Zero rows and columns around the input.
    pub padding: usize,
}

impl Geometry {
    /// GEMM depth: one row per (channel, ky, kx).
    pub fn depth(&self) -> usize {
        self.channels * self.size * self.size
    }

    /// Input columns with the zero padding on both sides.
    pub fn padded_width(&self) -> usize {
        self.width + 2 * self.padding
    }

    /// Input rows with the zero padding above and below.
    pub fn padded_height(&self) -> usize {
        self.height + 2 * self.padding
    }

    /// A 1×1, stride-1, unpadded convolution: its patches are the input's own rows.
    pub fn is_pointwise(&self) -> bool {
        self.size == 1 && self.stride == 1 && self.padding == 0
    }
}

/// A run of output pixels within one output row: `len` lanes from `lane`, starting at `(oy, ox)`.
#[derive(Debug, Clone, Copy, Default)]
struct Segment {
    lane: usize,
    oy: usize,
    ox: usize,
    len: usize,
}

/// Packs the patches of output pixels `pixels` for depth rows `depth` into `out`: one panel of
/// `depth.len() × 16` floats per 16 pixels, k-major; lanes past `pixels.end` are zero.
pub fn pack_patches(input: &[f32], g: &Geometry, pixels: Range<usize>, depth: Range<usize>, out: &mut [f32]) {
    let kc = depth.len();
    for (panel, first) in out.chunks_exact_mut(kc * NR).zip(pixels.clone().step_by(NR)) {
        let count = NR.min(pixels.end - first);
        if g.is_pointwise() {
            for (k, row) in depth.clone().zip(panel.chunks_exact_mut(NR)) {
                let start = k * g.height * g.width + first;
                row[..count].copy_from_slice(&input[start..start + count]);
                row[count..].fill(0.0);
            }
            continue;
        }
        // Split once per panel, not per depth row: ≤ 16 segments (one per lane at worst).
        let mut segments = [Segment::default(); NR];
        let mut used = 0;
        let (mut lane, mut pixel) = (0, first);
        while lane < count {
            let (oy, ox) = (pixel / g.out_width, pixel % g.out_width);
            let len = (g.out_width - ox).min(count - lane);
            segments[used] = Segment { lane, oy, ox, len };
            used += 1;
            lane += len;
            pixel += len;
        }
        let per_channel = g.size * g.size;
        for (k, row) in depth.clone().zip(panel.chunks_exact_mut(NR)) {
            let (channel, tap) = (k / per_channel, k % per_channel);
            let plane = &input[channel * g.height * g.width..(channel + 1) * g.height * g.width];
            let (ky, kx) = (tap / g.size, tap % g.size);
            for s in &segments[..used] {
                fill_segment(plane, g, (ky, kx), *s, &mut row[s.lane..s.lane + s.len]);
            }
            row[count..].fill(0.0);
        }
    }
}

/// Lanes of one segment for tap `(ky, kx)`: the input row `oy·s + ky − p`, sampled from column
/// `ox·s + kx − p` every `s` columns, zero outside the image.
fn fill_segment(plane: &[f32], g: &Geometry, (ky, kx): (usize, usize), s: Segment, out: &mut [f32]) {
    let iy = (s.oy * g.stride + ky).wrapping_sub(g.padding);
    if iy >= g.height {
        out.fill(0.0);
        return;
    }
    let src = &plane[iy * g.width..(iy + 1) * g.width];
    if g.stride == 1 {
        // Lane j reads column ox + j + kx − p: copy the in-image part as one slice.
        let start = (s.ox + kx) as isize - g.padding as isize;
        let first = (-start).clamp(0, s.len as isize) as usize;
        let last = (g.width as isize - start).clamp(first as isize, s.len as isize) as usize;
        out[..first].fill(0.0);
        if last > first {
            let from = (start + first as isize) as usize;
            out[first..last].copy_from_slice(&src[from..from + (last - first)]);
        }
        out[last..].fill(0.0);
    } else {
        for (j, value) in out.iter_mut().enumerate() {
            let ix = ((s.ox + j) * g.stride + kx).wrapping_sub(g.padding);
            *value = if ix < g.width { src[ix] } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The im2col element for depth row `k`, pixel `p`, computed the obvious way.
    fn patch(input: &[f32], g: &Geometry, k: usize, p: usize) -> f32 {
        let (c, tap) = (k / (g.size * g.size), k % (g.size * g.size));
        let (oy, ox) = (p / g.out_width, p % g.out_width);
        let iy = (oy * g.stride + tap / g.size) as isize - g.padding as isize;
        let ix = (ox * g.stride + tap % g.size) as isize - g.padding as isize;
        if iy < 0 || ix < 0 || iy >= g.height as isize || ix >= g.width as isize {
            0.0
        } else {
            input[(c * g.height + iy as usize) * g.width + ix as usize]
        }
    }

    fn geometry(
        channels: usize,
        (height, width): (usize, usize),
        size: usize,
        stride: usize,
        padding: usize,
    ) -> Geometry {
        let span = |input: usize| (input + 2 * padding - size) / stride + 1;
        Geometry { channels, height, width, out_height: span(height), out_width: span(width), size, stride, padding }
    }

    #[test]
    fn packed_patches_equal_im2col_for_every_shape() {
        for g in [
            geometry(3, (9, 13), 3, 1, 1),
            geometry(2, (13, 13), 3, 1, 1),
            geometry(2, (7, 5), 3, 2, 1),
            geometry(4, (6, 20), 1, 1, 0),
            geometry(1, (3, 40), 5, 1, 2),
            geometry(2, (11, 3), 3, 1, 0),
            geometry(1, (9, 11), 5, 1, 2),
        ] {
            let input: Vec<f32> = (0..g.channels * g.height * g.width).map(|i| i as f32 + 1.0).collect();
            let all = g.out_height * g.out_width;
            for (pixels, depth) in [(0..all, 0..g.depth()), (5..all - 1, 1..g.depth() - 1)] {
                let panels = pixels.len().div_ceil(NR);
                let mut out = vec![f32::NAN; panels * depth.len() * NR];
                pack_patches(&input, &g, pixels.clone(), depth.clone(), &mut out);
                for (i, value) in out.iter().enumerate() {
                    let (panel, kk, lane) = (i / (depth.len() * NR), i / NR % depth.len(), i % NR);
                    let p = pixels.start + panel * NR + lane;
                    let want = if p < pixels.end { patch(&input, &g, depth.start + kk, p) } else { 0.0 };
                    assert_eq!(*value, want, "{g:?} pixel {p} depth {}", depth.start + kk);
                }
            }
        }
    }

    #[test]
    fn weight_panels_hold_six_filters_k_major() {
        let (filters, depth) = (14, 5);
        let weight: Vec<f32> = (0..filters * depth).map(|i| i as f32).collect();
        let packed = PackedWeights::new(&weight, filters, depth);
        assert_eq!((packed.panels(), packed.rows(0), packed.rows(2)), (3, 6, 2));
        let slice = packed.slice(2, 1..4);
        // Panel 2 holds filters 12 and 13; depth rows 1..4, k-major.
        assert_eq!(slice, &[61.0, 66.0, 62.0, 67.0, 63.0, 68.0]);
        assert_eq!(packed.unpack(), weight, "unpacking gives the weights back");
    }
}
