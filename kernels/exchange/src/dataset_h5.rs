//! [`Dataset`] ↔ HDF5 through `hdf5-metno`: one dataset per variable at the root, named
//! dimensions as HDF5 dimension scales laid out as netCDF-4 does ([`super::h5ds`]),
//! unlimited dimensions as resizable axes. Files from older versions that name their
//! dimensions in a `DIMENSION_NAMES` attribute are still read.

use std::path::Path;

use hdf5::types::{FloatSize, IntSize, TypeDescriptor as T, VarLenArray, VarLenAscii, VarLenUnicode};
use hdf5::{Extent, H5Type, Hyperslab, ObjectReference1, ReferencedObject, SliceOrIndex};
use ndarray::{ArrayD, IxDyn};
use twinflow_contract::cf;

use super::dataset::{Attr, DIMENSION_NAMES_ATTR, DType, Dataset, Dim, Values, Variable, chunk_shape};
use super::error::{Context, OpenContext};
use super::h5attr::{vlen, write_attr};
use super::h5ds::{ScaleDim, attach_dimension_scales, is_bare_dimension};
use super::meta::ValueKind;
use super::{Compression, ExchangeError, PartialFile};

/// Attributes HDF5 and NetCDF-4 use for their own bookkeeping (dimension scales); they are
/// not data and are not copied.
const INTERNAL_ATTRS: [&str; 5] = [DIMENSION_NAMES_ATTR, "CLASS", "NAME", "REFERENCE_LIST", "DIMENSION_LIST"];

/// Reads an attribute; `None` for types staging does not carry (references, compounds).
fn read_attr(a: &hdf5::Attribute) -> hdf5::Result<Option<Attr>> {
    let strings = |v: Vec<String>| Attr::Str(v.join("\n"));
    Ok(Some(match a.dtype()?.to_descriptor()? {
        T::VarLenUnicode => strings(a.read_raw::<VarLenUnicode>()?.iter().map(|s| s.to_string()).collect()),
        T::VarLenAscii => strings(a.read_raw::<VarLenAscii>()?.iter().map(|s| s.to_string()).collect()),
        T::Float(FloatSize::U8) => Attr::F64(a.read_raw()?),
        T::Float(_) => Attr::F32(a.read_raw()?),
        T::Integer(IntSize::U8) | T::Unsigned(IntSize::U4 | IntSize::U8) => Attr::I64(a.read_raw()?),
        T::Integer(_) | T::Unsigned(_) => Attr::I32(a.read_raw()?),
        _ => return Ok(None),
    }))
}

fn read_attrs(loc: &hdf5::Location, path: &Path) -> Result<Vec<(String, Attr)>, ExchangeError> {
    let mut out = Vec::new();
    for name in loc.attr_names().ctx(path, "listing attributes")? {
        if INTERNAL_ATTRS.contains(&name.as_str()) {
            continue;
        }
        let a = loc.attr(&name).ctx(path, format!("opening attribute `{name}`"))?;
        match read_attr(&a).ctx(path, format!("reading attribute `{name}`"))? {
            Some(v) => out.push((name, v)),
            None => tracing::debug!(attribute = %name, "skipping an attribute of an unsupported type"),
        }
    }
    Ok(out)
}

fn dim_names(ds: &hdf5::Dataset, path: &Path, name: &str, time_series: bool) -> Result<Vec<String>, ExchangeError> {
    let ndim = ds.ndim();
    if let Ok(a) = ds.attr(DIMENSION_NAMES_ATTR) {
        let text = match read_attr(&a).ctx(path, format!("reading `{name}:{DIMENSION_NAMES_ATTR}`"))? {
            Some(Attr::Str(s)) => s,
            _ => String::new(),
        };
        let names: Vec<String> = text.split_whitespace().map(str::to_string).collect();
        if names.len() != ndim {
            return Err(ExchangeError::Layout {
                path: path.to_path_buf(),
                reason: format!("`{name}` has {ndim} dimensions but `{DIMENSION_NAMES_ATTR}` is \"{text}\""),
            });
        }
        return Ok(names);
    }
    if let Some(names) = attached_scale_names(ds).ctx(path, format!("reading the dimension scales of `{name}`"))? {
        return Ok(names);
    }
    let is_scale = ds.attr("CLASS").is_ok();
    Ok(match ndim {
        0 => vec![],
        1 if time_series && !is_scale && name != twinflow_contract::datasets::TIME => {
            vec![twinflow_contract::datasets::STATION.to_string()]
        }
        1 => vec![name.to_string()],
        n => (0..n).map(|k| format!("{name}_dim{k}")).collect(),
    })
}

/// The names of the dimension scales attached to each axis of `ds` (its `DIMENSION_LIST`:
/// per axis, references to the scales, which are named after their dimension); `None`
/// without scales or when an axis has none.
fn attached_scale_names(ds: &hdf5::Dataset) -> hdf5::Result<Option<Vec<String>>> {
    let Ok(list) = ds.attr("DIMENSION_LIST") else { return Ok(None) };
    let mut names = Vec::new();
    for refs in list.read_raw::<VarLenArray<ObjectReference1>>()? {
        let Some(first) = refs.first() else { return Ok(None) };
        let ReferencedObject::Dataset(scale) = ds.dereference(first)? else { return Ok(None) };
        names.push(scale.name().rsplit('/').next().unwrap_or_default().to_string());
    }
    Ok((names.len() == ds.ndim()).then_some(names))
}

/// Reads every dataset at the root of an HDF5 file (groups are skipped); without
/// `values`, variables are left empty.
pub(super) fn read(path: &Path, with_values: bool) -> Result<Dataset, ExchangeError> {
    let file = hdf5::File::open(path).open_ctx(path)?;
    let attrs = read_attrs(&file, path)?;
    let time_series = attrs.iter().any(|(n, a)| n == cf::FEATURE_TYPE && a.as_str() == Some("timeSeries"));
    let mut dims: Vec<Dim> = Vec::new();
    let mut variables = Vec::new();
    for name in file.member_names().ctx(path, "listing datasets")? {
        let Ok(ds) = file.dataset(&name) else {
            tracing::debug!(member = %name, "skipping a group");
            continue;
        };
        if is_bare_dimension(&ds) {
            continue;
        }
        let action = || format!("reading `{name}`");
        let dtype = match ds.dtype().and_then(|t| t.to_descriptor()).ctx(path, action())? {
            T::Float(FloatSize::U8) => DType::F64,
            T::Float(_) => DType::F32,
            T::Integer(IntSize::U8) | T::Unsigned(IntSize::U4 | IntSize::U8) => DType::I64,
            T::Integer(_) | T::Unsigned(_) => DType::I32,
            T::VarLenUnicode | T::VarLenAscii => DType::Str,
            other => {
                return Err(ExchangeError::Layout {
                    path: path.to_path_buf(),
                    reason: format!("dataset `{name}` has the type {other}, which staging does not handle"),
                });
            }
        };
        let names = dim_names(&ds, path, &name, time_series)?;
        let shape = ds.shape();
        let maxdims = ds.space().ctx(path, action())?.maxdims();
        for (k, dim) in names.iter().enumerate() {
            let unlimited = maxdims.get(k).is_some_and(Option::is_none);
            match dims.iter_mut().find(|d| &d.name == dim) {
                Some(d) if d.len != shape[k] => {
                    return Err(ExchangeError::Layout {
                        path: path.to_path_buf(),
                        reason: format!(
                            "dimension `{dim}` is {} long in one dataset and {} in `{name}`",
                            d.len, shape[k]
                        ),
                    });
                }
                Some(d) => d.unlimited |= unlimited,
                None => dims.push(Dim { name: dim.clone(), len: shape[k], unlimited }),
            }
        }
        let values = if shape.iter().product::<usize>() == 0 || !with_values {
            Values::empty_for(dtype)
        } else {
            match ds.dtype().and_then(|t| t.to_descriptor()).ctx(path, action())? {
                T::VarLenUnicode => Values::Str(
                    ds.read_raw::<VarLenUnicode>().ctx(path, action())?.iter().map(|s| s.to_string()).collect(),
                ),
                T::VarLenAscii => Values::Str(
                    ds.read_raw::<VarLenAscii>().ctx(path, action())?.iter().map(|s| s.to_string()).collect(),
                ),
                _ => Values::Num(ds.read_raw::<f64>().ctx(path, action())?),
            }
        };
        let vattrs = read_attrs(&ds, path)?;
        variables.push(Variable { name, dims: names, dtype, attrs: vattrs, values });
    }
    Ok(Dataset { dims, variables, attrs })
}

/// An HDF5 file being written.
pub(super) struct Writer {
    file: Option<hdf5::File>,
    partial: PartialFile,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("h5::Writer").field("path", &self.partial.partial_path()).finish_non_exhaustive()
    }
}

fn define<V: H5Type>(
    file: &hdf5::File,
    header: &Dataset,
    var: &Variable,
    compression: &Compression,
    fill: Option<impl Into<hdf5::types::OwnedDynValue>>,
) -> hdf5::Result<hdf5::Dataset> {
    let shape = header.shape_of(var);
    let resizable: Vec<bool> = var.dims.iter().map(|d| header.dim(d).is_some_and(|d| d.unlimited)).collect();
    let extents: Vec<Extent> = shape
        .iter()
        .zip(&resizable)
        .map(|(&len, &r)| if r { Extent::resizable(len) } else { Extent::fixed(len) })
        .collect();
    let mut b = file.new_dataset::<V>();
    let chunked = !shape.is_empty() && (shape.len() >= 2 || resizable.iter().any(|&r| r));
    if chunked {
        let chunk = chunk_shape(&shape);
        let kind = match var.dtype {
            DType::I32 | DType::I64 => ValueKind::Integer,
            DType::F32 | DType::F64 => ValueKind::Float,
            DType::Str => ValueKind::Text,
        };
        b = compression.apply_h5(b.chunk(chunk), kind);
    }
    if let Some(fill) = fill {
        b = b.fill_value(fill);
    }
    let extents = if extents.is_empty() {
        hdf5::Extents::scalar()
    } else {
        hdf5::Extents::simple(hdf5::SimpleExtents::from_vec(extents))
    };
    b.shape(extents).create(var.name.as_str())
}

impl Writer {
    pub(super) fn create(path: &Path, header: &Dataset, compression: &Compression) -> Result<Self, ExchangeError> {
        let partial = PartialFile::new(path)?;
        let p = partial.partial_path().to_path_buf();
        let file = hdf5::File::create(&p).ctx(&p, "creating the file")?;
        for (k, a) in &header.attrs {
            write_attr(&file, &p, k, a)?;
        }
        for var in &header.variables {
            let fill = var.fill_value();
            let ds = match var.dtype {
                DType::F64 => define::<f64>(&file, header, var, compression, fill),
                DType::F32 => define::<f32>(&file, header, var, compression, fill.map(|f| f as f32)),
                DType::I32 => define::<i32>(&file, header, var, compression, fill.map(|f| f as i32)),
                DType::I64 => define::<i64>(&file, header, var, compression, fill.map(|f| f as i64)),
                DType::Str => define::<VarLenUnicode>(&file, header, var, compression, None::<f64>),
            }
            .ctx(&p, format!("defining `{}`", var.name))?;
            for (k, a) in &var.attrs {
                write_attr(&ds, &p, k, a)?;
            }
        }
        let dims: Vec<ScaleDim<'_>> =
            header.dims.iter().map(|d| ScaleDim { name: &d.name, len: d.len, unlimited: d.unlimited }).collect();
        let var_dims: Vec<Vec<&str>> =
            header.variables.iter().map(|v| v.dims.iter().map(String::as_str).collect()).collect();
        let vars: Vec<(&str, &[&str])> =
            header.variables.iter().zip(&var_dims).map(|(v, d)| (v.name.as_str(), d.as_slice())).collect();
        attach_dimension_scales(&file, &dims, &vars)
            .map_err(|e| ExchangeError::Layout { path: p.clone(), reason: e.to_string() })?;
        Ok(Self { file: Some(file), partial })
    }

    pub(super) fn path(&self) -> &Path {
        self.partial.partial_path()
    }

    pub(super) fn write(
        &mut self,
        name: &str,
        start: &[usize],
        count: &[usize],
        values: &Values,
    ) -> Result<(), ExchangeError> {
        let p = self.path().to_path_buf();
        let file = self.file.as_ref().expect("file open until finish");
        let ds = file.dataset(name).ctx(&p, format!("opening `{name}`"))?;
        if values.is_empty() {
            return Ok(());
        }
        let action = || format!("writing `{name}`");
        // Grow resizable axes (records, members) to hold the block.
        let shape = ds.shape();
        let needed: Vec<usize> = shape.iter().zip(start.iter().zip(count)).map(|(&n, (&s, &c))| n.max(s + c)).collect();
        if needed != shape {
            ds.resize(needed).ctx(&p, action())?;
        }
        let selection: Vec<SliceOrIndex> =
            start.iter().zip(count).map(|(&s, &c)| SliceOrIndex::from(s..s + c)).collect();
        let selection = Hyperslab::from(selection);
        let dyn_shape = IxDyn(count);
        fn block<V: H5Type>(v: Vec<V>, shape: IxDyn) -> ArrayD<V> {
            ArrayD::from_shape_vec(shape, v).expect("the count matches the values (checked by the caller)")
        }
        let dtype = ds.dtype().and_then(|t| t.to_descriptor()).ctx(&p, action())?;
        match values {
            Values::Str(s) => {
                let v: Vec<VarLenUnicode> = s.iter().map(|x| vlen(x)).collect();
                if start.is_empty() { ds.write_scalar(&v[0]) } else { ds.write_slice(&block(v, dyn_shape), selection) }
            }
            Values::Num(v) if start.is_empty() => match dtype {
                T::Float(FloatSize::U4) => ds.write_scalar(&(v[0] as f32)),
                T::Integer(IntSize::U4) => ds.write_scalar(&(v[0] as i32)),
                T::Integer(_) => ds.write_scalar(&(v[0] as i64)),
                _ => ds.write_scalar(&v[0]),
            },
            Values::Num(v) => match dtype {
                T::Float(FloatSize::U4) => {
                    ds.write_slice(&block(v.iter().map(|&x| x as f32).collect(), dyn_shape), selection)
                }
                T::Integer(IntSize::U4) => {
                    ds.write_slice(&block(v.iter().map(|&x| x as i32).collect(), dyn_shape), selection)
                }
                T::Integer(_) => ds.write_slice(&block(v.iter().map(|&x| x as i64).collect(), dyn_shape), selection),
                _ => ds.write_slice(&block(v.clone(), dyn_shape), selection),
            },
        }
        .ctx(&p, action())
    }

    pub(super) fn close(mut self) -> Result<PartialFile, ExchangeError> {
        let p = self.path().to_path_buf();
        if let Some(file) = self.file.take() {
            file.close().ctx(&p, "closing the file")?;
        }
        Ok(self.partial)
    }
}
