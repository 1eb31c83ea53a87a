//! What package layering asks of a repository: digests of a tree's entries
//! under a path prefix (a file trigger's inputs), a commit's content checksum,
//! and the refs layering keeps (memoized script outputs, bases).

use anyhow::{Context, Result};
use ostree::gio;
use ostree::prelude::*;
use sha2::{Digest, Sha256};

use super::repo::Repo;

impl Repo {
    /// A digest of what `commits` hold at the paths that start with the
    /// string `prefix` (as rpm matches file trigger prefixes: `/usr/lib`
    /// matches `/usr/lib/x` and `/usr/lib64/x`): each matching entry's name
    /// and object checksum (a directory's contents and metadata checksums),
    /// commit by commit. No file content is read.
    pub fn prefix_digest(&self, commits: &[String], prefix: &str) -> Result<String> {
        let (dir, stem) = match prefix.trim_end_matches('/').rsplit_once('/') {
            Some((d, s)) => (d.trim_start_matches('/'), s),
            None => ("", prefix),
        };
        let whole_dir = prefix.ends_with('/');
        let mut h = Sha256::new();
        for commit in commits {
            h.update(b"commit\n");
            let (root, _) = self
                .raw()
                .read_commit(commit, gio::Cancellable::NONE)
                .with_context(|| format!("reading commit {commit}"))?;
            let parent = if dir.is_empty() {
                root
            } else {
                root.resolve_relative_path(dir)
            };
            // A commit without the directory has nothing under the prefix (and
            // a RepoFile's enumerator would report its absence on every call).
            if parent.query_file_type(gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS, gio::Cancellable::NONE)
                != gio::FileType::Directory
            {
                continue;
            }
            let children = parent
                .enumerate_children(
                    "standard::name,standard::type",
                    gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
                    gio::Cancellable::NONE,
                )
                .with_context(|| format!("{commit}: listing /{dir}"))?;
            let mut found = Vec::new();
            while let Some(info) = children
                .next_file(gio::Cancellable::NONE)
                .with_context(|| format!("{commit}: listing /{dir}"))?
            {
                let name = info.name().to_string_lossy().into_owned();
                let hit = if whole_dir {
                    name == stem
                } else {
                    name.starts_with(stem)
                };
                if hit {
                    found.push(name);
                }
            }
            found.sort();
            for name in found {
                let child = parent
                    .child(&name)
                    .downcast::<ostree::RepoFile>()
                    .map_err(|_| anyhow::anyhow!("{commit}: /{dir}/{name} is not in the repository"))?;
                child
                    .ensure_resolved()
                    .with_context(|| format!("{commit}: reading /{dir}/{name}"))?;
                let id = match (child.tree_get_contents_checksum(), child.tree_get_metadata_checksum()) {
                    (Some(c), Some(m)) => format!("{c}.{m}"),
                    _ => child.checksum().to_string(),
                };
                h.update(format!("{name}\t{id}\n"));
            }
        }
        Ok(hex::encode(h.finalize()))
    }

    /// The checksum of `commit`'s root tree (contents and metadata): equal
    /// for commits with the same files, whatever their metadata and times.
    pub fn content_checksum(&self, commit: &str) -> Result<String> {
        let (root, _) = self
            .raw()
            .read_commit(commit, gio::Cancellable::NONE)
            .with_context(|| format!("reading commit {commit}"))?;
        let root = root
            .downcast::<ostree::RepoFile>()
            .map_err(|_| anyhow::anyhow!("read_commit returned no RepoFile"))?;
        root.ensure_resolved()
            .with_context(|| format!("reading commit {commit}"))?;
        match (root.tree_get_contents_checksum(), root.tree_get_metadata_checksum()) {
            (Some(c), Some(m)) => Ok(format!("{c}{m}")),
            _ => anyhow::bail!("commit {commit} has no root directory"),
        }
    }

    /// Refs starting with `prefix`, with their commits, sorted.
    pub fn refs_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let refs = self
            .raw()
            .list_refs(None, gio::Cancellable::NONE)
            .with_context(|| format!("listing the refs of {}", self.path().display()))?;
        let mut out: Vec<(String, String)> = refs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Points `name` at `commit` (`None` deletes it), outside a transaction.
    pub fn set_ref(&self, name: &str, commit: Option<&str>) -> Result<()> {
        self.raw()
            .set_ref_immediate(None, name, commit, gio::Cancellable::NONE)
            .with_context(|| format!("setting ref {name} in {}", self.path().display()))
    }
}
