//! Service steps end to end: dependants start once a service is ready; services are stopped
//! (SIGTERM, then SIGKILL for one that ignores it) when the rest of the run is done and
//! succeed; a service killed mid-run is restarted and counted, and one out of restarts fails
//! the run; a chatty service's logs stay bounded; kill -9 of the engine and `--resume`
//! leave no orphan service and start it again; a `once: first` service feeds the `files:`
//! triggers of later cycles. Steps synchronise through files with deadlines, never through
//! fixed sleeps.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::*;

/// Waits until `cond` holds, polling; panics with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pid written in `file`, once it is there.
fn pid_in(file: &Path) -> u32 {
    wait_until(Duration::from_secs(30), &file.display().to_string(), || {
        std::fs::read_to_string(file).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
    });
    std::fs::read_to_string(file).unwrap().trim().parse().unwrap()
}

/// Whether process `pid` is alive and a step of run `run_id` (its environment says so; a
/// zombie or a process that reused the pid does not count).
fn step_alive(pid: u32, run_id: &str) -> bool {
    let needle = format!("TWINFLOW_RUN_ID={run_id}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
}

/// Events of one kind.
fn of_kind(out: &Output, kind: &str) -> Vec<serde_json::Value> {
    events(out).into_iter().filter(|e| e["event"] == kind).collect()
}

/// Index of the first event of `kind` for `task`.
fn position(out: &Output, kind: &str, task: &str) -> usize {
    events(out)
        .iter()
        .position(|e| e["event"] == kind && e["task"] == task)
        .unwrap_or_else(|| panic!("no {kind} event for `{task}`\n{}", show(out)))
}

/// The `.twinflow/` directory of attempt `n` of `step` in the run of `out`.
fn meta(dir: &Path, out: &Output, step: &str, n: u32) -> PathBuf {
    dir.join("runs").join(run_id(out)).join("steps").join(step).join(format!("attempt-{n}/.twinflow"))
}

fn status_json(meta: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(meta.join("status.json")).unwrap()).unwrap()
}

/// `server` writes numbered lines, then says it is ready (a file); `reader` counts the lines
/// it finds, so it must start after ready. `stubborn` ignores SIGTERM; `probe` is ready when
/// its command says so. Each service writes its pid.
const STOP: &str = r#"
name: services-stop
steps:
  server:
    service: { ready: { file: ready, poll: 50ms } }
    run:
      - sh
      - -c
      - |
        trap 'echo "got TERM"; exit 0' TERM
        echo $$ > "$TWINFLOW_OUT_PID"
        for i in 1 2 3 4 5; do echo "line $i" >> "$TWINFLOW_OUT_LINES"; done
        touch ready
        while true; do sleep 0.05; done
    out: { lines: lines.txt, pid: pid }
  stubborn:
    service: true
    run: [sh, -c, 'trap "" TERM; echo $$ > "$TWINFLOW_OUT_PID"; while true; do sleep 0.05; done']
    out: { pid: pid }
  probe:
    service:
      ready: { command: [test, -s, "${{ out.port }}"], poll: 50ms }
    run: [sh, -c, 'echo $$ > "$TWINFLOW_OUT_PID"; sleep 0.3; echo 1883 > "$TWINFLOW_OUT_PORT"; while true; do sleep 0.05; done']
    out: { port: port.txt, pid: pid }
  reader:
    run: [sh, -c, 'wc -l < "$1" > n.txt; cat "$2" > port.txt', reader, "${{ steps.server.out.lines }}", "${{ steps.probe.out.port }}"]
    out: { n: n.txt, port: port.txt }
"#;

#[test]
fn dependants_start_once_a_service_is_ready_and_services_are_stopped_when_the_run_ends() {
    let d = scratch("services/stop");
    let wf = write(&d, "stop.yaml", STOP);
    let t0 = Instant::now();
    let out = run_json(&d, &wf, &["--grace", "1"]);
    assert!(out.status.success(), "{}", show(&out));
    // The stubborn service costs the grace period, not more.
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    // `reader` started after both services it reads were ready, and saw what they made.
    let started = position(&out, "task-started", "reader");
    assert!(position(&out, "service-ready", "server") < started, "{}", show(&out));
    assert!(position(&out, "service-ready", "probe") < started, "{}", show(&out));
    assert_eq!(step_file(&d, &out, "reader/out/n.txt").trim(), "5");
    assert_eq!(step_file(&d, &out, "reader/out/port.txt").trim(), "1883");
    // The services finish after the rest, as succeeded, once stopped.
    let states = final_states(&out);
    for s in ["server", "stubborn", "probe", "reader"] {
        assert_eq!(states[s], "succeeded", "{s}: {}", show(&out));
    }
    assert!(position(&out, "task-finished", "reader") < position(&out, "task-finished", "server"));
    // `server` heard SIGTERM and exited; `stubborn` ignored it and was killed (SIGKILL).
    let server = meta(&d, &out, "server", 1);
    assert_eq!(std::fs::read_to_string(server.join("stdout")).unwrap().trim(), "got TERM");
    let st = status_json(&server);
    assert_eq!((st["cancelled"].as_bool(), st["exit_code"].as_i64()), (Some(true), Some(0)), "{st}");
    let st = status_json(&meta(&d, &out, "stubborn", 1));
    assert_eq!((st["cancelled"].as_bool(), st["signal"].as_i64()), (Some(true), Some(9)), "{st}");
    // Nothing is left running, and the run database agrees.
    let id = run_id(&out);
    for s in ["server", "stubborn", "probe"] {
        let pid = pid_in(&d.join("runs").join(&id).join("steps").join(s).join("out/pid"));
        assert!(!step_alive(pid, &id), "{s} ({pid}) still runs");
    }
    let db = db_tasks(&d.join("runs"), &id);
    assert!(db.values().all(|(s, n)| s == "succeeded" && *n == 1), "{db:?}");
    // Outputs of a service live in `out/` (its attempts keep their logs).
    assert!(d.join("runs").join(&id).join("steps/server/out/lines.txt").is_file());
}

/// `server` writes its pid for each attempt; `killer` kills attempt 1 and waits for attempt
/// 2 to be up.
const RESTART: &str = r#"
name: services-restart
steps:
  server:
    service: true
    retry: { count: 2, backoff: 100ms }
    run: [sh, -c, 'mkdir -p "$TWINFLOW_OUT_PIDS"; echo $$ > "$TWINFLOW_OUT_PIDS/pid-$TWINFLOW_ATTEMPT"; while true; do sleep 0.05; done']
    out: { pids: pids }
  killer:
    run:
      - sh
      - -c
      - |
        while [ ! -s "$1/pid-1" ]; do sleep 0.02; done
        kill -9 "$(cat "$1/pid-1")"
        n=0
        while [ ! -s "$1/pid-2" ]; do sleep 0.02; n=$((n+1)); [ $n -gt 1500 ] && exit 9; done
        echo restarted > seen.txt
      - killer
      - ${{ steps.server.out.pids }}
    out: { seen: seen.txt }
"#;

#[test]
fn a_service_killed_mid_run_is_restarted_and_the_restart_is_counted() {
    let d = scratch("services/restart");
    let wf = write(&d, "restart.yaml", RESTART);
    let out = run_json(&d, &wf, &["--grace", "1"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(step_file(&d, &out, "killer/out/seen.txt").trim(), "restarted");
    let r = of_kind(&out, "service-restarted");
    assert_eq!(r.len(), 1, "{}", show(&out));
    assert_eq!(
        (r[0]["task"].as_str(), r[0]["attempt"].as_u64(), r[0]["restarts"].as_u64()),
        (Some("server"), Some(1), Some(1))
    );
    let why = r[0]["message"].as_str().unwrap_or_default();
    assert!(why.starts_with("killed by signal 9: SIGKILL"), "{}", r[0]);
    assert_eq!(r[0]["delay_seconds"].as_f64(), Some(0.1));
    // Attempt 2 started after the restart event.
    let starts: Vec<u64> = of_kind(&out, "task-started")
        .iter()
        .filter(|e| e["task"] == "server")
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, [1, 2]);
    assert_eq!(final_states(&out)["server"], "succeeded");
    let id = run_id(&out);
    let db = db_tasks(&d.join("runs"), &id);
    assert_eq!(db["server"], ("succeeded".to_string(), 2), "{db:?}");
    // `status` tells how often it was restarted.
    let st = twinflow().current_dir(&d).args(["status", &id]).output().unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(text.lines().any(|l| l.contains("server") && l.contains("service restarted once")), "{text}");
    // A new attempt directory each time; the outputs stayed in `out/`.
    let pids = d.join("runs").join(&id).join("steps/server/out/pids");
    assert!(pids.join("pid-1").is_file() && pids.join("pid-2").is_file());
    assert!(!step_alive(pid_in(&pids.join("pid-2")), &id));
}

const EXHAUSTED: &str = r#"
name: services-exhausted
params:
  long: { type: int, default: 60 }
steps:
  flaky:
    service: true
    retry: { count: 1, backoff: 100ms }
    run: [sh, -c, 'echo "broker lost" >&2; sleep 0.3; exit 3']
  long:
    run: [sleep, "${{ params.long }}"]
  never:
    service: { ready: { file: never, poll: 50ms, timeout: 300ms } }
    retry: { count: 1, backoff: 100ms }
    run: [sleep, "60"]
"#;

#[test]
fn a_service_out_of_restarts_fails_the_run_and_stops_what_still_runs() {
    let d = scratch("services/exhausted");
    let wf = write(&d, "exhausted.yaml", EXHAUSTED);
    // Without `--keep-going` the long task is stopped: it may be waiting for the service.
    let t0 = Instant::now();
    let out = run_json(&d, &wf, &["--grace", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(t0.elapsed() < Duration::from_secs(30), "the long task was not stopped: {:?}", t0.elapsed());
    assert_eq!(finished(&out)["state"], "failed");
    assert_eq!(final_states(&out)["long"], "cancelled", "{}", show(&out));
    // `flaky` was ready at once (no probe), died, was restarted once and died again.
    assert_eq!(of_kind(&out, "service-restarted").len(), 1, "{}", show(&out));
    let flaky = events(&out).into_iter().find(|e| e["event"] == "task-finished" && e["task"] == "flaky").unwrap();
    assert_eq!(flaky["state"], "failed");
    let msg = flaky["message"].as_str().unwrap();
    assert!(
        msg.starts_with("attempt 2 ended (exit code 3) and no restart is left (`retry.count` is 1)")
            && msg.contains("broker lost"),
        "{msg}"
    );
    // With `--keep-going` the rest runs on, and a service that never becomes ready fails
    // its attempts after `ready.timeout`.
    let d = scratch("services/exhausted-keep-going");
    let wf = write(&d, "exhausted.yaml", EXHAUSTED);
    let out = run_json(&d, &wf, &["--grace", "1", "--keep-going", "-p", "long=2"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let states = final_states(&out);
    assert_eq!((states["long"].as_str(), states["flaky"].as_str()), ("succeeded", "failed"), "{}", show(&out));
    let never = events(&out).into_iter().find(|e| e["event"] == "task-finished" && e["task"] == "never").unwrap();
    assert_eq!(never["state"], "failed");
    assert!(never["message"].as_str().unwrap().starts_with("not ready within 300ms"), "{never}");
    assert_eq!(db_tasks(&d.join("runs"), &run_id(&out))["never"], ("failed".to_string(), 2));
}

#[test]
fn a_chatty_service_keeps_its_logs_bounded() {
    let d = scratch("services/logs");
    let wf = write(
        &d,
        "logs.yaml",
        r#"
name: services-logs
steps:
  chatty:
    service: { log_max: 16K, log_keep: 2 }
    run: [sh, -c, 'while true; do seq 1 400; seq 1 100 >&2; sleep 0.01; done']
  watch:
    run:
      - sh
      - -c
      - |
        n=0
        while [ ! -f "$1/stdout.2" ] || [ ! -f "$1/stderr.1" ]; do sleep 0.05; n=$((n+1)); [ $n -gt 1200 ] && exit 9; done
        echo rotated > r.txt
      - watch
      - ${{ run.dir }}/steps/chatty/attempt-1/.twinflow
    out: { r: r.txt }
"#,
    );
    let out = run_json(&d, &wf, &["--grace", "1"]);
    assert!(out.status.success(), "{}", show(&out));
    let m = meta(&d, &out, "chatty", 1);
    let len = |f: &str| std::fs::metadata(m.join(f)).map(|x| x.len()).unwrap_or(0);
    // At most `log_keep` copies; each about `log_max` plus a second of output (~200 KB/s).
    assert!(!m.join("stdout.3").exists());
    for f in ["stdout", "stdout.1", "stdout.2", "stderr", "stderr.1"] {
        assert!(len(f) < 600 << 10, "{f}: {} bytes", len(f));
    }
    assert!(len("stdout.1") > 16 << 10 && len("stdout.2") > 16 << 10);
    // The writer went on at the start of the truncated file: no hole of zeros before it.
    let text = std::fs::read(m.join("stdout")).unwrap();
    assert!(!text.contains(&0), "a sparse log: {} bytes with NULs", text.len());
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(m.join("stdout")).unwrap();
    assert!(md.blocks() * 512 + 8192 >= md.len(), "sparse: {} bytes in {} blocks", md.len(), md.blocks());
}

/// The service writes its pid per attempt; `consume` waits for a `go` file the test
/// writes, so the engine can be killed while both run.
fn kill_workflow(gate: &Path) -> String {
    format!(
        r#"
name: services-kill
steps:
  server:
    service: true
    run: [sh, -c, 'mkdir -p "$TWINFLOW_OUT_PIDS"; echo $$ > "$TWINFLOW_OUT_PIDS/pid-$TWINFLOW_ATTEMPT"; while true; do sleep 0.05; done']
    out: {{ pids: pids }}
  consume:
    run:
      - sh
      - -c
      - |
        touch "$1/consuming"
        while [ ! -f "$1/go" ]; do sleep 0.02; done
        ls "$2" > seen.txt
      - consume
      - {gate}
      - ${{{{ steps.server.out.pids }}}}
    out: {{ seen: seen.txt }}
"#,
        gate = gate.display()
    )
}

#[test]
fn kill_minus_nine_of_the_engine_then_resume_leaves_no_orphan_service_and_restarts_it() {
    let d = scratch("services/kill");
    let gate = d.join("gate");
    std::fs::create_dir_all(&gate).unwrap();
    let wf = write(&d, "kill.yaml", &kill_workflow(&gate));
    let mut engine = spawn_run(&d, &wf, &["--grace", "1"]);
    wait_until(Duration::from_secs(30), "the consumer to start", || gate.join("consuming").exists());
    let runs = d.join("runs");
    let id: String = rusqlite::Connection::open(runs.join("twinflow.db"))
        .unwrap()
        .query_row("SELECT id FROM runs", [], |r| r.get(0))
        .unwrap();
    let pids = runs.join(&id).join("steps/server/out/pids");
    let first = pid_in(&pids.join("pid-1"));
    // The engine commits its bookkeeping in batches: kill it once the consumer's start
    // (recorded after the service's readiness) is in the database.
    wait_until(Duration::from_secs(30), "the consumer's start to be recorded", || {
        db_tasks(&runs, &id).get("consume").is_some_and(|(s, _)| s == "running")
    });
    let _ = std::process::Command::new("kill").args(["-KILL", &engine.id().to_string()]).status();
    let _ = engine.wait();
    // The service outlived the engine (its own process group), and the database shows it
    // as running: a resumed run knows a process may be left over.
    assert!(step_alive(first, &id), "the service died with the engine; nothing to test");
    let st = twinflow().current_dir(&d).args(["status", &id]).output().unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(text.lines().any(|l| l.contains("server") && l.contains("running") && l.contains("ready")), "{text}");
    std::fs::remove_file(gate.join("consuming")).unwrap();
    // Resume: the leftover is stopped before the service starts again.
    let resumed = twinflow()
        .current_dir(&d)
        .args(["run", "--resume", &id, "--json", "--grace", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let second = pid_in(&pids.join("pid-2"));
    assert_ne!(first, second);
    wait_until(Duration::from_secs(10), "the leftover service to be stopped", || !step_alive(first, &id));
    wait_until(Duration::from_secs(30), "the consumer to start again", || gate.join("consuming").exists());
    std::fs::write(gate.join("go"), "").unwrap();
    let out = resumed.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(!step_alive(second, &id), "the restarted service was not stopped");
    assert!(!step_alive(first, &id));
    let db = db_tasks(&runs, &id);
    assert_eq!(db["server"], ("succeeded".to_string(), 2), "{db:?}");
    assert_eq!(db["consume"].0, "succeeded");
    let seen = std::fs::read_to_string(runs.join(&id).join("steps/consume/out/seen.txt")).unwrap();
    assert_eq!(seen.split_whitespace().collect::<Vec<_>>(), ["pid-1", "pid-2"]);
}

#[test]
fn a_once_first_service_feeds_the_file_triggers_of_later_cycles() {
    let d = scratch("services/cycling");
    let wf = write(
        &d,
        "feed.yaml",
        r#"
name: services-cycling
cycle: { every: 1, start: 0, cycles: 5, runahead: 1, keep: 2 }
steps:
  feed:
    once: first
    service: { ready: { file: started, poll: 50ms } }
    run:
      - sh
      - -c
      - |
        mkdir -p "$TWINFLOW_OUT_OBS"
        touch started
        k=0
        while true; do
          sleep 0.15
          echo "obs $k" > "$TWINFLOW_OUT_OBS/.obs-$k.txt"
          mv "$TWINFLOW_OUT_OBS/.obs-$k.txt" "$TWINFLOW_OUT_OBS/obs-$k.txt"
          k=$((k+1))
        done
    out: { obs: obs }
  analyse:
    wait:
      files: ["${{ steps.feed.out.obs }}/obs-${{ cycle.index }}.txt"]
      poll: 50ms
      timeout: 1m
    run: [sh, -c, 'cat "$1" > seen.txt', analyse, "${{ wait.files[0] }}"]
    out: { seen: seen.txt }
"#,
    );
    let out = run_json(&d, &wf, &["--grace", "1"]);
    assert!(out.status.success(), "{}", show(&out));
    let id = run_id(&out);
    for k in 0..5 {
        let seen = std::fs::read_to_string(d.join(format!("runs/{id}/cycles/{k}/steps/analyse/out/seen.txt")));
        // `keep: 2` prunes old cycles, but never the first (its service's outputs).
        if k == 0 || k >= 3 {
            assert_eq!(seen.unwrap().trim(), format!("obs {k}"), "cycle {k}");
        }
    }
    assert!(d.join(format!("runs/{id}/cycles/0/steps/feed/out/obs/obs-4.txt")).is_file());
    // One service for the whole run: ready before any cycle's task started, stopped last.
    assert_eq!(of_kind(&out, "service-ready").len(), 1);
    assert_eq!(of_kind(&out, "service-ready")[0]["task"], "0/feed");
    assert!(position(&out, "service-ready", "0/feed") < position(&out, "task-started", "0/analyse"));
    let ev = events(&out);
    let last_finished = ev.iter().rposition(|e| e["event"] == "task-finished").unwrap();
    assert_eq!(ev[last_finished]["task"], "0/feed");
    assert_eq!(ev[last_finished]["state"], "succeeded");
    assert_eq!(finished(&out)["counts"]["succeeded"], 6);
    let db = db_tasks(&d.join("runs"), &id);
    assert_eq!(db.get("0/feed"), Some(&("succeeded".to_string(), 1)), "{db:?}");
}

#[test]
fn the_slurm_backend_without_an_allocation_refuses_services() {
    let d = scratch("services/slurm-refused");
    let wf = write(&d, "svc.yaml", "name: svc\nsteps:\n  s:\n    service: true\n    run: [sleep, '60']\n");
    let out = twinflow().current_dir(&d).arg("run").arg(&wf).args(["--backend", "slurm"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("step `s` is a service") && err.contains("--allocation"), "{err}");
}

#[test]
fn a_service_that_cannot_start_is_never_ready() {
    let d = scratch("services/not-found");
    let wf = write(
        &d,
        "nf.yaml",
        // A path in the attempt directory: not looked up before the run (a missing program
        // on PATH would stop the run before it starts).
        "name: nf\nsteps:\n  s:\n    service: true\n    run: [./no-such-program-for-twinflow]\n    out: { w: w }\n  \
         use:\n    run: [cat, \"${{ steps.s.out.w }}\"]\n",
    );
    let out = run_json(&d, &wf, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(of_kind(&out, "service-ready").is_empty(), "{}", show(&out));
    let states = final_states(&out);
    assert_eq!((states["s"].as_str(), states["use"].as_str()), ("failed", "upstream-failed"));
    let s = events(&out).into_iter().find(|e| e["event"] == "task-finished" && e["task"] == "s").unwrap();
    assert!(s["message"].as_str().unwrap().contains("`./no-such-program-for-twinflow` not found"), "{s}");
}

#[test]
fn kill_minus_nine_then_resume_restarts_the_service_of_a_retired_first_cycle() {
    let d = scratch("services/kill-cycling");
    let gate = d.join("gate");
    std::fs::create_dir_all(&gate).unwrap();
    // The service delivers observations for cycles 0 to 2 at once, the rest only once the
    // test writes `gate/go`: the run cannot end before the test kills its engine.
    let wf = write(
        &d,
        "feed.yaml",
        r#"
name: services-kill-cycling
params:
  gate: { type: path }
cycle: { every: 1, start: 0, cycles: 8, runahead: 1 }
steps:
  feed:
    once: first
    service: true
    env: { GATE: "${{ params.gate }}" }
    run:
      - sh
      - -c
      - |
        mkdir -p "$TWINFLOW_OUT_OBS"
        echo $$ > "$TWINFLOW_OUT_OBS/pid-$TWINFLOW_ATTEMPT"
        k=0
        while true; do
          sleep 0.1
          if [ $k -ge 3 ]; then while [ ! -f "$GATE/go" ]; do sleep 0.05; done; fi
          echo "obs $k from attempt $TWINFLOW_ATTEMPT" > "$TWINFLOW_OUT_OBS/.obs-$k.txt"
          mv "$TWINFLOW_OUT_OBS/.obs-$k.txt" "$TWINFLOW_OUT_OBS/obs-$k.txt"
          k=$((k+1))
        done
    out: { obs: obs }
  analyse:
    wait:
      files: ["${{ steps.feed.out.obs }}/obs-${{ cycle.index }}.txt"]
      poll: 50ms
      timeout: 1m
    run: [sh, -c, 'cat "$1" > seen.txt', analyse, "${{ wait.files[0] }}"]
    out: { seen: seen.txt }
"#,
    );
    let param = format!("gate={}", gate.display());
    let mut engine = spawn_run(&d, &wf, &["--grace", "1", "-p", &param]);
    let runs = d.join("runs");
    let id = || -> Option<String> {
        rusqlite::Connection::open(runs.join("twinflow.db"))
            .ok()?
            .query_row("SELECT id FROM runs", [], |r| r.get(0))
            .ok()
    };
    wait_until(Duration::from_secs(30), "the run id", || id().is_some());
    let id = id().unwrap();
    // Kill once the first cycle retired (its service runs on) and a later one finished.
    wait_until(Duration::from_secs(30), "cycle 2 to finish", || {
        db_tasks(&runs, &id).get("2/analyse").is_some_and(|(s, _)| s == "succeeded")
    });
    let _ = std::process::Command::new("kill").args(["-KILL", &engine.id().to_string()]).status();
    let _ = engine.wait();
    let obs = runs.join(&id).join("cycles/0/steps/feed/out/obs");
    let first = pid_in(&obs.join("pid-1"));
    assert!(step_alive(first, &id), "the service died with the engine; nothing to test");
    assert_eq!(db_tasks(&runs, &id)["0/feed"].0, "running");
    let resumed = twinflow()
        .current_dir(&d)
        .args(["run", "--resume", &id, "--json", "--grace", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let second = pid_in(&obs.join("pid-2"));
    wait_until(Duration::from_secs(10), "the leftover service to be stopped", || !step_alive(first, &id));
    std::fs::write(gate.join("go"), "").unwrap();
    let out = resumed.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(!step_alive(second, &id), "the restarted service was not stopped");
    let db = db_tasks(&runs, &id);
    assert_eq!(db["0/feed"], ("succeeded".to_string(), 2), "{db:?}");
    for k in 0..8 {
        assert_eq!(db[&format!("{k}/analyse")].0, "succeeded", "cycle {k}: {db:?}");
    }
    // The resumed engine started the service again at once (its cycle had retired), and
    // stopped it after the last cycle.
    let ev = events(&out);
    assert!(
        ev.iter().any(|e| e["event"] == "task-started" && e["task"] == "0/feed" && e["attempt"] == 2),
        "{}",
        show(&out)
    );
    let last = ev.iter().rposition(|e| e["event"] == "task-finished").unwrap();
    assert_eq!((ev[last]["task"].as_str(), ev[last]["state"].as_str()), (Some("0/feed"), Some("succeeded")));
}

#[test]
fn a_stopped_cycling_run_resumed_starts_its_service_again() {
    let d = scratch("services/stop-resume");
    let wf = write(
        &d,
        "feed.yaml",
        r#"
name: services-stop-resume
cycle: { every: 1, start: 0, runahead: 1 }
steps:
  feed:
    once: first
    service: true
    run:
      - sh
      - -c
      - |
        mkdir -p "$TWINFLOW_OUT_OBS"
        echo $$ > "$TWINFLOW_OUT_OBS/pid-$TWINFLOW_ATTEMPT"
        k=$(ls "$TWINFLOW_OUT_OBS" | grep -c '^obs-')
        while true; do
          sleep 0.1
          echo "obs $k" > "$TWINFLOW_OUT_OBS/.obs-$k.txt"
          mv "$TWINFLOW_OUT_OBS/.obs-$k.txt" "$TWINFLOW_OUT_OBS/obs-$k.txt"
          k=$((k+1))
        done
    out: { obs: obs }
  analyse:
    wait:
      files: ["${{ steps.feed.out.obs }}/obs-${{ cycle.index }}.txt"]
      poll: 50ms
    run: [sh, -c, 'cat "$1" > seen.txt', analyse, "${{ wait.files[0] }}"]
    out: { seen: seen.txt }
"#,
    );
    let engine = spawn_run(&d, &wf, &["--grace", "1"]);
    let runs = d.join("runs");
    wait_until(Duration::from_secs(30), "the run to be recorded", || runs.join("twinflow.db").exists());
    let id = || -> Option<String> {
        rusqlite::Connection::open(runs.join("twinflow.db"))
            .ok()?
            .query_row("SELECT id FROM runs", [], |r| r.get(0))
            .ok()
    };
    wait_until(Duration::from_secs(30), "the run id", || id().is_some());
    let id = id().unwrap();
    wait_until(Duration::from_secs(30), "cycle 2 to finish", || {
        db_tasks(&runs, &id).get("2/analyse").is_some_and(|(s, _)| s == "succeeded")
    });
    let st = twinflow().current_dir(&d).args(["stop", &id]).output().unwrap();
    assert!(st.status.success(), "{}", show(&st));
    let out = engine.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(finished(&out)["state"], "stopped");
    let obs = runs.join(&id).join("cycles/0/steps/feed/out/obs");
    let first = pid_in(&obs.join("pid-1"));
    assert!(!step_alive(first, &id), "the service outlived its stopped run");
    assert_eq!(db_tasks(&runs, &id)["0/feed"].0, "succeeded");
    // The run goes on, three cycles beyond where it stopped: so does its service, in a new
    // attempt.
    let reached: i64 = rusqlite::Connection::open(runs.join("twinflow.db"))
        .unwrap()
        .query_row("SELECT MAX(cycle) FROM cycles WHERE run_id = ?1", [&id], |r| r.get(0))
        .unwrap();
    let cycles = (reached + 4).to_string();
    let out = twinflow()
        .current_dir(&d)
        .args(["run", "--resume", &id, "--json", "--grace", "1", "--cycles", &cycles])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let second = pid_in(&obs.join("pid-2"));
    assert!(!step_alive(second, &id));
    let db = db_tasks(&runs, &id);
    assert_eq!(db["0/feed"], ("succeeded".to_string(), 2), "{db:?}");
    assert_eq!(db[&format!("{}/analyse", reached + 3)].0, "succeeded", "{db:?}");
}

#[test]
fn resume_after_a_kill_while_services_were_being_stopped_does_not_start_them_again() {
    let d = scratch("services/kill-while-stopping");
    let wf = write(
        &d,
        "stopping.yaml",
        r#"
name: services-kill-while-stopping
steps:
  stubborn:
    service: true
    run: [sh, -c, 'trap "" TERM; echo $$ > "$TWINFLOW_OUT_PID"; while true; do sleep 0.05; done']
    out: { pid: pid }
  quick:
    run: [cat, "${{ steps.stubborn.out.pid }}"]
"#,
    );
    // A long grace: the engine waits for the service that ignores SIGTERM.
    let mut engine = spawn_run(&d, &wf, &["--grace", "600"]);
    let runs = d.join("runs");
    let id = || -> Option<String> {
        rusqlite::Connection::open(runs.join("twinflow.db"))
            .ok()?
            .query_row("SELECT id FROM runs", [], |r| r.get(0))
            .ok()
    };
    wait_until(Duration::from_secs(30), "the run id", || id().is_some());
    let id = id().unwrap();
    wait_until(Duration::from_secs(30), "the consumer to finish", || {
        db_tasks(&runs, &id).get("quick").is_some_and(|(s, _)| s == "succeeded")
    });
    let pid = pid_in(&runs.join(&id).join("steps/stubborn/out/pid"));
    let _ = std::process::Command::new("kill").args(["-KILL", &engine.id().to_string()]).status();
    let _ = engine.wait();
    assert!(step_alive(pid, &id));
    assert_eq!(db_tasks(&runs, &id)["stubborn"].0, "running");
    let out = twinflow().current_dir(&d).args(["run", "--resume", &id, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(!events(&out).iter().any(|e| e["event"] == "task-started"), "{}", show(&out));
    wait_until(Duration::from_secs(10), "the leftover to be gone", || !step_alive(pid, &id));
    assert_eq!(db_tasks(&runs, &id)["stubborn"], ("succeeded".to_string(), 1));
}
