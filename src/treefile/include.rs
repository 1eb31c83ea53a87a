//! Reading a treefile and everything it includes (`include`, `arch-include`,
//! `conditional-include`) into one [`Layer`].
//!
//! Each file sees the variables of the files that include it (those win), its
//! own, and those of the includes processed before; `basearch` and
//! `releasever` are built in. Includes are processed in rpm-ostree's order:
//! `include`, then `arch-include`, then `conditional-include`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::layer::{Includes, Layer};
use super::parse::{self, BASEARCHES, IncludeTarget, arch_matches, at};
use super::vars::{self, CondError, SubstError, VarValue, Vars};
use crate::arch::Arch;

/// rpm-ostree's limit on include nesting.
pub(super) const MAX_DEPTH: usize = 50;

/// `p` with `.` and `a/..` removed, without touching the filesystem (for messages).
pub(super) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// How a path is named in messages.
pub(super) fn shown(p: &Path) -> String {
    normalize(p).display().to_string()
}

struct Loader {
    arch: Arch,
    /// Directory of the top-level treefile: include chains are shown relative to it.
    top_dir: PathBuf,
    /// The files being included right now, outermost first: (canonical path, path).
    chain: Vec<(PathBuf, PathBuf)>,
    /// Every file read so far (canonical) and the file that included it.
    seen: BTreeMap<PathBuf, String>,
}

/// Reads `path` and its includes for `arch` into one merged layer.
pub(super) fn load_tree(path: &Path, arch: Arch) -> Result<Layer> {
    let mut loader = Loader {
        arch,
        top_dir: normalize(path.parent().unwrap_or(Path::new(""))),
        chain: Vec::new(),
        seen: BTreeMap::new(),
    };
    let canonical = path
        .canonicalize()
        .with_context(|| format!("reading treefile {}", shown(path)))?;
    let mut scope = Vars::new();
    scope.insert("basearch".into(), VarValue::String(arch.basearch().into()));
    loader.seen.insert(canonical.clone(), String::new());
    loader.load(path, canonical, &scope)
}

impl Loader {
    /// How `p` is named in include chains: relative to the top-level directory.
    fn chain_name(&self, p: &Path) -> String {
        let n = normalize(p);
        n.strip_prefix(&self.top_dir).unwrap_or(&n).display().to_string()
    }

    fn load(&mut self, path: &Path, canonical: PathBuf, inherited: &Vars) -> Result<Layer> {
        let shown = shown(path);
        parse::check_extension(&shown, path)?;
        let text = crate::input::read_text(path, "treefile", crate::input::CONFIG_CAP)?;
        let parsed = parse::parse_file(&shown, path, &text, self.arch)?;
        let (mut layer, includes) = Layer::from_parsed(path, &shown, &text, parsed)?;

        let mut scope = inherited.clone();
        add_vars(&mut scope, &layer);

        self.chain.push((canonical, path.to_path_buf()));
        let result = self.load_includes(path, &shown, &text, includes, &mut layer, &mut scope);
        self.chain.pop();
        result.map(|()| layer)
    }

    fn load_includes(
        &mut self,
        path: &Path,
        shown: &str,
        text: &str,
        includes: Includes,
        layer: &mut Layer,
        scope: &mut Vars,
    ) -> Result<()> {
        let Includes {
            include,
            arch_include,
            conditional,
        } = includes;

        for name in include {
            self.include(path, shown, text, "include", &name, layer, scope)?;
        }

        for (key, names) in arch_include {
            if !BASEARCHES.contains(&key.as_str()) {
                bail!(
                    "{}: arch-include key `{key}` is not an architecture; allowed: {}",
                    at(shown, text, "arch-include"),
                    BASEARCHES.join(", ")
                );
            }
            if arch_matches(&key, self.arch) {
                for name in names {
                    self.include(path, shown, text, "arch-include", &name, layer, scope)?;
                }
            }
        }

        for entry in conditional {
            let mut holds = true;
            // Every condition is evaluated (no short cut), so a typo is caught on every arch.
            for cond in &entry.cond.0 {
                let fail = |e: CondError| {
                    let extra = match e {
                        CondError::Unknown(_) => format!(" (known variables: {})", vars::known(scope)),
                        _ => String::new(),
                    };
                    anyhow::anyhow!(
                        "{}: conditional-include `if: {cond}`: {e}{extra}",
                        at(shown, text, "conditional-include")
                    )
                };
                let parsed = vars::parse_condition(cond).map_err(fail)?;
                holds &= vars::eval_condition(&parsed, scope).map_err(fail)?;
            }
            if holds {
                match &entry.include {
                    IncludeTarget::Files(names) => {
                        for name in names {
                            self.include(path, shown, text, "conditional-include", name, layer, scope)?;
                        }
                    }
                    IncludeTarget::Inline(map) => self.inline(path, shown, text, map, layer, scope)?,
                }
            }
        }
        Ok(())
    }

    /// Folds a `conditional-include` whose `include` is a map of treefile keys
    /// into `layer`, with the same key checks as a file (its own includes are
    /// relative to `path`).
    fn inline(
        &mut self,
        path: &Path,
        shown: &str,
        text: &str,
        map: &serde_json::Map<String, serde_json::Value>,
        layer: &mut Layer,
        scope: &mut Vars,
    ) -> Result<()> {
        let inline_shown = format!("{} (inline include)", at(shown, text, "conditional-include"));
        let inline_text = serde_json::to_string_pretty(map).context("writing an inline include as JSON")?;
        // Parsed as YAML (JSON is YAML), so unknown keys are refused as in a YAML file.
        let as_yaml = path.with_extension("yaml");
        let parsed = parse::parse_file(&inline_shown, &as_yaml, &inline_text, self.arch)?;
        let (mut child, includes) = Layer::from_parsed(path, &inline_shown, &inline_text, parsed)?;
        let mut child_scope = scope.clone();
        add_vars(&mut child_scope, &child);
        self.load_includes(
            path,
            &inline_shown,
            &inline_text,
            includes,
            &mut child,
            &mut child_scope,
        )?;
        add_vars(scope, &child);
        layer.merge_from(child);
        Ok(())
    }

    /// Reads one included file and folds it into `layer`.
    #[allow(clippy::too_many_arguments)] // the including file's three names and the state it updates
    fn include(
        &mut self,
        path: &Path,
        shown: &str,
        text: &str,
        key: &str,
        name: &str,
        layer: &mut Layer,
        scope: &mut Vars,
    ) -> Result<()> {
        let place = at(shown, text, key);
        let resolved = vars::substitute(name, scope, vars::Syntax::Treefile).map_err(|e| match e {
            SubstError::Unknown(v) => anyhow::anyhow!(
                "{place}: {key} `{name}`: unknown variable `${{{v}}}` (known variables: {})",
                vars::known(scope)
            ),
            SubstError::Unterminated => anyhow::anyhow!("{place}: {key} `{name}`: `${{` without a closing `}}`"),
        })?;
        let target = path.parent().unwrap_or(Path::new("")).join(&resolved);
        parse::check_extension(&self::shown(&target), &target).with_context(|| format!("{place}: {key} `{name}`"))?;
        if self.chain.len() > MAX_DEPTH {
            bail!(
                "{place}: including {} goes deeper than {MAX_DEPTH} levels of includes (top-level: {})",
                self::shown(&target),
                self::shown(&self.chain[0].1)
            );
        }
        if !target.exists() {
            bail!("{place}: included file {} does not exist", self::shown(&target));
        }
        let canonical = target
            .canonicalize()
            .with_context(|| format!("{place}: resolving included file {}", self::shown(&target)))?;
        if let Some(start) = self.chain.iter().position(|(c, _)| *c == canonical) {
            let names: Vec<String> = self.chain[start..]
                .iter()
                .map(|(_, p)| self.chain_name(p))
                .chain([self.chain_name(&target)])
                .collect();
            bail!("include loop: {} (in {})", names.join(" -> "), self.top_dir.display());
        }
        if let Some(first) = self.seen.get(&canonical) {
            bail!(
                "{place}: {} is already included by {first}; rpm-ostree does not allow including a file twice",
                self::shown(&target)
            );
        }
        self.seen.insert(canonical.clone(), shown.to_string());

        let child = self.load(&target, canonical, scope)?;
        add_vars(scope, &child);
        layer.merge_from(child);
        Ok(())
    }
}

/// Adds a layer's variables (and `releasever`) to `scope` where not already set.
fn add_vars(scope: &mut Vars, layer: &Layer) {
    for (k, v) in &layer.variables {
        scope.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if let Some(r) = &layer.releasever {
        scope.entry("releasever".into()).or_insert_with(|| r.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("a/./b/../c.yaml")), PathBuf::from("a/c.yaml"));
        assert_eq!(normalize(Path::new("../x/../y")), PathBuf::from("../y"));
        assert_eq!(
            normalize(Path::new("/t/fedora/../sample.repo")),
            PathBuf::from("/t/sample.repo")
        );
    }
}
