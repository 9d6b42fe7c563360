//! Seed images in lifecycle-agent's format (`lca-cli create`), and what an installed copy of a
//! seed does on its first boot.
//!
//! - [`create`]: `imgmode seed create` on a running, healthy seed system: stop the cluster,
//!   force-expire its certificates with recert, capture `ostree.tgz`, `etc.tgz`,
//!   `etc.deletions`, `var.tgz` and the status files, and write a one-layer `FROM scratch`
//!   OCI image with the seed labels; then restore the seed system.
//! - [`image`]: writing that image and reading it back (`seed inspect`), labels and config
//!   read without downloading the layer.
//! - [`gates`]: the compatibility gates of `seed check` (and of the installer), decided from
//!   the labels and the installation config before any layer is fetched.
//! - [`manifest`]: `manifest.json`, the seed cluster info (also the `seed_cluster_info`
//!   label).
//! - [`archive`]: the seed's tarballs (GNU tar through gzip or zstd), written and unpacked.
//! - [`cluster`]: the cluster a seed system runs (services, etcd, kubeconfig, static
//!   directories) and its health checks; [`pullsecret`]: the cluster's pull secret in etcd,
//!   a placeholder in seeds.
//! - [`reconfig`]: the SeedReconfiguration contract the configuration ISO carries;
//!   [`postpivot`] applies it on an installed copy's first boot ([`nmstate`] turns its
//!   `networkConfig` into systemd-networkd files, [`site`] its cluster and host settings).
//!
//! The installer that consumes seeds is `imgmode-ibi`.

pub mod archive;
pub mod cluster;
pub mod create;
pub mod gates;
pub mod image;
pub mod manifest;
pub mod nmstate;
pub mod postpivot;
pub mod pullsecret;
pub mod reconfig;
pub mod site;
mod truststore;

/// The seed format this imgmode writes and reads (lifecycle-agent's current one).
pub const SEED_FORMAT_VERSION: u32 = 4;
/// Label holding [`SEED_FORMAT_VERSION`].
pub const LABEL_FORMAT_VERSION: &str = "com.openshift.lifecycle-agent.seed_format_version";
/// Label holding `manifest.json`'s content.
pub const LABEL_CLUSTER_INFO: &str = "com.openshift.lifecycle-agent.seed_cluster_info";
/// Label naming the compression of the seed's tarballs (`gzip` or `zstd`); imgmode's own.
pub const LABEL_COMPRESSION: &str = "io.imgmode.seed.compression";

/// Files every seed holds (besides `ostree-<deployment>.origin` and the tarballs, whose names
/// depend on the compression).
pub const FIXED_FILES: &[&str] = &[
    "containers.list",
    "etc.deletions",
    "manifest.json",
    "mco-currentconfig.json",
    "recert_config.json",
    "rpm-ostree.json",
    "imgmode",
    "lca-cli",
];
/// The tarballs, by stem (`etc` -> `etc.tgz` or `etc.tar.zst`).
pub const TARBALLS: &[&str] = &["ostree", "etc", "var"];
