//! Builds the sample RPM repository from Debian's arm64/armhf/amd64 packages
//! (`make sample-repo`). Prints the repository path on stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Build the sample rpm-md repository (real aarch64, armv7hl and x86_64 RPMs
/// repackaged from Debian) that tests, benchmarks and the demo compose from.
#[derive(Debug, Parser)]
#[command(name = "arbor-sample-repo", version)]
struct Args {
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,arbor=info,arbor_sample_repo=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
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
    match arbor_sample_repo::ensure(&opts) {
        Ok(s) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                let bytes: u64 = s.packages.iter().map(|p| p.size).sum();
                eprintln!(
                    "{} {} packages ({:.1} MB) in {}",
                    if s.rebuilt { "built" } else { "up to date:" },
                    s.packages.len(),
                    bytes as f64 / 1e6,
                    s.out.display()
                );
                println!("{}", s.out.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
