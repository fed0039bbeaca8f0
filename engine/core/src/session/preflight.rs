//! Checks of the environment before a run starts (and by `twinflow validate --check-env`):
//! the programs the steps run, the `twin-kernel` of kernel steps and the MPI launcher of
//! multi-rank steps must be found, so a missing program is one environment error (exit 3)
//! before anything runs rather than a task failure in the middle of the run.
//!
//! What is looked up is what is known before the run:
//! - `run:`'s first word when it is literal text or made only of `params.*`, `inputs.*` and
//!   `workflow.dir` (one that comes from a scatter variable or a step's output is known only
//!   when the task starts, and is not checked);
//! - a word without `/` on `PATH` (the engine's: steps inherit it), an absolute path as it is;
//! - a relative path with `/` (`./fit.sh`, `bin/fit`) names a file in the step's attempt
//!   directory, where the step runs, which is created empty when the task starts: it cannot
//!   be checked, and if such a file sits beside the workflow instead, a warning says to write
//!   `${{ workflow.dir }}/...`;
//! - a step whose `env:` sets `PATH`, that runs through `shell: true`, or whose `when:` the
//!   parameters make false, is not checked.
//!
//! Warnings (not errors) are also given for literal relative arguments that name a file
//! beside the workflow or in the current directory: the attempt directory does not have it.

use std::path::{Path, PathBuf};

use crate::diag::{Diag, DiagKind};
use crate::model::{Command, Ctx, StaticScope, Step, Tpl, Workflow};
use crate::programs::which;

/// The programs the run needs besides those of the steps' `run:`.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// The MPI launcher of multi-rank steps (local backend), e.g. `mpiexec`.
    pub launcher: Option<String>,
    /// The `twin-kernel` binary of `kernel:` steps (`None`: not checked).
    pub kernel: Option<PathBuf>,
    /// Whether programs are looked up at all (not with a SLURM profile that loads modules
    /// or runs set-up lines: those change `PATH` on the node).
    pub programs: bool,
}

/// What [`check`] found: programs that are missing (errors) and arguments that will not
/// resolve from the attempt directory (warnings, as `file:line:col: field: message`).
#[derive(Debug, Default)]
pub struct Preflight {
    /// One diagnostic per missing program.
    pub missing: Vec<Diag>,
    /// Warnings.
    pub warnings: Vec<String>,
}

/// Looks up what `wf` runs (see the module documentation) on this process's `PATH`.
pub fn check(wf: &Workflow, needs: &Needs) -> Preflight {
    let mut out = Preflight::default();
    let mut launcher_missing = false;
    for step in &wf.steps {
        let file = &wf.namespaces[step.ns].file;
        let field = |k: &str| format!("steps.{}.{k}", step.local_name);
        for (t, name, at) in relative_file_args(wf, step) {
            let (line, col) = file.line_col(t.span.offset);
            out.warnings.push(format!(
                "{}:{line}:{col}: {}: `{name}` is a relative path: steps run in their attempt directory, which does not have it; write `${{{{ workflow.dir }}}}/{name}`",
                file.display_path(),
                field(&at)
            ));
        }
        // The kernel is a file of this machine (a shared file system on a cluster): always
        // checked.
        if let (Command::Kernel(k), Some(kernel)) = (&step.command, &needs.kernel)
            && !is_executable(kernel)
            && !switched_off(wf, step)
        {
            out.missing.push(
                Diag::new(
                    DiagKind::Program,
                    file,
                    step.span,
                    field("kernel"),
                    format!("`twin-kernel` (for `kernel: {k}`) is not found: `{}`", kernel.display()),
                )
                .with_help("build it (`cargo build -p twinflow-kernels`), put it on PATH or beside `twinflow`, or set `TWINFLOW_KERNEL_BIN`"),
            );
        }
        // A step that the parameters switch off (`when: ${{ params.mode == 'full' }}` with
        // `mode=quick`) never runs: what it would run need not be here.
        if !needs.programs || switched_off(wf, step) {
            continue;
        }
        if step.resources.ranks > 1
            && let Some(l) = &needs.launcher
            && !launcher_missing
            && which(l).is_none_or(|p| !is_executable(&p))
        {
            launcher_missing = true;
            out.missing.push(
                Diag::new(
                    DiagKind::Program,
                    file,
                    step.span,
                    field("resources.ranks"),
                    format!("the MPI launcher `{l}` is not found (step `{}` has {} ranks)", step.name, step.resources.ranks),
                )
                .with_help("install MPI, put its `mpiexec` on PATH, or name the launcher with `--mpiexec` or the profile's `mpiexec.command`"),
            );
        }
        if step.env.contains_key("PATH") {
            continue;
        }
        match &step.command {
            Command::Kernel(_) => {}
            Command::Run { shell: true, .. } => {}
            Command::Run { argv, shell: false } => {
                let Some(first) = argv.first() else { continue };
                let Some(prog) = static_text(wf, step, first) else { continue };
                if prog.is_empty() || (prog.contains('/') && !Path::new(&prog).is_absolute()) {
                    continue;
                }
                let found = which(&prog).filter(|p| is_executable(p));
                if found.is_none() {
                    let why = if prog.contains('/') { "does not exist or is not executable" } else { "is not on PATH" };
                    out.missing.push(
                        Diag::new(
                            DiagKind::Program,
                            file,
                            first.span,
                            field("run[0]"),
                            format!("program `{prog}` {why}"),
                        )
                        .with_help(
                            "install it or fix the name; a script beside the workflow is `${{ workflow.dir }}/NAME`",
                        ),
                    );
                }
            }
        }
    }
    out
}

/// Whether the step's `when:` is known before the run (parameters and inputs only) and false.
fn switched_off(wf: &Workflow, step: &Step) -> bool {
    let Some(w) = &step.when else { return false };
    let known = w
        .tpl
        .references()
        .iter()
        .all(|r| matches!(r.path.first().map(String::as_str), Some("params" | "inputs" | "workflow")));
    let scope = StaticScope { wf, ns: step.ns, ctx: Ctx::Namespace };
    known && matches!(w.tpl.eval(&scope), Ok(crate::expr::Value::Bool(false)))
}

/// The text of a template when it is known before the run: literal, or made only of
/// parameters, inputs and `workflow.dir`. The first element of a list value.
fn static_text(wf: &Workflow, step: &Step, t: &Tpl) -> Option<String> {
    if let Some(l) = t.tpl.literal() {
        return Some(l.to_string());
    }
    let refs = t.tpl.references();
    if !refs.iter().all(|r| matches!(r.path.first().map(String::as_str), Some("params" | "inputs" | "workflow"))) {
        return None;
    }
    let scope = StaticScope { wf, ns: step.ns, ctx: Ctx::Namespace };
    match t.tpl.eval(&scope).ok()? {
        crate::expr::Value::List(items) => items.first().map(ToString::to_string),
        v => Some(v.to_string()),
    }
}

/// Literal relative arguments of a step (`run` after the program, and `run[0]` when it is a
/// relative path) that name an existing file beside the workflow or in the current
/// directory: a step runs in its attempt directory, where they do not resolve.
fn relative_file_args<'a>(wf: &Workflow, step: &'a Step) -> Vec<(&'a Tpl, String, String)> {
    let Command::Run { argv, shell: false } = &step.command else { return vec![] };
    let dir = wf.namespaces[step.ns].file.abs_dir();
    let mut out = vec![];
    for (k, t) in argv.iter().chain(step.args.iter()).enumerate() {
        let Some(text) = t.tpl.literal() else { continue };
        let p = Path::new(text);
        // The program itself only when it is a path: a bare word is looked up on PATH.
        let plausible = !text.is_empty()
            && !text.starts_with('-')
            && !text.contains('=')
            && !p.is_absolute()
            && (k > 0 || text.contains('/'));
        if plausible && (dir.join(p).is_file() || Path::new(".").join(p).is_file()) {
            let at = if k < argv.len() { format!("run[{k}]") } else { format!("args[{}]", k - argv.len()) };
            out.push((t, text.to_string(), at));
        }
    }
    out
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Overrides, validate};

    fn wf(dir: &Path, text: &str) -> Workflow {
        let f = dir.join("wf.yaml");
        std::fs::write(&f, text).unwrap();
        let file = crate::spec::read_source(&f).unwrap();
        let raw = crate::spec::parse(&file).unwrap();
        validate(file, raw, &Overrides::default()).unwrap()
    }

    #[test]
    fn programs_known_before_the_run_are_looked_up_and_the_others_are_left_alone() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("fit.py"), "print(1)\n").unwrap();
        let w = wf(
            d.path(),
            "name: w\nparams:\n  tool: { type: string, default: no-such-tool-xyz }\nsteps:\n  \
             a: { run: [sh, -c, 'true'] }\n  \
             b: { run: [no-such-program-abc, x] }\n  \
             c: { run: [\"${{ params.tool }}\"] }\n  \
             d: { run: [./made-by-the-step.sh] }\n  \
             e: { run: [/no/such/abs/prog] }\n  \
             f: { run: [sh, fit.py] }\n  \
             g: { run: [\"no-such-in-path\"], env: { PATH: /opt/bin } }\n  \
             h: { kernel: flood }\n  \
             m: { run: [sh, -c, 'true'], resources: { ranks: 2 } }\n  \
             off: { run: [no-such-program-when-off], when: \"${{ params.tool == 'x' }}\" }\n  \
             on: { run: [no-such-program-when-on], when: \"${{ params.tool != 'x' }}\" }\n",
        );
        let needs = Needs {
            launcher: Some("no-such-mpiexec-qq".into()),
            kernel: Some(PathBuf::from("/no/such/twin-kernel")),
            programs: true,
        };
        let p = check(&w, &needs);
        let msgs: Vec<String> = p.missing.iter().map(|d| format!("{}: {}", d.field, d.message)).collect();
        assert_eq!(
            msgs,
            [
                "steps.b.run[0]: program `no-such-program-abc` is not on PATH",
                "steps.c.run[0]: program `no-such-tool-xyz` is not on PATH",
                "steps.e.run[0]: program `/no/such/abs/prog` does not exist or is not executable",
                "steps.h.kernel: `twin-kernel` (for `kernel: flood`) is not found: `/no/such/twin-kernel`",
                "steps.m.resources.ranks: the MPI launcher `no-such-mpiexec-qq` is not found (step `m` has 2 ranks)",
                "steps.on.run[0]: program `no-such-program-when-on` is not on PATH",
            ]
        );
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("steps.f.run[1]: `fit.py` is a relative path"), "{:?}", p.warnings);
        assert!(p.warnings[0].contains("wf.yaml:10:"), "{:?}", p.warnings);
        // Not looked up (a SLURM profile with modules): only the kernel and the warnings.
        let p = check(&w, &Needs { programs: false, ..needs });
        assert_eq!(p.missing.len(), 1);
        assert_eq!(p.missing[0].field, "steps.h.kernel");
        assert_eq!(p.warnings.len(), 1);
    }
}
