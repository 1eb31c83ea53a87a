//! A cgroup per sandbox, so a script can neither fork-bomb nor exhaust the
//! build host's memory (tmpfs pages it writes are charged here too).
//!
//! cgroup v2 (`/sys/fs/cgroup` with `cgroup.controllers`) gets one group with
//! `pids.max` and `memory.max`; a v1 or hybrid host gets a group in its `pids`
//! and `memory` hierarchies. Groups are made beside the root, so they need
//! root (or a delegated cgroup v2 tree); without one the sandbox runs with a
//! warning, as before.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Limits for everything a sandbox runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most processes and threads at once.
    pub pids: u64,
    /// Most memory in bytes (anonymous, page cache and tmpfs).
    pub memory: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            pids: 4096,
            memory: 4 << 30,
        }
    }
}

/// The sandbox's groups; removed on drop (they are empty by then).
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

const ROOT: &str = "/sys/fs/cgroup";

impl Cgroup {
    /// Creates groups named `name` with `limits` and moves `pid` into them.
    pub fn create(name: &str, limits: Limits, pid: u32) -> Result<Cgroup> {
        let root = Path::new(ROOT);
        let mut cg = Cgroup { dirs: Vec::new() };
        if root.join("cgroup.controllers").exists() {
            // cgroup v2: the root may hold processes and still delegate controllers.
            write(&root.join("cgroup.subtree_control"), "+pids +memory")?;
            let dir = cg.make(&root.join(name))?;
            write(&dir.join("pids.max"), &limits.pids.to_string())?;
            write(&dir.join("memory.max"), &limits.memory.to_string())?;
            write(&dir.join("memory.swap.max"), "0").ok();
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        } else if root.join("pids").is_dir() && root.join("memory").is_dir() {
            let pids = cg.make(&root.join("pids").join(name))?;
            write(&pids.join("pids.max"), &limits.pids.to_string())?;
            write(&pids.join("cgroup.procs"), &pid.to_string())?;
            let memory = cg.make(&root.join("memory").join(name))?;
            write(&memory.join("memory.limit_in_bytes"), &limits.memory.to_string())?;
            write(&memory.join("cgroup.procs"), &pid.to_string())?;
        } else {
            bail!("no cgroup v2 hierarchy or v1 pids and memory hierarchies under {ROOT}");
        }
        Ok(cg)
    }

    fn make(&mut self, dir: &Path) -> Result<PathBuf> {
        if let Some(parent) = dir.parent() {
            prune_stale(parent);
        }
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            // Left by a sandbox that was killed: reuse it (it holds no process now).
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating the cgroup {}", dir.display())),
        }
        self.dirs.push(dir.to_path_buf());
        Ok(dir.to_path_buf())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            // rmdir succeeds once the last process in it is reaped; it may lag a moment.
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// Removes the groups of sandboxes whose arbor was killed before it could:
/// `arbor-sandbox-PID` where no process PID exists (a group that still holds
/// a process is not empty, and the kernel refuses to remove it).
fn prune_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("arbor-sandbox-")) else {
            continue;
        };
        if pid.bytes().all(|b| b.is_ascii_digit()) && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}
