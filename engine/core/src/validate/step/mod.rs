//! One step of a workflow file → a [`Step`] of the model. Each element of a step (command,
//! environment, inputs, outputs, publish, resources, retry, scatter, when, once, wait and service) is checked by its
//! own function, in its own file; [`Validator::build_step`] only assembles them.

mod command;
mod env;
mod inputs;
mod outputs;
mod publish;
mod report;
mod resources;
mod retry;
mod scatter;
mod service;
mod wait;
mod when;

use super::Validator;
use crate::model::{NsIdx, Step};
use crate::spec::raw::RawStep;
use crate::spec::span::{SourceFile, Sp};

impl Validator {
    /// Builds a runnable step; `None` when it has nothing to run (or two things), so it has
    /// no command to check the rest against.
    pub(super) fn build_step(
        &mut self,
        ns: NsIdx,
        file: &SourceFile,
        prefix: &str,
        name: &Sp<String>,
        raw: &RawStep,
    ) -> Option<Step> {
        let command = self.step_command(file, name, raw)?;
        self.check_no_with(file, name, raw);
        let args = self.step_args(file, name, raw);
        let env = self.step_env(file, name, raw);
        let inputs = self.step_inputs(file, name, raw);
        let (outputs, values) = self.step_outputs(file, name, raw);
        let publish = self.step_publish(file, name, raw, &outputs, &values);
        let report = self.step_report(file, name, raw, &outputs);
        let resources = self.step_resources(file, name, raw);
        let retry = self.step_retry(file, name, raw);
        let timeout = self.step_timeout(file, name, raw);
        let scatter = self.step_scatter(file, name, raw);
        let when = self.step_when(file, name, raw);
        let once = self.step_once(file, name, raw);
        let wait = self.step_wait(file, name, raw);
        let service = self.step_service(file, name, raw, once);
        // `after:` is resolved once all steps of the namespace are known (compute_deps).
        let after_names: Vec<Sp<String>> = raw.after.clone();
        // A step with problems is still added (its name and outputs exist), so expressions
        // elsewhere are checked too; the caller marks it broken.
        let step = Step {
            name: format!("{prefix}{}", name.value),
            local_name: name.value.clone(),
            ns,
            span: name.span,
            command,
            args,
            env,
            inputs,
            outputs,
            values,
            publish,
            resources,
            retry,
            timeout,
            scatter,
            when,
            deps: vec![],
            after: vec![],
            once,
            wait,
            prev_deps: vec![],
            service,
            report,
        };
        let idx = self.wf.steps.len();
        self.pending_after.push((idx, after_names));
        for (field, t, min) in std::mem::take(&mut self.counts_of_step) {
            self.pending_counts.push((idx, field, t, min));
        }
        Some(step)
    }
}
