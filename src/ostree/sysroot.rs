//! An OSTree sysroot built in a staging directory through libostree — what
//! `ostree admin init-fs`, `os-init`, `pull-local` and `deploy` do — for
//! writing into a disk image.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ostree::gio;
use ostree::glib;
use ostree::glib::prelude::ToVariant;

/// What to deploy where.
#[derive(Debug, Clone)]
pub struct DeployRequest<'a> {
    /// The staging directory that becomes the root filesystem's top.
    pub sysroot: &'a Path,
    /// The repository holding the commit.
    pub source_repo: &'a Path,
    /// A ref or commit checksum in `source_repo`.
    pub rev: &'a str,
    /// The stateroot (`ostree/deploy/<osname>`).
    pub osname: &'a str,
    /// Kernel arguments (libostree adds `ostree=`).
    pub kargs: &'a [String],
    /// The device's update remote: name and URL (written to the sysroot repo's
    /// config, and the deployment's origin follows `name:ref`).
    pub remote: Option<(&'a str, &'a str)>,
}

/// The deployment libostree wrote.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The commit deployed.
    pub commit: String,
    /// The ref it came through (if `rev` was a ref).
    pub refname: Option<String>,
    /// The deployment directory, relative to the sysroot.
    pub deploy_dir: PathBuf,
    /// libostree's boot checksum (names `/boot/ostree/<os>-<bootcsum>`).
    pub bootcsum: String,
}

/// Initializes a sysroot at `req.sysroot`, pulls the commit from the source
/// repository, deploys it and writes the boot loader entries (BLS only: the
/// boot loader configuration is arbor's).
pub fn deploy(req: &DeployRequest) -> Result<Deployed> {
    let cancel = gio::Cancellable::NONE;
    let shown = req.sysroot.display();
    std::fs::create_dir_all(req.sysroot).with_context(|| format!("creating {shown}"))?;
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(req.sysroot)));
    sysroot
        .ensure_initialized(cancel)
        .with_context(|| format!("initializing an OSTree sysroot in {shown}"))?;
    sysroot
        .load(cancel)
        .with_context(|| format!("loading the sysroot {shown}"))?;
    let repo = sysroot.repo();
    let config = repo.copy_config();
    // arbor renders extlinux.conf / uEnv.txt / config.txt itself from the BLS entries.
    config.set_string("sysroot", "bootloader", "none");
    repo.write_config(&config)
        .with_context(|| format!("writing the repository config of {shown}"))?;
    sysroot
        .init_osname(req.osname, cancel)
        .with_context(|| format!("creating the stateroot {} in {shown}", req.osname))?;

    let source = super::open(req.source_repo)?;
    let (commit, refname) = super::resolve_rev(&source, req.source_repo, req.rev)?;
    let url = format!("file://{}", std::fs::canonicalize(req.source_repo)?.display());
    let dict = glib::VariantDict::new(None);
    let refs = vec![refname.clone().unwrap_or_else(|| commit.clone())];
    dict.insert_value("refs", &refs.to_variant());
    dict.insert_value("flags", &(ostree::RepoPullFlags::NONE.bits() as i32).to_variant());
    repo.pull_with_options(&url, &dict.end(), None, cancel)
        .with_context(|| format!("pulling {} from {} into {shown}", req.rev, req.source_repo.display()))?;

    let origin_ref = match (&req.remote, &refname) {
        (Some((name, url)), Some(r)) => {
            let opts = glib::VariantDict::new(None);
            opts.insert_value("gpg-verify", &false.to_variant());
            repo.remote_add(name, Some(url), Some(&opts.end()), cancel)
                .with_context(|| format!("adding the remote {name} ({url}) to {shown}"))?;
            // The ref as the device's updates will name it.
            repo.set_ref_immediate(Some(name), r, Some(&commit), cancel)
                .with_context(|| format!("writing the ref {name}:{r}"))?;
            format!("{name}:{r}")
        }
        (None, Some(r)) => r.clone(),
        (_, None) => commit.clone(),
    };
    let origin = sysroot.origin_new_from_refspec(&origin_ref);
    let kargs: Vec<&str> = req.kargs.iter().map(String::as_str).collect();
    let deployment = sysroot
        .deploy_tree(Some(req.osname), &commit, Some(&origin), None, &kargs, cancel)
        .with_context(|| format!("deploying {commit} in {shown}"))?;
    sysroot
        .simple_write_deployment(
            Some(req.osname),
            &deployment,
            None,
            ostree::SysrootSimpleWriteDeploymentFlags::NONE,
            cancel,
        )
        .with_context(|| format!("writing the boot entries of {shown}"))?;
    let deploy_dir = PathBuf::from(sysroot.deployment_dirpath(&deployment).as_str());
    Ok(Deployed {
        commit,
        refname,
        deploy_dir,
        bootcsum: deployment.bootcsum().to_string(),
    })
}
