//! Boards: what an SD-card image for one machine looks like, loaded from `boards/*.toml`.
//!
//! A board file names the partitions (in disk order) with their role, the
//! files the SoC's firmware needs, raw bootloader blobs, the bootloader
//! flavour, kernel arguments, the DTB and how to boot the image in qemu.
//! [`load`] parses (every key checked) and resolves it into a [`Board`] with
//! defaults filled in; it also plans the partitions at the default image size,
//! so a broken layout fails when the file is read, before any work.
//! [`Board::layout`] is the pure partition plan the image writer follows.

mod layout;
mod resolve;
pub mod size;
mod wire;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub use self::layout::Placed;
use crate::arch::Arch;

/// Directories [`find`] and [`list`] search, in order: the source tree, then the installed copy.
pub fn board_dirs() -> Vec<PathBuf> {
    vec![
        Path::new(env!("CARGO_MANIFEST_DIR")).join("boards"),
        PathBuf::from("/usr/share/arbor/boards"),
    ]
}

/// A board with every default filled in and every key validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    /// Short name (`rpi3`); the file is `boards/<name>.toml`.
    pub name: String,
    /// One line for humans.
    pub description: String,
    /// The file this board was loaded from (for messages).
    pub source: PathBuf,
    /// The architecture of trees this board runs.
    pub arch: Arch,
    /// Device-tree compatible strings (most specific first), for checking a tree fits.
    pub compatible: Vec<String>,
    /// MBR or GPT.
    pub partition_table: PartitionTable,
    /// Default image size in bytes (`size`).
    pub size: u64,
    /// Partitions in disk order.
    pub partitions: Vec<Partition>,
    /// Files copied from the tree into the firmware partition.
    pub firmware: Vec<FirmwareFile>,
    /// Raw bootloader images written at byte offsets of the disk.
    pub blobs: Vec<Blob>,
    /// How the machine gets from power-on to the kernel.
    pub bootloader: Flavour,
    /// Tree path of the U-Boot binary, when it is copied (rpi) or emulated (qemu `-bios`).
    pub uboot: Option<String>,
    /// Kernel arguments for every deployment (without `root=`, which [`Board::root_karg`] makes).
    pub kernel_args: Vec<String>,
    /// How `root=` names the root partition.
    pub root: RootBy,
    /// DTB path relative to the kernel's dtb directory; `None` when the firmware provides the DT.
    pub dtb: Option<String>,
    /// Whether the bootloader loads [`Board::dtb`] from the booted kernel or
    /// passes on the DT the firmware built from its copy (see [`DtbFrom`]).
    pub dtb_from: DtbFrom,
    /// Kernel modules the initramfs needs to reach the root filesystem.
    pub modules: Vec<String>,
    /// How to boot the image in qemu, when qemu emulates this board.
    pub qemu: Option<Qemu>,
    /// Boot counting: a new deployment gets this many tries before U-Boot
    /// boots the previous one (see [`crate::device::bootcount`]).
    pub boot_counting: Option<BootCounting>,
}

/// `dtb_from`: who hands the kernel its device tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtbFrom {
    /// The bootloader loads `dtb` from the booted deployment's kernel
    /// (extlinux `fdt`), so a kernel update brings its DT along.
    Kernel,
    /// The bootloader passes on the DT the board's firmware loaded from the
    /// firmware partition (`dtb`'s file name there) and adjusted: on a
    /// Raspberry Pi, config.txt's `dtoverlay`/`dtparam`, the memory size, the
    /// MAC address and serial number — as Raspberry Pi OS boots.
    Firmware,
}

/// `boot_counting = { tries = N }`: arbor's boot script (`boot.scr` on the
/// bootable FAT partition) counts the boots of a deployment on trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootCounting {
    /// Boots a new deployment gets before the previous one is booted again (1 to 9).
    pub tries: u32,
}

/// The partition table type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionTable {
    /// DOS/MBR: at most 4 primary partitions, type bytes; what the Raspberry Pi boot ROM reads.
    Mbr,
    /// GUID partition table, type GUIDs.
    Gpt,
}

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The FAT partition the SoC's boot ROM or firmware reads.
    Firmware,
    /// ostree's `/boot` (kernels, initramfs, BLS entries, bootloader config).
    Boot,
    /// The ostree sysroot.
    Root,
}

/// A filesystem arbor can create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fs {
    /// FAT (FAT32 where big enough).
    Vfat,
    /// ext4.
    Ext4,
}

/// The partition type written in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartType {
    /// MBR system id.
    Mbr(u8),
    /// GPT type GUID, upper case `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`.
    Gpt(String),
}

/// A partition's size as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartSize {
    /// Exactly this many bytes.
    Bytes(u64),
    /// Everything up to the end of the image (last partition only).
    Rest,
}

/// Where a partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the next 1 MiB boundary after the previous partition (or the blobs).
    After,
    /// At this byte offset (a multiple of 512).
    At(u64),
}

/// One partition of the board's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// What it holds.
    pub role: Role,
    /// Filesystem label (and the GPT partition name).
    pub label: String,
    /// Size, or the rest of the image.
    pub size: PartSize,
    /// Filesystem created in it.
    pub fs: Fs,
    /// Type in the partition table (default from fs, role and arch).
    pub kind: PartType,
    /// MBR active flag / GPT legacy-BIOS-bootable attribute: where U-Boot looks for its config.
    pub bootable: bool,
    /// Where it starts.
    pub start: Start,
}

/// A file (or glob) from the tree copied into the firmware partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareFile {
    /// Absolute path in the tree; may be a glob (`/usr/lib/modules/*/dtb/broadcom/*.dtb`).
    pub from: String,
    /// Destination in the partition, without a leading `/`; empty or ending in `/`
    /// is a directory that keeps the source's file name (see [`FirmwareFile::dest`]).
    pub to: String,
    /// A missing source is skipped instead of failing the image.
    pub optional: bool,
    /// The package that ships it, named when it is missing.
    pub package: Option<String>,
}

/// A raw bootloader image written at a byte offset of the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Absolute path in the tree.
    pub from: String,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Bytes reserved for it (the file must not be larger).
    pub size: u64,
}

/// The chain from the SoC to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Raspberry Pi firmware (config.txt, `kernel=u-boot.bin`) → U-Boot → extlinux.conf.
    RpiUbootExtlinux,
    /// U-Boot (from blobs, SPI flash or qemu `-bios`) → extlinux.conf.
    UbootExtlinux,
    /// U-Boot → uEnv.txt as ostree's own U-Boot backend writes it.
    UbootUenv,
}

/// How the `root=` kernel argument names the root partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootBy {
    /// `root=LABEL=<label>`.
    Label,
    /// `root=UUID=<filesystem uuid>`.
    Uuid,
}

/// Booting the image in qemu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qemu {
    /// The system emulator (`qemu-system-aarch64`).
    pub binary: String,
    /// `-M` value.
    pub machine: String,
    /// `-cpu` value; `None` keeps the machine's own.
    pub cpu: Option<String>,
    /// `-m` value; `None` keeps the machine's own (raspi3b only accepts its 1G).
    pub memory: Option<String>,
    /// Further arguments, with the placeholders of [`QEMU_PLACEHOLDERS`].
    pub args: Vec<String>,
    /// qemu's SD card model needs an image whose size is a power of two.
    pub image_size_power_of_two: bool,
    /// How long a boot test waits for its marker.
    pub timeout_secs: u64,
    /// Changes to the DT qemu is given (`{dtb}`) for what qemu's model of the
    /// machine lacks or does differently; never applied to the image.
    pub devicetree: Vec<crate::fdt::Edit>,
}

/// Placeholders qemu `args` may use: the image, the extracted U-Boot, the extracted DTB (host paths).
pub const QEMU_PLACEHOLDERS: &[&str] = &["image", "uboot", "dtb"];

/// Names as written in board files; the tables drive parsing, `Display` and error messages.
const TABLES: &[(&str, PartitionTable)] = &[("mbr", PartitionTable::Mbr), ("gpt", PartitionTable::Gpt)];
const ROLES: &[(&str, Role)] = &[("firmware", Role::Firmware), ("boot", Role::Boot), ("root", Role::Root)];
const FSES: &[(&str, Fs)] = &[("vfat", Fs::Vfat), ("ext4", Fs::Ext4)];
const FLAVOURS: &[(&str, Flavour)] = &[
    ("rpi-uboot-extlinux", Flavour::RpiUbootExtlinux),
    ("uboot-extlinux", Flavour::UbootExtlinux),
    ("uboot-uenv", Flavour::UbootUenv),
];
const ROOT_BY: &[(&str, RootBy)] = &[("label", RootBy::Label), ("uuid", RootBy::Uuid)];
const DTB_FROM: &[(&str, DtbFrom)] = &[("kernel", DtbFrom::Kernel), ("firmware", DtbFrom::Firmware)];

/// The name of `value` in `table`.
fn name_of<T: PartialEq + Copy>(table: &[(&'static str, T)], value: T) -> &'static str {
    table.iter().find(|(_, v)| *v == value).map(|(n, _)| *n).unwrap_or("?")
}

macro_rules! display_by_table {
    ($($ty:ty => $table:ident),* $(,)?) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(name_of($table, *self))
            }
        }
    )*};
}
display_by_table!(PartitionTable => TABLES, Role => ROLES, Fs => FSES, Flavour => FLAVOURS, RootBy => ROOT_BY, DtbFrom => DTB_FROM);

impl fmt::Display for PartType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartType::Mbr(b) => write!(f, "0x{b:02x}"),
            PartType::Gpt(g) => f.write_str(g),
        }
    }
}

impl Board {
    /// The partition with `role`, if the board has one.
    pub fn partition(&self, role: Role) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.role == role)
    }

    /// Where `/boot` lives as the bootloader sees it: `""` when it is its own
    /// partition, `"/boot"` when the bootloader reads it from the root partition.
    pub fn boot_prefix(&self) -> &'static str {
        if self.partition(Role::Boot).is_some() {
            ""
        } else {
            "/boot"
        }
    }

    /// The DTB the bootloader loads from the booted kernel's dtb directory:
    /// [`Board::dtb`] unless the firmware's DT is passed on.
    pub fn kernel_dtb(&self) -> Option<&str> {
        match self.dtb_from {
            DtbFrom::Kernel => self.dtb.as_deref(),
            DtbFrom::Firmware => None,
        }
    }

    /// The file name of [`Board::dtb`] (what the firmware loads from its partition).
    pub fn dtb_file_name(&self) -> Option<&str> {
        self.dtb.as_deref().map(|d| d.rsplit('/').next().unwrap_or(d))
    }

    /// The `root=` kernel argument; `fs_uuid` is the root filesystem's UUID (used with `root = "uuid"`).
    pub fn root_karg(&self, fs_uuid: &str) -> String {
        match self.root {
            RootBy::Label => {
                let label = self.partition(Role::Root).map(|p| p.label.as_str()).unwrap_or("root");
                format!("root=LABEL={label}")
            }
            RootBy::Uuid => format!("root=UUID={fs_uuid}"),
        }
    }

    /// The image size to write: `requested` or the board's default, rounded up
    /// to a power of two when qemu needs one (so the same image boots in both).
    pub fn image_size(&self, requested: Option<u64>) -> u64 {
        let size = requested.unwrap_or(self.size);
        match &self.qemu {
            Some(q) if q.image_size_power_of_two => size.checked_next_power_of_two().unwrap_or(size),
            _ => size,
        }
    }
}

impl FirmwareFile {
    /// Whether `from` is a glob rather than one path.
    pub fn is_glob(&self) -> bool {
        self.from.contains(['*', '?', '['])
    }

    /// Whether `to` names a directory (empty or ending in `/`).
    pub fn to_is_dir(&self) -> bool {
        self.to.is_empty() || self.to.ends_with('/')
    }

    /// The destination in the partition for a source file named `file_name`.
    pub fn dest(&self, file_name: &str) -> String {
        if self.to_is_dir() {
            format!("{}{file_name}", self.to)
        } else {
            self.to.clone()
        }
    }
}

impl Qemu {
    /// The full command line: binary, machine, cpu, memory, then `args` with
    /// placeholders replaced by host paths (`uboot`/`dtb` must be given when used).
    pub fn command(&self, image: &Path, uboot: Option<&Path>, dtb: Option<&Path>) -> Result<Vec<String>> {
        let mut argv = vec![self.binary.clone(), "-M".to_string(), self.machine.clone()];
        if let Some(cpu) = &self.cpu {
            argv.extend(["-cpu".to_string(), cpu.clone()]);
        }
        if let Some(m) = &self.memory {
            argv.extend(["-m".to_string(), m.clone()]);
        }
        for arg in &self.args {
            argv.push(resolve::substitute(arg, |name| {
                let path = match name {
                    "image" => Some(image),
                    "uboot" => uboot,
                    "dtb" => dtb,
                    _ => None,
                };
                path.map(|p| p.display().to_string())
                    .with_context(|| format!("qemu argument {arg:?} needs {{{name}}}, which was not given"))
            })?);
        }
        Ok(argv)
    }
}

/// Reads and validates the board file at `path`.
pub fn load(path: &Path) -> Result<Board> {
    let text = crate::input::read_text(path, "board file", crate::input::CONFIG_CAP)?;
    parse(path, &text)
}

/// Parses and validates board file text; `path` is only used in messages and [`Board::source`].
pub fn parse(path: &Path, text: &str) -> Result<Board> {
    let wire: wire::Wire = toml::from_str(text).with_context(|| format!("parsing board file {}", path.display()))?;
    resolve::resolve(path, wire)
}

/// A board by name (`rpi3`, looked up in [`board_dirs`]) or by path (anything with a `/` or ending in `.toml`).
pub fn find(name_or_path: &str) -> Result<Board> {
    if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
        return load(Path::new(name_or_path));
    }
    let dirs = board_dirs();
    for dir in &dirs {
        let path = dir.join(format!("{name_or_path}.toml"));
        if path.is_file() {
            let board = load(&path)?;
            if board.name != name_or_path {
                bail!(
                    "{}: name: {:?} does not match the file name {name_or_path:?}",
                    path.display(),
                    board.name
                );
            }
            return Ok(board);
        }
    }
    let known: Vec<String> = list()
        .map(|b| b.into_iter().map(|b| b.name).collect())
        .unwrap_or_default();
    bail!(
        "unknown board {name_or_path:?}: looked in {}; known boards: {}",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )
}

/// Every board in [`board_dirs`], sorted by name; a name in an earlier directory hides later ones.
pub fn list() -> Result<Vec<Board>> {
    let mut boards: Vec<Board> = Vec::new();
    for dir in board_dirs() {
        let Ok(read) = std::fs::read_dir(&dir) else { continue };
        let mut paths = Vec::new();
        for entry in read {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                paths.push(path);
            }
        }
        paths.sort();
        for path in paths {
            let board = load(&path)?;
            if !boards.iter().any(|b| b.name == board.name) {
                boards.push(board);
            }
        }
    }
    boards.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(boards)
}

#[cfg(test)]
mod tests;
