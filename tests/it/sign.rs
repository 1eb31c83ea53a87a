//! `arbor keygen|sign|verify` against the real ostree CLI, with the signatures
//! checked independently by Python's `cryptography` (Debian's /usr/bin/python3).

use crate::common::{self, Deadline as _};

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::run;

fn arbor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_arbor"))
}

fn ostree(repo: &Path) -> Command {
    let mut c = Command::new("ostree");
    c.arg(format!("--repo={}", repo.display()));
    c
}

/// A bare-user repository with one commit made by the ostree CLI, bound the
/// way `arbor compose tree` binds commits (arch, boards), on ref `test/ref`
/// (which `ostree commit -b` also writes as `ostree.ref-binding`), with one
/// unrelated detached metadata key.
struct Fixture {
    tmp: tempfile::TempDir,
    repo: PathBuf,
    commit: String,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        run(ostree(&repo).args(["init", "--mode=bare-user"]));
        let tree = tmp.path().join("tree");
        std::fs::create_dir_all(tree.join("usr/lib")).unwrap();
        std::fs::write(tree.join("usr/lib/os-release"), "ID=arbor\n").unwrap();
        let mut f = Fixture {
            tmp,
            repo,
            commit: String::new(),
        };
        f.commit = f.commit_tree("test/ref", &["--add-detached-metadata-string=x.other=kept"]);
        f
    }

    /// Commits the fixture's tree on `branch` with arbor's binding metadata and `extra` options.
    fn commit_tree(&self, branch: &str, extra: &[&str]) -> String {
        let out = run(ostree(&self.repo)
            .args(["commit", "-b", branch, "--subject", branch])
            .arg(format!("--tree=dir={}", self.tmp.path().join("tree").display()))
            .args([
                "--add-metadata-string=arbor.arch=aarch64",
                "--add-metadata=arbor.boards=['rpi4']",
            ])
            .args(extra));
        out.trim().to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// A copy of the repository, for tests that damage it.
    fn copy_repo(&self, name: &str) -> PathBuf {
        let dest = self.path(name);
        run(Command::new("cp").arg("-a").arg(&self.repo).arg(&dest));
        dest
    }

    fn keygen(&self, name: &str) -> Key {
        let secret = self.path(name);
        let printed = run(arbor().arg("keygen").arg("-o").arg(&secret));
        Key {
            public_file: PathBuf::from(format!("{}.pub", secret.display())),
            secret,
            public: printed.trim().to_string(),
        }
    }

    fn sign(&self, key: &Key) -> String {
        run(arbor()
            .args(["sign", "--repo"])
            .arg(&self.repo)
            .arg("--key")
            .arg(&key.secret)
            .arg(&self.commit))
    }

    fn verify(&self, repo: &Path, keys: &Path, args: &[&str]) -> Output {
        arbor()
            .args(["verify", "--repo"])
            .arg(repo)
            .arg("--keys")
            .arg(keys)
            .args(args)
            .timed_output()
            .unwrap()
    }
}

struct Key {
    secret: PathBuf,
    public_file: PathBuf,
    /// base64, as `arbor keygen` printed it.
    public: String,
}

/// The commit object's file: in a bare-user repository, exactly the bytes of the commit variant.
fn commit_object(repo: &Path, commit: &str) -> PathBuf {
    repo.join("objects")
        .join(&commit[..2])
        .join(format!("{}.commit", &commit[2..]))
}

/// The `ostree.sign.ed25519` entries as the ostree CLI prints them (`[[byte 0x.., ..], [0x.., ..]]`).
fn signatures_per_ostree(repo: &Path, commit: &str) -> Vec<Vec<u8>> {
    let text = run(ostree(repo)
        .arg("show")
        .arg("--print-detached-metadata-key=ostree.sign.ed25519")
        .arg(commit));
    parse_aay(text.trim())
}

/// Parses GLib's text form of an `aay`: each entry is `[byte 0x.., 0x..]`
/// (`byte` only on the first) or, when it ends in its only NUL, `b'..'`/`b".."`
/// with C escapes and the NUL left out.
fn parse_aay(text: &str) -> Vec<Vec<u8>> {
    let t: Vec<char> = text.strip_prefix("@aay ").unwrap_or(text).chars().collect();
    assert!(t.first() == Some(&'[') && t.last() == Some(&']'), "not an aay: {text}");
    let mut out = Vec::new();
    let mut i = 1;
    loop {
        while matches!(t[i], ' ' | ',') {
            i += 1;
        }
        if t[i..].starts_with(&['@', 'a', 'y', ' ']) {
            i += 4;
        }
        match t[i] {
            ']' => return out,
            'b' => {
                let quote = t[i + 1];
                i += 2;
                let mut bytes = Vec::new();
                while t[i] != quote {
                    if t[i] != '\\' {
                        bytes.push(u8::try_from(t[i]).unwrap());
                        i += 1;
                        continue;
                    }
                    i += 1;
                    let simple = match t[i] {
                        'a' => Some(7),
                        'b' => Some(8),
                        't' => Some(9),
                        'n' => Some(10),
                        'v' => Some(11),
                        'f' => Some(12),
                        'r' => Some(13),
                        c @ ('\\' | '\'' | '"') => Some(c as u8),
                        _ => None,
                    };
                    if let Some(b) = simple {
                        bytes.push(b);
                        i += 1;
                    } else {
                        let digits: String = t[i..].iter().take(3).take_while(|c| c.is_digit(8)).collect();
                        assert!(!digits.is_empty(), "bad escape in {text}");
                        bytes.push(u8::from_str_radix(&digits, 8).unwrap());
                        i += digits.len();
                    }
                }
                i += 1;
                bytes.push(0);
                out.push(bytes);
            }
            '[' => {
                let close = i + t[i..].iter().position(|c| *c == ']').unwrap();
                let inner: String = t[i + 1..close].iter().collect();
                let bytes = inner
                    .replace("byte ", "")
                    .split(", ")
                    .filter(|b| !b.is_empty())
                    .map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).unwrap_or_else(|e| panic!("{b}: {e}")))
                    .collect();
                out.push(bytes);
                i = close + 1;
            }
            c => panic!("unexpected {c:?} in {text}"),
        }
    }
}

#[test]
fn the_aay_parser_reads_both_forms() {
    let text = r#"[[byte 0x01, 0x00], b'a\\b\'', b"x'\001\n\"", [], @ay []]"#;
    assert_eq!(
        parse_aay(text),
        vec![
            vec![1, 0],
            b"a\\b'\0".to_vec(),
            b"x'\x01\n\"\0".to_vec(),
            vec![],
            vec![]
        ]
    );
    assert_eq!(parse_aay("@aay []"), Vec::<Vec<u8>>::new());
}

/// Checks with Python's `cryptography`, not our code: the secret key file's
/// seed gives the public key file's key, and `sig` is that key's signature over `data_file`.
fn python_verify(key: &Key, sig: &[u8], data_file: &Path) -> String {
    const SCRIPT: &str = r#"
import base64, sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
secret = base64.b64decode(open(sys.argv[1]).read().strip(), validate=True)
public = base64.b64decode(open(sys.argv[2]).read().strip(), validate=True)
assert len(secret) == 64 and len(public) == 32, (len(secret), len(public))
derived = Ed25519PrivateKey.from_private_bytes(secret[:32]).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
assert derived == public == secret[32:], "secret seed, its public half and the .pub file disagree"
try:
    Ed25519PublicKey.from_public_bytes(public).verify(bytes.fromhex(sys.argv[3]), open(sys.argv[4], "rb").read())
    print("valid")
except InvalidSignature:
    print("invalid")
"#;
    run(Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .arg(&key.secret)
        .arg(&key.public_file)
        .arg(hex::encode(sig))
        .arg(data_file))
    .trim()
    .to_string()
}

/// Asserts a refusal: exit 1, every `wants` in stderr, and no panic.
fn refused(out: &Output, wants: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a refusal, got {}:\n{err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{err}");
    for want in wants {
        assert!(err.contains(want), "stderr lacks {want:?}:\n{err}");
    }
}

fn passed(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed with {}:\n{err}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn keygen_writes_ostree_format_keys_and_never_overwrites() {
    let f = Fixture::new();
    let key = f.keygen("k");
    let secret = std::fs::read_to_string(&key.secret).unwrap();
    let public = std::fs::read_to_string(&key.public_file).unwrap();
    assert_eq!(BASE64.decode(secret.trim()).unwrap().len(), 64);
    assert_eq!(BASE64.decode(public.trim()).unwrap().len(), 32);
    assert_eq!(public.trim(), key.public, "keygen prints the public key");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key.secret), 0o600);
    assert_eq!(mode(&key.public_file), 0o644);
    // The seed/public layout, checked by another implementation (any signature will do for the
    // key check; this one is over nothing and must simply not verify).
    assert_eq!(python_verify(&key, &[0; 64], &key.public_file), "invalid");

    let out = arbor().arg("keygen").arg("-o").arg(&key.secret).timed_output().unwrap();
    refused(&out, &["already exists", "refusing to overwrite"]);
    assert_eq!(std::fs::read_to_string(&key.secret).unwrap(), secret);
    assert_eq!(std::fs::read_to_string(&key.public_file).unwrap(), public);
    // An existing .pub alone also stops keygen, and no secret key is left behind.
    std::fs::write(f.path("lone.pub"), "x\n").unwrap();
    let out = arbor()
        .arg("keygen")
        .arg("-o")
        .arg(f.path("lone"))
        .timed_output()
        .unwrap();
    refused(&out, &["lone.pub already exists"]);
    assert!(!f.path("lone").exists());
}

#[test]
fn signatures_land_in_ostree_layout_and_verify_independently() {
    let f = Fixture::new();
    let (k1, k2) = (f.keygen("k1"), f.keygen("k2"));
    let out = f.sign(&k1);
    assert!(out.contains(&f.commit) && out.contains(&k1.public), "{out}");

    // The documented layout, as the ostree CLI reads it back.
    let meta = f
        .repo
        .join("objects")
        .join(&f.commit[..2])
        .join(format!("{}.commitmeta", &f.commit[2..]));
    let whole = run(ostree(&f.repo).arg("show").arg("--print-variant-type=a{sv}").arg(&meta));
    // GLib prints a signature that happens to end in a NUL byte as b'…' (or b"…"
    // when it holds a single quote) instead of [byte 0x…].
    assert!(
        whole.contains("'ostree.sign.ed25519': <[[byte 0x") || whole.contains("'ostree.sign.ed25519': <[b"),
        "{whole}"
    );
    assert!(
        whole.contains("'x.other': <'kept'>"),
        "other detached keys are kept: {whole}"
    );
    let sigs = signatures_per_ostree(&f.repo, &f.commit);
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0].len(), 64);

    // Independent check over the commit object's raw bytes.
    let object = commit_object(&f.repo, &f.commit);
    assert_eq!(python_verify(&k1, &sigs[0], &object), "valid");
    assert_eq!(python_verify(&k2, &sigs[0], &object), "invalid");

    // Same key again (by ref this time): still one entry. Another key: two.
    let again = run(arbor()
        .args(["sign", "--repo"])
        .arg(&f.repo)
        .arg("--key")
        .arg(&k1.secret)
        .arg("test/ref"));
    assert!(again.contains("already signed"), "{again}");
    assert_eq!(signatures_per_ostree(&f.repo, &f.commit), sigs);
    f.sign(&k2);
    let both = signatures_per_ostree(&f.repo, &f.commit);
    assert_eq!(both.len(), 2);
    assert_eq!(both[0], sigs[0], "signatures are appended");
    assert_eq!(python_verify(&k2, &both[1], &object), "valid");
    let kept = run(ostree(&f.repo)
        .arg("show")
        .arg("--print-detached-metadata-key=x.other")
        .arg(&f.commit));
    assert_eq!(kept.trim(), "'kept'");
    // libostree still reads the repository as sound.
    run(ostree(&f.repo).args(["fsck", "--quiet"]));
}

#[test]
fn secret_key_files_are_parsed_strictly() {
    let f = Fixture::new();
    let k = f.keygen("k");
    let sign = |key: &Path| {
        arbor()
            .args(["sign", "--repo"])
            .arg(&f.repo)
            .arg("--key")
            .arg(key)
            .arg(&f.commit)
            .timed_output()
            .unwrap()
    };
    std::fs::set_permissions(&k.secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(&sign(&k.secret), &["k has mode 0644", "group or others"]);
    let cases = [
        ("garbage", "not an ed25519 key?!\n".to_string(), "not valid base64"),
        ("short", format!("{}\n", BASE64.encode([7u8; 63])), "63 bytes"),
        ("long", format!("{}\n", BASE64.encode([7u8; 65])), "65 bytes"),
        ("public", std::fs::read_to_string(&k.public_file).unwrap(), "32 bytes"),
    ];
    for (name, text, want) in cases {
        let p = f.path(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        refused(&sign(&p), &[&format!("secret key {}", p.display()), want]);
    }
    refused(&sign(&f.path("absent")), &["absent"]);
    assert!(
        signatures_per_ostree_or_none(&f.repo, &f.commit).is_none(),
        "nothing was signed"
    );
}

fn signatures_per_ostree_or_none(repo: &Path, commit: &str) -> Option<Vec<Vec<u8>>> {
    let out = ostree(repo)
        .arg("show")
        .arg("--print-detached-metadata-key=ostree.sign.ed25519")
        .arg(commit)
        .timed_output()
        .unwrap();
    out.status
        .success()
        .then(|| parse_aay(String::from_utf8_lossy(&out.stdout).trim()))
}

#[test]
fn verify_trusts_any_one_key_and_never_a_revoked_one() {
    let f = Fixture::new();
    let (good, other, stranger) = (f.keygen("good"), f.keygen("other"), f.keygen("stranger"));
    f.sign(&good);
    f.sign(&other);

    let out = passed(&f.verify(&f.repo, &good.public_file, &[&f.commit]));
    assert_eq!(
        out.trim(),
        format!("commit {}: good signature from key {}", f.commit, good.public)
    );
    // A trusted.ed25519.d-style directory with comments and a stranger's key.
    let dir = f.path("trusted.ed25519.d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a"), format!("# not ours\n{}\n", stranger.public)).unwrap();
    std::fs::write(dir.join("b"), format!("\n{}\n", other.public)).unwrap();
    passed(&f.verify(&f.repo, &dir, &["test/ref"]));

    let out = f.verify(&f.repo, &stranger.public_file, &[&f.commit]);
    refused(&out, &["none of its 2 signatures verifies"]);

    // Revoked: never counts, even though it signed and is also listed as trusted.
    let out = f.verify(
        &f.repo,
        &good.public_file,
        &[&f.commit, "--revoked", good.public_file.to_str().unwrap()],
    );
    refused(&out, &["revoked", &good.public]);
    let out = f.verify(
        &f.repo,
        &dir,
        &[&f.commit, "--revoked", dir.join("b").to_str().unwrap()],
    );
    refused(&out, &["revoked", &other.public]);
    // One revoked signer does not spoil another, trusted one.
    let both = f.path("both");
    std::fs::write(&both, format!("{}\n{}\n", good.public, other.public)).unwrap();
    let out = passed(&f.verify(
        &f.repo,
        &both,
        &[&f.commit, "--revoked", other.public_file.to_str().unwrap()],
    ));
    assert!(out.contains(&good.public), "{out}");

    // --json, both ways.
    let out = f.verify(&f.repo, &good.public_file, &[&f.commit, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["commit"], f.commit.as_str());
    assert_eq!(v["key"], good.public.as_str());
    assert_eq!(v["reasons"], serde_json::json!([]));
    let out = f.verify(&f.repo, &stranger.public_file, &[&f.commit, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["key"], serde_json::Value::Null);
    assert!(v["reasons"][0].as_str().unwrap().contains("verifies"), "{v}");

    // Unsigned commit.
    let unsigned = f.commit_tree("test/unsigned", &[]);
    refused(
        &f.verify(&f.repo, &good.public_file, &[&unsigned]),
        &["not signed", "ostree.sign.ed25519"],
    );
}

#[test]
fn altered_commit_objects_are_refused() {
    let f = Fixture::new();
    let k = f.keygen("k");
    f.sign(&k);
    let len = std::fs::metadata(commit_object(&f.repo, &f.commit)).unwrap().len() as usize;
    // First byte (metadata), middle, last (GVariant framing): each in its own copy.
    for (i, at) in [0, len / 2, len - 1].into_iter().enumerate() {
        let repo = f.copy_repo(&format!("flipped{i}"));
        let object = commit_object(&repo, &f.commit);
        let mut bytes = std::fs::read(&object).unwrap();
        bytes[at] ^= 0x01;
        std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&object, &bytes).unwrap();
        let sig = &signatures_per_ostree(&repo, &f.commit)[0];
        assert_eq!(python_verify(&k, sig, &object), "invalid", "byte {at}");
        let out = f.verify(&repo, &k.public_file, &[&f.commit]);
        refused(&out, &["refused"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("is corrupt") || err.contains("loading commit"),
            "byte {at}: {err}"
        );
    }
}

#[test]
fn malformed_detached_metadata_is_refused() {
    let f = Fixture::new();
    let k = f.keygen("k");
    f.sign(&k);
    let good = signatures_per_ostree(&f.repo, &f.commit).remove(0);
    let mut long = good.clone();
    long.push(0);
    let cases: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        ("truncated", vec![good[..63].to_vec()], "entry 1 is 63 bytes"),
        ("oversized", vec![long], "entry 1 is 65 bytes"),
        ("empty", vec![], "empty list"),
        // Ends in its only NUL: GLib prints it as b"..." with escapes.
        (
            "nul-terminated",
            vec![(1..=64).chain([b'\\', 0]).collect()],
            "entry 1 is 66 bytes",
        ),
        (
            "good-then-short",
            vec![good.clone(), good[..10].to_vec()],
            "entry 2 is 10 bytes",
        ),
    ];
    for (name, entries, want) in cases {
        let repo = f.copy_repo(name);
        arbor::ostree::sign::replace_signatures(&arbor::ostree::Repo::open(&repo).unwrap(), &f.commit, &entries)
            .unwrap();
        // What the ostree CLI reads back is what we meant to plant.
        assert_eq!(signatures_per_ostree(&repo, &f.commit), entries, "{name}");
        refused(&f.verify(&repo, &k.public_file, &[&f.commit]), &[want]);
    }

    // Garbage type, written by the ostree CLI.
    let typed = f.commit_tree(
        "test/typed",
        &["--add-detached-metadata-string=ostree.sign.ed25519=garbage"],
    );
    refused(
        &f.verify(&f.repo, &k.public_file, &[&typed]),
        &["ostree.sign.ed25519 has type s, not aay"],
    );
    let out = arbor()
        .args(["sign", "--repo"])
        .arg(&f.repo)
        .arg("--key")
        .arg(&k.secret)
        .arg(&typed)
        .timed_output()
        .unwrap();
    refused(&out, &["refusing to sign", "has type s, not aay"]);

    // A detached metadata file of random bytes.
    let repo = f.copy_repo("garbage");
    let meta = repo
        .join("objects")
        .join(&f.commit[..2])
        .join(format!("{}.commitmeta", &f.commit[2..]));
    let noise: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&meta, noise).unwrap();
    refused(&f.verify(&repo, &k.public_file, &[&f.commit]), &["detached metadata"]);
}

#[test]
fn binding_to_arch_board_and_ref() {
    let f = Fixture::new();
    let k = f.keygen("k");
    f.sign(&k);
    let keys = &k.public_file;
    passed(&f.verify(
        &f.repo,
        keys,
        &[&f.commit, "--arch", "aarch64", "--board", "rpi4", "--ref", "test/ref"],
    ));
    refused(
        &f.verify(&f.repo, keys, &[&f.commit, "--arch", "x86_64"]),
        &["arch aarch64, not x86_64"],
    );
    refused(
        &f.verify(&f.repo, keys, &[&f.commit, "--board", "rpi3"]),
        &["not built for board rpi3", "[rpi4]"],
    );
    // `ostree commit -b` wrote ostree.ref-binding = [test/ref]: it decides.
    refused(
        &f.verify(&f.repo, keys, &["test/ref", "--ref", "test/other"]),
        &["not bound to ref test/other", "ostree.ref-binding is [test/ref]"],
    );
    // A good signature with a failed binding: both in the JSON, key included.
    let out = f.verify(
        &f.repo,
        keys,
        &[&f.commit, "--arch", "x86_64", "--board", "rpi3", "--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["valid"].clone(), v["key"].clone()),
        (false.into(), k.public.as_str().into())
    );
    assert_eq!(v["reasons"].as_array().unwrap().len(), 2, "{v}");

    // Without ostree.ref-binding: the ref the commit was reached through.
    let unbound = f.commit_tree("test/unbound", &["--no-bindings"]);
    run(arbor()
        .args(["sign", "--repo"])
        .arg(&f.repo)
        .arg("--key")
        .arg(&k.secret)
        .arg(&unbound));
    passed(&f.verify(&f.repo, keys, &["test/unbound", "--ref", "test/unbound"]));
    passed(&f.verify(&f.repo, keys, &[&unbound, "--ref", "test/unbound"]));
    refused(
        &f.verify(&f.repo, keys, &["test/unbound", "--ref", "test/ref"]),
        &["reached through ref test/unbound, not test/ref"],
    );
    refused(
        &f.verify(&f.repo, keys, &[&unbound, "--ref", "test/ref"]),
        &["ref test/ref does not point to it"],
    );

    // The library API the compose will call.
    let trust = arbor::sign::Trust::load(keys, None).unwrap();
    let binding = arbor::sign::Binding {
        arch: Some(arbor::arch::Arch::Aarch64),
        board: Some("rpi4".into()),
        ref_name: Some("test/ref".into()),
    };
    let v = arbor::ostree::sign::verify_commit(
        &arbor::ostree::Repo::open(&f.repo).unwrap(),
        "test/ref",
        &trust,
        &binding,
    )
    .unwrap();
    assert_eq!(
        (v.commit.as_str(), v.key.as_str()),
        (f.commit.as_str(), k.public.as_str())
    );
    let wrong = arbor::sign::Binding {
        board: Some("rpi3".into()),
        ..binding
    };
    let err = format!(
        "{:#}",
        arbor::ostree::sign::verify_commit(&arbor::ostree::Repo::open(&f.repo).unwrap(), "test/ref", &trust, &wrong)
            .unwrap_err()
    );
    assert!(err.contains("rpi3"), "{err}");
}
