//! The built-in kinds that carry certificates in bytes fields (PEM text; base64 in JSON): CA
//! bundles of webhooks, aggregated API servers and CRD conversion webhooks, and the
//! certificate a CertificateSigningRequest was issued. Each field is named by a path of
//! steps, each with its JSON name and its protobuf field number, so one path reads the field
//! out of a JSON object, builds it into the JSON view of a protobuf one, and writes it back
//! into the protobuf bytes at exactly that place ([`wire::replace`]).
//!
//! The field numbers are those of the kinds' `generated.proto` (kubernetes/api,
//! kube-aggregator, apiextensions-apiserver), which `k8s-pb` is generated from; the unit
//! tests build every kind with its `k8s-pb` type and read it through these paths, so a wrong
//! number fails them:
//!
//! | kind | path | numbers |
//! |---|---|---|
//! | `admissionregistration.k8s.io/v1` Validating/MutatingWebhookConfiguration | `webhooks[].clientConfig.caBundle` | 2, 2, 2 |
//! | `apiregistration.k8s.io/v1` APIService | `spec.caBundle` | 2, 5 |
//! | `apiextensions.k8s.io/v1` CustomResourceDefinition | `spec.conversion.webhook.clientConfig.caBundle` | 2, 9, 2, 2, 2 |
//! | `apiextensions.k8s.io/v1beta1` CustomResourceDefinition | `spec.conversion.webhookClientConfig.caBundle` | 2, 9, 2, 2 |
//! | `certificates.k8s.io/v1` CertificateSigningRequest | `status.certificate` | 3, 2 |
//!
//! (kube-apiserver's apiextensions server keeps CRDs as `v1beta1`, so that version is read
//! too.) A CSR's `spec.request` (numbers 2, 1) is a `CERTIFICATE REQUEST`: the requester's
//! public key, signed with its private key, and no secret. recert keeps it as it is (it
//! could not re-sign it without that key, and an issued CSR is history), and it does not make
//! the value refused; every other PEM block outside these fields does, as in a kind imgmode
//! does not read.

use anyhow::{bail, ensure, Context, Result};
use k8s_pb::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_pb::api::certificates::v1::CertificateSigningRequest;
use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::{
    v1 as crd_v1, v1beta1 as crd_v1beta1,
};
use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_pb::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use prost::Message;
use serde_json::{json, Value};

use super::wire::{self, Step};
use crate::text::{b64_decode, b64_encode};

/// One step of a path to a bytes field: its JSON name, its protobuf field number, and whether
/// it is a list (a repeated field; a JSON array).
#[derive(Debug)]
pub struct Seg {
    pub json: &'static str,
    pub tag: u32,
    pub repeated: bool,
}

const fn one(json: &'static str, tag: u32) -> Seg {
    Seg {
        json,
        tag,
        repeated: false,
    }
}

const fn each(json: &'static str, tag: u32) -> Seg {
    Seg {
        json,
        tag,
        repeated: true,
    }
}

/// A path of [`Seg`]s, from the object down to a bytes field.
pub type Path = &'static [Seg];

const WEBHOOK_CA: Path = &[
    each("webhooks", 2),
    one("clientConfig", 2),
    one("caBundle", 2),
];
const APISERVICE_CA: Path = &[one("spec", 2), one("caBundle", 5)];
const CRD_CA: Path = &[
    one("spec", 2),
    one("conversion", 9),
    one("webhook", 2),
    one("clientConfig", 2),
    one("caBundle", 2),
];
const CRD_V1BETA1_CA: Path = &[
    one("spec", 2),
    one("conversion", 9),
    one("webhookClientConfig", 2),
    one("caBundle", 2),
];
const CSR_CERTIFICATE: Path = &[one("status", 3), one("certificate", 2)];
const CSR_REQUEST: Path = &[one("spec", 2), one("request", 1)];

/// A kind whose certificate fields imgmode reads and rewrites.
pub(super) struct Bundled {
    pub(super) api_version: &'static str,
    pub(super) kind: &'static str,
    /// The bytes fields holding PEM certificates that recert rewrites.
    pem: &'static [Path],
    /// Bytes fields holding PEM that stays as it is.
    kept: &'static [Path],
    /// Decodes the object with its `k8s-pb` type: a value that does not is refused.
    check: fn(&[u8]) -> Result<(), prost::DecodeError>,
}

fn decodes<M: Message + Default>(raw: &[u8]) -> Result<(), prost::DecodeError> {
    M::decode(raw).map(drop)
}

pub(super) const KINDS: &[Bundled] = &[
    Bundled {
        api_version: "admissionregistration.k8s.io/v1",
        kind: "ValidatingWebhookConfiguration",
        pem: &[WEBHOOK_CA],
        kept: &[],
        check: decodes::<ValidatingWebhookConfiguration>,
    },
    Bundled {
        api_version: "admissionregistration.k8s.io/v1",
        kind: "MutatingWebhookConfiguration",
        pem: &[WEBHOOK_CA],
        kept: &[],
        check: decodes::<MutatingWebhookConfiguration>,
    },
    Bundled {
        api_version: "apiregistration.k8s.io/v1",
        kind: "APIService",
        pem: &[APISERVICE_CA],
        kept: &[],
        check: decodes::<APIService>,
    },
    Bundled {
        api_version: "apiextensions.k8s.io/v1",
        kind: "CustomResourceDefinition",
        pem: &[CRD_CA],
        kept: &[],
        check: decodes::<crd_v1::CustomResourceDefinition>,
    },
    Bundled {
        api_version: "apiextensions.k8s.io/v1beta1",
        kind: "CustomResourceDefinition",
        pem: &[CRD_V1BETA1_CA],
        kept: &[],
        check: decodes::<crd_v1beta1::CustomResourceDefinition>,
    },
    Bundled {
        api_version: "certificates.k8s.io/v1",
        kind: "CertificateSigningRequest",
        pem: &[CSR_CERTIFICATE],
        kept: &[CSR_REQUEST],
        check: decodes::<CertificateSigningRequest>,
    },
];

pub(super) fn find(api_version: &str, kind: &str) -> Option<&'static Bundled> {
    KINDS
        .iter()
        .find(|b| b.api_version == api_version && b.kind == kind)
}

/// The bytes fields of `api_version`/`kind` that hold PEM certificates (none for other kinds),
/// in JSON objects and protobuf views alike.
pub fn pem_paths(api_version: &str, kind: &str) -> &'static [Path] {
    find(api_version, kind).map_or(&[], |b| b.pem)
}

/// The top-level JSON keys a view of `b` has.
pub(super) fn top_keys(b: &Bundled) -> Vec<&'static str> {
    let mut keys = vec!["apiVersion", "kind", "metadata"];
    keys.extend(b.pem.iter().map(|p| p[0].json));
    keys
}

/// Every place `path` names in the JSON `v`: the element index of each list on the way, and
/// the value there (`None` where an element has no such field).
pub fn places<'a>(v: &'a Value, path: &[Seg]) -> Vec<(Vec<usize>, Option<&'a Value>)> {
    fn walk<'a>(
        v: &'a Value,
        path: &[Seg],
        idx: &mut Vec<usize>,
        out: &mut Vec<(Vec<usize>, Option<&'a Value>)>,
    ) {
        let Some((seg, rest)) = path.split_first() else {
            out.push((idx.clone(), Some(v).filter(|v| !v.is_null())));
            return;
        };
        let child = v.get(seg.json).unwrap_or(&Value::Null);
        if seg.repeated {
            for (i, item) in child.as_array().into_iter().flatten().enumerate() {
                idx.push(i);
                walk(item, rest, idx, out);
                idx.pop();
            }
        } else {
            walk(child, rest, idx, out);
        }
    }
    let mut out = vec![];
    walk(v, path, &mut vec![], &mut out);
    out
}

/// The JSON spelling of one place of `path` (`webhooks[0].clientConfig.caBundle`).
fn json_path(path: &[Seg], idx: &[usize]) -> String {
    let mut idx = idx.iter();
    let mut out = String::new();
    for seg in path {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(seg.json);
        if seg.repeated {
            match idx.next() {
                Some(i) => out.push_str(&format!("[{i}]")),
                None => out.push_str("[]"),
            }
        }
    }
    out
}

/// The protobuf path of one place of `path`.
fn wire_path(path: &[Seg], idx: &[usize]) -> Vec<Step> {
    let mut idx = idx.iter();
    path.iter()
        .map(|s| Step {
            tag: s.tag,
            nth: if s.repeated {
                idx.next().copied()
            } else {
                None
            },
        })
        .collect()
}

/// The value at one place of `path` in `v` (none where absent).
fn at<'a>(v: &'a Value, path: &[Seg], idx: &[usize]) -> Option<&'a Value> {
    let mut idx = idx.iter();
    let mut v = v;
    for seg in path {
        v = v.get(seg.json)?;
        if seg.repeated {
            v = v.get(*idx.next()?)?;
        }
    }
    Some(v).filter(|v| !v.is_null())
}

/// `v` with the leaf at one place of `path` set to `to` (removed for `None`); the place's
/// lists and objects exist ([`places`] found it).
fn set_at(v: &mut Value, path: &[Seg], idx: &[usize], to: Option<Value>) {
    let Some((leaf, parents)) = path.split_last() else {
        return;
    };
    let mut idx = idx.iter();
    let mut v = v;
    for seg in parents {
        v = &mut v[seg.json];
        if seg.repeated {
            v = &mut v[*idx.next().expect("an index per list")];
        }
    }
    match (v.as_object_mut(), to) {
        (Some(o), Some(to)) => {
            o.insert(leaf.json.to_string(), to);
        }
        (Some(o), None) => {
            o.remove(leaf.json);
        }
        (None, _) => {}
    }
}

/// The JSON of the fields `path` names in `msg` (null when none is there); a list keeps one
/// element per occurrence, so indexes match the protobuf's.
fn path_view(msg: &[u8], path: &[Seg]) -> Result<Value> {
    let Some((seg, rest)) = path.split_first() else {
        return Ok(Value::Null);
    };
    let inner = |body: &[u8]| -> Result<Value> {
        if rest.is_empty() {
            Ok(json!(b64_encode(body)))
        } else {
            path_view(body, rest)
        }
    };
    let v = if seg.repeated {
        let items = wire::occurrences(msg, seg.tag)?;
        if items.is_empty() {
            return Ok(Value::Null);
        }
        let mut out = vec![];
        for body in items {
            let v = inner(body)?;
            out.push(if v.is_null() { json!({}) } else { v });
        }
        Value::Array(out)
    } else {
        match wire::read(msg, &[Step::one(seg.tag)])? {
            Some(body) => inner(body)?,
            None => Value::Null,
        }
    };
    Ok(if v.is_null() {
        v
    } else {
        json!({ seg.json: v })
    })
}

/// `from` merged into `into` (objects key by key, lists of one length element by element).
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (x, y) in a.iter_mut().zip(b) {
                merge(x, y);
            }
        }
        (slot, v) => {
            if !v.is_null() {
                *slot = v;
            }
        }
    }
}

/// The payloads of every place of `path` in `msg`.
fn leaves<'a>(msg: &'a [u8], path: &[Seg]) -> Result<Vec<&'a [u8]>> {
    let Some((seg, rest)) = path.split_first() else {
        return Ok(vec![msg]);
    };
    let bodies = if seg.repeated {
        wire::occurrences(msg, seg.tag)?
    } else {
        wire::read(msg, &[Step::one(seg.tag)])?
            .into_iter()
            .collect()
    };
    let mut out = vec![];
    for b in bodies {
        out.extend(leaves(b, rest)?);
    }
    Ok(out)
}

fn pem_blocks(b: &[u8]) -> usize {
    b.windows(10).filter(|w| *w == b"-----BEGIN").count()
}

/// The JSON view of the object `raw` of kind `b`: metadata and the certificate fields.
pub(super) fn view(b: &Bundled, raw: &[u8]) -> Result<Value> {
    (b.check)(raw).with_context(|| format!("a protobuf {} that does not decode", b.kind))?;
    let meta = wire::read(raw, &[Step::one(1)])?
        .map(ObjectMeta::decode)
        .transpose()
        .with_context(|| format!("the metadata of a protobuf {}", b.kind))?;
    let mut v = json!({ "metadata": super::meta_view(meta.as_ref()) });
    let mut accounted = 0;
    for path in b.pem {
        merge(&mut v, path_view(raw, path)?);
    }
    for path in b.pem.iter().chain(b.kept) {
        accounted += leaves(raw, path)?
            .into_iter()
            .map(pem_blocks)
            .sum::<usize>();
    }
    ensure!(
        pem_blocks(raw) <= accounted,
        "a protobuf {} {} holds a PEM block outside the fields imgmode reads ({}): a key or certificate recert would miss",
        b.api_version,
        b.kind,
        b.pem
            .iter()
            .map(|p| json_path(p, &[]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(v)
}

/// Where `a` and `b` first differ, spelled as a JSON path.
fn first_difference(a: &Value, b: &Value, at: String) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys = x
                .keys()
                .chain(y.keys())
                .collect::<std::collections::BTreeSet<_>>();
            for k in keys {
                let (p, q) = (&a[k.as_str()], &b[k.as_str()]);
                if p != q {
                    let at = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    return first_difference(p, q, at);
                }
            }
            at
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            match x.iter().zip(y).position(|(p, q)| p != q) {
                Some(i) => first_difference(&x[i], &y[i], format!("{at}[{i}]")),
                None => at,
            }
        }
        _ => at,
    }
}

/// The object `raw` (its inner protobuf) with the changes of `view` against `old`: each
/// certificate field that changed replaced where it is, and metadata's labels and annotations;
/// any other change is refused by name.
pub(super) fn encode_changes(
    b: &Bundled,
    raw: &[u8],
    old: &Value,
    view: &Value,
) -> Result<Vec<u8>> {
    // `view` with every change this writes undone: then it must be `old`
    let mut undone = view.clone();
    let mut edits = vec![];
    for path in b.pem {
        for (idx, new) in places(view, path) {
            let was = at(old, path, &idx);
            if new == was {
                continue;
            }
            let name = json_path(path, &idx);
            let Some(Value::String(text)) = new else {
                bail!(
                    "{name} of a protobuf {}: imgmode writes a base64 string there, not {}",
                    b.kind,
                    new.unwrap_or(&Value::Null)
                );
            };
            let bytes = b64_decode(text)
                .with_context(|| format!("{name} of a protobuf {} is not base64", b.kind))?;
            edits.push((wire_path(path, &idx), bytes));
            set_at(&mut undone, path, &idx, was.cloned());
        }
    }
    let meta_changed = old["metadata"] != view["metadata"];
    undone["metadata"] = old["metadata"].clone();
    if undone != *old {
        bail!(
            "imgmode does not write {} of a protobuf {}",
            first_difference(old, &undone, String::new()),
            b.kind
        );
    }
    let mut out = raw.to_vec();
    if meta_changed {
        let meta = super::metadata_payload(b.kind, raw, &old["metadata"], &view["metadata"])?;
        out = wire::replace(&out, &[Step::one(1)], &meta)?;
    }
    for (path, bytes) in edits {
        out = wire::replace(&out, &path, &bytes)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{decode, encode, wrap};
    use super::*;
    use k8s_pb::api::admissionregistration::v1 as adm;
    use k8s_pb::api::certificates::v1 as cert;
    use k8s_pb::kube_aggregator::pkg::apis::apiregistration::v1 as agg;

    const OLD: &str = "-----BEGIN CERTIFICATE-----\nT0xE\n-----END CERTIFICATE-----\n";
    const NEW: &str =
        "-----BEGIN CERTIFICATE-----\nTkVXLCBhbmQgbG9uZ2Vy\n-----END CERTIFICATE-----\n";
    const REQUEST: &str =
        "-----BEGIN CERTIFICATE REQUEST-----\nUkVR\n-----END CERTIFICATE REQUEST-----\n";

    fn one(tag: u32) -> Step {
        Step { tag, nth: None }
    }

    fn meta(name: &str) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            name: Some(name.into()),
            uid: Some("u-1".into()),
            labels: [("app".to_string(), "x".to_string())].into(),
            ..Default::default()
        })
    }

    fn svc() -> Option<crd_v1::ServiceReference> {
        Some(crd_v1::ServiceReference {
            namespace: Some("ns".into()),
            name: Some("conv".into()),
            path: Some("/convert".into()),
            port: Some(443),
        })
    }

    /// One kind as kube-apiserver would store it, built with its `k8s-pb` type, with fields a
    /// newer Kubernetes might add: at the top (99) and inside the message that holds the
    /// certificate field (98, at `unknown`).
    struct Case {
        api_version: &'static str,
        kind: &'static str,
        raw: Vec<u8>,
        /// The certificate field's place in JSON.
        path: &'static str,
        /// The message holding it, where field 98 was added.
        unknown: Vec<Step>,
        /// The certificate fields, read with the `k8s-pb` type (not through [`KINDS`]).
        certs: fn(&[u8]) -> Vec<Option<Vec<u8>>>,
    }

    fn cases() -> Vec<Case> {
        let pem = || Some(OLD.as_bytes().to_vec());
        let webhook = |ca| adm::WebhookClientConfig {
            service: Some(adm::ServiceReference {
                namespace: Some("ns".into()),
                name: Some("hook".into()),
                path: Some("/validate".into()),
                port: Some(8443),
            }),
            ca_bundle: ca,
            ..Default::default()
        };
        let rules = vec![adm::RuleWithOperations {
            operations: vec!["CREATE".into()],
            rule: Some(adm::Rule {
                api_groups: vec![String::new()],
                api_versions: vec!["v1".into()],
                resources: vec!["pods".into()],
                scope: Some("*".into()),
            }),
        }];
        let vwc = adm::ValidatingWebhookConfiguration {
            metadata: meta("vwc"),
            webhooks: vec![
                // without a CA bundle: the one after it is still element 1
                adm::ValidatingWebhook {
                    name: Some("a.example.com".into()),
                    client_config: Some(adm::WebhookClientConfig {
                        url: Some("https://a.example.com".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                adm::ValidatingWebhook {
                    name: Some("b.example.com".into()),
                    client_config: Some(webhook(pem())),
                    rules: rules.clone(),
                    side_effects: Some("None".into()),
                    admission_review_versions: vec!["v1".into()],
                    ..Default::default()
                },
            ],
        };
        let mwc = adm::MutatingWebhookConfiguration {
            metadata: meta("mwc"),
            webhooks: vec![adm::MutatingWebhook {
                name: Some("m.example.com".into()),
                client_config: Some(webhook(pem())),
                rules,
                reinvocation_policy: Some("Never".into()),
                ..Default::default()
            }],
        };
        let api = agg::APIService {
            metadata: meta("v1.example.com"),
            spec: Some(agg::APIServiceSpec {
                service: Some(agg::ServiceReference {
                    namespace: Some("ns".into()),
                    name: Some("api".into()),
                    port: Some(443),
                }),
                group: Some("example.com".into()),
                version: Some("v1".into()),
                ca_bundle: pem(),
                group_priority_minimum: Some(1000),
                version_priority: Some(15),
                ..Default::default()
            }),
            status: Some(agg::APIServiceStatus::default()),
        };
        let crd = crd_v1::CustomResourceDefinition {
            metadata: meta("widgets.example.com"),
            spec: Some(crd_v1::CustomResourceDefinitionSpec {
                group: Some("example.com".into()),
                names: Some(crd_v1::CustomResourceDefinitionNames {
                    plural: Some("widgets".into()),
                    kind: Some("Widget".into()),
                    ..Default::default()
                }),
                scope: Some("Namespaced".into()),
                versions: vec![crd_v1::CustomResourceDefinitionVersion {
                    name: Some("v1".into()),
                    served: Some(true),
                    storage: Some(true),
                    ..Default::default()
                }],
                conversion: Some(crd_v1::CustomResourceConversion {
                    strategy: Some("Webhook".into()),
                    webhook: Some(crd_v1::WebhookConversion {
                        client_config: Some(crd_v1::WebhookClientConfig {
                            service: svc(),
                            ca_bundle: pem(),
                            ..Default::default()
                        }),
                        conversion_review_versions: vec!["v1".into()],
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        };
        let crd_beta = crd_v1beta1::CustomResourceDefinition {
            metadata: meta("gadgets.example.com"),
            spec: Some(crd_v1beta1::CustomResourceDefinitionSpec {
                group: Some("example.com".into()),
                conversion: Some(crd_v1beta1::CustomResourceConversion {
                    strategy: Some("Webhook".into()),
                    webhook_client_config: Some(crd_v1beta1::WebhookClientConfig {
                        url: Some("https://conv.example.com".into()),
                        ca_bundle: pem(),
                        ..Default::default()
                    }),
                    conversion_review_versions: vec!["v1beta1".into()],
                }),
                ..Default::default()
            }),
            status: None,
        };
        let csr = cert::CertificateSigningRequest {
            metadata: meta("csr-1"),
            spec: Some(cert::CertificateSigningRequestSpec {
                request: Some(REQUEST.as_bytes().to_vec()),
                signer_name: Some("kubernetes.io/kube-apiserver-client-kubelet".into()),
                usages: vec!["client auth".into()],
                username: Some("system:node:n".into()),
                ..Default::default()
            }),
            status: Some(cert::CertificateSigningRequestStatus {
                conditions: vec![cert::CertificateSigningRequestCondition {
                    r#type: Some("Approved".into()),
                    status: Some("True".into()),
                    ..Default::default()
                }],
                certificate: pem(),
            }),
        };
        let ws = |i| Step {
            tag: 2,
            nth: Some(i),
        };
        vec![
            Case {
                api_version: "admissionregistration.k8s.io/v1",
                kind: "ValidatingWebhookConfiguration",
                raw: vwc.encode_to_vec(),
                path: "webhooks[1].clientConfig.caBundle",
                unknown: vec![ws(1), one(2)],
                certs: |b| {
                    adm::ValidatingWebhookConfiguration::decode(b)
                        .unwrap()
                        .webhooks
                        .into_iter()
                        .map(|w| w.client_config.and_then(|c| c.ca_bundle))
                        .collect()
                },
            },
            Case {
                api_version: "admissionregistration.k8s.io/v1",
                kind: "MutatingWebhookConfiguration",
                raw: mwc.encode_to_vec(),
                path: "webhooks[0].clientConfig.caBundle",
                unknown: vec![ws(0), one(2)],
                certs: |b| {
                    adm::MutatingWebhookConfiguration::decode(b)
                        .unwrap()
                        .webhooks
                        .into_iter()
                        .map(|w| w.client_config.and_then(|c| c.ca_bundle))
                        .collect()
                },
            },
            Case {
                api_version: "apiregistration.k8s.io/v1",
                kind: "APIService",
                raw: api.encode_to_vec(),
                path: "spec.caBundle",
                unknown: vec![one(2)],
                certs: |b| {
                    vec![agg::APIService::decode(b)
                        .unwrap()
                        .spec
                        .and_then(|s| s.ca_bundle)]
                },
            },
            Case {
                api_version: "apiextensions.k8s.io/v1",
                kind: "CustomResourceDefinition",
                raw: crd.encode_to_vec(),
                path: "spec.conversion.webhook.clientConfig.caBundle",
                unknown: vec![one(2), one(9), one(2), one(2)],
                certs: |b| {
                    let c = crd_v1::CustomResourceDefinition::decode(b).unwrap();
                    let cc = c.spec.and_then(|s| s.conversion?.webhook?.client_config);
                    vec![cc.and_then(|c| c.ca_bundle)]
                },
            },
            Case {
                api_version: "apiextensions.k8s.io/v1beta1",
                kind: "CustomResourceDefinition",
                raw: crd_beta.encode_to_vec(),
                path: "spec.conversion.webhookClientConfig.caBundle",
                unknown: vec![one(2), one(9), one(2)],
                certs: |b| {
                    let c = crd_v1beta1::CustomResourceDefinition::decode(b).unwrap();
                    let cc = c.spec.and_then(|s| s.conversion?.webhook_client_config);
                    vec![cc.and_then(|c| c.ca_bundle)]
                },
            },
            Case {
                api_version: "certificates.k8s.io/v1",
                kind: "CertificateSigningRequest",
                raw: csr.encode_to_vec(),
                path: "status.certificate",
                unknown: vec![one(3)],
                certs: |b| {
                    let c = cert::CertificateSigningRequest::decode(b).unwrap();
                    vec![c.status.and_then(|s| s.certificate)]
                },
            },
        ]
    }

    /// The case's value with its unknown fields added.
    fn stored(c: &Case) -> Vec<u8> {
        let mut raw = c.raw.clone();
        raw.extend(wire::message_field(99, b"future top"));
        let nested: Vec<Step> = c.unknown.iter().copied().chain([one(98)]).collect();
        let raw = wire::replace(&raw, &nested, b"future nested").unwrap();
        wrap(c.api_version, c.kind, raw)
    }

    fn inner(value: &[u8]) -> Vec<u8> {
        super::super::envelope(value).unwrap().raw.unwrap()
    }

    #[test]
    fn every_kind_round_trips_and_a_new_certificate_lands_alone() {
        for c in cases() {
            let what = format!("{} {}", c.api_version, c.kind);
            let orig = stored(&c);
            let d = decode(&orig).unwrap();
            assert!(d.known, "{what}");
            assert_eq!(d.view["metadata"]["uid"], "u-1", "{what}");
            assert_eq!(d.view["metadata"]["labels"]["app"], "x", "{what}");
            // the view holds the certificate where the JSON of the kind has it, and exactly
            // what k8s-pb reads there
            let b = find(c.api_version, c.kind).unwrap();
            let found: Vec<(String, String)> = places(&d.view, b.pem[0])
                .into_iter()
                .filter_map(|(idx, v)| Some((json_path(b.pem[0], &idx), v?.as_str()?.to_string())))
                .collect();
            assert_eq!(
                found,
                vec![(c.path.to_string(), b64_encode(OLD.as_bytes()))],
                "{what}"
            );
            let by_pb: Vec<Vec<u8>> = (c.certs)(&inner(&orig)).into_iter().flatten().collect();
            assert_eq!(by_pb, vec![OLD.as_bytes().to_vec()], "{what}");
            // unchanged: the same bytes
            assert_eq!(encode(Some(&orig), &d.view).unwrap(), orig, "{what}");

            let mut v = d.view.clone();
            let idx: Vec<usize> = places(&v, b.pem[0])
                .into_iter()
                .find(|(_, x)| x.is_some())
                .unwrap()
                .0;
            set_at(
                &mut v,
                b.pem[0],
                &idx,
                Some(json!(b64_encode(NEW.as_bytes()))),
            );
            let new = encode(Some(&orig), &v).unwrap();
            assert_eq!(decode(&new).unwrap().view, v, "{what}");
            let certs = (c.certs)(&inner(&new));
            assert!(
                certs.contains(&Some(NEW.as_bytes().to_vec())),
                "{what}: {certs:?}"
            );
            assert!(!certs.contains(&Some(OLD.as_bytes().to_vec())), "{what}");
            // what k8s-pb does not know is still there, at the top and nested
            let raw = inner(&new);
            assert_eq!(
                wire::read(&raw, &[one(99)]).unwrap(),
                Some(&b"future top"[..]),
                "{what}"
            );
            let nested: Vec<Step> = c.unknown.iter().copied().chain([one(98)]).collect();
            assert_eq!(
                wire::read(&raw, &nested).unwrap(),
                Some(&b"future nested"[..]),
                "{what}"
            );
            // and nothing else changed: the old certificate back gives the very bytes read
            assert_eq!(encode(Some(&new), &d.view).unwrap(), orig, "{what}");
        }
    }

    #[test]
    fn other_changes_new_objects_and_stray_pem_blocks_are_refused() {
        let vwc = stored(&cases()[0]);
        let view = decode(&vwc).unwrap().view;
        assert_eq!(view["webhooks"][0], json!({}));
        let mut named = view.clone();
        named["webhooks"][1]["name"] = json!("other");
        let e = encode(Some(&vwc), &named).unwrap_err().to_string();
        assert!(
            e.contains("imgmode does not write webhooks[1].name of a protobuf ValidatingWebhookConfiguration"),
            "{e}"
        );
        let mut more = view.clone();
        more["webhooks"].as_array_mut().unwrap().push(json!({}));
        let e = encode(Some(&vwc), &more).unwrap_err().to_string();
        assert!(e.contains("does not write webhooks of a protobuf"), "{e}");
        let mut gone = view.clone();
        gone["webhooks"][1]["clientConfig"] = json!({});
        let e = encode(Some(&vwc), &gone).unwrap_err().to_string();
        assert!(
            e.contains("webhooks[1].clientConfig.caBundle of a protobuf"),
            "{e}"
        );
        // labels change in place; the certificate stays
        let mut labelled = view.clone();
        labelled["metadata"]["labels"]["b"] = json!("2");
        let back = decode(&encode(Some(&vwc), &labelled).unwrap())
            .unwrap()
            .view;
        assert_eq!(back, labelled);
        // new objects of these kinds are not built
        let e = encode(None, &view).unwrap_err().to_string();
        assert!(
            e.contains("a new ValidatingWebhookConfiguration is not written as protobuf"),
            "{e}"
        );
        // a PEM block outside the fields read (an annotation here) is refused
        let mut raw = inner(&vwc);
        let m = ObjectMeta {
            annotations: [("note".to_string(), OLD.to_string())].into(),
            ..meta("vwc").unwrap()
        };
        raw = wire::replace(&raw, &[one(1)], &m.encode_to_vec()).unwrap();
        let e = decode(&wrap(
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            raw,
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("holds a PEM block outside the fields imgmode reads (webhooks[].clientConfig.caBundle)"),
            "{e}"
        );
    }
}
