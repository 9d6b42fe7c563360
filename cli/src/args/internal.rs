//! `imgmode internal`: hidden verbs for tests, benchmarks and fixtures.

use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum InternalCmd {
    /// Unpack one seed tarball into DIR as the installer does (benchmarks).
    SeedUnpack { tarball: PathBuf, dir: PathBuf },
    /// Write one seed tarball of DIR/PATH... (benchmarks): GNU tar piped through the compressor.
    SeedArchive {
        #[arg(long, default_value = "gzip:2")]
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
    GenTestPki(GenTestPkiArgs),
    /// Write the manual pages (imgmode.1, imgmode-VERB.1, imgmode-VERB-SUB.1) into DIR.
    ManPages { dir: PathBuf },
    /// The guides' blocks a VM scenario runs (`sh vm=SCENARIO` in docs/guide/): print the
    /// guest script that runs them, or with --check, check the guest's report of it.
    GuideBlocks {
        scenario: String,
        /// The guest's report (the results log) to check.
        #[arg(long)]
        check: Option<PathBuf>,
    },
}

impl InternalCmd {
    /// The verb as typed (`internal seed-unpack`).
    pub fn verb(&self) -> &'static str {
        match self {
            InternalCmd::SeedUnpack { .. } => "internal seed-unpack",
            InternalCmd::SeedArchive { .. } => "internal seed-archive",
            InternalCmd::TestCluster(c) => c.verb(),
            InternalCmd::MmdebstrapArgs { .. } => "internal mmdebstrap-args",
            InternalCmd::GenTestPki(_) => "internal gen-test-pki",
            InternalCmd::ManPages { .. } => "internal man-pages",
            InternalCmd::GuideBlocks { .. } => "internal guide-blocks",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct GenTestPkiArgs {
    pub dir: PathBuf,
    /// Extra serving certificates under the load-balancer signer.
    #[arg(long, default_value_t = 0)]
    pub extra_leaves: usize,
    /// Write the etcd objects ({key: object}) here; without it every extra leaf is a file.
    #[arg(long)]
    pub etcd_objects: Option<PathBuf>,
    #[arg(long, default_value = "seed")]
    pub cluster_name: String,
    #[arg(long, default_value = "example.com")]
    pub base_domain: String,
    #[arg(long, default_value = "seed-node")]
    pub hostname: String,
    #[arg(long, default_value = "192.168.126.10")]
    pub ip: String,
}

impl GenTestPkiArgs {
    /// The PKI to generate.
    pub fn spec(&self) -> imgmode_testkit::pki::PkiSpec {
        imgmode_testkit::pki::PkiSpec {
            cluster_name: self.cluster_name.clone(),
            base_domain: self.base_domain.clone(),
            hostname: self.hostname.clone(),
            ip: self.ip.clone(),
            extra_leaves: self.extra_leaves,
            extra_in_files_only: self.etcd_objects.is_none(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TestClusterCmd {
    /// First boot: identity, PKI, etcd objects (nothing when already initialized).
    Init(TestClusterInitArgs),
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
    /// Print one etcd object (JSON) by key, or every object under a key ending in `/` (a JSON
    /// array); exit 1 when the key does not exist.
    Get {
        key: String,
        #[arg(long, default_value = "http://127.0.0.1:2379")]
        etcd_endpoint: String,
    },
    /// Move the cluster to the release IMAGE (by digest), as `oc adm upgrade --to-image` and
    /// the cluster version operator would: spec.desiredUpdate, status.desired and
    /// status.history. Prints the release it ran before.
    Upgrade {
        #[arg(long)]
        to_image: String,
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

impl TestClusterCmd {
    /// The verb as typed (`internal test-cluster init`).
    pub fn verb(&self) -> &'static str {
        match self {
            TestClusterCmd::Init(_) => "internal test-cluster init",
            TestClusterCmd::Serve { .. } => "internal test-cluster serve",
            TestClusterCmd::Keys { .. } => "internal test-cluster keys",
            TestClusterCmd::Get { .. } => "internal test-cluster get",
            TestClusterCmd::Upgrade { .. } => "internal test-cluster upgrade",
            TestClusterCmd::Probe { .. } => "internal test-cluster probe",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct TestClusterInitArgs {
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    #[arg(long, default_value = "/var/lib/imgmode-test-cluster")]
    pub state_dir: PathBuf,
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub etcd_endpoint: String,
    #[arg(long, default_value = "seed")]
    pub cluster_name: String,
    #[arg(long, default_value = "example.com")]
    pub base_domain: String,
    #[arg(long, default_value = "4.17.0")]
    pub version: String,
    #[arg(
        long,
        default_value = "quay.io/openshift-release-dev/ocp-release@sha256:0000000000000000000000000000000000000000000000000000000000000000"
    )]
    pub release_image: String,
    #[arg(long, default_value_t = 24)]
    pub extra_leaves: usize,
    #[arg(long)]
    pub hostname: Option<String>,
    #[arg(long)]
    pub ip: Option<String>,
    /// The cluster's proxy (its Proxy object's `httpProxy` and `httpsProxy`): a seed of this
    /// cluster installs only with a proxy.
    #[arg(long)]
    pub proxy: Option<String>,
    /// The proxy's `noProxy` list.
    #[arg(long, requires = "proxy")]
    pub no_proxy: Option<String>,
}

impl TestClusterInitArgs {
    /// The fixture's options; `hostname` (the kernel's) when `--hostname` is not given.
    pub fn opts(self, hostname: Option<String>) -> imgmode_testkit::cluster::InitOpts {
        imgmode_testkit::cluster::InitOpts {
            root: self.root,
            state_dir: self.state_dir,
            etcd_endpoint: self.etcd_endpoint,
            cluster_name: self.cluster_name,
            base_domain: self.base_domain,
            version: self.version,
            release_image: self.release_image,
            extra_leaves: self.extra_leaves,
            hostname: self.hostname.or(hostname),
            ip: self.ip,
            proxy: self.proxy.map(|url| imgmode_seed::reconfig::Proxy {
                http_proxy: url.clone(),
                https_proxy: url,
                no_proxy: self.no_proxy.unwrap_or_default(),
            }),
        }
    }
}
