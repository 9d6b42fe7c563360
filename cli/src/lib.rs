//! The `imgmode` command line: argument parsing and dispatch into the library crates.
//!
//! This is the only crate that reads ambient state (environment, current directory, the
//! running executable's path) and turns it into explicit options for the libraries.

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use imgmode_builder::partition::{parse_size, Firmware, RootFs};
use imgmode_builder::{base, disk, Steps, Store};
use serde::Serialize;
use std::path::PathBuf;

/// Build, deploy and test image-mode (bootc/ostree) operating systems.
#[derive(Debug, Parser)]
#[command(name = "imgmode", version, max_term_width = 80)]
#[command(
    after_help = "Local images are named without a transport (imgmode-base); every other \
image is a containers-transports(5) reference (docker://, oci:, oci-archive:, \
containers-storage:, dir:).\n\nEnvironment: IMGMODE_STATE_DIR (default /var/lib/imgmode), \
IMGMODE_CACHE_DIR (default /var/cache/imgmode), RUST_LOG."
)]
pub struct Cli {
    /// Hide progress output.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// How data is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Human,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The default base image, built from Debian packages.
    #[command(subcommand)]
    Base(BaseCmd),
    /// Write a bootable raw or qcow2 disk image from a bootable container image.
    #[command(after_help = "Example: imgmode disk imgmode-base --format qcow2 -o disk.qcow2")]
    Disk(DiskArgs),
    /// List the images in the local store.
    Images {
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// Show the booted, staged and rollback deployments.
    Status {
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
        /// The sysroot to read (the root of an ostree system).
        #[arg(long, default_value = "/")]
        sysroot: PathBuf,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
    /// ostree-ext's container commands (`ostree container ...` runs these).
    #[command(hide = true, disable_help_flag = true)]
    Container {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BaseCmd {
    /// Build the base image (mmdebstrap, ostree commit, ostree-ext encapsulation).
    Build {
        /// Directory with image.yaml, packages.txt and overlay/.
        #[arg(long, default_value = "containerfiles/base")]
        definition: PathBuf,
        /// Rebuild even if every input is unchanged.
        #[arg(long)]
        force: bool,
        /// Also copy the image to containers-storage (for podman and buildah).
        #[arg(long)]
        to_containers_storage: bool,
        /// Compress layers at gzip's default level (smaller, ~4x slower) instead of
        /// the fastest level.
        #[arg(long)]
        max_compression: bool,
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
}

#[derive(Debug, clap::Args)]
pub struct DiskArgs {
    /// The bootable image: a local name or a containers-transports(5) reference.
    pub image: String,
    /// Disk image format.
    #[arg(long, value_enum, default_value = "qcow2")]
    pub format: disk::DiskFormat,
    /// Output path.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Disk size (e.g. 10G); default 10G or what the image needs.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Extra kernel argument (repeatable).
    #[arg(long = "karg")]
    pub kargs: Vec<String>,
    /// Root filesystem type.
    #[arg(long, value_enum, default_value = "ext4")]
    pub root_fs: RootFs,
    /// Firmware the disk must boot from.
    #[arg(long, value_enum, default_value = "both")]
    pub firmware: Firmware,
    /// OpenSSH public key file for root.
    #[arg(long)]
    pub root_ssh_key: Option<PathBuf>,
    /// crypt(3) password hash for root (e.g. from `openssl passwd -6`).
    #[arg(long)]
    pub root_password_hash: Option<String>,
    /// Image reference recorded for upgrades (default: IMAGE).
    #[arg(long)]
    pub target_imgref: Option<String>,
    /// Replace the output if it exists.
    #[arg(long)]
    pub force: bool,
}

fn print<T: Serialize>(
    format: OutputFormat,
    value: &T,
    human: impl FnOnce(&T) -> String,
) -> Result<()> {
    match format {
        OutputFormat::Human => print!("{}", human(value)),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
        OutputFormat::Yaml => print!("{}", serde_yaml::to_string(value)?),
    }
    Ok(())
}

fn store() -> Store {
    Store::new(imgmode_builder::store::state_dir_from_env())
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let steps = || Steps::new(cli.quiet);
    match cli.command {
        Command::Base(BaseCmd::Build {
            definition,
            force,
            to_containers_storage,
            max_compression,
            format,
        }) => {
            let opts = base::BuildOpts {
                definition,
                store: store(),
                cache_dir: imgmode_builder::store::cache_dir_from_env(),
                imgmode_binary: std::env::current_exe().context("locating the imgmode binary")?,
                force,
                to_containers_storage,
                max_compression,
            };
            let out = base::build(&opts, &steps())?;
            print(format, &out, |o| {
                format!(
                    "{} {}\n  reference: {}\n  digest: {}\n  commit: {}\n  version: {}\n",
                    o.name,
                    if o.cached { "(cached)" } else { "(built)" },
                    o.reference,
                    o.digest,
                    o.commit,
                    o.version
                )
            })
        }
        Command::Disk(a) => {
            let opts = disk::DiskOpts {
                image: a.image,
                output: a.output,
                format: a.format,
                size: a.size,
                kargs: a.kargs,
                root_fs: a.root_fs,
                firmware: a.firmware,
                root_ssh_key: a.root_ssh_key,
                root_password_hash: a.root_password_hash,
                target_imgref: a.target_imgref,
                force: a.force,
                store: store(),
                cache_dir: imgmode_builder::store::cache_dir_from_env(),
            };
            let out = disk::build(&opts, &steps())?;
            println!(
                "wrote {} ({:?}, {} allocated) from {}",
                out.output.display(),
                out.format,
                imgmode_builder::partition::human_size(out.bytes_written),
                out.image_digest
            );
            Ok(())
        }
        Command::Images { format } => {
            let list = store().list()?;
            print(format, &list, |l| {
                let mut s = String::new();
                for i in l {
                    s.push_str(&format!("{:<32} {}\n", i.name, i.digest));
                }
                s
            })
        }
        Command::Status { format, sysroot } => {
            let st = imgmode_builder::ostree::sysroot_status(&sysroot)?;
            print(format, &st, |s| s.to_human())
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "imgmode",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Container { args } => {
            let argv = std::iter::once("ostree-container".into())
                .chain(std::iter::once("container".into()))
                .chain(args);
            ostree_container(argv)
        }
    }
}

/// Run ostree-ext's CLI (what `ostree container ...` execs).
pub fn ostree_container<I>(argv: I) -> Result<()>
where
    I: IntoIterator<Item = std::ffi::OsString>,
{
    let argv: Vec<std::ffi::OsString> = argv.into_iter().collect();
    imgmode_builder::ostree::block_on(ostree_ext::cli::run_from_iter(argv))?
}

/// The process entry point: returns the exit code.
pub fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .compact()
        .init();
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    // Installed as /usr/libexec/libostree/ext/ostree-container, ostree hands us its
    // `ostree container ...` command line.
    let result = if PathBuf::from(&argv0)
        .file_name()
        .is_some_and(|n| n == "ostree-container")
    {
        ostree_container(std::iter::once(argv0).chain(args))
    } else {
        run(Cli::parse())
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_fits_80_columns() {
        let mut cmd = Cli::command();
        let check = |c: &mut clap::Command| {
            let help = c.render_long_help().to_string();
            for line in help.lines() {
                assert!(line.chars().count() <= 80, "{}: {line:?}", c.get_name());
            }
        };
        check(&mut cmd);
        for sub in cmd.get_subcommands_mut() {
            check(sub);
        }
    }

    #[test]
    fn unknown_disk_format_is_a_usage_error() {
        let err = Cli::try_parse_from(["imgmode", "disk", "x", "-o", "y", "--format", "vmdk"])
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("vmdk"));
    }
}
