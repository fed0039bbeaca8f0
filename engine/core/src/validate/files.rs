//! Checks of the workflow's input files before a run starts: each exists, and each declared
//! with `format: hdf5|netcdf` carries that format's signature, so a wrong file is reported
//! at the input's declaration (exit code 2) instead of failing a step an hour later.
//!
//! Inputs of sub-workflows that are bound to upstream outputs are only known when the
//! consuming task starts; [`check_format`] is applied to them there (see `run::scope`).

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::diag::{Diag, DiagKind, Diagnostics};
use crate::expr::Value;
use crate::model::{ValueExpr, Workflow};
use crate::spec::raw::FileFormat;

/// The HDF5 superblock signature; it sits at offset 0, 512, 1024, 2048, ... (a user block
/// may precede it). NetCDF-4 files are HDF5 files.
const HDF5_SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";
/// Offsets probed for the HDF5 signature (user blocks larger than this are rare).
const HDF5_OFFSETS: [u64; 5] = [0, 512, 1024, 2048, 4096];

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// HDF5 (including NetCDF-4).
    Hdf5,
    /// NetCDF classic (`CDF\x01`), 64-bit offset (`CDF\x02`) or CDF-5 (`CDF\x05`).
    NetcdfClassic,
    /// Neither.
    Other,
}

/// Reads a file's signature.
pub fn detect(path: &Path) -> std::io::Result<Detected> {
    let mut f = std::fs::File::open(path)?;
    let mut head = Vec::with_capacity(4104);
    f.by_ref().take(4104).read_to_end(&mut head)?;
    if head.len() >= 4 && &head[..3] == b"CDF" && matches!(head[3], 1 | 2 | 5) {
        return Ok(Detected::NetcdfClassic);
    }
    let hdf5 = HDF5_OFFSETS.iter().any(|&o| head.get(o as usize..o as usize + 8) == Some(&HDF5_SIGNATURE[..]));
    Ok(if hdf5 { Detected::Hdf5 } else { Detected::Other })
}

/// A file that is not of its declared format.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Its first bytes could not be read.
    #[error("cannot read `{}`: {source}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Its signature is another format's, or none.
    #[error("`{}` is not {}", .path.display(), mismatch(*.format, *.found))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The declared format.
        format: FileFormat,
        /// What its first bytes say.
        found: Detected,
    },
}

/// "an HDF5 file (it is NetCDF classic): its first bytes are ..." for a mismatch.
fn mismatch(format: FileFormat, found: Detected) -> String {
    let (want, hint) = match format {
        FileFormat::Hdf5 => ("an HDF5 file", "its first bytes are not the HDF5 signature `\\x89HDF\\r\\n\\x1a\\n`"),
        _ => ("a NetCDF file", "its first bytes are neither `CDF\\x01`/`\\x02`/`\\x05` nor the HDF5 signature"),
    };
    let what = if found == Detected::NetcdfClassic { " (it is NetCDF classic)" } else { "" };
    format!("{want}{what}: {hint}")
}

/// Checks that `path` is a file of `format`; the error says what was expected and found.
pub fn check_format(path: &Path, format: FileFormat) -> Result<(), FormatError> {
    if format == FileFormat::Any {
        return Ok(());
    }
    let found = detect(path).map_err(|source| FormatError::Unreadable { path: path.to_path_buf(), source })?;
    let ok = match format {
        FileFormat::Hdf5 => found == Detected::Hdf5,
        FileFormat::Netcdf => matches!(found, Detected::Hdf5 | Detected::NetcdfClassic),
        FileFormat::Any => true,
    };
    if ok { Ok(()) } else { Err(FormatError::Mismatch { path: path.to_path_buf(), format, found }) }
}

/// Checks every input of the root workflow (as given with `-i` or by its default) and every
/// defaulted input of a sub-workflow call that is not bound by the caller: the file exists
/// and has its declared format. All problems are collected.
pub fn check_input_files(wf: &Workflow) -> Result<(), Diagnostics> {
    let mut diags = Diagnostics::default();
    for (i, ns) in wf.namespaces.iter().enumerate() {
        for (name, def) in &ns.inputs {
            let bound_literal;
            let path = if i == 0 {
                wf.input_values.get(name)
            } else if let Some(b) = ns.bindings.get(name) {
                // A literal path is known now; an expression (an upstream output) is checked
                // when the task that reads it starts.
                bound_literal = match b {
                    ValueExpr::Lit(Value::Path(p), _) => Some(PathBuf::from(p)),
                    _ => None,
                };
                bound_literal.as_ref()
            } else {
                def.default.as_ref()
            };
            let Some(path) = path else { continue };
            let field = format!("{}inputs.{name}", ns.prefix.replace('/', "."));
            let problem = if !path.is_file() {
                Some(if path.exists() {
                    format!("input `{name}`: `{}` is not a file", path.display())
                } else {
                    format!("input `{name}`: `{}` does not exist", path.display())
                })
            } else {
                check_format(path, def.format).err().map(|m| format!("input `{name}`: {m}"))
            };
            if let Some(message) = problem {
                let help = if i == 0 { format!("give another file with `-i {name}=PATH`") } else { String::new() };
                let mut d = Diag::new(DiagKind::Io, &ns.file, def.span, field, message);
                if !help.is_empty() {
                    d = d.with_help(help);
                }
                diags.push(d);
            }
        }
    }
    if diags.is_empty() { Ok(()) } else { Err(diags) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    #[test]
    fn signatures_are_recognised() {
        let h5 = file(b"\x89HDF\r\n\x1a\n\0\0\0\0");
        let nc = file(b"CDF\x01\0\0\0\x05");
        let nc5 = file(b"CDF\x05\0\0\0\0");
        let mut ub = vec![0u8; 512];
        ub.extend_from_slice(HDF5_SIGNATURE);
        let user_block = file(&ub);
        let text = file(b"x,y\n1,2\n");
        let empty = file(b"");
        assert_eq!(detect(h5.path()).unwrap(), Detected::Hdf5);
        assert_eq!(detect(user_block.path()).unwrap(), Detected::Hdf5);
        assert_eq!(detect(nc.path()).unwrap(), Detected::NetcdfClassic);
        assert_eq!(detect(nc5.path()).unwrap(), Detected::NetcdfClassic);
        assert_eq!(detect(text.path()).unwrap(), Detected::Other);
        assert_eq!(detect(empty.path()).unwrap(), Detected::Other);

        assert!(check_format(h5.path(), FileFormat::Hdf5).is_ok());
        assert!(check_format(h5.path(), FileFormat::Netcdf).is_ok(), "NetCDF-4 is HDF5");
        assert!(check_format(nc.path(), FileFormat::Netcdf).is_ok());
        let e = check_format(nc.path(), FileFormat::Hdf5).unwrap_err().to_string();
        assert!(e.contains("is not an HDF5 file (it is NetCDF classic)"), "{e}");
        let e = check_format(text.path(), FileFormat::Netcdf).unwrap_err().to_string();
        assert!(e.contains("is not a NetCDF file"), "{e}");
        assert!(check_format(text.path(), FileFormat::Any).is_ok());
        let e = check_format(Path::new("/nonexistent/x.h5"), FileFormat::Hdf5).unwrap_err();
        assert!(matches!(e, FormatError::Unreadable { .. }), "{e}");
        assert!(e.to_string().starts_with("cannot read `/nonexistent/x.h5`: "), "{e}");
    }
}
