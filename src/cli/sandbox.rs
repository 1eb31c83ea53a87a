//! `arbor run`: a command inside a tree, in the scriptlet sandbox.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::arch::Arch;
use crate::sandbox::{Config, Job, Limits, Sandbox};

/// Arguments of `arbor run`.
#[derive(Debug, Args)]
pub struct Run {
    /// The tree (a root filesystem directory, e.g. an `ostree checkout`).
    pub rootfs: PathBuf,
    /// The tree's arch when it has no /bin/sh to tell (its ELF machine wins otherwise).
    #[arg(long, default_value = "aarch64")]
    pub arch: Arch,
    /// Kill the command after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Write changes to an overlay and merge them into the tree by renaming
    /// (files hardlinked into a repository are never written through).
    #[arg(long)]
    pub copy_on_write: bool,
    /// Most processes (and threads) the command may have at once (a cgroup's pids.max;
    /// needs root or a delegated cgroup).
    #[arg(long, value_name = "N", default_value_t = Limits::default().pids)]
    pub max_procs: u64,
    /// Most memory in MiB the command may use, tmpfs files included (a cgroup's memory limit).
    #[arg(long, value_name = "MIB", default_value_t = Limits::default().memory >> 20)]
    pub max_memory_mib: u64,
    /// Feed this text on the command's standard input.
    #[arg(long)]
    pub stdin: Option<String>,
    /// The command and its arguments (the program must be an absolute path inside the tree).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

impl Run {
    pub(super) fn run(self) -> Result<()> {
        let mut sb = Sandbox::start(&Config {
            rootfs: self.rootfs.clone(),
            arch: self.arch,
            copy_on_write: self.copy_on_write,
            exe: None,
            layers: Vec::new(),
            limits: Limits {
                pids: self.max_procs,
                memory: self.max_memory_mib.saturating_mul(1 << 20),
            },
        })?;
        let o = sb.run(&Job {
            label: self.command.join(" "),
            program: self.command.clone(),
            stdin: self.stdin,
            timeout_ms: self.timeout.saturating_mul(1000),
            ..Job::default()
        })?;
        let changes = sb.finish()?;
        print!("{}", o.output);
        if self.copy_on_write {
            tracing::info!(
                written = changes.written.len(),
                removed = changes.removed.len(),
                "merged into the tree"
            );
        }
        if o.timed_out {
            bail!("`{}` was killed after {} s", self.command.join(" "), self.timeout);
        }
        if o.status != 0 {
            std::process::exit(o.status.clamp(1, 255));
        }
        Ok(())
    }
}
