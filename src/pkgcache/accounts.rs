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

use super::{Users, import, plan};
use crate::rpm::cpio;

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
    /// Index in the header's file list.
    index: usize,
    size: u64,
    digest: Option<(rpm::DigestAlgorithm, String)>,
    text: Option<String>,
}

fn read_accounts(pkg: import::Opened) -> Result<[Option<String>; 2]> {
    let wanted = from_header(&pkg.metadata).context("reading the file list from the header")?;
    let wanted = check_sizes(wanted)?;
    read_payload(pkg, wanted)
}

/// The header's entries for the account files, found through its arrays
/// (`get_file_entries` would copy every entry of a 100,000-file package).
fn from_header(m: &rpm::PackageMetadata) -> Result<[Option<Wanted>; 2]> {
    use rpm::IndexTag as T;
    let h = &m.header;
    let mut wanted: [Option<Wanted>; 2] = [None, None];
    let Ok(basenames) = h.get_entry_data_as_string_array(T::RPMTAG_BASENAMES) else {
        return Ok(wanted);
    };
    let dirnames = h.get_entry_data_as_string_array(T::RPMTAG_DIRNAMES)?;
    let dirindexes = h.get_entry_data_as_u32_array(T::RPMTAG_DIRINDEXES)?;
    let sizes: Vec<u64> = match h.get_entry_data_as_u64_array(T::RPMTAG_LONGFILESIZES) {
        Ok(v) => v,
        Err(_) => h
            .get_entry_data_as_u32_array(T::RPMTAG_FILESIZES)?
            .into_iter()
            .map(u64::from)
            .collect(),
    };
    let modes = h.get_entry_data_as_u16_array(T::RPMTAG_FILEMODES)?;
    let flags = h.get_entry_data_as_u32_array(T::RPMTAG_FILEFLAGS)?;
    let digests = h
        .get_entry_data_as_string_array(T::RPMTAG_FILEDIGESTS)
        .unwrap_or_default();
    // An unknown algorithm: the payload digest still covers the bytes.
    let algo = m.get_file_digest_algorithm().ok();
    for (i, base) in basenames.iter().enumerate() {
        let dir = dirindexes
            .get(i)
            .and_then(|d| dirnames.get(*d as usize))
            .ok_or_else(|| anyhow::anyhow!("file {i} has no directory"))?;
        let Some(which) = ACCOUNT_FILES.iter().position(|a| a.strip_prefix(*dir) == Some(*base)) else {
            continue;
        };
        let mode = modes.get(i).copied().unwrap_or(0);
        let flag = flags.get(i).copied().unwrap_or(0);
        if flag & rpm::FileFlags::GHOST.bits() != 0 || u32::from(mode) & 0o170000 != 0o100000 {
            continue;
        }
        let digest = digests
            .get(i)
            .filter(|d| !d.is_empty())
            .zip(algo)
            .map(|(d, a)| (a, d.to_ascii_lowercase()));
        wanted[which] = Some(Wanted {
            index: i,
            size: sizes.get(i).copied().unwrap_or(0),
            digest,
            text: None,
        });
    }
    Ok(wanted)
}

/// Refuses an account file the header says is over the cap, before the payload is read.
fn check_sizes(wanted: [Option<Wanted>; 2]) -> Result<[Option<Wanted>; 2]> {
    for (w, path) in wanted.iter().zip(ACCOUNT_FILES) {
        if let Some(w) = w.as_ref().filter(|w| w.size > MAX_ACCOUNT_FILE) {
            bail!(
                "the header says {path} is {} bytes; refusing more than {MAX_ACCOUNT_FILE}",
                w.size
            );
        }
    }
    Ok(wanted)
}

/// Streams the payload until every wanted file was read.
fn read_payload(pkg: import::Opened, mut wanted: [Option<Wanted>; 2]) -> Result<[Option<String>; 2]> {
    let mut left = wanted.iter().filter(|w| w.is_some()).count();
    if left > 0 {
        let mut file = pkg.file;
        file.seek(SeekFrom::Start(pkg.payload_offset))
            .context("seeking to the payload")?;
        let mut archive = cpio::Archive::open(BufReader::with_capacity(64 << 10, file), &pkg.metadata.header)?;
        while left > 0 {
            let Some(entry) = archive.next_entry().context("reading the payload")? else {
                break;
            };
            let (i, shown) = match &entry.name {
                cpio::Name::Path(name) => {
                    let path = name.strip_prefix(b".").unwrap_or(name);
                    let Some(i) = ACCOUNT_FILES.iter().position(|a| a.as_bytes() == path) else {
                        continue;
                    };
                    (i, plan::show_bytes(name))
                }
                cpio::Name::Index(file) => {
                    let is = |w: &Option<Wanted>| w.as_ref().is_some_and(|w| w.index as u64 == u64::from(*file));
                    let Some(i) = wanted.iter().position(is) else {
                        continue;
                    };
                    (i, format!("{} (file #{file})", ACCOUNT_FILES[i]))
                }
            };
            let Some(w) = wanted[i].as_mut().filter(|w| w.text.is_none()) else {
                bail!("payload entry {shown} is not a regular file of the header, or appears twice");
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
            if let Some((algo, want)) = &w.digest {
                if let Some(mut h) = import::file_hasher(*algo) {
                    h.update(&bytes);
                    let got = hex::encode(h.finalize());
                    if got != *want {
                        bail!("{path}: content digest mismatch: the header says {want}, the payload hashes to {got}");
                    }
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
