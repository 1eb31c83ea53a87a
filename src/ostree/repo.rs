//! A small safe wrapper over an OSTree repository for writers such as the
//! package cache: objects go in through a [`Transaction`], a tree of already
//! written objects becomes a commit, and the ref appears only when the
//! transaction commits. Glib types stay in this file.
//!
//! Concurrency: libostree allows one transaction per `OstreeRepo` object, and
//! separate objects (in threads or processes) may hold transactions on the same
//! repository at once: each gets its own locked staging directory, and objects
//! and refs move into place only in `ostree_repo_commit_transaction`. Parallel
//! writers therefore open one [`Repo`] each.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use ::ostree::gio::prelude::*;
use ::ostree::{gio, glib};
use anyhow::{Context, Result, bail};

/// File type bits of a mode (`S_IFMT`) and the types arbor writes.
const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// An opened OSTree repository: the handle every function of this module
/// takes.
pub struct Repo {
    repo: ::ostree::Repo,
    path: PathBuf,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo").field("path", &self.path).finish()
    }
}

/// Owner, mode (file type bits included) and extended attributes of one object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileMeta {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// `st_mode`: type bits and permission bits.
    pub mode: u32,
    /// Extended attributes, sorted by name: (name without NUL, value).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl FileMeta {
    /// A root-owned directory with these permission bits.
    pub fn root_dir(perms: u32) -> FileMeta {
        FileMeta {
            uid: 0,
            gid: 0,
            mode: S_IFDIR | (perms & 0o7777),
            xattrs: Vec::new(),
        }
    }
}

/// A directory of objects already written in the transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dir {
    /// The directory's own owner and mode (written as a dirmeta object).
    pub meta: FileMeta,
    /// Subdirectories by name.
    pub dirs: BTreeMap<String, Dir>,
    /// Files and symlinks by name: content object checksums.
    pub files: BTreeMap<String, String>,
}

impl Dir {
    /// An empty directory with `meta`.
    pub fn new(meta: FileMeta) -> Dir {
        Dir {
            meta,
            dirs: BTreeMap::new(),
            files: BTreeMap::new(),
        }
    }
}

/// A value in a commit's metadata (`a{sv}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaValue {
    /// `s`
    Str(String),
    /// `as`
    StrList(Vec<String>),
    /// `ay`
    Bytes(Vec<u8>),
    /// `b`
    Bool(bool),
    /// `t`
    U64(u64),
}

impl MetaValue {
    /// The GVariant form.
    pub(crate) fn to_variant(&self) -> glib::Variant {
        match self {
            MetaValue::Str(s) => s.to_variant(),
            MetaValue::StrList(l) => l.to_variant(),
            MetaValue::Bytes(b) => glib::Variant::array_from_fixed_array(b),
            MetaValue::Bool(b) => b.to_variant(),
            MetaValue::U64(n) => n.to_variant(),
        }
    }
}

/// Repository modes arbor writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// For building: files stored uncompressed, owners in an xattr.
    BareUser,
    /// For serving over HTTP: compressed objects.
    Archive,
    /// A device's sysroot repository: real owners (arbor writes into it only
    /// when layering packages, as root).
    Bare,
}

/// What a revision (ref or checksum) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The commit checksum.
    pub commit: String,
    /// The ref it was resolved through (`None` when the revision was a checksum).
    pub refname: Option<String>,
}

/// A commit's checksum, timestamp and string-valued metadata.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    /// Checksum.
    pub commit: String,
    /// Seconds since the epoch.
    pub timestamp: u64,
    /// Metadata entries whose values are strings.
    pub metadata: BTreeMap<String, String>,
    /// Metadata entries whose values are string lists (`as`).
    pub lists: BTreeMap<String, Vec<String>>,
}

/// Runs `work` inside an OSTree transaction of `repo`, which `work` commits
/// itself; on an error the transaction is aborted, so nothing it staged stays.
pub fn in_transaction<T>(repo: &::ostree::Repo, work: impl FnOnce() -> Result<T>) -> Result<T> {
    repo.prepare_transaction(gio::Cancellable::NONE)
        .context("starting an OSTree transaction")?;
    let result = work();
    if result.is_err() {
        let _ = repo.abort_transaction(gio::Cancellable::NONE);
    }
    result
}

impl Repo {
    /// Opens an existing repository: the one way arbor opens one.
    pub fn open(path: &Path) -> Result<Repo> {
        let repo = ::ostree::Repo::new_for_path(path);
        repo.open(gio::Cancellable::NONE)
            .with_context(|| format!("opening the OSTree repository at {}", path.display()))?;
        Ok(Repo {
            repo,
            path: path.to_path_buf(),
        })
    }

    /// Wraps a repository libostree already opened (a sysroot's), found at `path`.
    pub(super) fn from_raw(repo: ::ostree::Repo, path: PathBuf) -> Repo {
        Repo { repo, path }
    }

    /// Opens the repository at `path`, creating it in `mode` when `path` holds
    /// no repository yet.
    pub fn open_or_create(path: &Path, mode: Mode) -> Result<Repo> {
        if !path.join("config").exists() {
            std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
            let m = match mode {
                Mode::BareUser => ::ostree::RepoMode::BareUser,
                Mode::Archive => ::ostree::RepoMode::Archive,
                Mode::Bare => ::ostree::RepoMode::Bare,
            };
            let what = match mode {
                Mode::BareUser => "a bare-user",
                Mode::Archive => "an archive",
                Mode::Bare => "a bare",
            };
            ::ostree::Repo::new_for_path(path)
                .create(m, gio::Cancellable::NONE)
                .with_context(|| format!("creating {what} OSTree repository at {}", path.display()))?;
        }
        Repo::open(path)
    }

    /// [`Repo::open_or_create`] in bare-user mode (the mode for building: any
    /// user can write it, owners and modes live in xattrs).
    pub fn open_or_create_bare_user(path: &Path) -> Result<Repo> {
        Repo::open_or_create(path, Mode::BareUser)
    }

    /// The repository at `path`, `None` when there is none there.
    pub fn open_if_exists(path: &Path) -> Result<Option<Repo>> {
        if !path.join("config").exists() {
            return Ok(None);
        }
        Repo::open(path).map(Some)
    }

    /// The repository directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The libostree object, for the other files of this module.
    pub(super) fn raw(&self) -> &::ostree::Repo {
        &self.repo
    }

    /// The repository's mode; modes arbor does not write are an error.
    pub fn mode(&self) -> Result<Mode> {
        Ok(match self.repo.mode() {
            ::ostree::RepoMode::Archive => Mode::Archive,
            ::ostree::RepoMode::BareUser => Mode::BareUser,
            ::ostree::RepoMode::Bare => Mode::Bare,
            other => bail!(
                "{} is a {other:?} repository; arbor composes into bare-user (building) or archive (serving) repositories",
                self.path.display()
            ),
        })
    }

    /// Whether objects can be streamed into this repository (archive mode
    /// compresses and cannot take content written in place).
    pub fn is_bare(&self) -> bool {
        self.repo.mode() != ::ostree::RepoMode::Archive
    }

    /// The commit `name` points to, if the ref exists.
    pub fn resolve_ref(&self, name: &str) -> Result<Option<String>> {
        let rev = self
            .repo
            .resolve_rev(name, true)
            .with_context(|| format!("looking up ref {name} in {}", self.path.display()))?;
        Ok(rev.map(|s| s.to_string()))
    }

    /// The commit `rev` names, and the ref it was resolved through: the one
    /// way arbor resolves a revision. A full checksum names itself, present
    /// or not (see [`Repo::has_commit`]); anything else must be a ref.
    pub fn resolve(&self, rev: &str) -> Result<Resolved> {
        if ::ostree::validate_checksum_string(rev).is_ok() {
            return Ok(Resolved {
                commit: rev.to_string(),
                refname: None,
            });
        }
        match self.repo.resolve_rev(rev, true) {
            Ok(Some(c)) => Ok(Resolved {
                commit: c.to_string(),
                refname: Some(rev.to_string()),
            }),
            Ok(None) => bail!(
                "{} has no ref {rev} (and it is not a commit checksum)",
                self.path.display()
            ),
            Err(e) => Err(e).with_context(|| format!("looking up {rev} in {}", self.path.display())),
        }
    }

    /// [`Repo::resolve`], and the commit object must be in the repository.
    pub fn resolve_present(&self, rev: &str) -> Result<String> {
        let commit = self.resolve(rev)?.commit;
        if !self.has_commit(&commit)? {
            bail!("{rev}: no such commit in {}", self.path.display());
        }
        Ok(commit)
    }

    /// Whether the commit object `commit` is in the repository.
    pub fn has_commit(&self, commit: &str) -> Result<bool> {
        self.repo
            .has_object(::ostree::ObjectType::Commit, commit, gio::Cancellable::NONE)
            .with_context(|| format!("looking for commit {commit} in {}", self.path.display()))
    }

    /// Whether the repository holds the object `checksum` of type `kind`.
    pub(super) fn has_object(&self, kind: ::ostree::ObjectType, checksum: &str) -> Result<bool> {
        self.repo
            .has_object(kind, checksum, gio::Cancellable::NONE)
            .with_context(|| format!("looking for {checksum} in {}", self.path.display()))
    }

    /// The staging directories of this boot's interrupted transactions:
    /// libostree's next transaction takes one over, so what they hold is
    /// not fetched again (`tmp/staging-BOOTID-*`).
    pub(super) fn staging_dirs(&self) -> Vec<PathBuf> {
        let Ok(boot_id) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") else {
            return Vec::new();
        };
        let prefix = format!("staging-{}-", boot_id.trim());
        let Ok(entries) = std::fs::read_dir(self.path.join("tmp")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect()
    }

    /// The metadata object `checksum` of type `kind`, as its bytes.
    pub(super) fn load_metadata(&self, kind: ::ostree::ObjectType, checksum: &str) -> Result<Vec<u8>> {
        let v = self
            .repo
            .load_variant(kind, checksum)
            .with_context(|| format!("loading {checksum} from {}", self.path.display()))?;
        Ok(v.data_as_bytes().to_vec())
    }

    /// Stores metadata objects already checked against their checksums
    /// (dirtrees a `--check` fetched, so the pull does not fetch them again),
    /// in one transaction.
    pub(super) fn store_metadata(&self, kind: ::ostree::ObjectType, objects: &[(String, Vec<u8>)]) -> Result<()> {
        if objects.is_empty() {
            return Ok(());
        }
        let ty = match kind {
            ::ostree::ObjectType::DirTree => "(a(say)a(sayay))",
            ::ostree::ObjectType::DirMeta => "(uuua(ayay))",
            _ => bail!("storing {kind:?} objects is not supported"),
        };
        let ty = glib::VariantTy::new(ty).context("metadata type")?;
        in_transaction(&self.repo, || {
            for (checksum, bytes) in objects {
                let v = glib::Variant::from_bytes_with_type(&glib::Bytes::from(bytes), ty);
                self.repo
                    .write_metadata(kind, Some(checksum), &v, gio::Cancellable::NONE)
                    .with_context(|| format!("storing {checksum} in {}", self.path.display()))?;
            }
            self.repo
                .commit_transaction(gio::Cancellable::NONE)
                .with_context(|| format!("committing fetched metadata in {}", self.path.display()))?;
            Ok(())
        })
    }

    /// The commit object `commit` (a checksum).
    pub(super) fn load_commit(&self, commit: &str) -> Result<glib::Variant> {
        let (variant, _) = self
            .repo
            .load_commit(commit)
            .with_context(|| format!("loading commit {commit} from {}", self.path.display()))?;
        Ok(variant)
    }

    /// The commit `rev` (a ref or checksum) names, with its timestamp and string metadata.
    pub fn commit_info(&self, rev: &str) -> Result<CommitInfo> {
        let commit = self.resolve(rev)?.commit;
        let variant = self.load_commit(&commit)?;
        let meta = variant.child_value(0);
        let (mut metadata, mut lists) = (BTreeMap::new(), BTreeMap::new());
        for i in 0..meta.n_children() {
            let entry = meta.child_value(i);
            let Some(key) = entry.child_value(0).str().map(String::from) else {
                continue;
            };
            let Some(value) = entry.child_value(1).as_variant() else {
                continue;
            };
            if let Some(v) = value.str() {
                metadata.insert(key, v.to_string());
            } else if let Some(l) = (value.type_().as_str() == "as")
                .then(|| value.get::<Vec<String>>())
                .flatten()
            {
                lists.insert(key, l);
            }
        }
        Ok(CommitInfo {
            commit,
            timestamp: ::ostree::commit_get_timestamp(&variant),
            metadata,
            lists,
        })
    }

    /// Deletes the commit object `commit`, its detached metadata and its
    /// partial-pull marker (a refused update's, pulled alone).
    pub fn delete_commit(&self, commit: &str) -> Result<()> {
        let cancel = gio::Cancellable::NONE;
        for t in [::ostree::ObjectType::CommitMeta, ::ostree::ObjectType::Commit] {
            if self
                .repo
                .has_object(t, commit, cancel)
                .with_context(|| format!("looking for {commit} in {}", self.path.display()))?
            {
                self.repo
                    .delete_object(t, commit, cancel)
                    .with_context(|| format!("deleting {commit} from {}", self.path.display()))?;
            }
        }
        let partial = self.path.join("state").join(format!("{commit}.commitpartial"));
        match std::fs::remove_file(&partial) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", partial.display()))
            }
            _ => Ok(()),
        }
    }

    /// Bytes of what libostree's deploy copies into /boot from `commit`: each
    /// kernel directory's vmlinuz, initramfs and device trees.
    pub fn boot_files_size(&self, commit: &str) -> Result<u64> {
        let cancel = gio::Cancellable::NONE;
        let (root, _) = self
            .repo
            .read_commit(commit, cancel)
            .with_context(|| format!("reading commit {commit} from {}", self.path.display()))?;
        let modules = root.resolve_relative_path("usr/lib/modules");
        let mut total = 0;
        for kdir in children(&modules)? {
            if kdir.1 != gio::FileType::Directory {
                continue;
            }
            let k = modules.child(&kdir.0);
            for (name, _) in children(&k)? {
                if ["vmlinuz", "initramfs", "dtb", "devicetree"]
                    .iter()
                    .any(|p| name.starts_with(p))
                {
                    total += size_beneath(&k.child(&name))?;
                }
            }
        }
        Ok(total)
    }

    /// Up to `n` ancestors of `commit`, nearest first (stops where history is
    /// not in the repository).
    pub fn ancestors(&self, commit: &str, n: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut cur = commit.to_string();
        while out.len() < n {
            let (variant, _) = self
                .repo
                .load_commit(&cur)
                .with_context(|| format!("loading commit {cur} from {}", self.path.display()))?;
            let Some(parent) = ::ostree::commit_get_parent(&variant) else {
                break;
            };
            let parent = parent.to_string();
            if !self.has_commit(&parent)? {
                break;
            }
            out.push(parent.clone());
            cur = parent;
        }
        Ok(out)
    }

    /// Starts a transaction; it is aborted unless [`Transaction::commit`] is called.
    pub fn transaction(&self) -> Result<Transaction<'_>> {
        if !self.is_bare() {
            bail!(
                "{} is an archive-mode repository; objects can only be streamed into bare or bare-user repositories",
                self.path.display()
            );
        }
        self.repo
            .prepare_transaction(gio::Cancellable::NONE)
            .with_context(|| format!("starting a transaction in {}", self.path.display()))?;
        Ok(Transaction {
            repo: self,
            open: true,
            dirmeta: RefCell::new(HashMap::new()),
        })
    }
}

/// An open transaction: objects written here become visible only when
/// [`Transaction::commit`] moves them, and the ref, into place. Dropping it
/// aborts and discards the staged objects.
pub struct Transaction<'r> {
    repo: &'r Repo,
    open: bool,
    dirmeta: RefCell<HashMap<FileMeta, String>>,
}

impl Transaction<'_> {
    /// Streams a regular file of exactly `len` bytes from `body` into a
    /// content object; returns its checksum. `body` yielding more or fewer
    /// bytes is an error and nothing is stored.
    pub fn write_regular(&self, meta: &FileMeta, len: u64, body: &mut dyn Read) -> Result<String> {
        if meta.mode & S_IFMT != S_IFREG {
            bail!("write_regular: mode {:o} is not a regular file", meta.mode);
        }
        let xattrs = xattrs_variant(&meta.xattrs);
        let writer = self
            .repo
            .repo
            .write_regfile(None, meta.uid, meta.gid, meta.mode, len, xattrs.as_ref())
            .context("opening a content object")?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut written = 0u64;
        loop {
            let n = body.read(&mut buf)?;
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > len {
                bail!("the payload has more than the {len} bytes the header lists");
            }
            let (_, err) = writer
                .write_all(&buf[..n], gio::Cancellable::NONE)
                .context("writing a content object")?;
            if let Some(e) = err {
                return Err(e).context("writing a content object");
            }
        }
        if written != len {
            bail!("the payload has {written} bytes, the header lists {len}");
        }
        let csum = writer
            .finish(gio::Cancellable::NONE)
            .context("finishing a content object")?;
        Ok(csum.to_string())
    }

    /// Writes a symlink content object pointing at `target`; returns its checksum.
    pub fn write_symlink(&self, meta: &FileMeta, target: &str) -> Result<String> {
        if meta.mode & S_IFMT != S_IFLNK {
            bail!("write_symlink: mode {:o} is not a symlink", meta.mode);
        }
        let info = file_info(meta, gio::FileType::SymbolicLink);
        info.set_symlink_target(target);
        let empty = gio::MemoryInputStream::new();
        let xattrs = xattrs_variant(&meta.xattrs);
        let (stream, len) =
            ::ostree::raw_file_to_content_stream(&empty, &info, xattrs.as_ref(), gio::Cancellable::NONE)
                .context("serializing a symlink object")?;
        let csum = self
            .repo
            .repo
            .write_content(None, &stream, len, gio::Cancellable::NONE)
            .context("writing a symlink object")?;
        Ok(csum.to_hex())
    }

    /// Writes (once per distinct `meta`) a dirmeta object; returns its checksum.
    pub fn write_dirmeta(&self, meta: &FileMeta) -> Result<String> {
        if let Some(c) = self.dirmeta.borrow().get(meta) {
            return Ok(c.clone());
        }
        if meta.mode & S_IFMT != S_IFDIR {
            bail!("write_dirmeta: mode {:o} is not a directory", meta.mode);
        }
        let info = file_info(meta, gio::FileType::Directory);
        let xattrs = xattrs_variant(&meta.xattrs);
        let v = ::ostree::create_directory_metadata(&info, xattrs.as_ref());
        let csum = self
            .repo
            .repo
            .write_metadata(::ostree::ObjectType::DirMeta, None, &v, gio::Cancellable::NONE)
            .context("writing a dirmeta object")?
            .to_hex();
        self.dirmeta.borrow_mut().insert(meta.clone(), csum.clone());
        Ok(csum)
    }

    /// Writes the dirtrees of `root` (every directory gets its dirmeta) and a
    /// commit with no parent, `subject`, `metadata` (keys sorted, so the same
    /// input gives the same commit) and the fixed timestamp `time`.
    pub fn write_commit(
        &self,
        root: &Dir,
        subject: &str,
        metadata: &BTreeMap<String, MetaValue>,
        time: u64,
    ) -> Result<String> {
        let mtree = ::ostree::MutableTree::new();
        self.fill(&mtree, root, "/")?;
        let file = self
            .repo
            .repo
            .write_mtree(&mtree, gio::Cancellable::NONE)
            .context("writing directory trees")?;
        let root_file = file
            .downcast::<::ostree::RepoFile>()
            .map_err(|_| anyhow::anyhow!("libostree returned a root that is not an OstreeRepoFile"))?;
        let commit = self
            .repo
            .repo
            .write_commit_with_time(
                None,
                Some(subject),
                None,
                Some(&metadata_variant(metadata)),
                &root_file,
                time,
                gio::Cancellable::NONE,
            )
            .context("writing the commit object")?;
        Ok(commit.to_string())
    }

    fn fill(&self, mtree: &::ostree::MutableTree, dir: &Dir, path: &str) -> Result<()> {
        // Set before anything else: reading an unset metadata checksum crashes libostree 2022.7.
        mtree.set_metadata_checksum(
            &self
                .write_dirmeta(&dir.meta)
                .with_context(|| format!("directory {path}"))?,
        );
        for (name, csum) in &dir.files {
            mtree
                .replace_file(name, csum)
                .with_context(|| format!("adding {path}{name} to the tree"))?;
        }
        for (name, sub) in &dir.dirs {
            let child = mtree
                .ensure_dir(name)
                .with_context(|| format!("adding directory {path}{name} to the tree"))?;
            self.fill(&child, sub, &format!("{path}{name}/"))?;
        }
        Ok(())
    }

    /// Points `ref_name` at `commit` and commits the transaction: staged
    /// objects and the ref become visible together.
    pub fn commit(mut self, ref_name: &str, commit: &str) -> Result<()> {
        self.repo.repo.transaction_set_ref(None, ref_name, Some(commit));
        self.open = false;
        self.repo
            .repo
            .commit_transaction(gio::Cancellable::NONE)
            .with_context(|| format!("committing the transaction for {ref_name}"))?;
        Ok(())
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.open {
            if let Err(e) = self.repo.repo.abort_transaction(gio::Cancellable::NONE) {
                tracing::warn!("aborting a transaction in {}: {e}", self.repo.path.display());
            }
        }
    }
}

fn file_info(meta: &FileMeta, kind: gio::FileType) -> gio::FileInfo {
    let info = gio::FileInfo::new();
    info.set_file_type(kind);
    info.set_attribute_uint32("unix::uid", meta.uid);
    info.set_attribute_uint32("unix::gid", meta.gid);
    info.set_attribute_uint32("unix::mode", meta.mode);
    info
}

/// `a(ayay)` as libostree stores xattrs: names are bytestrings with their NUL.
fn xattrs_variant(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Option<glib::Variant> {
    if xattrs.is_empty() {
        return None;
    }
    let items = xattrs.iter().map(|(name, value)| {
        let mut n = name.clone();
        n.push(0);
        glib::Variant::tuple_from_iter([
            glib::Variant::array_from_fixed_array(&n),
            glib::Variant::array_from_fixed_array(value),
        ])
    });
    Some(glib::Variant::array_from_iter_with_type(
        glib::VariantTy::new("(ayay)").expect("static type string"),
        items,
    ))
}

fn metadata_variant(metadata: &BTreeMap<String, MetaValue>) -> glib::Variant {
    let entries = metadata.iter().map(|(k, v)| {
        let inner = v.to_variant();
        glib::variant::DictEntry::new(k.clone(), inner).to_variant()
    });
    glib::Variant::array_from_iter_with_type(glib::VariantTy::new("{sv}").expect("static type string"), entries)
}

/// The entries of a directory in a commit (none when it is missing).
fn children(dir: &gio::File) -> Result<Vec<(String, gio::FileType)>> {
    let cancel = gio::Cancellable::NONE;
    let iter = match dir.enumerate_children(
        "standard::name,standard::type",
        gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
        cancel,
    ) {
        Ok(i) => i,
        Err(e) if e.matches(gio::IOErrorEnum::NotFound) => return Ok(Vec::new()),
        Err(e) => return Err(e).context("listing a directory of a commit"),
    };
    let mut out = Vec::new();
    while let Some(info) = iter.next_file(cancel).context("listing a directory of a commit")? {
        out.push((info.name().to_string_lossy().into_owned(), info.file_type()));
    }
    Ok(out)
}

/// Bytes of the regular files at or beneath `f` in a commit.
fn size_beneath(f: &gio::File) -> Result<u64> {
    let cancel = gio::Cancellable::NONE;
    let info = f
        .query_info(
            "standard::type,standard::size",
            gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
            cancel,
        )
        .context("reading a file's size in a commit")?;
    match info.file_type() {
        gio::FileType::Regular => Ok(info.size().max(0) as u64),
        gio::FileType::Directory => {
            let mut total = 0;
            for (name, _) in children(f)? {
                total += size_beneath(&f.child(&name))?;
            }
            Ok(total)
        }
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(mode: u32) -> FileMeta {
        FileMeta {
            uid: 0,
            gid: 0,
            mode,
            xattrs: Vec::new(),
        }
    }

    /// `write_regfile` (what arbor streams through) and libostree's
    /// content-stream API give the same object for the same file.
    #[test]
    fn streamed_regular_file_matches_the_content_stream_api() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let repo = Repo::open_or_create_bare_user(&tmp.path().join("repo"))?;
        let tx = repo.transaction()?;
        let body = b"#!/bin/sh\necho hello\n";
        let mut m = meta(S_IFREG | 0o4755);
        m.uid = 12;
        m.gid = 34;
        m.xattrs = vec![(b"security.capability".to_vec(), vec![1, 0, 0, 2, 0, 0x20, 0, 0])];
        let streamed = tx.write_regular(&m, body.len() as u64, &mut &body[..])?;

        let info = file_info(&m, gio::FileType::Regular);
        info.set_size(body.len() as i64);
        let input = gio::MemoryInputStream::from_bytes(&glib::Bytes::from(&body[..]));
        let xattrs = xattrs_variant(&m.xattrs);
        let (stream, len) =
            ::ostree::raw_file_to_content_stream(&input, &info, xattrs.as_ref(), gio::Cancellable::NONE)?;
        let via_stream = repo.repo.write_content(None, &stream, len, gio::Cancellable::NONE)?;
        assert_eq!(streamed, via_stream.to_hex());
        Ok(())
    }

    #[test]
    fn short_or_long_bodies_are_errors() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let repo = Repo::open_or_create_bare_user(&tmp.path().join("repo"))?;
        let tx = repo.transaction()?;
        let m = meta(S_IFREG | 0o644);
        assert!(tx.write_regular(&m, 10, &mut &b"short"[..]).is_err());
        assert!(tx.write_regular(&m, 2, &mut &b"too long"[..]).is_err());
        Ok(())
    }

    #[test]
    fn commit_sets_the_ref_and_abort_leaves_none() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let repo = Repo::open_or_create_bare_user(&tmp.path().join("repo"))?;
        let mut root = Dir::new(FileMeta::root_dir(0o755));
        let mut etc = Dir::new(FileMeta::root_dir(0o755));
        let mut metadata = BTreeMap::new();
        metadata.insert("arbor.test".to_string(), MetaValue::StrList(vec!["a".into()]));
        metadata.insert("arbor.bytes".to_string(), MetaValue::Bytes(vec![0, 1, 2]));

        let tx = repo.transaction()?;
        let f = tx.write_regular(&meta(S_IFREG | 0o600), 3, &mut &b"abc"[..])?;
        let l = tx.write_symlink(&meta(S_IFLNK | 0o777), "../usr/bin")?;
        etc.files.insert("f".into(), f);
        root.files.insert("bin".into(), l);
        root.dirs.insert("etc".into(), etc);
        let c1 = tx.write_commit(&root, "test", &metadata, 0)?;
        drop(tx);
        assert_eq!(repo.resolve_ref("test/a")?, None);

        let tx = repo.transaction()?;
        let f = tx.write_regular(&meta(S_IFREG | 0o600), 3, &mut &b"abc"[..])?;
        let l = tx.write_symlink(&meta(S_IFLNK | 0o777), "../usr/bin")?;
        assert_eq!(root.dirs["etc"].files["f"], f);
        assert_eq!(root.files["bin"], l);
        let c2 = tx.write_commit(&root, "test", &metadata, 0)?;
        assert_eq!(c1, c2, "same tree, metadata and time give the same commit");
        tx.commit("test/a", &c2)?;
        assert_eq!(repo.resolve_ref("test/a")?, Some(c2.clone()));

        // Metadata values are stored with their own types (not boxed twice).
        let commit = repo.repo.load_variant(::ostree::ObjectType::Commit, &c2)?;
        let meta = glib::VariantDict::new(Some(&commit.child_value(0)));
        let list = meta.lookup_value("arbor.test", None).context("arbor.test")?;
        assert_eq!(list.type_().as_str(), "as");
        let bytes = meta.lookup_value("arbor.bytes", None).context("arbor.bytes")?;
        assert_eq!(bytes.fixed_array::<u8>().ok(), Some(&[0u8, 1, 2][..]));
        Ok(())
    }
}
