//! Running a tree's own programs — package scriptlets, triggers, postprocess
//! scripts — confined to that tree.
//!
//! A sandbox is one `arbor __sandbox-init` process (see [`init`]) in new user,
//! mount, pid, ipc, uts and network namespaces, pivoted into the tree: a
//! private /proc, a minimal /dev, tmpfs /tmp and /run, no network, nothing of
//! the host. Foreign-arch programs run under qemu-user registered in a
//! *private* binfmt_misc instance (Linux ≥ 6.7), so the host's
//! /proc/sys/fs/binfmt_misc is never changed. As root, uids and gids map 1:1
//! (chown in scripts works); as another user, only uid/gid 0 maps (to them).
//!
//! With copy-on-write, the tree is the lower layer of an overlayfs: scripts
//! write to an upper directory, so a write into a file hardlinked to the
//! package cache never reaches the cache; [`Sandbox::finish`] renames the
//! changed entries into the tree ([`merge`]).
//!
//! With `layers` (compose), the lower layers are read-only per-package
//! checkouts stacked by overlayfs — assembling a tree costs one mount, not a
//! link per file — and the tree directory is the upper layer itself: every
//! change stays there for the commit to apply (nothing is merged). The host
//! side reaches the union through [`Sandbox::root`].
//!
//! The sandbox stays up across jobs: one namespace setup per compose, then a
//! fork/exec per scriptlet.

pub mod binfmt;
pub mod cgroup;
pub mod init;
pub mod merge;
pub mod proto;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, Result, bail};

pub use binfmt::Emulation;
pub use cgroup::Limits;
pub use merge::Changes;
pub use proto::{Job, Outcome};
use proto::{Overlay, Reply, Setup};

use crate::arch::Arch;

/// How to start a sandbox.
#[derive(Debug, Clone)]
pub struct Config {
    /// The tree.
    pub rootfs: PathBuf,
    /// The tree's arch per the treefile; the ELF machine of its /bin/sh wins when it has one.
    pub arch: Arch,
    /// Scripts write to an overlay that [`Sandbox::finish`] merges (for hardlinked checkouts).
    pub copy_on_write: bool,
    /// Read-only lower layers, top first. When set, `rootfs` is the (empty or
    /// partly filled) upper directory that receives every change and keeps it;
    /// `copy_on_write` is implied and the tree's arch is `arch`.
    pub layers: Vec<PathBuf>,
    /// The arbor binary to run as the sandbox init (default: this executable,
    /// or `$ARBOR_EXE`).
    pub exe: Option<PathBuf>,
    /// Process and memory limits for everything the sandbox runs.
    pub limits: Limits,
}

/// A running sandbox.
pub struct Sandbox {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    overlay: Option<Overlay>,
    rootfs: PathBuf,
    /// `rootfs` is the upper layer of `layers`: kept, never merged.
    layered: bool,
    /// How foreign programs run in it.
    pub emulation: Emulation,
    /// The tree's arch as its /bin/sh says (or the configured one).
    pub arch: Arch,
    /// Running without root: only uid and gid 0 exist inside.
    pub rootless: bool,
    /// The sandbox's cgroup (none where cgroups cannot be made); held so
    /// that it is removed when the sandbox is.
    _cgroup: Option<cgroup::Cgroup>,
}

impl Sandbox {
    /// Creates the namespaces and mounts and pivots into `cfg.rootfs`.
    pub fn start(cfg: &Config) -> Result<Sandbox> {
        let rootfs =
            std::fs::canonicalize(&cfg.rootfs).with_context(|| format!("opening the tree {}", cfg.rootfs.display()))?;
        let cfg = &Config { rootfs, ..cfg.clone() };
        let layered = !cfg.layers.is_empty();
        // A layered tree's /bin/sh may span layers (a /bin link in one, the shell in another).
        let arch = if layered {
            cfg.arch
        } else {
            binfmt::shell_arch(&cfg.rootfs)?.unwrap_or(cfg.arch)
        };
        let mut emulation = binfmt::plan(arch)?;
        let release = crate::host::kernel_release();
        // Linux 6.7 mounts a binfmt_misc instance per user namespace.
        if matches!(emulation, Emulation::Private(_)) && !crate::host::kernel_at_least(&release, (6, 7)) {
            emulation = match binfmt::host_registration(arch) {
                Some(path) => Emulation::Host(path),
                None => bail!(
                    "running {arch} scriptlets on this {} host needs Linux ≥ 6.7 (a private binfmt_misc per \
                     user namespace; this kernel is {}) or qemu-user registered on the host with flag F \
                     (Debian: apt-get install qemu-user-static binfmt-support)",
                    std::env::consts::ARCH,
                    release
                ),
            };
        }
        let overlay = if layered {
            Some(layered_dirs(&cfg.rootfs, &cfg.layers)?)
        } else {
            cfg.copy_on_write.then(|| overlay_dirs(&cfg.rootfs)).transpose()?
        };
        let exe = match &cfg.exe {
            Some(e) => e.clone(),
            None => crate::reexec::arbor_exe()
                .context("starting a sandbox from outside the arbor binary needs $ARBOR_EXE (the arbor executable)")?,
        };
        let mut child = Command::new(&exe)
            .arg(init::ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the sandbox ({} {})", exe.display(), init::ARG))?;
        let stdin = child.stdin.take().context("sandbox stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("sandbox stdout")?);
        let rootless = !nix::unistd::geteuid().is_root();
        // Into the cgroup before the init forks anything (it forks only after
        // the setup below), so every process of the sandbox is counted. Done
        // while the child is still loading its libraries: a write to
        // `cgroup.procs` waits for an RCU grace period (~13 ms on a v1
        // hierarchy here), which this way overlaps the child's start-up.
        let pid = child.id();
        let cgroup = match cgroup::Cgroup::create(&format!("arbor-sandbox-{pid}"), cfg.limits, pid) {
            Ok(cg) => Some(cg),
            Err(e) if rootless => {
                tracing::debug!("scripts run without cgroup limits: {e:#}");
                None
            }
            Err(e) => {
                tracing::warn!("scripts run without process and memory limits: {e:#}");
                None
            }
        };
        let mut sb = Sandbox {
            child,
            stdin: Some(stdin),
            stdout,
            overlay: overlay.clone(),
            rootfs: cfg.rootfs.clone(),
            layered,
            emulation: emulation.clone(),
            arch,
            rootless,
            _cgroup: cgroup,
        };
        match sb.read_reply()? {
            Reply::Unshared => {}
            other => bail!("the sandbox did not start: {other:?}"),
        }
        sb.write_id_maps()?;
        let setup = Setup {
            rootfs: cfg.rootfs.clone(),
            overlay,
            emulation,
            arch: arch.rpm_name().to_string(),
        };
        sb.send(&setup)?;
        match sb.read_reply()? {
            Reply::Ready => Ok(sb),
            Reply::Failed(e) => bail!("setting up the sandbox in {}: {e}", cfg.rootfs.display()),
            other => bail!("the sandbox did not start: {other:?}"),
        }
    }

    /// Runs one job and reports how it ended (a non-zero status is not an error here).
    /// A job that leaves the tree's filesystem (nearly) full is an error naming it:
    /// whatever arbor writes next would fail with a bare ENOSPC.
    pub fn run(&mut self, job: &Job) -> Result<Outcome> {
        let before = self.free_bytes();
        self.send(job)?;
        let outcome = match self.read_reply()? {
            Reply::Done(o) => o,
            Reply::Failed(e) => bail!("{}: {e}", job.label),
            other => bail!("{}: unexpected reply from the sandbox: {other:?}", job.label),
        };
        if let (Some(before), Some(after)) = (before, self.free_bytes()) {
            if after < MIN_FREE_BYTES && after < before {
                bail!(
                    "{} filled the filesystem of {}: {} MiB were free before it ran, {} KiB after{}",
                    job.label,
                    self.writable_dir().display(),
                    before >> 20,
                    after >> 10,
                    if outcome.output.trim().is_empty() {
                        String::new()
                    } else {
                        format!("; its output ends:\n{}", tail(&outcome.output, 2000))
                    }
                );
            }
        }
        Ok(outcome)
    }

    /// Where jobs' writes land on the host: the overlay's upper directory, or the tree.
    fn writable_dir(&self) -> &Path {
        self.overlay.as_ref().map_or(&self.rootfs, |o| &o.upper)
    }

    fn free_bytes(&self) -> Option<u64> {
        let s = nix::sys::statvfs::statvfs(self.writable_dir()).ok()?;
        Some(s.blocks_available() as u64 * s.fragment_size() as u64)
    }

    /// The tree as the sandbox sees it (the overlay's union), from the host:
    /// `/proc/PID/root` of the sandbox. Valid until [`Sandbox::finish`]. Walk
    /// it only with directory-relative calls: an absolute symlink in the tree
    /// would resolve against the host's root from here.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.child.id()))
    }

    /// Stops the sandbox (killing anything left running) and, with
    /// copy-on-write, merges what the jobs changed into the tree. A layered
    /// sandbox's changes stay in its upper directory (no merge).
    pub fn finish(mut self) -> Result<Changes> {
        self.stdin.take();
        let status = self.child.wait().context("waiting for the sandbox to stop")?;
        if !status.success() {
            bail!("the sandbox exited with {status}");
        }
        let Some(o) = self.overlay.take() else {
            return Ok(Changes::default());
        };
        if self.layered {
            remove_layered_dirs(&o);
            return Ok(Changes::default());
        }
        let changes = merge::merge(&o.upper, &self.rootfs)?;
        remove_overlay_dirs(&o);
        Ok(changes)
    }

    fn send<T: serde::Serialize>(&mut self, v: &T) -> Result<()> {
        let stdin = self.stdin.as_mut().context("the sandbox is stopped")?;
        let mut line = serde_json::to_vec(v).context("encoding a sandbox request")?;
        line.push(b'\n');
        stdin
            .write_all(&line)
            .and_then(|()| stdin.flush())
            .context("sending a request to the sandbox (did it exit?)")
    }

    fn read_reply(&mut self) -> Result<Reply> {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).context("reading from the sandbox")?;
        if n == 0 {
            let status = self.child.wait().ok();
            bail!(
                "the sandbox exited unexpectedly ({})",
                status.map(|s| s.to_string()).unwrap_or_else(|| "status unknown".into())
            );
        }
        serde_json::from_str(&line).with_context(|| format!("parsing the sandbox's reply {line:?}"))
    }

    /// As root every id maps to itself; otherwise uid/gid 0 map to the caller
    /// (the kernel lets an unprivileged process map only its own ids).
    fn write_id_maps(&mut self) -> Result<()> {
        let pid = self.child.id();
        let proc_file = |name: &str| PathBuf::from(format!("/proc/{pid}/{name}"));
        let (uid_map, gid_map) = if self.rootless {
            let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
            write_proc(&proc_file("setgroups"), "deny")?;
            tracing::info!(
                "running scriptlets without root: uid and gid 0 in the tree map to {uid}:{gid}; \
                 no other ids exist, so chown to other users in scripts fails"
            );
            (format!("0 {uid} 1\n"), format!("0 {gid} 1\n"))
        } else {
            ("0 0 4294967295\n".to_string(), "0 0 4294967295\n".to_string())
        };
        write_proc(&proc_file("uid_map"), &uid_map)?;
        write_proc(&proc_file("gid_map"), &gid_map)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            self.stdin.take();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(o) = self.overlay.take() {
            if self.layered {
                remove_layered_dirs(&o);
            } else {
                remove_overlay_dirs(&o);
            }
        }
    }
}

/// Less free space than this after a job means the job filled the disk.
const MIN_FREE_BYTES: u64 = 16 << 20;

/// The last `max` bytes of `text` (on a character boundary).
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn write_proc(path: &Path, text: &str) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {:?} to {}", text.trim(), path.display()))
}

/// `upper`, `work` and `merged` beside the tree (overlayfs needs upper and
/// work on one filesystem; renames during the merge need the tree there too).
fn overlay_dirs(rootfs: &Path) -> Result<Overlay> {
    let o = Overlay {
        upper: beside(rootfs, "upper")?,
        work: beside(rootfs, "work")?,
        merged: beside(rootfs, "merged")?,
        layers: None,
    };
    remove_overlay_dirs(&o);
    for d in [&o.upper, &o.work, &o.merged] {
        std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    Ok(o)
}

/// `DIR/NAME.SUFFIX` for the tree path `DIR/NAME`.
fn beside(tree: &Path, suffix: &str) -> Result<PathBuf> {
    let name = tree.file_name().context("the tree path has no name")?.to_string_lossy();
    let parent = tree.parent().context("the tree path has no parent")?;
    Ok(parent.join(format!("{name}.{suffix}")))
}

fn remove_overlay_dirs(o: &Overlay) {
    remove_dirs(o, true);
}

/// Removes what the sandbox made for `o`: `work`, `merged`, the layer links,
/// and `upper` too when `with_upper` (a layered tree's upper is the caller's).
fn remove_dirs(o: &Overlay, with_upper: bool) {
    use std::os::unix::fs::PermissionsExt;
    // overlayfs leaves `work/work` with mode 0.
    let _ = std::fs::set_permissions(o.work.join("work"), std::fs::Permissions::from_mode(0o700));
    let upper = with_upper.then_some(&o.upper);
    for d in [upper, Some(&o.work), Some(&o.merged), o.layers.as_ref()]
        .into_iter()
        .flatten()
    {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Overlay directories for a layered tree: `upper` is the tree directory
/// itself; `work`, `merged` and `layers` (links `0`, `1`, … to the lower
/// layers, top first, so the mount options stay short for hundreds of
/// packages) beside it.
fn layered_dirs(upper: &Path, layers: &[PathBuf]) -> Result<Overlay> {
    /// overlayfs stacks at most 500 layers.
    const MAX_LAYERS: usize = 500;
    if layers.len() > MAX_LAYERS {
        bail!(
            "{} lower layers; overlayfs stacks at most {MAX_LAYERS} (group packages into fewer layers)",
            layers.len()
        );
    }
    let o = Overlay {
        upper: upper.to_path_buf(),
        work: beside(upper, "work")?,
        merged: beside(upper, "merged")?,
        layers: Some(beside(upper, "layers")?),
    };
    remove_layered_dirs(&o);
    let links = o.layers.as_deref().context("layers")?;
    for d in [&o.work, &o.merged, &links.to_path_buf()] {
        std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    for (i, layer) in layers.iter().enumerate() {
        let target = std::fs::canonicalize(layer).with_context(|| format!("opening the layer {}", layer.display()))?;
        std::os::unix::fs::symlink(&target, links.join(i.to_string()))
            .with_context(|| format!("linking {} in {}", target.display(), links.display()))?;
    }
    Ok(o)
}

fn remove_layered_dirs(o: &Overlay) {
    remove_dirs(o, false);
}
