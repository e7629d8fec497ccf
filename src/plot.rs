//! Charts as PNG files: plotters draws into memory with an embedded font, and the `image` crate
//! encodes the PNG. Shared by the simulator's and the load generator's plots.

use std::path::Path;
use std::sync::OnceLock;

use plotters::chart::DualCoordChartContext;
use plotters::coord::ranged1d::SegmentedCoord;
use plotters::coord::types::{RangedCoordf64, RangedCoordu32};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// DejaVu Sans, also used by the detector's labels: plotters' ab_glyph text needs a font in
/// memory, and embedding one makes the PNG the same on every machine.
use skyburst_detector::annotate::FONT;

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

/// One bar of a [`bar_chart`].
pub struct Bar {
    /// Written under the bar.
    pub label: String,
    /// Its height.
    pub value: f64,
    /// Its fill.
    pub colour: RGBColor,
}

/// A chart with one bar per category, labelled under the axis.
pub type BarChart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<SegmentedCoord<RangedCoordu32>, RangedCoordf64>>;

/// Draws `bars` side by side with room above the tallest; returns the chart to draw more on.
pub fn bar_chart<'a, 'b>(
    root: &'a Area<'b>,
    caption: &str,
    y_desc: &str,
    bars: &[Bar],
) -> Result<BarChart<'a, 'b>, Box<dyn std::error::Error>> {
    let top = bars.iter().map(|b| b.value).fold(1.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        // A segmented `0..last` has a segment for `last` too: one per bar.
        .build_cartesian_2d((0..bars.len().max(1) as u32 - 1).into_segmented(), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_style(("sans-serif", 16))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => bars.get(*i as usize).map(|b| b.label.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .y_desc(y_desc)
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let (left, right) = (SegmentValue::Exact(i as u32), SegmentValue::Exact(i as u32 + 1));
        let mut rectangle = Rectangle::new([(left, 0.0), (right, b.value)], b.colour.filled());
        rectangle.set_margin(0, 0, 25, 25);
        rectangle
    }))?;
    Ok(chart)
}

/// A chart with instances on the left axis and the backlog on the right, over time.
pub type InstancesAndBacklog<'a, 'b> = DualCoordChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<RangedCoordf64, RangedCoordf64>,
    Cartesian2d<RangedCoordf64, RangedCoordf64>,
>;

/// The backlog's colour in every timeline (pools take [`POOL_COLOURS`]).
pub const BACKLOG_COLOUR: RGBColor = RGBColor(110, 110, 110);

/// Draws the axes of an instances-and-backlog timeline (`x_max` in `x_unit`, `y_max`
/// instances on the left, `backlog_max` jobs on the right); returns the chart to draw on.
pub fn instances_and_backlog<'a, 'b>(
    area: &'a Area<'b>,
    (caption, caption_size): (&str, u32),
    (x_max, x_unit): (f64, &str),
    (y_max, y_desc): (f64, &str),
    backlog_max: f64,
) -> Result<InstancesAndBacklog<'a, 'b>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", caption_size))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .right_y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?
        .set_secondary_coord(0.0..x_max, 0.0..backlog_max);
    chart.configure_mesh().x_desc(x_unit).y_desc(y_desc).label_style(("sans-serif", 13)).draw()?;
    chart.configure_secondary_axes().y_desc("backlog (jobs)").label_style(("sans-serif", 13)).draw()?;
    Ok(chart)
}

/// One line of a [`timeline_png`]: `(seconds, value)` points.
pub struct Series {
    /// Its legend.
    pub label: String,
    /// Its points, in time order.
    pub points: Vec<(f64, f64)>,
}

/// Instances per pool (left axis, in [`POOL_COLOURS`] order, drawn as steps) and the backlog
/// (right axis, grey) over seconds, as a PNG at `path`: a hybrid run's timeline.
pub fn timeline_png(path: &Path, title: &str, pools: &[Series], backlog: &Series) -> Result<(), String> {
    let end = pools.iter().chain([backlog]).flat_map(|s| s.points.last()).map(|p| p.0).fold(1.0, f64::max);
    let top = |series: &[&Series]| series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(1.0, f64::max) * 1.15;
    let (pool_top, backlog_top) = (top(&pools.iter().collect::<Vec<_>>()), top(&[backlog]));
    save_png(path, (1000, 420), |root| {
        let mut chart =
            instances_and_backlog(root, (title, 20), (end, "seconds"), (pool_top, "instances"), backlog_top)?;
        chart
            .draw_secondary_series(LineSeries::new(backlog.points.iter().copied(), BACKLOG_COLOUR))?
            .label(backlog.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BACKLOG_COLOUR));
        // Lowest priority first and widest, so a private count equal to the public one still
        // shows on top of it.
        let coloured: Vec<_> = pools.iter().zip(POOL_COLOURS.iter().copied()).collect();
        for (rank, (series, colour)) in coloured.into_iter().enumerate().rev() {
            // Steps: an instance count holds until the next sample.
            let steps =
                series.points.windows(2).flat_map(|w| [w[0], (w[1].0, w[0].1)]).chain(series.points.last().copied());
            let width = 2 + 3 * rank as u32;
            chart
                .draw_series(LineSeries::new(steps, colour.stroke_width(width)))?
                .label(series.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        Ok(())
    })
}

/// Pool colours: the private pool first (blue), then the public one (red).
pub const POOL_COLOURS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];
