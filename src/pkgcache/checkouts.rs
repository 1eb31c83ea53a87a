//! Read-only checkouts of package commits: the lower layers a compose stacks
//! with overlayfs, so assembling a tree costs one mount instead of a hardlink
//! per file. Each package commit is checked out once (hardlinks into the build
//! repository) under `CACHE/checkouts/` and kept for later composes: a compose
//! that bumps one package checks out only that one. A checkout appears only
//! whole (made beside its place, then renamed); nothing ever writes into one
//! (overlayfs copies a file up before the first write).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

/// At most this many layers: with more packages, the bottom ones share one
/// checkout (overlayfs stacks at most 500 layers).
pub const MAX_LAYERS: usize = 400;

/// Checkouts unused for this long are removed after a compose.
pub const KEEP_UNUSED: Duration = Duration::from_secs(14 * 24 * 3600);

/// The layers for `commits` (transaction order), top first: the checkout of
/// each commit, made now if missing, `jobs` at a time.
pub fn layers(repo: &Path, cache_dir: &Path, commits: &[String], jobs: usize) -> Result<Vec<PathBuf>> {
    let dir = cache_dir.join("checkouts");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    same_filesystem(repo, &dir)?;
    remove_stale_temporaries(&dir);
    let groups = group(commits);
    let missing: Vec<&(String, Vec<String>)> = groups.iter().filter(|(key, _)| !dir.join(key).is_dir()).collect();
    crate::parallel::map_bounded(&missing, jobs, |(key, commits)| check_out(repo, &dir, key, commits))?;
    let mut out = Vec::with_capacity(groups.len());
    for (key, _) in groups.iter().rev() {
        let path = dir.join(key);
        // Marks it used (see `prune`).
        if let Ok(f) = std::fs::File::open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        out.push(path);
    }
    Ok(out)
}

/// Checkouts are hardlinks into the repository: libostree cannot make them on
/// another filesystem (it would say only "across devices").
fn same_filesystem(repo: &Path, dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let dev = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.dev())
            .with_context(|| format!("looking at {}", p.display()))
    };
    if dev(repo)? != dev(dir)? {
        anyhow::bail!(
            "the package checkouts in {} are hardlinks into the repository {}, which is on another \
             filesystem: put the cache directory (--cache-dir) on the repository's filesystem",
            dir.display(),
            repo.display()
        );
    }
    Ok(())
}

/// Layer names and their commits, bottom first: one layer per commit, except
/// that past [`MAX_LAYERS`] the bottom commits share one.
fn group(commits: &[String]) -> Vec<(String, Vec<String>)> {
    let shared = commits.len().saturating_sub(MAX_LAYERS - 1);
    let mut out = Vec::new();
    if shared > 1 {
        let bottom = &commits[..shared];
        let key = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bottom.join("\n").as_bytes()));
        out.push((format!("group-{key}"), bottom.to_vec()));
    }
    let start = if shared > 1 { shared } else { 0 };
    out.extend(commits[start..].iter().map(|c| (c.clone(), vec![c.clone()])));
    out
}

fn check_out(repo: &Path, dir: &Path, key: &str, commits: &[String]) -> Result<()> {
    let tmp = dir.join(format!(".tmp-{}-{key}", std::process::id()));
    remove_tree(&tmp);
    crate::ostree::commit::checkout_union(&crate::ostree::Repo::open(repo)?, commits, &tmp)?;
    let dest = dir.join(key);
    match std::fs::rename(&tmp, &dest) {
        Ok(()) => Ok(()),
        // Another compose made it meanwhile: same content.
        Err(_) if dest.is_dir() => {
            remove_tree(&tmp);
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("moving {} to {}", tmp.display(), dest.display())),
    }
}

/// Half-made checkouts of composes that were killed.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(".tmp-") else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
        let alive = pid.is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok());
        if !alive {
            remove_tree(&e.path());
        }
    }
}

/// Removes checkouts not in `used` and unused for [`KEEP_UNUSED`].
pub fn prune(cache_dir: &Path, used: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(cache_dir.join("checkouts")) else {
        return;
    };
    let now = SystemTime::now();
    for e in entries.flatten() {
        let path = e.path();
        if used.contains(&path) || e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > KEEP_UNUSED);
        if old {
            tracing::debug!(path = %path.display(), "removing an unused package checkout");
            remove_tree(&path);
        }
    }
}

/// `rm -rf`, also through directories a package made read-only.
fn remove_tree(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::remove_dir_all(p).is_ok() || !p.exists() {
        return;
    }
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(p);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_layer_limit_the_bottom_packages_share_a_layer() {
        let few: Vec<String> = (0..3).map(|i| format!("c{i}")).collect();
        let g = group(&few);
        assert_eq!(
            g.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["c0", "c1", "c2"]
        );
        let many: Vec<String> = (0..MAX_LAYERS + 10).map(|i| format!("c{i}")).collect();
        let g = group(&many);
        assert_eq!(g.len(), MAX_LAYERS);
        assert!(g[0].0.starts_with("group-"));
        assert_eq!(g[0].1, many[..11].to_vec());
        assert_eq!(g[1].0, "c11");
        assert_eq!(g.last().unwrap().0, many.last().unwrap().clone());
    }
}
