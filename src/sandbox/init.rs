//! The sandbox's own side: `arbor __sandbox-init`, started by
//! [`super::Sandbox::start`].
//!
//! 1. unshare user, mount, pid, ipc, uts and network namespaces; say
//!    `Unshared` and wait while arbor writes the uid/gid maps (only the parent
//!    namespace may map more than one id);
//! 2. read the `Setup`, fork: the child is pid 1 of the new pid namespace and
//!    dies with its parent (`PR_SET_PDEATHSIG`);
//! 3. pid 1 mounts the tree (overlayfs for copy-on-write, or a bind mount), a
//!    private /proc, a minimal /dev, tmpfs /tmp and /run, and a private
//!    binfmt_misc with qemu-user registered `FP`; then pivots into the tree
//!    and detaches the host's mounts, so nothing of the host stays reachable;
//! 4. it makes /proc/sys, /proc/sysrq-trigger, /proc/irq and /proc/bus
//!    read-only, then moves into a nested user and mount namespace (whose id
//!    maps the init writes when asked: it is in the parent namespace): mounts
//!    made by a more privileged namespace are locked there, so no script can
//!    remount them writable, unmount them, or mount a fresh /proc (as root the
//!    sandbox's uid 0 is the host's, and the kernel lets global uid 0 write
//!    most sysctls whatever its capabilities);
//! 5. it runs one job per request line, each in its own session with a time
//!    limit, and after each kills every other process in the namespace.
//!
//! Runs single-threaded (fork and unshare(CLONE_NEWUSER) need that): `main`
//! calls [`main`] before anything else starts.

use std::ffi::CString;
use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, dup2_stderr, dup2_stdin, dup2_stdout, fork, pivot_root, setsid};

use super::binfmt::Emulation;
use super::proto::{Job, Outcome, Reply, Setup};

/// The hidden first argument that makes `arbor` the sandbox init.
pub const ARG: &str = "__sandbox-init";

/// Most output kept per job (the tail).
const OUTPUT_LIMIT: usize = 1 << 20;

/// Entry point of `arbor __sandbox-init`; returns the process exit status.
pub fn main() -> i32 {
    match setup_and_serve() {
        Ok(code) => code,
        Err(e) => {
            let _ = reply(&Reply::Failed(format!("{e:#}")));
            1
        }
    }
}

fn setup_and_serve() -> Result<i32> {
    unshare(
        CloneFlags::CLONE_NEWUSER
            | CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWNET,
    )
    .context("creating user, mount, pid, ipc, uts and network namespaces (are user namespaces enabled?)")?;
    reply(&Reply::Unshared)?;
    let mut input = std::io::stdin().lock();
    let mut line = String::new();
    input.read_line(&mut line).context("reading the sandbox setup")?;
    let setup: Setup = serde_json::from_str(&line).context("parsing the sandbox setup")?;
    // pid 1 locks its mounts in a nested user namespace whose id maps only a
    // process in this one may write: this process does it when asked, which
    // costs no fork (see `lock_mounts`). The host's /proc stays reachable
    // through `proc` after pid 1 pivots the shared mount namespace's root.
    let maps = identity_maps()?;
    let proc = std::fs::File::open("/proc").context("opening /proc")?;
    let (ask_r, ask_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating a pipe")?;
    let (done_r, done_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating a pipe")?;
    // SAFETY: this process is single-threaded (see the module doc).
    match unsafe { fork() }.context("forking the sandbox's pid 1")? {
        ForkResult::Child => {
            drop((ask_r, done_w, proc));
            let mapper = Mapper {
                ask: ask_w,
                done: done_r,
            };
            let code = match pid1(&setup, &mut input, mapper) {
                Ok(()) => 0,
                Err(e) => {
                    let _ = reply(&Reply::Failed(format!("{e:#}")));
                    1
                }
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child } => {
            drop((ask_w, done_r));
            map_nested(&proc, child, &maps, ask_r, done_w);
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, c)) => return Ok(c),
                    Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e).context("waiting for the sandbox's pid 1"),
                }
            }
        }
    }
}

fn reply(r: &Reply) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, r).context("writing a sandbox reply")?;
    out.write_all(b"\n").context("writing a sandbox reply")?;
    out.flush().context("writing a sandbox reply")
}

fn pid1(setup: &Setup, input: &mut impl BufRead, mapper: Mapper) -> Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("setting the parent-death signal")?;
    nix::unistd::sethostname("arbor").context("setting the sandbox's host name")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making the sandbox's mounts private")?;
    let root = mount_tree(setup)?;
    mount_api_filesystems(&root)?;
    if let Emulation::Private(entry) = &setup.emulation {
        let dir = root.join("proc/sys/fs/binfmt_misc");
        mount(
            Some("binfmt_misc"),
            &dir,
            Some("binfmt_misc"),
            nosuid_nodev_noexec(),
            None::<&str>,
        )
        .with_context(|| {
            format!(
                "mounting a private binfmt_misc instance at {} (needs Linux ≥ 6.7; on older kernels register \
                     qemu-user on the host with flag F, e.g. apt-get install qemu-user-static binfmt-support)",
                dir.display()
            )
        })?;
        std::fs::write(dir.join("register"), entry.register_line()).with_context(|| {
            format!(
                "registering {} for {} in the sandbox's binfmt_misc",
                entry.interpreter.display(),
                entry.name
            )
        })?;
    }
    protect_kernel_interfaces(&root)?;
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))?;
    pivot_root(".", ".").context("pivoting into the tree")?;
    umount2(".", MntFlags::MNT_DETACH).context("detaching the host's mounts")?;
    std::env::set_current_dir("/").context("entering the tree's /")?;
    lock_mounts(mapper)?;
    reply(&Reply::Ready)?;

    let mut seq = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line).context("reading a sandbox request")? == 0 {
            break;
        }
        seq += 1;
        let r = serde_json::from_str::<Job>(&line)
            .context("parsing a sandbox request")
            .and_then(|job| run_job(&job, seq, &setup.arch));
        match r {
            Ok(outcome) => reply(&Reply::Done(outcome))?,
            Err(e) => reply(&Reply::Failed(format!("{e:#}")))?,
        }
    }
    kill_all_others();
    Ok(())
}

/// The parts of /proc through which a process with the host's uid 0 could
/// change the host kernel: bwrap's list.
const READ_ONLY_PROC: &[&str] = &["proc/sys", "proc/sysrq-trigger", "proc/irq", "proc/bus"];

/// Bind-mounts each of [`READ_ONLY_PROC`] (and whatever is mounted beneath,
/// the private binfmt_misc included, after qemu is registered) read-only onto itself.
fn protect_kernel_interfaces(root: &Path) -> Result<()> {
    for rel in READ_ONLY_PROC {
        let p = root.join(rel);
        if std::fs::symlink_metadata(&p).is_err() {
            continue; // /proc/irq or /proc/bus may not exist on this kernel
        }
        mount(
            Some(&p),
            &p,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("binding /{rel} onto itself"))?;
        remount_read_only(&p).with_context(|| format!("making /{rel} read-only"))?;
    }
    let binfmt = root.join("proc/sys/fs/binfmt_misc");
    if is_mount_point(&binfmt) {
        remount_read_only(&binfmt).context("making the private binfmt_misc read-only")?;
    }
    Ok(())
}

fn remount_read_only(p: &Path) -> Result<()> {
    mount(
        None::<&str>,
        p,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | nosuid_nodev_noexec(),
        None::<&str>,
    )
    .with_context(|| format!("remounting {} read-only", p.display()))
}

/// Whether `p` is the root of a mount (its device differs from its parent's).
fn is_mount_point(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(m), Some(Ok(parent))) = (std::fs::metadata(p), p.parent().map(std::fs::metadata)) else {
        return false;
    };
    m.dev() != parent.dev()
}

/// Pid 1's ends of the pipes to its parent, which writes the nested user
/// namespace's id maps when asked.
struct Mapper {
    ask: OwnedFd,
    done: OwnedFd,
}

/// The uid and gid maps of a nested user namespace mapping this one's ids
/// to themselves (read from this process's own maps).
fn identity_maps() -> Result<(String, String)> {
    let identity = |path: &str| -> Result<String> {
        let map = std::fs::read_to_string(path).with_context(|| format!("reading the sandbox's {path}"))?;
        Ok(map
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3).then(|| format!("{} {} {}\n", f[0], f[0], f[2]))
            })
            .collect())
    };
    Ok((identity("/proc/self/uid_map")?, identity("/proc/self/gid_map")?))
}

/// Waits for pid 1 (`child`) to ask, then writes its nested user namespace's
/// maps through the host's /proc (`proc`) and answers 1 (done) or 0. Pid 1
/// exiting first closes the pipe: nothing to do.
fn map_nested(proc: &std::fs::File, child: Pid, maps: &(String, String), ask: OwnedFd, done: OwnedFd) {
    let mut byte = [0u8; 1];
    if std::fs::File::from(ask).read_exact(&mut byte).is_err() {
        return;
    }
    // Relative to the host's /proc opened earlier: this process's own /proc
    // is the sandbox's by now, where it does not appear.
    let write = |name: &str, map: &str| -> std::io::Result<()> {
        use rustix::fs::{Mode, OFlags, openat};
        let rel = format!("{}/{name}", child.as_raw());
        let fd = openat(proc, rel.as_str(), OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
        std::fs::File::from(fd).write_all(map.as_bytes())
    };
    let ok = write("uid_map", &maps.0).is_ok() && write("gid_map", &maps.1).is_ok();
    let _ = std::fs::File::from(done).write_all(&[ok as u8]);
}

/// Moves this process (pid 1; jobs inherit it) into a new user namespace
/// mapping the same ids, and a new mount namespace. The kernel locks every
/// mount copied into a less privileged mount namespace: read-only stays
/// read-only, nothing can be unmounted to reveal what is beneath, and a new
/// procfs may not be mounted while /proc is partly covered. Only a process in
/// the parent user namespace may write the new one's maps: the parent does.
fn lock_mounts(mapper: Mapper) -> Result<()> {
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
        .context("creating the nested user and mount namespaces that lock the sandbox's mounts")?;
    let mut answer = [0u8; 1];
    std::fs::File::from(mapper.ask)
        .write_all(b"x")
        .and_then(|()| std::fs::File::from(mapper.done).read_exact(&mut answer))
        .context("asking for the nested user namespace's id maps")?;
    if answer[0] != 1 {
        bail!("mapping ids into the nested user namespace failed");
    }
    Ok(())
}

fn nosuid_nodev_noexec() -> MsFlags {
    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
}

/// Mounts the tree (copy-on-write or bound onto itself) and returns where.
fn mount_tree(setup: &Setup) -> Result<PathBuf> {
    let Some(o) = &setup.overlay else {
        mount(
            Some(&setup.rootfs),
            &setup.rootfs,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting {}", setup.rootfs.display()))?;
        return Ok(setup.rootfs.clone());
    };
    for p in [&setup.rootfs, &o.upper, &o.work, &o.merged] {
        let s = p.to_string_lossy();
        if s.contains([',', ':', '\\']) {
            bail!("{s}: overlayfs cannot use a directory whose path has ',', ':' or '\\'; choose another --cachedir");
        }
    }
    // Layers are named by number relative to their links' directory: the
    // mount options must fit in a page, whatever the number of packages.
    let lower = match &o.layers {
        Some(dir) => {
            std::env::set_current_dir(dir).with_context(|| format!("entering {}", dir.display()))?;
            let n = std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .count();
            (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(":")
        }
        None => setup.rootfs.display().to_string(),
    };
    // metacopy stays off (userxattr also rules out redirect_dir): every changed file is a whole file in
    // the upper directory, so merging it back is a rename.
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={},userxattr,metacopy=off",
        o.upper.display(),
        o.work.display()
    );
    mount(
        Some("overlay"),
        &o.merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .with_context(|| format!("mounting overlayfs ({opts}) at {}", o.merged.display()))?;
    Ok(o.merged.clone())
}

/// A directory of the tree that a mount goes on: created if missing, refused
/// if the tree has something else there (a symlink must never redirect a mount).
fn mount_point(root: &Path, name: &str, mode: u32) -> Result<PathBuf> {
    let p = root.join(name);
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => Ok(p),
        Ok(_) => bail!("the tree's /{name} is not a directory; the sandbox needs to mount there"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(&p).with_context(|| format!("creating /{name} in the tree"))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("setting the mode of /{name}"))?;
            Ok(p)
        }
        Err(e) => Err(e).with_context(|| format!("looking at /{name} in the tree")),
    }
}

fn mount_api_filesystems(root: &Path) -> Result<()> {
    let proc_dir = mount_point(root, "proc", 0o555)?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        nosuid_nodev_noexec(),
        None::<&str>,
    )
    .context("mounting a private /proc")?;
    let dev = mount_point(root, "dev", 0o755)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=1m"),
    )
    .context("mounting /dev")?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        std::fs::File::create(&target).with_context(|| format!("creating /dev/{node}"))?;
        mount(
            Some(&Path::new("/dev").join(node)),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("binding /dev/{node}"))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link)).with_context(|| format!("creating /dev/{link}"))?;
    }
    std::fs::create_dir(dev.join("shm")).context("creating /dev/shm")?;
    mount(
        Some("tmpfs"),
        &dev.join("shm"),
        Some("tmpfs"),
        nosuid_nodev_noexec(),
        Some("mode=1777,size=64m,nr_inodes=16384"),
    )
    .context("mounting /dev/shm")?;
    // Bounded: an unbounded tmpfs may grow to half the host's RAM.
    for (name, mode, opts) in [
        ("tmp", 0o1777, "mode=1777,size=1g,nr_inodes=262144"),
        ("run", 0o755, "mode=0755,size=64m,nr_inodes=16384"),
    ] {
        let (p, _fd) = scratch_mount_point(root, name, mode)?;
        mount(
            Some("tmpfs"),
            &p,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts),
        )
        .with_context(|| format!("mounting /{name}"))?;
    }
    Ok(())
}

/// Where a scratch tmpfs (`/tmp`, `/run`) goes. A deployed OSTree tree has
/// `/tmp -> sysroot/tmp`: the link is followed as the device would, resolved
/// inside the tree (never the host), to an empty or missing directory, which
/// is created. Returns a path to mount on and the handle that keeps it valid.
fn scratch_mount_point(root: &Path, name: &str, mode: u32) -> Result<(PathBuf, Option<OwnedFd>)> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    let is_link = std::fs::symlink_metadata(root.join(name)).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return Ok((mount_point(root, name, mode)?, None));
    }
    let target = std::fs::read_link(root.join(name)).with_context(|| format!("reading the tree's /{name} link"))?;
    let shown = || format!("the tree's /{name} is a symlink to {}", target.display());
    let tree = std::fs::File::open(root).with_context(|| format!("opening {}", root.display()))?;
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT)
    };
    let dir = match openat2(&tree, name, how()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => {
            let parent = target
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let last = target.file_name().with_context(shown)?;
            // The link is relative to the tree's /; an absolute one is too (RESOLVE_IN_ROOT).
            let parent_fd = openat2(&tree, parent, how())
                .with_context(|| format!("{}, whose parent is not a directory in the tree", shown()))?;
            nix::sys::stat::mkdirat(&parent_fd, last, nix::sys::stat::Mode::from_bits_truncate(mode))
                .with_context(|| format!("{}: creating it", shown()))?;
            openat2(&tree, name, how()).with_context(shown)?
        }
        Err(e) => return Err(e).with_context(|| format!("{}, which is not a directory in the tree", shown())),
    };
    let path = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir)));
    let empty = std::fs::read_dir(&path)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if !empty {
        bail!(
            "{}, which is not an empty directory; the sandbox mounts a scratch /{name} there",
            shown()
        );
    }
    Ok((path, Some(dir)))
}

/// Runs one job to completion or its time limit.
fn run_job(job: &Job, seq: u64, arch: &str) -> Result<Outcome> {
    let started = Instant::now();
    let mut temp = Vec::new();
    let script_path = match (&job.script, job.lua) {
        (Some(body), false) => {
            let p = format!("/tmp/.arbor-script.{seq}");
            write_private(&p, body.as_bytes(), 0o700)?;
            temp.push(p.clone());
            Some(p)
        }
        _ => None,
    };
    let stdin: std::fs::File = match &job.stdin {
        Some(data) => {
            let p = format!("/tmp/.arbor-stdin.{seq}");
            write_private(&p, data.as_bytes(), 0o600)?;
            temp.push(p.clone());
            std::fs::File::open(&p).with_context(|| format!("opening {p}"))?
        }
        None => std::fs::File::open("/dev/null").context("opening /dev/null")?,
    };
    let mut argv: Vec<CString> = Vec::new();
    if !job.lua {
        if job.program.is_empty() {
            bail!("{}: no interpreter", job.label);
        }
        for a in job.program.iter().chain(script_path.iter()).chain(job.args.iter()) {
            argv.push(
                CString::new(a.as_str()).with_context(|| format!("{}: argument {a:?} has a NUL byte", job.label))?,
            );
        }
    }
    let env: Vec<CString> = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=dumb"]
        .iter()
        .filter_map(|s| CString::new(*s).ok())
        .collect();
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating an output pipe")?;
    // SAFETY: pid 1 is single-threaded; the child only sets up fds and execs or runs lua.
    let child = match unsafe { fork() }.context("forking a job")? {
        ForkResult::Child => {
            let _ = setsid();
            let _ = dup2_stdin(stdin.as_fd());
            let _ = dup2_stdout(&out_w);
            let _ = dup2_stderr(&out_w);
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
            if job.lua {
                let macros = crate::scriptlet::lua::Macros::for_arch(arch);
                let code = crate::scriptlet::lua::run(job.script.as_deref().unwrap_or(""), "<lua>", &job.args, &macros);
                let _ = std::io::stdout().flush();
                std::process::exit(code);
            }
            let e = nix::unistd::execve(&argv[0], &argv, &env).err();
            let _ = writeln!(
                std::io::stderr(),
                "cannot run {}: {}",
                job.program[0],
                e.map(|e| e.desc()).unwrap_or("")
            );
            std::process::exit(127);
        }
        ForkResult::Parent { child } => child,
    };
    drop(out_w);
    drop(stdin);
    let (output, timed_out) = collect(child, out_r, Duration::from_millis(job.timeout_ms.max(1)))?;
    let status = loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, c)) => break c,
            Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).with_context(|| format!("waiting for {}", job.label)),
        }
    };
    // Whatever the job left running (daemons, background loops) goes with it.
    kill_all_others();
    for p in temp {
        let _ = std::fs::remove_file(p);
    }
    Ok(Outcome {
        status,
        output: String::from_utf8_lossy(&output).into_owned(),
        timed_out,
        millis: started.elapsed().as_millis() as u64,
    })
}

fn write_private(path: &str, data: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {path} in the sandbox"))?;
    f.write_all(data).with_context(|| format!("writing {path}"))
}

/// Reads the job's output until it exits (a pidfd says when), killing its
/// session at the deadline. Output written by processes it left behind after
/// it exited is not waited for.
fn collect(child: Pid, out: OwnedFd, limit: Duration) -> Result<(Vec<u8>, bool)> {
    // A forked child's pid is never 0 (the kernel would refuse it too).
    let pid = rustix::process::Pid::from_raw(child.as_raw()).ok_or(rustix::io::Errno::INVAL);
    let pidfd = pid
        .and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()))
        .map_err(std::io::Error::from)
        .context("pidfd_open (needs Linux ≥ 5.3)")?;
    let mut pipe = std::fs::File::from(out);
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let (mut pipe_open, mut timed_out) = (true, false);
    loop {
        let now = Instant::now();
        if !timed_out && now >= deadline {
            let _ = killpg(child, Signal::SIGKILL);
            // Not reaped here: the caller still waits for `child` itself.
            let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
            timed_out = true;
        }
        let wait = if timed_out {
            PollTimeout::from(1000u16)
        } else {
            PollTimeout::try_from(deadline.saturating_duration_since(now).as_millis().min(60_000) as i32)
                .unwrap_or(PollTimeout::MAX)
        };
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if pipe_open {
            fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, wait) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("waiting for a job"),
        }
        let exited = fds[0].any().unwrap_or(false);
        let readable = pipe_open && fds.get(1).and_then(|f| f.any()).unwrap_or(false);
        drop(fds);
        if readable {
            let n = pipe.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                pipe_open = false;
            }
            keep_tail(&mut buf, &chunk[..n]);
        }
        if exited {
            // Drain what is already in the pipe without waiting for writers it left behind.
            if pipe_open {
                nix::fcntl::fcntl(&pipe, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
                    .context("draining job output")?;
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    keep_tail(&mut buf, &chunk[..n]);
                }
            }
            return Ok((buf, timed_out));
        }
    }
}

fn keep_tail(buf: &mut Vec<u8>, more: &[u8]) {
    buf.extend_from_slice(more);
    if buf.len() > OUTPUT_LIMIT {
        let cut = buf.len() - OUTPUT_LIMIT;
        buf.drain(..cut);
    }
}

/// pid 1 only: SIGKILL every other process in the namespace and reap them.
fn kill_all_others() {
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    while let Ok(_) | Err(nix::errno::Errno::EINTR) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::__WALL)) {}
}
