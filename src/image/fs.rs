//! Filesystems written straight into a region of the image file: FAT with
//! `fatfs`, ext4 with `mkfs.ext4 -d -E offset=` — no loop devices, no mounts.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// A window `[offset, offset + len)` of a file, as a seekable stream.
pub struct Slice<'a> {
    file: &'a File,
    offset: u64,
    len: u64,
    pos: u64,
}

impl<'a> Slice<'a> {
    /// The window of `file` starting at `offset`, `len` bytes long.
    pub fn new(file: &'a File, offset: u64, len: u64) -> Slice<'a> {
        Slice {
            file,
            offset,
            len,
            pos: 0,
        }
    }
}

impl Read for Slice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        let got = self.file.read_at(&mut buf[..n], self.offset + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for Slice<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if self.pos + buf.len() as u64 > self.len {
            return Err(std::io::Error::other("write past the end of the partition"));
        }
        let n = self.file.write_at(buf, self.offset + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for Slice<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::End(d) => self.len as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if new < 0 {
            return Err(std::io::Error::other("seek before the start of the partition"));
        }
        self.pos = new as u64;
        Ok(self.pos)
    }
}

/// A file for a FAT partition: where it goes, and its bytes' source.
#[derive(Debug, Clone)]
pub enum FatSource {
    /// Copied from this open file (opened beneath the deployed tree, see [`super::tree`]).
    File(std::sync::Arc<File>),
    /// These bytes (rendered configs).
    Bytes(Vec<u8>),
}

/// Formats the region as FAT (fatfs picks FAT16/32 from the size) and writes
/// `files` (paths relative to the partition root, `/`-separated), in order.
/// Timestamps are FAT's epoch (fatfs without a clock), so output is reproducible.
pub fn write_fat(
    file: &File,
    offset: u64,
    len: u64,
    label: &str,
    volume_id: u32,
    files: &[(String, FatSource)],
) -> Result<()> {
    let mut label_bytes = [b' '; 11];
    for (i, b) in label.bytes().take(11).enumerate() {
        label_bytes[i] = b.to_ascii_uppercase();
    }
    let mut slice = Slice::new(file, offset, len);
    fatfs::format_volume(
        &mut slice,
        fatfs::FormatVolumeOptions::new()
            .volume_label(label_bytes)
            .volume_id(volume_id),
    )
    .with_context(|| format!("formatting the FAT partition {label}"))?;
    slice.seek(SeekFrom::Start(0)).context("rewinding the FAT partition")?;
    let fs = fatfs::FileSystem::new(slice, fatfs::FsOptions::new().update_accessed_date(false))
        .with_context(|| format!("opening the FAT partition {label}"))?;
    let root = fs.root_dir();
    for (dest, src) in files {
        let dest = dest.trim_start_matches('/');
        let mut parts: Vec<&str> = dest.split('/').collect();
        let name = parts.pop().context("an empty FAT path")?;
        let mut dir = root.clone();
        for p in parts {
            dir = match dir.open_dir(p) {
                Ok(d) => d,
                Err(_) => dir.create_dir(p).with_context(|| format!("creating {p} on {label}"))?,
            };
        }
        let mut f = dir
            .create_file(name)
            .with_context(|| format!("creating /{dest} on {label}"))?;
        f.truncate().with_context(|| format!("truncating /{dest} on {label}"))?;
        match src {
            FatSource::Bytes(b) => f.write_all(b),
            FatSource::File(input) => std::io::copy(&mut input.as_ref(), &mut f).map(|_| ()),
        }
        .with_context(|| format!("writing /{dest} on {label} (is the partition big enough?)"))?;
        f.flush().with_context(|| format!("writing /{dest} on {label}"))?;
    }
    drop(root);
    fs.unmount()
        .with_context(|| format!("finishing the FAT partition {label}"))
}

/// Makes an ext4 filesystem of `len` bytes at `offset` in `image`, filled from
/// `source` (`mkfs.ext4 -d`), with a fixed UUID, hash seed and clock
/// (`E2FSPROGS_FAKE_TIME`) so the same tree gives the same bytes.
pub fn write_ext4(
    image: &Path,
    offset: u64,
    len: u64,
    label: &str,
    uuid: &str,
    source: &Path,
    timestamp: u64,
) -> Result<()> {
    // The filesystem uses whole 4 KiB blocks; a partition's odd tail stays unused.
    let len = len / 4096 * 4096;
    if len == 0 {
        bail!("ext4 partition {label} is smaller than one 4 KiB block");
    }
    crate::runner::Tool::new("mkfs.ext4")
        .args(["-F", "-q", "-b", "4096", "-L", label, "-U", uuid, "-I", "256"])
        .arg("-E")
        .arg(format!(
            "offset={offset},root_owner=0:0,hash_seed={uuid},lazy_itable_init=1,nodiscard"
        ))
        .arg("-d")
        .arg(source)
        .arg(image)
        .arg(format!("{}k", len / 1024))
        .env("E2FSPROGS_FAKE_TIME", timestamp.to_string())
        .env("SOURCE_DATE_EPOCH", timestamp.to_string())
        .env("MKE2FS_DEVICE_SECTSIZE", "512")
        .run()
        .with_context(|| format!("making the ext4 partition {label} from {}", source.display()))
}

/// Sets every mtime and atime under `dir` (not following symlinks) to
/// `timestamp`, so the filesystems built from it do not record the build time.
pub fn clamp_times(dir: &Path, timestamp: u64) -> Result<()> {
    // rustix rather than nix: its times are 64-bit on 32-bit targets too (armv7's time_t is not).
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, utimensat};
    let t = Timespec {
        tv_sec: i64::try_from(timestamp).with_context(|| format!("timestamp {timestamp} is out of range"))?,
        tv_nsec: 0,
    };
    let t = Timestamps {
        last_access: t,
        last_modification: t,
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e.with_context(|| format!("reading {}", d.display()))?;
            let p = e.path();
            if e.file_type()
                .with_context(|| format!("looking at {}", p.display()))?
                .is_dir()
            {
                stack.push(p.clone());
            }
            utimensat(CWD, &p, &t, AtFlags::SYMLINK_NOFOLLOW)
                .with_context(|| format!("setting the time of {}", p.display()))?;
        }
        utimensat(CWD, &d, &t, AtFlags::SYMLINK_NOFOLLOW)
            .with_context(|| format!("setting the time of {}", d.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_stays_inside_its_window() {
        let t = tempfile::tempfile().unwrap();
        t.set_len(4096).unwrap();
        let mut s = Slice::new(&t, 1024, 512);
        s.write_all(&[7u8; 512]).unwrap();
        assert!(s.write(&[1]).is_err(), "past the end");
        s.seek(SeekFrom::Start(0)).unwrap();
        let mut buf = vec![0u8; 1000];
        let n = s.read(&mut buf).unwrap();
        assert_eq!(n, 512);
        use std::os::unix::fs::FileExt;
        let mut before = [9u8; 1];
        t.read_at(&mut before, 1023).unwrap();
        assert_eq!(before[0], 0, "nothing written before the window");
    }

    #[test]
    fn clamp_times_sets_files_dirs_and_symlinks_themselves() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/f"), b"x").unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("l")).unwrap();
        // Past 2038, which a 32-bit time_t cannot hold.
        let ts = 4_102_444_800;
        clamp_times(d.path(), ts).unwrap();
        for p in [
            d.path().to_path_buf(),
            d.path().join("sub"),
            d.path().join("sub/f"),
            d.path().join("l"),
        ] {
            let m = std::fs::symlink_metadata(&p).unwrap();
            assert_eq!((m.mtime(), m.atime()), (ts as i64, ts as i64), "{}", p.display());
        }
        let target = std::fs::metadata(outside.path()).unwrap();
        assert_ne!(target.mtime(), ts as i64, "the symlink's target is not touched");
    }

    #[test]
    fn fat_files_read_back() {
        let t = tempfile::tempfile().unwrap();
        t.set_len(64 << 20).unwrap();
        let files = vec![
            ("config.txt".to_string(), FatSource::Bytes(b"arm_64bit=1\n".to_vec())),
            ("overlays/a/b.dtbo".to_string(), FatSource::Bytes(vec![1, 2, 3])),
        ];
        write_fat(&t, 1 << 20, 32 << 20, "firmware", 0xdead_beef, &files).unwrap();
        let fs = fatfs::FileSystem::new(Slice::new(&t, 1 << 20, 32 << 20), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_id(), 0xdead_beef);
        assert_eq!(fs.volume_label().trim(), "FIRMWARE");
        let mut s = String::new();
        fs.root_dir()
            .open_file("config.txt")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "arm_64bit=1\n");
        let mut v = Vec::new();
        fs.root_dir()
            .open_file("overlays/a/b.dtbo")
            .unwrap()
            .read_to_end(&mut v)
            .unwrap();
        assert_eq!(v, [1, 2, 3]);
    }
}
