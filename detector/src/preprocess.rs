//! Image bytes → the network's input: decode (size checked first), EXIF orientation, RGB, then
//! letterbox (default) or stretch to the input size as planar RGB in 0..1.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};

/// The smallest side accepted. yolov3-tiny's finest head looks at 16-pixel cells of its 416-pixel
/// input; an image narrower than one cell carries nothing for it to find.
pub const MIN_SIDE: u32 = 16;

/// How an image is fitted to the network's square input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Keep the aspect ratio and pad with 0.5 gray, as darknet does. Finds Zidane at 0.93 where
    /// stretching finds only weak boxes (docs/detector.md).
    #[default]
    Letterbox,
    /// Stretch to the input size, as OpenCV's `blobFromImage` does.
    Stretch,
}

/// Why an image could not be turned into network input.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Zero bytes.
    #[error("the image is empty (0 bytes); send the file's contents")]
    Empty,
    /// Not a format we decode.
    #[error("not a supported image (JPEG, PNG, BMP, GIF, WebP): {0}")]
    NotAnImage(#[source] Cause),
    /// Declares more pixels than allowed; refused before decoding.
    #[error("the image declares {width}×{height} = {pixels} pixels, above the limit of {limit} (detector.max_pixels); downscale it first")]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// width × height.
        pixels: u64,
        /// `detector.max_pixels`.
        limit: u64,
    },
    /// Smaller than [`MIN_SIDE`] on a side.
    #[error("the image is {width}×{height} pixels; both sides must be at least {MIN_SIDE} to detect anything")]
    TooSmall {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// A recognised format whose data is broken (e.g. a truncated JPEG).
    #[error("the image could not be decoded (truncated or corrupt?): {0}")]
    Corrupt(#[source] Cause),
}

/// What the decoder said (an [`image::ImageError`], or our own words where we stopped first).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What an image's header declares, checked without decoding the pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// The container format.
    pub format: image::ImageFormat,
    /// Stored width (before EXIF orientation).
    pub width: u32,
    /// Stored height.
    pub height: u32,
}

/// Checks an image cheaply (≈ 0.1 ms for a 1 MB JPEG, against ≈ 10 ms to decode it): a known
/// signature, a readable header within `max_pixels` and [`MIN_SIDE`], and — for JPEG — an
/// end-of-image marker. The front end runs this before storing or queueing anything, so a
/// decompression bomb or a truncated upload never reaches a worker.
pub fn inspect(bytes: &[u8], max_pixels: u64) -> Result<ImageInfo, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let reader = guess(bytes)?;
    let format = reader.format().ok_or_else(|| ImageError::NotAnImage("unrecognised file signature".into()))?;
    // Only the header is read: a 50000×50000 PNG is a few hundred bytes that would decode
    // into 7.5 GB.
    let (width, height) = reader.into_dimensions().map_err(|e| ImageError::Corrupt(e.into()))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(ImageError::TooLarge { width, height, pixels, limit: max_pixels });
    }
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(ImageError::TooSmall { width, height });
    }
    // The JPEG decoder fills a cut-off file with gray and reports success; a half-uploaded photo
    // would then yield made-up detections, so a JPEG must end its last scan with EOI.
    if format == image::ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(ImageError::Corrupt("the JPEG ends before its end-of-image marker (truncated upload?)".into()));
    }
    Ok(ImageInfo { format, width, height })
}

/// A decoded image in displayed orientation, after the checks of [`inspect`].
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageError> {
    inspect(bytes, max_pixels)?;
    let mut decoder = guess(bytes)?.into_decoder().map_err(|e| ImageError::Corrupt(e.into()))?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| ImageError::Corrupt(e.into()))?;
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}

fn guess(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>, ImageError> {
    let reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ImageError::NotAnImage(e.into()))?;
    match reader.format() {
        Some(_) => Ok(reader),
        None => Err(ImageError::NotAnImage("unrecognised file signature".into())),
    }
}

/// Whether an end-of-image marker (`FF D9`) follows the last start-of-scan (`FF DA`). Inside
/// entropy-coded data every `FF` is stuffed as `FF 00`, so neither marker appears by accident;
/// an EXIF thumbnail's own markers come before the main image's scans.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    const EOI: [u8; 2] = [0xFF, 0xD9];
    // The usual file ends with EOI, which then follows every scan: finding the first scan (in
    // the header's first kilobytes) is enough. The backward search below reads the whole
    // entropy-coded body, ≈ 0.1 ms of the front end's ≈ 3 ms per 200 KB upload.
    if bytes.ends_with(&EOI) {
        return bytes.windows(2).any(|w| w == [0xFF, 0xDA]);
    }
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_scan {
        Some(scan) => bytes[scan..].windows(2).any(|w| w == EOI),
        None => false,
    }
}

/// Where the image sits inside the network input, to map boxes back to image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Image width in displayed pixels.
    pub image_width: u32,
    /// Image height in displayed pixels.
    pub image_height: u32,
    /// Left padding in input pixels.
    pub pad_x: f32,
    /// Top padding in input pixels.
    pub pad_y: f32,
    /// Input pixels per image pixel, horizontally.
    pub scale_x: f32,
    /// Input pixels per image pixel, vertically.
    pub scale_y: f32,
}

impl Placement {
    /// Maps an input-space x coordinate back to image pixels (darknet's `correct_yolo_boxes`).
    pub fn to_image_x(&self, x: f32) -> f32 {
        (x - self.pad_x) / self.scale_x
    }

    /// Maps an input-space y coordinate back to image pixels.
    pub fn to_image_y(&self, y: f32) -> f32 {
        (y - self.pad_y) / self.scale_y
    }
}

/// An image prepared for the network: planar RGB (`3 × height × width`, 0..1) plus placement.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `3 × input_height × input_width` floats.
    pub chw: Vec<f32>,
    /// How to map boxes back.
    pub placement: Placement,
}

/// Fits `image` into an `input_w × input_h` input by `mode`.
pub fn prepare(image: &RgbImage, (input_w, input_h): (usize, usize), mode: ResizeMode) -> Prepared {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let (new_w, new_h) = match mode {
        // Integer arithmetic exactly as darknet's letterbox_image (bus.jpg: 312×416 at pad 52).
        ResizeMode::Letterbox if input_w * h < input_h * w => (input_w, h * input_w / w),
        ResizeMode::Letterbox => (w * input_h / h, input_h),
        ResizeMode::Stretch => (input_w, input_h),
    };
    let (pad_x, pad_y) = ((input_w - new_w) / 2, (input_h - new_h) / 2);
    let mut chw = vec![0.5f32; 3 * input_w * input_h];
    let (red, rest) = chw.split_at_mut(input_w * input_h);
    let (green, blue) = rest.split_at_mut(input_w * input_h);
    // Each resized row goes straight into its place in the padded planes: no intermediate
    // planes, one pass over the output (bus.jpg: 2.0 → 1.2 ms, dev build).
    resize_bilinear(image, new_w, new_h, |y, rows| {
        for (plane, row) in [&mut *red, &mut *green, &mut *blue].into_iter().zip(rows) {
            let dst = &mut plane[(y + pad_y) * input_w + pad_x..][..new_w];
            dst.iter_mut().zip(row).for_each(|(d, s)| *d = s / 255.0);
        }
    });
    let placement = Placement {
        image_width: w as u32,
        image_height: h as u32,
        pad_x: pad_x as f32,
        pad_y: pad_y as f32,
        scale_x: new_w as f32 / w as f32,
        scale_y: new_h as f32 / h as f32,
    };
    Prepared { chw, placement }
}

/// Bilinear resampling with half-pixel centres, as OpenCV's `INTER_LINEAR` (the reference's
/// filter). The `image` crate's Triangle filter averages over the whole footprint when shrinking,
/// which moves weak detections (docs/detector.md). Hands each output row `y` to `emit`
/// as three channel rows in 0..255.
fn resize_bilinear(image: &RgbImage, out_w: usize, out_h: usize, mut emit: impl FnMut(usize, [&[f32]; 3])) {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let xs: Vec<(usize, usize, f32)> = (0..out_w).map(|x| sample_points(x, w, out_w)).collect();
    let raw = image.as_raw();
    let [mut red, mut green, mut blue] = [vec![0.0; out_w], vec![0.0; out_w], vec![0.0; out_w]];
    // Bilinear is separable: blend the two source rows over the whole width first (contiguous,
    // vectorised: 3·w floats a row), then pick and blend columns from that one row. Sampling
    // four bytes per output value instead took 0.77 ms for bus.jpg (810×1080 → 312×416)
    // against 0.47 (release, warm); the results differ by f32 rounding only.
    let mut blended = vec![0.0f32; w * 3];
    for y in 0..out_h {
        let (y0, y1, fy) = sample_points(y, h, out_h);
        let (row0, row1) = (&raw[y0 * w * 3..][..w * 3], &raw[y1 * w * 3..][..w * 3]);
        for ((b, &top), &bottom) in blended.iter_mut().zip(row0).zip(row1) {
            *b = f32::from(top) * (1.0 - fy) + f32::from(bottom) * fy;
        }
        for (x, &(x0, x1, fx)) in xs.iter().enumerate() {
            let (left, right) = (&blended[x0 * 3..][..3], &blended[x1 * 3..][..3]);
            red[x] = left[0] * (1.0 - fx) + right[0] * fx;
            green[x] = left[1] * (1.0 - fx) + right[1] * fx;
            blue[x] = left[2] * (1.0 - fx) + right[2] * fx;
        }
        emit(y, [&red, &green, &blue]);
    }
}

/// [`resize_bilinear`] gathered into three `out_w × out_h` planes, for the tests.
#[cfg(test)]
fn resize_bilinear_planes(image: &RgbImage, out_w: usize, out_h: usize) -> [Vec<f32>; 3] {
    let mut planes = [vec![0.0; out_w * out_h], vec![0.0; out_w * out_h], vec![0.0; out_w * out_h]];
    resize_bilinear(image, out_w, out_h, |y, rows| {
        for (plane, row) in planes.iter_mut().zip(rows) {
            plane[y * out_w..][..out_w].copy_from_slice(row);
        }
    });
    planes
}

/// Bilinear sampled per output pixel: the oracle for [`resize_bilinear`].
#[cfg(test)]
fn resize_bilinear_direct(image: &RgbImage, out_w: usize, out_h: usize) -> [Vec<f32>; 3] {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let xs: Vec<(usize, usize, f32)> = (0..out_w).map(|x| sample_points(x, w, out_w)).collect();
    let raw = image.as_raw();
    let mut planes = [vec![0.0; out_w * out_h], vec![0.0; out_w * out_h], vec![0.0; out_w * out_h]];
    for y in 0..out_h {
        let (y0, y1, fy) = sample_points(y, h, out_h);
        let (row0, row1) = (&raw[y0 * w * 3..][..w * 3], &raw[y1 * w * 3..][..w * 3]);
        for (x, &(x0, x1, fx)) in xs.iter().enumerate() {
            for (c, plane) in planes.iter_mut().enumerate() {
                let top = f32::from(row0[x0 * 3 + c]) * (1.0 - fx) + f32::from(row0[x1 * 3 + c]) * fx;
                let bottom = f32::from(row1[x0 * 3 + c]) * (1.0 - fx) + f32::from(row1[x1 * 3 + c]) * fx;
                plane[y * out_w + x] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
    planes
}

/// The two source indices and the weight of the second for output index `i`.
fn sample_points(i: usize, src: usize, dst: usize) -> (usize, usize, f32) {
    let position = ((i as f32 + 0.5) * src as f32 / dst as f32 - 0.5).max(0.0);
    let first = (position.floor() as usize).min(src - 1);
    let second = (first + 1).min(src - 1);
    (first, second, position - first as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        let img = RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]));
        img.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        bytes
    }

    fn encode(image: DynamicImage, format: image::ImageFormat) -> Vec<u8> {
        let mut bytes = Vec::new();
        image.write_to(&mut Cursor::new(&mut bytes), format).unwrap();
        bytes
    }

    #[test]
    fn decodes_every_supported_format_and_colour_type_to_rgb() {
        let rgb = DynamicImage::ImageRgb8(RgbImage::from_pixel(24, 18, image::Rgb([200, 30, 60])));
        for format in
            [image::ImageFormat::Jpeg, image::ImageFormat::Png, image::ImageFormat::Bmp, image::ImageFormat::WebP]
        {
            let decoded = decode(&encode(rgb.clone(), format), 1000).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!(decoded.dimensions(), (24, 18), "{format:?}");
            let p = decoded.get_pixel(5, 5).0;
            assert!(p[0] > 180 && p[1] < 60 && p[2] < 90, "{format:?}: {p:?}");
        }
        let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(20, 20, image::Luma([77])));
        assert_eq!(decode(&encode(gray, image::ImageFormat::Png), 1000).unwrap().get_pixel(3, 3).0, [77, 77, 77]);
        let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(20, 20, image::Rgba([1, 2, 3, 255])));
        assert_eq!(decode(&encode(rgba, image::ImageFormat::Png), 1000).unwrap().get_pixel(3, 3).0, [1, 2, 3]);
    }

    #[test]
    fn gif_uses_the_first_frame() {
        let mut bytes = Vec::new();
        {
            let mut encoder = image::codecs::gif::GifEncoder::new(&mut bytes);
            for colour in [[255, 0, 0, 255], [0, 0, 255, 255]] {
                let frame = image::Frame::new(image::RgbaImage::from_pixel(20, 20, image::Rgba(colour)));
                encoder.encode_frame(frame).unwrap();
            }
        }
        let p = decode(&bytes, 1000).unwrap().get_pixel(10, 10).0;
        assert!(p[0] > 200 && p[2] < 50, "first (red) frame, got {p:?}");
    }

    #[test]
    fn exif_orientation_is_applied() {
        // 40×20 JPEG whose EXIF says "rotate 90° clockwise to display" (orientation 6).
        let jpeg = encode(DynamicImage::ImageRgb8(RgbImage::new(40, 20)), image::ImageFormat::Jpeg);
        let mut tiff = b"Exif\0\0II*\0\x08\0\0\0\x01\0".to_vec();
        tiff.extend([0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
        let mut with_exif = vec![0xFF, 0xD8, 0xFF, 0xE1];
        with_exif.extend(((tiff.len() + 2) as u16).to_be_bytes());
        with_exif.extend(&tiff);
        with_exif.extend(&jpeg[2..]);
        assert_eq!(decode(&with_exif, 1000).unwrap().dimensions(), (20, 40));
    }

    #[test]
    fn a_truncated_jpeg_is_refused_although_the_decoder_would_fill_it_in() {
        let jpeg = encode(DynamicImage::ImageRgb8(RgbImage::new(64, 64)), image::ImageFormat::Jpeg);
        assert!(decode(&jpeg, 10_000).is_ok());
        assert!(matches!(decode(&jpeg[..jpeg.len() - 2], 10_000), Err(ImageError::Corrupt(_))));
    }

    #[test]
    fn letterbox_geometry_matches_darknet() {
        let tall = RgbImage::new(810, 1080);
        let p = prepare(&tall, (416, 416), ResizeMode::Letterbox).placement;
        assert_eq!((p.pad_x, p.pad_y, p.scale_y), (52.0, 0.0, 416.0 / 1080.0));
        let wide = RgbImage::new(1280, 720);
        let p = prepare(&wide, (416, 416), ResizeMode::Letterbox).placement;
        assert_eq!((p.pad_x, p.pad_y), (0.0, 91.0));
        assert_eq!(p.to_image_y(91.0 + 117.0), 117.0 * 1280.0 / 416.0);
    }

    #[test]
    fn letterbox_pads_with_half_gray_and_stretch_fills() {
        let image = RgbImage::from_pixel(100, 50, image::Rgb([255, 0, 255]));
        let p = prepare(&image, (64, 64), ResizeMode::Letterbox);
        assert_eq!(p.chw[0], 0.5, "top-left is padding");
        assert_eq!(p.chw[32 * 64 + 32], 1.0, "centre is the image's red");
        let p = prepare(&image, (64, 64), ResizeMode::Stretch);
        assert!(p.chw[..64 * 64].iter().all(|&v| v == 1.0));
    }

    /// The separable resize equals bilinear sampled per output pixel (within f32 rounding), down
    /// and up, on a noisy image.
    #[test]
    fn separable_resize_equals_direct_bilinear() {
        let image = RgbImage::from_fn(97, 61, |x, y| {
            let v = |k: u32| ((x * 37 + y * 91 + k * 53).wrapping_mul(2654435761) >> 24) as u8;
            image::Rgb([v(0), v(1), v(2)])
        });
        for (w, h) in [(40, 25), (200, 130), (97, 61)] {
            let (fast, direct) = (resize_bilinear_planes(&image, w, h), resize_bilinear_direct(&image, w, h));
            for (a, b) in fast.iter().zip(&direct) {
                let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                assert!(diff < 1e-3, "{w}×{h}: max |Δ| = {diff} (of 255)");
            }
        }
    }

    #[test]
    fn bilinear_of_a_constant_is_the_constant_and_of_a_ramp_is_linear() {
        let image = RgbImage::from_fn(4, 1, |x, _| image::Rgb([(x * 60) as u8, 9, 9]));
        let [red, green, _] = resize_bilinear_planes(&image, 8, 1);
        assert!(green.iter().all(|&g| g == 9.0));
        // Half-pixel centres: output 1 samples source 0.25 → 0.25·60 = 15.
        assert_eq!(&red[..3], &[0.0, 15.0, 45.0]);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(matches!(decode(&[], 1000), Err(ImageError::Empty)));
        assert!(matches!(decode(b"hello, not an image", 1000), Err(ImageError::NotAnImage(_))));
        assert!(matches!(decode(&png(1, 1), 1000), Err(ImageError::TooSmall { width: 1, height: 1 })));
        let good = png(20, 20);
        assert_eq!(decode(&good, 1000).unwrap().dimensions(), (20, 20));
        assert!(matches!(decode(&good, 399), Err(ImageError::TooLarge { pixels: 400, limit: 399, .. })));
        assert!(matches!(decode(&good[..good.len() / 2], 1000), Err(ImageError::Corrupt(_))));
    }
}
