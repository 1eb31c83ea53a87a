//! The compose pipeline: treefile → resolved package set → assembled tree → commit.

pub mod initramfs;
pub mod lockfile;
pub mod nodes;
pub mod owners;
pub mod postprocess;
pub mod resolve;
pub mod rpmdb;
pub mod tree;
mod var;
pub mod version;
