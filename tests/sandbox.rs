//! The scriptlet sandbox (`arbor run`) against hostile scripts, with real
//! aarch64 programs from the sample repository under qemu-user in a private
//! binfmt_misc instance.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{arbor, package};

/// A tree unpacked with the real rpm2cpio and cpio from sample packages.
fn tree(dir: &Path, arch: &str, names: &[&str]) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    for n in names {
        let rpm = package(n, if *n == "setup" { "noarch" } else { arch });
        let sh = format!("rpm2cpio '{}' | cpio -idm --quiet", rpm.display());
        // Debian's rpm2cpio exits 1 on success; cpio's status is what counts.
        let out = Command::new("sh")
            .arg("-c")
            .arg(&sh)
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{sh}: {}", String::from_utf8_lossy(&out.stderr));
    }
    root
}

fn run_in(root: &Path, extra: &[&str], cmd: &[&str]) -> Output {
    arbor()
        .arg("run")
        .args(extra)
        .arg(root)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap()
}

const BASE: &[&str] = &["filesystem", "setup", "busybox", "glibc", "bash", "ncurses-libs"];

#[test]
fn aarch64_programs_run_under_a_private_qemu_registration() {
    let t = tempfile::tempdir().unwrap();
    let root = tree(t.path(), "aarch64", BASE);
    let before = common::host_binfmt();
    let out = run_in(
        &root,
        &[],
        &[
            "/usr/bin/bash",
            "-c",
            "echo arch=$HOSTTYPE; /usr/sbin/busybox uname -m; /usr/sbin/busybox id -u; /usr/sbin/busybox hostname; \
             /usr/sbin/busybox cat /proc/sys/fs/binfmt_misc/qemu-aarch64; /usr/sbin/busybox ls /dev",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for want in [
        "arch=aarch64",
        "\naarch64\n",
        "\n0\n",
        "arbor\n",
        "flags: PF",
        "urandom",
    ] {
        assert!(stdout.contains(want), "{want:?} missing from:\n{stdout}");
    }
    assert_eq!(common::host_binfmt(), before, "the host's binfmt_misc must not change");
}

#[test]
fn rm_rf_root_inside_leaves_the_host_intact() {
    let t = tempfile::tempdir().unwrap();
    let root = tree(t.path(), "aarch64", &["filesystem", "busybox"]);
    let canary = t.path().join("canary");
    std::fs::write(&canary, "still here").unwrap();
    let out = run_in(&root, &[], &["/usr/sbin/busybox", "rm", "-rf", "/"]);
    // Mount points and /proc cannot be removed, so rm reports failure; that is fine.
    assert!(out.status.code().is_some());
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "still here");
    assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml").exists());
    assert!(Path::new("/usr/bin/env").exists());
    // It did run: the tree's own files are gone.
    assert!(!root.join("usr/sbin/busybox").exists());
}

#[test]
fn scripts_have_no_network() {
    let t = tempfile::tempdir().unwrap();
    let root = tree(t.path(), "aarch64", BASE);
    let out = run_in(
        &root,
        &[],
        &[
            "/usr/bin/bash",
            "-c",
            "exec 3<>/dev/tcp/1.1.1.1/80 && echo CONNECTED; exit 0",
        ],
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("CONNECTED"), "{all}");
    assert!(all.contains("Network is unreachable"), "{all}");
}

#[test]
fn a_hung_script_is_killed_at_the_limit_and_named() {
    let t = tempfile::tempdir().unwrap();
    let root = tree(t.path(), "aarch64", &["filesystem", "busybox"]);
    // A daemon it leaves behind holds the output pipe open: it must not stall the sandbox.
    let out = run_in(
        &root,
        &["--timeout", "2"],
        &[
            "/usr/sbin/busybox",
            "sh",
            "-c",
            "(while :; do :; done) & while :; do :; done",
        ],
    );
    let e = common::err(&out);
    assert!(e.contains("was killed after 2 s"), "{e}");
    assert!(e.contains("while :; do :; done"), "names the command: {e}");
}

#[test]
fn copy_on_write_never_writes_through_a_hardlink() {
    let t = tempfile::tempdir().unwrap();
    let root = tree(t.path(), "aarch64", &["filesystem", "setup", "busybox"]);
    // Stands in for an object of the package cache the checkout hardlinks to.
    let object = t.path().join("object");
    std::fs::hard_link(root.join("etc/passwd"), &object).unwrap();
    let cached = std::fs::read(&object).unwrap();
    let out = run_in(
        &root,
        &["--copy-on-write"],
        &[
            "/usr/sbin/busybox",
            "sh",
            "-c",
            "echo 'hacker:x:0:0::/:/bin/sh' >> /etc/passwd; echo new > /etc/new; /usr/sbin/busybox rm /etc/group",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read(&object).unwrap(),
        cached,
        "the cached object is untouched"
    );
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.ends_with("hacker:x:0:0::/:/bin/sh\n"), "{passwd}");
    assert_eq!(std::fs::read_to_string(root.join("etc/new")).unwrap(), "new\n");
    assert!(!root.join("etc/group").exists());
    // Nothing of the overlay is left beside the tree.
    let left: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn a_symlinked_mount_point_in_the_tree_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let root = tree(t.path(), "aarch64", &["filesystem", "busybox"]);
    std::fs::remove_dir(root.join("tmp")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("tmp")).unwrap();
    let e = common::err(&run_in(&root, &[], &["/usr/sbin/busybox", "true"]));
    assert!(e.contains("the tree's /tmp is not a directory"), "{e}");
}

#[test]
fn a_missing_tree_is_a_clear_error() {
    let e = common::err(&run_in(Path::new("/nonexistent/tree"), &[], &["/bin/sh"]));
    assert!(e.contains("/nonexistent/tree"), "{e}");
}

#[test]
fn runs_without_root_mapping_the_caller_to_root() {
    if !common::is_root() {
        eprintln!("skipped: needs root to create an unprivileged user's tree (run as that user instead)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = tree(t.path(), "aarch64", &["filesystem", "busybox"]);
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(t.path())
        .status()
        .unwrap();
    assert!(chown.success());
    let exe = env!("CARGO_BIN_EXE_arbor");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            exe,
            "run",
            "--copy-on-write",
        ])
        .arg(&root)
        .args([
            "--",
            "/usr/sbin/busybox",
            "sh",
            "-c",
            "/usr/sbin/busybox id -u; echo ok > /etc/rootless",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "as nobody: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    assert_eq!(std::fs::read_to_string(root.join("etc/rootless")).unwrap(), "ok\n");
}

#[test]
fn armv7_programs_run_under_qemu_arm_and_native_ones_without_emulation() {
    let t = tempfile::tempdir().unwrap();
    let arm = tree(&t.path().join("arm"), "armv7hl", &["filesystem", "busybox"]);
    let out = run_in(&arm, &["--arch", "armv7hl"], &["/usr/sbin/busybox", "uname", "-m"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("armv7"), "{:?}", out);

    let native = tree(
        &t.path().join("x86"),
        "x86_64",
        &["filesystem", "busybox", "busybox-sh"],
    );
    // The tree's ELF machine decides: a tree claiming aarch64 whose programs are x86_64 runs natively.
    let out = run_in(
        &native,
        &["--arch", "aarch64"],
        &[
            "/usr/sbin/busybox",
            "sh",
            "-c",
            "/usr/sbin/busybox uname -m; /usr/sbin/busybox ls /proc/sys/fs/binfmt_misc",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("x86_64\n"), "{stdout}");
    assert!(
        !stdout.contains("qemu"),
        "no emulation registered for a native tree: {stdout}"
    );
}
