//! `arbor image`, `arbor image boot-test`, `arbor boards` and `arbor flash`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::image::build::{ImageOptions, build, read_manifest};
use crate::image::compress::Compression;

/// Arguments of `arbor image`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Image {
    #[command(subcommand)]
    command: Option<ImageCmd>,
    #[command(flatten)]
    build: Option<Build>,
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Boot an image in qemu (the board's [qemu] profile) and wait for the booted system's marker;
    /// the image is booted through a throwaway overlay (qemu -snapshot) and never changes.
    BootTest(BootTest),
    /// List the boards arbor knows, or show one's partition plan.
    Boards(Boards),
}

/// Arguments of `arbor image --repo … --ref … --board … -o …`.
#[derive(Debug, Args)]
pub struct Build {
    /// The OSTree repository holding the commit.
    #[arg(long)]
    pub repo: PathBuf,
    /// The ref or commit to deploy into the image.
    #[arg(long = "ref")]
    pub r#ref: String,
    /// Board name (a file in boards/) or path to a board TOML file.
    #[arg(long)]
    pub board: String,
    /// The image file to write (a .bmap and a .json manifest are written beside it).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Image size, e.g. 2GiB [default: the board's].
    #[arg(long)]
    pub size: Option<String>,
    /// Compress the image: zst or xz (the raw image is then not kept).
    #[arg(long, value_parser = ["zst", "xz"])]
    pub compress: Option<String>,
    /// The URL devices fetch updates from (remote `origin` in the image).
    #[arg(long)]
    pub remote: Option<String>,
    /// Public key file the device trusts for signed updates (repeatable).
    #[arg(long = "keys")]
    pub keys: Vec<PathBuf>,
    /// The ostree stateroot (OS name) on the device.
    #[arg(long, default_value = "arbor")]
    pub osname: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `arbor image boot-test`.
#[derive(Debug, Args)]
pub struct BootTest {
    /// The image (raw; its .json manifest must be beside it).
    pub image: PathBuf,
    /// Board to boot it as [default: the one the image was built for].
    #[arg(long)]
    pub board: Option<String>,
    /// Give up after this many seconds [default: the board's].
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Where the serial console log goes [default: IMAGE.serial.log].
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// The commit the boot must reach [default: the one the image was built
    /// with]; after `arbor upgrade --sysroot` on the image, the new one.
    #[arg(long)]
    pub expect_commit: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `arbor image boards`.
#[derive(Debug, Args)]
pub struct Boards {
    /// Show this board's partition plan.
    pub board: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `arbor flash`.
#[derive(Debug, Args)]
pub struct Flash {
    /// The image file (.img, .img.zst or .img.xz).
    pub image: PathBuf,
    /// The block device to write to (for example /dev/mmcblk0).
    #[arg(long)]
    pub device: PathBuf,
    /// The block map [default: the image's .bmap beside it].
    #[arg(long)]
    pub bmap: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Skip reading back what was written.
    #[arg(long)]
    pub no_verify: bool,
}

impl Image {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        match (self.command, self.build) {
            (Some(ImageCmd::BootTest(b)), _) => b.run(),
            (Some(ImageCmd::Boards(b)), _) => b.run(),
            (None, Some(b)) => b.run(),
            (None, None) => bail!("arbor image needs --repo, --ref, --board and -o (or a subcommand; see --help)"),
        }
    }
}

impl Build {
    fn run(self) -> Result<()> {
        let size = self
            .size
            .as_deref()
            .map(|s| crate::board::size::parse(s).with_context(|| format!("--size {s}")))
            .transpose()?;
        let compress = match self.compress.as_deref() {
            Some("zst") => Compression::Zstd,
            Some("xz") => Compression::Xz,
            _ => Compression::None,
        };
        let r = build(&ImageOptions {
            repo: self.repo,
            rev: self.r#ref,
            board: self.board,
            output: self.output,
            size,
            compress,
            remote: self.remote,
            keys: self.keys,
            osname: self.osname,
        })?;
        if self.json {
            return super::print_json(&r);
        }
        let m = &r.manifest;
        println!(
            "{} ({} MiB, {} MiB allocated)",
            m.file.display(),
            m.size >> 20,
            r.allocated >> 20
        );
        println!(
            "board {}: commit {} version {}, kernel {}",
            m.board, m.commit, m.version, m.kernel
        );
        for p in &m.partitions {
            println!(
                "  {:<8} {:<8} at {:>6} MiB, {:>6} MiB  {}",
                p.label,
                p.role,
                p.start >> 20,
                p.size >> 20,
                p.id
            );
        }
        println!("bmap {}; built in {:.1} s", m.bmap.display(), r.secs);
        Ok(())
    }
}

impl BootTest {
    fn run(self) -> Result<()> {
        let m = read_manifest(&self.image)?;
        let board = crate::board::find(self.board.as_deref().unwrap_or(&m.board))?;
        let qemu = board.qemu.clone().with_context(|| {
            format!(
                "board {} has no [qemu] section: it cannot be booted in emulation",
                board.name
            )
        })?;
        let work = tempfile::tempdir().context("creating a temporary directory")?;
        let (uboot, dtb) = crate::image::build::boot_files(&self.image, &m, &board, work.path())?;
        let mut args = qemu.command(&self.image, uboot.as_deref(), dtb.as_deref())?;
        // The guest's writes go to a throwaway overlay, never into the image: the
        // image that passed is byte for byte the one flashed, and its .bmap holds.
        args.push("-snapshot".into());
        let log = self
            .log
            .unwrap_or_else(|| PathBuf::from(format!("{}.serial.log", self.image.display())));
        let booted = crate::image::boottest::run(&crate::image::boottest::BootTest {
            program: args[0].clone(),
            args: args[1..].to_vec(),
            marker: "arbor-booted:".into(),
            timeout: Duration::from_secs(self.timeout.unwrap_or(qemu.timeout_secs)),
            log,
        })?;
        let expected = self.expect_commit.as_deref().unwrap_or(&m.commit);
        if !booted.line.contains(&format!("commit={expected}")) {
            bail!(
                "the image booted, but not the expected commit {expected}: {}",
                booted.line
            );
        }
        if self.json {
            return super::print_json(&booted);
        }
        println!("{}", booted.line.trim());
        println!(
            "booted {} on {} in {:.1} s (serial log: {})",
            expected,
            board.name,
            booted.secs,
            booted.log.display()
        );
        Ok(())
    }
}

impl Boards {
    fn run(self) -> Result<()> {
        let boards = match &self.board {
            Some(name) => vec![crate::board::find(name)?],
            None => crate::board::list()?,
        };
        if self.json {
            let v: Vec<serde_json::Value> = boards
                .iter()
                .map(|b| {
                    let size = b.image_size(None);
                    let parts: Vec<serde_json::Value> = b
                        .layout(size)
                        .unwrap_or_default()
                        .iter()
                        .map(|p| {
                            serde_json::json!({
                                "label": p.partition.label, "role": p.partition.role.to_string(),
                                "fs": p.partition.fs.to_string(), "start": p.start, "size": p.size,
                                "bootable": p.partition.bootable,
                            })
                        })
                        .collect();
                    serde_json::json!({
                        "name": b.name, "arch": b.arch.rpm_name(), "description": b.description,
                        "bootloader": b.bootloader.to_string(), "size": size, "qemu": b.qemu.is_some(),
                        "partitions": parts,
                    })
                })
                .collect();
            return super::print_json(&v);
        }
        match self.board {
            Some(_) => {
                let b = &boards[0];
                print!("{}", b.describe_layout(b.image_size(None))?);
            }
            None => {
                for b in &boards {
                    println!("{:<20} {:<8} {}", b.name, b.arch.to_string(), b.description);
                }
            }
        }
        Ok(())
    }
}

impl Flash {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        let r = crate::image::flash::flash(&crate::image::flash::FlashOptions {
            image: self.image,
            bmap: self.bmap,
            device: self.device,
            yes: self.yes,
            verify: !self.no_verify,
            allow_file: false,
        })?;
        println!(
            "wrote {} MB in {} ranges to {} in {:.1} s ({:.1} MB/s){}",
            r.bytes_written / 1_000_000,
            r.ranges,
            r.device.display(),
            r.seconds,
            r.mb_per_s,
            if r.verified {
                format!("; verified in {:.1} s", r.verify_seconds)
            } else {
                String::new()
            }
        );
        Ok(())
    }
}
