//! Copying commits between repositories (usually bare-user → archive, for
//! serving): content objects compressed in parallel worker processes, then
//! the metadata and the ref in one final transaction.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ostree::gio;
use ostree::prelude::*;

use crate::ostree::repo::Repo;

/// Copies `commit` and everything it references from `src` to `dst` (usually
/// bare-user → archive), compressing content objects on `jobs` threads at once
/// (libostree compresses on one core), then moves `refname` in `dst` in a final
/// transaction: a crash before that leaves the ref as it was.
pub fn copy_commit(src: &Repo, dst: &Repo, commit: &str, refname: &str, jobs: usize) -> Result<()> {
    copy_objects(src, dst, commit, Some(refname), jobs)
}

/// Like [`copy_commit`]; with `refname` `None` only the objects are copied
/// (publishing moves every ref at the very end).
pub fn copy_objects(src: &Repo, dst: &Repo, commit: &str, refname: Option<&str>, jobs: usize) -> Result<()> {
    let (src_repo, dst_repo) = (src.raw(), dst.raw());
    let (src, dst) = (src.path(), dst.path());
    let objects = src_repo
        .traverse_commit(commit, 0, gio::Cancellable::NONE)
        .with_context(|| format!("listing the objects of {commit}"))?;
    let mut files = Vec::new();
    let mut meta = Vec::new();
    for o in objects {
        let (csum, kind) = (o.checksum().to_string(), o.object_type());
        if dst_repo
            .has_object(kind, &csum, gio::Cancellable::NONE)
            .unwrap_or(false)
        {
            continue;
        }
        if kind == ostree::ObjectType::File {
            files.push(csum)
        } else {
            meta.push((kind, csum))
        }
    }
    files.sort();
    let chunks: Vec<Vec<String>> = {
        let n = jobs.clamp(1, files.len().max(1));
        (0..n)
            .map(|i| files.iter().skip(i).step_by(n).cloned().collect())
            .collect()
    };
    // Worker processes when the arbor executable is known: threads of one
    // process compress at ~1.5x on two cores, processes at ~1.9x (see `delta`).
    let exe = crate::reexec::arbor_exe();
    crate::parallel::map_bounded(&chunks, jobs, |chunk| match &exe {
        Some(exe) if !chunk.is_empty() => copy_files_in_worker(exe, src, dst, chunk),
        _ => copy_files(src, dst, chunk),
    })?;
    // Metadata last, the commit object after its trees, then the ref.
    meta.sort_by_key(|(kind, _)| *kind == ostree::ObjectType::Commit);
    crate::ostree::repo::in_transaction(dst_repo, || {
        for (kind, csum) in &meta {
            let v = src_repo
                .load_variant(*kind, csum)
                .with_context(|| format!("loading {kind:?} {csum}"))?;
            dst_repo
                .write_metadata(*kind, Some(csum), &v, gio::Cancellable::NONE)
                .with_context(|| format!("writing {kind:?} {csum}"))?;
        }
        if let Some(detached) = src_repo.read_commit_detached_metadata(commit, gio::Cancellable::NONE)? {
            dst_repo.write_commit_detached_metadata(commit, Some(&detached), gio::Cancellable::NONE)?;
        }
        crate::failpoint::hit("compose::commit-written")?;
        if let Some(refname) = refname {
            dst_repo.transaction_set_ref(None, refname, Some(commit));
        }
        dst_repo
            .commit_transaction(gio::Cancellable::NONE)
            .context("committing the OSTree transaction")?;
        Ok(())
    })
}

/// The hidden first argument of an object-copy worker process.
pub const COPY_WORKER_ARG: &str = "__copy-worker";

fn copy_files_in_worker(exe: &Path, src: &Path, dst: &Path, checksums: &[String]) -> Result<()> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(exe)
        .arg(COPY_WORKER_ARG)
        .arg(src)
        .arg(dst)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} {COPY_WORKER_ARG}", exe.display()))?;
    let mut stdin = child.stdin.take().context("worker stdin")?;
    let list = checksums.join("\n");
    let fed = stdin.write_all(list.as_bytes());
    drop(stdin);
    let out = child.wait_with_output().context("waiting for an object-copy worker")?;
    if !out.status.success() {
        bail!(
            "copying objects from {} to {}: the worker failed ({}): {}",
            src.display(),
            dst.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    fed.context("feeding an object-copy worker")
}

/// Entry point of `arbor __copy-worker SRC DST` (checksums on stdin, one per
/// line; started by [`copy_objects`]).
pub fn copy_worker_main(args: &[String]) -> Result<()> {
    let [src, dst] = args else {
        bail!("usage: arbor {COPY_WORKER_ARG} SRC DST < checksums");
    };
    let mut list = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut list).context("reading the checksums")?;
    let checksums: Vec<String> = list.lines().map(str::to_string).collect();
    copy_files(Path::new(src), Path::new(dst), &checksums)
}

/// One worker's share of content objects, in its own repository handles and transaction.
fn copy_files(src: &Path, dst: &Path, checksums: &[String]) -> Result<()> {
    if checksums.is_empty() {
        return Ok(());
    }
    // Handles of its own: libostree allows one transaction per repository object.
    let (src_repo, dst_repo) = (Repo::open(src)?, Repo::open(dst)?);
    let (src_repo, dst_repo) = (src_repo.raw(), dst_repo.raw());
    crate::ostree::repo::in_transaction(dst_repo, || {
        for csum in checksums {
            let (input, info, xattrs) = src_repo
                .load_file(csum, gio::Cancellable::NONE)
                .with_context(|| format!("loading file object {csum}"))?;
            let input = input.unwrap_or_else(|| gio::MemoryInputStream::new().upcast());
            let (stream, len) =
                ostree::raw_file_to_content_stream(&input, &info, Some(&xattrs), gio::Cancellable::NONE)
                    .with_context(|| format!("streaming file object {csum}"))?;
            dst_repo
                .write_content_trusted(csum, &stream, len, gio::Cancellable::NONE)
                .with_context(|| format!("writing file object {csum}"))?;
        }
        dst_repo
            .commit_transaction(gio::Cancellable::NONE)
            .context("committing the OSTree transaction")?;
        Ok(())
    })
}
