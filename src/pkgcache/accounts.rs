//! The tree's own `/etc/passwd` and `/etc/group`, read from the packages that
//! ship them (before any package is imported: owners in the headers are names
//! that these files map to ids). Read with arbor's streaming payload reader:
//! the rpm crate's reader holds every file of the payload in memory and
//! matches names quadratically. Each file is bounded by the header's size, a
//! cap, and the payload's own entry size, checked against the header digest,
//! and reading stops as soon as every listed account file was found.

use std::io::{BufReader, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{Users, cpio, import, plan};

/// Largest `/etc/passwd` or `/etc/group` read (real ones are kilobytes).
pub const MAX_ACCOUNT_FILE: u64 = 1 << 20;

/// The account files read from the payload, as header paths.
const ACCOUNT_FILES: [&str; 2] = ["/etc/passwd", "/etc/group"];

/// Users and groups from `/etc/passwd` and `/etc/group` in `files` (the
/// packages whose headers list either; a later package's file wins); root
/// only when either is missing.
pub fn users_from_packages(files: &[PathBuf]) -> Result<Users> {
    let (mut passwd, mut group) = (None, None);
    for f in files {
        let [p, g] =
            account_files(f).with_context(|| format!("reading /etc/passwd and /etc/group from {}", f.display()))?;
        passwd = p.or(passwd);
        group = g.or(group);
    }
    match (passwd, group) {
        (Some(p), Some(g)) => Users::from_passwd_group(&p, &g),
        _ => Ok(Users::root_only()),
    }
}

/// The text of `/etc/passwd` and `/etc/group` in the package at `path`, each
/// `None` when its header does not list it as a regular file.
fn account_files(path: &Path) -> Result<[Option<String>; 2]> {
    let pkg = import::open(path)?;
    let nevra = pkg.nevra.clone();
    read_accounts(pkg).with_context(|| nevra)
}

/// What the header says of one account file.
struct Wanted {
    size: u64,
    digest: Option<(rpm::DigestAlgorithm, String)>,
    text: Option<String>,
}

fn read_accounts(pkg: import::Opened) -> Result<[Option<String>; 2]> {
    let mut wanted: [Option<Wanted>; 2] = [None, None];
    let entries = pkg
        .metadata
        .get_file_entries()
        .context("reading the file list from the header")?;
    for e in &entries {
        let path = format!("{}{}", e.dirname(), e.basename());
        let Some(i) = ACCOUNT_FILES.iter().position(|a| *a == path) else {
            continue;
        };
        if e.flags().contains(rpm::FileFlags::GHOST) || e.file_type() != rpm::FileType::Regular {
            continue;
        }
        let size = e.size() as u64;
        if size > MAX_ACCOUNT_FILE {
            bail!("the header says {path} is {size} bytes; refusing more than {MAX_ACCOUNT_FILE}");
        }
        wanted[i] = Some(Wanted {
            size,
            digest: e
                .digest()
                .filter(|d| !d.as_hex().is_empty())
                .map(|d| (d.algorithm(), d.as_hex().to_ascii_lowercase())),
            text: None,
        });
    }
    drop(entries);
    let mut left = wanted.iter().filter(|w| w.is_some()).count();
    if left > 0 {
        let mut file = pkg.file;
        file.seek(SeekFrom::Start(pkg.payload_offset))
            .context("seeking to the payload")?;
        let mut archive = cpio::Archive::open(BufReader::with_capacity(64 << 10, file))?;
        while left > 0 {
            let Some(entry) = archive.next_entry().context("reading the payload")? else {
                break;
            };
            let name = entry.name.strip_prefix(b".").unwrap_or(&entry.name);
            let Some(i) = ACCOUNT_FILES.iter().position(|a| a.as_bytes() == name) else {
                continue;
            };
            let Some(w) = wanted[i].as_mut().filter(|w| w.text.is_none()) else {
                bail!(
                    "payload entry {} is not a regular file of the header, or appears twice",
                    plan::show_bytes(&entry.name)
                );
            };
            let path = ACCOUNT_FILES[i];
            if entry.size != w.size {
                bail!(
                    "{path}: the payload holds {} bytes, the header says {}",
                    entry.size,
                    w.size
                );
            }
            let mut bytes = Vec::with_capacity(w.size as usize);
            archive
                .content()
                .take(w.size)
                .read_to_end(&mut bytes)
                .with_context(|| format!("{path}: reading the payload"))?;
            if let Some((algo, want)) = &w.digest
                && let Some(mut h) = import::file_hasher(*algo)
            {
                h.update(&bytes);
                let got = hex::encode(h.finalize());
                if got != *want {
                    bail!("{path}: content digest mismatch: the header says {want}, the payload hashes to {got}");
                }
            }
            w.text = Some(String::from_utf8_lossy(&bytes).into_owned());
            left -= 1;
        }
    }
    let [p, g] = wanted;
    let mut out = [None, None];
    for (i, w) in [p, g].into_iter().enumerate() {
        if let Some(w) = w {
            match w.text {
                Some(t) => out[i] = Some(t),
                None => bail!(
                    "{}: listed in the header but missing from the payload",
                    ACCOUNT_FILES[i]
                ),
            }
        }
    }
    Ok(out)
}
