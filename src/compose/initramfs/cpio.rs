//! A small, deterministic writer for the `newc` cpio format the kernel
//! unpacks into its initial rootfs: entries sorted by path, parents before
//! children, one timestamp, owner root, inode numbers in order.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with this content.
    File(Vec<u8>),
    /// A symbolic link to this target.
    Symlink(String),
    /// A character device node.
    CharDev {
        /// Major device number.
        major: u32,
        /// Minor device number.
        minor: u32,
    },
}

/// One entry: its kind and permission bits (`0o7777` at most).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What it is.
    pub kind: Kind,
    /// Permission bits.
    pub perm: u32,
}

/// An archive being put together; paths are relative (`bin/busybox`).
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Adds a directory (and its missing parents, mode 0755).
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<()> {
        self.add(path, Kind::Dir, perm)
    }

    /// Adds a regular file (and its missing parents).
    pub fn file(&mut self, path: &str, perm: u32, data: Vec<u8>) -> Result<()> {
        self.add(path, Kind::File(data), perm)
    }

    /// Adds a symbolic link (and its missing parents).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.add(path, Kind::Symlink(target.to_string()), 0o777)
    }

    /// Adds a character device node (and its missing parents).
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> Result<()> {
        self.add(path, Kind::CharDev { major, minor }, perm)
    }

    /// The entry at `path`.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Every path, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    fn add(&mut self, path: &str, kind: Kind, perm: u32) -> Result<()> {
        if path.is_empty()
            || path.starts_with('/')
            || path.ends_with('/')
            || path.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("initramfs entry {path:?}: not a plain relative path");
        }
        if perm & !0o7777 != 0 {
            bail!("initramfs entry {path}: mode {perm:o} has more than permission bits");
        }
        let mut parent = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            match self.entries.get(&parent) {
                Some(Entry { kind: Kind::Dir, .. }) => {}
                Some(_) => bail!("initramfs entry {path}: {parent} is not a directory"),
                None => {
                    self.entries.insert(
                        parent.clone(),
                        Entry {
                            kind: Kind::Dir,
                            perm: 0o755,
                        },
                    );
                }
            }
        }
        match self.entries.get(path) {
            // Adding a directory twice is harmless; anything else is a mistake.
            Some(e) if e.kind == Kind::Dir && kind == Kind::Dir => {}
            Some(_) => bail!("initramfs entry {path} added twice"),
            None => {}
        }
        self.entries.insert(path.to_string(), Entry { kind, perm });
        Ok(())
    }

    /// The archive in `newc` format, every entry with modification time `mtime`.
    pub fn write(&self, mtime: u64) -> Vec<u8> {
        // newc fields are 32 bits: a timestamp past 2106 is clamped, not wrapped.
        let mtime = u32::try_from(mtime).unwrap_or(u32::MAX);
        let mut subdirs: BTreeMap<&str, u32> = BTreeMap::new();
        for (path, e) in &self.entries {
            if e.kind == Kind::Dir {
                if let Some((parent, _)) = path.rsplit_once('/') {
                    *subdirs.entry(parent).or_default() += 1;
                }
            }
        }
        let mut out = Vec::new();
        for (ino, (path, e)) in (1u32..).zip(&self.entries) {
            let (type_bits, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &e.kind {
                Kind::Dir => (
                    0o040000,
                    2 + subdirs.get(path.as_str()).copied().unwrap_or(0),
                    &[],
                    (0, 0),
                ),
                Kind::File(d) => (0o100000, 1, d, (0, 0)),
                Kind::Symlink(t) => (0o120000, 1, t.as_bytes(), (0, 0)),
                Kind::CharDev { major, minor } => (0o020000, 1, &[], (*major, *minor)),
            };
            header(
                &mut out,
                &Header {
                    ino,
                    mode: type_bits | e.perm,
                    nlink,
                    mtime,
                    size: data.len(),
                    rdev,
                    name: path,
                },
            );
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        header(
            &mut out,
            &Header {
                ino: 0,
                mode: 0,
                nlink: 1,
                mtime: 0,
                size: 0,
                rdev: (0, 0),
                name: "TRAILER!!!",
            },
        );
        out
    }
}

struct Header<'a> {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: usize,
    rdev: (u32, u32),
    name: &'a str,
}

fn header(out: &mut Vec<u8>, h: &Header) {
    out.extend_from_slice(b"070701");
    let fields = [
        h.ino,
        h.mode,
        0, // uid
        0, // gid
        h.nlink,
        h.mtime,
        // An initramfs is far below 4 GiB; a larger file is a bug upstream of this.
        u32::try_from(h.size).unwrap_or(u32::MAX),
        0, // devmajor
        0, // devminor
        h.rdev.0,
        h.rdev.1,
        u32::try_from(h.name.len() + 1).unwrap_or(u32::MAX),
        0, // check
    ];
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(h.name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::process::{Command, Stdio};

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.file("bin/busybox", 0o755, b"\x7fELF pretend".to_vec()).unwrap();
        a.symlink("bin/sh", "busybox").unwrap();
        a.dir("proc", 0o555).unwrap();
        a.char_dev("dev/console", 0o600, 5, 1).unwrap();
        a.file("etc/list", 0o644, b"one\ntwo\n".to_vec()).unwrap();
        a.dir("lib/modules/k", 0o755).unwrap();
        a
    }

    fn cpio(args: &[&str], input: &[u8], dir: &std::path::Path) -> String {
        use std::io::Write as _;
        let mut child = Command::new("cpio")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn header_fields_are_newc() {
        let mut a = Archive::new();
        a.file("a", 0o644, b"xyz".to_vec()).unwrap();
        let out = a.write(0x10);
        // magic, ino 1, mode 0100644, uid, gid, nlink 1, mtime 0x10, size 3, …, namesize 2
        let h = std::str::from_utf8(&out[..110]).unwrap();
        assert_eq!(&h[..6], "070701");
        assert_eq!(&h[6..14], "00000001");
        assert_eq!(&h[14..22], "000081A4");
        assert_eq!(&h[38..46], "00000001");
        assert_eq!(&h[46..54], "00000010");
        assert_eq!(&h[54..62], "00000003");
        assert_eq!(&h[94..102], "00000002");
        assert_eq!(&out[110..112], b"a\0");
        assert_eq!(out.len() % 4, 0);
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn real_cpio_lists_and_extracts_it() {
        let bytes = sample().write(1_700_000_000);
        let dir = tempfile::tempdir().unwrap();
        let listing = cpio(&["-tv", "--quiet"], &bytes, dir.path());
        let lines: Vec<&str> = listing.lines().collect();
        let names = cpio(&["-t", "--quiet"], &bytes, dir.path());
        // Sorted, parents first.
        assert_eq!(
            names.lines().collect::<Vec<_>>(),
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "etc",
                "etc/list",
                "lib",
                "lib/modules",
                "lib/modules/k",
                "proc"
            ]
        );
        let line = |n: &str| *lines.iter().find(|l| l.contains(&format!(" {n}"))).unwrap();
        assert!(line("bin/busybox").starts_with("-rwxr-xr-x"), "{}", line("bin/busybox"));
        assert!(
            line("bin/sh -> busybox").starts_with("lrwxrwxrwx"),
            "{}",
            line("bin/sh")
        );
        assert!(line("dev/console").starts_with("crw-------"), "{}", line("dev/console"));
        assert!(line("proc").starts_with("dr-xr-xr-x"), "{}", line("proc"));
        assert!(line("etc/list").contains(" root "), "{}", line("etc/list"));
        // Directory link counts: 2 + subdirectories.
        assert!(line("lib").starts_with("drwxr-xr-x   3 "), "{}", line("lib"));

        // Extract what an unprivileged cpio can (no device nodes) and compare contents.
        let mut a = sample();
        a.entries.remove("dev/console");
        let out = dir.path().join("x");
        std::fs::create_dir(&out).unwrap();
        cpio(&["-idm", "--quiet"], &a.write(1_700_000_000), &out);
        assert_eq!(std::fs::read(out.join("etc/list")).unwrap(), b"one\ntwo\n");
        assert_eq!(
            std::fs::read_link(out.join("bin/sh")).unwrap().to_str(),
            Some("busybox")
        );
        let m = std::fs::metadata(out.join("bin/busybox")).unwrap();
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        assert_eq!(m.permissions().mode() & 0o7777, 0o755);
        assert_eq!(m.mtime(), 1_700_000_000);
    }

    #[test]
    fn same_entries_same_bytes_whatever_the_order() {
        let mut b = Archive::new();
        b.dir("lib/modules/k", 0o755).unwrap();
        b.file("etc/list", 0o644, b"one\ntwo\n".to_vec()).unwrap();
        b.char_dev("dev/console", 0o600, 5, 1).unwrap();
        b.dir("proc", 0o555).unwrap();
        b.symlink("bin/sh", "busybox").unwrap();
        b.file("bin/busybox", 0o755, b"\x7fELF pretend".to_vec()).unwrap();
        assert_eq!(sample().write(7), b.write(7));
    }

    #[test]
    fn bad_paths_and_duplicates_are_refused() {
        let mut a = Archive::new();
        for p in ["", "/abs", "a/../b", "a//b", "a/"] {
            assert!(a.dir(p, 0o755).is_err(), "{p:?}");
        }
        a.file("f", 0o644, vec![]).unwrap();
        assert!(a.file("f", 0o644, vec![]).is_err());
        assert!(a.file("f/g", 0o644, vec![]).is_err(), "a file is not a parent");
        assert!(a.file("g", 0o100644, vec![]).is_err());
    }
}
