//! Block maps in bmaptool's format, version 2.0: which 4 KiB blocks of a
//! sparse image hold data, with a SHA-256 per range, so flashing writes only
//! those and can verify them. The XML is laid out as bmaptool's `BmapCreate`
//! writes it (`bmaptool copy` reads ours, we read its), including the
//! `BmapFileChecksum` taken over the file with that field set to zeros.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
// rustix rather than nix: its offsets are 64-bit on 32-bit targets too (armv7 images > 2 GiB).
use quick_xml::events::Event;
use rustix::fs::{FallocateFlags, SeekFrom, fallocate, seek};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

/// The block size arbor's bmaps use.
pub const BLOCK_SIZE: u64 = 4096;
/// Length of a SHA-256 in hex.
const SHA256_HEX: usize = 64;
/// Chunk size for hashing.
const CHUNK: usize = 1 << 20;

/// A run of mapped blocks, `first..=last`, and the SHA-256 of their bytes
/// (clipped to the image size for the last block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// First block.
    pub first: u64,
    /// Last block (inclusive).
    pub last: u64,
    /// Lowercase hex SHA-256; `None` when the bmap was made without checksums.
    pub sha256: Option<String>,
}

impl Range {
    /// Byte offset of the range in the image.
    pub fn offset(&self, block_size: u64) -> u64 {
        self.first * block_size
    }

    /// Byte length of the range, not reaching past `image_size`.
    pub fn len(&self, block_size: u64, image_size: u64) -> u64 {
        ((self.last + 1) * block_size)
            .min(image_size)
            .saturating_sub(self.offset(block_size))
    }

    /// `first-last`, or `first` for one block, as the XML and error messages show it.
    pub fn label(&self) -> String {
        if self.first == self.last {
            self.first.to_string()
        } else {
            format!("{}-{}", self.first, self.last)
        }
    }
}

/// A parsed or generated block map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    /// Size of the image in bytes.
    pub image_size: u64,
    /// Block size in bytes.
    pub block_size: u64,
    /// The mapped ranges, sorted and disjoint.
    pub ranges: Vec<Range>,
}

impl Bmap {
    /// Number of blocks in the image (the last one may be partial).
    pub fn blocks_count(&self) -> u64 {
        self.image_size.div_ceil(self.block_size)
    }

    /// Number of mapped blocks.
    pub fn mapped_blocks_count(&self) -> u64 {
        self.ranges.iter().map(|r| r.last - r.first + 1).sum()
    }

    /// Number of mapped bytes (what flashing writes).
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| r.len(self.block_size, self.image_size))
            .sum()
    }

    /// The XML file, as bmaptool 3.x lays it out, with its `BmapFileChecksum`.
    pub fn to_xml(&self) -> String {
        let blocks = self.blocks_count();
        let mapped = self.mapped_blocks_count();
        let percent = if blocks == 0 {
            0.0
        } else {
            mapped as f64 * 100.0 / blocks as f64
        };
        let mut x = String::new();
        x.push_str(HEADER);
        // `write!` into a String cannot fail.
        let _ = write!(
            x,
            "<bmap version=\"2.0\">\n    <!-- Image size in bytes: {} -->\n    <ImageSize> {} </ImageSize>\n\n    \
             <!-- Size of a block in bytes -->\n    <BlockSize> {} </BlockSize>\n\n    \
             <!-- Count of blocks in the image file -->\n    <BlocksCount> {blocks} </BlocksCount>\n\n    \
             <!-- Count of mapped blocks: {} or {percent:.1}% -->\n    <MappedBlocksCount> {mapped} </MappedBlocksCount>\n\n    \
             <!-- Type of checksum used in this file -->\n    <ChecksumType> sha256 </ChecksumType>\n\n    \
             <!-- The checksum of this bmap file. When it is calculated, the value of\n         \
             the checksum has be zero (all ASCII \"0\" symbols).  -->\n    <BmapFileChecksum> ",
            human_size(self.image_size),
            self.image_size,
            self.block_size,
            human_size(mapped * self.block_size),
        );
        let checksum_at = x.len();
        x.push_str(&"0".repeat(SHA256_HEX));
        x.push_str(
            " </BmapFileChecksum>\n\n    <!-- The block map which consists of elements which may either be a\n         \
             range of blocks or a single block. The 'chksum' attribute\n         \
             (if present) is the checksum of this blocks range. -->\n    <BlockMap>\n",
        );
        for r in &self.ranges {
            let chksum = r
                .sha256
                .as_ref()
                .map(|s| format!(" chksum=\"{s}\""))
                .unwrap_or_default();
            let _ = writeln!(x, "        <Range{chksum}> {} </Range>", r.label());
        }
        x.push_str("    </BlockMap>\n</bmap>\n");
        let sum = hex::encode(Sha256::digest(x.as_bytes()));
        x.replace_range(checksum_at..checksum_at + SHA256_HEX, &sum);
        x
    }
}

/// The comment bmaptool puts at the top of every bmap.
const HEADER: &str = r#"<?xml version="1.0" ?>
<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. In other words,
     it lists only those blocks which contain data (boot sector, partition
     table, file-system metadata, files, directories, extents, etc). These
     blocks have to be copied to the target device. The other blocks do not
     contain any useful data and do not have to be copied to the target
     device.

     The block map an optimization which allows to copy or flash the image to
     the image quicker than copying of flashing the entire image. This is
     because with bmap less data is copied: <MappedBlocksCount> blocks instead
     of <BlocksCount> blocks.

     Besides the machine-readable data, this file contains useful commentaries
     which contain human-readable information like image size, percentage of
     mapped data, etc.

     The 'version' attribute is the block map file format version in the
     'major.minor' format. The version major number is increased whenever an
     incompatible block map format change is made. The minor number changes
     in case of minor backward-compatible changes. -->

"#;

/// bmaptool's human-readable sizes (`12.3 MiB`).
pub(crate) fn human_size(size: u64) -> String {
    match size {
        1 => "1 byte".to_string(),
        s if s < 512 => format!("{s} bytes"),
        s => {
            let mut v = s as f64;
            for unit in ["KiB", "MiB", "GiB", "TiB"] {
                v /= 1024.0;
                if v < 1024.0 {
                    return format!("{v:.1} {unit}");
                }
            }
            format!("{:.1} EiB", v / 1024.0)
        }
    }
}

/// Maps the sparse `image`: its data extents (SEEK_DATA/SEEK_HOLE), widened
/// to whole blocks and merged, each hashed with SHA-256. On a filesystem
/// without hole support the whole image is one range.
pub fn create(image: &Path) -> Result<Bmap> {
    let file = File::open(image).with_context(|| format!("opening image {}", image.display()))?;
    let image_size = file
        .metadata()
        .with_context(|| format!("reading the size of {}", image.display()))?
        .len();
    let mut ranges: Vec<Range> = Vec::new();
    for (start, end) in
        data_extents(&file, image_size).with_context(|| format!("mapping the data in {}", image.display()))?
    {
        let first = start / BLOCK_SIZE;
        let last = end.div_ceil(BLOCK_SIZE) - 1;
        match ranges.last_mut() {
            Some(prev) if prev.last + 1 >= first => prev.last = prev.last.max(last),
            _ => ranges.push(Range {
                first,
                last,
                sha256: None,
            }),
        }
    }
    let mut bmap = Bmap {
        image_size,
        block_size: BLOCK_SIZE,
        ranges,
    };
    for r in &mut bmap.ranges {
        let (offset, len) = (r.offset(BLOCK_SIZE), r.len(BLOCK_SIZE, image_size));
        let sum = hash_at(&file, offset, len)
            .with_context(|| format!("hashing blocks {} of {}", r.label(), image.display()))?;
        r.sha256 = Some(sum);
    }
    Ok(bmap)
}

/// The byte ranges `[start, end)` of `file` that hold data, in order.
fn data_extents(file: &File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            // No data after `pos`.
            Err(Errno::NXIO) => break,
            // No hole support: all of it is data.
            Err(Errno::INVAL) if pos == 0 => return Ok(vec![(0, size)]),
            Err(e) => return Err(e.into()),
        };
        let end = match seek(file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(size),
            Err(Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        if end > start {
            out.push((start, end));
        }
        pos = end.max(start + 1);
    }
    Ok(out)
}

/// SHA-256 (hex) of `len` bytes of `file` at `offset`.
pub(crate) fn hash_at(file: &File, offset: u64, len: u64) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(CHUNK as u64) as usize;
        file.read_exact_at(&mut buf[..n], offset + done)?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(hex::encode(h.finalize()))
}

/// Parses a bmap (format 1.4 or 2.x with SHA-256 checksums), verifying its
/// `BmapFileChecksum` and that its ranges are sorted, disjoint and inside the image.
pub fn parse(xml: &str) -> Result<Bmap> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut version = None::<String>;
    let mut current = Vec::<u8>::new();
    let mut text = String::new();
    let mut range_sum = None::<String>;
    let (mut image_size, mut block_size, mut blocks_count, mut mapped_count) = (None, None, None, None);
    let (mut checksum_type, mut file_checksum) = (None::<String>, None::<String>);
    let mut ranges = Vec::new();
    loop {
        match reader.read_event().context("parsing the bmap XML")? {
            Event::Start(e) => {
                current = e.name().as_ref().to_vec();
                text.clear();
                for a in e.attributes() {
                    let a = a.context("parsing the bmap XML attributes")?;
                    let value = a
                        .unescape_value()
                        .context("parsing the bmap XML attributes")?
                        .into_owned();
                    match (current.as_slice(), a.key.as_ref()) {
                        (b"bmap", b"version") => version = Some(value),
                        (b"Range", b"chksum") => range_sum = Some(value),
                        _ => {}
                    }
                }
            }
            Event::Text(t) => text.push_str(&t.xml_content().context("parsing the bmap XML")?),
            Event::End(e) => {
                let value = text.trim().to_string();
                let number = |what: &str| -> Result<u64> {
                    value
                        .parse::<u64>()
                        .with_context(|| format!("bmap {what} {value:?} is not a number"))
                };
                match e.name().as_ref() {
                    b"ImageSize" => image_size = Some(number("ImageSize")?),
                    b"BlockSize" => block_size = Some(number("BlockSize")?),
                    b"BlocksCount" => blocks_count = Some(number("BlocksCount")?),
                    b"MappedBlocksCount" => mapped_count = Some(number("MappedBlocksCount")?),
                    b"ChecksumType" => checksum_type = Some(value),
                    b"BmapFileChecksum" => file_checksum = Some(value),
                    b"Range" => ranges.push(parse_range(&value, range_sum.take())?),
                    _ => {}
                }
                current.clear();
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let version = version.context("not a bmap file: no <bmap version=\"…\"> element")?;
    let major = version.split('.').next().unwrap_or_default();
    if !(major == "2" || version == "1.4") {
        bail!("bmap format version {version} is not supported (arbor reads 2.x, as bmaptool 3.x writes)");
    }
    match checksum_type.as_deref() {
        Some("sha256") => {}
        Some(other) => bail!("bmap checksum type {other:?} is not supported (only sha256)"),
        None => bail!("the bmap has no <ChecksumType>"),
    }
    let file_checksum = file_checksum.context("the bmap has no <BmapFileChecksum>")?;
    verify_file_checksum(xml, &file_checksum)?;
    let bmap = Bmap {
        image_size: image_size.context("the bmap has no <ImageSize>")?,
        block_size: block_size.context("the bmap has no <BlockSize>")?,
        ranges,
    };
    if bmap.block_size == 0 {
        bail!("bmap BlockSize is 0");
    }
    if let Some(n) = blocks_count.filter(|&n| n != bmap.blocks_count()) {
        bail!(
            "bmap BlocksCount {n} does not match ImageSize {} / BlockSize {}",
            bmap.image_size,
            bmap.block_size
        );
    }
    if let Some(n) = mapped_count.filter(|&n| n != bmap.mapped_blocks_count()) {
        bail!(
            "bmap MappedBlocksCount {n} does not match its ranges ({} blocks)",
            bmap.mapped_blocks_count()
        );
    }
    let mut next = 0u64;
    for r in &bmap.ranges {
        if r.first < next {
            bail!("bmap range {} overlaps or precedes the range before it", r.label());
        }
        if r.last >= bmap.blocks_count() {
            bail!(
                "bmap range {} reaches past the image's {} blocks",
                r.label(),
                bmap.blocks_count()
            );
        }
        next = r.last + 1;
    }
    Ok(bmap)
}

fn parse_range(text: &str, sha256: Option<String>) -> Result<Range> {
    let block = |s: &str| -> Result<u64> {
        s.trim()
            .parse::<u64>()
            .with_context(|| format!("bmap range {text:?} is not `first-last` or `block`"))
    };
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (block(a)?, block(b)?),
        None => (block(text)?, block(text)?),
    };
    if last < first {
        bail!("bmap range {text:?} ends before it starts");
    }
    if let Some(s) = &sha256 {
        if s.len() != SHA256_HEX || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("bmap range {text} has a malformed sha256 {s:?}");
        }
    }
    Ok(Range {
        first,
        last,
        sha256: sha256.map(|s| s.to_ascii_lowercase()),
    })
}

/// bmaptool's rule: the file's SHA-256 with the first occurrence of the stored
/// checksum replaced by zeros must equal the stored checksum.
fn verify_file_checksum(xml: &str, stored: &str) -> Result<()> {
    if stored.len() != SHA256_HEX || !stored.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("bmap BmapFileChecksum {stored:?} is not a sha256");
    }
    let at = xml
        .find(stored)
        .context("bmap BmapFileChecksum not found in the file text")?;
    let mut zeroed = xml.as_bytes().to_vec();
    zeroed[at..at + SHA256_HEX].fill(b'0');
    let actual = hex::encode(Sha256::digest(&zeroed));
    if !actual.eq_ignore_ascii_case(stored) {
        bail!("bmap file checksum mismatch: the file hashes to {actual} but says {stored} (edited or truncated?)");
    }
    Ok(())
}

/// Reads and parses the bmap file at `path`.
pub fn read(path: &Path) -> Result<Bmap> {
    // Ranges of a large, fragmented image take a few MiB of XML.
    let xml = crate::input::read_text(path, "bmap", 64 << 20)?;
    parse(&xml).with_context(|| format!("bmap {}", path.display()))
}

/// Maps `image` and writes its bmap to `bmap_path` (temporary file, fsync,
/// rename).
pub fn write(image: &Path, bmap_path: &Path) -> Result<Bmap> {
    let bmap = create(image)?;
    let mut tmp = crate::atomic::temp_beside(bmap_path)?;
    tmp.write_all(bmap.to_xml().as_bytes())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    crate::atomic::persist(tmp, bmap_path)?;
    Ok(bmap)
}

/// Turns every all-zero, block-aligned 4 KiB block of `image`'s data into a
/// hole (`FALLOC_FL_PUNCH_HOLE`, size kept), so its bmap maps only real data
/// even when a tool wrote zeros. Returns the bytes punched.
pub fn punch_zeros(image: &Path) -> Result<u64> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("opening image {}", image.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("reading the size of {}", image.display()))?
        .len();
    let extents = data_extents(&file, size).with_context(|| format!("mapping the data in {}", image.display()))?;
    let mut punched = 0u64;
    let mut buf = vec![0u8; CHUNK];
    let mut run: Option<(u64, u64)> = None;
    let punch = |(start, end): (u64, u64)| -> Result<()> {
        fallocate(
            &file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            start,
            end - start,
        )
        .with_context(|| format!("punching a hole at {start}..{end} in {}", image.display()))
    };
    for (start, end) in extents {
        // Only whole blocks inside the file can become holes.
        let mut pos = start.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
        let end = end / BLOCK_SIZE * BLOCK_SIZE;
        while pos < end {
            let n = (end - pos).min(CHUNK as u64) as usize;
            file.read_exact_at(&mut buf[..n], pos)
                .with_context(|| format!("reading {} at {pos}", image.display()))?;
            for (i, block) in buf[..n].chunks(BLOCK_SIZE as usize).enumerate() {
                let at = pos + i as u64 * BLOCK_SIZE;
                if block.iter().all(|&b| b == 0) {
                    run = match run {
                        Some((s, e)) if e == at => Some((s, at + BLOCK_SIZE)),
                        other => {
                            if let Some(r) = other {
                                punched += r.1 - r.0;
                                punch(r)?;
                            }
                            Some((at, at + BLOCK_SIZE))
                        }
                    };
                }
            }
            pos += n as u64;
        }
    }
    if let Some(r) = run {
        punched += r.1 - r.0;
        punch(r)?;
    }
    Ok(punched)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A 10 MiB sparse file with data at known places; returns the expected
    /// ranges `(first, last)`.
    fn sparse_image(path: &Path) -> Vec<(u64, u64)> {
        let f = File::create(path).unwrap();
        f.set_len(10 * MIB).unwrap();
        f.write_all_at(&[0xaa; 4096], 0).unwrap(); // block 0
        f.write_all_at(&[0x55; 5000], MIB + 100).unwrap(); // blocks 256..=257
        f.write_all_at(&[1; 8192], 2 * MIB).unwrap(); // 512..=513
        f.write_all_at(&[2; 4096], 2 * MIB + 8192).unwrap(); // adjacent: merged to 512..=514
        f.write_all_at(b"end", 10 * MIB - 3).unwrap(); // last block, 2559
        f.sync_all().unwrap();
        vec![(0, 0), (256, 257), (512, 514), (2559, 2559)]
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn create_maps_data_blocks_and_hashes_them() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.img");
        let expected = sparse_image(&img);
        let bmap = create(&img).unwrap();
        let got: Vec<_> = bmap.ranges.iter().map(|r| (r.first, r.last)).collect();
        assert_eq!(got, expected);
        assert_eq!(bmap.image_size, 10 * MIB);
        assert_eq!(bmap.blocks_count(), 2560);
        assert_eq!(bmap.mapped_blocks_count(), 7);
        let data = std::fs::read(&img).unwrap();
        for r in &bmap.ranges {
            let (o, l) = (
                r.offset(BLOCK_SIZE) as usize,
                r.len(BLOCK_SIZE, bmap.image_size) as usize,
            );
            assert_eq!(
                r.sha256.as_deref(),
                Some(sha(&data[o..o + l]).as_str()),
                "{}",
                r.label()
            );
        }
    }

    #[test]
    fn unaligned_size_last_range_is_clipped() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.img");
        let f = File::create(&img).unwrap();
        f.set_len(MIB + 10).unwrap();
        f.write_all_at(b"tail", MIB + 2).unwrap();
        let bmap = create(&img).unwrap();
        assert_eq!(bmap.blocks_count(), 257);
        let r = bmap.ranges.last().unwrap();
        assert_eq!((r.first, r.last, r.len(BLOCK_SIZE, bmap.image_size)), (256, 256, 10));
        let mut tail = vec![0u8; 10];
        tail[2..6].copy_from_slice(b"tail");
        assert_eq!(r.sha256.as_deref(), Some(sha(&tail).as_str()));
    }

    #[test]
    fn xml_round_trips_and_carries_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.img");
        sparse_image(&img);
        let bmap = create(&img).unwrap();
        let xml = bmap.to_xml();
        assert!(xml.contains("<bmap version=\"2.0\">"), "{xml}");
        assert!(xml.contains("<ImageSize> 10485760 </ImageSize>"), "{xml}");
        assert!(xml.contains("<BlockSize> 4096 </BlockSize>"), "{xml}");
        assert!(xml.contains("<BlocksCount> 2560 </BlocksCount>"), "{xml}");
        assert!(xml.contains("<MappedBlocksCount> 7 </MappedBlocksCount>"), "{xml}");
        assert!(xml.contains("<ChecksumType> sha256 </ChecksumType>"), "{xml}");
        assert!(xml.contains("> 256-257 </Range>"), "{xml}");
        assert!(xml.contains("> 0 </Range>"), "{xml}");
        assert!(!xml.contains(&"0".repeat(64)), "checksum left zero: {xml}");
        assert_eq!(parse(&xml).unwrap(), bmap);

        let path = dir.path().join("a.bmap");
        assert_eq!(write(&img, &path).unwrap(), bmap);
        assert_eq!(read(&path).unwrap(), bmap);
    }

    #[test]
    fn parse_rejects_bad_files() {
        let bmap = Bmap {
            image_size: 3 * BLOCK_SIZE,
            block_size: BLOCK_SIZE,
            ranges: vec![Range {
                first: 1,
                last: 2,
                sha256: Some(sha(b"x")),
            }],
        };
        let good = bmap.to_xml();
        let edited = good.replace("> 1-2 </Range>", "> 0-2 </Range>");
        let past_end = Bmap {
            ranges: vec![Range {
                first: 2,
                last: 3,
                sha256: None,
            }],
            ..bmap.clone()
        }
        .to_xml();
        let cases = [
            (edited.as_str(), "checksum mismatch"),
            (past_end.as_str(), "reaches past"),
            ("<bmap version=\"1.2\"></bmap>", "1.2 is not supported"),
            ("<foo/>", "not a bmap"),
        ];
        for (xml, want) in cases {
            let e = format!("{:#}", parse(xml).unwrap_err());
            assert!(e.contains(want), "want {want:?} in {e}");
        }
    }

    #[test]
    fn human_sizes_match_bmaptool() {
        for (n, s) in [
            (1, "1 byte"),
            (100, "100 bytes"),
            (4096, "4.0 KiB"),
            (10 * MIB, "10.0 MiB"),
        ] {
            assert_eq!(human_size(n), s);
        }
    }

    #[test]
    fn punch_zeros_makes_zero_blocks_holes() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.img");
        let mut data = vec![0u8; 64 * 4096];
        data[5 * 4096] = 1; // block 5
        data[40 * 4096 + 4095] = 1; // block 40
        std::fs::write(&img, &data).unwrap();
        let punched = punch_zeros(&img).unwrap();
        assert_eq!(punched, 62 * 4096);
        assert_eq!(std::fs::read(&img).unwrap(), data);
        let got: Vec<_> = create(&img).unwrap().ranges.iter().map(|r| (r.first, r.last)).collect();
        assert_eq!(got, vec![(5, 5), (40, 40)]);
    }
}
