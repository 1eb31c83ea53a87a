//! Verifying a bundle in one pass over the file: the signed manifest first,
//! then every member's size and SHA-256 while it streams past (the delta is
//! never held in memory), then the target commit and its signature.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use anyhow::{Result, anyhow, bail};
use ed25519_dalek::VerifyingKey;

use super::{
    BOARD, Board, COMMIT, COMMITMETA, DELTA, Decoder, HashWriter, MANIFEST, MANIFEST_SIG, MAX_MANIFEST, MEMBERS,
    Manifest, is_checksum, judge_commit, judge_manifest, memory_limit,
};
use crate::decompress::Format;
use crate::sign::Trust;

/// Largest zstd window accepted (2^24 = 16 MiB): the decoder allocates the
/// window the frame asks for, and arbor's writer uses 8 MiB at most.
const MAX_WINDOW_LOG: u32 = 24;

/// Characters of an untrusted name shown in a message.
const SHOWN_NAME: usize = 64;

/// A bundle that passed [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed manifest.
    pub manifest: Manifest,
    /// What the bundle updates.
    pub board: Board,
    /// The trusted key that signed the manifest.
    pub manifest_key: VerifyingKey,
    /// The trusted key that signed the target commit.
    pub commit_key: VerifyingKey,
}

/// Verifies the bundle read from `input`, writing the delta member's bytes to
/// `delta` as they pass (a sink, or a file to apply once this returns Ok).
/// Every refusal is an error naming the member and the cause.
pub fn verify<R: Read>(mut input: R, trust: &Trust, decoder: &dyn Decoder, delta: &mut dyn Write) -> Result<Verified> {
    let mut magic = [0u8; 4];
    input
        .read_exact(&mut magic)
        .map_err(|e| anyhow!("the bundle is not a zstd stream (too short: {e})"))?;
    if magic[..] != *Format::Zstd.magic() {
        bail!("the bundle is not a zstd stream (no zstd magic number): not an arbor bundle");
    }
    let input = io::Cursor::new(magic).chain(input);
    let mut dec = zstd::Decoder::new(input).map_err(|e| anyhow!("the bundle is not a zstd stream: {e}"))?;
    // A frame may ask for a window of up to 2 GiB; arbor writes 8 MiB ones.
    dec.window_log_max(MAX_WINDOW_LOG)
        .map_err(|e| anyhow!("setting up the zstd decoder: {e}"))?;
    let mut archive = tar::Archive::new(dec);
    let mut st = State::default();
    {
        // Raw: the tar crate would otherwise read GNU long-name and pax
        // extension members whole, whatever size they claim, before any
        // check; arbor never writes them, so each is refused by its header.
        let entries = archive
            .entries()
            .map_err(|e| anyhow!("the bundle is not a tar archive: {e}"))?
            .raw(true);
        for entry in entries {
            let entry = entry.map_err(|e| damaged(&st.after(), &e))?;
            st.member(entry, trust, delta)?;
        }
    }
    let Some((manifest, manifest_key)) = st.manifest.take() else {
        bail!("the bundle holds no {MANIFEST} and {MANIFEST_SIG} (truncated, or not an arbor bundle)");
    };
    for name in MEMBERS {
        if !st.seen.contains_key(name) {
            bail!("member {name} is missing (the bundle is truncated, or was built wrong)");
        }
    }
    check_trailer(archive.into_inner())?;

    let board_bytes = st.take(BOARD);
    let board: Board = serde_json::from_slice(&board_bytes).map_err(|e| anyhow!("member {BOARD} is not valid: {e}"))?;
    if !is_checksum(&board.to) || board.from.as_deref().is_some_and(|f| !is_checksum(f)) {
        bail!("member {BOARD}: from and to must be full commit checksums");
    }
    let commit = st.take(COMMIT);
    let commitmeta = st.take(COMMITMETA);
    let verified = judge_commit(&board, &commit, &commitmeta, trust, decoder)
        .map_err(|reasons| anyhow!("{}", reasons.join("; ")))?;
    Ok(Verified {
        manifest,
        board,
        manifest_key,
        commit_key: verified.key,
    })
}

#[derive(Default)]
struct State {
    /// The manifest bytes, until its signature is read.
    manifest_bytes: Option<Vec<u8>>,
    /// The verified manifest and its key.
    manifest: Option<(Manifest, VerifyingKey)>,
    /// Members read so far, with the bytes of those held in memory.
    seen: BTreeMap<String, Vec<u8>>,
    /// The last member read, for messages about what follows it.
    last: Option<String>,
    /// Members read, manifest and signature included.
    count: usize,
}

impl State {
    fn after(&self) -> String {
        match &self.last {
            Some(l) => format!("after member {l}"),
            None => "in its first member".to_string(),
        }
    }

    fn take(&mut self, name: &str) -> Vec<u8> {
        self.seen.remove(name).unwrap_or_default()
    }

    fn member<R: Read>(&mut self, mut entry: tar::Entry<'_, R>, trust: &Trust, delta: &mut dyn Write) -> Result<()> {
        let name = checked_name(&entry)?;
        let size = entry.size();
        let position = self.count;
        self.count += 1;
        self.last = Some(name.clone());
        match (position, name.as_str()) {
            (0, MANIFEST) => {
                if size > MAX_MANIFEST {
                    bail!("member {MANIFEST} is {size} bytes; refusing more than {MAX_MANIFEST}");
                }
                self.manifest_bytes = Some(read_small(&mut entry, &name, size)?);
                return Ok(());
            }
            (0, _) => bail!(
                "the first member is {}, not {MANIFEST} (not an arbor bundle)",
                shown(&name)
            ),
            (1, MANIFEST_SIG) => {
                if size != 64 {
                    bail!("member {MANIFEST_SIG} is {size} bytes, not an ed25519 signature (64 bytes)");
                }
                let sig = read_small(&mut entry, &name, size)?;
                let bytes = self.manifest_bytes.take().unwrap_or_default();
                let key = judge_manifest(&bytes, &sig, trust).map_err(|e| anyhow!("{e}"))?;
                let manifest = Manifest::parse(&bytes).map_err(|e| anyhow!("{e}"))?;
                self.manifest = Some((manifest, key));
                return Ok(());
            }
            (1, _) => bail!("the second member is {}, not {MANIFEST_SIG}", shown(&name)),
            _ => {}
        }
        let Some((manifest, _)) = &self.manifest else {
            bail!("member {} comes before a verified manifest", shown(&name));
        };
        if name == MANIFEST || name == MANIFEST_SIG || self.seen.contains_key(&name) {
            bail!("member {} appears twice in the bundle", shown(&name));
        }
        let Some(want) = manifest.get(&name).cloned() else {
            bail!("unknown member {}: the signed manifest does not list it", shown(&name));
        };
        if size != want.size {
            bail!(
                "member {name} is {size} bytes in the archive but {} in the signed manifest",
                want.size
            );
        }
        let mut hash = HashWriter::default();
        let kept = if name == DELTA {
            copy_member(&mut entry, &name, &mut Tee(&mut hash, delta))?;
            Vec::new()
        } else {
            let limit = memory_limit(&name).unwrap_or(0);
            if size > limit {
                bail!("member {name} is {size} bytes; refusing more than {limit}");
            }
            let bytes = read_small(&mut entry, &name, size)?;
            hash.write_all(&bytes)?;
            bytes
        };
        if hash.len() != want.size {
            bail!(
                "the bundle is truncated: member {name} ends after {} of its {} bytes",
                hash.len(),
                want.size
            );
        }
        let got = hash.finish();
        if got != want.sha256 {
            bail!(
                "member {name} does not match the signed manifest: its sha256 is {got}, the manifest says {}",
                want.sha256
            );
        }
        self.seen.insert(name, kept);
        Ok(())
    }
}

/// `name` quoted for a message, cut after [`SHOWN_NAME`] characters.
fn quoted(name: &str) -> String {
    let mut chars = name.chars();
    let head: String = chars.by_ref().take(SHOWN_NAME).collect();
    if chars.next().is_some() {
        format!("{head:?}… ({} bytes)", name.len())
    } else {
        format!("{head:?}")
    }
}

/// `name` for a message: as it is when short and printable, else [`quoted`].
fn shown(name: &str) -> String {
    if name.chars().count() <= SHOWN_NAME && !name.chars().any(char::is_control) {
        name.to_string()
    } else {
        quoted(name)
    }
}

/// The entry's name, refusing anything but a regular file with a plain name.
/// Entries come raw, so the name is the header's own (at most 100 bytes).
fn checked_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String> {
    let raw = entry.path_bytes();
    let name = String::from_utf8_lossy(&raw).into_owned();
    let kind = entry.header().entry_type();
    if kind != tar::EntryType::Regular {
        let what = match kind {
            tar::EntryType::Symlink => "a symbolic link".to_string(),
            tar::EntryType::Link => "a hard link".to_string(),
            tar::EntryType::Directory => "a directory".to_string(),
            tar::EntryType::GNULongName | tar::EntryType::GNULongLink => format!(
                "a GNU long-name extension header claiming {} bytes",
                entry.header().entry_size().unwrap_or(0)
            ),
            tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => format!(
                "a pax extension header claiming {} bytes",
                entry.header().entry_size().unwrap_or(0)
            ),
            other => format!("of tar type {:?}", other.as_byte() as char),
        };
        bail!("member {} is {what}; a bundle holds only regular files", quoted(&name));
    }
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !raw.contains(&b'/')
        && !raw.contains(&b'\\')
        && !raw.contains(&0)
        && std::str::from_utf8(&raw).is_ok();
    if !plain {
        bail!(
            "member {} is not a plain file name (absolute, `..` or a directory part): refusing a path trick",
            quoted(&name)
        );
    }
    Ok(name)
}

fn read_small<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str, size: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry
        .read_to_end(&mut buf)
        .map_err(|e| damaged(&format!("in member {name}"), &e))?;
    if (buf.len() as u64) < size {
        bail!(
            "the bundle is truncated: member {name} ends after {} of its {size} bytes",
            buf.len()
        );
    }
    Ok(buf)
}

fn copy_member<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str, out: &mut dyn Write) -> Result<u64> {
    io::copy(entry, out).map_err(|e| damaged(&format!("in member {name}"), &e))
}

/// After tar's first end-of-archive block, only zeros may follow (the second
/// block, and padding), then the end of the zstd frame with its checksum.
fn check_trailer<R: Read>(rest: R) -> Result<()> {
    let mut zeros = 0u64;
    let mut buf = [0u8; 8192];
    let mut r = rest.take(1 << 20);
    loop {
        let n = r.read(&mut buf).map_err(|e| damaged("at its end", &e))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            bail!("the bundle has data after its last member (appended or damaged)");
        }
        zeros += n as u64;
    }
    if zeros == 1 << 20 {
        bail!("the bundle has more than 1 MiB of padding after its last member");
    }
    if zeros < 512 {
        bail!("the bundle is truncated: the tar archive has no end marker");
    }
    Ok(())
}

fn damaged(place: &str, e: &io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        anyhow!("the bundle is truncated ({place}): {e}")
    } else {
        anyhow!("the bundle is damaged or truncated ({place}): {e}")
    }
}

/// Writes to two writers.
struct Tee<'a>(&'a mut HashWriter, &'a mut dyn Write);

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.1.write_all(buf)?;
        self.0.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.1.flush()
    }
}
