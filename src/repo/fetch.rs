//! Fetching by URL: `file://` and `http(s)://`, with timeouts, retries, and
//! resumable downloads verified against a checksum before they are renamed
//! into place.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256, Sha512};

/// A checksum from repository metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// `sha256` or `sha512`.
    pub kind: String,
    /// Lowercase hex.
    pub hex: String,
}

impl Checksum {
    /// Validates the type and the hex length.
    pub fn new(kind: &str, hex: &str) -> Result<Checksum> {
        let len = match kind {
            "sha256" => 64,
            "sha512" => 128,
            _ => bail!("checksum type {kind:?} is not supported (allowed: sha256, sha512)"),
        };
        let hex = hex.trim().to_ascii_lowercase();
        if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("{kind} checksum {hex:?} is not {len} hex digits");
        }
        Ok(Checksum {
            kind: kind.to_string(),
            hex,
        })
    }

    /// Computes the same kind of checksum over a file.
    pub fn of_file(&self, path: &Path) -> Result<String> {
        let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let ctx = || format!("reading {}", path.display());
        Ok(match self.kind.as_str() {
            "sha512" => {
                let mut h = Sha512::new();
                std::io::copy(&mut f, &mut h).with_context(ctx)?;
                hex::encode(h.finalize())
            }
            _ => {
                let mut h = Sha256::new();
                std::io::copy(&mut f, &mut h).with_context(ctx)?;
                hex::encode(h.finalize())
            }
        })
    }

    /// Whether the file at `path` has this checksum.
    pub fn matches(&self, path: &Path) -> Result<bool> {
        Ok(self.of_file(path)? == self.hex)
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.hex)
    }
}

/// Fetches URLs. One per run; cheap to share between threads.
#[derive(Clone)]
pub struct Fetcher {
    agent: ureq::Agent,
    retries: u32,
}

impl Default for Fetcher {
    fn default() -> Self {
        Fetcher::new()
    }
}

impl Fetcher {
    /// A fetcher with 15 s connect and 60 s read timeouts and 3 attempts per request.
    pub fn new() -> Fetcher {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(60))
            .user_agent(concat!("arbor/", env!("CARGO_PKG_VERSION")))
            .build();
        Fetcher { agent, retries: 3 }
    }

    /// Reads a whole (small) resource into memory: at most [`GET_CAP`] bytes,
    /// from a regular file or a server (either may be hostile).
    pub fn get(&self, url: &str) -> Result<Vec<u8>> {
        if let Some(path) = file_url_path(url)? {
            return crate::input::read_bounded(&path, "repository metadata", GET_CAP)
                .with_context(|| format!("reading {url}"));
        }
        let mut out = Capped(Vec::new());
        self.http(url, 0, &mut out).with_context(|| format!("fetching {url}"))?;
        Ok(out.0)
    }

    /// Downloads `url` to `dest`, resuming a `dest.part` left by an earlier run, and
    /// renames it into place only when its checksum matches. A `.part` that could
    /// not be written (no space, a failing disk) is removed: kept, it would hold
    /// the space the next run needs. One cut short by the network is kept to resume.
    pub fn download(&self, url: &str, dest: &Path, want: &Checksum) -> Result<()> {
        let part = part_path(dest);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        if let Some(src) = file_url_path(url)? {
            // Local repositories: copy (a hardlink would let a later edit of the
            // repository change our verified cache). A copy starts over each time.
            if let Err(e) = std::fs::copy(&src, &part) {
                std::fs::remove_file(&part).ok();
                return Err(e).with_context(|| format!("copying {url} to {}", part.display()));
            }
        } else if let Err(e) = self.download_http(url, &part) {
            if part_write_failed(&e) {
                std::fs::remove_file(&part).ok();
            }
            return Err(e);
        }
        let got = want.of_file(&part)?;
        if got != want.hex {
            std::fs::remove_file(&part).ok();
            bail!(
                "checksum mismatch for {url}: expected {want}, got {}:{got}; the partial file was removed",
                want.kind
            );
        }
        // Data the disk could not take (no space, an I/O error) shows here at the
        // latest: such a part is not worth keeping either.
        if let Err(e) = std::fs::File::open(&part).and_then(|f| f.sync_all()) {
            std::fs::remove_file(&part).ok();
            return Err(e).with_context(|| format!("syncing {}", part.display()));
        }
        std::fs::rename(&part, dest).with_context(|| format!("renaming {} into place", part.display()))?;
        Ok(())
    }

    /// The HTTP part of [`Fetcher::download`]: appends to `part` from where it ends.
    fn download_http(&self, url: &str, part: &Path) -> Result<()> {
        let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .with_context(|| format!("opening {}", part.display()))?;
        let mut out = PartFile { file: f, path: part };
        let resumed = self
            .http(url, have, &mut out)
            .with_context(|| format!("downloading {url}"))?;
        if !resumed && have > 0 {
            // The server ignored the Range request and sent everything: start over.
            drop(out);
            std::fs::remove_file(part).ok();
            let f = std::fs::File::create(part).with_context(|| format!("creating {}", part.display()))?;
            let mut out = PartFile { file: f, path: part };
            self.http(url, 0, &mut out)
                .with_context(|| format!("downloading {url}"))?;
        }
        Ok(())
    }

    /// One HTTP GET from byte `offset`, appended to `out`; retried on transport
    /// errors and 5xx. Returns whether the server honoured the range.
    fn http(&self, url: &str, offset: u64, out: &mut dyn Write) -> Result<bool> {
        let mut last = None;
        for attempt in 0..self.retries {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(250 << attempt));
            }
            let mut req = self.agent.get(url);
            if offset > 0 {
                req = req.set("Range", &format!("bytes={offset}-"));
            }
            match req.call() {
                Ok(resp) => {
                    let partial = resp.status() == 206;
                    if offset > 0 && !partial {
                        return Ok(false);
                    }
                    let mut reader = resp.into_reader();
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        let n = reader.read(&mut buf).context("reading the response body")?;
                        if n == 0 {
                            break;
                        }
                        out.write_all(&buf[..n]).context("writing the download")?;
                    }
                    return Ok(offset == 0 || partial);
                }
                Err(ureq::Error::Status(416, _)) if offset > 0 => return Ok(true),
                Err(ureq::Error::Status(code, _)) if code < 500 => bail!("HTTP {code}"),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(anyhow::Error::new(e).context(format!("{} attempts failed", self.retries))),
            None => bail!("no attempt made"),
        }
    }
}

/// A download's `.part` file: a failed write says which file, and is told
/// apart from the network's failures (see [`part_write_failed`]).
struct PartFile<'a> {
    file: std::fs::File,
    path: &'a Path,
}

/// Why writing a `.part` failed, named with it: such a part is not resumed.
#[derive(Debug, thiserror::Error)]
#[error("writing {path}")]
struct PartWriteError {
    path: String,
    #[source]
    source: std::io::Error,
}

impl Write for PartFile<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf).map_err(|e| self.failed(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush().map_err(|e| self.failed(e))
    }
}

impl PartFile<'_> {
    fn failed(&self, e: std::io::Error) -> std::io::Error {
        let kind = e.kind();
        std::io::Error::new(
            kind,
            PartWriteError {
                path: self.path.display().to_string(),
                source: e,
            },
        )
    }
}

/// Whether a download failed writing its `.part` (no space, a failing disk)
/// rather than in the network: then the part is not worth keeping.
fn part_write_failed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<PartWriteError>())
    })
}

/// The most [`Fetcher::get`] reads: repository metadata, compressed (Fedora's
/// largest, filelists, is tens of MiB).
pub const GET_CAP: u64 = 1 << 30;

/// A buffer that refuses to grow past [`GET_CAP`].
struct Capped(Vec<u8>);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() as u64 + buf.len() as u64 > GET_CAP {
            return Err(std::io::Error::other(format!(
                "the response is larger than {} MiB",
                GET_CAP >> 20
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `dest` with `.part` appended.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// The local path of a `file://` URL, `None` for http(s), an error for other schemes.
pub fn file_url_path(url: &str) -> Result<Option<PathBuf>> {
    if let Some(p) = url.strip_prefix("file://") {
        if !p.starts_with('/') {
            bail!("{url}: file URLs must be absolute (file:///path)");
        }
        return Ok(Some(PathBuf::from(percent_decode(p))));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(None);
    }
    bail!("{url}: unsupported URL scheme (allowed: file://, http://, https://)")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_validate() {
        assert!(Checksum::new("sha256", &"a".repeat(64)).is_ok());
        assert!(
            Checksum::new("sha256", "abc")
                .unwrap_err()
                .to_string()
                .contains("64 hex digits")
        );
        assert!(
            Checksum::new("md5", "abc")
                .unwrap_err()
                .to_string()
                .contains("allowed: sha256, sha512")
        );
    }

    #[test]
    fn url_schemes() {
        assert_eq!(file_url_path("file:///a%20b/c").unwrap(), Some(PathBuf::from("/a b/c")));
        assert_eq!(file_url_path("https://x/y").unwrap(), None);
        assert!(
            file_url_path("ftp://x")
                .unwrap_err()
                .to_string()
                .contains("unsupported URL scheme")
        );
        assert!(file_url_path("file://relative").is_err());
    }
}
