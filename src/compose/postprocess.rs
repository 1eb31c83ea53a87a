//! Postprocessing an assembled rootfs into the OSTree layout, as rpm-ostree
//! does: /etc → /usr/etc, /var content → tmpfiles.d, toplevel directories as
//! symlinks into /var, /opt content → /usr/lib/opt, device nodes and FIFOs →
//! tmpfiles.d, os-release, shadow modes, units, removals.
//!
//! Everything goes through a directory handle for the root (cap-std), so a
//! symlink in the tree can never send a write to the host. The rootfs is a
//! hardlink checkout of the package cache: a file is copied up before it is
//! changed in place, or the cache object would change with it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cap_std::fs::{Dir, Permissions};

use super::nodes;
use crate::rpm::header::HeaderInfo;
use crate::treefile::{OptUsrlocal, Treefile};

/// A toplevel directory that is a symlink in the tree (rpm-ostree's layout).
pub(super) struct Link {
    /// Path in the tree.
    pub(super) path: &'static str,
    /// The symlink's target.
    target: &'static str,
    /// Where that is, from the root.
    pub(super) at: &'static str,
    /// The mode tmpfiles.d creates `at` with, when it is under /var; package
    /// content is moved there. `None` (under /run): content is removed.
    pub(super) var_mode: Option<u32>,
}

#[rustfmt::skip]
const TOPLEVEL_LINKS: &[Link] = &[
    Link { path: "home", target: "var/home", at: "var/home", var_mode: Some(0o755) },
    Link { path: "root", target: "var/roothome", at: "var/roothome", var_mode: Some(0o700) },
    Link { path: "opt", target: "var/opt", at: "var/opt", var_mode: Some(0o755) },
    Link { path: "srv", target: "var/srv", at: "var/srv", var_mode: Some(0o755) },
    Link { path: "mnt", target: "var/mnt", at: "var/mnt", var_mode: Some(0o755) },
    Link { path: "media", target: "run/media", at: "run/media", var_mode: None },
    Link { path: "usr/local", target: "../var/usrlocal", at: "var/usrlocal", var_mode: Some(0o755) },
];

/// The toplevel links of the tree: with `opt-usrlocal: root`, /opt and
/// /usr/local are plain directories instead.
pub(super) fn links(tf: &Treefile) -> impl Iterator<Item = &'static Link> {
    let plain = tf.opt_usrlocal == OptUsrlocal::Root;
    TOPLEVEL_LINKS
        .iter()
        .filter(move |l| !(plain && matches!(l.path, "opt" | "usr/local")))
}

pub use super::var::{Dropped, layered_var_to_tmpfiles};

/// What postprocessing did that a user may want to know.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// tmpfiles.d lines written for /var, /opt and device nodes.
    pub tmpfiles: Vec<String>,
    /// Regular files not shipped: under /var (OSTree never ships /var
    /// content), or under a toplevel directory that is a link into /var.
    pub dropped: Vec<Dropped>,
    /// Entries `/opt/X` moved to `/usr/lib/opt/X`, linked back at boot.
    pub opt_moved: Vec<String>,
    /// Device nodes and FIFOs the packages ship, and what became of each.
    pub nodes: Vec<nodes::Note>,
    /// Toplevel directories whose content was moved into /var: (from, to).
    pub(super) moved_to_var: Vec<(&'static str, &'static str)>,
    /// Paths removed by remove-files / remove-from-packages / documentation / install-langs.
    pub removed: Vec<String>,
    /// Entries copied unchanged from the packages where a directory could not be renamed.
    pub copied: Vec<crate::ostree::commit::layers::Copied>,
    /// The overlay's upper directory (see [`run`]).
    upper: Option<PathBuf>,
}

impl Report {
    /// An empty report for a tree whose overlay upper directory is `upper`
    /// (layering runs single steps, not [`run`]).
    pub fn for_upper(upper: &Path) -> Report {
        Report {
            upper: Some(upper.to_path_buf()),
            ..Report::default()
        }
    }
}

/// Runs every postprocessing step on the rootfs at `root`, after the scripts
/// and with the owners applied.
///
/// `headers` are the packages in the tree (their file lists, for
/// `remove-from-packages`, device nodes and messages); `version` is the
/// commit's version string. `upper` is the overlay's upper directory when
/// `root` is an overlay (an entry not in it comes unchanged from a package).
pub fn run(root: &Dir, tf: &Treefile, version: &str, headers: &[HeaderInfo], upper: Option<&Path>) -> Result<Report> {
    let mut report = Report {
        upper: upper.map(Path::to_path_buf),
        ..Report::default()
    };
    let owned: BTreeMap<String, Vec<String>> = headers
        .iter()
        .map(|h| (h.name.clone(), h.files.iter().map(|f| f.path.clone()).collect()))
        .collect();
    remove_files(root, tf, &owned, &mut report)?;
    if !tf.documentation {
        for d in ["usr/share/doc", "usr/share/man", "usr/share/info"] {
            remove_tree(root, d, &mut report)?;
        }
    }
    if !tf.install_langs.is_empty() {
        filter_langs(root, &tf.install_langs, &mut report)?;
    }
    for f in ["etc/shadow", "etc/gshadow", "etc/shadow-", "etc/gshadow-"] {
        if root.symlink_metadata(f).is_ok_and(|m| m.is_file()) {
            copy_up(root, f)?;
            // The commit records 0000 either way; without root the caller must still read it.
            let mode = if nix::unistd::geteuid().is_root() { 0o000 } else { 0o600 };
            root.set_permissions(f, Permissions::from_std(std::fs::Permissions::from_mode(mode)))
                .with_context(|| format!("setting mode {mode:04o} on /{f}"))?;
        }
    }
    check_group_members(root, &tf.etc_group_members)?;
    let mut lines = opt_to_usr_lib(root, tf, &mut report)?;
    toplevel_links(root, tf, &mut report)?;
    // Before /etc moves: the owners' ids come from the tree's /etc/passwd.
    report.nodes = nodes::plan(root, headers, tf.opt_usrlocal, &report.opt_moved)?;
    lines.extend(report.nodes.iter().filter_map(|n| n.line().map(str::to_string)));
    let packages: HashMap<&str, &str> = headers
        .iter()
        .flat_map(|h| h.files.iter().map(move |f| (f.path.as_str(), h.nevra.as_str())))
        .collect();
    super::var::var_to_tmpfiles(root, tf, lines, &packages, &mut report)?;
    etc_to_usr_etc(root, &mut report)?;
    os_release(root, tf, version)?;
    systemd_units(root, tf)?;
    ostree_dirs(root, tf)?;
    Ok(report)
}

/// Replaces `path` by a private copy with the same content and mode, so
/// changing it leaves the hardlinked repository object alone.
pub fn copy_up(root: &Dir, path: &str) -> Result<()> {
    let meta = root
        .symlink_metadata(path)
        .with_context(|| format!("copy-up of /{path}"))?;
    if !meta.is_file() {
        bail!("copy-up of /{path}: not a regular file");
    }
    let bytes = root.read(path).with_context(|| format!("reading /{path}"))?;
    let tmp = format!("{path}.arbor-copyup");
    root.write(&tmp, &bytes).with_context(|| format!("writing /{tmp}"))?;
    root.set_permissions(&tmp, meta.permissions())
        .with_context(|| format!("setting the mode of /{tmp}"))?;
    root.rename(&tmp, root, path)
        .with_context(|| format!("replacing /{path}"))?;
    Ok(())
}

/// Writes `content` to `path` through a temp file and a rename (never in place).
pub fn replace_file(root: &Dir, path: &str, content: &[u8], mode: u32) -> Result<()> {
    let tmp = format!("{path}.arbor-new");
    root.write(&tmp, content).with_context(|| format!("writing /{tmp}"))?;
    root.set_permissions(&tmp, Permissions::from_std(std::fs::Permissions::from_mode(mode)))
        .with_context(|| format!("setting the mode of /{tmp}"))?;
    root.rename(&tmp, root, path)
        .with_context(|| format!("writing /{path}"))?;
    Ok(())
}

fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

pub(super) fn remove_tree(root: &Dir, path: &str, report: &mut Report) -> Result<()> {
    match root.symlink_metadata(path) {
        Ok(m) if m.is_dir() => root.remove_dir_all(path),
        Ok(_) => root.remove_file(path),
        Err(_) => return Ok(()),
    }
    .with_context(|| format!("removing /{path}"))?;
    report.removed.push(format!("/{path}"));
    Ok(())
}

fn remove_files(root: &Dir, tf: &Treefile, owned: &BTreeMap<String, Vec<String>>, report: &mut Report) -> Result<()> {
    for p in &tf.remove_files {
        if p.split('/').any(|c| c == "..") {
            bail!("remove-files: {p:?} must not contain ..");
        }
        remove_tree(root, rel(p), report)?;
    }
    for rfp in &tf.remove_from_packages {
        let files = owned
            .get(&rfp.package)
            .with_context(|| format!("remove-from-packages: package {} is not in the tree", rfp.package))?;
        for pattern in &rfp.patterns {
            let re = glob_free_regex(pattern)?;
            for f in files.iter().filter(|f| re.is_match(f)) {
                if root.symlink_metadata(rel(f)).is_ok_and(|m| !m.is_dir()) {
                    root.remove_file(rel(f)).with_context(|| format!("removing {f}"))?;
                    report.removed.push(f.clone());
                }
            }
        }
    }
    Ok(())
}

/// rpm-ostree's remove-from-packages patterns are regular expressions; arbor
/// supports the subset used in practice: anchors `^`/`$`, `.`, `.*`, literals
/// (escaped with `\`).
fn glob_free_regex(pattern: &str) -> Result<SimpleRegex> {
    SimpleRegex::new(pattern)
}

/// A tiny regular-expression matcher for `^ $ . * \` — enough for the path
/// patterns treefiles use, without a regex engine dependency.
struct SimpleRegex {
    anchored: bool,
    tokens: Vec<(Tok, bool)>,
    end: bool,
}

#[derive(Clone, Copy)]
enum Tok {
    Any,
    Lit(char),
}

impl SimpleRegex {
    fn new(p: &str) -> Result<SimpleRegex> {
        let (anchored, p) = match p.strip_prefix('^') {
            Some(r) => (true, r),
            None => (false, p),
        };
        let (end, p) = match p.strip_suffix('$') {
            Some(r) if !r.ends_with('\\') => (true, r),
            _ => (false, p),
        };
        let mut tokens: Vec<(Tok, bool)> = Vec::new();
        let mut chars = p.chars();
        while let Some(c) = chars.next() {
            let tok = match c {
                '.' => Tok::Any,
                '\\' => Tok::Lit(chars.next().context("remove-from-packages: pattern ends with \\")?),
                '*' => {
                    let last = tokens
                        .last_mut()
                        .context("remove-from-packages: pattern starts with *")?;
                    last.1 = true;
                    continue;
                }
                '[' | ']' | '(' | ')' | '|' | '+' | '?' | '{' | '}' => {
                    bail!("remove-from-packages: pattern {p:?} uses {c:?}; supported are literals, ., .*, ^ and $")
                }
                c => Tok::Lit(c),
            };
            tokens.push((tok, false));
        }
        Ok(SimpleRegex { anchored, tokens, end })
    }

    fn is_match(&self, s: &str) -> bool {
        let chars: Vec<char> = s.chars().collect();
        let starts: Vec<usize> = if self.anchored {
            vec![0]
        } else {
            (0..=chars.len()).collect()
        };
        starts.into_iter().any(|i| self.match_at(&chars, i, 0))
    }

    fn match_at(&self, s: &[char], i: usize, t: usize) -> bool {
        if t == self.tokens.len() {
            return !self.end || i == s.len();
        }
        let (tok, star) = self.tokens[t];
        let one =
            |i: usize| i < s.len() && matches!(tok, Tok::Any) || matches!(tok, Tok::Lit(c) if s.get(i) == Some(&c));
        if star {
            let mut j = i;
            loop {
                if self.match_at(s, j, t + 1) {
                    return true;
                }
                if !one(j) {
                    return false;
                }
                j += 1;
            }
        }
        one(i) && self.match_at(s, i + 1, t + 1)
    }
}

fn filter_langs(root: &Dir, langs: &[String], report: &mut Report) -> Result<()> {
    let Ok(dir) = root.open_dir("usr/share/locale") else {
        return Ok(());
    };
    let mut names: Vec<String> = dir
        .entries()
        .context("listing /usr/share/locale")?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
        .collect();
    names.sort();
    for name in names {
        let base = name.split(['_', '.', '@']).next().unwrap_or(&name);
        let keep = langs.iter().any(|l| l == &name || l == base) || !dir.is_dir(&name);
        if !keep {
            remove_tree(root, &format!("usr/share/locale/{name}"), report)?;
        }
    }
    Ok(())
}

fn check_group_members(root: &Dir, groups: &[String]) -> Result<()> {
    if groups.is_empty() {
        return Ok(());
    }
    let text = root
        .read_to_string("etc/group")
        .context("etc-group-members: reading /etc/group")?;
    for g in groups {
        if !text.lines().any(|l| l.split(':').next() == Some(g.as_str())) {
            bail!("etc-group-members: group {g:?} is not in the tree's /etc/group");
        }
    }
    Ok(())
}

/// With `opt-usrlocal: var`, each entry `/opt/X` (from a package or a script)
/// moves to `/usr/lib/opt/X` and a tmpfiles.d line links `/opt/X` (that is
/// `/var/opt/X`) to it at boot, as rpm-ostree does: vendor software in /opt is
/// part of the tree, updated with it and read-only. Returns those lines.
fn opt_to_usr_lib(root: &Dir, tf: &Treefile, report: &mut Report) -> Result<Vec<String>> {
    if tf.opt_usrlocal != OptUsrlocal::Var || !root.symlink_metadata("opt").is_ok_and(|m| m.is_dir()) {
        return Ok(Vec::new());
    }
    let mut names = Vec::new();
    for e in root.read_dir("opt").context("listing /opt")? {
        let name = e.context("listing /opt")?.file_name();
        match name.into_string() {
            Ok(n) => names.push(n),
            Err(n) => bail!("/opt/{}: the name is not valid UTF-8", n.to_string_lossy()),
        }
    }
    names.sort();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let existed = root.exists("usr/lib/opt");
    ensure_real_dirs(root, "usr/lib/opt")?;
    if !existed {
        root.set_permissions(
            "usr/lib/opt",
            Permissions::from_std(std::fs::Permissions::from_mode(0o755)),
        )
        .context("setting the mode of /usr/lib/opt")?;
    }
    let mut lines = Vec::new();
    for name in names {
        let (from, to) = (format!("opt/{name}"), format!("usr/lib/opt/{name}"));
        if root.symlink_metadata(&to).is_ok() {
            bail!("/{from} moves to /{to} (opt-usrlocal: var), which the tree already has: they conflict");
        }
        // A symlink of the package is made again with its own target where that
        // resolves the same from /var/opt (so `rpm -V` finds it unchanged).
        let own = match root.symlink_metadata(&from) {
            Ok(m) if m.is_symlink() => root
                .read_link_contents(&from)
                .with_context(|| format!("reading the link /{from}"))?
                .to_str()
                .filter(|t| t.starts_with('/') || !t.split('/').any(|c| c == ".."))
                .and_then(|t| crate::tmpfiles::symlink_line(&format!("/{from}"), t).ok()),
            _ => None,
        };
        let line = match own {
            Some(line) => line,
            None => crate::tmpfiles::symlink_line(&format!("/{from}"), &format!("../../{to}"))?,
        };
        lines.push(line);
        move_tree(root, &from, &to, report)?;
        report.opt_moved.push(format!("/{from}"));
    }
    Ok(lines)
}

fn toplevel_links(root: &Dir, tf: &Treefile, report: &mut Report) -> Result<()> {
    if tf.opt_usrlocal == OptUsrlocal::Root {
        // Plain directories, content kept (rpm-ostree creates them too).
        for d in ["opt", "usr/local"] {
            if root.symlink_metadata(d).is_err() {
                root.create_dir_all(d).with_context(|| format!("creating /{d}"))?;
                root.set_permissions(d, Permissions::from_std(std::fs::Permissions::from_mode(0o755)))
                    .with_context(|| format!("setting the mode of /{d}"))?;
            }
        }
    }
    for &Link {
        path,
        target,
        at: var_dir,
        var_mode,
    } in links(tf)
    {
        match root.symlink_metadata(path) {
            Ok(m) if m.is_symlink() => continue,
            Ok(m) if m.is_dir() => {
                // Package content here belongs to /var now: move it there, tmpfiles recreates it.
                let has_content = root
                    .read_dir(path)
                    .with_context(|| format!("listing /{path}"))?
                    .next()
                    .is_some();
                if has_content && var_mode.is_some() {
                    if root.exists(var_dir) {
                        bail!("/{path} has content and /{var_dir} exists too: refusing to merge them");
                    }
                    root.create_dir_all(Path::new(var_dir).parent().unwrap_or(Path::new("var")))
                        .with_context(|| format!("creating the parent of /{var_dir}"))?;
                    move_tree(root, path, var_dir, report)?;
                    report.moved_to_var.push((path, var_dir));
                } else {
                    if has_content {
                        report.removed.push(format!("/{path}"));
                    }
                    root.remove_dir_all(path).with_context(|| format!("removing /{path}"))?;
                }
            }
            Ok(_) => bail!("/{path} is a file in the tree; it must be a directory or a symlink"),
            Err(_) => {}
        }
        if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
            root.create_dir_all(parent)
                .with_context(|| format!("creating /{}", parent.display()))?;
        }
        root.symlink_contents(target, path)
            .with_context(|| format!("linking /{path} -> {target}"))?;
    }
    Ok(())
}

fn etc_to_usr_etc(root: &Dir, report: &mut Report) -> Result<()> {
    if !root.is_dir("etc") {
        root.create_dir_all("usr/etc").context("creating /usr/etc")?;
        return Ok(());
    }
    if let Ok(m) = root.symlink_metadata("usr/etc") {
        let what = if m.is_symlink() {
            let target = root.read_link_contents("usr/etc").unwrap_or_default();
            format!("a symlink to {}", target.display())
        } else {
            "already there".to_string()
        };
        bail!(
            "the tree has both /etc and /usr/etc ({what}; made by a script, no package ships it): \
             arbor moves /etc to /usr/etc"
        );
    }
    ensure_real_dirs(root, "usr")?;
    move_tree(root, "etc", "usr/etc", report)
}

/// Moves the directory `from` into the existing directory `to`, entry by
/// entry (layering: a layered package's /etc into the base's /usr/etc). A
/// file both have must be identical (conflicts were refused before); entries
/// copied from a package are listed in `report.copied` like [`move_tree`]'s.
pub fn merge_tree(root: &Dir, from: &str, to: &str, report: &mut Report) -> Result<()> {
    if !root.exists(to) {
        return move_tree(root, from, to, report);
    }
    let mut names: Vec<String> = root
        .read_dir(from)
        .with_context(|| format!("listing /{from}"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing /{from}"))?;
    names.sort();
    for name in names {
        let (f, t) = (format!("{from}/{name}"), format!("{to}/{name}"));
        let fm = root.symlink_metadata(&f).with_context(|| format!("looking at /{f}"))?;
        match root.symlink_metadata(&t) {
            Ok(tm) if tm.is_dir() && fm.is_dir() => merge_tree(root, &f, &t, report)?,
            Ok(tm) if tm.is_file() && fm.is_file() && root.read(&f).ok() == root.read(&t).ok() => {
                root.remove_file(&f).with_context(|| format!("removing /{f}"))?;
            }
            Ok(_) => bail!("/{f} would replace /{t}, which the base tree has: they conflict"),
            Err(_) if fm.is_dir() => move_tree(root, &f, &t, report)?,
            Err(_) => {
                let (src, dst) = (
                    root.open_dir(from).with_context(|| format!("opening /{from}"))?,
                    root.open_dir(to).with_context(|| format!("opening /{to}"))?,
                );
                if fm.is_symlink() {
                    let target = src.read_link_contents(&name).with_context(|| format!("reading /{f}"))?;
                    dst.symlink_contents(target, &name)
                        .with_context(|| format!("creating /{t}"))?;
                } else {
                    src.copy(&name, &dst, &name)
                        .with_context(|| format!("copying /{f} to /{t}"))?;
                }
                copy_meta(&src, &name, &dst, &name, &format!("/{t}"))?;
                note_copy(&dst, &name, &f, &t, report)?;
                root.remove_file(&f).with_context(|| format!("removing /{f}"))?;
            }
        }
    }
    root.remove_dir(from)
        .with_context(|| format!("removing /{from} after merging it into /{to}"))
}

/// Creates `path` and its parents as directories, refusing (by name) a
/// component that a script made a symlink or file: arbor writes beneath it.
pub fn ensure_real_dirs(root: &Dir, path: &str) -> Result<()> {
    let mut at = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(part);
        match root.symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                let what = if m.is_symlink() {
                    let target = root.read_link_contents(&at).unwrap_or_default();
                    format!("a symlink to {}", target.display())
                } else {
                    "not a directory".to_string()
                };
                bail!("/{at} is {what} (made by a script; no package ships it): arbor writes /{path} there");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                root.create_dir(&at).with_context(|| format!("creating /{at}"))?;
            }
            Err(e) => return Err(e).with_context(|| format!("looking at /{at}")),
        }
    }
    Ok(())
}

/// Renames the directory `from` to `to`. overlayfs (without `redirect_dir`)
/// cannot rename a directory of a lower layer (EXDEV): then it is copied —
/// modes, owners and symlinks kept — and the original removed; entries copied
/// straight from a package are listed in `report.copied` for the commit.
fn move_tree(root: &Dir, from: &str, to: &str, report: &mut Report) -> Result<()> {
    match root.rename(from, root, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            root.create_dir(to).with_context(|| format!("creating /{to}"))?;
            let src = root.open_dir(from).with_context(|| format!("opening /{from}"))?;
            let dst = root.open_dir(to).with_context(|| format!("opening /{to}"))?;
            copy_dir(&src, &dst, from, to, report)?;
            copy_meta(root, from, root, to, &format!("/{to}"))?;
            note_copy(root, to, from, to, report)?;
            root.remove_dir_all(from)
                .with_context(|| format!("removing /{from} after copying it to /{to}"))
        }
        Err(e) => Err(e).with_context(|| format!("moving /{from} to /{to}")),
    }
}

fn copy_dir(src: &Dir, dst: &Dir, from: &str, to: &str, report: &mut Report) -> Result<()> {
    for entry in src.entries().with_context(|| format!("listing /{from}"))? {
        let entry = entry.with_context(|| format!("listing /{from}"))?;
        let name = entry.file_name();
        let name_s = name.to_string_lossy();
        let (from_child, to_child) = (format!("{from}/{name_s}"), format!("{to}/{name_s}"));
        let shown = format!("/{to_child}");
        let md = src
            .symlink_metadata(&name)
            .with_context(|| format!("looking at /{from_child}"))?;
        if md.is_dir() {
            dst.create_dir(&name).with_context(|| format!("creating {shown}"))?;
            let (s, d) = (
                src.open_dir(&name).with_context(|| format!("opening /{from_child}"))?,
                dst.open_dir(&name).with_context(|| format!("opening {shown}"))?,
            );
            copy_dir(&s, &d, &from_child, &to_child, report)?;
        } else if md.is_symlink() {
            let target = src
                .read_link_contents(&name)
                .with_context(|| format!("reading the link /{from_child}"))?;
            dst.symlink_contents(target, &name)
                .with_context(|| format!("creating {shown}"))?;
        } else if md.is_file() {
            src.copy(&name, dst, &name)
                .with_context(|| format!("copying to {shown}"))?;
        } else {
            bail!("{shown}: only files, directories and symlinks can be moved here");
        }
        copy_meta(src, &name, dst, &name, &shown)?;
        note_copy(dst, &name, &from_child, &to_child, report)?;
    }
    Ok(())
}

/// Lists the copy at `dst/name` (tree path `to`) of the tree path `from` when
/// that came straight from a package: absent from the upper directory (an
/// entry there was changed or made after the packages were laid out).
fn note_copy(dst: &Dir, name: impl AsRef<Path>, from: &str, to: &str, report: &mut Report) -> Result<()> {
    let from_package = report
        .upper
        .as_ref()
        .is_some_and(|upper| std::fs::symlink_metadata(upper.join(from)).is_err());
    if !from_package {
        return Ok(());
    }
    let md = dst
        .symlink_metadata(name.as_ref())
        .with_context(|| format!("looking at /{to}"))?;
    report.copied.push(crate::ostree::commit::layers::Copied {
        from: format!("/{from}"),
        to: format!("/{to}"),
        ino: cap_std::fs::MetadataExt::ino(&md),
        ctime: (
            cap_std::fs::MetadataExt::ctime(&md),
            cap_std::fs::MetadataExt::ctime_nsec(&md),
        ),
    });
    Ok(())
}

/// The owner (and for directories, the mode) of `src/from` onto `dst/to`.
fn copy_meta(src: &Dir, from: impl AsRef<Path>, dst: &Dir, to: impl AsRef<Path>, shown: &str) -> Result<()> {
    let md = src
        .symlink_metadata(from.as_ref())
        .with_context(|| format!("looking at the source of {shown}"))?;
    let (uid, gid) = (cap_std::fs::MetadataExt::uid(&md), cap_std::fs::MetadataExt::gid(&md));
    nix::unistd::fchownat(
        dst,
        to.as_ref(),
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("setting the owner of {shown}"))?;
    if md.is_dir() {
        dst.set_permissions(to.as_ref(), md.permissions())
            .with_context(|| format!("setting the mode of {shown}"))?;
    }
    Ok(())
}

fn os_release(root: &Dir, tf: &Treefile, version: &str) -> Result<()> {
    let existing = ["usr/lib/os-release", "usr/etc/os-release"]
        .iter()
        .find_map(|p| root.symlink_metadata(p).ok().filter(|m| m.is_file()).map(|_| *p));
    let mut text = match existing {
        Some(p) => root.read_to_string(p).with_context(|| format!("reading /{p}"))?,
        None => format!(
            "NAME=\"arbor\"\nID=arbor\nVERSION=\"{v}\"\nVERSION_ID={v}\nPRETTY_NAME=\"arbor {v} ({arch})\"\n",
            v = tf.releasever.as_deref().unwrap_or(version),
            arch = tf.basearch
        ),
    };
    if let Some(from) = &tf.mutate_os_release {
        // rpm-ostree: the release string inside VERSION/PRETTY_NAME becomes the commit version.
        let mut out = String::new();
        for line in text.lines() {
            if line.starts_with("VERSION=") || line.starts_with("PRETTY_NAME=") {
                let _ = writeln!(out, "{}", line.replacen(from.as_str(), version, 1));
            } else {
                let _ = writeln!(out, "{line}");
            }
        }
        text = out;
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let _ = writeln!(text, "OSTREE_VERSION='{version}'");
    root.create_dir_all("usr/lib").context("creating /usr/lib")?;
    replace_file(root, "usr/lib/os-release", text.as_bytes(), 0o644)?;
    if existing == Some("usr/etc/os-release") || root.symlink_metadata("usr/etc/os-release").is_ok() {
        root.remove_file("usr/etc/os-release")
            .context("removing /usr/etc/os-release")?;
    }
    root.symlink_contents("../usr/lib/os-release", "usr/etc/os-release")
        .context("linking /etc/os-release")?;
    Ok(())
}

fn systemd_units(root: &Dir, tf: &Treefile) -> Result<()> {
    let unitdir = "usr/lib/systemd/system";
    for unit in &tf.units {
        let path = format!("{unitdir}/{unit}");
        let text = root
            .read_to_string(&path)
            .with_context(|| format!("units: {unit} is not in /{unitdir}"))?;
        let wanted_by: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("WantedBy="))
            .flat_map(|v| v.split_whitespace())
            .collect();
        if wanted_by.is_empty() {
            bail!("units: {unit} has no WantedBy= in its [Install] section; it cannot be enabled");
        }
        for target in wanted_by {
            let wants = format!("usr/etc/systemd/system/{target}.wants");
            root.create_dir_all(&wants)
                .with_context(|| format!("creating /{wants}"))?;
            let link = format!("{wants}/{unit}");
            if !root.exists(&link) {
                root.symlink_contents(format!("/{path}"), &link)
                    .with_context(|| format!("enabling {unit}"))?;
            }
        }
    }
    if let Some(target) = &tf.default_target {
        let path = format!("{unitdir}/{target}");
        if !root.exists(&path) {
            bail!("default-target: {target} is not in /{unitdir}");
        }
        root.create_dir_all("usr/etc/systemd/system")
            .context("creating /usr/etc/systemd/system")?;
        let link = "usr/etc/systemd/system/default.target";
        let _ = root.remove_file(link);
        root.symlink_contents(format!("/{path}"), link)
            .context("setting default.target")?;
    }
    Ok(())
}

fn ostree_dirs(root: &Dir, tf: &Treefile) -> Result<()> {
    if !root.exists("sysroot") {
        root.create_dir("sysroot").context("creating /sysroot")?;
    }
    if !root.exists("ostree") {
        root.symlink_contents("sysroot/ostree", "ostree")
            .context("linking /ostree")?;
    }
    if !tf.tmp_is_dir {
        match root.symlink_metadata("tmp") {
            Ok(m) if m.is_dir() => root.remove_dir_all("tmp").context("removing /tmp")?,
            Ok(m) if m.is_symlink() => root.remove_file("tmp").context("removing /tmp")?,
            _ => {}
        }
        root.symlink_contents("sysroot/tmp", "tmp").context("linking /tmp")?;
    } else if !root.exists("tmp") {
        root.create_dir("tmp").context("creating /tmp")?;
        root.set_permissions("tmp", Permissions::from_std(std::fs::Permissions::from_mode(0o1777)))?;
    }
    if tf.machineid_compat && !root.exists("usr/etc/machine-id") {
        replace_file(root, "usr/etc/machine-id", b"", 0o444)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_regex_matches_like_rpm_ostree_patterns() {
        let cases = [
            ("^/usr/share/doc/.*", "/usr/share/doc/hello/README", true),
            ("^/usr/share/doc/.*", "/usr/lib/share/doc/x", false),
            ("/man/", "/usr/share/man/man1/x.1", true),
            ("\\.pyc$", "/usr/lib/a.pyc", true),
            ("\\.pyc$", "/usr/lib/a.pyc.txt", false),
            ("^/etc/x$", "/etc/x", true),
            ("^/etc/x$", "/etc/xy", false),
        ];
        for (p, s, want) in cases {
            assert_eq!(SimpleRegex::new(p).unwrap().is_match(s), want, "{p} ~ {s}");
        }
        assert!(SimpleRegex::new("a(b|c)").is_err());
    }

    #[test]
    fn copy_up_leaves_the_original_inode_alone() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("cache"), "original").unwrap();
        std::fs::create_dir(tmp.path().join("root")).unwrap();
        std::fs::hard_link(tmp.path().join("cache"), tmp.path().join("root/f")).unwrap();
        let root = Dir::open_ambient_dir(tmp.path().join("root"), cap_std::ambient_authority()).unwrap();
        copy_up(&root, "f").unwrap();
        root.write("f", "changed").unwrap();
        assert_eq!(std::fs::read_to_string(tmp.path().join("cache")).unwrap(), "original");
    }
}
