//! One treefile file on its own: text → checked keys → [`Wire`].
//!
//! YAML and JSON both become a `serde_json::Value` first, so both go through
//! the same key checks, except that unknown JSON keys not resembling a known
//! key are ignored with a warning, as rpm-ostree ignores them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

use super::vars::{VarValue, json_kind};
use super::{Initramfs, OptUsrlocal};
use crate::arch::Arch;

/// Keys arbor implements, as rpm-ostree spells them (plus arbor's own).
pub(super) const IMPLEMENTED: &[&str] = &[
    "ref",
    "include",
    "arch-include",
    "conditional-include",
    "variables",
    "releasever",
    "repos",
    "lockfile-repos",
    "repo-packages",
    "packages",
    "exclude-packages",
    "recommends",
    "documentation",
    "install-langs",
    "automatic-version-prefix",
    "mutate-os-release",
    "add-commit-metadata",
    "postprocess",
    "postprocess-script",
    "remove-files",
    "remove-from-packages",
    "units",
    "default-target",
    "etc-group-members",
    "initramfs-args",
    "selinux",
    "boot-location",
    "tmp-is-dir",
    "machineid-compat",
    "check-passwd",
    "check-groups",
    "readonly-executables",
    "container",
    "cliwrap",
    "opt-usrlocal",
    "ignore-removed-users",
    "ignore-removed-groups",
    // arbor's own
    "initramfs",
    "boards",
    "ignore-scriptlet-failures",
];

/// The underscore spellings rpm-ostree still accepts for implemented keys.
pub(super) const ALIASES: &[&str] = &["automatic_version_prefix", "default_target", "boot_location"];

/// rpm-ostree keys arbor knows but does not implement (yet).
pub(super) const NOT_IMPLEMENTED: &[&str] = &[
    "add-files",
    "automatic-version-suffix",
    "base-refspec",
    "basearch",
    "bootstrap_packages",
    "cliwrap-binaries",
    "container-cmd",
    "edition",
    "gpg-key",
    "gpg_key",
    "ignore-devices",
    "ima",
    "kickstart",
    "metadata",
    "modules",
    "opt-usrlocal-overlays",
    "ostree-format",
    "ostree-layers",
    "ostree-override-layers",
    "platform-module",
    "preserve-passwd",
    "repo-metadata",
    "repo_metadata",
    "repovars",
    "rojig",
    "rpmdb-normalize",
    "runtime-only",
    "selinux-label-version",
    "sysroot-readonly",
    "sysusers",
];

/// Base architecture names rpm-ostree accepts in `arch-include` and `packages-$ARCH`.
pub(super) const BASEARCHES: &[&str] = &[
    "aarch64", "armhfp", "armv7hl", "i686", "ppc64", "ppc64le", "riscv64", "s390x", "x86_64",
];

/// Whether a basearch key (`armhfp`, `x86_64`, …) selects the target arch.
pub(super) fn arch_matches(key: &str, arch: Arch) -> bool {
    match arch {
        Arch::Aarch64 => key == "aarch64",
        Arch::Armv7hl => key == "armhfp" || key == "armv7hl",
        Arch::X86_64 => key == "x86_64",
        Arch::Noarch => false,
    }
}

/// A string or a list of strings (`include`, `if`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub(super) struct OneOrMany(pub Vec<String>);

impl TryFrom<serde_json::Value> for OneOrMany {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<OneOrMany, String> {
        let bad = |v: &serde_json::Value| format!("expected a string or a list of strings, found {}", json_kind(v));
        match v {
            serde_json::Value::String(s) => Ok(OneOrMany(vec![s])),
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(|i| match i {
                    serde_json::Value::String(s) => Ok(s),
                    other => Err(bad(&other)),
                })
                .collect::<Result<_, _>>()
                .map(OneOrMany),
            other => Err(bad(&other)),
        }
    }
}

/// `releasever`: a string or a number.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub(super) struct Releasever(pub VarValue);

impl TryFrom<serde_json::Value> for Releasever {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<Releasever, String> {
        match v {
            serde_json::Value::String(s) => Ok(Releasever(VarValue::String(s))),
            serde_json::Value::Number(n) => Ok(Releasever(VarValue::Number(n))),
            other => Err(format!("expected a string or a number, found {}", json_kind(&other))),
        }
    }
}

/// One `conditional-include` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CondInclude {
    /// One condition or a list that must all hold.
    #[serde(rename = "if")]
    pub cond: OneOrMany,
    /// What to include when they do: files, or an inline treefile map
    /// (rpm-ostree's `test_treefile_conditional_inline`).
    pub include: IncludeTarget,
}

/// A `conditional-include` entry's `include`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub(super) enum IncludeTarget {
    /// One file or a list of files.
    Files(Vec<String>),
    /// Treefile keys written in place.
    Inline(serde_json::Map<String, serde_json::Value>),
}

impl TryFrom<serde_json::Value> for IncludeTarget {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<IncludeTarget, String> {
        match v {
            serde_json::Value::Object(map) => Ok(IncludeTarget::Inline(map)),
            other => OneOrMany::try_from(other)
                .map(|OneOrMany(files)| IncludeTarget::Files(files))
                .map_err(|e| format!("{e}, or a map of treefile keys")),
        }
    }
}

/// One `repo-packages` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RepoPackagesWire {
    /// The repo id the packages must come from.
    pub repo: String,
    /// The packages (each entry may hold several, whitespace-separated).
    pub packages: Vec<String>,
}

/// One treefile as written: every key optional, types as rpm-ostree documents them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct Wire {
    #[serde(rename = "ref")]
    pub treeref: Option<String>,
    pub include: Option<OneOrMany>,
    pub arch_include: Option<BTreeMap<String, OneOrMany>>,
    pub conditional_include: Option<Vec<CondInclude>>,
    pub variables: Option<BTreeMap<String, VarValue>>,
    pub releasever: Option<Releasever>,
    pub repos: Option<Vec<String>>,
    pub lockfile_repos: Option<Vec<String>>,
    pub repo_packages: Option<Vec<RepoPackagesWire>>,
    pub packages: Option<Vec<String>>,
    pub exclude_packages: Option<Vec<String>>,
    pub recommends: Option<bool>,
    pub documentation: Option<bool>,
    pub install_langs: Option<Vec<String>>,
    #[serde(alias = "automatic_version_prefix")]
    pub automatic_version_prefix: Option<String>,
    pub mutate_os_release: Option<String>,
    pub add_commit_metadata: Option<BTreeMap<String, serde_json::Value>>,
    pub postprocess: Option<Vec<String>>,
    pub postprocess_script: Option<String>,
    pub remove_files: Option<Vec<String>>,
    pub remove_from_packages: Option<Vec<Vec<String>>>,
    pub units: Option<Vec<String>>,
    #[serde(alias = "default_target")]
    pub default_target: Option<String>,
    pub etc_group_members: Option<Vec<String>>,
    pub initramfs_args: Option<Vec<String>>,
    pub selinux: Option<bool>,
    #[serde(alias = "boot_location")]
    pub boot_location: Option<String>,
    pub tmp_is_dir: Option<bool>,
    pub machineid_compat: Option<bool>,
    pub check_passwd: Option<serde_json::Value>,
    pub check_groups: Option<serde_json::Value>,
    pub readonly_executables: Option<bool>,
    pub container: Option<bool>,
    pub cliwrap: Option<bool>,
    pub opt_usrlocal: Option<OptUsrlocal>,
    pub ignore_removed_users: Option<Vec<String>>,
    pub ignore_removed_groups: Option<Vec<String>>,
    pub initramfs: Option<Initramfs>,
    pub boards: Option<Vec<String>>,
    pub ignore_scriptlet_failures: Option<BTreeMap<String, String>>,
}

/// A parsed file: its keys, plus the `packages-$ARCH` entries for the target arch.
#[derive(Debug)]
pub(super) struct Parsed {
    pub wire: Wire,
    pub arch_packages: Vec<String>,
}

/// `FILE:LINE` where `key` is written in `text`, or just `FILE`.
pub(super) fn at(shown: &str, text: &str, key: &str) -> String {
    match key_line(text, key) {
        Some(line) => format!("{shown}:{line}"),
        None => shown.to_string(),
    }
}

/// The 1-based line where `key` starts a line (`key:`, `"key":`, `'key':`,
/// or JSON's `"key"`), preferring the least indented (top-level) one.
pub(super) fn key_line(text: &str, key: &str) -> Option<usize> {
    let patterns = [format!("{key}:"), format!("'{key}':"), format!("\"{key}\"")];
    let mut best: Option<(usize, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if patterns.iter().any(|p| trimmed.starts_with(p.as_str())) && best.is_none_or(|(b, _)| indent < b) {
            best = Some((indent, i + 1));
        }
    }
    best.map(|(_, line)| line)
}

/// Edit distance between two keys (insertions, deletions, substitutions).
pub(super) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The implemented key nearest to `key`, if it is close enough to be a typo.
pub(super) fn suggest(key: &str) -> Option<String> {
    let archful = BASEARCHES.iter().map(|a| format!("packages-{a}"));
    let candidates = IMPLEMENTED.iter().map(|k| k.to_string()).chain(archful);
    let (dist, best) = candidates.map(|c| (levenshtein(key, &c), c)).min()?;
    (dist <= (key.chars().count() / 3).max(1)).then_some(best)
}

/// Deepest nesting of `[` and `{` a treefile may have (real ones nest a few levels).
pub(super) const MAX_NESTING: usize = 64;

/// Refuses a path that is not named like a treefile, before it is opened.
pub(super) fn check_extension(shown: &str, path: &Path) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml" | "json") => Ok(()),
        _ => bail!("{shown}: a treefile must end in .yaml, .yml or .json"),
    }
}

/// Refuses text whose brackets nest deeper than [`MAX_NESTING`], before a
/// parser spends time and stack on it. Counts every `[`/`{` against every
/// `]`/`}`, strings and comments included: an overestimate that only matters
/// for text no treefile holds.
fn check_nesting(shown: &str, text: &str) -> Result<()> {
    let (mut depth, mut line) = (0usize, 1usize);
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    bail!(
                        "{shown}: brackets nest deeper than {MAX_NESTING} levels at line {line}; refusing to parse it"
                    );
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'\n' => line += 1,
            _ => {}
        }
    }
    Ok(())
}

/// Reads the text of a treefile into a map of its top-level keys.
fn to_map(shown: &str, path: &Path, text: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    check_extension(shown, path)?;
    check_nesting(shown, text)?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let value: serde_json::Value = match ext {
        "yaml" | "yml" => {
            // Through serde_yaml's own Value first: it rejects duplicate keys.
            let yaml: serde_yaml::Value =
                serde_yaml::from_str(text).with_context(|| format!("parsing {shown} as YAML"))?;
            serde_yaml::from_value(yaml).with_context(|| format!("parsing {shown} as YAML"))?
        }
        "json" => serde_json::from_str(text).with_context(|| format!("parsing {shown} as JSON"))?,
        _ => bail!("{shown}: a treefile must end in .yaml, .yml or .json"),
    };
    match value {
        serde_json::Value::Object(map) => Ok(map),
        serde_json::Value::Null => Ok(serde_json::Map::new()),
        other => bail!(
            "{shown}: a treefile is a map of keys, but this is {}",
            json_kind(&other)
        ),
    }
}

/// Parses one treefile's text, checking every key. `shown` names the file in errors.
pub(super) fn parse_file(shown: &str, path: &Path, text: &str, arch: Arch) -> Result<Parsed> {
    let mut map = to_map(shown, path, text)?;

    // Keys in the order they are written, so the first problem reported is the first in the file.
    let mut keys: Vec<(usize, String)> = map
        .keys()
        .map(|k| (key_line(text, k).unwrap_or(usize::MAX), k.clone()))
        .collect();
    keys.sort();

    let mut arch_packages = Vec::new();
    for (_, key) in &keys {
        let key = key.as_str();
        if IMPLEMENTED.contains(&key) || ALIASES.contains(&key) {
            continue;
        }
        if let Some(keyarch) = key.strip_prefix("packages-").filter(|a| BASEARCHES.contains(a)) {
            let value = map.remove(key).unwrap_or_default();
            let pkgs: Option<Vec<String>> =
                serde_json::from_value(value).map_err(|e| anyhow!("{}: key `{key}`: {e}", at(shown, text, key)))?;
            if arch_matches(keyarch, arch) {
                arch_packages.extend(pkgs.unwrap_or_default());
            }
            continue;
        }
        if key == "rpmdb" {
            // rpm-ostree's backend choice: arbor always writes rpm's sqlite rpmdb.
            match map.remove(key) {
                Some(serde_json::Value::String(s)) if s == "sqlite" => continue,
                Some(serde_json::Value::String(s)) if s == "bdb" || s == "ndb" => bail!(
                    "{}: rpmdb `{s}`: arbor writes only rpm's sqlite database (rpm >= 4.16's default, \
                     what Fedora 33+ and EL9 boot with); set `rpmdb: sqlite` or remove the key",
                    at(shown, text, key)
                ),
                other => bail!(
                    "{}: rpmdb {}: expected `sqlite` (`bdb` and `ndb` are not written by arbor)",
                    at(shown, text, key),
                    other.map(|v| v.to_string()).unwrap_or_default()
                ),
            }
        }
        if NOT_IMPLEMENTED.contains(&key) {
            bail!(
                "{}: key `{key}` is an rpm-ostree key that arbor does not implement yet",
                at(shown, text, key)
            );
        }
        let near = suggest(key);
        // rpm-ostree ignores unknown keys in JSON treefiles (its own fixtures use
        // `comment-*` keys as comments); one that looks like a typo of a key is
        // still refused, as ignoring it would silently change the tree.
        if near.is_none() && path.extension().is_some_and(|e| e == "json") {
            tracing::warn!(
                "{}: ignoring unknown key `{key}` (JSON treefiles allow them, as in rpm-ostree)",
                at(shown, text, key)
            );
            map.remove(key);
            continue;
        }
        let hint = near.map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
        bail!("{}: unknown key `{key}`{hint}", at(shown, text, key));
    }

    let wire = match serde_json::from_value::<Wire>(serde_json::Value::Object(map.clone())) {
        Ok(wire) => wire,
        Err(whole) => {
            // Name the key: the first one that fails on its own.
            for (_, key) in &keys {
                let Some(value) = map.get(key) else { continue };
                let one = serde_json::Map::from_iter([(key.clone(), value.clone())]);
                if let Err(e) = serde_json::from_value::<Wire>(serde_json::Value::Object(one)) {
                    bail!("{}: key `{key}`: {e}", at(shown, text, key));
                }
            }
            bail!("{shown}: {whole}");
        }
    };
    Ok(Parsed { wire, arch_packages })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_implemented_key_is_a_wire_field() {
        for key in IMPLEMENTED.iter().chain(ALIASES) {
            let one = serde_json::json!({ *key: null });
            assert!(serde_json::from_value::<Wire>(one).is_ok(), "{key} is not in Wire");
        }
        let unknown = serde_json::json!({ "no-such-key": null });
        assert!(serde_json::from_value::<Wire>(unknown).is_err());
        for key in NOT_IMPLEMENTED {
            assert!(!IMPLEMENTED.contains(key), "{key} is listed as both");
        }
    }

    #[test]
    fn nearest_key_suggestions() {
        let table: &[(&str, Option<&str>)] = &[
            ("pakages", Some("packages")),
            ("exclude_packages", Some("exclude-packages")),
            ("reccomends", Some("recommends")),
            ("repo", Some("repos")),
            ("packages-aarch46", Some("packages-aarch64")),
            ("boot-loc", None),
            ("frobnicate", None),
            ("x", None),
        ];
        for (key, want) in table {
            assert_eq!(suggest(key).as_deref(), *want, "{key}");
        }
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
    }

    #[test]
    fn key_lines_prefer_top_level() {
        let yaml = "repo-packages:\n  - repo: x\n    packages: [a]\npackages:\n  - b\n'quoted':\n";
        assert_eq!(key_line(yaml, "packages"), Some(4));
        assert_eq!(key_line(yaml, "quoted"), Some(6));
        assert_eq!(key_line(yaml, "repo"), None, "list items are not top-level keys");
        assert_eq!(key_line(yaml, "nope"), None);
        let json = "{\n  \"ref\": \"x\",\n  \"packages-x86_64\": [],\n  \"packages\": []\n}";
        assert_eq!(key_line(json, "packages"), Some(4));
        assert_eq!(key_line(json, "ref"), Some(2));
    }

    #[test]
    fn one_or_many_and_releasever_name_the_type() {
        let e = serde_json::from_value::<OneOrMany>(serde_json::json!(5)).unwrap_err();
        assert!(e.to_string().contains("found a number"), "{e}");
        let e = serde_json::from_value::<Releasever>(serde_json::json!(true)).unwrap_err();
        assert!(e.to_string().contains("found a boolean"), "{e}");
        let r: Releasever = serde_json::from_value(serde_json::json!(41)).unwrap();
        assert_eq!(r.0.to_string(), "41");
    }
}
