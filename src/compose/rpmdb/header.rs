//! rpm's header blobs as the database holds them: read a package's signature
//! and main header (through `rpm::blob`), add the tags rpm adds when it
//! installs the package, and export the result in the layout rpm's
//! `headerExport` gives it in the database.
//!
//! The main header's immutable region is kept verbatim: rpm checks it against
//! the SHA256HEADER/SHA1HEADER digests (copied from the signature header) every
//! time it reads the record back.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use crate::rpm::blob::{Blob, align_diff, read_package, sigtag, tag, ty};

/// `RPMFILE_STATE_NORMAL`: the file is installed.
const FILE_STATE_NORMAL: u8 = 0;

/// A tag rpm adds to the header at install time.
struct Added {
    tag: u32,
    ty: u32,
    count: u32,
    /// Big-endian data as it goes into the blob.
    data: Vec<u8>,
}

/// The tags rpm copies from the signature header into the main header
/// (`xlateTags` in lib/package.c of rpm 4.17 to 4.20): signature tag, header
/// tag, the type rpm expects, the count it insists on (0: any), and whether the
/// tag may legitimately sit in the main header already. rpm 6 also copies
/// SHA3_256HEADER and OPENPGP, which rpm 4 ignores.
const SIG_TAGS: &[(u32, u32, u32, u32, bool)] = &[
    (sigtag::SIZE, tag::SIGSIZE, ty::INT32, 1, false),
    (sigtag::PGP, tag::SIGPGP, ty::BIN, 0, false),
    (sigtag::MD5, tag::SIGMD5, ty::BIN, 16, false),
    (sigtag::GPG, tag::SIGGPG, ty::BIN, 0, false),
    (sigtag::PAYLOADSIZE, tag::ARCHIVESIZE, ty::INT32, 1, true),
    (sigtag::FILESIGNATURES, tag::FILESIGNATURES, ty::STRING_ARRAY, 0, true),
    (
        sigtag::FILESIGNATURELENGTH,
        tag::FILESIGNATURELENGTH,
        ty::INT32,
        1,
        true,
    ),
    (tag::VERITYSIGNATURES, tag::VERITYSIGNATURES, ty::STRING_ARRAY, 0, false),
    (tag::VERITYSIGNATUREALGO, tag::VERITYSIGNATUREALGO, ty::INT32, 1, false),
    (tag::SHA1HEADER, tag::SHA1HEADER, ty::STRING, 1, false),
    (tag::SHA256HEADER, tag::SHA256HEADER, ty::STRING, 1, false),
    (tag::DSAHEADER, tag::DSAHEADER, ty::BIN, 0, false),
    (tag::RSAHEADER, tag::RSAHEADER, ty::BIN, 0, false),
    (tag::LONGSIGSIZE, tag::LONGSIGSIZE, ty::INT64, 1, false),
    (tag::LONGARCHIVESIZE, tag::LONGARCHIVESIZE, ty::INT64, 1, false),
];

/// Tags an installed header gets from the install itself; a package must not
/// carry them already (rpm would add a second copy).
const INSTALL_TAGS: [(u32, &str); 5] = [
    (tag::INSTALLTIME, "INSTALLTIME"),
    (tag::INSTALLTID, "INSTALLTID"),
    (tag::INSTALLCOLOR, "INSTALLCOLOR"),
    (tag::FILESTATES, "FILESTATES"),
    (tag::INSTPREFIXES, "INSTPREFIXES"),
];

/// What one package contributes to the database.
pub(super) struct Installed {
    /// The exported header blob, ready for the `Packages` table.
    pub blob: Blob,
    /// `%{ARCH}`, for the transaction color.
    pub arch: String,
    /// `name-[epoch:]version-release.arch`.
    pub nevra: String,
}

/// Reads the package at `path` and returns its header as rpm would store it
/// after installing it in a transaction with id and time `install_time` and
/// color `color`.
pub(super) fn install(path: &Path, install_time: u32, color: u32) -> Result<Installed> {
    let (sig, main) = read_package(path)?;
    main.check_region(tag::HEADERIMMUTABLE)?;
    check_digest(&sig, &main)?;

    let mut added = merge_signature(&sig, &main)?;
    retrofit(&main, &mut added)?;
    for (t, name) in INSTALL_TAGS {
        ensure!(
            main.find(t).is_none(),
            "the package header already has the install-time tag {name}"
        );
    }
    let arch = main.string(tag::ARCH).context("the package header has no ARCH")?;
    let field = |t: u32, name: &str| {
        main.string(t)
            .with_context(|| format!("the package header has no {name}"))
    };
    let epoch = main.number(tag::EPOCH).map(|e| format!("{e}:")).unwrap_or_default();
    let nevra = format!(
        "{}-{epoch}{}-{}.{arch}",
        field(tag::NAME, "NAME")?,
        field(tag::VERSION, "VERSION")?,
        field(tag::RELEASE, "RELEASE")?
    );

    // rpmRelocateFileList: without relocations, a relocatable package records
    // its prefixes as the install prefixes.
    let files = main.find(tag::BASENAMES).map_or(0, |e| e.count);
    let prefixes = main.find(tag::PREFIXES).filter(|p| p.count > 0);
    let relocated = main.find(tag::ORIGBASENAMES).is_some();
    if let (Some(prefixes), true, false) = (prefixes, files > 0, relocated) {
        added.push(Added {
            tag: tag::INSTPREFIXES,
            ty: prefixes.ty,
            count: prefixes.count,
            data: main.raw(&prefixes).to_vec(),
        });
    }
    // psm.c dbAdd. Every file is installed: no %_netsharedpath, %_install_langs
    // or --excludedocs, and no file's color falls outside the transaction's
    // (rpm skips those only on ia64).
    if files > 0 {
        added.push(Added {
            tag: tag::FILESTATES,
            ty: ty::CHAR,
            count: files,
            data: vec![FILE_STATE_NORMAL; files as usize],
        });
    }
    for (t, value) in [
        (tag::INSTALLTID, install_time),
        (tag::INSTALLTIME, install_time),
        (tag::INSTALLCOLOR, color),
    ] {
        added.push(Added {
            tag: t,
            ty: ty::INT32,
            count: 1,
            data: value.to_be_bytes().to_vec(),
        });
    }

    let blob = Blob::parse(export(&main, added)).context("exporting the installed header")?;
    Ok(Installed { blob, arch, nevra })
}

/// The main header must match the SHA256 digest in the signature header:
/// rpm checks it every time it reads the record back and hides the package
/// when it does not match.
fn check_digest(sig: &Blob, main: &Blob) -> Result<()> {
    let Some(want) = sig.string(tag::SHA256HEADER) else {
        return Ok(());
    };
    let got = crate::rpm::digests::header_sha256(main);
    ensure!(
        got.eq_ignore_ascii_case(&want),
        "the header's SHA256 digest is {got}, the signature header says {want}: the package is damaged"
    );
    Ok(())
}

/// rpm's `headerMergeLegacySigs`: the signature tags that go into the installed header.
fn merge_signature(sig: &Blob, main: &Blob) -> Result<Vec<Added>> {
    for &(stag, xtag, _, _, quirk) in SIG_TAGS {
        if main.find(xtag).is_some() && !(quirk && sig.find(stag).is_none()) {
            bail!("invalid signature tag {xtag}: the main header has it too");
        }
    }
    let mut added = Vec::new();
    for &(stag, xtag, want_ty, want_count, _) in SIG_TAGS {
        let Some(e) = sig.find(stag) else { continue };
        ensure!(
            e.ty == want_ty && e.count >= 1 && (want_count == 0 || e.count == want_count),
            "invalid signature tag {stag} (type {}, {} values)",
            e.ty,
            e.count
        );
        added.push(Added {
            tag: xtag,
            ty: e.ty,
            count: e.count,
            data: sig.raw(&e).to_vec(),
        });
    }
    Ok(added)
}

/// rpm's `applyRetrofits` for the packages it still installs: binary packages
/// without SOURCERPM get "(none)"; old file lists and source packages are refused.
fn retrofit(main: &Blob, added: &mut Vec<Added>) -> Result<()> {
    ensure!(main.find(tag::SOURCEPACKAGE).is_none(), "is a source package");
    ensure!(
        main.find(tag::OLDFILENAMES).is_none(),
        "has an uncompressed file list (OLDFILENAMES), which rpm converts on the fly; unsupported"
    );
    if main.find(tag::SOURCERPM).is_none() {
        // headerIsSourceHeuristic: a single empty dirname marks a source package.
        let source = main
            .find(tag::DIRNAMES)
            .is_some_and(|e| e.count == 1 && main.strings(&e).first().is_some_and(|d| d.is_empty()));
        ensure!(!source, "is a source package");
        added.push(Added {
            tag: tag::SOURCERPM,
            ty: ty::STRING,
            count: 1,
            data: b"(none)\0".to_vec(),
        });
    }
    Ok(())
}

/// rpm's `headerExport` for a header read from a package plus `added` tags:
/// the region's entries and data verbatim, then the added tags sorted by tag,
/// each aligned for its type.
fn export(main: &Blob, mut added: Vec<Added>) -> Vec<u8> {
    added.sort_by_key(|a| a.tag);
    let mut data = main.data().to_vec();
    let mut index = main.index_bytes().to_vec();
    for a in &added {
        let pad = align_diff(a.ty, data.len() as u32) as usize;
        data.resize(data.len() + pad, 0);
        for v in [a.tag, a.ty, data.len() as u32, a.count] {
            index.extend_from_slice(&v.to_be_bytes());
        }
        data.extend_from_slice(&a.data);
    }
    let il = (main.entries().len() + added.len()) as u32;
    let mut out = Vec::with_capacity(8 + index.len() + data.len());
    out.extend_from_slice(&il.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&index);
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpm::blob::tests::header;

    #[test]
    fn export_appends_sorted_aligned_tags_after_the_region() {
        let h = Blob::parse(header(&[(1000, ty::STRING, 1, b"abc\0")])).unwrap();
        h.check_region(63).unwrap();
        let added = vec![
            Added {
                tag: 1128,
                ty: ty::INT32,
                count: 1,
                data: 7u32.to_be_bytes().to_vec(),
            },
            Added {
                tag: 1029,
                ty: ty::CHAR,
                count: 1,
                data: vec![0],
            },
            Added {
                tag: 269,
                ty: ty::STRING,
                count: 1,
                data: b"x\0".to_vec(),
            },
        ];
        let out = Blob::parse(export(&h, added)).unwrap();
        let tags: Vec<u32> = out.entries().iter().map(|e| e.tag).collect();
        assert_eq!(tags, [63, 1000, 269, 1029, 1128]);
        // Region data is 4 + 16 bytes; "x\0" at 20, the char at 22, the int aligned to 24.
        let offsets: Vec<u32> = out.entries().iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [4, 0, 20, 22, 24]);
        assert_eq!(out.numbers(&out.find(1128).unwrap()), [7]);
        assert_eq!(out.bytes()[8..8 + 32], h.bytes()[8..8 + 32]);
    }
}
