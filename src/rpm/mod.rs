//! Reading RPM packages. Package files are untrusted, and their bytes are read
//! here and nowhere else:
//! - [`blob`]: the lead and header blobs (index and data store), bounds-checked;
//! - [`cpio`]: the payload archive (newc, or stripped as in rpm v6),
//!   decompressed through [`crate::decompress`], up to its trailer;
//! - [`files`]: the header's file arrays as rpm's payload reader reads them
//!   (hardlink sets, the sizes of stripped entries);
//! - [`digests`]: a package file's header and payload digests, the payload
//!   hashed as it streams;
//! - [`caps`]: the capability text of a header → the `security.capability` xattr.
//!
//! Built on them or on the `rpm` crate: header summaries for compose
//! ([`header`]) and `arbor pkg info` ([`info`]), scriptlets, version
//! comparison and ELF-derived dependencies.

pub mod blob;
pub mod caps;
pub mod cpio;
pub mod digests;
pub mod elfdeps;
pub mod files;
pub mod header;
pub mod info;
pub mod scripts;
pub mod vercmp;
