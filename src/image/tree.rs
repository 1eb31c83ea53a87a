//! The deployed tree, opened as a directory: every path `arbor image` reads or
//! writes in it resolves beneath it as it would on the device.
//!
//! The tree comes from packages, so its symlinks are untrusted: an absolute
//! link (`/etc/arbor -> /root`), a run of `../` or `/proc/self/environ` joined
//! onto the host path of the deployment would reach the build host. Paths are
//! resolved with `openat2(RESOLVE_IN_ROOT)` from the deployment's directory, so
//! `/` and `..` stop at the deployment's root (the device's `/`) and magic
//! links are refused. Entries are then created or replaced with `*at` calls on
//! a single name in a directory opened that way, never through a host path.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cap_std::fs::{Dir, OpenOptions};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

/// A deployment's root directory; paths given to it are tree paths (`/usr/lib/x`).
pub struct Tree {
    root: OwnedFd,
    /// The deployment's host path, for messages.
    shown: PathBuf,
}

impl Tree {
    /// Opens the deployment at host path `path` (written by libostree, trusted).
    pub fn open(path: &Path) -> Result<Tree> {
        let root = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening the deployed tree {}", path.display()))?;
        Ok(Tree {
            root,
            shown: path.to_path_buf(),
        })
    }

    /// `path` in the tree as messages show it.
    fn what(&self, path: &str) -> String {
        format!("{path} in the deployed tree {}", self.shown.display())
    }

    /// `openat2` beneath the root; `Ok(None)` when the path (or what a symlink in it
    /// names, inside the tree) does not exist or a component is not a directory.
    fn resolve(&self, path: &str, flags: OFlag) -> Result<Option<OwnedFd>> {
        let rel = relative(path)?;
        // openat2 refuses O_PATH with any flag but O_DIRECTORY, O_NOFOLLOW and O_CLOEXEC.
        let extra = if flags.contains(OFlag::O_PATH) {
            OFlag::O_CLOEXEC
        } else {
            OFlag::O_CLOEXEC | OFlag::O_NOCTTY
        };
        let how = OpenHow::new()
            .flags(flags | extra)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        // EAGAIN: a rename elsewhere in the tree raced the lookup; the kernel asks for a retry.
        let mut tries = 0;
        loop {
            match openat2(&self.root, rel, how) {
                Ok(fd) => return Ok(Some(fd)),
                Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
                Err(Errno::EAGAIN) if tries < 16 => tries += 1,
                Err(Errno::ELOOP) => bail!(
                    "opening {}: too many levels of symlinks, or a link into /proc (which is not followed)",
                    self.what(path)
                ),
                Err(e) => return Err(e).with_context(|| format!("opening {}", self.what(path))),
            }
        }
    }

    /// The directory at `path`; `None` when it does not exist or is not a directory.
    pub fn open_dir(&self, path: &str) -> Result<Option<Dir>> {
        Ok(self
            .resolve(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?
            .map(|fd| Dir::from_std_file(File::from(fd))))
    }

    /// The regular file at `path` and its size; `None` when it does not exist.
    /// Anything else there (a directory, a device) is an error.
    pub fn open_file(&self, path: &str) -> Result<Option<(File, u64)>> {
        // O_NONBLOCK: opening a FIFO must not wait for a writer before the type check.
        let Some(fd) = self.resolve(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK)? else {
            return Ok(None);
        };
        let file = File::from(fd);
        let meta = file
            .metadata()
            .with_context(|| format!("looking at {}", self.what(path)))?;
        if !meta.file_type().is_file() {
            bail!("{} is not a regular file", self.what(path));
        }
        Ok(Some((file, meta.size())))
    }

    /// Whether `path` is a regular file (following symlinks inside the tree).
    pub fn is_file(&self, path: &str) -> Result<bool> {
        match self.resolve(path, OFlag::O_PATH)? {
            None => Ok(false),
            Some(fd) => {
                let st = nix::sys::stat::fstat(&fd).with_context(|| format!("looking at {}", self.what(path)))?;
                Ok(st.st_mode & libc::S_IFMT == libc::S_IFREG)
            }
        }
    }

    /// The bytes of the regular file at `path`, refused when larger than `max`;
    /// `None` when it does not exist.
    pub fn read(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let Some((file, size)) = self.open_file(path)? else {
            return Ok(None);
        };
        if size > max {
            bail!("{} is {size} bytes, more than the {max} allowed", self.what(path));
        }
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(max + 1)
            .read_to_end(&mut data)
            .with_context(|| format!("reading {}", self.what(path)))?;
        if data.len() as u64 > max {
            bail!("{} grew past the {max} bytes allowed while read", self.what(path));
        }
        Ok(Some(data))
    }

    /// The tree paths that match `pattern` (an absolute path whose components may
    /// be globs, `/usr/lib/modules/*/dtb/*.dtb`) and exist, sorted.
    pub fn glob(&self, pattern: &str) -> Result<Vec<String>> {
        relative(pattern)?;
        let mut found = vec![String::new()];
        for comp in pattern.split('/').filter(|c| !c.is_empty()) {
            let mut next = Vec::new();
            if comp.contains(['*', '?', '[']) {
                let pat = glob::Pattern::new(comp).with_context(|| format!("bad glob {comp:?} in {pattern}"))?;
                for dir in &found {
                    let shown = if dir.is_empty() { "/" } else { dir };
                    let Some(d) = self.open_dir(shown)? else { continue };
                    for e in d.entries().with_context(|| format!("listing {}", self.what(shown)))? {
                        let e = e.with_context(|| format!("listing {}", self.what(shown)))?;
                        let name = e.file_name();
                        if let Some(name) = name.to_str().filter(|name| pat.matches(name)) {
                            next.push(format!("{dir}/{name}"));
                        }
                    }
                }
            } else {
                next = found.iter().map(|d| format!("{d}/{comp}")).collect();
            }
            found = next;
        }
        let mut out = Vec::new();
        for p in found {
            if !p.is_empty() && self.resolve(&p, OFlag::O_PATH)?.is_some() {
                out.push(p);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Creates the directory `path` and its missing parents (mode 0755), each
    /// inside the tree: a symlink on the way resolves inside it.
    pub fn create_dir_all(&self, path: &str) -> Result<()> {
        let mut parent = String::new();
        for comp in relative(path)?.split('/').filter(|c| !c.is_empty()) {
            let here = format!("{parent}/{comp}");
            if self.open_dir(&here)?.is_none() {
                let p = if parent.is_empty() { "/" } else { &parent };
                let pdir = self
                    .resolve(p, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?
                    .with_context(|| format!("creating {}: {p} is gone", self.what(path)))?;
                match nix::sys::stat::mkdirat(&pdir, comp, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e).with_context(|| format!("creating {}", self.what(&here))),
                }
                if self.open_dir(&here)?.is_none() {
                    bail!(
                        "creating {}: {here} is not a directory (a file, or a symlink to nothing inside the tree)",
                        self.what(path)
                    );
                }
            }
            parent = here;
        }
        Ok(())
    }

    /// Writes `content` to the file `path` (mode `mode`) in an existing directory
    /// of the tree: a temporary file beside it, renamed over whatever was there.
    pub fn write_file(&self, path: &str, content: &[u8], mode: u32) -> Result<()> {
        let rel = relative(path)?;
        let (parent, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (format!("/{p}"), n),
            None => ("/".to_string(), rel),
        };
        if name.is_empty() || name == "." || name == ".." {
            bail!("{path:?} does not name a file");
        }
        let dir = self
            .open_dir(&parent)?
            .with_context(|| format!("writing {}: {parent} is not a directory", self.what(path)))?;
        let tmp = format!(".{name}.arbor-tmp");
        match dir.remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", self.what(&format!("{parent}/{tmp}")))),
        }
        let mut f = dir
            .open_with(&tmp, OpenOptions::new().write(true).create_new(true))
            .with_context(|| format!("creating a temporary file for {}", self.what(path)))?
            .into_std();
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", self.what(path)))?;
        f.write_all(content)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", self.what(path)))?;
        drop(f);
        dir.rename(&tmp, &dir, name)
            .with_context(|| format!("renaming into {}", self.what(path)))
    }
}

/// `path` without its leading `/`s, refused when it is not absolute.
fn relative(path: &str) -> Result<&str> {
    if !path.starts_with('/') {
        bail!("{path:?} is not an absolute path in the tree");
    }
    let rel = path.trim_start_matches('/');
    Ok(if rel.is_empty() { "." } else { rel })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A tree with links out of it, and a "host" directory beside it they aim at.
    fn hostile() -> (tempfile::TempDir, Tree) {
        let t = tempfile::tempdir().unwrap();
        let host = t.path().join("host");
        let tree = t.path().join("tree");
        std::fs::create_dir_all(host.join("etc")).unwrap();
        std::fs::write(host.join("secret"), "host").unwrap();
        std::fs::create_dir_all(tree.join("usr/fw")).unwrap();
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::create_dir_all(tree.join(host.join("etc").strip_prefix("/").unwrap())).unwrap();
        std::fs::write(tree.join(host.join("secret").strip_prefix("/").unwrap()), "device").unwrap();
        symlink(host.join("secret"), tree.join("usr/fw/abs")).unwrap();
        symlink(
            format!("../../../../../../../..{}", host.join("secret").display()),
            tree.join("usr/fw/up"),
        )
        .unwrap();
        symlink("/proc/self/environ", tree.join("usr/fw/environ")).unwrap();
        symlink(host.join("etc"), tree.join("etc/arbor")).unwrap();
        symlink("/nowhere", tree.join("etc/dangling")).unwrap();
        let opened = Tree::open(&tree).unwrap();
        (t, opened)
    }

    #[test]
    fn links_resolve_inside_the_tree_as_on_the_device() {
        let (t, tree) = hostile();
        for p in ["/usr/fw/abs", "/usr/fw/up"] {
            assert_eq!(tree.read(p, 100).unwrap().unwrap(), b"device", "{p}");
        }
        assert!(tree.read("/usr/fw/environ", 100).unwrap().is_none());
        assert!(tree.read("/usr/fw/nope", 100).unwrap().is_none());
        assert!(tree.is_file("/usr/fw/abs").unwrap() && !tree.is_file("/usr/fw").unwrap());
        let e = tree.read("/usr/fw", 100).unwrap_err().to_string();
        assert!(
            e.contains("/usr/fw in the deployed tree") && e.contains("not a regular file"),
            "{e}"
        );
        let e = tree.read("/usr/fw/abs", 3).unwrap_err().to_string();
        assert!(e.contains("/usr/fw/abs") && e.contains("more than the 3"), "{e}");
        assert_eq!(tree.glob("/usr/f?/[au]*").unwrap(), ["/usr/fw/abs", "/usr/fw/up"]);

        tree.create_dir_all("/etc/arbor/keys").unwrap();
        tree.write_file("/etc/arbor/keys/k.pub", b"key", 0o644).unwrap();
        let host = t.path().join("host");
        assert_eq!(
            std::fs::read_dir(host.join("etc")).unwrap().count(),
            0,
            "nothing on the host"
        );
        let inside = t
            .path()
            .join("tree")
            .join(host.strip_prefix("/").unwrap())
            .join("etc/keys/k.pub");
        assert_eq!(std::fs::read(inside).unwrap(), b"key");
        let e = tree.create_dir_all("/etc/dangling/keys").unwrap_err().to_string();
        assert!(e.contains("/etc/dangling is not a directory"), "{e}");
    }
}
