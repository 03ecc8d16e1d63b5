//! The load benchmark's chart: CPU per forwarded packet and viewer-side loss against the
//! number of viewers, one line per server, as a PNG.

use plotters::prelude::*;
use plotters::style::FontStyle;

/// One server's measured points: (viewers, CPU µs per packet, loss %).
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64, f64)>,
}

/// The system font the labels are drawn with (Debian's fonts-dejavu-core).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub fn draw(path: &std::path::Path, title: &str, series: &[Series]) -> Result<(), String> {
    let font = std::fs::read(FONT).map_err(|e| format!("{FONT}: {e}"))?;
    // plotters keeps the font for the life of the process.
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into()))
        .map_err(|_| "the font does not parse".to_string())?;
    let root = BitMapBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(600);
    let max_n = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(10.0, f64::max);
    let colours = [RGBColor(0x1f, 0x77, 0xb4), RGBColor(0xd6, 0x27, 0x28)];
    for (area, caption, pick, unit) in [
        (&left, "server CPU per forwarded packet", 1usize, "µs"),
        (&right, "viewer-side loss", 2usize, "%"),
    ] {
        let value = |p: &(f64, f64, f64)| if pick == 1 { p.1 } else { p.2 };
        let max_y = series
            .iter()
            .flat_map(|s| s.points.iter().map(value))
            .fold(if pick == 1 { 10.0 } else { 1.0 }, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..max_n * 1.05, 0f64..max_y)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("viewers")
            .y_desc(unit)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        for (s, colour) in series.iter().zip(colours) {
            let points: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, value(p))).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 4, colour.filled())),
                )
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
