//! Package downloads: parallel (bounded), resumable, into a cache addressed by
//! content checksum; each file is checked against the metadata checksum, its
//! rpm header and payload digests, and, where the repository asks for it, its
//! OpenPGP signature.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::fetch::{Checksum, Fetcher};
use crate::parallel;
use crate::progress::Progress;
use crate::runner::Tool;

/// One package to fetch.
#[derive(Debug, Clone)]
pub struct Item {
    /// `name-evr.arch`, for messages.
    pub nevra: String,
    /// Full URLs of the .rpm, one per base URL of its repository, tried in order.
    pub urls: Vec<String>,
    /// Checksum from the repository metadata.
    pub checksum: Checksum,
    /// Signing keys to check against (files); `None` when the repo has gpgcheck=0.
    pub gpg_keys: Option<Vec<PathBuf>>,
}

/// Where an item lives in the cache: `packages/<checksum>/<file name>`.
pub fn cache_path(cache_dir: &Path, item: &Item) -> PathBuf {
    let name = item
        .urls
        .first()
        .and_then(|u| u.rsplit('/').next())
        .unwrap_or("package.rpm");
    cache_dir.join("packages").join(&item.checksum.hex).join(name)
}

/// Downloads every item (at most `jobs` at once) and returns their cache paths in order.
pub fn download_all(items: &[Item], cache_dir: &Path, fetcher: &Fetcher, jobs: usize) -> Result<Vec<PathBuf>> {
    let progress = Progress::bar(items.len() as u64, "downloading");
    // A failed package does not stop the others: one run fetches (or clears from
    // the cache) everything it can, and the first failure in order is reported.
    let results = parallel::map_bounded(items, jobs, |item| {
        progress.message(&item.nevra);
        let r = fetch_one(item, cache_dir, fetcher).with_context(|| format!("package {}", item.nevra));
        progress.inc();
        Ok(r)
    })?;
    progress.finish();
    results.into_iter().collect()
}

fn fetch_one(item: &Item, cache_dir: &Path, fetcher: &Fetcher) -> Result<PathBuf> {
    let dest = cache_path(cache_dir, item);
    if verified_before(&dest, item) {
        return Ok(dest);
    }
    if dest.exists() && !item.checksum.matches(&dest)? {
        // Never trust a cache entry that no longer matches: remove it and say so.
        std::fs::remove_file(&dest).with_context(|| format!("removing {}", dest.display()))?;
        bail!(
            "cached {} does not match the metadata checksum {}; it was removed, run again to refetch",
            dest.display(),
            item.checksum
        );
    }
    if !dest.exists() {
        // Another base URL serves the same bytes (the checksum says so) when one
        // is down, lacks the file or serves something else.
        super::first_working(&item.urls, |url| fetcher.download(url, &dest, &item.checksum))?;
    }
    verify_rpm(&dest, item)?;
    if let Some(stamp) = stamp(&dest, item) {
        // Best effort: without it the next run verifies again.
        let _ = std::fs::write(stamp_path(&dest), stamp);
    }
    Ok(dest)
}

/// What a verified cache entry looked like: the expected checksum and the
/// file's size, inode and ctime (which every write changes and no one can set
/// back). While they hold, a later compose does not hash the package again —
/// twice per package and compose, it was most of an incremental compose's
/// time. Packages checked against signing keys are checked every time.
fn stamp(path: &Path, item: &Item) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if item.gpg_keys.is_some() {
        return None;
    }
    let m = std::fs::symlink_metadata(path).ok().filter(|m| m.is_file())?;
    Some(format!(
        "{} {} {} {}.{:09}\n",
        item.checksum,
        m.len(),
        m.ino(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

fn stamp_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".verified");
    PathBuf::from(p)
}

fn verified_before(path: &Path, item: &Item) -> bool {
    match (stamp(path, item), std::fs::read_to_string(stamp_path(path))) {
        (Some(now), Ok(then)) => now == then,
        _ => false,
    }
}

/// Checks the rpm header and payload digests (the payload streamed: a
/// package's size does not matter), and the signature when keys are given.
pub fn verify_rpm(path: &Path, item: &Item) -> Result<()> {
    if let Err(e) = crate::rpm::digests::verify(path) {
        std::fs::remove_file(path).ok();
        bail!(
            "{}: rpm header/payload digest check failed ({e:#}); the file was removed",
            path.display()
        );
    }
    if let Some(keys) = &item.gpg_keys {
        check_signature(path, keys)?;
    }
    Ok(())
}

/// Checks an OpenPGP signature with rpm's own `rpmkeys` and a private keyring.
fn check_signature(path: &Path, keys: &[PathBuf]) -> Result<()> {
    if keys.is_empty() {
        bail!("the repository has gpgcheck=1 but no gpgkey: add gpgkey=file:///path/to/key or set gpgcheck=0");
    }
    let db = tempfile::tempdir().context("creating a temporary rpm keyring")?;
    for key in keys {
        Tool::new("rpmkeys")
            .arg("--dbpath")
            .arg(db.path())
            .arg("--import")
            .arg(key)
            .run()
            .with_context(|| format!("importing signing key {}", key.display()))?;
    }
    let checksig = |verbose: bool| {
        let mut t = Tool::new("rpmkeys").arg("--dbpath").arg(db.path()).arg("--checksig");
        if verbose {
            t = t.arg("-v");
        }
        t.arg(path).text()
    };
    let out = match checksig(false) {
        Ok(out) => out,
        Err(_) => {
            // Only the verbose form names the key and the verdict (NOKEY, BAD).
            let why = checksig(true).unwrap_or_else(|e| format!("{e:#}"));
            let signatures: Vec<&str> = why
                .lines()
                .map(str::trim)
                .filter(|l| l.contains("Signature") || l.contains("NOT OK"))
                .collect();
            let keys: Vec<String> = keys.iter().map(|k| k.display().to_string()).collect();
            bail!(
                "{} is not signed by a key in gpgkey ({}): {}",
                path.display(),
                keys.join(", "),
                if signatures.is_empty() {
                    why.trim().to_string()
                } else {
                    signatures.join("; ")
                }
            );
        }
    };
    if !out.contains("signatures OK") {
        bail!("{} is not signed by a key in gpgkey ({})", path.display(), out.trim());
    }
    Ok(())
}
