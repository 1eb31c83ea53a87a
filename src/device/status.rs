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
    /// The signature under the keys the default deployment trusts.
    pub signature: Signature,
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
        let signature = match &trust {
            Ok(t) => {
                let binding = Binding {
                    arch: Some(dev.board.arch),
                    board: Some(dev.board.name.clone()),
                    ref_name: refname,
                };
                match crate::ostree::sign::check_commit(repo, &d.commit, t, &binding) {
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
        });
    }
    Ok(Status {
        sysroot: dev.sysroot.path().display().to_string(),
        board: dev.board.name.clone(),
        arch: dev.board.arch.rpm_name().to_string(),
        deployments: out,
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
    out
}
