//! The GUID partition table (pure): protective MBR, primary header and entries
//! at the start of the disk, backup entries and header at the end.

use anyhow::{Context, Result, bail};

use super::mbr::SECTOR;

/// Entries in the table (the usual 128, 128 bytes each: 32 sectors).
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
const ENTRY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptPart {
    /// First byte (a multiple of [`SECTOR`]).
    pub start: u64,
    /// Length in bytes (a multiple of [`SECTOR`]).
    pub size: u64,
    /// Type GUID (`XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`).
    pub type_guid: String,
    /// This partition's own GUID.
    pub guid: String,
    /// Partition name (up to 36 UTF-16 code units).
    pub name: String,
    /// Attribute bit 2, "legacy BIOS bootable": where U-Boot's distro boot looks.
    pub bootable: bool,
}

/// What to write where: `(byte offset, bytes)` pieces for a disk of `disk_size` bytes.
pub fn encode(disk_guid: &str, disk_size: u64, parts: &[GptPart]) -> Result<Vec<(u64, Vec<u8>)>> {
    if disk_size % SECTOR != 0 {
        bail!("the image size {disk_size} is not a multiple of 512");
    }
    let last = disk_size / SECTOR - 1;
    let first_usable = 2 + ENTRY_SECTORS;
    let last_usable = last - 1 - ENTRY_SECTORS;
    if parts.len() as u64 > ENTRIES {
        bail!("a GPT holds at most {ENTRIES} partitions");
    }
    let mut entries = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (i, p) in parts.iter().enumerate() {
        if p.start % SECTOR != 0 || p.size % SECTOR != 0 || p.size == 0 {
            bail!("partition {} is not a whole number of 512-byte sectors", i + 1);
        }
        let (lo, hi) = (p.start / SECTOR, (p.start + p.size) / SECTOR - 1);
        if lo < first_usable || hi > last_usable {
            bail!(
                "partition {} (sectors {lo}-{hi}) is outside the GPT's usable sectors {first_usable}-{last_usable}",
                i + 1
            );
        }
        let e = &mut entries[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&guid_bytes(&p.type_guid)?);
        e[16..32].copy_from_slice(&guid_bytes(&p.guid)?);
        e[32..40].copy_from_slice(&lo.to_le_bytes());
        e[40..48].copy_from_slice(&hi.to_le_bytes());
        let attrs: u64 = if p.bootable { 1 << 2 } else { 0 };
        e[48..56].copy_from_slice(&attrs.to_le_bytes());
        let name: Vec<u16> = p.name.encode_utf16().collect();
        if name.len() > 36 {
            bail!("partition name {:?} is longer than 36 UTF-16 units", p.name);
        }
        for (j, u) in name.iter().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    let entries_crc = crc32fast::hash(&entries);
    let header = |current: u64, backup: u64, entries_lba: u64| -> Result<Vec<u8>> {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&guid_bytes(disk_guid)?);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        Ok(h)
    };
    // Protective MBR: one partition of type 0xEE covering the disk.
    let mut pmbr = [0u8; 512];
    pmbr[446 + 1..446 + 4].copy_from_slice(&[0x00, 0x02, 0x00]);
    pmbr[446 + 4] = 0xee;
    pmbr[446 + 5..446 + 8].copy_from_slice(&[0xff, 0xff, 0xff]);
    pmbr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    pmbr[446 + 12..446 + 16].copy_from_slice(&(last.min(u64::from(u32::MAX)) as u32).to_le_bytes());
    pmbr[510] = 0x55;
    pmbr[511] = 0xaa;
    Ok(vec![
        (0, pmbr.to_vec()),
        (SECTOR, header(1, last, 2)?),
        (2 * SECTOR, entries.clone()),
        ((last - ENTRY_SECTORS) * SECTOR, entries),
        (last * SECTOR, header(last, 1, last - ENTRY_SECTORS)?),
    ])
}

/// A GUID's on-disk bytes: the first three fields little-endian, the rest as written.
pub fn guid_bytes(guid: &str) -> Result<[u8; 16]> {
    let hex: String = guid.chars().filter(|c| *c != '-').collect();
    let raw = hex::decode(&hex).with_context(|| format!("{guid:?} is not a GUID"))?;
    if raw.len() != 16 || guid.len() != 36 {
        bail!("{guid:?} is not a GUID (XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX)");
    }
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
    b[4..6].copy_from_slice(&[raw[5], raw[4]]);
    b[6..8].copy_from_slice(&[raw[7], raw[6]]);
    b[8..16].copy_from_slice(&raw[8..16]);
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_mixed_endian() {
        // The EFI system partition type, as it appears on disk.
        assert_eq!(
            hex::encode(guid_bytes("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap()),
            "28732ac11ff8d211ba4b00a0c93ec93b"
        );
        assert!(guid_bytes("not-a-guid").is_err());
    }

    #[test]
    fn headers_carry_valid_crcs_and_point_at_each_other() {
        let size = 64u64 << 20;
        let parts = [GptPart {
            start: 1 << 20,
            size: 8 << 20,
            type_guid: "0FC63DAF-8483-4772-8E79-3D693D47F7E4".into(),
            guid: "11111111-2222-4333-8444-555555555555".into(),
            name: "root".into(),
            bootable: true,
        }];
        let pieces = encode("AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE", size, &parts).unwrap();
        let primary = &pieces[1].1;
        assert_eq!(&primary[..8], b"EFI PART");
        let mut h = primary[..92].to_vec();
        let crc = u32::from_le_bytes(h[16..20].try_into().unwrap());
        h[16..20].copy_from_slice(&[0; 4]);
        assert_eq!(crc32fast::hash(&h), crc);
        let backup = &pieces[4];
        assert_eq!(backup.0, size - 512);
        assert_eq!(u64::from_le_bytes(backup.1[24..32].try_into().unwrap()), size / 512 - 1);
        assert_eq!(u64::from_le_bytes(primary[32..40].try_into().unwrap()), size / 512 - 1);
        let entry = &pieces[2].1[..128];
        assert_eq!(u64::from_le_bytes(entry[32..40].try_into().unwrap()), 2048);
        assert_eq!(u64::from_le_bytes(entry[48..56].try_into().unwrap()), 4);
        let bad = GptPart {
            start: 512,
            ..parts[0].clone()
        };
        assert!(encode("AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE", size, &[bad]).is_err());
    }
}
