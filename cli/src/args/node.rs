//! The node-side verbs: `imgmode upgrade`, `switch`, `rollback`, `apply-machineconfig`,
//! `revert`, and `status`.

use std::path::PathBuf;

/// Options of the node-side verbs.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The sysroot (the root of an ostree system).
    #[arg(long, default_value = "/")]
    pub sysroot: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct UpgradeArgs {
    /// Only fetch the manifest and config; say whether an update is available.
    #[arg(long, conflicts_with = "apply")]
    pub check: bool,
    /// Reboot into the new deployment when one was staged.
    #[arg(long)]
    pub apply: bool,
    /// As the update timer runs it: when the node follows a local path it does not have (a
    /// disk written from a build machine's store), say so and succeed, as there is nothing to
    /// fetch.
    #[arg(long)]
    pub auto: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Debug, clap::Args)]
pub struct SwitchArgs {
    /// The image: a containers-transports(5) or ostree-ext reference.
    pub image: String,
    /// Reboot into the new deployment once it is staged.
    #[arg(long)]
    pub apply: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Debug, clap::Args)]
pub struct ApplyMachineconfigArgs {
    /// The MachineConfig (YAML or JSON); its spec.osImageURL must name a digest.
    pub file: PathBuf,
    /// Reboot into the new deployment once it is staged.
    #[arg(long)]
    pub apply: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// `rollback` and `revert`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Reboot into that deployment now.
    #[arg(long)]
    pub apply: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The sysroot to read (the root of an ostree system).
    #[arg(long, default_value = "/")]
    pub sysroot: PathBuf,
}
