//! One RPM → one commit: the payload is streamed from the package file through
//! the decompressor into content objects, digests are checked on the way, and
//! the ref is written only after everything was read and verified.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use rpm::{DigestAlgorithm, IndexTag};
use sha2::digest::DynDigest;
use sha2::{Digest, Sha256, Sha512};

use super::plan::{self, Kind, Plan};
use super::{Imported, Users, refname};
use crate::ostree::repo::{Dir, FileMeta, MetaValue, Repo, Transaction};
use crate::rpm::cpio::{self, BadEntry};

/// Bytes the decompressor reads from the package file at a time.
const READ_BUFFER: usize = 256 * 1024;

/// A package file with its header read and identified.
pub(super) struct Opened {
    pub(super) file: File,
    pub(super) metadata: rpm::PackageMetadata,
    /// The main header exactly as stored in the file.
    header: Vec<u8>,
    header_sha256: String,
    pub(super) nevra: String,
    refname: String,
    pub(super) payload_offset: u64,
}

/// Returns the cached commit of the package at `path`, importing it first if
/// its ref does not exist.
pub(crate) fn import_or_find(repo: &Repo, path: &Path, users: &Users) -> Result<Imported> {
    let pkg = open(path)?;
    if let Some(commit) = repo.resolve_ref(&pkg.refname)? {
        tracing::debug!(nevra = %pkg.nevra, %commit, "package already cached");
        return Ok(Imported {
            nevra: pkg.nevra,
            refname: pkg.refname,
            commit,
            imported_now: false,
        });
    }
    let (nevra, refname) = (pkg.nevra.clone(), pkg.refname.clone());
    let started = Instant::now();
    let commit = import(repo, pkg, users).with_context(|| nevra.clone())?;
    tracing::info!(%nevra, %commit, secs = started.elapsed().as_secs_f64(), "imported package");
    Ok(Imported {
        nevra,
        refname,
        commit,
        imported_now: true,
    })
}

pub(super) fn open(path: &Path) -> Result<Opened> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    crate::rpm::blob::check_sizes(&mut file).context("reading the RPM headers")?;
    file.rewind().context("reading the RPM headers")?;
    let mut buffered = BufReader::new(&mut file);
    let metadata = rpm::PackageMetadata::parse(&mut buffered).context("reading the RPM headers")?;
    let unread = buffered.buffer().len() as u64;
    drop(buffered);
    let payload_offset = file.stream_position().context("reading the RPM headers")? - unread;
    let offsets = metadata.get_package_segment_offsets();
    if offsets.payload != payload_offset {
        bail!(
            "the headers end at byte {payload_offset} but describe {} bytes",
            offsets.payload
        );
    }
    let mut header = vec![0u8; (offsets.payload - offsets.header) as usize];
    file.read_exact_at(&mut header, offsets.header)
        .context("reading the RPM header")?;
    let header_sha256 = hex::encode(Sha256::digest(&header));
    let nevra = metadata
        .get_nevra()
        .context("reading name, version and arch")?
        .to_string();
    Ok(Opened {
        refname: refname(&nevra, &header_sha256),
        file,
        metadata,
        header,
        header_sha256,
        nevra,
        payload_offset,
    })
}

/// What the payload must hash to, from the main header.
struct PayloadDigests {
    sha256: Option<String>,
    sha512: Option<String>,
}

impl PayloadDigests {
    fn from_header(m: &rpm::PackageMetadata) -> Result<PayloadDigests> {
        let get = |tag| m.header.get_entry_data_as_string(tag).ok().map(str::to_ascii_lowercase);
        let d = PayloadDigests {
            sha256: get(IndexTag::RPMTAG_PAYLOADSHA256),
            sha512: get(IndexTag::RPMTAG_PAYLOAD_SHA512),
        };
        if d.sha256.is_none() && d.sha512.is_none() {
            bail!("the header has no SHA-256 or SHA-512 payload digest to check the payload against");
        }
        Ok(d)
    }
}

/// The payload digests being computed.
struct PayloadHasher {
    sha256: Option<Sha256>,
    sha512: Option<Sha512>,
}

impl PayloadHasher {
    fn new(want: &PayloadDigests) -> PayloadHasher {
        PayloadHasher {
            sha256: want.sha256.as_ref().map(|_| Sha256::new()),
            sha512: want.sha512.as_ref().map(|_| Sha512::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            Digest::update(h, data);
        }
        if let Some(h) = &mut self.sha512 {
            Digest::update(h, data);
        }
    }

    fn check(&mut self, want: &PayloadDigests) -> Result<()> {
        let got256 = self.sha256.take().map(|d| hex::encode(d.finalize()));
        let got512 = self.sha512.take().map(|d| hex::encode(d.finalize()));
        for (name, want, got) in [("SHA-256", &want.sha256, got256), ("SHA-512", &want.sha512, got512)] {
            if let (Some(w), Some(g)) = (want, got) {
                if *w != g {
                    bail!("payload {name} digest mismatch: the header says {w}, the payload hashes to {g}");
                }
            }
        }
        Ok(())
    }
}

/// Hashes the payload before anything is written: a corrupt download fails
/// here, without staging objects. (libostree keeps an aborted transaction's
/// staging directory and a later transaction commits what it holds:
/// unreferenced, content-addressed objects, but clutter all the same.) The
/// bytes actually imported are hashed again as they stream.
fn precheck_payload(file: &File, payload_offset: u64, want: &PayloadDigests) -> Result<()> {
    let mut hasher = PayloadHasher::new(want);
    let mut buf = vec![0u8; READ_BUFFER];
    let mut pos = payload_offset;
    loop {
        let n = file.read_at(&mut buf, pos).context("reading the payload")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    hasher.check(want)
}

/// The package file from the payload on, hashed as the decompressor reads it.
struct Hashed {
    file: File,
    pos: u64,
    payload_offset: u64,
    hasher: PayloadHasher,
}

impl Hashed {
    fn feed(&mut self, buf: &[u8]) {
        let skip = self.payload_offset.saturating_sub(self.pos).min(buf.len() as u64) as usize;
        self.hasher.update(&buf[skip..]);
        self.pos += buf.len() as u64;
    }
}

/// Shared so the digests can be finished once the rpm reader is done with the file.
#[derive(Clone)]
struct HashedFile(Rc<RefCell<Hashed>>);

impl Read for HashedFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut h = self.0.borrow_mut();
        let n = h.file.read(buf)?;
        h.feed(&buf[..n]);
        Ok(n)
    }
}

impl HashedFile {
    /// Reads what the decompressor left (the rest of its frame, trailing
    /// bytes) and compares the digests of the whole payload as it was read.
    fn verify(&self, want: &PayloadDigests) -> Result<()> {
        let mut h = self.0.borrow_mut();
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            let n = h.file.read(&mut buf).context("reading the end of the payload")?;
            if n == 0 {
                break;
            }
            h.feed(&buf[..n]);
        }
        h.hasher.check(want)
    }
}

/// A reader that hashes what passes through, to check a file's header digest.
struct Tee<'a> {
    inner: &'a mut dyn Read,
    hasher: Option<Box<dyn DynDigest>>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

pub(super) fn file_hasher(algo: DigestAlgorithm) -> Option<Box<dyn DynDigest>> {
    match algo {
        DigestAlgorithm::Sha2_224 => Some(Box::new(sha2::Sha224::new())),
        DigestAlgorithm::Sha2_256 => Some(Box::new(Sha256::new())),
        DigestAlgorithm::Sha2_384 => Some(Box::new(sha2::Sha384::new())),
        DigestAlgorithm::Sha2_512 => Some(Box::new(Sha512::new())),
        // MD5 (old packages) and SHA-3: the payload digest still covers the bytes.
        _ => None,
    }
}

fn import(repo: &Repo, pkg: Opened, users: &Users) -> Result<String> {
    pkg.metadata
        .verify_digests()
        .map_err(|e| anyhow!("the header digest check failed: {e}"))?;
    let plan = plan::build(&pkg.metadata, &pkg.header, users)?;
    let want = PayloadDigests::from_header(&pkg.metadata)?;

    let Opened {
        mut file,
        metadata,
        header,
        header_sha256,
        nevra,
        refname,
        payload_offset,
    } = pkg;
    precheck_payload(&file, payload_offset, &want)?;
    file.seek(SeekFrom::Start(payload_offset))
        .context("seeking to the payload")?;
    let hashed = HashedFile(Rc::new(RefCell::new(Hashed {
        file,
        pos: payload_offset,
        payload_offset,
        hasher: PayloadHasher::new(&want),
    })));
    let mut archive = cpio::Archive::open(BufReader::with_capacity(READ_BUFFER, hashed.clone()), &metadata.header)?;

    let tx = repo.transaction()?;
    let checksums = stream_payload(&tx, &mut archive, &plan)?;
    // rpm stops at the cpio trailer, and so does the import: what follows is
    // never decompressed (it could be gigabytes of zeros), only hashed as
    // compressed bytes for the payload digest.
    drop(archive);
    hashed.verify(&want)?;

    let root = tree(&plan, &checksums)?;
    let mut meta = BTreeMap::new();
    let mut put = |k: &str, v| meta.insert(k.to_string(), v);
    put("arbor.nevra", MetaValue::Str(nevra.clone()));
    put("arbor.header-sha256", MetaValue::Str(header_sha256));
    put("arbor.header", MetaValue::Bytes(header));
    put("arbor.ghost", MetaValue::StrList(plan.ghosts.clone()));
    put("arbor.config", MetaValue::StrList(plan.config.clone()));
    put("arbor.tmpfiles", MetaValue::StrList(plan.tmpfiles.clone()));
    // The build time is fixed by the package itself: the same RPM gives the same commit.
    let time = metadata.get_build_time().unwrap_or(0);
    let commit = tx.write_commit(&root, &nevra, &meta, time)?;
    tx.commit(&refname, &commit)?;
    Ok(commit)
}

/// Reads every payload entry into the transaction; returns the content
/// checksum of each header entry that has one (regular files and symlinks).
fn stream_payload(tx: &Transaction<'_>, archive: &mut cpio::Archive<'_>, plan: &Plan) -> Result<Vec<Option<String>>> {
    let n = plan.entries.len();
    let mut checksums: Vec<Option<String>> = vec![None; n];
    let mut seen = vec![false; n];
    let mut last: Option<String> = None;
    loop {
        let entry = match archive.next_entry() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => bail!(
                "{}",
                explain_bad_entry(&e, plan).unwrap_or_else(|| match &last {
                    Some(p) => format!("reading the payload after {p}: {e:#}"),
                    None => format!("reading the payload: {e:#}"),
                })
            ),
        };
        let (i, shown) = header_file(&entry.name, plan)?;
        let path = plan.entries[i].path.clone();
        if std::mem::replace(&mut seen[i], true) {
            bail!("payload entry {shown} appears twice");
        }
        let e = &plan.entries[i];
        let mut f = archive.content();
        match &e.kind {
            Kind::Ghost { .. } | Kind::Dir | Kind::Special => {}
            Kind::Symlink { target } => {
                let mut got = Vec::new();
                (&mut f)
                    .take(target.len() as u64 + 1)
                    .read_to_end(&mut got)
                    .with_context(|| format!("{path}: reading the payload"))?;
                if got != target.as_bytes() {
                    bail!(
                        "{path}: the payload's symlink target {} differs from the header's {target:?}",
                        plan::show_bytes(&got)
                    );
                }
                checksums[i] = Some(tx.write_symlink(&e.meta, target).with_context(|| path.clone())?);
            }
            // A hardlink whose bytes travel with another name of its set.
            Kind::Regular {
                hardlink_set: Some(_),
                size,
                ..
            } if entry.size == 0 && *size > 0 => {}
            Kind::Regular { size, .. } if entry.size != *size => {
                bail!("{path}: the payload holds {} bytes, the header says {size}", entry.size);
            }
            Kind::Regular { size, digest, .. } => {
                let mut tee = Tee {
                    inner: &mut f,
                    hasher: digest.as_ref().and_then(|(algo, _)| file_hasher(*algo)),
                };
                let csum = tx
                    .write_regular(&e.meta, *size, &mut tee)
                    .with_context(|| format!("{path}: streaming the file into the repository"))?;
                if let (Some(h), Some((_, want))) = (tee.hasher.take(), digest) {
                    let got = hex::encode(h.finalize());
                    if got != *want {
                        bail!("{path}: content digest mismatch: the header says {want}, the payload hashes to {got}");
                    }
                }
                checksums[i] = Some(csum);
            }
        }
        last = Some(path);
    }

    for (i, e) in plan.entries.iter().enumerate() {
        if !seen[i] && !matches!(e.kind, Kind::Ghost { .. }) {
            bail!("{}: listed in the header but missing from the payload", e.path);
        }
    }
    for set in &plan.hardlinks {
        let carriers: Vec<&String> = set.iter().filter_map(|&i| checksums[i].as_ref()).collect();
        let Some(csum) = carriers.first().map(|c| (*c).clone()) else {
            bail!(
                "{}: hardlink set with no content in the payload",
                plan.entries[set[0]].path
            );
        };
        for &i in set {
            checksums[i] = Some(csum.clone());
        }
    }
    Ok(checksums)
}

/// The header entry a payload entry is (its index into `plan.entries`), and
/// how to name it in an error.
fn header_file(name: &cpio::Name, plan: &Plan) -> Result<(usize, String)> {
    match name {
        cpio::Name::Path(name) => {
            let shown = plan::show_bytes(name);
            if name.contains(&0) {
                bail!("payload entry {shown} has a NUL byte in its name");
            }
            let Ok(text) = std::str::from_utf8(name) else {
                bail!("payload entry {shown} has a name that is not valid UTF-8");
            };
            let path = format!("/{}", text.strip_prefix("./").unwrap_or(text));
            let Some(&i) = plan.index.get(&path) else {
                bail!("payload entry {shown} is not listed in the package header");
            };
            Ok((i, shown))
        }
        // The archive checked the index against the header's file arrays; the
        // plan has one entry per header file, but is checked all the same.
        cpio::Name::Index(file) => match usize::try_from(*file).ok().filter(|i| *i < plan.entries.len()) {
            Some(i) => Ok((i, format!("{} (file #{file})", plan.entries[i].path))),
            None => bail!(
                "payload entry for file #{file}: the header lists {} files",
                plan.entries.len()
            ),
        },
    }
}

/// A refused entry header in terms of the package header, or `None` when the
/// error is not about one entry (the caller then says where reading stopped).
fn explain_bad_entry(e: &anyhow::Error, plan: &Plan) -> Option<String> {
    match e.downcast_ref::<BadEntry>()? {
        BadEntry::Ghost { nth, file } => {
            let path = usize::try_from(*file).ok().and_then(|i| plan.entries.get(i))?;
            Some(format!(
                "payload entry #{nth} refers to {} (file #{file}), a %ghost, which a payload never holds",
                path.path
            ))
        }
        e @ (BadEntry::LongName { .. } | BadEntry::OutOfRange { .. }) => Some(e.to_string()),
    }
}

/// The commit's tree: header entries placed beneath the root by name, parents
/// the package does not list created root-owned 0755.
fn tree(plan: &Plan, checksums: &[Option<String>]) -> Result<Dir> {
    let mut root = Dir::new(FileMeta::root_dir(0o755));
    for (i, e) in plan.entries.iter().enumerate() {
        match &e.kind {
            Kind::Ghost { .. } | Kind::Special => {}
            Kind::Dir => dir_at(&mut root, &e.path)?.meta = e.meta.clone(),
            Kind::Regular { .. } | Kind::Symlink { .. } => {
                let (parent, name) = e.path.rsplit_once('/').unwrap_or(("", &e.path));
                let dir = dir_at(&mut root, parent)?;
                if dir.dirs.contains_key(name) {
                    bail!("{}: both a directory and a file", e.path);
                }
                let csum = checksums[i]
                    .clone()
                    .ok_or_else(|| anyhow!("{}: no content was written", e.path))?;
                dir.files.insert(name.to_string(), csum);
            }
        }
    }
    Ok(root)
}

/// The directory at `path` (absolute, validated), created as needed.
fn dir_at<'a>(root: &'a mut Dir, path: &str) -> Result<&'a mut Dir> {
    let mut dir = root;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        if dir.files.contains_key(c) {
            bail!("{path}: {c} is not a directory");
        }
        dir = dir
            .dirs
            .entry(c.to_string())
            .or_insert_with(|| Dir::new(FileMeta::root_dir(0o755)));
    }
    Ok(dir)
}
