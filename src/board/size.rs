//! Sizes in board files: `"1GiB"`, `"256MiB"`, `"512KiB"`, `"1048576"` or an integer.

use anyhow::{Result, bail};

/// 1 KiB.
pub const KIB: u64 = 1024;
/// 1 MiB: the default partition alignment.
pub const MIB: u64 = 1024 * KIB;
/// 1 GiB.
pub const GIB: u64 = 1024 * MIB;

/// The units a size may carry, largest first.
const UNITS: &[(&str, u64)] = &[("TiB", 1024 * GIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB), ("B", 1)];

/// Parses `"256MiB"` (binary units only: a "MB" on an SD card label is ambiguous).
pub fn parse(text: &str) -> Result<u64> {
    let t = text.trim();
    let (digits, mult) = UNITS
        .iter()
        .find_map(|(unit, mult)| t.strip_suffix(unit).map(|d| (d.trim_end(), *mult)))
        .unwrap_or((t, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        bail!(
            "invalid size {text:?}: expected a number of bytes or a number with one of the units {}",
            UNITS.iter().map(|(u, _)| *u).collect::<Vec<_>>().join(", ")
        );
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size {text:?}: number too large"))?;
    n.checked_mul(mult)
        .ok_or_else(|| anyhow::anyhow!("invalid size {text:?}: more than 2^64 bytes"))
}

/// Shows a byte count the way a board file would write it (exact, largest unit that divides it).
pub fn show(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_string();
    }
    UNITS
        .iter()
        .find(|(_, mult)| *mult > 1 && bytes % mult == 0)
        .map(|(unit, mult)| format!("{}{unit}", bytes / mult))
        .unwrap_or_else(|| bytes.to_string())
}

/// Rounds `n` up to a multiple of `align` (a power of two); `None` past 2^64.
pub fn checked_align_up(n: u64, align: u64) -> Option<u64> {
    n.div_ceil(align).checked_mul(align)
}

/// Rounds `n` down to a multiple of `align`.
pub fn align_down(n: u64, align: u64) -> u64 {
    n / align * align
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_bytes() {
        for (text, want) in [
            ("1GiB", GIB),
            ("256MiB", 256 * MIB),
            ("512KiB", 512 * KIB),
            ("1048576", MIB),
            ("4096B", 4096),
            (" 2 GiB ", 2 * GIB),
        ] {
            assert_eq!(parse(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn rejects_unknown_units_listing_allowed() {
        for text in ["1GB", "1.5GiB", "GiB", "", "-1", "12 parsecs"] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains("TiB, GiB, MiB, KiB, B"), "{text}: {e}");
        }
        assert!(parse("99999999999TiB").unwrap_err().to_string().contains("2^64"));
    }

    #[test]
    fn shows_exact_sizes() {
        assert_eq!(show(GIB), "1GiB");
        assert_eq!(show(1536 * MIB), "1536MiB");
        assert_eq!(show(17408), "17KiB");
        assert_eq!(show(1000), "1000");
        assert_eq!(show(0), "0");
    }
}
