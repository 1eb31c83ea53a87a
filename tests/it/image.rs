//! `arbor image` against the real partitioning, filesystem and ostree tools,
//! and booting the images in qemu (`arbor image boot-test`). `arbor image`
//! needs root, and so does every test here.

use crate::common::{self, Deadline as _};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{arbor, ok_json, run};

/// The sample aarch64 tree, composed once (with scriptlets) for every test here.
fn composed() -> &'static (tempfile::TempDir, PathBuf) {
    static TREE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    TREE.get_or_init(|| {
        let t = common::shared_tempdir();
        let (repo, _) = compose_shipped(t.path(), "aarch64", "sample-minimal.yaml");
        (t, repo)
    })
}

/// Composes a shipped treefile (with scriptlets) into `dir/repo`: the repo and the compose's JSON.
fn compose_shipped(dir: &Path, arch: &str, treefile: &str) -> (PathBuf, serde_json::Value) {
    common::sample_repo();
    let repo = dir.join("repo");
    let out = arbor()
        .args(["compose", "tree", "--arch", arch, "--json", "--repo"])
        .arg(&repo)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg(common::root().join("treefiles").join(treefile))
        .timed_output()
        .unwrap();
    let v = ok_json(&out);
    (repo, v)
}

/// `arbor image --ref REF --board BOARD --repo REPO -o OUT`.
fn image_cmd(repo: &Path, reference: &str, board: &str, out: &Path) -> Command {
    let mut c = arbor();
    c.args(["image", "--ref", reference, "--board", board, "--repo"])
        .arg(repo)
        .arg("-o")
        .arg(out);
    c
}

/// An image of the shared sample tree, as `arbor image --json` reports it.
fn image(board: &str, dir: &Path, extra: &[&str]) -> serde_json::Value {
    let (_, repo) = composed();
    let out = image_cmd(
        repo,
        "arbor/aarch64/sample-minimal",
        board,
        &dir.join(format!("{board}.img")),
    )
    .arg("--json")
    .args(extra)
    .timed_output()
    .unwrap();
    ok_json(&out)
}

/// Boots `image` in qemu (`arbor image boot-test`) and returns the booted system's marker line.
fn boot_line(image: &serde_json::Value, board: Option<&Path>) -> String {
    let mut c = arbor();
    c.args(["image", "boot-test", "--json"]);
    if let Some(b) = board {
        c.arg("--board").arg(b);
    }
    let out = c.arg(image["file"].as_str().unwrap()).timed_output().unwrap();
    ok_json(&out)["line"].as_str().unwrap().to_string()
}

fn part<'a>(v: &'a serde_json::Value, role: &str) -> &'a serde_json::Value {
    v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == role)
        .unwrap()
}

#[test]
#[ignore = "needs root: arbor image needs root"]
fn qemu_virt_image_is_accepted_by_sfdisk_e2fsck_and_ostree() {
    common::need_root();
    let t = tempfile::tempdir().unwrap();
    let key = t.path().join("device-key");
    run(arbor().arg("keygen").arg("-o").arg(&key));
    let pubkey = format!("{}.pub", key.display());
    let v = image(
        "qemu-virt-aarch64",
        t.path(),
        &["--remote", "https://updates.example.com/repo", "--keys", &pubkey],
    );
    let img = PathBuf::from(v["file"].as_str().unwrap());
    let dump = run(Command::new("sfdisk").arg("-d").arg(&img));
    assert!(dump.contains("label: dos"), "{dump}");
    let boot = part(&v, "boot");
    let root = part(&v, "root");
    let sector = |p: &serde_json::Value| format!("start={:>12}", p["start"].as_u64().unwrap() / 512);
    assert!(dump.contains(&sector(boot)) && dump.contains(&sector(root)), "{dump}");
    assert!(
        dump.contains("bootable"),
        "the boot partition is marked for U-Boot: {dump}"
    );
    for p in [boot, root] {
        run(Command::new("e2fsck")
            .arg("-fn")
            .arg(format!("{}?offset={}", img.display(), p["start"])));
    }
    // The sparse image occupies far less than its size.
    assert!(
        v["allocated"].as_u64().unwrap() < v["size"].as_u64().unwrap() / 2,
        "{v}"
    );
    assert!(Path::new(v["bmap"].as_str().unwrap()).exists());

    // The root filesystem is an ostree sysroot with the commit deployed; /boot
    // (its own partition) is put where the device mounts it.
    let rootfs = t.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    for (p, dest) in [(root, rootfs.clone()), (boot, rootfs.join("boot"))] {
        run(Command::new("debugfs")
            .args(["-R", &format!("rdump / {}", dest.display())])
            .arg(format!("{}?offset={}", img.display(), p["start"])));
    }
    let status = run(Command::new("ostree")
        .arg("admin")
        .arg("status")
        .arg(format!("--sysroot={}", rootfs.display())));
    assert!(status.contains(v["commit"].as_str().unwrap()), "{status}");
    assert!(
        status.contains("origin refspec: origin:arbor/aarch64/sample-minimal"),
        "{status}"
    );
    // The device's update remote and the key it trusts.
    let config = std::fs::read_to_string(rootfs.join("ostree/repo/config")).unwrap();
    assert!(
        config.contains("[remote \"origin\"]") && config.contains("url=https://updates.example.com/repo"),
        "{config}"
    );
    let deploy = rootfs.join(v["deploy_dir"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(deploy.join("etc/arbor/keys/device-key.pub")).unwrap(),
        std::fs::read_to_string(&pubkey).unwrap()
    );
    // The boot partition has extlinux.conf pointing at the deployment's kernel and initramfs.
    let ext = std::fs::read_to_string(rootfs.join("boot/extlinux/extlinux.conf")).unwrap();
    let kver = common::kernel_release("aarch64");
    assert!(
        ext.contains(&format!("vmlinuz-{kver}")) && ext.contains(&format!("initramfs-{kver}.img")),
        "{ext}"
    );
    assert!(ext.contains("ostree=/ostree/boot."), "{ext}");
}

#[test]
#[ignore = "needs root: arbor image needs root"]
fn rpi3_image_has_a_fat_firmware_partition_with_config_and_uboot() {
    common::need_root();
    let t = tempfile::tempdir().unwrap();
    let v = image("rpi3", t.path(), &[]);
    let img = PathBuf::from(v["file"].as_str().unwrap());
    let size = v["size"].as_u64().unwrap();
    assert!(
        size.is_power_of_two(),
        "qemu's SD card model needs a power-of-two size: {size}"
    );
    let fw = part(&v, "firmware");
    let fat = t.path().join("fw.vfat");
    run(Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", fat.display()))
        .arg("bs=1M")
        .arg(format!("skip={}", fw["start"].as_u64().unwrap() >> 20))
        .arg(format!("count={}", fw["size"].as_u64().unwrap() >> 20))
        .arg("status=none"));
    run(Command::new("fsck.vfat").arg("-n").arg(&fat));
    let listing = run(Command::new("mdir").args(["-b", "-i"]).arg(&fat).arg("::/"));
    for want in ["CONFIG.TXT", "U-BOOT.BIN", "BCM2837-RPI-3-B.DTB"] {
        assert!(
            listing.to_uppercase().contains(want),
            "{want} missing from the firmware partition:\n{listing}"
        );
    }
    let config = run(Command::new("mtype").arg("-i").arg(&fat).arg("::/config.txt"));
    assert!(
        config.contains("arm_64bit=1") && config.contains("kernel=u-boot.bin"),
        "{config}"
    );
}

#[test]
#[ignore = "needs root: arbor image needs root"]
fn an_image_named_without_a_directory_lands_in_the_current_one() {
    common::need_root();
    let (_, repo) = composed();
    let t = tempfile::tempdir().unwrap();
    let out = image_cmd(
        repo,
        "arbor/aarch64/sample-minimal",
        "qemu-virt-aarch64",
        Path::new("bare.img"),
    )
    .current_dir(t.path())
    .timed_output()
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["bare.img", "bare.img.bmap", "bare.img.json"] {
        assert!(t.path().join(f).is_file(), "{f} missing");
    }
}

#[test]
#[ignore = "needs root: arbor image needs root"]
fn the_same_inputs_give_the_same_image_bytes() {
    common::need_root();
    let t = tempfile::tempdir().unwrap();
    let a = image("qemu-virt-aarch64", &t.path().join("a"), &[]);
    let b = image("qemu-virt-aarch64", &t.path().join("b"), &[]);
    let same = Command::new("cmp")
        .arg(a["file"].as_str().unwrap())
        .arg(b["file"].as_str().unwrap())
        .timed_status()
        .unwrap();
    assert!(same.success(), "two builds of the same commit and board differ");
}

#[test]
#[ignore = "needs root: arbor image needs root"]
fn an_image_for_another_arch_or_an_unknown_board_is_refused_before_any_work() {
    common::need_root();
    let t = tempfile::tempdir().unwrap();
    let (_, repo) = composed();
    let out = image_cmd(
        repo,
        "arbor/aarch64/sample-minimal",
        "qemu-virt-armv7",
        &t.path().join("x.img"),
    )
    .timed_output()
    .unwrap();
    let e = common::err(&out);
    assert!(e.contains("aarch64 tree") && e.contains("qemu-virt-armv7"), "{e}");
    let out = image_cmd(
        repo,
        "arbor/aarch64/sample-minimal",
        "no-such-board",
        &t.path().join("x.img"),
    )
    .timed_output()
    .unwrap();
    let e = common::err(&out);
    assert!(e.contains("no-such-board"), "{e}");
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0, "nothing written");
}

#[test]
#[ignore = "needs root: arbor image needs root"]
fn the_qemu_virt_image_boots_to_the_deployed_commit() {
    common::need_root();
    let t = tempfile::tempdir().unwrap();
    let v = image("qemu-virt-aarch64", t.path(), &[]);
    let line = boot_line(&v, None);
    assert!(
        line.contains(&format!("commit={}", v["commit"].as_str().unwrap())),
        "{line}"
    );
    assert!(line.contains("arch=aarch64"), "{line}");
    assert!(
        line.contains("usr=ro"),
        "/usr is read-only in the booted deployment: {line}"
    );
}

#[test]
#[ignore = "needs root: arbor image and loop devices need root"]
fn a_boot_test_leaves_the_image_as_built_and_it_flashes_with_its_bmap() {
    common::need_root();
    let t = tempfile::tempdir().unwrap();
    let v = image("qemu-virt-aarch64", t.path(), &[]);
    let img = PathBuf::from(v["file"].as_str().unwrap());
    let sha = |p: &Path| {
        run(Command::new("sha256sum").arg(p))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let built = sha(&img);
    let line = boot_line(&v, None);
    assert!(line.contains("arbor-booted:"), "{line}");
    assert_eq!(sha(&img), built, "the boot test wrote into the image it tested");
    // Its bmap still describes it: bmaptool copies it, and arbor flash writes
    // it onto a block device, as `make demo` suggests at its end.
    let bmap = PathBuf::from(format!("{}.bmap", img.display()));
    let copy = t.path().join("copy.img");
    run(Command::new("bmaptool")
        .args(["copy", "--bmap"])
        .arg(&bmap)
        .arg(&img)
        .arg(&copy));
    let backing = t.path().join("card");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(std::fs::metadata(&img).unwrap().len())
        .unwrap();
    let dev = run(Command::new("losetup").args(["-f", "--show"]).arg(&backing))
        .trim()
        .to_string();
    let out = arbor()
        .arg("flash")
        .arg(&img)
        .args(["--device", &dev, "--yes"])
        .timed_output()
        .unwrap();
    let _ = Command::new("losetup").args(["-d", &dev]).timed_status();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha(&backing), built, "the card does not hold the image");
}

#[test]
#[ignore = "needs root: arbor image needs root"]
fn the_rpi3_image_boots_in_qemu_raspi3b_through_uboot() {
    common::need_root();
    let t = tempfile::tempdir().unwrap();
    let v = image("rpi3", t.path(), &[]);
    let line = boot_line(&v, None);
    assert!(line.contains(v["commit"].as_str().unwrap()), "{line}");
}

/// The Pi 4 boots on the DT its firmware hands U-Boot (no `fdt` line), which
/// qemu raspi4b plays with the FAT partition's DTB, edited for what it lacks.
#[test]
#[ignore = "needs root: arbor image needs root"]
fn the_rpi4_image_boots_in_qemu_raspi4b_on_the_firmware_device_tree() {
    common::need_root();
    let t = tempfile::tempdir().unwrap();
    let v = image("rpi4", t.path(), &[]);
    let img = Path::new(v["file"].as_str().unwrap());
    let boot = part(&v, "boot")["start"].as_u64().unwrap();
    let ext = t.path().join("extlinux.conf");
    arbor::image::boottest::ext4_cat(img, boot, "/extlinux/extlinux.conf", &ext).unwrap();
    let ext = std::fs::read_to_string(&ext).unwrap();
    assert!(ext.contains("\tkernel /ostree/") && !ext.contains("fdt"), "{ext}");
    let line = boot_line(&v, None);
    assert!(line.contains(v["commit"].as_str().unwrap()), "{line}");
    let log = std::fs::read_to_string(format!("{}.serial.log", img.display())).unwrap();
    for want in [
        "Retrieving file: /extlinux/extlinux.conf",
        "Machine model: Raspberry Pi 4 Model B",
        "mmcblk0: p1 p2 p3",
    ] {
        assert!(log.contains(want), "{want:?} not in the serial log:\n{log}");
    }
}

#[test]
#[ignore = "needs root: arbor image needs root"]
fn a_build_killed_at_any_point_leaves_nothing_at_the_output_path() {
    common::need_root();
    let (_, repo) = composed();
    let t = tempfile::tempdir().unwrap();
    let out_path = t.path().join("disk.img");
    for fp in arbor::failpoint::ALL.iter().filter(|f| f.starts_with("image::")) {
        let out = image_cmd(repo, "arbor/aarch64/sample-minimal", "qemu-virt-aarch64", &out_path)
            .env("ARBOR_FAILPOINT", fp)
            .timed_output()
            .unwrap();
        assert!(!out.status.success(), "{fp}: expected a kill");
        for p in [
            out_path.clone(),
            t.path().join("disk.img.bmap"),
            t.path().join("disk.img.json"),
        ] {
            assert!(!p.exists(), "{fp}: {} exists after a killed build", p.display());
        }
    }
    // A rerun completes.
    let v = image("qemu-virt-aarch64", t.path(), &[]);
    assert!(Path::new(v["file"].as_str().unwrap()).exists());
}

#[test]
#[ignore = "needs root: arbor image needs root"]
fn a_gpt_board_gets_a_valid_gpt_and_boots() {
    common::need_root();
    let t = tempfile::tempdir().unwrap();
    let board = t.path().join("virt-gpt.toml");
    let text = std::fs::read_to_string(common::root().join("boards/qemu-virt-aarch64.toml")).unwrap();
    std::fs::write(
        &board,
        text.replace("partition_table = \"mbr\"", "partition_table = \"gpt\"")
            .replace("name = \"qemu-virt-aarch64\"", "name = \"virt-gpt\""),
    )
    .unwrap();
    let v = image(board.to_str().unwrap(), t.path(), &[]);
    let img = v["file"].as_str().unwrap();
    let dump = run(Command::new("sfdisk").arg("-d").arg(img));
    assert!(
        dump.contains("label: gpt") && dump.contains("LegacyBIOSBootable"),
        "{dump}"
    );
    // sfdisk checks both headers, their CRCs and the entries.
    run(Command::new("sfdisk").arg("--verify").arg(img));
    assert!(boot_line(&v, Some(&board)).contains(v["commit"].as_str().unwrap()));
}

#[test]
#[ignore = "needs root: arbor image needs root"]
fn an_armv7_tree_composes_under_qemu_arm_and_its_image_boots() {
    common::need_root();
    let t = tempfile::tempdir().unwrap();
    let (repo, c) = compose_shipped(t.path(), "armv7hl", "sample-armv7.yaml");
    let out = image_cmd(
        &repo,
        "arbor/armhfp/sample-armv7",
        "qemu-virt-armv7",
        &t.path().join("armv7.img"),
    )
    .arg("--json")
    .timed_output()
    .unwrap();
    let v = ok_json(&out);
    assert_eq!(v["commit"], c["commit"]);
    let line = boot_line(&v, None);
    assert!(
        line.contains(c["commit"].as_str().unwrap()) && line.contains("arch=armv7l"),
        "{line}"
    );
}

/// A canary directory at the top of the host's / (so that the same path can
/// also exist inside a tree, where the device would find it), and its name.
fn host_canary() -> (tempfile::TempDir, String) {
    let canary = tempfile::Builder::new()
        .prefix("arbor-canary-")
        .tempdir_in("/")
        .unwrap();
    let name = canary.path().file_name().unwrap().to_str().unwrap().to_string();
    (canary, name)
}

/// A tree whose firmware, blob, kernel directory and `/etc/arbor` are symlinks
/// aimed at the build host (absolute, a run of `../`, `/proc/self/environ`):
/// `arbor image` resolves them inside the deployment, as the device would, and
/// neither reads nor writes the host through them.
#[test]
#[ignore = "needs root: arbor image needs root, and the canaries are files in the host's /"]
fn symlinks_in_the_tree_resolve_inside_the_deployment_never_on_the_build_host() {
    common::need_root();
    let (_, base) = composed();
    let t = tempfile::tempdir().unwrap();
    let (canary, cname) = host_canary();
    let host_secret = format!("HOST-SECRET-{cname}");
    let env_secret = format!("ENV-SECRET-{cname}");
    let device_bytes = format!("DEVICE-FIRMWARE-{cname}");
    std::fs::write(canary.path().join("secret"), &host_secret).unwrap();
    std::fs::create_dir(canary.path().join("etc-arbor")).unwrap();
    std::fs::create_dir(canary.path().join("modules")).unwrap();
    std::fs::write(canary.path().join("modules/vmlinuz"), "a host kernel").unwrap();
    let host_listing = || {
        let mut v: Vec<String> = walk(canary.path());
        v.sort();
        v
    };
    let before = host_listing();

    // The hostile commit: the sample tree plus links out of it (enough `../` to
    // reach / from any staging directory), and, at the
    // links' targets inside the tree, what the device would read there.
    let overlay = t.path().join("overlay");
    let inside = overlay.join(&cname);
    std::fs::create_dir_all(inside.join("etc-arbor")).unwrap();
    std::fs::write(inside.join("secret"), &device_bytes).unwrap();
    let fw = overlay.join("usr/lib/raspi-firmware");
    std::fs::create_dir_all(&fw).unwrap();
    let abs = canary.path().join("secret");
    std::os::unix::fs::symlink(&abs, fw.join("start.elf")).unwrap();
    std::os::unix::fs::symlink(format!("{}{}", "../".repeat(40), abs.display()), fw.join("fixup.dat")).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", fw.join("bootcode.bin")).unwrap();
    std::fs::create_dir_all(overlay.join("usr/lib/hostile")).unwrap();
    std::os::unix::fs::symlink(
        format!("{}{}", "../".repeat(40), abs.display()),
        overlay.join("usr/lib/hostile/spl.bin"),
    )
    .unwrap();
    std::fs::create_dir_all(overlay.join("usr/lib/modules")).unwrap();
    std::os::unix::fs::symlink(canary.path().join("modules"), overlay.join("usr/lib/modules/zzzz-host")).unwrap();
    std::fs::create_dir_all(overlay.join("usr/etc")).unwrap();
    std::os::unix::fs::symlink(canary.path().join("etc-arbor"), overlay.join("usr/etc/arbor")).unwrap();

    let repo = t.path().join("repo");
    let mode = common::ostree(base, &["config", "get", "core.mode"]);
    common::ostree(&repo, &["init", &format!("--mode={}", mode.trim())]);
    common::ostree(
        &repo,
        &["pull-local", base.to_str().unwrap(), "arbor/aarch64/sample-minimal"],
    );
    common::ostree(
        &repo,
        &[
            "commit",
            "--branch=hostile",
            "--tree=ref=arbor/aarch64/sample-minimal",
            &format!("--tree=dir={}", overlay.display()),
            "--owner-uid=0",
            "--owner-gid=0",
            "--add-metadata-string=arbor.arch=aarch64",
            "--add-metadata-string=version=hostile",
        ],
    );

    // rpi3 with a bootloader blob read from the tree.
    let board = t.path().join("hostile-rpi3.toml");
    let text = std::fs::read_to_string(common::root().join("boards/rpi3.toml")).unwrap();
    std::fs::write(
        &board,
        // bootcode.bin (-> /proc/self/environ, which the tree does not have) optional: skipped, not read on the host.
        text.replace("name = \"rpi3\"", "name = \"hostile-rpi3\"").replace(
            "bootcode.bin\"\npackage = \"raspi-firmware\"",
            "bootcode.bin\"\noptional = true",
        ) + "\n[[blobs]]\nfrom = \"/usr/lib/hostile/spl.bin\"\noffset = \"8KiB\"\nsize = \"32KiB\"\n",
    )
    .unwrap();
    let key = t.path().join("device-key");
    run(arbor().arg("keygen").arg("-o").arg(&key));
    let pubkey = PathBuf::from(format!("{}.pub", key.display()));
    let out = image_cmd(&repo, "hostile", board.to_str().unwrap(), &t.path().join("h.img"))
        .arg("--json")
        .arg("--keys")
        .arg(&pubkey)
        .env("ARBOR_TEST_CANARY", &env_secret)
        .timed_output()
        .unwrap();
    let mut failures = Vec::new();
    let after = host_listing();
    if before != after {
        failures.push(format!(
            "arbor image changed the host canary directory: {before:?} -> {after:?}"
        ));
    }
    let v = ok_json(&out);
    let img = PathBuf::from(v["file"].as_str().unwrap());
    let fwp = part(&v, "firmware");
    let (start, len) = (fwp["start"].as_u64().unwrap(), fwp["size"].as_u64().unwrap());
    let head = {
        use std::io::Read;
        let mut b = Vec::new();
        std::fs::File::open(&img)
            .unwrap()
            .take(start + len)
            .read_to_end(&mut b)
            .unwrap();
        b
    };
    for secret in [&host_secret, &env_secret] {
        if head.windows(secret.len()).any(|w| w == secret.as_bytes()) {
            failures.push(format!("{secret} is in the image's blob area or firmware partition"));
        }
    }
    if &head[8192..8192 + device_bytes.len()] != device_bytes.as_bytes() {
        failures.push("the blob is not the tree's file its link names".to_string());
    }
    let fat = t.path().join("fw.vfat");
    std::fs::write(&fat, &head[start as usize..]).unwrap();
    for name in ["start.elf", "fixup.dat"] {
        let got = Command::new("mtype")
            .arg("-i")
            .arg(&fat)
            .arg(format!("::/{name}"))
            .timed_output()
            .unwrap();
        if got.stdout != device_bytes.as_bytes() {
            failures.push(format!(
                "{name} on the FAT partition: {:?}",
                String::from_utf8_lossy(&got.stdout)
            ));
        }
    }
    let listing = run(Command::new("mdir").args(["-b", "-i"]).arg(&fat).arg("::/"));
    if listing.to_lowercase().contains("bootcode.bin") {
        failures.push(format!("bootcode.bin (-> /proc/self/environ) was copied:\n{listing}"));
    }
    if v["kernel"] == "zzzz-host" {
        failures.push("the kernel was looked up on the host through /usr/lib/modules/zzzz-host".to_string());
    }
    // The key went where the device finds /etc/arbor: the link's target inside the tree.
    let root = part(&v, "root");
    let installed = Command::new("debugfs")
        .arg("-R")
        .arg(format!(
            "cat /{}/{cname}/etc-arbor/keys/device-key.pub",
            v["deploy_dir"].as_str().unwrap().trim_start_matches('/')
        ))
        .arg(format!("{}?offset={}", img.display(), root["start"]))
        .timed_output()
        .unwrap();
    if installed.stdout != std::fs::read(&pubkey).unwrap() {
        failures.push(format!(
            "the key is not at the link's target inside the deployment: {}",
            String::from_utf8_lossy(&installed.stderr)
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every file under `dir` with its contents, for before/after comparisons.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.push(format!("{}/", p.display()));
            out.extend(walk(&p));
        } else {
            out.push(format!(
                "{} {:?}",
                p.display(),
                String::from_utf8_lossy(&std::fs::read(&p).unwrap())
            ));
        }
    }
    out
}

/// A commit whose kernel, initramfs, device-tree directory or a device tree in
/// it is a symlink aimed at the build host (absolute, or a run of `../`).
/// libostree's deploy copies these into /boot itself, following such links on
/// the build host, so `arbor image` checks the commit first and refuses the
/// link by its path in the tree; the host's bytes never reach the image.
#[test]
#[ignore = "needs root: arbor image needs root, and the canaries are files in the host's /"]
fn boot_files_that_are_symlinks_are_refused_before_libostree_copies_them_into_boot() {
    common::need_root();
    let (_, base) = composed();
    let t = tempfile::tempdir().unwrap();
    let (canary, cname) = host_canary();
    let host_secret = format!("HOST-SECRET-{cname}");
    let device_bytes = format!("DEVICE-BOOT-{cname}");
    std::fs::write(canary.path().join("secret"), &host_secret).unwrap();
    std::fs::create_dir(canary.path().join("dtb")).unwrap();
    std::fs::write(canary.path().join("dtb/host.dtb"), &host_secret).unwrap();
    // libostree puts os-release's PRETTY_NAME into the boot entry's title.
    std::fs::write(
        canary.path().join("os-release"),
        format!("ID=host\nPRETTY_NAME=\"{host_secret}\"\n"),
    )
    .unwrap();
    let before = walk(canary.path());

    let repo = t.path().join("repo");
    let mode = common::ostree(base, &["config", "get", "core.mode"]);
    common::ostree(&repo, &["init", &format!("--mode={}", mode.trim())]);
    common::ostree(
        &repo,
        &["pull-local", base.to_str().unwrap(), "arbor/aarch64/sample-minimal"],
    );
    let kdir = format!("usr/lib/modules/{}", common::kernel_release("aarch64"));
    let abs = canary.path().join("secret");
    let up = format!("{}{}", "../".repeat(40), abs.display());
    // (the link in the tree, where it points)
    let cases = [
        (format!("{kdir}/vmlinuz"), abs.display().to_string()),
        (format!("{kdir}/initramfs.img"), up.clone()),
        (format!("{kdir}/dtb"), canary.path().join("dtb").display().to_string()),
        (format!("{kdir}/dtb/{}", first_file(&repo, &format!("/{kdir}/dtb"))), up),
        (
            "usr/lib/os-release".to_string(),
            canary.path().join("os-release").display().to_string(),
        ),
    ];
    let mut failures = Vec::new();
    for (i, (link, target)) in cases.iter().enumerate() {
        // The sample tree with the link in place, and, at the link's target inside
        // the tree, what the device would read there.
        let co = t.path().join(format!("co-{i}"));
        common::ostree(
            &repo,
            &["checkout", "-U", "arbor/aarch64/sample-minimal", co.to_str().unwrap()],
        );
        let inside = co.join(&cname);
        std::fs::create_dir_all(inside.join("dtb")).unwrap();
        std::fs::write(inside.join("secret"), &device_bytes).unwrap();
        std::fs::write(inside.join("dtb/board.dtb"), &device_bytes).unwrap();
        std::fs::write(
            inside.join("os-release"),
            format!("ID=device\nPRETTY_NAME=\"{device_bytes}\"\n"),
        )
        .unwrap();
        let at = co.join(link);
        if at.symlink_metadata().unwrap().is_dir() {
            std::fs::remove_dir_all(&at).unwrap();
        } else {
            std::fs::remove_file(&at).unwrap();
        }
        std::os::unix::fs::symlink(target, &at).unwrap();
        let branch = format!("hostile-{i}");
        common::ostree(
            &repo,
            &[
                "commit",
                &format!("--branch={branch}"),
                &format!("--tree=dir={}", co.display()),
                "--link-checkout-speedup",
                "--add-metadata-string=arbor.arch=aarch64",
                "--add-metadata-string=version=hostile",
            ],
        );

        let img = t.path().join(format!("h-{i}.img"));
        let out = image_cmd(&repo, &branch, "qemu-virt-aarch64", &img)
            .arg("--json")
            .timed_output()
            .unwrap();
        if !out.status.success() {
            let e = common::err(&out);
            if !(e.contains(&format!("/{link}")) && e.contains("symlink")) {
                failures.push(format!("{link}: refused without naming the link in the tree: {e}"));
            }
            if img.exists() {
                failures.push(format!("{link}: refused, yet {} exists", img.display()));
            }
            continue;
        }
        // Built: the boot partition holds neither the host's bytes nor links out of it.
        let v = ok_json(&out);
        let boot = part(&v, "boot");
        let (start, len) = (boot["start"].as_u64().unwrap(), boot["size"].as_u64().unwrap());
        if holds(&img, start, len, host_secret.as_bytes()) {
            failures.push(format!("{link}: the host's bytes are in the boot partition"));
        }
        let dump = t.path().join(format!("boot-{i}"));
        std::fs::create_dir(&dump).unwrap();
        run(Command::new("debugfs")
            .args(["-R", &format!("rdump /ostree {}", dump.display())])
            .arg(format!("{}?offset={start}", img.display())));
        for (p, kind) in entries(&dump) {
            if kind.is_symlink() {
                failures.push(format!(
                    "{link}: /boot/{} is a symlink to {}",
                    p.strip_prefix(&dump).unwrap().display(),
                    std::fs::read_link(&p).unwrap().display()
                ));
            }
        }
        std::fs::remove_file(&img).unwrap();
    }
    if walk(canary.path()) != before {
        failures.push("arbor image changed the host canary directory".to_string());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The first regular file (sorted) beneath `dir` in the sample commit of `repo`.
fn first_file(repo: &Path, dir: &str) -> String {
    let listing = common::ostree(repo, &["ls", "-R", "arbor/aarch64/sample-minimal", dir]);
    let mut files: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    files.sort();
    let f = files
        .first()
        .unwrap_or_else(|| panic!("no file beneath {dir}:\n{listing}"));
    f.strip_prefix(dir).unwrap().trim_start_matches('/').to_string()
}

/// Every path beneath `dir` with its type, symlinks not followed.
fn entries(dir: &Path) -> Vec<(PathBuf, std::fs::FileType)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let kind = e.file_type().unwrap();
        out.push((e.path(), kind));
        if kind.is_dir() {
            out.extend(entries(&e.path()));
        }
    }
    out
}

/// Whether `len` bytes of `file` from `start` contain `needle`, read in chunks.
fn holds(file: &Path, start: u64, len: u64, needle: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(file).unwrap();
    f.seek(SeekFrom::Start(start)).unwrap();
    let mut f = f.take(len);
    let mut buf = vec![0u8; 1 << 20];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return false;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        let keep = needle.len().saturating_sub(1).min(tail.len());
        tail.drain(..tail.len() - keep);
    }
}
