//! Darknet's max-pool as a candle custom op: windows of `size` at `stride`, reaching past the
//! bottom-right edge by `size − 1` (those positions count as −∞), so `size=2 stride=1` keeps
//! 13×13 and `size=2 stride=2` halves 416 to 208.
//!
//! candle's `max_pool2d` took 4–6 ms on conv0's 16×416×416 output, ≈ 8 % of a 2-thread forward;
//! this one runs the planes in parallel with a branch-free inner loop.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

/// Max-pooling with darknet's output size `(h − 1) / stride + 1`.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool {
    /// Window side.
    pub size: usize,
    /// Step between windows.
    pub stride: usize,
}

impl MaxPool {
    /// Output side for an input side, as darknet computes it (`pad = size − 1`).
    pub fn output_len(&self, input: usize) -> usize {
        (input - 1) / self.stride + 1
    }

    /// Pools one `h × w` plane into `out` (`oh × ow`).
    fn plane(&self, input: &[f32], (h, w): (usize, usize), out: &mut [f32]) {
        let ow = self.output_len(w);
        if self.size == 2 && self.stride == 2 && h % 2 == 0 && w % 2 == 0 {
            // The common case (five of six yolov3-tiny pools): pairs of rows, pairs of columns.
            for (out_row, rows) in out.chunks_exact_mut(ow).zip(input.chunks_exact(2 * w)) {
                let (top, bottom) = rows.split_at(w);
                for ((value, t), b) in out_row.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
                    *value = t[0].max(t[1]).max(b[0].max(b[1]));
                }
            }
            return;
        }
        for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
            let rows = oy * self.stride..(oy * self.stride + self.size).min(h);
            out_row.fill(f32::NEG_INFINITY);
            for y in rows {
                let src = &input[y * w..(y + 1) * w];
                for (ox, value) in out_row.iter_mut().enumerate() {
                    let cols = ox * self.stride..(ox * self.stride + self.size).min(w);
                    *value = src[cols].iter().fold(*value, |m, &v| m.max(v));
                }
            }
        }
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "skyburst-maxpool"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, channels, h, w) = layout.shape().dims4()?;
        let CpuStorage::F32(data) = storage else { candle_core::bail!("maxpool: only f32 input is supported") };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("maxpool: the input must be contiguous")
        };
        if h == 0 || w == 0 || self.size == 0 || self.stride == 0 {
            candle_core::bail!("maxpool: empty input or zero window");
        }
        let (oh, ow) = (self.output_len(h), self.output_len(w));
        let mut output = vec![0.0f32; batch * channels * oh * ow];
        let input = &data[start..end];
        output
            .par_chunks_mut(oh * ow)
            .zip(input.par_chunks(h * w))
            .for_each(|(out, plane)| self.plane(plane, (h, w), out));
        Ok((CpuStorage::F32(output), Shape::from((batch, channels, oh, ow))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_candle_for_halving_and_padded_stride_one() {
        let x = Tensor::randn(0f32, 1.0, (2, 5, 26, 18), &Device::Cpu).unwrap();
        let ours = x.apply_op1_no_bwd(&MaxPool { size: 2, stride: 2 }).unwrap();
        let stock = x.max_pool2d_with_stride(2, 2).unwrap();
        assert_eq!(
            ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            stock.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );

        let ours = x.apply_op1_no_bwd(&MaxPool { size: 2, stride: 1 }).unwrap();
        let padded = x.pad_with_same(2, 0, 1).unwrap().pad_with_same(3, 0, 1).unwrap();
        let stock = padded.max_pool2d_with_stride(2, 1).unwrap();
        assert_eq!(ours.dims(), &[2, 5, 26, 18]);
        assert_eq!(
            ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            stock.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn odd_sides_round_up_like_darknet() {
        let x = Tensor::arange(0f32, 9.0, &Device::Cpu).unwrap().reshape((1, 1, 3, 3)).unwrap();
        let y = x.apply_op1_no_bwd(&MaxPool { size: 2, stride: 2 }).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![4.0, 5.0, 7.0, 8.0]);
    }
}
