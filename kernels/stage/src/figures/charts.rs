//! Line charts of the twins' scores, the detector's resolution and bias, and the training
//! curves of a sweep; the ranked trials as a Markdown table.

use plotters::prelude::*;

use super::FigureError;
use super::font::{SANS, ensure};
use crate::summary::MapImage;

/// One line of a chart: a name, its points, how it is drawn.
#[derive(Debug, Clone)]
pub struct Line {
    /// Legend text.
    pub name: String,
    /// Points (x, y); non-finite ones are left out.
    pub points: Vec<(f64, f64)>,
    /// Colour index into the palette.
    pub colour: usize,
    /// Dashed (a reference, a fit) rather than solid.
    pub dashed: bool,
    /// Markers at the points.
    pub markers: bool,
    /// Drawn thicker (the chosen trial).
    pub bold: bool,
}

impl Line {
    /// A solid line with markers.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>, colour: usize) -> Self {
        Line { name: name.into(), points, colour, dashed: false, markers: true, bold: false }
    }
}

/// One panel: a title, axis descriptions (with units) and its lines.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title above the panel.
    pub title: String,
    /// x axis description.
    pub x_desc: String,
    /// y axis description.
    pub y_desc: String,
    /// Lines.
    pub lines: Vec<Line>,
    /// A logarithmic y axis (losses).
    pub log_y: bool,
    /// The y range starts at 0 (errors, spreads) instead of the data's minimum.
    pub from_zero: bool,
}

/// Colour-blind-safe palette (Okabe & Ito 2008).
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(0, 0, 0),
];

fn colour(k: usize) -> RGBColor {
    PALETTE[k % PALETTE.len()]
}

/// Panels side by side (at most two per row), under a title.
pub fn line_panels(title: &str, panels: &[Panel]) -> Result<MapImage, FigureError> {
    if panels.is_empty()
        || panels
            .iter()
            .any(|p| p.lines.iter().all(|l| l.points.iter().all(|(x, y)| !(x.is_finite() && y.is_finite()))))
    {
        return Err(FigureError::Data(format!("`{title}`: a panel has no finite points to draw")));
    }
    ensure();
    let cols = panels.len().min(2);
    let rows = panels.len().div_ceil(cols);
    let (pw, ph, top) = (600u32, 380u32, 40u32);
    let (width, height) = (pw * cols as u32, ph * rows as u32 + top);
    let mut rgb = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, (SANS, 20))?;
        for (panel, area) in panels.iter().zip(root.split_evenly((rows, cols))) {
            let finite = || {
                panel
                    .lines
                    .iter()
                    .flat_map(|l| l.points.iter())
                    .filter(|(x, y)| x.is_finite() && y.is_finite() && (!panel.log_y || *y > 0.0))
            };
            let (x0, x1) = finite().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| (a.min(*x), b.max(*x)));
            let (y0, y1) = finite().fold((f64::MAX, f64::MIN), |(a, b), (_, y)| (a.min(*y), b.max(*y)));
            let (x0, x1) = if x1 > x0 { (x0, x1) } else { (x0 - 1.0, x0 + 1.0) };
            let pad = |a: f64, b: f64| if b > a { (b - a) * 0.08 } else { a.abs().max(1.0) * 0.1 };
            let mut chart = ChartBuilder::on(&area);
            chart
                .caption(&panel.title, (SANS, 16))
                .margin(10)
                .margin_right(24)
                .x_label_area_size(42)
                .y_label_area_size(70);
            // The same axis styling for both coordinate types (a closure cannot be generic).
            macro_rules! style {
                ($mesh:expr) => {
                    $mesh
                        .x_desc(panel.x_desc.as_str())
                        .y_desc(panel.y_desc.as_str())
                        .label_style((SANS, 12))
                        .axis_desc_style((SANS, 13))
                        .light_line_style(RGBColor(236, 236, 236))
                };
            }
            if panel.log_y {
                let (lo, hi) = (y0 / 1.5, y1 * 1.5);
                let mut c = chart.build_cartesian_2d(x0..x1, (lo..hi).log_scale())?;
                style!(c.configure_mesh()).draw()?;
                draw_lines(&mut c, &panel.lines)?;
                legend(&mut c)?;
            } else {
                let lo = if panel.from_zero { 0.0f64.min(y0) } else { y0 - pad(y0, y1) };
                // Room above the data for the legend (about 5 % of the height per entry), so
                // it does not hide the lines.
                let entries = panel.lines.iter().filter(|l| !l.points.is_empty()).count() as f64;
                let hi = y1 + pad(y0, y1);
                let hi = hi + (hi - lo) * 0.05 * entries;
                let mut c = chart.build_cartesian_2d(x0..x1, lo..hi)?;
                style!(c.configure_mesh()).y_label_formatter(&|v| format_tick(*v)).draw()?;
                draw_lines(&mut c, &panel.lines)?;
                legend(&mut c)?;
            }
        }
        root.present().map_err(|e| FigureError::Draw(e.to_string()))?;
    }
    Ok(MapImage { width: width as usize, height: height as usize, rgb })
}

/// `0.05`, `1.2`, `350`: few digits, no trailing zeros.
fn format_tick(v: f64) -> String {
    let a = v.abs();
    let s = if a == 0.0 {
        "0".to_string()
    } else if a < 0.01 {
        format!("{v:.1e}")
    } else if a < 1.0 {
        format!("{v:.3}")
    } else if a < 100.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    };
    if s.contains('.') && !s.contains('e') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

fn draw_lines<'a, DB, X, Y>(c: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>, lines: &[Line]) -> Result<(), FigureError>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for l in lines {
        let c0 = colour(l.colour);
        let width = if l.bold { 3 } else { 2 };
        let pts: Vec<(f64, f64)> = l.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        let style = c0.stroke_width(width);
        let series = if l.dashed {
            c.draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style))?
        } else {
            c.draw_series(LineSeries::new(pts.clone(), style))?
        };
        let dashed = l.dashed;
        series.label(l.name.clone()).legend(move |(x, y)| {
            if dashed {
                PathElement::new(vec![(x, y), (x + 6, y)], c0.stroke_width(width))
            } else {
                PathElement::new(vec![(x, y), (x + 16, y)], c0.stroke_width(width))
            }
        });
        if l.markers {
            c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c0.filled())))?;
        }
    }
    Ok(())
}

fn legend<'a, DB, X, Y>(c: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>) -> Result<(), FigureError>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font((SANS, 12))
        .draw()?;
    Ok(())
}

/// Least-squares fit of a sampling calorimeter's resolution σ/E = a/√E ⊕ b (in quadrature)
/// to points (E, σ/E): linear in (a², b²) as (σ/E)² = a²/E + b². Negative squares are
/// clamped to 0. `None` with fewer than two energies.
pub fn fit_resolution(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let pts: Vec<(f64, f64)> = points.iter().copied().filter(|(e, s)| *e > 0.0 && s.is_finite()).collect();
    if pts.len() < 2 {
        return None;
    }
    // Normal equations of y = A u + B with u = 1/E, y = (σ/E)².
    let n = pts.len() as f64;
    let (mut su, mut sy, mut suu, mut suy) = (0.0, 0.0, 0.0, 0.0);
    for (e, s) in &pts {
        let (u, y) = (1.0 / e, s * s);
        su += u;
        sy += y;
        suu += u * u;
        suy += u * y;
    }
    let det = n * suu - su * su;
    if det.abs() < 1e-300 {
        return None;
    }
    let a2 = (n * suy - su * sy) / det;
    let b2 = (sy - a2 * su) / n;
    Some((a2.max(0.0).sqrt(), b2.max(0.0).sqrt()))
}

/// The ranked trials of a sweep (`ranked.csv` of `twin-kernel select`) as a Markdown table,
/// the chosen trial (rank 1) in bold and marked.
pub fn ranked_markdown(csv_text: &str, columns: &[&str]) -> Result<String, FigureError> {
    let mut r = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = r.headers().map_err(|e| FigureError::Data(format!("ranked table: {e}")))?.clone();
    let idx: Vec<(usize, &str)> =
        columns.iter().filter_map(|c| headers.iter().position(|h| h == *c).map(|i| (i, *c))).collect();
    if idx.is_empty() {
        return Err(FigureError::Data(format!("ranked table: none of the columns {columns:?}")));
    }
    let mut out = format!(
        "| {} |\n|{}\n",
        idx.iter().map(|(_, c)| *c).collect::<Vec<_>>().join(" | "),
        " --- |".repeat(idx.len())
    );
    for (k, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| FigureError::Data(format!("ranked table, row {}: {e}", k + 2)))?;
        let cells: Vec<String> = idx
            .iter()
            .map(|(i, _)| {
                let v = rec.get(*i).unwrap_or("");
                let v = v.parse::<f64>().ok().filter(|_| v.contains(['.', 'e'])).map_or(v.to_string(), format_tick);
                if k == 0 { format!("**{v}**") } else { v }
            })
            .collect();
        let mark = if k == 0 { " ← chosen" } else { "" };
        out.push_str(&format!("| {} |{mark}\n", cells.join(" | ")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resolution_fit_recovers_a_and_b() {
        // ATLAS-like a = 10 %·√GeV, b = 0.7 % (the sampling-calorimeter reference).
        let pts: Vec<(f64, f64)> = [5.0, 10.0, 20.0, 50.0, 100.0]
            .iter()
            .map(|&e: &f64| (e, ((0.1f64 / e.sqrt()).powi(2) + 0.007f64.powi(2)).sqrt()))
            .collect();
        let (a, b) = fit_resolution(&pts).unwrap();
        assert!((a - 0.1).abs() < 1e-9 && (b - 0.007).abs() < 1e-9, "{a} {b}");
        assert!(fit_resolution(&pts[..1]).is_none());
    }

    #[test]
    fn panels_draw_lines_axes_and_legends() {
        let p = Panel {
            title: "depth RMSE over wet cells".into(),
            x_desc: "cycle time (s)".into(),
            y_desc: "RMSE (m)".into(),
            lines: vec![
                Line::new("forecast", (1..7).map(|k| (600.0 * k as f64, 0.2 / k as f64)).collect(), 0),
                Line { dashed: true, ..Line::new("open loop", (1..7).map(|k| (600.0 * k as f64, 0.2)).collect(), 1) },
            ],
            log_y: false,
            from_zero: true,
        };
        let log = Panel { log_y: true, title: "loss".into(), ..p.clone() };
        let img = line_panels("scores", &[p, log]).unwrap();
        assert_eq!((img.width, img.height), (1200, 420));
        let px = |x: usize, y: usize| &img.rgb[(y * img.width + x) * 3..(y * img.width + x) * 3 + 3];
        let count = |c: [u8; 3]| {
            (0..img.height).flat_map(|y| (0..img.width).map(move |x| (x, y))).filter(|&(x, y)| px(x, y) == c).count()
        };
        // Both palette colours are drawn (lines, markers, legend), in both panels.
        assert!(count([0, 114, 178]) > 300 && count([213, 94, 0]) > 150);
        // Text (title, ticks, descriptions) is drawn in black somewhere in each half.
        let dark = |xs: std::ops::Range<usize>| {
            (0..img.height)
                .flat_map(|y| xs.clone().map(move |x| (x, y)))
                .filter(|&(x, y)| px(x, y).iter().all(|&v| v < 80))
                .count()
        };
        assert!(dark(0..600) > 500 && dark(600..1200) > 500);
        let empty = Panel { lines: vec![Line::new("none", vec![(f64::NAN, 1.0)], 0)], ..Panel::clone(&log_panel()) };
        assert!(matches!(line_panels("x", &[empty]), Err(FigureError::Data(_))));
    }

    fn log_panel() -> Panel {
        Panel {
            title: "t".into(),
            x_desc: "x".into(),
            y_desc: "y".into(),
            lines: vec![],
            log_y: true,
            from_zero: false,
        }
    }

    #[test]
    fn the_ranked_table_marks_the_chosen_trial() {
        let csv = "rank,trial,val_rmse,depth\n1,3,1.8773682490147754e0,2\n2,0,2.5e0,1\n";
        let md = ranked_markdown(csv, &["rank", "trial", "val_rmse", "depth", "missing"]).unwrap();
        assert_eq!(
            md,
            "| rank | trial | val_rmse | depth |\n| --- | --- | --- | --- |\n| **1** | **3** | **1.88** | **2** | ← chosen\n| 2 | 0 | 2.5 | 1 |\n"
        );
    }
}
