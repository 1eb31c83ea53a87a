//! Device verbs: `arbor status|upgrade|rollback|deploy|install`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::not_implemented;

const ISSUE: &str = "the device client issue, after images land";

/// Arguments of `arbor status`.
#[derive(Debug, Args)]
pub struct Status {
    /// The sysroot to inspect (default: the running system).
    #[arg(long, default_value = "/")]
    pub sysroot: PathBuf,
    /// Print deployments as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `arbor upgrade`.
#[derive(Debug, Args)]
pub struct Upgrade {
    /// The sysroot to upgrade (default: the running system).
    #[arg(long, default_value = "/")]
    pub sysroot: PathBuf,
    /// Only check for an update and print its download size.
    #[arg(long)]
    pub check: bool,
    /// Apply an offline bundle file instead of pulling from the remote.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
}

/// Arguments of `arbor rollback`.
#[derive(Debug, Args)]
pub struct Rollback {
    /// The sysroot (default: the running system).
    #[arg(long, default_value = "/")]
    pub sysroot: PathBuf,
}

/// Arguments of `arbor deploy`.
#[derive(Debug, Args)]
pub struct Deploy {
    /// The commit checksum or version to deploy.
    pub revision: String,
    /// The sysroot (default: the running system).
    #[arg(long, default_value = "/")]
    pub sysroot: PathBuf,
}

/// Arguments of `arbor install`.
#[derive(Debug, Args)]
pub struct Install {
    /// Packages to layer on top of the base commit.
    #[arg(required = true)]
    pub packages: Vec<String>,
    /// The sysroot (default: the running system).
    #[arg(long, default_value = "/")]
    pub sysroot: PathBuf,
}

impl Status {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        not_implemented("status", ISSUE)
    }
}
impl Upgrade {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        not_implemented("upgrade", ISSUE)
    }
}
impl Rollback {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        not_implemented("rollback", ISSUE)
    }
}
impl Deploy {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        not_implemented("deploy", ISSUE)
    }
}
impl Install {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        not_implemented("install", ISSUE)
    }
}
