//! rpm v6 packages (issue 16): their payload is stripped cpio, each entry a
//! `07070X` magic and the index of a header file, its size taken from the
//! header (rpm's lib/cpio.cc and lib/rpmfi.cc), a hardlink set's bytes once.
//!
//! How the packages are made: `rpm::PackageBuilder` (the rpm crate) with
//! `BuildConfig::v6()` writes rpm's v6 format: RPMTAG_RPMFORMAT 6,
//! LONGFILESIZES, the v6 payload digests, and a stripped payload (each test
//! checks the package really is one: the archive starts with `07070X` and
//! names none of its files). Debian's rpm (4.18) cannot build v6 packages,
//! but reads stripped payloads (since 4.12): `rpm2archive` turns the package
//! into a tar whose files the test compares with the content it put in, so
//! the package is rpm's format and not only the rpm crate's idea of it.
//! Hostile packages are that package with its payload replaced by a stripped
//! archive written here, every payload digest and size and the signature
//! header recomputed, so the hostile entry is the only thing wrong.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use arbor::pkgcache::users_from_packages;
use rpm::{FileMode, FileOptions, IndexData, IndexTag, PackageBuilder};
use sha2::{Digest, Sha256, Sha512};

use crate::common::{self, Scratch, ok_json, ostree, sample_url};
use crate::hostile_rpms::{Env, Found, NEVRA};

/// A builder for a v6 package, its times fixed.
fn v6_builder(name: &str) -> PackageBuilder {
    let mut b = PackageBuilder::new(name, "1.0", "MIT", "noarch", "an rpm v6 package");
    b.release("1").using_config(
        rpm::BuildConfig::v6()
            .compression(rpm::CompressionWithLevel::Zstd(3))
            .source_date(1_700_000_000u32),
    );
    b
}

/// The package's decompressed payload, checked to be stripped cpio: it
/// starts with `07070X` and none of the `paths` appears in it.
fn stripped_archive(pkg: &rpm::Package, paths: &[&str]) -> Vec<u8> {
    assert_eq!(
        pkg.metadata
            .header
            .get_entry_data_as_u32(IndexTag::RPMTAG_RPMFORMAT)
            .ok(),
        Some(6)
    );
    let mut archive = Vec::new();
    zstd::stream::read::Decoder::new(&pkg.payload[..])
        .unwrap()
        .read_to_end(&mut archive)
        .unwrap();
    assert_eq!(&archive[..6], b"07070X", "not a stripped payload");
    for p in paths {
        let name = p.trim_start_matches('/').as_bytes();
        assert!(
            !archive.windows(name.len()).any(|w| w == name),
            "{p} is named in the archive: not stripped"
        );
    }
    archive
}

/// Bytes that are not all alike (so a misplaced block shows), `n` of them.
fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// What the v6 package of the compose test holds.
struct Content {
    /// Regular files: path → bytes (each hardlink name listed too).
    files: BTreeMap<&'static str, Vec<u8>>,
    /// The hardlink pair.
    linked: [&'static str; 2],
    /// Symlink path and target.
    symlink: (&'static str, &'static str),
    /// A directory of the package and its mode.
    dir: (&'static str, u32),
}

fn content() -> Content {
    let files: BTreeMap<&str, Vec<u8>> = [
        ("/usr/bin/v6-hello", b"#!/bin/sh\necho hello from v6\n".to_vec()),
        ("/usr/share/v6/empty", Vec::new()),
        // Sizes 1, 2, 3 and an odd size over 1 MiB: every padding after the content.
        ("/usr/share/v6/pad1", b"a".to_vec()),
        ("/usr/share/v6/pad2", b"ab".to_vec()),
        ("/usr/share/v6/pad3", b"abc".to_vec()),
        ("/usr/share/v6/big", pattern((1 << 20) + 3, 7)),
        ("/usr/share/v6/linked-a", b"one inode, two names\n".to_vec()),
        ("/usr/share/v6/linked-b", b"one inode, two names\n".to_vec()),
    ]
    .into_iter()
    .collect();
    Content {
        files,
        linked: ["/usr/share/v6/linked-a", "/usr/share/v6/linked-b"],
        symlink: ("/usr/bin/v6-hello-link", "v6-hello"),
        dir: ("/usr/share/v6", 0o750),
    }
}

fn v6_package(c: &Content) -> rpm::Package {
    let mut b = v6_builder("v6-files");
    b.with_dir_entry(FileOptions::dir(c.dir.0).permissions(c.dir.1 as u16))
        .unwrap();
    for (path, bytes) in &c.files {
        let mut o = FileOptions::new(*path);
        if c.linked.contains(path) {
            o = o.hardlink("pair");
        }
        if path.contains("/bin/") {
            o = o.mode(FileMode::regular(0o755));
        }
        b.with_file_contents(bytes.clone(), o).unwrap();
    }
    b.with_symlink(FileOptions::symlink(c.symlink.0, c.symlink.1)).unwrap();
    b.build().unwrap()
}

/// Debian's rpm reads the package: `rpm2archive` makes a tar of its payload
/// (rpm's own stripped-payload reader), unpacked into `dir`.
fn unpack_with_rpm(rpm_file: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let tar = dir.with_extension("tar");
    common::run(
        Command::new("sh")
            .arg("-c")
            .arg("rpm2archive -n < \"$1\" > \"$2\"")
            .arg("sh")
            .arg(rpm_file)
            .arg(&tar),
    );
    common::run(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(dir));
}

/// Compares a tree (a checkout or rpm's unpacking) with the content put in.
fn assert_holds(root: &Path, c: &Content, what: &str) {
    use std::os::unix::fs::MetadataExt as _;
    for (path, want) in &c.files {
        let got = std::fs::read(root.join(&path[1..])).unwrap_or_else(|e| panic!("{what}: {path}: {e}"));
        assert!(
            got == *want,
            "{what}: {path} differs from what the package was built with"
        );
    }
    let [a, b] = c.linked.map(|p| std::fs::metadata(root.join(&p[1..])).unwrap());
    assert_eq!(
        (a.dev(), a.ino()),
        (b.dev(), b.ino()),
        "{what}: the hardlink pair is one file"
    );
    let link = std::fs::read_link(root.join(&c.symlink.0[1..])).unwrap();
    assert_eq!(link, Path::new(c.symlink.1), "{what}: symlink target");
    let dir = std::fs::symlink_metadata(root.join(&c.dir.0[1..])).unwrap();
    assert!(dir.is_dir(), "{what}: {} is a directory", c.dir.0);
}

#[test]
fn v6_packages_compose_into_trees_holding_their_files() {
    let c = content();
    let pkg = v6_package(&c);
    let archive = stripped_archive(
        &pkg,
        &["/usr/bin/v6-hello", "/usr/share/v6/linked-a", "/usr/share/v6/pad1"],
    );
    // The pair's bytes are in the archive once.
    let linked = c.files[c.linked[0]].as_slice();
    let copies = archive.windows(linked.len()).filter(|w| *w == linked).count();
    assert_eq!(copies, 1, "the hardlink pair's content is in the payload once");

    let t = Scratch::new(
        &sample_url(),
        "ref: t/v6\nrepos: [sample, extra]\npackages: [filesystem, setup, v6-files]\nrecommends: false\n",
    );
    common::with_extra_package(&t, pkg);
    let by_rpm = t.path("by-rpm");
    unpack_with_rpm(&t.path("extra/extra-0.rpm"), &by_rpm);
    assert_holds(&by_rpm, &c, "Debian's rpm2archive");

    let out = t.compose_tree("repo", &[], &[]);
    ok_json(&out);
    let repo = t.path("repo");
    let co = t.path("co");
    ostree(&repo, &["checkout", "-U", "t/v6", co.to_str().unwrap()]);
    assert_holds(&co, &c, "the composed tree");
    // Owner and mode come from the header, as for a v4 package.
    let ls = ostree(&repo, &["ls", "t/v6", c.dir.0, "/usr/bin/v6-hello"]);
    assert!(ls.contains("d00750 0 0") && ls.contains("-00755 0 0"), "{ls}");
}

/// One stripped record: the index as written (8 characters) and the bytes after it.
struct Rec {
    index: String,
    data: Vec<u8>,
}

fn rec(index: usize, data: &[u8]) -> Rec {
    Rec {
        index: format!("{index:08x}"),
        data: data.to_vec(),
    }
}

/// A stripped archive as rpm writes one (lib/cpio.cc): `07070X`, the index,
/// padding to 4, the content, padding to 4; then the newc trailer.
fn write_stripped(recs: &[Rec]) -> Vec<u8> {
    let pad = |out: &mut Vec<u8>| out.resize(out.len().next_multiple_of(4), 0);
    let mut out = Vec::new();
    for r in recs {
        out.extend_from_slice(b"07070X");
        out.extend_from_slice(r.index.as_bytes());
        pad(&mut out);
        out.extend_from_slice(&r.data);
        pad(&mut out);
    }
    out.extend_from_slice(b"070701");
    for (k, v) in [0u32; 13].iter().enumerate() {
        let v = match k {
            4 => 1,
            11 => 11,
            _ => *v,
        };
        out.extend_from_slice(format!("{v:08x}").as_bytes());
    }
    out.extend_from_slice(b"TRAILER!!!\0");
    pad(&mut out);
    out
}

/// `pkg` with `archive` as its payload (zstd), every payload digest and size
/// of the v6 header and the signature header recomputed.
fn with_payload(mut pkg: rpm::Package, archive: &[u8]) -> rpm::Package {
    pkg.payload = zstd::encode_all(archive, 3).unwrap();
    let h = |d: &[u8]| hex::encode(d);
    let (p, a) = (&pkg.payload[..], archive);
    let values: BTreeMap<u32, IndexData> = [
        (
            IndexTag::RPMTAG_PAYLOADSHA256,
            IndexData::StringArray(vec![h(&Sha256::digest(p))]),
        ),
        (
            IndexTag::RPMTAG_PAYLOADSHA256ALT,
            IndexData::StringArray(vec![h(&Sha256::digest(a))]),
        ),
        (
            IndexTag::RPMTAG_PAYLOAD_SHA512,
            IndexData::StringTag(h(&Sha512::digest(p))),
        ),
        (
            IndexTag::RPMTAG_PAYLOAD_SHA512_ALT,
            IndexData::StringTag(h(&Sha512::digest(a))),
        ),
        (
            IndexTag::RPMTAG_PAYLOAD_SHA3_256,
            IndexData::StringTag(h(&sha3::Sha3_256::digest(p))),
        ),
        (
            IndexTag::RPMTAG_PAYLOAD_SHA3_256_ALT,
            IndexData::StringTag(h(&sha3::Sha3_256::digest(a))),
        ),
        (IndexTag::RPMTAG_PAYLOADSIZE, IndexData::Int64(vec![p.len() as u64])),
        (IndexTag::RPMTAG_PAYLOADSIZEALT, IndexData::Int64(vec![a.len() as u64])),
    ]
    .into_iter()
    .map(|(t, v)| (t as u32, v))
    .collect();
    let region = IndexTag::RPMTAG_HEADERIMMUTABLE as u32;
    let entries = pkg.metadata.header.get_all_entries().unwrap();
    let mut replaced = 0;
    let entries = entries.into_iter().filter(|(t, _)| *t != region).map(|(t, d)| {
        let d = match values.get(&t) {
            Some(v) => {
                replaced += 1;
                v.clone()
            }
            None => d,
        };
        rpm::HeaderEntry::new(t, d)
    });
    pkg.metadata.header = rpm::Header::from_entries(entries.collect::<Vec<_>>(), IndexTag::RPMTAG_HEADERIMMUTABLE);
    assert_eq!(
        replaced,
        values.len(),
        "the v6 header has every payload digest and size"
    );
    let header_bytes = pkg.metadata.header_bytes().unwrap();
    pkg.metadata.signature = rpm::SignatureHeaderBuilder::new()
        .format(rpm::RpmFormat::V6)
        .calculate_digests(&header_bytes)
        .build()
        .unwrap();
    pkg.verify_digests().unwrap();
    pkg
}

/// The hostile base: [`NEVRA`] in v6, with a directory, two files, a
/// symlink, a hardlink pair and a `%ghost`.
fn hostile_base() -> rpm::Package {
    let mut b = v6_builder("hostile");
    b.with_dir_entry(FileOptions::dir("/usr/share/hostile").permissions(0o755))
        .unwrap()
        .with_file_contents(
            "#!/bin/sh\necho hello\n",
            FileOptions::new("/usr/bin/hello").mode(FileMode::regular(0o755)),
        )
        .unwrap()
        .with_file_contents("data\n", FileOptions::new("/usr/share/hostile/data"))
        .unwrap()
        .with_symlink(FileOptions::symlink("/usr/bin/hello-link", "hello"))
        .unwrap()
        .with_file_contents("linked\n", FileOptions::new("/usr/share/hostile/a").hardlink("ab"))
        .unwrap()
        .with_file_contents("linked\n", FileOptions::new("/usr/share/hostile/b").hardlink("ab"))
        .unwrap()
        .with_ghost(FileOptions::ghost("/var/log/hostile.log"))
        .unwrap();
    b.build().unwrap()
}

/// The base's header file list (path → index) and the records rpm would
/// write for it, in header order.
fn base_records(pkg: &rpm::Package) -> (BTreeMap<String, usize>, Vec<Rec>) {
    let content: BTreeMap<&str, &[u8]> = [
        ("/usr/bin/hello", b"#!/bin/sh\necho hello\n".as_slice()),
        ("/usr/share/hostile/data", b"data\n"),
        ("/usr/bin/hello-link", b"hello"),
        // The pair's bytes follow its last member in header order.
        ("/usr/share/hostile/b", b"linked\n"),
    ]
    .into_iter()
    .collect();
    let mut index = BTreeMap::new();
    let mut recs = Vec::new();
    for (i, f) in pkg.metadata.get_file_entries().unwrap().iter().enumerate() {
        let path = format!("{}{}", f.dirname(), f.basename());
        if !f.flags().contains(rpm::FileFlags::GHOST) {
            recs.push(rec(i, content.get(path.as_str()).copied().unwrap_or_default()));
        }
        index.insert(path, i);
    }
    (index, recs)
}

#[test]
fn the_hostile_base_is_what_rpm_writes() {
    // The hand-written archive equals the rpm crate's own for the base, so the
    // hostile cases differ from a real v6 package by their hostile entry only.
    let pkg = hostile_base();
    let (index, mut recs) = base_records(&pkg);
    // The rpm crate writes files outside hardlink sets first, then the sets
    // (rpm's order too), each part in header order.
    let pair = ["/usr/share/hostile/a", "/usr/share/hostile/b"].map(|p| format!("{:08x}", index[p]));
    recs.sort_by_key(|r| pair.contains(&r.index));
    let ours = write_stripped(&recs);
    assert!(
        stripped_archive(&pkg, &["/usr/bin/hello", "/usr/share/hostile/data"]) == ours,
        "the rpm crate wrote another archive"
    );
    // And it imports, rewritten by `with_payload`.
    let tmp = tempfile::tempdir().unwrap();
    let rpm_file = tmp.path().join("base.rpm");
    with_payload(pkg, &ours).write_file(&rpm_file).unwrap();
    let users = arbor::pkgcache::Users::root_only();
    arbor::pkgcache::import_all(&tmp.path().join("repo"), &[rpm_file], &users, 1).unwrap();
}

#[test]
fn hostile_stripped_payloads_are_refused() {
    type Edit = fn(&BTreeMap<String, usize>, &mut Vec<Rec>);
    let cases: [(&str, Edit, &[&str]); 8] = [
        (
            "an index past the header's files",
            |_, r| r.insert(1, rec(0x2a, b"pwned\n")),
            &["payload entry #2 refers to file #42, but the header lists 7 files"],
        ),
        (
            "an index that is not hex",
            |_, r| r[0].index = "0000000g".into(),
            &["payload entry #1 is stripped, but its file index \"0000000g\" is not 8 hex digits"],
        ),
        (
            "a file twice",
            |i, r| r.push(rec(i["/usr/share/hostile/data"], b"data\n")),
            &["payload entry /usr/share/hostile/data (file #", "appears twice"],
        ),
        (
            "a %ghost",
            |i, r| r.push(rec(i["/var/log/hostile.log"], b"")),
            &[
                "refers to /var/log/hostile.log (file #",
                "a %ghost, which a payload never holds",
            ],
        ),
        (
            "a file missing",
            |i, r| r.retain(|x| x.index != format!("{:08x}", i["/usr/share/hostile/data"])),
            &["/usr/share/hostile/data: listed in the header but missing from the payload"],
        ),
        (
            "more bytes than the header's size",
            |i, r| {
                let d = i["/usr/share/hostile/data"];
                r.iter_mut().find(|x| x.index == format!("{d:08x}")).unwrap().data = b"data\npwned\n".to_vec();
            },
            &[
                "reading the payload after /usr/share/hostile/data",
                "(file #5 before it may hold another size than the header's 5 bytes)",
            ],
        ),
        (
            "fewer bytes than the header's size",
            |i, r| {
                let d = i["/usr/share/hostile/data"];
                r.iter_mut().find(|x| x.index == format!("{d:08x}")).unwrap().data = b"dat".to_vec();
            },
            &["/usr/share/hostile/data: content digest mismatch"],
        ),
        (
            "a hardlink set's bytes with its first member",
            |i, r| {
                let [a, b] = ["/usr/share/hostile/a", "/usr/share/hostile/b"].map(|p| format!("{:08x}", i[p]));
                for x in r.iter_mut() {
                    if x.index == a {
                        x.data = b"linked\n".to_vec();
                    } else if x.index == b {
                        x.data.clear();
                    }
                }
            },
            &["after /usr/share/hostile/a", "another size than the header's 0 bytes"],
        ),
    ];
    let env = Env::new();
    for (what, edit, needles) in cases {
        eprintln!("case: {what}");
        let pkg = hostile_base();
        let (index, mut recs) = base_records(&pkg);
        edit(&index, &mut recs);
        let rpm_file = env.dir().join(format!("{NEVRA}.rpm"));
        with_payload(pkg, &write_stripped(&recs)).write_file(&rpm_file).unwrap();
        env.refuse(&rpm_file, Found::WhileStreaming, needles);
    }
}

#[test]
fn account_files_are_read_from_stripped_payloads() {
    let mut b = v6_builder("accounts");
    b.with_file_contents("x\n", FileOptions::new("/aaa/first"))
        .unwrap()
        .with_file_contents(
            "root:x:0:0:root:/root:/bin/sh\ndaemon:x:2:2::/:/sbin/nologin\n",
            FileOptions::new("/etc/passwd"),
        )
        .unwrap()
        .with_file_contents("root:x:0:\ndaemon:x:2:\n", FileOptions::new("/etc/group"))
        .unwrap();
    let pkg = b.build().unwrap();
    stripped_archive(&pkg, &["/etc/passwd", "/aaa/first"]);
    let tmp = tempfile::tempdir().unwrap();
    let rpm_file: PathBuf = tmp.path().join("accounts.rpm");
    pkg.write_file(&rpm_file).unwrap();
    let users = users_from_packages(&[rpm_file]).unwrap();
    assert!(format!("{users:?}").contains("\"daemon\": 2"), "{users:?}");
}
