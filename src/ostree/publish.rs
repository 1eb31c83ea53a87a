//! Publishing a repository as static files any web server or CDN can serve:
//! an archive-mode repository, static deltas, the summary, and a small JSON
//! index. Written in the order a client can tolerate at any moment: objects,
//! then deltas, then refs and the summary, then the index.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use ostree::gio;
use ostree::glib;
use serde::Serialize;

use super::delta::{self, Pair};
use super::open;
use super::tree::{self, Mode};

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

/// Publishes every ref of `src` except the package cache (`arbor/pkg/...`) into `dest`,
/// with a delta from each ref's parent and, when `from_scratch`, one from nothing.
pub fn publish(
    src: &Path,
    dest: &Path,
    delta_opts: &delta::Options,
    from_scratch: bool,
    jobs: usize,
    key: Option<&ed25519_dalek::SigningKey>,
) -> Result<Index> {
    let src_repo = open(src)?;
    let refs: BTreeMap<String, String> = src_repo
        .list_refs(None, gio::Cancellable::NONE)
        .with_context(|| format!("listing the refs of {}", src.display()))?
        .into_iter()
        .filter(|(r, _)| !r.starts_with("arbor/pkg/"))
        .collect();
    if refs.is_empty() {
        anyhow::bail!(
            "{} has no refs to publish (package cache refs arbor/pkg/... are never published)",
            src.display()
        );
    }
    let dest_repo = tree::open_or_create(dest, Mode::Archive)?;
    // 1. Objects (with the parent commit when the source has it, for deltas).
    let mut pairs = Vec::new();
    for commit in refs.values() {
        tree::copy_objects(src, dest, commit, None, jobs)?;
        if let Some(parent) = delta::ancestors(src, commit, 1)?.into_iter().next() {
            tree::copy_objects(src, dest, &parent, None, jobs)?;
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
        delta::generate_signed(dest, &pairs, delta_opts, jobs, key)?;
    }
    // 3. Refs, then the summary that lists them and the deltas.
    dest_repo
        .prepare_transaction(gio::Cancellable::NONE)
        .context("starting an OSTree transaction")?;
    for (r, c) in &refs {
        dest_repo.transaction_set_ref(None, r, Some(c));
    }
    dest_repo
        .commit_transaction(gio::Cancellable::NONE)
        .context("writing the refs")?;
    dest_repo
        .regenerate_summary(None, gio::Cancellable::NONE)
        .context("regenerating the summary")?;
    if let Some(key) = key {
        sign_summary(dest, key)?;
    }
    // 4. The index for humans and dashboards.
    let mut index = Index { refs: BTreeMap::new() };
    for (r, c) in &refs {
        let (variant, _) = dest_repo.load_commit(c).with_context(|| format!("loading {c}"))?;
        let meta = glib::VariantDict::new(Some(&variant.child_value(0)));
        let version = meta
            .lookup_value("version", None)
            .and_then(|v| v.str().map(str::to_string));
        let deltas = pairs
            .iter()
            .filter(|p| &p.to == c)
            .map(|p| DeltaEntry {
                from: p.from.clone(),
                size: delta_size(dest, p.from.as_deref(), c),
            })
            .collect();
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
    let mut tmp = tempfile::NamedTempFile::new_in(dest).context("creating the index")?;
    serde_json::to_writer_pretty(&mut tmp, &index)?;
    tmp.as_file().sync_all().context("syncing the index")?;
    tmp.persist(dest.join("arbor-index.json"))
        .context("writing arbor-index.json")?;
    Ok(index)
}

/// Writes `summary.sig` as ostree's ed25519 signer does: an `a{sv}` with
/// `ostree.sign.ed25519` (`aay`) over the exact bytes of `summary`.
pub fn sign_summary(dest: &Path, key: &ed25519_dalek::SigningKey) -> Result<()> {
    use ed25519_dalek::Signer as _;
    let summary = std::fs::read(dest.join("summary")).with_context(|| format!("reading {}/summary", dest.display()))?;
    let sig = key.sign(&summary).to_bytes();
    let dict = glib::VariantDict::new(None);
    let aay = glib::Variant::array_from_iter_with_type(
        glib::VariantTy::BYTE_STRING,
        [glib::Variant::array_from_fixed_array(&sig)],
    );
    dict.insert_value(crate::sign::METADATA_KEY, &aay);
    let mut tmp = tempfile::NamedTempFile::new_in(dest).context("creating summary.sig")?;
    std::io::Write::write_all(&mut tmp, &dict.end().data_as_bytes()).context("writing summary.sig")?;
    tmp.as_file().sync_all().context("syncing summary.sig")?;
    tmp.persist(dest.join("summary.sig")).context("writing summary.sig")?;
    Ok(())
}

/// Bytes of a delta's directory (`deltas/XX/REST/`, named in ostree's modified base64).
fn delta_size(repo: &Path, from: Option<&str>, to: &str) -> u64 {
    let name = match from {
        Some(f) => format!("{}-{}", mbase64(f), mbase64(to)),
        None => mbase64(to),
    };
    let dir = repo.join("deltas").join(&name[..2]).join(&name[2..]);
    std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// ostree's delta naming: the checksum's bytes in base64 without padding, `/` → `_`.
pub(crate) fn mbase64(hex_checksum: &str) -> String {
    use base64::Engine as _;
    let bytes = hex::decode(hex_checksum).unwrap_or_default();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(bytes)
        .replace('/', "_")
}

#[cfg(test)]
mod tests {
    #[test]
    fn delta_names_match_ostree() {
        // From `ostree static-delta list` and the on-disk directory of the same delta.
        let to = "60aec8b1b7a7c7da9b643e994c48bddbb1ca985d8f19fb6f2d9ad69bde33f292";
        assert_eq!(super::mbase64(to), "YK7Isbenx9qbZD6ZTEi927HKmF2PGftvLZrWm94z8pI");
    }
}
