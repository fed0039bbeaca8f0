//! Helpers shared by the end-to-end tests: run the real `twinflow` binary in a scratch
//! directory and read its JSON events and run database.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub fn twinflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_twinflow"));
    c.env("NO_COLOR", "1").env_remove("TWINFLOW_RUNS_DIR").env_remove("RUST_LOG");
    c
}

/// A scratch directory for one test (kept under the target dir for inspection on failure).
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// Writes a workflow file into `dir`.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write workflow");
    p
}

/// Runs `twinflow run FILE ARGS... --json` in `dir`; returns the output.
pub fn run_json(dir: &Path, file: &Path, args: &[&str]) -> Output {
    twinflow().current_dir(dir).arg("run").arg(file).args(args).arg("--json").output().expect("run twinflow")
}

/// Parsed JSON event lines of an output.
pub fn events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Final state of each task from the events: task → state.
pub fn final_states(out: &Output) -> std::collections::BTreeMap<String, String> {
    events(out)
        .into_iter()
        .filter(|e| e["event"] == "task-finished")
        .map(|e| (e["task"].as_str().unwrap_or("").to_string(), e["state"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// The run summary event.
pub fn finished(out: &Output) -> serde_json::Value {
    events(out).into_iter().find(|e| e["event"] == "run-finished").unwrap_or_else(|| {
        panic!(
            "no run-finished event; stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Shows stdout and stderr for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Task rows of a run from the database: task → (state, attempts).
pub fn db_tasks(runs: &Path, run_id: &str) -> std::collections::BTreeMap<String, (String, u32)> {
    let c = rusqlite::Connection::open(runs.join("twinflow.db")).expect("open db");
    let mut st = c.prepare("SELECT task, state, attempts FROM tasks WHERE run_id = ?1").expect("prepare");
    st.query_map([run_id], |r| Ok((r.get::<_, String>(0)?, (r.get::<_, String>(1)?, r.get::<_, u32>(2)?))))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Starts `twinflow run FILE --json ARGS...` in `dir` without waiting (stdout piped).
pub fn spawn_run(dir: &Path, file: &Path, args: &[&str]) -> std::process::Child {
    twinflow()
        .current_dir(dir)
        .arg("run")
        .arg(file)
        .arg("--json")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start twinflow")
}

/// The id of the run an `--json` run reports.
pub fn run_id(out: &Output) -> String {
    finished(out)["run_id"].as_str().expect("run id").to_string()
}

/// The text of `DIR/runs/RUN/steps/PATH` for the run of `out` (`"report/out/report.txt"`).
pub fn step_file(dir: &Path, out: &Output, path: &str) -> String {
    let p = dir.join("runs").join(run_id(out)).join("steps").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Waits for `child` at most `timeout` (then kills it), reading its piped stdout and stderr
/// meanwhile: a child whose output outgrew the pipe would otherwise block on its next write
/// and never finish. Returns the output and whether it finished by itself.
pub fn wait_with_deadline(mut child: std::process::Child, timeout: std::time::Duration) -> (Output, bool) {
    fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let start = std::time::Instant::now();
    let (status, finished) = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break (status, true);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            break (child.wait().expect("wait for the killed child"), false);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() }, finished)
}

/// Bytes of the files under `dir` (links not followed).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(dir) else { return 0 };
    if !m.is_dir() {
        return m.len();
    }
    std::fs::read_dir(dir).unwrap().flatten().map(|e| dir_bytes(&e.path())).sum()
}
