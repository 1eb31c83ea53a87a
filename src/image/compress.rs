//! Compressed images: zstd (multi-threaded) or xz streams, chosen by the file
//! name's extension, written atomically and read back as plain byte streams
//! for `arbor flash`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::decompress::{DecompressReader, Format, Streams};
use crate::progress::Progress;

/// zstd level for images: much smaller than the default 3 at a speed that still
/// keeps up with an SD card; decompression speed does not depend on it.
const ZSTD_LEVEL: i32 = 9;
/// xz preset (xz's own default).
const XZ_PRESET: u32 = 6;
/// Read and write buffer size for streaming.
const BUF: usize = 1 << 20;

/// How an image file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A raw image.
    None,
    /// zstd (`.zst`).
    Zstd,
    /// xz (`.xz`).
    Xz,
}

impl Compression {
    /// The compression a file name asks for: `.zst` is zstd, `.xz` is xz,
    /// anything else is a raw image.
    pub fn from_path(path: &Path) -> Compression {
        match path.extension().and_then(|e| e.to_str()) {
            Some("zst") => Compression::Zstd,
            Some("xz") => Compression::Xz,
            _ => Compression::None,
        }
    }

    /// The file name extension, without the dot (`None` for raw images).
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Zstd => Some("zst"),
            Compression::Xz => Some("xz"),
        }
    }

    /// The path with this compression's extension removed (`a.img.zst` →
    /// `a.img`); unchanged for raw images or when the extension does not match.
    pub fn strip(self, path: &Path) -> PathBuf {
        match self.extension() {
            Some(ext) if path.extension().and_then(|e| e.to_str()) == Some(ext) => path.with_extension(""),
            _ => path.to_path_buf(),
        }
    }
}

/// Compresses `src` into `dst` with `c` (a plain copy for
/// [`Compression::None`]). `dst` is written to a temporary file beside it,
/// synced and renamed into place, so it is either complete or untouched.
/// `progress` shows a bar on a terminal.
pub fn compress(src: &Path, dst: &Path, c: Compression, progress: bool) -> Result<()> {
    let input = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let len = input
        .metadata()
        .with_context(|| format!("reading the size of {}", src.display()))?
        .len();
    let bar = progress.then(|| MibProgress::new(len, "compressing"));
    let mut reader = Counting {
        inner: BufReader::with_capacity(BUF, input),
        bar: bar.as_ref(),
    };
    let tmp = crate::atomic::temp_beside(dst)?;
    let out = BufWriter::with_capacity(BUF, tmp.as_file());
    let what = || format!("compressing {} into {}", src.display(), tmp.path().display());
    match c {
        Compression::None => {
            let mut out = out;
            std::io::copy(&mut reader, &mut out).with_context(what)?;
            out.flush().with_context(what)?;
        }
        Compression::Zstd => {
            let mut enc = zstd::Encoder::new(out, ZSTD_LEVEL).with_context(what)?;
            enc.include_checksum(true).with_context(what)?;
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            // One worker per core; the reading thread only feeds them.
            enc.multithread(u32::try_from(threads).unwrap_or(1))
                .with_context(what)?;
            std::io::copy(&mut reader, &mut enc).with_context(what)?;
            enc.finish().with_context(what)?.flush().with_context(what)?;
        }
        Compression::Xz => {
            let mut enc = liblzma::write::XzEncoder::new(out, XZ_PRESET);
            std::io::copy(&mut reader, &mut enc).with_context(what)?;
            enc.finish().with_context(what)?.flush().with_context(what)?;
        }
    }
    if let Some(b) = &bar {
        b.finish();
    }
    crate::atomic::persist(tmp, dst)
}

/// Opens `path` for reading its uncompressed bytes: zstd for `.zst`, xz for
/// `.xz` (checked against the stream's magic bytes), the file itself otherwise.
pub fn open_decompressed(path: &Path) -> Result<Box<dyn Read>> {
    let c = Compression::from_path(path);
    let mut file = BufReader::with_capacity(
        BUF,
        File::open(path).with_context(|| format!("opening {}", path.display()))?,
    );
    let format = match c {
        Compression::None => return Ok(Box::new(file)),
        Compression::Zstd => Format::Zstd,
        Compression::Xz => Format::Xz,
    };
    let head = std::io::BufRead::fill_buf(&mut file).with_context(|| format!("reading {}", path.display()))?;
    if !head.starts_with(format.magic()) {
        bail!(
            "{} is named like a {c:?} image but does not start with {c:?}'s magic bytes",
            path.display()
        );
    }
    Ok(Box::new(Decompressing {
        // Every xz stream, as `xz` itself writes for concatenated or threaded input.
        inner: DecompressReader::new(file, format, Streams::All)
            .with_context(|| format!("starting to decompress {}", path.display()))?,
        path: path.to_path_buf(),
    }))
}

/// A decompressing reader whose errors name the file.
struct Decompressing<R> {
    inner: R,
    path: PathBuf,
}

impl<R: Read> Read for Decompressing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| std::io::Error::new(e.kind(), format!("decompressing {}: {e}", self.path.display())))
    }
}

/// A progress bar counting bytes in MiB steps ([`Progress`] counts steps).
pub(crate) struct MibProgress {
    bar: Progress,
    bytes: std::cell::Cell<u64>,
}

impl MibProgress {
    /// A bar for `len` bytes of `what`.
    pub(crate) fn new(len: u64, what: &str) -> MibProgress {
        MibProgress {
            bar: Progress::bar(len.div_ceil(1 << 20), &format!("{what} (MiB)")),
            bytes: std::cell::Cell::new(0),
        }
    }

    /// `n` more bytes done.
    pub(crate) fn add(&self, n: u64) {
        let before = self.bytes.get();
        let after = before + n;
        self.bytes.set(after);
        for _ in (before >> 20)..(after >> 20) {
            self.bar.inc();
        }
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        self.bar.finish();
    }
}

/// A reader that reports what passes through it to a progress bar.
struct Counting<'a, R> {
    inner: R,
    bar: Option<&'a MibProgress>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = self.bar {
            b.add(n as u64);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        // Compressible but not trivial: a counter pattern with zero runs.
        (0..3_000_000u32)
            .map(|i| if (i / 65536) % 3 == 0 { 0 } else { (i % 251) as u8 })
            .collect()
    }

    #[test]
    fn from_path_by_extension() {
        for (name, c) in [
            ("a.img", Compression::None),
            ("a.img.zst", Compression::Zstd),
            ("a.img.xz", Compression::Xz),
            ("a.zst.img", Compression::None),
            ("a", Compression::None),
        ] {
            assert_eq!(Compression::from_path(Path::new(name)), c, "{name}");
        }
        assert_eq!(Compression::Zstd.strip(Path::new("x/a.img.zst")), Path::new("x/a.img"));
        assert_eq!(Compression::Xz.strip(Path::new("a.img.zst")), Path::new("a.img.zst"));
    }

    #[test]
    fn round_trip_each_compression() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.img");
        let data = sample();
        std::fs::write(&src, &data).unwrap();
        for c in [Compression::None, Compression::Zstd, Compression::Xz] {
            let dst = match c.extension() {
                Some(ext) => dir.path().join(format!("a.img.{ext}")),
                None => dir.path().join("copy.img"),
            };
            compress(&src, &dst, c, false).unwrap();
            let mut back = Vec::new();
            open_decompressed(&dst).unwrap().read_to_end(&mut back).unwrap();
            assert!(back == data, "{c:?} round trip differs");
            if c != Compression::None {
                assert!(std::fs::metadata(&dst).unwrap().len() < data.len() as u64 / 2, "{c:?}");
            }
        }
        // Nothing temporary left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }

    #[test]
    fn wrong_magic_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("raw.img.zst");
        std::fs::write(&p, b"not zstd at all").unwrap();
        let e = open_decompressed(&p).err().unwrap();
        assert!(format!("{e:#}").contains("raw.img.zst"), "{e:#}");
    }

    #[test]
    fn truncated_stream_fails_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.img");
        std::fs::write(&src, sample()).unwrap();
        let dst = dir.path().join("a.img.zst");
        compress(&src, &dst, Compression::Zstd, false).unwrap();
        let bytes = std::fs::read(&dst).unwrap();
        std::fs::write(&dst, &bytes[..bytes.len() / 2]).unwrap();
        let mut sink = Vec::new();
        let e = open_decompressed(&dst).unwrap().read_to_end(&mut sink).unwrap_err();
        assert!(e.to_string().contains("a.img.zst"), "{e}");
    }
}
