//! What package layering asks of a repository: a commit's content checksum
//! and the refs layering keeps (memoized script outputs, bases).

use anyhow::{Context, Result};
use ostree::gio;
use ostree::prelude::*;

use super::repo::Repo;

impl Repo {
    /// The checksum of `commit`'s root tree (contents and metadata): equal
    /// for commits with the same files, whatever their metadata and times.
    pub fn content_checksum(&self, commit: &str) -> Result<String> {
        let (root, _) = self
            .raw()
            .read_commit(commit, gio::Cancellable::NONE)
            .with_context(|| format!("reading commit {commit} from {}", self.path().display()))?;
        let root = root
            .downcast::<ostree::RepoFile>()
            .map_err(|_| anyhow::anyhow!("read_commit returned no RepoFile"))?;
        root.ensure_resolved()
            .with_context(|| format!("reading commit {commit} from {}", self.path().display()))?;
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
