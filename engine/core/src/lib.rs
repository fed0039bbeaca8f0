//! twinflow engine: runs digital-twin workflows.
//!
//! The pipeline is visible in the module tree, one type per phase:
//!
//! 1. [`spec`]: parse YAML into the raw shape ([`spec::raw::RawWorkflow`]) with spans;
//! 2. [`validate`]: check meaning and build the [`model`] ([`model::Workflow`]), collecting
//!    every problem as a [`diag::Diag`] with `file:line:col`;
//! 3. [`plan`]: compile the model into a DAG of tasks ([`plan::Plan`], a petgraph graph),
//!    expanding scatters;
//! 4. [`run`]: a scheduler core without I/O ([`run::scheduler`]) decides what runs when;
//!    the modules around it execute tasks through an [`execute::Backend`] and record every
//!    transition in the durable [`state`] store;
//! 5. [`session`]: what each command asks of the engine (start, resume, cancel, status,
//!    why, the plan view), choosing the backend from the run's settings.
//!
//! The library never prints and never exits: it returns typed errors and emits
//! [`events::Event`]s to a [`events::Reporter`] the caller provides.
#![warn(missing_docs)]

pub mod diag;
pub mod events;
pub mod execute;
pub mod expr;
pub mod ids;
pub mod model;
pub mod plan;
pub mod programs;
pub mod report;
pub mod run;
pub mod session;
pub mod spec;
pub mod state;
pub mod suggest;
pub mod units;
pub mod validate;
