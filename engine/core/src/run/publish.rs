//! `publish:`: copies of a finished task's outputs to paths the workflow names outside the
//! run directory, made after success (and again when a result is reused from the cache).
//!
//! Each copy goes to a uniquely named temporary file beside its target, is synced, then
//! renamed over the target (atomic on one file system): a target never holds a partial
//! copy, and two publishes to one target cannot trample each other's temporary file.
//!
//! Symbolic links (the published directory may be shared with other users):
//! - a link at the target itself is replaced by the rename, never written through;
//! - a link among the target's directories is followed only when it stays inside the
//!   directory holding it, or when it belongs to the user running twinflow or to root (a
//!   link of one's own, or of the system's, as the kernel's `fs.protected_symlinks` trusts);
//!   a link another user placed that leads elsewhere is refused
//!   ([`PublishError::ForeignLink`]). The check is made just before the copy: a link
//!   swapped in between the check and the rename (a race) is not caught.
//!
//! The copy gets the source's permissions less the umask (as `cp` does), and directories
//! created for it honour the umask.

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};

use petgraph::graph::NodeIndex;

use super::scope::{Mode, Results, TaskScope};
use crate::expr::Value;
use crate::model::Ctx;
use crate::plan::Plan;

/// Where a run is: what the targets of `publish:` are evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct PublishCtx<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// Results of finished tasks by node.
    pub results: Results<'a>,
    /// Run id.
    pub run_id: &'a str,
    /// Run directory.
    pub run_dir: &'a Path,
    /// The runs directory (no target may be inside it).
    pub runs_dir: &'a Path,
}

/// Why an output could not be published (the task fails, without retry).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The target expression could not be evaluated.
    #[error("publish.{output}: {message}")]
    Target {
        /// The output.
        output: String,
        /// Why.
        message: String,
    },
    /// The target is not a path.
    #[error("publish.{output}: expected a path, got `{value}`")]
    NotAPath {
        /// The output.
        output: String,
        /// What it evaluated to.
        value: String,
    },
    /// The target is inside the runs directory, which belongs to the engine.
    #[error("publish.{output}: `{}` is inside the runs directory `{}`; publish outside it", .target.display(), .runs_dir.display())]
    InsideRuns {
        /// The output.
        output: String,
        /// The target.
        target: PathBuf,
        /// The runs directory.
        runs_dir: PathBuf,
    },
    /// A directory of the target is a symbolic link another user placed, leading out of the
    /// directory that holds it.
    #[error("publish.{output}: `{}` is a symbolic link to `{}` owned by another user (uid {owner}); twinflow does not follow it out of the path the workflow names\nhint: publish to a directory that is not a link, or replace the link with a directory", .link.display(), .to.display())]
    ForeignLink {
        /// The output.
        output: String,
        /// The link.
        link: PathBuf,
        /// Where it leads.
        to: PathBuf,
        /// Its owner.
        owner: u32,
    },
    /// The copy failed.
    #[error("publishing `{output}` to `{}`: {source}", .target.display())]
    Copy {
        /// The output.
        output: String,
        /// The target.
        target: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Copies the outputs of task `i` named in its step's `publish:` from its result directory
/// `dir` to their targets; returns the targets. The error says which output failed and why.
pub fn publish(cx: PublishCtx<'_>, i: NodeIndex, dir: &Path) -> Result<Vec<PathBuf>, PublishError> {
    let plan = cx.plan;
    let t = plan.graph[i];
    let step = &plan.workflow.steps[t.step as usize];
    let mut made = vec![];
    if step.publish.is_empty() {
        return Ok(made);
    }
    let base = plan.workflow.namespaces[step.ns].file.abs_dir();
    let used = RefCell::new(vec![]);
    let scope = TaskScope {
        plan,
        node: t,
        results: cx.results,
        attempt_dir: dir,
        run_id: cx.run_id,
        run_dir: cx.run_dir,
        mode: Mode::Exec,
        ns: step.ns,
        ctx: Ctx::Body(t.step as usize),
        used: &used,
    };
    // The runs directory is the engine's: a copy there could overwrite the run database or
    // another task's published result.
    let runs = resolved(cx.runs_dir);
    for (k, tpl) in &step.publish {
        let target =
            tpl.tpl.eval(&scope).map_err(|e| PublishError::Target { output: k.clone(), message: e.message })?;
        let target = match target {
            Value::Str(p) | Value::Path(p) if !p.is_empty() => base.join(p),
            other => return Err(PublishError::NotAPath { output: k.clone(), value: other.to_string() }),
        };
        if resolved(&target).starts_with(&runs) {
            return Err(PublishError::InsideRuns { output: k.clone(), target, runs_dir: runs });
        }
        check_links(&target).map_err(|(link, to, owner)| PublishError::ForeignLink {
            output: k.clone(),
            link,
            to,
            owner,
        })?;
        let rel = step.outputs.get(k).or_else(|| step.values.get(k)).map(String::as_str).unwrap_or_default();
        copy_atomically(&dir.join(rel), &target).map_err(|source| PublishError::Copy {
            output: k.clone(),
            target: target.clone(),
            source,
        })?;
        // Reported as it now is: absolute, without `..` (`examples/../results/x` →
        // `results/x`), links of its directories resolved.
        let target = resolved(&target);
        tracing::info!(task = %plan.task_name(t), output = %k, to = %target.display(), "published");
        made.push(target);
    }
    Ok(made)
}

/// `p` absolute, with `.` and `..` removed and symbolic links of its longest existing prefix
/// resolved (the rest need not exist yet).
fn resolved(p: &Path) -> PathBuf {
    let abs = crate::spec::span::absolute(p);
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    let mut existing = out.clone();
    let mut rest = vec![];
    while !existing.exists() {
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent().map(Path::to_path_buf)) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return out,
        }
    }
    let mut r = std::fs::canonicalize(&existing).unwrap_or(existing);
    r.extend(rest.iter().rev());
    r
}

/// Walks the directories of `target` as the kernel would and refuses a symbolic link
/// among them that another user owns and that leads out of the directory holding it
/// (see the module docs): returns the link, where it leads and its owner.
fn check_links(target: &Path) -> Result<(), (PathBuf, PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = target.parent() else { return Ok(()) };
    let me = process_status().0;
    let mut cur = PathBuf::from("/");
    for c in crate::spec::span::absolute(dir).components() {
        match c {
            std::path::Component::ParentDir => {
                cur.pop();
            }
            std::path::Component::Normal(name) => {
                let next = cur.join(name);
                let Ok(meta) = std::fs::symlink_metadata(&next) else {
                    // The rest does not exist yet: twinflow creates real directories.
                    return Ok(());
                };
                if meta.file_type().is_symlink() {
                    let to = std::fs::canonicalize(&next).unwrap_or_else(|_| next.clone());
                    let trusted = meta.uid() == me || meta.uid() == 0 || to.starts_with(&cur);
                    if !trusted {
                        return Err((next, to, meta.uid()));
                    }
                    cur = to;
                } else {
                    cur = next;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// This process's effective user id and umask, from `/proc/self/status` (reading the umask
/// through `umask(2)` would change it for every thread meanwhile).
pub(crate) fn process_status() -> (u32, u32) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(str::split_whitespace);
    let euid = field("Uid:").and_then(|mut f| f.nth(1)).and_then(|v| v.parse().ok()).unwrap_or(u32::MAX);
    let umask =
        field("Umask:").and_then(|mut f| f.next()).and_then(|v| u32::from_str_radix(v, 8).ok()).unwrap_or(0o022);
    (euid, umask)
}

/// Copies `from` to `to` through a uniquely named temporary file in `to`'s directory and a
/// rename (atomic on one file system), creating that directory if needed. Directories are
/// not copied.
fn copy_atomically(from: &Path, to: &Path) -> std::io::Result<()> {
    let parent = to.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let file_name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut tmp =
        tempfile::Builder::new().prefix(&format!(".{file_name}.")).suffix(".twinflow-partial").tempfile_in(parent)?;
    let mut src = std::fs::File::open(from)?;
    std::io::copy(&mut src, tmp.as_file_mut())?;
    tmp.as_file_mut().flush()?;
    tmp.as_file().sync_all()?;
    // The source's permissions (an executable stays executable) less the umask, as `cp`
    // gives a new file (the temporary file was made 0600).
    use std::os::unix::fs::PermissionsExt;
    let mode = src.metadata()?.permissions().mode() & 0o7777 & !process_status().1;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.persist(to).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_replaces_the_target_whole_and_leaves_no_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("map.png");
        std::fs::write(&from, b"new picture").unwrap();
        let to = tmp.path().join("pub/deeper/map.png");
        copy_atomically(&from, &to).unwrap();
        std::fs::write(&from, b"newer").unwrap();
        copy_atomically(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"newer");
        let names: Vec<_> = std::fs::read_dir(to.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from("map.png")]);
    }

    #[test]
    fn two_publishes_to_one_target_use_distinct_temporary_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::write(&a, vec![b'a'; 1 << 20]).unwrap();
        std::fs::write(&b, vec![b'b'; 1 << 20]).unwrap();
        let to = tmp.path().join("out/result.nc");
        std::thread::scope(|s| {
            for src in [&a, &b, &a, &b] {
                let to = &to;
                s.spawn(move || copy_atomically(src, to).unwrap());
            }
        });
        // Whichever came last, the target is one whole copy, never a mix.
        let got = std::fs::read(&to).unwrap();
        assert_eq!(got.len(), 1 << 20);
        assert!(got.iter().all(|c| *c == got[0]));
    }

    #[test]
    fn a_missing_source_is_an_error_and_the_target_is_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let to = tmp.path().join("kept.txt");
        std::fs::write(&to, b"old").unwrap();
        assert!(copy_atomically(&tmp.path().join("gone"), &to).is_err());
        assert_eq!(std::fs::read(&to).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symbolic_link_at_the_target_is_replaced_not_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        let from = tmp.path().join("result.txt");
        std::fs::write(&from, b"published").unwrap();
        let to = tmp.path().join("pub/result.txt");
        std::fs::create_dir(tmp.path().join("pub")).unwrap();
        std::os::unix::fs::symlink(&victim, &to).unwrap();
        copy_atomically(&from, &to).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "written through the link");
        assert!(!std::fs::symlink_metadata(&to).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&to).unwrap(), b"published");
    }

    /// Needs root (the test suite runs as root): the link must belong to another user.
    #[test]
    fn a_link_another_user_placed_is_followed_only_when_it_stays_inside_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        let elsewhere = tmp.path().join("home/.ssh");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::create_dir_all(shared.join("run-1")).unwrap();
        let out = shared.join("latest");
        std::os::unix::fs::symlink(&elsewhere, &out).unwrap();
        let inside = shared.join("current");
        std::os::unix::fs::symlink("run-1", &inside).unwrap();
        for l in [&out, &inside] {
            std::os::unix::fs::lchown(l, Some(65534), Some(65534)).expect("lchown (the test needs root)");
        }
        let (link, to, owner) = check_links(&out.join("authorized_keys")).unwrap_err();
        assert_eq!((link, owner), (out.clone(), 65534));
        assert_eq!(to, std::fs::canonicalize(&elsewhere).unwrap());
        // Deeper below the link, and through `..`, the same link is found.
        assert!(check_links(&shared.join("run-1/../latest/sub/k")).is_err());
        // A foreign link inside its directory, a path not created yet, and a link of one's
        // own leading out are fine.
        check_links(&inside.join("map.png")).unwrap();
        check_links(&shared.join("new/deeper/map.png")).unwrap();
        let mine = shared.join("mine");
        std::os::unix::fs::symlink(&elsewhere, &mine).unwrap();
        check_links(&mine.join("map.png")).unwrap();
    }

    #[test]
    fn the_copy_has_the_sources_permissions_less_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("tool.sh");
        std::fs::write(&from, b"#!/bin/sh").unwrap();
        std::fs::set_permissions(&from, std::fs::Permissions::from_mode(0o777)).unwrap();
        let to = tmp.path().join("tool-copy.sh");
        copy_atomically(&from, &to).unwrap();
        let umask = process_status().1;
        assert_eq!(std::fs::metadata(&to).unwrap().permissions().mode() & 0o777, 0o777 & !umask);
    }
}
