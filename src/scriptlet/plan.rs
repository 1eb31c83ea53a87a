//! Which scriptlets rpm runs when it installs a package set into an empty
//! root, in what order, with what arguments and stdin. Pure: no I/O.
//!
//! Modelled on rpm's own code (rpm-software-management/rpm, current C++ era,
//! i.e. rpm 4.20/6.0; the order is the same since 4.13 except where noted):
//!
//! * lib/transaction.c `rpmtsRun`: every `%pretrans` first, in transaction
//!   order; then each package's install (below); then every `%posttrans`; then
//!   the `%transfiletriggerin` scripts of each installed package in transaction
//!   order (`runTransScripts(PKG_TRANSFILETRIGGERIN)`). Trans file triggers of
//!   packages already in the rpmdb would run before those, but the root is empty.
//! * lib/psm.c `rpmPackageInstall`, for each package P in transaction order:
//!   1. `%triggerprein` of installed packages on P (`runTriggers`), then P's own
//!      `%triggerprein` on installed packages (`runImmedTriggers`). P is not in
//!      the rpmdb yet, so its instance count is 0 there.
//!   2. `%pre`; the files are laid down (by the caller, before the next step);
//!      P is added to the rpmdb.
//!   3. `%filetriggerin` of priority >= 10000 (`TRIGGER_PRIORITY_BOUND`; the
//!      default 1000000 is in this class): first those of every installed
//!      package, P included, matching P's files (`runFileTriggers`, stdin = P's
//!      matching files), then P's own matching the files of every installed
//!      package, P included (`runImmedFileTriggers`). So a package's file
//!      trigger matching its own files runs twice, as in rpm.
//!   4. `%post`.
//!   5. `%triggerin` of installed packages on P, P included, then P's own on
//!      installed packages, P included (so a trigger on its own name runs twice).
//!   6. `%filetriggerin` of priority < 10000, as in 3.
//! * lib/rpmtriggers.c: file triggers are collected, sorted by priority
//!   (higher first), then rpmdb header number (= install order here), then
//!   script index. Prefixes match as plain string prefixes (`cmpPfx` is a
//!   `strncmp` over the whole path): `/usr/lib` matches `/usr/lib`,
//!   `/usr/lib/x` and `/usr/lib64/x`. Matching files against the rpmdb first
//!   finds packages through the dirnames index, so there a package only counts
//!   when one of its directory names (with trailing `/`) starts with the prefix.
//!   stdin lists matching paths one per line: per prefix of the trigger, then
//!   per package in install order, then in header order (duplicates when
//!   prefixes overlap, as in rpm).
//! * Arguments (`runScript(..., arg1, arg2)`; lib/rpmscript.c passes `argN >= 0`
//!   only, and only when the script has a body): `%pre`/`%post`/`%pretrans` get
//!   the instances of the package after install (1); `%posttrans` and
//!   `%transfiletriggerin` the instances installed; package triggers get
//!   (instances of the trigger's package, instances of the other package);
//!   `%filetriggerin` get (instances of the trigger's package, instances of the
//!   package whose files fired it). rpm before 4.20 passed `0 0` to file
//!   triggers instead.
//! * lib/psm.c `handleOneTrigger`: the first condition of the trigger package
//!   naming the other package, with a satisfied version range, runs its script;
//!   later ones for the same pair do not.
//!
//! Simplifications: a trigger's version range is checked against the target's
//! own `name = evr` only (rpm checks every provide with that name); conditions
//! are walked per script in script order (rpm walks the header's condition
//! array, the same order for rpmbuild-made packages); `%ghost` files are not in
//! [`PackageScripts::files`], so they never fire file triggers; rpm ≥ 6.0 also
//! runs `systemd-sysusers` for `user()`/`group()` provides before step 1, which
//! is `crate::scriptlet::users`' job; `%triggerun`/`%triggerpostun` and the
//! un/postun file triggers only fire on erase, so never here.

use std::cmp::Ordering;
use std::fmt;

use crate::rpm::scripts::{FileTrigger, PackageScripts, Script, TriggerKind};

/// rpm's `TRIGGER_PRIORITY_BOUND`: file triggers at or above it run before `%post`.
const PRIORITY_BOUND: u32 = 10_000;

/// A kind of scriptlet run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// `%pretrans`.
    PreTrans,
    /// `%triggerprein`.
    TriggerPreIn,
    /// `%pre`.
    Pre,
    /// `%post`.
    Post,
    /// `%triggerin`.
    TriggerIn,
    /// `%filetriggerin`.
    FileTriggerIn,
    /// `%posttrans`.
    PostTrans,
    /// `%transfiletriggerin`.
    TransFileTriggerIn,
}

impl Phase {
    /// Whether rpm treats a failure as fatal for the package (`RPMSCRIPT_FLAG_CRITICAL`
    /// is a default of `%pre` and `%pretrans` in lib/rpmscript.c); others only warn.
    pub fn critical(self) -> bool {
        matches!(self, Phase::PreTrans | Phase::Pre)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::PreTrans => "%pretrans",
            Phase::TriggerPreIn => "%triggerprein",
            Phase::Pre => "%pre",
            Phase::Post => "%post",
            Phase::TriggerIn => "%triggerin",
            Phase::FileTriggerIn => "%filetriggerin",
            Phase::PostTrans => "%posttrans",
            Phase::TransFileTriggerIn => "%transfiletriggerin",
        })
    }
}

/// One scriptlet run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// NEVRA of the package whose script runs.
    pub package: String,
    /// Which kind of script.
    pub phase: Phase,
    /// What runs.
    pub script: Script,
    /// `$1`, `$2` (`arg[2]`, `arg[3]` in lua) as rpm passes them; empty for a
    /// script without a body, which rpm runs as the bare program.
    pub args: Vec<String>,
    /// For file triggers: the matching paths, one per line (each ending in `\n`).
    pub stdin: Option<String>,
    /// For triggers: the package (NEVRA) that fired it, or for file triggers
    /// matched against all installed files, `files of <nevra> <nevra>...`.
    pub cause: Option<String>,
}

/// The scriptlet runs of installing `pkgs`, given in transaction order, into an
/// empty root. `cmp` compares two `[epoch:]version[-release]` strings as rpm
/// does (`crate::rpm::vercmp::evrcmp`); it is a parameter so this stays pure
/// and testable on its own.
pub fn plan(pkgs: &[PackageScripts], cmp: impl Fn(&str, &str) -> Ordering) -> Vec<Step> {
    let mut p = Planner {
        pkgs,
        cmp: &cmp,
        db: Vec::new(),
        steps: Vec::new(),
    };
    for (i, pkg) in pkgs.iter().enumerate() {
        if let Some(s) = &pkg.pretrans {
            // Instances after install: none in the (empty) rpmdb, plus this one.
            p.push(i, Phase::PreTrans, s, &[p.count(&pkg.name) + 1], None, None);
        }
    }
    for i in 0..pkgs.len() {
        p.install(i);
    }
    for (i, pkg) in pkgs.iter().enumerate() {
        if let Some(s) = &pkg.posttrans {
            p.push(i, Phase::PostTrans, s, &[p.count(&pkg.name)], None, None);
        }
    }
    for (i, pkg) in pkgs.iter().enumerate() {
        let arg1 = p.count(&pkg.name);
        for (t, _) in p.own_file_triggers(i, true, None) {
            p.run_file_trigger(i, t, Phase::TransFileTriggerIn, Match::Db, &[arg1]);
        }
    }
    p.steps
}

/// The scriptlet runs of installing `new` (transaction order) on top of
/// `installed` (already in the rpmdb, install order), as rpm runs them for
/// `rpm -i` of `new` into a root holding `installed`: the new packages' own
/// scripts, the package and file triggers of installed packages that the new
/// ones set off, and the new packages' triggers on what is installed. The
/// installed packages' `%transfiletriggerin` see only the new packages' files
/// (rpm's `runFileTriggers` before `runImmedFileTriggers`).
pub fn plan_layered(
    installed: &[PackageScripts],
    new: &[PackageScripts],
    cmp: impl Fn(&str, &str) -> Ordering,
) -> Vec<Step> {
    let pkgs: Vec<PackageScripts> = installed.iter().chain(new).cloned().collect();
    let first_new = installed.len();
    let fresh = first_new..pkgs.len();
    let mut p = Planner {
        pkgs: &pkgs,
        cmp: &cmp,
        db: (0..first_new).collect(),
        steps: Vec::new(),
    };
    for (i, pkg) in pkgs.iter().enumerate().skip(first_new) {
        if let Some(s) = &pkg.pretrans {
            p.push(i, Phase::PreTrans, s, &[p.count(&pkg.name) + 1], None, None);
        }
    }
    for i in fresh.clone() {
        p.install(i);
    }
    for (i, pkg) in pkgs.iter().enumerate().skip(first_new) {
        if let Some(s) = &pkg.posttrans {
            p.push(i, Phase::PostTrans, s, &[p.count(&pkg.name)], None, None);
        }
    }
    // Installed packages' transaction file triggers on the new files, by
    // priority, then install order, then script index.
    let mut found: Vec<(u32, usize, &FileTrigger)> = Vec::new();
    for (o, pkg) in pkgs.iter().enumerate().take(first_new) {
        found.extend(
            pkg.file_triggers
                .iter()
                .filter(|t| t.transaction)
                .map(|t| (t.priority, o, t)),
        );
    }
    // A stable sort keeps the script order within a package.
    found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, o, t) in found {
        if t.kind != TriggerKind::In {
            continue;
        }
        let mut paths = String::new();
        let mut from: Vec<&str> = Vec::new();
        for pfx in &t.prefixes {
            for pkg in &pkgs[fresh.clone()] {
                for f in pkg.files.iter().filter(|f| f.starts_with(pfx.as_str())) {
                    paths.push_str(f);
                    paths.push('\n');
                    if !from.contains(&pkg.nevra.as_str()) {
                        from.push(&pkg.nevra);
                    }
                }
            }
        }
        if paths.is_empty() {
            continue;
        }
        let arg1 = p.count(&pkgs[o].name);
        let cause = Some(format!("files of {}", from.join(" ")));
        p.push(o, Phase::TransFileTriggerIn, &t.script, &[arg1], Some(paths), cause);
    }
    for (i, pkg) in pkgs.iter().enumerate().skip(first_new) {
        let arg1 = p.count(&pkg.name);
        for (t, _) in p.own_file_triggers(i, true, None) {
            p.run_file_trigger(i, t, Phase::TransFileTriggerIn, Match::Db, &[arg1]);
        }
    }
    p.steps
}

/// Where a file trigger looks for matching files.
#[derive(Clone, Copy)]
enum Match {
    /// The files of one package (rpm's search mode 0).
    Package(usize),
    /// The files of every installed package (mode 2).
    Db,
}

struct Planner<'a> {
    pkgs: &'a [PackageScripts],
    cmp: &'a dyn Fn(&str, &str) -> Ordering,
    /// Installed packages, in install order (rpm's header numbers).
    db: Vec<usize>,
    steps: Vec<Step>,
}

impl<'a> Planner<'a> {
    /// Instances of `name` in the rpmdb (`rpmdbCountPackages`).
    fn count(&self, name: &str) -> usize {
        self.db.iter().filter(|&&k| self.pkgs[k].name == name).count()
    }

    fn push(
        &mut self,
        pkg: usize,
        phase: Phase,
        script: &Script,
        args: &[usize],
        stdin: Option<String>,
        cause: Option<String>,
    ) {
        self.steps.push(Step {
            package: self.pkgs[pkg].nevra.clone(),
            phase,
            script: script.clone(),
            args: if script.body.is_some() {
                args.iter().map(|a| a.to_string()).collect()
            } else {
                Vec::new()
            },
            stdin,
            cause,
        });
    }

    /// rpm's `rpmPackageInstall` for a fresh install of package `i`.
    fn install(&mut self, i: usize) {
        let pkgs = self.pkgs;
        let pkg = &pkgs[i];
        self.package_triggers(i, TriggerKind::PreIn, Phase::TriggerPreIn);
        if let Some(s) = &pkg.pre {
            self.push(i, Phase::Pre, s, &[self.count(&pkg.name) + 1], None, None);
        }
        self.db.push(i);
        self.file_triggers(i, true);
        if let Some(s) = &pkg.post {
            self.push(i, Phase::Post, s, &[self.count(&pkg.name)], None, None);
        }
        self.package_triggers(i, TriggerKind::In, Phase::TriggerIn);
        self.file_triggers(i, false);
    }

    /// `runTriggers` then `runImmedTriggers` for package `i` and `sense`.
    fn package_triggers(&mut self, i: usize, sense: TriggerKind, phase: Phase) {
        let pkgs = self.pkgs;
        let pkg = &pkgs[i];
        // Triggers of installed packages (in install order) set off by `i`.
        for o in self.db.clone() {
            if let Some(t) = self.first_match(o, i, sense) {
                let owner = &pkgs[o];
                let args = [self.count(&owner.name), self.count(&pkg.name)];
                self.push(
                    o,
                    phase,
                    &owner.triggers[t].script,
                    &args,
                    None,
                    Some(pkg.nevra.clone()),
                );
            }
        }
        // Triggers of `i` set off by installed packages: per condition name in
        // order, each installed package of that name; each script at most once.
        let mut ran = vec![false; pkg.triggers.len()];
        for (tix, trig) in pkg.triggers.iter().enumerate() {
            for (name, _) in &trig.targets {
                if ran[tix] {
                    continue;
                }
                let sources: Vec<usize> = self
                    .db
                    .iter()
                    .copied()
                    .filter(|&k| self.pkgs[k].name == *name)
                    .collect();
                for &s in &sources {
                    let Some(t) = self.first_match(i, s, sense) else {
                        continue;
                    };
                    if ran[t] {
                        continue;
                    }
                    ran[t] = true;
                    let args = [self.count(&pkg.name), sources.len()];
                    let cause = Some(self.pkgs[s].nevra.clone());
                    self.push(i, phase, &pkg.triggers[t].script, &args, None, cause);
                }
            }
        }
    }

    /// `handleOneTrigger`: the script index of the first trigger of `owner`
    /// of kind `sense` whose condition names `source` and is satisfied by it.
    fn first_match(&self, owner: usize, source: usize, sense: TriggerKind) -> Option<usize> {
        let src = &self.pkgs[source];
        self.pkgs[owner].triggers.iter().enumerate().find_map(|(tix, t)| {
            let hit = t.kind == sense
                && t.targets
                    .iter()
                    .any(|(name, cond)| *name == src.name && self.satisfies(&src.evr, cond.as_ref()));
            hit.then_some(tix)
        })
    }

    /// Whether `evr` satisfies `op version`, rpm style: a range without a
    /// release ignores the package's release.
    fn satisfies(&self, evr: &str, cond: Option<&(String, String)>) -> bool {
        let Some((op, want)) = cond else { return true };
        let have = if want.contains('-') {
            evr
        } else {
            evr.rsplit_once('-').map_or(evr, |(ev, _)| ev)
        };
        let ord = (self.cmp)(have, want);
        match op.as_str() {
            "<" => ord == Ordering::Less,
            "<=" => ord != Ordering::Greater,
            "=" => ord == Ordering::Equal,
            ">=" => ord != Ordering::Less,
            ">" => ord == Ordering::Greater,
            _ => true,
        }
    }

    /// `runFileTriggers` then `runImmedFileTriggers` for package `i`, in the
    /// high (`priority >= 10000`) or low priority class.
    fn file_triggers(&mut self, i: usize, high: bool) {
        let in_class = |t: &FileTrigger| (t.priority >= PRIORITY_BOUND) == high;
        // Triggers of every installed package with a prefix matching a file of `i`.
        let pkgs = self.pkgs;
        let files = &pkgs[i].files;
        let mut found: Vec<(u32, usize, usize, usize)> = Vec::new();
        for (hdr, &o) in self.db.iter().enumerate() {
            let own = pkgs[o].file_triggers.iter().filter(|t| !t.transaction);
            for (tix, t) in own.enumerate() {
                if t.prefixes
                    .iter()
                    .any(|p| files.iter().any(|f| f.starts_with(p.as_str())))
                {
                    found.push((t.priority, hdr, tix, o));
                }
            }
        }
        found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let arg2 = self.count(&self.pkgs[i].name);
        for (_, _, tix, o) in found {
            let t = pkgs[o].file_triggers.iter().filter(|t| !t.transaction).nth(tix);
            if let Some(t) = t.filter(|t| in_class(t)) {
                let arg1 = self.count(&self.pkgs[o].name);
                self.run_file_trigger(o, t, Phase::FileTriggerIn, Match::Package(i), &[arg1, arg2]);
            }
        }
        // `i`'s own triggers against every installed file.
        let arg1 = self.count(&self.pkgs[i].name);
        for (t, _) in self.own_file_triggers(i, false, Some(high)) {
            self.run_file_trigger(i, t, Phase::FileTriggerIn, Match::Db, &[arg1]);
        }
    }

    /// Package `i`'s file triggers of one family, sorted as `runImmedFileTriggers`
    /// does (priority, then script index), optionally of one priority class.
    fn own_file_triggers(&self, i: usize, transaction: bool, high: Option<bool>) -> Vec<(&'a FileTrigger, usize)> {
        let pkgs: &'a [PackageScripts] = self.pkgs;
        let mut v: Vec<(&'a FileTrigger, usize)> = pkgs[i]
            .file_triggers
            .iter()
            .filter(|t| t.transaction == transaction)
            .enumerate()
            .map(|(tix, t)| (t, tix))
            .filter(|(t, _)| high.is_none_or(|h| (t.priority >= PRIORITY_BOUND) == h))
            .collect();
        v.sort_by(|a, b| b.0.priority.cmp(&a.0.priority).then(a.1.cmp(&b.1)));
        v
    }

    /// `runHandleTriggersInPkg`: runs `t` of package `owner` if any file
    /// matches. `args` holds arg1 and, for mode 0, arg2; in mode 2 a
    /// `%filetriggerin` gets the instances of the first matching package as arg2.
    fn run_file_trigger(&mut self, owner: usize, t: &FileTrigger, phase: Phase, m: Match, args: &[usize]) {
        if t.kind != TriggerKind::In {
            return;
        }
        let (paths, from) = self.matching(t, m);
        let Some(&first) = from.first() else { return };
        let mut args = args.to_vec();
        if matches!(m, Match::Db) && phase == Phase::FileTriggerIn {
            args.push(self.count(&self.pkgs[first].name));
        }
        let cause = match m {
            Match::Package(p) => self.pkgs[p].nevra.clone(),
            Match::Db => {
                let mut names: Vec<&str> = Vec::new();
                for &k in &from {
                    if !names.contains(&self.pkgs[k].nevra.as_str()) {
                        names.push(&self.pkgs[k].nevra);
                    }
                }
                format!("files of {}", names.join(" "))
            }
        };
        let stdin: String = paths.iter().map(|p| format!("{p}\n")).collect();
        self.push(owner, phase, &t.script, &args, Some(stdin), Some(cause));
    }

    /// The paths matching `t`'s prefixes and, for each, the package it is from.
    fn matching(&self, t: &FileTrigger, m: Match) -> (Vec<&str>, Vec<usize>) {
        let mut paths = Vec::new();
        let mut from = Vec::new();
        for pfx in &t.prefixes {
            let pkgs: Vec<usize> = match m {
                Match::Package(p) => vec![p],
                // The dirnames index finds the candidate packages.
                Match::Db => self
                    .db
                    .iter()
                    .copied()
                    .filter(|&k| self.pkgs[k].files.iter().any(|f| dirname(f).starts_with(pfx.as_str())))
                    .collect(),
            };
            for k in pkgs {
                for f in self.pkgs[k].files.iter().filter(|f| f.starts_with(pfx.as_str())) {
                    paths.push(f.as_str());
                    from.push(k);
                }
            }
        }
        (paths, from)
    }
}

/// rpm's dirname of a path: everything up to and including the last `/`.
fn dirname(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..=i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpm::scripts::PackageTrigger;

    /// A numeric-segment comparison good enough for these tests.
    fn cmp(a: &str, b: &str) -> Ordering {
        let parse = |s: &str| -> Vec<u64> {
            s.split(|c: char| !c.is_ascii_digit())
                .filter(|x| !x.is_empty())
                .map(|x| x.parse().unwrap())
                .collect()
        };
        parse(a).cmp(&parse(b))
    }

    fn sh(body: &str) -> Script {
        Script {
            program: vec!["/bin/sh".into()],
            body: Some(body.into()),
        }
    }

    fn pkg(name: &str, files: &[&str]) -> PackageScripts {
        PackageScripts {
            nevra: format!("{name}-1.0-1.noarch"),
            name: name.into(),
            evr: "1.0-1".into(),
            files: files.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        }
    }

    fn with_all(name: &str) -> PackageScripts {
        let mut p = pkg(name, &[]);
        p.pretrans = Some(sh("pretrans"));
        p.pre = Some(sh("pre"));
        p.post = Some(sh("post"));
        p.posttrans = Some(sh("posttrans"));
        p
    }

    fn trigger(kind: TriggerKind, target: &str, cond: Option<(&str, &str)>, body: &str) -> PackageTrigger {
        PackageTrigger {
            kind,
            script: sh(body),
            targets: vec![(target.into(), cond.map(|(o, v)| (o.into(), v.into())))],
        }
    }

    fn ftrigger(transaction: bool, prefixes: &[&str], priority: u32, body: &str) -> FileTrigger {
        FileTrigger {
            transaction,
            kind: TriggerKind::In,
            script: sh(body),
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            priority,
        }
    }

    /// Steps as `name phase args` lines, for compact assertions.
    fn brief(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| {
                let name = s.package.split('-').next().unwrap();
                format!("{name} {} {}", s.phase, s.args.join(" "))
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn pretrans_first_then_pre_post_per_package_then_posttrans() {
        let got = plan(&[with_all("a"), with_all("b")], cmp);
        assert_eq!(
            brief(&got),
            [
                "a %pretrans 1",
                "b %pretrans 1",
                "a %pre 1",
                "a %post 1",
                "b %pre 1",
                "b %post 1",
                "a %posttrans 1",
                "b %posttrans 1",
            ]
        );
        assert!(got.iter().all(|s| s.stdin.is_none() && s.cause.is_none()));
        assert!(got[2].phase.critical() && !got[3].phase.critical());
    }

    #[test]
    fn layering_runs_new_scripts_and_the_installed_triggers_they_set_off() {
        let mut glibc = pkg("glibc", &["/usr/lib", "/usr/lib/libc.so.6"]);
        glibc.post = Some(sh("base post, never again"));
        glibc.file_triggers = vec![ftrigger(true, &["/usr/lib"], 1_000_000, "ldconfig")];
        let mut watcher = pkg("watcher", &["/usr/share/w"]);
        watcher.triggers = vec![trigger(TriggerKind::In, "lib", None, "saw lib")];
        watcher.file_triggers = vec![ftrigger(false, &["/usr/share/doc"], 1_000_000, "docs")];
        let mut lib = with_all("lib");
        lib.files = vec!["/usr/lib/libx.so.1".into(), "/usr/share/doc/lib/README".into()];
        let tool = pkg("tool", &["/usr/bin/tool"]);
        let got = plan_layered(&[glibc.clone(), watcher], &[lib, tool.clone()], cmp);
        assert_eq!(
            brief(&got),
            [
                "lib %pretrans 1",
                "lib %pre 1",
                "watcher %filetriggerin 1 1",
                "lib %post 1",
                "watcher %triggerin 1 1",
                "lib %posttrans 1",
                "glibc %transfiletriggerin 1",
            ]
        );
        let ldconfig = got.last().unwrap();
        assert_eq!(ldconfig.stdin.as_deref(), Some("/usr/lib/libx.so.1\n"));
        assert_eq!(ldconfig.cause.as_deref(), Some("files of lib-1.0-1.noarch"));
        // Nothing new under a watched prefix: no trigger runs, and no base script reruns.
        assert!(plan_layered(&[glibc], &[tool], cmp).is_empty());
    }

    #[test]
    fn empty_set_and_scriptless_packages_plan_nothing() {
        assert!(plan(&[], cmp).is_empty());
        assert!(plan(&[pkg("a", &["/a"]), pkg("b", &["/b"])], cmp).is_empty());
    }

    #[test]
    fn same_name_twice_counts_instances() {
        let mut a = with_all("a");
        a.nevra = "a-1.0-1.aarch64".into();
        let mut b = with_all("a");
        b.nevra = "a-1.0-1.armv7hl".into();
        assert_eq!(
            brief(&plan(&[a, b], cmp)),
            [
                "a %pretrans 1",
                "a %pretrans 1",
                "a %pre 1",
                "a %post 1",
                "a %pre 2",
                "a %post 2",
                "a %posttrans 2",
                "a %posttrans 2",
            ]
        );
    }

    #[test]
    fn triggerin_fires_when_the_later_package_is_installed() {
        // Owner installed first: fires after the target's %post ("triggered by").
        let mut owner = with_all("owner");
        owner.triggers.push(trigger(TriggerKind::In, "target", None, "t"));
        let target = with_all("target");
        let got = plan(&[owner.clone(), target.clone()], cmp);
        let b = brief(&got);
        let at = b.iter().position(|s| s == "owner %triggerin 1 1").unwrap();
        assert_eq!(b[at - 1], "target %post 1");
        assert_eq!(got[at].cause.as_deref(), Some("target-1.0-1.noarch"));
        assert_eq!(b.iter().filter(|s| s.contains("%triggerin")).count(), 1);

        // Target installed first: fires after the owner's %post ("triggering").
        let got = plan(&[target, owner], cmp);
        let b = brief(&got);
        let at = b.iter().position(|s| s == "owner %triggerin 1 1").unwrap();
        assert_eq!(b[at - 1], "owner %post 1");
        assert_eq!(b[at + 1], "target %posttrans 1");
    }

    #[test]
    fn triggerin_version_conditions() {
        let cases = [
            (">=", "1.0", true),
            (">=", "1.0-2", false),
            (">", "1.0", false),
            ("<", "2", true),
            ("=", "1.0", true),
            ("=", "1.0-1", true),
            ("<=", "0.9", false),
        ];
        for (op, v, fires) in cases {
            let mut owner = pkg("owner", &[]);
            owner
                .triggers
                .push(trigger(TriggerKind::In, "target", Some((op, v)), "t"));
            for order in [[owner.clone(), pkg("target", &[])], [pkg("target", &[]), owner.clone()]] {
                let n = plan(&order, cmp).len();
                assert_eq!(n == 1, fires, "target-1.0-1 {op} {v}");
            }
        }
    }

    #[test]
    fn trigger_on_a_package_not_in_the_set_never_fires() {
        let mut owner = pkg("owner", &[]);
        owner.triggers.push(trigger(TriggerKind::In, "absent", None, "t"));
        assert!(plan(&[owner, pkg("other", &[])], cmp).is_empty());
    }

    #[test]
    fn only_the_first_matching_trigger_per_pair_runs() {
        let mut owner = pkg("owner", &[]);
        owner
            .triggers
            .push(trigger(TriggerKind::In, "target", Some(("<", "1.0")), "old"));
        owner.triggers.push(trigger(TriggerKind::In, "target", None, "any"));
        owner
            .triggers
            .push(trigger(TriggerKind::In, "target", Some((">=", "1.0")), "new"));
        for order in [[owner.clone(), pkg("target", &[])], [pkg("target", &[]), owner.clone()]] {
            let got = plan(&order, cmp);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].script.body.as_deref(), Some("any"));
        }
    }

    #[test]
    fn self_trigger_runs_twice_like_rpm() {
        let mut a = pkg("a", &[]);
        a.triggers.push(trigger(TriggerKind::In, "a", None, "self"));
        assert_eq!(brief(&plan(&[a], cmp)), ["a %triggerin 1 1", "a %triggerin 1 1"]);
    }

    #[test]
    fn triggerprein_fires_before_pre_with_rpm_counts() {
        let mut owner = with_all("owner");
        owner.triggers.push(trigger(TriggerKind::PreIn, "target", None, "p"));
        let b = brief(&plan(&[owner.clone(), with_all("target")], cmp));
        let at = b.iter().position(|s| s == "owner %triggerprein 1 0").unwrap();
        assert_eq!(b[at + 1], "target %pre 1");
        // The other way round the owner is not in the rpmdb yet: $1 = 0.
        let b = brief(&plan(&[with_all("target"), owner], cmp));
        let at = b.iter().position(|s| s == "owner %triggerprein 0 1").unwrap();
        assert_eq!(b[at + 1], "owner %pre 1");
    }

    #[test]
    fn un_and_postun_triggers_never_fire_on_install() {
        let mut owner = pkg("owner", &["/usr/lib/x"]);
        owner.triggers.push(trigger(TriggerKind::Un, "target", None, "u"));
        owner.triggers.push(trigger(TriggerKind::PostUn, "target", None, "pu"));
        let mut ft = ftrigger(false, &["/usr"], 1_000_000, "fu");
        ft.kind = TriggerKind::Un;
        owner.file_triggers.push(ft);
        assert!(plan(&[owner, pkg("target", &["/usr/y"])], cmp).is_empty());
    }

    #[test]
    fn filetrigger_fires_for_later_packages_before_their_post() {
        let mut owner = pkg("owner", &["/etc/owner.conf"]);
        owner
            .file_triggers
            .push(ftrigger(false, &["/usr/lib"], 1_000_000, "ft"));
        let mut lib = with_all("lib");
        lib.files = vec![
            "/usr/lib".into(),
            "/usr/lib/libx.so".into(),
            "/usr/lib64/liby.so".into(),
            "/usr/bin/z".into(),
        ];
        let got = plan(&[owner, lib], cmp);
        assert_eq!(
            brief(&got),
            [
                "lib %pretrans 1",
                "lib %pre 1",
                "owner %filetriggerin 1 1",
                "lib %post 1",
                "lib %posttrans 1"
            ]
        );
        let step = &got[2];
        assert_eq!(
            step.stdin.as_deref(),
            Some("/usr/lib\n/usr/lib/libx.so\n/usr/lib64/liby.so\n"),
            "plain string prefixes, as rpm"
        );
        assert_eq!(step.cause.as_deref(), Some("lib-1.0-1.noarch"));
    }

    #[test]
    fn low_priority_filetrigger_runs_after_post_and_triggerin() {
        let mut owner = pkg("owner", &[]);
        owner.file_triggers.push(ftrigger(false, &["/usr"], 9_999, "low"));
        owner.triggers.push(trigger(TriggerKind::In, "lib", None, "t"));
        let mut lib = with_all("lib");
        lib.files = vec!["/usr/x".into()];
        let b = brief(&plan(&[owner, lib], cmp));
        assert_eq!(
            b[1..5],
            [
                "lib %pre 1",
                "lib %post 1",
                "owner %triggerin 1 1",
                "owner %filetriggerin 1 1"
            ]
            .map(String::from)
        );
    }

    #[test]
    fn filetrigger_owner_installed_last_sees_installed_files() {
        let a = pkg("a", &["/usr/lib/a.so", "/usr/share/a"]);
        let b = pkg("b", &["/usr/lib/b.so"]);
        let mut owner = pkg("owner", &["/usr/lib/owner.so"]);
        owner
            .file_triggers
            .push(ftrigger(false, &["/usr/lib/"], 1_000_000, "ft"));
        let got = plan(&[a, b, owner], cmp);
        // Once for its own files (mode 0), once for everything installed (mode 2).
        assert_eq!(brief(&got), ["owner %filetriggerin 1 1", "owner %filetriggerin 1 1"]);
        assert_eq!(got[0].stdin.as_deref(), Some("/usr/lib/owner.so\n"));
        assert_eq!(
            got[1].stdin.as_deref(),
            Some("/usr/lib/a.so\n/usr/lib/b.so\n/usr/lib/owner.so\n")
        );
        assert_eq!(
            got[1].cause.as_deref(),
            Some("files of a-1.0-1.noarch b-1.0-1.noarch owner-1.0-1.noarch")
        );
    }

    #[test]
    fn filetrigger_owner_without_matching_installed_files_does_not_run() {
        let mut owner = pkg("owner", &[]);
        owner.file_triggers.push(ftrigger(false, &["/opt"], 1_000_000, "ft"));
        assert!(plan(&[pkg("a", &["/usr/x"]), owner, pkg("b", &["/usr/y"])], cmp).is_empty());
    }

    #[test]
    fn filetriggers_sorted_by_priority_then_install_order() {
        let mut o1 = pkg("o1", &[]);
        o1.file_triggers.push(ftrigger(false, &["/x"], 100_000, "o1-low"));
        o1.file_triggers.push(ftrigger(false, &["/x"], 3_000_000, "o1-high"));
        let mut o2 = pkg("o2", &[]);
        o2.file_triggers.push(ftrigger(false, &["/x"], 3_000_000, "o2-high"));
        o2.file_triggers.push(ftrigger(false, &["/x"], 100, "o2-below-bound"));
        let mut t = pkg("t", &["/x/file"]);
        t.post = Some(sh("post"));
        let got = plan(&[o1, o2, t], cmp);
        let bodies: Vec<&str> = got.iter().map(|s| s.script.body.as_deref().unwrap()).collect();
        assert_eq!(bodies, ["o1-high", "o2-high", "o1-low", "post", "o2-below-bound"]);
    }

    #[test]
    fn filetrigger_stdin_is_per_prefix_then_header_order() {
        let mut owner = pkg("owner", &[]);
        owner
            .file_triggers
            .push(ftrigger(false, &["/b", "/a"], 1_000_000, "ft"));
        let got = plan(&[owner, pkg("p", &["/a/1", "/b/1", "/a/2"])], cmp);
        assert_eq!(got.len(), 1, "one run per trigger, not per prefix");
        assert_eq!(got[0].stdin.as_deref(), Some("/b/1\n/a/1\n/a/2\n"));
    }

    #[test]
    fn db_matching_needs_a_matching_dirname_like_rpms_index() {
        // "/usr/lib/libc" matches "/usr/lib/libc.so" as a string, but rpm finds
        // candidate packages through dirnames, and "/usr/lib/" does not match.
        let a = pkg("a", &["/usr/lib/libc.so"]);
        let mut owner = pkg("owner", &[]);
        owner
            .file_triggers
            .push(ftrigger(false, &["/usr/lib/libc"], 1_000_000, "ft"));
        assert!(plan(&[a.clone(), owner.clone()], cmp).is_empty());
        // Matching against one package's files (mode 0) has no such step.
        assert_eq!(plan(&[owner, a], cmp).len(), 1);
    }

    #[test]
    fn transfiletrigger_runs_once_after_posttrans_with_all_files() {
        let mut glibc = with_all("glibc");
        glibc.files = vec!["/usr/lib64/libc.so.6".into(), "/etc/ld.so.conf".into()];
        glibc.file_triggers.push(FileTrigger {
            transaction: true,
            kind: TriggerKind::In,
            script: Script {
                program: vec!["/usr/sbin/ldconfig".into()],
                body: None,
            },
            prefixes: vec!["/lib".into(), "/usr/lib".into(), "/lib64".into(), "/usr/lib64".into()],
            priority: 2_000_000,
        });
        let mut zlib = with_all("zlib");
        zlib.files = vec!["/usr/lib64/libz.so.1".into()];
        let got = plan(&[glibc, zlib], cmp);
        let b = brief(&got);
        assert_eq!(b.iter().filter(|s| s.contains("%transfiletriggerin")).count(), 1);
        assert_eq!(b.last().unwrap(), "glibc %transfiletriggerin");
        assert_eq!(b[b.len() - 2], "zlib %posttrans 1");
        let last = got.last().unwrap();
        assert!(last.args.is_empty(), "no body: rpm runs the bare program");
        // "/usr/lib" also matches "/usr/lib64/..." (string prefix), so those
        // paths are listed twice, as rpm does.
        assert_eq!(
            last.stdin.as_deref(),
            Some("/usr/lib64/libc.so.6\n/usr/lib64/libz.so.1\n/usr/lib64/libc.so.6\n/usr/lib64/libz.so.1\n")
        );
    }

    #[test]
    fn transfiletriggers_in_package_order_then_priority() {
        let mut a = pkg("a", &["/x/a"]);
        a.file_triggers.push(ftrigger(true, &["/x"], 10, "a-low"));
        a.file_triggers.push(ftrigger(true, &["/x"], 5_000_000, "a-high"));
        let mut b = pkg("b", &[]);
        b.file_triggers.push(ftrigger(true, &["/x"], 9_000_000, "b"));
        let got = plan(&[a, b], cmp);
        let bodies: Vec<&str> = got.iter().map(|s| s.script.body.as_deref().unwrap()).collect();
        assert_eq!(bodies, ["a-high", "a-low", "b"]);
        assert!(got.iter().all(|s| s.args == ["1"]));
    }

    #[test]
    fn lua_and_program_only_scripts_are_kept() {
        let mut a = pkg("a", &[]);
        a.pretrans = Some(Script {
            program: vec!["<lua>".into()],
            body: Some("print(1)".into()),
        });
        a.post = Some(Script {
            program: vec!["/sbin/ldconfig".into()],
            body: None,
        });
        let got = plan(&[a], cmp);
        assert!(got[0].script.is_lua());
        assert_eq!(got[0].args, ["1"]);
        assert_eq!(got[1].script.program, ["/sbin/ldconfig"]);
        assert!(got[1].args.is_empty());
    }

    #[test]
    fn phases_display_as_rpm_spells_them() {
        let all = [
            (Phase::PreTrans, "%pretrans"),
            (Phase::TriggerPreIn, "%triggerprein"),
            (Phase::Pre, "%pre"),
            (Phase::Post, "%post"),
            (Phase::TriggerIn, "%triggerin"),
            (Phase::FileTriggerIn, "%filetriggerin"),
            (Phase::PostTrans, "%posttrans"),
            (Phase::TransFileTriggerIn, "%transfiletriggerin"),
        ];
        for (p, s) in all {
            assert_eq!(p.to_string(), s);
        }
    }
}
