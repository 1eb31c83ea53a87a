//! rpm's header blobs: read a package's signature and main header byte for byte,
//! add the tags rpm adds when it installs the package, and export the result in
//! the layout rpm's `headerExport` gives it in the database.
//!
//! The main header's immutable region is kept verbatim: rpm checks it against
//! the SHA256HEADER/SHA1HEADER digests (copied from the signature header) every
//! time it reads the record back.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

/// The tag numbers involved, from rpm's rpmtag.h (the `rpm` crate's table has
/// SIGSIZE off by one).
pub(super) mod tag {
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
    pub const GROUP: u32 = 1016;
    pub const ARCH: u32 = 1022;
    pub const OLDFILENAMES: u32 = 1027;
    pub const FILESTATES: u32 = 1029;
    pub const SOURCERPM: u32 = 1044;
    pub const ARCHIVESIZE: u32 = 1046;
    pub const PROVIDENAME: u32 = 1047;
    pub const REQUIREFLAGS: u32 = 1048;
    pub const REQUIRENAME: u32 = 1049;
    pub const CONFLICTNAME: u32 = 1054;
    pub const TRIGGERNAME: u32 = 1066;
    pub const OBSOLETENAME: u32 = 1090;
    pub const PREFIXES: u32 = 1098;
    pub const INSTPREFIXES: u32 = 1099;
    pub const SOURCEPACKAGE: u32 = 1106;
    pub const BASENAMES: u32 = 1117;
    pub const DIRNAMES: u32 = 1118;
    pub const ORIGBASENAMES: u32 = 1120;
    pub const INSTALLCOLOR: u32 = 1127;
    pub const INSTALLTID: u32 = 1128;
    pub const RECOMMENDNAME: u32 = 5046;
    pub const SUGGESTNAME: u32 = 5049;
    pub const SUPPLEMENTNAME: u32 = 5052;
    pub const ENHANCENAME: u32 = 5055;
    pub const FILETRIGGERNAME: u32 = 5069;
    pub const FILETRIGGERINDEX: u32 = 5070;
    pub const TRANSFILETRIGGERNAME: u32 = 5079;
    pub const TRANSFILETRIGGERINDEX: u32 = 5080;
    pub const FILESIGNATURES: u32 = 5090;
    pub const FILESIGNATURELENGTH: u32 = 5091;
}

/// Signature header tags (`rpmSigTag`); those below 1000 share the main
/// header's numbers.
mod sigtag {
    pub const SIZE: u32 = 1000;
    pub const PGP: u32 = 1002;
    pub const MD5: u32 = 1004;
    pub const GPG: u32 = 1005;
    pub const PAYLOADSIZE: u32 = 1007;
    pub const FILESIGNATURES: u32 = 274;
    pub const FILESIGNATURELENGTH: u32 = 275;
}

/// rpm's header data types (`rpmTagType`).
pub(super) mod ty {
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
const HEADER_MAGIC: [u8; 8] = [0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0];
/// The region tag's data: a 16-byte copy of an index entry.
const REGION_COUNT: u32 = 16;
/// rpm's `hdrchkTags` and `hdrchkData` limits.
const MAX_TAGS: u32 = 0xffff;
const MAX_DATA: u32 = 0x0fff_ffff;

/// `RPMFILE_STATE_NORMAL`: the file is installed.
const FILE_STATE_NORMAL: u8 = 0;

/// One index entry of a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub tag: u32,
    pub ty: u32,
    pub offset: u32,
    pub count: u32,
}

/// A header blob as rpm stores it in the database (`headerExport`): entry
/// count, data length, index entries, data; no magic.
#[derive(Debug, Clone)]
pub(super) struct Blob {
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

    fn data(&self) -> &[u8] {
        &self.bytes[self.data_start..]
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
    fn number(&self, tag: u32) -> Option<u64> {
        let e = self.find(tag)?;
        self.numbers(&e).first().copied()
    }

    /// Checks the immutable region the way rpm does before it can export the
    /// header again (`hdrblobVerifyRegion` and `regionSwab`'s length check), and
    /// that the whole header is that region: package files carry no other tags.
    fn check_region(&self, region_tag: u32) -> Result<()> {
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

/// A tag rpm adds to the header at install time.
struct Added {
    tag: u32,
    ty: u32,
    count: u32,
    /// Big-endian data as it goes into the blob.
    data: Vec<u8>,
}

/// The tags rpm copies from the signature header into the main header
/// (`xlateTags` in lib/package.c of rpm 4.17 to 4.20): signature tag, header
/// tag, the type rpm expects, the count it insists on (0: any), and whether the
/// tag may legitimately sit in the main header already. rpm 6 also copies
/// SHA3_256HEADER and OPENPGP, which rpm 4 ignores.
const SIG_TAGS: &[(u32, u32, u32, u32, bool)] = &[
    (sigtag::SIZE, tag::SIGSIZE, ty::INT32, 1, false),
    (sigtag::PGP, tag::SIGPGP, ty::BIN, 0, false),
    (sigtag::MD5, tag::SIGMD5, ty::BIN, 16, false),
    (sigtag::GPG, tag::SIGGPG, ty::BIN, 0, false),
    (sigtag::PAYLOADSIZE, tag::ARCHIVESIZE, ty::INT32, 1, true),
    (sigtag::FILESIGNATURES, tag::FILESIGNATURES, ty::STRING_ARRAY, 0, true),
    (
        sigtag::FILESIGNATURELENGTH,
        tag::FILESIGNATURELENGTH,
        ty::INT32,
        1,
        true,
    ),
    (tag::VERITYSIGNATURES, tag::VERITYSIGNATURES, ty::STRING_ARRAY, 0, false),
    (tag::VERITYSIGNATUREALGO, tag::VERITYSIGNATUREALGO, ty::INT32, 1, false),
    (tag::SHA1HEADER, tag::SHA1HEADER, ty::STRING, 1, false),
    (tag::SHA256HEADER, tag::SHA256HEADER, ty::STRING, 1, false),
    (tag::DSAHEADER, tag::DSAHEADER, ty::BIN, 0, false),
    (tag::RSAHEADER, tag::RSAHEADER, ty::BIN, 0, false),
    (tag::LONGSIGSIZE, tag::LONGSIGSIZE, ty::INT64, 1, false),
    (tag::LONGARCHIVESIZE, tag::LONGARCHIVESIZE, ty::INT64, 1, false),
];

/// Tags an installed header gets from the install itself; a package must not
/// carry them already (rpm would add a second copy).
const INSTALL_TAGS: [(u32, &str); 5] = [
    (tag::INSTALLTIME, "INSTALLTIME"),
    (tag::INSTALLTID, "INSTALLTID"),
    (tag::INSTALLCOLOR, "INSTALLCOLOR"),
    (tag::FILESTATES, "FILESTATES"),
    (tag::INSTPREFIXES, "INSTPREFIXES"),
];

/// What one package contributes to the database.
pub(super) struct Installed {
    /// The exported header blob, ready for the `Packages` table.
    pub blob: Blob,
    /// `%{ARCH}`, for the transaction color.
    pub arch: String,
    /// `name-[epoch:]version-release.arch`.
    pub nevra: String,
}

/// Reads the package at `path` and returns its header as rpm would store it
/// after installing it in a transaction with id and time `install_time` and
/// color `color`.
pub(super) fn install(path: &Path, install_time: u32, color: u32) -> Result<Installed> {
    let (sig, main) = read_package(path)?;
    main.check_region(tag::HEADERIMMUTABLE)?;
    check_digest(&sig, &main)?;

    let mut added = merge_signature(&sig, &main)?;
    retrofit(&main, &mut added)?;
    for (t, name) in INSTALL_TAGS {
        ensure!(
            main.find(t).is_none(),
            "the package header already has the install-time tag {name}"
        );
    }
    let arch = main.string(tag::ARCH).context("the package header has no ARCH")?;
    let field = |t: u32, name: &str| {
        main.string(t)
            .with_context(|| format!("the package header has no {name}"))
    };
    let epoch = main.number(tag::EPOCH).map(|e| format!("{e}:")).unwrap_or_default();
    let nevra = format!(
        "{}-{epoch}{}-{}.{arch}",
        field(tag::NAME, "NAME")?,
        field(tag::VERSION, "VERSION")?,
        field(tag::RELEASE, "RELEASE")?
    );

    // rpmRelocateFileList: without relocations, a relocatable package records
    // its prefixes as the install prefixes.
    let files = main.find(tag::BASENAMES).map_or(0, |e| e.count);
    let prefixes = main.find(tag::PREFIXES).filter(|p| p.count > 0);
    let relocated = main.find(tag::ORIGBASENAMES).is_some();
    if let (Some(prefixes), true, false) = (prefixes, files > 0, relocated) {
        added.push(Added {
            tag: tag::INSTPREFIXES,
            ty: prefixes.ty,
            count: prefixes.count,
            data: main.raw(&prefixes).to_vec(),
        });
    }
    // psm.c dbAdd. Every file is installed: no %_netsharedpath, %_install_langs
    // or --excludedocs, and no file's color falls outside the transaction's
    // (rpm skips those only on ia64).
    if files > 0 {
        added.push(Added {
            tag: tag::FILESTATES,
            ty: ty::CHAR,
            count: files,
            data: vec![FILE_STATE_NORMAL; files as usize],
        });
    }
    for (t, value) in [
        (tag::INSTALLTID, install_time),
        (tag::INSTALLTIME, install_time),
        (tag::INSTALLCOLOR, color),
    ] {
        added.push(Added {
            tag: t,
            ty: ty::INT32,
            count: 1,
            data: value.to_be_bytes().to_vec(),
        });
    }

    let blob = Blob::parse(export(&main, added)).context("exporting the installed header")?;
    Ok(Installed { blob, arch, nevra })
}

/// Reads the lead, the signature header and the main header of a package file.
fn read_package(path: &Path) -> Result<(Blob, Blob)> {
    let file = File::open(path).context("opening the package")?;
    let mut r = BufReader::new(file);
    let mut lead = [0u8; LEAD_SIZE];
    r.read_exact(&mut lead)
        .context("reading the lead: not an rpm package")?;
    ensure!(lead[..4] == LEAD_MAGIC, "not an rpm package (bad lead magic)");
    // Lead type 1 is a source package: rpm -i unpacks those into %_topdir instead.
    ensure!(lead[6..8] == [0, 0], "is a source package");
    let sig = read_header(&mut r).context("reading the signature header")?;
    let pad = (8 - sig.data().len() % 8) % 8;
    r.read_exact(&mut [0u8; 8][..pad])
        .context("reading the signature header's padding")?;
    let main = read_header(&mut r).context("reading the main header")?;
    Ok((sig, main))
}

/// Reads a header (magic, then `il`, `dl`, entries, data) from `r`.
fn read_header(r: &mut impl Read) -> Result<Blob> {
    let mut intro = [0u8; 16];
    r.read_exact(&mut intro).context("the file is truncated")?;
    ensure!(intro[..8] == HEADER_MAGIC, "bad header magic");
    let il = be32(&intro, 8);
    let dl = be32(&intro, 12);
    ensure!(
        (1..=MAX_TAGS).contains(&il) && dl <= MAX_DATA,
        "header size out of range ({il} tags, {dl} bytes)"
    );
    let mut bytes = intro[8..].to_vec();
    bytes.resize(8 + 16 * il as usize + dl as usize, 0);
    r.read_exact(&mut bytes[8..]).context("the file is truncated")?;
    Blob::parse(bytes)
}

/// The main header must match the SHA256 digest in the signature header:
/// rpm checks it every time it reads the record back and hides the package
/// when it does not match.
fn check_digest(sig: &Blob, main: &Blob) -> Result<()> {
    let Some(want) = sig.string(tag::SHA256HEADER) else {
        return Ok(());
    };
    let got = hex::encode(
        Sha256::new()
            .chain_update(HEADER_MAGIC)
            .chain_update(main.bytes())
            .finalize(),
    );
    ensure!(
        got.eq_ignore_ascii_case(&want),
        "the header's SHA256 digest is {got}, the signature header says {want}: the package is damaged"
    );
    Ok(())
}

/// rpm's `headerMergeLegacySigs`: the signature tags that go into the installed header.
fn merge_signature(sig: &Blob, main: &Blob) -> Result<Vec<Added>> {
    for &(stag, xtag, _, _, quirk) in SIG_TAGS {
        if main.find(xtag).is_some() && !(quirk && sig.find(stag).is_none()) {
            bail!("invalid signature tag {xtag}: the main header has it too");
        }
    }
    let mut added = Vec::new();
    for &(stag, xtag, want_ty, want_count, _) in SIG_TAGS {
        let Some(e) = sig.find(stag) else { continue };
        ensure!(
            e.ty == want_ty && e.count >= 1 && (want_count == 0 || e.count == want_count),
            "invalid signature tag {stag} (type {}, {} values)",
            e.ty,
            e.count
        );
        added.push(Added {
            tag: xtag,
            ty: e.ty,
            count: e.count,
            data: sig.raw(&e).to_vec(),
        });
    }
    Ok(added)
}

/// rpm's `applyRetrofits` for the packages it still installs: binary packages
/// without SOURCERPM get "(none)"; old file lists and source packages are refused.
fn retrofit(main: &Blob, added: &mut Vec<Added>) -> Result<()> {
    ensure!(main.find(tag::SOURCEPACKAGE).is_none(), "is a source package");
    ensure!(
        main.find(tag::OLDFILENAMES).is_none(),
        "has an uncompressed file list (OLDFILENAMES), which rpm converts on the fly; unsupported"
    );
    if main.find(tag::SOURCERPM).is_none() {
        // headerIsSourceHeuristic: a single empty dirname marks a source package.
        let source = main
            .find(tag::DIRNAMES)
            .is_some_and(|e| e.count == 1 && main.strings(&e).first().is_some_and(|d| d.is_empty()));
        ensure!(!source, "is a source package");
        added.push(Added {
            tag: tag::SOURCERPM,
            ty: ty::STRING,
            count: 1,
            data: b"(none)\0".to_vec(),
        });
    }
    Ok(())
}

/// rpm's `headerExport` for a header read from a package plus `added` tags:
/// the region's entries and data verbatim, then the added tags sorted by tag,
/// each aligned for its type.
fn export(main: &Blob, mut added: Vec<Added>) -> Vec<u8> {
    added.sort_by_key(|a| a.tag);
    let mut data = main.data().to_vec();
    let mut index = main.bytes[8..main.data_start].to_vec();
    for a in &added {
        let pad = align_diff(a.ty, data.len() as u32) as usize;
        data.resize(data.len() + pad, 0);
        for v in [a.tag, a.ty, data.len() as u32, a.count] {
            index.extend_from_slice(&v.to_be_bytes());
        }
        data.extend_from_slice(&a.data);
    }
    let il = (main.entries.len() + added.len()) as u32;
    let mut out = Vec::with_capacity(8 + index.len() + data.len());
    out.extend_from_slice(&il.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&index);
    out.extend_from_slice(&data);
    out
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
fn align_diff(ty: u32, at: u32) -> u32 {
    let a = align(ty);
    (a - at % a) % a
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with a region and the given (tag, type, count, data) entries laid
    /// out the way rpmbuild does.
    fn header(entries: &[(u32, u32, u32, &[u8])]) -> Vec<u8> {
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
    fn export_appends_sorted_aligned_tags_after_the_region() {
        let h = Blob::parse(header(&[(1000, ty::STRING, 1, b"abc\0")])).unwrap();
        h.check_region(63).unwrap();
        let added = vec![
            Added {
                tag: 1128,
                ty: ty::INT32,
                count: 1,
                data: 7u32.to_be_bytes().to_vec(),
            },
            Added {
                tag: 1029,
                ty: ty::CHAR,
                count: 1,
                data: vec![0],
            },
            Added {
                tag: 269,
                ty: ty::STRING,
                count: 1,
                data: b"x\0".to_vec(),
            },
        ];
        let out = Blob::parse(export(&h, added)).unwrap();
        let tags: Vec<u32> = out.entries.iter().map(|e| e.tag).collect();
        assert_eq!(tags, [63, 1000, 269, 1029, 1128]);
        // Region data is 4 + 16 bytes; "x\0" at 20, the char at 22, the int aligned to 24.
        let offsets: Vec<u32> = out.entries.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [4, 0, 20, 22, 24]);
        assert_eq!(out.numbers(&out.find(1128).unwrap()), [7]);
        assert_eq!(out.bytes()[8..8 + 32], h.bytes()[8..8 + 32]);
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
