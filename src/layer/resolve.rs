//! What a layering installs and hides: libsolv with the base's rpmdb as the
//! installed set, the device's enabled repositories and the local RPMs; the
//! packages from repositories are downloaded into the layering cache.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::Layering;
use super::build::Options;
use crate::compose::rpmdb::InstalledPackage;
use crate::repo::{Fetcher, LoadedRepo};
use crate::solve::{LayerRequest, Pool};

/// The solution, as files.
pub struct Solution {
    /// RPM files to layer, in install order.
    pub files: Vec<PathBuf>,
    /// Installed packages (NEVRA) to hide.
    pub erase: Vec<String>,
}

/// The local RPMs' pool name (dnf's).
const LOCAL: &str = "@commandline";

pub fn resolve(
    installed: &[InstalledPackage],
    layering: &Layering,
    local: &[PathBuf],
    opts: &Options,
) -> Result<Solution> {
    for f in local {
        if !f.is_file() {
            bail!(
                "the local package {} is gone: `arbor override reset` or `arbor uninstall` it, or install the file again",
                f.display()
            );
        }
    }
    if !layering.packages.is_empty() && opts.repos.is_empty() {
        bail!(
            "no enabled repository in /etc/yum.repos.d of the default deployment: add a .repo file there to install {}",
            layering.packages.join(", ")
        );
    }
    let fetcher = Fetcher::new();
    let loaded: Vec<LoadedRepo> = if layering.packages.is_empty() {
        Vec::new()
    } else {
        opts.repos
            .iter()
            .map(|r| {
                crate::repo::fetch_metadata(&r.id, crate::compose::resolve::baseurls(r)?, &opts.cache_dir, &fetcher)
            })
            .collect::<Result<_>>()?
    };
    let mut pool = Pool::new(opts.arch);
    for r in &loaded {
        pool.add_rpmmd_cached(
            &r.id,
            &r.primary,
            r.filelists.as_deref(),
            Some(&crate::compose::resolve::solv_cache_path(&opts.cache_dir, r)),
        )?;
    }
    let blobs: Vec<crate::rpm::blob::Blob> = installed
        .iter()
        .map(|p| {
            crate::rpm::blob::Blob::parse(p.blob.clone()).with_context(|| format!("installed package {}", p.nevra))
        })
        .collect::<Result<_>>()?;
    pool.add_installed(&blobs)?;
    if !local.is_empty() {
        pool.add_local_rpms(LOCAL, local)?;
    }
    let mut erase = layering.remove.clone();
    for nevra in &layering.replace {
        let name = installed
            .iter()
            .map(|p| &p.name)
            .find(|n| nevra.starts_with(&format!("{n}-")) && super::verbs::nevra_has_name(nevra, n))
            .with_context(|| format!("override replace {nevra}: the base has no package of that name to replace"))?;
        erase.push(name.clone());
    }
    let mut install = layering.packages.clone();
    install.extend(layering.local.iter().cloned());
    install.extend(layering.replace.iter().cloned());
    let solution = pool
        .solve_layered(&LayerRequest {
            install,
            erase,
            recommends: false,
        })
        .context("resolving the layered packages against the base")?;
    let from_repos: Vec<crate::solve::Package> = solution.install.iter().filter(|p| p.repo != LOCAL).cloned().collect();
    let configs: Vec<&crate::treefile::RepoConfig> = opts.repos.iter().collect();
    let downloaded = crate::compose::resolve::download_packages(
        &from_repos,
        &configs,
        &loaded,
        &crate::compose::resolve::Options {
            cache_dir: opts.cache_dir.clone(),
            download: true,
            jobs: opts.jobs,
            lockfile: None,
            write_lockfile: None,
        },
        &fetcher,
    )?;
    let mut downloaded = downloaded.into_iter();
    let mut files = Vec::new();
    for p in &solution.install {
        if p.repo == LOCAL {
            files.push(PathBuf::from(&p.location));
        } else {
            files.push(downloaded.next().context("a downloaded package is missing")?);
        }
    }
    Ok(Solution {
        files,
        erase: solution.erase,
    })
}
