//! Booting an image in qemu and waiting for the booted system's marker on the
//! serial console. Some machines (`-M raspi3b`) do not exit on poweroff, so
//! qemu is stopped once the marker (or the time limit) is seen.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How to boot.
#[derive(Debug, Clone)]
pub struct BootTest {
    /// The qemu program.
    pub program: String,
    /// Its arguments, placeholders already substituted.
    pub args: Vec<String>,
    /// A line containing this means the system booted.
    pub marker: String,
    /// Give up after this long.
    pub timeout: Duration,
    /// The serial console is copied here.
    pub log: PathBuf,
}

/// What the boot showed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Booted {
    /// The marker line.
    pub line: String,
    /// Seconds from starting qemu to the marker.
    pub secs: f64,
    /// The serial log.
    pub log: PathBuf,
}

/// Runs qemu until the marker appears on its serial console or the time limit.
pub fn run(t: &BootTest) -> Result<Booted> {
    let started = Instant::now();
    let mut child = Command::new(&t.program)
        .args(&t.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} (install qemu-system-arm: scripts/setup)", t.program))?;
    let rx = console_lines(&mut child);
    let mut log = std::fs::File::create(&t.log).with_context(|| format!("creating {}", t.log.display()))?;
    let mut tail: Vec<String> = Vec::new();
    let result = loop {
        let left = t.timeout.saturating_sub(started.elapsed());
        match rx.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                if line.contains(&t.marker) {
                    break Ok(Booted {
                        line,
                        secs: started.elapsed().as_secs_f64(),
                        log: t.log.clone(),
                    });
                }
                tail.push(line);
                if tail.len() > 40 {
                    tail.remove(0);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                break Err(format!(
                    "no {:?} on the serial console within {} s",
                    t.marker,
                    t.timeout.as_secs()
                ));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                break Err(format!("qemu exited ({status}) before {:?} appeared", t.marker));
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    match result {
        Ok(b) => Ok(b),
        Err(why) => bail!(
            "boot test failed: {why}; the last lines of the serial console ({}):\n{}",
            t.log.display(),
            tail.join("\n")
        ),
    }
}

/// The lines a piped child prints on stdout and stderr (its serial console,
/// for qemu), as they come, `\r\n` trimmed; the channel closes when both end.
pub fn console_lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(pipe);
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf).map(|n| n > 0).unwrap_or(false) {
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
                if tx.send(line).is_err() {
                    break;
                }
                buf.clear();
            }
        });
    }
    rx
}

/// Reads a file out of an ext4 filesystem inside an image (`debugfs` with
/// e2fsprogs' `?offset=` io option: no loop device, no mount).
pub fn ext4_cat(image: &Path, offset: u64, path: &str, out: &Path) -> Result<()> {
    let dev = format!("{}?offset={offset}", image.display());
    let bytes = crate::runner::Tool::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(&dev)
        .output()
        .with_context(|| format!("reading {path} from {}", image.display()))?;
    if bytes.is_empty() {
        bail!(
            "{path} is missing or empty in the ext4 filesystem at offset {offset} of {}",
            image.display()
        );
    }
    std::fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))
}

/// Reads a file of the root directory of the FAT filesystem at `offset`
/// (`size` bytes) inside an image, without a loop device or a mount.
pub fn fat_cat(image: &Path, offset: u64, size: u64, name: &str) -> Result<Vec<u8>> {
    let file = std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let mut w = Window {
        file,
        start: offset,
        len: size,
        pos: 0,
    };
    crate::device::fat::read(&mut w, name)
        .with_context(|| format!("the FAT partition at offset {offset} of {}", image.display()))?
        .with_context(|| {
            format!(
                "{name} is not on the FAT partition at offset {offset} of {}",
                image.display()
            )
        })
}

/// One partition of an image file, read-only: the FAT reader sees a disk.
struct Window {
    file: std::fs::File,
    start: u64,
    len: u64,
    pos: u64,
}

impl std::io::Read for Window {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        let got = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl std::io::Seek for Window {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match pos {
            Some(p) if p <= self.len => {
                self.pos = p;
                Ok(p)
            }
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

impl Write for Window {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the image is only read here",
        ))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl crate::device::fat::Disk for Window {
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
