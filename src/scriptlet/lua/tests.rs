//! Scriptlets run through `run`, as rpm runs them: the `posix` and `rpm`
//! tables, `arg`, `os.exit` and error statuses seen from a script.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use mlua::Lua;

use super::{Macros, error_message, exit_now, run};

fn macros() -> Macros {
    Macros::for_arch("aarch64")
}

/// Runs a script that must succeed (in a child process: see [`run_in_child`]).
fn run_ok(script: &str) {
    let (code, stderr) = child(script);
    assert_eq!(code, 100, "script failed:\n{script}\n{stderr}");
}

/// A Lua string literal for `p`.
fn lit(p: &Path) -> String {
    format!("{:?}", p.to_str().expect("temp paths are UTF-8"))
}

/// The variable that makes [`child_entry`] run a script.
const CHILD_SCRIPT: &str = "ARBOR_LUA_TEST_CHILD_SCRIPT";

/// Runs `script` in a fresh process — this test binary, running only
/// [`child_entry`] — and returns its exit code, or 100 plus `run`'s status when
/// `run` returned instead of exiting. Scripts fork, exec and exit; forking
/// inside the multi-threaded test harness could leave the child waiting forever
/// on a lock (stdout) another test thread held at that moment.
fn run_in_child(script: &str) -> i32 {
    child(script).0
}

fn child(script: &str) -> (i32, String) {
    let out = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "scriptlet::lua::tests::child_entry",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_SCRIPT, script)
        .output()
        .expect("running the test binary");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match out.status.code() {
        Some(c) => (c, stderr),
        None => panic!("the child ended with {:?}:\n{stderr}", out.status),
    }
}

/// Not a test of its own: the entry point of [`run_in_child`]'s processes.
#[test]
fn child_entry() {
    if let Ok(script) = std::env::var(CHILD_SCRIPT) {
        let status = run(&script, "%test(arbor)", &[], &macros());
        exit_now(100 + status)
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
