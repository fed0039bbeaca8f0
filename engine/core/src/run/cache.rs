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
                    .map(|(i, (a, b))| format!("argument {i} changed: `{b}` → `{a}`"))
                    .collect();
                const SHOWN: usize = 5;
                let n = changed.len();
                out.extend(changed.into_iter().take(SHOWN));
                if n > SHOWN {
                    out.push(format!("... and {} more arguments changed", n - SHOWN));
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
/// by `twinflow clean`) is never handed out.
pub fn decide(store: &Store, scope: CacheScope<'_>, step: &Step, now: &Components) -> Result<Decision, StateError> {
    let key = now.key();
    let found = store.cache_find(scope.workflow, scope.step, scope.point, &key)?;
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

/// The earlier success of the step in `scope` whose components differ least from `now`
/// (fewest differences; then one of task `task` itself; then the newest), from `entries`
/// ([`Store::cache_of_step`], parsed).
pub fn closest<'e>(
    entries: &'e [(CacheEntry, Components)],
    task: &str,
    now: &Components,
) -> Option<&'e (CacheEntry, Components)> {
    entries.iter().enumerate().min_by_key(|(i, (e, c))| (now.diff(c).len(), e.task != task, *i)).map(|(_, x)| x)
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
