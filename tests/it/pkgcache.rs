//! The package cache against real aarch64 RPMs of the sample repository,
//! checked with the real `ostree` CLI and with `rpm2cpio | cpio` extraction.

use crate::common;

use common::ostree;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use arbor::pkgcache::{Imported, Users, import_all};
use rpm::{FileFlags, FileMode, FileOptions, FileType, PackageBuilder};
use sha2::{Digest, Sha256};

/// The packages the tests import, smallest first, kernel last.
const SAMPLE: [(&str, &str); 6] = [
    ("filesystem", "aarch64"),
    ("setup", "noarch"),
    ("glibc", "aarch64"),
    ("bash", "aarch64"),
    ("busybox", "aarch64"),
    ("kernel", "aarch64"),
];

fn sample_paths() -> Vec<PathBuf> {
    SAMPLE.iter().map(|(n, a)| common::package(n, a)).collect()
}

/// One line of `ostree ls -R`: type and mode, owner, size, symlink target.
#[derive(Debug, Clone, PartialEq)]
struct Listed {
    mode: String,
    uid: u32,
    gid: u32,
    size: u64,
    target: Option<String>,
}

fn ls(repo: &Path, refname: &str) -> BTreeMap<String, Listed> {
    let mut out = BTreeMap::new();
    for line in ostree(repo, &["ls", "-R", refname]).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let rest = f[4..].join(" ");
        let (path, target) = match rest.split_once(" -> ") {
            Some((p, t)) => (p.to_string(), Some(t.to_string())),
            None => (rest, None),
        };
        let listed = Listed {
            mode: f[0].to_string(),
            uid: f[1].parse().unwrap(),
            gid: f[2].parse().unwrap(),
            size: f[3].parse().unwrap(),
            target,
        };
        out.insert(path, listed);
    }
    out
}

/// What `ostree ls -R` must show for a package: every header entry with its
/// type, mode and size (ghosts and special files excepted).
fn expected_listing(rpm: &Path) -> BTreeMap<String, Listed> {
    let m = rpm::PackageMetadata::open(rpm).unwrap();
    let mut out = BTreeMap::new();
    for f in m.get_file_entries().unwrap() {
        if f.flags().contains(FileFlags::GHOST) {
            continue;
        }
        let (c, size, target) = match f.file_type() {
            FileType::Dir => ('d', 0, None),
            FileType::Regular => ('-', f.size() as u64, None),
            FileType::SymbolicLink => ('l', 0, f.linkto().map(str::to_string)),
            _ => continue,
        };
        // The ids of the accounts in `sample_users`.
        let id = |name: &str| match name {
            "root" => 0,
            "daemon" => 2,
            other => panic!(
                "{}: owner {other} is not one the sample packages use",
                f.path().display()
            ),
        };
        let listed = Listed {
            mode: format!("{c}{:05o}", f.permissions()),
            uid: id(f.user()),
            gid: id(f.group()),
            size,
            target,
        };
        out.insert(f.path().to_string_lossy().into_owned(), listed);
    }
    out
}

/// Every listed path is in the header, except parents the package does not own (root-owned 0755 dirs).
fn assert_listing_matches_header(repo: &Path, imported: &Imported, rpm: &Path) {
    let got = ls(repo, &imported.refname);
    let want = expected_listing(rpm);
    for (path, w) in &want {
        assert_eq!(got.get(path), Some(w), "{}: {path}", imported.nevra);
    }
    for (path, g) in &got {
        if !want.contains_key(path) {
            assert_eq!(
                (g.mode.as_str(), g.uid, g.gid),
                ("d00755", 0, 0),
                "{}: {path}",
                imported.nevra
            );
        }
    }
}

fn metadata_key(repo: &Path, refname: &str, key: &str) -> String {
    ostree(repo, &["show", &format!("--print-metadata-key={key}"), refname])
        .trim()
        .to_string()
}

/// Regular files and symlinks beneath `dir`: relative path → bytes or link target.
fn tree_contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if md.is_dir() {
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

/// A checkout of the package commit holds exactly what `rpm2cpio | cpio -idm` extracts.
fn assert_checkout_matches_cpio(repo: &Path, imported: &Imported, rpm: &Path, work: &Path) {
    let co = work.join(format!("checkout-{}", imported.nevra));
    ostree(repo, &["checkout", "-U", &imported.refname, co.to_str().unwrap()]);
    let cpio = work.join(format!("cpio-{}", imported.nevra));
    std::fs::create_dir(&cpio).unwrap();
    common::run(
        Command::new("sh")
            .arg("-c")
            .arg("rpm2cpio \"$1\" | cpio -idm --quiet")
            .arg("sh")
            .arg(rpm)
            .current_dir(&cpio),
    );
    let (got, want) = (tree_contents(&co), tree_contents(&cpio));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{}",
        imported.nevra
    );
    for (path, bytes) in &want {
        assert!(
            got[path] == *bytes,
            "{}: {} differs from the cpio extraction",
            imported.nevra,
            path.display()
        );
    }
}

fn header_sha256(rpm: &Path) -> String {
    let m = rpm::PackageMetadata::open(rpm).unwrap();
    hex::encode(Sha256::digest(m.header_bytes().unwrap()))
}

/// Bytes and files of regular file content in a package, from its header.
fn content_size(rpm: &Path) -> (u64, usize) {
    let m = rpm::PackageMetadata::open(rpm).unwrap();
    let files = m.get_file_entries().unwrap();
    let bytes = files
        .iter()
        .filter(|f| f.file_type() == FileType::Regular && !f.flags().contains(FileFlags::GHOST))
        .map(|f| f.size() as u64)
        .sum();
    (bytes, files.len())
}

#[test]
#[ignore = "needs root: compares checked-out files of mode 0000 (/etc/shadow), which only root reads"]
fn imports_the_sample_packages_and_ostree_agrees() {
    common::need_root();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    common::run(
        Command::new("ostree")
            .arg(format!("--repo={}", repo.display()))
            .args(["init", "--mode=bare-user"]),
    );
    let rpms = sample_paths();
    let users = sample_users();

    // The kernel alone first, for a throughput figure.
    let kernel = rpms.last().unwrap().clone();
    let (bytes, files) = content_size(&kernel);
    let started = Instant::now();
    let k = import_all(&repo, std::slice::from_ref(&kernel), &users, 1).unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(k[0].imported_now);
    eprintln!(
        "kernel import: {:.1} MB, {files} files in {secs:.2} s: {:.1} MB/s, {:.0} files/s",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs,
        files as f64 / secs
    );

    let started = Instant::now();
    let all = import_all(&repo, &rpms, &users, 2).unwrap();
    eprintln!(
        "five more packages, two at a time: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(all.len(), rpms.len());
    for ((imp, rpm), (name, _)) in all.iter().zip(&rpms).zip(SAMPLE) {
        assert!(imp.nevra.starts_with(&format!("{name}-")), "{imp:?}");
        assert_eq!(imp.imported_now, name != "kernel", "{imp:?}");
        let sha = header_sha256(rpm);
        assert!(
            imp.refname.starts_with("arbor/pkg/") && imp.refname.ends_with(&format!("/{}", &sha[..16])),
            "{imp:?}"
        );
        assert_eq!(
            metadata_key(&repo, &imp.refname, "arbor.header-sha256"),
            format!("'{sha}'")
        );
        assert_eq!(
            metadata_key(&repo, &imp.refname, "arbor.nevra"),
            format!("'{}'", imp.nevra)
        );
        assert_eq!(ostree(&repo, &["rev-parse", &imp.refname]).trim(), imp.commit);
    }
    assert_eq!(all[5].commit, k[0].commit);
    let fsck = ostree(&repo, &["fsck"]);
    assert!(fsck.contains("no errors found"), "{fsck}");
    let refs = ostree(&repo, &["refs"]);
    assert_eq!(refs.lines().count(), rpms.len(), "{refs}");

    for (imp, rpm) in all.iter().zip(&rpms) {
        assert_listing_matches_header(&repo, imp, rpm);
    }
    let by_name = |n: &str| all.iter().find(|i| i.nevra.starts_with(&format!("{n}-"))).unwrap();
    let bash = ls(&repo, &by_name("bash").refname);
    assert_eq!(bash["/usr/bin/bash"].mode, "-00755");
    let setup = ls(&repo, &by_name("setup").refname);
    assert_eq!(setup["/etc/shadow"].mode, "-00000");
    assert_eq!(setup["/etc/gshadow"].mode, "-00000");
    let filesystem = ls(&repo, &by_name("filesystem").refname);
    assert_eq!(filesystem["/bin"].target.as_deref(), Some("usr/bin"));
    assert_eq!(
        (filesystem["/bin"].mode.as_str(), filesystem["/bin"].uid),
        ("l00777", 0)
    );
    assert_eq!(filesystem["/root"].mode, "d00550");
    assert_eq!(filesystem["/tmp"].mode, "d01777");
    let config = metadata_key(&repo, &by_name("setup").refname, "arbor.config");
    assert!(
        config.contains("'/etc/shadow'") && config.contains("'/etc/passwd'"),
        "{config}"
    );
    let header = metadata_key(&repo, &by_name("bash").refname, "arbor.header");
    assert!(header.len() > 1000, "the full header is stored: {header:.80}");

    for name in ["bash", "setup", "glibc", "filesystem"] {
        let i = all
            .iter()
            .position(|x| x.nevra.starts_with(&format!("{name}-")))
            .unwrap();
        assert_checkout_matches_cpio(&repo, &all[i], &rpms[i], tmp.path());
    }

    // Everything is cached now: nothing is imported, and the answer is quick.
    let started = Instant::now();
    let again = import_all(&repo, &rpms, &users, 2).unwrap();
    eprintln!(
        "second import of six cached packages: {:.3} s",
        started.elapsed().as_secs_f64()
    );
    assert!(again.iter().all(|i| !i.imported_now), "{again:?}");
    assert_eq!(
        again.iter().map(|i| &i.commit).collect::<Vec<_>>(),
        all.iter().map(|i| &i.commit).collect::<Vec<_>>()
    );
}

#[test]
fn the_same_rpms_give_the_same_commits_in_fresh_repos() {
    let tmp = tempfile::tempdir().unwrap();
    let rpms = sample_paths();
    // The first repository is created by import_all itself; the second through the CLI.
    let one = import_all(&tmp.path().join("one"), &rpms, &sample_users(), 2).unwrap();
    let two_repo = tmp.path().join("two");
    common::run(
        Command::new("ostree")
            .arg(format!("--repo={}", two_repo.display()))
            .args(["init", "--mode=bare-user"]),
    );
    let mut reversed = rpms.clone();
    reversed.reverse();
    let mut two = import_all(&two_repo, &reversed, &sample_users(), 1).unwrap();
    two.reverse();
    assert_eq!(one, two);
    let mode = std::fs::read_to_string(tmp.path().join("one/config")).unwrap();
    assert!(mode.contains("mode=bare-user"), "{mode}");
}

/// What the sample packages lack: ghosts, owners other than root, setuid,
/// file capabilities and hardlinks, in a package built here.
#[test]
fn ghosts_owners_capabilities_and_hardlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = PackageBuilder::new("features", "1.0", "MIT", "aarch64", "package features");
    b.release("1").using_config(
        rpm::BuildConfig::v4()
            .compression(rpm::CompressionWithLevel::Zstd(3))
            .source_date(1_700_000_000u32),
    );
    b.with_dir_entry(
        FileOptions::dir("/var/lib/feat")
            .permissions(0o750)
            .user("feat")
            .group("feat"),
    )
    .unwrap()
    .with_file_contents(
        "suid\n",
        FileOptions::new("/usr/bin/feat-suid")
            .mode(FileMode::regular(0o4755))
            .user("feat")
            .group("wheel"),
    )
    .unwrap()
    .with_file_contents(
        "ping\n",
        FileOptions::new("/usr/bin/feat-ping")
            .mode(FileMode::regular(0o755))
            .caps("cap_net_raw=ep")
            .unwrap(),
    )
    .unwrap()
    .with_file_contents(
        "nocaps\n",
        FileOptions::new("/usr/bin/feat-nocaps")
            .mode(FileMode::regular(0o755))
            .caps("=")
            .unwrap(),
    )
    .unwrap()
    .with_file_contents("same\n", FileOptions::new("/usr/bin/feat-a").hardlink("h"))
    .unwrap()
    .with_file_contents("same\n", FileOptions::new("/usr/lib/feat-b").hardlink("h"))
    .unwrap()
    .with_file_contents("conf\n", FileOptions::new("/etc/feat.conf").config().noreplace())
    .unwrap()
    .with_ghost(FileOptions::ghost("/var/log/feat.log"))
    .unwrap();
    let rpm = tmp.path().join("features-1.0-1.aarch64.rpm");
    b.build().unwrap().write_file(&rpm).unwrap();
    let repo = tmp.path().join("repo");

    // Owners the import's accounts lack (a sysusers.d user, created later in
    // the compose, which applies them: compose::owners) import as root, and
    // such a file grants nothing meanwhile: no setuid bit in the cache.
    let early = tmp.path().join("early");
    let imp = import_all(&early, std::slice::from_ref(&rpm), &Users::root_only(), 1)
        .unwrap()
        .remove(0);
    let tree = ls(&early, &imp.refname);
    let suid = &tree["/usr/bin/feat-suid"];
    assert_eq!((suid.mode.as_str(), suid.uid, suid.gid), ("-00755", 0, 0));
    let dir = &tree["/var/lib/feat"];
    assert_eq!((dir.mode.as_str(), dir.uid, dir.gid), ("d00750", 0, 0));

    let users = Users::from_passwd_group(
        "root:x:0:0:root:/root:/bin/sh\nfeat:x:987:986::/var/lib/feat:/sbin/nologin\n",
        "root:x:0:\nwheel:x:10:\nfeat:x:986:\n",
    )
    .unwrap();
    let imp = import_all(&repo, std::slice::from_ref(&rpm), &users, 1)
        .unwrap()
        .remove(0);
    assert!(ostree(&repo, &["fsck"]).contains("no errors found"));
    let tree = ls(&repo, &imp.refname);
    assert!(!tree.contains_key("/var/log/feat.log"), "ghosts are not shipped");
    let suid = &tree["/usr/bin/feat-suid"];
    assert_eq!((suid.mode.as_str(), suid.uid, suid.gid), ("-04755", 987, 10));
    let dir = &tree["/var/lib/feat"];
    assert_eq!((dir.mode.as_str(), dir.uid, dir.gid), ("d00750", 987, 986));

    let ghosts = metadata_key(&repo, &imp.refname, "arbor.ghost");
    assert_eq!(ghosts, "['/var/log/feat.log']");
    let config = metadata_key(&repo, &imp.refname, "arbor.config");
    assert_eq!(config, "['/etc/feat.conf']");

    let xattrs = ostree(&repo, &["ls", "-X", &imp.refname, "/usr/bin/feat-ping"]);
    // cap_net_raw=ep as vfs_cap_data v2: magic 0x02000001, permitted bit 13.
    assert!(
        xattrs.contains("security.capability") && xattrs.contains("[byte 0x01, 0x00, 0x00, 0x02, 0x00, 0x20,"),
        "{xattrs}"
    );

    // %caps(=): an empty capability set is still an xattr, as rpm writes it.
    let xattrs = ostree(&repo, &["ls", "-X", &imp.refname, "/usr/bin/feat-nocaps"]);
    assert!(
        xattrs.contains("security.capability")
            && xattrs.contains("[byte 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,"),
        "{xattrs}"
    );
    let xattrs = ostree(&repo, &["ls", "-X", &imp.refname, "/usr/bin/feat-suid"]);
    assert!(!xattrs.contains("security.capability"), "{xattrs}");

    let checksums = ostree(&repo, &["ls", "-C", &imp.refname, "/usr/bin/feat-a", "/usr/lib/feat-b"]);
    let sums: Vec<&str> = checksums
        .lines()
        .map(|l| l.split_whitespace().nth(4).unwrap())
        .collect();
    assert_eq!(sums.len(), 2);
    assert_eq!(
        sums[0], sums[1],
        "hardlinked names share one content object:\n{checksums}"
    );
    let co = tmp.path().join("co");
    ostree(&repo, &["checkout", "-U", &imp.refname, co.to_str().unwrap()]);
    let (a, b) = (
        std::fs::metadata(co.join("usr/bin/feat-a")).unwrap(),
        std::fs::metadata(co.join("usr/lib/feat-b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "a hardlink checkout links both names to the object");
}

/// The accounts the sample packages' files are owned by (setup's passwd has them).
fn sample_users() -> Users {
    Users::from_passwd_group(
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:2:2:daemon:/sbin:/sbin/nologin\n",
        "root:x:0:\ndaemon:x:2:\n",
    )
    .unwrap()
}

#[test]
fn the_sample_setup_package_gives_its_users_and_groups() {
    let setup = common::package("setup", "noarch");
    let users = arbor::pkgcache::users_from_packages(&[setup]).unwrap();
    assert_eq!(users.uid("bin"), Some(1));
    assert_eq!(users.gid("bin"), Some(1));
    assert_eq!(users.gid("daemon"), Some(2));
    assert_eq!(users.uid("root"), Some(0));
}
