//! Opting out of registry-less operation on a host (`imgmode payload opt-out`): what deleting
//! the enhancement's `InternalReleaseImage` does. Refused while anything on the host uses an
//! image of a payload held (as `payload remove` is); otherwise the payload registry is stopped
//! and disabled, every file that made the host serve and import payloads is removed (the
//! registry's config, TLS key and htpasswd, its unit, the trust for `localhost:22625`, the
//! `registries.conf` mirrors, the import's udev rule and unit), and the store is deleted with
//! its record. Pulls then go to the images' own registries, as `registries.conf` says without
//! the mirrors.

use crate::payload::registry::{
    CONF_DIR, HOST, IMPORT_RULE, IMPORT_UNIT, MIRRORS_CONF, POST_PIVOT_DROPIN, TLS_UNIT, UNIT,
};
use crate::payload::store::Users;
use anyhow::{ensure, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The paths (relative to the root) that make a host serve and import payloads: what
/// [`crate::payload::registry::RegistrySetup::files`] and
/// [`crate::payload::registry::import_files`] write, by their top directory where a directory
/// is theirs alone.
pub fn served_paths() -> Vec<String> {
    vec![
        CONF_DIR.to_string(),
        format!("etc/systemd/system/{UNIT}"),
        format!("etc/systemd/system/multi-user.target.wants/{UNIT}"),
        format!("etc/containers/certs.d/{HOST}"),
        MIRRORS_CONF.trim_start_matches('/').to_string(),
        IMPORT_RULE.to_string(),
        format!("etc/systemd/system/{IMPORT_UNIT}"),
        format!("etc/systemd/system/{TLS_UNIT}"),
        POST_PIVOT_DROPIN.to_string(),
    ]
}

/// What [`opt_out`] did.
#[derive(Debug, Clone, Serialize)]
pub struct OptedOut {
    /// The payloads deleted, by ID.
    pub payloads: Vec<String>,
    /// The files and directories removed (those that existed).
    pub removed: Vec<PathBuf>,
}

/// Opt the host at `root` out (see the module's documentation): `store` is its payload store,
/// `users` what uses images on it, `systemctl` runs `systemctl` with the arguments given.
pub fn opt_out(
    root: &Path,
    store: &Path,
    users: &Users,
    systemctl: &mut dyn FnMut(&[&str]) -> Result<()>,
) -> Result<OptedOut> {
    let held = if store.is_dir() {
        crate::payload::store::status(store, users)?
    } else {
        vec![]
    };
    let in_use: Vec<String> = held
        .iter()
        .filter(|h| !h.in_use.is_empty())
        .map(|h| format!("{} ({})", h.payload.id, h.uses()))
        .collect();
    ensure!(
        in_use.is_empty(),
        "opting out would delete payloads in use: {}; remove those images or deployments first (imgmode payload status shows what uses them)",
        in_use.join(", ")
    );
    // the registry stops first: nothing is served from a store being deleted
    if root.join(format!("etc/systemd/system/{UNIT}")).exists() {
        systemctl(&["disable", "--now", UNIT])?;
    }
    let mut removed = vec![];
    for rel in served_paths() {
        let p = root.join(rel);
        if std::fs::symlink_metadata(&p).is_ok() {
            imgmode_support::fs::remove_path(&p)?;
            removed.push(p);
        }
    }
    if !removed.is_empty() {
        systemctl(&["daemon-reload"])?;
    }
    if std::fs::symlink_metadata(store).is_ok() {
        imgmode_support::fs::remove_path(store)?;
        removed.push(store.to_path_buf());
    }
    Ok(OptedOut {
        payloads: held.into_iter().map(|h| h.payload.id).collect(),
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::registry::{import_files, RegistrySetup, INSTALLED_ROOT};
    use imgmode_image::mirror::Payload;

    /// Opting out removes every file the install wrote to serve and import payloads, stops the
    /// registry before anything is deleted, and deletes the store; a payload in use refuses it
    /// with nothing changed.
    #[test]
    fn opting_out_leaves_nothing_that_serves_payloads() {
        let td = tempfile::tempdir().unwrap();
        let root = td.path().join("root");
        let s = RegistrySetup {
            ca_pem: "ca".into(),
            cert_pem: "cert".into(),
            key_pem: "key".into(),
            htpasswd: "u:h\n".into(),
            ca_key_pem: Some("ca key".into()),
        };
        let mut files = s.files(
            INSTALLED_ROOT,
            &Payload::default(),
            None,
            false,
            crate::payload::registry::Listen::Cluster,
        );
        files.extend(import_files("imgmode-ibi"));
        crate::payload::registry::write_files(&root, &files).unwrap();
        // the host's own unrelated files stay
        std::fs::create_dir_all(root.join("etc/containers/registries.conf.d")).unwrap();
        std::fs::write(
            root.join("etc/containers/registries.conf.d/01-site.conf"),
            "x",
        )
        .unwrap();
        let store = root.join(INSTALLED_ROOT.trim_start_matches('/'));
        let d = format!("sha256:{}", "a".repeat(64));
        let p = Payload {
            id: "p1".into(),
            images: vec![imgmode_image::mirror::Mirrored {
                source: "docker://quay.io/x/y:1".into(),
                repo: "x/y".into(),
                tag: Some("1".into()),
                digest: d.clone(),
                manifests: 1,
            }],
            architectures: vec!["amd64".into()],
        };
        let recs = store.join(crate::payload::store::RECORDS);
        std::fs::create_dir_all(&recs).unwrap();
        std::fs::write(recs.join("p1.json"), serde_json::to_vec(&p).unwrap()).unwrap();
        let manifest = store.join(format!(
            "docker/registry/v2/blobs/sha256/aa/{}/data",
            "a".repeat(64)
        ));
        std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
        std::fs::write(
            &manifest,
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":2}},"layers":[]}}"#,
                "b".repeat(64)
            ),
        )
        .unwrap();

        // in use: refused, nothing stopped or removed
        let mut users = Users::default();
        users.add(&d, "the container storage");
        let mut calls: Vec<String> = vec![];
        let e = opt_out(&root, &store, &users, &mut |a| {
            calls.push(a.join(" "));
            Ok(())
        })
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("in use: p1 (")
                && format!("{e:#}").contains("container storage"),
            "{e:#}"
        );
        assert!(calls.is_empty() && store.is_dir());
        assert!(root.join(MIRRORS_CONF.trim_start_matches('/')).is_file());

        let done = opt_out(&root, &store, &Users::default(), &mut |a| {
            calls.push(a.join(" "));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            calls,
            [format!("disable --now {UNIT}"), "daemon-reload".into()]
        );
        assert_eq!(done.payloads, ["p1"]);
        assert!(!store.exists());
        for f in &files {
            assert!(
                std::fs::symlink_metadata(root.join(&f.path)).is_err(),
                "{} is left",
                f.path
            );
        }
        assert!(
            !root.join(CONF_DIR).exists(),
            "the registry's secrets are left"
        );
        assert!(root
            .join("etc/containers/registries.conf.d/01-site.conf")
            .is_file());
        // done already: nothing to do, not an error
        let again = opt_out(&root, &store, &Users::default(), &mut |a| {
            panic!("systemctl {a:?} with nothing to opt out of")
        })
        .unwrap();
        assert!(again.payloads.is_empty() && again.removed.is_empty());
    }
}
