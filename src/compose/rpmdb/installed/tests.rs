//! Reading databases back and layering on them, against Debian's rpm.

use std::path::{Path, PathBuf};
use std::process::Command;

use rpm::{FileOptions, PackageBuilder};

use super::*;
use crate::compose::rpmdb::{FILE_NAME, write, write_layered};

/// 2024-01-01T00:00:00Z, the base tree's install time.
const BASE: u32 = 1_704_067_200;
/// A day later, the layer's.
const LAYER: u32 = BASE + 86_400;

/// alpha (a %post and a %transfiletriggerin on /usr/lib), beta (aarch64, with
/// an epoch) and gamma, built in `dir`.
fn packages(dir: &Path) -> [PathBuf; 3] {
    let mut alpha = PackageBuilder::new("alpha", "1.0", "MIT", "noarch", "alpha package");
    alpha.release("1");
    alpha
        .with_file_contents(b"lib".to_vec(), FileOptions::new("/usr/lib/alpha/libalpha.so"))
        .unwrap()
        .with_dir_entry(FileOptions::dir("/usr/lib/alpha"))
        .unwrap()
        .with_file_contents(b"a=1\n".to_vec(), FileOptions::new("/etc/alpha.conf").config())
        .unwrap()
        .with_ghost(FileOptions::ghost("/var/log/alpha.log"))
        .unwrap()
        .post_install_script("echo post")
        .trans_file_trigger_in("/usr/lib", None, "echo trigger");
    let mut beta = PackageBuilder::new("beta", "2.0", "MIT", "aarch64", "beta package");
    beta.release("1").epoch(1);
    beta.with_file_contents(b"beta".to_vec(), FileOptions::new("/usr/lib/beta.so"))
        .unwrap();
    let mut gamma = PackageBuilder::new("gamma", "3.0", "MIT", "noarch", "gamma package");
    gamma.release("2");
    gamma
        .with_file_contents(b"gamma".to_vec(), FileOptions::new("/usr/lib/gamma/gamma.txt"))
        .unwrap()
        .with_symlink(FileOptions::symlink("/usr/bin/gamma", "../lib/gamma/gamma.txt"))
        .unwrap();
    [("alpha", alpha), ("beta", beta), ("gamma", gamma)].map(|(name, mut b)| {
        let path = dir.join(format!("{name}.rpm"));
        b.build().unwrap().write_file(&path).unwrap();
        path
    })
}

/// Debian's rpm on the database in `dbpath`, asserting success and a clean
/// stderr; returns stdout. rpm is a test dependency (`make setup` installs it):
/// without it the test fails saying so rather than passing.
fn rpm(dbpath: &Path, args: &[&str]) -> String {
    let out = Command::new("rpm")
        .arg("--dbpath")
        .arg(dbpath)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running rpm (Debian's rpm, installed by `make setup`): {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("error") && !stderr.contains("warning"),
        "rpm {args:?} failed with {}:\nstdout:\n{}\nstderr:\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nevras(pkgs: &[InstalledPackage]) -> Vec<&str> {
    pkgs.iter().map(|p| p.nevra.as_str()).collect()
}

#[test]
fn reads_back_what_write_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let [alpha, beta, _] = packages(dir.path());
    let db = dir.path().join("db");
    write(&db, &[alpha, beta], BASE).unwrap();

    let got = read_installed(&db.join(FILE_NAME)).unwrap();
    assert_eq!(nevras(&got), ["alpha-1.0-1.noarch", "beta-1:2.0-1.aarch64"]);
    let (a, b) = (&got[0], &got[1]);
    assert_eq!(
        (a.name.as_str(), a.evr.as_str(), a.arch.as_str()),
        ("alpha", "1.0-1", "noarch")
    );
    assert_eq!(
        (b.name.as_str(), b.evr.as_str(), b.arch.as_str()),
        ("beta", "1:2.0-1", "aarch64")
    );
    let mut files = a.files.clone();
    files.sort();
    assert_eq!(
        files,
        ["/etc/alpha.conf", "/usr/lib/alpha", "/usr/lib/alpha/libalpha.so"]
    );
    assert_eq!(a.scripts.files, a.files);
    assert_eq!(b.files, ["/usr/lib/beta.so"]);
    assert_eq!(a.scripts.post.as_ref().unwrap().body.as_deref(), Some("echo post"));
    let [trigger] = &a.scripts.file_triggers[..] else {
        panic!("{:?}", a.scripts.file_triggers)
    };
    assert!(trigger.transaction);
    assert_eq!(trigger.prefixes, ["/usr/lib"]);
    assert_eq!(trigger.script.body.as_deref(), Some("echo trigger"));
    assert!(b.scripts.post.is_none() && b.scripts.file_triggers.is_empty());

    // The blobs are the stored bytes, install-time tags included.
    let conn = Connection::open(db.join(FILE_NAME)).unwrap();
    let stored: Vec<u8> = conn
        .query_row("SELECT blob FROM Packages WHERE hnum = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(a.blob, stored);
    let header = Blob::parse(a.blob.clone()).unwrap();
    assert_eq!(header.number(tag::INSTALLTIME), Some(u64::from(BASE)));
    assert!(header.find(tag::FILESTATES).is_some());
    drop(conn);

    // Read in place: nothing is created beside the database.
    let names: Vec<String> = fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, [FILE_NAME]);
}

#[test]
fn keeping_every_package_rewrites_the_same_database() {
    // The index rows of a kept header are the ones `write` derives from it:
    // layering nothing on a database gives the same file back.
    let dir = tempfile::tempdir().unwrap();
    let [alpha, beta, _] = packages(dir.path());
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    write(&one, &[alpha.clone(), beta], BASE).unwrap();
    let kept = read_installed(&one.join(FILE_NAME)).unwrap();
    write_layered(&two, &kept, &[], LAYER).unwrap();
    assert!(fs::read(one.join(FILE_NAME)).unwrap() == fs::read(two.join(FILE_NAME)).unwrap());

    // A package both kept and added is refused before anything is written.
    let three = dir.path().join("three");
    let err = format!("{:#}", write_layered(&three, &kept, &[alpha], LAYER).unwrap_err());
    assert!(err.contains("alpha-1.0-1.noarch is listed twice"), "{err}");
    assert!(!three.exists());
}

#[test]
fn rpm_sees_the_kept_and_the_added_packages() {
    let dir = tempfile::tempdir().unwrap();
    let [alpha, beta, gamma] = packages(dir.path());
    let (base, layered) = (dir.path().join("base"), dir.path().join("layered"));
    write(&base, &[alpha, beta], BASE).unwrap();
    let installed = read_installed(&base.join(FILE_NAME)).unwrap();
    write_layered(&layered, &installed[..1], &[gamma], LAYER).unwrap();

    let mut listed: Vec<String> = rpm(&layered, &["-qa", "--qf", "%{NEVRA}\n"])
        .lines()
        .map(String::from)
        .collect();
    listed.sort();
    assert_eq!(listed, ["alpha-1.0-1.noarch", "gamma-3.0-2.noarch"]);
    for (path, owner) in [
        ("/usr/lib/alpha/libalpha.so", "alpha-1.0-1.noarch"),
        ("/etc/alpha.conf", "alpha-1.0-1.noarch"),
        ("/usr/lib/gamma/gamma.txt", "gamma-3.0-2.noarch"),
        ("/usr/bin/gamma", "gamma-3.0-2.noarch"),
    ] {
        assert_eq!(
            rpm(&layered, &["-qf", "--qf", "%{NEVRA}\n", path]).trim(),
            owner,
            "{path}"
        );
    }
    let out = Command::new("rpm")
        .arg("--dbpath")
        .arg(&layered)
        .args(["-qf", "/usr/lib/beta.so"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "beta was not kept");

    // The kept header keeps its install time and color; the added one gets
    // the layer's, and the color of the whole set (noarch only: 0).
    let times = rpm(
        &layered,
        &["-qa", "--qf", "%{NAME} %{INSTALLTIME} %{INSTALLTID} %{INSTALLCOLOR}\n"],
    );
    let mut times: Vec<&str> = times.lines().collect();
    times.sort();
    assert_eq!(
        times,
        [format!("alpha {BASE} {BASE} 3"), format!("gamma {LAYER} {LAYER} 0")]
    );
    // The transaction-file trigger is indexed, the kept blob unchanged.
    let triggers = rpm(&layered, &["-q", "--filetriggers", "alpha"]);
    assert!(triggers.contains("transfiletriggerin"), "{triggers}");
    let relisted = read_installed(&layered.join(FILE_NAME)).unwrap();
    assert_eq!(nevras(&relisted), ["alpha-1.0-1.noarch", "gamma-3.0-2.noarch"]);
    assert!(relisted[0].blob == installed[0].blob);
    // Header order: the builder sorts the paths.
    assert_eq!(relisted[1].files, ["/usr/bin/gamma", "/usr/lib/gamma/gamma.txt"]);
}

#[test]
fn reads_a_database_rpm_wrote() {
    // rpm's own headers: its dribble tags after the region, its WAL-mode file.
    let dir = tempfile::tempdir().unwrap();
    let [alpha, beta, gamma] = packages(dir.path());
    let db = dir.path().join("db");
    fs::create_dir(&db).unwrap();
    let mut args = vec![
        "-i",
        "--justdb",
        "--nodeps",
        "--noscripts",
        "--notriggers",
        "--ignorearch",
    ];
    let paths = [&alpha, &beta].map(|p| p.to_str().unwrap());
    args.extend(paths);
    rpm(&db, &args);

    let mut got = read_installed(&db.join(FILE_NAME)).unwrap();
    // rpm orders its transaction by its own rules: the order is not ours.
    got.sort_by(|a, b| a.nevra.cmp(&b.nevra));
    assert_eq!(nevras(&got), ["alpha-1.0-1.noarch", "beta-1:2.0-1.aarch64"]);
    assert_eq!(got[0].scripts.post.as_ref().unwrap().body.as_deref(), Some("echo post"));
    assert_eq!(got[0].scripts.file_triggers[0].prefixes, ["/usr/lib"]);
    assert!(
        Blob::parse(got[0].blob.clone())
            .unwrap()
            .find(tag::INSTALLTID)
            .is_some()
    );

    // Layered on rpm's headers, rpm still reads them all.
    let layered = dir.path().join("layered");
    write_layered(&layered, &got, &[gamma], LAYER).unwrap();
    let listed = rpm(&layered, &["-qa", "--qf", "%{NEVRA}\n"]);
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort();
    assert_eq!(
        listed,
        ["alpha-1.0-1.noarch", "beta-1:2.0-1.aarch64", "gamma-3.0-2.noarch"]
    );
    assert_eq!(
        rpm(&layered, &["-qf", "--qf", "%{NAME}\n", "/usr/lib/beta.so"]).trim(),
        "beta"
    );
}

#[test]
fn pending_wal_changes_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let [alpha, beta, _] = packages(dir.path());
    // Special characters must survive the URI.
    let db = dir.path().join("d?b #%1");
    write(&db, &[alpha, beta], BASE).unwrap();
    let file = db.join(FILE_NAME);
    assert_eq!(read_installed(&file).unwrap().len(), 2);

    // A writer that has not checkpointed: the change is only in the WAL.
    let writer = Connection::open(&file).unwrap();
    writer
        .execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; DELETE FROM Packages WHERE hnum = 2;")
        .unwrap();
    assert!(fs::metadata(db.join(format!("{FILE_NAME}-wal"))).unwrap().len() > 0);
    assert_eq!(nevras(&read_installed(&file).unwrap()), ["alpha-1.0-1.noarch"]);
    drop(writer);
}

#[test]
fn bad_databases_are_refused_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.sqlite");
    let conn = Connection::open(&big).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);
         INSERT INTO Packages (blob) VALUES (zeroblob({}));",
        MAX_BLOB + 1
    ))
    .unwrap();
    drop(conn);
    let damaged = dir.path().join("damaged.sqlite");
    let conn = Connection::open(&damaged).unwrap();
    conn.execute_batch(
        "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);
         INSERT INTO Packages (blob) VALUES (x'0000000100000000');",
    )
    .unwrap();
    drop(conn);
    let other = dir.path().join("other.sqlite");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x);")
        .unwrap();
    let text = dir.path().join("text");
    fs::write(
        &text,
        "not a database at all, but long enough to be read as one\n".repeat(100),
    )
    .unwrap();

    for (path, want) in [
        (&big, "more than the 67108864 allowed"),
        (&damaged, "header 1"),
        (&other, "Packages"),
        (&text, "not a database"),
        (&dir.path().to_path_buf(), "not a regular file"),
        (&dir.path().join("missing"), "looking at the file"),
    ] {
        let err = format!("{:#}", read_installed(path).unwrap_err());
        assert!(err.contains(&path.display().to_string()) && err.contains(want), "{err}");
    }
}

#[test]
fn files_rpm_did_not_install_are_not_listed() {
    // A header whose FILESTATES mark /usr/lib/alpha/libalpha.so as not installed
    // (an --excludedocs or %_netsharedpath install).
    let dir = tempfile::tempdir().unwrap();
    let [alpha, ..] = packages(dir.path());
    let db = dir.path().join("db");
    write(&db, &[alpha], BASE).unwrap();
    let pkg = read_installed(&db.join(FILE_NAME)).unwrap().remove(0);
    let header = Blob::parse(pkg.blob.clone()).unwrap();
    let states = header.find(tag::FILESTATES).unwrap();
    let basenames = header.find(tag::BASENAMES).unwrap();
    let i = header
        .strings(&basenames)
        .iter()
        .position(|b| *b == b"libalpha.so")
        .unwrap();
    let mut blob = pkg.blob.clone();
    let at = 8 + 16 * header.entries().len() + states.offset as usize + i;
    blob[at] = 2;
    let got = package(blob).unwrap();
    assert!(
        !got.files.contains(&"/usr/lib/alpha/libalpha.so".to_string()),
        "{:?}",
        got.files
    );
    assert_eq!(got.files.len(), 2);
    assert_eq!(got.scripts.files, got.files);
}
