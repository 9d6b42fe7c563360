//! The `imgmode` command line: argument parsing and dispatch into the library crates.
//!
//! This is the only crate that reads ambient state (environment, current directory, the
//! running executable's path) and turns it into explicit options for the libraries.

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use imgmode_os::partition::{Firmware, RootFs};
use imgmode_support::size::parse_size;
use imgmode_image::Store;
use imgmode_os::{base, disk};
use imgmode_support::Steps;
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
    /// Build a bootable image from a Containerfile (podman), lint it, store it.
    #[command(
        after_help = "Example: imgmode build -f containerfiles/layered/rsyslog/Containerfile \
-t rsyslog containerfiles/layered/rsyslog\n\nFROM may name an image of the local store \
(FROM imgmode-base); it is handed to podman as localhost/NAME:TAG."
    )]
    Build(BuildArgs),
    /// Copy an image to any transport (e.g. docker://registry/repo:tag), or into the local
    /// store when DEST is a plain name.
    Push {
        /// A local name or a containers-transports(5) reference.
        src: String,
        /// Destination reference (docker://, oci:, oci-archive:, dir:, ...).
        dest: String,
        /// Require HTTPS and verify certificates (registries).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        tls_verify: bool,
        /// Write the pushed manifest digest to this file.
        #[arg(long)]
        digestfile: Option<PathBuf>,
    },
    /// Fetch and stage the image the booted deployment follows.
    Upgrade {
        /// Only fetch the manifest and config; say whether an update is available.
        #[arg(long, conflicts_with = "apply")]
        check: bool,
        /// Reboot into the new deployment when one was staged.
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Stage a deployment of another image, and follow it for upgrades.
    Switch {
        /// The image: a containers-transports(5) or ostree-ext reference.
        image: String,
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Boot the previous deployment next; a staged deployment is dropped.
    Rollback {
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Apply a MachineConfig's spec.osImageURL (by digest) to this node.
    ApplyMachineconfig {
        file: PathBuf,
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// The applied MachineConfig was deleted: return to the image the node ran before it.
    Revert {
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
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
    Mirror {
        /// An image to mirror (repeatable).
        #[arg(long = "image", value_name = "IMAGE")]
        images: Vec<String>,
        /// A file of images, one per line (# comments).
        #[arg(long = "images", value_name = "FILE")]
        images_file: Option<PathBuf>,
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        registry: RegistryArgs,
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
    /// Internal verbs for tests, benchmarks and fixtures.
    #[command(subcommand, hide = true)]
    Internal(InternalCmd),
    /// `container lint IMAGE`; any other arguments go to ostree-ext's container commands
    /// (what `ostree container ...` runs).
    #[command(disable_help_flag = true)]
    Container {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

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
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
    /// The build context directory.
    #[arg(default_value = ".")]
    pub context: PathBuf,
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
    Build {
        /// The MachineOSConfig YAML.
        config: PathBuf,
        /// The base image (local name or transport reference).
        #[arg(long)]
        base: String,
        /// Directory of MachineConfig and MachineConfigPool YAML files.
        #[arg(long)]
        machineconfigs: Option<PathBuf>,
        /// Where MachineOSBuild objects are written.
        #[arg(long, default_value = ".")]
        output_dir: PathBuf,
        /// Require HTTPS and verify certificates when pushing.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        tls_verify: bool,
        /// Registry credentials for the push (the push secret as a containers-auth.json).
        #[arg(long)]
        authfile: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
}

/// Options of the node-side verbs.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The sysroot (the root of an ostree system).
    #[arg(long, default_value = "/")]
    pub sysroot: PathBuf,
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

/// `imgmode container lint`.
#[derive(Debug, Parser)]
#[command(name = "imgmode container lint", max_term_width = 80)]
pub struct LintArgs {
    /// The image: a local name or a containers-transports(5) reference.
    #[arg(required_unless_present = "rootfs")]
    pub image: Option<String>,
    /// Lint a root directory instead (e.g. / as the last RUN of a Containerfile).
    #[arg(long, conflicts_with = "image")]
    pub rootfs: Option<PathBuf>,
    /// Exit 0 although a fatal lint failed.
    #[arg(long)]
    pub no_fail: bool,
    /// List the lints and exit.
    #[arg(long)]
    pub list: bool,
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

/// recert's flags; each maps to the `RECERT_CONFIG` field of the same name.
#[derive(Debug, clap::Args, Default)]
pub struct RecertArgs {
    /// Scan and plan; write nothing but the summary.
    #[arg(long)]
    pub dry_run: bool,
    /// etcd client URL, e.g. http://127.0.0.1:2379.
    #[arg(long)]
    pub etcd_endpoint: Option<String>,
    /// Directory to scan recursively (repeatable).
    #[arg(long = "static-dir")]
    pub static_dirs: Vec<PathBuf>,
    /// File to scan (repeatable).
    #[arg(long = "static-file")]
    pub static_files: Vec<PathBuf>,
    /// old:new rule for exact CN/SAN values (repeatable).
    #[arg(long = "cn-san-replace")]
    pub cn_san_replace_rules: Vec<String>,
    /// "<CN> <key file>": keep that signer's key (repeatable).
    #[arg(long = "use-key")]
    pub use_key_rules: Vec<String>,
    /// PEM certificate that replaces the one with its subject (repeatable).
    #[arg(long = "use-cert")]
    pub use_cert_rules: Vec<PathBuf>,
    /// name:domain[:infraID].
    #[arg(long)]
    pub cluster_rename: Option<String>,
    /// New hostname.
    #[arg(long)]
    pub hostname: Option<String>,
    /// New node IP.
    #[arg(long)]
    pub ip: Option<String>,
    #[arg(long)]
    pub summary_file: Option<PathBuf>,
    /// Summary without the new certificates.
    #[arg(long)]
    pub summary_file_clean: Option<PathBuf>,
    /// Make every regenerated certificate expired (for seeds).
    #[arg(long)]
    pub force_expire: bool,
    /// Re-date every regenerated certificate from now, keeping its lifetime.
    #[arg(long)]
    pub extend_expiration: bool,
    /// Directory with ssh_host_*_key files to replace.
    #[arg(long)]
    pub regenerate_server_ssh_keys: Option<PathBuf>,
    /// Key-generation threads (default: CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Fail on unparseable PEM instead of skipping it.
    #[arg(long)]
    pub fail_on_invalid_pem: bool,
    /// Run although the summary file marks the tree as recerted.
    #[arg(long)]
    pub force_rerun: bool,
    /// How to print the summary.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

impl RecertArgs {
    fn config(&self) -> imgmode_recert::RecertConfig {
        imgmode_recert::RecertConfig {
            dry_run: self.dry_run,
            etcd_endpoint: self.etcd_endpoint.clone(),
            static_dirs: self.static_dirs.clone(),
            static_files: self.static_files.clone(),
            cn_san_replace_rules: self.cn_san_replace_rules.clone(),
            use_key_rules: self.use_key_rules.clone(),
            use_cert_rules: self.use_cert_rules.clone(),
            cluster_rename: self.cluster_rename.clone(),
            hostname: self.hostname.clone(),
            ip: self.ip.clone(),
            summary_file: self.summary_file.clone(),
            summary_file_clean: self.summary_file_clean.clone(),
            force_expire: self.force_expire,
            extend_expiration: self.extend_expiration,
            regenerate_server_ssh_keys: self.regenerate_server_ssh_keys.clone(),
            threads: self.threads,
            fail_on_invalid_pem: self.fail_on_invalid_pem,
            force_rerun: self.force_rerun,
        }
    }
}

/// The configuration from flags or from `RECERT_CONFIG`, never both.
fn recert_config(args: &RecertArgs) -> Result<imgmode_recert::RecertConfig> {
    let from_flags = args.config();
    match std::env::var_os("RECERT_CONFIG") {
        Some(path) => {
            if from_flags != imgmode_recert::RecertConfig::default() {
                anyhow::bail!(
                    "RECERT_CONFIG is set ({}) and configuration flags were given; use one or the other",
                    PathBuf::from(&path).display()
                );
            }
            imgmode_recert::config::load_file(std::path::Path::new(&path))
        }
        None => Ok(from_flags),
    }
}

fn recert_human(s: &imgmode_recert::summary::Summary) -> String {
    let mut out = format!(
        "{}found {} certificates, {} private keys, {} public keys, {} JWTs\n\
         regenerated {} certificates, {} private keys, {} public keys, {} JWTs\n\
         timings: scan {} ms, key generation {} ms (waited {} ms), processing {} ms, commit {} ms\n",
        if s.dry_run { "dry run: nothing written\n" } else { "" },
        s.found.certificates,
        s.found.private_keys,
        s.found.public_keys,
        s.found.jwts,
        s.regenerated.certificates,
        s.regenerated.private_keys,
        s.regenerated.public_keys,
        s.regenerated.jwts,
        s.timings.scan_ms,
        s.timings.key_generation_ms,
        s.timings.key_generation_wait_ms,
        s.timings.processing_ms,
        s.timings.commit_ms,
    );
    if let Some(r) = &s.cluster_rename {
        out.push_str(&format!("renamed the cluster {} -> {}\n", r.from, r.to));
    }
    for w in &s.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

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
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// Check a seed against an image-based-installation-config.yaml before anything is fetched.
    Check {
        image: String,
        /// The ImageBasedInstallationConfig.
        #[arg(long)]
        config: PathBuf,
        /// The installation has FIPS enabled.
        #[arg(long)]
        fips: bool,
        /// Target architecture (default: this machine's).
        #[arg(long)]
        arch: Option<String>,
    },
}

/// How to reach registries: credentials and trusted CAs (skopeo's `--authfile`, `--cert-dir`).
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Registry credentials (a pull secret or containers-auth.json).
    #[arg(long)]
    authfile: Option<PathBuf>,
    /// A directory of CA certificates (*.crt) trusted for the registries.
    #[arg(long)]
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
    Unpack {
        image: String,
        dir: PathBuf,
        /// Refuse to unpack more than this (e.g. 20G); default: the free space where DIR goes.
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum PayloadCmd {
    /// Check a mirror directory: every blob's sha256, every repository link, the record.
    Verify {
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// The payloads this host holds (served on port 22625) and which are in use.
    Status {
        #[arg(long, default_value = imgmode_ibi::payload::registry::INSTALLED_ROOT)]
        store: PathBuf,
        /// The container storage whose images count as in use.
        #[arg(long, default_value = "/var/lib/containers/storage")]
        storage: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// Copy a payload in: from a mirror directory, or an ISO (file or device) that carries
    /// one in /payload (an installation ISO made with --payload).
    Add {
        source: PathBuf,
        #[arg(long, default_value = imgmode_ibi::payload::registry::INSTALLED_ROOT)]
        store: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// Remove a payload (by its ID); refused while the container storage holds its images.
    Remove {
        id: String,
        #[arg(long, default_value = imgmode_ibi::payload::registry::INSTALLED_ROOT)]
        store: PathBuf,
        #[arg(long, default_value = "/var/lib/containers/storage")]
        storage: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum IbiCmd {
    /// The configuration ISO (volume cluster-config) from DIR's install-config.yaml and
    /// image-based-config.yaml, plus DIR/auth/kubeconfig and DIR/auth/kubeadmin-password.
    CreateConfigImage {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// First boot of an installed seed copy (imgmode-post-pivot.service): wait for the
    /// cluster-config ISO, set up the host, recert (rename, new keys), start the cluster.
    PostPivot {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Seconds to wait for the configuration ISO before failing (the unit restarts).
        #[arg(long, default_value_t = 300)]
        wait: u64,
        #[arg(long, default_value = imgmode_seed::postpivot::STATE_DIR)]
        state_dir: PathBuf,
        #[arg(long, default_value = "/run/imgmode-post-pivot/config")]
        mount_dir: PathBuf,
    },
    /// Install the seed of an image-based-installation-config.yaml onto its installationDisk.
    #[command(
        after_help = "Every check runs before the disk is touched: the config, the disk (exists, \
not mounted, big enough), and the seed's gates read from its labels. Then the disk is cleaned \
(unless skipDiskCleanup), partitioned (with the extra partition for container storage), the \
seed's ostree commit deployed with its kernel arguments and origin, var.tgz, etc.tgz and \
etc.deletions restored, containers.list precached and GRUB installed. The state file says \
which step runs, or failed and why."
    )]
    Install {
        /// The ImageBasedInstallationConfig.
        #[arg(
            long,
            default_value = "/etc/imgmode/image-based-installation-config.yaml"
        )]
        config: PathBuf,
        /// Where the state file goes.
        #[arg(long, default_value = "/run/imgmode-ibi/state.json")]
        state: PathBuf,
        /// Where the target's filesystems are mounted while installing.
        #[arg(long, default_value = "/run/imgmode-ibi/target")]
        mount_dir: PathBuf,
        /// A program run at the end with the target mounted (IMGMODE_IBI_SYSROOT,
        /// IMGMODE_IBI_DEPLOYMENT, IMGMODE_IBI_STATEROOT in its environment).
        #[arg(long)]
        post_script: Option<PathBuf>,
        /// When done, reboot (or power off when the config says shutdown: true).
        #[arg(long)]
        reboot: bool,
        /// Read the seed from this image reference instead of seedImage (e.g. the copy an
        /// installation ISO carries: oci:/run/imgmode/iso/seed).
        #[arg(long)]
        seed_from: Option<String>,
        /// A release payload (imgmode mirror directory) to copy onto the container storage
        /// partition and serve on port 22625 on the installed system (the live system's
        /// registry TLS and credentials in /etc/imgmode/payload go with it).
        #[arg(long)]
        payload: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// The installation ISO: a live system (from the base image, running from RAM) that installs
    /// the seed of an image-based-installation-config.yaml onto its installationDisk at boot.
    #[command(
        after_help = "Writes DIR/imgmode-ibi.iso, bootable from BIOS and UEFI, as a CD or written \
to a USB disk (hybrid). The live system carries the config (pull secret, trust bundle), sshKey \
for root, imageDigestSources as registries.conf mirrors and the proxy, and runs `imgmode ibi \
install --reboot` from imgmode-ibi-install.service with the progress on the console. With \
--embed-seed the seed is copied into the ISO and installed from there (no registry needed)."
    )]
    CreateImage {
        /// The ImageBasedInstallationConfig.
        #[arg(long)]
        config: PathBuf,
        /// Where imgmode-ibi.iso is written.
        #[arg(long)]
        dir: PathBuf,
        /// The live system's image.
        #[arg(long, default_value = "imgmode-base")]
        image: String,
        /// Copy the seed into the ISO for installs without a registry.
        #[arg(long)]
        embed_seed: bool,
        /// A release payload (an imgmode mirror directory) the ISO carries: served on port
        /// 22625 in the live system and, copied to the disk, on the installed system.
        #[arg(long)]
        payload: Option<PathBuf>,
        /// Replace an existing DIR/imgmode-ibi.iso.
        #[arg(long)]
        force: bool,
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
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
}

impl ClusterArgs {
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
    }
}

#[derive(Debug, clap::Args)]
pub struct SeedCreateArgs {
    /// Where the seed image goes: a local name, oci:DIR[:TAG], oci-archive:FILE, docker://...
    #[arg(long)]
    pub output: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Tarball compression: gzip[:1-9] (default gzip:1, readable by lifecycle-agent) or
    /// zstd[:1-19].
    #[arg(long, default_value = "gzip:1")]
    pub compression: String,
    /// Archives and checkpoints.
    #[arg(long, default_value = "/var/tmp/imgmode-seed")]
    pub work_dir: PathBuf,
    /// Leave the cluster services stopped and the certificates expired.
    #[arg(long)]
    pub no_restore: bool,
    /// Skip recert (the certificates are captured as they are).
    #[arg(long)]
    pub skip_recert: bool,
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum TestClusterCmd {
    /// First boot: identity, PKI, etcd objects (nothing when already initialized).
    Init {
        #[arg(long, default_value = "/")]
        root: PathBuf,
        #[arg(long, default_value = "/var/lib/imgmode-test-cluster")]
        state_dir: PathBuf,
        #[arg(long, default_value = "http://127.0.0.1:2379")]
        etcd_endpoint: String,
        #[arg(long, default_value = "seed")]
        cluster_name: String,
        #[arg(long, default_value = "example.com")]
        base_domain: String,
        #[arg(long, default_value = "4.17.0")]
        version: String,
        #[arg(
            long,
            default_value = "quay.io/openshift-release-dev/ocp-release@sha256:0000000000000000000000000000000000000000000000000000000000000000"
        )]
        release_image: String,
        #[arg(long, default_value_t = 24)]
        extra_leaves: usize,
        #[arg(long)]
        hostname: Option<String>,
        #[arg(long)]
        ip: Option<String>,
    },
    /// The API endpoint: HTTPS, admin client certificate required, /readyz from etcd.
    Serve {
        #[arg(long, default_value = "/")]
        root: PathBuf,
        #[arg(long, default_value = "0.0.0.0:6443")]
        listen: String,
        #[arg(long, default_value = "http://127.0.0.1:2379")]
        etcd_endpoint: String,
    },
    /// Every private key of this cluster (files and etcd) as "sha256-of-SPKI location" lines.
    Keys {
        #[arg(long, default_value = "http://127.0.0.1:2379")]
        etcd_endpoint: String,
        #[arg(long = "static-dir", default_values = ["/etc/kubernetes", "/var/lib/kubelet"])]
        static_dirs: Vec<PathBuf>,
    },
    /// Print one etcd object (JSON) by key; exit 1 when it does not exist.
    Get {
        key: String,
        #[arg(long, default_value = "http://127.0.0.1:2379")]
        etcd_endpoint: String,
    },
    /// GET a path with a kubeconfig's credentials; exit 1 unless it answers 200.
    Probe {
        #[arg(long, default_value = "/etc/kubernetes/kubeconfig")]
        kubeconfig: PathBuf,
        #[arg(long, default_value = "/readyz")]
        path: String,
        /// Connect here instead of the server's host name (which is still verified).
        #[arg(long)]
        connect_to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum InternalCmd {
    /// Unpack one seed tarball into DIR as the installer does (benchmarks).
    SeedUnpack { tarball: PathBuf, dir: PathBuf },
    /// Write one seed tarball of DIR/PATH... (benchmarks): GNU tar piped through the compressor.
    SeedArchive {
        #[arg(long, default_value = "gzip:1")]
        compression: String,
        /// The tarball to write.
        out: PathBuf,
        /// The directory the paths are relative to.
        dir: PathBuf,
        paths: Vec<String>,
    },
    /// The test cluster fixture (seed-system image).
    #[command(subcommand)]
    TestCluster(TestClusterCmd),
    /// Print, as a JSON array, the arguments `base build` gives mmdebstrap for DEFINITION
    /// with ROOTFS as its target (the base build benchmark's baseline runs exactly these).
    MmdebstrapArgs {
        #[arg(long, default_value = "containerfiles/base")]
        definition: PathBuf,
        rootfs: PathBuf,
    },
    /// Generate an OpenShift-shaped test PKI under DIR (files); etcd objects go to a JSON file.
    GenTestPki {
        dir: PathBuf,
        /// Extra serving certificates under the load-balancer signer.
        #[arg(long, default_value_t = 0)]
        extra_leaves: usize,
        /// Write the etcd objects ({key: object}) here; without it every extra leaf is a file.
        #[arg(long)]
        etcd_objects: Option<PathBuf>,
        #[arg(long, default_value = "seed")]
        cluster_name: String,
        #[arg(long, default_value = "example.com")]
        base_domain: String,
        #[arg(long, default_value = "seed-node")]
        hostname: String,
        #[arg(long, default_value = "192.168.126.10")]
        ip: String,
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
    Store::new(imgmode_image::store::state_dir_from_env())
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let steps = || Steps::new(cli.quiet);
    // node updates say their steps (fetching, staging) unless --quiet
    let update = imgmode_os::node::UpdateOpts {
        progress: !cli.quiet,
        ..Default::default()
    };
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
                cache_dir: imgmode_image::store::cache_dir_from_env(),
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
                cache_dir: imgmode_image::store::cache_dir_from_env(),
            };
            let out = disk::build(&opts, &steps())?;
            println!(
                "wrote {} ({:?}, {} allocated) from {}",
                out.output.display(),
                out.format,
                imgmode_support::size::human_size(out.bytes_written),
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
            let st = imgmode_os::ostree::sysroot_status(&sysroot)?;
            print(format, &st, |s| s.to_human())
        }
        Command::Recert(args) => {
            let cfg = recert_config(&args)?.check()?;
            let summary = imgmode_recert::run(&cfg)?;
            print(args.format, &summary, recert_human)
        }
        Command::Seed(cmd) => seed_cmd(cmd, steps()),
        Command::Ibi(IbiCmd::PostPivot {
            cluster,
            wait,
            state_dir,
            mount_dir,
        }) => {
            let mut c = imgmode_seed::cluster::Cluster::default();
            cluster.apply(&mut c);
            let o = imgmode_seed::postpivot::PostPivotOpts {
                cluster: c,
                state_dir,
                wait: std::time::Duration::from_secs(wait),
                mount_dir,
            };
            let m = imgmode_seed::postpivot::run(&o, steps())?;
            println!(
                "post-pivot done: cluster {}.{} (infra ID {}), host {}",
                m.cluster_name, m.base_domain, m.infra_id, m.hostname
            );
            Ok(())
        }
        Command::Ibi(IbiCmd::CreateConfigImage { dir, format }) => {
            let c = imgmode_ibi::configiso::create(&dir)?;
            print(format, &c, |c| {
                format!(
                    "wrote {} for cluster {}.{} (host {}, cluster ID {}, infra ID {}, {} extra manifest file(s))\n  {}\n  {}\n",
                    c.iso.display(),
                    c.cluster_name,
                    c.base_domain,
                    c.hostname,
                    c.cluster_id,
                    c.infra_id,
                    c.extra_manifests,
                    c.kubeconfig.display(),
                    c.kubeadmin_password.display()
                )
            })
        }
        Command::Payload(PayloadCmd::Verify { dir, format }) => {
            let v = imgmode_image::mirror::verify(&dir)?;
            print(format, &v, |v| {
                format!(
                    "{}: payload {} ({} image(s), {}): {} blobs ({}) and {} links verified\n",
                    dir.display(),
                    v.payload.id,
                    v.payload.images.len(),
                    v.payload.architectures.join(", "),
                    v.blobs,
                    imgmode_support::size::human_size(v.bytes),
                    v.links
                )
            })
        }
        Command::Payload(PayloadCmd::Status {
            store,
            storage,
            format,
        }) => {
            let held = imgmode_ibi::payload::store::status(&store, &storage)?;
            print(format, &held, |held| {
                if held.is_empty() {
                    return format!("{} holds no payload\n", store.display());
                }
                held.iter()
                    .map(|h| {
                        let mut s = format!(
                            "{} ({}){}\n",
                            h.payload.id,
                            h.payload.architectures.join(", "),
                            if h.in_use.is_empty() { "" } else { " in use" }
                        );
                        for i in &h.payload.images {
                            s.push_str(&format!("  {} {} ({})\n", i.name(), i.digest, i.source));
                        }
                        s
                    })
                    .collect()
            })
        }
        Command::Payload(PayloadCmd::Add {
            source,
            store,
            format,
        }) => {
            let p = imgmode_ibi::payload::registry::add_from(&store, &source)?;
            print(format, &p, |p| {
                format!(
                    "added payload {} ({} image(s)) to {}\n",
                    p.id,
                    p.images.len(),
                    store.display()
                )
            })
        }
        Command::Payload(PayloadCmd::Remove { id, store, storage }) => {
            let p = imgmode_ibi::payload::store::remove(&store, &id, &storage)?;
            println!(
                "removed payload {} ({} image(s)) from {}",
                p.id,
                p.images.len(),
                store.display()
            );
            Ok(())
        }
        Command::Image(ImageCmd::Unpack {
            image,
            dir,
            max_size,
            registry,
            format,
        }) => {
            let max = max_size
                .as_deref()
                .map(imgmode_support::size::parse_size)
                .transpose()
                .context("--max-size")?;
            let steps = steps();
            let out = imgmode_image::extract::unpack_image(
                &store(),
                &image,
                &dir,
                &registry.into(),
                max,
                &steps,
            )?;
            steps.finish();
            print(format, &out, |o| {
                format!(
                    "{} ({}) unpacked into {}: {} layers, {} entries, {} bytes, {} whiteouts, {:.1} s\n",
                    o.image,
                    o.manifest_digest,
                    o.dir.display(),
                    o.layers,
                    o.entries,
                    o.bytes,
                    o.whiteouts,
                    o.seconds
                )
            })
        }
        Command::Mirror {
            images,
            images_file,
            dir,
            registry,
            format,
        } => {
            use imgmode_image::mirror;
            let mut args = images;
            if let Some(f) = &images_file {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading --images {}", f.display()))?;
                args.extend(
                    text.lines()
                        .map(|l| l.split('#').next().unwrap_or("").trim())
                        .filter(|l| !l.is_empty())
                        .map(str::to_string),
                );
            }
            anyhow::ensure!(
                !args.is_empty(),
                "no images: give --image IMAGE (repeatable) or --images FILE"
            );
            let images = args
                .iter()
                .map(|a| mirror::MirrorImage::parse(a))
                .collect::<Result<Vec<_>>>()?;
            let steps = steps();
            let out = mirror::mirror(
                &mirror::MirrorOpts {
                    images,
                    dir,
                    auth: registry.into(),
                },
                &steps,
            )?;
            steps.finish();
            print(format, &out, |o| {
                let mut s = String::new();
                for i in &o.images {
                    s.push_str(&format!(
                        "{} -> {} ({}, {} manifest(s))\n",
                        i.source,
                        i.name(),
                        i.digest,
                        i.manifests
                    ));
                }
                s.push_str(&format!(
                    "{}: {} blobs ({}), {} new ({})\n",
                    o.dir.display(),
                    o.blobs,
                    imgmode_support::size::human_size(o.bytes),
                    o.new_blobs,
                    imgmode_support::size::human_size(o.new_bytes)
                ));
                s
            })
        }
        Command::Ibi(IbiCmd::CreateImage {
            config,
            dir,
            image,
            embed_seed,
            payload,
            force,
            format,
        }) => {
            let o = imgmode_ibi::installiso::CreateImageOpts {
                config_path: config,
                dir,
                image,
                embed_seed,
                payload,
                force,
                store: store(),
                cache_dir: imgmode_image::store::cache_dir_from_env(),
            };
            let steps = steps();
            let c = imgmode_ibi::installiso::create_image(&o, &steps)?;
            steps.finish();
            print(format, &c, |c| {
                format!(
                    "wrote {} ({}): installs {} ({}) onto {}{}; live system {} (kernel {}, root filesystem {} in a {} archive)\n",
                    c.iso.display(),
                    imgmode_support::size::human_size(c.live.iso_bytes),
                    c.seed,
                    c.seed_version,
                    c.installation_disk,
                    c.embedded_seed
                        .as_deref()
                        .map(|d| format!(", seed embedded ({d})"))
                        .unwrap_or_default(),
                    c.live.image,
                    c.live.kernel,
                    imgmode_support::size::human_size(c.live.rootfs_tree_bytes),
                    imgmode_support::size::human_size(c.live.rootfs_bytes)
                )
            })
        }
        Command::Ibi(IbiCmd::Install {
            config,
            state,
            mount_dir,
            post_script,
            reboot,
            seed_from,
            payload,
            format,
        }) => {
            use imgmode_ibi::{config as ibiconfig, install as ibi};
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let name = config.display().to_string();
            let cfg = ibiconfig::ImageBasedInstallationConfig::parse(&text, &name)?;
            let fips = std::fs::read_to_string("/proc/sys/crypto/fips_enabled")
                .is_ok_and(|s| s.trim() == "1");
            let o = ibi::InstallOpts {
                config: cfg.clone(),
                config_name: name,
                mount_dir,
                state_file: state,
                post_script,
                seed_from,
                payload,
                payload_setup: "/".into(),
                architecture: imgmode_support::host::host_arch().to_string(),
                fips,
                store: store(),
            };
            let steps = steps();
            let out = ibi::install(&o, &steps)?;
            steps.finish();
            print(format, &out, |i| {
                format!(
                    "installed seed {} ({}) on {}: stateroot {}, commit {}, {} image(s) precached, in {:.0}s\n",
                    i.seed,
                    i.seed_version,
                    i.disk,
                    i.stateroot,
                    i.commit,
                    i.precached.len(),
                    i.seconds
                )
            })?;
            if reboot {
                let action = if cfg.shutdown { "poweroff" } else { "reboot" };
                imgmode_support::cmd::Run::new("systemctl")
                    .arg(action)
                    .output()
                    .with_context(|| format!("systemctl {action}"))?;
            }
            Ok(())
        }
        Command::Internal(InternalCmd::TestCluster(cmd)) => test_cluster_cmd(cmd),
        Command::Internal(InternalCmd::MmdebstrapArgs { definition, rootfs }) => {
            let spec = imgmode_os::base::BaseSpec::load(&definition)?;
            let cache = imgmode_image::store::cache_dir_from_env();
            let args = imgmode_os::base::mmdebstrap_args(&spec, &cache, &rootfs);
            println!("{}", serde_json::to_string(&args)?);
            Ok(())
        }
        Command::Internal(InternalCmd::SeedUnpack { tarball, dir }) => {
            imgmode_seed::archive::tar_extract(&tarball, &dir).map(drop)
        }
        Command::Internal(InternalCmd::SeedArchive {
            compression,
            out,
            dir,
            paths,
        }) => {
            let mut args = vec!["-C".to_string(), dir.display().to_string()];
            args.extend(paths);
            let w = imgmode_seed::archive::tar_create(&args, None, &out, compression.parse()?)?;
            println!("{}", serde_json::to_string(&w)?);
            Ok(())
        }
        Command::Internal(InternalCmd::GenTestPki {
            dir,
            extra_leaves,
            etcd_objects,
            cluster_name,
            base_domain,
            hostname,
            ip,
        }) => {
            let spec = imgmode_recert::testpki::PkiSpec {
                cluster_name,
                base_domain,
                hostname,
                ip,
                extra_leaves,
                extra_in_files_only: etcd_objects.is_none(),
                ..Default::default()
            };
            let pki = imgmode_recert::testpki::generate(&spec, &dir)?;
            if let Some(p) = etcd_objects {
                let map: serde_json::Map<String, serde_json::Value> =
                    pki.etcd_objects.into_iter().collect();
                std::fs::write(&p, serde_json::to_vec_pretty(&map)?)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            println!("{} certificates under {}", pki.certs.len(), dir.display());
            Ok(())
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
        Command::Build(a) => {
            let context = a.context;
            let tag = match a.tag {
                Some(t) => t,
                None => default_tag(&context)?,
            };
            let opts = imgmode_layering::build::BuildOpts {
                containerfile: a.file.unwrap_or_else(|| context.join("Containerfile")),
                context,
                tag,
                build_args: a.build_args,
                store: store(),
                no_lint_fail: a.allow_lint_failure,
                no_cache: a.no_cache,
            };
            let out = imgmode_layering::build::build(&opts, &steps())?;
            print(a.format, &out, |o| {
                let mut s = String::new();
                for w in o.lint.warnings().chain(o.lint.fatal()) {
                    s.push_str(&format!("lint {}: {}\n", w.name, w.message));
                }
                s.push_str(&format!(
                    "{}\n  reference: {}\n  digest: {}\n  layers: {} shared with the base, {} new\n",
                    o.name, o.reference, o.digest, o.reused_layers, o.new_layers
                ));
                s
            })
        }
        Command::Push {
            src,
            dest,
            tls_verify,
            digestfile,
        } => {
            let src_ref = store().resolve(&src)?;
            let dest_ref = match imgmode_image::imgref::parse(&dest)? {
                imgmode_image::imgref::UserImageRef::Remote(r) => r,
                imgmode_image::imgref::UserImageRef::Local(name) => {
                    // into the local store: a staging layout, renamed into place when complete
                    let st = store();
                    let staged = st.staging()?;
                    let digest = imgmode_layering::build::push(
                        &src_ref.imgref,
                        &ostree_ext::container::ImageReference {
                            transport: ostree_ext::container::Transport::OciDir,
                            name: staged.path().display().to_string(),
                        },
                        false,
                        None,
                        digestfile.as_deref(),
                    )?;
                    st.publish(staged, &name)?;
                    println!("copied {src} to the local store as {name} ({digest})");
                    return Ok(());
                }
            };
            let digest = imgmode_layering::build::push(
                &src_ref.imgref,
                &dest_ref.imgref,
                tls_verify,
                None,
                digestfile.as_deref(),
            )?;
            println!("pushed {src} to {dest} as {digest}");
            Ok(())
        }
        Command::Upgrade { check, apply, node } => {
            let opts = imgmode_os::node::UpdateOpts { check, ..update };
            let out = imgmode_os::node::upgrade(&node.sysroot, &opts)?;
            finish_update(&node, &out, check, apply)
        }
        Command::Switch { image, apply, node } => {
            let target = match imgmode_image::imgref::parse(&image)? {
                imgmode_image::imgref::UserImageRef::Remote(r) => r,
                imgmode_image::imgref::UserImageRef::Local(n) => anyhow::bail!(
                    "{n:?} has no transport; name where the node fetches it, e.g. docker://registry.example.com/{n} or oci-archive:/path/{n}.tar"
                ),
            };
            let out = imgmode_os::node::switch(&node.sysroot, &target, &update)?;
            finish_update(&node, &out, false, apply)
        }
        Command::ApplyMachineconfig { file, apply, node } => {
            let mc = imgmode_layering::objects::MachineConfig::load(&file)?;
            let out = imgmode_layering::objects::apply_machineconfig(&node.sysroot, &mc, &update)?;
            finish_update(&node, &out, false, apply)
        }
        Command::Revert { apply, node } => {
            let out = imgmode_layering::objects::revert(&node.sysroot, &update)?;
            finish_update(&node, &out, false, apply)
        }
        Command::Layer(LayerCmd::Build {
            config,
            base,
            machineconfigs,
            output_dir,
            tls_verify,
            authfile,
            format,
        }) => {
            let opts = imgmode_layering::machineos::LayerBuildOpts {
                config,
                base,
                machineconfigs,
                output_dir,
                store: store(),
                tls_verify,
                authfile,
            };
            let b = imgmode_layering::machineos::layer_build(&opts, &steps())?;
            print(format, &b, |b| {
                format!(
                    "{}: {}\n  image: {}\n",
                    b.metadata.name,
                    b.state().unwrap_or("-"),
                    b.status.current_image_pull_spec.as_deref().unwrap_or("-")
                )
            })
        }
        Command::Rollback { apply, node } => {
            let out = imgmode_os::node::rollback(&node.sysroot)?;
            print(node.format, &out, |o| {
                let mut s = format!("Next boot: {}\nRollback: {}\n", o.next, o.previous);
                if let Some(d) = &o.dropped_staged {
                    s.push_str(&format!("Dropped the staged deployment {d}\n"));
                }
                s
            })?;
            if apply {
                reboot()?;
            }
            Ok(())
        }
        Command::Container { args } if args.first().is_some_and(|a| a == "lint") => {
            let a = match LintArgs::try_parse_from(
                std::iter::once(std::ffi::OsString::from("imgmode container lint"))
                    .chain(args.into_iter().skip(1)),
            ) {
                Ok(a) => a,
                Err(e) => e.exit(),
            };
            if a.list {
                for (name, sev, what) in imgmode_layering::lint::LINTS {
                    println!("{name:<18} {:<8} {what}", format!("{sev:?}").to_lowercase());
                }
                return Ok(());
            }
            let report = match (&a.image, &a.rootfs) {
                (Some(img), _) => imgmode_layering::image::lint_image(&store(), img)?,
                (None, Some(dir)) => {
                    let tree = imgmode_layering::tree::Tree::from_dir(dir, true)?;
                    let mut r = imgmode_layering::lint::lint(
                        &dir.display().to_string(),
                        &tree,
                        &Default::default(),
                    );
                    // A root directory has no labels to check.
                    r.results.retain(|x| x.name != "bootc-label");
                    r
                }
                (None, None) => unreachable!("clap requires one"),
            };
            print(a.format, &report, |r| r.to_human())?;
            match report.error() {
                Some(e) if !a.no_fail => Err(e),
                _ => Ok(()),
            }
        }
        Command::Container { args } => {
            let argv = std::iter::once("ostree-container".into())
                .chain(std::iter::once("container".into()))
                .chain(args);
            ostree_container(argv)
        }
    }
}

/// The default `-t` of `imgmode build`: the context directory's name, made a valid local name.
fn default_tag(context: &std::path::Path) -> Result<String> {
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

fn reboot() -> Result<()> {
    eprintln!("Rebooting into the new deployment.");
    imgmode_support::cmd::Run::new("systemctl")
        .arg("reboot")
        .run()
}

fn finish_update(
    node: &NodeArgs,
    out: &imgmode_os::node::UpdateOutcome,
    check: bool,
    apply: bool,
) -> Result<()> {
    print(node.format, out, |o| o.to_human(check))?;
    if apply && !out.unchanged && out.staged {
        reboot()?;
    }
    Ok(())
}

/// Run ostree-ext's CLI (what `ostree container ...` execs).
pub fn ostree_container<I>(argv: I) -> Result<()>
where
    I: IntoIterator<Item = std::ffi::OsString>,
{
    let argv: Vec<std::ffi::OsString> = argv.into_iter().collect();
    imgmode_support::runtime::block_on(ostree_ext::cli::run_from_iter(argv))?
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

fn seed_cmd(cmd: SeedCmd, steps: Steps) -> Result<()> {
    use imgmode_ibi::config as ibiconfig;
    use imgmode_seed::{gates, image};
    match cmd {
        SeedCmd::Create(a) => {
            let exe = std::env::current_exe().context("locating the imgmode binary")?;
            let mut o = imgmode_seed::create::CreateOpts::new(
                &a.output,
                exe,
                &format!("imgmode {}", env!("CARGO_PKG_VERSION")),
            );
            a.cluster.apply(&mut o.cluster);
            o.compression = a.compression.parse()?;
            o.work_dir = a.work_dir;
            o.restore = !a.no_restore;
            o.recert = !a.skip_recert;
            let c = imgmode_seed::create::create(&o, &store(), steps)?;
            print(a.format, &c, |c| {
                let mut s = format!("seed image {} ({})\n", c.reference, c.digest);
                for (f, n) in &c.files {
                    s.push_str(&format!("  {f:<40} {:>12}\n", n));
                }
                s
            })
        }
        SeedCmd::Inspect { image: arg, format } => {
            let i = image::inspect(&store(), &arg)?;
            let missing = image::missing_files(&i.files);
            print(format, &i, |i| {
                let mut s = format!(
                    "{}\n  format version {}, {}, seed version {}\n  cluster {}.{} node {} ({})\n",
                    i.reference,
                    i.format_version,
                    i.architecture,
                    i.cluster_info.seed_cluster_ocp_version,
                    i.cluster_info.cluster_name,
                    i.cluster_info.base_domain,
                    i.cluster_info.sno_hostname,
                    i.cluster_info.node_ip
                );
                for f in &i.files {
                    s.push_str(&format!("  {:<40} {:>12}  {}\n", f.name, f.size, f.sha256));
                }
                s
            })?;
            if !missing.is_empty() {
                anyhow::bail!(
                    "{arg} is not a complete seed: missing {}",
                    missing.join(", ")
                );
            }
            Ok(())
        }
        SeedCmd::Check {
            image: arg,
            config,
            fips,
            arch,
        } => {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let cfg = ibiconfig::ImageBasedInstallationConfig::parse(
                &text,
                &config.display().to_string(),
            )?;
            let h = image::read_header(&store(), &arg, &Default::default())?;
            let arch = arch.unwrap_or_else(|| imgmode_support::host::host_arch().to_string());
            let t = cfg.gate_target(&arch, fips);
            let info = gates::check(&h.labels, &h.architecture, &t)
                .with_context(|| format!("seed {arg} does not fit {}", config.display()))?;
            println!(
                "seed {arg} fits {}: format {}, seed version {}, {}",
                config.display(),
                imgmode_seed::SEED_FORMAT_VERSION,
                info.seed_cluster_ocp_version,
                h.architecture
            );
            Ok(())
        }
    }
}

fn test_cluster_cmd(cmd: TestClusterCmd) -> Result<()> {
    use imgmode_testkit::cluster as testcluster;
    match cmd {
        TestClusterCmd::Init {
            root,
            state_dir,
            etcd_endpoint,
            cluster_name,
            base_domain,
            version,
            release_image,
            extra_leaves,
            hostname,
            ip,
        } => {
            let id = testcluster::init(&testcluster::InitOpts {
                root,
                state_dir,
                etcd_endpoint,
                cluster_name,
                base_domain,
                version,
                release_image,
                extra_leaves,
                hostname,
                ip,
            })?;
            println!("{}", serde_json::to_string(&id)?);
            Ok(())
        }
        TestClusterCmd::Serve {
            root,
            listen,
            etcd_endpoint,
        } => testcluster::serve(&root, &listen, &etcd_endpoint),
        TestClusterCmd::Keys {
            etcd_endpoint,
            static_dirs,
        } => {
            let dirs: Vec<PathBuf> = static_dirs.into_iter().filter(|d| d.is_dir()).collect();
            for (fp, at) in imgmode_recert::key_inventory(&dirs, Some(&etcd_endpoint))? {
                println!("{fp} {at}");
            }
            Ok(())
        }
        TestClusterCmd::Get { key, etcd_endpoint } => {
            let v = testcluster::get(&etcd_endpoint, &key)?;
            println!("{}", serde_json::to_string(&v)?);
            Ok(())
        }
        TestClusterCmd::Probe {
            kubeconfig,
            path,
            connect_to,
        } => {
            let creds = imgmode_seed::cluster::read_kubeconfig(&kubeconfig)?;
            let (code, body) = imgmode_seed::cluster::probe(&creds, &path, connect_to.as_deref())?;
            println!("{body}");
            if code != 200 {
                anyhow::bail!("{}{path} answered {code}", creds.server);
            }
            Ok(())
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
