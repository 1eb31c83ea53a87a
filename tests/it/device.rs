//! The device client on real images: `arbor image` v1 → attach it with loop
//! devices and mount its partitions → `arbor upgrade --sysroot` from a real
//! HTTP server on 127.0.0.1 serving `arbor publish` output → boot it in qemu
//! → `arbor rollback` → boot again. Refused updates leave every byte of the
//! sysroot's state as it was.

use crate::common::{self, Deadline as _, http};

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{arbor, ok_json, run};
use sha2::Digest as _;

pub(crate) const REF: &str = "arbor/aarch64/sample-minimal";
/// v1's commit time; v2 is a day later, the downgrade a day earlier.
const EPOCH: u64 = 1_704_067_200;

/// Composes, signs and publishes v1 and v2 of the sample tree, and images v1
/// for each board once, pointing at the server that serves them.
pub(crate) struct World {
    dir: tempfile::TempDir,
    server: http::Server,
    pub(crate) v1: String,
    pub(crate) v2: String,
}

pub(crate) fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        common::sample_repo();
        let dir = common::shared_tempdir();
        let d = dir.path();
        // v2 adds a package and three files of 900 kB: a delta with real
        // content, in several parts.
        let tf1 = treefiles(d, "tf1", |t| t);
        let tf2 = treefiles(d, "tf2", |t| {
            t.replace("  - busybox\n", "  - busybox strace\n") + "postprocess-script: v2.sh\n"
        });
        std::fs::write(
            d.join("tf2/v2.sh"),
            "#!/usr/sbin/busybox sh\nbb=/usr/sbin/busybox\n$bb mkdir -p /usr/share/arbor-v2\n\
             for i in 1 2 3; do $bb head -c 900000 /dev/urandom > /usr/share/arbor-v2/blob$i; done\n",
        )
        .unwrap();
        let v1 = compose(d, &tf1, "repo", EPOCH);
        run(arbor().arg("keygen").arg("-o").arg(d.join("key")));
        run(arbor().args(["keygen", "-o"]).arg(d.join("other-key")));
        sign_and_publish(d, "repo", "key", "pub");
        let server = http::Server::start(d.join("pub"));
        for board in ["qemu-virt-aarch64", "rpi3", "rpi4"] {
            run(arbor()
                .args(["image", "--ref", REF, "--board", board, "--repo"])
                .arg(d.join("repo"))
                .arg("-o")
                .arg(d.join(format!("{board}.img")))
                .args(["--remote", &server.url, "--keys"])
                .arg(d.join("key.pub")));
        }
        let v2 = compose(d, &tf2, "repo", EPOCH + 86_400);
        sign_and_publish(d, "repo", "key", "pub");
        World { dir, server, v1, v2 }
    })
}

impl World {
    pub(crate) fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

/// Copies of the shipped treefiles in `d/name`, the top one edited by `edit`,
/// with a repo file pointing at the sample repository.
pub(crate) fn treefiles(d: &Path, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    treefiles_with(d, name, |file, text| {
        if file == "sample-minimal.yaml" {
            edit(text)
        } else {
            text
        }
    })
}

/// [`treefiles`], with `edit` given every file's name and text.
fn treefiles_with(d: &Path, name: &str, edit: impl Fn(&str, String) -> String) -> PathBuf {
    let out = d.join(name);
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(common::root().join("treefiles")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let text = edit(
                p.file_name().unwrap().to_str().unwrap(),
                std::fs::read_to_string(&p).unwrap(),
            );
            std::fs::write(out.join(p.file_name().unwrap()), text).unwrap();
        }
    }
    std::fs::write(
        out.join("sample.repo"),
        format!(
            "[arbor-sample]\nname=sample\nbaseurl={}\ngpgcheck=0\n",
            common::sample_url()
        ),
    )
    .unwrap();
    out.join("sample-minimal.yaml")
}

/// Composes `treefile` into `d/repo` with the given commit time; the commit.
pub(crate) fn compose(d: &Path, treefile: &Path, repo: &str, epoch: u64) -> String {
    compose_arch(d, treefile, repo, epoch, "aarch64")
}

fn compose_arch(d: &Path, treefile: &Path, repo: &str, epoch: u64, arch: &str) -> String {
    let out = arbor()
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["compose", "tree", "--arch", arch, "--json", "--repo"])
        .arg(d.join(repo))
        .arg("--cache-dir")
        .arg(d.join("cache"))
        .arg(treefile)
        .timed_output()
        .unwrap();
    ok_json(&out)["commit"].as_str().unwrap().to_string()
}

pub(crate) fn sign_and_publish(d: &Path, repo: &str, key: &str, public: &str) {
    run(arbor()
        .args(["sign", "--repo"])
        .arg(d.join(repo))
        .arg("--key")
        .arg(d.join(key))
        .arg(REF));
    run(arbor()
        .args(["publish", "--repo"])
        .arg(d.join(repo))
        .arg("--to")
        .arg(d.join(public))
        .arg("--sign-key")
        .arg(d.join(key))
        // Small parts, as for a flaky link: an interrupted pull keeps the parts it has.
        .args(["--max-part-size", "1"]));
}

/// An image's partitions attached to loop devices and mounted: root at the
/// top, /boot at boot/, the firmware partition (if any) at boot/firmware.
pub(crate) struct Mounted {
    pub(crate) top: PathBuf,
    /// The firmware partition's loop device when the kernel cannot mount it
    /// (arbor then edits it in place: `--firmware-partition`).
    pub(crate) firmware: Option<String>,
    /// Mount points, with the loop device mounted there.
    mounts: Vec<(PathBuf, String)>,
    loops: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Mounted {
    pub(crate) fn new(image: &Path) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("sysroot");
        std::fs::create_dir(&top).unwrap();
        let table: serde_json::Value = serde_json::from_str(&run(Command::new("sfdisk").arg("-J").arg(image))).unwrap();
        let mut m = Mounted {
            top: top.clone(),
            firmware: None,
            mounts: Vec::new(),
            loops: Vec::new(),
            _dir: dir,
        };
        let mut by_label = std::collections::BTreeMap::new();
        for p in table["partitiontable"]["partitions"].as_array().unwrap() {
            let (start, size) = (p["start"].as_u64().unwrap() * 512, p["size"].as_u64().unwrap() * 512);
            let dev = run(Command::new("losetup")
                .args([
                    "-f",
                    "--show",
                    "-o",
                    &start.to_string(),
                    "--sizelimit",
                    &size.to_string(),
                ])
                .arg(image))
            .trim()
            .to_string();
            m.loops.push(dev.clone());
            let label = run(Command::new("blkid").args(["-p", "-s", "LABEL", "-o", "value", &dev]))
                .trim()
                .to_string();
            by_label.insert(label, dev);
        }
        // blkid -p probes the device: its cache can still hold the label of
        // another image's partition that had this loop device seconds ago.
        assert!(
            by_label.contains_key("root") && by_label.contains_key("boot"),
            "no root and boot partitions found by label in {}: {by_label:?}",
            image.display()
        );
        // This VM's kernel has no vfat driver: the firmware partition is then
        // left unmounted and given to arbor as a device to edit in place.
        let vfat = std::fs::read_to_string("/proc/filesystems")
            .unwrap()
            .contains("\tvfat\n");
        for (label, at) in [("root", ""), ("boot", "boot"), ("RPI-FW", "boot/firmware")] {
            if label == "RPI-FW" && !vfat {
                m.firmware = by_label.get(label).cloned();
                if m.firmware.is_some() {
                    eprintln!("note: the kernel has no vfat: arbor edits the firmware partition unmounted");
                }
                continue;
            }
            if let Some(dev) = by_label.get(label) {
                let target = top.join(at);
                std::fs::create_dir_all(&target).unwrap();
                run(Command::new("mount").arg(dev).arg(&target));
                m.mounts.push((target, dev.clone()));
            }
        }
        m
    }

    pub(crate) fn arg(&self) -> &Path {
        &self.top
    }

    /// Unmounts every partition, checks and repairs each (`e2fsck -fy`), and
    /// mounts them again, as after a disk that failed came back; e2fsck's reports.
    pub(crate) fn check_and_remount(&self) -> String {
        for (t, _) in self.mounts.iter().rev() {
            run(Command::new("umount").arg(t));
        }
        let mut report = String::new();
        for (_, dev) in &self.mounts {
            report += &common::loopfs::e2fsck(dev);
        }
        for (t, dev) in &self.mounts {
            run(Command::new("mount").arg(dev).arg(t));
        }
        report
    }

    /// A file of the firmware partition, through the mount or with mtools.
    fn firmware_file(&self, name: &str) -> Option<Vec<u8>> {
        match &self.firmware {
            Some(dev) => {
                let out = Command::new("mtype")
                    .args(["-i", dev, &format!("::{name}")])
                    .env("MTOOLS_SKIP_CHECK", "1")
                    .timed_output()
                    .unwrap();
                out.status.success().then_some(out.stdout)
            }
            None => std::fs::read(self.top.join("boot/firmware").join(name)).ok(),
        }
    }

    /// Replaces a file of the firmware partition, through the mount or with mtools.
    fn put_firmware_file(&self, name: &str, content: &[u8]) {
        match &self.firmware {
            Some(dev) => {
                let f = self._dir.path().join("put");
                std::fs::write(&f, content).unwrap();
                run(Command::new("mcopy")
                    .args(["-o", "-i", dev])
                    .arg(&f)
                    .arg(format!("::{name}"))
                    .env("MTOOLS_SKIP_CHECK", "1"));
            }
            None => std::fs::write(self.top.join("boot/firmware").join(name), content).unwrap(),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        for (t, _) in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg(t).timed_status();
        }
        for l in &self.loops {
            let _ = Command::new("losetup").arg("-d").arg(l).timed_status();
        }
    }
}

/// A copy of the board's v1 image (sparse, so it is quick) and its manifest.
pub(crate) fn image_copy(board: &str, dir: &Path) -> PathBuf {
    let w = world();
    let img = dir.join(format!("{board}.img"));
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(w.path(&format!("{board}.img")))
        .arg(&img));
    std::fs::copy(
        w.path(&format!("{board}.img.json")),
        dir.join(format!("{board}.img.json")),
    )
    .unwrap();
    img
}

/// `arbor VERB --sysroot MNT ARGS…`.
pub(crate) fn device(verb: &[&str], m: &Mounted, extra: &[&str]) -> Output {
    let mut cmd = arbor();
    cmd.args(verb).arg("--sysroot").arg(m.arg());
    if let Some(dev) = &m.firmware {
        cmd.args(["--firmware-partition", dev]);
    }
    cmd.args(extra).timed_output().unwrap()
}

pub(crate) fn status(m: &Mounted) -> serde_json::Value {
    ok_json(&device(&["status", "--json"], m, &[]))
}

pub(crate) fn commits(s: &serde_json::Value) -> Vec<String> {
    s["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["commit"].as_str().unwrap().to_string())
        .collect()
}

/// `ostree admin status` agrees with `arbor status --json`, and fsck is clean.
pub(crate) fn agrees_with_ostree(m: &Mounted) {
    let s = status(m);
    let text = run(Command::new("ostree")
        .args(["admin", "status", "--sysroot"])
        .arg(m.arg()));
    let theirs: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim_start_matches(['*', ' ']);
            let (_, rest) = l.split_once(' ')?;
            let (c, _) = rest.split_once('.')?;
            (c.len() == 64).then(|| c.to_string())
        })
        .collect();
    assert_eq!(commits(&s), theirs, "{text}\n{s}");
    let fsck = run(Command::new("ostree")
        .arg("fsck")
        .arg("--repo")
        .arg(m.top.join("ostree/repo")));
    assert!(fsck.contains("no errors found"), "{fsck}");
}

/// Boots the image and returns the marker line (the commit it booted).
fn boot(img: &Path, expect: &str) -> String {
    let out = arbor()
        .args(["image", "boot-test", "--json", "--expect-commit", expect])
        .arg(img)
        .timed_output()
        .unwrap();
    ok_json(&out)["line"].as_str().unwrap().to_string()
}

fn upgrade_boot_rollback_boot(board: &str) {
    let w = world();
    let t = tempfile::tempdir().unwrap();
    let img = image_copy(board, t.path());
    {
        let m = Mounted::new(&img);
        let s = status(&m);
        assert_eq!(commits(&s), std::slice::from_ref(&w.v1));
        assert_eq!(s["board"], board);
        assert_eq!(s["deployments"][0]["signature"]["valid"], true, "{s}");
        agrees_with_ostree(&m);

        let check = device(&["upgrade", "--check", "--json"], &m, &[]);
        let v = ok_json(&check);
        assert_eq!(v["result"], "available", "{v}");
        assert_eq!(v["commit"], w.v2.as_str());
        let size = v["download_bytes"].as_u64().unwrap();
        assert!(size > 0, "{v}");
        w.server.take();
        let up = device(&["upgrade", "--json"], &m, &[]);
        let out = String::from_utf8_lossy(&up.stdout).to_string();
        assert!(up.status.success(), "{out}{}", String::from_utf8_lossy(&up.stderr));
        let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(last["result"], "deployed", "{out}");
        assert!(out.contains("\"event\":\"progress\""), "JSON progress lines: {out}");
        let requests = w.server.take();
        assert!(
            requests.iter().any(|r| r.contains("/deltas/")),
            "the upgrade used the static delta: {requests:?}"
        );
        assert_eq!(commits(&status(&m)), [w.v2.clone(), w.v1.clone()]);
        agrees_with_ostree(&m);
        let again = device(&["upgrade", "--check"], &m, &[]);
        assert_eq!(again.status.code(), Some(77), "no update: exit 77");
        if board == "rpi3" {
            let cmdline = m
                .firmware_file("cmdline.txt")
                .expect("cmdline.txt on the firmware partition");
            let cmdline = String::from_utf8(cmdline).unwrap();
            // The Pi counts boots: boot.scr on the FAT partition boots the new
            // default on trial, with the state file armed with the board's tries.
            let scr = m.firmware_file("boot.scr").expect("boot.scr on the firmware partition");
            let script = String::from_utf8(arbor::bootloader::uboot::script_text(&scr).unwrap().to_vec()).unwrap();
            let default = script
                .lines()
                .find(|l| l.trim_start().starts_with("setenv bootargs"))
                .unwrap();
            let ostree_arg = cmdline.split_whitespace().find(|a| a.starts_with("ostree=")).unwrap();
            assert!(
                default.contains(ostree_arg),
                "cmdline.txt follows the new default entry: {cmdline} vs {default}"
            );
            let state = m
                .firmware_file("arbor.env")
                .expect("arbor.env on the firmware partition");
            let vars = arbor::bootloader::uboot::parse_env_blob(&state).expect("arbor.env passes its CRC");
            let trial = arbor::bootloader::deployment_id(ostree_arg.trim_start_matches("ostree="));
            assert_eq!(vars["arbor_trial"], trial, "{vars:?}");
            assert_eq!(vars["arbor_left"], "3", "{vars:?}");
            assert!(script.contains(&format!("if test -n \"{trial}\"; then")), "{script}");
            let s = status(&m);
            assert_eq!(s["boot_counting"]["trial"], w.v2.as_str(), "{s}");
            assert_eq!(s["boot_counting"]["tries_left"], 3, "{s}");
            let config = String::from_utf8(m.firmware_file("config.txt").unwrap()).unwrap();
            assert!(config.contains("kernel=u-boot.bin"), "{config}");
            if let Some(dev) = &m.firmware {
                run(Command::new("fsck.fat").args(["-n", dev]));
            }
        }
    }
    assert!(boot(&img, &w.v2).contains(&format!("commit={}", w.v2)));
    {
        let m = Mounted::new(&img);
        let r = device(&["rollback", "--json"], &m, &[]);
        assert_eq!(ok_json(&r)["commit"], w.v1.as_str());
        assert_eq!(commits(&status(&m)), [w.v1.clone(), w.v2.clone()]);
        agrees_with_ostree(&m);
    }
    assert!(boot(&img, &w.v1).contains(&format!("commit={}", w.v1)));
}

#[test]
#[ignore = "needs root: loop devices and mounts (and arbor image)"]
fn qemu_virt_upgrades_over_http_boots_the_new_commit_and_rolls_back() {
    common::need_root();
    upgrade_boot_rollback_boot("qemu-virt-aarch64");
}

#[test]
#[ignore = "needs root: loop devices and mounts (and arbor image)"]
fn rpi3_upgrades_with_its_fat_firmware_partition_and_rolls_back() {
    common::need_root();
    upgrade_boot_rollback_boot("rpi3");
}

/// Everything a refused update must leave as it was: deployments, refs, and
/// every file of /boot (and the firmware partition), hashed.
/// rpi4 boots the DT its firmware loads (`dtb_from = "firmware"`): an upgrade
/// puts the default deployment's DTB on the firmware partition, so a stale
/// one (an older kernel's) is replaced by the one matching the kernel that boots.
#[test]
#[ignore = "needs root: loop devices and mounts"]
fn rpi4s_firmware_partition_dtb_follows_the_default_deployment() {
    common::need_root();
    let w = world();
    let t = tempfile::tempdir().unwrap();
    let img = image_copy("rpi4", t.path());
    let m = Mounted::new(&img);
    let name = "bcm2711-rpi-4-b.dtb";
    let built = m.firmware_file(name).expect("the image's firmware DTB");
    m.put_firmware_file(name, b"an older kernel's device tree");
    let up = device(&["upgrade", "--json"], &m, &[]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    assert_eq!(commits(&status(&m)), [w.v2.clone(), w.v1.clone()]);
    // The default entry's fdtdir in /boot (ostree copied the kernel's dtb/ there).
    let entries = arbor::bootloader::read_entries(&m.top.join("boot")).unwrap();
    let dir = entries[0].fdtdir.as_deref().expect("an fdtdir in the default entry");
    let deployed = std::fs::read(
        m.top
            .join("boot")
            .join(dir.trim_start_matches('/'))
            .join("broadcom")
            .join(name),
    )
    .unwrap();
    let now = m.firmware_file(name).unwrap();
    assert!(
        now == deployed,
        "the firmware partition's DTB is not the default deployment's"
    );
    assert!(now == built, "same kernel in v1 and v2: the image's DTB again");
}

/// The deployments, refs and boot files: what a refused update leaves unchanged.
pub(crate) fn fingerprint(m: &Mounted) -> String {
    let mut out = run(Command::new("ostree")
        .args(["admin", "status", "--sysroot"])
        .arg(m.arg()));
    out += &run(Command::new("ostree")
        .arg("refs")
        .arg("--repo")
        .arg(m.top.join("ostree/repo")));
    out += &run(Command::new("ostree")
        .args(["refs", "origin"])
        .arg("--repo")
        .arg(m.top.join("ostree/repo")));
    if let Some(dev) = &m.firmware {
        let bytes = std::fs::read(dev).unwrap();
        out += &format!("{dev} {}\n", hex::encode(sha2::Sha256::digest(&bytes)));
    }
    let mut files = Vec::new();
    walk(&m.top.join("boot"), &mut files);
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        out += &format!("{} {}\n", f.display(), hex::encode(sha2::Sha256::digest(&bytes)));
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            walk(&p, out);
        } else if meta.is_file() {
            out.push(p);
        }
    }
}

/// Serves a copy of the published repository, changed by `tamper`, and
/// points the device's remote at it; the upgrade must fail saying `expect`.
fn refused(m: &Mounted, name: &str, tamper: impl FnOnce(&Path), extra: &[&str], expect: &str) {
    let w = world();
    let public = w.path(&format!("pub-{name}"));
    let _ = std::fs::remove_dir_all(&public);
    run(Command::new("cp").arg("-a").arg(w.path("pub")).arg(&public));
    tamper(&public);
    refused_from(m, name, &public, extra, expect);
}

/// The upgrade from a server publishing `public` fails saying `expect`, and
/// changes nothing.
fn refused_from(m: &Mounted, name: &str, public: &Path, extra: &[&str], expect: &str) {
    let server = http::Server::start(public.to_path_buf());
    run(arbor()
        .args(["remote", "set-url", "origin", &server.url, "--sysroot"])
        .arg(m.arg()));
    let before = fingerprint(m);
    let out = device(&["upgrade"], m, extra);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{name}: the upgrade was accepted");
    assert!(err.contains(expect), "{name}: expected {expect:?} in: {err}");
    assert_eq!(before, fingerprint(m), "{name}: the sysroot changed");
    let fsck = run(Command::new("ostree")
        .arg("fsck")
        .arg("--repo")
        .arg(m.top.join("ostree/repo")));
    assert!(fsck.contains("no errors found"), "{name}: {fsck}");
}

/// The path of a loose object in an archive repository.
fn object(public: &Path, csum: &str, ext: &str) -> PathBuf {
    public
        .join("objects")
        .join(&csum[..2])
        .join(format!("{}.{ext}", &csum[2..]))
}

#[test]
#[ignore = "needs root: loop devices and mounts (and arbor image)"]
fn refused_updates_leave_deployments_refs_and_boot_files_byte_identical() {
    common::need_root();
    let w = world();
    let t = tempfile::tempdir().unwrap();
    let img = image_copy("qemu-virt-aarch64", t.path());
    let m = Mounted::new(&img);
    let v2 = w.v2.clone();
    let v1 = w.v1.clone();

    refused(
        &m,
        "unsigned",
        |p| std::fs::remove_file(object(p, &v2, "commitmeta")).unwrap(),
        &[],
        "not signed",
    );
    refused(
        &m,
        "other-bytes",
        |p| {
            std::fs::copy(object(p, &v1, "commitmeta"), object(p, &v2, "commitmeta")).unwrap();
        },
        &[],
        "verifies",
    );
    // A commit signed by a key the device does not trust.
    let other = w.path("repo-other-key");
    let _ = std::fs::remove_dir_all(&other);
    run(Command::new("cp").arg("-a").arg(w.path("repo")).arg(&other));
    std::fs::remove_file(
        other
            .join("objects")
            .join(&v2[..2])
            .join(format!("{}.commitmeta", &v2[2..])),
    )
    .unwrap();
    run(arbor()
        .args(["sign", "--repo"])
        .arg(&other)
        .arg("--key")
        .arg(w.path("other-key"))
        .arg(&v2));
    let other_meta = other
        .join("objects")
        .join(&v2[..2])
        .join(format!("{}.commitmeta", &v2[2..]));
    refused(
        &m,
        "unknown-key",
        |p| {
            std::fs::copy(&other_meta, object(p, &v2, "commitmeta")).unwrap();
        },
        &[],
        "verifies",
    );
    refused(
        &m,
        "tampered-summary",
        |p| {
            let s = p.join("summary");
            let mut b = std::fs::read(&s).unwrap();
            let n = b.len() / 2;
            b[n] ^= 1;
            std::fs::write(&s, b).unwrap();
        },
        &[],
        "summary is refused",
    );
    refused(
        &m,
        "tampered-summary-sig",
        |p| {
            let s = p.join("summary.sig");
            let mut b = std::fs::read(&s).unwrap();
            let n = b.len() - 10;
            b[n] ^= 1;
            std::fs::write(&s, b).unwrap();
        },
        &[],
        "summary is refused",
    );
    // A server that corrupts the delta: libostree's checksums catch it.
    refused(
        &m,
        "corrupt-delta-part",
        |p| {
            let mut parts = Vec::new();
            walk(&p.join("deltas"), &mut parts);
            let part = parts.iter().find(|f| f.ends_with("0")).unwrap();
            let mut b = std::fs::read(part).unwrap();
            let n = b.len() / 2;
            b[n] ^= 0x55;
            std::fs::write(part, b).unwrap();
        },
        &[],
        "pulling",
    );
    refused(
        &m,
        "truncated-delta-part",
        |p| {
            let mut parts = Vec::new();
            walk(&p.join("deltas"), &mut parts);
            let part = parts.iter().find(|f| f.ends_with("0")).unwrap();
            let b = std::fs::read(part).unwrap();
            std::fs::write(part, &b[..b.len() / 2]).unwrap();
        },
        &[],
        "pulling",
    );
    // Revoked: the device's /etc/arbor/revoked lists the signing key.
    let s = status(&m);
    let deploy_dir = m.top.join("ostree/deploy/arbor/deploy").join(format!(
        "{}.{}",
        s["deployments"][0]["commit"].as_str().unwrap(),
        s["deployments"][0]["serial"]
    ));
    let revoked = deploy_dir.join("etc/arbor/revoked");
    std::fs::create_dir_all(&revoked).unwrap();
    std::fs::copy(w.path("key.pub"), revoked.join("key.pub")).unwrap();
    refused(&m, "revoked", |_| {}, &[], "revoked");
    std::fs::remove_dir_all(&revoked).unwrap();

    // After every refusal, the real server's update still applies.
    run(arbor()
        .args(["remote", "set-url", "origin", &w.server.url, "--sysroot"])
        .arg(m.arg()));
    let up = device(&["upgrade"], &m, &[]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    assert_eq!(commits(&status(&m)), [v2, v1]);
    agrees_with_ostree(&m);
}

/// A published repository that has v2 but no static delta to it (v1 is not
/// in it): what a device several versions behind meets.
fn publish_without_delta(name: &str) -> PathBuf {
    let w = world();
    let repo = w.path(&format!("repo-{name}"));
    let public = w.path(&format!("pub-{name}"));
    for d in [&repo, &public] {
        let _ = std::fs::remove_dir_all(d);
    }
    run(Command::new("ostree")
        .args(["init", "--mode=archive", "--repo"])
        .arg(&repo));
    run(Command::new("ostree")
        .args(["pull-local", "--depth=0", "--repo"])
        .arg(&repo)
        .arg(w.path("repo"))
        .arg(REF));
    sign_and_publish(w.dir.path(), &format!("repo-{name}"), "key", &format!("pub-{name}"));
    assert!(
        !public.join("deltas").exists() || std::fs::read_dir(public.join("deltas")).unwrap().next().is_none(),
        "no delta was meant to be published"
    );
    public
}

#[test]
#[ignore = "needs root: loop devices and mounts (and arbor image)"]
fn without_a_delta_check_gives_the_exact_object_bytes_and_a_corrupt_object_is_refused() {
    common::need_root();
    let w = world();
    let t = tempfile::tempdir().unwrap();
    let img = image_copy("qemu-virt-aarch64", t.path());
    let m = Mounted::new(&img);
    let public = publish_without_delta("nodelta");

    // A server that corrupts one file object of v2 the device lacks (the
    // biggest: one of v2's blobs).
    let corrupt = w.path("pub-corrupt-object");
    let _ = std::fs::remove_dir_all(&corrupt);
    run(Command::new("cp").arg("-a").arg(&public).arg(&corrupt));
    let mut objects = Vec::new();
    walk(&corrupt.join("objects"), &mut objects);
    let on_device = |p: &PathBuf| {
        let dir = p.parent().unwrap().file_name().unwrap();
        let stem = p.file_stem().unwrap().to_str().unwrap();
        m.top
            .join("ostree/repo/objects")
            .join(dir)
            .join(format!("{stem}.file"))
            .exists()
    };
    let biggest = objects
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "filez") && !on_device(p))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut b = std::fs::read(biggest).unwrap();
    let n = b.len() / 2;
    b[n] ^= 0x55;
    std::fs::write(biggest, b).unwrap();
    refused_from(&m, "corrupt-object", &corrupt, &[], "pulling");

    let server = http::Server::start(public.clone());
    run(arbor()
        .args(["remote", "set-url", "origin", &server.url, "--sysroot"])
        .arg(m.arg()));
    server.take();
    let check = ok_json(&device(&["upgrade", "--check", "--json"], &m, &[]));
    assert_eq!(check["result"], "available", "{check}");
    let predicted = check["download_bytes"].as_u64().unwrap();
    // What --check fetched (the commit, and the trees it walked and kept) and what it sized.
    let size = |r: &String| std::fs::metadata(public.join(r.trim_start_matches('/'))).unwrap().len();
    let checked = server.take();
    let trees: u64 = checked.iter().filter(|r| r.ends_with(".dirtree")).map(size).sum();
    assert!(
        checked.iter().any(|r| r.starts_with("HEAD ") && r.ends_with(".filez")),
        "{checked:?}"
    );
    let up = device(&["upgrade", "--json"], &m, &[]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let requests = server.take();
    // libostree asks for a delta (404) before it falls back to objects.
    let served_deltas: Vec<&String> = requests
        .iter()
        .filter(|r| r.contains("/deltas/") && public.join(r.trim_start_matches('/')).exists())
        .collect();
    assert!(served_deltas.is_empty(), "{served_deltas:?}");
    let served: u64 = requests
        .iter()
        .filter(|r| !r.starts_with("HEAD ") && [".filez", ".dirtree", ".dirmeta"].iter().any(|x| r.ends_with(x)))
        .map(size)
        .sum::<u64>()
        + trees;
    // The refused pull kept what arrived before the corrupt object; at least
    // that object (a 900 kB blob) is left to fetch.
    assert!(served > 800_000, "v2's blobs came as objects: {served} bytes");
    assert_eq!(
        predicted, served,
        "--check said {predicted} bytes; it and the upgrade fetched {served}"
    );
    assert_eq!(commits(&status(&m)), [w.v2.clone(), w.v1.clone()]);
    agrees_with_ostree(&m);

    // A pinned deployment stays when a newer one would push it out.
    let p = ok_json(&device(&["pin", "1", "--json"], &m, &[]));
    assert_eq!(
        (p["commit"].as_str().unwrap(), p["pinned"].as_bool()),
        (w.v1.as_str(), Some(true))
    );
    run(arbor()
        .args(["remote", "set-url", "origin", &w.server.url, "--sysroot"])
        .arg(m.arg()));
    let d = device(&["deploy", &w.v1, "--json"], &m, &[]);
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    let s = status(&m);
    assert_eq!(commits(&s), [w.v1.clone(), w.v2.clone(), w.v1.clone()], "{s}");
    assert_eq!(s["deployments"][2]["pinned"], true, "{s}");
    assert_eq!(s["deployments"][0]["pinned"], false, "{s}");
    agrees_with_ostree(&m);
    let p = ok_json(&device(&["pin", "2", "--unpin", "--json"], &m, &[]));
    assert_eq!(p["pinned"], false);
    assert_eq!(status(&m)["deployments"][2]["pinned"], false);
    let e = common::err(&device(&["pin", "7"], &m, &[]));
    assert!(e.contains("no deployment 7"), "{e}");
}

#[test]
fn a_path_that_is_not_a_sysroot_is_a_clear_error() {
    let e = common::err(
        &arbor()
            .args(["status", "--sysroot", "/nonexistent/card"])
            .timed_output()
            .unwrap(),
    );
    assert!(
        e.contains("/nonexistent/card") && e.contains("not an OSTree sysroot"),
        "{e}"
    );
}

#[test]
#[ignore = "needs root: loop devices and mounts (and arbor image)"]
fn one_operation_at_a_time_and_clear_errors_for_a_bad_sysroot() {
    common::need_root();
    let t = tempfile::tempdir().unwrap();
    let img = image_copy("qemu-virt-aarch64", t.path());
    let m = Mounted::new(&img);
    // Hold the device lock as another arbor would.
    let lock = m.top.join("ostree/arbor/lock");
    let mut holder = Command::new("flock")
        .arg(&lock)
        .arg("-c")
        .arg(format!(
            "echo 'pid 4242 (upgrade)' > '{}'; exec sleep 30",
            lock.display()
        ))
        .process_group(0)
        .timed_spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let e = common::err(&device(&["rollback"], &m, &[]));
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(holder.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = holder.wait();
    assert!(
        e.contains("another arbor operation holds") && e.contains("pid 4242 (upgrade)"),
        "{e}"
    );
    let e = common::err(&device(&["rollback"], &m, &[]));
    assert!(e.contains("nothing to roll back to"), "{e}");
}

/// What the faulty server does to requests whose path contains its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Serve normally.
    None,
    /// Send half the body, then close the connection.
    Drop,
    /// Send half the body, then stop sending (and keep the connection open).
    Stall,
    /// Answer with this status and no body.
    Status(u16),
    /// Claim and send only half the body: a wrong length.
    Short,
}

/// A loopback file server that injects one fault and counts the bytes it sent.
struct FaultyServer {
    url: String,
    fault: std::sync::Arc<std::sync::Mutex<(Fault, String)>>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Paths that must have been served whole before the fault strikes, and
    /// the paths served whole so far.
    order: std::sync::Arc<std::sync::Mutex<(Vec<String>, Vec<String>)>>,
}

impl FaultyServer {
    fn start(root: PathBuf) -> FaultyServer {
        use std::io::{BufRead as _, BufReader, Write as _};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let fault = std::sync::Arc::new(std::sync::Mutex::new((Fault::None, String::new())));
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let order = std::sync::Arc::new(std::sync::Mutex::new((Vec::<String>::new(), Vec::<String>::new())));
        let (f2, s2, o2) = (fault.clone(), sent.clone(), order.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (root, fault, sent, order) = (root.clone(), f2.clone(), s2.clone(), o2.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut first = String::new();
                    if reader.read_line(&mut first).is_err() {
                        return;
                    }
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                    }
                    let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let Ok(body) = std::fs::read(root.join(path.trim_start_matches('/'))) else {
                        let _ = stream
                            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        return;
                    };
                    let (f, target) = fault.lock().unwrap().clone();
                    let f = if !target.is_empty() && path.contains(&target) {
                        f
                    } else {
                        Fault::None
                    };
                    if f != Fault::None {
                        // The other parts arrive (and are applied) first, so a
                        // rerun has something to resume from.
                        let started = std::time::Instant::now();
                        while started.elapsed() < std::time::Duration::from_secs(30) {
                            let o = order.lock().unwrap();
                            if o.0.iter().all(|w| o.1.iter().any(|p| p.ends_with(w.as_str()))) {
                                break;
                            }
                            drop(o);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                        }
                        std::thread::sleep(std::time::Duration::from_secs(2));
                    }
                    let half = body.len() / 2;
                    let (status, claimed, send) = match f {
                        Fault::None => ("200 OK".to_string(), body.len(), body.len()),
                        Fault::Drop | Fault::Stall => ("200 OK".to_string(), body.len(), half),
                        Fault::Short => ("200 OK".to_string(), half, half),
                        Fault::Status(code) => (format!("{code} Fault"), 0, 0),
                    };
                    let head = format!("HTTP/1.1 {status}\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n");
                    if stream
                        .write_all(head.as_bytes())
                        .and_then(|_| stream.write_all(&body[..send]))
                        .is_ok()
                    {
                        sent.fetch_add(send as u64, Ordering::Relaxed);
                        if send == body.len() {
                            order.lock().unwrap().1.push(path.clone());
                        }
                    }
                    let _ = stream.flush();
                    if f == Fault::Stall {
                        std::thread::sleep(std::time::Duration::from_secs(120));
                    }
                });
            }
        });
        FaultyServer {
            url,
            fault,
            sent,
            order,
        }
    }

    fn set(&self, f: Fault, target: &str, after: &[String]) {
        *self.fault.lock().unwrap() = (f, target.to_string());
        *self.order.lock().unwrap() = (after.to_vec(), Vec::new());
    }

    fn take_sent(&self) -> u64 {
        self.sent.swap(0, std::sync::atomic::Ordering::Relaxed)
    }
}

#[test]
#[ignore = "needs root: loop devices and mounts (and arbor image)"]
fn network_faults_name_the_url_and_a_rerun_fetches_less_than_the_whole_update() {
    common::need_root();
    let w = world();
    let mut delta_files = Vec::new();
    walk(&w.path("pub/deltas"), &mut delta_files);
    let parts: Vec<&PathBuf> = delta_files
        .iter()
        .filter(|p| p.file_name().unwrap().to_str().unwrap().parse::<u32>().is_ok())
        .collect();
    assert!(parts.len() >= 2, "the update has several delta parts: {delta_files:?}");
    let whole: u64 = delta_files.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    // The last part is the one that fails.
    let last = parts
        .iter()
        .max_by_key(|p| p.file_name().unwrap().to_str().unwrap().parse::<u32>().unwrap())
        .unwrap();
    let target = format!(
        "{}/{}",
        last.parent().unwrap().file_name().unwrap().to_str().unwrap(),
        last.file_name().unwrap().to_str().unwrap()
    );
    let others: Vec<String> = parts
        .iter()
        .filter(|p| **p != *last)
        .map(|p| {
            format!(
                "{}/{}",
                p.parent().unwrap().file_name().unwrap().to_str().unwrap(),
                p.file_name().unwrap().to_str().unwrap()
            )
        })
        .collect();
    let server = FaultyServer::start(w.path("pub"));
    for (fault, expect) in [
        (Fault::Drop, ""),
        (Fault::Stall, "no data arrived for 3 s"),
        (Fault::Status(500), ""),
        (Fault::Status(404), ""),
        (Fault::Short, ""),
    ] {
        let t = tempfile::tempdir().unwrap();
        let img = image_copy("qemu-virt-aarch64", t.path());
        let m = Mounted::new(&img);
        run(arbor()
            .args(["remote", "set-url", "origin", &server.url, "--sysroot"])
            .arg(m.arg()));
        server.set(fault, &target, &others);
        server.take_sent();
        let before = fingerprint(&m);
        let out = device(&["upgrade", "--stall-timeout", "3", "--retries", "0"], &m, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{fault:?}: the upgrade went through");
        assert!(err.contains(&server.url), "{fault:?}: the error names the URL: {err}");
        assert!(err.contains(expect), "{fault:?}: {expect:?} in {err}");
        assert_eq!(before, fingerprint(&m), "{fault:?}: a failed pull changed the sysroot");
        server.set(Fault::None, "", &[]);
        server.take_sent();
        let out = device(&["upgrade", "--json"], &m, &[]);
        assert!(
            out.status.success(),
            "{fault:?}: rerun: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let again = server.take_sent();
        assert!(
            again < whole,
            "{fault:?}: the rerun fetched {again} bytes, the whole delta is {whole}: it should resume"
        );
        assert_eq!(commits(&status(&m)), [w.v2.clone(), w.v1.clone()], "{fault:?}");
        agrees_with_ostree(&m);
    }
}

/// The commit the bootloader's default entry boots, after checking that the
/// entry is whole: its kernel and initramfs exist on /boot and its `ostree=`
/// argument leads to a deployment of that commit whose kernel they are.
fn booted_by_default(m: &Mounted) -> String {
    let conf = std::fs::read_to_string(m.top.join("boot/extlinux/extlinux.conf")).unwrap();
    let default = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("default "))
        .unwrap_or_else(|| panic!("no default entry: {conf}"))
        .trim()
        .to_string();
    let mut in_entry = false;
    let (mut kernel, mut initrd, mut append) = (None, None, None);
    for l in conf.lines().map(str::trim) {
        if let Some(label) = l.strip_prefix("label ") {
            in_entry = label.trim() == default;
        } else if in_entry {
            if let Some(k) = l.strip_prefix("kernel ") {
                kernel = Some(k.trim().to_string());
            } else if let Some(i) = l.strip_prefix("initrd ") {
                initrd = Some(i.trim().to_string());
            } else if let Some(a) = l.strip_prefix("append ") {
                append = Some(a.trim().to_string());
            }
        }
    }
    let (kernel, append) = (kernel.unwrap(), append.unwrap());
    for f in [Some(&kernel), initrd.as_ref()].into_iter().flatten() {
        let p = m.top.join("boot").join(f.trim_start_matches('/'));
        assert!(p.is_file(), "the default entry's {f} is missing: {conf}");
    }
    let arg = append
        .split_whitespace()
        .find_map(|a| a.strip_prefix("ostree="))
        .unwrap_or_else(|| panic!("no ostree= in {append}"));
    let dir = std::fs::canonicalize(m.top.join(arg.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("ostree={arg} does not resolve in the root filesystem ({e}): {conf}"));
    assert!(dir.is_dir(), "{dir:?}");
    let bootcsum = arg.split('/').nth(4).unwrap();
    assert!(
        kernel.contains(bootcsum),
        "the kernel {kernel} is not the deployment's ({bootcsum})"
    );
    let name = dir.file_name().unwrap().to_str().unwrap().to_string();
    name.split('.').next().unwrap().to_string()
}

/// A small seeded generator: the same seed gives the same kill moments.
pub(crate) fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

#[test]
#[ignore = "needs root: loop devices and mounts (and arbor image)"]
fn killed_at_every_stage_the_sysroot_boots_old_or_new_and_a_rerun_completes() {
    common::need_root();
    let w = world();
    let (v1, v2) = (w.v1.clone(), w.v2.clone());
    let check_after = |m: &Mounted, what: &str| {
        let b = booted_by_default(m);
        assert!(
            b == v1 || b == v2,
            "{what}: the default entry boots {b}, neither v1 nor v2"
        );
        agrees_with_ostree(m);
    };
    // Failpoints: every stage of upgrade, deploy and bootloader rendering.
    for fp in [
        "device::commit-pulled",
        "device::content-pulled",
        "device::deployed",
        "device::entries-written",
        "device::bootfile",
        "device::bootfiles-written",
    ] {
        let t = tempfile::tempdir().unwrap();
        let m = Mounted::new(&image_copy("qemu-virt-aarch64", t.path()));
        let out = arbor()
            .env("ARBOR_FAILPOINT", fp)
            .args(["upgrade", "--sysroot"])
            .arg(m.arg())
            .timed_output()
            .unwrap();
        assert!(!out.status.success(), "{fp}: the failpoint did not stop the upgrade");
        check_after(&m, fp);
        if fp == "device::deployed" {
            // A run killed inside libostree's freeze/thaw of /boot leaves it
            // frozen (the soak found it): the next verb thaws it.
            run(Command::new("fsfreeze").arg("-f").arg(m.top.join("boot")));
        }
        let out = device(&["upgrade"], &m, &[]);
        assert!(
            out.status.success(),
            "{fp}: rerun: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(booted_by_default(&m), v2, "{fp}: after the rerun");
        assert_eq!(commits(&status(&m))[0], v2, "{fp}");
        // Rollback, killed at its stages, then finished by the next verb.
        if [
            "device::entries-written",
            "device::bootfile",
            "device::bootfiles-written",
        ]
        .contains(&fp)
        {
            let out = arbor()
                .env("ARBOR_FAILPOINT", fp)
                .args(["rollback", "--sysroot"])
                .arg(m.arg())
                .timed_output()
                .unwrap();
            assert!(!out.status.success(), "{fp}: rollback went through");
            check_after(&m, &format!("rollback at {fp}"));
            let out = device(&["cleanup"], &m, &[]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(
                booted_by_default(&m),
                commits(&status(&m))[0],
                "{fp}: cleanup settles the boot files"
            );
        }
    }

    // SIGKILL at seeded random moments of an upgrade.
    let runs: u64 = std::env::var("ARBOR_KILL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut seed: u64 = std::env::var("ARBOR_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20261205);
    let timed = {
        let t = tempfile::tempdir().unwrap();
        let m = Mounted::new(&image_copy("qemu-virt-aarch64", t.path()));
        let started = std::time::Instant::now();
        run(arbor().args(["upgrade", "--sysroot"]).arg(m.arg()));
        started.elapsed()
    };
    let span = timed.as_millis().max(50) as u64;
    let (mut before_new, mut killed) = (0, 0);
    for i in 0..runs {
        let t = tempfile::tempdir().unwrap();
        let m = Mounted::new(&image_copy("qemu-virt-aarch64", t.path()));
        let delay = next(&mut seed) % span;
        let mut child = arbor()
            .args(["upgrade", "--sysroot"])
            .arg(m.arg())
            .timed_spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let what = format!("run {i}, killed after {delay} ms");
        check_after(&m, &what);
        if booted_by_default(&m) == v1 {
            before_new += 1;
        }
        let out = device(&["upgrade"], &m, &[]);
        assert!(
            out.status.success(),
            "{what}: rerun: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(booted_by_default(&m), v2, "{what}: after the rerun");
    }
    eprintln!(
        "kill matrix: {runs} SIGKILL runs over {span} ms (seed {}), {killed} killed mid-run, {before_new} left on v1",
        std::env::var("ARBOR_KILL_SEED").unwrap_or_else(|_| "20261205".into())
    );
}

/// Commits a device must refuse, each signed with the trusted key and
/// published as the device's ref in its own directory `pub-NAME`.
fn variants() -> &'static World {
    static V: OnceLock<()> = OnceLock::new();
    let w = world();
    V.get_or_init(|| {
        let d = w.dir.path();
        let variant = |name: &str, tf: PathBuf, epoch: u64, arch: &str| {
            let repo = format!("repo-{name}");
            let _ = std::fs::remove_dir_all(d.join(&repo));
            run(Command::new("cp").arg("-a").arg(d.join("repo")).arg(d.join(&repo)));
            let commit = compose_arch(d, &tf, &repo, epoch, arch);
            // The device's ref now names this commit.
            let r = d.join(&repo);
            let repo_arg = format!("--repo={}", r.display());
            run(Command::new("ostree").args(["refs", &repo_arg, "--delete", REF]));
            run(Command::new("ostree").args(["refs", &repo_arg, &format!("--create={REF}"), &commit]));
            sign_and_publish(d, &repo, "key", &format!("pub-{name}"));
            commit
        };
        let other_board = treefiles_with(d, "tf-board", |f, t| {
            if f == "sample-aarch64.yaml" {
                t.replace("  - qemu-virt-aarch64\n  - qemu-virt-aarch64-bootcount\n  - rpi3\n", "")
            } else {
                t
            }
        });
        variant("other-board", other_board, EPOCH + 2 * 86_400, "aarch64");
        let other_ref = treefiles(d, "tf-ref", |t| t.replace("sample-minimal\n", "sample-other\n"));
        variant("other-ref", other_ref, EPOCH + 2 * 86_400, "aarch64");
        variant(
            "other-arch",
            d.join("tf1/sample-armv7.yaml"),
            EPOCH + 2 * 86_400,
            "armv7hl",
        );
        variant("older", d.join("tf1/sample-minimal.yaml"), EPOCH - 86_400, "aarch64");
    });
    w
}

#[test]
#[ignore = "needs root: loop devices and mounts (and arbor image)"]
fn commits_for_another_board_arch_or_ref_and_downgrades_are_refused() {
    common::need_root();
    let w = variants();
    let t = tempfile::tempdir().unwrap();
    let m = Mounted::new(&image_copy("qemu-virt-aarch64", t.path()));
    for (name, expect) in [
        ("other-board", "not built for board qemu-virt-aarch64"),
        ("other-ref", "not bound to ref arbor/aarch64/sample-minimal"),
        ("other-arch", "built for arch armv7hl, not aarch64"),
        ("older", "older than the current deployment"),
    ] {
        refused_from(&m, name, &w.path(&format!("pub-{name}")), &[], expect);
    }
    // A downgrade is accepted when asked for.
    let out = device(&["upgrade", "--allow-downgrade"], &m, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = status(&m);
    assert_eq!(s["deployments"][0]["timestamp"], EPOCH - 86_400, "{s}");
    agrees_with_ostree(&m);
}

#[test]
#[ignore = "needs root: loop devices and mounts (and arbor image)"]
fn an_offline_bundle_upgrades_without_a_network_and_boots_and_one_for_another_board_is_refused() {
    common::need_root();
    let w = variants();
    let t = tempfile::tempdir().unwrap();
    let bundle = |repo: &str, to: &str, out: &Path| {
        run(arbor()
            .args(["bundle", "create", "--repo"])
            .arg(w.path(repo))
            .args(["--from", &w.v1, "--to", to, "-o"])
            .arg(out)
            .arg("--key")
            .arg(w.path("key")));
    };
    let good = t.path().join("v2.arbor");
    bundle("repo", &w.v2, &good);
    let other = t.path().join("other-board.arbor");
    bundle("repo-other-board", REF, &other);
    let img = image_copy("qemu-virt-aarch64", t.path());
    {
        let m = Mounted::new(&img);
        // No server: the remote points nowhere.
        run(arbor()
            .args(["remote", "set-url", "origin", "http://127.0.0.1:9/", "--sysroot"])
            .arg(m.arg()));
        let before = fingerprint(&m);
        let e = common::err(&device(&["upgrade"], &m, &["--bundle", other.to_str().unwrap()]));
        assert!(e.contains("not this aarch64 qemu-virt-aarch64"), "{e}");
        assert_eq!(before, fingerprint(&m), "a refused bundle changed the sysroot");
        let out = device(&["upgrade", "--json"], &m, &["--bundle", good.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(commits(&status(&m)), [w.v2.clone(), w.v1.clone()]);
        agrees_with_ostree(&m);
    }
    assert!(boot(&img, &w.v2).contains(&format!("commit={}", w.v2)));
}
