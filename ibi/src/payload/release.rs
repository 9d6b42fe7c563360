//! The host's declarative record of the releases it holds, shaped like the registry-less
//! enhancement's `InternalReleaseImage` (a singleton named `cluster`): `spec.releases` the
//! payloads wanted, `status.releases` per payload its conditions, each with the status,
//! reason, message and the time it last changed:
//!
//! - `Importing`: a copy into the store is running (from a mirror directory or an ISO);
//! - `Available`: the payload is in the store, served on `localhost:22625`;
//! - `Degraded`: the last import failed; the reason and message say why.
//!
//! It lives in the store, next to the payloads' records ([`RECORD`]); `imgmode payload
//! status` prints it and the cluster's tooling reads the file (JSON, written atomically).
//! `add` and `remove` change it under the store's lock.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The record's file in a store.
pub const RECORD: &str = "internalreleaseimage.json";
pub const API_VERSION: &str = "imgmode.io/v1alpha1";
pub const KIND: &str = "InternalReleaseImage";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InternalReleaseImage {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
    pub status: Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub releases: Vec<Named>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Named {
    /// The payload's ID (`imgmode payload status` lists them).
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub releases: Vec<ReleaseStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseStatus {
    pub name: String,
    /// Where it was imported from (a mirror directory, an ISO's device or file).
    pub source: String,
    /// Its images, by digest.
    pub images: Vec<String>,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    /// `"True"` or `"False"`, as Kubernetes conditions spell them.
    pub status: String,
    pub last_transition_time: String,
    pub reason: String,
    pub message: String,
}

pub const IMPORTING: &str = "Importing";
pub const AVAILABLE: &str = "Available";
pub const DEGRADED: &str = "Degraded";

/// What happened to a release, and the conditions it leaves (Importing, Available, Degraded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Importing,
    Available,
    Degraded,
}

impl Default for InternalReleaseImage {
    fn default() -> Self {
        Self::empty()
    }
}

impl InternalReleaseImage {
    fn empty() -> Self {
        Self {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            metadata: Metadata {
                name: "cluster".into(),
            },
            spec: Spec::default(),
            status: Status::default(),
        }
    }

    /// The record of `store` (an empty one when there is none yet).
    pub fn read(store: &Path) -> Result<Self> {
        let p = store.join(RECORD);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| {
                format!(
                    "{} is malformed; remove it and add the payloads again",
                    p.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::empty()),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    pub fn write(&self, store: &Path) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        imgmode_support::fs::write_atomic(&store.join(RECORD), &text, 0o644)
    }

    /// The status of the release `name`.
    pub fn release(&self, name: &str) -> Option<&ReleaseStatus> {
        self.status.releases.iter().find(|r| r.name == name)
    }

    /// Record `phase` for the release `name` (wanted in `spec` from now on) at `now`
    /// (RFC 3339): its three conditions set, each one's transition time kept unless its status
    /// changed.
    pub fn set(
        &mut self,
        name: &str,
        source: &str,
        images: &[String],
        phase: Phase,
        message: &str,
        now: &str,
    ) {
        if !self.spec.releases.iter().any(|r| r.name == name) {
            self.spec.releases.push(Named { name: name.into() });
        }
        let i = match self.status.releases.iter().position(|r| r.name == name) {
            Some(i) => i,
            None => {
                self.status.releases.push(ReleaseStatus {
                    name: name.into(),
                    source: source.into(),
                    images: vec![],
                    conditions: vec![],
                });
                self.status.releases.len() - 1
            }
        };
        let r = &mut self.status.releases[i];
        r.source = source.into();
        r.images = images.to_vec();
        let (reason_importing, reason_available, reason_degraded) = match phase {
            Phase::Importing => ("Copying", "NotYetCopied", "AsExpected"),
            Phase::Available => ("Copied", "ReleaseCopied", "AsExpected"),
            Phase::Degraded => ("Stopped", "NotCopied", "ImportFailed"),
        };
        let row = |kind: &'static str, of: Phase, reason: &'static str| {
            (
                kind,
                phase == of,
                reason,
                if phase == of { message } else { "" },
            )
        };
        let rows = [
            row(IMPORTING, Phase::Importing, reason_importing),
            row(AVAILABLE, Phase::Available, reason_available),
            row(DEGRADED, Phase::Degraded, reason_degraded),
        ];
        for (kind, on, reason, msg) in rows {
            let status = if on { "True" } else { "False" };
            match r.conditions.iter_mut().find(|c| c.kind == kind) {
                Some(c) => {
                    if c.status != status {
                        c.last_transition_time = now.into();
                    }
                    c.status = status.into();
                    c.reason = reason.into();
                    c.message = msg.into();
                }
                None => r.conditions.push(Condition {
                    kind: kind.into(),
                    status: status.into(),
                    last_transition_time: now.into(),
                    reason: reason.into(),
                    message: msg.into(),
                }),
            }
        }
    }

    /// The release `name` is no longer held: out of `spec` and `status`.
    pub fn forget(&mut self, name: &str) {
        self.spec.releases.retain(|r| r.name != name);
        self.status.releases.retain(|r| r.name != name);
    }

    /// Whether `name`'s `kind` condition is `True`.
    pub fn is(&self, name: &str, kind: &str) -> bool {
        self.release(name).is_some_and(|r| {
            r.conditions
                .iter()
                .any(|c| c.kind == kind && c.status == "True")
        })
    }
}

/// Now, as a condition's transition time (RFC 3339, seconds, UTC).
pub fn now() -> String {
    imgmode_support::time::rfc3339(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_follow_an_import_and_keep_their_transition_times() {
        let td = tempfile::tempdir().unwrap();
        let mut r = InternalReleaseImage::read(td.path()).unwrap();
        assert_eq!(r.kind, KIND);
        let imgs = vec!["sha256:aa".to_string()];
        r.set("p1", "/dev/sr1", &imgs, Phase::Importing, "copying", "T1");
        assert!(r.is("p1", IMPORTING) && !r.is("p1", AVAILABLE) && !r.is("p1", DEGRADED));
        r.set("p1", "/dev/sr1", &imgs, Phase::Available, "served", "T2");
        assert!(r.is("p1", AVAILABLE) && !r.is("p1", IMPORTING));
        let c = |k: &str| {
            r.release("p1")
                .unwrap()
                .conditions
                .iter()
                .find(|c| c.kind == k)
                .unwrap()
                .clone()
        };
        assert_eq!(c(AVAILABLE).last_transition_time, "T2");
        assert_eq!(c(IMPORTING).last_transition_time, "T2");
        // Degraded stayed False: its time is the first one
        assert_eq!(c(DEGRADED).last_transition_time, "T1");
        assert_eq!(c(AVAILABLE).reason, "ReleaseCopied");
        r.write(td.path()).unwrap();
        let back = InternalReleaseImage::read(td.path()).unwrap();
        assert_eq!(back, r);
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(td.path().join(RECORD)).unwrap()).unwrap();
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(v["metadata"]["name"], "cluster");
        assert_eq!(v["spec"]["releases"][0]["name"], "p1");
        assert_eq!(
            v["status"]["releases"][0]["conditions"][1]["type"],
            AVAILABLE
        );
        assert_eq!(
            v["status"]["releases"][0]["conditions"][1]["lastTransitionTime"],
            "T2"
        );

        r.set("p2", "/x", &[], Phase::Degraded, "no room", "T3");
        assert!(r.is("p2", DEGRADED));
        assert_eq!(r.spec.releases.len(), 2);
        r.forget("p2");
        assert_eq!(r.spec.releases.len(), 1);
        assert!(r.release("p2").is_none());

        // unknown fields are refused
        std::fs::write(
            td.path().join(RECORD),
            br#"{"apiVersion":"x","kind":"y","metadata":{"name":"c"},"spec":{"releases":[]},"status":{"releases":[]},"extra":1}"#,
        )
        .unwrap();
        let e = InternalReleaseImage::read(td.path()).unwrap_err();
        assert!(format!("{e:#}").contains("malformed"), "{e:#}");
    }
}
