//! `arbor health`: after every boot, what booted against what was meant to
//! boot, then greenboot-compatible health checks, then the verdict.
//!
//! Checks live where greenboot keeps them, so existing checks work:
//! `/usr/lib/greenboot/check/{required.d,wanted.d}` and
//! `/etc/greenboot/check/{required.d,wanted.d}`, then `green.d` (all required
//! checks passed) or `red.d` (one failed) beside them. Each executable file
//! runs in name order (a non-executable `*.sh` through `/bin/sh`), with a
//! time limit; its output goes to arbor's stderr.
//!
//! Verdicts (`result` in `--json`):
//! - `marked-good`: the default deployment was on trial, booted, and every
//!   required check passed: the boot counter is cleared
//!   ([`super::bootcount::mark_good`]).
//! - `failed`: it was on trial and a required check failed: exit status
//!   [`EXIT_REBOOT`]; the caller reboots (the boot hook, or systemd's
//!   `OnFailure=`) and U-Boot's counter does the rest.
//! - `rolled-back`: U-Boot booted the previous deployment because the trial
//!   used up its boots; recorded, and the running one is the default again.
//! - `healthy` / `unhealthy`: nothing was on trial; the checks are reported,
//!   nothing reboots (there is nothing to go back to).
//! - `finalize-failed`: libostree's `finalize-failure.stamp` is in /boot.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Device;
use super::bootcount::{self, Failed};

/// `arbor health`'s exit status when a required check failed on a trial: reboot.
pub const EXIT_REBOOT: i32 = 3;

/// Where greenboot's directories are, lowest precedence first.
const ROOTS: &[&str] = &["/usr/lib/greenboot", "/etc/greenboot"];

/// How `arbor health` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time limit of one check.
    pub timeout: Duration,
    /// Where the check directories are looked for (`/` on the board; tests give a tree).
    pub root: PathBuf,
}

/// One check that ran.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// `required`, `wanted`, `green` or `red`.
    pub kind: &'static str,
    /// The file.
    pub path: String,
    /// It exited 0 in time.
    pub passed: bool,
    /// Its exit status, when it exited.
    pub status: Option<i32>,
    /// It was killed at the time limit.
    pub timed_out: bool,
    /// How long it ran.
    pub seconds: f64,
}

/// What `arbor health` found and did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// See the module documentation.
    pub result: &'static str,
    /// The commit running.
    pub booted: String,
    /// The commit the bootloader was meant to boot (the default before any rollback).
    pub intended: String,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
    /// When U-Boot fell back: what failed.
    pub failed: Option<Failed>,
    /// libostree's finalize-failure.stamp, when present.
    pub finalize_failure: Option<String>,
    /// Bootloader files rewritten.
    pub bootloader_files: Vec<String>,
}

/// Runs the boot check and the health checks on the booted system.
pub fn run(dev: &Device, opts: &Options) -> Result<Report> {
    let _lock = dev.lock("health")?;
    let all = dev.sysroot.deployments();
    let Some(booted) = all.iter().find(|d| d.booted).cloned() else {
        bail!(
            "arbor health checks the running system: {} has no booted deployment",
            dev.sysroot.path().display()
        );
    };
    let default = dev.default_deployment()?;
    let state = bootcount::read(dev)?;
    let entries = crate::bootloader::read_entries(&dev.sysroot.path().join("boot"))?;
    let on_trial = bootcount::trial_in(state.as_ref(), &entries).is_some();
    let stamp = dev.sysroot.path().join("boot/ostree/finalize-failure.stamp");
    let finalize_failure = stamp
        .exists()
        .then(|| crate::input::read_text(&stamp, "finalize-failure.stamp", 64 << 10).unwrap_or_default());
    let mut report = Report {
        result: "healthy",
        booted: booted.commit.clone(),
        intended: default.commit.clone(),
        checks: Vec::new(),
        failed: None,
        finalize_failure,
        bootloader_files: Vec::new(),
    };
    tracing::debug!(?state, on_trial, booted = booted.index, "boot state");

    let left = state.as_ref().map(|s| s.left).unwrap_or(0);
    if on_trial && booted.index != 0 && left > 0 {
        // Tries left, yet the previous deployment runs: the trial was armed
        // but its boot.scr not yet written when the power went (or its kernel
        // did not load, and a try went). Finish it: the next boot tries it.
        report.bootloader_files = super::bootfiles::render(dev)?.written;
        let (checks, ok) = run_checks(opts)?;
        report.checks = checks;
        report.result = if ok { "healthy" } else { "unhealthy" };
        return Ok(report);
    }
    if on_trial && booted.index != 0 {
        // U-Boot spent the trial's boots and booted the previous deployment.
        let failed = bootcount::rolled_back(dev, &default, &booted)?;
        eprintln!(
            "arbor health: {} (version {}) failed {} boots on trial; running {} again",
            failed.commit,
            failed.version.as_deref().unwrap_or("?"),
            failed.boots,
            failed.running
        );
        report.failed = Some(failed);
        report.result = "rolled-back";
        report.checks = run_checks(opts)?.0;
        return Ok(report);
    }
    let cut_short = if !on_trial && booted.index != 0 {
        bootcount::last_failed(dev)?.filter(|f| f.commit == default.commit && f.running == booted.commit)
    } else {
        None
    };
    if let Some(f) = cut_short {
        // A rollback cut short after its record: finish it.
        bootcount::finish_rollback(dev, &booted)?;
        report.failed = Some(f);
        report.result = "rolled-back";
        report.checks = run_checks(opts)?.0;
        return Ok(report);
    }
    if report.finalize_failure.is_some() {
        report.result = "finalize-failed";
    }
    let (checks, ok) = run_checks(opts)?;
    report.checks = checks;
    if on_trial {
        if ok {
            let files = bootcount::mark_good(dev)?;
            report.bootloader_files = files.written;
            report.result = "marked-good";
        } else {
            report.result = "failed";
        }
    } else if !ok && report.finalize_failure.is_none() {
        report.result = "unhealthy";
    }
    Ok(report)
}

/// Runs required.d and wanted.d, then green.d or red.d; true when every
/// required check passed.
pub fn run_checks(opts: &Options) -> Result<(Vec<Check>, bool)> {
    let mut out = Vec::new();
    let mut ok = true;
    for (kind, dir) in [("required", "check/required.d"), ("wanted", "check/wanted.d")] {
        for path in scripts(&opts.root, dir)? {
            let c = run_one(kind, &path, opts.timeout)?;
            if !c.passed {
                eprintln!(
                    "arbor health: {kind} check {} failed ({})",
                    c.path,
                    if c.timed_out {
                        format!("killed after {} s", opts.timeout.as_secs())
                    } else {
                        format!("exit status {}", c.status.map(|s| s.to_string()).unwrap_or("?".into()))
                    }
                );
                ok &= kind != "required";
            }
            out.push(c);
        }
    }
    let (kind, dir) = if ok { ("green", "green.d") } else { ("red", "red.d") };
    for path in scripts(&opts.root, dir)? {
        out.push(run_one(kind, &path, opts.timeout)?);
    }
    Ok((out, ok))
}

/// The files of `dir` under every greenboot root, by name (a name in /etc
/// replaces the same name in /usr/lib).
fn scripts(root: &Path, dir: &str) -> Result<Vec<PathBuf>> {
    let mut by_name = std::collections::BTreeMap::new();
    for r in ROOTS {
        let d = root.join(r.trim_start_matches('/')).join(dir);
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.with_context(|| format!("listing {}", d.display()))?;
            let md = std::fs::metadata(e.path());
            if md.is_ok_and(|m| m.is_file()) {
                by_name.insert(e.file_name(), e.path());
            }
        }
    }
    Ok(by_name.into_values().collect())
}

fn run_one(kind: &'static str, path: &Path, timeout: Duration) -> Result<Check> {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    let exec = std::fs::metadata(path)?.permissions().mode() & 0o111 != 0;
    let mut cmd = if exec {
        Command::new(path)
    } else {
        let mut c = Command::new("/bin/sh");
        c.arg(path);
        c
    };
    // The check's output is for the log, never arbor's --json stdout.
    let stderr = std::io::stderr().as_fd_owned();
    cmd.stdin(Stdio::null()).stdout(stderr).process_group(0);
    let started = Instant::now();
    #[allow(clippy::disallowed_methods)]
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running the {kind} check {}", path.display()))?;
    let (status, timed_out) = loop {
        if let Some(s) = child.try_wait()? {
            break (Some(s), false);
        }
        if started.elapsed() >= timeout {
            // The whole group: a check's own children die with it.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Check {
        kind,
        path: path.display().to_string(),
        passed: status.is_some_and(|s| s.success()),
        status: status.and_then(|s| s.code()),
        timed_out,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A duplicate of stderr as an owned descriptor, for a child's stdout.
trait AsFdOwned {
    fn as_fd_owned(&self) -> Stdio;
}

impl AsFdOwned for std::io::Stderr {
    fn as_fd_owned(&self) -> Stdio {
        use std::os::fd::AsFd as _;
        match self.as_fd().try_clone_to_owned() {
            Ok(fd) => Stdio::from(fd),
            Err(_) => Stdio::null(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(root: &Path, rel: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn opts(root: &Path, secs: u64) -> Options {
        Options {
            timeout: Duration::from_secs(secs),
            root: root.to_path_buf(),
        }
    }

    #[test]
    fn required_failures_fail_wanted_ones_do_not_and_the_hooks_follow() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        script(r, "usr/lib/greenboot/check/required.d/10-ok.sh", "exit 0");
        script(r, "etc/greenboot/check/wanted.d/20-meh.sh", "exit 1");
        script(
            r,
            "etc/greenboot/green.d/50-green.sh",
            &format!("touch {}/green", r.display()),
        );
        script(
            r,
            "etc/greenboot/red.d/50-red.sh",
            &format!("touch {}/red", r.display()),
        );
        let (checks, ok) = run_checks(&opts(r, 30)).unwrap();
        assert!(ok, "{checks:?}");
        assert_eq!(
            checks.iter().map(|c| (c.kind, c.passed)).collect::<Vec<_>>(),
            [("required", true), ("wanted", false), ("green", true)]
        );
        assert!(r.join("green").exists() && !r.join("red").exists());

        // /etc replaces /usr/lib's check of the same name.
        script(r, "etc/greenboot/check/required.d/10-ok.sh", "exit 7");
        let (checks, ok) = run_checks(&opts(r, 30)).unwrap();
        assert!(!ok);
        assert_eq!(checks[0].status, Some(7));
        assert!(checks[0].path.contains("/etc/greenboot/"), "{checks:?}");
        assert!(r.join("red").exists());
    }

    #[test]
    fn a_hanging_check_is_killed_with_its_children_at_the_time_limit() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        script(
            r,
            "etc/greenboot/check/required.d/10-hang.sh",
            &format!("(sleep 1000; touch {}/late) & sleep 1000", r.display()),
        );
        let (checks, ok) = run_checks(&opts(r, 1)).unwrap();
        assert!(!ok && checks[0].timed_out && checks[0].status.is_none(), "{checks:?}");
    }
}
