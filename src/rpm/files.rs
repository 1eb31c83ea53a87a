//! The header's file arrays as rpm's payload reader reads them: which files
//! form a hardlink set (`rpmfilesBuildNLink` in rpm's lib/rpmfi.cc), and how
//! many bytes a stripped payload holds for each file (`iterReadArchiveNext`).
//!
//! A stripped cpio entry (rpm v6 packages, and v4 ones with files over 4 GiB)
//! names a header file by index and carries no size: the reader takes it from
//! the header. Regular files hold their size, except a hardlink set, whose
//! bytes follow its last member (in header order) only; symlinks hold their
//! target (the header's size); everything else holds nothing; a `%ghost` is
//! never in a payload.

use std::collections::HashMap;

use anyhow::{Result, bail};
use rpm::{FileFlags, IndexTag};

const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const S_IFLNK: u16 = 0o120000;

/// rpm's hardlink sets: files `is_member` accepts (regular, not `%ghost`)
/// with a non-zero inode, grouped by (device, inode); only sets of two or
/// more, each in header order, the sets sorted. Without both arrays (or with
/// arrays of another length than `n`) there are none, as in rpm.
pub fn hardlink_sets(n: usize, inodes: &[u32], devices: &[u32], is_member: impl Fn(usize) -> bool) -> Vec<Vec<usize>> {
    if inodes.len() != n || devices.len() != n {
        return Vec::new();
    }
    let mut by_inode: HashMap<(u32, u32), Vec<usize>> = HashMap::new();
    for i in 0..n {
        if inodes[i] != 0 && is_member(i) {
            by_inode.entry((devices[i], inodes[i])).or_default().push(i);
        }
    }
    let mut sets: Vec<Vec<usize>> = by_inode.into_values().filter(|v| v.len() > 1).collect();
    sets.sort();
    sets
}

/// Bytes a stripped payload holds for each header file.
#[derive(Debug)]
pub struct StrippedSizes {
    /// `None`: a `%ghost`, which has no place in a payload.
    sizes: Vec<Option<u64>>,
}

/// What a stripped entry's file index says, in terms of the header.
#[derive(Debug, PartialEq)]
pub enum Stripped {
    /// The file's content is this many bytes.
    Size(u64),
    /// A `%ghost`.
    Ghost,
    /// Not a file of the header.
    OutOfRange,
}

impl StrippedSizes {
    /// From the header's file arrays; an array of another length than the
    /// file list is refused, naming the tag.
    pub fn from_header(h: &rpm::Header<IndexTag>) -> Result<StrippedSizes> {
        use IndexTag as T;
        let n = match h.get_entry_data_as_string_array(T::RPMTAG_BASENAMES) {
            Ok(v) => v.len(),
            Err(_) => return Ok(StrippedSizes { sizes: Vec::new() }),
        };
        let sizes = match h.get_entry_data_as_u64_array(T::RPMTAG_LONGFILESIZES) {
            Ok(v) => v,
            Err(_) => u32s(h, T::RPMTAG_FILESIZES)?.into_iter().map(u64::from).collect(),
        };
        let modes = h
            .get_entry_data_as_u16_array(T::RPMTAG_FILEMODES)
            .map_err(|e| anyhow::anyhow!("reading the file modes from the header: {e}"))?;
        let flags = u32s(h, T::RPMTAG_FILEFLAGS)?;
        for (tag, len) in [
            ("file sizes", sizes.len()),
            ("file modes", modes.len()),
            ("file flags", flags.len()),
        ] {
            if len != n {
                bail!("the header lists {n} files but {len} {tag}");
            }
        }
        let inodes = h.get_entry_data_as_u32_array(T::RPMTAG_FILEINODES).unwrap_or_default();
        let devices = h.get_entry_data_as_u32_array(T::RPMTAG_FILEDEVICES).unwrap_or_default();
        Ok(StrippedSizes::new(&modes, &flags, &sizes, &inodes, &devices))
    }

    /// From arrays of one length (that of `modes`).
    fn new(modes: &[u16], flags: &[u32], sizes: &[u64], inodes: &[u32], devices: &[u32]) -> StrippedSizes {
        let ghost = |i: usize| flags[i] & FileFlags::GHOST.bits() != 0;
        let regular = |i: usize| modes[i] & S_IFMT == S_IFREG && !ghost(i);
        let mut sizes: Vec<Option<u64>> = (0..modes.len())
            .map(|i| match modes[i] & S_IFMT {
                _ if ghost(i) => None,
                S_IFREG | S_IFLNK => Some(sizes[i]),
                _ => Some(0),
            })
            .collect();
        for set in hardlink_sets(modes.len(), inodes, devices, regular) {
            for &i in &set[..set.len() - 1] {
                sizes[i] = Some(0);
            }
        }
        StrippedSizes { sizes }
    }

    /// Files in the header.
    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    /// Whether the header lists no files.
    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    /// What file `index` holds in the payload.
    pub fn get(&self, index: u32) -> Stripped {
        match usize::try_from(index).ok().and_then(|i| self.sizes.get(i)) {
            Some(Some(size)) => Stripped::Size(*size),
            Some(None) => Stripped::Ghost,
            None => Stripped::OutOfRange,
        }
    }
}

fn u32s(h: &rpm::Header<IndexTag>, tag: IndexTag) -> Result<Vec<u32>> {
    h.get_entry_data_as_u32_array(tag)
        .map_err(|e| anyhow::anyhow!("reading {tag:?} from the header: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_rpms_reader() {
        let ghost = FileFlags::GHOST.bits();
        // (mode, flags, size, inode): a file, a directory, a symlink, a fifo,
        // a ghost, a hardlink pair (5 and 7, bytes with 7), an empty file,
        // two inode-0 files (no set: rpm skips inode 0).
        let files: [(u16, u32, u64, u32); 10] = [
            (0o100644, 0, 5, 1),
            (0o040755, 0, 4096, 2),
            (0o120777, 0, 5, 3),
            (0o010644, 0, 0, 4),
            (0o100644, ghost, 9, 5),
            (0o100644, 0, 3, 6),
            (0o100644, 0, 0, 7),
            (0o100644, 0, 3, 6),
            (0o100644, 0, 2, 0),
            (0o100644, 0, 2, 0),
        ];
        let modes: Vec<u16> = files.iter().map(|f| f.0).collect();
        let flags: Vec<u32> = files.iter().map(|f| f.1).collect();
        let sizes: Vec<u64> = files.iter().map(|f| f.2).collect();
        let inodes: Vec<u32> = files.iter().map(|f| f.3).collect();
        let s = StrippedSizes::new(&modes, &flags, &sizes, &inodes, &[0; 10]);
        let got: Vec<Stripped> = (0..11).map(|i| s.get(i)).collect();
        use Stripped::*;
        let want = [
            Size(5),
            Size(0),
            Size(5),
            Size(0),
            Ghost,
            Size(0),
            Size(0),
            Size(3),
            Size(2),
            Size(2),
            OutOfRange,
        ];
        assert_eq!(got, want);
        assert_eq!(s.get(u32::MAX), OutOfRange);
        // Without inodes there are no sets: every regular file holds its bytes.
        let s = StrippedSizes::new(&modes, &flags, &sizes, &[], &[]);
        assert_eq!(s.get(5), Size(3));
    }

    #[test]
    fn arrays_must_cover_every_file() {
        use rpm::{HeaderEntry, IndexData};
        let header = |sizes: Vec<u64>| {
            let e = |t: IndexTag, d| HeaderEntry::new(t as u32, d);
            rpm::Header::from_entries(
                [
                    e(
                        IndexTag::RPMTAG_BASENAMES,
                        IndexData::StringArray(vec!["a".into(), "b".into()]),
                    ),
                    e(IndexTag::RPMTAG_LONGFILESIZES, IndexData::Int64(sizes)),
                    e(IndexTag::RPMTAG_FILEMODES, IndexData::Int16(vec![0o100644; 2])),
                    e(IndexTag::RPMTAG_FILEFLAGS, IndexData::Int32(vec![0; 2])),
                ],
                IndexTag::RPMTAG_HEADERIMMUTABLE,
            )
        };
        let s = StrippedSizes::from_header(&header(vec![1, 2])).unwrap();
        assert_eq!((s.len(), s.get(1)), (2, Stripped::Size(2)));
        let e = StrippedSizes::from_header(&header(vec![1])).unwrap_err();
        assert_eq!(e.to_string(), "the header lists 2 files but 1 file sizes");
    }
}
