//! Writing a generated repository: the up-to-date check against the stamp, a
//! staging directory beside the output, package files with pinned mtimes,
//! `createrepo_c`, and the atomic swap into place. Shared by the sample
//! repository and the device repository.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::{PackageFile, STAMP, Summary, build};
use arbor::arch::Arch;
use arbor::runner::Tool;

/// Build time written into every package unless `SOURCE_DATE_EPOCH` says otherwise.
const DEFAULT_SOURCE_DATE: u32 = 1_704_067_200; // 2024-01-01

/// `SOURCE_DATE_EPOCH`, else a fixed date: package build times and file mtimes.
pub fn source_date() -> u32 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SOURCE_DATE)
}

/// The repository at `out` when it was built from inputs with this digest and
/// every package it lists is still there.
pub fn up_to_date(out: &Path, digest: &str) -> Option<Summary> {
    let existing = read_stamp(out)?;
    (existing.input_digest == digest
        && existing
            .packages
            .iter()
            .all(|p| out.join("Packages").join(&p.file).is_file()))
    .then(|| Summary {
        rebuilt: false,
        out: out.to_path_buf(),
        ..existing
    })
}

/// A repository being built in a directory beside its final place.
pub struct Staging {
    dir: TempDir,
    out: PathBuf,
    source_date: u32,
    started: Instant,
}

impl Staging {
    /// Creates `.<prefix>-*/Packages` next to `out` (an absolute path).
    pub fn new(out: &Path, prefix: &str, source_date: u32) -> Result<Staging> {
        let started = Instant::now();
        let parent = out.parent().context("output directory has no parent")?;
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{prefix}-"))
            .tempdir_in(parent)
            .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
        let pkg_dir = dir.path().join("Packages");
        std::fs::create_dir(&pkg_dir).with_context(|| format!("creating {}", pkg_dir.display()))?;
        Ok(Staging {
            dir,
            out: out.to_path_buf(),
            source_date,
            started,
        })
    }

    /// Writes `built` into `Packages/` (through a temporary name) and describes it.
    pub fn write_package(&self, built: build::Built, name: &str, arch: Arch) -> Result<PackageFile> {
        let dir = self.dir.path().join("Packages");
        let path = dir.join(&built.file_name);
        let tmp = dir.join(format!(".{}.tmp", built.file_name));
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        built
            .package
            .write(&mut f)
            .with_context(|| format!("writing {}", tmp.display()))?;
        // createrepo_c records the file's mtime in primary.xml: pin it so metadata is reproducible.
        let when = std::time::UNIX_EPOCH + Duration::from_secs(self.source_date.into());
        f.set_modified(when)
            .with_context(|| format!("setting the mtime of {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} into place", tmp.display()))?;
        let size = std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        Ok(PackageFile {
            file: built.file_name,
            name: name.to_string(),
            arch: arch.to_string(),
            size,
            content_bytes: built.content_bytes,
        })
    }

    /// Generates the metadata, writes the stamp, and swaps the repository into place.
    pub fn finish(self, what: &str, input_digest: String, mut packages: Vec<PackageFile>) -> Result<Summary> {
        packages.sort_by(|a, b| a.file.cmp(&b.file));
        Tool::new("createrepo_c")
            .args([
                "--quiet",
                "--no-database",
                "--revision",
                &self.source_date.to_string(),
                "--set-timestamp-to-revision",
            ])
            .arg(self.dir.path())
            .run()
            .with_context(|| format!("generating rpm-md metadata for the {what}"))?;
        let summary = Summary {
            out: self.out.clone(),
            input_digest,
            content_bytes: packages.iter().map(|p| p.content_bytes).sum(),
            packages,
            rebuilt: true,
            elapsed: self.started.elapsed(),
        };
        let stamp = serde_json::to_vec_pretty(&summary)?;
        std::fs::write(self.dir.path().join(STAMP), stamp).with_context(|| format!("writing the {what} stamp"))?;
        replace_dir(self.dir.keep(), &self.out)?;
        Ok(summary)
    }
}

/// Swaps `staging` in as `out`: the old repository stays complete until the rename.
fn replace_dir(staging: PathBuf, out: &Path) -> Result<()> {
    let old = out.with_extension("old");
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    if out.exists() {
        std::fs::rename(out, &old).with_context(|| format!("moving {} aside", out.display()))?;
    }
    std::fs::rename(&staging, out).with_context(|| format!("moving {} to {}", staging.display(), out.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(())
}

fn read_stamp(out: &Path) -> Option<Summary> {
    let bytes = std::fs::read(out.join(STAMP)).ok()?;
    serde_json::from_slice(&bytes).ok()
}
