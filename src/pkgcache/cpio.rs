//! A streaming reader for rpm's cpio (newc) payload. Entries are matched to
//! header entries by the caller through a hash map: the rpm crate's reader
//! compares every archive name with every header name (quadratic in the
//! number of files, seconds for a 16,000-file package).

use std::io::{self, BufRead, Read};

use anyhow::{Context, Result, bail};

/// One archive entry's header.
pub(crate) struct Entry {
    /// The name as stored (`./usr/bin/bash`), trailing NULs removed.
    pub name: Vec<u8>,
    /// Bytes of content that follow.
    pub size: u64,
}

/// The decompressed payload, read entry by entry.
pub(crate) struct Archive<'a> {
    r: Box<dyn Read + 'a>,
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
            .unwrap_or_default()
            .to_vec();
        let r: Box<dyn Read + 'a> = if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(zstd::stream::read::Decoder::with_buffer(raw).context("starting the zstd decoder")?)
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Box::new(liblzma::bufread::XzDecoder::new(raw))
        } else if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::GzDecoder::new(raw))
        } else if magic.starts_with(b"0707") {
            Box::new(raw)
        } else {
            bail!("the payload compression is not supported (allowed: zstd, xz, gzip, none)");
        };
        Ok(Archive {
            r,
            remaining: 0,
            pad: 0,
        })
    }

    /// The next entry, `None` after the trailer. Skips what the caller left of the previous one.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        self.skip_rest()?;
        let mut head = [0u8; 110];
        self.r.read_exact(&mut head).context("reading a payload entry header")?;
        match &head[..6] {
            b"070701" | b"070702" => {}
            b"07070X" => bail!("stripped cpio payloads (rpm v6) are not supported yet"),
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
        if name_len > 4096 {
            bail!("payload entry has a {name_len}-byte name");
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
pub(crate) struct Content<'b, 'a> {
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
