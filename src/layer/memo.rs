//! Memoized scriptlets: each run of a layering is keyed by what decides its
//! effect, and its effect (what it changed in the overlay's upper directory)
//! is kept as an OSTree commit under `arbor/memo/<key>`. A later layering —
//! another install, or the same packages on a new base — replays a recorded
//! run instead of running it when the key and the run's preconditions match.
//!
//! The key: the script (interpreter argv, body), its package, rpm's arguments,
//! its stdin (a file trigger's matched paths), the content of its interpreter
//! in the tree, for a file trigger the packages with files under its
//! prefixes (rpm's own domain for the trigger: each by its installed header's
//! digest or its package commit), and the upper directory's whole state
//! before the run (content digests of what earlier runs, the layered
//! packages' /etc and the hidden base files left there). The preconditions:
//! every path the run changed has, in the read-only layers, the state it had
//! when the run was recorded (so a base upgrade that changes a file a script
//! edits, such as /etc/ld.so.cache or /etc/group, reruns that script).
//!
//! Unsafe, and not detected: a script whose effect depends on a base file it
//! reads but neither changes nor lists as a file-trigger prefix (a `%post`
//! that copies /usr/lib/os-release somewhere, say), or on time, randomness or
//! the network. `--no-memo` (and `memoize: false`) runs every script.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cap_std::fs::Dir;
use sha2::{Digest, Sha256};

use crate::ostree::Repo;
use crate::ostree::commit::{self as ocommit, Meta};
use crate::scriptlet::exec;
use crate::scriptlet::plan::Step;

/// Ref prefix of recorded runs.
pub const REF_PREFIX: &str = "arbor/memo/";

/// Bumped when what a key covers changes: old records are then never hit.
const KEY_VERSION: &str = "arbor-memo-1";

/// What ran and what was replayed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Runs executed (`NEVRA %phase`), in order.
    pub ran: Vec<String>,
    /// Runs replayed from a record, in order.
    pub reused: Vec<String>,
    /// The keys of every run (recorded or replayed), kept while a deployment uses them.
    #[serde(skip)]
    pub keys: Vec<String>,
    /// The script runner's counts for the runs executed.
    pub exec: exec::Report,
}

/// Where the runs happen.
pub struct Runner<'a> {
    /// The repository records are kept in.
    pub repo: &'a Repo,
    /// Their checkouts (the overlay's read-only layers), top first.
    pub layers: &'a [PathBuf],
    /// The overlay's upper directory (host path).
    pub upper: &'a Path,
    /// The merged tree.
    pub root: &'a Dir,
    /// The merged tree's host path (for reading interpreters inside it).
    pub root_path: PathBuf,
    /// A scratch directory for staging records.
    pub work: &'a Path,
    /// Look up and record runs (false: run everything, the oracle).
    pub memoize: bool,
}

/// One entry of the upper directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Identity on disk: an entry is rehashed only when this changes.
    stamp: (u64, i64, i64, u64, u32),
    /// What it holds: kind, mode, owner, content digest or link target.
    digest: String,
}

type Snapshot = BTreeMap<String, Entry>;

/// Runs `steps` in order, replaying recorded runs where allowed.
/// `inputs` gives more of what decides a step's effect (for a file trigger,
/// the packages with files under its prefixes), as lines of the key.
pub fn run_steps(
    r: &Runner,
    sb: &mut crate::sandbox::Sandbox,
    steps: &[Step],
    inputs: &dyn Fn(&Step) -> Vec<String>,
    names: &BTreeMap<String, String>,
    opts: &exec::Options,
) -> Result<Report> {
    let mut report = Report::default();
    let bar = crate::progress::Progress::bar(steps.len() as u64, "scriptlets");
    let mut before = snapshot(r.upper, &Snapshot::new())?;
    for step in steps {
        let label = format!("{} {}", step.package, step.phase);
        bar.message(&label);
        let key = key(r, step, &inputs(step), &before)?;
        let refname = format!("{REF_PREFIX}{key}");
        let hit = if r.memoize { r.repo.resolve_ref(&refname)? } else { None };
        let replayed = match hit {
            Some(commit) => replay(r, &commit).with_context(|| format!("replaying the recorded run of {label}"))?,
            None => false,
        };
        if replayed {
            tracing::info!(script = %label, "reused its recorded output");
            report.reused.push(label.clone());
        } else {
            let done = exec::run_step(sb, step, names, opts, &mut report.exec);
            if done.is_err() {
                bar.finish();
            }
            done?;
            report.ran.push(label.clone());
        }
        let after = snapshot(r.upper, &before)?;
        if r.memoize && !replayed {
            record(r, &refname, &before, &after).with_context(|| format!("recording the output of {label}"))?;
        }
        report.keys.push(key);
        before = after;
        bar.inc();
    }
    bar.finish();
    Ok(report)
}

/// The key of `step` given the upper directory's state before it.
fn key(r: &Runner, step: &Step, inputs: &[String], upper: &Snapshot) -> Result<String> {
    let mut h = Sha256::new();
    let mut field = |name: &str, value: &[u8]| {
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    };
    field("version", KEY_VERSION.as_bytes());
    field("package", step.package.as_bytes());
    field("phase", step.phase.to_string().as_bytes());
    field("program", step.script.program.join("\0").as_bytes());
    field("body", step.script.body.as_deref().unwrap_or_default().as_bytes());
    field("args", step.args.join("\0").as_bytes());
    field("stdin", step.stdin.as_deref().unwrap_or_default().as_bytes());
    let interpreter = match step.script.program.first() {
        Some(p) if p.starts_with('/') => {
            let tree = crate::image::tree::Tree::open(&r.root_path)?;
            match tree.read(p, 256 << 20)? {
                Some(bytes) => hex::encode(Sha256::digest(&bytes)),
                None => "absent".to_string(),
            }
        }
        _ => env!("CARGO_PKG_VERSION").to_string(),
    };
    field("interpreter", interpreter.as_bytes());
    for line in inputs {
        field("input", line.as_bytes());
    }
    let mut state = Sha256::new();
    for (path, e) in upper {
        state.update(format!("{path}\t{}\n", e.digest));
    }
    field("upper", &state.finalize());
    Ok(hex::encode(h.finalize()))
}

/// The upper directory's entries; digests of entries unchanged since `prev` are reused.
fn snapshot(upper: &Path, prev: &Snapshot) -> Result<Snapshot> {
    let mut out = Snapshot::new();
    walk(upper, "", prev, &mut out)?;
    Ok(out)
}

fn walk(upper: &Path, rel: &str, prev: &Snapshot, out: &mut Snapshot) -> Result<()> {
    let dir = upper.join(rel);
    let entries = std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
    for e in entries {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let host = upper.join(&path);
        let md = std::fs::symlink_metadata(&host).with_context(|| format!("looking at {}", host.display()))?;
        let stamp = (md.ino(), md.ctime(), md.ctime_nsec(), md.size(), md.mode());
        let digest = match prev.get(&path) {
            Some(p) if p.stamp == stamp => p.digest.clone(),
            _ => describe(&host, &md)?,
        };
        out.insert(path.clone(), Entry { stamp, digest });
        if md.is_dir() {
            walk(upper, &path, prev, out)?;
        }
    }
    Ok(())
}

/// Kind, mode, owner and content of an upper entry (host path, never followed).
fn describe(host: &Path, md: &std::fs::Metadata) -> Result<String> {
    let meta = format!("{:o} {}:{}", md.mode(), md.uid(), md.gid());
    let ft = md.file_type();
    Ok(if ft.is_dir() {
        let opaque = crate::overlay::is_opaque(host)?;
        format!("dir {meta}{}", if opaque { " opaque" } else { "" })
    } else if ft.is_symlink() {
        let target = std::fs::read_link(host).with_context(|| format!("reading {}", host.display()))?;
        format!("link {meta} {}", target.display())
    } else if crate::overlay::is_whiteout(md) {
        "whiteout".to_string()
    } else if ft.is_file() {
        let mut f = std::fs::File::open(host).with_context(|| format!("opening {}", host.display()))?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", host.display()))?;
        format!("file {meta} {}", hex::encode(h.finalize()))
    } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() || ft.is_socket() {
        format!("special {meta} {}", md.rdev())
    } else {
        format!("other {meta}")
    })
}

/// What a path holds in the read-only layers (top first): the run's precondition.
fn lower_state(r: &Runner, path: &str) -> Result<String> {
    for layer in r.layers {
        let dir = Dir::open_ambient_dir(layer, cap_std::ambient_authority())
            .with_context(|| format!("opening {}", layer.display()))?;
        let Ok(md) = dir.symlink_metadata(path) else {
            continue;
        };
        use cap_std::fs::MetadataExt as _;
        let meta = format!("{:o} {}:{}", md.mode(), md.uid(), md.gid());
        return Ok(if md.is_dir() {
            format!("dir {meta}")
        } else if md.is_symlink() {
            let target = dir
                .read_link_contents(path)
                .with_context(|| format!("reading /{path}"))?;
            format!("link {meta} {}", target.display())
        } else {
            let mut f = dir
                .open(path)
                .with_context(|| format!("opening /{path} in {}", layer.display()))?;
            let mut h = Sha256::new();
            std::io::copy(&mut f, &mut h).with_context(|| format!("reading /{path}"))?;
            format!("file {meta} {}", hex::encode(h.finalize()))
        });
    }
    Ok("absent".to_string())
}

/// Keeps what changed between `before` and `after` as the commit `refname`.
fn record(r: &Runner, refname: &str, before: &Snapshot, after: &Snapshot) -> Result<()> {
    let mut changed: Vec<&str> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    let mut opaque: Vec<String> = Vec::new();
    for (path, e) in after {
        if before.get(path).is_some_and(|b| b.digest == e.digest) {
            continue;
        }
        if e.digest == "whiteout" {
            removed.push(path.clone());
        } else {
            if e.digest.starts_with("dir ") && e.digest.ends_with(" opaque") {
                opaque.push(path.clone());
            }
            changed.push(path);
        }
    }
    for path in before.keys() {
        if !after.contains_key(path) {
            removed.push(path.clone());
        }
    }
    let mut pre = Vec::new();
    for path in changed.iter().map(|p| p.to_string()).chain(removed.iter().cloned()) {
        pre.push(format!("{path}\t{}", lower_state(r, &path)?));
    }
    pre.sort();
    let staging = tempfile::Builder::new()
        .prefix("memo-")
        .tempdir_in(r.work)
        .with_context(|| format!("creating a staging directory in {}", r.work.display()))?;
    for path in &changed {
        stage(r.upper, staging.path(), path)?;
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("arbor.memo.removed".to_string(), Meta::StrList(removed));
    metadata.insert("arbor.memo.opaque".to_string(), Meta::StrList(opaque));
    metadata.insert("arbor.memo.pre".to_string(), Meta::StrList(pre));
    crate::ostree::commit::layers::commit_layers(
        r.repo,
        &[],
        &[],
        &ocommit::CommitRequest {
            dir: staging.path(),
            refname,
            subject: "arbor: a recorded scriptlet run",
            metadata: &metadata,
            timestamp: 0,
            parent: None,
        },
    )?;
    Ok(())
}

/// Copies the upper entry `path` (and its parent directories) into `staging`.
fn stage(upper: &Path, staging: &Path, path: &str) -> Result<()> {
    let mut at = String::new();
    let parts: Vec<&str> = path.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(part);
        let (src, dst) = (upper.join(&at), staging.join(&at));
        let md = std::fs::symlink_metadata(&src).with_context(|| format!("looking at {}", src.display()))?;
        let last = i + 1 == parts.len();
        if std::fs::symlink_metadata(&dst).is_ok() {
            continue;
        }
        if md.is_dir() {
            std::fs::create_dir(&dst).with_context(|| format!("creating {}", dst.display()))?;
        } else if !last {
            anyhow::bail!("{} is not a directory", src.display());
        } else if md.file_type().is_symlink() {
            let target = std::fs::read_link(&src).with_context(|| format!("reading {}", src.display()))?;
            std::os::unix::fs::symlink(target, &dst).with_context(|| format!("creating {}", dst.display()))?;
        } else if md.is_file() {
            std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        } else {
            anyhow::bail!(
                "{}: a script made a special file; its run is not recorded",
                src.display()
            );
        }
        std::os::unix::fs::lchown(&dst, Some(md.uid()), Some(md.gid()))
            .with_context(|| format!("setting the owner of {}", dst.display()))?;
        if !md.file_type().is_symlink() {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))
                .with_context(|| format!("setting the mode of {}", dst.display()))?;
        }
    }
    Ok(())
}

/// Applies the recorded run `commit` to the merged tree, if its
/// preconditions hold; returns whether it did.
fn replay(r: &Runner, commit: &str) -> Result<bool> {
    let info = r.repo.commit_info(commit)?;
    let list = |k: &str| info.lists.get(k).cloned().unwrap_or_default();
    for line in list("arbor.memo.pre") {
        let Some((path, state)) = line.split_once('\t') else {
            return Ok(false);
        };
        if lower_state(r, path)? != state {
            tracing::info!(path, "a recorded run's input changed: running it again");
            return Ok(false);
        }
    }
    let out = tempfile::Builder::new()
        .prefix("replay-")
        .tempdir_in(r.work)
        .with_context(|| format!("creating a directory in {}", r.work.display()))?;
    let dest = out.path().join("tree");
    crate::ostree::commit::checkout_union(r.repo, &[commit.to_string()], &dest)?;
    for path in list("arbor.memo.removed") {
        remove(r.root, &path)?;
    }
    for path in list("arbor.memo.opaque") {
        remove(r.root, &path)?;
    }
    let src = Dir::open_ambient_dir(&dest, cap_std::ambient_authority())
        .with_context(|| format!("opening {}", dest.display()))?;
    apply(&src, r.root, "")?;
    Ok(true)
}

fn remove(root: &Dir, path: &str) -> Result<()> {
    match root.symlink_metadata(path) {
        Ok(m) if m.is_dir() => root.remove_dir_all(path),
        Ok(_) => root.remove_file(path),
        Err(_) => return Ok(()),
    }
    .with_context(|| format!("removing /{path}"))
}

/// Copies the checkout `src` over the merged tree (owners, modes, links).
fn apply(src: &Dir, root: &Dir, rel: &str) -> Result<()> {
    let here = if rel.is_empty() { "." } else { rel };
    let mut names: Vec<String> = src
        .read_dir(here)
        .with_context(|| format!("listing a recorded run at /{rel}"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing a recorded run at /{rel}"))?;
    names.sort();
    for name in names {
        let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let md = src
            .symlink_metadata(&path)
            .with_context(|| format!("looking at /{path}"))?;
        use cap_std::fs::MetadataExt as _;
        let existing = root.symlink_metadata(&path).ok();
        if md.is_dir() {
            if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                if existing.is_some() {
                    remove(root, &path)?;
                }
                root.create_dir(&path).with_context(|| format!("creating /{path}"))?;
            }
            root.set_permissions(&path, md.permissions())
                .with_context(|| format!("setting the mode of /{path}"))?;
        } else {
            if existing.is_some() {
                remove(root, &path)?;
            }
            if md.is_symlink() {
                let target = src
                    .read_link_contents(&path)
                    .with_context(|| format!("reading /{path}"))?;
                root.symlink_contents(target, &path)
                    .with_context(|| format!("creating /{path}"))?;
            } else {
                src.copy(&path, root, &path)
                    .with_context(|| format!("writing /{path}"))?;
                root.set_permissions(&path, md.permissions())
                    .with_context(|| format!("setting the mode of /{path}"))?;
            }
        }
        nix::unistd::fchownat(
            root,
            Path::new(&path),
            Some(nix::unistd::Uid::from_raw(md.uid())),
            Some(nix::unistd::Gid::from_raw(md.gid())),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("setting the owner of /{path}"))?;
        if md.is_dir() {
            apply(src, root, &path)?;
        }
    }
    Ok(())
}
