//! Disk images: partition plan, filesystems, disk writer, bmap, compression, flashing.

mod blockdev;
pub mod bmap;
mod bootfiles;
pub mod boottest;
pub mod build;
pub mod compress;
mod deploy;
mod disk;
pub mod flash;
pub mod fs;
pub mod gpt;
pub mod mbr;
pub mod tree;
