//! Materials and the effective medium of a sampling stack.
//!
//! # Material constants
//! Z, A, density, radiation length X0 and the minimum-ionization stopping power are the
//! tabulated values of the PDG "Atomic and Nuclear Properties of Materials"
//! (pdg.lbl.gov/AtomicNuclearProperties). Polystyrene (plastic scintillator, C8H8) gets the
//! mass-fraction-weighted Z and A of its elements, the same mixing rule as for the stack below.
//! A user-defined material without a tabulated X0 gets Dahl's fit (PDG Review, "Passage of
//! particles through matter", eq. 34.26; good to about 2.5 % for Z > 2):
//!
//! ```text
//! X0 = 716.4 g cm⁻² · A / (Z (Z + 1) ln(287/√Z))
//! ```
//!
//! The critical energy is Ec = 610 MeV/(Z + 1.24) (solids and liquids) and the Molière
//! radius R_M = Es · X0/Ec with Es = 21.2 MeV (PDG eqs. 34.24, 34.28).
//!
//! # Effective medium of a layer (PDG mixture rules, as in Geant4 GFlash)
//! A sampling layer of absorber (thickness d₁, density ρ₁) and active material (d₂, ρ₂) is
//! described as one medium with mass fractions w_j = ρ_j d_j / Σ ρ_k d_k:
//!
//! ```text
//! ρ_eff  = Σ ρ_j d_j / Σ d_j
//! 1/X0   = Σ w_j / X0_j                    (X0 in g cm⁻²)
//! 1/R_M  = (1/Es) Σ w_j Ec_j / X0_j        (R_M in g cm⁻²)
//! Ec     = Es · X0 / R_M  = X0 Σ w_j Ec_j / X0_j
//! Z, A   = Σ w_j Z_j,  Σ w_j A_j
//! ```
//!
//! # Sampling geometry (Grindhammer & Peters, hep-ex/0001020 §5, App. A.2)
//! A sampling stack changes the shower beyond its effective X0 and R_M: GP parametrise
//! that with the sampling frequency `F_S = X0,eff/(d₁ + d₂)` (layers per radiation length)
//! and the electron-to-mip ratio `ê` below; [`SamplingGeometry`] carries both to the shower
//! ([`super::shower::Longitudinal::sampling`], [`super::shower::Radial::at`]). A
//! homogeneous medium has none.
//!
//! # Sampling fraction
//! The fraction of a minimum-ionizing particle's energy lost in the active layers,
//! `f_mip = d₂ S₂ / (d₁ S₁ + d₂ S₂)` with S = ρ · (dE/dx)_min, times the electron-to-mip
//! ratio `ê = 1/(1 + 0.007 (Z_absorber − Z_active))` (the GFlash sampling parametrisation,
//! Grindhammer & Peters hep-ex/0001020 §5): soft shower electrons and photons deposit
//! relatively less in the active layers of a high-Z stack (transition effect). A measured
//! value can be configured instead.

/// A material. Compounds carry mass-fraction-weighted Z and A.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Material {
    /// Name used in the configuration (case-insensitive).
    pub name: String,
    /// Atomic number (effective for a compound).
    pub z: f64,
    /// Atomic mass, g mol⁻¹ (effective for a compound).
    pub a: f64,
    /// Density, g cm⁻³.
    pub density_g_cm3: f64,
    /// Radiation length, g cm⁻²; `None` uses Dahl's formula ([`dahl_x0_g_cm2`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x0_g_cm2: Option<f64>,
    /// Minimum-ionization stopping power, MeV cm² g⁻¹ (needed for the sampling fraction of
    /// an active or absorber layer, unless a sampling fraction is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedx_min_mev_cm2_g: Option<f64>,
}

/// Es of the Molière radius, MeV (PDG eq. 34.28).
pub const ES_MEV: f64 = 21.2;

/// `(names, Z, A, density, X0, (dE/dx)_min)`; the first name is the canonical one.
type Row = (&'static [&'static str], f64, f64, f64, f64, f64);

/// The built-in materials, from the PDG Atomic and Nuclear Properties tables.
const BUILTIN: [Row; 7] = [
    (&["pb", "lead"], 82.0, 207.2, 11.35, 6.37, 1.122),
    (&["w", "tungsten"], 74.0, 183.84, 19.30, 6.76, 1.145),
    (&["fe", "iron"], 26.0, 55.845, 7.874, 13.84, 1.451),
    (&["cu", "copper"], 29.0, 63.546, 8.960, 12.86, 1.403),
    (&["lar", "liquid-argon"], 18.0, 39.948, 1.396, 19.55, 1.519),
    // Polystyrene C8H8: mass fractions C 0.9226, H 0.0774 → Z = 5.613, A = 11.16.
    (&["scintillator", "polystyrene", "scint"], 5.613, 11.16, 1.060, 43.79, 1.936),
    (&["si", "silicon"], 14.0, 28.0855, 2.329, 21.82, 1.664),
];

/// Canonical names of the built-in materials.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|b| b.0[0]).collect()
}

/// A built-in material by name or alias (case-insensitive).
pub fn builtin(name: &str) -> Option<Material> {
    let lower = name.to_ascii_lowercase();
    BUILTIN.iter().find(|b| b.0.contains(&lower.as_str())).map(|&(names, z, a, density, x0, dedx)| Material {
        name: names[0].to_string(),
        z,
        a,
        density_g_cm3: density,
        x0_g_cm2: Some(x0),
        dedx_min_mev_cm2_g: Some(dedx),
    })
}

/// Dahl's fit of the radiation length, g cm⁻² (see the module docs).
pub fn dahl_x0_g_cm2(z: f64, a: f64) -> f64 {
    716.4 * a / (z * (z + 1.0) * (287.0 / z.sqrt()).ln())
}

/// Critical energy Ec = 610 MeV/(Z + 1.24), MeV.
pub fn critical_energy_mev(z: f64) -> f64 {
    610.0 / (z + 1.24)
}

impl Material {
    /// Radiation length, g cm⁻²: tabulated, else Dahl's formula.
    pub fn x0_g_cm2(&self) -> f64 {
        self.x0_g_cm2.unwrap_or_else(|| dahl_x0_g_cm2(self.z, self.a))
    }
    /// Radiation length, mm.
    pub fn x0_mm(&self) -> f64 {
        10.0 * self.x0_g_cm2() / self.density_g_cm3
    }
    /// Critical energy, MeV.
    pub fn critical_energy_mev(&self) -> f64 {
        critical_energy_mev(self.z)
    }
    /// Molière radius, mm.
    pub fn moliere_radius_mm(&self) -> f64 {
        ES_MEV * self.x0_mm() / self.critical_energy_mev()
    }
    /// Checks the constants; returns what is wrong.
    pub fn check(&self) -> Result<(), MaterialError> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let out_of_range = |field: &'static str, requirement: &'static str, value: f64| MaterialError::OutOfRange {
            field,
            requirement,
            value,
        };
        if !(self.z.is_finite() && (1.0..=100.0).contains(&self.z)) {
            return Err(out_of_range("z", "in [1, 100]", self.z));
        }
        if !positive(self.a) {
            return Err(out_of_range("a", "> 0 g/mol", self.a));
        }
        if !positive(self.density_g_cm3) {
            return Err(out_of_range("density_g_cm3", "> 0", self.density_g_cm3));
        }
        if let Some(x0) = self.x0_g_cm2.filter(|&v| !positive(v)) {
            return Err(out_of_range("x0_g_cm2", "> 0", x0));
        }
        if let Some(s) = self.dedx_min_mev_cm2_g.filter(|&v| !positive(v)) {
            return Err(out_of_range("dedx_min_mev_cm2_g", "> 0", s));
        }
        if !positive(self.x0_g_cm2()) {
            return Err(MaterialError::NoRadiationLength { z: self.z });
        }
        Ok(())
    }
}

/// What Grindhammer–Peters' sampling corrections need of a sampling stack.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SamplingGeometry {
    /// Sampling frequency F_S = X0,eff/(d_absorber + d_active).
    pub frequency: f64,
    /// Electron-to-mip ratio ê = 1/(1 + 0.007 (Z_absorber − Z_active)).
    pub e_hat: f64,
}

/// Electron-to-mip ratio of an absorber/active pair (GFlash, hep-ex/0001020 §5).
pub fn e_over_mip(absorber: &Material, active: &Material) -> f64 {
    1.0 / (1.0 + 0.007 * (absorber.z - active.z))
}

/// The effective medium of the calorimeter: what the shower parametrisation sees.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Medium {
    /// Effective atomic number.
    pub z: f64,
    /// Effective atomic mass, g mol⁻¹.
    pub a: f64,
    /// Mean density, g cm⁻³.
    pub density_g_cm3: f64,
    /// Radiation length, mm.
    pub x0_mm: f64,
    /// Critical energy, MeV.
    pub critical_energy_mev: f64,
    /// Molière radius, mm.
    pub moliere_radius_mm: f64,
    /// Thickness of one layer (absorber + active), mm.
    pub layer_mm: f64,
    /// Fraction of the deposited energy seen in the active layers.
    pub sampling_fraction: f64,
    /// Sampling frequency and ê of a sampling stack; `None` for a homogeneous medium.
    pub geometry: Option<SamplingGeometry>,
}

impl Medium {
    /// A homogeneous calorimeter: every layer is `material` and fully active.
    pub fn homogeneous(material: &Material, layer_mm: f64) -> Self {
        Self {
            z: material.z,
            a: material.a,
            density_g_cm3: material.density_g_cm3,
            x0_mm: material.x0_mm(),
            critical_energy_mev: material.critical_energy_mev(),
            moliere_radius_mm: material.moliere_radius_mm(),
            layer_mm,
            sampling_fraction: 1.0,
            geometry: None,
        }
    }

    /// A sampling calorimeter of `absorber_mm` of `absorber` and `active_mm` of `active` per
    /// layer (mixture rules in the module docs). The sampling fraction is `sampling_fraction`
    /// when given, else computed from the stopping powers, which must then be known.
    pub fn sampling(
        absorber: &Material,
        absorber_mm: f64,
        active: &Material,
        active_mm: f64,
        sampling_fraction: Option<f64>,
    ) -> Result<Self, MaterialError> {
        let layers = [(absorber, absorber_mm), (active, active_mm)];
        let mass: f64 = layers.iter().map(|(m, d)| m.density_g_cm3 * d).sum();
        let w: Vec<f64> = layers.iter().map(|(m, d)| m.density_g_cm3 * d / mass).collect();
        let layer_mm = absorber_mm + active_mm;
        let density = mass / layer_mm;
        let x0_g = 1.0 / layers.iter().zip(&w).map(|((m, _), w)| w / m.x0_g_cm2()).sum::<f64>();
        let ec_over_x0: f64 = layers.iter().zip(&w).map(|((m, _), w)| w * m.critical_energy_mev() / m.x0_g_cm2()).sum();
        let rm_g = ES_MEV / ec_over_x0;
        let z = layers.iter().zip(&w).map(|((m, _), w)| w * m.z).sum();
        let a = layers.iter().zip(&w).map(|((m, _), w)| w * m.a).sum();
        let sampling_fraction = match sampling_fraction {
            Some(f) => f,
            None => {
                let stopping = |m: &Material| {
                    m.dedx_min_mev_cm2_g
                        .map(|s| s * m.density_g_cm3)
                        .ok_or_else(|| MaterialError::NoStoppingPower { name: m.name.clone() })
                };
                let (s_abs, s_act) = (stopping(absorber)?, stopping(active)?);
                let f_mip = active_mm * s_act / (absorber_mm * s_abs + active_mm * s_act);
                (f_mip * e_over_mip(absorber, active)).min(1.0)
            }
        };
        let x0_mm = 10.0 * x0_g / density;
        Ok(Self {
            z,
            a,
            density_g_cm3: density,
            x0_mm,
            critical_energy_mev: x0_g * ec_over_x0,
            moliere_radius_mm: 10.0 * rm_g / density,
            layer_mm,
            sampling_fraction,
            geometry: Some(SamplingGeometry { frequency: x0_mm / layer_mm, e_hat: e_over_mip(absorber, active) }),
        })
    }
}

/// What is wrong with the constants of a material or with a sampling stack.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MaterialError {
    /// A constant is outside its physical range.
    #[error("`{field}` must be {requirement}, got {value}")]
    OutOfRange {
        /// Field of the material.
        field: &'static str,
        /// The range it must be in.
        requirement: &'static str,
        /// The value given.
        value: f64,
    },
    /// Dahl's formula gives no radiation length for this Z.
    #[error("Dahl's formula gives no positive X0 for Z = {z}; hint: set `x0_g_cm2`")]
    NoRadiationLength {
        /// Atomic number of the material.
        z: f64,
    },
    /// The sampling fraction needs a stopping power the material does not have.
    #[error("material `{name}` has no `dedx_min_mev_cm2_g`; hint: add it or configure `sampling_fraction`")]
    NoStoppingPower {
        /// Name of the material.
        name: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dahl's fit reproduces the tabulated PDG radiation lengths of the elements to 2.5 %
    /// (the accuracy the PDG Review quotes for it).
    #[test]
    fn dahl_formula_matches_the_pdg_tables() {
        for name in ["pb", "w", "fe", "cu", "lar", "si"] {
            let m = builtin(name).unwrap();
            let rel = dahl_x0_g_cm2(m.z, m.a) / m.x0_g_cm2() - 1.0;
            assert!(rel.abs() < 0.025, "{name}: {rel:+.4}");
        }
    }

    /// PDG tables: Pb X0 = 0.5612 cm, R_M = 1.602 cm (with the tabulated Ec = 7.43 MeV; the
    /// 610/(Z + 1.24) formula gives 7.33 MeV, hence R_M ≈ 1.62 cm).
    #[test]
    fn lead_constants() {
        let pb = builtin("Lead").unwrap();
        assert!((pb.x0_mm() - 5.612).abs() < 0.005, "{}", pb.x0_mm());
        assert!((pb.critical_energy_mev() - 7.328).abs() < 0.01);
        assert!((pb.moliere_radius_mm() - 16.2).abs() < 0.1, "{}", pb.moliere_radius_mm());
        assert!(builtin("unobtainium").is_none());
    }

    /// A stack of one material behaves like that material; mixing Pb and LAr lands between.
    #[test]
    fn mixture_rules_are_consistent() {
        let pb = builtin("pb").unwrap();
        let same = Medium::sampling(&pb, 2.0, &pb, 3.0, Some(1.0)).unwrap();
        let homo = Medium::homogeneous(&pb, 5.0);
        for (a, b) in [(same.x0_mm, homo.x0_mm), (same.moliere_radius_mm, homo.moliere_radius_mm), (same.z, homo.z)] {
            assert!((a - b).abs() < 1e-9 * b, "{a} vs {b}");
        }
        assert!((same.critical_energy_mev - homo.critical_energy_mev).abs() < 1e-9);
        let lar = builtin("lar").unwrap();
        let m = Medium::sampling(&pb, 2.0, &lar, 4.0, None).unwrap();
        assert!(m.x0_mm > pb.x0_mm() && m.x0_mm < lar.x0_mm());
        assert!(m.z < 82.0 && m.z > 18.0);
        // R_M = Es X0 / Ec holds for the mixture too.
        assert!((m.moliere_radius_mm - ES_MEV * m.x0_mm / m.critical_energy_mev).abs() < 1e-9);
        // 2 mm Pb / 4 mm LAr: f_mip = 0.25, ê = 0.69 → about 0.17 (ATLAS-like stacks: 0.15–0.2).
        assert!((m.sampling_fraction - 0.1725).abs() < 0.002, "{}", m.sampling_fraction);
        // X0,eff = 15.6 mm over 6 mm layers: F_S = 2.6; ê = 1/(1 + 0.007 · 64) = 0.6906.
        let g = m.geometry.unwrap();
        assert!((g.frequency - m.x0_mm / 6.0).abs() < 1e-12 && (g.frequency - 2.6).abs() < 0.01, "{g:?}");
        assert!((g.e_hat - 0.690_608).abs() < 1e-6, "{g:?}");
        assert_eq!(homo.geometry, None);
    }
}
