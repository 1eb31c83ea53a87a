//! Image stage 2, bootloader files: [`Deployed`] → [`BootFiles`]. The board's
//! files are rendered from the BLS entries libostree wrote and placed where the
//! board reads them: the firmware partition's (with the board's firmware from
//! the tree), /boot or the root filesystem. /boot is moved aside when it is its
//! own partition, and every staged file gets the commit's time.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::build::Plan;
use super::deploy::Deployed;
use super::fs::{FatSource, clamp_times};
use super::tree::Tree;
use crate::board::{Board, Role};
use crate::progress::Progress;

/// The staging directory ready to become filesystems.
pub(super) struct BootFiles {
    /// The deployment (the root filesystem's contents are under its `root_dir`).
    pub(super) deployed: Deployed,
    /// The firmware partition's files: rendered configs, then the board's firmware.
    pub(super) fat_files: Vec<(String, FatSource)>,
    /// The /boot partition's contents (moved there only when the board has one).
    pub(super) boot_source: PathBuf,
}

/// Renders the board's bootloader files and stages every partition's contents.
pub(super) fn bootloader_files(plan: &Plan, deployed: Deployed, bar: &Progress) -> Result<BootFiles> {
    let board = &plan.board;
    bar.message("bootloader files");
    // Bootloader files from the BLS entries libostree wrote.
    let root_dir = &deployed.root_dir;
    let boot_dir = root_dir.join("boot");
    let entries = crate::bootloader::read_entries(&boot_dir)?;
    let rendered = crate::bootloader::render(board, &entries, board.boot_prefix(), None)?;
    let mut fat_files: Vec<(String, FatSource)> = Vec::new();
    if board.boot_counting.is_some() {
        // Created here, so U-Boot's `save` only ever rewrites it in place.
        fat_files.push((
            crate::bootloader::STATE_FILE.to_string(),
            FatSource::Bytes(crate::bootloader::state_blob(None)?),
        ));
    }
    for f in rendered {
        match f.role {
            Role::Firmware => fat_files.push((f.path.clone(), FatSource::Bytes(f.content))),
            Role::Boot | Role::Root => {
                let base = if f.role == Role::Boot || board.partition(Role::Boot).is_none() {
                    boot_dir.clone()
                } else {
                    root_dir.clone()
                };
                crate::atomic::write_beneath(&base, f.path.trim_start_matches('/'), &f.content)?;
            }
        }
    }
    fat_files.extend(firmware_files(board, &deployed.tree)?);

    // /boot is its own partition: the root filesystem keeps an empty mount point.
    let staging = deployed.staging.path();
    let boot_source = staging.join("boot");
    if board.partition(Role::Boot).is_some() {
        std::fs::rename(&boot_dir, &boot_source).context("moving /boot aside for its own partition")?;
        std::fs::create_dir(&boot_dir).context("creating the /boot mount point")?;
    }
    clamp_times(staging, plan.timestamp)?;
    Ok(BootFiles {
        deployed,
        fat_files,
        boot_source,
    })
}

/// The board's firmware files, resolved inside the deployed tree.
fn firmware_files(board: &Board, tree: &Tree) -> Result<Vec<(String, FatSource)>> {
    let mut out = Vec::new();
    for f in &board.firmware {
        let matches = if f.is_glob() {
            tree.glob(&f.from)
                .with_context(|| format!("board {}: firmware {}", board.name, f.from))?
        } else {
            vec![f.from.clone()]
        };
        let mut opened = Vec::new();
        for m in matches {
            if let Some((file, _)) = tree
                .open_file(&m)
                .with_context(|| format!("board {}: firmware {}", board.name, f.from))?
            {
                opened.push((m, file));
            }
        }
        if opened.is_empty() {
            if f.optional {
                tracing::info!(board = %board.name, file = %f.from, "optional firmware file not in the tree");
                continue;
            }
            match &f.package {
                Some(p) => bail!(
                    "board {}: firmware file {} is not in the tree: add the package {p} to the treefile's packages",
                    board.name,
                    f.from
                ),
                None => bail!(
                    "board {}: firmware file {} is not in the tree (add the package that ships it, or mark it optional)",
                    board.name,
                    f.from
                ),
            }
        }
        for (m, file) in opened {
            let name = m.rsplit('/').next().unwrap_or_default();
            out.push((f.dest(name), FatSource::File(std::sync::Arc::new(file))));
        }
    }
    Ok(out)
}
