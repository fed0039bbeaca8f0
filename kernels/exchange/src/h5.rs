//! HDF5 files with a layout of their own (groups, typed N-D datasets, attributes): the
//! calorimeter output, the surrogate model and checkpoint files, and test fixtures.
//!
//! Kernels describe *what* they store through these handles ([`H5File`], [`H5Group`],
//! [`H5Dataset`]); opening, creating, chunking, compressing and attribute encoding stay
//! here, so no kernel crate links the HDF5 library itself. Library failures come back as
//! [`ExchangeError::Hdf5`] naming the file and the action.

use std::path::{Path, PathBuf};

use hdf5::types::{FloatSize, IntSize, TypeDescriptor, VarLenAscii, VarLenUnicode};
use hdf5::{Hyperslab, SliceOrIndex};
use ndarray::{ArrayView, Dimension};

use crate::dataset::Attr;
use crate::error::{Context, OpenContext};
use crate::guard::guarded;
use crate::{ExchangeError, h5attr};

mod sealed {
    pub trait Sealed {}
}

/// Element types the kernels store in HDF5 datasets.
pub trait H5Element: hdf5::H5Type + Copy + sealed::Sealed {}

macro_rules! elements {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl H5Element for $t {}
    )*};
}
elements!(f32, f64, i32, i64, u8, u64);

/// Stored element type of an HDF5 dataset, as far as the kernels distinguish them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// Signed 8/16/32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16/32/64-bit integer.
    U64,
    /// Text.
    Str,
    /// Anything else (compounds, references, enums).
    Other,
}

/// Storage of a dataset defined with [`H5Group::define`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct H5Layout {
    /// Chunk shape (`None`: contiguous).
    pub chunk: Option<Vec<usize>>,
    /// Byte shuffle then deflate at this level (1–9); `None` or 0 stores the data as is.
    pub deflate: Option<u8>,
    /// Bytes of the chunk cache of this dataset (`None`: the library's default), so that
    /// blocks written into a chunk still being filled are not recompressed between writes.
    pub chunk_cache_bytes: Option<usize>,
}

/// What [`H5Dataset::info`] reports about a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H5DatasetInfo {
    /// Shape.
    pub shape: Vec<usize>,
    /// Chunk shape, `None` for contiguous storage.
    pub chunk: Option<Vec<usize>>,
    /// Stored element type.
    pub element: ElementType,
    /// Whether the deflate filter is applied.
    pub deflate: bool,
    /// Whether the byte-shuffle filter is applied.
    pub shuffle: bool,
    /// Whether the scale-offset filter is applied.
    pub scale_offset: bool,
}

/// An HDF5 file open for reading or writing.
#[derive(Debug)]
pub struct H5File {
    file: hdf5::File,
    path: PathBuf,
}

impl H5File {
    /// Creates (truncates) `path`. Outputs go through [`crate::PartialFile`] first; this
    /// writes where it is told.
    pub fn create(path: &Path) -> Result<Self, ExchangeError> {
        let file = hdf5::File::create(path).ctx(path, "creating the file")?;
        Ok(Self { file, path: path.to_path_buf() })
    }

    /// Opens `path` read-only.
    pub fn open(path: &Path) -> Result<Self, ExchangeError> {
        let file = guarded(path, "opening the file", || hdf5::File::open(path).open_ctx(path))?;
        Ok(Self { file, path: path.to_path_buf() })
    }

    /// The root group.
    pub fn root(&self) -> Result<H5Group, ExchangeError> {
        let group = self.file.as_group().ctx(&self.path, "opening the root group")?;
        Ok(H5Group { group, path: self.path.clone() })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the file (every handle of it must be dropped first for the close to end it).
    pub fn close(self) -> Result<(), ExchangeError> {
        self.file.close().ctx(&self.path, "closing the file")
    }
}

/// A group of an HDF5 file (the root included).
#[derive(Debug, Clone)]
pub struct H5Group {
    group: hdf5::Group,
    path: PathBuf,
}

impl H5Group {
    /// Creates the subgroup `name`.
    pub fn create_group(&self, name: &str) -> Result<H5Group, ExchangeError> {
        let group = self.group.create_group(name).ctx(&self.path, format!("creating `{name}`"))?;
        Ok(H5Group { group, path: self.path.clone() })
    }

    /// Opens the subgroup `name` (a path such as `layers/0` works too).
    pub fn group(&self, name: &str) -> Result<H5Group, ExchangeError> {
        let group = self.group.group(name).ctx(&self.path, format!("opening `{name}`"))?;
        Ok(H5Group { group, path: self.path.clone() })
    }

    /// Opens the subgroup `name`, creating it (and its parents) when absent.
    pub fn group_or_create(&self, name: &str) -> Result<H5Group, ExchangeError> {
        match self.group.group(name) {
            Ok(group) => Ok(H5Group { group, path: self.path.clone() }),
            Err(_) => {
                let mut g = self.clone();
                for part in name.split('/').filter(|p| !p.is_empty()) {
                    g = match g.group.group(part) {
                        Ok(group) => H5Group { group, path: self.path.clone() },
                        Err(_) => g.create_group(part)?,
                    };
                }
                Ok(g)
            }
        }
    }

    /// Names of the members (groups and datasets), sorted.
    pub fn member_names(&self) -> Result<Vec<String>, ExchangeError> {
        guarded(&self.path, "listing members", || self.group.member_names().ctx(&self.path, "listing members"))
    }

    /// Opens the dataset `name` (a path such as `truth/energy` works too).
    pub fn dataset(&self, name: &str) -> Result<H5Dataset, ExchangeError> {
        let action = format!("opening `{name}`");
        let ds = guarded(&self.path, &action, || self.group.dataset(name).ctx(&self.path, &action))?;
        Ok(H5Dataset { ds, path: self.path.clone() })
    }

    /// Writes `data` as the contiguous dataset `name` (shape and type from `data`).
    pub fn write_array<'d, T: H5Element, D: Dimension>(
        &self,
        name: &str,
        data: impl Into<ArrayView<'d, T, D>>,
    ) -> Result<H5Dataset, ExchangeError> {
        let ds = self
            .group
            .new_dataset_builder()
            .with_data(data)
            .create(name)
            .ctx(&self.path, format!("writing `{name}`"))?;
        Ok(H5Dataset { ds, path: self.path.clone() })
    }

    /// Defines the dataset `name` of `T` with the given shape and storage; its values are
    /// written afterwards with [`H5Dataset::write_rows`] or [`H5Dataset::write_all`].
    pub fn define<T: H5Element>(
        &self,
        name: &str,
        shape: &[usize],
        layout: &H5Layout,
    ) -> Result<H5Dataset, ExchangeError> {
        let mut b = self.group.new_dataset::<T>();
        if let Some(level) = layout.deflate.filter(|&l| l > 0) {
            b = b.shuffle().deflate(level);
        }
        if let Some(chunk) = &layout.chunk {
            b = b.chunk(chunk.clone());
        }
        if let Some(bytes) = layout.chunk_cache_bytes {
            // 12 421 slots: a prime well above the chunks of a dataset in flight, as the HDF5
            // documentation advises for the hash table of the cache.
            b = b.chunk_cache(12_421, bytes, 1.0);
        }
        let ds = b.shape(shape.to_vec()).create(name).ctx(&self.path, format!("defining `{name}`"))?;
        Ok(H5Dataset { ds, path: self.path.clone() })
    }

    /// Writes attribute `name`: text as a scalar UTF-8 string, one number as a scalar of
    /// its type, several as a 1-D array.
    pub fn write_attr(&self, name: &str, value: &Attr) -> Result<(), ExchangeError> {
        h5attr::write_attr(&self.group, &self.path, name, value)
    }

    /// Writes attribute `name` as a 1-D `i64` array, even of a single value.
    pub fn write_attr_i64_list(&self, name: &str, values: &[i64]) -> Result<(), ExchangeError> {
        h5attr::write_i64_list(&self.group, &self.path, name, values)
    }

    /// Reads attribute `name`; `Ok(None)` when the group has no such attribute, an error
    /// when it has one of a type the kernels do not use (compounds, references).
    pub fn attr(&self, name: &str) -> Result<Option<Attr>, ExchangeError> {
        guarded(&self.path, &format!("reading attribute `{name}`"), || {
            let Ok(a) = self.group.attr(name) else { return Ok(None) };
            read_attr(&a, &self.path, name).map(Some)
        })
    }

    /// The file this group belongs to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads an attribute as [`Attr`] (strings of several elements joined by newlines).
fn read_attr(a: &hdf5::Attribute, path: &Path, name: &str) -> Result<Attr, ExchangeError> {
    let action = || format!("reading attribute `{name}`");
    let descriptor = a.dtype().and_then(|t| t.to_descriptor()).ctx(path, action())?;
    let strings = |v: Vec<String>| Attr::Str(v.join("\n"));
    Ok(match descriptor {
        TypeDescriptor::VarLenUnicode => {
            strings(a.read_raw::<VarLenUnicode>().ctx(path, action())?.iter().map(|s| s.to_string()).collect())
        }
        TypeDescriptor::VarLenAscii => {
            strings(a.read_raw::<VarLenAscii>().ctx(path, action())?.iter().map(|s| s.to_string()).collect())
        }
        TypeDescriptor::Float(FloatSize::U8) => Attr::F64(a.read_raw().ctx(path, action())?),
        TypeDescriptor::Float(_) => Attr::F32(a.read_raw().ctx(path, action())?),
        TypeDescriptor::Integer(IntSize::U8) | TypeDescriptor::Unsigned(IntSize::U4 | IntSize::U8) => {
            Attr::I64(a.read_raw().ctx(path, action())?)
        }
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => Attr::I32(a.read_raw().ctx(path, action())?),
        other => {
            return Err(ExchangeError::Layout {
                path: path.to_path_buf(),
                reason: format!("attribute `{name}` has the type {other:?}, which the kernels do not read"),
            });
        }
    })
}

/// A dataset of an HDF5 file.
#[derive(Debug, Clone)]
pub struct H5Dataset {
    ds: hdf5::Dataset,
    path: PathBuf,
}

impl H5Dataset {
    /// The dataset's full name in the file (`/truth/energy`).
    pub fn name(&self) -> String {
        self.ds.name()
    }

    /// Shape, chunking, element type and filters.
    pub fn info(&self) -> Result<H5DatasetInfo, ExchangeError> {
        guarded(&self.path, &format!("reading `{}`", self.name()), || self.info_unguarded())
    }

    fn info_unguarded(&self) -> Result<H5DatasetInfo, ExchangeError> {
        let descriptor =
            self.ds.dtype().and_then(|t| t.to_descriptor()).ctx(&self.path, format!("reading `{}`", self.name()))?;
        let element = match descriptor {
            TypeDescriptor::Float(FloatSize::U4) => ElementType::F32,
            TypeDescriptor::Float(_) => ElementType::F64,
            TypeDescriptor::Integer(IntSize::U8) => ElementType::I64,
            TypeDescriptor::Integer(_) => ElementType::I32,
            TypeDescriptor::Unsigned(IntSize::U1) => ElementType::U8,
            TypeDescriptor::Unsigned(_) => ElementType::U64,
            TypeDescriptor::VarLenUnicode | TypeDescriptor::VarLenAscii => ElementType::Str,
            _ => ElementType::Other,
        };
        let filters = self.ds.filters();
        Ok(H5DatasetInfo {
            shape: self.ds.shape(),
            chunk: self.ds.chunk(),
            element,
            deflate: filters.iter().any(|f| matches!(f, hdf5::filters::Filter::Deflate(_))),
            shuffle: filters.iter().any(|f| matches!(f, hdf5::filters::Filter::Shuffle)),
            scale_offset: filters.iter().any(|f| matches!(f, hdf5::filters::Filter::ScaleOffset(_))),
        })
    }

    /// Reads every value, row-major, converted to `T` by the library.
    pub fn read_raw<T: H5Element>(&self) -> Result<Vec<T>, ExchangeError> {
        let action = format!("reading `{}`", self.name());
        guarded(&self.path, &action, || self.ds.read_raw::<T>().ctx(&self.path, &action))
    }

    /// Writes `data` over the whole dataset.
    pub fn write_all<'d, T: H5Element, D: Dimension>(
        &self,
        data: impl Into<ArrayView<'d, T, D>>,
    ) -> Result<(), ExchangeError> {
        self.ds.write(data).ctx(&self.path, format!("writing `{}`", self.name()))
    }

    /// Writes `data` into the rows `first..first + data.len_of(0)` of the first axis (every
    /// index of the others).
    pub fn write_rows<'d, T: H5Element, D: Dimension>(
        &self,
        first: usize,
        data: impl Into<ArrayView<'d, T, D>>,
        action: impl FnOnce() -> String,
    ) -> Result<(), ExchangeError> {
        let data = data.into();
        let n = data.shape().first().copied().unwrap_or(0);
        let mut selection = vec![SliceOrIndex::from(first..first + n)];
        selection.extend(std::iter::repeat_n(SliceOrIndex::from(..), data.ndim().saturating_sub(1)));
        self.ds.write_slice(data, Hyperslab::from(selection)).ctx(&self.path, action())
    }

    /// Writes attribute `name` of the dataset (see [`H5Group::write_attr`]).
    pub fn write_attr(&self, name: &str, value: &Attr) -> Result<(), ExchangeError> {
        h5attr::write_attr(&self.ds, &self.path, name, value)
    }

    /// Reads attribute `name` of the dataset (see [`H5Group::attr`]).
    pub fn attr(&self, name: &str) -> Result<Option<Attr>, ExchangeError> {
        guarded(&self.path, &format!("reading attribute `{name}`"), || {
            let Ok(a) = self.ds.attr(name) else { return Ok(None) };
            read_attr(&a, &self.path, name).map(Some)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_datasets_and_attributes_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tree.h5");
        {
            let file = H5File::create(&path).unwrap();
            let root = file.root().unwrap();
            root.write_attr("title", &Attr::Str("a\0b".into())).unwrap();
            root.write_attr("ranks", &Attr::I32(vec![2])).unwrap();
            root.write_attr("scale", &Attr::F64(vec![0.5, 1.5])).unwrap();
            root.write_attr_i64_list("widths", &[7]).unwrap();
            let g = root.group_or_create("a/b").unwrap();
            g.write_array("v", ndarray::ArrayView1::from(&[1.0_f64, 2.0][..])).unwrap();
            let layout = H5Layout { chunk: Some(vec![2, 3]), deflate: Some(4), chunk_cache_bytes: Some(1 << 20) };
            let cells = root.define::<f32>("cells", &[5, 3], &layout).unwrap();
            let block = ndarray::Array2::from_shape_fn((2, 3), |(i, j)| (10 * i + j) as f32);
            cells.write_rows(3, &block, || "writing rows".into()).unwrap();
            cells.write_attr("units", &Attr::Str("GeV".into())).unwrap();
            let ids = root.define::<u64>("ids", &[4], &H5Layout::default()).unwrap();
            ids.write_all(ndarray::ArrayView1::from(&[5_u64, 6, 7, 8][..])).unwrap();
            drop((root, g, cells, ids));
            file.close().unwrap();
        }
        let file = H5File::open(&path).unwrap();
        let root = file.root().unwrap();
        assert_eq!(root.attr("title").unwrap(), Some(Attr::Str("ab".into())), "NUL bytes are dropped");
        assert_eq!(root.attr("ranks").unwrap(), Some(Attr::I32(vec![2])));
        assert_eq!(root.attr("scale").unwrap(), Some(Attr::F64(vec![0.5, 1.5])));
        assert_eq!(root.attr("widths").unwrap(), Some(Attr::I64(vec![7])));
        assert_eq!(root.attr("absent").unwrap(), None);
        assert_eq!(root.member_names().unwrap(), ["a", "cells", "ids"]);
        assert_eq!(root.dataset("a/b/v").unwrap().read_raw::<f64>().unwrap(), [1.0, 2.0]);
        let cells = root.dataset("cells").unwrap();
        let info = cells.info().unwrap();
        assert_eq!(info.shape, [5, 3]);
        assert_eq!(info.chunk, Some(vec![2, 3]));
        assert_eq!(info.element, ElementType::F32);
        assert!(info.deflate && info.shuffle);
        assert_eq!(cells.read_raw::<f32>().unwrap()[9..], [0.0, 1.0, 2.0, 10.0, 11.0, 12.0]);
        assert_eq!(cells.attr("units").unwrap(), Some(Attr::Str("GeV".into())));
        let ids = root.dataset("ids").unwrap();
        let info = ids.info().unwrap();
        assert!(info.element == ElementType::U64 && info.chunk.is_none() && !info.deflate);
        assert_eq!(ids.read_raw::<u64>().unwrap(), [5, 6, 7, 8]);
        let err = root.dataset("nope").unwrap_err();
        assert!(matches!(err, ExchangeError::Hdf5 { .. }), "{err}");
    }
}
