//! The exceedance map as a PNG: probability in a viridis-like colour ramp, blended over a
//! hillshade of the terrain, north up, with a colour bar (0 left, 1 right, ticks every
//! 0.25) underneath. No text: the NetCDF summary carries the numbers.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::SummaryError;
use twinflow_exchange::PartialFile;

/// Rows below the map: a 4-pixel gap and a 10-pixel colour bar.
pub const LEGEND_HEIGHT: usize = 14;

/// An RGB image.
#[derive(Debug, Clone, PartialEq)]
pub struct MapImage {
    /// Width, px.
    pub width: usize,
    /// Height, px (map rows + [`LEGEND_HEIGHT`]).
    pub height: usize,
    /// Row-major RGB bytes, top row first.
    pub rgb: Vec<u8>,
}

/// Anchors of the colour ramp at 0, 0.25, 0.5, 0.75, 1 (viridis: perceptually uniform,
/// readable by colour-blind viewers and in grey).
const RAMP: [[f64; 3]; 5] =
    [[68.0, 1.0, 84.0], [59.0, 82.0, 139.0], [33.0, 145.0, 140.0], [94.0, 201.0, 98.0], [253.0, 231.0, 37.0]];

/// Colour of a probability in [0, 1] (clamped).
pub fn colormap(p: f64) -> [u8; 3] {
    let x = p.clamp(0.0, 1.0) * (RAMP.len() - 1) as f64;
    let k = (x.floor() as usize).min(RAMP.len() - 2);
    let w = x - k as f64;
    let mut c = [0u8; 3];
    for (ch, out) in c.iter_mut().enumerate() {
        *out = (RAMP[k][ch] + w * (RAMP[k + 1][ch] - RAMP[k][ch])).round() as u8;
    }
    c
}

/// Grey level (0–1) of each cell: Lambertian hillshade (sun from the north-west, 45°
/// up) mixed with the normalised elevation, so valleys read darker than ridges.
fn hillshade(bed: &[f64], nx: usize, ny: usize, dx: f64, dy: f64) -> Vec<f64> {
    let (lo, hi) = bed.iter().filter(|z| z.is_finite()).fold((f64::MAX, f64::MIN), |(a, b), &z| (a.min(z), b.max(z)));
    let range = (hi - lo).max(1e-9);
    let z = |j: usize, i: usize| {
        let v = bed[j * nx + i];
        if v.is_finite() { v } else { lo }
    };
    let (az, alt) = (315f64.to_radians(), 45f64.to_radians());
    // Unit vector towards the sun: east, north, up. With signed spacings, `zx`/`zy` are
    // slopes towards east/north whatever the order of the rows.
    let sun = [az.sin() * alt.cos(), az.cos() * alt.cos(), alt.sin()];
    let mut out = Vec::with_capacity(nx * ny);
    for j in 0..ny {
        for i in 0..nx {
            let (il, ir) = (i.saturating_sub(1), (i + 1).min(nx - 1));
            let (jl, jr) = (j.saturating_sub(1), (j + 1).min(ny - 1));
            let zx = (z(j, ir) - z(j, il)) / (dx * (ir - il).max(1) as f64);
            let zy = (z(jr, i) - z(jl, i)) / (dy * (jr - jl).max(1) as f64);
            let norm = (zx * zx + zy * zy + 1.0).sqrt();
            let lambert = ((-zx * sun[0] - zy * sun[1] + sun[2]) / norm).max(0.0);
            let e = (z(j, i) - lo) / range;
            out.push((0.25 + 0.5 * lambert + 0.25 * e).clamp(0.0, 1.0));
        }
    }
    out
}

/// Renders `prob` (`[ny, nx]`, NaN = no data) over `bed` (same shape) with `scale` pixels
/// per cell. `(dx, dy)` are the signed coordinate steps; `y_ascending`: row 0 of the data
/// is the southernmost.
pub fn render(
    prob: &[f64],
    bed: Option<&[f64]>,
    (nx, ny): (usize, usize),
    (dx, dy): (f64, f64),
    y_ascending: bool,
    scale: usize,
) -> MapImage {
    let scale = scale.max(1);
    let (width, map_height) = (nx * scale, ny * scale);
    let height = map_height + LEGEND_HEIGHT;
    let shade = bed.map(|b| hillshade(b, nx, ny, dx, dy));
    let mut rgb = vec![255u8; width * height * 3];
    for r in 0..ny {
        // Image row 0 is north.
        let j = if y_ascending { ny - 1 - r } else { r };
        for i in 0..nx {
            let cell = j * nx + i;
            let grey = shade.as_ref().map_or(0.86, |s| s[cell]) * 255.0;
            let base = [grey; 3];
            let p = prob[cell];
            let colour = if p.is_nan() || p <= 0.0 {
                base
            } else {
                let c = colormap(p);
                let alpha = 0.45 + 0.5 * p.min(1.0);
                [0, 1, 2].map(|k| (1.0 - alpha) * base[k] + alpha * f64::from(c[k]))
            };
            let px = colour.map(|v| v.round().clamp(0.0, 255.0) as u8);
            for yy in r * scale..(r + 1) * scale {
                for xx in i * scale..(i + 1) * scale {
                    let o = (yy * width + xx) * 3;
                    rgb[o..o + 3].copy_from_slice(&px);
                }
            }
        }
    }
    // Colour bar with a black frame and ticks at 0, 0.25, 0.5, 0.75, 1.
    let top = map_height + 4;
    for yy in top..height {
        for xx in 0..width {
            let p = xx as f64 / (width.max(2) - 1) as f64;
            let frame = yy == top || yy == height - 1 || xx == 0 || xx == width - 1;
            let tick =
                yy >= height - 4 && [0.25, 0.5, 0.75].iter().any(|t| xx == (t * (width - 1) as f64).round() as usize);
            let px = if frame || tick { [0, 0, 0] } else { colormap(p) };
            let o = (yy * width + xx) * 3;
            rgb[o..o + 3].copy_from_slice(&px);
        }
    }
    MapImage { width, height, rgb }
}

/// Writes the image as an 8-bit RGB PNG (under `<path>.partial`, then renamed).
pub fn write_png(path: &Path, image: &MapImage) -> Result<PathBuf, SummaryError> {
    let partial = PartialFile::new(path)?;
    let p = partial.partial_path().to_path_buf();
    let file =
        std::fs::File::create(&p).map_err(|source| SummaryError::Io { path: p.clone(), action: "create", source })?;
    let png_err = |source| SummaryError::Png { path: p.clone(), source };
    let (w, h) = (u32::try_from(image.width), u32::try_from(image.height));
    let (Ok(w), Ok(h)) = (w, h) else {
        return Err(SummaryError::Request(format!("the map is too large ({} × {} px)", image.width, image.height)));
    };
    let mut encoder = png::Encoder::new(BufWriter::new(file), w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(png_err)?;
    writer.write_image_data(&image.rgb).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    Ok(partial.commit()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_ends_are_viridis_and_clamped() {
        assert_eq!(colormap(0.0), [68, 1, 84]);
        assert_eq!(colormap(1.0), [253, 231, 37]);
        assert_eq!(colormap(7.0), colormap(1.0));
        assert_eq!(colormap(0.5), [33, 145, 140]);
    }

    #[test]
    fn north_is_up_and_the_legend_is_below() {
        // 2 × 2 cells; only the northern-eastern cell (row 1, ascending y) is flooded.
        let prob = [0.0, 0.0, 0.0, 1.0];
        let img = render(&prob, None, (2, 2), (1.0, 1.0), true, 3);
        assert_eq!((img.width, img.height), (6, 6 + LEGEND_HEIGHT));
        let at = |x: usize, y: usize| &img.rgb[(y * img.width + x) * 3..(y * img.width + x) * 3 + 3];
        assert_ne!(at(4, 0), at(4, 4), "top-right is flooded, bottom-right is not");
        assert_eq!(at(0, 0), at(0, 4));
    }
}
