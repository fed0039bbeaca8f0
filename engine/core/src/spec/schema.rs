//! The JSON Schema of the workflow format, generated from [`super::raw`].

use super::raw::RawWorkflow;

/// The workflow JSON Schema as pretty-printed JSON (checked in as `schemas/workflow.schema.json`).
pub fn workflow_schema_json() -> String {
    let schema = schemars::schema_for!(RawWorkflow);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}
