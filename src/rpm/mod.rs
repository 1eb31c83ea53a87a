//! Reading RPM packages. Package files are untrusted, and their bytes are read
//! here and nowhere else:
//! - [`blob`]: the lead and header blobs (index and data store), bounds-checked;
//! - [`cpio`]: the payload archive, decompressed through [`crate::decompress`],
//!   up to its trailer;
//! - [`caps`]: the capability text of a header → the `security.capability` xattr.
//!
//! Built on them or on the `rpm` crate: header summaries for compose
//! ([`header`]) and `arbor pkg info` ([`info`]), scriptlets, version
//! comparison and ELF-derived dependencies.

pub mod blob;
pub mod caps;
pub mod cpio;
pub mod elfdeps;
pub mod header;
pub mod info;
pub mod scripts;
pub mod vercmp;
