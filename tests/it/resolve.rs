//! `arbor compose resolve` end to end: treefiles, rpm-md over file:// and
//! http://, libsolv for the target arch, verified downloads, lockfiles, and
//! the errors a user gets for bad input.

use crate::common::{self, Deadline as _, http};

fn resolve(t: &Scratch, arch: &str, extra: &[&str]) -> Output {
    t.run(&["compose", "resolve", "--arch", arch], extra, &[])
}

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Scratch, arbor, err, ok_json, sample_url};
use serde_json::Value;

fn nas(v: &Value) -> Vec<String> {
    v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}.{}", p["name"].as_str().unwrap(), p["arch"].as_str().unwrap()))
        .collect()
}

const MINIMAL: &str =
    "ref: t/${basearch}\nrepos: [sample]\npackages: [filesystem setup bash glibc busybox hello shell-profile]\n";

#[test]
fn shipped_sample_minimal_resolves_for_aarch64_and_x86_64() {
    common::sample_repo();
    let cache = tempfile::tempdir().unwrap();
    let run = |arch: &str| {
        ok_json(
            &arbor()
                .args(["compose", "resolve", "--json", "--arch", arch, "--cache-dir"])
                .arg(cache.path())
                .arg(common::root().join("treefiles/sample-minimal.yaml"))
                .timed_output()
                .unwrap(),
        )
    };
    let a = run("aarch64");
    let names = nas(&a);
    assert_eq!(a["ref"], "arbor/aarch64/sample-minimal");
    assert!(
        names.iter().all(|n| n.ends_with(".aarch64") || n.ends_with(".noarch")),
        "{names:?}"
    );
    for want in [
        "kernel.aarch64",
        "bash.aarch64",
        "glibc.aarch64",
        "uboot-images-armv8.noarch",
        "shell-profile-bash.noarch",
    ] {
        assert!(names.contains(&want.to_string()), "{want} missing from {names:?}");
    }
    assert!(!names.contains(&"hello-extras.noarch".to_string()));
    let x = run("x86_64");
    let names = nas(&x);
    assert!(
        names.contains(&"bash.x86_64".to_string()) && names.contains(&"busybox.x86_64".to_string()),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("kernel.") && !n.ends_with(".aarch64")),
        "{names:?}"
    );
    let sizes: u64 = a["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["download_size"].as_u64().unwrap())
        .sum();
    assert_eq!(a["download_size"].as_u64().unwrap(), sizes);
}

#[test]
fn excludes_and_recommends_false_are_honoured() {
    let base = Scratch::new(&sample_url(), MINIMAL);
    let names = nas(&ok_json(&resolve(&base, "aarch64", &["--json"])));
    assert!(
        names.contains(&"hello-docs.noarch".to_string()),
        "recommended by default: {names:?}"
    );
    let t = Scratch::new(&sample_url(), &format!("{MINIMAL}exclude-packages: [hello-docs]\n"));
    let names = nas(&ok_json(&resolve(&t, "aarch64", &["--json"])));
    assert!(!names.contains(&"hello-docs.noarch".to_string()), "{names:?}");
    let t = Scratch::new(&sample_url(), &format!("{MINIMAL}recommends: false\n"));
    let names = nas(&ok_json(&resolve(&t, "aarch64", &["--json"])));
    assert!(!names.contains(&"hello-docs.noarch".to_string()), "{names:?}");
}

/// libsolv's own Python bindings, given the same repository and job.
fn python_solv_order(arch: &str, packages: &[&str]) -> Vec<String> {
    let primary = common::metadata("primary");
    let filelists = common::metadata("filelists");
    let script = r#"
import sys, solv
arch, primary, filelists, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
pool = solv.Pool()
pool.setdisttype(solv.Pool.DISTTYPE_RPM)
pool.setarch(arch)
repo = pool.add_repo("sample")
repo.add_rpmmd(solv.xfopen(primary), None)
repo.add_rpmmd(solv.xfopen(filelists), None, solv.Repo.REPO_EXTEND_SOLVABLES)
pool.addfileprovides()
pool.createwhatprovides()
jobs = []
for n in names:
    jobs += pool.select(n, solv.Selection.SELECTION_NAME | solv.Selection.SELECTION_PROVIDES).jobs(solv.Job.SOLVER_INSTALL)
solver = pool.Solver()
assert not solver.solve(jobs)
trans = solver.transaction()
trans.order()
for s in trans.steps():
    print(s.name + "." + s.arch)
"#;
    let out = common::run(
        Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(script)
            .arg(arch)
            .arg(primary)
            .arg(filelists)
            .args(packages),
    );
    out.lines().map(str::to_string).collect()
}

#[test]
fn transaction_order_matches_libsolv_reference_and_testsolv_accepts_the_result() {
    let pkgs = [
        "filesystem",
        "setup",
        "bash",
        "glibc",
        "busybox",
        "hello",
        "shell-profile",
        "kernel",
        "strace",
    ];
    for arch in ["aarch64", "x86_64"] {
        let list: Vec<&str> = pkgs
            .iter()
            .copied()
            .filter(|p| arch == "aarch64" || !["kernel", "strace"].contains(p))
            .collect();
        let t = Scratch::new(
            &sample_url(),
            &format!("ref: t\nrepos: [sample]\npackages: [{}]\n", list.join(", ")),
        );
        let ours = nas(&ok_json(&resolve(&t, arch, &["--json"])));
        assert_eq!(ours, python_solv_order(arch, &list), "install order for {arch}");
    }
    // testsolv re-solves the testcase our solver wrote and checks it gets our result.
    let mut pool = arbor::solve::Pool::new(arbor::arch::Arch::Aarch64);
    pool.add_rpmmd(
        "sample",
        &common::metadata("primary"),
        Some(&common::metadata("filelists")),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let req = arbor::solve::Request {
        install: pkgs.iter().map(|s| s.to_string()).collect(),
        exclude: vec!["hello-docs".into()],
        recommends: true,
        ..Default::default()
    };
    let solved = pool.solve_recording(&req, Some(dir.path())).unwrap();
    let testcase = std::fs::read_to_string(dir.path().join("testcase.t")).unwrap();
    assert!(testcase.contains("system aarch64 rpm"), "{testcase}");
    let result = std::fs::read_to_string(dir.path().join("solver.result")).unwrap();
    assert_eq!(
        result.lines().filter(|l| l.starts_with("install ")).count(),
        solved.len(),
        "{result}"
    );
    let out = Command::new("testsolv")
        .arg(dir.path().join("testcase.t"))
        .timed_output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "testsolv disagrees:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unsatisfiable_sets_print_libsolv_problems_in_plain_words() {
    let t = Scratch::new(
        &sample_url(),
        "ref: t\nrepos: [sample]\npackages: [hello, needs-missing-lib]\n",
    );
    let e = err(&resolve(&t, "aarch64", &[]));
    assert!(
        e.contains("nothing provides libfoo.so.1()(64bit) needed by needs-missing-lib-1.0-1.noarch"),
        "{e}"
    );
    let t = Scratch::new(&sample_url(), "ref: t\nrepos: [sample]\npackages: [kernel]\n");
    let e = err(&resolve(&t, "x86_64", &[]));
    assert!(
        e.contains("package kernel was requested but no package provides it"),
        "{e}"
    );
}

#[test]
fn unreachable_repo_names_the_url() {
    let t = Scratch::new("http://127.0.0.1:9/nowhere/", MINIMAL);
    let e = err(&resolve(&t, "aarch64", &[]));
    assert!(e.contains("http://127.0.0.1:9/nowhere/repodata/repomd.xml"), "{e}");
    let t = Scratch::new("file:///nonexistent/arbor-repo/", MINIMAL);
    let e = err(&resolve(&t, "aarch64", &[]));
    assert!(e.contains("file:///nonexistent/arbor-repo/repodata/repomd.xml"), "{e}");
}

/// A copy of the sample repository to tamper with. `-H`: target/sample-repo
/// may be a symlink to a checkout's shared one (a worktree's), and `cp -a` of
/// the link alone would send every edit below into the shared repository.
fn copy_repo(to: &Path) {
    common::run(
        Command::new("cp")
            .arg("-a")
            .arg("-H")
            .arg(&common::sample_repo().out)
            .arg(to),
    );
}

#[test]
fn corrupt_metadata_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    copy_repo(&repo);
    let primary = std::fs::read_dir(repo.join("repodata"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("primary.xml.gz"))
        .unwrap();
    let mut bytes = std::fs::read(&primary).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&primary, bytes).unwrap();
    let t = Scratch::new(&format!("file://{}/", repo.display()), MINIMAL);
    let e = err(&resolve(&t, "aarch64", &[]));
    assert!(
        e.contains("checksum mismatch") && e.contains(&*primary.file_name().unwrap().to_string_lossy()),
        "{e}"
    );
    let cached: Vec<_> = walk(&t.path("cache"));
    assert!(
        cached.iter().all(|p| !p.to_string_lossy().contains("primary")),
        "nothing unverified is cached: {cached:?}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
    }
    out
}

#[test]
fn downloads_are_verified_and_a_corrupt_cached_rpm_is_removed_and_named() {
    let t = Scratch::new(&sample_url(), "ref: t\nrepos: [sample]\npackages: [busybox, bash]\n");
    let v = ok_json(&resolve(&t, "aarch64", &["--json", "--download"]));
    let files: Vec<PathBuf> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| PathBuf::from(f.as_str().unwrap()))
        .collect();
    assert_eq!(files.len(), v["packages"].as_array().unwrap().len());
    for (f, p) in files.iter().zip(v["packages"].as_array().unwrap()) {
        assert!(f.starts_with(t.path("cache")), "{f:?}");
        assert_eq!(
            arbor_sample_repo::debs::sha256_file(f).unwrap(),
            p["checksum"].as_str().unwrap()
        );
    }
    let bash = files.iter().find(|f| f.to_string_lossy().contains("/bash-")).unwrap();
    // Verified once, stamped: later runs skip hashing while the file is untouched,
    // and an edit (below) changes its ctime, so it is verified — and caught — again.
    let stamp = PathBuf::from(format!("{}.verified", bash.display()));
    assert!(
        std::fs::read_to_string(&stamp).unwrap().starts_with("sha256:"),
        "{stamp:?}"
    );
    let mut bytes = std::fs::read(bash).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0xff;
    std::fs::write(bash, bytes).unwrap();
    let e = err(&resolve(&t, "aarch64", &["--download"]));
    assert!(
        e.contains(&common::nvra("bash", "aarch64")) && e.contains("removed"),
        "{e}"
    );
    assert!(!bash.exists(), "the corrupt file must be removed from the cache");
    ok_json(&resolve(&t, "aarch64", &["--json", "--download"]));
    assert!(bash.exists(), "a rerun fetches it again");
}

#[test]
fn http_repo_second_run_fetches_only_repomd_and_downloads_resume() {
    let server = http::Server::start(common::sample_repo().out.clone());
    let t = Scratch::new(&server.url, "ref: t\nrepos: [sample]\npackages: [busybox]\n");
    ok_json(&resolve(&t, "aarch64", &["--json"]));
    let first = server.take();
    assert!(
        first.iter().any(|p| p.ends_with("primary.xml.gz")) && first.iter().any(|p| p.ends_with("filelists.xml.gz")),
        "{first:?}"
    );
    ok_json(&resolve(&t, "aarch64", &["--json"]));
    assert_eq!(
        server.take(),
        ["/repodata/repomd.xml"],
        "unchanged metadata: only repomd.xml is fetched"
    );

    // A download interrupted halfway resumes from where it stopped.
    let v = ok_json(&resolve(&t, "aarch64", &["--json"]));
    let bb = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "busybox")
        .unwrap()
        .clone();
    let src = common::sample_repo().out.join(bb["location"].as_str().unwrap());
    let dest = t
        .path("cache/packages")
        .join(bb["checksum"].as_str().unwrap())
        .join(src.file_name().unwrap());
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let bytes = std::fs::read(&src).unwrap();
    std::fs::write(arbor::repo::fetch::part_path(&dest), &bytes[..bytes.len() / 2]).unwrap();
    ok_json(&resolve(&t, "aarch64", &["--json", "--download"]));
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert!(!arbor::repo::fetch::part_path(&dest).exists());
}

#[test]
fn lockfiles_reproduce_the_set_or_name_the_difference() {
    let t = Scratch::new(&sample_url(), MINIMAL);
    let lock = t.path("lock.json");
    let first = ok_json(&resolve(
        &t,
        "aarch64",
        &["--json", "--write-lockfile", lock.to_str().unwrap()],
    ));
    let again = ok_json(&resolve(
        &t,
        "aarch64",
        &["--json", "--lockfile", lock.to_str().unwrap()],
    ));
    assert_eq!(nas(&first), nas(&again));
    let text = std::fs::read_to_string(&lock).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["packages"]["bash"]["digest"].as_str().unwrap().starts_with("sha256:"));
    // A lockfile naming a bash release the repository does not have.
    let evr = common::evr("bash", "aarch64");
    let (held, gone) = (format!("{evr}.aarch64"), format!("{evr}.gone.aarch64"));
    assert!(text.contains(&held), "{text}");
    std::fs::write(&lock, text.replace(&held, &gone)).unwrap();
    let e = err(&resolve(&t, "aarch64", &["--lockfile", lock.to_str().unwrap()]));
    assert!(e.contains(&format!("bash-{gone} is not in the repositories")), "{e}");
}

#[test]
fn gpgcheck_without_a_key_is_a_clear_error() {
    let t = Scratch::new(&sample_url(), "ref: t\nrepos: [sample]\npackages: [busybox]\n");
    std::fs::write(
        t.path("t.repo"),
        format!("[sample]\nbaseurl={}\ngpgcheck=1\n", sample_url()),
    )
    .unwrap();
    let e = err(&resolve(&t, "aarch64", &["--download"]));
    assert!(e.contains("gpgcheck=1 but no gpgkey"), "{e}");
}

/// Rewrites one metadata file of a copied repository: `edit` changes the XML,
/// `ext` picks the compressor; repomd.xml gets the new href and checksum.
fn rewrite_metadata(repo: &Path, kind: &str, ext: &str, edit: impl Fn(String) -> String) {
    let repodata = repo.join("repodata");
    let old = std::fs::read_dir(&repodata)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(&format!("-{kind}.xml")))
        .unwrap();
    let xml = common::run(Command::new("gzip").arg("-dc").arg(&old));
    let plain = repodata.join(format!("new-{kind}.xml"));
    std::fs::write(&plain, edit(xml)).unwrap();
    let tool = match ext {
        "gz" => "gzip",
        "xz" => "xz",
        _ => "zstd",
    };
    common::run(Command::new(tool).arg("-q").arg("-f").arg(&plain));
    let new = repodata.join(format!("new-{kind}.xml.{ext}"));
    assert!(new.exists(), "{tool} did not write {}", new.display());
    let sum = arbor_sample_repo::debs::sha256_file(&new).unwrap();
    let old_sum = arbor_sample_repo::debs::sha256_file(&old).unwrap();
    let old_href = format!("repodata/{}", old.file_name().unwrap().to_string_lossy());
    let repomd = std::fs::read_to_string(repodata.join("repomd.xml")).unwrap();
    let repomd = repomd
        .replace(&old_href, &format!("repodata/new-{kind}.xml.{ext}"))
        .replace(&old_sum, &sum);
    std::fs::write(repodata.join("repomd.xml"), repomd).unwrap();
    std::fs::remove_file(old).unwrap();
}

#[test]
fn xz_and_zstd_metadata_load_like_gzip() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    copy_repo(&repo);
    rewrite_metadata(&repo, "primary", "xz", |x| x);
    rewrite_metadata(&repo, "filelists", "zst", |x| x);
    let t = Scratch::new(
        &format!("file://{}/", repo.display()),
        "ref: t\nrepos: [sample]\npackages: [tool-user]\n",
    );
    let names = nas(&ok_json(&resolve(&t, "aarch64", &["--json"])));
    assert!(
        names.contains(&"tool-helper.noarch".to_string()),
        "file provide from .zst filelists: {names:?}"
    );
}

#[test]
fn hostile_package_locations_never_leave_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    copy_repo(&repo);
    rewrite_metadata(&repo, "primary", "gz", |x| {
        x.replace(
            &format!("href=\"Packages/{}\"", common::package_file("busybox", "aarch64")),
            "href=\"../../../../tmp/evil.rpm\"",
        )
    });
    let t = Scratch::new(
        &format!("file://{}/", repo.display()),
        "ref: t\nrepos: [sample]\npackages: [busybox]\n",
    );
    let e = err(&resolve(&t, "aarch64", &["--download"]));
    assert!(
        e.contains("busybox") && e.contains("../../../../tmp/evil.rpm") && e.contains("not a plain relative path"),
        "{e}"
    );
    assert!(
        walk(&t.path("cache"))
            .iter()
            .all(|p| !p.to_string_lossy().contains("evil"))
    );
}

#[test]
fn an_rpm_whose_payload_does_not_match_its_header_digest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    copy_repo(&repo);
    // Corrupt the payload, then regenerate metadata so the file checksum matches:
    // only rpm's own header/payload digests can catch it now.
    let rpm = repo.join("Packages/hello-2.12-1.noarch.rpm");
    let mut bytes = std::fs::read(&rpm).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0x55;
    std::fs::write(&rpm, bytes).unwrap();
    common::run(
        Command::new("createrepo_c")
            .arg("--quiet")
            .arg("--no-database")
            .arg(&repo),
    );
    let t = Scratch::new(
        &format!("file://{}/", repo.display()),
        "ref: t\nrepos: [sample]\npackages: [hello-data, hello]\nrecommends: false\n",
    );
    let e = err(&resolve(&t, "aarch64", &["--download"]));
    assert!(
        e.contains("hello-2.12-1.noarch") && e.contains("digest check failed"),
        "{e}"
    );
}

#[test]
fn gpgcheck_accepts_signed_packages_and_refuses_unsigned_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let gnupg = tmp.path().join("g");
    std::fs::create_dir(&gnupg).unwrap();
    std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &gnupg)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args);
        c
    };
    common::run(&mut gpg(&[
        "--quick-gen-key",
        "arbor test <test@arbor.invalid>",
        "rsa2048",
        "sign",
        "never",
    ]));
    let key = tmp.path().join("key.asc");
    std::fs::write(&key, common::run(&mut gpg(&["--armor", "--export"]))).unwrap();

    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(repo.join("Packages")).unwrap();
    for f in [
        "filesystem-3.18-6.aarch64.rpm",
        &common::package_file("busybox", "aarch64"),
        "busybox-sh-1.35.0-1.aarch64.rpm",
    ] {
        std::fs::copy(
            common::sample_repo().out.join("Packages").join(f),
            repo.join("Packages").join(f),
        )
        .unwrap();
    }
    common::run(
        Command::new("rpmsign")
            .env("GNUPGHOME", &gnupg)
            .args([
                "--define",
                "__gpg /usr/bin/gpg",
                "--define",
                "_gpg_name arbor test",
                "--addsign",
            ])
            .arg(repo.join("Packages/filesystem-3.18-6.aarch64.rpm")),
    );
    common::run(
        Command::new("createrepo_c")
            .arg("--quiet")
            .arg("--no-database")
            .arg(&repo),
    );
    let url = format!("file://{}/", repo.display());
    let t = Scratch::new(&url, "ref: t\nrepos: [sample]\npackages: [filesystem]\n");
    let repo_file = |pkgs: &str| {
        std::fs::write(
            t.path("t.yaml"),
            format!("ref: t\nrepos: [sample]\npackages: [{pkgs}]\n"),
        )
        .unwrap();
        std::fs::write(
            t.path("t.repo"),
            format!("[sample]\nbaseurl={url}\ngpgcheck=1\ngpgkey=file://{}\n", key.display()),
        )
        .unwrap();
    };
    repo_file("filesystem");
    ok_json(&resolve(&t, "aarch64", &["--json", "--download"]));
    repo_file("busybox");
    let e = err(&resolve(&t, "aarch64", &["--download"]));
    assert!(
        e.contains("package busybox") && e.contains("is not signed by a key in gpgkey"),
        "{e}"
    );
    // Signed, but by a key gpgkey does not hold: the error names the key and rpm's verdict.
    common::run(&mut gpg(&[
        "--quick-gen-key",
        "other signer <other@arbor.invalid>",
        "rsa2048",
        "sign",
        "never",
    ]));
    let other_id = common::run(&mut gpg(&["--list-keys", "--with-colons", "other signer"]))
        .lines()
        .find(|l| l.starts_with("pub:"))
        .and_then(|l| l.split(':').nth(4))
        .unwrap()
        .to_lowercase();
    common::run(
        Command::new("rpmsign")
            .env("GNUPGHOME", &gnupg)
            .args([
                "--define",
                "__gpg /usr/bin/gpg",
                "--define",
                "_gpg_name other signer",
                "--addsign",
            ])
            .arg(repo.join("Packages").join(common::package_file("busybox", "aarch64")))
            .arg(repo.join("Packages/busybox-sh-1.35.0-1.aarch64.rpm")),
    );
    common::run(
        Command::new("createrepo_c")
            .arg("--quiet")
            .arg("--no-database")
            .arg(&repo),
    );
    let e = err(&resolve(&t, "aarch64", &["--download"]));
    assert!(
        e.contains("package busybox")
            && e.contains("is not signed by a key in gpgkey")
            && e.contains(&format!("key ID {}", &other_id[8..]))
            && e.contains("NOKEY"),
        "{e}"
    );
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", &gnupg)
        .args(["--kill", "gpg-agent"])
        .timed_status();
}

#[test]
fn repository_metadata_that_is_not_a_regular_file_is_refused_unread() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    copy_repo(&repo);
    let repomd = repo.join("repodata/repomd.xml");
    std::fs::remove_file(&repomd).unwrap();
    // A FIFO would block a reader forever; /dev/zero would fill memory.
    nix::unistd::mkfifo(&repomd, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let t = Scratch::new(
        &format!("file://{}/", repo.display()),
        "ref: t\nrepos: [sample]\npackages: [busybox]\n",
    );
    let mut child = arbor()
        .args(["compose", "resolve", "--arch", "aarch64", "--cache-dir"])
        .arg(t.path("cache"))
        .arg(t.path("t.yaml"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .timed_spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("arbor hung reading a FIFO as repomd.xml");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let e = err(&child.wait_with_output().unwrap());
    assert!(e.contains("repomd.xml") && e.contains("not a regular file"), "{e}");
}

#[test]
fn quoted_version_queries_resolve_alone_and_among_names() {
    let busybox = common::evr("busybox", "aarch64");
    let t = Scratch::new(
        &sample_url(),
        &format!(
            "ref: t\nrepos: [sample]\nrecommends: false\npackages:\n  - filesystem 'hello-data >= 2.0' setup\n  - \"'busybox = {busybox}'\"\n"
        ),
    );
    let v = ok_json(&resolve(&t, "aarch64", &["--json"]));
    let got = nas(&v);
    for want in ["filesystem.", "hello-data.", "setup.", "busybox."] {
        assert!(got.iter().any(|p| p.starts_with(want)), "{want} missing from {got:?}");
    }
    let t = Scratch::new(
        &sample_url(),
        &format!("ref: t\nrepos: [sample]\npackages:\n  - \"'busybox = 0:{busybox}.no'\"\n"),
    );
    let e = err(&resolve(&t, "aarch64", &[]));
    assert!(e.contains(&format!("busybox = 0:{busybox}.no")), "{e}");
}

/// A loopback URL nothing listens on: a port bound, then released.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/")
}

#[test]
fn every_baseurl_is_tried_in_order_for_metadata_and_packages() {
    let sample = common::sample_repo().out.clone();
    let good = http::Server::start(sample.clone());
    let empty = tempfile::tempdir().unwrap();
    let missing = http::Server::start(empty.path().to_path_buf());
    let treefile = "ref: t\nrepos: [sample]\npackages: [busybox]\n";

    // The first baseurl refuses connections, or answers 404: the next one serves.
    for first in [dead_url(), missing.url.clone()] {
        let t = Scratch::new(&format!("{first} {}", good.url), treefile);
        let v = ok_json(&resolve(&t, "aarch64", &["--json", "--download"]));
        assert!(v["files"].as_array().is_some_and(|f| !f.is_empty()), "{v}");
        let served = good.take();
        assert!(
            served.contains(&"/repodata/repomd.xml".to_string()) && served.iter().any(|p| p.ends_with(".rpm")),
            "{served:?}"
        );
    }
    assert_eq!(missing.take(), ["/repodata/repomd.xml"]);

    // Metadata from the first, which lacks the packages: they come from the second.
    let metadata_only = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(sample.join("repodata"), metadata_only.path().join("repodata")).unwrap();
    let partial = http::Server::start(metadata_only.path().to_path_buf());
    let t = Scratch::new(&format!("{},{}", partial.url, good.url), treefile);
    let v = ok_json(&resolve(&t, "aarch64", &["--json", "--download"]));
    let rpms = v["packages"].as_array().unwrap().len();
    let (first, second) = (partial.take(), good.take());
    assert_eq!(first.iter().filter(|p| p.ends_with(".rpm")).count(), rpms, "{first:?}");
    assert_eq!(
        second.iter().filter(|p| p.ends_with(".rpm")).count(),
        rpms,
        "{second:?}"
    );
    assert!(second.iter().all(|p| !p.starts_with("/repodata/")), "{second:?}");

    // All of them failing: each is named with its reason.
    let dead = dead_url();
    let t = Scratch::new(&format!("{dead} {}", missing.url), treefile);
    let e = err(&resolve(&t, "aarch64", &[]));
    assert!(e.contains("repository sample: all 2 baseurls failed"), "{e}");
    assert!(
        e.contains(&format!("{dead}: fetching {dead}repodata/repomd.xml")) && e.to_lowercase().contains("refused"),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "{}: fetching {}repodata/repomd.xml: HTTP 404",
            missing.url, missing.url
        )),
        "{e}"
    );
}
