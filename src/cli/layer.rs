//! Package layering verbs: `arbor install|uninstall`, `arbor override remove|replace|reset`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::device::Where;
use super::print_json;
use crate::layer::{self, Change, Outcome};

/// Settings shared by the layering verbs.
#[derive(Debug, Args, Clone)]
pub struct Layering {
    /// Run every script of the layered packages again, reusing no recorded
    /// run (rpm-ostree's behaviour; slower, never stale).
    #[arg(long)]
    pub no_memo: bool,
    /// Time limit of each script, in seconds.
    #[arg(long, default_value_t = 300)]
    pub script_timeout: u64,
    /// Parallel downloads and imports.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Layering {
    fn options(&self) -> layer::Options {
        layer::Options {
            memoize: !self.no_memo,
            script_timeout: Duration::from_secs(self.script_timeout.max(1)),
            jobs: self.jobs.max(1),
        }
    }

    fn run(&self, at: &Where, change: Change) -> Result<()> {
        let dev = at.open()?;
        let o = layer::apply_change(&dev, &change, &self.options())?;
        show(&o, self.json)
    }
}

/// Arguments of `arbor install`.
#[derive(Debug, Args)]
pub struct Install {
    /// Packages to layer: names, provides or paths resolved in the enabled
    /// repositories of the deployment's /etc/yum.repos.d, or .rpm files.
    #[arg(required = true)]
    pub packages: Vec<String>,
    #[command(flatten)]
    pub at: Where,
    #[command(flatten)]
    pub opts: Layering,
}

/// Arguments of `arbor uninstall`.
#[derive(Debug, Args)]
pub struct Uninstall {
    /// Layered packages to remove (as given to install; local RPMs by name or NEVRA).
    #[arg(required = true)]
    pub packages: Vec<String>,
    #[command(flatten)]
    pub at: Where,
    #[command(flatten)]
    pub opts: Layering,
}

/// `arbor override remove|replace|reset`.
#[derive(Debug, Subcommand)]
pub enum Override {
    /// Hide packages of the base commit (their files and rpmdb entries; their
    /// uninstall scripts do not run).
    Remove {
        /// Base package names.
        #[arg(required = true)]
        packages: Vec<String>,
        #[command(flatten)]
        at: Where,
        #[command(flatten)]
        opts: Layering,
    },
    /// Replace packages of the base commit by these .rpm files (same name).
    Replace {
        /// .rpm files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        at: Where,
        #[command(flatten)]
        opts: Layering,
    },
    /// Undo overrides: of these packages, or all of them.
    Reset {
        /// Package names [default: every override].
        packages: Vec<String>,
        #[command(flatten)]
        at: Where,
        #[command(flatten)]
        opts: Layering,
    },
}

impl Install {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        self.opts.run(&self.at, Change::Install(self.packages))
    }
}

impl Uninstall {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        self.opts.run(&self.at, Change::Uninstall(self.packages))
    }
}

impl Override {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        match self {
            Override::Remove { packages, at, opts } => opts.run(&at, Change::Remove(packages)),
            Override::Replace { files, at, opts } => opts.run(&at, Change::Replace(files)),
            Override::Reset { packages, at, opts } => opts.run(&at, Change::Reset(packages)),
        }
    }
}

fn show(o: &Outcome, json: bool) -> Result<()> {
    if json {
        return print_json(o);
    }
    if o.result == "no-change" {
        println!("nothing to change: {} is deployed", o.commit);
        return Ok(());
    }
    let what = if o.layering.is_empty() {
        "nothing layered".to_string()
    } else {
        o.layering.summary()
    };
    println!("deployed {} on base {} ({what})", o.commit, o.base);
    if let Some(b) = &o.built {
        println!(
            "  added: {}; hidden: {}; scripts run: {}, reused: {}",
            if b.added.is_empty() {
                "-".to_string()
            } else {
                b.added.join(" ")
            },
            if b.removed.is_empty() {
                "-".to_string()
            } else {
                b.removed.join(" ")
            },
            b.scripts.ran.len(),
            b.scripts.reused.len()
        );
    }
    println!("reboot to use it; `arbor rollback` goes back");
    Ok(())
}
