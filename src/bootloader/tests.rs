use std::path::Path;

use super::*;
use crate::board;

/// The default deployment, as libostree 2022.7 writes it (the dtb directory copied as fdtdir).
const NEW: &str = "\
title Debian GNU/Linux 12 (bookworm) (ostree:0)
version 2
options root=LABEL=root rw console=ttyS1,115200 rootwait ostree=/ostree/boot.1/debian/3f1b0c/0
linux /ostree/debian-3f1b0c/vmlinuz-6.1.0-50-arm64
initrd /ostree/debian-3f1b0c/initramfs-6.1.0-50-arm64.img
fdtdir /ostree/debian-3f1b0c/dtb
";

/// The previous deployment: it must stay bootable as the fallback.
const OLD: &str = "\
title Debian GNU/Linux 12 (bookworm) (ostree:1)
version 1
options root=LABEL=root rw console=ttyS1,115200 rootwait ostree=/ostree/boot.1/debian/9a77e2/0
linux /ostree/debian-9a77e2/vmlinuz-6.1.0-49-arm64
initrd /ostree/debian-9a77e2/initramfs-6.1.0-49-arm64.img
devicetree /ostree/debian-9a77e2/devicetree-6.1.0-49-arm64
";

fn entries(n: usize) -> Vec<BlsEntry> {
    let all = [
        parse_bls("ostree-2-debian.conf", NEW).unwrap(),
        parse_bls("ostree-1-debian.conf", OLD).unwrap(),
    ];
    all[..n].to_vec()
}

fn show(files: &[RenderedFile]) -> String {
    files
        .iter()
        .map(|f| {
            let text = if f.path == BOOT_SCRIPT {
                String::from_utf8(uboot::script_text(&f.content).unwrap().to_vec()).unwrap()
            } else {
                String::from_utf8(f.content.clone()).unwrap()
            };
            format!("==> {}:{} <==\n{text}", f.role, f.path)
        })
        .collect()
}

fn check_golden(name: &str, got: &str) {
    crate::testutil::check_golden("src/bootloader/golden", name, got)
}

fn uenv_board() -> Board {
    let mut b = board::find("rpi4").unwrap();
    b.bootloader = Flavour::UbootUenv;
    b.dtb_from = crate::board::DtbFrom::Kernel;
    b
}

#[test]
fn golden_per_flavour_with_one_and_two_deployments() {
    let cases: Vec<(&str, Board, &str)> = vec![
        ("rpi3", board::find("rpi3").unwrap(), ""),
        ("rpi4", board::find("rpi4").unwrap(), ""),
        ("qemu-virt-aarch64", board::find("qemu-virt-aarch64").unwrap(), ""),
        (
            "qemu-virt-aarch64-bootprefix",
            board::find("qemu-virt-aarch64").unwrap(),
            "/boot",
        ),
        (
            "qemu-virt-aarch64-bootcount",
            board::find("qemu-virt-aarch64-bootcount").unwrap(),
            "",
        ),
        ("uenv", uenv_board(), ""),
        ("uenv-bootprefix", uenv_board(), "/boot"),
    ];
    for (name, board, prefix) in cases {
        for n in [1, 2] {
            let files = render(&board, &entries(n), prefix, None).unwrap();
            check_golden(&format!("{name}-{n}.txt"), &show(&files));
        }
    }
}

#[test]
fn previous_deployment_stays_as_fallback() {
    // extlinux.conf: the Pi without boot counting.
    let mut board = board::find("rpi3").unwrap();
    board.boot_counting = None;
    // Given oldest first: the order comes from the versions, not the caller.
    let mut given = entries(2);
    given.reverse();
    let files = render(&board, &given, "", None).unwrap();
    let ext = files.iter().find(|f| f.path == "extlinux/extlinux.conf").unwrap();
    assert_eq!(ext.role, Role::Boot);
    let c = &String::from_utf8(ext.content.clone()).unwrap();
    assert!(c.contains("default ostree-2-debian\n"), "{c}");
    let new_at = c.find("label ostree-2-debian").unwrap();
    let old_at = c.find("label ostree-1-debian").unwrap();
    assert!(new_at < old_at, "{c}");
    assert!(c.contains("kernel /ostree/debian-9a77e2/vmlinuz-6.1.0-49-arm64"), "{c}");
    // Each deployment boots its own DTB: from fdtdir with the board's name, or its single devicetree.
    assert!(
        c.contains("fdt /ostree/debian-3f1b0c/dtb/broadcom/bcm2837-rpi-3-b.dtb"),
        "{c}"
    );
    assert!(c.contains("fdt /ostree/debian-9a77e2/devicetree-6.1.0-49-arm64"), "{c}");

    let u = render(&uenv_board(), &given, "", None).unwrap().remove(0);
    assert_eq!((u.role, u.path.as_str()), (Role::Boot, "loader/uEnv.txt"));
    let c = String::from_utf8(u.content).unwrap();
    assert!(c.starts_with("kernel_image=/ostree/debian-3f1b0c/"), "{c}");
    assert!(c.contains("\nkernel_image2=/ostree/debian-9a77e2/"), "{c}");
    assert!(c.contains("\nbootargs2=root=LABEL=root"), "{c}");
}

#[test]
fn a_board_on_the_firmware_dt_gets_no_fdt_line_but_names_it_in_config_txt() {
    // rpi4: dtb_from = "firmware", so U-Boot passes on the firmware's DT
    // (config.txt overlays applied) instead of loading the kernel's.
    let files = render(&board::find("rpi4").unwrap(), &entries(2), "", None).unwrap();
    let text = |p: &str| String::from_utf8(files.iter().find(|f| f.path == p).unwrap().content.clone()).unwrap();
    let ext = text("extlinux/extlinux.conf");
    assert!(ext.contains("kernel /ostree/") && !ext.contains("fdt"), "{ext}");
    assert!(
        text("config.txt")
            .lines()
            .any(|l| l == "device_tree=bcm2711-rpi-4-b.dtb")
    );
    // The same board on the kernel's DT loads it per deployment.
    let mut b = board::find("rpi4").unwrap();
    b.dtb_from = crate::board::DtbFrom::Kernel;
    let files = render(&b, &entries(1), "", None).unwrap();
    let ext = String::from_utf8(
        files
            .iter()
            .find(|f| f.path == "extlinux/extlinux.conf")
            .unwrap()
            .content
            .clone(),
    )
    .unwrap();
    assert!(
        ext.contains("fdt /ostree/debian-3f1b0c/dtb/broadcom/bcm2711-rpi-4-b.dtb"),
        "{ext}"
    );
}

#[test]
fn the_firmware_partitions_dtb_follows_the_default_deployment() {
    let rpi4 = board::find("rpi4").unwrap();
    // Oldest first: the newest entry is the default whatever the order.
    let mut given = entries(2);
    given.reverse();
    assert_eq!(
        crate::bootloader::firmware_dtb(&rpi4, &given).as_deref(),
        Some("/ostree/debian-3f1b0c/dtb/broadcom/bcm2711-rpi-4-b.dtb"),
        "the board's DTB in the default entry's fdtdir"
    );
    // An entry with a single devicetree: that one.
    let mut old = vec![given[0].clone()];
    assert_eq!(
        crate::bootloader::firmware_dtb(&rpi4, &old).as_deref(),
        Some("/ostree/debian-9a77e2/devicetree-6.1.0-49-arm64")
    );
    old[0].devicetree = None;
    assert_eq!(crate::bootloader::firmware_dtb(&rpi4, &old), None);
    // Boards that load the kernel's DT leave the firmware partition's alone.
    assert_eq!(
        crate::bootloader::firmware_dtb(&board::find("rpi3").unwrap(), &given),
        None
    );
}

#[test]
fn config_txt_follows_the_board() {
    let files = render(&board::find("rpi4").unwrap(), &entries(1), "", None).unwrap();
    let cfg = &files[0];
    assert_eq!((cfg.role, cfg.path.as_str()), (Role::Firmware, "config.txt"));
    let text = String::from_utf8(cfg.content.clone()).unwrap();
    for line in [
        "arm_64bit=1",
        "kernel=u-boot.bin",
        "enable_uart=1",
        "device_tree=bcm2711-rpi-4-b.dtb",
        "start_file=start4.elf",
        "fixup_file=fixup4.dat",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in {text}");
    }
    let mut b32 = board::find("rpi3").unwrap();
    b32.arch = Arch::Armv7hl;
    let cfg = String::from_utf8(render(&b32, &entries(1), "", None).unwrap().remove(0).content).unwrap();
    assert!(!cfg.contains("arm_64bit"), "{cfg}");
    assert_eq!(files[1].content, format!("{}\n", entries(1)[0].options).into_bytes());
}

#[test]
fn render_refuses_nothing_to_boot_and_bad_paths() {
    let b = board::find("qemu-virt-aarch64").unwrap();
    assert!(render(&b, &[], "", None).unwrap_err().to_string().contains("nothing"));
    for bad in ["boot", "/boot/"] {
        assert!(
            render(&b, &entries(1), bad, None)
                .unwrap_err()
                .to_string()
                .contains("boot prefix"),
            "{bad}"
        );
    }
    let rel = parse_bls("x.conf", "linux vmlinuz\n").unwrap();
    let e = render(&b, &[rel], "", None).unwrap_err().to_string();
    assert!(e.contains("x.conf") && e.contains("linux"), "{e}");
}

#[test]
fn every_template_is_shipped_and_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bootloader-configs");
    let mut shipped: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmpl"))
        .collect();
    shipped.sort();
    let mut known: Vec<String> = TEMPLATES.iter().map(|(n, _)| n.to_string()).collect();
    known.sort();
    assert_eq!(shipped, known, "bootloader-configs/*.tmpl and TEMPLATES differ");
    for (name, text) in TEMPLATES {
        assert_eq!(&std::fs::read_to_string(dir.join(name)).unwrap(), text);
        Template::parse(name, text).unwrap();
    }
}

#[test]
fn boot_script_counts_only_the_default_deployment_on_trial() {
    let board = board::find("qemu-virt-aarch64-bootcount").unwrap();
    let id = entry_id(&entries(2)[0]);
    assert_eq!(id, "debian/3f1b0c/0");
    let files = render(&board, &entries(2), "", Some(&id)).unwrap();
    assert_eq!(files.len(), 1);
    let f = &files[0];
    assert_eq!((f.role, f.path.as_str()), (Role::Firmware, BOOT_SCRIPT));
    let text = String::from_utf8(uboot::script_text(&f.content).unwrap().to_vec()).unwrap();
    check_golden("qemu-virt-aarch64-bootcount-trial.txt", &text);
    // Boot 0 is the trial, loaded from /boot (partition 2), and 1 the fallback.
    assert!(text.contains("if test -n \"debian/3f1b0c/0\"; then"), "{text}");
    assert!(
        text.contains("load ${devtype} ${devnum}:2 ${kernel_addr_r} /ostree/debian-9a77e2/vmlinuz-6.1.0-49-arm64"),
        "{text}"
    );
    // Only the default can be on trial.
    let e = render(&board, &entries(2), "", Some("debian/9a77e2/0"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not the default"), "{e}");
    // Characters U-Boot's shell would expand are refused, not passed on.
    let mut bad = entries(1);
    bad[0].options.push_str(" x=$(reboot)");
    let e = render(&board, &bad, "", None).unwrap_err().to_string();
    assert!(e.contains("U-Boot's shell"), "{e}");
    // So are paths that would split into two words or run a second command (fuzz: bootloader).
    for path in ["/ostree/a b/vmlinuz", "/ostree/a;reset/vmlinuz", "/ostree/${x}/vmlinuz"] {
        let mut bad = entries(1);
        bad[0].linux = path.into();
        let e = render(&board, &bad, "", None).unwrap_err().to_string();
        assert!(e.contains("U-Boot's shell") && e.contains(path), "{e}");
    }
}

/// A NUL, CR or other control character in an entry (which would cut or
/// split the line it is copied into) is refused naming the entry and line.
#[test]
fn bls_entries_with_control_characters_are_refused() {
    for (text, line) in [
        ("linux /v\0x\n", 1),
        ("title t\noptions a\rb\nlinux /v\n", 2),
        ("linux /v\x1b[2J\n", 1),
    ] {
        let e = parse_bls("ostree-1.conf", text).unwrap_err().to_string();
        assert!(
            e.contains("ostree-1.conf") && e.contains(&format!("line {line}")),
            "{text:?}: {e}"
        );
    }
    assert!(
        parse_bls("ostree-1.conf", "title\ta\r\nlinux /v\r\n").is_ok(),
        "CRLF line ends and tabs are fine"
    );
}

/// arbor's script image is byte for byte what u-boot-tools' mkimage makes.
#[test]
fn boot_script_image_is_what_mkimage_writes() {
    let t = tempfile::tempdir().unwrap();
    let script = b"echo arbor\nsetenv x 1\n";
    std::fs::write(t.path().join("s.txt"), script).unwrap();
    let out = std::process::Command::new("mkimage")
        .env("SOURCE_DATE_EPOCH", "0")
        .args([
            "-A",
            "arm64",
            "-O",
            "linux",
            "-T",
            "script",
            "-C",
            "none",
            "-n",
            "arbor boot script",
            "-d",
        ])
        .arg(t.path().join("s.txt"))
        .arg(t.path().join("s.scr"))
        .output()
        .expect("mkimage (u-boot-tools, installed by scripts/setup)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = std::fs::read(t.path().join("s.scr")).unwrap();
    let got = uboot::script_image(Arch::Aarch64, "arbor boot script", 0, script).unwrap();
    assert_eq!(got, want);
}
