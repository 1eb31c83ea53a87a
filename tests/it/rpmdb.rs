//! The rpm database writer against the real rpm: Debian's rpm queries and
//! verifies what we write, and what we write matches what rpm itself writes
//! with `rpm -i --justdb` for the same packages.

use crate::common::{self, Deadline as _};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use arbor::compose::rpmdb;
use common::{package, rpm};

/// 2024-01-01T00:00:00Z, as SOURCE_DATE_EPOCH.
const EPOCH: u32 = 1_704_067_200;

/// The tree's packages, in install order.
fn packages() -> Vec<PathBuf> {
    [
        ("filesystem", "aarch64"),
        ("setup", "noarch"),
        ("glibc", "aarch64"),
        ("ncurses-libs", "aarch64"),
        ("bash", "aarch64"),
        ("busybox", "aarch64"),
        ("hello", "noarch"),
        ("hello-data", "noarch"),
    ]
    .iter()
    .map(|(n, a)| package(n, a))
    .collect()
}

/// Runs rpm, asserting success and a clean stderr (rpm reports headers whose
/// digests do not match on stderr and then skips them); returns stdout.
fn query(cmd: &mut Command) -> String {
    let out = cmd.timed_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("error") && !stderr.contains("warning"),
        "{cmd:?} failed with {}:\nstdout:\n{}\nstderr:\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn written() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    rpmdb::write(dir.path(), &packages(), EPOCH).unwrap();
    dir
}

#[test]
fn rpm_lists_exactly_the_written_set() {
    let db = written();
    let mut got: Vec<String> = query(rpm(db.path()).args(["-qa", "--qf", "%{NEVRA}\n"]))
        .lines()
        .map(String::from)
        .collect();
    got.sort();
    // bash, busybox, glibc and ncurses-libs come from Debian's archive: their versions
    // are read from the sample packages.
    let mut want = [
        common::nevra("bash", "aarch64"),
        common::nevra("busybox", "aarch64"),
        "filesystem-3.18-6.aarch64".to_string(),
        common::nevra("glibc", "aarch64"),
        "hello-2.12-1.noarch".to_string(),
        "hello-data-2.12-1.noarch".to_string(),
        common::nevra("ncurses-libs", "aarch64"),
        "setup-2.14.5-2.noarch".to_string(),
    ];
    want.sort();
    assert_eq!(got, want);
    let names: Vec<String> = std::fs::read_dir(db.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["rpmdb.sqlite"], "only the database is left in the dbdir");
}

#[test]
#[ignore = "needs root: drops to an unprivileged user to read it"]
fn an_unprivileged_user_reads_it_from_a_read_only_directory() {
    common::need_root();
    use std::os::unix::fs::PermissionsExt;
    let db = written();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&db.path().join("rpmdb.sqlite")), 0o644);
    // As on a read-only /usr: no -shm file can be created next to the database.
    std::fs::set_permissions(db.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "rpm", "--dbpath"])
        .arg(db.path());
    let got = query(cmd.args(["-q", "bash"]));
    assert_eq!(got.trim(), common::nvra("bash", "aarch64"));
}

#[test]
fn rpm_answers_dependency_and_trigger_queries() {
    let db = written();
    let provider = query(rpm(db.path()).args(["-q", "--whatprovides", "libc.so.6()(64bit)"]));
    assert_eq!(provider.trim(), common::nvra("glibc", "aarch64"));

    let requires = query(rpm(db.path()).args(["-q", "--requires", "bash"]));
    assert!(
        requires.lines().any(|l| l.trim() == "libtinfo.so.6()(64bit)"),
        "bash requires:\n{requires}"
    );
    let whatrequires = query(rpm(db.path()).args(["-q", "--whatrequires", "libtinfo.so.6()(64bit)"]));
    assert!(
        whatrequires.contains(&common::nvra("bash", "aarch64")),
        "{whatrequires}"
    );

    let triggers = query(rpm(db.path()).args(["-q", "--filetriggers", "glibc"]));
    assert!(
        triggers.contains("transfiletriggerin") && triggers.contains("ldconfig"),
        "glibc's file triggers:\n{triggers}"
    );

    // Weak dependencies have indexes of their own.
    let recommended = query(rpm(db.path()).args(["-q", "--whatrecommends", "hello-docs"]));
    assert_eq!(recommended.trim(), "hello-2.12-1.noarch");
    let suggested = query(rpm(db.path()).args(["-q", "--whatsuggests", "hello-extras"]));
    assert_eq!(suggested.trim(), "hello-2.12-1.noarch");
}

#[test]
fn install_time_and_tid_are_source_date_epoch() {
    let db = written();
    let got = query(rpm(db.path()).args(["-q", "--qf", "%{INSTALLTIME} %{INSTALLTID} %{INSTALLCOLOR}\n", "bash"]));
    assert_eq!(got.trim(), format!("{EPOCH} {EPOCH} 3"));
    let by_tid = query(rpm(db.path()).args(["-q", "--qf", "%{NAME}\n", "--tid", &EPOCH.to_string()]));
    assert_eq!(
        by_tid.lines().count(),
        8,
        "rpm finds every package by its transaction id:\n{by_tid}"
    );
}

/// Unpacks `pkgs` into `root` the way rpm would lay them out.
fn extract(root: &Path, pkgs: &[PathBuf]) {
    for p in pkgs {
        let mut rpm2cpio = Command::new("rpm2cpio")
            .arg(p)
            .stdout(Stdio::piped())
            .timed_spawn()
            .unwrap();
        let status = Command::new("cpio")
            .args(["-idm", "--quiet", "--no-absolute-filenames"])
            .current_dir(root)
            .stdin(rpm2cpio.stdout.take().unwrap())
            .timed_status()
            .unwrap();
        // Debian's rpm2cpio exits 1 even when it wrote the whole archive.
        rpm2cpio.wait().unwrap();
        assert!(status.success(), "extracting {}", p.display());
    }
}

#[test]
fn rpm_finds_owners_and_verifies_files_in_an_extracted_root() {
    let root = tempfile::tempdir().unwrap();
    extract(root.path(), &packages());
    rpmdb::write(&root.path().join("usr/lib/sysimage/rpm"), &packages(), EPOCH).unwrap();
    let in_root = || {
        let mut c = rpm(Path::new("/usr/lib/sysimage/rpm"));
        c.arg("--root").arg(root.path());
        c
    };

    let owner = query(in_root().args(["-qf", "/usr/bin/bash"]));
    assert_eq!(owner.trim(), common::nvra("bash", "aarch64"));
    let owner = query(in_root().args(["-qf", "/usr/share/hello/greeting.txt"]));
    assert_eq!(owner.trim(), "hello-data-2.12-1.noarch");

    let out = in_root().args(["-V", "-v", "hello-data"]).timed_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    println!(
        "rpm -V -v hello-data:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "rpm -V hello-data failed:\n{report}");
    // -v lists every file; a clean line is nine dots.
    assert!(report.lines().all(|l| l.starts_with(".........")), "{report}");
}

/// The fields of a header blob: (tag, type, offset, count) and the data area.
fn entries(blob: &[u8]) -> (Vec<[u32; 4]>, usize) {
    let be = |at: usize| u32::from_be_bytes(blob[at..at + 4].try_into().unwrap());
    let il = be(0) as usize;
    let e = (0..il).map(|i| [0, 4, 8, 12].map(|f| be(8 + 16 * i + f))).collect();
    (e, 8 + 16 * il)
}

/// `blob` with its INSTALLTIME and INSTALLTID set to `time`.
fn with_install_time(mut blob: Vec<u8>, time: u32) -> Vec<u8> {
    let (es, data) = entries(&blob);
    for [tag, _, offset, _] in es {
        if tag == 1008 || tag == 1128 {
            let at = data + offset as usize;
            blob[at..at + 4].copy_from_slice(&time.to_be_bytes());
        }
    }
    blob
}

/// What a database holds, keyed so that two databases can be compared:
/// schema, name -> header blob, and (table, name, key, idx) rows.
#[derive(Debug, PartialEq)]
struct Contents {
    schema: Vec<(String, String, String)>,
    blobs: BTreeMap<String, Vec<u8>>,
    rows: Vec<(String, String, Vec<u8>, i64)>,
}

fn contents(db: &Path) -> Contents {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let schema: Vec<(String, String, String)> = conn
        .prepare("SELECT type, name, sql FROM sqlite_master WHERE name != 'sqlite_stat1' ORDER BY rowid")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, Option<String>>(2)?.unwrap_or_default()))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let names: BTreeMap<i64, String> = conn
        .prepare("SELECT hnum, key FROM Name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let blobs = conn
        .prepare("SELECT hnum, blob FROM Packages")
        .unwrap()
        .query_map([], |r| {
            Ok((names[&r.get::<_, i64>(0)?].clone(), with_install_time(r.get(1)?, EPOCH)))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let mut rows = Vec::new();
    for (_, table, _) in schema
        .iter()
        .filter(|(t, n, _)| t == "table" && n != "Packages" && n != "sqlite_sequence")
    {
        let mut stmt = conn.prepare(&format!("SELECT key, hnum, idx FROM '{table}'")).unwrap();
        let got = stmt
            .query_map([], |r| {
                let key = match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Text(t) => t.to_vec(),
                    rusqlite::types::ValueRef::Blob(b) if table == "Installtid" => {
                        assert_eq!(b.len(), 4, "Installtid keys are 4-byte integers");
                        b"<tid>".to_vec()
                    }
                    rusqlite::types::ValueRef::Blob(b) => b.to_vec(),
                    other => panic!("{table} has a {other:?} key"),
                };
                Ok((table.clone(), names[&r.get::<_, i64>(1)?].clone(), key, r.get(2)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        rows.extend(got);
    }
    rows.sort();
    Contents { schema, blobs, rows }
}

/// Installs `pkgs` with Debian's rpm (`-i --justdb`) and with our writer, and
/// compares the two databases: schema, header blobs (install time aside) and
/// every index row.
fn assert_matches_rpm(pkgs: &[PathBuf]) {
    let ours = tempfile::tempdir().unwrap();
    rpmdb::write(ours.path(), pkgs, EPOCH).unwrap();
    let theirs = tempfile::tempdir().unwrap();
    let out = rpm(Path::new("/db"))
        .arg("--root")
        .arg(theirs.path())
        .args([
            "-i",
            "--justdb",
            "--nodeps",
            "--noscripts",
            "--notriggers",
            "--ignorearch",
        ])
        .args(pkgs)
        .timed_output()
        .unwrap();
    assert!(
        out.status.success(),
        "rpm -i --justdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ours = contents(&ours.path().join("rpmdb.sqlite"));
    let theirs = contents(&theirs.path().join("db/rpmdb.sqlite"));
    assert_eq!(ours.schema, theirs.schema);
    assert_eq!(
        ours.blobs.keys().collect::<Vec<_>>(),
        theirs.blobs.keys().collect::<Vec<_>>()
    );
    for (name, blob) in &ours.blobs {
        assert!(
            blob == &theirs.blobs[name],
            "{name}'s header differs from rpm's (beyond the install time)"
        );
    }
    let show = |rows: &[(String, String, Vec<u8>, i64)]| {
        rows.iter()
            .map(|(t, n, k, i)| format!("{t} {n} {} {i}", String::from_utf8_lossy(k)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        ours.rows == theirs.rows,
        "index rows differ:\nours:\n{}\nrpm's:\n{}",
        show(&ours.rows),
        show(&theirs.rows)
    );
}

#[test]
fn matches_what_rpm_itself_writes() {
    assert_matches_rpm(&packages());
}

/// A package with what the sample set lacks: rich dependencies in every
/// dependency kind, install-only and erase-time requirements, duplicate
/// trigger names, file triggers, an epoch and a group.
fn unusual_package(dir: &Path) -> PathBuf {
    use rpm::{Dependency, FileOptions, PackageBuilder, Scriptlet};
    let script = || Scriptlet::new("true");
    let pkg = PackageBuilder::new("unusual", "1.0", "MIT", "aarch64", "Dependencies rpm indexes specially")
        .using_config(rpm::BuildConfig::v4().source_date(EPOCH))
        .epoch(2)
        .release("3")
        .group("System Environment/Base")
        .with_file_contents("unusual\n", FileOptions::new("/usr/share/unusual/data"))
        .unwrap()
        .provides(Dependency::eq("virtual-thing", "1"))
        .requires(Dependency::any("(foo if bar else baz)"))
        .requires(Dependency::any("(a or (b and c))"))
        .requires(Dependency::any("(broken or)"))
        .requires(Dependency::script_pre("needed-to-install-only"))
        .requires(Dependency::script_preun("needed-to-remove"))
        .requires(Dependency::greater_eq("plain", "2"))
        .conflicts(Dependency::any("(x with y)"))
        .obsoletes(Dependency::less("old-thing", "1"))
        .recommends(Dependency::any("(r1 unless r2)"))
        .suggests(Dependency::any("suggested"))
        .supplements(Dependency::any("(s1 and (s2 or s3))"))
        .enhances(Dependency::any("(e1 or rpmlib(Foo))"))
        .post_install_script(script())
        .trigger_in("bash", None, script())
        .trigger_un("bash", None, script())
        .trigger_in("glibc", None, script())
        .file_trigger_in("/usr/lib", None, script())
        .trans_file_trigger_in("/usr/share", None, script())
        .trans_file_trigger_in("/etc", None, script())
        .build()
        .unwrap();
    pkg.write_to(dir).unwrap()
}

#[test]
fn rich_dependencies_and_triggers_match_what_rpm_writes() {
    let dir = tempfile::tempdir().unwrap();
    let unusual = unusual_package(dir.path());
    assert_matches_rpm(&[package("bash", "aarch64"), unusual.clone()]);

    let db = tempfile::tempdir().unwrap();
    rpmdb::write(db.path(), &[unusual], EPOCH).unwrap();
    let who = |what: &str, dep: &str| query(rpm(db.path()).args(["-q", what, dep, "--qf", "%{NAME}\n"]));
    assert_eq!(
        who("--whatrequires", "baz").trim(),
        "unusual",
        "names inside rich dependencies are indexed"
    );
    assert_eq!(who("--whatsupplements", "s3").trim(), "unusual");
    assert_eq!(who("--whatprovides", "virtual-thing").trim(), "unusual");
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let a = written();
    let b = written();
    let read = |d: &tempfile::TempDir| std::fs::read(d.path().join("rpmdb.sqlite")).unwrap();
    assert!(read(&a) == read(&b), "two writes of the same set differ");

    let c = tempfile::tempdir().unwrap();
    rpmdb::write(c.path(), &packages(), EPOCH + 1).unwrap();
    assert!(read(&a) != read(&c), "the install time is part of the database");
}

#[test]
fn a_bad_package_fails_naming_it_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let not_rpm = tmp.path().join("not-a-package.rpm");
    std::fs::write(&not_rpm, "this is not an rpm\n").unwrap();
    let truncated = tmp.path().join("truncated.rpm");
    std::fs::write(&truncated, &std::fs::read(package("bash", "aarch64")).unwrap()[..5000]).unwrap();

    for bad in [&not_rpm, &truncated] {
        let mut pkgs = packages();
        pkgs.insert(3, bad.clone());
        let dbdir = tmp.path().join("db");
        let err = format!("{:#}", rpmdb::write(&dbdir, &pkgs, EPOCH).unwrap_err());
        assert!(
            err.contains(&bad.display().to_string()),
            "the error names the file: {err}"
        );
        let left: Vec<_> = std::fs::read_dir(&dbdir).into_iter().flatten().collect();
        assert!(left.is_empty(), "{err}: left behind {left:?}");
    }

    // A failed write keeps the previous database.
    let dbdir = tmp.path().join("db");
    rpmdb::write(&dbdir, &packages(), EPOCH).unwrap();
    let before = std::fs::read(dbdir.join("rpmdb.sqlite")).unwrap();
    let mut pkgs = packages();
    pkgs.push(not_rpm);
    assert!(rpmdb::write(&dbdir, &pkgs, EPOCH + 1).is_err());
    assert!(std::fs::read(dbdir.join("rpmdb.sqlite")).unwrap() == before);
    assert_eq!(std::fs::read_dir(&dbdir).unwrap().count(), 1);

    let twice = [package("bash", "aarch64"), package("bash", "aarch64")];
    let err = format!(
        "{:#}",
        rpmdb::write(&tmp.path().join("twice"), &twice, EPOCH).unwrap_err()
    );
    assert!(err.contains("listed twice"), "{err}");
}
