//! arbor on the board: the sample device tree (`treefiles/sample-device.yaml`:
//! arbor cross-built for the board by `make cross`, with its library closure
//! from the device repository) boots in qemu, and arbor, running inside the VM
//! on the emulated CPU, upgrades it from an update server, rolls it back, and
//! applies an offline bundle from a second disk.
//!
//! Networking stays on this machine. Each test creates a network namespace
//! with only `lo` (`ip netns add`), runs the update server on that namespace's
//! loopback (a thread `setns(2)`es into it before binding), and runs qemu
//! inside it (`ip netns exec`) with its user-mode network: the guest gets
//! 10.0.2.15 by DHCP from qemu and reaches the namespace's 127.0.0.1 as
//! 10.0.2.2. The namespace has no other interface, so nothing the guest sends
//! can leave the machine.
//!
//! The guest is driven over its serial console: busybox init's `askfirst`
//! shell, one command at a time, each followed by a marker with its exit code.

use crate::common::{self, Deadline as _, http};

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{arbor, ok_json, run};

/// v1's commit time; v2 is a day later, v3 two.
pub(crate) const EPOCH: u64 = 1_704_067_200;
/// One boot under TCG, U-Boot to the marker (about a minute here; generous for a loaded CI machine).
pub(crate) const BOOT: Duration = Duration::from_secs(600);
/// One arbor verb inside the VM.
pub(crate) const VERB: Duration = Duration::from_secs(900);

/// What differs between the two boards.
pub(crate) struct Target {
    /// rpm arch.
    pub(crate) arch: &'static str,
    /// dnf's `$basearch` (in the tree's ref).
    pub(crate) basearch: &'static str,
    /// Rust target of `make cross`.
    pub(crate) rust_target: &'static str,
    /// Debian arch of `make cross`'s sysroot.
    pub(crate) deb_arch: &'static str,
    pub(crate) board: &'static str,
    /// What `file` says about the binary.
    pub(crate) file_says: &'static str,
    /// `uname -m` in the guest.
    pub(crate) uname: &'static str,
}

pub(crate) const AARCH64: Target = Target {
    arch: "aarch64",
    basearch: "aarch64",
    rust_target: "aarch64-unknown-linux-gnu",
    deb_arch: "arm64",
    board: "qemu-virt-aarch64",
    file_says: "ARM aarch64",
    uname: "aarch64",
};

const ARMV7: Target = Target {
    arch: "armv7hl",
    basearch: "armhfp",
    rust_target: "armv7-unknown-linux-gnueabihf",
    deb_arch: "armhf",
    board: "qemu-virt-armv7",
    file_says: "ARM, EABI5",
    uname: "armv7l",
};

/// The device repository for `t`, built from `make cross`'s binary and debs.
fn device_repo(t: &Target) -> PathBuf {
    let root = common::root();
    let bin = root.join(format!("target/{}/device/arbor", t.rust_target));
    let debs = root.join(format!("target/cross/debs-{}", t.deb_arch));
    assert!(
        bin.is_file() && debs.is_dir(),
        "{} or {} is missing: run `make cross` first (`make test` does)",
        bin.display(),
        debs.display()
    );
    let summary = arbor_sample_repo::device::ensure(&arbor_sample_repo::device::DeviceOptions {
        arch: t.arch.parse().unwrap(),
        arbor: bin,
        debs,
        sample_manifests: root.join("samples/packages"),
        device_manifests: Some(root.join("samples/device")),
        out: root.join(format!("target/device-repo/{}", t.arch)),
        force: false,
    })
    .unwrap();
    summary.out
}

/// A network namespace with only `lo`, deleted on drop.
pub(crate) struct Netns {
    name: String,
}

impl Netns {
    pub(crate) fn new(tag: &str) -> Netns {
        let name = format!("arbor-it-{}-{tag}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        let links = run(Command::new("ip").args(["-n", &ns.name, "-o", "link", "show"]));
        assert_eq!(links.lines().count(), 1, "the namespace must have only lo: {links}");
        ns
    }

    /// A file server on the namespace's loopback.
    pub(crate) fn serve(&self, root: PathBuf) -> http::Server {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            // A network namespace is per thread: only this thread enters it, and
            // the socket it binds stays in it.
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            http::Server::start(root)
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).timed_status();
    }
}

/// A qemu VM whose serial console the test reads and types into.
pub(crate) struct Vm {
    child: common::deadline::Timed,
    stdin: ChildStdin,
    rx: mpsc::Receiver<String>,
    log: std::fs::File,
    log_path: PathBuf,
    tail: Vec<String>,
    seq: u32,
}

impl Vm {
    /// Boots `disk` (raw, written in place) as `t`'s board inside `ns`, with
    /// user-mode networking and `extra` as a second virtio disk.
    /// `uboot` is the board's U-Boot, taken from the tree (qemu runs it as firmware).
    pub(crate) fn start(t: &Target, ns: &Netns, uboot: &Path, disk: &Path, extra: Option<&Path>, log: &Path) -> Vm {
        Vm::start_with(t, ns, uboot, disk, extra, log, "writeback")
    }

    /// [`Vm::start`] with the disk's qemu cache mode.
    pub(crate) fn start_with(
        t: &Target,
        ns: &Netns,
        uboot: &Path,
        disk: &Path,
        extra: Option<&Path>,
        log: &Path,
        cache: &str,
    ) -> Vm {
        // The board's machine, CPU and memory; the disks and network are this test's.
        let qemu = arbor::board::find(t.board).unwrap().qemu.unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
            .arg(&qemu.binary)
            .args(["-M", &qemu.machine])
            .args(["-cpu", qemu.cpu.as_deref().unwrap()])
            .args(["-m", qemu.memory.as_deref().unwrap()])
            .args(["-nographic", "-no-reboot"])
            .arg("-bios")
            .arg(uboot)
            .args(["-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0"]);
        // The extra disk first: virt gives the last virtio-mmio device created the
        // first slot, and U-Boot looks for the bootable partition on virtio 0.
        if let Some(x) = extra {
            cmd.arg("-drive")
                .arg(format!("if=none,file={},format=raw,id=hd1", x.display()))
                .args(["-device", "virtio-blk-device,drive=hd1"]);
        }
        cmd.arg("-drive")
            .arg(format!(
                "if=none,file={},format=raw,id=hd0,cache={cache}",
                disk.display()
            ))
            .args(["-device", "virtio-blk-device,drive=hd0"]);
        Vm::spawn(cmd, log)
    }

    /// Runs the qemu command `cmd` with its serial console on stdio.
    pub(crate) fn spawn(mut cmd: Command, log: &Path) -> Vm {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .timed_spawn()
            .unwrap();
        let rx = arbor::image::boottest::console_lines(&mut child);
        let stdin = child.stdin.take().unwrap();
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        Vm {
            child,
            stdin,
            rx,
            log: file,
            log_path: log.to_path_buf(),
            tail: Vec::new(),
            seq: 0,
        }
    }

    pub(crate) fn fail(&self, why: &str) -> ! {
        panic!(
            "{why}; the last lines of the serial console ({}):\n{}",
            self.log_path.display(),
            self.tail.join("\n")
        )
    }

    /// The next console line, or `None` when qemu exited.
    pub(crate) fn line(&mut self, deadline: Instant, waiting_for: &str) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(line) => {
                let _ = writeln!(self.log, "{line}");
                self.tail.push(line.clone());
                if self.tail.len() > 60 {
                    self.tail.remove(0);
                }
                Some(line)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => self.fail(&format!("no {waiting_for} within the time limit")),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Waits for a line containing `needle`; returns it.
    pub(crate) fn expect(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            match self.line(deadline, needle) {
                Some(l) if l.contains(needle) => return l,
                Some(_) => {}
                None => self.fail(&format!("qemu exited before {needle:?}")),
            }
        }
    }

    /// Waits for the boot: the status line (parsed) and the marker.
    pub(crate) fn booted(&mut self) -> (serde_json::Value, String) {
        let status = self.expect("arbor-status", BOOT);
        let Some(json) = status.split_once("arbor-status: ").map(|(_, j)| j.to_string()) else {
            self.fail(&format!("arbor status failed at boot: {status}"))
        };
        let marker = self.expect("arbor-booted:", BOOT);
        self.ready();
        let status = serde_json::from_str(&json).unwrap_or_else(|e| self.fail(&format!("{e}: {json}")));
        (status, marker)
    }

    /// After the boot marker: the shell set up for [`Vm::sh`].
    pub(crate) fn ready(&mut self) {
        // init's askfirst then asks to "press Enter to activate this console"
        // (no newline after it); the terminal keeps what is typed until then.
        self.type_line("");
        // No echo, no prompt, no kernel messages: what the console shows after
        // this is what the commands print.
        self.type_line("stty -echo; PS1=; PS2=; dmesg -n 1");
        // Everything the console showed until then (the banner, the echo of the
        // line above) ends before this command's marker.
        self.sh("true", BOOT);
    }

    /// Cuts the power: qemu is killed (SIGKILL) wherever the guest is.
    pub(crate) fn pull_plug(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn type_line(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Runs `cmd` in the guest's shell; its exit code and output lines.
    pub(crate) fn sh(&mut self, cmd: &str, within: Duration) -> (i32, Vec<String>) {
        self.seq += 1;
        let tag = format!("@@{}:", self.seq);
        // Were the command echoed, its line would show `%s`: only the real
        // marker has digits.
        // On a line of its own even when the output does not end with a newline.
        self.type_line(&format!("{cmd}; printf '\\n{tag}%s\\n' \"$?\""));
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        loop {
            let Some(l) = self.line(deadline, &format!("the end of `{cmd}`")) else {
                self.fail(&format!("qemu exited during `{cmd}`"))
            };
            if let Some(rc) = l.trim().strip_prefix(&tag).and_then(|r| r.parse().ok()) {
                return (rc, out);
            }
            out.push(l);
        }
    }

    /// [`Vm::sh`] that must succeed; its output.
    pub(crate) fn ok(&mut self, cmd: &str, within: Duration) -> String {
        let (rc, out) = self.sh(cmd, within);
        if rc != 0 {
            self.fail(&format!("`{cmd}` exited {rc} in the guest"));
        }
        out.join("\n")
    }

    /// `reboot` in the guest; with -no-reboot qemu exits when the guest resets.
    pub(crate) fn reboot(mut self) {
        self.type_line("reboot");
        let deadline = Instant::now() + BOOT;
        while self.line(deadline, "qemu to exit after reboot").is_some() {}
        let status = self.child.wait().unwrap();
        assert!(status.success(), "qemu exited {status} after the guest rebooted");
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Composes, signs, publishes and images what one board's test needs.
pub(crate) struct World {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) reference: String,
    pub(crate) commits: Vec<String>,
}

impl World {
    pub(crate) fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Composes version `n` (1-based) of the device tree: each later one adds a file.
    pub(crate) fn compose(&mut self, t: &Target, n: u64) {
        self.compose_with(t, n, "", "");
    }

    /// [`World::compose`] with more treefile keys and more postprocess-script lines.
    pub(crate) fn compose_with(&mut self, t: &Target, n: u64, keys: &str, script: &str) {
        let d = self.dir.path();
        let tf = d.join(format!("tf{n}"));
        std::fs::create_dir_all(&tf).unwrap();
        for e in std::fs::read_dir(common::root().join("treefiles")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                std::fs::copy(&p, tf.join(p.file_name().unwrap())).unwrap();
            }
        }
        std::fs::write(
            tf.join("sample.repo"),
            format!(
                "[arbor-sample]\nname=sample\nbaseurl={}\ngpgcheck=0\n\n[arbor-device]\nname=device\nbaseurl=file://{}/\ngpgcheck=0\n",
                common::sample_url(),
                device_repo(t).display()
            ),
        )
        .unwrap();
        if n > 1 || !keys.is_empty() || !script.is_empty() {
            let top = tf.join("sample-device.yaml");
            let text = std::fs::read_to_string(&top).unwrap();
            std::fs::write(&top, format!("{text}postprocess-script: stamp.sh\n{keys}")).unwrap();
            std::fs::write(
                tf.join("stamp.sh"),
                format!("#!/usr/sbin/busybox sh\nbb=/usr/sbin/busybox\necho v{n} > /usr/share/arbor-sample-version\n{script}"),
            )
            .unwrap();
        }
        let out = arbor()
            .env("SOURCE_DATE_EPOCH", (EPOCH + (n - 1) * 86_400).to_string())
            .args(["compose", "tree", "--arch", t.arch, "--json", "--repo"])
            .arg(d.join("repo"))
            .arg("--cache-dir")
            .arg(d.join("cache"))
            .arg(tf.join("sample-device.yaml"))
            .timed_output()
            .unwrap();
        let c = ok_json(&out)["commit"].as_str().unwrap().to_string();
        run(arbor()
            .args(["sign", "--repo"])
            .arg(d.join("repo"))
            .arg("--key")
            .arg(d.join("key"))
            .arg(&self.reference));
        run(arbor()
            .args(["publish", "--repo"])
            .arg(d.join("repo"))
            .arg("--to")
            .arg(d.join("pub"))
            .arg("--sign-key")
            .arg(d.join("key")));
        self.commits.push(c);
    }

    /// A file of `commit`, copied out.
    pub(crate) fn cat(&self, commit: &str, path: &str) -> PathBuf {
        let out = Command::new("ostree")
            .arg(format!("--repo={}", self.path("repo").display()))
            .args(["cat", commit, path])
            .timed_output()
            .unwrap();
        assert!(out.status.success(), "{path}: {}", String::from_utf8_lossy(&out.stderr));
        let dest = self.path(path.rsplit('/').next().unwrap());
        std::fs::write(&dest, &out.stdout).unwrap();
        dest
    }

    /// The image of v1, pointing at `remote`.
    pub(crate) fn image(&self, t: &Target, remote: &str) -> PathBuf {
        let img = self.path(&format!("{}.img", t.board));
        run(arbor()
            .args(["image", "--ref", &self.reference, "--board", t.board, "--repo"])
            .arg(self.path("repo"))
            .arg("-o")
            .arg(&img)
            .args(["--remote", remote, "--keys"])
            .arg(self.path("key.pub")));
        img
    }
}

/// The booted deployment's commit in `arbor status --json`.
pub(crate) fn booted_commit(status: &serde_json::Value) -> String {
    let ds = status["deployments"]
        .as_array()
        .expect("deployments in arbor status --json");
    let b = ds
        .iter()
        .find(|d| d["booted"] == true)
        .unwrap_or_else(|| panic!("no booted deployment in {status}"));
    b["commit"]
        .as_str()
        .unwrap_or_else(|| panic!("no commit in {b}"))
        .to_string()
}

/// v1 boots; `arbor upgrade` inside the VM pulls v2 from the server and
/// deploys it; v2 boots; `arbor rollback`; v1 boots again. With `bundle`, v3
/// then comes from a bundle on a second disk and boots.
fn upgrade_and_roll_back_inside_the_vm(t: &Target, bundle: bool) {
    common::need_root();
    common::sample_repo();
    let started = Instant::now();
    let dir = common::shared_tempdir();
    let mut w = World {
        dir,
        reference: format!("arbor/{}/sample-device", t.basearch),
        commits: Vec::new(),
    };
    run(arbor().arg("keygen").arg("-o").arg(w.path("key")));
    let ns = Netns::new(t.arch);
    std::fs::create_dir_all(w.path("pub")).unwrap();
    let server = ns.serve(w.path("pub"));
    let port = server.url.trim_end_matches('/').rsplit(':').next().unwrap().to_string();
    let remote = format!("http://10.0.2.2:{port}/");
    w.compose(t, 1);
    let disk = w.image(t, &remote);
    w.compose(t, 2);
    let (v1, v2) = (w.commits[0].clone(), w.commits[1].clone());

    // What the tree ships: arbor for the board's CPU.
    let bin = w.cat(&v1, "/usr/bin/arbor");
    let file = run(Command::new("file").arg(&bin));
    assert!(file.contains(t.file_says) && file.contains("executable"), "{file}");
    let host_version = run(arbor().arg("--version"));

    let board = arbor::board::find(t.board).unwrap();
    let uboot = w.cat(&v1, board.uboot.as_deref().unwrap());
    let log = w.path("serial.log");
    eprintln!("serial console: {}", log.display());

    // Boot 1: v1.
    let mut vm = Vm::start(t, &ns, &uboot, &disk, None, &log);
    let boot1 = Instant::now();
    let (status, marker) = vm.booted();
    let boot_secs = boot1.elapsed().as_secs_f64();
    assert_eq!(booted_commit(&status), v1, "{status}");
    assert!(
        marker.contains(&format!("commit={v1}")) && marker.contains(t.uname),
        "{marker}"
    );
    assert_eq!(vm.ok("uname -m", VERB).trim(), t.uname);
    // The physical root has what `ostree admin init-fs` makes: /tmp is a link to it.
    assert_eq!(vm.ok("stat -c %a /sysroot/tmp", VERB).trim(), "1777");
    vm.ok("touch /tmp/arbor-it && rm /tmp/arbor-it", VERB);
    assert_eq!(vm.ok("arbor --version", VERB).trim(), host_version.trim());
    // By path: busybox's ash prefers its own applets (it has a small `rpm`) to $PATH.
    let rpms = vm.ok("/usr/bin/rpm -qa --qf '%{NAME}\\n'", VERB);
    assert!(
        rpms.lines().any(|l| l.trim() == "arbor"),
        "rpm -qa in the guest: {rpms}"
    );
    let up = Instant::now();
    vm.ok("arbor upgrade", VERB);
    let upgrade_secs = up.elapsed().as_secs_f64();
    let s: serde_json::Value = serde_json::from_str(&vm.ok("arbor status --json | tr -d '\\n'", VERB)).unwrap();
    assert_eq!(s["deployments"][0]["commit"].as_str(), Some(v2.as_str()), "{s}");
    // v2 boots next; a rollback now would only drop it (v1, the second, is booted).
    let flags = |s: &serde_json::Value, i: usize| {
        let d = &s["deployments"][i];
        (d["booted"] == true, d["pending"] == true, d["rollback"] == true)
    };
    assert_eq!(
        (flags(&s, 0), flags(&s, 1)),
        ((false, true, false), (true, false, false)),
        "{s}"
    );
    vm.reboot();

    // Boot 2: v2, with v2's file.
    let mut vm = Vm::start(t, &ns, &uboot, &disk, None, &log);
    let (status, marker) = vm.booted();
    assert_eq!(booted_commit(&status), v2, "{status}");
    assert!(marker.contains(&format!("commit={v2}")), "{marker}");
    assert_eq!(vm.ok("cat /usr/share/arbor-sample-version", VERB).trim(), "v2");
    assert_eq!(
        (flags(&status, 0), flags(&status, 1)),
        ((true, false, false), (false, false, true)),
        "{status}"
    );
    vm.ok("arbor rollback", VERB);
    vm.reboot();

    // Boot 3: v1 again.
    let mut extra = None;
    if bundle {
        w.compose(t, 3);
        let b = w.path("bundle");
        std::fs::create_dir_all(&b).unwrap();
        run(arbor()
            .args(["bundle", "create", "--repo"])
            .arg(w.path("repo"))
            .args(["--from", &v1, "--to", &w.commits[2], "-o"])
            .arg(b.join("v3.arbor"))
            .arg("--key")
            .arg(w.path("key")));
        let size = std::fs::metadata(b.join("v3.arbor")).unwrap().len();
        let fs = w.path("bundle.ext4");
        run(Command::new("mkfs.ext4")
            .args(["-q", "-L", "arbor-bundle", "-d"])
            .arg(&b)
            .arg(&fs)
            .arg(format!("{}k", size / 1024 + 16 * 1024)));
        extra = Some(fs);
    }
    let mut vm = Vm::start(t, &ns, &uboot, &disk, extra.as_deref(), &log);
    let (status, _) = vm.booted();
    assert_eq!(booted_commit(&status), v1, "{status}");
    let (rc, _) = vm.sh("test -e /usr/share/arbor-sample-version", VERB);
    assert_ne!(rc, 0, "v1 has no version file");
    if bundle {
        let v3 = w.commits[2].clone();
        // No network needed: the server is told to forget what it saw, and must see nothing.
        server.take();
        vm.ok(
            "mkdir -p /run/bundle && mount -t ext4 -o ro $(findfs LABEL=arbor-bundle) /run/bundle",
            VERB,
        );
        vm.ok("arbor upgrade --bundle /run/bundle/v3.arbor", VERB);
        assert_eq!(
            server.take(),
            Vec::<String>::new(),
            "a bundle upgrade went to the server"
        );
        vm.reboot();
        let mut vm = Vm::start(t, &ns, &uboot, &disk, extra.as_deref(), &log);
        let (status, _) = vm.booted();
        assert_eq!(booted_commit(&status), v3, "{status}");
        assert_eq!(vm.ok("cat /usr/share/arbor-sample-version", VERB).trim(), "v3");
    }
    eprintln!(
        "{}: first boot {boot_secs:.0} s, arbor upgrade inside the VM {upgrade_secs:.0} s, whole test {:.0} s",
        t.board,
        started.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "needs root (network namespace, arbor image) and `make cross` (arbor for the board)"]
fn aarch64_upgrades_itself_inside_the_vm_rolls_back_and_applies_a_bundle_from_a_disk() {
    upgrade_and_roll_back_inside_the_vm(&AARCH64, true);
}

#[test]
#[ignore = "needs root (network namespace, arbor image) and `make cross` (arbor for the board)"]
fn armv7_upgrades_itself_inside_the_vm_and_rolls_back() {
    upgrade_and_roll_back_inside_the_vm(&ARMV7, false);
}
