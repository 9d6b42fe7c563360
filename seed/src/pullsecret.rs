//! The cluster's pull secret in etcd (`openshift-config/pull-secret`): what a seed carries in
//! its place and what post-pivot writes there.
//!
//! A seed must not carry its seed system's registry credentials. As lifecycle-agent does, seed
//! creation saves the secret (private, in the seed work directory), puts a placeholder with
//! lifecycle-agent's empty credentials in its place before etcd is stopped and archived, and
//! puts the saved secret back when it restores the seed system. Post-pivot writes the site's
//! pull secret over the placeholder.

use crate::cluster::etcd_objects;
use anyhow::{Context, Result};
use base64::Engine;
use imgmode_recert::etcd::{Etcd, EtcdObject};
use serde_json::json;
use std::path::Path;

/// The pull secret's etcd key.
pub const KEY: &str = "/kubernetes.io/secrets/openshift-config/pull-secret";

/// lifecycle-agent's placeholder: credentials `empty:empty` for one registry, so the secret
/// stays valid JSON that authenticates nowhere.
pub const PLACEHOLDER: &str = r#"{"auths":{"registry.connect.redhat.com":{"username":"empty","password":"empty","auth":"ZW1wdHk6ZW1wdHk=","email":""}}}"#;

/// The `openshift-config/pull-secret` Secret holding `dockerconfigjson`.
pub fn object(dockerconfigjson: &str) -> serde_json::Value {
    json!({
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "pull-secret", "namespace": "openshift-config"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {
            ".dockerconfigjson":
                base64::engine::general_purpose::STANDARD.encode(dockerconfigjson.as_bytes()),
        },
    })
}

/// The `.dockerconfigjson` a pull-secret object holds, decoded.
pub fn dockerconfigjson(v: &serde_json::Value) -> Option<String> {
    let b = v["data"][".dockerconfigjson"].as_str()?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
    String::from_utf8(raw).ok()
}

/// Put `value` at `key` over whatever is there.
pub fn put(endpoint: &str, key: &str, value: serde_json::Value) -> Result<()> {
    let obj = EtcdObject::over(&etcd_objects(endpoint)?, key, value);
    imgmode_support::runtime::block_on(async {
        let mut e = Etcd::connect(endpoint).await?;
        e.put(&obj).await
    })?
}

/// Seed creation, with etcd running: save the pull secret into `saved` (0600; kept when it is
/// already there, so a resumed run never saves the placeholder), put the placeholder in its
/// place (the object's metadata kept) and drop etcd's history, so the database file the seed
/// archives holds no earlier revision of it. A cluster without the object is left alone.
pub fn replace_with_placeholder(endpoint: &str, saved: &Path) -> Result<bool> {
    let objects = etcd_objects(endpoint)?;
    let Some(current) = objects.iter().find(|o| o.key == KEY) else {
        return Ok(false);
    };
    if !saved.exists() {
        imgmode_support::fs::write_private(saved, &serde_json::to_string(&current.value)?)
            .with_context(|| {
                format!(
                    "saving the seed system's pull secret in {}",
                    saved.display()
                )
            })?;
    }
    let mut placeholder = current.clone();
    placeholder.value["data"] = object(PLACEHOLDER)["data"].clone();
    imgmode_support::runtime::block_on(async {
        let mut e = Etcd::connect(endpoint).await?;
        // over the revision just read: a writer in between fails the step, never overwritten
        e.put(&placeholder)
            .await
            .context("putting the placeholder pull secret into etcd")?;
        // etcd keeps replaced values as earlier revisions in its database file, which the
        // seed archives: drop them
        e.forget_history().await
    })??;
    Ok(true)
}

/// Seed restore, with etcd running: put the saved pull secret back and delete the saved copy.
pub fn put_back(endpoint: &str, saved: &Path) -> Result<()> {
    let text = match std::fs::read_to_string(saved) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", saved.display())),
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("the saved pull secret {} is malformed", saved.display()))?;
    put(endpoint, KEY, v).context("putting the seed system's pull secret back into etcd")?;
    imgmode_support::fs::remove_path(saved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgmode_testkit::Need;
    use std::os::unix::fs::PermissionsExt;

    fn current(endpoint: &str) -> Option<serde_json::Value> {
        etcd_objects(endpoint)
            .unwrap()
            .into_iter()
            .find(|o| o.key == KEY)
            .map(|o| o.value)
    }

    #[test]
    fn a_seed_carries_the_placeholder_and_the_seed_system_gets_its_secret_back() {
        imgmode_testkit::require!(Need::Tool("etcd"));
        let etcd = imgmode_testkit::TestEtcd::start();
        let td = tempfile::tempdir().unwrap();
        let saved = td.path().join("pull-secret.json");
        // no object: nothing to do
        assert!(!replace_with_placeholder(&etcd.endpoint, &saved).unwrap());
        assert!(!saved.exists());

        let real = r#"{"auths":{"seed.example.com":{"auth":"c2VlZDpzM2NyZXQ="}}}"#;
        let mut original = object(real);
        original["metadata"]["uid"] = json!("0a1b");
        put(&etcd.endpoint, KEY, original.clone()).unwrap();
        // a Secret is Kubernetes protobuf in etcd: its data bytes are stored as they are
        let in_db = || {
            let db = std::fs::read(etcd.data_dir().join("member/snap/db")).unwrap();
            db.windows(real.len()).any(|w| w == real.as_bytes())
        };
        // etcd commits its database file every 100 ms: wait until it holds the secret
        let t0 = std::time::Instant::now();
        while !in_db() {
            assert!(t0.elapsed().as_secs() < 10, "etcd never wrote its database");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }

        assert!(replace_with_placeholder(&etcd.endpoint, &saved).unwrap());
        let now = current(&etcd.endpoint).unwrap();
        assert!(
            !in_db(),
            "etcd's database file still holds the replaced revision"
        );
        assert_eq!(dockerconfigjson(&now).unwrap(), PLACEHOLDER);
        assert_eq!(now["metadata"]["uid"], "0a1b", "metadata kept");
        let mode = std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // a resumed run does not save the placeholder over the real secret
        assert!(replace_with_placeholder(&etcd.endpoint, &saved).unwrap());
        let kept: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
        assert_eq!(dockerconfigjson(&kept).unwrap(), real);

        put_back(&etcd.endpoint, &saved).unwrap();
        assert_eq!(current(&etcd.endpoint).unwrap(), original);
        assert!(!saved.exists(), "the saved copy is deleted once restored");
        // and again: nothing saved, nothing to do
        put_back(&etcd.endpoint, &saved).unwrap();
    }
}
