//! Package content an OSTree tree cannot carry where the package puts it
//! (issue 16): /opt (moved to /usr/lib/opt and linked back at boot, as
//! rpm-ostree does), /usr/local (a link into /var unless `opt-usrlocal: root`),
//! device nodes and FIFOs (tmpfiles.d lines). "Booted" is a checkout of the
//! commit after `systemd-tmpfiles --root --create` made what the tree's
//! tmpfiles.d says, as systemd does at boot; rpm then queries and verifies it.

use crate::common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Deadline as _, Scratch, ok_json, ostree, sample_url};

/// Vendor software in /opt: a directory with a tool, and a symlink beside it.
fn vendor_app() -> rpm::Package {
    let mut b = rpm::PackageBuilder::new("vendor-app", "1.0", "MIT", "noarch", "vendor software in /opt");
    b.with_dir_entry(rpm::FileOptions::dir("/opt/vendor")).unwrap();
    b.with_dir_entry(rpm::FileOptions::dir("/opt/vendor/bin")).unwrap();
    b.with_file_contents(
        b"#!/bin/sh\necho vendor\n".to_vec(),
        rpm::FileOptions::new("/opt/vendor/bin/tool").permissions(0o755),
    )
    .unwrap();
    b.with_symlink(rpm::FileOptions::symlink("/opt/vendor-current", "vendor"))
        .unwrap();
    b.build().unwrap()
}

/// A package that installs into /usr/local.
fn local_tool() -> rpm::Package {
    let mut b = rpm::PackageBuilder::new("local-tool", "1.0", "MIT", "noarch", "a tool in /usr/local");
    b.with_file_contents(
        b"#!/bin/sh\n".to_vec(),
        rpm::FileOptions::new("/usr/local/bin/local-tool").permissions(0o755),
    )
    .unwrap();
    b.build().unwrap()
}

/// Device nodes and FIFOs: in /dev, /run, under a /var directory of the
/// package (owned by `daemon`), and one beneath the read-only /usr.
fn nodes() -> rpm::Package {
    use rpm::FileOptions as F;
    let mut b = rpm::PackageBuilder::new("nodes", "1.0", "MIT", "noarch", "device nodes and FIFOs");
    b.with_special_file(F::character_device("/dev/arbor-test-null", 1, 3).permissions(0o666))
        .unwrap()
        .with_special_file(F::block_device("/dev/arbor-test-loop", 7, 0).permissions(0o660))
        .unwrap()
        .with_special_file(F::fifo("/run/arbor-nodes.fifo").permissions(0o600))
        .unwrap()
        .with_dir_entry(F::dir("/var/lib/arbor-nodes").permissions(0o750))
        .unwrap()
        .with_special_file(
            F::fifo("/var/lib/arbor-nodes/fifo")
                .permissions(0o620)
                .user("daemon")
                .group("daemon"),
        )
        .unwrap()
        .with_dir_entry(F::dir("/usr/lib/arbor-nodes"))
        .unwrap()
        .with_special_file(F::fifo("/usr/lib/arbor-nodes/fifo").permissions(0o644))
        .unwrap();
    b.build().unwrap()
}

/// Composes `packages` from the sample repository plus `extra`, with more
/// treefile keys; returns the repository and the compose's stderr.
fn compose(t: &Scratch, extra: &[rpm::Package]) -> (PathBuf, String) {
    common::with_extra_packages(t, extra);
    let out = t.compose_tree("repo", &[], &[]);
    ok_json(&out);
    (t.path("repo"), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn scratch(packages: &str, keys: &str) -> Scratch {
    Scratch::new(
        &sample_url(),
        &format!(
            "ref: t/opt\nrepos: [sample, extra]\npackages: [filesystem, setup, busybox, {packages}]\n\
             recommends: false\n{keys}"
        ),
    )
}

/// Checks the commit out and runs its tmpfiles.d file as systemd does at boot.
fn boot(t: &Scratch, repo: &Path) -> PathBuf {
    let co = t.path("booted");
    ostree(repo, &["checkout", "-U", "t/opt", co.to_str().unwrap()]);
    // ostree's deploy makes /etc from /usr/etc; tmpfiles and rpm read its accounts.
    common::run(Command::new("cp").arg("-a").arg(co.join("usr/etc")).arg(co.join("etc")));
    common::run(
        Command::new("systemd-tmpfiles")
            .arg(format!("--root={}", co.display()))
            .args(["--create", "arbor-var.conf"]),
    );
    co
}

/// `rpm --root ROOT ARGS` on the tree's database, without checking the exit status.
fn rpm_in(root: &Path, args: &[&str]) -> Output {
    Command::new("rpm")
        .arg("--root")
        .arg(root)
        .args(["--dbpath", "/usr/lib/sysimage/rpm"])
        .args(args)
        .timed_output()
        .unwrap()
}

fn lines(conf: &str) -> Vec<&str> {
    conf.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
#[ignore = "needs root: the booted checkout is made by systemd-tmpfiles and checked by rpm in a chroot"]
fn opt_content_is_in_usr_lib_opt_and_at_its_path_after_boot() {
    common::need_root();
    let t = scratch("vendor-app, local-tool", "");
    let (repo, stderr) = compose(&t, &[vendor_app(), local_tool()]);
    for want in [
        "/opt/vendor is in the tree as /usr/lib/opt/vendor",
        "/opt/vendor-current is in the tree as /usr/lib/opt/vendor-current",
        "/usr/local/bin/local-tool: not shipped, from local-tool-1.0-1.noarch: /usr/local is a link to \
         /var/usrlocal (opt-usrlocal: var, as rpm-ostree); with opt-usrlocal: root the tree ships /usr/local",
    ] {
        assert!(stderr.contains(want), "{want:?} missing from:\n{stderr}");
    }
    assert!(
        !stderr.contains("/opt/vendor/bin/tool"),
        "nothing of /opt is dropped:\n{stderr}"
    );

    let ls = ostree(&repo, &["ls", "t/opt", "/opt", "/usr/lib/opt/vendor/bin/tool"]);
    assert!(ls.contains("/opt -> var/opt"), "{ls}");
    assert!(
        ls.contains("-00755 0 0") && ls.contains("/usr/lib/opt/vendor/bin/tool"),
        "{ls}"
    );
    let conf = ostree(&repo, &["cat", "t/opt", "/usr/lib/tmpfiles.d/arbor-var.conf"]);
    let conf = lines(&conf);
    let at = |l: &str| {
        conf.iter()
            .position(|c| *c == l)
            .unwrap_or_else(|| panic!("{l:?} not in {conf:#?}"))
    };
    let var_opt = at("d /var/opt 0755 root root - -");
    for link in [
        "L /opt/vendor - - - - ../../usr/lib/opt/vendor",
        // The package's own symlink, made again (its target resolves the same from /var/opt).
        "L /opt/vendor-current - - - - vendor",
    ] {
        assert!(var_opt < at(link), "/var/opt is created before {link:?}: {conf:#?}");
    }

    let co = boot(&t, &repo);
    assert_eq!(
        std::fs::read_to_string(co.join("opt/vendor/bin/tool")).unwrap(),
        "#!/bin/sh\necho vendor\n"
    );
    assert_eq!(
        std::fs::read_to_string(co.join("opt/vendor-current/bin/tool")).unwrap(),
        "#!/bin/sh\necho vendor\n"
    );
    // rpm finds the owner by the path the package gave (on the booted system
    // also by /usr/lib/opt/..., through its fingerprints, which compare
    // directories by inode; rpm --root does not chroot for -qf, so not here),
    // and verifies the package: /opt/vendor is a symlink to a root-owned
    // directory, which rpm accepts for a directory. OSTree stores every mtime
    // as 0, hence --nomtime.
    let out = rpm_in(&co, &["-qf", "--qf", "%{NAME}", "/opt/vendor/bin/tool"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "vendor-app", "{out:?}");
    let out = rpm_in(&co, &["-V", "--nomtime", "vendor-app"]);
    assert!(
        out.status.success(),
        "rpm -V vendor-app:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn opt_usrlocal_root_keeps_opt_and_usr_local_as_directories() {
    let t = scratch("vendor-app, local-tool", "opt-usrlocal: root\n");
    common::with_extra_packages(&t, &[vendor_app(), local_tool()]);
    let out = t.compose_tree("repo", &["--no-scripts"], &[]);
    ok_json(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("not shipped"), "{stderr}");
    let repo = t.path("repo");
    let ls = ostree(
        &repo,
        &[
            "ls",
            "t/opt",
            "/opt",
            "/usr/local",
            "/opt/vendor/bin/tool",
            "/usr/local/bin/local-tool",
        ],
    );
    for want in ["d00755 0 0", "/opt/vendor/bin/tool", "/usr/local/bin/local-tool"] {
        assert!(ls.contains(want), "{want:?} missing from:\n{ls}");
    }
    for dir in ["/opt", "/usr/local"] {
        let line = ls.lines().find(|l| l.ends_with(&format!(" {dir}"))).unwrap_or_default();
        assert!(line.starts_with("d00755 0 0"), "{dir} is a plain directory:\n{ls}");
    }
    let conf = ostree(&repo, &["cat", "t/opt", "/usr/lib/tmpfiles.d/arbor-var.conf"]);
    let conf = lines(&conf).join("\n");
    assert!(
        !conf.contains("/opt") && !conf.contains("usrlocal"),
        "no /var/opt, /var/usrlocal or /opt links:\n{conf}"
    );
}

#[test]
#[ignore = "needs root: systemd-tmpfiles makes the device nodes in the booted checkout"]
fn device_nodes_and_fifos_are_made_at_boot_and_named() {
    common::need_root();
    let t = scratch("nodes", "");
    let (repo, stderr) = compose(&t, &[nodes()]);
    for want in [
        "nodes-1.0-1.noarch ships /dev/arbor-test-null, a character device 1:3: an OSTree tree cannot hold it, \
         so systemd-tmpfiles creates it at boot (/usr/lib/tmpfiles.d/arbor-var.conf: c /dev/arbor-test-null 0666 0 0 - 1:3)",
        "nodes-1.0-1.noarch ships /dev/arbor-test-loop, a block device 7:0",
        "nodes-1.0-1.noarch ships /run/arbor-nodes.fifo, a FIFO",
        "nodes-1.0-1.noarch ships /var/lib/arbor-nodes/fifo, a FIFO",
        "nodes-1.0-1.noarch ships /usr/lib/arbor-nodes/fifo, a FIFO: it is not in the tree and cannot be \
         created at boot (/usr is read-only on the booted system)",
    ] {
        assert!(stderr.contains(want), "{want:?} missing from:\n{stderr}");
    }
    let conf = ostree(&repo, &["cat", "t/opt", "/usr/lib/tmpfiles.d/arbor-var.conf"]);
    let conf = lines(&conf);
    let at = |l: &str| {
        conf.iter()
            .position(|c| *c == l)
            .unwrap_or_else(|| panic!("{l:?} not in {conf:#?}"))
    };
    at("c /dev/arbor-test-null 0666 0 0 - 1:3");
    at("b /dev/arbor-test-loop 0660 0 0 - 7:0");
    at("p /run/arbor-nodes.fifo 0600 0 0 -");
    // daemon is 2:2 in the sample setup package.
    assert!(at("d /var/lib/arbor-nodes 0750 root root - -") < at("p /var/lib/arbor-nodes/fifo 0620 2 2 -"));
    assert!(!conf.iter().any(|l| l.contains("/usr/lib/arbor-nodes")), "{conf:#?}");

    let co = boot(&t, &repo);
    let md = |p: &str| std::fs::symlink_metadata(co.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let null = md("dev/arbor-test-null");
    assert!(null.file_type().is_char_device(), "{null:?}");
    assert_eq!((null.mode() & 0o7777, null.rdev()), (0o666, libc::makedev(1, 3)));
    let lo = md("dev/arbor-test-loop");
    assert!(lo.file_type().is_block_device(), "{lo:?}");
    assert_eq!((lo.mode() & 0o7777, lo.rdev()), (0o660, libc::makedev(7, 0)));
    let fifo = md("var/lib/arbor-nodes/fifo");
    assert!(fifo.file_type().is_fifo(), "{fifo:?}");
    assert_eq!((fifo.mode() & 0o7777, fifo.uid(), fifo.gid()), (0o620, 2, 2));
    assert!(md("run/arbor-nodes.fifo").file_type().is_fifo());
    // rpm -V agrees with every node but the one /usr cannot hold.
    let out = rpm_in(&co, &["-V", "--nomtime", "nodes"]);
    let report = String::from_utf8_lossy(&out.stdout);
    let complaints: Vec<&str> = report.lines().collect();
    assert_eq!(
        complaints,
        ["missing     /usr/lib/arbor-nodes/fifo"],
        "rpm -V nodes: {out:?}"
    );
}
