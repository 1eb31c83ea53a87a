//! [`Wire`] → [`Board`]: names checked against their tables, defaults filled in,
//! every rule a board must follow checked, each error naming the file and key.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Result, anyhow, bail};

use super::wire::{
    Wire, WireBlob, WireDevicetree, WireDtValue, WireFirmware, WirePartition, WireQemu, WireSize, WireType,
};
use super::{
    Blob, Board, DTB_FROM, DtbFrom, FLAVOURS, FSES, FirmwareFile, Flavour, Fs, PartSize, PartType, Partition,
    PartitionTable, QEMU_PLACEHOLDERS, Qemu, ROLES, ROOT_BY, Role, Start, TABLES, size,
};
use crate::arch::Arch;

/// Default seconds a qemu boot test waits for its marker.
const DEFAULT_QEMU_TIMEOUT: u64 = 120;

/// Arches a board can run.
const BOARD_ARCHES: &[Arch] = &[Arch::Aarch64, Arch::Armv7hl];

/// GPT type GUIDs (the Discoverable Partitions Specification).
const GPT_BASIC_DATA: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
const GPT_XBOOTLDR: &str = "BC13C2FF-59E6-4262-A352-B275FD6F7172";
const GPT_ROOT_ARM64: &str = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE";
const GPT_ROOT_ARM: &str = "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3";

/// Builds errors that start with the file and the key.
struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, key: &str, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("{}: {key}: {msg}", self.file.display())
    }

    /// Looks `value` up in a name table, or lists the allowed names.
    fn pick<T: Copy>(&self, key: &str, what: &str, value: &str, table: &[(&str, T)]) -> Result<T> {
        table.iter().find(|(n, _)| *n == value).map(|(_, v)| *v).ok_or_else(|| {
            let allowed: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            self.err(
                key,
                format!("unknown {what} {value:?}: allowed are {}", allowed.join(", ")),
            )
        })
    }

    fn size(&self, key: &str, s: &WireSize) -> Result<u64> {
        match s {
            WireSize::Bytes(n) => Ok(*n),
            WireSize::Text(t) => size::parse(t).map_err(|e| self.err(key, e)),
        }
    }

    /// An absolute path inside the tree, without `..` (globs allowed where `glob` is set).
    fn tree_path(&self, key: &str, p: &str, glob: bool) -> Result<String> {
        if !p.starts_with('/') {
            bail!(self.err(key, format!("{p:?} must be an absolute path inside the tree")));
        }
        if p.split('/').any(|c| c == "..") {
            bail!(self.err(key, format!("{p:?} must not contain `..`")));
        }
        if glob {
            glob::Pattern::new(p).map_err(|e| self.err(key, format!("invalid glob {p:?}: {e}")))?;
        } else if p.contains(['*', '?', '[']) {
            bail!(self.err(key, format!("{p:?}: globs are not allowed here")));
        }
        Ok(p.to_string())
    }

    /// A path relative to some root, without `..`; a leading `/` is dropped.
    fn relative_path(&self, key: &str, p: &str) -> Result<String> {
        let rel = p.trim_start_matches('/');
        if rel.split('/').any(|c| c == "..") {
            bail!(self.err(key, format!("{p:?} must not contain `..`")));
        }
        Ok(rel.to_string())
    }
}

/// Resolves a parsed board file.
pub(super) fn resolve(file: &Path, w: Wire) -> Result<Board> {
    let cx = Ctx { file };
    if w.name.is_empty() || !w.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        bail!(cx.err("name", format!("{:?}: use letters, digits, `-`, `_` and `.`", w.name)));
    }
    let arch: Arch = w.arch.parse().map_err(|e| cx.err("arch", e))?;
    if !BOARD_ARCHES.contains(&arch) {
        let allowed: Vec<&str> = BOARD_ARCHES.iter().map(|a| a.rpm_name()).collect();
        bail!(cx.err(
            "arch",
            format!("{arch} is not a board architecture: allowed are {}", allowed.join(", "))
        ));
    }
    if let Some(i) = w.compatible.iter().position(|c| c.trim().is_empty()) {
        bail!(cx.err(&format!("compatible[{i}]"), "empty string"));
    }
    let table = cx.pick("partition_table", "partition table", &w.partition_table, TABLES)?;
    let image_size = cx.size("size", &w.size)?;
    if image_size == 0 || image_size % 512 != 0 {
        bail!(cx.err("size", format!("{image_size} bytes is not a positive multiple of 512")));
    }

    let partitions = partitions(&cx, table, arch, &w.partitions)?;
    let firmware = w
        .firmware
        .iter()
        .enumerate()
        .map(|(i, f)| firmware(&cx, i, f))
        .collect::<Result<Vec<_>>>()?;
    let blobs = w
        .blobs
        .iter()
        .enumerate()
        .map(|(i, b)| blob(&cx, i, b))
        .collect::<Result<Vec<_>>>()?;
    let bootloader = cx.pick("bootloader", "bootloader flavour", &w.bootloader, FLAVOURS)?;
    let uboot = w
        .uboot
        .as_deref()
        .map(|u| cx.tree_path("uboot", u, false))
        .transpose()?;
    let has_firmware_part = partitions.iter().any(|p| p.role == Role::Firmware);
    if !firmware.is_empty() && !has_firmware_part {
        bail!(cx.err("firmware", "firmware files need a partition with role \"firmware\""));
    }
    if bootloader == Flavour::RpiUbootExtlinux {
        if !has_firmware_part {
            bail!(cx.err(
                "partitions",
                "rpi-uboot-extlinux needs a partition with role \"firmware\" (FAT, read by the Raspberry Pi firmware)"
            ));
        }
        if uboot.is_none() {
            bail!(cx.err(
                "uboot",
                "rpi-uboot-extlinux needs the tree path of u-boot.bin (the firmware loads it as kernel=u-boot.bin)"
            ));
        }
    }
    if w.boot_counting.is_none() {
        check_bootable(&cx, &partitions)?;
    }
    let boot_counting = w
        .boot_counting
        .as_ref()
        .map(|b| boot_counting(&cx, b, bootloader, &partitions))
        .transpose()?;

    for (i, arg) in w.kernel_args.iter().enumerate() {
        let key = format!("kernel_args[{i}]");
        if arg.trim().is_empty() {
            bail!(cx.err(&key, "empty argument"));
        }
        if arg.starts_with("root=") {
            bail!(cx.err(
                &key,
                format!("{arg:?}: root= is made by arbor from the `root` key (label or uuid)")
            ));
        }
    }
    let root = cx.pick("root", "root naming", &w.root, ROOT_BY)?;
    let dtb = w.dtb.as_deref().map(|d| dtb_path(&cx, d)).transpose()?;
    let dtb_from = match &w.dtb_from {
        Some(v) => cx.pick("dtb_from", "device tree source", v, DTB_FROM)?,
        None => DtbFrom::Kernel,
    };
    if dtb_from == DtbFrom::Firmware {
        let Some(d) = &dtb else {
            bail!(cx.err("dtb_from", "\"firmware\" needs `dtb`: the DTB the firmware loads"));
        };
        let name = d.rsplit('/').next().unwrap_or(d);
        // The firmware finds it by name in the root of its partition.
        if !firmware.iter().any(|f| f.dest(name) == name) {
            bail!(cx.err(
                "dtb_from",
                format!("\"firmware\": no [[firmware]] entry puts {name} at the top of the firmware partition")
            ));
        }
    }
    for (i, m) in w.modules.iter().enumerate() {
        if m.is_empty() || !m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            bail!(cx.err(
                &format!("modules[{i}]"),
                format!("{m:?} is not a module name (like \"virtio_blk\")")
            ));
        }
    }
    let qemu = w
        .qemu
        .as_ref()
        .map(|q| qemu(&cx, q, uboot.is_some(), dtb.is_some(), image_size))
        .transpose()?;

    let board = Board {
        name: w.name,
        description: w.description,
        source: file.to_path_buf(),
        arch,
        compatible: w.compatible,
        partition_table: table,
        size: image_size,
        partitions,
        firmware,
        blobs,
        bootloader,
        uboot,
        kernel_args: w.kernel_args,
        root,
        dtb,
        dtb_from,
        modules: w.modules,
        qemu,
        boot_counting,
    };
    // The default size must hold the layout: catches overlaps and "too small" at load time.
    board.layout(board.size).map_err(|e| {
        cx.err(
            "partitions",
            format!("at the default size {}: {e:#}", size::show(board.size)),
        )
    })?;
    Ok(board)
}

/// Boot counting needs arbor's boot script to be what U-Boot's distro boot
/// finds first: on the only bootable partition, a FAT one (U-Boot writes its
/// counter there with `save`), and the kernels on an ext4 /boot beside it.
fn boot_counting(
    cx: &Ctx,
    w: &super::wire::WireBootCounting,
    bootloader: Flavour,
    partitions: &[Partition],
) -> Result<super::BootCounting> {
    if !(1..=9).contains(&w.tries) {
        bail!(cx.err(
            "boot_counting.tries",
            format!("{}: a new deployment gets 1 to 9 boots", w.tries)
        ));
    }
    if bootloader == Flavour::UbootUenv {
        bail!(cx.err(
            "boot_counting",
            "the uboot-uenv flavour boots through the board's own script; boot counting needs uboot-extlinux or rpi-uboot-extlinux"
        ));
    }
    let fat = partitions.iter().find(|p| p.role == Role::Firmware);
    if !fat.is_some_and(|p| p.bootable) || partitions.iter().filter(|p| p.bootable).count() != 1 {
        bail!(cx.err(
            "boot_counting",
            "needs a partition with role \"firmware\" (vfat) marked bootable, and no other bootable one: \
             U-Boot's distro boot must find arbor's boot.scr there before any extlinux.conf"
        ));
    }
    if !partitions.iter().any(|p| p.role == Role::Boot) {
        bail!(cx.err(
            "boot_counting",
            "needs a partition with role \"boot\" (ext4): U-Boot loads the kernels from it"
        ));
    }
    Ok(super::BootCounting { tries: w.tries as u32 })
}

fn partitions(cx: &Ctx, table: PartitionTable, arch: Arch, wire: &[WirePartition]) -> Result<Vec<Partition>> {
    if wire.is_empty() {
        bail!(cx.err(
            "partitions",
            "no partitions: a board needs at least one with role \"root\""
        ));
    }
    if table == PartitionTable::Mbr && wire.len() > 4 {
        bail!(cx.err(
            "partitions",
            format!(
                "{} partitions: an MBR holds at most 4 primary partitions; use partition_table = \"gpt\"",
                wire.len()
            )
        ));
    }
    let mut out: Vec<Partition> = Vec::new();
    let mut labels = BTreeSet::new();
    for (i, wp) in wire.iter().enumerate() {
        let key = |k: &str| format!("partitions[{i}].{k}");
        let role = cx.pick(&key("role"), "partition role", &wp.role, ROLES)?;
        let fs = cx.pick(&key("fs"), "filesystem", &wp.fs, FSES)?;
        if let Some(prev) = out.iter().find(|p| p.role == role) {
            bail!(cx.err(
                &key("role"),
                format!(
                    "a second {role} partition (the first is {:?}): each role appears at most once",
                    prev.label
                )
            ));
        }
        match (role, fs) {
            (Role::Boot, Fs::Vfat) => bail!(cx.err(
                &key("fs"),
                "vfat for role boot: /boot needs a filesystem with symlinks and atomic rename: ext4"
            )),
            (Role::Root, Fs::Vfat) => bail!(cx.err(&key("fs"), "vfat for role root: the ostree sysroot needs ext4")),
            (Role::Firmware, Fs::Ext4) => bail!(cx.err(
                &key("fs"),
                "ext4 for role firmware: boot ROMs and firmware read FAT: vfat"
            )),
            _ => {}
        }
        let max_label = if fs == Fs::Vfat { 11 } else { 16 };
        if wp.label.is_empty()
            || wp.label.len() > max_label
            || !wp.label.is_ascii()
            || wp.label.contains(char::is_whitespace)
        {
            bail!(cx.err(
                &key("label"),
                format!(
                    "{:?}: a {fs} label is 1 to {max_label} ASCII characters without spaces",
                    wp.label
                )
            ));
        }
        if !labels.insert(wp.label.to_ascii_lowercase()) {
            bail!(cx.err(&key("label"), format!("{:?} is used twice", wp.label)));
        }
        let size = match &wp.size {
            WireSize::Text(t) if t == "rest" => {
                if i + 1 != wire.len() {
                    bail!(cx.err(&key("size"), "\"rest\" is only allowed for the last partition"));
                }
                PartSize::Rest
            }
            s => {
                let n = cx.size(&key("size"), s)?;
                if n == 0 || n % 512 != 0 {
                    bail!(cx.err(
                        &key("size"),
                        format!("{n} bytes is not a positive multiple of 512 (one sector)")
                    ));
                }
                PartSize::Bytes(n)
            }
        };
        let start = match &wp.start {
            None => Start::After,
            Some(s) => {
                let n = cx.size(&key("start"), s)?;
                if n % 512 != 0 {
                    bail!(cx.err(&key("start"), format!("{n} is not on a 512-byte sector boundary")));
                }
                Start::At(n)
            }
        };
        let kind = part_type(cx, &key("type"), table, arch, role, fs, wp.kind.as_ref())?;
        out.push(Partition {
            role,
            label: wp.label.clone(),
            size,
            fs,
            kind,
            bootable: wp.bootable,
            start,
        });
    }
    if !out.iter().any(|p| p.role == Role::Root) {
        bail!(cx.err("partitions", "no partition with role \"root\" (the ostree sysroot)"));
    }
    Ok(out)
}

fn part_type(
    cx: &Ctx,
    key: &str,
    table: PartitionTable,
    arch: Arch,
    role: Role,
    fs: Fs,
    written: Option<&WireType>,
) -> Result<PartType> {
    match (table, written) {
        (PartitionTable::Mbr, None) => Ok(PartType::Mbr(if fs == Fs::Vfat { 0x0c } else { 0x83 })),
        (PartitionTable::Mbr, Some(WireType::Byte(b))) => match u8::try_from(*b) {
            Ok(b) if b != 0 => Ok(PartType::Mbr(b)),
            _ => bail!(cx.err(key, format!("{b} is not an MBR type byte (1 to 0xff)"))),
        },
        (PartitionTable::Mbr, Some(WireType::Guid(g))) => {
            bail!(cx.err(
                key,
                format!("{g:?}: an MBR partition type is a byte like 0x83, not a GUID")
            ))
        }
        (PartitionTable::Gpt, None) => Ok(PartType::Gpt(
            match role {
                Role::Firmware => GPT_BASIC_DATA,
                Role::Boot => GPT_XBOOTLDR,
                Role::Root if arch == Arch::Armv7hl => GPT_ROOT_ARM,
                Role::Root => GPT_ROOT_ARM64,
            }
            .to_string(),
        )),
        (PartitionTable::Gpt, Some(WireType::Guid(g))) => {
            let ok = g.len() == 36
                && g.char_indices().all(|(i, c)| {
                    if [8, 13, 18, 23].contains(&i) {
                        c == '-'
                    } else {
                        c.is_ascii_hexdigit()
                    }
                });
            if !ok {
                bail!(cx.err(
                    key,
                    format!("{g:?} is not a GUID (XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX)")
                ));
            }
            Ok(PartType::Gpt(g.to_ascii_uppercase()))
        }
        (PartitionTable::Gpt, Some(WireType::Byte(b))) => {
            bail!(cx.err(
                key,
                format!("{b}: a GPT partition type is a GUID string, not an MBR byte")
            ))
        }
    }
}

/// U-Boot's distro boot reads the first bootable partition: that must be the one holding /boot.
fn check_bootable(cx: &Ctx, parts: &[Partition]) -> Result<()> {
    let boot_holder = parts
        .iter()
        .position(|p| p.role == Role::Boot)
        .or_else(|| parts.iter().position(|p| p.role == Role::Root));
    for (i, p) in parts.iter().enumerate() {
        if p.bootable && Some(i) != boot_holder {
            bail!(cx.err(
                &format!("partitions[{i}].bootable"),
                format!("{} partition {:?} is marked bootable, but U-Boot reads its config from the first bootable partition: mark only the partition holding /boot", p.role, p.label)
            ));
        }
    }
    Ok(())
}

fn firmware(cx: &Ctx, i: usize, f: &WireFirmware) -> Result<FirmwareFile> {
    let from = cx.tree_path(&format!("firmware[{i}].from"), &f.from, true)?;
    let to = cx.relative_path(&format!("firmware[{i}].to"), &f.to)?;
    Ok(FirmwareFile {
        from,
        to,
        optional: f.optional,
        package: f.package.clone(),
    })
}

fn blob(cx: &Ctx, i: usize, b: &WireBlob) -> Result<Blob> {
    let from = cx.tree_path(&format!("blobs[{i}].from"), &b.from, false)?;
    let offset = cx.size(&format!("blobs[{i}].offset"), &b.offset)?;
    let size = cx.size(&format!("blobs[{i}].size"), &b.size)?;
    if size == 0 {
        bail!(cx.err(&format!("blobs[{i}].size"), "must be positive"));
    }
    Ok(Blob { from, offset, size })
}

fn dtb_path(cx: &Ctx, d: &str) -> Result<String> {
    if d.starts_with('/') {
        bail!(cx.err(
            "dtb",
            format!("{d:?} is relative to the kernel's dtb directory, like \"broadcom/bcm2837-rpi-3-b.dtb\"")
        ));
    }
    let rel = cx.relative_path("dtb", d)?;
    if !rel.ends_with(".dtb") {
        bail!(cx.err("dtb", format!("{d:?} does not end in .dtb")));
    }
    Ok(rel)
}

fn qemu(cx: &Ctx, q: &WireQemu, has_uboot: bool, has_dtb: bool, image_size: u64) -> Result<Qemu> {
    if q.binary.trim().is_empty() {
        bail!(cx.err("qemu.binary", "empty"));
    }
    if q.machine.trim().is_empty() {
        bail!(cx.err("qemu.machine", "empty"));
    }
    let mut uses_image = false;
    for (i, arg) in q.args.iter().enumerate() {
        let key = format!("qemu.args[{i}]");
        substitute(arg, |name| {
            match name {
                "image" => uses_image = true,
                "uboot" if !has_uboot => bail!("{{uboot}} needs the board's `uboot` key"),
                "dtb" if !has_dtb => bail!("{{dtb}} needs the board's `dtb` key"),
                "uboot" | "dtb" => {}
                _ => bail!(
                    "unknown placeholder {{{name}}}: allowed are {}",
                    QEMU_PLACEHOLDERS
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
            Ok(String::new())
        })
        .map_err(|e| cx.err(&key, format!("{arg:?}: {e:#}")))?;
    }
    if !uses_image {
        bail!(cx.err(
            "qemu.args",
            "no argument uses {image}: qemu would boot without the image"
        ));
    }
    if q.image_size_power_of_two && !image_size.is_power_of_two() {
        bail!(cx.err(
            "size",
            format!(
                "{} is not a power of two, which qemu.image_size_power_of_two requires",
                size::show(image_size)
            )
        ));
    }
    let timeout_secs = q.timeout_secs.unwrap_or(DEFAULT_QEMU_TIMEOUT);
    if timeout_secs == 0 {
        bail!(cx.err("qemu.timeout_secs", "must be positive"));
    }
    let devicetree = match &q.devicetree {
        Some(_) if !has_dtb => bail!(cx.err(
            "qemu.devicetree",
            "edits the DT given as {dtb}, which needs the board's `dtb` key"
        )),
        Some(d) => devicetree(cx, d)?,
        None => Vec::new(),
    };
    Ok(Qemu {
        binary: q.binary.clone(),
        machine: q.machine.clone(),
        cpu: q.cpu.clone(),
        memory: q.memory.clone(),
        args: q.args.clone(),
        image_size_power_of_two: q.image_size_power_of_two,
        timeout_secs,
        devicetree,
    })
}

/// `[qemu.devicetree]` as edits: the `disable` list first, then each `edit`.
fn devicetree(cx: &Ctx, d: &WireDevicetree) -> Result<Vec<crate::fdt::Edit>> {
    let node = |key: &str, n: &str| -> Result<String> {
        if !n.starts_with('/') || n.contains("//") || n.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!(cx.err(
                key,
                format!("{n:?} is not an absolute device tree node path (/soc/serial@7e215040)")
            ));
        }
        Ok(n.to_string())
    };
    let mut edits = Vec::new();
    for (i, n) in d.disable.iter().enumerate() {
        edits.push(crate::fdt::Edit {
            node: node(&format!("qemu.devicetree.disable[{i}]"), n)?,
            set: vec![("status".into(), crate::fdt::Value::Str("disabled".into()))],
            delete: Vec::new(),
        });
    }
    for (i, e) in d.edit.iter().enumerate() {
        let key = format!("qemu.devicetree.edit[{i}]");
        let mut set = Vec::new();
        for (prop, v) in &e.set {
            let value = match v {
                WireDtValue::Str(s) => crate::fdt::Value::Str(s.clone()),
                WireDtValue::Cells(c) => crate::fdt::Value::Cells(
                    c.iter()
                        .map(|&x| u32::try_from(x))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| cx.err(&format!("{key}.set.{prop}"), "cells are 32-bit unsigned numbers"))?,
                ),
            };
            set.push((prop.clone(), value));
        }
        if set.is_empty() && e.delete.is_empty() {
            bail!(cx.err(&key, "neither `set` nor `delete`: the edit does nothing"));
        }
        edits.push(crate::fdt::Edit {
            node: node(&format!("{key}.node"), &e.node)?,
            set,
            delete: e.delete.clone(),
        });
    }
    Ok(edits)
}

/// Replaces each `{name}` in `arg` by `value(name)`; a `{` without its `}` is an error.
pub(super) fn substitute(arg: &str, mut value: impl FnMut(&str) -> Result<String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| anyhow!("`{{` without a closing `}}`"))?;
        out.push_str(&value(&after[..close])?);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
