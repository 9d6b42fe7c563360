//! Compatibility gates between a seed and an installation, decided from the seed's labels and
//! image config (no layer is fetched) and the installation config. Every failing gate is
//! reported, each with what was expected and what the seed has.

use crate::manifest::SeedClusterInfo;
use crate::{LABEL_CLUSTER_INFO, LABEL_FORMAT_VERSION, SEED_FORMAT_VERSION};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;

/// What the installation wants (`imgmode_ibi::config::ImageBasedInstallationConfig::gate_target`
/// makes one from the installer's configuration).
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub seed_version: String,
    /// OCI architecture name (`amd64`, `arm64`).
    pub architecture: String,
    pub fips: bool,
    pub proxy: bool,
    /// The container storage partition's label (always made by the installer).
    pub extra_partition_label: String,
}

/// The seed's format version and cluster info from its labels.
pub fn read_labels(labels: &BTreeMap<String, String>) -> Result<(u32, SeedClusterInfo)> {
    let v = labels.get(LABEL_FORMAT_VERSION).with_context(|| {
        format!("the image has no {LABEL_FORMAT_VERSION} label: it is not a seed image (make one with imgmode seed create)")
    })?;
    let canonical = !v.is_empty()
        && v.chars().all(|c| c.is_ascii_digit())
        && !(v.len() > 1 && v.starts_with('0'));
    let v: u32 = v
        .parse()
        .ok()
        .filter(|_| canonical)
        .with_context(|| {
            format!(
                "{LABEL_FORMAT_VERSION} is {}, not a number such as {SEED_FORMAT_VERSION}; the seed is damaged or was not made by imgmode seed create or lifecycle-agent",
                imgmode_support::validate::shown(v)
            )
        })?;
    let info = labels.get(LABEL_CLUSTER_INFO).with_context(|| {
        format!("the seed image has no {LABEL_CLUSTER_INFO} label (seed cluster info)")
    })?;
    let info = SeedClusterInfo::parse_from(
        info,
        &format!("the seed image's {LABEL_CLUSTER_INFO} label (the seed cluster info); the seed is damaged or was not made by imgmode seed create or lifecycle-agent: make it again"),
    )?;
    Ok((v, info))
}

/// Check every gate; all failures in one error, one per line.
pub fn check(
    labels: &BTreeMap<String, String>,
    seed_arch: &str,
    t: &Target,
) -> Result<SeedClusterInfo> {
    let (version, info) = read_labels(labels)?;
    let mut failed = vec![];
    if version != SEED_FORMAT_VERSION {
        failed.push(format!(
            "seed image format version mismatch: expected {SEED_FORMAT_VERSION}, got {version}"
        ));
    }
    if info.seed_cluster_ocp_version != t.seed_version {
        failed.push(format!(
            "seed version mismatch: the installation config asks for seedVersion {:?}, the seed was made from {:?}",
            t.seed_version, info.seed_cluster_ocp_version
        ));
    }
    if seed_arch != t.architecture {
        failed.push(format!(
            "seed image architecture mismatch: the seed is {seed_arch}, the target is {}",
            t.architecture
        ));
    }
    let on = |b: bool| if b { "enabled" } else { "disabled" };
    if info.has_fips != t.fips {
        failed.push(format!(
            "FIPS mismatch: the seed has FIPS {}, the installation has FIPS {}",
            on(info.has_fips),
            on(t.fips)
        ));
    }
    if info.has_proxy != t.proxy {
        failed.push(format!(
            "proxy mismatch: the seed cluster {} a proxy, the installation config {} one; make the seed from a cluster {} a proxy",
            if info.has_proxy { "uses" } else { "does not use" },
            if t.proxy { "sets" } else { "does not set" },
            if t.proxy { "with" } else { "without" },
        ));
    }
    if !info.container_storage_mountpoint_target.is_empty() && t.extra_partition_label.is_empty() {
        failed.push(format!(
            "container storage mismatch: the seed keeps /var/lib/containers on a separate mount ({}) but the installation creates no partition for it",
            info.container_storage_mountpoint_target
        ));
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(version: &str, info: &SeedClusterInfo) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_FORMAT_VERSION.to_string(), version.to_string()),
            (LABEL_CLUSTER_INFO.to_string(), info.to_json()),
        ])
    }

    fn target() -> Target {
        Target {
            seed_version: "4.17.0".into(),
            architecture: "amd64".into(),
            fips: false,
            proxy: false,
            extra_partition_label: "varlibcontainers".into(),
        }
    }

    fn info() -> SeedClusterInfo {
        SeedClusterInfo {
            seed_cluster_ocp_version: "4.17.0".into(),
            base_domain: "example.com".into(),
            cluster_name: "seed".into(),
            ..Default::default()
        }
    }

    #[test]
    fn labels_that_are_not_what_their_names_say_are_refused() {
        for v in ["4\n", " 4", "04", "+4", ""] {
            let e = read_labels(&labels(v, &info())).unwrap_err().to_string();
            assert!(e.contains("not a number such as 4"), "{v:?}: {e}");
        }
        for (edit, field) in [
            (r#"{"seed_cluster_ocp_version":"4.16.0"}"#, "base_domain"),
            (
                r#"{"seed_cluster_ocp_version":"4.16.0","base_domain":"example.com","cluster_name":"a\u001b[31m\nb"}"#,
                "cluster_name",
            ),
            (
                r#"{"seed_cluster_ocp_version":"4.16.0","base_domain":"example.com","cluster_name":"seed","node_ip":"999.1.1.1"}"#,
                "node_ip",
            ),
            (
                r#"{"seed_cluster_ocp_version":"4.16.0","base_domain":"example.com","cluster_name":"seed","release_registry":"http://evil/\n"}"#,
                "release_registry",
            ),
            ("[]", "seed_cluster_ocp_version"),
        ] {
            let l = BTreeMap::from([
                (LABEL_FORMAT_VERSION.to_string(), "4".to_string()),
                (LABEL_CLUSTER_INFO.to_string(), edit.to_string()),
            ]);
            let e = format!("{:#}", read_labels(&l).unwrap_err());
            assert!(e.contains(field), "{edit}: {e}");
        }
    }

    #[test]
    fn a_matching_seed_passes() {
        check(&labels("4", &info()), "amd64", &target()).unwrap();
    }

    #[test]
    fn every_failing_gate_is_reported() {
        let i = SeedClusterInfo {
            seed_cluster_ocp_version: "4.16.2".into(),
            has_fips: true,
            has_proxy: true,
            ..info()
        };
        let e = check(&labels("3", &i), "arm64", &target())
            .unwrap_err()
            .to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 5, "{e}");
        assert_eq!(
            lines[0],
            "seed image format version mismatch: expected 4, got 3"
        );
        assert!(lines[1].contains("seedVersion \"4.17.0\", the seed was made from \"4.16.2\""));
        assert!(lines[2].contains("the seed is arm64, the target is amd64"));
        assert!(lines[3].starts_with("FIPS mismatch"));
        assert!(lines[4].starts_with("proxy mismatch"));
    }

    #[test]
    fn not_a_seed_image() {
        let e = check(&BTreeMap::new(), "amd64", &target()).unwrap_err();
        assert!(e.to_string().contains("it is not a seed image"), "{e}");
        let mut l = labels("4", &info());
        l.remove(LABEL_CLUSTER_INFO);
        assert!(check(&l, "amd64", &target()).is_err());
    }
}
