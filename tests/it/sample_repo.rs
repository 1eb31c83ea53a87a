//! The sample repository against the real tools: rpm reads and verifies every
//! package, libsolv loads the createrepo_c metadata, the binaries are real ARM.

use crate::common::{self, Deadline as _};

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{package, rpm, run, sample_repo};

#[test]
fn has_every_package_the_foundation_promises() {
    let repo = sample_repo();
    let have: BTreeSet<(String, String)> = repo.packages.iter().map(|p| (p.name.clone(), p.arch.clone())).collect();
    let want = [
        ("filesystem", "aarch64"),
        ("busybox", "aarch64"),
        ("bash", "aarch64"),
        ("glibc", "aarch64"),
        ("kernel", "aarch64"),
        ("uboot-images-armv8", "noarch"),
        ("raspi-firmware", "noarch"),
        ("strace", "aarch64"),
        ("filesystem", "x86_64"),
        ("busybox", "x86_64"),
        ("bash", "x86_64"),
        ("glibc", "x86_64"),
        ("filesystem", "armv7hl"),
        ("busybox", "armv7hl"),
        ("kernel", "armv7hl"),
        ("uboot-images-armv7", "noarch"),
        ("shell-profile", "noarch"),
        ("newtool", "noarch"),
        ("oldtool", "noarch"),
        ("tool-user", "noarch"),
        ("vercmp", "noarch"),
    ];
    for (n, a) in want {
        assert!(
            have.contains(&(n.to_string(), a.to_string())),
            "missing {n}.{a}; have {have:?}"
        );
    }
    let files = std::fs::read_dir(repo.out.join("Packages"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "rpm"));
    assert_eq!(
        files.count(),
        repo.packages.len(),
        "Packages/ holds exactly the built packages"
    );
}

#[test]
fn rpm_reads_every_package_and_digests_are_ok() {
    let db = tempfile::tempdir().unwrap();
    for p in &sample_repo().packages {
        let path = sample_repo().out.join("Packages").join(&p.file);
        let info = run(rpm(db.path()).arg("-qip").arg(&path));
        assert!(
            info.contains(&format!("Name        : {}", p.name)),
            "{}:\n{info}",
            p.file
        );
        assert!(
            info.contains(&format!("Architecture: {}", p.arch)),
            "{}:\n{info}",
            p.file
        );
        let k = run(rpm(db.path()).arg("-K").arg(&path));
        assert!(k.trim_end().ends_with("digests OK"), "rpm -K {}: {k}", p.file);
    }
}

fn to_solv(xml_gz: &Path, out: &Path) {
    run(Command::new("sh")
        .arg("-c")
        .arg("gzip -dc \"$1\" | rpmmd2solv > \"$2\"")
        .arg("sh")
        .arg(xml_gz)
        .arg(out));
}

#[test]
fn createrepo_metadata_loads_in_libsolv_and_every_package_is_installable() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = tmp.path().join("primary.solv");
    to_solv(&common::metadata("primary"), &primary);
    to_solv(&common::metadata("filelists"), &tmp.path().join("filelists.solv"));
    let dump = run(Command::new("dumpsolv").arg(&primary));
    let want = format!("repo size: {} solvables", sample_repo().packages.len());
    assert!(dump.contains(&want), "dumpsolv says:\n{}", &dump[..dump.len().min(400)]);
    for arch in ["aarch64", "armv7hl", "x86_64"] {
        // installcheck prints one "can't install" block per broken arch package (it does
        // not check noarch ones: needs-missing-lib is broken on purpose, see tests/it/solve.rs).
        let out = Command::new("installcheck")
            .arg(arch)
            .arg(&primary)
            .timed_output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.trim().is_empty(),
            "installcheck {arch}:\n{text}"
        );
    }
}

fn extract(rpm_file: &Path, dest: &Path) {
    run(Command::new("sh")
        .arg("-c")
        .arg("rpm2cpio \"$1\" | cpio -idm --quiet")
        .arg("sh")
        .arg(rpm_file)
        .current_dir(dest));
}

fn file_type(path: &Path) -> String {
    run(Command::new("file").arg("-b").arg(path))
}

#[test]
fn binaries_are_real_arm_executables() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("busybox", "aarch64", "usr/sbin/busybox", "ARM aarch64"),
        ("bash", "aarch64", "usr/bin/bash", "ARM aarch64"),
        ("strace", "aarch64", "usr/bin/strace", "ARM aarch64"),
        ("busybox", "armv7hl", "usr/sbin/busybox", "ARM, EABI5"),
        ("busybox", "x86_64", "usr/sbin/busybox", "x86-64"),
    ];
    for (name, arch, path, want) in cases {
        let dir = tmp.path().join(format!("{name}.{arch}"));
        std::fs::create_dir(&dir).unwrap();
        extract(&package(name, arch), &dir);
        let t = file_type(&dir.join(path));
        assert!(t.contains(want), "{name}.{arch} {path}: file says {t}");
    }
    let bash = file_type(&tmp.path().join("bash.aarch64/usr/bin/bash"));
    assert!(
        bash.contains("dynamically linked") && bash.contains("/lib/ld-linux-aarch64.so.1"),
        "bash is dynamically linked against the aarch64 loader: {bash}"
    );
}

#[test]
fn kernel_is_laid_out_under_usr_lib_modules() {
    let db = tempfile::tempdir().unwrap();
    for (arch, dtb) in [
        ("aarch64", "dtb/broadcom/bcm2711-rpi-4-b.dtb"),
        ("armv7hl", "dtb/bcm2836-rpi-2-b.dtb"),
    ] {
        let files = run(rpm(db.path()).arg("-qlp").arg(package("kernel", arch)));
        let kver = files
            .lines()
            .find_map(|l| l.strip_prefix("/usr/lib/modules/")?.strip_suffix("/vmlinuz"))
            .unwrap_or_else(|| panic!("kernel.{arch} has no /usr/lib/modules/$kver/vmlinuz"));
        for want in [dtb, "kernel/fs/ext4/ext4.ko", "modules.order", "config"] {
            let p = format!("/usr/lib/modules/{kver}/{want}");
            assert!(files.lines().any(|l| l == p), "kernel.{arch} lacks {p}");
        }
        let provides = run(rpm(db.path()).arg("-qp").arg("--provides").arg(package("kernel", arch)));
        assert!(provides.contains(&format!("kernel-uname-r = {kver}")), "{provides}");
    }
}

#[test]
fn uboot_images_hold_the_board_binaries() {
    let db = tempfile::tempdir().unwrap();
    let files = run(rpm(db.path()).arg("-qlp").arg(package("uboot-images-armv8", "noarch")));
    for board in ["rpi_3", "rpi_4", "rpi_arm64", "qemu_arm64"] {
        assert!(
            files.contains(&format!("/usr/share/uboot/{board}/u-boot.bin")),
            "{board}: {files}"
        );
    }
    let files = run(rpm(db.path()).arg("-qlp").arg(package("uboot-images-armv7", "noarch")));
    assert!(files.contains("/usr/share/uboot/qemu_arm/u-boot.bin"), "{files}");
}

#[test]
fn raspi_firmware_holds_the_boot_firmware_and_its_licence_and_no_scripts() {
    let db = tempfile::tempdir().unwrap();
    let q = |args: &[&str]| run(rpm(db.path()).args(args).arg(package("raspi-firmware", "noarch")));
    let licence = "/usr/share/licenses/raspi-firmware/copyright";
    let mut want: Vec<String> = ["bootcode.bin", "start.elf", "fixup.dat", "start4.elf", "fixup4.dat"]
        .iter()
        .map(|f| format!("/usr/lib/raspi-firmware/{f}"))
        .collect();
    want.extend(["/usr/lib/raspi-firmware", "/usr/share/licenses/raspi-firmware", licence].map(String::from));
    want.sort();
    let listed = q(&["-qlp"]);
    let mut have: Vec<&str> = listed.lines().collect();
    have.sort();
    assert_eq!(have, want, "exactly the firmware, its directories and the licence");
    assert_eq!(q(&["-qp", "-L"]).trim(), licence, "the licence is %license");
    let tag = q(&["-qp", "--qf", "%{LICENSE}"]);
    assert!(
        tag.starts_with("LicenseRef-"),
        "a licence of its own, not an SPDX one: {tag}"
    );
    // Debian's maintainer scripts and kernel hooks (which copy into /boot/firmware) stay behind.
    for what in ["--scripts", "--triggers", "--filetriggers"] {
        assert_eq!(q(&["-qp", what]).trim(), "", "raspi-firmware has no {what}");
    }
}

#[test]
fn scriptlets_and_triggers_are_as_fedora_shapes_them() {
    let db = tempfile::tempdir().unwrap();
    let q = |args: &[&str], name: &str, arch: &str| run(rpm(db.path()).args(args).arg(package(name, arch)));
    let fs = q(&["-qp", "--scripts"], "filesystem", "aarch64");
    assert!(
        fs.contains("pretrans scriptlet (using <lua>)") && fs.contains("posix.symlink(\"usr/bin\", \"/bin\")"),
        "{fs}"
    );
    let bb = q(&["-qp", "--scripts"], "busybox", "aarch64");
    assert!(
        bb.contains("postinstall scriptlet (using /bin/sh)") && bb.contains("--list-full"),
        "{bb}"
    );
    let glibc = q(&["-qp", "--scripts"], "glibc", "aarch64");
    assert!(
        glibc.contains("postinstall scriptlet (using <lua>)") && glibc.contains("posix.fork"),
        "{glibc}"
    );
    let trig = q(&["-qp", "--filetriggers"], "glibc", "aarch64");
    assert!(
        trig.contains("transfiletriggerin scriptlet (using /usr/sbin/ldconfig) -- /usr/lib"),
        "{trig}"
    );
    for (name, arch) in [("filesystem", "aarch64"), ("glibc", "aarch64"), ("busybox", "aarch64")] {
        let req = q(&["-qp", "--requires"], name, arch);
        assert!(
            !req.lines().any(|l| l.trim() == "<lua>"),
            "{name} must not require <lua>: {req}"
        );
        if name != "busybox" {
            assert!(req.contains("rpmlib(BuiltinLuaScripts)"), "{name}: {req}");
        }
    }
    assert!(
        q(&["-qp", "--requires"], "busybox", "aarch64")
            .lines()
            .any(|l| l == "/bin/sh")
    );
}

#[test]
fn dependencies_exercise_the_solver_corners() {
    let db = tempfile::tempdir().unwrap();
    let q = |what: &str, name: &str, arch: &str| run(rpm(db.path()).arg("-qp").arg(what).arg(package(name, arch)));
    let bash = q("--requires", "bash", "aarch64");
    for want in [
        "libc.so.6()(64bit)",
        "libtinfo.so.6()(64bit)",
        "ld-linux-aarch64.so.1()(64bit)",
    ] {
        assert!(
            bash.lines().any(|l| l == want),
            "bash.aarch64 requires {want} (from its ELF): {bash}"
        );
    }
    assert!(q("--provides", "ncurses-libs", "aarch64").contains("libtinfo.so.6()(64bit)"));
    assert!(q("--provides", "glibc", "aarch64").contains("libc.so.6()(64bit)"));
    let profile = q("--requires", "shell-profile", "noarch");
    assert!(
        profile.contains("(shell-profile-bash if bash)") && profile.contains("rpmlib(RichDependencies)"),
        "{profile}"
    );
    assert_eq!(q("--recommends", "hello", "noarch").trim(), "hello-docs");
    assert_eq!(q("--suggests", "hello", "noarch").trim(), "hello-extras");
    assert_eq!(
        q("--supplements", "hello-bash-completion", "noarch").trim(),
        "(hello and bash)"
    );
    assert_eq!(q("--obsoletes", "newtool", "noarch").trim(), "oldtool < 2.0");
    assert!(
        q("--requires", "tool-user", "noarch")
            .lines()
            .any(|l| l == "/usr/libexec/tool-helper")
    );
}

#[test]
fn vercmp_versions_sort_as_rpm_orders_tilde_and_caret() {
    let db = tempfile::tempdir().unwrap();
    let mut versions: Vec<String> = sample_repo()
        .packages
        .iter()
        .filter(|p| p.name == "vercmp")
        .map(|p| {
            let f = sample_repo().out.join("Packages").join(&p.file);
            run(rpm(db.path()).args(["-qp", "--qf", "%{VERSION}"]).arg(f))
        })
        .collect();
    versions.sort();
    assert_eq!(versions, ["1.0", "1.0^post1", "1.0~rc1"]);
    // rpm's own comparison (its embedded lua) orders them ~ < plain < ^.
    let lua = "%{lua: print(rpm.vercmp('1.0~rc1','1.0'), rpm.vercmp('1.0','1.0^post1'))}";
    let out = run(rpm(db.path()).arg("--eval").arg(lua));
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["-1", "-1"],
        "rpm.vercmp says {out}"
    );
}

#[test]
#[ignore = "needs root: rpm --root chroots"]
fn real_rpm_installs_the_aarch64_base_set_into_a_root() {
    common::need_root();
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("var/lib/rpm");
    std::fs::create_dir_all(&db).unwrap();
    let set: Vec<_> = [
        ("filesystem", "aarch64"),
        ("setup", "noarch"),
        ("glibc", "aarch64"),
        ("ncurses-libs", "aarch64"),
        ("bash", "aarch64"),
        ("busybox", "aarch64"),
        ("hello", "noarch"),
        ("hello-data", "noarch"),
    ]
    .iter()
    .map(|(n, a)| package(n, a))
    .collect();
    // Dependencies and file conflicts are checked by rpm itself; scripts are for the sandbox (later).
    run(rpm(&db)
        .arg("--root")
        .arg(root.path())
        .args(["-i", "--ignorearch", "--noscripts", "--notriggers"])
        .args(&set));
    let qa = run(rpm(&db)
        .arg("--root")
        .arg(root.path())
        .args(["-qa", "--qf", "%{NAME}\n"]));
    assert_eq!(qa.lines().count(), set.len(), "{qa}");
    let owner = run(rpm(&db)
        .arg("--root")
        .arg(root.path())
        .args(["-qf", "--qf", "%{NAME}", "/usr/bin/bash"]));
    assert_eq!(owner, "bash");
    let shadow = std::fs::metadata(root.path().join("etc/shadow")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&shadow.permissions()) & 0o7777,
        0
    );
    assert!(root.path().join("usr/lib/aarch64-linux-gnu/libc.so.6").is_file());
    assert_eq!(
        std::fs::read_link(root.path().join("bin")).unwrap(),
        Path::new("usr/bin")
    );
}
