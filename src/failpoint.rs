//! Failpoints: `ARBOR_FAILPOINT=<name>` makes arbor die abruptly (SIGKILL-like
//! abort, no cleanup) when it reaches that point; `<name>=error` makes it fail
//! there with an error instead, and `<name>=stop` makes it stop itself
//! (SIGSTOP) there until a SIGCONT, so a test can change the world at exactly
//! that point (take a filesystem away) and let it go on. Tests use them to
//! prove that a run killed at any step leaves repositories and refs as they were.

use anyhow::{Result, bail};

/// Every failpoint, in pipeline order (tests iterate over this list).
pub const ALL: &[&str] = &[
    "compose::resolved",
    "compose::imported",
    "compose::assembled",
    "compose::scripts-run",
    "compose::postprocessed",
    "compose::initramfs-built",
    "compose::rpmdb-written",
    "compose::commit-written",
    "compose::ref-written",
    "image::deployed",
    "image::partitions-written",
    "device::commit-pulled",
    "device::content-pulled",
    "device::deployed",
    "device::entries-written",
    "device::bootfile",
    "device::fat-swap",
    "device::fat-committed",
    "device::bootfiles-written",
    "device::marked-good",
    "layer::built",
];

/// Checks the failpoint `name`.
pub fn hit(name: &str) -> Result<()> {
    debug_assert!(ALL.contains(&name), "unregistered failpoint {name}");
    let Ok(spec) = std::env::var("ARBOR_FAILPOINT") else {
        return Ok(());
    };
    match spec.split_once('=') {
        Some((n, "error")) if n == name => bail!("failpoint {name} triggered"),
        Some((n, "stop")) if n == name => {
            eprintln!("arbor: failpoint {name}: stopping until SIGCONT");
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP)?;
            Ok(())
        }
        None if spec == name => {
            eprintln!("arbor: failpoint {name}: aborting");
            std::process::abort();
        }
        _ => Ok(()),
    }
}
