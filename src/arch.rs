//! Target architectures: the names rpm, Debian, ELF and qemu use for each.
//!
//! The build host is never the target: everything about the tree being built
//! comes from an [`Arch`] value, not from `cfg!(target_arch)`.

use std::fmt;
use std::str::FromStr;

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// An architecture a package or tree can be built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Arch {
    /// 64-bit ARM (Raspberry Pi 3/4/5, most current boards).
    Aarch64,
    /// 32-bit ARMv7 with hardware floating point.
    Armv7hl,
    /// 64-bit x86 (build hosts, some boards, tests).
    X86_64,
    /// Architecture-independent packages.
    Noarch,
}

/// Every arch, in a stable order (used for `--help` text and error messages).
pub const ALL: [Arch; 4] = [Arch::Aarch64, Arch::Armv7hl, Arch::X86_64, Arch::Noarch];

/// ELF `e_machine` values (elf.h) for the arches a tree can be.
pub const EM_X86_64: u16 = 62;
/// ELF machine for 32-bit ARM.
pub const EM_ARM: u16 = 40;
/// ELF machine for 64-bit ARM.
pub const EM_AARCH64: u16 = 183;

impl Arch {
    /// The rpm name (`aarch64`, `armv7hl`, `x86_64`, `noarch`).
    pub fn rpm_name(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::Armv7hl => "armv7hl",
            Arch::X86_64 => "x86_64",
            Arch::Noarch => "noarch",
        }
    }

    /// dnf's and Fedora's base arch, `$basearch` in .repo files and
    /// `${basearch}` in treefiles: `armhfp` for armv7hl (Fedora's mirror
    /// directories and rpm-ostree refs such as `fedora/stable/armhfp/iot`),
    /// the rpm name otherwise. dnf's `$arch` stays [`Arch::rpm_name`].
    pub fn basearch(self) -> &'static str {
        match self {
            Arch::Armv7hl => "armhfp",
            other => other.rpm_name(),
        }
    }

    /// Debian's name for the arch (`arm64`, `armhf`, `amd64`, `all`).
    pub fn deb_name(self) -> &'static str {
        match self {
            Arch::Aarch64 => "arm64",
            Arch::Armv7hl => "armhf",
            Arch::X86_64 => "amd64",
            Arch::Noarch => "all",
        }
    }

    /// Debian's multiarch triplet (the library directory under /usr/lib).
    pub fn multiarch(self) -> Option<&'static str> {
        match self {
            Arch::Aarch64 => Some("aarch64-linux-gnu"),
            Arch::Armv7hl => Some("arm-linux-gnueabihf"),
            Arch::X86_64 => Some("x86_64-linux-gnu"),
            Arch::Noarch => None,
        }
    }

    /// The ELF machine of this arch's binaries.
    pub fn elf_machine(self) -> Option<u16> {
        match self {
            Arch::Aarch64 => Some(EM_AARCH64),
            Arch::Armv7hl => Some(EM_ARM),
            Arch::X86_64 => Some(EM_X86_64),
            Arch::Noarch => None,
        }
    }

    /// The arch whose binaries have this ELF machine.
    pub fn from_elf_machine(machine: u16) -> Option<Arch> {
        match machine {
            EM_AARCH64 => Some(Arch::Aarch64),
            EM_ARM => Some(Arch::Armv7hl),
            EM_X86_64 => Some(Arch::X86_64),
            _ => None,
        }
    }

    /// The qemu-user binary that runs this arch's programs on another host.
    pub fn qemu_user(self) -> Option<&'static str> {
        match self {
            Arch::Aarch64 => Some("qemu-aarch64-static"),
            Arch::Armv7hl => Some("qemu-arm-static"),
            Arch::X86_64 => Some("qemu-x86_64-static"),
            Arch::Noarch => None,
        }
    }

    /// Whether libraries are 64-bit: rpm's soname dependencies then carry `(64bit)`.
    pub fn is_64bit(self) -> bool {
        matches!(self, Arch::Aarch64 | Arch::X86_64)
    }

    /// The suffix rpm appends to soname dependencies (`()(64bit)` or `()`).
    pub fn soname_suffix(self) -> &'static str {
        if self.is_64bit() { "()(64bit)" } else { "()" }
    }

    /// Arches whose packages can be installed into a tree of this arch.
    pub fn compatible(self) -> &'static [Arch] {
        match self {
            Arch::Aarch64 => &[Arch::Aarch64, Arch::Noarch],
            Arch::Armv7hl => &[Arch::Armv7hl, Arch::Noarch],
            Arch::X86_64 => &[Arch::X86_64, Arch::Noarch],
            Arch::Noarch => &[Arch::Noarch],
        }
    }

    /// The arch of the machine arbor runs on (for deciding whether to emulate).
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "aarch64" => Some(Arch::Aarch64),
            "arm" => Some(Arch::Armv7hl),
            "x86_64" => Some(Arch::X86_64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rpm_name())
    }
}

impl FromStr for Arch {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Arch> {
        Ok(match s {
            "aarch64" | "arm64" => Arch::Aarch64,
            "armv7hl" | "armhfp" | "armhf" | "armv7" => Arch::Armv7hl,
            "x86_64" | "amd64" => Arch::X86_64,
            "noarch" | "all" => Arch::Noarch,
            _ => bail!(
                "unknown architecture {s:?}: allowed are {}",
                ALL.map(Arch::rpm_name).join(", ")
            ),
        })
    }
}

impl From<Arch> for String {
    fn from(a: Arch) -> String {
        a.rpm_name().to_string()
    }
}

impl TryFrom<String> for Arch {
    type Error = anyhow::Error;
    fn try_from(s: String) -> anyhow::Result<Arch> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in ALL {
            assert_eq!(a.rpm_name().parse::<Arch>().unwrap(), a);
            assert_eq!(a.deb_name().parse::<Arch>().unwrap(), a);
            assert_eq!(a.basearch().parse::<Arch>().unwrap(), a);
            if let Some(m) = a.elf_machine() {
                assert_eq!(Arch::from_elf_machine(m), Some(a));
            }
        }
    }

    #[test]
    fn unknown_arch_lists_allowed() {
        let e = "ppc64le".parse::<Arch>().unwrap_err().to_string();
        assert!(
            e.contains("ppc64le") && e.contains("aarch64, armv7hl, x86_64, noarch"),
            "{e}"
        );
    }

    #[test]
    fn basearch_is_fedoras() {
        let names: Vec<(&str, &str)> = ALL.iter().map(|a| (a.rpm_name(), a.basearch())).collect();
        assert_eq!(
            names,
            [
                ("aarch64", "aarch64"),
                ("armv7hl", "armhfp"),
                ("x86_64", "x86_64"),
                ("noarch", "noarch")
            ]
        );
    }

    #[test]
    fn soname_suffix_follows_word_size() {
        assert_eq!(Arch::Aarch64.soname_suffix(), "()(64bit)");
        assert_eq!(Arch::Armv7hl.soname_suffix(), "()");
    }
}
