//! Which kernel modules go into the initramfs, and in which order: the
//! closure of the wanted modules over `modules.dep`, dependencies first.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};

/// A module's name as modprobe compares it: the file name without `.ko`,
/// with `-` and `_` equivalent (both become `_`).
pub fn module_name(path_or_name: &str) -> String {
    let base = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let base = base.split_once(".ko").map_or(base, |(b, _)| b);
    base.replace('-', "_")
}

/// The modules built into the kernel, by name, from `modules.builtin`.
pub fn builtin(modules_builtin: &str) -> BTreeSet<String> {
    modules_builtin
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect()
}

/// The module files (paths relative to `/usr/lib/modules/$kver`, as
/// `modules.dep` writes them) that loading `wanted` needs, in load order:
/// each module after everything it depends on, each once.
///
/// Names match as modprobe matches them (`sdhci-iproc` is `sdhci_iproc`).
/// A name `modules.dep` does not know is an error; leave out built-in
/// modules first (see [`builtin`]).
pub fn modules_closure(modules_dep: &str, wanted: &[&str]) -> Result<Vec<String>> {
    // name → (path, dependency paths as listed)
    let mut by_name: BTreeMap<String, (&str, Vec<&str>)> = BTreeMap::new();
    let mut by_path: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (n, line) in modules_dep.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((path, deps)) = line.split_once(':') else {
            bail!("modules.dep line {}: no `:` in {line:?}", n + 1);
        };
        let deps: Vec<&str> = deps.split_whitespace().collect();
        by_name.insert(module_name(path), (path, deps.clone()));
        by_path.insert(path, deps);
    }
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    for w in wanted {
        let Some((path, _)) = by_name.get(&module_name(w)) else {
            bail!("kernel module {w} is not in modules.dep (not built as a module for this kernel?)");
        };
        visit(path, &by_path, &mut done, &mut Vec::new(), &mut order)?;
    }
    for p in &order {
        check_plain_ko(p)?;
    }
    Ok(order)
}

fn visit<'a>(
    path: &'a str,
    by_path: &BTreeMap<&'a str, Vec<&'a str>>,
    done: &mut BTreeSet<&'a str>,
    stack: &mut Vec<&'a str>,
    order: &mut Vec<String>,
) -> Result<()> {
    if done.contains(path) {
        return Ok(());
    }
    if stack.contains(&path) {
        bail!("modules.dep has a dependency cycle: {} -> {path}", stack.join(" -> "));
    }
    let Some(deps) = by_path.get(path) else {
        bail!("modules.dep lists {path} as a dependency but has no line for it");
    };
    stack.push(path);
    // modprobe loads a module's list from its end; visiting in that order
    // keeps the same order for modules that do not depend on each other.
    for d in deps.iter().rev() {
        visit(d, by_path, done, stack, order)?;
    }
    stack.pop();
    done.insert(path);
    order.push(path.to_string());
    Ok(())
}

/// The /init loads modules with busybox `insmod`, which reads plain `.ko` only.
fn check_plain_ko(path: &str) -> Result<()> {
    if path.ends_with(".ko") {
        return Ok(());
    }
    bail!(
        "kernel module {path} is compressed; the arbor initramfs loads plain .ko files only \
         (build the kernel with CONFIG_MODULE_COMPRESS_NONE)"
    )
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The lines of Debian's 6.1.0 arm64 `modules.dep` for the default set.
    pub(in crate::compose::initramfs) const DEP: &str = "\
kernel/fs/mbcache.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_mmio.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko
kernel/drivers/block/virtio_blk.ko:
kernel/drivers/mmc/host/sdhci.ko:
kernel/drivers/mmc/host/bcm2835.ko:
kernel/drivers/mmc/host/sdhci-pltfm.ko: kernel/drivers/mmc/host/sdhci.ko
kernel/drivers/mmc/host/sdhci-iproc.ko: kernel/drivers/mmc/host/sdhci-pltfm.ko kernel/drivers/mmc/host/sdhci.ko
";

    fn names(v: &[String]) -> Vec<String> {
        v.iter().map(|p| module_name(p)).collect()
    }

    #[test]
    fn closures_come_dependencies_first() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["ext4"], &["jbd2", "mbcache", "crc16", "ext4"]),
            (&["sdhci-iproc"], &["sdhci", "sdhci_pltfm", "sdhci_iproc"]),
            (
                &["sdhci_iproc", "sdhci", "sdhci-pltfm"],
                &["sdhci", "sdhci_pltfm", "sdhci_iproc"],
            ),
            (
                &["virtio_pci"],
                &["virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci"],
            ),
            (&["virtio-blk", "virtio_blk"], &["virtio_blk"]),
            (&[], &[]),
        ];
        for (wanted, want) in cases {
            let got = modules_closure(DEP, wanted).unwrap();
            assert_eq!(names(&got), *want, "{wanted:?}");
        }
        assert_eq!(
            modules_closure(DEP, &["ext4"]).unwrap(),
            [
                "kernel/fs/jbd2/jbd2.ko",
                "kernel/fs/mbcache.ko",
                "kernel/lib/crc16.ko",
                "kernel/fs/ext4/ext4.ko"
            ]
        );
    }

    #[test]
    fn every_module_follows_its_dependencies() {
        let all = [
            "sdhci_iproc",
            "ext4",
            "virtio_pci",
            "bcm2835",
            "virtio_blk",
            "crc32c_generic",
        ];
        let got = modules_closure(DEP, &all).unwrap();
        let pos = |p: &str| got.iter().position(|g| g == p).unwrap();
        for line in DEP.lines() {
            let (m, deps) = line.split_once(':').unwrap();
            for d in deps.split_whitespace() {
                assert!(pos(d) < pos(m), "{d} before {m} in {got:?}");
            }
        }
        let unique: BTreeSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len());
    }

    #[test]
    fn unknown_compressed_and_broken_inputs_fail_clearly() {
        let e = modules_closure(DEP, &["nosuch"]).unwrap_err().to_string();
        assert!(e.contains("nosuch") && e.contains("modules.dep"), "{e}");
        let e = modules_closure("kernel/a.ko.xz:\n", &["a"]).unwrap_err().to_string();
        assert!(e.contains("compressed") && e.contains("a.ko.xz"), "{e}");
        let e = modules_closure("kernel/a.ko: kernel/b.ko\n", &["a"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("kernel/b.ko"), "{e}");
        let e = modules_closure("a.ko: b.ko\nb.ko: a.ko\n", &["a"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cycle"), "{e}");
        assert!(modules_closure("garbage\n", &["a"]).is_err());
    }

    #[test]
    fn names_and_builtins() {
        assert_eq!(module_name("kernel/drivers/mmc/host/sdhci-iproc.ko"), "sdhci_iproc");
        assert_eq!(module_name("kernel/x/a-b.ko.zst"), "a_b");
        assert_eq!(module_name("virtio-blk"), "virtio_blk");
        let b = builtin("kernel/drivers/mmc/core/mmc_block.ko\nkernel/drivers/virtio/virtio.ko\n");
        assert!(b.contains("mmc_block") && b.contains("virtio") && !b.contains("ext4"));
    }
}
