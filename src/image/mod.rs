//! Disk images: partition plan, filesystems, disk writer, bmap, compression, flashing.

mod blockdev;
pub mod bmap;
pub mod boottest;
pub mod build;
pub mod compress;
pub mod flash;
pub mod fs;
pub mod gpt;
pub mod mbr;
pub mod tree;
