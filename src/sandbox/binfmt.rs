//! Whether a tree's programs need emulation, and the binfmt_misc entry that
//! runs them under qemu-user.
//!
//! The ELF machine of the tree's own `/bin/sh` decides, not the treefile: a
//! tree whose shell is x86_64 runs natively on an x86_64 host whatever it
//! claims. Entries are registered only in the sandbox's private binfmt_misc
//! instance (Linux ≥ 6.7 gives one per user namespace), never on the host.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::arch::Arch;

/// How the sandbox runs the tree's programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Emulation {
    /// The tree's arch is the host's.
    Native,
    /// Register this entry in the sandbox's private binfmt_misc.
    Private(Entry),
    /// The kernel has no private binfmt_misc, but the host already registers a
    /// qemu-user with flag `F` for the arch (named here); use it.
    Host(String),
}

/// One binfmt_misc registration (`:name:M::magic:mask:interpreter:flags`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Entry name (`qemu-aarch64`).
    pub name: String,
    /// ELF header bytes to match.
    pub magic: Vec<u8>,
    /// Mask applied before matching.
    pub mask: Vec<u8>,
    /// Host path of the static qemu-user binary (opened at registration: flag `F`).
    pub interpreter: PathBuf,
}

impl Entry {
    /// The line written to `binfmt_misc/register`. Flags `F` (open the
    /// interpreter now, so it works after the pivot into the tree) and `P`
    /// (keep argv[0], which busybox-style multi-call binaries need).
    pub fn register_line(&self) -> Vec<u8> {
        let hex = |b: &[u8]| b.iter().map(|x| format!("\\x{x:02x}")).collect::<String>();
        format!(
            ":{}:M::{}:{}:{}:FP",
            self.name,
            hex(&self.magic),
            hex(&self.mask),
            self.interpreter.display()
        )
        .into_bytes()
    }
}

/// The magic and mask qemu's `qemu-binfmt-conf.sh` uses for `arch`'s ELF
/// executables, and qemu's name for it.
pub fn magic(arch: Arch) -> Option<(&'static str, Vec<u8>, Vec<u8>)> {
    // e_ident (16 bytes) + e_type (2) + e_machine (2).
    let mut magic = vec![0x7f, b'E', b'L', b'F', 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0];
    let mut mask = vec![
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff,
        0xff, 0xff,
    ];
    let (name, class, machine) = match arch {
        Arch::Aarch64 => ("aarch64", 2, crate::arch::EM_AARCH64),
        Arch::Armv7hl => ("arm", 1, crate::arch::EM_ARM),
        Arch::X86_64 => {
            // qemu's x86_64 mask also ignores the ELF version/ABI bytes.
            mask[5] = 0xfe;
            mask[6] = 0xfe;
            ("x86_64", 2, crate::arch::EM_X86_64)
        }
        Arch::Noarch => return None,
    };
    magic[4] = class;
    magic[18..20].copy_from_slice(&machine.to_le_bytes());
    Some((name, magic, mask))
}

/// The ELF machine of `/bin/sh` in the tree at `rootfs` (symlinks followed
/// inside the tree), or `None` when the tree has no `/bin/sh`.
pub fn shell_arch(rootfs: &Path) -> Result<Option<Arch>> {
    let Some(sh) = resolve_beneath(rootfs, "bin/sh")? else {
        return Ok(None);
    };
    let mut head = [0u8; 64];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(&sh).with_context(|| format!("opening {}", sh.display()))?;
        f.read(&mut head).with_context(|| format!("reading {}", sh.display()))?
    };
    if n < 20 || &head[..4] != b"\x7fELF" {
        bail!("{} (the tree's /bin/sh) is not an ELF executable", sh.display());
    }
    let h = goblin::elf::Elf::parse_header(&head[..n])
        .with_context(|| format!("parsing the ELF header of {}", sh.display()))?;
    Arch::from_elf_machine(h.e_machine).map(Some).with_context(|| {
        format!(
            "{} (the tree's /bin/sh) is for ELF machine {}, which arbor cannot run (aarch64, armv7hl, x86_64)",
            sh.display(),
            h.e_machine
        )
    })
}

/// Resolves `rel` inside `root` the way the kernel would after a chroot into
/// it: absolute symlink targets are relative to `root`, `..` stops at `root`.
/// Returns the host path of the final non-symlink, or `None` if missing.
pub fn resolve_beneath(root: &Path, rel: &str) -> Result<Option<PathBuf>> {
    let mut pending: Vec<String> = rel
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(String::from)
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let host = cur.iter().fold(root.to_path_buf(), |p, c| p.join(c)).join(&c);
        let md = match std::fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("looking at {}", host.display())),
        };
        if md.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                bail!("too many levels of symlinks resolving /{rel} in {}", root.display());
            }
            let target = std::fs::read_link(&host).with_context(|| format!("reading the link {}", host.display()))?;
            if target.is_absolute() {
                cur.clear();
            }
            for comp in target.components().rev() {
                if let Component::Normal(s) = comp {
                    pending.push(s.to_string_lossy().into_owned());
                } else if comp == Component::ParentDir {
                    pending.push("..".into());
                }
            }
        } else {
            cur.push(c);
        }
    }
    Ok(Some(cur.iter().fold(root.to_path_buf(), |p, c| p.join(c))))
}

/// Finds a static qemu-user for `arch` on the host (`PATH`, then Debian's and
/// Fedora's usual places). A dynamic one would look for its libraries inside
/// the tree after the pivot, so it is refused.
pub fn find_qemu(arch: Arch) -> Result<PathBuf> {
    let (qname, _, _) = magic(arch).with_context(|| format!("no emulation for {arch}"))?;
    let names = [format!("qemu-{qname}-static"), format!("qemu-{qname}")];
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/bin", "/usr/local/bin", "/usr/libexec/qemu-binfmt"].map(PathBuf::from));
    let mut dynamic = None;
    for name in &names {
        for d in &dirs {
            let p = d.join(name);
            if !p.is_file() {
                continue;
            }
            let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            let elf = goblin::elf::Elf::parse(&bytes).with_context(|| format!("parsing {}", p.display()))?;
            if elf.interpreter.is_none() {
                return Ok(p);
            }
            dynamic.get_or_insert(p);
        }
    }
    match dynamic {
        Some(p) => bail!(
            "{} is dynamically linked; running {arch} scriptlets needs a static qemu-user \
             (Debian: apt-get install qemu-user-static; Fedora: dnf install qemu-user-static-{qname})",
            p.display()
        ),
        None => bail!(
            "running {arch} scriptlets needs qemu-{qname}-static, which is not installed \
             (Debian: apt-get install qemu-user-static; Fedora: dnf install qemu-user-static-{qname}; or run scripts/setup)"
        ),
    }
}

/// The host's own registration for `arch`, if it has one with flag `F`
/// (usable inside a chroot). For kernels without a private binfmt_misc.
pub fn host_registration(arch: Arch) -> Option<String> {
    let (qname, _, _) = magic(arch)?;
    let path = Path::new("/proc/sys/fs/binfmt_misc").join(format!("qemu-{qname}"));
    let text = std::fs::read_to_string(&path).ok()?;
    let enabled = text.lines().next() == Some("enabled");
    let fixed = text
        .lines()
        .any(|l| l.strip_prefix("flags: ").is_some_and(|f| f.contains('F')));
    (enabled && fixed).then(|| path.display().to_string())
}

/// What running `tree_arch` programs on this host needs.
pub fn plan(tree_arch: Arch) -> Result<Emulation> {
    if Some(tree_arch) == Arch::host() || tree_arch == Arch::Noarch {
        return Ok(Emulation::Native);
    }
    let (qname, magic, mask) = magic(tree_arch).with_context(|| format!("no emulation for {tree_arch}"))?;
    Ok(Emulation::Private(Entry {
        name: format!("qemu-{qname}"),
        magic,
        mask,
        interpreter: find_qemu(tree_arch)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aarch64_entry_matches_qemu_binfmt_conf() {
        let (name, m, mask) = magic(Arch::Aarch64).unwrap();
        assert_eq!(name, "aarch64");
        let hex = |b: &[u8]| b.iter().map(|x| format!("\\x{x:02x}")).collect::<String>();
        assert_eq!(
            hex(&m),
            "\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00"
        );
        assert_eq!(
            hex(&mask),
            "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff"
        );
        let (name, m, _) = magic(Arch::Armv7hl).unwrap();
        assert_eq!((name, m[4], m[18]), ("arm", 1, 0x28));
        let line = Entry {
            name: "qemu-arm".into(),
            magic: m,
            mask,
            interpreter: "/usr/bin/qemu-arm-static".into(),
        }
        .register_line();
        let line = String::from_utf8(line).unwrap();
        assert!(line.starts_with(":qemu-arm:M::\\x7f\\x45"), "{line}");
        assert!(line.ends_with(":/usr/bin/qemu-arm-static:FP"), "{line}");
        assert!(super::magic(Arch::Noarch).is_none());
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::write(r.join("usr/bin/busybox"), b"x").unwrap();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        // An absolute target means the tree's root, never the host's.
        std::os::unix::fs::symlink("/usr/bin/busybox", r.join("usr/bin/sh")).unwrap();
        std::os::unix::fs::symlink("../../../../../etc/passwd", r.join("usr/bin/escape")).unwrap();
        assert_eq!(resolve_beneath(r, "bin/sh").unwrap(), Some(r.join("usr/bin/busybox")));
        assert_eq!(resolve_beneath(r, "bin/escape").unwrap(), None);
        assert_eq!(resolve_beneath(r, "bin/missing").unwrap(), None);
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert!(resolve_beneath(r, "loop").is_err());
    }

    #[test]
    fn a_tree_without_a_shell_has_no_shell_arch() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(shell_arch(t.path()).unwrap(), None);
        std::fs::create_dir_all(t.path().join("bin")).unwrap();
        std::fs::write(t.path().join("bin/sh"), b"#!/not/elf\n").unwrap();
        let e = shell_arch(t.path()).unwrap_err().to_string();
        assert!(e.contains("not an ELF executable"), "{e}");
    }
}
