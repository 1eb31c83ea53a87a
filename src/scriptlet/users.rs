//! Users and groups: `sysusers.d(5)` files applied to a tree's
//! `/etc/{passwd,group,shadow,gshadow}`, with deterministic ids and order so
//! the same package set always gives the same files (and commit).
//!
//! Follows systemd-sysusers where it matters for a composed tree: `u`, `g`,
//! `m` and `r` lines; `-` for dynamic ids, allocated from 999 downward (the
//! system range) skipping ids in use; `u name uid` and `u name -` also create
//! the group of the same name (same id when free); existing users, groups and
//! memberships are never changed. Fixed ids are taken before dynamic ones are
//! allocated, so the order of files cannot move a fixed id. Not supported:
//! ids given as a file path (an error), and the `u!` lock marker is accepted
//! but every new account is locked anyway (`!*` in shadow).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};
use cap_std::fs::{Dir, PermissionsExt};

/// Highest id a dynamic allocation may take (systemd's `SYSTEM_UID_MAX`).
const SYSTEM_MAX: u32 = 999;
/// Shell for new system users.
const NOLOGIN: &str = "/usr/sbin/nologin";

/// The primary group a `u` line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryGroup {
    /// The group named like the user, created when missing.
    Own,
    /// The same-named group with this gid (`uid:gid`).
    Gid(u32),
    /// An existing group by name (`uid:groupname`).
    Named(String),
}

/// A user to create (`u` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysUser {
    /// Login name.
    pub name: String,
    /// Fixed uid, or `None` to allocate one.
    pub uid: Option<u32>,
    /// Primary group.
    pub group: PrimaryGroup,
    /// GECOS field.
    pub gecos: String,
    /// Home directory (default `/`).
    pub home: String,
    /// Login shell (default `/usr/sbin/nologin`).
    pub shell: String,
}

/// One line of a sysusers.d file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `u`: a user (and usually its group).
    User(SysUser),
    /// `g name gid|-`: a group.
    Group {
        /// Group name.
        name: String,
        /// Fixed gid, or `None` to allocate one.
        gid: Option<u32>,
    },
    /// `m user group`: a supplementary membership.
    Member {
        /// User name.
        user: String,
        /// Group name.
        group: String,
    },
    /// `r - from-to`: restricts dynamic allocation to these ranges.
    Range {
        /// Lowest id.
        from: u32,
        /// Highest id.
        to: u32,
    },
}

/// Parses a sysusers.d file; `name` names it in errors.
pub fn parse_sysusers(name: &str, text: &str) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let e = parse_line(line).with_context(|| format!("{name}:{}: {line}", n + 1))?;
        out.push(e);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Entry> {
    let fields = split_fields(line)?;
    let get = |i: usize| -> Option<&str> { fields.get(i).map(String::as_str).filter(|f| *f != "-") };
    let Some(kind) = fields.first() else {
        bail!("empty line")
    };
    let name = || -> Result<String> {
        let n = get(1).context("missing name")?;
        if n.is_empty() || n.contains([':', '/', ',']) || n.starts_with(|c: char| c.is_ascii_digit()) {
            bail!("invalid name {n:?}");
        }
        Ok(n.to_string())
    };
    if fields.len() > 6 {
        bail!("too many fields ({}; at most 6)", fields.len());
    }
    Ok(match kind.as_str() {
        "u" | "u!" => {
            let name = name()?;
            let (uid, group) = match get(2) {
                None => (None, PrimaryGroup::Own),
                Some(id) => match id.split_once(':') {
                    None => (Some(parse_id(id)?), PrimaryGroup::Own),
                    Some((u, g)) => {
                        let uid = if u == "-" { None } else { Some(parse_id(u)?) };
                        let group = if g.starts_with(|c: char| c.is_ascii_digit()) {
                            PrimaryGroup::Gid(parse_id(g)?)
                        } else {
                            PrimaryGroup::Named(g.to_string())
                        };
                        (uid, group)
                    }
                },
            };
            Entry::User(SysUser {
                name,
                uid,
                group,
                gecos: get(3).unwrap_or_default().to_string(),
                home: get(4).unwrap_or("/").to_string(),
                shell: get(5).unwrap_or(NOLOGIN).to_string(),
            })
        }
        "g" => Entry::Group {
            name: name()?,
            gid: get(2).map(parse_id).transpose()?,
        },
        "m" => Entry::Member {
            user: name()?,
            group: get(2).context("missing group")?.to_string(),
        },
        "r" => {
            let range = get(2).context("missing range")?;
            let (from, to) = match range.split_once('-') {
                Some((a, b)) => (parse_id(a)?, parse_id(b)?),
                None => (parse_id(range)?, parse_id(range)?),
            };
            if from > to {
                bail!("empty range {range}");
            }
            Entry::Range { from, to }
        }
        other => bail!("unknown type {other:?} (expected u, g, m or r)"),
    })
}

fn parse_id(s: &str) -> Result<u32> {
    if s.starts_with('/') {
        bail!("ids taken from a file ({s}) are not supported");
    }
    let id: u32 = s.parse().with_context(|| format!("invalid id {s:?}"))?;
    // 65535 and 4294967295 are reserved (`(uid_t) -1` in 16 and 32 bits).
    if id == 65535 || id == u32::MAX {
        bail!("id {id} is reserved");
    }
    Ok(id)
}

/// Splits on whitespace, honouring double quotes (as systemd does for GECOS).
fn split_fields(line: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&c) = chars.peek() else { break };
        let mut field = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => field.extend(chars.next()),
                    Some(c) => field.push(c),
                    None => bail!("unterminated quote"),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                field.push(c);
            }
        }
        out.push(field);
    }
    Ok(out)
}

/// The four account files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Files {
    /// `/etc/passwd`.
    pub passwd: String,
    /// `/etc/group`.
    pub group: String,
    /// `/etc/shadow`.
    pub shadow: String,
    /// `/etc/gshadow`.
    pub gshadow: String,
}

/// What [`apply`] added.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Added {
    /// `name:uid:gid` of each new user.
    pub users: Vec<String>,
    /// `name:gid` of each new group.
    pub groups: Vec<String>,
    /// `user:group` of each new membership.
    pub members: Vec<String>,
}

/// One `:`-separated line, checked for its field count.
fn records<'t>(file: &str, text: &'t str, fields: usize) -> Result<Vec<Vec<&'t str>>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() != fields {
            bail!("{file}:{}: expected {fields} fields, found {}: {line}", n + 1, f.len());
        }
        out.push(f);
    }
    Ok(out)
}

fn id_of(file: &str, rec: &[&str]) -> Result<u32> {
    rec[2]
        .parse()
        .with_context(|| format!("{file}: invalid id {:?} for {}", rec[2], rec[0]))
}

/// Adds what `entries` asks for and is missing to the four files, then sorts
/// them with [`sort_files`].
pub fn apply(passwd: &str, group: &str, shadow: &str, gshadow: &str, entries: &[Entry]) -> Result<(Files, Added)> {
    let mut pw: Vec<Vec<String>> = to_owned(records("/etc/passwd", passwd, 7)?);
    let mut gr: Vec<Vec<String>> = to_owned(records("/etc/group", group, 4)?);
    let mut sh: Vec<Vec<String>> = to_owned(records("/etc/shadow", shadow, 9)?);
    let mut gs: Vec<Vec<String>> = to_owned(records("/etc/gshadow", gshadow, 4)?);
    let mut uids = BTreeSet::new();
    for r in &pw {
        uids.insert(id_of("/etc/passwd", &as_strs(r))?);
    }
    let mut gids = BTreeSet::new();
    for r in &gr {
        gids.insert(id_of("/etc/group", &as_strs(r))?);
    }
    let ranges: Vec<(u32, u32)> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Range { from, to } => Some((*from, *to)),
            _ => None,
        })
        .collect();
    let ranges = if ranges.is_empty() {
        vec![(1, SYSTEM_MAX)]
    } else {
        ranges
    };
    let mut added = Added::default();

    // Explicit groups (from `g` and from users' `uid:gid`), fixed ids first.
    let mut groups: Vec<(String, Option<u32>)> = Vec::new();
    let mut want_group = |name: &str, gid: Option<u32>| {
        if !groups.iter().any(|(n, _)| n == name) {
            groups.push((name.to_string(), gid));
        }
    };
    for e in entries {
        match e {
            Entry::Group { name, gid } => want_group(name, *gid),
            Entry::User(u) => match &u.group {
                PrimaryGroup::Own => want_group(&u.name, None),
                PrimaryGroup::Gid(g) => want_group(&u.name, Some(*g)),
                PrimaryGroup::Named(_) => {}
            },
            Entry::Member { group, .. } => want_group(group, None),
            Entry::Range { .. } => {}
        }
    }
    // Implicit users of `m` lines.
    let mut users: Vec<SysUser> = Vec::new();
    for e in entries {
        if let Entry::User(u) = e {
            if !users.iter().any(|x| x.name == u.name) {
                users.push(u.clone());
            }
        }
    }
    for e in entries {
        if let Entry::Member { user, .. } = e {
            if !users.iter().any(|x| x.name == *user) {
                users.push(SysUser {
                    name: user.clone(),
                    uid: None,
                    group: PrimaryGroup::Own,
                    gecos: String::new(),
                    home: "/".into(),
                    shell: NOLOGIN.into(),
                });
                want_group(user, None);
            }
        }
    }
    let exists = |recs: &[Vec<String>], name: &str| recs.iter().any(|r| r[0] == name);

    // Decide ids: fixed ones first, so a dynamic one never takes them.
    let mut new_gid: BTreeMap<String, u32> = BTreeMap::new();
    let mut new_uid: BTreeMap<String, u32> = BTreeMap::new();
    for (name, gid) in &groups {
        if let Some(g) = gid {
            if !exists(&gr, name) && gids.insert(*g) {
                new_gid.insert(name.clone(), *g);
            }
        }
    }
    for u in &users {
        if let Some(id) = u.uid.filter(|_| !exists(&pw, &u.name)) {
            if uids.contains(&id) {
                bail!("user {}: uid {id} is already used", u.name);
            }
            uids.insert(id);
            new_uid.insert(u.name.clone(), id);
            // The user's own group takes the same id when it is free.
            if u.group == PrimaryGroup::Own
                && !exists(&gr, &u.name)
                && !new_gid.contains_key(&u.name)
                && gids.insert(id)
            {
                new_gid.insert(u.name.clone(), id);
            }
        }
    }
    for (name, gid) in &groups {
        if exists(&gr, name) || new_gid.contains_key(name) {
            continue;
        }
        if let Some(g) = gid {
            bail!("group {name}: gid {g} is already used");
        }
        // A user of the same name wants the same id: look for one free in both.
        let user_too = users
            .iter()
            .any(|u| u.name == *name && u.uid.is_none() && !exists(&pw, name));
        let id = allocate(&ranges, |id| !gids.contains(&id) && (!user_too || !uids.contains(&id)))
            .or_else(|| allocate(&ranges, |id| !gids.contains(&id)))
            .with_context(|| format!("group {name}: no free gid left in {ranges:?}"))?;
        gids.insert(id);
        new_gid.insert(name.clone(), id);
    }
    for u in &users {
        if exists(&pw, &u.name) || new_uid.contains_key(&u.name) {
            continue;
        }
        let same = new_gid.get(&u.name).copied().filter(|g| !uids.contains(g));
        let id = same
            .or_else(|| allocate(&ranges, |id| !uids.contains(&id)))
            .with_context(|| format!("user {}: no free uid left in {ranges:?}", u.name))?;
        uids.insert(id);
        new_uid.insert(u.name.clone(), id);
    }

    // Write the groups, then the users (whose gid may name a group).
    for (name, _) in &groups {
        if let Some(&gid) = new_gid.get(name) {
            gr.push(vec![name.clone(), "x".into(), gid.to_string(), String::new()]);
            if !exists(&gs, name) {
                gs.push(vec![name.clone(), "!*".into(), String::new(), String::new()]);
            }
            added.groups.push(format!("{name}:{gid}"));
        }
    }
    let gid_of = |gr: &[Vec<String>], name: &str| gr.iter().find(|r| r[0] == name).map(|r| r[2].clone());
    for u in &users {
        let Some(&uid) = new_uid.get(&u.name) else { continue };
        let group_name = match &u.group {
            PrimaryGroup::Named(g) => g.as_str(),
            _ => u.name.as_str(),
        };
        let gid = gid_of(&gr, group_name).with_context(|| format!("user {}: no group {group_name}", u.name))?;
        pw.push(vec![
            u.name.clone(),
            "x".into(),
            uid.to_string(),
            gid.clone(),
            u.gecos.clone(),
            u.home.clone(),
            u.shell.clone(),
        ]);
        if !exists(&sh, &u.name) {
            let mut rec = vec![u.name.clone(), "!*".into()];
            rec.extend(std::iter::repeat_n(String::new(), 7));
            sh.push(rec);
        }
        added.users.push(format!("{}:{uid}:{gid}", u.name));
    }
    for e in entries {
        let Entry::Member { user, group } = e else { continue };
        let Some(rec) = gr.iter_mut().find(|r| r[0] == *group) else {
            bail!("membership {user}:{group}: no group {group}");
        };
        let mut members: Vec<String> = rec[3].split(',').filter(|m| !m.is_empty()).map(String::from).collect();
        if members.contains(user) {
            continue;
        }
        members.push(user.clone());
        rec[3] = members.join(",");
        if let Some(g) = gs.iter_mut().find(|r| r[0] == *group) {
            let mut m: Vec<&str> = g[3].split(',').filter(|m| !m.is_empty()).collect();
            if !m.contains(&user.as_str()) {
                m.push(user);
                g[3] = m.join(",");
            }
        }
        added.members.push(format!("{user}:{group}"));
    }

    let join = |recs: &[Vec<String>]| -> String { recs.iter().map(|r| format!("{}\n", r.join(":"))).collect() };
    let files = sort_files(&Files {
        passwd: join(&pw),
        group: join(&gr),
        shadow: join(&sh),
        gshadow: join(&gs),
    })?;
    Ok((files, added))
}

/// The highest id in `ranges` (highest range first) that `free` accepts.
fn allocate(ranges: &[(u32, u32)], free: impl Fn(u32) -> bool) -> Option<u32> {
    let mut sorted = ranges.to_vec();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.1));
    sorted
        .into_iter()
        .find_map(|(from, to)| (from..=to).rev().find(|&id| free(id)))
}

fn to_owned(recs: Vec<Vec<&str>>) -> Vec<Vec<String>> {
    recs.into_iter()
        .map(|r| r.into_iter().map(String::from).collect())
        .collect()
}

fn as_strs(r: &[String]) -> Vec<&str> {
    r.iter().map(String::as_str).collect()
}

/// Sorts passwd and group (root first, then by id, then by name) and orders
/// shadow and gshadow like them; shadow lines without an account go last, by name.
pub fn sort_files(f: &Files) -> Result<Files> {
    fn sort(file: &str, text: &str, fields: usize) -> Result<Vec<String>> {
        let mut recs = Vec::new();
        for r in records(file, text, fields)? {
            recs.push((r[0] != "root", id_of(file, &r)?, r[0].to_string(), r.join(":")));
        }
        recs.sort();
        Ok(recs.into_iter().map(|r| r.3).collect())
    }
    fn follow(file: &str, text: &str, fields: usize, order: &[String]) -> Result<String> {
        let mut recs = records(file, text, fields)?;
        let pos = |name: &str| order.iter().position(|l| l.split(':').next() == Some(name));
        recs.sort_by(|a, b| {
            let (pa, pb) = (pos(a[0]), pos(b[0]));
            pa.is_none().cmp(&pb.is_none()).then(pa.cmp(&pb)).then(a[0].cmp(b[0]))
        });
        Ok(recs.iter().map(|r| format!("{}\n", r.join(":"))).collect())
    }
    let passwd = sort("/etc/passwd", &f.passwd, 7)?;
    let group = sort("/etc/group", &f.group, 4)?;
    Ok(Files {
        shadow: follow("/etc/shadow", &f.shadow, 9, &passwd)?,
        gshadow: follow("/etc/gshadow", &f.gshadow, 4, &group)?,
        passwd: passwd.iter().map(|l| format!("{l}\n")).collect(),
        group: group.iter().map(|l| format!("{l}\n")).collect(),
    })
}

/// What [`apply_tree`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct UsersReport {
    /// The sysusers.d files applied, relative to the root, in order.
    pub files: Vec<String>,
    /// What was added.
    pub added: Added,
}

const SYSUSERS_DIRS: [&str; 2] = ["usr/lib/sysusers.d", "etc/sysusers.d"];
/// The account files and their modes when they have to be created.
const ACCOUNT_FILES: [(&str, u32); 4] = [
    ("etc/passwd", 0o644),
    ("etc/group", 0o644),
    ("etc/shadow", 0o000),
    ("etc/gshadow", 0o000),
];

/// Applies the tree's `usr/lib/sysusers.d/*.conf` (a same-named file in
/// `etc/sysusers.d` replaces one; a symlink to /dev/null there masks it), in
/// file name order, to its account files, and writes them back sorted
/// (replacing each atomically and keeping its mode).
pub fn apply_tree(root: &Dir) -> Result<UsersReport> {
    let mut confs: BTreeMap<String, String> = BTreeMap::new();
    for dir in SYSUSERS_DIRS {
        let entries = match root.read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {dir}")),
        };
        for e in entries {
            let e = e.with_context(|| format!("listing {dir}"))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".conf") {
                confs.insert(name.clone(), format!("{dir}/{name}"));
            }
        }
    }
    let mut entries = Vec::new();
    let mut report = UsersReport::default();
    for path in confs.values() {
        let meta = root.symlink_metadata(path).with_context(|| format!("reading {path}"))?;
        if meta.file_type().is_symlink() {
            let target = root
                .read_link_contents(path)
                .with_context(|| format!("reading {path}"))?;
            if target == std::path::Path::new("/dev/null") {
                continue;
            }
        }
        let text = root.read_to_string(path).with_context(|| format!("reading {path}"))?;
        entries.extend(parse_sysusers(path, &text)?);
        report.files.push(path.clone());
    }
    let mut current = Vec::new();
    for (path, _) in ACCOUNT_FILES {
        current.push(match root.read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {path}")),
        });
    }
    let (files, added) = apply(&current[0], &current[1], &current[2], &current[3], &entries)?;
    root.create_dir_all("etc").context("creating etc")?;
    for ((path, mode), text) in ACCOUNT_FILES
        .into_iter()
        .zip([files.passwd, files.group, files.shadow, files.gshadow])
    {
        let mode = match root.metadata(path) {
            Ok(m) => m.permissions().mode() & 0o7777,
            Err(_) => mode,
        };
        let tmp = format!("{path}.arbor-tmp");
        root.write(&tmp, text).with_context(|| format!("writing {tmp}"))?;
        root.set_permissions(&tmp, cap_std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {tmp}"))?;
        root.rename(&tmp, root, path)
            .with_context(|| format!("replacing {path}"))?;
    }
    report.added = added;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nbin:x:1:1:bin:/bin:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nbin:x:1:\nwheel:x:10:\n";
    const SHADOW: &str = "root:!:::::::\nbin:*:::::::\n";
    const GSHADOW: &str = "root:!::\nbin:!::\nwheel:!::\n";

    fn run(conf: &str) -> (Files, Added) {
        let e = parse_sysusers("test.conf", conf).unwrap();
        apply(PASSWD, GROUP, SHADOW, GSHADOW, &e).unwrap()
    }

    #[test]
    fn parses_all_types_with_quotes_and_defaults() {
        let text = "# comment\n\nu dbus 81 \"System message bus\" - -\nu! lock -:wheel\ng input -\nm dbus input\nr - 500-900\n";
        let got = parse_sysusers("x.conf", text).unwrap();
        assert_eq!(
            got,
            [
                Entry::User(SysUser {
                    name: "dbus".into(),
                    uid: Some(81),
                    group: PrimaryGroup::Own,
                    gecos: "System message bus".into(),
                    home: "/".into(),
                    shell: NOLOGIN.into(),
                }),
                Entry::User(SysUser {
                    name: "lock".into(),
                    uid: None,
                    group: PrimaryGroup::Named("wheel".into()),
                    gecos: String::new(),
                    home: "/".into(),
                    shell: NOLOGIN.into(),
                }),
                Entry::Group {
                    name: "input".into(),
                    gid: None
                },
                Entry::Member {
                    user: "dbus".into(),
                    group: "input".into()
                },
                Entry::Range { from: 500, to: 900 },
            ]
        );
    }

    #[test]
    fn parse_errors_name_file_and_line() {
        for (text, want) in [
            ("x foo", "x.conf:1: x foo: unknown type \"x\" (expected u, g, m or r)"),
            ("\ng", "x.conf:2: g: missing name"),
            ("u foo abc", "x.conf:1: u foo abc: invalid id \"abc\""),
            ("u foo /etc/x", "ids taken from a file"),
            ("u \"foo", "unterminated quote"),
            ("g 1abc -", "invalid name"),
            ("m user", "missing group"),
            ("r - 9-3", "empty range"),
            ("g foo 65535", "reserved"),
        ] {
            let err = format!("{:#}", parse_sysusers("x.conf", text).unwrap_err());
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn dynamic_ids_from_999_down_with_same_named_group() {
        let (f, added) = run("u alpha - \"Alpha\"\nu beta -\ng gamma -\n");
        assert_eq!(added.groups, ["alpha:999", "beta:998", "gamma:997"]);
        assert_eq!(added.users, ["alpha:999:999", "beta:998:998"]);
        assert!(f.passwd.contains("alpha:x:999:999:Alpha:/:/usr/sbin/nologin\n"));
        assert!(f.shadow.contains("alpha:!*:::::::\n"));
        assert!(f.gshadow.contains("gamma:!*::\n"));
    }

    #[test]
    fn allocation_skips_used_ids_and_keeps_fixed_ones() {
        let passwd = format!("{PASSWD}taken:x:999:5::/:/bin/sh\n");
        let shadow = format!("{SHADOW}taken:!*:::::::\n");
        // The fixed id comes later in the file but is still honoured.
        let e = parse_sysusers("t", "u dyn -\nu fixed 998\n").unwrap();
        let (f, added) = apply(&passwd, GROUP, &shadow, GSHADOW, &e).unwrap();
        assert_eq!(added.users, ["dyn:997:997", "fixed:998:998"]);
        assert!(f.group.contains("dyn:x:997:\n"));
    }

    #[test]
    fn uid_gid_and_named_primary_groups() {
        let (f, added) = run("u svc 500:600\nu other 501:wheel\n");
        assert_eq!(added.groups, ["svc:600"]);
        assert!(f.passwd.contains("svc:x:500:600:"));
        assert!(f.passwd.contains("other:x:501:10:"));
        assert!(!f.group.contains("other"));
    }

    #[test]
    fn fixed_uid_user_group_falls_back_when_gid_taken() {
        let (f, _) = run("u svc 10\n");
        // gid 10 is wheel's: the group is allocated dynamically.
        assert!(f.passwd.contains("svc:x:10:999:"), "{}", f.passwd);
    }

    #[test]
    fn members_are_added_once_and_create_missing_groups() {
        let (f, added) = run("m bin wheel\nm bin wheel\nm bin audio\n");
        assert_eq!(added.members, ["bin:wheel", "bin:audio"]);
        assert_eq!(added.groups, ["audio:999"]);
        assert!(f.group.contains("wheel:x:10:bin\n"));
        assert!(f.gshadow.contains("wheel:!::bin\n"));
        assert!(f.group.contains("audio:x:999:bin\n"));
        assert!(added.users.is_empty(), "bin exists");
    }

    #[test]
    fn existing_entries_are_never_changed() {
        let (f, added) = run("u bin 77 \"New\"\ng wheel 5\n");
        assert_eq!(added, Added::default());
        assert!(f.passwd.contains("bin:x:1:1:bin:/bin:/usr/sbin/nologin\n"));
        assert!(f.group.contains("wheel:x:10:\n"));
    }

    #[test]
    fn conflicting_fixed_uid_is_an_error() {
        let e = parse_sysusers("t", "u newbin 1\n").unwrap();
        let err = format!("{:#}", apply(PASSWD, GROUP, SHADOW, GSHADOW, &e).unwrap_err());
        assert!(err.contains("uid 1 is already used"), "{err}");
    }

    #[test]
    fn ranges_restrict_allocation() {
        let (_, added) = run("r - 300-301\ng a -\ng b -\n");
        assert_eq!(added.groups, ["a:301", "b:300"]);
        let e = parse_sysusers("t", "r - 300-300\ng a -\ng b -\n").unwrap();
        let err = format!("{:#}", apply(PASSWD, GROUP, SHADOW, GSHADOW, &e).unwrap_err());
        assert!(err.contains("group b: no free gid"), "{err}");
    }

    #[test]
    fn sorting_is_root_first_then_id_then_name_and_shadow_follows() {
        let f = Files {
            passwd: "b:x:5:5::/:/s\nroot:x:0:0::/:/s\na:x:5:5::/:/s\nz:x:2:2::/:/s\n".into(),
            group: "g:x:3:\nroot:x:0:\n".into(),
            shadow: "orphan:!*:::::::\na:!*:::::::\nz:!*:::::::\nroot:!*:::::::\nb:!*:::::::\n".into(),
            gshadow: "g:!::\nroot:!::\n".into(),
        };
        let s = sort_files(&f).unwrap();
        let names = |t: &str| {
            t.lines()
                .map(|l| l.split(':').next().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&s.passwd), ["root", "z", "a", "b"]);
        assert_eq!(names(&s.shadow), ["root", "z", "a", "b", "orphan"]);
        assert_eq!(names(&s.group), ["root", "g"]);
        assert_eq!(names(&s.gshadow), ["root", "g"]);
    }

    #[test]
    fn malformed_account_files_are_errors() {
        let err = format!("{:#}", apply("root:x:0\n", GROUP, SHADOW, GSHADOW, &[]).unwrap_err());
        assert!(err.contains("/etc/passwd:1: expected 7 fields"), "{err}");
    }

    #[test]
    fn apply_is_idempotent() {
        let e = parse_sysusers("t", "u a -\ng b -\nm a b\n").unwrap();
        let (f, _) = apply(PASSWD, GROUP, SHADOW, GSHADOW, &e).unwrap();
        let (g, added) = apply(&f.passwd, &f.group, &f.shadow, &f.gshadow, &e).unwrap();
        assert_eq!(f, g);
        assert_eq!(added, Added::default());
    }

    #[test]
    fn apply_tree_reads_overrides_and_writes_files() {
        use cap_std::ambient_authority;
        let tmp = tempfile::tempdir().unwrap();
        let root = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        root.create_dir_all("usr/lib/sysusers.d").unwrap();
        root.create_dir_all("etc/sysusers.d").unwrap();
        root.write("usr/lib/sysusers.d/b.conf", "g bee -\n").unwrap();
        root.write("usr/lib/sysusers.d/a.conf", "u ay -\n").unwrap();
        root.write("usr/lib/sysusers.d/c.conf", "g masked -\n").unwrap();
        root.write("usr/lib/sysusers.d/notconf.txt", "g no -\n").unwrap();
        root.write("etc/sysusers.d/b.conf", "g bee 500\n").unwrap();
        std::os::unix::fs::symlink("/dev/null", tmp.path().join("etc/sysusers.d/c.conf")).unwrap();
        root.write("etc/passwd", PASSWD).unwrap();
        root.set_permissions("etc/passwd", cap_std::fs::Permissions::from_mode(0o640))
            .unwrap();

        let report = apply_tree(&root).unwrap();
        assert_eq!(report.files, ["usr/lib/sysusers.d/a.conf", "etc/sysusers.d/b.conf"]);
        assert_eq!(report.added.groups, ["ay:999", "bee:500"]);
        assert_eq!(report.added.users, ["ay:999:999"]);
        let group = root.read_to_string("etc/group").unwrap();
        assert_eq!(group, "bee:x:500:\nay:x:999:\n");
        let mode = |p: &str| root.metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("etc/passwd"), 0o640, "kept");
        assert_eq!(mode("etc/group"), 0o644);
        assert_eq!(mode("etc/shadow"), 0);
        assert_eq!(mode("etc/gshadow"), 0);
        assert!(!root.exists("etc/passwd.arbor-tmp"));

        // A second run adds nothing and changes nothing (reading the 0000
        // shadow files needs root, as composing does).
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let before = root.read_to_string("etc/shadow").unwrap();
        let again = apply_tree(&root).unwrap();
        assert_eq!(again.added, Added::default());
        assert_eq!(root.read_to_string("etc/shadow").unwrap(), before);
    }
}
