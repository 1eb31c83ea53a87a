//! The package cache: each RPM is imported once into an OSTree repository as
//! its own commit, straight from the decompressed payload stream, and found
//! again by a ref derived from its NEVRA and header digest.
//!
//! Safety of the import (see `plan` and `import`): every path is checked and
//! placed beneath the commit's root without resolving symlinks, entries not in
//! the header are refused, header and payload digests are verified before the
//! ref is written, and a failed import leaves the repository's refs unchanged
//! (the transaction is aborted and its staged objects discarded).
//!
//! Choices:
//! - Owners: header user and group names go through [`Users`]; a name that is
//!   not there is an error naming package, path and name. Mapping it to root
//!   instead could turn a setuid file of some service user into a setuid-root one.
//! - Device nodes and FIFOs are not written into the tree (an OSTree commit
//!   cannot hold them); each becomes a `tmpfiles.d` line in the commit metadata
//!   key `arbor.tmpfiles` (numeric owner, `c`/`b`/`p`). Sockets are refused.
//!   The tree's lines are made by the compose from the headers
//!   (`compose::nodes`), with the owners' ids in the assembled tree.
//! - Parallelism: one worker thread per job, each with its own `OstreeRepo`
//!   object and its own transaction (libostree supports one transaction per
//!   repo object; concurrent transactions on separate objects use separate
//!   locked staging directories). Each commit and its ref become visible
//!   together in that worker's `commit_transaction`.

mod accounts;
pub mod checkouts;
mod import;
mod plan;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};

use crate::ostree::repo::Repo;

pub use accounts::users_from_packages;

/// Prefix of every package-cache ref.
pub const REF_PREFIX: &str = "arbor/pkg/";

/// User and group names → ids, for file owners in package headers.
#[derive(Clone, Debug)]
pub struct Users {
    users: HashMap<String, u32>,
    groups: HashMap<String, u32>,
}

impl Users {
    /// Only `root` (uid and gid 0).
    pub fn root_only() -> Users {
        Users {
            users: HashMap::from([("root".to_string(), 0)]),
            groups: HashMap::from([("root".to_string(), 0)]),
        }
    }

    /// From the text of `/etc/passwd` and `/etc/group` (e.g. the target's, from
    /// the `setup` package). `root` is 0 whatever the files say; a file saying
    /// otherwise is an error.
    pub fn from_passwd_group(passwd: &str, group: &str) -> Result<Users> {
        let mut u = Users::root_only();
        parse_id_file(passwd, "passwd", &mut u.users)?;
        parse_id_file(group, "group", &mut u.groups)?;
        Ok(u)
    }

    /// The uid of user `name`.
    pub fn uid(&self, name: &str) -> Option<u32> {
        self.users.get(name).copied()
    }

    /// The gid of group `name`.
    pub fn gid(&self, name: &str) -> Option<u32> {
        self.groups.get(name).copied()
    }
}

/// `name:password:id:...` lines; the id is the third field in both files.
fn parse_id_file(text: &str, what: &str, into: &mut HashMap<String, u32>) -> Result<()> {
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') || line.starts_with(['+', '-']) {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        let (Some(name), Some(id)) = (fields.first(), fields.get(2)) else {
            bail!("{what} line {}: expected name:password:id:..., got {line:?}", n + 1);
        };
        let id: u32 = id
            .parse()
            .with_context(|| format!("{what} line {}: id {id:?} is not a number", n + 1))?;
        if name.is_empty() {
            bail!("{what} line {}: empty name", n + 1);
        }
        if *name == "root" && id != 0 {
            bail!("{what} line {}: root has id {id}; root is always 0", n + 1);
        }
        into.entry(name.to_string()).or_insert(id);
    }
    Ok(())
}

/// One package in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// `name-[epoch:]version-release.arch`
    pub nevra: String,
    /// `arbor/pkg/<escaped NEVRA>/<first 16 hex digits of the header SHA-256>`
    pub refname: String,
    /// The package's commit.
    pub commit: String,
    /// Whether this call imported it (false: it was cached already).
    pub imported_now: bool,
}

/// The cache ref of a package: NEVRA escaped for OSTree's ref syntax, then the
/// first 16 hex digits of the header SHA-256 (a rebuilt package with the same
/// NEVRA gets a different ref).
pub fn refname(nevra: &str, header_sha256: &str) -> String {
    let short = header_sha256.get(..16).unwrap_or(header_sha256);
    format!("{REF_PREFIX}{}/{short}", escape_ref_component(nevra))
}

/// OSTree ref components are `[A-Za-z0-9_][-._A-Za-z0-9]*`; every other byte
/// (and `_` itself, so the escape can be undone) becomes `_XX`.
fn escape_ref_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for (i, b) in s.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || (i > 0 && (b == b'.' || b == b'-'));
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// Imports every package not already cached into `repo_path` (an OSTree repo;
/// created in bare-user mode if missing), `jobs` at once, and returns one entry
/// per package in input order. A cached package is found by its ref, from the
/// header alone. On failure the first error (in input order) is returned;
/// packages imported before it stay cached, and a failed package writes no ref.
pub fn import_all(repo_path: &Path, rpms: &[PathBuf], users: &Users, jobs: usize) -> Result<Vec<Imported>> {
    Repo::open_or_create_bare_user(repo_path)?;
    // Counted only for the message: the first error is the one returned.
    let errors = AtomicUsize::new(0);
    let imported = crate::parallel::map_bounded_with(
        rpms,
        jobs,
        || Repo::open(repo_path),
        |repo, rpm| {
            let r = import::import_or_find(repo, rpm, users)
                .with_context(|| format!("importing {} into {}", rpm.display(), repo_path.display()));
            if r.is_err() {
                errors.fetch_add(1, Ordering::SeqCst);
            }
            r
        },
    );
    match errors.into_inner() {
        n if n > 1 => imported.map_err(|e| e.context(format!("{n} packages failed to import; the first one"))),
        _ => imported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_escape_what_ostree_refuses() {
        let r = refname("bash-5.2.15-2+b13.aarch64", "0123456789abcdef0123");
        assert_eq!(r, "arbor/pkg/bash-5.2.15-2_2Bb13.aarch64/0123456789abcdef");
        assert_eq!(escape_ref_component("a_b:1~2^3"), "a_5Fb_3A1_7E2_5E3");
        assert_eq!(escape_ref_component(".x-y"), "_2Ex-y");
    }

    #[test]
    fn users_from_files() -> Result<()> {
        let u = Users::from_passwd_group(
            "root:x:0:0:root:/root:/bin/bash\n# comment\nbin:x:1:1::/:/sbin/nologin\n",
            "root:x:0:\nwheel:x:10:alice\n",
        )?;
        assert_eq!((u.uid("root"), u.uid("bin"), u.uid("nobody")), (Some(0), Some(1), None));
        assert_eq!((u.gid("root"), u.gid("wheel")), (Some(0), Some(10)));
        assert!(Users::from_passwd_group("root:x:5:5::/:/bin/sh\n", "").is_err());
        assert!(Users::from_passwd_group("broken\n", "").is_err());
        Ok(())
    }
}
