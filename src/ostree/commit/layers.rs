//! Commits of layered composes. The tree is the union of the package commits,
//! computed from their dirtree objects — no file is read, and a directory only
//! one package ships stays a reference to its existing dirtree — plus what the
//! scripts and postprocessing wrote to the overlay's upper directory: files and
//! symlinks written, whiteouts (char device 0:0) removing, opaque directories
//! replacing. A compose that changes one package hashes only what changed.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use ostree::gio;
use ostree::glib;
use ostree::prelude::*;

use super::{CommitRequest, committed_meta, finish_commit};
use crate::ostree::repo::Repo;

/// What the upper directory changed in the union of the packages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    /// Files and symlinks written (new or replacing a package's).
    pub written: usize,
    /// Paths removed (whiteouts and entries under opaque directories).
    pub removed: usize,
}

/// A file, symlink or directory postprocessing copied from `from` to `to`
/// (overlayfs cannot rename a lower directory), straight from a package (the
/// source was not in the upper layer), with the copy's inode and ctime right
/// after copying: while they still match, the commit takes the package's
/// object at `from` — owner, mode and xattrs as the package has them, which the
/// checkout on disk (owned by the caller) does not keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Source path in the tree (absolute).
    pub from: String,
    /// Destination path in the tree (absolute).
    pub to: String,
    /// Inode of the copy.
    pub ino: u64,
    /// ctime of the copy (seconds, nanoseconds).
    pub ctime: (i64, i64),
}

/// What the package union has at a copy's source.
enum Source {
    /// A file or symlink object.
    Object(String),
    /// A directory's dirmeta.
    DirMeta(String),
}

/// Copy destination → the source's object, the copy's inode and ctime.
type Sources = std::collections::HashMap<String, (Source, u64, (i64, i64))>;

/// Resolves each copy's source in the union (before the upper layer changes it), by destination.
fn sources(mtree: &ostree::MutableTree, copied: &[Copied]) -> Result<Sources> {
    let mut out = std::collections::HashMap::new();
    'copies: for c in copied {
        let mut dir = mtree.clone();
        let parts: Vec<&str> = c.from.split('/').filter(|p| !p.is_empty()).collect();
        let Some((last, parents)) = parts.split_last() else {
            continue;
        };
        for p in parents {
            match lookup(&dir, p)? {
                Some(Entry::Dir(d)) => dir = d,
                _ => continue 'copies,
            }
        }
        let source = match lookup(&dir, last)? {
            Some(Entry::File(csum)) => Source::Object(csum),
            Some(Entry::Dir(d)) => Source::DirMeta(d.metadata_checksum().to_string()),
            None => continue,
        };
        out.insert(c.to.clone(), (source, c.ino, c.ctime));
    }
    Ok(out)
}

/// The package object a pristine copy at `path` stands for.
fn pristine<'a>(sources: &'a Sources, path: &str, md: &std::fs::Metadata) -> Option<&'a Source> {
    let (source, ino, ctime) = sources.get(path)?;
    (md.ino() == *ino && (md.ctime(), md.ctime_nsec()) == *ctime).then_some(source)
}

/// Commits the union of `commits` (transaction order: a later package's
/// directory metadata wins, as overlayfs shows the top layer's) with
/// `req.dir`, an overlayfs upper directory, applied on top; moves the ref in
/// the same transaction. Returns the commit checksum.
pub fn commit_layers(
    repo: &Repo,
    commits: &[String],
    copied: &[Copied],
    req: &CommitRequest,
) -> Result<(String, Applied)> {
    commit_layers_hiding(repo, commits, &[], copied, req)
}

/// [`commit_layers`], with the files and symlinks at `hidden` (tree paths
/// without the leading `/`) taken out of the first commit before the others
/// are added: a layering's base less the packages it hides or replaces.
pub fn commit_layers_hiding(
    repo: &Repo,
    commits: &[String],
    hidden: &[String],
    copied: &[Copied],
    req: &CommitRequest,
) -> Result<(String, Applied)> {
    let path = repo.path();
    let repo = repo.raw();
    crate::ostree::repo::in_transaction(repo, || {
        let mtree = ostree::MutableTree::new();
        for (n, commit) in commits.iter().enumerate() {
            if n == 1 {
                hide(&mtree, hidden)?;
            }
            let (root, _) = repo
                .read_commit(commit, gio::Cancellable::NONE)
                .with_context(|| format!("reading package commit {commit}"))?;
            let root = root
                .downcast::<ostree::RepoFile>()
                .map_err(|_| anyhow::anyhow!("read_commit returned no RepoFile"))?;
            root.ensure_resolved()
                .with_context(|| format!("reading package commit {commit}"))?;
            let (Some(contents), Some(meta)) = (root.tree_get_contents_checksum(), root.tree_get_metadata_checksum())
            else {
                bail!("package commit {commit} has no root directory");
            };
            union(repo, &mtree, &contents, &meta, "")
                .with_context(|| format!("adding package commit {commit} to the tree"))?;
        }
        if commits.len() == 1 {
            hide(&mtree, hidden)?;
        }
        let sources = sources(&mtree, copied)?;
        if commits.is_empty() {
            // Nothing below the upper directory: the root's metadata is its own.
            let md = std::fs::symlink_metadata(req.dir).with_context(|| format!("looking at {}", req.dir.display()))?;
            mtree.set_metadata_checksum(&dir_meta(repo, req.dir, &md, "/", None)?);
        }
        let mut applied = Applied::default();
        apply_upper(repo, &mtree, req.dir, "", &sources, &mut applied)?;
        let checksum = finish_commit(repo, &mtree, req)?;
        Ok((checksum, applied))
    })
    .with_context(|| format!("committing {} into the repository {}", req.refname, path.display()))
}

/// Removes the files and symlinks at `paths` from `mt` (absent ones are skipped).
fn hide(mt: &ostree::MutableTree, paths: &[String]) -> Result<()> {
    'paths: for path in paths {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((last, parents)) = parts.split_last() else {
            continue;
        };
        let mut dir = mt.clone();
        for p in parents {
            match lookup(&dir, p)? {
                Some(Entry::Dir(d)) => dir = d,
                _ => continue 'paths,
            }
        }
        if let Some(Entry::File(_)) = lookup(&dir, last)? {
            dir.remove(last, false).with_context(|| format!("hiding /{path}"))?;
        }
    }
    Ok(())
}

enum Entry {
    File(String),
    Dir(ostree::MutableTree),
}

fn lookup(mt: &ostree::MutableTree, name: &str) -> Result<Option<Entry>> {
    match mt.lookup(name) {
        Ok((Some(c), _)) => Ok(Some(Entry::File(c.to_string()))),
        Ok((None, Some(d))) => Ok(Some(Entry::Dir(d))),
        Ok((None, None)) => Ok(None),
        Err(e) if e.matches(gio::IOErrorEnum::NotFound) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("looking up {name}")),
    }
}

/// Adds the dirtree `contents` (with metadata `meta`) to `mt`. An empty `mt`
/// just refers to it (loaded only if something below changes later).
fn union(repo: &ostree::Repo, mt: &ostree::MutableTree, contents: &str, meta: &str, path: &str) -> Result<()> {
    if mt.fill_empty_from_dirtree(repo, contents, meta) {
        return Ok(());
    }
    let v = repo
        .load_variant(ostree::ObjectType::DirTree, contents)
        .with_context(|| format!("loading the dirtree of {}/", display(path)))?;
    let files = v.child_value(0);
    for i in 0..files.n_children() {
        let e = files.child_value(i);
        let name = e.child_value(0).str().unwrap_or_default().to_string();
        let csum = ostree::checksum_from_bytes_v(&e.child_value(1)).to_string();
        match lookup(mt, &name)? {
            None => mt
                .replace_file(&name, &csum)
                .with_context(|| format!("adding {path}/{name}"))?,
            Some(Entry::File(c)) if c == csum => {}
            Some(Entry::File(_)) => bail!("{path}/{name}: packages ship different files at this path"),
            Some(Entry::Dir(_)) => bail!("{path}/{name}: a directory in one package, a file or symlink in another"),
        }
    }
    let dirs = v.child_value(1);
    for i in 0..dirs.n_children() {
        let e = dirs.child_value(i);
        let name = e.child_value(0).str().unwrap_or_default().to_string();
        let sub_contents = ostree::checksum_from_bytes_v(&e.child_value(1)).to_string();
        let sub_meta = ostree::checksum_from_bytes_v(&e.child_value(2)).to_string();
        let sub_path = format!("{path}/{name}");
        let sub = match lookup(mt, &name)? {
            None => mt.ensure_dir(&name).with_context(|| format!("adding {sub_path}"))?,
            Some(Entry::Dir(d)) => d,
            Some(Entry::File(_)) => bail!("{sub_path}: a file or symlink in one package, a directory in another"),
        };
        union(repo, &sub, &sub_contents, &sub_meta, &sub_path)?;
    }
    mt.set_metadata_checksum(meta);
    Ok(())
}

fn display(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

/// Applies the overlayfs upper directory `dir` (tree path `path`) to `mt`.
fn apply_upper(
    repo: &ostree::Repo,
    mt: &ostree::MutableTree,
    dir: &Path,
    path: &str,
    sources: &Sources,
    applied: &mut Applied,
) -> Result<()> {
    for os_name in crate::overlay::sorted_names(dir)? {
        let disk = dir.join(&os_name);
        let Some(name) = os_name.to_str() else {
            bail!(
                "{}: the name is not UTF-8; OSTree trees need UTF-8 names",
                disk.display()
            );
        };
        let tree_path = format!("{path}/{name}");
        let md = std::fs::symlink_metadata(&disk).with_context(|| format!("looking at {}", disk.display()))?;
        let ft = md.file_type();
        let existing = lookup(mt, name)?;
        if crate::overlay::is_whiteout(&md) {
            if existing.is_some() {
                mt.remove(name, false)
                    .with_context(|| format!("removing {tree_path}"))?;
                applied.removed += 1;
            }
            continue;
        }
        if ft.is_dir() {
            let opaque = crate::overlay::is_opaque(&disk)?;
            let (sub, package_meta) = match existing {
                Some(Entry::Dir(d)) if !opaque => {
                    let meta = d.metadata_checksum().to_string();
                    (d, Some(meta))
                }
                Some(_) => {
                    mt.remove(name, false)
                        .with_context(|| format!("replacing {tree_path}"))?;
                    applied.removed += 1;
                    (
                        mt.ensure_dir(name).with_context(|| format!("adding {tree_path}"))?,
                        None,
                    )
                }
                None => (
                    mt.ensure_dir(name).with_context(|| format!("adding {tree_path}"))?,
                    None,
                ),
            };
            let meta = match pristine(sources, &tree_path, &md) {
                Some(Source::DirMeta(m)) => m.clone(),
                _ => dir_meta(repo, &disk, &md, &tree_path, package_meta.as_deref())?,
            };
            sub.set_metadata_checksum(&meta);
            apply_upper(repo, &sub, &disk, &tree_path, sources, applied)?;
            continue;
        }
        if !ft.is_file() && !ft.is_symlink() {
            bail!(
                "{tree_path}: scripts left a {} here; an OSTree tree holds only files, directories and symlinks \
                 (create it at boot with a tmpfiles.d entry)",
                kind(&ft)
            );
        }
        if let Some(Entry::Dir(_)) = existing {
            mt.remove(name, false)
                .with_context(|| format!("replacing {tree_path}"))?;
        }
        if let Some(Source::Object(csum)) = pristine(sources, &tree_path, &md) {
            mt.replace_file(name, csum)
                .with_context(|| format!("adding {tree_path}"))?;
            applied.written += 1;
            continue;
        }
        let (uid, gid, mode) = committed_meta(&tree_path, md.uid(), md.gid(), md.mode());
        let xattrs = xattrs(&disk)?;
        let csum = if ft.is_symlink() {
            let target = std::fs::read_link(&disk).with_context(|| format!("reading the link {}", disk.display()))?;
            let Some(target) = target.to_str() else {
                bail!("{tree_path}: the link target is not UTF-8");
            };
            repo.write_symlink(None, uid, gid, Some(&xattrs), target, gio::Cancellable::NONE)
                .with_context(|| format!("writing {tree_path}"))?
                .to_string()
        } else {
            let info = gio::FileInfo::new();
            info.set_file_type(gio::FileType::Regular);
            info.set_size(md.len() as i64);
            info.set_attribute_uint32("unix::uid", uid);
            info.set_attribute_uint32("unix::gid", gid);
            info.set_attribute_uint32("unix::mode", mode);
            let input = gio::File::for_path(&disk)
                .read(gio::Cancellable::NONE)
                .with_context(|| format!("opening {}", disk.display()))?;
            let (stream, len) =
                ostree::raw_file_to_content_stream(&input, &info, Some(&xattrs), gio::Cancellable::NONE)
                    .with_context(|| format!("reading {}", disk.display()))?;
            repo.write_content(None, &stream, len, gio::Cancellable::NONE)
                .with_context(|| format!("writing {tree_path}"))?
                .to_hex()
        };
        mt.replace_file(name, &csum)
            .with_context(|| format!("adding {tree_path}"))?;
        applied.written += 1;
    }
    Ok(())
}

fn kind(ft: &std::fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else {
        "character device"
    }
}

/// The dirmeta of an upper directory. A directory overlayfs copied up from a
/// package keeps the package's owner (the checkout below is the caller's) and
/// xattrs; only a changed mode is taken from disk.
fn dir_meta(
    repo: &ostree::Repo,
    disk: &Path,
    md: &std::fs::Metadata,
    path: &str,
    package: Option<&str>,
) -> Result<String> {
    let (uid, gid, mode) = committed_meta(path, md.uid(), md.gid(), md.mode());
    let variant = match package {
        Some(csum) => {
            let v = repo
                .load_variant(ostree::ObjectType::DirMeta, csum)
                .with_context(|| format!("loading the metadata of {path}"))?;
            let (puid, pgid, pmode) = (
                u32::from_be(v.child_value(0).get::<u32>().unwrap_or_default()),
                u32::from_be(v.child_value(1).get::<u32>().unwrap_or_default()),
                u32::from_be(v.child_value(2).get::<u32>().unwrap_or_default()),
            );
            if pmode & 0o7777 == mode & 0o7777 && (uid, gid) == (0, 0) {
                return Ok(csum.to_string());
            }
            let (uid, gid) = if (uid, gid) == (0, 0) { (puid, pgid) } else { (uid, gid) };
            dirmeta(uid, gid, mode, v.child_value(3))
        }
        None => dirmeta(uid, gid, mode, xattrs(disk)?),
    };
    let csum = repo
        .write_metadata(ostree::ObjectType::DirMeta, None, &variant, gio::Cancellable::NONE)
        .with_context(|| format!("writing the metadata of {path}"))?;
    Ok(csum.to_hex())
}

/// An OSTree dirmeta object: `(uuua(ayay))`, numbers big-endian.
fn dirmeta(uid: u32, gid: u32, mode: u32, xattrs: glib::Variant) -> glib::Variant {
    let mode = libc::S_IFDIR | (mode & 0o7777);
    glib::Variant::tuple_from_iter([
        uid.to_be().to_variant(),
        gid.to_be().to_variant(),
        mode.to_be().to_variant(),
        xattrs,
    ])
}

/// Extended attributes to commit: all but overlayfs' own and the bare-user
/// repository's `user.ostreemeta` (copied up from the hardlinked object), as
/// `a(ayay)` sorted by name, names NUL-terminated as libostree stores them.
fn xattrs(p: &Path) -> Result<glib::Variant> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let names = xattr_names(p)?;
    for name in names {
        let s = String::from_utf8_lossy(&name);
        if s.starts_with("user.overlay.") || s.starts_with("trusted.overlay.") || s == "user.ostreemeta" {
            continue;
        }
        let value = xattr_value(p, &name)?;
        let mut n = name.clone();
        n.push(0);
        out.push((n, value));
    }
    out.sort();
    Ok(out.to_variant())
}

fn cpath(p: &Path) -> Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .with_context(|| format!("{}: a NUL in the path", p.display()))
}

fn xattr_names(p: &Path) -> Result<Vec<Vec<u8>>> {
    let c = cpath(p)?;
    let mut buf = vec![0u8; 4096];
    loop {
        match rustix::fs::llistxattr(c.as_c_str(), &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                break;
            }
            Err(rustix::io::Errno::RANGE) => buf.resize(buf.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => {
                return Err(std::io::Error::from(e)).with_context(|| format!("listing the xattrs of {}", p.display()));
            }
        }
    }
    Ok(buf
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

fn xattr_value(p: &Path, name: &[u8]) -> Result<Vec<u8>> {
    let c = cpath(p)?;
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(c.as_c_str(), name, &mut buf[..]) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 16, 0),
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("reading xattr {} of {}", String::from_utf8_lossy(name), p.display()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::process::Command;

    use super::*;

    fn ostree(repo: &Path, args: &[&str]) -> String {
        let out = Command::new("ostree")
            .arg(format!("--repo={}", repo.display()))
            .args(args)
            .output()
            .expect("running ostree");
        assert!(
            out.status.success(),
            "ostree {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn set_xattr(p: &Path, name: &str, value: &[u8]) {
        let r = rustix::fs::lsetxattr(
            cpath(p).unwrap().as_c_str(),
            name,
            value,
            rustix::fs::XattrFlags::empty(),
        );
        assert_eq!(r, Ok(()), "setting {name} on {}", p.display());
    }

    /// Two "packages" sharing /usr, and an upper directory that replaces a
    /// file, removes one (whiteout), empties a directory (opaque) and adds one.
    #[test]
    #[ignore = "needs root: a whiteout is a 0:0 character device, which only root can make here"]
    fn the_commit_is_the_union_of_the_packages_plus_the_upper_layer() {
        assert!(nix::unistd::geteuid().is_root(), "needs root (see #[ignore])");
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("repo");
        ostree(&repo, &["init", "--mode=bare-user"]);
        let (a, b, upper) = (t.path().join("a"), t.path().join("b"), t.path().join("upper"));
        write(&a.join("usr/bin/x"), "x from a");
        write(&a.join("etc/conf"), "conf");
        write(&a.join("usr/share/doc/a/README"), "readme");
        write(&b.join("usr/bin/y"), "y from b");
        write(&b.join("usr/bin/x"), "x from a"); // identical: allowed
        let commit = |dir: &Path, branch: &str| {
            let out = ostree(
                &repo,
                &[
                    "commit",
                    "-b",
                    branch,
                    "--owner-uid=0",
                    "--owner-gid=0",
                    &format!("--tree=dir={}", dir.display()),
                ],
            );
            out.trim().to_string()
        };
        let commits = [commit(&a, "a"), commit(&b, "b")];

        write(&upper.join("usr/bin/x"), "x changed by a script");
        write(&upper.join("usr/lib/new"), "new");
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        nix::sys::stat::mknod(
            &upper.join("etc/conf"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        write(&upper.join("usr/share/doc/only"), "the rest is gone");
        set_xattr(&upper.join("usr/share/doc"), "user.overlay.opaque", b"y");
        std::os::unix::fs::symlink("x", upper.join("usr/bin/x-link")).unwrap();

        let metadata = BTreeMap::new();
        let req = CommitRequest {
            dir: &upper,
            refname: "test/tree",
            subject: "test",
            metadata: &metadata,
            timestamp: 0,
            parent: None,
        };
        let (checksum, applied) = commit_layers(&Repo::open(&repo).unwrap(), &commits, &[], &req).unwrap();
        assert_eq!(applied, Applied { written: 4, removed: 2 });
        assert_eq!(ostree(&repo, &["rev-parse", "test/tree"]).trim(), checksum);
        let ls = ostree(&repo, &["ls", "-R", "test/tree"]);
        let paths: Vec<&str> = ls.lines().map(|l| l.split_whitespace().last().unwrap()).collect();
        for p in [
            "/usr/bin/x",
            "/usr/bin/y",
            "/usr/lib/new",
            "/usr/share/doc/only",
            "/etc",
        ] {
            assert!(paths.contains(&p), "{p} missing from\n{ls}");
        }
        for p in ["/etc/conf", "/usr/share/doc/a", "/usr/share/doc/a/README"] {
            assert!(!paths.contains(&p), "{p} should be gone from\n{ls}");
        }
        assert!(ls.contains("/usr/bin/x-link -> x"), "{ls}");
        assert_eq!(
            ostree(&repo, &["cat", "test/tree", "/usr/bin/x"]),
            "x changed by a script"
        );
        assert_eq!(ostree(&repo, &["cat", "test/tree", "/usr/bin/y"]), "y from b");
        ostree(&repo, &["fsck", "--quiet"]);
        // Nothing in the upper layer: the same tree as the packages alone, and deterministic.
        let empty = t.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let req = CommitRequest { dir: &empty, ..req };
        let (one, _) = commit_layers(&Repo::open(&repo).unwrap(), &commits, &[], &req).unwrap();
        let (two, _) = commit_layers(&Repo::open(&repo).unwrap(), &commits, &[], &req).unwrap();
        assert_eq!(one, two);
        let ls = ostree(&repo, &["ls", "-R", &one]);
        assert!(
            ls.contains("/usr/share/doc/a/README") && ls.contains("/etc/conf"),
            "{ls}"
        );
    }

    #[test]
    fn packages_with_different_files_at_one_path_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("repo");
        ostree(&repo, &["init", "--mode=bare-user"]);
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        write(&a.join("usr/bin/x"), "one");
        write(&b.join("usr/bin/x"), "two");
        let commits: Vec<String> = [(&a, "a"), (&b, "b")]
            .iter()
            .map(|(d, br)| {
                ostree(&repo, &["commit", "-b", br, &format!("--tree=dir={}", d.display())])
                    .trim()
                    .to_string()
            })
            .collect();
        let empty = t.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let metadata = BTreeMap::new();
        let req = CommitRequest {
            dir: &empty,
            refname: "test/tree",
            subject: "test",
            metadata: &metadata,
            timestamp: 0,
            parent: None,
        };
        let e = format!(
            "{:#}",
            commit_layers(&Repo::open(&repo).unwrap(), &commits, &[], &req).unwrap_err()
        );
        assert!(e.contains("/usr/bin/x") && e.contains("different files"), "{e}");
        assert!(
            ostree(&repo, &["refs"]).lines().all(|r| r != "test/tree"),
            "a failed commit moves no ref"
        );
    }
}
