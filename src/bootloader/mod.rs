//! What each board's bootloader reads, rendered from the BLS entries libostree writes.
//!
//! libostree's entries in `/boot/loader/entries` are the source of truth (one
//! per deployment, newest first). [`render`] turns them into the files of the
//! board's [`Flavour`] using the templates in `bootloader-configs/` (compiled
//! in, see [`template`]); it is pure, so every flavour has golden tests.
//! Files are put in place with [`crate::atomic::write_beneath`] (write-temp, fsync, rename).

mod bls;
pub mod template;
pub mod uboot;

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

pub use self::bls::{BlsEntry, parse_bls, read_entries, sort_newest_first};
use self::template::{Scope, Template};
use crate::arch::Arch;
use crate::board::{Board, Flavour, Role};

/// The templates, by file name, as shipped in `bootloader-configs/`.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "extlinux.conf.tmpl",
        include_str!("../../bootloader-configs/extlinux.conf.tmpl"),
    ),
    ("uEnv.txt.tmpl", include_str!("../../bootloader-configs/uEnv.txt.tmpl")),
    (
        "config.txt.tmpl",
        include_str!("../../bootloader-configs/config.txt.tmpl"),
    ),
    (
        "cmdline.txt.tmpl",
        include_str!("../../bootloader-configs/cmdline.txt.tmpl"),
    ),
    ("boot.scr.tmpl", include_str!("../../bootloader-configs/boot.scr.tmpl")),
];

/// Where boot-counting boards keep arbor's boot script: the root of the bootable FAT partition.
pub const BOOT_SCRIPT: &str = "boot.scr";
/// The boot-count state file beside it (an environment blob, see [`uboot::env_blob`]).
pub const STATE_FILE: &str = "arbor.env";
/// Its size: one sector, so U-Boot's rewrite of it is one sector write.
pub const STATE_SIZE: usize = 512;

/// The deployment an entry boots, as U-Boot's script and Linux both name it:
/// the `ostree=` argument without its `/ostree/boot.N/` (which flips with
/// every new set of deployments): `<osname>/<bootcsum>/<bootserial>`.
pub fn entry_id(e: &BlsEntry) -> String {
    e.options
        .split_whitespace()
        .find_map(|a| a.strip_prefix("ostree="))
        .map(deployment_id)
        .unwrap_or_else(|| e.stem().to_string())
}

/// [`entry_id`] of an `ostree=` path (also what `/proc/cmdline` shows on the booted system).
pub fn deployment_id(ostree_arg: &str) -> String {
    let rest = ostree_arg.trim_start_matches('/');
    match rest.strip_prefix("ostree/") {
        Some(r) if r.starts_with("boot.") => r.split_once('/').map(|(_, t)| t).unwrap_or(r).to_string(),
        _ => rest.to_string(),
    }
}

/// One rendered file and the partition it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// The partition: `Firmware` (FAT), `Boot` (/boot is its own partition) or
    /// `Root` (the bootloader reads /boot from the root partition).
    pub role: Role,
    /// Path relative to that partition's root, without a leading `/`.
    pub path: String,
    /// The file's bytes (text, except U-Boot's script image).
    pub content: Vec<u8>,
}

/// With `dtb_from = "firmware"`, the DTB the firmware partition should hold:
/// the default (newest) entry's, as a path in /boot (its `devicetree`, or the
/// board's DTB in its `fdtdir`), so the firmware's tree follows the kernel
/// that boots. `None` for boards on the kernel's DT or entries without one.
pub fn firmware_dtb(board: &Board, entries: &[BlsEntry]) -> Option<String> {
    if board.dtb_from != crate::board::DtbFrom::Firmware {
        return None;
    }
    let mut entries = entries.to_vec();
    sort_newest_first(&mut entries);
    let e = entries.first()?;
    match (&e.devicetree, &e.fdtdir, &board.dtb) {
        (Some(dt), _, _) => Some(dt.clone()),
        (None, Some(dir), Some(dtb)) => Some(format!("{dir}/{dtb}")),
        _ => None,
    }
}

/// Renders the bootloader configuration of `board` for `entries` (any order;
/// the newest is the default, the older ones stay as fallbacks).
/// `boot_prefix` is `""` when /boot is its own partition and `"/boot"` when the
/// bootloader reads it from the root partition (see [`Board::boot_prefix`]).
/// On a board with boot counting, `trial` is the [`entry_id`] of the newest
/// entry while it is on trial (the boot script then counts its boots), else `None`.
pub fn render(
    board: &Board,
    entries: &[BlsEntry],
    boot_prefix: &str,
    trial: Option<&str>,
) -> Result<Vec<RenderedFile>> {
    if !(boot_prefix.is_empty() || (boot_prefix.starts_with('/') && !boot_prefix.ends_with('/'))) {
        bail!("boot prefix {boot_prefix:?}: expected \"\" or an absolute path without a trailing / (\"/boot\")");
    }
    if entries.is_empty() {
        bail!(
            "no BLS entries in loader/entries: nothing for the bootloader of board {} to boot",
            board.name
        );
    }
    let mut entries = entries.to_vec();
    sort_newest_first(&mut entries);
    for e in &entries {
        for (key, path) in [
            ("linux", Some(&e.linux)),
            ("initrd", e.initrd.as_ref()),
            ("devicetree", e.devicetree.as_ref()),
            ("fdtdir", e.fdtdir.as_ref()),
        ] {
            if let Some(p) = path.filter(|p| !p.starts_with('/')) {
                bail!("BLS entry {}: {key} {p:?} is not an absolute path in /boot", e.name);
            }
        }
    }
    let (boot_role, boot_rel) = if boot_prefix.is_empty() {
        (Role::Boot, String::new())
    } else {
        (Role::Root, format!("{}/", boot_prefix.trim_start_matches('/')))
    };

    let text = |role: Role, path: String, content: String| RenderedFile {
        role,
        path,
        content: content.into_bytes(),
    };
    let mut files = Vec::new();
    if board.bootloader == Flavour::RpiUbootExtlinux {
        files.push(text(Role::Firmware, "config.txt".into(), config_txt(board)?));
        files.push(text(
            Role::Firmware,
            "cmdline.txt".into(),
            apply(
                "cmdline.txt.tmpl",
                &scope(board, &[("cmdline", entries[0].options.clone())]),
            )?,
        ));
    }
    match board.bootloader {
        _ if board.boot_counting.is_some() => files.push(RenderedFile {
            role: Role::Firmware,
            path: BOOT_SCRIPT.into(),
            content: boot_script(board, &entries, trial)?,
        }),
        Flavour::RpiUbootExtlinux | Flavour::UbootExtlinux => files.push(text(
            boot_role,
            format!("{boot_rel}extlinux/extlinux.conf"),
            extlinux(board, &entries, boot_prefix)?,
        )),
        Flavour::UbootUenv => files.push(text(
            boot_role,
            format!("{boot_rel}loader/uEnv.txt"),
            uenv(board, &entries, boot_prefix)?,
        )),
    }
    Ok(files)
}

/// `boot.scr` for a boot-counting board (`bootloader-configs/boot.scr.tmpl`):
/// the newest entry, and the one before it as the fallback, loaded from the
/// ext4 /boot partition (the board's layout guarantees one).
fn boot_script(board: &Board, entries: &[BlsEntry], trial: Option<&str>) -> Result<Vec<u8>> {
    let boot_part = board
        .partitions
        .iter()
        .position(|p| p.role == Role::Boot)
        .context("boot counting needs a /boot partition")?
        + 1;
    let id0 = entry_id(&entries[0]);
    if let Some(t) = trial.filter(|t| *t != id0) {
        bail!("the deployment on trial {t} is not the default one {id0}");
    }
    // With one deployment, a failed load of it has nothing else to try.
    let picks = entries.iter().take(2).collect::<Vec<_>>();
    let items = picks
        .iter()
        .enumerate()
        .map(|(i, e)| {
            for (key, v) in [("options", &e.options), ("title", &e.title)] {
                if v.contains(['"', '$', '\\', '\n', ';']) {
                    bail!(
                        "BLS entry {}: {key} {v:?} has a character U-Boot's shell would interpret (\" $ \\ ;)",
                        e.name
                    );
                }
            }
            // Paths go into the script unquoted: one word, nothing the shell expands.
            let paths = [
                Some(&e.linux),
                e.initrd.as_ref(),
                e.devicetree.as_ref(),
                e.fdtdir.as_ref(),
            ];
            for v in paths.into_iter().flatten() {
                if v.contains(|c: char| c.is_whitespace() || "\"'$\\;#{}".contains(c)) {
                    bail!(
                        "BLS entry {}: path {v:?} has a space or a character U-Boot's shell would interpret",
                        e.name
                    );
                }
            }
            let fdt = match (board.kernel_dtb(), &e.devicetree, &e.fdtdir) {
                (None, _, _) => String::new(),
                (Some(_), Some(dt), _) => dt.clone(),
                (Some(dtb), None, Some(dir)) => format!("{dir}/{dtb}"),
                (Some(_), None, None) => String::new(),
            };
            Ok(BTreeMap::from([
                ("index", i.to_string()),
                (
                    "next",
                    if i + 1 < picks.len() {
                        (i + 1).to_string()
                    } else {
                        "none".to_string()
                    },
                ),
                ("id", entry_id(e)),
                ("title", e.title.clone()),
                ("kernel", e.linux.clone()),
                ("initrd", e.initrd.clone().unwrap_or_default()),
                ("fdt", fdt),
                ("append", e.options.clone()),
            ]))
        })
        .collect::<Result<Vec<_>>>()?;
    let bootcmd = if board.arch == Arch::Aarch64 { "booti" } else { "bootz" };
    let mut s = scope(
        board,
        &[
            ("trial", trial.unwrap_or_default().to_string()),
            ("state", STATE_FILE.to_string()),
            ("state_size", format!("{STATE_SIZE:#x}")),
            ("boot_part", boot_part.to_string()),
            ("bootcmd", bootcmd.to_string()),
        ],
    );
    s.lists.insert("entries", items);
    let text = apply("boot.scr.tmpl", &s)?;
    uboot::script_image(board.arch, "arbor boot script", 0, text.as_bytes())
}

/// The boot-count state file's bytes: `trial` on trial with `left` boots to go, or none.
pub fn state_blob(trial: Option<(&str, u32)>) -> Result<Vec<u8>> {
    let (id, left) = trial.unwrap_or(("", 0));
    let vars = BTreeMap::from([
        ("arbor_left".to_string(), format!("{left:x}")),
        ("arbor_trial".to_string(), id.to_string()),
    ]);
    uboot::env_blob(&vars, STATE_SIZE)
}

/// Parses and renders one of [`TEMPLATES`].
fn apply(name: &'static str, scope: &Scope) -> Result<String> {
    let text = TEMPLATES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .with_context(|| format!("no template {name}"))?;
    Template::parse(name, text)?.render(scope)
}

/// A scope with the board's name and the given values.
fn scope(board: &Board, vars: &[(&'static str, String)]) -> Scope {
    let mut s = Scope::default();
    s.vars.insert("board", board.name.clone());
    s.vars.extend(vars.iter().cloned());
    s
}

fn extlinux(board: &Board, entries: &[BlsEntry], prefix: &str) -> Result<String> {
    let items = entries
        .iter()
        .map(|e| {
            // With a board DTB, load the one shipped with this deployment's kernel;
            // without one (qemu virt), or with `dtb_from = "firmware"`, U-Boot
            // passes on the DT it was given.
            let fdt = match (board.kernel_dtb(), &e.devicetree, &e.fdtdir) {
                (None, _, _) => String::new(),
                (Some(_), Some(dt), _) => format!("{prefix}{dt}"),
                (Some(dtb), None, Some(dir)) => format!("{prefix}{dir}/{dtb}"),
                (Some(_), None, None) => String::new(),
            };
            BTreeMap::from([
                ("label", e.stem().to_string()),
                ("title", e.title.clone()),
                ("kernel", format!("{prefix}{}", e.linux)),
                (
                    "initrd",
                    e.initrd.as_ref().map(|i| format!("{prefix}{i}")).unwrap_or_default(),
                ),
                ("fdt", fdt),
                ("append", e.options.clone()),
            ])
        })
        .collect();
    let mut s = scope(board, &[("default", entries[0].stem().to_string())]);
    s.lists.insert("entries", items);
    apply("extlinux.conf.tmpl", &s)
}

fn uenv(board: &Board, entries: &[BlsEntry], prefix: &str) -> Result<String> {
    let with_prefix = |p: &Option<String>| p.as_ref().map(|p| format!("{prefix}{p}")).unwrap_or_default();
    let items = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            BTreeMap::from([
                // ostree's suffixes: "" for the default, then 2, 3, …
                ("suffix", if i == 0 { String::new() } else { (i + 1).to_string() }),
                ("kernel", format!("{prefix}{}", e.linux)),
                ("initrd", with_prefix(&e.initrd)),
                ("devicetree", with_prefix(&e.devicetree)),
                ("fdtdir", with_prefix(&e.fdtdir)),
                ("append", e.options.clone()),
            ])
        })
        .collect();
    let mut s = scope(board, &[("dtb", board.kernel_dtb().unwrap_or_default().to_string())]);
    s.lists.insert("entries", items);
    apply("uEnv.txt.tmpl", &s)
}

fn config_txt(board: &Board) -> Result<String> {
    // The name the firmware loads U-Boot by: where the board's firmware list copies it.
    let kernel = board
        .firmware
        .iter()
        .find(|f| Some(&f.from) == board.uboot.as_ref())
        .map(|f| f.dest("u-boot.bin"))
        .unwrap_or_else(|| "u-boot.bin".to_string());
    // Upstream DTB names (bcm2837-…) are not what the firmware picks by itself (bcm2710-…).
    let device_tree = board.dtb_file_name().unwrap_or_default().to_string();
    let arm_64bit = if board.arch == Arch::Aarch64 { "1" } else { "" };
    // The firmware's second stage and its memory split, when the board copies them.
    let named = |prefix: &str, ext: &str| {
        board
            .firmware
            .iter()
            .map(|f| f.dest(f.from.rsplit('/').next().unwrap_or_default()))
            .find(|d| !d.contains('/') && d.starts_with(prefix) && d.ends_with(ext))
            .unwrap_or_default()
    };
    apply(
        "config.txt.tmpl",
        &scope(
            board,
            &[
                ("arm_64bit", arm_64bit.to_string()),
                ("kernel", kernel),
                ("device_tree", device_tree),
                ("start_file", named("start", ".elf")),
                ("fixup_file", named("fixup", ".dat")),
            ],
        ),
    )
}

#[cfg(test)]
mod tests;
