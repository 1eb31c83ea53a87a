//! `make bench`: package layering on a real qemu-virt-aarch64 image's mounted
//! sysroot (the aarch64 scripts under qemu-user, as on a build host).
//!
//! Prints (1) `arbor install ncurses-libs strace` against composing the base
//! plus those packages from scratch (`arbor compose tree`, fresh cache), goal
//! <= 0.1x; (2) the same layering again with its recorded script runs replayed
//! against `--no-memo` (every script rerun: rpm-ostree's way, the same code).
//! Needs root (loop devices and mounts); prints why and exits otherwise.

#![allow(clippy::unwrap_used)]

#[path = "common/sysroot.rs"]
mod sysroot;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sysroot::{Mounted, run};

const REF: &str = "arbor/aarch64/sample-minimal";
const LAYERED: [&str; 2] = ["ncurses-libs", "strace"];

fn arbor() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_arbor"));
    c.env("ARBOR_NO_PROGRESS", "1");
    c
}

/// Treefiles copied to `d/name` (no bash, so ncurses-libs is not in the base), edited by `edit`.
fn treefiles(d: &Path, name: &str, sample: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = d.join(name);
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(root.join("treefiles")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let mut text = std::fs::read_to_string(&p).unwrap();
            if p.ends_with("sample-minimal.yaml") {
                text = edit(text.replace("filesystem setup bash glibc", "filesystem setup glibc busybox-sh"));
            }
            std::fs::write(out.join(p.file_name().unwrap()), text).unwrap();
        }
    }
    std::fs::write(out.join("sample.repo"), repo_file(sample)).unwrap();
    out.join("sample-minimal.yaml")
}

fn repo_file(sample: &Path) -> String {
    format!(
        "[arbor-sample]\nname=s\nbaseurl=file://{}/\ngpgcheck=0\n",
        sample.display()
    )
}

fn compose(d: &Path, tf: &Path, repo: &str, cache: &str) -> f64 {
    let t0 = Instant::now();
    run(arbor()
        .env("SOURCE_DATE_EPOCH", "1704067200")
        .args(["compose", "tree", "--arch", "aarch64", "--repo"])
        .arg(d.join(repo))
        .arg("--cache-dir")
        .arg(d.join(cache))
        .arg(tf));
    t0.elapsed().as_secs_f64()
}

/// Runs a layering verb; returns its seconds and JSON result.
fn layer(top: &Path, verb: &[&str], extra: &[&str]) -> (f64, serde_json::Value) {
    let t0 = Instant::now();
    let out = run(arbor().args(verb).arg("--sysroot").arg(top).args(extra).arg("--json"));
    (t0.elapsed().as_secs_f64(), serde_json::from_str(&out).unwrap())
}

/// The default deployment's /etc/yum.repos.d gets the sample repository.
fn write_repos(top: &Path, sample: &Path) {
    let s: serde_json::Value =
        serde_json::from_str(&run(arbor().args(["status", "--json", "--sysroot"]).arg(top))).unwrap();
    let d = &s["deployments"][0];
    let dir = top.join(format!(
        "ostree/deploy/{}/deploy/{}.{}/etc/yum.repos.d",
        d["osname"].as_str().unwrap(),
        d["commit"].as_str().unwrap(),
        d["serial"]
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sample.repo"), repo_file(sample)).unwrap();
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("layer: skipped: needs root (loop devices and mounts for the image's partitions)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sample = arbor_sample_repo::ensure(&arbor_sample_repo::Options::for_source_tree(root)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let tf1 = treefiles(d, "tf1", &sample.out, |t| t);
    let tf2 = treefiles(d, "tf2", &sample.out, |t| {
        t.replace("  - busybox\n", &format!("  - busybox {}\n", LAYERED.join(" ")))
    });
    run(arbor().arg("keygen").arg("-o").arg(d.join("key")));
    compose(d, &tf1, "repo", "cache");
    run(arbor()
        .args(["image", "--ref", REF, "--board", "qemu-virt-aarch64", "--repo"])
        .arg(d.join("repo"))
        .arg("-o")
        .arg(d.join("v1.img"))
        .args(["--remote", "file:///nonexistent", "--keys"])
        .arg(d.join("key.pub")));

    // The reference: the base plus the packages, composed from scratch.
    let scratch = compose(d, &tf2, "scratch-repo", "scratch-cache");

    let top = d.join("sysroot");
    let _m = Mounted::new(&d.join("v1.img"), &top);
    write_repos(&top, &sample.out);
    let (first, o) = layer(&top, &["install"], &LAYERED);
    let ran = o["built"]["scripts"]["ran"].as_array().map_or(0, Vec::len);
    let first_build = o["built"]["secs"].as_f64().unwrap();
    layer(&top, &["uninstall"], &LAYERED);
    let (memo, o) = layer(&top, &["install"], &LAYERED);
    let memo_build = o["built"]["secs"].as_f64().unwrap();
    let reused = o["built"]["scripts"]["reused"].as_array().map_or(0, Vec::len);
    let memo_content = o["content"].as_str().unwrap().to_string();
    layer(&top, &["uninstall"], &LAYERED);
    let (full, o) = layer(&top, &["install", "--no-memo"], &LAYERED);
    let full_build = o["built"]["secs"].as_f64().unwrap();
    assert_eq!(
        o["content"].as_str().unwrap(),
        memo_content,
        "memoized and full layerings differ"
    );

    println!(
        "layering {} onto the sample tree (qemu-virt-aarch64 image, aarch64 scripts under qemu-user):\n\
         \x20 first install: the layered commit built in {first_build:.2} s ({ran} scripts run) vs a compose of base + packages \
         from scratch {scratch:.2} s: {:.3}x (goal <= 0.1x); the whole verb, with libostree's deploy and cleanup, {first:.2} s: {:.3}x\n\
         \x20 again, recorded runs replayed ({reused} reused): built in {memo_build:.2} s vs every script rerun (--no-memo, \
         rpm-ostree's way) {full_build:.2} s: {:.2}x (whole verbs {memo:.2} s vs {full:.2} s)",
        LAYERED.join(" + "),
        first_build / scratch.max(1e-9),
        first / scratch.max(1e-9),
        memo_build / full_build.max(1e-9)
    );
}
