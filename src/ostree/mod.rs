//! libostree through the `ostree` crate; glib types stay inside this module.

pub mod bundle;
pub mod commit;
mod layered;
pub mod publish;
pub mod pull;
pub mod repo;
pub mod sign;
pub mod sysroot;

pub use repo::{CommitInfo, Mode, Repo, Resolved};

/// The libostree release arbor needs (Debian 12 ships 2022.7).
pub const REQUIRED: (u32, u32) = (2022, 7);

/// Whether the linked libostree is at least [`REQUIRED`].
pub fn library_ok() -> bool {
    ::ostree::check_version(REQUIRED.0, REQUIRED.1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn linked_libostree_is_new_enough() {
        assert!(super::library_ok());
    }
}
