//! Image stages 3 and 4, partitions and blobs: [`BootFiles`] → [`Partitioned`]
//! → [`Written`]. A sparse temporary file beside the output gets the board's
//! partition table and each partition's filesystem, then the board's raw
//! bootloader blobs from the tree at their offsets.

use std::os::unix::fs::FileExt;

use anyhow::{Context, Result, bail};
use tempfile::NamedTempFile;

use super::bootfiles::BootFiles;
use super::build::{Plan, derived_u32, derived_uuid};
use super::deploy::Deployed;
use super::fs::{write_ext4, write_fat};
use crate::board::{Board, Fs, PartType, PartitionTable, Placed, Role};
use crate::progress::Progress;

/// The image file with its partition table and filesystems, not yet in place.
pub(super) struct Partitioned {
    /// The deployment (the blobs are read from its tree).
    pub(super) deployed: Deployed,
    /// The image, a temporary file in the output's directory.
    pub(super) image: NamedTempFile,
}

/// The image file with every byte written and synced, not yet in place.
pub(super) struct Written {
    /// The deployment.
    pub(super) deployed: Deployed,
    /// The image, a temporary file in the output's directory.
    pub(super) image: NamedTempFile,
}

/// Creates the image file and writes the partition table and every partition.
pub(super) fn partitions(plan: &Plan, staged: BootFiles, bar: &Progress) -> Result<Partitioned> {
    let (board, seed) = (&plan.board, plan.seed.as_str());
    let tmp = tempfile::Builder::new()
        .prefix(".arbor-image-")
        .tempfile_in(&plan.out_dir)
        .with_context(|| format!("creating a temporary image in {}", plan.out_dir.display()))?;
    tmp.as_file().set_len(plan.size).context("sizing the image")?;
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .context("setting the image's mode")?;
    }
    write_table(tmp.as_file(), board, &plan.placed, plan.size, seed)?;
    bar.inc();
    // Each partition is its own region of the image and its own filesystem:
    // they are written at once (the root's mkfs.ext4 -d takes the longest),
    // and the first error in partition order is the one returned.
    let image = tmp.as_file();
    let write = |p: &Placed| -> Result<()> {
        tracing::info!(partition = %p.partition.label, fs = %p.partition.fs, mib = p.size >> 20, "writing");
        let label = &p.partition.label;
        let id = &plan.ids[label];
        match (p.partition.role, p.partition.fs) {
            (Role::Firmware, Fs::Vfat) => write_fat(
                image,
                p.start,
                p.size,
                label,
                derived_u32(seed, label),
                &staged.fat_files,
            )?,
            (Role::Boot, Fs::Ext4) => write_ext4(
                tmp.path(),
                p.start,
                p.size,
                label,
                id,
                &staged.boot_source,
                plan.timestamp,
            )?,
            (Role::Root, Fs::Ext4) => write_ext4(
                tmp.path(),
                p.start,
                p.size,
                label,
                id,
                &staged.deployed.root_dir,
                plan.timestamp,
            )?,
            (role, fs) => bail!("board {}: a {role} partition on {fs} is not supported", board.name),
        }
        bar.message(&format!(
            "{} partition {} ({}) written",
            p.partition.fs, p.partition.label, p.partition.role
        ));
        bar.inc();
        Ok(())
    };
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let running: Vec<_> = plan.placed.iter().map(|p| scope.spawn(move || write(p))).collect();
        running
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("writing a partition panicked")))
            })
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(Partitioned {
        deployed: staged.deployed,
        image: tmp,
    })
}

/// Writes the board's raw bootloader blobs, read from the tree, at their offsets.
pub(super) fn blobs(plan: &Plan, disk: Partitioned) -> Result<Written> {
    let board = &plan.board;
    for b in &board.blobs {
        let data = disk
            .deployed
            .tree
            .read(&b.from, b.size)
            .with_context(|| format!("board {}: reading blob {}", board.name, b.from))?
            .with_context(|| format!("board {}: blob {} is not in the tree", board.name, b.from))?;
        disk.image
            .as_file()
            .write_all_at(&data, b.offset)
            .with_context(|| format!("writing blob {}", b.from))?;
    }
    disk.image.as_file().sync_all().context("syncing the image")?;
    crate::failpoint::hit("image::partitions-written")?;
    Ok(Written {
        deployed: disk.deployed,
        image: disk.image,
    })
}

/// Writes the board's partition table (MBR, or GPT with its backup at the end).
fn write_table(file: &std::fs::File, board: &Board, placed: &[Placed], size: u64, seed: &str) -> Result<()> {
    let pieces: Vec<(u64, Vec<u8>)> = match board.partition_table {
        PartitionTable::Mbr => {
            let parts: Vec<super::mbr::MbrPart> = placed
                .iter()
                .map(|p| {
                    Ok(super::mbr::MbrPart {
                        start: p.start,
                        size: p.size,
                        kind: match p.partition.kind {
                            PartType::Mbr(b) => b,
                            PartType::Gpt(_) => bail!("partition {} has a GPT type on an MBR board", p.partition.label),
                        },
                        bootable: p.partition.bootable,
                    })
                })
                .collect::<Result<_>>()?;
            vec![(0, super::mbr::encode(derived_u32(seed, "disk"), &parts)?.to_vec())]
        }
        PartitionTable::Gpt => {
            let parts: Vec<super::gpt::GptPart> = placed
                .iter()
                .map(|p| {
                    Ok(super::gpt::GptPart {
                        start: p.start,
                        size: p.size,
                        type_guid: match &p.partition.kind {
                            PartType::Gpt(g) => g.clone(),
                            PartType::Mbr(_) => bail!("partition {} has an MBR type on a GPT board", p.partition.label),
                        },
                        guid: derived_uuid(seed, &format!("partition {}", p.partition.label)),
                        name: p.partition.label.clone(),
                        bootable: p.partition.bootable,
                    })
                })
                .collect::<Result<_>>()?;
            super::gpt::encode(&derived_uuid(seed, "disk"), size, &parts)?
        }
    };
    for (offset, bytes) in pieces {
        file.write_all_at(&bytes, offset)
            .context("writing the partition table")?;
    }
    Ok(())
}
