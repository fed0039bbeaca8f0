//! Allocation mode with pilot workers on the real multi-node test cluster
//! (`SLURM_LOCAL_NODES=4 hpc/slurm-local.sh start`: one slurmctld, four slurmd, each node in
//! its own network and UTS namespace with its own hostname `node1`..`node4`): a worker on
//! every node, an MPI step whose ranks run on two nodes, a node that crashes mid-run (its
//! tasks are retried on the others, the run succeeds, SLURM sets the node DOWN and the
//! allocation goes on), `kill -9` of the engine then `--resume`, an allocation ended by its
//! time limit while tasks run, and a service stopped with SIGTERM, grace, SIGKILL.
//!
//! The cluster lives in `TWINFLOW_SLURM_NODES_DIR` (default `/tmp/twinflow-slurm-nodes`,
//! where `make test` starts it next to the one-node cluster); every SLURM command here and
//! of the engine gets its `SLURM_CONF`. A missing cluster fails these tests with the command
//! to start it. The tests take turns (one lock): one of them crashes a node, the others
//! need all four.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

use crate::common::repo_root;
use crate::slurm::{latest_run_id, processes_with, profile, run_settings, signal, wait_output, wait_until};
use crate::support::*;

static TURN: Mutex<()> = Mutex::new(());

/// The running multi-node cluster.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    /// The controller's address on the nodes' bridge (where workers reach the engine).
    controller: String,
    /// Node names, in order.
    nodes: Vec<String>,
    _turn: MutexGuard<'static, ()>,
}

fn nodes_dir() -> PathBuf {
    std::env::var_os("TWINFLOW_SLURM_NODES_DIR")
        .map_or_else(|| PathBuf::from("/tmp/twinflow-slurm-nodes"), PathBuf::from)
}

/// Takes this module's turn on the cluster; fails (does not skip) unless it runs with four
/// nodes. A node an earlier test crashed (and did not restart, having failed) is started.
fn cluster() -> Cluster {
    let turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = nodes_dir();
    let conf = dir.join("etc/slurm.conf");
    let start = format!(
        "Start it with `SLURM_LOCAL_DIR={} SLURM_LOCAL_NODES=4 SLURM_LOCAL_CPUS=2 SLURM_LOCAL_CTLD_PORT=6827 SLURM_LOCAL_SLURMD_PORT=6828 SLURM_LOCAL_LINK_ETC=0 bash hpc/slurm-local.sh start` (as root; `make test` does), then run the tests again.",
        dir.display()
    );
    let up = Command::new("timeout").args(["20", "squeue", "--noheader"]).env("SLURM_CONF", &conf).output();
    match up {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "the multi-node SLURM test cluster is not running (squeue with SLURM_CONF={}: {}).\n{start}",
            conf.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("cannot run squeue ({e}).\n{start}"),
    }
    let text = std::fs::read_to_string(&conf).unwrap();
    let controller = text
        .lines()
        .find_map(|l| l.strip_prefix("SlurmctldHost="))
        .and_then(|h| h.split_once('(').map(|(_, a)| a.trim_end_matches(')').to_string()))
        .unwrap_or_else(|| panic!("no SlurmctldHost=NAME(ADDRESS) in {}", conf.display()));
    let nodes: Vec<String> = std::fs::read_to_string(dir.join("etc/nodes"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    assert!(nodes.len() >= 4, "the cluster in {} has nodes {nodes:?}, these tests need 4.\n{start}", dir.display());
    let c = Cluster { dir, conf, controller, nodes, _turn: turn };
    for n in &c.nodes {
        let pid = std::fs::read_to_string(c.dir.join(format!("run/slurmd-{n}.pid"))).unwrap_or_default();
        if pid.trim().is_empty() || !Path::new(&format!("/proc/{}", pid.trim())).exists() {
            c.script(&["start-node", n]);
        }
    }
    c
}

impl Cluster {
    /// A SLURM client command of this cluster.
    fn slurm(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    fn stdout(&self, program: &str, args: &[&str]) -> String {
        let o = self.slurm(program).args(args).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `hpc/slurm-local.sh ARGS` for this cluster.
    fn script(&self, args: &[&str]) {
        let o = Command::new("bash")
            .arg(repo_root().join("hpc/slurm-local.sh"))
            .args(args)
            .env("SLURM_LOCAL_DIR", &self.dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "slurm-local.sh {args:?}: {}", show(&o));
    }

    /// SLURM's state of `node` (`idle`, `mixed`, `down*`, ...).
    fn node_state(&self, node: &str) -> String {
        self.stdout("sinfo", &["-h", "-n", node, "-o", "%T"]).trim().to_string()
    }

    /// Jobs still queued or running among `ids`.
    fn queued(&self, id: &str) -> bool {
        !self.stdout("squeue", &["--noheader", "--jobs", id, "--format=%i"]).trim().is_empty()
    }

    /// The test cluster's profile with pilot workers that reach the engine on the bridge.
    fn profile(&self, d: &Path) -> PathBuf {
        let base = std::fs::read_to_string(profile()).unwrap();
        write(d, "nodes.yaml", &format!("{base}\npilot:\n  address: {}\n  heartbeat: 3s\n", self.controller))
    }

    /// `twinflow run ARGS --backend slurm --profile nodes.yaml --allocation --json` in `d`.
    fn run(&self, d: &Path, args: &[&str]) -> Command {
        let prof = self.profile(d);
        let mut c = twinflow();
        c.current_dir(d)
            .arg("run")
            .args(args)
            .args(["--backend", "slurm", "--profile", prof.to_str().unwrap(), "--allocation", "--json"])
            .args(["--grace", "1"])
            .env("SLURM_CONF", &self.conf)
            .env("TWINFLOW_SLURM_CALL_LOG", d.join("calls.log"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// `twinflow run --resume latest --json` in `d` (the run's backend, profile and mode are
    /// its own).
    fn resume(&self, d: &Path) -> Output {
        let mut c = twinflow();
        c.current_dir(d)
            .args(["run", "--resume", "latest", "--json", "--grace", "1"])
            .env("SLURM_CONF", &self.conf)
            .env("TWINFLOW_SLURM_CALL_LOG", d.join("calls.log"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        wait_output(c.spawn().unwrap(), 240)
    }
}

/// The run's allocation (holder job) id.
fn holder(d: &Path) -> String {
    let runs = d.join("runs");
    run_settings(&runs, &latest_run_id(&runs))["allocation_job"].as_str().unwrap().to_string()
}

/// `twinflow worker` processes of the runs under `d`.
fn workers_of(d: &Path) -> Vec<String> {
    processes_with(&format!("worker --connect .* --secret-file {}", d.display()))
        .into_iter()
        .filter(|l| !l.contains(" srun "))
        .collect()
}

/// Lines of a file under the run, empty when it does not exist (yet).
fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).unwrap_or_default().lines().map(String::from).collect()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// 16 one-CPU tasks on an allocation of 4 nodes × 2 CPUs: one worker per node, and each
/// node runs some of them (one-rank tasks run where their worker is: the node's hostname).
#[test]
fn slurm_nodes_pilot_workers_run_tasks_on_every_node() {
    let c = cluster();
    let d = scratch("slurm-nodes/every");
    let wf = write(
        &d,
        "every.yaml",
        "name: nodes-every\nsteps:\n  t:\n    scatter:\n      over: { i: \"${{ range(0, 16) }}\" }\n    run: [sh, -c, 'hostname > host.txt; sleep 1']\n    out: { h: host.txt }\n",
    );
    let child = c.run(&d, &[wf.to_str().unwrap(), "--alloc-nodes", "4", "--alloc-cpus", "8"]).spawn().unwrap();
    wait_until("four workers", 60, || workers_of(&d).len() == 4);
    let out = wait_output(child, 180);
    assert!(out.status.success(), "{}", show(&out));
    let run = d.join("runs").join(run_id(&out));
    let hosts: Vec<String> =
        (0..16).map(|m| std::fs::read_to_string(run.join(format!("steps/t/{m}/out/host.txt"))).unwrap()).collect();
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    for h in &hosts {
        *per_node.entry(h.trim().to_string()).or_default() += 1;
    }
    assert_eq!(per_node.keys().cloned().collect::<Vec<_>>(), c.nodes[..4], "{per_node:?}");
    // Packed by node: two CPUs each, so no node ran more than half of the 16 (a node
    // given everything would have run them two at a time for 8 s).
    assert!(per_node.values().all(|n| *n <= 8), "{per_node:?}");
    let started: Vec<String> = events(&out)
        .iter()
        .filter(|e| e["event"] == "task-started")
        .filter_map(|e| e["job_id"].as_str().map(String::from))
        .collect();
    assert_eq!(started.len(), 16);
    assert!(started.iter().all(|j| j.starts_with("pilot-")), "{started:?}");
    wait_until("the workers to exit", 20, || workers_of(&d).is_empty());
    let h = holder(&d);
    wait_until("the allocation to end", 30, || !c.queued(&h));
}

/// A step of 4 ranks on 2 nodes, launched by a worker with `srun --exact` into the
/// allocation: MPICH's ranks meet over the nodes' network (the `MPI_Allreduce` of
/// `hpc/mpi-hello.c`), two on each node.
#[test]
fn slurm_nodes_mpi_step_spans_two_nodes() {
    let c = cluster();
    let d = scratch("slurm-nodes/mpi");
    let hello = d.join("mpi-hello");
    let cc = Command::new("mpicc")
        .args(["-O2", "-o"])
        .arg(&hello)
        .arg(repo_root().join("hpc/mpi-hello.c"))
        .output()
        .expect("mpicc (hpc/setup-deps.sh installs MPICH)");
    assert!(cc.status.success(), "{}", show(&cc));
    let wf = write(
        &d,
        "mpi.yaml",
        &format!(
            "name: nodes-mpi\nsteps:\n  hello:\n    resources: {{ ranks: 4, nodes: 2 }}\n    run: [{}]\n",
            hello.display()
        ),
    );
    let out = wait_output(
        c.run(&d, &[wf.to_str().unwrap(), "--alloc-nodes", "2", "--alloc-cpus", "4"]).spawn().unwrap(),
        180,
    );
    assert!(out.status.success(), "{}", show(&out));
    let text =
        std::fs::read_to_string(d.join("runs").join(run_id(&out)).join("steps/hello/out/.twinflow/stdout")).unwrap();
    let ranks: Vec<Vec<&str>> = sorted(text.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).collect());
    assert_eq!(ranks.len(), 4, "{text}");
    let mut hosts = std::collections::BTreeMap::<&str, usize>::new();
    for (i, r) in ranks.iter().enumerate() {
        // rank I of 4 on HOST sum=6 OK
        assert_eq!((r[1], r[3], r[6], r[7]), (i.to_string().as_str(), "4", "sum=6", "OK"), "{text}");
        *hosts.entry(r[5]).or_default() += 1;
    }
    assert_eq!(hosts.len(), 2, "the ranks ran on {hosts:?}:\n{text}");
    assert!(hosts.keys().all(|h| c.nodes.iter().any(|n| n == h)), "{hosts:?}");
    assert!(hosts.values().all(|n| *n == 2), "{hosts:?}");
}

/// node2 crashes (every process in its namespace is killed: slurmd, the worker, its tasks)
/// while its tasks run: they fail as node failures naming node2 and are retried on the other
/// nodes; the run goes on and succeeds. SLURM sets node2 DOWN ~SlurmdTimeout later and the
/// allocation (`--no-kill`) goes on without it: the last step waits inside the allocation
/// until SLURM says node2 is down.
#[test]
fn slurm_nodes_a_crashed_node_s_tasks_are_retried_on_the_others() {
    let c = cluster();
    let d = scratch("slurm-nodes/loss");
    let wf = write(
        &d,
        "loss.yaml",
        r#"name: nodes-loss
steps:
  work:
    scatter:
      over: { i: "${{ range(0, 8) }}" }
    run: [sh, -c, 'echo "$1 $(hostname)" >> ../../starts; hostname > host.txt; sleep 8', sh, "${{ scatter.i }}"]
    out: { h: host.txt }
    retry: { count: 2, backoff: 0s }
  down:
    after: [work]
    run: [sh, -c, 'until sinfo -h -n node2 -o %T | grep -q down; do sleep 1; done; sinfo -h -n node2 -o %T > state.txt']
    out: { s: state.txt }
    timeout: 120s
"#,
    );
    let child = c.run(&d, &[wf.to_str().unwrap(), "--alloc-nodes", "4", "--alloc-cpus", "8"]).spawn().unwrap();
    let runs = d.join("runs");
    let starts = || {
        let Ok(rd) = std::fs::read_dir(&runs) else { return vec![] };
        rd.flatten().flat_map(|e| lines(&e.path().join("steps/work/starts"))).collect::<Vec<_>>()
    };
    wait_until("tasks to run on node2", 90, || starts().iter().any(|l| l.ends_with(" node2")));
    let on_node2: Vec<String> =
        starts().iter().filter(|l| l.ends_with(" node2")).map(|l| l.split(' ').next().unwrap().to_string()).collect();
    c.script(&["kill-node", "node2"]);
    let out = wait_output(child, 240);
    let state = c.node_state("node2");
    c.script(&["start-node", "node2"]);
    assert!(out.status.success(), "{}", show(&out));
    let run = runs.join(run_id(&out));
    let tasks = db_tasks(&runs, &run_id(&out));
    for m in 0..8 {
        let host = std::fs::read_to_string(run.join(format!("steps/work/{m}/out/host.txt"))).unwrap();
        assert_ne!(host.trim(), "node2", "member {m} kept the result of the lost node");
        let attempts = tasks[&format!("work[{m}]")].1;
        if on_node2.contains(&m.to_string()) {
            assert!(attempts >= 2, "member {m} ran on node2 but has {attempts} attempt(s): {tasks:?}");
        }
    }
    // Retried with a message that names the node lost.
    let retries: Vec<String> = events(&out)
        .iter()
        .filter(|e| e["event"] == "task-retry")
        .map(|e| format!("{} {}", e["task"], e["message"]))
        .collect();
    assert!(retries.len() >= on_node2.len(), "{retries:#?}");
    for m in &on_node2 {
        assert!(
            retries.iter().any(|r| r.contains(&format!("work[{m}]")) && r.contains("lost node node2")),
            "no retry of work[{m}] naming node2: {retries:#?}"
        );
    }
    // The run's report lists the failed attempts with the same message.
    let report = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(report.contains("lost node node2"), "the report does not name node2");
    // The allocation outlived node2's DOWN: its last step saw it, inside the allocation.
    let seen = std::fs::read_to_string(run.join("steps/down/out/state.txt")).unwrap();
    assert!(seen.starts_with("down"), "{seen}");
    assert!(state.starts_with("down"), "{state}");
}

/// `kill -9` of the engine after the first of three waves of tasks: its workers stop their
/// tasks a heartbeat later; `run --resume latest` goes on in the same allocation, with a
/// worker on each of its 4 nodes again (the node count comes from the allocation, not from a
/// repeated `--alloc-nodes`), and runs only what had not finished.
#[test]
fn slurm_nodes_resume_after_kill_nine_of_the_engine_redoes_nothing_finished() {
    let c = cluster();
    let d = scratch("slurm-nodes/resume");
    let wf = write(
        &d,
        "resume.yaml",
        r#"name: nodes-resume
steps:
  work:
    scatter:
      over: { i: "${{ range(0, 12) }}" }
    run: [sh, -c, 'hostname >> ../runs; sleep 2; hostname > o.txt']
    out: { o: o.txt }
"#,
    );
    let child = c.run(&d, &[wf.to_str().unwrap(), "--alloc-nodes", "4", "--alloc-cpus", "4"]).spawn().unwrap();
    let runs = d.join("runs");
    // Tasks succeeded so far (0 while the engine is still creating its database).
    let done = || -> i64 {
        let Ok(db) = rusqlite::Connection::open(runs.join("twinflow.db")) else { return 0 };
        db.query_row("SELECT count(*) FROM tasks WHERE state = 'succeeded'", [], |r| r.get(0)).unwrap_or(0)
    };
    wait_until("the first tasks to finish", 120, || done() >= 4);
    signal(child.id(), "-KILL");
    let _ = wait_output(child, 10);
    let first = holder(&d);
    let id = latest_run_id(&runs);
    let finished: Vec<String> = db_tasks(&runs, &id)
        .into_iter()
        .filter(|(_, (s, _))| s == "succeeded")
        .map(|(t, _)| t.trim_start_matches("work[").trim_end_matches(']').to_string())
        .collect();
    assert!(finished.len() >= 4 && finished.len() < 12, "{finished:?}");
    wait_until("the killed engine's workers to exit", 20, || workers_of(&d).is_empty());
    let out = c.resume(&d);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(run_id(&out), id);
    assert_eq!(holder(&d), first, "the resumed run asked for a new allocation");
    let run = runs.join(&id);
    // Where the tasks of the resumed engine ran: on every node of the allocation.
    let mut hosts = std::collections::BTreeSet::new();
    for m in 0..12 {
        let tries = lines(&run.join(format!("steps/work/{m}/runs")));
        let host = std::fs::read_to_string(run.join(format!("steps/work/{m}/out/o.txt"))).unwrap();
        if finished.contains(&m.to_string()) {
            assert_eq!(tries.len(), 1, "member {m} finished before the kill and ran again: {tries:?}");
        } else {
            hosts.insert(host.trim().to_string());
        }
    }
    assert_eq!(hosts.len(), 4, "the resumed run's tasks ran on {hosts:?}");
    wait_until("the allocation to end", 30, || !c.queued(&first));
}

/// SLURM ends the allocation at its time limit (`--alloc-time 1m`) while a task runs: the
/// run fails, stderr names the time limit and says how to go on; `--resume` goes on in a
/// new allocation and runs only what had not finished.
#[test]
fn slurm_nodes_an_allocation_ended_by_its_time_limit_fails_clearly_and_resumes() {
    let c = cluster();
    let d = scratch("slurm-nodes/time-limit");
    let wf = write(
        &d,
        "limit.yaml",
        r#"name: nodes-limit
steps:
  quick:
    run: [sh, -c, 'echo ran >> ../runs; echo done > o.txt']
    out: { o: o.txt }
  long:
    run: [sh, -c, 'echo ran >> ../runs; if [ -e ../limited ]; then echo done > o.txt; exit 0; fi; touch ../limited; sleep 600']
    out: { o: o.txt }
"#,
    );
    let t0 = std::time::Instant::now();
    let out = wait_output(
        c.run(&d, &[wf.to_str().unwrap(), "--alloc-nodes", "2", "--alloc-cpus", "2", "--alloc-time", "1m"])
            .spawn()
            .unwrap(),
        240,
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let secs = t0.elapsed().as_secs();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = holder(&d);
    assert!(
        stderr.contains(&format!(
            "SLURM ended allocation {first} at its time limit (TimeLimit=00:01:00) while tasks ran"
        )),
        "after {secs} s:\n{}",
        show(&out)
    );
    assert!(stderr.contains("`twinflow run --resume`"), "{stderr}");
    let runs = d.join("runs");
    let id = run_id(&out);
    let tasks = db_tasks(&runs, &id);
    assert_eq!(tasks["quick"].0, "succeeded", "{tasks:?}");
    assert_eq!(tasks["long"].0, "failed", "{tasks:?}");
    // SLURM's time limit is in minutes, checked every 30 s.
    assert!((60..200).contains(&secs), "ended after {secs} s");
    let out = c.resume(&d);
    assert!(out.status.success(), "{}", show(&out));
    assert_ne!(holder(&d), first, "the resumed run went on in the ended allocation");
    let run = runs.join(&id);
    assert_eq!(lines(&run.join("steps/quick/runs")).len(), 1, "quick ran again");
    assert_eq!(lines(&run.join("steps/long/runs")).len(), 2);
    assert_eq!(std::fs::read_to_string(run.join("steps/long/out/o.txt")).unwrap(), "done\n");
}

/// A service that ignores SIGTERM (its shell traps it and writes where it ran), and a step
/// that uses it, with pilot workers: when the run ends the worker on the service's node
/// sends SIGTERM to its process group, then, `--grace` (1 s) later, SIGKILL; the service is
/// `succeeded` and nothing of it is left. (With `srun` per task there is no such grace:
/// `srun` turns the SIGTERM it gets into SIGKILL of its step; see docs/runs.md.)
#[test]
fn slurm_nodes_a_service_is_stopped_with_sigterm_then_sigkill_when_the_run_ends() {
    let c = cluster();
    let d = scratch("slurm-nodes/service");
    let signals = d.join("signals");
    let wf = write(
        &d,
        "service.yaml",
        &format!(
            r#"name: nodes-service
steps:
  svc:
    service: true
    run: [sh, -c, 'trap "echo TERM $(hostname) $(date +%s.%N) >> {s}" TERM; while true; do sleep 0.2; done']
  use:
    after: [svc]
    run: [sh, -c, 'sleep 1; echo used > o.txt']
    out: {{ o: o.txt }}
"#,
            s = signals.display()
        ),
    );
    let out = wait_output(
        c.run(&d, &[wf.to_str().unwrap(), "--alloc-nodes", "2", "--alloc-cpus", "2"]).spawn().unwrap(),
        180,
    );
    assert!(out.status.success(), "{}", show(&out));
    let ended = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let got = lines(&signals);
    assert_eq!(got.len(), 1, "the service saw {got:?}");
    let w: Vec<&str> = got[0].split_whitespace().collect();
    assert!(c.nodes.iter().any(|n| n == w[1]), "the service ran on {}", w[1]);
    // Killed after the grace period: the run ended at least that long after the SIGTERM.
    let term: f64 = w[2].parse().unwrap();
    assert!(ended - term >= 1.0, "the run ended {:.2} s after the SIGTERM", ended - term);
    let tasks = db_tasks(&d.join("runs"), &run_id(&out));
    assert_eq!(tasks["svc"].0, "succeeded", "{tasks:?}");
    assert_eq!(tasks["use"].0, "succeeded", "{tasks:?}");
    wait_until("the service to be gone", 20, || processes_with(&signals.display().to_string()).is_empty());
    let h = holder(&d);
    wait_until("the allocation to end", 30, || !c.queued(&h));
}
