//! Two byte formats of U-Boot, written natively: the legacy image that wraps a
//! boot script (`mkimage -T script`, what `source` runs) and the
//! CRC-protected environment blob (`env export -c` / `env import -c`, the
//! format of `uboot.env`), which arbor's boot-count state file uses.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

use crate::arch::Arch;

/// `IH_MAGIC`.
const MAGIC: u32 = 0x2705_1956;
/// Header bytes.
const HEADER: usize = 64;
/// `IH_OS_LINUX`, `IH_TYPE_SCRIPT`, `IH_COMP_NONE`.
const OS_LINUX: u8 = 5;
const TYPE_SCRIPT: u8 = 6;
const COMP_NONE: u8 = 0;

/// `IH_ARCH_*` of an arch.
fn ih_arch(arch: Arch) -> u8 {
    match arch {
        Arch::Aarch64 => 22,
        _ => 2,
    }
}

/// The script `text` as `mkimage -A <arch> -O linux -T script -C none -n <name>`
/// writes it, with `time` as its timestamp: the 64-byte header (CRCs of
/// header and data), then the multi-file size table (the script's length,
/// then 0), then the script.
pub fn script_image(arch: Arch, name: &str, time: u32, text: &[u8]) -> Result<Vec<u8>> {
    if name.len() > 31 || !name.is_ascii() {
        bail!("boot script name {name:?}: at most 31 ASCII characters");
    }
    let len = u32::try_from(text.len()).map_err(|_| anyhow::anyhow!("boot script of {} bytes", text.len()))?;
    let mut data = Vec::with_capacity(8 + text.len());
    data.extend_from_slice(&len.to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(text);
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    h[8..12].copy_from_slice(&time.to_be_bytes());
    h[12..16].copy_from_slice(&(data.len() as u32).to_be_bytes());
    h[24..28].copy_from_slice(&crc32fast::hash(&data).to_be_bytes());
    h[28] = OS_LINUX;
    h[29] = ih_arch(arch);
    h[30] = TYPE_SCRIPT;
    h[31] = COMP_NONE;
    h[32..32 + name.len()].copy_from_slice(name.as_bytes());
    let hcrc = crc32fast::hash(&h);
    h[4..8].copy_from_slice(&hcrc.to_be_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(&data);
    Ok(out)
}

/// The script inside a [`script_image`], after checking magic, type and both CRCs.
pub fn script_text(image: &[u8]) -> Result<&[u8]> {
    if image.len() < HEADER + 8 || image[0..4] != MAGIC.to_be_bytes() {
        bail!("not a U-Boot legacy image (no magic 0x27051956)");
    }
    let mut h = [0u8; HEADER];
    h.copy_from_slice(&image[..HEADER]);
    let hcrc = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    h[4..8].fill(0);
    if crc32fast::hash(&h) != hcrc {
        bail!("U-Boot image header CRC mismatch");
    }
    if h[30] != TYPE_SCRIPT {
        bail!("U-Boot image of type {}, not a script (6)", h[30]);
    }
    let size = u32::from_be_bytes([h[12], h[13], h[14], h[15]]) as usize;
    let data = image
        .get(HEADER..HEADER + size)
        .ok_or_else(|| anyhow::anyhow!("U-Boot image shorter than its size field {size}"))?;
    if crc32fast::hash(data) != u32::from_be_bytes([h[24], h[25], h[26], h[27]]) {
        bail!("U-Boot image data CRC mismatch");
    }
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    data.get(8..8 + len)
        .ok_or_else(|| anyhow::anyhow!("script length {len} beyond the image's data"))
}

/// An environment blob of `size` bytes: CRC32 (little-endian, as the ARM
/// boards store it) over the rest, then `key=value\0` pairs in key order, an
/// empty string, zero padding. What `env export -c -s SIZE` writes and
/// `env import -c` checks.
pub fn env_blob(vars: &BTreeMap<String, String>, size: usize) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    for (k, v) in vars {
        if k.is_empty() || k.contains(['=', '\0', '\n']) || v.contains(['\0', '\n']) {
            bail!("environment variable {k:?}={v:?}: names have no '=', neither has NUL or newline");
        }
        data.extend_from_slice(k.as_bytes());
        data.push(b'=');
        data.extend_from_slice(v.as_bytes());
        data.push(0);
    }
    data.push(0);
    if data.len() > size.saturating_sub(4) {
        bail!("{} bytes of environment do not fit in {size}", data.len());
    }
    data.resize(size - 4, 0);
    let mut out = crc32fast::hash(&data).to_le_bytes().to_vec();
    out.extend_from_slice(&data);
    Ok(out)
}

/// The variables of an environment blob; `None` when its CRC does not match
/// (torn, never written, or not an environment).
pub fn parse_env_blob(blob: &[u8]) -> Option<BTreeMap<String, String>> {
    if blob.len() < 5 {
        return None;
    }
    let crc = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]);
    let data = &blob[4..];
    if crc32fast::hash(data) != crc {
        return None;
    }
    let mut vars = BTreeMap::new();
    for pair in data.split(|b| *b == 0) {
        if pair.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(pair);
        if let Some((k, v)) = text.split_once('=') {
            vars.insert(k.to_string(), v.to_string());
        }
    }
    Some(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_image_round_trips_and_refuses_a_flipped_byte() {
        let img = script_image(Arch::Aarch64, "arbor", 0, b"echo hi\n").unwrap();
        assert_eq!(script_text(&img).unwrap(), b"echo hi\n");
        for i in [5, 40, img.len() - 1] {
            let mut bad = img.clone();
            bad[i] ^= 1;
            assert!(script_text(&bad).is_err(), "byte {i} flipped and still accepted");
        }
    }

    #[test]
    fn env_blob_round_trips_and_a_torn_one_reads_as_none() {
        let vars = BTreeMap::from([
            ("arbor_trial".to_string(), "arbor/abc/0".to_string()),
            ("arbor_left".to_string(), "3".to_string()),
        ]);
        let blob = env_blob(&vars, 512).unwrap();
        assert_eq!(blob.len(), 512);
        assert_eq!(parse_env_blob(&blob), Some(vars.clone()));
        let mut torn = blob.clone();
        torn[300..].fill(0xff);
        assert_eq!(parse_env_blob(&torn), None);
        assert_eq!(parse_env_blob(&[0u8; 512]), None);
        assert!(env_blob(&vars, 16).is_err());
    }
}
