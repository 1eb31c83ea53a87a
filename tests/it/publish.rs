//! `arbor publish` against the real ostree CLI: the published directory is a
//! valid archive repository that `ostree pull` over file:// and `pull-local`
//! accept, with deltas, a summary and a JSON index, and no package cache refs;
//! a from-scratch delta only when asked for.

use crate::common::{self, Deadline as _, http};

use common::{Scratch, arbor, ok_json, ostree, run, sample_url};
use std::path::{Path, PathBuf};

const V1: &str =
    "ref: test/small\nrepos: [sample]\npackages: [filesystem, setup, bash, busybox, hello]\nrecommends: false\n";

#[test]
fn published_repositories_pull_with_ostree_and_carry_an_index() {
    let t = Scratch::new(&sample_url(), V1);
    let repo = t.path("repo");
    let compose = || ok_json(&t.compose_tree("repo", &["--no-scripts"], &[]));
    let first = compose();
    std::fs::write(t.path("t.yaml"), V1.replace("hello]", "hello, strace]")).unwrap();
    let second = compose();
    let (a, b) = (first["commit"].as_str().unwrap(), second["commit"].as_str().unwrap());

    let public = t.path("public");
    let out = run(arbor()
        .args(["publish", "--json", "--from-scratch", "--repo"])
        .arg(&repo)
        .arg("--to")
        .arg(&public));
    let index: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(index["refs"]["test/small"]["commit"], b);
    let deltas = index["refs"]["test/small"]["deltas"].as_array().unwrap();
    assert!(
        deltas.iter().any(|d| d["from"] == a && d["size"].as_u64().unwrap() > 0),
        "{deltas:?}"
    );
    assert!(
        deltas
            .iter()
            .any(|d| d["from"].is_null() && d["size"].as_u64().unwrap() > 0),
        "{deltas:?}"
    );
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(public.join("arbor-index.json")).unwrap()).unwrap();
    assert_eq!(on_disk, index);

    ostree(&public, &["fsck"]);
    assert_eq!(ostree(&public, &["config", "get", "core.mode"]).trim(), "archive-z2");
    assert_eq!(
        ostree(&public, &["refs"]).trim(),
        "test/small",
        "no package cache refs are published"
    );
    assert!(ostree(&public, &["static-delta", "list"]).contains(&format!("{a}-{b}")));

    let client = t.path("client");
    ostree(&client, &["init", "--mode=bare-user"]);
    ostree(
        &client,
        &[
            "remote",
            "add",
            "--no-gpg-verify",
            "origin",
            &format!("file://{}", public.display()),
        ],
    );
    ostree(&client, &["pull", "origin", "test/small"]);
    ostree(&client, &["fsck"]);
    assert_eq!(ostree(&client, &["rev-parse", "origin:test/small"]).trim(), b);

    let local = t.path("local");
    ostree(&local, &["init", "--mode=bare-user"]);
    ostree(&local, &["pull-local", public.to_str().unwrap(), "test/small"]);
    ostree(&local, &["fsck"]);
}

#[test]
fn without_from_scratch_only_deltas_between_versions_are_generated() {
    let t = Scratch::new(&sample_url(), V1);
    let repo = t.path("repo");
    let public = t.path("public");
    let publish = || {
        run(arbor()
            .args(["publish", "--json", "--repo"])
            .arg(&repo)
            .arg("--to")
            .arg(&public))
    };
    let compose = || ok_json(&t.compose_tree("repo", &["--no-scripts"], &[]));

    // A first commit has no previous one: nothing to generate, and the index says so.
    let first = compose();
    let a = first["commit"].as_str().unwrap();
    let index: serde_json::Value = serde_json::from_str(&publish()).unwrap();
    assert_eq!(index["refs"]["test/small"]["commit"], a);
    assert_eq!(index["refs"]["test/small"]["deltas"], serde_json::json!([]), "{index}");
    assert_eq!(ostree(&public, &["static-delta", "list"]).trim(), "(No static deltas)");
    let text = run(arbor().args(["publish", "--repo"]).arg(&repo).arg("--to").arg(&public));
    assert!(text.contains("no deltas"), "{text}");

    // A second commit gets the delta from the first, and still none from scratch.
    std::fs::write(t.path("t.yaml"), V1.replace("hello]", "hello, strace]")).unwrap();
    let second = compose();
    let b = second["commit"].as_str().unwrap();
    let index: serde_json::Value = serde_json::from_str(&publish()).unwrap();
    let deltas = index["refs"]["test/small"]["deltas"].as_array().unwrap();
    assert_eq!(deltas.len(), 1, "{deltas:?}");
    assert_eq!(deltas[0]["from"], a);
    let list = ostree(&public, &["static-delta", "list"]);
    let listed: Vec<&str> = list.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert_eq!(listed, [format!("{a}-{b}")], "no from-scratch delta: {list}");
}

#[test]
fn a_repository_with_only_package_cache_refs_has_nothing_to_publish() {
    let t = Scratch::new(&sample_url(), V1);
    let repo = t.path("repo");
    // A compose fills the bare-user repository's package cache (arbor/pkg/...);
    // with the tree's own ref deleted, only package cache refs are left.
    let v = ok_json(&t.compose_tree("repo", &["--no-scripts"], &[]));
    let refs = ostree(&repo, &["refs"]);
    let tree_ref = refs
        .lines()
        .find(|r| !r.starts_with("arbor/pkg/"))
        .unwrap_or_else(|| panic!("the compose's ref is listed: {refs}"))
        .to_string();
    assert!(v["commit"].is_string());
    ostree(&repo, &["refs", "--delete", &tree_ref]);
    let refs = ostree(&repo, &["refs"]);
    assert!(
        !refs.trim().is_empty() && refs.lines().all(|r| r.starts_with("arbor/pkg/")),
        "only package cache refs are left: {refs}"
    );
    let out = arbor()
        .args(["publish", "--repo"])
        .arg(&repo)
        .arg("--to")
        .arg(t.path("public"))
        .timed_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no refs to publish"));
}

#[test]
fn a_signed_publish_carries_summary_sig_and_signed_deltas_libostree_pulls() {
    let t = Scratch::new(&sample_url(), V1);
    let repo = t.path("repo");
    ok_json(&t.compose_tree("repo", &["--no-scripts"], &[]));
    let key = t.path("key");
    run(arbor().args(["keygen", "-o"]).arg(&key));
    let public = t.path("public");
    run(arbor()
        .args(["publish", "--repo"])
        .arg(&repo)
        .arg("--to")
        .arg(&public)
        .arg("--sign-key")
        .arg(&key)
        .arg("--from-scratch"));
    // The documented layout, as ostree prints it.
    let sig_path = public.join("summary.sig");
    let shown = ostree(
        &public,
        &["show", "--print-variant-type=a{sv}", sig_path.to_str().unwrap()],
    );
    // GLib prints the one aay entry as [[byte 0x…]] or, when it could be text, [b'…']
    // (whose bytes may be any character, '<' too: only the ends are fixed).
    assert!(
        shown.starts_with("{'ostree.sign.ed25519': <[") && shown.trim_end().ends_with("]>}"),
        "{shown}"
    );
    // Checked by Python's cryptography, not by our code: some 64 bytes of
    // summary.sig are an ed25519 signature of summary by the public key.
    let script = r#"
import base64, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
pub = Ed25519PublicKey.from_public_bytes(base64.b64decode(open(sys.argv[1]).read().strip()))
summary = open(sys.argv[2], "rb").read()
sig = open(sys.argv[3], "rb").read()
def ok(s):
    try:
        pub.verify(s, summary)
        return True
    except Exception:
        return False
print("OK" if any(ok(sig[i:i + 64]) for i in range(len(sig) - 63)) else "BAD")
"#;
    let verify = |data: &Path, sig: &Path| {
        run(std::process::Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(script)
            .arg(format!("{}.pub", key.display()))
            .arg(data)
            .arg(sig))
    };
    assert_eq!(
        verify(&public.join("summary"), &public.join("summary.sig")).trim(),
        "OK"
    );
    // Each delta's superblock stays plain, so Debian's libostree (2022.7, which
    // cannot read ostree's signed superblock form in a pull) uses it; its
    // signature is beside it.
    let show = ostree(&public, &["static-delta", "list"]);
    let scratch = show.lines().next().unwrap().trim().to_string();
    assert!(ostree(&public, &["static-delta", "show", &scratch]).contains("Signed: no"));
    let superblocks: Vec<PathBuf> = walk(&public.join("deltas"))
        .into_iter()
        .filter(|p| p.ends_with("superblock"))
        .collect();
    assert_eq!(superblocks.len(), 1, "{superblocks:?}");
    let sb = &superblocks[0];
    assert_eq!(verify(sb, &sb.with_file_name("superblock.sig")).trim(), "OK");
    let client = t.path("client");
    ostree(&client, &["init", "--mode=bare-user"]);
    let server = http::Server::start(public.clone());
    ostree(&client, &["remote", "add", "--no-gpg-verify", "origin", &server.url]);
    let pulled = ostree(&client, &["pull", "origin", "test/small"]);
    assert!(pulled.contains("delta parts"), "the pull used the delta: {pulled}");
}

/// Commits `files` (path, contents) as the next commit of `test/big` in `repo`.
fn commit_files(repo: &Path, tree: &Path, files: &[(&str, &[u8])]) -> String {
    for (path, data) in files {
        let dest = tree.join(path);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(dest, data).unwrap();
    }
    ostree(
        repo,
        &["commit", "-b", "test/big", &format!("--tree=dir={}", tree.display())],
    )
    .trim()
    .to_string()
}

#[test]
fn published_deltas_carry_files_over_4_mb_and_apply_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, tree) = (tmp.path().join("repo"), tmp.path().join("tree"));
    ostree(&repo, &["init", "--mode=bare-user"]);
    let a = commit_files(&repo, &tree, &[("usr/lib/os-release", b"ID=arbor\n")]);
    // Over libostree's 4 MB, a file it would leave out of a delta for a pull to fetch.
    let big: Vec<u8> = (0..6_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let b = commit_files(&repo, &tree, &[("usr/lib/firmware/big.bin", &big)]);
    let public = tmp.path().join("public");
    run(arbor()
        .args(["publish", "--from-scratch", "--repo"])
        .arg(&repo)
        .arg("--to")
        .arg(&public));
    let superblocks: Vec<PathBuf> = walk(&public.join("deltas"))
        .into_iter()
        .filter(|p| p.ends_with("superblock"))
        .collect();
    assert_eq!(superblocks.len(), 2, "{superblocks:?}");
    for name in [b.clone(), format!("{a}-{b}")] {
        let show = ostree(&public, &["static-delta", "show", &name]);
        assert!(show.contains("Number of fallback entries: 0"), "{name}: {show}");
    }
    // Both apply with ostree's own offline tool: from scratch into an empty
    // repository, from A into one holding A.
    for sb in &superblocks {
        let scratch = !sb
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .contains('-');
        let client = tmp.path().join(if scratch { "empty" } else { "has-a" });
        ostree(&client, &["init", "--mode=bare-user"]);
        if !scratch {
            ostree(&client, &["pull-local", repo.to_str().unwrap(), &a]);
        }
        ostree(
            &client,
            &["static-delta", "apply-offline", sb.parent().unwrap().to_str().unwrap()],
        );
        ostree(&client, &["fsck"]);
        let checkout = tmp.path().join(format!("{}-co", client.display()));
        ostree(&client, &["checkout", "-U", &b, checkout.to_str().unwrap()]);
        assert!(std::fs::read(checkout.join("usr/lib/firmware/big.bin")).unwrap() == big);
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
