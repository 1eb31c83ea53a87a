//! Treefile variables: their values, `${var}` substitution and the conditions
//! of `conditional-include`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A value of a treefile variable: rpm-ostree allows booleans, numbers and strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[serde(try_from = "serde_json::Value")]
pub enum VarValue {
    /// `true` / `false`.
    Bool(bool),
    /// An integer or a float, kept as written.
    Number(serde_json::Number),
    /// A string.
    String(String),
}

impl VarValue {
    /// The type's name, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            VarValue::Bool(_) => "a boolean",
            VarValue::Number(_) => "a number",
            VarValue::String(_) => "a string",
        }
    }
}

impl TryFrom<serde_json::Value> for VarValue {
    type Error = String;

    fn try_from(v: serde_json::Value) -> Result<VarValue, String> {
        match v {
            serde_json::Value::Bool(b) => Ok(VarValue::Bool(b)),
            serde_json::Value::Number(n) => Ok(VarValue::Number(n)),
            serde_json::Value::String(s) => Ok(VarValue::String(s)),
            other => Err(format!(
                "expected a string, number or boolean, found {}",
                json_kind(&other)
            )),
        }
    }
}

/// How a JSON value's type is named in messages.
pub(crate) fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a map",
    }
}

impl fmt::Display for VarValue {
    /// The text substituted for `${var}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VarValue::Bool(b) => write!(f, "{b}"),
            VarValue::Number(n) => write!(f, "{n}"),
            VarValue::String(s) => f.write_str(s),
        }
    }
}

/// Variables by name, sorted so that "known variables" lists are stable.
pub type Vars = BTreeMap<String, VarValue>;

/// The names in `vars`, comma-separated, for "known variables" in errors.
pub fn known(vars: &Vars) -> String {
    if vars.is_empty() {
        return "none".to_string();
    }
    vars.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// Why a substitution failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubstError {
    /// `${name}` (or dnf's `$name`) names no variable.
    Unknown(String),
    /// A `${` without its `}`.
    Unterminated,
}

/// Which forms of variable reference [`substitute`] expands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Treefile values: only `${name}`; a lone `$` is literal.
    Treefile,
    /// dnf .repo values: `${name}` and `$name` (`[A-Za-z0-9_]+`).
    Dnf,
}

/// Replaces variable references in `s` with their values.
pub fn substitute(s: &str, vars: &Vars, syntax: Syntax) -> Result<String, SubstError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or(SubstError::Unterminated)?;
            let name = &braced[..end];
            let value = vars.get(name).ok_or_else(|| SubstError::Unknown(name.to_string()))?;
            out.push_str(&value.to_string());
            rest = &braced[end + 1..];
        } else if syntax == Syntax::Dnf {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                out.push('$');
            } else {
                let name = &after[..len];
                let value = vars.get(name).ok_or_else(|| SubstError::Unknown(name.to_string()))?;
                out.push_str(&value.to_string());
            }
            rest = &after[len..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A comparison operator of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    const ALL: [(&'static str, Op); 6] = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];

    /// How the operator is written.
    pub fn symbol(self) -> &'static str {
        Op::ALL.iter().find(|(_, op)| *op == self).map_or("?", |(sym, _)| sym)
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            Op::Eq => ord == Ordering::Equal,
            Op::Ne => ord != Ordering::Equal,
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
            Op::Gt => ord == Ordering::Greater,
            Op::Ge => ord != Ordering::Less,
        }
    }

    fn is_equality(self) -> bool {
        matches!(self, Op::Eq | Op::Ne)
    }
}

/// One parsed condition of a `conditional-include`.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `var`: a boolean variable that is true.
    True(String),
    /// `var OP value`.
    Compare {
        /// The variable's name.
        var: String,
        /// The operator.
        op: Op,
        /// The literal on the right.
        value: VarValue,
    },
}

/// Why a condition could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CondError {
    /// Not of the form `var`, `var OP value`.
    Syntax(String),
    /// The variable is not defined.
    Unknown(String),
    /// The two sides cannot be compared with that operator.
    Mismatch(String),
}

impl fmt::Display for CondError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CondError::Syntax(m) | CondError::Mismatch(m) => f.write_str(m),
            CondError::Unknown(v) => write!(f, "unknown variable `{v}`"),
        }
    }
}

/// Parses `basearch == "aarch64"`, `releasever >= 40`, `devel` and the like.
pub fn parse_condition(text: &str) -> Result<Condition, CondError> {
    let s = text.trim();
    let name_len = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(s.len());
    let var = &s[..name_len];
    let syntax = || {
        CondError::Syntax(format!(
            "condition `{text}` is not `VAR`, or `VAR OP VALUE` with OP one of ==, !=, <, <=, >, >="
        ))
    };
    if var.is_empty() || var.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(syntax());
    }
    let rest = s[name_len..].trim_start();
    if rest.is_empty() {
        return Ok(Condition::True(var.to_string()));
    }
    let (op, literal) = Op::ALL
        .iter()
        .find_map(|(sym, op)| rest.strip_prefix(sym).map(|r| (*op, r.trim())))
        .ok_or_else(syntax)?;
    let value = match parse_literal(literal).ok_or_else(syntax)? {
        // `basearch` is Fedora's `armhfp` on armv7hl; `armv7hl` names the same
        // arch, as in `arch-include` and `packages-armv7hl`.
        VarValue::String(v) if var == "basearch" && v == "armv7hl" => VarValue::String("armhfp".into()),
        v => v,
    };
    Ok(Condition::Compare {
        var: var.to_string(),
        op,
        value,
    })
}

/// A condition's right-hand side: a quoted string, `true`/`false`, a number,
/// or (as YAML would read it) a bare word taken as a string.
fn parse_literal(s: &str) -> Option<VarValue> {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q) {
            return inner.strip_suffix(q).map(|v| VarValue::String(v.to_string()));
        }
    }
    match s {
        "" => None,
        "true" => Some(VarValue::Bool(true)),
        "false" => Some(VarValue::Bool(false)),
        _ => {
            if let Ok(n) = s.parse::<serde_json::Number>() {
                Some(VarValue::Number(n))
            } else if s.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
                Some(VarValue::String(s.to_string()))
            } else {
                None
            }
        }
    }
}

/// Evaluates a condition against the variables in scope. Values compare only
/// with values of the same type; `<`-style operators only on numbers.
pub fn eval_condition(cond: &Condition, vars: &Vars) -> Result<bool, CondError> {
    match cond {
        Condition::True(var) => match vars.get(var) {
            None => Err(CondError::Unknown(var.clone())),
            Some(VarValue::Bool(b)) => Ok(*b),
            Some(other) => Err(CondError::Mismatch(format!(
                "condition `{var}` needs a boolean variable, but `{var}` is {} ({other}); compare it with `==`",
                other.kind()
            ))),
        },
        Condition::Compare { var, op, value } => {
            let have = vars.get(var).ok_or_else(|| CondError::Unknown(var.clone()))?;
            let mismatch = || {
                CondError::Mismatch(format!(
                    "cannot compare `{var}` ({} {have}) with {} {value} using `{}`; \
                     write the value with the variable's type (strings in quotes)",
                    have.kind(),
                    value.kind(),
                    op.symbol()
                ))
            };
            let ord = match (have, value) {
                (VarValue::Number(a), VarValue::Number(b)) => cmp_numbers(a, b).ok_or_else(mismatch)?,
                (VarValue::String(a), VarValue::String(b)) if op.is_equality() => a.cmp(b),
                (VarValue::Bool(a), VarValue::Bool(b)) if op.is_equality() => a.cmp(b),
                _ => return Err(mismatch()),
            };
            Ok(op.holds(ord))
        }
    }
}

fn cmp_numbers(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut v = Vars::new();
        v.insert("basearch".into(), VarValue::String("aarch64".into()));
        v.insert("releasever".into(), VarValue::Number(41.into()));
        v.insert("devel".into(), VarValue::Bool(true));
        v.insert("stream".into(), VarValue::String("stable".into()));
        v
    }

    #[test]
    fn conditions_evaluate_like_rpm_ostree() {
        let table: &[(&str, bool)] = &[
            (r#"basearch == "aarch64""#, true),
            (r#"basearch=="x86_64""#, false),
            (r#"basearch != 'x86_64'"#, true),
            ("stream == stable", true),
            ("releasever == 41", true),
            ("releasever >= 40", true),
            ("releasever < 41", false),
            ("releasever <= 41", true),
            ("releasever > 41.5", false),
            ("devel", true),
            ("devel == false", false),
            ("devel != false", true),
        ];
        for (text, want) in table {
            let cond = parse_condition(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(eval_condition(&cond, &vars()), Ok(*want), "{text}");
        }
    }

    #[test]
    fn basearch_armv7hl_is_armhfp() {
        let mut arm = vars();
        arm.insert("basearch".into(), VarValue::String("armhfp".into()));
        for (text, want) in [
            (r#"basearch == "armhfp""#, true),
            (r#"basearch == "armv7hl""#, true),
            ("basearch != armv7hl", false),
            (r#"basearch == "aarch64""#, false),
        ] {
            let cond = parse_condition(text).unwrap();
            assert_eq!(eval_condition(&cond, &arm), Ok(want), "{text}");
        }
        // Only `basearch` has the alias.
        let cond = parse_condition(r#"stream == "armv7hl""#).unwrap();
        arm.insert("stream".into(), VarValue::String("armhfp".into()));
        assert_eq!(eval_condition(&cond, &arm), Ok(false));
    }

    #[test]
    fn bad_conditions_are_errors() {
        let table: &[(&str, &str)] = &[
            ("nosuch == 1", "unknown variable `nosuch`"),
            ("stream", "needs a boolean"),
            (
                r#"releasever == "41""#,
                "cannot compare `releasever` (a number 41) with a string",
            ),
            (r#"stream > "a""#, "cannot compare"),
            ("devel < true", "cannot compare"),
        ];
        for (text, want) in table {
            let cond = parse_condition(text).unwrap();
            let err = eval_condition(&cond, &vars()).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        for text in ["", "== 1", "a === 1", "a == ", "a == \"open", "1a", "a = 1", "a == b c"] {
            assert!(
                matches!(parse_condition(text), Err(CondError::Syntax(_))),
                "{text:?} should not parse"
            );
        }
    }

    #[test]
    fn substitution_forms() {
        let v = vars();
        let ok: &[(&str, Syntax, &str)] = &[
            (
                "fedora/${releasever}/${basearch}/iot",
                Syntax::Treefile,
                "fedora/41/aarch64/iot",
            ),
            ("cost $5 and $basearch", Syntax::Treefile, "cost $5 and $basearch"),
            ("${devel}-${stream}", Syntax::Treefile, "true-stable"),
            ("os/$basearch/", Syntax::Dnf, "os/aarch64/"),
            ("$releasever$basearch", Syntax::Dnf, "41aarch64"),
            ("a/${basearch}_b/$", Syntax::Dnf, "a/aarch64_b/$"),
            ("no vars", Syntax::Dnf, "no vars"),
        ];
        for (input, syntax, want) in ok {
            assert_eq!(substitute(input, &v, *syntax).as_deref(), Ok(*want), "{input}");
        }
        assert_eq!(
            substitute("a/${nope}/b", &v, Syntax::Treefile),
            Err(SubstError::Unknown("nope".into()))
        );
        assert_eq!(
            substitute("$basearch_x", &v, Syntax::Dnf),
            Err(SubstError::Unknown("basearch_x".into()))
        );
        assert_eq!(
            substitute("a/${open", &v, Syntax::Treefile),
            Err(SubstError::Unterminated)
        );
    }

    #[test]
    fn var_values_reject_lists() {
        let e = serde_json::from_value::<VarValue>(serde_json::json!([1])).unwrap_err();
        assert!(e.to_string().contains("found a list"), "{e}");
        let n: VarValue = serde_json::from_value(serde_json::json!(41)).unwrap();
        assert_eq!(n.to_string(), "41");
    }
}
