//! libsolv, the solver dnf uses, kept behind one safe module. All unsafe FFI
//! for libsolv lives here and in its submodules; callers see [`Pool`],
//! [`Request`] and [`Package`]. Repositories come from rpm-md metadata (here)
//! or from rpm headers, installed or in local files (`installed`); a device's
//! layering solve over an installed base is in `layer`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString, c_char, c_int};
use std::path::Path;

use anyhow::{Context, Result, bail};
use libsolv_sys::ffi;
use serde::Serialize;

use crate::arch::Arch;

mod installed;
mod layer;

pub use installed::INSTALLED_REPO;
pub use layer::{LayerRequest, LayerSolution};

// SAFETY: declared as in libsolv's evr.h and solv_xfopen.h, which libsolv-sys does not bind.
unsafe extern "C" {
    fn pool_evrcmp_str(pool: *const ffi::Pool, evr1: *const c_char, evr2: *const c_char, mode: c_int) -> c_int;
    fn solv_xfopen(path: *const c_char, mode: *const c_char) -> *mut ffi::FILE;
    fn testcase_write(
        solv: *mut ffi::Solver,
        dir: *const c_char,
        resultflags: c_int,
        testcasename: *const c_char,
        resultname: *const c_char,
    ) -> c_int;
}
/// testcase.h: record the transaction and problems in the testcase's result.
const TESTCASE_RESULT_TRANSACTION_PROBLEMS: c_int = 1 | 2;
/// evr.h: compare epoch, version and release.
const EVRCMP_COMPARE: c_int = 0;

/// The version of the libsolv arbor is linked against.
pub fn libsolv_version() -> String {
    // SAFETY: solv_version is a NUL-terminated static string in libsolv.
    unsafe { CStr::from_ptr(ffi::solv_version.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// A libsolv pool set up for RPM version rules (never Debian's, which the
/// Debian build of libsolv defaults to) and one target arch.
pub struct Pool {
    raw: *mut ffi::Pool,
    prepared: bool,
}

/// What to solve for: the treefile's package set, as jobs.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Package names, provides or file paths to install.
    pub install: Vec<String>,
    /// Package names (globs allowed) that must never be installed.
    pub exclude: Vec<String>,
    /// Packages that must come from one repository only: (repo name, packages).
    pub pinned: Vec<(String, Vec<String>)>,
    /// Install weak dependencies (Recommends).
    pub recommends: bool,
    /// Lockfile: these names may only resolve to this exact `evr.arch`.
    pub locked: BTreeMap<String, String>,
}

/// One package of a solved transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    /// Name.
    pub name: String,
    /// `[epoch:]version-release`.
    pub evr: String,
    /// Arch.
    pub arch: String,
    /// The repository it comes from.
    pub repo: String,
    /// Path relative to the repository's base URL; for a package added by
    /// [`Pool::add_local_rpms`], the file's path as given; empty for an
    /// installed one.
    pub location: String,
    /// Checksum type from the metadata (`sha256`).
    pub checksum_type: String,
    /// Checksum of the .rpm file, hex.
    pub checksum: String,
    /// Size of the .rpm file.
    pub download_size: u64,
    /// Size once installed.
    pub install_size: u64,
}

impl Package {
    /// `name-evr.arch`, as rpm prints it.
    pub fn nevra(&self) -> String {
        format!("{}-{}.{}", self.name, self.evr, self.arch)
    }
}

/// The solver could not satisfy the request.
#[derive(Debug, thiserror::Error)]
#[error("the package set cannot be installed:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct Unsolvable {
    /// One line per problem rule, in libsolv's words.
    pub problems: Vec<String>,
}

/// An owned libsolv queue.
struct Queue(ffi::Queue);

impl Queue {
    fn new() -> Queue {
        let mut q = std::mem::MaybeUninit::<ffi::Queue>::uninit();
        // SAFETY: queue_init fully initialises the struct.
        unsafe { ffi::queue_init(q.as_mut_ptr()) };
        // SAFETY: initialised just above.
        Queue(unsafe { q.assume_init() })
    }

    fn push(&mut self, id: ffi::Id) {
        // SAFETY: the queue is initialised; inserting at `count` appends.
        unsafe { ffi::queue_insert(&mut self.0, self.0.count, id) };
    }

    fn as_slice(&self) -> &[ffi::Id] {
        if self.0.count == 0 {
            return &[];
        }
        // SAFETY: elements points at `count` initialised Ids owned by the queue.
        unsafe { std::slice::from_raw_parts(self.0.elements, self.0.count as usize) }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: initialised in new(), freed once.
        unsafe { ffi::queue_free(&mut self.0) };
    }
}

/// The pool's `considered` map for one solve: every solvable except the hidden
/// ones. Installed into the pool when made and detached and freed on drop, so
/// no way out of a solve leaves the pool pointing at a freed map; the borrow
/// keeps the pool alive for as long as the map is installed.
struct Considered<'p> {
    pool: &'p Pool,
    /// Heap-allocated, so the address the pool holds stays put while the guard moves.
    map: *mut ffi::Map,
}

impl<'p> Considered<'p> {
    fn install(pool: &'p Pool, hidden: &BTreeSet<ffi::Id>) -> Considered<'p> {
        let map = Box::into_raw(Box::new(ffi::Map {
            map: std::ptr::null_mut(),
            size: 0,
        }));
        // SAFETY: pool.raw is live; map points at a Map we own; map_init allocates
        // a zeroed bitmap of nsolvables bits.
        unsafe { ffi::map_init(map, (*pool.raw).nsolvables) };
        // SAFETY: (*map).map holds (*map).size bytes; set every bit, then clear the
        // hidden ones (ids come from this pool, so they are below nsolvables).
        unsafe {
            std::ptr::write_bytes((*map).map, 0xff, (*map).size as usize);
            for id in hidden {
                *(*map).map.add((*id >> 3) as usize) &= !(1u8 << (id & 7));
            }
        }
        // SAFETY: pool.raw is live; the map stays allocated until drop detaches it.
        unsafe { (*pool.raw).considered = map };
        Considered { pool, map }
    }
}

impl Drop for Considered<'_> {
    fn drop(&mut self) {
        // SAFETY: the pool is live (borrowed); the map is detached before it is
        // freed, and freed once: map_free for the bitmap, Box for the struct.
        unsafe {
            (*self.pool.raw).considered = std::ptr::null_mut();
            ffi::map_free(self.map);
            drop(Box::from_raw(self.map));
        }
    }
}

/// A libsolv solver for one solve over a borrowed pool, freed on drop.
struct Solver<'p> {
    raw: *mut ffi::Solver,
    _pool: std::marker::PhantomData<&'p Pool>,
}

impl<'p> Solver<'p> {
    fn new(pool: &'p Pool) -> Solver<'p> {
        // SAFETY: pool.raw is live, and outlives the solver through the borrow.
        let raw = unsafe { ffi::solver_create(pool.raw) };
        Solver {
            raw,
            _pool: std::marker::PhantomData,
        }
    }
}

impl Drop for Solver<'_> {
    fn drop(&mut self) {
        // SAFETY: raw came from solver_create and is freed exactly once.
        unsafe { ffi::solver_free(self.raw) };
    }
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).with_context(|| format!("{s:?} contains a NUL byte"))
}

impl Pool {
    /// A new, empty pool with `DISTTYPE_RPM` for `arch` (noarch packages are always allowed).
    pub fn new(arch: Arch) -> Pool {
        // SAFETY: pool_create returns a fresh pool or aborts on OOM; setdisttype on it is valid.
        let raw = unsafe { ffi::pool_create() };
        // SAFETY: raw is the live pool just created.
        unsafe { ffi::pool_setdisttype(raw, ffi::DISTTYPE_RPM as c_int) };
        let arch = CString::new(arch.rpm_name()).expect("arch names have no NUL");
        // SAFETY: raw is live; arch is a NUL-terminated string libsolv copies.
        unsafe { ffi::pool_setarch(raw, arch.as_ptr()) };
        Pool { raw, prepared: false }
    }

    /// A pool only for comparing versions.
    pub fn new_rpm() -> Pool {
        Pool::new(Arch::Noarch)
    }

    /// Compares two `[epoch:]version[-release]` strings the way rpm does.
    pub fn evrcmp(&self, a: &str, b: &str) -> Result<Ordering> {
        let (ca, cb) = (cstr(a)?, cstr(b)?);
        // SAFETY: self.raw is live; both strings are NUL-terminated and outlive the call.
        let r = unsafe { pool_evrcmp_str(self.raw, ca.as_ptr(), cb.as_ptr(), EVRCMP_COMPARE) };
        Ok(r.cmp(&0))
    }

    /// Loads a repository from rpm-md primary (and optionally filelists) files,
    /// compressed or not (gz, xz, zst by extension).
    pub fn add_rpmmd(&mut self, name: &str, primary: &Path, filelists: Option<&Path>) -> Result<()> {
        self.add_rpmmd_cached(name, primary, filelists, None)
    }

    /// Like [`Pool::add_rpmmd`], keeping libsolv's own binary form of the parsed
    /// metadata at `solv_cache`: a later run with the same metadata loads that
    /// instead of parsing the XML again (as dnf does). A cache file that does
    /// not load is ignored and rewritten.
    pub fn add_rpmmd_cached(
        &mut self,
        name: &str,
        primary: &Path,
        filelists: Option<&Path>,
        solv_cache: Option<&Path>,
    ) -> Result<()> {
        let cname = cstr(name)?;
        if let Some(cache) = solv_cache.filter(|c| c.is_file()) {
            // SAFETY: raw is live; repo_create copies the name.
            let repo = unsafe { ffi::repo_create(self.raw, cname.as_ptr()) };
            // SAFETY: repo and fp are live for the call.
            if self
                .read_into(repo, cache, |repo, fp| unsafe { ffi::repo_add_solv(repo, fp, 0) })
                .is_ok()
            {
                self.prepared = false;
                return Ok(());
            }
            tracing::warn!(cache = %cache.display(), "ignoring a solv cache file that does not load");
            // SAFETY: repo is live and not referenced elsewhere; its solvables are freed with it.
            unsafe { ffi::repo_free(repo, 1) };
        }
        // SAFETY: raw is live; repo_create copies the name.
        let repo = unsafe { ffi::repo_create(self.raw, cname.as_ptr()) };
        // Filelists extend the primary's solvables in the same repodata block
        // (REUSE_REPODATA): in a second block, writing the .solv cache rebuilds
        // the directory table with a quadratic lookup (22 s instead of 0.3 s at 70k packages).
        let extend = (ffi::REPO_EXTEND_SOLVABLES | ffi::REPO_REUSE_REPODATA) as c_int;
        for (path, flags) in [(Some(primary), 0), (filelists, extend)] {
            let Some(path) = path else { continue };
            // SAFETY: repo and fp are live for the call; the language may be null.
            self.read_into(repo, path, |repo, fp| unsafe {
                ffi::repo_add_rpmmd(repo, fp, std::ptr::null(), flags)
            })
            .with_context(|| format!("repository {name}: {} is not valid rpm-md metadata", path.display()))?;
        }
        // SAFETY: repo is live.
        unsafe { ffi::repo_internalize(repo) };
        self.prepared = false;
        if let Some(cache) = solv_cache {
            if let Err(e) = write_solv(repo, cache) {
                tracing::warn!(cache = %cache.display(), "not caching parsed metadata: {e:#}");
            }
        }
        Ok(())
    }

    /// Opens `path` (decompressing by extension) and feeds it to `add`.
    fn read_into(
        &self,
        repo: *mut ffi::Repo,
        path: &Path,
        add: impl FnOnce(*mut ffi::Repo, *mut ffi::FILE) -> c_int,
    ) -> Result<()> {
        let cpath = cstr(&path.to_string_lossy())?;
        let mode = cstr("r")?;
        // SAFETY: both strings are NUL-terminated; a null return is handled.
        let fp = unsafe { solv_xfopen(cpath.as_ptr(), mode.as_ptr()) };
        if fp.is_null() {
            bail!("opening {}: {}", path.display(), std::io::Error::last_os_error());
        }
        let r = add(repo, fp);
        // SAFETY: fp came from solv_xfopen and is closed once.
        unsafe { nix::libc::fclose(fp.cast()) };
        if r != 0 {
            // SAFETY: pool_errstr returns the pool's last error message.
            let err = unsafe { CStr::from_ptr(ffi::pool_errstr(self.raw)) }
                .to_string_lossy()
                .into_owned();
            bail!("{err}");
        }
        Ok(())
    }

    /// Number of packages loaded.
    pub fn len(&self) -> usize {
        // SAFETY: raw is live; nsolvables counts the reserved system solvables too.
        (unsafe { (*self.raw).nsolvables }.max(2) - 2) as usize
    }

    /// Whether no package is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn prepare(&mut self) {
        if !self.prepared {
            // SAFETY: raw is live; file provides must be added before the whatprovides index.
            unsafe {
                ffi::pool_addfileprovides(self.raw);
                ffi::pool_createwhatprovides(self.raw);
            }
            self.prepared = true;
        }
    }

    fn id2str(&self, id: ffi::Id) -> String {
        // SAFETY: raw is live; pool_id2str returns a string owned by the pool.
        unsafe { CStr::from_ptr(ffi::pool_id2str(self.raw, id)) }
            .to_string_lossy()
            .into_owned()
    }

    fn solvable(&self, id: ffi::Id) -> *mut ffi::Solvable {
        // SAFETY: id comes from libsolv for this pool, so it indexes the solvables array.
        unsafe { (*self.raw).solvables.add(id as usize) }
    }

    /// Solvable ids matching `spec` by name, provides, file path or name.arch.
    fn select(&self, spec: &str, flags: u32) -> Result<Queue> {
        let mut sel = Queue::new();
        let c = cstr(spec)?;
        // SAFETY: raw and sel are live; c is NUL-terminated.
        unsafe { ffi::selection_make(self.raw, &mut sel.0, c.as_ptr(), flags as c_int) };
        let mut ids = Queue::new();
        // SAFETY: raw and both queues are live.
        unsafe { ffi::selection_solvables(self.raw, &mut sel.0, &mut ids.0) };
        Ok(ids)
    }

    fn repo_name(&self, id: ffi::Id) -> String {
        // SAFETY: every solvable from a repo file has a live repo with a NUL-terminated name.
        unsafe { CStr::from_ptr((*(*self.solvable(id)).repo).name) }
            .to_string_lossy()
            .into_owned()
    }

    /// Solves `req`; on success, the packages in the order rpm would install them.
    pub fn solve(&mut self, req: &Request) -> Result<Vec<Package>> {
        self.solve_recording(req, None)
    }

    /// Like [`Pool::solve`], and also writes a libsolv testcase (`testcase.t`,
    /// the repositories, the jobs and this result) into `dir`, for `testsolv`.
    pub fn solve_recording(&mut self, req: &Request, testcase: Option<&Path>) -> Result<Vec<Package>> {
        self.prepare();
        let by = ffi::SELECTION_NAME
            | ffi::SELECTION_PROVIDES
            | ffi::SELECTION_FILELIST
            | ffi::SELECTION_DOTARCH
            | ffi::SELECTION_REL;
        let mut problems = Vec::new();

        // Excluded and pinned-elsewhere packages are taken out of consideration,
        // as dnf does with excludes: for the solver they do not exist.
        let mut hidden = BTreeSet::new();
        for pattern in &req.exclude {
            hidden.extend(
                self.select(pattern, ffi::SELECTION_NAME | ffi::SELECTION_GLOB)?
                    .as_slice()
                    .iter()
                    .copied(),
            );
        }
        let mut pinned_jobs = Vec::new();
        for (repo, names) in &req.pinned {
            for name in names {
                let ids = self.select(name, ffi::SELECTION_NAME | ffi::SELECTION_DOTARCH)?;
                let (inside, outside): (Vec<_>, Vec<_>) =
                    ids.as_slice().iter().partition(|id| &self.repo_name(**id) == repo);
                if inside.is_empty() {
                    problems.push(format!("repo-packages: no package {name} in repository {repo}"));
                }
                hidden.extend(outside);
                pinned_jobs.push(inside);
            }
        }
        for (name, evra) in &req.locked {
            let ids = self.select(name, ffi::SELECTION_NAME)?;
            let mut found = false;
            for &id in ids.as_slice() {
                let p = self.package(id);
                if format!("{}.{}", p.evr, p.arch) == *evra {
                    found = true;
                } else {
                    hidden.insert(id);
                }
            }
            if !found {
                problems.push(format!("lockfile: {name}-{evra} is not in the repositories"));
            }
        }
        // Dropped last, after the solver, on every way out of this function.
        let _considered = Considered::install(self, &hidden);

        let mut job = Queue::new();
        for spec in &req.install {
            if req.pinned.iter().any(|(_, names)| names.contains(spec)) {
                continue;
            }
            let ids = self.select(spec, by)?;
            let visible: Vec<ffi::Id> = ids
                .as_slice()
                .iter()
                .copied()
                .filter(|id| !hidden.contains(id))
                .collect();
            if visible.is_empty() {
                let why = if ids.as_slice().is_empty() {
                    "no package provides it"
                } else {
                    "every match is excluded"
                };
                problems.push(format!(
                    "package {spec} was requested but {why} for this arch and these repositories"
                ));
                continue;
            }
            pinned_jobs.push(visible);
        }
        if !problems.is_empty() {
            return Err(Unsolvable { problems }.into());
        }
        for ids in pinned_jobs {
            let mut one_of = Queue::new();
            for id in ids {
                one_of.push(id);
            }
            // SAFETY: raw is live; pool_queuetowhatprovides interns the id list.
            let what = unsafe { ffi::pool_queuetowhatprovides(self.raw, &mut one_of.0) };
            job.push((ffi::SOLVER_INSTALL | ffi::SOLVER_SOLVABLE_ONE_OF) as ffi::Id);
            job.push(what);
        }

        let solver = Solver::new(self);
        let solv = solver.raw;
        // SAFETY: solv is live.
        unsafe {
            ffi::solver_set_flag(
                solv,
                ffi::SOLVER_FLAG_IGNORE_RECOMMENDED as c_int,
                (!req.recommends) as c_int,
            )
        };
        // SAFETY: solv and job are live.
        let nproblems = unsafe { ffi::solver_solve(solv, &mut job.0) };
        if let Some(dir) = testcase {
            let cdir = cstr(&dir.to_string_lossy())?;
            // SAFETY: solv has solved; cdir is NUL-terminated; null names select the defaults.
            let ok = unsafe {
                testcase_write(
                    solv,
                    cdir.as_ptr(),
                    TESTCASE_RESULT_TRANSACTION_PROBLEMS,
                    std::ptr::null(),
                    std::ptr::null(),
                )
            };
            if ok == 0 {
                tracing::warn!(dir = %dir.display(), "libsolv could not write the testcase");
            }
        }
        let result = if nproblems > 0 {
            Err(Unsolvable {
                problems: self.describe_problems(solv, nproblems),
            }
            .into())
        } else {
            Ok(self.ordered_transaction(solv))
        };
        // The solver is freed before the considered map is detached and freed.
        drop(solver);
        result
    }

    fn describe_problems(&self, solv: *mut ffi::Solver, n: c_int) -> Vec<String> {
        let mut out = Vec::new();
        for problem in 1..=n {
            let mut rules = Queue::new();
            // SAFETY: solv is live; problem ids run from 1 to the count.
            unsafe { ffi::solver_findallproblemrules(solv, problem, &mut rules.0) };
            for &rid in rules.as_slice() {
                let (mut source, mut target, mut dep) = (0, 0, 0);
                // SAFETY: rid comes from the solver; the out-params are plain Ids.
                let kind = unsafe { ffi::solver_ruleinfo(solv, rid, &mut source, &mut target, &mut dep) };
                // SAFETY: the returned string lives in the pool's temp space until the next call.
                let text = unsafe { CStr::from_ptr(ffi::solver_problemruleinfo2str(solv, kind, source, target, dep)) }
                    .to_string_lossy()
                    .into_owned();
                // A package outside the considered map is one the treefile excluded.
                let text = match text.strip_suffix(" is disabled") {
                    Some(p) => format!("{p} is excluded (exclude-packages or repo-packages)"),
                    None => text,
                };
                // libsolv says "conflicting requests" for every job; the layering
                // jobs on one installed package can say which.
                let text = match (kind, target as u32 & (ffi::SOLVER_JOBMASK | ffi::SOLVER_SELECTMASK)) {
                    (ffi::SolverRuleinfo_SOLVER_RULE_JOB, how) if how == ffi::SOLVER_LOCK | ffi::SOLVER_SOLVABLE => {
                        format!("installed package {} is kept as it is", self.package(dep).nevra())
                    }
                    (ffi::SolverRuleinfo_SOLVER_RULE_JOB, how) if how == ffi::SOLVER_ERASE | ffi::SOLVER_SOLVABLE => {
                        format!("removing {} was requested", self.package(dep).nevra())
                    }
                    _ => text,
                };
                if !out.contains(&text) {
                    out.push(text);
                }
            }
        }
        out
    }

    fn ordered_transaction(&self, solv: *mut ffi::Solver) -> Vec<Package> {
        // SAFETY: solv is live; the transaction is freed below.
        let trans = unsafe { ffi::solver_create_transaction(solv) };
        // SAFETY: trans is live; flags 0 = the full order rpm would use.
        unsafe { ffi::transaction_order(trans, 0) };
        // SAFETY: trans is live; steps is its queue of solvable ids.
        let steps: Vec<ffi::Id> = unsafe {
            let q = &(*trans).steps;
            if q.count == 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(q.elements, q.count as usize).to_vec()
            }
        };
        // SAFETY: trans is live and freed once.
        unsafe { ffi::transaction_free(trans) };
        steps.into_iter().map(|id| self.package(id)).collect()
    }

    fn package(&self, id: ffi::Id) -> Package {
        let s = self.solvable(id);
        let mut medianr = 0;
        let mut cktype = 0;
        // SAFETY: s points at a live solvable; returned strings are copied at once.
        unsafe {
            let location = ffi::solvable_lookup_location(s, &mut medianr);
            let checksum =
                ffi::solvable_lookup_checksum(s, ffi::solv_knownid_SOLVABLE_CHECKSUM as ffi::Id, &mut cktype);
            let opt = |p: *const c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            Package {
                name: self.id2str((*s).name),
                evr: self.id2str((*s).evr),
                arch: self.id2str((*s).arch),
                repo: self.repo_name(id),
                location: opt(location),
                checksum_type: opt(ffi::solv_chksum_type2str(cktype)),
                checksum: opt(checksum),
                download_size: ffi::solvable_lookup_num(s, ffi::solv_knownid_SOLVABLE_DOWNLOADSIZE as ffi::Id, 0),
                install_size: ffi::solvable_lookup_num(s, ffi::solv_knownid_SOLVABLE_INSTALLSIZE as ffi::Id, 0),
            }
        }
    }
}

/// Writes `repo` in libsolv's binary format to a temp file beside `dest`, then renames it.
fn write_solv(repo: *mut ffi::Repo, dest: &Path) -> Result<()> {
    let dir = dest.parent().context("solv cache path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("creating a file in {}", dir.display()))?;
    let cpath = cstr(&tmp.path().to_string_lossy())?;
    let mode = cstr("w")?;
    // SAFETY: both strings are NUL-terminated; a null return is handled.
    let fp = unsafe { nix::libc::fopen(cpath.as_ptr(), mode.as_ptr()) };
    if fp.is_null() {
        bail!("opening {}: {}", tmp.path().display(), std::io::Error::last_os_error());
    }
    // SAFETY: repo is live and fp is open for writing.
    let r = unsafe { ffi::repo_write(repo, fp.cast()) };
    // SAFETY: fp is closed once; fclose flushes libc's buffer.
    let closed = unsafe { nix::libc::fclose(fp) };
    if r != 0 || closed != 0 {
        bail!("writing {}", tmp.path().display());
    }
    crate::atomic::persist(tmp, dest)
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: raw came from pool_create and is freed exactly once.
        unsafe { ffi::pool_free(self.raw) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpm_version_rules_not_debian() {
        let pool = Pool::new_rpm();
        let cases = [
            ("1.0~rc1", "1.0", Ordering::Less),
            ("1.0", "1.0^post1", Ordering::Less),
            ("1.0^post1", "1.0.1", Ordering::Less),
            ("1:1.0", "2.0", Ordering::Greater),
            ("1.0-2", "1.0-10", Ordering::Less),
            ("1.0a", "1.0", Ordering::Greater),
            ("2.36-9", "2.36-9", Ordering::Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(pool.evrcmp(a, b).unwrap(), want, "{a} vs {b}");
        }
    }

    #[test]
    fn version_is_system_libsolv() {
        assert!(libsolv_version().starts_with("0.7."), "{}", libsolv_version());
    }

    #[test]
    fn every_way_out_of_a_solve_detaches_the_considered_map() {
        let nul = Path::new("bad\0dir");
        let cases: [(&[&str], Option<&Path>, &str); 3] = [
            // select fails after the map is installed
            (&["a\0b"], None, "NUL byte"),
            // problems found before the solver exists
            (&["no-such-package"], None, "no package provides it"),
            // the testcase path fails after the solver exists
            (&[], Some(nul), "NUL byte"),
        ];
        let mut pool = Pool::new(Arch::Aarch64);
        for (install, testcase, want) in cases {
            let req = Request {
                install: install.iter().map(|s| s.to_string()).collect(),
                exclude: vec!["x*".into()],
                ..Request::default()
            };
            let e = pool.solve_recording(&req, testcase).map(|_| ()).unwrap_err();
            assert!(format!("{e:#}").contains(want), "{install:?}: {e:#}");
            // SAFETY: pool.raw is the live pool.
            assert!(unsafe { (*pool.raw).considered }.is_null(), "{install:?}");
        }
    }

    #[test]
    fn missing_metadata_file_is_named() {
        let mut pool = Pool::new(Arch::Aarch64);
        let e = pool
            .add_rpmmd("r", Path::new("/nonexistent/primary.xml.gz"), None)
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/primary.xml.gz"), "{e}");
    }
}
