//! The exchange readers on damaged files: a valid small file made by the exchange layer's
//! own writers is corrupted as the fuzz input says, then read by every reader the kernels
//! use.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ndarray::Array2;
use twinflow_exchange::{
    self as exchange, Attr, Compression, Coords, DType, Dataset, Dim, Format, Provenance, Values, VarSpec, Variable,
};

use super::Rejected;

/// The files the corruptions start from, with their extension (which picks the reader).
struct Bases {
    dir: PathBuf,
    files: Vec<(&'static str, Vec<u8>)>,
}

/// The base files, made once per process in a scratch directory that is removed again
/// (each input is written there and removed after it was read).
fn bases() -> &'static Bases {
    static BASES: OnceLock<Bases> = OnceLock::new();
    BASES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("twinflow-fuzz-exchange-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory for the exchange target");
        let files = make_bases(&dir).expect("the exchange writers make the base files");
        let _ = std::fs::remove_dir_all(&dir);
        Bases { dir, files }
    })
}

/// Five small files: a gridded file in each format (the writer of DEMs and results), a
/// hot-start state (the [`Dataset`] writer) in each format, and a NetCDF file with the
/// expected names in the wrong shapes and types.
fn make_bases(dir: &Path) -> Result<Vec<(&'static str, Vec<u8>)>, exchange::ExchangeError> {
    let (nx, ny) = (5, 4);
    let coords = Coords {
        x: (0..nx).map(|i| 5.0 + 10.0 * i as f64).collect(),
        y: (0..ny).map(|j| 5.0 + 10.0 * j as f64).collect(),
    };
    let provenance = Provenance::from_env("fuzz base", "fuzz", "{}".into(), "fuzz");
    let bed = Array2::from_shape_fn((ny, nx), |(j, i)| (i + j) as f64);
    let depth = Array2::from_shape_fn((ny, nx), |(j, i)| if i == 0 { 1.0 + j as f64 } else { 0.0 });
    let mut out = Vec::new();
    for (ext, format) in [("nc", Format::Netcdf), ("h5", Format::Hdf5)] {
        let path = dir.join(format!("grid.{ext}"));
        let compression =
            Compression { deflate_level: Some(1), shuffle: true, chunk: Some([2, 2]), scale_offset: false };
        let mut w = exchange::create_grid_writer(&path, format, &coords, &provenance, &compression)?;
        w.write_static(&VarSpec::new("bed_elevation", "bed", "m"), bed.view())?;
        w.write_static(&VarSpec::new("depth", "depth", "m"), depth.view())?;
        let h = VarSpec::new("h", "water depth", "m");
        w.write_snapshot(0.0, &[(&h, depth.view())])?;
        w.write_snapshot(10.0, &[(&h, bed.view())])?;
        let written = w.finish()?;
        out.push((ext, std::fs::read(&written).expect("the base file just written")));
    }
    let dims =
        vec![Dim { name: "y".into(), len: ny, unlimited: false }, Dim { name: "x".into(), len: nx, unlimited: false }];
    let axis = |name: &str, values: &[f64]| Variable::f64(name, &[name], name, "m", values.to_vec());
    let field = |name: &str, a: &Array2<f64>| Variable::f64(name, &["y", "x"], name, "m", a.iter().copied().collect());
    let mut state = Dataset {
        dims: dims.clone(),
        variables: vec![
            axis("x", &coords.x),
            axis("y", &coords.y),
            field("h", &depth),
            field("hu", &bed),
            field("hv", &bed),
            field("bed_elevation", &bed),
            Variable::f64("manning_n", &[], "n", "1", vec![0.03]),
            Variable::f64("inflow_scale", &[], "s", "1", vec![1.0]),
        ],
        attrs: vec![],
    };
    state.set_attr("model_time", Attr::F64(vec![60.0]));
    for ext in ["nc", "h5"] {
        let path = dir.join(format!("state.{ext}"));
        let written = exchange::write_dataset(&path, &state, &Compression::default())?;
        out.push((ext, std::fs::read(&written).expect("the base file just written")));
    }
    let wrong = Dataset {
        dims: vec![
            Dim { name: "y".into(), len: 3, unlimited: true },
            Dim { name: "x".into(), len: 2, unlimited: false },
        ],
        variables: vec![
            Variable {
                name: "x".into(),
                dims: vec!["x".into()],
                dtype: DType::I32,
                attrs: vec![],
                values: Values::Num(vec![2.0, 1.0]),
            },
            Variable {
                name: "y".into(),
                dims: vec!["y".into()],
                dtype: DType::F32,
                attrs: vec![],
                values: Values::Num(vec![1.0, 1.0, 0.0]),
            },
            Variable {
                name: "bed_elevation".into(),
                dims: vec!["x".into()],
                dtype: DType::I64,
                attrs: vec![],
                values: Values::Num(vec![1.0, 2.0]),
            },
            Variable {
                name: "depth".into(),
                dims: vec!["y".into(), "x".into()],
                dtype: DType::Str,
                attrs: vec![],
                values: Values::Str(vec!["a".into(); 6]),
            },
            Variable {
                name: "manning_n".into(),
                dims: vec!["y".into()],
                dtype: DType::F64,
                attrs: vec![],
                values: Values::Num(vec![f64::NAN, 0.1, 0.2]),
            },
        ],
        attrs: vec![("model_time".into(), Attr::Str("soon".into()))],
    };
    let path = dir.join("wrong.nc");
    let written = exchange::write_dataset(
        &path,
        &wrong,
        &Compression { deflate_level: None, shuffle: false, chunk: None, scale_offset: false },
    )?;
    out.push(("nc", std::fs::read(&written).expect("the base file just written")));
    Ok(out)
}

/// Applies the corruptions the input describes: after a byte choosing the base file, each
/// 6 bytes are an operation, an offset (u32, modulo the file's length) and a value.
fn corrupt(data: &[u8]) -> (&'static str, Vec<u8>) {
    let bases = bases();
    let (&pick, mut ops) = data.split_first().unwrap_or((&0, &[]));
    let (ext, base) = &bases.files[usize::from(pick) % bases.files.len()];
    let mut bytes = base.clone();
    while let [op, a, b, c, d, value, rest @ ..] = ops {
        ops = rest;
        if bytes.is_empty() {
            break;
        }
        let at = u32::from_le_bytes([*a, *b, *c, *d]) as usize % bytes.len();
        let put = |bytes: &mut Vec<u8>, word: &[u8]| {
            for (k, w) in word.iter().enumerate() {
                if let Some(x) = bytes.get_mut(at + k) {
                    *x = *w;
                }
            }
        };
        match op % 8 {
            0 => bytes[at] ^= 1 << (value % 8),
            1 => bytes[at] = *value,
            2 => bytes.truncate(at),
            3 => put(&mut bytes, &u32::MAX.to_le_bytes()),
            4 => put(&mut bytes, &(i64::MAX as u64 >> (value % 64)).to_le_bytes()),
            5 => put(&mut bytes, &[0; 8]),
            6 => put(&mut bytes, &[*value; 4]),
            _ => {
                // Copy 8 bytes from `at` to `at + value`: a duplicated header field.
                let word: Vec<u8> = bytes[at..(at + 8).min(bytes.len())].to_vec();
                let to = at + usize::from(*value);
                for (k, w) in word.into_iter().enumerate() {
                    if let Some(x) = bytes.get_mut(to + k) {
                        *x = w;
                    }
                }
            }
        }
    }
    (ext, bytes)
}

/// The damaged file an `exchange` input describes, with its extension (`nc` or `h5`): to
/// hand a reproducer to `twin-kernel` itself (`examples/corrupt.rs`).
pub fn exchange_file(data: &[u8]) -> (&'static str, Vec<u8>) {
    corrupt(data)
}

/// Every reader of the exchange layer the kernels use, on a corrupted exchange file.
/// Errors must name the file; the first error is returned.
pub fn exchange(data: &[u8]) -> Result<(), Rejected> {
    let (ext, bytes) = corrupt(data);
    let dir = &bases().dir;
    std::fs::create_dir_all(dir).expect("the scratch directory");
    let path = dir.join(format!("input.{ext}"));
    std::fs::write(&path, &bytes).expect("writing the corrupted file into the scratch directory");
    let outcome = read_all(&path, ext);
    let _ = std::fs::remove_dir_all(dir);
    outcome
}

fn read_all(path: &Path, ext: &str) -> Result<(), Rejected> {
    let path = path.to_path_buf();
    let name = path.display().to_string();
    let mut first: Option<Rejected> = None;
    let mut note = |message: String| {
        let clean = message.contains(&name);
        first.get_or_insert(Rejected { message, clean });
    };
    let exchange_error = |e: &exchange::ExchangeError| format!("{e}: {}", e.library_message());

    match exchange::read_header(&path) {
        Ok(h) => {
            let _ = h.header();
        }
        Err(e) => note(exchange_error(&e)),
    }
    match exchange::read_dataset(&path) {
        Ok(ds) => {
            if let Err(e) = ds.check(&path) {
                note(exchange_error(&e));
            }
            for v in &ds.variables {
                let _ = (ds.shape_of(v), v.masked(), v.fill_value());
            }
        }
        Err(e) => note(exchange_error(&e)),
    }
    for which in [exchange::Record::Last, exchange::Record::Index(1)] {
        if let Err(e) = exchange::read_grid_record_rows(&path, &["bed_elevation"], &["depth", "h"], which, |ny| 1..ny) {
            note(exchange_error(&e));
        }
    }
    match exchange::ArrayFile::open(&path) {
        Ok(f) => {
            let _ = f.root_attr_f64("model_time");
            for v in f.names() {
                match f.shape(&v) {
                    Ok(Some(shape)) => {
                        if let Err(e) = f.read_all(&v) {
                            note(exchange_error(&e));
                        }
                        if let Err(e) = f.read_rows(&v, shape.len(), 1..2) {
                            note(exchange_error(&e));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => note(exchange_error(&e)),
                }
            }
        }
        Err(e) => note(exchange_error(&e)),
    }
    for member in [None, Some(1)] {
        if let Err(e) = twinflow_flood::MemberParameters::read(&path, member) {
            note(e.to_string());
        }
    }
    if ext == "h5"
        && let Err(e) = read_h5(&path)
    {
        note(exchange_error(&e));
    }
    first.map_or(Ok(()), Err)
}

/// The HDF5 layer the calorimeter, model and checkpoint readers use.
fn read_h5(path: &Path) -> Result<(), exchange::ExchangeError> {
    let file = exchange::H5File::open(path)?;
    let root = file.root()?;
    let _ = root.attr("model_time")?;
    for name in root.member_names()? {
        let Ok(ds) = root.dataset(&name) else { continue };
        let info = ds.info()?;
        let _ = ds.attr("units")?;
        if info.element != exchange::ElementType::Str {
            ds.read_raw::<f64>()?;
        }
    }
    Ok(())
}
