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

use std::ffi::{CString, OsStr};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::Result;
use mlua::{Lua, MultiValue, Table, Value};
use nix::errno::Errno;

use crate::rpm::vercmp::evrcmp;

mod macros;
mod posix;
#[cfg(test)]
mod tests;

pub use macros::Macros;
use macros::{rpm_define, rpm_expand, rpm_isdefined, rpm_undefine};
use posix::{posix_table, redirect2null, rpm_execute};

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
