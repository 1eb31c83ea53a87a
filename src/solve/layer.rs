//! Layering on a device: new packages resolved against the base tree's
//! installed packages, which stay exactly as they are, the way
//! `rpm-ostree install` and `rpm-ostree override remove|replace` behave.

use std::collections::BTreeSet;
use std::ffi::c_int;

use anyhow::{Result, bail};
use libsolv_sys::ffi;
use serde::Serialize;

use super::{Package, Pool, Queue, Solver, Unsolvable};

/// What to layer onto a base tree.
#[derive(Debug, Clone, Default)]
pub struct LayerRequest {
    /// Package names, provides, file paths, or `name-[epoch:]version-release.arch`
    /// (for instance of a local rpm) to install.
    pub install: Vec<String>,
    /// Names of installed packages to remove.
    pub erase: Vec<String>,
    /// Install weak dependencies (Recommends) of the new packages.
    pub recommends: bool,
}

/// The change a layering request makes to the base tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerSolution {
    /// Packages to add, none of them already installed, in the order rpm would
    /// install them.
    pub install: Vec<Package>,
    /// NEVRAs of the installed packages removed, sorted.
    pub erase: Vec<String>,
}

impl Pool {
    /// Solves `req` against the installed packages ([`Pool::add_installed`])
    /// and the other repositories. Installed packages are never upgraded,
    /// downgraded or removed, except those named in `req.erase`; a package in
    /// `erase` whose name is also installed from elsewhere (a local rpm's NEVRA
    /// in `install`) is replaced. Errors: a requested package that is already
    /// installed, an erase of a package that is not, and [`Unsolvable`] with
    /// libsolv's problems for missing dependencies, conflicts with installed
    /// packages, and installed packages that still require an erased one.
    pub fn solve_layered(&mut self, req: &LayerRequest) -> Result<LayerSolution> {
        self.prepare();
        let installed = self.installed_ids();
        let mut erase = BTreeSet::new();
        for name in &req.erase {
            let before = erase.len();
            erase.extend(installed.iter().copied().filter(|id| self.solvable_name(*id) == *name));
            if erase.len() == before {
                bail!("cannot remove {name}: it is not installed");
            }
        }

        let by = ffi::SELECTION_NAME
            | ffi::SELECTION_PROVIDES
            | ffi::SELECTION_FILELIST
            | ffi::SELECTION_DOTARCH
            | ffi::SELECTION_REL
            | ffi::SELECTION_CANON;
        let mut problems = Vec::new();
        let mut job = Queue::new();
        for spec in &req.install {
            let ids = self.select(spec, by)?;
            let (old, new): (Vec<ffi::Id>, Vec<ffi::Id>) = ids.as_slice().iter().partition(|id| installed.contains(id));
            if let Some(id) = old.iter().find(|id| !erase.contains(*id)) {
                bail!("package {spec} is already installed ({})", self.package(*id).nevra());
            }
            if new.is_empty() {
                problems.push(format!(
                    "package {spec} was requested but no package provides it for this arch and these repositories"
                ));
                continue;
            }
            let mut one_of = Queue::new();
            for id in new {
                one_of.push(id);
            }
            // SAFETY: raw is live; pool_queuetowhatprovides interns the id list.
            let what = unsafe { ffi::pool_queuetowhatprovides(self.raw, &mut one_of.0) };
            job.push((ffi::SOLVER_INSTALL | ffi::SOLVER_SOLVABLE_ONE_OF) as ffi::Id);
            job.push(what);
        }
        if !problems.is_empty() {
            return Err(Unsolvable { problems }.into());
        }
        // Locked, an installed package stays installed at its version: the solver
        // can neither update it to satisfy a new dependency nor remove it.
        for &id in &installed {
            let how = if erase.contains(&id) {
                ffi::SOLVER_ERASE
            } else {
                ffi::SOLVER_LOCK
            };
            job.push((how | ffi::SOLVER_SOLVABLE) as ffi::Id);
            job.push(id);
        }

        let solver = Solver::new(self);
        let solv = solver.raw;
        // SAFETY: solv is live. Without ALLOW_UNINSTALL (the default, set here so it
        // is plain) the solver removes nothing that no job names.
        unsafe {
            ffi::solver_set_flag(
                solv,
                ffi::SOLVER_FLAG_IGNORE_RECOMMENDED as c_int,
                (!req.recommends) as c_int,
            );
            ffi::solver_set_flag(solv, ffi::SOLVER_FLAG_ALLOW_UNINSTALL as c_int, 0);
        }
        // SAFETY: solv and job are live.
        let nproblems = unsafe { ffi::solver_solve(solv, &mut job.0) };
        if nproblems > 0 {
            return Err(Unsolvable {
                problems: self.describe_problems(solv, nproblems),
            }
            .into());
        }
        let (install, removed) = self.layered_transaction(solv, &installed);
        if let Some(extra) = removed.iter().find(|id| !erase.contains(*id)) {
            bail!(
                "the solution would remove {}, which was not asked for",
                self.package(*extra).nevra()
            );
        }
        let mut erase: Vec<String> = erase.iter().map(|id| self.package(*id).nevra()).collect();
        erase.sort();
        Ok(LayerSolution { install, erase })
    }

    /// The installed packages' solvable ids.
    fn installed_ids(&self) -> BTreeSet<ffi::Id> {
        // SAFETY: raw is live; installed is null or a live repo of this pool.
        let repo = unsafe { (*self.raw).installed };
        if repo.is_null() {
            return BTreeSet::new();
        }
        // SAFETY: repo is live; its solvables lie in start..end, interleaved with
        // those of other repos only if solvables were freed, hence the check.
        let (start, end) = unsafe { ((*repo).start, (*repo).end) };
        (start..end)
            // SAFETY: ids in start..end index the pool's solvables.
            .filter(|id| unsafe { (*self.solvable(*id)).repo } == repo)
            .collect()
    }

    fn solvable_name(&self, id: ffi::Id) -> String {
        // SAFETY: id is a solvable of this pool.
        self.id2str(unsafe { (*self.solvable(id)).name })
    }

    /// The packages to install, in rpm's order, and the installed ones removed.
    fn layered_transaction(
        &self,
        solv: *mut ffi::Solver,
        installed: &BTreeSet<ffi::Id>,
    ) -> (Vec<Package>, Vec<ffi::Id>) {
        let steps = |trans: *mut ffi::Transaction| -> Vec<ffi::Id> {
            // SAFETY: trans is live; steps is its queue of solvable ids.
            unsafe {
                let q = &(*trans).steps;
                if q.count == 0 {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(q.elements, q.count as usize).to_vec()
                }
            }
        };
        // SAFETY: solv is live and has solved; the transaction is freed below.
        let trans = unsafe { ffi::solver_create_transaction(solv) };
        // Before ordering, the steps hold every installed package that goes,
        // including those replaced by a package of the same name.
        let removed = steps(trans).into_iter().filter(|id| installed.contains(id)).collect();
        // SAFETY: trans is live; flags 0 = the full order rpm would use.
        unsafe { ffi::transaction_order(trans, 0) };
        let install = steps(trans)
            .into_iter()
            .filter(|id| !installed.contains(id))
            .map(|id| self.package(id))
            .collect();
        // SAFETY: trans is live and freed once.
        unsafe { ffi::transaction_free(trans) };
        (install, removed)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use rpm::{Dependency, FileOptions, PackageBuilder};

    use super::*;
    use crate::arch::Arch;
    use crate::rpm::blob::read_package;

    fn build(dir: &Path, name: &str, version: &str, f: impl FnOnce(&mut PackageBuilder)) -> PathBuf {
        let mut b = PackageBuilder::new(name, version, "MIT", "noarch", "a package built by a test");
        b.release("1");
        f(&mut b);
        let path = dir.join(format!("{name}-{version}.rpm"));
        b.build().unwrap().write_file(&path).unwrap();
        path
    }

    /// A pool with an installed base, a repository and one local rpm.
    fn pool(dir: &Path) -> (Pool, PathBuf) {
        let base = [
            build(dir, "bash", "5.0", |b| {
                b.with_file_contents(b"#!".to_vec(), FileOptions::new("/bin/sh"))
                    .unwrap();
            }),
            build(dir, "libfoo", "1.0", |_| {}),
            build(dir, "foo", "1.0", |b| {
                b.requires(Dependency::any("libfoo"));
            }),
            build(dir, "app", "1.0", |b| {
                b.requires(Dependency::any("foo"));
            }),
            build(dir, "old", "1.0", |_| {}),
        ];
        let installed: Vec<_> = base.iter().map(|p| read_package(p).unwrap().1).collect();
        let repo = [
            build(dir, "needs-libfoo", "1.0", |b| {
                b.requires(Dependency::any("libfoo"));
            }),
            build(dir, "needs-dep", "1.0", |b| {
                b.requires(Dependency::greater_eq("dep", "1.0"));
            }),
            build(dir, "dep", "1.0", |_| {}),
            build(dir, "clash", "1.0", |b| {
                b.conflicts(Dependency::any("foo"));
            }),
            build(dir, "broken", "1.0", |b| {
                b.requires(Dependency::any("missing"));
            }),
            build(dir, "script", "1.0", |b| {
                b.requires(Dependency::any("/bin/sh"));
            }),
            build(dir, "libfoo", "2.0", |_| {}),
            build(dir, "wants-new-libfoo", "1.0", |b| {
                b.requires(Dependency::greater_eq("libfoo", "2.0"));
            }),
        ];
        let local_dir = dir.join("local");
        std::fs::create_dir(&local_dir).unwrap();
        let local = build(&local_dir, "foo", "2.0", |b| {
            b.requires(Dependency::any("libfoo"));
        });
        let mut pool = Pool::new(Arch::Aarch64);
        pool.add_installed(&installed).unwrap();
        pool.add_local_rpms("repo", &repo).unwrap();
        pool.add_local_rpms("@commandline", std::slice::from_ref(&local))
            .unwrap();
        (pool, local)
    }

    #[test]
    fn layering_keeps_the_base_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let (mut pool, local) = pool(dir.path());
        // (install, erase, Ok((installed NEVRAs in order, erased NEVRAs)) or Err(words the error names))
        type Want = Result<(&'static [&'static str], &'static [&'static str]), &'static [&'static str]>;
        let cases: [(&[&str], &[&str], Want); 11] = [
            (&["needs-libfoo"], &[], Ok((&["needs-libfoo-1.0-1.noarch"], &[]))),
            (
                &["needs-dep"],
                &[],
                Ok((&["dep-1.0-1.noarch", "needs-dep-1.0-1.noarch"], &[])),
            ),
            (&["script"], &[], Ok((&["script-1.0-1.noarch"], &[]))),
            (
                &["foo"],
                &[],
                Err(&["package foo is already installed (foo-1.0-1.noarch)"]),
            ),
            (
                &["clash"],
                &[],
                Err(&["clash-1.0-1.noarch conflicts with foo provided by foo-1.0-1.noarch"]),
            ),
            (&["broken"], &[], Err(&["broken-1.0-1.noarch", "missing"])),
            (
                &["wants-new-libfoo"],
                &[],
                Err(&["wants-new-libfoo-1.0-1.noarch", "libfoo"]),
            ),
            (
                &[],
                &["foo"],
                Err(&[
                    "app-1.0-1.noarch requires foo",
                    "removing foo-1.0-1.noarch was requested",
                ]),
            ),
            (&[], &["nosuch"], Err(&["cannot remove nosuch: it is not installed"])),
            (&[], &["old"], Ok((&[], &["old-1.0-1.noarch"]))),
            (
                &["foo-2.0-1.noarch"],
                &["foo"],
                Ok((&["foo-2.0-1.noarch"], &["foo-1.0-1.noarch"])),
            ),
        ];
        for (install, erase, want) in cases {
            let req = LayerRequest {
                install: install.iter().map(|s| s.to_string()).collect(),
                erase: erase.iter().map(|s| s.to_string()).collect(),
                recommends: false,
            };
            let got = pool.solve_layered(&req);
            match (want, got) {
                (Ok((want_install, want_erase)), Ok(sol)) => {
                    let nevras: Vec<_> = sol.install.iter().map(Package::nevra).collect();
                    assert_eq!(nevras, want_install, "{install:?} {erase:?}");
                    assert_eq!(sol.erase, want_erase, "{install:?} {erase:?}");
                }
                (Err(words), Err(e)) => {
                    let msg = format!("{e:#}");
                    for w in words {
                        assert!(msg.contains(w), "{install:?} {erase:?}: {w:?} not in {msg}");
                    }
                }
                (want, got) => panic!("{install:?} {erase:?}: want {want:?}, got {got:?}"),
            }
        }

        // A local rpm maps back to its file through `location`.
        let req = LayerRequest {
            install: vec!["foo-2.0-1.noarch".into()],
            erase: vec!["foo".into()],
            recommends: false,
        };
        let sol = pool.solve_layered(&req).unwrap();
        assert_eq!(sol.install[0].repo, "@commandline");
        assert_eq!(Path::new(&sol.install[0].location), local);
        assert_eq!(sol.install[0].checksum_type, "sha256");
        assert_eq!(sol.install[0].download_size, std::fs::metadata(&local).unwrap().len());
    }

    #[test]
    fn unsolvable_names_the_package_and_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut pool, _) = pool(dir.path());
        let req = LayerRequest {
            install: vec!["broken".into()],
            ..LayerRequest::default()
        };
        let e = pool.solve_layered(&req).unwrap_err();
        let u = e.downcast_ref::<Unsolvable>().expect("an Unsolvable");
        assert!(u.problems.iter().any(|p| p.contains("broken")), "{:?}", u.problems);
    }
}
