#![allow(clippy::unwrap_used)] // benches fail loudly on purpose

//! `make bench`: composing a tree of ~21,000 files, cold, incremental and into
//! an archive repository.
//!
//! The tree is the sample packages (kernel, U-Boot, glibc, bash...) plus a
//! synthetic noarch package of 16,000 small files built here with the `rpm`
//! crate, all in one temporary rpm-md repository. A warm-up compose fills the
//! download cache; then, each next to a reference in the same run:
//! (a) a cold compose into a fresh bare-user repository against `ostree commit`
//!     of the same tree (checked out, not timed) into a fresh bare-user repository;
//! (b) a compose after one file of the big package changed, against (a);
//! (c) a compose into an archive repository against `ostree commit` into a
//!     fresh archive repository.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use arbor::arch::Arch;
use arbor::compose::tree::{Composed, Options, compose};

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

/// The tree's sample packages and what they pull in (hello-data, ncurses-libs).
const SAMPLE: [&str; 10] = [
    "filesystem",
    "setup",
    "bash",
    "glibc",
    "busybox",
    "hello",
    "hello-data",
    "ncurses-libs",
    "kernel",
    "uboot-images-armv8",
];
/// What the treefile asks for.
const INSTALL: [&str; 9] = [
    "filesystem",
    "setup",
    "bash",
    "glibc",
    "busybox",
    "hello",
    "kernel",
    "uboot-images-armv8",
    BIG,
];
/// The synthetic package.
const BIG: &str = "bench-data";
const SMALL: &str = "bench-small";
/// Its files: GROUPS × SUBDIRS directories of FILES files each (16,000).
const GROUPS: usize = 32;
const SUBDIRS: usize = 25;
const FILES: usize = 20;
/// File sizes and their weights in percent: mostly small, a few of 64 KiB.
const SIZES: [(usize, u64); 8] = [
    (100, 30),
    (512, 20),
    (1024, 15),
    (2048, 12),
    (4096, 10),
    (8192, 7),
    (16_384, 4),
    (65_536, 2),
];
/// Fixed build times so every run builds the same packages.
const EPOCH: u32 = 1_704_067_200;
const SEED: u64 = 0x6172_626f_7222;

/// Words for text-like content: compresses about as well as real data files,
/// so archive mode has real work, yet every file's bytes are distinct.
const WORDS: [&str; 16] = [
    "arbor", "tree", "commit", "object", "package", "header", "payload", "checksum", "kernel", "module", "firmware",
    "board", "image", "deploy", "0x", "\n",
];

/// File `index`'s content; `salt` changes it (the incremental run's edit).
fn content(index: usize, salt: u64) -> Vec<u8> {
    let mut rng = Rng(SEED ^ (index as u64).wrapping_mul(0x1000_0001) ^ salt);
    let mut pick = rng.next() % 100;
    let size = SIZES
        .iter()
        .find(|(_, w)| {
            let hit = pick < *w;
            pick = pick.saturating_sub(*w);
            hit
        })
        .map_or(100, |(s, _)| *s);
    let mut out = format!("# {BIG} file {index} salt {salt}\n").into_bytes();
    while out.len() < size {
        let r = rng.next();
        out.extend_from_slice(WORDS[(r & 15) as usize].as_bytes());
        out.extend_from_slice(format!(" {:x} ", r >> 44).as_bytes());
    }
    out.truncate(size);
    out
}

fn big_path(index: usize) -> String {
    let (g, s) = (index / (SUBDIRS * FILES), index / FILES % SUBDIRS);
    format!("/usr/share/{BIG}/g{g:02}/s{s:02}/f{index:05}.dat")
}

/// Writes `bench-data-VERSION-1.noarch.rpm` into `dir`; file 0 differs when
/// `changed`. Returns (path, bytes of file content).
fn build_big(dir: &Path, version: &str, changed: bool, source_date: u32) -> (PathBuf, u64) {
    let mut b = rpm::PackageBuilder::new(
        BIG,
        version,
        "MIT",
        "noarch",
        "Synthetic data for arbor's compose bench",
    );
    b.release("1").using_config(
        rpm::BuildConfig::v4()
            .compression(rpm::CompressionWithLevel::Zstd(3))
            .source_date(source_date),
    );
    let dir_entry = |b: &mut rpm::PackageBuilder, p: String| {
        b.with_dir_entry(rpm::FileOptions::dir(p).mode(rpm::FileMode::dir(0o755)))
            .unwrap();
    };
    dir_entry(&mut b, format!("/usr/share/{BIG}"));
    let mut bytes = 0;
    for i in 0..GROUPS * SUBDIRS * FILES {
        if i % (SUBDIRS * FILES) == 0 {
            dir_entry(&mut b, format!("/usr/share/{BIG}/g{:02}", i / (SUBDIRS * FILES)));
        }
        if i % FILES == 0 {
            dir_entry(&mut b, big_path(i).rsplit_once('/').unwrap().0.to_string());
        }
        let data = content(i, u64::from(changed && i == 0));
        bytes += data.len() as u64;
        b.with_file_contents(
            data,
            rpm::FileOptions::new(big_path(i)).mode(rpm::FileMode::regular(0o644)),
        )
        .unwrap();
    }
    let path = dir.join(format!("{BIG}-{version}-1.noarch.rpm"));
    b.build().unwrap().write_file(&path).unwrap();
    (path, bytes)
}

/// Writes `bench-small-VERSION-1.noarch.rpm` (three small files) into `dir`.
fn build_small(dir: &Path, version: &str, source_date: u32) -> PathBuf {
    let mut b = rpm::PackageBuilder::new(
        SMALL,
        version,
        "MIT",
        "noarch",
        "A small package the incremental bench bumps",
    );
    b.release("1").using_config(
        rpm::BuildConfig::v4()
            .compression(rpm::CompressionWithLevel::Zstd(3))
            .source_date(source_date),
    );
    for i in 0..3 {
        let data = format!("{SMALL} {version} file {i}\n").into_bytes();
        b.with_file_contents(
            data,
            rpm::FileOptions::new(format!("/usr/share/{SMALL}/f{i}")).mode(rpm::FileMode::regular(0o644)),
        )
        .unwrap();
    }
    let path = dir.join(format!("{SMALL}-{version}-1.noarch.rpm"));
    b.build().unwrap().write_file(&path).unwrap();
    path
}

/// Runs `cmd`, panicking with its stderr when it fails; returns stdout.
fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ostree(repo: &Path, args: &[&str]) -> String {
    let mut all = vec![format!("--repo={}", repo.display())];
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    run("ostree", &all)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64())
}

/// Entries, regular files and their bytes in `commit`, from `ostree ls -R`.
fn tree_stats(repo: &Path, commit: &str) -> (usize, usize, u64) {
    let ls = ostree(repo, &["ls", "-R", commit]);
    let (mut entries, mut files, mut bytes) = (0, 0, 0);
    for line in ls.lines() {
        entries += 1;
        if line.starts_with('-') {
            files += 1;
            bytes += line.split_whitespace().nth(3).unwrap().parse::<u64>().unwrap();
        }
    }
    (entries, files, bytes)
}

/// The reference: `ostree init` + `ostree commit` of `dir` into a fresh repository.
fn ostree_commit(repo: &Path, mode: &str, dir: &Path) -> f64 {
    timed(|| {
        ostree(repo, &["init", &format!("--mode={mode}")]);
        ostree(repo, &["commit", "-b", "x", &format!("--tree=dir={}", s(dir))]);
    })
    .1
}

/// `ostree checkout -U` (copying, so the reference reads plain files that
/// carry none of the bare-user repository's xattrs); not timed.
fn checkout(repo: &Path, commit: &str, dir: &Path) {
    ostree(repo, &["checkout", "-U", "--force-copy", commit, s(dir)]);
}

fn main() {
    // Compose runs its sandbox init from the arbor binary, not this one.
    // SAFETY: set before any thread that reads the environment starts.
    unsafe { std::env::set_var("ARBOR_EXE", env!("CARGO_BIN_EXE_arbor")) };
    // `RUST_LOG=arbor=info make bench` shows each compose stage's time.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sample = arbor_sample_repo::ensure(&arbor_sample_repo::Options::for_source_tree(root))
        .expect("building the sample repository");
    let tmp = tempfile::tempdir().expect("temporary directory");
    let t = tmp.path();

    // The rpm-md repository: the sample packages the tree needs plus the big one.
    let repo_dir = t.join("rpms");
    std::fs::create_dir_all(&repo_dir).unwrap();
    let mut sample_bytes = 0;
    for p in sample
        .packages
        .iter()
        .filter(|p| SAMPLE.contains(&p.name.as_str()) && (p.arch == "aarch64" || p.arch == "noarch"))
    {
        std::fs::copy(sample.out.join("Packages").join(&p.file), repo_dir.join(&p.file)).unwrap();
        sample_bytes += p.size;
    }
    let ((big_rpm, big_bytes), big_secs) = timed(|| build_big(&repo_dir, "1.0", false, EPOCH));
    let big_rpm_bytes = std::fs::metadata(&big_rpm).unwrap().len();
    let small_rpm = build_small(&repo_dir, "1.0", EPOCH);
    let createrepo = || run("createrepo_c", &["--quiet", "--no-database", s(&repo_dir)]);
    createrepo();

    let packages: String = INSTALL.iter().map(|p| format!("  - {p}\n")).collect();
    let yaml = t.join("t.yaml");
    std::fs::write(
        &yaml,
        format!("ref: bench/tree\nrepos: [bench]\nrecommends: false\npackages:\n{packages}  - {SMALL}\n"),
    )
    .unwrap();
    std::fs::write(
        t.join("t.repo"),
        format!("[bench]\nbaseurl=file://{}/\ngpgcheck=0\n", repo_dir.display()),
    )
    .unwrap();
    let tf = arbor::treefile::load(&yaml, Arch::Aarch64).expect("loading the treefile");
    let opts = |repo: &str, cache: &str| Options {
        repo: t.join(repo),
        cache_dir: t.join(cache),
        dry_run: false,
        force: false,
        no_scripts: true,
        script_timeout: std::time::Duration::from_secs(300),
        sign_key: None,
        jobs: 4,
    };
    let commit_of = |c: &Composed| c.commit.clone().expect("a commit");

    // Warm-up: fills the download cache; the repository is thrown away.
    // Nothing is deleted until the end: on ext4 without a journal, inodes freed
    // in the last ~30 s make every new inode slow to allocate (recently_deleted()),
    // which would charge one step's cleanup to the next step's time.
    let (_, warm_secs) = timed(|| compose(&tf, &opts("warm", "cache")).expect("composing (warm-up)"));

    // (a) cold: fresh bare-user repository, a cache holding only the downloads
    // (no package checkouts, no initramfs images).
    let fresh_cache = |name: &str| {
        std::fs::create_dir_all(t.join(name)).unwrap();
        run("cp", &["-a", s(&t.join("cache/packages")), s(&t.join(name))]);
    };
    fresh_cache("cache-cold");
    let (cold, cold_secs) = timed(|| compose(&tf, &opts("cold", "cache-cold")).expect("composing (cold)"));
    let cold_commit = commit_of(&cold);
    let (entries, files, bytes) = tree_stats(&t.join("cold"), &cold_commit);
    checkout(&t.join("cold"), &cold_commit, &t.join("co-a"));
    let ref_secs = ostree_commit(&t.join("ref-bare"), "bare-user", &t.join("co-a"));

    // (b) incremental: one small package bumped (the usual update), then the big one
    // (a package's import costs what the package holds, however little changed).
    std::fs::rename(&small_rpm, t.join("old-small.rpm")).unwrap();
    build_small(&repo_dir, "1.1", EPOCH + 3600);
    createrepo();
    let (incr, incr_secs) = timed(|| compose(&tf, &opts("cold", "cache-cold")).expect("composing (incremental)"));
    let incr_commit = commit_of(&incr);
    std::fs::rename(&big_rpm, t.join("old.rpm")).unwrap();
    build_big(&repo_dir, "1.1", true, EPOCH + 86_400);
    createrepo();
    let (incr_big, incr_big_secs) =
        timed(|| compose(&tf, &opts("cold", "cache-cold")).expect("composing (incremental, big)"));
    let incr_commit_big = commit_of(&incr_big);

    // (c) archive: package cache under a fresh cache dir holding only the downloads.
    fresh_cache("cache-archive");
    ostree(&t.join("archive"), &["init", "--mode=archive"]);
    let (archived, archive_cold_secs) = timed(|| compose(&tf, &opts("archive", "cache-archive")));
    // The same tree into a second archive repository with the package cache warm:
    // what is timed is assembly + commit + the parallel compressed copy.
    ostree(&t.join("archive2"), &["init", "--mode=archive"]);
    let (archived, archive_secs) = match archived {
        Ok(_) => timed(|| compose(&tf, &opts("archive2", "cache-archive"))),
        Err(e) => (Err(e), 0.0),
    };
    let mode = ostree(&t.join("archive2"), &["config", "get", "core.mode"]);
    let archive = match archived {
        Ok(c) if mode.trim().starts_with("archive") => {
            checkout(&t.join("cold"), &incr_commit_big, &t.join("co-c"));
            let ref_secs = ostree_commit(&t.join("ref-archive"), "archive", &t.join("co-c"));
            let du = |p: &Path| run("du", &["-sb", s(&p.join("objects"))]);
            let size = |p: &Path| du(p).split_whitespace().next().unwrap().parse::<f64>().unwrap() / 1e6;
            Ok((c, ref_secs, size(&t.join("archive2")), size(&t.join("ref-archive"))))
        }
        Ok(_) => Err(format!(
            "the compose succeeded but the repository's core.mode is now {:?}",
            mode.trim()
        )),
        Err(e) => Err(format!("the compose failed: {e:#}")),
    };

    let mb = bytes as f64 / 1e6;
    println!("compose tree: sample packages + a synthetic {BIG} package (aarch64, --no-scripts, jobs 4)");
    println!(
        "  packages:        {} in the tree, {:.1} MB of .rpm ({:.1} MB sample + {:.1} MB {BIG})",
        cold.packages,
        (sample_bytes + big_rpm_bytes) as f64 / 1e6,
        sample_bytes as f64 / 1e6,
        big_rpm_bytes as f64 / 1e6
    );
    println!(
        "  {BIG}:      {} files, {:.1} MB, built in {big_secs:.2} s (not part of a ratio)",
        GROUPS * SUBDIRS * FILES,
        big_bytes as f64 / 1e6
    );
    println!("  tree:            {files} regular files ({entries} entries), {mb:.1} MB");
    println!("  warm-up:         {warm_secs:.2} s (fills the download cache; not part of a ratio)");
    println!(
        "  arbor cold:      {cold_secs:.2} s, {:.0} files/s, {:.1} MB/s, {} packages imported",
        files as f64 / cold_secs,
        mb / cold_secs,
        cold.imported
    );
    println!(
        "  reference:       {ref_secs:.2} s (ostree init --mode=bare-user + ostree commit of a checkout), {:.0} files/s, {:.1} MB/s",
        files as f64 / ref_secs,
        mb / ref_secs
    );
    println!("  ratio arbor/ostree: {:.2}   (goal: <= 1.5)", cold_secs / ref_secs);
    println!(
        "  incremental:     {incr_secs:.2} s, {} package(s) imported ({SMALL} 1.0 -> 1.1)",
        incr.imported
    );
    if incr.imported != 1 || incr_commit == cold_commit {
        println!("  WARNING: expected exactly 1 import and a new commit");
    }
    println!(
        "  ratio incremental/cold: {:.2}   (goal: <= 0.1)",
        incr_secs / cold_secs
    );
    println!(
        "  incremental big: {incr_big_secs:.2} s, {} package(s) imported ({BIG} 1.0 -> 1.1, one of 16000 files changed), ratio {:.2}",
        incr_big.imported,
        incr_big_secs / cold_secs
    );
    if incr_big.imported != 1 || incr_commit_big == incr_commit {
        println!("  WARNING: expected exactly 1 import and a new commit");
    }
    match archive {
        Ok((c, ref_secs, size, ref_size)) => {
            println!(
                "  arbor archive:   {archive_secs:.2} s with the package cache warm ({archive_cold_secs:.2} s cold), {:.0} files/s, {:.1} MB/s, {} packages imported, objects {size:.1} MB",
                files as f64 / archive_secs,
                mb / archive_secs,
                c.imported
            );
            println!(
                "  reference:       {ref_secs:.2} s (ostree init --mode=archive + ostree commit of a checkout), {:.0} files/s, objects {ref_size:.1} MB",
                files as f64 / ref_secs
            );
            println!(
                "  ratio archive arbor/ostree: {:.2}   (goal: <= 0.6)",
                archive_secs / ref_secs
            );
        }
        Err(why) => {
            println!("  archive:         skipped, composing into an archive repository is not available yet: {why}")
        }
    }
}
