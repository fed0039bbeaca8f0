//! Cache keys and file fingerprints.
//!
//! The cache is content-addressed, as Nextflow's `-resume`: a task is up to date when some
//! earlier successful execution of its step (any member, any run of this runs directory;
//! in a cycling run, of the same cycle point) had the same key and its outputs still exist.
//! Extending, reordering or reverting a sweep therefore runs only the combinations never
//! run before. The key is a blake3 hash of: the resolved definition with run-specific paths replaced by
//! placeholders (so it is the same in every run), the identity of the program (content
//! hash of the executable), and the content hashes of every file and value it reads.
//! Content hashes are remembered per (path, size, mtime) in the run database, so an
//! unchanged file is hashed once.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::scope::TaskResult;
use crate::model::Step;
use crate::state::{CacheEntry, StateError, Store};

/// The parts of a cache key, kept so `twinflow why` can say which one changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Components {
    /// Hash of the resolved definition (argv, env, outputs, shell) in key mode.
    pub definition: String,
    /// The definition in readable form (argv with placeholders), for messages.
    pub command: Vec<String>,
    /// Program identity: path and content hash.
    pub program: String,
    /// Parameters referenced, with their values.
    pub params: BTreeMap<String, String>,
    /// Inputs read: name → content hash (files) or value.
    pub inputs: BTreeMap<String, String>,
}

impl Components {
    /// The key: a hash of all components.
    pub fn key(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        blake3::hash(json.as_bytes()).to_hex()[..32].to_string()
    }

    /// Human-readable differences from an older set of components: only the parts that
    /// differ (a parameter, an input, the arguments of the command that changed).
    pub fn diff(&self, old: &Components) -> Vec<String> {
        let mut out = vec![];
        if self.program != old.program {
            out.push(format!("the program changed ({} → {})", short(&old.program), short(&self.program)));
        }
        for (k, v) in &self.params {
            match old.params.get(k) {
                Some(o) if o != v => out.push(format!("parameter `{k}` changed: {o} → {v}")),
                None => out.push(format!("parameter `{k}` is new ({v})")),
                _ => {}
            }
        }
        for (k, v) in &self.inputs {
            match old.inputs.get(k) {
                Some(o) if o != v => out.push(format!("input `{k}` changed (content {} → {})", short(o), short(v))),
                None => out.push(format!("input `{k}` is new")),
                _ => {}
            }
        }
        for k in old.inputs.keys() {
            if !self.inputs.contains_key(k) {
                out.push(format!("input `{k}` is no longer used"));
            }
        }
        if self.definition != old.definition {
            if self.command == old.command {
                if out.is_empty() {
                    out.push(format!(
                        "the step definition changed (its `env`, `in`, outputs or `shell`), the command is still `{}`",
                        self.command.join(" ")
                    ));
                }
            } else if self.command.len() == old.command.len() {
                // The same command with other arguments (a sweep's value): name only those.
                let changed: Vec<String> = self
                    .command
                    .iter()
                    .zip(&old.command)
                    .enumerate()
                    .filter(|(_, (a, b))| a != b)
                    .map(|(i, (a, b))| format!("argv[{i}] changed: `{b}` → `{a}`"))
                    .collect();
                const SHOWN: usize = 5;
                let n = changed.len();
                out.extend(changed.into_iter().take(SHOWN));
                if n > SHOWN {
                    out.push(format!("... and {} more arguments of argv changed", n - SHOWN));
                }
            } else {
                out.push(format!(
                    "the command changed: now `{}`, was `{}`",
                    self.command.join(" "),
                    old.command.join(" ")
                ));
            }
        }
        out
    }
}

/// Where a task's results are looked for: its workflow, step and cycle point (`""` in a run
/// that does not cycle). The member index is not part of it: any member of the step (of any
/// earlier run) whose execution had the same cache key stands in.
#[derive(Debug, Clone, Copy)]
pub struct CacheScope<'a> {
    /// Workflow name.
    pub workflow: &'a str,
    /// Full step name (`sim`, `call/inner`).
    pub step: &'a str,
    /// Cycle point label, `""` when the workflow does not cycle.
    pub point: &'a str,
}

impl<'a> CacheScope<'a> {
    /// The scope of task `task` (`sim[3]`, `POINT/sim[3]` in a cycling run) of step `step`.
    pub fn of(workflow: &'a str, step: &'a str, task: &'a str, cycling: bool) -> Self {
        let point = if cycling { task.split_once('/').map_or("", |(p, _)| p) } else { "" };
        CacheScope { workflow, step, point }
    }
}

/// The one cache decision, used by `twinflow run` and `twinflow why` alike: may an earlier
/// successful execution of a task stand in for running it with components `now`?
#[derive(Debug)]
pub enum Decision {
    /// Yes: its result (directory and values).
    UpToDate(TaskResult),
    /// No, for this reason.
    Stale(Staleness),
}

/// Why a task is not up to date (see [`Decision`]).
#[derive(Debug)]
pub enum Staleness {
    /// No earlier success of its step (in this runs directory) had its cache key.
    NotFound,
    /// Earlier successes had its key, but the result directory or an output of each is gone
    /// (the newest such directory).
    OutputsGone(PathBuf),
    /// `run --rerun` asked for it (or for a step it depends on).
    Forced,
}

impl Staleness {
    /// Reasons in words. `closest` is the earlier success of the same step that differs the
    /// least from components `now`, with its task and run (see [`closest`]).
    pub fn reasons(&self, now: &Components, closest: Option<&(CacheEntry, Components)>) -> Vec<String> {
        match self {
            Staleness::NotFound => match closest {
                None => vec!["it has never run successfully".into()],
                Some((e, old)) => {
                    let mut d = now.diff(old);
                    if d.is_empty() {
                        d.push("its cache key changed".into());
                    }
                    d.insert(
                        0,
                        format!("no earlier result has its cache key; closest: `{}` of run {}", e.task, e.run_id),
                    );
                    d
                }
            },
            Staleness::OutputsGone(dir) => vec![format!("its outputs are gone from `{}`", dir.display())],
            Staleness::Forced => vec!["`--rerun` forces it".into()],
        }
    }
}

/// Whether an entry's result directory still holds every declared output of `step`.
fn intact(dir: &Path, step: &Step) -> bool {
    dir.is_dir() && step.outputs.values().chain(step.values.values()).all(|rel| dir.join(rel).exists())
}

/// Decides whether a task of step `step` is up to date with components `now`: some earlier
/// success in `scope` had the same key, and every declared output is still where it left
/// it (the newest such result is taken). A result whose directory was deleted (by hand, or
/// by `twinflow clean`) is never handed out. Results of run `running` (the run deciding)
/// are not taken: two members of one run with the same key both run, so what runs does not
/// depend on the order members finish in.
pub fn decide(
    store: &Store,
    scope: CacheScope<'_>,
    step: &Step,
    now: &Components,
    running: Option<&str>,
) -> Result<Decision, StateError> {
    let key = now.key();
    let mut found = store.cache_find(scope.workflow, scope.step, scope.point, &key)?;
    found.retain(|e| Some(e.run_id.as_str()) != running);
    let Some(first) = found.first() else { return Ok(Decision::Stale(Staleness::NotFound)) };
    for e in &found {
        let dir = PathBuf::from(&e.dir);
        if intact(&dir, step) {
            let values = super::attempt::parse_values(Some(&e.outputs));
            return Ok(Decision::UpToDate(TaskResult { dir, values }));
        }
    }
    Ok(Decision::Stale(Staleness::OutputsGone(PathBuf::from(&first.dir))))
}

/// How many of the newest entries of a step [`closest`] compares with (besides those of the
/// task itself): `why` on a big sweep with a long history stays quick.
pub const CLOSEST_AMONG: usize = 1000;

/// The earlier success of the step in `scope` whose components differ least from `now`
/// (fewest differences; then one of task `task` itself; then the newest), from `entries`
/// ([`Store::cache_of_step`], parsed, newest first): among the task's own and the
/// [`CLOSEST_AMONG`] newest.
pub fn closest<'e>(
    entries: &'e [(CacheEntry, Components)],
    task: &str,
    now: &Components,
) -> Option<&'e (CacheEntry, Components)> {
    entries
        .iter()
        .enumerate()
        .filter(|(i, (e, _))| *i < CLOSEST_AMONG || e.task == task)
        .min_by_key(|(i, (e, c))| (now.diff(c).len(), e.task != task, *i))
        .map(|(_, x)| x)
}

fn short(s: &str) -> String {
    let h = s.rsplit(':').next().unwrap_or(s);
    h.chars().take(12).collect()
}

/// Content hashes of files, remembered by (size, mtime) in memory and in the database.
#[derive(Default)]
pub struct Hasher {
    memo: HashMap<PathBuf, (u64, i64, String)>,
    programs: HashMap<String, Option<PathBuf>>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").field("files", &self.memo.len()).finish()
    }
}

/// Size and modification time (ns) of a file.
pub fn stat(path: &Path) -> std::io::Result<(u64, i64, bool)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec(), m.is_dir()))
}

impl Hasher {
    /// [`crate::programs::which`], remembered for the life of the run (PATH does not change under a run).
    pub fn which(&mut self, prog: &str) -> Option<PathBuf> {
        self.programs.entry(prog.to_string()).or_insert_with(|| crate::programs::which(prog)).clone()
    }

    /// Content hash of a file (or a directory tree), `missing` when it does not exist.
    pub fn hash(&mut self, store: &mut Store, path: &Path) -> Result<String, StateError> {
        let Ok((size, mtime, is_dir)) = stat(path) else {
            return Ok("missing".into());
        };
        if is_dir {
            return Ok(self.hash_dir(store, path, 0));
        }
        if let Some((s, m, h)) = self.memo.get(path)
            && *s == size
            && *m == mtime
        {
            return Ok(h.clone());
        }
        let key = path.display().to_string();
        let h = match store.file_hash(&key, size, mtime)? {
            Some(h) => h,
            None => {
                let h = hash_file(path).unwrap_or_else(|e| format!("unreadable: {e}"));
                store.put_file_hash(&key, size, mtime, &h)?;
                h
            }
        };
        self.memo.insert(path.to_path_buf(), (size, mtime, h.clone()));
        Ok(h)
    }

    fn hash_dir(&mut self, store: &mut Store, dir: &Path, depth: usize) -> String {
        let mut hasher = blake3::Hasher::new();
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(dir).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        entries.sort();
        for e in entries {
            let name = e.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let h = if e.is_dir() && depth < 32 {
                self.hash_dir(store, &e, depth + 1)
            } else {
                self.hash(store, &e).unwrap_or_default()
            };
            hasher.update(name.as_bytes());
            hasher.update(b"\0");
            hasher.update(h.as_bytes());
            hasher.update(b"\n");
        }
        format!("dir:{}", &hasher.finalize().to_hex()[..32])
    }
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex()[..32].to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn comps(argv: &[&str]) -> Components {
        let command: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        Components {
            definition: blake3::hash(command.join("\0").as_bytes()).to_hex()[..32].to_string(),
            command,
            program: "/bin/sh:abc".into(),
            ..Components::default()
        }
    }

    fn plan(text: &str) -> (tempfile::TempDir, crate::plan::Plan) {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("wf.yaml");
        std::fs::write(&f, text).unwrap();
        let wf = crate::validate::load(&f, &Default::default()).unwrap();
        (tmp, crate::plan::compile(Arc::new(wf)).unwrap())
    }

    fn entry(c: &Components, task: &str, dir: &Path, run: &str) -> CacheEntry {
        CacheEntry {
            key: c.key(),
            task: task.into(),
            components: serde_json::to_string(c).unwrap(),
            dir: dir.display().to_string(),
            outputs: "{}".into(),
            run_id: run.into(),
            at: 0,
        }
    }

    #[test]
    fn a_changed_argument_is_named_alone() {
        let old = comps(&["sh", "-c", "x", "sim", "1", "40"]);
        let now = comps(&["sh", "-c", "x", "sim", "1", "50"]);
        assert_eq!(now.diff(&old), ["argv[5] changed: `40` → `50`"]);
        let longer = comps(&["sh", "-c", "x", "sim", "1", "50", "--extra"]);
        assert_eq!(longer.diff(&old), ["the command changed: now `sh -c x sim 1 50 --extra`, was `sh -c x sim 1 40`"]);
        assert!(old.diff(&old).is_empty());
    }

    #[test]
    fn the_closest_earlier_success_differs_least_then_is_the_same_task_then_newest() {
        let now = comps(&["sim", "2", "50"]);
        let far = comps(&["sim", "3", "40"]);
        let near_other = comps(&["sim", "1", "50"]);
        let near_same = comps(&["sim", "2", "40"]);
        let d = Path::new("/d");
        let entries = vec![
            (entry(&far, "sim[0]", d, "r1"), far.clone()),
            (entry(&near_other, "sim[1]", d, "r1"), near_other.clone()),
            (entry(&near_same, "sim[4]", d, "r1"), near_same.clone()),
        ];
        assert_eq!(closest(&entries, "sim[4]", &now).unwrap().0.task, "sim[4]");
        assert_eq!(closest(&entries, "sim[9]", &now).unwrap().0.task, "sim[1]", "newest of the nearest");
        assert!(closest(&[], "sim[9]", &now).is_none());
    }

    #[test]
    fn any_member_s_result_with_the_key_stands_in_unless_its_outputs_are_gone() {
        let (tmp, p) = plan(
            "name: w\nsteps:\n  sim:\n    scatter: { over: { k: [1, 2] } }\n    run: [echo]\n    out: { r: r.txt }\n",
        );
        let step = &p.workflow.steps[0];
        let mut store = Store::open(tmp.path()).unwrap();
        let c = comps(&["echo", "1"]);
        let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
        for d in [&old, &new] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("r.txt"), "x").unwrap();
        }
        let scope = CacheScope::of("w", "sim", "sim[1]", false);
        assert!(matches!(decide(&store, scope, step, &c, None).unwrap(), Decision::Stale(Staleness::NotFound)));
        store.cache_put("w", "sim", "", &entry(&c, "sim[0]", &old, "r1")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        store.cache_put("w", "sim", "", &entry(&c, "sim[3]", &new, "r2")).unwrap();
        // Another member's result, the newest first.
        let Decision::UpToDate(r) = decide(&store, scope, step, &c, None).unwrap() else { panic!("not up to date") };
        assert_eq!(r.dir, new);
        // The newest is deleted by hand: the older one still stands in.
        std::fs::remove_dir_all(&new).unwrap();
        let Decision::UpToDate(r) = decide(&store, scope, step, &c, None).unwrap() else { panic!("not up to date") };
        assert_eq!(r.dir, old);
        // An output gone from the last one: never handed out.
        std::fs::remove_file(old.join("r.txt")).unwrap();
        assert!(
            matches!(decide(&store, scope, step, &c, None).unwrap(), Decision::Stale(Staleness::OutputsGone(d)) if d == new)
        );
        // The run deciding does not take its own results.
        std::fs::write(old.join("r.txt"), "x").unwrap();
        assert!(
            matches!(decide(&store, scope, step, &c, Some("r1")).unwrap(), Decision::Stale(Staleness::OutputsGone(d)) if d == new)
        );
        let Decision::UpToDate(r) = decide(&store, scope, step, &c, Some("r2")).unwrap() else {
            panic!("not up to date")
        };
        assert_eq!(r.dir, old);
        // Another step, or another cycle point, is another scope.
        assert!(store.cache_find("w", "other", "", &c.key()).unwrap().is_empty());
        assert_eq!(CacheScope::of("w", "sim", "20260301T0600Z/sim[1]", true).point, "20260301T0600Z");
    }

    #[test]
    fn rerun_forces_the_step_named_and_what_depends_on_it() {
        let (_tmp, p) = plan(
            "name: w\nsteps:\n  a:\n    run: [echo]\n    out: { o: o }\n  b:\n    run: [cat, '${{ steps.a.out.o }}']\n  c:\n    run: [echo]\n",
        );
        let forced = crate::run::rerun_nodes(&p, &["a".to_string()]);
        let names: Vec<String> = p
            .graph
            .node_indices()
            .filter(|i| forced[i.index()] && !p.graph[*i].is_join())
            .map(|i| p.task_name(p.graph[i]))
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, ["a", "b"]);
        assert!(crate::run::rerun_nodes(&p, &[]).iter().all(|f| !f));
        assert!(crate::run::is_rerun_target(&p, "c") && !crate::run::is_rerun_target(&p, "d"));
    }
}
