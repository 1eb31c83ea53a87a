//! What this host offers arbor: tools on PATH, kernel features, library versions.
//! Read-only; `arbor doctor` prints it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::arch::Arch;

/// One external tool and whether it was found.
#[derive(Debug, Clone, Serialize)]
pub struct ToolCheck {
    /// Program name.
    pub name: &'static str,
    /// What arbor uses it for.
    pub purpose: &'static str,
    /// Where it was found on PATH.
    pub path: Option<PathBuf>,
}

/// The host report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// arbor's version.
    pub arbor_version: &'static str,
    /// The host's arch, if arbor knows it.
    pub host_arch: Option<Arch>,
    /// `uname -r`.
    pub kernel_release: String,
    /// Linux ≥ 6.7 lets each user namespace mount its own binfmt_misc.
    pub private_binfmt_misc: bool,
    /// The running kernel allows creating user namespaces.
    pub user_namespaces: bool,
    /// Linked libsolv version.
    pub libsolv_version: String,
    /// Linked libostree is at least 2022.7.
    pub libostree_ok: bool,
    /// External tools.
    pub tools: Vec<ToolCheck>,
    /// `mke2fs -V`'s version; images are reproducible from 1.47.1 on.
    pub mke2fs_version: Option<String>,
}

impl Report {
    /// Human-readable problems; empty when everything arbor needs is here.
    pub fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = self
            .tools
            .iter()
            .filter(|t| t.path.is_none())
            .map(|t| {
                format!(
                    "{} not found on PATH (needed for {}); run scripts/setup",
                    t.name, t.purpose
                )
            })
            .collect();
        if !self.libostree_ok {
            p.push("libostree is older than 2022.7".into());
        }
        if let Some(v) = self
            .mke2fs_version
            .as_ref()
            .filter(|v| !version_at_least(v, &[1, 47, 1]))
        {
            p.push(format!(
                "mke2fs {v} ignores SOURCE_DATE_EPOCH: images will not be byte-for-byte reproducible (needs 1.47.1; scripts/setup installs it from bookworm-backports)"
            ));
        }
        if !self.user_namespaces {
            p.push("user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0): scriptlets cannot be sandboxed".into());
        }
        p
    }
}

const TOOLS: &[(&str, &str)] = &[
    ("ostree", "interoperability checks (fsck, pull-local, static-delta)"),
    ("rpm", "checking generated packages and rpmdb"),
    ("createrepo_c", "rpm-md metadata for the sample repository"),
    ("dpkg-deb", "reading Debian packages for the sample repository"),
    ("apt-get", "downloading Debian packages for the sample repository"),
    ("mkfs.ext4", "ext4 filesystems in images"),
    ("mkfs.vfat", "FAT firmware partitions"),
    ("sfdisk", "checking partition tables"),
    ("depmod", "kernel module dependencies in the initramfs"),
    ("qemu-aarch64-static", "running aarch64 scriptlets"),
    ("qemu-arm-static", "running armv7hl scriptlets"),
    ("qemu-system-aarch64", "boot tests of aarch64 images"),
    ("qemu-system-arm", "boot tests of armv7 images"),
    ("debugfs", "reading U-Boot and DTBs out of images for boot tests"),
    ("chattr", "removing libostree's immutable deployment directories"),
    ("bmaptool", "checking .bmap files (tests)"),
    ("testsolv", "solver cross-checks and benchmarks"),
];

/// Gathers the report.
pub fn check() -> Report {
    let kernel_release = kernel_release();
    let user_namespaces = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    Report {
        arbor_version: env!("CARGO_PKG_VERSION"),
        host_arch: Arch::host(),
        private_binfmt_misc: kernel_at_least(&kernel_release, (6, 7)),
        kernel_release,
        user_namespaces,
        libsolv_version: crate::solve::libsolv_version(),
        libostree_ok: crate::ostree::library_ok(),
        mke2fs_version: mke2fs_version(),
        tools: TOOLS
            .iter()
            .map(|&(name, purpose)| ToolCheck {
                name,
                purpose,
                path: which(name),
            })
            .collect(),
    }
}

/// `uname -r` (empty if uname fails).
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The version `mke2fs -V` reports (`1.47.2`), if it runs.
fn mke2fs_version() -> Option<String> {
    let out = std::process::Command::new("mke2fs").arg("-V").output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).map(String::from)
}

/// Whether a dotted version (`1.47.2`, `6.18.44-fc`) is at least `want`;
/// a string with no leading number is not.
fn version_at_least(v: &str, want: &[u64]) -> bool {
    let have: Vec<u64> = v.split(['.', '-']).map_while(|p| p.parse().ok()).collect();
    if have.is_empty() {
        return false;
    }
    for (i, w) in want.iter().enumerate() {
        let h = have.get(i).copied().unwrap_or(0);
        if h != *w {
            return h > *w;
        }
    }
    true
}

/// Whether a `uname -r` string is at least `(major, minor)`.
pub fn kernel_at_least(release: &str, want: (u32, u32)) -> bool {
    version_at_least(release, &[u64::from(want.0), u64::from(want.1)])
}

/// Finds `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dotted_versions_compare_numerically() {
        assert!(version_at_least("1.47.2", &[1, 47, 1]));
        assert!(version_at_least("1.47.1", &[1, 47, 1]));
        assert!(!version_at_least("1.47.0", &[1, 47, 1]));
        assert!(version_at_least("1.48", &[1, 47, 1]));
        assert!(!version_at_least("1.9.9", &[1, 47, 1]));
    }

    use super::*;

    #[test]
    fn kernel_versions_compare() {
        assert!(kernel_at_least("6.18.44-fc-v657", (6, 7)));
        assert!(kernel_at_least("6.7.0", (6, 7)));
        assert!(!kernel_at_least("6.1.0-50-arm64", (6, 7)));
        assert!(!kernel_at_least("5.19", (6, 7)));
        assert!(!kernel_at_least("garbage", (6, 7)));
    }

    #[test]
    fn which_finds_sh() {
        assert!(which("sh").is_some());
        assert!(which("arbor-no-such-program").is_none());
    }
}
