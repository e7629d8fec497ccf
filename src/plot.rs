//! Charts as PNG files: plotters draws into memory with an embedded font, and the `image` crate
//! encodes the PNG. Shared by the simulator's and the load generator's plots.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// DejaVu Sans, also used by the detector's labels: plotters' ab_glyph text needs a font in
/// memory, and embedding one makes the PNG the same on every machine.
const FONT: &[u8] = include_bytes!("detector/font/DejaVuSans.ttf");

/// A drawing area of an in-memory RGB bitmap.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Draws a `width × height` picture with `draw` (on a white background) and writes it to `path`
/// as a PNG. The error says what failed, for the caller to wrap with its own context.
pub fn save_png(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<(), String> {
    register_font_once()?;
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(&root).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    image::save_buffer_with_format(
        path,
        &pixels,
        width,
        height,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn register_font_once() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font("sans-serif", FontStyle::Normal, FONT).map_err(|_| "the embedded font is unreadable".into())
        })
        .clone()
}
