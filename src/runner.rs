//! The one way arbor runs external tools: the command line is logged, and a
//! failure carries the command and the tool's stderr in the error.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A command to run, recorded for logs and errors.
pub struct Tool {
    cmd: Command,
    shown: String,
    timeout: Option<Duration>,
}

impl Tool {
    /// A new invocation of `program`.
    pub fn new(program: &str) -> Tool {
        Tool {
            cmd: Command::new(program),
            shown: program.to_string(),
            timeout: None,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Tool {
        let a = a.as_ref();
        let _ = write!(self.shown, " {}", shell_quote(&a.to_string_lossy()));
        self.cmd.arg(a);
        self
    }

    /// Adds several arguments.
    pub fn args<I, S>(mut self, args: I) -> Tool
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    /// Runs in `dir`.
    pub fn current_dir(mut self, dir: &Path) -> Tool {
        self.cmd.current_dir(dir);
        self
    }

    /// Sets an environment variable for the tool.
    pub fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Tool {
        self.cmd.env(k, v);
        self
    }

    /// Kills the tool (and fails) when it runs longer than `limit`: for tools that
    /// read untrusted trees, where a loop through a symlink must not hang arbor.
    pub fn timeout(mut self, limit: Duration) -> Tool {
        self.timeout = Some(limit);
        self
    }

    /// The command line as it would be typed.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Runs to completion, returning stdout; fails with the tool's stderr.
    pub fn output(mut self) -> Result<Vec<u8>> {
        tracing::debug!(cmd = %self.shown, "running");
        self.cmd.stdin(Stdio::null());
        let out: Output = match self.timeout {
            None => self.cmd.output(),
            Some(limit) => output_within(&mut self.cmd, limit, &self.shown)?,
        }
        .with_context(|| format!("starting `{}` (is it installed? scripts/setup installs it)", self.shown))?;
        if !out.status.success() {
            // Some tools (rpmkeys) say why on stdout only.
            let said = match String::from_utf8_lossy(&out.stderr).trim() {
                "" => tail(String::from_utf8_lossy(&out.stdout).trim(), 4000),
                e => e.to_string(),
            };
            bail!("`{}` failed ({}): {said}", self.shown, out.status);
        }
        Ok(out.stdout)
    }

    /// Runs to completion, returning stdout as text.
    pub fn text(self) -> Result<String> {
        let shown = self.shown.clone();
        String::from_utf8(self.output()?).with_context(|| format!("output of `{shown}` is not UTF-8"))
    }

    /// Runs to completion, discarding stdout.
    pub fn run(self) -> Result<()> {
        self.output().map(drop)
    }
}

/// The last `max` bytes of `s` (at a character boundary), marked when cut.
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// `cmd.output()`, killing the tool at `limit`. Its output is read on threads
/// so a full pipe cannot stall it.
fn output_within(cmd: &mut Command, limit: Duration, shown: &str) -> Result<std::io::Result<Output>> {
    use std::io::Read as _;
    let mut child = match cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn std::io::Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn std::io::Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().with_context(|| format!("waiting for `{shown}`"))? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{shown}` did not finish within {} s and was killed", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }))
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_command_and_stderr() {
        let e = Tool::new("sh")
            .arg("-c")
            .arg("echo oops >&2; exit 3")
            .run()
            .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("`sh -c 'echo oops >&2; exit 3'`"), "{msg}");
        assert!(msg.contains("oops"), "{msg}");
    }

    #[test]
    fn missing_program_says_so() {
        let e = Tool::new("arbor-no-such-tool").run().unwrap_err();
        assert!(format!("{e:#}").contains("arbor-no-such-tool"));
    }

    #[test]
    fn a_tool_past_its_time_limit_is_killed_and_named() {
        let e = Tool::new("sleep")
            .arg("30")
            .timeout(Duration::from_millis(200))
            .run()
            .unwrap_err();
        assert!(format!("{e:#}").contains("`sleep 30` did not finish within"), "{e:#}");
        let out = Tool::new("sh")
            .args(["-c", "echo fine"])
            .timeout(Duration::from_secs(30))
            .text()
            .unwrap();
        assert_eq!(out, "fine\n");
    }

    #[test]
    fn stdout_is_returned() {
        assert_eq!(Tool::new("echo").arg("hi").text().unwrap(), "hi\n");
    }
}
