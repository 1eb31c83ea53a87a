//! `make bench`: a device upgrade from v1 to v2 with one package changed, on
//! a real qemu-virt-aarch64 image's mounted partitions, over HTTP on loopback.
//!
//! Prints (1) the bytes `arbor upgrade` downloaded against `ostree pull` of the
//! same commit from the same server, and (2) its time against `ostree pull` +
//! `ostree admin deploy` + a shell script that renders extlinux.conf from the
//! boot entries, run on a second copy of the same image in the same run.
//! Needs root (loop devices and mounts); prints why and exits otherwise.

#![allow(clippy::unwrap_used)]

#[path = "common/sysroot.rs"]
mod sysroot;

#[allow(dead_code)] // the bench reads the request log only
#[path = "../tests/it/common/http.rs"]
mod http;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sysroot::{Mounted, run};

const REF: &str = "arbor/aarch64/sample-minimal";

fn arbor() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_arbor"));
    c.env("ARBOR_NO_PROGRESS", "1");
    c
}

/// Treefiles copied to `d/name`, sample-minimal.yaml edited by `edit`.
fn treefiles(d: &Path, name: &str, sample: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = d.join(name);
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(root.join("treefiles")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let text = std::fs::read_to_string(&p).unwrap();
            let text = if p.ends_with("sample-minimal.yaml") {
                edit(text)
            } else {
                text
            };
            std::fs::write(out.join(p.file_name().unwrap()), text).unwrap();
        }
    }
    std::fs::write(
        out.join("sample.repo"),
        format!(
            "[arbor-sample]\nname=s\nbaseurl=file://{}/\ngpgcheck=0\n",
            sample.display()
        ),
    )
    .unwrap();
    out.join("sample-minimal.yaml")
}

fn compose_sign_publish(d: &Path, tf: &Path, epoch: u64) {
    run(arbor()
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["compose", "tree", "--arch", "aarch64", "--repo"])
        .arg(d.join("repo"))
        .arg("--cache-dir")
        .arg(d.join("cache"))
        .arg(tf));
    run(arbor()
        .args(["sign", "--repo"])
        .arg(d.join("repo"))
        .arg("--key")
        .arg(d.join("key"))
        .arg(REF));
    run(arbor()
        .args(["publish", "--repo"])
        .arg(d.join("repo"))
        .arg("--to")
        .arg(d.join("pub"))
        .arg("--sign-key")
        .arg(d.join("key")));
}

/// Bytes of the files the server sent since the last call.
fn served(server: &http::Server, public: &Path) -> u64 {
    let paths = server.take();
    if std::env::var_os("ARBOR_BENCH_VERBOSE").is_some() {
        eprintln!("requests: {paths:?}");
    }
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(public.join(p.trim_start_matches('/'))).ok())
        .map(|m| m.len())
        .sum()
}

/// What an operator scripts without arbor: extlinux.conf from the BLS entries.
const RENDER: &str = r#"set -e
boot="$1"; out="$boot/extlinux/extlinux.conf.tmp"
first=1
for e in $(ls -r "$boot"/loader/entries/*.conf); do
  title=$(sed -n 's/^title //p' "$e"); linux=$(sed -n 's/^linux //p' "$e")
  initrd=$(sed -n 's/^initrd //p' "$e"); options=$(sed -n 's/^options //p' "$e")
  name=$(basename "$e" .conf)
  if [ $first = 1 ]; then echo "default $name" > "$out"; first=0; fi
  printf 'label %s\n\tmenu label %s\n\tkernel %s\n\tinitrd %s\n\tappend %s\n' "$name" "$title" "$linux" "$initrd" "$options" >> "$out"
done
sync "$out"; mv "$out" "$boot/extlinux/extlinux.conf"; sync "$boot/extlinux"
"#;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("upgrade: skipped: needs root (loop devices and mounts for the image's partitions)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sample = arbor_sample_repo::ensure(&arbor_sample_repo::Options::for_source_tree(root)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let tf1 = treefiles(d, "tf1", &sample.out, |t| t);
    // v2: one package more.
    let tf2 = treefiles(d, "tf2", &sample.out, |t| {
        t.replace("  - busybox\n", "  - busybox strace\n")
    });
    run(arbor().arg("keygen").arg("-o").arg(d.join("key")));
    compose_sign_publish(d, &tf1, 1_704_067_200);
    let server = http::Server::start(d.join("pub"));
    run(arbor()
        .args(["image", "--ref", REF, "--board", "qemu-virt-aarch64", "--repo"])
        .arg(d.join("repo"))
        .arg("-o")
        .arg(d.join("v1.img"))
        .args(["--remote", &server.url, "--keys"])
        .arg(d.join("key.pub")));
    compose_sign_publish(d, &tf2, 1_704_153_600);
    let public = d.join("pub");

    let copy = |name: &str| {
        let img = d.join(name);
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(d.join("v1.img"))
            .arg(&img));
        img
    };
    let (img_a, img_b) = (copy("a.img"), copy("b.img"));

    // arbor: verify, pull, deploy, render, clean up.
    let top_a = d.join("a");
    let m = Mounted::new(&img_a, &top_a);
    served(&server, &public);
    let t0 = Instant::now();
    let out = arbor().args(["upgrade", "--sysroot"]).arg(&top_a).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    if std::env::var_os("ARBOR_BENCH_VERBOSE").is_some() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let arbor_secs = t0.elapsed();
    let arbor_bytes = served(&server, &public);
    drop(m);

    // ostree: pull, deploy, render with a shell script (no verification).
    let top_b = d.join("b");
    let m = Mounted::new(&img_b, &top_b);
    let repo_b = format!("--repo={}", top_b.join("ostree/repo").display());
    served(&server, &public);
    let t0 = Instant::now();
    run(Command::new("ostree").args(["pull", &repo_b, "origin", REF]));
    let pull_secs = t0.elapsed();
    let ostree_bytes = served(&server, &public);
    run(Command::new("ostree")
        .args(["admin", "deploy", "--os", "arbor", "--sysroot"])
        .arg(&top_b)
        .arg(format!("origin:{REF}")));
    run(Command::new("sh")
        .arg("-c")
        .arg(RENDER)
        .arg("render")
        .arg(top_b.join("boot")));
    let ostree_secs = t0.elapsed();
    drop(m);

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "upgrade v1 -> v2 (one package added), qemu-virt-aarch64 image, HTTP on loopback:\n\
         \x20 bytes downloaded: arbor upgrade {arbor_bytes}, ostree pull {ostree_bytes}: {:.3}x (goal <= 1.0x)\n\
         \x20 time: arbor upgrade {:.2} s (verify, pull, deploy, render, cleanup); ostree pull {:.2} s + admin deploy + shell render = {:.2} s: {:.2}x (goal <= 1.0x)",
        arbor_bytes as f64 / ostree_bytes.max(1) as f64,
        arbor_secs.as_secs_f64(),
        pull_secs.as_secs_f64(),
        ostree_secs.as_secs_f64(),
        ratio(arbor_secs, ostree_secs)
    );
}
