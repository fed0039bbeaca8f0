//! Choosing the backend from a run's settings: the site profile, the local backend's
//! options (cores, grace period, the `mpiexec` launcher), and the SLURM mode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::SessionError;
use crate::execute::local::LocalOptions;
use crate::execute::profile::Profile;
use crate::execute::slurm::CALL_LOG_ENV;
use crate::state::{BackendChoice, RunSettings};

/// Which backend, in which mode: the part of [`RunSettings`] that decides it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendSettings {
    /// Local processes or SLURM.
    pub backend: BackendChoice,
    /// Site profile, by name or path.
    pub profile: Option<String>,
    /// SLURM job arrays for scattered steps.
    pub arrays: bool,
    /// Every step in one SLURM allocation.
    pub allocation: bool,
}

impl From<&RunSettings> for BackendSettings {
    fn from(s: &RunSettings) -> Self {
        BackendSettings { backend: s.backend, profile: s.profile.clone(), arrays: s.arrays, allocation: s.allocation }
    }
}

/// Options of the local backend given on the command line.
#[derive(Debug, Clone, Default)]
pub struct LocalSettings {
    /// `--cores`: cores the scheduler may fill (default: all).
    pub cores: Option<u32>,
    /// `--grace`: seconds between SIGTERM and SIGKILL.
    pub grace: Option<Duration>,
    /// `--mpiexec`: launcher and flags, replacing the profile's (its flavour and environment
    /// stay).
    pub mpiexec: Option<String>,
}

/// The site profile: `--profile` (for the local backend: its `mpiexec` and default
/// resources), the built-in default for the SLURM backend without one, else none. A name is
/// also looked for in the directory of `workflow` (see [`Profile::search_dirs`]). The SLURM
/// modes without the SLURM backend, or both at once, are usage errors.
pub fn site_profile(b: &BackendSettings, workflow: Option<&Path>) -> Result<Option<Profile>, SessionError> {
    if b.backend == BackendChoice::Local && (b.arrays || b.allocation) {
        let flag = if b.arrays { "--arrays" } else { "--allocation" };
        return Err(SessionError::Usage(format!("`{flag}` is a SLURM mode; add `--backend slurm`")));
    }
    if b.arrays && b.allocation {
        return Err(SessionError::Usage("`--arrays` and `--allocation` exclude each other".into()));
    }
    let mut profile = match (b.backend, &b.profile) {
        (BackendChoice::Local, None) => return Ok(None),
        (BackendChoice::Slurm, None) => Profile::default(),
        (_, Some(p)) => {
            Profile::find(p, workflow.and_then(Path::parent)).map_err(|e| SessionError::Usage(e.to_string()))?
        }
    };
    profile.arrays |= b.arrays;
    Ok(Some(profile))
}

/// The local backend's options: defaults, then the profile's `mpiexec`, then the command
/// line.
pub fn local_options(profile: Option<&Profile>, given: &LocalSettings) -> Result<LocalOptions, SessionError> {
    let mut local = LocalOptions::default();
    if let Some(c) = given.cores {
        local.cores = c.max(1);
    }
    if let Some(g) = given.grace {
        local.grace = g.min(Duration::from_secs(3600));
    }
    if let Some(m) = profile.and_then(|p| p.mpiexec.clone()) {
        local.mpiexec = m;
    }
    if let Some(m) = &given.mpiexec {
        let mut words = m.split_whitespace().map(String::from);
        local.mpiexec.command = words.next().ok_or_else(|| SessionError::Usage("`--mpiexec` is empty".into()))?;
        local.mpiexec.flags = words.collect();
    }
    Ok(local)
}

/// Where SLURM commands are logged, one line each (`TWINFLOW_SLURM_CALL_LOG`, for tests).
pub fn call_log() -> Option<PathBuf> {
    std::env::var_os(CALL_LOG_ENV).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_modes_need_the_slurm_backend_and_exclude_each_other() {
        let local_arrays = BackendSettings { arrays: true, ..Default::default() };
        let e = site_profile(&local_arrays, None).unwrap_err().to_string();
        assert_eq!(e, "`--arrays` is a SLURM mode; add `--backend slurm`");
        let both = BackendSettings { backend: BackendChoice::Slurm, arrays: true, allocation: true, profile: None };
        assert!(site_profile(&both, None).unwrap_err().to_string().contains("exclude each other"));
        assert!(site_profile(&BackendSettings::default(), None).unwrap().is_none());
        let slurm = BackendSettings { backend: BackendChoice::Slurm, arrays: true, ..Default::default() };
        assert!(site_profile(&slurm, None).unwrap().unwrap().arrays);
    }

    #[test]
    fn the_command_lines_mpiexec_replaces_the_launcher_and_flags_but_keeps_the_flavour() {
        let p = Profile {
            mpiexec: Some(crate::execute::launch::Mpiexec {
                flavour: crate::execute::launch::MpiFlavour::Openmpi,
                env: vec![("OMPI_ALLOW_RUN_AS_ROOT".into(), "1".into())],
                flags: vec!["--oversubscribe".into()],
                ..Default::default()
            }),
            ..Profile::default()
        };
        let given = LocalSettings { mpiexec: Some("mpirun.openmpi --bind-to none".into()), ..Default::default() };
        let o = local_options(Some(&p), &given).unwrap();
        assert_eq!(o.mpiexec.command, "mpirun.openmpi");
        assert_eq!(o.mpiexec.flags, ["--bind-to", "none"]);
        assert_eq!(o.mpiexec.flavour, crate::execute::launch::MpiFlavour::Openmpi);
        assert_eq!(o.mpiexec.env.len(), 1);
        let empty = LocalSettings { mpiexec: Some("  ".into()), ..Default::default() };
        assert!(local_options(None, &empty).is_err());
        let cores = LocalSettings { cores: Some(0), ..Default::default() };
        assert_eq!(local_options(None, &cores).unwrap().cores, 1);
    }
}
