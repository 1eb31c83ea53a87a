//! Lockfiles: the exact package set of a compose (NEVRA + checksum), in
//! rpm-ostree's JSON shape, so a later compose can reproduce it or say exactly
//! which package differs.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::solve::Package;

/// A lockfile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lockfile {
    /// name → locked version and digest.
    pub packages: BTreeMap<String, Locked>,
    /// rpm-ostree writes generation metadata here; kept as is, never required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// One locked package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locked {
    /// `[epoch:]version-release.arch`.
    pub evra: String,
    /// `sha256:<hex>` of the .rpm file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl Lockfile {
    /// The lock for a resolved set.
    pub fn from_packages(pkgs: &[Package]) -> Lockfile {
        let packages = pkgs
            .iter()
            .map(|p| {
                let locked = Locked {
                    evra: format!("{}.{}", p.evr, p.arch),
                    digest: Some(format!("{}:{}", p.checksum_type, p.checksum)),
                };
                (p.name.clone(), locked)
            })
            .collect();
        Lockfile {
            packages,
            metadata: None,
        }
    }

    /// Reads a lockfile.
    pub fn load(path: &Path) -> Result<Lockfile> {
        // A lockfile lists every package of a tree: a few hundred kilobytes.
        let text = crate::input::read_text(path, "lockfile", 64 << 20)?;
        serde_json::from_str(&text).with_context(|| format!("lockfile {} is not valid", path.display()))
    }

    /// Writes the lockfile atomically (temp file, fsync, rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self).context("encoding the lockfile")?;
        text.push(b'\n');
        crate::atomic::write(path, &text).with_context(|| format!("writing lockfile {}", path.display()))
    }

    /// name → evra, the form the solver takes.
    pub fn evras(&self) -> BTreeMap<String, String> {
        self.packages.iter().map(|(n, l)| (n.clone(), l.evra.clone())).collect()
    }

    /// Fails naming every package where `pkgs` differs from the lock.
    pub fn check(&self, pkgs: &[Package]) -> Result<()> {
        let got = Lockfile::from_packages(pkgs);
        let mut diffs = Vec::new();
        for (name, want) in &self.packages {
            match got.packages.get(name) {
                None => diffs.push(format!("{name}: locked at {} but not in the resolved set", want.evra)),
                Some(have) if have.evra != want.evra => {
                    diffs.push(format!("{name}: locked at {}, resolved {}", want.evra, have.evra))
                }
                Some(have) if want.digest.is_some() && have.digest != want.digest => diffs.push(format!(
                    "{name}-{}: digest {} in the repository, {} in the lockfile",
                    want.evra,
                    have.digest.as_deref().unwrap_or("?"),
                    want.digest.as_deref().unwrap_or("?")
                )),
                Some(_) => {}
            }
        }
        for (name, have) in &got.packages {
            if !self.packages.contains_key(name) {
                diffs.push(format!("{name}-{}: resolved but not in the lockfile", have.evra));
            }
        }
        if !diffs.is_empty() {
            bail!(
                "the resolved set differs from the lockfile:\n  - {}",
                diffs.join("\n  - ")
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, evr: &str, sum: &str) -> Package {
        Package {
            name: name.into(),
            evr: evr.into(),
            arch: "aarch64".into(),
            repo: "r".into(),
            location: format!("Packages/{name}.rpm"),
            checksum_type: "sha256".into(),
            checksum: sum.into(),
            download_size: 1,
            install_size: 1,
        }
    }

    #[test]
    fn check_names_each_difference() {
        let lock = Lockfile::from_packages(&[pkg("a", "1-1", "aa"), pkg("b", "1-1", "bb")]);
        assert!(lock.check(&[pkg("a", "1-1", "aa"), pkg("b", "1-1", "bb")]).is_ok());
        let e = lock
            .check(&[pkg("a", "2-1", "aa"), pkg("c", "1-1", "cc")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("a: locked at 1-1.aarch64, resolved 2-1.aarch64"), "{e}");
        assert!(
            e.contains("b: locked at 1-1.aarch64 but not in the resolved set"),
            "{e}"
        );
        assert!(e.contains("c-1-1.aarch64: resolved but not in the lockfile"), "{e}");
        let e = lock
            .check(&[pkg("a", "1-1", "zz"), pkg("b", "1-1", "bb")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a-1-1.aarch64: digest sha256:zz in the repository, sha256:aa in the lockfile"),
            "{e}"
        );
    }

    #[test]
    fn reads_rpm_ostree_shape() {
        let text = r#"{"packages": {"bash": {"evra": "5.2-1.aarch64", "digest": "sha256:ab"}}, "metadata": {"generated": "2024"}}"#;
        let lock: Lockfile = serde_json::from_str(text).unwrap();
        assert_eq!(lock.evras()["bash"], "5.2-1.aarch64");
    }
}
