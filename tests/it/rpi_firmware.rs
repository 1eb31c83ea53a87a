//! The Raspberry Pi's closed boot firmware goes from Debian's raspi-firmware
//! (non-free-firmware, fetched through the sample repository's private apt
//! configuration) through the sample `raspi-firmware` RPM and the composed tree
//! onto the FAT partition of the rpi3 and rpi4 images, unchanged.

use crate::common::{self, Deadline as _};

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{arbor, ok_json, run};

/// What each board's FAT partition must carry, byte for byte as Debian ships it.
const BOARDS: [(&str, &[&str]); 2] = [
    ("rpi3", &["bootcode.bin", "start.elf", "fixup.dat"]),
    ("rpi4", &["start4.elf", "fixup4.dat"]),
];
/// Where Debian's package (and so the RPM) puts them.
const FIRMWARE_DIR: &str = "usr/lib/raspi-firmware";

/// The .deb in the sample repository's download cache that the built
/// `raspi-firmware` RPM was made from: the one whose Debian version maps to the
/// RPM's version and release (the archive's version is never named here).
fn source_deb() -> PathBuf {
    let rpm_evr = common::query_package("raspi-firmware", "noarch", "%{VERSION}-%{RELEASE}");
    let cache = arbor_sample_repo::default_deb_cache();
    let debs: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap_or_else(|e| panic!("reading the deb cache {}: {e}", cache.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("raspi-firmware_") && name.ends_with(".deb")
        })
        .collect();
    let matching: Vec<PathBuf> = debs
        .iter()
        .filter(|deb| {
            let control = arbor_sample_repo::debs::control(deb).unwrap();
            let evr = arbor_sample_repo::debs::deb_to_rpm_evr(&control.version).unwrap();
            control.package == "raspi-firmware" && format!("{}-{}", evr.version, evr.release) == rpm_evr
        })
        .cloned()
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "exactly one raspi-firmware .deb in {} must be the source of raspi-firmware {rpm_evr}; found {debs:?}",
        cache.display()
    );
    matching.into_iter().next().unwrap()
}

/// The aarch64 sample tree (treefiles/sample-minimal.yaml, scriptlets run) composed into `dir/repo`.
fn compose(dir: &Path) -> (PathBuf, serde_json::Value) {
    let repo = dir.join("repo");
    let out = arbor()
        .args(["compose", "tree", "--arch", "aarch64", "--json", "--repo"])
        .arg(&repo)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg(common::root().join("treefiles/sample-minimal.yaml"))
        .timed_output()
        .unwrap();
    let v = ok_json(&out);
    (repo, v)
}

/// `arbor image --board BOARD --json` of the composed sample tree, into `dir/BOARD.img`.
fn image(repo: &Path, board: &str, dir: &Path) -> serde_json::Value {
    let out = arbor()
        .args([
            "image",
            "--ref",
            "arbor/aarch64/sample-minimal",
            "--board",
            board,
            "--repo",
        ])
        .arg(repo)
        .arg("-o")
        .arg(dir.join(format!("{board}.img")))
        .arg("--json")
        .timed_output()
        .unwrap();
    ok_json(&out)
}

/// Byte offset of the image's firmware (FAT) partition, from `arbor image --json`.
fn firmware_offset(v: &serde_json::Value) -> u64 {
    v["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("no partitions in {v}"))
        .iter()
        .find(|p| p["role"] == "firmware")
        .unwrap_or_else(|| panic!("no firmware partition in {v}"))["start"]
        .as_u64()
        .unwrap()
}

#[test]
#[ignore = "needs root: arbor image needs root"]
fn rpi_images_carry_debians_firmware_byte_for_byte() {
    common::need_root();
    common::sample_repo();
    let t = tempfile::tempdir().unwrap();

    // Debian's files, straight from the .deb the sample repository downloaded.
    let deb = source_deb();
    let debian = t.path().join("deb");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&debian));

    let (repo, _) = compose(t.path());
    for (board, files) in BOARDS {
        let v = image(&repo, board, t.path());
        let img = v["file"].as_str().unwrap();
        let offset = firmware_offset(&v);
        let out = t.path().join(format!("fat-{board}"));
        std::fs::create_dir(&out).unwrap();
        for name in files {
            let want = std::fs::read(debian.join(FIRMWARE_DIR).join(name))
                .unwrap_or_else(|e| panic!("{name} in {}: {e}", deb.display()));
            assert!(!want.is_empty(), "{name} in {} is empty", deb.display());
            // mcopy fails (and so does the test) when the file is not on the partition.
            run(Command::new("mcopy")
                .arg("-n")
                .arg("-i")
                .arg(format!("{img}@@{offset}"))
                .arg(format!("::/{name}"))
                .arg(out.join(name))
                .env("MTOOLS_SKIP_CHECK", "1"));
            let got = std::fs::read(out.join(name)).unwrap();
            assert!(
                got == want,
                "{board}: {name} on the FAT partition ({} bytes) differs from Debian's ({} bytes, {})",
                got.len(),
                want.len(),
                deb.display()
            );
        }
    }
}

/// A tree without the firmware makes no rpi image: a card that cannot boot is
/// refused, naming the file and the package to add.
#[test]
#[ignore = "needs root: arbor image needs root"]
fn an_rpi_image_of_a_tree_without_the_firmware_is_refused_naming_the_package() {
    common::need_root();
    let sample = common::sample_repo();
    let t = tempfile::tempdir().unwrap();
    // The sample tree's packages with the kernel and U-Boot, but not the firmware.
    let tf = t.path().join("no-firmware.yaml");
    std::fs::write(
        t.path().join("sample.repo"),
        format!(
            "[arbor-sample]\nname=arbor sample\nbaseurl=file://{}/\ngpgcheck=0\n",
            sample.out.display()
        ),
    )
    .unwrap();
    std::fs::write(
        &tf,
        "ref: test/no-firmware\nreleasever: \"1\"\nrepos: [arbor-sample]\n\
         packages: [filesystem, setup, glibc, busybox, sample-init, kernel, uboot-images-armv8]\n\
         boards: [rpi3, rpi4]\n",
    )
    .unwrap();
    let repo = t.path().join("repo");
    ok_json(
        &arbor()
            .args(["compose", "tree", "--arch", "aarch64", "--json", "--repo"])
            .arg(&repo)
            .arg("--cache-dir")
            .arg(t.path().join("cache"))
            .arg(&tf)
            .timed_output()
            .unwrap(),
    );
    for (board, files) in BOARDS {
        let img = t.path().join(format!("{board}.img"));
        let out = arbor()
            .args(["image", "--ref", "test/no-firmware", "--board", board, "--repo"])
            .arg(&repo)
            .arg("-o")
            .arg(&img)
            .timed_output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{board}: an image without the firmware was built"
        );
        assert!(
            err.contains(&format!("{FIRMWARE_DIR}/{}", files[0])) && err.contains("add the package raspi-firmware"),
            "{board}: {err}"
        );
        assert!(!img.exists(), "{board}: {} left behind", img.display());
    }
}
