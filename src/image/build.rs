//! `arbor image`: commit → ostree sysroot (libostree) → bootloader files →
//! partitions written straight into a sparse image file → bmap → compression.
//!
//! [`build`] runs the stages in order, each a function from one typed value to
//! the next: `plan` (here, → `Plan`) → `deploy` (image/deploy.rs, → `Deployed`)
//! → `bootloader_files` (image/bootfiles.rs, → `BootFiles`) → `partitions` and
//! `blobs` (image/disk.rs, → `Partitioned` → `Written`) → `finalize` (here:
//! bmap, compression, manifest). Stages that read or write the deployed tree do
//! it through its [`super::tree::Tree`] handle.
//!
//! The image is written to a temporary file beside the output and renamed into
//! place at the end, so a killed build leaves nothing at the output path.
//! UUIDs, volume ids and the disk signature derive from the commit and the
//! board, and every file time is the commit's, so the same inputs give the same
//! image bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::compress::Compression;
use super::disk::Written;
use crate::board::{Board, Fs, Placed, Role};
use crate::progress::Progress;

/// What to build.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// The OSTree repository holding the commit.
    pub repo: PathBuf,
    /// Ref or commit.
    pub rev: String,
    /// Board name or board file.
    pub board: String,
    /// The image file.
    pub output: PathBuf,
    /// Image size (default: the board's).
    pub size: Option<u64>,
    /// Compress the image (the raw image is then not kept).
    pub compress: Compression,
    /// The device's update remote URL (remote `origin`).
    pub remote: Option<String>,
    /// Public keys the device trusts for updates (installed in /etc/arbor/keys).
    pub keys: Vec<PathBuf>,
    /// The ostree stateroot name.
    pub osname: String,
}

/// What an image holds; written beside it as `<image>.json` (the boot test reads it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Board name.
    pub board: String,
    /// Deployed commit.
    pub commit: String,
    /// Its version.
    pub version: String,
    /// The stateroot.
    pub osname: String,
    /// Deployment directory inside the root partition.
    pub deploy_dir: String,
    /// Kernel version deployed.
    pub kernel: String,
    /// Raw image size in bytes.
    pub size: u64,
    /// Partitions: label, role, first byte, size, filesystem UUID or volume id.
    pub partitions: Vec<ManifestPartition>,
    /// The file written (raw or compressed).
    pub file: PathBuf,
    /// Its bmap.
    pub bmap: PathBuf,
}

/// One partition in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestPartition {
    /// Label.
    pub label: String,
    /// `firmware`, `boot` or `root`.
    pub role: String,
    /// First byte.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Filesystem UUID (ext4) or volume id (FAT).
    pub id: String,
}

/// What `build` did.
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    /// The manifest.
    #[serde(flatten)]
    pub manifest: Manifest,
    /// Bytes the sparse image occupies on disk.
    pub allocated: u64,
    /// Seconds.
    pub secs: f64,
}

/// Builds the image: plan → deploy → bootloader files → partitions → blobs →
/// finalize, each stage taking what the one before it made.
pub fn build(opts: &ImageOptions) -> Result<ImageReport> {
    let started = Instant::now();
    let plan = plan(opts)?;
    // Steps: deploy, bootloader files, each partition, bmap.
    let bar = crate::progress::Progress::bar(plan.placed.len() as u64 + 3, "image");
    let deployed = super::deploy::deploy(&plan, &bar)?;
    let staged = super::bootfiles::bootloader_files(&plan, deployed, &bar)?;
    let partitioned = super::disk::partitions(&plan, staged, &bar)?;
    let written = super::disk::blobs(&plan, partitioned)?;
    let (manifest, allocated) = finalize(&plan, written, &bar)?;
    Ok(ImageReport {
        manifest,
        allocated,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// What is decided before anything is written: the board and its partition
/// layout, the commit, and the ids and kernel arguments derived from them.
pub(super) struct Plan<'a> {
    /// What was asked for.
    pub(super) opts: &'a ImageOptions,
    /// The board.
    pub(super) board: Board,
    /// Image size in bytes.
    pub(super) size: u64,
    /// The board's partitions placed in `size` bytes.
    pub(super) placed: Vec<Placed>,
    /// The commit's checksum.
    pub(super) commit: String,
    /// Its `version` (empty when it has none).
    pub(super) version: String,
    /// Its timestamp: every file time in the image.
    pub(super) timestamp: u64,
    /// What UUIDs, volume ids and the disk signature derive from (commit and board).
    pub(super) seed: String,
    /// Each partition's filesystem id by label: a UUID (ext4) or volume id (FAT).
    pub(super) ids: BTreeMap<String, String>,
    /// Kernel arguments for the deployment.
    pub(super) kargs: Vec<String>,
    /// The output's directory: staging and the temporary image go there.
    pub(super) out_dir: PathBuf,
}

/// Checks the request (root, the tree's arch against the board's, the keys) and plans the image.
fn plan(opts: &ImageOptions) -> Result<Plan<'_>> {
    let board = crate::board::find(&opts.board)?;
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "arbor image needs root: the image's sysroot is a bare OSTree repository and deployment that keep \
             every file's owner (run it with sudo; compose works without root)"
        );
    }
    let size = board.image_size(opts.size);
    let placed = board
        .layout(size)
        .with_context(|| format!("board {}: planning a {size}-byte image", board.source.display()))?;
    let meta = crate::ostree::Repo::open(&opts.repo)?.commit_info(&opts.rev)?;
    if let Some(arch) = meta
        .metadata
        .get("arbor.arch")
        .filter(|arch| *arch != board.arch.rpm_name())
    {
        bail!(
            "{} is an {arch} tree, and board {} is {}: compose the treefile with --arch {}",
            opts.rev,
            board.name,
            board.arch,
            board.arch
        );
    }
    for k in &opts.keys {
        crate::sign::keys::read_public_keys(k)?;
    }
    let version = meta.metadata.get("version").cloned().unwrap_or_default();
    let seed = format!("{}\n{}\n", meta.commit, board.name);
    let out_dir = crate::atomic::parent_dir(&opts.output).to_path_buf();

    // Each partition's filesystem id, derived from the commit and board.
    let ids: BTreeMap<String, String> = placed
        .iter()
        .map(|p| {
            let id = match p.partition.fs {
                Fs::Ext4 => derived_uuid(&seed, &p.partition.label),
                Fs::Vfat => format!("{:08X}", derived_u32(&seed, &p.partition.label)),
            };
            (p.partition.label.clone(), id)
        })
        .collect();
    let root_part = board.partition(Role::Root).context("the board has no root partition")?;
    let mut kargs = vec![board.root_karg(&ids[&root_part.label]), "rw".to_string()];
    kargs.extend(board.kernel_args.iter().cloned());
    Ok(Plan {
        opts,
        board,
        size,
        placed,
        commit: meta.commit,
        version,
        timestamp: meta.timestamp,
        seed,
        ids,
        kargs,
        out_dir,
    })
}

/// Writes the bmap, puts the image in place (compressed or renamed), writes the
/// manifest beside it and removes the staging directory; returns the manifest
/// and the bytes the sparse raw image occupied.
fn finalize(plan: &Plan, written: Written, bar: &Progress) -> Result<(Manifest, u64)> {
    let (opts, board) = (plan.opts, &plan.board);
    let Written { deployed, image: tmp } = written;
    let raw_name = opts.output.clone();
    let bmap_path = PathBuf::from(format!("{}.bmap", raw_path(&raw_name).display()));
    bar.message("block map");
    super::bmap::write(tmp.path(), &bmap_path)?;
    bar.inc();
    bar.finish();
    let allocated = allocated_bytes(tmp.path())?;
    let file = match opts.compress {
        Compression::None => {
            tmp.persist(&raw_name)
                .with_context(|| format!("renaming the image to {}", raw_name.display()))?;
            raw_name
        }
        c => {
            let out = match c.extension() {
                Some(ext) if Compression::from_path(&raw_name) != c => {
                    PathBuf::from(format!("{}.{ext}", raw_name.display()))
                }
                _ => raw_name.clone(),
            };
            super::compress::compress(tmp.path(), &out, c, true)?;
            out
        }
    };
    let manifest = Manifest {
        board: board.name.clone(),
        commit: deployed.commit.clone(),
        version: plan.version.clone(),
        osname: opts.osname.clone(),
        deploy_dir: deployed.deploy_dir.display().to_string(),
        kernel: deployed.kernel.clone(),
        size: plan.size,
        partitions: plan
            .placed
            .iter()
            .map(|p| ManifestPartition {
                label: p.partition.label.clone(),
                role: p.partition.role.to_string(),
                start: p.start,
                size: p.size,
                id: plan.ids[&p.partition.label].clone(),
            })
            .collect(),
        file: file.clone(),
        bmap: bmap_path,
    };
    let manifest_path = PathBuf::from(format!("{}.json", raw_path(&file).display()));
    let text = serde_json::to_string_pretty(&manifest).context("encoding the image manifest")?;
    crate::atomic::write_beneath(
        crate::atomic::parent_dir(&manifest_path),
        &manifest_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        text.as_bytes(),
    )?;
    drop(deployed);
    Ok((manifest, allocated))
}

/// Reads `<image>.json` for an image file (raw or compressed).
pub fn read_manifest(image: &Path) -> Result<Manifest> {
    let p = PathBuf::from(format!("{}.json", raw_path(image).display()));
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("reading {} (written by arbor image beside the image)", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

/// `a.img` for `a.img`, `a.img.zst` and `a.img.xz`: what the .bmap and .json are named after.
fn raw_path(p: &Path) -> PathBuf {
    Compression::from_path(p).strip(p)
}

fn derived(seed: &str, what: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(what);
    h.finalize().into()
}

/// 32 bits derived from the seed and `what` (FAT volume ids, the MBR disk signature).
pub(super) fn derived_u32(seed: &str, what: &str) -> u32 {
    let d = derived(seed, what);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// A version-4-shaped UUID from the seed (stable, never random).
pub(super) fn derived_uuid(seed: &str, what: &str) -> String {
    let mut d = derived(seed, what);
    d[6] = (d[6] & 0x0f) | 0x40;
    d[8] = (d[8] & 0x3f) | 0x80;
    let h = hex::encode(&d[..16]);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn allocated_bytes(p: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(p)
        .with_context(|| format!("looking at {}", p.display()))?
        .blocks()
        * 512)
}

/// The host files a qemu boot of the image needs, read out of the image: the
/// board's U-Boot (from the deployed tree) and its DTB — the deployed kernel's,
/// or with `dtb_from = "firmware"` the firmware partition's copy, which qemu
/// hands U-Boot as the Raspberry Pi firmware would — with the board's qemu
/// device tree edits applied.
pub fn boot_files(
    image: &Path,
    m: &Manifest,
    board: &Board,
    work: &Path,
) -> Result<(Option<PathBuf>, Option<PathBuf>)> {
    let part = |role: &str| {
        m.partitions
            .iter()
            .find(|p| p.role == role)
            .with_context(|| format!("the manifest of {} lists no {role} partition", image.display()))
    };
    let tree = format!("/{}", m.deploy_dir.trim_start_matches('/'));
    let uboot = match &board.uboot {
        Some(u) => {
            let out = work.join("u-boot.bin");
            super::boottest::ext4_cat(image, part("root")?.start, &format!("{tree}{u}"), &out)?;
            Some(out)
        }
        None => None,
    };
    let out = work.join("board.dtb");
    let dtb = match (board.dtb_from, &board.dtb) {
        (_, None) => return Ok((uboot, None)),
        (crate::board::DtbFrom::Kernel, Some(d)) => {
            super::boottest::ext4_cat(
                image,
                part("root")?.start,
                &format!("{tree}/usr/lib/modules/{}/dtb/{d}", m.kernel),
                &out,
            )?;
            out
        }
        (crate::board::DtbFrom::Firmware, Some(_)) => {
            let fw = part("firmware")?;
            let name = board.dtb_file_name().unwrap_or_default();
            let bytes = super::boottest::fat_cat(image, fw.start, fw.size, name)?;
            std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
            out
        }
    };
    let edits = board.qemu.as_ref().map(|q| q.devicetree.as_slice()).unwrap_or_default();
    if !edits.is_empty() {
        let bytes = std::fs::read(&dtb).with_context(|| format!("reading {}", dtb.display()))?;
        let edited = crate::fdt::apply(&bytes, edits)
            .with_context(|| format!("board {} ({}): qemu.devicetree", board.name, board.source.display()))?;
        std::fs::write(&dtb, edited).with_context(|| format!("writing {}", dtb.display()))?;
    }
    Ok((uboot, Some(dtb)))
}
