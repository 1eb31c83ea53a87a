//! Package layering on an image's sysroot (as on a device, from the build
//! host: the aarch64 scripts run under qemu-user): `arbor install`,
//! `uninstall`, `override remove|replace|reset`, re-layering on upgrade, the
//! memoized scripts against a layering with memoization off, and the layered
//! image booting in qemu with the layered program running.

use crate::common::{self, Deadline as _, http};
use crate::device::{Mounted, compose, device, sign_and_publish, treefiles};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{arbor, ok_json, run};
use rpm::{FileMode, FileOptions, PackageBuilder};

const EPOCH: u64 = 1_704_067_200;

struct World {
    dir: tempfile::TempDir,
    _server: http::Server,
    /// Treefiles of the three bases (published one after the other by the test).
    tf: [PathBuf; 3],
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        common::sample_repo();
        let dir = common::shared_tempdir();
        let d = dir.path();
        extra_repo(&d.join("extra"));
        // No bash in the base, so no ncurses-libs: its library (libtinfo), layered,
        // fires glibc's ldconfig transaction file trigger.
        let base = |t: String| {
            t.replace("filesystem setup bash glibc", "filesystem setup glibc busybox-sh")
                .replace("  - arbor-sample\n", "  - arbor-sample\n  - layer-extra\n")
        };
        let tf = [
            treefiles(d, "tf1", base),
            // An unrelated change: a data file under /usr/share.
            treefiles(d, "tf2", |t| base(t).replace(LAST, &format!("{LAST}  - wallpaper\n"))),
            // A change under the ldconfig trigger's /usr/lib.
            treefiles(d, "tf3", |t| {
                base(t).replace(LAST, &format!("{LAST}  - wallpaper libnoise\n"))
            }),
        ];
        for t in &tf[1..] {
            assert!(
                std::fs::read_to_string(t).unwrap().contains("  - wallpaper"),
                "{}",
                t.display()
            );
        }
        for t in &tf {
            let repo = t.parent().unwrap().join("sample.repo");
            let text = std::fs::read_to_string(&repo).unwrap();
            std::fs::write(&repo, text + &extra_section(d)).unwrap();
        }
        compose(d, &tf[0], "repo", EPOCH);
        run(arbor().arg("keygen").arg("-o").arg(d.join("key")));
        sign_and_publish(d, "repo", "key", "pub");
        let server = http::Server::start(d.join("pub"));
        run(arbor()
            .args(["image", "--ref", REF, "--board", "qemu-virt-aarch64", "--repo"])
            .arg(d.join("repo"))
            .arg("-o")
            .arg(d.join("v1.img"))
            .args(["--remote", &server.url, "--keys"])
            .arg(d.join("key.pub")));
        World {
            dir,
            _server: server,
            tf,
        }
    })
}

const REF: &str = "arbor/aarch64/sample-minimal";
/// The last line of sample-minimal.yaml's `packages`.
const LAST: &str = "  - sampled sample-init\n";

fn extra_section(d: &Path) -> String {
    format!(
        "\n[layer-extra]\nname=layer-extra\nbaseurl=file://{}/\ngpgcheck=0\n",
        d.join("extra").display()
    )
}

/// Packages the test builds: one with a `%post` and a boot hook, the base's
/// unrelated and /usr/lib changes, and the bad ones.
fn extra_repo(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let build = |name: &str, version: &str, f: &dyn Fn(&mut PackageBuilder)| {
        let mut b = PackageBuilder::new(name, version, "MIT", "noarch", name);
        b.release("1")
            .using_config(rpm::BuildConfig::v4().source_date(1_700_000_000u32));
        f(&mut b);
        b.build()
            .unwrap()
            .write_file(dir.join(format!("{name}-{version}.rpm")))
            .unwrap();
    };
    build("hello-post", "1.0", &|b| {
        b.requires(rpm::Dependency::any("/bin/sh"))
            .post_install_script("echo \"post $1\" > /etc/hello-post.marker")
            .with_file_contents(
                "#!/bin/sh\necho \"layered-ok: $(cat /etc/hello-post.marker) $(/usr/bin/strace -V | head -n 1)\"\n",
                FileOptions::new("/etc/rc.d/S50layered").mode(FileMode::regular(0o755)),
            )
            .unwrap();
    });
    build("wallpaper", "1.0", &|b| {
        b.with_file_contents("blue\n", FileOptions::new("/usr/share/wallpaper/blue.txt"))
            .unwrap();
    });
    build("libnoise", "1.0", &|b| {
        b.with_file_contents("noise\n", FileOptions::new("/usr/lib/noise/README"))
            .unwrap();
    });
    build("clashing", "1.0", &|b| {
        b.with_file_contents(
            "#!/bin/sh\necho clash\n",
            FileOptions::new("/usr/bin/hello").mode(FileMode::regular(0o755)),
        )
        .unwrap();
    });
    build("failing-post", "1.0", &|b| {
        b.requires(rpm::Dependency::any("/bin/sh"))
            .post_install_script("echo layering must stop here; exit 3");
    });
    run(Command::new("createrepo_c").arg("--quiet").arg(dir));
    // A local replacement for the base's hello, outside the repository.
    let local = dir.parent().unwrap().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let mut b = PackageBuilder::new("hello", "9.9", "MIT", "noarch", "hello, replaced");
    b.release("1")
        .using_config(rpm::BuildConfig::v4().source_date(1_700_000_000u32));
    b.with_file_contents(
        "#!/bin/sh\necho replaced hello\n",
        FileOptions::new("/usr/bin/hello").mode(FileMode::regular(0o755)),
    )
    .unwrap();
    b.build().unwrap().write_file(local.join("hello-9.9.rpm")).unwrap();
}

/// A fresh copy of the v1 image, mounted, with the repositories in the
/// default deployment's /etc/yum.repos.d.
fn fresh(name: &str) -> (PathBuf, Mounted) {
    let w = world();
    let img = w.dir.path().join(format!("{name}.img"));
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(w.dir.path().join("v1.img"))
        .arg(&img));
    std::fs::copy(
        w.dir.path().join("v1.img.json"),
        w.dir.path().join(format!("{name}.img.json")),
    )
    .unwrap();
    let m = Mounted::new(&img);
    write_repos(&m);
    (img, m)
}

/// The default deployment's directory.
fn default_dir(m: &Mounted) -> PathBuf {
    let s = ok_json(&device(&["status", "--json"], m, &[]));
    let d = &s["deployments"][0];
    m.top.join(format!(
        "ostree/deploy/{}/deploy/{}.{}",
        d["osname"].as_str().unwrap(),
        d["commit"].as_str().unwrap(),
        d["serial"]
    ))
}

fn write_repos(m: &Mounted) {
    let d = world().dir.path();
    let repos = default_dir(m).join("etc/yum.repos.d");
    std::fs::create_dir_all(&repos).unwrap();
    std::fs::write(
        repos.join("arbor.repo"),
        format!(
            "[arbor-sample]\nname=sample\nbaseurl={}\ngpgcheck=0\n{}",
            common::sample_url(),
            extra_section(d)
        ),
    )
    .unwrap();
}

/// The result of a layering verb, asserting success.
fn layer(m: &Mounted, verb: &[&str], args: &[&str]) -> serde_json::Value {
    let mut extra = args.to_vec();
    extra.push("--json");
    let out = device(verb, m, &extra);
    assert!(
        out.status.success(),
        "{verb:?} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{verb:?} {args:?}: {e}: stdout {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Names of the scripts in `ran` or `reused` (`glibc %transfiletriggerin`, ...).
fn scripts(o: &serde_json::Value, which: &str) -> Vec<String> {
    strings(&o["scripts"][which])
        .iter()
        .map(|s| {
            let (nevra, phase) = s.split_once(' ').unwrap();
            let name = nevra.rsplitn(3, '-').nth(2).unwrap();
            format!("{name} {phase}")
        })
        .collect()
}

fn rpm_qa(dir: &Path) -> Vec<String> {
    let out = run(common::rpm(&dir.join("usr/lib/sysimage/rpm")).args(["-qa", "--qf", "%{NAME}\n"]));
    let mut v: Vec<String> = out.lines().map(String::from).collect();
    v.sort();
    v
}

/// The content checksum (root dirtree and dirmeta) of commit `c` of the sysroot's repository.
fn content(m: &Mounted, c: &str) -> String {
    let out = run(Command::new("ostree")
        .arg(format!("--repo={}", m.top.join("ostree/repo").display()))
        .args(["ls", "-C", "-d", c, "/"]));
    let f: Vec<&str> = out.split_whitespace().collect();
    format!("{}{}", f[4], f[5])
}

/// `arbor upgrade --json`'s result line (after its progress lines), asserting success.
fn upgrade(m: &Mounted) -> serde_json::Value {
    let out = device(&["upgrade", "--json"], m, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().rev().find(|l| l.contains("\"event\":\"result\"")).unwrap()).unwrap()
}

const PACKAGES: [&str; 3] = ["hello-post", "ncurses-libs", "strace"];

#[test]
#[ignore = "needs root: loop devices, mounts, the sysroot's real owners"]
fn layered_packages_run_their_scripts_boot_and_come_back_with_every_upgrade() {
    common::need_root();
    let w = world();
    let d = w.dir.path();
    let (img, m) = fresh("layered");
    let base1 = ok_json(&device(&["status", "--json"], &m, &[]))["deployments"][0]["commit"]
        .as_str()
        .unwrap()
        .to_string();

    // Install: hello-post's %post and glibc's ldconfig trigger (for libtinfo) run.
    let o = layer(&m, &["install"], &PACKAGES);
    assert_eq!(o["result"], "deployed", "{o:#}");
    let b = &o["built"];
    let added: Vec<String> = strings(&b["added"])
        .iter()
        .map(|n| n.rsplitn(3, '-').nth(2).unwrap().to_string())
        .collect();
    for p in PACKAGES {
        assert!(added.contains(&p.to_string()), "{p} not added: {added:?}");
    }
    assert_eq!(
        scripts(b, "ran"),
        ["hello-post %post", "glibc %transfiletriggerin"],
        "{b:#}"
    );
    let layered = o["commit"].as_str().unwrap().to_string();
    let dir = default_dir(&m);
    assert!(dir.ends_with(format!("{layered}.0")));
    assert_eq!(
        std::fs::read_to_string(dir.join("etc/hello-post.marker")).unwrap(),
        "post 1\n"
    );
    assert!(dir.join("usr/bin/strace").is_file());
    let cache = std::fs::read(dir.join("usr/etc/ld.so.cache")).unwrap();
    assert!(
        cache.windows(13).any(|x| x == b"libtinfo.so.6"),
        "ldconfig did not run for the layered library"
    );
    let qa = rpm_qa(&dir);
    for p in ["hello-post", "strace", "ncurses-libs", "glibc", "busybox"] {
        assert!(qa.contains(&p.to_string()), "rpm -qa lacks {p}: {qa:?}");
    }
    let s = ok_json(&device(&["status", "--json"], &m, &[]));
    let top = &s["deployments"][0];
    assert_eq!(top["base_commit"], base1.as_str());
    assert_eq!(strings(&top["layering"]["packages"]), PACKAGES);
    assert_eq!(top["signature"]["valid"], true, "the base's signature counts: {top:#}");

    // Errors: nothing is deployed.
    let count = |m: &Mounted| {
        ok_json(&device(&["status", "--json"], m, &[]))["deployments"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = count(&m);
    for (args, says) in [
        (vec!["no-such-package"], "no-such-package"),
        (
            vec!["clashing"],
            "/usr/bin/hello from clashing-1.0-1.noarch conflicts with the file from base package hello",
        ),
        (
            vec!["failing-post"],
            "failing-post-1.0-1.noarch %post failed with exit status 3",
        ),
    ] {
        let out = device(&["install"], &m, &args);
        let e = common::err(&out);
        assert!(e.contains(says), "{args:?}: {e}");
        assert_eq!(default_dir(&m), dir, "{args:?} deployed something");
    }
    assert_eq!(count(&m), before);

    // The layered image boots and the layered program runs there.
    drop(m);
    let log = d.join("layered.serial.log");
    run(arbor()
        .args(["image", "boot-test"])
        .arg(&img)
        .args(["--expect-commit", &layered, "--log"])
        .arg(&log));
    let console = std::fs::read_to_string(&log).unwrap();
    let line = console
        .lines()
        .find(|l| l.starts_with("layered-ok:"))
        .unwrap_or_else(|| panic!("{console}"));
    assert!(line.starts_with("layered-ok: post 1 strace -- version "), "{line}");
    let m = Mounted::new(&img);

    // A base upgrade that changes an unrelated package: every recorded run is reused.
    let base2 = compose(d, &w.tf[1], "repo", EPOCH + 86_400);
    sign_and_publish(d, "repo", "key", "pub");
    let o = upgrade(&m);
    let b = &o["layered"];
    assert_eq!(b["base"], base2.as_str(), "{o:#}");
    assert!(scripts(b, "ran").is_empty(), "{b:#}");
    assert_eq!(scripts(b, "reused"), ["hello-post %post", "glibc %transfiletriggerin"]);
    let memo2 = b["content"].as_str().unwrap().to_string();
    let dir = default_dir(&m);
    assert!(dir.join("usr/share/wallpaper/blue.txt").is_file() && dir.join("usr/bin/strace").is_file());

    // A base upgrade under /usr/lib: the ldconfig trigger runs again, the %post is reused.
    let base3 = compose(d, &w.tf[2], "repo", EPOCH + 2 * 86_400);
    sign_and_publish(d, "repo", "key", "pub");
    let o = upgrade(&m);
    let b = &o["layered"];
    assert_eq!(b["base"], base3.as_str());
    assert_eq!(scripts(b, "ran"), ["glibc %transfiletriggerin"], "{b:#}");
    assert_eq!(scripts(b, "reused"), ["hello-post %post"]);
    let memo3 = b["content"].as_str().unwrap().to_string();

    // The oracle: the same layering with memoization off, on the same bases.
    let (_img2, m2) = fresh("oracle");
    for (base, memoized) in [(&base2, &memo2), (&base3, &memo3)] {
        run(arbor()
            .args(["deploy", base, "--sysroot"])
            .arg(&m2.top)
            .args(m2.firmware.iter().flat_map(|f| ["--firmware-partition", f.as_str()])));
        write_repos(&m2);
        let o = layer(&m2, &["install"], &[&PACKAGES[..], &["--no-memo"]].concat());
        assert!(scripts(&o["built"], "reused").is_empty());
        assert_eq!(
            o["content"].as_str().unwrap(),
            memoized,
            "memoized and full runs differ on {base}"
        );
        let o = layer(&m2, &["uninstall"], &PACKAGES);
        assert_eq!(o["commit"], base.as_str());
    }
    drop(m2);

    // Uninstall gives back the base tree; only what the rollback deployment uses stays cached.
    let refs = |m: &Mounted, prefix: &str| {
        let out = run(Command::new("ostree")
            .arg(format!("--repo={}", m.top.join("ostree/repo").display()))
            .arg("refs"));
        out.lines().filter(|l| l.starts_with(prefix)).count()
    };
    assert_eq!(refs(&m, "arbor/pkg/"), 3, "one ref per layered package");
    let o = layer(&m, &["uninstall"], &PACKAGES);
    assert_eq!(o["commit"], base3.as_str(), "{o:#}");
    assert_eq!(o["content"].as_str().unwrap(), content(&m, &base3));
    assert!(!default_dir(&m).join("usr/bin/strace").exists());
    assert_eq!(refs(&m, "arbor/pkg/"), 3, "the rollback deployment still layers them");
    layer(&m, &["override", "remove"], &["hello"]);
    layer(&m, &["override", "reset"], &[]);
    assert_eq!(refs(&m, "arbor/pkg/"), 0, "no deployment layers packages any more");

    // Killed after building, before deploying: nothing changed, and a rerun completes.
    let (before, n) = (default_dir(&m), count(&m));
    let out = arbor()
        .env("ARBOR_FAILPOINT", "layer::built")
        .args(["override", "remove", "hello", "--sysroot"])
        .arg(&m.top)
        .args(m.firmware.iter().flat_map(|f| ["--firmware-partition", f.as_str()]))
        .timed_output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(default_dir(&m), before);
    assert_eq!(count(&m), n);

    // Overrides: hide a base package, replace it by a local RPM, reset.
    let o = layer(&m, &["override", "remove"], &["hello"]);
    let dir = default_dir(&m);
    assert!(!dir.join("usr/bin/hello").exists(), "{o:#}");
    assert!(!rpm_qa(&dir).contains(&"hello".to_string()));
    let local = d.join("local/hello-9.9.rpm");
    layer(&m, &["override", "reset"], &[]);
    let o = layer(&m, &["override", "replace"], &[local.to_str().unwrap()]);
    let dir = default_dir(&m);
    assert_eq!(
        std::fs::read_to_string(dir.join("usr/bin/hello")).unwrap(),
        "#!/bin/sh\necho replaced hello\n",
        "{o:#}"
    );
    let v = run(common::rpm(&dir.join("usr/lib/sysimage/rpm")).args(["-q", "--qf", "%{VERSION}", "hello"]));
    assert_eq!(v, "9.9");
    let o = layer(&m, &["override", "reset"], &[]);
    assert_eq!(o["commit"], base3.as_str());
    assert!(
        std::fs::read_to_string(default_dir(&m).join("usr/bin/hello")).unwrap() != "#!/bin/sh\necho replaced hello\n"
    );
    run(Command::new("ostree")
        .args(["fsck", "--repo"])
        .arg(m.top.join("ostree/repo")));
}
