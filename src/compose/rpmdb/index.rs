//! rpm's secondary indexes: which keys each installed header puts into which
//! table (rpm's `tag2index`, `td2key` and `updateRichDep` in lib/rpmdb.c).

use crate::rpm::blob::{Blob, tag, ty};

/// One secondary index, in the order rpm opens them (`dbiTags`).
pub(super) struct Index {
    /// Table name (`rpmTagGetName`).
    pub table: &'static str,
    /// The header tag it indexes.
    pub tag: u32,
    /// Keys are TEXT (string tags) rather than BLOB.
    pub text: bool,
    /// The tag is an array: rpm also indexes `hnum`.
    pub array: bool,
}

const fn index(table: &'static str, tag: u32, text: bool, array: bool) -> Index {
    Index {
        table,
        tag,
        text,
        array,
    }
}

/// Every index rpm keeps.
pub(super) const INDEXES: [Index; 18] = [
    index("Name", tag::NAME, true, false),
    index("Basenames", tag::BASENAMES, true, true),
    index("Group", tag::GROUP, true, false),
    index("Requirename", tag::REQUIRENAME, true, true),
    index("Providename", tag::PROVIDENAME, true, true),
    index("Conflictname", tag::CONFLICTNAME, true, true),
    index("Obsoletename", tag::OBSOLETENAME, true, true),
    index("Triggername", tag::TRIGGERNAME, true, true),
    index("Dirnames", tag::DIRNAMES, true, true),
    index("Installtid", tag::INSTALLTID, false, false),
    index("Sigmd5", tag::SIGMD5, false, false),
    index("Sha1header", tag::SHA1HEADER, true, false),
    index("Filetriggername", tag::FILETRIGGERNAME, true, true),
    index("Transfiletriggername", tag::TRANSFILETRIGGERNAME, true, true),
    index("Recommendname", tag::RECOMMENDNAME, true, true),
    index("Suggestname", tag::SUGGESTNAME, true, true),
    index("Supplementname", tag::SUPPLEMENTNAME, true, true),
    index("Enhancename", tag::ENHANCENAME, true, true),
];

/// `RPMSENSE_*` bits (rpmds.h).
mod sense {
    pub const POSTTRANS: u32 = 1 << 5;
    pub const PRETRANS: u32 = 1 << 7;
    pub const SCRIPT_PRE: u32 = 1 << 9;
    pub const SCRIPT_POST: u32 = 1 << 10;
    pub const SCRIPT_PREUN: u32 = 1 << 11;
    pub const SCRIPT_POSTUN: u32 = 1 << 12;
    pub const PREUNTRANS: u32 = 1 << 20;
    pub const POSTUNTRANS: u32 = 1 << 21;
    pub const RPMLIB: u32 = 1 << 24;
    pub const KEYRING: u32 = 1 << 26;
    pub const META: u32 = 1 << 29;
    pub const INSTALL_ONLY: u32 = SCRIPT_PRE | SCRIPT_POST | RPMLIB | KEYRING | PRETRANS | POSTTRANS;
    pub const ERASE_ONLY: u32 = SCRIPT_PREUN | SCRIPT_POSTUN | PREUNTRANS | POSTUNTRANS;
}

/// `isTransientReq`: a requirement needed only while installing, which rpm
/// leaves out of the index.
fn is_transient(flags: u32) -> bool {
    flags & sense::INSTALL_ONLY != 0 && flags & sense::ERASE_ONLY == 0 && flags & sense::META == 0
}

/// One row: the key and the element index (`idx`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row {
    pub key: Vec<u8>,
    pub idx: u32,
}

/// The rows `header` contributes to `index`, in rpm's order.
pub(super) fn rows(header: &Blob, index: &Index) -> anyhow::Result<Vec<Row>> {
    let t = index.tag;
    let Some(entry) = header.find(t) else {
        // "XXX preserve legacy behavior"
        if t == tag::GROUP {
            return Ok(vec![Row {
                key: b"Unknown".to_vec(),
                idx: 0,
            }]);
        }
        return Ok(Vec::new());
    };
    let keys: Vec<Vec<u8>> = match entry.ty {
        // headerGet looks an I18NSTRING up for the current locale; the C
        // locale's string comes first.
        ty::I18NSTRING => header.strings(&entry).into_iter().take(1).map(<[u8]>::to_vec).collect(),
        ty::STRING | ty::STRING_ARRAY => header.strings(&entry).into_iter().map(<[u8]>::to_vec).collect(),
        ty::BIN => vec![header.raw(&entry).to_vec()],
        // Numbers are keyed in the host's byte order: little-endian on every
        // arch arbor builds trees for.
        ty::CHAR | ty::INT8 => header.numbers(&entry).iter().map(|n| vec![*n as u8]).collect(),
        ty::INT16 => header
            .numbers(&entry)
            .iter()
            .map(|n| (*n as u16).to_le_bytes().to_vec())
            .collect(),
        ty::INT32 => header
            .numbers(&entry)
            .iter()
            .map(|n| (*n as u32).to_le_bytes().to_vec())
            .collect(),
        ty::INT64 => header
            .numbers(&entry)
            .iter()
            .map(|n| n.to_le_bytes().to_vec())
            .collect(),
        _ => Vec::new(),
    };
    let numbers_of = |t: u32| header.find(t).map(|e| header.numbers(&e)).unwrap_or_default();
    let trigger_index = match t {
        tag::FILETRIGGERNAME => Some(numbers_of(tag::FILETRIGGERINDEX)),
        tag::TRANSFILETRIGGERNAME => Some(numbers_of(tag::TRANSFILETRIGGERINDEX)),
        _ => None,
    };
    let require_flags = if t == tag::REQUIRENAME {
        numbers_of(tag::REQUIREFLAGS)
    } else {
        Vec::new()
    };
    let rich = matches!(
        t,
        tag::REQUIRENAME
            | tag::CONFLICTNAME
            | tag::SUGGESTNAME
            | tag::SUPPLEMENTNAME
            | tag::RECOMMENDNAME
            | tag::ENHANCENAME
    ) && entry.ty == ty::STRING_ARRAY;

    let mut out = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let idx = match &trigger_index {
            Some(ti) => *ti.get(i).ok_or_else(|| {
                anyhow::anyhow!(
                    "{} has {} entries but only {} trigger indexes",
                    index.table,
                    keys.len(),
                    ti.len()
                )
            })? as u32,
            None => i as u32,
        };
        if require_flags.get(i).is_some_and(|f| is_transient(*f as u32)) {
            continue;
        }
        if t == tag::TRIGGERNAME && keys[..i].contains(key) {
            continue;
        }
        out.push(Row { key: key.clone(), idx });
        if rich && key.first() == Some(&b'(') {
            out.extend(rich_names(key).into_iter().map(|key| Row { key, idx }));
        }
    }
    Ok(out)
}

/// The names a rich dependency is also indexed under (`updateRichDep`): each
/// simple dependency's name, `!`-prefixed where it sits in a negated context
/// (the condition of `if`/`unless`), sorted, without `rpmlib(...)` names.
/// Nothing when the dependency does not parse.
fn rich_names(dep: &[u8]) -> Vec<Vec<u8>> {
    let mut c = Collector::default();
    if parse(dep, &mut 0, &mut |ev| c.event(ev), &mut 0).is_err() {
        return Vec::new();
    }
    let mut names = c.names;
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|mut n| {
            if n.first() == Some(&b' ') {
                n.remove(0);
            }
            n
        })
        .collect()
}

/// rpm's rich dependency operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Single,
    And,
    Or,
    If,
    Unless,
    Else,
    With,
    Without,
}

enum Event<'a> {
    Enter,
    Simple(&'a [u8]),
    Op(Op),
    Leave(Op),
}

/// `updateRichDepCB`'s state.
#[derive(Default)]
struct Collector {
    names: Vec<Vec<u8>>,
    negated: bool,
    /// Per nesting level: where the names of the current condition start.
    marks: Vec<usize>,
}

impl Collector {
    fn event(&mut self, ev: Event) {
        match ev {
            Event::Enter => self.marks.push(self.names.len()),
            Event::Simple(name) => {
                if !(name.is_empty() || name.len() > 7 && name.starts_with(b"rpmlib(")) {
                    let mut n = vec![if self.negated { b'!' } else { b' ' }];
                    n.extend_from_slice(name);
                    self.names.push(n);
                }
            }
            Event::Op(Op::If | Op::Unless) => {
                if let Some(m) = self.marks.last_mut() {
                    *m = self.names.len();
                }
                self.negated = !self.negated;
            }
            Event::Op(Op::Else) => {
                // The else branch applies when the condition does not: add the
                // condition's names again with the opposite sign.
                let from = self.marks.last().copied().unwrap_or(0);
                for i in from..self.names.len() {
                    let mut n = self.names[i].clone();
                    n[0] ^= b' ' ^ b'!';
                    self.names.push(n);
                }
                self.negated = !self.negated;
            }
            Event::Op(_) => {}
            Event::Leave(op) => {
                self.marks.pop();
                if matches!(op, Op::If | Op::Unless) {
                    self.negated = !self.negated;
                }
            }
        }
    }
}

const CHECK_NO_WITH: u32 = 1 << 1;
const CHECK_NO_AND: u32 = 1 << 2;
const CHECK_NO_OR: u32 = 1 << 3;

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `SKIPWHITE`: spaces and commas.
fn skip_white(s: &[u8], at: &mut usize) {
    while *at < s.len() && (is_space(s[*at]) || s[*at] == b',') {
        *at += 1;
    }
}

/// `SKIPNONWHITEX`: a token, with balanced parentheses inside it.
fn skip_token(s: &[u8], at: &mut usize) {
    let mut depth = 0i32;
    while *at < s.len() {
        let c = s[*at];
        if is_space(c) || c == b',' {
            break;
        }
        if c == b')' {
            let close = depth <= 0;
            depth -= 1;
            if close {
                break;
            }
        }
        *at += 1;
        if c == b'(' {
            depth += 1;
        }
    }
}

fn parse_simple<'a>(s: &'a [u8], at: &mut usize, cb: &mut dyn FnMut(Event<'a>)) -> Result<(), ()> {
    let n = *at;
    skip_token(s, at);
    if *at == n {
        return Err(());
    }
    let name = &s[n..*at];
    skip_white(s, at);
    if *at < s.len() {
        let mut pe = *at;
        skip_token(s, &mut pe);
        if matches!(&s[*at..pe], b"<=" | b"=<" | b"<" | b"==" | b"=" | b">=" | b"=>" | b">") {
            *at = pe;
            skip_white(s, at);
            let e = *at;
            skip_token(s, at);
            if *at == e {
                return Err(());
            }
        }
    }
    cb(Event::Simple(name));
    Ok(())
}

fn parse_op(s: &[u8], at: &mut usize) -> Result<Op, ()> {
    let start = *at;
    let mut pe = start;
    while pe < s.len() && !is_space(s[pe]) && s[pe] != b')' {
        pe += 1;
    }
    let op = match &s[start..pe] {
        b"and" => Op::And,
        b"or" => Op::Or,
        b"if" => Op::If,
        b"unless" => Op::Unless,
        b"else" => Op::Else,
        b"with" => Op::With,
        b"without" => Op::Without,
        _ => return Err(()),
    };
    *at = pe;
    Ok(op)
}

/// `rpmrichParseCheck` with the checks `rpmrichParse` applies.
fn check(op: Op, check: u32) -> Result<(), ()> {
    if matches!(op, Op::With | Op::Without) && check & CHECK_NO_WITH != 0 {
        return Err(());
    }
    Ok(())
}

/// `rpmrichParseInternal` without validation beyond what `rpmrichParse` does.
fn parse<'a>(s: &'a [u8], at: &mut usize, cb: &mut dyn FnMut(Event<'a>), checkp: &mut u32) -> Result<(), ()> {
    let mut op = Op::Single;
    let mut first = Op::Single;
    let mut chain: Option<Op> = None;
    let mut chk = *checkp;
    cb(Event::Enter);
    if s.get(*at) != Some(&b'(') {
        return Err(());
    }
    *at += 1;
    loop {
        skip_white(s, at);
        match s.get(*at) {
            None | Some(b')') => return Err(()),
            Some(b'(') => {
                let mut sub = 0;
                parse(s, at, cb, &mut sub)?;
                if matches!(op, Op::If | Op::Unless) {
                    sub &= !(CHECK_NO_AND | CHECK_NO_OR);
                }
                chk |= sub;
            }
            _ => parse_simple(s, at, cb)?,
        }
        skip_white(s, at);
        match s.get(*at) {
            None => return Err(()),
            Some(b')') => break,
            _ => {}
        }
        op = parse_op(s, at)?;
        if first == Op::Single {
            first = op;
        }
        if op == Op::Else && matches!(chain, Some(Op::If | Op::Unless)) {
            chain = None;
        }
        if let Some(c) = chain {
            if op != c || !matches!(op, Op::And | Op::Or | Op::With) {
                return Err(());
            }
        }
        cb(Event::Op(op));
        chain = Some(op);
    }
    check(first, chk)?;
    if first == Op::If {
        chk |= CHECK_NO_OR;
    }
    if first == Op::Unless {
        chk |= CHECK_NO_AND;
    }
    if matches!(op, Op::And | Op::Or) {
        chk &= !(CHECK_NO_AND | CHECK_NO_OR);
    }
    if !matches!(op, Op::Single | Op::With | Op::Without | Op::Or) {
        chk |= CHECK_NO_WITH;
    }
    *at += 1;
    cb(Event::Leave(op));
    *checkp |= chk;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rich_dependencies_index_their_names() {
        let cases: &[(&str, &[&str])] = &[
            ("(foo or bar)", &["bar", "foo"]),
            ("(foo >= 1.0 and bar < 2)", &["bar", "foo"]),
            ("(foo if bar)", &["foo", "!bar"]),
            ("(foo unless bar)", &["foo", "!bar"]),
            ("(foo if bar else baz)", &["bar", "baz", "foo", "!bar"]),
            ("((a or b) if (c and d))", &["a", "b", "!c", "!d"]),
            ("(libc.so.6()(64bit) with x)", &["libc.so.6()(64bit)", "x"]),
            ("(rpmlib(RichDependencies) and foo)", &["foo"]),
            ("(foo or foo)", &["foo"]),
            // Not parseable: nothing beyond the whole string.
            ("(foo or)", &[]),
            ("(foo bogus bar)", &[]),
            ("(a and b or c)", &[]),
            ("(a with (b and c))", &[]),
            ("(foo", &[]),
        ];
        for (dep, want) in cases {
            let got: Vec<String> = rich_names(dep.as_bytes())
                .iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect();
            assert_eq!(got, *want, "{dep}");
        }
    }
}
