//! The workflow as a run was started (`RUN/workflow.json`): what the run's report needs of
//! it (steps, dependencies, declared outputs and `report:`, parameters, who ran it where)
//! once the workflow file may have changed or moved.

use std::path::Path;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::model::{ReportDecl, Workflow};

/// File in the run directory holding the workflow as the run was started.
pub const SNAPSHOT_FILE: &str = "workflow.json";
/// The workflow as a run was started: what the report needs of it once the workflow file
/// may have changed (`RUN/workflow.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowSnapshot {
    /// `name:`.
    pub name: String,
    /// `version:`.
    pub version: Option<String>,
    /// `description:`.
    pub description: Option<String>,
    /// The workflow file.
    pub file: String,
    /// Parameters as resolved (defaults and `-p`).
    pub params: IndexMap<String, serde_json::Value>,
    /// Inputs as resolved.
    pub inputs: IndexMap<String, String>,
    /// Steps in workflow order.
    pub steps: Vec<StepSnapshot>,
    /// Who ran it, where, with which twinflow.
    pub engine: EngineInfo,
}

/// A step of a [`WorkflowSnapshot`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepSnapshot {
    /// Name.
    pub name: String,
    /// Steps it depends on.
    pub deps: Vec<String>,
    /// Scattered (its tasks are members).
    pub scatter: bool,
    /// A service.
    pub service: bool,
    /// Declared outputs: name → path relative to the task's directory.
    pub outputs: IndexMap<String, String>,
    /// `report:`.
    pub report: ReportDecl,
}

/// Who started the engine, where, with which twinflow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineInfo {
    /// twinflow's version.
    pub version: String,
    /// User name.
    pub user: String,
    /// Host name.
    pub host: String,
}

impl EngineInfo {
    /// This process's.
    pub fn current() -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(user_of_uid)
            .unwrap_or_else(|| "unknown".into());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        EngineInfo { version: env!("CARGO_PKG_VERSION").to_string(), user, host }
    }
}

/// This process's user name from its uid (`/proc/self/status`) and `/etc/passwd`, where
/// `USER` is not set (a container, a batch job).
fn user_of_uid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
        })
        .or(Some(format!("uid {uid}")))
}

impl WorkflowSnapshot {
    /// The snapshot of a validated workflow, started from `file`.
    pub fn of(wf: &Workflow, file: &Path) -> Self {
        WorkflowSnapshot {
            name: wf.name.clone(),
            version: wf.version.clone(),
            description: wf.description.clone(),
            file: file.display().to_string(),
            params: wf.param_values.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
            inputs: wf.input_values.iter().map(|(k, v)| (k.clone(), v.display().to_string())).collect(),
            steps: wf
                .steps
                .iter()
                .map(|s| StepSnapshot {
                    name: s.name.clone(),
                    deps: s.deps.iter().map(|d| wf.steps[*d].name.clone()).collect(),
                    scatter: s.scatter.is_some(),
                    service: s.service.is_some(),
                    outputs: s.outputs.clone(),
                    report: s.report.clone(),
                })
                .collect(),
            engine: EngineInfo::current(),
        }
    }

    /// Writes it to `run_dir/workflow.json`.
    pub fn write(&self, run_dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(&run_dir.join(SNAPSHOT_FILE), &text)
    }

    /// Reads `run_dir/workflow.json` (`None` for runs started before it was written).
    pub fn read(run_dir: &Path) -> Option<Self> {
        let text = std::fs::read(run_dir.join(SNAPSHOT_FILE)).ok()?;
        match serde_json::from_slice(&text) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("{}: {e}", run_dir.join(SNAPSHOT_FILE).display());
                None
            }
        }
    }
}

/// Writes `path` through a temporary file beside it and a rename, so a reader (a browser
/// reloading the report of a run in progress) never sees half a file.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.partial"));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_of_a_workflow_is_written_and_read_back() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello.yaml");
        let over = crate::session::overrides(&["members=2".into()], &[]).unwrap();
        let wf = crate::session::load(&file, &over, None).unwrap();
        let snap = WorkflowSnapshot::of(&wf, &file);
        assert_eq!(snap.name, "hello");
        assert_eq!(snap.params["members"], serde_json::json!(2));
        let member = snap.steps.iter().find(|s| s.name == "member").unwrap();
        assert!(member.scatter && member.deps == ["prepare"], "{member:?}");
        assert!(!snap.engine.user.is_empty() && !snap.engine.version.is_empty());
        let tmp = tempfile::tempdir().unwrap();
        snap.write(tmp.path()).unwrap();
        assert_eq!(WorkflowSnapshot::read(tmp.path()), Some(snap));
        // A damaged snapshot is no snapshot (the report goes on without the graph's edges).
        std::fs::write(tmp.path().join(SNAPSHOT_FILE), "{").unwrap();
        assert_eq!(WorkflowSnapshot::read(tmp.path()), None);
    }
}
