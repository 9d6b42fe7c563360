//! `imgmode ibi create-config-image --dir DIR`: the configuration ISO of an image-based
//! install (`openshift-install image-based create config-image`). Reads DIR's
//! `install-config.yaml` and `image-based-config.yaml` (kind `ImageBasedConfig`), writes
//! `DIR/imagebasedconfig.iso` (volume label `cluster-config`) holding
//! `cluster-configuration/manifest.json` (a SeedReconfiguration) and `extra-manifests/`
//! (DIR's `extra-manifests/`, when present), and `DIR/auth/kubeadmin-password` and
//! `DIR/auth/kubeconfig` for the new cluster.
//!
//! The kubeconfig works after post-pivot because the API's signers are fixed here: new keys for
//! the load-balancer, localhost and service-network serving signers and for the admin
//! kubeconfig signer travel in the manifest, and post-pivot hands them to recert as
//! `use_key_rules`, so recert re-signs the cluster's certificates with exactly these keys. The
//! kubeconfig trusts CA certificates made from the serving keys and authenticates with a client
//! certificate from the admin key.

use crate::ibiconfig::Proxy;
use anyhow::{bail, ensure, Context, Result};
use imgmode_builder::cmd::Run;
use imgmode_layering::objects::parse_yaml;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const KIND: &str = "ImageBasedConfig";
pub const API_VERSION: &str = "v1beta1";
/// The ISO's volume label, which post-pivot waits for.
pub const VOLUME_LABEL: &str = "cluster-config";
pub const ISO_NAME: &str = "imagebasedconfig.iso";
pub const MANIFEST_PATH: &str = "cluster-configuration/manifest.json";
pub const EXTRA_MANIFESTS: &str = "extra-manifests";

/// The subjects' common names of the signers fixed by the configuration (OpenShift's names).
pub const LB_SIGNER_CN: &str = "kube-apiserver-lb-signer";
pub const LOCALHOST_SIGNER_CN: &str = "kube-apiserver-localhost-signer";
pub const SERVICE_NETWORK_SIGNER_CN: &str = "kube-apiserver-service-network-signer";
pub const ADMIN_SIGNER_CN: &str = "admin-kubeconfig-signer";

/// `image-based-config.yaml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageBasedConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: crate::ibiconfig::Metadata,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub release_registry: String,
    /// nmstate YAML, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_config: Option<serde_yaml::Value>,
    #[serde(default)]
    pub node_labels: BTreeMap<String, String>,
    #[serde(default, rename = "clusterID")]
    pub cluster_id: String,
    #[serde(default, rename = "infraID")]
    pub infra_id: String,
    #[serde(default, rename = "additionalNTPSources")]
    pub additional_ntp_sources: Vec<String>,
}

impl ImageBasedConfig {
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let c: Self = parse_yaml(text, what)?;
        crate::ibiconfig::check_type(what, &c.kind, &c.api_version, KIND, API_VERSION)?;
        if c.hostname.trim().is_empty() {
            bail!("{what}: hostname is required");
        }
        if !valid_dns_label(&c.hostname.replace('.', "-")) {
            bail!("{what}: hostname {:?} is not a valid host name", c.hostname);
        }
        Ok(c)
    }
}

/// What imgmode reads of `install-config.yaml` (the rest is carried verbatim in the manifest).
#[derive(Debug, Clone, Default)]
pub struct InstallConfig {
    pub cluster_name: String,
    pub base_domain: String,
    pub pull_secret: String,
    pub ssh_key: String,
    pub additional_trust_bundle: String,
    pub proxy: Option<Proxy>,
    pub machine_networks: Vec<String>,
    pub fips: bool,
    /// The file as written.
    pub raw: String,
}

fn valid_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl InstallConfig {
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let v: serde_yaml::Value = parse_yaml(text, what)?;
        let s = |path: &[&str]| -> String {
            let mut cur = &v;
            for p in path {
                match cur.get(p) {
                    Some(n) => cur = n,
                    None => return String::new(),
                }
            }
            cur.as_str().unwrap_or_default().trim().to_string()
        };
        if s(&["apiVersion"]) != "v1" {
            bail!("{what}: apiVersion must be v1 (an install-config.yaml)");
        }
        let c = InstallConfig {
            cluster_name: s(&["metadata", "name"]),
            base_domain: s(&["baseDomain"]),
            pull_secret: s(&["pullSecret"]),
            ssh_key: s(&["sshKey"]),
            additional_trust_bundle: s(&["additionalTrustBundle"]),
            proxy: v
                .get("proxy")
                .map(|p| serde_yaml::from_value(p.clone()))
                .transpose()
                .with_context(|| format!("{what}: proxy"))?,
            machine_networks: v
                .get("networking")
                .and_then(|n| n.get("machineNetwork"))
                .and_then(|m| m.as_sequence())
                .map(|seq| {
                    seq.iter()
                        .filter_map(|e| e.get("cidr")?.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            fips: v.get("fips").and_then(|f| f.as_bool()).unwrap_or(false),
            raw: text.to_string(),
        };
        for (name, val) in [
            ("metadata.name", &c.cluster_name),
            ("baseDomain", &c.base_domain),
            ("pullSecret", &c.pull_secret),
        ] {
            if val.is_empty() {
                bail!("{what}: {name} is required");
            }
        }
        if !valid_dns_label(&c.cluster_name) {
            bail!(
                "{what}: metadata.name {:?} is not a valid cluster name (lowercase letters, digits and '-')",
                c.cluster_name
            );
        }
        let ps: serde_json::Value = serde_json::from_str(&c.pull_secret)
            .with_context(|| format!("{what}: pullSecret is not JSON"))?;
        ensure!(
            ps.get("auths").is_some_and(|a| a.is_object()),
            "{what}: pullSecret has no \"auths\" object"
        );
        Ok(c)
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

/// What `create-config-image` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigImage {
    pub iso: PathBuf,
    pub kubeconfig: PathBuf,
    pub kubeadmin_password: PathBuf,
    pub cluster_name: String,
    pub base_domain: String,
    pub cluster_id: String,
    pub infra_id: String,
    pub hostname: String,
    pub extra_manifests: usize,
}

pub(crate) struct Signer {
    key: PKey<Private>,
    cert: X509,
}

fn name(ou: Option<&str>, o: Option<&str>, cn: &str) -> Result<openssl::x509::X509Name> {
    let mut n = X509NameBuilder::new()?;
    if let Some(o) = o {
        n.append_entry_by_text("O", o)?;
    }
    if let Some(ou) = ou {
        n.append_entry_by_text("OU", ou)?;
    }
    n.append_entry_by_text("CN", cn)?;
    Ok(n.build())
}

fn serial() -> Result<openssl::asn1::Asn1Integer> {
    let mut bn = BigNum::new()?;
    bn.rand(127, openssl::bn::MsbOption::MAYBE_ZERO, false)?;
    Ok(bn.to_asn1_integer()?)
}

/// A self-signed CA with OpenShift's signer subject (encoded OU=openshift, then CN=<cn>, as
/// OpenShift's Go tooling writes it). No key identifiers: a
/// client trusting it matches the cluster's re-signed CA by name and key alone.
pub(crate) fn ca(cn: &str, days: u32) -> Result<Signer> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let subject = name(Some("openshift"), None, cn)?;
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let sn = serial()?;
    b.set_serial_number(&sn)?;
    b.set_subject_name(&subject)?;
    b.set_issuer_name(&subject)?;
    b.set_pubkey(&key)?;
    let (nb, na) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(days)?);
    b.set_not_before(&nb)?;
    b.set_not_after(&na)?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .digital_signature()
            .build()?,
    )?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok(Signer {
        key,
        cert: b.build(),
    })
}

/// The `system:admin` client certificate under `signer`.
fn admin_client(signer: &Signer) -> Result<Signer> {
    leaf(
        signer,
        Some("system:masters"),
        "system:admin",
        &[],
        false,
        3650,
    )
}

/// A TLS server certificate for `names` (DNS names and IP addresses) under `signer`.
pub(crate) fn server_cert(signer: &Signer, cn: &str, names: &[&str], days: u32) -> Result<Signer> {
    leaf(signer, None, cn, names, true, days)
}

/// A leaf certificate (server or client) under `signer`, with `sans` as DNS names or IPs.
fn leaf(
    signer: &Signer,
    o: Option<&str>,
    cn: &str,
    sans: &[&str],
    server: bool,
    days: u32,
) -> Result<Signer> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let sn = serial()?;
    b.set_serial_number(&sn)?;
    let subject = name(None, o, cn)?;
    b.set_subject_name(&subject)?;
    b.set_issuer_name(signer.cert.subject_name())?;
    b.set_pubkey(&key)?;
    let (nb, na) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(days)?);
    b.set_not_before(&nb)?;
    b.set_not_after(&na)?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()?,
    )?;
    let mut eku = ExtendedKeyUsage::new();
    if server {
        eku.server_auth();
    } else {
        eku.client_auth();
    }
    b.append_extension(eku.build()?)?;
    if !sans.is_empty() {
        let mut san = openssl::x509::extension::SubjectAlternativeName::new();
        for n in sans {
            if n.parse::<std::net::IpAddr>().is_ok() {
                san.ip(n);
            } else {
                san.dns(n);
            }
        }
        let ext = san.build(&b.x509v3_context(Some(&signer.cert), None))?;
        b.append_extension(ext)?;
    }
    b.sign(&signer.key, MessageDigest::sha256())?;
    Ok(Signer {
        key,
        cert: b.build(),
    })
}

pub(crate) fn pem_cert(s: &Signer) -> Result<String> {
    Ok(String::from_utf8(s.cert.to_pem()?)?)
}

pub(crate) fn pem_key(s: &Signer) -> Result<String> {
    Ok(String::from_utf8(s.key.private_key_to_pem_pkcs8()?)?)
}

/// A kubeadmin password shaped like OpenShift's: four dash-separated groups of five.
fn kubeadmin_password() -> String {
    (0..4)
        .map(|_| crate::testcluster::random_suffix(5))
        .collect::<Vec<_>>()
        .join("-")
}

/// The nmstate config as YAML text ("" when none).
fn nmstate_text(v: &Option<serde_yaml::Value>) -> Result<String> {
    Ok(match v {
        Some(v) if !v.is_null() => serde_yaml::to_string(v)?,
        _ => String::new(),
    })
}

/// Write `DIR/imagebasedconfig.iso` and `DIR/auth/`.
pub fn create(dir: &Path) -> Result<ConfigImage> {
    imgmode_builder::cmd::require_tools(&["xorriso"])?;
    let read = |f: &str| -> Result<(String, String)> {
        let p = dir.join(f);
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "reading {}: create-config-image needs install-config.yaml and image-based-config.yaml in --dir",
                p.display()
            )
        })?;
        Ok((text, p.display().to_string()))
    };
    let (t, what) = read("install-config.yaml")?;
    let ic = InstallConfig::parse(&t, &what)?;
    let (t, what) = read("image-based-config.yaml")?;
    let ib = ImageBasedConfig::parse(&t, &what)?;
    let iso = dir.join(ISO_NAME);
    let auth = dir.join("auth");
    for p in [
        &iso,
        &auth.join("kubeconfig"),
        &auth.join("kubeadmin-password"),
    ] {
        ensure!(
            !p.exists(),
            "{} exists; move it away (it belongs to an earlier configuration) and run again",
            p.display()
        );
    }
    let extra_dir = dir.join(EXTRA_MANIFESTS);
    let mut extra: Vec<PathBuf> = vec![];
    if extra_dir.is_dir() {
        for e in std::fs::read_dir(&extra_dir)? {
            let p = e?.path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
            ensure!(
                p.is_file() && matches!(ext, "yaml" | "yml" | "json"),
                "{}: extra manifests are .yaml, .yml or .json files",
                p.display()
            );
            for v in crate::postpivot::manifest_docs(&p)? {
                for field in ["apiVersion", "kind"] {
                    ensure!(
                        v.get(field).and_then(|f| f.as_str()).is_some(),
                        "{}: a manifest has no {field}",
                        p.display()
                    );
                }
                ensure!(
                    v.get("metadata")
                        .and_then(|m| m.get("name"))
                        .and_then(|n| n.as_str())
                        .is_some(),
                    "{}: a manifest has no metadata.name",
                    p.display()
                );
            }
            extra.push(p);
        }
    }
    extra.sort();

    let lb = ca(LB_SIGNER_CN, 3650)?;
    let localhost = ca(LOCALHOST_SIGNER_CN, 3650)?;
    let service = ca(SERVICE_NETWORK_SIGNER_CN, 3650)?;
    let admin = ca(ADMIN_SIGNER_CN, 3650)?;
    let client = admin_client(&admin)?;
    let password = kubeadmin_password();
    let hash = bcrypt::hash(&password, 10).context("hashing the kubeadmin password")?;
    let cluster_id = if ib.cluster_id.is_empty() {
        crate::testcluster::random_uuid()
    } else {
        ib.cluster_id.clone()
    };
    let infra_id = if ib.infra_id.is_empty() {
        format!(
            "{}-{}",
            ic.cluster_name,
            crate::testcluster::random_suffix(5)
        )
    } else {
        ib.infra_id.clone()
    };
    let chrony = ib
        .additional_ntp_sources
        .iter()
        .map(|s| format!("server {s} iburst\n"))
        .collect::<String>();
    let nm = nmstate_text(&ib.network_config)?;
    let network = crate::nmstate::to_networkd(&nm).with_context(|| {
        format!(
            "{}: networkConfig",
            dir.join("image-based-config.yaml").display()
        )
    })?;
    let manifest = SeedReconfiguration {
        api_version: 1,
        base_domain: ic.base_domain.clone(),
        cluster_name: ic.cluster_name.clone(),
        cluster_id: cluster_id.clone(),
        infra_id: infra_id.clone(),
        node_ip: crate::nmstate::first_static_ipv4(&network).unwrap_or_default(),
        release_registry: ib.release_registry.clone(),
        hostname: ib.hostname.clone(),
        kubeconfig_crypto_retention: KubeconfigCryptoRetention {
            kube_api_crypto: KubeApiCrypto {
                serving_crypto: ServingCrypto {
                    loadbalancer_external_signer_private_key: pem_key(&lb)?,
                    localhost_signer_private_key: pem_key(&localhost)?,
                    service_network_signer_private_key: pem_key(&service)?,
                },
                client_auth_crypto: ClientAuthCrypto {
                    admin_ca_certificate: pem_cert(&admin)?,
                    admin_signer_private_key: pem_key(&admin)?,
                },
            },
            ingress_crypto: IngressCrypto::default(),
        },
        ssh_key: ic.ssh_key.clone(),
        kubeadmin_password_hash: hash,
        raw_nm_state_config: nm,
        pull_secret: ic.pull_secret.clone(),
        proxy: ic.proxy.clone().filter(Proxy::is_set),
        install_config: ic.raw.clone(),
        chrony_config: chrony,
        additional_trust_bundle: TrustBundle {
            user_ca_bundle: ic.additional_trust_bundle.clone(),
        },
        machine_networks: ic.machine_networks.clone(),
        node_labels: ib.node_labels.clone(),
    };

    // the ISO's tree, then the ISO through a temporary name
    let stage = tempfile::Builder::new()
        .prefix(".imgmode-config-")
        .tempdir_in(dir)
        .with_context(|| format!("creating a temporary directory in {}", dir.display()))?;
    let cc = stage.path().join("tree/cluster-configuration");
    std::fs::create_dir_all(&cc)?;
    std::fs::write(
        cc.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    let em = stage.path().join("tree").join(EXTRA_MANIFESTS);
    std::fs::create_dir_all(&em)?;
    for p in &extra {
        std::fs::copy(p, em.join(p.file_name().expect("a file")))?;
    }
    let tmp_iso = stage.path().join(ISO_NAME);
    Run::new("xorriso")
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-J",
            "-R",
            "-V",
            VOLUME_LABEL,
            "-o",
        ])
        .arg(&tmp_iso)
        .arg(stage.path().join("tree"))
        .output()
        .context("writing the configuration ISO with xorriso")?;

    let server = format!("https://api.{}.{}:6443", ic.cluster_name, ic.base_domain);
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let ca_bundle = pem_cert(&lb)? + &pem_cert(&localhost)? + &pem_cert(&service)?;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: {name}\ncontexts:\n- context:\n    cluster: {name}\n    user: admin\n  name: admin\ncurrent-context: admin\npreferences: {{}}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(&ca_bundle),
        b64(&pem_cert(&client)?),
        b64(&pem_key(&client)?),
        name = ic.cluster_name,
    );
    let sauth = stage.path().join("auth");
    for (f, content) in [("kubeconfig", kubeconfig), ("kubeadmin-password", password)] {
        crate::write_private(&sauth.join(f), &content)?;
    }
    // everything is complete: move into place
    std::fs::create_dir_all(&auth)?;
    std::fs::rename(sauth.join("kubeconfig"), auth.join("kubeconfig"))?;
    std::fs::rename(
        sauth.join("kubeadmin-password"),
        auth.join("kubeadmin-password"),
    )?;
    std::fs::rename(&tmp_iso, &iso)?;
    Ok(ConfigImage {
        iso,
        kubeconfig: auth.join("kubeconfig"),
        kubeadmin_password: auth.join("kubeadmin-password"),
        cluster_name: ic.cluster_name,
        base_domain: ic.base_domain,
        cluster_id,
        infra_id,
        hostname: ib.hostname,
        extra_manifests: extra.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const INSTALL_CONFIG: &str = "apiVersion: v1\nmetadata:\n  name: ibi1\nbaseDomain: example.org\nnetworking:\n  machineNetwork:\n  - cidr: 10.0.2.0/24\n  networkType: OVNKubernetes\ncontrolPlane:\n  name: master\n  replicas: 1\ncompute:\n- name: worker\n  replicas: 0\nplatform:\n  none: {}\npullSecret: '{\"auths\":{\"r.example\":{\"auth\":\"eDp5\"}}}'\nsshKey: ssh-ed25519 AAAAC3Nza test\n";
    pub(crate) const IB_CONFIG: &str = "apiVersion: v1beta1\nkind: ImageBasedConfig\nmetadata:\n  name: ibi1\nhostname: node1\nreleaseRegistry: quay.io\nnodeLabels:\n  node-role.kubernetes.io/edge: \"\"\nadditionalNTPSources:\n- 10.0.2.2\n";

    #[test]
    fn configs_are_read_and_required_fields_named() {
        let ic = InstallConfig::parse(INSTALL_CONFIG, "ic").unwrap();
        assert_eq!(ic.cluster_name, "ibi1");
        assert_eq!(ic.machine_networks, vec!["10.0.2.0/24"]);
        let e = InstallConfig::parse(
            &INSTALL_CONFIG.replace("baseDomain: example.org\n", ""),
            "ic",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "ic: baseDomain is required");
        let e = InstallConfig::parse(&INSTALL_CONFIG.replace("name: ibi1", "name: IBI_1"), "ic")
            .unwrap_err();
        assert!(e.to_string().contains("not a valid cluster name"), "{e}");
        let ib = ImageBasedConfig::parse(IB_CONFIG, "ib").unwrap();
        assert_eq!(ib.hostname, "node1");
        assert_eq!(ib.additional_ntp_sources, vec!["10.0.2.2"]);
        let e = ImageBasedConfig::parse(&format!("{IB_CONFIG}hostName: x\n"), "ib").unwrap_err();
        assert!(e.to_string().contains("unknown field `hostName`"), "{e}");
        let e =
            ImageBasedConfig::parse(&IB_CONFIG.replace("hostname: node1\n", ""), "ib").unwrap_err();
        assert_eq!(e.to_string(), "ib: hostname is required");
    }

    #[test]
    fn signers_verify_the_admin_client_and_carry_no_key_ids() {
        let admin = ca(ADMIN_SIGNER_CN, 10).unwrap();
        let client = admin_client(&admin).unwrap();
        assert!(client.cert.verify(&admin.key).unwrap());
        assert!(admin.cert.subject_key_id().is_none());
        assert!(client.cert.authority_key_id().is_none());
        let subject: Vec<String> = admin
            .cert
            .subject_name()
            .entries()
            .map(|e| e.data().to_string().unwrap())
            .collect();
        assert_eq!(subject, vec!["openshift", ADMIN_SIGNER_CN]);
        let p = kubeadmin_password();
        assert_eq!(p.len(), 23);
        assert_eq!(p.split('-').count(), 4);
    }
}
