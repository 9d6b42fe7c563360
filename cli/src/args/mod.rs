//! The command line: clap's definitions of every verb and its arguments.

pub mod base;
pub mod format;
pub mod ibi;
pub mod image;
pub mod internal;
pub mod layering;
pub mod node;
pub mod payload;
pub mod recert;
pub mod seed;

use crate::output::OutputFormat;
use base::{BaseCmd, DiskArgs};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use format::FormatValue;
use ibi::{IbiCmd, InstallFromIsoArgs, IsoArgs};
use image::ImageCmd;
use internal::InternalCmd;
use layering::{BuildArgs, ContainerArgs, LayerCmd, PushArgs};
use node::{ApplyArgs, ApplyMachineconfigArgs, StatusArgs, SwitchArgs, UpgradeArgs};
use payload::{MirrorArgs, PayloadCmd};
use recert::RecertArgs;
use seed::SeedCmd;
use std::ffi::OsString;
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
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The options every verb takes.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Hide progress output.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// How results are printed (default: human).
    #[arg(long, global = true, value_name = "FORMAT", value_parser = format::output_format())]
    pub format: Option<FormatValue>,
}

impl GlobalArgs {
    /// The output format: `--format`'s, human when none was given.
    pub fn output_format(&self) -> OutputFormat {
        match self.format {
            Some(FormatValue::Output(f)) => f,
            _ => OutputFormat::Human,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The default base image, built from Debian packages.
    #[command(subcommand)]
    Base(BaseCmd),
    /// Write a bootable disk image (raw, qcow2, vmdk, vhd, ami, gce) from a bootable container image.
    #[command(
        after_help = "Example: imgmode disk imgmode-base --format qcow2 -o disk.qcow2\n\nFormats: raw; qcow2; vmdk (streamOptimized, for vSphere); vhd (fixed, 1 MiB-aligned, for Azure); ami (raw of whole GiB, for AWS import-snapshot); gce (disk.raw in a gzipped oldgnu tar, for Google Compute Engine). --config takes bootc-image-builder's config.toml or config.json: users (password, key, groups), groups, filesystem minsize for / and /boot, kernel append; any other key is refused."
    )]
    Disk(DiskArgs),
    /// An unattended installer ISO for a bootable image: its live system writes the image
    /// onto the disk the config names and reboots into it.
    #[command(
        after_help = "Example: imgmode iso imgmode-base --config config.toml -o install.iso\n\nThe image is written as a disk image with imgmode disk's customizations (users, groups, filesystem minsize, kernel append from --config, --karg) and carried compressed on the ISO with its SHA-256. Booted (BIOS or UEFI, as a CD or written to a USB disk), the live system runs imgmode install-from-iso: the disk named by installation-disk under [customizations.installer] (else the machine's one disk that could be a target) is refused while anything uses it, written, checked, its root partition and filesystem grown to the end of the disk, and the machine reboots into it."
    )]
    Iso(IsoArgs),
    /// Install what an `imgmode iso` ISO carries onto a disk (its live system runs this).
    #[command(
        after_help = "The disk is --disk, else the one the ISO's config names, else the machine's one disk that is not read-only, removable, in use or virtual (several are refused, named). It is held exclusively and refused while anything uses it or when smaller than the disk image; the image is checked against its SHA-256 as it is written (a mismatch leaves the disk blank), then the root partition and filesystem grow to the end of the disk."
    )]
    InstallFromIso(InstallFromIsoArgs),
    /// List the images in the local store.
    Images,
    /// Build a bootable image from a Containerfile (podman), lint it, store it.
    #[command(
        after_help = "Example: imgmode build -f containerfiles/layered/rsyslog/Containerfile \
-t rsyslog containerfiles/layered/rsyslog\n\nFROM may name an image of the local store \
(FROM imgmode-base); it is handed to podman as localhost/NAME:TAG."
    )]
    Build(BuildArgs),
    /// Copy an image to any transport (e.g. docker://registry/repo:tag), or into the local
    /// store when DEST is a plain name.
    Push(PushArgs),
    /// Fetch and stage the image the booted deployment follows.
    Upgrade(UpgradeArgs),
    /// Stage a deployment of another image, and follow it for upgrades.
    Switch(SwitchArgs),
    /// Boot the previous deployment next; a staged deployment is dropped.
    Rollback(ApplyArgs),
    /// Apply a MachineConfig's spec.osImageURL (by digest) to this node.
    ApplyMachineconfig(ApplyMachineconfigArgs),
    /// The applied MachineConfig was deleted: return to the image the node ran before it.
    Revert(ApplyArgs),
    /// Image mode objects: build a MachineOSConfig into a MachineOSBuild.
    #[command(subcommand)]
    Layer(LayerCmd),
    /// Seed images (lifecycle-agent format): create on a seed system, inspect, check.
    #[command(subcommand)]
    Seed(SeedCmd),
    /// Image-based installation: install a seed onto a disk (run by the installation ISO).
    #[command(subcommand)]
    Ibi(IbiCmd),
    /// Release payloads (mirror directories): check them.
    #[command(subcommand)]
    Payload(PayloadCmd),
    /// One image's contents.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Write images into the distribution (registry v2) filesystem layout that a stock
    /// registry serves (docker-registry's storage.filesystem.rootdirectory = DIR).
    #[command(
        after_help = "IMAGE is a registry reference (quay.io/org/img:tag, docker://..., \
...@sha256:...; its repository is the path without the registry) or REF=REPO[:TAG] for any \
transport (oci:DIR, oci-archive:F, containers-storage:...). Manifest lists are kept. Every \
manifest is read and the space checked before anything is written; blobs already in DIR are \
not fetched again, an interrupted run resumes, every blob's size and digest are checked before \
a repository links to it."
    )]
    Mirror(MirrorArgs),
    /// Show the booted, staged and rollback deployments.
    Status(StatusArgs),
    /// Regenerate every certificate, key and JWT of a cluster copy and rename it.
    #[command(
        after_help = "Configuration comes from these flags or from the YAML/JSON file \
named by RECERT_CONFIG, never both. Example: imgmode recert --etcd-endpoint \
http://127.0.0.1:2379 --static-dir /etc/kubernetes --cluster-rename new:example.org \
--summary-file /var/tmp/recert-summary.yaml"
    )]
    Recert(RecertArgs),
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
    /// Install the manual pages and the bash, zsh and fish completions under PREFIX/share
    /// (what `cargo install` leaves out; the base image has them under /usr).
    InstallExtras {
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
    },
    /// Internal verbs for tests, benchmarks and fixtures.
    #[command(subcommand, hide = true)]
    Internal(InternalCmd),
    /// `container lint IMAGE`; any other arguments go to ostree-ext's container commands
    /// (what `ostree container ...` runs).
    #[command(disable_help_flag = true)]
    Container(ContainerArgs),
}

impl Command {
    /// The verb as typed when its output has one form, so that it takes no `--format`.
    fn one_output_form(&self) -> Option<&'static str> {
        Some(match self {
            Command::Push(_) => "push",
            Command::Seed(SeedCmd::Check(_)) => "seed check",
            Command::Payload(PayloadCmd::Remove { .. }) => "payload remove",
            Command::Ibi(IbiCmd::PostPivot(_)) => "ibi post-pivot",
            Command::Completions { .. } => "completions",
            Command::InstallExtras { .. } => "install-extras",
            Command::Internal(c) => c.verb(),
            Command::Container(a) if !a.is_lint() => "container",
            _ => return None,
        })
    }
}

impl Cli {
    /// Parse a command line (`argv[0]` first). Besides what clap refuses, a usage error (exit
    /// 2) for a `--format` given to a verb that prints one form of output, which would
    /// otherwise be ignored.
    pub fn parse_args(args: &[OsString]) -> Result<Cli, clap::Error> {
        let cli = Cli::try_parse_from(args)?;
        let refused = match (&cli.command, cli.global.format) {
            (
                Command::Disk(DiskArgs {
                    format: FormatValue::Output(f),
                    ..
                }),
                _,
            ) => Some(format!(
                "--format {}: imgmode disk has one form of output; its own --format, after the \
                 verb, is the disk image format (raw, qcow2, vmdk, vhd, ami or gce)",
                name(*f)
            )),
            // both given: clap keeps disk's own value, so the global one is caught as typed
            (Command::Disk(_), _) if global_format_before(args, "disk") => Some(
                "--format before disk: imgmode disk has one form of output; its own --format, \
                 after the verb, is the disk image format (raw, qcow2, vmdk, vhd, ami or gce)"
                    .to_string(),
            ),
            (c, Some(FormatValue::Output(f))) => c.one_output_form().map(|verb| {
                format!(
                    "--format {}: imgmode {verb} has one form of output and takes no --format",
                    name(f)
                )
            }),
            _ => None,
        };
        match refused {
            Some(msg) => Err(Cli::command().error(ErrorKind::ArgumentConflict, msg)),
            None => Ok(cli),
        }
    }
}

/// Whether `--format` was typed before the first `verb` argument (as a global option).
/// A flag naming a file that must exist (credentials, keys): a missing one is a usage error
/// naming it, not a surprise later (or never, when the flag is only read on some paths).
pub fn existing_file(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() => Ok(p),
        Ok(_) => Err(format!("{s} is not a file")),
        Err(e) => Err(format!("{s}: {e}")),
    }
}

/// A flag naming a directory that must exist (CA certificates).
pub fn existing_dir(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    match std::fs::metadata(&p) {
        Ok(m) if m.is_dir() => Ok(p),
        Ok(_) => Err(format!("{s} is not a directory")),
        Err(e) => Err(format!("{s}: {e}")),
    }
}

fn global_format_before(args: &[OsString], verb: &str) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| a.as_os_str() != verb)
        .filter_map(|a| a.to_str())
        .any(|a| a == "--format" || a.starts_with("--format="))
}

/// An output format as typed.
fn name(f: OutputFormat) -> String {
    f.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
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
        let err = Cli::try_parse_from(["imgmode", "disk", "x", "-o", "y", "--format", "vdi"])
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("vdi"));
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        Cli::parse_args(&args)
    }

    #[test]
    fn format_is_global_and_keeps_disks_own() {
        for args in [
            &["imgmode", "images", "--format", "json"][..],
            &["imgmode", "--format", "json", "images"][..],
        ] {
            let cli = parse(args).unwrap();
            assert_eq!(cli.global.output_format(), OutputFormat::Json, "{args:?}");
        }
        let cli = parse(&["imgmode", "disk", "x", "-o", "y", "--format", "raw"]).unwrap();
        let Command::Disk(d) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(
            d.format,
            FormatValue::Disk(imgmode_os::disk::DiskFormat::Raw)
        );
        assert_eq!(cli.global.output_format(), OutputFormat::Human);
        let err = parse(&[
            "imgmode", "--format", "json", "disk", "x", "-o", "y", "--format", "raw",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--format before disk"), "{err}");
        let err = parse(&["imgmode", "--format", "json", "disk", "x", "-o", "y"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("imgmode disk"), "{err}");
    }

    #[test]
    fn verbs_with_one_output_form_refuse_format() {
        for args in [
            &["imgmode", "push", "a", "b", "--format", "json"][..],
            &[
                "imgmode", "--format", "yaml", "seed", "check", "s", "--config", "c",
            ][..],
            &["imgmode", "internal", "man-pages", "d", "--format", "human"][..],
            &["imgmode", "completions", "bash", "--format", "json"][..],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert!(err.to_string().contains("takes no --format"), "{err}");
        }
        parse(&["imgmode", "push", "a", "b"]).unwrap();
        parse(&["imgmode", "container", "lint", "x", "--format", "json"]).unwrap();
    }

    /// Every `imgmode` command a guide shows parses with today's flags, so renaming or
    /// removing a documented flag fails this test (`docs/guide/`, shown and run blocks alike).
    #[test]
    fn every_imgmode_command_in_the_guides_parses() {
        use imgmode_testkit::guide;
        let blocks = guide::all(&guide::dir()).unwrap();
        let mut checked = 0;
        for b in blocks.iter().filter(|b| b.is_shell()) {
            for cmd in guide::commands(&b.text) {
                let words = shlex::split(&cmd)
                    .unwrap_or_else(|| panic!("{}: unbalanced quotes in {cmd}", b.place()));
                // the first command, without `sudo` or VAR=value in front
                let words: Vec<&str> = words
                    .iter()
                    .map(String::as_str)
                    .skip_while(|w| *w == "sudo" || (w.contains('=') && !w.starts_with('-')))
                    .take_while(|w| {
                        !matches!(*w, "|" | "||" | "&&" | ";")
                            && !w.starts_with('>')
                            && !w.starts_with("2>")
                    })
                    .collect();
                if words.first() != Some(&"imgmode") {
                    continue;
                }
                if let Err(e) = Cli::try_parse_from(&words) {
                    use clap::error::ErrorKind::*;
                    // a file the example names need not exist here
                    let absent_file = e.kind() == ValueValidation
                        && e.to_string().contains("No such file or directory");
                    assert!(
                        matches!(e.kind(), DisplayHelp | DisplayVersion) || absent_file,
                        "{}: `{cmd}` does not parse: {e}",
                        b.place()
                    );
                }
                checked += 1;
            }
        }
        assert!(
            checked >= 35,
            "only {checked} imgmode commands in the guides"
        );
    }
}
