//! `imgmode seed` and the cluster options it shares with `imgmode ibi post-pivot`.

use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum SeedCmd {
    /// Capture this running seed system as a seed image (run as root on the seed).
    #[command(
        after_help = "The cluster must be healthy: the --service units and etcd active, etcd \
answering, and the admin kubeconfig's server answering /readyz. The services are stopped, \
recert force-expires every certificate, /var, the /etc changes and the ostree repository \
are archived, and the image is written; then etcd and the services are started again with \
recert extend_expiration (unless --no-restore). An interrupted run resumes when run again."
    )]
    Create(SeedCreateArgs),
    /// Labels, seed cluster info and the file list (size, sha256) of a seed image.
    Inspect {
        /// A local name or a containers-transports(5) reference.
        image: String,
    },
    /// Check a seed against an image-based-installation-config.yaml before anything is fetched.
    Check(SeedCheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct SeedCheckArgs {
    pub image: String,
    /// The ImageBasedInstallationConfig.
    #[arg(long)]
    pub config: PathBuf,
    /// The installation has FIPS enabled.
    #[arg(long)]
    pub fips: bool,
    /// Target architecture as images name it, e.g. amd64 or arm64 (default: this machine's).
    #[arg(long, value_parser = oci_arch)]
    pub arch: Option<String>,
}

/// The cluster on this system: its units, etcd, the admin kubeconfig, recert's directories.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// A unit of the cluster, stopped while recert runs (repeatable; default kubelet.service,
    /// crio.service).
    #[arg(long = "service")]
    pub services: Vec<String>,
    /// etcd's unit (kept for recert, stopped for the capture); "" when etcd is not a unit.
    #[arg(long, default_value = "etcd.service")]
    pub etcd_service: String,
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub etcd_endpoint: String,
    /// The admin kubeconfig used for the health check.
    #[arg(long, default_value = "/etc/kubernetes/kubeconfig")]
    pub kubeconfig: PathBuf,
    /// Directories recert scans (repeatable; default /etc/kubernetes, /var/lib/kubelet,
    /// /etc/machine-config-daemon).
    #[arg(long = "static-dir")]
    pub static_dirs: Vec<PathBuf>,
    /// The cluster's EncryptionConfiguration (kube-apiserver's --encryption-provider-config)
    /// when it encrypts etcd values at rest: read and written with its aescbc/aesgcm keys.
    #[arg(long)]
    pub encryption_config: Option<PathBuf>,
}

impl ClusterArgs {
    /// The cluster: the library's defaults where no flag was given.
    pub fn cluster(self) -> imgmode_seed::cluster::Cluster {
        let mut o = imgmode_seed::cluster::Cluster::default();
        self.apply(&mut o);
        o
    }

    fn apply(self, o: &mut imgmode_seed::cluster::Cluster) {
        if !self.services.is_empty() {
            o.services = self.services;
        }
        o.etcd_service = Some(self.etcd_service).filter(|s| !s.is_empty());
        o.etcd_endpoint = self.etcd_endpoint;
        o.kubeconfig = self.kubeconfig;
        if !self.static_dirs.is_empty() {
            o.static_dirs = self.static_dirs;
        }
        o.encryption_config = self.encryption_config;
    }
}

#[derive(Debug, clap::Args)]
pub struct SeedCreateArgs {
    /// Where the seed image goes: a local name, oci:DIR[:TAG], oci-archive:FILE, docker://...
    #[arg(long)]
    pub output: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Tarball compression: gzip[:1-9] (default gzip:2, readable by lifecycle-agent) or
    /// zstd[:1-19].
    #[arg(long, default_value = "gzip:2")]
    pub compression: String,
    /// Archives and checkpoints: a directory only root can use (made 0700; an existing one
    /// that is a symlink, not root's, or open to others is refused).
    #[arg(long, default_value = imgmode_seed::create::DEFAULT_WORK_DIR)]
    pub work_dir: PathBuf,
    /// Leave the cluster services and etcd stopped and the certificates expired (etcd runs a
    /// moment at the end to take back the seed system's own pull secret).
    #[arg(long)]
    pub no_restore: bool,
    /// Skip recert (the certificates are captured as they are).
    #[arg(long)]
    pub skip_recert: bool,
    /// Make a seed of an installed copy of a seed (a system post-pivot configured for a site);
    /// refused otherwise, since that site's settings would travel with it.
    #[arg(long)]
    pub allow_installed_copy: bool,
}

impl SeedCreateArgs {
    /// The capture's options; `exe` is this binary (the seed's post-pivot unit runs it).
    pub fn opts(self, exe: PathBuf) -> Result<imgmode_seed::create::CreateOpts> {
        let mut o = imgmode_seed::create::CreateOpts::new(
            &self.output,
            exe,
            &format!("imgmode {}", env!("CARGO_PKG_VERSION")),
        );
        self.cluster.apply(&mut o.cluster);
        o.compression = self.compression.parse()?;
        o.work_dir = self.work_dir;
        o.restore = !self.no_restore;
        o.recert = !self.skip_recert;
        o.allow_installed_copy = self.allow_installed_copy;
        Ok(o)
    }
}

/// `--arch`: an OCI architecture name, or a usage error naming the known ones.
fn oci_arch(s: &str) -> Result<String, String> {
    imgmode_support::validate::oci_architecture(s)
        .map(|()| s.to_string())
        .map_err(|p| format!("{s:?} {p}"))
}
