//! Read-only verbs that work today: `arbor pkg` and `arbor doctor`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use super::print_json;

/// Arguments of `arbor pkg`.
#[derive(Debug, Args)]
pub struct Pkg {
    #[command(subcommand)]
    command: PkgCmd,
}

#[derive(Debug, Subcommand)]
enum PkgCmd {
    /// Print the header of one or more .rpm files.
    Info(PkgInfo),
}

/// Arguments of `arbor pkg info`.
#[derive(Debug, Args)]
pub struct PkgInfo {
    /// The .rpm files to read.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print a JSON array instead of text.
    #[arg(long)]
    pub json: bool,
}

impl Pkg {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        let PkgCmd::Info(args) = self.command;
        let infos = args
            .files
            .iter()
            .map(|f| crate::rpm::info::read(f))
            .collect::<Result<Vec<_>>>()?;
        if args.json {
            return print_json(&infos);
        }
        for i in infos {
            let epoch = i.epoch.map(|e| format!("{e}:")).unwrap_or_default();
            println!("{}-{epoch}{}-{}.{}", i.name, i.version, i.release, i.arch);
            println!("  summary:     {}", i.summary);
            println!("  license:     {}", i.license);
            println!(
                "  size:        {} bytes installed, {} entries, {} payload",
                i.installed_size, i.file_count, i.payload_compressor
            );
            for (label, list) in [
                ("requires", &i.requires),
                ("provides", &i.provides),
                ("obsoletes", &i.obsoletes),
                ("conflicts", &i.conflicts),
                ("recommends", &i.recommends),
                ("suggests", &i.suggests),
                ("supplements", &i.supplements),
                ("enhances", &i.enhances),
                ("scriptlets", &i.scriptlets),
                ("triggers", &i.triggers),
                ("filetriggers", &i.file_triggers),
            ] {
                if !list.is_empty() {
                    println!("  {label:<12} {}", list.join(", "));
                }
            }
        }
        Ok(())
    }
}

/// Arguments of `arbor doctor`.
#[derive(Debug, Args)]
pub struct Doctor {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Doctor {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        let report = crate::host::check();
        let problems = report.problems();
        if self.json {
            print_json(&report)?;
        } else {
            println!("arbor {}", report.arbor_version);
            println!(
                "host arch:           {}",
                report
                    .host_arch
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "unknown".into())
            );
            println!("kernel:              {}", report.kernel_release);
            println!("private binfmt_misc: {}", yes_no(report.private_binfmt_misc));
            println!("user namespaces:     {}", yes_no(report.user_namespaces));
            println!("libsolv:             {}", report.libsolv_version);
            println!("libostree >= 2022.7: {}", yes_no(report.libostree_ok));
            for t in &report.tools {
                let at = t
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "MISSING".into());
                println!("{:<20} {at}  ({})", t.name, t.purpose);
            }
        }
        if !problems.is_empty() {
            bail!("{} problem(s): {}", problems.len(), problems.join("; "));
        }
        Ok(())
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
