//! The sbatch script of one job: a pure function of the job and the site profile, shown by
//! `twinflow plan --backend slurm`, written to `ATTEMPT/.twinflow/job.sbatch` and submitted
//! with `sbatch --parsable`.
//!
//! Layout: `#SBATCH` options (resources, then the profile's partition/account/QOS and extra
//! options), `set -e` so a failing `module load` or set-up line fails the job instead of
//! running the step in the wrong environment, the profile's modules and set-up lines, the
//! environment as `export NAME='value'` (values are data: single-quoted), and finally
//! `exec` of the step's argv, every word single-quoted. Steps with more than one rank run
//! under `srun --mpi=PLUGIN -n RANKS`; one rank runs directly, as in the local backend.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use crate::execute::JobRequest;
pub use crate::execute::launch::{job_name, slurm_mem_mb};
use crate::execute::profile::{Profile, is_env_name};

/// Quotes a word for bash: unchanged when it only has safe characters, else in single
/// quotes with each `'` written as `'\''` (nothing is special inside single quotes).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A path in an `#SBATCH` line: sbatch reads double quotes there, so a path with spaces is
/// double-quoted. (A path with a `"` or a newline cannot be written; twinflow's run
/// directories never have one.)
pub fn sbatch_path(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars().any(|c| c.is_whitespace() || c == '#') { format!("\"{s}\"") } else { s }
}

/// The `--comment` twinflow gives a submission: derived from a path unique to it (the
/// attempt directory, or an array's member list), so after an `sbatch` that timed out the
/// engine can find out from `squeue` whether the controller accepted the job anyway,
/// instead of submitting it a second time.
pub fn submission_tag(unique: &Path) -> String {
    let h = blake3::hash(unique.as_os_str().as_encoded_bytes());
    format!("twinflow-{}", &h.to_hex()[..16])
}

/// `--time` value: `D-HH:MM:SS`, seconds rounded up (SLURM itself rounds up to minutes).
pub fn slurm_time(d: Duration) -> String {
    let mut s = d.as_secs();
    if d.subsec_nanos() > 0 {
        s += 1;
    }
    let s = s.max(1);
    format!("{}-{:02}:{:02}:{:02}", s / 86400, s / 3600 % 24, s / 60 % 60, s % 60)
}

/// The time limit of a job: the shorter of `resources.walltime` and `timeout`, else the
/// profile's default.
pub fn time_limit(job: &JobRequest, profile: &Profile) -> Option<Duration> {
    match (job.resources.walltime, job.timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b).or(profile.default_walltime),
    }
}

/// The launch line's words: `srun` and its options for multi-rank steps, then the argv.
pub fn launch_argv(job: &JobRequest, profile: &Profile) -> Vec<String> {
    let r = &job.resources;
    if r.ranks <= 1 {
        return job.argv.clone();
    }
    let mut v = vec!["srun".to_string()];
    if let Some(m) = &profile.mpi {
        v.push(format!("--mpi={m}"));
    }
    v.push("-n".into());
    v.push(r.ranks.to_string());
    // Since SLURM 22.05 srun no longer inherits --cpus-per-task from the batch job
    // (RELEASE_NOTES 22.05: "srun will no longer read in SLURM_CPUS_PER_TASK"): repeat it.
    if r.threads > 1 {
        v.push(format!("--cpus-per-task={}", r.threads));
    }
    v.extend(profile.srun_flags.iter().cloned());
    v.extend(job.argv.iter().cloned());
    v
}

/// Renders the sbatch script of `job` under `profile`.
pub fn render_script(job: &JobRequest, profile: &Profile) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "#!/bin/bash");
    let _ =
        writeln!(s, "# twinflow job for task `{}` (SLURM profile `{}`)", one_line(&job.name), one_line(&profile.name));
    let mut opt = |o: String| {
        let _ = writeln!(s, "#SBATCH {o}");
    };
    opt(format!("--job-name={}", job_name(&job.name)));
    opt(format!("--output={}", sbatch_path(&job.stdout)));
    opt(format!("--error={}", sbatch_path(&job.stderr)));
    opt(format!("--chdir={}", sbatch_path(&job.cwd)));
    opt(format!("--comment={}", submission_tag(&job.cwd)));
    for o in resource_options(job, profile) {
        opt(o);
    }
    s.push_str("set -e\n");
    site_setup(&mut s, profile);
    exports(&mut s, profile.env.iter().chain(job.env.iter()));
    s.push_str("# the step\n");
    let words: Vec<String> = launch_argv(job, profile).iter().map(|w| shell_quote(w)).collect();
    let _ = writeln!(s, "exec {}", words.join(" "));
    s
}

/// The profile's `module load` lines and set-up lines, as written into job scripts.
fn site_setup(s: &mut String, profile: &Profile) {
    if !profile.modules.is_empty() || !profile.setup.is_empty() {
        s.push_str("# site set-up (profile)\n");
    }
    for m in &profile.modules {
        let words: Vec<String> = m.split_whitespace().map(shell_quote).collect();
        let _ = writeln!(s, "module load {}", words.join(" "));
    }
    for l in &profile.setup {
        let _ = writeln!(s, "{l}");
    }
}

/// `export NAME='value'` lines (values are data: always single-quoted).
fn exports<'a>(s: &mut String, vars: impl Iterator<Item = &'a (String, String)>) {
    let mut first = true;
    for (k, v) in vars {
        if first {
            s.push_str("# environment\n");
            first = false;
        }
        if is_env_name(k) {
            let _ = writeln!(s, "export {k}={}", shell_quote_always(v));
        } else {
            let _ = writeln!(s, "# not exported (not a variable name): {}", shell_quote(k).replace('\n', " "));
        }
    }
}

/// The shell text that gives a step launched by `srun` (allocation mode) the same site
/// environment as a batch job: `set -e`, the profile's modules, set-up lines and
/// environment, then `exec "$@"`; run as `bash -c TEXT twinflow-step ARGV...`. `None`
/// when the profile has none of them (the step's argv is launched directly).
pub fn srun_prelude(profile: &Profile) -> Option<String> {
    if profile.modules.is_empty() && profile.setup.is_empty() && profile.env.is_empty() {
        return None;
    }
    let mut s = String::from("set -e\n");
    site_setup(&mut s, profile);
    exports(&mut s, profile.env.iter());
    s.push_str("# the step\nexec \"$@\"\n");
    Some(s)
}

/// The `#SBATCH` options that size and place a job: resources, then the profile's
/// partition, account, QOS and extra options.
pub fn resource_options(job: &JobRequest, profile: &Profile) -> Vec<String> {
    let r = &job.resources;
    let mut v = vec![];
    v.push(format!("--nodes={}", r.nodes.max(1)));
    v.push(format!("--ntasks={}", r.ranks.max(1)));
    v.push(format!("--cpus-per-task={}", r.threads.max(1)));
    if r.memory > 0 {
        v.push(format!("--mem={}M", slurm_mem_mb(r.memory, r.nodes)));
    }
    if let Some(t) = time_limit(job, profile) {
        v.push(format!("--time={}", slurm_time(t)));
    }
    if r.gpus > 0 {
        v.push(format!("--gres=gpu:{}", r.gpus));
    }
    if let Some(p) = &profile.partition {
        v.push(format!("--partition={p}"));
    }
    if let Some(a) = &profile.account {
        v.push(format!("--account={a}"));
    }
    if let Some(q) = &profile.qos {
        v.push(format!("--qos={q}"));
    }
    v.extend(profile.sbatch_flags.iter().cloned());
    v
}

/// Renders the driver of a job array whose element `i` runs the member script of line
/// `i + 1` of `list` (an attempt directory per line): it changes to that directory and runs
/// its `.twinflow/job.sbatch` with standard output and error in that attempt, exactly as
/// the member's own job would. `first` gives the resources (all members of a step share
/// them); `throttle` becomes `%K`.
pub fn render_array_script(
    first: &JobRequest,
    step: &str,
    count: usize,
    throttle: Option<u32>,
    list: &Path,
    log: &Path,
    profile: &Profile,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "#!/bin/bash\n# twinflow job array: {count} members of step `{}` (SLURM profile `{}`)",
        one_line(step),
        one_line(&profile.name)
    );
    let last = count.saturating_sub(1);
    let range = match throttle {
        Some(k) => format!("0-{last}%{k}"),
        None => format!("0-{last}"),
    };
    let mut opts = vec![
        format!("--job-name={}", job_name(step)),
        format!("--array={range}"),
        format!("--output={}", sbatch_path(log)),
        format!("--comment={}", submission_tag(list)),
    ];
    opts.extend(resource_options(first, profile));
    for o in opts {
        let _ = writeln!(s, "#SBATCH {o}");
    }
    let list = shell_quote(&list.display().to_string());
    let _ = writeln!(s, "# member i runs in the attempt directory on line i+1 of the list");
    let _ = writeln!(s, "dir=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {list})");
    s.push_str("if [ -z \"$dir\" ] || ! cd \"$dir\"; then\n");
    s.push_str("  echo \"twinflow: no attempt directory for array index $SLURM_ARRAY_TASK_ID\" >&2\n  exit 1\nfi\n");
    s.push_str("exec bash .twinflow/job.sbatch >.twinflow/stdout 2>.twinflow/stderr\n");
    s
}

/// Single quotes even for safe words, so `export` lines look alike.
fn shell_quote_always(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::model::Resources;

    fn job(name: &str, argv: &[&str], resources: Resources) -> JobRequest {
        let dir = PathBuf::from("/runs/20261122-101500-3f2a/steps/sim/3/attempt-1");
        JobRequest {
            name: name.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("TWINFLOW_RUN_ID".into(), "20261122-101500-3f2a".into())],
            cwd: dir.clone(),
            stdout: dir.join(".twinflow/stdout"),
            stderr: dir.join(".twinflow/stderr"),
            resources,
            timeout: None,
            array: None,
        }
    }

    fn local() -> Profile {
        Profile {
            name: "local".into(),
            partition: Some("debug".into()),
            mpi: Some("pmi2".into()),
            ..Profile::default()
        }
    }

    #[test]
    fn serial_step_minimal_profile() {
        let j =
            job("prepare", &["sh", "-c", "echo \"$1\" > \"$2\"", "sh", "hello", "config.txt"], Resources::default());
        insta::assert_snapshot!(render_script(&j, &Profile::default()));
    }

    #[test]
    fn array_driver_reads_its_member_by_array_task_id() {
        let r =
            Resources { ranks: 2, memory: 1 << 30, walltime: Some(Duration::from_secs(600)), ..Resources::default() };
        let j = job("sim[0]", &["twin-kernel", "flood"], r);
        let list = Path::new("/runs/20261122-101500-3f2a/steps/sim/.twinflow/array-7-1.list");
        let log = Path::new("/runs/20261122-101500-3f2a/steps/sim/.twinflow/array-7-1-%a.log");
        insta::assert_snapshot!(render_array_script(&j, "sim", 12, Some(4), list, log, &local()));
    }

    #[test]
    fn mpi_step_with_all_resources() {
        let r = Resources {
            ranks: 4,
            threads: 2,
            nodes: 2,
            memory: 3 << 30,
            walltime: Some(Duration::from_secs(90 * 60 + 1)),
            gpus: 1,
            ..Resources::default()
        };
        let mut j = job("sim[3]", &["/opt/twin-kernel", "flood", "--grid", "dem.nc"], r);
        j.timeout = Some(Duration::from_secs(2 * 86400 + 3600));
        insta::assert_snapshot!(render_script(&j, &local()));
    }

    #[test]
    fn site_profile_modules_setup_and_flags() {
        let p = Profile {
            name: "site".into(),
            partition: Some("compute".into()),
            account: Some("proj123".into()),
            qos: Some("normal".into()),
            sbatch_flags: vec!["--constraint=cpu".into(), "--export=NONE".into()],
            modules: vec!["gcc/12.2".into(), "openmpi/4.1".into()],
            setup: vec!["source /opt/venvs/twin/bin/activate".into()],
            env: vec![("OMP_PROC_BIND".into(), "close".into())],
            mpi: Some("pmix".into()),
            srun_flags: vec!["--cpu-bind=cores".into()],
            default_walltime: Some(Duration::from_secs(3600)),
            ..Profile::default()
        };
        let j = job("member[12]", &["./model", "--member", "12"], Resources { ranks: 8, ..Resources::default() });
        insta::assert_snapshot!(render_script(&j, &p));
    }

    #[test]
    fn hostile_values_stay_data() {
        let mut j = job(
            "evil\nname",
            &["sh", "-c", "echo $(id) `id` $HOME; echo 'quoted'", "a b", "it's", ""],
            Resources::default(),
        );
        j.env.push(("MSG".into(), "it's $(rm -rf /) `reboot` \"$HOME\"\nsecond line".into()));
        j.env.push(("BAD NAME".into(), "x".into()));
        j.cwd = PathBuf::from("/scratch/my runs/attempt-1");
        j.stdout = j.cwd.join(".twinflow/stdout");
        j.stderr = j.cwd.join(".twinflow/stderr");
        let s = render_script(&j, &local());
        insta::assert_snapshot!(s);
    }

    /// The rendered script, run by bash with `exec` replaced by `printf`, gives back
    /// exactly the argv and environment: quoting round-trips.
    #[test]
    fn quoting_round_trips_through_bash() {
        let argv = ["sh", "-c", "echo $(id) `id`; exit 3", "it's", "a  b", "$HOME", "", "new\nline", "ü"];
        let mut j = job("t", &argv, Resources::default());
        j.env = vec![("MSG".into(), "it's $(id) `id` \"$HOME\"\nline2".into())];
        let script = render_script(&j, &Profile::default())
            .replace("\nexec ", "\nprintf '%s\\0' \"$MSG\" ")
            .replace("set -e\n", "");
        let out = std::process::Command::new("bash").arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success());
        let words: Vec<String> =
            out.stdout.split(|b| *b == 0).map(|w| String::from_utf8_lossy(w).into_owned()).collect();
        assert_eq!(words[0], j.env[0].1);
        assert_eq!(&words[1..=argv.len()], argv.map(String::from).as_slice());
    }

    #[test]
    fn times_and_memory() {
        assert_eq!(slurm_time(Duration::from_secs(59)), "0-00:00:59");
        assert_eq!(slurm_time(Duration::from_millis(90_500)), "0-00:01:31");
        assert_eq!(slurm_time(Duration::from_secs(2 * 86400 + 3 * 3600 + 4 * 60 + 5)), "2-03:04:05");
        assert_eq!(slurm_mem_mb(1, 1), 1);
        assert_eq!(slurm_mem_mb(3 << 30, 2), 1536);
        assert_eq!(job_name("sim.member[3]"), "sim.member-3");
    }
}
