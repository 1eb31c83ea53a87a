//! A package file's digests checked the way rpm checks them before it installs
//! anything: the main header against the signature header's SHA-256, the
//! payload against the main header's payload digests. The headers are read
//! by [`super::blob`] and the payload is hashed as it streams from the file,
//! so a package of any size is checked in a few hundred KiB.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256, Sha512};

use super::blob::{self, Blob, HEADER_MAGIC, tag};

/// `RPMTAG_PAYLOADDIGEST`, `RPMTAG_PAYLOADDIGESTALGO` and `RPMTAG_PAYLOAD_SHA512`.
const PAYLOADDIGEST: u32 = 5092;
const PAYLOADDIGESTALGO: u32 = 5093;
const PAYLOAD_SHA512: u32 = 5121;
/// `PGPHASHALGO_SHA256`.
const ALGO_SHA256: u64 = 8;

/// Checks the header and payload digests of the package file at `path`.
/// A package needs the header's SHA-256 digest (rpm ≥ 4.14 writes it); the
/// payload is checked against each payload digest its header carries.
pub fn verify(path: &Path) -> Result<()> {
    let blob::Headers { sig, main, bytes } = blob::open_headers(path)?;
    let payload_at = bytes.len() as u64;
    check_header(&sig, &main)?;
    let want256 = payload_sha256(&main);
    let want512 = main.string(PAYLOAD_SHA512).map(|s| s.to_ascii_lowercase());
    if want256.is_none() && want512.is_none() {
        return Ok(());
    }
    let mut file = File::open(path).context("opening the package")?;
    file.seek(SeekFrom::Start(payload_at)).context("reading the payload")?;
    let mut h256 = want256.as_ref().map(|_| Sha256::new());
    let mut h512 = want512.as_ref().map(|_| Sha512::new());
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = file.read(&mut buf).context("reading the payload")?;
        if n == 0 {
            break;
        }
        if let Some(h) = &mut h256 {
            h.update(&buf[..n]);
        }
        if let Some(h) = &mut h512 {
            h.update(&buf[..n]);
        }
    }
    let got256 = h256.map(|h| hex::encode(h.finalize()));
    let got512 = h512.map(|h| hex::encode(h.finalize()));
    for (name, want, got) in [("SHA-256", want256, got256), ("SHA-512", want512, got512)] {
        if let (Some(w), Some(g)) = (want, got) {
            if w != g {
                bail!("payload {name} digest mismatch: the header says {w}, the payload hashes to {g}");
            }
        }
    }
    Ok(())
}

/// The main header against the signature header's SHA-256 of it.
/// The SHA-256 of a main header as the signature header's `SHA256HEADER`
/// digests it (with its magic), in lowercase hex.
pub fn header_sha256(main: &Blob) -> String {
    hex::encode(
        Sha256::new()
            .chain_update(HEADER_MAGIC)
            .chain_update(main.bytes())
            .finalize(),
    )
}

fn check_header(sig: &Blob, main: &Blob) -> Result<()> {
    let Some(want) = sig.string(tag::SHA256HEADER) else {
        bail!("the signature header has no SHA-256 digest of the header to check it against");
    };
    let got = header_sha256(main);
    ensure!(
        got.eq_ignore_ascii_case(&want),
        "header SHA-256 digest mismatch: the signature header says {}, the header hashes to {got}",
        want.chars().take(64).collect::<String>()
    );
    Ok(())
}

/// `RPMTAG_PAYLOADDIGEST` when it is a SHA-256 (its algorithm tag absent or 8).
fn payload_sha256(main: &Blob) -> Option<String> {
    let algo = main.number(PAYLOADDIGESTALGO).unwrap_or(ALGO_SHA256);
    if algo != ALGO_SHA256 {
        return None;
    }
    main.string(PAYLOADDIGEST).map(|s| s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A package built by the `rpm` crate verifies; one payload byte changed does not.
    #[test]
    fn payload_and_header_digests_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = rpm::PackageBuilder::new("d", "1", "MIT", "noarch", "d");
        b.with_file_contents("hello\n".repeat(1000), rpm::FileOptions::new("/usr/share/d"))
            .unwrap();
        let path = dir.path().join("d.rpm");
        b.build().unwrap().write_file(&path).unwrap();
        verify(&path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = format!("{:#}", verify(&path).unwrap_err());
        assert!(e.contains("payload SHA-256 digest mismatch"), "{e}");
        bytes[n - 10] ^= 1;
        // The license string, inside the main header.
        let payload_at = blob::open_headers(&path).unwrap().bytes.len() as u64;
        let at = bytes[..payload_at as usize]
            .windows(4)
            .position(|w| w == b"MIT\0")
            .unwrap();
        bytes[at + 2] = b'X';
        std::fs::write(&path, &bytes).unwrap();
        let e = format!("{:#}", verify(&path).unwrap_err());
        assert!(e.contains("header SHA-256 digest mismatch"), "{e}");
    }
}
