//! A sysroot's deployments as `imgmode status` shows them (`rpm-ostree status --json`'s
//! shape, bootc's vocabulary), read through libostree.

use anyhow::{Context, Result};
use ostree_ext::container::{self as oc, OstreeImageReference};
use ostree_ext::{gio, glib, ostree};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One deployment, in the shape of `rpm-ostree status --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct DeploymentStatus {
    pub id: String,
    pub osname: String,
    pub stateroot: String,
    pub serial: i32,
    pub checksum: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub timestamp: u64,
    pub booted: bool,
    pub staged: bool,
    pub pinned: bool,
    /// The image this deployment follows (`ostree-unverified-image:...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_image_reference: Option<String>,
    /// The manifest digest of the deployed image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_image_reference_digest: Option<String>,
    /// The commit of the image's ostree layers (the `ostree.commit` label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_checksum: Option<String>,
}

/// The whole status: every deployment in boot order, plus which is booted, staged and the
/// rollback target (bootc's vocabulary).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SysrootStatus {
    pub deployments: Vec<DeploymentStatus>,
    pub booted: Option<String>,
    pub staged: Option<String>,
    pub rollback: Option<String>,
}

/// Load the sysroot at `path` (`/` on a booted system).
pub fn load_sysroot(path: &Path) -> Result<ostree::Sysroot> {
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(path)));
    sysroot.load(gio::Cancellable::NONE).with_context(|| {
        format!(
            "loading the ostree sysroot at {}; is this an ostree-booted system?",
            path.display()
        )
    })?;
    Ok(sysroot)
}

/// A deployment's name as `imgmode status` shows it: `<stateroot>-<commit>.<serial>`.
pub fn deployment_id(d: &ostree::Deployment) -> String {
    format!("{}-{}.{}", d.osname(), d.csum(), d.deployserial())
}

/// Read the status of the sysroot at `path` (`/` on a booted system).
pub fn sysroot_status(path: &Path) -> Result<SysrootStatus> {
    let sysroot = load_sysroot(path)?;
    let repo = sysroot.repo();
    let booted = sysroot.booted_deployment();
    let staged = sysroot.staged_deployment();
    let mut out = Vec::new();
    for d in sysroot.deployments() {
        let csum = d.csum().to_string();
        let (commit, _) = repo
            .load_commit(&csum)
            .with_context(|| format!("loading commit {csum}"))?;
        let meta = glib::VariantDict::new(Some(&commit.child_value(0)));
        let version = meta.lookup::<String>("version").ok().flatten();
        let timestamp = ostree::commit_get_timestamp(&commit);
        let imgref = d
            .origin()
            .and_then(|o| o.string("origin", oc::deploy::ORIGIN_CONTAINER).ok())
            .map(|s| s.to_string());
        let digest = oc::store::manifest_digest_from_commit(&commit)
            .ok()
            .map(|d| d.to_string());
        let base_checksum = digest
            .as_ref()
            .and_then(|_| oc::store::query_image_commit(&repo, &csum).ok())
            .and_then(|s| {
                s.configuration
                    .config()
                    .as_ref()
                    .and_then(|c| c.labels().as_ref())
                    .and_then(|l| l.get(oc::OSTREE_COMMIT_LABEL).cloned())
            });
        let osname = d.osname().to_string();
        out.push(DeploymentStatus {
            id: deployment_id(&d),
            stateroot: osname.clone(),
            osname,
            serial: d.deployserial(),
            checksum: csum,
            version,
            timestamp,
            booted: booted.as_ref().is_some_and(|b| b.equal(&d)),
            staged: d.is_staged(),
            pinned: d.is_pinned(),
            container_image_reference: imgref
                .filter(|r| OstreeImageReference::try_from(r.as_str()).is_ok()),
            container_image_reference_digest: digest,
            base_checksum,
        });
    }
    let id_of = |d: &Option<ostree::Deployment>| {
        d.as_ref().and_then(|d| {
            out.iter()
                .find(|s| s.checksum == d.csum().as_str() && s.serial == d.deployserial())
                .map(|s| s.id.clone())
        })
    };
    let booted_id = id_of(&booted);
    let staged_id = id_of(&staged);
    // The rollback deployment is the first non-staged one that is not the booted (or, when not
    // booted, the default) deployment.
    let default_id = booted_id
        .clone()
        .or_else(|| out.iter().find(|d| !d.staged).map(|d| d.id.clone()));
    let rollback = out
        .iter()
        .find(|d| !d.staged && Some(&d.id) != default_id.as_ref())
        .map(|d| d.id.clone());
    Ok(SysrootStatus {
        deployments: out,
        booted: booted_id,
        staged: staged_id,
        rollback,
    })
}

impl SysrootStatus {
    /// The human-readable form (`imgmode status` on a terminal).
    pub fn to_human(&self) -> String {
        let mut s = String::new();
        if self.deployments.is_empty() {
            s.push_str("No deployments.\n");
        }
        for d in &self.deployments {
            let mark = if d.booted { "●" } else { " " };
            let role = if d.staged {
                " (staged)"
            } else if Some(&d.id) == self.rollback.as_ref() {
                " (rollback)"
            } else {
                ""
            };
            s.push_str(&format!("{mark} {}{role}\n", d.id));
            if let Some(r) = &d.container_image_reference {
                s.push_str(&format!("    Image: {r}\n"));
            }
            if let Some(dg) = &d.container_image_reference_digest {
                s.push_str(&format!("    Digest: {dg}\n"));
            }
            if let Some(v) = &d.version {
                s.push_str(&format!("    Version: {v}\n"));
            }
            s.push_str(&format!("    Commit: {}\n", d.checksum));
        }
        s
    }
}
