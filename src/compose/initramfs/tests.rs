#![allow(clippy::unwrap_used)]

use super::*;
use std::process::Command;

const KVER: &str = "6.1.0-50-arm64";

/// A 64-bit ELF header with no program headers (so: no interpreter, "static"),
/// followed by busybox's applet name table.
fn fake_busybox(applets: &[&str], dynamic: bool) -> Vec<u8> {
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little endian
    elf[6] = 1; // version
    elf[16] = 2; // ET_EXEC
    elf[18] = 183; // aarch64
    elf[20] = 1;
    elf[52] = 64; // e_ehsize
    if dynamic {
        // One PT_INTERP program header pointing at "/lib/ld.so\0".
        elf[32] = 64; // e_phoff
        elf[54] = 56; // e_phentsize
        elf[56] = 1; // e_phnum
        let mut ph = vec![0u8; 56];
        ph[0] = 3; // PT_INTERP
        ph[8] = 120; // p_offset
        ph[32] = 11; // p_filesz
        ph[40] = 11; // p_memsz
        elf.extend_from_slice(&ph);
        elf.extend_from_slice(b"/lib/ld.so\0");
    }
    elf.push(0);
    for a in applets {
        elf.extend_from_slice(a.as_bytes());
        elf.push(0);
    }
    elf
}

/// The default set's `modules.dep` lines, plus a module nothing needs.
fn dep() -> String {
    format!("{}kernel/drivers/net/dummy.ko:\n", super::modules::tests::DEP)
}

/// A tree with a fake kernel (modules.dep above, each .ko holding its own path)
/// and a fake static busybox.
fn tree(busybox: Option<Vec<u8>>) -> (tempfile::TempDir, Dir) {
    let t = tempfile::tempdir().unwrap();
    let moddir = t.path().join("usr/lib/modules").join(KVER);
    std::fs::create_dir_all(&moddir).unwrap();
    std::fs::write(moddir.join("vmlinuz"), b"Image").unwrap();
    std::fs::write(moddir.join("modules.dep"), dep()).unwrap();
    std::fs::write(moddir.join("modules.builtin"), "kernel/drivers/mmc/core/mmc_block.ko\n").unwrap();
    for line in dep().lines() {
        let ko = line.split_once(':').unwrap().0;
        std::fs::create_dir_all(moddir.join(ko).parent().unwrap()).unwrap();
        std::fs::write(moddir.join(ko), ko).unwrap();
    }
    std::fs::create_dir_all(t.path().join("usr/lib/modules/5.0-no-kernel")).unwrap();
    if let Some(bb) = busybox {
        std::fs::create_dir_all(t.path().join("usr/sbin")).unwrap();
        std::fs::write(t.path().join("usr/sbin/busybox"), bb).unwrap();
    }
    let d = Dir::open_ambient_dir(t.path(), cap_std::ambient_authority()).unwrap();
    (t, d)
}

fn entry<'a>(a: &'a cpio::Archive, path: &str) -> &'a cpio::Entry {
    a.get(path)
        .unwrap_or_else(|| panic!("{path} not in the initramfs: {:?}", a.paths().collect::<Vec<_>>()))
}

fn list(a: &cpio::Archive) -> String {
    match &entry(a, MODULE_LIST).kind {
        cpio::Kind::File(d) => String::from_utf8(d.clone()).unwrap(),
        k => panic!("{k:?}"),
    }
}

#[test]
fn the_archive_has_init_busybox_applets_devices_and_modules_in_order() {
    let (_t, d) = tree(Some(fake_busybox(APPLETS, false)));
    let a = archive(&d, KVER, &["dummy".to_string()]).unwrap();
    assert_eq!(entry(&a, "init").perm, 0o755);
    assert_eq!(entry(&a, "init").kind, cpio::Kind::File(INIT.as_bytes().to_vec()));
    assert_eq!(entry(&a, "bin/busybox").perm, 0o755);
    for applet in APPLETS {
        assert_eq!(
            entry(&a, &format!("bin/{applet}")).kind,
            cpio::Kind::Symlink("busybox".into())
        );
    }
    assert_eq!(
        entry(&a, "dev/console").kind,
        cpio::Kind::CharDev { major: 5, minor: 1 }
    );
    assert_eq!(entry(&a, "tmp").perm, 0o1777);
    let l = list(&a);
    let names: Vec<String> = l.lines().map(modules::module_name).collect();
    assert_eq!(
        names,
        [
            "virtio_blk",
            "virtio_pci_modern_dev",
            "virtio_pci_legacy_dev",
            "virtio_pci",
            "virtio_mmio",
            "sdhci",
            "sdhci_pltfm",
            "sdhci_iproc",
            "bcm2835",
            "crc32c_generic",
            "jbd2",
            "mbcache",
            "crc16",
            "ext4",
            "dummy",
        ],
        "built-in mmc_block left out; extra modules last"
    );
    for p in l.lines() {
        let inside = p.trim_start_matches('/');
        let rel = inside.trim_start_matches(&format!("lib/modules/{KVER}/"));
        assert_eq!(entry(&a, inside).kind, cpio::Kind::File(rel.as_bytes().to_vec()));
    }
}

#[test]
fn the_image_is_gzip_and_the_same_bytes_every_time() {
    let (_t, d) = tree(Some(fake_busybox(APPLETS, false)));
    let one = build(&d, KVER, &[], 1_700_000_000).unwrap();
    let two = build(&d, KVER, &[], 1_700_000_000).unwrap();
    assert_eq!(one, two);
    assert_eq!(&one[..4], b"\x1f\x8b\x08\x00", "gzip, deflate, no name");
    assert_eq!(&one[4..8], &[0, 0, 0, 0], "header mtime 0");
    let mut cpio = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&one[..]), &mut cpio).unwrap();
    assert_eq!(cpio, archive(&d, KVER, &[]).unwrap().write(1_700_000_000));
    assert_ne!(one, build(&d, KVER, &[], 1).unwrap(), "the timestamp is in the archive");
}

#[test]
fn kernels_are_the_module_dirs_with_a_vmlinuz() {
    let (t, d) = tree(None);
    assert_eq!(kernels(&d).unwrap(), [KVER]);
    let empty = Dir::open_ambient_dir(
        t.path().join("usr/lib/modules/5.0-no-kernel"),
        cap_std::ambient_authority(),
    )
    .unwrap();
    assert!(kernels(&empty).unwrap().is_empty(), "no usr/lib/modules at all");
}

#[test]
fn write_all_puts_initramfs_img_beside_vmlinuz() {
    let (t, d) = tree(Some(fake_busybox(APPLETS, false)));
    let cache = tempfile::tempdir().unwrap();
    assert_eq!(
        write_all(&d, t.path(), &[], |_| 0, cache.path(), |_| None).unwrap(),
        [KVER]
    );
    let img = std::fs::read(t.path().join("usr/lib/modules").join(KVER).join("initramfs.img")).unwrap();
    assert_eq!(img, build(&d, KVER, &[], 0).unwrap());
    assert!(!t.path().join("usr/lib/modules/5.0-no-kernel/initramfs.img").exists());
}

#[test]
fn cached_images_are_reused_only_for_the_same_archive() {
    let (_t, d) = tree(Some(fake_busybox(APPLETS, false)));
    let cache = tempfile::tempdir().unwrap();
    let first = build_cached(&d, KVER, &[], 0, cache.path()).unwrap();
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    // A planted image under the archive's key is what a second build returns: the cache is used.
    std::fs::write(&cached[0], b"from the cache").unwrap();
    assert_eq!(build_cached(&d, KVER, &[], 0, cache.path()).unwrap(), b"from the cache");
    // Another timestamp is another archive: built, not taken from the cache.
    let other = build_cached(&d, KVER, &[], 1, cache.path()).unwrap();
    assert_eq!(other, build(&d, KVER, &[], 1).unwrap());
    assert_ne!(other, first);
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 2);
}

#[test]
fn missing_or_unfit_inputs_fail_naming_what_is_wrong() {
    let (_t, d) = tree(None);
    let e = format!("{:#}", build(&d, KVER, &[], 0).unwrap_err());
    assert!(e.contains("busybox") && e.contains("/usr/sbin/busybox"), "{e}");

    let (_t, d) = tree(Some(fake_busybox(APPLETS, true)));
    let e = format!("{:#}", build(&d, KVER, &[], 0).unwrap_err());
    assert!(e.contains("dynamically linked"), "{e}");

    let (_t, d) = tree(Some(fake_busybox(&["sh", "mount"], false)));
    let e = format!("{:#}", build(&d, KVER, &[], 0).unwrap_err());
    assert!(e.contains("applet") && e.contains("/usr/sbin/busybox"), "{e}");

    let (_t, d) = tree(Some(fake_busybox(APPLETS, false)));
    let e = format!("{:#}", build(&d, KVER, &["nosuch".into()], 0).unwrap_err());
    assert!(e.contains("nosuch") && e.contains(KVER), "{e}");
    let e = format!("{:#}", build(&d, "9.9", &[], 0).unwrap_err());
    assert!(e.contains("/usr/lib/modules/9.9/modules.dep"), "{e}");
}

#[test]
fn init_does_what_the_boot_needs() {
    for needle in [
        "mount -t devtmpfs",
        "root=*)",
        "ostree=*)",
        "init=/sbin/init",
        "rootwait)",
        "quiet)",
        "findfs",
        "PARTUUID=*)",
        "/etc/arbor-initramfs/modules",
        "mount --bind \"/sysroot/ostree/deploy/$os/var\" /newroot/var",
        "remount,bind,ro /newroot/usr",
        "mount --move /sysroot /newroot/sysroot",
        "/newroot/run/ostree-booted",
        "arbor-initramfs: switching to",
        "exec switch_root /newroot \"$init\"",
    ] {
        assert!(INIT.contains(needle), "/init lacks {needle:?}");
    }
    assert!(INIT.contains(MODULE_LIST), "/init reads the list at /{MODULE_LIST}");
    // The external commands /init runs (the rest are ash builtins) are linked applets.
    for cmd in [
        "mkdir",
        "mount",
        "insmod",
        "cat",
        "readlink",
        "od",
        "tr",
        "findfs",
        "sleep",
        "touch",
        "switch_root",
        "sh",
    ] {
        let used = INIT
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.split(|c: char| !c.is_alphanumeric() && c != '_').any(|w| w == cmd));
        assert!(used, "/init no longer runs {cmd}: update this list");
        assert!(APPLETS.contains(&cmd), "/init runs {cmd}, not linked into /bin");
    }
}

#[test]
fn init_is_shellcheck_clean_when_shellcheck_is_installed() {
    let Ok(out) = Command::new("shellcheck")
        .args(["--shell=sh", "--severity=style", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(INIT.as_bytes())?;
            c.wait_with_output()
        })
    else {
        eprintln!("shellcheck is not installed: skipped");
        return;
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn init_parses_the_command_line_and_partuuids_with_a_real_sh() {
    // The parsing loop and PARTUUID arithmetic, cut out of /init and run by the
    // host's sh against a made-up command line and MBR/GPT disk images.
    let start = INIT.find("root=\nostree=").unwrap();
    let end = INIT.find("[ -n \"$root\" ]").unwrap();
    let parse = INIT[start..end].replace("</proc/cmdline", "<\"$CMDLINE\"");
    let pstart = INIT.find("partuuid_of() {").unwrap();
    let pend = INIT.find("find_root() {").unwrap();
    let partuuid = INIT[pstart..pend]
        .replace(
            "n=$(cat \"/sys/class/block/$part/partition\" 2>/dev/null) || return 1",
            "n=$N",
        )
        .replace(
            "disk=$(readlink -f \"/sys/class/block/$part/..\")\n\tdisk=/dev/${disk##*/}",
            "disk=$DISK",
        );
    let dir = tempfile::tempdir().unwrap();
    let cmdline = dir.path().join("cmdline");
    std::fs::write(&cmdline, "console=ttyAMA0 root=LABEL=root ostree=/ostree/boot.1/arbor/abc/0 rw quiet rootwait init=/lib/systemd/systemd\n").unwrap();
    // MBR: signature 0x12ab34cd at 440; GPT: header at 512 pointing at LBA 2.
    let mbr = dir.path().join("mbr");
    let mut m = vec![0u8; 1024];
    m[440..444].copy_from_slice(&0x12ab_34cd_u32.to_le_bytes());
    std::fs::write(&mbr, &m).unwrap();
    let gpt = dir.path().join("gpt");
    let mut g = vec![0u8; 2048];
    g[512..520].copy_from_slice(b"EFI PART");
    g[584..592].copy_from_slice(&2u64.to_le_bytes());
    let guid = [
        0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
    ];
    g[1024 + 128 + 16..1024 + 128 + 32].copy_from_slice(&guid);
    std::fs::write(&gpt, &g).unwrap();
    let script = format!(
        "{parse}\necho \"$root|$ostree|$init|$rwmode|$quiet|$rootwait\"\n{partuuid}\nN=3 DISK={} partuuid_of x\nN=2 DISK={} partuuid_of x\n",
        mbr.display(),
        gpt.display()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("CMDLINE", &cmdline)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "LABEL=root|/ostree/boot.1/arbor/abc/0|/lib/systemd/systemd|rw|1|1",
            "12ab34cd-03",
            "00112233-4455-6677-8899-aabbccddeeff",
        ]
    );
}
