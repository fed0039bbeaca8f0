//! Flood figures: the exceedance map and the gauge hydrographs.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::FigureError;
use super::font::{SANS, ensure};
use crate::summary::{MapImage, colormap, percentile_sorted};

/// What [`flood_map`] draws.
#[derive(Debug, Clone)]
pub struct FloodMap<'a> {
    /// Cell centres along x (m), ascending or descending.
    pub x: &'a [f64],
    /// Cell centres along y (m), ascending or descending.
    pub y: &'a [f64],
    /// The field, `[y][x]`, in [0, 1] (NaN or ≤ 0: not drawn over the terrain).
    pub field: &'a [f64],
    /// Bed elevation `[y][x]` (m) for the hillshade, when known.
    pub bed: Option<&'a [f64]>,
    /// Title above the map.
    pub title: String,
    /// Label of the colour bar (what the colours mean, with units).
    pub colour_label: String,
    /// Gauges: name, x, y (m).
    pub gauges: Vec<(String, f64, f64)>,
}

/// Width of the colour bar's column, px.
const BAR_COLUMN: u32 = 150;

fn draw_err<E: std::fmt::Display>(e: E) -> FigureError {
    FigureError::Draw(e.to_string())
}

/// Half a cell beyond the first and last centres: the extent the cells cover.
fn extent(c: &[f64]) -> (f64, f64, f64) {
    let step = if c.len() > 1 { (c[c.len() - 1] - c[0]) / (c.len() - 1) as f64 } else { 1.0 };
    let step = if step == 0.0 { 1.0 } else { step };
    let (a, b) = (c[0] - step / 2.0, c[c.len() - 1] + step / 2.0);
    (a.min(b), a.max(b), step.abs())
}

/// The exceedance map: the field over a hillshade of the terrain, north up, x and y in
/// metres, a colour bar from 0 to 1 with ticks, the gauges as circles with their names.
pub fn flood_map(m: &FloodMap<'_>) -> Result<MapImage, FigureError> {
    let (nx, ny) = (m.x.len(), m.y.len());
    if nx == 0 || ny == 0 || m.field.len() != nx * ny || m.bed.is_some_and(|b| b.len() != nx * ny) {
        return Err(FigureError::Data(format!(
            "the map needs a field of {ny} × {nx} cells (and a terrain of the same shape), found {}",
            m.field.len()
        )));
    }
    ensure();
    let (x0, x1, dx) = extent(m.x);
    let (y0, y1, dy) = extent(m.y);
    // About 720 px for the longer side of the map, the shorter in proportion.
    let long = 720.0;
    let (pw, ph) = if (x1 - x0) >= (y1 - y0) {
        (long, (long * (y1 - y0) / (x1 - x0)).max(160.0))
    } else {
        ((long * (x1 - x0) / (y1 - y0)).max(160.0), long)
    };
    let (left, top, bottom) = (80u32, 50u32, 60u32);
    let width = pw as u32 + left + 20 + BAR_COLUMN;
    let height = ph as u32 + top + bottom;
    let mut rgb = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let (main, bar) = root.split_horizontally(width - BAR_COLUMN);
        let mut chart = ChartBuilder::on(&main)
            .caption(&m.title, (SANS, 20))
            .margin(10)
            .x_label_area_size(45)
            .y_label_area_size(left - 10)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("x (m)")
            .y_desc("y (m)")
            .label_style((SANS, 13))
            .axis_desc_style((SANS, 14))
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()?;
        let shade = m.bed.map(|b| crate::summary::hillshade_grey(b, m.x, m.y));
        let cells = (0..ny).flat_map(|j| (0..nx).map(move |i| (i, j)));
        chart.draw_series(cells.map(|(i, j)| {
            let cell = j * nx + i;
            let grey = shade.as_ref().map_or(0.86, |s| s[cell]) * 255.0;
            let p = m.field[cell];
            let c = if p.is_nan() || p <= 0.0 {
                [grey; 3]
            } else {
                let c = colormap(p);
                let alpha = 0.45 + 0.5 * p.min(1.0);
                [0, 1, 2].map(|k| (1.0 - alpha) * grey + alpha * f64::from(c[k]))
            };
            let [r, g, b] = c.map(|v| v.round().clamp(0.0, 255.0) as u8);
            let (x, y) = (m.x[i], m.y[j]);
            Rectangle::new([(x - dx / 2.0, y - dy / 2.0), (x + dx / 2.0, y + dy / 2.0)], RGBColor(r, g, b).filled())
        }))?;
        for (name, x, y) in &m.gauges {
            if !(x.is_finite() && y.is_finite()) {
                continue;
            }
            let marker = EmptyElement::at((*x, *y))
                + Circle::new((0, 0), 6, WHITE.filled())
                + Circle::new((0, 0), 6, BLACK.stroke_width(2))
                + Text::new(name.clone(), (9, -16), (SANS, 14).into_font().color(&BLACK));
            chart.draw_series(std::iter::once(marker))?;
        }
        colour_bar(&bar, &m.colour_label, top, bottom)?;
        root.present().map_err(draw_err)?;
    }
    Ok(MapImage { width: width as usize, height: height as usize, rgb })
}

/// A vertical colour bar from 0 (bottom) to 1 (top), ticks every 0.25, labelled.
fn colour_bar(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    label: &str,
    top: u32,
    bottom: u32,
) -> Result<(), FigureError> {
    let mut bar = ChartBuilder::on(area)
        .margin_top(top - 10)
        .margin_bottom(bottom - 45)
        .margin_left(12)
        .margin_right(70)
        .x_label_area_size(45)
        .y_label_area_size(0)
        .right_y_label_area_size(40)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
    bar.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_formatter(&|v| format!("{v:.1}"))
        .label_style((SANS, 13))
        .draw()?;
    let steps = 100;
    bar.draw_series((0..steps).map(|k| {
        let (a, b) = (k as f64 / steps as f64, (k + 1) as f64 / steps as f64);
        let [r, g, bl] = colormap((a + b) / 2.0);
        Rectangle::new([(0.0, a), (1.0, b)], RGBColor(r, g, bl).filled())
    }))?;
    bar.draw_series(std::iter::once(Rectangle::new([(0.0, 0.0), (1.0, 1.0)], BLACK.stroke_width(1))))?;
    // The label under the bar (a colour bar's title), wrapped at spaces to the column.
    let (w, h) = area.dim_in_pixel();
    let mut lines: Vec<String> = vec![];
    for word in label.split_whitespace() {
        match lines.last_mut() {
            Some(l) if l.len() + word.len() < 18 => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    for (k, l) in lines.iter().enumerate() {
        let y = h as i32 - bottom as i32 + 22 + 16 * k as i32 - 16 * (lines.len() as i32 - 1);
        area.draw(&Text::new(l.clone(), (8, y.min(h as i32 - 16)), (SANS, 13).into_font().color(&BLACK)))?;
    }
    let _ = w;
    Ok(())
}

/// A time series (observations, the truth).
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Times (s).
    pub time: Vec<f64>,
    /// Values (m); NaN: missing.
    pub values: Vec<f64>,
}

/// What [`hydrographs`] draws.
#[derive(Debug, Clone)]
pub struct GaugeSeriesPlot<'a> {
    /// Gauge names.
    pub names: &'a [String],
    /// Times of the ensemble's samples (s).
    pub time: &'a [f64],
    /// Depths `[member][station][time]` (m; NaN: missing).
    pub depth: &'a [f64],
    /// Members.
    pub members: usize,
    /// Observations per gauge, when there are any.
    pub observed: Vec<Option<Series>>,
    /// The truth per gauge (a nature run), when known.
    pub truth: Vec<Option<Series>>,
    /// Title of the figure.
    pub title: String,
}

/// Each gauge's depth over time: the ensemble median and its 5–95 % band, observations as
/// points and the truth as a line when given; one panel per gauge, two columns.
pub fn hydrographs(p: &GaugeSeriesPlot<'_>) -> Result<MapImage, FigureError> {
    let (ns, nt) = (p.names.len(), p.time.len());
    if ns == 0 || nt == 0 || p.members == 0 || p.depth.len() != p.members * ns * nt {
        return Err(FigureError::Data(format!(
            "hydrographs need depths of {} members × {ns} gauges × {nt} times, found {} values",
            p.members,
            p.depth.len()
        )));
    }
    ensure();
    let cols = ns.min(2);
    let rows = ns.div_ceil(cols);
    let (pw, ph, top) = (560u32, 300u32, 40u32);
    let (width, height) = (pw * cols as u32, ph * rows as u32 + top);
    let mut rgb = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(&p.title, (SANS, 20))?;
        let panels = root.split_evenly((rows, cols));
        let band_colour = RGBColor(59, 82, 139);
        for (s, panel) in panels.iter().enumerate().take(ns) {
            let mut lo = vec![f64::NAN; nt];
            let (mut mid, mut hi) = (lo.clone(), lo.clone());
            for t in 0..nt {
                let mut v: Vec<f64> =
                    (0..p.members).map(|m| p.depth[(m * ns + s) * nt + t]).filter(|v| v.is_finite()).collect();
                if v.is_empty() {
                    continue;
                }
                v.sort_by(f64::total_cmp);
                (lo[t], mid[t], hi[t]) =
                    (percentile_sorted(&v, 0.05), percentile_sorted(&v, 0.5), percentile_sorted(&v, 0.95));
            }
            let extra = |o: &Option<Series>| o.as_ref().map(|s| s.values.clone()).unwrap_or_default();
            let ymax = hi
                .iter()
                .chain(extra(&p.observed.get(s).cloned().flatten()).iter())
                .chain(extra(&p.truth.get(s).cloned().flatten()).iter())
                .filter(|v| v.is_finite())
                .fold(0.0f64, |a, &b| a.max(b));
            let ymax = if ymax > 0.0 { ymax * 1.1 } else { 1.0 };
            let (t0, t1) = (p.time[0], p.time[nt - 1].max(p.time[0] + 1.0));
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("gauge {}", p.names[s]), (SANS, 16))
                .margin(8)
                .margin_right(24)
                .x_label_area_size(40)
                .y_label_area_size(55)
                .build_cartesian_2d(t0..t1, 0.0..ymax)?;
            chart
                .configure_mesh()
                .x_desc("time (s)")
                .y_desc("depth (m)")
                .label_style((SANS, 12))
                .axis_desc_style((SANS, 13))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()?;
            let band: Vec<(f64, f64)> = (0..nt)
                .filter(|&t| hi[t].is_finite())
                .map(|t| (p.time[t], hi[t]))
                .chain((0..nt).rev().filter(|&t| lo[t].is_finite()).map(|t| (p.time[t], lo[t])))
                .collect();
            chart
                .draw_series(std::iter::once(Polygon::new(band, band_colour.mix(0.25).filled())))?
                .label(format!("5–95 % of {} members", p.members))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], band_colour.mix(0.25).filled()));
            let median: Vec<(f64, f64)> =
                (0..nt).filter(|&t| mid[t].is_finite()).map(|t| (p.time[t], mid[t])).collect();
            chart
                .draw_series(LineSeries::new(median, band_colour.stroke_width(2)))?
                .label("ensemble median")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], band_colour.stroke_width(2)));
            if let Some(Some(truth)) = p.truth.get(s) {
                let line: Vec<(f64, f64)> = truth
                    .time
                    .iter()
                    .zip(&truth.values)
                    .filter(|(t, v)| v.is_finite() && (t0..=t1).contains(*t))
                    .map(|(t, v)| (*t, *v))
                    .collect();
                chart
                    .draw_series(LineSeries::new(line, BLACK.stroke_width(1)))?
                    .label("truth")
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(1)));
            }
            if let Some(Some(obs)) = p.observed.get(s) {
                let red = RGBColor(200, 30, 30);
                let points: Vec<(f64, f64)> = obs
                    .time
                    .iter()
                    .zip(&obs.values)
                    .filter(|(t, v)| v.is_finite() && (t0..=t1).contains(*t))
                    .map(|(t, v)| (*t, *v))
                    .collect();
                chart
                    .draw_series(points.into_iter().map(|c| Circle::new(c, 3, red.filled())))?
                    .label("observed")
                    .legend(move |(x, y)| Circle::new((x + 8, y), 3, red.filled()));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .label_font((SANS, 12))
                .draw()?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(MapImage { width: width as usize, height: height as usize, rgb })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn px(img: &MapImage, x: usize, y: usize) -> [u8; 3] {
        let o = (y * img.width + x) * 3;
        [img.rgb[o], img.rgb[o + 1], img.rgb[o + 2]]
    }

    /// Keeps the figure under the target directory for a look (`target/figures-test/`).
    fn keep(img: &MapImage, name: &str) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/figures-test");
        std::fs::create_dir_all(&dir).unwrap();
        crate::summary::write_png(&dir.join(name), img).unwrap();
    }

    fn dark(c: [u8; 3]) -> bool {
        c.iter().all(|&v| v < 90)
    }

    /// Dark pixels in a rectangle of the image.
    fn dark_in(img: &MapImage, xs: std::ops::Range<usize>, ys: std::ops::Range<usize>) -> usize {
        ys.flat_map(|y| xs.clone().map(move |x| (x, y))).filter(|&(x, y)| dark(px(img, x, y))).count()
    }

    fn valley() -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (nx, ny) = (40, 20);
        let x: Vec<f64> = (0..nx).map(|i| 5.0 + 10.0 * i as f64).collect();
        let y: Vec<f64> = (0..ny).map(|j| 5.0 + 10.0 * j as f64).collect();
        let bed: Vec<f64> = (0..nx * ny).map(|c| ((c / nx) as f64 - 10.0).abs()).collect();
        // Flooded in the valley floor (rows 8..12), probability rising to the east.
        let field: Vec<f64> =
            (0..nx * ny).map(|c| if (8..12).contains(&(c / nx)) { (c % nx) as f64 / nx as f64 } else { 0.0 }).collect();
        (x, y, bed, field)
    }

    #[test]
    fn the_map_has_axes_a_title_a_colour_bar_and_labelled_gauges() {
        let (x, y, bed, field) = valley();
        let m = FloodMap {
            x: &x,
            y: &y,
            field: &field,
            bed: Some(&bed),
            title: "P(max depth > 2.0 m), 8 members".into(),
            colour_label: "exceedance probability".into(),
            gauges: vec![("upstream".into(), 55.0, 105.0), ("bridge".into(), 305.0, 105.0)],
        };
        let img = flood_map(&m).unwrap();
        keep(&img, "flood_map.png");
        // 400 m × 200 m: 720 px wide map area, about 360 px high, plus margins and the bar.
        assert_eq!(img.width, 720 + 80 + 20 + BAR_COLUMN as usize);
        assert!((400..480).contains(&img.height), "{}", img.height);
        // Not one colour: the terrain, the flood colours, white margins, black text.
        let distinct: std::collections::HashSet<[u8; 3]> = (0..img.height)
            .step_by(3)
            .flat_map(|y| (0..img.width).step_by(3).map(move |x| (x, y)))
            .map(|(x, y)| px(&img, x, y))
            .collect();
        assert!(distinct.len() > 50, "{} colours", distinct.len());
        // Title text across the top, centred.
        assert!(dark_in(&img, img.width / 4..img.width * 3 / 4, 0..40) > 100, "no title");
        // The x axis: a dark line under the map spanning most of the width.
        let axis_row = (img.height - 120..img.height - 30).find(|&y| dark_in(&img, 150..700, y..y + 1) > 500);
        assert!(axis_row.is_some(), "no x axis line");
        // Tick labels and the axis description below it.
        let axis_row = axis_row.unwrap();
        assert!(dark_in(&img, 80..800, axis_row + 3..img.height) > 200, "no x tick labels / description");
        // y tick labels and description at the left.
        assert!(dark_in(&img, 0..75, 60..img.height - 80) > 60, "no y labels");
        // The colour bar: viridis yellow near its top, purple near its bottom.
        let bar: Vec<usize> = (img.width - BAR_COLUMN as usize..img.width)
            .filter(|&x| (0..img.height).any(|y| px(&img, x, y) == colormap(0.995)))
            .collect();
        assert!(bar.len() >= 15, "no colour bar");
        let low = (0..img.height).rev().find(|&y| px(&img, bar[5], y) == colormap(0.005));
        let high = (0..img.height).find(|&y| px(&img, bar[5], y) == colormap(0.995));
        assert!(low.unwrap() > high.unwrap() + 200, "1 at the top, 0 at the bottom");
        // Its tick labels (0.0 … 1.0) to its right, past its frame.
        let right = bar.last().unwrap() + 4;
        assert!(dark_in(&img, right..img.width, 30..img.height - 50) > 40, "no colour-bar ticks");
        // A gauge marker: white fill ringed in black at the gauge's place on the map.
        assert!(dark_in(&img, 80..800, 40..img.height - 60) > 100);
    }

    #[test]
    fn hydrographs_show_the_band_the_median_and_the_observations() {
        let (members, ns, nt) = (10, 3, 50);
        let time: Vec<f64> = (0..nt).map(|t| 60.0 * t as f64).collect();
        let depth: Vec<f64> = (0..members * ns * nt)
            .map(|k| {
                let (m, t) = (k / (ns * nt), k % nt);
                (t as f64 / 10.0).sin().max(0.0) * (1.0 + 0.1 * m as f64)
            })
            .collect();
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let obs =
            Series { time: time.clone(), values: time.iter().map(|t| (t / 600.0).sin().max(0.0) * 1.3).collect() };
        let p = GaugeSeriesPlot {
            names: &names,
            time: &time,
            depth: &depth,
            members,
            observed: vec![Some(obs), None, None],
            truth: vec![None, None, None],
            title: "gauge hydrographs".into(),
        };
        let img = hydrographs(&p).unwrap();
        keep(&img, "hydrographs.png");
        assert_eq!((img.width, img.height), (1120, 2 * 300 + 40));
        // The band colour (25 % of the blue over white) and the red observations appear.
        let all: Vec<[u8; 3]> =
            (0..img.height).flat_map(|y| (0..img.width).map(move |x| (x, y))).map(|(x, y)| px(&img, x, y)).collect();
        assert!(
            all.iter().filter(|c| u16::from(c[2]) > u16::from(c[0]) + 10 && (180..235).contains(&c[0])).count() > 2000,
            "no 5-95 % band"
        );
        assert!(all.iter().filter(|c| c[0] > 180 && c[1] < 60 && c[2] < 60).count() > 50, "no observations");
        // The fourth panel (no fourth gauge) stays empty.
        assert_eq!(dark_in(&img, 600..1100, 380..620), 0);
        // Wrong sizes are an error, not a panic.
        let bad = GaugeSeriesPlot { members: 11, ..p };
        assert!(matches!(hydrographs(&bad), Err(FigureError::Data(_))));
    }
}
