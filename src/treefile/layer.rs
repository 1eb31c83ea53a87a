//! A [`Layer`]: one treefile's values, then the merge of it with what it includes.
//!
//! Merging follows rpm-ostree's `treefile_merge`: a file's includes are folded
//! into it one after another; scalars already set win (the including file,
//! then earlier includes), lists put the included values first, and maps are
//! merged key by key with the same precedence as scalars.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Result, bail};

use super::parse::{CondInclude, OneOrMany, Parsed, RepoPackagesWire, at};
use super::vars::{VarValue, Vars};
use super::{BootLocation, Initramfs, OptUsrlocal, RemoveFromPackages};

/// A value and the treefile it was written in (for errors after merging).
#[derive(Debug, Clone)]
pub(super) struct Src<T> {
    pub value: T,
    pub file: Rc<str>,
}

/// One file's values (or a file merged with its includes).
#[derive(Debug, Default)]
pub(super) struct Layer {
    pub treeref: Option<Src<String>>,
    pub releasever: Option<VarValue>,
    pub variables: Vars,
    pub repos: Vec<Src<String>>,
    pub lockfile_repos: Vec<Src<String>>,
    pub repo_packages: Vec<Src<RepoPackagesWire>>,
    /// Entries as written (not yet split on whitespace or substituted).
    pub packages: Vec<Src<String>>,
    pub exclude_packages: Vec<Src<String>>,
    pub recommends: Option<bool>,
    pub documentation: Option<bool>,
    pub install_langs: Vec<String>,
    pub automatic_version_prefix: Option<Src<String>>,
    pub mutate_os_release: Option<Src<String>>,
    pub add_commit_metadata: BTreeMap<String, Src<serde_json::Value>>,
    pub postprocess: Vec<String>,
    pub postprocess_script: Option<PathBuf>,
    pub remove_files: Vec<String>,
    pub remove_from_packages: Vec<RemoveFromPackages>,
    pub units: Vec<String>,
    pub default_target: Option<String>,
    pub etc_group_members: Vec<String>,
    pub initramfs_args: Vec<String>,
    pub selinux: Option<bool>,
    pub boot_location: Option<BootLocation>,
    pub tmp_is_dir: Option<bool>,
    pub machineid_compat: Option<bool>,
    pub check_passwd: Option<serde_json::Value>,
    pub check_groups: Option<serde_json::Value>,
    pub readonly_executables: Option<bool>,
    pub container: Option<bool>,
    pub cliwrap: Option<bool>,
    pub opt_usrlocal: Option<OptUsrlocal>,
    pub ignore_removed_users: Vec<String>,
    pub ignore_removed_groups: Vec<String>,
    pub initramfs: Option<Initramfs>,
    pub boards: Vec<String>,
    pub ignore_scriptlet_failures: BTreeMap<String, String>,
}

/// What a file includes, taken out of its keys before merging.
#[derive(Debug, Default)]
pub(super) struct Includes {
    pub include: Vec<String>,
    pub arch_include: BTreeMap<String, Vec<String>>,
    pub conditional: Vec<CondInclude>,
}

/// How one field takes in the same field of an included layer.
trait Merge {
    fn merge_from(&mut self, included: Self);
}

impl<T> Merge for Option<T> {
    fn merge_from(&mut self, included: Self) {
        if self.is_none() {
            *self = included;
        }
    }
}

impl<T> Merge for Vec<T> {
    fn merge_from(&mut self, mut included: Self) {
        included.append(self);
        *self = included;
    }
}

impl<K: Ord, V> Merge for BTreeMap<K, V> {
    fn merge_from(&mut self, included: Self) {
        for (k, v) in included {
            self.entry(k).or_insert(v);
        }
    }
}

impl Layer {
    /// Folds an included layer into this one.
    pub fn merge_from(&mut self, included: Layer) {
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
        } = included;
        self.treeref.merge_from(treeref);
        self.releasever.merge_from(releasever);
        self.variables.merge_from(variables);
        self.repos.merge_from(repos);
        self.lockfile_repos.merge_from(lockfile_repos);
        self.repo_packages.merge_from(repo_packages);
        self.packages.merge_from(packages);
        self.exclude_packages.merge_from(exclude_packages);
        self.recommends.merge_from(recommends);
        self.documentation.merge_from(documentation);
        self.install_langs.merge_from(install_langs);
        self.automatic_version_prefix.merge_from(automatic_version_prefix);
        self.mutate_os_release.merge_from(mutate_os_release);
        self.add_commit_metadata.merge_from(add_commit_metadata);
        self.postprocess.merge_from(postprocess);
        self.postprocess_script.merge_from(postprocess_script);
        self.remove_files.merge_from(remove_files);
        self.remove_from_packages.merge_from(remove_from_packages);
        self.units.merge_from(units);
        self.default_target.merge_from(default_target);
        self.etc_group_members.merge_from(etc_group_members);
        self.initramfs_args.merge_from(initramfs_args);
        self.selinux.merge_from(selinux);
        self.boot_location.merge_from(boot_location);
        self.tmp_is_dir.merge_from(tmp_is_dir);
        self.machineid_compat.merge_from(machineid_compat);
        self.check_passwd.merge_from(check_passwd);
        self.check_groups.merge_from(check_groups);
        self.readonly_executables.merge_from(readonly_executables);
        self.container.merge_from(container);
        self.cliwrap.merge_from(cliwrap);
        self.opt_usrlocal.merge_from(opt_usrlocal);
        self.ignore_removed_users.merge_from(ignore_removed_users);
        self.ignore_removed_groups.merge_from(ignore_removed_groups);
        self.initramfs.merge_from(initramfs);
        self.boards.merge_from(boards);
        self.ignore_scriptlet_failures.merge_from(ignore_scriptlet_failures);
    }

    /// One file's own values, validated where a value alone can be wrong.
    /// `shown` names the file in errors, `text` is its content (for line numbers).
    pub fn from_parsed(path: &Path, shown: &str, text: &str, parsed: Parsed) -> Result<(Layer, Includes)> {
        let file: Rc<str> = Rc::from(shown);
        let src = |value: String| Src {
            value,
            file: file.clone(),
        };
        let srcs = |values: Option<Vec<String>>| values.unwrap_or_default().into_iter().map(src).collect::<Vec<_>>();
        let Parsed { wire, arch_packages } = parsed;
        // Destructured so that a new key cannot be forgotten here.
        let super::parse::Wire {
            treeref,
            include,
            arch_include,
            conditional_include,
            variables,
            releasever,
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
        } = wire;

        let variables = variables.unwrap_or_default();
        for reserved in ["basearch", "releasever"] {
            if variables.contains_key(reserved) {
                let how = if reserved == "basearch" {
                    "it is the target arch"
                } else {
                    "set the `releasever` key instead"
                };
                bail!(
                    "{}: variable `{reserved}` is reserved ({how})",
                    at(shown, text, "variables")
                );
            }
        }

        let boot_location = match boot_location.as_deref() {
            None => None,
            Some("modules") => Some(BootLocation::Modules),
            Some(other) => bail!(
                "{}: boot-location `{other}` is not supported; allowed values: modules \
                 (arbor keeps kernels only in /usr/lib/modules)",
                at(shown, text, "boot-location")
            ),
        };

        let remove_from_packages = remove_from_packages
            .unwrap_or_default()
            .into_iter()
            .map(|entry| match entry.split_first() {
                Some((package, patterns)) if !patterns.is_empty() => Ok(RemoveFromPackages {
                    package: package.clone(),
                    patterns: patterns.to_vec(),
                }),
                _ => bail!(
                    "{}: remove-from-packages entry {entry:?} must be [PACKAGE, REGEX...] with at least one regex",
                    at(shown, text, "remove-from-packages")
                ),
            })
            .collect::<Result<Vec<_>>>()?;

        let postprocess_script = match postprocess_script {
            None => None,
            Some(script) => {
                let full = path.parent().unwrap_or(Path::new("")).join(&script);
                if !full.is_file() {
                    bail!(
                        "{}: postprocess-script `{script}`: {} is not a file",
                        at(shown, text, "postprocess-script"),
                        full.display()
                    );
                }
                Some(full)
            }
        };

        let mut all_packages = packages.unwrap_or_default();
        all_packages.extend(arch_packages);

        let layer = Layer {
            treeref: treeref.map(src),
            releasever: releasever.map(|r| r.0),
            variables,
            repos: srcs(repos),
            lockfile_repos: srcs(lockfile_repos),
            repo_packages: repo_packages
                .unwrap_or_default()
                .into_iter()
                .map(|value| Src {
                    value,
                    file: file.clone(),
                })
                .collect(),
            packages: srcs(Some(all_packages)),
            exclude_packages: srcs(exclude_packages),
            recommends,
            documentation,
            install_langs: install_langs.unwrap_or_default(),
            automatic_version_prefix: automatic_version_prefix.map(src),
            mutate_os_release: mutate_os_release.map(src),
            add_commit_metadata: add_commit_metadata
                .unwrap_or_default()
                .into_iter()
                .map(|(k, value)| {
                    (
                        k,
                        Src {
                            value,
                            file: file.clone(),
                        },
                    )
                })
                .collect(),
            postprocess: postprocess.unwrap_or_default(),
            postprocess_script,
            remove_files: remove_files.unwrap_or_default(),
            remove_from_packages,
            units: units.unwrap_or_default(),
            default_target,
            etc_group_members: etc_group_members.unwrap_or_default(),
            initramfs_args: initramfs_args.unwrap_or_default(),
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
            ignore_removed_users: ignore_removed_users.unwrap_or_default(),
            ignore_removed_groups: ignore_removed_groups.unwrap_or_default(),
            initramfs,
            boards: boards.unwrap_or_default(),
            ignore_scriptlet_failures: ignore_scriptlet_failures.unwrap_or_default(),
        };
        let includes = Includes {
            include: include.map(|OneOrMany(v)| v).unwrap_or_default(),
            arch_include: arch_include
                .unwrap_or_default()
                .into_iter()
                .map(|(k, OneOrMany(v))| (k, v))
                .collect(),
            conditional: conditional_include.unwrap_or_default(),
        };
        Ok((layer, includes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(file: &str, packages: &[&str], treeref: Option<&str>) -> Layer {
        let f: Rc<str> = Rc::from(file);
        let src = |s: &str| Src {
            value: s.to_string(),
            file: f.clone(),
        };
        Layer {
            packages: packages.iter().map(|p| src(p)).collect(),
            treeref: treeref.map(src),
            ..Layer::default()
        }
    }

    #[test]
    fn merge_prepends_lists_and_keeps_set_scalars() {
        let mut top = layer("top", &["c"], Some("top/ref"));
        top.merge_from(layer("first", &["a"], Some("first/ref")));
        top.merge_from(layer("second", &["b"], None));
        let pkgs: Vec<_> = top.packages.iter().map(|p| p.value.as_str()).collect();
        // rpm-ostree order: later includes before earlier ones, the including file last.
        assert_eq!(pkgs, ["b", "a", "c"]);
        assert_eq!(top.treeref.map(|r| r.value).as_deref(), Some("top/ref"));

        let mut bare = layer("top", &[], None);
        bare.merge_from(layer("first", &[], Some("first/ref")));
        bare.merge_from(layer("second", &[], Some("second/ref")));
        let r = bare.treeref.unwrap();
        assert_eq!((r.value.as_str(), &*r.file), ("first/ref", "first"));
    }
}
