//! Editing a flattened device tree (a `.dtb`, the devicetree specification's
//! format, version 17): set or delete properties of nodes named by path, the
//! way `fdtput` and the Raspberry Pi firmware's `dtparam`/`dtoverlay` change
//! the tree a board boots with. Pure bytes in, bytes out; nothing else is read.

use std::collections::HashMap;

use anyhow::{Context, Result, bail, ensure};

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
const HEADER_LEN: usize = 40;

/// A property value as a board file writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string, stored NUL-terminated (`status = "disabled"`).
    Str(String),
    /// 32-bit cells, stored big-endian (`interrupts = [0, 93, 1]`).
    Cells(Vec<u32>),
}

impl Value {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Value::Str(s) => {
                let mut b = s.as_bytes().to_vec();
                b.push(0);
                b
            }
            Value::Cells(c) => c.iter().flat_map(|v| v.to_be_bytes()).collect(),
        }
    }
}

/// Changes to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// Absolute path with unit addresses (`/soc/serial@7e215040`).
    pub node: String,
    /// Properties to set, added when absent.
    pub set: Vec<(String, Value)>,
    /// Properties to delete; each must exist (a stale edit is an error, not a no-op).
    pub delete: Vec<String>,
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    name: String,
    props: Vec<(String, Vec<u8>)>,
    children: Vec<Node>,
}

/// A parsed blob: the memory reservation block kept as bytes, and the tree.
#[derive(Debug)]
struct Fdt {
    boot_cpuid: u32,
    rsvmap: Vec<u8>,
    root: Node,
}

/// `len` bytes at `at`, if the blob has them (no overflow on 32-bit boards).
fn slice(b: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    b.get(at..at.checked_add(len)?)
}

fn be32(b: &[u8], at: usize) -> Result<u32> {
    let s = slice(b, at, 4).with_context(|| format!("truncated at byte {at}"))?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn parse(b: &[u8]) -> Result<Fdt> {
    ensure!(
        b.len() >= HEADER_LEN,
        "{} bytes is too short for a device tree header",
        b.len()
    );
    ensure!(be32(b, 0)? == MAGIC, "no device tree magic (0xd00dfeed)");
    let h = |i: usize| be32(b, i * 4).map(|v| v as usize);
    let (total, off_struct, off_strings, off_rsv, version) = (h(1)?, h(2)?, h(3)?, h(4)?, h(5)?);
    ensure!(
        total <= b.len(),
        "the header says {total} bytes, the blob has {}",
        b.len()
    );
    ensure!(version >= 17, "device tree version {version}: only 17 is supported");
    let (size_strings, size_struct) = (h(8)?, h(9)?);
    let strings = slice(b, off_strings, size_strings).context("the strings block lies outside the blob")?;
    let structure = slice(b, off_struct, size_struct).context("the structure block lies outside the blob")?;
    // The reservation map: (address, size) pairs up to the all-zero one.
    let mut at = off_rsv;
    loop {
        let e = slice(b, at, 16).context("the memory reservation map runs off the blob")?;
        at += 16;
        if e.iter().all(|&x| x == 0) {
            break;
        }
    }
    let rsvmap = b[off_rsv..at].to_vec();
    let mut pos = 0;
    let root = parse_node(structure, strings, &mut pos, 0)?;
    Ok(Fdt {
        boot_cpuid: be32(b, 28)?,
        rsvmap,
        root,
    })
}

/// The next token after NOPs.
fn token(s: &[u8], pos: &mut usize) -> Result<u32> {
    loop {
        let t = be32(s, *pos).context("structure block")?;
        *pos += 4;
        if t != NOP {
            return Ok(t);
        }
    }
}

fn parse_node(s: &[u8], strings: &[u8], pos: &mut usize, depth: usize) -> Result<Node> {
    ensure!(depth < 64, "nodes nested more than 64 deep");
    let t = token(s, pos)?;
    ensure!(
        t == BEGIN_NODE,
        "expected a node at structure offset {}, found token {t}",
        *pos - 4
    );
    let name = cstr(s, *pos).context("node name")?;
    *pos = align4(*pos + name.len() + 1);
    let mut node = Node {
        name,
        props: Vec::new(),
        children: Vec::new(),
    };
    loop {
        let at = *pos;
        match token(s, pos)? {
            PROP => {
                let len = be32(s, *pos)? as usize;
                let nameoff = be32(s, *pos + 4)? as usize;
                let value = slice(s, *pos + 8, len)
                    .with_context(|| format!("property in {} runs off the structure block", node.name))?;
                let pname = cstr(strings, nameoff).context("property name")?;
                node.props.push((pname, value.to_vec()));
                *pos = align4(*pos + 8 + len);
            }
            BEGIN_NODE => {
                *pos = at;
                node.children.push(parse_node(s, strings, pos, depth + 1)?);
            }
            END_NODE => return Ok(node),
            END if depth == 0 => bail!("the structure block ends inside the root node"),
            t => bail!("unexpected token {t} at structure offset {at}"),
        }
    }
}

fn cstr(b: &[u8], at: usize) -> Result<String> {
    let rest = b.get(at..).context("offset past the end")?;
    let end = rest.iter().position(|&c| c == 0).context("a string without its NUL")?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

fn serialize(f: &Fdt) -> Vec<u8> {
    let mut structure = Vec::new();
    let mut strings = Vec::new();
    let mut offsets: HashMap<String, u32> = HashMap::new();
    write_node(&f.root, &mut structure, &mut strings, &mut offsets);
    structure.extend(END.to_be_bytes());
    let off_rsv = HEADER_LEN.next_multiple_of(8);
    let off_struct = off_rsv + f.rsvmap.len();
    let off_strings = off_struct + structure.len();
    let total = off_strings + strings.len();
    let mut out = Vec::with_capacity(total);
    for v in [
        MAGIC,
        total as u32,
        off_struct as u32,
        off_strings as u32,
        off_rsv as u32,
        17,
        16,
        f.boot_cpuid,
        strings.len() as u32,
        structure.len() as u32,
    ] {
        out.extend(v.to_be_bytes());
    }
    out.resize(off_rsv, 0);
    out.extend(&f.rsvmap);
    out.extend(structure);
    out.extend(strings);
    out
}

fn write_node(n: &Node, s: &mut Vec<u8>, strings: &mut Vec<u8>, offsets: &mut HashMap<String, u32>) {
    s.extend(BEGIN_NODE.to_be_bytes());
    s.extend(n.name.as_bytes());
    s.push(0);
    s.resize(align4(s.len()), 0);
    for (name, value) in &n.props {
        let off = *offsets.entry(name.clone()).or_insert_with(|| {
            let o = strings.len() as u32;
            strings.extend(name.as_bytes());
            strings.push(0);
            o
        });
        s.extend(PROP.to_be_bytes());
        s.extend((value.len() as u32).to_be_bytes());
        s.extend(off.to_be_bytes());
        s.extend(value);
        s.resize(align4(s.len()), 0);
    }
    for c in &n.children {
        write_node(c, s, strings, offsets);
    }
    s.extend(END_NODE.to_be_bytes());
}

fn find<'a>(root: &'a mut Node, path: &str) -> Option<&'a mut Node> {
    let mut n = root;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        n = n.children.iter_mut().find(|c| c.name == part)?;
    }
    Some(n)
}

/// `dtb` with `edits` applied in order; an edit naming a node or a property to
/// delete that the tree does not have is an error naming it.
pub fn apply(dtb: &[u8], edits: &[Edit]) -> Result<Vec<u8>> {
    let mut f = parse(dtb)?;
    for e in edits {
        ensure!(
            e.node.starts_with('/'),
            "device tree node {:?} is not an absolute path",
            e.node
        );
        let node = find(&mut f.root, &e.node).with_context(|| format!("the device tree has no node {}", e.node))?;
        for p in &e.delete {
            let i = node
                .props
                .iter()
                .position(|(n, _)| n == p)
                .with_context(|| format!("device tree node {} has no property {p} to delete", e.node))?;
            node.props.remove(i);
        }
        for (p, v) in &e.set {
            match node.props.iter_mut().find(|(n, _)| n == p) {
                Some(slot) => slot.1 = v.bytes(),
                None => node.props.push((p.clone(), v.bytes())),
            }
        }
    }
    Ok(serialize(&f))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small tree with the shapes a real DTB has: root properties, a nested
    /// node with a unit address, a reservation entry, a NOP.
    fn sample() -> Vec<u8> {
        let soc = Node {
            name: "soc".into(),
            props: vec![("#address-cells".into(), 1u32.to_be_bytes().to_vec())],
            children: vec![Node {
                name: "serial@7e215040".into(),
                props: vec![
                    ("compatible".into(), b"brcm,bcm2835-aux-uart\0".to_vec()),
                    ("interrupts".into(), Value::Cells(vec![0, 0x5d, 4]).bytes()),
                    ("status".into(), b"okay\0".to_vec()),
                ],
                children: vec![],
            }],
        };
        let f = Fdt {
            boot_cpuid: 0,
            rsvmap: [0x1000u64.to_be_bytes(), 0x2000u64.to_be_bytes(), [0; 8], [0; 8]].concat(),
            root: Node {
                name: String::new(),
                props: vec![("model".into(), b"Raspberry Pi 4 Model B\0".to_vec())],
                children: vec![soc],
            },
        };
        let mut b = serialize(&f);
        // A NOP before the first property of the root, as fdt_nop_property leaves.
        let off_struct = be32(&b, 8).unwrap() as usize;
        let at = off_struct + 8; // BEGIN_NODE, the root's empty name padded to 4
        b.splice(at..at, NOP.to_be_bytes());
        for (field, by) in [(1, 4u32), (3, 4), (9, 4)] {
            let v = be32(&b, field * 4).unwrap() + by;
            b[field * 4..field * 4 + 4].copy_from_slice(&v.to_be_bytes());
        }
        b
    }

    #[test]
    fn round_trip_keeps_the_tree_and_the_reservations() {
        let b = sample();
        let f = parse(&b).unwrap();
        let again = parse(&serialize(&f)).unwrap();
        assert_eq!(again.root, f.root);
        assert_eq!(again.rsvmap, f.rsvmap);
        assert_eq!(f.rsvmap.len(), 32);
        assert_eq!(f.root.children[0].children[0].name, "serial@7e215040");
    }

    #[test]
    fn set_replaces_or_adds_and_delete_removes() {
        let out = apply(
            &sample(),
            &[Edit {
                node: "/soc/serial@7e215040".into(),
                set: vec![
                    ("interrupts".into(), Value::Cells(vec![0, 0x5d, 1])),
                    ("label".into(), Value::Str("uart1".into())),
                ],
                delete: vec!["status".into()],
            }],
        )
        .unwrap();
        let mut f = parse(&out).unwrap();
        let n = find(&mut f.root, "/soc/serial@7e215040").unwrap();
        let props: Vec<&str> = n.props.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(props, ["compatible", "interrupts", "label"]);
        assert_eq!(n.props[1].1, [0, 0, 0, 0, 0, 0, 0, 0x5d, 0, 0, 0, 1]);
        assert_eq!(n.props[2].1, b"uart1\0");
        assert_eq!(be32(&out, 4).unwrap() as usize, out.len());
    }

    #[test]
    fn a_missing_node_or_property_is_named() {
        let e = apply(
            &sample(),
            &[Edit {
                node: "/soc/hdmi@7ef00700".into(),
                set: vec![],
                delete: vec![],
            }],
        )
        .unwrap_err();
        assert!(e.to_string().contains("no node /soc/hdmi@7ef00700"), "{e}");
        let e = apply(
            &sample(),
            &[Edit {
                node: "/soc/serial@7e215040".into(),
                set: vec![],
                delete: vec!["mmc-pwrseq".into()],
            }],
        )
        .unwrap_err();
        assert!(e.to_string().contains("no property mmc-pwrseq"), "{e}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(apply(b"not a dtb", &[]).is_err());
        let mut b = sample();
        b[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(apply(&b, &[]).is_err());
        let b = sample();
        for cut in [40, 60, b.len() - 8] {
            let mut t = b[..cut].to_vec();
            t[4..8].copy_from_slice(&(cut as u32).to_be_bytes());
            assert!(apply(&t, &[]).is_err(), "cut at {cut}");
        }
    }
}
