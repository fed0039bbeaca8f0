//! What a step runs: `kernel:` or `run:` (with `shell:`), and the `args:` appended to it.

use super::super::Validator;
use crate::diag::{Diag, DiagKind};
use crate::model::{Command, Tpl};
use crate::spec::raw::RawStep;
use crate::spec::span::{SourceFile, Sp};
use crate::suggest::did_you_mean;

impl Validator {
    /// `kernel:` or `run:`; `None` when the step has neither or both (nothing else about it is
    /// checked then).
    pub(super) fn step_command(&mut self, file: &SourceFile, name: &Sp<String>, raw: &RawStep) -> Option<Command> {
        Some(match (&raw.kernel, &raw.run) {
            (Some(k), None) => self.kernel_command(file, name, raw, k),
            (None, Some(run)) => self.run_command(file, name, raw, run),
            (None, None) => {
                self.push(
                    Diag::new(
                        DiagKind::MissingKey,
                        file,
                        name.span,
                        format!("steps.{}", name.value),
                        "step has nothing to run",
                    )
                    .with_help("add `run: [program, args...]`, `kernel: NAME` or `uses: IMPORT`"),
                );
                return None;
            }
            (Some(k), Some(_)) => {
                self.push(Diag::new(
                    DiagKind::InvalidValue,
                    file,
                    k.span,
                    format!("steps.{}", name.value),
                    "a step has exactly one of `kernel`, `run` and `uses`",
                ));
                return None;
            }
        })
    }

    /// `kernel: NAME`: a kernel of `twin-kernel`; `shell:` does not apply.
    fn kernel_command(&mut self, file: &SourceFile, name: &Sp<String>, raw: &RawStep, k: &Sp<String>) -> Command {
        let f = |k: &str| format!("steps.{}.{k}", name.value);
        if !twinflow_contract::KERNELS.contains(&k.value.as_str()) {
            let mut d = Diag::new(
                DiagKind::UnknownReference,
                file,
                k.span,
                f("kernel"),
                format!("unknown kernel `{}`", k.value),
            );
            d = d.with_help(did_you_mean(&k.value, twinflow_contract::KERNELS.iter().copied()).unwrap_or_else(|| {
                format!("kernels: {}; any other program runs with `run: [...]`", twinflow_contract::KERNELS.join(", "))
            }));
            self.push(d);
        }
        if raw.shell.is_some() {
            self.push(Diag::new(DiagKind::InvalidValue, file, k.span, f("shell"), "`shell` only applies to `run`"));
        }
        Command::Kernel(k.value.clone())
    }

    /// `run: [program, args...]`, or one script with `shell: true`; a shell command line
    /// written as one argv element is refused with the list to write instead.
    fn run_command(
        &mut self,
        file: &SourceFile,
        name: &Sp<String>,
        raw: &RawStep,
        run: &Sp<Vec<Sp<String>>>,
    ) -> Command {
        let f = |k: &str| format!("steps.{}.{k}", name.value);
        let shell = raw.shell.as_ref().is_some_and(|s| s.value);
        if run.value.is_empty() {
            self.push(
                Diag::new(DiagKind::InvalidValue, file, run.span, f("run"), "`run` is empty")
                    .with_help("give the program and its arguments: `run: [python3, fit.py]`"),
            );
        }
        if shell && run.value.len() != 1 {
            self.push(Diag::new(
                DiagKind::InvalidValue,
                file,
                run.span,
                f("run"),
                "with `shell: true`, `run` must be a single script string",
            ));
        }
        if shell && let Some(script) = run.value.first().filter(|s| s.value.contains("${{")) {
            // Pasting a value into script text would let `-p x='$(...)'` run code.
            self.push(
                Diag::new(
                    DiagKind::InvalidValue,
                    file,
                    script.span,
                    f("run"),
                    "a `shell: true` script cannot contain `${{ }}` expressions",
                )
                .with_help(
                    "pass values as data: `env: { NAME: \"${{ ... }}\" }` and use \"$NAME\" in the script, \
                     or `args: [\"${{ ... }}\"]` and use \"$1\", \"$2\", ...",
                ),
            );
        }
        let mut argv = vec![];
        for (i, a) in run.value.iter().enumerate() {
            argv.extend(self.tpl_kept(file, &format!("{}[{i}]", f("run")), &a.value, a.span));
        }
        if !shell
            && let Some(first) = run.value.first()
            && first.value.contains(' ')
            && !first.value.contains("${{")
            && run.value.len() == 1
        {
            self.push(
                Diag::new(
                    DiagKind::InvalidValue,
                    file,
                    first.span,
                    f("run"),
                    "`run` is an argv list, not a shell command line",
                )
                .with_help(
                    if first.value.contains(['|', '>', '<', ';', '&', '$', '`', '*', '"', '\'']) {
                        // Pipes, redirections, quoting: only a shell understands these.
                        "add `shell: true` to run it through `/bin/sh`".to_string()
                    } else {
                        format!(
                            "write `run: [{}]`, or add `shell: true` to run it through `/bin/sh`",
                            first.value.split_whitespace().collect::<Vec<_>>().join(", ")
                        )
                    },
                ),
            );
        }
        Command::Run { argv, shell }
    }

    /// `with:` belongs to `uses:` steps only.
    pub(super) fn check_no_with(&mut self, file: &SourceFile, name: &Sp<String>, raw: &RawStep) {
        let f = |k: &str| format!("steps.{}.{k}", name.value);
        if !raw.with.is_empty() {
            self.push(Diag::new(
                DiagKind::InvalidValue,
                file,
                name.span,
                f("with"),
                "`with` only applies to `uses` steps",
            ));
        }
    }

    /// `args:`: templates appended to the command.
    pub(super) fn step_args(&mut self, file: &SourceFile, name: &Sp<String>, raw: &RawStep) -> Vec<Tpl> {
        let f = |k: &str| format!("steps.{}.{k}", name.value);
        let mut args = vec![];
        for (i, a) in raw.args.iter().enumerate() {
            args.extend(self.tpl_kept(file, &format!("{}[{i}]", f("args")), &a.value, a.span));
        }
        args
    }
}
