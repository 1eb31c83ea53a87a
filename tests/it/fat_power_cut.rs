//! The firmware partition's files through a power cut: every write arbor's
//! FAT replacement makes is recorded, and the partition is rebuilt as it
//! would be after the power went at each point — every prefix of the writes,
//! plus (for the writes since the last sync, which the card may persist in
//! any order) every subset of a short epoch and seeded samples of a long one.
//! In each state the boot-critical file reads, with mtools and with fatfs,
//! as either its old or its new content; a rerun then completes and
//! `fsck.fat` finds nothing (checked on every other state). Filesystems are made by `mkfs.vfat`, FAT16 and
//! FAT32, with the file first written by `mcopy`.

use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use arbor::device::fat;

use crate::common::Deadline as _;

#[derive(Clone)]
enum Op {
    Write(u64, Vec<u8>),
    Sync,
}

/// An in-memory partition that logs what reaches it.
struct Recorder {
    disk: Cursor<Vec<u8>>,
    log: Vec<Op>,
}

impl Read for Recorder {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.disk.read(buf)
    }
}

impl Seek for Recorder {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.disk.seek(to)
    }
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let at = self.disk.position();
        let n = self.disk.write(buf)?;
        self.log.push(Op::Write(at, buf[..n].to_vec()));
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl fat::Disk for Recorder {
    fn sync(&mut self) -> std::io::Result<()> {
        self.log.push(Op::Sync);
        Ok(())
    }
}

/// A partition in memory, no log.
struct Plain(Cursor<Vec<u8>>);

impl Read for Plain {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}
impl Seek for Plain {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.0.seek(to)
    }
}
impl Write for Plain {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl fat::Disk for Plain {
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn tool(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .env("MTOOLS_SKIP_CHECK", "1")
        .timed_output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e} (apt-get install dosfstools mtools)"))
}

fn ok(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = tool(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The crash states of a write log: which writes reached the media.
fn states(log: &[Op], seed: u64) -> Vec<Vec<usize>> {
    let mut epochs: Vec<Vec<usize>> = vec![Vec::new()];
    for (i, op) in log.iter().enumerate() {
        match op {
            Op::Write(..) => epochs.last_mut().unwrap().push(i),
            Op::Sync => epochs.push(Vec::new()),
        }
    }
    let mut rng = seed;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut out = Vec::new();
    let mut durable: Vec<usize> = Vec::new();
    for epoch in epochs.iter().filter(|e| !e.is_empty()) {
        // In order: every prefix.
        for k in 0..=epoch.len() {
            out.push([durable.clone(), epoch[..k].to_vec()].concat());
        }
        // Out of order: any subset may have persisted.
        if epoch.len() <= 8 {
            for mask in 1u32..(1 << epoch.len()) {
                let pick: Vec<usize> = (0..epoch.len())
                    .filter(|b| mask & (1 << b) != 0)
                    .map(|b| epoch[b])
                    .collect();
                out.push([durable.clone(), pick].concat());
            }
        } else {
            for _ in 0..48 {
                let pick: Vec<usize> = epoch.iter().copied().filter(|_| next() % 2 == 0).collect();
                out.push([durable.clone(), pick].concat());
            }
        }
        durable.extend(epoch);
    }
    out
}

fn apply(base: &[u8], log: &[Op], which: &[usize]) -> Vec<u8> {
    let mut img = base.to_vec();
    for &i in which {
        if let Op::Write(at, data) = &log[i] {
            img[*at as usize..*at as usize + data.len()].copy_from_slice(data);
        }
    }
    img
}

fn check(fs_type: &str, mkfs: &[&str], size_mib: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let img = dir.join("fw.img");
    std::fs::File::create(&img).unwrap().set_len(size_mib << 20).unwrap();
    ok(dir, &[&["mkfs.vfat", "-n", "RPI-FW"], mkfs, &["fw.img"]].concat());
    let old = "# Written by arbor for board rpi3.\narm_64bit=1\nkernel=u-boot.bin\nenable_uart=1\n".repeat(8);
    let new = "# Written by arbor for board rpi3, v2.\narm_64bit=1\nkernel=u-boot.bin\n".repeat(30);
    std::fs::write(dir.join("config.txt"), &old).unwrap();
    std::fs::write(dir.join("u-boot.bin"), vec![0x5a; 300_000]).unwrap();
    ok(dir, &["mcopy", "-i", "fw.img", "config.txt", "u-boot.bin", "::"]);
    let info = String::from_utf8_lossy(&ok(dir, &["minfo", "-i", "fw.img", "::"])).to_string();
    assert!(
        info.contains(&format!("disk type=\"{fs_type}")),
        "mkfs made another FAT type:\n{info}"
    );
    let base = std::fs::read(&img).unwrap();

    let mut rec = Recorder {
        disk: Cursor::new(base.clone()),
        log: Vec::new(),
    };
    assert!(fat::replace(&mut rec, "config.txt", new.as_bytes()).unwrap());
    let log = rec.log;
    let writes = log.iter().filter(|o| matches!(o, Op::Write(..))).count();
    assert!(writes > 5, "the replacement made only {writes} writes");
    let all = states(&log, 0x9e37_79b9_7f4a_7c15);
    let (mut saw_old, mut saw_new) = (0, 0);
    for (n, which) in all.iter().enumerate() {
        let state = apply(&base, &log, which);
        // What the Raspberry Pi firmware would read: fatfs in memory for every
        // state, mtools (another implementation) from a file for every other one.
        let mut disk = Plain(Cursor::new(state.clone()));
        let got = fat::read(&mut disk, "config.txt").unwrap();
        let got = got.unwrap_or_else(|| panic!("{fs_type}: config.txt missing after a cut at state {n} {which:?}"));
        assert!(
            got == old.as_bytes() || got == new.as_bytes(),
            "{fs_type}: config.txt torn after a cut at state {n} {which:?}"
        );
        if got == old.as_bytes() {
            saw_old += 1;
        } else {
            saw_new += 1;
        }
        let external = n % 2 == 0 || n + 1 == all.len();
        if external {
            std::fs::write(&img, &state).unwrap();
            let mt = ok(dir, &["mtype", "-i", "fw.img", "::config.txt"]);
            assert!(
                mt == old.as_bytes() || mt == new.as_bytes(),
                "{fs_type}: mtype reads a torn file at {n}"
            );
            assert_eq!(ok(dir, &["mtype", "-i", "fw.img", "::u-boot.bin"]).len(), 300_000);
        }
        // The next run finishes the job and leaves a clean filesystem.
        let mut disk = Plain(Cursor::new(state));
        fat::replace(&mut disk, "config.txt", new.as_bytes())
            .unwrap_or_else(|e| panic!("{fs_type}: the rerun after state {n} failed: {e:#}"));
        assert_eq!(fat::read(&mut disk, "config.txt").unwrap().unwrap(), new.as_bytes());
        if external {
            std::fs::write(&img, disk.0.get_ref()).unwrap();
            let fsck = tool(dir, &["fsck.fat", "-n", "fw.img"]);
            assert!(
                fsck.status.success(),
                "{fs_type}: fsck.fat after the rerun of state {n} {which:?}:\n{}",
                String::from_utf8_lossy(&fsck.stdout)
            );
            let listing = String::from_utf8_lossy(&ok(dir, &["mdir", "-i", "fw.img", "-b", "::"])).to_string();
            assert!(
                !listing.to_uppercase().contains("ARBOR"),
                "{fs_type}: temporary files left:\n{listing}"
            );
        }
    }
    assert!(
        saw_old > 0 && saw_new > 0,
        "{fs_type}: the cuts never straddled the commit"
    );
    eprintln!(
        "{fs_type}: {} writes, {} power-cut states ({saw_old} read old, {saw_new} new), all valid",
        writes,
        all.len()
    );
}

#[test]
fn fat16_firmware_files_are_old_or_new_after_a_power_cut_at_any_write() {
    check("FAT16", &["-F", "16", "-s", "1"], 8);
}

#[test]
fn fat32_firmware_files_are_old_or_new_after_a_power_cut_at_any_write() {
    check("FAT32", &["-F", "32", "-s", "1"], 40);
}
