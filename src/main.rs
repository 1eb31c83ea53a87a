//! The `arbor` binary: parse arguments, set up logging, run, print errors with their causes.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The sandbox init must stay single-threaded: it runs before anything else.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == arbor::sandbox::init::ARG)
    {
        return ExitCode::from(arbor::sandbox::init::main().clamp(0, 255) as u8);
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == arbor::ostree::delta::WORKER_ARG)
    {
        let args: Vec<String> = std::env::args().skip(2).collect();
        return ExitCode::from(arbor::ostree::delta::worker_main(&args).clamp(0, 255) as u8);
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == arbor::ostree::tree::COPY_WORKER_ARG)
    {
        let args: Vec<String> = std::env::args().skip(2).collect();
        return ExitCode::from(arbor::ostree::tree::copy_worker_main(&args).clamp(0, 255) as u8);
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
