//! Boot Loader Specification entries, as libostree writes them in `/boot/loader/entries`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use cap_std::ambient_authority;
use cap_std::fs::Dir;

/// One BLS entry (one deployment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlsEntry {
    /// The file name (`ostree-2-debian.conf`).
    pub name: String,
    /// `title`; the name without `.conf` when absent.
    pub title: String,
    /// `version`: higher is newer (ostree numbers its deployments so the default is highest).
    pub version: Option<String>,
    /// `options`: the kernel command line (empty when absent).
    pub options: String,
    /// `linux`: the kernel, relative to the /boot filesystem root (starts with `/`).
    pub linux: String,
    /// `initrd`.
    pub initrd: Option<String>,
    /// `devicetree`: one DTB for this deployment.
    pub devicetree: Option<String>,
    /// `fdtdir`: a directory of DTBs (ostree copies `/usr/lib/modules/$kver/dtb` there).
    pub fdtdir: Option<String>,
    /// Every other key (`aboot`, `abootcfg`, `architecture`…), kept as written.
    pub other: BTreeMap<String, String>,
}

impl BlsEntry {
    /// The name without `.conf` (used as the extlinux label).
    pub fn stem(&self) -> &str {
        self.name.strip_suffix(".conf").unwrap_or(&self.name)
    }
}

/// Parses one entry; `name` is its file name (for messages and [`BlsEntry::name`]).
pub fn parse_bls(name: &str, text: &str) -> Result<BlsEntry> {
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        // A NUL, CR or other control character would end or split the line
        // in the bootloader file it is copied into.
        if let Some(c) = raw.chars().find(|c| c.is_control() && *c != '\t') {
            bail!("BLS entry {name}, line {}: control character {c:?}", i + 1);
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once([' ', '\t']).unwrap_or((line, ""));
        if keys.insert(key.to_string(), value.trim().to_string()).is_some() {
            bail!(
                "BLS entry {name}, line {}: key {key:?} appears twice (arbor boots one kernel and one initrd per entry)",
                i + 1
            );
        }
    }
    let Some(linux) = keys.remove("linux").filter(|l| !l.is_empty()) else {
        bail!("BLS entry {name}: no \"linux\" key: nothing to boot");
    };
    let stem = name.strip_suffix(".conf").unwrap_or(name);
    Ok(BlsEntry {
        name: name.to_string(),
        title: keys.remove("title").unwrap_or_else(|| stem.to_string()),
        version: keys.remove("version"),
        options: keys.remove("options").unwrap_or_default(),
        linux,
        initrd: keys.remove("initrd"),
        devicetree: keys.remove("devicetree"),
        fdtdir: keys.remove("fdtdir"),
        other: keys,
    })
}

/// Reads `loader/entries/*.conf` beneath `boot_dir` (the root of the /boot
/// filesystem; `loader` is ostree's symlink to `loader.0` or `loader.1`),
/// newest first as ostree and GRUB order them.
pub fn read_entries(boot_dir: &Path) -> Result<Vec<BlsEntry>> {
    let where_ = boot_dir.join("loader/entries");
    let boot = Dir::open_ambient_dir(boot_dir, ambient_authority())
        .with_context(|| format!("opening boot directory {}", boot_dir.display()))?;
    let dir = boot
        .open_dir("loader/entries")
        .with_context(|| format!("opening {}", where_.display()))?;
    let mut entries = Vec::new();
    for e in dir.entries().with_context(|| format!("listing {}", where_.display()))? {
        let e = e.with_context(|| format!("listing {}", where_.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(".conf") {
            continue;
        }
        let text = dir
            .read_to_string(name)
            .with_context(|| format!("reading BLS entry {}", where_.join(name).display()))?;
        entries.push(parse_bls(name, &text).with_context(|| format!("in {}", where_.display()))?);
    }
    sort_newest_first(&mut entries);
    Ok(entries)
}

/// Orders entries as ostree does: higher `version` first (compared like
/// `strverscmp`), entries without a version last; ties by file name, newest first.
pub fn sort_newest_first(entries: &mut [BlsEntry]) {
    entries.sort_by(|a, b| {
        let by_version = match (&a.version, &b.version) {
            (Some(x), Some(y)) => vercmp(y, x),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        by_version.then_with(|| vercmp(&b.name, &a.name))
    });
}

/// Compares runs of digits as numbers and everything else byte by byte (`2 < 10`, `a9 < a10`).
fn vercmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let na = trim_zeros(&a[..da]);
                let nb = trim_zeros(&b[..db]);
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let zeros = d.iter().take_while(|c| **c == b'0').count();
    &d[zeros..]
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const OSTREE_ENTRY: &str = "\
title Debian GNU/Linux 12 (bookworm) (ostree:0)
version 2
options root=LABEL=root rw console=ttyS1,115200 ostree=/ostree/boot.1/debian/3f1b/0
linux /ostree/debian-3f1b/vmlinuz-6.1.0-50-arm64
initrd /ostree/debian-3f1b/initramfs-6.1.0-50-arm64.img
fdtdir /ostree/debian-3f1b/dtb
aboot /ostree/deploy/debian/deploy/3f1b.0/usr/lib/ostree-boot/aboot.img
abootcfg /ostree/deploy/debian/deploy/3f1b.0/usr/lib/ostree-boot/aboot.cfg
";

    #[test]
    fn parses_what_ostree_writes() {
        let e = parse_bls("ostree-2-debian.conf", OSTREE_ENTRY).unwrap();
        assert_eq!(e.title, "Debian GNU/Linux 12 (bookworm) (ostree:0)");
        assert_eq!(e.version.as_deref(), Some("2"));
        assert_eq!(e.linux, "/ostree/debian-3f1b/vmlinuz-6.1.0-50-arm64");
        assert_eq!(
            e.initrd.as_deref(),
            Some("/ostree/debian-3f1b/initramfs-6.1.0-50-arm64.img")
        );
        assert_eq!(e.fdtdir.as_deref(), Some("/ostree/debian-3f1b/dtb"));
        assert_eq!(e.devicetree, None);
        assert!(e.options.ends_with("ostree=/ostree/boot.1/debian/3f1b/0"));
        assert_eq!(e.other.keys().collect::<Vec<_>>(), ["aboot", "abootcfg"]);
        assert_eq!(e.stem(), "ostree-2-debian");
    }

    #[test]
    fn minimal_entry_defaults_and_errors() {
        let e = parse_bls("x.conf", "# comment\n\nlinux\t/vmlinuz\n").unwrap();
        assert_eq!(
            (e.title.as_str(), e.options.as_str(), e.version.as_deref()),
            ("x", "", None)
        );
        let err = parse_bls("y.conf", "title t\n").unwrap_err().to_string();
        assert!(err.contains("y.conf") && err.contains("\"linux\""), "{err}");
        let err = parse_bls("z.conf", "linux /a\ninitrd /b\ninitrd /c\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("z.conf, line 3") && err.contains("\"initrd\""), "{err}");
    }

    #[test]
    fn sorts_like_ostree() {
        let mk = |name: &str, version: Option<&str>| {
            let mut text = String::from("linux /k\n");
            if let Some(v) = version {
                text.push_str(&format!("version {v}\n"));
            }
            parse_bls(name, &text).unwrap()
        };
        let mut v = vec![
            mk("ostree-2-os.conf", Some("2")),
            mk("a.conf", None),
            mk("ostree-10-os.conf", Some("10")),
            mk("ostree-9-os.conf", Some("9")),
        ];
        sort_newest_first(&mut v);
        let names: Vec<&str> = v.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["ostree-10-os.conf", "ostree-9-os.conf", "ostree-2-os.conf", "a.conf"]
        );
        assert_eq!(vercmp("1.10", "1.9"), Ordering::Greater);
        assert_eq!(vercmp("007", "7"), Ordering::Equal);
    }

    #[test]
    fn reads_entries_through_the_loader_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let entries = tmp.path().join("loader.1/entries");
        std::fs::create_dir_all(&entries).unwrap();
        std::os::unix::fs::symlink("loader.1", tmp.path().join("loader")).unwrap();
        std::fs::write(entries.join("ostree-1-debian.conf"), "version 1\nlinux /old\n").unwrap();
        std::fs::write(entries.join("ostree-2-debian.conf"), OSTREE_ENTRY).unwrap();
        std::fs::write(entries.join("README"), "not an entry").unwrap();
        let got = read_entries(tmp.path()).unwrap();
        let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["ostree-2-debian.conf", "ostree-1-debian.conf"]);
        let e = read_entries(&tmp.path().join("nope")).unwrap_err();
        assert!(format!("{e:#}").contains("nope"), "{e:#}");
    }
}
