//! Command-line definitions. No logic here: each verb parses its arguments and
//! calls into the library.

mod compose;
mod device;
mod image;
mod inspect;
mod layer;
mod publish;
mod sandbox;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// arbor composes RPM package sets into signed, atomically updatable OSTree
/// trees for ARM boards, publishes them with static deltas, writes flashable
/// SD-card images, and updates devices in the field.
#[derive(Debug, Parser)]
#[command(name = "arbor", version = crate::VERSION, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build server: resolve treefiles and compose OSTree commits from RPMs.
    #[command(subcommand)]
    Compose(compose::Compose),
    /// Inspect rpm-ostree treefiles.
    #[command(subcommand)]
    Treefile(compose::TreefileCmd),
    /// Write an ed25519 keypair in ostree's format.
    Keygen(publish::Keygen),
    /// Sign a commit with an ed25519 key (ostree's `ostree.sign.ed25519`).
    Sign(publish::Sign),
    /// Verify a commit's ed25519 signatures against trusted keys.
    Verify(publish::Verify),
    /// Generate static deltas between commits of a ref.
    Delta(publish::Delta),
    /// Publish a repository as static files for any web server.
    Publish(publish::Publish),
    /// Write or check single-file offline update bundles.
    #[command(subcommand)]
    Bundle(publish::Bundle),
    /// Write a flashable disk image for a board from a commit.
    Image(image::Image),
    /// Write an image to a block device (SD card), verifying what was written.
    Flash(image::Flash),
    /// Device: show the deployments on this system.
    Status(device::Status),
    /// Device: fetch and deploy the newest signed commit; the current one stays as fallback.
    Upgrade(device::Upgrade),
    /// Device: boot the previous deployment next time.
    Rollback(device::Rollback),
    /// Device, after each boot: check what booted, run the health checks,
    /// mark a new deployment good (or exit 3: reboot, the boot counter rolls back).
    Health(device::Health),
    /// Device: deploy a specific commit or version.
    Deploy(device::Deploy),
    /// Device: follow another ref (or variant) from now on, deploying its newest commit.
    Rebase(device::Rebase),
    /// Device: remove deployments no boot entry lists and unreferenced objects.
    Cleanup(device::Cleanup),
    /// Device: keep a deployment through upgrades and cleanups (or --unpin it).
    Pin(device::Pin),
    /// Device: show or change the update remote.
    #[command(subcommand)]
    Remote(device::Remote),
    /// Device: layer packages on top of the base commit (from the device's
    /// repositories, or .rpm files); kept across upgrades.
    Install(layer::Install),
    /// Device: remove layered packages.
    Uninstall(layer::Uninstall),
    /// Device: hide or replace packages of the base commit.
    #[command(subcommand)]
    Override(layer::Override),
    /// Run a command inside a tree, in the scriptlet sandbox (qemu-user for foreign arches).
    Run(sandbox::Run),
    /// Show an RPM package's header: name, version, dependencies, scriptlets.
    Pkg(inspect::Pkg),
    /// Check this host for what arbor needs: tools, kernel features, library versions.
    Doctor(inspect::Doctor),
}

impl Cli {
    /// Runs the chosen verb.
    pub fn run(self) -> Result<()> {
        match self.command {
            Command::Compose(c) => c.run(),
            Command::Treefile(c) => c.run(),
            Command::Keygen(c) => c.run(),
            Command::Sign(c) => c.run(),
            Command::Verify(c) => c.run(),
            Command::Delta(c) => c.run(),
            Command::Publish(c) => c.run(),
            Command::Bundle(c) => c.run(),
            Command::Image(c) => c.run(),
            Command::Flash(c) => c.run(),
            Command::Status(c) => c.run(),
            Command::Upgrade(c) => c.run(),
            Command::Rollback(c) => c.run(),
            Command::Health(c) => c.run(),
            Command::Deploy(c) => c.run(),
            Command::Rebase(c) => c.run(),
            Command::Cleanup(c) => c.run(),
            Command::Pin(c) => c.run(),
            Command::Remote(c) => c.run(),
            Command::Install(c) => c.run(),
            Command::Uninstall(c) => c.run(),
            Command::Override(c) => c.run(),
            Command::Run(c) => c.run(),
            Command::Pkg(c) => c.run(),
            Command::Doctor(c) => c.run(),
        }
    }
}

/// Prints `value` as pretty JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_and_verb_has_help() {
        fn walk(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if ["help", "version"].contains(&id) {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path} {id} has no --help text");
            }
            for sub in cmd.get_subcommands() {
                let p = format!("{path} {}", sub.get_name());
                assert!(sub.get_about().is_some(), "{p} has no description");
                walk(sub, &p);
            }
        }
        walk(&Cli::command(), "arbor");
    }
}
