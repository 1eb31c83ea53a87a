//! `make bench`: static deltas between composes that differ in one package.
//!
//! Prints (1) the delta's size next to the zstd-compressed size of the files
//! that changed (what any update must ship at least), and (2) the time to
//! generate deltas from the 3 previous commits, arbor in parallel against
//! `ostree static-delta generate` run one after another on a copy of the same
//! repository, in the same run.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use arbor::arch::Arch;
use arbor::compose::tree::{Options, compose};
use arbor::ostree::publish::delta::{self, Pair};

const BASE: &str = "filesystem, setup, bash, busybox, kernel, uboot-images-armv8";
const STEPS: [&str; 4] = [
    "hello",
    "hello, strace",
    "hello, strace, tool-user",
    "hello, strace, tool-user, shell-profile",
];

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        n += if m.is_dir() { dir_size(&e.path()) } else { m.len() };
    }
    n
}

fn main() {
    // Compose runs its sandbox init from the arbor binary, not this one.
    // SAFETY: set before any thread that reads the environment starts.
    unsafe { std::env::set_var("ARBOR_EXE", env!("CARGO_BIN_EXE_arbor")) };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sample = arbor_sample_repo::ensure(&arbor_sample_repo::Options::for_source_tree(root)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::write(
        t.join("t.repo"),
        format!("[sample]\nbaseurl=file://{}/\ngpgcheck=0\n", sample.out.display()),
    )
    .unwrap();
    let repo = t.join("repo");
    let mut commits = Vec::new();
    for step in STEPS {
        std::fs::write(
            t.join("t.yaml"),
            format!("ref: bench/delta\nrepos: [sample]\nrecommends: false\npackages: [{BASE}, {step}]\n"),
        )
        .unwrap();
        let tf = arbor::treefile::load(&t.join("t.yaml"), Arch::Aarch64).unwrap();
        let opts = Options {
            repo: repo.clone(),
            cache_dir: t.join("cache"),
            dry_run: false,
            force: false,
            no_scripts: true,
            script_timeout: std::time::Duration::from_secs(300),
            jobs: 4,
            sign_key: None,
        };
        commits.push(compose(&tf, &opts).unwrap().commit.unwrap());
    }
    let head = commits.last().unwrap().clone();
    let prev = commits[commits.len() - 2].clone();
    let repo_s = repo.to_str().unwrap();
    let handle = arbor::ostree::Repo::open(&repo).unwrap();

    // (1) Size: the newest delta against the changed files, compressed.
    let opts = delta::Options {
        max_part_mb: 32,
        bsdiff: true,
        inline_parts: false,
    };
    let reference_repo = t.join("reference");
    run("cp", &["-a", repo_s, reference_repo.to_str().unwrap()]);
    let before = if repo.join("deltas").exists() {
        dir_size(&repo.join("deltas"))
    } else {
        0
    };
    delta::generate(
        &handle,
        &[Pair {
            from: Some(prev.clone()),
            to: head.clone(),
        }],
        &opts,
        1,
    )
    .unwrap();
    let delta_bytes = dir_size(&repo.join("deltas")) - before;
    let co = t.join("co");
    run(
        "ostree",
        &[
            &format!("--repo={repo_s}"),
            "checkout",
            "-U",
            &head,
            co.to_str().unwrap(),
        ],
    );
    let diff = run("ostree", &[&format!("--repo={repo_s}"), "diff", &prev, &head]);
    let (mut raw, mut compressed, mut files) = (0u64, 0u64, 0usize);
    for line in diff.lines() {
        let Some(path) = line.strip_prefix("A    ").or_else(|| line.strip_prefix("M    ")) else {
            continue;
        };
        let p = co.join(path.trim_start_matches('/'));
        if std::fs::symlink_metadata(&p).map(|m| m.is_file()).unwrap_or(false) {
            let bytes = std::fs::read(&p).unwrap();
            raw += bytes.len() as u64;
            compressed += zstd::encode_all(bytes.as_slice(), 3).unwrap().len() as u64;
            files += 1;
        }
    }
    std::fs::remove_file(repo.join("summary")).ok();

    // (2) Time: deltas from the 3 previous commits, in parallel vs ostree sequentially.
    let pairs: Vec<Pair> = commits[..3]
        .iter()
        .map(|c| Pair {
            from: Some(c.clone()),
            to: head.clone(),
        })
        .collect();
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let started = Instant::now();
    delta::generate_parallel(&handle, &pairs, &opts, jobs).unwrap();
    let arbor_secs = started.elapsed().as_secs_f64();
    // arbor then regenerates the summary (ostree's generate does not): timed apart.
    let started = Instant::now();
    delta::generate(&handle, &pairs[..1], &opts, 1).unwrap();
    let regen_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for c in &commits[..3] {
        run(
            "ostree",
            &[
                &format!("--repo={}", reference_repo.display()),
                "static-delta",
                "generate",
                "--from",
                c,
                "--to",
                &head,
            ],
        );
    }
    let ref_secs = started.elapsed().as_secs_f64();

    println!("static deltas between composes of the sample packages (aarch64)");
    println!(
        "  changed files:   {files} added or modified, {:.1} KB raw, {:.1} KB zstd -3",
        raw as f64 / 1e3,
        compressed as f64 / 1e3
    );
    println!(
        "  delta:           {:.1} KB ({} -> {})",
        delta_bytes as f64 / 1e3,
        &prev[..12],
        &head[..12]
    );
    println!(
        "  ratio delta/changed-compressed: {:.2}   (goal: <= 1.2)",
        delta_bytes as f64 / compressed as f64
    );
    println!(
        "  3 deltas:        arbor {arbor_secs:.2} s, {jobs} worker processes at a time; ostree static-delta generate one by one {ref_secs:.2} s"
    );
    println!("  ratio arbor/ostree: {:.2}   (goal: <= 0.6)", arbor_secs / ref_secs);
    println!("  (one more delta plus arbor's summary regeneration: {regen_secs:.2} s, not in the ratio)");
}
