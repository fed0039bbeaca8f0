//! The contract between the twinflow engine and the programs it runs.
//!
//! The engine and the science kernels never depend on each other's code; they share only
//! the names defined here: the environment variables a step sees, and the metadata that
//! exchange files (HDF5, NetCDF) carry so a later stage can tell where a file came from.
#![warn(missing_docs)]

/// The kernels of `twin-kernel` (its subcommands): what a step's `kernel:` may name. The
/// kernel crate tests that this list and its command line agree.
pub const KERNELS: &[&str] = &[
    "assimilate",
    "calo",
    "detector-sim",
    "flood",
    "info",
    "ingest",
    "lorenz96",
    "online",
    "plot",
    "predict",
    "select",
    "sensor",
    "stage",
    "summary",
    "tabulate",
    "terrain",
    "train",
    "verify",
];

/// Exit codes of `twin-kernel`: how a kernel step ended, which is what the engine sees as
/// the step's exit status. The kernels' error types map themselves to these
/// (`exit_code()`), and `twin-kernel --help` documents them.
pub mod exit_code {
    /// The run finished and its outputs are in place.
    pub const SUCCESS: u8 = 0;
    /// The run failed (I/O, numerical failure); outputs are absent or `.partial`.
    pub const FAILURE: u8 = 1;
    /// The command line is invalid (reported by clap).
    pub const USAGE: u8 = 2;
    /// The configuration or an input file is invalid.
    pub const INVALID_INPUT: u8 = 3;
    /// Training stopped at `--time-limit`/`--epoch-limit` with its checkpoint written.
    pub const STOPPED: u8 = 4;
}

/// Environment variables the engine sets for every step it runs.
pub mod env {
    /// Identifier of the run (e.g. `20261122-101500-3f2a`).
    pub const RUN_ID: &str = "TWINFLOW_RUN_ID";
    /// Name of the step as written in the workflow (`simulate`).
    pub const STEP: &str = "TWINFLOW_STEP";
    /// Index of the scatter member, unset for steps that do not scatter.
    pub const MEMBER: &str = "TWINFLOW_MEMBER";
    /// Cycle index (from 0) of a task of a cycling workflow.
    pub const CYCLE_INDEX: &str = "TWINFLOW_CYCLE_INDEX";
    /// Cycle point of a task of a cycling workflow (an integer, or ISO 8601 UTC).
    pub const CYCLE_POINT: &str = "TWINFLOW_CYCLE_POINT";
    /// Attempt number, starting at 1.
    pub const ATTEMPT: &str = "TWINFLOW_ATTEMPT";
    /// Absolute path of the step's working directory (its outputs are written below it).
    pub const STEP_DIR: &str = "TWINFLOW_STEP_DIR";
    /// Absolute path the step's directory gets when the attempt succeeds (`.../out`): the
    /// engine renames [`STEP_DIR`] there, so logs and file metadata that name an output
    /// should name it by this path. Not set for services, which write into `out/` directly.
    pub const RESULT_DIR: &str = "TWINFLOW_RESULT_DIR";
    /// Absolute path of the JSON manifest describing the step's resolved inputs and outputs.
    pub const MANIFEST: &str = "TWINFLOW_MANIFEST";
    /// Number of threads the step may use (`resources.threads`); also exported as
    /// `OMP_NUM_THREADS` and `RAYON_NUM_THREADS`.
    pub const THREADS: &str = "TWINFLOW_THREADS";
    /// Number of MPI ranks the step was given (`resources.ranks`).
    pub const RANKS: &str = "TWINFLOW_RANKS";
    /// Prefix of the per-input variables: input `grid` is exported as `TWINFLOW_IN_GRID`.
    pub const INPUT_PREFIX: &str = "TWINFLOW_IN_";
    /// Path of the `twin-kernel` binary the engine runs for `kernel:` steps (optional;
    /// by default the one next to `twinflow`, then `PATH`).
    pub const KERNEL_BIN: &str = "TWINFLOW_KERNEL_BIN";
    /// Prefix of the per-output variables: output `result` is exported as `TWINFLOW_OUT_RESULT`.
    pub const OUTPUT_PREFIX: &str = "TWINFLOW_OUT_";
}

/// Global attributes every exchange file written by a twinflow kernel carries (HDF5 root
/// attributes, NetCDF global attributes), so provenance survives between stages.
pub mod provenance {
    /// CF version the NetCDF outputs follow.
    pub const CONVENTIONS: &str = "CF-1.10";
    /// Attribute holding the run id.
    pub const RUN_ID_ATTR: &str = "twinflow_run_id";
    /// Attribute holding the step name.
    pub const STEP_ATTR: &str = "twinflow_step";
    /// Attribute holding the kernel name.
    pub const KERNEL_ATTR: &str = "twinflow_kernel";
    /// Attribute holding the kernel version.
    pub const KERNEL_VERSION_ATTR: &str = "twinflow_kernel_version";
    /// Attribute holding the kernel parameters as JSON.
    pub const PARAMETERS_ATTR: &str = "twinflow_parameters";
    /// Integer attribute: number of MPI ranks the kernel ran on (1 without MPI).
    pub const MPI_RANKS_ATTR: &str = "mpi_ranks";
    /// Attribute holding the identifier of the run's provenance RO-Crate
    /// (`twinflow export RUN --ro-crate`): [`crate_id`] of the run id.
    pub const CRATE_ATTR: &str = "twinflow_provenance";

    /// The identifier of a run's provenance crate: `urn:twinflow:run:RUN_ID`.
    pub fn crate_id(run_id: &str) -> String {
        format!("urn:twinflow:run:{run_id}")
    }
}

/// Names of the variables (NetCDF) and datasets (HDF5) in exchange files, so a later stage
/// can find a field without guessing.
pub mod datasets {
    /// Cell-centre x coordinate, metres (dimension and coordinate variable).
    pub const X: &str = "x";
    /// Cell-centre y coordinate, metres (dimension and coordinate variable).
    pub const Y: &str = "y";
    /// Time of a snapshot, seconds since [`super::cf::TIME_REFERENCE`] (unlimited dimension).
    pub const TIME: &str = "time";
    /// Bed (ground) elevation, metres above datum.
    pub const BED_ELEVATION: &str = "z";
    /// Water depth, metres.
    pub const DEPTH: &str = "h";
    /// Depth-averaged velocity along x, metres per second.
    pub const VELOCITY_X: &str = "u";
    /// Depth-averaged velocity along y, metres per second.
    pub const VELOCITY_Y: &str = "v";
    /// Discharge per unit width along x (`h u`, the conserved variable), m² s⁻¹.
    pub const MOMENTUM_X: &str = "hu";
    /// Discharge per unit width along y (`h v`), m² s⁻¹.
    pub const MOMENTUM_Y: &str = "hv";
    /// Manning roughness of a flood member's state file (0-d, or `[member]` when merged).
    pub const MANNING_N: &str = "manning_n";
    /// Factor on the inflow hydrograph of a flood member's state file.
    pub const INFLOW_SCALE: &str = "inflow_scale";
    /// Global attribute: model time of a state file, s.
    pub const MODEL_TIME: &str = "model_time";
    /// Maximum water depth over the run, metres.
    pub const MAX_DEPTH: &str = "max_depth";
    /// Model time at which a cell first became inundated, seconds.
    pub const ARRIVAL_TIME: &str = "arrival_time";
    /// Station dimension of gauge time series.
    pub const STATION: &str = "station";
    /// Water-surface elevation (bed + depth) at gauges, metres above datum.
    pub const WATER_LEVEL: &str = "eta";
    /// Leading dimension of a merged ensemble (`stage merge`): one index per member, in
    /// the order of the scatter.
    pub const MEMBER: &str = "member";
    /// Station identifier of gauge and observation files (CF `timeseries_id`).
    pub const STATION_NAME: &str = "station_name";
    /// Observed value of an observation file (`[station, time]`).
    pub const OBS_VALUE: &str = "value";
    /// Observation error standard deviation (`[station, time]`, `[station]` or scalar).
    pub const OBS_ERROR_STD: &str = "error_std";
    /// State index an observation sees under the identity operator (`[station]`).
    pub const OBS_STATE_INDEX: &str = "state_index";
    /// Lorenz-96 state variable (`[site]`, `[member, site]` or `[time, site]`).
    pub const LORENZ96_STATE: &str = "state";
    /// Lorenz-96 grid dimension and coordinate (site index 0 … n − 1).
    pub const LORENZ96_SITE: &str = "site";
}

/// Window files of the stream ingest (`twin-kernel ingest`): names the files, variables and
/// attributes a later step (a `files:` trigger, the detector twin) relies on.
pub mod stream {
    /// Prefix of a window file: `window-000042.nc` (six digits, zero-padded, from 0).
    pub const WINDOW_PREFIX: &str = "window-";
    /// Unlimited dimension along which a window's records lie, in arrival order.
    pub const RECORD: &str = "record";
    /// Dimension of the sensors that sent the window's records.
    pub const SENSOR: &str = "sensor";
    /// Sensor identifiers, `[sensor]` strings (CF `cf_role = timeseries_id`).
    pub const SENSOR_NAME: &str = "sensor_name";
    /// Index of a record's sensor in [`SENSOR_NAME`], `[record]` (CF indexed ragged array:
    /// `instance_dimension = "sensor"`).
    pub const SENSOR_INDEX: &str = "sensor_index";
    /// Time of a record, `[record]`, in the units the schema declares (by default seconds
    /// since 1970-01-01 00:00:00 UTC).
    pub const TIME: &str = "time";
    /// Global attribute: index of the window (the number in its file name).
    pub const WINDOW_INDEX_ATTR: &str = "window_index";
    /// Global attribute: records received in the window (excluding redeliveries), equal to
    /// [`RECORDS_WRITTEN_ATTR`] + [`RECORDS_DEAD_LETTERED_ATTR`].
    pub const RECORDS_IN_ATTR: &str = "records_in";
    /// Global attribute: records written to the file.
    pub const RECORDS_WRITTEN_ATTR: &str = "records_written";
    /// Global attribute: records sent to the dead-letter file, with the reason.
    pub const RECORDS_DEAD_LETTERED_ATTR: &str = "records_dead_lettered";
    /// Global attribute: redeliveries of records already held (dropped, not counted in).
    pub const RECORDS_DUPLICATE_ATTR: &str = "records_duplicate";
    /// Global attribute: earliest record time of the window (units of [`TIME`]).
    pub const TIME_MIN_ATTR: &str = "window_time_min";
    /// Global attribute: latest record time of the window (units of [`TIME`]).
    pub const TIME_MAX_ATTR: &str = "window_time_max";
}

/// CF-convention attribute names and fixed values used by every NetCDF exchange file.
pub mod cf {
    /// Global attribute naming the conventions followed.
    pub const CONVENTIONS: &str = "Conventions";
    /// Global attribute: short description of the file contents.
    pub const TITLE: &str = "title";
    /// Global attribute: audit trail of programs that produced the file.
    pub const HISTORY: &str = "history";
    /// Global attribute: method of production.
    pub const SOURCE: &str = "source";
    /// Global attribute of discrete-sampling-geometry files (`timeSeries`).
    pub const FEATURE_TYPE: &str = "featureType";
    /// Variable attribute: units (UDUNITS syntax).
    pub const UNITS: &str = "units";
    /// Variable attribute: CF standard name.
    pub const STANDARD_NAME: &str = "standard_name";
    /// Variable attribute: descriptive name.
    pub const LONG_NAME: &str = "long_name";
    /// Coordinate variable attribute: `X`, `Y`, `T`.
    pub const AXIS: &str = "axis";
    /// Variable attribute: value marking missing data.
    pub const FILL_VALUE: &str = "_FillValue";
    /// Variable attribute: names of auxiliary coordinate variables.
    pub const COORDINATES: &str = "coordinates";
    /// Variable attribute: `timeseries_id` marks the station identifier variable.
    pub const CF_ROLE: &str = "cf_role";
    /// Time coordinate attribute: calendar name.
    pub const CALENDAR: &str = "calendar";
    /// Units of every `time` coordinate: simulation time 0 is this instant.
    pub const TIME_REFERENCE: &str = "seconds since 2000-01-01 00:00:00";
    /// Fill value of floating-point data variables.
    pub const FILL_F64: f64 = -9999.0;
}

/// Suffix of the temporary name an output is written under before it is renamed into place.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// When the programs colour their output: one rule for `twinflow` and `twin-kernel`.
pub mod colour {
    /// Colour is used only on a terminal, and not when `NO_COLOR` is set to a non-empty
    /// value (<https://no-color.org>: an empty `NO_COLOR` does not count).
    pub fn enabled(terminal: bool) -> bool {
        terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn never_without_a_terminal() {
            assert!(!super::enabled(false));
        }
    }
}
