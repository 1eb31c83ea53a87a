//! What the tree cannot carry, as tmpfiles.d lines in one file of the tree's
//! /usr/lib/tmpfiles.d: /var content (directories and symlinks; regular
//! files are dropped and named), the links of /opt entries moved to
//! /usr/lib/opt, and the packages' device nodes and FIFOs (`super::nodes`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cap_std::fs::{Dir, PermissionsExt as _};

use super::postprocess::{Report, links, remove_tree, replace_file};
use crate::treefile::Treefile;

/// A regular file the tree does not ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The path the package (or a script) put it at.
    pub path: String,
    /// The package that ships it (`None`: a script made it).
    pub package: Option<String>,
    /// Why it is not shipped.
    pub why: String,
}

/// Turns everything under /var into tmpfiles.d lines, adds `extra` (/opt
/// links, device nodes) and empties /var. `packages` maps paths to the
/// package shipping them, for the files dropped.
pub(super) fn var_to_tmpfiles(
    root: &Dir,
    tf: &Treefile,
    extra: Vec<String>,
    packages: &HashMap<&str, &str>,
    report: &mut Report,
) -> Result<()> {
    let mut lines = extra;
    for l in links(tf) {
        if let Some(mode) = l.var_mode {
            lines.push(format!("d /{} {mode:04o} root root - -", l.at));
        }
    }
    lines.push("L /var/lib/rpm - - - - ../../usr/lib/sysimage/rpm".to_string());
    if root.is_dir("var") {
        let mut found = Vec::new();
        walk(root, Path::new("var"), &mut found)?;
        let moved = report.moved_to_var.clone();
        lines.extend(var_lines(found, report, &moved, packages));
        root.remove_dir_all("var").context("emptying /var")?;
    }
    root.create_dir("var").context("creating /var")?;
    lines.sort();
    lines.dedup();
    // Parents before children, so `d` lines create in order: by depth on the
    // booted system, where `/opt/x` is `/var/opt/x`.
    lines.sort_by_key(|l| {
        l.split_whitespace()
            .nth(1)
            .map(|p| booted_path(tf, p).matches('/').count())
            .unwrap_or(0)
    });
    write_conf(
        root,
        "arbor-var.conf",
        "the packages' /var content, /opt links and device nodes",
        &lines,
    )?;
    report.tmpfiles = lines;
    Ok(())
}

/// `path` on the booted system, through the toplevel links (`/opt/x` is `/var/opt/x`).
fn booted_path(tf: &Treefile, path: &str) -> String {
    for l in links(tf) {
        if let Some(rest) = path.strip_prefix(&format!("/{}", l.path)) {
            if rest.is_empty() || rest.starts_with('/') {
                return format!("/{}{rest}", l.at);
            }
        }
    }
    path.to_string()
}

/// A regular file under /var that is dropped, named by the path its package
/// (or script) gave it: `/usr/local/bin/x`, not `/var/usrlocal/bin/x`.
fn dropped_file(path: &str, moved: &[(&str, &str)], packages: &HashMap<&str, &str>) -> Dropped {
    let from = moved.iter().find_map(|(from, to)| {
        let rest = path.strip_prefix(&format!("/{to}"))?;
        rest.starts_with('/').then(|| (*from, *to, format!("/{from}{rest}")))
    });
    let (path, why) = match from {
        Some(("usr/local", to, orig)) => (
            orig,
            format!(
                "/usr/local is a link to /{to} (opt-usrlocal: var, as rpm-ostree); \
                 with opt-usrlocal: root the tree ships /usr/local"
            ),
        ),
        Some((from, to, orig)) => (
            orig,
            format!("/{from} is a link to /{to}, and OSTree trees carry no /var content"),
        ),
        None => (
            path.to_string(),
            "OSTree trees carry no /var content (tmpfiles.d creates only directories and links there)".to_string(),
        ),
    };
    Dropped {
        package: packages.get(path.as_str()).map(|p| p.to_string()),
        path,
        why,
    }
}

enum Kind {
    Dir(u32),
    Symlink(PathBuf),
    File,
}

fn walk(root: &Dir, dir: &Path, out: &mut Vec<(PathBuf, Kind)>) -> Result<()> {
    let mut entries: Vec<_> = root
        .read_dir(dir)
        .with_context(|| format!("listing /{}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing /{}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = dir.join(e.file_name());
        let ft = e.file_type().with_context(|| format!("reading /{}", path.display()))?;
        if ft.is_dir() {
            let mode = root.symlink_metadata(&path)?.permissions().mode() & 0o7777;
            out.push((path.clone(), Kind::Dir(mode)));
            walk(root, &path, out)?;
        } else if ft.is_symlink() {
            let target = root
                .read_link_contents(&path)
                .with_context(|| format!("reading /{}", path.display()))?;
            out.push((path, Kind::Symlink(target)));
        } else {
            out.push((path, Kind::File));
        }
    }
    Ok(())
}

/// tmpfiles.d lines for what `walk` found under /var: directories and
/// symlinks; regular files cannot be made by tmpfiles and are reported dropped.
fn var_lines(
    found: Vec<(PathBuf, Kind)>,
    report: &mut Report,
    moved: &[(&str, &str)],
    packages: &HashMap<&str, &str>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (path, kind) in found {
        let p = path.display();
        match kind {
            Kind::Dir(mode) => lines.push(format!("d /{p} {mode:04o} root root - -")),
            Kind::Symlink(target) => lines.push(format!("L /{p} - - - - {}", target.display())),
            Kind::File => report.dropped.push(dropped_file(&format!("/{p}"), moved, packages)),
        }
    }
    lines
}

/// What layered packages and their scripts put under /var, as tmpfiles.d
/// lines in `usr/lib/tmpfiles.d/{name}`, and /var emptied again (the base's
/// own lines stay in its file). Regular files are dropped and listed.
pub fn layered_var_to_tmpfiles(root: &Dir, name: &str, report: &mut Report) -> Result<()> {
    if !root.is_dir("var") {
        return Ok(());
    }
    let mut found = Vec::new();
    walk(root, Path::new("var"), &mut found)?;
    if found.is_empty() {
        return Ok(());
    }
    let lines = var_lines(found, report, &[], &HashMap::new());
    let mut names: Vec<String> = root
        .read_dir("var")
        .context("listing /var")?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .context("listing /var")?;
    names.sort();
    for n in names {
        remove_tree(root, &format!("var/{n}"), report)?;
    }
    write_conf(root, name, "the layered packages' /var content", &lines)?;
    report.tmpfiles = lines;
    Ok(())
}

/// Writes `lines` to `usr/lib/tmpfiles.d/{name}` in the tree, headed by a
/// comment saying what they are for.
fn write_conf(root: &Dir, name: &str, what: &str, lines: &[String]) -> Result<()> {
    let mut text = format!("# Created by arbor from {what}.\n");
    for l in lines {
        let _ = writeln!(text, "{l}");
    }
    root.create_dir_all("usr/lib/tmpfiles.d")
        .context("creating /usr/lib/tmpfiles.d")?;
    replace_file(root, &format!("usr/lib/tmpfiles.d/{name}"), text.as_bytes(), 0o644)
}
