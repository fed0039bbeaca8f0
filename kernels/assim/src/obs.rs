//! Observations and linear observation operators.
//!
//! An observation i has a value yᵢ, an error standard deviation σᵢ (errors independent:
//! R = diag(σ²)), a location (for localization) and a sparse row of the linear operator H:
//! (state index, weight) pairs, so H x = Σ w x[index]. The identity on state indices is
//! one pair of weight 1; bilinear interpolation of a gridded field is four pairs
//! ([`bilinear_row`]).

use crate::AssimError;

/// One row of H: (state index, weight) pairs.
pub type OperatorRow = Vec<(usize, f64)>;

/// A set of observations for one analysis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    /// Observed values yᵢ.
    pub value: Vec<f64>,
    /// Error standard deviations σᵢ (> 0).
    pub error_std: Vec<f64>,
    /// Locations (same units as the state locations).
    pub location: Vec<[f64; 2]>,
    /// Rows of the linear observation operator.
    pub operator: Vec<OperatorRow>,
}

impl Observations {
    /// Number of observations.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Adds one observation.
    pub fn push(&mut self, value: f64, error_std: f64, location: [f64; 2], row: OperatorRow) {
        self.value.push(value);
        self.error_std.push(error_std);
        self.location.push(location);
        self.operator.push(row);
    }

    /// Observes every element of a state of `n` elements with error `error_std`, located at
    /// (index, 0) (the Lorenz-96 set-up).
    pub fn identity(values: &[f64], error_std: f64) -> Self {
        let mut obs = Self::default();
        for (i, &v) in values.iter().enumerate() {
            obs.push(v, error_std, [i as f64, 0.0], vec![(i, 1.0)]);
        }
        obs
    }

    /// Checks lengths, finiteness, error variances and operator indices against a state of
    /// `n` elements.
    pub fn validate(&self, n: usize) -> Result<(), AssimError> {
        let m = self.len();
        if self.error_std.len() != m || self.location.len() != m || self.operator.len() != m {
            return Err(AssimError::Observation { index: 0, reason: "observation arrays differ in length".into() });
        }
        for i in 0..m {
            let bad = |reason: String| Err(AssimError::Observation { index: i, reason });
            if !self.value[i].is_finite() {
                return bad(format!("value `{}` is not finite", self.value[i]));
            }
            let s = self.error_std[i];
            if !(s.is_finite() && s > 0.0) {
                return bad(format!("error standard deviation `{s}` is not positive and finite"));
            }
            if self.operator[i].is_empty() {
                return bad("observation operator row is empty".into());
            }
            for &(j, w) in &self.operator[i] {
                if j >= n || !w.is_finite() {
                    return bad(format!("operator refers to state element `{j}` of {n}"));
                }
            }
        }
        Ok(())
    }

    /// H applied to one state.
    pub fn apply(&self, state: &[f64]) -> Vec<f64> {
        self.operator.iter().map(|row| row.iter().map(|&(j, w)| w * state[j]).sum()).collect()
    }
}

/// The bilinear interpolation row of a field stored row-major as `ny × nx` values starting
/// at state offset `offset`, on cell centres `x0 + i·dx`, `y0 + j·dy`, at point `(x, y)`.
/// `None` if the point lies outside the hull of the cell centres.
pub fn bilinear_row(
    offset: usize,
    (nx, ny): (usize, usize),
    (x0, dx): (f64, f64),
    (y0, dy): (f64, f64),
    (x, y): (f64, f64),
) -> Option<OperatorRow> {
    let fx = (x - x0) / dx;
    let fy = (y - y0) / dy;
    let last_x = (nx - 1) as f64;
    let last_y = (ny - 1) as f64;
    if !(fx >= 0.0 && fx <= last_x && fy >= 0.0 && fy <= last_y) {
        return None;
    }
    // Cells at the upper edge use the last interval with weight 1 on its upper end.
    let i = (fx.floor() as usize).min(nx.saturating_sub(2));
    let j = (fy.floor() as usize).min(ny.saturating_sub(2));
    let tx = if nx > 1 { fx - i as f64 } else { 0.0 };
    let ty = if ny > 1 { fy - j as f64 } else { 0.0 };
    let at = |jj: usize, ii: usize| offset + jj * nx + ii;
    let mut row = Vec::with_capacity(4);
    let i1 = (i + 1).min(nx - 1);
    let j1 = (j + 1).min(ny - 1);
    for (jj, ii, w) in
        [(j, i, (1.0 - tx) * (1.0 - ty)), (j, i1, tx * (1.0 - ty)), (j1, i, (1.0 - tx) * ty), (j1, i1, tx * ty)]
    {
        if w != 0.0 {
            if let Some(e) = row.iter_mut().find(|(k, _)| *k == at(jj, ii)) {
                e.1 += w;
            } else {
                row.push((at(jj, ii), w));
            }
        }
    }
    if row.is_empty() {
        row.push((at(j, i), 1.0));
    }
    Some(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_reproduces_a_plane_and_rejects_outside_points() {
        let (nx, ny) = (4, 3);
        let field: Vec<f64> = (0..ny).flat_map(|j| (0..nx).map(move |i| 2.0 * i as f64 + 3.0 * j as f64)).collect();
        // Cell centres at x = 5 + 10 i, y = 5 + 10 j: f = 2(x − 5)/10 + 3(y − 5)/10.
        for (x, y) in [(5.0, 5.0), (12.5, 17.0), (35.0, 25.0), (35.0, 5.0)] {
            let row = bilinear_row(7, (nx, ny), (5.0, 10.0), (5.0, 10.0), (x, y)).unwrap();
            let mut state = vec![0.0; 7];
            state.extend(&field);
            let v: f64 = row.iter().map(|&(k, w)| w * state[k]).sum();
            assert!((v - (0.2 * (x - 5.0) + 0.3 * (y - 5.0))).abs() < 1e-12, "{x},{y}: {v}");
        }
        assert!(bilinear_row(0, (nx, ny), (5.0, 10.0), (5.0, 10.0), (4.9, 10.0)).is_none());
        assert!(bilinear_row(0, (nx, ny), (5.0, 10.0), (5.0, 10.0), (10.0, 25.1)).is_none());
    }

    #[test]
    fn validation_names_the_bad_observation() {
        let mut o = Observations::identity(&[1.0, 2.0], 1.0);
        o.error_std[1] = 0.0;
        let e = o.validate(2).unwrap_err().to_string();
        assert!(e.contains("observation 1") && e.contains("error standard deviation"), "{e}");
    }
}
