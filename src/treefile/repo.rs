//! dnf `.repo` files: the repositories a treefile's `repos` name.
//!
//! Like rpm-ostree, only the `*.repo` files beside the top-level treefile are
//! read, never the host's `/etc/yum.repos.d`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use super::include::{normalize, shown};
use super::vars::{self, SubstError, Syntax, VarValue, Vars};
use crate::arch::Arch;

/// A repository from a `.repo` file, with variables substituted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoConfig {
    /// The section name (`[fedora]`).
    pub id: String,
    /// `name=`, or the id when not set.
    pub name: String,
    /// `baseurl=` URLs in order. A path without a URL scheme is made an
    /// absolute `file:///…/` URL relative to the .repo file's directory.
    pub baseurl: Vec<String>,
    /// `metalink=`, stored but not fetched (only baseurl is).
    pub metalink: Option<String>,
    /// `mirrorlist=`, stored but not fetched.
    pub mirrorlist: Option<String>,
    /// `gpgcheck=`; arbor checks signatures unless told not to (default true).
    pub gpgcheck: bool,
    /// `gpgkey=` URLs.
    pub gpgkey: Vec<String>,
    /// `enabled=` (default true). Disabled repos are kept so a caller can say why.
    pub enabled: bool,
    /// The .repo file the repository is defined in.
    pub file: PathBuf,
}

/// A section of a .repo file as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawRepo {
    pub id: String,
    pub file: PathBuf,
    /// key → (value, line); continuation lines are joined with `\n`.
    pub entries: BTreeMap<String, (String, usize)>,
}

/// Parses the dnf INI syntax: `[id]` sections, `key=value`, `#`/`;` comments,
/// values continued on following indented lines.
pub(super) fn parse_repo_text(file: &Path, text: &str) -> Result<Vec<RawRepo>> {
    let name = shown(file);
    let mut repos: Vec<RawRepo> = Vec::new();
    let mut last_key: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            if let (Some(repo), Some(key)) = (repos.last_mut(), &last_key) {
                if let Some((value, _)) = repo.entries.get_mut(key) {
                    value.push('\n');
                    value.push_str(line);
                    continue;
                }
            }
            bail!("{name}:{line_no}: indented line continues no value");
        }
        if let Some(section) = line.strip_prefix('[') {
            let id = section
                .strip_suffix(']')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| anyhow!("{name}:{line_no}: malformed section header `{line}`"))?;
            if repos.iter().any(|r| r.id == id) {
                bail!("{name}:{line_no}: repo `{id}` is defined twice in this file");
            }
            repos.push(RawRepo {
                id: id.to_string(),
                file: file.to_path_buf(),
                entries: BTreeMap::new(),
            });
            last_key = None;
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| anyhow!("{name}:{line_no}: expected `key=value`, `[id]` or a comment, found `{line}`"))?;
        let key = key.trim().to_ascii_lowercase();
        let repo = repos
            .last_mut()
            .ok_or_else(|| anyhow!("{name}:{line_no}: `{key}=` comes before any `[id]` section"))?;
        if repo.entries.contains_key(&key) {
            bail!("{name}:{line_no}: `{key}` is set twice in repo `{}`", repo.id);
        }
        repo.entries.insert(key.clone(), (value.trim().to_string(), line_no));
        last_key = Some(key);
    }
    Ok(repos)
}

/// dnf's booleans.
fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// Whether `url` starts with a URL scheme (`https://`, `file:`).
fn has_scheme(url: &str) -> bool {
    match url.split_once(':') {
        Some((scheme, _)) => {
            scheme.len() > 1
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        }
        None => false,
    }
}

/// Arbor's extension: a baseurl without a scheme is a directory relative to the .repo file.
fn to_url(url: &str, repo_dir: &Path) -> Result<String> {
    if has_scheme(url) {
        return Ok(url.to_string());
    }
    let dir = if repo_dir.is_absolute() {
        repo_dir.to_path_buf()
    } else {
        std::env::current_dir()
            .context("finding the current directory for a relative baseurl")?
            .join(repo_dir)
    };
    let full = normalize(&dir.join(url));
    let full = full
        .to_str()
        .ok_or_else(|| anyhow!("baseurl path {} is not UTF-8", full.display()))?;
    let sep = if full.ends_with('/') { "" } else { "/" };
    Ok(format!("file://{full}{sep}"))
}

impl RawRepo {
    /// The repository with variables substituted, in dnf's `$var` and `${var}` forms.
    pub fn resolve(&self, vars: &Vars) -> Result<RepoConfig> {
        let name = shown(&self.file);
        let get = |key: &str| -> Result<Option<String>> {
            let Some((value, line)) = self.entries.get(key) else {
                return Ok(None);
            };
            vars::substitute(value, vars, Syntax::Dnf)
                .map(Some)
                .map_err(|e| match e {
                    SubstError::Unknown(v) => anyhow!(
                        "{name}:{line}: `{key}` of repo `{}`: unknown variable `{v}` (known variables: {})",
                        self.id,
                        vars::known(vars)
                    ),
                    SubstError::Unterminated => {
                        anyhow!(
                            "{name}:{line}: `{key}` of repo `{}`: `${{` without a closing `}}`",
                            self.id
                        )
                    }
                })
        };
        let boolean = |key: &str, default: bool| -> Result<bool> {
            match get(key)? {
                None => Ok(default),
                Some(v) => parse_bool(&v).ok_or_else(|| {
                    let line = self.entries.get(key).map_or(0, |(_, l)| *l);
                    anyhow!(
                        "{name}:{line}: `{key}={v}` in repo `{}`: expected 1/0, yes/no, true/false or on/off",
                        self.id
                    )
                }),
            }
        };
        let list = |v: Option<String>| -> Vec<String> {
            v.unwrap_or_default()
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let repo_dir = self.file.parent().unwrap_or(Path::new(""));
        let baseurl = list(get("baseurl")?)
            .iter()
            .map(|u| to_url(u, repo_dir))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("{name}: baseurl of repo `{}`", self.id))?;
        let metalink = get("metalink")?.filter(|s| !s.is_empty());
        let mirrorlist = get("mirrorlist")?.filter(|s| !s.is_empty());
        if baseurl.is_empty() && metalink.is_none() && mirrorlist.is_none() {
            bail!("{name}: repo `{}` has none of baseurl, metalink or mirrorlist", self.id);
        }
        Ok(RepoConfig {
            id: self.id.clone(),
            name: get("name")?.unwrap_or_else(|| self.id.clone()),
            baseurl,
            metalink,
            mirrorlist,
            gpgcheck: boolean("gpgcheck", true)?,
            gpgkey: list(get("gpgkey")?),
            enabled: boolean("enabled", true)?,
            file: self.file.clone(),
        })
    }
}

/// The enabled repositories of `.repo` files given as (path shown in errors,
/// text), as a device's /etc/yum.repos.d holds them for a board of `arch`:
/// `$basearch` is dnf's base arch (`armhfp` for armv7hl), `$arch` the rpm
/// arch, `$releasever` (and its `_major`/`_minor`) `releasever` when given.
/// An id defined twice is an error naming both files.
pub fn enabled_repos(files: &[(PathBuf, String)], arch: Arch, releasever: Option<&str>) -> Result<Vec<RepoConfig>> {
    let mut vars = Vars::new();
    vars.insert("basearch".into(), VarValue::String(arch.basearch().into()));
    vars.insert("arch".into(), VarValue::String(arch.rpm_name().into()));
    if let Some(r) = releasever {
        let (major, minor) = r.split_once('.').unwrap_or((r, ""));
        vars.insert("releasever".into(), VarValue::String(r.into()));
        vars.insert("releasever_major".into(), VarValue::String(major.into()));
        vars.insert("releasever_minor".into(), VarValue::String(minor.into()));
    }
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut out = Vec::new();
    for (file, text) in files {
        for raw in parse_repo_text(file, text)? {
            if let Some(other) = seen.insert(raw.id.clone(), file.clone()) {
                bail!(
                    "repo id `{}` is defined in both {} and {}",
                    raw.id,
                    shown(&other),
                    shown(file)
                );
            }
            let cfg = raw.resolve(&vars)?;
            if cfg.enabled {
                out.push(cfg);
            }
        }
    }
    Ok(out)
}

/// Every repository defined by the `*.repo` files of one directory.
#[derive(Debug)]
pub(super) struct RepoDir {
    pub dir: PathBuf,
    pub repos: BTreeMap<String, RawRepo>,
}

impl RepoDir {
    /// Reads the `*.repo` files in `dir` (in name order); an id defined twice is an error.
    pub fn load(dir: &Path) -> Result<RepoDir> {
        let listed = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let entries = std::fs::read_dir(listed).with_context(|| format!("listing .repo files in {}", shown(listed)))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing .repo files in {}", shown(listed)))?;
            let name = entry.file_name();
            if Path::new(&name).extension().is_some_and(|e| e == "repo") {
                files.push(dir.join(name));
            }
        }
        files.sort();
        let mut repos: BTreeMap<String, RawRepo> = BTreeMap::new();
        for file in files {
            let text = crate::input::read_text(&file, ".repo file", crate::input::CONFIG_CAP)?;
            for repo in parse_repo_text(&file, &text)? {
                if let Some(other) = repos.get(&repo.id) {
                    bail!(
                        "repo id `{}` is defined in both {} and {}",
                        repo.id,
                        shown(&other.file),
                        shown(&repo.file)
                    );
                }
                repos.insert(repo.id.clone(), repo);
            }
        }
        Ok(RepoDir {
            // Absolute, so a treefile given as `t.yaml` names its directory in errors.
            dir: std::path::absolute(listed).unwrap_or_else(|_| listed.to_path_buf()),
            repos,
        })
    }

    /// Whether repository `id`'s settings mention the variable `var`.
    pub fn uses(&self, id: &str, var: &str) -> bool {
        self.repos
            .get(id)
            .is_some_and(|r| r.entries.values().any(|(v, _)| v.contains(var)))
    }

    /// The repository `id`; `origin` says where it was asked for (for the error).
    pub fn resolve(&self, id: &str, origin: &str, vars: &Vars) -> Result<RepoConfig> {
        let Some(raw) = self.repos.get(id) else {
            let defined: Vec<&str> = self.repos.keys().map(String::as_str).collect();
            let defined = if defined.is_empty() {
                "none".to_string()
            } else {
                defined.join(", ")
            };
            bail!(
                "repo `{id}` ({origin}) is not defined in any .repo file in {} (defined there: {defined})",
                shown(&self.dir)
            );
        };
        raw.resolve(vars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::treefile::vars::VarValue;

    fn vars() -> Vars {
        let mut v = Vars::new();
        v.insert("basearch".into(), VarValue::String("aarch64".into()));
        v.insert("releasever".into(), VarValue::String("41".into()));
        v
    }

    const FEDORA: &str = "\
# Fedora
[fedora]
name=Fedora $releasever - $basearch
baseurl=https://dl.example.org/releases/$releasever/Everything/$basearch/os/
   https://mirror.example.org/${releasever}/$basearch/
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-$releasever-$basearch
; disabled for now
[updates-testing]
enabled = 0
metalink=https://mirrors.example.org/metalink?repo=updates-testing-f$releasever&arch=$basearch
";

    #[test]
    fn parses_sections_continuations_and_variables() {
        let raw = parse_repo_text(Path::new("/etc/x/fedora.repo"), FEDORA).unwrap();
        assert_eq!(raw.len(), 2);
        let fedora = raw[0].resolve(&vars()).unwrap();
        assert_eq!(fedora.name, "Fedora 41 - aarch64");
        assert_eq!(
            fedora.baseurl,
            [
                "https://dl.example.org/releases/41/Everything/aarch64/os/",
                "https://mirror.example.org/41/aarch64/"
            ]
        );
        assert!(fedora.gpgcheck && fedora.enabled);
        assert_eq!(fedora.gpgkey, ["file:///etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-41-aarch64"]);
        let testing = raw[1].resolve(&vars()).unwrap();
        assert!(!testing.enabled && testing.baseurl.is_empty());
        assert_eq!(testing.name, "updates-testing");
        assert_eq!(
            testing.metalink.as_deref(),
            Some("https://mirrors.example.org/metalink?repo=updates-testing-f41&arch=aarch64")
        );
    }

    #[test]
    fn relative_baseurl_becomes_file_url() {
        let raw = parse_repo_text(
            Path::new("/srv/tf/local.repo"),
            "[l]\nbaseurl=../target/repo\ngpgcheck=0\n",
        )
        .unwrap();
        let repo = raw[0].resolve(&vars()).unwrap();
        assert_eq!(repo.baseurl, ["file:///srv/target/repo/"]);
        assert!(!repo.gpgcheck);
        for (url, scheme) in [
            ("https://x/", true),
            ("file:///x", true),
            ("dir/x", false),
            ("/abs", false),
        ] {
            assert_eq!(has_scheme(url), scheme, "{url}");
        }
        assert_eq!(to_url("/srv/r", Path::new("/x")).unwrap(), "file:///srv/r/");
    }

    #[test]
    fn enabled_repos_on_an_armv7hl_board_use_fedoras_basearch() {
        let files = [(
            PathBuf::from("/etc/yum.repos.d/f.repo"),
            "[fedora]\nname=Fedora $releasever - $basearch\n\
             baseurl=https://dl.example.org/fedora-secondary/releases/$releasever/Everything/$basearch/os/\n\
             [local]\nbaseurl=file:///srv/repo/$arch/\n[off]\nbaseurl=http://x/\nenabled=0\n"
                .to_string(),
        )];
        let repos = enabled_repos(&files, Arch::Armv7hl, Some("41")).unwrap();
        let ids: Vec<&str> = repos.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["fedora", "local"]);
        assert_eq!(repos[0].name, "Fedora 41 - armhfp");
        assert_eq!(
            repos[0].baseurl,
            ["https://dl.example.org/fedora-secondary/releases/41/Everything/armhfp/os/"]
        );
        // dnf's `$arch` is the machine's rpm arch.
        assert_eq!(repos[1].baseurl, ["file:///srv/repo/armv7hl/"]);

        let repos = enabled_repos(&files, Arch::Aarch64, Some("41")).unwrap();
        assert_eq!(repos[0].name, "Fedora 41 - aarch64");
        assert_eq!(repos[1].baseurl, ["file:///srv/repo/aarch64/"]);
    }

    #[test]
    fn malformed_repo_files_name_file_and_line() {
        let table: &[(&str, &str)] = &[
            ("baseurl=x\n", "r.repo:1: `baseurl=` comes before any `[id]` section"),
            ("[a]\nbaseurl\n", "r.repo:2: expected `key=value`"),
            ("[a\n", "r.repo:1: malformed section header"),
            (
                "[a]\nbaseurl=x\n[a]\nbaseurl=y\n",
                "r.repo:3: repo `a` is defined twice",
            ),
            ("[a]\nname=x\nname=y\n", "r.repo:3: `name` is set twice"),
            ("  indented\n", "r.repo:1: indented line"),
        ];
        for (text, want) in table {
            let e = parse_repo_text(Path::new("r.repo"), text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let bad = |text: &str| parse_repo_text(Path::new("r.repo"), text).unwrap()[0].resolve(&vars());
        let e = bad("[a]\nbaseurl=http://x/$nosuch/\n").unwrap_err().to_string();
        assert!(
            e.contains("r.repo:2") && e.contains("unknown variable `nosuch`") && e.contains("basearch, releasever"),
            "{e}"
        );
        let e = bad("[a]\nbaseurl=http://x/\ngpgcheck=maybe\n").unwrap_err().to_string();
        assert!(e.contains("r.repo:3") && e.contains("gpgcheck=maybe"), "{e}");
        let e = bad("[a]\nname=x\n").unwrap_err().to_string();
        assert!(e.contains("none of baseurl, metalink or mirrorlist"), "{e}");
    }
}
