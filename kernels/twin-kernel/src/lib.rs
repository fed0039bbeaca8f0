//! Science kernels of twinflow, run by the engine as steps of a workflow.
//!
//! - [`calo`]: fast Monte Carlo of electromagnetic showers in a sampling calorimeter.
//! - [`comm`]: the communicator abstraction (single process or MPI ranks).
//! - [`exchange`]: NetCDF-4 / HDF5 exchange files with CF and provenance metadata.
//! - [`flood`]: 2D shallow-water flood kernel.
//! - [`stage`]: convert, subset, regrid, merge and checksum exchange files.
//! - [`summary`]: ensemble statistics (exceedance probabilities, gauge statistics) and a map.
//! - [`terrain`]: synthetic terrain for examples and tests.
//! - [`train`]: data-parallel surrogate training (MLP / linear), prediction, sweep ranking.
//!
//! The kernels share only names with the engine, through `twinflow-contract`.
#![warn(missing_docs)]

pub mod calo;
pub mod comm;
pub mod exchange;
pub mod flood;
pub mod stage;
pub mod summary;
pub mod terrain;
pub mod train;
