//! The `arbor` binary: parse arguments, set up logging, run, print errors with their causes.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Helper processes arbor starts itself (the sandbox init must stay
    // single-threaded: they run before anything else).
    if let Some(code) = arbor::reexec::run_helper() {
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    arbor::reexec::mark_arbor();
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
