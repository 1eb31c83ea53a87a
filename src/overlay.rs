//! What overlayfs leaves in an upper directory: whiteouts (char device 0:0)
//! that remove a lower entry, and opaque directories (`user.overlay.opaque`,
//! with the `userxattr` mount option) that hide everything below them. Both
//! the sandbox (folding an upper directory back into a tree) and the commit
//! (applying it to the package union) read them through here.

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;

use anyhow::{Context, Result};

/// The names in `dir`, sorted (upper directories are applied in this order).
pub fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    names.sort();
    Ok(names)
}

/// Whether an upper-directory entry with this metadata is a whiteout.
pub fn is_whiteout(md: &std::fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Whether overlayfs (mounted with `userxattr`) marked the upper directory `dir` opaque.
pub fn is_opaque(dir: &Path) -> Result<bool> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).context("a path with a NUL byte")?;
    let mut v = [0u8; 4];
    let n = rustix::fs::lgetxattr(c.as_c_str(), c"user.overlay.opaque", &mut v[..]);
    Ok(matches!(n, Ok(1)) && v[0] == b'y')
}
