//! `imgmode image` and how registries are reached.

use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Unpack an image's merged root filesystem into a new directory (like `umoci unpack`):
    /// layers in order, OCI whiteouts applied, owners and setuid bits kept when run as root.
    #[command(
        after_help = "IMAGE is a local image name or any transport reference (oci:DIR, \
docker://..., containers-storage:...). Every layer's size and digest are verified while it \
streams; every entry goes through imgmode's hardened extractor (nothing is written outside DIR; \
hostile archives are refused by name). DIR must not exist or be empty: the image is unpacked \
beside it and renamed into place only when complete."
    )]
    Unpack(UnpackArgs),
}

#[derive(Debug, clap::Args)]
pub struct UnpackArgs {
    pub image: String,
    pub dir: PathBuf,
    /// Refuse to unpack more than this (e.g. 20G); default: the free space where DIR goes.
    #[arg(long, value_name = "SIZE", value_parser = imgmode_support::size::parse_size)]
    pub max_size: Option<u64>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// How to reach registries: credentials and trusted CAs (skopeo's `--authfile`, `--cert-dir`).
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Registry credentials (a pull secret or containers-auth.json).
    #[arg(long, value_parser = crate::args::existing_file)]
    authfile: Option<PathBuf>,
    /// A directory of CA certificates (*.crt) trusted for the registries.
    #[arg(long, value_parser = crate::args::existing_dir)]
    cert_dir: Option<PathBuf>,
}

impl From<RegistryArgs> for imgmode_image::skopeo::RegistryAuth {
    fn from(a: RegistryArgs) -> Self {
        Self {
            authfile: a.authfile,
            cert_dir: a.cert_dir,
            tls_verify: None,
        }
    }
}
