//! The partition plan: where each partition starts and ends for one image size (pure).

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};

use super::size::{MIB, align_down, checked_align_up, show};
use super::{Board, PartSize, Partition, PartitionTable, Start};

/// Bytes of the primary GPT (protective MBR, header, 128 entries of 128 bytes).
pub const GPT_HEAD: u64 = 34 * 512;
/// Bytes of the backup GPT at the end of the disk (entries and header).
pub const GPT_TAIL: u64 = 33 * 512;

/// A partition placed on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Partition number in the table (1-based, as in `/dev/mmcblk0p1`).
    pub number: u32,
    /// Absolute start in bytes (a multiple of 512).
    pub start: u64,
    /// Size in bytes (a multiple of 512).
    pub size: u64,
    /// The partition as the board describes it.
    pub partition: Partition,
}

impl Placed {
    /// First byte after the partition.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// A named byte range used to report overlaps.
struct Region {
    what: String,
    start: u64,
    end: u64,
}

fn overlap(a: &Region, b: &Region) -> bool {
    a.start < b.end && b.start < a.end
}

fn range(r: &Region) -> String {
    format!("{}..{}", r.start, r.end)
}

impl Board {
    /// Plans the partitions for an image of `image_size` bytes: absolute start
    /// and size of each, in table order. Fails when the image is too small or
    /// when partitions, blobs or the partition table overlap.
    pub fn layout(&self, image_size: u64) -> Result<Vec<Placed>> {
        if image_size % 512 != 0 {
            bail!("image size {image_size} is not a multiple of 512");
        }
        let (head, usable_end) = match self.partition_table {
            PartitionTable::Mbr => (512, image_size),
            PartitionTable::Gpt => (GPT_HEAD, image_size.saturating_sub(GPT_TAIL)),
        };
        let table_region = Region {
            what: format!("the {} partition table", self.partition_table),
            start: 0,
            end: head,
        };
        let mut fixed = vec![table_region];
        if self.partition_table == PartitionTable::Gpt {
            fixed.push(Region {
                what: "the backup GPT".to_string(),
                start: usable_end,
                end: image_size,
            });
        }
        let mut blobs_end = 0;
        for b in &self.blobs {
            let r = Region {
                what: format!("blob {}", b.from),
                start: b.offset,
                end: b.offset.saturating_add(b.size),
            };
            if r.end > image_size {
                bail!("{} ({}) ends past the image size {image_size}", r.what, range(&r));
            }
            if let Some(other) = fixed.iter().find(|o| overlap(o, &r)) {
                bail!("{} ({}) overlaps {} ({})", r.what, range(&r), other.what, range(other));
            }
            blobs_end = blobs_end.max(r.end);
            fixed.push(r);
        }

        // Blobs end inside the image (checked above), and an image ends at most 512 bytes
        // below 2^64, so only partitions below can overflow a u64.
        let mut cursor = MIB.max(checked_align_up(blobs_end, MIB).unwrap_or(u64::MAX));
        let mut placed: Vec<Placed> = Vec::new();
        for (i, p) in self.partitions.iter().enumerate() {
            let what = format!("partition {} ({} {:?})", i + 1, p.role, p.label);
            let key = |k: &str| format!("partitions[{i}].{k}");
            let start = match p.start {
                Start::After => cursor,
                Start::At(s) => s,
            };
            let size = match p.size {
                PartSize::Bytes(n) => n,
                PartSize::Rest => {
                    let end = align_down(usable_end, 512);
                    if end <= start {
                        bail!(
                            "image too small: {what} would start at {start} but the image has room up to {usable_end} ({image_size} bytes)"
                        );
                    }
                    end - start
                }
            };
            // A board file can write any u64: an end past 2^64 would wrap to before the start.
            let end = start.checked_add(size).with_context(|| {
                format!(
                    "{what}: {} {start} + {} {size} ends past 2^64 bytes, beyond any disk",
                    key("start"),
                    key("size")
                )
            })?;
            let r = Region {
                what: what.clone(),
                start,
                end,
            };
            if r.end > usable_end {
                bail!(
                    "image too small: {what} ends at {} ({}) but the image has room up to {usable_end} ({} image)",
                    r.end,
                    show(r.end),
                    show(image_size)
                );
            }
            if let Some(prev) = placed.last().filter(|prev| start < prev.end()) {
                bail!(
                    "{what} ({}) overlaps partition {} (..{}): partitions are in disk order",
                    range(&r),
                    prev.number,
                    prev.end()
                );
            }
            if let Some(other) = fixed.iter().find(|o| overlap(o, &r)) {
                bail!("{what} ({}) overlaps {} ({})", range(&r), other.what, range(other));
            }
            if self.partition_table == PartitionTable::Mbr && (r.end / 512) > u64::from(u32::MAX) {
                bail!("{what} ends past 2 TiB, beyond what an MBR can address; use partition_table = \"gpt\"");
            }
            // The next partition's default start; a disk ending within 1 MiB of 2^64 has
            // no room after this one, which the next partition's own check reports.
            cursor = checked_align_up(r.end, MIB).unwrap_or(u64::MAX);
            let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
            placed.push(Placed {
                number,
                start,
                size,
                partition: p.clone(),
            });
        }
        Ok(placed)
    }

    /// The partition plan as text, one line per region (what the golden tests and `arbor board show` print).
    pub fn describe_layout(&self, image_size: u64) -> Result<String> {
        let placed = self.layout(image_size)?;
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            s,
            "board {} ({}, {}), image {} ({image_size} bytes)",
            self.name,
            self.arch,
            self.partition_table,
            show(image_size)
        );
        for b in &self.blobs {
            let _ = writeln!(s, "blob  {:>12} +{:<10} {}", b.offset, b.size, b.from);
        }
        for p in &placed {
            let q = &p.partition;
            let _ = writeln!(
                s,
                "p{}    {:>12} +{:<12} {:<8} {:<11} {:<4} type={}{}  [{} +{}]",
                p.number,
                p.start,
                p.size,
                q.role.to_string(),
                q.label,
                q.fs.to_string(),
                q.kind,
                if q.bootable { " bootable" } else { "" },
                show(p.start),
                show(p.size),
            );
        }
        Ok(s)
    }
}
