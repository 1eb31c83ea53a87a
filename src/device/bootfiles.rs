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
//! FAT has no atomic rename: the Linux vfat driver replaces a directory entry
//! by removing the old one and writing the new one. So files on the firmware
//! partition are rewritten only when their content changes (config.txt never
//! changes between deployments of one board; cmdline.txt only with the kernel
//! arguments), the new content is complete and fsynced under a temporary name
//! before the rename, and U-Boot does not read either of them: it boots from
//! extlinux.conf on the ext4 /boot partition. A torn rename there can at worst
//! leave the Raspberry Pi firmware its defaults, never an unbootable U-Boot.

use std::path::Path;

use anyhow::{Context, Result};

use super::Device;
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
            Role::Firmware => match &dev.firmware_dir {
                Some(d) => d.clone(),
                None => {
                    out.skipped.push(format!(
                        "{} (the firmware partition is not mounted at {}; U-Boot does not read it)",
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

fn write(base: &Path, rel: &str, content: &[u8]) -> Result<()> {
    crate::atomic::write_beneath(base, rel, content)
        .with_context(|| format!("replacing the bootloader file {}", base.join(rel).display()))
}
