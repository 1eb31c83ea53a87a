//! The tree's rpm database: `rpmdb.sqlite` as rpm >= 4.16 writes it after
//! installing the tree's packages, built natively and deterministically.
//!
//! Each package's main header goes into `Packages` byte for byte, followed by
//! the tags rpm adds when installing (signature digests and sizes, install
//! time, transaction id and color, file states); the secondary indexes hold
//! the keys rpm's `tag2index` derives from that header. The schema is rpm's
//! own SQL, so rpm opens the file as if it had written it.
//!
//! Layering reads a tree's database back ([`read_installed`]) and writes a new
//! one from some of its headers, reused byte for byte, and new packages
//! ([`write_layered`]); both writers derive the index rows the same way.
//!
//! Unlike rpm, the database is left in rollback-journal mode rather than WAL:
//! a WAL database needs a writable `-shm` file beside it, which a read-only
//! `/usr` cannot provide, while rpm reads a rollback-journal database anywhere
//! (and switches it to WAL the first time it writes to it).

mod header;
mod index;
pub(crate) mod installed;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};

use crate::rpm::blob::{Blob, tag};
use index::INDEXES;
pub use installed::{InstalledPackage, read_installed};

/// The database's file name inside the dbdir.
pub const FILE_NAME: &str = "rpmdb.sqlite";

/// Writes `dbdir/rpmdb.sqlite` for `packages` (paths of .rpm files, in install
/// order), as rpm >= 4.16 would after installing them, with install time and
/// transaction id `install_time` (the compose's SOURCE_DATE_EPOCH). Same inputs
/// (and the same libsqlite3) give the same bytes. The database is built in a
/// temporary file in `dbdir`, synced and renamed into place, so a failure
/// leaves any previous database untouched.
///
/// The transaction color (`INSTALLCOLOR`) follows the packages' architectures
/// the way rpm's platform config would on the target: 3 for 64-bit multilib
/// arches such as aarch64 and x86_64, 0 for 32-bit ARM and noarch-only sets.
pub fn write(dbdir: &Path, packages: &[PathBuf], install_time: u32) -> Result<()> {
    let records: Vec<Record> = packages.iter().map(|p| Record::Added(p)).collect();
    write_records(dbdir, &records, install_time)
}

/// [`write`] for a layered tree: the database holds `kept` (headers of an
/// existing database, from [`read_installed`], stored byte for byte in this
/// order, with the install time, transaction id and color they have) followed
/// by the packages of the .rpm files `added`, installed at `install_time` with
/// the color of the whole set. Every index row is derived from the stored
/// header exactly as [`write`] derives it.
pub fn write_layered(dbdir: &Path, kept: &[InstalledPackage], added: &[PathBuf], install_time: u32) -> Result<()> {
    let records: Vec<Record> = kept
        .iter()
        .map(Record::Kept)
        .chain(added.iter().map(|p| Record::Added(p)))
        .collect();
    write_records(dbdir, &records, install_time)
}

/// One package of the database being written.
enum Record<'a> {
    /// A header of an existing database, stored as it is.
    Kept(&'a InstalledPackage),
    /// An .rpm file, installed by this transaction.
    Added(&'a Path),
}

fn write_records(dbdir: &Path, records: &[Record], install_time: u32) -> Result<()> {
    // Every package is read once before anything is written: a bad package
    // fails the compose before a file appears, and the color needs them all.
    let mut color = 0;
    let mut seen = std::collections::BTreeMap::new();
    for record in records {
        let (nevra, arch, origin) = match record {
            Record::Kept(p) => {
                // The color comes from the header that is stored, whatever `p` says.
                let h = Blob::parse(p.blob.clone())
                    .with_context(|| format!("parsing the installed header of {}", p.nevra))?;
                let arch = h
                    .string(tag::ARCH)
                    .with_context(|| format!("the installed header of {} has no ARCH", p.nevra))?;
                (p.nevra.clone(), arch, format!("the installed {}", p.nevra))
            }
            Record::Added(path) => {
                let pkg =
                    header::install(path, install_time, 0).with_context(|| format!("reading {}", path.display()))?;
                (pkg.nevra, pkg.arch, path.display().to_string())
            }
        };
        color = color.max(arch_color(&arch));
        if let Some(first) = seen.insert(nevra.clone(), origin.clone()) {
            bail!("{nevra} is listed twice ({first} and {origin})");
        }
    }

    fs::create_dir_all(dbdir).with_context(|| format!("creating {}", dbdir.display()))?;
    let dest = dbdir.join(FILE_NAME);
    let tmp = crate::atomic::temp_beside(&dest)?;
    fill(tmp.path(), records, install_time, color)
        .with_context(|| format!("writing the rpm database {}", tmp.path().display()))?;
    // rpm's database is world-readable: `rpm -q` works for every user.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", tmp.path().display()))?;

    // A journal or WAL left by an earlier database would be replayed onto ours.
    for suffix in ["-journal", "-wal", "-shm"] {
        let stale = dbdir.join(format!("{FILE_NAME}{suffix}"));
        match fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", stale.display())),
        }
    }
    crate::atomic::persist(tmp, &dest).with_context(|| format!("renaming the database to {}", dest.display()))?;
    tracing::debug!(path = %dest.display(), packages = records.len(), "wrote the rpm database");
    Ok(())
}

/// Creates the schema in the empty file at `path` and adds every package.
fn fill(path: &Path, records: &[Record], install_time: u32, color: u32) -> Result<()> {
    let mut conn = Connection::open(path)?;
    // The file is renamed into place only once complete: no journal needed.
    conn.execute_batch("PRAGMA page_size = 4096; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
    let tx = conn.transaction()?;
    tx.execute_batch(&schema())?;
    {
        let mut put_pkg = tx.prepare("INSERT INTO 'Packages' VALUES(?, ?)")?;
        let mut put_keys = INDEXES
            .iter()
            .map(|i| tx.prepare(&format!("INSERT INTO '{}' VALUES(?, ?, ?)", i.table)))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for record in records {
            let (blob, origin) = match record {
                Record::Kept(p) => (
                    Blob::parse(p.blob.clone())
                        .with_context(|| format!("parsing the installed header of {}", p.nevra))?,
                    format!("the installed {}", p.nevra),
                ),
                Record::Added(path) => (
                    header::install(path, install_time, color)
                        .with_context(|| format!("reading {}", path.display()))?
                        .blob,
                    path.display().to_string(),
                ),
            };
            put_pkg.execute((None::<u32>, blob.bytes()))?;
            let hnum = tx.last_insert_rowid();
            for (index, put) in INDEXES.iter().zip(&mut put_keys) {
                let rows = index::rows(&blob, index).with_context(|| format!("indexing {origin}"))?;
                for row in rows {
                    // rpm binds string keys as TEXT whatever their encoding.
                    let key = if index.text {
                        ValueRef::Text(&row.key)
                    } else {
                        ValueRef::Blob(&row.key)
                    };
                    put.execute((ToSqlOutput::Borrowed(key), hnum, row.idx))?;
                }
            }
        }
    }
    tx.commit()?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(())
}

/// rpm's tables and indexes, with rpm's own SQL (lib/backend/sqlite.c), in the
/// order rpm creates them.
fn schema() -> String {
    let mut sql = String::from(
        "CREATE TABLE IF NOT EXISTS 'Packages' (hnum INTEGER PRIMARY KEY AUTOINCREMENT,blob BLOB NOT NULL);\n",
    );
    for i in &INDEXES {
        let (t, keytype) = (i.table, if i.text { "TEXT" } else { "BLOB" });
        sql += &format!(
            "CREATE TABLE IF NOT EXISTS '{t}' (key '{keytype}' NOT NULL, hnum INTEGER NOT NULL, idx INTEGER NOT NULL, \
             FOREIGN KEY (hnum) REFERENCES 'Packages'(hnum));\n"
        );
        for (col, wanted) in [("key", i.text), ("hnum", i.array)] {
            if wanted {
                sql += &format!("CREATE INDEX IF NOT EXISTS '{t}_{col}_idx' ON '{t}'({col} ASC);\n");
            }
        }
    }
    sql
}

/// The transaction color rpm's platform config gives an arch (`CANONCOLOR` in
/// rpm's installplatform): 3 where 32- and 64-bit ELF files may coexist.
fn arch_color(arch: &str) -> u32 {
    match arch {
        "x86_64" | "amd64" | "ia32e" | "aarch64" | "ppc64" | "ppc64p7" | "ppc64le" | "s390x" | "mips64"
        | "mips64el" | "mipsisa64r6" | "mipsisa64r6el" | "riscv64" => 3,
        a if a.starts_with("sparc64") => 3,
        "ia64" => 2,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colors_follow_rpm_platforms() {
        for (arch, color) in [
            ("aarch64", 3),
            ("x86_64", 3),
            ("armv7hl", 0),
            ("noarch", 0),
            ("i686", 0),
            ("ia64", 2),
        ] {
            assert_eq!(arch_color(arch), color, "{arch}");
        }
    }

    #[test]
    fn schema_has_rpms_tables_and_indexes() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&schema()).unwrap();
        let mut stmt = conn
            .prepare("SELECT type, name FROM sqlite_master ORDER BY rowid")
            .unwrap();
        let names: Vec<String> = stmt
            .query_map([], |r| {
                Ok(format!("{} {}", r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        // Packages, sqlite_sequence, 18 index tables, 16 key and 13 hnum indexes.
        assert_eq!(names.len(), 2 + 18 + 16 + 13, "{names:#?}");
        assert_eq!(
            names[..4],
            [
                "table Packages",
                "table sqlite_sequence",
                "table Name",
                "index Name_key_idx"
            ]
        );
        assert!(names.contains(&"table Installtid".to_string()));
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("index Installtid") || n.starts_with("index Sigmd5"))
        );
    }
}
