//! `arbor compose resolve`: treefile → repositories → libsolv → the ordered
//! package set for the target arch, optionally downloaded and verified.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::lockfile::Lockfile;
use crate::arch::Arch;
use crate::repo::download::{self, Item};
use crate::repo::{self, Checksum, Fetcher, LoadedRepo};
use crate::solve::{Package, Pool, Request};
use crate::treefile::{RepoConfig, Treefile};

/// How to resolve.
#[derive(Debug, Clone)]
pub struct Options {
    /// Metadata and package cache (`metadata/`, `packages/`).
    pub cache_dir: PathBuf,
    /// Download the resolved packages.
    pub download: bool,
    /// Parallel downloads.
    pub jobs: usize,
    /// Reproduce this lockfile exactly.
    pub lockfile: Option<PathBuf>,
    /// Write the resolved set as a lockfile here.
    pub write_lockfile: Option<PathBuf>,
}

/// `$ARBOR_CACHE_DIR`, else `$XDG_CACHE_HOME/arbor`, else `~/.cache/arbor`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("ARBOR_CACHE_DIR") {
        return PathBuf::from(p);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
        .join("arbor")
}

/// The resolved package set.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// Target arch.
    pub arch: Arch,
    /// The treefile's ref.
    #[serde(rename = "ref")]
    pub treeref: String,
    /// Packages in install order.
    pub packages: Vec<Package>,
    /// Sum of .rpm sizes.
    pub download_size: u64,
    /// Sum of installed sizes.
    pub install_size: u64,
    /// Cache paths of the downloaded packages (same order), when downloaded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<PathBuf>,
}

/// Resolves `tf` for its target arch.
pub fn resolve(tf: &Treefile, opts: &Options) -> Result<Resolved> {
    let fetcher = Fetcher::new();
    let lock = opts.lockfile.as_deref().map(Lockfile::load).transpose()?;
    let mut configs: Vec<&RepoConfig> = tf.repos.iter().filter(|r| r.enabled).collect();
    if lock.is_some() {
        configs.extend(tf.lockfile_repos.iter().filter(|r| r.enabled));
    }
    if configs.is_empty() {
        bail!("the treefile enables no repository: list ids in `repos` that have enabled=1 in a .repo file");
    }
    let repos: Vec<LoadedRepo> = configs
        .iter()
        .map(|r| repo::fetch_metadata(&r.id, baseurls(r)?, &opts.cache_dir, &fetcher))
        .collect::<Result<_>>()?;

    let mut pool = Pool::new(tf.basearch);
    for r in &repos {
        pool.add_rpmmd_cached(
            &r.id,
            &r.primary,
            r.filelists.as_deref(),
            Some(&solv_cache_path(&opts.cache_dir, r)),
        )?;
    }
    let mut install = tf.packages.clone();
    for rp in &tf.repo_packages {
        install.extend(rp.packages.iter().cloned());
    }
    let req = Request {
        install,
        exclude: tf.exclude_packages.clone(),
        pinned: tf
            .repo_packages
            .iter()
            .map(|rp| (rp.repo.clone(), rp.packages.clone()))
            .collect(),
        recommends: tf.recommends,
        locked: lock.as_ref().map(Lockfile::evras).unwrap_or_default(),
    };
    let packages = pool
        .solve(&req)
        .with_context(|| format!("resolving for {}", tf.basearch))?;
    if let Some(lock) = &lock {
        lock.check(&packages).with_context(|| {
            format!(
                "lockfile {}",
                opts.lockfile.as_deref().unwrap_or(Path::new("")).display()
            )
        })?;
    }
    if let Some(path) = &opts.write_lockfile {
        Lockfile::from_packages(&packages).write(path)?;
    }
    let files = if opts.download {
        download_packages(&packages, &configs, &repos, opts, &fetcher)?
    } else {
        Vec::new()
    };
    Ok(Resolved {
        arch: tf.basearch,
        treeref: tf.treeref.clone(),
        download_size: packages.iter().map(|p| p.download_size).sum(),
        install_size: packages.iter().map(|p| p.install_size).sum(),
        packages,
        files,
    })
}

/// Where libsolv's parsed form of a repository's metadata is cached: keyed by the
/// metadata files (whose names carry their checksums) and the libsolv version.
pub(crate) fn solv_cache_path(cache_dir: &Path, r: &LoadedRepo) -> PathBuf {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(crate::solve::libsolv_version());
    for p in std::iter::once(&r.primary).chain(r.filelists.as_ref()) {
        h.update(p.file_name().unwrap_or_default().as_encoded_bytes());
        h.update([0]);
    }
    cache_dir
        .join("metadata")
        .join(format!("{}.solv", hex::encode(h.finalize())))
}

/// A repository's `baseurl=` URLs (at least one), tried in order.
pub(crate) fn baseurls(r: &RepoConfig) -> Result<&[String]> {
    if r.baseurl.is_empty() {
        bail!(
            "repository {} ({}) has no baseurl: metalink and mirrorlist are accepted but only baseurl is fetched; add baseurl=",
            r.id,
            r.file.display()
        );
    }
    Ok(&r.baseurl)
}

pub(crate) fn download_packages(
    packages: &[Package],
    configs: &[&RepoConfig],
    repos: &[LoadedRepo],
    opts: &Options,
    fetcher: &Fetcher,
) -> Result<Vec<PathBuf>> {
    let mut items = Vec::with_capacity(packages.len());
    for p in packages {
        repo::check_href(&p.location).with_context(|| format!("package {}", p.nevra()))?;
        let (cfg, loaded) = configs
            .iter()
            .zip(repos)
            .find(|(c, _)| c.id == p.repo)
            .with_context(|| format!("package {} comes from unknown repository {}", p.nevra(), p.repo))?;
        let gpg_keys = if cfg.gpgcheck {
            Some(
                cfg.gpgkey
                    .iter()
                    .map(|k| key_path(k, &opts.cache_dir, fetcher))
                    .collect::<Result<Vec<_>>>()?,
            )
        } else {
            None
        };
        items.push(Item {
            nevra: p.nevra(),
            urls: loaded.mirrors.iter().map(|m| format!("{m}{}", p.location)).collect(),
            checksum: Checksum::new(&p.checksum_type, &p.checksum).with_context(|| format!("package {}", p.nevra()))?,
            gpg_keys,
        });
    }
    download::download_all(&items, &opts.cache_dir, fetcher, opts.jobs)
}

/// A gpgkey URL as a local file (http keys are fetched into the cache).
fn key_path(url: &str, cache_dir: &Path, fetcher: &Fetcher) -> Result<PathBuf> {
    if let Some(p) = repo::fetch::file_url_path(url)? {
        if !p.is_file() {
            bail!("gpgkey {url}: no such file");
        }
        return Ok(p);
    }
    let bytes = fetcher.get(url).with_context(|| format!("fetching gpgkey {url}"))?;
    let name = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(url.as_bytes()));
    let path = cache_dir.join("keys").join(name);
    std::fs::create_dir_all(cache_dir.join("keys")).context("creating the key cache")?;
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
