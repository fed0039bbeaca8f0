//! `stage regrid`: bilinear interpolation onto the `x`/`y` grid of another file.
//!
//! For a target point `(x, y)` between source centres `x_i ≤ x ≤ x_{i+1}` and
//! `y_j ≤ y ≤ y_{j+1}`, with `wx = (x − x_i)/(x_{i+1} − x_i)` and `wy` likewise,
//!
//! ```text
//! f(x, y) = (1−wx)(1−wy) f_ij + wx(1−wy) f_i+1,j + (1−wx) wy f_i,j+1 + wx wy f_i+1,j+1
//! ```
//!
//! which reproduces any field linear in x and y exactly (the test). Coordinates may be
//! ascending or descending and unevenly spaced. Target points up to half a source cell
//! outside the outermost centres (still inside the source's cells) take the edge value
//! along that axis; points farther out, and points whose interpolation touches a missing
//! value, get the fill value. Every variable whose last two dimensions are `(y, x)` is
//! interpolated (stored as `f64` from then on), record by record; the others are copied.

use std::path::{Path, PathBuf};

use twinflow_contract::{cf, datasets};

use super::StageError;
use twinflow_exchange::{Attr, Compression, DType, Dataset, ExchangeError, Values, read_dataset, write_dataset};

/// Where a target coordinate falls on a source axis: the two neighbours and the weight of
/// the second.
type Stencil = Option<(usize, usize, f64)>;

/// Locates `p` on the monotonic `axis` (see the module docs for the edge rule).
fn locate(axis: &[f64], p: f64) -> Stencil {
    let n = axis.len();
    if n == 0 || !p.is_finite() {
        return None;
    }
    if n == 1 {
        return Some((0, 0, 0.0));
    }
    let descending = axis[n - 1] < axis[0];
    // Work on the ascending view; map indices back at the end.
    let at = |k: usize| if descending { axis[n - 1 - k] } else { axis[k] };
    let (lo, hi) = (at(0), at(n - 1));
    let (half_lo, half_hi) = (0.5 * (at(1) - at(0)), 0.5 * (at(n - 1) - at(n - 2)));
    let tol = 1e-9 * (hi - lo).abs().max(1.0);
    if p < lo - half_lo - tol || p > hi + half_hi + tol {
        return None;
    }
    let q = p.clamp(lo, hi);
    // First k with at(k + 1) ≥ q.
    let (mut a, mut b) = (0, n - 1);
    while b - a > 1 {
        let mid = (a + b) / 2;
        if at(mid) <= q { a = mid } else { b = mid }
    }
    let w = ((q - at(a)) / (at(b) - at(a))).clamp(0.0, 1.0);
    let back = |k: usize| if descending { n - 1 - k } else { k };
    Some((back(a), back(b), w))
}

/// Interpolates one `[ny, nx]` field (NaN = missing) at the target stencils.
fn interpolate(src: &[f64], nx: usize, sx: &[Stencil], sy: &[Stencil]) -> Vec<f64> {
    let mut out = Vec::with_capacity(sx.len() * sy.len());
    for ty in sy {
        for tx in sx {
            let v = match (ty, tx) {
                (Some((j0, j1, wy)), Some((i0, i1, wx))) => {
                    let mut acc = 0.0;
                    for (j, wj) in [(*j0, 1.0 - wy), (*j1, *wy)] {
                        for (i, wi) in [(*i0, 1.0 - wx), (*i1, *wx)] {
                            let w = wj * wi;
                            if w != 0.0 {
                                acc += w * src[j * nx + i];
                            }
                        }
                    }
                    acc
                }
                _ => f64::NAN,
            };
            out.push(v);
        }
    }
    out
}

fn grid_of<'a>(data: &'a Dataset, path: &Path) -> Result<(&'a [f64], &'a [f64]), StageError> {
    match (data.coordinate(datasets::X), data.coordinate(datasets::Y)) {
        (Some(x), Some(y)) => Ok((x, y)),
        _ => Err(StageError::Exchange(ExchangeError::Layout {
            path: path.to_path_buf(),
            reason: "has no `x`/`y` grid coordinates; hint: regrid works on gridded files, not station series".into(),
        })),
    }
}

/// Interpolates `src` (from `src_path`) onto the grid of `target` (from `target_path`).
pub fn regrid(src: &Dataset, src_path: &Path, target: &Dataset, target_path: &Path) -> Result<Dataset, StageError> {
    let (sx, sy) = grid_of(src, src_path)?;
    let (tx, ty) = grid_of(target, target_path)?;
    let units =
        |d: &Dataset, n: &str| d.variable(n).and_then(|v| v.attr(cf::UNITS)).and_then(Attr::as_str).map(str::to_string);
    for axis in [datasets::X, datasets::Y] {
        if let (Some(a), Some(b)) = (units(src, axis), units(target, axis))
            && a != b
        {
            return Err(StageError::Incompatible {
                path: target_path.to_path_buf(),
                reason: format!("`{axis}` is in `{b}`, the source's in `{a}`; hint: both grids need the same units"),
            });
        }
    }
    let stx: Vec<Stencil> = tx.iter().map(|&x| locate(sx, x)).collect();
    let sty: Vec<Stencil> = ty.iter().map(|&y| locate(sy, y)).collect();
    if stx.iter().all(Option::is_none) || sty.iter().all(Option::is_none) {
        return Err(StageError::Incompatible {
            path: target_path.to_path_buf(),
            reason: format!(
                "its grid (x {}..{}, y {}..{}) does not overlap the source's (x {}..{}, y {}..{})",
                tx[0],
                tx[tx.len() - 1],
                ty[0],
                ty[ty.len() - 1],
                sx[0],
                sx[sx.len() - 1],
                sy[0],
                sy[sy.len() - 1]
            ),
        });
    }
    let (nx, ny) = (sx.len(), sy.len());
    let mut out = src.clone();
    for d in &mut out.dims {
        if d.name == datasets::X {
            d.len = tx.len();
        } else if d.name == datasets::Y {
            d.len = ty.len();
        }
    }
    for v in &mut out.variables {
        if v.name == datasets::X || v.name == datasets::Y {
            let values = if v.name == datasets::X { tx } else { ty };
            v.values = Values::Num(values.to_vec());
            continue;
        }
        let uses_grid = v.dims.iter().any(|d| d == datasets::X || d == datasets::Y);
        if !uses_grid {
            continue;
        }
        let n = v.dims.len();
        if n < 2 || v.dims[n - 2] != datasets::Y || v.dims[n - 1] != datasets::X || v.dtype == DType::Str {
            return Err(StageError::Exchange(ExchangeError::Layout {
                path: src_path.to_path_buf(),
                reason: format!(
                    "`{}` has dimensions ({}); regrid needs numeric fields whose last dimensions are (y, x)",
                    v.name,
                    v.dims.join(", ")
                ),
            }));
        }
        let masked = v.masked().expect("numeric");
        let fill = v.fill_value().unwrap_or(cf::FILL_F64);
        let mut values = Vec::with_capacity(masked.len() / (nx * ny).max(1) * tx.len() * ty.len());
        for field in masked.chunks(nx * ny) {
            values.extend(interpolate(field, nx, &stx, &sty).into_iter().map(|x| if x.is_nan() { fill } else { x }));
        }
        v.values = Values::Num(values);
        v.dtype = DType::F64;
        v.set_attr(cf::FILL_VALUE, Attr::F64(vec![fill]));
    }
    Ok(out)
}

/// Reads `input`, interpolates it onto the grid of `like`, writes `output`.
pub fn regrid_file(
    input: &Path,
    output: &Path,
    like: &Path,
    command_line: &str,
    compression: &Compression,
) -> Result<PathBuf, StageError> {
    let src = read_dataset(input)?;
    let target = read_dataset(like)?;
    let mut out = regrid(&src, input, &target, like)?;
    out.append_history(command_line);
    Ok(write_dataset(output, &out, compression)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{centres, grid};

    #[test]
    fn locate_handles_both_directions_and_the_half_cell_edge() {
        let asc = [0.5, 1.5, 2.5];
        assert_eq!(locate(&asc, 1.0), Some((0, 1, 0.5)));
        assert_eq!(locate(&asc, 0.2), Some((0, 1, 0.0)), "inside the first cell: edge value");
        assert_eq!(locate(&asc, -0.1), None, "beyond the first cell");
        assert_eq!(locate(&asc, 2.5), Some((1, 2, 1.0)));
        let desc = [2.5, 1.5, 0.5];
        assert_eq!(locate(&desc, 1.0), Some((2, 1, 0.5)));
    }

    #[test]
    fn bilinear_regrid_of_a_linear_field_is_exact() {
        // Source: 12 × 9 cells of 10 m; target: a finer, shifted grid with descending y,
        // inside the source's outer cell centres.
        let f = |t: f64, x: f64, y: f64| 3.0 + 0.5 * x - 0.25 * y + t * (0.01 * x + 0.02 * y);
        let src = grid(&centres(12, 0.0, 10.0), &centres(9, 0.0, 10.0), &[0.0, 60.0], f);
        let tx = centres(22, 3.0, 5.0);
        let ty: Vec<f64> = centres(16, 3.0, 5.0).into_iter().rev().collect();
        let target = grid(&tx, &ty, &[0.0], |_, _, _| 0.0);
        let out = regrid(&src, Path::new("s.nc"), &target, Path::new("t.nc")).unwrap();
        assert_eq!(out.coordinate("x").unwrap(), tx.as_slice());
        assert_eq!(out.coordinate("y").unwrap(), ty.as_slice());
        assert_eq!(out.shape_of(out.variable("h").unwrap()), [2, 16, 22]);
        let h = out.variable("h").unwrap().num().unwrap();
        let mut worst = 0.0_f64;
        for (r, &t) in [0.0, 60.0].iter().enumerate() {
            for (j, &y) in ty.iter().enumerate() {
                for (i, &x) in tx.iter().enumerate() {
                    worst = worst.max((h[(r * ty.len() + j) * tx.len() + i] - f(t, x, y)).abs());
                }
            }
        }
        assert!(worst < 1e-12, "bilinear interpolation of a linear field is exact: error {worst:e}");
        // Untouched variables and metadata come through.
        assert_eq!(out.variable("time").unwrap(), src.variable("time").unwrap());
        assert_eq!(
            out.variable("z").unwrap().attr(cf::STANDARD_NAME),
            src.variable("z").unwrap().attr(cf::STANDARD_NAME)
        );
        assert_eq!(out.variable("cell").unwrap().dtype, DType::F64, "interpolated integers become f64");
    }

    #[test]
    fn points_outside_and_next_to_missing_values_get_the_fill_value() {
        let mut src = grid(&centres(4, 0.0, 1.0), &centres(4, 0.0, 1.0), &[0.0], |_, x, _| x);
        if let Values::Num(v) = &mut src.variable_mut("h").unwrap().values {
            v[0] = cf::FILL_F64; // cell (0, 0) missing
        }
        // x: 0.2 (edge cell, clamped), 0.8 (between 0.5 and 1.5), 2.0, 5.0 (outside).
        let target = grid(&[0.2, 0.8, 2.0, 5.0], &[0.5, 3.5], &[0.0], |_, _, _| 0.0);
        let out = regrid(&src, Path::new("s.nc"), &target, Path::new("t.nc")).unwrap();
        let h = out.variable("h").unwrap().num().unwrap();
        assert_eq!(h[..4], [cf::FILL_F64, cf::FILL_F64, 2.0, cf::FILL_F64]);
        assert_eq!(h[4..6], [0.5, 0.8]);

        let far = grid(&[100.0], &[100.0], &[0.0], |_, _, _| 0.0);
        let err = regrid(&src, Path::new("s.nc"), &far, Path::new("t.nc")).unwrap_err();
        assert!(err.to_string().contains("does not overlap"), "{err}");
    }
}
