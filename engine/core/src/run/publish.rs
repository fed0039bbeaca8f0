//! `publish:`: copies of a finished task's outputs to paths the workflow names outside the
//! run directory, made after success (and again when a result is reused from the cache).
//!
//! Each copy goes to a uniquely named temporary file beside its target, is synced, then
//! renamed over the target (atomic on one file system): a target never holds a partial
//! copy, and two publishes to one target cannot trample each other's temporary file.

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
        let rel = step.outputs.get(k).or_else(|| step.values.get(k)).map(String::as_str).unwrap_or_default();
        copy_atomically(&dir.join(rel), &target).map_err(|source| PublishError::Copy {
            output: k.clone(),
            target: target.clone(),
            source,
        })?;
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
    // Keep the source's permissions (an executable stays executable), as `fs::copy` did.
    tmp.as_file().set_permissions(src.metadata()?.permissions())?;
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
}
