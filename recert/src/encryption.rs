//! etcd encryption at rest, as kube-apiserver writes it: a value `k8s:enc:<provider>:v1:<key
//! name>:` followed by the ciphertext. With the cluster's EncryptionConfiguration
//! (`apiserver.config.k8s.io/v1`), recert reads `aescbc` (AES-CBC, PKCS#7, a 16-byte IV first)
//! and `aesgcm` (AES-GCM, a 12-byte nonce first, the 16-byte tag last, the etcd key as
//! authenticated data) values and writes each back with the provider and key it was read
//! with. A new object is written as kube-apiserver would write it: with the first provider of
//! the first `resources` entry that names its resource (`secrets`, `routes.route.openshift.io`,
//! `*.apps`, `*.*`), in plain text when that is `identity`. Other providers (`kms`,
//! `secretbox`) are refused by name. All through OpenSSL.

use anyhow::{bail, ensure, Context, Result};
use openssl::symm::{decrypt, decrypt_aead, encrypt, encrypt_aead, Cipher};
use std::collections::BTreeMap;
use std::path::Path;

/// The prefix of every encrypted value.
pub const PREFIX: &[u8] = b"k8s:enc:";

/// The keys of an EncryptionConfiguration: (provider, key name) -> key.
#[derive(Default)]
pub struct EncryptionKeys {
    keys: BTreeMap<(String, String), Vec<u8>>,
    /// Per `resources` entry, in order: the resources it names and how a new value of them is
    /// written (`aescbc:key1`; `None` for `identity`).
    writers: Vec<(Vec<String>, Option<String>)>,
}

impl std::fmt::Debug for EncryptionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptionKeys({} keys, <redacted>)", self.keys.len())
    }
}

/// An encrypted value taken apart: provider, version, key name, the rest.
fn split(value: &[u8]) -> Result<(String, String, String, &[u8])> {
    let rest = value
        .strip_prefix(PREFIX)
        .context("not an encrypted value")?;
    let mut parts = rest.splitn(4, |b| *b == b':');
    let provider = parts.next().unwrap_or_default();
    let version = parts.next().unwrap_or_default();
    let name = parts.next().unwrap_or_default();
    let data = parts
        .next()
        .context("an encrypted value without its key name")?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok((text(provider), text(version), text(name), data))
}

/// The core resources kube-apiserver stores under `/kubernetes.io/<resource>/`.
const CORE: &[&str] = &[
    "configmaps",
    "endpoints",
    "events",
    "limitranges",
    "namespaces",
    "nodes",
    "persistentvolumeclaims",
    "persistentvolumes",
    "pods",
    "podtemplates",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "serviceaccounts",
    "services",
];

/// The resource and API group of the object stored at the etcd key `key`: the group is known
/// for core resources (``) and group-prefixed keys (`/kubernetes.io/<group>/<resource>/`), and
/// `None` for the other built-in groups' keys, which name no group.
fn resource_of(key: &str) -> Option<(String, Option<String>)> {
    let rest = key
        .strip_prefix("/kubernetes.io/")
        .or_else(|| key.strip_prefix("/openshift.io/"))?;
    let mut seg = rest.split('/');
    let first = seg.next()?;
    if first.contains('.') {
        return Some((seg.next()?.to_string(), Some(first.to_string())));
    }
    let resource = match (first, seg.next()) {
        ("minions", _) => "nodes",
        ("services", Some("endpoints")) => "endpoints",
        ("services", _) => "services",
        (r, _) => r,
    };
    let group = (key.starts_with("/kubernetes.io/") && CORE.contains(&resource)).then(String::new);
    Some((resource.to_string(), group))
}

fn aes(provider: &str, len: usize) -> Result<Cipher> {
    Ok(match (provider, len) {
        ("aescbc", 16) => Cipher::aes_128_cbc(),
        ("aescbc", 24) => Cipher::aes_192_cbc(),
        ("aescbc", 32) => Cipher::aes_256_cbc(),
        ("aesgcm", 16) => Cipher::aes_128_gcm(),
        ("aesgcm", 24) => Cipher::aes_192_gcm(),
        ("aesgcm", 32) => Cipher::aes_256_gcm(),
        (p, n) => bail!("an {p} key of {n} bytes (16, 24 or 32 are AES keys)"),
    })
}

impl EncryptionKeys {
    /// Read an EncryptionConfiguration file.
    pub fn load(path: &Path) -> Result<Self> {
        let what = path.display().to_string();
        let v: yaml_serde::Value = imgmode_support::yaml::parse(
            &std::fs::read_to_string(path).with_context(|| format!("reading {what}"))?,
            &what,
        )?;
        ensure!(
            v.get("kind").and_then(|k| k.as_str()) == Some("EncryptionConfiguration"),
            "{what} is not an EncryptionConfiguration (apiserver.config.k8s.io/v1)"
        );
        let mut keys = BTreeMap::new();
        let mut writers = vec![];
        let resources = v.get("resources").and_then(|r| r.as_sequence());
        for r in resources.into_iter().flatten() {
            let providers = r.get("providers").and_then(|p| p.as_sequence());
            let names: Vec<String> = r
                .get("resources")
                .and_then(|n| n.as_sequence())
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect();
            // the first provider writes: its first key, or plain text for identity
            let first = providers.and_then(|p| p.first());
            let writer = first.and_then(|p| p.as_mapping()).and_then(|m| {
                let (name, body) = m.iter().next()?;
                let name = name.as_str()?;
                if name == "identity" {
                    return None;
                }
                let key = body
                    .get("keys")
                    .and_then(|k| k.as_sequence())
                    .and_then(|k| k.first())
                    .and_then(|k| k.get("name"))
                    .and_then(|n| n.as_str())
                    .unwrap_or_default();
                Some(format!("{name}:{key}"))
            });
            writers.push((names, writer));
            for p in providers.into_iter().flatten() {
                for provider in ["aescbc", "aesgcm"] {
                    let ks = p
                        .get(provider)
                        .and_then(|a| a.get("keys"))
                        .and_then(|k| k.as_sequence());
                    for k in ks.into_iter().flatten() {
                        let name = k
                            .get("name")
                            .and_then(|n| n.as_str())
                            .with_context(|| format!("{what}: an {provider} key without a name"))?;
                        let secret =
                            k.get("secret").and_then(|s| s.as_str()).with_context(|| {
                                format!("{what}: {provider} key {name} without a secret")
                            })?;
                        let key = crate::text::b64_decode(secret).with_context(|| {
                            format!("{what}: {provider} key {name} is not base64")
                        })?;
                        aes(provider, key.len())
                            .with_context(|| format!("{what}: {provider} key {name}"))?;
                        keys.insert((provider.to_string(), name.to_string()), key);
                    }
                }
            }
        }
        ensure!(
            !keys.is_empty(),
            "{what} holds no aescbc or aesgcm key; recert reads values those providers wrote"
        );
        Ok(EncryptionKeys { keys, writers })
    }

    /// How kube-apiserver writes a new value at the etcd key `key` (`aescbc:key1`), or `None`
    /// for plain text (`identity`, or no `resources` entry names the resource).
    pub fn write_with(&self, key: &str) -> Option<String> {
        let (resource, group) = resource_of(key)?;
        let names = |n: &String| match &group {
            Some(g) if g.is_empty() => *n == resource || n == "*." || n == "*.*",
            Some(g) => *n == format!("{resource}.{g}") || *n == format!("*.{g}") || n == "*.*",
            // a group the key does not name: the resource's name decides, or `*.*`
            None => n.split_once('.').map(|(r, _)| r) == Some(resource.as_str()) || n == "*.*",
        };
        self.writers
            .iter()
            .find(|(ns, _)| ns.iter().any(names))
            .and_then(|(_, w)| w.clone())
    }

    fn key(&self, provider: &str, name: &str) -> Result<&[u8]> {
        if !matches!(provider, "aescbc" | "aesgcm") {
            bail!("the value is encrypted by {provider}, which recert cannot read (aescbc and aesgcm only)");
        }
        self.keys
            .get(&(provider.to_string(), name.to_string()))
            .map(Vec::as_slice)
            .with_context(|| {
                format!("the value is encrypted with {provider} key {name:?}, which the encryption configuration does not hold")
            })
    }

    /// The plaintext of the encrypted value `value` stored at `key`, and the provider and key
    /// name to encrypt it with again (`aescbc:key1`).
    pub fn decrypt(&self, key: &str, value: &[u8]) -> Result<(Vec<u8>, String)> {
        let (provider, version, name, data) = split(value)?;
        let k = self.key(&provider, &name)?;
        ensure!(
            version == "v1",
            "the value is encrypted by {provider} {version}; recert reads v1"
        );
        let cipher = aes(&provider, k.len())?;
        let plain = if provider == "aescbc" {
            ensure!(data.len() > 16, "a too short aescbc value");
            decrypt(cipher, k, Some(&data[..16]), &data[16..])
        } else {
            ensure!(data.len() > 28, "a too short aesgcm value");
            let (nonce, rest) = data.split_at(12);
            let (ct, tag) = rest.split_at(rest.len() - 16);
            decrypt_aead(cipher, k, Some(nonce), key.as_bytes(), ct, tag)
        }
        .with_context(|| {
            format!("decrypting with {provider} key {name:?} failed (a wrong key?)")
        })?;
        Ok((plain, format!("{provider}:{name}")))
    }

    /// `plain` encrypted for `key` with `with` (`aescbc:key1`, from [`Self::decrypt`]).
    pub fn encrypt(&self, key: &str, with: &str, plain: &[u8]) -> Result<Vec<u8>> {
        let (provider, name) = with
            .split_once(':')
            .context("an encryption without a key")?;
        let k = self.key(provider, name)?;
        let cipher = aes(provider, k.len())?;
        let mut out = format!("k8s:enc:{provider}:v1:{name}:").into_bytes();
        if provider == "aescbc" {
            let mut iv = [0u8; 16];
            openssl::rand::rand_bytes(&mut iv)?;
            out.extend_from_slice(&iv);
            out.extend(encrypt(cipher, k, Some(&iv), plain)?);
        } else {
            let mut nonce = [0u8; 12];
            openssl::rand::rand_bytes(&mut nonce)?;
            let mut tag = [0u8; 16];
            let ct = encrypt_aead(cipher, k, Some(&nonce), key.as_bytes(), plain, &mut tag)?;
            out.extend_from_slice(&nonce);
            out.extend(ct);
            out.extend_from_slice(&tag);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decrypt_and_encrypt_again_with_their_key() {
        let td = tempfile::tempdir().unwrap();
        let cfg = td.path().join("enc.yaml");
        let k32 = crate::text::b64_encode(&[7u8; 32]);
        let k16 = crate::text::b64_encode(&[9u8; 16]);
        imgmode_support::fs::write_private(
            &cfg,
            &format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: key1\n        secret: {k32}\n  - aesgcm:\n      keys:\n      - name: g1\n        secret: {k16}\n  - identity: {{}}\n"),
        )
        .unwrap();
        let keys = EncryptionKeys::load(&cfg).unwrap();
        for with in ["aescbc:key1", "aesgcm:g1"] {
            let enc = keys
                .encrypt("/kubernetes.io/secrets/a/b", with, b"k8s\0plain")
                .unwrap();
            assert!(enc.starts_with(format!("k8s:enc:{}:v1:", &with[..6]).as_bytes()));
            let (plain, again) = keys.decrypt("/kubernetes.io/secrets/a/b", &enc).unwrap();
            assert_eq!(
                (plain.as_slice(), again.as_str()),
                (&b"k8s\0plain"[..], with)
            );
        }
        // aesgcm authenticates the key the value is stored at
        let enc = keys
            .encrypt("/kubernetes.io/secrets/a/b", "aesgcm:g1", b"x")
            .unwrap();
        assert!(keys.decrypt("/kubernetes.io/secrets/a/c", &enc).is_err());
        let e = keys
            .decrypt("/k", b"k8s:enc:kms:v2:p:abc")
            .unwrap_err()
            .to_string();
        assert!(e.contains("encrypted by kms"), "{e}");
        let e = keys
            .decrypt(
                "/k",
                b"k8s:enc:aescbc:v1:other:0123456789abcdef0123456789abcdef",
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("key \"other\""), "{e}");
        // a new secret is written with the first provider's first key; configmaps are not named
        assert_eq!(
            keys.write_with("/kubernetes.io/secrets/a/b").as_deref(),
            Some("aescbc:key1")
        );
        assert_eq!(keys.write_with("/kubernetes.io/configmaps/a/b"), None);
    }

    #[test]
    fn a_new_value_is_written_as_the_first_naming_entry_says() {
        let td = tempfile::tempdir().unwrap();
        let cfg = td.path().join("enc.yaml");
        let k = crate::text::b64_encode(&[3u8; 32]);
        imgmode_support::fs::write_private(
            &cfg,
            &format!("kind: EncryptionConfiguration\nresources:\n- resources: [configmaps, deployments.apps, '*.apps']\n  providers:\n  - identity: {{}}\n  - aesgcm:\n      keys:\n      - name: old\n        secret: {k}\n- resources: ['*.*']\n  providers:\n  - aesgcm:\n      keys:\n      - name: new\n        secret: {k}\n      - name: old\n        secret: {k}\n"),
        )
        .unwrap();
        let keys = EncryptionKeys::load(&cfg).unwrap();
        for (key, want) in [
            ("/kubernetes.io/configmaps/ns/c", None),
            ("/kubernetes.io/deployments/ns/d", None),
            ("/kubernetes.io/daemonsets/ns/d", Some("aesgcm:new")),
            ("/kubernetes.io/secrets/ns/s", Some("aesgcm:new")),
            ("/kubernetes.io/minions/n", Some("aesgcm:new")),
            (
                "/kubernetes.io/route.openshift.io/routes/ns/r",
                Some("aesgcm:new"),
            ),
            ("/openshift.io/routes/ns/r", Some("aesgcm:new")),
            ("/registry/other", None),
        ] {
            assert_eq!(keys.write_with(key).as_deref(), want, "{key}");
        }
    }
}
