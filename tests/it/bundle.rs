//! `arbor bundle create|verify` against the real ostree CLI: the delta inside
//! a bundle applies with `ostree static-delta apply-offline`, and damaged or
//! forged bundles are refused with a message naming the cause.

use crate::common::{self, Deadline as _, peak};

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::archive::{Raw, pack, raw, unpack};
use common::{arbor, err, ok_json, run};

fn ostree(repo: &Path) -> Command {
    let mut c = Command::new("ostree");
    c.arg(format!("--repo={}", repo.display()));
    c
}

/// A repository with commits A and B on `test/ref` (B signed by `k`), and
/// keys `k` (signs bundles and commits) and `other`.
struct Fixture {
    tmp: tempfile::TempDir,
    repo: PathBuf,
    a: String,
    b: String,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        run(ostree(&repo).args(["init", "--mode=bare-user"]));
        let mut f = Fixture {
            tmp,
            repo,
            a: String::new(),
            b: String::new(),
        };
        let big: Vec<u8> = (0..200_000u32).flat_map(|i| (i * 7919).to_le_bytes()).collect();
        f.a = f.commit("1", &big);
        let mut big2 = big.clone();
        big2[1000..1100].fill(0xAA);
        f.b = f.commit("2", &big2);
        run(arbor().args(["keygen", "-o"]).arg(f.path("k")));
        run(arbor().args(["keygen", "-o"]).arg(f.path("other")));
        run(arbor()
            .args(["sign", "--repo"])
            .arg(&f.repo)
            .arg("--key")
            .arg(f.path("k"))
            .arg(&f.b));
        f
    }

    /// Commits a tree at `version` holding `data` on `test/ref`.
    fn commit(&self, version: &str, data: &[u8]) -> String {
        self.commit_with(version, data, &[])
    }

    /// [`Fixture::commit`] with `extra` files (path, contents) in the tree too.
    fn commit_with(&self, version: &str, data: &[u8], extra: &[(&str, &[u8])]) -> String {
        let tree = self.path(&format!("tree{version}"));
        std::fs::create_dir_all(tree.join("usr/lib")).unwrap();
        for (path, contents) in extra {
            let dest = tree.join(path);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::write(dest, contents).unwrap();
        }
        std::fs::write(
            tree.join("usr/lib/os-release"),
            format!("ID=arbor\nVERSION_ID={version}\n"),
        )
        .unwrap();
        std::fs::write(tree.join("usr/lib/blob"), data).unwrap();
        run(ostree(&self.repo)
            .args(["commit", "-b", "test/ref", "--subject", version])
            .arg(format!("--tree=dir={}", tree.display()))
            .arg(format!("--add-metadata-string=version={version}"))
            .args([
                "--add-metadata-string=arbor.arch=aarch64",
                "--add-metadata=arbor.boards=['rpi4']",
            ]))
        .trim()
        .to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `arbor bundle create` into `name`, from A unless `scratch`, signed by `key`.
    fn create(&self, name: &str, scratch: bool, key: &str) -> PathBuf {
        let out = self.path(name);
        let mut c = arbor();
        c.args(["bundle", "create", "--repo"])
            .arg(&self.repo)
            .args(["--to", "test/ref", "-o"])
            .arg(&out)
            .arg("--key")
            .arg(self.path(key));
        if !scratch {
            c.args(["--from", &self.a]);
        }
        run(&mut c);
        out
    }

    /// `arbor bundle verify FILE --keys k.pub [--revoked REVOKED] EXTRA`.
    fn verify(&self, file: &Path, revoked: Option<&str>, extra: &[&str]) -> Output {
        let mut c = arbor();
        c.args(["bundle", "verify"])
            .arg(file)
            .arg("--keys")
            .arg(self.path("k.pub"));
        if let Some(r) = revoked {
            c.arg("--revoked").arg(self.path(r));
        }
        c.args(extra).timed_output().unwrap()
    }

    /// Extracts the `delta` member with GNU tar and applies it to a fresh
    /// repository holding `have` (if any); returns that repository.
    fn apply(&self, bundle: &Path, have: Option<&str>, name: &str) -> PathBuf {
        let x = self.path(&format!("{name}-x"));
        std::fs::create_dir_all(&x).unwrap();
        run(Command::new("tar")
            .args(["-I", "zstd", "-xf"])
            .arg(bundle)
            .arg("-C")
            .arg(&x)
            .arg("delta"));
        let fresh = self.path(name);
        run(ostree(&fresh).args(["init", "--mode=bare-user"]));
        if let Some(c) = have {
            run(ostree(&fresh).arg("pull-local").arg(&self.repo).arg(c));
        }
        run(ostree(&fresh)
            .args(["static-delta", "apply-offline"])
            .arg(x.join("delta")));
        run(ostree(&fresh).args(["fsck"]));
        fresh
    }
}

#[test]
fn create_verify_and_apply_offline() {
    let f = Fixture::new();
    let bundle = f.create("update.arbor", false, "k");

    let report = ok_json(&f.verify(&bundle, None, &["--json"]));
    assert_eq!(report["valid"], true, "{report}");
    let board = &report["board"];
    assert_eq!(board["from"], f.a.as_str());
    assert_eq!(board["to"], f.b.as_str());
    assert_eq!(board["version"], "2");
    assert_eq!(board["arch"], "aarch64");
    assert_eq!(board["boards"], serde_json::json!(["rpi4"]));
    assert_eq!(board["ref"], "test/ref");

    let out = f.verify(&bundle, None, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains(&format!("{} → {}", f.a, f.b)) && text.contains("version: 2") && text.contains("rpi4"),
        "{text}"
    );

    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&bundle).unwrap().permissions().mode() & 0o777, 0o644);

    // The delta inside applies with ostree's own tools and gives B.
    let fresh = f.apply(&bundle, Some(&f.a), "fresh");
    let got = run(ostree(&fresh).args(["cat", &f.b, "/usr/lib/os-release"]));
    assert!(got.contains("VERSION_ID=2"), "{got}");
    assert!(
        !f.tmp
            .path()
            .read_dir()
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().starts_with(".arbor-bundle-") }),
        "temporary files were left beside the bundle"
    );

    // No byte-for-byte comparison of two bundles: libostree stamps the delta
    // superblock with the time it was generated.
}

#[test]
fn from_scratch_applies_to_an_empty_repository() {
    let f = Fixture::new();
    let bundle = f.create("scratch.arbor", true, "k");
    let report = ok_json(&f.verify(&bundle, None, &["--json"]));
    assert_eq!(report["board"]["from"], serde_json::Value::Null);
    let fresh = f.apply(&bundle, None, "empty");
    let got = run(ostree(&fresh).args(["cat", &f.b, "/usr/lib/os-release"]));
    assert!(got.contains("VERSION_ID=2"), "{got}");
}

#[test]
fn files_over_4_mb_travel_inside_the_bundle() {
    let f = Fixture::new();
    // A new file over libostree's 4 MB, which its generator would otherwise
    // leave for a pull to fetch (and `apply-offline` refuse the delta for).
    let big: Vec<u8> = (0..6_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let c = f.commit_with("3", b"small", &[("usr/lib/firmware/big.bin", &big)]);
    run(arbor()
        .args(["sign", "--repo"])
        .arg(&f.repo)
        .arg("--key")
        .arg(f.path("k"))
        .arg(&c));
    for (name, scratch) in [("scratch-big.arbor", true), ("from-a-big.arbor", false)] {
        let bundle = f.create(name, scratch, "k");
        let fresh = f.apply(&bundle, (!scratch).then_some(f.a.as_str()), &format!("{name}-repo"));
        let got = ostree(&fresh)
            .args(["cat", &c, "/usr/lib/firmware/big.bin"])
            .timed_output()
            .unwrap();
        assert!(
            got.status.success() && got.stdout == big,
            "{name}: {} bytes, {}",
            got.stdout.len(),
            String::from_utf8_lossy(&got.stderr)
        );
        let report = ok_json(&f.verify(&bundle, None, &["--json"]));
        assert_eq!(report["board"]["to"], c.as_str());
    }
}

#[test]
fn unsigned_target_commit_is_refused_at_creation() {
    let f = Fixture::new();
    let out = arbor()
        .args(["bundle", "create", "--repo"])
        .arg(&f.repo)
        .args(["--to", &f.a, "-o"])
        .arg(f.path("x.arbor"))
        .arg("--key")
        .arg(f.path("k"))
        .timed_output()
        .unwrap();
    let e = err(&out);
    assert!(e.contains("is not signed"), "{e}");
    assert!(!f.path("x.arbor").exists());
}

#[test]
fn damaged_and_forged_bundles_are_refused() {
    let f = Fixture::new();
    let good = f.create("good.arbor", false, "k");
    let bytes = std::fs::read(&good).unwrap();
    let members = unpack(&good);
    let names: Vec<String> = members
        .iter()
        .map(|m| String::from_utf8_lossy(&m.name).into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "manifest.json",
            "manifest.sig",
            "board.json",
            "commit",
            "commitmeta",
            "delta"
        ]
    );

    // Re-packing unchanged members gives a bundle that still verifies.
    let repacked = f.path("repacked.arbor");
    pack(&members, &repacked);
    ok_json(&f.verify(&repacked, None, &["--json"]));

    let variant = |name: &str, edit: &dyn Fn(&mut Vec<Raw>)| -> PathBuf {
        let mut m = unpack(&good);
        edit(&mut m);
        let p = f.path(name);
        pack(&m, &p);
        p
    };
    let write = |name: &str, data: &[u8]| -> PathBuf {
        let p = f.path(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x40;
    let idx = |m: &[Raw], n: &str| m.iter().position(|r| r.name == n.as_bytes()).unwrap();

    let cases: Vec<(&str, PathBuf, Option<&str>, &str)> = vec![
        // Where the byte lands decides which check sees it first: zstd's block
        // decoder, or a member's hash.
        (
            "flipped byte",
            write("flipped.arbor", &flipped),
            None,
            "damaged|does not match the signed manifest",
        ),
        (
            "truncated",
            write("cut.arbor", &bytes[..bytes.len() - 100]),
            None,
            "truncated",
        ),
        (
            "unknown key",
            f.create("other.arbor", false, "other"),
            None,
            "manifest.sig does not verify: none of its 1 signature verifies",
        ),
        ("revoked key", good.clone(), Some("k.pub"), "revoked"),
        (
            "member changed, old manifest",
            variant("edited.arbor", &|m| {
                let d = idx(m, "delta");
                let mid = m[d].data.len() / 2;
                m[d].data[mid] ^= 1;
            }),
            None,
            "member delta does not match the signed manifest",
        ),
        (
            "member resized, old manifest",
            variant("resized.arbor", &|m| {
                let d = idx(m, "board.json");
                m[d].data.push(b' ');
            }),
            None,
            "member board.json is",
        ),
        (
            "manifest edited",
            variant("manifest.arbor", &|m| {
                let text = String::from_utf8(m[0].data.clone()).unwrap();
                m[0].data = text.replacen("\"size\": ", "\"size\": 1", 1).into_bytes();
            }),
            None,
            "manifest.sig does not verify",
        ),
        (
            "extra member",
            variant("extra.arbor", &|m| m.push(raw("extra", b"x"))),
            None,
            "unknown member extra",
        ),
        (
            "duplicate member",
            variant("dup.arbor", &|m| {
                let c = idx(m, "commit");
                let d = Raw {
                    name: m[c].name.clone(),
                    kind: m[c].kind,
                    data: m[c].data.clone(),
                };
                m.push(d);
            }),
            None,
            "member commit appears twice",
        ),
        (
            "dot-dot name",
            variant("dotdot.arbor", &|m| m.insert(2, raw("../x", b"x"))),
            None,
            "\"../x\" is not a plain file name",
        ),
        (
            "absolute name",
            variant("abs.arbor", &|m| m.insert(2, raw("/etc/x", b"x"))),
            None,
            "\"/etc/x\" is not a plain file name",
        ),
        (
            "symlink",
            variant("link.arbor", &|m| {
                let c = idx(m, "commitmeta");
                m[c].kind = tar::EntryType::Symlink;
            }),
            None,
            "member \"commitmeta\" is a symbolic link",
        ),
        (
            "missing member",
            variant("missing.arbor", &|m| {
                let c = idx(m, "delta");
                m.remove(c);
            }),
            None,
            "member delta is missing",
        ),
        (
            "manifest not first",
            variant("order.arbor", &|m| m.swap(0, 2)),
            None,
            "the first member is board.json, not manifest.json",
        ),
        ("not a bundle", write("junk.arbor", b"hello"), None, "not a zstd stream"),
    ];
    // `want` holds alternatives separated by `|`.
    let matches = |text: &str, want: &str| want.split('|').any(|w| text.contains(w));
    for (what, file, revoked, want) in cases {
        let e = err(&f.verify(&file, revoked, &[]));
        assert!(matches(&e, want), "{what}: want {want:?} in:\n{e}");
        let out = f.verify(&file, revoked, &["--json"]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(1), "{what}");
        assert_eq!(report["valid"], false, "{what}");
        assert!(
            matches(report["reasons"][0].as_str().unwrap(), want),
            "{what}: {report}"
        );
    }
}

/// The good bundle's tar stream with one extension member of `kind` claiming
/// `size` bytes put first, streamed through zstd (the tar bytes of the
/// extension are never held in memory: a gigabyte compresses to kilobytes).
fn with_extension_header(good: &Path, kind: tar::EntryType, size: u64, dest: &Path) {
    use std::io::Write as _;
    let mut tar_bytes = Vec::new();
    zstd::Decoder::new(std::fs::File::open(good).unwrap())
        .unwrap()
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let mut enc = zstd::Encoder::new(std::fs::File::create(dest).unwrap(), 1).unwrap();
    let mut h = tar::Header::new_gnu();
    let name: &[u8] = if kind == tar::EntryType::XHeader {
        b"PaxHeaders/manifest.json"
    } else {
        b"././@LongLink"
    };
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_cksum();
    enc.write_all(h.as_bytes()).unwrap();
    // A pax header is one well-formed record (a comment, which tar ignores);
    // a long name is just a very long name.
    let mut left = size;
    if kind == tar::EntryType::XHeader {
        let head = format!("{size} comment=");
        enc.write_all(head.as_bytes()).unwrap();
        left -= head.len() as u64;
    }
    let chunk = vec![b'a'; 1 << 20];
    while left > 1 {
        let n = (left - 1).min(chunk.len() as u64) as usize;
        enc.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    enc.write_all(if kind == tar::EntryType::XHeader { b"\n" } else { b"a" })
        .unwrap();
    enc.write_all(&vec![0u8; (512 - size % 512) as usize % 512]).unwrap();
    enc.write_all(&tar_bytes).unwrap();
    enc.finish().unwrap();
}

/// `arbor bundle verify` watched: its peak memory, output and a kill-timeout.
/// (A good verify takes well under a second: two minutes is a hang.)
fn verify_watched(bundle: &Path, keys: &Path) -> peak::Watched {
    let mut c = arbor();
    c.args(["bundle", "verify"]).arg(bundle).arg("--keys").arg(keys);
    peak::watch(&mut c, std::time::Duration::from_secs(120))
}

#[test]
fn tar_extension_headers_are_refused_before_they_are_read() {
    let f = Fixture::new();
    let good = f.create("good.arbor", false, "k");
    let cases = [
        // 1.5 GiB of GNU long name: read whole, then echoed in the refusal.
        (
            tar::EntryType::GNULongName,
            3 << 29,
            "a GNU long-name extension header claiming 1610612736 bytes",
        ),
        // A 600 MiB pax header: read whole, then the bundle was reported good.
        (
            tar::EntryType::XHeader,
            600 << 20,
            "a pax extension header claiming 629145600 bytes",
        ),
    ];
    for (kind, size, want) in cases {
        let bad = f.path("extension.arbor");
        with_extension_header(&good, kind, size, &bad);
        eprintln!(
            "{kind:?} header claiming {size} bytes: bundle of {} bytes",
            std::fs::metadata(&bad).unwrap().len()
        );
        let w = verify_watched(&bad, &f.path("k.pub"));
        w.check_peak(&format!("bundle verify, {kind:?} header of {size} bytes"));
        assert_eq!(w.code, Some(1), "{kind:?}: must be refused:\n{}{}", w.stdout, w.stderr);
        assert!(w.stderr.contains(want), "{kind:?}: want {want:?} in:\n{}", w.stderr);
    }
}

#[test]
fn keys_that_are_not_regular_files_are_refused_before_reading() {
    let f = Fixture::new();
    let good = f.create("good.arbor", false, "k");
    let fifo = f.path("keys.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let big = f.path("big.pub");
    std::fs::File::create(&big).unwrap().set_len(8 << 30).unwrap();
    let cases = [
        (Path::new("/dev/zero"), "/dev/zero is not a regular file"),
        (fifo.as_path(), "keys.fifo is not a regular file"),
        (big.as_path(), "big.pub is 8589934592 bytes; refusing more than"),
    ];
    for (keys, want) in cases {
        let w = verify_watched(&good, keys);
        w.check_peak(&format!("bundle verify --keys {}", keys.display()));
        assert_eq!(
            w.code,
            Some(1),
            "--keys {}: must be refused:\n{}",
            keys.display(),
            w.stderr
        );
        assert!(
            w.stderr.contains(want),
            "--keys {}: want {want:?} in:\n{}",
            keys.display(),
            w.stderr
        );
    }
}
