//! The SeedReconfiguration contract: what the configuration ISO carries to an installed copy of
//! a seed, in lifecycle-agent's JSON names (`cluster-configuration/manifest.json` on the volume
//! labelled `cluster-config`, plus `extra-manifests/`). `imgmode-ibi` writes it; post-pivot
//! ([`crate::postpivot`]) reads and applies it.
//!
//! As in lifecycle-agent, the admin kubeconfig signer travels as its certificate only
//! (`admin_ca_certificate`, recert's `use_cert_rules`): its key stays on the machine that made
//! the configuration, so no key that can mint `system:masters` client certificates reaches a
//! site. The cluster's own `system:admin` clients are signed by the node's admin signer, which
//! recert regenerates like any other key it finds.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The ISO's volume label, which post-pivot waits for.
pub const VOLUME_LABEL: &str = "cluster-config";
/// The SeedReconfiguration `api_version` imgmode writes and reads (lifecycle-agent's).
pub const API_VERSION: u32 = 1;
pub const MANIFEST_PATH: &str = "cluster-configuration/manifest.json";
pub const EXTRA_MANIFESTS: &str = "extra-manifests";

/// The subjects' common names of the signers fixed by the configuration (OpenShift's names).
pub const LB_SIGNER_CN: &str = "kube-apiserver-lb-signer";
pub const LOCALHOST_SIGNER_CN: &str = "kube-apiserver-localhost-signer";
pub const SERVICE_NETWORK_SIGNER_CN: &str = "kube-apiserver-service-network-signer";
pub const ADMIN_SIGNER_CN: &str = "admin-kubeconfig-signer";

/// The cluster-wide proxy (`proxy` of install-config and of the installation config).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
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

/// lifecycle-agent's SeedReconfiguration (`cluster-configuration/manifest.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct TrustBundle {
    #[serde(rename = "userCaBundle", default)]
    pub user_ca_bundle: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KubeconfigCryptoRetention {
    pub kube_api_crypto: KubeApiCrypto,
    #[serde(default)]
    pub ingress_crypto: IngressCrypto,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KubeApiCrypto {
    pub serving_crypto: ServingCrypto,
    pub client_auth_crypto: ClientAuthCrypto,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServingCrypto {
    pub loadbalancer_external_signer_private_key: String,
    pub localhost_signer_private_key: String,
    pub service_network_signer_private_key: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthCrypto {
    /// The new admin kubeconfig CA's certificate (PEM); recert puts it in place of the seed's.
    pub admin_ca_certificate: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
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
        ]
        .into_iter()
        .filter(|(_, k)| !k.trim().is_empty())
        .collect()
    }

    /// The `(CN, PEM certificate)` pairs post-pivot gives recert as `use_cert_rules`: the
    /// admin kubeconfig CA, when the configuration names one.
    pub fn kept_certs(&self) -> Vec<(&'static str, &str)> {
        let c = &self
            .kubeconfig_crypto_retention
            .kube_api_crypto
            .client_auth_crypto;
        [(ADMIN_SIGNER_CN, c.admin_ca_certificate.as_str())]
            .into_iter()
            .filter(|(_, c)| !c.trim().is_empty())
            .collect()
    }
}
