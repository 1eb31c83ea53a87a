//! Boot counting with automatic rollback, proven in qemu: the sample device
//! tree on `qemu-virt-aarch64-bootcount` (U-Boot runs arbor's boot.scr from
//! the bootable FAT partition, which counts a new deployment's boots in
//! arbor.env), and arbor inside the VM upgrading itself (see `device_vm`).
//!
//! - A good update boots, passes its required health check, is marked good.
//! - Three bad ones — a kernel that panics (no initramfs: it cannot find its
//!   root), a required health check that fails, a boot that hangs (the test
//!   pulls the plug when it sees the hang, as a person would) — each end on
//!   the previous deployment within the board's 3 tries, by themselves;
//!   `arbor status` then names the failed commit and `arbor upgrade` does
//!   not deploy it again.
//! - Power cuts (qemu SIGKILLed) at seeded random moments of `arbor upgrade`
//!   and of the next boot's health check and mark-good write: every next
//!   boot comes up healthy on the old or the new version, and `ostree fsck`
//!   of the disk is clean. The disk runs with qemu's `cache=writethrough`:
//!   the guest sees a disk without a volatile write cache, and each write it
//!   was told is complete is on the host file, so killing qemu loses exactly
//!   the writes in flight — what a power cut loses on such a disk. (With the
//!   default writeback the guest flushes a cache a kill never loses, so the
//!   test would prove less than it claims; no qemu mode drops unflushed
//!   writes the way a disk's own cache can.)
//!
//! `ARBOR_POWER_CUTS` sets the number of power-cut runs (default 3; `make
//! soak` runs more); every test prints its boot cycles and recoveries.

use crate::common::{self, Deadline as _};
use crate::device_vm::{AARCH64, BOOT, Netns, Target, VERB, Vm, World, booted_commit};

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{arbor, run};

const BOARD: Target = Target {
    board: "qemu-virt-aarch64-bootcount",
    ..AARCH64
};

/// How one boot ended.
#[derive(Debug)]
enum Ended {
    /// Came up: `arbor status --json` and `arbor health --json` at boot.
    Up {
        status: serde_json::Value,
        health: serde_json::Value,
    },
    /// The guest reset itself (a kernel panic, or arbor health asking for a reboot).
    Reset,
    /// It hung and the test pulled the plug.
    Hung,
}

/// What U-Boot's script said on one boot.
#[derive(Debug, Default)]
struct Uboot {
    /// "arbor: trying …": a try of the trial was spent.
    tried: bool,
    /// "… has no tries left": the previous deployment was booted.
    fell_back: bool,
}

/// The update server, the disk and its VMs.
struct Bench {
    w: World,
    ns: Netns,
    server: common::http::Server,
    disk: PathBuf,
    uboot: PathBuf,
    log: PathBuf,
    boots: u32,
}

impl Bench {
    fn new() -> Bench {
        common::need_root();
        common::sample_repo();
        let mut w = World {
            dir: common::shared_tempdir(),
            reference: format!("arbor/{}/sample-device", BOARD.basearch),
            commits: Vec::new(),
        };
        run(arbor().arg("keygen").arg("-o").arg(w.path("key")));
        let ns = Netns::new("bootcount");
        std::fs::create_dir_all(w.path("pub")).unwrap();
        let server = ns.serve(w.path("pub"));
        let port = server.url.trim_end_matches('/').rsplit(':').next().unwrap().to_string();
        // v1 has a passing required check too: greenboot's layout, as shipped by a package.
        w.compose_with(&BOARD, 1, "", &check("10-ok", "exit 0"));
        let disk = w.image(&BOARD, &format!("http://10.0.2.2:{port}/"));
        let board = arbor::board::find(BOARD.board).unwrap();
        let uboot = w.cat(&w.commits[0], board.uboot.as_deref().unwrap());
        let log = w.path("serial.log");
        eprintln!("serial console: {}", log.display());
        Bench {
            w,
            ns,
            server,
            disk,
            uboot,
            log,
            boots: 0,
        }
    }

    fn start(&mut self) -> Vm {
        self.boots += 1;
        Vm::start_with(
            &BOARD,
            &self.ns,
            &self.uboot,
            &self.disk,
            None,
            &self.log,
            "writethrough",
        )
    }

    /// Boots once and watches: up (with the shell ready), reset, or hung.
    fn boot(&mut self) -> (Option<Vm>, Ended, Uboot) {
        let mut vm = self.start();
        let mut u = Uboot::default();
        let mut status = None;
        let mut health = None;
        let deadline = Instant::now() + BOOT;
        loop {
            let Some(l) = vm.line(deadline, "the boot marker, a reset or the hang") else {
                return (None, Ended::Reset, u);
            };
            if l.contains("arbor: trying") {
                u.tried = true;
            } else if l.contains("has no tries left") {
                u.fell_back = true;
            } else if l.contains("S01hang: hanging") {
                // Nothing more comes; a person would pull the plug now.
                vm.pull_plug();
                return (None, Ended::Hung, u);
            } else if let Some(rest) = l.split_once("arbor-health: ").map(|(_, r)| r.to_string())
                && rest.starts_with('{')
            {
                let (json, rc) = rest.rsplit_once(" rc=").unwrap_or((&rest, "?"));
                let mut v: serde_json::Value =
                    serde_json::from_str(json).unwrap_or_else(|e| vm.fail(&format!("{e}: {json}")));
                v["rc"] = rc.trim().into();
                health = Some(v);
            } else if let Some(json) = l.split_once("arbor-status: ").map(|(_, j)| j.to_string()) {
                status = Some(serde_json::from_str(&json).unwrap_or_else(|e| vm.fail(&format!("{e}: {json}"))));
            } else if l.contains("arbor-booted:") {
                let (Some(status), Some(health)) = (status, health) else {
                    vm.fail("booted without the arbor-status and arbor-health lines")
                };
                vm.ready();
                return (Some(vm), Ended::Up { status, health }, u);
            }
        }
    }

    /// Boots until the system is up; the number of boots it took.
    fn until_up(&mut self, limit: u32) -> (Vm, serde_json::Value, serde_json::Value, Vec<(Ended, Uboot)>) {
        let mut seen = Vec::new();
        for _ in 0..limit {
            match self.boot() {
                (Some(vm), Ended::Up { status, health }, u) => {
                    seen.push((
                        Ended::Up {
                            status: status.clone(),
                            health: health.clone(),
                        },
                        u,
                    ));
                    return (vm, status, health, seen);
                }
                (_, ended, u) => seen.push((ended, u)),
            }
        }
        panic!("not up after {limit} boots: {seen:?}; console: {}", self.log.display());
    }

    /// `ostree fsck` of the disk's repository, as the power left it.
    fn fsck(&self) {
        let m = crate::device::Mounted::new(&self.disk);
        let out = Command::new("ostree")
            .arg("fsck")
            .arg("--repo")
            .arg(m.top.join("ostree/repo"))
            .timed_output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("no errors"),
            "ostree fsck: {text}"
        );
    }
}

/// postprocess-script lines adding a greenboot required check.
fn check(name: &str, body: &str) -> String {
    format!(
        "$bb mkdir -p /usr/lib/greenboot/check/required.d\n\
         printf '#!/bin/sh\\necho arbor-check {name}\\n{body}\\n' > /usr/lib/greenboot/check/required.d/{name}.sh\n\
         $bb chmod 755 /usr/lib/greenboot/check/required.d/{name}.sh\n"
    )
}

fn result(health: &serde_json::Value) -> &str {
    health["result"].as_str().unwrap_or("?")
}

/// One bad update: published, deployed from inside the VM, then boots until
/// the board is up again by itself. Returns the boots it took.
#[allow(clippy::too_many_arguments)]
fn bad_update(
    b: &mut Bench,
    mut vm: Vm,
    n: u64,
    keys: &str,
    script: &str,
    good: &str,
    expect: fn(&Ended) -> bool,
    plain_boot: f64,
) -> Vm {
    b.w.compose_with(&BOARD, n, keys, script);
    let bad = b.w.commits.last().unwrap().clone();
    vm.ok("arbor upgrade", VERB);
    let s: serde_json::Value = serde_json::from_str(&vm.ok("arbor status --json | tr -d '\\n'", VERB)).unwrap();
    assert_eq!(s["boot_counting"]["trial"], bad.as_str(), "{s}");
    assert_eq!(s["boot_counting"]["tries_left"], 3, "{s}");
    vm.reboot();
    let before = b.boots;
    let rebooted = Instant::now();
    let (mut vm, status, health, seen) = b.until_up(6);
    let back = rebooted.elapsed().as_secs_f64();
    let tries = seen.iter().filter(|(_, u)| u.tried).count();
    assert_eq!(tries, 3, "three tries of the bad update: {seen:?}");
    assert!(
        seen[..3].iter().all(|(e, _)| expect(e)),
        "each try ended the expected way: {seen:?}"
    );
    assert!(seen.last().unwrap().1.fell_back, "U-Boot fell back: {seen:?}");
    assert_eq!(booted_commit(&status), good, "{status}");
    assert_eq!(result(&health), "rolled-back", "{health}");
    assert_eq!(health["failed"]["commit"], bad.as_str(), "{health}");
    assert_eq!(health["failed"]["boots"], 3, "{health}");
    assert_eq!(health["failed"]["running"], good, "{health}");
    eprintln!(
        "bad update {n}: from the reboot into it to the previous deployment running again: {back:.0} s, \
         {} boots ({:.1}x a plain boot of {plain_boot:.0} s)",
        b.boots - before,
        back / plain_boot
    );
    // Status names the failure; the running deployment is the default again.
    let s: serde_json::Value = serde_json::from_str(&vm.ok("arbor status --json | tr -d '\\n'", VERB)).unwrap();
    assert_eq!(s["deployments"][0]["commit"], good, "{s}");
    assert_eq!(s["deployments"][0]["booted"], true, "{s}");
    assert_eq!(s["boot_counting"]["last_failed"]["commit"], bad.as_str(), "{s}");
    assert_eq!(s["boot_counting"]["trial"], serde_json::Value::Null, "{s}");
    // The failed commit is the newest on the server: not deployed again.
    let (rc, out) = vm.sh("arbor upgrade 2>&1", VERB);
    let out = out.join("\n");
    assert_ne!(rc, 0, "{out}");
    assert!(
        out.contains(&bad) && out.contains("failed its boot trial") && out.contains("--force"),
        "{out}"
    );
    vm
}

#[test]
#[ignore = "needs root (network namespace, loop devices, arbor image) and `make cross` (arbor for the board)"]
fn bad_updates_roll_back_by_themselves_and_power_cuts_leave_old_or_new() {
    let started = Instant::now();
    let mut b = Bench::new();
    let v1 = b.w.commits[0].clone();

    // v1 boots; nothing is on trial.
    let (mut vm, status, health, seen) = b.until_up(1);
    assert!(!seen[0].1.tried, "{seen:?}");
    assert_eq!(booted_commit(&status), v1, "{status}");
    assert_eq!(result(&health), "healthy", "{health}");
    assert_eq!(health["checks"][0]["passed"], true, "{health}");

    // Good update: v2 boots on trial, passes, is marked good, the counter cleared.
    b.w.compose_with(&BOARD, 2, "", &check("10-ok", "exit 0"));
    let v2 = b.w.commits[1].clone();
    let up = Instant::now();
    vm.ok("arbor upgrade", VERB);
    // The power cuts below fall anywhere in an upgrade this long (and a bit after).
    let upgrade_ms = (up.elapsed().as_millis() as u64).max(1000) * 6 / 5;
    vm.reboot();
    let (mut vm, status, health, seen) = b.until_up(1);
    assert!(seen[0].1.tried, "{seen:?}");
    assert_eq!(booted_commit(&status), v2, "{status}");
    assert_eq!(result(&health), "marked-good", "{health}");
    assert!(
        !health["bootloader_files"].as_array().unwrap().is_empty(),
        "boot.scr rewritten without the trial: {health}"
    );
    assert_eq!(vm.ok("cat /usr/share/arbor-sample-version", VERB).trim(), "v2");
    let s: serde_json::Value = serde_json::from_str(&vm.ok("arbor status --json | tr -d '\\n'", VERB)).unwrap();
    assert_eq!(s["boot_counting"]["trial"], serde_json::Value::Null, "{s}");
    vm.reboot();
    // Marked good: the next boot spends no try.
    let plain = Instant::now();
    let (vm, status, health, seen) = b.until_up(1);
    let plain_boot = plain.elapsed().as_secs_f64();
    assert!(!seen[0].1.tried, "{seen:?}");
    assert_eq!(booted_commit(&status), v2, "{status}");
    assert_eq!(result(&health), "healthy", "{health}");

    // (a) A kernel that panics: no initramfs, so it cannot find its root (panic=10 resets).
    let vm = bad_update(
        &mut b,
        vm,
        3,
        "initramfs: none\n",
        "",
        &v2,
        |e| matches!(e, Ended::Reset),
        plain_boot,
    );
    // (b) A required health check that fails: arbor health exits 3, the hook reboots.
    let vm = bad_update(
        &mut b,
        vm,
        4,
        "",
        &check("20-broken", "exit 1"),
        &v2,
        |e| matches!(e, Ended::Reset),
        plain_boot,
    );
    // (c) A boot that hangs before the health check: the plug is pulled.
    let hang = "$bb mkdir -p /etc/rc.d\n\
                printf '#!/bin/sh\\necho S01hang: hanging\\nwhile :; do sleep 1000; done\\n' > /etc/rc.d/S01hang\n\
                $bb chmod 755 /etc/rc.d/S01hang\n";
    let vm = bad_update(&mut b, vm, 5, "", hang, &v2, |e| matches!(e, Ended::Hung), plain_boot);
    vm.reboot();
    let recoveries = 3;

    // Power cuts.
    let runs: u64 = std::env::var("ARBOR_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut seed = 0x5eed_u64;
    let mut on = v2.clone();
    let mut outcomes = Vec::new();
    for (n, run_no) in (6..).zip(0..runs) {
        b.w.compose_with(&BOARD, n, "", &check("10-ok", "exit 0"));
        let new = b.w.commits.last().unwrap().clone();
        seed = crate::device::next(&mut seed);
        let during_health = seed % 3 == 0;
        let (mut vm, _, _, _) = b.until_up(4);
        let what = if during_health {
            vm.ok("arbor upgrade", VERB);
            vm.type_line("reboot -f");
            // qemu exits at the reset (-no-reboot); the next boot is the trial.
            let deadline = Instant::now() + BOOT;
            while vm.line(deadline, "qemu to exit").is_some() {}
            let mut vm = b.start();
            vm.expect("arbor-health-start", BOOT);
            let ms = crate::device::next(&mut seed) % 400;
            std::thread::sleep(Duration::from_millis(ms));
            vm.pull_plug();
            format!("health+{ms}ms")
        } else {
            // Inside `arbor upgrade`: anywhere from the summary to the cleanup.
            vm.type_line("arbor upgrade");
            let ms = crate::device::next(&mut seed) % upgrade_ms;
            std::thread::sleep(Duration::from_millis(ms));
            vm.pull_plug();
            format!("upgrade+{ms}ms")
        };
        b.fsck();
        let (vm, status, health, seen) = b.until_up(5);
        let booted = booted_commit(&status);
        assert!(
            booted == on || booted == new,
            "run {run_no} ({what}): booted {booted}: {status}"
        );
        assert!(
            ["healthy", "marked-good"].contains(&result(&health)),
            "run {run_no} ({what}): {health}"
        );
        assert_eq!(health["rc"], "0", "{health}");
        outcomes.push(format!(
            "{what} -> {} after {} boot(s)",
            if booted == new { "new" } else { "old" },
            seen.len()
        ));
        vm.reboot();
        on = booted;
    }
    b.fsck();
    eprintln!(
        "boot counting: {} boot cycles, {recoveries} bad updates recovered by themselves (3 of 3), \
         {runs} power cuts (in an upgrade of {upgrade_ms} ms or the next health check) all came up healthy \
         on old or new: [{}]; {:.0} s",
        b.boots,
        outcomes.join("; "),
        started.elapsed().as_secs_f64()
    );
    let _ = &b.server;
}

/// Boots `disk` as a Raspberry Pi 3 (qemu raspi3b, from the board's qemu
/// settings) once, written in place; how it ended.
fn rpi3_boot(w: &World, disk: &std::path::Path, uboot: &std::path::Path, dtb: &std::path::Path) -> (Ended, Uboot) {
    let board = arbor::board::find("rpi3").unwrap();
    let qemu = board.qemu.unwrap();
    let mut cmd = Command::new(&qemu.binary);
    cmd.args(["-M", &qemu.machine, "-no-reboot"]);
    for a in &qemu.args {
        cmd.arg(
            a.replace("{uboot}", &uboot.display().to_string())
                .replace("{dtb}", &dtb.display().to_string())
                .replace("{image}", &disk.display().to_string()),
        );
    }
    let mut vm = Vm::spawn(cmd, &w.path("rpi3-serial.log"));
    let mut u = Uboot::default();
    let mut health = None;
    let deadline = Instant::now() + BOOT;
    loop {
        let Some(l) = vm.line(deadline, "the boot marker or a reset") else {
            return (Ended::Reset, u);
        };
        if l.contains("arbor: trying") {
            u.tried = true;
        } else if l.contains("has no tries left") {
            u.fell_back = true;
        } else if let Some(rest) = l.split_once("arbor-health: ").map(|(_, r)| r.to_string())
            && rest.starts_with('{')
        {
            let json = rest.rsplit_once(" rc=").map(|(j, _)| j).unwrap_or(&rest);
            health = Some(serde_json::from_str(json).unwrap_or_else(|e| vm.fail(&format!("{e}: {json}"))));
        } else if let Some(marker) = l.split_once("arbor-booted: ").map(|(_, m)| m.to_string()) {
            let Some(health) = health else {
                vm.fail("booted without an arbor-health line")
            };
            // arbor health is done and its writes are synced: power off.
            vm.pull_plug();
            let status = serde_json::json!({ "marker": marker });
            return (Ended::Up { status, health }, u);
        }
    }
}

/// The Raspberry Pi 3 in qemu: its U-Boot keeps the count on the FAT
/// firmware partition (where the firmware reads config.txt and U-Boot its
/// uboot.env), updated from the host with the card mounted (raspi3b has no
/// network): a good update is marked good; one whose required check fails
/// goes back to the previous deployment by itself.
#[test]
#[ignore = "needs root (loop devices, arbor image) and `make cross` (arbor for the board)"]
fn rpi3_counts_boots_on_its_fat_partition_marks_good_and_rolls_back() {
    common::need_root();
    common::sample_repo();
    let started = Instant::now();
    let t = Target {
        board: "rpi3",
        ..AARCH64
    };
    let mut w = World {
        dir: common::shared_tempdir(),
        reference: format!("arbor/{}/sample-device", t.basearch),
        commits: Vec::new(),
    };
    run(arbor().arg("keygen").arg("-o").arg(w.path("key")));
    std::fs::create_dir_all(w.path("pub")).unwrap();
    let server = common::http::Server::start(w.path("pub"));
    w.compose_with(&t, 1, "", &check("10-ok", "exit 0"));
    let disk = w.image(&t, &server.url);
    let v1 = w.commits[0].clone();
    let board = arbor::board::find("rpi3").unwrap();
    let uboot = w.cat(&v1, board.uboot.as_deref().unwrap());
    let kver = run(Command::new("ostree")
        .arg(format!("--repo={}", w.path("repo").display()))
        .args(["ls", "--nul-filenames-only", &v1, "/usr/lib/modules"]));
    let kver = kver
        .split('\0')
        .find(|n| n.starts_with("/usr/lib/modules/"))
        .unwrap()
        .to_string();
    let dtb = w.cat(&v1, &format!("{kver}/dtb/{}", board.dtb.as_deref().unwrap()));
    let mut boots = 0;
    let upgrade = |w: &World| {
        let m = crate::device::Mounted::new(&disk);
        let out = crate::device::device(&["upgrade", "--json"], &m, &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let s = common::ok_json(&crate::device::device(&["status", "--json"], &m, &[]));
        assert_eq!(s["boot_counting"]["trial"], w.commits.last().unwrap().as_str(), "{s}");
    };

    // Good update: v2 on trial, marked good on its first boot.
    w.compose_with(&t, 2, "", &check("10-ok", "exit 0"));
    let v2 = w.commits[1].clone();
    upgrade(&w);
    boots += 1;
    let (ended, u) = rpi3_boot(&w, &disk, &uboot, &dtb);
    let Ended::Up { status, health } = ended else {
        panic!("v2 did not come up: {ended:?}")
    };
    assert!(u.tried, "{u:?}");
    assert!(
        status["marker"].as_str().unwrap().contains(&format!("commit={v2}")),
        "{status}"
    );
    assert_eq!(result(&health), "marked-good", "{health}");

    // Bad update: v3's required check fails; three tries, then v2 again.
    w.compose_with(&t, 3, "", &check("20-broken", "exit 1"));
    let v3 = w.commits[2].clone();
    upgrade(&w);
    let mut seen = Vec::new();
    let (status, health) = loop {
        assert!(seen.len() < 6, "not back after {} boots: {seen:?}", seen.len());
        boots += 1;
        match rpi3_boot(&w, &disk, &uboot, &dtb) {
            (Ended::Up { status, health }, u) => {
                seen.push(format!("up {u:?}"));
                if u.fell_back {
                    break (status, health);
                }
                panic!("v3 came up without falling back: {health}")
            }
            (e, u) => seen.push(format!("{e:?} {u:?}")),
        }
    };
    assert_eq!(seen.len(), 4, "three tries and the fallback: {seen:?}");
    assert!(
        status["marker"].as_str().unwrap().contains(&format!("commit={v2}")),
        "{status}"
    );
    assert_eq!(result(&health), "rolled-back", "{health}");
    assert_eq!(health["failed"]["commit"], v3.as_str(), "{health}");
    let m = crate::device::Mounted::new(&disk);
    let s = common::ok_json(&crate::device::device(&["status", "--json"], &m, &[]));
    assert_eq!(s["deployments"][0]["commit"], v2.as_str(), "{s}");
    assert_eq!(s["boot_counting"]["last_failed"]["commit"], v3.as_str(), "{s}");
    if let Some(dev) = &m.firmware {
        run(Command::new("fsck.fat").args(["-n", dev]));
    }
    eprintln!(
        "rpi3: {boots} boot cycles, the bad update recovered by itself; {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
