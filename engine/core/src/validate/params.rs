//! Values of parameters, from a default in the file or from `-p name=TEXT`: checked
//! against the declaration (type, bounds, enum values) and converted to expression values.

use std::path::Path;

use crate::expr::Value;
use crate::model::{NsIdx, ParamDef, ValueExpr};
use crate::spec::raw::ParamType;
use crate::suggest::did_you_mean;

use super::{Overrides, Validator};
use crate::diag::{Diag, DiagKind};
use crate::spec::span::{SourceFile, Sp};
use indexmap::IndexMap;

/// A parameter value that does not fit its declaration.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    /// A value of another type (`expected an integer, found `"x"``).
    #[error("expected {expected}, found `{found}`")]
    WrongType {
        /// What the declaration wants, in words (`an integer`).
        expected: &'static str,
        /// The value given, as written.
        found: String,
    },
    /// A float that is infinite or NaN.
    #[error("expected a finite number")]
    NotFinite,
    /// Below `min:`.
    #[error("{value} is below the minimum {min}")]
    BelowMin {
        /// The value.
        value: f64,
        /// The bound.
        min: f64,
    },
    /// Above `max:`.
    #[error("{value} is above the maximum {max}")]
    AboveMax {
        /// The value.
        value: f64,
        /// The bound.
        max: f64,
    },
    /// A path with a NUL byte.
    #[error("paths cannot contain NUL")]
    NulInPath,
    /// An enum value not among `values:`.
    #[error("`{value}` is not one of {}{}", quoted(.allowed), .hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    NotAllowed {
        /// The value.
        value: String,
        /// The allowed values.
        allowed: Vec<String>,
        /// "did you mean" for the closest allowed value.
        hint: Option<String>,
    },
    /// An element of a list parameter.
    #[error("element {index}: {error}")]
    Element {
        /// Its index.
        index: usize,
        /// What is wrong with it.
        error: Box<ParamError>,
    },
    /// `-p name=[...]` that is not a JSON list.
    #[error("invalid JSON list: {0}")]
    InvalidList(serde_json::Error),
    /// A sub-workflow input bound to something other than a path.
    #[error("an input is a file path, found `{0}`")]
    NotAPath(String),
}

fn quoted(items: &[String]) -> String {
    items.iter().map(|x| format!("`{x}`")).collect::<Vec<_>>().join(", ")
}

/// Checks a parameter value (from a default or from `-p`) against its declaration and
/// converts it. Relative paths are resolved against `base`.
pub fn check_param_value(def: &ParamDef, v: &serde_json::Value, base: &Path) -> Result<Value, ParamError> {
    match def.ty {
        ParamType::List => {
            let serde_json::Value::Array(items) = v else {
                return Err(ParamError::WrongType { expected: "a list", found: v.to_string() });
            };
            let mut out = Vec::with_capacity(items.len());
            for (index, it) in items.iter().enumerate() {
                out.push(
                    scalar_param(def.items, def, it, base)
                        .map_err(|e| ParamError::Element { index, error: Box::new(e) })?,
                );
            }
            Ok(Value::List(out))
        }
        t => scalar_param(t, def, v, base),
    }
}

fn scalar_param(ty: ParamType, def: &ParamDef, v: &serde_json::Value, base: &Path) -> Result<Value, ParamError> {
    use serde_json::Value as J;
    let bounds = |x: f64| -> Result<(), ParamError> {
        if let Some(min) = def.min
            && x < min
        {
            return Err(ParamError::BelowMin { value: x, min });
        }
        if let Some(max) = def.max
            && x > max
        {
            return Err(ParamError::AboveMax { value: x, max });
        }
        Ok(())
    };
    match (ty, v) {
        (ParamType::Int, J::Number(n)) if n.is_i64() => {
            let i = n.as_i64().unwrap_or_default();
            bounds(i as f64)?;
            Ok(Value::Int(i))
        }
        (ParamType::Float, J::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if !x.is_finite() {
                return Err(ParamError::NotFinite);
            }
            bounds(x)?;
            Ok(Value::Float(x))
        }
        (ParamType::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
        (ParamType::String, J::String(s)) => Ok(Value::Str(s.clone())),
        (ParamType::Path, J::String(s)) => {
            if s.contains('\0') {
                return Err(ParamError::NulInPath);
            }
            Ok(Value::Path(base.join(s).display().to_string()))
        }
        (ParamType::Enum, J::String(s)) => {
            if def.values.iter().any(|x| x == s) {
                Ok(Value::Str(s.clone()))
            } else {
                Err(ParamError::NotAllowed {
                    value: s.clone(),
                    allowed: def.values.clone(),
                    hint: did_you_mean(s, def.values.iter().map(String::as_str)),
                })
            }
        }
        (t, other) => Err(ParamError::WrongType { expected: type_word(t), found: other.to_string() }),
    }
}

/// The help for `-p NAME`/`-i NAME` naming nothing the workflow declares: a close name,
/// else the names it has (`what`: `parameters`, `inputs`), else that it declares none.
fn known_names_hint<'a>(
    workflow: &str,
    name: &str,
    known: impl Iterator<Item = &'a String> + Clone,
    what: &str,
    key: &str,
) -> String {
    if known.clone().next().is_none() {
        return format!("`{workflow}` declares no {what} (`{key}:`)");
    }
    did_you_mean(name, known.clone().map(String::as_str))
        .unwrap_or_else(|| format!("{what}: {}", known.map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")))
}

fn type_word(t: ParamType) -> &'static str {
    match t {
        ParamType::Int => "an integer",
        ParamType::Float => "a number",
        ParamType::String => "a string",
        ParamType::Bool => "`true` or `false`",
        ParamType::Path => "a path",
        ParamType::Enum => "one of the listed values",
        ParamType::List => "a list",
    }
}

/// Interprets `-p name=TEXT` according to the parameter's type. Text is never evaluated or
/// passed to a shell: it becomes a typed value.
pub fn parse_override(def: &ParamDef, text: &str) -> Result<serde_json::Value, ParamError> {
    use serde_json::Value as J;
    let scalar = |t: ParamType, s: &str| -> Result<J, ParamError> {
        let wrong = |expected| ParamError::WrongType { expected, found: s.to_string() };
        Ok(match t {
            ParamType::Int => J::from(s.trim().parse::<i64>().map_err(|_| wrong("an integer"))?),
            ParamType::Float => {
                let x: f64 = s.trim().parse().map_err(|_| wrong("a number"))?;
                serde_json::Number::from_f64(x).map(J::Number).ok_or_else(|| wrong("a finite number"))?
            }
            ParamType::Bool => match s.trim() {
                "true" => J::Bool(true),
                "false" => J::Bool(false),
                _ => return Err(wrong("`true` or `false`")),
            },
            _ => J::String(s.to_string()),
        })
    };
    if def.ty == ParamType::List {
        let t = text.trim();
        if t.starts_with('[') {
            return serde_json::from_str(t).map_err(ParamError::InvalidList);
        }
        if t.is_empty() {
            return Ok(J::Array(vec![]));
        }
        return t.split(',').map(|p| scalar(def.items, p.trim())).collect::<Result<Vec<_>, _>>().map(J::Array);
    }
    scalar(def.ty, text)
}

impl Validator {
    pub(super) fn param_def(
        &mut self,
        file: &SourceFile,
        name: &Sp<String>,
        p: &Sp<crate::spec::raw::RawParam>,
    ) -> Option<ParamDef> {
        self.check_name(file, name, "params");
        let field = format!("params.{}", name.value);
        let ty = p.ty.value;
        let items = p.items.as_ref().map(|i| i.value).unwrap_or(ParamType::String);
        if p.items.is_some() && ty != ParamType::List {
            self.push(Diag::new(
                DiagKind::InvalidValue,
                file,
                p.items.as_ref().map_or(p.span, |i| i.span),
                format!("{field}.items"),
                "`items` only applies to `type: list`",
            ));
        }
        if items == ParamType::List {
            self.push(Diag::new(
                DiagKind::InvalidValue,
                file,
                p.span,
                format!("{field}.items"),
                "lists of lists are not supported",
            ));
        }
        let values: Vec<String> =
            p.values.as_ref().map(|v| v.value.iter().map(|s| s.value.clone()).collect()).unwrap_or_default();
        if ty == ParamType::Enum && values.is_empty() {
            self.push(Diag::new(
                DiagKind::MissingKey,
                file,
                p.ty.span,
                format!("{field}.values"),
                "an `enum` parameter needs `values: [...]`",
            ));
        }
        let mut def = ParamDef {
            ty,
            items,
            default: None,
            min: p.min.as_ref().map(|m| m.value),
            max: p.max.as_ref().map(|m| m.value),
            values,
            span: name.span,
        };
        if let (Some(lo), Some(hi)) = (def.min, def.max)
            && lo > hi
        {
            self.push(Diag::new(
                DiagKind::InvalidValue,
                file,
                p.min.as_ref().map_or(p.span, |m| m.span),
                format!("{field}.min"),
                format!("`min` ({lo}) is larger than `max` ({hi})"),
            ));
        }
        if let Some(d) = &p.default {
            match check_param_value(&def, &d.value, &file.abs_dir()) {
                Ok(v) => def.default = Some(v),
                Err(e) => self.push(Diag::new(DiagKind::Type, file, d.span, format!("{field}.default"), e.to_string())),
            }
        }
        Some(def)
    }

    /// `-p CALL.NAME=VALUE` (`-p twin.nx=32`; nested calls as `outer.inner.nx`): the
    /// namespace of that sub-workflow call and the value, checked against the parameter's
    /// declaration in the sub-workflow.
    fn call_param_override(&self, call: &str, param: &str, raw: &str) -> Result<(NsIdx, Value), Box<Diag>> {
        let flag = format!("-p {call}.{param}");
        let prefix = format!("{}/", call.replace('.', "/"));
        let calls: Vec<String> =
            self.wf.namespaces[1..].iter().map(|n| n.prefix.trim_end_matches('/').replace('/', ".")).collect();
        let Some(ns) = self.wf.namespaces.iter().position(|n| n.parent.is_some() && n.prefix == prefix) else {
            let mut d = Diag::detached(
                DiagKind::Param,
                flag,
                format!("workflow `{}` has no sub-workflow call `{call}`", self.wf.name),
            );
            d = d.with_help(if calls.is_empty() {
                format!("`{}` calls no sub-workflow (`uses:`); `-p NAME=VALUE` sets its own parameters", self.wf.name)
            } else {
                known_names_hint(&self.wf.name, call, calls.iter(), "calls", "uses")
            });
            return Err(Box::new(d));
        };
        let n = &self.wf.namespaces[ns];
        let Some(def) = n.params.get(param) else {
            let d = Diag::detached(
                DiagKind::Param,
                flag,
                format!("the sub-workflow of call `{call}` has no parameter `{param}`"),
            )
            .with_help(known_names_hint(call, param, n.params.keys(), "parameters", "params"));
            return Err(Box::new(d));
        };
        parse_override(def, raw)
            .and_then(|j| check_param_value(def, &j, &crate::spec::span::absolute(Path::new("."))))
            .map(|v| (ns, v))
            .map_err(|e| Box::new(Diag::detached(DiagKind::Param, flag, e.to_string())))
    }

    pub(super) fn resolve_root_params(&mut self, overrides: &Overrides) {
        let file = self.file(0);
        let root = &self.wf.namespaces[0];
        let mut values = IndexMap::new();
        let mut diags = vec![];
        let mut call_values = vec![];
        for (name, raw) in &overrides.params {
            if let Some((call, param)) = name.rsplit_once('.') {
                match self.call_param_override(call, param, raw) {
                    Ok((ns, v)) => call_values.push((ns, param.to_string(), v)),
                    Err(d) => diags.push(*d),
                }
                continue;
            }
            match root.params.get(name) {
                None => {
                    let mut d = Diag::detached(
                        DiagKind::Param,
                        format!("-p {name}"),
                        format!("workflow `{}` has no parameter `{name}`", self.wf.name),
                    );
                    d = d.with_help(known_names_hint(&self.wf.name, name, root.params.keys(), "parameters", "params"));
                    diags.push(d);
                }
                Some(def) => match parse_override(def, raw)
                    .and_then(|j| check_param_value(def, &j, &crate::spec::span::absolute(Path::new("."))))
                {
                    Ok(v) => {
                        values.insert(name.clone(), v);
                    }
                    Err(e) => diags.push(Diag::detached(DiagKind::Param, format!("-p {name}"), e.to_string())),
                },
            }
        }
        for (name, def) in &root.params {
            // A parameter given with a bad value was reported above; it is not also missing.
            if values.contains_key(name) || overrides.params.iter().any(|(k, _)| k == name) {
                continue;
            }
            match &def.default {
                Some(v) => {
                    values.insert(name.clone(), v.clone());
                }
                None => diags.push(
                    Diag::new(
                        DiagKind::Param,
                        &file,
                        def.span,
                        format!("params.{name}"),
                        format!("parameter `{name}` has no default and was not given"),
                    )
                    .with_help(format!("pass it with `-p {name}=VALUE`")),
                ),
            }
        }
        let mut inputs = IndexMap::new();
        for (name, path) in &overrides.inputs {
            if root.inputs.contains_key(name) {
                inputs.insert(name.clone(), crate::spec::span::absolute(path));
            } else {
                diags.push(
                    Diag::detached(
                        DiagKind::Param,
                        format!("-i {name}"),
                        format!("workflow `{}` has no input `{name}`", self.wf.name),
                    )
                    .with_help(known_names_hint(
                        &self.wf.name,
                        name,
                        root.inputs.keys(),
                        "inputs",
                        "inputs",
                    )),
                );
            }
        }
        for (name, def) in &root.inputs {
            if inputs.contains_key(name) {
                continue;
            }
            match &def.default {
                Some(p) => {
                    inputs.insert(name.clone(), p.clone());
                }
                None => diags.push(
                    Diag::new(
                        DiagKind::Param,
                        &file,
                        def.span,
                        format!("inputs.{name}"),
                        format!("input `{name}` has no default and was not given"),
                    )
                    .with_help(format!("pass it with `-i {name}=PATH`")),
                ),
            }
        }
        self.wf.param_values = values;
        self.wf.input_values = inputs;
        // `-p call.NAME=VALUE` replaces what the call passes (or the default) for the run.
        for (ns, name, v) in call_values {
            let span = self.wf.namespaces[ns].params.get(&name).map(|d| d.span).unwrap_or_default();
            self.wf.namespaces[ns].bindings.insert(name, ValueExpr::Lit(v, span));
        }
        for d in diags {
            self.push(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::span::Span;

    fn def(ty: ParamType) -> ParamDef {
        ParamDef {
            ty,
            items: ParamType::Int,
            default: None,
            min: Some(1.0),
            max: Some(10.0),
            values: vec!["fast".into(), "full".into()],
            span: Span::default(),
        }
    }

    #[test]
    fn param_errors_say_what_was_expected() {
        let base = Path::new("/w");
        let msg = |ty, v: serde_json::Value| check_param_value(&def(ty), &v, base).unwrap_err().to_string();
        assert_eq!(msg(ParamType::Int, serde_json::json!("x")), "expected an integer, found `\"x\"`");
        assert_eq!(msg(ParamType::Int, serde_json::json!(0)), "0 is below the minimum 1");
        assert_eq!(msg(ParamType::Float, serde_json::json!(11.5)), "11.5 is above the maximum 10");
        assert_eq!(
            msg(ParamType::Enum, serde_json::json!("fulll")),
            "`fulll` is not one of `fast`, `full` (did you mean `full`?)"
        );
        assert_eq!(msg(ParamType::List, serde_json::json!([2, "a"])), "element 1: expected an integer, found `\"a\"`");
        let e = parse_override(&def(ParamType::Bool), "yes").unwrap_err();
        assert_eq!(e.to_string(), "expected `true` or `false`, found `yes`");
        assert!(matches!(parse_override(&def(ParamType::List), "[1,").unwrap_err(), ParamError::InvalidList(_)));
        assert_eq!(parse_override(&def(ParamType::List), "1, 2").unwrap(), serde_json::json!([1, 2]));
    }
}
