//! The runtime-library closure of a program: which Debian packages ship the
//! sonames it needs, and the sonames those need in turn. Pure: the caller
//! supplies the soname index and reads each package it is asked about.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use anyhow::{Result, bail};

/// A soname some ELF file needs (DT_NEEDED), without rpm's `()(64bit)` suffix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Need {
    /// The soname, `libfoo.so.1`.
    pub soname: String,
    /// The file that needs it, for error messages.
    pub by: String,
}

/// Which Debian packages ship each soname in a library directory.
#[derive(Debug, Default)]
pub struct SonameIndex {
    by_soname: BTreeMap<String, BTreeSet<String>>,
}

/// Where a soname comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A Debian package the sample repository repackages: the walk ends there.
    Sample(&'a str),
    /// A Debian package that becomes a device repository RPM.
    Deb(&'a str),
}

impl SonameIndex {
    /// Records that `package` ships `soname`.
    pub fn add(&mut self, soname: &str, package: &str) {
        self.by_soname
            .entry(soname.to_string())
            .or_default()
            .insert(package.to_string());
    }

    /// The package to take `soname` from: one the sample repository has if any
    /// does, else a non `-dev` package (the runtime package, not the symlink
    /// for the linker), else any; ties go to the first name. `None`: nothing ships it.
    pub fn source(&self, soname: &str, sample: &BTreeSet<String>) -> Option<Source<'_>> {
        let ships = self.by_soname.get(soname)?;
        if let Some(p) = ships.iter().find(|p| sample.contains(*p)) {
            return Some(Source::Sample(p));
        }
        ships
            .iter()
            .find(|p| !p.ends_with("-dev"))
            .or_else(|| ships.first())
            .map(|p| Source::Deb(p))
    }
}

/// Walks breadth-first from `roots` and returns the Debian packages to build,
/// in the order they were reached. `needs_of(package)` reads a reached package
/// and returns the sonames its files need from other packages. Packages in
/// `sample` end the walk (the sample repository provides their sonames); a
/// soname that no package ships is an error naming it and the file needing it.
pub fn walk(
    roots: Vec<Need>,
    index: &SonameIndex,
    sample: &BTreeSet<String>,
    mut needs_of: impl FnMut(&str) -> Result<Vec<Need>>,
) -> Result<Vec<String>> {
    let mut queue: VecDeque<Need> = roots.into();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut reached: Vec<String> = Vec::new();
    while let Some(need) = queue.pop_front() {
        if !done.insert(need.soname.clone()) {
            continue;
        }
        match index.source(&need.soname, sample) {
            None => bail!(
                "{} needs {}, which no .deb ships in a multiarch library directory \
                 and no sample package provides",
                need.by,
                need.soname
            ),
            Some(Source::Sample(_)) => {}
            Some(Source::Deb(package)) => {
                if !reached.iter().any(|r| r == package) {
                    reached.push(package.to_string());
                    let mut next = needs_of(package)?;
                    next.sort();
                    queue.extend(next);
                }
            }
        }
    }
    Ok(reached)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(soname: &str, by: &str) -> Need {
        Need {
            soname: soname.into(),
            by: by.into(),
        }
    }

    /// An index and the sonames each package's files need, from `(package, ships, needs)`.
    fn world(packages: &[(&str, &[&str], &[&str])]) -> (SonameIndex, BTreeMap<String, Vec<Need>>) {
        let mut index = SonameIndex::default();
        let mut needs = BTreeMap::new();
        for (package, ships, wants) in packages {
            for s in *ships {
                index.add(s, package);
            }
            let by = format!("/usr/lib/{package}.so");
            needs.insert(package.to_string(), wants.iter().map(|w| need(w, &by)).collect());
        }
        (index, needs)
    }

    #[test]
    fn walks_breadth_first_stops_at_sample_packages_and_prefers_runtime_packages() {
        let (index, needs) = world(&[
            ("libc6", &["libc.so.6", "libm.so.6"], &[]),
            (
                "libostree-1-1",
                &["libostree-1.so.1"],
                &["libglib-2.0.so.0", "libc.so.6"],
            ),
            ("libglib2.0-0", &["libglib-2.0.so.0"], &["libpcre2-8.so.0", "libc.so.6"]),
            ("libglib2.0-dev", &["libglib-2.0.so.0"], &[]),
            ("libpcre2-8-0", &["libpcre2-8.so.0"], &[]),
            ("libzstd1", &["libzstd.so.1"], &["libc.so.6"]),
            ("unrelated1", &["libunrelated.so.1"], &["libnothing.so.9"]),
        ]);
        let sample = BTreeSet::from(["libc6".to_string()]);
        let mut asked = Vec::new();
        let roots = vec![
            need("libzstd.so.1", "arbor"),
            need("libostree-1.so.1", "arbor"),
            need("libc.so.6", "arbor"),
        ];
        let got = walk(roots, &index, &sample, |p| {
            asked.push(p.to_string());
            Ok(needs[p].clone())
        })
        .unwrap();
        assert_eq!(got, ["libzstd1", "libostree-1-1", "libglib2.0-0", "libpcre2-8-0"]);
        assert_eq!(asked, got, "each reached package is read once, sample packages never");
    }

    #[test]
    fn a_soname_nobody_ships_names_it_and_the_file_needing_it() {
        let (index, needs) = world(&[("liba1", &["liba.so.1"], &["libgone.so.3"])]);
        let e = walk(vec![need("liba.so.1", "/bin/prog")], &index, &BTreeSet::new(), |p| {
            Ok(needs[p].clone())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("libgone.so.3") && e.contains("/usr/lib/liba1.so"), "{e}");
        // The same soname provided by a sample package is no error.
        let (mut index, _) = world(&[("liba1", &["liba.so.1"], &[])]);
        index.add("libgone.so.3", "libgone3");
        let sample = BTreeSet::from(["libgone3".to_string()]);
        let got = walk(vec![need("liba.so.1", "/bin/prog")], &index, &sample, |p| {
            Ok(needs[p].clone())
        })
        .unwrap();
        assert_eq!(got, ["liba1"]);
    }

    #[test]
    fn sources_prefer_sample_then_runtime_then_name() {
        let mut index = SonameIndex::default();
        for (soname, package) in [
            ("libx.so.1", "libx-dev"),
            ("libx.so.1", "libx1"),
            ("liby.so.1", "liby-dev"),
            ("libz.so.1", "libz1b"),
            ("libz.so.1", "libz1a"),
            ("libz.so.1", "sample-z"),
        ] {
            index.add(soname, package);
        }
        let sample = BTreeSet::from(["sample-z".to_string()]);
        assert_eq!(index.source("libx.so.1", &sample), Some(Source::Deb("libx1")));
        assert_eq!(index.source("liby.so.1", &sample), Some(Source::Deb("liby-dev")));
        assert_eq!(index.source("libz.so.1", &sample), Some(Source::Sample("sample-z")));
        assert_eq!(index.source("libz.so.1", &BTreeSet::new()), Some(Source::Deb("libz1a")));
        assert_eq!(index.source("libw.so.1", &sample), None);
    }
}
