//! `manifest.json`: the seed cluster info lifecycle-agent records (field names are its JSON
//! tags, so its tools read ours and ours read theirs).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdditionalTrustBundle {
    /// Whether `openshift-config/user-ca-bundle` holds certificates.
    #[serde(rename = "hasUserCaBundle", default)]
    pub has_user_ca_bundle: bool,
    /// The Proxy object's `trustedCA` configmap name.
    #[serde(rename = "proxyConfigmapName", default)]
    pub proxy_configmap_name: String,
}

/// Seed cluster info. Unknown fields written by other versions are ignored on read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeedClusterInfo {
    /// The cluster version the seed was made from (compared with `seedVersion`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub seed_cluster_ocp_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_domain: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_name: String,
    /// The first node IP (older readers use only this one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_ip: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub release_registry: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mirror_registry_configured: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sno_hostname: String,
    /// What re-certified the seed (lifecycle-agent: recert's image; here the imgmode version).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub recert_image_pull_spec: String,
    #[serde(default)]
    pub has_proxy: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_network_cidr: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_network_cidr: Vec<String>,
    #[serde(default)]
    pub has_fips: bool,
    #[serde(rename = "additionalTrustBundle", default)]
    pub additional_trust_bundle: Option<AdditionalTrustBundle>,
    /// The device behind `/var/lib/containers` when it is a separate mount.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_storage_mountpoint_target: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ingress_certificate_cn: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machine_networks: Vec<String>,
}

impl SeedClusterInfo {
    /// Parse the seed cluster info from `manifest.json` in a seed's work directory.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_from(text, "the seed cluster info (manifest.json)")
    }

    /// Parse the seed cluster info from `source`, which the error names (a file, or the seed
    /// image's label).
    pub fn parse_from(text: &str, source: &str) -> Result<Self> {
        let info: Self = serde_json::from_str(text).with_context(|| format!("parsing {source}"))?;
        info.check().with_context(|| format!("checking {source}"))?;
        Ok(info)
    }

    /// Every value the installer and post-pivot use (to compare, and to rename from): the
    /// version, the cluster's name and domain are required; the others, when set, must be what
    /// their names say.
    pub fn check(&self) -> Result<()> {
        use imgmode_support::validate as v;
        let what = "seed cluster info";
        v::field(
            what,
            "seed_cluster_ocp_version",
            &self.seed_cluster_ocp_version,
            v::release_version,
        )?;
        v::field(what, "base_domain", &self.base_domain, v::dns_name)?;
        v::field(what, "cluster_name", &self.cluster_name, v::dns_label)?;
        if !self.node_ip.is_empty() {
            v::field(what, "node_ip", &self.node_ip, v::ip)?;
        }
        for ip in &self.node_ips {
            v::field(what, "node_ips entry", ip, v::ip)?;
        }
        if !self.sno_hostname.is_empty() {
            v::field(what, "sno_hostname", &self.sno_hostname, v::dns_name)?;
        }
        if !self.release_registry.is_empty() {
            v::field(
                what,
                "release_registry",
                &self.release_registry,
                v::registry_location,
            )?;
        }
        for c in self
            .cluster_network_cidr
            .iter()
            .chain(&self.service_network_cidr)
            .chain(&self.machine_networks)
        {
            v::field(what, "network CIDR", c, v::cidr)?;
        }
        for (name, val) in [
            ("recert_image_pull_spec", &self.recert_image_pull_spec),
            ("ingress_certificate_cn", &self.ingress_certificate_cn),
            (
                "container_storage_mountpoint_target",
                &self.container_storage_mountpoint_target,
            ),
        ] {
            if !val.is_empty() {
                v::field(what, name, val, v::single_line)?;
            }
        }
        if let Some(b) = &self.additional_trust_bundle {
            if !b.proxy_configmap_name.is_empty() {
                v::field(
                    what,
                    "additionalTrustBundle.proxyConfigmapName",
                    &b.proxy_configmap_name,
                    v::dns_name,
                )?;
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("seed cluster info serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lifecycle_agent_manifest_and_round_trips() {
        let lca = r#"{"seed_cluster_ocp_version":"4.16.0","base_domain":"example.com","cluster_name":"seed",
            "node_ip":"192.168.126.10","release_registry":"quay.io","sno_hostname":"seed-node",
            "recert_image_pull_spec":"quay.io/edge-infrastructure/recert:v0","has_proxy":false,
            "cluster_network_cidr":["10.128.0.0/14"],"service_network_cidr":["172.30.0.0/16"],
            "has_fips":false,"additionalTrustBundle":{"hasUserCaBundle":false,"proxyConfigmapName":""},
            "container_storage_mountpoint_target":"/dev/vdb","ingress_certificate_cn":"ingress-operator@1",
            "machine_networks":["192.168.126.0/24"],"some_future_field":1}"#;
        let m = SeedClusterInfo::parse(lca).unwrap();
        assert_eq!(m.seed_cluster_ocp_version, "4.16.0");
        assert_eq!(m.container_storage_mountpoint_target, "/dev/vdb");
        assert_eq!(m.service_network_cidr, vec!["172.30.0.0/16"]);
        let again = SeedClusterInfo::parse(&m.to_json()).unwrap();
        assert_eq!(again, m);
        // has_proxy and has_fips are always written, empty strings never
        let j = SeedClusterInfo::default().to_json();
        assert!(j.contains("\"has_proxy\":false") && j.contains("\"has_fips\":false"));
        assert!(!j.contains("base_domain"));
    }
}
