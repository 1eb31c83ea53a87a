//! Debian packages as a source of real ARM binaries: finding the exact .deb
//! apt would fetch, downloading it once into a verified cache, and reading its
//! data tarball into memory.
//!
//! Most packages come through the host's own apt configuration. Packages from a
//! component the host must not enable (non-free-firmware) come through the
//! private configuration `scripts/setup` writes ([`AptSource::NonFreeFirmware`]).

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use arbor::runner::Tool;

/// The private apt configuration `scripts/setup` writes for [`AptSource::NonFreeFirmware`]:
/// Debian's non-free-firmware component for arm64/armhf, with its own package lists, so
/// the host's sources never gain the component.
pub const NON_FREE_FIRMWARE_APT_CONF: &str = "/etc/arbor/sample-apt/apt.conf";

/// Which apt configuration knows a Debian package (`apt` in a manifest's `from_deb`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AptSource {
    /// The host's own apt sources (Debian main).
    #[default]
    Host,
    /// Debian's non-free-firmware component, through [`NON_FREE_FIRMWARE_APT_CONF`] only.
    NonFreeFirmware,
}

impl AptSource {
    /// The options that point apt-cache and apt-get at this source's configuration.
    fn apt_options(self) -> Result<Vec<String>> {
        match self {
            AptSource::Host => Ok(Vec::new()),
            AptSource::NonFreeFirmware => private_conf_options(Path::new(NON_FREE_FIRMWARE_APT_CONF)),
        }
    }

    /// What to do when apt cannot look a package up through this source.
    fn fix(self) -> &'static str {
        match self {
            AptSource::Host => {
                "is each architecture added and its package lists fetched? \
                 scripts/setup does both (dpkg --add-architecture arm64 armhf && apt-get update)"
            }
            AptSource::NonFreeFirmware => {
                "are the sample repository's private non-free-firmware package lists fetched? \
                 run scripts/setup (it writes /etc/arbor/sample-apt/apt.conf and runs \
                 apt-get -c /etc/arbor/sample-apt/apt.conf update)"
            }
        }
    }
}

/// `-c CONF` for a private apt configuration, or an error naming the fix when it is missing.
fn private_conf_options(conf: &Path) -> Result<Vec<String>> {
    if !conf.is_file() {
        bail!(
            "{} is missing: the sample repository's private apt configuration for Debian's \
             non-free-firmware component is written by scripts/setup; run scripts/setup",
            conf.display()
        );
    }
    Ok(vec!["-c".to_string(), conf.display().to_string()])
}

/// What apt knows about the candidate version of one package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptRecord {
    /// Which apt configuration knows it (and downloads it).
    pub source: AptSource,
    /// `name:arch` as asked.
    pub spec: String,
    /// Package name.
    pub package: String,
    /// Full Debian version (`[epoch:]upstream[-revision]`).
    pub version: String,
    /// Depends and Pre-Depends, names only.
    pub depends: Vec<String>,
    /// Pool file name (the .deb's basename).
    pub filename: String,
    /// SHA-256 of the .deb, hex.
    pub sha256: String,
}

/// Parses the first stanza of `apt-cache show --no-all-versions` output.
pub fn parse_apt_show(source: AptSource, spec: &str, text: &str) -> Result<AptRecord> {
    let stanza = text.split("\n\n").next().unwrap_or_default();
    let field = |key: &str| {
        stanza.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        })
    };
    let need = |key: &str| field(key).with_context(|| format!("apt record for {spec} has no {key} field"));
    let mut depends = Vec::new();
    for key in ["Pre-Depends", "Depends"] {
        for alt in field(key).unwrap_or_default().split(',') {
            if let Some(name) = alt.split(['|', '(']).next().map(str::trim).filter(|n| !n.is_empty()) {
                depends.push(name.split(':').next().unwrap_or(name).to_string());
            }
        }
    }
    let package = need("Package")?;
    let version = need("Version")?;
    let filename = need("Filename")?;
    Ok(AptRecord {
        source,
        spec: spec.to_string(),
        package,
        version,
        depends,
        filename: filename.rsplit('/').next().unwrap_or(&filename).to_string(),
        sha256: need("SHA256")?,
    })
}

/// Records seen so far, by source and `name:arch`.
type Seen = HashMap<(AptSource, String), AptRecord>;
static SEEN: Mutex<Option<Seen>> = Mutex::new(None);

/// Asks apt (through `source`'s configuration) for the candidate of `package:arch`
/// (once per process; see [`prefetch`]).
pub fn apt_show(source: AptSource, package: &str, arch: &str) -> Result<AptRecord> {
    let key = (source, format!("{package}:{arch}"));
    if let Some(r) = SEEN.lock().expect("apt cache lock").as_ref().and_then(|m| m.get(&key)) {
        return Ok(r.clone());
    }
    prefetch(source, &[(package.to_string(), arch.to_string())])
        .with_context(|| format!("looking up Debian package {}", key.1))?;
    let seen = SEEN.lock().expect("apt cache lock");
    seen.as_ref()
        .and_then(|m| m.get(&key))
        .cloned()
        .with_context(|| format!("apt has no candidate for {}", key.1))
}

/// Looks up many `(package, arch)` pairs of one source with one `apt-cache` run (each
/// run reads every package list, which takes over a second with three architectures).
pub fn prefetch(source: AptSource, specs: &[(String, String)]) -> Result<()> {
    let missing: Vec<String> = {
        let seen = SEEN.lock().expect("apt cache lock");
        specs
            .iter()
            .map(|(p, a)| format!("{p}:{a}"))
            .filter(|s| seen.as_ref().is_none_or(|m| !m.contains_key(&(source, s.clone()))))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    if missing.is_empty() {
        return Ok(());
    }
    let text = Tool::new("apt-cache")
        .args(source.apt_options()?)
        .args(["show", "--no-all-versions"])
        .args(&missing)
        .text()
        .with_context(|| source.fix())?;
    let mut seen = SEEN.lock().expect("apt cache lock");
    let map = seen.get_or_insert_with(HashMap::new);
    for stanza in text.split("\n\n").filter(|s| !s.trim().is_empty()) {
        let arch = stanza
            .lines()
            .find_map(|l| l.strip_prefix("Architecture:"))
            .map(str::trim)
            .unwrap_or_default();
        let package = stanza
            .lines()
            .find_map(|l| l.strip_prefix("Package:"))
            .map(str::trim)
            .unwrap_or_default();
        let spec = format!("{package}:{arch}");
        let rec = parse_apt_show(source, &spec, stanza)?;
        map.insert((source, spec), rec);
    }
    Ok(())
}

/// Resolves a metapackage (`linux-image-arm64`) to the dependency whose name starts with `prefix`.
pub fn via_depends(meta: &AptRecord, prefix: &str) -> Result<String> {
    meta.depends
        .iter()
        .find(|d| d.starts_with(prefix))
        .cloned()
        .with_context(|| {
            format!(
                "{} {} has no dependency starting with {prefix:?}",
                meta.spec, meta.version
            )
        })
}

/// Ensures the .deb for `rec` is in `cache_dir` with the right checksum, downloading it if not.
pub fn fetch(rec: &AptRecord, cache_dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(cache_dir).with_context(|| format!("creating deb cache {}", cache_dir.display()))?;
    let path = cache_dir.join(&rec.filename);
    if path.exists() && sha256_file(&path)? == rec.sha256 {
        return Ok(path);
    }
    // apt-get download writes into the current directory; use a private one and rename,
    // so an interrupted download never leaves a truncated file under the final name.
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(cache_dir)
        .with_context(|| format!("creating a temporary directory in {}", cache_dir.display()))?;
    tracing::info!(package = %rec.spec, version = %rec.version, "downloading");
    Tool::new("apt-get")
        .args(rec.source.apt_options()?)
        .args(["download", "-q", &format!("{}={}", rec.spec, rec.version)])
        .current_dir(tmp.path())
        .run()
        .with_context(|| {
            format!(
                "downloading Debian package {} {} (if the archive no longer serves this version, \
                 apt's package lists are out of date: {})",
                rec.spec,
                rec.version,
                match rec.source {
                    AptSource::Host => "run apt-get update",
                    AptSource::NonFreeFirmware => "run scripts/setup, which refreshes the private ones too",
                }
            )
        })?;
    // apt names the file itself (an epoch becomes `%3a`): take the one .deb it wrote.
    let got = std::fs::read_dir(tmp.path())
        .with_context(|| format!("listing {}", tmp.path().display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download of {} wrote no .deb file", rec.spec))?;
    let sum = sha256_file(&got)?;
    if sum != rec.sha256 {
        bail!(
            "downloaded {} has SHA-256 {sum}, apt's index says {}",
            rec.filename,
            rec.sha256
        );
    }
    std::fs::rename(&got, &path).with_context(|| format!("moving {} into {}", rec.filename, cache_dir.display()))?;
    Ok(path)
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// One entry of a .deb's data tarball.
#[derive(Debug, Clone)]
pub struct DebEntry {
    /// Path without the leading `./`, never empty.
    pub path: String,
    /// What it is.
    pub kind: DebKind,
    /// Permission bits (including setuid/setgid/sticky).
    pub mode: u16,
    /// Owner name.
    pub user: String,
    /// Group name.
    pub group: String,
    /// Modification time (seconds since the epoch).
    pub mtime: u64,
}

/// The type of a .deb entry.
#[derive(Debug, Clone)]
pub enum DebKind {
    /// A directory.
    Dir,
    /// A regular file and its bytes.
    File(Arc<Vec<u8>>),
    /// A symlink and its target.
    Symlink(String),
}

/// The data tarball of one .deb, in archive order.
#[derive(Debug)]
pub struct DebContents {
    /// Entries in archive order.
    pub entries: Vec<DebEntry>,
}

impl DebContents {
    /// The kernel version, from the one directory under `lib/modules/`.
    pub fn kernel_version(&self) -> Option<String> {
        self.entries.iter().find_map(|e| {
            let rest = e.path.strip_prefix("lib/modules/")?;
            let kver = rest.split('/').next()?;
            (!kver.is_empty()).then(|| kver.to_string())
        })
    }
}

/// Reads the data tarball of `deb` (through `dpkg-deb --fsys-tarfile`).
pub fn read(deb: &Path) -> Result<DebContents> {
    let tarball = Tool::new("dpkg-deb").arg("--fsys-tarfile").arg(deb).output()?;
    let mut archive = tar::Archive::new(tarball.as_slice());
    let mut entries = Vec::new();
    let mut by_path: HashMap<String, Arc<Vec<u8>>> = HashMap::new();
    let ctx = || format!("reading the data tarball of {}", deb.display());
    for entry in archive.entries().with_context(ctx)? {
        let mut entry = entry.with_context(ctx)?;
        let raw = entry.path().with_context(ctx)?.to_string_lossy().into_owned();
        let path = raw.trim_start_matches("./").trim_end_matches('/').to_string();
        if path.is_empty() {
            continue;
        }
        let header = entry.header();
        let mode = (header.mode().with_context(ctx)? & 0o7777) as u16;
        let user = header.username().ok().flatten().unwrap_or("root").to_string();
        let group = header.groupname().ok().flatten().unwrap_or("root").to_string();
        let mtime = header.mtime().unwrap_or(0);
        let kind = match header.entry_type() {
            tar::EntryType::Directory => DebKind::Dir,
            tar::EntryType::Symlink => {
                let target = entry.link_name().with_context(ctx)?.context("symlink without target")?;
                DebKind::Symlink(target.to_string_lossy().into_owned())
            }
            tar::EntryType::Link => {
                // A hardlink to an earlier entry: the same bytes under another name.
                let target = entry
                    .link_name()
                    .with_context(ctx)?
                    .context("hardlink without target")?;
                let target = target.to_string_lossy().trim_start_matches("./").to_string();
                let bytes = by_path
                    .get(&target)
                    .with_context(|| format!("{}: hardlink {path} to unknown {target}", deb.display()))?;
                DebKind::File(bytes.clone())
            }
            tar::EntryType::Regular => {
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut bytes).with_context(ctx)?;
                let bytes = Arc::new(bytes);
                by_path.insert(path.clone(), bytes.clone());
                DebKind::File(bytes)
            }
            other => bail!("{}: entry {path} has unsupported type {other:?}", deb.display()),
        };
        entries.push(DebEntry {
            path,
            kind,
            mode,
            user,
            group,
            mtime,
        });
    }
    Ok(DebContents { entries })
}

/// A .deb's identity, from its control file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebControl {
    /// Package name.
    pub package: String,
    /// Full Debian version.
    pub version: String,
    /// Debian arch (`arm64`, `all`, …).
    pub architecture: String,
}

/// Reads the package name, version and arch of `deb` (through `dpkg-deb --show`).
pub fn control(deb: &Path) -> Result<DebControl> {
    let text = Tool::new("dpkg-deb")
        .args(["--show", "--showformat=${Package}\t${Version}\t${Architecture}\n"])
        .arg(deb)
        .text()
        .with_context(|| format!("reading the control fields of {}", deb.display()))?;
    let fields: Vec<&str> = text.trim_end().split('\t').collect();
    match fields.as_slice() {
        [p, v, a] if !p.is_empty() && !v.is_empty() && !a.is_empty() => Ok(DebControl {
            package: p.to_string(),
            version: v.to_string(),
            architecture: a.to_string(),
        }),
        _ => bail!("{}: dpkg-deb printed no package, version and arch", deb.display()),
    }
}

/// The paths of the regular files, hardlinks and symlinks in `deb`'s data
/// tarball, without reading their contents into memory.
pub fn list_files(deb: &Path) -> Result<Vec<String>> {
    let tarball = Tool::new("dpkg-deb").arg("--fsys-tarfile").arg(deb).output()?;
    let mut archive = tar::Archive::new(tarball.as_slice());
    let ctx = || format!("reading the data tarball of {}", deb.display());
    let mut paths = Vec::new();
    for entry in archive.entries().with_context(ctx)? {
        let entry = entry.with_context(ctx)?;
        if matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Link | tar::EntryType::Symlink
        ) {
            let raw = entry.path().with_context(ctx)?.to_string_lossy().into_owned();
            paths.push(raw.trim_start_matches("./").to_string());
        }
    }
    Ok(paths)
}

/// Reads each .deb at most once per run, shared between package builds.
#[derive(Default)]
pub struct DebReader {
    cache: Mutex<HashMap<PathBuf, Arc<DebContents>>>,
}

impl DebReader {
    /// The contents of `deb`, read on first use.
    pub fn get(&self, deb: &Path) -> Result<Arc<DebContents>> {
        if let Some(c) = self.cache.lock().expect("deb cache lock").get(deb) {
            return Ok(c.clone());
        }
        let c = Arc::new(read(deb)?);
        self.cache
            .lock()
            .expect("deb cache lock")
            .insert(deb.to_path_buf(), c.clone());
        Ok(c)
    }
}

/// A Debian version split into rpm's epoch, version and release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmEvr {
    /// Epoch, when the Debian version has one.
    pub epoch: Option<u32>,
    /// Upstream version.
    pub version: String,
    /// Debian revision with characters rpm does not allow replaced.
    pub release: String,
}

/// Maps `1:1.35.0-4+deb12u1+b1` to epoch 1, version `1.35.0`, release `4+deb12u1+b1`.
pub fn deb_to_rpm_evr(deb: &str) -> Result<RpmEvr> {
    let (epoch, rest) = match deb.split_once(':') {
        Some((e, r)) => (
            Some(
                e.parse::<u32>()
                    .with_context(|| format!("Debian version {deb:?}: bad epoch"))?,
            ),
            r,
        ),
        None => (None, deb),
    };
    let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, "1"));
    let clean = |s: &str| s.replace(['-', ':'], "_");
    if upstream.is_empty() {
        bail!("Debian version {deb:?}: empty upstream version");
    }
    Ok(RpmEvr {
        epoch,
        version: clean(upstream),
        release: clean(revision),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_to_rpm() {
        let cases = [
            ("1:1.35.0-4+deb12u1+b1", Some(1), "1.35.0", "4+deb12u1+b1"),
            ("2.36-9+deb12u14", None, "2.36", "9+deb12u14"),
            ("2023.01+dfsg-2+deb12u3", None, "2023.01+dfsg", "2+deb12u3"),
            ("6.1-0.1", None, "6.1", "0.1"),
            ("1.0", None, "1.0", "1"),
            ("1.2-rc1-3", None, "1.2_rc1", "3"),
        ];
        for (deb, e, v, r) in cases {
            let got = deb_to_rpm_evr(deb).unwrap();
            assert_eq!(
                got,
                RpmEvr {
                    epoch: e,
                    version: v.into(),
                    release: r.into()
                },
                "{deb}"
            );
        }
        assert!(deb_to_rpm_evr("x:1-1").is_err());
    }

    #[test]
    fn a_missing_private_apt_configuration_names_scripts_setup() {
        let tmp = tempfile::tempdir().unwrap();
        let conf = tmp.path().join("apt.conf");
        let e = private_conf_options(&conf).unwrap_err().to_string();
        assert!(
            e.contains("apt.conf is missing") && e.contains("run scripts/setup"),
            "{e}"
        );
        std::fs::write(&conf, "").unwrap();
        assert_eq!(
            private_conf_options(&conf).unwrap(),
            ["-c".to_string(), conf.display().to_string()]
        );
        assert!(AptSource::Host.apt_options().unwrap().is_empty());
        assert!(AptSource::NonFreeFirmware.fix().contains("scripts/setup"));
    }

    #[test]
    fn apt_show_parses() {
        let text = "Package: linux-image-arm64\nVersion: 6.1.176-1\nArchitecture: arm64\n\
                    Depends: linux-image-6.1.0-50-arm64 (= 6.1.176-1), foo | bar:any\n\
                    Pre-Depends: libc6 (>= 2.36)\nFilename: pool/main/l/x/linux-image-arm64_6.1.176-1_arm64.deb\n\
                    SHA256: abcd\n\nPackage: other\n";
        let r = parse_apt_show(AptSource::Host, "linux-image-arm64:arm64", text).unwrap();
        assert_eq!(r.version, "6.1.176-1");
        assert_eq!(r.filename, "linux-image-arm64_6.1.176-1_arm64.deb");
        assert_eq!(r.depends, ["libc6", "linux-image-6.1.0-50-arm64", "foo"]);
        assert_eq!(via_depends(&r, "linux-image-").unwrap(), "linux-image-6.1.0-50-arm64");
        assert!(via_depends(&r, "nope-").unwrap_err().to_string().contains("nope-"));
        let e = parse_apt_show(AptSource::Host, "x:arm64", "Package: x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no Version field"), "{e}");
    }
}
