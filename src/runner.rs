//! The one way arbor runs external tools: the command line is logged, and a
//! failure carries the command and the tool's stderr in the error.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// A command to run, recorded for logs and errors.
pub struct Tool {
    cmd: Command,
    shown: String,
}

impl Tool {
    /// A new invocation of `program`.
    pub fn new(program: &str) -> Tool {
        Tool {
            cmd: Command::new(program),
            shown: program.to_string(),
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

    /// The command line as it would be typed.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Runs to completion, returning stdout; fails with the tool's stderr.
    pub fn output(mut self) -> Result<Vec<u8>> {
        tracing::debug!(cmd = %self.shown, "running");
        let out: Output = self
            .cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("starting `{}` (is it installed? scripts/setup installs it)", self.shown))?;
        if !out.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                self.shown,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
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
    fn stdout_is_returned() {
        assert_eq!(Tool::new("echo").arg("hi").text().unwrap(), "hi\n");
    }
}
