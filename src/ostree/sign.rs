//! Signing and verifying commits with ed25519 in ostree's format: the
//! signature covers the commit object's bytes as stored, and lives in the
//! commit's detached metadata under `ostree.sign.ed25519` (`aay`). Debian's
//! libostree has no ed25519 signer, so this is ours; an upstream `ostree`
//! built with libsodium verifies what it writes. Glib types stay in this file;
//! the judgements are in [`crate::sign`].

use std::path::Path;

use super::repo::Repo;
use ::ostree::{gio, glib};
use anyhow::{Context, Result, bail};
use ed25519_dalek::{Signer as _, SigningKey};
use glib::prelude::*;
use sha2::{Digest as _, Sha256};

use crate::sign::{
    ARCH_KEY, BOARDS_KEY, Binding, CommitFacts, Field, METADATA_KEY, METADATA_TYPE, REF_BINDING_KEY, Report,
    SIGNATURE_LEN, Signatures, Trust, judge_binding, judge_signatures, keys,
};

/// What [`sign_commit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The commit checksum.
    pub commit: String,
    /// The signing key's public half (base64).
    pub key: String,
    /// False when the commit already carried this exact signature.
    pub added: bool,
}

/// A commit that passed [`verify_commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The commit checksum.
    pub commit: String,
    /// The trusted key (base64) whose signature verified.
    pub key: String,
}

/// Signs `commit` (a checksum or ref) in `repo` with the key in
/// `secret_key_file`. The signature is appended to the commit's
/// `ostree.sign.ed25519`, unless that exact signature is already there; other
/// detached metadata is kept.
pub fn sign_commit(repo: &Repo, commit: &str, secret_key_file: &Path) -> Result<Signed> {
    let key = keys::read_secret_key(secret_key_file)?;
    sign_commit_with(repo, commit, &key)
}

/// [`sign_commit`] with a key already in memory.
pub fn sign_commit_with(repo: &Repo, commit: &str, key: &SigningKey) -> Result<Signed> {
    let csum = repo.resolve(commit)?.commit;
    let data = load_commit(repo, &csum)?.data_as_bytes();
    if let Err(why) = check_checksum(&data, &csum) {
        bail!("refusing to sign: {why}");
    }
    let signature = key.sign(&data).to_bytes().to_vec();
    let existing = read_detached(repo, &csum)
        .with_context(|| format!("refusing to sign commit {csum}: its detached metadata is unusable"))?;
    let mut entries = match &existing {
        Some(d) => match signature_entries(d) {
            Signatures::Missing => Vec::new(),
            Signatures::Malformed(why) => bail!("refusing to sign commit {csum}: {why}"),
            Signatures::Entries(e) => e,
        },
        None => Vec::new(),
    };
    if let Some((i, e)) = entries.iter().enumerate().find(|(_, e)| e.len() != SIGNATURE_LEN) {
        bail!(
            "refusing to sign commit {csum}: {METADATA_KEY} entry {} is {} bytes, not a signature; verifiers refuse the commit until it is removed",
            i + 1,
            e.len()
        );
    }
    let public = keys::encode_public(&key.verifying_key());
    // ed25519 signatures are deterministic: the same key over the same bytes gives the same entry.
    if entries.contains(&signature) {
        return Ok(Signed {
            commit: csum,
            key: public,
            added: false,
        });
    }
    entries.push(signature);
    write_signatures(repo, &csum, existing.as_ref(), &entries)?;
    Ok(Signed {
        commit: csum,
        key: public,
        added: true,
    })
}

/// Replaces the `ostree.sign.ed25519` entries of `commit` with exactly
/// `entries` (unchecked), keeping the other detached metadata: for dropping a
/// revoked key's signatures, copying signatures between repositories, and
/// tests of the verifier. An empty list leaves an empty `aay`.
pub fn replace_signatures(repo: &Repo, commit: &str, entries: &[Vec<u8>]) -> Result<()> {
    let csum = repo.resolve(commit)?.commit;
    let existing =
        read_detached(repo, &csum).with_context(|| format!("the detached metadata of commit {csum} is unusable"))?;
    write_signatures(repo, &csum, existing.as_ref(), entries)
}

/// Checks `commit` (a checksum or ref): one signature by a trusted,
/// non-revoked key over its bytes, its bytes matching its checksum, and every
/// binding in `binding`. Problems with the commit are reasons in the report;
/// only failing to open the repository or find the commit is an error.
pub fn check_commit(repo: &Repo, commit: &str, trust: &Trust, binding: &Binding) -> Result<Report> {
    let resolved = repo.resolve(commit)?;
    let (csum, mut reached_through) = (resolved.commit, resolved.refname);
    let variant = untrusted(&load_commit(repo, &csum)?);
    let data = variant.data_as_bytes();
    let mut reasons = Vec::new();
    if let Err(why) = check_checksum(&data, &csum) {
        reasons.push(why);
    }
    let signatures = match read_detached(repo, &csum) {
        Ok(Some(d)) => signature_entries(&d),
        Ok(None) => Signatures::Missing,
        Err(e) => Signatures::Malformed(format!("{e:#}")),
    };
    let key = match judge_signatures(&data, &signatures, trust) {
        Ok(k) => Some(keys::encode_public(&k)),
        Err(why) => {
            reasons.push(why);
            None
        }
    };
    // Given by checksum: the commit counts as reached through the asked-for
    // ref when that ref points to it now.
    if reached_through.is_none() {
        reached_through = binding
            .ref_name
            .as_ref()
            .filter(|r| repo.resolve_ref(r).ok().flatten().is_some_and(|c| c == csum))
            .cloned();
    }
    if !variant.is_normal_form() {
        reasons.push(format!(
            "commit object {csum} is not a valid GVariant (not in normal form)"
        ));
    }
    match commit_facts(&variant, reached_through) {
        Ok(facts) => reasons.extend(judge_binding(&facts, binding)),
        Err(why) => reasons.push(why),
    }
    Ok(Report {
        commit: csum,
        valid: reasons.is_empty(),
        key,
        reasons,
    })
}

/// [`check_commit`], as an error naming every reason when the commit does not pass.
pub fn verify_commit(repo: &Repo, commit: &str, trust: &Trust, binding: &Binding) -> Result<Verified> {
    let report = check_commit(repo, commit, trust, binding)?;
    match (report.valid, report.key) {
        (true, Some(key)) => Ok(Verified {
            commit: report.commit,
            key,
        }),
        _ => bail!("commit {} is refused: {}", report.commit, report.reasons.join("; ")),
    }
}

/// The commit object; its `data_as_bytes()` are the bytes exactly as stored,
/// what the signature covers.
fn load_commit(repo: &Repo, csum: &str) -> Result<glib::Variant> {
    repo.raw()
        .load_variant(::ostree::ObjectType::Commit, csum)
        .with_context(|| format!("loading commit {csum} from {}", repo.path().display()))
}

/// A commit's checksum is the SHA-256 of its bytes; a mismatch means the
/// object was altered after it was written.
fn check_checksum(data: &[u8], csum: &str) -> Result<(), String> {
    let actual = hex::encode(Sha256::digest(data));
    if actual == csum {
        Ok(())
    } else {
        Err(format!("commit object {csum} is corrupt: its bytes hash to {actual}"))
    }
}

/// The commit's detached metadata (`a{sv}`), refusing one that is not in
/// normal form: libostree loads it as trusted data without checking.
fn read_detached(repo: &Repo, csum: &str) -> Result<Option<glib::Variant>> {
    let Some(v) = repo
        .raw()
        .read_commit_detached_metadata(csum, gio::Cancellable::NONE)
        .with_context(|| format!("reading the detached metadata of commit {csum}"))?
    else {
        return Ok(None);
    };
    let v = untrusted(&v);
    if v.type_().as_str() != "a{sv}" || !v.is_normal_form() {
        bail!("the detached metadata of commit {csum} is not a valid GVariant a{{sv}} (damaged or forged file)");
    }
    Ok(Some(v))
}

/// `v`'s bytes as untrusted data. libostree loads objects as trusted, and
/// reading a damaged trusted variant through glib is undefined behaviour (a
/// zero-length string reads as length -1); untrusted data is checked on every
/// access, and a damaged part reads as a default value.
fn untrusted(v: &glib::Variant) -> glib::Variant {
    glib::Variant::from_bytes_with_type(&v.data_as_bytes(), v.type_())
}

/// The value under `key` in an `a{sv}`; a key present twice is an error,
/// since readers could disagree on which one counts.
pub(crate) fn lookup(dict: &glib::Variant, key: &str) -> Result<Option<glib::Variant>, String> {
    let mut found = None;
    for i in 0..dict.n_children() {
        let entry = dict.child_value(i);
        if entry.child_value(0).str() != Some(key) {
            continue;
        }
        if found.is_some() {
            return Err(format!("{key} appears twice"));
        }
        found = entry.child_value(1).as_variant();
    }
    Ok(found)
}

pub(crate) fn signature_entries(detached: &glib::Variant) -> Signatures {
    let v = match lookup(detached, METADATA_KEY) {
        Ok(Some(v)) => v,
        Ok(None) => return Signatures::Missing,
        Err(why) => return Signatures::Malformed(format!("detached metadata: {why}")),
    };
    if v.type_().as_str() != METADATA_TYPE {
        return Signatures::Malformed(format!(
            "{METADATA_KEY} has type {}, not {METADATA_TYPE}",
            v.type_().as_str()
        ));
    }
    let mut entries = Vec::with_capacity(v.n_children());
    for i in 0..v.n_children() {
        match v.child_value(i).fixed_array::<u8>() {
            Ok(b) => entries.push(b.to_vec()),
            Err(e) => return Signatures::Malformed(format!("{METADATA_KEY} entry {}: {e}", i + 1)),
        }
    }
    Signatures::Entries(entries)
}

/// The `{sv}` entry `ostree.sign.ed25519` → `aay` holding `entries`: the one
/// place arbor builds ostree's ed25519 signature form.
fn signatures_entry(entries: &[Vec<u8>]) -> glib::Variant {
    let aay = glib::Variant::array_from_iter_with_type(
        glib::VariantTy::BYTE_STRING,
        entries.iter().map(|e| glib::Variant::array_from_fixed_array(e)),
    );
    glib::variant::DictEntry::new(METADATA_KEY.to_string(), aay).to_variant()
}

fn sv_dict(items: impl IntoIterator<Item = glib::Variant>) -> glib::Variant {
    glib::Variant::array_from_iter_with_type(glib::VariantTy::new("{sv}").expect("static type string"), items)
}

/// An `a{sv}` holding only `ostree.sign.ed25519` with `key`'s signature over
/// `data`: what ostree's ed25519 signer writes for a summary or a delta superblock.
pub(crate) fn signature_dict(data: &[u8], key: &SigningKey) -> glib::Variant {
    sv_dict([signatures_entry(&[key.sign(data).to_bytes().to_vec()])])
}

fn write_signatures(repo: &Repo, csum: &str, existing: Option<&glib::Variant>, entries: &[Vec<u8>]) -> Result<()> {
    let ours = signatures_entry(entries);
    // Other keys keep their order; ours replaces itself in place or comes last.
    let mut items = Vec::new();
    let mut placed = false;
    if let Some(d) = existing {
        for i in 0..d.n_children() {
            let entry = d.child_value(i);
            if entry.child_value(0).str() == Some(METADATA_KEY) {
                if !placed {
                    items.push(ours.clone());
                    placed = true;
                }
            } else {
                items.push(entry);
            }
        }
    }
    if !placed {
        items.push(ours);
    }
    // Written atomically (temp file and rename) by libostree.
    repo.raw()
        .write_commit_detached_metadata(csum, Some(&sv_dict(items)), gio::Cancellable::NONE)
        .with_context(|| {
            format!(
                "writing the detached metadata of commit {csum} in {}",
                repo.path().display()
            )
        })
}

fn string_field(meta: &glib::Variant, key: &str) -> Result<Field<String>, String> {
    Ok(match lookup(meta, key)? {
        None => Field::Missing,
        Some(v) => match v.str() {
            Some(s) if v.type_().as_str() == "s" => Field::Value(s.to_string()),
            _ => Field::WrongType(v.type_().as_str().to_string()),
        },
    })
}

fn strings_field(meta: &glib::Variant, key: &str) -> Result<Field<Vec<String>>, String> {
    Ok(match lookup(meta, key)? {
        None => Field::Missing,
        Some(v) => match v.get::<Vec<String>>() {
            Some(l) if v.type_().as_str() == "as" => Field::Value(l),
            _ => Field::WrongType(v.type_().as_str().to_string()),
        },
    })
}

/// The metadata binding checks need, from the commit's `a{sv}`.
fn commit_facts(commit: &glib::Variant, reached_through: Option<String>) -> Result<CommitFacts, String> {
    let meta = commit.child_value(0);
    let facts = || -> Result<CommitFacts, String> {
        Ok(CommitFacts {
            arch: string_field(&meta, ARCH_KEY)?,
            boards: strings_field(&meta, BOARDS_KEY)?,
            ref_binding: strings_field(&meta, REF_BINDING_KEY)?,
            reached_through,
        })
    };
    facts().map_err(|why| format!("commit metadata: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bare-user repository with one commit carrying `arbor.arch`.
    fn repo_with_commit(dir: &Path) -> Result<(Repo, String)> {
        use crate::ostree::repo::{Dir, FileMeta, MetaValue};
        let path = dir.join("repo");
        let repo = Repo::open_or_create_bare_user(&path)?;
        let tx = repo.transaction()?;
        let mut meta = std::collections::BTreeMap::new();
        meta.insert(ARCH_KEY.to_string(), MetaValue::Str("aarch64".into()));
        let c = tx.write_commit(&Dir::new(FileMeta::root_dir(0o755)), "t", &meta, 0)?;
        tx.commit("t/ref", &c)?;
        Ok((repo, c))
    }

    #[test]
    fn sign_keeps_other_detached_keys_and_is_idempotent() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let (repo, c) = repo_with_commit(tmp.path())?;
        let other = glib::variant::DictEntry::new("x.other".to_string(), "kept".to_variant()).to_variant();
        let dict = glib::Variant::array_from_iter_with_type(glib::VariantTy::new("{sv}").expect("type"), [other]);
        repo.raw()
            .write_commit_detached_metadata(&c, Some(&dict), gio::Cancellable::NONE)?;

        let k = SigningKey::from_bytes(&[9; 32]);
        assert!(sign_commit_with(&repo, "t/ref", &k)?.added);
        assert!(!sign_commit_with(&repo, &c, &k)?.added);
        let d = read_detached(&repo, &c)?.context("detached metadata")?;
        assert_eq!(
            lookup(&d, "x.other")
                .ok()
                .flatten()
                .and_then(|v| v.str().map(String::from))
                .as_deref(),
            Some("kept")
        );
        let Signatures::Entries(e) = signature_entries(&d) else {
            panic!("no signatures")
        };
        assert_eq!(e.len(), 1);

        let trust = Trust {
            trusted: vec![k.verifying_key()],
            revoked: vec![],
        };
        let binding = Binding {
            arch: Some(crate::arch::Arch::Aarch64),
            board: None,
            ref_name: Some("t/ref".into()),
        };
        let v = verify_commit(&repo, &c, &trust, &binding)?;
        assert_eq!(v.key, keys::encode_public(&k.verifying_key()));
        Ok(())
    }

    #[test]
    fn a_signature_key_of_the_wrong_type_blocks_signing() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let (repo, c) = repo_with_commit(tmp.path())?;
        let bad = glib::variant::DictEntry::new(METADATA_KEY.to_string(), "nope".to_variant()).to_variant();
        let dict = glib::Variant::array_from_iter_with_type(glib::VariantTy::new("{sv}").expect("type"), [bad]);
        repo.raw()
            .write_commit_detached_metadata(&c, Some(&dict), gio::Cancellable::NONE)?;
        let err = format!(
            "{:#}",
            sign_commit_with(&repo, &c, &SigningKey::from_bytes(&[1; 32])).unwrap_err()
        );
        assert!(err.contains("has type s, not aay"), "{err}");
        Ok(())
    }
}
