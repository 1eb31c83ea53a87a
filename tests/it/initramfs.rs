//! `initramfs: arbor` in a compose: a tree with the sample (Debian arm64)
//! kernel gets `/usr/lib/modules/$kver/initramfs.img`, read back with the
//! real `cpio`; composing again gives the same commit.

use crate::common::{self, Deadline as _};

use std::io::Read as _;
use std::process::{Command, Stdio};

use common::{Scratch, err, ok_json, ostree, sample_url};

const WITH_KERNEL: &str =
    "ref: test/kernel\nrepos: [sample]\npackages: [filesystem, setup, busybox, kernel]\nrecommends: false\n";

/// `cpio ARGS` reading `input`, run in `dir`; returns stdout.
fn cpio(args: &[&str], input: &[u8], dir: &std::path::Path) -> String {
    use std::io::Write as _;
    let mut child = Command::new("cpio")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .timed_spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "cpio {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_tree_with_a_kernel_gets_a_reproducible_initramfs() {
    let t = Scratch::new(&sample_url(), WITH_KERNEL);
    let v = ok_json(&t.compose_tree("repo", &["--no-scripts"], &[]));
    let commit = v["commit"].as_str().unwrap().to_string();
    let repo = t.path("repo");
    let kver = common::kernel_release("aarch64");
    let img_path = format!("/usr/lib/modules/{kver}/initramfs.img");
    let ls = ostree(&repo, &["ls", &commit, &img_path]);
    assert!(ls.starts_with("-00644 0 0"), "{ls}");
    assert!(
        ostree(&repo, &["ls", &commit, &format!("/usr/lib/modules/{kver}/modules.dep")]).contains("modules.dep"),
        "depmod ran on the tree"
    );

    let img = Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["cat", &commit, &img_path])
        .timed_output()
        .unwrap();
    assert!(img.status.success(), "{}", String::from_utf8_lossy(&img.stderr));
    let img = img.stdout;
    assert_eq!(&img[..3], b"\x1f\x8b\x08", "gzip");
    let mut archive = Vec::new();
    flate2::read::GzDecoder::new(&img[..])
        .read_to_end(&mut archive)
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let listing = cpio(&["-tv", "--quiet"], &archive, dir.path());
    let line = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")) || l.contains(&format!(" {path} -> ")))
            .unwrap_or_else(|| panic!("{path} not in the initramfs:\n{listing}"))
    };
    assert!(line("init").starts_with("-rwxr-xr-x"), "{}", line("init"));
    assert!(line("bin/busybox").starts_with("-rwxr-xr-x"), "{}", line("bin/busybox"));
    for applet in ["sh", "mount", "switch_root", "insmod", "findfs"] {
        assert!(line(&format!("bin/{applet}")).ends_with(&format!("bin/{applet} -> busybox")));
    }
    assert!(line("dev/console").starts_with("crw-------"), "{}", line("dev/console"));

    let list = {
        let names = cpio(&["-t", "--quiet"], &archive, dir.path());
        assert!(names.lines().any(|l| l == "etc/arbor-initramfs/modules"), "{names}");
        let x = dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        // Everything but the device nodes, which need root to create.
        cpio(&["-idm", "--quiet", "--nonmatching", "dev/*"], &archive, &x);
        assert_eq!(
            std::fs::read(x.join("bin/busybox")).unwrap(),
            Command::new("ostree")
                .arg(format!("--repo={}", repo.display()))
                .args(["cat", &commit, "/usr/sbin/busybox"])
                .timed_output()
                .unwrap()
                .stdout,
            "the tree's busybox"
        );
        assert!(std::fs::read_to_string(x.join("init")).unwrap().contains("switch_root"));
        std::fs::read_to_string(x.join("etc/arbor-initramfs/modules")).unwrap()
    };
    let order: Vec<&str> = list
        .lines()
        .map(|l| l.rsplit('/').next().unwrap().trim_end_matches(".ko"))
        .collect();
    let pos = |m: &str| {
        order
            .iter()
            .position(|o| *o == m)
            .unwrap_or_else(|| panic!("{m} not in {order:?}"))
    };
    for (dep, module) in [
        ("jbd2", "ext4"),
        ("mbcache", "ext4"),
        ("crc16", "ext4"),
        ("sdhci", "sdhci-pltfm"),
        ("sdhci-pltfm", "sdhci-iproc"),
        ("virtio_pci_modern_dev", "virtio_pci"),
    ] {
        assert!(pos(dep) < pos(module), "{dep} loads before {module}: {order:?}");
    }
    for m in ["virtio_blk", "virtio_mmio", "bcm2835", "crc32c_generic"] {
        pos(m);
    }
    assert!(!order.contains(&"mmc_block"), "built into this kernel: {order:?}");
    for l in list.lines() {
        assert!(
            listing.lines().any(|e| e.ends_with(&format!(" {}", &l[1..]))),
            "{l} listed but not in the archive"
        );
    }

    // Same inputs, same commit: the image is byte-for-byte reproducible (and
    // the second compose took the image and depmod's output from the cache).
    let again = ok_json(&t.compose_tree("repo2", &["--no-scripts"], &[]));
    assert_eq!(again["commit"], v["commit"]);
    let count = |d: &str| std::fs::read_dir(t.path(d)).map(|r| r.count()).unwrap_or(0);
    assert_eq!((count("cache/initramfs"), count("cache/depmod")), (1, 1));

    // A later compose date (another package bumped, say) leaves the kernel's
    // image alone: entry times come from the kernel package, so the cached image is it.
    let later = ok_json(&t.compose_tree("repo3", &["--no-scripts"], &[("SOURCE_DATE_EPOCH", "4102444800")]));
    assert_ne!(later["commit"], v["commit"]);
    let object = |repo: &str, commit: &str| {
        let ls = ostree(&t.path(repo), &["ls", "-C", commit, &img_path]);
        ls.split_whitespace().nth(4).unwrap().to_string()
    };
    assert_eq!(
        object("repo3", later["commit"].as_str().unwrap()),
        object("repo", &commit)
    );
    assert_eq!(count("cache/initramfs"), 1, "no second image was built");
}

#[test]
fn initramfs_none_leaves_it_out_and_dracut_is_refused() {
    let t = Scratch::new(&sample_url(), &format!("{WITH_KERNEL}initramfs: none\n"));
    let v = ok_json(&t.compose_tree("repo", &["--no-scripts"], &[]));
    let ls = ostree(
        &t.path("repo"),
        &[
            "ls",
            v["commit"].as_str().unwrap(),
            &format!("/usr/lib/modules/{}", common::kernel_release("aarch64")),
        ],
    );
    assert!(ls.contains("vmlinuz") && !ls.contains("initramfs.img"), "{ls}");

    let t = Scratch::new(&sample_url(), &format!("{WITH_KERNEL}initramfs: dracut\n"));
    let e = err(&t.compose_tree("repo", &["--no-scripts"], &[]));
    assert!(e.contains("initramfs: dracut") && e.contains("not implemented"), "{e}");
}

/// A package whose kernel module directory holds `kernel/host -> target`.
fn module_link_package(kver: &str, target: &str) -> rpm::Package {
    let mut b = rpm::PackageBuilder::new("modlink", "1.0", "MIT", "noarch", "a link in the module directory");
    b.with_symlink(rpm::FileOptions::symlink(
        format!("/usr/lib/modules/{kver}/kernel/host"),
        target,
    ))
    .unwrap();
    b.build().unwrap()
}

#[test]
fn depmod_never_follows_a_module_directory_symlink_out_of_the_tree() {
    let kver = common::kernel_release("aarch64");
    // A real aarch64 module in a host directory, where a link in the tree points.
    let host = tempfile::tempdir().unwrap();
    let unpacked = host.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let sh = format!(
        "rpm2cpio '{}' | cpio -idm --quiet '*/ext4.ko*'",
        common::package("kernel", "aarch64").display()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&sh)
        .current_dir(&unpacked)
        .timed_output()
        .unwrap();
    assert!(out.status.success(), "{sh}: {}", String::from_utf8_lossy(&out.stderr));
    let found = common::run(Command::new("find").arg(&unpacked).args(["-name", "ext4.ko*"]));
    let module = std::path::PathBuf::from(found.lines().next().expect("the sample kernel has ext4.ko"));
    let ext = module.file_name().unwrap().to_string_lossy().replacen("ext4", "", 1);
    let canary = host.path().join("canary");
    std::fs::create_dir(&canary).unwrap();
    std::fs::copy(&module, canary.join(format!("host_canary{ext}"))).unwrap();
    let listing = |p: &std::path::Path| common::run(Command::new("ls").arg("-lR").arg(p));
    let before = listing(host.path());

    let relative = format!(
        "{}{}",
        "../".repeat(16),
        canary.display().to_string().trim_start_matches('/')
    );
    for target in [canary.display().to_string(), relative] {
        let t = Scratch::new(
            &sample_url(),
            "ref: test/kernel\nrepos: [sample, extra]\npackages: [filesystem, setup, busybox, kernel, modlink]\n\
             recommends: false\n",
        );
        common::with_extra_package(&t, module_link_package(&kver, &target));
        let out = t.compose_tree("repo", &["--no-scripts"], &[]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let dep = ostree(
                &t.path("repo"),
                &[
                    "cat",
                    v["commit"].as_str().unwrap(),
                    &format!("/usr/lib/modules/{kver}/modules.dep"),
                ],
            );
            panic!(
                "a tree linking {target} from its module directory composed; host modules indexed: {}",
                dep.contains("host_canary")
            );
        }
        let e = err(&out);
        assert!(
            e.contains(&format!("/usr/lib/modules/{kver}/kernel/host is a symlink")) && e.contains("depmod"),
            "{e}"
        );
    }
    assert_eq!(listing(host.path()), before, "the host directory is untouched");
}
