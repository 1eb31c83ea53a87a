//! arbor's integration tests against real tools, as one test binary: one
//! module per area, `common` shared by all of them. One binary links
//! libostree, libsolv and lua once instead of once per file, and shares one
//! sample repository build (`common::sample_repo`) across every test.
//!
//! Every process a test starts runs under a deadline (`common::deadline`): the
//! `Command` methods that wait without one are disallowed here (clippy.toml).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose
#![warn(clippy::disallowed_methods)]

mod common;

mod archive_versions;
mod bootcount_vm;
mod bundle;
mod cli;
mod compose_tree;
mod delta;
mod device;
mod device_vm;
mod fat_power_cut;
mod flash;
mod hostile_rpms;
mod image;
mod initramfs;
mod layer;
mod memory_bounds;
mod opt_and_nodes;
mod owners;
mod package_conflicts;
mod pkgcache;
mod publish;
mod resolve;
mod rpi_firmware;
mod rpm_v6;
mod rpmdb;
mod sample_repo;
mod sample_repo_build;
mod sandbox;
mod scriptlets;
mod sign;
mod solve;
mod storage_faults;
mod treefile;
