//! The embedded Lua 5.4 interpreter for `<lua>` scriptlets, with the part of
//! rpm's lua API that distribution scriptlets use: the standard libraries, the
//! `rpm` table (vercmp, expand, define, execute, ...) and the `posix` module
//! as rpm bundles it (rpmio/lposix.c).
//!
//! Choices:
//! - The script runs in this process, as in rpm. The caller has forked,
//!   chrooted and changed directory to `/`; nothing here changes the root or
//!   the working directory on its own.
//! - `posix` functions return `nil, message, errno` on failure, as rpm's do;
//!   arguments of the wrong type raise a Lua error, never a panic.
//! - `posix.chown` resolves names from `/etc/passwd` and `/etc/group` of the
//!   current root by reading them, not through NSS, so no NSS module of the
//!   tree is loaded into this process.
//! - `posix.exec` and `posix.redirect2null` work only in a child made by
//!   `posix.fork`, as in rpm; such a child that returns from the script
//!   instead of exec'ing is ended with status 1 (rpm's "runaway fork").
//! - `os.exit(n)` flushes stdout and ends the process with `n` (rpm refuses
//!   it; here the process is the scriptlet's own child).

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use anyhow::{Result, bail};
use mlua::{Lua, MultiValue, Table, Value, Variadic};
use nix::errno::Errno;
use nix::sys::stat::Mode;
use nix::sys::wait::WaitStatus;
use nix::unistd::{AccessFlags, ForkResult, Pid};

use crate::rpm::vercmp::evrcmp;

/// Set in a child made by `posix.fork()`: rpm allows `exec` and
/// `redirect2null` only there.
static FORKED: AtomicBool = AtomicBool::new(false);

/// rpm's limit on nested macro expansion.
const MAX_EXPAND_DEPTH: usize = 64;

/// Runs a lua scriptlet in this process, rpm-style. The caller has already
/// chrooted into the tree (so "/" is the tree's root) and is a forked,
/// single-threaded child. Returns the scriptlet's exit status: 0 on success,
/// 1 when the script raised an error (the error is printed to stderr).
///
/// As in rpm, the script sees a global `arg` table whose `arg[1]` is the
/// interpreter name `"<lua>"` and whose `arg[2]`, `arg[3]`, ... are `args`
/// (numbers where they are integers, like rpm's instance counts).
/// `script_name` (e.g. `%post(foo-1.0-1.noarch)`) names the chunk in error
/// messages.
pub fn run(script: &str, script_name: &str, args: &[String], macros: &Macros) -> i32 {
    let pid = std::process::id();
    let status = match execute_script(script, script_name, args, macros) {
        Ok(()) => 0,
        Err(message) => {
            flush_stdout();
            eprintln!("error: {message}");
            1
        }
    };
    flush_stdout();
    if std::process::id() != pid {
        // A posix.fork() child that neither exec'ed nor exited must not
        // return into the caller's code as if it were the scriptlet process.
        eprintln!("warning: runaway fork() in Lua script");
        exit_now(1);
    }
    status
}

fn execute_script(script: &str, script_name: &str, args: &[String], macros: &Macros) -> Result<(), String> {
    let lua = Lua::new();
    install(&lua, args, macros).map_err(|e| format!("setting up lua: {}", error_message(&e)))?;
    lua.load(script).set_name(script_name).exec().map_err(|e| match e {
        mlua::Error::SyntaxError { message, .. } => format!("invalid syntax in lua script: {message}"),
        other => format!("lua script failed: {}", error_message(&other)),
    })
}

/// The message of a Lua error without mlua's wrapping and traceback.
fn error_message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::RuntimeError(m) => m.split("\nstack traceback:").next().unwrap_or(m).to_string(),
        mlua::Error::CallbackError { cause, .. } => error_message(cause),
        other => other.to_string(),
    }
}

/// Flushes Rust's and C's stdout buffers (`print` and `io.write` use C's).
fn flush_stdout() {
    let _ = std::io::stdout().flush();
    // SAFETY: fflush(NULL) flushes every open output stream; it takes no
    // pointer from us.
    unsafe {
        nix::libc::fflush(std::ptr::null_mut());
    }
}

/// Ends the process at once (the caller flushed what it wanted written),
/// without atexit handlers that a forked child must not run.
fn exit_now(status: i32) -> ! {
    // SAFETY: _exit(2) has no preconditions and does not return.
    unsafe { nix::libc::_exit(status) }
}

fn install(lua: &Lua, args: &[String], macros: &Macros) -> mlua::Result<()> {
    lua.set_app_data(macros.clone());
    let globals = lua.globals();

    let arg = lua.create_table()?;
    arg.raw_set(1, "<lua>")?;
    for (i, a) in args.iter().enumerate() {
        match a.parse::<i64>() {
            Ok(n) => arg.raw_set(i + 2, n)?,
            Err(_) => arg.raw_set(i + 2, a.as_str())?,
        }
    }
    globals.set("arg", arg)?;
    globals.set("opt", lua.create_table()?)?;

    let posix = posix_table(lua)?;
    let rpm = rpm_table(lua)?;
    let os: Table = globals.get("os")?;
    os.set("exit", lua.create_function(os_exit)?)?;
    let loaded: Table = globals.get::<Table>("package")?.get("loaded")?;
    loaded.set("posix", &posix)?;
    loaded.set("rpm", &rpm)?;
    globals.set("posix", posix)?;
    globals.set("rpm", rpm)?;
    Ok(())
}

fn os_exit(_: &Lua, (code, _close): (Option<Value>, Option<Value>)) -> mlua::Result<()> {
    let status = match code {
        None | Some(Value::Nil) | Some(Value::Boolean(true)) => 0,
        Some(Value::Boolean(false)) => 1,
        Some(Value::Integer(n)) => n as i32,
        Some(Value::Number(f)) if f.fract() == 0.0 => f as i32,
        Some(other) => {
            return Err(mlua::Error::runtime(format!(
                "bad argument #1 to 'exit' (number expected, got {})",
                other.type_name()
            )));
        }
    };
    flush_stdout();
    exit_now(status)
}

// ---------------------------------------------------------------------------
// Macros

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
        if let Some(inner) = body.strip_prefix('{')
            && matching_brace(inner) == Some(inner.len() - 1)
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
// Return conventions

type Ret = mlua::Result<MultiValue>;

fn ok_int(n: i64) -> Ret {
    Ok(MultiValue::from_vec(vec![Value::Integer(n)]))
}

/// `nil, "info: strerror", errno`, as rpm's `pusherror`.
fn fail(lua: &Lua, info: Option<&str>, e: Errno) -> Ret {
    let message = match info {
        Some(info) => format!("{info}: {}", e.desc()),
        None => e.desc().to_string(),
    };
    fail_msg(lua, &message, e as i64)
}

fn fail_msg(lua: &Lua, message: &str, code: i64) -> Ret {
    Ok(MultiValue::from_vec(vec![
        Value::Nil,
        Value::String(lua.create_string(message)?),
        Value::Integer(code),
    ]))
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO))
}

fn io_result(lua: &Lua, r: std::io::Result<()>, info: Option<&str>) -> Ret {
    match r {
        Ok(()) => ok_int(0),
        Err(e) => fail(lua, info, errno_of(&e)),
    }
}

fn nix_result(lua: &Lua, r: nix::Result<()>, info: Option<&str>) -> Ret {
    match r {
        Ok(()) => ok_int(0),
        Err(e) => fail(lua, info, e),
    }
}

fn path_of(s: &mlua::String) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&s.as_bytes()))
}

fn show(s: &mlua::String) -> String {
    String::from_utf8_lossy(&s.as_bytes()).into_owned()
}

fn cstring(s: &mlua::String) -> mlua::Result<CString> {
    CString::new(s.as_bytes().to_vec()).map_err(|_| mlua::Error::runtime("argument contains a NUL byte"))
}

fn bad_arg(n: usize, func: &str, why: &str) -> mlua::Error {
    mlua::Error::runtime(format!("bad argument #{n} to '{func}' ({why})"))
}

// ---------------------------------------------------------------------------
// rpm

fn rpm_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("vercmp", lua.create_function(rpm_vercmp)?)?;
    t.set("expand", lua.create_function(rpm_expand)?)?;
    t.set("define", lua.create_function(rpm_define)?)?;
    t.set("undefine", lua.create_function(rpm_undefine)?)?;
    t.set("isdefined", lua.create_function(rpm_isdefined)?)?;
    t.set("execute", lua.create_function(rpm_execute)?)?;
    t.set("redirect2null", lua.create_function(redirect2null)?)?;
    Ok(t)
}

fn rpm_vercmp(_: &Lua, (a, b): (mlua::String, mlua::String)) -> mlua::Result<i64> {
    let (a, b) = (show(&a), show(&b));
    for (n, v) in [(1, &a), (2, &b)] {
        if v.is_empty() {
            return Err(bad_arg(n, "vercmp", "invalid version"));
        }
    }
    Ok(evrcmp(&a, &b) as i64)
}

fn with_macros<R>(lua: &Lua, f: impl FnOnce(&mut Macros) -> R) -> mlua::Result<R> {
    let mut macros = lua
        .app_data_mut::<Macros>()
        .ok_or_else(|| mlua::Error::runtime("rpm macros are not available"))?;
    Ok(f(&mut macros))
}

fn rpm_expand(lua: &Lua, s: mlua::String) -> mlua::Result<String> {
    let text = show(&s);
    with_macros(lua, |m| m.expand(&text))?.map_err(|e| mlua::Error::runtime(format!("error expanding macro: {e}")))
}

fn rpm_define(lua: &Lua, s: mlua::String) -> mlua::Result<()> {
    let line = show(&s);
    with_macros(lua, |m| m.define_line(&line))?.map_err(|e| mlua::Error::runtime(format!("error defining macro: {e}")))
}

fn rpm_undefine(lua: &Lua, s: mlua::String) -> mlua::Result<()> {
    let name = show(&s);
    with_macros(lua, |m| m.undefine(&name))
}

fn rpm_isdefined(lua: &Lua, s: mlua::String) -> mlua::Result<(bool, bool)> {
    let name = show(&s);
    with_macros(lua, |m| match m.lookup(&name) {
        Some(d) => (true, d.parametric),
        None => (false, false),
    })
}

/// rpm ≥ 4.18: `0` when the command exits 0, else `nil, "exit code", code`,
/// `nil, "exit signal", signal`, or `nil, strerror, errno` when it could not
/// be started. The command is looked up in `PATH`.
fn rpm_execute(lua: &Lua, (file, rest): (mlua::String, Variadic<mlua::String>)) -> Ret {
    let mut cmd = std::process::Command::new(OsStr::from_bytes(&file.as_bytes()));
    for a in rest.iter() {
        cmd.arg(OsStr::from_bytes(&a.as_bytes()));
    }
    flush_stdout();
    match cmd.status() {
        Err(e) => fail(lua, None, errno_of(&e)),
        Ok(st) => {
            use std::os::unix::process::ExitStatusExt;
            match (st.code(), st.signal()) {
                (Some(0), _) => ok_int(0),
                (Some(code), _) => fail_msg(lua, "exit code", code.into()),
                (None, Some(sig)) => fail_msg(lua, "exit signal", sig.into()),
                (None, None) => fail_msg(lua, "exit code", -1),
            }
        }
    }
}

fn redirect2null(lua: &Lua, fd: i64) -> Ret {
    if !FORKED.load(AtomicOrdering::SeqCst) {
        return Err(mlua::Error::runtime("redirect2null not permitted in this context"));
    }
    let null = match std::fs::OpenOptions::new().write(true).open("/dev/null") {
        Ok(f) => f,
        Err(e) => return fail(lua, Some("/dev/null"), errno_of(&e)),
    };
    // Only the standard streams: other fd numbers may be owned by Rust code.
    let r = match fd {
        0 => nix::unistd::dup2_stdin(&null),
        1 => nix::unistd::dup2_stdout(&null),
        2 => nix::unistd::dup2_stderr(&null),
        _ => Err(Errno::EBADF),
    };
    nix_result(lua, r, None)
}

// ---------------------------------------------------------------------------
// posix

fn posix_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("access", lua.create_function(p_access)?)?;
    t.set("chmod", lua.create_function(p_chmod)?)?;
    t.set("chown", lua.create_function(p_chown)?)?;
    t.set("mkdir", lua.create_function(p_mkdir)?)?;
    t.set(
        "rmdir",
        lua.create_function(|lua, p: mlua::String| io_result(lua, std::fs::remove_dir(path_of(&p)), Some(&show(&p))))?,
    )?;
    t.set(
        "unlink",
        lua.create_function(|lua, p: mlua::String| io_result(lua, std::fs::remove_file(path_of(&p)), Some(&show(&p))))?,
    )?;
    t.set("readlink", lua.create_function(p_readlink)?)?;
    t.set(
        "symlink",
        lua.create_function(|lua, (target, link): (mlua::String, mlua::String)| {
            io_result(lua, std::os::unix::fs::symlink(path_of(&target), path_of(&link)), None)
        })?,
    )?;
    t.set(
        "link",
        lua.create_function(|lua, (old, new): (mlua::String, mlua::String)| {
            io_result(lua, std::fs::hard_link(path_of(&old), path_of(&new)), None)
        })?,
    )?;
    t.set(
        "mkfifo",
        lua.create_function(|lua, p: mlua::String| {
            nix_result(
                lua,
                nix::unistd::mkfifo(path_of(&p).as_path(), Mode::from_bits_truncate(0o777)),
                Some(&show(&p)),
            )
        })?,
    )?;
    t.set("stat", lua.create_function(p_stat)?)?;
    t.set("getenv", lua.create_function(p_getenv)?)?;
    t.set("setenv", lua.create_function(p_setenv)?)?;
    t.set("unsetenv", lua.create_function(p_unsetenv)?)?;
    t.set("dir", lua.create_function(p_dir)?)?;
    t.set("files", lua.create_function(p_files)?)?;
    t.set("getcwd", lua.create_function(p_getcwd)?)?;
    t.set(
        "chdir",
        lua.create_function(|lua, p: mlua::String| {
            io_result(lua, std::env::set_current_dir(path_of(&p)), Some(&show(&p)))
        })?,
    )?;
    t.set("umask", lua.create_function(p_umask)?)?;
    t.set(
        "getpid",
        lua.create_function(|_, ()| Ok(i64::from(std::process::id())))?,
    )?;
    t.set("fork", lua.create_function(p_fork)?)?;
    t.set("exec", lua.create_function(p_exec)?)?;
    t.set("wait", lua.create_function(p_wait)?)?;
    t.set("kill", lua.create_function(p_kill)?)?;
    t.set(
        "sleep",
        lua.create_function(|_, secs: u32| {
            std::thread::sleep(std::time::Duration::from_secs(secs.into()));
            Ok(0)
        })?,
    )?;
    t.set("utime", lua.create_function(p_utime)?)?;
    t.set("redirect2null", lua.create_function(redirect2null)?)?;
    Ok(t)
}

fn p_access(lua: &Lua, (path, mode): (mlua::String, Option<mlua::String>)) -> Ret {
    let mut flags = AccessFlags::F_OK;
    if let Some(mode) = &mode {
        for c in mode.as_bytes().iter() {
            match c {
                b' ' | b'f' => {}
                b'r' => flags |= AccessFlags::R_OK,
                b'w' => flags |= AccessFlags::W_OK,
                b'x' => flags |= AccessFlags::X_OK,
                other => {
                    return Err(bad_arg(
                        2,
                        "access",
                        &format!("unknown mode option '{}'", *other as char),
                    ));
                }
            }
        }
    }
    nix_result(
        lua,
        nix::unistd::access(path_of(&path).as_path(), flags),
        Some(&show(&path)),
    )
}

fn p_mkdir(lua: &Lua, path: mlua::String) -> Ret {
    let r = std::fs::DirBuilder::new().mode(0o777).create(path_of(&path));
    io_result(lua, r, Some(&show(&path)))
}

fn p_readlink(lua: &Lua, path: mlua::String) -> Ret {
    match std::fs::read_link(path_of(&path)) {
        Ok(target) => Ok(MultiValue::from_vec(vec![Value::String(
            lua.create_string(target.as_os_str().as_bytes())?,
        )])),
        Err(e) => fail(lua, Some(&show(&path)), errno_of(&e)),
    }
}

/// The permission bits as rpm's `modechopper` writes them (`rwxr-xr-x`).
fn mode_string(mode: u32) -> String {
    const CHARS: &[u8; 9] = b"rwxrwxrwx";
    (0..9)
        .map(|i| {
            if mode & (0o400 >> i) != 0 {
                CHARS[i] as char
            } else {
                '-'
            }
        })
        .collect()
}

/// Applies a mode given as rpm's posix module takes it to `cur`: octal digits
/// (`"0755"`, or a number whose decimal digits are read as octal, so `755`),
/// `rwxr-xr-x` (positions not given stay), or symbolic `u+x,go-w`.
fn mode_munch(cur: u32, spec: &[u8]) -> Option<u32> {
    match spec.first()? {
        b'0'..=b'7' => {
            let s = std::str::from_utf8(spec).ok()?;
            u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777)
        }
        b'r' | b'-' => {
            if spec.len() > 9 {
                return None;
            }
            let mut mode = cur & !0o6000;
            for (i, &c) in spec.iter().enumerate() {
                let bit = 0o400 >> i;
                match (c, i) {
                    (b'-', _) => mode &= !bit,
                    (b'r', 0 | 3 | 6) | (b'w', 1 | 4 | 7) | (b'x', 2 | 5 | 8) => mode |= bit,
                    (b's', 2) => mode |= 0o4100,
                    (b's', 5) => mode |= 0o2010,
                    (b't', 8) => mode |= 0o1001,
                    _ => return None,
                }
            }
            Some(mode)
        }
        _ => {
            let mut mode = cur;
            for clause in spec.split(|&c| c == b',') {
                let who_len = clause.iter().take_while(|c| b"ugoa ".contains(c)).count();
                let mut affected = clause[..who_len].iter().fold(0, |acc, c| {
                    acc | match c {
                        b'u' => 0o4700,
                        b'g' => 0o2070,
                        b'o' => 0o1007,
                        b'a' => 0o7777,
                        _ => 0,
                    }
                });
                if affected == 0 {
                    affected = 0o7777;
                }
                let (&op, perms) = clause[who_len..].split_first()?;
                let mut bits = 0;
                for c in perms {
                    bits |= match c {
                        b'r' => 0o444,
                        b'w' => 0o222,
                        b'x' => 0o111,
                        b's' => 0o6000,
                        b't' => 0o1000,
                        b' ' => 0,
                        _ => return None,
                    };
                }
                mode = match op {
                    b'+' => mode | (bits & affected),
                    b'-' => mode & !(bits & affected),
                    b'=' => (mode & !affected) | (bits & affected),
                    _ => return None,
                };
            }
            Some(mode)
        }
    }
}

fn p_chmod(lua: &Lua, (path, mode): (mlua::String, mlua::String)) -> Ret {
    let (p, info) = (path_of(&path), show(&path));
    let cur = match std::fs::metadata(&p) {
        Ok(m) => m.mode(),
        Err(e) => return fail(lua, Some(&info), errno_of(&e)),
    };
    let Some(new) = mode_munch(cur & 0o7777, &mode.as_bytes()) else {
        return Err(bad_arg(2, "chmod", "bad mode"));
    };
    io_result(
        lua,
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(new)),
        Some(&info),
    )
}

/// The id in field 3 of the `name:...` line of a passwd or group file.
fn id_from_db(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        fields.nth(1)?.trim().parse().ok()
    })
}

/// An owner argument of `chown`: nil keeps it, a number is the id, a name is
/// looked up in `db` (Err(name) when it is not there).
fn owner_id(v: &Value, db: &str, arg: usize) -> mlua::Result<std::result::Result<Option<u32>, String>> {
    let name = match v {
        Value::Nil => return Ok(Ok(None)),
        Value::Integer(n) => return Ok(Ok(u32::try_from(*n).ok())),
        Value::Number(f) => return Ok(Ok(u32::try_from(*f as i64).ok())),
        Value::String(s) => show(s),
        other => {
            return Err(bad_arg(
                arg,
                "chown",
                &format!("string or number expected, got {}", other.type_name()),
            ));
        }
    };
    if let Ok(n) = name.trim().parse::<i64>() {
        return Ok(Ok(u32::try_from(n).ok()));
    }
    let text = std::fs::read_to_string(db).unwrap_or_default();
    Ok(id_from_db(&text, &name).map(Some).ok_or(name))
}

fn p_chown(lua: &Lua, (path, user, group): (mlua::String, Value, Value)) -> Ret {
    let info = show(&path);
    let uid = match owner_id(&user, "/etc/passwd", 2)? {
        Ok(id) => id,
        Err(name) => return fail_msg(lua, &format!("{info}: unknown user {name}"), Errno::EINVAL as i64),
    };
    let gid = match owner_id(&group, "/etc/group", 3)? {
        Ok(id) => id,
        Err(name) => return fail_msg(lua, &format!("{info}: unknown group {name}"), Errno::EINVAL as i64),
    };
    io_result(lua, std::os::unix::fs::chown(path_of(&path), uid, gid), Some(&info))
}

fn file_type(mode: u32) -> &'static str {
    match mode & 0o170000 {
        0o100000 => "regular",
        0o120000 => "link",
        0o040000 => "directory",
        0o020000 => "character device",
        0o060000 => "block device",
        0o010000 => "fifo",
        0o140000 => "socket",
        _ => "?",
    }
}

/// `lstat`, as rpm's posix module: a table of all fields, or one field.
fn p_stat(lua: &Lua, (path, field): (mlua::String, Option<mlua::String>)) -> Ret {
    let md = match std::fs::symlink_metadata(path_of(&path)) {
        Ok(m) => m,
        Err(e) => return fail(lua, Some(&show(&path)), errno_of(&e)),
    };
    let fields = [
        ("mode", Value::String(lua.create_string(mode_string(md.mode()))?)),
        ("ino", Value::Integer(md.ino() as i64)),
        ("dev", Value::Integer(md.dev() as i64)),
        ("nlink", Value::Integer(md.nlink() as i64)),
        ("uid", Value::Integer(md.uid().into())),
        ("gid", Value::Integer(md.gid().into())),
        ("size", Value::Integer(md.size() as i64)),
        ("atime", Value::Integer(md.atime())),
        ("mtime", Value::Integer(md.mtime())),
        ("ctime", Value::Integer(md.ctime())),
        ("type", Value::String(lua.create_string(file_type(md.mode()))?)),
        ("_mode", Value::Integer(md.mode().into())),
    ];
    let value = match field {
        None => {
            let t = lua.create_table()?;
            for (k, v) in fields {
                t.set(k, v)?;
            }
            Value::Table(t)
        }
        Some(f) => {
            let f = show(&f);
            match fields.into_iter().find(|(k, _)| *k == f) {
                Some((_, v)) => v,
                None => return Err(bad_arg(2, "stat", &format!("invalid option '{f}'"))),
            }
        }
    };
    Ok(MultiValue::from_vec(vec![value]))
}

fn p_getenv(lua: &Lua, name: Option<mlua::String>) -> mlua::Result<Value> {
    match name {
        Some(name) => match std::env::var_os(OsStr::from_bytes(&name.as_bytes())) {
            Some(v) => Ok(Value::String(lua.create_string(v.as_bytes())?)),
            None => Ok(Value::Nil),
        },
        None => {
            let t = lua.create_table()?;
            for (k, v) in std::env::vars_os() {
                t.set(lua.create_string(k.as_bytes())?, lua.create_string(v.as_bytes())?)?;
            }
            Ok(Value::Table(t))
        }
    }
}

/// What setenv(3) refuses (and std's `set_var` would panic on).
fn bad_env_name(name: &[u8]) -> bool {
    name.is_empty() || name.contains(&b'=') || name.contains(&0)
}

fn p_setenv(lua: &Lua, (name, value, overwrite): (mlua::String, mlua::String, Option<Value>)) -> Ret {
    let (name_b, value_b) = (name.as_bytes(), value.as_bytes());
    if bad_env_name(&name_b) || value_b.contains(&0) {
        return fail(lua, Some(&show(&name)), Errno::EINVAL);
    }
    let overwrite =
        matches!(overwrite, None | Some(Value::Nil)) || overwrite.is_some_and(|v| v.as_boolean() != Some(false));
    let key = OsStr::from_bytes(&name_b);
    if overwrite || std::env::var_os(key).is_none() {
        // SAFETY: `run` is documented to run in a single-threaded process, so
        // no other thread reads the environment concurrently.
        unsafe { std::env::set_var(key, OsStr::from_bytes(&value_b)) };
    }
    ok_int(0)
}

fn p_unsetenv(_: &Lua, name: mlua::String) -> mlua::Result<()> {
    let name_b = name.as_bytes();
    if !bad_env_name(&name_b) {
        // SAFETY: as in p_setenv, the process is single-threaded.
        unsafe { std::env::remove_var(OsStr::from_bytes(&name_b)) };
    }
    Ok(())
}

/// Entry names of `path` including `.` and `..`, sorted so scripts see a
/// deterministic order.
fn list_dir(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut names = vec![b".".to_vec(), b"..".to_vec()];
    for entry in std::fs::read_dir(path)? {
        names.push(entry?.file_name().as_bytes().to_vec());
    }
    names.sort();
    Ok(names)
}

fn dir_arg(path: &Option<mlua::String>) -> (PathBuf, String) {
    match path {
        Some(p) => (path_of(p), show(p)),
        None => (PathBuf::from("."), ".".to_string()),
    }
}

fn p_dir(lua: &Lua, path: Option<mlua::String>) -> Ret {
    let (p, info) = dir_arg(&path);
    match list_dir(&p) {
        Ok(names) => {
            let t = lua.create_table()?;
            for (i, n) in names.into_iter().enumerate() {
                t.raw_set(i + 1, lua.create_string(n)?)?;
            }
            Ok(MultiValue::from_vec(vec![Value::Table(t)]))
        }
        Err(e) => fail(lua, Some(&info), errno_of(&e)),
    }
}

fn p_files(lua: &Lua, path: Option<mlua::String>) -> Ret {
    let (p, info) = dir_arg(&path);
    match list_dir(&p) {
        Ok(names) => {
            let mut it = names.into_iter();
            let next = lua.create_function_mut(move |lua, ()| match it.next() {
                Some(n) => Ok(Value::String(lua.create_string(n)?)),
                None => Ok(Value::Nil),
            })?;
            Ok(MultiValue::from_vec(vec![Value::Function(next)]))
        }
        Err(e) => fail(lua, Some(&info), errno_of(&e)),
    }
}

fn p_getcwd(lua: &Lua, (): ()) -> Ret {
    match std::env::current_dir() {
        Ok(p) => Ok(MultiValue::from_vec(vec![Value::String(
            lua.create_string(p.as_os_str().as_bytes())?,
        )])),
        Err(e) => fail(lua, Some("."), errno_of(&e)),
    }
}

/// rpm's umask: takes and returns the *permitted* bits (`rwxr-xr-x` for a
/// umask of 022); a mode it cannot read gives nil.
fn p_umask(lua: &Lua, mode: Option<mlua::String>) -> mlua::Result<Value> {
    let old = nix::sys::stat::umask(Mode::empty());
    nix::sys::stat::umask(old);
    let mut allowed = !old.bits() & 0o777;
    if let Some(mode) = mode {
        let Some(new) = mode_munch(allowed, &mode.as_bytes()) else {
            return Ok(Value::Nil);
        };
        allowed = new & 0o777;
        nix::sys::stat::umask(Mode::from_bits_truncate(!allowed & 0o777));
    }
    Ok(Value::String(lua.create_string(mode_string(allowed))?))
}

fn p_fork(lua: &Lua, (): ()) -> Ret {
    // Unflushed output would otherwise be written by both processes.
    flush_stdout();
    // SAFETY: `run` is documented to run in a single-threaded process, so the
    // child may go on running arbitrary code (the interpreter) after fork.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            FORKED.store(true, AtomicOrdering::SeqCst);
            ok_int(0)
        }
        Ok(ForkResult::Parent { child }) => ok_int(child.as_raw().into()),
        Err(e) => fail(lua, None, e),
    }
}

/// execvp(3); returns only on failure.
fn p_exec(lua: &Lua, (path, rest): (mlua::String, Variadic<mlua::String>)) -> Ret {
    if !FORKED.load(AtomicOrdering::SeqCst) {
        return Err(mlua::Error::runtime("exec not permitted in this context"));
    }
    let prog = cstring(&path)?;
    let mut argv = vec![prog.clone()];
    for a in rest.iter() {
        argv.push(cstring(a)?);
    }
    flush_stdout();
    match nix::unistd::execvp(&prog, &argv) {
        Ok(never) => match never {},
        Err(e) => fail(lua, Some(&show(&path)), e),
    }
}

/// waitpid(pid or any): `pid, "exited"|"killed", status`.
fn p_wait(lua: &Lua, pid: Option<i64>) -> Ret {
    let pid = i32::try_from(pid.unwrap_or(-1)).map_err(|_| bad_arg(1, "wait", "invalid pid"))?;
    loop {
        let (p, how, code) = match nix::sys::wait::waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(p, code)) => (p, "exited", i64::from(code)),
            Ok(WaitStatus::Signaled(p, sig, _)) => (p, "killed", sig as i64),
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(e) => return fail(lua, None, e),
        };
        return Ok(MultiValue::from_vec(vec![
            Value::Integer(p.as_raw().into()),
            Value::String(lua.create_string(how)?),
            Value::Integer(code),
        ]));
    }
}

fn p_kill(lua: &Lua, (pid, sig): (i64, Option<i64>)) -> Ret {
    let pid = i32::try_from(pid).map_err(|_| bad_arg(1, "kill", "invalid pid"))?;
    let sig = i32::try_from(sig.unwrap_or(nix::libc::SIGTERM.into()))
        .ok()
        .and_then(|s| nix::sys::signal::Signal::try_from(s).ok())
        .ok_or_else(|| bad_arg(2, "kill", "invalid signal"))?;
    nix_result(lua, nix::sys::signal::kill(Pid::from_raw(pid), sig), None)
}

/// utime(path [, mtime [, atime]]), times defaulting to now.
fn p_utime(lua: &Lua, (path, mtime, atime): (mlua::String, Option<f64>, Option<f64>)) -> Ret {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let tv = |t: Option<f64>| nix::sys::time::TimeVal::new(t.map_or(now, |t| t as i64), 0);
    let r = nix::sys::stat::utimes(path_of(&path).as_path(), &tv(atime), &tv(mtime));
    nix_result(lua, r, Some(&show(&path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    use nix::sys::wait::waitpid;

    fn macros() -> Macros {
        Macros::for_arch("aarch64")
    }

    /// Runs a script that must succeed.
    fn run_ok(script: &str) {
        assert_eq!(
            run(script, "%test(arbor)", &[], &macros()),
            0,
            "script failed:\n{script}"
        );
    }

    /// A Lua string literal for `p`.
    fn lit(p: &Path) -> String {
        format!("{:?}", p.to_str().expect("temp paths are UTF-8"))
    }

    /// Runs `script` in a forked child and returns its exit code, or 100 plus
    /// `run`'s status when `run` returned instead of exiting.
    fn run_in_child(script: &str) -> i32 {
        // SAFETY: the child only runs the interpreter and then exits with
        // _exit; it never returns into the test harness.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            ForkResult::Child => {
                let status = run(script, "child", &[], &macros());
                exit_now(100 + status)
            }
            ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
                WaitStatus::Exited(_, code) => code,
                other => panic!("child ended with {other:?}"),
            },
        }
    }

    #[test]
    fn filesystem_pretrans_shape() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let script = format!(
            r#"
local R = {}
if posix.access(R .. "/usr", "f") == 0 then error("tree already populated") end
for _, d in ipairs({{"/usr", "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib64", "/var", "/run"}}) do
  assert(posix.mkdir(R .. d) == 0, d)
end
assert(posix.symlink("usr/bin", R .. "/bin") == 0)
assert(posix.symlink("usr/sbin", R .. "/sbin"))
assert(posix.symlink("usr/lib", R .. "/lib"))
assert(posix.symlink("usr/lib64", R .. "/lib64"))
assert(posix.symlink("../run", R .. "/var/run"))
assert(posix.access(R .. "/usr/bin", "rwx") == 0)
assert(posix.access(R .. "/bin/") == 0)
local ok, msg, errno = posix.mkdir(R .. "/usr")
assert(ok == nil and errno == 17 and msg:find("File exists"), msg)
return 0
"#,
            lit(tmp.path())
        );
        run_ok(&script);
        let root = tmp.path();
        for d in ["usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "var", "run"] {
            assert!(root.join(d).is_dir(), "{d}");
        }
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("var/run", "../run"),
        ] {
            assert_eq!(std::fs::read_link(root.join(link)).expect(link), Path::new(target));
        }
    }

    #[test]
    fn glibc_post_fork_exec() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let marker = tmp.path().join("marker");
        let script = format!(
            r#"
function post_exec(program, ...)
  local pid = posix.fork()
  if pid == 0 then
    posix.exec(program, ...)
    assert(nil)
  elseif pid > 0 then
    posix.wait(pid)
  end
end
post_exec("/bin/sh", "-c", "echo ran > {}")
"#,
            marker.display()
        );
        run_ok(&script);
        assert_eq!(std::fs::read_to_string(&marker).expect("marker"), "ran\n");
    }

    #[test]
    fn wait_reports_status_and_runaway_fork_exits() {
        run_ok(
            r#"
local pid = posix.fork()
if pid == 0 then posix.exec("/bin/sh", "-c", "exit 5") end
local p, how, status = posix.wait(pid)
assert(p == pid and how == "exited" and status == 5, tostring(how) .. tostring(status))
-- a child that falls off the end of the script is ended with status 1
pid = posix.fork()
if pid > 0 then
  local _, how2, status2 = posix.wait(pid)
  assert(how2 == "exited" and status2 == 1, tostring(status2))
end
"#,
        );
    }

    #[test]
    fn exec_and_redirect_need_fork() {
        assert_eq!(run("posix.exec('/bin/true')", "t", &[], &macros()), 1);
        assert_eq!(run("posix.redirect2null(2)", "t", &[], &macros()), 1);
    }

    #[test]
    fn rpm_vercmp_and_execute() {
        run_ok(
            r#"
assert(rpm.vercmp("1.0", "2.0") == -1)
assert(rpm.vercmp("2.0", "1.0") == 1)
assert(rpm.vercmp("1.0", "1.0") == 0)
assert(rpm.vercmp("1.0~rc1", "1.0") == -1)
assert(rpm.vercmp("1.0^git1", "1.0") == 1)
assert(rpm.vercmp("2:1.0-1", "1:3.0-1") == 1)
assert(rpm.vercmp("1.2-1", "2.0-1") == -1)
assert(rpm.vercmp(2, "10") == -1)
assert(not pcall(rpm.vercmp, "", "1"))
assert(not pcall(rpm.vercmp, {}, "1"))
assert(rpm.execute("/bin/sh", "-c", "exit 0") == 0)
local r, msg, code = rpm.execute("/bin/sh", "-c", "exit 3")
assert(r == nil and msg == "exit code" and code == 3)
r, msg, code = rpm.execute("/nonexistent/program")
assert(r == nil and code == 2, msg)
"#,
        );
    }

    #[test]
    fn rpm_macros() {
        run_ok(
            r#"
assert(rpm.expand("%{_libdir}/x") == "/usr/lib64/x")
assert(rpm.expand("%_bindir") == "/usr/bin")
assert(rpm.expand("100%%") == "100%")
assert(rpm.expand("a%{?nope}b") == "ab")
assert(rpm.expand("%{?_arch:yes}") == "yes")
assert(rpm.expand("%{!?nope:no}") == "no")
assert(rpm.expand("%{!?_arch:no}") == "")
assert(rpm.expand("%{?_arch}") == "aarch64")
assert(rpm.expand("%{foo} %foo") == "%{foo} %foo")
assert(rpm.isdefined("_libdir") == true)
assert(rpm.isdefined("foo") == false)
rpm.define("foo bar %{_arch}")
assert(rpm.expand("%{foo}") == "bar aarch64")
rpm.define("foo baz")
assert(rpm.expand("%foo") == "baz")
rpm.undefine("foo")
assert(rpm.expand("%foo") == "bar aarch64")
rpm.undefine("foo")
assert(select(1, rpm.isdefined("foo")) == false)
rpm.define("_prefix /opt")
assert(rpm.expand("%{_bindir}") == "/opt/bin")
rpm.define("p(a) x")
local def, param = rpm.isdefined("p")
assert(def and param)
assert(not pcall(rpm.define, "1bad x"))
assert(not pcall(rpm.define, "empty"))
rpm.define("loop %{loop}")
assert(not pcall(rpm.expand, "%{loop}"))
"#,
        );
    }

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

    #[test]
    fn stat_fields() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("f");
        std::fs::write(&file, "hello").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        std::os::unix::fs::symlink("f", tmp.path().join("l")).expect("symlink");
        let md = std::fs::metadata(&file).expect("metadata");
        let script = format!(
            r#"
local R = {}
local st = posix.stat(R .. "/f")
assert(st.mode == "rw-r-----", st.mode)
assert(st.type == "regular" and st.size == 5 and st.nlink == 1)
assert(st.uid == {} and st.gid == {} and st.ino == {})
assert(st.mtime > 0 and st.atime > 0 and st.ctime > 0 and st.dev ~= nil)
assert(st._mode == {})
assert(posix.stat(R .. "/l", "type") == "link")
assert(posix.stat(R, "type") == "directory")
assert(posix.stat("/dev/null", "type") == "character device")
assert(posix.stat(R .. "/f", "size") == 5)
assert(not pcall(posix.stat, R .. "/f", "bogus"))
local r, msg, errno = posix.stat(R .. "/missing")
assert(r == nil and errno == 2 and msg == R .. "/missing: No such file or directory", msg)
"#,
            lit(tmp.path()),
            md.uid(),
            md.gid(),
            md.ino(),
            md.mode(),
        );
        run_ok(&script);
    }

    #[test]
    fn chmod_modes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("f");
        std::fs::write(&file, "").expect("write");
        let mode = || std::fs::metadata(&file).expect("metadata").mode() & 0o7777;
        let steps: &[(&str, u32)] = &[
            ("\"0755\"", 0o755),
            ("600", 0o600),
            ("\"rwxr-x---\"", 0o750),
            ("\"u-x\"", 0o650),
            ("\"go+r\"", 0o654),
            ("\"a=rx\"", 0o555),
            ("\"u+w,o-rx\"", 0o750),
            ("\"rw-\"", 0o650),
            ("\"rwsr-xr-x\"", 0o4755),
        ];
        for (arg, want) in steps {
            run_ok(&format!("assert(posix.chmod({}, {arg}) == 0)", lit(&file)));
            assert_eq!(mode(), *want, "chmod {arg}");
        }
        for bad in ["\"0788\"", "\"u*x\"", "\"rwxrwxrwxr\"", "755.5", "{}"] {
            let script = format!("posix.chmod({}, {bad})", lit(&file));
            assert_eq!(run(&script, "t", &[], &macros()), 1, "{bad}");
        }
        run_ok(&format!(
            "local r, m, e = posix.chmod({}, '0644'); assert(r == nil and e == 2, m)",
            lit(&tmp.path().join("missing"))
        ));
    }

    #[test]
    fn mode_munch_table() {
        let cases: &[(u32, &str, Option<u32>)] = &[
            (0o644, "0755", Some(0o755)),
            (0o644, "4755", Some(0o4755)),
            (0o644, "9", None),
            (0o644, "r-x", Some(0o544)),
            (0o4755, "rwxr-xr-x", Some(0o755)),
            (0o755, "rwxr-xr-t", Some(0o1755)),
            (0o644, "+x", Some(0o755)),
            (0o755, "g=", Some(0o705)),
            (0o755, "u+s", Some(0o4755)),
            (0o644, "", None),
            (0o644, "u", None),
        ];
        for (cur, spec, want) in cases {
            assert_eq!(mode_munch(*cur, spec.as_bytes()), *want, "{spec} on {cur:o}");
        }
        assert_eq!(mode_string(0o4751), "rwxr-x--x");
    }

    #[test]
    fn failures_return_nil_message_errno() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join("full")).expect("mkdir");
        std::fs::write(tmp.path().join("full/f"), "").expect("write");
        let script = format!(
            r#"
local R = {}
local r, msg, errno = posix.mkdir(R .. "/no/deeper")
assert(r == nil and errno == 2 and msg:find("No such file or directory", 1, true), msg)
r, msg, errno = posix.access(R .. "/missing", "r")
assert(r == nil and errno == 2, msg)
r, msg, errno = posix.rmdir(R .. "/full")
assert(r == nil and errno == 39, msg)
r, msg, errno = posix.readlink(R .. "/full/f")
assert(r == nil and errno == 22, msg)
r, msg, errno = posix.unlink(R .. "/missing")
assert(r == nil and errno == 2, msg)
r, msg, errno = posix.symlink("x", R .. "/full/f")
assert(r == nil and errno == 17 and msg == "File exists", msg)
r, msg, errno = posix.dir(R .. "/missing")
assert(r == nil and errno == 2, msg)
r, msg, errno = posix.chdir(R .. "/missing")
assert(r == nil and errno == 2, msg)
r, msg, errno = posix.chown(R .. "/full/f", "no-such-user-here", nil)
assert(r == nil and errno == 22, msg)
assert(not pcall(posix.access, R, "z"))
"#,
            lit(tmp.path())
        );
        run_ok(&script);
    }

    #[test]
    fn errors_make_status_1() {
        let m = macros();
        assert_eq!(run("error('boom')", "%post(x)", &[], &m), 1);
        assert_eq!(run("this is not lua", "%post(x)", &[], &m), 1);
        assert_eq!(run("posix.mkdir({})", "%post(x)", &[], &m), 1);
        assert_eq!(run("posix.mkdir()", "%post(x)", &[], &m), 1);
        assert_eq!(run("rpm.expand(nil)", "%post(x)", &[], &m), 1);
        assert_eq!(run("posix.chown('/x', {}, 0)", "%post(x)", &[], &m), 1);
        assert_eq!(run("posix.wait(1e30)", "%post(x)", &[], &m), 1);
        assert_eq!(run("error({})", "%post(x)", &[], &m), 1);
        assert_eq!(run("return 1", "%post(x)", &[], &m), 0);
    }

    #[test]
    fn error_messages() {
        let e = Lua::new()
            .load("error('boom')")
            .set_name("%post(x)")
            .exec()
            .expect_err("fails");
        assert_eq!(error_message(&e), "[string \"%post(x)\"]:1: boom");
    }

    #[test]
    fn arg_table() {
        let script = r#"
assert(arg[1] == "<lua>")
assert(arg[2] == 1 and math.type(arg[2]) == "integer")
assert(arg[3] == 2)
assert(arg[4] == "name")
assert(#arg == 4)
assert(type(opt) == "table")
assert(require("posix") == posix and require("rpm") == rpm)
"#;
        let args = ["1", "2", "name"].map(String::from);
        assert_eq!(run(script, "%triggerin(x)", &args, &macros()), 0);
    }

    #[test]
    fn directories_links_and_times() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let script = format!(
            r#"
local R = {}
assert(posix.mkdir(R .. "/d") == 0)
local f = assert(io.open(R .. "/d/b", "w")); f:write("x"); f:close()
assert(posix.link(R .. "/d/b", R .. "/d/a") == 0)
assert(posix.symlink("b", R .. "/d/c") == 0)
assert(posix.readlink(R .. "/d/c") == "b")
local names = posix.dir(R .. "/d")
assert(table.concat(names, ",") == ".,..,a,b,c", table.concat(names, ","))
local seen = {{}}
for n in posix.files(R .. "/d") do seen[#seen + 1] = n end
assert(table.concat(seen, ",") == ".,..,a,b,c")
assert(posix.stat(R .. "/d/b", "nlink") == 2)
assert(posix.utime(R .. "/d/b", 1000000, 2000000) == 0)
assert(posix.stat(R .. "/d/b", "mtime") == 1000000)
assert(posix.stat(R .. "/d/b", "atime") == 2000000)
assert(posix.unlink(R .. "/d/a") == 0 and posix.unlink(R .. "/d/b") == 0 and posix.unlink(R .. "/d/c") == 0)
assert(posix.rmdir(R .. "/d") == 0)
assert(posix.access(R .. "/d") == nil)
assert(posix.mkfifo(R .. "/p") == 0 and posix.stat(R .. "/p", "type") == "fifo")
assert(type(posix.getcwd()) == "string")
assert(posix.getpid() > 0)
local st = posix.stat(R)
assert(posix.chown(R, st.uid, st.gid) == 0)
assert(posix.chown(R, tostring(st.uid), nil) == 0)
"#,
            lit(tmp.path())
        );
        run_ok(&script);
    }

    #[test]
    fn owner_names_from_db() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nsystemd-network:x:192:192::/:/usr/sbin/nologin\n";
        assert_eq!(id_from_db(passwd, "systemd-network"), Some(192));
        assert_eq!(id_from_db(passwd, "root"), Some(0));
        assert_eq!(id_from_db(passwd, "systemd"), None);
        assert_eq!(id_from_db("bad line\n", "bad line"), None);
    }

    #[test]
    fn os_exit_env_and_umask_in_child() {
        assert_eq!(run_in_child("io.write('x'); print('y'); os.exit(7)"), 7);
        assert_eq!(run_in_child("os.exit(false)"), 1);
        assert_eq!(run_in_child("os.exit()"), 0);
        assert_eq!(run_in_child("error('boom')"), 101);
        let script = r#"
assert(posix.setenv("ARBOR_LUA_TEST", "v") == 0)
assert(posix.getenv("ARBOR_LUA_TEST") == "v")
posix.setenv("ARBOR_LUA_TEST", "w", false)
assert(posix.getenv("ARBOR_LUA_TEST") == "v")
assert(posix.getenv().ARBOR_LUA_TEST == "v")
posix.unsetenv("ARBOR_LUA_TEST")
assert(posix.getenv("ARBOR_LUA_TEST") == nil)
assert(posix.setenv("A=B", "v") == nil)
assert(posix.umask("rwxr-x---") == "rwxr-x---")
assert(posix.umask() == "rwxr-x---")
assert(posix.umask("bogus!") == nil)
os.exit(3)
"#;
        assert_eq!(run_in_child(script), 3);
    }
}
