//! Draws detections onto the image: a coloured box per object and a `label 0.97` tag above it.
//!
//! The font is DejaVu Sans (Bitstream Vera licence, DejaVu changes public domain; see
//! `font/LICENSE-DejaVu.txt`), embedded so annotation works on a machine without fonts.

use ab_glyph::{FontRef, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_hollow_rect_mut, draw_text_mut, text_size};
use imageproc::rect::Rect;

use crate::Detection;

/// DejaVu Sans, embedded so annotation (and the service's plots) work on a machine without fonts.
pub const FONT: &[u8] = include_bytes!("font/DejaVuSans.ttf");

/// Twelve distinct colours; a label always gets the same one.
const PALETTE: [[u8; 3]; 12] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 212],
    [0, 128, 128],
    [170, 110, 40],
];

fn colour(label: &str) -> Rgb<u8> {
    // FNV-1a: a stable hash, so `person` is the same colour in every image and every run.
    let hash = label.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    Rgb(PALETTE[hash as usize % PALETTE.len()])
}

/// Returns a copy of `image` with every object drawn.
pub fn annotate(image: &RgbImage, objects: &[Detection]) -> RgbImage {
    let font = FontRef::try_from_slice(FONT).expect("the embedded DejaVu Sans is a valid font");
    let mut canvas = image.clone();
    let short_side = image.width().min(image.height());
    // ≈2.5 % of the short side reads well from thumbnails to 4K; never below 12 px.
    let scale = PxScale::from((short_side as f32 * 0.025).max(12.0));
    let thickness = (short_side / 300).clamp(1, 6);
    // Lowest score first, so the strongest boxes end up on top.
    for object in objects.iter().rev() {
        let r = object.bbox;
        if r.width == 0 || r.height == 0 {
            continue;
        }
        let colour = colour(&object.label);
        for t in 0..thickness.min(r.width / 2).min(r.height / 2).max(1) {
            let rect = Rect::at((r.left + t) as i32, (r.top + t) as i32).of_size(r.width - 2 * t, r.height - 2 * t);
            draw_hollow_rect_mut(&mut canvas, rect, colour);
        }
        let text = format!("{} {:.2}", object.label, object.score);
        let (text_w, text_h) = text_size(scale, &font, &text);
        let pad = 2;
        // Above the box when there is room, inside its top edge otherwise.
        let tag_h = text_h + 2 * pad;
        let tag_top = if r.top >= tag_h { r.top - tag_h } else { r.top };
        draw_filled_rect_mut(
            &mut canvas,
            Rect::at(r.left as i32, tag_top as i32).of_size(text_w + 2 * pad, tag_h),
            colour,
        );
        let ink = if luminance(colour) > 140.0 { Rgb([0, 0, 0]) } else { Rgb([255, 255, 255]) };
        draw_text_mut(&mut canvas, ink, (r.left + pad) as i32, (tag_top + pad) as i32, scale, &font, &text);
    }
    canvas
}

fn luminance(Rgb([r, g, b]): Rgb<u8>) -> f32 {
    0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PixelBox;

    fn object(label: &str, left: u32, top: u32, width: u32, height: u32) -> Detection {
        Detection { label: label.into(), score: 0.9, bbox: PixelBox { left, top, width, height } }
    }

    #[test]
    fn draws_box_edges_and_a_tag_and_leaves_the_rest() {
        let image = RgbImage::from_pixel(200, 100, Rgb([10, 10, 10]));
        let drawn = annotate(&image, &[object("person", 50, 40, 60, 50)]);
        let c = colour("person");
        assert_eq!(drawn.get_pixel(50, 60), &c, "left edge");
        assert_eq!(drawn.get_pixel(109, 89), &c, "bottom-right corner");
        assert_eq!(drawn.get_pixel(80, 65), &Rgb([10, 10, 10]), "inside the box is untouched");
        assert_eq!(drawn.get_pixel(5, 95), &Rgb([10, 10, 10]), "outside is untouched");
        let tag_pixels = (50..110)
            .flat_map(|x| (20..40).map(move |y| (x, y)))
            .filter(|&(x, y)| drawn.get_pixel(x, y) != &Rgb([10, 10, 10]))
            .count();
        assert!(tag_pixels > 100, "a label tag is drawn above the box ({tag_pixels} px)");
    }

    #[test]
    fn boxes_at_the_edges_and_empty_boxes_do_not_panic() {
        let image = RgbImage::new(30, 20);
        let objects = [object("a", 0, 0, 30, 20), object("b", 29, 19, 1, 1), object("c", 5, 5, 0, 3)];
        let drawn = annotate(&image, &objects);
        assert_eq!(drawn.dimensions(), (30, 20));
    }

    #[test]
    fn colours_are_stable_per_label() {
        assert_eq!(colour("person"), colour("person"));
        assert_ne!(colour("person"), colour("bus"));
    }
}
