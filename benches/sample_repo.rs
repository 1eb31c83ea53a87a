//! `make bench`: building the sample repository from cached .debs, cold.
//!
//! Prints wall time and MB/s of file content packed, next to a reference run in
//! the same process: `dpkg-deb --fsys-tarfile | zstd -3` over the same .debs,
//! the least any tool must do (unpack and recompress) to turn them into
//! zstd-compressed packages. The ratio is arbor's time over the reference's.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use arbor_sample_repo::{Options, ensure};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().expect("temporary directory");
    let mut opts = Options::for_source_tree(root);
    opts.out = tmp.path().join("repo");
    opts.force = true;

    // Warm the .deb cache first so the timed run measures building, not downloading.
    let warm = ensure(&Options {
        out: tmp.path().join("warm"),
        ..opts.clone()
    })
    .expect("building the sample repository");
    std::fs::remove_dir_all(tmp.path().join("warm")).ok();

    let t = Instant::now();
    let s = ensure(&opts).expect("building the sample repository");
    let arbor_secs = t.elapsed().as_secs_f64();
    let mb = s.content_bytes as f64 / 1e6;
    let rpm_mb: f64 = s.packages.iter().map(|p| p.size as f64).sum::<f64>() / 1e6;

    // Reference: unpack each .deb the build used and recompress its data with zstd -3.
    let debs: Vec<_> = std::fs::read_dir(&opts.deb_cache)
        .expect("reading the deb cache")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    let t = Instant::now();
    for deb in &debs {
        let ok = Command::new("sh")
            .arg("-c")
            .arg("dpkg-deb --fsys-tarfile \"$1\" | zstd -3 -q -T1 > /dev/null")
            .arg("sh")
            .arg(deb)
            .status()
            .expect("running dpkg-deb | zstd");
        assert!(ok.success(), "reference run failed on {}", deb.display());
    }
    let ref_secs = t.elapsed().as_secs_f64();

    println!("sample repository build (cold, .debs cached)");
    println!(
        "  packages:        {} ({} manifests' arches), {rpm_mb:.1} MB of .rpm",
        s.packages.len(),
        warm.packages.len()
    );
    println!(
        "  arbor:           {arbor_secs:.2} s, {:.1} MB/s of file content ({mb:.1} MB)",
        mb / arbor_secs
    );
    println!(
        "  reference:       {ref_secs:.2} s (dpkg-deb --fsys-tarfile | zstd -3 over {} .debs), {:.1} MB/s",
        debs.len(),
        mb / ref_secs
    );
    println!("  ratio arbor/ref: {:.2}", arbor_secs / ref_secs);
}
