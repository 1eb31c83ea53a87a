//! Shared test harness: the sample repository is built once (per input change)
//! and shared by every test; a file lock keeps another test run (or another
//! checkout's `cargo test` on the same target directory) from building it at
//! the same time.

pub mod archive;
pub mod deadline;
pub mod delta;
pub mod http;
pub mod loopfs;
pub mod peak;

pub use deadline::Deadline;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use arbor_sample_repo::{Options, Summary};

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
        match arbor_sample_repo::ensure(&opts) {
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
    let out = cmd.timed_output().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
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

/// `ostree --repo=REPO ARGS...`, asserting success; returns stdout.
pub fn ostree(repo: &Path, args: &[&str]) -> String {
    run(Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(args))
}

/// The name libtest gives test `name` of the module at `module_path` (`module_path!()`),
/// for `--exact` when a test runs another test of this binary in a child process.
pub fn test_name(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, module)) => format!("{module}::{name}"),
        None => name.to_string(),
    }
}

/// The `arbor` binary under test, without progress bars.
pub fn arbor() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_arbor"));
    c.env("ARBOR_NO_PROGRESS", "1");
    c
}

/// The sample repository as a `file://` base URL.
pub fn sample_url() -> String {
    format!("file://{}/", sample_repo().out.display())
}

/// A scratch directory holding a treefile `t.yaml`, a `t.repo` whose `[sample]`
/// repository has `baseurl`, and a cache directory.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// Writes the treefile and the .repo file.
    pub fn new(baseurl: &str, treefile: &str) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.repo"),
            format!("[sample]\nname=sample\nbaseurl={baseurl}\ngpgcheck=0\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("t.yaml"), treefile).unwrap();
        Scratch { dir }
    }

    /// A path inside the scratch directory.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Runs `arbor compose tree --arch aarch64 --json --repo REPO` on the treefile
    /// (`repo` is a path inside the scratch directory).
    pub fn compose_tree(&self, repo: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let repo = self.path(repo);
        let verb = [
            "compose",
            "tree",
            "--arch",
            "aarch64",
            "--json",
            "--repo",
            repo.to_str().unwrap(),
        ];
        self.run(&verb, extra, env)
    }

    /// Runs `arbor VERB... --cache-dir CACHE t.yaml EXTRA...` with `env` set.
    pub fn run(&self, verb: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = arbor();
        c.envs(env.iter().copied())
            .args(verb)
            .arg("--cache-dir")
            .arg(self.path("cache"))
            .arg(self.path("t.yaml"));
        c.args(extra).timed_output().unwrap()
    }
}

/// Adds a repository `[extra]` holding `pkgs` (built by the test) to the scratch
/// directory's `t.repo`; the treefile lists `extra` in `repos` to use it.
pub fn with_extra_packages(t: &Scratch, pkgs: &[rpm::Package]) {
    let extra = t.path("extra");
    std::fs::create_dir_all(&extra).unwrap();
    for (i, pkg) in pkgs.iter().enumerate() {
        pkg.write_file(extra.join(format!("extra-{i}.rpm"))).unwrap();
    }
    run(Command::new("createrepo_c").arg("--quiet").arg(&extra));
    let repo = std::fs::read_to_string(t.path("t.repo")).unwrap();
    std::fs::write(
        t.path("t.repo"),
        format!(
            "{repo}\n[extra]\nname=extra\nbaseurl=file://{}\ngpgcheck=0\n",
            extra.display()
        ),
    )
    .unwrap();
}

/// [`with_extra_packages`] with one package.
pub fn with_extra_package(t: &Scratch, pkg: rpm::Package) {
    with_extra_packages(t, &[pkg]);
}

/// stdout as JSON, asserting success.
pub fn ok_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// stderr, asserting exit status 1 (an error, not a usage mistake).
pub fn err(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected failure, stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether we run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// First line of a test marked `#[ignore = "needs root: WHY"]` (`make test` runs
/// those as root): run without root all the same, it fails saying so.
pub fn need_root() {
    assert!(
        is_root(),
        "this test needs root (see its #[ignore] reason); without root it is left out unless \
         --include-ignored asks for it"
    );
}

/// The host's binfmt_misc registrations (names), sorted: arbor must never change them.
pub fn host_binfmt() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/sys/fs/binfmt_misc")
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `rpm -qp --qf FORMAT` of the sample package with this name and arch. Versions of
/// packages made from Debian's archive move with the archive: tests read them here,
/// from the RPMs they run against, never from a literal.
pub fn query_package(name: &str, arch: &str, format: &str) -> String {
    let db = tempfile::tempdir().unwrap();
    run(rpm(db.path())
        .args(["-qp", "--nosignature", "--nodigest", "--qf", format])
        .arg(package(name, arch)))
}

/// `NAME-VERSION-RELEASE.ARCH` of a sample package, as `rpm -q` prints it (no epoch).
pub fn nvra(name: &str, arch: &str) -> String {
    query_package(name, arch, "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}")
}

/// `[EPOCH:]VERSION-RELEASE` of a sample package.
pub fn evr(name: &str, arch: &str) -> String {
    query_package(name, arch, "%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}")
}

/// `NAME-[EPOCH:]VERSION-RELEASE.ARCH` of a sample package.
pub fn nevra(name: &str, arch: &str) -> String {
    format!("{name}-{}.{}", evr(name, arch), query_package(name, arch, "%{ARCH}"))
}

/// The file name of a sample package under `Packages/`.
pub fn package_file(name: &str, arch: &str) -> String {
    package(name, arch).file_name().unwrap().to_string_lossy().into_owned()
}

/// The kernel release (`uname -r`) of the sample kernel package for `arch`, from its
/// `kernel-uname-r` provide.
pub fn kernel_release(arch: &str) -> String {
    let provides = query_package("kernel", arch, "[%{PROVIDES} %{PROVIDEVERSION}\n]");
    provides
        .lines()
        .find_map(|l| l.strip_prefix("kernel-uname-r "))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("the sample kernel.{arch} provides no kernel-uname-r:\n{provides}"))
}

/// A temporary directory shared by the tests of one run (kept in a static,
/// which is never dropped): it is removed when the test process exits, with
/// libostree's immutable flag cleared first, so runs do not pile up in /tmp.
pub fn shared_tempdir() -> tempfile::TempDir {
    use std::sync::Mutex;
    static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    extern "C" fn remove_all() {
        let dirs = DIRS.lock().map(|d| d.clone()).unwrap_or_default();
        for d in dirs {
            #[allow(clippy::disallowed_methods)] // at exit: no test to fail, chattr does not hang
            let _ = Command::new("chattr").arg("-R").arg("-f").arg("-i").arg(&d).status();
            let _ = std::fs::remove_dir_all(&d);
        }
    }
    REGISTERED.call_once(|| {
        // SAFETY: registers a plain extern "C" function with no captured state.
        unsafe {
            libc::atexit(remove_all);
        }
    });
    let t = tempfile::tempdir().unwrap();
    DIRS.lock().unwrap().push(t.path().to_path_buf());
    t
}
