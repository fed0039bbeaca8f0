//! Damaged exchange files that crash, panic or hang below twinflow inside `twin-kernel`
//! (the HDF5 C library, the `netcdf` crate; found by the `exchange` fuzz target, kept in
//! `fuzz/known-crashes/exchange/`): the step fails as a process, the engine says how; a
//! panic of the crate is an error naming the file, and a hang ends at the kernel's own I/O
//! deadline (`TWIN_KERNEL_IO_TIMEOUT`) when the step has no timeout.

use std::path::{Path, PathBuf};

use crate::support::*;

fn known(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/known-crashes/exchange").join(name)
}

#[test]
fn a_kernel_crashing_or_hanging_in_the_file_libraries_is_a_failed_step_with_a_clear_message() {
    let d = scratch("damaged_exchange/kernel");
    let kernel = Path::new(env!("CARGO_BIN_EXE_twinflow")).with_file_name("twin-kernel");
    assert!(kernel.is_file(), "{} is missing: build it (`cargo build -p twinflow-kernels`)", kernel.display());
    let (k, segv, panic, hang) = (
        kernel.display().to_string(),
        known("c-library-signal.h5").display().to_string(),
        known("netcdf-crate-panic-file-attributes-unwrap.nc").display().to_string(),
        known("hdf5-hang-global-heap-vlen-attribute.h5").display().to_string(),
    );
    let wf = write(
        &d,
        "damaged.yaml",
        &format!(
            r#"
name: damaged
steps:
  segv:
    run: ["{k}", stage, checksum, "{segv}"]
  panic:
    run: ["{k}", stage, checksum, "{panic}"]
  hang:
    timeout: 5s
    run: ["{k}", stage, checksum, "{hang}"]
  hang-without-timeout:
    env: {{ TWIN_KERNEL_IO_TIMEOUT: "3" }}
    run: ["{k}", stage, checksum, "{hang}"]
"#
        ),
    );
    let started = std::time::Instant::now();
    let out = run_json(&d, &wf, &["--keep-going"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "the run took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let evs = events(&out);
    let message = |task: &str| {
        let e = evs
            .iter()
            .find(|e| e["event"] == "task-finished" && e["task"] == task)
            .unwrap_or_else(|| panic!("no task-finished event of {task}: {}", show(&out)));
        assert_eq!(e["state"], "failed", "{e:#}");
        e["message"].as_str().unwrap_or_default().to_string()
    };
    let m = message("segv");
    assert!(m.starts_with("killed by signal 11: SIGSEGV (segmentation fault)"), "{m}");
    let m = message("panic");
    assert!(m.starts_with("exit code 3"), "the kernel's exit code for a bad input: {m}");
    assert!(!m.contains("panicked"), "the crate's panic is caught: {m}");
    assert!(
        m.contains("netcdf-crate-panic-file-attributes-unwrap.nc") && m.contains("probably damaged"),
        "the message names the file: {m}"
    );
    let m = message("hang");
    assert!(m.starts_with("timed out"), "{m}");
    let m = message("hang-without-timeout");
    assert!(m.starts_with("killed by signal 6: SIGABRT"), "{m}");
    assert!(
        m.contains("hdf5-hang-global-heap-vlen-attribute.h5")
            && m.contains("has not returned")
            && m.contains("after 3 s"),
        "the kernel's watchdog names the file: {m}"
    );
}
