//! Builds the sample RPM repository from Debian's arm64/armhf/amd64 packages
//! (`make sample-repo`), or with `device` a board's repository of the
//! cross-built arbor and its libraries (`make device-repo`). Prints the
//! repository path on stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use arbor::arch::Arch;
use arbor_sample_repo::Summary;
use arbor_sample_repo::device::{self, DeviceOptions, Report};

/// Build the sample rpm-md repository (real aarch64, armv7hl and x86_64 RPMs
/// repackaged from Debian) that tests, benchmarks and the demo compose from.
#[derive(Debug, Parser)]
#[command(name = "arbor-sample-repo", version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Directory of package manifests.
    #[arg(long, default_value = "samples/packages")]
    manifests: PathBuf,
    /// Output repository directory (replaced atomically).
    #[arg(short, long, default_value = "target/sample-repo")]
    output: PathBuf,
    /// Where downloaded .deb files are cached [default: $ARBOR_DEB_CACHE or ~/.cache/arbor/debs].
    #[arg(long)]
    deb_cache: Option<PathBuf>,
    /// Packages built in parallel [default: number of CPUs].
    #[arg(short, long)]
    jobs: Option<usize>,
    /// Rebuild even if the inputs did not change.
    #[arg(long)]
    force: bool,
    /// Print the build summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a board's repository: the cross-built arbor as an RPM plus one RPM
    /// per Debian package of its runtime-library closure (libraries the sample
    /// repository has, like glibc, come from there).
    Device(DeviceArgs),
}

#[derive(Debug, clap::Args)]
struct DeviceArgs {
    /// The board's arch: aarch64 or armv7hl.
    #[arg(long)]
    arch: Arch,
    /// The cross-built arbor binary (scripts/cross prints its path).
    #[arg(long)]
    arbor: PathBuf,
    /// Directory of the .deb files the binary was linked against (target/cross/debs-<arm64|armhf>).
    #[arg(long)]
    debs: PathBuf,
    /// Directory of sample package manifests; the Debian packages they repackage end the closure.
    #[arg(long, default_value = "samples/packages")]
    manifests: PathBuf,
    /// Directory of manifests of more packages for the device, made from the same .debs
    /// (Debian's rpm); their libraries join the closure.
    #[arg(long, default_value = "samples/device")]
    device_manifests: PathBuf,
    /// Leave out the --device-manifests packages: arbor and its closure only.
    #[arg(long)]
    arbor_only: bool,
    /// Output repository directory (replaced atomically) [default: target/device-repo/<arch>].
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Rebuild even if the inputs did not change.
    #[arg(long)]
    force: bool,
    /// Print the build summary as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,arbor=info,arbor_sample_repo=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let r = match args.command {
        Some(Command::Device(d)) => device_repo(d),
        None => sample_repo(args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn sample_repo(args: Args) -> Result<()> {
    let mut opts = arbor_sample_repo::Options::for_source_tree(std::path::Path::new("."));
    opts.manifests = args.manifests;
    opts.out = args.output;
    if let Some(d) = args.deb_cache {
        opts.deb_cache = d;
    }
    if let Some(j) = args.jobs {
        opts.jobs = j;
    }
    opts.force = args.force;
    let s = arbor_sample_repo::ensure(&opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        eprintln!("{}", headline(&s));
        println!("{}", s.out.display());
    }
    Ok(())
}

fn device_repo(args: DeviceArgs) -> Result<()> {
    let opts = DeviceOptions {
        arch: args.arch,
        out: args.output.unwrap_or_else(|| device::default_out(args.arch)),
        arbor: args.arbor,
        debs: args.debs,
        sample_manifests: args.manifests,
        device_manifests: (!args.arbor_only).then_some(args.device_manifests),
        force: args.force,
    };
    let r = Report::from(device::ensure(&opts)?);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        eprintln!(
            "{}; arbor {:.1} MB, {} libraries {:.1} MB",
            headline(&r.summary),
            r.arbor_bytes as f64 / 1e6,
            r.closure_packages,
            r.closure_bytes as f64 / 1e6
        );
        println!("{}", r.summary.out.display());
    }
    Ok(())
}

/// `built 12 packages (3.4 MB) in DIR`: the .rpm files' total size.
fn headline(s: &Summary) -> String {
    let bytes: u64 = s.packages.iter().map(|p| p.size).sum();
    format!(
        "{} {} packages ({:.1} MB) in {}",
        if s.rebuilt { "built" } else { "up to date:" },
        s.packages.len(),
        bytes as f64 / 1e6,
        s.out.display()
    )
}
