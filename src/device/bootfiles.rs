//! Re-rendering the board's bootloader files on a device after libostree has
//! written a new set of boot entries, with the same renderers as `arbor image`.
//!
//! Order is what keeps a power cut harmless: libostree writes the new
//! deployment, its kernel, initramfs and device trees and swaps its boot
//! entries (all fsynced) first; only then is each file the bootloader reads
//! replaced, by write-temp, fsync, rename, fsync of the directory; files of
//! deployments that left the entries are removed last (`Sysroot::cleanup`).
//! Killed anywhere, the bootloader's file names either the old set of
//! deployments (whose files are all still there) or the new one.
//!
//! FAT has no atomic rename, but a directory entry is 32 bytes in one sector.
//! Files on the firmware partition are rewritten only when their content
//! changes (config.txt never changes between deployments of one board;
//! cmdline.txt only with the kernel arguments, and U-Boot's extlinux.conf
//! overrides it). Mounted, the new content is complete and fsynced under a
//! temporary name before the rename: Linux's vfat rename onto an existing
//! name rewrites the target's entry in place to point at the new clusters
//! (`vfat_rename`: `fat_attach(old_inode, new_i_pos)`), then removes the
//! temporary entry. Unmounted (`--firmware-partition`), arbor makes that
//! same one-entry swap itself with ordered, synced writes ([`super::fat`]),
//! and a test cuts the power after every one of them.

use std::path::Path;

use anyhow::{Context, Result};

use super::{Device, Firmware};
use crate::board::Role;

/// What was written.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Rendered {
    /// Files replaced (host paths).
    pub written: Vec<String>,
    /// Files already up to date.
    pub unchanged: Vec<String>,
    /// Files skipped, with why.
    pub skipped: Vec<String>,
}

/// Renders the board's files for the boot entries now in `/boot` and puts
/// each in place when its content changed.
pub fn render(dev: &Device) -> Result<Rendered> {
    let root = dev.sysroot.path();
    let boot_dir = root.join("boot");
    let entries = crate::bootloader::read_entries(&boot_dir)?;
    let files = crate::bootloader::render(&dev.board, &entries, dev.board.boot_prefix())?;
    let mut out = Rendered::default();
    for f in files {
        let base = match f.role {
            Role::Boot => boot_dir.clone(),
            Role::Root => root.to_path_buf(),
            Role::Firmware => match &dev.firmware {
                Some(Firmware::Mounted(d)) => d.clone(),
                Some(Firmware::Partition(p)) => {
                    let shown = format!("{}:{}", p.display(), f.path);
                    if in_partition(p, &f.path, f.content.as_bytes())? {
                        out.written.push(shown);
                    } else {
                        out.unchanged.push(shown);
                    }
                    continue;
                }
                None => {
                    out.skipped.push(format!(
                        "{} (the firmware partition is not mounted at {} and no --firmware-partition was given)",
                        f.path,
                        root.join("boot/firmware").display()
                    ));
                    continue;
                }
            },
        };
        let dest = base.join(&f.path);
        if std::fs::read(&dest).is_ok_and(|old| old == f.content.as_bytes()) {
            out.unchanged.push(dest.display().to_string());
            continue;
        }
        crate::failpoint::hit("device::bootfile")?;
        write(&base, &f.path, f.content.as_bytes())?;
        out.written.push(dest.display().to_string());
    }
    Ok(out)
}

/// Puts a file on the unmounted firmware partition `dev` (power-cut safe,
/// see [`super::fat`]); true when it changed.
fn in_partition(dev: &Path, name: &str, content: &[u8]) -> Result<bool> {
    let mut disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .with_context(|| format!("opening the firmware partition {}", dev.display()))?;
    if super::fat::read(&mut disk, name)?.as_deref() != Some(content) {
        crate::failpoint::hit("device::bootfile")?;
    }
    // Called even when the content is there: it also finishes what a killed run left.
    super::fat::replace(&mut disk, name, content)
        .with_context(|| format!("replacing {name} on the firmware partition {}", dev.display()))
}

fn write(base: &Path, rel: &str, content: &[u8]) -> Result<()> {
    crate::atomic::write_beneath(base, rel, content)
        .with_context(|| format!("replacing the bootloader file {}", base.join(rel).display()))
}
