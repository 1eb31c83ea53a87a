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
/// each in place when its content changed. On a boot-counting board the
/// default deployment is rendered on trial when the state file names it.
pub fn render(dev: &Device) -> Result<Rendered> {
    let entries = crate::bootloader::read_entries(&dev.sysroot.path().join("boot"))?;
    let trial = super::bootcount::trial_of_default(dev, &entries)?;
    render_entries(dev, &entries, trial.as_deref())
}

/// [`render`] with the trial given: `None` renders the default deployment as
/// good (what marking it good writes first).
pub fn render_trial(dev: &Device, trial: Option<&str>) -> Result<Rendered> {
    let entries = crate::bootloader::read_entries(&dev.sysroot.path().join("boot"))?;
    render_entries(dev, &entries, trial)
}

fn render_entries(dev: &Device, entries: &[crate::bootloader::BlsEntry], trial: Option<&str>) -> Result<Rendered> {
    let root = dev.sysroot.path();
    let boot_dir = root.join("boot");
    let files = crate::bootloader::render(&dev.board, entries, dev.board.boot_prefix(), trial)?;
    let mut out = Rendered::default();
    for f in files {
        let base = match f.role {
            Role::Boot => boot_dir.clone(),
            Role::Root => root.to_path_buf(),
            Role::Firmware => {
                match firmware_put(dev, &f.path, &f.content)? {
                    Put::Written(shown) => out.written.push(shown),
                    Put::Unchanged(shown) => out.unchanged.push(shown),
                    Put::Skipped(why) => out.skipped.push(why),
                }
                continue;
            }
        };
        let dest = base.join(&f.path);
        if std::fs::read(&dest).is_ok_and(|old| old == f.content) {
            out.unchanged.push(dest.display().to_string());
            continue;
        }
        crate::failpoint::hit("device::bootfile")?;
        write(&base, &f.path, &f.content)?;
        out.written.push(dest.display().to_string());
    }
    // `dtb_from = "firmware"`: the firmware partition's DTB follows the
    // default deployment's kernel (read beneath /boot), after the files that
    // name that deployment; cut in between, the old DT boots the new kernel.
    if let (Some(src), Some(name)) = (
        crate::bootloader::firmware_dtb(&dev.board, entries),
        dev.board.dtb_file_name(),
    ) {
        let boot = cap_std::fs::Dir::open_ambient_dir(&boot_dir, cap_std::ambient_authority())
            .with_context(|| format!("opening {}", boot_dir.display()))?;
        let rel = src.trim_start_matches('/');
        let bytes = read_dtb(&boot, rel)
            .with_context(|| format!("reading the default deployment's DTB {}", boot_dir.join(rel).display()))?;
        match firmware_put(dev, name, &bytes)? {
            Put::Written(shown) => out.written.push(shown),
            Put::Unchanged(shown) => out.unchanged.push(shown),
            Put::Skipped(why) => out.skipped.push(why),
        }
    }
    Ok(out)
}

/// Largest DTB put on the firmware partition (real ones are tens of KiB).
const MAX_DTB: u64 = 4 << 20;

/// A regular file beneath `boot` (links resolved inside it), at most [`MAX_DTB`] bytes.
fn read_dtb(boot: &cap_std::fs::Dir, rel: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = boot.open(rel).context("opening it")?;
    let md = f.metadata().context("reading its metadata")?;
    if !md.is_file() || md.len() > MAX_DTB {
        anyhow::bail!("not a regular file of at most {MAX_DTB} bytes");
    }
    let mut bytes = Vec::new();
    f.take(MAX_DTB + 1).read_to_end(&mut bytes).context("reading it")?;
    if bytes.len() as u64 > MAX_DTB {
        anyhow::bail!("grew past {MAX_DTB} bytes while it was read");
    }
    Ok(bytes)
}

/// What [`firmware_put`] did, with the file as shown to users.
pub(super) enum Put {
    Written(String),
    Unchanged(String),
    Skipped(String),
}

/// Puts a file at the root of the firmware partition, mounted or not, when
/// its content differs (power-cut safe either way).
pub(super) fn firmware_put(dev: &Device, name: &str, content: &[u8]) -> Result<Put> {
    match &dev.firmware {
        Some(Firmware::Mounted(d)) => {
            let dest = d.join(name);
            let shown = dest.display().to_string();
            if std::fs::read(&dest).is_ok_and(|old| old == content) {
                return Ok(Put::Unchanged(shown));
            }
            crate::failpoint::hit("device::bootfile")?;
            write(d, name, content)?;
            Ok(Put::Written(shown))
        }
        Some(Firmware::Partition(p)) => {
            let shown = format!("{}:{name}", p.display());
            Ok(if in_partition(p, name, content)? {
                Put::Written(shown)
            } else {
                Put::Unchanged(shown)
            })
        }
        None => Ok(Put::Skipped(format!(
            "{name} (the firmware partition is not mounted at {} and no --firmware-partition was given)",
            dev.sysroot.path().join("boot/firmware").display()
        ))),
    }
}

/// A file at the root of the firmware partition; `None` when it is absent or
/// the partition cannot be reached.
pub(super) fn firmware_get(dev: &Device, name: &str, max: u64) -> Result<Option<Vec<u8>>> {
    match &dev.firmware {
        Some(Firmware::Mounted(d)) => {
            let path = d.join(name);
            match crate::input::read_bounded(&path, name, max) {
                Ok(b) => Ok(Some(b)),
                Err(_) if !path.exists() => Ok(None),
                Err(e) => Err(e),
            }
        }
        Some(Firmware::Partition(p)) => {
            let mut disk =
                std::fs::File::open(p).with_context(|| format!("opening the firmware partition {}", p.display()))?;
            super::fat::read(&mut disk, name)
                .with_context(|| format!("reading {name} on the firmware partition {}", p.display()))
        }
        None => Ok(None),
    }
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
