//! Folding an overlayfs upper directory back into the tree.
//!
//! The tree is a hardlink checkout of the package cache; scripts wrote only to
//! the upper directory (overlayfs copies a file up before the first write), so
//! the cache is never touched. Merging replaces tree entries by *renaming*
//! upper entries over them — never writing through an existing inode — and
//! applies whiteouts (char device 0:0) and opaque directories
//! (`user.overlay.opaque`). Unchanged files keep their inodes, so the commit's
//! devino cache still knows their checksums.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

use crate::overlay::{is_opaque, is_whiteout, sorted_names};

/// What scripts changed in the tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Changes {
    /// Paths written or created (files, symlinks, directories whose metadata changed).
    pub written: Vec<String>,
    /// Paths removed.
    pub removed: Vec<String>,
}

/// Moves everything in `upper` into `tree`.
pub fn merge(upper: &Path, tree: &Path) -> Result<Changes> {
    let mut changes = Changes::default();
    merge_dir(upper, tree, "", &mut changes)?;
    Ok(changes)
}

fn merge_dir(upper: &Path, tree: &Path, rel: &str, changes: &mut Changes) -> Result<()> {
    for name in sorted_names(upper)? {
        let (u, t) = (upper.join(&name), tree.join(&name));
        let path = format!("{rel}/{}", name.to_string_lossy());
        let md = std::fs::symlink_metadata(&u).with_context(|| format!("looking at {}", u.display()))?;
        if is_whiteout(&md) {
            if remove(&t)? {
                changes.removed.push(path);
            }
        } else if md.is_dir() {
            let existing = std::fs::symlink_metadata(&t).ok();
            match existing {
                Some(m) if m.is_dir() => {
                    if is_opaque(&u)? {
                        for e in std::fs::read_dir(&t).with_context(|| format!("reading {}", t.display()))? {
                            let e = e.with_context(|| format!("reading {}", t.display()))?;
                            remove(&e.path())?;
                            changes
                                .removed
                                .push(format!("{path}/{}", e.file_name().to_string_lossy()));
                        }
                    }
                }
                Some(_) => {
                    remove(&t)?;
                    std::fs::create_dir(&t).with_context(|| format!("creating {}", t.display()))?;
                }
                None => std::fs::create_dir(&t).with_context(|| format!("creating {}", t.display()))?,
            }
            std::fs::set_permissions(&t, std::fs::Permissions::from_mode(md.mode() & 0o7777))
                .with_context(|| format!("setting the mode of {}", t.display()))?;
            std::os::unix::fs::lchown(&t, Some(md.uid()), Some(md.gid()))
                .with_context(|| format!("setting the owner of {}", t.display()))?;
            changes.written.push(path.clone());
            merge_dir(&u, &t, &path, changes)?;
        } else {
            remove(&t)?;
            std::fs::rename(&u, &t).with_context(|| format!("moving {} to {}", u.display(), t.display()))?;
            changes.written.push(path);
        }
    }
    Ok(())
}

/// Removes whatever is at `p` (a directory with its contents); false if nothing was.
fn remove(p: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?,
        Ok(_) => std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("looking at {}", p.display())),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_entries_replace_tree_entries_by_rename() {
        let t = tempfile::tempdir().unwrap();
        let (upper, tree) = (t.path().join("upper"), t.path().join("tree"));
        std::fs::create_dir_all(tree.join("etc/sub")).unwrap();
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        // A tree file hardlinked to a "cache" object must keep the object's content.
        std::fs::write(t.path().join("object"), b"cached").unwrap();
        std::fs::hard_link(t.path().join("object"), tree.join("etc/passwd")).unwrap();
        std::fs::write(upper.join("etc/passwd"), b"changed").unwrap();
        std::fs::write(tree.join("etc/sub/x"), b"x").unwrap();
        std::fs::write(upper.join("etc/new"), b"new").unwrap();
        std::os::unix::fs::symlink("passwd", upper.join("etc/link")).unwrap();
        // A file replacing a directory.
        std::fs::write(upper.join("etc/sub"), b"now a file").unwrap();
        let c = merge(&upper, &tree).unwrap();
        assert_eq!(std::fs::read(tree.join("etc/passwd")).unwrap(), b"changed");
        assert_eq!(std::fs::read(t.path().join("object")).unwrap(), b"cached");
        assert_eq!(std::fs::read(tree.join("etc/new")).unwrap(), b"new");
        assert_eq!(std::fs::read_link(tree.join("etc/link")).unwrap(), Path::new("passwd"));
        assert_eq!(std::fs::read(tree.join("etc/sub")).unwrap(), b"now a file");
        assert_eq!(
            c.written,
            vec!["/etc", "/etc/link", "/etc/new", "/etc/passwd", "/etc/sub"]
        );
        assert!(c.removed.is_empty());
    }
}
