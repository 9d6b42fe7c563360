//! The cluster's pull secret in etcd (`openshift-config/pull-secret`): what a seed carries in
//! its place and what post-pivot writes there.
//!
//! A seed must not carry its seed system's registry credentials. As lifecycle-agent does, seed
//! creation saves the secret (private, in the seed work directory), puts a placeholder with
//! lifecycle-agent's empty credentials in its place before etcd is stopped and archived, and
//! puts the saved secret back when it restores the seed system. Post-pivot writes the site's
//! pull secret over the placeholder.

use crate::cluster::{connect_etcd, etcd_objects, objects, Cluster};
use anyhow::{Context, Result};
use base64::Engine;
use imgmode_recert::etcd::EtcdObject;
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
pub fn put(c: &Cluster, key: &str, value: serde_json::Value) -> Result<()> {
    imgmode_support::runtime::block_on(async {
        let mut e = connect_etcd(c).await?;
        let obj = EtcdObject::over(&objects(&mut e).await?, key, value);
        e.put(&obj).await
    })?
}

/// Seed creation, with etcd running: save the pull secret into `saved` (0600; kept when it is
/// already there, so a resumed run never saves the placeholder), put the placeholder in its
/// place (the object's metadata kept) and drop etcd's history, so the database file the seed
/// archives holds no earlier revision of it. A cluster without the object is left alone.
pub fn replace_with_placeholder(c: &Cluster, saved: &Path) -> Result<bool> {
    let objects = etcd_objects(c)?;
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
        let mut e = connect_etcd(c).await?;
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
pub fn put_back(c: &Cluster, saved: &Path) -> Result<()> {
    let text = match std::fs::read_to_string(saved) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", saved.display())),
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("the saved pull secret {} is malformed", saved.display()))?;
    put(c, KEY, v).context("putting the seed system's pull secret back into etcd")?;
    imgmode_support::fs::remove_path(saved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgmode_testkit::Need;
    use std::os::unix::fs::PermissionsExt;

    fn current(c: &Cluster) -> Option<serde_json::Value> {
        etcd_objects(c)
            .unwrap()
            .into_iter()
            .find(|o| o.key == KEY)
            .map(|o| o.value)
    }

    #[test]
    fn a_seed_carries_the_placeholder_and_the_seed_system_gets_its_secret_back() {
        imgmode_testkit::require!(Need::Tool("etcd"));
        let etcd = imgmode_testkit::TestEtcd::start();
        let c = Cluster {
            etcd_endpoint: etcd.endpoint.clone(),
            ..Default::default()
        };
        placeholder_round_trip(&etcd, &c, true);
    }

    /// A cluster that encrypts secrets at rest: the same, read and written with its key; the
    /// pull secret is never in etcd's database in plain text.
    #[test]
    fn an_encrypted_cluster_is_read_and_written_with_its_key() {
        imgmode_testkit::require!(Need::Tool("etcd"));
        let etcd = imgmode_testkit::TestEtcd::start();
        let td = tempfile::tempdir().unwrap();
        let cfg = td.path().join("encryption-config.yaml");
        let key = imgmode_recert::text::b64_encode(&[5u8; 32]);
        imgmode_support::fs::write_private(
            &cfg,
            &format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: key1\n        secret: {key}\n  - identity: {{}}\n"),
        )
        .unwrap();
        let c = Cluster {
            etcd_endpoint: etcd.endpoint.clone(),
            encryption_config: Some(cfg),
            ..Default::default()
        };
        placeholder_round_trip(&etcd, &c, false);
        let db = std::fs::read(etcd.data_dir().join("member/snap/db")).unwrap();
        let marker = b"k8s:enc:aescbc:v1:key1:";
        assert!(
            db.windows(marker.len()).any(|w| w == marker),
            "the secret is not encrypted in etcd's database"
        );
        // without the key the value is refused by name, not skipped
        let plain = Cluster {
            etcd_endpoint: etcd.endpoint.clone(),
            ..Default::default()
        };
        let e = format!(
            "{:#}",
            replace_with_placeholder(&plain, &td.path().join("s")).unwrap_err()
        );
        assert!(
            e.contains("the value is encrypted (k8s:enc:aescbc") && e.contains(KEY),
            "{e}"
        );
    }

    /// Replace the pull secret with the placeholder and put it back, on the cluster `c`;
    /// `plain_in_db`: etcd's database file holds the secret in plain text once written.
    fn placeholder_round_trip(etcd: &imgmode_testkit::TestEtcd, c: &Cluster, plain_in_db: bool) {
        let td = tempfile::tempdir().unwrap();
        let saved = td.path().join("pull-secret.json");
        // no object: nothing to do
        assert!(!replace_with_placeholder(c, &saved).unwrap());
        assert!(!saved.exists());

        let real = r#"{"auths":{"seed.example.com":{"auth":"c2VlZDpzM2NyZXQ="}}}"#;
        let mut original = object(real);
        original["metadata"]["uid"] = json!("0a1b");
        put(c, KEY, original.clone()).unwrap();
        // a Secret is Kubernetes protobuf in etcd: its data bytes are stored as they are
        let in_db = || {
            let db = std::fs::read(etcd.data_dir().join("member/snap/db")).unwrap();
            db.windows(real.len()).any(|w| w == real.as_bytes())
        };
        if plain_in_db {
            // etcd commits its database file every 100 ms: wait until it holds the secret
            let t0 = std::time::Instant::now();
            while !in_db() {
                assert!(t0.elapsed().as_secs() < 10, "etcd never wrote its database");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        } else {
            assert_eq!(current(c).unwrap(), original, "read back with the key");
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert!(!in_db(), "etcd's database holds the secret in plain text");
        }

        assert!(replace_with_placeholder(c, &saved).unwrap());
        let now = current(c).unwrap();
        assert!(
            !in_db(),
            "etcd's database file still holds the replaced revision"
        );
        assert_eq!(dockerconfigjson(&now).unwrap(), PLACEHOLDER);
        assert_eq!(now["metadata"]["uid"], "0a1b", "metadata kept");
        let mode = std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // a resumed run does not save the placeholder over the real secret
        assert!(replace_with_placeholder(c, &saved).unwrap());
        let kept: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
        assert_eq!(dockerconfigjson(&kept).unwrap(), real);

        put_back(c, &saved).unwrap();
        assert_eq!(current(c).unwrap(), original);
        assert!(!saved.exists(), "the saved copy is deleted once restored");
        // and again: nothing saved, nothing to do
        put_back(c, &saved).unwrap();
    }
}
