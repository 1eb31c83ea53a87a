//! `make bench`: resolving a treefile against a Fedora-sized repository.
//!
//! Generates a synthetic rpm-md repository (72,000 packages, zstd metadata)
//! into a temporary directory, resolves ~300 packages and their closure with
//! arbor (cold cache, then warm), and runs libsolv's own tools on the same
//! repository and job in the same run: `repo2solv -F` (primary + filelists to
//! .solv) then `testsolv`. The ratios are arbor's times over that reference.

#![allow(clippy::unwrap_used)] // benches fail loudly on purpose

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use arbor::arch::Arch;
use arbor::compose::resolve::{Options, resolve};
use arbor::repo::{Fetcher, fetch_metadata};
use arbor::solve::{Pool, Request};
use sha2::{Digest, Sha256};

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

/// Packages in the synthetic repository (Fedora 40 Everything aarch64 has ~70,000).
const PACKAGES: usize = 72_000;
/// Packages the treefile asks for: the highest-numbered aarch64/noarch ones.
const INSTALL: usize = 300;
/// Fixed so every run generates the same repository.
const SEED: u64 = 0x6172_626f_7221;
/// `SOURCE_DATE_EPOCH`-like fixed time for `<time>` and repomd.
const EPOCH: u64 = 1_704_067_200;

/// What later packages may depend on, for one earlier package.
#[derive(Clone, Copy)]
struct Dep {
    index: usize,
    epoch: u64,
    major: u64,
}

/// The generated repository.
struct Repo {
    dir: PathBuf,
    /// Names the treefile installs.
    install: Vec<String>,
    /// Compressed primary + filelists bytes.
    compressed: u64,
    /// Uncompressed primary + filelists bytes.
    open: u64,
}

/// Writes `repodata/{primary,filelists}.xml.zst` and `repodata/repomd.xml` under `dir`.
fn generate(dir: &Path) -> Repo {
    let mut rng = Rng(SEED);
    let mut primary = String::with_capacity(256 << 20);
    let mut filelists = String::with_capacity(256 << 20);
    let ns = r#"xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm""#;
    writeln!(
        primary,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata {ns} packages=\"{PACKAGES}\">"
    )
    .unwrap();
    writeln!(
        filelists,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<filelists xmlns=\"http://linux.duke.edu/metadata/filelists\" packages=\"{PACKAGES}\">"
    )
    .unwrap();

    // Only aarch64 and noarch packages are depended on, so every dependency is
    // satisfiable for the aarch64 target.
    let mut installable: Vec<Dep> = Vec::new();
    let mut sonames: Vec<(usize, u64)> = Vec::new();
    let mut binaries: Vec<usize> = Vec::new();
    for i in 0..PACKAGES {
        let name = format!("pkg{i:05}");
        let arch = match rng.range(0, 99) {
            0..60 => "aarch64",
            60..70 => "x86_64",
            _ => "noarch",
        };
        let epoch = if rng.chance(0.05) { rng.range(1, 3) } else { 0 };
        let major = rng.range(0, 40);
        let ver = format!("{major}.{}.{}", rng.range(0, 30), rng.range(0, 200));
        let rel = format!("{}.fc40", rng.range(1, 12));
        let evr_attrs = format!(r#"epoch="{epoch}" ver="{ver}" rel="{rel}""#);
        let pkgid: String = (0..4).map(|_| format!("{:016x}", rng.next())).collect();
        let nsonames = if arch == "aarch64" && rng.chance(0.3) {
            rng.range(1, 3)
        } else {
            0
        };
        let has_bin = arch != "noarch" && rng.chance(0.4);
        let has_conf = rng.chance(0.2);
        let size = rng.range(8_000, 8_000_000);

        let files = file_list(&mut rng, &name, arch, &ver, has_bin, has_conf, nsonames);

        write!(
            primary,
            r#"<package type="rpm">
  <name>{name}</name>
  <arch>{arch}</arch>
  <version {evr_attrs}/>
  <checksum type="sha256" pkgid="YES">{pkgid}</checksum>
  <summary>Synthetic package number {i}</summary>
  <description>Package {i} of a generated repository the size of Fedora's, for arbor's resolve benchmark. It depends only on lower-numbered packages.</description>
  <packager>Fedora Project</packager>
  <url>https://example.org/{name}</url>
  <time file="{t}" build="{t}"/>
  <size package="{size}" installed="{installed}" archive="{archive}"/>
  <location href="Packages/p/{name}-{ver}-{rel}.{arch}.rpm"/>
  <format>
    <rpm:license>MIT</rpm:license>
    <rpm:vendor>Fedora Project</rpm:vendor>
    <rpm:group>Unspecified</rpm:group>
    <rpm:buildhost>buildhw-a64-01.fedoraproject.org</rpm:buildhost>
    <rpm:sourcerpm>{name}-{ver}-{rel}.src.rpm</rpm:sourcerpm>
    <rpm:header-range start="4504" end="{hend}"/>
    <rpm:provides>
      <rpm:entry name="{name}" flags="EQ" {evr_attrs}/>
"#,
            t = EPOCH + i as u64,
            installed = size * 5 / 2,
            archive = size * 5 / 2 + 1024,
            hend = 4504 + rng.range(2_000, 60_000),
        )
        .unwrap();
        if arch == "aarch64" {
            writeln!(
                primary,
                r#"      <rpm:entry name="{name}(aarch-64)" flags="EQ" {evr_attrs}/>"#
            )
            .unwrap();
        }
        for n in 0..nsonames {
            writeln!(primary, r#"      <rpm:entry name="lib{name}_{n}.so.1()(64bit)"/>"#).unwrap();
        }
        primary.push_str("    </rpm:provides>\n");

        let mut requires = Vec::new();
        if !installable.is_empty() {
            for _ in 0..rng.range(2, 8) {
                let r = rng.unit();
                let entry = if r < 0.02 {
                    let (a, b) = (rng.core(&installable), rng.core(&installable));
                    format!(r#"name="(pkg{:05} if pkg{:05})""#, a.index, b.index)
                } else if r < 0.03 && !binaries.is_empty() {
                    format!(r#"name="/usr/bin/pkg{:05}""#, rng.core(&binaries))
                } else if r < 0.30 && arch == "aarch64" && !sonames.is_empty() {
                    let (p, n) = rng.core(&sonames);
                    format!(r#"name="libpkg{p:05}_{n}.so.1()(64bit)""#)
                } else if r < 0.55 {
                    let d = rng.core(&installable);
                    let lower = d.major.saturating_sub(rng.range(0, 2));
                    format!(
                        r#"name="pkg{:05}" flags="GE" epoch="{}" ver="{lower}""#,
                        d.index, d.epoch
                    )
                } else {
                    format!(r#"name="pkg{:05}""#, rng.core(&installable).index)
                };
                if !requires.contains(&entry) {
                    requires.push(entry);
                }
            }
        }
        if !requires.is_empty() {
            primary.push_str("    <rpm:requires>\n");
            for r in &requires {
                writeln!(primary, "      <rpm:entry {r}/>").unwrap();
            }
            primary.push_str("    </rpm:requires>\n");
        }
        if rng.chance(0.03) {
            // Retired names, as Fedora's obsoletes mostly are: never in the closure.
            writeln!(
                primary,
                "    <rpm:obsoletes>\n      <rpm:entry name=\"{name}-compat\" flags=\"LT\" {evr_attrs}/>\n    </rpm:obsoletes>"
            )
            .unwrap();
        }
        if rng.chance(0.05) && !installable.is_empty() {
            let d = rng.core(&installable);
            writeln!(
                primary,
                "    <rpm:recommends>\n      <rpm:entry name=\"pkg{:05}\"/>\n    </rpm:recommends>",
                d.index
            )
            .unwrap();
        }
        // createrepo_c's primary file list: paths under /etc/ or with bin/ in them.
        for (is_dir, f) in files
            .iter()
            .filter(|(_, f)| f.starts_with("/etc/") || f.contains("bin/"))
        {
            let ty = if *is_dir { r#" type="dir""# } else { "" };
            writeln!(primary, "    <file{ty}>{f}</file>").unwrap();
        }
        primary.push_str("  </format>\n</package>\n");

        writeln!(
            filelists,
            "<package pkgid=\"{pkgid}\" name=\"{name}\" arch=\"{arch}\">\n  <version {evr_attrs}/>"
        )
        .unwrap();
        for (is_dir, f) in &files {
            let ty = if *is_dir { r#" type="dir""# } else { "" };
            writeln!(filelists, "  <file{ty}>{f}</file>").unwrap();
        }
        filelists.push_str("</package>\n");

        if arch != "x86_64" {
            installable.push(Dep { index: i, epoch, major });
            if has_bin {
                binaries.push(i);
            }
        }
        for n in 0..nsonames {
            sonames.push((i, n));
        }
    }
    primary.push_str("</metadata>\n");
    filelists.push_str("</filelists>\n");

    let repodata = dir.join("repodata");
    std::fs::create_dir_all(&repodata).unwrap();
    let mut repomd = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\">\n",
    );
    writeln!(repomd, "  <revision>{EPOCH}</revision>").unwrap();
    let (mut compressed, mut open) = (0, 0);
    for (kind, text) in [("primary", &primary), ("filelists", &filelists)] {
        let zst = zstd::encode_all(text.as_bytes(), 3).unwrap();
        let sum = hex::encode(Sha256::digest(&zst));
        let href = format!("repodata/{sum}-{kind}.xml.zst");
        std::fs::write(dir.join(&href), &zst).unwrap();
        write!(
            repomd,
            r#"  <data type="{kind}">
    <checksum type="sha256">{sum}</checksum>
    <open-checksum type="sha256">{open_sum}</open-checksum>
    <location href="{href}"/>
    <timestamp>{EPOCH}</timestamp>
    <size>{size}</size>
    <open-size>{open_size}</open-size>
  </data>
"#,
            open_sum = hex::encode(Sha256::digest(text.as_bytes())),
            size = zst.len(),
            open_size = text.len(),
        )
        .unwrap();
        compressed += zst.len() as u64;
        open += text.len() as u64;
    }
    repomd.push_str("</repomd>\n");
    std::fs::write(repodata.join("repomd.xml"), repomd).unwrap();

    let install = installable
        .iter()
        .rev()
        .take(INSTALL)
        .map(|d| format!("pkg{:05}", d.index))
        .collect();
    Repo {
        dir: dir.to_path_buf(),
        install,
        compressed,
        open,
    }
}

/// Languages packages ship translations for: shared directories, as in Fedora.
const LANGS: [&str; 8] = ["de", "es", "fr", "it", "ja", "pt_BR", "ru", "zh_CN"];

/// A package's 5-20 files (`(is_dir, path)`, sorted as rpm stores them).
/// Per-package directories hang off a few hubs with Fedora-like shares
/// (licenses, doc, /usr/share/NAME, site-packages, /usr/lib64/NAME): libsolv
/// finds a directory's child by a linear scan, so the fan-out of these hubs
/// drives its filelists load time.
fn file_list(
    rng: &mut Rng,
    name: &str,
    arch: &str,
    ver: &str,
    has_bin: bool,
    has_conf: bool,
    nsonames: u64,
) -> Vec<(bool, String)> {
    let mut files = Vec::new();
    if rng.chance(0.5) {
        files.push((true, format!("/usr/share/licenses/{name}")));
        files.push((false, format!("/usr/share/licenses/{name}/LICENSE")));
    }
    if rng.chance(0.4) {
        files.push((true, format!("/usr/share/doc/{name}")));
        files.push((false, format!("/usr/share/doc/{name}/NEWS")));
        files.push((false, format!("/usr/share/doc/{name}/README.md")));
    }
    if has_bin {
        files.push((false, format!("/usr/bin/{name}")));
    }
    if has_conf {
        files.push((false, format!("/etc/{name}.conf")));
    }
    for n in 0..nsonames {
        files.push((false, format!("/usr/lib64/lib{name}_{n}.so.1")));
    }
    let r = rng.unit();
    let own = if r < 0.25 {
        Some(format!("/usr/share/{name}"))
    } else if arch == "noarch" && r < 0.6 {
        let site = "/usr/lib/python3.12/site-packages";
        let info = format!("{site}/{name}-{ver}.dist-info");
        files.push((true, info.clone()));
        files.push((false, format!("{info}/METADATA")));
        files.push((false, format!("{info}/RECORD")));
        Some(format!("{site}/{name}"))
    } else if arch == "aarch64" && r < 0.45 {
        Some(format!("/usr/lib64/{name}"))
    } else {
        None
    };
    if let Some(dir) = &own {
        files.push((true, dir.clone()));
    }
    let total = (rng.range(5, 20) as usize).max(files.len());
    for n in 0..total - files.len() {
        let f = match &own {
            Some(dir) => format!("{dir}/file{n:03}.dat"),
            None if n % 2 == 0 => format!("/usr/share/man/man1/{name}-{n}.1.gz"),
            None => format!("/usr/share/locale/{}/LC_MESSAGES/{name}.mo", LANGS[n / 2 % LANGS.len()]),
        };
        files.push((false, f));
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    files
}

/// Runs `cmd` in `dir`, panicking with its stderr when it fails; returns stdout.
fn run(dir: &Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn main() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let t = Instant::now();
    let repo = generate(&tmp.path().join("repo"));
    let gen_secs = t.elapsed().as_secs_f64();

    // arbor, the user's path: treefile + .repo beside it, then resolve.
    let yaml = tmp.path().join("t.yaml");
    let packages: Vec<String> = repo.install.iter().map(|p| format!("  - {p}\n")).collect();
    std::fs::write(
        &yaml,
        format!("ref: bench\nrepos: [synth]\npackages:\n{}", packages.concat()),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("t.repo"),
        format!("[synth]\nbaseurl=file://{}/\ngpgcheck=0\n", repo.dir.display()),
    )
    .unwrap();
    let tf = arbor::treefile::load(&yaml, Arch::Aarch64).expect("loading the treefile");
    let opts = Options {
        cache_dir: tmp.path().join("cache"),
        download: false,
        jobs: 4,
        lockfile: None,
        write_lockfile: None,
    };
    let t = Instant::now();
    let cold = resolve(&tf, &opts).expect("resolving (cold)");
    let cold_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let warm = resolve(&tf, &opts).expect("resolving (warm)");
    let warm_secs = t.elapsed().as_secs_f64();
    assert_eq!(cold.packages, warm.packages, "cold and warm resolves disagree");
    let n = cold.packages.len();

    // The same steps from outside, to see which one dominates.
    let timed = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    let baseurl = format!("file://{}/", repo.dir.display());
    let mut loaded = None;
    let fetch_secs = timed(&mut || {
        loaded = Some(
            fetch_metadata(
                "synth",
                std::slice::from_ref(&baseurl),
                &tmp.path().join("cache2"),
                &Fetcher::new(),
            )
            .unwrap(),
        );
    });
    let loaded = loaded.unwrap();
    let add = |pool: &mut Pool, cache: Option<&Path>| {
        pool.add_rpmmd_cached("synth", &loaded.primary, loaded.filelists.as_deref(), cache)
            .unwrap();
    };
    let parse_secs = timed(&mut || add(&mut Pool::new(Arch::Aarch64), None));
    let solv = tmp.path().join("cache2/synth.solv");
    let parse_write_secs = timed(&mut || add(&mut Pool::new(Arch::Aarch64), Some(&solv)));
    let mut pool = Pool::new(Arch::Aarch64);
    let solv_load_secs = timed(&mut || add(&mut pool, Some(&solv)));
    let req = Request {
        install: repo.install.clone(),
        recommends: true,
        ..Request::default()
    };
    let solve_secs = timed(&mut || assert_eq!(pool.solve(&req).unwrap().len(), n));

    // Reference: libsolv's own tools on the same repository and job.
    let refdir = tmp.path().join("ref");
    std::fs::create_dir_all(&refdir).unwrap();
    let mut testcase = String::from("repo synth 99 solv synth.solv\nsystem aarch64 rpm\n");
    for p in &repo.install {
        writeln!(testcase, "job install name {p}").unwrap();
    }
    std::fs::write(refdir.join("testcase.t"), testcase).unwrap();
    let repo_arg = repo.dir.to_string_lossy().into_owned();
    let t = Instant::now();
    run(&refdir, "repo2solv", &["-F", "-o", "synth.solv", &repo_arg]);
    let repo2solv_secs = t.elapsed().as_secs_f64();
    let transaction = run(&refdir, "testsolv", &["testcase.t"]);
    let ref_secs = t.elapsed().as_secs_f64();
    // testsolv prints "N installed packages:" and then one "  - nevra" line each.
    let mut in_installed = false;
    let mut ref_installs = 0;
    for line in transaction.lines() {
        if line.ends_with("packages:") {
            in_installed = line.ends_with(" installed packages:");
        } else if in_installed && line.starts_with("  - ") {
            ref_installs += 1;
        }
    }

    println!("resolve against a synthetic Fedora-sized repository (aarch64, {INSTALL} packages asked for)");
    println!(
        "  repository:      {PACKAGES} packages, {:.1} MB metadata (primary+filelists .zst; {:.0} MB as XML)",
        repo.compressed as f64 / 1e6,
        repo.open as f64 / 1e6
    );
    println!("  generated in:    {gen_secs:.2} s (not part of the ratio)");
    println!(
        "  arbor cold:      {cold_secs:.2} s, {n} packages resolved, {:.0} packages/s",
        n as f64 / cold_secs
    );
    println!(
        "  arbor warm:      {warm_secs:.2} s, {:.0} packages/s",
        n as f64 / warm_secs
    );
    println!(
        "    breakdown:     fetch_metadata {fetch_secs:.2} s, parse XML {parse_secs:.2} s, \
         write .solv cache {:.2} s, load .solv cache {solv_load_secs:.2} s, solve {solve_secs:.2} s",
        parse_write_secs - parse_secs
    );
    println!(
        "  reference:       {ref_secs:.2} s (repo2solv -F {repo2solv_secs:.2} s + testsolv {:.2} s), {ref_installs} installs",
        ref_secs - repo2solv_secs
    );
    if ref_installs != n {
        println!("  WARNING: arbor resolved {n} packages but testsolv's transaction installs {ref_installs}");
    }
    println!(
        "  ratio cold/ref:  {:.2}   ratio warm/ref: {:.2}   (goal: ratio <= 1.2, warm < 3 s)",
        cold_secs / ref_secs,
        warm_secs / ref_secs
    );
    // Both start from a .solv file here: arbor's cache against repo2solv's output.
    println!(
        "  ratio warm/testsolv alone: {:.2} (both loading a .solv)",
        warm_secs / (ref_secs - repo2solv_secs)
    );
}
