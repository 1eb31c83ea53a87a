//! `arbor keygen|sign|verify|delta|publish|bundle`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::not_implemented;

const ISSUE: &str = "issue #6, signing, deltas and publishing";

/// Arguments of `arbor keygen`.
#[derive(Debug, Args)]
pub struct Keygen {
    /// Where to write the secret key (base64, mode 0600); the public key goes to FILE.pub.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Arguments of `arbor sign`.
#[derive(Debug, Args)]
pub struct Sign {
    /// The OSTree repository.
    #[arg(long)]
    pub repo: PathBuf,
    /// The ed25519 secret key file.
    #[arg(long)]
    pub key: PathBuf,
    /// Commit checksum or ref to sign.
    pub commit: String,
}

/// Arguments of `arbor verify`.
#[derive(Debug, Args)]
pub struct Verify {
    /// The OSTree repository.
    #[arg(long)]
    pub repo: PathBuf,
    /// A public key file or a directory of them; any one trusted key suffices.
    #[arg(long)]
    pub keys: PathBuf,
    /// Commit checksum or ref to verify.
    pub commit: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `arbor delta`.
#[derive(Debug, Args)]
pub struct Delta {
    /// The OSTree repository.
    #[arg(long)]
    pub repo: PathBuf,
    /// The ref to generate deltas for.
    pub r#ref: String,
    /// Generate deltas from this many previous commits, or from this commit.
    #[arg(long)]
    pub from: Option<String>,
}

/// Arguments of `arbor publish`.
#[derive(Debug, Args)]
pub struct Publish {
    /// The OSTree repository to publish from.
    #[arg(long)]
    pub repo: PathBuf,
    /// The directory to write the static repository into.
    #[arg(long)]
    pub to: PathBuf,
}

/// Bundle verbs.
#[derive(Debug, Subcommand)]
pub enum Bundle {
    /// Write a single-file offline update from one commit to another.
    Create(BundleCreate),
    /// Check a bundle's signatures without applying it.
    Verify(BundleVerify),
}

/// Arguments of `arbor bundle create`.
#[derive(Debug, Args)]
pub struct BundleCreate {
    /// The OSTree repository.
    #[arg(long)]
    pub repo: PathBuf,
    /// The commit devices have now.
    #[arg(long)]
    pub from: String,
    /// The commit to update them to.
    #[arg(long)]
    pub to: String,
    /// The bundle file to write.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Arguments of `arbor bundle verify`.
#[derive(Debug, Args)]
pub struct BundleVerify {
    /// The bundle file.
    pub file: PathBuf,
    /// A public key file or a directory of them.
    #[arg(long)]
    pub keys: PathBuf,
}

impl Keygen {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        not_implemented("keygen", ISSUE)
    }
}
impl Sign {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        not_implemented("sign", ISSUE)
    }
}
impl Verify {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        not_implemented("verify", ISSUE)
    }
}
impl Delta {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        not_implemented("delta", ISSUE)
    }
}
impl Publish {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        not_implemented("publish", ISSUE)
    }
}
impl Bundle {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        not_implemented("bundle", ISSUE)
    }
}
