//! What compose needs from each package's header, read without the payload:
//! the file list (for conflicts and remove-from-packages), scriptlets and
//! triggers (which need the sandbox), and the build time.

use std::path::Path;

use anyhow::{Context, Result};

/// One file entry from the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Absolute path.
    pub path: String,
    /// What it is, with the content identity for conflict checks.
    pub kind: FileKind,
    /// `%ghost`: listed but not in the payload.
    pub ghost: bool,
    /// `%config`.
    pub config: bool,
    /// Owner user name, as the header has it.
    pub user: String,
    /// Owner group name.
    pub group: String,
    /// Permission bits with setuid, setgid and sticky.
    pub perms: u16,
    /// `%caps` text, when set.
    pub caps: Option<String>,
}

/// File type and the identity two packages must share to own the same path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// A directory (any number of packages may own it).
    Dir,
    /// A regular file: its digest and mode.
    File { digest: String, mode: u16 },
    /// A symlink and its target.
    Symlink(String),
    /// A device node, FIFO or socket.
    Special(Node),
}

/// A device node, FIFO or socket as the header describes it: an OSTree tree
/// cannot hold one, so tmpfiles.d creates it at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// Which kind.
    pub kind: NodeKind,
    /// Permission bits (with setuid, setgid and sticky).
    pub perms: u16,
    /// Device major number (rpm stores 8 bits).
    pub major: u8,
    /// Device minor number (rpm stores 8 bits).
    pub minor: u8,
}

/// The kinds of [`Node`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A named pipe.
    Fifo,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A socket (tmpfiles.d cannot create one; imports refuse it).
    Socket,
}

impl Node {
    /// The node an entry describes; `None` for directories, files, symlinks
    /// and unknown types.
    pub fn from_entry(e: &rpm::FileEntry<'_>) -> Option<Node> {
        let kind = match e.file_type() {
            rpm::FileType::Fifo => NodeKind::Fifo,
            rpm::FileType::CharacterDevice => NodeKind::Char,
            rpm::FileType::BlockDevice => NodeKind::Block,
            rpm::FileType::Socket => NodeKind::Socket,
            _ => return None,
        };
        Some(Node {
            kind,
            perms: e.permissions(),
            major: e.rdev_major(),
            minor: e.rdev_minor(),
        })
    }

    /// "character device 1:3", "FIFO", ... for messages.
    pub fn describe(&self) -> String {
        match self.kind {
            NodeKind::Fifo => "FIFO".into(),
            NodeKind::Socket => "socket".into(),
            NodeKind::Char => format!("character device {}:{}", self.major, self.minor),
            NodeKind::Block => format!("block device {}:{}", self.major, self.minor),
        }
    }

    /// The tmpfiles.d line creating it at `path` with these owner ids
    /// (`c /dev/null 0666 0 0 - 1:3`); `None` for a socket.
    pub fn tmpfiles_line(&self, path: &str, uid: u32, gid: u32) -> Option<String> {
        let (path, perms) = (crate::tmpfiles::escape_path(path), self.perms);
        let c = match self.kind {
            NodeKind::Fifo => return Some(format!("p {path} {perms:04o} {uid} {gid} -")),
            NodeKind::Socket => return None,
            NodeKind::Char => 'c',
            NodeKind::Block => 'b',
        };
        Some(format!(
            "{c} {path} {perms:04o} {uid} {gid} - {}:{}",
            self.major, self.minor
        ))
    }
}

/// A package header summary.
#[derive(Debug, Clone)]
pub struct HeaderInfo {
    /// `name-[epoch:]version-release.arch`.
    pub nevra: String,
    /// Name.
    pub name: String,
    /// Files, in header order.
    pub files: Vec<FileInfo>,
    /// Scriptlets and triggers present (`post`, `filetriggerin`, ...).
    pub scriptlets: Vec<&'static str>,
    /// Build time from the header.
    pub build_time: u64,
}

/// `(name, [epoch:]version-release, name-[epoch:]version-release.arch)` as rpm
/// spells them: the epoch only when it is set and not 0.
pub fn name_evr_nevra(m: &rpm::PackageMetadata) -> Result<(String, String, String)> {
    let name = m.get_name()?.to_string();
    let epoch = m
        .get_epoch()
        .ok()
        .filter(|e| *e > 0)
        .map(|e| format!("{e}:"))
        .unwrap_or_default();
    let evr = format!("{epoch}{}-{}", m.get_version()?, m.get_release()?);
    let nevra = format!("{name}-{evr}.{}", m.get_arch()?);
    Ok((name, evr, nevra))
}

/// Reads the header of the .rpm at `path`.
pub fn read(path: &Path) -> Result<HeaderInfo> {
    let ctx = || format!("reading the RPM header of {}", path.display());
    let m = super::blob::open_metadata(path).with_context(ctx)?;
    let (name, _, nevra) = name_evr_nevra(&m).with_context(ctx)?;
    let mut files = Vec::new();
    for e in m.get_file_entries().with_context(ctx)? {
        let kind = match e.mode().file_type() {
            rpm::FileType::Dir => FileKind::Dir,
            rpm::FileType::SymbolicLink => FileKind::Symlink(e.linkto().unwrap_or_default().to_string()),
            rpm::FileType::Regular => FileKind::File {
                digest: e.digest().map(|d| d.as_hex().to_string()).unwrap_or_default(),
                mode: e.permissions(),
            },
            _ => match Node::from_entry(&e) {
                Some(node) => FileKind::Special(node),
                None => anyhow::bail!(
                    "{}: {}: unknown file type in mode {:o}",
                    path.display(),
                    e.path().display(),
                    e.mode().raw_mode()
                ),
            },
        };
        let flags = e.flags();
        files.push(FileInfo {
            path: e.path().to_string_lossy().into_owned(),
            kind,
            ghost: flags.contains(rpm::FileFlags::GHOST),
            config: flags.contains(rpm::FileFlags::CONFIG),
            user: e.user().to_string(),
            group: e.group().to_string(),
            perms: e.permissions(),
            caps: e.caps().filter(|c| !c.is_empty()).map(str::to_string),
        });
    }
    let mut scriptlets = Vec::new();
    for (kind, present) in [
        ("pretrans", m.get_pre_trans_script().is_ok()),
        ("pre", m.get_pre_install_script().is_ok()),
        ("post", m.get_post_install_script().is_ok()),
        ("posttrans", m.get_post_trans_script().is_ok()),
        ("triggerin", m.get_triggers().is_ok_and(|t| !t.is_empty())),
        ("filetriggerin", m.get_file_triggers().is_ok_and(|t| !t.is_empty())),
        (
            "transfiletriggerin",
            m.get_trans_file_triggers().is_ok_and(|t| !t.is_empty()),
        ),
    ] {
        if present {
            scriptlets.push(kind);
        }
    }
    Ok(HeaderInfo {
        nevra,
        name,
        files,
        scriptlets,
        build_time: m.get_build_time().unwrap_or(0),
    })
}

/// Paths owned by more than one package with different content, as rpm reports
/// them ("file X conflicts between attempted installs of A and B"). Directories
/// may be shared; ghosts never conflict; identical files and symlinks are fine.
pub fn conflicts(pkgs: &[HeaderInfo]) -> Vec<String> {
    let mut owner: std::collections::HashMap<&str, (&HeaderInfo, &FileInfo)> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for p in pkgs {
        for f in p.files.iter().filter(|f| !f.ghost) {
            match owner.get(f.path.as_str()) {
                None => {
                    owner.insert(&f.path, (p, f));
                }
                Some((q, g)) => {
                    let same = matches!((&f.kind, &g.kind), (FileKind::Dir, FileKind::Dir)) || f.kind == g.kind;
                    if !same {
                        out.push(format!(
                            "file {} conflicts between attempted installs of {} and {}",
                            f.path, q.nevra, p.nevra
                        ));
                    }
                }
            }
        }
    }
    // A path one package ships as a file or symlink, another ships files beneath
    // (rpm reports this as a conflict too; the tree could not hold both).
    let mut seen = std::collections::HashSet::new();
    for p in pkgs {
        for f in p.files.iter().filter(|f| !f.ghost) {
            let mut at = f.path.as_str();
            while let Some((parent, _)) = at.rsplit_once('/') {
                if parent.is_empty() {
                    break;
                }
                if let Some((q, g)) = owner.get(parent) {
                    if !matches!(g.kind, FileKind::Dir)
                        && q.nevra != p.nevra
                        && seen.insert((parent, q.nevra.as_str(), p.nevra.as_str()))
                    {
                        out.push(format!(
                            "{parent}: {} ships {}, and {} ships {} beneath it",
                            q.nevra,
                            describe(&g.kind),
                            p.nevra,
                            f.path
                        ));
                    }
                }
                at = parent;
            }
        }
    }
    out
}

/// "a symlink (to T)", "a file", ... for messages.
fn describe(kind: &FileKind) -> String {
    match kind {
        FileKind::Dir => "a directory".into(),
        FileKind::File { .. } => "a file".into(),
        FileKind::Symlink(t) => format!("a symlink (to {t})"),
        FileKind::Special(node) => format!("a {}", node.describe()),
    }
}

/// Directories arbor itself writes into or moves things to: a package may not
/// ship one (or a directory above it) as anything else.
pub const RESERVED_DIRS: &[&str] = &[
    "/etc",
    "/usr",
    "/usr/etc",
    "/usr/lib",
    "/usr/lib/sysimage",
    "/usr/lib/sysimage/rpm",
    "/usr/lib/modules",
    "/usr/lib/tmpfiles.d",
];

/// Packages that ship one of [`RESERVED_DIRS`] as something other than a
/// directory, named, so the compose stops before any script runs.
pub fn reserved_path_misuse(pkgs: &[HeaderInfo]) -> Vec<String> {
    let mut out = Vec::new();
    for p in pkgs {
        for f in p.files.iter().filter(|f| !matches!(f.kind, FileKind::Dir)) {
            if RESERVED_DIRS.contains(&f.path.as_str()) {
                out.push(format!(
                    "{} ships {} as {}; arbor needs a directory there",
                    p.nevra,
                    f.path,
                    describe(&f.kind)
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(nevra: &str, files: Vec<(&str, FileKind)>) -> HeaderInfo {
        HeaderInfo {
            nevra: nevra.into(),
            name: nevra.split('-').next().unwrap().into(),
            files: files
                .into_iter()
                .map(|(p, k)| FileInfo {
                    path: p.into(),
                    kind: k,
                    ghost: false,
                    config: false,
                    user: "root".into(),
                    group: "root".into(),
                    perms: 0o644,
                    caps: None,
                })
                .collect(),
            scriptlets: vec![],
            build_time: 0,
        }
    }

    #[test]
    fn conflicts_follow_rpm_rules() {
        let file = |d: &str| FileKind::File {
            digest: d.into(),
            mode: 0o644,
        };
        let a = pkg(
            "a-1-1.noarch",
            vec![
                ("/usr", FileKind::Dir),
                ("/usr/x", file("11")),
                ("/usr/l", FileKind::Symlink("x".into())),
            ],
        );
        let b = pkg(
            "b-1-1.noarch",
            vec![
                ("/usr", FileKind::Dir),
                ("/usr/x", file("11")),
                ("/usr/l", FileKind::Symlink("x".into())),
            ],
        );
        assert!(
            conflicts(&[a.clone(), b]).is_empty(),
            "shared dirs and identical files are fine"
        );
        let c = pkg(
            "c-1-1.noarch",
            vec![("/usr/x", file("22")), ("/usr/l", FileKind::Symlink("y".into()))],
        );
        let got = conflicts(&[a.clone(), c]);
        assert_eq!(
            got,
            [
                "file /usr/x conflicts between attempted installs of a-1-1.noarch and c-1-1.noarch",
                "file /usr/l conflicts between attempted installs of a-1-1.noarch and c-1-1.noarch",
            ]
        );
        let d = pkg(
            "d-1-1.noarch",
            vec![("/usr/l/deep/f", file("33")), ("/usr/l/g", file("44"))],
        );
        assert_eq!(
            conflicts(&[a, d]),
            ["/usr/l: a-1-1.noarch ships a symlink (to x), and d-1-1.noarch ships /usr/l/deep/f beneath it"]
        );
    }

    #[test]
    fn reserved_directories_shipped_as_links_are_named() {
        let a = pkg(
            "a-1-1.noarch",
            vec![
                ("/usr/etc", FileKind::Symlink("/tmp".into())),
                ("/usr/lib/sysimage/rpm", FileKind::Symlink("../x".into())),
                ("/usr/lib/sysimage/rpm-x", FileKind::Symlink("../x".into())),
                ("/usr/lib", FileKind::Dir),
            ],
        );
        assert_eq!(
            reserved_path_misuse(&[a]),
            [
                "a-1-1.noarch ships /usr/etc as a symlink (to /tmp); arbor needs a directory there",
                "a-1-1.noarch ships /usr/lib/sysimage/rpm as a symlink (to ../x); arbor needs a directory there",
            ]
        );
    }

    #[test]
    fn nodes_become_tmpfiles_lines_and_differing_ones_conflict() {
        let node = |kind, perms, major, minor| Node {
            kind,
            perms,
            major,
            minor,
        };
        let null = node(NodeKind::Char, 0o666, 1, 3);
        assert_eq!(null.describe(), "character device 1:3");
        assert_eq!(
            null.tmpfiles_line("/dev/a b", 0, 5).as_deref(),
            Some("c /dev/a\\x20b 0666 0 5 - 1:3")
        );
        assert_eq!(
            node(NodeKind::Block, 0o660, 7, 0)
                .tmpfiles_line("/dev/loop0", 0, 6)
                .as_deref(),
            Some("b /dev/loop0 0660 0 6 - 7:0")
        );
        assert_eq!(
            node(NodeKind::Fifo, 0o600, 0, 0)
                .tmpfiles_line("/run/f%", 2, 2)
                .as_deref(),
            Some("p /run/f%% 0600 2 2 -")
        );
        assert_eq!(node(NodeKind::Socket, 0o600, 0, 0).tmpfiles_line("/run/s", 0, 0), None);
        let a = pkg("a-1-1.noarch", vec![("/dev/x", FileKind::Special(null))]);
        let b = pkg("b-1-1.noarch", vec![("/dev/x", FileKind::Special(null))]);
        let c = pkg(
            "c-1-1.noarch",
            vec![("/dev/x", FileKind::Special(node(NodeKind::Char, 0o666, 1, 5)))],
        );
        assert!(conflicts(&[a.clone(), b]).is_empty());
        assert_eq!(
            conflicts(&[a, c]),
            ["file /dev/x conflicts between attempted installs of a-1-1.noarch and c-1-1.noarch"]
        );
    }
}
