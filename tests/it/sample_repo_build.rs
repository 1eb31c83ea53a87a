//! The generator itself: deterministic output, up-to-date detection, and errors
//! that name the manifest and the path. Uses small manifest subsets so it does
//! not rebuild the kernel.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use arbor::arch::Arch;
use arbor_sample_repo::device::{self, DeviceOptions};
use arbor_sample_repo::{Options, ensure};

fn subset(dir: &Path, names: &[&str]) -> Options {
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    for n in names {
        std::fs::copy(common::root().join("samples/packages").join(n), manifests.join(n)).unwrap();
    }
    Options {
        manifests,
        out: dir.join("repo"),
        deb_cache: arbor_sample_repo::default_deb_cache(),
        jobs: 2,
        force: false,
    }
}

fn digests(repo: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for sub in ["Packages", "repodata"] {
        for e in std::fs::read_dir(repo.join(sub)).unwrap() {
            let p = e.unwrap().path();
            let name = format!("{sub}/{}", p.file_name().unwrap().to_string_lossy());
            m.insert(name, arbor_sample_repo::debs::sha256_file(&p).unwrap());
        }
    }
    m
}

#[test]
fn same_inputs_give_identical_bytes_and_a_second_run_builds_nothing() {
    let names = ["busybox.toml", "filesystem.toml", "hello.toml", "glibc.toml"];
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let first = ensure(&subset(a.path(), &names)).unwrap();
    assert!(first.rebuilt);
    assert_eq!(first.packages.len(), 3 + 3 + 1 + 3);
    let other = ensure(&subset(b.path(), &names)).unwrap();
    assert_eq!(
        digests(&first.out),
        digests(&other.out),
        "two builds of the same inputs differ"
    );
    let again = ensure(&subset(a.path(), &names)).unwrap();
    assert!(!again.rebuilt, "unchanged inputs must not rebuild");
    assert_eq!(again.input_digest, first.input_digest);
}

#[test]
fn a_changed_manifest_rebuilds_and_replaces_the_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = subset(tmp.path(), &["hello.toml", "hello-data.toml"]);
    let first = ensure(&opts).unwrap();
    let path = opts.manifests.join("hello-data.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("version = \"2.12\"", "version = \"2.13\"");
    std::fs::write(&path, text).unwrap();
    let second = ensure(&opts).unwrap();
    assert!(second.rebuilt);
    assert_ne!(first.input_digest, second.input_digest);
    let files: Vec<String> = second.packages.iter().map(|p| p.file.clone()).collect();
    assert_eq!(files, ["hello-2.12-1.noarch.rpm", "hello-data-2.13-1.noarch.rpm"]);
    assert!(
        !opts.out.join("Packages/hello-data-2.12-1.noarch.rpm").exists(),
        "old package left behind"
    );
}

#[test]
fn bad_manifests_fail_before_anything_is_replaced_and_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = subset(tmp.path(), &["busybox.toml"]);
    let good = ensure(&opts).unwrap();
    let before = digests(&good.out);
    let path = opts.manifests.join("busybox.toml");
    let cases = [
        (
            "bin/busybox",
            "bin/no-such-file",
            "copy src \"bin/no-such-file\" matches nothing in busybox-static:arm64",
        ),
        (
            "requires = [\"filesystem\"]",
            "requires = [\"filesystem\"]\nfrobnicate = 1",
            "unknown field `frobnicate`",
        ),
        (
            "package = \"busybox-static\"",
            "package = \"arbor-no-such-package\"",
            "arbor-no-such-package:arm64",
        ),
    ];
    let original = std::fs::read_to_string(&path).unwrap();
    for (from, to, want) in cases {
        std::fs::write(&path, original.replace(from, to)).unwrap();
        let e = format!("{:#}", ensure(&opts).unwrap_err());
        assert!(e.contains(want), "want {want:?} in: {e}");
        assert!(e.contains("busybox.toml"), "error must name the manifest: {e}");
        assert_eq!(digests(&good.out), before, "a failed build changed the repository");
    }
}

/// Where `make cross` (scripts/cross) leaves the aarch64 arbor binary and the
/// .debs it was linked against; a missing one fails the test, naming the fix.
fn cross_outputs() -> (PathBuf, PathBuf) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| common::root().join(t))
        .unwrap_or_else(|| common::root().join("target"));
    let arbor = target.join("aarch64-unknown-linux-gnu/device/arbor");
    let debs = target.join("cross/debs-arm64");
    for p in [&arbor, &debs] {
        assert!(
            p.exists(),
            "{} is missing: run `make cross ARCH=aarch64` first",
            p.display()
        );
    }
    (arbor, debs)
}

/// Names of the requirements of an RPM that packages must provide (not rpmlib's own).
fn requires(m: &rpm::PackageMetadata) -> BTreeSet<String> {
    m.get_requires()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .filter(|n| !n.starts_with("rpmlib("))
        .collect()
}

#[test]
#[ignore = "needs make cross: target/aarch64-unknown-linux-gnu/device/arbor and target/cross/debs-arm64"]
fn device_repo_holds_arbor_and_exactly_the_libraries_it_links() {
    let (arbor, debs) = cross_outputs();
    let tmp = tempfile::tempdir().unwrap();
    let opts = DeviceOptions {
        arch: Arch::Aarch64,
        arbor: arbor.clone(),
        debs,
        sample_manifests: common::root().join("samples/packages"),
        device_manifests: None,
        out: tmp.path().join("repo"),
        force: false,
    };
    let summary = device::ensure(&opts).unwrap();
    let read = |dir: &Path, file: &str| rpm::PackageMetadata::open(dir.join("Packages").join(file)).unwrap();
    let built: BTreeMap<String, rpm::PackageMetadata> = summary
        .packages
        .iter()
        .map(|p| (p.name.clone(), read(&summary.out, &p.file)))
        .collect();

    // goblin, not the generator's elfdeps, reads what the binary links.
    let bytes = std::fs::read(&arbor).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let needed: BTreeSet<String> = elf.libraries.iter().map(|l| format!("{l}()(64bit)")).collect();
    assert!(!needed.is_empty(), "{} links no libraries", arbor.display());
    assert_eq!(requires(&built[device::ARBOR_PACKAGE]), needed);
    assert_eq!(
        built[device::ARBOR_PACKAGE].get_version().unwrap(),
        arbor::VERSION,
        "the RPM's version is what arbor --version prints"
    );

    let sample = common::sample_repo();
    let mut provided: BTreeSet<String> = BTreeSet::new();
    for p in sample
        .packages
        .iter()
        .filter(|p| p.arch == "aarch64" || p.arch == "noarch")
    {
        let m = read(&sample.out, &p.file);
        provided.extend(m.get_provides().unwrap().into_iter().map(|d| d.name));
    }
    for m in built.values() {
        provided.extend(m.get_provides().unwrap().into_iter().map(|d| d.name));
    }
    for (name, m) in &built {
        let missing: Vec<String> = requires(m).difference(&provided).cloned().collect();
        assert!(
            missing.is_empty(),
            "{name} requires {missing:?}, which no package provides"
        );
        for f in m.get_file_paths().unwrap() {
            assert!(!f.starts_with("/lib"), "{name} packages {} under /lib", f.display());
        }
    }
    assert!(
        built.contains_key("libostree-1-1"),
        "no libostree-1-1 in {:?}",
        built.keys()
    );
    assert!(!built.contains_key("libc6"), "libc6 is the sample repository's glibc");

    let again = device::ensure(&opts).unwrap();
    assert!(!again.rebuilt, "unchanged inputs must not rebuild");
}
