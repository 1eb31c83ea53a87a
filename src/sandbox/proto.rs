//! The line protocol between arbor and the sandbox's init process: one JSON
//! object per line on the init's stdin (requests) and stdout (replies).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::binfmt::Emulation;

/// What the init sets up, sent once after the id maps are written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    /// The tree (lower layer when `overlay` is set).
    pub rootfs: PathBuf,
    /// Copy-on-write: upper, work and mount-point directories (same filesystem as `rootfs`).
    pub overlay: Option<Overlay>,
    /// How foreign programs run.
    pub emulation: Emulation,
    /// rpm's name of the tree's arch (for lua's `rpm.expand`).
    pub arch: String,
}

/// overlayfs directories.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overlay {
    /// Receives every change.
    pub upper: PathBuf,
    /// overlayfs' scratch directory.
    pub work: PathBuf,
    /// Where the union is mounted before the pivot.
    pub merged: PathBuf,
    /// Several lower layers: a directory of links named `0`, `1`, … (top
    /// first); without it the lower layer is the tree.
    pub layers: Option<PathBuf>,
}

/// One program (or lua script) to run inside the sandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Job {
    /// Shown in errors and logs (`busybox-1.36 %post`).
    pub label: String,
    /// Interpreter argv (absolute path first); empty for lua.
    pub program: Vec<String>,
    /// Script body: written to a file under /tmp whose path follows `program`.
    pub script: Option<String>,
    /// Run `script` in the embedded lua interpreter instead of `program`.
    pub lua: bool,
    /// Arguments after the script path (`$1`, `$2`).
    pub args: Vec<String>,
    /// Standard input (file triggers get their file list here).
    pub stdin: Option<String>,
    /// Killed after this many milliseconds.
    pub timeout_ms: u64,
}

/// How a job ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// Exit status, or 128 + signal number.
    pub status: i32,
    /// stdout and stderr, interleaved (the tail, if very long).
    pub output: String,
    /// Killed at the time limit.
    pub timed_out: bool,
    /// Wall time.
    pub millis: u64,
}

/// The init's reply to a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// Namespaces made; waiting for id maps and `Setup`.
    Unshared,
    /// Mounts done, pivoted into the tree.
    Ready,
    /// A job finished.
    Done(Outcome),
    /// Setup or a request failed (not a job's own failure).
    Failed(String),
}
