//! Image stage 1, deploy: [`Plan`] → [`Deployed`]. libostree deploys the commit
//! into a sysroot in a staging directory beside the output; the deployment is
//! then opened as a [`Tree`], its kernel found and the device's keys installed
//! through that handle.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::build::Plan;
use super::tree::Tree;
use crate::progress::Progress;

/// The commit deployed into a staging sysroot.
pub(super) struct Deployed {
    /// The staging directory holding the sysroot (and later /boot's contents);
    /// removed when this is dropped.
    pub(super) staging: Staging,
    /// The sysroot: the root filesystem's top.
    pub(super) root_dir: PathBuf,
    /// The commit deployed.
    pub(super) commit: String,
    /// The deployment directory, relative to the sysroot.
    pub(super) deploy_dir: PathBuf,
    /// The deployment, opened beneath its root: every read of or write to it goes
    /// through this handle, so the tree's symlinks resolve inside it, as on the
    /// device, never to the build host.
    pub(super) tree: Tree,
    /// The kernel version deployed.
    pub(super) kernel: String,
}

/// Deploys the plan's commit into a new staging directory and installs the
/// device's trusted keys in it.
pub(super) fn deploy(plan: &Plan, bar: &Progress) -> Result<Deployed> {
    let opts = plan.opts;
    std::fs::create_dir_all(&plan.out_dir).with_context(|| format!("creating {}", plan.out_dir.display()))?;
    let staging = Staging::new(&plan.out_dir)?;
    let root_dir = staging.path().join("root");
    bar.message("deploying the commit (libostree)");
    tracing::info!(board = %plan.board.name, commit = %plan.commit, "deploying into a staging sysroot");
    let deployed = crate::ostree::sysroot::deploy(&crate::ostree::sysroot::DeployRequest {
        sysroot: &root_dir,
        source_repo: &crate::ostree::Repo::open(&opts.repo)?,
        rev: &opts.rev,
        osname: &opts.osname,
        kargs: &plan.kargs,
        remote: opts.remote.as_deref().map(|u| ("origin", u)),
    })?;
    // libostree marks the deployment immutable; mkfs.ext4 -d does not carry the
    // flag into the image anyway, and the staging copy must be editable and removable.
    crate::runner::Tool::new("chattr")
        .arg("-i")
        .arg(root_dir.join(&deployed.deploy_dir))
        .run()?;
    let tree = Tree::open(&root_dir.join(&deployed.deploy_dir))?;
    crate::failpoint::hit("image::deployed")?;
    let kernel = kernel_version(&tree)?;
    install_keys(&tree, &opts.keys)?;
    record_board(&root_dir, &plan.board)?;
    bar.inc();
    Ok(Deployed {
        staging,
        root_dir,
        commit: deployed.commit,
        deploy_dir: deployed.deploy_dir,
        tree,
        kernel,
    })
}

fn kernel_version(tree: &Tree) -> Result<String> {
    const MODULES: &str = "/usr/lib/modules";
    let mut found = Vec::new();
    if let Some(dir) = tree.open_dir(MODULES)? {
        for e in dir
            .entries()
            .with_context(|| format!("listing {MODULES} in the deployed tree"))?
        {
            let e = e.with_context(|| format!("listing {MODULES} in the deployed tree"))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if tree.is_file(&format!("{MODULES}/{name}/vmlinuz"))? {
                found.push(name.to_string());
            }
        }
    }
    found.sort();
    match found.pop() {
        Some(k) => Ok(k),
        None => bail!("the tree has no kernel (/usr/lib/modules/*/vmlinuz): add a kernel package to the treefile"),
    }
}

/// Records the board beside the sysroot's repository (outside every
/// deployment, so it stays through updates): the device verbs render its
/// bootloader files from it.
fn record_board(root_dir: &Path, board: &crate::board::Board) -> Result<()> {
    let text = crate::input::read_text(&board.source, "board file", crate::input::CONFIG_CAP)?;
    crate::atomic::write_beneath(root_dir, crate::device::BOARD_FILE, text.as_bytes())
        .with_context(|| format!("recording board {} in the sysroot", board.name))
}

/// Where the device reads the public keys it trusts for updates.
const KEYS_DIR: &str = "/etc/arbor/keys";
/// A public key file is a few lines; anything larger is not one.
const MAX_KEY_FILE: u64 = 1 << 20;

fn install_keys(tree: &Tree, keys: &[PathBuf]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    tree.create_dir_all(KEYS_DIR)?;
    for k in keys {
        let name = k
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("key file {}: expected a UTF-8 file name", k.display()))?;
        let data = read_host_file(k, MAX_KEY_FILE)?;
        tree.write_file(&format!("{KEYS_DIR}/{name}"), &data, 0o644)
            .with_context(|| format!("installing {}", k.display()))?;
    }
    Ok(())
}

/// Reads a regular host file given on the command line, at most `max` bytes.
fn read_host_file(p: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .with_context(|| format!("opening {}", p.display()))?;
    let meta = f.metadata().with_context(|| format!("looking at {}", p.display()))?;
    if !meta.is_file() || meta.len() > max {
        bail!("{} is not a regular file of at most {max} bytes", p.display());
    }
    let mut data = Vec::new();
    f.take(max)
        .read_to_end(&mut data)
        .with_context(|| format!("reading {}", p.display()))?;
    Ok(data)
}

/// The staging directory (removed when dropped).
pub(super) struct Staging {
    dir: tempfile::TempDir,
}

impl Staging {
    fn new(parent: &Path) -> Result<Staging> {
        let dir = tempfile::Builder::new()
            .prefix(".arbor-staging-")
            .tempdir_in(parent)
            .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
        Ok(Staging { dir })
    }
    /// Its host path.
    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }
}
