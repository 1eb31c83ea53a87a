//! rpm's header format at the byte level: the lead, then header blobs (an
//! index of tag entries and a data store), as package files and the rpmdb
//! hold them. Every length and offset is checked against rpm's own limits
//! and the blob's size before anything is allocated or sliced, because
//! package files are untrusted. rpmdb export (`compose::rpmdb`) and the
//! package cache's file list (`pkgcache::plan`) read headers through here.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, ensure};

/// The tag numbers involved, from rpm's rpmtag.h (the `rpm` crate's table has
/// SIGSIZE off by one).
pub mod tag {

    pub const HEADERIMMUTABLE: u32 = 63;
    pub const SIGSIZE: u32 = 257;
    pub const SIGPGP: u32 = 259;
    pub const SIGMD5: u32 = 261;
    pub const SIGGPG: u32 = 262;
    pub const DSAHEADER: u32 = 267;
    pub const RSAHEADER: u32 = 268;
    pub const SHA1HEADER: u32 = 269;
    pub const LONGSIGSIZE: u32 = 270;
    pub const LONGARCHIVESIZE: u32 = 271;
    pub const SHA256HEADER: u32 = 273;
    pub const VERITYSIGNATURES: u32 = 276;
    pub const VERITYSIGNATUREALGO: u32 = 277;
    pub const NAME: u32 = 1000;
    pub const VERSION: u32 = 1001;
    pub const RELEASE: u32 = 1002;
    pub const EPOCH: u32 = 1003;
    pub const INSTALLTIME: u32 = 1008;
    pub const SIZE: u32 = 1009;
    pub const GROUP: u32 = 1016;
    pub const ARCH: u32 = 1022;
    pub const OLDFILENAMES: u32 = 1027;
    pub const FILESTATES: u32 = 1029;
    pub const SOURCERPM: u32 = 1044;
    pub const ARCHIVESIZE: u32 = 1046;
    pub const PROVIDENAME: u32 = 1047;
    pub const REQUIREFLAGS: u32 = 1048;
    pub const REQUIRENAME: u32 = 1049;
    pub const REQUIREVERSION: u32 = 1050;
    pub const CONFLICTFLAGS: u32 = 1053;
    pub const CONFLICTNAME: u32 = 1054;
    pub const CONFLICTVERSION: u32 = 1055;
    pub const TRIGGERNAME: u32 = 1066;
    pub const OBSOLETENAME: u32 = 1090;
    pub const PREFIXES: u32 = 1098;
    pub const INSTPREFIXES: u32 = 1099;
    pub const SOURCEPACKAGE: u32 = 1106;
    pub const PROVIDEFLAGS: u32 = 1112;
    pub const PROVIDEVERSION: u32 = 1113;
    pub const OBSOLETEFLAGS: u32 = 1114;
    pub const OBSOLETEVERSION: u32 = 1115;
    pub const DIRINDEXES: u32 = 1116;
    pub const BASENAMES: u32 = 1117;
    pub const DIRNAMES: u32 = 1118;
    pub const ORIGBASENAMES: u32 = 1120;
    pub const INSTALLCOLOR: u32 = 1127;
    pub const INSTALLTID: u32 = 1128;
    pub const RECOMMENDNAME: u32 = 5046;
    pub const RECOMMENDVERSION: u32 = 5047;
    pub const RECOMMENDFLAGS: u32 = 5048;
    pub const SUGGESTNAME: u32 = 5049;
    pub const SUGGESTVERSION: u32 = 5050;
    pub const SUGGESTFLAGS: u32 = 5051;
    pub const SUPPLEMENTNAME: u32 = 5052;
    pub const SUPPLEMENTVERSION: u32 = 5053;
    pub const SUPPLEMENTFLAGS: u32 = 5054;
    pub const ENHANCENAME: u32 = 5055;
    pub const ENHANCEVERSION: u32 = 5056;
    pub const ENHANCEFLAGS: u32 = 5057;
    pub const FILETRIGGERNAME: u32 = 5069;
    pub const FILETRIGGERINDEX: u32 = 5070;
    pub const TRANSFILETRIGGERNAME: u32 = 5079;
    pub const TRANSFILETRIGGERINDEX: u32 = 5080;
    pub const FILESIGNATURES: u32 = 5090;
    pub const FILESIGNATURELENGTH: u32 = 5091;
}

/// Signature header tags (`rpmSigTag`); those below 1000 share the main
/// header's numbers.
pub mod sigtag {

    pub const SIZE: u32 = 1000;
    pub const PGP: u32 = 1002;
    pub const MD5: u32 = 1004;
    pub const GPG: u32 = 1005;
    pub const PAYLOADSIZE: u32 = 1007;
    pub const FILESIGNATURES: u32 = 274;
    pub const FILESIGNATURELENGTH: u32 = 275;
}

/// rpm's header data types (`rpmTagType`).
pub mod ty {

    pub const NULL: u32 = 0;
    pub const CHAR: u32 = 1;
    pub const INT8: u32 = 2;
    pub const INT16: u32 = 3;
    pub const INT32: u32 = 4;
    pub const INT64: u32 = 5;
    pub const STRING: u32 = 6;
    pub const BIN: u32 = 7;
    pub const STRING_ARRAY: u32 = 8;
    pub const I18NSTRING: u32 = 9;
}

const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
const LEAD_SIZE: usize = 96;
/// The first bytes of a header in a package file (the rpmdb stores it without).
pub const HEADER_MAGIC: [u8; 8] = [0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0];
/// The region tag's data: a 16-byte copy of an index entry.
const REGION_COUNT: u32 = 16;
/// rpm's `hdrchkTags` and `hdrchkData` limits.
const MAX_TAGS: u32 = 0xffff;
const MAX_DATA: u32 = 0x0fff_ffff;
/// Most bytes the two headers of a package file may take together (index
/// and data). rpm allows 256 MiB per header; real headers are a few MiB (a
/// kernel's, with every module listed, about 3), and a header is held in
/// memory, more than once by the `rpm` crate: this keeps reading one on a
/// board with 512 MiB under the 100 MiB every decoded input is held to.
pub const MAX_HEADERS: u64 = 32 << 20;

/// One index entry of a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Tag number.
    pub tag: u32,
    /// Data type (`ty`).
    pub ty: u32,
    /// Offset of the data in the data store.
    pub offset: u32,
    /// Number of values.
    pub count: u32,
}

/// A header blob as rpm stores it in the database (`headerExport`): entry
/// count, data length, index entries, data; no magic.
#[derive(Debug, Clone)]
pub struct Blob {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    data_start: usize,
}

impl Blob {
    /// Parses and bounds-checks `bytes` (`il`, `dl`, entries, data).
    pub fn parse(bytes: Vec<u8>) -> Result<Blob> {
        ensure!(bytes.len() >= 8, "header is truncated");
        let il = be32(&bytes, 0);
        let dl = be32(&bytes, 4);
        ensure!((1..=MAX_TAGS).contains(&il), "header has {il} tags");
        ensure!(dl <= MAX_DATA, "header data is {dl} bytes");
        let data_start = 8 + 16 * il as usize;
        ensure!(
            bytes.len() == data_start + dl as usize,
            "header size does not match its index"
        );
        let entries = (0..il as usize)
            .map(|i| {
                let at = 8 + 16 * i;
                Entry {
                    tag: be32(&bytes, at),
                    ty: be32(&bytes, at + 4),
                    offset: be32(&bytes, at + 8),
                    count: be32(&bytes, at + 12),
                }
            })
            .collect();
        let blob = Blob {
            bytes,
            entries,
            data_start,
        };
        for e in &blob.entries {
            blob.check_entry(e)?;
        }
        Ok(blob)
    }

    /// The raw bytes, ready for the `Packages` table.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The data store.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.data_start..]
    }

    /// The index entries, as stored (big-endian, 16 bytes each).
    pub fn index_bytes(&self) -> &[u8] {
        &self.bytes[8..self.data_start]
    }

    /// The index entries, in header order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// rpm's `hdrblobVerifyInfo` checks, plus: the entry's data lies within the data area.
    fn check_entry(&self, e: &Entry) -> Result<()> {
        let tag = e.tag;
        ensure!(
            (ty::CHAR..=ty::I18NSTRING).contains(&e.ty),
            "tag {tag} has unknown type {}",
            e.ty
        );
        ensure!(e.count <= MAX_DATA, "tag {tag} has {} values", e.count);
        ensure!(e.offset % align(e.ty) == 0, "tag {tag} is misaligned");
        self.data_len(e)
            .with_context(|| format!("tag {tag} runs past the header data"))?;
        Ok(())
    }

    /// Length of an entry's data (rpm's `dataLength`), checked against the data area.
    fn data_len(&self, e: &Entry) -> Result<usize> {
        let data = self.data();
        let start = e.offset as usize;
        ensure!(start <= data.len(), "offset out of range");
        let len = match e.ty {
            ty::NULL => 0,
            ty::STRING | ty::STRING_ARRAY | ty::I18NSTRING => {
                ensure!(e.ty != ty::STRING || e.count == 1, "a STRING with {} values", e.count);
                let mut at = start;
                for _ in 0..e.count {
                    let nul = data[at..].iter().position(|b| *b == 0).context("unterminated string")?;
                    at += nul + 1;
                }
                at - start
            }
            t => e.count as usize * size(t),
        };
        ensure!(start + len <= data.len(), "data out of range");
        Ok(len)
    }

    /// The first entry with `tag`.
    pub fn find(&self, tag: u32) -> Option<Entry> {
        self.entries.iter().find(|e| e.tag == tag).copied()
    }

    /// An entry's raw (big-endian) data bytes.
    pub fn raw(&self, e: &Entry) -> &[u8] {
        // Every entry was checked by `parse`.
        let len = self.data_len(e).unwrap_or(0);
        &self.data()[e.offset as usize..e.offset as usize + len]
    }

    /// The strings of a string-typed entry; empty for other types.
    pub fn strings(&self, e: &Entry) -> Vec<&[u8]> {
        match e.ty {
            ty::STRING | ty::STRING_ARRAY | ty::I18NSTRING => {
                let raw = self.raw(e);
                raw[..raw.len().saturating_sub(1)]
                    .split(|b| *b == 0)
                    .take(e.count as usize)
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// The values of an integer entry, widened; empty for other types.
    pub fn numbers(&self, e: &Entry) -> Vec<u64> {
        let raw = self.raw(e);
        match e.ty {
            ty::CHAR | ty::INT8 => raw.iter().map(|b| u64::from(*b)).collect(),
            ty::INT16 => raw
                .chunks_exact(2)
                .map(|c| u64::from(u16::from_be_bytes([c[0], c[1]])))
                .collect(),
            ty::INT32 => raw.chunks_exact(4).map(|c| u64::from(be32(c, 0))).collect(),
            ty::INT64 => raw
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The first value of a string tag, if present.
    pub fn string(&self, tag: u32) -> Option<String> {
        let e = self.find(tag)?;
        self.strings(&e)
            .first()
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }

    /// The first value of a numeric tag, if present.
    pub fn number(&self, tag: u32) -> Option<u64> {
        let e = self.find(tag)?;
        self.numbers(&e).first().copied()
    }

    /// Checks the immutable region the way rpm does before it can export the
    /// header again (`hdrblobVerifyRegion` and `regionSwab`'s length check), and
    /// that the whole header is that region: package files carry no other tags.
    pub fn check_region(&self, region_tag: u32) -> Result<()> {
        let first = self.entries[0];
        ensure!(
            first.tag == region_tag && first.ty == ty::BIN && first.count == REGION_COUNT,
            "the header has no immutable region (an rpm v3 package?)"
        );
        let t = &self.data()[first.offset as usize..first.offset as usize + 16];
        let trailer = Entry {
            tag: be32(t, 0),
            ty: be32(t, 4),
            offset: be32(t, 8),
            count: be32(t, 12),
        };
        let ril = trailer.offset.wrapping_neg() / 16;
        ensure!(
            trailer.tag == region_tag
                && trailer.ty == ty::BIN
                && trailer.count == REGION_COUNT
                && trailer.offset.wrapping_neg() % 16 == 0
                && ril as usize == self.entries.len(),
            "the header's region trailer is damaged or the header has tags outside its region"
        );
        // rpm lays the data out in index order with the trailer last; its export
        // relies on that, and so does keeping the region byte for byte.
        let mut len = 0u64;
        for e in &self.entries[1..] {
            len += u64::from(align_diff(e.ty, len as u32));
            len += self.data_len(e)? as u64;
        }
        ensure!(
            len == u64::from(first.offset) && first.offset as usize + 16 == self.data().len(),
            "the header's data is not laid out the way rpm exports it"
        );
        Ok(())
    }
}

/// Reads the lead, the signature header and the main header of a package file.
pub fn read_package(path: &Path) -> Result<(Blob, Blob)> {
    let p = open_headers(path)?;
    Ok((p.sig, p.main))
}

/// A package's lead and headers, bounds-checked.
pub struct Headers {
    /// The signature header.
    pub sig: Blob,
    /// The main header.
    pub main: Blob,
    /// The bytes they were read from: the lead, both headers with their magic
    /// and the padding between them; the payload starts right after.
    pub bytes: Vec<u8>,
}

/// [`read_headers`] of the package file at `path`.
pub fn open_headers(path: &Path) -> Result<Headers> {
    let file = File::open(path).context("opening the package")?;
    read_headers(&mut BufReader::new(file))
}

/// Reads the lead and both headers from the start of a package, leaving `r`
/// at the payload. Both headers together are held to [`MAX_HEADERS`] before
/// anything is allocated, and every entry's data is checked to lie inside its header.
pub fn read_headers(r: &mut impl Read) -> Result<Headers> {
    let mut lead = [0u8; LEAD_SIZE];
    r.read_exact(&mut lead)
        .context("reading the lead: not an rpm package")?;
    ensure!(lead[..4] == LEAD_MAGIC, "not an rpm package (bad lead magic)");
    // Lead type 1 is a source package: rpm -i unpacks those into %_topdir instead.
    ensure!(lead[6..8] == [0, 0], "is a source package");
    let mut budget = MAX_HEADERS;
    let sig = read_header(r, &mut budget).context("reading the signature header")?;
    let pad = sig_padding(sig.data().len() as u64) as usize;
    r.read_exact(&mut [0u8; 8][..pad])
        .context("reading the signature header's padding")?;
    let main = read_header(r, &mut budget).context("reading the main header")?;
    let mut bytes = Vec::with_capacity(LEAD_SIZE + 16 + sig.bytes().len() + pad + main.bytes().len());
    bytes.extend_from_slice(&lead);
    bytes.extend_from_slice(&HEADER_MAGIC);
    bytes.extend_from_slice(sig.bytes());
    bytes.extend_from_slice(&[0u8; 8][..pad]);
    bytes.extend_from_slice(&HEADER_MAGIC);
    bytes.extend_from_slice(main.bytes());
    Ok(Headers { sig, main, bytes })
}

/// The package's metadata as the `rpm` crate reads it, from headers that
/// passed [`read_headers`]'s checks first: the crate allocates what a header
/// declares (4 GiB for a hostile one) and slices header data at offsets it
/// does not check (a hostile entry panicked it: fuzz target rpm_header).
pub fn metadata(path: &Path) -> Result<rpm::PackageMetadata> {
    let p = open_headers(path)?;
    rpm::PackageMetadata::parse(&mut p.bytes.as_slice()).context("reading the RPM headers")
}

/// Padding after a signature header of `data_len` bytes of data.
fn sig_padding(data_len: u64) -> u64 {
    (8 - data_len % 8) % 8
}

/// Reads a header's magic, `il` and `dl`, checks them against rpm's limits
/// and what is left of `budget`, and returns the index and data bytes that follow.
fn read_intro(intro: &[u8; 16], budget: &mut u64) -> Result<u64> {
    ensure!(intro[..8] == HEADER_MAGIC, "bad header magic");
    let il = be32(intro, 8);
    let dl = be32(intro, 12);
    ensure!(
        (1..=MAX_TAGS).contains(&il) && dl <= MAX_DATA,
        "header size out of range ({il} tags, {dl} bytes)"
    );
    let len = 16 * u64::from(il) + u64::from(dl);
    ensure!(
        len <= *budget,
        "the headers are too big: {il} tags and {dl} bytes of data, over arbor's limit of {} MiB for both headers",
        MAX_HEADERS >> 20
    );
    *budget -= len;
    Ok(len)
}

/// Reads a header (magic, then `il`, `dl`, entries, data) from `r`.
fn read_header(r: &mut impl Read, budget: &mut u64) -> Result<Blob> {
    let mut intro = [0u8; 16];
    r.read_exact(&mut intro).context("the file is truncated")?;
    let len = read_intro(&intro, budget)?;
    let mut bytes = intro[8..].to_vec();
    // Grown as bytes arrive, so a truncated file allocates only what it has.
    r.take(len).read_to_end(&mut bytes).context("reading the header")?;
    ensure!(bytes.len() as u64 == 8 + len, "the file is truncated");
    Blob::parse(bytes)
}

/// Size of one value of a fixed-size type (strings and BIN count bytes).
fn size(ty: u32) -> usize {
    match ty {
        ty::INT16 => 2,
        ty::INT32 => 4,
        ty::INT64 => 8,
        _ => 1,
    }
}

/// rpm's `typeAlign`.
fn align(ty: u32) -> u32 {
    size(ty) as u32
}

/// Padding before data of type `ty` at offset `at`.
pub fn align_diff(ty: u32, at: u32) -> u32 {
    let a = align(ty);
    (a - at % a) % a
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header with a region and the given (tag, type, count, data) entries laid
    /// out the way rpmbuild does.
    pub(crate) fn header(entries: &[(u32, u32, u32, &[u8])]) -> Vec<u8> {
        let il = entries.len() as u32 + 1;
        let mut data = Vec::new();
        let mut index = Vec::new();
        for (tag, t, count, d) in entries {
            let pad = align_diff(*t, data.len() as u32) as usize;
            data.resize(data.len() + pad, 0);
            for v in [*tag, *t, data.len() as u32, *count] {
                index.extend_from_slice(&v.to_be_bytes());
            }
            data.extend_from_slice(d);
        }
        let trailer_at = data.len() as u32;
        for v in [63u32, ty::BIN, (il * 16).wrapping_neg(), 16] {
            data.extend_from_slice(&v.to_be_bytes());
        }
        let mut out = Vec::new();
        for v in [il, data.len() as u32, 63, ty::BIN, trailer_at, 16] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&index);
        out.extend_from_slice(&data);
        out
    }

    #[test]
    fn damaged_headers_are_refused() {
        let good = header(&[(1000, ty::STRING, 1, b"abc\0"), (1009, ty::INT32, 1, &[0, 0, 0, 1])]);
        Blob::parse(good.clone()).unwrap().check_region(63).unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() - 1].to_vec()),
            ("string without NUL", header(&[(1000, ty::STRING, 1, b"abc")])),
            ("unknown type", {
                let mut b = good.clone();
                b[8 + 16 + 7] = 42;
                b
            }),
            ("misaligned int", {
                let mut b = good.clone();
                b[8 + 32 + 11] += 1;
                b
            }),
        ];
        for (what, bytes) in cases {
            let res = Blob::parse(bytes).and_then(|b| b.check_region(63));
            assert!(res.is_err(), "{what} was accepted");
        }
        let mut no_region = good.clone();
        no_region[8 + 3] = 62;
        assert!(Blob::parse(no_region).unwrap().check_region(63).is_err());
    }
}
