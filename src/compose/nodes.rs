//! Device nodes and FIFOs the packages ship. An OSTree commit cannot hold
//! them (the package import leaves them out), so each becomes a tmpfiles.d
//! line that creates it at boot with the header's mode and device number and
//! its owner's ids in the tree, and the compose names every one. One beneath
//! a directory that is read-only on the booted system gets no line, and the
//! compose says so.

use anyhow::{Context, Result};
use cap_std::fs::Dir;

use crate::rpm::header::{FileKind, HeaderInfo};
use crate::treefile::OptUsrlocal;

/// One device node or FIFO of a package, and what becomes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The package's NEVRA.
    pub package: String,
    /// Its path.
    pub path: String,
    /// "character device 1:3", "FIFO", ...
    pub what: String,
    /// What the tree does about it.
    pub outcome: Outcome,
}

/// What the tree does about a device node or FIFO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// systemd-tmpfiles creates it at boot with this line.
    AtBoot(String),
    /// It cannot exist on the booted system, for this reason.
    Missing(String),
}

impl Note {
    /// The tmpfiles.d line, if it gets one.
    pub fn line(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::AtBoot(l) => Some(l),
            Outcome::Missing(_) => None,
        }
    }
}

/// The device nodes and FIFOs of `headers` (not `%ghost`s, which rpm does not
/// create either), in package and header order. Owners are resolved through
/// the tree's /etc/passwd and /etc/group as they are after the scripts;
/// `opt_moved` are the `/opt/X` entries moved to `/usr/lib/opt/X`.
pub fn plan(root: &Dir, headers: &[HeaderInfo], opt_usrlocal: OptUsrlocal, opt_moved: &[String]) -> Result<Vec<Note>> {
    let nodes: Vec<_> = headers
        .iter()
        .flat_map(|h| h.files.iter().map(move |f| (h, f)))
        .filter_map(|(h, f)| match &f.kind {
            FileKind::Special(node) if !f.ghost => Some((h, f, node)),
            _ => None,
        })
        .collect();
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let users = super::owners::tree_users(root)?;
    let mut out = Vec::new();
    for (h, f, node) in nodes {
        let outcome = match read_only(&f.path, opt_usrlocal, opt_moved) {
            Some(why) => Outcome::Missing(why),
            None => {
                // Unknown owners were refused already (`owners::apply`); this is a backstop.
                let uid = users
                    .uid(&f.user)
                    .with_context(|| format!("{}: {}: owner {:?} is not in the tree", h.nevra, f.path, f.user))?;
                let gid = users
                    .gid(&f.group)
                    .with_context(|| format!("{}: {}: group {:?} is not in the tree", h.nevra, f.path, f.group))?;
                match node.tmpfiles_line(&f.path, uid, gid) {
                    Some(line) => Outcome::AtBoot(line),
                    None => Outcome::Missing("tmpfiles.d cannot create a socket".into()),
                }
            }
        };
        out.push(Note {
            package: h.nevra.clone(),
            path: f.path.clone(),
            what: node.describe(),
            outcome,
        });
    }
    Ok(out)
}

/// Why nothing can be created at `path` on the booted system, if nothing can:
/// OSTree mounts /usr read-only (and /bin, /sbin, /lib are links into it).
fn read_only(path: &str, opt_usrlocal: OptUsrlocal, opt_moved: &[String]) -> Option<String> {
    let under = |dir: &str| {
        path.strip_prefix(dir)
            .is_some_and(|r| r.is_empty() || r.starts_with('/'))
    };
    if let Some(x) = opt_moved.iter().find(|x| under(x)) {
        return Some(format!(
            "{x} is a link to /usr/lib{x}, which is read-only on the booted system"
        ));
    }
    if under("/usr/local") && opt_usrlocal == OptUsrlocal::Var {
        return None;
    }
    ["/usr", "/bin", "/sbin", "/lib", "/lib64"]
        .into_iter()
        .find(|d| under(d))
        .map(|d| match d {
            "/usr" => "/usr is read-only on the booted system".to_string(),
            d => format!("{d} is a link into /usr, which is read-only on the booted system"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_beneath_usr_cannot_be_created_at_boot() {
        let moved = ["/opt/vendor".to_string()];
        let cases = [
            ("/dev/null", OptUsrlocal::Var, false),
            ("/run/x.fifo", OptUsrlocal::Var, false),
            ("/var/lib/x/fifo", OptUsrlocal::Var, false),
            ("/etc/x", OptUsrlocal::Var, false),
            ("/usr/lib/x/fifo", OptUsrlocal::Var, true),
            ("/usrx/fifo", OptUsrlocal::Var, false),
            ("/lib/udev/x", OptUsrlocal::Var, true),
            ("/usr/local/x", OptUsrlocal::Var, false),
            ("/usr/local/x", OptUsrlocal::Root, true),
            ("/opt/vendor/fifo", OptUsrlocal::Var, true),
            ("/opt/vendor2/fifo", OptUsrlocal::Var, false),
        ];
        for (path, mode, want) in cases {
            assert_eq!(read_only(path, mode, &moved).is_some(), want, "{path} {mode:?}");
        }
    }
}
