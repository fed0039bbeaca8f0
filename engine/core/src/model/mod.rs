//! The validated workflow model, between validation (which builds it) and planning,
//! running and the backends (which read it).
//!
//! - [`workflow`]: the types ([`Workflow`], [`Namespace`], [`Step`], ...);
//! - [`resources`]: what one task asks for ([`Resources`]);
//! - [`refs`]: what a `${{ }}` reference names in a given context ([`resolve`]);
//! - [`sites`](mod@sites): where expressions are written and which steps each reads ([`sources`]);
//! - [`cycle`]: cycling (`cycle:`, `once:`, `wait:`, cycle points);
//! - [`service`]: service steps (`service:`, readiness, log rotation);
//! - [`eval`]: values known before the run (parameters, inputs, bindings: [`StaticScope`]).
//!
//! Validation and planning both ask these questions; keeping the answers here means
//! neither imports the other, and both agree on what a name means and what a step depends on.

pub mod cycle;
pub mod eval;
pub mod refs;
pub mod resources;
pub mod service;
pub mod sites;
pub mod workflow;

pub use cycle::{CycleSpec, End, Every, OnTimeout, Once, Point, Start, Wait, parse_instant};
pub use eval::{StaticScope, eval_value, param_or_input};
pub use refs::{Ctx, Resolved, resolve};
pub use resources::{Resources, ResourcesGiven};
pub use service::{Ready, Service};
pub use sites::{Site, prev_sources, sites, sources, step_sites};
pub use workflow::*;
