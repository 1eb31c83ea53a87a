//! Package sets a compose must refuse before any script runs, naming the
//! packages: paths one package ships as a symlink and another as a directory,
//! and directories arbor itself writes shipped as symlinks; and a script that
//! fills the disk is named.

use crate::common;

use std::process::Command;

use common::{Scratch, err, sample_url};

/// A noarch package with these symlinks and files, whose %post would fail
/// loudly if scripts ran before the set was checked.
fn package(name: &str, links: &[(&str, &str)], files: &[&str]) -> rpm::Package {
    let mut b = rpm::PackageBuilder::new(name, "1.0", "MIT", "noarch", "a package built by a test");
    for (path, target) in links {
        b.with_symlink(rpm::FileOptions::symlink(*path, *target)).unwrap();
    }
    for path in files {
        b.with_file_contents(b"data".to_vec(), rpm::FileOptions::new(*path))
            .unwrap();
    }
    b.post_install_script("echo SCRIPTS-RAN; exit 1").build().unwrap()
}

fn compose_with(pkgs: &[rpm::Package], names: &str) -> String {
    let t = Scratch::new(
        &sample_url(),
        &format!(
            "ref: t/c\nrepos: [sample, extra]\npackages: [filesystem, setup, busybox, {names}]\nrecommends: false\n"
        ),
    );
    common::with_extra_packages(&t, pkgs);
    let e = err(&t.compose_tree("repo", &[], &[]));
    assert!(!e.contains("SCRIPTS-RAN"), "refused only after the scripts ran:\n{e}");
    e
}

#[test]
fn a_symlink_in_one_package_over_a_directory_of_another_names_both_before_scripts() {
    let e = compose_with(
        &[
            package("evil", &[("/usr/share/evil", "/etc")], &[]),
            package("other", &[], &["/usr/share/evil/d"]),
        ],
        "evil, other",
    );
    assert!(
        e.contains("/usr/share/evil: evil-1.0-1.noarch ships a symlink (to /etc), and other-1.0-1.noarch ships /usr/share/evil/d beneath it"),
        "{e}"
    );
}

#[test]
fn directories_arbor_writes_shipped_as_symlinks_name_the_package() {
    let e = compose_with(
        &[package(
            "linker",
            &[("/usr/lib/sysimage/rpm", "/tmp"), ("/usr/etc", "../tmp")],
            &[],
        )],
        "linker",
    );
    for want in [
        "linker-1.0-1.noarch ships /usr/lib/sysimage/rpm as a symlink (to /tmp)",
        "linker-1.0-1.noarch ships /usr/etc as a symlink (to ../tmp)",
    ] {
        assert!(e.contains(want), "{want:?} missing from:\n{e}");
    }
}

#[test]
fn a_postprocess_script_that_links_usr_etc_is_named() {
    let t = Scratch::new(
        &sample_url(),
        "ref: t/c\nrepos: [sample]\npackages: [filesystem, setup, busybox]\nrecommends: false\n\
         postprocess: [\"#!/usr/sbin/busybox sh\\n/usr/sbin/busybox ln -s /tmp /usr/etc\"]\n",
    );
    let e = err(&t.compose_tree("repo", &[], &[]));
    assert!(
        e.contains("the tree has both /etc and /usr/etc (a symlink to /tmp; made by a script"),
        "{e}"
    );
}

#[test]
#[ignore = "needs root: mounts a small tmpfs for the compose to fill"]
fn a_script_that_fills_the_disk_is_named() {
    common::need_root();
    let t = Scratch::new(
        &sample_url(),
        "ref: t/c\nrepos: [sample, extra]\npackages: [filesystem, setup, busybox, filler]\nrecommends: false\n",
    );
    let filler = rpm::PackageBuilder::new("filler", "1.0", "MIT", "noarch", "fills the disk in %post")
        .requires(rpm::Dependency::any("/bin/sh"))
        .post_install_script("/usr/sbin/busybox dd if=/dev/zero of=/var/fill bs=1M 2>/dev/null; echo filled; exit 0")
        .build()
        .unwrap();
    common::with_extra_package(&t, filler);
    // The repository and the cache (package checkouts, the tree's upper layer) on a small filesystem.
    let small = t.path("cache");
    std::fs::create_dir(&small).unwrap();
    common::run(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=96m", "arbor-test"])
            .arg(&small),
    );
    let out = t.compose_tree("cache/repo", &[], &[]);
    common::run(Command::new("umount").arg(&small));
    let e = err(&out);
    assert!(
        e.contains("filler-1.0-1.noarch %post filled the filesystem of") && e.contains("filled"),
        "{e}"
    );
}
