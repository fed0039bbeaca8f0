//! `stage convert`: NetCDF-4 ↔ HDF5.

use std::path::{Path, PathBuf};

use super::StageError;
use twinflow_exchange::{Compression, read_dataset, write_dataset};

/// Copies `input` to `output`, each in the format its extension names (`.h5`/`.hdf5` →
/// HDF5, else NetCDF-4): dimensions, variables with their stored types, variable and
/// global attributes are kept; a line is added to `history`.
pub fn convert(
    input: &Path,
    output: &Path,
    command_line: &str,
    compression: &Compression,
) -> Result<PathBuf, StageError> {
    let mut data = read_dataset(input)?;
    data.append_history(command_line);
    Ok(write_dataset(output, &data, compression)?)
}

#[cfg(test)]
mod tests {
    use twinflow_contract::cf;

    use super::*;
    use crate::testdata::{centres, grid, stations};
    use twinflow_exchange::{Attr, Dataset, read_dataset};

    fn without_history(d: &Dataset) -> Dataset {
        let mut d = d.clone();
        d.attrs.retain(|(n, _)| n != cf::HISTORY);
        d.variables.sort_by(|a, b| a.name.cmp(&b.name));
        d.attrs.sort_by(|a, b| a.0.cmp(&b.0));
        for v in &mut d.variables {
            v.attrs.sort_by(|a, b| a.0.cmp(&b.0));
        }
        d.dims.sort_by(|a, b| a.name.cmp(&b.name));
        d
    }

    #[test]
    fn netcdf_hdf5_netcdf_round_trips_values_types_and_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let original = grid(&centres(5, 0.0, 10.0), &centres(4, 100.0, 10.0), &[0.0, 30.0, 60.0], |t, x, y| t + x - y);
        let a = dir.path().join("a.nc");
        write_dataset(&a, &original, &Compression::default()).unwrap();
        let b = convert(&a, &dir.path().join("b.h5"), "to hdf5", &Compression::default()).unwrap();
        let c = convert(&b, &dir.path().join("c.nc"), "back", &Compression::default()).unwrap();
        let back = read_dataset(&c).unwrap();
        assert_eq!(without_history(&back), without_history(&original));
        let history = back.attr(cf::HISTORY).and_then(Attr::as_str).unwrap();
        let lines: Vec<&str> = history.lines().collect();
        assert_eq!(lines.len(), 3, "{history}");
        assert!(lines[1].ends_with(": to hdf5") && lines[2].ends_with(": back"), "{history}");
        assert!(back.dim("time").unwrap().unlimited, "the record dimension stays unlimited");

        let s = stations(&[1.0, 2.0], &[3.0, 4.0], &[0.0, 1.0, 2.0], |s, t| s as f64 * t);
        let sa = dir.path().join("s.h5");
        write_dataset(&sa, &s, &Compression::default()).unwrap();
        let sb = convert(&sa, &dir.path().join("s.nc"), "to netcdf", &Compression::default()).unwrap();
        assert_eq!(without_history(&read_dataset(&sb).unwrap()), without_history(&s));
    }

    #[test]
    fn kernel_outputs_convert_to_hdf5_with_their_layout() {
        // A file written by the kernels' own HDF5 writer (terrain) reads back with named
        // dimensions and converts to a NetCDF that the grid reader accepts.
        let dir = tempfile::tempdir().unwrap();
        let t = crate::terrain::Valley { nx: 8, ny: 6, ..Default::default() }.generate();
        let prov = twinflow_exchange::Provenance::from_env("t", "k", "{}".into(), "test");
        let h5 = dir.path().join("dem.h5");
        let mut w = twinflow_exchange::create_grid_writer(
            &h5,
            twinflow_exchange::Format::Hdf5,
            &t.coords,
            &prov,
            &Compression::default(),
        )
        .unwrap();
        w.write_static(&twinflow_exchange::VarSpec::new("z", "bed", "m"), t.bed.view()).unwrap();
        w.finish().unwrap();
        let nc = convert(&h5, &dir.path().join("dem.nc"), "c", &Compression::default()).unwrap();
        let g = twinflow_exchange::read_grid(&nc, &["z"], &[]).unwrap();
        assert_eq!(g.fields["z"], t.bed);
        assert_eq!(read_dataset(&nc).unwrap().variable("z").unwrap().dims, ["y", "x"]);
    }
}
