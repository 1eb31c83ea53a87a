//! An OSTree sysroot built in a staging directory through libostree — what
//! `ostree admin init-fs`, `os-init`, `pull-local` and `deploy` do — for
//! writing into a disk image.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ostree::gio;
use ostree::gio::prelude::*;
use ostree::glib;
use ostree::glib::prelude::ToVariant;

/// What to deploy where.
#[derive(Debug, Clone)]
pub struct DeployRequest<'a> {
    /// The staging directory that becomes the root filesystem's top.
    pub sysroot: &'a Path,
    /// The repository holding the commit.
    pub source_repo: &'a super::repo::Repo,
    /// A ref or commit checksum in `source_repo`.
    pub rev: &'a str,
    /// The stateroot (`ostree/deploy/<osname>`).
    pub osname: &'a str,
    /// Kernel arguments (libostree adds `ostree=`).
    pub kargs: &'a [String],
    /// The device's update remote: name and URL (written to the sysroot repo's
    /// config, and the deployment's origin follows `name:ref`).
    pub remote: Option<(&'a str, &'a str)>,
}

/// The deployment libostree wrote.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The commit deployed.
    pub commit: String,
    /// The ref it came through (if `rev` was a ref).
    pub refname: Option<String>,
    /// The deployment directory, relative to the sysroot.
    pub deploy_dir: PathBuf,
    /// libostree's boot checksum (names `/boot/ostree/<os>-<bootcsum>`).
    pub bootcsum: String,
}

/// Initializes a sysroot at `req.sysroot`, pulls the commit from the source
/// repository, deploys it and writes the boot loader entries (BLS only: the
/// boot loader configuration is arbor's). A commit whose boot files are
/// symlinks is refused before anything is written.
pub fn deploy(req: &DeployRequest) -> Result<Deployed> {
    let cancel = gio::Cancellable::NONE;
    let shown = req.sysroot.display();
    let source = req.source_repo;
    let resolved = source.resolve(req.rev)?;
    let (commit, refname) = (resolved.commit, resolved.refname);
    refuse_linked_boot_files(source.raw(), &commit)?;
    std::fs::create_dir_all(req.sysroot).with_context(|| format!("creating {shown}"))?;
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(req.sysroot)));
    sysroot
        .ensure_initialized(cancel)
        .with_context(|| format!("initializing an OSTree sysroot in {shown}"))?;
    physical_root_dirs(req.sysroot)?;
    sysroot
        .load(cancel)
        .with_context(|| format!("loading the sysroot {shown}"))?;
    let repo = sysroot.repo();
    let config = repo.copy_config();
    // arbor renders extlinux.conf / uEnv.txt / config.txt itself from the BLS entries.
    config.set_string("sysroot", "bootloader", "none");
    repo.write_config(&config)
        .with_context(|| format!("writing the repository config of {shown}"))?;
    sysroot
        .init_osname(req.osname, cancel)
        .with_context(|| format!("creating the stateroot {} in {shown}", req.osname))?;

    let url = format!("file://{}", std::fs::canonicalize(source.path())?.display());
    let dict = glib::VariantDict::new(None);
    let refs = vec![refname.clone().unwrap_or_else(|| commit.clone())];
    dict.insert_value("refs", &refs.to_variant());
    dict.insert_value("flags", &(ostree::RepoPullFlags::NONE.bits() as i32).to_variant());
    repo.pull_with_options(&url, &dict.end(), None, cancel)
        .with_context(|| format!("pulling {} from {} into {shown}", req.rev, source.path().display()))?;

    let origin_ref = match (&req.remote, &refname) {
        (Some((name, url)), Some(r)) => {
            let opts = glib::VariantDict::new(None);
            opts.insert_value("gpg-verify", &false.to_variant());
            repo.remote_add(name, Some(url), Some(&opts.end()), cancel)
                .with_context(|| format!("adding the remote {name} ({url}) to {shown}"))?;
            // The ref as the device's updates will name it.
            repo.set_ref_immediate(Some(name), r, Some(&commit), cancel)
                .with_context(|| format!("writing the ref {name}:{r}"))?;
            format!("{name}:{r}")
        }
        (None, Some(r)) => r.clone(),
        (_, None) => commit.clone(),
    };
    let origin = sysroot.origin_new_from_refspec(&origin_ref);
    let kargs: Vec<&str> = req.kargs.iter().map(String::as_str).collect();
    let deployment = sysroot
        .deploy_tree(Some(req.osname), &commit, Some(&origin), None, &kargs, cancel)
        .with_context(|| format!("deploying {commit} in {shown}"))?;
    sysroot
        .simple_write_deployment(
            Some(req.osname),
            &deployment,
            None,
            ostree::SysrootSimpleWriteDeploymentFlags::NONE,
            cancel,
        )
        .with_context(|| format!("writing the boot entries of {shown}"))?;
    let deploy_dir = PathBuf::from(sysroot.deployment_dirpath(&deployment).as_str());
    Ok(Deployed {
        commit,
        refname,
        deploy_dir,
        bootcsum: deployment.bootcsum().to_string(),
    })
}

/// The top-level directories of the physical root that `ostree admin init-fs`
/// makes and libostree's `ensure_initialized` does not: a deployment's `/tmp`
/// is a link to `sysroot/tmp`, and the mount points the system needs.
const PHYSICAL_ROOT_DIRS: &[(&str, u32)] = &[
    ("boot", 0o755),
    ("dev", 0o755),
    ("home", 0o755),
    ("proc", 0o755),
    ("run", 0o755),
    ("sys", 0o755),
    ("root", 0o700),
    ("tmp", 0o1777),
];

fn physical_root_dirs(sysroot: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for (name, mode) in PHYSICAL_ROOT_DIRS {
        let p = sysroot.join(name);
        if !p.exists() {
            std::fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
        }
        // Exactly this mode, whatever the umask.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
            .with_context(|| format!("setting the mode of {}", p.display()))?;
    }
    Ok(())
}

/// Directories libostree opens (following symlinks) to find the boot files.
const BOOT_DIRS: &[&str] = &["usr", "usr/lib", "usr/lib/modules", "usr/lib/ostree-boot", "boot"];
/// What libostree copies into /boot from `usr/lib/modules/<kver>/` (`dtb` with
/// everything beneath it) and, with a checksum suffix, from the legacy directories.
const KERNEL_DIR_FILES: &[&str] = &["vmlinuz", "initramfs", "devicetree", ".vmlinuz.hmac", "dtb"];
const LEGACY_FILES: &[&str] = &["vmlinuz-", "initramfs-", "devicetree-"];
/// How many offending paths an error lists.
const SHOWN_LINKS: usize = 8;
/// The os-release files libostree reads, following links on the build host,
/// for the boot entry's title.
const OS_RELEASE: &[&str] = &["usr/lib/os-release", "usr/etc/os-release", "etc/os-release"];
/// Most links followed from an os-release path.
const OS_RELEASE_HOPS: usize = 8;

/// Refuses a commit in which a file libostree's deploy copies into /boot (the
/// kernel, initramfs, device trees), or a directory on the way to one, is a
/// symlink. libostree opens these through host paths and follows links: a link
/// to `/etc/shadow` or a `dtb` linked to a host directory would put the build
/// host's files into the image. Arbor's own reads resolve inside the tree
/// (`image::tree`), but the deploy is libostree's, so the commit is checked first.
fn refuse_linked_boot_files(repo: &ostree::Repo, commit: &str) -> Result<()> {
    let cancel = gio::Cancellable::NONE;
    let (root, _) = repo.read_commit(commit, cancel).with_context(|| {
        let path = repo.path().path().unwrap_or_default();
        format!("reading commit {commit} from {}", path.display())
    })?;
    let mut links = Vec::new();
    for dir in BOOT_DIRS {
        if kind(&root.resolve_relative_path(dir), dir)? == Some(gio::FileType::SymbolicLink) {
            links.push(format!("/{dir}"));
        }
    }
    for (kdir, t) in children(&root.resolve_relative_path("usr/lib/modules"), "usr/lib/modules")? {
        if t != gio::FileType::Directory {
            continue; // libostree looks only in directories here
        }
        let kpath = format!("usr/lib/modules/{kdir}");
        let kfile = root.resolve_relative_path(&kpath);
        for (name, t) in children(&kfile, &kpath)? {
            if !KERNEL_DIR_FILES.iter().any(|f| name.starts_with(f)) {
                continue;
            }
            let path = format!("{kpath}/{name}");
            match t {
                gio::FileType::SymbolicLink => links.push(format!("/{path}")),
                gio::FileType::Directory => links_beneath(&kfile.child(&name), &path, &mut links)?,
                _ => {}
            }
        }
    }
    for legacy in ["usr/lib/ostree-boot", "boot"] {
        for (name, t) in children(&root.resolve_relative_path(legacy), legacy)? {
            if t == gio::FileType::SymbolicLink && LEGACY_FILES.iter().any(|f| name.starts_with(f)) {
                links.push(format!("/{legacy}/{name}"));
            }
        }
    }
    for path in OS_RELEASE {
        if let Some(escape) = link_leaving_the_tree(&root, path)? {
            links.push(escape);
        }
    }
    if links.is_empty() {
        return Ok(());
    }
    let more = links.len().saturating_sub(SHOWN_LINKS);
    let mut shown: Vec<String> = links.iter().take(SHOWN_LINKS).map(|l| shown_path(l)).collect();
    if more > 0 {
        shown.push(format!("and {more} more"));
    }
    bail!(
        "commit {commit}: boot files in the tree are symlinks, which libostree would follow on the build host when it copies \
         them into /boot: {} (ship the kernel, initramfs and device trees as regular files, and os-release links that \
         stay inside the tree)",
        shown.join(", ")
    )
}

/// Follows `path` in the commit as the build host would through a checkout:
/// `Some(description)` when a link on the way is absolute, climbs above the
/// tree's root, or passes through another directory link (any of which the
/// host resolves outside the deployment); `None` when it stays inside.
fn link_leaving_the_tree(root: &gio::File, path: &str) -> Result<Option<String>> {
    let mut at = path.to_string();
    for _ in 0..OS_RELEASE_HOPS {
        let info = match root.resolve_relative_path(&at).query_info(
            "standard::type,standard::symlink-target",
            gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
            gio::Cancellable::NONE,
        ) {
            Ok(info) => info,
            Err(e) if e.matches(gio::IOErrorEnum::NotFound) || e.matches(gio::IOErrorEnum::NotDirectory) => {
                return Ok(None);
            }
            Err(e) => return Err(e).with_context(|| format!("looking at /{at} in the commit")),
        };
        if info.file_type() != gio::FileType::SymbolicLink {
            return Ok(None);
        }
        let target = info
            .symlink_target()
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        let shown = format!("/{at} (a symlink to {target})");
        if target.starts_with('/') {
            return Ok(Some(shown));
        }
        let mut parts: Vec<&str> = at.split('/').collect();
        parts.pop();
        for c in target.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Ok(Some(shown));
                    }
                }
                c => parts.push(c),
            }
        }
        for i in 1..parts.len() {
            let prefix = parts[..i].join("/");
            if kind(&root.resolve_relative_path(&prefix), &prefix)? == Some(gio::FileType::SymbolicLink) {
                return Ok(Some(format!("{shown}, through the link /{prefix}")));
            }
        }
        at = parts.join("/");
    }
    Ok(Some(format!("/{path} (more than {OS_RELEASE_HOPS} links)")))
}

/// The type of `file` (a symlink is not followed); `None` when it does not exist.
fn kind(file: &gio::File, path: &str) -> Result<Option<gio::FileType>> {
    match file.query_info(
        "standard::type",
        gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
        gio::Cancellable::NONE,
    ) {
        Ok(info) => Ok(Some(info.file_type())),
        Err(e) if e.matches(gio::IOErrorEnum::NotFound) || e.matches(gio::IOErrorEnum::NotDirectory) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("looking at /{path} in the commit")),
    }
}

/// The entries of the directory `dir` with their types; none when it is not a directory.
fn children(dir: &gio::File, path: &str) -> Result<Vec<(String, gio::FileType)>> {
    if kind(dir, path)? != Some(gio::FileType::Directory) {
        return Ok(Vec::new());
    }
    let listing = || format!("listing /{path} in the commit");
    let it = dir
        .enumerate_children(
            "standard::name,standard::type",
            gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
            gio::Cancellable::NONE,
        )
        .with_context(listing)?;
    let mut out = Vec::new();
    while let Some(info) = it.next_file(gio::Cancellable::NONE).with_context(listing)? {
        out.push((info.name().to_string_lossy().into_owned(), info.file_type()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Adds every symlink beneath the directory `dir` (tree path `path`) to `links`.
fn links_beneath(dir: &gio::File, path: &str, links: &mut Vec<String>) -> Result<()> {
    for (name, t) in children(dir, path)? {
        let sub = format!("{path}/{name}");
        match t {
            gio::FileType::SymbolicLink => links.push(format!("/{sub}")),
            gio::FileType::Directory => links_beneath(&dir.child(&name), &sub, links)?,
            _ => {}
        }
    }
    Ok(())
}

/// A tree path for a message: names come from the commit, so control
/// characters are escaped and a long path is cut.
fn shown_path(p: &str) -> String {
    const MAX: usize = 200;
    let escaped: String = p.chars().flat_map(char::escape_debug).collect();
    match escaped.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}… ({} bytes)", &escaped[..i], p.len()),
        None => escaped,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_in_messages_are_escaped_and_cut() {
        assert_eq!(super::shown_path("/boot/vmlinuz-1"), "/boot/vmlinuz-1");
        assert_eq!(super::shown_path("/boot/a\nb"), "/boot/a\\nb");
        let long = format!("/boot/{}", "x".repeat(500));
        let s = super::shown_path(&long);
        assert!(
            s.starts_with("/boot/xxx") && s.ends_with("… (506 bytes)") && s.len() < 220,
            "{s}"
        );
    }
}

/// A deployment as the device verbs see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeploymentInfo {
    /// Position in boot order (0: what the next boot picks).
    pub index: usize,
    /// The stateroot.
    pub osname: String,
    /// The commit deployed.
    pub commit: String,
    /// libostree's deployment serial (several deployments of one commit).
    pub serial: i32,
    /// libostree's boot checksum.
    pub bootcsum: String,
    /// The origin refspec (`remote:ref`), when the origin file has one.
    pub origin: Option<String>,
    /// The origin's list keys of [`ORIGIN_GROUPS`] as `group.key` (package layering).
    pub origin_lists: std::collections::BTreeMap<String, Vec<String>>,
    /// Pinned deployments are never removed by cleanup.
    pub pinned: bool,
    /// The running system booted this one.
    pub booted: bool,
    /// The deployment directory, relative to the sysroot.
    pub dir: PathBuf,
}

/// While alive, what libostree prints on stdout ("Copying /etc changes: …")
/// goes to stderr: stdout is for what the user asked for (`--json`).
struct QuietStdout(Option<std::os::fd::OwnedFd>);

impl QuietStdout {
    fn new() -> QuietStdout {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let saved = nix::unistd::dup(std::io::stdout()).ok();
        if saved.is_some() {
            let _ = nix::unistd::dup2_stdout(std::io::stderr());
        }
        QuietStdout(saved)
    }
}

impl Drop for QuietStdout {
    fn drop(&mut self) {
        if let Some(fd) = self.0.take() {
            let _ = nix::unistd::dup2_stdout(&fd);
        }
    }
}

/// Origin groups whose string lists arbor keeps (rpm-ostree's names).
pub const ORIGIN_GROUPS: [&str; 2] = ["packages", "overrides"];

fn origin_lists(origin: Option<&glib::KeyFile>) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::new();
    let Some(o) = origin else { return out };
    for group in ORIGIN_GROUPS {
        let Ok(keys) = o.keys(group) else { continue };
        for key in keys.iter() {
            if let Ok(list) = o.string_list(group, key) {
                let list: Vec<String> = list.iter().map(|s| s.to_string()).filter(|s| !s.is_empty()).collect();
                if !list.is_empty() {
                    out.insert(format!("{group}.{key}"), list);
                }
            }
        }
    }
    out
}

/// An existing, loaded OSTree sysroot (a device's root filesystem, running or
/// mounted on a build host): the one handle the device verbs use.
pub struct Sysroot {
    raw: ostree::Sysroot,
    path: PathBuf,
    repo: super::repo::Repo,
}

impl Sysroot {
    /// Opens and loads the sysroot at `path` (`/` on the running system).
    pub fn open(path: &Path) -> Result<Sysroot> {
        let shown = path.display();
        if !path.join("ostree/repo/config").is_file() || !path.join("ostree/deploy").is_dir() {
            bail!(
                "{shown} is not an OSTree sysroot (no ostree/repo and ostree/deploy): give the root filesystem of an \
                 arbor image with --sysroot, with its boot partition mounted at boot/"
            );
        }
        let raw = ostree::Sysroot::new(Some(&gio::File::for_path(path)));
        raw.load(gio::Cancellable::NONE)
            .with_context(|| format!("loading the OSTree sysroot {shown}"))?;
        let repo = super::repo::Repo::from_raw(raw.repo(), path.join("ostree/repo"));
        Ok(Sysroot {
            raw,
            path: path.to_path_buf(),
            repo,
        })
    }

    /// The sysroot's top directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sysroot's repository.
    pub fn repo(&self) -> &super::repo::Repo {
        &self.repo
    }

    /// Reloads the deployments from disk (after another handle changed them).
    pub fn reload(&self) -> Result<()> {
        self.raw
            .load(gio::Cancellable::NONE)
            .with_context(|| format!("reloading the OSTree sysroot {}", self.path.display()))
    }

    /// The deployments in boot order.
    pub fn deployments(&self) -> Vec<DeploymentInfo> {
        let booted = self.raw.booted_deployment();
        self.raw
            .deployments()
            .iter()
            .enumerate()
            .map(|(index, d)| DeploymentInfo {
                index,
                osname: d.osname().to_string(),
                commit: d.csum().to_string(),
                serial: d.deployserial(),
                bootcsum: d.bootcsum().to_string(),
                origin: d
                    .origin()
                    .and_then(|o| o.string("origin", "refspec").ok())
                    .map(|s| s.to_string()),
                origin_lists: origin_lists(d.origin().as_ref()),
                pinned: d.is_pinned(),
                booted: booted.as_ref().is_some_and(|b| b.equal(d)),
                dir: PathBuf::from(self.raw.deployment_dirpath(d).as_str()),
            })
            .collect()
    }

    /// Deploys `commit` (already in the repository) in front of the others,
    /// with `refspec` as its origin: libostree's three-way /etc merge from
    /// the current default, its kernel arguments, then the boot entries.
    /// Older unpinned deployments other than the previous default and the
    /// booted one leave the boot entries; their files stay until [`Sysroot::cleanup`],
    /// so a bootloader configuration written before that still finds them.
    pub fn deploy(&self, osname: &str, commit: &str, refspec: &str) -> Result<DeploymentInfo> {
        self.deploy_with(osname, commit, refspec, &Default::default())
    }

    /// [`Sysroot::deploy`] with string lists added to the origin (`group.key`
    /// → values; groups of [`ORIGIN_GROUPS`]): what is layered on the commit.
    pub fn deploy_with(
        &self,
        osname: &str,
        commit: &str,
        refspec: &str,
        lists: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> Result<DeploymentInfo> {
        let cancel = gio::Cancellable::NONE;
        let shown = self.path.display();
        let merge = self.raw.merge_deployment(Some(osname));
        let origin = self.raw.origin_new_from_refspec(refspec);
        for (k, values) in lists {
            let (group, key) = k
                .split_once('.')
                .with_context(|| format!("origin key {k} has no group"))?;
            // GKeyFile's list syntax; package names and NEVRAs hold no `;`.
            let joined: String = values.iter().map(|v| format!("{v};")).collect();
            origin.set_value(group, key, &joined);
        }
        // The merge deployment's kernel arguments, less the ostree= libostree adds
        // (an empty list would be taken as "no arguments", not "keep them").
        let kargs: Vec<String> = merge
            .as_ref()
            .and_then(|m| m.bootconfig())
            .and_then(|b| b.get("options"))
            .map(|o| {
                o.split_whitespace()
                    .filter(|a| !a.starts_with("ostree="))
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let kargs: Vec<&str> = kargs.iter().map(String::as_str).collect();
        let _quiet = QuietStdout::new();
        let new = self
            .raw
            .deploy_tree(Some(osname), commit, Some(&origin), merge.as_ref(), &kargs, cancel)
            .with_context(|| format!("deploying {commit} in {shown}"))?;
        crate::failpoint::hit("device::deployed")?;
        self.raw
            .simple_write_deployment(
                Some(osname),
                &new,
                merge.as_ref(),
                ostree::SysrootSimpleWriteDeploymentFlags::NO_CLEAN,
                cancel,
            )
            .with_context(|| format!("writing the boot entries of {shown}"))?;
        self.reload()?;
        self.deployments()
            .into_iter()
            .find(|d| d.commit == commit && d.index == 0)
            .with_context(|| format!("{commit} is not the default deployment of {shown} after deploying it"))
    }

    /// Writes the deployments in the order of `indices` (positions in
    /// [`Sysroot::deployments`]); the first boots next. Files of deployments
    /// left out stay until [`Sysroot::cleanup`].
    pub fn reorder(&self, indices: &[usize]) -> Result<()> {
        let _quiet = QuietStdout::new();
        let all = self.raw.deployments();
        let mut order = Vec::new();
        for &i in indices {
            let d = all
                .get(i)
                .with_context(|| format!("no deployment {i} in {}", self.path.display()))?;
            // The same object, not `d.clone()`: the binding's inherent `clone` is
            // ostree_deployment_clone, a new object, and libostree finds the
            // booted deployment in the list by pointer ("Attempting to remove
            // booted deployment" otherwise, on a booted system).
            order.push(Clone::clone(d));
        }
        let opts = ostree::SysrootWriteDeploymentsOpts { do_postclean: false };
        self.raw
            .write_deployments_with_options(&order, &opts, gio::Cancellable::NONE)
            .with_context(|| format!("writing the boot entries of {}", self.path.display()))?;
        self.reload()
    }

    /// Pins (or unpins) the deployment at `index` in [`Sysroot::deployments`]:
    /// a pinned deployment stays when newer ones are deployed.
    pub fn set_pinned(&self, index: usize, pinned: bool) -> Result<()> {
        let all = self.raw.deployments();
        let d = all
            .get(index)
            .with_context(|| format!("no deployment {index} in {} (see arbor status)", self.path.display()))?;
        self.raw
            .deployment_set_pinned(d, pinned)
            .with_context(|| format!("pinning deployment {index} of {}", self.path.display()))?;
        self.reload()
    }

    /// Removes what no boot entry references: old boot versions, deployments
    /// left out, and unreferenced objects in the repository.
    pub fn cleanup(&self) -> Result<()> {
        let _quiet = QuietStdout::new();
        self.raw
            .cleanup(gio::Cancellable::NONE)
            .with_context(|| format!("cleaning up {}", self.path.display()))
    }

    /// Thaws the /boot filesystem if a killed run left it frozen. libostree's
    /// deploy freezes and thaws /boot (FIFREEZE, FITHAW) around its boot
    /// entry swap; a process killed in between leaves it frozen, and every
    /// later write there (the next upgrade's) blocks forever. FITHAW on a
    /// filesystem that is not frozen fails with EINVAL, which is ignored.
    pub fn thaw_boot(&self) -> Result<()> {
        use std::os::fd::AsRawFd as _;
        const FITHAW: libc::c_ulong = 0xC004_5878; // _IOWR('X', 120, int)
        let boot = self.path.join("boot");
        let dir = match std::fs::File::open(&boot) {
            Ok(d) => d,
            Err(_) => return Ok(()),
        };
        // SAFETY: FITHAW takes no argument beyond the descriptor, which is open.
        let r = unsafe { libc::ioctl(dir.as_raw_fd(), FITHAW as _, 0) };
        if r == 0 {
            tracing::warn!(path = %boot.display(), "thawed /boot, which a killed run had left frozen");
        }
        Ok(())
    }

    /// Takes libostree's sysroot lock without waiting: `false` when another
    /// process holds it.
    pub fn try_lock(&self) -> Result<bool> {
        self.raw
            .try_lock()
            .with_context(|| format!("locking {}", self.path.display()))
    }

    /// The URL of the repository's remote `name`.
    pub fn remote_url(&self, name: &str) -> Result<String> {
        self.repo
            .raw()
            .remote_get_url(name)
            .map(|u| u.to_string())
            .with_context(|| format!("the repository of {} has no remote {name}", self.path.display()))
    }

    /// Points the remote `name` at `url` (written to the repository config).
    pub fn set_remote_url(&self, name: &str, url: &str) -> Result<()> {
        let repo = self.repo.raw();
        let config = repo.copy_config();
        config.set_string(&format!("remote \"{name}\""), "url", url);
        repo.write_config(&config)
            .with_context(|| format!("writing the repository config of {}", self.path.display()))
    }

    /// Points the ref `remote:name` at `commit` (a rebase's or upgrade's new ref).
    pub fn set_remote_ref(&self, remote: &str, name: &str, commit: &str) -> Result<()> {
        self.repo
            .raw()
            .set_ref_immediate(Some(remote), name, Some(commit), gio::Cancellable::NONE)
            .with_context(|| format!("writing the ref {remote}:{name} in {}", self.path.display()))
    }
}
