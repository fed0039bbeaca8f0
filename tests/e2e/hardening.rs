//! Hardening (issue 17): a damaged or locked run database, many engines in one runs
//! directory, a stopped engine, a full disk, and what twinflow records and publishes
//! (credentials left out of the environment snapshot, owner-only records, the umask,
//! symbolic links at publish targets).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use crate::support::*;

const SMALL: &str = r#"
name: small
steps:
  a:
    run: [sh, -c, 'echo a > a.txt']
    out: { a: a.txt }
  b:
    run: [sh, -c, 'cat "$1" > b.txt', sh, "${{ steps.a.out.a }}"]
    out: { b: b.txt }
"#;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o7777
}

/// `PRAGMA integrity_check` of the run database in `runs`.
fn integrity(runs: &Path) -> String {
    let c = rusqlite::Connection::open(runs.join("twinflow.db")).expect("open db");
    c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).expect("integrity_check")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------
// A damaged run database.

/// Each kind of damage: exit 3, a message naming the file and what to do, no panic, and the
/// file is left byte for byte as it was.
#[test]
fn a_damaged_run_database_is_refused_with_exit_3_and_left_as_it_is() {
    let d = scratch("hardening/damaged");
    let wf = write(&d, "small.yaml", SMALL);
    // A real database to damage: one run recorded.
    let good = run_json(&d, &wf, &[]);
    assert!(good.status.success(), "{}", show(&good));
    let runs = d.join("runs");
    let db = runs.join("twinflow.db");
    // Checkpoint the WAL into the file so that the file alone holds the runs.
    rusqlite::Connection::open(&db).unwrap().execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    let bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() >= 8192, "a database of several pages expected: {} bytes", bytes.len());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated to its first page", bytes[..4096].to_vec()),
        ("truncated inside its header", bytes[..60].to_vec()),
        ("zeroed", vec![0u8; bytes.len()]),
        ("garbage", (0..bytes.len()).map(|i| (i * 7919 % 251) as u8).collect()),
        ("header kept, pages garbled", {
            let mut b = bytes.clone();
            for (i, x) in b.iter_mut().enumerate().skip(100) {
                *x = (i * 31 % 253) as u8;
            }
            b
        }),
    ];
    for (what, damaged) in cases {
        for name in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(runs.join(format!("twinflow.db{name}")));
        }
        std::fs::write(&db, &damaged).unwrap();
        for args in [vec!["run", "small.yaml"], vec!["status"], vec!["run", "--resume"]] {
            let out = twinflow().current_dir(&d).args(&args).output().unwrap();
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(3), "{what}, `{}`: {}", args.join(" "), show(&out));
            assert!(!err.contains("panicked"), "{what}: {err}");
            assert!(
                err.contains("runs/twinflow.db") && err.contains("damaged"),
                "{what}: the file is not named: {err}"
            );
            assert!(err.contains("hint: move it aside"), "{what}: no advice: {err}");
            assert_eq!(std::fs::read(&db).unwrap(), damaged, "{what}, `{}`: the file was rewritten", args.join(" "));
        }
    }
}

/// Another process holds the database's write lock for longer than the busy timeout
/// (10 s): the engine gives up with exit 3 and says what to do, the file is unharmed and
/// the next run, once the lock is gone, works.
#[test]
fn a_run_database_locked_longer_than_the_busy_timeout_is_an_environment_error() {
    let d = scratch("hardening/locked");
    let wf = write(&d, "small.yaml", SMALL);
    let first = run_json(&d, &wf, &[]);
    assert!(first.status.success(), "{}", show(&first));
    let holder = rusqlite::Connection::open(d.join("runs/twinflow.db")).unwrap();
    holder
        .execute_batch("BEGIN IMMEDIATE; INSERT INTO files(path, size, mtime_ns, hash) VALUES ('x', 1, 1, 'h')")
        .unwrap();
    let t = Instant::now();
    let (out, finished) = wait_with_deadline(
        twinflow()
            .current_dir(&d)
            .args(["run", "small.yaml"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    let waited = t.elapsed();
    assert!(finished, "the engine waited for the lock for a minute: {}", show(&out));
    holder.execute_batch("ROLLBACK").unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(err.contains("runs/twinflow.db") && err.contains("locked by another process"), "{err}");
    assert!(err.contains("hint: find the process holding it"), "{err}");
    assert!(waited >= Duration::from_secs(9), "gave up after {waited:?}, before the busy timeout");
    assert_eq!(integrity(&d.join("runs")), "ok");
    let again = run_json(&d, &wf, &[]);
    assert!(again.status.success(), "{}", show(&again));
}

const ORPHANS: &str = r#"
name: orphans
params:
  logs: { type: string }
steps:
  quick:
    run: [sh, -c, 'sleep 1; echo q > q.txt']
    out: { q: q.txt }
  long:
    run: [sh, -c, 'echo $$ > "$1/long.pid.tmp"; mv "$1/long.pid.tmp" "$1/long.pid"; exec sleep 120', sh, "${{ params.logs }}"]
"#;

/// Whether process `pid` still runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

/// The engine stops on an error of its own (here the database locked for longer than the
/// busy timeout) while a step runs: it stops that step (SIGTERM, grace, SIGKILL) before it
/// exits, so no step goes on without an engine.
#[test]
fn an_engine_that_stops_on_an_error_stops_its_running_steps() {
    let d = scratch("hardening/orphans");
    let wf = write(&d, "orphans.yaml", ORPHANS);
    let logs = d.join("logs");
    std::fs::create_dir(&logs).unwrap();
    // The database exists before the lock is taken.
    let first = run_json(&d, &write(&d, "small.yaml", SMALL), &[]);
    assert!(first.status.success(), "{}", show(&first));
    let child = twinflow()
        .current_dir(&d)
        .arg("run")
        .arg(&wf)
        .args(["--json", "--grace", "1", "-p", &format!("logs={}", logs.display())])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !logs.join("long.pid").exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "`long` did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid: u32 = std::fs::read_to_string(logs.join("long.pid")).unwrap().trim().parse().unwrap();
    let holder = rusqlite::Connection::open(d.join("runs/twinflow.db")).unwrap();
    holder
        .execute_batch("BEGIN IMMEDIATE; INSERT INTO files(path, size, mtime_ns, hash) VALUES ('y', 1, 1, 'h')")
        .unwrap();
    assert!(alive(pid), "`long` ended early");
    let (out, finished) = wait_with_deadline(child, Duration::from_secs(60));
    holder.execute_batch("ROLLBACK").unwrap();
    assert!(finished, "{}", show(&out));
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(stderr(&out).contains("locked by another process"), "{}", show(&out));
    assert!(!alive(pid), "the engine exited and left its step `long` (pid {pid}) running");
}

// ---------------------------------------------------------------------------------------
// What twinflow records and publishes.

const RECORDS: &str = r#"
name: records
params:
  dest: { type: path }
steps:
  make:
    run: [sh, -c, 'echo exit 0 > tool.sh; chmod 0777 tool.sh; mkdir -p nested; echo n > nested/n.txt; env > seen.txt']
    out: { tool: tool.sh, n: nested/n.txt, seen: seen.txt }
    publish: { tool: "${{ params.dest }}/new/dir/tool.sh" }
"#;

/// Under umask 027: the run database and the environment snapshot are owner-only, the
/// directories twinflow makes (run, step, published directories) and the published copy
/// honour the umask.
#[test]
fn records_are_owner_only_and_created_files_honour_the_umask() {
    let d = scratch("hardening/umask");
    write(&d, "records.yaml", RECORDS);
    let dest = d.join("pub");
    // `sh` sets the umask, then becomes twinflow (argv passed through, no shell string).
    let out = std::process::Command::new("sh")
        .current_dir(&d)
        .args(["-c", "umask 027; exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_twinflow")])
        .args(["run", "records.yaml", "--json", "-p"])
        .arg(format!("dest={}", dest.display()))
        .env("NO_COLOR", "1")
        .env_remove("TWINFLOW_RUNS_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let runs = d.join("runs");
    let run = runs.join(run_id(&out));
    // SQLite removes `-wal` and `-shm` when the last connection closes; a reader makes them
    // again, with the database's mode (this test process has another umask).
    let reader = rusqlite::Connection::open(runs.join("twinflow.db")).unwrap();
    let _: i64 = reader.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0)).unwrap();
    for f in ["twinflow.db", "twinflow.db-wal", "twinflow.db-shm"] {
        assert_eq!(mode(&runs.join(f)), 0o600, "{f}");
    }
    drop(reader);
    let snaps: Vec<PathBuf> = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("env-"))
        .collect();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(mode(&snaps[0]), 0o600);
    for dir in [runs.clone(), run.clone(), run.join("steps"), run.join("steps/make/out"), dest.join("new/dir")] {
        assert_eq!(mode(&dir), 0o750, "{}", dir.display());
    }
    // The step made its file 0777; the published copy is that less the umask.
    assert_eq!(mode(&run.join("steps/make/out/tool.sh")), 0o777);
    assert_eq!(mode(&dest.join("new/dir/tool.sh")), 0o750);
}

const SECRETS: &str = r#"
name: secrets
steps:
  show:
    run: [sh, -c, 'env > seen.txt']
    out: { seen: seen.txt }
"#;

fn snapshot_of(d: &Path, out: &Output) -> Option<serde_json::Value> {
    let run = d.join("runs").join(run_id(out));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("steps/show/out/.twinflow/manifest.json")).unwrap())
            .unwrap();
    let name = m["inherited_env"].as_str()?;
    Some(serde_json::from_str(&std::fs::read_to_string(run.join(name)).unwrap()).unwrap())
}

/// Variables whose names look like credentials (and those matching `--env-exclude`) are
/// named in the snapshot, their values never written; the step still gets them;
/// `--no-env-snapshot` writes none.
#[test]
fn the_environment_snapshot_leaves_out_credentials_and_can_be_disabled() {
    let d = scratch("hardening/secrets");
    write(&d, "secrets.yaml", SECRETS);
    let secret_values = ["tok-1a2b3c", "pw-4d5e6f", "k-7a8b9c", "site-0f0f0f"];
    let cmd = |extra: &[&str]| {
        twinflow()
            .current_dir(&d)
            .args(["run", "secrets.yaml", "--json", "--no-cache"])
            .args(extra)
            .env("GITHUB_TOKEN", secret_values[0])
            .env("db_password", secret_values[1])
            .env("MY_API_KEY", secret_values[2])
            .env("SITE_LICENSE_SERVER", secret_values[3])
            .env("PLAIN_SETTING", "visible")
            .env_remove("TWINFLOW_ENV_EXCLUDE")
            .env_remove("TWINFLOW_NO_ENV_SNAPSHOT")
            .output()
            .unwrap()
    };
    let out = cmd(&["--env-exclude", "SITE_*"]);
    assert!(out.status.success(), "{}", show(&out));
    let snap = snapshot_of(&d, &out).expect("a snapshot");
    let text = snap.to_string();
    for v in secret_values {
        assert!(!text.contains(v), "a secret value was recorded: {text}");
    }
    assert_eq!(snap["variables"]["PLAIN_SETTING"], "visible");
    let left_out: Vec<&str> = snap["left_out"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    for name in ["GITHUB_TOKEN", "db_password", "MY_API_KEY", "SITE_LICENSE_SERVER"] {
        assert!(left_out.contains(&name), "`{name}` not named as left out: {left_out:?}");
    }
    assert!(snap["patterns"].as_array().unwrap().iter().any(|p| p == "SITE_*"), "{snap}");
    let seen = step_file(&d, &out, "show/out/seen.txt");
    assert!(seen.contains("GITHUB_TOKEN=tok-1a2b3c") && seen.contains("SITE_LICENSE_SERVER=site-0f0f0f"), "{seen}");
    // The list from the environment, as a site would set it.
    let out = twinflow()
        .current_dir(&d)
        .args(["run", "secrets.yaml", "--json", "--no-cache"])
        .env("TWINFLOW_ENV_EXCLUDE", "SITE_*,OTHER")
        .env("SITE_X", "site-0f0f0f")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(!snapshot_of(&d, &out).unwrap().to_string().contains("site-0f0f0f"));

    let out = cmd(&["--no-env-snapshot"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(snapshot_of(&d, &out).is_none(), "the manifest names a snapshot");
    let run = d.join("runs").join(run_id(&out));
    let files: Vec<String> =
        std::fs::read_dir(&run).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(!files.iter().any(|f| f.starts_with("env-")), "{files:?}");
    assert!(step_file(&d, &out, "show/out/seen.txt").contains("GITHUB_TOKEN=tok-1a2b3c"));
}

const PUBLISH: &str = r#"
name: publishing
params:
  dest: { type: path }
steps:
  make:
    run: [sh, -c, 'echo result > r.txt']
    out: { r: r.txt }
    publish: { r: "${{ params.dest }}/r.txt" }
"#;

/// A symbolic link an attacker placed at the target is replaced, not written through; a
/// directory of the target that is another user's link leading elsewhere is refused (the
/// task fails, naming the link); nothing is written where it leads. Needs root (to give the
/// link another owner).
#[test]
fn publish_replaces_a_link_at_the_target_and_refuses_a_foreign_linked_directory() {
    let d = scratch("hardening/publish_links");
    write(&d, "publish.yaml", PUBLISH);
    let victim = d.join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("keys"), "precious").unwrap();
    let shared = d.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::os::unix::fs::symlink(victim.join("keys"), shared.join("r.txt")).unwrap();
    let out = run_json(&d, &d.join("publish.yaml"), &["-p", &format!("dest={}", shared.display())]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(victim.join("keys")).unwrap(), "precious");
    assert!(!std::fs::symlink_metadata(shared.join("r.txt")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(shared.join("r.txt")).unwrap(), "result\n");

    let link = shared.join("latest");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).expect("lchown (the test needs root)");
    let out = run_json(&d, &d.join("publish.yaml"), &["-p", &format!("dest={}", link.display()), "--no-cache"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &stderr(&out);
    assert!(text.contains("shared/latest") && text.contains("owned by another user"), "{text}");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1, "something was written through the link");
}

// ---------------------------------------------------------------------------------------
// Many engines in one runs directory.

/// Workflow `w{i}`: four members and a gather, each task recording the run it belongs to.
fn engine_workflow(i: usize) -> String {
    format!(
        r#"
name: w{i}
steps:
  s{i}_member:
    scatter:
      over: {{ k: "${{{{ range(0, 4) }}}}" }}
    run: [sh, -c, 'sleep 0.2; printf "%s %s[%s]\n" "$TWINFLOW_RUN_ID" "$TWINFLOW_STEP" "$TWINFLOW_MEMBER" > m.txt']
    out: {{ m: m.txt }}
  s{i}_gather:
    run: [sh, -c, 'cat "$@" > all.txt', sh, "${{{{ steps.s{i}_member.out.m }}}}"]
    out: {{ all: all.txt }}
"#
    )
}

/// Eight engines run eight workflows at once in one runs directory: all finish, the
/// database passes an integrity check, and each run holds exactly its own tasks.
#[test]
fn eight_engines_at_once_in_one_runs_directory_each_see_only_their_own_run() {
    let d = scratch("hardening/eight_engines");
    let children: Vec<_> = (0..8)
        .map(|i| {
            let wf = write(&d, &format!("w{i}.yaml"), &engine_workflow(i));
            twinflow()
                .current_dir(&d)
                .arg("run")
                .arg(&wf)
                .arg("--json")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| {
            let (out, finished) = wait_with_deadline(c, Duration::from_secs(180));
            assert!(finished, "an engine did not finish: {}", show(&out));
            out
        })
        .collect();
    let runs = d.join("runs");
    let mut ids = std::collections::BTreeSet::new();
    for (i, out) in outs.iter().enumerate() {
        assert!(out.status.success(), "engine {i}: {}", show(out));
        let id = run_id(out);
        ids.insert(id.clone());
        let tasks = db_tasks(&runs, &id);
        let want: std::collections::BTreeSet<String> =
            (0..4).map(|k| format!("s{i}_member[{k}]")).chain([format!("s{i}_gather")]).collect();
        assert_eq!(tasks.keys().cloned().collect::<std::collections::BTreeSet<_>>(), want, "run {id}");
        assert!(tasks.values().all(|(s, n)| s == "succeeded" && *n == 1), "{tasks:?}");
        // Every member's output was made for this run, and the gather read only those.
        let all = std::fs::read_to_string(runs.join(&id).join(format!("steps/s{i}_gather/out/all.txt"))).unwrap();
        assert_eq!(all.lines().count(), 4, "{all}");
        assert!(all.lines().all(|l| l.starts_with(&format!("{id} s{i}_member["))), "run {id}:\n{all}");
    }
    assert_eq!(ids.len(), 8, "two engines got one run id: {ids:?}");
    assert_eq!(integrity(&runs), "ok");
    let c = rusqlite::Connection::open(runs.join("twinflow.db")).unwrap();
    let n: i64 = c.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 8);
}

const RESUMABLE: &str = r#"
name: resumable
params:
  logs: { type: string }
steps:
  first:
    run: [sh, -c, 'echo run >> "$1/first.log"; echo a > a.txt', sh, "${{ params.logs }}"]
    out: { a: a.txt }
  flaky:
    run: [sh, -c, 'echo run >> "$1/flaky.log"; test -f "$1/fixed" || exit 1; sleep 4; cat "$2" > b.txt', sh, "${{ params.logs }}", "${{ steps.first.out.a }}"]
    out: { b: b.txt }
"#;

/// Two engines resume one run at the same moment: exactly one runs it (the other is
/// refused, naming the engine that has it), and no task runs twice.
#[test]
fn of_two_engines_resuming_one_run_at_once_one_refuses() {
    let d = scratch("hardening/two_resumes");
    let wf = write(&d, "resumable.yaml", RESUMABLE);
    let logs = d.join("logs");
    std::fs::create_dir(&logs).unwrap();
    let first = run_json(&d, &wf, &["-p", &format!("logs={}", logs.display())]);
    assert_eq!(first.status.code(), Some(1), "{}", show(&first));
    let id = run_id(&first);
    std::fs::write(logs.join("fixed"), "").unwrap();
    let spawn = || {
        twinflow()
            .current_dir(&d)
            .args(["run", "--resume", &id, "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a, b].map(|c| wait_with_deadline(c, Duration::from_secs(120)).0);
    let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
    let (won, lost) = match codes.as_slice() {
        [Some(0), Some(2)] => (&outs[0], &outs[1]),
        [Some(2), Some(0)] => (&outs[1], &outs[0]),
        _ => panic!("expected one success and one refusal:\n{}\n---\n{}", show(&outs[0]), show(&outs[1])),
    };
    assert!(stderr(lost).contains("is still being executed by twinflow (pid"), "{}", show(lost));
    assert_eq!(final_states(won).get("flaky").map(String::as_str), Some("succeeded"), "{}", show(won));
    assert_eq!(std::fs::read_to_string(logs.join("first.log")).unwrap().lines().count(), 1);
    assert_eq!(
        std::fs::read_to_string(logs.join("flaky.log")).unwrap().lines().count(),
        2,
        "flaky ran twice on resume"
    );
    assert_eq!(integrity(&d.join("runs")), "ok");
}

// ---------------------------------------------------------------------------------------
// A stopped engine.

const SUSPEND: &str = r#"
name: suspend
steps:
  hang:
    run: [sleep, "60"]
    timeout: 5s
  again:
    run: [sh, -c, 'test "$TWINFLOW_ATTEMPT" = 2']
    retry: { count: 1, backoff: 5s }
"#;

fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn json_at(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// The engine is stopped (SIGSTOP) for longer than a step's timeout and its retry wait,
/// then continued: both count the time it was stopped (monotonic clock, docs/runs.md), so
/// the timeout and the retry are due at once when it continues, not later.
#[test]
fn a_stopped_engine_counts_the_time_it_was_stopped_in_timeouts_and_retry_waits() {
    let d = scratch("hardening/sigstop");
    let wf = write(&d, "suspend.yaml", SUSPEND);
    let child = twinflow()
        .current_dir(&d)
        .arg("run")
        .arg(&wf)
        .args(["--json", "--grace", "1", "--keep-going"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until `again` failed its first attempt and `hang` runs.
    let runs = d.join("runs");
    let t = Instant::now();
    let attempt = |task: &str, n: u32| -> Option<PathBuf> {
        let run = std::fs::read_dir(&runs).ok()?.flatten().find(|e| e.path().is_dir())?.path();
        Some(run.join(format!("steps/{task}/attempt-{n}")))
    };
    while !(attempt("again", 1).is_some_and(|a| a.join(".twinflow/status.json").exists())
        && attempt("hang", 1).is_some_and(|a| a.exists()))
    {
        assert!(t.elapsed() < Duration::from_secs(30), "the tasks did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(pid, "STOP");
    std::thread::sleep(Duration::from_secs(8));
    let cont = SystemTime::now();
    signal(pid, "CONT");
    let (out, finished) = wait_with_deadline(child, Duration::from_secs(60));
    assert!(finished, "{}", show(&out));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let states = final_states(&out);
    assert_eq!(states.get("hang").map(String::as_str), Some("failed"), "{states:?}");
    assert_eq!(states.get("again").map(String::as_str), Some("succeeded"), "{states:?}");
    let run = runs.join(run_id(&out));
    let hang = json_at(&run.join("steps/hang/attempt-1/.twinflow/status.json"));
    assert_eq!(hang["timed_out"], true, "{hang}");
    let retry = json_at(&run.join("steps/again/out/.twinflow/status.json"));
    let cont = ms(cont);
    // Both were overdue when the engine continued: each happens within 2 s of it (had the
    // stopped time not counted, 3.5 s and more later).
    let ended = hang["finished_ms"].as_u64().unwrap();
    assert!(ended >= cont && ended - cont < 2000, "the timeout fired {} ms after SIGCONT", ended as i64 - cont as i64);
    let started = retry["started_ms"].as_u64().unwrap();
    assert!(
        started + 100 >= cont && started < cont + 2000,
        "the retry started {} ms after SIGCONT",
        started as i64 - cont as i64
    );
}

// ---------------------------------------------------------------------------------------
// A full disk.

/// A size-limited tmpfs mounted for one test (needs root), unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount (the test needs root)");
        assert!(st.success(), "mount -t tmpfs at {} (the test needs root)", at.display());
        SmallFs(at.to_path_buf())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with `dir/filler` up to the last byte.
fn fill_up(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 64 << 10];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "{e}");
                break;
            }
        }
    }
    // The last partial block.
    while f.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
}

const FILL: &str = r#"
name: fill
params:
  logs: { type: string }
steps:
  small:
    run: [sh, -c, 'echo run >> "$1/small.log"; echo small > s.txt', sh, "${{ params.logs }}"]
    out: { s: s.txt }
  big:
    run: [sh, -c, 'echo run >> "$1/big.log"; cat "$2" > copy.txt; sleep 1; head -c "$(cat "$1/size")" /dev/zero > big.bin', sh, "${{ params.logs }}", "${{ steps.small.out.s }}"]
    out: { big: big.bin, copy: copy.txt }
  last:
    run: [sh, -c, 'echo run >> "$1/last.log"; ls -l "$2" > listing.txt', sh, "${{ params.logs }}", "${{ steps.big.out.big }}"]
    out: { listing: listing.txt }
"#;

/// The run id from the `run-started` event (a run that stopped on an error has no
/// `run-finished`).
fn run_id_of(out: &Output) -> String {
    events(out)
        .into_iter()
        .find(|e| e["event"] == "run-started")
        .and_then(|e| e["run_id"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no run-started event: {}", show(out)))
}

fn db_states(runs: &Path, id: &str) -> std::collections::BTreeMap<String, String> {
    db_tasks(runs, id).into_iter().map(|(k, (s, _))| (k, s)).collect()
}

/// The runs directory (and the run database in it) lives on a 6 MiB file system. A step
/// that fills it fails with ENOSPC and its half-written output is not accepted; an engine
/// that finds the file system full fails cleanly naming the path and ENOSPC; the database
/// stays consistent throughout; once space is freed, `--resume` finishes the run and
/// nothing that had finished runs again.
#[test]
fn a_full_disk_fails_cleanly_and_resume_finishes_once_space_is_freed() {
    let d = scratch("hardening/disk_full");
    let wf = write(&d, "fill.yaml", FILL);
    let logs = d.join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(logs.join("size"), (64u64 << 20).to_string()).unwrap();
    let runs = d.join("runs");
    let _fs = SmallFs::mount(&runs, "6m");
    let logs_arg = format!("logs={}", logs.display());
    let lines = |name: &str| std::fs::read_to_string(logs.join(name)).map(|t| t.lines().count()).unwrap_or(0);

    // 1. The step fills the file system: it fails, its output is not accepted.
    //    Which of the two notices it first depends on timing: the engine reports the
    //    step's failure (its own stderr is on the full file system too, empty: the message
    //    says what happened) and exits 1, or cannot record it in the database and exits 3
    //    naming the database. Either names the path and ENOSPC.
    let out = run_json(&d, &wf, &["-p", &logs_arg]);
    let id = run_id_of(&out);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &stderr(&out);
    let step_full =
        format!("exit code 1; the file system holding `{}/{id}/steps/big/attempt-1` is full (ENOSPC", runs.display());
    let db_full = "run database `runs/twinflow.db`: the file system is full (ENOSPC); the last write was rolled back";
    match out.status.code() {
        Some(1) => assert!(text.contains(&step_full), "{text}"),
        Some(3) => assert!(stderr(&out).contains(db_full), "{}", show(&out)),
        _ => panic!("{}", show(&out)),
    }
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(integrity(&runs), "ok");
    let states = db_states(&runs, &id);
    assert_eq!(states["small"], "succeeded", "{states:?}");
    assert_ne!(states["big"], "succeeded", "{states:?}");
    assert!(!runs.join(&id).join("steps/big/out").exists(), "a half-written output was accepted");

    // 2. Resumed while the file system is still full (the failed attempt's output is still
    //    there, and another file takes the rest): the engine fails cleanly, naming the path.
    fill_up(&runs);
    let out = twinflow().current_dir(&d).args(["run", "--resume", "--json"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(!err.contains("panicked"), "{err}");
    // The database (`runs/twinflow.db`, as `--runs-dir` was given) or a file of the run.
    assert!(err.contains("runs/twinflow.db") || err.contains(&runs.display().to_string()), "no path: {err}");
    assert!(err.contains("ENOSPC") || err.contains("No space left on device"), "{err}");
    assert_eq!(integrity(&runs), "ok");
    assert_eq!(db_states(&runs, &id)["small"], "succeeded");
    assert!(!runs.join(&id).join("steps/big/out").exists());

    // 3. Space freed (and the step asks for less): the run finishes, `small` is kept.
    std::fs::remove_file(runs.join("filler")).unwrap();
    std::fs::remove_file(runs.join(&id).join("steps/big/attempt-1/big.bin")).unwrap();
    std::fs::write(logs.join("size"), "1024").unwrap();
    let out = twinflow().current_dir(&d).args(["run", "--resume", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(run_id(&out), id);
    assert!(db_states(&runs, &id).values().all(|s| s == "succeeded"), "{:?}", db_states(&runs, &id));
    assert_eq!((lines("small.log"), lines("big.log"), lines("last.log")), (1, 2, 1));
    assert_eq!(std::fs::metadata(runs.join(&id).join("steps/big/out/big.bin")).unwrap().len(), 1024);
    assert_eq!(integrity(&runs), "ok");
}
