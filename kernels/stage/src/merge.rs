//! `stage merge`: ensemble members into one file with a leading `member` dimension.
//!
//! Every member must have the same layout (dimensions, variables, types). Coordinates
//! (`x`, `y`, `time`, and the auxiliary coordinates named in `coordinates` attributes,
//! such as `station_name`) must be equal in every member and are written once; every
//! other variable gets `member` as its first dimension, in the order the members are
//! given. The `member` coordinate (CF `standard_name = realization`) numbers them from 0;
//! `member_file` names each one's source. Global attributes equal in every member are
//! kept; those that differ (the parameters, the step, the history) become per-member
//! string variables `member_<attribute>`, so each member's provenance survives.
//!
//! Members are read one at a time (headers first, to check them all before writing), so
//! an ensemble never has to fit in memory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use twinflow_contract::cf;

use super::StageError;
use twinflow_exchange::{
    Attr, Compression, DType, Dataset, DatasetWriter, Dim, Values, Variable, read_dataset, read_header,
};

/// Name of the ensemble dimension and coordinate ([`twinflow_contract::datasets::MEMBER`]).
pub const MEMBER_DIM: &str = twinflow_contract::datasets::MEMBER;

/// Variables that are coordinates: named like their only dimension, or listed in a
/// `coordinates` attribute.
fn coordinate_names(data: &Dataset) -> BTreeSet<String> {
    let mut names: BTreeSet<String> =
        data.variables.iter().filter(|v| v.dims.len() == 1 && v.dims[0] == v.name).map(|v| v.name.clone()).collect();
    for v in &data.variables {
        if let Some(Attr::Str(list)) = v.attr(cf::COORDINATES) {
            names.extend(list.split_whitespace().filter(|n| data.variable(n).is_some()).map(str::to_string));
        }
    }
    names
}

/// The layout of a member without values or attributes, for comparison.
fn layout(data: &Dataset) -> Vec<(String, Vec<String>, Vec<usize>, DType)> {
    data.variables.iter().map(|v| (v.name.clone(), v.dims.clone(), data.shape_of(v), v.dtype)).collect()
}

fn same_values(a: &Values, b: &Values) -> bool {
    match (a, b) {
        (Values::Num(a), Values::Num(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
        }
        (Values::Str(a), Values::Str(b)) => a == b,
        _ => false,
    }
}

/// Merges `inputs` (in this order) into `output` (format from its extension).
pub fn merge(
    inputs: &[PathBuf],
    output: &Path,
    command_line: &str,
    compression: &Compression,
) -> Result<PathBuf, StageError> {
    let Some(first_path) = inputs.first() else {
        return Err(StageError::Request("nothing to merge; hint: give member files or `--list FILE`".into()));
    };
    if inputs.iter().any(|p| p.as_path() == output) {
        return Err(StageError::Request(format!("the output `{}` is also an input", output.display())));
    }
    let n = inputs.len();
    // Pass 1: every header, so a mismatch fails before anything is written.
    let headers: Vec<Dataset> = inputs.iter().map(|p| read_header(p)).collect::<Result<_, _>>()?;
    let first = &headers[0];
    if first.dim(MEMBER_DIM).is_some() {
        return Err(StageError::Incompatible {
            path: first_path.clone(),
            reason: format!("already has a `{MEMBER_DIM}` dimension; hint: merge the original members instead"),
        });
    }
    let reference = layout(first);
    for (k, (h, path)) in headers.iter().zip(inputs).enumerate().skip(1) {
        if layout(h) != reference {
            let ours = layout(h);
            let diff = ours
                .iter()
                .find(|v| !reference.contains(v))
                .map(|(name, dims, shape, t)| format!("`{name}` is {t:?} over ({}) = {shape:?}", dims.join(", ")))
                .or_else(|| {
                    reference.iter().find(|v| !ours.contains(v)).map(|(name, ..)| format!("`{name}` is missing"))
                })
                .unwrap_or_else(|| "the variables differ".into());
            return Err(StageError::Incompatible {
                path: path.clone(),
                reason: format!("member {k} does not match member 0 (`{}`): {diff}", first_path.display()),
            });
        }
    }
    let coords = coordinate_names(first);

    // Global attributes: shared ones stay global, differing ones go per member.
    let mut shared = Vec::new();
    let mut per_member = Vec::new();
    for (name, value) in &first.attrs {
        if headers.iter().all(|h| h.attr(name) == Some(value)) {
            shared.push((name.clone(), value.clone()));
        } else {
            per_member.push(name.clone());
        }
    }
    let mut header = Dataset {
        dims: std::iter::once(Dim { name: MEMBER_DIM.into(), len: n, unlimited: false })
            .chain(first.dims.iter().cloned())
            .collect(),
        variables: Vec::new(),
        attrs: shared,
    };
    header.append_history(command_line);
    header.variables.push(Variable {
        name: MEMBER_DIM.into(),
        dims: vec![MEMBER_DIM.into()],
        dtype: DType::I32,
        attrs: vec![
            (cf::STANDARD_NAME.into(), Attr::Str("realization".into())),
            (cf::LONG_NAME.into(), Attr::Str("ensemble member".into())),
        ],
        values: Values::Num((0..n).map(|k| k as f64).collect()),
    });
    let member_strings = |name: &str, long_name: String, values: Vec<String>| Variable {
        name: name.into(),
        dims: vec![MEMBER_DIM.into()],
        dtype: DType::Str,
        attrs: vec![(cf::LONG_NAME.into(), Attr::Str(long_name))],
        values: Values::Str(values),
    };
    header.variables.push(member_strings(
        "member_file",
        "file each member was read from".into(),
        inputs.iter().map(|p| p.display().to_string()).collect(),
    ));
    for name in &per_member {
        let values = headers.iter().map(|h| h.attr(name).map(ToString::to_string).unwrap_or_default()).collect();
        header.variables.push(member_strings(
            &format!("member_{name}"),
            format!("global attribute `{name}` of each member"),
            values,
        ));
    }
    let first_data = read_dataset(first_path)?;
    for v in &first_data.variables {
        if coords.contains(&v.name) {
            header.variables.push(v.clone());
        } else {
            let mut dims = vec![MEMBER_DIM.to_string()];
            dims.extend(v.dims.iter().cloned());
            header.variables.push(Variable { dims, values: Values::empty_for(v.dtype), ..v.clone() });
        }
    }
    drop(headers);

    let mut w = DatasetWriter::create(output, &header, compression)?;
    for v in header.variables.iter().filter(|v| !v.values.is_empty()) {
        let shape = header.shape_of(v);
        w.write(&v.name, &vec![0; shape.len()], &shape, &v.values)?;
    }
    // Pass 2: each member's values into its slice.
    for (k, path) in inputs.iter().enumerate() {
        let data = if k == 0 { first_data.clone() } else { read_dataset(path)? };
        for v in &data.variables {
            let shape = data.shape_of(v);
            if coords.contains(&v.name) {
                let reference = first_data.variable(&v.name).expect("same layout");
                if !same_values(&v.values, &reference.values) {
                    return Err(StageError::Incompatible {
                        path: path.clone(),
                        reason: format!(
                            "member {k} has other `{}` values than member 0 (`{}`); hint: regrid or subset the members to a common grid and times first",
                            v.name,
                            first_path.display()
                        ),
                    });
                }
                continue;
            }
            let mut start = vec![0; shape.len() + 1];
            start[0] = k;
            let mut count = vec![1];
            count.extend(&shape);
            w.write(&v.name, &start, &count, &v.values)?;
        }
        tracing::debug!(member = k, path = %path.display(), "merged");
    }
    Ok(w.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{centres, grid, stations};
    use twinflow_exchange::{Attr, write_dataset};

    fn members(dir: &Path, ext: &str, n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|m| {
                let mut d = grid(&centres(3, 0.0, 1.0), &centres(2, 0.0, 1.0), &[0.0, 1.0], move |t, x, _| {
                    m as f64 * 100.0 + t * 10.0 + x
                });
                d.set_attr("twinflow_parameters", Attr::Str(format!("{{\"member\":{m}}}")));
                let p = dir.join(format!("m{m}.{ext}"));
                write_dataset(&p, &d, &Compression::default()).unwrap();
                p
            })
            .collect()
    }

    #[test]
    fn merge_keeps_member_order_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        for (ext, out) in [("nc", "ens.nc"), ("h5", "ens.h5")] {
            // Given in reverse order: member k of the output is the k-th file given.
            let mut inputs = members(dir.path(), ext, 4);
            inputs.reverse();
            let out = merge(&inputs, &dir.path().join(out), "merge", &Compression::default()).unwrap();
            let d = read_dataset(&out).unwrap();
            assert_eq!(d.dim_len(MEMBER_DIM), 4);
            assert_eq!(d.coordinate(MEMBER_DIM).unwrap(), [0.0, 1.0, 2.0, 3.0]);
            let h = d.variable("h").unwrap();
            assert_eq!(h.dims, ["member", "time", "y", "x"]);
            assert_eq!(h.attr(cf::UNITS), Some(&Attr::Str("m".into())));
            let v = h.num().unwrap();
            for k in 0..4 {
                let source = 3 - k; // reversed
                assert_eq!(v[k * 12], source as f64 * 100.0 + 0.5, "member {k}");
                assert_eq!(v[k * 12 + 11], source as f64 * 100.0 + 10.0 + 2.5);
            }
            // Coordinates once, without a member dimension.
            assert_eq!(d.variable("x").unwrap().dims, ["x"]);
            assert_eq!(d.variable("label").unwrap().dims, ["label"], "a coordinate variable");
            assert_eq!(d.variable("z").unwrap().dims, ["member", "y", "x"], "non-coordinates get members");
            // Shared attributes stay global; differing ones become per-member variables.
            assert_eq!(d.attr(cf::CONVENTIONS), Some(&Attr::Str("CF-1.10".into())));
            assert_eq!(d.attr("levels"), Some(&Attr::I32(vec![1, 2, 3])));
            assert!(d.attr("twinflow_parameters").is_none());
            let params = d.variable("member_twinflow_parameters").unwrap();
            assert_eq!(params.values, Values::Str((0..4).rev().map(|m| format!("{{\"member\":{m}}}")).collect()));
            let files = d.variable("member_file").unwrap();
            assert_eq!(files.values, Values::Str(inputs.iter().map(|p| p.display().to_string()).collect()));
            assert!(d.attr(cf::HISTORY).and_then(Attr::as_str).unwrap().ends_with(": merge"));
        }
    }

    #[test]
    fn station_series_merge_with_their_auxiliary_coordinates_once() {
        let dir = tempfile::tempdir().unwrap();
        let inputs: Vec<PathBuf> = (0..3)
            .map(|m| {
                let p = dir.path().join(format!("g{m}.nc"));
                let s = stations(&[1.0, 2.0], &[5.0, 6.0], &[0.0, 1.0, 2.0], |s, t| m as f64 + s as f64 * t);
                write_dataset(&p, &s, &Compression::default()).unwrap();
                p
            })
            .collect();
        let d = read_dataset(&merge(&inputs, &dir.path().join("g.nc"), "m", &Compression::default()).unwrap()).unwrap();
        for aux in ["station_name", "x", "y", "time"] {
            assert!(!d.variable(aux).unwrap().dims.contains(&MEMBER_DIM.to_string()), "{aux}");
        }
        assert_eq!(d.variable("h").unwrap().dims, ["member", "station", "time"]);
        assert_eq!(d.variable("h").unwrap().num().unwrap()[12..], [2.0, 2.0, 2.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn mismatched_members_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = members(dir.path(), "nc", 2);
        let other = dir.path().join("other.nc");
        write_dataset(
            &other,
            &grid(&centres(4, 0.0, 1.0), &centres(2, 0.0, 1.0), &[0.0, 1.0], |_, _, _| 0.0),
            &Compression::default(),
        )
        .unwrap();
        inputs.push(other);
        let out = dir.path().join("ens.nc");
        let err = merge(&inputs, &out, "m", &Compression::default()).unwrap_err();
        assert!(matches!(err, StageError::Incompatible { .. }), "{err}");
        assert!(err.to_string().contains("member 2 does not match member 0"), "{err}");
        assert!(!out.exists());

        // Same layout, other coordinates.
        let shifted = dir.path().join("shifted.nc");
        write_dataset(
            &shifted,
            &grid(&centres(3, 7.0, 1.0), &centres(2, 0.0, 1.0), &[0.0, 1.0], |_, _, _| 0.0),
            &Compression::default(),
        )
        .unwrap();
        inputs.pop();
        inputs.push(shifted);
        let err = merge(&inputs, &out, "m", &Compression::default()).unwrap_err();
        assert!(err.to_string().contains("other `x` values"), "{err}");
        assert!(!out.exists() && !dir.path().join("ens.nc.partial").exists());
        assert!(merge(&[], &out, "m", &Compression::default()).unwrap_err().is_invalid_input());
    }
}
