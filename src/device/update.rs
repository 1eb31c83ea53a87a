//! `arbor upgrade`, `deploy`, `rebase`, `rollback` and `cleanup`.
//!
//! Verify before content: the commit object (with its detached signatures) is
//! pulled alone and checked — a trusted, unrevoked ed25519 signature over its
//! bytes; `arbor.arch` and `arbor.boards` matching this device;
//! `ostree.ref-binding` naming the ref followed; not older than the current
//! deployment unless allowed — and only then is its content pulled (libostree
//! picks the static delta from the commit the ref points to now). A refused
//! commit object is deleted again: refs, deployments and bootloader files are
//! untouched.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Device, split_refspec};
use crate::ostree::pull::{self, Pull, Report};
use crate::ostree::sysroot::DeploymentInfo;
use crate::sign::{Binding, Trust};

/// How an update runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Accept a commit older than the current deployment.
    pub allow_downgrade: bool,
    /// Cancel a pull when nothing arrives for this long.
    pub stall: Duration,
    /// libostree's network retries per request.
    pub retries: u32,
    /// Deploy a commit even though it failed its boot trial here before.
    pub force: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            allow_downgrade: false,
            stall: Duration::from_secs(60),
            retries: 5,
            force: false,
        }
    }
}

/// What a verb found or did (`--json` prints it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// `no-update`, `available`, `deployed`, `rolled-back`, `cleaned`.
    pub result: &'static str,
    /// The commit concerned.
    pub commit: String,
    /// Its version.
    pub version: Option<String>,
    /// The origin (`remote:ref`).
    pub origin: Option<String>,
    /// Bytes the update downloads (`--check`), or downloaded.
    pub download_bytes: Option<u64>,
    /// The key whose signature verified.
    pub key: Option<String>,
    /// Bootloader files replaced.
    pub bootloader_files: Vec<String>,
    /// The layered packages built onto the new commit (a layered deployment's upgrade).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layered: Option<crate::layer::build::Built>,
}

impl Outcome {
    fn with_layered(mut self, layered: Option<crate::layer::build::Built>) -> Outcome {
        self.layered = layered;
        self
    }
}

/// Where updates come from for the default deployment.
struct Source {
    remote: String,
    url: String,
    refname: String,
}

fn source(dev: &Device, refspec_override: Option<&str>) -> Result<Source> {
    let d = dev.default_deployment()?;
    let origin = d.origin.clone().with_context(|| {
        format!(
            "the default deployment {} has no origin refspec to update from",
            d.commit
        )
    })?;
    let (cur_remote, _) = split_refspec(&origin);
    let spec = refspec_override.unwrap_or(&origin);
    let (remote, refname) = split_refspec(spec);
    let remote = remote
        .or(cur_remote)
        .with_context(|| format!("origin {origin} names no remote (expected remote:ref)"))?
        .to_string();
    let url = dev.sysroot.remote_url(&remote)?;
    Ok(Source {
        remote,
        url,
        refname: refname.to_string(),
    })
}

/// `arbor upgrade --check`: the newest commit of the origin's ref, verified,
/// and its download size. `result` is `no-update` or `available`.
pub fn check(dev: &Device, opts: &Options) -> Result<Outcome> {
    let src = source(dev, None)?;
    let current = dev.current()?;
    let trust = dev.trust(&dev.default_deployment()?)?;
    let target = head(&src, &trust)?;
    if target == current.commit {
        return Ok(outcome(dev, "no-update", &target, &src, None, None, vec![]));
    }
    let verified = fetch_verified(dev, &src, &target, &trust, &current, opts)?;
    let size = match pull::delta_download_size(&src.url, &current.commit, &target, &trust)? {
        Some(s) => Some(s),
        // No static delta from here: libostree fetches the objects this repository lacks.
        None => Some(pull::objects_download_size(dev.sysroot.repo(), &src.url, &target)?),
    };
    Ok(outcome(dev, "available", &target, &src, size, Some(verified), vec![]))
}

/// `arbor upgrade`: pull, verify and deploy the newest commit of the origin's ref.
pub fn upgrade(dev: &Device, opts: &Options, on_report: &(dyn Fn(&Report) + Sync)) -> Result<Outcome> {
    let _lock = dev.lock("upgrade")?;
    settle(dev)?;
    let src = source(dev, None)?;
    let trust = dev.trust(&dev.default_deployment()?)?;
    let target = head(&src, &trust)?;
    tracing::info!(commit = %target, url = %src.url, "the server's summary verified");
    let current = dev.current()?;
    let repo = dev.sysroot.repo();
    let default = dev.default_deployment()?;
    // A layered deployment is up to date when its base is the server's commit.
    let same_layering = |d: &DeploymentInfo| d.origin_lists == default.origin_lists;
    if (same_layering(&current) && target == crate::layer::base_of(repo, &current.commit)?)
        || target == crate::layer::base_of(repo, &default.commit)?
    {
        // A run killed after its boot files and before its cleanup ends here.
        dev.sysroot.cleanup()?;
        return Ok(outcome(dev, "no-update", &target, &src, None, None, vec![]));
    }
    if let Some(f) = super::bootcount::last_failed(dev)?.filter(|f| f.commit == target && !opts.force) {
        bail!(
            "the server's newest commit {target} (version {}) failed its boot trial here ({} boots, rolled back to {}); \
             nothing was changed: wait for a newer version, or deploy it again with --force",
            f.version.as_deref().unwrap_or("?"),
            f.boots,
            f.running
        );
    }
    apply(dev, &src, &target, &trust, &current, opts, on_report)
}

/// `arbor deploy REV`: a commit checksum or a version of the origin's ref
/// (looked up in its history on the server). Older commits are allowed: the
/// user named this one.
pub fn deploy(dev: &Device, rev: &str, opts: &Options, on_report: &(dyn Fn(&Report) + Sync)) -> Result<Outcome> {
    let _lock = dev.lock("deploy")?;
    settle(dev)?;
    let src = source(dev, None)?;
    let trust = dev.trust(&dev.default_deployment()?)?;
    let current = dev.current()?;
    let target = if ::ostree::validate_checksum_string(rev).is_ok() {
        rev.to_string()
    } else {
        find_version(dev, &src, &trust, rev, opts)?
    };
    let opts = Options {
        allow_downgrade: true,
        ..opts.clone()
    };
    apply(dev, &src, &target, &trust, &current, &opts, on_report)
}

/// `arbor rebase [REMOTE:]REF`: the newest commit of another ref; the origin changes.
pub fn rebase(dev: &Device, refspec: &str, opts: &Options, on_report: &(dyn Fn(&Report) + Sync)) -> Result<Outcome> {
    let _lock = dev.lock("rebase")?;
    settle(dev)?;
    let src = source(dev, Some(refspec))?;
    let trust = dev.trust(&dev.default_deployment()?)?;
    let current = dev.current()?;
    let target = head(&src, &trust)?;
    let opts = Options {
        allow_downgrade: true,
        ..opts.clone()
    };
    apply(dev, &src, &target, &trust, &current, &opts, on_report)
}

/// `arbor upgrade --bundle FILE`: the offline path. The bundle is verified
/// with the device's keys (manifest, every member, the commit's signature)
/// and must be for this board and arch, from a commit this device has; its
/// delta goes into the sysroot's repository, then the same commit checks and
/// deploy as a pull. No network.
pub fn upgrade_bundle(dev: &Device, file: &std::path::Path, opts: &Options) -> Result<Outcome> {
    let _lock = dev.lock("upgrade --bundle")?;
    settle(dev)?;
    let default = dev.default_deployment()?;
    let trust = dev.trust(&default)?;
    let current = dev.current()?;
    let origin = default
        .origin
        .clone()
        .with_context(|| format!("the default deployment {} has no origin", default.commit))?;
    let (remote, refname) = split_refspec(&origin);
    let src = Source {
        remote: remote.unwrap_or("origin").to_string(),
        url: file.display().to_string(),
        refname: refname.to_string(),
    };
    let shown = file.display();
    // What the bundle says about itself is checked again on the commit below;
    // these refusals come first so nothing is applied for another device.
    let board = crate::ostree::bundle::verify_file(file, &trust)?.board;
    let arch = dev.board.arch.rpm_name();
    if board.arch != arch || !board.boards.contains(&dev.board.name) {
        bail!(
            "bundle {shown} is for arch {} and boards [{}], not this {arch} {}; nothing was changed",
            board.arch,
            board.boards.join(", "),
            dev.board.name
        );
    }
    let repo = dev.sysroot.repo();
    if let Some(from) = &board.from {
        if !repo.has_commit(from)? {
            bail!(
                "bundle {shown} updates from commit {from}, which this device does not have (it runs {}); nothing was changed",
                current.commit
            );
        }
    }
    if board.to == default.commit {
        return Ok(outcome(dev, "no-update", &board.to, &src, None, None, vec![]));
    }
    crate::ostree::bundle::apply_file(repo, file, &trust)?;
    crate::failpoint::hit("device::content-pulled")?;
    let key = fetch_verified(dev, &src, &board.to, &trust, &current, opts)?;
    let boot_bytes = repo.boot_files_size(&board.to)?;
    check_space(&dev.sysroot.path().join("boot"), boot_bytes, "/boot")?;
    let (files, layered) = deploy_target(dev, &default.osname, &board.to, &origin)?;
    dev.sysroot.set_remote_ref(&src.remote, &src.refname, &board.to)?;
    Ok(outcome(
        dev,
        "deployed",
        &board.to,
        &src,
        std::fs::metadata(file).ok().map(|m| m.len()),
        Some(key),
        files,
    )
    .with_layered(layered))
}

/// Deploys the verified, pulled `target` in front: as it is, or with the
/// default deployment's layered packages built onto it (recorded script runs
/// replayed); then the trial, the bootloader files, cleanup. Returns the
/// bootloader files written.
fn deploy_target(
    dev: &Device,
    osname: &str,
    target: &str,
    refspec: &str,
) -> Result<(Vec<String>, Option<crate::layer::build::Built>)> {
    let layering = crate::layer::Layering::from_origin(&dev.default_deployment()?.origin_lists);
    if !layering.is_empty() {
        tracing::info!(layered = %layering.summary(), "layering onto the new base");
        let o = crate::layer::relayer(
            dev,
            osname,
            target,
            refspec,
            &layering,
            &crate::layer::Options::default(),
        )?;
        return Ok((o.bootloader_files, o.built));
    }
    dev.sysroot.deploy(osname, target, refspec)?;
    crate::failpoint::hit("device::entries-written")?;
    // Only now, with the new deployment and its entries complete: a trial.
    super::bootcount::arm(dev)?;
    tracing::info!("deployed; rendering the bootloader files");
    let files = super::bootfiles::render(dev)?;
    crate::failpoint::hit("device::bootfiles-written")?;
    tracing::info!("cleaning up");
    dev.sysroot.cleanup()?;
    Ok((files.written, None))
}

/// `arbor rollback`: the second deployment in boot order becomes the first
/// (a second rollback goes back).
pub fn rollback(dev: &Device) -> Result<Outcome> {
    let _lock = dev.lock("rollback")?;
    settle(dev)?;
    let all = dev.sysroot.deployments();
    if all.len() < 2 {
        bail!(
            "{} has {} deployment(s): nothing to roll back to",
            dev.sysroot.path().display(),
            all.len()
        );
    }
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.swap(0, 1);
    // The new default is not on trial (the user chose it); cleared first, as
    // deployment ids move with the order.
    super::bootcount::disarm(dev)?;
    dev.sysroot.reorder(&order)?;
    crate::failpoint::hit("device::entries-written")?;
    let files = super::bootfiles::render(dev)?;
    crate::failpoint::hit("device::bootfiles-written")?;
    dev.sysroot.cleanup()?;
    let now = dev.default_deployment()?;
    let (remote, refname) = now.origin.as_deref().map(split_refspec).unwrap_or((None, ""));
    let src = Source {
        remote: remote.unwrap_or_default().to_string(),
        url: String::new(),
        refname: refname.to_string(),
    };
    Ok(outcome(
        dev,
        "rolled-back",
        &now.commit,
        &src,
        None,
        None,
        files.written,
    ))
}

/// `arbor pin INDEX [--unpin]`: keeps the deployment at `index` (0 boots
/// next, as `arbor status` lists them) through later upgrades and cleanups.
pub fn pin(dev: &Device, index: usize, pinned: bool) -> Result<DeploymentInfo> {
    let _lock = dev.lock(if pinned { "pin" } else { "unpin" })?;
    dev.sysroot.set_pinned(index, pinned)?;
    dev.sysroot
        .deployments()
        .into_iter()
        .nth(index)
        .with_context(|| format!("deployment {index} vanished from {}", dev.sysroot.path().display()))
}

/// `arbor cleanup`: removes deployments no boot entry lists, old boot
/// versions and unreferenced objects, and commit objects of refused updates.
pub fn cleanup(dev: &Device) -> Result<()> {
    let _lock = dev.lock("cleanup")?;
    settle(dev)?;
    dev.sysroot.cleanup()
}

/// Completes what an interrupted operation left: /boot is thawed if
/// libostree's freeze outlived a killed run, the bootloader files are
/// rendered again from libostree's boot entries (written only where they
/// differ), and when that changed anything, what no entry lists is cleaned up
/// (otherwise the verb's own cleanup at its end does it). Every mutating verb
/// starts with it, under the lock, so a run killed between libostree's entry
/// swap and arbor's files is finished by the next one.
pub(crate) fn settle(dev: &Device) -> Result<super::bootfiles::Rendered> {
    dev.sysroot.thaw_boot()?;
    let files = super::bootfiles::render(dev)?;
    if !files.written.is_empty() {
        dev.sysroot.cleanup()?;
    }
    Ok(files)
}

/// The commit the server's verified summary lists for the source's ref.
fn head(src: &Source, trust: &Trust) -> Result<String> {
    let summary = pull::summary(&src.url, trust)?;
    summary.refs.get(&src.refname).cloned().with_context(|| {
        format!(
            "{}/summary lists no ref {} (it has: {})",
            src.url,
            src.refname,
            summary.refs.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })
}

/// Pulls the commit object alone (when not present) and checks it; a refused
/// commit pulled here is deleted again. Returns the key that verified.
fn fetch_verified(
    dev: &Device,
    src: &Source,
    commit: &str,
    trust: &Trust,
    current: &DeploymentInfo,
    opts: &Options,
) -> Result<String> {
    let repo = dev.sysroot.repo();
    let had = repo.has_commit(commit)?;
    if !had {
        pull::pull(
            repo,
            &Pull {
                remote: &src.remote,
                url: &src.url,
                refname: None,
                commit,
                commit_only: true,
                not_older_than: None,
                stall: opts.stall,
                retries: opts.retries,
                depth: 0,
            },
            &|_| {},
        )?;
    }
    crate::failpoint::hit("device::commit-pulled")?;
    let binding = Binding {
        arch: Some(dev.board.arch),
        board: Some(dev.board.name.clone()),
        ref_name: Some(src.refname.clone()),
    };
    let report = crate::ostree::sign::check_commit(repo, commit, trust, &binding)?;
    let mut reasons = report.reasons.clone();
    let new = repo.commit_info(commit)?;
    let cur = repo.commit_info(&current.commit)?;
    if new.timestamp < cur.timestamp && !opts.allow_downgrade {
        reasons.push(format!(
            "it is older than the current deployment (version {} of {} < version {} of {}); --allow-downgrade accepts it",
            new.metadata.get("version").map(String::as_str).unwrap_or("?"),
            new.timestamp,
            cur.metadata.get("version").map(String::as_str).unwrap_or("?"),
            cur.timestamp
        ));
    }
    match (reasons.is_empty(), report.key) {
        (true, Some(key)) => Ok(key),
        _ => {
            if !had {
                repo.delete_commit(commit)?;
            }
            bail!(
                "the update {commit} from {} ({}) is refused, nothing was changed: {}",
                src.url,
                src.refname,
                reasons.join("; ")
            )
        }
    }
}

/// Verify, pull the content, check space, deploy, render the bootloader
/// files, clean up.
#[allow(clippy::too_many_arguments)]
fn apply(
    dev: &Device,
    src: &Source,
    target: &str,
    trust: &Trust,
    current: &DeploymentInfo,
    opts: &Options,
    on_report: &(dyn Fn(&Report) + Sync),
) -> Result<Outcome> {
    let key = fetch_verified(dev, src, target, trust, current, opts)?;
    tracing::info!(commit = target, "verified; pulling the content");
    let repo = dev.sysroot.repo();
    let size = match pull::delta_download_size(&src.url, &current.commit, target, trust) {
        Ok(Some(s)) => Some(s),
        _ => pull::objects_download_size(repo, &src.url, target).ok(),
    };
    check_space(
        &dev.sysroot.path().join("ostree"),
        size.unwrap_or(0),
        "the root filesystem",
    )?;
    let transferred = pull::pull(
        repo,
        &Pull {
            remote: &src.remote,
            url: &src.url,
            refname: Some(&src.refname),
            commit: target,
            commit_only: false,
            not_older_than: (!opts.allow_downgrade).then_some(current.commit.as_str()),
            stall: opts.stall,
            retries: opts.retries,
            depth: 0,
        },
        on_report,
    )?;
    crate::failpoint::hit("device::content-pulled")?;
    tracing::info!(bytes = transferred.bytes, "pulled; deploying");
    let boot_bytes = repo.boot_files_size(target)?;
    check_space(&dev.sysroot.path().join("boot"), boot_bytes, "/boot")?;
    let osname = dev.default_deployment()?.osname;
    let refspec = format!("{}:{}", src.remote, src.refname);
    let (files, layered) = deploy_target(dev, &osname, target, &refspec)?;
    tracing::info!("done");
    Ok(outcome(dev, "deployed", target, src, Some(transferred.bytes), Some(key), files).with_layered(layered))
}

/// Refuses when the filesystem holding `dir` has less than `need` bytes free
/// (plus a margin), with the numbers.
fn check_space(dir: &std::path::Path, need: u64, what: &str) -> Result<()> {
    const MARGIN: u64 = 8 << 20;
    let st = nix::sys::statvfs::statvfs(dir).with_context(|| format!("checking free space on {}", dir.display()))?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    if free < need.saturating_add(MARGIN) {
        bail!(
            "not enough space on {what} ({}): the update needs {} MiB and {} MiB are free (with an {} MiB margin); \
             nothing was changed; `arbor cleanup` removes what no deployment uses",
            dir.display(),
            need.div_ceil(1 << 20),
            free >> 20,
            MARGIN >> 20
        );
    }
    Ok(())
}

/// The commit of the ref's history on the server whose `version` is `version`.
fn find_version(dev: &Device, src: &Source, trust: &Trust, version: &str, opts: &Options) -> Result<String> {
    const DEPTH: i32 = 100;
    let head = head(src, trust)?;
    let repo = dev.sysroot.repo();
    pull::pull(
        repo,
        &Pull {
            remote: &src.remote,
            url: &src.url,
            refname: None,
            commit: &head,
            commit_only: true,
            not_older_than: None,
            stall: opts.stall,
            retries: opts.retries,
            depth: DEPTH,
        },
        &|_| {},
    )?;
    let mut candidates = vec![head.clone()];
    candidates.extend(repo.ancestors(&head, DEPTH as usize)?);
    for c in &candidates {
        if repo.commit_info(c)?.metadata.get("version").map(String::as_str) == Some(version) {
            return Ok(c.clone());
        }
    }
    bail!(
        "no commit with version {version} in the last {} commits of {} on {}",
        candidates.len(),
        src.refname,
        src.url
    )
}

fn outcome(
    dev: &Device,
    result: &'static str,
    commit: &str,
    src: &Source,
    download_bytes: Option<u64>,
    key: Option<String>,
    bootloader_files: Vec<String>,
) -> Outcome {
    let version = dev
        .sysroot
        .repo()
        .commit_info(commit)
        .ok()
        .and_then(|i| i.metadata.get("version").cloned());
    Outcome {
        layered: None,
        result,
        commit: commit.to_string(),
        version,
        origin: (!src.remote.is_empty()).then(|| format!("{}:{}", src.remote, src.refname)),
        download_bytes,
        key,
        bootloader_files,
    }
}
