//! `imgmode build`, `push`, `layer` and `container`.

use crate::output::OutputFormat;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use imgmode_image::Store;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The Containerfile (default: CONTEXT/Containerfile).
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Local store name of the result (default: the context directory's name).
    #[arg(long, short = 't')]
    pub tag: Option<String>,
    /// KEY=VALUE for an ARG of the Containerfile (repeatable).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Store the image even when a fatal lint fails.
    #[arg(long)]
    pub allow_lint_failure: bool,
    /// Do not use podman's layer cache.
    #[arg(long)]
    pub no_cache: bool,
    /// The build context directory.
    #[arg(default_value = ".")]
    pub context: PathBuf,
}

impl BuildArgs {
    /// The build's options (the tag defaults to the context directory's name).
    pub fn opts(self, store: Store) -> Result<imgmode_layering::build::BuildOpts> {
        let tag = match self.tag {
            Some(t) => t,
            None => default_tag(&self.context)?,
        };
        Ok(imgmode_layering::build::BuildOpts {
            containerfile: self
                .file
                .unwrap_or_else(|| self.context.join("Containerfile")),
            context: self.context,
            tag,
            build_args: self.build_args,
            store,
            no_lint_fail: self.allow_lint_failure,
            no_cache: self.no_cache,
        })
    }
}

/// The default `-t` of `imgmode build`: the context directory's name, made a valid local name.
fn default_tag(context: &Path) -> Result<String> {
    let abs = std::fs::canonicalize(context)
        .with_context(|| format!("the build context {} does not exist", context.display()))?;
    let name: String = abs
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if imgmode_image::imgref::is_local_name(&name) {
        Ok(name)
    } else {
        anyhow::bail!(
            "cannot name the image after {}; pass -t NAME",
            abs.display()
        )
    }
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// A local name or a containers-transports(5) reference.
    pub src: String,
    /// Destination reference (docker://, oci:, oci-archive:, dir:, ...).
    pub dest: String,
    /// Require HTTPS and verify certificates (registries).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// Write the pushed manifest digest to this file.
    #[arg(long)]
    pub digestfile: Option<PathBuf>,
    /// Copy every blob byte for byte, so the image keeps its digest (skopeo's
    /// --preserve-digests); without it an uncompressed layer is gzip-compressed on the way,
    /// as skopeo does. A seed's layer is uncompressed on purpose: its tarballs are compressed.
    #[arg(long)]
    pub preserve_digests: bool,
}

#[derive(Debug, Subcommand)]
pub enum LayerCmd {
    /// Build the image a MachineOSConfig describes, push it, write its MachineOSBuild.
    #[command(
        after_help = "FROM configs is the base image with the pool's rendered MachineConfigs \
(files, systemd units, kernel arguments from --machineconfigs) applied. The MachineOSBuild \
<config>-<hash>.yaml in --output-dir records the state (Prepared, Building, Succeeded, \
Interrupted, Failed) and status.currentImagePullSpec."
    )]
    Build(LayerBuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct LayerBuildArgs {
    /// The MachineOSConfig YAML.
    pub config: PathBuf,
    /// The base image (local name or transport reference).
    #[arg(long)]
    pub base: String,
    /// Directory of MachineConfig and MachineConfigPool YAML files.
    #[arg(long)]
    pub machineconfigs: Option<PathBuf>,
    /// Where MachineOSBuild objects are written.
    #[arg(long, default_value = ".")]
    pub output_dir: PathBuf,
    /// Require HTTPS and verify certificates when pushing.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// Registry credentials for the push (the push secret as a containers-auth.json).
    #[arg(long, value_parser = crate::args::existing_file)]
    pub authfile: Option<PathBuf>,
}

impl LayerBuildArgs {
    pub fn opts(self, store: Store) -> imgmode_layering::machineos::LayerBuildOpts {
        imgmode_layering::machineos::LayerBuildOpts {
            config: self.config,
            base: self.base,
            machineconfigs: self.machineconfigs,
            output_dir: self.output_dir,
            store,
            tls_verify: self.tls_verify,
            authfile: self.authfile,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ContainerArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

impl ContainerArgs {
    /// `container lint ...`, which imgmode runs itself (the rest goes to ostree-ext).
    pub fn is_lint(&self) -> bool {
        self.args.first().is_some_and(|a| a == "lint")
    }

    /// The arguments of `container lint`, parsed; a usage error exits as clap's do.
    pub fn lint_args(self) -> LintArgs {
        let argv = std::iter::once(OsString::from("imgmode container lint"))
            .chain(self.args.into_iter().skip(1));
        LintArgs::try_parse_from(argv).unwrap_or_else(|e| e.exit())
    }
}

/// `imgmode container lint`.
#[derive(Debug, Parser)]
#[command(name = "imgmode container lint", max_term_width = 80)]
pub struct LintArgs {
    /// The image: a local name or a containers-transports(5) reference.
    #[arg(required_unless_present_any = ["rootfs", "list"])]
    pub image: Option<String>,
    /// Lint a root directory instead (e.g. / as the last RUN of a Containerfile).
    #[arg(long, conflicts_with = "image")]
    pub rootfs: Option<PathBuf>,
    /// Exit 0 although a fatal lint failed.
    #[arg(long)]
    pub no_fail: bool,
    /// List the lints and exit.
    #[arg(long, conflicts_with_all = ["image", "rootfs", "no_fail"])]
    pub list: bool,
    // Parsed apart from imgmode's command line (`container` takes its arguments verbatim), so
    // it has a --format of its own; imgmode's global --format (before `container`) is the default.
    /// Output format (default: human).
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
}
