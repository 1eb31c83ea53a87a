//! `arbor compose tree`: resolve → import each package once into the package
//! cache → stack the package checkouts as overlayfs lower layers in a sandbox
//! → scripts → postprocess → rpmdb → commit (the package dirtrees plus the
//! upper layer).
//!
//! The ref moves only in the final OSTree transaction, so a run killed at any
//! point leaves the repository's refs as they were (see `crate::failpoint`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::resolve::{self, Resolved};
use crate::failpoint;
use crate::ostree::commit::{self as ocommit, Meta};
use crate::ostree::{Mode, Repo};
use crate::rpm::header::{self, HeaderInfo};
use crate::treefile::{Initramfs, Treefile};

/// How to compose.
#[derive(Debug, Clone)]
pub struct Options {
    /// The OSTree repository the commit goes into (bare-user; created if missing).
    pub repo: PathBuf,
    /// Metadata, package and work cache.
    pub cache_dir: PathBuf,
    /// Stop after resolving and print what would be composed.
    pub dry_run: bool,
    /// Commit even when the input hash matches the ref's current commit.
    pub force: bool,
    /// Run no package scriptlets or postprocess scripts: they are listed and
    /// recorded in the commit (`arbor.scripts-skipped`), never skipped silently.
    pub no_scripts: bool,
    /// Time limit per scriptlet.
    pub script_timeout: std::time::Duration,
    /// Parallel downloads and imports.
    pub jobs: usize,
    /// Sign the new commit with this ed25519 secret key (ostree's format).
    pub sign_key: Option<PathBuf>,
}

/// What a compose did.
#[derive(Debug, Clone, Serialize)]
pub struct Composed {
    /// The ref.
    #[serde(rename = "ref")]
    pub refname: String,
    /// The commit the ref points at now (`None` for a dry run).
    pub commit: Option<String>,
    /// Its version.
    pub version: String,
    /// Whether nothing was committed because the inputs were unchanged.
    pub unchanged: bool,
    /// Packages in the tree.
    pub packages: usize,
    /// Packages imported into the cache by this run.
    pub imported: usize,
    /// Scriptlets not run (with `--no-scripts`), as `nevra: kinds`.
    pub skipped_scriptlets: Vec<String>,
    /// Scriptlets and postprocess scripts run (absent for a dry or unchanged run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scripts: Option<crate::scriptlet::exec::Report>,
}

/// Composes `tf` into `opts.repo`.
pub fn compose(tf: &Treefile, opts: &Options) -> Result<Composed> {
    let mut clock = Instant::now();
    // A bad key fails before any work, not after the commit.
    let sign_key = opts
        .sign_key
        .as_deref()
        .map(crate::sign::keys::read_secret_key)
        .transpose()?;
    if tf.initramfs == Initramfs::Dracut {
        bail!(
            "treefile key `initramfs: dracut` is not implemented yet; use `initramfs: arbor` (the default) or `initramfs: none`"
        );
    }
    let resolved = resolve::resolve(
        tf,
        &resolve::Options {
            cache_dir: opts.cache_dir.clone(),
            download: !opts.dry_run,
            jobs: opts.jobs,
            lockfile: None,
            write_lockfile: None,
        },
    )?;
    stage("compose::resolved", &mut clock)?;
    let headers: Vec<HeaderInfo> = resolved.files.iter().map(|f| header::read(f)).collect::<Result<_>>()?;
    let when = source_date(&headers)?;
    let input_hash = input_hash(tf, &resolved, opts.no_scripts);
    let target = Repo::open_if_exists(&opts.repo)?;
    let previous = match &target {
        Some(repo) => match repo.resolve_ref(&tf.treeref)? {
            Some(commit) => Some((commit.clone(), repo.commit_info(&commit)?.metadata)),
            None => None,
        },
        None => None,
    };
    let prev_version = previous.as_ref().and_then(|(_, m)| m.get("version").cloned());
    // A treefile's prefix (`<date:…>`) shows the compose date, not `when` (the
    // newest package's build time): rpm-ostree dates versions by when the tree
    // was made, and SOURCE_DATE_EPOCH pins it. Without a prefix arbor versions
    // by `when`, the tree's own date, so the same inputs give the same commit
    // whenever they are composed (across midnight too).
    let version_date = match tf.automatic_version_prefix {
        Some(_) => super::version::compose_date()?,
        None => when,
    };
    let version = super::version::next_version(
        tf.automatic_version_prefix.as_deref(),
        prev_version.as_deref(),
        version_date,
    )?;
    if let Some((commit, meta)) = previous
        .as_ref()
        .filter(|(_, meta)| meta.get("arbor.inputhash") == Some(&input_hash) && !opts.force)
    {
        return Ok(Composed {
            refname: tf.treeref.clone(),
            commit: Some(commit.clone()),
            version: meta.get("version").cloned().unwrap_or_default(),
            unchanged: true,
            packages: resolved.packages.len(),
            imported: 0,
            skipped_scriptlets: Vec::new(),
            scripts: None,
        });
    }
    if opts.dry_run {
        return Ok(Composed {
            refname: tf.treeref.clone(),
            commit: None,
            version,
            unchanged: false,
            packages: resolved.packages.len(),
            imported: 0,
            skipped_scriptlets: Vec::new(),
            scripts: None,
        });
    }

    let skipped = if opts.no_scripts {
        skipped_scripts(tf, &headers)
    } else {
        Vec::new()
    };
    let mut conflicts = header::conflicts(&headers);
    conflicts.extend(header::reserved_path_misuse(&headers));
    if !conflicts.is_empty() {
        bail!("file conflicts in the package set:\n  - {}", conflicts.join("\n  - "));
    }

    // Packages are cached in the repository itself when it is bare-user (rpm-ostree's
    // unified core); an archive repository (for serving) gets only the final commit,
    // copied in with compression on every core, and the cache lives under cache_dir.
    let target_mode = target.as_ref().map(Repo::mode).transpose()?.unwrap_or(Mode::BareUser);
    let build_repo = match target_mode {
        Mode::BareUser | Mode::Bare => opts.repo.clone(),
        Mode::Archive => opts.cache_dir.join("pkgcache"),
    };
    let users = users_from_packages(&resolved.files, &headers)?;
    let imported = crate::pkgcache::import_all(&build_repo, &resolved.files, &users, opts.jobs)?;
    stage("compose::imported", &mut clock)?;

    let work = tempfile::Builder::new()
        .prefix("compose-")
        .tempdir_in(ensure_dir(&opts.cache_dir.join("work"))?)
        .context("creating a work directory")?;
    // The tree is the package checkouts stacked by overlayfs in a sandbox;
    // every change (scripts, postprocessing, initramfs, rpmdb) lands in
    // `upper`, and the commit is the union of the package commits plus it.
    let upper = work.path().join("rootfs");
    std::fs::create_dir(&upper).with_context(|| format!("creating {}", upper.display()))?;
    let commits: Vec<String> = imported.iter().map(|i| i.commit.clone()).collect();
    let layers = crate::pkgcache::checkouts::layers(&build_repo, &opts.cache_dir, &commits, opts.jobs)?;
    let mut sb = crate::sandbox::Sandbox::start(&crate::sandbox::Config {
        rootfs: upper.clone(),
        arch: tf.basearch,
        copy_on_write: true,
        exe: None,
        layers: layers.clone(),
        limits: crate::sandbox::Limits::default(),
    })
    .context("assembling the tree (an overlay of the package checkouts in a sandbox)")?;
    let rootfs = sb.root();
    let root = cap_std::fs::Dir::open_ambient_dir(&rootfs, cap_std::ambient_authority())
        .with_context(|| format!("opening the assembled tree at {}", rootfs.display()))?;
    stage("compose::assembled", &mut clock)?;

    let scripts = if opts.no_scripts {
        None
    } else {
        let report = run_scripts(tf, &resolved.files, &mut sb, opts)?;
        let users = crate::scriptlet::users::apply_tree(&root)?;
        tracing::debug!(?users, "users and groups");
        stage("compose::scripts-run", &mut clock)?;
        Some(report)
    };
    let owners = super::owners::apply(&root, &headers, &users)?;
    tracing::debug!(files = owners, "file owners applied from the tree's accounts");
    let report = super::postprocess::run(&root, tf, &version, &headers, Some(&upper))?;
    tell_postprocessed(&report);
    stage("compose::postprocessed", &mut clock)?;

    // After postprocess (the tree's final modules and busybox), before the rpmdb
    // and commit; the dracut case was refused before any work.
    if tf.initramfs == Initramfs::Arbor {
        // The storage drivers of every board the tree is for.
        let mut modules: Vec<String> = Vec::new();
        for name in &tf.boards {
            let board = crate::board::find(name).with_context(|| format!("treefile key `boards`: {name}"))?;
            modules.extend(board.modules);
        }
        modules.sort();
        modules.dedup();
        // Entry times: the kernel package's build time (at most the compose's), so a
        // compose that changes other packages reuses the cached image.
        let kernel_time = |kver: &str| {
            let vmlinuz = format!("/usr/lib/modules/{kver}/vmlinuz");
            headers
                .iter()
                .find(|h| h.files.iter().any(|f| f.path == vmlinuz))
                .map_or(when, |h| h.build_time.min(when))
        };
        let kernels = super::initramfs::write_all(&root, &rootfs, &modules, kernel_time, &opts.cache_dir, |kver| {
            modules_key(&layers, &upper, kver)
        })?;
        tracing::debug!(?kernels, "initramfs images");
        stage("compose::initramfs-built", &mut clock)?;
    }

    // SQLite resolves /proc/PID/root to the host's /: written beside, copied in.
    let dbdir = work.path().join("rpmdb");
    std::fs::create_dir(&dbdir).with_context(|| format!("creating {}", dbdir.display()))?;
    super::rpmdb::write(&dbdir, &resolved.files, when as u32)?;
    super::postprocess::ensure_real_dirs(&root, "usr/lib/sysimage/rpm")?;
    let db =
        std::fs::read(dbdir.join(super::rpmdb::FILE_NAME)).with_context(|| format!("reading {}", dbdir.display()))?;
    super::postprocess::replace_file(
        &root,
        &format!("usr/lib/sysimage/rpm/{}", super::rpmdb::FILE_NAME),
        &db,
        0o644,
    )?;
    if !root.exists("usr/share/rpm") {
        root.create_dir_all("usr/share").context("creating /usr/share")?;
        root.symlink_contents("../lib/sysimage/rpm", "usr/share/rpm")
            .context("linking /usr/share/rpm")?;
    }
    drop(root);
    sb.finish().context("stopping the sandbox")?;
    stage("compose::rpmdb-written", &mut clock)?;

    let metadata = commit_metadata(tf, &resolved, &version, &input_hash, &skipped);
    let parent = previous.as_ref().map(|(c, _)| c.as_str());
    let build = Repo::open(&build_repo)?;
    let (commit, applied) = crate::ostree::commit::layers::commit_layers(
        &build,
        &commits,
        &report.copied,
        &ocommit::CommitRequest {
            dir: &upper,
            refname: &tf.treeref,
            subject: &format!("{} {version}", tf.treeref),
            metadata: &metadata,
            timestamp: when,
            parent,
        },
    )?;
    tracing::info!(
        written = applied.written,
        removed = applied.removed,
        "committed the packages plus what scripts and postprocessing changed"
    );
    // Signed before an archive (served) repository sees it, so its ref never points
    // at an unsigned commit; a bare-user build repository is signed right after.
    if let Some(key) = &sign_key {
        crate::ostree::sign::sign_commit_with(&build, &commit, key)?;
    }
    if target_mode == Mode::Archive {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        crate::ostree::publish::copy::copy_commit(&build, &Repo::open(&opts.repo)?, &commit, &tf.treeref, cores)?;
    }
    stage("compose::ref-written", &mut clock)?;
    crate::pkgcache::checkouts::prune(&opts.cache_dir, &layers);
    Ok(Composed {
        refname: tf.treeref.clone(),
        commit: Some(commit),
        version,
        unchanged: false,
        packages: resolved.packages.len(),
        imported: imported.iter().filter(|i| i.imported_now).count(),
        skipped_scriptlets: skipped,
        scripts,
    })
}

/// What postprocessing did with package content a tree cannot carry as it is.
fn tell_postprocessed(report: &super::postprocess::Report) {
    for x in &report.opt_moved {
        tracing::info!(
            "{x} is in the tree as /usr/lib{x} (read-only, updated with the tree); at boot a tmpfiles.d \
             symlink puts it at {x} (opt-usrlocal: var, as rpm-ostree)"
        );
    }
    for d in &report.dropped {
        let who = d.package.as_deref().unwrap_or("a script");
        tracing::warn!("{}: not shipped, from {who}: {}", d.path, d.why);
    }
    for n in &report.nodes {
        match &n.outcome {
            super::nodes::Outcome::AtBoot(line) => tracing::warn!(
                "{} ships {}, a {}: an OSTree tree cannot hold it, so systemd-tmpfiles creates it at boot \
                 (/usr/lib/tmpfiles.d/arbor-var.conf: {line})",
                n.package,
                n.path,
                n.what
            ),
            super::nodes::Outcome::Missing(why) => tracing::warn!(
                "{} ships {}, a {}: it is not in the tree and cannot be created at boot ({why}); \
                 the booted system lacks it",
                n.package,
                n.path,
                n.what
            ),
        }
    }
}

/// Package scriptlets and triggers in rpm's order, then the treefile's
/// postprocess scripts, in the compose's sandbox. Scripts write to the
/// overlay's upper directory, so the package checkouts (hardlinked to the
/// package cache) are never written through, and only what they changed is
/// hashed at commit time.
fn run_scripts(
    tf: &Treefile,
    files: &[PathBuf],
    sb: &mut crate::sandbox::Sandbox,
    opts: &Options,
) -> Result<crate::scriptlet::exec::Report> {
    use crate::scriptlet::{exec, plan};
    let pkgs: Vec<crate::rpm::scripts::PackageScripts> = files
        .iter()
        .map(|f| crate::rpm::scripts::read(f))
        .collect::<Result<_>>()?;
    let names = pkgs.iter().map(|p| (p.nevra.clone(), p.name.clone())).collect();
    let steps = plan::plan(&pkgs, crate::rpm::vercmp::evrcmp);
    let has_postprocess = !tf.postprocess.is_empty() || tf.postprocess_script.is_some();
    if steps.is_empty() && !has_postprocess {
        return Ok(exec::Report::default());
    }
    tracing::info!(scripts = steps.len(), emulation = ?sb.emulation, "running scriptlets");
    let exec_opts = exec::Options {
        timeout: opts.script_timeout,
        ignore: tf.ignore_scriptlet_failures.clone(),
        treefile_hint: true,
    };
    let mut report = exec::run_steps(sb, &steps, &names, &exec_opts)?;
    report.ran += exec::run_postprocess(
        sb,
        &tf.postprocess,
        tf.postprocess_script.as_deref(),
        opts.script_timeout,
    )?;
    Ok(report)
}

/// What depmod reads for kernel `kver`, when only packages put it there: the
/// layers (package commits) holding `/usr/lib/modules/$kver`. `None` when a
/// script or postprocessing changed something in it (the upper layer has it).
fn modules_key(layers: &[PathBuf], upper: &Path, kver: &str) -> Option<String> {
    use sha2::Digest as _;
    let rel = format!("usr/lib/modules/{kver}");
    if std::fs::symlink_metadata(upper.join(&rel)).is_ok() {
        return None;
    }
    let mut h = sha2::Sha256::new();
    h.update(kver.as_bytes());
    for layer in layers.iter().filter(|l| l.join(&rel).is_dir()) {
        h.update(b"\n");
        h.update(layer.file_name()?.as_encoded_bytes());
    }
    Some(hex::encode(h.finalize()))
}

/// Reports a finished stage (stderr, `RUST_LOG`) and checks its failpoint.
fn stage(name: &'static str, started: &mut Instant) -> Result<()> {
    tracing::info!(
        stage = name.trim_start_matches("compose::"),
        secs = format!("{:.2}", started.elapsed().as_secs_f64()),
        "compose stage done"
    );
    *started = Instant::now();
    failpoint::hit(name)
}

fn ensure_dir(p: &Path) -> Result<&Path> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    Ok(p)
}

/// With `--no-scripts`, what is not run: listed, and recorded in the commit.
fn skipped_scripts(tf: &Treefile, headers: &[HeaderInfo]) -> Vec<String> {
    let mut with: Vec<String> = headers
        .iter()
        .filter(|h| !h.scriptlets.is_empty())
        .map(|h| format!("{}: {}", h.nevra, h.scriptlets.join(", ")))
        .collect();
    let treefile_scripts = tf.postprocess.len() + usize::from(tf.postprocess_script.is_some());
    if treefile_scripts > 0 {
        with.push(format!("treefile: {treefile_scripts} postprocess script(s)"));
    }
    for s in &with {
        tracing::warn!("not running scriptlets of {s} (--no-scripts)");
    }
    with
}

/// Owners in package payloads are names; map them through the tree's own
/// /etc/passwd and /etc/group (from whichever package ships them).
fn users_from_packages(files: &[PathBuf], headers: &[HeaderInfo]) -> Result<crate::pkgcache::Users> {
    // Only the packages whose header lists the files are read.
    let shipping: Vec<PathBuf> = files
        .iter()
        .zip(headers)
        .filter(|(_, h)| {
            h.files
                .iter()
                .any(|e| e.path == "/etc/passwd" || e.path == "/etc/group")
        })
        .map(|(f, _)| f.clone())
        .collect();
    crate::pkgcache::users_from_packages(&shipping)
}

/// The commit timestamp: `SOURCE_DATE_EPOCH`, else the newest package build
/// time — deterministic for the same inputs, and newer when packages are.
fn source_date(headers: &[HeaderInfo]) -> Result<u64> {
    if let Ok(s) = std::env::var("SOURCE_DATE_EPOCH") {
        return super::version::parse_epoch(&s);
    }
    Ok(headers.iter().map(|h| h.build_time).max().unwrap_or(0))
}

/// Treefile + package set + arbor version: an unchanged hash means an unchanged tree.
fn input_hash(tf: &Treefile, resolved: &Resolved, no_scripts: bool) -> String {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(if no_scripts {
        "scripts skipped\n"
    } else {
        "scripts run\n"
    });
    h.update(crate::treefile::print_json(tf));
    for p in &resolved.packages {
        h.update(format!("{} {}:{}\n", p.nevra(), p.checksum_type, p.checksum));
    }
    h.update(std::env::var("SOURCE_DATE_EPOCH").unwrap_or_default());
    hex::encode(h.finalize())
}

fn commit_metadata(
    tf: &Treefile,
    resolved: &Resolved,
    version: &str,
    input_hash: &str,
    skipped: &[String],
) -> BTreeMap<String, Meta> {
    let mut m = BTreeMap::new();
    for (k, v) in &tf.add_commit_metadata {
        let value = match v {
            serde_json::Value::String(s) => Meta::Str(s.clone()),
            serde_json::Value::Bool(b) => Meta::Bool(*b),
            serde_json::Value::Number(n) if n.is_u64() => Meta::U64(n.as_u64().unwrap_or_default()),
            other => Meta::Str(other.to_string()),
        };
        m.insert(k.clone(), value);
    }
    m.insert("version".into(), Meta::Str(version.to_string()));
    m.insert("arbor.inputhash".into(), Meta::Str(input_hash.to_string()));
    m.insert("rpmostree.inputhash".into(), Meta::Str(input_hash.to_string()));
    m.insert("arbor.arch".into(), Meta::Str(tf.basearch.to_string()));
    m.insert("arbor.boards".into(), Meta::StrList(tf.boards.clone()));
    // ostree's own binding: a client pulling another ref refuses this commit.
    m.insert("ostree.ref-binding".into(), Meta::StrList(vec![tf.treeref.clone()]));
    m.insert(
        "arbor.packages".into(),
        Meta::StrList(resolved.packages.iter().map(|p| p.nevra()).collect()),
    );
    m.insert("arbor.treefile".into(), Meta::Str(crate::treefile::print_json(tf)));
    if !skipped.is_empty() {
        m.insert("arbor.scripts-skipped".into(), Meta::StrList(skipped.to_vec()));
    }
    m
}
