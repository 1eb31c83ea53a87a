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
    /// The base URL the metadata came from, ending in `/`.
    pub baseurl: String,
    /// Every base URL of the repository, ending in `/`, in the order packages
    /// are tried: the one the metadata came from, then the others as listed.
    pub mirrors: Vec<String>,
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
/// already there under their checksum. `baseurls` are tried in order, as dnf
/// tries them: one that cannot be reached, answers with an error or serves
/// metadata that does not check out gives way to the next.
pub fn fetch_metadata(id: &str, baseurls: &[String], cache_dir: &Path, fetcher: &Fetcher) -> Result<LoadedRepo> {
    let urls: Vec<String> = baseurls.iter().map(|u| with_slash(u)).collect();
    let mut loaded = first_working(&urls, |baseurl| fetch_metadata_from(id, baseurl, cache_dir, fetcher))
        .with_context(|| format!("repository {id}"))?;
    loaded.mirrors = std::iter::once(loaded.baseurl.clone())
        .chain(urls.into_iter().filter(|u| *u != loaded.baseurl))
        .collect();
    Ok(loaded)
}

fn with_slash(url: &str) -> String {
    if url.ends_with('/') {
        url.to_string()
    } else {
        format!("{url}/")
    }
}

/// `op` on each of `urls` in order until one succeeds. A failure with URLs
/// left is logged; when all fail, the error names each URL and why (the one
/// URL's own error when there is one).
pub fn first_working<T>(urls: &[String], mut op: impl FnMut(&str) -> Result<T>) -> Result<T> {
    let mut failures = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        match op(url) {
            Ok(v) => return Ok(v),
            Err(e) => {
                if i + 1 < urls.len() {
                    tracing::warn!(url = %url, error = %format!("{e:#}"), "failed; trying the next baseurl");
                }
                failures.push((url, e));
            }
        }
    }
    match failures.len() {
        0 => bail!("no baseurl to fetch from"),
        1 => Err(failures.remove(0).1),
        n => {
            let why: Vec<String> = failures.iter().map(|(u, e)| format!("  - {u}: {e:#}")).collect();
            bail!("all {n} baseurls failed:\n{}", why.join("\n"))
        }
    }
}

/// [`fetch_metadata`] from one base URL (ending in `/`).
fn fetch_metadata_from(id: &str, baseurl: &str, cache_dir: &Path, fetcher: &Fetcher) -> Result<LoadedRepo> {
    let repomd_url = format!("{baseurl}repodata/repomd.xml");
    let xml = fetcher.get(&repomd_url)?;
    let md = parse_repomd(&xml).with_context(|| repomd_url.clone())?;
    let dir = cache_dir.join("metadata");
    let mut get = |f: &MdFile| -> Result<PathBuf> {
        // Named by checksum: a cached file is one that was verified when written.
        let dest = dir.join(format!("{}-{}", f.checksum.hex, basename(&f.href)));
        if !dest.exists() {
            let url = format!("{baseurl}{}", f.href);
            tracing::info!(repo = id, url = %url, "fetching metadata");
            fetcher.download(&url, &dest, &f.checksum)?;
        }
        Ok(dest)
    };
    let primary = get(&md.primary)?;
    let filelists = md.filelists.as_ref().map(&mut get).transpose()?;
    Ok(LoadedRepo {
        id: id.to_string(),
        baseurl: baseurl.to_string(),
        mirrors: vec![baseurl.to_string()],
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
    fn baseurls_are_tried_in_order_and_all_failures_are_named() {
        let urls: Vec<String> = ["http://a/", "http://b/", "http://c/"].map(String::from).to_vec();
        let mut tried = Vec::new();
        let got = first_working(&urls, |u| {
            tried.push(u.to_string());
            if u == "http://b/" {
                Ok(u.len())
            } else {
                bail!("{u} is down")
            }
        })
        .unwrap();
        assert_eq!(
            (got, tried.as_slice()),
            (9, &urls[..2]),
            "stops at the first that works"
        );

        let e = format!(
            "{:#}",
            first_working(&urls, |u| -> Result<()> {
                Err(anyhow::anyhow!("HTTP 404").context(format!("fetching {u}x")))
            })
            .unwrap_err()
        );
        assert!(e.starts_with("all 3 baseurls failed:"), "{e}");
        for u in &urls {
            assert!(e.contains(&format!("  - {u}: fetching {u}x: HTTP 404")), "{e}");
        }
        // One URL: its own error, as before there were several.
        let e = format!(
            "{:#}",
            first_working(&urls[..1], |_| -> Result<()> { bail!("refused") }).unwrap_err()
        );
        assert_eq!(e, "refused");
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
