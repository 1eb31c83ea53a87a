//! Reading RPM packages: header summaries and ELF-derived dependencies.

pub mod cpio;
pub mod elfdeps;
pub mod header;
pub mod info;
pub mod scripts;
pub mod vercmp;
