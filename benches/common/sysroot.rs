//! What the benches that work on an image's mounted sysroot share: running a
//! command, and the image's root and boot partitions on loop devices.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `c`, asserting success; returns stdout.
pub fn run(c: &mut Command) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("starting {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The root and boot partitions of `image`, mounted at `top` and `top/boot`.
pub struct Mounted {
    mounts: Vec<PathBuf>,
    loops: Vec<String>,
}

impl Mounted {
    pub fn new(image: &Path, top: &Path) -> Mounted {
        std::fs::create_dir_all(top).unwrap();
        let table: serde_json::Value = serde_json::from_str(&run(Command::new("sfdisk").arg("-J").arg(image))).unwrap();
        let mut m = Mounted {
            mounts: Vec::new(),
            loops: Vec::new(),
        };
        let mut parts = Vec::new();
        for p in table["partitiontable"]["partitions"].as_array().unwrap() {
            let (start, size) = (p["start"].as_u64().unwrap() * 512, p["size"].as_u64().unwrap() * 512);
            let dev = run(Command::new("losetup")
                .args([
                    "-f",
                    "--show",
                    "-o",
                    &start.to_string(),
                    "--sizelimit",
                    &size.to_string(),
                ])
                .arg(image))
            .trim()
            .to_string();
            m.loops.push(dev.clone());
            let label = run(Command::new("blkid").args(["-p", "-s", "LABEL", "-o", "value", &dev]));
            parts.push((label.trim().to_string(), dev));
        }
        for (label, at) in [("root", top.to_path_buf()), ("boot", top.join("boot"))] {
            let dev = &parts.iter().find(|(l, _)| l == label).unwrap().1;
            run(Command::new("mount").arg(dev).arg(&at));
            m.mounts.push(at);
        }
        m
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        for t in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg(t).status();
        }
        for l in &self.loops {
            let _ = Command::new("losetup").arg("-d").arg(l).status();
        }
    }
}
