//! A streaming reader for rpm's cpio (newc) payload, the one reader of
//! payload bytes. It stops at the `TRAILER!!!` entry: what follows is never
//! decompressed. Entries are matched to header entries by the caller through
//! a hash map: the rpm crate's reader compares every archive name with every
//! header name (quadratic in the number of files, seconds for a 16,000-file
//! package).

use std::io::{self, BufRead, Read};

use anyhow::{Context, Result, bail};

use crate::decompress::{DecompressReader, Format, Streams};

/// Longest entry name read (a path is at most 4096 bytes with its NUL).
const MAX_NAME: u64 = 4096;

/// An entry header the reader refuses, with the entry's position (from 1),
/// so the caller can name it in terms of the package header.
#[derive(Debug, thiserror::Error)]
pub enum BadEntry {
    /// A name longer than any path.
    #[error("payload entry #{nth} has a {len}-byte name")]
    LongName {
        /// Position of the entry in the archive.
        nth: u64,
        /// The name length the entry header claims.
        len: u64,
    },
    /// rpm v6's stripped cpio, whose entries refer to header files by index.
    #[error("stripped cpio payloads (rpm v6) are not supported yet")]
    Stripped {
        /// Position of the entry in the archive.
        nth: u64,
        /// The header file the entry refers to (`None`: not hex).
        file: Option<u64>,
    },
}

/// One archive entry's header.
pub struct Entry {
    /// The name as stored (`./usr/bin/bash`), trailing NULs removed.
    pub name: Vec<u8>,
    /// Bytes of content that follow.
    pub size: u64,
}

/// The decompressed payload, read entry by entry.
pub struct Archive<'a> {
    r: Box<dyn Read + 'a>,
    /// Entry headers read so far.
    nth: u64,
    /// Content bytes of the current entry not read yet, then its padding.
    remaining: u64,
    pad: u64,
}

impl<'a> Archive<'a> {
    /// Picks the decompressor from the payload's first bytes (zstd, xz, gzip, or none).
    pub fn open(mut raw: impl BufRead + 'a) -> Result<Archive<'a>> {
        let magic = raw
            .fill_buf()
            .context("reading the payload")?
            .get(..6)
            .unwrap_or_default();
        let (format, plain) = (Format::sniff(magic), magic.starts_with(b"0707"));
        let r: Box<dyn Read + 'a> = match format {
            // rpm reads the first xz stream of a payload and no further.
            Some(format) => Box::new(DecompressReader::new(raw, format, Streams::First)?),
            None if plain => Box::new(raw),
            None => bail!("the payload compression is not supported (allowed: zstd, xz, gzip, none)"),
        };
        Ok(Archive {
            r,
            nth: 0,
            remaining: 0,
            pad: 0,
        })
    }

    /// The next entry, `None` after the trailer. Skips what the caller left of the previous one.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        self.skip_rest()?;
        let mut head = [0u8; 110];
        self.r.read_exact(&mut head).context("reading a payload entry header")?;
        self.nth += 1;
        let nth = self.nth;
        match &head[..6] {
            b"070701" | b"070702" => {}
            b"07070X" => {
                let file = std::str::from_utf8(&head[6..14])
                    .ok()
                    .and_then(|s| u64::from_str_radix(s, 16).ok());
                bail!(BadEntry::Stripped { nth, file });
            }
            other => bail!(
                "payload entry header has magic {:?}, not cpio newc",
                String::from_utf8_lossy(other)
            ),
        }
        let field = |k: usize| -> Result<u64> {
            let s = std::str::from_utf8(&head[6 + 8 * k..14 + 8 * k]).context("payload entry header is not hex")?;
            u64::from_str_radix(s, 16).context("payload entry header is not hex")
        };
        let size = field(6)?;
        let name_len = field(11)?;
        if name_len > MAX_NAME {
            bail!(BadEntry::LongName { nth, len: name_len });
        }
        let mut name = vec![0u8; name_len as usize];
        self.r.read_exact(&mut name).context("reading a payload entry name")?;
        skip(&mut self.r, pad4(110 + name_len))?;
        while name.last() == Some(&0) {
            name.pop();
        }
        if name == b"TRAILER!!!" {
            return Ok(None);
        }
        self.remaining = size;
        self.pad = pad4(size);
        Ok(Some(Entry { name, size }))
    }

    /// The current entry's content (at most its size).
    pub fn content(&mut self) -> Content<'_, 'a> {
        Content { a: self }
    }

    fn skip_rest(&mut self) -> Result<()> {
        let n = self.remaining + self.pad;
        skip(&mut self.r, n)?;
        (self.remaining, self.pad) = (0, 0);
        Ok(())
    }
}

/// Reader over the current entry's content.
pub struct Content<'b, 'a> {
    a: &'b mut Archive<'a>,
}

impl Read for Content<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = buf.len().min(self.a.remaining as usize);
        if max == 0 {
            return Ok(0);
        }
        let n = self.a.r.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "payload ends inside a file",
            ));
        }
        self.a.remaining -= n as u64;
        Ok(n)
    }
}

fn pad4(n: u64) -> u64 {
    (4 - n % 4) % 4
}

fn skip(r: &mut dyn Read, n: u64) -> Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink()).context("reading the payload")?;
    if copied != n {
        bail!("the payload ends early");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A newc archive of `(name, content)` entries and the trailer, then `after`.
    fn archive(entries: &[(&[u8], &[u8])], name_len: Option<u64>, after: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let trailer: (&[u8], &[u8]) = (b"TRAILER!!!", b"");
        for (name, content) in entries.iter().chain([&trailer]) {
            let len = name_len
                .filter(|_| *name != b"TRAILER!!!")
                .unwrap_or(name.len() as u64 + 1);
            out.extend_from_slice(b"070701");
            for (k, v) in [0u64; 13].iter().enumerate() {
                let v = match k {
                    6 => content.len() as u64,
                    11 => len,
                    _ => *v,
                };
                out.extend_from_slice(format!("{v:08x}").as_bytes());
            }
            out.extend_from_slice(name);
            out.push(0);
            out.resize(out.len() + pad4(110 + name.len() as u64 + 1) as usize, 0);
            out.extend_from_slice(content);
            out.resize(out.len() + pad4(content.len() as u64) as usize, 0);
        }
        out.extend_from_slice(after);
        out
    }

    fn names(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
        let mut a = Archive::open(bytes)?;
        let mut out = Vec::new();
        while let Some(e) = a.next_entry()? {
            let mut content = Vec::new();
            a.content().read_to_end(&mut content)?;
            out.push((String::from_utf8_lossy(&e.name).into_owned(), content));
        }
        Ok(out)
    }

    #[test]
    fn entries_are_read_until_the_trailer() {
        let raw = archive(&[(b"./a", b"hello"), (b"./dir", b"")], None, b"never read: not cpio");
        let want = vec![("./a".to_string(), b"hello".to_vec()), ("./dir".to_string(), vec![])];
        assert_eq!(names(&raw).unwrap(), want);
        let zst = zstd::encode_all(&raw[..], 1).unwrap();
        assert_eq!(names(&zst).unwrap(), want, "zstd");
    }

    #[test]
    fn refused_entry_headers_say_which_entry() {
        let raw = archive(&[(b"./a", b"x"), (b"./b", b"")], Some(5000), b"");
        let e = names(&raw).unwrap_err();
        assert!(
            matches!(e.downcast_ref(), Some(BadEntry::LongName { nth: 1, len: 5000 })),
            "{e:#}"
        );
        let mut stripped = archive(&[(b"./a", b"x")], None, b"");
        stripped[..14].copy_from_slice(b"07070X0000002a");
        let e = names(&stripped).unwrap_err();
        assert!(
            matches!(e.downcast_ref(), Some(BadEntry::Stripped { nth: 1, file: Some(42) })),
            "{e:#}"
        );
        let e = names(b"PK\x03\x04 not a payload").unwrap_err();
        assert!(e.to_string().contains("compression is not supported"), "{e:#}");
    }
}
