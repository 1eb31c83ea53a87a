use std::path::Path;

use super::size::{GIB, MIB};
use super::*;

/// A small valid board; error cases edit it.
const BASE: &str = r#"
name = "t"
arch = "aarch64"
size = "1GiB"
bootloader = "uboot-extlinux"
uboot = "/usr/share/uboot/x/u-boot.bin"

[[partitions]]
role = "boot"
label = "boot"
size = "256MiB"
fs = "ext4"
bootable = true

[[partitions]]
role = "root"
label = "root"
size = "rest"
fs = "ext4"
"#;

fn parse_text(text: &str) -> Result<Board> {
    parse(Path::new("boards/t.toml"), text)
}

fn check_golden(name: &str, got: &str) {
    crate::testutil::check_golden("src/board/golden", name, got)
}

#[test]
fn every_shipped_board_loads_and_matches_its_file_name() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("boards");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let board = load(&path).unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(path.file_stem().unwrap().to_str().unwrap(), board.name);
            names.push(board.name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "qemu-virt-aarch64",
            "qemu-virt-aarch64-bootcount",
            "qemu-virt-armv7",
            "rpi3",
            "rpi4"
        ]
    );
    let listed: Vec<String> = list().unwrap().into_iter().map(|b| b.name).collect();
    for n in &names {
        assert!(listed.contains(n), "{n} not in list()");
    }
}

#[test]
fn shipped_partition_plans_match_golden() {
    for name in [
        "qemu-virt-aarch64",
        "qemu-virt-aarch64-bootcount",
        "qemu-virt-armv7",
        "rpi3",
        "rpi4",
    ] {
        let board = find(name).unwrap();
        let mut text = board.describe_layout(board.size).unwrap();
        // A larger card: only the last partition grows.
        text.push_str(&board.describe_layout(board.image_size(Some(3 * GIB))).unwrap());
        check_golden(&format!("{name}.txt"), &text);
    }
}

#[test]
fn rpi3_resolves_defaults() {
    let b = find("rpi3").unwrap();
    assert_eq!(b.arch, Arch::Aarch64);
    assert_eq!(b.bootloader, Flavour::RpiUbootExtlinux);
    assert_eq!(b.boot_prefix(), "");
    assert_eq!(b.root_karg("x"), "root=LABEL=root");
    let kinds: Vec<String> = b.partitions.iter().map(|p| p.kind.to_string()).collect();
    assert_eq!(kinds, ["0x0c", "0x83", "0x83"]);
    assert_eq!(b.firmware[1].dest("bcm2837-rpi-3-b.dtb"), "bcm2837-rpi-3-b.dtb");
    assert_eq!(b.firmware[0].dest("whatever"), "u-boot.bin");
    assert!(b.firmware[1].is_glob() && !b.firmware[0].is_glob());
    assert!(!b.firmware[2].optional && b.firmware[2].package.as_deref() == Some("raspi-firmware"));
    // qemu's SD card wants a power of two.
    assert_eq!(b.image_size(Some(3 * GIB)), 4 * GIB);
    let q = b.qemu.as_ref().unwrap();
    let argv = q
        .command(
            Path::new("/i/disk.img"),
            Some(Path::new("/x/u-boot.bin")),
            Some(Path::new("/x/rpi.dtb")),
        )
        .unwrap();
    assert_eq!(
        argv.join(" "),
        "qemu-system-aarch64 -M raspi3b -kernel /x/u-boot.bin -dtb /x/rpi.dtb \
         -drive file=/i/disk.img,if=sd,format=raw -display none -monitor none -serial null -serial stdio"
    );
    let e = q.command(Path::new("/i"), None, None).unwrap_err().to_string();
    assert!(e.contains("{uboot}"), "{e}");
}

#[test]
fn rpi4_boots_on_the_firmware_dt_and_qemu_gets_it_edited() {
    let b = find("rpi4").unwrap();
    assert_eq!(b.dtb_from, crate::board::DtbFrom::Firmware);
    assert_eq!(b.kernel_dtb(), None);
    assert_eq!(b.dtb_file_name(), Some("bcm2711-rpi-4-b.dtb"));
    let q = b.qemu.as_ref().unwrap();
    assert_eq!(q.machine, "raspi4b");
    let disabled = q
        .devicetree
        .iter()
        .filter(|e| e.set == [("status".to_string(), crate::fdt::Value::Str("disabled".into()))])
        .count();
    assert_eq!((disabled, q.devicetree.len()), (6, 8));
    let uart = q.devicetree.iter().find(|e| e.node == "/soc/serial@7e215040").unwrap();
    assert_eq!(
        uart.set,
        [("interrupts".to_string(), crate::fdt::Value::Cells(vec![0, 93, 1]))]
    );
    // rpi3 keeps loading the kernel's DTB, and qemu gets it unedited.
    let b3 = find("rpi3").unwrap();
    assert_eq!(b3.kernel_dtb(), Some("broadcom/bcm2837-rpi-3-b.dtb"));
    assert!(b3.qemu.unwrap().devicetree.is_empty());
}

#[test]
fn qemu_virt_command_line() {
    let b = find("qemu-virt-aarch64").unwrap();
    assert_eq!(b.image_size(Some(3 * GIB)), 3 * GIB);
    let argv = b
        .qemu
        .as_ref()
        .unwrap()
        .command(Path::new("d.img"), Some(Path::new("u.bin")), None)
        .unwrap();
    assert_eq!(
        argv.join(" "),
        "qemu-system-aarch64 -M virt -cpu cortex-a57 -m 1024 -nographic -nic none -bios u.bin \
         -drive if=none,file=d.img,format=raw,id=hd0 -device virtio-blk-device,drive=hd0"
    );
}

#[test]
fn find_by_path_and_unknown_name() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("boards/rpi4.toml");
    assert_eq!(find(path.to_str().unwrap()).unwrap().name, "rpi4");
    let e = find("no-such-board").unwrap_err().to_string();
    assert!(
        e.contains("no-such-board") && e.contains("rpi3") && e.contains("/usr/share/arbor/boards"),
        "{e}"
    );
}

#[test]
fn gpt_with_blobs_explicit_start_and_uuid_root() {
    let text = r#"
name = "sunxi"
arch = "armv7hl"
partition_table = "gpt"
size = "64MiB"
bootloader = "uboot-uenv"
root = "uuid"

[[blobs]]
from = "/usr/share/uboot/x/u-boot-sunxi-with-spl.bin"
offset = "128KiB"
size = "1MiB"

[[partitions]]
role = "root"
label = "root"
size = "rest"
fs = "ext4"
start = "4MiB"
bootable = true
"#;
    let b = parse_text(text).unwrap();
    assert_eq!(b.boot_prefix(), "/boot");
    assert_eq!(b.root_karg("1234-abcd"), "root=UUID=1234-abcd");
    assert_eq!(
        b.partitions[0].kind,
        PartType::Gpt("69DAD710-2CE4-4E3C-B16C-21A1D49ABED3".into())
    );
    let placed = b.layout(b.size).unwrap();
    assert_eq!(placed[0].start, 4 * MIB);
    // The backup GPT keeps the last 33 sectors.
    assert_eq!(placed[0].end(), 64 * MIB - 33 * 512);
    check_golden("gpt-blobs.txt", &b.describe_layout(b.size).unwrap());

    // Without an explicit start, the first partition goes after the blobs, on a MiB boundary.
    let b = parse_text(&text.replace("start = \"4MiB\"\n", "")).unwrap();
    assert_eq!(b.layout(b.size).unwrap()[0].start, 2 * MIB);
}

#[test]
fn defaults_fill_types_and_start() {
    let b = parse_text(BASE).unwrap();
    assert_eq!(b.partition_table, PartitionTable::Mbr);
    assert_eq!(b.root, RootBy::Label);
    assert_eq!(b.partitions[0].start, Start::After);
    assert_eq!(b.partitions[0].kind, PartType::Mbr(0x83));
    let placed = b.layout(GIB).unwrap();
    assert_eq!((placed[0].start, placed[0].size), (MIB, 256 * MIB));
    assert_eq!((placed[1].start, placed[1].size), (257 * MIB, GIB - 257 * MIB));
    let b = parse_text(&BASE.replace("name = \"t\"", "name = \"t\"\npartition_table = \"gpt\"")).unwrap();
    assert_eq!(
        b.partitions[0].kind,
        PartType::Gpt("BC13C2FF-59E6-4262-A352-B275FD6F7172".into())
    );
    assert_eq!(
        b.partitions[1].kind,
        PartType::Gpt("B921B045-1DF0-41C3-AF44-4C6F280D3FAE".into())
    );
}

#[test]
fn layout_refuses_small_images() {
    let b = parse_text(BASE).unwrap();
    let e = b.layout(200 * MIB).unwrap_err().to_string();
    assert!(e.contains("image too small") && e.contains("\"boot\""), "{e}");
    let e = b.layout(257 * MIB).unwrap_err().to_string();
    assert!(e.contains("image too small") && e.contains("\"root\""), "{e}");
    assert!(b.layout(GIB + 1).unwrap_err().to_string().contains("multiple of 512"));
}

/// Each case edits [`BASE`] and names what the error must mention.
#[test]
fn invalid_boards_name_file_key_and_allowed_values() {
    let add_part = |extra: &str| format!("{BASE}\n[[partitions]]\n{extra}\n");
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("unknown key", BASE.replace("arch =", "colour = \"red\"\narch ="), &["colour", "unknown field"]),
        (
            "unknown partition key",
            BASE.replace("bootable = true", "bootable = true\nflags = 3"),
            &["flags", "unknown field"],
        ),
        ("unknown flavour", BASE.replace("\"uboot-extlinux\"", "\"grub\""), &[
            "boards/t.toml: bootloader:",
            "\"grub\"",
            "rpi-uboot-extlinux, uboot-extlinux, uboot-uenv",
        ]),
        ("unknown fs", BASE.replace("fs = \"ext4\"\nbootable", "fs = \"btrfs\"\nbootable"), &[
            "partitions[0].fs",
            "vfat, ext4",
        ]),
        ("unknown role", BASE.replace("role = \"boot\"", "role = \"swap\""), &[
            "partitions[0].role",
            "firmware, boot, root",
        ]),
        ("unknown table", BASE.replace("arch =", "partition_table = \"apm\"\narch ="), &[
            "partition_table",
            "mbr, gpt",
        ]),
        ("unknown arch", BASE.replace("\"aarch64\"", "\"x86_64\""), &["arch", "aarch64, armv7hl"]),
        ("unknown root", BASE.replace("arch =", "root = \"partuuid\"\narch ="), &["root", "label, uuid"]),
        ("boot on fat", BASE.replace("fs = \"ext4\"\nbootable", "fs = \"vfat\"\nbootable"), &[
            "partitions[0].fs",
            "/boot needs a filesystem with symlinks and atomic rename: ext4",
        ]),
        (
            "missing root",
            BASE.split("[[partitions]]\nrole = \"root\"").next().unwrap().to_string(),
            &["partitions", "no partition with role \"root\""],
        ),
        ("two roots", BASE.replace("role = \"boot\"", "role = \"root\""), &["partitions[1].role", "second root"]),
        ("rest not last", add_part("role = \"firmware\"\nlabel = \"FW\"\nsize = \"1MiB\"\nfs = \"vfat\""), &[
            "partitions[1].size",
            "only allowed for the last",
        ]),
        ("bad size unit", BASE.replace("\"256MiB\"", "\"256MB\""), &["partitions[0].size", "GiB, MiB, KiB"]),
        ("unaligned start", BASE.replace("bootable = true", "bootable = true\nstart = 1000"), &[
            "partitions[0].start",
            "512-byte sector",
        ]),
        ("odd size", BASE.replace("\"256MiB\"", "1000"), &["partitions[0].size", "multiple of 512"]),
        ("overlap", BASE.replace("fs = \"ext4\"\n\"", "fs = \"ext4\"\nstart = \"2MiB\"\n\"").replace("size = \"rest\"\nfs = \"ext4\"", "size = \"rest\"\nfs = \"ext4\"\nstart = \"2MiB\""), &[
            "overlaps partition 1",
        ]),
        ("too small", BASE.replace("\"1GiB\"", "\"200MiB\""), &["partitions", "image too small"]),
        ("mbr type as guid", BASE.replace("bootable = true", "bootable = true\ntype = \"0FC63DAF-8483-4772-8E79-3D69D8477DE4\""), &[
            "partitions[0].type",
            "MBR",
        ]),
        ("mbr type too big", BASE.replace("bootable = true", "bootable = true\ntype = 300"), &["partitions[0].type", "0xff"]),
        ("long label", BASE.replace("label = \"boot\"", "label = \"a-very-long-label-indeed\""), &[
            "partitions[0].label",
            "1 to 16 ASCII",
        ]),
        ("blob over table", format!("{BASE}\n[[blobs]]\nfrom = \"/spl.bin\"\noffset = 256\nsize = \"32KiB\"\n"), &[
            "blob /spl.bin",
            "overlaps the mbr partition table",
        ]),
        ("blob over partition", format!("{BASE}\n[[blobs]]\nfrom = \"/spl.bin\"\noffset = \"8KiB\"\nsize = \"32KiB\"\n").replace("bootable = true", "bootable = true\nstart = \"16KiB\""), &[
            "overlaps blob /spl.bin",
        ]),
        ("relative firmware", format!("{BASE}\n[[firmware]]\nfrom = \"boot/x\"\n"), &["firmware[0].from", "absolute"]),
        ("firmware without partition", format!("{BASE}\n[[firmware]]\nfrom = \"/boot/x\"\n"), &[
            "firmware",
            "role \"firmware\"",
        ]),
        ("dotdot", BASE.replace("/usr/share/uboot/x/u-boot.bin", "/usr/../etc/shadow"), &["uboot", "`..`"]),
        ("root in kargs", BASE.replace("arch =", "kernel_args = [\"root=/dev/sda2\"]\narch ="), &["kernel_args[0]", "`root` key"]),
        ("absolute dtb", BASE.replace("arch =", "dtb = \"/boot/x.dtb\"\narch ="), &["dtb", "relative to the kernel's dtb directory"]),
        ("rpi without firmware", BASE.replace("\"uboot-extlinux\"", "\"rpi-uboot-extlinux\""), &["partitions", "role \"firmware\""]),
        ("bootable root beside boot", BASE.replace("fs = \"ext4\"\n\"", "fs = \"ext4\"\nbootable = true\n\"").replace("size = \"rest\"\nfs = \"ext4\"", "size = \"rest\"\nfs = \"ext4\"\nbootable = true"), &[
            "partitions[1].bootable",
        ]),
        ("unknown placeholder", format!("{BASE}\n[qemu]\nbinary = \"q\"\nmachine = \"virt\"\nargs = [\"{{image}}\", \"{{kernel}}\"]\n"), &[
            "qemu.args[1]",
            "{kernel}",
            "{image}, {uboot}, {dtb}",
        ]),
        ("dtb placeholder without dtb", format!("{BASE}\n[qemu]\nbinary = \"q\"\nmachine = \"virt\"\nargs = [\"{{image}}\", \"{{dtb}}\"]\n"), &[
            "qemu.args[1]",
            "`dtb` key",
        ]),
        ("unknown dtb_from", BASE.replace("arch =", "dtb = \"x.dtb\"\ndtb_from = \"bootloader\"\narch ="), &["dtb_from", "kernel, firmware"]),
        ("firmware dt without dtb", BASE.replace("arch =", "dtb_from = \"firmware\"\narch ="), &["dtb_from", "needs `dtb`"]),
        ("firmware dt not on the partition", BASE.replace("arch =", "dtb = \"b/x.dtb\"\ndtb_from = \"firmware\"\narch ="), &["dtb_from", "x.dtb"]),
        ("dt edits without dtb", format!("{BASE}\n[qemu]\nbinary = \"q\"\nmachine = \"virt\"\nargs = [\"{{image}}\"]\n[qemu.devicetree]\ndisable = [\"/soc\"]\n"), &["qemu.devicetree", "`dtb` key"]),
        ("relative dt node", format!("{BASE}\n[qemu]\nbinary = \"q\"\nmachine = \"virt\"\nargs = [\"{{image}}\", \"{{dtb}}\"]\n[qemu.devicetree]\ndisable = [\"soc/x\"]\n").replace("arch =", "dtb = \"x.dtb\"\narch ="), &["qemu.devicetree.disable[0]", "absolute"]),
        ("dt cell too big", format!("{BASE}\n[qemu]\nbinary = \"q\"\nmachine = \"virt\"\nargs = [\"{{image}}\", \"{{dtb}}\"]\n[[qemu.devicetree.edit]]\nnode = \"/soc\"\nset = {{ reg = [4294967296] }}\n").replace("arch =", "dtb = \"x.dtb\"\narch ="), &["qemu.devicetree.edit[0].set.reg", "32-bit"]),
        ("empty dt edit", format!("{BASE}\n[qemu]\nbinary = \"q\"\nmachine = \"virt\"\nargs = [\"{{image}}\", \"{{dtb}}\"]\n[[qemu.devicetree.edit]]\nnode = \"/soc\"\n").replace("arch =", "dtb = \"x.dtb\"\narch ="), &["qemu.devicetree.edit[0]", "does nothing"]),
        ("no image placeholder", format!("{BASE}\n[qemu]\nbinary = \"q\"\nmachine = \"virt\"\nargs = [\"-m\"]\n"), &["qemu.args", "{image}"]),
        ("unclosed placeholder", format!("{BASE}\n[qemu]\nbinary = \"q\"\nmachine = \"virt\"\nargs = [\"{{image\"]\n"), &["qemu.args[0]", "closing"]),
        ("unknown qemu key", format!("{BASE}\n[qemu]\nbinary = \"q\"\nmachine = \"virt\"\nsmp = 4\n"), &["smp", "unknown field"]),
        ("not power of two", format!("{BASE}\n[qemu]\nbinary = \"q\"\nmachine = \"raspi3b\"\nargs = [\"{{image}}\"]\nimage_size_power_of_two = true\n").replace("\"1GiB\"", "\"1536MiB\""), &[
            "size",
            "power of two",
        ]),
    ];
    let mut failures = Vec::new();
    for (what, text, needles) in cases {
        let e = match parse_text(&text) {
            Ok(_) => {
                failures.push(format!("{what}: accepted"));
                continue;
            }
            Err(e) => format!("{e:#}"),
        };
        for n in needles.iter().chain(&["boards/t.toml"]) {
            if !e.contains(n) {
                failures.push(format!("{what}: {n:?} not in: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Starts and sizes near 2^64 are refused with the partition and key named, not
/// wrapped (release) or panicked on (debug).
#[test]
fn partition_offsets_near_2_pow_64_are_refused_naming_the_key() {
    const NEAR: u64 = u64::MAX / 512 * 512; // 2^64 - 512
    let with_start = BASE.replace("bootable = true", &format!("bootable = true\nstart = {}", NEAR - 512));
    let with_size = BASE.replace("\"256MiB\"", &NEAR.to_string());
    let start_and_huge_image = with_start.replace("\"1GiB\"", &NEAR.to_string());
    let size_and_huge_image = with_size.replace("\"1GiB\"", &NEAR.to_string());
    let cases: &[(&str, &str, &[&str])] = &[
        ("start", &with_start, &["partitions[0].start", "\"boot\"", "2^64"]),
        ("size", &with_size, &["partitions[0].size", "\"boot\"", "2^64"]),
        (
            "start, huge image",
            &start_and_huge_image,
            &["partitions[0].start", "2^64"],
        ),
        (
            "size, huge image",
            &size_and_huge_image,
            &["partitions[0].size", "2^64"],
        ),
    ];
    let mut failures = Vec::new();
    for (what, text, needles) in cases {
        let e = match std::panic::catch_unwind(|| parse_text(text)) {
            Ok(Ok(_)) => {
                failures.push(format!("{what}: accepted"));
                continue;
            }
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => {
                failures.push(format!("{what}: panicked"));
                continue;
            }
        };
        for n in needles.iter().chain(&["boards/t.toml"]) {
            if !e.contains(n) {
                failures.push(format!("{what}: {n:?} not in: {e}"));
            }
        }
    }
    // A disk that really ends just below 2^64 (GPT addresses it) is planned, not
    // overflowed on while placing the next partition's default start.
    let b = parse_text(&BASE.replace("name = \"t\"", "name = \"t\"\npartition_table = \"gpt\"")).unwrap();
    match std::panic::catch_unwind(|| b.layout(NEAR)) {
        Ok(Ok(placed)) => assert_eq!(placed[1].end(), NEAR - layout::GPT_TAIL),
        Ok(Err(e)) => failures.push(format!("layout(2^64 - 512): {e:#}")),
        Err(_) => failures.push("layout(2^64 - 512): panicked".into()),
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn boot_counting_needs_a_bootable_fat_partition_and_sane_tries() {
    let fat = "\n[[partitions]]\nrole = \"firmware\"\nlabel = \"FW\"\nsize = \"16MiB\"\nfs = \"vfat\"\n";
    // The FAT partition first and the only bootable one.
    let ok = BASE
        .replace("bootable = true\n", "")
        .replace(
            "uboot = \"/usr/share/uboot/x/u-boot.bin\"\n",
            "uboot = \"/usr/share/uboot/x/u-boot.bin\"\nboot_counting = { tries = 3 }\n",
        )
        .replace(
            "\n[[partitions]]\nrole = \"boot\"",
            &format!("{fat}bootable = true\n\n[[partitions]]\nrole = \"boot\""),
        );
    let b = parse_text(&ok).unwrap_or_else(|e| panic!("{e:#}\n{ok}"));
    assert_eq!(b.boot_counting, Some(BootCounting { tries: 3 }));
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "no tries",
            ok.replace("tries = 3", "tries = 0"),
            &["boot_counting.tries", "1 to 9"],
        ),
        (
            "too many",
            ok.replace("tries = 3", "tries = 10"),
            &["boot_counting.tries"],
        ),
        (
            "fat not bootable",
            ok.replacen("bootable = true\n", "", 1),
            &["boot_counting", "bootable"],
        ),
        (
            "two bootable",
            ok.replace(
                "fs = \"ext4\"\n\n[[partitions]]\nrole = \"root\"",
                "fs = \"ext4\"\nbootable = true\n\n[[partitions]]\nrole = \"root\"",
            ),
            &["boot_counting", "no other bootable"],
        ),
        (
            "uenv",
            ok.replace("uboot-extlinux", "uboot-uenv"),
            &["boot_counting", "uboot-uenv"],
        ),
    ];
    for (what, text, needles) in cases {
        let e = format!("{:#}", parse_text(&text).map(|_| ()).expect_err(what));
        for n in needles.iter().chain(&["boards/t.toml"]) {
            assert!(e.contains(n), "{what}: {n:?} not in: {e}");
        }
    }
}
