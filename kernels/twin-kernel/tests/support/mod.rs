//! Helpers shared by the `twin-kernel` test binaries: scratch directories, running the
//! binary with a deadline, and success checks that show the output on failure.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_twin-kernel");

/// A fresh scratch directory `suite/name` under the target directory.
pub fn scratch_in(suite: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(suite).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `cmd` in `dir` with a deadline; a hung process is killed and the test fails.
pub fn run(mut cmd: Command, dir: &Path, timeout: Duration) -> Output {
    let described = format!("{cmd:?}");
    // Test threads write HDF5 fixtures while others spawn kernels: the C library opens files
    // without O_CLOEXEC, so a child spawned meanwhile inherits the descriptor and with it
    // the fixture's flock(2) lock, which then stays held for that child's whole life and
    // makes the next kernel's open fail with EAGAIN ("unable to lock file"). Only this
    // test harness writes and spawns concurrently; the kernels keep HDF5's locking.
    cmd.env("HDF5_USE_FILE_LOCKING", "FALSE");
    cmd.current_dir(dir).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {described}: {e}"));
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{described} timed out after {timeout:?}; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Fails the test with the process's output unless it succeeded.
pub fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Fails the test unless the process failed, and failed cleanly (no panic); returns its
/// exit code and stderr.
pub fn failed(out: Output, what: &str) -> (i32, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{what} succeeded");
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}
