//! The `arbor` binary: parse arguments, set up logging, run, print errors with their causes.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Helper processes arbor starts itself (the sandbox init must stay
    // single-threaded: they run before anything else).
    if let Some(code) = helper() {
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    arbor::sandbox::IS_ARBOR.store(true, std::sync::atomic::Ordering::Relaxed);
    // Like other Unix tools, stop quietly when the reader of stdout goes away
    // (`arbor treefile show | head`), instead of panicking on EPIPE.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,arbor=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match arbor::cli::Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the hidden helper named by the first argument, if it is one, and returns its exit status.
fn helper() -> Option<i32> {
    let first = std::env::args_os().nth(1)?;
    if first == arbor::sandbox::init::ARG {
        return Some(arbor::sandbox::init::main());
    }
    let worker: fn(&[String]) -> anyhow::Result<()> = if first == arbor::ostree::delta::WORKER_ARG {
        arbor::ostree::delta::worker_main
    } else if first == arbor::ostree::tree::COPY_WORKER_ARG {
        arbor::ostree::tree::copy_worker_main
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
