//! libsolv through arbor's safe wrapper, against the sample repository's
//! createrepo_c metadata: target-arch selection, weak and rich deps, file
//! provides, obsoletes, excludes, pinning, and plain-words problems.

use crate::common;

use arbor::arch::Arch;
use arbor::solve::{Package, Pool, Request};

fn pool(arch: Arch) -> Pool {
    let mut pool = Pool::new(arch);
    pool.add_rpmmd(
        "arbor-sample",
        &common::metadata("primary"),
        Some(&common::metadata("filelists")),
    )
    .unwrap();
    pool
}

fn solve(arch: Arch, install: &[&str], f: impl FnOnce(&mut Request)) -> anyhow::Result<Vec<Package>> {
    let mut req = Request {
        install: install.iter().map(|s| s.to_string()).collect(),
        recommends: true,
        ..Default::default()
    };
    f(&mut req);
    pool(arch).solve(&req)
}

fn names(pkgs: &[Package]) -> Vec<String> {
    let mut n: Vec<String> = pkgs.iter().map(|p| format!("{}.{}", p.name, p.arch)).collect();
    n.sort();
    n
}

#[test]
fn aarch64_picks_only_aarch64_and_noarch() {
    let pkgs = solve(Arch::Aarch64, &["bash", "busybox", "hello", "kernel"], |_| {}).unwrap();
    assert!(
        pkgs.iter().all(|p| p.arch == "aarch64" || p.arch == "noarch"),
        "{:?}",
        names(&pkgs)
    );
    for want in [
        "bash.aarch64",
        "glibc.aarch64",
        "ncurses-libs.aarch64",
        "filesystem.aarch64",
        "kernel.aarch64",
    ] {
        assert!(
            names(&pkgs).contains(&want.to_string()),
            "{want} missing: {:?}",
            names(&pkgs)
        );
    }
    let x86 = solve(Arch::X86_64, &["bash", "busybox", "hello"], |_| {}).unwrap();
    assert!(names(&x86).contains(&"bash.x86_64".to_string()), "{:?}", names(&x86));
    assert!(x86.iter().all(|p| p.arch == "x86_64" || p.arch == "noarch"));
}

#[test]
fn transaction_is_ordered_dependencies_first() {
    let pkgs = solve(Arch::Aarch64, &["bash"], |_| {}).unwrap();
    let pos = |n: &str| {
        pkgs.iter()
            .position(|p| p.name == n)
            .unwrap_or_else(|| panic!("{n} not in {pkgs:?}"))
    };
    assert!(pos("filesystem") < pos("glibc"), "{:?}", names(&pkgs));
    assert!(pos("glibc") < pos("bash"));
    assert!(pos("ncurses-libs") < pos("bash"));
}

#[test]
fn weak_deps_follow_recommends_flag() {
    let with = names(&solve(Arch::Aarch64, &["hello", "bash"], |_| {}).unwrap());
    assert!(
        with.contains(&"hello-docs.noarch".into()),
        "Recommends installed by default: {with:?}"
    );
    assert!(
        !with.contains(&"hello-extras.noarch".into()),
        "Suggests never installed: {with:?}"
    );
    assert!(
        with.contains(&"hello-bash-completion.noarch".into()),
        "Supplements (hello and bash): {with:?}"
    );
    let without = names(&solve(Arch::Aarch64, &["hello", "bash"], |r| r.recommends = false).unwrap());
    assert!(!without.contains(&"hello-docs.noarch".into()), "{without:?}");
}

#[test]
fn rich_deps_file_provides_obsoletes_and_versions() {
    let armv7 = names(&solve(Arch::Armv7hl, &["shell-profile"], |_| {}).unwrap());
    assert!(
        armv7.contains(&"busybox-sh.armv7hl".into()),
        "(bash or busybox-sh) on armv7hl: {armv7:?}"
    );
    assert!(
        !armv7.contains(&"shell-profile-bash.noarch".into()),
        "(x if bash) without bash: {armv7:?}"
    );
    let with_bash = names(&solve(Arch::Aarch64, &["shell-profile", "bash"], |_| {}).unwrap());
    assert!(with_bash.contains(&"shell-profile-bash.noarch".into()), "{with_bash:?}");
    let tool = names(&solve(Arch::Aarch64, &["tool-user"], |_| {}).unwrap());
    assert!(
        tool.contains(&"tool-helper.noarch".into()),
        "file provide from filelists: {tool:?}"
    );
    let ver = solve(Arch::Aarch64, &["vercmp-user"], |_| {}).unwrap();
    let v = ver.iter().find(|p| p.name == "vercmp").unwrap();
    assert_eq!(v.evr, "1.0^post1-1");
    let newest = solve(Arch::Aarch64, &["vercmp"], |_| {}).unwrap();
    assert_eq!(newest.iter().find(|p| p.name == "vercmp").unwrap().evr, "1.0^post1-1");
    let obs = names(&solve(Arch::Aarch64, &["newtool"], |_| {}).unwrap());
    assert_eq!(obs, ["newtool.noarch"]);
    let both = solve(Arch::Aarch64, &["newtool", "oldtool"], |_| {})
        .unwrap_err()
        .to_string();
    assert!(both.contains("obsoletes") || both.contains("oldtool"), "{both}");
}

#[test]
fn excludes_and_unsatisfiable_sets_explain_themselves() {
    let e = solve(Arch::Aarch64, &["hello", "needs-missing-lib"], |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nothing provides libfoo.so.1()(64bit) needed by needs-missing-lib-1.0-1.noarch"),
        "{e}"
    );
    let e = solve(Arch::Aarch64, &["bash"], |r| r.exclude = vec!["ncurses-libs".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "{} requires libtinfo.so.6()(64bit), but none of the providers",
            common::nvra("bash", "aarch64")
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "{} is excluded (exclude-packages or repo-packages)",
            common::nvra("ncurses-libs", "aarch64")
        )),
        "{e}"
    );
    let e = solve(Arch::Armv7hl, &["bash"], |_| {}).unwrap_err().to_string();
    assert!(
        e.contains("package bash was requested but no package provides it"),
        "{e}"
    );
    let e = solve(Arch::Aarch64, &["hello"], |r| r.exclude = vec!["hello*".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("every match is excluded"), "{e}");
}

#[test]
fn pinned_packages_come_from_their_repo() {
    let pkgs = solve(Arch::Aarch64, &["hello"], |r| {
        r.pinned = vec![("arbor-sample".into(), vec!["hello".into()])]
    })
    .unwrap();
    assert!(pkgs.iter().any(|p| p.name == "hello" && p.repo == "arbor-sample"));
    let e = solve(Arch::Aarch64, &[], |r| {
        r.pinned = vec![("elsewhere".into(), vec!["hello".into()])]
    })
    .unwrap_err();
    assert!(
        e.to_string().contains("no package hello in repository elsewhere"),
        "{e}"
    );
}

#[test]
fn packages_carry_location_checksum_and_sizes() {
    let pkgs = solve(Arch::Aarch64, &["busybox"], |_| {}).unwrap();
    let bb = pkgs.iter().find(|p| p.name == "busybox").unwrap();
    assert_eq!(
        bb.location,
        format!("Packages/{}", common::package_file("busybox", "aarch64"))
    );
    assert_eq!(bb.checksum_type, "sha256");
    let file = common::sample_repo().out.join(&bb.location);
    assert_eq!(bb.checksum, arbor_sample_repo::debs::sha256_file(&file).unwrap());
    assert_eq!(bb.download_size, std::fs::metadata(&file).unwrap().len());
    assert!(bb.install_size > 1_000_000);
    assert_eq!(bb.evr, common::evr("busybox", "aarch64"));
}

#[test]
fn parsed_metadata_cache_gives_the_same_answer_and_survives_garbage() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("sample.solv");
    let solve_with = |cache: &std::path::Path| {
        let mut pool = Pool::new(Arch::Aarch64);
        pool.add_rpmmd_cached(
            "arbor-sample",
            &common::metadata("primary"),
            Some(&common::metadata("filelists")),
            Some(cache),
        )
        .unwrap();
        let req = Request {
            install: vec!["tool-user".into(), "bash".into()],
            recommends: true,
            ..Default::default()
        };
        (pool.len(), names(&pool.solve(&req).unwrap()))
    };
    let parsed = solve_with(&cache);
    assert!(cache.is_file(), "the parsed form is cached");
    let loaded = solve_with(&cache);
    assert_eq!(
        parsed, loaded,
        "cache and XML give the same pool and answer (file provides included)"
    );
    std::fs::write(&cache, b"not a solv file").unwrap();
    assert_eq!(solve_with(&cache), parsed, "a broken cache is ignored");
    assert_ne!(std::fs::read(&cache).unwrap(), b"not a solv file", "and rewritten");
}
