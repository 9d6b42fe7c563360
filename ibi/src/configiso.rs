//! `imgmode ibi create-config-image --dir DIR`: the configuration ISO of an image-based
//! install (`openshift-install image-based create config-image`). Reads DIR's
//! `install-config.yaml` and `image-based-config.yaml` (kind `ImageBasedConfig`), writes
//! `DIR/imagebasedconfig.iso` (volume label `cluster-config`) holding
//! `cluster-configuration/manifest.json` (a SeedReconfiguration) and `extra-manifests/`
//! (DIR's `extra-manifests/`, when present), and `DIR/auth/kubeadmin-password` and
//! `DIR/auth/kubeconfig` for the new cluster.
//!
//! The kubeconfig works after post-pivot because the API's signers are fixed here: new keys for
//! the load-balancer, localhost and service-network serving signers travel in the manifest, and
//! post-pivot hands them to recert as `use_key_rules`, so recert re-signs the API's serving
//! certificates with exactly these keys. The admin kubeconfig signer travels as its certificate
//! only (recert's `use_cert_rules` puts it in the API's client CA bundle): the client
//! certificate is made here and the signer's key is dropped when this command ends, so no key
//! that can mint `system:masters` certificates leaves this machine.

use crate::pki::{ca, leaf, pem_cert, pem_key, Signer};
use anyhow::{bail, ensure, Context, Result};
use imgmode_seed::reconfig::{
    ClientAuthCrypto, IngressCrypto, KubeApiCrypto, KubeconfigCryptoRetention, Proxy,
    SeedReconfiguration, ServingCrypto, TrustBundle, ADMIN_SIGNER_CN, EXTRA_MANIFESTS,
    LB_SIGNER_CN, LOCALHOST_SIGNER_CN, SERVICE_NETWORK_SIGNER_CN, VOLUME_LABEL,
};
use imgmode_support::cmd::Run;
use imgmode_support::validate as v;
use imgmode_support::yaml::parse as parse_yaml;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const KIND: &str = "ImageBasedConfig";
pub const API_VERSION: &str = "v1beta1";
pub const ISO_NAME: &str = "imagebasedconfig.iso";

/// `image-based-config.yaml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageBasedConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: crate::config::Metadata,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub release_registry: String,
    /// nmstate YAML, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_config: Option<yaml_serde::Value>,
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
        imgmode_support::yaml::check_type(what, &c.kind, &c.api_version, KIND, API_VERSION)?;
        if c.hostname.trim().is_empty() {
            bail!("{what}: hostname is required");
        }
        if v::dns_name(&c.hostname).is_err() {
            bail!(
                "{what}: hostname {} is not a valid host name",
                v::shown(&c.hostname)
            );
        }
        c.check_fields(what)?;
        Ok(c)
    }

    /// Every optional field a user may write, checked before it reaches a file, a unit, a
    /// certificate or the cluster.
    fn check_fields(&self, what: &str) -> Result<()> {
        self.metadata.check(what)?;
        if !self.release_registry.is_empty() {
            v::field(
                what,
                "releaseRegistry",
                &self.release_registry,
                v::registry_location,
            )?;
        }
        if !self.cluster_id.is_empty() {
            v::field(what, "clusterID", &self.cluster_id, v::uuid)?;
        }
        if !self.infra_id.is_empty() {
            v::field(what, "infraID", &self.infra_id, v::dns_label)?;
        }
        for s in &self.additional_ntp_sources {
            v::field(what, "additionalNTPSources entry", s, v::host)?;
        }
        for (k, val) in &self.node_labels {
            v::field(what, "nodeLabels key", k, v::label_key)?;
            v::field(what, &format!("nodeLabels[{k}]"), val, v::label_value)?;
        }
        Ok(())
    }
}

/// The top-level fields of the OpenShift installer's `install-config.yaml` (`InstallConfig`,
/// apiVersion v1); anything else is a typing mistake and refused.
const INSTALL_CONFIG_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "additionalTrustBundle",
    "additionalTrustBundlePolicy",
    "sshKey",
    "baseDomain",
    "networking",
    "controlPlane",
    "arbiter",
    "compute",
    "platform",
    "pullSecret",
    "proxy",
    "imageContentSources",
    "imageDigestSources",
    "publish",
    "fips",
    "cpuPartitioningMode",
    "credentialsMode",
    "bootstrapInPlace",
    "capabilities",
    "featureSet",
    "featureGates",
    "operatorPublishingStrategy",
];

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

impl InstallConfig {
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let v: yaml_serde::Value = parse_yaml(text, what)?;
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
        if let Some(k) = imgmode_support::yaml::unknown_key(&v, INSTALL_CONFIG_FIELDS) {
            bail!(
                "{what}: unknown field {} (not a field of install-config.yaml: {})",
                v::shown(k),
                INSTALL_CONFIG_FIELDS.join(", ")
            );
        }
        let c = InstallConfig {
            cluster_name: s(&["metadata", "name"]),
            base_domain: s(&["baseDomain"]),
            pull_secret: s(&["pullSecret"]),
            ssh_key: s(&["sshKey"]),
            additional_trust_bundle: s(&["additionalTrustBundle"]),
            proxy: v
                .get("proxy")
                .map(|p| yaml_serde::from_value(p.clone()))
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
        if v::dns_label(&c.cluster_name).is_err() {
            bail!(
                "{what}: metadata.name {} is not a valid cluster name (lowercase letters, digits and '-')",
                v::shown(&c.cluster_name)
            );
        }
        v::field(what, "baseDomain", &c.base_domain, v::dns_name)?;
        for n in &c.machine_networks {
            v::field(what, "networking.machineNetwork cidr", n, v::cidr)?;
        }
        if !c.ssh_key.is_empty() {
            v::field(what, "sshKey", &c.ssh_key, v::ssh_public_keys)?;
        }
        if let Some(p) = &c.proxy {
            crate::config::check_proxy(what, p)?;
        }
        if !c.additional_trust_bundle.is_empty() {
            crate::config::check_trust_bundle(what, &c.additional_trust_bundle)?;
        }
        imgmode_seed::site::digest_sources(text).with_context(|| what.to_string())?;
        single_node(what, &v)?;
        let ps: serde_json::Value = serde_json::from_str(&c.pull_secret)
            .with_context(|| format!("{what}: pullSecret is not JSON"))?;
        ensure!(
            ps.get("auths").is_some_and(|a| a.is_object()),
            "{what}: pullSecret has no \"auths\" object"
        );
        Ok(c)
    }
}

/// An image-based install makes a single-node cluster: `controlPlane.replicas` 1 (when given),
/// no compute replicas, no arbiter.
fn single_node(what: &str, v: &yaml_serde::Value) -> Result<()> {
    let replicas = |n: &yaml_serde::Value| n.get("replicas").and_then(|r| r.as_u64());
    if let Some(r) = v.get("controlPlane").and_then(replicas) {
        ensure!(
            r == 1,
            "{what}: controlPlane.replicas is {r}; an image-based install makes a single-node cluster (replicas: 1)"
        );
    }
    for (i, pool) in v
        .get("compute")
        .and_then(|c| c.as_sequence())
        .map_or(&[][..], |c| c.as_slice())
        .iter()
        .enumerate()
    {
        let r = replicas(pool).unwrap_or(0);
        ensure!(
            r == 0,
            "{what}: compute[{i}].replicas is {r}; an image-based install makes a single-node cluster (replicas: 0)"
        );
    }
    ensure!(
        v.get("arbiter").is_none(),
        "{what}: arbiter is not supported: an image-based install makes a single-node cluster"
    );
    ensure!(
        v.get("bootstrapInPlace").is_none(),
        "{what}: bootstrapInPlace is not supported: an image-based install writes the disk its installation config names"
    );
    Ok(())
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

/// A kubeadmin password shaped like OpenShift's: four dash-separated groups of five.
fn kubeadmin_password() -> String {
    (0..4)
        .map(|_| imgmode_seed::cluster::random_suffix(5))
        .collect::<Vec<_>>()
        .join("-")
}

/// The nmstate config as YAML text ("" when none).
fn nmstate_text(v: &Option<yaml_serde::Value>) -> Result<String> {
    Ok(match v {
        Some(v) if !v.is_null() => yaml_serde::to_string(v)?,
        _ => String::new(),
    })
}

/// The new cluster's signers: the API's three serving signers and the admin kubeconfig's,
/// and the `system:admin` client certificate under the latter.
struct Signers {
    lb: Signer,
    localhost: Signer,
    service: Signer,
    admin: Signer,
    client: Signer,
}

impl Signers {
    fn new() -> Result<Self> {
        let lb = ca(LB_SIGNER_CN, 3650)?;
        let localhost = ca(LOCALHOST_SIGNER_CN, 3650)?;
        let service = ca(SERVICE_NETWORK_SIGNER_CN, 3650)?;
        let admin = ca(ADMIN_SIGNER_CN, 3650)?;
        let client = admin_client(&admin)?;
        Ok(Signers {
            lb,
            localhost,
            service,
            admin,
            client,
        })
    }
}

/// DIR's `install-config.yaml` and `image-based-config.yaml`.
fn read_configs(dir: &Path) -> Result<(InstallConfig, ImageBasedConfig)> {
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
    Ok((ic, ib))
}

/// DIR's `extra-manifests/` files, sorted, each checked: `.yaml`, `.yml` or `.json`, every
/// object with an apiVersion, a kind and a name.
fn extra_manifests(dir: &Path) -> Result<Vec<PathBuf>> {
    let extra_dir = dir.join(EXTRA_MANIFESTS);
    let mut extra: Vec<PathBuf> = vec![];
    if !extra_dir.is_dir() {
        return Ok(extra);
    }
    for e in std::fs::read_dir(&extra_dir)? {
        let p = e?.path();
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
        ensure!(
            p.is_file() && matches!(ext, "yaml" | "yml" | "json"),
            "{}: extra manifests are .yaml, .yml or .json files",
            p.display()
        );
        for v in imgmode_seed::postpivot::manifest_docs(&p)? {
            // its kind, apiVersion and name, and its etcd key and encoding, as post-pivot will
            // write it
            imgmode_seed::postpivot::object_key(&v).with_context(|| p.display().to_string())?;
        }
        extra.push(p);
    }
    extra.sort();
    Ok(extra)
}

/// The SeedReconfiguration post-pivot applies: the configs, the signers' keys, the kubeadmin
/// password's hash, and the cluster and infra IDs (made up when the config has none).
fn seed_reconfiguration(
    dir: &Path,
    ic: &InstallConfig,
    ib: &ImageBasedConfig,
    s: &Signers,
    kubeadmin_password_hash: String,
) -> Result<SeedReconfiguration> {
    let cluster_id = if ib.cluster_id.is_empty() {
        imgmode_seed::cluster::random_uuid()
    } else {
        ib.cluster_id.clone()
    };
    let infra_id = if ib.infra_id.is_empty() {
        format!(
            "{}-{}",
            ic.cluster_name,
            imgmode_seed::cluster::random_suffix(5)
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
    let network = imgmode_seed::nmstate::to_networkd(&nm).with_context(|| {
        format!(
            "{}: networkConfig",
            dir.join("image-based-config.yaml").display()
        )
    })?;
    Ok(SeedReconfiguration {
        api_version: imgmode_seed::reconfig::API_VERSION,
        base_domain: ic.base_domain.clone(),
        cluster_name: ic.cluster_name.clone(),
        cluster_id,
        infra_id,
        node_ip: imgmode_seed::nmstate::first_static_ipv4(&network).unwrap_or_default(),
        release_registry: ib.release_registry.clone(),
        hostname: ib.hostname.clone(),
        kubeconfig_crypto_retention: KubeconfigCryptoRetention {
            kube_api_crypto: KubeApiCrypto {
                serving_crypto: ServingCrypto {
                    loadbalancer_external_signer_private_key: pem_key(&s.lb)?,
                    localhost_signer_private_key: pem_key(&s.localhost)?,
                    service_network_signer_private_key: pem_key(&s.service)?,
                },
                client_auth_crypto: ClientAuthCrypto {
                    // the certificate only: the key stays here (see `reconfig`)
                    admin_ca_certificate: pem_cert(&s.admin)?,
                },
            },
            ingress_crypto: IngressCrypto::default(),
        },
        ssh_key: ic.ssh_key.clone(),
        kubeadmin_password_hash,
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
    })
}

/// The ISO's tree (the manifest and the extra manifests) in `stage`, then the ISO there;
/// returns the ISO.
fn write_iso(stage: &Path, manifest: &SeedReconfiguration, extra: &[PathBuf]) -> Result<PathBuf> {
    let cc = stage.join("tree/cluster-configuration");
    std::fs::create_dir_all(&cc)?;
    // signer keys and the pull secret: the owner's only from the start
    imgmode_support::fs::write_private(
        &cc.join("manifest.json"),
        &serde_json::to_string_pretty(manifest)?,
    )?;
    let em = stage.join("tree").join(EXTRA_MANIFESTS);
    std::fs::create_dir_all(&em)?;
    for p in extra {
        std::fs::copy(p, em.join(p.file_name().expect("a file")))?;
    }
    let tmp_iso = stage.join(ISO_NAME);
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
        .arg(stage.join("tree"))
        .output()
        .context("writing the configuration ISO with xorriso")?;
    Ok(tmp_iso)
}

/// The new cluster's admin kubeconfig: it trusts the serving signers and authenticates with
/// the `system:admin` client certificate.
fn kubeconfig(ic: &InstallConfig, s: &Signers) -> Result<String> {
    let server = format!("https://api.{}.{}:6443", ic.cluster_name, ic.base_domain);
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let ca_bundle = pem_cert(&s.lb)? + &pem_cert(&s.localhost)? + &pem_cert(&s.service)?;
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: {name}\ncontexts:\n- context:\n    cluster: {name}\n    user: admin\n  name: admin\ncurrent-context: admin\npreferences: {{}}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(&ca_bundle),
        b64(&pem_cert(&s.client)?),
        b64(&pem_key(&s.client)?),
        name = ic.cluster_name,
    ))
}

/// Write `DIR/imagebasedconfig.iso` and `DIR/auth/`.
pub fn create(dir: &Path) -> Result<ConfigImage> {
    imgmode_support::cmd::require_tools(&["xorriso"])?;
    let (ic, ib) = read_configs(dir)?;
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
    if let Ok(m) = std::fs::symlink_metadata(&auth) {
        ensure!(
            m.is_dir(),
            "{} exists and is not a directory (a symlink or a file); move it away and run again",
            auth.display()
        );
    }
    let extra = extra_manifests(dir)?;

    let signers = Signers::new()?;
    let password = kubeadmin_password();
    let hash = bcrypt::hash(&password, 10).context("hashing the kubeadmin password")?;
    let manifest = seed_reconfiguration(dir, &ic, &ib, &signers, hash)?;

    // the ISO's tree, then the ISO through a temporary name
    let stage = tempfile::Builder::new()
        .prefix(".imgmode-config-")
        .tempdir_in(dir)
        .with_context(|| format!("creating a temporary directory in {}", dir.display()))?;
    let tmp_iso = write_iso(stage.path(), &manifest, &extra)?;
    let kubeconfig = kubeconfig(&ic, &signers)?;
    let sauth = stage.path().join("auth");
    for (f, content) in [("kubeconfig", kubeconfig), ("kubeadmin-password", password)] {
        imgmode_support::fs::write_private(&sauth.join(f), &content)?;
    }
    // everything is complete: move into place
    if !auth.is_dir() {
        // it holds the cluster's admin credentials: the owner's only
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&auth)
            .with_context(|| format!("creating {}", auth.display()))?;
    }
    std::fs::rename(sauth.join("kubeconfig"), auth.join("kubeconfig"))?;
    std::fs::rename(
        sauth.join("kubeadmin-password"),
        auth.join("kubeadmin-password"),
    )?;
    // it carries signer keys and the pull secret: the owner's only
    std::fs::set_permissions(&tmp_iso, std::fs::Permissions::from_mode(0o600))?;
    std::fs::File::open(&tmp_iso)?.sync_all()?;
    std::fs::rename(&tmp_iso, &iso)?;
    imgmode_support::fs::sync_dir(dir)?;
    Ok(ConfigImage {
        iso,
        kubeconfig: auth.join("kubeconfig"),
        kubeadmin_password: auth.join("kubeadmin-password"),
        cluster_name: ic.cluster_name,
        base_domain: ic.base_domain,
        cluster_id: manifest.cluster_id,
        infra_id: manifest.infra_id,
        hostname: ib.hostname,
        extra_manifests: extra.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const INSTALL_CONFIG: &str = "apiVersion: v1\nmetadata:\n  name: ibi1\nbaseDomain: example.org\nnetworking:\n  machineNetwork:\n  - cidr: 10.0.2.0/24\n  networkType: OVNKubernetes\ncontrolPlane:\n  name: master\n  replicas: 1\ncompute:\n- name: worker\n  replicas: 0\nplatform:\n  none: {}\npullSecret: '{\"auths\":{\"r.example\":{\"auth\":\"eDp5\"}}}'\nsshKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMmW4fGQ0d2dDqJv1c3Q8w6l9Q2S8Cz1b9wY0mX7o0vT test\n";
    pub(crate) const IB_CONFIG: &str = "apiVersion: v1beta1\nkind: ImageBasedConfig\nmetadata:\n  name: ibi1\nhostname: node1\nreleaseRegistry: quay.io\nnodeLabels:\n  node-role.kubernetes.io/edge: \"\"\nadditionalNTPSources:\n- 10.0.2.2\n";

    #[test]
    fn a_multi_node_install_config_is_refused() {
        let base = "apiVersion: v1\nmetadata:\n  name: c\nbaseDomain: example.org\npullSecret: '{\"auths\":{}}'\n";
        InstallConfig::parse(&format!("{base}controlPlane:\n  name: master\n  replicas: 1\ncompute:\n- name: worker\n  replicas: 0\n"), "ic").unwrap();
        for (extra, want) in [
            (
                "controlPlane:\n  replicas: 3\n",
                "controlPlane.replicas is 3",
            ),
            (
                "compute:\n- name: worker\n  replicas: 2\n",
                "compute[0].replicas is 2",
            ),
            ("arbiter:\n  replicas: 1\n", "arbiter is not supported"),
            (
                "bootstrapInPlace:\n  installationDisk: /dev/sda\n",
                "bootstrapInPlace is not supported",
            ),
            ("imageDigestSources:\n- source: quay.io\n", "has no mirrors"),
        ] {
            let e = format!(
                "{:#}",
                InstallConfig::parse(&format!("{base}{extra}"), "ic").unwrap_err()
            );
            assert!(e.contains(want), "{e}");
        }
    }

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
