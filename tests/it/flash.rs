//! `arbor flash` against real loop devices, and bmaps against the real
//! `bmaptool` (Debian package bmap-tools). Loop-device tests need root: they
//! are ignored, saying so, without `--include-ignored` (`make test` as root).
use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use arbor::image::bmap::{self, BLOCK_SIZE, Bmap};
use arbor::image::compress::{self, Compression};
use arbor::image::flash::{FlashOptions, flash, verify};
use arbor::runner::Tool;

use crate::common::{self, Deadline as _};

const MIB: u64 = 1 << 20;

/// A loop device over a temporary file, filled with `fill`; detached on drop,
/// even when the test panics.
struct Loop {
    dev: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Loop {
    fn new(size: u64, fill: u8) -> Loop {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("disk");
        std::fs::write(&backing, vec![fill; size as usize]).unwrap();
        let mut l = Loop::attach(&backing, &[]);
        l._dir = Some(dir);
        l
    }

    /// A loop device over an existing file or block device, with `losetup` options
    /// (`-o OFFSET --sizelimit SIZE`: this kernel has no partition parser).
    fn attach(backing: &Path, options: &[&str]) -> Loop {
        let out = Tool::new("losetup")
            .args(["--find", "--show"])
            .args(options)
            .arg(backing)
            .text()
            .unwrap();
        Loop {
            dev: PathBuf::from(out.trim()),
            _dir: None,
        }
    }

    /// `loop7` for `/dev/loop7`.
    fn name(&self) -> String {
        self.dev.file_name().unwrap().to_string_lossy().into_owned()
    }

    fn read(&self) -> Vec<u8> {
        let mut v = Vec::new();
        File::open(&self.dev).unwrap().read_to_end(&mut v).unwrap();
        v
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Err(e) = Tool::new("losetup").arg("-d").arg(&self.dev).run() {
            eprintln!("detaching {}: {e:#}", self.dev.display());
        }
    }
}

/// A mount, unmounted on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = Tool::new("umount").arg(&self.0).run() {
            eprintln!("unmounting {}: {e:#}", self.0.display());
        }
    }
}

/// Pattern bytes that differ by position and seed.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(seed as u32 % 32) as u8 ^ seed)
        .collect()
}

/// A sparse image of `size` bytes with data in a few places (a partition
/// table, a "filesystem" spread over some MiB, the last block) and its bmap
/// beside it as `<name>.bmap`.
fn sparse_image(dir: &Path, name: &str, size: u64) -> (PathBuf, Bmap) {
    let img = dir.join(name);
    let f = File::create(&img).unwrap();
    f.set_len(size).unwrap();
    f.write_all_at(&pattern(512, 1), 0).unwrap();
    f.write_all_at(&pattern(MIB as usize + 1000, 2), MIB + 4096).unwrap();
    f.write_all_at(&pattern(64 * 1024, 3), size / 2).unwrap();
    f.write_all_at(&pattern(4096, 4), size - 4096).unwrap();
    f.sync_all().unwrap();
    let bmap_path = dir.join(format!("{name}.bmap"));
    let b = bmap::write(&img, &bmap_path).unwrap();
    assert_eq!(b.ranges.len(), 4, "{b:?}");
    (img, b)
}

fn opts(image: &Path, device: &Path) -> FlashOptions {
    FlashOptions {
        yes: true,
        ..FlashOptions::new(image, device)
    }
}

/// Mapped ranges of the device equal the image; everything else still holds `fill`.
fn assert_flashed(device: &[u8], image: &[u8], b: &Bmap, fill: u8) {
    let mut mapped = vec![false; device.len()];
    for r in &b.ranges {
        let (o, l) = (r.offset(BLOCK_SIZE) as usize, r.len(BLOCK_SIZE, b.image_size) as usize);
        assert!(device[o..o + l] == image[o..o + l], "blocks {} differ", r.label());
        mapped[o..o + l].fill(true);
    }
    let stray = (0..device.len()).find(|&i| !mapped[i] && device[i] != fill);
    assert_eq!(stray, None, "a hole was written");
}

#[test]
#[ignore = "needs root: attaches loop devices"]
fn flashes_only_mapped_ranges_and_verifies() {
    common::need_root();
    let dir = tempfile::tempdir().unwrap();
    let (img, b) = sparse_image(dir.path(), "a.img", 48 * MIB);
    let lo = Loop::new(64 * MIB, 0xee);
    let report = flash(&opts(&img, &lo.dev)).unwrap();
    assert_eq!(report.bmap.as_deref(), Some(dir.path().join("a.img.bmap").as_path()));
    assert_eq!(report.bytes_written, b.mapped_bytes());
    assert_eq!(report.ranges, 4);
    assert!(report.verified);
    assert_flashed(&lo.read(), &std::fs::read(&img).unwrap(), &b, 0xee);
    eprintln!(
        "flashed {} bytes to {} in {:.3}s: {:.0} MB/s, verified in {:.3}s",
        report.bytes_written,
        lo.dev.display(),
        report.seconds,
        report.mb_per_s,
        report.verify_seconds
    );
}

#[test]
#[ignore = "needs root: attaches loop devices"]
fn verify_names_the_corrupt_range() {
    common::need_root();
    let dir = tempfile::tempdir().unwrap();
    let (img, b) = sparse_image(dir.path(), "a.img", 16 * MIB);
    let lo = Loop::new(16 * MIB, 0);
    flash(&opts(&img, &lo.dev)).unwrap();
    verify(&lo.dev, &b).unwrap();

    // A flipped byte on the device, inside the second range.
    let r = &b.ranges[1];
    let at = r.offset(BLOCK_SIZE) + 12345;
    let dev = std::fs::OpenOptions::new().write(true).open(&lo.dev).unwrap();
    dev.write_all_at(b"X", at).unwrap();
    dev.sync_all().unwrap();
    let e = format!("{:#}", verify(&lo.dev, &b).unwrap_err());
    assert!(
        e.contains(&format!("blocks {}", r.label())) && e.contains(&*lo.dev.to_string_lossy()),
        "{e}"
    );

    // A bmap whose checksum for a range does not match the image.
    let mut wrong = b.clone();
    wrong.ranges[2].sha256 = Some("ab".repeat(32));
    let wrong_path = dir.path().join("wrong.bmap");
    std::fs::write(&wrong_path, wrong.to_xml()).unwrap();
    let o = FlashOptions {
        bmap: Some(wrong_path),
        ..opts(&img, &lo.dev)
    };
    let before = lo.read();
    let e = format!("{:#}", flash(&o).unwrap_err());
    assert!(
        e.contains(&format!("blocks {}", b.ranges[2].label())) && e.contains("nothing was written"),
        "{e}"
    );
    // A raw image is checked before the first byte is written.
    assert!(lo.read() == before, "a refused image wrote to the device");
}

#[test]
#[ignore = "needs root: attaches loop devices"]
fn refuses_a_mounted_device() {
    common::need_root();
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = sparse_image(dir.path(), "a.img", 8 * MIB);
    let lo = Loop::new(32 * MIB, 0);
    Tool::new("mkfs.ext4").args(["-q", "-F"]).arg(&lo.dev).run().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    Tool::new("mount").arg(&lo.dev).arg(&mnt).run().unwrap();
    let _m = Mounted(mnt.clone());
    let e = format!("{:#}", flash(&opts(&img, &lo.dev)).unwrap_err());
    assert!(
        e.contains(&*lo.dev.to_string_lossy()) && e.contains("mounted") && e.contains(&*mnt.to_string_lossy()),
        "{e}"
    );
    eprintln!("{e}");
}

/// A filesystem mounted from a second loop device over the same storage — the
/// same file at a partition's offset, or a loop device stacked on the target —
/// is in use just as if it were mounted from the target.
#[test]
#[ignore = "needs root: attaches loop devices"]
fn refuses_a_device_whose_storage_is_mounted_through_another_loop_device() {
    common::need_root();
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = sparse_image(dir.path(), "a.img", 8 * MIB);
    let mut failures = Vec::new();
    for (i, case) in ["same file, partition offset", "loop device on the target"]
        .into_iter()
        .enumerate()
    {
        let whole = Loop::new(32 * MIB, 0);
        let backing = dir.path().join(format!("{i}.disk"));
        let second = match case {
            "same file, partition offset" => {
                let file = Tool::new("losetup")
                    .args(["--noheadings", "--output", "BACK-FILE"])
                    .arg(&whole.dev)
                    .text()
                    .unwrap();
                std::fs::hard_link(file.trim(), &backing).unwrap();
                Loop::attach(&backing, &["-o", "1MiB", "--sizelimit", "16MiB"])
            }
            _ => Loop::attach(&whole.dev, &[]),
        };
        Tool::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&second.dev)
            .run()
            .unwrap();
        let mnt = dir.path().join(format!("mnt-{i}"));
        std::fs::create_dir(&mnt).unwrap();
        Tool::new("mount").arg(&second.dev).arg(&mnt).run().unwrap();
        let _m = Mounted(mnt.clone());
        match flash(&opts(&img, &whole.dev)) {
            Ok(r) => failures.push(format!(
                "{case}: flashed {} over the filesystem mounted from {} on {}: {r:?}",
                whole.dev.display(),
                second.dev.display(),
                mnt.display()
            )),
            Err(e) => {
                let e = format!("{e:#}");
                if !(e.contains(&second.name()) && e.contains(&*mnt.to_string_lossy()) && e.contains("mounted")) {
                    failures.push(format!(
                        "{case}: the refusal names neither {} nor {}: {e}",
                        second.name(),
                        mnt.display()
                    ));
                }
                eprintln!("{case}: {e}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A loop device whose backing file is a block device node shares that device's
/// storage: with the device mounted on `/boot` (in a private mount namespace, so
/// the host sees nothing), the loop device is the running system's disk. Without
/// `--yes`, so a missed check stops at the confirmation prompt and never writes.
#[test]
#[ignore = "needs root: attaches loop devices"]
fn refuses_a_loop_device_backed_by_the_system_disk() {
    common::need_root();
    let disk = Loop::new(32 * MIB, 0);
    Tool::new("mkfs.ext4").args(["-q", "-F"]).arg(&disk.dev).run().unwrap();
    let over = Loop::attach(&disk.dev, &[]);
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = sparse_image(dir.path(), "a.img", 8 * MIB);
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount "$1" /boot && exec "$2" flash "$3" --device "$4""#)
        .arg("sh")
        .arg(&disk.dev)
        .arg(env!("CARGO_BIN_EXE_arbor"))
        .arg(&img)
        .arg(&over.dev)
        .stdin(std::process::Stdio::null())
        .timed_output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains(&disk.name()) && e.contains("/boot") && !e.contains("without confirmation"),
        "{} (a loop device on {}, which is mounted on /boot) passed the in-use and system-disk checks: {e}",
        over.dev.display(),
        disk.dev.display()
    );
    eprintln!("{e}");
}

#[test]
#[ignore = "needs root: attaches loop devices"]
fn refuses_without_yes_when_stdin_is_not_a_terminal() {
    common::need_root();
    use std::io::IsTerminal as _;
    if std::io::stdin().is_terminal() {
        // No test in this binary reads stdin; make it what a pipeline would give.
        nix::unistd::dup2_stdin(File::open("/dev/null").unwrap()).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = sparse_image(dir.path(), "a.img", 8 * MIB);
    let lo = Loop::new(8 * MIB, 0x5a);
    let o = FlashOptions {
        yes: false,
        ..opts(&img, &lo.dev)
    };
    let e = format!("{:#}", flash(&o).unwrap_err());
    assert!(e.contains("--yes") && e.contains(&*lo.dev.to_string_lossy()), "{e}");
    eprintln!("{e}");
    assert!(lo.read().iter().all(|&b| b == 0x5a), "device was written");
}

#[test]
#[ignore = "needs root: attaches loop devices"]
fn refuses_an_image_larger_than_the_device() {
    common::need_root();
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = sparse_image(dir.path(), "a.img", 16 * MIB);
    let lo = Loop::new(8 * MIB, 0);
    let e = format!("{:#}", flash(&opts(&img, &lo.dev)).unwrap_err());
    assert!(
        e.contains("larger than the device") && e.contains(&*lo.dev.to_string_lossy()),
        "{e}"
    );

    // Without a bmap the size of a compressed stream shows only while writing.
    let zst = dir.path().join("b.img.zst");
    compress::compress(&img, &zst, Compression::Zstd, false).unwrap();
    let e = format!("{:#}", flash(&opts(&zst, &lo.dev)).unwrap_err());
    assert!(
        e.contains("larger than the device") && e.contains(&*lo.dev.to_string_lossy()),
        "{e}"
    );
    eprintln!("{e}");
}

#[test]
#[ignore = "needs root: attaches loop devices"]
fn flashes_compressed_images() {
    common::need_root();
    let dir = tempfile::tempdir().unwrap();
    let (img, b) = sparse_image(dir.path(), "a.img", 32 * MIB);
    let image = std::fs::read(&img).unwrap();
    for c in [Compression::Zstd, Compression::Xz] {
        let packed = dir.path().join(format!("a.img.{}", c.extension().unwrap()));
        compress::compress(&img, &packed, c, false).unwrap();
        let lo = Loop::new(40 * MIB, 0xee);
        // a.img.bmap is found beside a.img.zst.
        let report = flash(&opts(&packed, &lo.dev)).unwrap();
        assert_eq!(report.bytes_written, b.mapped_bytes(), "{c:?}");
        assert_flashed(&lo.read(), &image, &b, 0xee);
        eprintln!("{c:?}: {:.0} MB/s", report.mb_per_s);
    }
}

#[test]
fn regular_files_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = sparse_image(dir.path(), "a.img", 8 * MIB);
    let target = dir.path().join("copy.img");
    std::fs::write(&target, vec![0xff; 20 * MIB as usize]).unwrap();
    let e = format!("{:#}", flash(&opts(&img, &target)).unwrap_err());
    assert!(
        e.contains(&*target.to_string_lossy()) && e.contains("regular file"),
        "{e}"
    );

    // Allowed: the file becomes exactly the image, holes included.
    let o = FlashOptions {
        allow_file: true,
        ..opts(&img, &target)
    };
    flash(&o).unwrap();
    assert!(std::fs::read(&target).unwrap() == std::fs::read(&img).unwrap());

    // Without a bmap, from a zstd stream.
    let zst = dir.path().join("nobmap.img.zst");
    compress::compress(&img, &zst, Compression::Zstd, false).unwrap();
    let o = FlashOptions {
        allow_file: true,
        ..opts(&zst, &target)
    };
    let report = flash(&o).unwrap();
    assert_eq!((report.bmap, report.ranges, report.bytes_written), (None, 1, 8 * MIB));
    assert!(std::fs::read(&target).unwrap() == std::fs::read(&img).unwrap());
}

fn bmaptool() -> Tool {
    assert!(
        Path::new("/usr/bin/bmaptool").exists() || which("bmaptool"),
        "bmaptool is missing: install bmap-tools (scripts/setup)"
    );
    Tool::new("bmaptool").timeout(common::deadline::timeout())
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

#[test]
fn bmaptool_copies_with_our_bmap() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = sparse_image(dir.path(), "a.img", 24 * MIB);
    let target = dir.path().join("target.img");
    bmaptool()
        .args(["copy", "--bmap"])
        .arg(dir.path().join("a.img.bmap"))
        .arg(&img)
        .arg(&target)
        .run()
        .unwrap();
    assert!(std::fs::read(&target).unwrap() == std::fs::read(&img).unwrap());
}

#[test]
fn we_read_bmaptools_bmap() {
    let dir = tempfile::tempdir().unwrap();
    let (img, ours) = sparse_image(dir.path(), "a.img", 24 * MIB);
    let theirs = dir.path().join("theirs.bmap");
    bmaptool().arg("create").arg("-o").arg(&theirs).arg(&img).run().unwrap();
    let parsed = bmap::read(&theirs).unwrap();
    assert_eq!(parsed, ours);
}

/// Throughput on a loop device: 512 MiB image, 256 MiB mapped in 64 ranges.
/// `cargo test --release --test it -- --ignored --nocapture flash::throughput`
/// (`make test` skips it).
#[test]
#[ignore = "writes 768 MiB to a loop device (needs root); run by hand for numbers"]
fn throughput() {
    common::need_root();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("big.img");
    let f = File::create(&img).unwrap();
    f.set_len(512 * MIB).unwrap();
    let chunk = pattern(4 * MIB as usize, 7);
    for i in 0..64 {
        f.write_all_at(&chunk, i * 8 * MIB).unwrap();
    }
    f.sync_all().unwrap();
    bmap::write(&img, &dir.path().join("big.img.bmap")).unwrap();
    let lo = Loop::new(512 * MIB, 0);
    for path in [img.clone(), dir.path().join("big.img.zst")] {
        if path != img {
            compress::compress(&img, &path, Compression::Zstd, false).unwrap();
        }
        let r = flash(&opts(&path, &lo.dev)).unwrap();
        eprintln!(
            "{}: {} MiB in {} ranges, write+fsync {:.2}s = {:.0} MB/s, verify {:.2}s",
            path.display(),
            r.bytes_written / MIB,
            r.ranges,
            r.seconds,
            r.mb_per_s,
            r.verify_seconds
        );
    }
}
