//! Bundles taken apart and put together again member by member (a
//! zstd-compressed tar), so tests can damage or forge one member.

use std::io::Read as _;
use std::path::Path;

/// One tar member to re-pack: raw name, type, contents.
pub struct Raw {
    pub name: Vec<u8>,
    pub kind: tar::EntryType,
    pub data: Vec<u8>,
}

/// The members of a bundle (zstd-compressed tar), in archive order.
pub fn unpack(bundle: &Path) -> Vec<Raw> {
    let dec = zstd::Decoder::new(std::fs::File::open(bundle).unwrap()).unwrap();
    let mut ar = tar::Archive::new(dec);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            Raw {
                name: e.path_bytes().into_owned(),
                kind: e.header().entry_type(),
                data,
            }
        })
        .collect()
}

/// Packs members as-is: names written raw, so path tricks survive.
pub fn pack(members: &[Raw], dest: &Path) {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..m.name.len()].copy_from_slice(&m.name);
        h.set_size(m.data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(m.kind);
        if m.kind == tar::EntryType::Symlink {
            h.set_size(0);
            h.set_link_name("/etc/passwd").unwrap();
        }
        h.set_cksum();
        let data: &[u8] = if m.kind == tar::EntryType::Symlink {
            &[]
        } else {
            &m.data
        };
        b.append(&h, data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    std::fs::write(dest, zstd::encode_all(tar.as_slice(), 3).unwrap()).unwrap();
}

/// A regular member.
pub fn raw(name: &str, data: &[u8]) -> Raw {
    Raw {
        name: name.as_bytes().to_vec(),
        kind: tar::EntryType::Regular,
        data: data.to_vec(),
    }
}
