//! `stage checksum`: blake3 digests of the values in a file.
//!
//! Each variable's digest covers its shape and its values as stored numbers (`f64`
//! little-endian bytes) or strings (length-prefixed UTF-8), not its attributes, type or
//! file format: a NetCDF file and its HDF5 conversion hash alike, and a new `history` line
//! changes nothing. The file digest covers the sorted (name, digest) pairs.

use std::collections::BTreeMap;
use std::path::Path;

use super::StageError;
use twinflow_exchange::{Values, read_dataset};

/// Digests of one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileChecksum {
    /// The file, as given.
    pub path: String,
    /// Hash function (`blake3`).
    pub algorithm: &'static str,
    /// Digest over every variable, hex.
    pub digest: String,
    /// Digest per variable, hex.
    pub variables: BTreeMap<String, String>,
}

fn variable_digest(shape: &[usize], values: &Values) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&(shape.len() as u64).to_le_bytes());
    for &n in shape {
        h.update(&(n as u64).to_le_bytes());
    }
    match values {
        Values::Num(v) => {
            h.update(b"num");
            for x in v {
                h.update(&x.to_le_bytes());
            }
        }
        Values::Str(v) => {
            h.update(b"str");
            for s in v {
                h.update(&(s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
        }
    }
    h.finalize().to_hex().to_string()
}

/// Digests of every variable of `path`.
pub fn checksum(path: &Path) -> Result<FileChecksum, StageError> {
    let data = read_dataset(path)?;
    let variables: BTreeMap<String, String> =
        data.variables.iter().map(|v| (v.name.clone(), variable_digest(&data.shape_of(v), &v.values))).collect();
    let mut h = blake3::Hasher::new();
    for (name, digest) in &variables {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(digest.as_bytes());
    }
    Ok(FileChecksum {
        path: path.display().to_string(),
        algorithm: "blake3",
        digest: h.finalize().to_hex().to_string(),
        variables,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{centres, grid};
    use twinflow_exchange::{Compression, Values, write_dataset};

    #[test]
    fn digests_ignore_format_and_history_but_see_every_value() {
        let dir = tempfile::tempdir().unwrap();
        let data = grid(&centres(4, 0.0, 1.0), &centres(3, 0.0, 1.0), &[0.0, 1.0], |t, x, y| t * x + y);
        let nc = dir.path().join("a.nc");
        write_dataset(&nc, &data, &Compression::default()).unwrap();
        let h5 = crate::convert(&nc, &dir.path().join("a.h5"), "c", &Compression::default()).unwrap();
        let (a, b) = (checksum(&nc).unwrap(), checksum(&h5).unwrap());
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.variables, b.variables);
        assert_eq!(a.variables.len(), data.variables.len());

        let mut changed = data.clone();
        if let Values::Num(v) = &mut changed.variable_mut("h").unwrap().values {
            v[5] += 1e-12;
        }
        let other = dir.path().join("b.nc");
        write_dataset(&other, &changed, &Compression::default()).unwrap();
        let c = checksum(&other).unwrap();
        assert_ne!(c.digest, a.digest);
        assert_ne!(c.variables["h"], a.variables["h"]);
        assert_eq!(c.variables["z"], a.variables["z"]);
    }
}
