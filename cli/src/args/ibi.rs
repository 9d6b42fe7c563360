//! `imgmode ibi`: image-based installation.

use crate::args::seed::ClusterArgs;
use clap::Subcommand;
use imgmode_ibi::config::ImageBasedInstallationConfig;
use imgmode_image::Store;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum IbiCmd {
    /// The configuration ISO (volume cluster-config) from DIR's install-config.yaml and
    /// image-based-config.yaml, plus DIR/auth/kubeconfig and DIR/auth/kubeadmin-password.
    #[command(
        after_help = "Secrets: the ISO (signer keys, the pull secret, the kubeadmin password's \
hash) and DIR/auth/ (the admin kubeconfig and the kubeadmin password) are written for their \
owner only (0600, auth/ 0700); keep them so, and delete the ISO once the host is installed."
    )]
    CreateConfigImage {
        #[arg(long)]
        dir: PathBuf,
    },
    /// First boot of an installed seed copy (imgmode-post-pivot.service): wait for the
    /// cluster-config ISO, set up the host, recert (rename, new keys), start the cluster.
    PostPivot(PostPivotArgs),
    /// Install the seed of an image-based-installation-config.yaml onto its installationDisk.
    #[command(
        after_help = "Every check runs before the disk is touched: the config, the disk (exists, \
a whole disk, nothing mounted, swap or device-mapper/md on it, big enough; held exclusively \
until it is wiped), and the seed's gates read from its labels. Then the disk is cleaned \
(unless skipDiskCleanup), partitioned (with the extra partition for container storage), the \
seed's ostree commit deployed with its kernel arguments and origin, var.tgz, etc.tgz and \
etc.deletions restored, containers.list precached and GRUB installed. The state file says \
which step runs, or failed and why."
    )]
    Install(InstallArgs),
    /// The installation ISO: a live system (the base image, run from the ISO) that installs
    /// the seed of an image-based-installation-config.yaml onto its installationDisk at boot.
    #[command(
        after_help = "Writes DIR/imgmode-ibi.iso, bootable from BIOS and UEFI, as a CD or written \
to a USB disk (hybrid). The live system carries the config (pull secret, trust bundle), sshKey \
for root, imageDigestSources as registries.conf mirrors and the proxy, and runs `imgmode ibi \
install --reboot` from imgmode-ibi-install.service with the progress on the console. With \
--embed-seed the seed is copied into the ISO and installed from there (no registry needed). \
Secrets: the ISO holds the pull secret (and with --payload the registry's TLS key and \
credentials), so it is written for its owner only (0600)."
    )]
    CreateImage(CreateImageArgs),
}

#[derive(Debug, clap::Args)]
pub struct PostPivotArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Seconds to wait for the configuration ISO before failing (the unit restarts).
    #[arg(long, default_value_t = 300)]
    pub wait: u64,
    #[arg(long, default_value = imgmode_seed::postpivot::STATE_DIR)]
    pub state_dir: PathBuf,
    #[arg(long, default_value = "/run/imgmode-post-pivot/config")]
    pub mount_dir: PathBuf,
}

impl From<PostPivotArgs> for imgmode_seed::postpivot::PostPivotOpts {
    fn from(a: PostPivotArgs) -> Self {
        Self {
            cluster: a.cluster.cluster(),
            state_dir: a.state_dir,
            wait: std::time::Duration::from_secs(a.wait),
            mount_dir: a.mount_dir,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The ImageBasedInstallationConfig.
    #[arg(
        long,
        default_value = "/etc/imgmode/image-based-installation-config.yaml"
    )]
    pub config: PathBuf,
    /// Where the state file goes.
    #[arg(long, default_value = "/run/imgmode-ibi/state.json")]
    pub state: PathBuf,
    /// Where the target's filesystems are mounted while installing.
    #[arg(long, default_value = "/run/imgmode-ibi/target")]
    pub mount_dir: PathBuf,
    /// A program run at the end with the target mounted (IMGMODE_IBI_SYSROOT,
    /// IMGMODE_IBI_DEPLOYMENT, IMGMODE_IBI_STATEROOT in its environment).
    #[arg(long)]
    pub post_script: Option<PathBuf>,
    /// When done, reboot (or power off when the config says shutdown: true).
    #[arg(long)]
    pub reboot: bool,
    /// Read the seed from this image reference instead of seedImage (e.g. the copy an
    /// installation ISO carries: oci:/run/imgmode/iso/seed).
    #[arg(long)]
    pub seed_from: Option<String>,
    /// A release payload (imgmode mirror directory) to copy onto the container storage
    /// partition and serve on port 22625 on the installed system (the live system's
    /// registry TLS and credentials in /etc/imgmode/payload go with it).
    #[arg(long)]
    pub payload: Option<PathBuf>,
}

/// What `imgmode ibi install` learns from the machine it runs on.
pub struct Machine {
    /// The machine's OCI architecture.
    pub architecture: String,
    /// The kernel runs in FIPS mode.
    pub fips: bool,
    pub store: Store,
}

impl InstallArgs {
    /// The installation's options, with the config read from `--config`.
    pub fn opts(
        self,
        config: ImageBasedInstallationConfig,
        machine: Machine,
    ) -> imgmode_ibi::install::InstallOpts {
        imgmode_ibi::install::InstallOpts {
            config,
            config_name: self.config.display().to_string(),
            mount_dir: self.mount_dir,
            state_file: self.state,
            post_script: self.post_script,
            seed_from: self.seed_from,
            payload: self.payload,
            payload_setup: "/".into(),
            architecture: machine.architecture,
            fips: machine.fips,
            store: machine.store,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CreateImageArgs {
    /// The ImageBasedInstallationConfig.
    #[arg(long)]
    pub config: PathBuf,
    /// Where imgmode-ibi.iso is written.
    #[arg(long)]
    pub dir: PathBuf,
    /// The live system's image.
    #[arg(long, default_value = "imgmode-base")]
    pub image: String,
    /// Copy the seed into the ISO for installs without a registry.
    #[arg(long)]
    pub embed_seed: bool,
    /// A release payload (an imgmode mirror directory) the ISO carries: served on port
    /// 22625 in the live system and, copied to the disk, on the installed system.
    #[arg(long)]
    pub payload: Option<PathBuf>,
    /// Replace an existing DIR/imgmode-ibi.iso.
    #[arg(long)]
    pub force: bool,
}

impl CreateImageArgs {
    pub fn opts(
        self,
        store: Store,
        cache_dir: PathBuf,
    ) -> imgmode_ibi::installiso::CreateImageOpts {
        imgmode_ibi::installiso::CreateImageOpts {
            config_path: self.config,
            dir: self.dir,
            image: self.image,
            embed_seed: self.embed_seed,
            payload: self.payload,
            force: self.force,
            store,
            cache_dir,
        }
    }
}

/// `imgmode iso`.
#[derive(Debug, clap::Args)]
pub struct IsoArgs {
    /// The bootable image to install: a local name or a containers-transports(5) reference.
    pub image: String,
    /// Where the ISO is written.
    #[arg(long, short)]
    pub output: PathBuf,
    /// bootc-image-builder build configuration (config.toml or config.json): users, groups,
    /// filesystem minsize for / and /boot, kernel append, and [customizations.installer]
    /// installation-disk.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Extra kernel argument of the installed system (repeatable).
    #[arg(long = "karg")]
    pub kargs: Vec<String>,
    /// Root filesystem type of the installed system.
    #[arg(long, value_enum, default_value = "ext4")]
    pub root_fs: imgmode_os::partition::RootFs,
    /// Image reference the installed system follows for upgrades (default: IMAGE).
    #[arg(long)]
    pub target_imgref: Option<String>,
    /// The live system's image (it must carry an imgmode with install-from-iso).
    #[arg(long, default_value = "imgmode-base")]
    pub live_image: String,
    /// Replace the output if it exists.
    #[arg(long)]
    pub force: bool,
}

impl IsoArgs {
    pub fn opts(self, store: Store, cache_dir: PathBuf) -> imgmode_ibi::imageiso::IsoOpts {
        imgmode_ibi::imageiso::IsoOpts {
            image: self.image,
            output: self.output,
            config: self.config,
            kargs: self.kargs,
            root_fs: self.root_fs,
            target_imgref: self.target_imgref,
            live_image: self.live_image,
            force: self.force,
            store,
            cache_dir,
        }
    }
}

/// `imgmode install-from-iso`.
#[derive(Debug, clap::Args)]
pub struct InstallFromIsoArgs {
    /// The ISO's imgmode/ directory, mounted.
    #[arg(default_value = imgmode_ibi::imageiso::ISO_MOUNT_DIR)]
    pub dir: PathBuf,
    /// The disk to write (default: the one the ISO's config names, else the machine's one
    /// disk that could be a target).
    #[arg(long)]
    pub disk: Option<PathBuf>,
    /// When done, reboot into the installed system.
    #[arg(long)]
    pub reboot: bool,
}
