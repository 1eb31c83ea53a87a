//! Packages that come as rpm headers rather than rpm-md metadata: the base
//! tree's installed packages (rpmdb header blobs) and local .rpm files. Their
//! tags are read into [`HeaderMeta`] in safe code first, so a bad header
//! leaves the pool untouched, and then become solvables directly (the same
//! fields libsolv's own rpmdb reader fills, without going through librpm).

use std::ffi::{c_char, c_int};
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use libsolv_sys::ffi;
use sha2::{Digest, Sha256};

use super::{Pool, cstr};
use crate::rpm::blob::{Blob, read_package, tag};

// SAFETY: declared as in libsolv's pool_parserpmrichdep.h (libsolvext), which libsolv-sys does not bind.
unsafe extern "C" {
    fn pool_parserpmrichdep(pool: *mut ffi::Pool, dep: *const c_char) -> ffi::Id;
}

/// The name of the installed repository, as dnf and libsolv call it.
pub const INSTALLED_REPO: &str = "@System";

/// rpm's dependency sense flags (`rpmsenseFlags`).
const RPMSENSE_LESS: u32 = 1 << 1;
const RPMSENSE_GREATER: u32 = 1 << 2;
const RPMSENSE_EQUAL: u32 = 1 << 3;
const RPMSENSE_MISSINGOK: u32 = 1 << 19;
const RPMSENSE_RPMLIB: u32 = 1 << 24;

/// A local package file is read whole for its checksum; nothing bigger is a package.
const MAX_RPM_SIZE: u64 = 16 << 30;

/// The kinds of dependency a solvable holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DepKind {
    Provides,
    Requires,
    Conflicts,
    Obsoletes,
    Recommends,
    Suggests,
    Supplements,
    Enhances,
}

/// (kind, name tag, flags tag, version tag).
const DEP_TAGS: [(DepKind, u32, u32, u32); 8] = [
    (
        DepKind::Provides,
        tag::PROVIDENAME,
        tag::PROVIDEFLAGS,
        tag::PROVIDEVERSION,
    ),
    (
        DepKind::Requires,
        tag::REQUIRENAME,
        tag::REQUIREFLAGS,
        tag::REQUIREVERSION,
    ),
    (
        DepKind::Conflicts,
        tag::CONFLICTNAME,
        tag::CONFLICTFLAGS,
        tag::CONFLICTVERSION,
    ),
    (
        DepKind::Obsoletes,
        tag::OBSOLETENAME,
        tag::OBSOLETEFLAGS,
        tag::OBSOLETEVERSION,
    ),
    (
        DepKind::Recommends,
        tag::RECOMMENDNAME,
        tag::RECOMMENDFLAGS,
        tag::RECOMMENDVERSION,
    ),
    (
        DepKind::Suggests,
        tag::SUGGESTNAME,
        tag::SUGGESTFLAGS,
        tag::SUGGESTVERSION,
    ),
    (
        DepKind::Supplements,
        tag::SUPPLEMENTNAME,
        tag::SUPPLEMENTFLAGS,
        tag::SUPPLEMENTVERSION,
    ),
    (
        DepKind::Enhances,
        tag::ENHANCENAME,
        tag::ENHANCEFLAGS,
        tag::ENHANCEVERSION,
    ),
];

/// One dependency as the header spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Dep {
    pub kind: DepKind,
    pub name: String,
    /// `RPMSENSE_*` flags.
    pub flags: u32,
    /// `[epoch:]version[-release]`, empty for an unversioned dependency.
    pub version: String,
}

/// What the solver needs from one header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HeaderMeta {
    pub name: String,
    /// `[epoch:]version-release`, the epoch left out when 0 (as rpm-md does).
    pub evr: String,
    pub arch: String,
    pub deps: Vec<Dep>,
    /// (directory without trailing slash, base name) of every file.
    pub files: Vec<(String, String)>,
    pub install_size: u64,
}

impl HeaderMeta {
    /// Reads the solver's fields from a main header.
    pub(super) fn from_blob(h: &Blob) -> Result<HeaderMeta> {
        let name = h
            .string(tag::NAME)
            .filter(|n| !n.is_empty())
            .context("the header has no name")?;
        let version = h
            .string(tag::VERSION)
            .with_context(|| format!("{name}: the header has no version"))?;
        let release = h
            .string(tag::RELEASE)
            .with_context(|| format!("{name}: the header has no release"))?;
        let evr = match h.number(tag::EPOCH) {
            Some(e) if e != 0 => format!("{e}:{version}-{release}"),
            _ => format!("{version}-{release}"),
        };
        // rpm marks a source package by its missing SOURCERPM.
        let arch = match h.string(tag::ARCH) {
            _ if h.find(tag::SOURCERPM).is_none() => "src".to_string(),
            Some(a) => a,
            None => "noarch".to_string(),
        };
        let mut deps = Vec::new();
        for (kind, name_tag, flags_tag, version_tag) in DEP_TAGS {
            let names = strings(h, name_tag);
            let flags = h.find(flags_tag).map(|e| h.numbers(&e)).unwrap_or_default();
            let versions = strings(h, version_tag);
            for (i, dep) in names.into_iter().enumerate() {
                let flags = flags.get(i).copied().unwrap_or(0) as u32;
                if dep.is_empty()
                    || (kind == DepKind::Requires && (flags & RPMSENSE_RPMLIB != 0 || dep.starts_with("rpmlib(")))
                {
                    // rpmlib() requires name features of rpm itself, which no package provides.
                    continue;
                }
                // `Requires(missingok)` is rpm's older spelling of a weak dependency.
                let kind = if kind == DepKind::Requires && flags & RPMSENSE_MISSINGOK != 0 {
                    DepKind::Recommends
                } else {
                    kind
                };
                deps.push(Dep {
                    kind,
                    name: dep,
                    flags,
                    version: versions.get(i).cloned().unwrap_or_default(),
                });
            }
        }
        let files = files(h).with_context(|| format!("{name}: bad file list"))?;
        let install_size = h.number(tag::SIZE).unwrap_or(0);
        Ok(HeaderMeta {
            name,
            evr,
            arch,
            deps,
            files,
            install_size,
        })
    }
}

fn strings(h: &Blob, t: u32) -> Vec<String> {
    h.find(t)
        .map(|e| {
            h.strings(&e)
                .into_iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// (directory, base name) of every file, from the compressed file list or the
/// old full-path one.
fn files(h: &Blob) -> Result<Vec<(String, String)>> {
    let split = |path: &str| -> (String, String) {
        let (dir, base) = path.rsplit_once('/').unwrap_or(("", path));
        (dir.to_string(), base.to_string())
    };
    let bases = strings(h, tag::BASENAMES);
    if bases.is_empty() {
        return Ok(strings(h, tag::OLDFILENAMES).iter().map(|p| split(p)).collect());
    }
    let dirs = strings(h, tag::DIRNAMES);
    let index = h.find(tag::DIRINDEXES).map(|e| h.numbers(&e)).unwrap_or_default();
    ensure!(
        index.len() == bases.len(),
        "{} base names but {} directory indexes",
        bases.len(),
        index.len()
    );
    bases
        .into_iter()
        .zip(index)
        .map(|(base, i)| {
            let dir = dirs
                .get(i as usize)
                .with_context(|| format!("directory index {i} is out of range"))?;
            Ok((dir.trim_end_matches('/').to_string(), base))
        })
        .collect()
}

/// A local package file, read and checked before anything enters the pool.
struct LocalRpm {
    path: PathBuf,
    meta: HeaderMeta,
    sha256: String,
    size: u64,
}

fn read_local(path: &PathBuf) -> Result<LocalRpm> {
    let file = std::fs::File::open(path).context("opening the package")?;
    let stat = file.metadata().context("reading the package's metadata")?;
    ensure!(stat.is_file(), "not a regular file");
    ensure!(
        stat.len() <= MAX_RPM_SIZE,
        "{} bytes is too big for a package",
        stat.len()
    );
    let (_sig, main) = read_package(path)?;
    let meta = HeaderMeta::from_blob(&main)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut r = file.take(MAX_RPM_SIZE);
    loop {
        let n = r.read(&mut buf).context("reading the package")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(LocalRpm {
        path: path.clone(),
        meta,
        sha256: hex::encode(hasher.finalize()),
        size: stat.len(),
    })
}

impl Pool {
    /// Adds the installed packages as the pool's installed repository
    /// (`@System`): `headers` are main header blobs as the rpmdb stores them
    /// (no magic; see [`Blob::parse`]). Name, epoch/version/release, arch,
    /// every dependency kind with its version and flags, and the full file list
    /// are loaded, so file dependencies such as `/bin/sh` resolve against
    /// installed files. `gpg-pubkey` pseudo-packages are skipped, as libsolv
    /// does. Only one installed set per pool.
    pub fn add_installed(&mut self, headers: &[Blob]) -> Result<()> {
        // SAFETY: raw is live.
        ensure!(
            unsafe { (*self.raw).installed }.is_null(),
            "the installed packages were already added to this pool"
        );
        let mut metas = Vec::with_capacity(headers.len());
        for (i, h) in headers.iter().enumerate() {
            let meta = HeaderMeta::from_blob(h).with_context(|| format!("installed package header {i}"))?;
            if meta.name != "gpg-pubkey" {
                metas.push(meta);
            }
        }
        let (repo, _, _) = self.add_headers(INSTALLED_REPO, metas.iter())?;
        // SAFETY: raw and repo are live; repo belongs to this pool. Internalizing
        // makes the file lists visible to lookups.
        unsafe {
            ffi::repo_internalize(repo);
            ffi::pool_set_installed(self.raw, repo);
        }
        Ok(())
    }

    /// Adds local .rpm files as a repository named `name` (`@commandline`, as
    /// dnf calls it). Every file is read and checked before any enters the
    /// pool. For these packages, [`super::Package::location`] is the file's
    /// path exactly as given in `files`, and `checksum` its SHA-256, so the
    /// caller maps a solution back to the files through `location`. They can
    /// be requested by name, provides, or `name-[epoch:]version-release.arch`.
    pub fn add_local_rpms(&mut self, name: &str, files: &[PathBuf]) -> Result<()> {
        let rpms = files
            .iter()
            .map(|f| read_local(f).with_context(|| format!("reading {}", f.display())))
            .collect::<Result<Vec<_>>>()?;
        let (repo, data, ids) = self.add_headers(name, rpms.iter().map(|r| &r.meta))?;
        for (rpm, id) in rpms.iter().zip(ids) {
            let location = cstr(&rpm.path.to_string_lossy())?;
            let sha = cstr(&rpm.sha256)?;
            // SAFETY: data belongs to repo, id is one of its solvables; libsolv copies the strings.
            unsafe {
                ffi::repodata_set_location(data, id, 0, std::ptr::null(), location.as_ptr());
                ffi::repodata_set_checksum(
                    data,
                    id,
                    ffi::solv_knownid_SOLVABLE_CHECKSUM as ffi::Id,
                    ffi::solv_knownid_REPOKEY_TYPE_SHA256 as ffi::Id,
                    sha.as_ptr(),
                );
                ffi::repodata_set_num(data, id, ffi::solv_knownid_SOLVABLE_DOWNLOADSIZE as ffi::Id, rpm.size);
            }
        }
        // SAFETY: repo is live; internalizing makes the new attributes visible to lookups.
        unsafe { ffi::repo_internalize(repo) };
        Ok(())
    }

    /// A new repository `name` holding one solvable per header: the repo, its
    /// repodata (not yet internalized, so the caller can add attributes) and the
    /// solvables' ids, in order.
    fn add_headers<'a>(
        &mut self,
        name: &str,
        metas: impl Iterator<Item = &'a HeaderMeta>,
    ) -> Result<(*mut ffi::Repo, *mut ffi::Repodata, Vec<ffi::Id>)> {
        let cname = cstr(name)?;
        // Every string that goes through a C string is checked before the repo exists.
        let metas: Vec<(&HeaderMeta, Vec<(std::ffi::CString, std::ffi::CString)>)> = metas
            .map(|m| {
                let files = m
                    .files
                    .iter()
                    .map(|(d, b)| Ok((cstr(if d.is_empty() { "/" } else { d })?, cstr(b)?)))
                    .collect::<Result<Vec<_>>>()?;
                for dep in m.deps.iter().filter(|d| d.name.starts_with('(')) {
                    cstr(&dep.name)?;
                }
                Ok((m, files))
            })
            .collect::<Result<_>>()?;
        // SAFETY: raw is live; repo_create copies the name; the repodata belongs to the repo.
        let (repo, data) = unsafe {
            let repo = ffi::repo_create(self.raw, cname.as_ptr());
            (repo, ffi::repo_add_repodata(repo, 0))
        };
        let mut ids = Vec::with_capacity(metas.len());
        for (m, files) in &metas {
            // SAFETY: repo is live; the new solvable's pointer is taken after the add,
            // which may move the solvables array.
            let id = unsafe { ffi::repo_add_solvable(repo) };
            ids.push(id);
            let (n, evr, arch) = (self.str2id(&m.name), self.str2id(&m.evr), self.str2id(&m.arch));
            let s = self.solvable(id);
            // SAFETY: s is the live solvable just added to repo.
            unsafe {
                (*s).name = n;
                (*s).evr = evr;
                (*s).arch = arch;
            }
            for dep in &m.deps {
                let Some(dep_id) = self.dep_id(dep) else {
                    tracing::warn!(package = %m.name, dep = %dep.name, "ignoring a dependency libsolv cannot parse");
                    continue;
                };
                let s = self.solvable(id);
                // SAFETY: s and repo are live; repo_addid_dep appends to the repo's id array
                // (deduplicating) and returns the list's offset.
                unsafe {
                    let field = match dep.kind {
                        DepKind::Provides => &mut (*s).provides,
                        DepKind::Requires => &mut (*s).requires,
                        DepKind::Conflicts => &mut (*s).conflicts,
                        DepKind::Obsoletes => &mut (*s).obsoletes,
                        DepKind::Recommends => &mut (*s).recommends,
                        DepKind::Suggests => &mut (*s).suggests,
                        DepKind::Supplements => &mut (*s).supplements,
                        DepKind::Enhances => &mut (*s).enhances,
                    };
                    *field = ffi::repo_addid_dep(repo, *field, dep_id, 0);
                }
            }
            let s = self.solvable(id);
            // SAFETY: s and repo are live. rpm puts `name = evr` in Provides; older
            // packages may not, and the solver needs it for version comparisons.
            unsafe {
                let own = ffi::solvable_selfprovidedep(s);
                (*s).provides = ffi::repo_addid_dep(repo, (*s).provides, own, 0);
            }
            for (dir, base) in files {
                // SAFETY: data belongs to repo and id to it; both strings are NUL-terminated and copied.
                unsafe {
                    let did = ffi::repodata_str2dir(data, dir.as_ptr(), 1);
                    ffi::repodata_add_dirstr(
                        data,
                        id,
                        ffi::solv_knownid_SOLVABLE_FILELIST as ffi::Id,
                        did,
                        base.as_ptr(),
                    );
                }
            }
            if m.install_size > 0 {
                // SAFETY: as above.
                unsafe {
                    ffi::repodata_set_num(
                        data,
                        id,
                        ffi::solv_knownid_SOLVABLE_INSTALLSIZE as ffi::Id,
                        m.install_size,
                    )
                };
            }
        }
        self.prepared = false;
        Ok((repo, data, ids))
    }

    fn str2id(&self, s: &str) -> ffi::Id {
        // SAFETY: raw is live; pool_strn2id copies `len` bytes, so no NUL is needed.
        unsafe { ffi::pool_strn2id(self.raw, s.as_ptr().cast(), s.len() as u32, 1) }
    }

    /// The pool's id for a dependency: `name`, `name <op> version`, or a rich
    /// dependency; None if libsolv cannot parse a rich dependency.
    fn dep_id(&self, dep: &Dep) -> Option<ffi::Id> {
        if dep.name.starts_with('(') {
            let c = cstr(&dep.name).ok()?;
            // SAFETY: raw is live; c is NUL-terminated; 0 means a parse error.
            let id = unsafe { pool_parserpmrichdep(self.raw, c.as_ptr()) };
            return (id != 0).then_some(id);
        }
        let name = self.str2id(&dep.name);
        let rel = rel_flags(dep.flags);
        if rel == 0 || dep.version.is_empty() {
            return Some(name);
        }
        let evr = self.str2id(&dep.version);
        // SAFETY: raw is live; both ids belong to it.
        Some(unsafe { ffi::pool_rel2id(self.raw, name, evr, rel, 1) })
    }
}

/// libsolv's `REL_*` comparison for rpm's sense flags.
fn rel_flags(flags: u32) -> c_int {
    let mut rel = 0;
    if flags & RPMSENSE_LESS != 0 {
        rel |= ffi::REL_LT;
    }
    if flags & RPMSENSE_GREATER != 0 {
        rel |= ffi::REL_GT;
    }
    if flags & RPMSENSE_EQUAL != 0 {
        rel |= ffi::REL_EQ;
    }
    rel as c_int
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpm::blob::tests::header;
    use crate::rpm::blob::ty;

    fn strs(v: &[&str]) -> Vec<u8> {
        v.iter().flat_map(|s| s.bytes().chain([0])).collect()
    }

    fn ints(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|n| n.to_be_bytes()).collect()
    }

    #[test]
    fn header_tags_become_solver_fields() {
        let bytes = header(&[
            (tag::NAME, ty::STRING, 1, &strs(&["foo"])),
            (tag::VERSION, ty::STRING, 1, &strs(&["1.0"])),
            (tag::RELEASE, ty::STRING, 1, &strs(&["2"])),
            (tag::EPOCH, ty::INT32, 1, &ints(&[3])),
            (tag::ARCH, ty::STRING, 1, &strs(&["aarch64"])),
            (tag::SOURCERPM, ty::STRING, 1, &strs(&["foo-1.0-2.src.rpm"])),
            (
                tag::REQUIREFLAGS,
                ty::INT32,
                3,
                &ints(&[RPMSENSE_RPMLIB | 8, 12, 1 << 19]),
            ),
            (
                tag::REQUIRENAME,
                ty::STRING_ARRAY,
                3,
                &strs(&["rpmlib(X)", "bar", "baz"]),
            ),
            (tag::REQUIREVERSION, ty::STRING_ARRAY, 3, &strs(&["1", "2.0", ""])),
            (tag::DIRINDEXES, ty::INT32, 2, &ints(&[1, 0])),
            (tag::BASENAMES, ty::STRING_ARRAY, 2, &strs(&["sh", "etc"])),
            (tag::DIRNAMES, ty::STRING_ARRAY, 2, &strs(&["/", "/bin/"])),
        ]);
        let meta = HeaderMeta::from_blob(&Blob::parse(bytes).unwrap()).unwrap();
        assert_eq!(
            (meta.name.as_str(), meta.evr.as_str(), meta.arch.as_str()),
            ("foo", "3:1.0-2", "aarch64")
        );
        let deps: Vec<_> = meta
            .deps
            .iter()
            .map(|d| (d.kind, d.name.as_str(), d.flags & 14, d.version.as_str()))
            .collect();
        assert_eq!(
            deps,
            [
                (DepKind::Requires, "bar", 12, "2.0"),
                (DepKind::Recommends, "baz", 0, "")
            ]
        );
        assert_eq!(
            meta.files,
            [
                ("/bin".to_string(), "sh".to_string()),
                (String::new(), "etc".to_string())
            ]
        );
    }

    #[test]
    fn bad_directory_index_is_refused() {
        let bytes = header(&[
            (tag::NAME, ty::STRING, 1, &strs(&["foo"])),
            (tag::VERSION, ty::STRING, 1, &strs(&["1.0"])),
            (tag::RELEASE, ty::STRING, 1, &strs(&["2"])),
            (tag::DIRINDEXES, ty::INT32, 1, &ints(&[7])),
            (tag::BASENAMES, ty::STRING_ARRAY, 1, &strs(&["sh"])),
            (tag::DIRNAMES, ty::STRING_ARRAY, 1, &strs(&["/bin/"])),
        ]);
        let e = HeaderMeta::from_blob(&Blob::parse(bytes).unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains("directory index 7"), "{e:#}");
    }
}
