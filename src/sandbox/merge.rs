//! Folding an overlayfs upper directory back into the tree.
//!
//! The tree is a hardlink checkout of the package cache; scripts wrote only to
//! the upper directory (overlayfs copies a file up before the first write), so
//! the cache is never touched. Merging replaces tree entries by *renaming*
//! upper entries over them — never writing through an existing inode — and
//! applies whiteouts (char device 0:0) and opaque directories
//! (`user.overlay.opaque`). Unchanged files keep their inodes, so the commit's
//! devino cache still knows their checksums.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

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

/// The names in `dir`, sorted (upper directories are applied in this order).
pub fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    names.sort();
    Ok(names)
}

fn merge_dir(upper: &Path, tree: &Path, rel: &str, changes: &mut Changes) -> Result<()> {
    for name in sorted_names(upper)? {
        let (u, t) = (upper.join(&name), tree.join(&name));
        let path = format!("{rel}/{}", name.to_string_lossy());
        let md = std::fs::symlink_metadata(&u).with_context(|| format!("looking at {}", u.display()))?;
        let ft = md.file_type();
        if ft.is_char_device() && md.rdev() == 0 {
            if remove(&t)? {
                changes.removed.push(path);
            }
        } else if ft.is_dir() {
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

/// Whether overlayfs (mounted with `userxattr`) marked the upper directory `dir` opaque.
pub fn is_opaque(dir: &Path) -> Result<bool> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).context("a path with a NUL byte")?;
    let mut v = [0u8; 4];
    // SAFETY: valid NUL-terminated strings and a buffer of the given size.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"user.overlay.opaque".as_ptr(),
            v.as_mut_ptr().cast(),
            v.len(),
        )
    };
    Ok(n == 1 && v[0] == b'y')
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
