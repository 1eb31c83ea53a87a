//! libostree through the `ostree` crate; glib types stay inside this module.

pub mod bundle;
pub mod delta;
pub mod layers;
pub mod publish;
pub mod repo;
pub mod sign;
pub mod sysroot;
pub mod tree;

use std::path::Path;

use anyhow::{Context, Result, bail};

/// Opens an existing repository, naming it on failure.
pub(crate) fn open(path: &Path) -> Result<::ostree::Repo> {
    let repo = ::ostree::Repo::new_for_path(path);
    repo.open(::ostree::gio::Cancellable::NONE)
        .with_context(|| format!("opening the OSTree repository at {}", path.display()))?;
    Ok(repo)
}

/// The checksum `rev` names, and the ref it was resolved through (`None` when
/// `rev` is a full checksum).
pub(crate) fn resolve_rev(repo: &::ostree::Repo, path: &Path, rev: &str) -> Result<(String, Option<String>)> {
    if ::ostree::validate_checksum_string(rev).is_ok() {
        return Ok((rev.to_string(), None));
    }
    match repo.resolve_rev(rev, true) {
        Ok(Some(c)) => Ok((c.to_string(), Some(rev.to_string()))),
        Ok(None) => bail!("{} has no ref {rev} (and it is not a commit checksum)", path.display()),
        Err(e) => Err(e).with_context(|| format!("looking up {rev} in {}", path.display())),
    }
}

/// The libostree release arbor needs (Debian 12 ships 2022.7).
pub const REQUIRED: (u32, u32) = (2022, 7);

/// Whether the linked libostree is at least [`REQUIRED`].
pub fn library_ok() -> bool {
    ::ostree::check_version(REQUIRED.0, REQUIRED.1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn linked_libostree_is_new_enough() {
        assert!(super::library_ok());
    }
}
