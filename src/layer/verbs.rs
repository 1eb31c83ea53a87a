//! The layering verbs on a [`Device`]: change the request recorded in the
//! default deployment's origin, build the layered commit on its base, deploy
//! it in front (on trial where the board counts boots), clean up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::build::{self, Built};
use super::{BASE_REF_PREFIX, CACHE, LOCAL_RPMS, Layering, memo};
use crate::device::Device;
use crate::ostree::Repo;

/// A change to what is layered.
#[derive(Debug, Clone)]
pub enum Change {
    /// `arbor install`: package names (from the repositories) or .rpm files.
    Install(Vec<String>),
    /// `arbor uninstall`: layered packages (names, or NEVRAs of local RPMs).
    Uninstall(Vec<String>),
    /// `arbor override remove`: base packages to hide.
    Remove(Vec<String>),
    /// `arbor override replace`: .rpm files replacing base packages of the same name.
    Replace(Vec<PathBuf>),
    /// `arbor override reset`: overrides of these packages undone (all when empty).
    Reset(Vec<String>),
}

/// How to layer.
#[derive(Debug, Clone)]
pub struct Options {
    /// Replay recorded script runs (false: run every script).
    pub memoize: bool,
    /// Time limit per script.
    pub script_timeout: Duration,
    /// Parallel downloads and imports.
    pub jobs: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            memoize: true,
            script_timeout: Duration::from_secs(300),
            jobs: 2,
        }
    }
}

/// What a layering verb did (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `deployed` or `no-change`.
    pub result: &'static str,
    /// The deployed commit (the base itself when nothing is layered).
    pub commit: String,
    /// The base commit.
    pub base: String,
    /// The deployed tree's content checksum.
    pub content: String,
    /// What is layered now.
    pub layering: Layering,
    /// The build (absent when nothing is layered).
    pub built: Option<Built>,
    /// Bootloader files replaced.
    pub bootloader_files: Vec<String>,
}

/// The base commit of `commit`: `arbor.base-commit` of a layered commit, else itself.
pub fn base_of(repo: &Repo, commit: &str) -> Result<String> {
    Ok(repo
        .commit_info(commit)?
        .metadata
        .get("arbor.base-commit")
        .cloned()
        .unwrap_or_else(|| commit.to_string()))
}

/// Applies `change` to the default deployment's layering and deploys the result.
pub fn apply_change(dev: &Device, change: &Change, opts: &Options) -> Result<Outcome> {
    let _lock = dev.lock("layering")?;
    crate::device::update::settle(dev)?;
    let default = dev.default_deployment()?;
    let repo = dev.sysroot.repo();
    let base = base_of(repo, &default.commit)?;
    let now = Layering::from_origin(&default.origin_lists);
    let next = changed(dev, &now, change)?;
    if next == now {
        return Ok(Outcome {
            result: "no-change",
            content: repo.content_checksum(&default.commit)?,
            commit: default.commit,
            base,
            layering: now,
            built: None,
            bootloader_files: Vec::new(),
        });
    }
    let refspec = default
        .origin
        .clone()
        .with_context(|| format!("the default deployment {} has no origin refspec", default.commit))?;
    relayer(dev, &default.osname, &base, &refspec, &next, opts)
}

/// Builds `layering` on `base` and deploys it in front with `refspec` as its
/// origin; with nothing layered, the base commit itself is deployed.
pub fn relayer(
    dev: &Device,
    osname: &str,
    base: &str,
    refspec: &str,
    layering: &Layering,
    opts: &Options,
) -> Result<Outcome> {
    let repo = dev.sysroot.repo();
    let built = if layering.is_empty() {
        None
    } else {
        let b = build::build(repo, base, layering, &build_options(dev, opts)?)?;
        tracing::info!(
            commit = %b.commit,
            ran = b.scripts.ran.len(),
            reused = b.scripts.reused.len(),
            "built the layered commit"
        );
        Some(b)
    };
    let commit = built.as_ref().map_or(base, |b| b.commit.as_str()).to_string();
    repo.set_ref(&format!("{BASE_REF_PREFIX}{base}"), Some(base))?;
    crate::failpoint::hit("layer::built")?;
    dev.sysroot
        .deploy_with(osname, &commit, refspec, &layering.to_origin())?;
    crate::failpoint::hit("device::entries-written")?;
    crate::device::bootcount::arm(dev)?;
    let files = crate::device::bootfiles::render(dev)?;
    crate::failpoint::hit("device::bootfiles-written")?;
    // Refs first, so the cleanup's prune frees what they alone kept.
    prune(dev)?;
    dev.sysroot.cleanup()?;
    Ok(Outcome {
        result: "deployed",
        content: repo.content_checksum(&commit)?,
        commit,
        base: base.to_string(),
        layering: layering.clone(),
        built,
        bootloader_files: files.written,
    })
}

/// Where and how a layering on this device builds.
fn build_options(dev: &Device, opts: &Options) -> Result<build::Options> {
    let default = dev.default_deployment()?;
    let root = dev.sysroot.path().join(&default.dir);
    let tree = crate::image::tree::Tree::open(&root)?;
    let mut files = Vec::new();
    for name in tree.glob("/etc/yum.repos.d/*.repo")? {
        if let Some(bytes) = tree.read(&name, crate::input::CONFIG_CAP)? {
            let text = String::from_utf8(bytes).with_context(|| format!("{name} is not UTF-8"))?;
            files.push((PathBuf::from(&name), text));
        }
    }
    let arch = dev.board.arch;
    let releasever = releasever(dev.sysroot.repo(), &default.commit);
    let repos = crate::treefile::enabled_repos(&files, arch, releasever.as_deref())?;
    Ok(build::Options {
        cache_dir: dev.sysroot.path().join(CACHE),
        arch,
        repos,
        local_dir: dev.sysroot.path().join(LOCAL_RPMS),
        memoize: opts.memoize,
        script_timeout: opts.script_timeout,
        jobs: opts.jobs,
    })
}

/// The base treefile's `releasever`, recorded in the commit.
fn releasever(repo: &Repo, commit: &str) -> Option<String> {
    let base = base_of(repo, commit).ok()?;
    let info = repo.commit_info(&base).ok()?;
    let tf: serde_json::Value = serde_json::from_str(info.metadata.get("arbor.treefile")?).ok()?;
    match &tf["releasever"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The layering after `change`; errors name what cannot be done.
fn changed(dev: &Device, now: &Layering, change: &Change) -> Result<Layering> {
    let mut next = now.clone();
    match change {
        Change::Install(specs) => {
            for spec in specs {
                if spec.ends_with(".rpm") {
                    let nevra = keep_local(dev, Path::new(spec))?;
                    if !next.local.contains(&nevra) {
                        next.local.push(nevra);
                    }
                } else if next.packages.contains(spec) {
                    bail!("{spec} is already layered (arbor status lists the layered packages)");
                } else {
                    next.packages.push(spec.clone());
                }
            }
        }
        Change::Uninstall(names) => {
            for name in names {
                let before = next.packages.len() + next.local.len();
                next.packages.retain(|p| p != name);
                next.local.retain(|n| n != name && !nevra_has_name(n, name));
                if next.packages.len() + next.local.len() == before {
                    bail!(
                        "{name} is not layered; layered: {}",
                        if now.packages.is_empty() && now.local.is_empty() {
                            "nothing".to_string()
                        } else {
                            now.packages
                                .iter()
                                .chain(&now.local)
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    );
                }
            }
        }
        Change::Remove(names) => {
            for name in names {
                if !next.remove.contains(name) {
                    next.remove.push(name.clone());
                }
            }
        }
        Change::Replace(files) => {
            for f in files {
                let nevra = keep_local(dev, f)?;
                if !next.replace.contains(&nevra) {
                    next.replace.push(nevra);
                }
            }
        }
        Change::Reset(names) => {
            if names.is_empty() {
                next.remove.clear();
                next.replace.clear();
            }
            for name in names {
                let before = next.remove.len() + next.replace.len();
                next.remove.retain(|n| n != name);
                next.replace.retain(|n| !nevra_has_name(n, name));
                if next.remove.len() + next.replace.len() == before {
                    bail!("{name} has no override");
                }
            }
        }
    }
    Ok(next)
}

/// Whether `nevra` is a NEVRA of package `name`.
pub(super) fn nevra_has_name(nevra: &str, name: &str) -> bool {
    // name-[e:]v-r.arch: the name is what precedes the last two dashes.
    let mut parts = nevra.rsplitn(3, '-');
    let (_, _, n) = (parts.next(), parts.next(), parts.next());
    n == Some(name)
}

/// Copies a local RPM into the sysroot's store (by NEVRA) and returns its NEVRA.
fn keep_local(dev: &Device, file: &Path) -> Result<String> {
    let h = crate::rpm::header::read(file)?;
    let dir = dev.sysroot.path().join(LOCAL_RPMS);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bytes = crate::input::read_bounded(file, "RPM package", 4 << 30)?;
    crate::atomic::write(&dir.join(format!("{}.rpm", h.nevra)), &bytes)?;
    Ok(h.nevra)
}

/// Drops base refs, package refs, local RPMs and recorded runs that no
/// deployment uses any more.
fn prune(dev: &Device) -> Result<()> {
    let repo = dev.sysroot.repo();
    let mut bases = std::collections::BTreeSet::new();
    let mut keys = std::collections::BTreeSet::new();
    let mut locals = std::collections::BTreeSet::new();
    let mut packages = std::collections::BTreeSet::new();
    for d in dev.sysroot.deployments() {
        let info = repo.commit_info(&d.commit)?;
        bases.insert(
            info.metadata
                .get("arbor.base-commit")
                .cloned()
                .unwrap_or(d.commit.clone()),
        );
        keys.extend(info.lists.get("arbor.memo-keys").cloned().unwrap_or_default());
        packages.extend(info.lists.get("arbor.package-commits").cloned().unwrap_or_default());
        let l = Layering::from_origin(&d.origin_lists);
        locals.extend(l.local.into_iter().chain(l.replace));
    }
    for (name, commit) in repo.refs_with_prefix(BASE_REF_PREFIX)? {
        if !bases.contains(&commit) {
            repo.set_ref(&name, None)?;
        }
    }
    for (name, _) in repo.refs_with_prefix(memo::REF_PREFIX)? {
        if !keys.contains(name.trim_start_matches(memo::REF_PREFIX)) {
            repo.set_ref(&name, None)?;
        }
    }
    for (name, commit) in repo.refs_with_prefix(crate::pkgcache::REF_PREFIX)? {
        if !packages.contains(&commit) {
            repo.set_ref(&name, None)?;
        }
    }
    repo.set_ref(build::REF, None)?;
    if let Ok(entries) = std::fs::read_dir(dev.sysroot.path().join(LOCAL_RPMS)) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.strip_suffix(".rpm").is_some_and(|n| !locals.contains(n)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn nevras_name_their_package() {
        assert!(super::nevra_has_name("foo-bar-1.0-1.aarch64", "foo-bar"));
        assert!(super::nevra_has_name("foo-2:1.0-1.fc41.noarch", "foo"));
        assert!(!super::nevra_has_name("foo-bar-1.0-1.aarch64", "foo"));
    }
}
