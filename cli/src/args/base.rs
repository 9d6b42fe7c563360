//! `imgmode base` and `imgmode disk`.

use crate::args::format::{self, FormatValue};
use anyhow::{bail, Result};
use clap::Subcommand;
use imgmode_image::Store;
use imgmode_os::partition::{Firmware, RootFs};
use imgmode_os::{base, disk};
use imgmode_support::size::parse_size;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum BaseCmd {
    /// Build the base image (mmdebstrap, ostree commit, ostree-ext encapsulation).
    Build(BaseBuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct BaseBuildArgs {
    /// Directory with image.yaml, packages.txt and overlay/.
    #[arg(long, default_value = "containerfiles/base")]
    pub definition: PathBuf,
    /// Rebuild even if every input is unchanged.
    #[arg(long)]
    pub force: bool,
    /// Also copy the image to containers-storage (for podman and buildah).
    #[arg(long)]
    pub to_containers_storage: bool,
    /// Compress layers at gzip's default level (smaller, ~4x slower) instead of
    /// the fastest level.
    #[arg(long)]
    pub max_compression: bool,
    /// Reuse the image at this containers-transports reference (docker://…, oci:DIR…) when it
    /// was built from the same inputs (its org.imgmode.base.inputs label), instead of
    /// building: a CI job's build, pulled by the shards. Not there, or other inputs: builds.
    #[arg(long, value_name = "REF")]
    pub cache_from: Option<String>,
}

impl BaseBuildArgs {
    /// The build's options; `imgmode_binary` is the binary layered into the image, with
    /// `usr_files` (its manual pages and completions).
    pub fn opts(
        self,
        store: Store,
        cache_dir: PathBuf,
        imgmode_binary: PathBuf,
        usr_files: Vec<(PathBuf, Vec<u8>)>,
    ) -> base::BuildOpts {
        base::BuildOpts {
            definition: self.definition,
            store,
            cache_dir,
            imgmode_binary,
            usr_files,
            force: self.force,
            to_containers_storage: self.to_containers_storage,
            max_compression: self.max_compression,
            cache_from: self.cache_from,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct DiskArgs {
    /// The bootable image: a local name or a containers-transports(5) reference.
    pub image: String,
    /// Disk image format.
    #[arg(long, value_parser = format::disk_format(), default_value = "qcow2")]
    pub format: FormatValue,
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
    /// bootc-image-builder build configuration (config.toml or config.json): users, groups,
    /// filesystem minsize for / and /boot, kernel append.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Image reference recorded for upgrades (default: IMAGE).
    #[arg(long)]
    pub target_imgref: Option<String>,
    /// Replace the output if it exists.
    #[arg(long)]
    pub force: bool,
}

impl DiskArgs {
    /// The disk's options (an output format given as the global `--format` is refused when the
    /// command line is parsed).
    pub fn opts(self, store: Store, cache_dir: PathBuf) -> Result<disk::DiskOpts> {
        let FormatValue::Disk(format) = self.format else {
            bail!("imgmode disk: --format is the disk image format (raw, qcow2, vmdk, vhd, ami or gce)");
        };
        Ok(disk::DiskOpts {
            image: self.image,
            output: self.output,
            format,
            size: self.size,
            kargs: self.kargs,
            root_fs: self.root_fs,
            firmware: self.firmware,
            root_ssh_key: self.root_ssh_key,
            root_password_hash: self.root_password_hash,
            config: self.config,
            target_imgref: self.target_imgref,
            for_installer: false,
            force: self.force,
            store,
            cache_dir,
        })
    }
}
