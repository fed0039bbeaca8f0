//! Exit codes of `twinflow`, in one place (also listed in `--help`).

/// Everything succeeded.
pub const OK: i32 = 0;
/// The run finished with failed tasks.
pub const RUN_FAILED: i32 = 1;
/// The workflow or the command line is invalid.
pub const INVALID: i32 = 2;
/// An internal or environment error (run database, file system, backend).
pub const ERROR: i32 = 3;
/// Cancelled by SIGINT/SIGTERM.
pub const CANCELLED: i32 = 130;

/// Text for `--help`.
pub const HELP: &str = "Exit codes:
  0    success
  1    the run finished with failed tasks
  2    invalid workflow or command line (every problem is reported with file:line:col)
  3    internal or environment error (run database, file system, backend, a program the
       run needs is missing)
  130  cancelled by Ctrl-C / SIGTERM (running steps were stopped: SIGTERM, grace, SIGKILL;
       a second Ctrl-C kills them at once)";
