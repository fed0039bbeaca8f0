//! Training tables built from the outputs of earlier workflow steps.
//!
//! `flood`: one row per ensemble member, from the gauge files of `twin-kernel flood`
//! (`result_gauges.nc`). The features are scenario parameters read back from the file's
//! `twinflow_parameters` attribute (the flood configuration the member actually ran, after
//! `--inflow-peak`/`--rain` were applied): `inflow_peak` (largest discharge of the inflow
//! hydrograph, m³ s⁻¹, 0 without inflow), `rain` (`rainfall_mm_per_h`, mm h⁻¹) and
//! `manning_n` (s m⁻¹ᐟ³). The target of each gauge is its maximum depth `max_t h`, m, over
//! the *sampled* series (every `gauge_interval` seconds, so a peak between samples is
//! missed).

use std::path::{Path, PathBuf};

use super::error::TrainError;
use twinflow_contract::datasets::MEMBER;
use twinflow_exchange::{Attr, DType, Dataset, Dim, Values, Variable, read_dataset};

/// A scenario parameter of a flood member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodParam {
    /// Peak of the inflow hydrograph, m³ s⁻¹ (0 without inflow).
    InflowPeak,
    /// Uniform rainfall, mm h⁻¹.
    Rain,
    /// Manning roughness, s m⁻¹ᐟ³.
    ManningN,
}

/// Why a scenario parameter cannot be read from a member's `twinflow_parameters`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ParamError {
    #[error("no number `{0}`")]
    NoNumber(&'static str),
    #[error("no `inflow.hydrograph` list")]
    NoHydrograph,
    #[error("an `inflow.hydrograph` point is not [t, q]")]
    NotAPoint,
}

impl FloodParam {
    /// Column name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Self::InflowPeak => "inflow_peak",
            Self::Rain => "rain",
            Self::ManningN => "manning_n",
        }
    }

    /// Units (UDUNITS).
    pub fn units(self) -> &'static str {
        match self {
            Self::InflowPeak => "m3 s-1",
            Self::Rain => "mm h-1",
            Self::ManningN => "s m-1/3",
        }
    }

    fn read(self, config: &serde_json::Value) -> Result<f64, ParamError> {
        let field =
            |name: &'static str| config.get(name).and_then(serde_json::Value::as_f64).ok_or(ParamError::NoNumber(name));
        match self {
            Self::Rain => field("rainfall_mm_per_h"),
            Self::ManningN => field("manning_n"),
            Self::InflowPeak => match config.get("inflow") {
                None | Some(serde_json::Value::Null) => Ok(0.0),
                Some(inflow) => {
                    let points = inflow
                        .get("hydrograph")
                        .and_then(serde_json::Value::as_array)
                        .ok_or(ParamError::NoHydrograph)?;
                    points
                        .iter()
                        .map(|p| p.get(1).and_then(serde_json::Value::as_f64).ok_or(ParamError::NotAPoint))
                        .try_fold(0.0_f64, |m, q| q.map(|q| m.max(q)))
                }
            },
        }
    }
}

/// The flood-surrogate training table.
#[derive(Debug, Clone, PartialEq)]
pub struct FloodTable {
    /// Parameters, in column order.
    pub params: Vec<FloodParam>,
    /// Gauge names, in column order.
    pub gauges: Vec<String>,
    /// Member files, in row order.
    pub members: Vec<PathBuf>,
    /// `[member, param]`, row-major.
    pub features: Vec<f64>,
    /// `[member, gauge]` maximum depth, m, row-major.
    pub target: Vec<f64>,
}

/// Reads each member's gauge file: parameters and the maximum depth of every gauge (or of
/// the gauge `gauge` only). Every member must have the same gauges.
pub fn tabulate_flood(files: &[PathBuf], params: &[FloodParam], gauge: Option<&str>) -> Result<FloodTable, TrainError> {
    if files.is_empty() {
        return Err(TrainError::Request("no flood results given; hint: `--results m0/result_gauges.nc ...`".into()));
    }
    let mut table = FloodTable {
        params: params.to_vec(),
        gauges: Vec::new(),
        members: Vec::new(),
        features: Vec::new(),
        target: Vec::new(),
    };
    for path in files {
        let bad = |reason: String| TrainError::Input { path: path.clone(), reason };
        let ds = read_dataset(path).map_err(|e| bad(format!("not a readable flood gauge file ({e})")))?;
        let config_text =
            ds.attr(twinflow_contract::provenance::PARAMETERS_ATTR).and_then(Attr::as_str).ok_or_else(|| {
                bad("has no `twinflow_parameters` attribute; hint: use the gauge file of `twin-kernel flood`".into())
            })?;
        let config: serde_json::Value = serde_json::from_str(config_text)
            .map_err(|e| bad(format!("attribute `twinflow_parameters` is not JSON ({e})")))?;
        for p in params {
            let v = p.read(&config).map_err(|r| bad(format!("attribute `twinflow_parameters` has {r}")))?;
            table.features.push(v);
        }
        let names = match ds.variable("station_name").map(|v| &v.values) {
            Some(Values::Str(names)) => names.clone(),
            _ => return Err(bad("has no `station_name` variable; hint: is it a gauge file (`*_gauges.nc`)?".into())),
        };
        let h = ds
            .variable(twinflow_contract::datasets::DEPTH)
            .ok_or_else(|| bad("has no gauge depth variable `h`".into()))?;
        let shape = ds.shape_of(h);
        let values = h.masked().ok_or_else(|| bad("`h` is not numeric".into()))?;
        let [stations, times] = shape[..] else {
            return Err(bad(format!("`h` has shape {shape:?}, expected [station, time]")));
        };
        if stations != names.len() || times == 0 {
            return Err(bad(format!("`h` has shape {shape:?} for {} stations", names.len())));
        }
        let mut maxima = Vec::with_capacity(stations);
        for (s, series) in values.chunks_exact(times).enumerate() {
            if let Some(t) = series.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!("`h` of gauge `{}` has a missing value at time index {t}", names[s])));
            }
            maxima.push(series.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        }
        let (gauges, maxima) = match gauge {
            None => (names, maxima),
            Some(g) => {
                let k = names.iter().position(|n| n == g).ok_or_else(|| {
                    bad(format!(
                        "has no gauge `{g}`; hint: it has {}",
                        names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                    ))
                })?;
                (vec![names[k].clone()], vec![maxima[k]])
            }
        };
        if table.members.is_empty() {
            table.gauges = gauges;
        } else if table.gauges != gauges {
            return Err(bad(format!("has the gauges {gauges:?}, the first member {:?}", table.gauges)));
        }
        table.target.extend(maxima);
        table.members.push(path.clone());
    }
    Ok(table)
}

impl FloodTable {
    /// The table as an exchange file: `features(member, param)` with a `names` attribute,
    /// `target(member, gauge)` with a `names` attribute, `param_name`, `gauge_name` and
    /// `member_file`.
    pub fn dataset(&self, attrs: Vec<(String, Attr)>) -> Dataset {
        let (m, p, g) = (self.members.len(), self.params.len(), self.gauges.len());
        let dim = |name: &str, len| Dim { name: name.into(), len, unlimited: false };
        let strings = |name: &str, dim: &str, long_name: &str, values: Vec<String>| Variable {
            name: name.into(),
            dims: vec![dim.into()],
            dtype: DType::Str,
            attrs: vec![("long_name".into(), Attr::Str(long_name.into()))],
            values: Values::Str(values),
        };
        let param_names: Vec<String> = self.params.iter().map(|p| p.name().to_string()).collect();
        let features = Variable::f64(
            "features",
            &[MEMBER, "param"],
            "scenario parameters of the member",
            "1",
            self.features.clone(),
        )
        .with_attr("names", Attr::Str(param_names.join(" ")))
        .with_attr("param_units", Attr::Str(self.params.iter().map(|p| p.units()).collect::<Vec<_>>().join(", ")));
        let target = Variable::f64(
            "target",
            &[MEMBER, "gauge"],
            "maximum sampled water depth at the gauge",
            "m",
            self.target.clone(),
        )
        .with_attr("names", Attr::Str(self.gauges.join(" ")));
        Dataset {
            dims: vec![dim(MEMBER, m), dim("param", p), dim("gauge", g)],
            variables: vec![
                features,
                target,
                strings("param_name", "param", "scenario parameter", param_names),
                strings("gauge_name", "gauge", "gauge name", self.gauges.clone()),
                strings(
                    "member_file",
                    MEMBER,
                    "flood gauge file of the member",
                    self.members.iter().map(|p| p.display().to_string()).collect(),
                ),
            ],
            attrs,
        }
    }
}

/// Paths listed one per line in `list` (blank lines and `#` comments skipped).
pub fn read_list(list: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let text = std::fs::read_to_string(list).map_err(|source| TrainError::Io {
        path: list.to_path_buf(),
        action: "read",
        source,
    })?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(PathBuf::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_come_from_the_flood_configuration() {
        let cfg = serde_json::json!({"rainfall_mm_per_h": 12.5, "manning_n": 0.03,
            "inflow": {"side": "west", "from": 0, "to": 1, "hydrograph": [[0, 0], [10, 250.0], [20, 60]]}});
        assert_eq!(FloodParam::InflowPeak.read(&cfg), Ok(250.0));
        assert_eq!(FloodParam::Rain.read(&cfg), Ok(12.5));
        assert_eq!(FloodParam::ManningN.read(&cfg), Ok(0.03));
        assert_eq!(FloodParam::InflowPeak.read(&serde_json::json!({"inflow": null})), Ok(0.0));
        assert!(FloodParam::Rain.read(&serde_json::json!({})).unwrap_err().to_string().contains("rainfall_mm_per_h"));
    }
}
