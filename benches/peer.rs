#![allow(clippy::unwrap_used)] // benches fail loudly on purpose

//! `make bench`: arbor against what a user does today without it, for the
//! sample aarch64 tree with its scriptlets run in both.
//!
//! The peer: qemu-user registered with binfmt_misc and real rpm installing
//! the resolved RPMs into a root (`rpm --root R --ignorearch --nodeps -i`, one
//! transaction: rpm orders them itself), then `ostree commit` of that root
//! into a fresh bare-user repository. qemu is registered in a private
//! binfmt_misc instance (a new user namespace with every id mapped, as root),
//! so the host's table stays untouched, as arbor's sandbox does.
//!
//! arbor: `compose tree` of the same treefile into a fresh bare-user
//! repository, cold (the cache holds only the downloads) and warm (the package
//! cache filled by a warm-up compose).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use arbor::arch::Arch;
use arbor::compose::tree::{Options, compose};

const TREEFILE: &str = "treefiles/sample-minimal.yaml";

/// qemu's own registration for aarch64 (`scripts/qemu-binfmt-conf.sh`), with
/// the flags of Debian's qemu-user-static (`F`: the interpreter is opened
/// now, so it works inside the root rpm chroots into).
const QEMU_AARCH64: &str = r":qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:FP";

/// The peer's install: `$1` the registration, `$2` the root, the rest the RPMs.
/// The child waits on a FIFO until its new user namespace maps every id (a
/// root parent may write that map; `unshare --map-users` needs /etc/subuid).
const PEER_SH: &str = r#"
set -euo pipefail
reg=$1 root=$2; shift 2
fifo=$(mktemp -u); mkfifo "$fifo"
unshare --user --mount --propagation private bash -c '
  set -eu
  read -r _ < "$1"
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  printf "%s" "$2" > /proc/sys/fs/binfmt_misc/register
  root=$3; shift 3
  rpm --root "$root" --dbpath /usr/lib/sysimage/rpm --ignorearch --nodeps -i "$@"
' peer "$fifo" "$reg" "$root" "$@" &
pid=$!
me=$(readlink /proc/self/ns/user)
while [ "$(readlink /proc/$pid/ns/user)" = "$me" ]; do sleep 0.001; done
echo "0 0 4294967295" > /proc/$pid/uid_map
echo "0 0 4294967295" > /proc/$pid/gid_map
echo go > "$fifo"
rm -f "$fifo"
wait $pid
"#;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ostree(repo: &Path, args: &[&str]) -> String {
    run(Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(args))
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64())
}

/// Regular files in `commit`.
fn files(repo: &Path, commit: &str) -> usize {
    ostree(repo, &["ls", "-R", commit])
        .lines()
        .filter(|l| l.starts_with('-'))
        .count()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!(
        "== peer: the sample aarch64 tree ({TREEFILE}), scriptlets run, against rpm --root + qemu-user binfmt + ostree commit"
    );
    if !nix::unistd::geteuid().is_root() {
        println!("  skipped: the peer maps every id into a new user namespace, which needs root");
        return;
    }
    let arbor = env!("CARGO_BIN_EXE_arbor");
    // SAFETY: set before any thread that reads the environment starts.
    unsafe { std::env::set_var("ARBOR_EXE", arbor) };
    let sample = arbor_sample_repo::ensure(&arbor_sample_repo::Options::for_source_tree(root))
        .expect("building the sample repository");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let tf = arbor::treefile::load(&root.join(TREEFILE), Arch::Aarch64).unwrap();
    let opts = |repo: &str, cache: &str| Options {
        repo: t.join(repo),
        cache_dir: t.join(cache),
        dry_run: false,
        force: false,
        no_scripts: false,
        script_timeout: Duration::from_secs(300),
        sign_key: None,
        jobs: 4,
    };

    // Warm-up: downloads and the package cache.
    compose(&tf, &opts("warmup", "cache")).expect("warm-up compose");
    std::fs::create_dir_all(t.join("cache-cold")).unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg(t.join("cache/packages"))
        .arg(t.join("cache-cold")));
    let (cold, cold_s) = timed(|| compose(&tf, &opts("cold", "cache-cold")).expect("cold compose"));
    let (warm, warm_s) = timed(|| compose(&tf, &opts("warm", "cache")).expect("warm compose"));

    // The same resolved packages for the peer, as the sample repository holds them.
    let resolved = run(Command::new(arbor)
        .args(["compose", "resolve", "--json", "--arch", "aarch64", "--cache-dir"])
        .arg(t.join("cache"))
        .arg(root.join(TREEFILE)));
    let resolved: serde_json::Value = serde_json::from_str(&resolved).unwrap();
    let rpms: Vec<PathBuf> = resolved["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| sample.out.join(p["location"].as_str().unwrap()))
        .collect();
    let peer_root = t.join("peer-root");
    let (_, rpm_s) = timed(|| {
        run(Command::new("bash")
            .arg("-c")
            .arg(PEER_SH)
            .arg("peer")
            .arg(QEMU_AARCH64)
            .arg(&peer_root)
            .args(&rpms))
    });
    let peer_repo = t.join("peer-repo");
    let (_, commit_s) = timed(|| {
        ostree(&peer_repo, &["init", "--mode=bare-user"]);
        ostree(
            &peer_repo,
            &["commit", "-b", "peer", &format!("--tree=dir={}", peer_root.display())],
        );
    });
    let peer_s = rpm_s + commit_s;

    let scripts = |c: &arbor::compose::tree::Composed| c.scripts.as_ref().map_or(0, |r| r.ran);
    println!(
        "  peer:        {peer_s:.2} s (rpm -i of {} packages under qemu-user {rpm_s:.2} s, ostree commit {commit_s:.2} s), {} files",
        rpms.len(),
        files(&peer_repo, "peer")
    );
    println!(
        "  arbor cold:  {cold_s:.2} s ({} packages, {} imported, {} scripts), {} files",
        cold.packages,
        cold.imported,
        scripts(&cold),
        files(&t.join("cold"), cold.commit.as_deref().unwrap())
    );
    println!(
        "  arbor warm:  {warm_s:.2} s (package cache warm, {} scripts)",
        scripts(&warm)
    );
    println!(
        "  ratio arbor/peer: cold {:.2}x, warm {:.2}x (arbor also builds the initramfs, the rpmdb and /etc -> /usr/etc)",
        cold_s / peer_s,
        warm_s / peer_s
    );
}
