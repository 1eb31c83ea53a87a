//! `arbor image`: commit → ostree sysroot (libostree) → bootloader files →
//! partitions written straight into a sparse image file → bmap → compression.
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
use super::fs::{FatSource, clamp_times, write_ext4, write_fat};
use super::tree::Tree;
use crate::board::{Board, Fs, PartType, PartitionTable, Role};

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

/// Builds the image.
pub fn build(opts: &ImageOptions) -> Result<ImageReport> {
    let started = Instant::now();
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
    let meta = crate::ostree::tree::commit_info(&opts.repo, &opts.rev)?;
    if let Some(arch) = meta.metadata.get("arbor.arch")
        && arch != board.arch.rpm_name()
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
    let out_dir = match opts.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let staging = Staging::new(&out_dir)?;
    let root_dir = staging.path().join("root");

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

    // Steps: deploy, bootloader files, each partition, bmap.
    let bar = crate::progress::Progress::bar(placed.len() as u64 + 3, "image");
    bar.message("deploying the commit (libostree)");
    tracing::info!(board = %board.name, commit = %meta.commit, "deploying into a staging sysroot");
    let deployed = crate::ostree::sysroot::deploy(&crate::ostree::sysroot::DeployRequest {
        sysroot: &root_dir,
        source_repo: &opts.repo,
        rev: &opts.rev,
        osname: &opts.osname,
        kargs: &kargs,
        remote: opts.remote.as_deref().map(|u| ("origin", u)),
    })?;
    // libostree marks the deployment immutable; mkfs.ext4 -d does not carry the
    // flag into the image anyway, and the staging copy must be editable and removable.
    crate::runner::Tool::new("chattr")
        .arg("-i")
        .arg(root_dir.join(&deployed.deploy_dir))
        .run()?;
    // Everything read from or written to the deployment goes through this handle:
    // the tree's symlinks resolve inside it, as on the device, never to the build host.
    let tree = super::tree::Tree::open(&root_dir.join(&deployed.deploy_dir))?;
    crate::failpoint::hit("image::deployed")?;
    let kernel = kernel_version(&tree)?;

    install_keys(&tree, &opts.keys)?;
    bar.inc();
    bar.message("bootloader files");

    // Bootloader files from the BLS entries libostree wrote.
    let boot_dir = root_dir.join("boot");
    let entries = crate::bootloader::read_entries(&boot_dir)?;
    let rendered = crate::bootloader::render(&board, &entries, board.boot_prefix())?;
    let mut fat_files: Vec<(String, FatSource)> = Vec::new();
    for f in rendered {
        match f.role {
            Role::Firmware => fat_files.push((f.path.clone(), FatSource::Bytes(f.content.into_bytes()))),
            Role::Boot | Role::Root => {
                let base = if f.role == Role::Boot || board.partition(Role::Boot).is_none() {
                    boot_dir.clone()
                } else {
                    root_dir.clone()
                };
                crate::bootloader::write_atomically(&base, f.path.trim_start_matches('/'), f.content.as_bytes())?;
            }
        }
    }
    fat_files.extend(firmware_files(&board, &tree)?);

    // /boot is its own partition: the root filesystem keeps an empty mount point.
    let separate_boot = board.partition(Role::Boot).is_some();
    let boot_source = staging.path().join("boot");
    if separate_boot {
        std::fs::rename(&boot_dir, &boot_source).context("moving /boot aside for its own partition")?;
        std::fs::create_dir(&boot_dir).context("creating the /boot mount point")?;
    }
    clamp_times(staging.path(), meta.timestamp)?;

    let tmp = tempfile::Builder::new()
        .prefix(".arbor-image-")
        .tempfile_in(&out_dir)
        .with_context(|| format!("creating a temporary image in {}", out_dir.display()))?;
    tmp.as_file().set_len(size).context("sizing the image")?;
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .context("setting the image's mode")?;
    }
    write_table(tmp.as_file(), &board, &placed, size, &seed)?;
    bar.inc();
    for p in &placed {
        bar.message(&format!(
            "{} partition {} ({})",
            p.partition.fs, p.partition.label, p.partition.role
        ));
        tracing::info!(partition = %p.partition.label, fs = %p.partition.fs, mib = p.size >> 20, "writing");
        let label = &p.partition.label;
        let id = &ids[label];
        match (p.partition.role, p.partition.fs) {
            (Role::Firmware, Fs::Vfat) => write_fat(
                tmp.as_file(),
                p.start,
                p.size,
                label,
                derived_u32(&seed, label),
                &fat_files,
            )?,
            (Role::Boot, Fs::Ext4) => write_ext4(tmp.path(), p.start, p.size, label, id, &boot_source, meta.timestamp)?,
            (Role::Root, Fs::Ext4) => write_ext4(tmp.path(), p.start, p.size, label, id, &root_dir, meta.timestamp)?,
            (role, fs) => bail!("board {}: a {role} partition on {fs} is not supported", board.name),
        }
        bar.inc();
    }
    for b in &board.blobs {
        let data = tree
            .read(&b.from, b.size)
            .with_context(|| format!("board {}: reading blob {}", board.name, b.from))?
            .with_context(|| format!("board {}: blob {} is not in the tree", board.name, b.from))?;
        use std::os::unix::fs::FileExt;
        tmp.as_file()
            .write_all_at(&data, b.offset)
            .with_context(|| format!("writing blob {}", b.from))?;
    }
    tmp.as_file().sync_all().context("syncing the image")?;
    crate::failpoint::hit("image::partitions-written")?;

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
        version,
        osname: opts.osname.clone(),
        deploy_dir: deployed.deploy_dir.display().to_string(),
        kernel,
        size,
        partitions: placed
            .iter()
            .map(|p| ManifestPartition {
                label: p.partition.label.clone(),
                role: p.partition.role.to_string(),
                start: p.start,
                size: p.size,
                id: ids[&p.partition.label].clone(),
            })
            .collect(),
        file: file.clone(),
        bmap: bmap_path,
    };
    let manifest_path = PathBuf::from(format!("{}.json", raw_path(&file).display()));
    let text = serde_json::to_string_pretty(&manifest).context("encoding the image manifest")?;
    crate::bootloader::write_atomically(
        manifest_path.parent().unwrap_or(Path::new(".")),
        &manifest_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        text.as_bytes(),
    )?;
    drop(staging);
    Ok(ImageReport {
        manifest,
        allocated,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Writes the board's partition table (MBR, or GPT with its backup at the end).
fn write_table(
    file: &std::fs::File,
    board: &Board,
    placed: &[crate::board::Placed],
    size: u64,
    seed: &str,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let pieces: Vec<(u64, Vec<u8>)> = match board.partition_table {
        PartitionTable::Mbr => {
            let parts: Vec<super::mbr::MbrPart> = placed
                .iter()
                .map(|p| {
                    Ok(super::mbr::MbrPart {
                        start: p.start,
                        size: p.size,
                        kind: match p.partition.kind {
                            PartType::Mbr(b) => b,
                            PartType::Gpt(_) => bail!("partition {} has a GPT type on an MBR board", p.partition.label),
                        },
                        bootable: p.partition.bootable,
                    })
                })
                .collect::<Result<_>>()?;
            vec![(0, super::mbr::encode(derived_u32(seed, "disk"), &parts)?.to_vec())]
        }
        PartitionTable::Gpt => {
            let parts: Vec<super::gpt::GptPart> = placed
                .iter()
                .map(|p| {
                    Ok(super::gpt::GptPart {
                        start: p.start,
                        size: p.size,
                        type_guid: match &p.partition.kind {
                            PartType::Gpt(g) => g.clone(),
                            PartType::Mbr(_) => bail!("partition {} has an MBR type on a GPT board", p.partition.label),
                        },
                        guid: derived_uuid(seed, &format!("partition {}", p.partition.label)),
                        name: p.partition.label.clone(),
                        bootable: p.partition.bootable,
                    })
                })
                .collect::<Result<_>>()?;
            super::gpt::encode(&derived_uuid(seed, "disk"), size, &parts)?
        }
    };
    for (offset, bytes) in pieces {
        file.write_all_at(&bytes, offset)
            .context("writing the partition table")?;
    }
    Ok(())
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

fn derived_u32(seed: &str, what: &str) -> u32 {
    let d = derived(seed, what);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// A version-4-shaped UUID from the seed (stable, never random).
fn derived_uuid(seed: &str, what: &str) -> String {
    let mut d = derived(seed, what);
    d[6] = (d[6] & 0x0f) | 0x40;
    d[8] = (d[8] & 0x3f) | 0x80;
    let h = hex::encode(&d[..16]);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
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

/// The board's firmware files, resolved inside the deployed tree.
fn firmware_files(board: &Board, tree: &Tree) -> Result<Vec<(String, FatSource)>> {
    let mut out = Vec::new();
    for f in &board.firmware {
        let matches = if f.is_glob() {
            tree.glob(&f.from)
                .with_context(|| format!("board {}: firmware {}", board.name, f.from))?
        } else {
            vec![f.from.clone()]
        };
        let mut opened = Vec::new();
        for m in matches {
            if let Some((file, _)) = tree
                .open_file(&m)
                .with_context(|| format!("board {}: firmware {}", board.name, f.from))?
            {
                opened.push((m, file));
            }
        }
        if opened.is_empty() {
            if f.optional {
                tracing::info!(board = %board.name, file = %f.from, "optional firmware file not in the tree");
                continue;
            }
            bail!(
                "board {}: firmware file {} is not in the tree (add the package that ships it, or mark it optional)",
                board.name,
                f.from
            );
        }
        for (m, file) in opened {
            let name = m.rsplit('/').next().unwrap_or_default();
            out.push((f.dest(name), FatSource::File(std::sync::Arc::new(file))));
        }
    }
    Ok(out)
}

fn allocated_bytes(p: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(p)
        .with_context(|| format!("looking at {}", p.display()))?
        .blocks()
        * 512)
}

/// The staging directory (removed when dropped).
struct Staging {
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
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The host files a qemu boot of the image needs, read out of the image's root
/// partition: the board's U-Boot and its DTB (from the deployed tree).
pub fn boot_files(
    image: &Path,
    m: &Manifest,
    board: &Board,
    work: &Path,
) -> Result<(Option<PathBuf>, Option<PathBuf>)> {
    let root = m
        .partitions
        .iter()
        .find(|p| p.role == "root")
        .with_context(|| format!("the manifest of {} lists no root partition", image.display()))?;
    let tree = format!("/{}", m.deploy_dir.trim_start_matches('/'));
    let uboot = match &board.uboot {
        Some(u) => {
            let out = work.join("u-boot.bin");
            super::boottest::ext4_cat(image, root.start, &format!("{tree}{u}"), &out)?;
            Some(out)
        }
        None => None,
    };
    let dtb = match &board.dtb {
        Some(d) => {
            let out = work.join("board.dtb");
            super::boottest::ext4_cat(
                image,
                root.start,
                &format!("{tree}/usr/lib/modules/{}/dtb/{d}", m.kernel),
                &out,
            )?;
            Some(out)
        }
        None => None,
    };
    Ok((uboot, dtb))
}
