//! `arbor status`: the deployments in boot order, each with its commit,
//! version, origin and what its signature says under the keys the device
//! trusts now.

use anyhow::Result;

use super::Device;
use crate::sign::Binding;

/// `arbor status --json` (documented in the README; stable).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// The sysroot shown.
    pub sysroot: String,
    /// The board recorded at image time.
    pub board: String,
    /// The device's arch (the board's).
    pub arch: String,
    /// Deployments in boot order: the first is what the next boot picks.
    pub deployments: Vec<Deployment>,
    /// Boot counting, on boards that count boots.
    pub boot_counting: Option<BootCounting>,
}

/// The boot counter and the last failed trial.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BootCounting {
    /// Boots a new deployment gets.
    pub tries: u32,
    /// The commit on trial (the default deployment, not yet marked good).
    pub trial: Option<String>,
    /// Its boots left.
    pub tries_left: Option<u32>,
    /// The state file could not be read (or the firmware partition reached).
    pub state_unreadable: bool,
    /// The last trial that failed and was rolled back.
    pub last_failed: Option<super::bootcount::Failed>,
}

/// One deployment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Deployment {
    /// Position in boot order.
    pub index: usize,
    /// The stateroot.
    pub osname: String,
    /// The commit.
    pub commit: String,
    /// libostree's serial for this commit's deployments.
    pub serial: i32,
    /// The commit's `version`.
    pub version: Option<String>,
    /// The commit's timestamp (seconds since the epoch, UTC).
    pub timestamp: Option<u64>,
    /// `remote:ref`.
    pub origin: Option<String>,
    /// The running system booted it.
    pub booted: bool,
    /// The next boot picks it (first in order, and not the booted one).
    pub pending: bool,
    /// Where `arbor rollback` goes: the second in order, unless that is the
    /// booted one (then a rollback only drops the pending deployment).
    pub rollback: bool,
    /// Cleanup never removes it.
    pub pinned: bool,
    /// The commit's `arbor.arch`.
    pub arch: Option<String>,
    /// The commit's `arbor.boards`.
    pub boards: Vec<String>,
    /// The signature under the keys the default deployment trusts (of the
    /// base commit, for a layered deployment: its own commit is local).
    pub signature: Signature,
    /// A layered deployment's base commit (the one the server published).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_commit: Option<String>,
    /// What is layered (from the origin), absent when nothing is.
    #[serde(skip_serializing_if = "crate::layer::Layering::is_empty")]
    pub layering: crate::layer::Layering,
    /// The packages the layered commit added and hid (NEVRA).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layered_packages: Vec<String>,
    /// Base packages the layered commit hides (NEVRA).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hidden_packages: Vec<String>,
}

/// What the signature check said.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Signature {
    /// A trusted, non-revoked key signed it and every binding holds.
    pub valid: bool,
    /// The key that verified (base64).
    pub key: Option<String>,
    /// Why not, when not valid.
    pub reasons: Vec<String>,
}

/// Reads the device's status.
pub fn status(dev: &Device) -> Result<Status> {
    let all = dev.sysroot.deployments();
    let repo = dev.sysroot.repo();
    let trust = match all.first() {
        Some(d) => dev.trust(d).map_err(|e| format!("{e:#}")),
        None => Err("no deployments".to_string()),
    };
    // `arbor rollback` swaps the first two: the second becomes the default. When
    // that is the booted one, a rollback only drops a pending update and goes
    // nowhere else.
    const ROLLBACK_INDEX: usize = 1;
    let mut out = Vec::new();
    for d in &all {
        let info = repo.commit_info(&d.commit).ok();
        let meta = |k: &str| info.as_ref().and_then(|i| i.metadata.get(k).cloned());
        let refname = d.origin.as_deref().map(|o| super::split_refspec(o).1.to_string());
        let base_commit = meta("arbor.base-commit");
        let list = |k: &str| info.as_ref().and_then(|i| i.lists.get(k).cloned()).unwrap_or_default();
        let signature = match &trust {
            Ok(t) => {
                let binding = Binding {
                    arch: Some(dev.board.arch),
                    board: Some(dev.board.name.clone()),
                    ref_name: refname,
                };
                let signed = base_commit.as_deref().unwrap_or(&d.commit);
                match crate::ostree::sign::check_commit(repo, signed, t, &binding) {
                    Ok(r) => Signature {
                        valid: r.valid,
                        key: r.key,
                        reasons: r.reasons,
                    },
                    Err(e) => Signature {
                        valid: false,
                        key: None,
                        reasons: vec![format!("{e:#}")],
                    },
                }
            }
            Err(why) => Signature {
                valid: false,
                key: None,
                reasons: vec![why.clone()],
            },
        };
        out.push(Deployment {
            index: d.index,
            osname: d.osname.clone(),
            commit: d.commit.clone(),
            serial: d.serial,
            version: meta("version"),
            timestamp: info.as_ref().map(|i| i.timestamp),
            origin: d.origin.clone(),
            booted: d.booted,
            pending: d.index == 0 && !d.booted,
            rollback: d.index == ROLLBACK_INDEX && !d.booted,
            pinned: d.pinned,
            arch: meta(crate::sign::ARCH_KEY),
            boards: info
                .as_ref()
                .and_then(|i| i.lists.get(crate::sign::BOARDS_KEY).cloned())
                .unwrap_or_default(),
            signature,
            layering: crate::layer::Layering::from_origin(&d.origin_lists),
            layered_packages: list("arbor.layered"),
            hidden_packages: list("arbor.removed"),
            base_commit,
        });
    }
    let boot_counting = match dev.board.boot_counting {
        None => None,
        Some(bc) => {
            let entries = crate::bootloader::read_entries(&dev.sysroot.path().join("boot")).unwrap_or_default();
            let state = super::bootcount::read(dev).ok().flatten();
            let on_trial = super::bootcount::trial_of_default(dev, &entries)
                .ok()
                .flatten()
                .is_some();
            Some(BootCounting {
                tries: bc.tries,
                trial: on_trial.then(|| all.first().map(|d| d.commit.clone())).flatten(),
                tries_left: on_trial.then(|| state.as_ref().map(|s| s.left)).flatten(),
                state_unreadable: state.is_none_or(|s| s.unreadable),
                last_failed: super::bootcount::last_failed(dev).ok().flatten(),
            })
        }
    };
    Ok(Status {
        sysroot: dev.sysroot.path().display().to_string(),
        board: dev.board.name.clone(),
        arch: dev.board.arch.rpm_name().to_string(),
        deployments: out,
        boot_counting,
    })
}

/// The text `arbor status` prints.
pub fn render_text(s: &Status) -> String {
    let mut out = format!("board {} ({}), sysroot {}\n", s.board, s.arch, s.sysroot);
    for d in &s.deployments {
        let mut labels = Vec::new();
        if d.booted {
            labels.push("booted");
        }
        if d.pending {
            labels.push("pending: the next boot");
        }
        if d.rollback {
            labels.push("rollback");
        }
        if d.pinned {
            labels.push("pinned");
        }
        let mark = if d.booted { "*" } else { " " };
        out.push_str(&format!(
            "{mark} {} {}.{} version {}{}\n",
            d.osname,
            d.commit,
            d.serial,
            d.version.as_deref().unwrap_or("(none)"),
            if labels.is_empty() {
                String::new()
            } else {
                format!(" ({})", labels.join(", "))
            }
        ));
        out.push_str(&format!(
            "    origin: {}\n    timestamp: {}\n",
            d.origin.as_deref().unwrap_or("(none)"),
            d.timestamp.map(|t| t.to_string()).unwrap_or_else(|| "(unknown)".into())
        ));
        if let Some(b) = &d.base_commit {
            out.push_str(&format!("    base commit: {b}\n"));
        }
        if !d.layering.is_empty() {
            out.push_str(&format!("    layered: {}\n", d.layering.summary()));
        }
        if !d.layered_packages.is_empty() {
            out.push_str(&format!("    layered packages: {}\n", d.layered_packages.join(" ")));
        }
        if d.signature.valid {
            out.push_str(&format!(
                "    signature: good, key {}\n",
                d.signature.key.as_deref().unwrap_or("?")
            ));
        } else {
            out.push_str(&format!(
                "    signature: NOT VALID: {}\n",
                d.signature.reasons.join("; ")
            ));
        }
    }
    if let Some(bc) = &s.boot_counting {
        match (&bc.trial, bc.tries_left) {
            (Some(c), Some(left)) => out.push_str(&format!(
                "boot counting: {c} is on trial, {left} of {} boots left; `arbor health` marks it good\n",
                bc.tries
            )),
            _ if bc.state_unreadable => {
                out.push_str("boot counting: the state file on the firmware partition is missing or unreadable\n")
            }
            _ => out.push_str(&format!(
                "boot counting: {} tries per new deployment; none on trial\n",
                bc.tries
            )),
        }
        if let Some(f) = &bc.last_failed {
            out.push_str(&format!(
                "last failed update: {} (version {}) did not come up healthy in {} boots; rolled back to {}\n",
                f.commit,
                f.version.as_deref().unwrap_or("?"),
                f.boots,
                f.running
            ));
        }
    }
    out
}
