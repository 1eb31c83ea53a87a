//! The one decompressor: zstd, xz and gzip streams, recognised by their first
//! bytes. RPM payloads (import, account files) and compressed images read
//! through it, so there is one table of magic numbers and one place that
//! picks a decoder for untrusted bytes.
//!
//! Modelled on coreos-installer's `DecompressReader` (src/io/compress.rs),
//! except that bytes in no known format are not passed through silently:
//! each caller decides what else it accepts (a raw cpio archive, a raw image).

use std::io::{self, BufRead, Read};

use anyhow::{Context, Result};

/// A compression format arbor reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// zstd frames.
    Zstd,
    /// An xz stream.
    Xz,
    /// A gzip member.
    Gzip,
}

/// Formats by magic number, checked in this order.
const MAGIC: [(Format, &[u8]); 3] = [
    (Format::Zstd, &[0x28, 0xb5, 0x2f, 0xfd]),
    (Format::Xz, &[0xfd, b'7', b'z', b'X', b'Z', 0]),
    (Format::Gzip, &[0x1f, 0x8b]),
];

impl Format {
    /// The first bytes of a stream in this format.
    pub fn magic(self) -> &'static [u8] {
        MAGIC
            .iter()
            .find(|(f, _)| *f == self)
            .map(|(_, m)| *m)
            .unwrap_or_default()
    }

    /// The format `head` (the first bytes of a stream) starts with, if any.
    pub fn sniff(head: &[u8]) -> Option<Format> {
        MAGIC.iter().find(|(_, m)| head.starts_with(m)).map(|(f, _)| *f)
    }
}

/// How much of an xz input to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streams {
    /// The first stream only, as rpm reads a payload.
    First,
    /// Every stream, as `xz` writes concatenated or threaded output.
    All,
}

/// The decompressed bytes of a stream.
pub struct DecompressReader<'a> {
    inner: Box<dyn Read + 'a>,
}

impl<'a> DecompressReader<'a> {
    /// Decodes `raw`, which holds `format`; `streams` says whether xz input
    /// ends after its first stream.
    pub fn new(raw: impl BufRead + 'a, format: Format, streams: Streams) -> Result<DecompressReader<'a>> {
        let inner: Box<dyn Read + 'a> = match (format, streams) {
            (Format::Zstd, _) => {
                Box::new(zstd::stream::read::Decoder::with_buffer(raw).context("starting the zstd decoder")?)
            }
            (Format::Xz, Streams::First) => Box::new(liblzma::bufread::XzDecoder::new(raw)),
            (Format::Xz, Streams::All) => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(raw)),
            (Format::Gzip, _) => Box::new(flate2::bufread::GzDecoder::new(raw)),
        };
        Ok(DecompressReader { inner })
    }
}

impl Read for DecompressReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn each_format_is_sniffed_and_decoded() {
        let text = b"hello, payload".repeat(100);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&text).unwrap();
            e.finish().unwrap()
        };
        let xz = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&text).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&text[..], 1).unwrap();
        for (want, bytes) in [(Format::Zstd, zst), (Format::Xz, xz), (Format::Gzip, gz)] {
            assert_eq!(Format::sniff(&bytes), Some(want));
            assert!(bytes.starts_with(want.magic()));
            let mut out = Vec::new();
            DecompressReader::new(&bytes[..], want, Streams::First)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, text, "{want:?}");
        }
        assert_eq!(Format::sniff(b"070701"), None);
        assert_eq!(Format::sniff(&[0x28, 0xb5]), None, "a partial magic is no format");
    }

    #[test]
    fn xz_streams_after_the_first_are_read_only_when_asked() {
        let stream = |t: &[u8]| {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(t).unwrap();
            e.finish().unwrap()
        };
        let two = [stream(b"one "), stream(b"two")].concat();
        for (streams, want) in [(Streams::First, &b"one "[..]), (Streams::All, b"one two")] {
            let mut out = Vec::new();
            DecompressReader::new(&two[..], Format::Xz, streams)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, want, "{streams:?}");
        }
    }
}
