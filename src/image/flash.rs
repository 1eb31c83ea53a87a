//! `arbor flash`: write an image (raw, `.zst` or `.xz`) to a block device,
//! only the ranges its bmap maps, then read them back and compare checksums.
//!
//! Before anything is written the target is checked: it must be a block
//! device (regular files only when asked for), neither it nor a partition or
//! a device stacked on it (LVM, LUKS) may be mounted or used as swap, it must
//! not hold the running system's `/`, `/boot` or `/usr`, and the image must
//! fit. Then the user confirms on the terminal, unless `--yes`.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal as _, Read, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{FileExt as _, FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
use sha2::{Digest, Sha256};

use super::blockdev::{
    block_dev_of, describe, dev_name, lower_devices, mounts, parent_disk, sharing_storage, via_text,
};
use super::bmap::{self, BLOCK_SIZE, Bmap, Range, human_size};
use super::compress::{Compression, MibProgress, open_decompressed};

/// Write chunk size.
const CHUNK: usize = 4 << 20;
/// Mount points whose disk is never a target.
const SYSTEM_MOUNTS: [&str; 4] = ["/", "/boot", "/boot/efi", "/usr"];

/// What to flash where.
#[derive(Debug, Clone)]
pub struct FlashOptions {
    /// The image: raw, or compressed as `.zst` or `.xz`.
    pub image: PathBuf,
    /// Its bmap; `None` looks beside the image (`a.img.zst` → `a.img.bmap`,
    /// then `a.bmap`) and writes the whole image when there is none.
    pub bmap: Option<PathBuf>,
    /// The block device to overwrite.
    pub device: PathBuf,
    /// Skip the confirmation prompt.
    pub yes: bool,
    /// Read back what was written and compare checksums.
    pub verify: bool,
    /// Accept a regular file as the target (for tests and image copies); it is
    /// truncated to exactly the image.
    pub allow_file: bool,
}

impl FlashOptions {
    /// Options with the defaults: bmap looked up beside the image, confirmation
    /// asked, verification on, block devices only.
    pub fn new(image: impl Into<PathBuf>, device: impl Into<PathBuf>) -> FlashOptions {
        FlashOptions {
            image: image.into(),
            bmap: None,
            device: device.into(),
            yes: false,
            verify: true,
            allow_file: false,
        }
    }
}

/// What [`flash`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FlashReport {
    /// The target.
    pub device: PathBuf,
    /// The bmap used, if any.
    pub bmap: Option<PathBuf>,
    /// Size of the (uncompressed) image in bytes.
    pub image_size: u64,
    /// Bytes written to the device.
    pub bytes_written: u64,
    /// Ranges written (1 without a bmap).
    pub ranges: usize,
    /// Seconds spent writing, including the final sync.
    pub seconds: f64,
    /// Write throughput in MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Whether the data was read back and checked.
    pub verified: bool,
    /// Seconds spent verifying.
    pub verify_seconds: f64,
}

/// Writes `opts.image` to `opts.device` after the safety checks and the
/// confirmation described in the module docs.
pub fn flash(opts: &FlashOptions) -> Result<FlashReport> {
    let image = &opts.image;
    let compression = Compression::from_path(image);
    let bmap_path = find_bmap(opts)?;
    let bmap = bmap_path.as_deref().map(bmap::read).transpose()?;
    let file_size = std::fs::metadata(image)
        .with_context(|| format!("reading image {}", image.display()))?
        .len();
    let image_size = match (&bmap, compression) {
        (Some(b), Compression::None) if b.image_size != file_size => bail!(
            "image {} is {file_size} bytes but its bmap {} says {}; wrong bmap?",
            image.display(),
            bmap_path.as_deref().unwrap_or(Path::new("")).display(),
            b.image_size
        ),
        (Some(b), _) => Some(b.image_size),
        (None, Compression::None) => Some(file_size),
        // Known only once the stream is read; checked while writing.
        (None, _) => None,
    };

    // A raw image is checked against its bmap before the first byte reaches the
    // device (one more read of the mapped bytes, usually from the page cache),
    // so a changed image never leaves a partial one on a card. A compressed one
    // would have to be decompressed twice: it is checked range by range while
    // it is written.
    if let (Some(b), Compression::None) = (&bmap, compression) {
        check_against_bmap(image, b, bmap_path.as_deref().unwrap_or(Path::new("")))?;
    }

    let target = Target::inspect(&opts.device, opts.allow_file)?;
    target.check_unused()?;
    target.check_not_system()?;
    if let (Some(img), Some(dev)) = (image_size, target.size) {
        if img > dev {
            bail!(
                "refusing to write to {}: the image ({}, {img} bytes) is larger than the device ({}, {dev} bytes)",
                target.path.display(),
                human_size(img),
                human_size(dev)
            );
        }
    }
    if !opts.yes {
        target.confirm()?;
    }

    let out = target.open_for_writing(image_size)?;
    let start = Instant::now();
    let (plan, written) = match &bmap {
        Some(b) => {
            let n = write_mapped(image, compression, b, &out, &target)?;
            (b.clone(), n)
        }
        None => write_all(image, &out, &target)?,
    };
    out.sync_all()
        .with_context(|| format!("syncing {} (the data may not all be on it)", target.path.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    drop(out);
    tracing::info!(
        device = %target.path.display(),
        bytes = written,
        seconds,
        "wrote {} in {} ranges",
        human_size(written),
        plan.ranges.len()
    );

    let vstart = Instant::now();
    if opts.verify {
        verify(&target.path, &plan)?;
    }
    Ok(FlashReport {
        device: target.path.clone(),
        bmap: bmap_path,
        image_size: plan.image_size,
        bytes_written: written,
        ranges: plan.ranges.len(),
        seconds,
        mb_per_s: if seconds > 0.0 {
            written as f64 / 1e6 / seconds
        } else {
            0.0
        },
        verified: opts.verify,
        verify_seconds: if opts.verify {
            vstart.elapsed().as_secs_f64()
        } else {
            0.0
        },
    })
}

/// The bmap to use: the one given (which must exist), else the first of
/// `a.img.bmap` and `a.bmap` beside `a.img[.zst|.xz]`.
fn find_bmap(opts: &FlashOptions) -> Result<Option<PathBuf>> {
    if let Some(b) = &opts.bmap {
        if !b.is_file() {
            bail!("bmap {} does not exist", b.display());
        }
        return Ok(Some(b.clone()));
    }
    let base = Compression::from_path(&opts.image).strip(&opts.image);
    let mut appended = base.clone().into_os_string();
    appended.push(".bmap");
    let candidates = [PathBuf::from(appended), base.with_extension("bmap")];
    let found = candidates.iter().find(|p| p.is_file()).cloned();
    if found.is_none() {
        tracing::info!(
            "no bmap beside {} (looked for {}); writing the whole image",
            opts.image.display(),
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(found)
}

/// Writes the ranges `b` maps, reading the image as a stream (skipping the
/// holes) or by offset when it is raw. Checks each range against the bmap's
/// checksum as it goes. Returns the bytes written.
fn write_mapped(image: &Path, c: Compression, b: &Bmap, out: &File, target: &Target) -> Result<u64> {
    let bar = MibProgress::new(b.mapped_bytes(), "flashing");
    let mut src = match c {
        Compression::None => {
            Source::Raw(File::open(image).with_context(|| format!("opening image {}", image.display()))?)
        }
        _ => Source::Stream(open_decompressed(image)?),
    };
    let mut pos = 0u64;
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0u64;
    for r in &b.ranges {
        let (offset, len) = (r.offset(b.block_size), r.len(b.block_size, b.image_size));
        if let Source::Stream(s) = &mut src {
            let skipped = std::io::copy(&mut s.take(offset - pos), &mut std::io::sink())
                .with_context(|| format!("reading image {}", image.display()))?;
            if skipped != offset - pos {
                bail!(
                    "image {} ends at byte {} but its bmap maps blocks {} (ImageSize {})",
                    image.display(),
                    pos + skipped,
                    r.label(),
                    b.image_size
                );
            }
        }
        let mut h = Sha256::new();
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            let chunk = &mut buf[..n];
            let read = match &mut src {
                Source::Raw(f) => f.read_exact_at(chunk, offset + done),
                // The stream stands at `offset + done`.
                Source::Stream(s) => s.read_exact(chunk),
            };
            read.with_context(|| format!("reading blocks {} of image {}", r.label(), image.display()))?;
            h.update(&*chunk);
            out.write_all_at(chunk, offset + done)
                .with_context(|| format!("writing blocks {} to {}", r.label(), target.path.display()))?;
            done += n as u64;
            bar.add(n as u64);
        }
        pos = offset + len;
        written += len;
        let actual = hex::encode(h.finalize());
        if let Some(want) = &r.sha256 {
            if &actual != want {
                bail!(
                    "image {} does not match its bmap: blocks {} hash to {actual}, the bmap says {want} \
                     ({} now holds a partial image that will not boot: rebuild the image, or give the \
                     bmap that goes with it, and flash again)",
                    image.display(),
                    r.label(),
                    target.path.display()
                );
            }
        }
    }
    bar.finish();
    Ok(written)
}

/// Hashes every range the bmap maps in the raw `image` and compares it with the
/// bmap's checksum; writes nothing.
fn check_against_bmap(image: &Path, b: &Bmap, bmap_path: &Path) -> Result<()> {
    let f = File::open(image).with_context(|| format!("opening image {}", image.display()))?;
    let bar = MibProgress::new(b.mapped_bytes(), "checking");
    for r in &b.ranges {
        let Some(want) = &r.sha256 else { continue };
        let (offset, len) = (r.offset(b.block_size), r.len(b.block_size, b.image_size));
        let actual = bmap::hash_at(&f, offset, len)
            .with_context(|| format!("reading blocks {} of image {}", r.label(), image.display()))?;
        bar.add(len);
        if &actual != want {
            bail!(
                "image {} does not match its bmap {}: blocks {} hash to {actual}, the bmap says {want}; \
                 the image changed after the bmap was made (booted read-write, or edited): nothing was \
                 written, rebuild the image or give the bmap that goes with it",
                image.display(),
                bmap_path.display(),
                r.label()
            );
        }
    }
    bar.finish();
    Ok(())
}

/// Where image bytes come from: a raw image is read by offset, a compressed
/// one as a stream that skips the holes by reading past them.
enum Source {
    Raw(File),
    Stream(Box<dyn Read>),
}

/// Writes the whole image stream from offset 0. Returns a one-range bmap of
/// what was written (for [`verify`]) and the byte count.
fn write_all(image: &Path, out: &File, target: &Target) -> Result<(Bmap, u64)> {
    let mut src = open_decompressed(image)?;
    let len = match Compression::from_path(image) {
        Compression::None => std::fs::metadata(image).map(|m| m.len()).unwrap_or(0),
        _ => 0,
    };
    let bar = MibProgress::new(len, "flashing");
    let mut buf = vec![0u8; CHUNK];
    let mut h = Sha256::new();
    let mut written = 0u64;
    loop {
        let n = read_full(&mut src, &mut buf).with_context(|| format!("reading image {}", image.display()))?;
        if n == 0 {
            break;
        }
        if let Some(dev) = target.size.filter(|&d| written + n as u64 > d) {
            bail!(
                "the image is larger than the device {} ({}, {dev} bytes): stopped after writing {written} bytes; \
                 the device now holds a partial image",
                target.path.display(),
                human_size(dev),
            );
        }
        h.update(&buf[..n]);
        out.write_all_at(&buf[..n], written)
            .with_context(|| format!("writing {} at byte {written}", target.path.display()))?;
        written += n as u64;
        bar.add(n as u64);
    }
    bar.finish();
    let plan = Bmap {
        image_size: written,
        block_size: BLOCK_SIZE,
        ranges: if written == 0 {
            Vec::new()
        } else {
            vec![Range {
                first: 0,
                last: written.div_ceil(BLOCK_SIZE) - 1,
                sha256: Some(hex::encode(h.finalize())),
            }]
        },
    };
    Ok((plan, written))
}

/// Reads until `buf` is full or the stream ends.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads back every range of `bmap` that has a checksum from `device`, after
/// dropping its cached pages, and compares SHA-256s. A mismatch names the range.
pub fn verify(device: &Path, bmap: &Bmap) -> Result<()> {
    let f = File::open(device).with_context(|| format!("opening {} to verify it", device.display()))?;
    drop_caches(&f, device);
    let bar = MibProgress::new(bmap.mapped_bytes(), "verifying");
    for r in &bmap.ranges {
        let Some(want) = &r.sha256 else { continue };
        let (offset, len) = (r.offset(bmap.block_size), r.len(bmap.block_size, bmap.image_size));
        let got = bmap::hash_at(&f, offset, len)
            .with_context(|| format!("reading back blocks {} from {}", r.label(), device.display()))?;
        if &got != want {
            bail!(
                "verification failed: blocks {} (bytes {offset}..{}) of {} read back with sha256 {got}, \
                 the image has {want}",
                r.label(),
                offset + len,
                device.display()
            );
        }
        bar.add(len);
    }
    bar.finish();
    Ok(())
}

/// Makes the next reads of `f` come from the device, not the page cache.
fn drop_caches(f: &File, path: &Path) {
    if let Err(e) = posix_fadvise(f, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED) {
        tracing::debug!("posix_fadvise(DONTNEED) on {}: {e}", path.display());
    }
    let is_block = f.metadata().map(|m| m.file_type().is_block_device()).unwrap_or(false);
    if is_block {
        if let Err(e) = flush_block_buffers(f) {
            tracing::debug!("BLKFLSBUF on {}: {e}", path.display());
        }
    }
}

/// The BLKFLSBUF ioctl: write back and drop a block device's buffer cache.
fn flush_block_buffers(f: &File) -> std::io::Result<()> {
    /// `_IO(0x12, 97)` from `<linux/fs.h>`.
    const BLKFLSBUF: u64 = 0x1261;
    // SAFETY: BLKFLSBUF takes no argument and only acts on `f`'s descriptor,
    // which `f` keeps open for the duration of the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKFLSBUF as _) };
    if r == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The device to write, as found before writing.
struct Target {
    path: PathBuf,
    /// `Some(dev_t)` for a block device, `None` for an allowed regular file.
    dev: Option<u64>,
    /// Size in bytes; `None` for a regular file (it grows).
    size: Option<u64>,
}

impl Target {
    fn inspect(path: &Path, allow_file: bool) -> Result<Target> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("refusing to write to {}: cannot stat it", path.display()))?;
        let ft = meta.file_type();
        if ft.is_block_device() {
            let f = File::open(path).with_context(|| format!("opening {} to read its size", path.display()))?;
            let size = std::io::Seek::seek(&mut &f, std::io::SeekFrom::End(0))
                .with_context(|| format!("reading the size of {}", path.display()))?;
            return Ok(Target {
                path: path.to_path_buf(),
                dev: Some(meta.rdev()),
                size: Some(size),
            });
        }
        let kind = if ft.is_file() {
            "a regular file"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_char_device() {
            "a character device"
        } else {
            "not a block device"
        };
        if ft.is_file() && allow_file {
            return Ok(Target {
                path: path.to_path_buf(),
                dev: None,
                size: None,
            });
        }
        bail!(
            "refusing to write to {}: it is {kind}, not a block device (an SD card is /dev/sdX or /dev/mmcblkN)",
            path.display()
        )
    }

    /// Refuses when the device, a partition of it, a device stacked on it, or
    /// another device over the same storage (a loop device on the same file or on
    /// this device, the device a loop target is backed by) is mounted or used as swap.
    fn check_unused(&self) -> Result<()> {
        let Some(dev) = self.dev else { return Ok(()) };
        let related = sharing_storage(dev);
        for m in mounts()? {
            if let Some((d, via)) = m.devs.iter().find_map(|d| related.get_key_value(d)) {
                bail!(
                    "refusing to write to {}: {} is mounted on {}{}; unmount it first",
                    self.path.display(),
                    dev_name(*d),
                    m.mountpoint,
                    via_text(via)
                );
            }
        }
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
        for line in swaps.lines().skip(1) {
            let Some(p) = line.split_whitespace().next() else {
                continue;
            };
            if let Some((d, via)) = block_dev_of(Path::new(p)).and_then(|d| related.get_key_value(&d)) {
                bail!(
                    "refusing to write to {}: {} is in use as swap{}; swapoff it first",
                    self.path.display(),
                    dev_name(*d),
                    via_text(via)
                );
            }
        }
        Ok(())
    }

    /// Refuses when the device (or the disk it is a partition of, or a device
    /// over the same storage) holds the running system's `/`, `/boot` or `/usr`,
    /// looking through partitions, device-mapper and md stacks and loop devices'
    /// backing files and block devices.
    fn check_not_system(&self) -> Result<()> {
        let Some(dev) = self.dev else { return Ok(()) };
        let mut ours = sharing_storage(dev);
        if let Some(disk) = parent_disk(dev) {
            ours.entry(disk).or_insert(None);
        }
        let mounts = mounts()?;
        for mp in SYSTEM_MOUNTS {
            // The last mount on a path is the one in effect.
            let Some(m) = mounts.iter().rev().find(|m| m.mountpoint == mp) else {
                continue;
            };
            let mut below = BTreeSet::new();
            for &d in &m.devs {
                lower_devices(d, &mut below);
            }
            if let Some((d, via)) = below.iter().find_map(|d| ours.get_key_value(d)) {
                bail!(
                    "refusing to write to {}: it holds the running system's {mp} (through {}{})",
                    self.path.display(),
                    dev_name(*d),
                    via_text(via)
                );
            }
        }
        Ok(())
    }

    /// Asks on the terminal; fails unless the answer is `YES`.
    fn confirm(&self) -> Result<()> {
        let what = match (self.dev, self.size) {
            (Some(dev), Some(size)) => format!("{}, {}", human_size(size), describe(dev)),
            _ => "a regular file".to_string(),
        };
        if !std::io::stdin().is_terminal() {
            bail!(
                "refusing to overwrite {} ({what}) without confirmation: stdin is not a terminal; pass --yes",
                self.path.display()
            );
        }
        let mut err = std::io::stderr().lock();
        write!(err, "Type YES to overwrite {} ({what}): ", self.path.display())
            .and_then(|()| err.flush())
            .context("writing the confirmation prompt")?;
        drop(err);
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .context("reading the confirmation")?;
        if answer.trim() != "YES" {
            bail!("not confirmed; {} was left untouched", self.path.display());
        }
        Ok(())
    }

    /// Opens for writing: exclusively for a block device (the kernel refuses
    /// while anything holds it), truncated to the image for a regular file.
    fn open_for_writing(&self, image_size: Option<u64>) -> Result<File> {
        let mut o = OpenOptions::new();
        o.write(true);
        if self.dev.is_some() {
            o.custom_flags(libc::O_EXCL);
        }
        let f = o.open(&self.path).map_err(|e| {
            let why = if e.raw_os_error() == Some(libc::EBUSY) {
                anyhow::anyhow!("the kernel reports it busy (mounted, swap, or part of RAID/LVM)")
            } else {
                anyhow::Error::new(e)
            };
            why.context(format!(
                "refusing to write to {}: cannot open it exclusively",
                self.path.display()
            ))
        })?;
        if self.dev.is_none() {
            // Holes in the image must read as zeros, not as old contents.
            f.set_len(0)
                .and_then(|()| f.set_len(image_size.unwrap_or(0)))
                .with_context(|| format!("truncating {}", self.path.display()))?;
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bmap_lookup_beside_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.img.zst");
        std::fs::write(&img, b"").unwrap();
        let opts = FlashOptions::new(&img, "/dev/null");
        assert_eq!(find_bmap(&opts).unwrap(), None);
        std::fs::write(dir.path().join("a.bmap"), b"").unwrap();
        assert_eq!(find_bmap(&opts).unwrap(), Some(dir.path().join("a.bmap")));
        std::fs::write(dir.path().join("a.img.bmap"), b"").unwrap();
        assert_eq!(find_bmap(&opts).unwrap(), Some(dir.path().join("a.img.bmap")));
        let missing = FlashOptions {
            bmap: Some(dir.path().join("nope.bmap")),
            ..opts
        };
        assert!(format!("{:#}", find_bmap(&missing).unwrap_err()).contains("nope.bmap"));
    }

    #[test]
    fn refuses_character_devices_and_files() {
        for (path, allow, want) in [
            ("/dev/null", true, "character device"),
            ("/", true, "directory"),
            ("/etc/hostname", false, "regular file"),
        ] {
            let e = Target::inspect(Path::new(path), allow).err().unwrap();
            let msg = format!("{e:#}");
            assert!(msg.contains(path) && msg.contains(want), "{msg}");
        }
    }

    #[test]
    fn root_disk_is_refused() {
        use super::super::blockdev::sysfs;
        // Whatever holds / here must be refused, whole disk and partition.
        let Some(root) = mounts().unwrap().into_iter().rev().find(|m| m.mountpoint == "/") else {
            return;
        };
        let dev = root.devs[0];
        let Some(dir) = sysfs(dev) else { return }; // overlay or tmpfs root
        let node = PathBuf::from("/dev").join(dir.file_name().unwrap());
        if block_dev_of(&node) != Some(dev) {
            return;
        }
        let t = Target {
            path: node.clone(),
            dev: Some(dev),
            size: None,
        };
        let e = t.check_not_system().unwrap_err();
        assert!(format!("{e:#}").contains(&*node.to_string_lossy()), "{e:#}");
    }
}
