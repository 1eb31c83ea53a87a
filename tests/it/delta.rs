//! `arbor delta` against the real ostree CLI: deltas between two composes and
//! from scratch, listed, shown and applied offline into a fresh repository.

use crate::common::{self, Deadline as _};

use common::{Scratch, arbor, ok_json, ostree, run, sample_url};

const V1: &str =
    "ref: test/small\nrepos: [sample]\npackages: [filesystem, setup, bash, busybox, hello]\nrecommends: false\n";

fn compose(t: &Scratch) -> serde_json::Value {
    ok_json(&t.compose_tree("repo", &["--no-scripts"], &[]))
}

#[test]
fn deltas_from_the_parent_and_from_scratch_apply_with_ostree() {
    let t = Scratch::new(&sample_url(), V1);
    let first = compose(&t);
    std::fs::write(t.path("t.yaml"), V1.replace("hello]", "hello, strace]")).unwrap();
    let second = compose(&t);
    let (a, b) = (first["commit"].as_str().unwrap(), second["commit"].as_str().unwrap());
    assert_ne!(a, b);
    assert_eq!(first["version"].as_str().unwrap().rsplit('.').next(), Some("0"));
    assert_eq!(
        second["version"].as_str().unwrap().rsplit('.').next(),
        Some("1"),
        "versions increment"
    );

    let repo = t.path("repo");
    let out = run(arbor()
        .args(["delta", "--json", "--repo"])
        .arg(&repo)
        .args(["test/small", "--from", "1"]));
    let pairs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pairs.as_array().unwrap().len(), 2, "{pairs}");
    let list = ostree(&repo, &["static-delta", "list"]);
    assert!(list.lines().any(|l| l.trim() == format!("{a}-{b}")), "{list}");
    assert!(list.lines().any(|l| l.trim() == b), "from-scratch delta listed: {list}");
    let show = ostree(&repo, &["static-delta", "show", &format!("{a}-{b}")]);
    assert!(
        show.contains(&format!("From: {a}")) && show.contains(&format!("To: {b}")),
        "{show}"
    );
    assert!(repo.join("summary").is_file(), "the summary is regenerated");

    // A device that has the first commit applies the delta offline and gets the second.
    let fresh = t.path("fresh");
    ostree(&fresh, &["init", "--mode=bare-user"]);
    ostree(&fresh, &["pull-local", repo.to_str().unwrap(), a]);
    let delta_dir = std::fs::read_dir(repo.join("deltas"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        // Delta directories are named in modified base64; only from-to deltas contain '-'.
        .find(|p| p.join("superblock").is_file() && p.file_name().unwrap().to_string_lossy().contains('-'))
        .unwrap();
    ostree(&fresh, &["static-delta", "apply-offline", delta_dir.to_str().unwrap()]);
    ostree(&fresh, &["fsck"]);
    assert!(ostree(&fresh, &["ls", b, "/usr/bin/strace"]).contains("/usr/bin/strace"));
}

#[test]
fn a_bad_ref_or_commit_is_named() {
    let t = Scratch::new(&sample_url(), V1);
    compose(&t);
    let out = arbor()
        .args(["delta", "--repo"])
        .arg(t.path("repo"))
        .args(["test/nope"])
        .timed_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("test/nope"));
    let out = arbor()
        .args(["delta", "--repo"])
        .arg(t.path("repo"))
        .args(["test/small", "--from", "deadbeef"])
        .timed_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("deadbeef"));
    // A well-formed checksum of a commit the repository lacks: named before any delta work.
    let missing = "ab".repeat(32);
    let out = arbor()
        .args(["delta", "--repo"])
        .arg(t.path("repo"))
        .args(["test/small", "--from", &missing])
        .timed_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&missing) && err.contains("no such commit"), "{err}");
    assert!(!t.path("repo/deltas").exists(), "nothing generated");
}

#[test]
fn signed_superblocks_are_recognised_by_ostree_and_tampering_is_refused() {
    let t = Scratch::new(&sample_url(), V1);
    let first = compose(&t);
    std::fs::write(t.path("t.yaml"), V1.replace("hello]", "hello, strace]")).unwrap();
    let second = compose(&t);
    let (a, b) = (first["commit"].as_str().unwrap(), second["commit"].as_str().unwrap());
    let repo = t.path("repo");
    let key = t.path("key");
    run(arbor().args(["keygen", "-o"]).arg(&key));
    let delta = |extra: &[&str]| {
        arbor()
            .args(["delta", "--repo"])
            .arg(&repo)
            .args(["test/small", "--from", "1"])
            .args(extra)
            .timed_output()
            .unwrap()
    };
    let out = delta(&["--sign-key", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let show = ostree(&repo, &["static-delta", "show", &format!("{a}-{b}")]);
    assert!(
        show.contains("Signed: yes"),
        "ostree reads our signed superblock: {show}"
    );
    let pubkey = format!("{}.pub", key.display());
    let good = delta(&["--verify", &pubkey]);
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    assert_eq!(
        String::from_utf8_lossy(&good.stdout).matches("good signature").count(),
        2
    );

    // Still applies offline with ostree's own code.
    let fresh = t.path("fresh");
    ostree(&fresh, &["init", "--mode=bare-user"]);
    ostree(&fresh, &["pull-local", repo.to_str().unwrap(), a]);
    let sb = arbor::ostree::publish::delta::superblock_path(
        &arbor::ostree::Repo::open(&repo).unwrap(),
        &arbor::ostree::publish::delta::Pair {
            from: Some(a.into()),
            to: b.into(),
        },
    )
    .unwrap();
    ostree(
        &fresh,
        &["static-delta", "apply-offline", sb.parent().unwrap().to_str().unwrap()],
    );
    ostree(&fresh, &["fsck"]);

    // Another key, then a flipped byte inside the signed superblock: refused, naming the file.
    let other = t.path("other");
    run(arbor().args(["keygen", "-o"]).arg(&other));
    let e = delta(&["--verify", &format!("{}.pub", other.display())]);
    assert_eq!(e.status.code(), Some(1));
    let mut bytes = std::fs::read(&sb).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&sb, bytes).unwrap();
    let e = delta(&["--verify", &pubkey]);
    assert_eq!(e.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(msg.contains(&*sb.to_string_lossy()), "{msg}");
}
