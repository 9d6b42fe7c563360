//! Kubernetes protobuf in etcd: how kube-apiserver stores built-in types. A value is `k8s\0`
//! followed by a `runtime.Unknown` (type meta, the object's own protobuf in `raw`, empty
//! content encoding and type). The types come from `k8s-pb` (generated from Kubernetes' real
//! `.proto` definitions) and are encoded with `prost`.
//!
//! imgmode reads every such value into a JSON view shaped like the object's JSON (`kind`,
//! `apiVersion`, `metadata` with name, namespace, uid, labels and annotations, and per kind
//! `data`/`type`, `data`/`binaryData`, `status.addresses`, or the certificate fields below),
//! which the rest of recert and post-pivot read and change as they do JSON objects. Writing
//! back changes only the fields whose view changed: for Secret, ConfigMap, Node and Namespace
//! the top-level fields (and, in `metadata`, only the labels and annotations); for the kinds
//! with certificate fields, each such field in place, down its path of nested messages
//! (`kpb/wire.rs`). Every other field, known to `k8s-pb` or not (a newer Kubernetes), at
//! any depth, is copied byte for byte; a Node's `status.addresses` are written inside its
//! status, the rest of the status kept. A change the writer cannot make (a renamed object, a
//! webhook's rules) is refused by name.
//!
//! Read and written:
//!
//! - Secret, ConfigMap, Node, Namespace (core `v1`): read, rewritten, and built whole as new
//!   objects ([`writes_new`]).
//! - The kinds with certificate fields (`kpb/bundles.rs` has the paths and field numbers):
//!   Validating/MutatingWebhookConfiguration `webhooks[].clientConfig.caBundle`, APIService
//!   `spec.caBundle`, CustomResourceDefinition's conversion webhook `caBundle` (`v1` and the
//!   `v1beta1` kube-apiserver stores), CertificateSigningRequest `status.certificate`; a CSR's
//!   `spec.request` (a certificate request: a public key, no secret) is kept as it is and not
//!   in the view. These are read and rewritten in place, not built as new objects: their
//!   other fields (webhook rules and selectors, a CRD's schema) are not in the view, and
//!   post-pivot refuses extra manifests of these kinds when the ISO is made. A PEM block
//!   anywhere else in such a value makes it refused, as below.
//! - Any other kind is read as its type meta only: recert refuses it when it holds a PEM
//!   block (it could carry a key or certificate recert would miss).

use anyhow::{bail, ensure, Context, Result};
use k8s_pb::api::core::v1::{ConfigMap, Namespace, Node, NodeAddress, NodeStatus, Secret};
use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

use crate::text::{b64_decode, b64_encode};
use wire::{message_field, payload, splice};

mod bundles;
mod wire;

pub use bundles::{pem_paths, places, Path, Seg};

/// The prefix of a protobuf value.
pub const MAGIC: &[u8] = b"k8s\0";

/// Whether an etcd value is Kubernetes protobuf.
pub fn is_protobuf(value: &[u8]) -> bool {
    value.starts_with(MAGIC)
}

/// The kinds this module builds whole, as new objects: Secret, ConfigMap, Node, Namespace.
pub fn writes_new(api_version: &str, kind: &str) -> bool {
    api_version == "v1" && matches!(kind, "Secret" | "ConfigMap" | "Node" | "Namespace")
}

/// The kinds this module reads into a JSON view and writes back into their bytes: those it
/// [`writes_new`], and the kinds whose certificate fields it reads ([`pem_paths`]).
pub fn reads(api_version: &str, kind: &str) -> bool {
    writes_new(api_version, kind) || bundles::find(api_version, kind).is_some()
}

/// A protobuf value read.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The JSON view (type meta only for a kind this module does not [`reads`]).
    pub view: Value,
    /// The kind is one this module [`reads`].
    pub known: bool,
}

fn envelope(value: &[u8]) -> Result<Unknown> {
    let body = value
        .strip_prefix(MAGIC)
        .context("not Kubernetes protobuf (no k8s\\0 prefix)")?;
    Unknown::decode(body)
        .context("a Kubernetes protobuf envelope (runtime.Unknown) that does not decode")
}

fn type_meta(u: &Unknown) -> (String, String) {
    let t = u.type_meta.clone().unwrap_or_default();
    (
        t.api_version.unwrap_or_default(),
        t.kind.unwrap_or_default(),
    )
}

/// Read a protobuf value into its JSON view.
pub fn decode(value: &[u8]) -> Result<Decoded> {
    decode_envelope(&envelope(value)?)
}

/// The JSON view of a decoded envelope.
fn decode_envelope(u: &Unknown) -> Result<Decoded> {
    let (api_version, kind) = type_meta(u);
    let raw: &[u8] = u.raw.as_deref().unwrap_or_default();
    let mut view = json!({"apiVersion": api_version, "kind": kind});
    if !reads(&api_version, &kind) {
        return Ok(Decoded { view, known: false });
    }
    let what = || format!("a protobuf {kind} that does not decode");
    let body = match (bundles::find(&api_version, &kind), kind.as_str()) {
        (Some(b), _) => bundles::view(b, raw)?,
        (None, "Secret") => {
            let s = Secret::decode(raw).with_context(what)?;
            let mut v = json!({"metadata": meta_view(s.metadata.as_ref())});
            if let Some(t) = s.r#type {
                v["type"] = json!(t);
            }
            if !s.data.is_empty() {
                v["data"] = bytes_map_view(&s.data);
            }
            v
        }
        (None, "ConfigMap") => {
            let c = ConfigMap::decode(raw).with_context(what)?;
            let mut v = json!({"metadata": meta_view(c.metadata.as_ref())});
            if !c.data.is_empty() {
                v["data"] = json!(c.data);
            }
            if !c.binary_data.is_empty() {
                v["binaryData"] = bytes_map_view(&c.binary_data);
            }
            v
        }
        (None, "Node") => {
            let n = Node::decode(raw).with_context(what)?;
            let addrs: Vec<Value> = n
                .status
                .map(|s| s.addresses)
                .unwrap_or_default()
                .into_iter()
                .map(|a| json!({"type": a.r#type.unwrap_or_default(), "address": a.address.unwrap_or_default()}))
                .collect();
            json!({"metadata": meta_view(n.metadata.as_ref()), "status": {"addresses": addrs}})
        }
        _ => {
            let n = Namespace::decode(raw).with_context(what)?;
            json!({"metadata": meta_view(n.metadata.as_ref())})
        }
    };
    for (k, v) in body.as_object().expect("an object") {
        view[k] = v.clone();
    }
    Ok(Decoded { view, known: true })
}

fn bytes_map_view(m: &BTreeMap<String, Vec<u8>>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), json!(b64_encode(v))))
            .collect(),
    )
}

fn meta_view(m: Option<&ObjectMeta>) -> Value {
    let mut v = Map::new();
    let Some(m) = m else {
        return Value::Object(v);
    };
    for (k, s) in [
        ("name", &m.name),
        ("namespace", &m.namespace),
        ("uid", &m.uid),
    ] {
        if let Some(s) = s {
            v.insert(k.into(), json!(s));
        }
    }
    if !m.labels.is_empty() {
        v.insert("labels".into(), json!(m.labels));
    }
    if !m.annotations.is_empty() {
        v.insert("annotations".into(), json!(m.annotations));
    }
    Value::Object(v)
}

fn string_map(v: &Value, what: &str) -> Result<BTreeMap<String, String>> {
    let Some(o) = v.as_object() else {
        ensure!(v.is_null(), "{what} is not a map");
        return Ok(BTreeMap::new());
    };
    o.iter()
        .map(|(k, v)| {
            let s = v
                .as_str()
                .with_context(|| format!("{what}[{k}] is not text"))?;
            Ok((k.clone(), s.to_string()))
        })
        .collect()
}

fn bytes_map(v: &Value, what: &str) -> Result<BTreeMap<String, Vec<u8>>> {
    string_map(v, what)?
        .into_iter()
        .map(|(k, s)| {
            let b = b64_decode(&s).with_context(|| format!("{what}[{k}] is not base64"))?;
            Ok((k, b))
        })
        .collect()
}

fn meta_from_view(v: &Value) -> Result<ObjectMeta> {
    let s = |k: &str| v[k].as_str().map(str::to_string);
    Ok(ObjectMeta {
        name: s("name"),
        namespace: s("namespace"),
        uid: s("uid"),
        labels: string_map(&v["labels"], "metadata.labels")?,
        annotations: string_map(&v["annotations"], "metadata.annotations")?,
        ..Default::default()
    })
}

/// A whole object from its view (a new object: nothing to keep).
fn encode_new(kind: &str, view: &Value) -> Result<Vec<u8>> {
    let metadata = Some(meta_from_view(&view["metadata"])?);
    Ok(match kind {
        "Secret" => Secret {
            metadata,
            data: bytes_map(&view["data"], "data")?,
            r#type: view["type"].as_str().map(str::to_string),
            ..Default::default()
        }
        .encode_to_vec(),
        "ConfigMap" => ConfigMap {
            metadata,
            data: string_map(&view["data"], "data")?,
            binary_data: bytes_map(&view["binaryData"], "binaryData")?,
            ..Default::default()
        }
        .encode_to_vec(),
        "Namespace" => Namespace {
            metadata,
            ..Default::default()
        }
        .encode_to_vec(),
        "Node" => Node {
            metadata,
            status: Some(node_status(view)),
            ..Default::default()
        }
        .encode_to_vec(),
        // the kinds read for their certificate fields only: see the module's doc
        _ => bail!("a new {kind} is not written as protobuf by imgmode"),
    })
}

/// The metadata of `original` (an object's inner protobuf) with the labels and annotations of
/// `new`; a change of its name, namespace or uid (against `old`) is refused.
fn metadata_payload(kind: &str, original: &[u8], old: &Value, new: &Value) -> Result<Vec<u8>> {
    for fixed in ["name", "namespace", "uid"] {
        ensure!(
            old[fixed] == new[fixed],
            "metadata.{fixed} of a protobuf {kind} cannot change (from {} to {})",
            old[fixed],
            new[fixed]
        );
    }
    let meta = payload(original, 1)?.unwrap_or_default();
    let m = ObjectMeta {
        labels: string_map(&new["labels"], "metadata.labels")?,
        annotations: string_map(&new["annotations"], "metadata.annotations")?,
        ..Default::default()
    };
    splice(&meta, &[11, 12], &m.encode_to_vec())
}

/// A Node's status as its view has it: the addresses (the only status field in the view).
fn node_status(view: &Value) -> NodeStatus {
    let addresses = view["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| NodeAddress {
            r#type: a["type"].as_str().map(str::to_string),
            address: a["address"].as_str().map(str::to_string),
        })
        .collect();
    NodeStatus {
        addresses,
        ..Default::default()
    }
}

/// The object `original` (its inner protobuf) with the changes of `view` against `old`.
fn encode_changes(kind: &str, original: &[u8], old: &Value, view: &Value) -> Result<Vec<u8>> {
    let keys: std::collections::BTreeSet<&String> = old
        .as_object()
        .into_iter()
        .flatten()
        .chain(view.as_object().into_iter().flatten())
        .map(|(k, _)| k)
        .collect();
    let mut drop = vec![];
    let mut append = vec![];
    for k in keys {
        if old[k.as_str()] == view[k.as_str()] {
            continue;
        }
        let (tag, field) = match (kind, k.as_str()) {
            ("Secret", "data") => (
                2,
                Secret {
                    data: bytes_map(&view["data"], "data")?,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            ("Secret", "type") => (
                3,
                Secret {
                    r#type: view["type"].as_str().map(str::to_string),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            ("ConfigMap", "data") => (
                2,
                ConfigMap {
                    data: string_map(&view["data"], "data")?,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            ("ConfigMap", "binaryData") => (
                3,
                ConfigMap {
                    binary_data: bytes_map(&view["binaryData"], "binaryData")?,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            ("Node", "status") => {
                // the addresses only (as the kubelet reports them); conditions, capacity,
                // node info and every other status field stay as they are
                let status = payload(original, 3)?.unwrap_or_default();
                let new = node_status(view);
                (
                    3,
                    message_field(3, &splice(&status, &[5], &new.encode_to_vec())?),
                )
            }
            (_, "metadata") => (
                1,
                message_field(
                    1,
                    &metadata_payload(kind, original, &old["metadata"], &view["metadata"])?,
                ),
            ),
            (_, other) => bail!("imgmode does not write {other} of a protobuf {kind}"),
        };
        drop.push(tag);
        append.extend(field);
    }
    splice(original, &drop, &append)
}

/// Whether a JSON value says nothing (null, or an empty object, array or string).
fn empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// `view` as this module writes it: a Secret's `stringData` folded into `data` (as the API
/// server does), and every field it cannot write refused by name, so nothing a manifest says
/// is dropped on the way to etcd.
fn writable(api_version: &str, kind: &str, view: &Value) -> Result<Value> {
    let mut v = view.clone();
    if kind == "Secret" {
        if let Some(sd) = v.get("stringData").cloned().filter(|s| !empty(s)) {
            for (k, s) in string_map(&sd, "stringData")? {
                v["data"][k.as_str()] = json!(b64_encode(s.as_bytes()));
            }
        }
        if let Some(o) = v.as_object_mut() {
            o.remove("stringData");
        }
    }
    let top: Vec<&str> = match (bundles::find(api_version, kind), kind) {
        (Some(b), _) => bundles::top_keys(b),
        (None, "Secret") => vec!["apiVersion", "kind", "metadata", "type", "data"],
        (None, "ConfigMap") => vec!["apiVersion", "kind", "metadata", "data", "binaryData"],
        (None, "Node") => vec!["apiVersion", "kind", "metadata", "status"],
        _ => vec!["apiVersion", "kind", "metadata"],
    };
    for (k, val) in v.as_object().into_iter().flatten() {
        ensure!(
            top.contains(&k.as_str()) || empty(val),
            "{kind} {}: imgmode does not write its {k} as protobuf; leave it out, or apply it once the cluster runs",
            v["metadata"]["name"].as_str().unwrap_or_default()
        );
    }
    for (k, val) in v["metadata"].as_object().into_iter().flatten() {
        ensure!(
            ["name", "namespace", "uid", "labels", "annotations"].contains(&k.as_str())
                || empty(val)
                || k == "creationTimestamp",
            "{kind} {}: imgmode does not write metadata.{k} as protobuf; leave it out",
            v["metadata"]["name"].as_str().unwrap_or_default()
        );
    }
    Ok(v)
}

/// The etcd value for the JSON view `view`: the changes against `original` (a value read
/// from etcd) written into it, or a new object.
pub fn encode(original: Option<&[u8]>, view: &Value) -> Result<Vec<u8>> {
    let api_version = view["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = view["kind"].as_str().unwrap_or_default().to_string();
    ensure!(
        reads(&api_version, &kind),
        "imgmode does not write a protobuf {api_version} {kind}"
    );
    let view = &writable(&api_version, &kind, view)?;
    if let Some(orig) = original {
        let u = envelope(orig)?;
        ensure!(
            type_meta(&u) == (api_version.clone(), kind.clone()),
            "a protobuf {:?} cannot become a {api_version} {kind}",
            type_meta(&u)
        );
        let old = decode_envelope(&u)?.view;
        let old_raw = u.raw.unwrap_or_default();
        let raw = match bundles::find(&api_version, &kind) {
            Some(b) => bundles::encode_changes(b, &old_raw, &old, view)?,
            None => encode_changes(&kind, &old_raw, &old, view)?,
        };
        if raw == old_raw {
            return Ok(orig.to_vec());
        }
        // the envelope as it was, but its raw object
        let body = wire::replace(&orig[MAGIC.len()..], &[wire::Step::one(2)], &raw)?;
        return Ok([MAGIC, &body].concat());
    }
    let raw = encode_new(&kind, view)?;
    Ok(wrap(&api_version, &kind, raw))
}

/// An etcd value as kube-apiserver writes it: the object `raw` of `api_version`/`kind` in its
/// envelope (`k8s\0` and a `runtime.Unknown` with empty content encoding and type).
pub fn wrap(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    [MAGIC, &u.encode_to_vec()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_with_unknown_field() -> Vec<u8> {
        let s = Secret {
            metadata: Some(ObjectMeta {
                name: Some("s".into()),
                namespace: Some("ns".into()),
                labels: [("a".to_string(), String::new())].into(),
                ..Default::default()
            }),
            data: [("tls.key".to_string(), b"OLD".to_vec())].into(),
            r#type: Some("kubernetes.io/tls".into()),
            ..Default::default()
        };
        let mut raw = s.encode_to_vec();
        // a field a newer Kubernetes added (tag 99, a string)
        raw.extend(message_field(99, b"future"));
        wrap("v1", "Secret", raw)
    }

    #[test]
    fn a_secret_round_trips_and_keeps_what_it_does_not_know() {
        let orig = secret_with_unknown_field();
        let d = decode(&orig).unwrap();
        assert!(d.known);
        assert_eq!(d.view["metadata"]["name"], "s");
        assert_eq!(d.view["data"]["tls.key"], b64_encode(b"OLD"));
        // unchanged: the same bytes
        assert_eq!(encode(Some(&orig), &d.view).unwrap(), orig);
        let mut v = d.view.clone();
        v["data"]["tls.key"] = json!(b64_encode(b"NEW"));
        v["metadata"]["labels"]["b"] = json!("2");
        let new = encode(Some(&orig), &v).unwrap();
        let back = decode(&new).unwrap().view;
        assert_eq!(back, v);
        let inner = envelope(&new).unwrap().raw.unwrap();
        assert!(
            wire::fields(&inner)
                .unwrap()
                .iter()
                .any(|(t, _, _)| *t == 99),
            "the unknown field is kept"
        );
        v["metadata"]["name"] = json!("other");
        let e = encode(Some(&orig), &v).unwrap_err().to_string();
        assert!(
            e.contains("metadata.name of a protobuf Secret cannot change"),
            "{e}"
        );
    }

    #[test]
    fn a_nodes_addresses_change_and_the_rest_of_its_status_stays() {
        let n = Node {
            metadata: Some(ObjectMeta {
                name: Some("seed-node".into()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                phase: Some("Running".into()),
                addresses: vec![NodeAddress {
                    r#type: Some("InternalIP".into()),
                    address: Some("10.0.2.15".into()),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut raw = n.encode_to_vec();
        raw.extend(message_field(99, b"future"));
        let orig = wrap("v1", "Node", raw);
        let mut v = decode(&orig).unwrap().view;
        v["status"]["addresses"] = json!([{"type": "InternalIP", "address": "10.77.0.60"},
                                          {"type": "Hostname", "address": "node1"}]);
        let new = encode(Some(&orig), &v).unwrap();
        assert_eq!(decode(&new).unwrap().view, v);
        let inner = envelope(&new).unwrap().raw.unwrap();
        let back = Node::decode(inner.as_slice()).unwrap();
        assert_eq!(back.status.unwrap().phase.as_deref(), Some("Running"));
        assert!(wire::fields(&inner)
            .unwrap()
            .iter()
            .any(|(t, _, _)| *t == 99));
    }

    #[test]
    fn new_objects_and_other_kinds() {
        let v = json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "c", "namespace": "ns"}, "data": {"k": "v"}});
        let b = encode(None, &v).unwrap();
        assert!(is_protobuf(&b));
        assert_eq!(decode(&b).unwrap().view, v);
        let e = encode(
            None,
            &json!({"apiVersion": "apps/v1", "kind": "Deployment"}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("does not write a protobuf apps/v1 Deployment"),
            "{e}"
        );
        let d = decode(&wrap("apps/v1", "Deployment", vec![])).unwrap();
        assert!(!d.known);
        assert_eq!(d.view["kind"], "Deployment");
        assert!(decode(b"k8s\0\xff\xff").is_err());
    }

    #[test]
    fn what_a_manifest_says_is_written_or_refused() {
        let s = json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "s", "namespace": "ns", "creationTimestamp": null},
                       "stringData": {"password": "pw"}, "type": "Opaque"});
        let back = decode(&encode(None, &s).unwrap()).unwrap().view;
        assert_eq!(back["data"]["password"], b64_encode(b"pw"));
        let mut imm = s.clone();
        imm["immutable"] = json!(true);
        let e = encode(None, &imm).unwrap_err().to_string();
        assert!(e.contains("does not write its immutable"), "{e}");
        let mut owned = s.clone();
        owned["metadata"]["ownerReferences"] = json!([{"kind": "X"}]);
        let e = encode(None, &owned).unwrap_err().to_string();
        assert!(e.contains("metadata.ownerReferences"), "{e}");
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"},
                        "spec": {}, "status": {}});
        encode(None, &ns).unwrap();
    }
}
