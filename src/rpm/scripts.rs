//! A package's scriptlets and triggers, read from its header into plain data
//! for `crate::scriptlet::plan` (which decides what runs, in what order).
//!
//! Read from the raw header tags rather than the `rpm` crate's helpers, because
//! those lose what rpm itself uses: a `-p <prog>` scriptlet without a body has
//! only its `*PROG` tag (rpm still runs it, see `rpmScriptFromTag` in rpm's
//! lib/rpmscript.c), and file triggers carry priorities
//! (`RPMTAG_FILETRIGGERPRIORITIES` = 5084, `RPMTAG_TRANSFILETRIGGERPRIORITIES`
//! = 5085 in rpmtag.h; 5072 is `RPMTAG_FILETRIGGERFLAGS`).

use std::path::Path;

use anyhow::{Context, Result, bail};
use rpm::IndexTag;

/// rpm's priority for a file trigger without `-P` (`RPMTRIGGER_DEFAULT_PRIORITY`).
pub const DEFAULT_FILE_TRIGGER_PRIORITY: u32 = 1_000_000;

/// How to run one scriptlet: an interpreter and the script text it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Interpreter argv: `["<lua>"]` for rpm's embedded lua, `["/bin/sh"]` when
    /// the header has a body and no program (rpm's default).
    pub program: Vec<String>,
    /// The script text; `None` for `-p /sbin/ldconfig` style scriptlets, which
    /// rpm runs as the bare program, without a script file or arguments.
    pub body: Option<String>,
}

impl Script {
    /// Whether rpm runs this with its embedded lua interpreter.
    pub fn is_lua(&self) -> bool {
        self.program.first().is_some_and(|p| p == "<lua>")
    }
}

/// When a trigger fires (the `RPMSENSE_TRIGGER*` bit of its condition flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerKind {
    /// `%triggerin` / `%filetriggerin` / `%transfiletriggerin`: after install.
    In,
    /// `%triggerun` and friends: before erase (never on a fresh install).
    Un,
    /// `%triggerpostun` and friends: after erase (never on a fresh install).
    PostUn,
    /// `%triggerprein`: before the target's install.
    PreIn,
}

impl TriggerKind {
    fn from_flags(flags: u32) -> Option<Self> {
        const IN: u32 = 1 << 16;
        const UN: u32 = 1 << 17;
        const POSTUN: u32 = 1 << 18;
        const PREIN: u32 = 1 << 25;
        [
            (IN, Self::In),
            (UN, Self::Un),
            (POSTUN, Self::PostUn),
            (PREIN, Self::PreIn),
        ]
        .into_iter()
        .find(|(bit, _)| flags & bit != 0)
        .map(|(_, k)| k)
    }
}

/// A package trigger (`%triggerin -- bash >= 5`), one per script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageTrigger {
    /// When it fires.
    pub kind: TriggerKind,
    /// What runs.
    pub script: Script,
    /// Target package names with an optional `(op, evr)` condition, op being
    /// one of `<`, `<=`, `=`, `>=`, `>`; in header order.
    pub targets: Vec<(String, Option<(String, String)>)>,
}

/// A file trigger (`%filetriggerin -- /usr/lib`), one per script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTrigger {
    /// `%transfiletrigger*` (once per transaction) rather than `%filetrigger*`.
    pub transaction: bool,
    /// When it fires.
    pub kind: TriggerKind,
    /// What runs.
    pub script: Script,
    /// Path prefixes, matched as plain string prefixes (as rpm does).
    pub prefixes: Vec<String>,
    /// Higher runs first; rpm's default is [`DEFAULT_FILE_TRIGGER_PRIORITY`].
    pub priority: u32,
}

/// Everything about one package that decides which of its scripts run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackageScripts {
    /// `name-[epoch:]version-release.arch`.
    pub nevra: String,
    /// Name.
    pub name: String,
    /// `[epoch:]version-release`, the epoch only when set and not 0.
    pub evr: String,
    /// `%pretrans`.
    pub pretrans: Option<Script>,
    /// `%pre`.
    pub pre: Option<Script>,
    /// `%post`.
    pub post: Option<Script>,
    /// `%posttrans`.
    pub posttrans: Option<Script>,
    /// Package triggers, in header (script index) order.
    pub triggers: Vec<PackageTrigger>,
    /// File and transaction file triggers, in header (script index) order,
    /// `%filetrigger*` first.
    pub file_triggers: Vec<FileTrigger>,
    /// Installed paths (files, directories, symlinks; not `%ghost`), in header order.
    pub files: Vec<String>,
}

/// Reads the scriptlets, triggers and file list of the .rpm at `path`.
pub fn read(path: &Path) -> Result<PackageScripts> {
    let ctx = || format!("reading the scriptlets of {}", path.display());
    let m = super::blob::open_metadata(path).with_context(ctx)?;
    from_metadata(&m).with_context(ctx)
}

/// [`read`] for a header blob as the rpm database stores it (rpm's
/// `headerExport`: no magic, the install-time tags after the immutable region).
pub fn from_header_blob(blob: &[u8]) -> Result<PackageScripts> {
    // Bounds-checked first: the `rpm` crate slices the data by the blob's
    // offsets, and a database can be as damaged as any package.
    super::blob::Blob::parse(blob.to_vec()).context("parsing the header blob")?;
    // The `rpm` crate parses only whole packages: the blob goes behind a
    // binary lead (`rpmlead.c`) and an empty signature header.
    let mut pkg = Vec::with_capacity(96 + 16 + 8 + blob.len());
    pkg.extend_from_slice(&[0xed, 0xab, 0xee, 0xdb, 3, 0]);
    pkg.extend_from_slice(&0u16.to_be_bytes()); // type: binary
    pkg.extend_from_slice(&1u16.to_be_bytes()); // archnum
    pkg.extend_from_slice(&[0; 66]); // name
    pkg.extend_from_slice(&1u16.to_be_bytes()); // osnum
    pkg.extend_from_slice(&5u16.to_be_bytes()); // signature type: header-style
    pkg.extend_from_slice(&[0; 16]); // reserved
    let magic = super::blob::HEADER_MAGIC;
    pkg.extend_from_slice(&magic);
    pkg.extend_from_slice(&[0; 8]); // no entries, no data: no padding either
    pkg.extend_from_slice(&magic);
    pkg.extend_from_slice(blob);
    let m = rpm::PackageMetadata::parse(&mut pkg.as_slice()).context("parsing the header blob")?;
    from_metadata(&m)
}

/// [`read`] for a header already in memory.
pub fn from_metadata(m: &rpm::PackageMetadata) -> Result<PackageScripts> {
    let (name, evr, nevra) = super::header::name_evr_nevra(m)?;
    let h = &m.header;
    use IndexTag::*;
    let pretrans = scriptlet(
        h,
        "%pretrans",
        RPMTAG_PRETRANS,
        RPMTAG_PRETRANSPROG,
        RPMTAG_PRETRANSFLAGS,
    )?;
    let pre = scriptlet(h, "%pre", RPMTAG_PREIN, RPMTAG_PREINPROG, RPMTAG_PREINFLAGS)?;
    let post = scriptlet(h, "%post", RPMTAG_POSTIN, RPMTAG_POSTINPROG, RPMTAG_POSTINFLAGS)?;
    let posttrans = scriptlet(
        h,
        "%posttrans",
        RPMTAG_POSTTRANS,
        RPMTAG_POSTTRANSPROG,
        RPMTAG_POSTTRANSFLAGS,
    )?;

    let triggers = raw_triggers(h, &NORMAL)?
        .into_iter()
        .map(|t| PackageTrigger {
            kind: t.kind,
            script: t.script,
            targets: t
                .conditions
                .into_iter()
                .map(|(name, flags, version)| {
                    let cond = (!version.is_empty()).then(|| (op(flags).to_string(), version));
                    (name, cond)
                })
                .collect(),
        })
        .collect();
    let mut file_triggers = Vec::new();
    for (tags, transaction) in [(&FILE, false), (&TRANSFILE, true)] {
        file_triggers.extend(raw_triggers(h, tags)?.into_iter().map(|t| FileTrigger {
            transaction,
            kind: t.kind,
            script: t.script,
            prefixes: t.conditions.into_iter().map(|(name, _, _)| name).collect(),
            priority: t.priority,
        }));
    }

    let files = m
        .get_file_entries()?
        .into_iter()
        .filter(|e| !e.flags().contains(rpm::FileFlags::GHOST))
        .map(|e| e.path().to_string_lossy().into_owned())
        .collect();
    Ok(PackageScripts {
        nevra,
        name,
        evr,
        pretrans,
        pre,
        post,
        posttrans,
        triggers,
        file_triggers,
        files,
    })
}

/// `RPMSCRIPT_FLAG_EXPAND` and `RPMSCRIPT_FLAG_QFORMAT`: rpm rewrites such a
/// body with its macro engine or query formats before running it, which arbor
/// does not do, so running the raw text would be wrong.
const UNSUPPORTED_FLAGS: u32 = 0b11;

fn check_flags(what: &str, flags: u32) -> Result<()> {
    if flags & UNSUPPORTED_FLAGS != 0 {
        bail!(
            "{what} needs rpm macro or queryformat expansion at install time (flags {flags:#x}), which arbor does not do"
        );
    }
    Ok(())
}

/// One of `%pre`, `%post`, ...: present when its body or its program tag is
/// (rpm's `rpmScriptFromTag`).
fn scriptlet(
    h: &rpm::Header<IndexTag>,
    what: &str,
    body_tag: IndexTag,
    prog_tag: IndexTag,
    flags_tag: IndexTag,
) -> Result<Option<Script>> {
    let body = optional(h.get_entry_data_as_string(body_tag))?.map(str::to_string);
    let program = optional(h.get_entry_data_as_string_array(prog_tag))?
        .map(|v| v.into_iter().map(str::to_string).collect::<Vec<_>>());
    if body.is_none() && program.is_none() {
        return Ok(None);
    }
    check_flags(what, optional(h.get_entry_data_as_u32(flags_tag))?.unwrap_or(0))?;
    let program = program
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| vec!["/bin/sh".to_string()]);
    Ok(Some(Script { program, body }))
}

/// `Ok(None)` for a missing tag, the error for anything else.
fn optional<T>(r: Result<T, rpm::Error>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(rpm::Error::TagNotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The tags of one trigger family.
struct TriggerTags {
    what: &'static str,
    scripts: IndexTag,
    progs: IndexTag,
    script_flags: IndexTag,
    names: IndexTag,
    versions: IndexTag,
    flags: IndexTag,
    index: IndexTag,
    priorities: Option<IndexTag>,
}

const NORMAL: TriggerTags = TriggerTags {
    what: "%trigger",
    scripts: IndexTag::RPMTAG_TRIGGERSCRIPTS,
    progs: IndexTag::RPMTAG_TRIGGERSCRIPTPROG,
    script_flags: IndexTag::RPMTAG_TRIGGERSCRIPTFLAGS,
    names: IndexTag::RPMTAG_TRIGGERNAME,
    versions: IndexTag::RPMTAG_TRIGGERVERSION,
    flags: IndexTag::RPMTAG_TRIGGERFLAGS,
    index: IndexTag::RPMTAG_TRIGGERINDEX,
    priorities: None,
};
const FILE: TriggerTags = TriggerTags {
    what: "%filetrigger",
    scripts: IndexTag::RPMTAG_FILETRIGGERSCRIPTS,
    progs: IndexTag::RPMTAG_FILETRIGGERSCRIPTPROG,
    script_flags: IndexTag::RPMTAG_FILETRIGGERSCRIPTFLAGS,
    names: IndexTag::RPMTAG_FILETRIGGERNAME,
    versions: IndexTag::RPMTAG_FILETRIGGERVERSION,
    flags: IndexTag::RPMTAG_FILETRIGGERFLAGS,
    index: IndexTag::RPMTAG_FILETRIGGERINDEX,
    priorities: Some(IndexTag::RPMTAG_FILETRIGGERPRIORITIES),
};
const TRANSFILE: TriggerTags = TriggerTags {
    what: "%transfiletrigger",
    scripts: IndexTag::RPMTAG_TRANSFILETRIGGERSCRIPTS,
    progs: IndexTag::RPMTAG_TRANSFILETRIGGERSCRIPTPROG,
    script_flags: IndexTag::RPMTAG_TRANSFILETRIGGERSCRIPTFLAGS,
    names: IndexTag::RPMTAG_TRANSFILETRIGGERNAME,
    versions: IndexTag::RPMTAG_TRANSFILETRIGGERVERSION,
    flags: IndexTag::RPMTAG_TRANSFILETRIGGERFLAGS,
    index: IndexTag::RPMTAG_TRANSFILETRIGGERINDEX,
    priorities: Some(IndexTag::RPMTAG_TRANSFILETRIGGERPRIORITIES),
};

/// A trigger script with its conditions `(name, flags, version)`.
struct RawTrigger {
    kind: TriggerKind,
    script: Script,
    conditions: Vec<(String, u32, String)>,
    priority: u32,
}

fn raw_triggers(h: &rpm::Header<IndexTag>, t: &TriggerTags) -> Result<Vec<RawTrigger>> {
    let Some(scripts) = optional(h.get_entry_data_as_string_array(t.scripts))? else {
        return Ok(Vec::new());
    };
    let what = t.what;
    let progs = optional(h.get_entry_data_as_string_array(t.progs))?.unwrap_or_default();
    let script_flags = optional(h.get_entry_data_as_u32_array(t.script_flags))?.unwrap_or_default();
    let names = h
        .get_entry_data_as_string_array(t.names)
        .with_context(|| format!("{what} names"))?;
    let versions = h
        .get_entry_data_as_string_array(t.versions)
        .with_context(|| format!("{what} versions"))?;
    let flags = h
        .get_entry_data_as_u32_array(t.flags)
        .with_context(|| format!("{what} flags"))?;
    let index = h
        .get_entry_data_as_u32_array(t.index)
        .with_context(|| format!("{what} index"))?;
    let priorities = match t.priorities {
        Some(tag) => optional(h.get_entry_data_as_u32_array(tag))?.unwrap_or_default(),
        None => Vec::new(),
    };
    if versions.len() != names.len() || flags.len() != names.len() || index.len() != names.len() {
        bail!("{what} condition arrays have different lengths");
    }
    let mut out = Vec::with_capacity(scripts.len());
    for (i, body) in scripts.iter().enumerate() {
        check_flags(what, script_flags.get(i).copied().unwrap_or(0))?;
        // rpm keeps only the interpreter for triggers (`rpmScriptFromTriggerTag`)
        // and always has a body string; an empty one is what `-p prog` without
        // a body leaves, which we run as the bare program.
        let program = vec![progs.get(i).copied().unwrap_or("/bin/sh").to_string()];
        let script = Script {
            program,
            body: (!body.is_empty()).then(|| body.to_string()),
        };
        let conditions: Vec<(String, u32, String)> = (0..names.len())
            .filter(|&c| index[c] as usize == i)
            .map(|c| (names[c].to_string(), flags[c], versions[c].to_string()))
            .collect();
        // rpm looks at the first condition of a script for its kind.
        let Some(kind) = conditions.first().and_then(|c| TriggerKind::from_flags(c.1)) else {
            bail!("{what} script {i} has no condition with a trigger type");
        };
        out.push(RawTrigger {
            kind,
            script,
            conditions,
            priority: priorities.get(i).copied().unwrap_or(DEFAULT_FILE_TRIGGER_PRIORITY),
        });
    }
    Ok(out)
}

/// The comparison of a dependency's sense flags (`RPMSENSE_LESS|GREATER|EQUAL`).
fn op(flags: u32) -> &'static str {
    match flags & 0b1110 {
        0b0010 => "<",
        0b1010 => "<=",
        0b1000 => "=",
        0b1100 => ">=",
        0b0100 => ">",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpm::{DependencyFlags, FileOptions, PackageBuilder, Scriptlet};

    fn build(dir: &Path, f: impl FnOnce(&mut PackageBuilder)) -> std::path::PathBuf {
        let mut b = PackageBuilder::new("demo", "1.2", "MIT", "noarch", "demo package");
        b.release("3").epoch(2);
        b.with_file_contents(b"x".to_vec(), FileOptions::new("/usr/lib/demo/a.so"))
            .unwrap();
        b.with_dir_entry(FileOptions::dir("/usr/lib/demo")).unwrap();
        b.with_ghost(FileOptions::new("/var/log/demo.log").ghost()).unwrap();
        f(&mut b);
        let path = dir.join("demo.rpm");
        b.build().unwrap().write_file(&path).unwrap();
        path
    }

    #[test]
    fn reads_scriptlets_triggers_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = build(dir.path(), |b| {
            b.pre_trans_script(Scriptlet::new("print('hi')").prog(vec!["<lua>"]))
                .pre_install_script("echo pre")
                .post_install_script(Scriptlet::new("echo post").prog(vec!["/bin/bash", "-e"]))
                .trigger_in(
                    "bash",
                    Some((DependencyFlags::GREATER | DependencyFlags::EQUAL, "5.0")),
                    "echo t",
                )
                .trigger_un("bash", None, "echo u")
                .file_trigger_in("/usr/lib", None, Scriptlet::new("").prog(vec!["/sbin/ldconfig"]))
                .trans_file_trigger_in("/usr/share/info", None, "cat");
        });
        let s = read(&path).unwrap();
        assert_eq!(s.nevra, "demo-2:1.2-3.noarch");
        assert_eq!((s.name.as_str(), s.evr.as_str()), ("demo", "2:1.2-3"));
        let pretrans = s.pretrans.unwrap();
        assert!(pretrans.is_lua());
        assert_eq!(pretrans.body.as_deref(), Some("print('hi')"));
        assert_eq!(
            s.pre,
            Some(Script {
                program: vec!["/bin/sh".into()],
                body: Some("echo pre".into())
            })
        );
        assert_eq!(s.post.unwrap().program, ["/bin/bash", "-e"]);
        assert_eq!(s.posttrans, None);
        assert_eq!(s.triggers.len(), 2);
        assert_eq!(s.triggers[0].kind, TriggerKind::In);
        assert_eq!(
            s.triggers[0].targets,
            [("bash".to_string(), Some((">=".to_string(), "5.0".to_string())))]
        );
        assert_eq!(s.triggers[1].kind, TriggerKind::Un);
        assert_eq!(s.triggers[1].targets, [("bash".to_string(), None)]);
        assert_eq!(s.file_triggers.len(), 2);
        let ft = &s.file_triggers[0];
        assert!(!ft.transaction);
        assert_eq!(ft.kind, TriggerKind::In);
        assert_eq!(ft.prefixes, ["/usr/lib"]);
        assert_eq!(ft.priority, DEFAULT_FILE_TRIGGER_PRIORITY);
        assert_eq!(
            ft.script,
            Script {
                program: vec!["/sbin/ldconfig".into()],
                body: None
            }
        );
        assert!(s.file_triggers[1].transaction);
        assert_eq!(s.file_triggers[1].script.body.as_deref(), Some("cat"));
        assert!(s.files.contains(&"/usr/lib/demo/a.so".to_string()));
        assert!(s.files.contains(&"/usr/lib/demo".to_string()));
        assert!(
            !s.files.iter().any(|f| f.contains("demo.log")),
            "ghosts are not installed"
        );
    }

    #[test]
    fn header_blobs_read_like_their_package() {
        let dir = tempfile::tempdir().unwrap();
        let path = build(dir.path(), |b| {
            b.post_install_script("echo post")
                .trans_file_trigger_in("/usr/lib", None, "echo t");
        });
        let (_, main) = crate::rpm::blob::read_package(&path).unwrap();
        assert_eq!(from_header_blob(main.bytes()).unwrap(), read(&path).unwrap());
        // Damaged blobs are errors, not panics in the `rpm` crate.
        let mut bad = main.bytes().to_vec();
        bad[8 + 16 + 8..8 + 16 + 12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(from_header_blob(&bad).is_err());
        assert!(from_header_blob(&main.bytes()[..20]).is_err());
    }

    #[test]
    fn package_without_scripts_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        let s = read(&build(dir.path(), |_| {})).unwrap();
        assert!(s.pretrans.is_none() && s.pre.is_none() && s.post.is_none() && s.posttrans.is_none());
        assert!(s.triggers.is_empty() && s.file_triggers.is_empty());
    }

    #[test]
    fn macro_expanded_scriptlets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = build(dir.path(), |b| {
            b.post_install_script(Scriptlet::new("echo %{_libdir}").flags(rpm::ScriptletFlags::EXPAND));
        });
        let err = format!("{:#}", read(&path).unwrap_err());
        assert!(err.contains("%post needs rpm macro"), "{err}");
    }

    #[test]
    fn sense_flags_map_to_operators() {
        assert_eq!(op(DependencyFlags::LESS.bits()), "<");
        assert_eq!(op((DependencyFlags::LESS | DependencyFlags::EQUAL).bits()), "<=");
        assert_eq!(op(DependencyFlags::EQUAL.bits()), "=");
        assert_eq!(op((DependencyFlags::GREATER | DependencyFlags::EQUAL).bits()), ">=");
        assert_eq!(op(DependencyFlags::GREATER.bits()), ">");
        assert_eq!(
            TriggerKind::from_flags(DependencyFlags::TRIGGERPREIN.bits()),
            Some(TriggerKind::PreIn)
        );
        assert_eq!(TriggerKind::from_flags(0), None);
    }
}
