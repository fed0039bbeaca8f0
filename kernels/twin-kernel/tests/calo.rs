//! Acceptance tests of `twin-kernel calo` (fast electromagnetic-shower Monte Carlo),
//! through the binary and, where per-spot truth is needed, through the library.
//!
//! References:
//! - Grindhammer & Peters, "The parameterized simulation of electromagnetic showers in
//!   homogeneous and sampling calorimeters", hep-ex/0001020: mean depth of the maximum of the
//!   average profile in a homogeneous medium, ⟨T⟩ = ln(E/Ec) − 0.858 X0.
//! - PDG Review, "Passage of particles through matter" (§ electromagnetic cascades): about
//!   90 % of the energy within 1 R_M, about 95 % within 2 R_M, 99 % within 3.5 R_M.
//! - Sampling-calorimeter resolution σ/E = a/√E ⊕ b (ATLAS LAr design: a ≈ 10 %·√GeV,
//!   b ≈ 0.7 %); the configured a and b must be recovered by a weighted fit.
//!
//! Needs `hdf5-tools` (h5dump) and, for the `mpi` feature, MPICH's `mpiexec`.
#![allow(clippy::print_stderr)] // the tests report the figures they measured (`--nocapture`)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use twinflow_calo::{CaloConfig, Simulator, gp_mean_alpha};
use twinflow_exchange::{Attr, ElementType, H5File, H5Group};

mod support;
use support::{BIN, ok, run};

/// A fresh scratch directory under the target directory.
fn scratch(name: &str) -> PathBuf {
    support::scratch_in("calo-tests", name)
}

fn calo(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("calo").args(args).env("TWINFLOW_LOG", "info");
    cmd
}

/// An output file open for reading, its root group at hand.
struct Output {
    root: H5Group,
    _file: H5File,
}

impl std::ops::Deref for Output {
    type Target = H5Group;
    fn deref(&self) -> &H5Group {
        &self.root
    }
}

fn open(path: &Path) -> Output {
    let file = H5File::open(path).unwrap();
    Output { root: file.root().unwrap(), _file: file }
}

/// Runs `twin-kernel calo` in `dir` and returns the opened output.
fn simulate(dir: &Path, out: &str, args: &[&str]) -> Output {
    let mut cmd = calo(&["--out", out]);
    cmd.args(args);
    ok(run(cmd, dir, Duration::from_secs(120)), "calo");
    open(&dir.join(out))
}

fn f64s(f: &H5Group, name: &str) -> Vec<f64> {
    f.dataset(name).unwrap_or_else(|e| panic!("`{name}`: {e}")).read_raw::<f64>().unwrap()
}

fn cells(f: &H5Group) -> (Vec<f32>, Vec<usize>) {
    let ds = f.dataset("cells").unwrap();
    (ds.read_raw::<f32>().unwrap(), ds.info().unwrap().shape)
}

fn attr(f: &H5Group, name: &str) -> f64 {
    let a = f.attr(name).unwrap_or_else(|e| panic!("attribute `{name}`: {e}"));
    a.and_then(|a| a.as_f64()).unwrap_or_else(|| panic!("no numeric attribute `{name}`"))
}

fn mean_and_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The gamma function fitted to a profile sampled in bins of `bin` X0 (bin k centred at
/// (k + ½) bin): ln p = c₀ + c₁ ln t + c₂ t is linear in the coefficients, so a weighted
/// least-squares fit (weights p, as Var(ln p) ∝ 1/p for counts) over the bins holding at
/// least 30 % of the highest one gives the shape α = 1 + c₁ and the maximum at
/// t = −c₁/c₂ = (α − 1)/β; returns (depth of the maximum, α). The Grindhammer–Peters mean
/// profile is such a gamma function, so the fit has no shape bias for it; a parabola
/// through the top bins would (≈ h²/5T).
fn gamma_fit(profile: &[f64], bin: f64) -> (f64, f64) {
    let top = profile.iter().copied().fold(0.0, f64::max);
    let mut m = [[0.0_f64; 4]; 3];
    for (k, &p) in profile.iter().enumerate().filter(|(_, p)| **p >= 0.3 * top) {
        let t = (k as f64 + 0.5) * bin;
        let basis = [1.0, t.ln(), t];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += p * basis[i] * basis[j];
            }
            m[i][3] += p * basis[i] * p.ln();
        }
    }
    // Gauss–Jordan elimination with partial pivoting on the 3 × 3 normal equations.
    for col in 0..3 {
        let pivot = (col..3).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs())).unwrap();
        m.swap(col, pivot);
        let pivot_row = m[col];
        for (row, r) in m.iter_mut().enumerate() {
            if row != col {
                let f = r[col] / pivot_row[col];
                for (x, p) in r.iter_mut().zip(pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    let (c1, c2) = (m[1][3] / m[1][1], m[2][3] / m[2][2]);
    (-c1 / c2, 1.0 + c1)
}

/// Acceptance 1. The mean longitudinal profile of electron showers in homogeneous lead
/// peaks at the Grindhammer–Peters mean depth of maximum ⟨T⟩ = ln(E/Ec) − 0.858 X0
/// (hep-ex/0001020) within 2 %, at 10, 30 and 100 GeV; and its shape parameter matches
/// GP's mean-profile ⟨α⟩ = 0.21 + (0.492 + 2.38/Z) ln y ([`gp_mean_alpha`]) within 6 %.
///
/// The quantity compared is the maximum of the *averaged* profile (of the gamma function
/// fitted to it, [`peak_depth`]), which is what ⟨T⟩ parametrises: GP describe the average
/// profile as a gamma distribution with mean parameters ⟨T⟩, ⟨α⟩. The mean of the
/// per-event T is a different number (its log-normal median is ln y − 0.812, its mean
/// ≈ 1 % higher still). The profile is read from the cells of a 1 mm-layer (0.18 X0) lead
/// block, 160 layers (28.5 X0) deep, one transverse cell, with sampling fluctuations and
/// the constant term off. Statistical error: 1000 showers per energy, ≈ 0.5 % on the
/// peak, estimated from 8 sub-samples and asserted to stay below 1 %.
///
/// α: the simulated showers draw their own (T, α) from GP's *fluctuated* parametrisation
/// (mean α of the individual showers ≈ 4.38 at 10 GeV, 10 % above ⟨α⟩, as it should be: an
/// average of profiles peaking at different depths is broader than each); GP fitted that
/// and the *mean* one separately, and integrating the fluctuated model (4·10⁶ showers,
/// numpy, independent of this code) gives an average profile whose fitted α exceeds ⟨α⟩
/// by 4.7, 3.4 and 2.0 % at 10, 30, 100 GeV. Hence the 6 % tolerance; the statistical
/// error (≈ 1 %) is asserted below 2 %.
#[test]
fn mean_profile_peaks_at_the_grindhammer_peters_depth_in_lead() {
    let dir = scratch("profile");
    for energy in ["10", "30", "100"] {
        let out = format!("pb{energy}.h5");
        let f = simulate(
            &dir,
            &out,
            &[
                "--homogeneous",
                "--absorber",
                "pb",
                "--absorber-mm",
                "1",
                "--layers",
                "160",
                "--cells",
                "1",
                "--cell-size-mm",
                "4000",
                "--particle",
                "e-",
                "--energy",
                energy,
                "--stochastic",
                "0",
                "--constant",
                "0",
                "--spot-energy-mev",
                "50",
                "--events",
                "1000",
                "--seed",
                "11",
            ],
        );
        assert_eq!(attr(&f, "sampling_fraction"), 1.0);
        let x0 = attr(&f, "radiation_length_mm");
        let ec = attr(&f, "critical_energy_mev");
        assert!((x0 - 5.612).abs() < 0.01 && (ec - 7.328).abs() < 0.01, "lead: X0 {x0} mm, Ec {ec} MeV");
        let (values, shape) = cells(&f);
        let layers = shape[1];
        let events = shape[0];
        let bin = 1.0 / x0;
        let profile_of = |range: std::ops::Range<usize>| -> Vec<f64> {
            let mut p = vec![0.0; layers];
            for ev in range {
                for (l, v) in p.iter_mut().enumerate() {
                    *v += f64::from(values[ev * layers + l]);
                }
            }
            p
        };
        let (peak, alpha) = gamma_fit(&profile_of(0..events), bin);
        let parts: Vec<(f64, f64)> =
            (0..8).map(|k| gamma_fit(&profile_of(k * events / 8..(k + 1) * events / 8), bin)).collect();
        let stat = mean_and_std(&parts.iter().map(|p| p.0).collect::<Vec<_>>()).1 / 8f64.sqrt();
        let alpha_stat = mean_and_std(&parts.iter().map(|p| p.1).collect::<Vec<_>>()).1 / 8f64.sqrt();
        let ln_y = (energy.parse::<f64>().unwrap() * 1000.0 / ec).ln();
        let expected = ln_y - 0.858;
        let rel = peak / expected - 1.0;
        let gp_alpha = gp_mean_alpha(ln_y, 82.0);
        let alpha_rel = alpha / gp_alpha - 1.0;
        eprintln!(
            "E = {energy} GeV: peak of the mean profile {peak:.3} X0 (± {stat:.3} stat), GP ⟨T⟩ = {expected:.3} X0, {:+.2} %; \
             α {alpha:.3} (± {alpha_stat:.3}), GP ⟨α⟩ = {gp_alpha:.3}, {:+.2} %",
            100.0 * rel,
            100.0 * alpha_rel
        );
        assert!(stat < 0.01 * expected, "the statistical error {stat} is too large for a 2 % test");
        assert!(
            rel.abs() <= 0.02,
            "E = {energy} GeV: peak {peak:.3} X0 vs GP {expected:.3} X0 ({:+.2} %)",
            100.0 * rel
        );
        assert!(alpha_stat < 0.02 * gp_alpha, "the statistical error {alpha_stat} is too large for a 6 % test");
        assert!(alpha_rel.abs() <= 0.06, "E = {energy} GeV: α {alpha:.3} vs GP ⟨α⟩ {gp_alpha:.3}");
    }
}

/// Fractions of the deposited energy (truth spots inside the calorimeter's depth, laterally
/// unbounded: a cylinder around the shower axis) within 1, 2 and 3.5 Molière radii of
/// the plan's medium, over `events` showers of `energy` GeV, and the statistical error of
/// the first (the spread of the per-shower fraction over √events).
fn containment(cfg: &CaloConfig, energy: f64) -> ([f64; 3], f64, f64) {
    let mut cfg = cfg.clone();
    cfg.beam.energy_gev = energy;
    let plan = cfg.validate().unwrap();
    let rm = plan.medium.moliere_radius_mm;
    let depth = plan.layers as f64 * plan.medium.layer_mm;
    let sim = Simulator::new(&plan);
    let mut within = [0_u64; 3];
    let mut total = 0_u64;
    let mut per_event = Vec::new();
    for event in 0..plan.events {
        let (_, _, spots) = sim.spots(event);
        let (mut n1, mut n) = (0_u64, 0_u64);
        for s in spots.iter().filter(|s| s.depth_mm < depth) {
            let r = s.dx_mm.hypot(s.dy_mm) / rm;
            for (w, radius) in within.iter_mut().zip([1.0, 2.0, 3.5]) {
                *w += u64::from(r <= radius);
            }
            n1 += u64::from(r <= 1.0);
            n += 1;
        }
        total += n;
        per_event.push(n1 as f64 / n as f64);
    }
    let f = within.map(|w| w as f64 / total as f64);
    (f, mean_and_std(&per_event).1 / (per_event.len() as f64).sqrt(), rm)
}

/// Acceptance 2a. Radial containment in homogeneous lead (R_M = 21.2 MeV · X0/Ec = 16.2 mm
/// with Ec = 610 MeV/(Z + 1.24)), 10, 30, 100 GeV electrons, 400 showers each.
///
/// The simulated fractions must equal what the Grindhammer–Peters parametrisation itself
/// implies: its radial profile (hep-ex/0001020 App. A.1.3) integrated over its fluctuated
/// longitudinal profiles (A.1.2) and the same 28.5 X0 depth, computed independently of
/// this code (numpy, 2·10⁶ showers per energy, ±0.0001): within 1 R_M 0.8989, 0.8976,
/// 0.8946; within 2 R_M 0.9645, 0.9641, 0.9631; within 3.5 R_M 0.9870, 0.9869, 0.9866.
/// Tolerance: 3 statistical errors (≈ 0.05 % each, asserted below 0.1 %) + 0.03 %.
///
/// Against the PDG ("Passage of particles through matter": about 90 % of the energy within
/// 1 R_M, about 95 % within 2 R_M, 99 % within 3.5 R_M), the fractions are within ±1.5 %,
/// ±2 % and ±1 % — but *below* 90 % within 1 R_M by 0.1–0.5 %: the published homogeneous
/// parametrisation puts slightly less than 90 % there, whatever R_M is scaled by, since
/// the radii are fitted in units of R_M (with the PDG table's R_M = 16.02 mm for lead and
/// the simulation at 16.24 mm, the fraction inside 16.02 mm would be lower still).
/// Acceptance 2b (below) is the sampling stack, where GP's sampling corrections narrow the
/// profile to above 90 %.
#[test]
fn radial_containment_in_moliere_radii_in_lead() {
    let mut cfg = CaloConfig { events: 400, seed: 5, ..CaloConfig::default() };
    cfg.calorimeter.homogeneous = true;
    cfg.calorimeter.absorber = "pb".into();
    cfg.calorimeter.absorber_mm = 1.0;
    cfg.calorimeter.layers = 160;
    cfg.response.spot_energy_mev = 25.0;
    let gp = [(10.0, [0.8989, 0.9645, 0.9870]), (30.0, [0.8976, 0.9641, 0.9869]), (100.0, [0.8946, 0.9631, 0.9866])];
    for (energy, expected) in gp {
        let (f, stat, rm) = containment(&cfg, energy);
        eprintln!(
            "lead, E = {energy} GeV: within 1 R_M {:.4} (± {stat:.4}; GP integral {:.4}), 2 R_M {:.4} ({:.4}), 3.5 R_M {:.4} ({:.4}); R_M = {rm:.2} mm",
            f[0], expected[0], f[1], expected[1], f[2], expected[2]
        );
        assert!(stat < 0.001, "statistical error {stat}");
        for (k, (got, want)) in f.iter().zip(expected).enumerate() {
            assert!((got - want).abs() <= 3.0 * stat + 0.0003, "radius {k}: {got:.4} vs the GP integral {want:.4}");
        }
        assert!((f[0] - 0.90).abs() <= 0.015, "1 R_M: {}", f[0]);
        assert!((f[1] - 0.95).abs() <= 0.02, "2 R_M: {}", f[1]);
        assert!((f[2] - 0.99).abs() <= 0.01, "3.5 R_M: {}", f[2]);
    }
}

/// Acceptance 2b. "≥ 90 % of the energy inside 1 Molière radius" in the default sampling
/// stack (2 mm Pb / 4 mm LAr, 60 layers = 23 X0,eff; R_M,eff from the PDG mixture rule,
/// [`twinflow_calo::materials`]), 10, 30, 100 GeV electrons, 400 showers each:
/// f − 3σ ≥ 0.90 with σ the statistical error (≈ 0.05 %), and equal to GP's integral with
/// the sampling corrections (App. A.2.3, A.2.4; X0,eff = 15.59 mm, Ec,eff = 9.137 MeV,
/// Z = 69.36, F_S = 2.598, ê = 0.6906, 23.1 X0 deep; numpy as for 2a): within 1 R_M,eff
/// 0.9126, 0.9130, 0.9113; 2 R_M 0.9694, 0.9699, 0.9696; 3.5 R_M 0.9887, 0.9890, 0.9890.
#[test]
fn radial_containment_in_moliere_radii_in_a_sampling_stack() {
    let cfg = CaloConfig { events: 400, seed: 6, ..CaloConfig::default() };
    let gp = [(10.0, [0.9126, 0.9694, 0.9887]), (30.0, [0.9130, 0.9699, 0.9890]), (100.0, [0.9113, 0.9696, 0.9890])];
    for (energy, expected) in gp {
        let (f, stat, rm) = containment(&cfg, energy);
        eprintln!(
            "Pb/LAr, E = {energy} GeV: within 1 R_M,eff {:.4} (± {stat:.4}; GP integral {:.4}), 2 R_M {:.4} ({:.4}), 3.5 R_M {:.4} ({:.4}); R_M,eff = {rm:.2} mm",
            f[0], expected[0], f[1], expected[1], f[2], expected[2]
        );
        assert!(stat < 0.001, "statistical error {stat}");
        assert!(f[0] - 3.0 * stat >= 0.90, "1 R_M,eff: {:.4} ± {stat:.4}", f[0]);
        for (k, (got, want)) in f.iter().zip(expected).enumerate() {
            assert!((got - want).abs() <= 3.0 * stat + 0.0003, "radius {k}: {got:.4} vs the GP integral {want:.4}");
        }
    }
}

/// Weighted least squares of y = A x + B with weights w; returns (A, B, σ_A, σ_B).
fn weighted_line(x: &[f64], y: &[f64], w: &[f64]) -> (f64, f64, f64, f64) {
    let s: f64 = w.iter().sum();
    let sx: f64 = w.iter().zip(x).map(|(w, x)| w * x).sum();
    let sxx: f64 = w.iter().zip(x).map(|(w, x)| w * x * x).sum();
    let sy: f64 = w.iter().zip(y).map(|(w, y)| w * y).sum();
    let sxy: f64 = w.iter().zip(x).zip(y).map(|((w, x), y)| w * x * y).sum();
    let det = s * sxx - sx * sx;
    ((s * sxy - sx * sy) / det, (sxx * sy - sx * sxy) / det, (s / det).sqrt(), (sxx / det).sqrt())
}

/// Acceptance 3. A 2 mm Pb / 4 mm LAr stack configured with a = 10 %·√GeV and b = 0.7 %
/// (ATLAS LAr design values): at 2, 8, 32, 128 and 512 GeV, σ of visible/(f_s · deposited)
/// (relative to the deposited energy, so leakage fluctuations do not enter) is fitted by
/// weighted least squares in (σ/E)² = a²·⟨1/D⟩ + b², weights 1/Var(s²) with
/// Var(s²) = 2 s⁴/(n − 1); the fitted a and b must agree with the configuration within 3
/// of the fit's standard errors (≈ 1.6 % on a, ≈ 3.5 % on b with 800 events per energy).
#[test]
fn fitted_resolution_recovers_the_configured_terms() {
    let dir = scratch("resolution");
    let (a, b) = (0.10, 0.007);
    let energies = [2.0, 8.0, 32.0, 128.0, 512.0];
    let (mut x, mut y, mut w) = (Vec::new(), Vec::new(), Vec::new());
    for energy in energies {
        let out = format!("e{energy}.h5");
        let f = simulate(
            &dir,
            &out,
            &[
                "--absorber",
                "pb",
                "--absorber-mm",
                "2",
                "--active",
                "lar",
                "--active-mm",
                "4",
                "--layers",
                "60",
                "--cells",
                "1",
                "--cell-size-mm",
                "4000",
                "--energy",
                &energy.to_string(),
                "--stochastic",
                &a.to_string(),
                "--constant",
                &b.to_string(),
                "--spot-energy-mev",
                "500",
                "--events",
                "800",
                "--seed",
                "3",
            ],
        );
        assert_eq!(attr(&f, "stochastic_term"), a);
        assert_eq!(attr(&f, "constant_term"), b);
        let sf = attr(&f, "sampling_fraction");
        let visible = f64s(&f, "truth/visible");
        let deposited = f64s(&f, "truth/deposited");
        let ratio: Vec<f64> = visible.iter().zip(&deposited).map(|(v, d)| v / (sf * d)).collect();
        let (mean, sd) = mean_and_std(&ratio);
        let n = ratio.len() as f64;
        let inv_d = deposited.iter().map(|d| 1.0 / d).sum::<f64>() / n;
        eprintln!("E = {energy} GeV: ⟨V/(f_s D)⟩ = {mean:.4}, σ = {sd:.5}, ⟨D⟩/E = {:.4}", 1.0 / (inv_d * energy));
        assert!((mean - 1.0).abs() < 4.0 * sd / n.sqrt(), "visible/(f_s D) is biased: {mean}");
        let s2 = sd * sd;
        x.push(inv_d);
        y.push(s2);
        w.push((n - 1.0) / (2.0 * s2 * s2));
    }
    let (a2, b2, sa2, sb2) = weighted_line(&x, &y, &w);
    let (fit_a, fit_b) = (a2.sqrt(), b2.max(0.0).sqrt());
    let (sigma_a, sigma_b) = (sa2 / (2.0 * fit_a), sb2 / (2.0 * fit_b.max(1e-12)));
    eprintln!(
        "fit: a = {fit_a:.4} ± {sigma_a:.4} √GeV (configured {a}), b = {fit_b:.5} ± {sigma_b:.5} (configured {b})"
    );
    assert!(sigma_a < 0.1 * a && sigma_b < 0.25 * b, "the fit is too weak to test anything");
    assert!((fit_a - a).abs() <= 3.0 * sigma_a, "a = {fit_a} ± {sigma_a}, configured {a}");
    assert!((fit_b - b).abs() <= 3.0 * sigma_b, "b = {fit_b} ± {sigma_b}, configured {b}");
}

/// Acceptance 4. Energy conservation per event: deposited + leakage = incident energy to
/// 1e-9 relative, with real leakage (a short, narrow sampling stack; electrons and photons
/// over 1–200 GeV; beam spread), and the cells hold the deposits: in homogeneous lead
/// without fluctuations the cells sum to the deposited energy (f32 precision, 1e-6).
#[test]
fn energy_is_conserved_per_event() {
    let dir = scratch("conservation");
    let f = simulate(
        &dir,
        "leaky.h5",
        &[
            "--layers",
            "15",
            "--cells",
            "5",
            "--cell-size-mm",
            "20",
            "--particle",
            "e-,gamma",
            "--energy-range",
            "1:200",
            "--spectrum",
            "log-uniform",
            "--beam-spread-mm",
            "10",
            "--events",
            "200",
        ],
    );
    let energy = f64s(&f, "truth/energy");
    let deposited = f64s(&f, "truth/deposited");
    let leakage = f64s(&f, "truth/leakage");
    let mut worst = 0.0_f64;
    for ((e, d), l) in energy.iter().zip(&deposited).zip(&leakage) {
        worst = worst.max(((d + l) / e - 1.0).abs());
        assert!(*d >= 0.0 && *l >= 0.0);
    }
    let leaky = leakage.iter().zip(&energy).filter(|(l, e)| **l > 0.01 * **e).count();
    eprintln!("worst relative imbalance {worst:e}; {leaky} of {} events leak > 1 %", energy.len());
    assert!(worst <= 1e-9, "deposited + leakage differs from E by {worst:e}");
    assert!(leaky > energy.len() / 2, "the test needs leakage: {leaky} leaky events");
    let particles = f.dataset("truth/particle").unwrap().read_raw::<i32>().unwrap();
    assert!(particles.contains(&11) && particles.contains(&22) && particles.iter().all(|p| [11, 22].contains(p)));

    let f = simulate(
        &dir,
        "lead.h5",
        &[
            "--homogeneous",
            "--absorber-mm",
            "3",
            "--layers",
            "40",
            "--cells",
            "9",
            "--cell-size-mm",
            "10",
            "--stochastic",
            "0",
            "--constant",
            "0",
            "--energy",
            "20",
            "--events",
            "50",
        ],
    );
    let (values, shape) = cells(&f);
    let per_event: usize = shape[1..].iter().product();
    let deposited = f64s(&f, "truth/deposited");
    let visible = f64s(&f, "truth/visible");
    for (k, d) in deposited.iter().enumerate() {
        let sum: f64 = values[k * per_event..(k + 1) * per_event].iter().map(|&v| f64::from(v)).sum();
        assert!((sum - d).abs() <= 1e-6 * d, "event {k}: cells sum to {sum}, deposited {d}");
        assert!((visible[k] - d).abs() <= 1e-12 * d, "event {k}: visible {} vs deposited {d}", visible[k]);
    }
}

/// Acceptance 7. Conditions: the temperature follows the configured curve (290 → 300 K
/// over the run), the gain is 1 + k (T − T_ref) with k = −2 %/K (1.1 → 0.9), the mean of
/// Σcells/(f_s E) follows the gain in every tenth of the run (4σ, σ from the bin's own
/// spread), and dead cells (5 % from the seed plus one listed) read exactly 0 in every
/// event, noise included.
#[test]
fn conditions_drive_the_response_and_dead_cells_read_zero() {
    let dir = scratch("conditions");
    let events = 800;
    let f = simulate(
        &dir,
        "cond.h5",
        &[
            "--events",
            &events.to_string(),
            "--energy",
            "20",
            "--layers",
            "60",
            "--cells",
            "5",
            "--cell-size-mm",
            "40",
            "--spot-energy-mev",
            "200",
            "--noise-mev",
            "1",
            "--temperature",
            "0:290,799:300",
            "--reference-temperature",
            "295",
            "--gain-per-kelvin",
            "-0.02",
            "--dead-fraction",
            "0.05",
            "--dead-cell",
            "3,2,2",
        ],
    );
    let temperature = f64s(&f, "conditions/temperature");
    let gain = f64s(&f, "conditions/gain");
    for (i, (t, g)) in temperature.iter().zip(&gain).enumerate() {
        let expected_t = 290.0 + 10.0 * i as f64 / 799.0;
        assert!((t - expected_t).abs() < 1e-9, "event {i}: T = {t}, expected {expected_t}");
        assert!((g - (1.0 - 0.02 * (t - 295.0))).abs() < 1e-12, "event {i}: gain {g}");
    }
    let dead = f.dataset("conditions/dead").unwrap().read_raw::<u8>().unwrap();
    assert_eq!(dead.len(), 60 * 5 * 5);
    assert_eq!(dead[(3 * 5 + 2) * 5 + 2], 1, "the listed cell is dead");
    let n_dead = dead.iter().filter(|&&d| d == 1).count();
    // Binomial(1500, 0.05): mean 75, σ ≈ 8.4; ±4σ, plus the listed cell.
    assert!((41..=110).contains(&n_dead), "{n_dead} dead cells");
    let (values, _) = cells(&f);
    let per_event = dead.len();
    for ev in 0..events {
        for (c, &d) in dead.iter().enumerate() {
            if d == 1 {
                assert_eq!(values[ev * per_event + c].to_bits(), 0, "dead cell {c} reads non-zero in event {ev}");
            }
        }
    }
    let sf = attr(&f, "sampling_fraction");
    let energy = f64s(&f, "truth/energy");
    let q: Vec<f64> = (0..events)
        .map(|ev| {
            values[ev * per_event..(ev + 1) * per_event].iter().map(|&v| f64::from(v)).sum::<f64>() / (sf * energy[ev])
        })
        .collect();
    // Response per unit gain (containment × live fraction), the same in every event.
    let unit = q.iter().zip(&gain).map(|(q, g)| q / g).sum::<f64>() / events as f64;
    let overall = q.iter().sum::<f64>() / events as f64;
    let mut worst_gain_blind = 0.0_f64;
    for bin in 0..10 {
        let range = bin * events / 10..(bin + 1) * events / 10;
        let (mean, sd) = mean_and_std(&q[range.clone()]);
        let mean_gain = gain[range.clone()].iter().sum::<f64>() / range.len() as f64;
        let err = sd / (range.len() as f64).sqrt();
        eprintln!("events {range:?}: ⟨Σcells/(f_s E)⟩ = {mean:.4} ± {err:.4}, gain × response {:.4}", unit * mean_gain);
        assert!((mean - unit * mean_gain).abs() <= 4.0 * err, "bin {bin}: {mean} vs {}", unit * mean_gain);
        worst_gain_blind = worst_gain_blind.max((mean - overall).abs() / err);
    }
    // The test has the power to see the drift: a constant response is off by many σ.
    assert!(worst_gain_blind > 10.0, "a gain-blind response would pass ({worst_gain_blind:.1} σ)");
}

/// Acceptance 6. Invalid input is exit code 3 with the field (and its flag) named, never a
/// panic, and leaves no output behind.
#[test]
fn invalid_input_is_exit_code_3_naming_the_field() {
    let dir = scratch("invalid");
    std::fs::write(dir.join("typo.json"), r#"{"calorimeter": {"absorber_thickness": 2}}"#).unwrap();
    std::fs::write(dir.join("bad.json"), r#"{"calorimeter": {"active": "kryptonite", "layers": 0}}"#).unwrap();
    let cases: [(&[&str], &[&str]); 6] = [
        (&["--absorber", "unobtainium"], &["calorimeter.absorber", "--absorber", "unobtainium", "hint: one of pb"]),
        (&["--absorber-mm", "-2"], &["calorimeter.absorber_mm", "--absorber-mm", "-2"]),
        (&["--config", "missing.json"], &["cannot read the configuration", "missing.json"]),
        (&["--config", "typo.json"], &["typo.json", "unknown field `absorber_thickness`"]),
        (&["--config", "bad.json", "--cells", "3"], &["calorimeter.active", "kryptonite", "calorimeter.layers"]),
        (&["--energy", "-5", "--dead-cell", "1,2"], &["beam.energy_gev", "conditions.dead_cells[0]"]),
    ];
    for (args, needles) in cases {
        let mut cmd = calo(&["--out", "never.h5", "--events", "5"]);
        cmd.args(args);
        let out = run(cmd, &dir, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: exit code for invalid input\n{stderr}");
        assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{args:?}: stderr lacks `{needle}`:\n{stderr}");
        }
        assert!(!dir.join("never.h5").exists() && !dir.join("never.h5.partial").exists());
    }
    let out = run(calo(&["--events", "5"]), &dir, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "a missing --out is a usage error");
}

/// The output layout is the documented contract (names, types, shapes, chunking and
/// compression, attributes), and `h5dump` reads it; `--help` has an example.
#[test]
fn output_layout_is_the_contract_and_h5dump_reads_it() {
    let dir = scratch("layout");
    let f = simulate(
        &dir,
        "layout.h5",
        &["--events", "70", "--layers", "12", "--cells", "7", "--chunk-events", "32", "--energy", "5"],
    );
    let c = f.dataset("cells").unwrap().info().unwrap();
    assert_eq!(c.shape, [70, 12, 7, 7]);
    assert_eq!(c.chunk, Some(vec![32, 12, 7, 7]));
    assert_eq!(c.element, ElementType::F32);
    assert!(c.deflate && c.shuffle, "{c:?}");
    let info = |name: &str| f.dataset(name).unwrap().info().unwrap();
    for name in ["truth/energy", "truth/x", "truth/y", "truth/deposited", "truth/leakage", "truth/visible"] {
        let ds = info(name);
        assert!(ds.element == ElementType::F64 && ds.shape == [70], "{name}");
    }
    assert_eq!(info("truth/particle").element, ElementType::I32);
    assert_eq!(info("conditions/temperature").element, ElementType::F64);
    assert_eq!(info("conditions/gain").element, ElementType::F64);
    let dead = info("conditions/dead");
    assert!(dead.element == ElementType::U8 && dead.shape == [12, 7, 7]);
    let ids = f.dataset("event_id").unwrap().read_raw::<u64>().unwrap();
    assert_eq!(ids, (0..70).collect::<Vec<u64>>());
    let Some(Attr::Str(configuration)) = f.attr("configuration").unwrap() else { panic!("no `configuration`") };
    let configuration: serde_json::Value = serde_json::from_str(&configuration).unwrap();
    assert_eq!(configuration["calorimeter"]["layers"], 12);
    assert_eq!(configuration["events"], 70);
    let x0 = attr(&f, "radiation_length_mm");
    let (rm, ec) = (attr(&f, "moliere_radius_mm"), attr(&f, "critical_energy_mev"));
    assert!((rm - 21.2 * x0 / ec).abs() < 1e-9 * rm, "R_M = 21.2 MeV X0/Ec");
    let header = ok(
        run(
            {
                let mut c = Command::new("h5dump");
                c.args(["-H", "layout.h5"]);
                c
            },
            &dir,
            Duration::from_secs(30),
        ),
        "h5dump",
    );
    let header = String::from_utf8_lossy(&header.stdout);
    for needle in [
        "DATASET \"cells\"",
        "DATASPACE  SIMPLE { ( 70, 12, 7, 7 ) / ( 70, 12, 7, 7 ) }",
        "H5T_IEEE_F32LE",
        "GROUP \"truth\"",
        "GROUP \"conditions\"",
        "H5T_STD_U8LE",
        "H5T_STD_U64LE",
        "ATTRIBUTE \"sampling_fraction\"",
        "ATTRIBUTE \"twinflow_kernel\"",
        "ATTRIBUTE \"mpi_ranks\"",
    ] {
        assert!(header.contains(needle), "h5dump -H lacks `{needle}`:\n{header}");
    }
    let help = ok(run(calo(&["--help"]), &dir, Duration::from_secs(30)), "help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("twin-kernel calo --events 2000") && help.contains("--absorber-mm"), "{help}");
}

/// Acceptance 5. Identical output for 1, 2 and 4 MPI ranks (compiled only with
/// `--features mpi`; MPICH's `mpiexec`).
#[cfg(feature = "mpi")]
mod mpi {
    use super::*;

    fn bits(f: &H5Group, name: &str) -> Vec<u64> {
        let ds = f.dataset(name).unwrap_or_else(|e| panic!("`{name}`: {e}"));
        match ds.info().unwrap().element {
            ElementType::F32 => ds.read_raw::<f32>().unwrap().iter().map(|v| u64::from(v.to_bits())).collect(),
            ElementType::F64 => ds.read_raw::<f64>().unwrap().iter().map(|v| v.to_bits()).collect(),
            ElementType::I32 => ds.read_raw::<i32>().unwrap().iter().map(|&v| v as u64).collect(),
            ElementType::U8 => ds.read_raw::<u8>().unwrap().iter().map(|&v| u64::from(v)).collect(),
            _ => ds.read_raw::<u64>().unwrap(),
        }
    }

    /// Events are pure functions of (seed, event id) and rank 0 writes each at its index, so
    /// every dataset is bitwise identical for any rank count; chunks of 16 events straddle
    /// the rank boundaries (150 events: 75 | 75, 38 | 38 | 37 | 37), and every rank reports
    /// `rank i of N` (a mismatched launcher would start N independent 1-rank jobs).
    #[test]
    fn output_does_not_depend_on_the_rank_count() {
        let dir = scratch("mpi");
        let args = [
            "calo",
            "--events",
            "150",
            "--seed",
            "9",
            "--particle",
            "e-,gamma",
            "--energy-range",
            "2:60",
            "--layers",
            "16",
            "--cells",
            "7",
            "--noise-mev",
            "10",
            "--temperature-drift",
            "2",
            "--dead-fraction",
            "0.02",
            "--beam-spread-mm",
            "5",
            "--chunk-events",
            "16",
        ];
        for n in [1_usize, 2, 4] {
            let mut cmd = Command::new("mpiexec");
            cmd.args(["-n", &n.to_string(), BIN])
                .args(args)
                .args(["--out", &format!("r{n}.h5")])
                .env("TWINFLOW_LOG", "info");
            let out = ok(run(cmd, &dir, Duration::from_secs(240)), &format!("mpiexec -n {n}"));
            let stderr = String::from_utf8_lossy(&out.stderr);
            for r in 0..n {
                assert!(stderr.contains(&format!("rank {r} of {n}")), "rank {r} of {n} missing:\n{stderr}");
            }
            let header = ok(
                run(
                    {
                        let mut c = Command::new("h5dump");
                        c.args(["-H", &format!("r{n}.h5")]);
                        c
                    },
                    &dir,
                    Duration::from_secs(30),
                ),
                "h5dump",
            );
            assert!(String::from_utf8_lossy(&header.stdout).contains("DATASET \"cells\""));
        }
        let names = [
            "cells",
            "truth/energy",
            "truth/particle",
            "truth/x",
            "truth/y",
            "truth/deposited",
            "truth/leakage",
            "truth/visible",
            "conditions/temperature",
            "conditions/gain",
            "conditions/dead",
            "event_id",
        ];
        let reference = open(&dir.join("r1.h5"));
        for n in [2_usize, 4] {
            let other = open(&dir.join(format!("r{n}.h5")));
            for name in names {
                let (a, b) = (bits(&reference, name), bits(&other, name));
                assert_eq!(a.len(), b.len(), "`{name}` length with {n} ranks");
                let first = a.iter().zip(&b).position(|(x, y)| x != y);
                assert!(first.is_none(), "`{name}` differs at index {first:?} with {n} ranks");
            }
            assert_eq!(other.attr("mpi_ranks").unwrap(), Some(Attr::I32(vec![n as i32])));
        }
    }
}
