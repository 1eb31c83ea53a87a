//! No test names a version that comes from Debian's archive. The sample
//! repository is built from what the archive serves today; a kernel ABI bump
//! or a point release renames and re-versions its packages, so tests read
//! versions from the sample packages (`common::nvra`, `common::kernel_release`).
//!
//! `ARBOR_LINT_ROOT=DIR` checks another checkout's `tests/`, `benches/` and
//! `scripts/` (this is how the check was shown to fail on the old tests).

use crate::common;

use std::path::{Path, PathBuf};

/// Kernel flavours Debian builds: `linux-image-6.1.0-NN-<flavour>`.
const FLAVOURS: &[&str] = &["arm64", "armmp", "amd64", "rpi", "686", "rt", "cloud"];

/// Whether `s` ends in `D.D.D-D` (a Debian kernel ABI before its flavour).
fn ends_in_abi(s: &str) -> bool {
    let Some((version, abi)) = s.rsplit_once('-') else {
        return false;
    };
    let parts: Vec<&str> = version.rsplit('.').take(3).collect();
    !abi.is_empty()
        && abi.bytes().all(|b| b.is_ascii_digit())
        && parts.len() == 3
        && parts[..2]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && parts[2].bytes().last().is_some_and(|b| b.is_ascii_digit())
}

/// What in one line names an archive version: a kernel ABI, a Debian
/// stable-update or binNMU suffix, or a version one of `archive` packages has today.
fn findings_in_line(line: &str, archive: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for flavour in FLAVOURS {
        let needle = format!("-{flavour}");
        for (at, _) in line.match_indices(&needle) {
            if ends_in_abi(&line[..at]) {
                found.push(format!(
                    "kernel ABI ending at \"{}\"",
                    &line[at.saturating_sub(12)..at + needle.len()]
                ));
            }
        }
    }
    let b = line.as_bytes();
    for (at, _) in line.match_indices("+deb") {
        let rest = &line[at + 4..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with('u') {
            found.push(format!(
                "Debian stable update \"{}\"",
                &line[at..(at + 6 + digits).min(line.len())]
            ));
        }
    }
    for (at, _) in line.match_indices("+b") {
        let digits = line[at + 2..].bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && at > 0 && b[at - 1].is_ascii_digit() {
            found.push(format!("Debian binNMU \"{}\"", &line[at..at + 2 + digits]));
        }
    }
    for v in archive {
        if line.contains(v.as_str()) {
            found.push(format!("today's archive version {v}"));
        }
    }
    found
}

/// Every finding under `root`'s `tests/`, `benches/` and `scripts/`, as `path:line: what`.
fn findings(root: &Path, archive: &[String]) -> Vec<String> {
    let mut files = Vec::new();
    for dir in ["tests", "benches", "scripts"] {
        collect(&root.join(dir), &mut files);
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        // This file describes the forms it looks for (tests/it/archive_versions.rs,
        // tests/archive_versions.rs in an older checkout).
        if f.file_name().is_some_and(|n| n == "archive_versions.rs") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            for what in findings_in_line(line, archive) {
                out.push(format!(
                    "{}:{}: {what}",
                    f.strip_prefix(root).unwrap_or(&f).display(),
                    n + 1
                ));
            }
        }
    }
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// `VERSION-RELEASE` of each sample package whose version comes from Debian's archive.
fn archive_versions() -> Vec<String> {
    let manifests = arbor_sample_repo::manifest::load_dir(&common::root().join("samples/packages")).unwrap();
    let mut v: Vec<String> = common::sample_repo()
        .packages
        .iter()
        .filter(|p| {
            manifests
                .iter()
                .map(|l| &l.manifest)
                .any(|m| m.name == p.name && m.version.is_none() && !m.from_deb.is_empty())
        })
        .map(|p| {
            let rest = p.file.strip_prefix(&format!("{}-", p.name)).unwrap();
            rest.strip_suffix(&format!(".{}.rpm", p.arch)).unwrap().to_string()
        })
        .collect();
    v.sort();
    v.dedup();
    assert!(
        v.len() >= 4,
        "the sample repository should have several packages from Debian: {v:?}"
    );
    v
}

#[test]
fn no_test_names_a_version_from_debians_archive() {
    let root = std::env::var_os("ARBOR_LINT_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::root().to_path_buf());
    let found = findings(&root, &archive_versions());
    assert!(
        found.is_empty(),
        "tests name versions from Debian's archive, which moves (read them from the sample \
         repository: common::nvra, common::evr, common::kernel_release):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_each_form() {
    let today = ["5.2.15-2".to_string()];
    let cases: &[(&str, usize)] = &[
        // Split so that this file does not itself name an ABI for greps over tests/.
        (concat!(r#"const KVER: &str = "6.1.0-50"#, r#"-arm64";"#), 1),
        (concat!("ext.contains(\"vmlinuz-6.1.0-57", "-armmp\")"), 1),
        ("\"busybox-1.35.0-4+deb12u1+b1.aarch64.rpm\"", 2),
        ("\"bash-5.2.15-2.aarch64\"", 1),
        ("let kver = common::kernel_release(\"aarch64\");", 0),
        ("\"hello-2.12-1.noarch\", \"busybox-sh-1.35.0-1.aarch64\"", 0),
        ("x86_64-unknown-linux-gnu, a+b1 is not a version", 0),
    ];
    for (line, n) in cases {
        let got = findings_in_line(line, &today);
        assert_eq!(got.len(), *n, "{line}: {got:?}");
    }
}
