//! Static deltas with libostree's own generator: several generated at once
//! (one repository handle per thread; each delta writes its own directory),
//! then the summary and its delta index are regenerated.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ostree::gio;
use ostree::glib;
use serde::Serialize;

/// Generator settings that matter on devices.
#[derive(Debug, Clone)]
pub struct Options {
    /// Maximum size of one delta part, in MiB (smaller parts resume better on flaky links).
    pub max_part_mb: u32,
    /// Use bsdiff for modified files (smaller deltas, more CPU on both ends).
    pub bsdiff: bool,
    /// Store parts inside the superblock (one file per delta).
    pub inline_parts: bool,
}

/// One delta to generate: `from` is `None` for a from-scratch delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair {
    /// Source commit (`None`: from scratch, for first installs).
    pub from: Option<String>,
    /// Target commit.
    pub to: String,
}

/// The commit a ref or checksum names.
pub fn resolve(repo_path: &Path, rev: &str) -> Result<String> {
    let repo = open(repo_path)?;
    Ok(repo
        .resolve_rev(rev, false)
        .with_context(|| format!("{rev} is not a ref or commit in {}", repo_path.display()))?
        .map(|s| s.to_string())
        .unwrap_or_default())
}

/// Up to `n` ancestors of `commit`, nearest first (stops where history is not in the repository).
pub fn ancestors(repo_path: &Path, commit: &str, n: usize) -> Result<Vec<String>> {
    let repo = open(repo_path)?;
    let mut out = Vec::new();
    let mut cur = commit.to_string();
    while out.len() < n {
        let (variant, _) = repo
            .load_commit(&cur)
            .with_context(|| format!("loading commit {cur}"))?;
        let Some(parent) = ostree::commit_get_parent(&variant) else {
            break;
        };
        let parent = parent.to_string();
        if !repo.has_object(ostree::ObjectType::Commit, &parent, gio::Cancellable::NONE)? {
            break;
        }
        out.push(parent.clone());
        cur = parent;
    }
    Ok(out)
}

/// Generates every pair, `jobs` at a time, then regenerates the summary.
pub fn generate(repo_path: &Path, pairs: &[Pair], opts: &Options, jobs: usize) -> Result<()> {
    if pairs.is_empty() {
        bail!("no deltas to generate");
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..jobs.clamp(1, pairs.len()))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let repo = open(repo_path)?;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(p) = pairs.get(i) else { return Ok(()) };
                        let params = glib::VariantDict::new(None);
                        params.insert("max-chunk-size", opts.max_part_mb);
                        params.insert("bsdiff-enabled", opts.bsdiff);
                        params.insert("inline-parts", opts.inline_parts);
                        repo.static_delta_generate(
                            ostree::StaticDeltaGenerateOpt::Major,
                            p.from.as_deref(),
                            &p.to,
                            None,
                            Some(&params.end()),
                            gio::Cancellable::NONE,
                        )
                        .with_context(|| {
                            format!(
                                "generating the delta {} → {}",
                                p.from.as_deref().unwrap_or("(scratch)"),
                                p.to
                            )
                        })?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("a delta thread panicked"))??;
        }
        Ok(())
    })?;
    open(repo_path)?
        .regenerate_summary(None, gio::Cancellable::NONE)
        .context("regenerating the summary and its delta index")?;
    Ok(())
}

fn open(path: &Path) -> Result<ostree::Repo> {
    let repo = ostree::Repo::new_for_path(path);
    repo.open(gio::Cancellable::NONE)
        .with_context(|| format!("opening OSTree repository {}", path.display()))?;
    Ok(repo)
}
