//! Building a layered commit: the base commit, plus one package commit per
//! layered RPM, plus what their scripts (and the base's triggers they set
//! off) wrote — assembled as read-only overlay layers in the compose sandbox,
//! committed without reading the base's files again.
//!
//! resolve (the base's rpmdb as the installed set, the device's enabled
//! .repo files, local RPMs) → fetch → conflicts against the base → import →
//! assemble (base and package checkouts; hidden base files whited out; the
//! packages' /etc merged into /usr/etc, which scripts see as /etc) → scripts
//! (memoized, see `memo`) → /var to tmpfiles.d → rpmdb → commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cap_std::fs::Dir;
use serde::Serialize;

use super::Layering;
use super::memo;
use crate::arch::Arch;
use crate::compose::rpmdb::{self, InstalledPackage};
use crate::ostree::Repo;
use crate::ostree::commit::{self as ocommit, Meta};
use crate::treefile::RepoConfig;

/// The rpmdb inside a tree.
const RPMDB: &str = "usr/lib/sysimage/rpm/rpmdb.sqlite";
/// Largest rpmdb read from a base tree.
const MAX_RPMDB: u64 = 512 << 20;
/// The ref the newest layered commit is kept under until it is deployed.
pub const REF: &str = "arbor/layered";

/// How to build.
#[derive(Debug, Clone)]
pub struct Options {
    /// Metadata, package and checkout cache (beside the repository: checkouts hardlink into it).
    pub cache_dir: PathBuf,
    /// The device's arch.
    pub arch: Arch,
    /// The enabled repositories.
    pub repos: Vec<RepoConfig>,
    /// Where local RPMs are kept, as `<NEVRA>.rpm`.
    pub local_dir: PathBuf,
    /// Replay recorded script runs (false: run every script).
    pub memoize: bool,
    /// Time limit per script.
    pub script_timeout: Duration,
    /// Parallel downloads and imports.
    pub jobs: usize,
}

/// What a build made.
#[derive(Debug, Clone, Serialize)]
pub struct Built {
    /// The layered commit.
    pub commit: String,
    /// Its base.
    pub base: String,
    /// Its content checksum (root dirtree and dirmeta).
    pub content: String,
    /// Packages added (NEVRA), in install order.
    pub added: Vec<String>,
    /// Base packages hidden (NEVRA).
    pub removed: Vec<String>,
    /// Scripts run and reused.
    pub scripts: memo::Report,
    /// Seconds spent building the commit (resolve to commit; not the deploy).
    pub secs: f64,
}

/// Builds `layering` on top of `base` in `repo` (the sysroot's repository)
/// and points [`REF`] at the result.
pub fn build(repo: &Repo, base: &str, layering: &Layering, opts: &Options) -> Result<Built> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&opts.cache_dir).with_context(|| format!("creating {}", opts.cache_dir.display()))?;
    let base_layer = crate::pkgcache::checkouts::layers(repo.path(), &opts.cache_dir, &[base.to_string()], 1)?
        .pop()
        .context("no checkout of the base commit")?;
    let base_tree = crate::image::tree::Tree::open(&base_layer)?;
    let installed = read_rpmdb(&base_tree, &opts.cache_dir, base)?;

    // Resolve.
    let local: Vec<PathBuf> = layering
        .local
        .iter()
        .chain(&layering.replace)
        .map(|nevra| opts.local_dir.join(format!("{nevra}.rpm")))
        .collect();
    let solution = super::resolve::resolve(&installed, layering, &local, opts)?;
    let erased: Vec<&InstalledPackage> = installed.iter().filter(|p| solution.erase.contains(&p.nevra)).collect();
    let kept: Vec<InstalledPackage> = installed
        .iter()
        .filter(|p| !solution.erase.contains(&p.nevra))
        .cloned()
        .collect();
    let files = solution.files;
    let headers: Vec<crate::rpm::header::HeaderInfo> = files
        .iter()
        .map(|f| crate::rpm::header::read(f))
        .collect::<Result<_>>()?;
    check_conflicts(&base_tree, &kept, &headers)?;

    // Import and assemble.
    let users = accounts(&base_tree)?;
    let imported = crate::pkgcache::import_all(repo.path(), &files, &users, opts.jobs)?;
    let mut commits = vec![base.to_string()];
    commits.extend(imported.iter().map(|i| i.commit.clone()));
    let layers = crate::pkgcache::checkouts::layers(repo.path(), &opts.cache_dir, &commits, opts.jobs)?;
    let work_parent = opts.cache_dir.join("work");
    std::fs::create_dir_all(&work_parent).with_context(|| format!("creating {}", work_parent.display()))?;
    let work = tempfile::Builder::new()
        .prefix("layer-")
        .tempdir_in(&work_parent)
        .context("creating a work directory")?;
    let upper = work.path().join("rootfs");
    std::fs::create_dir(&upper).with_context(|| format!("creating {}", upper.display()))?;
    let mut sb = crate::sandbox::Sandbox::start(&crate::sandbox::Config {
        rootfs: upper.clone(),
        arch: opts.arch,
        copy_on_write: true,
        exe: None,
        layers: layers.clone(),
        limits: crate::sandbox::Limits::default(),
    })
    .context("assembling the layered tree (an overlay of the base and the package checkouts in a sandbox)")?;
    let rootfs = sb.root();
    let root = Dir::open_ambient_dir(&rootfs, cap_std::ambient_authority())
        .with_context(|| format!("opening the assembled tree at {}", rootfs.display()))?;
    let mut pp = crate::compose::postprocess::Report::for_upper(&upper);
    // The hidden packages' files, less those a new package ships (a replacement's).
    let shipped: std::collections::BTreeSet<String> = headers
        .iter()
        .flat_map(|h| h.files.iter().map(|f| tree_path(&f.path)))
        .collect();
    let mut hidden = Vec::new();
    for p in &erased {
        hidden.extend(hide(&root, p, &shipped)?);
    }
    if root.is_dir("etc") {
        crate::compose::postprocess::merge_tree(&root, "etc", "usr/etc", &mut pp)?;
    }
    // Scripts write /etc; the tree keeps it in /usr/etc.
    root.symlink_contents("usr/etc", "etc")
        .context("linking /etc to /usr/etc for the scripts")?;

    // Scripts.
    let new_scripts: Vec<crate::rpm::scripts::PackageScripts> = files
        .iter()
        .map(|f| crate::rpm::scripts::read(f))
        .collect::<Result<_>>()?;
    let base_scripts: Vec<crate::rpm::scripts::PackageScripts> = kept.iter().map(|p| p.scripts.clone()).collect();
    let steps = crate::scriptlet::plan::plan_layered(&base_scripts, &new_scripts, crate::rpm::vercmp::evrcmp);
    let all: Vec<&crate::rpm::scripts::PackageScripts> = base_scripts.iter().chain(&new_scripts).collect();
    // A file trigger's domain, as rpm sees it: the packages with files under
    // its prefixes, each by its header's SHA-256 (the immutable part: install
    // times differ between bases) or its package commit.
    let identities: Vec<(String, &[String])> = kept
        .iter()
        .map(|p| (header_identity(p), p.files.as_slice()))
        .chain(
            new_scripts
                .iter()
                .zip(&imported)
                .map(|(p, i)| (i.commit.clone(), p.files.as_slice())),
        )
        .collect();
    let inputs = |step: &crate::scriptlet::plan::Step| -> Vec<String> {
        let prefixes: Vec<&String> = all
            .iter()
            .filter(|p| p.nevra == step.package)
            .flat_map(|p| p.file_triggers.iter())
            .filter(|t| t.script == step.script)
            .flat_map(|t| t.prefixes.iter())
            .collect();
        let mut lines = Vec::new();
        for pfx in prefixes {
            for (id, files) in &identities {
                if files.iter().any(|f| f.starts_with(pfx.as_str())) {
                    lines.push(format!("{pfx}\t{id}"));
                }
            }
        }
        lines
    };
    let names: BTreeMap<String, String> = all.iter().map(|p| (p.nevra.clone(), p.name.clone())).collect();
    let runner = memo::Runner {
        repo,
        layers: &layers,
        upper: &upper,
        root: &root,
        root_path: rootfs.clone(),
        work: work.path(),
        memoize: opts.memoize,
    };
    tracing::info!(scripts = steps.len(), "running the layered packages' scripts");
    let exec_opts = crate::scriptlet::exec::Options {
        timeout: opts.script_timeout,
        ignore: BTreeMap::new(),
        treefile_hint: false,
    };
    let scripts = memo::run_steps(&runner, &mut sb, &steps, &inputs, &names, &exec_opts)
        .context("a script of the layered packages failed; nothing was deployed")?;
    crate::scriptlet::users::apply_tree(&root)?;
    crate::compose::owners::apply(&root, &headers, &users)?;
    root.remove_file("etc")
        .context("removing the /etc link of the scripts")?;
    crate::compose::postprocess::layered_var_to_tmpfiles(&root, "arbor-layered.conf", &mut pp)?;
    for d in &pp.dropped {
        tracing::warn!("{}: not shipped: {}", d.path, d.why);
    }

    // The rpm database: the base's packages (less those hidden), then the new ones.
    let base_info = repo.commit_info(base)?;
    let when = base_info.timestamp;
    let dbdir = work.path().join("rpmdb");
    rpmdb::write_layered(&dbdir, &kept, &files, when as u32)?;
    let db = std::fs::read(dbdir.join(rpmdb::FILE_NAME)).with_context(|| format!("reading {}", dbdir.display()))?;
    crate::compose::postprocess::replace_file(&root, RPMDB, &db, 0o644)?;
    drop(root);
    sb.finish().context("stopping the sandbox")?;

    let added: Vec<String> = headers.iter().map(|h| h.nevra.clone()).collect();
    let removed: Vec<String> = erased.iter().map(|p| p.nevra.clone()).collect();
    let mut metadata = metadata(&base_info, base, layering, &added, &removed, &scripts.keys);
    // The package commits, whose cache refs a later prune keeps.
    metadata.insert("arbor.package-commits".into(), Meta::StrList(commits[1..].to_vec()));
    let (commit, _) = crate::ostree::commit::layers::commit_layers_hiding(
        repo,
        &commits,
        &hidden,
        &pp.copied,
        &ocommit::CommitRequest {
            dir: &upper,
            refname: REF,
            subject: &format!(
                "{} + {}",
                base_info.metadata.get("version").map(String::as_str).unwrap_or(base),
                layering.summary()
            ),
            metadata: &metadata,
            timestamp: when,
            parent: Some(base),
        },
    )?;
    crate::pkgcache::checkouts::prune(&opts.cache_dir, &layers);
    Ok(Built {
        content: repo.content_checksum(&commit)?,
        commit,
        base: base.to_string(),
        added,
        removed,
        scripts,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// The base tree's installed packages (its rpmdb copied out first: the tree is untrusted).
fn read_rpmdb(tree: &crate::image::tree::Tree, cache_dir: &Path, base: &str) -> Result<Vec<InstalledPackage>> {
    let bytes = tree
        .read(&format!("/{RPMDB}"), MAX_RPMDB)?
        .with_context(|| format!("the base commit {base} has no rpm database at /{RPMDB}: it cannot be layered on"))?;
    let tmp = tempfile::Builder::new()
        .prefix("rpmdb-")
        .tempfile_in(cache_dir)
        .with_context(|| format!("creating a temporary file in {}", cache_dir.display()))?;
    std::fs::write(tmp.path(), &bytes).with_context(|| format!("writing {}", tmp.path().display()))?;
    rpmdb::read_installed(tmp.path()).with_context(|| format!("reading the rpm database of base commit {base}"))
}

/// An installed package's identity: its `SHA256HEADER` (the digest of its
/// immutable header, as the package was built), else its NEVRA.
fn header_identity(p: &InstalledPackage) -> String {
    crate::rpm::blob::Blob::parse(p.blob.clone())
        .ok()
        .and_then(|b| b.string(crate::rpm::blob::tag::SHA256HEADER))
        .map_or_else(|| p.nevra.clone(), |d| format!("{} {d}", p.nevra))
}

/// Users and groups of the base tree, for the owners in package payloads.
fn accounts(tree: &crate::image::tree::Tree) -> Result<crate::pkgcache::Users> {
    let read = |p: &str| -> Result<String> {
        let bytes = tree
            .read(&format!("/{p}"), crate::input::CONFIG_CAP)?
            .unwrap_or_default();
        String::from_utf8(bytes).with_context(|| format!("/{p} of the base tree is not UTF-8"))
    };
    crate::pkgcache::Users::from_passwd_group(&read("usr/etc/passwd")?, &read("usr/etc/group")?)
}

/// Where a package path lives in an OSTree tree (/etc is /usr/etc).
fn tree_path(path: &str) -> String {
    let rel = path.trim_start_matches('/');
    match rel.strip_prefix("etc") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("usr/etc{rest}"),
        _ => rel.to_string(),
    }
}

/// A new package's file that the base has with other content (and that is
/// not a directory) is a conflict, named with the base package owning it.
fn check_conflicts(
    base: &crate::image::tree::Tree,
    kept: &[InstalledPackage],
    headers: &[crate::rpm::header::HeaderInfo],
) -> Result<()> {
    use crate::rpm::header::FileKind;
    let mut problems = crate::rpm::header::conflicts(headers);
    let owners: BTreeMap<&str, &str> = kept
        .iter()
        .flat_map(|p| p.files.iter().map(move |f| (f.as_str(), p.nevra.as_str())))
        .collect();
    for h in headers {
        for f in h.files.iter().filter(|f| !f.ghost) {
            let FileKind::File { digest, .. } = &f.kind else {
                continue;
            };
            let Some(owner) = owners.get(f.path.as_str()) else {
                continue;
            };
            let same = digest.len() == 64
                && base
                    .read(&format!("/{}", tree_path(&f.path)), 1 << 30)?
                    .is_some_and(|b| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&b)) == *digest);
            if !same {
                problems.push(format!(
                    "{} from {} conflicts with the file from base package {owner}",
                    f.path, h.nevra
                ));
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "the layered packages conflict; nothing was deployed:\n  - {}",
            problems.join("\n  - ")
        );
    }
    Ok(())
}

/// Removes a hidden base package's files (not directories) from the tree,
/// except those in `shipped` (a new package's); returns the paths removed.
fn hide(root: &Dir, p: &InstalledPackage, shipped: &std::collections::BTreeSet<String>) -> Result<Vec<String>> {
    let mut paths: Vec<String> = p.files.iter().map(|f| tree_path(f)).collect();
    paths.sort();
    let mut removed = Vec::new();
    for path in paths.iter().rev() {
        if path.starts_with("var/") {
            continue;
        }
        if !shipped.contains(path) && root.symlink_metadata(path).is_ok_and(|m| !m.is_dir()) {
            root.remove_file(path)
                .with_context(|| format!("hiding /{path} of {}", p.nevra))?;
        }
        removed.push(path.clone());
    }
    Ok(removed)
}

fn metadata(
    base_info: &crate::ostree::CommitInfo,
    base: &str,
    layering: &Layering,
    added: &[String],
    removed: &[String],
    memo_keys: &[String],
) -> BTreeMap<String, Meta> {
    let mut m = BTreeMap::new();
    for (k, v) in &base_info.metadata {
        if k == "version" || k == "arbor.arch" {
            m.insert(k.clone(), Meta::Str(v.clone()));
        }
    }
    if let Some(b) = base_info.lists.get("arbor.boards") {
        m.insert("arbor.boards".into(), Meta::StrList(b.clone()));
    }
    m.insert("arbor.base-commit".into(), Meta::Str(base.to_string()));
    m.insert("arbor.layered".into(), Meta::StrList(added.to_vec()));
    m.insert("arbor.removed".into(), Meta::StrList(removed.to_vec()));
    m.insert("arbor.request".into(), Meta::StrList(layering.to_lines()));
    m.insert("arbor.memo-keys".into(), Meta::StrList(memo_keys.to_vec()));
    m
}

#[cfg(test)]
mod tests {
    #[test]
    fn etc_paths_live_in_usr_etc() {
        assert_eq!(super::tree_path("/etc/passwd"), "usr/etc/passwd");
        assert_eq!(super::tree_path("/etc"), "usr/etc");
        assert_eq!(super::tree_path("/etcetera/x"), "etcetera/x");
        assert_eq!(super::tree_path("/usr/lib/x"), "usr/lib/x");
    }
}
