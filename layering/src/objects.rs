//! Image mode objects as a cluster admin writes them (`machineconfiguration.openshift.io/v1`).
//!
//! Only what imgmode acts on is modelled; a field imgmode does not support is refused by name
//! rather than silently dropped.

use anyhow::{anyhow, bail, Context, Result};
use imgmode_os::node::{current_imgref, switch, UpdateOpts, UpdateOutcome};
use ostree_ext::container::OstreeImageReference;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    pub other: BTreeMap<String, yaml_serde::Value>,
}

fn is_empty_value(v: &yaml_serde::Value) -> bool {
    match v {
        yaml_serde::Value::Null => true,
        yaml_serde::Value::Sequence(s) => s.is_empty(),
        yaml_serde::Value::Mapping(m) => m.is_empty(),
        yaml_serde::Value::String(s) => s.is_empty(),
        _ => false,
    }
}

use imgmode_support::yaml::parse as parse_yaml;

/// Check an object's `kind`, `apiVersion` and `metadata.name`.
pub fn check_type_meta(
    what: &str,
    kind: &str,
    api_version: &str,
    meta: &ObjectMeta,
    want_kind: &str,
) -> Result<()> {
    imgmode_support::yaml::check_type(what, kind, api_version, want_kind, API_VERSION)?;
    if meta.name.is_empty() {
        bail!("{what}: metadata.name is required");
    }
    // a Kubernetes object name (a DNS subdomain); it also names files (MachineOSBuild records)
    imgmode_support::validate::field(
        what,
        "metadata.name",
        &meta.name,
        imgmode_support::validate::dns_name,
    )?;
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

/// What the node remembers after `apply-machineconfig`, and after `revert` until the revert
/// has booted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MachineConfigState {
    pub name: String,
    pub os_image_url: String,
    /// The image the node followed before the first MachineConfig.
    pub revert_to: String,
    /// `revert` staged the switch back to `revert_to`. The record stays until the node runs
    /// `revert_to`: a power cut while the revert is finalized at shutdown boots the
    /// MachineConfig's deployment again, which must still be revertible.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reverting: bool,
}

/// A revert is over: it was staged and the node runs the image it reverted to.
fn reverted_already(state: &MachineConfigState, running: &str) -> bool {
    state.reverting && running == state.revert_to
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
    imgmode_support::fs::write_atomic(path, contents, 0o600)
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

/// Where the node remembers which MachineConfig it applied and what it ran before.
pub fn machineconfig_state_path(sysroot_path: &Path) -> PathBuf {
    // /var of the booted system; for a non-booted sysroot, its stateroot's /var is not known
    // here, so the state lives next to the sysroot.
    if sysroot_path == Path::new("/") {
        PathBuf::from("/var/lib/imgmode/machineconfig.json")
    } else {
        sysroot_path.join("imgmode-machineconfig.json")
    }
}

/// Apply a MachineConfig's `osImageURL` (a digest): switch to it and remember the image to
/// revert to.
pub fn apply_machineconfig(
    sysroot_path: &Path,
    mc: &MachineConfig,
    opts: &UpdateOpts,
) -> Result<UpdateOutcome> {
    let target = mc.os_image_ref()?;
    let state_path = machineconfig_state_path(sysroot_path);
    let previous = match MachineConfigState::load(&state_path)? {
        Some(s) => s.revert_to,
        None => current_imgref(sysroot_path)?.to_string(),
    };
    let out = switch(sysroot_path, &target, opts)?;
    if !opts.check {
        MachineConfigState {
            name: mc.metadata.name.clone(),
            os_image_url: mc.spec.os_image_url.clone().unwrap_or_default(),
            revert_to: previous,
            reverting: false,
        }
        .save(&state_path)?;
    }
    Ok(out)
}

/// The MachineConfig was deleted: go back to the image the node ran before it. The node's
/// record is marked, not removed, until the node runs that image (see
/// [`MachineConfigState::reverting`]).
pub fn revert(sysroot_path: &Path, opts: &UpdateOpts) -> Result<UpdateOutcome> {
    let state_path = machineconfig_state_path(sysroot_path);
    let mut state = MachineConfigState::load(&state_path)?.ok_or_else(|| {
        anyhow!(
            "no MachineConfig is applied on this node (no {}); nothing to revert",
            state_path.display()
        )
    })?;
    // what runs is read only for a revert already staged (an image reference is all it needs)
    if state.reverting && reverted_already(&state, &current_imgref(sysroot_path)?.to_string()) {
        std::fs::remove_file(&state_path)
            .with_context(|| format!("removing {}", state_path.display()))?;
        bail!(
            "no MachineConfig is applied on this node: it runs {}, which an earlier revert went back to; nothing to revert",
            state.revert_to
        );
    }
    let target = OstreeImageReference::try_from(state.revert_to.as_str()).map_err(|e| {
        anyhow!(
            "{}: bad revert_to {:?}: {e}",
            state_path.display(),
            state.revert_to
        )
    })?;
    let local = UpdateOpts {
        prefer_local: true,
        ..opts.clone()
    };
    let out = switch(sysroot_path, &target, &local)?;
    if !opts.check && !state.reverting {
        state.reverting = true;
        state.save(&state_path)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn mc(spec: &str) -> String {
        format!("apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n  name: os-layer-custom\n  labels:\n    machineconfiguration.openshift.io/role: worker\nspec:\n{spec}")
    }

    #[test]
    fn object_names_that_are_paths_are_refused() {
        for bad in ["../../x", "/abs", "Up_per", "a\\nb"] {
            let y = mc(&format!("  osImageURL: quay.io/a/b@{D}\n"))
                .replace("name: os-layer-custom", &format!("name: \"{bad}\""));
            let e = MachineConfig::from_yaml(&y, "mc.yaml")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("mc.yaml: metadata.name "), "{bad}: {e}");
        }
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
            reverting: false,
        };
        s.save(&p).unwrap();
        assert_eq!(MachineConfigState::load(&p).unwrap(), Some(s.clone()));
        // the mark is written only when set, and a record without it reads as not reverting
        assert!(!std::fs::read_to_string(&p).unwrap().contains("reverting"));
        let r = MachineConfigState {
            reverting: true,
            ..s
        };
        r.save(&p).unwrap();
        assert_eq!(MachineConfigState::load(&p).unwrap(), Some(r));
    }

    #[test]
    fn a_revert_is_over_once_the_node_runs_its_image() {
        let s = MachineConfigState {
            name: "a".into(),
            os_image_url: "q/a@x".into(),
            revert_to: "ostree-unverified-registry:q/base:1".into(),
            reverting: true,
        };
        // the revert booted
        assert!(reverted_already(&s, "ostree-unverified-registry:q/base:1"));
        // a power cut lost the staged revert: the MachineConfig's image runs, revert again
        assert!(!reverted_already(&s, "ostree-unverified-registry:q/a@x"));
        // never reverted: still applied, whatever runs
        let applied = MachineConfigState {
            reverting: false,
            ..s
        };
        assert!(!reverted_already(
            &applied,
            "ostree-unverified-registry:q/base:1"
        ));
    }
}
