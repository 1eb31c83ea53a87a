//! Pulling from a device's update remote with libostree's fetcher, and
//! reading what the server publishes (summary, summary.sig, delta
//! superblocks) before any content is fetched.
//!
//! libostree 2022.7 has no low-speed limit (ostree #2383: a pull can hang for
//! a quarter of an hour when the network goes away), so every pull runs under
//! a stall watchdog that reads `bytes-transferred` from the pull's progress
//! and cancels it when nothing arrives for [`Pull::stall`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ostree::gio;
use ostree::gio::prelude::*;
use ostree::glib;

use super::repo::Repo;
use crate::sign::{Signatures, Trust};

/// One pull from a remote.
#[derive(Debug, Clone)]
pub struct Pull<'a> {
    /// The remote's name in the repository config.
    pub remote: &'a str,
    /// The remote's URL (for messages).
    pub url: &'a str,
    /// The ref; when given, libostree writes `remote:ref` at the end and looks
    /// for a static delta from the commit that ref points to now.
    pub refname: Option<&'a str>,
    /// The commit to pull.
    pub commit: &'a str,
    /// Only the commit object and its detached metadata (signatures).
    pub commit_only: bool,
    /// Refuse a commit older than this one (libostree's `timestamp-check-from-rev`).
    pub not_older_than: Option<&'a str>,
    /// Cancel when no byte arrives for this long.
    pub stall: Duration,
    /// libostree's `n-network-retries`.
    pub retries: u32,
    /// Also pull this many parent commits (with `commit_only`: their objects only).
    pub depth: i32,
}

/// What a pull transferred, from libostree's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Transferred {
    /// Bytes fetched over the network.
    pub bytes: u64,
    /// Objects fetched.
    pub objects: u32,
    /// Delta parts fetched.
    pub delta_parts: u32,
}

/// A progress report, about once a second.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Bytes fetched so far.
    pub bytes: u64,
    /// Objects fetched so far.
    pub fetched: u32,
    /// Objects requested so far.
    pub requested: u32,
    /// Delta parts fetched and in total.
    pub delta_parts: (u32, u32),
    /// Bytes of delta parts in total (0 without a delta).
    pub delta_bytes: u64,
}

/// libostree's progress object, read from the watchdog thread.
struct SharedProgress(ostree::AsyncProgress);
// SAFETY: OstreeAsyncProgress keeps its values behind a GMutex (every getter
// and setter takes it) and is reference-counted atomically; the watchdog
// thread only calls the getters while the pulling thread holds a reference.
unsafe impl Send for SharedProgress {}
// SAFETY: as above, concurrent getters are serialized by the object's GMutex.
unsafe impl Sync for SharedProgress {}

impl SharedProgress {
    fn report(&self) -> Report {
        let p = &self.0;
        Report {
            bytes: p.uint64("bytes-transferred"),
            fetched: p.uint("fetched"),
            requested: p.uint("requested"),
            delta_parts: (p.uint("fetched-delta-parts"), p.uint("total-delta-parts")),
            delta_bytes: p.uint64("total-delta-part-size"),
        }
    }
}

/// Pulls `pull.commit` into `repo` under the stall watchdog; `on_report` is
/// called from the watchdog thread about once a second.
pub fn pull(repo: &Repo, pull: &Pull, on_report: &(dyn Fn(&Report) + Sync)) -> Result<Transferred> {
    let cancel = gio::Cancellable::new();
    let progress = Arc::new(SharedProgress(ostree::AsyncProgress::new()));
    let dict = glib::VariantDict::new(None);
    let refs: Vec<String> = vec![pull.refname.unwrap_or(pull.commit).to_string()];
    dict.insert_value("refs", &refs.to_variant());
    if pull.refname.is_some() {
        dict.insert_value("override-commit-ids", &vec![pull.commit.to_string()].to_variant());
    }
    let flags = if pull.commit_only {
        ostree::RepoPullFlags::COMMIT_ONLY
    } else {
        ostree::RepoPullFlags::NONE
    };
    dict.insert_value("flags", &(flags.bits() as i32).to_variant());
    dict.insert_value("n-network-retries", &pull.retries.to_variant());
    if pull.depth != 0 {
        dict.insert_value("depth", &pull.depth.to_variant());
    }
    if let Some(rev) = pull.not_older_than {
        dict.insert_value("timestamp-check-from-rev", &rev.to_variant());
    }
    let options = dict.end();

    let done = Arc::new(AtomicBool::new(false));
    let stalled = Arc::new(AtomicBool::new(false));
    let result = std::thread::scope(|s| {
        let watchdog = {
            let (progress, done, stalled, cancel) = (progress.clone(), done.clone(), stalled.clone(), cancel.clone());
            let stall = pull.stall;
            s.spawn(move || {
                let (mut last_bytes, mut last_change) = (0u64, Instant::now());
                while !done.load(Ordering::Acquire) {
                    // Woken early when the pull ends (see the unpark below).
                    std::thread::park_timeout(Duration::from_millis(200));
                    if done.load(Ordering::Acquire) {
                        break;
                    }
                    let r = progress.report();
                    if r.bytes != last_bytes {
                        (last_bytes, last_change) = (r.bytes, Instant::now());
                        on_report(&r);
                    } else if last_change.elapsed() >= stall {
                        stalled.store(true, Ordering::Release);
                        cancel.cancel();
                        return;
                    }
                }
            })
        };
        let r = repo
            .raw()
            .pull_with_options(pull.remote, &options, Some(&progress.0), Some(&cancel));
        done.store(true, Ordering::Release);
        watchdog.thread().unpark();
        let _ = watchdog.join();
        // Removes the idle source the progress object queued on the main
        // context: it holds no reference, and a later pull iterating the same
        // context would otherwise call into the freed object (a hang on its
        // mutex, or GLib's "invalid non-instantiatable type" warning).
        progress.0.finish();
        r
    });
    let what = if pull.commit_only { "the commit object of" } else { "" };
    if let Err(e) = result {
        if stalled.load(Ordering::Acquire) {
            bail!(
                "pulling {what} {} from {}: no data arrived for {} s; the transfer was cancelled (a rerun resumes)",
                pull.commit,
                pull.url,
                pull.stall.as_secs()
            );
        }
        return Err(anyhow::Error::new(e).context(format!(
            "pulling {what} {} from {} (remote {})",
            pull.commit, pull.url, pull.remote
        )));
    }
    let r = progress.report();
    on_report(&r);
    Ok(Transferred {
        bytes: r.bytes,
        objects: r.fetched,
        delta_parts: r.delta_parts.0,
    })
}

/// The refs a server's summary lists, after checking `summary.sig` against `trust`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Ref → commit checksum.
    pub refs: BTreeMap<String, String>,
    /// Static deltas the summary indexes: `FROM-TO` or `TO` names.
    pub deltas: Vec<String>,
}

/// Most bytes arbor reads of a summary, its signature or a superblock.
const METADATA_CAP: u64 = 64 << 20;

/// Fetches `url/path` (http, https or file), at most [`METADATA_CAP`] bytes.
pub fn fetch(url: &str, path: &str) -> Result<Vec<u8>> {
    let full = format!("{}/{path}", url.trim_end_matches('/'));
    if let Some(local) = full.strip_prefix("file://") {
        return crate::input::read_bounded(std::path::Path::new(local), "file", METADATA_CAP);
    }
    let resp = ureq::get(&full)
        .timeout(Duration::from_secs(60))
        .call()
        .map_err(|e| anyhow::anyhow!("fetching {full}: {e}"))?;
    let mut body = Vec::new();
    use std::io::Read as _;
    resp.into_reader()
        .take(METADATA_CAP + 1)
        .read_to_end(&mut body)
        .with_context(|| format!("reading {full}"))?;
    if body.len() as u64 > METADATA_CAP {
        bail!("{full} is larger than {} MiB; refusing it", METADATA_CAP >> 20);
    }
    Ok(body)
}

/// Fetches and verifies the summary of the server at `url`.
pub fn summary(url: &str, trust: &Trust) -> Result<Summary> {
    let bytes = fetch(url, "summary")?;
    let sig = fetch(url, "summary.sig")?;
    let signatures = detached_signatures(&sig, "summary.sig");
    if let Err(why) = crate::sign::judge_signatures(&bytes, &signatures, trust) {
        bail!("{url}/summary is refused: {why} (summary.sig)");
    }
    parse_summary(&bytes).with_context(|| format!("{url}/summary"))
}

/// The ed25519 signatures in a detached `a{sv}` signature file (`what` names it).
pub(crate) fn detached_signatures(bytes: &[u8], what: &str) -> Signatures {
    let v = glib::Variant::from_bytes_with_type(&glib::Bytes::from(bytes), glib::VariantTy::VARDICT);
    if v.is_normal_form() {
        super::sign::signature_entries(&v)
    } else {
        Signatures::Malformed(format!("{what} is not a valid a{{sv}}"))
    }
}

pub(crate) fn parse_summary(bytes: &[u8]) -> Result<Summary> {
    let ty = glib::VariantTy::new("(a(s(taya{sv}))a{sv})").context("summary type")?;
    let v = glib::Variant::from_bytes_with_type(&glib::Bytes::from(bytes), ty);
    if !v.is_normal_form() {
        bail!("not a valid ostree summary");
    }
    let mut refs = BTreeMap::new();
    let list = v.child_value(0);
    for i in 0..list.n_children() {
        let entry = list.child_value(i);
        let name = entry.child_value(0).str().unwrap_or_default().to_string();
        let csum = entry.child_value(1).child_value(1);
        let csum = csum.fixed_array::<u8>().map(hex::encode).unwrap_or_default();
        refs.insert(name, csum);
    }
    let mut deltas = Vec::new();
    if let Ok(Some(d)) = super::sign::lookup(&v.child_value(1), "ostree.static-deltas") {
        for i in 0..d.n_children() {
            if let Some(k) = d.child_value(i).child_value(0).str() {
                deltas.push(k.to_string());
            }
        }
    }
    Ok(Summary { refs, deltas })
}

/// The bytes a static delta from `from` to `to` downloads (superblock, parts
/// and fallback objects), read from its superblock on the server, whose
/// signature must verify against `trust`. `None` when the server has no such delta.
pub fn delta_download_size(url: &str, from: &str, to: &str, trust: &Trust) -> Result<Option<u64>> {
    let rel = super::publish::delta::relative_dir(&super::publish::delta::Pair {
        from: Some(from.to_string()),
        to: to.to_string(),
    })?;
    let path = format!("{}/superblock", rel.display());
    let bytes = match fetch(url, &path) {
        Ok(b) => b,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let sig_path = format!("{}/{}", rel.display(), super::publish::delta::SUPERBLOCK_SIG);
    let sig = fetch(url, &sig_path)?;
    let signatures = detached_signatures(&sig, &sig_path);
    crate::sign::judge_signatures(&bytes, &signatures, trust).map_err(|why| anyhow::anyhow!("{url}/{path}: {why}"))?;
    let size = superblock_size(&bytes, to).with_context(|| format!("{url}/{path}"))?;
    Ok(Some(size + bytes.len() as u64))
}

/// Bytes a pull of `commit` fetches without a static delta (its commit
/// object already pulled and verified): the dirtree, dirmeta and file
/// objects the repository lacks, as the server sizes them. Missing dirtrees
/// are fetched to be walked, each checked against the checksum its parent
/// names (the root's is in the signed commit), and stored, so the pull that
/// follows does not fetch them again; the rest are sized by HEAD.
pub fn objects_download_size(repo: &Repo, url: &str, commit: &str) -> Result<u64> {
    use ::ostree::ObjectType;
    let c = repo.load_commit(commit)?;
    let checksum = |v: glib::Variant| -> Result<String> {
        let b = v
            .fixed_array::<u8>()
            .map_err(|e| anyhow::anyhow!("commit {commit}: {e}"))?;
        if b.len() != 32 {
            bail!("commit {commit} names an object by a {}-byte checksum", b.len());
        }
        Ok(hex::encode(b))
    };
    let mut trees = vec![checksum(c.child_value(6))?];
    let mut metas = std::collections::BTreeSet::from([checksum(c.child_value(7))?]);
    let mut files = std::collections::BTreeSet::new();
    let mut walked = std::collections::HashSet::new();
    // Objects an interrupted pull staged count as present: the next pull keeps them.
    let staged = repo.staging_dirs();
    let have = |kind: ObjectType, csum: &str| -> Result<bool> {
        let ext = match kind {
            ObjectType::DirTree => "dirtree",
            ObjectType::DirMeta => "dirmeta",
            _ => "file",
        };
        let rel = format!("{}/{}.{ext}", &csum[..2], &csum[2..]);
        Ok(repo.has_object(kind, csum)? || staged.iter().any(|d| d.join(&rel).exists()))
    };
    let mut total = 0u64;
    let mut fetched = Vec::new();
    let ty = glib::VariantTy::new("(a(say)a(sayay))").context("dirtree type")?;
    while let Some(tree) = trees.pop() {
        if !walked.insert(tree.clone()) {
            continue;
        }
        let bytes = if repo.has_object(ObjectType::DirTree, &tree)? {
            repo.load_metadata(ObjectType::DirTree, &tree)?
        } else if let Some(b) = staged
            .iter()
            .find_map(|d| std::fs::read(d.join(format!("{}/{}.dirtree", &tree[..2], &tree[2..]))).ok())
        {
            b
        } else {
            let path = object_path(&tree, "dirtree");
            let b = fetch(url, &path)?;
            use sha2::Digest as _;
            if hex::encode(sha2::Sha256::digest(&b)) != tree {
                bail!("{url}/{path} does not match its checksum: the server sent other bytes");
            }
            total += b.len() as u64;
            fetched.push((tree.clone(), b.clone()));
            b
        };
        let v = glib::Variant::from_bytes_with_type(&glib::Bytes::from_owned(bytes), ty);
        if !v.is_normal_form() {
            bail!("dirtree {tree} is not a valid dirtree");
        }
        let (fs, ds) = (v.child_value(0), v.child_value(1));
        for i in 0..fs.n_children() {
            files.insert(checksum(fs.child_value(i).child_value(1))?);
        }
        for i in 0..ds.n_children() {
            let d = ds.child_value(i);
            trees.push(checksum(d.child_value(1))?);
            metas.insert(checksum(d.child_value(2))?);
        }
    }
    repo.store_metadata(ObjectType::DirTree, &fetched)?;
    let mut missing = Vec::new();
    for m in metas {
        if !have(ObjectType::DirMeta, &m)? {
            missing.push(object_path(&m, "dirmeta"));
        }
    }
    for f in files {
        if !have(ObjectType::File, &f)? {
            missing.push(object_path(&f, "filez"));
        }
    }
    let sizes = crate::parallel::map_bounded(&missing, 8, |path| remote_size(url, path))?;
    Ok(total + sizes.iter().sum::<u64>())
}

/// `objects/ab/cdef….KIND` of a 64-hex-digit checksum.
fn object_path(checksum: &str, kind: &str) -> String {
    format!("objects/{}/{}.{kind}", &checksum[..2], &checksum[2..])
}

/// The size of `url/path` without fetching it (HEAD's Content-Length).
fn remote_size(url: &str, path: &str) -> Result<u64> {
    let full = format!("{}/{path}", url.trim_end_matches('/'));
    if let Some(local) = full.strip_prefix("file://") {
        return Ok(std::fs::metadata(local).with_context(|| full.clone())?.len());
    }
    let resp = ureq::head(&full)
        .timeout(Duration::from_secs(60))
        .call()
        .map_err(|e| anyhow::anyhow!("asking {full} for its size: {e}"))?;
    resp.header("Content-Length")
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("{full}: the server gave no Content-Length"))
}

fn is_not_found(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    text.contains("status code 404") || text.contains("No such file")
}

/// Sum of the compressed sizes of a superblock's parts and fallback objects;
/// the superblock must be the delta to commit `to`.
pub(crate) fn superblock_size(bytes: &[u8], to: &str) -> Result<u64> {
    let ty =
        glib::VariantTy::new("(a{sv}tayay(a{sv}aya(say)sstayay)aya(uayttay)a(yaytt))").context("superblock type")?;
    let v = glib::Variant::from_bytes_with_type(&glib::Bytes::from(bytes), ty);
    if !v.is_normal_form() {
        bail!("not a valid static delta superblock");
    }
    let big_endian = matches!(
        super::sign::lookup(&v.child_value(0), "ostree.endianness"),
        Ok(Some(e)) if e.get::<u8>() == Some(b'B')
    );
    let target = v
        .child_value(3)
        .fixed_array::<u8>()
        .map(hex::encode)
        .unwrap_or_default();
    if target != to {
        bail!("the superblock is a delta to {target:?}, not to {to}");
    }
    let swap = |n: u64| if big_endian { u64::from_be(n) } else { u64::from_le(n) };
    let mut total = 0u64;
    let parts = v.child_value(6);
    for i in 0..parts.n_children() {
        total = total.saturating_add(swap(parts.child_value(i).child_value(2).get::<u64>().unwrap_or(0)));
    }
    let fallbacks = v.child_value(7);
    for i in 0..fallbacks.n_children() {
        total = total.saturating_add(swap(fallbacks.child_value(i).child_value(2).get::<u64>().unwrap_or(0)));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_summary_or_superblock() {
        assert!(parse_summary(b"garbage").is_err());
        assert!(superblock_size(b"garbage", "").is_err());
    }
}
