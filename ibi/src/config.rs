//! `image-based-installation-config.yaml`: the OpenShift installer's
//! `ImageBasedInstallationConfig` (`v1beta1`), read as users already write it. A field imgmode
//! does not support is reported by name instead of being dropped.

use anyhow::{bail, ensure, Context, Result};
use imgmode_seed::reconfig::Proxy;
use imgmode_support::yaml::{check_type, parse as parse_yaml};
use serde::{Deserialize, Serialize};

pub const KIND: &str = "ImageBasedInstallationConfig";
pub const API_VERSION: &str = "v1beta1";
/// The installer's defaults for the container storage partition.
pub const DEFAULT_EXTRA_PARTITION_LABEL: &str = "varlibcontainers";
/// The installation ISO's volume label (`installiso::LABEL`), which an installed host's payload
/// import matches (`payload::registry::import_files`).
pub const INSTALL_ISO_LABEL: &str = "imgmode-ibi";
pub const DEFAULT_EXTRA_PARTITION_NUMBER: u32 = 5;
pub const DEFAULT_EXTRA_PARTITION_START: &str = "-40G";

/// Fields the installer knows that imgmode does not implement.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "ignitionConfigOverride",
        "imgmode's live system is not configured by Ignition",
    ),
    (
        "coreosInstallerArgs",
        "imgmode writes the base OS itself, not with coreos-installer",
    ),
    (
        "precacheBestEffort",
        "precaching here always fails on the first image it cannot pull",
    ),
    ("precacheDisabled", "precaching cannot be turned off"),
    (
        "useContainersFolder",
        "container storage is always the extra partition",
    ),
];

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageDigestSource {
    pub source: String,
    #[serde(default)]
    pub mirrors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
}

impl Metadata {
    /// The config object's own name and namespace: DNS names when given.
    pub fn check(&self, what: &str) -> Result<()> {
        use imgmode_support::validate as v;
        if !self.name.is_empty() {
            v::field(what, "metadata.name", &self.name, v::dns_name)?;
        }
        if !self.namespace.is_empty() {
            v::field(what, "metadata.namespace", &self.namespace, v::dns_label)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageBasedInstallationConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub seed_image: String,
    #[serde(default)]
    pub seed_version: String,
    #[serde(default)]
    pub installation_disk: String,
    #[serde(default)]
    pub pull_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_partition_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_partition_number: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_partition_start: Option<String>,
    #[serde(default)]
    pub skip_disk_cleanup: bool,
    #[serde(default)]
    pub shutdown: bool,
    /// nmstate YAML, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_config: Option<yaml_serde::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Proxy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_digest_sources: Vec<ImageDigestSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_trust_bundle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_registry: Option<String>,
}

impl ImageBasedInstallationConfig {
    /// What the seed's compatibility gates check this installation against.
    pub fn gate_target(&self, architecture: &str, fips: bool) -> imgmode_seed::gates::Target {
        imgmode_seed::gates::Target {
            seed_version: self.seed_version.clone(),
            architecture: architecture.to_string(),
            fips,
            proxy: self.has_proxy(),
            extra_partition_label: self.extra_partition_label().to_string(),
        }
    }
}

impl ImageBasedInstallationConfig {
    /// Parse and validate; `what` names the file in messages.
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let raw: yaml_serde::Value = parse_yaml(text, what)?;
        if let Some(m) = raw.as_mapping() {
            for (k, _) in m {
                let Some(k) = k.as_str() else { continue };
                if let Some((_, why)) = UNSUPPORTED.iter().find(|(f, _)| *f == k) {
                    bail!("{what}: field {k} is not supported by imgmode ({why}); remove it");
                }
            }
        }
        let c: Self = parse_yaml(text, what)?;
        check_type(what, &c.kind, &c.api_version, KIND, API_VERSION)?;
        for (name, v) in [
            ("seedImage", &c.seed_image),
            ("seedVersion", &c.seed_version),
            ("installationDisk", &c.installation_disk),
            ("pullSecret", &c.pull_secret),
        ] {
            if v.trim().is_empty() {
                bail!("{what}: {name} is required");
            }
        }
        c.check_values(what)?;
        Ok(c)
    }

    /// Every value checked before it reaches a unit, a file, registries.conf or a disk: a
    /// newline in `seedImage` or `installationDisk` must never become a unit directive.
    fn check_values(&self, what: &str) -> Result<()> {
        use imgmode_support::validate as v;
        self.metadata.check(what)?;
        v::field(what, "seedImage", &self.seed_image, |s| {
            v::single_line(s)?;
            if s.contains(char::is_whitespace) {
                return Err("holds a space; an image reference has none".into());
            }
            imgmode_image::imgref::parse(&seed_reference(s))
                .map(|_| ())
                .map_err(|e| format!("is not an image reference: {e}"))
        })?;
        v::field(what, "seedVersion", &self.seed_version, v::release_version)?;
        v::field(
            what,
            "installationDisk",
            &self.installation_disk,
            v::device_path,
        )?;
        let ps: serde_json::Value = serde_json::from_str(&self.pull_secret).with_context(|| {
            format!("{what}: pullSecret is not JSON; it must be a pull secret such as {{\"auths\":{{...}}}}")
        })?;
        ensure!(
            ps.get("auths").is_some_and(|a| a.is_object()),
            "{what}: pullSecret has no \"auths\" object"
        );
        if let Some(k) = self
            .ssh_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            v::field(what, "sshKey", k, v::ssh_public_keys)?;
        }
        if let Some(l) = &self.extra_partition_label {
            v::field(what, "extraPartitionLabel", l, v::partition_label)?;
        }
        if let Some(n) = self.extra_partition_number {
            ensure!(
                (1..=128).contains(&n),
                "{what}: extraPartitionNumber {n} is not a GPT partition number (1 to 128)"
            );
        }
        if let Some(st) = self
            .extra_partition_start
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            v::field(what, "extraPartitionStart", st, |s| {
                imgmode_support::size::parse_size(s.strip_prefix('-').unwrap_or(s))
                    .map(|_| ())
                    .map_err(|_| {
                        "is not a size (e.g. -40G: 40 GiB before the disk's end, or 100G: at 100 GiB)"
                            .to_string()
                    })
            })?;
        }
        if let Some(r) = self.release_registry.as_deref().filter(|s| !s.is_empty()) {
            v::field(what, "releaseRegistry", r, v::registry_location)?;
        }
        for (i, src) in self.image_digest_sources.iter().enumerate() {
            v::field(
                what,
                &format!("imageDigestSources[{i}].source"),
                &src.source,
                v::registry_location,
            )?;
            for m in &src.mirrors {
                v::field(
                    what,
                    &format!("imageDigestSources[{i}] mirror"),
                    m,
                    v::registry_location,
                )?;
            }
        }
        if let Some(p) = &self.proxy {
            check_proxy(what, p)?;
        }
        if let Some(b) = self
            .additional_trust_bundle
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            check_trust_bundle(what, b)?;
        }
        if let Some(n) = &self.network_config {
            let text = yaml_serde::to_string(n)?;
            imgmode_seed::nmstate::to_networkd(&text)
                .with_context(|| format!("{what}: networkConfig"))?;
        }
        Ok(())
    }

    pub fn extra_partition_label(&self) -> &str {
        self.extra_partition_label
            .as_deref()
            .filter(|l| !l.is_empty())
            .unwrap_or(DEFAULT_EXTRA_PARTITION_LABEL)
    }

    pub fn has_proxy(&self) -> bool {
        self.proxy.as_ref().is_some_and(Proxy::is_set)
    }
}

/// The seed reference as a transport reference: the installer's `seedImage` is a registry
/// reference without a transport (`quay.io/org/seed:tag`); any imgmode image argument works.
pub fn seed_reference(seed_image: &str) -> String {
    let s = seed_image.trim();
    if s.contains('/') && imgmode_image::imgref::parse(s).is_err() {
        format!("docker://{s}")
    } else {
        s.to_string()
    }
}

/// A proxy's URLs and noProxy list (install-config and ImageBasedInstallationConfig alike).
pub fn check_proxy(what: &str, p: &Proxy) -> Result<()> {
    use imgmode_support::validate as v;
    for (name, val) in [
        ("proxy.httpProxy", &p.http_proxy),
        ("proxy.httpsProxy", &p.https_proxy),
    ] {
        if !val.is_empty() {
            v::field(what, name, val, v::proxy_url)?;
        }
    }
    if !p.no_proxy.is_empty() {
        v::field(what, "proxy.noProxy", &p.no_proxy, v::no_proxy)?;
    }
    Ok(())
}

/// `additionalTrustBundle`: PEM certificates, each parsed with OpenSSL.
pub fn check_trust_bundle(what: &str, pem: &str) -> Result<()> {
    let certs = openssl::x509::X509::stack_from_pem(pem.as_bytes()).map_err(|e| {
        anyhow::anyhow!("{what}: additionalTrustBundle is not PEM certificates: {e}")
    })?;
    ensure!(
        !certs.is_empty(),
        "{what}: additionalTrustBundle holds no certificate (-----BEGIN CERTIFICATE----- blocks)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: v1beta1\nkind: ImageBasedInstallationConfig\nmetadata:\n  name: example\nseedImage: quay.io/example/seed:4.17\nseedVersion: 4.17.0\ninstallationDisk: /dev/vda\npullSecret: '{\"auths\":{}}'\nsshKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMmW4fGQ0d2dDqJv1c3Q8w6l9Q2S8Cz1b9wY0mX7o0vT a\nextraPartitionStart: -40G\nnetworkConfig:\n  interfaces: []\n";

    #[test]
    fn reads_the_installers_config() {
        let c = ImageBasedInstallationConfig::parse(GOOD, "cfg").unwrap();
        assert_eq!(c.seed_version, "4.17.0");
        assert_eq!(c.extra_partition_label(), "varlibcontainers");
        assert!(!c.has_proxy());
    }

    #[test]
    fn missing_unknown_and_unsupported_fields_are_named() {
        let e =
            ImageBasedInstallationConfig::parse(&GOOD.replace("seedVersion: 4.17.0\n", ""), "cfg")
                .unwrap_err();
        assert_eq!(e.to_string(), "cfg: seedVersion is required");
        let e = ImageBasedInstallationConfig::parse(&format!("{GOOD}seedVesrion: x\n"), "cfg")
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `seedVesrion`"), "{e}");
        assert!(e.to_string().contains("line 13 column"), "{e}");
        let e = ImageBasedInstallationConfig::parse(
            &format!("{GOOD}ignitionConfigOverride: '{{}}'\n"),
            "cfg",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cfg: field ignitionConfigOverride is not supported"),
            "{e}"
        );
    }
}
