//! A small ext4 filesystem on a loop device, mounted in a temporary directory,
//! for storage-fault tests: fill it so a write runs out of space, take it away
//! (every I/O then fails with EIO), check it and mount it again. Drop unmounts
//! it and detaches only its own loop device.
//!
//! EIO comes from ext4's shutdown ioctl (`EXT4_IOC_SHUTDOWN`, what `xfs_io -c
//! shutdown` and xfstests use): this VM's kernel has no device-mapper (no
//! `error` or `flakey` target), and after a shutdown every read and write on
//! the filesystem fails with EIO, as on a disk that died; with
//! `NOLOGFLUSH` the journal is not flushed, so what is on disk afterwards is
//! what a power cut at that moment leaves.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::run;

/// A mounted loop-device filesystem; [`LoopFs::mnt`] is where it is mounted.
pub struct LoopFs {
    dev: String,
    mnt: PathBuf,
    mounted: bool,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    /// A new ext4 filesystem of `mib` MiB (a sparse file), no reserved blocks
    /// (root could use them: the space left would not be what statvfs says).
    pub fn new(mib: u64) -> LoopFs {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fs.img");
        std::fs::File::create(&file).unwrap().set_len(mib << 20).unwrap();
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&file));
        let dev = run(Command::new("losetup").args(["--find", "--show"]).arg(&file))
            .trim()
            .to_string();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mut fs = LoopFs {
            dev,
            mnt,
            mounted: false,
            _dir: dir,
        };
        fs.mount();
        fs
    }

    /// Where the filesystem is mounted.
    pub fn mnt(&self) -> &Path {
        &self.mnt
    }

    /// A path on the filesystem.
    pub fn path(&self, p: &str) -> PathBuf {
        self.mnt.join(p)
    }

    fn mount(&mut self) {
        run(Command::new("mount").arg(&self.dev).arg(&self.mnt));
        self.mounted = true;
    }

    /// Unmounts, checks and repairs (`e2fsck -fy`) and mounts again, as an
    /// administrator does after the disk came back; returns e2fsck's report.
    pub fn check_and_remount(&mut self) -> String {
        run(Command::new("umount").arg(&self.mnt));
        self.mounted = false;
        let out = e2fsck(&self.dev);
        self.mount();
        out
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = super::Deadline::timed_status(Command::new("umount").arg(&self.mnt));
        }
        let _ = super::Deadline::timed_status(Command::new("losetup").arg("-d").arg(&self.dev));
    }
}

/// `e2fsck -fy DEV`: repairs what it can; panics when it could not (exit 4 or more).
/// An unmounted filesystem can still be "in use" for a while: a sandbox that
/// another test started meanwhile copied every mount into its own mount
/// namespace, and the filesystem lives on there until that sandbox ends.
pub fn e2fsck(dev: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let out = super::Deadline::timed_output(Command::new("e2fsck").args(["-f", "-y", dev])).unwrap();
        let code = out.status.code().unwrap_or(8);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if code == 8 && text.contains("is in use") && started.elapsed() < super::deadline::timeout() {
            std::thread::sleep(std::time::Duration::from_millis(500));
            continue;
        }
        assert!(code < 4, "e2fsck -fy {dev} left errors (exit {code}):\n{text}");
        return text;
    }
}

/// Shuts the ext4 filesystem mounted at `mnt` down without flushing its
/// journal: every later I/O on it fails with EIO.
pub fn shut_down(mnt: &Path) {
    // _IOR('X', 125, __u32): EXT4_IOC_SHUTDOWN (the same number as XFS_IOC_GOINGDOWN).
    const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
    const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;
    let dir = std::fs::File::open(mnt).unwrap();
    let flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
    // SAFETY: the fd is open for the call; the kernel reads one u32 from `flags`.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&dir),
            EXT4_IOC_SHUTDOWN as _,
            &flags as *const u32,
        )
    };
    assert_eq!(
        rc,
        0,
        "shutting down {}: {}",
        mnt.display(),
        std::io::Error::last_os_error()
    );
}

/// Bytes root could still allocate on the filesystem holding `p`: the blocks
/// reserved for root count (arbor runs as root), the clusters ext4 keeps for
/// itself (`reserved_clusters`, which statfs counts as free) do not.
pub fn free_bytes(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let s = nix::sys::statvfs::statvfs(p).unwrap();
    let dev = std::fs::metadata(p).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let kept = std::fs::read_link(format!("/sys/dev/block/{major}:{minor}"))
        .ok()
        .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
        .and_then(|name| std::fs::read_to_string(format!("/sys/fs/ext4/{name}/reserved_clusters")).ok())
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    (s.blocks_free() as u64).saturating_sub(kept) * s.fragment_size() as u64
}

/// Bytes in use on the filesystem holding `p`.
pub fn used_bytes(p: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(p).unwrap();
    (s.blocks() as u64 - s.blocks_free() as u64) * s.fragment_size() as u64
}

/// Files that fill a filesystem; [`Filler::remove`] frees the space again.
pub struct Filler {
    dir: PathBuf,
}

impl Filler {
    /// Removes the filler files.
    pub fn remove(self) {
        std::fs::remove_dir_all(&self.dir).unwrap();
    }
}

/// Fills the filesystem holding `dir` with files in `dir/filler/` (allocated,
/// not sparse) so that about `leave` bytes stay free, counting the blocks
/// reserved for root.
pub fn fill_leaving(dir: &Path, leave: u64) -> Filler {
    use std::io::Write as _;
    let filler = dir.join("filler");
    std::fs::create_dir(&filler).unwrap();
    let free = free_bytes(dir);
    assert!(free > leave, "only {free} bytes free on {}", dir.display());
    // Most of it at once; ext4 keeps some space of its own that statfs counts
    // as free, so the last 64 MiB are written, chunk by chunk, until only
    // `leave` is left or the kernel says there is no more.
    const TAIL: u64 = 64 << 20;
    if free - leave > TAIL {
        run(Command::new("fallocate")
            .args(["-l", &(free - leave - TAIL).to_string()])
            .arg(filler.join("bulk")));
    }
    let mut f = std::fs::File::create(filler.join("tail")).unwrap();
    let zeros = vec![0u8; 1 << 20];
    loop {
        let free = free_bytes(dir);
        if free <= leave {
            break;
        }
        let n = ((free - leave) as usize).min(zeros.len());
        if n < 4096 {
            break;
        }
        match f.write_all(&zeros[..n]).and_then(|_| f.sync_data()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    let left = free_bytes(dir);
    assert!(
        left <= leave + (2 << 20),
        "{} still has {left} bytes free after the filler",
        dir.display()
    );
    Filler { dir: filler }
}
