//! The fuzz targets' entry points: one function per reader of bytes someone
//! else wrote, each feeding the input to the same code arbor runs and
//! checking what must hold whatever the input (no panic, no unbounded
//! allocation, and a property where one exists). `fuzz/` (cargo fuzz,
//! `make fuzz`) wraps each in a libFuzzer target; the tests below replay the
//! checked-in seeds and every crash ever found (`fuzz/regressions/`), so a
//! fixed crash stays fixed in `make test`.
//!
//! Inputs of several files are split at [`SPLIT`] lines.

use std::cmp::Ordering;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ed25519_dalek::SigningKey;

use crate::arch::Arch;
use crate::sign::Trust;

/// A fuzz target: panics (libFuzzer's crash) when something that must hold does not.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs`.
pub const TARGETS: &[(&str, Target)] = &[
    ("treefile", treefile),
    ("condition", condition),
    ("repo_file", repo_file),
    ("repomd", repomd),
    ("rpmmd", rpmmd),
    ("rpm_header", rpm_header),
    ("rpm_import", rpm_import),
    ("rpmdb_blob", rpmdb_blob),
    ("vercmp", vercmp),
    ("signature", signature),
    ("keys", keys),
    ("summary", summary),
    ("bundle", bundle),
    ("bmap", bmap),
    ("board", board),
    ("bootloader", bootloader),
    ("uboot_env", uboot_env),
    ("sysusers", sysusers),
    ("fdt", fdt),
];

/// The line between the files of a multi-file input.
pub const SPLIT: &[u8] = b"\n%%\n";

/// Runs the target called `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match TARGETS.iter().find(|(n, _)| *n == name) {
        Some((_, t)) => t(data),
        None => panic!("no fuzz target {name}"),
    }
}

/// The seed the signature-checking targets trust: bundles and signatures
/// in the seeds are made with it, so the fuzzer starts past the signature check.
pub const TRUSTED_SEED: [u8; 32] = [1; 32];

fn trust() -> Trust {
    Trust {
        trusted: vec![SigningKey::from_bytes(&TRUSTED_SEED).verifying_key()],
        revoked: Vec::new(),
    }
}

fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    while out.len() + 1 < n {
        match rest.windows(SPLIT.len()).position(|w| w == SPLIT) {
            Some(at) => {
                out.push(&rest[..at]);
                rest = &rest[at + SPLIT.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    out.resize(n, &[]);
    out
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// A directory for this process's scratch files, emptied for each input.
fn scratch(name: &str) -> PathBuf {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("arbor-fuzz")
            .tempdir()
            .expect("a scratch dir")
    });
    let dir = root.path().join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("emptying the scratch dir");
    }
    std::fs::create_dir_all(&dir).expect("creating the scratch dir");
    dir
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("writing a scratch file");
    p
}

/// A treefile (YAML, or JSON when it starts with `{`) with two include files
/// (`a.yaml`, `b.json`) and a `fuzz.repo` beside it, loaded for aarch64 and armv7hl.
pub fn treefile(data: &[u8]) {
    let p = parts(data, 4);
    let dir = scratch("treefile");
    let main = if p[0].first() == Some(&b'{') {
        "t.json"
    } else {
        "t.yaml"
    };
    let path = write(&dir, main, p[0]);
    write(&dir, "a.yaml", p[1]);
    write(&dir, "b.json", p[2]);
    write(&dir, "fuzz.repo", p[3]);
    for arch in [Arch::Aarch64, Arch::Armv7hl] {
        if let Ok(tf) = crate::treefile::load(&path, arch) {
            let _ = crate::treefile::print_json(&tf);
        }
    }
}

/// A treefile condition (`basearch == "aarch64"`).
pub fn condition(data: &[u8]) {
    let _ = crate::treefile::parse_condition(&text(data));
}

/// `.repo` files, resolved for each board arch.
pub fn repo_file(data: &[u8]) {
    let p = parts(data, 2);
    let files: Vec<(PathBuf, String)> = p
        .iter()
        .enumerate()
        .map(|(i, d)| (PathBuf::from(format!("fuzz{i}.repo")), text(d)))
        .collect();
    for arch in [Arch::Aarch64, Arch::Armv7hl] {
        let _ = crate::treefile::enabled_repos(&files, arch, Some("41"));
        let _ = crate::treefile::enabled_repos(&files, arch, None);
    }
}

/// `repomd.xml`: whatever it accepts, every href it hands on is checked.
pub fn repomd(data: &[u8]) {
    if let Ok(md) = crate::repo::parse_repomd(data) {
        for f in std::iter::once(&md.primary).chain(md.filelists.as_ref()) {
            crate::repo::check_href(&f.href).expect("parse_repomd handed on an href check_href refuses");
        }
    }
}

/// primary.xml and filelists.xml through libsolv's reader.
pub fn rpmmd(data: &[u8]) {
    let p = parts(data, 2);
    let dir = scratch("rpmmd");
    let primary = write(&dir, "primary.xml", p[0]);
    let filelists = write(&dir, "filelists.xml", p[1]);
    let mut pool = crate::solve::Pool::new(Arch::Aarch64);
    if pool.add_rpmmd("fuzz", &primary, Some(&filelists)).is_ok() {
        let _ = pool.len();
    }
}

/// An .rpm's lead, signature and header: every reader arbor uses before a
/// package is imported (`arbor pkg info`, the compose's header checks).
pub fn rpm_header(data: &[u8]) {
    let dir = scratch("rpm_header");
    let path = write(&dir, "p.rpm", data);
    let _ = crate::rpm::blob::read_package(&path);
    let _ = crate::rpm::info::read(&path);
    let _ = crate::rpm::header::read(&path);
}

/// An .rpm imported, payload and all, into a new bare-user repository.
pub fn rpm_import(data: &[u8]) {
    let dir = scratch("rpm_import");
    let path = write(&dir, "p.rpm", data);
    let users = crate::pkgcache::Users::root_only();
    let _ = crate::pkgcache::import_all(&dir.join("repo"), &[path], &users, 1);
}

/// A header blob from a tree's rpm database (`rpmdb.sqlite`'s `Packages`),
/// as layering on the device reads the installed set and its scriptlets.
pub fn rpmdb_blob(data: &[u8]) {
    let _ = crate::compose::rpmdb::installed::package(data.to_vec());
    let _ = crate::rpm::scripts::from_header_blob(data);
}

/// rpm version comparison is a total order: reflexive, antisymmetric and
/// transitive over any three strings, and libsolv's agrees with arbor's.
pub fn vercmp(data: &[u8]) {
    use crate::rpm::vercmp::rpmvercmp;
    let p = parts(data, 3);
    let s: Vec<String> = p.iter().map(|d| text(d)).collect();
    let (a, b, c) = (&s[0], &s[1], &s[2]);
    assert_eq!(rpmvercmp(a, a), Ordering::Equal, "{a:?} is not equal to itself");
    assert_eq!(
        rpmvercmp(a, b),
        rpmvercmp(b, a).reverse(),
        "not antisymmetric: {a:?} {b:?}"
    );
    let (ab, bc, ac) = (rpmvercmp(a, b), rpmvercmp(b, c), rpmvercmp(a, c));
    if ab != Ordering::Greater && bc != Ordering::Greater {
        assert_ne!(
            ac,
            Ordering::Greater,
            "not transitive: {a:?} <= {b:?} <= {c:?} but {a:?} > {c:?}"
        );
    }
    if ab == Ordering::Equal && bc == Ordering::Equal {
        assert_eq!(ac, Ordering::Equal, "equality not transitive: {a:?} {b:?} {c:?}");
    }
    // The solver orders versions with libsolv's comparison: both must agree on
    // plain versions (no epoch or release, which each splits its own way).
    thread_local! {
        static POOL: crate::solve::Pool = crate::solve::Pool::new_rpm();
    }
    let plain = |s: &str| !s.contains([':', '-', '\0']);
    if plain(a) && plain(b) {
        let solv = POOL.with(|p| p.evrcmp(a, b)).expect("no NUL in either");
        assert_eq!(ab, solv, "arbor and libsolv order {a:?} and {b:?} differently");
    }
}

/// Detached signature metadata (`a{sv}` with `ostree.sign.ed25519`) judged
/// against data: the fuzzer cannot forge ed25519, so nothing but the seed's
/// own data with its own signature may ever pass.
pub fn signature(data: &[u8]) {
    let p = parts(data, 2);
    let sigs = crate::ostree::pull::detached_signatures(p[1], "fuzz.sig");
    let _ = crate::sign::judge_signatures(p[0], &sigs, &trust());
}

/// A trusted-keys file (the device reads its deployment's `/etc/arbor/keys`).
pub fn keys(data: &[u8]) {
    let _ = crate::sign::keys::parse_public_keys(&text(data));
}

/// A server's `summary` and a static delta's superblock.
pub fn summary(data: &[u8]) {
    let _ = crate::ostree::pull::parse_summary(data);
    // The seed superblock is a delta to the all-zero commit, so the fuzzer starts past that check.
    let _ = crate::ostree::pull::superblock_size(data, &"0".repeat(64));
}

/// An offline bundle, verified as `arbor bundle verify` and `apply` do.
pub fn bundle(data: &[u8]) {
    let _ = crate::bundle::read::verify(
        Cursor::new(data),
        &trust(),
        &crate::ostree::bundle::GlibDecoder,
        &mut std::io::sink(),
    );
    if let Ok(m) = crate::bundle::Manifest::parse(data) {
        assert_eq!(
            crate::bundle::Manifest::parse(&m.to_bytes()).as_ref(),
            Ok(&m),
            "a manifest does not survive writing"
        );
    }
}

/// A `.bmap` file: what parses writes back to the same bmap.
pub fn bmap(data: &[u8]) {
    if let Ok(b) = crate::image::bmap::parse(&text(data)) {
        let again = crate::image::bmap::parse(&b.to_xml()).expect("a bmap arbor wrote does not parse");
        assert_eq!(again, b, "a bmap does not survive writing");
    }
}

/// A board TOML through validation.
pub fn board(data: &[u8]) {
    let _ = crate::board::parse(Path::new("fuzz.toml"), &text(data));
}

/// BLS entries from a tree rendered into a shipped board's bootloader files:
/// whatever a tree's entry says, no rendered line may be split or cut by it.
pub fn bootloader(data: &[u8]) {
    static BOARDS: OnceLock<Vec<crate::board::Board>> = OnceLock::new();
    let boards = BOARDS.get_or_init(|| crate::board::list().expect("the shipped boards load"));
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let board = &boards[pick as usize % boards.len()];
    let entries: Vec<_> = parts(rest, 3)
        .iter()
        .enumerate()
        .filter_map(|(i, d)| crate::bootloader::parse_bls(&format!("ostree-{}.conf", i + 1), &text(d)).ok())
        .collect();
    if entries.is_empty() {
        return;
    }
    let trial = crate::bootloader::entry_id(&entries[0]);
    for (prefix, trial) in [("", None), ("/boot", Some(trial.as_str()))] {
        if let Ok(files) = crate::bootloader::render(board, &entries, prefix, trial) {
            for f in files {
                let body = match f.path.rsplit_once('.').map(|(_, ext)| ext) {
                    // The U-Boot environment is binary; the script image carries text.
                    Some("env") => continue,
                    Some("scr") => crate::bootloader::uboot::script_text(&f.content).expect("a boot.scr arbor wrote"),
                    _ => f.content.as_slice(),
                };
                assert!(
                    !body.contains(&0) && !body.contains(&b'\r'),
                    "{}: a NUL or CR from a BLS entry reached {}",
                    board.name,
                    f.path
                );
            }
        }
    }
}

/// A U-Boot environment blob (boot counting's `arbor.env`) and a `boot.scr`
/// image: an environment that parses writes back to the same variables.
pub fn uboot_env(data: &[u8]) {
    use crate::bootloader::uboot;
    let _ = uboot::script_text(data);
    if let Some(vars) = uboot::parse_env_blob(data) {
        if let Ok(blob) = uboot::env_blob(&vars, data.len()) {
            assert_eq!(
                uboot::parse_env_blob(&blob),
                Some(vars),
                "an environment does not survive writing"
            );
        }
    }
}

/// A package's sysusers.d file, applied to account files.
pub fn sysusers(data: &[u8]) {
    let p = parts(data, 2);
    if let Ok(entries) = crate::scriptlet::users::parse_sysusers("fuzz.conf", &text(p[0])) {
        let passwd = text(p[1]);
        let _ = crate::scriptlet::users::apply(&passwd, "", "", "", &entries);
        let _ = crate::scriptlet::users::apply("root:x:0:0::/root:/bin/sh\n", "root:x:0:\n", "", "", &entries);
    }
}

/// A device tree blob from a package, edited as `[qemu.devicetree]` does:
/// an edit-free pass is a fixed point.
pub fn fdt(data: &[u8]) {
    use crate::fdt::{Edit, Value, apply};
    if let Ok(once) = apply(data, &[]) {
        assert_eq!(
            apply(&once, &[]).ok().as_ref(),
            Some(&once),
            "rewriting a DTB is not stable"
        );
    }
    let edit = Edit {
        node: "/".into(),
        set: vec![("status".into(), Value::Str("disabled".into()))],
        delete: Vec::new(),
    };
    let _ = apply(data, &[edit]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every checked-in seed and every input that once crashed a target
    /// (`fuzz/regressions/<target>/`) runs through it without a panic.
    #[test]
    fn seeds_and_regressions_pass_every_target() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut ran = 0;
        for (name, target) in TARGETS {
            for kind in ["seeds", "regressions"] {
                let Ok(dir) = std::fs::read_dir(root.join(kind).join(name)) else {
                    continue;
                };
                for f in dir {
                    let f = f.unwrap().path();
                    let data = std::fs::read(&f).unwrap();
                    let r = std::panic::catch_unwind(|| target(&data));
                    assert!(r.is_ok(), "fuzz target {name} panics on {}", f.display());
                    ran += 1;
                }
            }
        }
        assert!(ran >= TARGETS.len(), "only {ran} seeds found under {}", root.display());
    }

    #[test]
    fn every_target_has_its_libfuzzer_wrapper_and_seeds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        for (name, _) in TARGETS {
            let wrapper = root.join("fuzz_targets").join(format!("{name}.rs"));
            let text = std::fs::read_to_string(&wrapper).unwrap_or_else(|e| panic!("{}: {e}", wrapper.display()));
            assert!(
                text.contains(&format!("\"{name}\"")),
                "{} runs another target",
                wrapper.display()
            );
            let seeds = root.join("seeds").join(name);
            assert!(
                std::fs::read_dir(&seeds).map(|d| d.count()).unwrap_or(0) > 0,
                "{} has no seeds",
                seeds.display()
            );
        }
    }

    /// The seeds that are arbor's own output, written with the trusted seed key
    /// (the others are copies of shipped files and the sample repository's).
    #[test]
    #[ignore = "writes fuzz/seeds: run by hand when a format changes"]
    fn write_generated_seeds() {
        use ed25519_dalek::Signer as _;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        let put = |target: &str, name: &str, data: &[u8]| {
            std::fs::create_dir_all(root.join(target)).unwrap();
            std::fs::write(root.join(target).join(name), data).unwrap();
        };
        let key = SigningKey::from_bytes(&TRUSTED_SEED);

        let signed = b"a commit object";
        let dict = crate::ostree::sign::signature_dict(signed, &key);
        put(
            "signature",
            "signed",
            &[&signed[..], SPLIT, &dict.data_as_bytes()].concat(),
        );

        let commit = b"commit object bytes".to_vec();
        let board = crate::bundle::Board {
            arch: "aarch64".into(),
            boards: vec!["rpi4".into()],
            ref_name: Some("os/stable".into()),
            version: Some("1.2".into()),
            from: None,
            to: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&commit)),
        };
        let members = [
            (crate::bundle::BOARD, serde_json::to_vec(&board).unwrap()),
            (crate::bundle::COMMITMETA, key.sign(&commit).to_bytes().to_vec()),
            (crate::bundle::COMMIT, commit),
            (crate::bundle::DELTA, vec![7u8; 1000]),
        ];
        let get = |n: &str| members.iter().find(|(m, _)| *m == n).unwrap().1.clone();
        let manifest = crate::bundle::Manifest::new(
            crate::bundle::MEMBERS
                .iter()
                .map(|n| {
                    let (size, sha256) = crate::bundle::digest(get(n).as_slice()).unwrap();
                    crate::bundle::Member {
                        name: n.to_string(),
                        size,
                        sha256,
                    }
                })
                .collect(),
        );
        let sig = crate::bundle::sign_manifest(&manifest.to_bytes(), &key);
        let bundle =
            crate::bundle::write::write_archive(Vec::new(), &manifest, &sig, 0, |n| Ok(Box::new(Cursor::new(get(n)))))
                .unwrap();
        put("bundle", "signed", &bundle);
        put("bundle", "manifest", &manifest.to_bytes());

        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(1 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[1u8; 8192], 65536).unwrap();
        put(
            "bmap",
            "small",
            crate::image::bmap::create(&img).unwrap().to_xml().as_bytes(),
        );

        let vars = std::collections::BTreeMap::from([
            ("arbor_trial".to_string(), "arbor/abc/0".to_string()),
            ("arbor_left".to_string(), "3".to_string()),
        ]);
        put(
            "uboot_env",
            "env",
            &crate::bootloader::uboot::env_blob(&vars, 256).unwrap(),
        );
        let scr = crate::bootloader::uboot::script_image(Arch::Aarch64, "arbor", 0, b"echo hi\nboot\n").unwrap();
        put("uboot_env", "script", &scr);
    }

    #[test]
    fn parts_split_at_the_marker_and_pad() {
        assert_eq!(parts(b"a\n%%\nb", 3), vec![&b"a"[..], b"b", b""]);
        assert_eq!(parts(b"a\n%%\nb\n%%\nc", 2), vec![&b"a"[..], b"b\n%%\nc"]);
    }
}
