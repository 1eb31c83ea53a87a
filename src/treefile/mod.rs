//! rpm-ostree compatible treefiles (Fedora IoT / CoreOS manifests), YAML or JSON.
//!
//! [`load`] reads a treefile for a target arch, follows its includes, checks
//! every key, substitutes variables, finds its repositories in the `.repo`
//! files beside it, and returns a [`Treefile`] with every default filled in.
//!
//! Data flow: text → [`parse`] (checked keys, one file) → [`layer`] (one
//! file's values, merged with its includes by [`include`]) → [`Treefile`].
//! Merging follows rpm-ostree: the including file's scalars win over its
//! includes, earlier includes win over later ones, and lists are joined with
//! the included values first (later includes before earlier ones).

mod include;
mod layer;
mod parse;
mod repo;
mod vars;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use serde::{Deserialize, Serialize, Serializer};

use self::include::shown;
use self::layer::{Layer, Src};
use self::repo::RepoDir;
pub use self::repo::{RepoConfig, enabled_repos};
use self::vars::{SubstError, Syntax, Vars};
pub use self::vars::{VarValue, parse_condition};
use crate::arch::Arch;

/// Where kernels go in the tree (rpm-ostree's `boot-location`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BootLocation {
    /// Only `/usr/lib/modules/$kver` (the one layout arbor writes).
    Modules,
}

/// What `/opt` and `/usr/local` are (rpm-ostree's `opt-usrlocal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptUsrlocal {
    /// Symlinks into `/var` (machine-local state); the default.
    Var,
    /// Plain directories in the tree.
    Root,
}

/// Who builds the initramfs (arbor's own key `initramfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Initramfs {
    /// arbor's own small initramfs; the default.
    Arbor,
    /// dracut, run in the target tree (as rpm-ostree does).
    Dracut,
    /// No initramfs: the kernel mounts the root itself.
    None,
}

/// One `remove-from-packages` entry, written `[PACKAGE, REGEX...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveFromPackages {
    /// The package whose files are removed.
    pub package: String,
    /// Regular expressions (JavaScript syntax, as rpm-ostree) over file paths.
    pub patterns: Vec<String>,
}

impl Serialize for RemoveFromPackages {
    /// As written: `["pkg", "regex", ...]`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let all: Vec<&String> = std::iter::once(&self.package).chain(&self.patterns).collect();
        all.serialize(s)
    }
}

/// One `repo-packages` entry: packages that must come from one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoPackages {
    /// The repository id (one of `repos` or `lockfile-repos`).
    pub repo: String,
    /// The package names.
    pub packages: Vec<String>,
}

/// A treefile with its includes merged, variables substituted, repositories
/// found and defaults filled in. Serialized (kebab-case, like rpm-ostree's
/// `--print-only`) by `arbor treefile show`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Treefile {
    /// The target architecture; `${basearch}` is its [`Arch::basearch`] name,
    /// which is also how it is shown (`armhfp` for armv7hl, as rpm-ostree shows it).
    #[serde(serialize_with = "serialize_basearch")]
    pub basearch: Arch,
    /// The OSTree branch to commit to.
    #[serde(rename = "ref")]
    pub treeref: String,
    /// `releasever` (a number is kept as its text); `${releasever}` and `$releasever`.
    pub releasever: Option<String>,
    /// User variables after merging (the built-ins are `basearch` and `releasever`).
    pub variables: BTreeMap<String, VarValue>,
    /// The repositories of `repos`, in that order (disabled ones kept, `enabled: false`).
    pub repos: Vec<RepoConfig>,
    /// The repositories of `lockfile-repos`, in that order.
    pub lockfile_repos: Vec<RepoConfig>,
    /// Packages pinned to one repository.
    pub repo_packages: Vec<RepoPackages>,
    /// Packages to install: entries split on whitespace, `packages-$ARCH` of the
    /// target included, in merge order, first occurrence kept.
    pub packages: Vec<String>,
    /// Packages never to install (sorted).
    pub exclude_packages: Vec<String>,
    /// Install weak dependencies (default true).
    pub recommends: bool,
    /// Install files marked as documentation (default true).
    pub documentation: bool,
    /// rpm's `_install_langs` (sorted; empty = all).
    pub install_langs: Vec<String>,
    /// Prefix of automatic commit versions.
    pub automatic_version_prefix: Option<String>,
    /// The version text replaced in os-release.
    pub mutate_os_release: Option<String>,
    /// Metadata added to the commit.
    pub add_commit_metadata: BTreeMap<String, serde_json::Value>,
    /// Inline postprocess scripts, in the order they run.
    pub postprocess: Vec<String>,
    /// The postprocess script file (relative to the treefile that names it), run last.
    pub postprocess_script: Option<PathBuf>,
    /// Paths removed from the tree (sorted).
    pub remove_files: Vec<String>,
    /// Files removed from given packages.
    pub remove_from_packages: Vec<RemoveFromPackages>,
    /// systemd units enabled (sorted).
    pub units: Vec<String>,
    /// The default systemd target.
    pub default_target: Option<String>,
    /// Groups kept in /etc/group (sorted).
    pub etc_group_members: Vec<String>,
    /// Arguments for the initramfs generator, in order.
    pub initramfs_args: Vec<String>,
    /// SELinux labeling (default true; false when `container`).
    pub selinux: bool,
    /// Where kernels go (only `modules`).
    pub boot_location: BootLocation,
    /// `/tmp` is a directory rather than a symlink (default false; true when `container`).
    pub tmp_is_dir: bool,
    /// Ship an empty /etc/machine-id (default true).
    pub machineid_compat: bool,
    /// rpm-ostree's passwd check, as written.
    pub check_passwd: Option<serde_json::Value>,
    /// rpm-ostree's group check, as written.
    pub check_groups: Option<serde_json::Value>,
    /// Remove write bits from executables (default false).
    pub readonly_executables: bool,
    /// A container tree: no kernel or /boot handling (default false).
    pub container: bool,
    /// rpm-ostree's cliwrap (default false).
    pub cliwrap: bool,
    /// What /opt and /usr/local are (default `var`).
    pub opt_usrlocal: OptUsrlocal,
    /// Users that may disappear (sorted).
    pub ignore_removed_users: Vec<String>,
    /// Groups that may disappear (sorted).
    pub ignore_removed_groups: Vec<String>,
    /// Who builds the initramfs (arbor; default `arbor`).
    pub initramfs: Initramfs,
    /// Boards this tree is meant for (arbor; sorted, default empty).
    pub boards: Vec<String>,
    /// Scriptlet failures that do not fail the compose (arbor): `"NAME %KIND"` → the reason.
    pub ignore_scriptlet_failures: BTreeMap<String, String>,
}

/// Scriptlet kinds `ignore-scriptlet-failures` may name (rpm's spelling, without `%`).
pub const SCRIPTLET_KINDS: &[&str] = &[
    "pretrans",
    "pre",
    "post",
    "posttrans",
    "triggerin",
    "filetriggerin",
    "transfiletriggerin",
];

/// Reads the treefile at `path` (.yaml, .yml or .json) for the target `arch`.
pub fn load(path: &Path, arch: Arch) -> Result<Treefile> {
    if arch == Arch::Noarch {
        bail!("noarch is not a target architecture for a tree");
    }
    let layer = include::load_tree(path, arch)?;
    let dir = path.parent().unwrap_or(Path::new(""));
    finish(path, dir, arch, layer)
}

/// The treefile as pretty JSON (what `arbor treefile show` prints), with a final newline.
pub fn print_json(tf: &Treefile) -> String {
    // Every map in a Treefile has string keys, so serializing cannot fail.
    let mut s = serde_json::to_string_pretty(tf).expect("a Treefile always serializes to JSON");
    s.push('\n');
    s
}

fn serialize_basearch<S: Serializer>(arch: &Arch, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(arch.basearch())
}

/// Splits package entries on whitespace; `'name >= 1.0'` in single quotes stays one entry.
/// A quoted part may sit among unquoted names (`corge 'quuz >= 1.0'`, rpm-ostree's
/// treefile.md); it is a version query, resolved as `name op evr`.
fn split_packages(entry: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = entry.trim();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('\'') {
            let (quoted, tail) = after.split_once('\'').unwrap_or((after, ""));
            if !quoted.trim().is_empty() {
                out.push(quoted.split_whitespace().collect::<Vec<_>>().join(" "));
            }
            rest = tail.trim_start();
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '\'')
                .unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    out
}

/// Sorted, without duplicates.
fn sorted(v: Vec<String>) -> Vec<String> {
    v.into_iter().collect::<BTreeSet<_>>().into_iter().collect()
}

/// In order, first occurrence kept.
fn dedup_keep_first(v: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    v.into_iter().filter(|p| seen.insert(p.clone())).collect()
}

/// OSTree's ref syntax: `/`-separated parts of `[A-Za-z0-9_][A-Za-z0-9._-]*`.
fn valid_ref(r: &str) -> bool {
    r.split('/').all(|part| {
        part.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    })
}

/// Substitutes `${var}` in one value, naming its file and key on error.
fn subst(src: &Src<String>, key: &str, vars: &Vars) -> Result<String> {
    vars::substitute(&src.value, vars, Syntax::Treefile).map_err(|e| match e {
        SubstError::Unknown(v) => anyhow!(
            "{}: {key} `{}`: unknown variable `${{{v}}}` (known variables: {})",
            src.file,
            src.value,
            vars::known(vars)
        ),
        SubstError::Unterminated => anyhow!("{}: {key} `{}`: `${{` without a closing `}}`", src.file, src.value),
    })
}

/// Substitutes in each entry and splits the entries into package names.
fn package_names(entries: &[Src<String>], key: &str, vars: &Vars) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for e in entries {
        for name in split_packages(&subst(e, key, vars)?) {
            out.push((name, e.file.to_string()));
        }
    }
    Ok(out)
}

/// From the merged layer to the resolved treefile.
fn finish(path: &Path, dir: &Path, arch: Arch, layer: Layer) -> Result<Treefile> {
    let top = shown(path);
    // Destructured so that a new field cannot be forgotten here.
    let Layer {
        treeref,
        releasever,
        variables,
        repos,
        lockfile_repos,
        repo_packages,
        packages,
        exclude_packages,
        recommends,
        documentation,
        install_langs,
        automatic_version_prefix,
        mutate_os_release,
        add_commit_metadata,
        postprocess,
        postprocess_script,
        remove_files,
        remove_from_packages,
        units,
        default_target,
        etc_group_members,
        initramfs_args,
        selinux,
        boot_location,
        tmp_is_dir,
        machineid_compat,
        check_passwd,
        check_groups,
        readonly_executables,
        container,
        cliwrap,
        opt_usrlocal,
        ignore_removed_users,
        ignore_removed_groups,
        initramfs,
        boards,
        ignore_scriptlet_failures,
    } = layer;

    let mut all_vars = variables.clone();
    all_vars.insert("basearch".into(), VarValue::String(arch.basearch().into()));
    let releasever = releasever.map(|r| r.to_string());
    if let Some(r) = &releasever {
        all_vars.insert("releasever".into(), VarValue::String(r.clone()));
    }

    let treeref = treeref.ok_or_else(|| anyhow!("{top}: `ref` is not set (in it or in any file it includes)"))?;
    let ref_file = treeref.file.clone();
    let treeref = subst(&treeref, "ref", &all_vars)?;
    if !valid_ref(&treeref) {
        bail!(
            "{ref_file}: ref `{treeref}` is not a valid OSTree ref (`/`-separated parts of letters, digits, `_`, `.`, `-`)"
        );
    }

    let packages_from = package_names(&packages, "packages", &all_vars)?;
    let excluded_from = package_names(&exclude_packages, "exclude-packages", &all_vars)?;
    for (name, file) in &excluded_from {
        if let Some((_, pfile)) = packages_from.iter().find(|(p, _)| p == name) {
            bail!("package `{name}` is both in `packages` ({pfile}) and in `exclude-packages` ({file})");
        }
    }
    let packages = dedup_keep_first(packages_from.into_iter().map(|(p, _)| p).collect());
    let exclude_packages = sorted(excluded_from.into_iter().map(|(p, _)| p).collect());

    // dnf variables for .repo files: the treefile's, plus releasever_major/minor as dnf has them.
    // Without a treefile `releasever`, `$releasever` in a .repo file is the build
    // host's release (os-release VERSION_ID), as dnf and rpm-ostree take it from
    // the host; a warning says so when a repository used it.
    let mut repo_vars = all_vars.clone();
    // dnf's `$arch` is the machine's rpm arch (`armv7hl` where `$basearch` is `armhfp`).
    repo_vars.insert("arch".into(), VarValue::String(arch.rpm_name().into()));
    let host_release = match &releasever {
        Some(_) => None,
        None => host_releasever(),
    };
    if let Some(r) = releasever.as_ref().or(host_release.as_ref()) {
        let (major, minor) = r.split_once('.').unwrap_or((r, ""));
        repo_vars.insert("releasever".into(), VarValue::String(r.clone()));
        repo_vars.insert("releasever_major".into(), VarValue::String(major.into()));
        repo_vars.insert("releasever_minor".into(), VarValue::String(minor.into()));
    }
    let repo_dir = RepoDir::load(dir)?;
    let resolve_repos = |ids: &[Src<String>], key: &str| -> Result<Vec<RepoConfig>> {
        let mut out: Vec<RepoConfig> = Vec::new();
        for src in ids {
            let id = subst(src, key, &all_vars)?;
            if out.iter().any(|r| r.id == id) {
                continue;
            }
            out.push(repo_dir.resolve(&id, &format!("in `{key}` of {}", src.file), &repo_vars)?);
        }
        Ok(out)
    };
    let repos = resolve_repos(&repos, "repos")?;
    let lockfile_repos = resolve_repos(&lockfile_repos, "lockfile-repos")?;
    if let Some(host) = &host_release {
        for r in repos.iter().chain(&lockfile_repos) {
            if repo_dir.uses(&r.id, "releasever") {
                tracing::warn!(
                    "{top}: no `releasever` set: `$releasever` in repo `{}` ({}) is this build host's release {host:?} \
                     (its os-release VERSION_ID, as dnf does); set `releasever:` in the treefile for the tree's own",
                    r.id,
                    r.file.display()
                );
            }
        }
    }

    let repo_packages = repo_packages
        .iter()
        .map(|src| {
            let id = subst(
                &Src {
                    value: src.value.repo.clone(),
                    file: src.file.clone(),
                },
                "repo-packages",
                &all_vars,
            )?;
            if !repos.iter().chain(&lockfile_repos).any(|r| r.id == id) {
                bail!(
                    "{}: repo-packages names repo `{id}`, which is in neither `repos` nor `lockfile-repos`",
                    src.file
                );
            }
            let entries: Vec<Src<String>> = src
                .value
                .packages
                .iter()
                .map(|p| Src {
                    value: p.clone(),
                    file: src.file.clone(),
                })
                .collect();
            let packages = package_names(&entries, "repo-packages", &all_vars)?;
            Ok(RepoPackages {
                repo: id,
                packages: dedup_keep_first(packages.into_iter().map(|(p, _)| p).collect()),
            })
        })
        .collect::<Result<Vec<_>>>()?;

    let optional = |s: Option<Src<String>>, key: &str| s.map(|s| subst(&s, key, &all_vars)).transpose();
    let automatic_version_prefix = optional(automatic_version_prefix, "automatic-version-prefix")?;
    let mutate_os_release = optional(mutate_os_release, "mutate-os-release")?;

    // rpm-ostree substitutes variables in the string values of add-commit-metadata.
    let add_commit_metadata = add_commit_metadata
        .into_iter()
        .map(|(k, src)| {
            let value = match src.value {
                serde_json::Value::String(s) => serde_json::Value::String(subst(
                    &Src {
                        value: s,
                        file: src.file,
                    },
                    &format!("add-commit-metadata `{k}`"),
                    &all_vars,
                )?),
                other => other,
            };
            Ok((k, value))
        })
        .collect::<Result<BTreeMap<_, _>>>()?;

    for (k, reason) in &ignore_scriptlet_failures {
        let ok = k.split_once(" %").is_some_and(|(name, kind)| {
            !name.is_empty() && !name.contains(char::is_whitespace) && SCRIPTLET_KINDS.contains(&kind)
        });
        if !ok {
            bail!(
                "{top}: ignore-scriptlet-failures: `{k}` is not \"PACKAGE %KIND\" (KIND one of {})",
                SCRIPTLET_KINDS.join(", ")
            );
        }
        if reason.trim().is_empty() {
            bail!("{top}: ignore-scriptlet-failures: `{k}` needs a reason (why the failure is harmless)");
        }
    }
    let container = container.unwrap_or(false);
    let machineid_compat = machineid_compat.unwrap_or(true);
    let units = sorted(units);
    if !machineid_compat && !units.is_empty() {
        bail!(
            "{top}: `units` cannot be used with `machineid-compat: false` (systemd presets apply instead; \
             ship a preset file in a package)"
        );
    }

    Ok(Treefile {
        basearch: arch,
        treeref,
        releasever,
        variables,
        repos,
        lockfile_repos,
        repo_packages,
        packages,
        exclude_packages,
        recommends: recommends.unwrap_or(true),
        documentation: documentation.unwrap_or(true),
        install_langs: sorted(install_langs),
        automatic_version_prefix,
        mutate_os_release,
        add_commit_metadata,
        postprocess,
        postprocess_script,
        remove_files: sorted(remove_files),
        remove_from_packages,
        units,
        default_target,
        etc_group_members: sorted(etc_group_members),
        initramfs_args,
        // As in rpm-ostree, `container: true` implies no SELinux labels and a /tmp directory.
        selinux: selinux.unwrap_or(!container),
        boot_location: boot_location.unwrap_or(BootLocation::Modules),
        tmp_is_dir: tmp_is_dir.unwrap_or(container),
        machineid_compat,
        check_passwd,
        check_groups,
        readonly_executables: readonly_executables.unwrap_or(false),
        container,
        cliwrap: cliwrap.unwrap_or(false),
        opt_usrlocal: opt_usrlocal.unwrap_or(OptUsrlocal::Var),
        ignore_removed_users: sorted(ignore_removed_users),
        ignore_removed_groups: sorted(ignore_removed_groups),
        initramfs: initramfs.unwrap_or(Initramfs::Arbor),
        boards: sorted(boards),
        ignore_scriptlet_failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_entries_split_on_whitespace_unless_quoted() {
        assert_eq!(split_packages(" bash  glibc\tbusybox "), ["bash", "glibc", "busybox"]);
        assert_eq!(split_packages("'podman >= 4.1'"), ["podman >= 4.1"]);
        assert_eq!(
            split_packages("corge 'quuz >= 1.0' grault"),
            ["corge", "quuz >= 1.0", "grault"]
        );
        assert_eq!(split_packages("'bash = 5.2.15-2'"), ["bash = 5.2.15-2"]);
        assert_eq!(split_packages("a'b >= 1'"), ["a", "b >= 1"]);
        assert!(split_packages("   ").is_empty());
    }

    #[test]
    fn ostree_ref_syntax() {
        for ok in ["fedora/41/aarch64/iot", "arbor/x86_64/sample-minimal", "a_b.c"] {
            assert!(valid_ref(ok), "{ok}");
        }
        for bad in ["", "/lead", "trail/", "a//b", "sp ace", "-dash/x", "a/.hidden"] {
            assert!(!valid_ref(bad), "{bad}");
        }
    }

    #[test]
    fn remove_from_packages_serializes_as_written() {
        let r = RemoveFromPackages {
            package: "cpio".into(),
            patterns: vec!["/usr/share/.*".into()],
        };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"["cpio","/usr/share/.*"]"#);
    }
}

/// The build host's release (`VERSION_ID` of /etc/os-release, else
/// /usr/lib/os-release): what dnf takes `$releasever` from when nothing sets it.
fn host_releasever() -> Option<String> {
    ["/etc/os-release", "/usr/lib/os-release"].iter().find_map(|p| {
        let text = std::fs::read_to_string(p).ok()?;
        os_release_version_id(&text)
    })
}

/// `VERSION_ID` of os-release text, unquoted.
fn os_release_version_id(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix("VERSION_ID=")?;
        let v = v.trim_matches(|c| c == '"' || c == '\'');
        (!v.is_empty()).then(|| v.to_string())
    })
}

#[cfg(test)]
mod os_release_tests {
    #[test]
    fn version_id_quoted_or_not() {
        let f = super::os_release_version_id;
        assert_eq!(f("NAME=\"Fedora Linux\"\nVERSION_ID=41\n").as_deref(), Some("41"));
        assert_eq!(f("VERSION_ID=\"12\"\n").as_deref(), Some("12"));
        assert_eq!(f("VERSION_ID='9.4'").as_deref(), Some("9.4"));
        assert_eq!(f("ID=arch\n"), None);
        assert_eq!(f("VERSION_ID=\n"), None);
    }
}
