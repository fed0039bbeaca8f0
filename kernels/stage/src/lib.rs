//! Staging: the data plumbing between the steps of a twin, on any exchange file the
//! kernels write (gridded fields, station series, merged ensembles), NetCDF-4 or HDF5;
//! the ensemble summary of a flood twin ([`summary`]) and the synthetic terrain its
//! examples and tests run on ([`terrain`]).
//!
//! - [`convert`]: NetCDF ↔ HDF5, values, types, dimensions and attributes kept.
//! - [`subset`]: a coordinate box, an index box and/or a time range.
//! - [`regrid`]: bilinear interpolation onto another file's `x`/`y` grid.
//! - [`merge`]: ensemble members into one file with a leading `member` dimension.
//! - [`checksum`]: blake3 digests of the variables' values (format independent).
//!
//! Every operation reads through [`twinflow_exchange::Dataset`], appends a line to the CF
//! `history` attribute, and writes its output under `<name>.partial` before renaming it.
//!
//! Tests use analytic data (`testdata.rs`): bilinear regrid of a linear field is exact,
//! subsets keep the coordinates of what they keep, merges keep member order and metadata,
//! conversions round-trip values, types and attributes, checksums ignore the format.
#![warn(missing_docs)]

mod checksum;
mod convert;
mod error;
pub mod figures;
mod merge;
mod regrid;
mod select;
mod subset;
pub mod summary;
pub mod terrain;
#[cfg(test)]
pub(crate) mod testdata;

pub use checksum::{FileChecksum, checksum};
pub use convert::convert;
pub use error::StageError;
pub use merge::{MEMBER_DIM, merge};
pub use regrid::{regrid, regrid_file};
pub use subset::{Subset, subset, subset_file};
