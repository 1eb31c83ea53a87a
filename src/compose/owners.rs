//! File owners by name, applied in the assembled tree once every user and
//! group exists: rpm ≥ 4.19 creates the users and groups a package's
//! sysusers.d declares (`Provides: user(jane)`) before laying down its files,
//! and Fedora packages rely on it (files in group `ssh_keys`). The package
//! import maps owners through the packages' own /etc/passwd and /etc/group and
//! leaves root for a name they lack; here, after the scripts and sysusers.d
//! ran, every such file gets the ids the tree's /etc/passwd and /etc/group
//! now give (rpm-ostree does the same after assembly, in
//! `apply_rpmfi_overrides`).

use anyhow::{Context, Result, bail};
use cap_std::fs::{Dir, MetadataExt};

use crate::pkgcache::Users;
use crate::rpm::header::HeaderInfo;

/// The capability xattr, which the kernel removes on a change of owner.
const CAPS: &str = "security.capability";

/// Gives each file of `headers` whose owner the import's accounts
/// (`imported`) lacked its header owner in the tree at `root` (its `/etc` the
/// scripts' view), through the tree's /etc/passwd and /etc/group; the number
/// of files changed. An owner neither file names is an error listing every
/// such file. Files a script removed or replaced by another type are left
/// alone. Owners the import knew are already right in the package commits
/// (and a compose without root could not chown them anyway).
pub fn apply(root: &Dir, headers: &[HeaderInfo], imported: &Users) -> Result<usize> {
    let known = |f: &crate::rpm::header::FileInfo| imported.uid(&f.user).is_some() && imported.gid(&f.group).is_some();
    let wanted: Vec<(&HeaderInfo, &crate::rpm::header::FileInfo)> = headers
        .iter()
        .flat_map(|h| h.files.iter().filter(|f| !f.ghost && !known(f)).map(move |f| (h, f)))
        .collect();
    if wanted.is_empty() {
        return Ok(0);
    }
    let users = tree_users(root)?;
    let mut unknown = Vec::new();
    let mut changed = 0;
    for (h, f) in wanted {
        let (Some(uid), Some(gid)) = (users.uid(&f.user), users.gid(&f.group)) else {
            unknown.push(format!("{}: {} ({}:{})", h.nevra, f.path, f.user, f.group));
            continue;
        };
        let caps = match &f.caps {
            Some(text) => {
                crate::rpm::caps::to_xattr(text).with_context(|| format!("{}: %caps of {}", h.nevra, f.path))?
            }
            None => None,
        };
        if set_owner(root, &f.path, uid, gid, f.perms, caps.as_deref())
            .with_context(|| format!("{}: owner of {}", h.nevra, f.path))?
        {
            changed += 1;
        }
    }
    if !unknown.is_empty() {
        bail!(
            "file owners that are neither in the tree's /etc/passwd and /etc/group nor created by a \
             sysusers.d file or script of the packages:\n  - {}",
            unknown.join("\n  - ")
        );
    }
    Ok(changed)
}

/// The tree's users and groups now (root only when it has no account files).
pub(crate) fn tree_users(root: &Dir) -> Result<Users> {
    let read = |p: &str| -> Result<Option<String>> {
        match root.read_to_string(p) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading /{p} of the tree")),
        }
    };
    match (read("etc/passwd")?, read("etc/group")?) {
        (Some(p), Some(g)) => Users::from_passwd_group(&p, &g).context("the tree's /etc/passwd and /etc/group"),
        _ => Ok(Users::root_only()),
    }
}

/// Sets `path`'s owner (not following a final symlink; parents resolved inside
/// the tree) and gives it back the header's `perms` (with setuid/setgid, which
/// a change of owner clears and the package checkouts do not carry) and the
/// header's capability xattr `caps`; false when it already had that owner.
fn set_owner(root: &Dir, path: &str, uid: u32, gid: u32, perms: u16, caps: Option<&[u8]>) -> Result<bool> {
    let rel = path.trim_start_matches('/');
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, rel),
    };
    if name.is_empty() || name == ".." {
        return Ok(false);
    }
    let dir = match parent {
        Some(p) => match root.open_dir(p) {
            Ok(d) => d,
            // Removed (or made a non-directory) by a script: nothing to own.
            Err(_) => return Ok(false),
        },
        None => root.try_clone().context("reopening the tree")?,
    };
    let Ok(md) = dir.symlink_metadata(name) else {
        return Ok(false);
    };
    if md.uid() == uid && md.gid() == gid {
        return Ok(false);
    }
    nix::unistd::fchownat(
        &dir,
        name,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .context("changing the owner")?;
    if let Some(value) = caps.filter(|_| md.is_file()) {
        let f = dir.open(name).context("opening it")?;
        rustix::fs::fsetxattr(&f, CAPS, value, rustix::fs::XattrFlags::empty())
            .context("restoring its capabilities")?;
    }
    if !md.is_symlink() {
        // Last, all 12 bits (std's permissions would drop setuid/setgid).
        rustix::fs::chmodat(
            &dir,
            name,
            rustix::fs::Mode::from_raw_mode(u32::from(perms & 0o7777)),
            rustix::fs::AtFlags::empty(),
        )
        .context("restoring the mode")?;
    }
    Ok(true)
}
