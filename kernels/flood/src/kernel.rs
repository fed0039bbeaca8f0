//! The per-row loops of the time step, as branch-free functions on slices.
//!
//! A step walks the strip row by row; for each row it runs four short loops over row
//! buffers that stay in cache: primitive variables of the next row, the fluxes through the
//! row's x-faces, the fluxes through the faces shared with the next row, and the update.
//! Each main-array element is still read and written once per step. Splitting the work
//! into independent iterations without branches (selects instead) lets the CPU overlap the
//! long division/square-root latency chains of neighbouring cells, and the compiler
//! vectorize the loops; one big loop body per cell was latency-bound at half the speed.

/// Fluxes through a row of faces, one entry per face (see [`face_flux`]).
#[derive(Debug, Clone, Default)]
pub(super) struct FaceRow {
    /// Mass flux.
    pub m: Vec<f64>,
    /// Normal momentum flux for the cell on the low side, minus its g h*²/2.
    pub lo: Vec<f64>,
    /// Normal momentum flux for the cell on the high side, minus its g h*²/2.
    pub hi: Vec<f64>,
    /// Tangential momentum flux.
    pub t: Vec<f64>,
}

impl FaceRow {
    pub fn new(len: usize) -> Self {
        Self { m: vec![0.0; len], lo: vec![0.0; len], hi: vec![0.0; len], t: vec![0.0; len] }
    }
}

/// Primitive variables of a row: velocities (zero in dry cells) and celerity √(g h).
#[derive(Debug, Clone, Default)]
pub(super) struct PrimRow {
    pub u: Vec<f64>,
    pub v: Vec<f64>,
    pub c: Vec<f64>,
}

impl PrimRow {
    pub fn new(len: usize) -> Self {
        Self { u: vec![0.0; len], v: vec![0.0; len], c: vec![0.0; len] }
    }
}

/// Wave-speed span (m s⁻¹) below which a face carries no flux: both sides dry, or a film
/// under ~1e-25 m. Also keeps 1/span finite when round-off velocities decay to subnormals.
const MIN_WAVE_SPAN: f64 = 1e-12;

/// Hydrostatic reconstruction (Audusse et al. 2004) + HLL flux across one face, low side
/// `l`, high side `r`: depth, normal velocity, tangential velocity, bed, cell celerity.
/// Returns (mass, normal-lo, normal-hi, tangential) fluxes.
///
/// The pressure terms `g h_i²/2` of the two cells cancel in each cell's update and are
/// left out, so a lake at rest gives exactly zero fluxes, not just round-off.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn face_flux(
    g: f64,
    hl: f64,
    ul: f64,
    vl: f64,
    zl: f64,
    hr: f64,
    ur: f64,
    vr: f64,
    zr: f64,
) -> (f64, f64, f64, f64) {
    let zs = zl.max(zr);
    let hls = (hl + zl - zs).max(0.0);
    let hrs = (hr + zr - zs).max(0.0);
    let cl = (g * hls).sqrt();
    let cr = (g * hrs).sqrt();
    // Wave-speed estimates (Toro 2001, §10.5); next to a dry side the front moves at u ± 2c.
    let sl_wet = (ul - cl).min(ur - cr);
    let sr_wet = (ul + cl).max(ur + cr);
    let sl = if hls <= 0.0 {
        ur - 2.0 * cr
    } else if hrs <= 0.0 {
        ul - cl
    } else {
        sl_wet
    };
    let sr = if hls <= 0.0 {
        ur + cr
    } else if hrs <= 0.0 {
        ul + 2.0 * cl
    } else {
        sr_wet
    };
    // Clamping the speeds makes one formula cover the supersonic cases (F = F_L or F_R).
    let sl = sl.min(0.0);
    let sr = sr.max(0.0);
    let span = sr - sl;
    let wet = span > MIN_WAVE_SPAN;
    let inv = if wet { 1.0 / span.max(MIN_WAVE_SPAN) } else { 0.0 };
    let k = 0.5 * (sr + sl) * inv;
    let m = sl * sr * inv;
    let half_g = 0.5 * g;
    let pl = half_g * hls * hls;
    let pr = half_g * hrs * hrs;
    let ql = hls * ul;
    let qr = hrs * ur;
    let fl = ql * ul + pl;
    let fr = qr * ur + pr;
    // HLL written as central flux − k·jump + m·state jump, so equal states give the
    // central flux exactly.
    let fm = 0.5 * (ql + qr) - k * (qr - ql) + m * (hrs - hls);
    let fnorm = 0.5 * (fl + fr) - k * (fr - fl) + m * (qr - ql);
    let fm = if wet { fm } else { 0.0 };
    let fnorm = if wet { fnorm } else { 0.0 };
    let t = fm * if fm >= 0.0 { vl } else { vr };
    (fm, fnorm - pl, fnorm - pr, t)
}

/// Velocities and celerity of every cell of a row.
#[inline(always)]
pub(super) fn primitives(g: f64, eps: f64, h: &[f64], hu: &[f64], hv: &[f64], out: &mut PrimRow) {
    let n = h.len();
    let (hu, hv) = (&hu[..n], &hv[..n]);
    let (u, v, c) = (&mut out.u[..n], &mut out.v[..n], &mut out.c[..n]);
    for i in 0..n {
        let hh = h[i];
        let r = 1.0 / hh.max(eps);
        let wet = hh > eps;
        u[i] = if wet { hu[i] * r } else { 0.0 };
        v[i] = if wet { hv[i] * r } else { 0.0 };
        c[i] = (g * hh).sqrt();
    }
}

/// Fluxes through the faces between cells `f` and `f + 1` of a row, `f = 0 .. n − 1`.
#[inline(always)]
pub(super) fn x_faces(g: f64, h: &[f64], p: &PrimRow, z: &[f64], out: &mut FaceRow) {
    let n = h.len();
    let (u, v, z) = (&p.u[..n], &p.v[..n], &z[..n]);
    let (om, olo, ohi, ot) = (&mut out.m[..n], &mut out.lo[..n], &mut out.hi[..n], &mut out.t[..n]);
    for f in 0..n - 1 {
        let (m, lo, hi, t) = face_flux(g, h[f], u[f], v[f], z[f], h[f + 1], u[f + 1], v[f + 1], z[f + 1]);
        om[f] = m;
        olo[f] = lo;
        ohi[f] = hi;
        ot[f] = t;
    }
}

/// Fluxes through the faces between row `a` (low y) and row `b` (high y), per column.
#[allow(clippy::too_many_arguments)] // two rows of (depth, primitives, bed) and the output
#[inline(always)]
pub(super) fn y_faces(
    g: f64,
    ha: &[f64],
    pa: &PrimRow,
    za: &[f64],
    hb: &[f64],
    pb: &PrimRow,
    zb: &[f64],
    out: &mut FaceRow,
) {
    let n = ha.len();
    let (ua, va, za) = (&pa.u[..n], &pa.v[..n], &za[..n]);
    let (hb, ub, vb, zb) = (&hb[..n], &pb.u[..n], &pb.v[..n], &zb[..n]);
    let (om, olo, ohi, ot) = (&mut out.m[..n], &mut out.lo[..n], &mut out.hi[..n], &mut out.t[..n]);
    for i in 0..n {
        // Normal velocity v, tangential u.
        let (m, lo, hi, t) = face_flux(g, ha[i], va[i], ua[i], za[i], hb[i], vb[i], ub[i], zb[i]);
        om[i] = m;
        olo[i] = lo;
        ohi[i] = hi;
        ot[i] = t;
    }
}

/// Constants of one update.
#[derive(Debug, Clone, Copy)]
pub(super) struct UpdateParams {
    pub g: f64,
    pub eps: f64,
    pub sx: f64,
    pub sy: f64,
    pub rdx: f64,
    pub rdy: f64,
    pub rain_dt: f64,
    /// g n² Δt.
    pub friction: f64,
    pub arrival_depth: f64,
    pub t_new: f64,
}

/// Running results of the update of a strip.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct UpdateStats {
    /// max of (|u| + c)/Δx + (|v| + c)/Δy over the new state.
    pub ratio: f64,
    /// Depth added by clipping negative depths, m (sum over cells).
    pub clipped: f64,
    /// A NaN or infinity appeared.
    pub non_finite: bool,
}

/// Row of the state being updated: old values, new values, the running maps and a scratch
/// row. Slices cover the row's interior columns (`nx` cells).
pub(super) struct UpdateRow<'a> {
    pub h: &'a [f64],
    pub hu: &'a [f64],
    pub hv: &'a [f64],
    pub h_new: &'a mut [f64],
    pub hu_new: &'a mut [f64],
    pub hv_new: &'a mut [f64],
    pub max_h: &'a mut [f64],
    pub arrival: &'a mut [f64],
    /// Scratch: per-cell CFL ratio, then the depth clipped.
    pub scratch: &'a mut [f64],
}

/// Maximum of non-negative values with eight independent accumulators (max is exact, so
/// the grouping does not matter, and the loop vectorizes).
#[inline(always)]
fn max_of(values: &[f64]) -> f64 {
    let mut acc = [0.0_f64; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            acc[j] = acc[j].max(c[j]);
        }
    }
    rest.iter().chain(acc.iter()).fold(0.0_f64, |m, &x| m.max(x))
}

/// x^(−1/3) for a positive normal `x`, to a few ulps, without division: an initial guess
/// from the exponent bits (the inverse-cube-root analogue of the "fast inverse square root"
/// constant, ~3 % off) and four Newton steps y ← y (4 − x y³)/3, each squaring the error.
/// Unlike libm's `cbrt` it vectorizes: with `cbrt` and a division the friction term cost
/// as much as all the fluxes; now it is within measurement noise.
#[inline(always)]
pub(super) fn inv_cbrt(x: f64) -> f64 {
    // High word only, divided by 3 as (hi · 0xAAAAAAAB) >> 33 (exact for hi < 2³²): stays in
    // 64-bit lanes, one unsigned 32×32→64 multiply per lane (`pmuludq`), so it vectorizes.
    const MAGIC_HI: u64 = 0x553E_F0FF;
    let hi = x.to_bits() >> 32;
    let third = (hi * 0xAAAA_AAAB) >> 33;
    let mut y = f64::from_bits((MAGIC_HI - third) << 32);
    for _ in 0..4 {
        y *= (4.0 - x * (y * y * y)) * (1.0 / 3.0);
    }
    y
}

/// The cell loop of [`update_row`]; returns (any depth clipped, any non-finite value).
#[inline(always)]
#[allow(clippy::too_many_arguments)] // one parameter per array, see `update_row`
fn update_cells<const FRICTION: bool>(
    k: &UpdateParams,
    [h0, hu, hv]: [&[f64]; 3],
    h1: &mut [f64],
    hu1: &mut [f64],
    hv1: &mut [f64],
    max_h: &mut [f64],
    arrival: &mut [f64],
    ratio: &mut [f64],
    [xm, xlo, xhi, xt]: [&[f64]; 4],
    [sm, shi, st]: [&[f64]; 3],
    [nm, nlo, nt]: [&[f64]; 3],
) -> (bool, bool) {
    let nx = h0.len();
    let (hu, hv, h1, hu1, hv1) = (&hu[..nx], &hv[..nx], &mut h1[..nx], &mut hu1[..nx], &mut hv1[..nx]);
    let (max_h, arrival, ratio) = (&mut max_h[..nx], &mut arrival[..nx], &mut ratio[..nx]);
    let (xm, xlo, xhi, xt) = (&xm[..nx + 1], &xlo[..nx + 1], &xhi[..nx + 1], &xt[..nx + 1]);
    let (sm, shi, st, nm, nlo, nt) = (&sm[..nx], &shi[..nx], &st[..nx], &nm[..nx], &nlo[..nx], &nt[..nx]);
    // Constants in locals: read through `k` inside the loop, they kept LLVM from vectorizing
    // it (seen in the assembly: scalar `vdivsd`/`vsqrtsd` only).
    let UpdateParams { g, eps, sx, sy, rdx, rdy, rain_dt, friction, arrival_depth, t_new } = *k;
    let mut any_clipped = false;
    let mut non_finite = false;
    for i in 0..nx {
        let hh = h0[i] - sx * (xm[i + 1] - xm[i]) - sy * (nm[i] - sm[i]) + rain_dt;
        let qx = hu[i] - sx * (xlo[i + 1] - xhi[i]) - sy * (nt[i] - st[i]);
        let qy = hv[i] - sx * (xt[i + 1] - xt[i]) - sy * (nlo[i] - shi[i]);
        non_finite |= !(hh + qx + qy).is_finite();
        any_clipped |= hh < 0.0;
        let hh = hh.max(0.0);
        let wet = hh > eps;
        let inv_h = 1.0 / hh.max(eps);
        let (qx, qy) = if FRICTION {
            // Semi-implicit Manning: q ← q / (1 + Δt g n² |u| / h^(4/3)); the factor is
            // ≥ 1, so friction can only slow the flow (unconditionally stable).
            let speed = (qx * qx + qy * qy).sqrt() * inv_h;
            let r = 1.0 / (1.0 + friction * speed * inv_h * inv_cbrt(hh.max(eps)));
            (qx * r, qy * r)
        } else {
            (qx, qy)
        };
        let qx = if wet { qx } else { 0.0 };
        let qy = if wet { qy } else { 0.0 };
        let c0 = (g * hh).sqrt();
        let r = ((qx * inv_h).abs() + c0) * rdx + ((qy * inv_h).abs() + c0) * rdy;
        ratio[i] = if wet { r } else { 0.0 };
        h1[i] = hh;
        hu1[i] = qx;
        hv1[i] = qy;
        max_h[i] = max_h[i].max(hh);
        arrival[i] = if arrival[i] < 0.0 && hh >= arrival_depth { t_new } else { arrival[i] };
    }
    (any_clipped, non_finite)
}

/// Updates the `nx` interior cells of a row from the fluxes of its x-faces (`xf`, face
/// `i` is the west face of interior cell `i`), its south faces (`south`) and its north
/// faces (`north`), both indexed by interior column + 1. `FRICTION` selects the Manning
/// term at compile time. The loop carries no floating-point reduction, so it vectorizes;
/// the CFL maximum and the clipped volume are reduced afterwards over the scratch row.
#[inline(always)]
pub(super) fn update_row<const FRICTION: bool>(
    k: &UpdateParams,
    row: UpdateRow<'_>,
    xf: &FaceRow,
    south: &FaceRow,
    north: &FaceRow,
    stats: &mut UpdateStats,
) {
    let nx = row.h.len();
    // The slices go in as separate reference parameters (rustc marks only those `noalias`;
    // references inside a struct are not) so LLVM knows the rows do not overlap.
    let flags = update_cells::<FRICTION>(
        k,
        [&row.h[..nx], &row.hu[..nx], &row.hv[..nx]],
        &mut row.h_new[..nx],
        &mut row.hu_new[..nx],
        &mut row.hv_new[..nx],
        &mut row.max_h[..nx],
        &mut row.arrival[..nx],
        &mut row.scratch[..nx],
        [&xf.m[..nx + 1], &xf.lo[..nx + 1], &xf.hi[..nx + 1], &xf.t[..nx + 1]],
        [&south.m[1..nx + 1], &south.hi[1..nx + 1], &south.t[1..nx + 1]],
        [&north.m[1..nx + 1], &north.lo[1..nx + 1], &north.t[1..nx + 1]],
    );
    let (any_clipped, non_finite) = flags;
    let ratio = &row.scratch[..nx];
    let (h0, xm, sm, nm) = (&row.h[..nx], &xf.m[..nx + 1], &south.m[1..nx + 1], &north.m[1..nx + 1]);
    stats.ratio = stats.ratio.max(max_of(ratio));
    stats.non_finite |= non_finite;
    if any_clipped {
        // Rare: recompute the raw depths of this row to account for what was clipped.
        for i in 0..nx {
            let hh = h0[i] - k.sx * (xm[i + 1] - xm[i]) - k.sy * (nm[i] - sm[i]) + k.rain_dt;
            stats.clipped += (-hh).max(0.0);
        }
    }
}

/// Everything one row of the step reads and writes.
pub(super) struct RowPass<'a> {
    pub k: &'a UpdateParams,
    /// Current row (full width with ghost columns): depth and bed.
    pub h: &'a [f64],
    pub z: &'a [f64],
    /// Next row (full width).
    pub h_next: &'a [f64],
    pub hu_next: &'a [f64],
    pub hv_next: &'a [f64],
    pub z_next: &'a [f64],
    /// Primitives of the current row (computed by the previous row's pass).
    pub prim: &'a PrimRow,
    /// Primitives of the next row (computed here).
    pub prim_next: &'a mut PrimRow,
    pub x_flux: &'a mut FaceRow,
    /// Fluxes through the south faces (computed by the previous row's pass).
    pub south: &'a FaceRow,
    /// Fluxes through the north faces (computed here).
    pub north: &'a mut FaceRow,
    pub update: UpdateRow<'a>,
    pub stats: &'a mut UpdateStats,
}

#[inline(always)]
fn row_pass_body(p: RowPass<'_>) {
    let (g, eps) = (p.k.g, p.k.eps);
    primitives(g, eps, p.h_next, p.hu_next, p.hv_next, p.prim_next);
    x_faces(g, p.h, p.prim, p.z, p.x_flux);
    y_faces(g, p.h, p.prim, p.z, p.h_next, p.prim_next, p.z_next, p.north);
    if p.k.friction > 0.0 {
        update_row::<true>(p.k, p.update, p.x_flux, p.south, p.north, p.stats);
    } else {
        update_row::<false>(p.k, p.update, p.x_flux, p.south, p.north, p.stats);
    }
}

/// Instruction set the flood loops run with (all give bit-identical results).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    /// The target's baseline (SSE2 on x86-64): 2 doubles per instruction.
    Baseline,
    /// AVX2: 4 doubles per instruction.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 (F): 8 doubles per instruction.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Simd {
    /// Whether this CPU can run `self`.
    pub fn is_supported(self) -> bool {
        match self {
            Self::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
        }
    }

    /// Every set this CPU supports, narrowest first.
    pub fn supported() -> Vec<Self> {
        #[cfg(target_arch = "x86_64")]
        let all = vec![Self::Baseline, Self::Avx2, Self::Avx512];
        #[cfg(not(target_arch = "x86_64"))]
        let all = vec![Self::Baseline];
        all.into_iter().filter(|s| s.is_supported()).collect()
    }

    /// The widest set this CPU supports; `TWINFLOW_SIMD=avx2` or `=baseline` caps it.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let wanted = std::env::var("TWINFLOW_SIMD").unwrap_or_default();
            if wanted != "baseline" && wanted != "avx2" && std::arch::is_x86_feature_detected!("avx512f") {
                return Self::Avx512;
            }
            if wanted != "baseline" && std::arch::is_x86_feature_detected!("avx2") {
                return Self::Avx2;
            }
        }
        Self::Baseline
    }
}

/// The same loops compiled for AVX2. The results are bit-identical to the baseline's:
/// every operation is an IEEE-754 add, multiply, divide, square root, min/max or select,
/// and Rust never contracts a multiply and an add into an FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_pass_avx2(p: RowPass<'_>) {
    row_pass_body(p);
}

/// The same loops compiled for AVX-512 (see [`row_pass_avx2`] on bit-identity).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn row_pass_avx512(p: RowPass<'_>) {
    row_pass_body(p);
}

/// One row of the step: primitives of the next row, fluxes, update.
pub(super) fn row_pass(p: RowPass<'_>, simd: Simd) {
    match simd {
        Simd::Baseline => row_pass_body(p),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the solver holds `Simd::Avx2` only after `is_x86_feature_detected!("avx2")`.
        #[allow(unsafe_code)]
        Simd::Avx2 => unsafe { row_pass_avx2(p) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the solver holds `Simd::Avx512` only after `is_x86_feature_detected!("avx512f")`.
        #[allow(unsafe_code)]
        Simd::Avx512 => unsafe { row_pass_avx512(p) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GRAVITY;

    #[test]
    fn face_flux_at_rest_is_exactly_zero() {
        let (m, lo, hi, t) = face_flux(GRAVITY, 1.3, 0.0, 0.0, -0.3, 0.7, 0.0, 0.0, 0.3);
        assert_eq!((m, lo, hi, t), (0.0, 0.0, 0.0, 0.0));
        // Wet cell against a dry bank above the surface: still no flux.
        let (m, lo, hi, t) = face_flux(GRAVITY, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.7);
        assert_eq!((m, lo, hi, t), (0.0, 0.0, 0.0, 0.0));
    }

    #[test]
    fn face_flux_is_consistent_with_the_physical_flux() {
        // Equal states on a flat bed: HLL returns the physical flux (h u, h u² + g h²/2, h u v)
        // less the g h²/2 each side drops.
        let (h, u, v) = (0.8, 0.7, -0.2);
        let (m, lo, hi, t) = face_flux(GRAVITY, h, u, v, 0.0, h, u, v, 0.0);
        assert!((m - h * u).abs() < 1e-15);
        assert!((lo - h * u * u).abs() < 1e-15 && (hi - h * u * u).abs() < 1e-15);
        assert!((t - h * u * v).abs() < 1e-15);
    }

    #[test]
    fn multiply_shift_divides_by_three() {
        for hi in (0..u64::from(u32::MAX)).step_by(9_973).chain([u64::from(u32::MAX)]) {
            assert_eq!((hi * 0xAAAA_AAAB) >> 33, hi / 3);
        }
    }

    #[test]
    fn max_of_handles_remainders() {
        let v: Vec<f64> = (0..19).map(|i| f64::from((i * 7) % 19)).collect();
        assert_eq!(max_of(&v), 18.0);
        assert_eq!(max_of(&[]), 0.0);
    }

    #[test]
    fn fast_inverse_cube_root_matches_libm() {
        let mut worst = 0.0_f64;
        let mut x = 1e-12_f64;
        while x < 1e6 {
            let exact = 1.0 / x.cbrt();
            worst = worst.max((inv_cbrt(x) - exact).abs() / exact);
            x *= 1.000_37;
        }
        assert!(worst < 4.0 * f64::EPSILON, "relative error {worst:e}");
    }
}
