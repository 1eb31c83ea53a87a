//! ed25519 key files in ostree's formats (libostree's `ed25519` signer):
//! a secret key file is base64 of 64 bytes (32-byte seed, then the 32-byte
//! public key, libsodium's layout); a public key file holds base64 32-byte
//! keys, one a line; a trust directory (`trusted.ed25519.d` style) is every
//! file in it.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{SigningKey, VerifyingKey};

/// Bytes in a secret key file once decoded: seed and public key.
pub const SECRET_KEY_LEN: usize = 64;
/// Bytes in a public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// The public key as ostree writes it: base64 of its 32 bytes.
pub fn encode_public(key: &VerifyingKey) -> String {
    BASE64.encode(key.as_bytes())
}

/// The secret key file's contents: base64 of seed + public key, and a newline.
pub fn encode_secret(key: &SigningKey) -> String {
    format!("{}\n", BASE64.encode(key.to_keypair_bytes()))
}

/// Parses the text of a secret key file: exactly one base64 key of 64 bytes,
/// whose public half must be the one its seed gives.
pub fn parse_secret_key(text: &str) -> Result<SigningKey> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let Some(line) = lines.next() else {
        bail!("it holds no key");
    };
    if lines.next().is_some() {
        bail!("it holds more than one line; a secret key file holds exactly one base64 key");
    }
    let bytes = BASE64
        .decode(line)
        .map_err(|e| anyhow::anyhow!("it is not valid base64 ({e})"))?;
    let Ok(pair) = <[u8; SECRET_KEY_LEN]>::try_from(bytes.as_slice()) else {
        bail!(
            "it decodes to {} bytes; an ed25519 secret key is {SECRET_KEY_LEN} bytes (32-byte seed, 32-byte public key)",
            bytes.len()
        );
    };
    SigningKey::from_keypair_bytes(&pair)
        .map_err(|_| anyhow::anyhow!("its public half is not the public key of its seed (a damaged key file?)"))
}

/// Reads a secret key file, refusing one that group or others may read or write.
pub fn read_secret_key(path: &Path) -> Result<SigningKey> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading secret key {}", path.display()))?;
    if !meta.is_file() {
        bail!("secret key {} is not a regular file", path.display());
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        bail!(
            "secret key {} has mode {mode:04o}: group or others can access it; `chmod 600` it (and consider the key leaked)",
            path.display()
        );
    }
    let text = crate::input::read_text(path, "secret key", 64 << 10)?;
    parse_secret_key(&text)
        .with_context(|| format!("secret key {} is not an ed25519 key in ostree's format", path.display()))
}

/// Parses public keys, one base64 key a line; blank lines and lines starting
/// with `#` are skipped. Errors name the line.
pub fn parse_public_keys(text: &str) -> Result<Vec<VerifyingKey>> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        keys.push(parse_public_key(line).with_context(|| format!("line {}", i + 1))?);
    }
    Ok(keys)
}

fn parse_public_key(line: &str) -> Result<VerifyingKey> {
    let bytes = BASE64
        .decode(line)
        .map_err(|e| anyhow::anyhow!("not valid base64 ({e})"))?;
    let Ok(raw) = <[u8; PUBLIC_KEY_LEN]>::try_from(bytes.as_slice()) else {
        bail!(
            "decodes to {} bytes; an ed25519 public key is {PUBLIC_KEY_LEN} bytes",
            bytes.len()
        );
    };
    VerifyingKey::from_bytes(&raw).map_err(|_| anyhow::anyhow!("not a valid ed25519 public key (not a curve point)"))
}

/// Reads public keys from a file, or from every regular file in a directory
/// (sorted by name; hidden files too, as ostree does).
pub fn read_public_keys(path: &Path) -> Result<Vec<VerifyingKey>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading public keys {}", path.display()))?;
    let files = if meta.is_dir() {
        let mut files: Vec<PathBuf> = Vec::new();
        for entry in std::fs::read_dir(path).with_context(|| format!("listing public keys in {}", path.display()))? {
            let entry = entry.with_context(|| format!("listing public keys in {}", path.display()))?;
            let p = entry.path();
            if std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
                files.push(p);
            }
        }
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut keys = Vec::new();
    for f in files {
        let text = crate::input::read_text(&f, "public keys", crate::input::CONFIG_CAP)?;
        keys.extend(parse_public_keys(&text).with_context(|| format!("public key file {}", f.display()))?);
    }
    Ok(keys)
}

/// `KEY.pub` beside the secret key file `KEY`.
pub fn public_path(secret: &Path) -> PathBuf {
    let mut s = OsString::from(secret.as_os_str());
    s.push(".pub");
    PathBuf::from(s)
}

/// Writes a new random keypair: the secret key to `secret` (mode 0600) and the
/// public key to `secret.pub`. Neither file may exist; each is written to a
/// temporary file, synced and renamed into place without replacing anything.
pub fn generate_keypair(secret: &Path) -> Result<VerifyingKey> {
    let public = public_path(secret);
    for p in [secret, public.as_path()] {
        if p.symlink_metadata().is_ok() {
            bail!("{} already exists; refusing to overwrite a key", p.display());
        }
    }
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let verifying = key.verifying_key();
    write_new_file(secret, encode_secret(&key).as_bytes(), 0o600)?;
    if let Err(e) = write_new_file(&public, format!("{}\n", encode_public(&verifying)).as_bytes(), 0o644) {
        // Do not leave a secret key without its public half.
        let _ = std::fs::remove_file(secret);
        return Err(e);
    }
    Ok(verifying)
}

/// Creates `path` with `contents` and `mode`: temp file in the same directory,
/// fsync, rename that fails if `path` appeared meanwhile, fsync of the directory.
fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    // Created 0600 (never wider than asked), then set to exactly `mode`.
    let mut tmp = crate::atomic::temp_beside(path)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", tmp.path().display()))?;
    tmp.write_all(contents)
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    crate::atomic::persist_new(tmp, path).map_err(|e| {
        let exists = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::AlreadyExists)
        });
        if exists {
            anyhow::anyhow!("{} already exists; refusing to overwrite a key", path.display())
        } else {
            e.context(format!("moving the key into place at {}", path.display()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn secret_key_round_trips() {
        let k = key(7);
        let parsed = parse_secret_key(&encode_secret(&k)).unwrap();
        assert_eq!(parsed.to_keypair_bytes(), k.to_keypair_bytes());
    }

    #[test]
    fn bad_secret_keys_say_why() {
        let k = key(7);
        let mut pair = k.to_keypair_bytes();
        pair[40] ^= 1;
        let cases: &[(String, &str)] = &[
            (String::new(), "no key"),
            ("  \n\n".into(), "no key"),
            ("!!!not base64!!!".into(), "not valid base64"),
            (BASE64.encode([0u8; 63]), "63 bytes"),
            (BASE64.encode([0u8; 65]), "65 bytes"),
            (BASE64.encode([0u8; 32]), "32 bytes"),
            (BASE64.encode(pair), "public half"),
            (format!("{0}{0}", encode_secret(&k)), "more than one line"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", parse_secret_key(text).unwrap_err());
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn public_keys_skip_comments_and_name_bad_lines() {
        let a = encode_public(&key(1).verifying_key());
        let b = encode_public(&key(2).verifying_key());
        let keys = parse_public_keys(&format!("# build server\n{a}\n\n  {b}  \n")).unwrap();
        assert_eq!(keys, vec![key(1).verifying_key(), key(2).verifying_key()]);
        let err = format!(
            "{:#}",
            parse_public_keys(&format!("{a}\n{}\n", BASE64.encode([1u8; 31]))).unwrap_err()
        );
        assert!(err.contains("line 2") && err.contains("31 bytes"), "{err}");
        let err = format!("{:#}", parse_public_keys("garbage!\n").unwrap_err());
        assert!(err.contains("line 1") && err.contains("base64"), "{err}");
    }

    #[test]
    fn keygen_writes_both_files_and_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("k");
        let public = generate_keypair(&secret).unwrap();
        let meta = std::fs::metadata(&secret).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(read_secret_key(&secret).unwrap().verifying_key(), public);
        assert_eq!(read_public_keys(&public_path(&secret)).unwrap(), vec![public]);
        let err = format!("{:#}", generate_keypair(&secret).unwrap_err());
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(read_secret_key(&secret).unwrap().verifying_key(), public);
    }

    #[test]
    fn secret_key_readable_by_others_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("k");
        generate_keypair(&secret).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = format!("{:#}", read_secret_key(&secret).unwrap_err());
        assert!(
            err.contains("0640") && err.contains("group or others") && err.contains("/k"),
            "{err}"
        );
    }
}
