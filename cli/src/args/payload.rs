//! `imgmode payload` and `imgmode mirror`: release payloads as mirror directories.

use crate::args::image::RegistryArgs;
use anyhow::{Context, Result};
use clap::Subcommand;
use imgmode_image::mirror;
use std::path::PathBuf;

/// Where post-pivot writes the cluster's pull secret on an installed host.
pub const PULL_SECRET: &str = "/var/lib/kubelet/config.json";

/// The container storage a payload's images count as in use in, when `--storage` is not given.
pub const DEFAULT_STORAGE: &str = "/var/lib/containers/storage";

#[derive(Debug, Subcommand)]
pub enum PayloadCmd {
    /// Check a mirror directory: every blob's sha256, every repository link, the record.
    Verify { dir: PathBuf },
    /// The payloads this host holds (served on port 22625) and which are in use, by what.
    Status {
        #[arg(long, default_value = imgmode_ibi::payload::registry::INSTALLED_ROOT)]
        store: PathBuf,
        #[command(flatten)]
        users: UsersArgs,
    },
    /// Copy a payload in: from a mirror directory, or an ISO (file or device) that carries
    /// one in /payload (an installation ISO made with --payload).
    ///
    /// The import is recorded in the store's InternalReleaseImage record (Importing, then
    /// Available, or Degraded with the reason). An installation ISO attached to an installed
    /// host is imported with no command typed: a udev rule starts
    /// imgmode-payload-import@.service, which runs this with --attached.
    Add {
        source: PathBuf,
        #[arg(long, default_value = imgmode_ibi::payload::registry::INSTALLED_ROOT)]
        store: PathBuf,
        #[command(flatten)]
        mirrors: MirrorsArgs,
        /// The import of an attached medium (what the udev-started unit runs): a source that
        /// carries no payload (an ISO without /payload) is left alone, said and not an error,
        /// and a payload the store holds and records as available is not verified and copied
        /// again (without it, every blob the store holds is hashed again).
        #[arg(long)]
        attached: bool,
    },
    /// Remove a payload (by its ID); refused while the container storage holds one of its
    /// images or a deployment (booted, staged, rollback or other) runs one.
    Remove {
        id: String,
        #[arg(long, default_value = imgmode_ibi::payload::registry::INSTALLED_ROOT)]
        store: PathBuf,
        #[command(flatten)]
        users: UsersArgs,
        #[command(flatten)]
        mirrors: MirrorsArgs,
    },
    /// Stop serving payloads on this host (what deleting the InternalReleaseImage does):
    /// refused while anything uses an image of a payload held; otherwise the payload registry
    /// is stopped and disabled, its files, the trust for localhost:22625, the registries.conf
    /// mirrors and the import's udev rule and unit removed, and the store deleted with its
    /// record. Pulls go to the images' own registries again.
    OptOut {
        #[arg(long, default_value = imgmode_ibi::payload::registry::INSTALLED_ROOT)]
        store: PathBuf,
        /// The root whose /etc holds the registry's files, unit and mirrors.
        #[arg(long, default_value = "/", value_parser = crate::args::existing_dir)]
        root: PathBuf,
        #[command(flatten)]
        users: UsersArgs,
    },
    /// Copy payloads from another control-plane node's payload registry: every payload it
    /// serves that this store does not hold as available yet (or those --id names). Each is
    /// read from its record image (imgmode-payloads:<hex of its ID>), its images copied by
    /// digest and checked against the record, then added as `payload add` adds one (recorded
    /// in the InternalReleaseImage, mirrors written anew). What each control-plane node runs
    /// once a payload is imported on one of them (docs/guide/registry-less.md).
    Pull {
        /// The node to copy from: its name or address, optionally with :port (22625 when none).
        #[arg(long)]
        registry: String,
        /// A payload to copy, by its ID (sha256:…); repeatable. Default: every payload the
        /// node serves.
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<String>,
        #[arg(long, default_value = imgmode_ibi::payload::registry::INSTALLED_ROOT)]
        store: PathBuf,
        #[command(flatten)]
        mirrors: MirrorsArgs,
        /// Credentials for the node's registry (containers-auth.json). Default: the pull
        /// secret's auth for the node, else the one it holds for localhost:22625 (the payload
        /// registry's credentials, the same on every node installed with that pull secret).
        #[arg(long, value_parser = crate::args::existing_file)]
        authfile: Option<PathBuf>,
        /// The pull secret read when --authfile is not given.
        #[arg(long, default_value = PULL_SECRET)]
        pull_secret: PathBuf,
        /// A directory of CA certificates (*.crt) trusted for the node's registry: its CA
        /// (/etc/imgmode/payload/ca.crt there, or the additionalTrustBundle its `imgmode payload
        /// join-config` prints). Default: the system's trust only.
        #[arg(long, value_parser = crate::args::existing_dir)]
        cert_dir: Option<PathBuf>,
    },
    /// Make the payload registry's certificate name this host: localhost, its host name, every
    /// global address and, once post-pivot has named the cluster, api-int.<cluster>.<domain>.
    /// Issued again under the host's registry CA when a name is missing; run by
    /// imgmode-payload-tls.service before every start of the registry.
    Tls {
        /// The root whose /etc/imgmode/payload holds the registry's TLS.
        #[arg(long, default_value = "/", value_parser = crate::args::existing_dir)]
        root: PathBuf,
        /// post-pivot's state directory (its reconfigured.json names the cluster).
        #[arg(long, default_value = imgmode_seed::postpivot::STATE_DIR)]
        post_pivot_state: PathBuf,
    },
    /// Print the installation config's part for a new node that installs from this host's
    /// payload registry with no other network: imageDigestSources mirroring every repository
    /// held to REGISTRY, and the registry's CA as additionalTrustBundle (docs/guide/registry-less.md).
    JoinConfig {
        /// How the new node reaches this host: api-int.<cluster>.<domain> or an address,
        /// optionally with :port (22625 when none). The registry's certificate must name it.
        #[arg(long)]
        registry: String,
        #[arg(long, default_value = imgmode_ibi::payload::registry::INSTALLED_ROOT)]
        store: PathBuf,
        /// The root whose /etc/imgmode/payload holds the registry's TLS.
        #[arg(long, default_value = "/", value_parser = crate::args::existing_dir)]
        root: PathBuf,
    },
}

/// Where the mirrors of what the store holds go.
#[derive(Debug, clap::Args)]
pub struct MirrorsArgs {
    /// The registries.conf drop-in written anew for every repository the store then holds
    /// (removed when it holds none). Default: /etc/containers/registries.conf.d/60-imgmode-payload.conf
    /// when --store is the host's own store (the one served on port 22625), none otherwise.
    #[arg(long, value_name = "FILE")]
    pub mirrors_conf: Option<PathBuf>,
}

impl MirrorsArgs {
    /// The mirrors file for `store`.
    pub fn for_store(&self, store: &std::path::Path) -> Option<PathBuf> {
        self.mirrors_conf.clone().or_else(|| {
            (store == std::path::Path::new(imgmode_ibi::payload::registry::INSTALLED_ROOT))
                .then(|| imgmode_ibi::payload::registry::MIRRORS_CONF.into())
        })
    }
}

/// What counts as using a payload's images.
#[derive(Debug, clap::Args)]
pub struct UsersArgs {
    /// The container storage whose images count as in use (default
    /// /var/lib/containers/storage; when given, it must exist).
    #[arg(long, value_parser = crate::args::existing_dir)]
    pub storage: Option<PathBuf>,
    /// The ostree sysroot whose deployments' images count as in use (none when it has no
    /// ostree/, as on a host that is not an ostree system).
    #[arg(long, default_value = "/", value_parser = crate::args::existing_dir)]
    pub sysroot: PathBuf,
    /// The cluster's etcd (e.g. http://127.0.0.1:2379): the release its ClusterVersion runs
    /// (status.desired.image, by digest) counts as in use. Without it the cluster's release
    /// is not looked at (a host that runs no cluster).
    #[arg(long, value_name = "URL")]
    pub etcd_endpoint: Option<String>,
    /// An https:// etcd's CA (a real cluster's: on an OpenShift node, the etcd-serving CA
    /// bundle of /etc/kubernetes/static-pod-resources/etcd-certs).
    #[arg(long, value_name = "FILE", requires_all = ["etcd_endpoint", "etcd_cert", "etcd_key"], value_parser = crate::args::existing_file)]
    pub etcd_cacert: Option<PathBuf>,
    /// The client certificate an https:// etcd requires.
    #[arg(long, value_name = "FILE", requires_all = ["etcd_endpoint", "etcd_cacert", "etcd_key"], value_parser = crate::args::existing_file)]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's key (0600).
    #[arg(long, value_name = "FILE", requires_all = ["etcd_endpoint", "etcd_cacert", "etcd_cert"], value_parser = crate::args::existing_file)]
    pub etcd_key: Option<PathBuf>,
}

impl UsersArgs {
    /// What uses images on the host these options name.
    pub fn users(&self) -> Result<imgmode_ibi::payload::store::Users> {
        let storage = self
            .storage
            .clone()
            .unwrap_or_else(|| DEFAULT_STORAGE.into());
        let mut users = imgmode_ibi::payload::store::Users::of_host(&storage, &self.sysroot)?;
        if let Some(e) = &self.etcd_endpoint {
            let tls = match (&self.etcd_cacert, &self.etcd_cert, &self.etcd_key) {
                (Some(ca), Some(cert), Some(key)) => Some(imgmode_recert::etcd::ClientTls {
                    ca: ca.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            };
            users.add_cluster_release(e, tls.as_ref())?;
        }
        Ok(users)
    }
}

#[derive(Debug, clap::Args)]
pub struct MirrorArgs {
    /// An image to mirror (repeatable).
    #[arg(long = "image", value_name = "IMAGE")]
    pub images: Vec<String>,
    /// A file of images, one per line (# comments).
    #[arg(long = "images", value_name = "FILE")]
    pub images_file: Option<PathBuf>,
    #[arg(long)]
    pub dir: PathBuf,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

impl MirrorArgs {
    /// The mirror's options: the `--image`s, then the `--images` file's.
    pub fn opts(self) -> Result<mirror::MirrorOpts> {
        let mut images = self
            .images
            .iter()
            .map(|a| mirror::MirrorImage::parse(a).with_context(|| format!("--image {a:?}")))
            .collect::<Result<Vec<_>>>()?;
        if let Some(f) = &self.images_file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading --images {}", f.display()))?;
            for (n, line) in text.lines().enumerate() {
                let l = line.split('#').next().unwrap_or("").trim();
                if l.is_empty() {
                    continue;
                }
                images.push(mirror::MirrorImage::parse(l).with_context(|| {
                    format!(
                        "{}:{}: {} is not an image to mirror (one IMAGE or IMAGE=REPO[:TAG] per line, # comments)",
                        f.display(),
                        n + 1,
                        imgmode_support::validate::shown(l)
                    )
                })?);
            }
        }
        anyhow::ensure!(
            !images.is_empty(),
            "no images: give --image IMAGE (repeatable) or --images FILE"
        );
        Ok(mirror::MirrorOpts {
            images,
            dir: self.dir,
            auth: self.registry.into(),
        })
    }
}
