//! A streaming reader for rpm's cpio payload, the one reader of payload
//! bytes: newc entries (`070701`, `070702`: name and size in the entry) and
//! stripped ones (`07070X`, rpm v6 and v4 packages with files over 4 GiB:
//! an index into the header's file list, the size from the header, see
//! [`super::files`]). It stops at the `TRAILER!!!` entry: what follows is
//! never decompressed. Entries are matched to header entries by the caller
//! through a hash map or the index: the rpm crate's reader compares every
//! archive name with every header name (quadratic in the number of files,
//! seconds for a 16,000-file package).

use std::io::{self, BufRead, Read};

use anyhow::{Context, Result, bail};

use super::files::{Stripped, StrippedSizes};
use crate::decompress::{DecompressReader, Format, Streams};

/// Longest entry name read (a path is at most 4096 bytes with its NUL).
const MAX_NAME: u64 = 4096;
/// A newc entry header: magic and 13 hex fields.
const NEWC_HEADER: usize = 110;
/// A stripped entry header: magic and the file index.
const STRIPPED_HEADER: usize = 14;
/// The file index rpm's reader takes as the end of the archive (-1 as an int).
const STRIPPED_END: u32 = u32::MAX;

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
    /// A stripped entry naming a file the header does not list.
    #[error("payload entry #{nth} refers to file #{file}, but the header lists {files} files")]
    OutOfRange {
        /// Position of the entry in the archive.
        nth: u64,
        /// The header file the entry refers to.
        file: u32,
        /// Files in the header.
        files: usize,
    },
    /// A stripped entry naming a `%ghost`, whose size no header gives (rpm's
    /// reader loses its place in the archive there).
    #[error("payload entry #{nth} refers to file #{file}, a %ghost, which a payload never holds")]
    Ghost {
        /// Position of the entry in the archive.
        nth: u64,
        /// The header file the entry refers to.
        file: u32,
    },
}

/// How an entry names its header file.
#[derive(Debug, PartialEq)]
pub enum Name {
    /// A newc entry: the name as stored (`./usr/bin/bash`), trailing NULs removed.
    Path(Vec<u8>),
    /// A stripped entry: the index into the header's file list.
    Index(u32),
}

/// One archive entry's header.
pub struct Entry {
    /// The header file it is.
    pub name: Name,
    /// Bytes of content that follow (a stripped entry's from the header).
    pub size: u64,
}

/// The decompressed payload, read entry by entry.
pub struct Archive<'a> {
    r: Box<dyn Read + 'a>,
    /// The package header, for the sizes of stripped entries.
    header: &'a rpm::Header<rpm::IndexTag>,
    /// Read from `header` at the first stripped entry.
    stripped: Option<StrippedSizes>,
    /// Entry headers read so far.
    nth: u64,
    /// Content bytes of the current entry not read yet, then its padding.
    remaining: u64,
    pad: u64,
    /// The previous entry, when stripped: (file index, size from the header).
    after_stripped: Option<(u32, u64)>,
}

impl<'a> Archive<'a> {
    /// Picks the decompressor from the payload's first bytes (zstd, xz, gzip,
    /// or none); `header` is the package's main header.
    pub fn open(mut raw: impl BufRead + 'a, header: &'a rpm::Header<rpm::IndexTag>) -> Result<Archive<'a>> {
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
            header,
            stripped: None,
            nth: 0,
            remaining: 0,
            pad: 0,
            after_stripped: None,
        })
    }

    /// The next entry, `None` after the trailer. Skips what the caller left of the previous one.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        self.skip_rest()?;
        let mut magic = [0u8; 6];
        self.r
            .read_exact(&mut magic)
            .context("reading a payload entry header")?;
        self.nth += 1;
        let after = self.after_stripped.take();
        match &magic {
            b"070701" | b"070702" => self.newc(),
            b"07070X" => self.stripped(),
            other => {
                let hint = match after {
                    // The size came from the header: the archive cannot contradict it.
                    Some((file, size)) => {
                        format!(" (file #{file} before it may hold another size than the header's {size} bytes)")
                    }
                    None => String::new(),
                };
                bail!(
                    "payload entry #{} has magic {:?}, not cpio newc or stripped{hint}",
                    self.nth,
                    String::from_utf8_lossy(other)
                )
            }
        }
    }

    fn newc(&mut self) -> Result<Option<Entry>> {
        let nth = self.nth;
        let mut head = [0u8; NEWC_HEADER - 6];
        self.r.read_exact(&mut head).context("reading a payload entry header")?;
        let field = |k: usize| -> Result<u64> {
            let s = std::str::from_utf8(&head[8 * k..8 + 8 * k]).context("payload entry header is not hex")?;
            u64::from_str_radix(s, 16).context("payload entry header is not hex")
        };
        let size = field(6)?;
        let name_len = field(11)?;
        if name_len > MAX_NAME {
            bail!(BadEntry::LongName { nth, len: name_len });
        }
        let mut name = vec![0u8; name_len as usize];
        self.r.read_exact(&mut name).context("reading a payload entry name")?;
        skip(&mut self.r, pad4(NEWC_HEADER as u64 + name_len))?;
        while name.last() == Some(&0) {
            name.pop();
        }
        if name == b"TRAILER!!!" {
            return Ok(None);
        }
        self.remaining = size;
        self.pad = pad4(size);
        Ok(Some(Entry {
            name: Name::Path(name),
            size,
        }))
    }

    fn stripped(&mut self) -> Result<Option<Entry>> {
        let nth = self.nth;
        let mut hex = [0u8; STRIPPED_HEADER - 6];
        self.r.read_exact(&mut hex).context("reading a payload entry header")?;
        let file = std::str::from_utf8(&hex)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| u32::from_str_radix(s, 16).ok());
        let Some(file) = file else {
            bail!(
                "payload entry #{nth} is stripped, but its file index \"{}\" is not 8 hex digits",
                hex.escape_ascii()
            );
        };
        skip(&mut self.r, pad4(STRIPPED_HEADER as u64))?;
        if file == STRIPPED_END {
            return Ok(None);
        }
        let sizes = match &mut self.stripped {
            Some(sizes) => sizes,
            empty => empty.insert(
                StrippedSizes::from_header(self.header)
                    .context("reading the file sizes of a stripped payload from the header")?,
            ),
        };
        let size = match sizes.get(file) {
            Stripped::Size(size) => size,
            Stripped::Ghost => bail!(BadEntry::Ghost { nth, file }),
            Stripped::OutOfRange => bail!(BadEntry::OutOfRange {
                nth,
                file,
                files: sizes.len()
            }),
        };
        self.remaining = size;
        self.pad = pad4(size);
        self.after_stripped = Some((file, size));
        Ok(Some(Entry {
            name: Name::Index(file),
            size,
        }))
    }

    /// The current entry's content (at most its size).
    pub fn content(&mut self) -> Content<'_, 'a> {
        Content { a: self }
    }

    fn skip_rest(&mut self) -> Result<()> {
        // Apart: a stripped entry's size is the header's, up to u64::MAX.
        skip(&mut self.r, self.remaining)?;
        skip(&mut self.r, self.pad)?;
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
        // (`remaining` may not fit a 32-bit usize: a stripped entry's size is the header's u64.)
        let max = usize::try_from(self.a.remaining).map_or(buf.len(), |r| buf.len().min(r));
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
    use rpm::{HeaderEntry, IndexData, IndexTag};

    /// A newc archive of `(name, content)` entries and the trailer, then `after`.
    fn archive(entries: &[(&[u8], &[u8])], name_len: Option<u64>, after: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, content) in entries {
            newc(&mut out, name, content, name_len);
        }
        newc(&mut out, b"TRAILER!!!", b"", None);
        out.extend_from_slice(after);
        out
    }

    fn newc(out: &mut Vec<u8>, name: &[u8], content: &[u8], name_len: Option<u64>) {
        let len = name_len.unwrap_or(name.len() as u64 + 1);
        out.extend_from_slice(b"070701");
        for k in 0..13 {
            let v = match k {
                6 => content.len() as u64,
                11 => len,
                _ => 0,
            };
            out.extend_from_slice(format!("{v:08x}").as_bytes());
        }
        out.extend_from_slice(name);
        out.push(0);
        out.resize(out.len() + pad4(110 + name.len() as u64 + 1) as usize, 0);
        out.extend_from_slice(content);
        out.resize(out.len() + pad4(content.len() as u64) as usize, 0);
    }

    /// A stripped archive as rpm writes one (lib/cpio.cc): `07070X`, the
    /// index in 8 hex digits, padding to 4, the content, padding, and the
    /// newc trailer.
    fn stripped(entries: &[(&[u8; 8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, content) in entries {
            out.extend_from_slice(b"07070X");
            out.extend_from_slice(*index);
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(content);
            out.resize(out.len() + pad4(content.len() as u64) as usize, 0);
        }
        newc(&mut out, b"TRAILER!!!", b"", None);
        out
    }

    /// A header listing regular files of these sizes (inodes 1, 2, …) and, last, a `%ghost`.
    fn header(sizes: &[u64]) -> rpm::Header<IndexTag> {
        let n = sizes.len() + 1;
        let e = |t: IndexTag, d| HeaderEntry::new(t as u32, d);
        let mut flags = vec![0; n];
        flags[n - 1] = rpm::FileFlags::GHOST.bits();
        rpm::Header::from_entries(
            [
                e(
                    IndexTag::RPMTAG_BASENAMES,
                    IndexData::StringArray((0..n).map(|i| format!("f{i}")).collect()),
                ),
                e(
                    IndexTag::RPMTAG_LONGFILESIZES,
                    IndexData::Int64(sizes.iter().copied().chain([0]).collect()),
                ),
                e(IndexTag::RPMTAG_FILEMODES, IndexData::Int16(vec![0o100644; n])),
                e(IndexTag::RPMTAG_FILEFLAGS, IndexData::Int32(flags)),
                e(IndexTag::RPMTAG_FILEINODES, IndexData::Int32((1..=n as u32).collect())),
                e(IndexTag::RPMTAG_FILEDEVICES, IndexData::Int32(vec![1; n])),
            ],
            IndexTag::RPMTAG_HEADERIMMUTABLE,
        )
    }

    fn names(bytes: &[u8], header: &rpm::Header<IndexTag>) -> Result<Vec<(String, Vec<u8>)>> {
        let mut a = Archive::open(bytes, header)?;
        let mut out = Vec::new();
        while let Some(e) = a.next_entry()? {
            let mut content = Vec::new();
            a.content().read_to_end(&mut content)?;
            assert_eq!(content.len() as u64, e.size);
            let name = match e.name {
                Name::Path(p) => String::from_utf8_lossy(&p).into_owned(),
                Name::Index(i) => format!("#{i}"),
            };
            out.push((name, content));
        }
        Ok(out)
    }

    #[test]
    fn entries_are_read_until_the_trailer() {
        let none = header(&[]);
        let raw = archive(&[(b"./a", b"hello"), (b"./dir", b"")], None, b"never read: not cpio");
        let want = vec![("./a".to_string(), b"hello".to_vec()), ("./dir".to_string(), vec![])];
        assert_eq!(names(&raw, &none).unwrap(), want);
        let zst = zstd::encode_all(&raw[..], 1).unwrap();
        assert_eq!(names(&zst, &none).unwrap(), want, "zstd");
    }

    #[test]
    fn stripped_entries_take_their_size_from_the_header() {
        let h = header(&[5, 0, 3]);
        let mut raw = stripped(&[(b"00000002", b"abc"), (b"00000000", b"hello"), (b"00000001", b"")]);
        raw.extend_from_slice(b"never read");
        let want: Vec<(String, Vec<u8>)> = [("#2", "abc"), ("#0", "hello"), ("#1", "")]
            .iter()
            .map(|(n, c)| (n.to_string(), c.as_bytes().to_vec()))
            .collect();
        assert_eq!(names(&raw, &h).unwrap(), want);
        let xz = {
            let mut out = Vec::new();
            let mut enc = liblzma::write::XzEncoder::new(&mut out, 1);
            std::io::Write::write_all(&mut enc, &raw).unwrap();
            enc.finish().unwrap();
            out
        };
        assert_eq!(names(&xz, &h).unwrap(), want, "xz");
        // rpm's reader also ends at index ffffffff (-1).
        let mut end = stripped(&[(b"00000000", b"hello")]);
        end.truncate(16 + 8);
        end.extend_from_slice(b"07070Xffffffff\0\0not read");
        assert_eq!(names(&end, &h).unwrap(), want[1..2]);
    }

    #[test]
    fn refused_entry_headers_say_which_entry() {
        let none = header(&[]);
        let raw = archive(&[(b"./a", b"x"), (b"./b", b"")], Some(5000), b"");
        let e = names(&raw, &none).unwrap_err();
        assert!(
            matches!(e.downcast_ref(), Some(BadEntry::LongName { nth: 1, len: 5000 })),
            "{e:#}"
        );
        let h = header(&[1]);
        let out_of_range = stripped(&[(b"00000000", b"x"), (b"0000002a", b"")]);
        let e = names(&out_of_range, &h).unwrap_err();
        assert!(
            matches!(
                e.downcast_ref(),
                Some(BadEntry::OutOfRange {
                    nth: 2,
                    file: 42,
                    files: 2
                })
            ),
            "{e:#}"
        );
        let e = names(&stripped(&[(b"00000001", b"")]), &h).unwrap_err();
        assert!(
            matches!(e.downcast_ref(), Some(BadEntry::Ghost { nth: 1, file: 1 })),
            "{e:#}"
        );
        for bad in [b"+0000000", b"0000000g", b" 0000000"] {
            let e = names(&stripped(&[(bad, b"")]), &h).unwrap_err();
            let want = format!(
                "#1 is stripped, but its file index \"{}\" is not 8 hex",
                bad.escape_ascii()
            );
            assert!(e.to_string().contains(&want), "{e:#}");
        }
        // Content longer than the header says: the next header is not where it should be.
        let e = names(&stripped(&[(b"00000000", b"xyzwv")]), &h).unwrap_err();
        let want = "#2 has magic \"v\\0\\0\\007\", not cpio newc or stripped (file #0 before it may hold another size than the header's 1 bytes)";
        assert!(e.to_string().contains(want), "{e:#}");
        // A size no payload holds ends in an error, also when the entry is skipped.
        let huge = header(&[u64::MAX]);
        let e = names(&stripped(&[(b"00000000", b"x")]), &huge).unwrap_err();
        assert!(format!("{e:#}").contains("payload ends inside a file"), "{e:#}");
        let raw = stripped(&[(b"00000000", b"x")]);
        let mut a = Archive::open(&raw[..], &huge).unwrap();
        assert_eq!(a.next_entry().unwrap().map(|e| e.size), Some(u64::MAX));
        let e = a.next_entry().err().unwrap();
        assert!(format!("{e:#}").contains("the payload ends early"), "{e:#}");
        let e = names(b"PK\x03\x04 not a payload", &none).unwrap_err();
        assert!(e.to_string().contains("compression is not supported"), "{e:#}");
    }
}
