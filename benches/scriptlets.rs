#![allow(clippy::unwrap_used)] // benches fail loudly on purpose

//! `make bench`: what running scriptlets costs.
//!
//! (a) per-scriptlet overhead of a trivial `/bin/sh` script in arbor's sandbox,
//!     native (an x86_64 tree) and emulated (an aarch64 tree under qemu-user),
//!     against `bwrap` running the same script in the same tree with the same
//!     namespaces. arbor keeps one sandbox per compose and forks a script into
//!     it; bwrap sets up its namespaces per script. Both numbers are printed,
//!     plus arbor with a fresh sandbox per script. bwrap cannot run the aarch64
//!     tree without a qemu registration on the host, which arbor never makes,
//!     so emulated is compared with native arbor instead.
//! (b) the sample aarch64 compose with scriptlets run against the same compose
//!     with `--no-scripts`, both with the package cache warm;
//! (c) a lua scriptlet (run natively) against the equivalent shell scriptlet
//!     emulated, both creating and removing the same directories and symlinks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use arbor::arch::Arch;
use arbor::sandbox::{Config, Job, Sandbox};

const N: usize = 200;

fn unpack(sample: &arbor_sample_repo::Summary, dir: &Path, arch: &str, names: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for n in names {
        let p = sample
            .packages
            .iter()
            .find(|p| p.name == *n && (p.arch == arch || p.arch == "noarch"))
            .unwrap_or_else(|| panic!("no {n}.{arch}"));
        let rpm = sample.out.join("Packages").join(&p.file);
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!("rpm2cpio '{}' | cpio -idm --quiet", rpm.display()))
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(st.success());
    }
    dir.to_path_buf()
}

fn job(label: &str, script: &str, lua: bool) -> Job {
    Job {
        label: label.into(),
        program: if lua { vec![] } else { vec!["/bin/sh".into()] },
        script: Some(script.into()),
        lua,
        args: vec!["1".into()],
        timeout_ms: 60_000,
        ..Job::default()
    }
}

fn start(root: &Path, arch: Arch) -> Sandbox {
    Sandbox::start(&Config {
        rootfs: root.to_path_buf(),
        arch,
        copy_on_write: true,
        exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_arbor"))),
        layers: Vec::new(),
        limits: arbor::sandbox::Limits::default(),
    })
    .expect("starting the sandbox")
}

/// Seconds per script over `n` runs in one sandbox, and the sandbox's setup + teardown.
fn in_one_sandbox(root: &Path, arch: Arch, script: &str, lua: bool, n: usize) -> (f64, f64) {
    let t0 = Instant::now();
    let mut sb = start(root, arch);
    let setup = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for _ in 0..n {
        let o = sb.run(&job("bench", script, lua)).unwrap();
        assert_eq!(o.status, 0, "{}", o.output);
    }
    let per = t1.elapsed().as_secs_f64() / n as f64;
    let t2 = Instant::now();
    sb.finish().unwrap();
    (per, setup + t2.elapsed().as_secs_f64())
}

fn fresh_sandbox_each(root: &Path, arch: Arch, n: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        let mut sb = start(root, arch);
        assert_eq!(sb.run(&job("bench", "exit 0", false)).unwrap().status, 0);
        sb.finish().unwrap();
    }
    t.elapsed().as_secs_f64() / n as f64
}

fn bwrap_each(root: &Path, n: usize) -> f64 {
    std::fs::write(root.join("tmp/trivial.sh"), "exit 0\n").unwrap();
    let t = Instant::now();
    for _ in 0..n {
        let st = Command::new("bwrap")
            .args([
                "--bind",
                root.to_str().unwrap(),
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
            ])
            .args([
                "--unshare-all",
                "--die-with-parent",
                "--chdir",
                "/",
                "/bin/sh",
                "/tmp/trivial.sh",
                "1",
            ])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let per = t.elapsed().as_secs_f64() / n as f64;
    std::fs::remove_file(root.join("tmp/trivial.sh")).unwrap();
    per
}

fn ms(s: f64) -> String {
    format!("{:.2} ms", s * 1000.0)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sample = arbor_sample_repo::ensure(&arbor_sample_repo::Options::for_source_tree(root))
        .expect("building the sample repository");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let pkgs = ["filesystem", "busybox", "busybox-sh"];
    let native = unpack(&sample, &t.join("x86_64"), "x86_64", &pkgs);
    let foreign = unpack(&sample, &t.join("aarch64"), "aarch64", &pkgs);

    println!("== scriptlets (a): per-script overhead of a trivial /bin/sh script, {N} runs each");
    let bwrap = bwrap_each(&native, N);
    let (arbor_native, native_setup) = in_one_sandbox(&native, Arch::X86_64, "exit 0", false, N);
    let fresh = fresh_sandbox_each(&native, Arch::X86_64, N / 4);
    let (arbor_emulated, emulated_setup) = in_one_sandbox(&foreign, Arch::Aarch64, "exit 0", false, N);
    println!("  bwrap, native x86_64 tree:                 {} per script", ms(bwrap));
    println!(
        "  arbor, native, one sandbox:                {} per script (+ {} once for setup and merge)",
        ms(arbor_native),
        ms(native_setup)
    );
    println!("  arbor, native, a fresh sandbox per script: {} per script", ms(fresh));
    println!(
        "  arbor, emulated aarch64 (qemu-user):       {} per script (+ {} once)",
        ms(arbor_emulated),
        ms(emulated_setup)
    );
    println!(
        "  ratio arbor/bwrap native: {:.2}x (goal <= 1.0x); fresh sandbox per script: {:.2}x; emulated/native: {:.1}x",
        arbor_native / bwrap,
        fresh / bwrap,
        arbor_emulated / arbor_native
    );

    println!("== scriptlets (c): lua natively vs the same work as an emulated shell script, 50 runs each");
    let lua = r#"
for i = 1, 20 do
  posix.mkdir("/var/tmp/d" .. i)
  posix.symlink("d" .. i, "/var/tmp/l" .. i)
end
for i = 1, 20 do
  posix.unlink("/var/tmp/l" .. i)
  posix.rmdir("/var/tmp/d" .. i)
end
"#;
    let sh = r#"
i=1; while [ $i -le 20 ]; do mkdir /var/tmp/d$i; ln -s d$i /var/tmp/l$i; i=$((i+1)); done
i=1; while [ $i -le 20 ]; do rm /var/tmp/l$i; rmdir /var/tmp/d$i; i=$((i+1)); done
"#;
    let (lua_s, _) = in_one_sandbox(&foreign, Arch::Aarch64, lua, true, 50);
    // busybox applet links for mkdir, ln, rm, rmdir in the aarch64 tree.
    for a in ["mkdir", "ln", "rm", "rmdir"] {
        let link = foreign.join("usr/bin").join(a);
        if !link.exists() {
            std::os::unix::fs::symlink("/usr/sbin/busybox", link).unwrap();
        }
    }
    let (sh_s, _) = in_one_sandbox(&foreign, Arch::Aarch64, sh, false, 50);
    println!("  lua (native):            {} per script", ms(lua_s));
    println!("  shell (aarch64, qemu):   {} per script", ms(sh_s));
    println!("  ratio lua/shell: {:.2}x", lua_s / sh_s);

    println!("== scriptlets (b): sample aarch64 compose, scriptlets run vs skipped (package cache warm)");
    let tf = arbor::treefile::load(&root.join("treefiles/sample-minimal.yaml"), Arch::Aarch64).unwrap();
    let opts = |repo: &str, no_scripts: bool| arbor::compose::tree::Options {
        repo: t.join(repo),
        cache_dir: t.join("cache"),
        dry_run: false,
        force: true,
        no_scripts,
        script_timeout: Duration::from_secs(300),
        jobs: 4,
        sign_key: None,
    };
    // SAFETY: set before any thread that reads the environment starts.
    unsafe { std::env::set_var("ARBOR_EXE", env!("CARGO_BIN_EXE_arbor")) };
    arbor::compose::tree::compose(&tf, &opts("warm", true)).expect("warm-up compose");
    let timed = |repo: &str, no_scripts: bool| {
        let t0 = Instant::now();
        let c = arbor::compose::tree::compose(&tf, &opts(repo, no_scripts)).expect("compose");
        (t0.elapsed().as_secs_f64(), c)
    };
    let (skip_s, _) = timed("skipped", true);
    let (run_s, c) = timed("run", false);
    let ran = c.scripts.map(|r| r.ran).unwrap_or(0);
    println!("  --no-scripts:       {skip_s:.2} s");
    println!("  scriptlets run:     {run_s:.2} s ({ran} scripts)");
    println!("  ratio run/skipped: {:.2}x", run_s / skip_s);
}
