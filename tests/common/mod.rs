//! Shared test harness: the sample repository is built once (per input change)
//! and shared by every test binary; a file lock keeps parallel test binaries
//! from building it at the same time.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use arbor::sample_repo::{Options, Summary};

/// The source tree.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The sample repository, built on first use.
pub fn sample_repo() -> &'static Summary {
    static REPO: OnceLock<Summary> = OnceLock::new();
    REPO.get_or_init(|| {
        let opts = Options::for_source_tree(root());
        std::fs::create_dir_all(root().join("target")).expect("creating target/");
        let lock = std::fs::File::create(root().join("target/sample-repo.lock")).expect("creating the lock file");
        let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("locking target/sample-repo.lock");
        match arbor::sample_repo::ensure(&opts) {
            Ok(s) => s,
            Err(e) => panic!("building the sample repository failed: {e:#}"),
        }
    })
}

/// Path of the sample package file with this name and arch.
pub fn package(name: &str, arch: &str) -> PathBuf {
    let repo = sample_repo();
    let p = repo
        .packages
        .iter()
        .find(|p| p.name == name && p.arch == arch)
        .unwrap_or_else(|| panic!("sample repository has no {name}.{arch}"));
    repo.out.join("Packages").join(&p.file)
}

/// The sample repository's metadata file of this kind (`primary`, `filelists`).
pub fn metadata(kind: &str) -> PathBuf {
    let dir = sample_repo().out.join("repodata");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(&format!("-{kind}.xml.gz")))
        .unwrap_or_else(|| panic!("no {kind} metadata in {}", dir.display()))
}

/// Runs a command, asserting success; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `rpm` with a private database: Debian's rpm would otherwise use /root/.rpmdb.
pub fn rpm(dbpath: &Path) -> Command {
    let mut c = Command::new("rpm");
    c.arg("--dbpath").arg(dbpath);
    c
}

/// Whether we run as root; tests that need it say so when skipped.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
