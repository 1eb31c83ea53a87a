//! The MBR partition table (pure): four primary entries, LBA addressing.

use anyhow::{Result, bail};

/// Sector size images are laid out in.
pub const SECTOR: u64 = 512;

/// One primary partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrPart {
    /// First byte (a multiple of [`SECTOR`]).
    pub start: u64,
    /// Length in bytes (a multiple of [`SECTOR`]).
    pub size: u64,
    /// Partition type byte (0x0c FAT32 LBA, 0x83 Linux).
    pub kind: u8,
    /// The active ("bootable") flag U-Boot's distro boot looks for.
    pub bootable: bool,
}

/// The 512-byte MBR for `parts` with the given disk signature.
pub fn encode(signature: u32, parts: &[MbrPart]) -> Result<[u8; 512]> {
    if parts.len() > 4 {
        bail!(
            "an MBR holds at most 4 primary partitions, the board has {}",
            parts.len()
        );
    }
    let mut mbr = [0u8; 512];
    mbr[440..444].copy_from_slice(&signature.to_le_bytes());
    for (i, p) in parts.iter().enumerate() {
        if p.start % SECTOR != 0 || p.size % SECTOR != 0 || p.size == 0 {
            bail!("partition {} is not a whole number of 512-byte sectors", i + 1);
        }
        let (lba, count) = (p.start / SECTOR, p.size / SECTOR);
        if lba + count > u64::from(u32::MAX) {
            bail!(
                "partition {} ends beyond 2 TiB, which an MBR cannot address (use gpt)",
                i + 1
            );
        }
        let e = &mut mbr[446 + 16 * i..446 + 16 * (i + 1)];
        e[0] = if p.bootable { 0x80 } else { 0 };
        // CHS fields: "use LBA" markers, as sfdisk writes for large disks.
        e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
        e[4] = p.kind;
        e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        e[8..12].copy_from_slice(&(lba as u32).to_le_bytes());
        e[12..16].copy_from_slice(&(count as u32).to_le_bytes());
    }
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    Ok(mbr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_little_endian_lba() {
        let m = encode(
            0x1234_5678,
            &[
                MbrPart {
                    start: 1 << 20,
                    size: 256 << 20,
                    kind: 0x0c,
                    bootable: false,
                },
                MbrPart {
                    start: 257 << 20,
                    size: 512 << 20,
                    kind: 0x83,
                    bootable: true,
                },
            ],
        )
        .unwrap();
        assert_eq!(&m[440..444], &[0x78, 0x56, 0x34, 0x12]);
        assert_eq!(&m[510..], &[0x55, 0xaa]);
        assert_eq!(m[446], 0);
        assert_eq!(m[446 + 4], 0x0c);
        assert_eq!(u32::from_le_bytes(m[454..458].try_into().unwrap()), 2048);
        assert_eq!(m[462], 0x80);
        assert_eq!(
            u32::from_le_bytes(m[462 + 12..462 + 16].try_into().unwrap()),
            512 * 2048
        );
        assert!(
            encode(
                0,
                &[MbrPart {
                    start: 100,
                    size: 512,
                    kind: 0x83,
                    bootable: false
                }]
            )
            .is_err()
        );
    }
}
