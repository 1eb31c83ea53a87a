//! Package layering on a device: `arbor install`, `uninstall`, `override
//! remove|replace|reset` — rpm-ostree's client-side layering, with the
//! scriptlets of a layering memoized (`memo`).
//!
//! What is layered is recorded in the deployment's origin (rpm-ostree's
//! keys: `[packages] requested`, `requested-local`; `[overrides] remove`,
//! `replace-local`), so `arbor upgrade` layers the same request onto each
//! new base. A layered deployment's commit is local: the base commit plus
//! the packages, with `arbor.base-commit` naming its base. Local RPMs are
//! kept in `ostree/arbor/local-rpms/<NEVRA>.rpm` for later layerings.

pub mod build;
pub mod memo;
mod resolve;
mod verbs;

use std::collections::BTreeMap;

use serde::Serialize;

pub use verbs::{Change, Options, Outcome, apply_change, base_of, relayer};

/// Where local RPMs are kept, relative to the sysroot.
pub const LOCAL_RPMS: &str = "ostree/arbor/local-rpms";
/// The layering cache (metadata, packages, checkouts), relative to the
/// sysroot: on the repository's filesystem, as checkouts hardlink into it.
pub const CACHE: &str = "ostree/arbor/cache";
/// Refs that keep the base commits of layered deployments.
pub const BASE_REF_PREFIX: &str = "arbor/base/";

/// What is layered on a base.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Layering {
    /// Packages requested by name, provide or path (from the repositories).
    pub packages: Vec<String>,
    /// Local RPMs layered (NEVRA).
    pub local: Vec<String>,
    /// Base packages hidden (name).
    pub remove: Vec<String>,
    /// Local RPMs replacing the base package of the same name (NEVRA).
    pub replace: Vec<String>,
}

const KEYS: [&str; 4] = [
    "packages.requested",
    "packages.requested-local",
    "overrides.remove",
    "overrides.replace-local",
];

impl Layering {
    /// Nothing layered: the deployment is its base commit.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty() && self.local.is_empty() && self.remove.is_empty() && self.replace.is_empty()
    }

    fn lists(&self) -> [&Vec<String>; 4] {
        [&self.packages, &self.local, &self.remove, &self.replace]
    }

    /// From a deployment's origin lists (`group.key` → values).
    pub fn from_origin(lists: &BTreeMap<String, Vec<String>>) -> Layering {
        let get = |k: &str| lists.get(k).cloned().unwrap_or_default();
        Layering {
            packages: get(KEYS[0]),
            local: get(KEYS[1]),
            remove: get(KEYS[2]),
            replace: get(KEYS[3]),
        }
    }

    /// As origin lists (empty lists left out).
    pub fn to_origin(&self) -> BTreeMap<String, Vec<String>> {
        KEYS.iter()
            .zip(self.lists())
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    /// One line per request, for the commit metadata.
    pub fn to_lines(&self) -> Vec<String> {
        let kinds = ["install", "install-local", "remove", "replace-local"];
        kinds
            .iter()
            .zip(self.lists())
            .flat_map(|(k, v)| v.iter().map(move |x| format!("{k} {x}")))
            .collect()
    }

    /// A short description (`strace, +foo.rpm, -bar`).
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self.packages.clone();
        parts.extend(self.local.iter().map(|n| format!("{n} (local)")));
        parts.extend(self.remove.iter().map(|n| format!("-{n}")));
        parts.extend(self.replace.iter().map(|n| format!("{n} (replacing)")));
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layering_round_trips_through_the_origin() {
        let l = Layering {
            packages: vec!["strace".into(), "htop".into()],
            local: vec!["foo-1.0-1.aarch64".into()],
            remove: vec!["bar".into()],
            replace: vec![],
        };
        let o = l.to_origin();
        assert_eq!(o.len(), 3);
        assert_eq!(o["packages.requested"], ["strace", "htop"]);
        assert_eq!(Layering::from_origin(&o), l);
        assert!(Layering::from_origin(&BTreeMap::new()).is_empty());
        assert_eq!(l.summary(), "strace, htop, foo-1.0-1.aarch64 (local), -bar");
        assert_eq!(l.to_lines()[2], "install-local foo-1.0-1.aarch64");
    }
}
