//! Running a child process under watch: its peak memory (the kernel's
//! `ru_maxrss` from `wait4`, for that child alone), its output capped while
//! it is read, and a generous kill-timeout so a hang fails the test instead
//! of stalling it. A data-size limit keeps a regression from taking the
//! shared machine's memory with it: the child fails instead.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Peak memory every hostile input must stay under.
pub const LIMIT: u64 = 100 << 20;

/// The child's heap may not grow past this (RLIMIT_DATA): a regression then
/// fails the child fast instead of swapping the machine.
const DATA_LIMIT: u64 = 1 << 30;

/// Bytes of stdout and stderr kept; the rest is counted only.
const KEPT: usize = 1 << 20;

/// What a watched child did.
#[derive(Debug)]
pub struct Watched {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Signal that ended it, if any.
    pub signal: Option<i32>,
    /// Peak resident memory in bytes.
    pub peak: u64,
    /// The first [`KEPT`] bytes of stdout and stderr (lossy UTF-8).
    pub stdout: String,
    pub stderr: String,
    /// Total bytes it wrote to stdout and stderr.
    pub stdout_len: u64,
    pub stderr_len: u64,
    /// Whether it was killed for running past the timeout.
    pub timed_out: bool,
}

impl Watched {
    /// Prints what the test measured, and asserts the peak is under [`LIMIT`].
    pub fn check_peak(&self, what: &str) {
        eprintln!(
            "{what}: peak memory {:.1} MiB (exit {:?}, signal {:?}, stderr {} bytes)",
            self.peak as f64 / (1 << 20) as f64,
            self.code,
            self.signal,
            self.stderr_len
        );
        assert!(
            !self.timed_out,
            "{what}: killed after the timeout (a hang)\n{}",
            self.stderr
        );
        assert!(
            self.peak < LIMIT,
            "{what}: peak memory {} bytes, over {LIMIT}\nstderr: {}",
            self.peak,
            self.stderr.chars().take(2000).collect::<String>()
        );
        assert!(
            self.stderr_len < 64 << 10,
            "{what}: wrote {} bytes to stderr: unbounded input echoed?",
            self.stderr_len
        );
    }
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<(Vec<u8>, u64)> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    total += n as u64;
                    let room = KEPT.saturating_sub(kept.len()).min(n);
                    kept.extend_from_slice(&buf[..room]);
                }
            }
        }
        (kept, total)
    })
}

/// Runs `cmd` (stdin empty), killing it after `timeout`.
#[allow(clippy::zombie_processes)] // reaped by wait4, which std's Child does not know of
pub fn watch(cmd: &mut Command, timeout: Duration) -> Watched {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: DATA_LIMIT,
                rlim_max: DATA_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let mut timed_out = false;
    let mut status: libc::c_int = 0;
    // SAFETY: a zeroed rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own child, not reaped by anyone else (std's
        // Child is never waited on); the pointers are to live locals.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
        if r == pid {
            break;
        }
        if !timed_out && start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (stdout, stdout_len) = out.join().unwrap();
    let (stderr, stderr_len) = err.join().unwrap();
    let exited = libc::WIFEXITED(status);
    let signaled = libc::WIFSIGNALED(status);
    Watched {
        code: exited.then(|| libc::WEXITSTATUS(status)),
        signal: signaled.then(|| libc::WTERMSIG(status)),
        // Linux reports ru_maxrss in KiB.
        peak: usage.ru_maxrss as u64 * 1024,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        stdout_len,
        stderr_len,
        timed_out,
    }
}
