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
//! The sandbox stays up across jobs: one namespace setup per compose, then a
//! fork/exec per scriptlet.

pub mod binfmt;
pub mod init;
pub mod merge;
pub mod proto;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, Result, bail};

pub use binfmt::Emulation;
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
    /// The arbor binary to run as the sandbox init (default: this executable,
    /// or `$ARBOR_EXE`).
    pub exe: Option<PathBuf>,
}

/// A running sandbox.
pub struct Sandbox {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    overlay: Option<Overlay>,
    rootfs: PathBuf,
    /// How foreign programs run in it.
    pub emulation: Emulation,
    /// The tree's arch as its /bin/sh says (or the configured one).
    pub arch: Arch,
    /// Running without root: only uid and gid 0 exist inside.
    pub rootless: bool,
}

impl Sandbox {
    /// Creates the namespaces and mounts and pivots into `cfg.rootfs`.
    pub fn start(cfg: &Config) -> Result<Sandbox> {
        let rootfs =
            std::fs::canonicalize(&cfg.rootfs).with_context(|| format!("opening the tree {}", cfg.rootfs.display()))?;
        let cfg = &Config { rootfs, ..cfg.clone() };
        let arch = binfmt::shell_arch(&cfg.rootfs)?.unwrap_or(cfg.arch);
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
        let overlay = cfg.copy_on_write.then(|| overlay_dirs(&cfg.rootfs)).transpose()?;
        let exe = match (&cfg.exe, std::env::var_os("ARBOR_EXE")) {
            (Some(e), _) => e.clone(),
            (None, Some(e)) => PathBuf::from(e),
            (None, None) => std::env::current_exe().context("finding the arbor executable")?,
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
        let mut sb = Sandbox {
            child,
            stdin: Some(stdin),
            stdout,
            overlay: overlay.clone(),
            rootfs: cfg.rootfs.clone(),
            emulation: emulation.clone(),
            arch,
            rootless,
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
    pub fn run(&mut self, job: &Job) -> Result<Outcome> {
        self.send(job)?;
        match self.read_reply()? {
            Reply::Done(o) => Ok(o),
            Reply::Failed(e) => bail!("{}: {e}", job.label),
            other => bail!("{}: unexpected reply from the sandbox: {other:?}", job.label),
        }
    }

    /// Stops the sandbox (killing anything left running) and, with
    /// copy-on-write, merges what the jobs changed into the tree.
    pub fn finish(mut self) -> Result<Changes> {
        self.stdin.take();
        let status = self.child.wait().context("waiting for the sandbox to stop")?;
        if !status.success() {
            bail!("the sandbox exited with {status}");
        }
        let Some(o) = self.overlay.take() else {
            return Ok(Changes::default());
        };
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
            remove_overlay_dirs(&o);
        }
    }
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
    let name = rootfs
        .file_name()
        .context("the tree path has no name")?
        .to_string_lossy();
    let parent = rootfs.parent().context("the tree path has no parent")?;
    let o = Overlay {
        upper: parent.join(format!("{name}.upper")),
        work: parent.join(format!("{name}.work")),
        merged: parent.join(format!("{name}.merged")),
    };
    remove_overlay_dirs(&o);
    for d in [&o.upper, &o.work, &o.merged] {
        std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    Ok(o)
}

fn remove_overlay_dirs(o: &Overlay) {
    use std::os::unix::fs::PermissionsExt;
    // overlayfs leaves `work/work` with mode 0.
    let _ = std::fs::set_permissions(o.work.join("work"), std::fs::Permissions::from_mode(0o700));
    for d in [&o.upper, &o.work, &o.merged] {
        let _ = std::fs::remove_dir_all(d);
    }
}
