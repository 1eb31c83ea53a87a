//! arbor's own initramfs (treefile `initramfs: arbor`): the tree's static
//! busybox, the storage and filesystem modules with their dependencies, and a
//! small `/init` that mounts the root, sets up the OSTree deployment as
//! ostree-prepare-root does and switches to it.
//!
//! Built natively on the build host from the tree's own files (no emulation)
//! and deterministic: a sorted newc cpio with one timestamp, gzip with a
//! fixed header. gzip because every ARM kernel arbor targets unpacks it.

pub mod cpio;
pub mod modules;

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use cap_std::fs::Dir;

use crate::runner::Tool;

/// The `/init` script (busybox sh), shipped as is.
pub const INIT: &str = include_str!("init.sh");

/// Modules every arbor initramfs carries when the kernel has them as modules
/// (built-in ones are skipped): ext4 (and crc32c, which ext4's metadata
/// checksums need, a soft dependency modules.dep does not list), virtio disks
/// for qemu's virt machine, and the Raspberry Pi SD/eMMC hosts.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_blk",
    "virtio_pci",
    "virtio_mmio",
    "sdhci_iproc",
    "sdhci_pltfm",
    "sdhci",
    "bcm2835",
    "mmc_block",
    "crc32c_generic",
    "ext4",
];

/// busybox applets linked into /bin: what /init runs, and a few more for the
/// emergency shell.
pub const APPLETS: &[&str] = &[
    "cat",
    "dmesg",
    "echo",
    "findfs",
    "grep",
    "insmod",
    "ln",
    "ls",
    "mkdir",
    "mount",
    "od",
    "printf",
    "readlink",
    "sed",
    "sh",
    "sleep",
    "switch_root",
    "touch",
    "tr",
    "umount",
];

/// Where the tree's static busybox may be, in the order looked at.
const BUSYBOX_PATHS: &[&str] = &["usr/sbin/busybox", "usr/bin/busybox", "sbin/busybox", "bin/busybox"];

/// The module list /init reads: absolute paths in the initramfs, load order.
pub const MODULE_LIST: &str = "etc/arbor-initramfs/modules";

/// Builds the gzip-compressed initramfs for kernel `kver` of the tree at
/// `tree`, whose `usr/lib/modules/$kver/modules.dep` must exist (see
/// [`ensure_modules_dep`]). `extra_modules` are loaded after the defaults
/// (a board's own drivers); `timestamp` is every entry's mtime.
pub fn build(tree: &Dir, kver: &str, extra_modules: &[String], timestamp: u64) -> Result<Vec<u8>> {
    compress(&archive(tree, kver, extra_modules)?.write(timestamp))
}

fn compress(cpio: &[u8]) -> Result<Vec<u8>> {
    // Header mtime 0 and no file name: the same archive gives the same bytes.
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(cpio).context("compressing the initramfs")?;
    gz.finish().context("compressing the initramfs")
}

/// [`build`], with the compressed image kept in `cache` under the SHA-256 of
/// the archive: composes that leave the kernel, modules and busybox alone do
/// not compress them again (the slow part).
pub fn build_cached(tree: &Dir, kver: &str, extra_modules: &[String], timestamp: u64, cache: &Path) -> Result<Vec<u8>> {
    let cpio = archive(tree, kver, extra_modules)?.write(timestamp);
    let key = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&cpio));
    let path = cache.join(format!("{key}.gz"));
    if let Ok(img) = std::fs::read(&path) {
        if let Ok(f) = std::fs::File::open(&path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        return Ok(img);
    }
    let img = compress(&cpio)?;
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    crate::atomic::write_beneath(cache, &format!("{key}.gz"), &img)?;
    prune(cache);
    Ok(img)
}

/// Cached images unused for two weeks go.
fn prune(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else { return };
    let now = std::time::SystemTime::now();
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default().as_secs() > 14 * 24 * 3600);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The uncompressed archive [`build`] compresses.
pub fn archive(tree: &Dir, kver: &str, extra_modules: &[String]) -> Result<cpio::Archive> {
    let moddir = format!("usr/lib/modules/{kver}");
    let mut a = cpio::Archive::new();
    for d in ["dev", "proc", "sys", "run", "sysroot", "newroot"] {
        a.dir(d, 0o755)?;
    }
    a.dir("tmp", 0o1777)?;
    a.char_dev("dev/console", 0o600, 5, 1)?;
    a.char_dev("dev/null", 0o666, 1, 3)?;
    a.file("init", 0o755, INIT.as_bytes().to_vec())?;

    let (bb_path, busybox) = read_busybox(tree)?;
    let names = strings(&busybox);
    for applet in APPLETS {
        if !names.contains(applet.as_bytes()) {
            bail!("the initramfs needs busybox's `{applet}` applet; /{bb_path} has none");
        }
        a.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    a.file("bin/busybox", 0o755, busybox)?;

    let dep = tree
        .read_to_string(format!("{moddir}/modules.dep"))
        .with_context(|| format!("reading /{moddir}/modules.dep"))?;
    let builtin = match tree.read_to_string(format!("{moddir}/modules.builtin")) {
        Ok(s) => modules::builtin(&s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => return Err(e).with_context(|| format!("reading /{moddir}/modules.builtin")),
    };
    let wanted: Vec<&str> = DEFAULT_MODULES
        .iter()
        .copied()
        .chain(extra_modules.iter().map(String::as_str))
        .filter(|m| !builtin.contains(&modules::module_name(m)))
        .collect();
    let order = modules::modules_closure(&dep, &wanted).with_context(|| format!("kernel {kver}"))?;
    let mut list = String::new();
    for rel in &order {
        let data = tree
            .read(format!("{moddir}/{rel}"))
            .with_context(|| format!("reading kernel module /{moddir}/{rel}"))?;
        a.file(&format!("lib/modules/{kver}/{rel}"), 0o644, data)?;
        list.push_str(&format!("/lib/modules/{kver}/{rel}\n"));
    }
    a.file(MODULE_LIST, 0o644, list.into_bytes())?;
    Ok(a)
}

/// Runs the host's `depmod` on the tree's kernel `kver` when the kernel
/// package ships no `modules.dep` (Debian's does not: its postinst makes it).
/// kmod's depmod reads foreign-arch modules fine.
pub fn ensure_modules_dep(tree: &Dir, tree_path: &Path, kver: &str) -> Result<()> {
    ensure_modules_dep_cached(tree, tree_path, kver, None)
}

/// [`ensure_modules_dep`], keeping depmod's output in `cache` (a directory
/// named for everything depmod reads, see the compose's `modules_key`): when it
/// is there, depmod does not run again.
pub fn ensure_modules_dep_cached(tree: &Dir, tree_path: &Path, kver: &str, cache: Option<&Path>) -> Result<()> {
    let moddir = format!("usr/lib/modules/{kver}");
    if tree.exists(format!("{moddir}/modules.dep")) {
        return Ok(());
    }
    if let Some(cache) = cache.filter(|c| c.is_dir()) {
        for e in std::fs::read_dir(cache).with_context(|| format!("reading {}", cache.display()))? {
            let e = e.with_context(|| format!("reading {}", cache.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let data = std::fs::read(e.path()).with_context(|| format!("reading {}", e.path().display()))?;
            super::postprocess::replace_file(tree, &format!("{moddir}/{name}"), &data, 0o644)?;
        }
        return Ok(());
    }
    let before = names(tree, &moddir)?;
    // The host's depmod resolves paths as the host does: a symlink in the tree
    // would lead it out of the tree (host modules indexed, /sys walked forever).
    check_no_symlinks_for_depmod(tree, &moddir)?;
    // depmod looks under BASE/lib/modules (or BASE/usr/lib/modules for a kmod
    // built that way). BASE is a scratch directory whose links name the tree's
    // real /usr/lib/modules, never a path through the tree's own /lib symlink.
    let base = tempfile::Builder::new()
        .prefix("arbor-depmod-")
        .tempdir()
        .context("creating a directory for depmod")?;
    let modules = tree_path.join("usr/lib/modules");
    for dir in ["lib", "usr/lib"] {
        let d = base.path().join(dir);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        std::os::unix::fs::symlink(&modules, d.join("modules")).with_context(|| format!("linking {}", d.display()))?;
    }
    Tool::new("depmod")
        .arg("-b")
        .arg(base.path())
        .arg(kver)
        .timeout(DEPMOD_TIMEOUT)
        .run()
        .with_context(|| format!("indexing the modules of kernel {kver}"))?;
    if !tree.exists(format!("{moddir}/modules.dep")) {
        bail!("`depmod {kver}` wrote no /{moddir}/modules.dep");
    }
    if let Some(cache) = cache {
        save_depmod_output(tree, &moddir, &before, cache)?;
    }
    Ok(())
}

/// The longest depmod may take: a whole distribution kernel is indexed in seconds.
const DEPMOD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Refuses a tree where the host's depmod could leave `moddir`: any symlink on
/// the way to it or beneath it, except entries named `build` and `source`
/// (links to kernel headers), which depmod skips wherever they are.
fn check_no_symlinks_for_depmod(tree: &Dir, moddir: &str) -> Result<()> {
    let mut path = String::new();
    for part in moddir.split('/') {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(part);
        let m = tree
            .symlink_metadata(&path)
            .with_context(|| format!("looking at /{path}"))?;
        if !m.is_dir() {
            bail!("/{path} is not a directory (a symlink?): the kernel's modules must be in a real /{moddir}");
        }
    }
    let dir = tree.open_dir(moddir).with_context(|| format!("opening /{moddir}"))?;
    walk_for_symlinks(&dir, moddir)
}

fn walk_for_symlinks(dir: &Dir, at: &str) -> Result<()> {
    for entry in dir.entries().with_context(|| format!("listing /{at}"))? {
        let entry = entry.with_context(|| format!("listing /{at}"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type().with_context(|| format!("looking at /{at}/{name}"))?;
        if name == "build" || name == "source" {
            continue;
        }
        if kind.is_symlink() {
            let target = dir
                .read_link_contents(&name)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            bail!(
                "/{at}/{name} is a symlink (to {target:?}): the host's depmod would follow it out of the tree; \
                 kernel module directories may hold only files and directories"
            );
        }
        if kind.is_dir() {
            let sub = entry.open_dir().with_context(|| format!("opening /{at}/{name}"))?;
            walk_for_symlinks(&sub, &format!("{at}/{name}"))?;
        }
    }
    Ok(())
}

fn names(tree: &Dir, dir: &str) -> Result<std::collections::BTreeSet<String>> {
    tree.read_dir(dir)
        .with_context(|| format!("listing /{dir}"))?
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .with_context(|| format!("listing /{dir}"))
        })
        .collect()
}

/// The files depmod added to `moddir`, into `cache` (complete or not at all).
fn save_depmod_output(
    tree: &Dir,
    moddir: &str,
    before: &std::collections::BTreeSet<String>,
    cache: &Path,
) -> Result<()> {
    let parent = cache.parent().context("the depmod cache has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".depmod-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a directory in {}", parent.display()))?;
    for name in names(tree, moddir)?.difference(before) {
        let data = tree
            .read(format!("{moddir}/{name}"))
            .with_context(|| format!("reading /{moddir}/{name}"))?;
        std::fs::write(tmp.path().join(name), data).with_context(|| format!("writing {}", tmp.path().display()))?;
    }
    let tmp = tmp.keep();
    if std::fs::rename(&tmp, cache).is_err() {
        // Another compose saved the same output meanwhile.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

/// The kernels of the tree: each `usr/lib/modules/$kver` holding a `vmlinuz`, sorted.
pub fn kernels(tree: &Dir) -> Result<Vec<String>> {
    let dir = match tree.open_dir("usr/lib/modules") {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context("opening /usr/lib/modules"),
    };
    let mut out = Vec::new();
    for entry in dir.entries().context("listing /usr/lib/modules")? {
        let entry = entry.context("listing /usr/lib/modules")?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let vmlinuz = format!("{name}/vmlinuz");
        if dir.symlink_metadata(&vmlinuz).is_ok_and(|m| m.is_file()) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `usr/lib/modules/$kver/initramfs.img` (where libostree's deploy
/// looks for it) for every kernel of the tree at `tree_path`, running depmod
/// first where needed. Returns the kernel versions done.
pub fn write_all(
    tree: &Dir,
    tree_path: &Path,
    extra_modules: &[String],
    timestamp: impl Fn(&str) -> u64,
    cache_dir: &Path,
    modules_key: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>> {
    let kvers = kernels(tree)?;
    for kver in &kvers {
        let depmod_cache = modules_key(kver).map(|k| cache_dir.join("depmod").join(k));
        let started = std::time::Instant::now();
        ensure_modules_dep_cached(tree, tree_path, kver, depmod_cache.as_deref())?;
        let depmod_secs = started.elapsed().as_secs_f64();
        let img = build_cached(tree, kver, extra_modules, timestamp(kver), &cache_dir.join("initramfs"))
            .with_context(|| format!("building the initramfs for kernel {kver}"))?;
        tracing::debug!(
            kver,
            depmod_secs,
            image_secs = started.elapsed().as_secs_f64() - depmod_secs,
            "module index and initramfs image"
        );
        let path = format!("usr/lib/modules/{kver}/initramfs.img");
        // Through a rename: the old file may be a hardlinked package-cache object.
        super::postprocess::replace_file(tree, &path, &img, 0o644)?;
        tracing::info!(kver, bytes = img.len(), "initramfs written");
    }
    Ok(kvers)
}

fn read_busybox(tree: &Dir) -> Result<(&'static str, Vec<u8>)> {
    let Some(path) = BUSYBOX_PATHS
        .iter()
        .copied()
        .find(|p| tree.metadata(p).is_ok_and(|m| m.is_file()))
    else {
        bail!(
            "the arbor initramfs needs a static busybox in the tree (one of /{}); add busybox to the treefile's packages",
            BUSYBOX_PATHS.join(", /")
        );
    };
    let data = tree.read(path).with_context(|| format!("reading /{path}"))?;
    let elf = goblin::elf::Elf::parse(&data).with_context(|| format!("/{path} is not an ELF executable"))?;
    if elf.interpreter.is_some() {
        bail!("/{path} is dynamically linked; the initramfs needs a static busybox (Debian's busybox-static)");
    }
    Ok((path, data))
}

/// busybox keeps its applet names as one NUL-separated string table.
/// The NUL-delimited strings of a binary (busybox keeps its applet names so), in one pass.
fn strings(binary: &[u8]) -> std::collections::HashSet<&[u8]> {
    binary.split(|b| *b == 0).filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests;
