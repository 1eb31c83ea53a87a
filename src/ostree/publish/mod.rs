//! Publishing a repository as static files any web server or CDN can serve:
//! an archive-mode repository, static deltas, the summary, and a small JSON
//! index. Written in the order a client can tolerate at any moment: objects,
//! then deltas, then refs and the summary, then the index.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use ostree::gio;
use ostree::glib;
use serde::Serialize;

pub mod copy;
pub mod delta;

use crate::ostree::repo::Repo;
use delta::Pair;

/// What a published ref offers.
#[derive(Debug, Clone, Serialize)]
pub struct RefEntry {
    /// The commit the ref points at.
    pub commit: String,
    /// Its `version` metadata.
    pub version: Option<String>,
    /// Commit timestamp (seconds since the epoch).
    pub timestamp: u64,
    /// Upgrade paths with a static delta: `from` commit (`null`: from scratch) → bytes.
    pub deltas: Vec<DeltaEntry>,
}

/// One static delta and its size on the server.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaEntry {
    /// Source commit; `None` for the from-scratch delta.
    pub from: Option<String>,
    /// Bytes a client downloads (superblock and parts).
    pub size: u64,
}

/// The JSON index written as `arbor-index.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Index {
    /// Published refs.
    pub refs: BTreeMap<String, RefEntry>,
}

/// The refs of `src` to publish: every one except the package cache
/// (`arbor/pkg/...`); none is an error (checked before the destination exists).
pub fn published_refs(src: &Repo) -> Result<BTreeMap<String, String>> {
    let refs: BTreeMap<String, String> = src
        .raw()
        .list_refs(None, gio::Cancellable::NONE)
        .with_context(|| format!("listing the refs of {}", src.path().display()))?
        .into_iter()
        .filter(|(r, _)| !r.starts_with("arbor/pkg/"))
        .collect();
    if refs.is_empty() {
        anyhow::bail!(
            "{} has no refs to publish (package cache refs arbor/pkg/... are never published)",
            src.path().display()
        );
    }
    Ok(refs)
}

/// Publishes `refs` (see [`published_refs`]) of `src` into `dest` (an
/// archive-mode repository, see [`Repo::open_or_create`]), with a delta from
/// each ref's parent and, when `from_scratch`, one from nothing.
pub fn publish(
    src: &Repo,
    refs: &BTreeMap<String, String>,
    dest: &Repo,
    delta_opts: &delta::Options,
    from_scratch: bool,
    jobs: usize,
    key: Option<&ed25519_dalek::SigningKey>,
) -> Result<Index> {
    let dest_repo = dest.raw();
    // 1. Objects (with the parent commit when the source has it, for deltas).
    let mut pairs = Vec::new();
    for commit in refs.values() {
        copy::copy_objects(src, dest, commit, None, jobs)?;
        if let Some(parent) = src.ancestors(commit, 1)?.into_iter().next() {
            copy::copy_objects(src, dest, &parent, None, jobs)?;
            pairs.push(Pair {
                from: Some(parent),
                to: commit.clone(),
            });
        }
        // Devices start from a flashed image; a first install over the network is
        // rare, and its delta costs minutes for a whole tree.
        if from_scratch {
            pairs.push(Pair {
                from: None,
                to: commit.clone(),
            });
        }
    }
    // 2. Deltas (the generator also regenerates the summary, without our refs yet);
    // a ref's first commit has none unless from scratch.
    if !pairs.is_empty() {
        delta::generate_signed(
            dest,
            &pairs,
            delta_opts,
            jobs,
            key.map_or(delta::Signing::None, delta::Signing::Detached),
        )?;
    }
    // 3. Refs, then the summary that lists them and the deltas.
    crate::ostree::repo::in_transaction(dest_repo, || {
        for (r, c) in refs {
            dest_repo.transaction_set_ref(None, r, Some(c));
        }
        dest_repo
            .commit_transaction(gio::Cancellable::NONE)
            .context("writing the refs")?;
        Ok(())
    })?;
    dest_repo
        .regenerate_summary(None, gio::Cancellable::NONE)
        .context("regenerating the summary")?;
    if let Some(key) = key {
        sign_summary(dest, key)?;
    }
    // 4. The index for humans and dashboards.
    let mut index = Index { refs: BTreeMap::new() };
    for (r, c) in refs {
        let (variant, _) = dest_repo.load_commit(c).with_context(|| format!("loading {c}"))?;
        let meta = glib::VariantDict::new(Some(&variant.child_value(0)));
        let version = meta
            .lookup_value("version", None)
            .and_then(|v| v.str().map(str::to_string));
        let deltas = pairs
            .iter()
            .filter(|p| &p.to == c)
            .map(|p| {
                Ok(DeltaEntry {
                    from: p.from.clone(),
                    size: delta_size(dest, p)?,
                })
            })
            .collect::<Result<_>>()?;
        index.refs.insert(
            r.clone(),
            RefEntry {
                commit: c.clone(),
                version,
                timestamp: ostree::commit_get_timestamp(&variant),
                deltas,
            },
        );
    }
    let json = serde_json::to_vec_pretty(&index).context("encoding arbor-index.json")?;
    crate::atomic::write(&dest.path().join("arbor-index.json"), &json).context("writing arbor-index.json")?;
    Ok(index)
}

/// Writes `summary.sig` as ostree's ed25519 signer does: an `a{sv}` with
/// `ostree.sign.ed25519` (`aay`) over the exact bytes of `summary`.
pub fn sign_summary(repo: &Repo, key: &ed25519_dalek::SigningKey) -> Result<()> {
    let dest = repo.path();
    let summary = std::fs::read(dest.join("summary")).with_context(|| format!("reading {}/summary", dest.display()))?;
    let dict = crate::ostree::sign::signature_dict(&summary, key);
    crate::atomic::write(&dest.join("summary.sig"), &dict.data_as_bytes()).context("writing summary.sig")
}

/// Bytes of a delta's directory (superblock and parts).
fn delta_size(repo: &Repo, pair: &Pair) -> Result<u64> {
    Ok(std::fs::read_dir(delta::dir(repo, pair)?)
        .map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0))
}
