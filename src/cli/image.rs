//! `arbor image` and `arbor flash`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::not_implemented;

const ISSUE: &str = "issue #7, boards and images";

/// Arguments of `arbor image`.
#[derive(Debug, Args)]
pub struct Image {
    /// The OSTree repository holding the commit.
    #[arg(long)]
    pub repo: PathBuf,
    /// The ref or commit to deploy into the image.
    #[arg(long = "ref")]
    pub r#ref: String,
    /// Board name (a file in boards/) or path to a board TOML file.
    #[arg(long)]
    pub board: String,
    /// The image file to write.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Arguments of `arbor flash`.
#[derive(Debug, Args)]
pub struct Flash {
    /// The image file to write.
    pub image: PathBuf,
    /// The block device to write to (for example /dev/mmcblk0).
    pub device: PathBuf,
}

impl Image {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        not_implemented("image", ISSUE)
    }
}
impl Flash {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        not_implemented("flash", ISSUE)
    }
}
