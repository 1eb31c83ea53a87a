//! Which block devices hold the same data as a device, and which are in use:
//! partitions and devices stacked on them (sysfs `holders`), loop devices over
//! the same file or over the device, mounts (`/proc/self/mountinfo`). What
//! `arbor flash` checks before it overwrites anything.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::sys::stat::{major, makedev, minor};

/// A mount from /proc/self/mountinfo: its device numbers (the field, and the
/// source's when that is a block device node, as btrfs needs) and mount point.
pub(super) struct Mount {
    pub(super) devs: Vec<u64>,
    pub(super) mountpoint: String,
}

pub(super) fn mounts() -> Result<Vec<Mount>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let (maj, min) = fields.get(2)?.split_once(':')?;
    let mut devs = vec![makedev(maj.parse().ok()?, min.parse().ok()?)];
    let mountpoint = unescape_octal(fields.get(4)?);
    let dash = fields.iter().position(|f| *f == "-")?;
    if let Some(d) = fields
        .get(dash + 2)
        .and_then(|s| block_dev_of(Path::new(&unescape_octal(s))))
    {
        devs.push(d);
    }
    Some(Mount { devs, mountpoint })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The device number of `p` when it is a block device node.
pub(super) fn block_dev_of(p: &Path) -> Option<u64> {
    let m = std::fs::metadata(p).ok()?;
    m.file_type().is_block_device().then(|| m.rdev())
}

/// The canonical sysfs directory of a block device.
pub(super) fn sysfs(dev: u64) -> Option<PathBuf> {
    std::fs::canonicalize(format!("/sys/dev/block/{}:{}", major(dev), minor(dev))).ok()
}

/// The `dev` file of a sysfs block directory.
fn read_dev(dir: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(dir.join("dev")).ok()?;
    let (maj, min) = s.trim().split_once(':')?;
    Some(makedev(maj.parse().ok()?, min.parse().ok()?))
}

/// `dev` itself, its partitions, and every device stacked on any of them
/// (`holders`: device-mapper, md), recursively.
fn stacked_on(dev: u64) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![dev];
    while let Some(d) = todo.pop() {
        if !seen.insert(d) {
            continue;
        }
        let Some(dir) = sysfs(d) else { continue };
        let subdirs = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path());
        let partitions = subdirs.filter(|p| p.join("partition").is_file());
        let holders = std::fs::read_dir(dir.join("holders"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::canonicalize(e.path()).ok());
        todo.extend(partitions.chain(holders).filter_map(|p| read_dev(&p)));
    }
    seen
}

/// What a loop device reads and writes: a file (by device and inode, so a
/// renamed or hard-linked path is still the same file) or a block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backing {
    File { dev: u64, ino: u64 },
    Device(u64),
}

/// One attached loop device, from `/sys/block/loop*/loop/`.
#[derive(Debug, Clone)]
struct LoopDev {
    dev: u64,
    /// The backing file's path as the kernel recorded it (for messages).
    path: String,
    backing: Backing,
    /// The byte range of the backing storage it maps.
    start: u64,
    end: u64,
}

impl LoopDev {
    /// Whether the two map overlapping bytes of the same storage.
    fn overlaps(&self, o: &LoopDev) -> bool {
        self.backing == o.backing && self.start < o.end && o.start < self.end
    }
}

/// Every attached loop device whose backing file can be looked at.
fn loop_devices() -> Vec<LoopDev> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        let dir = e.path();
        let read = |f: &str| std::fs::read_to_string(dir.join("loop").join(f)).ok();
        let Some(path) = read("backing_file") else { continue };
        let path = path.trim_end_matches('\n').to_string();
        let (Some(dev), Ok(meta)) = (read_dev(&dir), std::fs::metadata(&path)) else {
            continue;
        };
        let backing = if meta.file_type().is_block_device() {
            Backing::Device(meta.rdev())
        } else {
            Backing::File {
                dev: meta.dev(),
                ino: meta.ino(),
            }
        };
        let num = |f: &str| read(f).and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
        let start = num("offset");
        let end = match num("sizelimit") {
            0 => u64::MAX,
            n => start.saturating_add(n),
        };
        out.push(LoopDev {
            dev,
            path,
            backing,
            start,
            end,
        });
    }
    out
}

/// Every device whose data is (part of) `dev`'s: `dev`, its partitions and the
/// devices stacked on them ([`stacked_on`]), other loop devices over the same
/// bytes of the same file, loop devices backed by any of these, and the block
/// device a loop device among them is backed by — and so on. Each maps to how it
/// relates to `dev` (`None` for `dev`'s own stack), for messages.
pub(super) fn sharing_storage(dev: u64) -> BTreeMap<u64, Option<String>> {
    let loops = loop_devices();
    let mut out = BTreeMap::new();
    let mut todo: Vec<(u64, Option<String>)> = vec![(dev, None)];
    while let Some((d, via)) = todo.pop() {
        if out.contains_key(&d) {
            continue;
        }
        for s in stacked_on(d) {
            if out.contains_key(&s) {
                continue;
            }
            out.insert(s, via.clone());
            let this = loops.iter().find(|l| l.dev == s);
            if let Some(Backing::Device(b)) = this.map(|l| l.backing) {
                todo.push((b, Some(format!("{} is a loop device on {}", dev_name(s), dev_name(b)))));
            }
            for o in loops.iter().filter(|o| o.dev != s) {
                let why = if this.is_some_and(|l| l.overlaps(o)) {
                    format!(
                        "{} and {} are loop devices on the same file {}",
                        dev_name(o.dev),
                        dev_name(s),
                        o.path
                    )
                } else if o.backing == Backing::Device(s) {
                    format!("{} is a loop device on {}", dev_name(o.dev), dev_name(s))
                } else if let Some((disk, _, _)) = partition_range(s)
                    .filter(|&(disk, start, end)| o.backing == Backing::Device(disk) && o.start < end && start < o.end)
                {
                    format!(
                        "{} is a loop device on {}, over {}",
                        dev_name(o.dev),
                        dev_name(disk),
                        dev_name(s)
                    )
                } else {
                    continue;
                };
                todo.push((o.dev, Some(why)));
            }
        }
    }
    out
}

/// A partition's disk and its byte range on it.
fn partition_range(dev: u64) -> Option<(u64, u64, u64)> {
    let disk = parent_disk(dev)?;
    let dir = sysfs(dev)?;
    let sectors = |f: &str| std::fs::read_to_string(dir.join(f)).ok()?.trim().parse::<u64>().ok();
    let start = sectors("start")?.checked_mul(512)?;
    Some((disk, start, start.saturating_add(sectors("size")?.saturating_mul(512))))
}

/// `" (WHY)"` for a device reached through another, `""` for the target's own.
pub(super) fn via_text(via: &Option<String>) -> String {
    via.as_ref().map(|v| format!(" ({v})")).unwrap_or_default()
}

/// The whole disk `dev` is a partition of.
pub(super) fn parent_disk(dev: u64) -> Option<u64> {
    let dir = sysfs(dev)?;
    if !dir.join("partition").is_file() {
        return None;
    }
    read_dev(dir.parent()?)
}

/// Collects `dev` and everything it is built from: the disk of a partition,
/// the `slaves` of device-mapper and md devices, the filesystem holding a
/// loop device's backing file.
pub(super) fn lower_devices(dev: u64, out: &mut BTreeSet<u64>) {
    if !out.insert(dev) {
        return;
    }
    let Some(dir) = sysfs(dev) else { return };
    if let Some(disk) = parent_disk(dev) {
        lower_devices(disk, out);
    }
    for e in std::fs::read_dir(dir.join("slaves")).into_iter().flatten().flatten() {
        if let Some(d) = std::fs::canonicalize(e.path()).ok().and_then(|p| read_dev(&p)) {
            lower_devices(d, out);
        }
    }
    if let Ok(backing) = std::fs::read_to_string(dir.join("loop/backing_file")) {
        if let Ok(m) = std::fs::metadata(backing.trim()) {
            lower_devices(m.dev(), out);
        }
    }
}

/// `sda1`-style name of a device number, or `MAJ:MIN`.
pub(super) fn dev_name(dev: u64) -> String {
    sysfs(dev)
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| format!("{}:{}", major(dev), minor(dev)))
}

/// The model of a device's disk (`/sys/block/*/device/{vendor,model}`), or
/// a loop device's backing file.
pub(super) fn describe(dev: u64) -> String {
    let disk = parent_disk(dev).unwrap_or(dev);
    let Some(dir) = sysfs(disk) else {
        return "unknown model".to_string();
    };
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).ok().map(|s| s.trim().to_string());
    if let Some(b) = read("loop/backing_file") {
        return format!("loop device backed by {b}");
    }
    let parts: Vec<String> = [read("device/vendor"), read("device/model")]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        "unknown model".to_string()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_devices_overlap_on_the_same_bytes_of_the_same_storage() {
        let l = |backing, start, end| LoopDev {
            dev: 0,
            path: String::new(),
            backing,
            start,
            end,
        };
        let f = Backing::File { dev: 1, ino: 2 };
        let g = Backing::File { dev: 1, ino: 3 };
        let whole = l(f, 0, u64::MAX);
        for (what, other, want) in [
            ("a partition of the same file", l(f, 1 << 20, 17 << 20), true),
            ("another file", l(g, 0, u64::MAX), false),
            ("a block device", l(Backing::Device(7), 0, u64::MAX), false),
        ] {
            assert_eq!(whole.overlaps(&other), want, "{what}");
        }
        assert!(!l(f, 0, 1 << 20).overlaps(&l(f, 1 << 20, 2 << 20)), "adjacent ranges");
        assert!(
            l(f, 0, 1 << 20 | 1).overlaps(&l(f, 1 << 20, 2 << 20)),
            "one byte shared"
        );
    }

    #[test]
    fn mountinfo_lines() {
        let m = parse_mountinfo_line(
            "36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!(m.mountpoint, "/mnt/my disk");
        assert_eq!(m.devs[0], makedev(98, 0));
        assert!(parse_mountinfo_line("garbage").is_none());
    }
}
