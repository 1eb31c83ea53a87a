//! Builds one RPM from a sample manifest for one arch, with the `rpm` crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rpm::{Dependency, FileMode, FileOptions, PackageBuilder, Scriptlet};

use crate::debs::{self, DebEntry, DebKind, DebReader, RpmEvr};
use crate::manifest::{Dep, Loaded, Manifest, ScriptKind, TriggerKind, applies, parse_dep};
use arbor::arch::Arch;
use arbor::rpm::elfdeps;

/// Where the inputs of a build come from.
pub struct Inputs<'a> {
    /// Directory holding downloaded .deb files.
    pub deb_cache: &'a Path,
    /// Shared reader so each .deb is unpacked once per run.
    pub debs: &'a DebReader,
    /// Timestamp for the build time and the upper bound of file times.
    pub source_date: u32,
    /// Take `from_deb` packages from these .debs (by Debian package name: file
    /// and control fields) instead of asking apt: the device repository's,
    /// built from exactly the .debs arbor was linked against.
    pub local: Option<&'a BTreeMap<String, (std::path::PathBuf, debs::DebControl)>>,
}

/// A package built in memory, not yet written.
pub struct Built {
    /// `name-[epoch:]version-release.arch.rpm`
    pub file_name: String,
    /// The package.
    pub package: rpm::Package,
    /// Bytes of file content that went into the payload (for throughput figures).
    pub content_bytes: u64,
}

/// What a path in a package is.
#[derive(Clone)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file and its bytes.
    File(Arc<Vec<u8>>),
    /// A symlink and its target.
    Symlink(String),
}

/// One path of a package being built.
pub struct Entry {
    kind: Kind,
    mode: u16,
    user: String,
    group: String,
    mtime: u32,
    config: bool,
    doc: bool,
    license: bool,
    ghost: bool,
}

impl Entry {
    /// `e` from a .deb placed at `target`; times are capped at `source_date`.
    pub fn from_deb(e: &DebEntry, target: &str, source_date: u32) -> Entry {
        let kind = match &e.kind {
            DebKind::Dir => Kind::Dir,
            DebKind::File(b) => Kind::File(b.clone()),
            DebKind::Symlink(t) => Kind::Symlink(t.clone()),
        };
        Entry {
            kind,
            mode: e.mode,
            user: e.user.clone(),
            group: e.group.clone(),
            mtime: e.mtime.min(source_date as u64) as u32,
            config: target.starts_with("/etc/"),
            doc: target.starts_with("/usr/share/doc/"),
            // %license, as rpmbuild marks Fedora's /usr/share/licenses: kept where docs are not.
            license: target.starts_with("/usr/share/licenses/"),
            ghost: false,
        }
    }

    /// A path owned by root with mtime `source_date`.
    pub fn synthetic(kind: Kind, mode: u16, source_date: u32) -> Entry {
        Entry {
            kind,
            mode,
            user: "root".into(),
            group: "root".into(),
            mtime: source_date,
            config: false,
            doc: false,
            license: false,
            ghost: false,
        }
    }

    /// What the path is.
    pub fn kind(&self) -> &Kind {
        &self.kind
    }
}

/// A package's paths, sorted.
pub type Entries = BTreeMap<String, Entry>;
/// Values for `${name}` in manifests.
pub type Vars = BTreeMap<&'static str, String>;

/// The variables every manifest may use for `arch`: `arch`, and `multiarch` for real arches.
pub fn arch_vars(arch: Arch) -> Vars {
    let mut vars = Vars::new();
    vars.insert("arch", arch.rpm_name().to_string());
    if let Some(t) = arch.multiarch() {
        vars.insert("multiarch", t.to_string());
    }
    vars
}

/// Builds `loaded` for `arch`.
pub fn build(loaded: &Loaded, arch: Arch, inputs: &Inputs) -> Result<Built> {
    build_inner(loaded, arch, inputs).with_context(|| {
        format!(
            "building sample package {} for {arch} from {}",
            loaded.manifest.name,
            loaded.file.display()
        )
    })
}

fn build_inner(loaded: &Loaded, arch: Arch, inputs: &Inputs) -> Result<Built> {
    let (entries, evr, vars) = collect(loaded, arch, inputs)?;
    assemble(&loaded.manifest, &evr, &entries, &vars, arch, inputs.source_date)
}

/// The files, version and variables of the package `loaded` describes, not
/// yet assembled into an RPM.
pub fn collect(loaded: &Loaded, arch: Arch, inputs: &Inputs) -> Result<(Entries, RpmEvr, Vars)> {
    let m = &loaded.manifest;
    let mut vars = arch_vars(arch);
    let mut entries = Entries::new();
    let mut evr: Option<RpmEvr> = None;

    for src in m.from_deb.iter().filter(|d| applies(&d.arches, arch)) {
        let deb_arch = src.deb_arch.clone().unwrap_or_else(|| arch.deb_name().to_string());
        let (path, version, spec) = match inputs.local {
            Some(local) => {
                if src.via_depends.is_some() {
                    bail!("from_deb {}: via_depends needs apt, not local .debs", src.package);
                }
                let (path, control) = local
                    .get(&src.package)
                    .with_context(|| format!("Debian package {} is not among the given .debs", src.package))?;
                (path.clone(), control.version.clone(), src.package.clone())
            }
            None => {
                let mut rec = debs::apt_show(src.apt, &src.package, &deb_arch)?;
                if let Some(prefix) = &src.via_depends {
                    let real = debs::via_depends(&rec, prefix)?;
                    rec = debs::apt_show(src.apt, &real, &deb_arch)?;
                }
                (debs::fetch(&rec, inputs.deb_cache)?, rec.version, rec.spec)
            }
        };
        if evr.is_none() {
            evr = Some(debs::deb_to_rpm_evr(&version)?);
        }
        let contents = inputs.debs.get(&path)?;
        if let Some(kver) = contents.kernel_version() {
            vars.insert("kver", kver);
        }
        for rule in &src.copy {
            if !applies(&rule.arches, arch) {
                continue;
            }
            let from = expand(&rule.src, &vars)?;
            let dest = expand(&rule.dest, &vars)?;
            let mut matched = 0;
            for e in &contents.entries {
                let Some(rest) = e.path.strip_prefix(from.as_str()) else {
                    continue;
                };
                if !(rest.is_empty() || rest.starts_with('/')) {
                    continue;
                }
                let rel = rest.trim_start_matches('/');
                if rule
                    .exclude
                    .iter()
                    .any(|x| rel == x || rel.starts_with(&format!("{x}/")))
                {
                    continue;
                }
                matched += 1;
                let target = if rest.is_empty() {
                    dest.clone()
                } else {
                    format!("{dest}{rest}")
                };
                let entry = Entry::from_deb(e, &target, inputs.source_date);
                insert(&mut entries, target, entry)?;
            }
            if matched == 0 {
                bail!("copy src {from:?} matches nothing in {spec} ({})", path.display());
            }
        }
    }

    let synthetic = |kind, mode| Entry::synthetic(kind, mode, inputs.source_date);
    for d in m.dir.iter().filter(|d| applies(&d.arches, arch)) {
        insert(&mut entries, expand(&d.path, &vars)?, synthetic(Kind::Dir, d.mode))?;
    }
    for s in m.symlink.iter().filter(|s| applies(&s.arches, arch)) {
        insert(
            &mut entries,
            expand(&s.path, &vars)?,
            synthetic(Kind::Symlink(expand(&s.target, &vars)?), 0o777),
        )?;
    }
    for f in m.file.iter().filter(|f| applies(&f.arches, arch)) {
        let content = Arc::new(expand(&f.content, &vars)?.into_bytes());
        let mut e = synthetic(Kind::File(content), f.mode);
        (e.config, e.doc, e.ghost) = (f.config, f.doc, f.ghost);
        (e.user, e.group) = (f.user.clone(), f.group.clone());
        insert(&mut entries, expand(&f.path, &vars)?, e)?;
    }

    let evr = match (&m.version, evr) {
        (Some(v), _) => RpmEvr {
            epoch: m.epoch,
            version: v.clone(),
            release: m.release.clone().unwrap_or_else(|| "1".into()),
        },
        (None, Some(mut e)) => {
            if let Some(r) = &m.release {
                e.release = r.clone();
            }
            e.epoch = m.epoch.or(e.epoch);
            e
        }
        (None, None) => bail!("no version: set `version` in the manifest"),
    };
    Ok((entries, evr, vars))
}

/// Builds the package `m` describes from its resolved version and paths.
/// With `m.elf_deps`, every ELF file must be for `arch`; the package provides
/// the sonames of its libraries and requires the ones they need from elsewhere.
pub fn assemble(
    m: &Manifest,
    evr: &RpmEvr,
    entries: &Entries,
    vars: &Vars,
    arch: Arch,
    source_date: u32,
) -> Result<Built> {
    let mut b = PackageBuilder::new(&m.name, &evr.version, &m.license, arch.rpm_name(), &m.summary);
    b.release(evr.release.clone())
        .description(m.description.clone().unwrap_or_else(|| m.summary.clone()))
        .url("https://github.com/arbor-os/arbor/tree/main/samples")
        .vendor("arbor sample repository")
        .build_host("arbor-sample-repo")
        .using_config(
            rpm::BuildConfig::v4()
                .compression(rpm::CompressionWithLevel::Zstd(3))
                .source_date(source_date),
        );
    if let Some(e) = evr.epoch {
        b.epoch(e);
    }

    let mut elf_provides = BTreeSet::new();
    let mut elf_requires = BTreeSet::new();
    let mut content_bytes = 0u64;
    for (path, e) in entries {
        let ts = rpm::Timestamp::from(e.mtime);
        match &e.kind {
            Kind::Dir => {
                b.with_dir_entry(
                    FileOptions::dir(path.clone())
                        .permissions(e.mode)
                        .user(&e.user)
                        .group(&e.group)
                        .modified_at(ts),
                )?;
            }
            Kind::Symlink(target) => {
                b.with_symlink(
                    FileOptions::symlink(path.clone(), target.clone())
                        .user(&e.user)
                        .group(&e.group)
                        .modified_at(ts),
                )?;
            }
            Kind::File(bytes) => {
                if let Some(d) = m.elf_deps.then(|| elfdeps::scan(bytes)).flatten() {
                    if Some(d.machine) != arch.elf_machine() {
                        bail!(
                            "{path} is an ELF file for machine {} but the package is {arch}",
                            d.machine
                        );
                    }
                    elf_provides.extend(d.provides);
                    elf_requires.extend(d.requires);
                }
                let mut o = FileOptions::new(path.clone())
                    .mode(FileMode::regular(e.mode))
                    .user(&e.user)
                    .group(&e.group)
                    .modified_at(ts);
                if e.config {
                    o = o.config().noreplace();
                }
                if e.doc {
                    o = o.doc();
                }
                if e.license {
                    o = o.license();
                }
                if e.ghost {
                    b.with_ghost(o.ghost())?;
                } else {
                    content_bytes += bytes.len() as u64;
                    b.with_file_contents(bytes.as_slice().to_vec(), o)?;
                }
            }
        }
    }

    let dep = |s: &str| -> Result<Dep> { parse_dep(&expand(s, vars)?) };
    for p in m.provides.iter().map(|s| dep(s)).collect::<Result<Vec<_>>>()? {
        b.provides(to_rpm_dep(&p));
    }
    for p in &elf_provides {
        b.provides(Dependency::any(p.clone()));
    }
    for r in m.requires.iter().map(|s| dep(s)).collect::<Result<Vec<_>>>()? {
        b.requires(to_rpm_dep(&r));
    }
    for r in elf_requires.difference(&elf_provides) {
        b.requires(Dependency::any(r.clone()));
    }
    type Add = fn(&mut PackageBuilder, Dependency) -> &mut PackageBuilder;
    let lists: [(&Vec<String>, Add); 5] = [
        (&m.obsoletes, PackageBuilder::obsoletes),
        (&m.conflicts, PackageBuilder::conflicts),
        (&m.recommends, PackageBuilder::recommends),
        (&m.suggests, PackageBuilder::suggests),
        (&m.supplements, PackageBuilder::supplements),
    ];
    for (list, add) in lists {
        for d in list {
            add(&mut b, to_rpm_dep(&dep(d)?));
        }
    }

    let mut uses_lua = false;
    for (kind, script) in &m.scripts {
        let body = expand(&script.body, vars)?;
        let s = Scriptlet::new(body).prog(vec![script.interp.clone()]);
        uses_lua |= script.interp == "<lua>";
        if script.interp != "<lua>" {
            b.requires(interp_dep(*kind, &script.interp));
        }
        match kind {
            ScriptKind::Pretrans => b.pre_trans_script(s),
            ScriptKind::Pre => b.pre_install_script(s),
            ScriptKind::Post => b.post_install_script(s),
            ScriptKind::Preun => b.pre_uninstall_script(s),
            ScriptKind::Postun => b.post_uninstall_script(s),
            ScriptKind::Posttrans => b.post_trans_script(s),
        };
    }
    for t in &m.file_trigger {
        let body = expand(&t.body, vars)?;
        uses_lua |= t.interp == "<lua>";
        for p in &t.paths {
            let s = Scriptlet::new(body.clone()).prog(vec![t.interp.clone()]);
            match t.kind {
                TriggerKind::Filetriggerin => b.file_trigger_in(p, None, s),
                TriggerKind::Transfiletriggerin => b.trans_file_trigger_in(p, None, s),
            };
        }
    }
    if uses_lua {
        b.requires(Dependency::rpmlib("BuiltinLuaScripts", "4.2.2-1"));
    }

    let package = drop_lua_interp_requires(b.build()?)?;
    // rpm file names never carry the epoch.
    let file_name = format!("{}-{}-{}.{}.rpm", m.name, evr.version, evr.release, arch.rpm_name());
    Ok(Built {
        file_name,
        package,
        content_bytes,
    })
}

/// The `rpm` crate adds an interpreter requirement for every scriptlet, `<lua>`
/// included; rpmbuild does not (it adds `rpmlib(BuiltinLuaScripts)` instead), and
/// no package can provide `<lua>`, so solvers would refuse the package. Rewrite
/// the header without it and recompute the header digests.
pub fn drop_lua_interp_requires(mut pkg: rpm::Package) -> Result<rpm::Package> {
    use rpm::{IndexData, IndexTag};
    const NAME: u32 = IndexTag::RPMTAG_REQUIRENAME as u32;
    const FLAGS: u32 = IndexTag::RPMTAG_REQUIREFLAGS as u32;
    const VERSION: u32 = IndexTag::RPMTAG_REQUIREVERSION as u32;
    let mut entries = pkg.metadata.header.get_all_entries()?;
    let names = entries.iter().find_map(|(t, d)| match (t, d) {
        (&NAME, IndexData::StringArray(v)) => Some(v.clone()),
        _ => None,
    });
    let Some(names) = names else { return Ok(pkg) };
    let keep: Vec<bool> = names.iter().map(|n| n != "<lua>").collect();
    if keep.iter().all(|k| *k) {
        return Ok(pkg);
    }
    let dict_tags = [
        IndexTag::RPMTAG_DEPENDSDICT as u32,
        IndexTag::RPMTAG_FILEDEPENDSX as u32,
    ];
    if entries.iter().any(|(t, _)| dict_tags.contains(t)) {
        bail!("cannot drop the <lua> requirement: the header has per-file dependency indexes");
    }
    let filter = |len: usize| keep.iter().take(len).copied().collect::<Vec<_>>();
    for (tag, data) in entries.iter_mut() {
        match (*tag, data) {
            (NAME | VERSION, IndexData::StringArray(v)) => {
                let k = filter(v.len());
                let mut i = 0;
                v.retain(|_| (k[i], i += 1).0);
            }
            (FLAGS, IndexData::Int32(v)) => {
                let k = filter(v.len());
                let mut i = 0;
                v.retain(|_| (k[i], i += 1).0);
            }
            _ => {}
        }
    }
    let region = IndexTag::RPMTAG_HEADERIMMUTABLE as u32;
    let header = rpm::Header::from_entries(
        entries
            .into_iter()
            .filter(|(t, _)| *t != region)
            .map(|(t, d)| rpm::HeaderEntry::new(t, d)),
        IndexTag::RPMTAG_HEADERIMMUTABLE,
    );
    pkg.metadata.header = header;
    let header_bytes = pkg.metadata.header_bytes()?;
    pkg.metadata.signature = rpm::SignatureHeaderBuilder::new()
        .set_content_length(header_bytes.len() as u64 + pkg.payload.len() as u64)
        .calculate_digests(&header_bytes)
        .build()?;
    Ok(pkg)
}

/// Adds `e` at `path`; a path added twice is an error unless both are directories.
pub fn insert(entries: &mut Entries, path: String, e: Entry) -> Result<()> {
    match entries.get(&path) {
        None => {
            entries.insert(path, e);
            Ok(())
        }
        Some(old) if matches!((&old.kind, &e.kind), (Kind::Dir, Kind::Dir)) => Ok(()),
        Some(_) => bail!("{path} is added twice (two copy rules or entries produce it)"),
    }
}

fn to_rpm_dep(d: &Dep) -> Dependency {
    match &d.constraint {
        None => Dependency::any(d.name.clone()),
        Some((op, v)) => match op.as_str() {
            "<" => Dependency::less(d.name.clone(), v.clone()),
            "<=" => Dependency::less_eq(d.name.clone(), v.clone()),
            "=" => Dependency::eq(d.name.clone(), v.clone()),
            ">=" => Dependency::greater_eq(d.name.clone(), v.clone()),
            _ => Dependency::greater(d.name.clone(), v.clone()),
        },
    }
}

/// The `Requires(post): /bin/sh`-style dependency rpmbuild adds for an interpreter.
fn interp_dep(kind: ScriptKind, interp: &str) -> Dependency {
    use rpm::DependencyFlags as F;
    let program = interp.split_whitespace().next().unwrap_or(interp).to_string();
    let flags = match kind {
        ScriptKind::Pretrans => F::PRETRANS,
        ScriptKind::Pre => F::SCRIPT_PRE,
        ScriptKind::Post => F::SCRIPT_POST,
        ScriptKind::Preun => F::SCRIPT_PREUN,
        ScriptKind::Postun => F::SCRIPT_POSTUN,
        ScriptKind::Posttrans => F::POSTTRANS,
    };
    let mut d = Dependency::any(program);
    d.flags |= F::INTERP | flags;
    d
}

/// Expands `${name}` from `vars`; an unknown name is an error naming it.
pub fn expand(s: &str, vars: &BTreeMap<&str, String>) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find('}').with_context(|| format!("unterminated ${{ in {s:?}"))?;
        let name = &after[..end];
        let v = vars.get(name).with_context(|| {
            format!(
                "unknown variable ${{{name}}} in {s:?}; known here: {}",
                vars.keys().copied().collect::<Vec<_>>().join(", ")
            )
        })?;
        out.push_str(v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_variables() {
        let vars = BTreeMap::from([("kver", "6.1.0-50-arm64".to_string()), ("arch", "aarch64".to_string())]);
        assert_eq!(
            expand("/usr/lib/modules/${kver}/vmlinuz", &vars).unwrap(),
            "/usr/lib/modules/6.1.0-50-arm64/vmlinuz"
        );
        assert_eq!(expand("no vars", &vars).unwrap(), "no vars");
        let e = expand("${multiarch}/x", &vars).unwrap_err().to_string();
        assert!(e.contains("${multiarch}") && e.contains("arch, kver"), "{e}");
        assert!(expand("${kver", &vars).is_err());
    }
}
