//! Small helpers shared by the end-to-end test modules.

use std::path::{Path, PathBuf};

/// Path of the `twinflow` binary built for these tests.
pub fn twinflow_bin() -> &'static str {
    env!("CARGO_BIN_EXE_twinflow")
}

/// The repository root (tests run the binary from here so paths in messages are relative).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&root).unwrap_or(root)
}
