#![allow(clippy::unwrap_used)] // benches fail loudly on purpose

//! `make bench`: what arbor weighs on the board. For each ARM arch `make cross`
//! built: the arbor binary (cargo profile `device`) and its runtime-library
//! closure as the device repository packages it (`make device-repo`, arbor
//! alone: without the device tree's rpm), against the same measure of
//! Debian's `ostree` command-line client for that arch — the smallest thing
//! that could update an OSTree device — taken through the same closure walk
//! in the same run. Sizes are installed bytes (file content of the RPMs).

use std::path::{Path, PathBuf};
use std::process::Command;

use arbor::arch::Arch;
use arbor_sample_repo::device::{self, DeviceOptions, Report};

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

/// The device repository of `binary` (arbor, or a stand-in) in a scratch directory.
fn closure(root: &Path, arch: Arch, binary: PathBuf, debs: &Path, out: PathBuf) -> Report {
    Report::from(
        device::ensure(&DeviceOptions {
            arch,
            arbor: binary,
            debs: debs.to_path_buf(),
            sample_manifests: root.join("samples/packages"),
            device_manifests: None,
            out,
            force: true,
        })
        .unwrap(),
    )
}

/// Debian's /usr/bin/ostree for `deb_arch`, downloaded into `dir`.
fn debian_ostree(deb_arch: &str, dir: &Path) -> PathBuf {
    run(Command::new("apt-get")
        .args(["-q", "download", &format!("ostree:{deb_arch}")])
        .current_dir(dir));
    let deb = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap();
    let x = dir.join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x));
    x.join("usr/bin/ostree")
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    for (arch, rust_target, deb_arch) in [
        (Arch::Aarch64, "aarch64-unknown-linux-gnu", "arm64"),
        (Arch::Armv7hl, "armv7-unknown-linux-gnueabihf", "armhf"),
    ] {
        let bin = target_dir.join(format!("{rust_target}/device/arbor"));
        let debs = target_dir.join(format!("cross/debs-{deb_arch}"));
        assert!(
            bin.is_file() && debs.is_dir(),
            "{} or {} is missing: `make cross` first (`make bench` runs it)",
            bin.display(),
            debs.display()
        );
        let tmp = tempfile::tempdir().unwrap();
        let a = closure(root, arch, bin.clone(), &debs, tmp.path().join("arbor"));
        let dl = tmp.path().join("ostree-deb");
        std::fs::create_dir(&dl).unwrap();
        let ostree = debian_ostree(deb_arch, &dl);
        let o = closure(root, arch, ostree, &debs, tmp.path().join("ostree"));
        let total = |r: &Report| r.arbor_bytes + r.closure_bytes;
        println!(
            "device size {arch}: arbor {:.1} MB + {} libraries {:.1} MB = {:.1} MB; Debian's ostree CLI {:.1} MB + {} libraries {:.1} MB = {:.1} MB; ratio {:.2}x",
            mb(a.arbor_bytes),
            a.closure_packages,
            mb(a.closure_bytes),
            mb(total(&a)),
            mb(o.arbor_bytes),
            o.closure_packages,
            mb(o.closure_bytes),
            mb(total(&o)),
            total(&a) as f64 / total(&o) as f64
        );
        let mut libs: Vec<_> = a
            .summary
            .packages
            .iter()
            .filter(|p| p.name != device::ARBOR_PACKAGE)
            .collect();
        libs.sort_by_key(|p| std::cmp::Reverse(p.content_bytes));
        let only_arbor: Vec<String> = libs
            .iter()
            .filter(|p| !o.summary.packages.iter().any(|q| q.name == p.name))
            .map(|p| format!("{} {:.1} MB", p.name, mb(p.content_bytes)))
            .collect();
        println!(
            "  largest: {}",
            libs.iter()
                .take(5)
                .map(|p| format!("{} {:.1} MB", p.name, mb(p.content_bytes)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("  libraries arbor needs and ostree does not: {}", only_arbor.join(", "));
    }
}
