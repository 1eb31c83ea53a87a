//! The device side: `arbor status`, `upgrade`, `deploy`, `rollback`,
//! `rebase`, `cleanup` and `remote`, on the running system (`--sysroot /`) or
//! on an image's root filesystem mounted anywhere (its boot partition mounted
//! at `boot/`), through one [`Device`] handle.
//!
//! What the device is: its board (recorded by `arbor image` in
//! `ostree/arbor/board.toml` beside the repository, so the sysroot carries it
//! through every deployment), its arch (the board's), its update remote (the
//! sysroot repository's config) and the keys it trusts (`/etc/arbor/keys` and
//! `/etc/arbor/revoked` of the default deployment, carried by the /etc merge).

pub mod bootcount;
pub mod bootfiles;
pub mod fat;
pub mod health;
pub mod status;
pub mod update;

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::board::Board;
use crate::image::tree::Tree;
use crate::ostree::sysroot::{DeploymentInfo, Sysroot};
use crate::sign::Trust;

/// Where `arbor image` records the board, relative to the sysroot.
pub const BOARD_FILE: &str = "ostree/arbor/board.toml";
/// The lock one device operation holds, relative to the sysroot.
const LOCK_FILE: &str = "ostree/arbor/lock";
/// Trusted keys, in a deployment.
pub const KEYS_DIR: &str = "/etc/arbor/keys";
/// Revoked keys, in a deployment.
pub const REVOKED_DIR: &str = "/etc/arbor/revoked";
/// Most bytes of one key file.
const MAX_KEY_FILE: u64 = 1 << 20;
/// The stateroot `arbor image` creates (`--osname`).
pub const DEFAULT_OSNAME: &str = "arbor";

/// An opened device sysroot with its board.
pub struct Device {
    /// The libostree sysroot.
    pub sysroot: Sysroot,
    /// The board it runs on.
    pub board: Board,
    /// The board's firmware (FAT) partition, if it has one and it can be reached.
    pub firmware: Option<Firmware>,
}

/// How the firmware partition is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// Mounted (vfat) at this directory: files are replaced through the kernel.
    Mounted(PathBuf),
    /// This block device or image file is the partition, unmounted: arbor
    /// edits it in place ([`fat::replace`]).
    Partition(PathBuf),
}

/// Where to find a device.
#[derive(Debug, Clone)]
pub struct Target {
    /// The sysroot (`/` on the running system).
    pub sysroot: PathBuf,
    /// A board name or file, for sysroots whose image predates the board record.
    pub board: Option<String>,
    /// The firmware partition's mount point (default: `boot/firmware` in the sysroot).
    pub firmware_dir: Option<PathBuf>,
    /// The firmware partition's block device, unmounted (instead of a mount point).
    pub firmware_partition: Option<PathBuf>,
}

impl Device {
    /// Opens the sysroot and reads its board.
    pub fn open(t: &Target) -> Result<Device> {
        if t.sysroot == std::path::Path::new("/") && std::path::Path::new(BOOTED_FLAG).exists() {
            // Before libostree opens anything: descriptors opened earlier would
            // keep writing through the read-only mount.
            // Not fatal: reading (`arbor status`, as any user) needs no write.
            if let Err(e) = writable_physical_root(std::path::Path::new(PHYSICAL_ROOT)) {
                tracing::warn!("{e:#}");
            }
        }
        let sysroot = Sysroot::open(&t.sysroot)?;
        let recorded = t.sysroot.join(BOARD_FILE);
        let board = match &t.board {
            Some(b) => crate::board::find(b)?,
            None if recorded.exists() => crate::board::load(&recorded)?,
            None => bail!(
                "{} records no board ({} is missing: the image predates arbor's device record); give --board",
                t.sysroot.display(),
                recorded.display()
            ),
        };
        let has_firmware = board.partition(crate::board::Role::Firmware).is_some();
        let firmware = match (&t.firmware_partition, &t.firmware_dir) {
            (Some(p), _) => {
                if !has_firmware {
                    bail!(
                        "board {} has no firmware partition; drop --firmware-partition",
                        board.name
                    );
                }
                let md = std::fs::metadata(p).with_context(|| format!("the firmware partition {}", p.display()))?;
                if md.is_dir() {
                    bail!(
                        "{} is a directory: give it as --firmware-dir (a mounted partition)",
                        p.display()
                    );
                }
                Some(Firmware::Partition(p.clone()))
            }
            (None, Some(d)) => Some(Firmware::Mounted(d.clone())),
            (None, None) if has_firmware => Some(t.sysroot.join("boot/firmware"))
                .filter(|d| is_mount_point(d))
                .map(Firmware::Mounted)
                .or_else(|| {
                    // On the board the partition is usually not mounted: found
                    // by its FAT label, it is edited in place.
                    let label = &board.partition(crate::board::Role::Firmware)?.label;
                    (t.sysroot == std::path::Path::new("/"))
                        .then(|| find_fat_partition(label))
                        .flatten()
                        .map(Firmware::Partition)
                }),
            (None, None) => None,
        };
        Ok(Device {
            sysroot,
            board,
            firmware,
        })
    }

    /// The deployment the next boot picks (libostree's first), if any.
    pub fn default_deployment(&self) -> Result<DeploymentInfo> {
        self.sysroot
            .deployments()
            .into_iter()
            .next()
            .with_context(|| format!("{} has no deployments", self.sysroot.path().display()))
    }

    /// The running deployment, else the default one: what an update must not be older than.
    pub fn current(&self) -> Result<DeploymentInfo> {
        let all = self.sysroot.deployments();
        match all.iter().find(|d| d.booted) {
            Some(d) => Ok(d.clone()),
            None => self.default_deployment(),
        }
    }

    /// The keys the deployment `d` trusts.
    pub fn trust(&self, d: &DeploymentInfo) -> Result<Trust> {
        let root = self.sysroot.path().join(&d.dir);
        let tree = Tree::open(&root)?;
        let trusted = read_keys(&tree, KEYS_DIR)?;
        if trusted.is_empty() {
            bail!(
                "the deployment {} trusts no key: {KEYS_DIR} is empty or missing (arbor image --keys installs them)",
                root.display()
            );
        }
        Ok(Trust {
            trusted,
            revoked: read_keys(&tree, REVOKED_DIR)?,
        })
    }

    /// Takes the device lock for `what` (one operation at a time); refused
    /// with the holder's description when another process has it.
    pub fn lock(&self, what: &str) -> Result<Lock> {
        let path = self.sysroot.path().join(LOCK_FILE);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock {}", path.display()))?;
        let flock = match nix::fcntl::Flock::lock(file.try_clone()?, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = (&mut file).take(512).read_to_string(&mut holder);
                bail!(
                    "another arbor operation holds {}: {}; wait for it to finish",
                    path.display(),
                    holder.trim()
                );
            }
            Err((_, e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
        };
        file.set_len(0)?;
        file.rewind()?;
        let _ = write!(file, "pid {} ({what})", std::process::id());
        Ok(Lock { _flock: flock })
    }
}

/// A directory with another filesystem mounted on it than its parent's.
fn is_mount_point(d: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(d), d.parent().map(std::fs::metadata)) {
        (Ok(m), Some(Ok(p))) => m.is_dir() && m.dev() != p.dev(),
        _ => false,
    }
}

/// The block device of the partition whose FAT volume label is `label`
/// (compared without case), among the partitions the kernel lists.
fn find_fat_partition(label: &str) -> Option<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/block")
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("partition").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names.into_iter().map(|n| PathBuf::from("/dev").join(n)).find(|dev| {
        let mut sector = [0u8; 512];
        File::open(dev).and_then(|mut f| f.read_exact(&mut sector)).is_ok()
            && fat_label(&sector).is_some_and(|l| l.eq_ignore_ascii_case(label))
    })
}

/// The volume label in a FAT boot sector (FAT12/16 or FAT32 extended BPB).
fn fat_label(sector: &[u8; 512]) -> Option<String> {
    if sector[510..512] != [0x55, 0xaa] {
        return None;
    }
    let at = if sector[0x26] == 0x29 && &sector[0x36..0x39] == b"FAT" {
        0x2b
    } else if sector[0x42] == 0x29 && &sector[0x52..0x57] == b"FAT32" {
        0x47
    } else {
        return None;
    };
    Some(String::from_utf8_lossy(&sector[at..at + 11]).trim_end().to_string())
}

/// Written by the initramfs on an OSTree system it booted (ostree-prepare-root's flag).
const BOOTED_FLAG: &str = "/run/ostree-booted";
/// Where a booted OSTree system has its physical root filesystem.
const PHYSICAL_ROOT: &str = "/sysroot";

/// On a booted system the physical root is mounted read-only at /sysroot (as
/// the initramfs leaves it, and ostree-prepare-root does): make it writable for
/// this process, as libostree's own tools do — in a mount namespace of its own
/// when the kernel allows it, so the rest of the system keeps seeing it
/// read-only; else in place.
fn writable_physical_root(mount: &std::path::Path) -> Result<()> {
    use nix::mount::MsFlags;
    use nix::sys::statvfs::{FsFlags, statvfs};
    let st = statvfs(mount).with_context(|| format!("reading the mount flags of {}", mount.display()))?;
    if !st.flags().contains(FsFlags::ST_RDONLY) {
        return Ok(());
    }
    // The namespace needs a single-threaded process (unshare(2): CLONE_NEWNS
    // implies CLONE_FS); the device verbs get here before starting any thread.
    let private = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_ok();
    if !private {
        tracing::warn!(mount = %mount.display(), "no private mount namespace: remounting read-write for every process");
    }
    // A remount replaces the per-mount flags: keep the ones it had, minus read-only.
    let keep = [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_SILENT;
    for (st_flag, ms_flag) in keep {
        if st.flags().contains(st_flag) {
            flags |= ms_flag;
        }
    }
    nix::mount::mount(None::<&str>, mount, None::<&str>, flags, None::<&str>).with_context(|| {
        format!(
            "remounting {} read-write (the physical root, where the repository and deployments are)",
            mount.display()
        )
    })
}

/// Held while one device operation runs; released on drop (or when the process dies).
pub struct Lock {
    _flock: nix::fcntl::Flock<File>,
}

/// Public keys in every regular file of `dir` in the deployment (resolved inside it).
fn read_keys(tree: &Tree, dir: &str) -> Result<Vec<ed25519_dalek::VerifyingKey>> {
    let Some(d) = tree.open_dir(dir)? else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    for e in d.entries().with_context(|| format!("listing {dir}"))? {
        let e = e.with_context(|| format!("listing {dir}"))?;
        if e.file_type()?.is_file() {
            if let Some(n) = e.file_name().to_str() {
                names.push(n.to_string());
            }
        }
    }
    names.sort();
    let mut keys = Vec::new();
    for n in names {
        let path = format!("{dir}/{n}");
        let Some(bytes) = tree.read(&path, MAX_KEY_FILE)? else {
            continue;
        };
        let text = String::from_utf8(bytes).with_context(|| format!("{path}: not UTF-8 text"))?;
        keys.extend(crate::sign::keys::parse_public_keys(&text).with_context(|| format!("in {path}"))?);
    }
    Ok(keys)
}

/// `remote:ref` split; a refspec without a remote has none.
pub fn split_refspec(refspec: &str) -> (Option<&str>, &str) {
    match refspec.split_once(':') {
        Some((r, n)) => (Some(r), n),
        None => (None, refspec),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn refspecs_split_at_the_first_colon() {
        assert_eq!(super::split_refspec("origin:a/b"), (Some("origin"), "a/b"));
        assert_eq!(super::split_refspec("a/b"), (None, "a/b"));
    }
}
