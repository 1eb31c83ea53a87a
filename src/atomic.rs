//! The one way arbor puts a file in place: a temporary file in the target's
//! directory, fsync, rename over the target (or, for files that must not be
//! replaced, a rename that fails if the target appeared), fsync of the
//! directory. A run killed at any point leaves the old file or the new one,
//! never a part of either.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write as _;
use std::path::{Component, Path};

use anyhow::{Context, Result, bail};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};

/// A temporary file in `dest`'s directory, to be [`persist`]ed over it.
pub fn temp_beside(dest: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = parent_dir(dest);
    tempfile::Builder::new()
        .prefix(".arbor-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))
}

/// Syncs `tmp`, renames it to `dest` (replacing it) and syncs the directory.
pub fn persist(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<()> {
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", tmp.path().display()))?;
    tmp.persist(dest).map_err(|e| {
        anyhow::Error::new(e.error).context(format!("moving the new file into place at {}", dest.display()))
    })?;
    sync_dir(parent_dir(dest))
}

/// [`persist`], failing with `ErrorKind::AlreadyExists` in the chain if
/// `dest` exists (keys are never overwritten).
pub fn persist_new(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<()> {
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", tmp.path().display()))?;
    tmp.persist_noclobber(dest).map_err(|e| {
        anyhow::Error::new(e.error).context(format!("moving the new file into place at {}", dest.display()))
    })?;
    sync_dir(parent_dir(dest))
}

/// Replaces `dest` with `content` (mode 0644 less the umask, as a new file).
pub fn write(dest: &Path, content: &[u8]) -> Result<()> {
    let mut tmp = temp_beside(dest)?;
    tmp.write_all(content)
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    // tempfile creates 0600; a replaced file reads like any other the user writes.
    let mode = 0o644 & !current_umask();
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", tmp.path().display()))?;
    persist(tmp, dest)
}

/// Writes `content` to `rel` beneath `dir`: missing parents of `rel` are
/// created, `rel` may not leave `dir`, and no symlink in `dir` is followed.
pub fn write_beneath(dir: &Path, rel: &str, content: &[u8]) -> Result<()> {
    let rel_path = Path::new(rel);
    let ok = !rel.is_empty() && rel_path.components().all(|c| matches!(c, Component::Normal(_)));
    let (Some(parent), Some(file_name), true) = (rel_path.parent(), rel_path.file_name(), ok) else {
        bail!(
            "{rel:?} is not a relative path of plain names beneath {}",
            dir.display()
        );
    };
    let shown = dir.join(rel_path);
    let root = Dir::open_ambient_dir(dir, ambient_authority()).with_context(|| format!("opening {}", dir.display()))?;
    let pdir = if parent.as_os_str().is_empty() {
        root
    } else {
        root.create_dir_all(parent)
            .with_context(|| format!("creating {}", dir.join(parent).display()))?;
        root.open_dir(parent)
            .with_context(|| format!("opening {}", dir.join(parent).display()))?
    };
    let mut tmp_name = OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(".arbor-tmp");
    let mut f = pdir
        .open_with(&tmp_name, OpenOptions::new().write(true).create(true).truncate(true))
        .with_context(|| format!("creating a temporary file for {}", shown.display()))?;
    f.write_all(content)
        .with_context(|| format!("writing {}", shown.display()))?;
    f.sync_all().with_context(|| format!("syncing {}", shown.display()))?;
    drop(f);
    pdir.rename(&tmp_name, &pdir, file_name)
        .with_context(|| format!("renaming into {}", shown.display()))?;
    // cap-std's directory handles are O_PATH, which fsync refuses: open the directory itself.
    pdir.open(".")
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the directory of {}", shown.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// The directory a path names its file in: `.` for a bare file name (whose
/// `parent()` is empty).
pub fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn current_umask() -> u32 {
    // umask can only be read by setting it; put it straight back.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(old);
    old.bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("x.json");
        write(&f, b"one").expect("first write");
        write(&f, b"two").expect("second write");
        assert_eq!(std::fs::read(&f).expect("read"), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["x.json"]);
    }

    #[test]
    fn persist_new_never_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("key");
        std::fs::write(&f, "old").expect("write");
        let tmp = temp_beside(&f).expect("temp");
        let e = persist_new(tmp, &f).expect_err("must refuse");
        assert!(
            e.chain().any(|c| c
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::AlreadyExists)),
            "{e:#}"
        );
        assert_eq!(std::fs::read_to_string(&f).expect("read"), "old");
    }

    #[test]
    fn write_beneath_replaces_makes_parents_and_stays_beneath() {
        let tmp = tempfile::tempdir().expect("ok");
        write_beneath(tmp.path(), "extlinux/extlinux.conf", b"one\n").expect("ok");
        write_beneath(tmp.path(), "extlinux/extlinux.conf", b"two\n").expect("ok");
        write_beneath(tmp.path(), "config.txt", b"x\n").expect("ok");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("extlinux/extlinux.conf")).expect("ok"),
            "two\n"
        );
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("extlinux"))
            .expect("ok")
            .map(|e| e.expect("ok").file_name())
            .collect();
        assert_eq!(names, ["extlinux.conf"]);
        for bad in ["", "../x", "/etc/x", "a/../../x", "./x"] {
            let e = write_beneath(tmp.path(), bad, b"").expect_err("refused").to_string();
            assert!(e.contains("relative path"), "{bad}: {e}");
        }
    }
}
