//! Boot counting on U-Boot boards whose U-Boot cannot count (Debian's builds
//! have no `CONFIG_BOOTCOUNT_LIMIT`): arbor's `boot.scr` does it, with a
//! state file on the bootable FAT partition that U-Boot and Linux share.
//!
//! - **State** ([`crate::bootloader::STATE_FILE`], one 512-byte sector): a
//!   CRC-checked U-Boot environment blob with `arbor_trial` (the
//!   [`crate::bootloader::entry_id`] of the deployment on trial) and
//!   `arbor_left` (its boots left, hex). U-Boot rewrites it in place with
//!   `save`; Linux replaces it whole (write-temp and rename when mounted, the
//!   one-entry swap of [`super::fat`] when not).
//! - **Arm** ([`arm`]), after `arbor upgrade` (or deploy, rebase, a bundle)
//!   has written the complete new deployment and its boot entries: the state
//!   first (trial = the new default, left = the board's tries), then
//!   `boot.scr` rendered with the trial. Cut between the two, the old
//!   `boot.scr` still boots the old default.
//! - **U-Boot**, on each boot of a script with a trial: spends a try and saves
//!   the count *before* booting the trial; no tries left, a state that is
//!   missing, torn (CRC) or names another deployment, or a count it cannot
//!   save — the previous deployment boots. Lost state never boots the trial
//!   again, so a board cannot loop on a bad deployment.
//! - **Mark good** ([`mark_good`], from `arbor health` when the required checks
//!   pass on the trial): `boot.scr` rendered without the trial first, then the
//!   state cleared. Cut between the two, the script no longer counts.
//! - **Rolled back** ([`rolled_back`]): the booted deployment is not the
//!   default while the state names the default as on trial. The failure is
//!   recorded (`ostree/arbor/failed.json`: which commit, after how many boots,
//!   what runs instead), the booted deployment becomes the default again,
//!   the state is cleared, and `arbor upgrade` refuses that commit until
//!   `--force` or a newer one.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::Device;
use crate::bootloader::{BlsEntry, STATE_FILE, entry_id, read_entries, state_blob, uboot};
use crate::ostree::sysroot::DeploymentInfo;

/// Where the last failed trial is recorded, relative to the sysroot.
pub const FAILED_FILE: &str = "ostree/arbor/failed.json";

/// What the state file says.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct State {
    /// The deployment on trial ([`entry_id`]), if any.
    pub trial: Option<String>,
    /// Its boots left.
    pub left: u32,
    /// The state file was missing or torn (its CRC did not match).
    pub unreadable: bool,
}

/// A trial that used up its boots and was rolled back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failed {
    /// The commit that failed.
    pub commit: String,
    /// Its version.
    pub version: Option<String>,
    /// Boots it got before U-Boot went back.
    pub boots: u32,
    /// The commit running instead.
    pub running: String,
    /// When Linux found out (seconds since the epoch).
    pub detected_at: u64,
}

/// The state file; `None` when the board does not count boots.
pub fn read(dev: &Device) -> Result<Option<State>> {
    if dev.board.boot_counting.is_none() {
        return Ok(None);
    }
    let bytes = super::bootfiles::firmware_get(dev, STATE_FILE, 64 << 10)?;
    let Some(vars) = bytes.as_deref().and_then(uboot::parse_env_blob) else {
        return Ok(Some(State {
            unreadable: true,
            ..State::default()
        }));
    };
    Ok(Some(parse(&vars)))
}

fn parse(vars: &BTreeMap<String, String>) -> State {
    let trial = vars.get("arbor_trial").filter(|t| !t.is_empty()).cloned();
    let left = vars
        .get("arbor_left")
        .and_then(|l| u32::from_str_radix(l, 16).ok())
        .unwrap_or(0);
    State {
        trial,
        left,
        unreadable: false,
    }
}

/// Replaces the state file: `trial` with `left` boots, or no trial.
fn write(dev: &Device, trial: Option<(&str, u32)>) -> Result<()> {
    let blob = state_blob(trial)?;
    match super::bootfiles::firmware_put(dev, STATE_FILE, &blob)? {
        super::bootfiles::Put::Skipped(why) => anyhow::bail!(
            "board {} counts boots, but its state file cannot be written: {why}",
            dev.board.name
        ),
        _ => Ok(()),
    }
}

/// The default entry's id when the state file puts it on trial (what
/// `boot.scr` is rendered with).
pub fn trial_of_default(dev: &Device, entries: &[BlsEntry]) -> Result<Option<String>> {
    Ok(trial_in(read(dev)?.as_ref(), entries))
}

/// [`trial_of_default`] for a state already read.
pub fn trial_in(state: Option<&State>, entries: &[BlsEntry]) -> Option<String> {
    let trial = state?.trial.clone()?;
    let mut sorted = entries.to_vec();
    crate::bootloader::sort_newest_first(&mut sorted);
    (entry_id(sorted.first()?) == trial).then_some(trial)
}

/// The id of the default deployment's entry, from the entries in /boot.
fn default_id(dev: &Device) -> Result<String> {
    let mut entries = read_entries(&dev.sysroot.path().join("boot"))?;
    crate::bootloader::sort_newest_first(&mut entries);
    entries
        .first()
        .map(entry_id)
        .with_context(|| format!("no boot entries in {}/boot/loader", dev.sysroot.path().display()))
}

/// Puts the new default deployment on trial (state first; the caller renders
/// `boot.scr` next). Nothing on boards that do not count boots.
pub fn arm(dev: &Device) -> Result<()> {
    let Some(bc) = dev.board.boot_counting else {
        return Ok(());
    };
    let id = default_id(dev)?;
    tracing::info!(trial = %id, tries = bc.tries, "arming the boot counter");
    write(dev, Some((&id, bc.tries)))
}

/// No deployment on trial (after `arbor rollback`: the new default was booted before).
pub fn disarm(dev: &Device) -> Result<()> {
    if dev.board.boot_counting.is_none() {
        return Ok(());
    }
    write(dev, None)
}

/// The default deployment proved itself: `boot.scr` without the trial, then
/// the state cleared.
pub fn mark_good(dev: &Device) -> Result<super::bootfiles::Rendered> {
    let files = super::bootfiles::render_trial(dev, None)?;
    crate::failpoint::hit("device::marked-good")?;
    write(dev, None)?;
    Ok(files)
}

/// Records that `failed` used up its boots while `running` runs, makes the
/// running deployment the default again (the failed one stays second, for
/// inspection; `arbor upgrade` will not deploy it again) and clears the state.
pub fn rolled_back(dev: &Device, failed: &DeploymentInfo, running: &DeploymentInfo) -> Result<Failed> {
    let tries = dev.board.boot_counting.map(|b| b.tries).unwrap_or(0);
    let record = Failed {
        commit: failed.commit.clone(),
        version: version(dev, &failed.commit),
        boots: tries,
        running: running.commit.clone(),
        detected_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let bytes = serde_json::to_vec_pretty(&record)?;
    crate::atomic::write_beneath(dev.sysroot.path(), FAILED_FILE, &bytes)
        .with_context(|| format!("recording the failed deployment in {FAILED_FILE}"))?;
    // Cleared before the reorder: ids are `<bootcsum>/<serial>`, and the
    // running deployment may take over the failed one's. Cut here, the
    // script finds no trial for its default and boots the previous one (the
    // running one) again; the next `arbor health` finishes from the record.
    write(dev, None)?;
    finish_rollback(dev, running)?;
    Ok(record)
}

/// Makes `running` the default again, the others after it in their order.
pub fn finish_rollback(dev: &Device, running: &DeploymentInfo) -> Result<()> {
    let n = dev.sysroot.deployments().len();
    let mut order = vec![running.index];
    order.extend((0..n).filter(|i| *i != running.index));
    dev.sysroot.reorder(&order)?;
    super::bootfiles::render(dev)?;
    Ok(())
}

/// The last recorded failed trial, if any.
pub fn last_failed(dev: &Device) -> Result<Option<Failed>> {
    let path = dev.sysroot.path().join(FAILED_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::input::read_text(&path, FAILED_FILE, 64 << 10)?;
    Ok(serde_json::from_str(&text).ok())
}

fn version(dev: &Device, commit: &str) -> Option<String> {
    dev.sysroot
        .repo()
        .commit_info(commit)
        .ok()
        .and_then(|i| i.metadata.get("version").cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_reads_back_what_arbor_and_uboot_write() {
        let blob = state_blob(Some(("arbor/abc/0", 3))).unwrap();
        let vars = uboot::parse_env_blob(&blob).unwrap();
        assert_eq!(
            parse(&vars),
            State {
                trial: Some("arbor/abc/0".into()),
                left: 3,
                unreadable: false
            }
        );
        // U-Boot's setexpr writes hex.
        let vars = BTreeMap::from([
            ("arbor_trial".to_string(), "x/y/0".to_string()),
            ("arbor_left".to_string(), "a".to_string()),
        ]);
        assert_eq!(parse(&vars).left, 10);
        let none = uboot::parse_env_blob(&state_blob(None).unwrap()).unwrap();
        assert_eq!(parse(&none).trial, None);
    }
}
