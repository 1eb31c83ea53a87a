//! arbor: compose RPM package sets into signed, atomically updatable OSTree
//! trees for ARM boards, and write them into flashable images.
//!
//! Each pipeline stage is a module taking one typed value to the next; see
//! docs/ARCHITECTURE.md for the data flow.

pub mod arch;
pub mod atomic;
pub mod board;
pub mod bootloader;
pub mod bundle;
pub mod cli;
pub mod compose;
pub mod decompress;
pub mod device;
pub mod failpoint;
pub mod fdt;
#[doc(hidden)]
pub mod fuzz;
pub mod host;
pub mod image;
pub mod input;
pub mod layer;
pub mod ostree;
pub mod overlay;
pub mod parallel;
pub mod pkgcache;
pub mod progress;
pub mod reexec;
pub mod repo;
pub mod rpm;
pub mod runner;
pub mod sandbox;
pub mod scriptlet;
pub mod sign;
pub mod solve;
#[cfg(test)]
pub(crate) mod testutil;
pub mod tmpfiles;
pub mod treefile;

/// arbor's version, as `arbor --version` prints it (packaging uses the same value).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
