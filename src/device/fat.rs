//! Replacing a file in the root directory of an unmounted FAT partition (the
//! Raspberry Pi firmware partition of a card serviced offline, or of a board
//! whose kernel has no vfat) so that a power cut at any moment leaves the
//! file with either its old or its new content — never missing, never torn.
//!
//! FAT has no atomic rename, but a directory entry is 32 bytes inside one
//! sector, and a sector write is all-or-nothing on the media boards boot
//! from. So the swap is one entry write, the way Linux's vfat driver renames
//! onto an existing name (`vfat_rename` reuses the target's entry slot,
//! `fat_attach(old_inode, new_i_pos)`, then removes the source's entries).
//! Every write here is raw and ordered, each step synced before the next:
//!
//! 1. empty entries `ARBORNEW.TMP` and `ARBOROLD.TMP` (the evidence a rerun
//!    looks for);
//! 2. the new content into free clusters, then their chain into every FAT
//!    copy, then `ARBORNEW.TMP` pointed at it;
//! 3. `ARBOROLD.TMP` pointed at the target's clusters (shared for a moment);
//! 4. **the commit:** the target's entry pointed at the new clusters and
//!    size — one 32-byte write;
//! 5. both temporary entries pointed at nothing; the clusters no entry
//!    reaches any more are freed in every FAT copy, FAT32's free count
//!    recounted;
//! 6. the temporary entries marked deleted.
//!
//! A run killed anywhere leaves the target old (before 4) or new (after 4),
//! plus at worst the temporary entries and clusters no entry reaches; the
//! next [`replace`] sees the temporary entries and does step 5 and 6 again,
//! so `fsck.fat` finds nothing afterwards. fatfs only
//! reads here: its writes go field by field, which a power cut can tear.

use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{Context, Result, bail};

/// Where the new content is written first (an 8.3 name: no long-name entries).
const NEW: &str = "ARBORNEW.TMP";
/// Holds the old content between the swap and its release.
const OLD: &str = "ARBOROLD.TMP";

/// A FAT partition: a block device or an image region, with a barrier.
pub trait Disk: Read + Write + Seek {
    /// Makes every write so far durable (fsync of the device).
    fn sync(&mut self) -> std::io::Result<()>;
}

impl Disk for std::fs::File {
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_all()
    }
}

/// The content of `name` in the root directory, if it is there.
pub fn read<D: Disk>(disk: &mut D, name: &str) -> Result<Option<Vec<u8>>> {
    let fs = open(disk)?;
    let root = fs.root_dir();
    let found = root.iter().flatten().find(|e| e.file_name().eq_ignore_ascii_case(name));
    let Some(entry) = found else { return Ok(None) };
    let mut f = entry.to_file();
    let mut out = Vec::new();
    f.read_to_end(&mut out)
        .with_context(|| format!("reading {name} on the FAT partition"))?;
    Ok(Some(out))
}

/// Puts `content` in `name` (root directory) unless it is already there;
/// true when it wrote. Finishes or undoes a killed earlier run first.
pub fn replace<D: Disk>(disk: &mut D, name: &str, content: &[u8]) -> Result<bool> {
    if name.contains('/') || name.eq_ignore_ascii_case(NEW) || name.eq_ignore_ascii_case(OLD) {
        bail!("{name}: only a file of the FAT partition's root directory can be replaced");
    }
    let geo = Geometry::read(disk)?;
    recover(disk, &geo)?;
    if read(disk, name)?.as_deref() == Some(content) {
        return Ok(false);
    }
    let size = u32::try_from(content.len()).with_context(|| format!("{name} is too big for FAT"))?;
    let short = short_name(name);
    let dir = geo.root_entries(disk)?;
    let target = dir.iter().find(|e| e.is(name)).cloned();
    if target.is_none() && short.is_none() {
        bail!("{name}: arbor creates only 8.3 names on the FAT partition (no long-name entries)");
    }
    geo.add_entry(disk, NEW)?;
    geo.add_entry(disk, OLD)?;
    let first = geo.allocate(disk, content)?;
    let dir = geo.root_entries(disk)?;
    let (new, hold) = (find(&dir, NEW)?, find(&dir, OLD)?);
    geo.point(disk, &new, first, size)?;
    crate::failpoint::hit("device::fat-swap")?;
    match target {
        Some(t) => {
            geo.point(disk, &hold, t.cluster, t.size)?;
            geo.point(disk, &t, first, size)?;
        }
        // A new name: the entry is renamed in one write (it appears whole or not at all).
        None => geo.rename(disk, &new, short.context("an 8.3 name")?)?,
    }
    crate::failpoint::hit("device::fat-committed")?;
    release(disk, &geo)?;
    Ok(true)
}

/// Finishes or undoes a [`replace`] that was killed: what the target points
/// at is its content (old before the commit, new after); the rest goes.
fn recover<D: Disk>(disk: &mut D, geo: &Geometry) -> Result<()> {
    let dir = geo.root_entries(disk)?;
    if dir.iter().any(|e| e.is(NEW) || e.is(OLD)) {
        tracing::info!("finishing an interrupted replacement of a file on the FAT partition");
        release(disk, geo)?;
    }
    Ok(())
}

/// Frees what only the temporary entries reach, then removes them. They
/// stay, pointing at nothing, until every FAT copy is rewritten: the
/// evidence a rerun needs if the power goes in between.
fn release<D: Disk>(disk: &mut D, geo: &Geometry) -> Result<()> {
    let dir = geo.root_entries(disk)?;
    let temps: Vec<&Entry> = dir.iter().filter(|e| e.is(NEW) || e.is(OLD)).collect();
    for e in &temps {
        if e.cluster != 0 || e.size != 0 {
            geo.point(disk, e, 0, 0)?;
        }
    }
    geo.reclaim(disk)?;
    for e in temps {
        geo.delete(disk, e)?;
    }
    Ok(())
}

/// `name` as an 8.3 entry name with its lower-case flags, if it is one.
fn short_name(name: &str) -> Option<([u8; 11], u8)> {
    let (base, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    let ok = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-~!#$%&'()@^{}".contains(&b))
    };
    if !ok(base, 8) || !(ext.is_empty() || ok(ext, 3)) {
        return None;
    }
    let case = |s: &str| {
        let lower = s.bytes().any(|b| b.is_ascii_lowercase());
        let upper = s.bytes().any(|b| b.is_ascii_uppercase());
        (lower, upper)
    };
    let ((bl, bu), (el, eu)) = (case(base), case(ext));
    if (bl && bu) || (el && eu) {
        return None; // mixed case needs a long name
    }
    let mut raw = [b' '; 11];
    for (i, b) in base.bytes().enumerate() {
        raw[i] = b.to_ascii_uppercase();
    }
    for (i, b) in ext.bytes().enumerate() {
        raw[8 + i] = b.to_ascii_uppercase();
    }
    Some((raw, if bl { 0x08 } else { 0 } | if el { 0x10 } else { 0 }))
}

fn open<D: Disk>(disk: &mut D) -> Result<fatfs::FileSystem<&mut D>> {
    disk.seek(SeekFrom::Start(0)).context("rewinding the FAT partition")?;
    fatfs::FileSystem::new(disk, fatfs::FsOptions::new().update_accessed_date(false))
        .context("opening the FAT partition (is it FAT16 or FAT32?)")
}

/// One directory entry: its short entry's byte offset and the offsets of
/// its long-name entries, where its data starts and how long it is.
#[derive(Debug, Clone)]
struct Entry {
    long: Option<String>,
    short: String,
    slots: Vec<u64>,
    offset: u64,
    attr: u8,
    cluster: u32,
    size: u32,
}

impl Entry {
    fn is(&self, name: &str) -> bool {
        self.long.as_deref().is_some_and(|l| l.eq_ignore_ascii_case(name)) || self.short.eq_ignore_ascii_case(name)
    }
}

fn find(dir: &[Entry], name: &str) -> Result<Entry> {
    dir.iter()
        .find(|e| e.is(name))
        .cloned()
        .with_context(|| format!("{name} vanished from the FAT partition's root directory"))
}

/// The layout from the boot sector.
struct Geometry {
    sector: u64,
    cluster: u64,
    fat_start: u64,
    fat_bytes: u64,
    fats: u64,
    fat32: bool,
    clusters: u32,
    root_start: u64,
    root_entries: u64,
    root_cluster: u32,
    data_start: u64,
    fsinfo: Option<u64>,
}

const FAT16_END: u32 = 0xFFFF;
const FAT32_END: u32 = 0x0FFF_FFFF;

impl Geometry {
    fn read<D: Disk>(disk: &mut D) -> Result<Geometry> {
        let mut b = [0u8; 512];
        disk.seek(SeekFrom::Start(0)).context("reading the FAT boot sector")?;
        disk.read_exact(&mut b).context("reading the FAT boot sector")?;
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as u64;
        let bps = u16_at(11);
        let spc = b[13] as u64;
        let fats = b[16] as u64;
        if b[510..512] != [0x55, 0xAA] || !matches!(bps, 512 | 1024 | 2048 | 4096) || spc == 0 || fats == 0 {
            bail!("not a FAT filesystem (no boot sector signature or a bad geometry)");
        }
        let reserved = u16_at(14);
        let root_entries = u16_at(17);
        let total = if u16_at(19) != 0 { u16_at(19) } else { u32_at(32) };
        let fat_size = if u16_at(22) != 0 { u16_at(22) } else { u32_at(36) };
        let root_sectors = (root_entries * 32).div_ceil(bps);
        let data = reserved + fats * fat_size + root_sectors;
        let clusters = total.saturating_sub(data) / spc;
        if clusters < 4085 {
            bail!("a FAT12 filesystem ({clusters} clusters): the firmware partition must be FAT16 or FAT32");
        }
        let fat32 = clusters >= 65525;
        let fat_bytes = fat_size * bps;
        // Every cluster must have its FAT entry.
        if (clusters + 2) * if fat32 { 4 } else { 2 } > fat_bytes {
            bail!("the FAT is smaller than its {clusters} clusters need");
        }
        Ok(Geometry {
            sector: bps,
            cluster: bps * spc,
            fat_start: reserved * bps,
            fat_bytes,
            fats,
            fat32,
            clusters: clusters as u32,
            root_start: (reserved + fats * fat_size) * bps,
            root_entries,
            root_cluster: u32_at(44) as u32,
            data_start: data * bps,
            fsinfo: (fat32 && u16_at(48) != 0 && u16_at(48) != 0xFFFF).then(|| u16_at(48) * bps),
        })
    }

    fn cluster_at(&self, c: u32) -> u64 {
        self.data_start + (c as u64 - 2) * self.cluster
    }

    fn valid(&self, c: u32) -> bool {
        (2..self.clusters + 2).contains(&c)
    }

    /// The first FAT, one entry per cluster (masked to 28 bits on FAT32).
    fn table<D: Disk>(&self, disk: &mut D) -> Result<Vec<u32>> {
        let mut raw = vec![0u8; self.fat_bytes as usize];
        disk.seek(SeekFrom::Start(self.fat_start))?;
        disk.read_exact(&mut raw).context("reading the FAT")?;
        let n = self.clusters as usize + 2;
        Ok(if self.fat32 {
            raw.chunks(4)
                .take(n)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & FAT32_END)
                .collect()
        } else {
            raw.chunks(2)
                .take(n)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
                .collect()
        })
    }

    /// Writes `table` into every FAT copy, sector by sector where it differs
    /// (FAT32's reserved top bits kept), then syncs.
    fn write_table<D: Disk>(&self, disk: &mut D, table: &[u32]) -> Result<()> {
        for copy in 0..self.fats {
            let start = self.fat_start + copy * self.fat_bytes;
            let mut raw = vec![0u8; self.fat_bytes as usize];
            disk.seek(SeekFrom::Start(start))?;
            disk.read_exact(&mut raw).context("reading the FAT")?;
            let mut want = raw.clone();
            for (c, &v) in table.iter().enumerate().skip(2) {
                if self.fat32 {
                    let at = c * 4;
                    let old = u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
                    want[at..at + 4].copy_from_slice(&((old & !FAT32_END) | v).to_le_bytes());
                } else {
                    want[c * 2..c * 2 + 2].copy_from_slice(&(v as u16).to_le_bytes());
                }
            }
            for (i, (w, r)) in want
                .chunks(self.sector as usize)
                .zip(raw.chunks(self.sector as usize))
                .enumerate()
            {
                if w != r {
                    disk.seek(SeekFrom::Start(start + i as u64 * self.sector))?;
                    disk.write_all(w).context("writing the FAT")?;
                }
            }
        }
        disk.sync().context("syncing the FAT partition")?;
        self.write_free_count(disk, table)
    }

    /// FAT32's FSInfo free count, recounted (the next-free hint left unknown).
    fn write_free_count<D: Disk>(&self, disk: &mut D, table: &[u32]) -> Result<()> {
        let Some(at) = self.fsinfo else { return Ok(()) };
        let mut raw = vec![0u8; self.sector as usize];
        disk.seek(SeekFrom::Start(at))?;
        disk.read_exact(&mut raw).context("reading the FAT32 FSInfo sector")?;
        if raw[..4] != *b"RRaA" || raw[484..488] != *b"rrAa" {
            return Ok(()); // no valid FSInfo: nothing claims a count
        }
        let free = table.iter().skip(2).filter(|&&v| v == 0).count() as u32;
        let mut want = raw.clone();
        want[488..492].copy_from_slice(&free.to_le_bytes());
        want[492..496].copy_from_slice(&u32::MAX.to_le_bytes());
        if want != raw {
            disk.seek(SeekFrom::Start(at))?;
            disk.write_all(&want).context("writing the FAT32 FSInfo sector")?;
            disk.sync().context("syncing the FAT partition")?;
        }
        Ok(())
    }

    fn chain(&self, table: &[u32], first: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut c = first;
        while self.valid(c) && out.len() <= self.clusters as usize {
            out.push(c);
            c = table[c as usize];
        }
        out
    }

    /// Byte offsets of a directory's slots: the root, or a subdirectory's chain.
    fn slots(&self, table: &[u32], dir_cluster: Option<u32>) -> Vec<u64> {
        let first = match dir_cluster {
            None if !self.fat32 => return (0..self.root_entries).map(|i| self.root_start + i * 32).collect(),
            None => self.root_cluster,
            Some(c) => c,
        };
        self.chain(table, first)
            .into_iter()
            .flat_map(|c| (0..self.cluster / 32).map(move |i| (c, i)))
            .map(|(c, i)| self.cluster_at(c) + i * 32)
            .collect()
    }

    fn root_entries<D: Disk>(&self, disk: &mut D) -> Result<Vec<Entry>> {
        let table = self.table(disk)?;
        self.entries(disk, &self.slots(&table, None))
    }

    /// A directory's live entries, with their long names.
    fn entries<D: Disk>(&self, disk: &mut D, slots: &[u64]) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut lfn: Vec<(u64, [u8; 32])> = Vec::new();
        for &at in slots {
            let mut e = [0u8; 32];
            disk.seek(SeekFrom::Start(at))?;
            disk.read_exact(&mut e).context("reading a FAT directory")?;
            match e[0] {
                0x00 => break,
                0xE5 => {
                    lfn.clear();
                    continue;
                }
                _ => {}
            }
            if e[11] & 0x3F == 0x0F {
                lfn.push((at, e));
                continue;
            }
            let pending = std::mem::take(&mut lfn);
            if e[11] & 0x08 != 0 {
                continue; // the volume label
            }
            let sum = e[..11].iter().fold(0u8, |s, &c| s.rotate_right(1).wrapping_add(c));
            let long = (!pending.is_empty() && pending.iter().all(|(_, l)| l[13] == sum)).then(|| {
                let mut units = Vec::new();
                for (_, l) in pending.iter().rev() {
                    for r in [1..11, 14..26, 28..32] {
                        units.extend(l[r].chunks(2).map(|p| u16::from_le_bytes([p[0], p[1]])));
                    }
                }
                let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
                String::from_utf16_lossy(&units[..end])
            });
            let base = String::from_utf8_lossy(&e[..8]).trim_end().to_string();
            let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_string();
            let hi = if self.fat32 {
                u16::from_le_bytes([e[20], e[21]]) as u32
            } else {
                0
            };
            out.push(Entry {
                long,
                short: if ext.is_empty() { base } else { format!("{base}.{ext}") },
                slots: pending.iter().map(|(a, _)| *a).collect(),
                offset: at,
                attr: e[11],
                cluster: hi << 16 | u16::from_le_bytes([e[26], e[27]]) as u32,
                size: u32::from_le_bytes([e[28], e[29], e[30], e[31]]),
            });
        }
        Ok(out)
    }

    /// A new empty file entry `name` (8.3, upper case) in a free root slot.
    fn add_entry<D: Disk>(&self, disk: &mut D, name: &str) -> Result<()> {
        let (short, _) = short_name(name).context("a temporary name that is not 8.3")?;
        let table = self.table(disk)?;
        let mut free = None;
        for at in self.slots(&table, None) {
            let mut b = [0u8; 1];
            disk.seek(SeekFrom::Start(at))?;
            disk.read_exact(&mut b).context("reading the FAT root directory")?;
            if b[0] == 0x00 || b[0] == 0xE5 {
                free = Some(at);
                break;
            }
        }
        let at = free.context("the FAT partition's root directory is full")?;
        let mut e = [0u8; 32];
        e[..11].copy_from_slice(&short);
        e[11] = 0x20; // archive
        e[24..26].copy_from_slice(&0x21u16.to_le_bytes()); // 1980-01-01, FAT's epoch
        e[16..18].copy_from_slice(&0x21u16.to_le_bytes());
        e[18..20].copy_from_slice(&0x21u16.to_le_bytes());
        disk.seek(SeekFrom::Start(at))?;
        disk.write_all(&e).context("writing a FAT directory entry")?;
        disk.sync().context("syncing the FAT partition")
    }

    /// Writes `content` into free clusters, then links them in every FAT
    /// (nothing points at them yet); returns the first (0 for no content).
    fn allocate<D: Disk>(&self, disk: &mut D, content: &[u8]) -> Result<u32> {
        if content.is_empty() {
            return Ok(0);
        }
        let mut table = self.table(disk)?;
        let need = content.len().div_ceil(self.cluster as usize);
        let free: Vec<u32> = (2..self.clusters + 2)
            .filter(|&c| table[c as usize] == 0)
            .take(need)
            .collect();
        if free.len() < need {
            bail!(
                "the FAT partition is full: {} bytes need {need} clusters, {} are free",
                content.len(),
                free.len()
            );
        }
        for (c, chunk) in free.iter().zip(content.chunks(self.cluster as usize)) {
            let mut block = chunk.to_vec();
            block.resize(self.cluster as usize, 0);
            disk.seek(SeekFrom::Start(self.cluster_at(*c)))?;
            disk.write_all(&block)
                .context("writing file data on the FAT partition")?;
        }
        disk.sync().context("syncing the FAT partition")?;
        let end = if self.fat32 { FAT32_END } else { FAT16_END };
        for (i, &c) in free.iter().enumerate() {
            table[c as usize] = free.get(i + 1).copied().unwrap_or(end);
        }
        self.write_table(disk, &table)?;
        Ok(free[0])
    }

    /// Points `e`'s entry at `cluster` and `size`: one 32-byte write, synced.
    fn point<D: Disk>(&self, disk: &mut D, e: &Entry, cluster: u32, size: u32) -> Result<()> {
        self.rewrite(disk, e, |raw| {
            if self.fat32 {
                raw[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
            }
            raw[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
            raw[28..32].copy_from_slice(&size.to_le_bytes());
        })
    }

    /// Renames `e` to an 8.3 name with its case flags: one 32-byte write.
    fn rename<D: Disk>(&self, disk: &mut D, e: &Entry, (short, case): ([u8; 11], u8)) -> Result<()> {
        self.rewrite(disk, e, |raw| {
            raw[..11].copy_from_slice(&short);
            raw[12] = case;
        })
    }

    fn rewrite<D: Disk>(&self, disk: &mut D, e: &Entry, edit: impl FnOnce(&mut [u8; 32])) -> Result<()> {
        let mut raw = [0u8; 32];
        disk.seek(SeekFrom::Start(e.offset))?;
        disk.read_exact(&mut raw).context("reading a FAT directory entry")?;
        edit(&mut raw);
        disk.seek(SeekFrom::Start(e.offset))?;
        disk.write_all(&raw).context("writing a FAT directory entry")?;
        disk.sync().context("syncing the FAT partition")
    }

    /// Marks `e`'s entries deleted without freeing its clusters, synced.
    /// The short entry goes last: a cut in between leaves it whole.
    fn delete<D: Disk>(&self, disk: &mut D, e: &Entry) -> Result<()> {
        for at in e.slots.iter().chain([&e.offset]) {
            disk.seek(SeekFrom::Start(*at))?;
            disk.write_all(&[0xE5]).context("writing a FAT directory entry")?;
        }
        disk.sync().context("syncing the FAT partition")
    }

    /// Frees every allocated cluster that no entry reaches (what a killed
    /// run or the swap left behind) and makes every FAT copy the first's.
    fn reclaim<D: Disk>(&self, disk: &mut D) -> Result<()> {
        let mut table = self.table(disk)?;
        let mut reached = vec![false; table.len()];
        let mut dirs: Vec<Option<u32>> = vec![None];
        if self.fat32 {
            for c in self.chain(&table, self.root_cluster) {
                reached[c as usize] = true;
            }
        }
        while let Some(dir) = dirs.pop() {
            for e in self.entries(disk, &self.slots(&table, dir))? {
                if e.short == "." || e.short == ".." {
                    continue;
                }
                let mut fresh = false;
                for c in self.chain(&table, e.cluster) {
                    if std::mem::replace(&mut reached[c as usize], true) {
                        break; // shared with an entry already walked
                    }
                    fresh = true;
                }
                if e.attr & 0x10 != 0 && fresh {
                    dirs.push(Some(e.cluster));
                }
            }
        }
        const BAD16: u32 = 0xFFF7;
        const BAD32: u32 = 0x0FFF_FFF7;
        for (c, v) in table.iter_mut().enumerate().skip(2) {
            if *v != 0 && !reached[c] && *v != if self.fat32 { BAD32 } else { BAD16 } {
                *v = 0;
            }
        }
        self.write_table(disk, &table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Disk for std::io::Cursor<Vec<u8>> {
        fn sync(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn volume(size: u64) -> std::io::Cursor<Vec<u8>> {
        let mut c = std::io::Cursor::new(vec![0u8; size as usize]);
        fatfs::format_volume(&mut c, fatfs::FormatVolumeOptions::new()).unwrap();
        c
    }

    #[test]
    fn replaces_creates_and_keeps_other_files() {
        for size in [32u64 << 20, 300 << 20] {
            let mut d = volume(size);
            assert!(replace(&mut d, "config.txt", b"one").unwrap());
            assert!(replace(&mut d, "u-boot.bin", &vec![7u8; 100_000]).unwrap());
            assert!(!replace(&mut d, "config.txt", b"one").unwrap());
            assert!(replace(&mut d, "config.txt", &vec![b'x'; 70_000]).unwrap());
            assert!(replace(&mut d, "config.txt", b"").unwrap());
            assert!(replace(&mut d, "config.txt", b"two").unwrap());
            assert_eq!(read(&mut d, "config.txt").unwrap().unwrap(), b"two");
            assert_eq!(read(&mut d, "u-boot.bin").unwrap().unwrap(), vec![7u8; 100_000]);
            assert_eq!(read(&mut d, NEW).unwrap(), None);
            assert_eq!(read(&mut d, OLD).unwrap(), None);
        }
    }

    #[test]
    fn refuses_what_is_not_fat_or_not_in_the_root() {
        let mut d = std::io::Cursor::new(vec![0u8; 1 << 20]);
        assert!(format!("{:#}", replace(&mut d, "a", b"x").unwrap_err()).contains("not a FAT"));
        let mut d = volume(32 << 20);
        assert!(replace(&mut d, "overlays/x.dtbo", b"x").is_err());
    }
}
