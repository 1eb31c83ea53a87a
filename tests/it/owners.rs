//! File owners that only a package's own sysusers.d creates (Fedora's
//! `Provides: user(jane)`; rpm >= 4.19 creates them before laying files down):
//! the compose gives the files the ids the tree ends with, keeping setuid bits
//! and capabilities, and an owner nothing creates is named with its file.

use crate::common;

use common::{Scratch, err, ok_json, ostree, sample_url};

/// A package whose files belong to `jane:bob`, which only its sysusers.d declares
/// (`sysusers` false: the declaration is left out).
fn package(sysusers: bool) -> rpm::Package {
    let mut b = rpm::PackageBuilder::new("jane-data", "1.0", "MIT", "noarch", "files of a sysusers.d user");
    if sysusers {
        b.with_file_contents(
            b"u jane - \"Jane\" /var/lib/jane\ng bob -\n".to_vec(),
            rpm::FileOptions::new("/usr/lib/sysusers.d/jane.conf"),
        )
        .unwrap();
        b.provides(rpm::Dependency::any("user(jane)"));
        b.provides(rpm::Dependency::any("group(bob)"));
    }
    b.with_file_contents(
        b"secret".to_vec(),
        rpm::FileOptions::new("/usr/share/jane/key")
            .user("jane")
            .group("bob")
            .permissions(0o640),
    )
    .unwrap();
    b.with_file_contents(
        b"#!/bin/sh\n".to_vec(),
        rpm::FileOptions::new("/usr/bin/jane-tool")
            .user("jane")
            .group("bob")
            .permissions(0o4750)
            .caps("cap_net_raw=ep")
            .unwrap(),
    )
    .unwrap();
    b.build().unwrap()
}

fn scratch() -> Scratch {
    Scratch::new(
        &sample_url(),
        "ref: t/owners\nrepos: [sample, extra]\npackages: [filesystem, setup, glibc, busybox, jane-data]\nrecommends: false\n",
    )
}

/// `name:x:ID:` line of the committed tree's passwd or group.
fn id_of(repo: &std::path::Path, file: &str, name: &str) -> u32 {
    let text = ostree(repo, &["cat", "t/owners", file]);
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("{name} not in {file}:\n{text}"));
    line.split(':').nth(2).unwrap().parse().unwrap()
}

#[test]
#[ignore = "needs root: composing runs the scripts in a sandbox"]
fn files_of_a_sysusers_user_get_its_ids_with_setuid_and_caps_kept() {
    common::need_root();
    let t = scratch();
    common::with_extra_packages(&t, &[package(true)]);
    ok_json(&t.compose_tree("repo", &[], &[]));
    let repo = t.path("repo");
    let uid = id_of(&repo, "/usr/etc/passwd", "jane");
    let gid = id_of(&repo, "/usr/etc/group", "bob");
    assert!(uid != 0 && gid != 0, "jane {uid}, bob {gid}");
    // `ostree ls`: type+mode uid gid size name.
    let ls = ostree(&repo, &["ls", "t/owners", "/usr/share/jane/key", "/usr/bin/jane-tool"]);
    let want_key = format!("-00640 {uid} {gid}");
    let want_tool = format!("-04750 {uid} {gid}");
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&want_key) && l.ends_with("/usr/share/jane/key")),
        "{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&want_tool) && l.ends_with("/usr/bin/jane-tool")),
        "{ls}"
    );
    let xattrs = ostree(&repo, &["ls", "-X", "t/owners", "/usr/bin/jane-tool"]);
    assert!(
        xattrs.contains("security.capability"),
        "the capability was lost:\n{xattrs}"
    );
}

#[test]
#[ignore = "needs root: composing runs the scripts in a sandbox"]
fn an_owner_nothing_creates_is_named_with_its_file() {
    common::need_root();
    let t = scratch();
    common::with_extra_packages(&t, &[package(false)]);
    let e = err(&t.compose_tree("repo", &[], &[]));
    assert!(
        e.contains("jane-data-1.0-1.noarch: /usr/share/jane/key (jane:bob)") && e.contains("sysusers.d"),
        "{e}"
    );
}
