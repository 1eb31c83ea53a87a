//! The sample repository: real aarch64/armv7hl/x86_64 RPMs made from Debian's
//! packages, described by the manifests in `samples/packages/`, with rpm-md
//! metadata from `createrepo_c`. Tests, benchmarks and the demo compose from it.
//!
//! The repository is rebuilt only when an input changed (manifests, the .debs
//! apt would fetch, or this generator); the output directory is replaced
//! atomically, so a killed build leaves the previous repository as it was.

pub mod build;
pub mod debs;
pub mod device;
pub mod manifest;
pub mod output;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use arbor::arch::Arch;
use arbor::parallel;
use arbor::progress::Progress;

/// Bump when the generator's output changes for the same inputs.
const GENERATOR_VERSION: u32 = 3;
/// Name of the file recording what a repository was built from.
pub const STAMP: &str = "arbor-sample-repo.json";

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
    let out = std::path::absolute(&opts.out).with_context(|| format!("resolving {}", opts.out.display()))?;
    let opts = &Options { out, ..opts.clone() };
    let manifests = manifest::load_dir(&opts.manifests)?;
    let digest = input_digest(&manifests)?;
    if let Some(existing) = (!opts.force).then(|| output::up_to_date(&opts.out, &digest)).flatten() {
        tracing::info!(out = %opts.out.display(), "sample repository is up to date");
        return Ok(existing);
    }

    let source_date = output::source_date();
    let staging = output::Staging::new(&opts.out, "sample-repo", source_date)?;
    let jobs: Vec<(&manifest::Loaded, Arch)> = manifests
        .iter()
        .flat_map(|l| l.manifest.arches.iter().map(move |a| (l, *a)))
        .collect();
    let reader = debs::DebReader::default();
    let inputs = build::Inputs {
        deb_cache: &opts.deb_cache,
        debs: &reader,
        source_date,
        local: None,
    };
    let progress = Progress::bar(jobs.len() as u64, "building sample RPMs");
    let built = parallel::map_bounded(&jobs, opts.jobs, |(loaded, arch)| {
        progress.message(&format!("{} {arch}", loaded.manifest.name));
        let r = build::build(loaded, *arch, &inputs)
            .and_then(|built| staging.write_package(built, &loaded.manifest.name, *arch));
        progress.inc();
        r
    });
    progress.finish();
    // The first failure in manifest order, whatever finished first.
    staging.finish("sample repository", digest, built?)
}

/// Digest of the generator version, every manifest, and the exact .deb versions apt offers now.
fn input_digest(manifests: &[manifest::Loaded]) -> Result<String> {
    // Two batched apt lookups per apt source (packages, then the packages metapackages
    // point to) instead of one slow apt-cache run per package.
    type Specs = BTreeMap<debs::AptSource, Vec<(String, String)>>;
    let specs = |via: bool| -> Result<Specs> {
        let mut out = Specs::new();
        for l in manifests {
            for arch in &l.manifest.arches {
                for src in l
                    .manifest
                    .from_deb
                    .iter()
                    .filter(|d| manifest::applies(&d.arches, *arch))
                {
                    let deb_arch = src.deb_arch.clone().unwrap_or_else(|| arch.deb_name().to_string());
                    let list = out.entry(src.apt).or_default();
                    match (&src.via_depends, via) {
                        (_, false) => list.push((src.package.clone(), deb_arch)),
                        (Some(prefix), true) => {
                            let rec = debs::apt_show(src.apt, &src.package, &deb_arch)
                                .with_context(|| format!("in sample manifest {}", l.file.display()))?;
                            list.push((debs::via_depends(&rec, prefix)?, deb_arch));
                        }
                        (None, true) => {}
                    }
                }
            }
        }
        Ok(out)
    };
    // A failed batch (an unknown package, missing private lists) falls through to
    // per-package lookups below, whose errors name the manifest.
    let prefetch_all = |s: Specs| s.iter().all(|(source, list)| debs::prefetch(*source, list).is_ok());
    if prefetch_all(specs(false)?) {
        let _ = specs(true).map(prefetch_all);
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
                let rec = debs::apt_show(src.apt, &src.package, &deb_arch).with_context(ctx)?;
                h.update(rec.sha256.as_bytes());
                if let Some(prefix) = &src.via_depends {
                    let real = debs::via_depends(&rec, prefix).with_context(ctx)?;
                    h.update(
                        debs::apt_show(src.apt, &real, &deb_arch)
                            .with_context(ctx)?
                            .sha256
                            .as_bytes(),
                    );
                }
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}
