//! Reading an rpm database back (rpm >= 4.16's sqlite format, as
//! [`super::write`] or rpm itself leaves it): each installed header byte for
//! byte, with what layering needs to know about it (NEVRA, installed files,
//! scriptlets and triggers). A database taken from a device is as untrusted as
//! a package: every blob is bounded before it is read and bounds-checked
//! before it is parsed.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use rusqlite::{Connection, OpenFlags};

use crate::rpm::blob::{Blob, tag};
use crate::rpm::scripts::PackageScripts;

/// The largest header blob read: rpm's own limit on a header's data is 256 MiB,
/// real headers stay well under 1 MiB.
const MAX_BLOB: i64 = 64 << 20;

/// `RPMFILE_STATE_NOTINSTALLED`, `_NETSHARED` and `_WRONGCOLOR` (rpmfiles.h):
/// the package lists the file but rpm did not put it on disk.
const STATES_NOT_ON_DISK: [u64; 3] = [2, 3, 4];

/// One package of an existing rpm database.
#[derive(Debug, Clone)]
pub struct InstalledPackage {
    /// `name-[epoch:]version-release.arch`, as
    /// [`crate::rpm::header::name_evr_nevra`] spells it.
    pub nevra: String,
    /// Name.
    pub name: String,
    /// `[epoch:]version-release`.
    pub evr: String,
    /// `%{ARCH}`.
    pub arch: String,
    /// The header blob exactly as stored in `Packages.blob`.
    pub blob: Vec<u8>,
    /// Installed paths (files, directories, symlinks), in header order; neither
    /// `%ghost`s nor files rpm left out when installing (file state
    /// not-installed, net-shared or wrong color).
    pub files: Vec<String>,
    /// Its scriptlets and triggers (installed packages' file triggers fire on
    /// the files a layer adds); `scripts.files` is [`Self::files`].
    pub scripts: PackageScripts,
}

/// Reads every package of the rpm database file `db` (an `rpmdb.sqlite`), in
/// `hnum` order. The file is only read: it may sit in a read-only directory
/// (a deployed tree's `/usr`), and nothing is created beside it.
pub fn read_installed(db: &Path) -> Result<Vec<InstalledPackage>> {
    let ctx = || format!("reading the rpm database {}", db.display());
    let (conn, _copy) = open(db).with_context(ctx)?;
    read_packages(&conn).with_context(ctx)
}

/// Opens `db` read-only. Without pending changes beside it, sqlite's
/// `immutable` mode reads the file in place with no lock, `-shm` or journal,
/// which a read-only directory could not hold. A non-empty WAL or rollback
/// journal holds changes `immutable` would ignore (or, for a hot journal, a
/// half-written transaction it would read): the database is then copied with
/// them to a temporary directory, where sqlite can replay them. The
/// directory is returned with the connection and must outlive it.
fn open(db: &Path) -> Result<(Connection, Option<tempfile::TempDir>)> {
    let meta = fs::metadata(db).context("looking at the file")?;
    ensure!(meta.is_file(), "not a regular file");
    let sidecar = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let pending: Vec<&str> = ["-wal", "-journal"]
        .into_iter()
        .filter(|s| fs::metadata(sidecar(s)).is_ok_and(|m| m.len() > 0))
        .collect();
    if pending.is_empty() {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(immutable_uri(db), flags).context("opening the database")?;
        return Ok((conn, None));
    }
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let copy = dir.path().join(super::FILE_NAME);
    fs::copy(db, &copy).with_context(|| format!("copying the database to {}", copy.display()))?;
    for suffix in pending {
        let from = sidecar(suffix);
        let to = dir.path().join(format!("{}{suffix}", super::FILE_NAME));
        fs::copy(&from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    let conn = Connection::open(&copy).with_context(|| format!("opening the copy {}", copy.display()))?;
    Ok((conn, Some(dir)))
}

/// `file:PATH?immutable=1`, the path percent-encoded as sqlite's URI parser
/// needs (`?`, `#` and `%` would otherwise end or change it).
fn immutable_uri(db: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let mut uri = String::from("file:");
    for &b in db.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri += &format!("%{b:02X}");
        }
    }
    uri + "?immutable=1"
}

fn read_packages(conn: &Connection) -> Result<Vec<InstalledPackage>> {
    // The length is checked before the blob is fetched: sqlite knows it from
    // the record header without reading the blob itself.
    let mut stmt = conn
        .prepare("SELECT hnum, length(blob), CASE WHEN length(blob) <= ?1 THEN blob END FROM Packages ORDER BY hnum")
        .context("querying the Packages table (an rpm >= 4.16 sqlite database has one)")?;
    let mut rows = stmt.query([MAX_BLOB]).context("querying the Packages table")?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().context("reading the Packages table")? {
        let hnum: i64 = row.get(0)?;
        let len: Option<i64> = row.get(1)?;
        let Some(len) = len else {
            bail!("header {hnum} is NULL");
        };
        ensure!(
            len <= MAX_BLOB,
            "header {hnum} is {len} bytes, more than the {MAX_BLOB} allowed"
        );
        let blob: Vec<u8> = row.get(2).with_context(|| format!("reading header {hnum}"))?;
        out.push(package(blob).with_context(|| format!("reading header {hnum}"))?);
    }
    Ok(out)
}

/// What layering needs from one installed header.
pub(crate) fn package(blob: Vec<u8>) -> Result<InstalledPackage> {
    let header = Blob::parse(blob.clone())?;
    let arch = header.string(tag::ARCH).context("the header has no ARCH")?;
    let mut scripts = crate::rpm::scripts::from_header_blob(&blob)?;
    let skipped = not_on_disk(&header);
    if !skipped.is_empty() {
        scripts.files.retain(|f| !skipped.contains(f));
    }
    Ok(InstalledPackage {
        nevra: scripts.nevra.clone(),
        name: scripts.name.clone(),
        evr: scripts.evr.clone(),
        arch,
        blob,
        files: scripts.files.clone(),
        scripts,
    })
}

/// The paths the header lists but whose file state says rpm did not install
/// them. Only installed headers have file states.
fn not_on_disk(h: &Blob) -> Vec<String> {
    let Some(states) = h.find(tag::FILESTATES) else {
        return Vec::new();
    };
    let states = h.numbers(&states);
    if !states.iter().any(|s| STATES_NOT_ON_DISK.contains(s)) {
        return Vec::new();
    }
    let strings = |t: u32| h.find(t).map(|e| h.strings(&e)).unwrap_or_default();
    let (basenames, dirnames) = (strings(tag::BASENAMES), strings(tag::DIRNAMES));
    let dirindexes = h.find(tag::DIRINDEXES).map(|e| h.numbers(&e)).unwrap_or_default();
    states
        .iter()
        .enumerate()
        .filter(|(_, s)| STATES_NOT_ON_DISK.contains(s))
        .filter_map(|(i, _)| {
            let dir = dirnames.get(usize::try_from(*dirindexes.get(i)?).ok()?)?;
            let base = basenames.get(i)?;
            Some(format!(
                "{}{}",
                String::from_utf8_lossy(dir),
                String::from_utf8_lossy(base)
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests;
