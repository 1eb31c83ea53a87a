//! `arbor compose …` and `arbor treefile …`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::not_implemented;
use crate::arch::Arch;

/// Compose verbs.
#[derive(Debug, Subcommand)]
pub enum Compose {
    /// Resolve a treefile's package set for a target arch and print it (optionally download it).
    Resolve(Resolve),
    /// Compose a treefile into an OSTree commit.
    Tree(Tree),
}

/// Arguments of `arbor compose resolve`.
#[derive(Debug, Args)]
pub struct Resolve {
    /// The rpm-ostree treefile (YAML or JSON).
    pub treefile: PathBuf,
    /// Target architecture (aarch64, armv7hl, x86_64); not the build host's.
    #[arg(long, default_value = "aarch64")]
    pub arch: Arch,
    /// Print the resolved set as JSON.
    #[arg(long)]
    pub json: bool,
    /// Download the resolved packages into the cache, verifying checksums.
    #[arg(long)]
    pub download: bool,
}

/// Arguments of `arbor compose tree`.
#[derive(Debug, Args)]
pub struct Tree {
    /// The rpm-ostree treefile (YAML or JSON).
    pub treefile: PathBuf,
    /// The OSTree repository to commit into.
    #[arg(long)]
    pub repo: PathBuf,
    /// Target architecture (aarch64, armv7hl, x86_64).
    #[arg(long, default_value = "aarch64")]
    pub arch: Arch,
    /// Sign the commit with this ed25519 secret key as the last step.
    #[arg(long)]
    pub sign_key: Option<PathBuf>,
}

impl Compose {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        match self {
            Compose::Resolve(_) => not_implemented("compose resolve", "issue #3, compose part 1"),
            Compose::Tree(_) => not_implemented("compose tree", "issue #4, compose part 2"),
        }
    }
}

/// Treefile verbs.
#[derive(Debug, Subcommand)]
pub enum TreefileCmd {
    /// Print the fully resolved treefile (includes merged, variables substituted) as JSON.
    Show(Show),
}

/// Arguments of `arbor treefile show`.
#[derive(Debug, Args)]
pub struct Show {
    /// The rpm-ostree treefile (YAML or JSON).
    pub treefile: PathBuf,
    /// Target architecture for arch-include and `${basearch}`.
    #[arg(long, default_value = "aarch64")]
    pub arch: Arch,
}

impl TreefileCmd {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        match self {
            TreefileCmd::Show(_) => not_implemented("treefile show", "issue #3, compose part 1"),
        }
    }
}
