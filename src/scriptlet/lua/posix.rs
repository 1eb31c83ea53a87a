//! The `posix` table as rpm bundles it (rpmio/lposix.c): files, processes,
//! the environment and owner names from the tree's passwd and group files.
//! Also `rpm.execute` and `rpm.redirect2null`, which start or prepare
//! processes as `posix.fork` and `posix.exec` do.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use mlua::{Lua, MultiValue, Table, Value, Variadic};
use nix::errno::Errno;
use nix::sys::stat::Mode;
use nix::sys::wait::WaitStatus;
use nix::unistd::{AccessFlags, ForkResult, Pid};

use super::{
    Ret, bad_arg, cstring, errno_of, fail, fail_msg, flush_stdout, io_result, nix_result, ok_int, path_of, show,
};

/// Set in a child made by `posix.fork()`: rpm allows `exec` and
/// `redirect2null` only there.
static FORKED: AtomicBool = AtomicBool::new(false);

pub(super) fn posix_table(lua: &Lua) -> mlua::Result<Table> {
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
    // rustix rather than nix's utimes: its times are 64-bit on 32-bit targets too.
    let ts = |t: Option<f64>| rustix::fs::Timespec {
        tv_sec: t.map_or(now, |t| t as i64),
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: ts(atime),
        last_modification: ts(mtime),
    };
    let r = rustix::fs::utimensat(
        rustix::fs::CWD,
        path_of(&path).as_path(),
        &times,
        rustix::fs::AtFlags::empty(),
    );
    io_result(lua, r.map_err(Into::into), Some(&show(&path)))
}

// ---------------------------------------------------------------------------
// rpm.execute and rpm.redirect2null

/// rpm ≥ 4.18: `0` when the command exits 0, else `nil, "exit code", code`,
/// `nil, "exit signal", signal`, or `nil, strerror, errno` when it could not
/// be started. The command is looked up in `PATH`.
pub(super) fn rpm_execute(lua: &Lua, (file, rest): (mlua::String, Variadic<mlua::String>)) -> Ret {
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

pub(super) fn redirect2null(lua: &Lua, fd: i64) -> Ret {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn owner_names_from_db() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nsystemd-network:x:192:192::/:/usr/sbin/nologin\n";
        assert_eq!(id_from_db(passwd, "systemd-network"), Some(192));
        assert_eq!(id_from_db(passwd, "root"), Some(0));
        assert_eq!(id_from_db(passwd, "systemd"), None);
        assert_eq!(id_from_db("bad line\n", "bad line"), None);
    }
}
