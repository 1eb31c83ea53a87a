//! Soname dependencies from ELF files, as rpm's `elfdeps` generator derives them:
//! a shared library provides `libfoo.so.1()(64bit)`; an executable or library
//! requires each `DT_NEEDED` entry in the same form.

use goblin::elf::Elf;

use crate::arch::Arch;

/// What one ELF file provides and requires, in rpm's dependency spelling.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ElfDeps {
    /// The ELF machine found in the file.
    pub machine: u16,
    /// `soname()(64bit)` when the file has a `DT_SONAME`.
    pub provides: Vec<String>,
    /// One entry per `DT_NEEDED`.
    pub requires: Vec<String>,
}

/// Reads soname dependencies from `bytes`; `None` when the bytes are not an ELF
/// object with a dynamic section (scripts, data, static binaries, kernel modules).
pub fn scan(bytes: &[u8]) -> Option<ElfDeps> {
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return None;
    }
    let elf = Elf::parse(bytes).ok()?;
    let suffix = if elf.is_64 { "()(64bit)" } else { "()" };
    elf.dynamic.as_ref()?;
    let mut deps = ElfDeps {
        machine: elf.header.e_machine,
        ..ElfDeps::default()
    };
    if let Some(soname) = elf.soname {
        deps.provides.push(format!("{soname}{suffix}"));
    }
    for needed in &elf.libraries {
        deps.requires.push(format!("{needed}{suffix}"));
    }
    Some(deps)
}

/// The arch an ELF file was built for, from its header alone.
pub fn elf_arch(bytes: &[u8]) -> Option<Arch> {
    let header = goblin::elf::Elf::parse_header(bytes).ok()?;
    Arch::from_elf_machine(header.e_machine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_binary_requires_libc() {
        // The test binary itself is a dynamically linked host executable.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let deps = scan(&exe).expect("test binary is a dynamic ELF");
        assert!(deps.requires.iter().any(|r| r.starts_with("libc.so.6()")), "{deps:?}");
        assert_eq!(Some(deps.machine), Arch::host().and_then(Arch::elf_machine));
    }

    #[test]
    fn non_elf_is_none() {
        assert_eq!(scan(b"#!/bin/sh\necho hi\n"), None);
        assert_eq!(scan(b"\x7fEL"), None);
        assert_eq!(scan(b"\x7fELF garbage that is not a header"), None);
    }
}
