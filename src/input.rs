//! Reading a file a user named (treefile, include, `.repo` file, key file,
//! board file, lockfile): bounded before it is read. The path is checked to
//! be a regular file before it is opened (opening a device can have effects,
//! and a FIFO blocks), opened without blocking, checked again through the
//! descriptor (the path may have changed meanwhile), its size compared with
//! the caller's cap, and then at most cap + 1 bytes are read (a file that
//! grows while read is still refused).

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Cap for small configuration files: treefiles, includes, `.repo` files,
/// board files, key files.
pub const CONFIG_CAP: u64 = 4 << 20;

/// The bytes of the regular file at `path`, at most `cap` of them. `what`
/// names the file's role in errors ("treefile", "public keys").
pub fn read_bounded(path: &Path, what: &str, cap: u64) -> Result<Vec<u8>> {
    let shown = path.display();
    let before = std::fs::metadata(path).with_context(|| format!("reading {what} {shown}"))?;
    check(&before, path, what, cap)?;
    // O_NONBLOCK: should a FIFO be put there after the check, opening it does not hang.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .with_context(|| format!("opening {what} {shown}"))?;
    let meta = file.metadata().with_context(|| format!("reading {what} {shown}"))?;
    check(&meta, path, what, cap)?;
    if (meta.dev(), meta.ino()) != (before.dev(), before.ino()) {
        bail!("{what} {shown} was replaced while it was opened");
    }
    read_capped(file, meta.len(), path, what, cap)
}

/// [`read_bounded`], as UTF-8 text.
pub fn read_text(path: &Path, what: &str, cap: u64) -> Result<String> {
    let bytes = read_bounded(path, what, cap)?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{what} {} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

fn read_capped(file: File, len: u64, path: &Path, what: &str, cap: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(usize::try_from(len.min(cap)).unwrap_or(0));
    file.take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if buf.len() as u64 > cap {
        bail!(
            "{what} {} grew past {cap} bytes while it was read; refusing it",
            path.display()
        );
    }
    Ok(buf)
}

fn check(meta: &Metadata, path: &Path, what: &str, cap: u64) -> Result<()> {
    let t = meta.file_type();
    if !t.is_file() {
        let kind = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        bail!("{what} {} is not a regular file (it is {kind})", path.display());
    }
    if meta.len() > cap {
        bail!(
            "{what} {} is {} bytes; refusing more than {cap}",
            path.display(),
            meta.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_and_refuses_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = dir.path().join("ok.yaml");
        std::fs::write(&ok, "ref: x\n").expect("write");
        assert_eq!(read_text(&ok, "treefile", 100).expect("read"), "ref: x\n");
        let e = read_bounded(&ok, "treefile", 3).expect_err("over the cap");
        assert!(
            format!("{e:#}").contains("ok.yaml is 7 bytes; refusing more than 3"),
            "{e:#}"
        );
        let fifo = dir.path().join("f.yaml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        for (p, kind) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/zero"), "a character device"),
            (dir.path(), "a directory"),
        ] {
            let e = read_bounded(p, "treefile", 100).expect_err("not regular");
            assert!(
                format!("{e:#}").contains(&format!("is not a regular file (it is {kind})")),
                "{e:#}"
            );
        }
        let e = read_text(Path::new("/nonexistent/x.yaml"), "treefile", 100).expect_err("missing");
        assert!(
            format!("{e:#}").starts_with("reading treefile /nonexistent/x.yaml"),
            "{e:#}"
        );
    }
}
