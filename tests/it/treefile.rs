//! Treefiles through the real loader: includes, variables, conditions, key
//! checks, .repo files, and every treefile shipped in `treefiles/`.

use crate::common::Deadline as _;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use arbor::arch::Arch;
use arbor::treefile::{self, Initramfs, Treefile};
use tempfile::TempDir;

use crate::common::peak;

/// A directory of treefiles written by the test.
fn fixture(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn load(dir: &TempDir, name: &str, arch: Arch) -> Treefile {
    treefile::load(&dir.path().join(name), arch).unwrap_or_else(|e| panic!("{name} for {arch}: {e:#}"))
}

/// The whole error chain of a load that must fail.
fn error(dir: &TempDir, name: &str, arch: Arch) -> String {
    match treefile::load(&dir.path().join(name), arch) {
        Ok(tf) => panic!("{name} loaded but should not have: {tf:?}"),
        Err(e) => format!("{e:#}"),
    }
}

fn path_of(dir: &TempDir, name: &str) -> String {
    dir.path().join(name).display().to_string()
}

fn assert_has(err: &str, wants: &[&str]) {
    for want in wants {
        assert!(err.contains(want), "error lacks {want:?}:\n{err}");
    }
}

fn shipped(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("treefiles").join(rel)
}

#[test]
fn unknown_key_names_file_line_and_nearest_key() {
    let dir = fixture(&[
        ("typo.yaml", "ref: t/r\n\npakages:\n  - bash\n"),
        (
            "typo.json",
            "{\n  \"ref\": \"t/r\",\n  \"packages\": [],\n  \"exclude_packages\": [\"x\"]\n}\n",
        ),
        ("far.yaml", "ref: t/r\nfrobnicate-widgets: true\n"),
        ("archtypo.yaml", "ref: t/r\npackages-aarch46: [kernel]\n"),
    ]);
    let yaml = path_of(&dir, "typo.yaml");
    assert_has(
        &error(&dir, "typo.yaml", Arch::Aarch64),
        &[&format!("{yaml}:3: unknown key `pakages`"), "did you mean `packages`?"],
    );
    let json = path_of(&dir, "typo.json");
    assert_has(
        &error(&dir, "typo.json", Arch::Aarch64),
        &[
            &format!("{json}:4: unknown key `exclude_packages`"),
            "did you mean `exclude-packages`?",
        ],
    );
    let far = error(&dir, "far.yaml", Arch::Aarch64);
    assert_has(
        &far,
        &[&format!(
            "{}:2: unknown key `frobnicate-widgets`",
            path_of(&dir, "far.yaml")
        )],
    );
    assert!(!far.contains("did you mean"), "no suggestion for a far key: {far}");
    assert_has(
        &error(&dir, "archtypo.yaml", Arch::Aarch64),
        &[
            "archtypo.yaml:2: unknown key `packages-aarch46`",
            "did you mean `packages-aarch64`?",
        ],
    );
}

#[test]
fn json_treefiles_may_carry_comment_keys_as_in_rpm_ostree_and_yaml_ones_may_not() {
    let dir = fixture(&[
        (
            "c.json",
            "{\n  \"comment-1\": \"rpm-ostree's fixtures comment like this\",\n  \"ref\": \"t/r\",\n  \"packages\": [\"bash\"]\n}\n",
        ),
        ("c.yaml", "ref: t/r\ncomment-1: no\npackages: [bash]\n"),
    ]);
    let tf = treefile::load(&dir.path().join("c.json"), Arch::Aarch64).unwrap();
    assert_eq!(tf.treeref, "t/r");
    assert_eq!(tf.packages, ["bash"]);
    assert_has(
        &error(&dir, "c.yaml", Arch::Aarch64),
        &[&format!("{}:2: unknown key `comment-1`", path_of(&dir, "c.yaml"))],
    );
}

#[test]
fn rpm_ostree_keys_arbor_lacks_are_named_as_such() {
    let keys = [
        "rojig",
        "gpg-key",
        "sysroot-readonly",
        "rpmdb-normalize",
        "preserve-passwd",
        "repovars",
        "modules",
        "ostree-layers",
        "ostree-override-layers",
        "basearch",
        "bootstrap_packages",
        "add-files",
        "ostree-format",
        "runtime-only",
        "kickstart",
    ];
    for key in keys {
        for (name, text) in [
            ("t.yaml", format!("ref: t/r\n{key}: x\n")),
            ("t.json", format!("{{\n  \"ref\": \"t/r\",\n  \"{key}\": \"x\"\n}}")),
        ] {
            let dir = fixture(&[(name, &text)]);
            // The line, as for unknown keys.
            let line = if name.ends_with(".yaml") { 2 } else { 3 };
            let want = format!(
                "{}:{line}: key `{key}` is an rpm-ostree key that arbor does not implement yet",
                path_of(&dir, name)
            );
            assert_eq!(error(&dir, name, Arch::Aarch64), want);
        }
    }
}

/// Without `releasever` in the treefile, `$releasever` in a .repo file is the
/// build host's release (os-release VERSION_ID), as dnf takes it, not an error.
#[test]
fn releasever_in_a_repo_falls_back_to_the_hosts_release() {
    let dir = fixture(&[
        ("t.yaml", "ref: t/${basearch}\nrepos: [r]\npackages: [bash]\n"),
        ("r.repo", "[r]\nbaseurl=https://example.org/$releasever/$basearch/\n"),
    ]);
    let os = std::fs::read_to_string("/etc/os-release").unwrap();
    let host = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .map(|v| v.trim_matches('"').to_string())
        .expect("VERSION_ID in /etc/os-release");
    let tf = load(&dir, "t.yaml", Arch::Aarch64);
    assert_eq!(tf.releasever, None, "the tree's own releasever stays unset");
    assert_eq!(tf.repos[0].baseurl, [format!("https://example.org/{host}/aarch64/")]);
}

/// A treefile given by a relative path names its directory when a repo is missing.
#[test]
fn a_missing_repo_of_a_relative_treefile_names_its_directory() {
    let dir = fixture(&[("t.yaml", "ref: t/r\nrepos: [fedora]\npackages: [bash]\n")]);
    let out = crate::common::arbor()
        .current_dir(dir.path())
        .args(["treefile", "show", "t.yaml", "--arch", "aarch64"])
        .timed_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let want = format!("in any .repo file in {} (defined there: none)", dir.path().display());
    assert!(err.contains(&want), "{want:?} not in {err}");
}

/// `rpmdb: sqlite` is what arbor writes; the other backends are refused with the reason.
#[test]
fn rpmdb_sqlite_is_accepted_and_bdb_refused_with_its_line() {
    let dir = fixture(&[
        ("s.yaml", "ref: t/r\nrpmdb: sqlite\npackages: [bash]\n"),
        ("b.yaml", "ref: t/r\npackages: [bash]\nrpmdb: bdb\n"),
        ("n.json", "{\"ref\": \"t/r\", \"rpmdb\": \"ndb\"}"),
    ]);
    let tf = treefile::load(&dir.path().join("s.yaml"), Arch::Aarch64).unwrap();
    assert_eq!(tf.packages, ["bash"]);
    assert_has(
        &error(&dir, "b.yaml", Arch::Aarch64),
        &[
            &format!("{}:3: rpmdb `bdb`", path_of(&dir, "b.yaml")),
            "only rpm's sqlite",
        ],
    );
    assert_has(&error(&dir, "n.json", Arch::Aarch64), &["rpmdb `ndb`", "sqlite"]);
}

#[test]
fn wrong_types_name_file_line_and_key() {
    let table: &[(&str, &[&str])] = &[
        (
            "ref: t/r\npackages: 5\n",
            &[":2: key `packages`", "invalid type: integer `5`"],
        ),
        (
            "ref: t/r\nrecommends: \"yes\"\n",
            &[":2: key `recommends`", "expected a boolean"],
        ),
        (
            "ref: t/r\nreleasever: [41]\n",
            &[":2: key `releasever`", "found a list"],
        ),
        ("ref: t/r\ninclude: 3\n", &[":2: key `include`", "found a number"]),
        (
            "ref: t/r\nvariables:\n  x: [1]\n",
            &[":2: key `variables`", "found a list"],
        ),
        (
            "ref: t/r\npackages-x86_64: bash\n",
            &[":2: key `packages-x86_64`", "expected a sequence"],
        ),
        (
            "ref: t/r\ninitramfs: mkinitcpio\n",
            &[":2: key `initramfs`", "`arbor`, `dracut`, `none`"],
        ),
        (
            "ref: t/r\nopt-usrlocal: usr\n",
            &[":2: key `opt-usrlocal`", "`var`", "`root`"],
        ),
        (
            "ref: t/r\nremove-from-packages: [[cpio]]\n",
            &[":2: remove-from-packages entry"],
        ),
        (
            "ref: t/r\nvariables:\n  basearch: x\n",
            &[":2: variable `basearch` is reserved"],
        ),
        ("- just\n- a list\n", &["is a list"]),
    ];
    for (text, wants) in table {
        let dir = fixture(&[("t.yaml", text)]);
        let err = error(&dir, "t.yaml", Arch::X86_64);
        assert_has(&err, &[&path_of(&dir, "t.yaml")]);
        assert_has(&err, wants);
    }
}

#[test]
fn boot_location_allows_only_modules() {
    let dir = fixture(&[
        ("new.yaml", "ref: t/r\nboot-location: new\n"),
        ("ok.yaml", "ref: t/r\nboot_location: modules\n"),
    ]);
    assert_has(
        &error(&dir, "new.yaml", Arch::Aarch64),
        &[
            &format!("{}:2", path_of(&dir, "new.yaml")),
            "boot-location `new` is not supported",
            "allowed values: modules",
        ],
    );
    let tf = load(&dir, "ok.yaml", Arch::Aarch64);
    assert!(treefile::print_json(&tf).contains("\"boot-location\": \"modules\""));
}

#[test]
fn include_loop_lists_the_chain() {
    let dir = fixture(&[
        ("a.yaml", "ref: t/r\ninclude: b.yaml\n"),
        ("b.yaml", "include: [sub/c.yaml]\n"),
        ("sub/c.yaml", "include: ../a.yaml\n"),
        ("self.yaml", "ref: t/r\ninclude: self.yaml\n"),
    ]);
    assert_has(
        &error(&dir, "a.yaml", Arch::Aarch64),
        &["include loop: a.yaml -> b.yaml -> sub/c.yaml -> a.yaml"],
    );
    assert_has(
        &error(&dir, "self.yaml", Arch::Aarch64),
        &["include loop: self.yaml -> self.yaml"],
    );
}

#[test]
fn including_a_file_twice_is_an_error() {
    let dir = fixture(&[
        ("top.yaml", "ref: t/r\ninclude: [a.yaml, b.yaml]\n"),
        ("a.yaml", "include: common.yaml\n"),
        ("b.yaml", "include: common.yaml\n"),
        ("common.yaml", "packages: [bash]\n"),
    ]);
    assert_has(
        &error(&dir, "top.yaml", Arch::Aarch64),
        &[
            &format!("{}:1", path_of(&dir, "b.yaml")),
            &format!(
                "{} is already included by {}",
                path_of(&dir, "common.yaml"),
                path_of(&dir, "a.yaml")
            ),
        ],
    );
}

#[test]
fn missing_include_names_includer_and_path() {
    let dir = fixture(&[
        ("top.yaml", "ref: t/r\n\ninclude:\n  - present.yaml\n  - missing.yaml\n"),
        ("present.yaml", "packages: [bash]\n"),
        ("arch.yaml", "ref: t/r\narch-include:\n  x86_64: [gone.yaml]\n"),
    ]);
    assert_has(
        &error(&dir, "top.yaml", Arch::Aarch64),
        &[
            &format!("{}:3", path_of(&dir, "top.yaml")),
            &format!("included file {} does not exist", path_of(&dir, "missing.yaml")),
        ],
    );
    // An arch-include for another arch is never read.
    load(&dir, "arch.yaml", Arch::Aarch64);
    assert_has(
        &error(&dir, "arch.yaml", Arch::X86_64),
        &[&format!("{}:2", path_of(&dir, "arch.yaml")), "gone.yaml does not exist"],
    );
}

#[test]
fn include_depth_is_limited_to_50() {
    // f0 includes f1 … includes fN: 50 levels of includes are allowed, 51 are not.
    let chain = |n: usize| -> TempDir {
        let files: Vec<(String, String)> = (0..=n)
            .map(|i| {
                let mut text = if i == 0 {
                    "ref: t/r\n".to_string()
                } else {
                    String::new()
                };
                if i < n {
                    text.push_str(&format!("include: f{}.yaml\n", i + 1));
                }
                text.push_str(&format!("packages: [p{i}]\n"));
                (format!("f{i}.yaml"), text)
            })
            .collect();
        let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        fixture(&refs)
    };
    let ok = chain(50);
    assert_eq!(load(&ok, "f0.yaml", Arch::Aarch64).packages.len(), 51);
    let deep = chain(51);
    assert_has(
        &error(&deep, "f0.yaml", Arch::Aarch64),
        &[
            &format!("{}:1", path_of(&deep, "f50.yaml")),
            &format!("including {} goes deeper than 50 levels", path_of(&deep, "f51.yaml")),
        ],
    );
}

#[test]
fn unknown_variables_are_named_with_the_known_ones() {
    let dir = fixture(&[
        ("ref.yaml", "variables:\n  edition: iot\nref: os/${edition}/${strem}\n"),
        ("inc.yaml", "ref: t/r\ninclude: parts/${flavour}.yaml\n"),
        ("pkg.yaml", "ref: t/r\ninclude: pkg-part.yaml\n"),
        ("pkg-part.yaml", "packages:\n  - bash ${shell}-completion\n"),
        (
            "cond.yaml",
            "ref: t/r\nvariables: {stream: stable}\nconditional-include:\n  - if: strem == \"stable\"\n    include: x.yaml\n",
        ),
        (
            "bare.yaml",
            "ref: t/r\nconditional-include:\n  - if: [basearch == \"aarch64\", devel]\n    include: x.yaml\n",
        ),
        ("repo.yaml", "ref: t/r\nrepos: [r]\n"),
        (
            "r.repo",
            "[r]\nbaseurl=https://example.org/$releasever/$mirrorsuffix/$basearch/\n",
        ),
    ]);
    assert_has(
        &error(&dir, "ref.yaml", Arch::Aarch64),
        &[
            &path_of(&dir, "ref.yaml"),
            "ref `os/${edition}/${strem}`: unknown variable `${strem}`",
            "known variables: basearch, edition",
        ],
    );
    assert_has(
        &error(&dir, "inc.yaml", Arch::Aarch64),
        &[
            &format!("{}:2", path_of(&dir, "inc.yaml")),
            "unknown variable `${flavour}`",
        ],
    );
    assert_has(
        &error(&dir, "pkg.yaml", Arch::Aarch64),
        &[
            &path_of(&dir, "pkg-part.yaml"),
            "packages `bash ${shell}-completion`",
            "`${shell}`",
        ],
    );
    assert_has(
        &error(&dir, "cond.yaml", Arch::Aarch64),
        &[
            &format!("{}:3", path_of(&dir, "cond.yaml")),
            "`if: strem == \"stable\"`: unknown variable `strem`",
            "known variables: basearch, stream",
        ],
    );
    assert_has(
        &error(&dir, "bare.yaml", Arch::X86_64),
        &[&path_of(&dir, "bare.yaml"), "unknown variable `devel`"],
    );
    assert_has(
        &error(&dir, "repo.yaml", Arch::Aarch64),
        &[
            &format!("{}:2", path_of(&dir, "r.repo")),
            "unknown variable `mirrorsuffix`",
        ],
    );
}

#[test]
fn arch_include_and_packages_arch_follow_the_target() {
    let dir = fixture(&[
        (
            "top.yaml",
            "ref: os/${basearch}\npackages: [bash]\npackages-aarch64: [uboot-tools]\npackages-armhfp: [uboot-images-armv7]\n\
             packages-x86_64: [grub2]\npackages-s390x: [zipl]\n\
             arch-include:\n  aarch64: [a64.yaml, rpi.yaml]\n  armhfp: arm.yaml\n  ppc64le: never-read.yaml\n",
        ),
        ("a64.yaml", "packages: [kernel]\nboards: [rpi4]\n"),
        ("rpi.yaml", "packages: [bcm283x-firmware]\n"),
        ("arm.yaml", "packages: [kernel-lpae]\n"),
        ("bad.yaml", "ref: t/r\narch-include:\n  arm64: x.yaml\n"),
    ]);
    let a = load(&dir, "top.yaml", Arch::Aarch64);
    assert_eq!(a.treeref, "os/aarch64");
    assert_eq!(a.packages, ["bcm283x-firmware", "kernel", "bash", "uboot-tools"]);
    assert_eq!(a.boards, ["rpi4"]);
    let x = load(&dir, "top.yaml", Arch::X86_64);
    assert_eq!(x.treeref, "os/x86_64");
    assert_eq!(x.packages, ["bash", "grub2"]);
    assert!(x.boards.is_empty());
    // `${basearch}` is Fedora's name, `armhfp`; `packages-armhfp` and `armhfp:` apply.
    let arm = load(&dir, "top.yaml", Arch::Armv7hl);
    assert_eq!(arm.treeref, "os/armhfp");
    assert_eq!(arm.packages, ["kernel-lpae", "bash", "uboot-images-armv7"]);
    assert_has(
        &error(&dir, "bad.yaml", Arch::Aarch64),
        &[
            &format!("{}:2", path_of(&dir, "bad.yaml")),
            "`arm64` is not an architecture",
            "aarch64, armhfp",
        ],
    );
}

/// `${basearch}` and `$basearch` are Fedora's names (`armhfp` for armv7hl), so
/// refs and mirror URLs match Fedora's layout; dnf's `$arch` is the rpm arch.
#[test]
fn armv7hl_basearch_is_fedoras_armhfp() {
    let dir = fixture(&[
        (
            "t.yaml",
            "ref: fedora/${releasever}/${basearch}/iot\nreleasever: 41\nrepos: [fedora, local]\npackages: [bash]\n\
             packages-armhfp: [uboot-images-armv7]\npackages-aarch64: [uboot-images-armv8]\n\
             conditional-include:\n  - if: basearch == \"armhfp\"\n    include:\n      packages: [kernel-lpae]\n\
             \x20 - if: basearch == \"armv7hl\"\n    include:\n      packages: [arm-old-name]\n",
        ),
        (
            "f.repo",
            "[fedora]\nname=Fedora $releasever - $basearch\n\
             baseurl=https://dl.fedoraproject.org/pub/fedora-secondary/releases/$releasever/Everything/$basearch/os/\n\
             [local]\nbaseurl=https://example.org/device-repo/$arch/\n",
        ),
    ]);
    let arm = load(&dir, "t.yaml", Arch::Armv7hl);
    assert_eq!(arm.treeref, "fedora/41/armhfp/iot");
    assert_eq!(arm.repos[0].name, "Fedora 41 - armhfp");
    assert_eq!(
        arm.repos[0].baseurl,
        ["https://dl.fedoraproject.org/pub/fedora-secondary/releases/41/Everything/armhfp/os/"]
    );
    assert_eq!(arm.repos[1].baseurl, ["https://example.org/device-repo/armv7hl/"]);
    // `basearch == "armv7hl"` still holds, as `arch-include` accepts both names
    // (later includes' packages come first, as in rpm-ostree).
    assert_eq!(
        arm.packages,
        ["arm-old-name", "kernel-lpae", "bash", "uboot-images-armv7"]
    );
    assert!(treefile::print_json(&arm).contains("\"basearch\": \"armhfp\""));

    let a = load(&dir, "t.yaml", Arch::Aarch64);
    assert_eq!(a.treeref, "fedora/41/aarch64/iot");
    assert_eq!(
        a.repos[0].baseurl,
        ["https://dl.fedoraproject.org/pub/fedora-secondary/releases/41/Everything/aarch64/os/"]
    );
    assert_eq!(a.repos[1].baseurl, ["https://example.org/device-repo/aarch64/"]);
    assert_eq!(a.packages, ["bash", "uboot-images-armv8"]);
    assert!(treefile::print_json(&a).contains("\"basearch\": \"aarch64\""));
}

#[test]
fn conditional_include_evaluates_variables_from_every_level() {
    let dir = fixture(&[
        (
            "top.yaml",
            "ref: t/r\nreleasever: 41\nvariables:\n  stream: stable\n  devel: false\ninclude: base.yaml\n\
             conditional-include:\n  - if: stream == \"stable\"\n    include: stable.yaml\n\
             \x20 - if: stream != \"stable\"\n    include: testing.yaml\n\
             \x20 - if: [devel, basearch == \"aarch64\"]\n    include: devel.yaml\n\
             \x20 - if:\n      - releasever >= 40\n      - basearch == \"aarch64\"\n      - from_base == 7\n    include: [new.yaml]\n",
        ),
        // base.yaml sees the including file's variables, and adds one of its own.
        (
            "base.yaml",
            "variables:\n  stream: overridden-by-top\n  from_base: 7\nconditional-include:\n  - if: stream == 'stable'\n    include: base-stable.yaml\n",
        ),
        ("base-stable.yaml", "packages: [base-stable]\n"),
        ("stable.yaml", "packages: [stable]\n"),
        ("testing.yaml", "packages: [testing]\n"),
        ("devel.yaml", "packages: [devel]\n"),
        ("new.yaml", "packages: [new]\n"),
        (
            "mismatch.yaml",
            "ref: t/r\nreleasever: 41\nconditional-include:\n  - if: releasever == \"41\"\n    include: new.yaml\n",
        ),
    ]);
    let a = load(&dir, "top.yaml", Arch::Aarch64);
    assert_eq!(a.packages, ["new", "stable", "base-stable"]);
    assert_eq!(a.variables["stream"].to_string(), "stable");
    assert_eq!(a.variables["from_base"].to_string(), "7");
    let x = load(&dir, "top.yaml", Arch::X86_64);
    assert_eq!(x.packages, ["stable", "base-stable"]);
    assert_has(
        &error(&dir, "mismatch.yaml", Arch::Aarch64),
        &[
            &path_of(&dir, "mismatch.yaml"),
            "cannot compare `releasever` (a number 41) with a string",
        ],
    );
}

#[test]
fn scalars_override_and_lists_append_like_rpm_ostree() {
    // The example of rpm-ostree's treefile reference for `postprocess`.
    let dir = fixture(&[
        (
            "manifest.yaml",
            "ref: top/ref\nrecommends: false\nvariables: {v: top}\n\
             add-commit-metadata: {k: top, only-top: 1}\n\
             include:\n  - manifests/kernel.yaml\n  - manifests/bootupd.yaml\n\
             packages: [top-pkg, shared]\npostprocess:\n  - echo foo\n",
        ),
        (
            "manifests/kernel.yaml",
            "ref: kernel/ref\ndocumentation: false\nrecommends: true\nvariables: {v: kernel, w: kernel}\n\
             add-commit-metadata: {k: kernel, only-kernel: \"${v}\"}\n\
             packages: [kernel, shared]\npostprocess:\n  - echo bar\nunits: [b.service, a.service]\n",
        ),
        (
            "manifests/bootupd.yaml",
            "documentation: true\nvariables: {w: bootupd}\ntmp-is-dir: true\npackages: [bootupd]\n\
             postprocess:\n  - echo baz\nunits: [c.service, a.service]\n",
        ),
    ]);
    let tf = load(&dir, "manifest.yaml", Arch::X86_64);
    // Scalars: the including file, then the earlier include, then the later one.
    assert_eq!(tf.treeref, "top/ref");
    assert!(!tf.recommends);
    assert!(!tf.documentation, "kernel.yaml (included first) wins over bootupd.yaml");
    assert!(tf.tmp_is_dir);
    assert_eq!(tf.variables["v"].to_string(), "top");
    assert_eq!(tf.variables["w"].to_string(), "kernel");
    assert_eq!(tf.add_commit_metadata["k"], "top");
    assert_eq!(
        tf.add_commit_metadata["only-kernel"], "top",
        "substituted with the final variables"
    );
    assert_eq!(tf.add_commit_metadata["only-top"], 1);
    // Lists: included values first, later includes before earlier ones.
    assert_eq!(tf.postprocess, ["echo baz", "echo bar", "echo foo"]);
    assert_eq!(tf.packages, ["bootupd", "kernel", "shared", "top-pkg"]);
    assert_eq!(
        tf.units,
        ["a.service", "b.service", "c.service"],
        "sorted, without duplicates"
    );
}

#[test]
fn defaults_fill_every_unset_key() {
    let dir = fixture(&[
        ("min.yaml", "ref: t/r\n"),
        ("container.yaml", "ref: t/r\ncontainer: true\n"),
        ("noref.yaml", "packages: [bash]\n"),
        (
            "units.yaml",
            "ref: t/r\nmachineid-compat: false\nunits: [sshd.service]\n",
        ),
    ]);
    let tf = load(&dir, "min.yaml", Arch::Aarch64);
    assert!(tf.recommends && tf.documentation && tf.selinux && tf.machineid_compat);
    assert!(!tf.tmp_is_dir && !tf.readonly_executables && !tf.container && !tf.cliwrap);
    assert_eq!(tf.initramfs, Initramfs::Arbor);
    assert!(tf.packages.is_empty() && tf.repos.is_empty() && tf.boards.is_empty() && tf.releasever.is_none());
    let json = treefile::print_json(&tf);
    for key in [
        "\"opt-usrlocal\": \"var\"",
        "\"boot-location\": \"modules\"",
        "\"exclude-packages\": []",
    ] {
        assert!(json.contains(key), "{key} missing from {json}");
    }
    let c = load(&dir, "container.yaml", Arch::Aarch64);
    assert!(
        c.container && c.tmp_is_dir && !c.selinux,
        "container implies tmp-is-dir and no SELinux"
    );
    assert_has(&error(&dir, "noref.yaml", Arch::Aarch64), &["`ref` is not set"]);
    assert_has(
        &error(&dir, "units.yaml", Arch::Aarch64),
        &["`units` cannot be used with `machineid-compat: false`"],
    );
}

#[test]
fn yaml_and_json_resolve_the_same() {
    let dir = fixture(&[
        (
            "t.yaml",
            "ref: os/${basearch}\nreleasever: 41\nrepos: [r]\npackages: ['bash glibc', \"'podman >= 4.1'\"]\n\
             exclude-packages: [python3, perl]\nremove-from-packages: [[cpio, /usr/share/.*]]\n",
        ),
        (
            "t.json",
            r#"{
  "ref": "os/${basearch}",
  "releasever": "41",
  "repos": ["r"],
  "packages": ["bash glibc", "'podman >= 4.1'"],
  "exclude-packages": ["python3", "perl"],
  "remove-from-packages": [["cpio", "/usr/share/.*"]]
}"#,
        ),
        ("r.repo", "[r]\nbaseurl=https://example.org/$releasever/$basearch/\n"),
    ]);
    let y = load(&dir, "t.yaml", Arch::Aarch64);
    let j = load(&dir, "t.json", Arch::Aarch64);
    assert_eq!(y.packages, ["bash", "glibc", "podman >= 4.1"]);
    assert_eq!(y.exclude_packages, ["perl", "python3"]);
    assert_eq!(y.releasever.as_deref(), Some("41"));
    assert_eq!(treefile::print_json(&y), treefile::print_json(&j));
    let json = treefile::print_json(&y);
    assert!(
        json.contains("\"remove-from-packages\": [\n    [\n      \"cpio\""),
        "{json}"
    );
    assert_eq!(
        json,
        treefile::print_json(&load(&dir, "t.yaml", Arch::Aarch64)),
        "deterministic"
    );
}

#[test]
fn excluded_and_wanted_package_is_an_error() {
    let dir = fixture(&[
        ("t.yaml", "ref: t/r\ninclude: part.yaml\nexclude-packages: [hello]\n"),
        ("part.yaml", "packages: [bash hello]\n"),
    ]);
    assert_has(
        &error(&dir, "t.yaml", Arch::Aarch64),
        &[
            "package `hello` is both in `packages`",
            &path_of(&dir, "part.yaml"),
            &path_of(&dir, "t.yaml"),
        ],
    );
}

#[test]
fn postprocess_script_is_relative_to_its_file() {
    let dir = fixture(&[
        ("t.yaml", "ref: t/r\ninclude: sub/part.yaml\n"),
        ("sub/part.yaml", "postprocess-script: post.sh\n"),
        ("sub/post.sh", "#!/bin/sh\n"),
        ("bad.yaml", "ref: t/r\npostprocess-script: nope.sh\n"),
    ]);
    let tf = load(&dir, "t.yaml", Arch::Aarch64);
    assert_eq!(tf.postprocess_script, Some(dir.path().join("sub/post.sh")));
    assert_has(
        &error(&dir, "bad.yaml", Arch::Aarch64),
        &[
            &format!("{}:2", path_of(&dir, "bad.yaml")),
            "postprocess-script `nope.sh`",
            "is not a file",
        ],
    );
}

#[test]
fn repos_are_found_in_the_repo_files_beside_the_top_level_treefile() {
    let dir = fixture(&[
        (
            "t.yaml",
            "ref: t/r\nreleasever: 41\nvariables: {mirror: example.org}\nrepos: [local, remote, off]\n\
             lockfile-repos: [pinned]\nrepo-packages:\n  - repo: pinned\n    packages: [kernel kernel-core]\n",
        ),
        (
            "local.repo",
            "# local\n[local]\nname=Local\nbaseurl=../shared/repo\ngpgcheck=0\n",
        ),
        (
            "remote.repo",
            "[remote]\nbaseurl=https://${mirror}/$releasever/$basearch/\n  https://backup.${mirror}/${releasever}/\n\
             gpgkey=file:///k-$basearch\n[off]\nenabled=0\nmirrorlist=https://m/$basearch\n\
             [pinned]\nmetalink=https://m/metalink?arch=$basearch\n",
        ),
        ("notfound.yaml", "ref: t/r\nrepos: [local, nosuch]\n"),
        (
            "badpin.yaml",
            "ref: t/r\nrepos: [local]\nrepo-packages:\n  - repo: off\n    packages: [x]\n",
        ),
    ]);
    let tf = load(&dir, "t.yaml", Arch::Aarch64);
    let ids: Vec<&str> = tf.repos.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["local", "remote", "off"]);
    let shared = dir.path().parent().unwrap().join("shared/repo");
    assert_eq!(tf.repos[0].baseurl, [format!("file://{}/", shared.display())]);
    assert!(!tf.repos[0].gpgcheck && tf.repos[0].enabled);
    assert_eq!(tf.repos[0].name, "Local");
    assert_eq!(tf.repos[0].file, dir.path().join("local.repo"));
    assert_eq!(
        tf.repos[1].baseurl,
        ["https://example.org/41/aarch64/", "https://backup.example.org/41/"]
    );
    assert!(tf.repos[1].gpgcheck, "gpgcheck defaults to on");
    assert_eq!(tf.repos[1].gpgkey, ["file:///k-aarch64"]);
    assert!(!tf.repos[2].enabled && tf.repos[2].baseurl.is_empty());
    assert_eq!(tf.repos[2].mirrorlist.as_deref(), Some("https://m/aarch64"));
    assert_eq!(
        tf.lockfile_repos[0].metalink.as_deref(),
        Some("https://m/metalink?arch=aarch64")
    );
    assert_eq!(tf.repo_packages[0].repo, "pinned");
    assert_eq!(tf.repo_packages[0].packages, ["kernel", "kernel-core"]);

    assert_has(
        &error(&dir, "notfound.yaml", Arch::Aarch64),
        &[
            "repo `nosuch`",
            &path_of(&dir, "notfound.yaml"),
            &format!("is not defined in any .repo file in {}", dir.path().display()),
            "defined there: local, off, pinned, remote",
        ],
    );
    assert_has(
        &error(&dir, "badpin.yaml", Arch::Aarch64),
        &["repo-packages names repo `off`, which is in neither `repos` nor `lockfile-repos`"],
    );
}

#[test]
fn a_repo_id_in_two_files_is_an_error() {
    let dir = fixture(&[
        ("t.yaml", "ref: t/r\nrepos: [a]\n"),
        ("one.repo", "[a]\nbaseurl=https://one/\n"),
        ("two.repo", "[b]\nbaseurl=https://two/\n[a]\nbaseurl=https://two/a/\n"),
    ]);
    assert_has(
        &error(&dir, "t.yaml", Arch::Aarch64),
        &[&format!(
            "repo id `a` is defined in both {} and {}",
            path_of(&dir, "one.repo"),
            path_of(&dir, "two.repo")
        )],
    );
}

#[test]
fn noarch_is_not_a_target() {
    let dir = fixture(&[("t.yaml", "ref: t/r\n")]);
    assert_has(
        &error(&dir, "t.yaml", Arch::Noarch),
        &["noarch is not a target architecture"],
    );
}

/// Every file shipped in treefiles/, so a new one cannot slip in without a test loading it.
#[test]
fn shipped_treefiles_are_all_covered() {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut found = BTreeSet::new();
    walk(&shipped(""), &shipped(""), &mut found);
    let covered: BTreeSet<String> = [
        "README.md",
        "sample.repo",
        "sample-minimal.yaml",
        "sample-aarch64.yaml",
        "sample-common.yaml",
        "sample-armv7.yaml",
        "sample-device.yaml",
        "fedora-iot/fedora.repo",
        "fedora-iot/fedora-iot-rpi4.yaml",
        "fedora-iot/fedora-iot-base.yaml",
        "fedora-iot/fedora-iot-aarch64.yaml",
        "fedora-iot/iot-packages/common.yaml",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(found, covered, "add a test for new files in treefiles/");
}

#[test]
fn shipped_sample_minimal_resolves_per_arch() {
    let path = shipped("sample-minimal.yaml");
    let a = treefile::load(&path, Arch::Aarch64).unwrap();
    assert_eq!(a.treeref, "arbor/aarch64/sample-minimal");
    assert_eq!(a.releasever.as_deref(), Some("1"));
    assert_eq!(a.mutate_os_release.as_deref(), Some("1"));
    assert_eq!(a.automatic_version_prefix.as_deref(), Some("1"));
    for p in [
        "filesystem",
        "setup",
        "bash",
        "glibc",
        "busybox",
        "hello",
        "shell-profile",
        "kernel",
        "uboot-images-armv8",
    ] {
        assert!(a.packages.iter().any(|x| x == p), "{p} missing from {:?}", a.packages);
    }
    assert_eq!(a.exclude_packages, ["hello-extras"]);
    assert!(a.recommends);
    assert_eq!(
        a.boards,
        ["qemu-virt-aarch64", "qemu-virt-aarch64-bootcount", "rpi3", "rpi4"]
    );
    assert_eq!(
        a.add_commit_metadata.get("arbor.edition"),
        Some(&serde_json::json!("minimal")),
        "from sample-common.yaml"
    );
    assert_eq!(a.etc_group_members, ["wheel"]);
    assert_eq!(a.variables["edition"].to_string(), "minimal");
    assert_eq!(a.repos.len(), 1);
    let repo = &a.repos[0];
    let sample_repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sample-repo");
    assert_eq!(repo.id, "arbor-sample");
    assert_eq!(repo.baseurl, [format!("file://{}/", sample_repo.display())]);
    assert!(!repo.gpgcheck && repo.enabled);

    let x = treefile::load(&path, Arch::X86_64).unwrap();
    assert_eq!(x.treeref, "arbor/x86_64/sample-minimal");
    assert!(
        !x.packages.iter().any(|p| p == "kernel" || p.starts_with("uboot")),
        "no kernel/u-boot for x86_64: {:?}",
        x.packages
    );
    assert!(x.boards.is_empty());
    assert_eq!(x.etc_group_members, ["wheel"]);
}

#[test]
fn shipped_fedora_iot_rpi4_structure_loads_offline() {
    let path = shipped("fedora-iot/fedora-iot-rpi4.yaml");
    let a = treefile::load(&path, Arch::Aarch64).unwrap();
    assert_eq!(a.treeref, "fedora/41/aarch64/iot");
    assert_eq!(a.releasever.as_deref(), Some("41"));
    assert_eq!(a.automatic_version_prefix.as_deref(), Some("41.<date:%Y%m%d>"));
    let ids: Vec<&str> = a.repos.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["fedora", "updates"]);
    for repo in &a.repos {
        assert!(repo.gpgcheck && repo.enabled, "{repo:?}");
        assert_eq!(repo.baseurl.len(), 1);
        assert!(repo.baseurl[0].starts_with("https://dl.fedoraproject.org/pub/fedora/linux/"));
        assert!(repo.baseurl[0].contains("/41/Everything/aarch64/"), "{repo:?}");
        assert_eq!(repo.gpgkey, ["file:///etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-41-aarch64"]);
        assert_eq!(repo.file, shipped("fedora-iot/fedora.repo"));
    }
    for p in ["kernel", "uboot-images-armv8", "bcm283x-firmware", "bcm283x-overlays"] {
        assert!(a.packages.iter().any(|x| x == p), "aarch64 package {p} missing");
    }
    for p in [
        "NetworkManager",
        "chrony",
        "greenboot",
        "podman",
        "openssh-server",
        "fedora-release-iot",
        "ostree",
    ] {
        assert!(a.packages.iter().any(|x| x == p), "base package {p} missing");
    }
    assert!(
        !a.packages.iter().any(|p| p == "rpm-ostree"),
        "arbor replaces rpm-ostree"
    );
    assert_eq!(a.boards, ["rpi4"]);
    assert_eq!(a.initramfs, Initramfs::Dracut);
    assert!(!a.recommends && a.tmp_is_dir && a.selinux);
    assert!(a.units.iter().any(|u| u == "sshd.service"));
    assert_eq!(a.postprocess.len(), 1);
    assert!(a.postprocess[0].contains("ostree.fedoraproject.org/iot"));

    let x = treefile::load(&path, Arch::X86_64).unwrap();
    assert_eq!(x.treeref, "fedora/41/x86_64/iot");
    assert!(x.repos[0].baseurl[0].contains("/41/Everything/x86_64/os/"));
    for p in ["kernel", "uboot-images-armv8", "bcm283x-firmware"] {
        assert!(!x.packages.iter().any(|x| x == p), "{p} is aarch64-only");
    }
    assert!(x.packages.iter().any(|p| p == "podman"));
    assert!(x.boards.is_empty());
}

#[test]
fn shipped_sample_armv7_names_its_board() {
    let t = treefile::load(&shipped("sample-armv7.yaml"), Arch::Armv7hl).unwrap();
    assert_eq!(t.treeref, "arbor/armhfp/sample-armv7");
    assert_eq!(t.boards, ["qemu-virt-armv7"]);
    assert!(t.packages.iter().any(|p| p == "kernel"), "{:?}", t.packages);
    // Every board it names exists.
    for b in &t.boards {
        arbor::board::find(b).unwrap();
    }
}

#[test]
fn shipped_sample_device_adds_arbor_from_the_device_repository_per_arch() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (arch, boards) in [
        (
            Arch::Aarch64,
            &["qemu-virt-aarch64", "qemu-virt-aarch64-bootcount", "rpi3", "rpi4"][..],
        ),
        (Arch::Armv7hl, &["qemu-virt-armv7"][..]),
    ] {
        let t = treefile::load(&shipped("sample-device.yaml"), arch).unwrap();
        assert_eq!(t.treeref, format!("arbor/{}/sample-device", arch.basearch()));
        for p in [
            "arbor",
            "glibc",
            "busybox",
            "sample-init",
            "sample-device-init",
            "kernel",
        ] {
            assert!(
                t.packages.iter().any(|x| x == p),
                "{arch}: {p} missing from {:?}",
                t.packages
            );
        }
        assert_eq!(t.boards, boards, "{arch}");
        let ids: Vec<&str> = t.repos.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["arbor-sample", "arbor-device"], "{arch}");
        // dnf's $arch (the rpm arch) picks the arch's directory of `make device-repo`'s output.
        let device = root.join(format!("target/device-repo/{arch}"));
        assert_eq!(t.repos[1].baseurl, [format!("file://{}/", device.display())], "{arch}");
    }
}

/// `arbor treefile show PATH` watched: peak memory, capped output, and a
/// kill-timeout (loading a treefile takes milliseconds: two minutes is a hang).
fn show_watched(path: &Path) -> peak::Watched {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_arbor"));
    c.env("ARBOR_NO_PROGRESS", "1").args(["treefile", "show"]).arg(path);
    peak::watch(&mut c, std::time::Duration::from_secs(120))
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

#[test]
fn treefile_inputs_are_checked_before_they_are_read() {
    let dir = fixture(&[
        ("dev-zero.yaml", "ref: t/r\ninclude: /dev/zero\n"),
        ("zero-link.yaml", "ref: t/r\ninclude: zero.yaml\n"),
        ("shadow.yaml", "ref: t/r\ninclude: /etc/shadow\n"),
        ("fifo-conf.yaml", "ref: t/r\ninclude: x.conf\n"),
        ("fifo-include.yaml", "ref: t/r\ninclude: x.yaml\n"),
        ("big-include.yaml", "ref: t/r\ninclude: big.yaml\n"),
        ("repos/t.yaml", "ref: t/r\nrepos: [r]\n"),
        ("repos/a.repo", "[r]\nbaseurl=file:///nowhere\n"),
    ]);
    let p = |n: &str| dir.path().join(n);
    std::os::unix::fs::symlink("/dev/zero", p("zero.yaml")).unwrap();
    mkfifo(&p("x.yaml"));
    mkfifo(&p("x.conf"));
    mkfifo(&p("repos/b.repo"));
    // Sparse: 8 GiB that cost nothing to make.
    std::fs::File::create(p("big.yaml")).unwrap().set_len(8 << 30).unwrap();
    let cases: [(&str, &[&str]); 8] = [
        (
            "dev-zero.yaml",
            &["include `/dev/zero`", "must end in .yaml, .yml or .json"],
        ),
        ("zero-link.yaml", &["zero.yaml is not a regular file"]),
        (
            "shadow.yaml",
            &["include `/etc/shadow`", "must end in .yaml, .yml or .json"],
        ),
        (
            "fifo-conf.yaml",
            &["include `x.conf`", "must end in .yaml, .yml or .json"],
        ),
        ("x.yaml", &["x.yaml is not a regular file"]),
        ("fifo-include.yaml", &["x.yaml is not a regular file"]),
        (
            "big-include.yaml",
            &["big.yaml is 8589934592 bytes; refusing more than"],
        ),
        ("repos/t.yaml", &["b.repo is not a regular file"]),
    ];
    for (name, wants) in cases {
        let w = show_watched(&p(name));
        w.check_peak(&format!("treefile show {name}"));
        assert_eq!(w.code, Some(1), "{name}: must be refused:\n{}", w.stderr);
        for want in wants {
            assert!(w.stderr.contains(want), "{name}: want {want:?} in:\n{}", w.stderr);
        }
    }
}

#[test]
fn deeply_nested_treefiles_are_refused_before_parsing() {
    let deep = "[".repeat(100_000);
    let dir = fixture(&[
        ("deep.yaml", &format!("ref: t/r\npackages: {deep}\n")),
        ("deep.json", &format!("{{\"ref\": \"t/r\", \"packages\": {deep}}}\n")),
        ("deep-map.yaml", &format!("ref: t/r\nx: {}\n", "{a: ".repeat(100_000))),
    ]);
    for (name, want) in [
        ("deep.yaml", "deep.yaml: brackets nest deeper than 64 levels at line 2"),
        ("deep.json", "deep.json: brackets nest deeper than 64 levels at line 1"),
        (
            "deep-map.yaml",
            "deep-map.yaml: brackets nest deeper than 64 levels at line 2",
        ),
    ] {
        let w = show_watched(&dir.path().join(name));
        w.check_peak(&format!("treefile show {name}"));
        assert_eq!(w.code, Some(1), "{name}: must be refused:\n{}", w.stderr);
        assert!(w.stderr.contains(want), "{name}: want {want:?} in:\n{}", w.stderr);
    }
}

#[test]
fn conditional_include_may_be_an_inline_map_as_in_rpm_ostree() {
    let dir = fixture(&[
        (
            "t.yaml",
            "ref: t/r\npackages: [bash]\nvariables: {stream: stable}\nconditional-include:\n  - if: basearch == \"aarch64\"\n    include:\n      packages: [uboot-tools]\n      include: more.yaml\n  - if: stream == \"devel\"\n    include:\n      packages: [gdb]\n",
        ),
        ("more.yaml", "packages: [strace]\n"),
        (
            "bad.yaml",
            "ref: t/r\nconditional-include:\n  - if: basearch == \"aarch64\"\n    include:\n      pakages: [x]\n",
        ),
    ]);
    let arm = load(&dir, "t.yaml", Arch::Aarch64);
    for p in ["bash", "uboot-tools", "strace"] {
        assert!(arm.packages.iter().any(|x| x == p), "{p}: {:?}", arm.packages);
    }
    assert!(!arm.packages.iter().any(|x| x == "gdb"), "{:?}", arm.packages);
    let x86 = load(&dir, "t.yaml", Arch::X86_64);
    assert_eq!(x86.packages, ["bash"]);
    assert_has(
        &error(&dir, "bad.yaml", Arch::Aarch64),
        &["inline include", "unknown key `pakages`", "did you mean `packages`?"],
    );
}
