//! The device repository: a cross-built arbor binary for a board, as an RPM,
//! plus one RPM per Debian package in its runtime-library closure, taken from
//! the very .deb files the binary was linked against (`scripts/cross` keeps
//! them in `target/cross/debs-<debarch>`).
//!
//! Libraries the sample repository already packages (glibc from libc6, …) end
//! the closure: a tree composed from both repositories gets them from there.
//! Every Provides and Requires is derived from the ELF files, never listed by
//! hand, so the closure is exactly what the dynamic linker will look for.

pub mod closure;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::build::{self, Entries, Entry, Kind};
use crate::debs::{self, DebContents, DebControl, DebReader, RpmEvr};
use crate::manifest::{self, Manifest, applies};
use crate::{Summary, output};
use arbor::arch::Arch;
use arbor::parallel;
use arbor::rpm::elfdeps;
use closure::{Need, SonameIndex};

/// Bump when the device repository's output changes for the same inputs.
const DEVICE_GENERATOR_VERSION: u32 = 1;
/// Name of the package holding the arbor binary.
pub const ARBOR_PACKAGE: &str = "arbor";

/// How to build a device repository.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// The board's arch (aarch64 or armv7hl).
    pub arch: Arch,
    /// The cross-built arbor binary.
    pub arbor: PathBuf,
    /// Directory of the target arch's .deb files the binary was linked against.
    pub debs: PathBuf,
    /// The sample package manifests (`samples/packages`): the Debian packages
    /// they repackage are provided by the sample repository.
    pub sample_manifests: PathBuf,
    /// Manifests of more packages for the device (`samples/device`: Debian's
    /// rpm), made from the same .debs; their libraries join the closure.
    pub device_manifests: Option<PathBuf>,
    /// Output repository directory (replaced as a whole).
    pub out: PathBuf,
    /// Rebuild even when the inputs are unchanged.
    pub force: bool,
}

/// The default output directory for `arch`, relative to the source tree.
pub fn default_out(arch: Arch) -> PathBuf {
    PathBuf::from("target/device-repo").join(arch.rpm_name())
}

/// A summary with the sizes a benchmark reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What the build produced.
    #[serde(flatten)]
    pub summary: Summary,
    /// Content bytes of the arbor package.
    pub arbor_bytes: u64,
    /// Content bytes of the library packages: the closure's size on the device.
    pub closure_bytes: u64,
    /// Number of library packages.
    pub closure_packages: usize,
}

impl From<Summary> for Report {
    fn from(summary: Summary) -> Report {
        let (arbor, libs): (Vec<_>, Vec<_>) = summary.packages.iter().partition(|p| p.name == ARBOR_PACKAGE);
        Report {
            arbor_bytes: arbor.iter().map(|p| p.content_bytes).sum(),
            closure_bytes: libs.iter().map(|p| p.content_bytes).sum(),
            closure_packages: libs.len(),
            summary,
        }
    }
}

/// Builds the device repository unless it is up to date; returns what is there.
pub fn ensure(opts: &DeviceOptions) -> Result<Summary> {
    let arch = opts.arch;
    let (Some(multiarch), Some(_)) = (arch.multiarch(), arch.elf_machine()) else {
        bail!("a device repository is for a machine arch, not {arch}");
    };
    let out = std::path::absolute(&opts.out).with_context(|| format!("resolving {}", opts.out.display()))?;
    let binary =
        std::fs::read(&opts.arbor).with_context(|| format!("reading the arbor binary {}", opts.arbor.display()))?;
    check_machine(&opts.arbor, &binary, arch)?;
    let manifests = manifest::load_dir(&opts.sample_manifests)?;
    let sample = sample_debs(&manifests, arch);
    let extra: Vec<manifest::Loaded> = match &opts.device_manifests {
        Some(dir) => manifest::load_dir(dir)?
            .into_iter()
            .filter(|l| l.manifest.arches.contains(&arch))
            .collect(),
        None => Vec::new(),
    };
    let deb_files = list_debs(&opts.debs)?;
    let digest = input_digest(opts, &binary, &deb_files, &sample, &extra)?;
    if let Some(existing) = (!opts.force).then(|| output::up_to_date(&out, &digest)).flatten() {
        tracing::info!(out = %out.display(), "device repository is up to date");
        return Ok(existing);
    }

    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let source_date = output::source_date();
    let (index, debs) = index_debs(&deb_files, arch, jobs)?;
    tracing::info!(debs = debs.len(), arch = %arch, "indexed sonames");

    // The walk reads each reached package once; its entries are what gets packaged.
    let reader = DebReader::default();
    let mut libraries: BTreeMap<String, (DebControl, Entries)> = BTreeMap::new();
    let mut roots = elf_needs_of_file(&opts.arbor.display().to_string(), &binary, arch)?;
    // The device manifests' packages, from the same .debs: their ELF files' needs are roots too.
    let inputs = build::Inputs {
        deb_cache: &opts.debs,
        debs: &reader,
        source_date,
        local: Some(&debs),
    };
    let mut extra_packages = Vec::new();
    for l in &extra {
        let (entries, evr, _) = build::collect(l, arch, &inputs)
            .with_context(|| format!("building device package {} from {}", l.manifest.name, l.file.display()))?;
        roots.extend(elf_needs(
            &entries,
            arch,
            &format!("{} ({})", l.manifest.name, l.file.display()),
        )?);
        extra_packages.push((l.manifest.clone(), evr, entries));
    }
    let order = closure::walk(roots, &index, &sample, |package| {
        let (path, control) = &debs[package];
        let contents = reader.get(path)?;
        let entries = library_entries(&contents, multiarch, source_date)
            .with_context(|| format!("packaging {package} from {}", path.display()))?;
        let needs = elf_needs(&entries, arch, &format!("{package} ({})", path.display()))?;
        libraries.insert(package.to_string(), (control.clone(), entries));
        Ok(needs)
    })
    .with_context(|| {
        format!(
            "finding the libraries of {} in {}",
            opts.arbor.display(),
            opts.debs.display()
        )
    })?;
    tracing::info!(packages = ?order, "runtime-library closure");

    let staging = output::Staging::new(&out, "device-repo", source_date)?;
    let mut jobs_list: Vec<(Manifest, RpmEvr, Entries)> = vec![arbor_package(arch, binary, source_date)];
    jobs_list.extend(extra_packages);
    for (package, (control, entries)) in libraries {
        let evr = debs::deb_to_rpm_evr(&control.version).with_context(|| format!("Debian package {package}"))?;
        jobs_list.push((library_manifest(&control, arch), evr, entries));
    }
    let vars = build::arch_vars(arch);
    let packages = parallel::map_bounded(&jobs_list, jobs, |(m, evr, entries)| {
        let built = build::assemble(m, evr, entries, &vars, arch, source_date)
            .with_context(|| format!("building device package {} for {arch}", m.name))?;
        staging.write_package(built, &m.name, arch)
    })?;
    staging.finish("device repository", digest, packages)
}

/// Refuses anything but an ELF file for `arch`.
fn check_machine(path: &Path, bytes: &[u8], arch: Arch) -> Result<()> {
    if !bytes.starts_with(b"\x7fELF") {
        bail!("{} is not an ELF file", path.display());
    }
    match elfdeps::elf_arch(bytes) {
        Some(a) if a.elf_machine() == arch.elf_machine() => Ok(()),
        Some(a) => bail!("{} is a program for {a}, not {arch}", path.display()),
        None => bail!("{} is an ELF file for another machine, not {arch}", path.display()),
    }
}

/// The Debian packages the sample repository repackages for `arch`.
fn sample_debs(manifests: &[manifest::Loaded], arch: Arch) -> BTreeSet<String> {
    manifests
        .iter()
        .filter(|l| l.manifest.arches.contains(&arch))
        .flat_map(|l| &l.manifest.from_deb)
        .filter(|d| applies(&d.arches, arch) && d.deb_arch.as_deref().is_none_or(|a| a == arch.deb_name()))
        .map(|d| d.package.clone())
        .collect()
}

/// The `*.deb` files in `dir`, sorted.
fn list_debs(dir: &Path) -> Result<Vec<PathBuf>> {
    let ctx = || format!("listing the .deb files in {}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(ctx)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(ctx)?;
    files.retain(|p| p.extension().is_some_and(|e| e == "deb") && p.is_file());
    files.sort();
    if files.is_empty() {
        bail!(
            "no .deb files in {} (scripts/cross downloads them into target/cross/debs-<debarch>)",
            dir.display()
        );
    }
    Ok(files)
}

/// Digest of the generators, the arch, arbor's version, the binary, every .deb
/// that may be used, and the packages the sample repository provides.
fn input_digest(
    opts: &DeviceOptions,
    binary: &[u8],
    debs: &[PathBuf],
    sample: &BTreeSet<String>,
    extra: &[manifest::Loaded],
) -> Result<String> {
    let mut h = Sha256::new();
    h.update(crate::GENERATOR_VERSION.to_le_bytes());
    h.update(DEVICE_GENERATOR_VERSION.to_le_bytes());
    h.update(std::env::var("SOURCE_DATE_EPOCH").unwrap_or_default());
    h.update(opts.arch.rpm_name());
    h.update(arbor::VERSION);
    h.update(Sha256::digest(binary));
    for deb in debs {
        h.update(deb.file_name().unwrap_or_default().as_encoded_bytes());
        h.update(debs::sha256_file(deb)?);
    }
    for s in sample {
        h.update(s.as_bytes());
        h.update([0]);
    }
    for l in extra {
        h.update(l.file.file_name().unwrap_or_default().as_encoded_bytes());
        h.update(std::fs::read(&l.file).with_context(|| format!("reading {}", l.file.display()))?);
    }
    Ok(hex::encode(h.finalize()))
}

/// The .debs for the arch by Debian package name: file and control fields.
type DebsByName = BTreeMap<String, (PathBuf, DebControl)>;

/// Reads the control fields of every .deb and indexes the sonames of those for `arch`.
fn index_debs(files: &[PathBuf], arch: Arch, jobs: usize) -> Result<(SonameIndex, DebsByName)> {
    let multiarch = arch.multiarch().context("arch without a multiarch directory")?;
    let controls = parallel::map_bounded(files, jobs, |f| debs::control(f))?;
    let mut debs = DebsByName::new();
    for (file, control) in files.iter().zip(controls) {
        if control.architecture != arch.deb_name() {
            continue;
        }
        if let Some((other, _)) = debs.get(&control.package) {
            bail!(
                "two .debs of Debian package {}: {} and {}",
                control.package,
                other.display(),
                file.display()
            );
        }
        debs.insert(control.package.clone(), (file.clone(), control));
    }
    let wanted: Vec<(&String, &PathBuf)> = debs.iter().map(|(p, (f, _))| (p, f)).collect();
    let listings = parallel::map_bounded(&wanted, jobs, |(_, f)| debs::list_files(f))?;
    let mut index = SonameIndex::default();
    for ((package, _), paths) in wanted.iter().zip(listings) {
        for p in &paths {
            if let Some(soname) = soname_in_libdir(p, multiarch) {
                index.add(soname, package);
            }
        }
    }
    Ok((index, debs))
}

/// `NAME` for `lib/<multiarch>/NAME` and `usr/lib/<multiarch>/NAME` (directly in the directory).
fn soname_in_libdir<'a>(path: &'a str, multiarch: &str) -> Option<&'a str> {
    let rest = path.strip_prefix("usr/").unwrap_or(path);
    let name = rest.strip_prefix("lib/")?.strip_prefix(multiarch)?.strip_prefix('/')?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// Where a .deb path goes in the device repository: everything in and under
/// `lib/<multiarch>` and `usr/lib/<multiarch>` to `/usr/lib/<multiarch>` (the
/// composed tree's /lib is a symlink to usr/lib, so nothing may live under
/// /lib); `None` for the rest.
fn usr_lib_path(path: &str, multiarch: &str) -> Option<String> {
    let rest = path.strip_prefix("usr/").unwrap_or(path);
    let under = rest.strip_prefix("lib/")?.strip_prefix(multiarch)?;
    (under.is_empty() || under.starts_with('/')).then(|| format!("/usr/lib/{multiarch}{under}"))
}

/// The entries of a library package: the library directories' contents, moved under /usr.
fn library_entries(contents: &DebContents, multiarch: &str, source_date: u32) -> Result<Entries> {
    let mut entries = Entries::new();
    for e in &contents.entries {
        if let Some(target) = usr_lib_path(&e.path, multiarch) {
            let entry = Entry::from_deb(e, &target, source_date);
            build::insert(&mut entries, target, entry)?;
        }
    }
    Ok(entries)
}

/// The sonames the ELF files of a package need and it does not provide itself
/// (what its RPM will require); every ELF file must be for `arch`.
fn elf_needs(entries: &Entries, arch: Arch, package: &str) -> Result<Vec<Need>> {
    let mut provides = BTreeSet::new();
    let mut needs = Vec::new();
    for (path, e) in entries {
        let Kind::File(bytes) = e.kind() else { continue };
        if !bytes.starts_with(b"\x7fELF") {
            continue;
        }
        let by = format!("{path} in {package}");
        check_machine(Path::new(&by), bytes, arch)?;
        let Some(d) = elfdeps::scan(bytes) else { continue };
        provides.extend(
            d.provides
                .iter()
                .filter_map(|p| p.strip_suffix(arch.soname_suffix()))
                .map(str::to_string),
        );
        needs.extend(needs_of_deps(&by, &d.requires, arch)?);
    }
    needs.retain(|n| !provides.contains(&n.soname));
    Ok(needs)
}

/// DT_NEEDED of one ELF file (empty for a static one).
fn elf_needs_of_file(by: &str, bytes: &[u8], arch: Arch) -> Result<Vec<Need>> {
    match elfdeps::scan(bytes) {
        Some(d) => needs_of_deps(by, &d.requires, arch),
        None => Ok(Vec::new()),
    }
}

/// rpm's soname requirements (`libfoo.so.1()(64bit)`) as plain sonames.
fn needs_of_deps(by: &str, requires: &[String], arch: Arch) -> Result<Vec<Need>> {
    requires
        .iter()
        .map(|r| {
            let soname = r
                .strip_suffix(arch.soname_suffix())
                .with_context(|| format!("{by}: dependency {r:?} is not a {arch} soname"))?;
            Ok(Need {
                soname: soname.to_string(),
                by: by.to_string(),
            })
        })
        .collect()
}

/// arbor's systemd unit for `arbor health` after every boot (busybox-init trees use sample-device-init's hook).
const HEALTH_UNIT: &str = include_str!("../../../dist/systemd/arbor-health.service");

/// The arbor package: the binary at /usr/bin/arbor, version `arbor --version`
/// prints, and the `arbor health` unit, enabled.
fn arbor_package(arch: Arch, binary: Vec<u8>, source_date: u32) -> (Manifest, RpmEvr, Entries) {
    let m = Manifest {
        name: ARBOR_PACKAGE.into(),
        summary: "Compose and update OSTree trees for ARM boards".into(),
        license: "Apache-2.0 OR MIT".into(),
        arches: vec![arch],
        elf_deps: true,
        ..Manifest::default()
    };
    let evr = RpmEvr {
        epoch: None,
        version: arbor::VERSION.into(),
        release: "1".into(),
    };
    let mut entries = Entries::new();
    entries.insert(
        "/usr/bin/arbor".into(),
        Entry::synthetic(Kind::File(Arc::new(binary)), 0o755, source_date),
    );
    entries.insert(
        "/usr/lib/systemd/system/arbor-health.service".into(),
        Entry::synthetic(
            Kind::File(Arc::new(HEALTH_UNIT.as_bytes().to_vec())),
            0o644,
            source_date,
        ),
    );
    entries.insert(
        "/usr/lib/systemd/system/multi-user.target.wants/arbor-health.service".into(),
        Entry::synthetic(Kind::Symlink("../arbor-health.service".into()), 0o777, source_date),
    );
    (m, evr, entries)
}

/// A library package named like its Debian package.
fn library_manifest(control: &DebControl, arch: Arch) -> Manifest {
    Manifest {
        name: control.package.clone(),
        summary: format!("The runtime libraries of Debian's {} for arbor", control.package),
        license: format!("see the copyright file of Debian's {}", control.package),
        arches: vec![arch],
        elf_deps: true,
        ..Manifest::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_directories_move_under_usr() {
        let ma = "aarch64-linux-gnu";
        let cases = [
            (
                "lib/aarch64-linux-gnu/libz.so.1",
                Some("/usr/lib/aarch64-linux-gnu/libz.so.1"),
            ),
            (
                "usr/lib/aarch64-linux-gnu/libz.so.1",
                Some("/usr/lib/aarch64-linux-gnu/libz.so.1"),
            ),
            ("lib/aarch64-linux-gnu", Some("/usr/lib/aarch64-linux-gnu")),
            (
                "usr/lib/aarch64-linux-gnu/gio/modules/libx.so",
                Some("/usr/lib/aarch64-linux-gnu/gio/modules/libx.so"),
            ),
            ("lib/aarch64-linux-gnux/libz.so.1", None),
            ("lib/arm-linux-gnueabihf/libz.so.1", None),
            ("lib/ld-linux-aarch64.so.1", None),
            ("usr/share/doc/zlib1g/copyright", None),
            ("usr/lib/libz.so.1", None),
            ("usr/usr/lib/aarch64-linux-gnu/libz.so.1", None),
        ];
        for (path, want) in cases {
            assert_eq!(usr_lib_path(path, ma).as_deref(), want, "{path}");
        }
        let sonames = [
            ("lib/aarch64-linux-gnu/libz.so.1", Some("libz.so.1")),
            ("usr/lib/aarch64-linux-gnu/libz.so.1", Some("libz.so.1")),
            ("usr/lib/aarch64-linux-gnu/gio/modules/libx.so", None),
            ("usr/lib/aarch64-linux-gnu/", None),
            ("usr/lib/aarch64-linux-gnu", None),
            ("lib/libz.so.1", None),
        ];
        for (path, want) in sonames {
            assert_eq!(soname_in_libdir(path, ma), want, "{path}");
        }
    }

    #[test]
    fn library_entries_keep_only_the_library_directories_and_reject_doubles() {
        let file = |path: &str| debs::DebEntry {
            path: path.into(),
            kind: debs::DebKind::File(Arc::new(b"not elf".to_vec())),
            mode: 0o644,
            user: "root".into(),
            group: "root".into(),
            mtime: 0,
        };
        let contents = DebContents {
            entries: vec![
                file("lib/arm-linux-gnueabihf/liba.so.1"),
                file("usr/lib/arm-linux-gnueabihf/b/plugin.so"),
                file("usr/share/doc/liba1/copyright"),
            ],
        };
        let got = library_entries(&contents, "arm-linux-gnueabihf", 0).unwrap();
        let paths: Vec<&str> = got.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "/usr/lib/arm-linux-gnueabihf/b/plugin.so",
                "/usr/lib/arm-linux-gnueabihf/liba.so.1"
            ]
        );
        let twice = DebContents {
            entries: vec![
                file("lib/arm-linux-gnueabihf/liba.so.1"),
                file("usr/lib/arm-linux-gnueabihf/liba.so.1"),
            ],
        };
        let Err(e) = library_entries(&twice, "arm-linux-gnueabihf", 0) else {
            panic!("a path shipped under both lib/ and usr/lib/ was accepted");
        };
        let e = e.to_string();
        assert!(e.contains("/usr/lib/arm-linux-gnueabihf/liba.so.1"), "{e}");
    }

    #[test]
    fn a_binary_for_another_machine_is_refused_by_name() {
        // The test binary is a host ELF file; no host is both aarch64 and armv7hl.
        let exe = std::env::current_exe().unwrap();
        let bytes = std::fs::read(&exe).unwrap();
        let host = elfdeps::elf_arch(&bytes).unwrap();
        check_machine(&exe, &bytes, host).unwrap();
        let other = if host == Arch::Aarch64 {
            Arch::Armv7hl
        } else {
            Arch::Aarch64
        };
        let e = check_machine(&exe, &bytes, other).unwrap_err().to_string();
        assert!(
            e.contains(&exe.display().to_string()) && e.contains(other.rpm_name()),
            "{e}"
        );
        let e = check_machine(Path::new("/x/arbor"), b"#!/bin/sh\n", other)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/x/arbor is not an ELF file"), "{e}");
    }
}
