#![allow(clippy::unwrap_used)] // benches fail loudly on purpose

//! `make bench`: `arbor image` for the rpi3 board (FAT firmware partition, ext4
//! /boot and root) against a shell baseline doing the same job with the usual
//! tools in the same run: `ostree admin init-fs/os-init/pull-local/deploy`,
//! `sfdisk`, `mkfs.fat` + `mcopy`, and `mkfs.ext4 -d -E offset=` for /boot and
//! the sysroot. Also prints the sparse image's size on disk against its
//! apparent size.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().blocks() * 512
}

const BASELINE: &str = r#"
set -euo pipefail
img=$OUT/baseline.img; sys=$OUT/sysroot
truncate -s 2G "$img"; mkdir -p "$sys"
printf 'label: dos\nstart=2048, size=262144, type=c\nstart=264192, size=524288, type=83, bootable\nstart=788480, type=83\n' | sfdisk -q "$img"
ostree admin init-fs --modern "$sys" >/dev/null
ostree admin os-init --sysroot="$sys" arbor >/dev/null
ostree --repo="$sys/ostree/repo" config set sysroot.bootloader none
ostree --repo="$sys/ostree/repo" pull-local "$REPO" "$REF" >/dev/null
ostree admin deploy --sysroot="$sys" --os=arbor --karg=root=LABEL=root --karg=rw --karg=console=ttyS1,115200 "$REF" >/dev/null
deploy=$(ls -d "$sys"/ostree/deploy/arbor/deploy/*.0)
kver=$(ls "$deploy/usr/lib/modules")
fw=$OUT/fw.vfat
mkfs.fat -C -n RPI-FW "$fw" 131072 >/dev/null
printf 'arm_64bit=1\nkernel=u-boot.bin\nenable_uart=1\n' > "$OUT/config.txt"
mcopy -i "$fw" "$OUT/config.txt" "$deploy/usr/share/uboot/rpi_3/u-boot.bin" "$deploy/usr/lib/modules/$kver/dtb/broadcom/bcm2837-rpi-3-b.dtb" ::/
dd if="$fw" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
mkdir -p "$sys/boot/extlinux"
printf 'default arbor\nlabel arbor\n  kernel /x\n' > "$sys/boot/extlinux/extlinux.conf"
chattr -i "$deploy"
mv "$sys/boot" "$OUT/boot"; mkdir "$sys/boot"
mkfs.ext4 -F -q -L boot -d "$OUT/boot" -E offset=$((264192*512)) "$img" 262144k
mkfs.ext4 -F -q -L root -d "$sys" -E offset=$((788480*512)) "$img" $(( (4194304-788480)/2 ))k
"#;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    arbor_sample_repo::ensure(&arbor_sample_repo::Options::for_source_tree(root)).expect("sample repository");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let exe = env!("CARGO_BIN_EXE_arbor");
    let repo = t.join("repo");
    run(Command::new(exe)
        .args(["compose", "tree", "--arch", "aarch64", "--repo"])
        .arg(&repo)
        .arg("--cache-dir")
        .arg(t.join("cache"))
        .arg(root.join("treefiles/sample-minimal.yaml")));
    let reference = "arbor/aarch64/sample-minimal";

    let started = Instant::now();
    run(Command::new(exe)
        .args(["image", "--board", "rpi3", "--ref", reference, "--repo"])
        .arg(&repo)
        .arg("-o")
        .arg(t.join("arbor.img")));
    let arbor_secs = started.elapsed().as_secs_f64();

    let base = t.join("baseline");
    std::fs::create_dir(&base).unwrap();
    let started = Instant::now();
    run(Command::new("bash")
        .arg("-c")
        .arg(BASELINE)
        .env("OUT", &base)
        .env("REPO", &repo)
        .env("REF", reference));
    let base_secs = started.elapsed().as_secs_f64();

    let img = t.join("arbor.img");
    let apparent = std::fs::metadata(&img).unwrap().len();
    println!("== image: rpi3 image of the sample aarch64 tree (deploy + partitions + filesystems)");
    println!("  arbor image:                        {arbor_secs:.2} s (with bmap and manifest)");
    println!("  shell baseline (ostree admin, sfdisk, mkfs.fat+mcopy, mkfs.ext4 -d): {base_secs:.2} s");
    println!("  ratio arbor/baseline: {:.2}x (goal <= 1.3x)", arbor_secs / base_secs);
    println!(
        "  size on disk {} MiB of {} MiB apparent ({:.0}%); baseline image {} MiB on disk",
        allocated(&img) >> 20,
        apparent >> 20,
        100.0 * allocated(&img) as f64 / apparent as f64,
        allocated(&base.join("baseline.img")) >> 20
    );
}
