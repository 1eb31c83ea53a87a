//! Static deltas with libostree's own generator: several generated at once,
//! each in its own `arbor __delta-worker` process (each delta writes its own
//! directory), then the summary and its delta index are regenerated.
//!
//! Processes, not threads: the generator allocates and touches hundreds of
//! MiB per delta (LZMA preset 8, bsdiff's suffix arrays), and threads of one
//! process fault those pages in under one address-space lock — measured here,
//! two threads gained 1.5x over one, two processes 1.9x.

use std::path::{Path, PathBuf};

use crate::ostree::repo::Repo;
use anyhow::{Context, Result, bail};
use ostree::gio;
use ostree::glib;
use ostree::glib::prelude::*;
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

/// The directory libostree keeps a delta in: `deltas/XX/REST/`, where
/// `XXREST` names the pair in ostree's modified base64 — the one place arbor
/// names it. A pair whose checksums are not 64 hex digits names no delta.
pub fn dir(repo: &Repo, pair: &Pair) -> Result<PathBuf> {
    Ok(repo.path().join(relative_dir(pair)?))
}

/// [`dir`] relative to the repository (and to a server's URL).
pub fn relative_dir(pair: &Pair) -> Result<PathBuf> {
    let name = match &pair.from {
        Some(f) => format!("{}-{}", mbase64(f)?, mbase64(&pair.to)?),
        None => mbase64(&pair.to)?,
    };
    let (head, rest) = name.split_at(2);
    Ok(Path::new("deltas").join(head).join(rest))
}

/// Where libostree keeps the superblock of a delta.
pub fn superblock_path(repo: &Repo, pair: &Pair) -> Result<PathBuf> {
    Ok(dir(repo, pair)?.join("superblock"))
}

/// ostree's delta naming: the checksum's bytes in base64 without padding, `/` → `_`.
fn mbase64(hex_checksum: &str) -> Result<String> {
    use base64::Engine as _;
    let bytes = match hex::decode(hex_checksum) {
        Ok(b) if b.len() == 32 => b,
        _ => bail!("{hex_checksum:?} is not a commit checksum (64 hex digits)"),
    };
    Ok(base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(bytes)
        .replace('/', "_"))
}

/// Generates every pair, `jobs` at a time, signs each superblock when a key is
/// given, then regenerates the summary (which records the superblocks' checksums).
pub fn generate(repo: &Repo, pairs: &[Pair], opts: &Options, jobs: usize) -> Result<()> {
    generate_signed(repo, pairs, opts, jobs, Signing::None)
}

/// How a superblock carries its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing<'a> {
    /// Unsigned.
    None,
    /// ostree's signed form `(taya{sv})` in the superblock file itself, which
    /// `ostree static-delta apply-offline` and bundles read. libostree 2022.7's
    /// pull cannot read it ("Invalid checksum of length 0") unless it can
    /// verify the signature, which Debian's build cannot (no libsodium).
    Wrapped(&'a ed25519_dalek::SigningKey),
    /// A plain superblock, which every libostree pulls, and its signature in
    /// `superblock.sig` beside it (`a{sv}` like `summary.sig`): what
    /// `arbor publish` serves, and what `arbor upgrade --check` verifies
    /// before it trusts a delta's sizes.
    Detached(&'a ed25519_dalek::SigningKey),
}

/// libostree's `min-fallback-size` (MB) for every delta arbor writes: none.
/// By default a new file over 4 MB is left out of a delta as a "fallback"
/// object that a pull fetches by itself, and `ostree static-delta
/// apply-offline` (which bundles use too) refuses such a delta: "contains
/// nonempty http fallback entries". Inside a part the file is LZMA-compressed
/// (smaller than the archive's gzip object), and libostree decompresses a part
/// into an anonymous temporary file, not memory, so devices lose nothing.
pub const MIN_FALLBACK_SIZE_MB: u32 = 0;

/// The detached signature file of a published superblock.
pub const SUPERBLOCK_SIG: &str = "superblock.sig";

/// [`generate`] with the superblocks signed as `signing` says.
pub fn generate_signed(repo: &Repo, pairs: &[Pair], opts: &Options, jobs: usize, signing: Signing) -> Result<()> {
    generate_parallel(repo, pairs, opts, jobs)?;
    for p in pairs {
        let path = superblock_path(repo, p)?;
        match signing {
            Signing::None => {}
            Signing::Wrapped(key) => sign_superblock(&path, key)?,
            Signing::Detached(key) => {
                let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                let dict = crate::ostree::sign::signature_dict(&bytes, key);
                crate::atomic::write(&dir(repo, p)?.join(SUPERBLOCK_SIG), &dict.data_as_bytes())
                    .with_context(|| format!("writing the signature of {}", path.display()))?;
            }
        }
    }
    repo.raw()
        .regenerate_summary(None, gio::Cancellable::NONE)
        .context("regenerating the summary and its delta index")?;
    Ok(())
}

/// Only the generation, `jobs` deltas at a time (no signing, no summary):
/// in worker processes when this is the arbor binary (or `$ARBOR_EXE` names
/// it), otherwise in threads.
pub fn generate_parallel(repo: &Repo, pairs: &[Pair], opts: &Options, jobs: usize) -> Result<()> {
    if pairs.is_empty() {
        bail!("no deltas to generate");
    }
    let exe = crate::reexec::arbor_exe();
    let repo_path = repo.path();
    // A thread's own handle when it generates in-process (libostree allows
    // one transaction per repository object); a worker process opens its own.
    let handle = || match exe {
        Some(_) => Ok(None),
        None => Repo::open(repo_path).map(Some),
    };
    crate::parallel::map_bounded_with(pairs, jobs, handle, |repo, p| {
        match (&exe, repo) {
            (Some(exe), _) => generate_in_worker(exe, repo_path, p, opts),
            (None, Some(repo)) => generate_one(repo, p, opts),
            (None, None) => unreachable!("a repository or a worker executable"),
        }
        .with_context(|| {
            format!(
                "generating the delta {} → {} in {}",
                p.from.as_deref().unwrap_or("(scratch)"),
                p.to,
                repo_path.display()
            )
        })
    })?;
    Ok(())
}

fn generate_one(repo: &Repo, p: &Pair, opts: &Options) -> Result<()> {
    let params = glib::VariantDict::new(None);
    params.insert("max-chunk-size", opts.max_part_mb);
    params.insert("bsdiff-enabled", opts.bsdiff);
    params.insert("inline-parts", opts.inline_parts);
    params.insert("min-fallback-size", MIN_FALLBACK_SIZE_MB);
    repo.raw().static_delta_generate(
        ostree::StaticDeltaGenerateOpt::Major,
        p.from.as_deref(),
        &p.to,
        None,
        Some(&params.end()),
        gio::Cancellable::NONE,
    )?;
    Ok(())
}

/// The hidden first argument of a delta worker process.
pub const WORKER_ARG: &str = "__delta-worker";

fn generate_in_worker(exe: &Path, repo_path: &Path, p: &Pair, opts: &Options) -> Result<()> {
    let out = std::process::Command::new(exe)
        .arg(WORKER_ARG)
        .arg(repo_path)
        .arg(p.from.as_deref().unwrap_or("-"))
        .arg(&p.to)
        .arg(opts.max_part_mb.to_string())
        .arg(if opts.bsdiff { "1" } else { "0" })
        .arg(if opts.inline_parts { "1" } else { "0" })
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .with_context(|| format!("starting {} {WORKER_ARG}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "the delta worker failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Entry point of `arbor __delta-worker REPO FROM|- TO MAX_PART_MB BSDIFF INLINE`
/// (started by [`generate_parallel`]).
pub fn worker_main(args: &[String]) -> Result<()> {
    let [repo, from, to, part, bsdiff, inline] = args else {
        bail!("usage: arbor {WORKER_ARG} REPO FROM|- TO MAX_PART_MB BSDIFF INLINE");
    };
    let pair = Pair {
        from: (from != "-").then(|| from.clone()),
        to: to.clone(),
    };
    let opts = Options {
        max_part_mb: part.parse().context("MAX_PART_MB")?,
        bsdiff: bsdiff == "1",
        inline_parts: inline == "1",
    };
    generate_one(&Repo::open(Path::new(repo))?, &pair, &opts)
}

/// ostree's magic for a signed superblock, `OSTSGNDT`, stored big-endian.
const SIGNED_MAGIC: u64 = 0x4F53_5453_474E_4454;

/// Wraps a superblock in ostree's signed format `(taya{sv})`: the magic, the
/// superblock bytes, and `ostree.sign.ed25519` (`aay`) over those bytes.
/// Clients that do not check signatures unwrap it; written temp + rename.
pub fn sign_superblock(path: &Path, key: &ed25519_dalek::SigningKey) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if signed_parts(&bytes).is_some() {
        bail!("{} is already signed", path.display());
    }
    let wrapped = glib::Variant::tuple_from_iter([
        SIGNED_MAGIC.to_be().to_variant(),
        glib::Variant::array_from_fixed_array(&bytes),
        crate::ostree::sign::signature_dict(&bytes, key),
    ]);
    crate::atomic::write(path, &wrapped.data_as_bytes()).with_context(|| format!("replacing {}", path.display()))
}

/// Checks a signed superblock against `trust`; returns the key that signed it.
pub fn verify_superblock(path: &Path, trust: &crate::sign::Trust) -> Result<ed25519_dalek::VerifyingKey> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (superblock, signatures) = signed_parts(&bytes).with_context(|| {
        format!(
            "{}: not a signed delta superblock (no OSTSGNDT wrapper)",
            path.display()
        )
    })?;
    crate::sign::judge_signatures(&superblock, &signatures, trust)
        .map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))
}

/// The superblock bytes and signatures of a signed superblock, `None` when unsigned or malformed.
pub(crate) fn signed_parts(bytes: &[u8]) -> Option<(Vec<u8>, crate::sign::Signatures)> {
    let ty = glib::VariantTy::new("(taya{sv})").ok()?;
    let v = glib::Variant::from_bytes_with_type(&glib::Bytes::from(bytes), ty);
    if !v.is_normal_form() || u64::from_be(v.child_value(0).get::<u64>()?) != SIGNED_MAGIC {
        return None;
    }
    let superblock = v.child_value(1).fixed_array::<u8>().ok()?.to_vec();
    Some((superblock, crate::ostree::sign::signature_entries(&v.child_value(2))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_names_match_ostree() {
        // From `ostree static-delta list` and the on-disk directory of the same delta.
        let to = "60aec8b1b7a7c7da9b643e994c48bddbb1ca985d8f19fb6f2d9ad69bde33f292";
        assert_eq!(mbase64(to).unwrap(), "YK7Isbenx9qbZD6ZTEi927HKmF2PGftvLZrWm94z8pI");
    }

    #[test]
    fn a_bad_checksum_names_no_delta() {
        for bad in ["", "zz", "deadbeef", &"g".repeat(64)] {
            let e = mbase64(bad).unwrap_err().to_string();
            assert!(e.contains("is not a commit checksum"), "{e}");
        }
    }
}
