//! End-to-end tests of the `twinflow` binary.
