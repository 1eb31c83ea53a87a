//! Every process a test starts runs under a deadline, so a hang (a broken
//! kill path, a child waiting on a pipe nobody closes) fails the test that
//! caused it, naming the command, instead of stalling the whole suite. Past
//! the deadline the process's group is killed: the command runs in a group of
//! its own, so the tools and helpers it started go with it.
//!
//! The deadline detects hangs, it measures nothing: 20 minutes by default
//! (booting an image under qemu's emulation on a busy machine takes minutes),
//! `ARBOR_TEST_TIMEOUT_SECS` to change it. `Command::output`, `status` and
//! `spawn`, which wait without one, are disallowed in this crate (clippy.toml).

use std::io::{self, Read};
use std::ops::{Deref, DerefMut};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The deadline when `ARBOR_TEST_TIMEOUT_SECS` is not set.
const DEFAULT: Duration = Duration::from_secs(20 * 60);

/// How long a test's process may run: `ARBOR_TEST_TIMEOUT_SECS`, else 20 minutes.
pub fn timeout() -> Duration {
    match std::env::var("ARBOR_TEST_TIMEOUT_SECS") {
        Ok(s) => Duration::from_secs(
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("ARBOR_TEST_TIMEOUT_SECS={s:?} is not a number of seconds")),
        ),
        Err(_) => DEFAULT,
    }
}

/// [`Command`]'s ways of running a process, under the deadline.
pub trait Deadline {
    /// [`Command::output`] under the deadline: stdin empty, stdout and stderr
    /// captured (over whatever the command had set for them).
    fn timed_output(&mut self) -> io::Result<Output>;
    /// [`Command::status`] under the deadline: stdio as the command sets it, else inherited.
    fn timed_status(&mut self) -> io::Result<ExitStatus>;
    /// [`Command::spawn`]; the deadline runs from now, and [`Timed`]'s waits keep it.
    fn timed_spawn(&mut self) -> io::Result<Timed>;
}

impl Deadline for Command {
    fn timed_output(&mut self) -> io::Result<Output> {
        self.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        self.timed_spawn()?.wait_with_output()
    }

    fn timed_status(&mut self) -> io::Result<ExitStatus> {
        self.timed_spawn()?.wait()
    }

    fn timed_spawn(&mut self) -> io::Result<Timed> {
        let limit = timeout();
        // A group of its own, to kill it with everything it started. Outside the
        // terminal's group a ^C no longer reaches it, so it dies with the test's
        // thread instead (that setting is dropped when it changes its uid, as under setpriv).
        self.process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            self.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        #[allow(clippy::disallowed_methods)] // the one place: the deadline starts here
        let child = self.spawn()?;
        Ok(Timed {
            child,
            what: format!("{self:?}"),
            limit,
            deadline: Instant::now() + limit,
        })
    }
}

/// A child process with a deadline. It derefs to its [`Child`] (stdin,
/// stdout, `try_wait`, `kill`); its own `wait` and `wait_with_output` keep the
/// deadline.
pub struct Timed {
    child: Child,
    /// The command, for the message.
    what: String,
    limit: Duration,
    deadline: Instant,
}

impl Timed {
    /// Waits for the process to exit; past the deadline, kills its group and panics.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            // A process that try_wait has not reaped keeps its pid, so the group
            // killed below is still its own.
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= self.deadline {
                let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                let _ = self.child.kill(); // in case it left the group
                let _ = self.child.wait();
                panic!(
                    "still running after {}s, the test timeout (ARBOR_TEST_TIMEOUT_SECS); killed its \
                     process group: {}",
                    self.limit.as_secs(),
                    self.what
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Child::wait_with_output`] under the deadline: reads stdout and stderr
    /// (where they are piped) while it waits.
    pub fn wait_with_output(mut self) -> io::Result<Output> {
        drop(self.child.stdin.take());
        let stdout = self.child.stdout.take().map(drain);
        let stderr = self.child.stderr.take().map(drain);
        let status = self.wait()?;
        // It has exited; something it left running may still hold its output open.
        for h in [&stdout, &stderr].into_iter().flatten() {
            while !h.is_finished() {
                assert!(
                    Instant::now() < self.deadline,
                    "exited, but what it started still held its output open after {}s, the test \
                     timeout (ARBOR_TEST_TIMEOUT_SECS): {}",
                    self.limit.as_secs(),
                    self.what
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let collect = |h: Option<JoinHandle<io::Result<Vec<u8>>>>| match h {
            Some(h) => h.join().expect("reading the child's output"),
            None => Ok(Vec::new()),
        };
        Ok(Output {
            status,
            stdout: collect(stdout)?,
            stderr: collect(stderr)?,
        })
    }
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<io::Result<Vec<u8>>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        r.read_to_end(&mut v)?;
        Ok(v)
    })
}

impl Deref for Timed {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for Timed {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

/// In a child process only (`ARBOR_TEST_DEADLINE_PIDFILE` set): a shell that
/// waits on a background job for longer than the deadline the parent gave.
#[test]
fn child_runs_past_its_deadline() {
    let Some(pidfile) = std::env::var_os("ARBOR_TEST_DEADLINE_PIDFILE") else {
        return;
    };
    let out = Command::new("sh")
        .args(["-c", "sleep 600 & echo $! > \"$0\"; wait"])
        .arg(pidfile)
        .timed_output();
    panic!("the deadline let it finish: {out:?}");
}

#[test]
fn a_command_past_the_deadline_fails_its_test_and_its_group_is_killed() {
    let t = tempfile::tempdir().unwrap();
    let pidfile = t.path().join("pid");
    let name = super::test_name(module_path!(), "child_runs_past_its_deadline");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env("ARBOR_TEST_TIMEOUT_SECS", "1")
        .env("ARBOR_TEST_DEADLINE_PIDFILE", &pidfile)
        .timed_output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("still running after 1s, the test timeout (ARBOR_TEST_TIMEOUT_SECS)")
            && text.contains("sleep 600 &"),
        "the panic names the timeout and the command:\n{text}"
    );
    // The background job was in the shell's group: killed with it (gone, or a
    // zombie until init reaps it).
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let stat = Path::new("/proc").join(pid.trim()).join("stat");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::read_to_string(&stat) {
            Err(_) => break,
            Ok(s) if s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')) => break,
            Ok(s) => assert!(Instant::now() < end, "the background job still runs: {s}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
