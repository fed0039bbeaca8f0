//! A step's `report:`: which of its outputs the run's report shows, as figures or tables,
//! and which hold alerts the run reports as events.

use indexmap::IndexMap;

use super::super::Validator;
use crate::diag::{Diag, DiagKind};
use crate::model::ReportDecl;
use crate::spec::raw::RawStep;
use crate::spec::span::{SourceFile, Sp};
use crate::suggest::did_you_mean;

/// File name endings a figure may have (embedded as an image), and a table (read as CSV).
const FIGURE_KINDS: &[&str] = &[".png", ".svg"];
const TABLE_KINDS: &[&str] = &[".csv"];
const ALERT_KINDS: &[&str] = &[".jsonl"];

impl Validator {
    /// `report: { figures: [out.NAME], tables: [out.NAME], alerts: [out.NAME] }`: each entry
    /// names an output of the step whose file is a PNG or SVG (figures), a CSV file
    /// (tables) or a JSON-lines file (alerts).
    pub(super) fn step_report(
        &mut self,
        file: &SourceFile,
        name: &Sp<String>,
        raw: &RawStep,
        outputs: &IndexMap<String, String>,
    ) -> ReportDecl {
        let Some(report) = &raw.report else { return ReportDecl::default() };
        let mut decl = ReportDecl::default();
        for (list, items, kinds, into) in [
            ("figures", &report.value.figures, FIGURE_KINDS, &mut decl.figures),
            ("tables", &report.value.tables, TABLE_KINDS, &mut decl.tables),
            ("alerts", &report.value.alerts, ALERT_KINDS, &mut decl.alerts),
        ] {
            for (i, item) in items.iter().enumerate() {
                let field = format!("steps.{}.report.{list}[{i}]", name.value);
                let Some(out) = item.value.trim().strip_prefix("out.") else {
                    self.push(
                        Diag::new(
                            DiagKind::InvalidValue,
                            file,
                            item.span,
                            field,
                            format!("`{}` does not name an output", item.value),
                        )
                        .with_help("write `out.NAME`, NAME one of the step's `out:`"),
                    );
                    continue;
                };
                let Some(path) = outputs.get(out) else {
                    let mut d = Diag::new(
                        DiagKind::UnknownReference,
                        file,
                        item.span,
                        field,
                        format!("`{out}` is not an output of step `{}`", name.value),
                    );
                    if let Some(h) = did_you_mean(out, outputs.keys().map(String::as_str)) {
                        d = d.with_help(h);
                    }
                    self.push(d);
                    continue;
                };
                let lower = path.to_ascii_lowercase();
                if !kinds.iter().any(|k| lower.ends_with(k)) {
                    self.push(Diag::new(
                        DiagKind::InvalidValue,
                        file,
                        item.span,
                        field,
                        format!(
                            "output `{out}` (`{path}`) is not a {} file, which the report can show as {list}",
                            kinds
                                .iter()
                                .map(|k| k.trim_start_matches('.').to_uppercase())
                                .collect::<Vec<_>>()
                                .join(" or ")
                        ),
                    ));
                    continue;
                }
                into.push(out.to_string());
            }
        }
        decl
    }
}
