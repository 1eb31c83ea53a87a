//! Offline update bundles, the repository side: the self-contained static
//! delta from libostree's generator (`filename` parameter, what
//! `ostree static-delta generate --filename` does), the target commit and its
//! detached metadata as stored, and decoding those GVariants for
//! [`crate::bundle`], which holds the format and the judgements.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use ::ostree::{gio, glib};
use anyhow::{Context, Result, bail};
use ed25519_dalek::SigningKey;

use super::repo::Repo;
use crate::bundle::{
    self, BOARD, Board, COMMIT, COMMITMETA, CommitView, DELTA, Decoder, MEMBERS, Manifest, Member, read::Verified,
};
use crate::sign::{ARCH_KEY, BOARDS_KEY, REF_BINDING_KEY, Signatures, Trust};

/// The GVariant type of a commit object.
const COMMIT_TYPE: &str = "(a{sv}aya(say)sstayay)";

/// What `arbor bundle create` needs.
#[derive(Debug)]
pub struct CreateOptions<'a> {
    /// The repository holding both commits.
    pub repo: &'a Repo,
    /// The commit (or ref) devices have now; `None` for a from-scratch delta.
    pub from: Option<&'a str>,
    /// The commit (or ref) to update them to.
    pub to: &'a str,
    /// The bundle file to write (replaced atomically).
    pub output: &'a Path,
    /// The bundle key, which signs the manifest.
    pub key: &'a SigningKey,
}

/// What [`create`] wrote.
#[derive(Debug, Clone)]
pub struct Created {
    /// The bundle file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its `board.json`.
    pub board: Board,
}

/// Writes the bundle from `from` to `to`. The target commit must carry
/// `arbor.arch`, `arbor.boards` and at least one signature (devices refuse
/// unsigned commits; sign it with `arbor sign` first).
pub fn create(opts: &CreateOptions<'_>) -> Result<Created> {
    let repo = opts.repo;
    let resolved = repo.resolve(opts.to)?;
    let (to, to_ref) = (resolved.commit, resolved.refname);
    let from = match opts.from {
        Some(f) => Some(repo.resolve(f)?.commit),
        None => None,
    };
    let commit_v = repo
        .raw()
        .load_variant(::ostree::ObjectType::Commit, &to)
        .with_context(|| format!("loading commit {to} from {}", repo.path().display()))?;
    let commit = commit_v.data_as_bytes().to_vec();
    let (_, actual) = bundle::digest(commit.as_slice()).context("hashing the commit")?;
    if actual != to {
        bail!("commit object {to} is corrupt: its bytes hash to {actual}");
    }
    let view = GlibDecoder
        .commit(&commit)
        .map_err(|why| anyhow::anyhow!("commit {to}: {why}"))?;
    let (Some(arch), Some(boards)) = (view.arch.clone(), view.boards.clone()) else {
        bail!(
            "commit {to} has no {ARCH_KEY} (s) and {BOARDS_KEY} (as); bundles are for trees made by `arbor compose tree`"
        );
    };
    let commitmeta = repo
        .raw()
        .read_commit_detached_metadata(&to, gio::Cancellable::NONE)
        .with_context(|| format!("reading the detached metadata of commit {to}"))?
        .map(|v| v.data_as_bytes().to_vec())
        .unwrap_or_default();
    match GlibDecoder.signatures(&commitmeta) {
        Signatures::Entries(e) if !e.is_empty() => {}
        Signatures::Malformed(why) => bail!("commit {to}: {why}"),
        _ => bail!("commit {to} is not signed; devices would refuse it (run `arbor sign` first)"),
    }
    // The ref devices know the update by: the one named, else the commit's only binding.
    let ref_name = to_ref.or_else(|| match view.ref_binding.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    });
    let board = Board {
        arch,
        boards,
        ref_name,
        version: view.version.clone(),
        from: from.clone(),
        to: to.clone(),
    };
    let board_bytes = serde_json::to_vec_pretty(&board).context("serializing board.json")?;

    let dir = match opts.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let work = tempfile::Builder::new()
        .prefix(".arbor-bundle-")
        .tempdir_in(&dir)
        .with_context(|| format!("creating a work directory in {}", dir.display()))?;
    let delta_path = work.path().join(DELTA);
    generate_delta(repo, from.as_deref(), &to, &delta_path)?;

    let memory = |name: &str| -> Option<&[u8]> {
        match name {
            BOARD => Some(&board_bytes),
            COMMIT => Some(&commit),
            COMMITMETA => Some(&commitmeta),
            _ => None,
        }
    };
    let open_member = |name: &str| -> Result<Box<dyn Read>> {
        Ok(match memory(name) {
            Some(b) => Box::new(std::io::Cursor::new(b.to_vec())),
            None => Box::new(BufReader::new(
                File::open(&delta_path).with_context(|| format!("opening the delta {}", delta_path.display()))?,
            )),
        })
    };
    let mut entries = Vec::new();
    for name in MEMBERS {
        let (size, sha256) = bundle::digest(open_member(name)?).with_context(|| format!("hashing member {name}"))?;
        entries.push(Member {
            name: name.to_string(),
            size,
            sha256,
        });
    }
    let manifest = Manifest::new(entries);
    let sig = bundle::sign_manifest(&manifest.to_bytes(), opts.key);

    let tmp = crate::atomic::temp_beside(opts.output)?;
    let out = BufWriter::new(tmp.as_file());
    let mtime = ::ostree::commit_get_timestamp(&commit_v);
    let mut out = bundle::write::write_archive(out, &manifest, &sig, mtime, open_member)
        .with_context(|| format!("writing the bundle {}", opts.output.display()))?;
    out.flush()
        .with_context(|| format!("writing the bundle {}", opts.output.display()))?;
    drop(out);
    // A bundle holds nothing secret; tempfile's 0600 would keep it from the web server.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", tmp.path().display()))?;
    let size = tmp
        .as_file()
        .metadata()
        .with_context(|| format!("reading the size of {}", tmp.path().display()))?
        .len();
    crate::atomic::persist(tmp, opts.output)
        .with_context(|| format!("renaming the bundle into place at {}", opts.output.display()))?;
    Ok(Created {
        path: opts.output.to_path_buf(),
        size,
        board,
    })
}

/// Verifies the bundle file at `path` against `trust`, applying nothing.
pub fn verify_file(path: &Path, trust: &Trust) -> Result<Verified> {
    let f = File::open(path).with_context(|| format!("opening the bundle {}", path.display()))?;
    bundle::read::verify(BufReader::new(f), trust, &GlibDecoder, &mut std::io::sink())
        .with_context(|| format!("bundle {} is refused", path.display()))
}

/// Verifies the bundle at `path` against `trust` and, only when every check
/// passes, applies its delta into `repo` (objects and the target commit; no
/// ref moves). The delta passes through a temporary file in the repository's
/// `tmp/`, removed afterwards.
pub fn apply_file(repo: &Repo, path: &Path, trust: &Trust) -> Result<Verified> {
    let f = File::open(path).with_context(|| format!("opening the bundle {}", path.display()))?;
    let mut delta = tempfile::Builder::new()
        .prefix("arbor-bundle-delta-")
        .tempfile_in(repo.path().join("tmp"))
        .with_context(|| format!("creating a temporary file in {}/tmp", repo.path().display()))?;
    let verified = bundle::read::verify(BufReader::new(f), trust, &GlibDecoder, delta.as_file_mut())
        .with_context(|| format!("bundle {} is refused", path.display()))?;
    delta.as_file().sync_all().context("syncing the bundle's delta")?;
    super::repo::in_transaction(repo.raw(), || {
        repo.raw()
            .static_delta_execute_offline(&gio::File::for_path(delta.path()), false, gio::Cancellable::NONE)
            .with_context(|| format!("applying the delta of bundle {}", path.display()))?;
        repo.raw()
            .commit_transaction(gio::Cancellable::NONE)
            .with_context(|| format!("committing the objects of bundle {}", path.display()))?;
        Ok(())
    })?;
    Ok(verified)
}

/// One self-contained delta file (parts inline) at `dest`.
fn generate_delta(repo: &Repo, from: Option<&str>, to: &str, dest: &Path) -> Result<()> {
    let params = glib::VariantDict::new(None);
    // libostree reads `filename` as a NUL-terminated bytestring (`^&ay`).
    let mut path = dest.as_os_str().as_bytes().to_vec();
    path.push(0);
    params.insert_value("filename", &glib::Variant::array_from_fixed_array(&path));
    params.insert("inline-parts", true);
    // A bundle is applied offline: every object inside, none left to fetch.
    params.insert("min-fallback-size", super::publish::delta::MIN_FALLBACK_SIZE_MB);
    repo.raw()
        .static_delta_generate(
            ::ostree::StaticDeltaGenerateOpt::Major,
            from,
            to,
            None,
            Some(&params.end()),
            gio::Cancellable::NONE,
        )
        .with_context(|| format!("generating the delta {} → {to}", from.unwrap_or("(scratch)")))?;
    if !dest.is_file() {
        bail!("libostree wrote no delta file at {}", dest.display());
    }
    Ok(())
}

/// Decodes the bundle's commit and detached metadata with glib, as untrusted
/// data (checked on every access).
pub struct GlibDecoder;

impl Decoder for GlibDecoder {
    fn commit(&self, commit: &[u8]) -> Result<CommitView, String> {
        let ty = glib::VariantTy::new(COMMIT_TYPE).map_err(|e| e.to_string())?;
        let v = glib::Variant::from_bytes_with_type(&glib::Bytes::from_owned(commit.to_vec()), ty);
        if !v.is_normal_form() {
            return Err("not a valid commit object (GVariant not in normal form)".into());
        }
        let meta = v.child_value(0);
        let string = |key: &str| -> Result<Option<String>, String> {
            Ok(super::sign::lookup(&meta, key)?
                .filter(|v| v.type_().as_str() == "s")
                .and_then(|v| v.str().map(String::from)))
        };
        let strings = |key: &str| -> Result<Option<Vec<String>>, String> {
            Ok(super::sign::lookup(&meta, key)?
                .filter(|v| v.type_().as_str() == "as")
                .and_then(|v| v.get::<Vec<String>>()))
        };
        Ok(CommitView {
            arch: string(ARCH_KEY)?,
            boards: strings(BOARDS_KEY)?,
            version: string("version")?,
            ref_binding: strings(REF_BINDING_KEY)?.unwrap_or_default(),
        })
    }

    fn signatures(&self, detached: &[u8]) -> Signatures {
        if detached.is_empty() {
            return Signatures::Missing;
        }
        let Ok(ty) = glib::VariantTy::new("a{sv}") else {
            return Signatures::Malformed("internal: bad type string".into());
        };
        let d = glib::Variant::from_bytes_with_type(&glib::Bytes::from_owned(detached.to_vec()), ty);
        if !d.is_normal_form() {
            return Signatures::Malformed(format!("{COMMITMETA} is not a valid GVariant a{{sv}}"));
        }
        super::sign::signature_entries(&d)
    }
}
