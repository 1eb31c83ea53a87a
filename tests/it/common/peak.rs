//! Running a child process under watch: its peak memory (the kernel's
//! `ru_maxrss`, as GNU time reports it for that command alone), its output capped while
//! it is read, and a generous kill-timeout so a hang fails the test instead
//! of stalling it. A data-size limit keeps a regression from taking the
//! shared machine's memory with it: the child fails instead.

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
    /// Total bytes it wrote to stderr.
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

/// Runs `cmd` (stdin empty) under GNU time, killing it after `timeout`.
/// (`ru_maxrss` of a child forked from this process starts at this
/// process's own peak: the kernel keeps the hiwater mark of the image that
/// exec replaced. GNU time is small when it forks, so what it reports is the
/// command's own.)
pub fn watch(cmd: &mut Command, timeout: Duration) -> Watched {
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f").arg("%M").arg("-o").arg(report.path());
    c.arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        c.pre_exec(|| {
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
    #[allow(clippy::disallowed_methods)] // its own kill-timeout, below
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("starting {c:?} (GNU time must be installed at /usr/bin/time): {e}"));
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if !timed_out && start.elapsed() > timeout {
            timed_out = true;
            // The whole group: time and the command it runs.
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, _) = out.join().unwrap();
    let (stderr, stderr_len) = err.join().unwrap();
    let text = std::fs::read_to_string(report.path()).unwrap_or_default();
    // "Command terminated by signal N" (or "exited with non-zero status"), then %M in KiB.
    let signal = text
        .lines()
        .find_map(|l| l.strip_prefix("Command terminated by signal "))
        .and_then(|n| n.trim().parse().ok());
    let peak_kib: u64 = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| {
            assert!(timed_out, "no peak memory from GNU time: {text:?}");
            0
        });
    Watched {
        code: if signal.is_some() { None } else { status.code() },
        signal,
        peak: peak_kib * 1024,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        stderr_len,
        timed_out,
    }
}
