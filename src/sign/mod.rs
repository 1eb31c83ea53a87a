//! ed25519 commit signatures in ostree's format, as pure logic: key files,
//! and the judgement of what a commit's detached metadata and metadata hold.
//! Reading and writing the repository is `crate::ostree::sign`.
//!
//! Format (libostree's `ed25519` signer): detached commit metadata key
//! [`METADATA_KEY`], type `aay`, each entry a 64-byte ed25519 signature over
//! the serialized commit object.

pub mod keys;

use std::path::Path;

use anyhow::Result;
use ed25519_dalek::{Signature, VerifyingKey};

use crate::arch::Arch;

/// The detached metadata key ostree's ed25519 signer uses.
pub const METADATA_KEY: &str = "ostree.sign.ed25519";
/// Its GVariant type: a list of byte strings.
pub const METADATA_TYPE: &str = "aay";
/// Bytes in one ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Commit metadata key (`as`) listing the refs a commit may be published under.
pub const REF_BINDING_KEY: &str = "ostree.ref-binding";
/// Commit metadata key (`s`) arbor's compose writes: the tree's arch.
pub const ARCH_KEY: &str = "arbor.arch";
/// Commit metadata key (`as`) arbor's compose writes: the boards the tree runs on.
pub const BOARDS_KEY: &str = "arbor.boards";

/// Which keys a verifier accepts.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Any one of these suffices.
    pub trusted: Vec<VerifyingKey>,
    /// These never count, even when also listed as trusted.
    pub revoked: Vec<VerifyingKey>,
}

impl Trust {
    /// Loads trusted keys from a file or directory, and revoked ones likewise.
    /// No trusted key at all is an error: nothing could ever verify.
    pub fn load(trusted: &Path, revoked: Option<&Path>) -> Result<Trust> {
        let t = keys::read_public_keys(trusted)?;
        if t.is_empty() {
            anyhow::bail!("{} holds no public keys; nothing could verify", trusted.display());
        }
        let r = match revoked {
            Some(p) => keys::read_public_keys(p)?,
            None => Vec::new(),
        };
        Ok(Trust { trusted: t, revoked: r })
    }

    fn is_revoked(&self, key: &VerifyingKey) -> bool {
        self.revoked.contains(key)
    }
}

/// What a commit must be bound to, beyond a good signature.
#[derive(Debug, Clone, Default)]
pub struct Binding {
    /// The commit's `arbor.arch` must be this arch.
    pub arch: Option<Arch>,
    /// The commit's `arbor.boards` must contain this board.
    pub board: Option<String>,
    /// The commit's `ostree.ref-binding` must contain this ref when the commit
    /// has that key; without it, the commit must have been reached through this
    /// ref (named directly, or given by checksum while the ref points to it).
    pub ref_name: Option<String>,
}

/// The `ostree.sign.ed25519` entry of a commit's detached metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signatures {
    /// No detached metadata, or no such key in it.
    Missing,
    /// Present but unusable (wrong type, not a valid GVariant, key twice): why.
    Malformed(String),
    /// The byte strings of the `aay`, unchecked.
    Entries(Vec<Vec<u8>>),
}

/// One commit metadata value, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field<T> {
    /// The key is absent.
    Missing,
    /// The key holds another type (its type string).
    WrongType(String),
    /// The value.
    Value(T),
}

/// What binding checks need from a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitFacts {
    /// `arbor.arch` (`s`).
    pub arch: Field<String>,
    /// `arbor.boards` (`as`).
    pub boards: Field<Vec<String>>,
    /// `ostree.ref-binding` (`as`).
    pub ref_binding: Field<Vec<String>>,
    /// The ref the commit was reached through, if any.
    pub reached_through: Option<String>,
}

/// The outcome of verifying one commit, also `arbor verify --json`'s output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// The commit checksum.
    pub commit: String,
    /// Whether a trusted, non-revoked key signed it and every binding holds.
    pub valid: bool,
    /// The key (base64) whose signature verified, if one did.
    pub key: Option<String>,
    /// Why it is not valid; empty when it is.
    pub reasons: Vec<String>,
}

/// Checks `signatures` over `data` (the serialized commit object). Returns
/// the trusted key that made one of them, or why none counts. Any malformed
/// entry refuses the whole set, as libostree does.
pub fn judge_signatures(data: &[u8], signatures: &Signatures, trust: &Trust) -> Result<VerifyingKey, String> {
    let entries = match signatures {
        Signatures::Missing => return Err(format!("not signed: its detached metadata has no {METADATA_KEY}")),
        Signatures::Malformed(why) => return Err(why.clone()),
        Signatures::Entries(e) => e,
    };
    if entries.is_empty() {
        return Err(format!("not signed: {METADATA_KEY} is an empty list"));
    }
    let mut sigs = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let Ok(raw) = <[u8; SIGNATURE_LEN]>::try_from(e.as_slice()) else {
            return Err(format!(
                "{METADATA_KEY} entry {} is {} bytes, not an ed25519 signature ({SIGNATURE_LEN} bytes); refusing the commit",
                i + 1,
                e.len()
            ));
        };
        sigs.push(Signature::from_bytes(&raw));
    }
    let mut revoked_signers = Vec::new();
    for sig in &sigs {
        for key in trust.trusted.iter().chain(&trust.revoked) {
            if key.verify_strict(data, sig).is_err() {
                continue;
            }
            if trust.is_revoked(key) {
                revoked_signers.push(keys::encode_public(key));
            } else {
                return Ok(*key);
            }
        }
    }
    revoked_signers.sort();
    revoked_signers.dedup();
    let n = sigs.len();
    let plural = if n == 1 { "signature" } else { "signatures" };
    if revoked_signers.is_empty() {
        Err(format!(
            "none of its {n} {plural} verifies with any of the {} trusted keys (signed by another key, or the commit was altered)",
            trust.trusted.len()
        ))
    } else {
        Err(format!(
            "none of its {n} {plural} is by a trusted key that is not revoked (revoked key(s) {} signed it)",
            revoked_signers.join(", ")
        ))
    }
}

/// Checks `facts` against `binding`; returns one reason per failed check.
pub fn judge_binding(facts: &CommitFacts, binding: &Binding) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(arch) = binding.arch {
        let want = arch.rpm_name();
        match &facts.arch {
            Field::Value(a) if a == want => {}
            Field::Value(a) => reasons.push(format!("built for arch {a}, not {want} ({ARCH_KEY})")),
            Field::Missing => reasons.push(format!("has no {ARCH_KEY}, so it is not bound to arch {want}")),
            Field::WrongType(t) => reasons.push(format!("its {ARCH_KEY} has type {t}, not s")),
        }
    }
    if let Some(board) = &binding.board {
        match &facts.boards {
            Field::Value(b) if b.contains(board) => {}
            Field::Value(b) => reasons.push(format!(
                "not built for board {board}: {BOARDS_KEY} is [{}]",
                b.join(", ")
            )),
            Field::Missing => reasons.push(format!("has no {BOARDS_KEY}, so it is not bound to board {board}")),
            Field::WrongType(t) => reasons.push(format!("its {BOARDS_KEY} has type {t}, not as")),
        }
    }
    if let Some(r) = &binding.ref_name {
        match (&facts.ref_binding, &facts.reached_through) {
            (Field::Value(refs), _) if refs.contains(r) => {}
            (Field::Value(refs), _) => reasons.push(format!(
                "not bound to ref {r}: {REF_BINDING_KEY} is [{}]",
                refs.join(", ")
            )),
            (Field::WrongType(t), _) => reasons.push(format!("its {REF_BINDING_KEY} has type {t}, not as")),
            (Field::Missing, Some(through)) if through == r => {}
            (Field::Missing, Some(through)) => reasons.push(format!(
                "has no {REF_BINDING_KEY} and was reached through ref {through}, not {r}"
            )),
            (Field::Missing, None) => {
                reasons.push(format!("has no {REF_BINDING_KEY} and ref {r} does not point to it"))
            }
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer as _, SigningKey};

    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn sig(k: &SigningKey, data: &[u8]) -> Vec<u8> {
        k.sign(data).to_bytes().to_vec()
    }

    #[test]
    fn signature_judgements() {
        let data = b"commit bytes";
        let (good, other, bad) = (key(1), key(2), key(3));
        let trust = Trust {
            trusted: vec![good.verifying_key(), bad.verifying_key()],
            revoked: vec![bad.verifying_key()],
        };
        let ok = |s: Signatures| judge_signatures(data, &s, &trust);
        let entries = |v: Vec<Vec<u8>>| Signatures::Entries(v);
        assert_eq!(ok(entries(vec![sig(&good, data)])), Ok(good.verifying_key()));
        assert_eq!(
            ok(entries(vec![sig(&other, data), sig(&good, data)])),
            Ok(good.verifying_key()),
            "any one trusted signature suffices"
        );
        let table: Vec<(Signatures, &str)> = vec![
            (Signatures::Missing, "not signed"),
            (Signatures::Malformed("type s".into()), "type s"),
            (entries(vec![]), "empty list"),
            (entries(vec![sig(&other, data)]), "none of its 1 signature verifies"),
            (
                entries(vec![sig(&good, b"other bytes")]),
                "none of its 1 signature verifies",
            ),
            (entries(vec![sig(&bad, data)]), "revoked"),
            (entries(vec![sig(&good, data)[..63].to_vec()]), "63 bytes"),
            (entries(vec![sig(&good, data), vec![0; 65]]), "entry 2 is 65 bytes"),
            (entries(vec![vec![0; 64]]), "none of its 1 signature verifies"),
        ];
        for (s, want) in table {
            let err = ok(s.clone()).unwrap_err();
            assert!(err.contains(want), "{s:?}: {err}");
        }
    }

    #[test]
    fn binding_judgements() {
        let facts = CommitFacts {
            arch: Field::Value("aarch64".into()),
            boards: Field::Value(vec!["rpi4".into(), "rpi3".into()]),
            ref_binding: Field::Missing,
            reached_through: Some("os/stable".into()),
        };
        let b = |arch: Option<Arch>, board: Option<&str>, r: Option<&str>| Binding {
            arch,
            board: board.map(String::from),
            ref_name: r.map(String::from),
        };
        assert!(judge_binding(&facts, &b(Some(Arch::Aarch64), Some("rpi3"), Some("os/stable"))).is_empty());
        assert!(judge_binding(&facts, &b(None, None, None)).is_empty());
        let table: Vec<(CommitFacts, Binding, &str)> = vec![
            (
                facts.clone(),
                b(Some(Arch::X86_64), None, None),
                "arch aarch64, not x86_64",
            ),
            (facts.clone(), b(None, Some("bbb"), None), "not built for board bbb"),
            (
                facts.clone(),
                b(None, None, Some("os/dev")),
                "reached through ref os/stable, not os/dev",
            ),
            (
                CommitFacts {
                    reached_through: None,
                    ..facts.clone()
                },
                b(None, None, Some("os/stable")),
                "does not point to it",
            ),
            (
                CommitFacts {
                    ref_binding: Field::Value(vec!["os/dev".into()]),
                    ..facts.clone()
                },
                b(None, None, Some("os/stable")),
                "ostree.ref-binding is [os/dev]",
            ),
            (
                CommitFacts {
                    arch: Field::Missing,
                    ..facts.clone()
                },
                b(Some(Arch::Aarch64), None, None),
                "has no arbor.arch",
            ),
            (
                CommitFacts {
                    boards: Field::WrongType("s".into()),
                    ..facts.clone()
                },
                b(None, Some("rpi4"), None),
                "type s",
            ),
        ];
        for (f, binding, want) in table {
            let reasons = judge_binding(&f, &binding);
            assert!(
                reasons.len() == 1 && reasons[0].contains(want),
                "{binding:?}: {reasons:?}"
            );
        }
        // A ref binding, when present, decides alone.
        let bound = CommitFacts {
            ref_binding: Field::Value(vec!["os/dev".into(), "os/stable".into()]),
            reached_through: None,
            ..facts
        };
        assert!(judge_binding(&bound, &b(None, None, Some("os/dev"))).is_empty());
    }
}
