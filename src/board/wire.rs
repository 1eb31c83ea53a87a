//! A board file as written: TOML → [`Wire`], every key checked, nothing resolved.
//!
//! Enumerations stay strings here so that resolving can name the file, the key
//! and the allowed values in one message (serde's own message names neither).

use serde::Deserialize;

/// A size as written: bytes as an integer, or a string with a unit (`"256MiB"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(super) enum WireSize {
    /// Bytes.
    Bytes(u64),
    /// `"1GiB"`, `"512KiB"`, `"1048576"`, or `"rest"` where allowed.
    Text(String),
}

/// A partition type as written: an MBR type byte or a GPT type GUID.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(super) enum WireType {
    /// MBR system id (`0x0c`, `0x83`).
    Byte(i64),
    /// GPT partition type GUID.
    Guid(String),
}

/// The whole board file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Wire {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub arch: String,
    #[serde(default)]
    pub compatible: Vec<String>,
    #[serde(default = "default_table")]
    pub partition_table: String,
    pub size: WireSize,
    pub partitions: Vec<WirePartition>,
    #[serde(default)]
    pub firmware: Vec<WireFirmware>,
    #[serde(default)]
    pub blobs: Vec<WireBlob>,
    pub bootloader: String,
    pub uboot: Option<String>,
    #[serde(default)]
    pub kernel_args: Vec<String>,
    #[serde(default = "default_root")]
    pub root: String,
    pub dtb: Option<String>,
    pub dtb_from: Option<String>,
    #[serde(default)]
    pub modules: Vec<String>,
    pub qemu: Option<WireQemu>,
    pub boot_counting: Option<WireBootCounting>,
}

/// The `boot_counting` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireBootCounting {
    pub tries: i64,
}

fn default_table() -> String {
    "mbr".to_string()
}

fn default_root() -> String {
    "label".to_string()
}

/// One `[[partitions]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WirePartition {
    pub role: String,
    pub label: String,
    pub size: WireSize,
    pub fs: String,
    #[serde(rename = "type")]
    pub kind: Option<WireType>,
    #[serde(default)]
    pub bootable: bool,
    pub start: Option<WireSize>,
}

/// One `[[firmware]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireFirmware {
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub optional: bool,
    pub package: Option<String>,
}

/// One `[[blobs]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireBlob {
    pub from: String,
    pub offset: WireSize,
    pub size: WireSize,
}

/// The `[qemu]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireQemu {
    pub binary: String,
    pub machine: String,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub image_size_power_of_two: bool,
    pub timeout_secs: Option<u64>,
    pub devicetree: Option<WireDevicetree>,
}

/// `[qemu.devicetree]`: edits to the DT qemu is given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireDevicetree {
    /// Nodes to give `status = "disabled"`.
    #[serde(default)]
    pub disable: Vec<String>,
    #[serde(default)]
    pub edit: Vec<WireDtEdit>,
}

/// One `[[qemu.devicetree.edit]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireDtEdit {
    pub node: String,
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, WireDtValue>,
    #[serde(default)]
    pub delete: Vec<String>,
}

/// A property value: a string or a list of 32-bit cells.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum WireDtValue {
    Str(String),
    Cells(Vec<i64>),
}
