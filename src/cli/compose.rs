//! `arbor compose …` and `arbor treefile …`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::arch::Arch;

/// Compose verbs.
#[derive(Debug, Subcommand)]
pub enum Compose {
    /// Resolve a treefile's package set for a target arch and print it (optionally download it).
    Resolve(Resolve),
    /// Compose a treefile into an OSTree commit.
    Tree(Tree),
}

/// Arguments of `arbor compose resolve`.
#[derive(Debug, Args)]
pub struct Resolve {
    /// The rpm-ostree treefile (YAML or JSON).
    pub treefile: PathBuf,
    /// Target architecture (aarch64, armv7hl, x86_64); not the build host's.
    #[arg(long, default_value = "aarch64")]
    pub arch: Arch,
    /// Print the resolved set as JSON.
    #[arg(long)]
    pub json: bool,
    /// Download the resolved packages into the cache, verifying checksums.
    #[arg(long)]
    pub download: bool,
    /// Cache for repository metadata and packages [default: $ARBOR_CACHE_DIR or ~/.cache/arbor].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Parallel downloads.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// Resolve exactly the packages in this lockfile, or fail naming the difference.
    #[arg(long)]
    pub lockfile: Option<PathBuf>,
    /// Write the resolved set (NEVRAs and checksums) to this lockfile.
    #[arg(long)]
    pub write_lockfile: Option<PathBuf>,
}

impl Resolve {
    fn run(self) -> Result<()> {
        use crate::compose::resolve;
        let tf = crate::treefile::load(&self.treefile, self.arch)?;
        let opts = resolve::Options {
            cache_dir: self.cache_dir.unwrap_or_else(resolve::default_cache_dir),
            download: self.download,
            jobs: self.jobs,
            lockfile: self.lockfile,
            write_lockfile: self.write_lockfile,
        };
        let r = resolve::resolve(&tf, &opts)?;
        if self.json {
            return super::print_json(&r);
        }
        println!(
            "{} for {}: {} packages in install order",
            r.treeref,
            r.arch,
            r.packages.len()
        );
        let w = r.packages.iter().map(|p| p.name.len()).max().unwrap_or(0);
        let v = r.packages.iter().map(|p| p.evr.len()).max().unwrap_or(0);
        for p in &r.packages {
            let size = mb(p.download_size);
            println!(
                "  {:<w$}  {:<v$}  {:<8} {:<16} {size:>9}",
                p.name, p.evr, p.arch, p.repo
            );
        }
        println!(
            "download size: {}, installed size: {}",
            mb(r.download_size),
            mb(r.install_size)
        );
        if !r.files.is_empty() {
            println!(
                "downloaded and verified {} packages into {}",
                r.files.len(),
                opts.cache_dir.display()
            );
        }
        Ok(())
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Arguments of `arbor compose tree`.
#[derive(Debug, Args)]
pub struct Tree {
    /// The rpm-ostree treefile (YAML or JSON).
    pub treefile: PathBuf,
    /// The OSTree repository to commit into.
    #[arg(long)]
    pub repo: PathBuf,
    /// Target architecture (aarch64, armv7hl, x86_64).
    #[arg(long, default_value = "aarch64")]
    pub arch: Arch,
    /// Sign the commit with this ed25519 secret key as the last step.
    #[arg(long)]
    pub sign_key: Option<PathBuf>,
    /// Cache for metadata, packages and work directories [default: $ARBOR_CACHE_DIR or ~/.cache/arbor].
    #[arg(long, alias = "cachedir")]
    pub cache_dir: Option<PathBuf>,
    /// Resolve and report, commit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Commit even if the inputs are unchanged since the ref's commit.
    #[arg(long)]
    pub force: bool,
    /// Compose without running package scriptlets (listed, and recorded in the commit).
    #[arg(long)]
    pub no_scripts: bool,
    /// Kill a scriptlet or postprocess script (and fail the compose) after this many seconds.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub script_timeout: u64,
    /// Parallel downloads and imports.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Tree {
    fn run(self) -> Result<()> {
        use crate::compose::{resolve, tree};
        let tf = crate::treefile::load(&self.treefile, self.arch)?;
        let opts = tree::Options {
            repo: self.repo,
            cache_dir: self.cache_dir.unwrap_or_else(resolve::default_cache_dir),
            dry_run: self.dry_run,
            force: self.force,
            no_scripts: self.no_scripts,
            script_timeout: std::time::Duration::from_secs(self.script_timeout),
            jobs: self.jobs,
            sign_key: self.sign_key,
        };
        let r = tree::compose(&tf, &opts)?;
        if self.json {
            return super::print_json(&r);
        }
        match (&r.commit, r.unchanged) {
            (Some(c), true) => println!(
                "{}: no changes since commit {c} (version {}); --force commits anyway",
                r.refname, r.version
            ),
            (Some(c), false) => {
                println!("{} => {c}", r.refname);
                println!(
                    "version {}: {} packages, {} newly imported",
                    r.version, r.packages, r.imported
                );
            }
            (None, _) => println!(
                "{}: would commit version {} with {} packages (dry run)",
                r.refname, r.version, r.packages
            ),
        }
        for s in &r.skipped_scriptlets {
            println!("scriptlets not run: {s}");
        }
        Ok(())
    }
}

impl Compose {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        match self {
            Compose::Resolve(args) => args.run(),
            Compose::Tree(args) => args.run(),
        }
    }
}

/// Treefile verbs.
#[derive(Debug, Subcommand)]
pub enum TreefileCmd {
    /// Print the fully resolved treefile (includes merged, variables substituted) as JSON.
    Show(Show),
}

/// Arguments of `arbor treefile show`.
#[derive(Debug, Args)]
pub struct Show {
    /// The rpm-ostree treefile (YAML or JSON).
    pub treefile: PathBuf,
    /// Target architecture for arch-include and `${basearch}`.
    #[arg(long, default_value = "aarch64")]
    pub arch: Arch,
}

impl TreefileCmd {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        match self {
            TreefileCmd::Show(args) => {
                let tf = crate::treefile::load(&args.treefile, args.arch)?;
                println!("{}", crate::treefile::print_json(&tf));
                Ok(())
            }
        }
    }
}
