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
