//! The `arbor` binary as a user runs it.

use crate::common::{self, Deadline as _};

use common::{arbor, package, run};

#[test]
fn help_lists_every_verb_group() {
    let help = run(arbor().arg("--help"));
    for verb in [
        "compose",
        "treefile",
        "keygen",
        "sign",
        "verify",
        "delta",
        "publish",
        "bundle",
        "image",
        "flash",
        "status",
        "upgrade",
        "rollback",
        "deploy",
        "install",
        "uninstall",
        "override",
        "pkg",
        "doctor",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(&format!("{verb} "))),
            "--help lacks {verb}:\n{help}"
        );
    }
}

#[test]
fn layering_verbs_name_a_sysroot_that_is_not_one_and_print_nothing() {
    for args in [
        &["install", "hello", "--sysroot", "/nonexistent"][..],
        &["uninstall", "hello", "--sysroot", "/nonexistent"],
        &["override", "remove", "hello", "--sysroot", "/nonexistent"],
        &["override", "reset", "--sysroot", "/nonexistent"],
    ] {
        let out = arbor().args(args).timed_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(err.contains("/nonexistent is not an OSTree sysroot"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed output it did not produce");
    }
}

#[test]
#[ignore = "needs root: arbor image needs root (and says that first)"]
fn image_names_what_is_wrong_before_any_work() {
    common::need_root();
    let t = tempfile::tempdir().unwrap();
    let out = arbor()
        .args(["image", "--repo", "no-repo", "--ref", "x", "--board", "rpi4", "-o"])
        .arg(t.path().join("i.img"))
        .timed_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("no-repo"), "{err}");
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0, "nothing written");
}

#[test]
fn flash_names_what_is_wrong_before_any_work() {
    let t = tempfile::tempdir().unwrap();
    // A regular file is not a block device: refused, and left alone.
    let img = t.path().join("i.img");
    std::fs::write(&img, b"not an image").unwrap();
    let target = t.path().join("target");
    std::fs::write(&target, b"keep me").unwrap();
    let out = arbor()
        .arg("flash")
        .arg(&img)
        .arg("--device")
        .arg(&target)
        .arg("--yes")
        .timed_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains(&target.display().to_string()) && err.contains("block device"),
        "{err}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 2, "nothing else written");
}

#[test]
fn usage_errors_exit_2_and_name_the_problem() {
    let out = arbor()
        .args(["compose", "resolve", "t.yaml", "--arch", "sparc"])
        .timed_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sparc") && err.contains("aarch64, armv7hl, x86_64, noarch"),
        "{err}"
    );
}

#[test]
fn pkg_info_json_reads_a_real_aarch64_rpm() {
    let out = run(arbor().args(["pkg", "info", "--json"]).arg(package("bash", "aarch64")));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let p = &v[0];
    assert_eq!(p["name"], "bash");
    assert_eq!(p["arch"], "aarch64");
    assert_eq!(p["payload_compressor"], "zstd");
    let req: Vec<&str> = p["requires"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(req.contains(&"libtinfo.so.6()(64bit)"), "{req:?}");
    let human = run(arbor().args(["pkg", "info"]).arg(package("glibc", "aarch64")));
    assert!(human.contains("post: <lua>"), "{human}");
    assert!(
        human.contains("transfiletriggerin -- /usr/lib (priority 1000000)"),
        "{human}"
    );
}

#[test]
fn pkg_info_shows_enhances_triggers_and_verifyscript() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = rpm::PackageBuilder::new("shown", "1.0", "MIT", "noarch", "every header part pkg info shows");
    b.release("1")
        .enhances(rpm::Dependency::greater_eq("bash", "5"))
        .trigger_in(
            "busybox",
            Some((rpm::DependencyFlags::GREATER | rpm::DependencyFlags::EQUAL, "1.30")),
            "echo in",
        )
        .file_trigger_in("/usr/share/fonts", None, "fc-cache")
        .verify_script("echo verify");
    let path = tmp.path().join("shown.rpm");
    b.build().unwrap().write_file(&path).unwrap();
    let out = run(arbor().args(["pkg", "info", "--json"]).arg(&path));
    let p = &serde_json::from_str::<serde_json::Value>(&out).unwrap()[0];
    assert_eq!(p["enhances"], serde_json::json!(["bash >= 5"]));
    assert_eq!(p["triggers"], serde_json::json!(["triggerin -- busybox >= 1.30"]));
    assert_eq!(
        p["file_triggers"],
        serde_json::json!(["filetriggerin -- /usr/share/fonts (priority 1000000)"])
    );
    assert!(
        p["scriptlets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "verifyscript: /bin/sh"),
        "{p}"
    );
}

#[test]
fn pkg_info_on_a_bad_file_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let bogus = tmp.path().join("not-an.rpm");
    std::fs::write(&bogus, b"this is not an rpm").unwrap();
    for path in [bogus, tmp.path().join("missing.rpm")] {
        let out = arbor().args(["pkg", "info"]).arg(&path).timed_output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: ") && err.contains(&*path.to_string_lossy()),
            "{err}"
        );
    }
}

#[test]
fn doctor_json_reports_linked_libraries_and_tools() {
    let out = arbor().args(["doctor", "--json"]).timed_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["libsolv_version"].as_str().unwrap().starts_with("0.7."));
    assert_eq!(v["libostree_ok"], true);
    let tools = v["tools"].as_array().unwrap();
    let rpm = tools.iter().find(|t| t["name"] == "rpm").unwrap();
    assert!(rpm["path"].is_string(), "scripts/setup installs rpm: {rpm}");
    // Exit status follows the problems found.
    let missing = tools.iter().any(|t| t["path"].is_null());
    assert_eq!(out.status.success(), !missing || v["user_namespaces"] == false);
}
