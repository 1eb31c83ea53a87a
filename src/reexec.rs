//! Re-executing arbor for its helper processes: the sandbox init and the
//! delta and object-copy workers are this same binary started with a hidden
//! first argument. Which executable to start lives here, and so does the
//! dispatch `main` runs before anything else (the sandbox init must stay
//! single-threaded).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by arbor's `main` (through [`mark_arbor`]): this executable is arbor
/// and can start its own helpers.
pub static IS_ARBOR: AtomicBool = AtomicBool::new(false);

/// Records that the running executable is arbor.
pub fn mark_arbor() {
    IS_ARBOR.store(true, Ordering::Relaxed);
}

/// The arbor executable, to start helper processes with (the sandbox init,
/// delta workers): `$ARBOR_EXE`, else this executable when it is arbor. Another
/// program using the library must not run itself: that would run its own main.
pub fn arbor_exe() -> Option<PathBuf> {
    match std::env::var_os("ARBOR_EXE") {
        Some(e) => Some(PathBuf::from(e)),
        None if IS_ARBOR.load(Ordering::Relaxed) => std::env::current_exe().ok(),
        None => None,
    }
}

/// Runs the hidden helper named by the first argument, if it is one, and
/// returns its exit status.
pub fn run_helper() -> Option<i32> {
    let first = std::env::args_os().nth(1)?;
    if first == crate::sandbox::init::ARG {
        return Some(crate::sandbox::init::main());
    }
    let worker: fn(&[String]) -> anyhow::Result<()> = if first == crate::ostree::publish::delta::WORKER_ARG {
        crate::ostree::publish::delta::worker_main
    } else if first == crate::ostree::publish::copy::COPY_WORKER_ARG {
        crate::ostree::publish::copy::copy_worker_main
    } else {
        return None;
    };
    let args: Vec<String> = std::env::args().skip(2).collect();
    Some(match worker(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e:#}");
            1
        }
    })
}
