//! From an RPM header to a validated plan of what goes into a package commit.
//! Everything here is decided from the header alone, before a byte of the
//! payload is read: paths, owners, modes, capabilities, hardlink sets, and
//! what is not written (ghosts, device nodes, FIFOs).

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow, bail};
use rpm::{DigestAlgorithm, FileFlags, FileType, IndexTag};

use super::Users;
use crate::ostree::repo::FileMeta;
use crate::rpm::blob::{self, Blob, tag, ty};
use crate::rpm::{caps, files};

/// Longest path and symlink target arbor accepts (Linux `PATH_MAX` minus the NUL).
const PATH_MAX: usize = 4095;
/// Longest path component (Linux `NAME_MAX`).
const NAME_MAX: usize = 255;

/// What to do with one header file entry.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Absolute, normalized path (`/usr/bin/bash`; `/` for the root).
    pub path: String,
    /// How it is written.
    pub kind: Kind,
    /// Owner, mode and xattrs of the object in the tree.
    pub meta: FileMeta,
}

/// The kinds of entry, as far as the tree is concerned.
#[derive(Debug)]
pub(crate) enum Kind {
    /// A directory (dirmeta).
    Dir,
    /// A regular file: `size` bytes come from the payload, unless the entry is a
    /// hardlink member whose bytes travel with another member of its set.
    Regular {
        size: u64,
        digest: Option<(DigestAlgorithm, String)>,
        /// Index into [`Plan::hardlinks`].
        hardlink_set: Option<usize>,
    },
    /// A symlink with this target.
    Symlink { target: String },
    /// A device node or FIFO: a `tmpfiles.d` line, not part of the tree.
    Special,
    /// A `%ghost`: owned by the package but not shipped.
    Ghost { dir: bool },
}

/// The validated file list of one package.
#[derive(Debug)]
pub(crate) struct Plan {
    /// One per header file entry, in header order.
    pub entries: Vec<Entry>,
    /// Path → index into `entries`.
    pub index: HashMap<String, usize>,
    /// Header indexes of each hardlink set (entries sharing device and inode).
    pub hardlinks: Vec<Vec<usize>>,
    /// `%ghost` paths.
    pub ghosts: Vec<String>,
    /// `%config` paths.
    pub config: Vec<String>,
    /// `tmpfiles.d` lines creating the package's device nodes and FIFOs.
    pub tmpfiles: Vec<String>,
}

/// Validates the header's file list. Errors name the offending path.
pub(crate) fn build(metadata: &rpm::PackageMetadata, header_bytes: &[u8], users: &Users) -> Result<Plan> {
    // Paths are checked on the raw header bytes first, so a name that is not
    // UTF-8 is reported as it is rather than as a decoding failure of the list.
    let raw = raw_paths(header_bytes).context("reading the file list from the header")?;
    let mut paths = Vec::with_capacity(raw.len());
    for (dir, base) in &raw {
        paths.push(check_path(dir, base)?);
    }
    let files = metadata
        .get_file_entries()
        .context("reading the file list from the header")?;
    if files.len() != paths.len() {
        bail!(
            "the header lists {} file names but {} file entries",
            paths.len(),
            files.len()
        );
    }

    let mut plan = Plan {
        entries: Vec::with_capacity(files.len()),
        index: HashMap::with_capacity(files.len()),
        hardlinks: Vec::new(),
        ghosts: Vec::new(),
        config: Vec::new(),
        tmpfiles: Vec::new(),
    };
    for (i, (f, path)) in files.iter().zip(paths).enumerate() {
        if format!("{}{}", f.dirname(), f.basename()) != path && path != "/" {
            bail!("{path}: the rpm crate reads this entry as {:?}", f.path());
        }
        if plan.index.insert(path.clone(), i).is_some() {
            bail!("{path}: listed twice in the header");
        }
        let entry = plan_entry(f, &path, users, &mut plan).with_context(|| path.clone())?;
        plan.entries.push(entry);
    }
    plan.hardlinks = hardlink_sets(metadata, &mut plan.entries)?;
    check_parents(&plan)?;
    Ok(plan)
}

fn plan_entry(f: &rpm::FileEntry<'_>, path: &str, users: &Users, plan: &mut Plan) -> Result<Entry> {
    let flags = f.flags();
    if flags.contains(FileFlags::CONFIG) {
        plan.config.push(path.to_string());
    }
    let ftype = f.file_type();
    let link = f.linkto().filter(|l| !l.is_empty());
    if flags.contains(FileFlags::GHOST) {
        plan.ghosts.push(path.to_string());
        // Not in the tree, so owner and mode do not matter here.
        let meta = FileMeta::root_dir(0);
        return Ok(Entry {
            path: path.to_string(),
            kind: Kind::Ghost {
                dir: ftype == FileType::Dir,
            },
            meta,
        });
    }
    if path == "/" && ftype != FileType::Dir {
        bail!("the root must be a directory");
    }
    if let (Some(l), false) = (link, ftype == FileType::SymbolicLink) {
        bail!(
            "a {} with a link target ({l:?}): links to other paths are not allowed; hardlinks are entries sharing an inode",
            type_name(ftype)
        );
    }
    // An owner the packages' /etc/passwd and /etc/group do not name is one a
    // sysusers.d file or a script creates (rpm >= 4.19 creates them before
    // laying files down): root here, and the real owner is applied in the
    // assembled tree once the users exist (`compose::owners::apply`).
    // Until then such a file grants nothing: no setuid/setgid bits and no
    // capabilities, so the cache never holds a setuid-root stand-in.
    let (uid, gid) = (users.uid(f.user()), users.gid(f.group()));
    let known = uid.is_some() && gid.is_some();
    let mut mode = u32::from(f.mode().raw_mode());
    if !known {
        mode &= !0o6000;
    }
    let mut meta = FileMeta {
        uid: uid.unwrap_or(0),
        gid: gid.unwrap_or(0),
        mode,
        xattrs: Vec::new(),
    };
    if let Some(text) = f.caps().filter(|c| !c.is_empty() && known) {
        if ftype != FileType::Regular {
            bail!("file capabilities on a {}", type_name(ftype));
        }
        if let Some(value) = caps::to_xattr(text)? {
            meta.xattrs.push((caps::XATTR_NAME.to_vec(), value));
        }
    }
    let kind = match ftype {
        FileType::Dir => Kind::Dir,
        FileType::Regular => Kind::Regular {
            size: f.size() as u64,
            digest: f
                .digest()
                .filter(|d| !d.as_hex().is_empty())
                .map(|d| (d.algorithm(), d.as_hex().to_ascii_lowercase())),
            hardlink_set: None,
        },
        FileType::SymbolicLink => {
            let target = link.ok_or_else(|| anyhow!("symlink without a target"))?;
            if target.len() > PATH_MAX {
                bail!("symlink target is {} bytes long", target.len());
            }
            Kind::Symlink {
                target: target.to_string(),
            }
        }
        FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
            let node = crate::rpm::header::Node::from_entry(f).ok_or_else(|| anyhow!("not a device node or FIFO"))?;
            plan.tmpfiles.extend(node.tmpfiles_line(path, meta.uid, meta.gid));
            Kind::Special
        }
        FileType::Socket => bail!("sockets cannot be shipped in a package"),
        _ => bail!("unknown file type in mode {:o}", f.mode().raw_mode()),
    };
    Ok(Entry {
        path: path.to_string(),
        kind,
        meta,
    })
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::Regular => "regular file",
        FileType::Dir => "directory",
        FileType::SymbolicLink => "symlink",
        FileType::Fifo => "FIFO",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Socket => "socket",
        _ => "file of unknown type",
    }
}

/// Regular, non-ghost entries sharing device and inode form a set, as rpm
/// groups them (a stripped payload holds a set's bytes once, by that rule);
/// all names get the same content object, so they must agree on everything it
/// holds.
fn hardlink_sets(metadata: &rpm::PackageMetadata, entries: &mut [Entry]) -> Result<Vec<Vec<usize>>> {
    let inodes = metadata
        .header
        .get_entry_data_as_u32_array(IndexTag::RPMTAG_FILEINODES)
        .unwrap_or_default();
    let devices = metadata
        .header
        .get_entry_data_as_u32_array(IndexTag::RPMTAG_FILEDEVICES)
        .unwrap_or_default();
    let sets = files::hardlink_sets(entries.len(), &inodes, &devices, |i| {
        matches!(entries[i].kind, Kind::Regular { .. })
    });
    for (n, set) in sets.iter().enumerate() {
        let first = &entries[set[0]];
        for &i in &set[1..] {
            let e = &entries[i];
            let same_content = match (&first.kind, &e.kind) {
                (
                    Kind::Regular {
                        size: a, digest: da, ..
                    },
                    Kind::Regular {
                        size: b, digest: db, ..
                    },
                ) => a == b && da == db,
                _ => false,
            };
            if e.meta != first.meta || !same_content {
                bail!(
                    "{} and {} share an inode (a hardlink set) but differ in owner, mode, capabilities or content",
                    first.path,
                    e.path
                );
            }
        }
        for &i in set {
            if let Kind::Regular { hardlink_set, .. } = &mut entries[i].kind {
                *hardlink_set = Some(n);
            }
        }
    }
    Ok(sets)
}

/// No entry may sit beneath another entry of the package that is not a
/// directory: in particular, paths are never resolved through a symlink.
fn check_parents(plan: &Plan) -> Result<()> {
    for e in &plan.entries {
        let mut at = 0;
        while let Some(pos) = e.path[at + 1..].find('/') {
            let parent = &e.path[..at + 1 + pos];
            at += 1 + pos;
            let Some(&j) = plan.index.get(parent) else { continue };
            match &plan.entries[j].kind {
                Kind::Dir | Kind::Ghost { dir: true } => {}
                Kind::Symlink { target } => bail!(
                    "{}: its parent {parent} is a symlink to {target:?} in this package; paths are never resolved through symlinks",
                    e.path
                ),
                _ => bail!("{}: its parent {parent} is not a directory in this package", e.path),
            }
        }
    }
    Ok(())
}

/// A header path split as rpm stores it (`dirname` ends in `/`), checked:
/// UTF-8, absolute, no empty, `.` or `..` components, within Linux limits.
fn check_path(dir: &[u8], base: &[u8]) -> Result<String> {
    let mut joined = dir.to_vec();
    joined.extend_from_slice(base);
    let shown = show_bytes(&joined);
    let Ok(dir) = std::str::from_utf8(dir) else {
        bail!("{shown}: the file name is not valid UTF-8");
    };
    let Ok(base) = std::str::from_utf8(base) else {
        bail!("{shown}: the file name is not valid UTF-8");
    };
    if dir == "/" && base.is_empty() {
        return Ok("/".to_string());
    }
    if !dir.starts_with('/') || !dir.ends_with('/') {
        bail!("{shown}: the directory part {dir:?} is not an absolute directory path");
    }
    if base.contains('/') {
        bail!("{shown}: the base name {base:?} contains a slash");
    }
    let path = format!("{dir}{base}");
    if path.len() > PATH_MAX {
        bail!("{shown}: the path is {} bytes long", path.len());
    }
    for c in path[1..].split('/') {
        match c {
            "" => bail!("{shown}: empty path component"),
            "." | ".." => bail!("{shown}: path component {c:?} is not allowed"),
            c if c.len() > NAME_MAX => bail!("{shown}: a path component is {} bytes long", c.len()),
            c if c.contains('\0') => bail!("{shown}: the name contains a NUL byte"),
            _ => {}
        }
    }
    Ok(path)
}

/// A file name for an error message: as is when it is printable UTF-8, else
/// with escapes (`\xff`, `\x00`).
pub(crate) fn show_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        _ => format!("\"{}\"", b.escape_ascii()),
    }
}

/// `(dirname, basename)` of every file entry, from the serialized header
/// (with its magic, as the package file holds it).
fn raw_paths(header: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    if header.get(..3) != Some(&blob::HEADER_MAGIC[..3]) {
        bail!("the header has no header magic");
    }
    let blob = Blob::parse(header.get(8..).unwrap_or_default().to_vec())?;
    let typed = |t: u32, want: u32| -> Result<Option<blob::Entry>> {
        match blob.find(t) {
            Some(e) if e.ty != want => bail!("header tag {t} has type {}", e.ty),
            e => Ok(e),
        }
    };
    let dirindexes = typed(tag::DIRINDEXES, ty::INT32)?;
    let basenames = typed(tag::BASENAMES, ty::STRING_ARRAY)?;
    let dirnames = typed(tag::DIRNAMES, ty::STRING_ARRAY)?;
    let Some(basenames) = basenames else {
        return Ok(Vec::new());
    };
    let (Some(dirindexes), Some(dirnames)) = (dirindexes, dirnames) else {
        bail!("the header has base names but no directory names");
    };
    let (basenames, dirindexes, dirnames) = (
        blob.strings(&basenames),
        blob.numbers(&dirindexes),
        blob.strings(&dirnames),
    );
    if dirindexes.len() != basenames.len() {
        bail!(
            "the header has {} base names but {} directory indexes",
            basenames.len(),
            dirindexes.len()
        );
    }
    basenames
        .into_iter()
        .zip(dirindexes)
        .map(|(base, d)| {
            let dir = usize::try_from(d)
                .ok()
                .and_then(|d| dirnames.get(d))
                .ok_or_else(|| anyhow!("{}: directory index {d} is out of range", show_bytes(base)))?;
            Ok((dir.to_vec(), base.to_vec()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let ok = [
            ("/usr/bin/", "bash", "/usr/bin/bash"),
            ("/", "", "/"),
            ("/", "etc", "/etc"),
        ];
        for (d, b, want) in ok {
            assert_eq!(check_path(d.as_bytes(), b.as_bytes()).ok().as_deref(), Some(want));
        }
        let bad: [(&[u8], &[u8], &str); 8] = [
            (b"/usr/../etc/", b"passwd", "\"..\""),
            (b"/usr/./etc/", b"passwd", "\".\""),
            (b"usr/bin/", b"x", "not an absolute"),
            (b"/usr/bin/", b"/etc/passwd", "contains a slash"),
            (b"/usr//bin/", b"x", "empty path component"),
            (b"/usr/bin/", b"..", "\"..\""),
            (b"/usr/bin/", b"ev\xffil", "not valid UTF-8"),
            (b"/usr/bin", b"x", "not an absolute"),
        ];
        for (d, b, want) in bad {
            let e = check_path(d, b).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(want), "{d:?} {b:?}: {e}");
        }
        let e = check_path(b"/usr/bin/", b"ev\xffil").err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().starts_with("\"/usr/bin/ev\\xffil\""));
    }
}
