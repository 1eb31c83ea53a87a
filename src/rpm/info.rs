//! A summary of one RPM package's header, for `arbor pkg info` and tests.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// What a user wants to know about a package file without installing it.
#[derive(Debug, Clone, Serialize)]
pub struct PackageInfo {
    /// Package name.
    pub name: String,
    /// Epoch, when set.
    pub epoch: Option<u32>,
    /// Version.
    pub version: String,
    /// Release.
    pub release: String,
    /// Arch (rpm name).
    pub arch: String,
    /// One-line summary.
    pub summary: String,
    /// License tag.
    pub license: String,
    /// Installed size in bytes.
    pub installed_size: u64,
    /// Payload compression (`zstd`, `xz`, `gzip`, ...).
    pub payload_compressor: String,
    /// Dependencies, as rpm prints them (`name op version`).
    pub requires: Vec<String>,
    /// Capabilities provided.
    pub provides: Vec<String>,
    /// Obsoleted packages.
    pub obsoletes: Vec<String>,
    /// Conflicting packages.
    pub conflicts: Vec<String>,
    /// Weak forward dependency.
    pub recommends: Vec<String>,
    /// Weaker forward dependency.
    pub suggests: Vec<String>,
    /// Weak reverse dependency.
    pub supplements: Vec<String>,
    /// Weaker reverse dependency.
    pub enhances: Vec<String>,
    /// Scriptlets present, with their interpreter (`post: /bin/sh`).
    pub scriptlets: Vec<String>,
    /// Package triggers, as rpm's spec writes them (`triggerin -- bash >= 5`).
    pub triggers: Vec<String>,
    /// File triggers (`transfiletriggerin -- /usr/lib (priority 1000000)`).
    pub file_triggers: Vec<String>,
    /// Number of file entries (files, directories, symlinks).
    pub file_count: usize,
}

/// Reads the header of the package at `path`.
pub fn read(path: &Path) -> Result<PackageInfo> {
    let pkg = super::blob::open_metadata(path).with_context(|| format!("reading RPM header of {}", path.display()))?;
    let ctx = || format!("reading RPM header of {}", path.display());
    let deps = |v: Vec<rpm::Dependency>| -> Vec<String> { v.iter().map(show_dep).collect() };
    let mut scriptlets = Vec::new();
    for (kind, s) in [
        ("pretrans", pkg.get_pre_trans_script()),
        ("pre", pkg.get_pre_install_script()),
        ("post", pkg.get_post_install_script()),
        ("preun", pkg.get_pre_uninstall_script()),
        ("postun", pkg.get_post_uninstall_script()),
        ("posttrans", pkg.get_post_trans_script()),
    ] {
        if let Ok(s) = s {
            let prog = s.program.map(|p| p.join(" ")).unwrap_or_else(|| "/bin/sh".into());
            scriptlets.push(format!("{kind}: {prog}"));
        }
    }
    // The rpm crate has no getter for %verifyscript.
    if pkg.header.entry_is_present(rpm::IndexTag::RPMTAG_VERIFYSCRIPT)
        || pkg.header.entry_is_present(rpm::IndexTag::RPMTAG_VERIFYSCRIPTPROG)
    {
        let prog = pkg
            .header
            .get_entry_data_as_string_array(rpm::IndexTag::RPMTAG_VERIFYSCRIPTPROG)
            .map(|p| p.join(" "))
            .or_else(|_| {
                pkg.header
                    .get_entry_data_as_string(rpm::IndexTag::RPMTAG_VERIFYSCRIPTPROG)
                    .map(String::from)
            })
            .unwrap_or_else(|_| "/bin/sh".into());
        scriptlets.push(format!("verifyscript: {prog}"));
    }
    // Shown even when arbor could not run them (macro-expanded bodies).
    let scripts = super::scripts::from_metadata(&pkg).unwrap_or_else(|e| {
        tracing::warn!("{}: triggers not shown: {e:#}", path.display());
        super::scripts::PackageScripts::default()
    });
    let kind = |k: super::scripts::TriggerKind| match k {
        super::scripts::TriggerKind::In => "in",
        super::scripts::TriggerKind::Un => "un",
        super::scripts::TriggerKind::PostUn => "postun",
        super::scripts::TriggerKind::PreIn => "prein",
    };
    let triggers = scripts
        .triggers
        .iter()
        .map(|t| {
            let targets: Vec<String> = t
                .targets
                .iter()
                .map(|(name, cond)| match cond {
                    Some((op, evr)) => format!("{name} {op} {evr}"),
                    None => name.clone(),
                })
                .collect();
            format!("trigger{} -- {}", kind(t.kind), targets.join(", "))
        })
        .collect();
    let file_triggers = scripts
        .file_triggers
        .iter()
        .map(|t| {
            format!(
                "{}filetrigger{} -- {} (priority {})",
                if t.transaction { "trans" } else { "" },
                kind(t.kind),
                t.prefixes.join(" "),
                t.priority
            )
        })
        .collect();
    Ok(PackageInfo {
        name: pkg.get_name().with_context(ctx)?.to_string(),
        epoch: pkg.get_epoch().ok(),
        version: pkg.get_version().with_context(ctx)?.to_string(),
        release: pkg.get_release().with_context(ctx)?.to_string(),
        arch: pkg.get_arch().with_context(ctx)?.to_string(),
        summary: pkg.get_summary().unwrap_or_default().to_string(),
        license: pkg.get_license().unwrap_or_default().to_string(),
        installed_size: pkg.get_installed_size().unwrap_or(0),
        payload_compressor: pkg.get_payload_compressor().map(|c| c.to_string()).unwrap_or_default(),
        requires: deps(pkg.get_requires().with_context(ctx)?),
        provides: deps(pkg.get_provides().with_context(ctx)?),
        obsoletes: deps(pkg.get_obsoletes().with_context(ctx)?),
        conflicts: deps(pkg.get_conflicts().with_context(ctx)?),
        recommends: deps(pkg.get_recommends().with_context(ctx)?),
        suggests: deps(pkg.get_suggests().with_context(ctx)?),
        supplements: deps(pkg.get_supplements().with_context(ctx)?),
        enhances: deps(pkg.get_enhances().with_context(ctx)?),
        scriptlets,
        triggers,
        file_triggers,
        file_count: pkg.get_file_paths().map(|p| p.len()).unwrap_or(0),
    })
}

/// Formats a dependency the way `rpm -q --requires` does.
fn show_dep(d: &rpm::Dependency) -> String {
    use rpm::DependencyFlags as F;
    let op = match d.flags & (F::LESS | F::GREATER | F::EQUAL) {
        f if f == F::LESS => "<",
        f if f == F::LESS | F::EQUAL => "<=",
        f if f == F::EQUAL => "=",
        f if f == F::GREATER | F::EQUAL => ">=",
        f if f == F::GREATER => ">",
        _ => "",
    };
    if op.is_empty() || d.version.is_empty() {
        d.name.clone()
    } else {
        format!("{} {op} {}", d.name, d.version)
    }
}
