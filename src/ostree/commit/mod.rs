//! The commit stage: checkouts of package commits (the read-only layers a
//! compose stacks with overlayfs), the committed owner and mode of a file, and
//! writing the commit and its ref; [`layers`] computes the tree itself.

pub mod layers;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use ostree::gio;
use ostree::glib;
use ostree::prelude::*;

pub use super::repo::MetaValue as Meta;
use super::repo::Repo;

/// Checks out `commits` in order into `dest` (created), as hardlinks into the
/// repository; later commits add to earlier ones. Conflicting files must have
/// been ruled out by the caller: identical files are allowed, others fail.
pub fn checkout_union(repo: &Repo, commits: &[String], dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    // libostree hardlinks a bare repository's objects only into a checkout
    // that keeps their owners (a device's sysroot repository, as root).
    let mode = match repo.mode()? {
        super::Mode::Bare => ostree::RepoCheckoutMode::None,
        _ => ostree::RepoCheckoutMode::User,
    };
    for commit in commits {
        let opts = ostree::RepoCheckoutAtOptions {
            mode,
            overwrite_mode: ostree::RepoCheckoutOverwriteMode::UnionIdentical,
            no_copy_fallback: true,
            ..Default::default()
        };
        repo.raw()
            .checkout_at(Some(&opts), libc_at_fdcwd(), dest, commit, gio::Cancellable::NONE)
            .with_context(|| format!("checking out {commit} into {}", dest.display()))?;
    }
    Ok(())
}

fn libc_at_fdcwd() -> i32 {
    nix::libc::AT_FDCWD
}

/// What to commit.
pub struct CommitRequest<'a> {
    /// What scripts and postprocessing changed: the overlayfs upper directory.
    pub dir: &'a Path,
    /// Ref to point at the new commit.
    pub refname: &'a str,
    /// Commit subject line.
    pub subject: &'a str,
    /// Commit metadata.
    pub metadata: &'a BTreeMap<String, Meta>,
    /// Commit timestamp (seconds since the epoch).
    pub timestamp: u64,
    /// The parent commit (the ref's current commit in the repository being published to).
    pub parent: Option<&'a str>,
}

/// Account secrets: committed with mode 0000 whatever the checkout says.
const SECRETS: [&str; 8] = [
    "/usr/etc/shadow",
    "/usr/etc/gshadow",
    "/usr/etc/shadow-",
    "/usr/etc/gshadow-",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/shadow-",
    "/etc/gshadow-",
];

/// The owner and mode committed for a file the tree has on disk at `path`
/// (absolute in the tree) with these: the caller's ids become root's when
/// not running as root, and the account secrets lose every permission bit.
pub(super) fn committed_meta(path: &str, uid: u32, gid: u32, mode: u32) -> (u32, u32, u32) {
    let (me, my_group) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    let uid = if me != 0 && uid == me { 0 } else { uid };
    let gid = if me != 0 && gid == my_group { 0 } else { gid };
    let mode = if SECRETS.contains(&path) { mode & !0o7777 } else { mode };
    (uid, gid, mode)
}

/// Writes `mtree` and the commit with `req`'s metadata and moves the ref,
/// ending the transaction the caller started.
pub(super) fn finish_commit(repo: &ostree::Repo, mtree: &ostree::MutableTree, req: &CommitRequest) -> Result<String> {
    let root = repo
        .write_mtree(mtree, gio::Cancellable::NONE)
        .context("writing the tree")?;
    let root = root
        .downcast::<ostree::RepoFile>()
        .map_err(|_| anyhow::anyhow!("write_mtree returned no RepoFile"))?;
    let dict = glib::VariantDict::new(None);
    for (k, v) in req.metadata {
        dict.insert_value(k, &v.to_variant());
    }
    let checksum = repo
        .write_commit_with_time(
            req.parent,
            Some(req.subject),
            None,
            Some(&dict.end()),
            &root,
            req.timestamp,
            gio::Cancellable::NONE,
        )
        .context("writing the commit")?;
    crate::failpoint::hit("compose::commit-written")?;
    repo.transaction_set_ref(None, req.refname, Some(&checksum));
    repo.commit_transaction(gio::Cancellable::NONE)
        .context("committing the OSTree transaction")?;
    Ok(checksum.to_string())
}
