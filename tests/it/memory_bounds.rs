//! Memory bounds (issue 17): what the device decodes from untrusted input
//! stays under `peak::LIMIT` (100 MiB; armv7 boards have 512 MiB or less),
//! measured as the peak resident memory of the `arbor` process doing it
//! (`peak::watch`, which prints it). Here: a 300 MiB package downloaded and
//! verified as layering does, package headers declaring huge sizes, and
//! static deltas whose parts are xz bombs, in a bundle and on a server.
//! (Bundle headers: `bundle.rs`; compression bombs in packages: `hostile_rpms.rs`.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::Digest as _;

use crate::common::{self, arbor, archive, delta, http, peak, run};
use crate::device::{self, Mounted};

/// A noarch package `big` holding one file of `size` incompressible bytes,
/// stored uncompressed, so the package file is that big.
fn big_package(dir: &Path, size: usize) -> PathBuf {
    let mut content = vec![0u8; size];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in content.chunks_mut(8) {
        // xorshift64: incompressible, and fast to make.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut b = rpm::PackageBuilder::new("big", "1.0", "MIT", "noarch", "a big package");
    b.release("1").using_config(
        rpm::BuildConfig::v4()
            .compression(rpm::CompressionWithLevel::None)
            .source_date(1_700_000_000u32),
    );
    b.with_file_contents(content, rpm::FileOptions::new("/usr/share/big/blob"))
        .unwrap();
    let path = dir.join("big-1.0-1.noarch.rpm");
    b.build().unwrap().write_file(&path).unwrap();
    path
}

/// `arbor compose resolve --download` of `big` from `server` into a fresh
/// cache: the download and verification layering runs on the device
/// (`layer::resolve` → `compose::resolve::download_packages`).
fn download_watched(server: &http::Server, scratch: &Path) -> peak::Watched {
    std::fs::write(
        scratch.join("t.repo"),
        format!("[big]\nname=big\nbaseurl={}\ngpgcheck=0\n", server.url),
    )
    .unwrap();
    std::fs::write(scratch.join("t.yaml"), "ref: t\nrepos: [big]\npackages: [big]\n").unwrap();
    let cache = scratch.join("cache");
    let _ = std::fs::remove_dir_all(&cache);
    let mut c = arbor();
    c.args(["compose", "resolve", "--arch", "aarch64", "--download", "--cache-dir"])
        .arg(&cache)
        .arg(scratch.join("t.yaml"));
    peak::watch(&mut c, Duration::from_secs(300))
}

/// The cached package files under `cache`.
fn cached_rpms(cache: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(cache.join("packages")) else {
        return Vec::new();
    };
    rd.flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rpm"))
        .collect()
}

#[test]
fn a_300_mib_package_downloads_and_verifies_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let rpm = big_package(&repo, 300 << 20);
    let size = std::fs::metadata(&rpm).unwrap().len();
    assert!(size > 300 << 20, "the package is {size} bytes");
    run(Command::new("createrepo_c").arg("--quiet").arg(&repo));
    let server = http::Server::start(repo.clone());
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();

    let w = download_watched(&server, &scratch);
    w.check_peak(&format!("downloading and verifying a package of {size} bytes"));
    assert_eq!(w.code, Some(0), "{}", w.stderr);
    assert!(w.stdout.contains("downloaded and verified 1 packages"), "{}", w.stdout);
    let cached = cached_rpms(&scratch.join("cache"));
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert_eq!(std::fs::metadata(&cached[0]).unwrap().len(), size);

    // The same package with one payload byte changed, and repository metadata
    // that matches it: only the payload digest in its header can catch it.
    let mut f = std::fs::OpenOptions::new().write(true).open(&rpm).unwrap();
    use std::os::unix::fs::FileExt as _;
    let mut byte = [0u8; 1];
    std::fs::File::open(&rpm)
        .unwrap()
        .read_exact_at(&mut byte, size - 4096)
        .unwrap();
    f.write_all_at(&[byte[0] ^ 0xff], size - 4096).unwrap();
    f.flush().unwrap();
    drop(f);
    run(Command::new("createrepo_c").arg("--quiet").arg(&repo));
    let w = download_watched(&server, &scratch);
    w.check_peak(&format!(
        "downloading a package of {size} bytes whose payload digest is wrong"
    ));
    assert_eq!(w.code, Some(1), "{}", w.stdout);
    assert!(
        w.stderr.contains("big-1.0-1.noarch") && w.stderr.contains("payload SHA-256 digest mismatch"),
        "{}",
        w.stderr
    );
    assert!(w.stderr.contains("the file was removed"), "{}", w.stderr);
    assert!(
        cached_rpms(&scratch.join("cache")).is_empty(),
        "a package that failed verification stays in the cache"
    );
}

/// Byte offsets of the two header intros (magic, entry count, data length)
/// of the package file `bytes`.
fn header_intros(bytes: &[u8]) -> [usize; 2] {
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let sig = 96;
    let sig_len = 16 * be(sig + 8) + be(sig + 12);
    let main = sig + 16 + sig_len + (8 - be(sig + 12) % 8) % 8;
    assert_eq!(bytes[main..main + 3], [0x8e, 0xad, 0xe8], "main header magic");
    [sig, main]
}

/// A good package `declares`, and copies of it whose signature or main
/// header declares huge sizes: (which header, entries, data bytes, file).
fn declaring_packages(dir: &Path) -> (PathBuf, Vec<(&'static str, u32, u32, PathBuf)>) {
    let mut b = rpm::PackageBuilder::new("declares", "1.0", "MIT", "noarch", "huge declared sizes");
    b.release("1")
        .using_config(rpm::BuildConfig::v4().source_date(1_700_000_000u32));
    b.with_file_contents("data\n", rpm::FileOptions::new("/usr/share/declares/data"))
        .unwrap();
    let good = dir.join("good.rpm");
    b.build().unwrap().write_file(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let [sig, main] = header_intros(&bytes);
    // (header, entry count, data length): past rpm's own limits (2^31 entries,
    // 4 GiB of data), and within them but past arbor's 32 MiB (rpm's largest
    // header, 65535 entries and 256 MiB of data).
    let cases: [(&str, usize, u32, u32); 5] = [
        ("signature", sig, 0x8000_0000, 64),
        ("main", main, 0x8000_0000, 64),
        ("main", main, 8, 0xffff_ffff),
        ("main", main, 0xffff, 0x0fff_ffff),
        ("signature", sig, 4, 0x0fff_fff0),
    ];
    let hostile = cases
        .into_iter()
        .map(|(which, at, il, dl)| {
            let mut hostile = bytes.clone();
            hostile[at + 8..at + 12].copy_from_slice(&il.to_be_bytes());
            hostile[at + 12..at + 16].copy_from_slice(&dl.to_be_bytes());
            let path = dir.join(format!("{which}-{il:x}-{dl:x}.rpm"));
            std::fs::write(&path, &hostile).unwrap();
            (which, il, dl, path)
        })
        .collect();
    (good, hostile)
}

/// `w` refused the package `path` whose `which` header declares too much,
/// naming the file and the header, within the bound.
fn refused_header(w: &peak::Watched, what: &str, path: &Path, which: &str) {
    w.check_peak(what);
    assert_eq!(w.code, Some(1), "{}", w.stdout);
    assert!(
        w.stderr.contains(&path.display().to_string()) && w.stderr.contains(&format!("{which} header")),
        "the error names the file and the header: {}",
        w.stderr
    );
    assert!(
        w.stderr.contains("out of range") || w.stderr.contains("too big"),
        "{}",
        w.stderr
    );
    eprintln!("  refused: {}", w.stderr.trim().lines().last().unwrap_or(""));
}

#[test]
fn huge_sizes_in_rpm_headers_are_refused_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let (good, hostile) = declaring_packages(tmp.path());
    let w = peak::watch(arbor().args(["pkg", "info"]).arg(&good), Duration::from_secs(60));
    w.check_peak("arbor pkg info on a good package");
    assert_eq!(w.code, Some(0), "{}", w.stderr);
    for (which, il, dl, path) in hostile {
        let w = peak::watch(arbor().args(["pkg", "info"]).arg(&path), Duration::from_secs(60));
        let what = format!("arbor pkg info, {which} header declaring {il} entries and {dl} bytes");
        refused_header(&w, &what, &path, which);
    }
}

#[test]
#[ignore = "needs root: loop devices and mounts (and arbor image)"]
fn huge_sizes_in_rpm_headers_are_refused_by_arbor_install_in_bounded_memory() {
    common::need_root();
    let t = tempfile::tempdir().unwrap();
    let (_, hostile) = declaring_packages(t.path());
    let img = device::image_copy("qemu-virt-aarch64", t.path());
    let m = Mounted::new(&img);
    let before = device::fingerprint(&m);
    for (which, il, dl, path) in hostile {
        let mut c = arbor();
        c.arg("install").arg(&path).arg("--sysroot").arg(m.arg());
        if let Some(dev) = &m.firmware {
            c.args(["--firmware-partition", dev]);
        }
        let w = peak::watch(&mut c, Duration::from_secs(300));
        let what = format!("arbor install, {which} header declaring {il} entries and {dl} bytes");
        refused_header(&w, &what, &path, which);
    }
    assert_eq!(before, device::fingerprint(&m), "a refused install changed the sysroot");
}

/// What the xz bombs unpack to: ten times the bound.
const BOMB: u64 = 1 << 30;

/// `arbor upgrade --sysroot M EXTRA…`, watched.
fn upgrade_watched(m: &Mounted, extra: &[&str]) -> peak::Watched {
    let mut c = arbor();
    c.arg("upgrade").arg("--sysroot").arg(m.arg());
    if let Some(dev) = &m.firmware {
        c.args(["--firmware-partition", dev]);
    }
    c.args(extra);
    peak::watch(&mut c, Duration::from_secs(600))
}

/// The sysroot's repository passes `ostree fsck`.
fn fsck(m: &Mounted) {
    let out = run(Command::new("ostree")
        .arg("fsck")
        .arg("--repo")
        .arg(m.top.join("ostree/repo")));
    assert!(out.contains("no errors found"), "{out}");
}

#[test]
#[ignore = "needs root: loop devices and mounts (and arbor image)"]
fn a_bundle_whose_delta_parts_are_xz_bombs_is_refused_in_bounded_memory() {
    common::need_root();
    let w = device::world();
    let t = tempfile::tempdir().unwrap();
    let good = t.path().join("v2.arbor");
    run(arbor()
        .args(["bundle", "create", "--repo"])
        .arg(w.path("repo"))
        .args(["--from", &w.v1, "--to", &w.v2, "-o"])
        .arg(&good)
        .arg("--key")
        .arg(w.path("key")));
    // Every inline part of the delta becomes 1 GiB of zeros in xz; the
    // manifest then lists the new delta and is signed again with the bundle
    // key, so the bundle verifies and libostree reaches the decompression.
    let mut members = archive::unpack(&good);
    let at = |name: &str| members.iter().position(|r| r.name == name.as_bytes()).unwrap();
    let (d, m, sig) = (at("delta"), at("manifest.json"), at("manifest.sig"));
    let (bombed, parts) = delta::with_inline_parts(&members[d].data, &delta::xz_bomb(BOMB));
    assert!(parts > 0, "the bundle's delta has no inline parts");
    let mut manifest = arbor::bundle::Manifest::parse(&members[m].data).unwrap();
    for member in &mut manifest.members {
        if member.name == "delta" {
            member.size = bombed.len() as u64;
            member.sha256 = hex::encode(sha2::Sha256::digest(&bombed));
        }
    }
    members[d].data = bombed;
    members[m].data = manifest.to_bytes();
    let key = arbor::sign::keys::read_secret_key(&w.path("key")).unwrap();
    members[sig].data = arbor::bundle::sign_manifest(&members[m].data, &key).to_vec();
    let hostile = t.path().join("bombed.arbor");
    archive::pack(&members, &hostile);
    run(arbor()
        .args(["bundle", "verify"])
        .arg(&hostile)
        .arg("--keys")
        .arg(w.path("key.pub")));

    let img = device::image_copy("qemu-virt-aarch64", t.path());
    let m = Mounted::new(&img);
    // No server: the remote points nowhere.
    run(arbor()
        .args(["remote", "set-url", "origin", "http://127.0.0.1:9/", "--sysroot"])
        .arg(m.arg()));
    let before = device::fingerprint(&m);
    let bad = upgrade_watched(&m, &["--bundle", hostile.to_str().unwrap()]);
    bad.check_peak(&format!(
        "arbor upgrade --bundle, {parts} delta part(s) each {} MiB of zeros in {} kB of xz",
        BOMB >> 20,
        delta::xz_bomb(BOMB).len() / 1000
    ));
    eprintln!("  refused: {}", bad.stderr.trim().lines().last().unwrap_or(""));
    assert_eq!(bad.code, Some(1), "{}", bad.stdout);
    assert!(
        bad.stderr.contains(&hostile.display().to_string()) && bad.stderr.contains("delta"),
        "the error names the bundle and its delta: {}",
        bad.stderr
    );
    assert_eq!(before, device::fingerprint(&m), "a refused bundle changed the sysroot");
    fsck(&m);

    // The real bundle, for comparison: applied, within the bound too.
    let ok = upgrade_watched(&m, &["--bundle", good.to_str().unwrap()]);
    ok.check_peak("arbor upgrade --bundle, the real v1 → v2 bundle");
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
    fsck(&m);
}

/// The part files of every static delta under a published repository.
fn delta_parts(public: &Path) -> Vec<PathBuf> {
    common::delta::delta_files(public, |name| name.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
#[ignore = "needs root: loop devices and mounts (and arbor image)"]
fn a_served_delta_part_that_is_an_xz_bomb_is_refused_in_bounded_memory() {
    common::need_root();
    let w = device::world();
    let t = tempfile::tempdir().unwrap();
    let public = t.path().join("pub");
    run(Command::new("cp").arg("-a").arg(w.path("pub")).arg(&public));
    // A hostile server (or mirror) serves 1 GiB of zeros in xz for every
    // delta part at least that big: the signed superblock is unchanged, and
    // libostree checks a part's checksum only once it is unpacked.
    let part = delta::xz_part(&delta::xz_bomb(BOMB));
    let mut replaced = 0;
    for p in delta_parts(&public) {
        if std::fs::metadata(&p).unwrap().len() >= part.len() as u64 {
            std::fs::write(&p, &part).unwrap();
            replaced += 1;
        }
    }
    assert!(replaced > 0, "no delta part of at least {} bytes", part.len());
    let server = http::Server::start(public.clone());
    let img = device::image_copy("qemu-virt-aarch64", t.path());
    let m = Mounted::new(&img);
    run(arbor()
        .args(["remote", "set-url", "origin", &server.url, "--sysroot"])
        .arg(m.arg()));
    let before = device::fingerprint(&m);
    let bad = upgrade_watched(&m, &[]);
    bad.check_peak(&format!(
        "arbor upgrade, {replaced} served delta part(s) each {} MiB of zeros in {} kB of xz",
        BOMB >> 20,
        part.len() / 1000
    ));
    eprintln!("  refused: {}", bad.stderr.trim().lines().last().unwrap_or(""));
    assert_eq!(bad.code, Some(1), "{}", bad.stdout);
    assert!(
        bad.stderr.contains("delta"),
        "the error names the delta: {}",
        bad.stderr
    );
    assert_eq!(before, device::fingerprint(&m), "a refused upgrade changed the sysroot");
    fsck(&m);
}

/// An upgrade from a server whose v1 → v2 superblock (signed again with the
/// trusted key, the summary too) declares `size` / `usize` for every part:
/// the mounted sysroot, its fingerprint before, the run (and the directory
/// holding the image, last so it outlives the mount).
fn upgrade_declaring(
    name: &str,
    size: Option<u64>,
    usize: Option<u64>,
) -> (Mounted, String, peak::Watched, tempfile::TempDir) {
    let w = device::world();
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().to_path_buf();
    let public = t.join("pub");
    run(Command::new("cp").arg("-a").arg(w.path("pub")).arg(&public));
    let changed = delta::edit_superblocks(&public, &w.path("key"), |b| delta::with_part_sizes(b, size, usize));
    assert!(changed > 0, "no delta between two commits in {}", public.display());
    let server = http::Server::start(public);
    let img = device::image_copy("qemu-virt-aarch64", &t);
    let m = Mounted::new(&img);
    run(arbor()
        .args(["remote", "set-url", "origin", &server.url, "--sysroot"])
        .arg(m.arg()));
    let before = device::fingerprint(&m);
    let watched = upgrade_watched(&m, &[]);
    watched.check_peak(&format!("arbor upgrade, {name}"));
    eprintln!("  result: {}", watched.stderr.trim().lines().last().unwrap_or(""));
    (m, before, watched, dir)
}

#[test]
#[ignore = "needs root: loop devices and mounts (and arbor image)"]
fn delta_parts_declaring_huge_sizes_are_refused_in_bounded_memory() {
    common::need_root();
    // Compressed sizes are what arbor sizes the download by: 1 EiB per part
    // cannot fit, and nothing is fetched.
    let (m, before, w, _dir) = upgrade_declaring("every delta part declaring 1 EiB compressed", Some(1 << 60), None);
    assert_eq!(w.code, Some(1), "{}", w.stdout);
    assert!(w.stderr.contains("not enough space"), "{}", w.stderr);
    assert_eq!(before, device::fingerprint(&m), "a refused upgrade changed the sysroot");
    fsck(&m);
    drop(m);
    // Uncompressed sizes are what libostree checks free space against.
    let (m, before, w, _dir) = upgrade_declaring("every delta part declaring 1 EiB uncompressed", None, Some(1 << 60));
    assert_eq!(w.code, Some(1), "{}", w.stdout);
    assert!(w.stderr.contains("space"), "{}", w.stderr);
    assert_eq!(before, device::fingerprint(&m), "a refused upgrade changed the sysroot");
    fsck(&m);
}
