//! Hostile packages against the package cache import. Each RPM is built here:
//! a normal package from `rpm::PackageBuilder`, then its payload replaced by a
//! hand-written cpio archive (and, where needed, its header edited), with the
//! payload digests, header and signature header recomputed, so the hostile
//! entry is the only thing wrong with it. After every refused import the
//! repository's refs and objects, and everything outside it, are unchanged.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use arbor::pkgcache::{Users, import_all};
use rpm::{FileMode, FileOptions, IndexData, IndexTag, PackageBuilder};
use sha2::{Digest, Sha256, Sha512};

use crate::common::{self, peak};

pub(super) const NEVRA: &str = "hostile-1.0-1.noarch";

/// One cpio newc record.
#[derive(Clone)]
struct Cpio {
    name: Vec<u8>,
    mode: u32,
    ino: u32,
    nlink: u32,
    data: Vec<u8>,
}

fn cpio_archive(entries: &[Cpio]) -> Vec<u8> {
    let mut out = Vec::new();
    write_cpio(&mut out, entries, None).unwrap();
    out
}

/// Writes the records and the trailer to `out`; the record named `zeros.0`
/// gets `zeros.1` zero bytes as its content instead of its data, streamed.
fn write_cpio(out: &mut dyn Write, entries: &[Cpio], zeros: Option<(&[u8], u64)>) -> std::io::Result<()> {
    let trailer = Cpio {
        name: b"TRAILER!!!".to_vec(),
        mode: 0,
        ino: 0,
        nlink: 1,
        data: Vec::new(),
    };
    let pad = |n: u64| vec![0u8; ((4 - n % 4) % 4) as usize];
    for e in entries.iter().chain([&trailer]) {
        let size = match zeros {
            Some((name, n)) if name == e.name.as_slice() => n,
            _ => e.data.len() as u64,
        };
        let fields = [
            e.ino,
            e.mode,
            0,
            0,
            e.nlink,
            0,
            u32::try_from(size).unwrap(),
            0,
            0,
            0,
            0,
            e.name.len() as u32 + 1,
            0,
        ];
        let mut head = b"070701".to_vec();
        for f in fields {
            head.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        head.extend_from_slice(&e.name);
        head.push(0);
        let len = head.len() as u64;
        head.extend(pad(len));
        out.write_all(&head)?;
        if size == e.data.len() as u64 {
            out.write_all(&e.data)?;
        } else {
            let chunk = vec![0u8; 1 << 20];
            let mut left = size;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                out.write_all(&chunk[..n])?;
                left -= n as u64;
            }
        }
        out.write_all(&pad(size))?;
    }
    Ok(())
}

/// A change to the header's (tag, value) entries.
type HeaderEdit = Box<dyn FnOnce(&mut Vec<(u32, IndexData)>)>;

/// A package under construction: the built base, its payload as cpio records
/// (in payload order), and edits to its header entries.
struct Hostile {
    pkg: rpm::Package,
    cpio: Vec<Cpio>,
    edits: Vec<HeaderEdit>,
}

impl Hostile {
    /// The base package plus whatever `extra` adds to the builder.
    fn new(extra: impl FnOnce(&mut PackageBuilder)) -> Hostile {
        let mut b = PackageBuilder::new("hostile", "1.0", "MIT", "noarch", "hostile package");
        b.release("1").using_config(
            rpm::BuildConfig::v4()
                .compression(rpm::CompressionWithLevel::Zstd(3))
                .source_date(1_700_000_000u32),
        );
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
            .unwrap();
        extra(&mut b);
        let pkg = b.build().unwrap();
        let mut cpio = Vec::new();
        for (i, f) in pkg.files().unwrap().enumerate() {
            let f = f.unwrap();
            if f.metadata.flags().contains(rpm::FileFlags::GHOST) {
                continue;
            }
            let path = f.metadata.path().to_string_lossy().into_owned();
            cpio.push(Cpio {
                name: format!(".{path}").into_bytes(),
                mode: u32::from(f.metadata.mode().raw_mode()),
                ino: i as u32 + 1,
                nlink: 1,
                data: f.content().unwrap_or_default().to_vec(),
            });
        }
        Hostile {
            pkg,
            cpio,
            edits: Vec::new(),
        }
    }

    /// The cpio record of `path` (`/usr/bin/hello`).
    fn record(&mut self, path: &str) -> &mut Cpio {
        let name = format!(".{path}").into_bytes();
        self.cpio.iter_mut().find(|c| c.name == name).unwrap()
    }

    /// Edits the header's entries before digests are recomputed.
    fn edit_header(&mut self, f: impl FnOnce(&mut Vec<(u32, IndexData)>) + 'static) {
        self.edits.push(Box::new(f));
    }

    /// The finished package: payload from the cpio records, compressed with
    /// zstd like the base, payload digests, header and signature recomputed.
    fn finish(self) -> rpm::Package {
        let archive = cpio_archive(&self.cpio);
        let payload = zstd::encode_all(&archive[..], 3).unwrap();
        self.finish_with(payload, hex::encode(Sha256::digest(&archive)))
    }

    /// The payload streamed through zstd, with the record of `path` holding
    /// `zeros` zero bytes (its header entry unchanged), and `after` appended
    /// to the compressed payload; digests recomputed over all of it.
    fn finish_streamed(self, path: &str, zeros: u64, after: &[u8]) -> rpm::Package {
        struct Hashing<W>(W, Sha256);
        impl<W: Write> Write for Hashing<W> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let n = self.0.write(buf)?;
                Digest::update(&mut self.1, &buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                self.0.flush()
            }
        }
        let name = format!(".{path}").into_bytes();
        let mut w = Hashing(zstd::Encoder::new(Vec::new(), 3).unwrap(), Sha256::new());
        write_cpio(&mut w, &self.cpio, Some((&name, zeros))).unwrap();
        let mut payload = w.0.finish().unwrap();
        payload.extend_from_slice(after);
        self.finish_with(payload, hex::encode(w.1.finalize()))
    }

    /// The package with `payload` (whose archive hashes to `sha256_alt`).
    fn finish_with(self, payload: Vec<u8>, sha256_alt: String) -> rpm::Package {
        let mut pkg = self.pkg;
        pkg.payload = payload;
        let sha256 = hex::encode(Sha256::digest(&pkg.payload));
        let sha512 = hex::encode(Sha512::digest(&pkg.payload));
        let mut entries = pkg.metadata.header.get_all_entries().unwrap();
        for edit in self.edits {
            edit(&mut entries);
        }
        for (tag, data) in entries.iter_mut() {
            let new = if *tag == IndexTag::RPMTAG_PAYLOADSHA256 as u32 {
                &sha256
            } else if *tag == IndexTag::RPMTAG_PAYLOADSHA256ALT as u32 {
                &sha256_alt
            } else if *tag == IndexTag::RPMTAG_PAYLOAD_SHA512 as u32 {
                &sha512
            } else {
                continue;
            };
            *data = match data {
                IndexData::StringArray(_) => IndexData::StringArray(vec![new.clone()]),
                _ => IndexData::StringTag(new.clone()),
            };
        }
        let region = IndexTag::RPMTAG_HEADERIMMUTABLE as u32;
        pkg.metadata.header = rpm::Header::from_entries(
            entries
                .into_iter()
                .filter(|(t, _)| *t != region)
                .map(|(t, d)| rpm::HeaderEntry::new(t, d)),
            IndexTag::RPMTAG_HEADERIMMUTABLE,
        );
        resign(&mut pkg);
        pkg
    }

    fn write(self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{NEVRA}.rpm"));
        self.finish().write_file(&path).unwrap();
        path
    }
}

/// Recomputes the signature header (header digests, sizes) for the current header and payload.
fn resign(pkg: &mut rpm::Package) {
    let header_bytes = pkg.metadata.header_bytes().unwrap();
    pkg.metadata.signature = rpm::SignatureHeaderBuilder::new()
        .set_content_length(header_bytes.len() as u64 + pkg.payload.len() as u64)
        .calculate_digests(&header_bytes)
        .build()
        .unwrap();
}

/// Replaces a string-array header value.
fn edit_strings(entries: &mut [(u32, IndexData)], tag: IndexTag, f: impl Fn(&mut Vec<String>)) {
    for (t, d) in entries.iter_mut() {
        if *t == tag as u32
            && let IndexData::StringArray(v) = d
        {
            f(v);
        }
    }
}

/// A repository holding one good package, a canary directory beside it, and
/// the state both must keep through a refused import.
pub(super) struct Env {
    tmp: tempfile::TempDir,
    repo: PathBuf,
    canary: PathBuf,
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    refs: String,
    objects: Vec<PathBuf>,
    canary: BTreeMap<PathBuf, Vec<u8>>,
}

/// When the import notices the hostile entry.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Found {
    /// From the header or the payload digest: nothing may even be staged.
    BeforeStreaming,
    /// While streaming the payload: staged objects are discarded with the transaction.
    WhileStreaming,
}

impl Env {
    pub(super) fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let canary = tmp.path().join("canary");
        std::fs::create_dir_all(canary.join("sub")).unwrap();
        std::fs::write(canary.join("keep"), "canary\n").unwrap();
        std::fs::write(canary.join("sub/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let good_dir = tmp.path().join("good");
        std::fs::create_dir(&good_dir).unwrap();
        let good = Hostile::new(|_| {}).write(&good_dir);
        import_all(&repo, &[good], &Users::root_only(), 1).unwrap();
        Env { tmp, repo, canary }
    }

    pub(super) fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// `canary` without its leading slash, for paths that climb out with `..`.
    fn canary_rel(&self) -> String {
        self.canary.to_string_lossy().trim_start_matches('/').to_string()
    }

    fn ostree(&self, args: &[&str]) -> String {
        let mut c = Command::new("ostree");
        c.arg(format!("--repo={}", self.repo.display())).args(args);
        common::run(&mut c)
    }

    fn snapshot(&self) -> Snapshot {
        let mut objects: Vec<PathBuf> = walk(&self.repo.join("objects")).into_keys().collect();
        objects.sort();
        Snapshot {
            refs: self.ostree(&["refs"]),
            objects,
            canary: walk(&self.canary),
        }
    }

    /// Objects in libostree's staging directories (an aborted transaction's
    /// directory stays, to be resumed by the next transaction).
    fn staged(&self) -> Vec<PathBuf> {
        walk(&self.repo.join("tmp"))
            .into_iter()
            .filter(|(p, v)| p.components().count() > 1 && p.to_string_lossy().starts_with("staging-") && v != b"<dir>")
            .map(|(p, _)| p)
            .collect()
    }

    /// Imports `rpm`, which must fail with an error naming the package and
    /// containing every one of `needles`; then checks nothing changed.
    pub(super) fn refuse(&self, rpm: &Path, found: Found, needles: &[&str]) -> String {
        let before = self.snapshot();
        let staged_before = self.staged();
        let err = import_all(&self.repo, &[rpm.to_path_buf()], &Users::root_only(), 1)
            .err()
            .unwrap_or_else(|| panic!("importing {} should fail", rpm.display()));
        let msg = format!("{err:#}");
        eprintln!("refused as expected: {msg}");
        assert!(msg.contains(NEVRA), "the error names the package: {msg}");
        for n in needles {
            assert!(msg.contains(n), "the error should contain {n:?}: {msg}");
        }
        assert_eq!(
            self.snapshot(),
            before,
            "a refused import changed the repository or the canary"
        );
        if found == Found::BeforeStreaming {
            assert_eq!(
                self.staged(),
                staged_before,
                "objects were staged before the package was checked"
            );
        }
        self.ostree(&["fsck"]);
        for name in ["pwned", "arbor-hostile"] {
            for dir in [Path::new("/etc"), Path::new("/tmp"), Path::new("/"), self.dir()] {
                assert!(!dir.join(name).exists(), "{} exists", dir.join(name).display());
            }
        }
        msg
    }
}

/// Every file and symlink beneath `dir` (relative path → content or target).
fn walk(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if md.is_dir() {
                out.insert(rel, b"<dir>".to_vec());
                stack.push(p);
            } else if md.is_symlink() {
                out.insert(
                    rel,
                    std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes(),
                );
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn dotdot_components_are_refused() {
    let env = Env::new();
    let mut h = Hostile::new(|_| {});
    // /usr/share/hostile/data → /usr/share/hostile/../../../…/<canary>/pwned
    let climb = format!("/usr/share/hostile/{}{}/", "../".repeat(16), env.canary_rel());
    let (from, to) = ("/usr/share/hostile/".to_string(), climb.clone());
    h.edit_header(move |e| {
        edit_strings(e, IndexTag::RPMTAG_DIRNAMES, |v| {
            v.iter_mut().filter(|d| **d == from).for_each(|d| d.clone_from(&to))
        });
        edit_strings(e, IndexTag::RPMTAG_BASENAMES, |v| {
            v.iter_mut().filter(|b| *b == "data").for_each(|b| *b = "pwned".into())
        });
    });
    h.record("/usr/share/hostile/data").name = format!(".{climb}pwned").into_bytes();
    let rpm = h.write(env.dir());
    env.refuse(
        &rpm,
        Found::BeforeStreaming,
        &["\"..\" is not allowed", "/usr/share/hostile/../"],
    );
}

#[test]
fn absolute_base_names_that_escape_are_refused() {
    let env = Env::new();
    let mut h = Hostile::new(|_| {});
    // rpm joins dirname and basename; an absolute basename would replace the directory.
    let target = format!("{}/pwned", env.canary.display());
    let t = target.clone();
    h.edit_header(move |e| {
        edit_strings(e, IndexTag::RPMTAG_BASENAMES, |v| {
            v.iter_mut().filter(|b| *b == "data").for_each(|b| b.clone_from(&t))
        });
    });
    h.record("/usr/share/hostile/data").name = format!(".{target}").into_bytes();
    let rpm = h.write(env.dir());
    env.refuse(&rpm, Found::BeforeStreaming, &["contains a slash", &target]);
}

#[test]
fn paths_through_a_symlink_of_the_package_are_refused() {
    let env = Env::new();
    let canary = env.canary.join("sub").to_string_lossy().into_owned();
    let h = Hostile::new(|b| {
        // lib -> <canary>/sub, then lib/passwd
        b.with_symlink(FileOptions::symlink("/usr/lib/hostile-lib", canary))
            .unwrap()
            .with_file_contents("pwned\n", FileOptions::new("/usr/lib/hostile-lib/passwd"))
            .unwrap();
    });
    let rpm = h.write(env.dir());
    env.refuse(
        &rpm,
        Found::BeforeStreaming,
        &[
            "/usr/lib/hostile-lib/passwd",
            "parent /usr/lib/hostile-lib is a symlink",
        ],
    );
}

#[test]
fn payload_entries_not_in_the_header_are_refused() {
    let env = Env::new();
    let mut h = Hostile::new(|_| {});
    let name = format!("./{}/pwned", env.canary_rel());
    h.cpio.insert(
        1,
        Cpio {
            name: name.clone().into_bytes(),
            mode: 0o100644,
            ino: 99,
            nlink: 1,
            data: b"pwned\n".to_vec(),
        },
    );
    let rpm = h.write(env.dir());
    env.refuse(
        &rpm,
        Found::WhileStreaming,
        &[&name, "not listed in the package header"],
    );
}

#[test]
fn hardlinks_to_paths_outside_the_package_are_refused() {
    let env = Env::new();
    let mut h = Hostile::new(|_| {});
    // A regular file that names a link target: a hardlink to a host file, tar style.
    let target = format!("{}/sub/passwd", env.canary.display());
    let files = h.pkg.metadata.get_file_entries().unwrap();
    let idx = files.iter().position(|f| f.basename() == "data").unwrap();
    let t = target.clone();
    h.edit_header(move |e| {
        edit_strings(e, IndexTag::RPMTAG_FILELINKTOS, |v| v[idx].clone_from(&t));
    });
    let rec = h.record("/usr/share/hostile/data");
    rec.nlink = 2;
    let rpm = h.write(env.dir());
    env.refuse(
        &rpm,
        Found::BeforeStreaming,
        &["/usr/share/hostile/data", "link target", &target],
    );
}

#[test]
fn device_nodes_and_fifos_become_tmpfiles_lines() {
    let env = Env::new();
    let h = Hostile::new(|b| {
        b.with_special_file(FileOptions::character_device("/dev/arbor-hostile-null", 1, 3).permissions(0o666))
            .unwrap()
            .with_special_file(FileOptions::block_device("/dev/arbor-hostile-loop", 7, 0).permissions(0o660))
            .unwrap()
            .with_special_file(FileOptions::fifo("/run/arbor-hostile.fifo").permissions(0o600))
            .unwrap();
    });
    let rpm = h.write(env.dir());
    let canary_before = env.snapshot().canary;
    let out = import_all(&env.repo, &[rpm], &Users::root_only(), 1).unwrap();
    let r = &out[0].refname;
    assert!(out[0].imported_now);
    let lines = env.ostree(&["show", "--print-metadata-key=arbor.tmpfiles", r]);
    for want in [
        "c /dev/arbor-hostile-null 0666 0 0 - 1:3",
        "b /dev/arbor-hostile-loop 0660 0 0 - 7:0",
        "p /run/arbor-hostile.fifo 0600 0 0 -",
    ] {
        assert!(lines.contains(want), "arbor.tmpfiles should contain {want:?}: {lines}");
    }
    let tree = env.ostree(&["ls", "-R", r]);
    assert!(
        !tree.contains("arbor-hostile"),
        "special files must not be in the tree:\n{tree}"
    );
    assert!(tree.contains("/usr/bin/hello"), "{tree}");
    env.ostree(&["fsck"]);
    assert_eq!(env.snapshot().canary, canary_before);
    for p in [
        "/dev/arbor-hostile-null",
        "/dev/arbor-hostile-loop",
        "/run/arbor-hostile.fifo",
    ] {
        assert!(!Path::new(p).exists(), "{p} was created on the host");
    }
}

#[test]
fn sockets_are_refused() {
    let env = Env::new();
    let h = Hostile::new(|b| {
        b.with_special_file(FileOptions::socket("/run/arbor-hostile.sock"))
            .unwrap();
    });
    let rpm = h.write(env.dir());
    env.refuse(&rpm, Found::BeforeStreaming, &["/run/arbor-hostile.sock", "sockets"]);
}

#[test]
fn nul_bytes_in_payload_names_are_refused() {
    let env = Env::new();
    let mut h = Hostile::new(|_| {});
    // C extractors stop at the NUL; everything after it is what a naive one would miss.
    let mut name = b"./usr/bin/hello\0/../../../".to_vec();
    name.extend_from_slice(env.canary_rel().as_bytes());
    name.extend_from_slice(b"/pwned");
    h.record("/usr/bin/hello").name = name;
    let rpm = h.write(env.dir());
    env.refuse(&rpm, Found::WhileStreaming, &["./usr/bin/hello\\x00/../", "NUL byte"]);
}

#[test]
fn header_names_that_are_not_utf8_are_refused() {
    let env = Env::new();
    let placeholder = "Q7Z9";
    let mut h = Hostile::new(|b| {
        b.with_file_contents("x\n", FileOptions::new(format!("/usr/bin/hello-{placeholder}")))
            .unwrap();
    });
    let bad: &[u8] = b"\xff\xfe\xfd\xfc";
    let rec = h.record(&format!("/usr/bin/hello-{placeholder}"));
    rec.name = [b"./usr/bin/hello-".as_slice(), bad].concat();
    let pkg = h.finish();
    // Header strings cannot hold invalid UTF-8 before serialization: patch the bytes.
    let mut bytes = Vec::new();
    pkg.write(&mut bytes).unwrap();
    let off = pkg.metadata.get_package_segment_offsets();
    let region = &mut bytes[off.header as usize..off.payload as usize];
    let at = region
        .windows(placeholder.len())
        .position(|w| w == placeholder.as_bytes())
        .unwrap();
    region[at..at + bad.len()].copy_from_slice(bad);
    let mut pkg = rpm::Package::parse(&mut &bytes[..]).unwrap();
    resign(&mut pkg);
    let rpm = env.dir().join(format!("{NEVRA}.rpm"));
    pkg.write_file(&rpm).unwrap();
    env.refuse(
        &rpm,
        Found::BeforeStreaming,
        &["/usr/bin/hello-\\xff\\xfe\\xfd\\xfc", "not valid UTF-8"],
    );
}

#[test]
fn payload_names_that_are_not_utf8_are_refused() {
    let env = Env::new();
    let mut h = Hostile::new(|_| {});
    h.record("/usr/bin/hello").name = b"./usr/bin/hel\xc0lo".to_vec();
    let rpm = h.write(env.dir());
    env.refuse(
        &rpm,
        Found::WhileStreaming,
        &["./usr/bin/hel\\xc0lo", "not valid UTF-8"],
    );
}

#[test]
fn duplicate_payload_entries_are_refused() {
    let env = Env::new();
    let mut h = Hostile::new(|_| {});
    let dup = h.record("/usr/bin/hello").clone();
    h.cpio.push(dup);
    let rpm = h.write(env.dir());
    env.refuse(&rpm, Found::WhileStreaming, &["./usr/bin/hello", "appears twice"]);
}

#[test]
fn header_entries_missing_from_the_payload_are_refused() {
    let env = Env::new();
    let mut h = Hostile::new(|_| {});
    h.cpio.retain(|c| c.name != b"./usr/share/hostile/data");
    let rpm = h.write(env.dir());
    env.refuse(
        &rpm,
        Found::WhileStreaming,
        &["/usr/share/hostile/data", "missing from the payload"],
    );
}

#[test]
fn file_contents_that_do_not_match_the_header_digest_are_refused() {
    let env = Env::new();
    let mut h = Hostile::new(|_| {});
    h.record("/usr/bin/hello").data = b"#!/bin/sh\necho pwned\n".to_vec();
    let rpm = h.write(env.dir());
    env.refuse(
        &rpm,
        Found::WhileStreaming,
        &["/usr/bin/hello", "content digest mismatch"],
    );
}

/// One more file, so the header (and the cache ref) differs from the good package's.
fn other_header(b: &mut PackageBuilder) {
    b.with_file_contents("other\n", FileOptions::new("/usr/share/hostile/other"))
        .unwrap();
}

#[test]
fn payloads_that_do_not_match_the_header_digest_are_refused() {
    let env = Env::new();
    // (A header of its own: the good package's header is cached already.)
    let mut pkg = Hostile::new(other_header).finish();
    // Same archive, compressed differently: only the payload digest is wrong.
    let mut archive = Vec::new();
    zstd::stream::copy_decode(&pkg.payload[..], &mut archive).unwrap();
    pkg.payload = zstd::encode_all(&archive[..], 19).unwrap();
    resign(&mut pkg);
    let rpm = env.dir().join(format!("{NEVRA}.rpm"));
    pkg.write_file(&rpm).unwrap();
    env.refuse(&rpm, Found::BeforeStreaming, &["payload SHA-256 digest mismatch"]);
}

#[test]
fn payload_bytes_appended_after_the_archive_are_refused() {
    let env = Env::new();
    let pkg = Hostile::new(other_header).finish();
    let rpm = env.dir().join(format!("{NEVRA}.rpm"));
    pkg.write_file(&rpm).unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&rpm).unwrap();
    f.write_all(b"trailing bytes the decompressor never reads").unwrap();
    drop(f);
    env.refuse(&rpm, Found::BeforeStreaming, &["payload SHA-256 digest mismatch"]);
}

/// An owner no account of the import names imports as root without its
/// setuid bit: a hostile package cannot plant a setuid-root file in the cache
/// (the compose then applies the real owner or names it: compose::owners).
#[test]
fn unknown_owners_import_as_root_without_setuid() {
    let env = Env::new();
    let h = Hostile::new(|b| {
        b.with_file_contents(
            "x\n",
            FileOptions::new("/usr/bin/arbor-hostile-owned")
                .mode(FileMode::regular(0o6755))
                .user("nosuchuser")
                .group("nosuchgroup"),
        )
        .unwrap();
    });
    let rpm = h.write(env.dir());
    let repo = env.dir().join("owners-repo");
    let imp = import_all(&repo, std::slice::from_ref(&rpm), &Users::root_only(), 1)
        .unwrap()
        .remove(0);
    let ls = common::ostree(&repo, &["ls", &imp.refname, "/usr/bin/arbor-hostile-owned"]);
    assert!(ls.starts_with("-00755 0 0 "), "{ls}");
}

/// Runs this module's test `child` in a child process of this test binary
/// with `env` set, watched (peak memory, output, a kill-timeout).
fn in_child(child: &str, env: &[(&str, &Path)]) -> peak::Watched {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        &common::test_name(module_path!(), child),
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        c.env(k, v);
    }
    peak::watch(&mut c, std::time::Duration::from_secs(300))
}

/// In a child process only: reads the users of the package in
/// `ARBOR_HOSTILE_ACCOUNTS` and exits 0 (printing them) or 1 (printing why).
#[test]
fn child_read_accounts() {
    let Some(rpm) = std::env::var_os("ARBOR_HOSTILE_ACCOUNTS") else {
        return;
    };
    match arbor::pkgcache::users_from_packages(&[PathBuf::from(rpm)]) {
        Ok(u) => {
            println!("users: {u:?}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("refused: {e:#}");
            std::process::exit(1)
        }
    }
}

/// In a child process only: imports the package in `ARBOR_HOSTILE_IMPORT`
/// into the repository in `ARBOR_HOSTILE_REPO`; exits 0, or 1 printing why.
#[test]
fn child_import() {
    let (Some(rpm), Some(repo)) = (
        std::env::var_os("ARBOR_HOSTILE_IMPORT"),
        std::env::var_os("ARBOR_HOSTILE_REPO"),
    ) else {
        return;
    };
    match import_all(Path::new(&repo), &[PathBuf::from(rpm)], &Users::root_only(), 1) {
        Ok(i) => {
            println!("imported: {i:?}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("refused: {e:#}");
            std::process::exit(1)
        }
    }
}

/// A package shipping `/etc/passwd` and `/etc/group` (and `extra`).
fn with_accounts(b: &mut PackageBuilder) {
    b.with_file_contents(
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:2:2::/:/sbin/nologin\n",
        FileOptions::new("/etc/passwd"),
    )
    .unwrap()
    .with_file_contents("root:x:0:\ndaemon:x:2:\n", FileOptions::new("/etc/group"))
    .unwrap();
}

#[test]
fn account_files_are_read_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    // A good one first: the reader still finds both files.
    let good = Hostile::new(with_accounts).write(tmp.path());
    let w = in_child("child_read_accounts", &[("ARBOR_HOSTILE_ACCOUNTS", &good)]);
    w.check_peak("reading the accounts of a good package");
    assert_eq!(w.code, Some(0), "{}", w.stderr);
    assert!(w.stdout.contains("\"daemon\": 2"), "{}", w.stdout);

    // The payload's /etc/passwd is 600 MiB of zeros (the header says 59 bytes):
    // a package of kilobytes.
    let h = Hostile::new(with_accounts);
    let pkg = h.finish_streamed("/etc/passwd", 600 << 20, &[]);
    let rpm = tmp.path().join(format!("big-passwd-{NEVRA}.rpm"));
    pkg.write_file(&rpm).unwrap();
    eprintln!("package of {} bytes", std::fs::metadata(&rpm).unwrap().len());
    let w = in_child("child_read_accounts", &[("ARBOR_HOSTILE_ACCOUNTS", &rpm)]);
    w.check_peak("reading the accounts of a package with a 600 MiB /etc/passwd");
    assert_eq!(w.code, Some(1), "must be refused:\n{}{}", w.stdout, w.stderr);
    for want in [NEVRA, "/etc/passwd", "629145600 bytes"] {
        assert!(w.stderr.contains(want), "want {want:?} in:\n{}", w.stderr);
    }
}

/// One zstd frame that decompresses to `gib` GiB of zeros (RLE blocks of
/// 128 KiB, four bytes each) and then ends in a block of the reserved type,
/// which no decoder accepts: whoever decompresses it fails.
fn zeros_then_corrupt_frame(gib: u64) -> Vec<u8> {
    let block = 128u32 << 10;
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3];
    let rle = (block << 3) | (1 << 1);
    for _ in 0..(gib << 30) / u64::from(block) {
        f.extend_from_slice(&rle.to_le_bytes()[..3]);
        f.push(0);
    }
    let reserved_last: u32 = (3 << 1) | 1;
    f.extend_from_slice(&reserved_last.to_le_bytes()[..3]);
    f
}

#[test]
fn payload_after_the_cpio_trailer_is_not_decompressed() {
    let env = Env::new();
    // 64 GiB of zeros after the archive's trailer, covered by the payload
    // digest: rpm stops reading at the trailer, and so must the import.
    let pkg = Hostile::new(other_header).finish_streamed("/none", 0, &zeros_then_corrupt_frame(64));
    let rpm = env.dir().join(format!("{NEVRA}.rpm"));
    pkg.write_file(&rpm).unwrap();
    eprintln!("package of {} bytes", std::fs::metadata(&rpm).unwrap().len());
    let w = in_child(
        "child_import",
        &[("ARBOR_HOSTILE_IMPORT", &rpm), ("ARBOR_HOSTILE_REPO", &env.repo)],
    );
    w.check_peak("importing a package with 64 GiB of zstd after the cpio trailer");
    assert_eq!(w.code, Some(0), "must import:\n{}", w.stderr);
    env.ostree(&["fsck"]);
    assert!(env.ostree(&["refs"]).lines().count() == 2, "{}", env.ostree(&["refs"]));

    // The bytes after the trailer are still covered by the payload digest.
    let mut bad = std::fs::read(&rpm).unwrap();
    let last = bad.len() - 10;
    bad[last] ^= 1;
    let rpm2 = env.dir().join(format!("flipped-{NEVRA}.rpm"));
    std::fs::write(&rpm2, &bad).unwrap();
    // (Into a repository of its own: the good copy's header is cached in env's.)
    let err = import_all(&env.dir().join("repo2"), &[rpm2], &Users::root_only(), 1).unwrap_err();
    assert!(
        format!("{err:#}").contains("payload SHA-256 digest mismatch"),
        "{err:#}"
    );
}

/// A package of `n` one-line files under `/aaa` (before `/etc` in payload
/// order) and then `/etc/passwd` and `/etc/group`. The cpio records are made
/// from the header's own list: `rpm::Package::files` is quadratic.
fn many_files_then_accounts(dir: &Path, n: usize) -> PathBuf {
    let mut b = PackageBuilder::new("hostile", "1.0", "MIT", "noarch", "hostile package");
    b.release("1").using_config(
        rpm::BuildConfig::v4()
            .compression(rpm::CompressionWithLevel::Zstd(3))
            .source_date(1_700_000_000u32),
    );
    for i in 0..n {
        b.with_file_contents("x\n", FileOptions::new(format!("/aaa/f{i:06}")))
            .unwrap();
    }
    with_accounts(&mut b);
    let pkg = b.build().unwrap();
    let contents: BTreeMap<String, Vec<u8>> = [
        (
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\ndaemon:x:2:2::/:/sbin/nologin\n",
        ),
        ("/etc/group", "root:x:0:\ndaemon:x:2:\n"),
    ]
    .into_iter()
    .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
    .collect();
    let cpio = pkg
        .metadata
        .get_file_entries()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let path = format!("{}{}", e.dirname(), e.basename());
            Cpio {
                data: contents.get(&path).cloned().unwrap_or_else(|| b"x\n".to_vec()),
                name: format!(".{path}").into_bytes(),
                mode: u32::from(e.mode().raw_mode()),
                ino: i as u32 + 1,
                nlink: 1,
            }
        })
        .collect();
    let rpm = dir.join(format!("many-{NEVRA}.rpm"));
    Hostile {
        pkg,
        cpio,
        edits: Vec::new(),
    }
    .finish()
    .write_file(&rpm)
    .unwrap();
    rpm
}

#[test]
fn account_files_after_many_files_are_found_without_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let rpm = many_files_then_accounts(tmp.path(), 100_000);
    eprintln!("package of {} bytes", std::fs::metadata(&rpm).unwrap().len());
    // The rpm crate's reader took more than 400 s here; arbor's reads it in one pass.
    let w = in_child("child_read_accounts", &[("ARBOR_HOSTILE_ACCOUNTS", &rpm)]);
    w.check_peak("reading the accounts after 100,000 files");
    assert_eq!(w.code, Some(0), "{}", w.stderr);
    assert!(w.stdout.contains("\"daemon\": 2"), "{}", w.stdout);
}
