//! Seed images and image-based installation in lifecycle-agent's formats.
//!
//! Will hold: `imgmode seed create` (ostree.tgz, etc.tgz, var.tgz, etc.deletions,
//! rpm-ostree.json, mco-currentconfig.json, the `.origin`, containers.list, manifest.json,
//! recert_config.json, labels `com.openshift.lifecycle-agent.seed_format_version=4` and
//! `seed_cluster_info`), `seed inspect`/`seed check` with the compatibility gates, the IBI
//! install-to-disk steps, the `cluster-config` configuration ISO and post-pivot.
