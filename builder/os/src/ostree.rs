//! Thin wrappers over libostree and ostree-ext: encapsulating a commit as an OCI image, and
//! reading a sysroot's deployments for `imgmode status`.
//!
//! libostree is blocking; the few async ostree-ext entry points run on the process's one
//! runtime (`imgmode_support::runtime::block_on`), so callers stay synchronous.

use imgmode_support::cmd::Run;
use anyhow::bail;
use anyhow::{Context, Result};
use ostree_ext::container::{self as oc, OstreeImageReference};
use ostree_ext::{gio, glib, ostree};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use imgmode_support::runtime::block_on;

pub fn open_repo(path: &Path) -> Result<ostree::Repo> {
    let repo = ostree::Repo::new(&gio::File::for_path(path));
    repo.open(gio::Cancellable::NONE)
        .with_context(|| format!("opening ostree repo {}", path.display()))?;
    Ok(repo)
}

/// Encapsulate `rev` of the repo at `repo_path` into the OCI layout directory `dest`.
pub fn encapsulate(
    repo_path: &Path,
    rev: &str,
    labels: BTreeMap<String, String>,
    dest: &Path,
    max_compression: bool,
) -> Result<String> {
    let repo = open_repo(repo_path)?;
    let config = oc::Config {
        labels: Some(labels),
        cmd: Some(vec!["/sbin/init".into()]),
    };
    let mut opts = oc::ExportOpts::default();
    // Split content over several layers so that an update re-downloads only what changed.
    opts.max_layers = std::num::NonZeroU32::new(32);
    // gzip level 1 unless asked otherwise: about 4x faster for ~15% larger layers.
    opts.skip_compression = !max_compression;
    let dest_ref = oc::ImageReference {
        transport: oc::Transport::OciDir,
        name: dest.to_string_lossy().into_owned(),
    };
    let digest = block_on(oc::encapsulate(&repo, rev, &config, Some(opts), &dest_ref))?
        .with_context(|| format!("encapsulating {rev} into {}", dest.display()))?;
    Ok(digest.to_string())
}

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

/// Create an ostree repository (`bare-user` needs no root).
pub fn init_repo(repo: &Path, mode: &str) -> Result<()> {
    Run::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["init", &format!("--mode={mode}")])
        .output()?;
    Ok(())
}

/// Commit the directory `tree` to `branch` of `repo` with the ostree CLI; returns the commit.
pub fn commit_dir(repo: &Path, branch: &str, tree: &Path) -> Result<String> {
    let commit = Run::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["commit", &format!("--branch={branch}"), "--no-bindings"])
        .arg(format!("--tree=dir={}", tree.display()))
        .read()?;
    Ok(commit.trim().to_string())
}

/// Check that a commit holds exactly one kernel (`/usr/lib/modules/*/vmlinuz`) with its
/// initramfs, as `bootc container lint` does.
pub fn require_one_kernel(repo: &Path, commit: &str) -> Result<()> {
    let ls = Run::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args([
            "ls",
            "-R",
            "--nul-filenames-only",
            commit,
            "/usr/lib/modules",
        ])
        .output()?;
    let names: Vec<String> = ls
        .stdout
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let kernels: Vec<&String> = names.iter().filter(|n| n.ends_with("/vmlinuz")).collect();
    if kernels.len() != 1 {
        bail!("commit {commit} has {} kernels under /usr/lib/modules; a bootable image needs exactly one", kernels.len());
    }
    let initramfs = kernels[0].replace("/vmlinuz", "/initramfs.img");
    if !names.contains(&initramfs) {
        bail!("commit {commit} has no {initramfs}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_status() {
        let d = |id: &str, booted, staged| DeploymentStatus {
            id: format!("default-{id}.0"),
            osname: "default".into(),
            stateroot: "default".into(),
            serial: 0,
            checksum: id.into(),
            version: Some("trixie.1".into()),
            timestamp: 0,
            booted,
            staged,
            pinned: false,
            container_image_reference: Some("ostree-unverified-registry:quay.io/x/os:1".into()),
            container_image_reference_digest: Some("sha256:0123".into()),
            base_checksum: None,
        };
        let st = SysrootStatus {
            deployments: vec![
                d("c3", false, true),
                d("a1", true, false),
                d("b2", false, false),
            ],
            booted: Some("default-a1.0".into()),
            staged: Some("default-c3.0".into()),
            rollback: Some("default-b2.0".into()),
        };
        insta::assert_snapshot!(st.to_human());
        insta::assert_json_snapshot!(st);
    }

    /// Commit a tree with the given kernels into a fresh bare-user repo (no root needed).
    fn commit_with_kernels(kernels: &[&str]) -> (tempfile::TempDir, String) {
        let td = tempfile::tempdir().unwrap();
        let repo = td.path().join("repo");
        init_repo(&repo, "bare-user").unwrap();
        let tree = td.path().join("tree");
        std::fs::create_dir_all(tree.join("usr/lib/modules")).unwrap();
        for k in kernels {
            let d = tree.join("usr/lib/modules").join(k);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("vmlinuz"), "k").unwrap();
            std::fs::write(d.join("initramfs.img"), "i").unwrap();
        }
        let commit = commit_dir(&repo, "t", &tree).unwrap();
        (td, commit)
    }

    #[test]
    fn exactly_one_kernel_is_required() {
        let (td, c) = commit_with_kernels(&["6.12.0"]);
        require_one_kernel(&td.path().join("repo"), &c).unwrap();
        let (td, c) = commit_with_kernels(&["6.1.0", "6.12.0"]);
        let err = require_one_kernel(&td.path().join("repo"), &c)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has 2 kernels"), "{err}");
        let (td, c) = commit_with_kernels(&[]);
        let err = require_one_kernel(&td.path().join("repo"), &c)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has 0 kernels"), "{err}");
    }
}
