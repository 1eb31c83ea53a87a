//! Device verbs: `arbor status|upgrade|deploy|rollback|rebase|cleanup|remote|install`.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use super::print_json;
use crate::device::{Device, Target, update};
use crate::ostree::pull::Report;

/// Where the device is: shared by every device verb.
#[derive(Debug, Args, Clone)]
pub struct Where {
    /// The sysroot: `/` on the running system, or the mounted root filesystem
    /// of a card or image (its boot partition mounted at boot/).
    #[arg(long, default_value = "/")]
    pub sysroot: PathBuf,
    /// The board, for images made before arbor recorded it in ostree/arbor/board.toml.
    #[arg(long)]
    pub board: Option<String>,
    /// Where the board's firmware (FAT) partition is mounted [default: SYSROOT/boot/firmware].
    #[arg(long, conflicts_with = "firmware_partition")]
    pub firmware_dir: Option<PathBuf>,
    /// The board's firmware (FAT) partition itself, unmounted: a block device
    /// (e.g. /dev/mmcblk0p1, or a loop device) that arbor edits in place,
    /// power-cut safe. For hosts that cannot mount vfat, and offline servicing.
    #[arg(long, value_name = "DEVICE")]
    pub firmware_partition: Option<PathBuf>,
}

impl Where {
    pub(super) fn open(&self) -> Result<Device> {
        Device::open(&Target {
            sysroot: self.sysroot.clone(),
            board: self.board.clone(),
            firmware_dir: self.firmware_dir.clone(),
            firmware_partition: self.firmware_partition.clone(),
        })
    }
}

/// Network settings of the verbs that pull.
#[derive(Debug, Args, Clone)]
pub struct Net {
    /// Cancel a transfer when no data arrives for this many seconds.
    #[arg(long, default_value_t = 60)]
    pub stall_timeout: u64,
    /// Retries of each failed request (libostree's n-network-retries).
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Print progress and the result as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
}

impl Net {
    fn options(&self, allow_downgrade: bool) -> update::Options {
        update::Options {
            allow_downgrade,
            stall: Duration::from_secs(self.stall_timeout.max(1)),
            retries: self.retries,
            force: false,
        }
    }
}

/// Arguments of `arbor status`.
#[derive(Debug, Args)]
pub struct Status {
    #[command(flatten)]
    pub at: Where,
    /// Print the status as JSON (the shape is documented in the README).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `arbor upgrade`.
#[derive(Debug, Args)]
pub struct Upgrade {
    #[command(flatten)]
    pub at: Where,
    #[command(flatten)]
    pub net: Net,
    /// Only check: print the new version, commit and download size; exit 0
    /// when an update is available, 77 when none.
    #[arg(long)]
    pub check: bool,
    /// Accept a commit older than the running one.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Apply an offline bundle file instead of pulling from the remote.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Deploy the newest commit even if it failed its boot trial on this
    /// device before (`arbor status` shows it; by default it is skipped until
    /// a newer one is published).
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `arbor health`.
#[derive(Debug, Args)]
pub struct Health {
    #[command(flatten)]
    pub at: Where,
    /// Time limit of each check, in seconds (a check still running is killed and fails).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `arbor rollback`.
#[derive(Debug, Args)]
pub struct Rollback {
    #[command(flatten)]
    pub at: Where,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `arbor deploy`.
#[derive(Debug, Args)]
pub struct Deploy {
    /// The commit checksum, or a version of the origin's ref.
    pub revision: String,
    #[command(flatten)]
    pub at: Where,
    #[command(flatten)]
    pub net: Net,
}

/// Arguments of `arbor rebase`.
#[derive(Debug, Args)]
pub struct Rebase {
    /// The ref to follow from now on, `REF` or `REMOTE:REF`.
    pub refspec: String,
    #[command(flatten)]
    pub at: Where,
    #[command(flatten)]
    pub net: Net,
}

/// Arguments of `arbor cleanup`.
#[derive(Debug, Args)]
pub struct Cleanup {
    #[command(flatten)]
    pub at: Where,
}

/// Arguments of `arbor pin`.
#[derive(Debug, Args)]
pub struct Pin {
    /// The deployment's position as `arbor status` lists them (0 boots next).
    pub index: usize,
    /// Unpin it instead: the next upgrade or cleanup may remove it.
    #[arg(long)]
    pub unpin: bool,
    #[command(flatten)]
    pub at: Where,
    /// Print the deployment as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `arbor remote show|set-url`.
#[derive(Debug, Subcommand)]
pub enum Remote {
    /// Show the device's update remotes and their URLs.
    Show {
        #[command(flatten)]
        at: Where,
        /// The remote [default: the default deployment's].
        name: Option<String>,
    },
    /// Point a remote at another URL.
    SetUrl {
        /// The remote's name (`origin` in arbor's images).
        name: String,
        /// The new URL (http, https or file).
        url: String,
        #[command(flatten)]
        at: Where,
    },
}

/// The exit status of `arbor upgrade --check` when there is no update (rpm-ostree's).
pub const EXIT_NO_UPDATE: i32 = 77;

impl Status {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        let dev = self.at.open()?;
        let s = crate::device::status::status(&dev)?;
        if self.json {
            print_json(&s)
        } else {
            print!("{}", crate::device::status::render_text(&s));
            Ok(())
        }
    }
}

impl Upgrade {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        let dev = self.at.open()?;
        let opts = update::Options {
            force: self.force,
            ..self.net.options(self.allow_downgrade)
        };
        if let Some(file) = &self.bundle {
            if self.check {
                bail!("--check reads the server; `arbor bundle verify` checks a bundle file");
            }
            let o = update::upgrade_bundle(&dev, file, &opts)?;
            return show(&o, self.net.json);
        }
        if self.check {
            let o = update::check(&dev, &opts)?;
            show(&o, self.net.json)?;
            if o.result == "no-update" {
                std::process::exit(EXIT_NO_UPDATE);
            }
            return Ok(());
        }
        let o = with_progress(self.net.json, |r| update::upgrade(&dev, &opts, r))?;
        show(&o, self.net.json)
    }
}

impl Health {
    /// Runs the verb: exit 0 when the system may keep running (healthy,
    /// marked good, rolled back), [`crate::device::health::EXIT_REBOOT`] when a
    /// required check failed on a trial and the board should reboot, 1 on errors.
    pub fn run(self) -> Result<()> {
        let dev = self.at.open()?;
        let r = crate::device::health::run(
            &dev,
            &crate::device::health::Options {
                timeout: Duration::from_secs(self.timeout.max(1)),
                root: PathBuf::from("/"),
            },
        )?;
        if self.json {
            print_json(&r)?;
        } else {
            let failed = r.checks.iter().filter(|c| !c.passed && c.kind != "wanted").count();
            println!(
                "{}: running {} ({} checks, {failed} required failed)",
                r.result,
                r.booted,
                r.checks.len()
            );
            if let Some(f) = &r.failed {
                println!(
                    "{} (version {}) failed its boot trial after {} boots; {} runs again",
                    f.commit,
                    f.version.as_deref().unwrap_or("?"),
                    f.boots,
                    f.running
                );
            }
        }
        if r.result == "failed" {
            std::process::exit(crate::device::health::EXIT_REBOOT);
        }
        Ok(())
    }
}

impl Rollback {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        let dev = self.at.open()?;
        let o = update::rollback(&dev)?;
        show(&o, self.json)
    }
}

impl Deploy {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        let dev = self.at.open()?;
        let opts = self.net.options(true);
        let o = with_progress(self.net.json, |r| update::deploy(&dev, &self.revision, &opts, r))?;
        show(&o, self.net.json)
    }
}

impl Rebase {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        let dev = self.at.open()?;
        let opts = self.net.options(true);
        let o = with_progress(self.net.json, |r| update::rebase(&dev, &self.refspec, &opts, r))?;
        show(&o, self.net.json)
    }
}

impl Cleanup {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        let dev = self.at.open()?;
        update::cleanup(&dev)?;
        println!("cleaned up {}", dev.sysroot.path().display());
        Ok(())
    }
}

impl Pin {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        let dev = self.at.open()?;
        let d = update::pin(&dev, self.index, !self.unpin)?;
        if self.json {
            print_json(&serde_json::json!({"index": self.index, "commit": d.commit, "pinned": d.pinned}))
        } else {
            let what = if d.pinned { "pinned" } else { "unpinned" };
            println!("{what} deployment {} ({})", self.index, d.commit);
            Ok(())
        }
    }
}

impl Remote {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        match self {
            Remote::Show { at, name } => {
                let dev = at.open()?;
                let name = match name {
                    Some(n) => n,
                    None => {
                        let d = dev.default_deployment()?;
                        match d.origin.as_deref().map(crate::device::split_refspec) {
                            Some((Some(r), _)) => r.to_string(),
                            _ => bail!("the default deployment's origin names no remote; give one"),
                        }
                    }
                };
                println!("{name} {}", dev.sysroot.remote_url(&name)?);
                Ok(())
            }
            Remote::SetUrl { name, url, at } => {
                let dev = at.open()?;
                let _lock = dev.lock("remote set-url")?;
                dev.sysroot.remote_url(&name)?;
                dev.sysroot.set_remote_url(&name, &url)?;
                println!("{name} {url}");
                Ok(())
            }
        }
    }
}

/// Runs `work` with a byte bar on a terminal, or JSON progress lines with `--json`.
fn with_progress<T>(json: bool, work: impl FnOnce(&(dyn Fn(&Report) + Sync)) -> Result<T>) -> Result<T> {
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b
    });
    let started = std::time::Instant::now();
    let report = |r: &Report| {
        let secs = started.elapsed().as_secs_f64().max(0.001);
        if json {
            let line = serde_json::json!({
                "event": "progress",
                "bytes": r.bytes,
                "objects": r.fetched,
                "requested": r.requested,
                "delta_parts": r.delta_parts.0,
                "delta_parts_total": r.delta_parts.1,
                "bytes_per_second": (r.bytes as f64 / secs) as u64,
            });
            println!("{line}");
        } else if let Some(b) = &bar {
            b.set_message(format!(
                "{} KiB, {}/{} objects, {} delta parts of {}, {:.0} KiB/s",
                r.bytes >> 10,
                r.fetched,
                r.requested,
                r.delta_parts.0,
                r.delta_parts.1,
                r.bytes as f64 / 1024.0 / secs
            ));
            b.tick();
        }
    };
    let out = work(&report);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out
}

fn show(o: &update::Outcome, json: bool) -> Result<()> {
    if json {
        let mut v = serde_json::to_value(o)?;
        v["event"] = "result".into();
        println!("{v}");
        return Ok(());
    }
    let version = o.version.as_deref().unwrap_or("(none)");
    match o.result {
        "no-update" => println!("no update: {} (version {version}) is the newest", o.commit),
        "available" => println!(
            "update available: version {version}, commit {}, download {}",
            o.commit,
            o.download_bytes
                .map(|b| format!("{b} bytes (static delta)"))
                .unwrap_or_else(|| "size unknown (no static delta from the current commit)".into())
        ),
        "deployed" => println!(
            "deployed {} (version {version}) from {}; it boots next, the previous deployment stays as the fallback",
            o.commit,
            o.origin.as_deref().unwrap_or("?")
        ),
        "rolled-back" => println!("the next boot picks {} (version {version})", o.commit),
        other => println!("{other}: {}", o.commit),
    }
    Ok(())
}
