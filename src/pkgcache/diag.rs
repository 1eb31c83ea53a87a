//! When the rpm crate refuses a payload entry ("does not match an RPM file
//! header", "not valid UTF-8"), its error does not say which entry. This walks
//! the cpio archive once more, reading names only, to name it. Used on the
//! error path only: the import has already failed.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;

use super::plan::{Plan, show_bytes};

/// Reads `file` from `pos` with `pread`, leaving the descriptor's offset alone.
struct At<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A sentence naming the first payload entry that is not a file of the
/// header, or `None` when no such entry is found.
pub(crate) fn explain(file: &File, payload_offset: u64, plan: &Plan) -> Option<String> {
    let mut raw = BufReader::new(At {
        file,
        pos: payload_offset,
    });
    let magic = raw.fill_buf().ok()?.get(..6)?.to_vec();
    let mut archive: Box<dyn Read + '_> = if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(raw).ok()?)
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::bufread::XzDecoder::new(raw))
    } else if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::GzDecoder::new(raw))
    } else if magic.starts_with(b"0707") {
        Box::new(raw)
    } else {
        return None;
    };
    scan(&mut archive, plan)
}

fn scan(archive: &mut dyn Read, plan: &Plan) -> Option<String> {
    let mut seen = HashSet::new();
    for nth in 1.. {
        let mut head = [0u8; 110];
        archive.read_exact(&mut head[..6]).ok()?;
        if &head[..6] == b"07070X" {
            // Stripped cpio: entries are header indexes, and nothing is named.
            let mut idx = [0u8; 8];
            archive.read_exact(&mut idx).ok()?;
            let i = hex_field(&idx)? as usize;
            return (i >= plan.entries.len()).then(|| {
                format!(
                    "payload entry #{nth} refers to file #{i}, but the header lists {} files",
                    plan.entries.len()
                )
            });
        }
        if &head[..6] != b"070701" && &head[..6] != b"070702" {
            return None;
        }
        archive.read_exact(&mut head[6..]).ok()?;
        let field = |k: usize| hex_field(&head[6 + 8 * k..14 + 8 * k]);
        let size = u64::from(field(6)?);
        let name_len = field(11)? as usize;
        if name_len > 4096 {
            return Some(format!("payload entry #{nth} has a {name_len}-byte name"));
        }
        let mut name = vec![0u8; name_len];
        archive.read_exact(&mut name).ok()?;
        skip(archive, pad4(110 + name_len as u64))?;
        while name.last() == Some(&0) {
            name.pop();
        }
        if name == b"TRAILER!!!" {
            return None;
        }
        let shown = show_bytes(&name);
        if name.contains(&0) {
            return Some(format!("payload entry {shown} has a NUL byte in its name"));
        }
        let Ok(text) = std::str::from_utf8(&name) else {
            return Some(format!("payload entry {shown} has a name that is not valid UTF-8"));
        };
        let path = format!("/{}", text.strip_prefix("./").unwrap_or(text));
        if !plan.index.contains_key(&path) {
            return Some(format!("payload entry {shown} is not listed in the package header"));
        }
        if !seen.insert(path) {
            return Some(format!("payload entry {shown} appears twice"));
        }
        skip(archive, size + pad4(size))?;
    }
    None
}

fn hex_field(b: &[u8]) -> Option<u32> {
    u32::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
}

fn pad4(n: u64) -> u64 {
    (4 - n % 4) % 4
}

fn skip(r: &mut dyn Read, n: u64) -> Option<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink()).ok()?;
    (copied == n).then_some(())
}
