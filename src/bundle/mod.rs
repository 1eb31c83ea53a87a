//! Offline update bundles, as pure logic: one zstd-compressed tar file that
//! carries a self-contained static delta from one commit to another, the
//! target commit object with its detached metadata (and so its signatures),
//! what the update is for (`board.json`), and a manifest of every member's
//! size and SHA-256 signed by the bundle key. Generating the delta and reading
//! commits from a repository is `crate::ostree::bundle`.
//!
//! Layout, in this order: `manifest.json`, `manifest.sig` (64 raw bytes,
//! ed25519 over the exact manifest bytes), then [`MEMBERS`]. The manifest
//! comes first so a verifier refuses a badly signed bundle before it reads
//! gigabytes of delta, and checks every later member while streaming it.

pub mod read;
pub mod write;

use std::io::{self, Read};

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::sign::{Signatures, Trust, judge_signatures};

/// The manifest member's name.
pub const MANIFEST: &str = "manifest.json";
/// The manifest signature member's name.
pub const MANIFEST_SIG: &str = "manifest.sig";
/// The self-contained static delta file (libostree's `--filename` format).
pub const DELTA: &str = "delta";
/// The target commit object, byte for byte as stored.
pub const COMMIT: &str = "commit";
/// The target commit's detached metadata (`a{sv}`), holding its signatures.
pub const COMMITMETA: &str = "commitmeta";
/// What the update is for: [`Board`] as JSON.
pub const BOARD: &str = "board.json";
/// The members the manifest lists, in archive order (the delta last: it is
/// the big one, and the small ones are then checked before it is read).
pub const MEMBERS: [&str; 4] = [BOARD, COMMIT, COMMITMETA, DELTA];
/// The manifest's `format` value.
pub const FORMAT: &str = "arbor-bundle/1";

/// Largest `manifest.json` a verifier reads into memory.
pub const MAX_MANIFEST: u64 = 1 << 20;

/// Largest size a verifier accepts for a member it holds in memory (all but
/// the delta, which is streamed); commits and their metadata are kilobytes.
pub fn memory_limit(name: &str) -> Option<u64> {
    match name {
        BOARD => Some(1 << 20),
        COMMIT | COMMITMETA => Some(16 << 20),
        _ => None,
    }
}

/// `manifest.json`: every member but the manifest and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// One entry per member of [`MEMBERS`], in archive order.
    pub members: Vec<Member>,
}

/// One manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The member's name in the archive.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of its bytes.
    pub sha256: String,
}

/// `board.json`: what the bundle updates, taken from the target commit's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// The commit's `arbor.arch`.
    pub arch: String,
    /// The commit's `arbor.boards`.
    pub boards: Vec<String>,
    /// The ref the target commit is published on, if known.
    #[serde(rename = "ref")]
    pub ref_name: Option<String>,
    /// The target commit's `version`, if it has one.
    pub version: Option<String>,
    /// The commit a device must have (`None`: a from-scratch delta).
    pub from: Option<String>,
    /// The commit the bundle updates to.
    pub to: String,
}

/// What a commit's metadata says, decoded by the ostree layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitView {
    /// `arbor.arch`, when it is a string.
    pub arch: Option<String>,
    /// `arbor.boards`, when it is a string list.
    pub boards: Option<Vec<String>>,
    /// `version`, when it is a string.
    pub version: Option<String>,
    /// `ostree.ref-binding`, empty when absent.
    pub ref_binding: Vec<String>,
}

/// Decodes GVariant bytes from the bundle; implemented in `crate::ostree::bundle`
/// so glib stays there.
pub trait Decoder {
    /// The metadata of a commit object; an error when the bytes are not a
    /// valid commit.
    fn commit(&self, commit: &[u8]) -> Result<CommitView, String>;
    /// The `ostree.sign.ed25519` entries of detached metadata bytes.
    fn signatures(&self, detached: &[u8]) -> Signatures;
}

impl Manifest {
    /// The manifest for `members`, which must be [`MEMBERS`] in order.
    pub fn new(members: Vec<Member>) -> Manifest {
        Manifest {
            format: FORMAT.to_string(),
            members,
        }
    }

    /// The exact bytes written to the archive and signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses manifest bytes and checks they list exactly [`MEMBERS`], in
    /// order, each with a well-formed digest.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("{MANIFEST} is not valid: {e}"))?;
        if m.format != FORMAT {
            return Err(format!(
                "{MANIFEST} has format {:?}; this arbor reads {FORMAT:?}",
                m.format
            ));
        }
        let names: Vec<&str> = m.members.iter().map(|e| e.name.as_str()).collect();
        if names != MEMBERS {
            return Err(format!(
                "{MANIFEST} lists members [{}]; a bundle holds exactly [{}]",
                names.join(", "),
                MEMBERS.join(", ")
            ));
        }
        for e in &m.members {
            if e.sha256.len() != 64
                || !e
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(format!(
                    "{MANIFEST}: the sha256 of {} is not 64 lowercase hex digits",
                    e.name
                ));
            }
        }
        Ok(m)
    }

    /// The entry for member `name`.
    pub fn get(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|e| e.name == name)
    }
}

/// The bundle key's signature over the manifest bytes.
pub fn sign_manifest(bytes: &[u8], key: &SigningKey) -> [u8; 64] {
    key.sign(bytes).to_bytes()
}

/// The trusted, non-revoked key whose signature `sig` is over `manifest`, or why there is none.
pub fn judge_manifest(manifest: &[u8], sig: &[u8], trust: &Trust) -> Result<VerifyingKey, String> {
    if sig.len() != Signature::BYTE_SIZE {
        return Err(format!(
            "{MANIFEST_SIG} is {} bytes, not an ed25519 signature ({} bytes)",
            sig.len(),
            Signature::BYTE_SIZE
        ));
    }
    judge_signatures(manifest, &Signatures::Entries(vec![sig.to_vec()]), trust)
        .map_err(|why| format!("{MANIFEST_SIG} does not verify: {why}"))
}

/// Checks the commit member against `board` and `trust`: its bytes hash to
/// `board.to` (an OSTree commit checksum is the SHA-256 of the object), a
/// trusted key signed it, and its metadata agrees with `board.json`. Returns
/// the commit's signing key, or every reason it is refused.
pub fn judge_commit(
    board: &Board,
    commit: &[u8],
    commitmeta: &[u8],
    trust: &Trust,
    decoder: &dyn Decoder,
) -> Result<VerifiedCommit, Vec<String>> {
    let mut reasons = Vec::new();
    let actual = hex::encode(Sha256::digest(commit));
    if actual != board.to {
        reasons.push(format!(
            "member {COMMIT} hashes to {actual}, not to the target commit {} named in {BOARD}",
            board.to
        ));
    }
    let key = match judge_signatures(commit, &decoder.signatures(commitmeta), trust) {
        Ok(k) => Some(k),
        Err(why) => {
            reasons.push(format!("target commit (members {COMMIT}, {COMMITMETA}): {why}"));
            None
        }
    };
    let view = match decoder.commit(commit) {
        Ok(v) => Some(v),
        Err(why) => {
            reasons.push(format!("member {COMMIT}: {why}"));
            None
        }
    };
    if let Some(v) = &view {
        if v.arch.as_deref() != Some(board.arch.as_str()) {
            reasons.push(format!(
                "{BOARD} says arch {} but the commit's arbor.arch is {}",
                board.arch,
                v.arch.as_deref().unwrap_or("missing")
            ));
        }
        if v.boards.as_ref() != Some(&board.boards) {
            reasons.push(format!(
                "{BOARD} says boards [{}] but the commit's arbor.boards is {}",
                board.boards.join(", "),
                v.boards
                    .as_ref()
                    .map(|b| format!("[{}]", b.join(", ")))
                    .unwrap_or("missing".into())
            ));
        }
        if v.version != board.version {
            reasons.push(format!(
                "{BOARD} says version {} but the commit's version is {}",
                board.version.as_deref().unwrap_or("none"),
                v.version.as_deref().unwrap_or("none")
            ));
        }
        if let Some(r) = board
            .ref_name
            .as_ref()
            .filter(|r| !v.ref_binding.is_empty() && !v.ref_binding.contains(*r))
        {
            reasons.push(format!(
                "{BOARD} says ref {r} but the commit is bound to [{}]",
                v.ref_binding.join(", ")
            ));
        }
    }
    match key {
        Some(key) if reasons.is_empty() => Ok(VerifiedCommit { key }),
        _ => Err(reasons),
    }
}

/// A target commit that passed [`judge_commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCommit {
    /// The trusted key whose signature over the commit verified.
    pub key: VerifyingKey,
}

/// `arbor bundle verify --json`'s output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Whether the bundle passed every check.
    pub valid: bool,
    /// What it would apply, when it passed.
    pub board: Option<Board>,
    /// The trusted key (base64) that signed the manifest.
    pub manifest_key: Option<String>,
    /// The trusted key (base64) that signed the target commit.
    pub commit_key: Option<String>,
    /// Why it is refused; empty when it is valid.
    pub reasons: Vec<String>,
}

impl Report {
    /// The report of a bundle that passed.
    pub fn valid(v: &read::Verified) -> Report {
        Report {
            valid: true,
            board: Some(v.board.clone()),
            manifest_key: Some(crate::sign::keys::encode_public(&v.manifest_key)),
            commit_key: Some(crate::sign::keys::encode_public(&v.commit_key)),
            reasons: Vec::new(),
        }
    }

    /// The report of a refused bundle.
    pub fn refused(reason: String) -> Report {
        Report {
            valid: false,
            board: None,
            manifest_key: None,
            commit_key: None,
            reasons: vec![reason],
        }
    }
}

/// One line per fact a person checks before applying: from → to, version, arch, boards.
pub fn describe(b: &Board) -> String {
    format!(
        "update {} → {}\n  ref:     {}\n  version: {}\n  arch:    {}\n  boards:  {}",
        b.from.as_deref().unwrap_or("(scratch: any or no tree)"),
        b.to,
        b.ref_name.as_deref().unwrap_or("(none)"),
        b.version.as_deref().unwrap_or("(none)"),
        b.arch,
        b.boards.join(", ")
    )
}

/// Whether `s` is a full lowercase hex SHA-256, as commit checksums are.
pub fn is_checksum(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The size and lowercase hex SHA-256 of everything `r` yields, streaming.
pub fn digest<R: Read>(mut r: R) -> io::Result<(u64, String)> {
    let mut w = HashWriter::default();
    let n = io::copy(&mut r, &mut w)?;
    Ok((n, w.finish()))
}

/// A writer that hashes and counts what passes through it.
#[derive(Default)]
pub struct HashWriter {
    hasher: Sha256,
    len: u64,
}

impl HashWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The lowercase hex SHA-256 of what was written.
    pub fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
