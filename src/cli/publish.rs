//! `arbor keygen|sign|verify|delta|publish|bundle`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::print_json;
use crate::arch::Arch;
use crate::ostree::sign;
use crate::sign::{Binding, Trust};

/// Arguments of `arbor keygen`.
#[derive(Debug, Args)]
pub struct Keygen {
    /// Where to write the secret key (base64, mode 0600); the public key goes to FILE.pub.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Arguments of `arbor sign`.
#[derive(Debug, Args)]
pub struct Sign {
    /// The OSTree repository.
    #[arg(long)]
    pub repo: PathBuf,
    /// The ed25519 secret key file.
    #[arg(long)]
    pub key: PathBuf,
    /// Commit checksum or ref to sign.
    pub commit: String,
}

/// Arguments of `arbor verify`.
#[derive(Debug, Args)]
pub struct Verify {
    /// The OSTree repository.
    #[arg(long)]
    pub repo: PathBuf,
    /// A public key file (base64 keys, one a line, `#` comments) or a directory
    /// of them (ostree's trusted.ed25519.d); any one trusted key suffices.
    #[arg(long)]
    pub keys: PathBuf,
    /// Revoked public keys (file or directory): their signatures never count.
    #[arg(long)]
    pub revoked: Option<PathBuf>,
    /// Commit checksum or ref to verify.
    pub commit: String,
    /// Require the commit to be bound to this ref: listed in its
    /// ostree.ref-binding, or, if it has none, reached through this ref.
    #[arg(long = "ref", value_name = "REF")]
    pub ref_name: Option<String>,
    /// Require the commit's arbor.arch to be this arch.
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Require this board to be in the commit's arbor.boards.
    #[arg(long)]
    pub board: Option<String>,
    /// Print the result as JSON: {commit, valid, key, reasons}.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `arbor delta`.
#[derive(Debug, Args)]
pub struct Delta {
    /// The OSTree repository.
    #[arg(long)]
    pub repo: PathBuf,
    /// The ref to generate deltas for.
    pub r#ref: String,
    /// Generate deltas from this many previous commits (a number), or from this commit.
    #[arg(long, default_value = "1")]
    pub from: String,
    /// Skip the from-scratch delta (used for first installs).
    #[arg(long)]
    pub no_scratch: bool,
    /// Maximum size of one delta part in MiB.
    #[arg(long, default_value_t = 32)]
    pub max_part_size: u32,
    /// Do not use bsdiff for modified files (larger deltas, less CPU on devices).
    #[arg(long)]
    pub no_bsdiff: bool,
    /// Keep delta parts inside the superblock (one file per delta).
    #[arg(long)]
    pub inline_parts: bool,
    /// Deltas generated at once [default: number of CPUs].
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Sign each delta's superblock with this ed25519 secret key (ostree's signed-delta format).
    #[arg(long)]
    pub sign_key: Option<PathBuf>,
    /// Check the signatures of the deltas to REF against these public keys instead of generating.
    #[arg(long, conflicts_with = "sign_key")]
    pub verify: Option<PathBuf>,
    /// Print the generated deltas as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `arbor publish`.
#[derive(Debug, Args)]
pub struct Publish {
    /// The OSTree repository to publish from.
    #[arg(long)]
    pub repo: PathBuf,
    /// The directory to write the static repository into (an archive-mode repo; created if missing).
    #[arg(long)]
    pub to: PathBuf,
    /// Maximum size of one delta part in MiB.
    #[arg(long, default_value_t = 32)]
    pub max_part_size: u32,
    /// Do not use bsdiff in deltas.
    #[arg(long)]
    pub no_bsdiff: bool,
    /// Also generate a from-scratch delta for each ref (a first install over the
    /// network; minutes for a whole tree). By default only deltas from each ref's
    /// previous commit are generated.
    #[arg(long)]
    pub from_scratch: bool,
    /// Parallel compression and delta jobs [default: number of CPUs].
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Sign the summary (summary.sig) and every delta superblock with this ed25519 secret key.
    #[arg(long)]
    pub sign_key: Option<PathBuf>,
    /// Print the published index as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Bundle verbs.
#[derive(Debug, Subcommand)]
pub enum Bundle {
    /// Write a single-file offline update from one commit to another.
    Create(BundleCreate),
    /// Check a bundle's signatures without applying it.
    Verify(BundleVerify),
}

/// Arguments of `arbor bundle create`.
#[derive(Debug, Args)]
pub struct BundleCreate {
    /// The OSTree repository.
    #[arg(long)]
    pub repo: PathBuf,
    /// The commit (or ref) devices have now; omitted: a from-scratch bundle
    /// that any device of the board can apply.
    #[arg(long)]
    pub from: Option<String>,
    /// The commit (or ref) to update them to; it must be signed (`arbor sign`).
    #[arg(long)]
    pub to: String,
    /// The bundle file to write (replaced atomically).
    #[arg(short, long)]
    pub output: PathBuf,
    /// The ed25519 secret key that signs the bundle's manifest.
    #[arg(long)]
    pub key: PathBuf,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `arbor bundle verify`.
#[derive(Debug, Args)]
pub struct BundleVerify {
    /// The bundle file.
    pub file: PathBuf,
    /// A public key file or a directory of them; the bundle's manifest and its
    /// target commit must each be signed by one of these keys.
    #[arg(long)]
    pub keys: PathBuf,
    /// Revoked public keys (file or directory): their signatures never count.
    #[arg(long)]
    pub revoked: Option<PathBuf>,
    /// Print the result as JSON: {valid, board, manifest_key, commit_key, reasons}.
    #[arg(long)]
    pub json: bool,
}

impl Keygen {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        let public = crate::sign::keys::generate_keypair(&self.output)?;
        println!("{}", crate::sign::keys::encode_public(&public));
        Ok(())
    }
}
impl Sign {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        let s = sign::sign_commit(&crate::ostree::Repo::open(&self.repo)?, &self.commit, &self.key)?;
        let what = if s.added { "signed" } else { "already signed" };
        println!("commit {}: {what} with key {}", s.commit, s.key);
        Ok(())
    }
}
impl Verify {
    /// Runs the verb; a refused commit is an error (exit 1) after the report.
    pub fn run(self) -> Result<()> {
        let trust = Trust::load(&self.keys, self.revoked.as_deref())?;
        let binding = Binding {
            arch: self.arch,
            board: self.board,
            ref_name: self.ref_name,
        };
        let report = sign::check_commit(&crate::ostree::Repo::open(&self.repo)?, &self.commit, &trust, &binding)?;
        if self.json {
            print_json(&report)?;
        }
        match (report.valid, &report.key) {
            (true, Some(key)) => {
                if !self.json {
                    println!("commit {}: good signature from key {key}", report.commit);
                }
                Ok(())
            }
            _ => anyhow::bail!("commit {} is refused: {}", report.commit, report.reasons.join("; ")),
        }
    }
}
impl Delta {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        use crate::ostree::publish::delta::{self, Pair};
        let repo = crate::ostree::Repo::open(&self.repo)?;
        let to = repo.resolve_present(&self.r#ref)?;
        let froms = match self.from.parse::<usize>() {
            Ok(n) => repo.ancestors(&to, n)?,
            Err(_) => vec![repo.resolve_present(&self.from)?],
        };
        let mut pairs: Vec<Pair> = froms
            .into_iter()
            .map(|f| Pair {
                from: Some(f),
                to: to.clone(),
            })
            .collect();
        if !self.no_scratch {
            pairs.push(Pair {
                from: None,
                to: to.clone(),
            });
        }
        if let Some(keys) = &self.verify {
            let trust = crate::sign::Trust::load(keys, None)?;
            for p in &pairs {
                let key = delta::verify_superblock(&delta::superblock_path(&repo, p)?, &trust)?;
                let from = p.from.as_deref().unwrap_or("(scratch)");
                println!(
                    "{from} -> {to}: good signature from key {}",
                    crate::sign::keys::encode_public(&key)
                );
            }
            return Ok(());
        }
        let key = self
            .sign_key
            .as_deref()
            .map(crate::sign::keys::read_secret_key)
            .transpose()?;
        let opts = delta::Options {
            max_part_mb: self.max_part_size,
            bsdiff: !self.no_bsdiff,
            inline_parts: self.inline_parts,
        };
        let jobs = self
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
        delta::generate_signed(
            &repo,
            &pairs,
            &opts,
            jobs,
            key.as_ref().map_or(delta::Signing::None, delta::Signing::Wrapped),
        )?;
        if self.json {
            return super::print_json(&pairs);
        }
        for p in &pairs {
            println!("{} -> {to}", p.from.as_deref().unwrap_or("(scratch)"));
        }
        Ok(())
    }
}
impl Publish {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        let opts = crate::ostree::publish::delta::Options {
            max_part_mb: self.max_part_size,
            bsdiff: !self.no_bsdiff,
            inline_parts: false,
        };
        let jobs = self
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
        let key = self
            .sign_key
            .as_deref()
            .map(crate::sign::keys::read_secret_key)
            .transpose()?;
        let src = crate::ostree::Repo::open(&self.repo)?;
        let refs = crate::ostree::publish::published_refs(&src)?;
        let dest = crate::ostree::Repo::open_or_create(&self.to, crate::ostree::Mode::Archive)?;
        let index = crate::ostree::publish::publish(&src, &refs, &dest, &opts, self.from_scratch, jobs, key.as_ref())?;
        if self.json {
            return super::print_json(&index);
        }
        for (r, e) in &index.refs {
            let paths: Vec<String> = e
                .deltas
                .iter()
                .map(|d| {
                    format!(
                        "{} ({} bytes)",
                        d.from.as_deref().map(|f| &f[..12]).unwrap_or("scratch"),
                        d.size
                    )
                })
                .collect();
            let deltas = if paths.is_empty() {
                "no deltas (no previous commit; --from-scratch adds one from nothing)".to_string()
            } else {
                format!("deltas from {}", paths.join(", "))
            };
            println!("{r} => {} {}; {deltas}", e.commit, e.version.as_deref().unwrap_or(""));
        }
        println!("published to {} (index: arbor-index.json)", self.to.display());
        Ok(())
    }
}
impl Bundle {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        match self {
            Bundle::Create(c) => c.run(),
            Bundle::Verify(v) => v.run(),
        }
    }
}
impl BundleCreate {
    /// Runs the verb.
    pub fn run(self) -> Result<()> {
        let key = crate::sign::keys::read_secret_key(&self.key)?;
        let created = crate::ostree::bundle::create(&crate::ostree::bundle::CreateOptions {
            repo: &crate::ostree::Repo::open(&self.repo)?,
            from: self.from.as_deref(),
            to: &self.to,
            output: &self.output,
            key: &key,
        })?;
        if self.json {
            return print_json(&serde_json::json!({
                "path": created.path,
                "size": created.size,
                "board": created.board,
            }));
        }
        println!("wrote {} ({} bytes)", created.path.display(), created.size);
        println!("{}", crate::bundle::describe(&created.board));
        Ok(())
    }
}
impl BundleVerify {
    /// Runs the verb; a refused bundle is an error (exit 1) after the report.
    pub fn run(self) -> Result<()> {
        let trust = Trust::load(&self.keys, self.revoked.as_deref())?;
        let verified = crate::ostree::bundle::verify_file(&self.file, &trust);
        if self.json {
            let report = match &verified {
                Ok(v) => crate::bundle::Report::valid(v),
                Err(e) => crate::bundle::Report::refused(format!("{e:#}")),
            };
            print_json(&report)?;
        }
        let v = verified?;
        if !self.json {
            println!(
                "bundle {}: good (manifest signed by {}, commit signed by {}); nothing applied",
                self.file.display(),
                crate::sign::keys::encode_public(&v.manifest_key),
                crate::sign::keys::encode_public(&v.commit_key)
            );
            println!("{}", crate::bundle::describe(&v.board));
        }
        Ok(())
    }
}
