//! Package content an OSTree tree cannot carry where the package puts it
//! (issue 16): /opt (moved to /usr/lib/opt and linked back at boot, as
//! rpm-ostree does) and /usr/local (a link into /var unless `opt-usrlocal:
//! root`). "Booted" is a checkout of the commit after `systemd-tmpfiles
//! --root --create` made what the tree's tmpfiles.d says, as systemd does at
//! boot; rpm then queries and verifies it.

use crate::common;

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
