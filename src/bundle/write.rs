//! Writing a bundle archive: tar (fixed owners, modes and times, so the same
//! inputs give the same bytes) inside one zstd frame with its checksum.

use std::io::{self, Read, Write};

use anyhow::{Context, Result, bail};

use super::{HashWriter, MANIFEST, MANIFEST_SIG, Manifest};

/// zstd level: deltas are mostly compressed already; this keeps creation fast.
const LEVEL: i32 = 3;

/// Writes the bundle to `out` and returns it once the zstd frame is complete:
/// `manifest_bytes` (which must parse to `manifest`), `sig`, then one member
/// per manifest entry, read from `open(name)`. Each member's bytes are hashed
/// again while written, so a file that changed since the manifest was made
/// fails here rather than on every device. `mtime` is every entry's time.
pub fn write_archive<W: Write>(
    out: W,
    manifest: &Manifest,
    sig: &[u8; 64],
    mtime: u64,
    mut open: impl FnMut(&str) -> Result<Box<dyn Read>>,
) -> Result<W> {
    let manifest_bytes = manifest.to_bytes();
    let mut enc = zstd::Encoder::new(out, LEVEL).context("starting the zstd stream")?;
    enc.include_checksum(true).context("enabling the zstd checksum")?;
    let mut tar = tar::Builder::new(enc);
    append(
        &mut tar,
        MANIFEST,
        manifest_bytes.len() as u64,
        mtime,
        &mut manifest_bytes.as_slice(),
    )?;
    append(&mut tar, MANIFEST_SIG, sig.len() as u64, mtime, &mut sig.as_slice())?;
    for m in &manifest.members {
        let mut r = Checked {
            inner: open(&m.name)?,
            remaining: m.size,
            hash: HashWriter::default(),
        };
        append(&mut tar, &m.name, m.size, mtime, &mut r)?;
        let got = r.hash.finish();
        if got != m.sha256 {
            bail!(
                "member {} changed while the bundle was written (sha256 {got}, manifest {})",
                m.name,
                m.sha256
            );
        }
    }
    let enc = tar.into_inner().context("finishing the tar archive")?;
    enc.finish().context("finishing the zstd stream")
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, size: u64, mtime: u64, data: &mut dyn Read) -> Result<()> {
    // GNU headers: sizes past 8 GiB are stored in binary instead of octal.
    let mut h = tar::Header::new_gnu();
    h.set_path(name).with_context(|| format!("naming member {name}"))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    tar.append(&h, data).with_context(|| format!("writing member {name}"))
}

/// Yields exactly `remaining` bytes of `inner`, hashing them; a source that
/// ends early is an error instead of a short member.
struct Checked {
    inner: Box<dyn Read>,
    remaining: u64,
    hash: HashWriter,
}

impl Read for Checked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the source ended {} bytes early", self.remaining),
            ));
        }
        self.remaining -= n as u64;
        self.hash.write_all(&buf[..n])?;
        Ok(n)
    }
}
