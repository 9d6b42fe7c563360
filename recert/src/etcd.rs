//! The etcd half. Objects are Kubernetes-style JSON under `/kubernetes.io/<resource>/...` (the
//! layout of a real control plane: [`storage_key`]), stored as JSON or Kubernetes protobuf
//! ([`crate::kpb`], read into the same JSON). The fields recert reads and rewrites
//! ([`EtcdObject::fields`]): `data` values (base64 in secrets, plain text in configmaps), and the
//! certificate fields of the kinds that carry CA bundles ([`crate::kpb::pem_paths`]: a
//! webhook's `caBundle`, an APIService's, a CRD conversion webhook's, a CSR's
//! `status.certificate`; base64 PEM). Each changed object is written back in its own
//! transaction, guarded by the revision it was read at.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp,
};

use crate::text::{b64_decode, b64_encode};

pub const PREFIX: &str = "/kubernetes.io/";
pub const SECRETS: &str = "/kubernetes.io/secrets/";
pub const CONFIGMAPS: &str = "/kubernetes.io/configmaps/";
pub const NODES: &str = "/kubernetes.io/minions/";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EtcdObject {
    pub key: String,
    /// The object as JSON: the value itself, or the JSON view of a protobuf value
    /// ([`crate::kpb`]).
    pub value: serde_json::Value,
    pub mod_revision: i64,
    /// Kubernetes protobuf: the value as read (base64; empty for a new object), into which a
    /// write puts the view's changes. `None`: stored as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protobuf: Option<String>,
    /// Encrypted at rest with this provider and key (`aescbc:key1`): written back so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<String>,
}

/// How a value under `/kubernetes.io/` is stored.
/// `encrypted` counts, besides, the values that were encrypted at rest (read with the keys).
pub const ENCODINGS: &[&str] = &[
    "json",
    "protobuf",
    "protobuf-unread",
    "skipped",
    "encrypted",
];

/// One step of a path into a JSON object: a key, or an element of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A value inside an object that may hold secrets.
#[derive(Debug, Clone)]
pub struct Field {
    /// Where it is: `data`, `tls.crt`; or `webhooks`, 0, `clientConfig`, `caBundle`.
    pub path: Vec<Step>,
    /// Its text (base64-decoded where the object stores it so).
    pub text: String,
    pub base64: bool,
}

impl Field {
    /// The path as people read it: `data.tls.crt`, `webhooks[0].clientConfig.caBundle`.
    pub fn name(&self) -> String {
        let mut out = String::new();
        for s in &self.path {
            match s {
                Step::Key(k) if out.is_empty() => out.push_str(k),
                Step::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

impl EtcdObject {
    /// A new object, stored as a real kube-apiserver stores its kind: Kubernetes protobuf for
    /// the built-in kinds [`crate::kpb`] builds whole ([`crate::kpb::writes_new`]), JSON for
    /// the rest (custom resources).
    pub fn new(key: impl Into<String>, value: serde_json::Value) -> Self {
        let proto = crate::kpb::writes_new(
            value["apiVersion"].as_str().unwrap_or_default(),
            value["kind"].as_str().unwrap_or_default(),
        );
        EtcdObject {
            key: key.into(),
            value,
            mod_revision: 0,
            protobuf: proto.then(String::new),
            encrypted: None,
        }
    }

    /// `value` at `key` written over the object `existing` holds there (its revision and its
    /// encoding kept), or a new object.
    pub fn over(existing: &[EtcdObject], key: &str, value: serde_json::Value) -> Self {
        match existing.iter().find(|o| o.key == key) {
            Some(o) => {
                let mut value = value;
                // the object's identity stays the stored one (a manifest carries no uid)
                if value["metadata"]["uid"].is_null() && !o.value["metadata"]["uid"].is_null() {
                    value["metadata"]["uid"] = o.value["metadata"]["uid"].clone();
                }
                EtcdObject { value, ..o.clone() }
            }
            None => EtcdObject::new(key, value),
        }
    }

    /// `json` or `protobuf`.
    pub fn encoding(&self) -> &'static str {
        if self.protobuf.is_some() {
            "protobuf"
        } else {
            "json"
        }
    }

    /// The bytes etcd gets.
    pub fn stored(&self) -> Result<Vec<u8>> {
        match &self.protobuf {
            None => Ok(serde_json::to_vec(&self.value)?),
            Some(orig) => {
                let orig = b64_decode(orig).context("the object's protobuf as read")?;
                crate::kpb::encode((!orig.is_empty()).then_some(orig.as_slice()), &self.value)
                    .with_context(|| format!("encoding etcd {} as Kubernetes protobuf", self.key))
            }
        }
    }

    /// Where `field` is, for messages and the summary: `etcd KEY data.tls.crt`.
    pub fn location(&self, field: &Field) -> String {
        format!("etcd {} {}", self.key, field.name())
    }

    pub fn is_configmap(&self) -> bool {
        self.key.starts_with(CONFIGMAPS)
    }

    /// The text fields: of `data` (base64-decoded for secrets), then the certificate fields
    /// of the kinds that carry them ([`crate::kpb::pem_paths`], base64-decoded), in a JSON
    /// object and a protobuf one's view alike. Values that are not text are skipped (binary
    /// data is no PEM).
    pub fn fields(&self) -> Vec<Field> {
        let base64 = self.key.starts_with(SECRETS);
        let mut out = vec![];
        for (k, v) in self
            .value
            .get("data")
            .and_then(|d| d.as_object())
            .into_iter()
            .flatten()
        {
            let Some(s) = v.as_str() else { continue };
            let text = if base64 {
                match b64_decode(s).ok().and_then(|b| String::from_utf8(b).ok()) {
                    Some(t) => t,
                    None => continue,
                }
            } else {
                s.to_string()
            };
            out.push(Field {
                path: vec![Step::Key("data".into()), Step::Key(k.clone())],
                text,
                base64,
            });
        }
        let paths = crate::kpb::pem_paths(
            self.value["apiVersion"].as_str().unwrap_or_default(),
            self.value["kind"].as_str().unwrap_or_default(),
        );
        for path in paths {
            for (idx, v) in crate::kpb::places(&self.value, path) {
                let Some(text) = v
                    .and_then(|v| v.as_str())
                    .and_then(|s| b64_decode(s).ok())
                    .and_then(|b| String::from_utf8(b).ok())
                else {
                    continue;
                };
                let mut idx = idx.into_iter();
                let mut steps = vec![];
                for seg in path.iter() {
                    steps.push(Step::Key(seg.json.into()));
                    if seg.repeated {
                        steps.extend(idx.next().map(Step::Index));
                    }
                }
                out.push(Field {
                    path: steps,
                    text,
                    base64: true,
                });
            }
        }
        out
    }

    /// `field` (one of [`EtcdObject::fields`]) holding `text` now.
    pub fn set_field(&mut self, field: &Field, text: &str) {
        let v = if field.base64 {
            b64_encode(text.as_bytes())
        } else {
            text.to_string()
        };
        let mut at = &mut self.value;
        for s in &field.path {
            at = match s {
                Step::Key(k) => &mut at[k.as_str()],
                Step::Index(i) => &mut at[*i],
            };
        }
        *at = serde_json::Value::String(v);
    }
}

/// Client TLS for an etcd that serves HTTPS and requires client certificates, as a real
/// cluster's does (etcdctl's `--cacert`, `--cert` and `--key`).
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The CA that signed etcd's serving certificate.
    pub ca: std::path::PathBuf,
    /// The client certificate and its key.
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl ClientTls {
    fn config(&self) -> Result<etcd_client::OpenSslClientConfig> {
        let read = |p: &std::path::Path, what: &str| {
            std::fs::read(p).with_context(|| format!("reading etcd's {what} {}", p.display()))
        };
        let (ca, cert, key) = (
            read(&self.ca, "CA")?,
            read(&self.cert, "client certificate")?,
            read(&self.key, "client key")?,
        );
        // each parsed here, so a wrong file is named rather than failing the handshake
        openssl::x509::X509::from_pem(&ca)
            .with_context(|| format!("{} is not a PEM certificate", self.ca.display()))?;
        openssl::x509::X509::from_pem(&cert)
            .with_context(|| format!("{} is not a PEM certificate", self.cert.display()))?;
        openssl::pkey::PKey::private_key_from_pem(&key)
            .with_context(|| format!("{} is not a PEM private key", self.key.display()))?;
        Ok(etcd_client::OpenSslClientConfig::default()
            .ca_cert_pem(&ca)
            .client_cert_pem_and_key(&cert, &key))
    }
}

pub struct Etcd {
    client: Client,
    endpoint: String,
    /// The cluster's encryption keys, to read and write encrypted values.
    keys: Option<std::sync::Arc<crate::encryption::EncryptionKeys>>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl Etcd {
    /// Connect and prove the endpoint answers, so that an unreachable etcd fails the run before
    /// anything is touched.
    pub async fn connect(endpoint: &str) -> Result<Self> {
        Self::connect_with(endpoint, None).await
    }

    /// [`Etcd::connect`], with client TLS for an `https://` endpoint.
    pub async fn connect_with(endpoint: &str, tls: Option<&ClientTls>) -> Result<Self> {
        let https = endpoint.starts_with("https://");
        ensure!(
            https == tls.is_some(),
            "{}",
            if https {
                format!("etcd at {endpoint} serves HTTPS: give its CA, a client certificate and its key (--etcd-cacert, --etcd-cert, --etcd-key; on an OpenShift node the etcd-serving CA and a peer or client certificate of /etc/kubernetes/static-pod-resources/etcd-certs)")
            } else {
                format!("etcd at {endpoint} is plain HTTP: client TLS (--etcd-cacert, --etcd-cert, --etcd-key) needs an https:// endpoint")
            }
        );
        let hint = || {
            if https {
                format!("connecting to etcd at {endpoint} (is etcd running, is the endpoint right, and is the client certificate one its CA signed?)")
            } else {
                format!(
                    "connecting to etcd at {endpoint} (is etcd running and is etcd_endpoint right?)"
                )
            }
        };
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(TIMEOUT);
        if let Some(t) = tls {
            opts = opts.with_openssl_tls(t.config()?);
        }
        let mut client = tokio::time::timeout(TIMEOUT, Client::connect([endpoint], Some(opts)))
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))
            .with_context(hint)?
            .with_context(hint)?;
        tokio::time::timeout(TIMEOUT, client.status())
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))
            .with_context(hint)?
            .with_context(hint)?;
        Ok(Etcd {
            client,
            endpoint: endpoint.to_string(),
            keys: None,
        })
    }

    /// Read and write encrypted values with the cluster's keys.
    pub fn with_encryption(
        mut self,
        keys: std::sync::Arc<crate::encryption::EncryptionKeys>,
    ) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Every object under `/kubernetes.io/` that can be read, JSON or Kubernetes protobuf: for
    /// readers that look up objects (seed info, post-pivot's settings, a plan's resume). A
    /// value it cannot read is passed over with a warning; recert's own scan is
    /// [`Etcd::scan_values`], which refuses it.
    pub async fn scan(&mut self) -> Result<Vec<EtcdObject>> {
        Ok(self.scan_values(true).await?.0)
    }

    /// Every object under `/kubernetes.io/`, and the count of values per encoding
    /// ([`ENCODINGS`]). An encrypted value (`k8s:enc:...`), one that is neither JSON nor
    /// Kubernetes protobuf, and a protobuf kind imgmode does not read that holds a PEM block
    /// fail the scan by name, or with `skip_unreadable` are counted as `skipped`.
    pub async fn scan_values(
        &mut self,
        skip_unreadable: bool,
    ) -> Result<(Vec<EtcdObject>, std::collections::BTreeMap<String, usize>)> {
        let resp = self
            .client
            .get(PREFIX, Some(GetOptions::new().with_prefix()))
            .await
            .with_context(|| format!("reading {PREFIX} from etcd at {}", self.endpoint))?;
        let mut out = vec![];
        let mut counts = std::collections::BTreeMap::new();
        for kv in resp.kvs() {
            let key = kv.key_str()?.to_string();
            let read = match (
                kv.value().starts_with(crate::encryption::PREFIX),
                &self.keys,
            ) {
                (true, Some(keys)) => keys.decrypt(&key, kv.value()).and_then(|(plain, with)| {
                    let (enc, obj) = read_value(&key, &plain, kv.mod_revision())?;
                    *counts.entry("encrypted".to_string()).or_insert(0) += 1;
                    Ok((
                        enc,
                        obj.map(|o| EtcdObject {
                            encrypted: Some(with),
                            ..o
                        }),
                    ))
                }),
                _ => read_value(&key, kv.value(), kv.mod_revision()),
            };
            let (encoding, obj) = match read {
                Ok(r) => r,
                Err(e) if skip_unreadable => {
                    tracing::warn!("skipping etcd {key}: {e:#}");
                    ("skipped", None)
                }
                Err(e) => return Err(e.context(format!(
                    "etcd {key} cannot be read; a value left unread could keep the seed's keys (recert --skip-unreadable-values skips it, at that risk)"
                ))),
            };
            *counts.entry(encoding.to_string()).or_insert(0) += 1;
            out.extend(obj);
        }
        Ok((out, counts))
    }

    /// The object at `key` (JSON or Kubernetes protobuf, decrypted with the cluster's keys when
    /// it is encrypted), `None` when there is none.
    pub async fn get(&mut self, key: &str) -> Result<Option<EtcdObject>> {
        let resp = self
            .client
            .get(key, None)
            .await
            .with_context(|| format!("reading {key} from etcd at {}", self.endpoint))?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let read = match (
            kv.value().starts_with(crate::encryption::PREFIX),
            &self.keys,
        ) {
            (true, Some(keys)) => {
                let (plain, _) = keys.decrypt(key, kv.value())?;
                read_value(key, &plain, kv.mod_revision())?
            }
            _ => read_value(key, kv.value(), kv.mod_revision())?,
        };
        Ok(read.1)
    }

    /// Drop every earlier revision of every key (a physical compaction at the current
    /// revision) and give the space back (defragment), so values that were replaced are gone
    /// from the database file too, not only from the current view.
    pub async fn forget_history(&mut self) -> Result<()> {
        let status = self
            .client
            .status()
            .await
            .with_context(|| format!("reading etcd's revision at {}", self.endpoint))?;
        let revision = status
            .header()
            .map(|h| h.revision())
            .context("etcd answered its status without a revision")?;
        self.client
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
            .with_context(|| {
                format!(
                    "compacting etcd at {} to revision {revision}",
                    self.endpoint
                )
            })?;
        self.client
            .defragment()
            .await
            .with_context(|| format!("defragmenting etcd at {}", self.endpoint))?;
        Ok(())
    }

    /// Write one object if nobody changed it since it was read.
    pub async fn put(&mut self, obj: &EtcdObject) -> Result<()> {
        let mut value = obj.stored()?;
        // a new object is encrypted as kube-apiserver would write it
        let new_with = (obj.mod_revision == 0 && obj.encrypted.is_none())
            .then(|| self.keys.as_ref()?.write_with(&obj.key))
            .flatten();
        if let Some(with) = obj.encrypted.as_ref().or(new_with.as_ref()) {
            let keys = self.keys.as_ref().with_context(|| {
                format!(
                    "etcd {} is encrypted ({with}) and no encryption configuration is given",
                    obj.key
                )
            })?;
            value = keys.encrypt(&obj.key, with, &value)?;
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                obj.key.as_str(),
                CompareOp::Equal,
                obj.mod_revision,
            )])
            .and_then([TxnOp::put(obj.key.as_str(), value, None)]);
        let resp = self
            .client
            .txn(txn)
            .await
            .with_context(|| format!("writing {} to etcd", obj.key))?;
        if !resp.succeeded() {
            bail!(
                "etcd object {} changed while recert ran (revision {} no longer current); stop the writers and run again",
                obj.key,
                obj.mod_revision
            );
        }
        Ok(())
    }
}

/// One etcd value: its encoding and the object (none for a protobuf kind imgmode does not
/// read that holds no PEM block).
fn read_value(
    key: &str,
    bytes: &[u8],
    mod_revision: i64,
) -> Result<(&'static str, Option<EtcdObject>)> {
    if let Some(rest) = bytes.strip_prefix(b"k8s:enc:") {
        let provider: String = String::from_utf8_lossy(rest)
            .split(':')
            .take(2)
            .collect::<Vec<_>>()
            .join(":");
        bail!("the value is encrypted (k8s:enc:{provider}); give recert the cluster's EncryptionConfiguration (--encryption-config), or turn etcd encryption off on the seed cluster first");
    }
    if crate::kpb::is_protobuf(bytes) {
        let d = crate::kpb::decode(bytes)?;
        if !d.known {
            ensure!(
                !bytes.windows(10).any(|w| w == b"-----BEGIN"),
                "a protobuf {} {}, which imgmode does not read, holds a PEM block (a key or certificate recert would miss)",
                d.view["apiVersion"].as_str().unwrap_or_default(),
                d.view["kind"].as_str().unwrap_or_default()
            );
            return Ok(("protobuf-unread", None));
        }
        return Ok((
            "protobuf",
            Some(EtcdObject {
                key: key.to_string(),
                value: d.view,
                mod_revision,
                protobuf: Some(b64_encode(bytes)),
                encrypted: None,
            }),
        ));
    }
    let value = serde_json::from_slice::<serde_json::Value>(bytes)
        .context("the value is neither JSON nor Kubernetes protobuf")?;
    Ok((
        "json",
        Some(EtcdObject {
            key: key.to_string(),
            value,
            mod_revision,
            protobuf: None,
            encrypted: None,
        }),
    ))
}

/// API groups whose resources kube-apiserver stores without a group prefix (`""` is the core
/// group).
const UNPREFIXED_GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "rbac.authorization.k8s.io",
    "networking.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "admissionregistration.k8s.io",
    "certificates.k8s.io",
    "discovery.k8s.io",
    "node.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "events.k8s.io",
    "resource.k8s.io",
];

/// API groups openshift-apiserver and oauth-apiserver serve, stored under `/openshift.io/`.
const OPENSHIFT_APISERVER_GROUPS: &[&str] = &[
    "apps.openshift.io",
    "build.openshift.io",
    "image.openshift.io",
    "oauth.openshift.io",
    "project.openshift.io",
    "route.openshift.io",
    "template.openshift.io",
    "user.openshift.io",
];

/// Whether a real control plane stores `api_version`/`kind` as Kubernetes protobuf (the
/// built-in and openshift-apiserver types). Custom resources are JSON, and so are
/// CustomResourceDefinitions and APIServices: kube-apiserver's apiextensions and aggregator
/// servers store them with a JSON codec.
pub fn stored_as_protobuf(api_version: &str) -> bool {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    UNPREFIXED_GROUPS.contains(&group) || OPENSHIFT_APISERVER_GROUPS.contains(&group)
}

/// Kinds whose storage path is not their lowercase plural.
const STORAGE_EXCEPTIONS: &[(&str, &str, &str)] = &[
    ("", "Node", "minions"),
    ("", "Service", "services/specs"),
    ("", "Endpoints", "services/endpoints"),
    ("networking.k8s.io", "Ingress", "ingress"),
    (
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        "apiextensions.k8s.io/customresourcedefinitions",
    ),
    (
        "apiregistration.k8s.io",
        "APIService",
        "apiregistration.k8s.io/apiservices",
    ),
];

/// The resource (plural) of a kind, as the API names it.
fn plural(kind: &str) -> String {
    let l = kind.to_ascii_lowercase();
    let consonant_y = l
        .strip_suffix('y')
        .filter(|stem| !stem.ends_with(['a', 'e', 'i', 'o', 'u']));
    if let Some(stem) = consonant_y {
        format!("{stem}ies")
    } else if ["s", "x", "z", "ch", "sh"].iter().any(|e| l.ends_with(e)) {
        format!("{l}es")
    } else {
        format!("{l}s")
    }
}

/// Where a real control plane keeps an object (OpenShift's kube-apiserver prefix
/// `/kubernetes.io`): built-in groups under `/kubernetes.io/<resource>/`, custom resources
/// (OpenShift's `config.openshift.io` among them) under `/kubernetes.io/<group>/<resource>/`,
/// openshift-apiserver's groups under `/openshift.io/<resource>/`; then `<namespace>/<name>`
/// or `<name>`.
pub fn storage_key(api_version: &str, kind: &str, namespace: &str, name: &str) -> Result<String> {
    if api_version.is_empty() || kind.is_empty() || name.is_empty() {
        bail!("an object needs apiVersion, kind and metadata.name to have an etcd key");
    }
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let path = if let Some((_, _, p)) = STORAGE_EXCEPTIONS
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
    {
        format!("/kubernetes.io/{p}")
    } else if UNPREFIXED_GROUPS.contains(&group) {
        format!("/kubernetes.io/{}", plural(kind))
    } else if OPENSHIFT_APISERVER_GROUPS.contains(&group) {
        format!("/openshift.io/{}", plural(kind))
    } else {
        format!("/kubernetes.io/{group}/{}", plural(kind))
    };
    Ok(if namespace.is_empty() {
        format!("{path}/{name}")
    } else {
        format!("{path}/{namespace}/{name}")
    })
}

/// The node object of a single-node cluster (none when etcd holds no node; more than one is
/// refused).
pub fn the_node(objects: &[EtcdObject]) -> Result<Option<&EtcdObject>> {
    let nodes: Vec<&EtcdObject> = objects
        .iter()
        .filter(|o| o.key.starts_with(NODES))
        .collect();
    match nodes.as_slice() {
        [] => Ok(None),
        [n] => Ok(Some(n)),
        many => bail!(
            "found {} node objects under {NODES}; a single-node cluster has one",
            many.len()
        ),
    }
}

/// The node's name and internal IP, from the single node object.
pub fn node_identity(objects: &[EtcdObject]) -> Result<Option<(String, Option<String>)>> {
    let Some(n) = the_node(objects)? else {
        return Ok(None);
    };
    let name = n.key[NODES.len()..].to_string();
    let ip = n.value["status"]["addresses"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|x| x["type"] == "InternalIP")
                .and_then(|x| x["address"].as_str())
        })
        .map(str::to_string);
    Ok(Some((name, ip)))
}

/// The cluster's name, base domain and infra ID: from the install-config in the
/// `kube-system/cluster-config-v1` configmap and the infrastructure object.
pub fn cluster_identity(objects: &[EtcdObject]) -> Option<(String, String, Option<String>)> {
    let cm = objects
        .iter()
        .find(|o| o.key == "/kubernetes.io/configmaps/kube-system/cluster-config-v1")?;
    let ic: yaml_serde::Value =
        yaml_serde::from_str(cm.value["data"]["install-config"].as_str()?).ok()?;
    let name = ic.get("metadata")?.get("name")?.as_str()?.to_string();
    let domain = ic.get("baseDomain")?.as_str()?.to_string();
    let infra = objects
        .iter()
        .find(|o| o.key == "/kubernetes.io/config.openshift.io/infrastructures/cluster")
        .and_then(|o| o.value["status"]["infrastructureName"].as_str())
        .map(str::to_string);
    Some((name, domain, infra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_apiservers_layout() {
        let k = |a: &str, kind: &str, ns: &str| storage_key(a, kind, ns, "n").unwrap();
        assert_eq!(k("v1", "ConfigMap", "ns"), "/kubernetes.io/configmaps/ns/n");
        assert_eq!(k("v1", "Node", ""), "/kubernetes.io/minions/n");
        assert_eq!(
            k("v1", "Service", "ns"),
            "/kubernetes.io/services/specs/ns/n"
        );
        assert_eq!(
            k("v1", "Endpoints", "ns"),
            "/kubernetes.io/services/endpoints/ns/n"
        );
        assert_eq!(
            k("apps/v1", "Deployment", "ns"),
            "/kubernetes.io/deployments/ns/n"
        );
        assert_eq!(
            k("networking.k8s.io/v1", "Ingress", "ns"),
            "/kubernetes.io/ingress/ns/n"
        );
        assert_eq!(
            k("networking.k8s.io/v1", "NetworkPolicy", "ns"),
            "/kubernetes.io/networkpolicies/ns/n"
        );
        assert_eq!(
            k("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", ""),
            "/kubernetes.io/clusterrolebindings/n"
        );
        assert_eq!(
            k("config.openshift.io/v1", "ClusterVersion", ""),
            "/kubernetes.io/config.openshift.io/clusterversions/n"
        );
        assert_eq!(
            k("config.openshift.io/v1", "Proxy", ""),
            "/kubernetes.io/config.openshift.io/proxies/n"
        );
        assert_eq!(
            k("machineconfiguration.openshift.io/v1", "MachineConfig", ""),
            "/kubernetes.io/machineconfiguration.openshift.io/machineconfigs/n"
        );
        assert_eq!(
            k("route.openshift.io/v1", "Route", "ns"),
            "/openshift.io/routes/ns/n"
        );
        assert_eq!(
            k("apiextensions.k8s.io/v1", "CustomResourceDefinition", ""),
            "/kubernetes.io/apiextensions.k8s.io/customresourcedefinitions/n"
        );
        assert_eq!(k("v1", "Gateway", "ns"), "/kubernetes.io/gateways/ns/n");
        assert!(storage_key("", "ConfigMap", "", "n").is_err());
        // ClusterResourceQuota is a custom resource in OpenShift 4
        assert_eq!(
            k("quota.openshift.io/v1", "ClusterResourceQuota", ""),
            "/kubernetes.io/quota.openshift.io/clusterresourcequotas/n"
        );
    }

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n";

    #[test]
    fn certificate_fields_are_read_and_set_by_their_path_in_both_encodings() {
        use k8s_pb::api::admissionregistration::v1 as adm;
        use k8s_pb::api::certificates::v1 as cert;
        use prost::Message;
        let hook = |ca: Option<&str>| adm::ValidatingWebhook {
            client_config: Some(adm::WebhookClientConfig {
                ca_bundle: ca.map(|c| c.as_bytes().to_vec()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let vwc = adm::ValidatingWebhookConfiguration {
            webhooks: vec![hook(None), hook(Some(PEM))],
            ..Default::default()
        };
        let key = "/kubernetes.io/validatingwebhookconfigurations/v";
        let raw = crate::kpb::wrap(
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            vwc.encode_to_vec(),
        );
        let (enc, obj) = read_value(key, &raw, 3).unwrap();
        let mut obj = obj.unwrap();
        assert_eq!(enc, "protobuf");
        let f = obj.fields();
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].text.as_str(), f[0].base64), (PEM, true));
        assert_eq!(
            obj.location(&f[0]),
            format!("etcd {key} webhooks[1].clientConfig.caBundle")
        );
        obj.set_field(&f[0], "NEW");
        assert_eq!(obj.fields()[0].text, "NEW");
        assert_eq!(obj.value["webhooks"][0], serde_json::json!({}));
        let back = crate::kpb::decode(&obj.stored().unwrap()).unwrap().view;
        assert_eq!(
            back["webhooks"][1]["clientConfig"]["caBundle"],
            b64_encode(b"NEW")
        );

        // the same paths in a JSON object: a CRD as kube-apiserver keeps it (v1beta1)
        let crd = EtcdObject::new(
            "/kubernetes.io/apiextensions.k8s.io/customresourcedefinitions/w",
            serde_json::json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "w"}, "spec": {"group": "example.com", "conversion": {"strategy": "Webhook",
                "webhookClientConfig": {"url": "https://c", "caBundle": b64_encode(PEM.as_bytes())}}}}),
        );
        assert_eq!(crd.encoding(), "json");
        let f = crd.fields();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].name(), "spec.conversion.webhookClientConfig.caBundle");
        assert_eq!(f[0].text, PEM);

        // secrets and configmaps: `data`, as before
        let s = EtcdObject::new(
            "/kubernetes.io/secrets/ns/s",
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                "data": {"tls.crt": b64_encode(PEM.as_bytes()), "bin": b64_encode(&[0xff, 0xfe])}}),
        );
        let f = s.fields();
        assert_eq!(f.len(), 1, "binary values are skipped");
        assert_eq!(
            s.location(&f[0]),
            "etcd /kubernetes.io/secrets/ns/s data.tls.crt"
        );
        let c = EtcdObject::new(
            "/kubernetes.io/configmaps/ns/c",
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                "data": {"ca-bundle.crt": PEM}}),
        );
        assert_eq!(
            (c.fields()[0].text.as_str(), c.fields()[0].base64),
            (PEM, false)
        );

        // a CSR's request is a PEM block recert keeps: no refusal
        let csr = cert::CertificateSigningRequest {
            spec: Some(cert::CertificateSigningRequestSpec {
                request: Some(
                    b"-----BEGIN CERTIFICATE REQUEST-----\nUg==\n-----END CERTIFICATE REQUEST-----\n"
                        .to_vec(),
                ),
                ..Default::default()
            }),
            status: Some(cert::CertificateSigningRequestStatus {
                certificate: Some(PEM.as_bytes().to_vec()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let raw = crate::kpb::wrap(
            "certificates.k8s.io/v1",
            "CertificateSigningRequest",
            csr.encode_to_vec(),
        );
        let (_, obj) = read_value("/kubernetes.io/certificatesigningrequests/c", &raw, 1).unwrap();
        let f = obj.unwrap().fields();
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].name().as_str(), f[0].text.as_str()),
            ("status.certificate", PEM)
        );
    }

    #[test]
    fn another_protobuf_kind_holding_a_pem_block_is_refused() {
        let raw = crate::kpb::wrap("apps/v1", "Deployment", PEM.as_bytes().to_vec());
        let e = read_value("/kubernetes.io/deployments/ns/d", &raw, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "a protobuf apps/v1 Deployment, which imgmode does not read, holds a PEM block"
            ),
            "{e}"
        );
        let raw = crate::kpb::wrap("apps/v1", "Deployment", b"no pem".to_vec());
        let (enc, obj) = read_value("/kubernetes.io/deployments/ns/d", &raw, 1).unwrap();
        assert_eq!((enc, obj.is_none()), ("protobuf-unread", true));
    }

    #[test]
    fn a_write_over_an_object_keeps_its_identity_and_encoding() {
        let stored = EtcdObject {
            key: "/kubernetes.io/secrets/ns/s".into(),
            value: serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ns", "uid": "u-1"}}),
            mod_revision: 7,
            protobuf: Some("orig".into()),
            encrypted: None,
        };
        let manifest = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ns"}});
        let o = EtcdObject::over(std::slice::from_ref(&stored), &stored.key, manifest.clone());
        assert_eq!(o.value["metadata"]["uid"], "u-1");
        assert_eq!((o.mod_revision, o.encoding()), (7, "protobuf"));
        let n = EtcdObject::over(&[], "/kubernetes.io/secrets/ns/t", manifest);
        assert_eq!((n.mod_revision, n.encoding()), (0, "protobuf"));
    }
}
