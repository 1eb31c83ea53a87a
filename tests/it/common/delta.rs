//! Hostile static deltas: an xz stream that unpacks to far more than it
//! weighs, put where libostree reads a delta part.

use std::io::Write as _;

use ostree::glib;
use ostree::glib::prelude::*;

/// libostree's superblock type (`OSTREE_STATIC_DELTA_SUPERBLOCK_FORMAT`).
const SUPERBLOCK: &str = "(a{sv}tayay(a{sv}aya(say)sstayay)aya(uayttay)a(yaytt))";

/// An xz stream of `zeros` zero bytes (1 GiB weighs about 150 kB).
pub fn xz_bomb(zeros: u64) -> Vec<u8> {
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 0);
    let chunk = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        enc.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    enc.finish().unwrap()
}

/// A delta part file as libostree stores it: the compression byte (`x`), then the stream.
pub fn xz_part(stream: &[u8]) -> Vec<u8> {
    let mut part = vec![b'x'];
    part.extend_from_slice(stream);
    part
}

/// A self-contained delta file (`static-delta generate --inline --filename`)
/// with every inline part replaced by the xz `stream`; returns the new file
/// and how many parts were replaced.
pub fn with_inline_parts(delta: &[u8], stream: &[u8]) -> (Vec<u8>, usize) {
    let ty = glib::VariantTy::new(SUPERBLOCK).unwrap();
    let v = glib::Variant::from_bytes_with_type(&glib::Bytes::from(delta), ty);
    assert!(v.is_normal_form(), "not a static delta superblock");
    let meta = v.child_value(0);
    let mut replaced = 0;
    let entries: Vec<glib::Variant> = (0..meta.n_children())
        .map(|i| {
            let e = meta.child_value(i);
            let key = e.child_value(0);
            let mut value = e.child_value(1).as_variant().unwrap();
            // Inline parts are `(yay)`: compression byte, then the part.
            if value.type_().as_str() == "(yay)" {
                replaced += 1;
                value =
                    glib::Variant::tuple_from_iter([b'x'.to_variant(), glib::Variant::array_from_fixed_array(stream)]);
            }
            glib::Variant::from_dict_entry(&key, &glib::Variant::from_variant(&value))
        })
        .collect();
    let meta = glib::Variant::array_from_iter_with_type(glib::VariantTy::new("{sv}").unwrap(), entries);
    let children = std::iter::once(meta).chain((1..v.n_children()).map(|i| v.child_value(i)));
    (glib::Variant::tuple_from_iter(children).data().to_vec(), replaced)
}

/// A superblock (plain, as `arbor publish` serves it) whose every part
/// declares `size` compressed and `usize` uncompressed bytes where given;
/// `None` when `bytes` is not a delta from another commit.
pub fn with_part_sizes(bytes: &[u8], size: Option<u64>, usize: Option<u64>) -> Option<Vec<u8>> {
    let ty = glib::VariantTy::new(SUPERBLOCK).unwrap();
    let v = glib::Variant::from_bytes_with_type(&glib::Bytes::from(bytes), ty);
    assert!(v.is_normal_form(), "not a static delta superblock");
    if v.child_value(2).n_children() == 0 {
        return None;
    }
    let parts = v.child_value(6);
    let entries: Vec<glib::Variant> = (0..parts.n_children())
        .map(|i| {
            let p = parts.child_value(i);
            // (version, checksum, size, usize, objects), little-endian as libostree writes on x86.
            let size = size.map_or_else(|| p.child_value(2), |s| s.to_le().to_variant());
            let usize = usize.map_or_else(|| p.child_value(3), |s| s.to_le().to_variant());
            glib::Variant::tuple_from_iter([p.child_value(0), p.child_value(1), size, usize, p.child_value(4)])
        })
        .collect();
    let parts = glib::Variant::array_from_iter_with_type(parts.type_().element(), entries);
    let children = (0..v.n_children()).map(|i| if i == 6 { parts.clone() } else { v.child_value(i) });
    Some(glib::Variant::tuple_from_iter(children).data().to_vec())
}

/// A detached signature file as `arbor publish` writes `summary.sig` and
/// `superblock.sig`: an `a{sv}` with `ostree.sign.ed25519` over `data`.
pub fn signature_file(data: &[u8], key: &ed25519_dalek::SigningKey) -> Vec<u8> {
    use ed25519_dalek::Signer as _;
    let sig = key.sign(data).to_bytes();
    let sigs = glib::Variant::array_from_iter_with_type(
        glib::VariantTy::BYTE_STRING,
        [glib::Variant::array_from_fixed_array(&sig)],
    );
    let dict = glib::VariantDict::new(None);
    dict.insert_value("ostree.sign.ed25519", &sigs);
    dict.end().data().to_vec()
}

/// Every `superblock` under `public`'s deltas/ rewritten by `edit` (the ones
/// it returns `None` for are left alone) and signed again with `key`; then
/// the summary (which records each superblock's checksum) regenerated and
/// signed again. Returns how many superblocks changed.
pub fn edit_superblocks(
    public: &std::path::Path,
    key_file: &std::path::Path,
    edit: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> usize {
    let key = arbor::sign::keys::read_secret_key(key_file).unwrap();
    let mut changed = 0;
    for p in delta_files(public, |name| name == "superblock") {
        if let Some(new) = edit(&std::fs::read(&p).unwrap()) {
            std::fs::write(&p, &new).unwrap();
            std::fs::write(p.with_file_name("superblock.sig"), signature_file(&new, &key)).unwrap();
            changed += 1;
        }
    }
    super::run(
        std::process::Command::new("ostree")
            .arg(format!("--repo={}", public.display()))
            .args(["summary", "-u"]),
    );
    let summary = std::fs::read(public.join("summary")).unwrap();
    std::fs::write(public.join("summary.sig"), signature_file(&summary, &key)).unwrap();
    changed
}

/// The files under `public`'s deltas/ whose name `wanted` accepts, sorted.
pub fn delta_files(public: &std::path::Path, wanted: impl Fn(&str) -> bool) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![public.join("deltas")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| wanted(&n.to_string_lossy())) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
