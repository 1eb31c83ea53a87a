//! The sample repository: real aarch64/armv7hl/x86_64 RPMs made from Debian's
//! packages, described by the manifests in `samples/packages/`, with rpm-md
//! metadata from `createrepo_c`. Tests, benchmarks and the demo compose from it.
//!
//! The repository is rebuilt only when an input changed (manifests, the .debs
//! apt would fetch, or this generator); the output directory is replaced
//! atomically, so a killed build leaves the previous repository as it was.

pub mod build;
pub mod debs;
pub mod manifest;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use arbor::arch::Arch;
use arbor::parallel;
use arbor::progress::Progress;
use arbor::runner::Tool;

/// Bump when the generator's output changes for the same inputs.
const GENERATOR_VERSION: u32 = 2;
/// Name of the file recording what a repository was built from.
pub const STAMP: &str = "arbor-sample-repo.json";
/// Build time written into every package unless `SOURCE_DATE_EPOCH` says otherwise.
const DEFAULT_SOURCE_DATE: u32 = 1_704_067_200; // 2024-01-01

/// How to build the sample repository.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory of package manifests.
    pub manifests: PathBuf,
    /// Output repository directory (replaced as a whole).
    pub out: PathBuf,
    /// Where downloaded .deb files are kept between runs.
    pub deb_cache: PathBuf,
    /// Parallel package builds.
    pub jobs: usize,
    /// Rebuild even when the inputs are unchanged.
    pub force: bool,
}

impl Options {
    /// Defaults relative to the source tree at `root`: `samples/packages`,
    /// `target/sample-repo`, and `$ARBOR_DEB_CACHE` or `~/.cache/arbor/debs`.
    pub fn for_source_tree(root: &Path) -> Options {
        Options {
            manifests: root.join("samples/packages"),
            out: root.join("target/sample-repo"),
            deb_cache: default_deb_cache(),
            jobs: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            force: false,
        }
    }
}

/// `$ARBOR_DEB_CACHE`, else `$XDG_CACHE_HOME/arbor/debs`, else `~/.cache/arbor/debs`.
pub fn default_deb_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("ARBOR_DEB_CACHE") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    base.join("arbor/debs")
}

/// One package in the built repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PackageFile {
    /// File name under `Packages/`.
    pub file: String,
    /// Package name.
    pub name: String,
    /// Arch.
    pub arch: String,
    /// Size of the .rpm file in bytes.
    pub size: u64,
    /// Bytes of file content packed into its payload.
    pub content_bytes: u64,
}

/// What a build produced (also stored as the stamp file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// The repository directory.
    pub out: PathBuf,
    /// Digest of every input; equal digests mean an identical repository.
    pub input_digest: String,
    /// Packages, sorted by file name.
    pub packages: Vec<PackageFile>,
    /// File content bytes packed into payloads.
    pub content_bytes: u64,
    /// Whether this run built anything (false: the repository was up to date).
    #[serde(skip)]
    pub rebuilt: bool,
    /// Time spent building (zero when up to date).
    #[serde(skip)]
    pub elapsed: Duration,
}

/// Builds the repository unless it is up to date; returns what is there.
pub fn ensure(opts: &Options) -> Result<Summary> {
    let started = Instant::now();
    let out = std::path::absolute(&opts.out).with_context(|| format!("resolving {}", opts.out.display()))?;
    let opts = &Options { out, ..opts.clone() };
    let manifests = manifest::load_dir(&opts.manifests)?;
    let digest = input_digest(&manifests)?;
    if !opts.force
        && let Some(existing) = read_stamp(&opts.out)
        && existing.input_digest == digest
        && existing
            .packages
            .iter()
            .all(|p| opts.out.join("Packages").join(&p.file).is_file())
    {
        tracing::info!(out = %opts.out.display(), "sample repository is up to date");
        return Ok(Summary {
            rebuilt: false,
            out: opts.out.clone(),
            ..existing
        });
    }

    let parent = opts.out.parent().context("output directory has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".sample-repo-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
    let pkg_dir = staging.path().join("Packages");
    std::fs::create_dir(&pkg_dir).with_context(|| format!("creating {}", pkg_dir.display()))?;

    let jobs: Vec<(&manifest::Loaded, Arch)> = manifests
        .iter()
        .flat_map(|l| l.manifest.arches.iter().map(move |a| (l, *a)))
        .collect();
    let source_date = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SOURCE_DATE);
    let reader = debs::DebReader::default();
    let inputs = build::Inputs {
        deb_cache: &opts.deb_cache,
        debs: &reader,
        source_date,
    };
    let progress = Progress::bar(jobs.len() as u64, "building sample RPMs");
    let built = parallel::map_bounded(&jobs, opts.jobs, |(loaded, arch)| {
        progress.message(&format!("{} {arch}", loaded.manifest.name));
        let r = build::build(loaded, *arch, &inputs)
            .and_then(|built| write_package(&pkg_dir, built, loaded, *arch, source_date));
        progress.inc();
        r
    });
    progress.finish();
    // The first failure in manifest order, whatever finished first.
    let mut packages = built?;
    let content_bytes = packages.iter().map(|p| p.content_bytes).sum();
    packages.sort_by(|a, b| a.file.cmp(&b.file));

    Tool::new("createrepo_c")
        .args([
            "--quiet",
            "--no-database",
            "--revision",
            &source_date.to_string(),
            "--set-timestamp-to-revision",
        ])
        .arg(staging.path())
        .run()
        .context("generating rpm-md metadata for the sample repository")?;

    let summary = Summary {
        out: opts.out.clone(),
        input_digest: digest,
        packages,
        content_bytes,
        rebuilt: true,
        elapsed: started.elapsed(),
    };
    let stamp = serde_json::to_vec_pretty(&summary)?;
    std::fs::write(staging.path().join(STAMP), stamp).context("writing the sample repository stamp")?;
    replace_dir(staging.keep(), &opts.out)?;
    Ok(summary)
}

fn write_package(
    dir: &Path,
    built: build::Built,
    loaded: &manifest::Loaded,
    arch: Arch,
    source_date: u32,
) -> Result<PackageFile> {
    let path = dir.join(&built.file_name);
    let tmp = dir.join(format!(".{}.tmp", built.file_name));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    built
        .package
        .write(&mut f)
        .with_context(|| format!("writing {}", tmp.display()))?;
    // createrepo_c records the file's mtime in primary.xml: pin it so metadata is reproducible.
    let when = std::time::UNIX_EPOCH + Duration::from_secs(source_date.into());
    f.set_modified(when)
        .with_context(|| format!("setting the mtime of {}", tmp.display()))?;
    f.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} into place", tmp.display()))?;
    let size = std::fs::metadata(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    Ok(PackageFile {
        file: built.file_name,
        name: loaded.manifest.name.clone(),
        arch: arch.to_string(),
        size,
        content_bytes: built.content_bytes,
    })
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

/// Digest of the generator version, every manifest, and the exact .deb versions apt offers now.
fn input_digest(manifests: &[manifest::Loaded]) -> Result<String> {
    // Two batched apt lookups (packages, then the packages metapackages point to)
    // instead of one slow apt-cache run per package.
    let specs = |via: bool| -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for l in manifests {
            for arch in &l.manifest.arches {
                for src in l
                    .manifest
                    .from_deb
                    .iter()
                    .filter(|d| manifest::applies(&d.arches, *arch))
                {
                    let deb_arch = src.deb_arch.clone().unwrap_or_else(|| arch.deb_name().to_string());
                    match (&src.via_depends, via) {
                        (_, false) => out.push((src.package.clone(), deb_arch)),
                        (Some(prefix), true) => {
                            let rec = debs::apt_show(&src.package, &deb_arch)
                                .with_context(|| format!("in sample manifest {}", l.file.display()))?;
                            out.push((debs::via_depends(&rec, prefix)?, deb_arch));
                        }
                        (None, true) => {}
                    }
                }
            }
        }
        Ok(out)
    };
    // A failed batch (an unknown package) falls through to per-package lookups below,
    // whose errors name the manifest.
    if debs::prefetch(&specs(false)?).is_ok() {
        let _ = specs(true).map(|s| debs::prefetch(&s));
    }
    let mut h = Sha256::new();
    h.update(GENERATOR_VERSION.to_le_bytes());
    h.update(std::env::var("SOURCE_DATE_EPOCH").unwrap_or_default());
    for l in manifests {
        let ctx = || format!("in sample manifest {}", l.file.display());
        h.update(l.file.file_name().unwrap_or_default().as_encoded_bytes());
        h.update(std::fs::read(&l.file).with_context(ctx)?);
        for arch in &l.manifest.arches {
            for src in l
                .manifest
                .from_deb
                .iter()
                .filter(|d| manifest::applies(&d.arches, *arch))
            {
                let deb_arch = src.deb_arch.clone().unwrap_or_else(|| arch.deb_name().to_string());
                let rec = debs::apt_show(&src.package, &deb_arch).with_context(ctx)?;
                h.update(rec.sha256.as_bytes());
                if let Some(prefix) = &src.via_depends {
                    let real = debs::via_depends(&rec, prefix).with_context(ctx)?;
                    h.update(debs::apt_show(&real, &deb_arch).with_context(ctx)?.sha256.as_bytes());
                }
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}
