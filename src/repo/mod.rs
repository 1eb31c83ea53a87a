//! rpm-md repositories: `repodata/repomd.xml`, then primary and filelists,
//! verified against repomd's checksums and cached by checksum, so a second run
//! with unchanged metadata fetches only repomd.xml.

pub mod download;
pub mod fetch;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use quick_xml::events::Event;

pub use fetch::{Checksum, Fetcher};

/// One metadata file listed in repomd.xml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdFile {
    /// `location href`, relative to the repository's base URL (validated).
    pub href: String,
    /// Checksum of the file as stored (compressed).
    pub checksum: Checksum,
}

/// What repomd.xml says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoMd {
    /// `<revision>`, if present.
    pub revision: Option<String>,
    /// The primary metadata.
    pub primary: MdFile,
    /// The filelists metadata, if present.
    pub filelists: Option<MdFile>,
}

/// A repository whose metadata is on local disk.
#[derive(Debug, Clone)]
pub struct LoadedRepo {
    /// Repository id.
    pub id: String,
    /// Base URL, ending in `/`.
    pub baseurl: String,
    /// repomd.xml's revision.
    pub revision: Option<String>,
    /// Cached primary metadata.
    pub primary: PathBuf,
    /// Cached filelists metadata.
    pub filelists: Option<PathBuf>,
}

/// Checks a `location href` from metadata: a relative path with no `..`, no
/// scheme, no backslash or NUL, so it can never leave the repository or a cache.
pub fn check_href(href: &str) -> Result<()> {
    let bad = href.is_empty()
        || href.starts_with('/')
        || href.contains("://")
        || href.contains('\\')
        || href.contains('\0')
        || href.contains('?')
        || href.contains('#')
        || href.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        bail!("metadata location {href:?} is not a plain relative path inside the repository");
    }
    Ok(())
}

/// The last component of a checked href.
fn basename(href: &str) -> &str {
    href.rsplit('/').next().unwrap_or(href)
}

/// Parses repomd.xml.
pub fn parse_repomd(xml: &[u8]) -> Result<RepoMd> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let (mut data_type, mut in_checksum, mut in_revision) = (None::<String>, false, false);
    let (mut ck_type, mut ck_hex, mut href) = (String::new(), String::new(), String::new());
    let (mut revision, mut primary, mut filelists) = (None, None, None);
    loop {
        match reader.read_event_into(&mut buf).context("parsing repomd.xml")? {
            Event::Start(e) | Event::Empty(e) => {
                let attr = |name: &[u8]| -> Result<Option<String>> {
                    for a in e.attributes() {
                        let a = a.context("parsing repomd.xml attributes")?;
                        if a.key.as_ref() == name {
                            return Ok(Some(a.unescape_value().context("parsing repomd.xml")?.into_owned()));
                        }
                    }
                    Ok(None)
                };
                match e.name().as_ref() {
                    b"data" => {
                        data_type = attr(b"type")?;
                        (ck_type, ck_hex, href) = (String::new(), String::new(), String::new());
                    }
                    b"checksum" if data_type.is_some() => {
                        ck_type = attr(b"type")?.unwrap_or_default();
                        in_checksum = true;
                    }
                    b"location" if data_type.is_some() => href = attr(b"href")?.unwrap_or_default(),
                    b"revision" => in_revision = true,
                    _ => {}
                }
            }
            Event::Text(t) => {
                let text = t.xml_content().context("parsing repomd.xml")?.into_owned();
                if in_checksum {
                    ck_hex.push_str(text.trim());
                } else if in_revision {
                    revision = Some(text.trim().to_string());
                }
            }
            Event::End(e) => match e.name().as_ref() {
                b"checksum" => in_checksum = false,
                b"revision" => in_revision = false,
                b"data" => {
                    let kind = data_type.take().unwrap_or_default();
                    if kind == "primary" || kind == "filelists" {
                        check_href(&href)?;
                        let checksum =
                            Checksum::new(&ck_type, &ck_hex).with_context(|| format!("repomd.xml entry {kind}"))?;
                        let f = MdFile {
                            href: href.clone(),
                            checksum,
                        };
                        if kind == "primary" {
                            primary = Some(f)
                        } else {
                            filelists = Some(f)
                        }
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    let primary = primary.context("repomd.xml lists no primary metadata")?;
    Ok(RepoMd {
        revision,
        primary,
        filelists,
    })
}

/// Fetches a repository's metadata into `cache_dir/metadata`, reusing files
/// already there under their checksum.
pub fn fetch_metadata(id: &str, baseurl: &str, cache_dir: &Path, fetcher: &Fetcher) -> Result<LoadedRepo> {
    let baseurl = if baseurl.ends_with('/') {
        baseurl.to_string()
    } else {
        format!("{baseurl}/")
    };
    let repomd_url = format!("{baseurl}repodata/repomd.xml");
    let xml = fetcher
        .get(&repomd_url)
        .with_context(|| format!("repository {id}: fetching {repomd_url}"))?;
    let md = parse_repomd(&xml).with_context(|| format!("repository {id}: {repomd_url}"))?;
    let dir = cache_dir.join("metadata");
    let mut get = |f: &MdFile| -> Result<PathBuf> {
        // Named by checksum: a cached file is one that was verified when written.
        let dest = dir.join(format!("{}-{}", f.checksum.hex, basename(&f.href)));
        if !dest.exists() {
            let url = format!("{baseurl}{}", f.href);
            tracing::info!(repo = id, url = %url, "fetching metadata");
            fetcher
                .download(&url, &dest, &f.checksum)
                .with_context(|| format!("repository {id}"))?;
        }
        Ok(dest)
    };
    let primary = get(&md.primary)?;
    let filelists = md.filelists.as_ref().map(&mut get).transpose()?;
    Ok(LoadedRepo {
        id: id.to_string(),
        baseurl,
        revision: md.revision,
        primary,
        filelists,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPOMD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1704067200</revision>
  <data type="primary">
    <checksum type="sha256">fcb47051384711dd991d2801e47c1ecdce32a8ad275008c7211f6a0374d525e2</checksum>
    <open-checksum type="sha256">0000000000000000000000000000000000000000000000000000000000000000</open-checksum>
    <location href="repodata/fcb4-primary.xml.gz"/>
    <size>4</size>
  </data>
  <data type="filelists">
    <checksum type="sha256">6d5f7350c37c691d7bacb5f247886544cc07c67d03ca28cece6a82088bbc2f79</checksum>
    <location href="repodata/6d5f-filelists.xml.zst"/>
  </data>
  <data type="other"><checksum type="sha256">aa</checksum><location href="../../etc/passwd"/></data>
</repomd>"#;

    #[test]
    fn parses_primary_and_filelists_only() {
        let md = parse_repomd(REPOMD.as_bytes()).unwrap();
        assert_eq!(md.revision.as_deref(), Some("1704067200"));
        assert_eq!(md.primary.href, "repodata/fcb4-primary.xml.gz");
        assert!(
            md.primary.checksum.hex.starts_with("fcb47051"),
            "open-checksum must not leak in"
        );
        assert_eq!(md.filelists.unwrap().href, "repodata/6d5f-filelists.xml.zst");
    }

    #[test]
    fn hostile_hrefs_are_refused() {
        for href in [
            "../x",
            "repodata/../../x",
            "/etc/passwd",
            "http://evil/x",
            "a//b",
            "a\\b",
            "",
            "./a",
        ] {
            assert!(check_href(href).is_err(), "{href:?} accepted");
            let xml = REPOMD.replace("repodata/fcb4-primary.xml.gz", href);
            assert!(parse_repomd(xml.as_bytes()).is_err(), "{href:?} accepted in repomd");
        }
        assert!(check_href("Packages/b/bash-5.2.rpm").is_ok());
    }

    #[test]
    fn bad_repomd_says_what() {
        let e = parse_repomd(b"<repomd></repomd>").unwrap_err().to_string();
        assert!(e.contains("no primary"), "{e}");
        let e = format!(
            "{:#}",
            parse_repomd(REPOMD.replace("sha256\">fcb4", "md5\">fcb4").as_bytes()).unwrap_err()
        );
        assert!(e.contains("primary") && e.contains("md5"), "{e}");
    }
}
