//! `arbor compose tree` against the real ostree and rpm tools: the commit's
//! layout, determinism, incremental imports, --no-scripts, crash safety.

use crate::common::{self, Deadline as _};

use std::process::Command;

use common::{Scratch, arbor, ok_json, ostree, sample_url};

const SMALL: &str =
    "ref: test/small\nrepos: [sample]\npackages: [filesystem, setup, bash, busybox, hello]\nrecommends: false\n";

#[test]
fn composes_a_tree_ostree_and_rpm_accept() {
    let t = Scratch::new(&sample_url(), SMALL);
    let v = ok_json(&t.compose_tree("repo", &["--no-scripts"], &[]));
    let commit = v["commit"].as_str().unwrap().to_string();
    let repo = t.path("repo");
    ostree(&repo, &["fsck"]);
    assert_eq!(ostree(&repo, &["rev-parse", "test/small"]).trim(), commit);
    let ls = ostree(&repo, &["ls", "-R", &commit]);
    let line = |path: &str| {
        ls.lines()
            .find(|l| l.ends_with(&format!(" {path}")) || l.contains(&format!(" {path} -> ")))
            .unwrap_or_else(|| panic!("{path} not in tree:\n{ls}"))
            .to_string()
    };
    assert!(
        line("/usr/bin/bash").starts_with("-00755 0 0"),
        "{}",
        line("/usr/bin/bash")
    );
    assert!(
        line("/usr/etc/shadow").starts_with("-00000 0 0"),
        "shadow mode 0000: {}",
        line("/usr/etc/shadow")
    );
    // /etc became /usr/etc by a copy (overlayfs cannot rename a package's
    // directory): the package's owner and mode, not the checkout's, are committed.
    assert!(
        line("/usr/etc/security/daemon.conf").starts_with("-00640 2 2"),
        "owner daemon, mode 0640: {}",
        line("/usr/etc/security/daemon.conf")
    );
    assert!(
        line("/bin").starts_with("l00777") && line("/bin").ends_with("/bin -> usr/bin"),
        "{}",
        line("/bin")
    );
    assert!(line("/home").ends_with("-> var/home"), "{}", line("/home"));
    assert!(ls.contains(" /usr/lib/tmpfiles.d/arbor-var.conf"), "{ls}");
    assert!(
        !ls.lines().any(|l| l.contains(" /etc/")),
        "no /etc left: /etc moved to /usr/etc"
    );
    assert!(!ls.lines().any(|l| l.contains(" /var/")), "/var is empty in the commit");
    let show = ostree(&repo, &["show", &commit, "--print-metadata-key=arbor.packages"]);
    assert!(show.contains(&common::nvra("bash", "aarch64")), "{show}");
    let scripts = ostree(&repo, &["show", &commit, "--print-metadata-key=arbor.scripts-skipped"]);
    assert!(scripts.contains("busybox"), "{scripts}");

    // The rpmdb in the tree lists exactly the resolved set.
    let co = t.path("co");
    ostree(&repo, &["checkout", "-U", &commit, co.to_str().unwrap()]);
    let db = co.join("usr/lib/sysimage/rpm");
    let mut qa: Vec<String> = common::run(common::rpm(&db).args(["-qa", "--qf", "%{NEVRA}\n"]))
        .lines()
        .map(str::to_string)
        .collect();
    qa.sort();
    let mut want: Vec<String> = v["packages"]
        .as_u64()
        .map(|_| {
            let pk = ostree(&repo, &["show", &commit, "--print-metadata-key=arbor.packages"]);
            pk.split('\'')
                .filter(|s| s.contains(".aarch64") || s.contains(".noarch"))
                .map(str::to_string)
                .collect()
        })
        .unwrap();
    want.sort();
    assert_eq!(qa, want);
    let owner = common::run(Command::new("rpm").arg("--root").arg(&co).args([
        "--dbpath",
        "/usr/lib/sysimage/rpm",
        "-qf",
        "--qf",
        "%{NAME}",
        "/usr/bin/bash",
    ]));
    assert_eq!(owner, "bash");
}

#[test]
fn same_inputs_same_commit_and_unchanged_inputs_are_skipped() {
    let t = Scratch::new(&sample_url(), SMALL);
    let a = ok_json(&t.compose_tree("repo-a", &["--no-scripts"], &[]));
    let b = ok_json(&t.compose_tree("repo-b", &["--no-scripts"], &[]));
    assert_eq!(a["commit"], b["commit"], "two fresh repos, same inputs → same commit");
    let again = ok_json(&t.compose_tree("repo-a", &["--no-scripts"], &[]));
    assert_eq!(again["unchanged"], true);
    assert_eq!(again["commit"], a["commit"]);
    assert_eq!(again["imported"], 0);
    ostree(&t.path("repo-a"), &["fsck"]);
}

#[test]
fn a_bumped_package_is_the_only_one_imported() {
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("m");
    std::fs::create_dir(&manifests).unwrap();
    for n in [
        "filesystem.toml",
        "setup.toml",
        "busybox.toml",
        "busybox-sh.toml",
        "hello.toml",
        "hello-data.toml",
    ] {
        std::fs::copy(common::root().join("samples/packages").join(n), manifests.join(n)).unwrap();
    }
    let mut opts = arbor_sample_repo::Options::for_source_tree(common::root());
    opts.manifests = manifests.clone();
    opts.out = tmp.path().join("srepo");
    arbor_sample_repo::ensure(&opts).unwrap();
    let tf = "ref: test/bump\nrepos: [sample]\npackages: [filesystem, setup, busybox, busybox-sh, hello]\n";
    let t = Scratch::new(&format!("file://{}/", opts.out.display()), tf);
    let first = ok_json(&t.compose_tree("repo", &["--no-scripts"], &[]));
    assert_eq!(first["imported"], 6);
    let checkouts = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir(t.path("cache/checkouts"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let before = checkouts();
    assert_eq!(before.len(), 6, "one checkout (overlay layer) per package: {before:?}");
    let p = manifests.join("hello-data.toml");
    std::fs::write(
        &p,
        std::fs::read_to_string(&p)
            .unwrap()
            .replace("version = \"2.12\"", "version = \"2.13\""),
    )
    .unwrap();
    arbor_sample_repo::ensure(&opts).unwrap();
    let second = ok_json(&t.compose_tree("repo", &["--no-scripts"], &[]));
    assert_eq!(second["imported"], 1, "only hello-data changed: {second}");
    let after = checkouts();
    assert_eq!(
        after.difference(&before).count(),
        1,
        "only the bumped package is checked out again: {before:?} -> {after:?}"
    );
    assert!(before.is_subset(&after), "unused checkouts stay for two weeks");
    assert_ne!(first["commit"], second["commit"]);
    let log = ostree(&t.path("repo"), &["log", "test/bump"]);
    assert!(
        log.contains(first["commit"].as_str().unwrap()),
        "the new commit's parent is the old one:\n{log}"
    );
}

#[test]
fn killed_at_any_stage_the_ref_is_unchanged_and_a_rerun_completes() {
    let t = Scratch::new(&sample_url(), SMALL);
    let first = ok_json(&t.compose_tree("repo", &[], &[]));
    // Change the input so a new commit is due, then kill at every failpoint.
    std::fs::write(
        t.path("t.yaml"),
        format!("{SMALL}add-commit-metadata:\n  run: second\n"),
    )
    .unwrap();
    for fp in arbor::failpoint::ALL.iter().filter(|f| f.starts_with("compose::")) {
        let out = t.compose_tree("repo", &[], &[("ARBOR_FAILPOINT", fp)]);
        if *fp == "compose::ref-written" {
            continue; // after the transaction: the new commit is in place, checked below
        }
        assert!(!out.status.success(), "{fp}: expected a kill");
        let head = ostree(&t.path("repo"), &["rev-parse", "test/small"]);
        assert_eq!(head.trim(), first["commit"].as_str().unwrap(), "{fp}: the ref moved");
        ostree(&t.path("repo"), &["fsck"]);
    }
    let done = ok_json(&t.compose_tree("repo", &[], &[]));
    assert_ne!(done["commit"], first["commit"]);
    ostree(&t.path("repo"), &["fsck"]);
}

#[test]
fn archive_repos_get_the_same_commit_compressed_and_pull_local_works() {
    let t = Scratch::new(&sample_url(), SMALL);
    let bare = ok_json(&t.compose_tree("bare", &["--no-scripts"], &[]));
    let archive = t.path("archive");
    common::run(
        Command::new("ostree")
            .arg(format!("--repo={}", archive.display()))
            .args(["init", "--mode=archive"]),
    );
    let v = ok_json(&t.compose_tree("archive", &["--no-scripts"], &[]));
    assert_eq!(
        v["commit"], bare["commit"],
        "archive and bare-user repos hold the same commit"
    );
    ostree(&archive, &["fsck"]);
    assert_eq!(ostree(&archive, &["config", "get", "core.mode"]).trim(), "archive-z2");
    assert!(
        ostree(&archive, &["refs"])
            .lines()
            .all(|r| !r.starts_with("arbor/pkg/")),
        "no package cache refs in the served repo"
    );
    let fresh = t.path("fresh");
    common::run(
        Command::new("ostree")
            .arg(format!("--repo={}", fresh.display()))
            .args(["init", "--mode=bare-user"]),
    );
    ostree(&fresh, &["pull-local", archive.to_str().unwrap(), "test/small"]);
    ostree(&fresh, &["fsck"]);
    let again = ok_json(&t.compose_tree("archive", &["--no-scripts"], &[]));
    assert_eq!(again["unchanged"], true);
}

#[test]
fn no_scripts_lists_postprocess_scripts_as_skipped() {
    let t = Scratch::new(
        &sample_url(),
        &format!("{SMALL}postprocess:\n  - |\n    #!/bin/sh\n    touch /usr/share/x\n"),
    );
    let out = t.compose_tree("repo", &["--no-scripts"], &[]);
    let v = ok_json(&out);
    let skipped = v["skipped_scriptlets"].as_array().unwrap();
    assert!(
        skipped.iter().any(|s| s == "treefile: 1 postprocess script(s)"),
        "{skipped:?}"
    );
}

#[test]
fn the_shipped_sample_treefile_composes_with_kernel_os_release_and_board_metadata() {
    common::sample_repo();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let out = arbor()
        .args([
            "compose",
            "tree",
            "--arch",
            "aarch64",
            "--json",
            "--no-scripts",
            "--repo",
        ])
        .arg(&repo)
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .arg(common::root().join("treefiles/sample-minimal.yaml"))
        .timed_output()
        .unwrap();
    let v = ok_json(&out);
    assert_eq!(v["ref"], "arbor/aarch64/sample-minimal");
    assert_eq!(v["version"], "1");
    let commit = v["commit"].as_str().unwrap();
    ostree(&repo, &["fsck"]);
    let ls = ostree(&repo, &["ls", "-R", commit, "/usr/lib/modules"]);
    assert!(
        ls.lines().any(|l| l.ends_with("/vmlinuz")),
        "{}",
        &ls[..ls.len().min(2000)]
    );
    assert!(ls.contains("/dtb/broadcom/bcm2711-rpi-4-b.dtb"));
    let boards = ostree(&repo, &["show", commit, "--print-metadata-key=arbor.boards"]);
    assert!(
        boards.contains("rpi4") && boards.contains("qemu-virt-aarch64"),
        "{boards}"
    );
    let os = ostree(&repo, &["cat", commit, "/usr/lib/os-release"]);
    assert!(os.contains("OSTREE_VERSION='1'") && os.contains("ID=arbor"), "{os}");
    let target = ostree(&repo, &["ls", commit, "/usr/etc/os-release"]);
    assert!(target.contains("-> ../usr/lib/os-release"), "{target}");
    let tmpfiles = ostree(&repo, &["cat", commit, "/usr/lib/tmpfiles.d/arbor-var.conf"]);
    assert!(
        tmpfiles.contains("d /var/roothome 0700 root root - -") && tmpfiles.contains("L /var/lib/rpm"),
        "{tmpfiles}"
    );
}

#[test]
fn sign_key_signs_the_commit_and_a_bad_key_stops_before_any_work() {
    let t = Scratch::new(&sample_url(), SMALL);
    let key = t.path("key");
    common::run(arbor().args(["keygen", "-o"]).arg(&key));
    let archive = t.path("archive");
    common::run(
        Command::new("ostree")
            .arg(format!("--repo={}", archive.display()))
            .args(["init", "--mode=archive"]),
    );
    let v = ok_json(&t.compose_tree("archive", &["--no-scripts", "--sign-key", key.to_str().unwrap()], &[]));
    let commit = v["commit"].as_str().unwrap();
    let pubkey = format!("{}.pub", key.display());
    common::run(
        arbor()
            .args(["verify", "--repo"])
            .arg(&archive)
            .args(["--keys", &pubkey, "--arch", "aarch64", commit]),
    );
    let wrong_ref = arbor()
        .args(["verify", "--repo"])
        .arg(&archive)
        .args(["--keys", &pubkey, "--ref", "test/other", commit])
        .timed_output()
        .unwrap();
    assert_eq!(wrong_ref.status.code(), Some(1), "the commit is bound to test/small");
    let bad = t.path("bad-key");
    std::fs::write(&bad, "not a key\n").unwrap();
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = t.compose_tree("other", &["--no-scripts", "--sign-key", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&*bad.to_string_lossy()));
    assert!(!t.path("other").exists(), "nothing was composed");
}

/// Today's date in UTC as `%Y%m%d`, by the host's `date`.
fn utc_today() -> String {
    common::run(Command::new("date").args(["-u", "+%Y%m%d"]))
        .trim()
        .to_string()
}

#[test]
fn automatic_versions_are_dated_by_the_compose_and_count_from_0() {
    // rpm-ostree's docs/treefile.md example, with a package set that builds quickly.
    let t = Scratch::new(
        &sample_url(),
        &format!("{SMALL}automatic-version-prefix: \"40.<date:%Y%m%d>.dev\"\n"),
    );
    // SOURCE_DATE_EPOCH (2024-01-01) dates a reproducible build: .dev.0, then .dev.1.
    let epoch = [("SOURCE_DATE_EPOCH", "1704067200")];
    let first = ok_json(&t.compose_tree("repo", &["--no-scripts"], &epoch));
    assert_eq!(first["version"], "40.20240101.dev.0");
    let second = ok_json(&t.compose_tree("repo", &["--no-scripts", "--force"], &epoch));
    assert_eq!(second["version"], "40.20240101.dev.1");
    let shown = ostree(
        &t.path("repo"),
        &[
            "show",
            second["commit"].as_str().unwrap(),
            "--print-metadata-key=version",
        ],
    );
    assert_eq!(shown.trim(), "'40.20240101.dev.1'");

    // Without it, the date the compose runs (not the newest package's build
    // time), so the counter starts again at .0.
    let (before, v, after) = (
        utc_today(),
        ok_json(&t.compose_tree("repo", &["--no-scripts", "--dry-run"], &[])),
        utc_today(),
    );
    let version = v["version"].as_str().unwrap();
    assert!(
        [format!("40.{before}.dev.0"), format!("40.{after}.dev.0")].contains(&version.to_string()),
        "{version} is not dated {before}"
    );
}
