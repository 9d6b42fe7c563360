//! The SeedReconfiguration contract: what the configuration ISO carries to an installed copy of
//! a seed, in lifecycle-agent's JSON names (`cluster-configuration/manifest.json` on the volume
//! labelled `cluster-config`, plus `extra-manifests/`). `imgmode-ibi` writes it; post-pivot
//! ([`crate::postpivot`]) reads and applies it.
//!
//! imgmode adds one field to lifecycle-agent's: `admin_signer_private_key`, so recert re-signs
//! the cluster's own admin client certificates under the new admin CA.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The ISO's volume label, which post-pivot waits for.
pub const VOLUME_LABEL: &str = "cluster-config";
pub const MANIFEST_PATH: &str = "cluster-configuration/manifest.json";
pub const EXTRA_MANIFESTS: &str = "extra-manifests";

/// The subjects' common names of the signers fixed by the configuration (OpenShift's names).
pub const LB_SIGNER_CN: &str = "kube-apiserver-lb-signer";
pub const LOCALHOST_SIGNER_CN: &str = "kube-apiserver-localhost-signer";
pub const SERVICE_NETWORK_SIGNER_CN: &str = "kube-apiserver-service-network-signer";
pub const ADMIN_SIGNER_CN: &str = "admin-kubeconfig-signer";

/// The cluster-wide proxy (`proxy` of install-config and of the installation config).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Proxy {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub http_proxy: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub https_proxy: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub no_proxy: String,
}

impl Proxy {
    pub fn is_set(&self) -> bool {
        !self.http_proxy.is_empty() || !self.https_proxy.is_empty()
    }
}

/// lifecycle-agent's SeedReconfiguration (`cluster-configuration/manifest.json`), plus
/// imgmode's `admin_signer_private_key` (see the module docs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SeedReconfiguration {
    pub api_version: u32,
    pub base_domain: String,
    pub cluster_name: String,
    pub cluster_id: String,
    pub infra_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub release_registry: String,
    pub hostname: String,
    pub kubeconfig_crypto_retention: KubeconfigCryptoRetention,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ssh_key: String,
    pub kubeadmin_password_hash: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub raw_nm_state_config: String,
    pub pull_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Proxy>,
    pub install_config: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chrony_config: String,
    #[serde(rename = "additionalTrustBundle", default)]
    pub additional_trust_bundle: TrustBundle,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machine_networks: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrustBundle {
    #[serde(rename = "userCaBundle", default)]
    pub user_ca_bundle: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KubeconfigCryptoRetention {
    pub kube_api_crypto: KubeApiCrypto,
    #[serde(default)]
    pub ingress_crypto: IngressCrypto,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KubeApiCrypto {
    pub serving_crypto: ServingCrypto,
    pub client_auth_crypto: ClientAuthCrypto,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServingCrypto {
    pub loadbalancer_external_signer_private_key: String,
    pub localhost_signer_private_key: String,
    pub service_network_signer_private_key: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClientAuthCrypto {
    pub admin_ca_certificate: String,
    /// imgmode: the admin signer's key, so recert re-signs the cluster's own admin client
    /// certificates under the new CA.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub admin_signer_private_key: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IngressCrypto {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ingress_ca: String,
}

impl SeedReconfiguration {
    /// The `(CN, PEM key)` pairs post-pivot gives recert as `use_key_rules`.
    pub fn kept_keys(&self) -> Vec<(&'static str, &str)> {
        let s = &self.kubeconfig_crypto_retention.kube_api_crypto;
        [
            (
                LB_SIGNER_CN,
                s.serving_crypto
                    .loadbalancer_external_signer_private_key
                    .as_str(),
            ),
            (
                LOCALHOST_SIGNER_CN,
                s.serving_crypto.localhost_signer_private_key.as_str(),
            ),
            (
                SERVICE_NETWORK_SIGNER_CN,
                s.serving_crypto.service_network_signer_private_key.as_str(),
            ),
            (
                ADMIN_SIGNER_CN,
                s.client_auth_crypto.admin_signer_private_key.as_str(),
            ),
        ]
        .into_iter()
        .filter(|(_, k)| !k.trim().is_empty())
        .collect()
    }
}
