//! Sample package manifests (`samples/packages/*.toml`): which files of which
//! Debian package become which RPM, with its dependencies and scriptlets.
//!
//! Parse, then resolve: the wire struct rejects unknown keys; [`load_dir`]
//! validates every manifest before any download or build starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::debs::AptSource;
use arbor::arch::Arch;

/// One sample package, as written in its manifest file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// RPM name.
    pub name: String,
    /// One-line summary.
    pub summary: String,
    /// License tag.
    pub license: String,
    /// Longer description; defaults to the summary.
    #[serde(default)]
    pub description: Option<String>,
    /// Arches to build (`noarch` for architecture-independent packages).
    pub arches: Vec<Arch>,
    /// Version; defaults to the upstream part of the first Debian package's version.
    #[serde(default)]
    pub version: Option<String>,
    /// Release; defaults to the Debian revision (or `1`).
    #[serde(default)]
    pub release: Option<String>,
    /// Epoch; defaults to the Debian epoch, if any.
    #[serde(default)]
    pub epoch: Option<u32>,
    /// Derive `soname()(64bit)` provides/requires from ELF files (rpm's elfdeps).
    #[serde(default = "yes")]
    pub elf_deps: bool,
    /// Requirements, rpm syntax: `name`, `name >= 1.0`, or a rich dependency `(a if b)`.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Provided capabilities.
    #[serde(default)]
    pub provides: Vec<String>,
    /// Obsoleted packages.
    #[serde(default)]
    pub obsoletes: Vec<String>,
    /// Conflicting packages.
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Weak dependencies.
    #[serde(default)]
    pub recommends: Vec<String>,
    /// Weaker dependencies.
    #[serde(default)]
    pub suggests: Vec<String>,
    /// Reverse weak dependencies.
    #[serde(default)]
    pub supplements: Vec<String>,
    /// Debian packages whose files are copied in.
    #[serde(default)]
    pub from_deb: Vec<FromDeb>,
    /// Directories owned by the package.
    #[serde(default)]
    pub dir: Vec<DirEntry>,
    /// Symlinks.
    #[serde(default)]
    pub symlink: Vec<SymlinkEntry>,
    /// Files with inline content.
    #[serde(default)]
    pub file: Vec<FileEntry>,
    /// Scriptlets by type.
    #[serde(default)]
    pub scripts: BTreeMap<ScriptKind, Script>,
    /// File triggers.
    #[serde(default)]
    pub file_trigger: Vec<FileTrigger>,
}

fn yes() -> bool {
    true
}

/// Files taken from one Debian package.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromDeb {
    /// Debian package name.
    pub package: String,
    /// Debian arch to fetch; defaults to the Debian name of the RPM's arch.
    #[serde(default)]
    pub deb_arch: Option<String>,
    /// The package is a metapackage: use its dependency whose name starts with this.
    #[serde(default)]
    pub via_depends: Option<String>,
    /// Which apt configuration has the package: `host` (default) or
    /// `non-free-firmware` (the private one scripts/setup writes; the host's
    /// sources never gain that component).
    #[serde(default)]
    pub apt: AptSource,
    /// Only for these arches (default: all of the manifest's).
    #[serde(default)]
    pub arches: Option<Vec<Arch>>,
    /// What to copy: `src` inside the .deb (a file, symlink or directory) to `dest`.
    pub copy: Vec<CopyRule>,
}

/// A path in a .deb copied to a path in the RPM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyRule {
    /// Path inside the .deb, without leading `./` (`${multiarch}`, `${kver}` expand).
    pub src: String,
    /// Absolute destination path in the RPM.
    pub dest: String,
    /// Only for these arches (default: all of the manifest's).
    #[serde(default)]
    pub arches: Option<Vec<Arch>>,
    /// Path prefixes (relative to `src`) to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// A directory entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirEntry {
    /// Absolute path.
    pub path: String,
    /// Permission bits (default 0755).
    #[serde(default = "dir_mode")]
    pub mode: u16,
    /// Only for these arches.
    #[serde(default)]
    pub arches: Option<Vec<Arch>>,
}

fn root() -> String {
    "root".into()
}

fn dir_mode() -> u16 {
    0o755
}

/// A symlink entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymlinkEntry {
    /// Absolute path of the link.
    pub path: String,
    /// Link target, as stored.
    pub target: String,
    /// Only for these arches.
    #[serde(default)]
    pub arches: Option<Vec<Arch>>,
}

/// A regular file with inline content.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Absolute path.
    pub path: String,
    /// Content (`${arch}` expands).
    #[serde(default)]
    pub content: String,
    /// Permission bits (default 0644).
    #[serde(default = "file_mode")]
    pub mode: u16,
    /// Owner name (default root; the tree's passwd must know it).
    #[serde(default = "root")]
    pub user: String,
    /// Group name (default root).
    #[serde(default = "root")]
    pub group: String,
    /// `%config(noreplace)`.
    #[serde(default)]
    pub config: bool,
    /// `%doc`.
    #[serde(default)]
    pub doc: bool,
    /// `%ghost`: listed in the header, not in the payload.
    #[serde(default)]
    pub ghost: bool,
    /// Only for these arches.
    #[serde(default)]
    pub arches: Option<Vec<Arch>>,
}

fn file_mode() -> u16 {
    0o644
}

/// Scriptlet types rpm runs at install time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScriptKind {
    /// `%pretrans`
    Pretrans,
    /// `%pre`
    Pre,
    /// `%post`
    Post,
    /// `%preun`
    Preun,
    /// `%postun`
    Postun,
    /// `%posttrans`
    Posttrans,
}

/// A scriptlet body and its interpreter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// `/bin/sh`, `<lua>`, or a program run with the body empty (`-p /sbin/ldconfig`).
    #[serde(default = "sh")]
    pub interp: String,
    /// The script text.
    #[serde(default)]
    pub body: String,
}

fn sh() -> String {
    "/bin/sh".into()
}

/// File trigger types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// `%filetriggerin`: once per package that installs matching files.
    Filetriggerin,
    /// `%transfiletriggerin`: once per transaction.
    Transfiletriggerin,
}

/// A file trigger on path prefixes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTrigger {
    /// Trigger type.
    pub kind: TriggerKind,
    /// Path prefixes that fire it.
    pub paths: Vec<String>,
    /// Interpreter, as for scriptlets.
    #[serde(default = "sh")]
    pub interp: String,
    /// Script text.
    #[serde(default)]
    pub body: String,
}

/// A manifest with the file it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The manifest file, for error messages.
    pub file: PathBuf,
    /// Its content, parsed and validated.
    pub manifest: Manifest,
}

/// Loads and validates every `*.toml` in `dir`, sorted by file name.
pub fn load_dir(dir: &Path) -> Result<Vec<Loaded>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading sample manifests in {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading sample manifests in {}", dir.display()))?;
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    if files.is_empty() {
        bail!("no *.toml manifests in {}", dir.display());
    }
    files.iter().map(|f| load(f)).collect()
}

/// Loads and validates one manifest file.
pub fn load(file: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let manifest = parse(&text).with_context(|| format!("in sample manifest {}", file.display()))?;
    Ok(Loaded {
        file: file.to_path_buf(),
        manifest,
    })
}

/// Parses and validates manifest text.
pub fn parse(text: &str) -> Result<Manifest> {
    let m: Manifest = toml::from_str(text)?;
    validate(&m)?;
    Ok(m)
}

fn validate(m: &Manifest) -> Result<()> {
    if m.name.is_empty()
        || !m
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
    {
        bail!(
            "key `name`: {:?} is not a valid package name (letters, digits, - _ . +)",
            m.name
        );
    }
    if m.arches.is_empty() {
        bail!("key `arches`: empty; list at least one of aarch64, armv7hl, x86_64, noarch");
    }
    if m.arches.contains(&Arch::Noarch) && m.arches.len() > 1 {
        bail!("key `arches`: noarch cannot be combined with other arches");
    }
    for a in &m.arches {
        if !m.from_deb.is_empty() && m.version.is_none() && !m.from_deb.iter().any(|d| applies(&d.arches, *a)) {
            bail!("arch {a}: no from_deb applies and no `version` is set");
        }
    }
    if m.from_deb.is_empty() && m.version.is_none() {
        bail!("key `version`: required when the package takes nothing from a .deb");
    }
    for v in [&m.version, &m.release].into_iter().flatten() {
        if v.is_empty() || v.contains('-') || v.contains(char::is_whitespace) {
            bail!("version/release {v:?}: must be non-empty, without '-' or spaces");
        }
    }
    let mut paths: Vec<&str> = m.dir.iter().map(|d| d.path.as_str()).collect();
    paths.extend(m.symlink.iter().map(|s| s.path.as_str()));
    paths.extend(m.file.iter().map(|f| f.path.as_str()));
    for d in &m.from_deb {
        if d.copy.is_empty() {
            bail!("from_deb {:?}: key `copy` is empty", d.package);
        }
        for c in &d.copy {
            if c.src.starts_with('/') || c.src.starts_with("./") || c.src.split('/').any(|s| s == "..") {
                bail!(
                    "from_deb {:?}: copy src {:?} must be relative to the .deb root, without ./ or ..",
                    d.package,
                    c.src
                );
            }
            paths.push(&c.dest);
        }
    }
    for p in paths {
        check_abs_path(p)?;
    }
    for t in &m.file_trigger {
        if t.paths.is_empty() {
            bail!("file_trigger: key `paths` is empty");
        }
        for p in &t.paths {
            check_abs_path(p)?;
        }
    }
    for dep in m
        .requires
        .iter()
        .chain(&m.provides)
        .chain(&m.obsoletes)
        .chain(&m.conflicts)
    {
        parse_dep(dep)?;
    }
    for dep in m.recommends.iter().chain(&m.suggests).chain(&m.supplements) {
        parse_dep(dep)?;
    }
    Ok(())
}

/// Whether an optional per-entry arch list includes `arch` (no list: every arch).
pub fn applies(arches: &Option<Vec<Arch>>, arch: Arch) -> bool {
    arches.as_ref().is_none_or(|a| a.contains(&arch))
}

fn check_abs_path(p: &str) -> Result<()> {
    if !p.starts_with('/')
        || p.len() < 2
        || p.ends_with('/')
        || p.split('/').skip(1).any(|s| s.is_empty() || s == "." || s == "..")
    {
        bail!("path {p:?}: must be absolute and normalised (no trailing /, no . or .. components)");
    }
    Ok(())
}

/// A dependency split into rpm's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    /// Capability name, or the whole rich dependency `( … )`.
    pub name: String,
    /// Comparison and version, if any.
    pub constraint: Option<(String, String)>,
}

/// Parses `name`, `name OP version` (OP one of `< <= = >= >`), or a rich dependency.
pub fn parse_dep(s: &str) -> Result<Dep> {
    let s = s.trim();
    if s.starts_with('(') {
        if !s.ends_with(')') || s.matches('(').count() != s.matches(')').count() {
            bail!("dependency {s:?}: unbalanced parentheses in rich dependency");
        }
        return Ok(Dep {
            name: s.to_string(),
            constraint: None,
        });
    }
    let parts: Vec<&str> = s.split_whitespace().collect();
    match parts.as_slice() {
        [name] => Ok(Dep {
            name: name.to_string(),
            constraint: None,
        }),
        [name, op, ver] if ["<", "<=", "=", ">=", ">"].contains(op) => Ok(Dep {
            name: name.to_string(),
            constraint: Some((op.to_string(), ver.to_string())),
        }),
        _ => bail!("dependency {s:?}: expected `name`, `name OP version` (OP: < <= = >= >) or `(rich dep)`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name = \"x\"\nsummary = \"s\"\nlicense = \"MIT\"\narches = [\"noarch\"]\nversion = \"1\"\n";

    #[test]
    fn minimal_manifest_parses() {
        let m = parse(MINIMAL).unwrap();
        assert_eq!(m.name, "x");
        assert!(m.elf_deps);
    }

    #[test]
    fn bad_manifests_name_the_problem() {
        let cases = [
            (format!("{MINIMAL}bogus = 1\n"), "unknown field `bogus`"),
            (MINIMAL.replace("noarch", "sparc"), "unknown architecture \"sparc\""),
            (
                MINIMAL.replace("\"noarch\"", "\"noarch\", \"aarch64\""),
                "noarch cannot be combined",
            ),
            (MINIMAL.replace("version = \"1\"\n", ""), "key `version`: required"),
            (MINIMAL.replace("\"1\"", "\"1-2\""), "without '-'"),
            (
                format!("{MINIMAL}[[dir]]\npath = \"usr/x\"\n"),
                "path \"usr/x\": must be absolute",
            ),
            (
                format!("{MINIMAL}[[dir]]\npath = \"/usr/../etc\"\n"),
                "no . or .. components",
            ),
            (format!("{MINIMAL}requires = [\"a >> 1\"]\n"), "dependency \"a >> 1\""),
            (format!("{MINIMAL}requires = [\"(a if b\"]\n"), "unbalanced"),
            (
                format!("{MINIMAL}[scripts.postinst]\nbody = \"\"\n"),
                "unknown variant `postinst`",
            ),
            (
                format!("{MINIMAL}[[from_deb]]\npackage = \"p\"\ncopy = [{{ src = \"../etc\", dest = \"/etc\" }}]\n"),
                "must be relative to the .deb root",
            ),
        ];
        for (text, want) in cases {
            let e = format!("{:#}", parse(&text).unwrap_err());
            assert!(e.contains(want), "want {want:?} in error {e:?} for:\n{text}");
        }
    }

    #[test]
    fn from_deb_names_its_apt_source() {
        let deb = |apt: &str| {
            format!(
                "name = \"x\"\nsummary = \"s\"\nlicense = \"MIT\"\narches = [\"noarch\"]\n\
                 [[from_deb]]\npackage = \"p\"\n{apt}copy = [{{ src = \"a\", dest = \"/a\" }}]\n"
            )
        };
        assert_eq!(parse(&deb("")).unwrap().from_deb[0].apt, AptSource::Host);
        assert_eq!(
            parse(&deb("apt = \"non-free-firmware\"\n")).unwrap().from_deb[0].apt,
            AptSource::NonFreeFirmware
        );
        let e = format!("{:#}", parse(&deb("apt = \"contrib\"\n")).unwrap_err());
        assert!(
            e.contains("unknown variant `contrib`") && e.contains("non-free-firmware"),
            "{e}"
        );
    }

    #[test]
    fn deps_parse() {
        assert_eq!(
            parse_dep("bash").unwrap(),
            Dep {
                name: "bash".into(),
                constraint: None
            }
        );
        assert_eq!(
            parse_dep("oldtool < 2.0").unwrap().constraint,
            Some(("<".to_string(), "2.0".to_string()))
        );
        assert_eq!(parse_dep("(a if b)").unwrap().name, "(a if b)");
    }
}
