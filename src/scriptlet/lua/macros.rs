//! rpm macros as the `rpm` table sees them (`rpm.expand`, `rpm.define`,
//! `rpm.undefine`, `rpm.isdefined`): a stack of definitions per name,
//! expanded the way rpm expands them.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use mlua::Lua;

use super::show;

/// rpm's limit on nested macro expansion.
const MAX_EXPAND_DEPTH: usize = 64;

/// The macros `rpm.expand()` and friends see: name → a stack of definitions
/// (define pushes, undefine pops, as in rpm). Bodies are stored unexpanded.
#[derive(Clone, Debug, Default)]
pub struct Macros {
    defs: BTreeMap<String, Vec<MacroDef>>,
}

#[derive(Clone, Debug)]
struct MacroDef {
    body: String,
    parametric: bool,
}

impl Macros {
    /// No macros.
    pub fn new() -> Macros {
        Macros::default()
    }

    /// rpm's common path and arch macros for target `arch` (an rpm arch such
    /// as `aarch64`, `x86_64` or `armv7hl`), defined as rpm defines them (in
    /// terms of each other, so redefining `_prefix` moves `_bindir`).
    pub fn for_arch(arch: &str) -> Macros {
        let (arch_macro, lib) = match arch {
            "aarch64" | "x86_64" | "ppc64le" | "s390x" | "riscv64" => (arch, "lib64"),
            a if a.starts_with("arm") => ("arm", "lib"),
            "i386" | "i486" | "i586" | "i686" => ("i386", "lib"),
            other => (other, "lib"),
        };
        let mut m = Macros::new();
        let defs = [
            ("_arch", arch_macro),
            ("_target_cpu", arch),
            ("_target_os", "linux"),
            ("_lib", lib),
            ("_usr", "/usr"),
            ("_var", "/var"),
            ("_prefix", "/usr"),
            ("_exec_prefix", "%{_prefix}"),
            ("_bindir", "%{_exec_prefix}/bin"),
            ("_sbindir", "%{_exec_prefix}/sbin"),
            ("_libdir", "%{_exec_prefix}/%{_lib}"),
            ("_libexecdir", "%{_exec_prefix}/libexec"),
            ("_datadir", "%{_prefix}/share"),
            ("_includedir", "%{_prefix}/include"),
            ("_mandir", "%{_datadir}/man"),
            ("_infodir", "%{_datadir}/info"),
            ("_docdir", "%{_datadir}/doc"),
            ("_sysconfdir", "/etc"),
            ("_localstatedir", "/var"),
            ("_sharedstatedir", "/var/lib"),
            ("_rundir", "/run"),
            ("_unitdir", "/usr/lib/systemd/system"),
            ("_tmppath", "%{_var}/tmp"),
            ("_dbpath", "%{_usr}/lib/sysimage/rpm"),
        ];
        for (name, body) in defs {
            m.define(name, body);
        }
        m
    }

    /// Pushes a (non-parametric) definition of `name`.
    pub fn define(&mut self, name: &str, body: &str) {
        self.push(name, body, false);
    }

    fn push(&mut self, name: &str, body: &str, parametric: bool) {
        let def = MacroDef {
            body: body.to_string(),
            parametric,
        };
        self.defs.entry(name.to_string()).or_default().push(def);
    }

    /// Pops the latest definition of `name`, if any.
    pub fn undefine(&mut self, name: &str) {
        if let Some(stack) = self.defs.get_mut(name) {
            stack.pop();
            if stack.is_empty() {
                self.defs.remove(name);
            }
        }
    }

    /// The current (unexpanded) body of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.lookup(name).map(|d| d.body.as_str())
    }

    fn lookup(&self, name: &str) -> Option<&MacroDef> {
        self.defs.get(name).and_then(|s| s.last())
    }

    /// Defines from a `%define`-style line: `name[(opts)] body`, the body
    /// optionally in braces.
    fn define_line(&mut self, line: &str) -> Result<()> {
        let line = line.trim_start();
        let name_len = line
            .bytes()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
            .count();
        let name = &line[..name_len];
        if !valid_name(name) {
            bail!("macro %{name} has illegal name in {line:?}");
        }
        let mut rest = &line[name_len..];
        let mut parametric = false;
        if let Some(opts) = rest.strip_prefix('(') {
            let Some(close) = opts.find(')') else {
                bail!("macro %{name} has unterminated options");
            };
            parametric = true;
            rest = &opts[close + 1..];
        }
        let mut body = rest.trim();
        if let Some(inner) = body
            .strip_prefix('{')
            .filter(|inner| matching_brace(inner) == Some(inner.len() - 1))
        {
            body = &inner[..inner.len() - 1];
        }
        if body.is_empty() {
            bail!("macro %{name} has empty body");
        }
        self.push(name, body, parametric);
        Ok(())
    }

    /// Expands `%{name}`, `%name`, `%%`, `%{?name}`, `%{?name:text}` and
    /// `%{!?name:text}` (also without braces). An undefined `%{name}` or
    /// `%name` stays as written, as in rpm; other built-ins (`%{expand:}`,
    /// `%(shell)`, `%[expr]`, `%{lua:}`) are not supported and stay too.
    pub fn expand(&self, text: &str) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        self.expand_into(text, &mut out, 0)?;
        Ok(out)
    }

    fn expand_into(&self, text: &str, out: &mut String, depth: usize) -> Result<()> {
        if depth > MAX_EXPAND_DEPTH {
            bail!("too many levels of recursion in macro expansion");
        }
        let mut rest = text;
        while let Some(pos) = rest.find('%') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                out.push('%');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(close) = matching_brace(body) else {
                    bail!("unterminated {{ in {text:?}");
                };
                let inner = &body[..close];
                if !self.expand_braced(inner, out, depth)? {
                    out.push_str("%{");
                    out.push_str(inner);
                    out.push('}');
                }
                rest = &body[close + 1..];
            } else {
                let (negate, check, start) = cond_flags(after);
                let len = after[start..]
                    .bytes()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                    .count();
                let end = start + len;
                if len == 0 {
                    out.push('%');
                    rest = after;
                    continue;
                }
                if !self.expand_ref(&after[start..end], negate, check, None, out, depth)? {
                    out.push('%');
                    out.push_str(&after[..end]);
                }
                rest = &after[end..];
            }
        }
        out.push_str(rest);
        Ok(())
    }

    /// `inner` of `%{inner}`; false when it is to stay as written.
    fn expand_braced(&self, inner: &str, out: &mut String, depth: usize) -> Result<bool> {
        let (negate, check, start) = cond_flags(inner);
        let inner = &inner[start..];
        let (name, arg) = match inner.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (inner, None),
        };
        if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            return Ok(false);
        }
        self.expand_ref(name, negate, check, arg, out, depth)
    }

    fn expand_ref(
        &self,
        name: &str,
        negate: bool,
        check: bool,
        arg: Option<&str>,
        out: &mut String,
        depth: usize,
    ) -> Result<bool> {
        let def = self.lookup(name);
        if check {
            if def.is_some() != negate {
                match (arg, def) {
                    (Some(text), _) => self.expand_into(text, out, depth + 1)?,
                    (None, Some(d)) => self.expand_into(&d.body, out, depth + 1)?,
                    (None, None) => {}
                }
            }
            return Ok(true);
        }
        match def {
            Some(d) => {
                self.expand_into(&d.body, out, depth + 1)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// rpm's rule: starts with a letter, or with `_` and is longer than one.
fn valid_name(name: &str) -> bool {
    match name.as_bytes() {
        [c, ..] if c.is_ascii_alphabetic() => true,
        [b'_', _, ..] => true,
        _ => false,
    }
}

/// Leading `!` (negate) and `?` (only if defined) of a macro reference, and
/// where the name starts.
fn cond_flags(s: &str) -> (bool, bool, usize) {
    let (mut negate, mut check) = (false, false);
    let mut i = 0;
    for c in s.bytes() {
        match c {
            b'!' => negate = true,
            b'?' => check = true,
            _ => break,
        }
        i += 1;
    }
    (negate, check, i)
}

/// Index in `s` of the `}` closing a `{` just before `s`.
fn matching_brace(s: &str) -> Option<usize> {
    let mut level = 1usize;
    for (i, c) in s.bytes().enumerate() {
        match c {
            b'{' => level += 1,
            b'}' => {
                level -= 1;
                if level == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

// ---------------------------------------------------------------------------
// rpm.expand, rpm.define, rpm.undefine, rpm.isdefined

fn with_macros<R>(lua: &Lua, f: impl FnOnce(&mut Macros) -> R) -> mlua::Result<R> {
    let mut macros = lua
        .app_data_mut::<Macros>()
        .ok_or_else(|| mlua::Error::runtime("rpm macros are not available"))?;
    Ok(f(&mut macros))
}

pub(super) fn rpm_expand(lua: &Lua, s: mlua::String) -> mlua::Result<String> {
    let text = show(&s);
    with_macros(lua, |m| m.expand(&text))?.map_err(|e| mlua::Error::runtime(format!("error expanding macro: {e}")))
}

pub(super) fn rpm_define(lua: &Lua, s: mlua::String) -> mlua::Result<()> {
    let line = show(&s);
    with_macros(lua, |m| m.define_line(&line))?.map_err(|e| mlua::Error::runtime(format!("error defining macro: {e}")))
}

pub(super) fn rpm_undefine(lua: &Lua, s: mlua::String) -> mlua::Result<()> {
    let name = show(&s);
    with_macros(lua, |m| m.undefine(&name))
}

pub(super) fn rpm_isdefined(lua: &Lua, s: mlua::String) -> mlua::Result<(bool, bool)> {
    let name = show(&s);
    with_macros(lua, |m| match m.lookup(&name) {
        Some(d) => (true, d.parametric),
        None => (false, false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_for_arch() {
        let arm = Macros::for_arch("armv7hl");
        let cases = [
            ("%{_libdir}", "/usr/lib"),
            ("%{_arch}-%{_target_cpu}", "arm-armv7hl"),
            (
                "%{_sysconfdir} %{_localstatedir} %{_sharedstatedir}",
                "/etc /var /var/lib",
            ),
            ("%{_rundir} %{_unitdir}", "/run /usr/lib/systemd/system"),
            ("%{_tmppath} %{_dbpath}", "/var/tmp /usr/lib/sysimage/rpm"),
            (
                "%{_libexecdir} %{_datadir} %{_sbindir}",
                "/usr/libexec /usr/share /usr/sbin",
            ),
            ("%{?_prefix:p}%{!?_prefix:q}", "p"),
            ("%{unterminated", ""),
        ];
        for (text, want) in cases {
            match arm.expand(text) {
                Ok(got) => assert_eq!(got, want, "{text}"),
                Err(_) => assert!(want.is_empty(), "{text} failed"),
            }
        }
        assert_eq!(
            Macros::for_arch("x86_64").expand("%{_libdir}").expect("expand"),
            "/usr/lib64"
        );
    }
}
