//! Image mode objects as a cluster admin writes them (`machineconfiguration.openshift.io/v1`).
//!
//! Only what imgmode acts on is modelled; a field imgmode does not support is refused by name
//! rather than silently dropped.

use anyhow::{anyhow, bail, Context, Result};
use ostree_ext::container::OstreeImageReference;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const API_VERSION: &str = "machineconfiguration.openshift.io/v1";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A `MachineConfig`; imgmode applies `spec.osImageURL`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachineConfig {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: MachineConfigSpec,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachineConfigSpec {
    #[serde(
        rename = "osImageURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_image_url: Option<String>,
    /// Every other field, refused by name when non-empty.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

fn is_empty_value(v: &serde_yaml::Value) -> bool {
    match v {
        serde_yaml::Value::Null => true,
        serde_yaml::Value::Sequence(s) => s.is_empty(),
        serde_yaml::Value::Mapping(m) => m.is_empty(),
        serde_yaml::Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Parse YAML (or JSON) with the file name, line and column in errors.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_yaml::from_str(text).map_err(|e| match e.location() {
        Some(l) => anyhow!("{what}: line {}, column {}: {e}", l.line(), l.column()),
        None => anyhow!("{what}: {e}"),
    })
}

/// Check an object's `kind`, `apiVersion` and `metadata.name`.
pub fn check_type_meta(
    what: &str,
    kind: &str,
    api_version: &str,
    meta: &ObjectMeta,
    want_kind: &str,
) -> Result<()> {
    if kind != want_kind {
        bail!("{what}: kind is {kind:?}, expected {want_kind}");
    }
    if api_version != API_VERSION {
        bail!("{what}: apiVersion is {api_version:?}, expected {API_VERSION}");
    }
    if meta.name.is_empty() {
        bail!("{what}: metadata.name is required");
    }
    Ok(())
}

/// Is `s` a valid `sha256:<64 lowercase hex>` digest?
pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

impl MachineConfig {
    pub fn from_yaml(text: &str, what: &str) -> Result<Self> {
        let mc: MachineConfig = parse_yaml(text, what)?;
        check_type_meta(
            what,
            &mc.kind,
            &mc.api_version,
            &mc.metadata,
            "MachineConfig",
        )?;
        for (k, v) in &mc.spec.other {
            if !is_empty_value(v) {
                bail!(
                    "{what}: spec.{k} is not supported by imgmode (it applies spec.osImageURL); put that configuration into the image's Containerfile"
                );
            }
        }
        Ok(mc)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// The deployment reference of `spec.osImageURL`, which must name a digest.
    pub fn os_image_ref(&self) -> Result<OstreeImageReference> {
        let url = self.spec.os_image_url.as_deref().ok_or_else(|| {
            anyhow!(
                "MachineConfig {} has no spec.osImageURL; nothing to apply",
                self.metadata.name
            )
        })?;
        os_image_url_ref(url)
    }
}

/// `quay.io/org/img@sha256:...` (optionally `docker://`) -> `ostree-unverified-registry:...`.
/// A tag is refused: image mode pins nodes to a digest.
pub fn os_image_url_ref(url: &str) -> Result<OstreeImageReference> {
    let bare = url.strip_prefix("docker://").unwrap_or(url);
    match bare.rsplit_once('@') {
        Some((name, digest)) if !name.is_empty() && is_sha256_digest(digest) => {}
        Some((_, digest)) => bail!(
            "osImageURL {url:?} has a malformed digest {digest:?}: expected sha256: and 64 lowercase hex digits"
        ),
        None => bail!(
            "osImageURL {url:?} names a tag; image mode needs a digest so that every node runs the same image. Get it with: skopeo inspect --format '{{{{.Digest}}}}' docker://{bare} and write {}@sha256:...",
            bare.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map(|(n, _)| n).unwrap_or(bare)
        ),
    }
    OstreeImageReference::try_from(format!("ostree-unverified-registry:{bare}").as_str())
        .map_err(|e| anyhow!("osImageURL {url:?}: {e}"))
}

/// What the node remembers after `apply-machineconfig`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MachineConfigState {
    pub name: String,
    pub os_image_url: String,
    /// The image the node followed before the first MachineConfig.
    pub revert_to: String,
}

/// The text of `path`, or `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Write `contents` to `path` by temp file + rename, creating its directory (mode 0600).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    imgmode_builder::workdir::write_atomic(path, contents, 0o600)
}

impl MachineConfigState {
    pub fn load(path: &Path) -> Result<Option<Self>> {
        read_optional(path)?
            .map(|t| {
                serde_json::from_str(&t).with_context(|| format!("parsing {}", path.display()))
            })
            .transpose()
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &serde_json::to_vec_pretty(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn mc(spec: &str) -> String {
        format!("apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n  name: os-layer-custom\n  labels:\n    machineconfiguration.openshift.io/role: worker\nspec:\n{spec}")
    }

    #[test]
    fn digest_is_required() {
        let m =
            MachineConfig::from_yaml(&mc(&format!("  osImageURL: quay.io/a/b@{D}\n")), "mc.yaml")
                .unwrap();
        assert_eq!(
            m.os_image_ref().unwrap().to_string(),
            format!("ostree-unverified-registry:quay.io/a/b@{D}")
        );
        let m =
            MachineConfig::from_yaml(&mc("  osImageURL: quay.io/a/b:4.18\n"), "mc.yaml").unwrap();
        let err = m.os_image_ref().unwrap_err().to_string();
        assert!(
            err.contains("names a tag")
                && err.contains("skopeo inspect")
                && err.contains("quay.io/a/b@sha256:"),
            "{err}"
        );
        let err = os_image_url_ref("localhost:5000/x@sha256:ABC")
            .unwrap_err()
            .to_string();
        assert!(err.contains("malformed digest"), "{err}");
        // a registry port is not a tag
        let err = os_image_url_ref("localhost:5000/x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("names a tag") && err.contains("localhost:5000/x@sha256"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_fields_are_named() {
        let err = MachineConfig::from_yaml(
            &mc(&format!(
                "  osImageURL: q/a@{D}\n  extensions: [usbguard]\n"
            )),
            "mc.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("spec.extensions is not supported"), "{err}");
        // empty fields are fine
        MachineConfig::from_yaml(
            &mc(&format!("  osImageURL: q/a@{D}\n  kernelArguments: []\n")),
            "mc.yaml",
        )
        .unwrap();
        let err = MachineConfig::from_yaml(
            "kind: MachineConfig\napiVersion: v1\nmetadata: {name: x}\n",
            "mc.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("apiVersion"), "{err}");
        let err = MachineConfig::from_yaml("kind: [", "mc.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mc.yaml: line"), "{err}");
    }

    #[test]
    fn state_round_trips() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("sub/state.json");
        assert_eq!(MachineConfigState::load(&p).unwrap(), None);
        let s = MachineConfigState {
            name: "a".into(),
            os_image_url: "q/a@x".into(),
            revert_to: "ostree-unverified-registry:q/base:1".into(),
        };
        s.save(&p).unwrap();
        assert_eq!(MachineConfigState::load(&p).unwrap(), Some(s));
    }
}
