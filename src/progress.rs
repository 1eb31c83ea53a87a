//! Progress reporting: bars on a terminal, nothing otherwise (logs go to stderr
//! through `tracing`; programs use `--json` output).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar that is hidden unless stderr is a terminal.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar counting `len` steps of `what`.
    pub fn bar(len: u64, what: &str) -> Progress {
        let bar = if std::io::stderr().is_terminal() && std::env::var_os("ARBOR_NO_PROGRESS").is_none() {
            let b = ProgressBar::new(len);
            let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            b.set_style(style);
            b
        } else {
            ProgressBar::hidden()
        };
        bar.set_prefix(what.to_string());
        Progress { bar }
    }

    /// Shows what is being worked on.
    pub fn message(&self, msg: &str) {
        self.bar.set_message(msg.to_string());
    }

    /// One step done.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// `n` more steps (bytes, for byte-counting bars) done.
    pub fn inc_by(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
