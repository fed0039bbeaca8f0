//! What the map figure ([`crate::figures::flood_map`]) is made of: the viridis colour ramp
//! of a probability, the hillshade of the terrain, an RGB image and its PNG writer.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::SummaryError;
use twinflow_exchange::PartialFile;

/// An RGB image.
#[derive(Debug, Clone, PartialEq)]
pub struct MapImage {
    /// Width, px.
    pub width: usize,
    /// Height, px.
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

/// [`hillshade`] of `bed` (`[y][x]`) on the grid of cell centres `x`, `y` (m, either order).
pub fn hillshade_grey(bed: &[f64], x: &[f64], y: &[f64]) -> Vec<f64> {
    let step = |c: &[f64]| if c.len() > 1 { (c[c.len() - 1] - c[0]) / (c.len() - 1) as f64 } else { 1.0 };
    hillshade(bed, x.len(), y.len(), step(x), step(y))
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
}
