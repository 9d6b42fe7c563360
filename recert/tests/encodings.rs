//! recert on an etcd that holds what a real kube-apiserver stores: Secrets, ConfigMaps, the
//! Node, webhook configurations, an APIService, a CRD with a conversion webhook and a signed
//! CSR as Kubernetes protobuf (`k8s\0` + `runtime.Unknown`), custom resources and a `v1beta1`
//! CRD as JSON. Every value is read back after the run with `protoc --decode_raw` (a decoder
//! independent of recert's own) and none holds a certificate, key or token of before. An
//! encrypted value is refused by name, and skipped (and counted) only when asked.

mod common;

use imgmode_recert::config::RecertConfig;
use imgmode_recert::etcd::storage_key;
use imgmode_recert::etcd::EtcdObject;
use imgmode_recert::kpb;
use imgmode_recert::text::{b64_decode, b64_encode};
use imgmode_testkit::pki::{self as testpki, PkiSpec};
use imgmode_testkit::{require, Need, TestEtcd};
use k8s_pb::api::admissionregistration::v1 as adm;
use k8s_pb::api::certificates::v1 as cert;
use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1 as crd;
use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use k8s_pb::kube_aggregator::pkg::apis::apiregistration::v1 as agg;
use prost::Message;
use std::io::Write;
use std::process::{Command, Stdio};

fn put_raw(etcd: &TestEtcd, key: &str, value: Vec<u8>) {
    common::rt().block_on(async {
        let mut c = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
            .await
            .unwrap();
        c.put(key, value, None).await.unwrap();
    });
}

/// `protoc --decode_raw` of a protobuf value (after `k8s\0`): its text, nested messages
/// included; a JSON value as it is, and then every string of it that is base64 text decoded
/// (a JSON object's bytes fields: a CA bundle is base64 PEM there).
fn independent_text(value: &[u8]) -> String {
    let Some(body) = value.strip_prefix(kpb::MAGIC) else {
        fn strings(v: &serde_json::Value, out: &mut String) {
            match v {
                serde_json::Value::String(s) => {
                    if let Some(t) = b64_decode(s).ok().and_then(|b| String::from_utf8(b).ok()) {
                        out.push_str(&t);
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
                serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
                _ => {}
            }
        }
        let mut out = String::from_utf8_lossy(value).into_owned();
        if let Ok(v) = serde_json::from_slice(value) {
            strings(&v, &mut out);
        }
        return out;
    };
    let mut child = Command::new("protoc")
        .arg("--decode_raw")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("protoc runs");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "protoc --decode_raw failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A distinctive piece of every certificate and private key (its PEM's first base64 line)
/// and every service-account token of the PKI.
fn markers(pki: &testpki::Pki) -> Vec<(String, String)> {
    let mut out = vec![];
    for c in &pki.certs {
        // the admin kubeconfig CA: the cluster holds its certificate and not its key (as in
        // OpenShift), so recert keeps it; its key is nowhere in the cluster
        let kept = c.name == "admin-signer";
        for (what, pem) in [("certificate", c.cert_pem()), ("key", c.key_pem())] {
            if kept && what == "certificate" {
                continue;
            }
            let line = pem.lines().nth(1).unwrap().to_string();
            out.push((format!("{what} of {}", c.name), line));
        }
    }
    for (k, v) in &pki.etcd_objects {
        if v["type"] == "kubernetes.io/service-account-token" {
            let t = v["data"]["token"].as_str().unwrap();
            let jwt = String::from_utf8(imgmode_recert::text::b64_decode(t).unwrap()).unwrap();
            out.push((format!("token of {k}"), jwt));
        }
    }
    out
}

fn found(etcd: &TestEtcd, markers: &[(String, String)]) -> Vec<String> {
    let all: String = common::etcd_raw(etcd)
        .iter()
        .map(|(k, v)| format!("{k}\n{}\n", independent_text(v)))
        .collect();
    markers
        .iter()
        .filter(|(_, m)| all.contains(m.as_str()))
        .map(|(what, _)| what.clone())
        .collect()
}

fn meta(name: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: Some(name.into()),
        uid: Some(format!("uid-{name}")),
        ..Default::default()
    })
}

/// A field a newer Kubernetes might add, at `tag`: a string, built with prost's encoder.
fn future_field(tag: u32, text: &str) -> Vec<u8> {
    let mut out = vec![];
    prost::encoding::string::encode(tag, &text.to_string(), &mut out);
    out
}

/// One message field (`body` encoded already), built with prost's encoder.
fn message_field(tag: u32, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![];
    prost::encoding::bytes::encode(tag, &body, &mut out);
    out
}

/// The webhook configuration holds its CA bundle in its second webhook, next to fields a newer
/// Kubernetes might add (99 at the top, 98 in the webhook's clientConfig), as kube-apiserver
/// would have stored them: built by hand with prost's encoder, around k8s-pb's messages.
const WEBHOOKS: &str = "/kubernetes.io/validatingwebhookconfigurations/recert-test";

/// The kinds that carry certificates outside secrets and configmaps, holding CAs (and a
/// leaf) of the PKI: (key, value as stored). All protobuf as kube-apiserver stores them, but
/// a CRD as JSON `v1beta1`, the form kube-apiserver's apiextensions server keeps.
fn certificate_carriers(pki: &testpki::Pki) -> Vec<(String, Vec<u8>)> {
    let pem = |names: &[&str]| -> Vec<u8> {
        names
            .iter()
            .map(|n| pki.cert(n).cert_pem())
            .collect::<String>()
            .into_bytes()
    };
    let key = |api: &str, kind: &str, name: &str| storage_key(api, kind, "", name).unwrap();
    let service = || adm::ServiceReference {
        namespace: Some("openshift-test".into()),
        name: Some("hook".into()),
        path: Some("/validate".into()),
        port: Some(443),
    };
    // the validating webhook configuration, by hand around its second webhook's clientConfig
    let client_config = [
        adm::WebhookClientConfig {
            service: Some(service()),
            ca_bundle: Some(pem(&["lb-signer"])),
            ..Default::default()
        }
        .encode_to_vec(),
        future_field(98, "future nested"),
    ]
    .concat();
    let hook = [
        adm::ValidatingWebhook {
            name: Some("b.example.com".into()),
            side_effects: Some("None".into()),
            admission_review_versions: vec!["v1".into()],
            ..Default::default()
        }
        .encode_to_vec(),
        message_field(2, client_config),
    ]
    .concat();
    let first = adm::ValidatingWebhook {
        name: Some("a.example.com".into()),
        client_config: Some(adm::WebhookClientConfig {
            url: Some("https://a.example.com/validate".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let vwc = [
        adm::ValidatingWebhookConfiguration {
            metadata: meta("recert-test"),
            webhooks: vec![first],
        }
        .encode_to_vec(),
        message_field(2, hook),
        future_field(99, "future top"),
    ]
    .concat();
    let mwc = adm::MutatingWebhookConfiguration {
        metadata: meta("recert-test"),
        webhooks: vec![adm::MutatingWebhook {
            name: Some("m.example.com".into()),
            client_config: Some(adm::WebhookClientConfig {
                service: Some(service()),
                ca_bundle: Some(pem(&["ingress-signer"])),
                ..Default::default()
            }),
            ..Default::default()
        }],
    };
    let api = agg::APIService {
        metadata: meta("v1.test.example.com"),
        spec: Some(agg::APIServiceSpec {
            service: Some(agg::ServiceReference {
                namespace: Some("openshift-test".into()),
                name: Some("api".into()),
                port: Some(443),
            }),
            group: Some("test.example.com".into()),
            version: Some("v1".into()),
            ca_bundle: Some(pem(&["localhost-signer", "lb-signer"])),
            group_priority_minimum: Some(1000),
            version_priority: Some(15),
            ..Default::default()
        }),
        status: None,
    };
    let conversion = crd::CustomResourceConversion {
        strategy: Some("Webhook".into()),
        webhook: Some(crd::WebhookConversion {
            client_config: Some(crd::WebhookClientConfig {
                url: Some("https://conv.example.com/convert".into()),
                ca_bundle: Some(pem(&["etcd-signer"])),
                ..Default::default()
            }),
            conversion_review_versions: vec!["v1".into()],
        }),
    };
    let widgets = crd::CustomResourceDefinition {
        metadata: meta("widgets.test.example.com"),
        spec: Some(crd::CustomResourceDefinitionSpec {
            group: Some("test.example.com".into()),
            scope: Some("Namespaced".into()),
            conversion: Some(conversion),
            ..Default::default()
        }),
        status: None,
    };
    let csr = cert::CertificateSigningRequest {
        metadata: meta("csr-recert-test"),
        spec: Some(cert::CertificateSigningRequestSpec {
            request: Some(certificate_request()),
            signer_name: Some("kubernetes.io/kube-apiserver-client-kubelet".into()),
            usages: vec!["client auth".into()],
            ..Default::default()
        }),
        status: Some(cert::CertificateSigningRequestStatus {
            conditions: vec![cert::CertificateSigningRequestCondition {
                r#type: Some("Approved".into()),
                status: Some("True".into()),
                ..Default::default()
            }],
            certificate: Some(pem(&["kubelet-client", "csr-signer"])),
        }),
    };
    let gadgets = serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.test.example.com"},
        "spec": {"group": "test.example.com", "scope": "Namespaced", "conversion": {
            "strategy": "Webhook", "webhookClientConfig": {
                "url": "https://conv.example.com/convert",
                "caBundle": b64_encode(&pem(&["node-system-admin-signer"]))}}}});
    let adm_v1 = "admissionregistration.k8s.io/v1";
    let crd_v1 = "apiextensions.k8s.io/v1";
    vec![
        (
            WEBHOOKS.to_string(),
            kpb::wrap(adm_v1, "ValidatingWebhookConfiguration", vwc),
        ),
        (
            key(adm_v1, "MutatingWebhookConfiguration", "recert-test"),
            kpb::wrap(adm_v1, "MutatingWebhookConfiguration", mwc.encode_to_vec()),
        ),
        (
            key(
                "apiregistration.k8s.io/v1",
                "APIService",
                "v1.test.example.com",
            ),
            kpb::wrap(
                "apiregistration.k8s.io/v1",
                "APIService",
                api.encode_to_vec(),
            ),
        ),
        (
            key(
                crd_v1,
                "CustomResourceDefinition",
                "widgets.test.example.com",
            ),
            kpb::wrap(crd_v1, "CustomResourceDefinition", widgets.encode_to_vec()),
        ),
        (
            key(
                "certificates.k8s.io/v1",
                "CertificateSigningRequest",
                "csr-recert-test",
            ),
            kpb::wrap(
                "certificates.k8s.io/v1",
                "CertificateSigningRequest",
                csr.encode_to_vec(),
            ),
        ),
        (
            key(
                "apiextensions.k8s.io/v1beta1",
                "CustomResourceDefinition",
                "gadgets.test.example.com",
            ),
            serde_json::to_vec(&gadgets).unwrap(),
        ),
    ]
}

/// A kubelet's certificate request (PEM), for a key of its own that the cluster never held.
fn certificate_request() -> Vec<u8> {
    use openssl::{ec, nid::Nid, pkey::PKey, x509};
    let group = ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(ec::EcKey::generate(&group).unwrap()).unwrap();
    let mut name = x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "system:node:test").unwrap();
    let mut req = x509::X509ReqBuilder::new().unwrap();
    req.set_subject_name(&name.build()).unwrap();
    req.set_pubkey(&key).unwrap();
    req.sign(&key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    req.build().to_pem().unwrap()
}

/// The certificate fields of a value after recert, by their JSON path, as text.
fn certificate_fields(value: &[u8]) -> Vec<(String, String)> {
    let view = if kpb::is_protobuf(value) {
        kpb::decode(value).unwrap().view
    } else {
        serde_json::from_slice(value).unwrap()
    };
    EtcdObject::new("/", view)
        .fields()
        .into_iter()
        .map(|f| (f.name(), f.text))
        .collect()
}

/// A running etcd, a scratch directory, a PKI generated under its `root`, and recert's
/// configuration for both (files and etcd, a summary, two threads).
struct Fixture {
    etcd: TestEtcd,
    td: tempfile::TempDir,
    pki: testpki::Pki,
    cfg: RecertConfig,
}

/// (The tests check first that etcd and protoc are here.)
fn fixture() -> Fixture {
    let etcd = TestEtcd::start();
    let td = tempfile::tempdir().unwrap();
    let root = td.path().join("root");
    let pki = testpki::generate(&PkiSpec::default(), &root).unwrap();
    let cfg = RecertConfig {
        static_dirs: vec![root],
        etcd_endpoint: Some(etcd.endpoint.clone()),
        summary_file: Some(td.path().join("summary.yaml")),
        threads: Some(2),
        ..Default::default()
    };
    Fixture { etcd, td, pki, cfg }
}

#[test]
fn protobuf_secrets_and_configmaps_are_rekeyed_completely() {
    require!(Need::Tool("etcd"));
    require!(Need::Tool("protoc"));
    let Fixture {
        etcd,
        td: _scratch,
        pki,
        cfg,
    } = fixture();
    let summary = cfg.summary_file.clone().unwrap();
    let mut encodings = std::collections::BTreeMap::<&str, usize>::new();
    for (k, v) in &pki.etcd_objects {
        let o = EtcdObject::new(k.clone(), v.clone());
        *encodings.entry(o.encoding()).or_default() += 1;
        put_raw(&etcd, k, o.stored().unwrap());
    }
    let carriers = certificate_carriers(&pki);
    for (k, v) in &carriers {
        let enc = if kpb::is_protobuf(v) {
            "protobuf"
        } else {
            "json"
        };
        *encodings.entry(enc).or_default() += 1;
        put_raw(&etcd, k, v.clone());
    }
    assert!(
        encodings["protobuf"] >= 15 && encodings["json"] >= 2,
        "{encodings:?}"
    );
    let markers = markers(&pki);
    assert!(markers.len() >= 20, "{}", markers.len());
    // the check sees them before
    let before = found(&etcd, &markers);
    let in_etcd = before.len();
    assert!(in_etcd >= 10, "protoc finds only {before:?} in etcd");

    // an encrypted value: refused by name, nothing written
    let enc = "/kubernetes.io/secrets/openshift-config/encrypted";
    put_raw(&etcd, enc, b"k8s:enc:aescbc:v1:key1:\x01\x02".to_vec());
    let e = imgmode_recert::run(&cfg.clone().check().unwrap()).unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains(enc) && e.contains("the value is encrypted (k8s:enc:aescbc:v1)"),
        "{e}"
    );
    assert!(e.contains("cannot be read; a value left unread could keep the seed's keys"));
    assert_eq!(found(&etcd, &markers).len(), in_etcd, "nothing changed");

    // skipped when asked, and counted
    let s = imgmode_recert::run(
        &RecertConfig {
            skip_unreadable_values: true,
            ..cfg
        }
        .check()
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        s.etcd_values.get("skipped"),
        Some(&1),
        "{:?}",
        s.etcd_values
    );
    assert_eq!(
        s.etcd_values.get("protobuf"),
        Some(&encodings["protobuf"]),
        "{:?}",
        s.etcd_values
    );
    assert_eq!(s.etcd_values.get("json"), Some(&encodings["json"]));

    let left = found(&etcd, &markers);
    assert!(
        left.is_empty(),
        "after recert, protoc --decode_raw still finds: {left:?}"
    );
    // the objects are still what they were: protobuf of the same kinds, readable by recert
    let after = common::etcd_raw(&etcd);
    for (k, v) in &after {
        if *k == enc {
            continue;
        }
        if kpb::is_protobuf(v) {
            let d = kpb::decode(v).unwrap();
            assert!(d.known, "{k}");
            assert!(
                k.starts_with("/kubernetes.io/secrets/")
                    || k.starts_with("/kubernetes.io/configmaps/")
                    || k.starts_with("/kubernetes.io/minions/")
                    || carriers.iter().any(|(c, _)| c == k),
                "{k}"
            );
        } else {
            serde_json::from_slice::<serde_json::Value>(v)
                .unwrap_or_else(|_| panic!("{k} is neither protobuf nor JSON"));
        }
    }
    carriers_hold_the_new_certificates(&after, &carriers, &summary);
}

/// Each certificate field of the carriers holds new certificates (the load balancer CA in
/// the webhook and the APIService is the very text of its new secret), at the same path; what
/// recert does not rewrite is as it was: a CSR's request, fields a newer Kubernetes added;
/// and the summary names the field.
fn carriers_hold_the_new_certificates(
    after: &[(String, Vec<u8>)],
    carriers: &[(String, Vec<u8>)],
    summary: &std::path::Path,
) {
    let value = |key: &str| &after.iter().find(|(k, _)| k == key).unwrap().1;
    let secret_crt = |key: &str| -> String {
        let view = kpb::decode(value(key)).unwrap().view;
        String::from_utf8(b64_decode(view["data"]["tls.crt"].as_str().unwrap()).unwrap()).unwrap()
    };
    let lb = secret_crt(
        "/kubernetes.io/secrets/openshift-kube-apiserver-operator/loadbalancer-serving-signer",
    );
    let fields = certificate_fields(value(WEBHOOKS));
    assert_eq!(
        fields,
        vec![("webhooks[1].clientConfig.caBundle".to_string(), lb.clone())]
    );
    let text = independent_text(value(WEBHOOKS));
    for kept in [
        "99: \"future top\"",
        "98: \"future nested\"",
        "a.example.com",
    ] {
        assert!(
            text.contains(kept),
            "{kept} is gone from {WEBHOOKS}:\n{text}"
        );
    }
    for (k, before) in carriers {
        let (old, new) = (certificate_fields(before), certificate_fields(value(k)));
        assert!(!old.is_empty() && old.len() == new.len(), "{k}");
        for ((path, was), (path2, now)) in old.iter().zip(&new) {
            assert_eq!(path, path2, "{k}");
            assert!(
                now.contains("-----BEGIN CERTIFICATE-----") && now != was,
                "{k} {path}"
            );
        }
        if k.contains("certificatesigningrequests") {
            let (b, a) = (kpb::decode(before).unwrap(), kpb::decode(value(k)).unwrap());
            assert_eq!(b.view["metadata"], a.view["metadata"]);
            let req = |v: &[u8]| {
                cert::CertificateSigningRequest::decode(
                    Unknown::decode(&v[kpb::MAGIC.len()..]).unwrap().raw(),
                )
                .unwrap()
                .spec
                .unwrap()
                .request
            };
            assert_eq!(req(before), req(value(k)), "the CSR's request is kept");
        }
    }
    let apiservice = certificate_fields(value(&carriers[2].0));
    assert!(
        apiservice[0].1.ends_with(&lb),
        "the APIService bundle ends with the new lb CA"
    );
    let s = std::fs::read_to_string(summary).unwrap();
    assert!(
        s.contains(&format!(
            "etcd {WEBHOOKS} webhooks[1].clientConfig.caBundle"
        )),
        "the summary names the field:\n{s}"
    );
}

#[test]
fn encrypted_values_are_read_and_written_back_encrypted() {
    require!(Need::Tool("etcd"));
    require!(Need::Tool("protoc"));
    let Fixture { etcd, td, pki, cfg } = fixture();
    let key = [5u8; 32];
    let prefix = b"k8s:enc:aescbc:v1:key1:";
    let aescbc = |plain: &[u8]| -> Vec<u8> {
        let iv = [1u8; 16];
        let ct =
            openssl::symm::encrypt(openssl::symm::Cipher::aes_256_cbc(), &key, Some(&iv), plain)
                .unwrap();
        [&prefix[..], &iv, &ct].concat()
    };
    let target =
        "/kubernetes.io/secrets/openshift-kube-apiserver-operator/loadbalancer-serving-signer";
    for (k, v) in &pki.etcd_objects {
        let stored = EtcdObject::new(k.clone(), v.clone()).stored().unwrap();
        put_raw(&etcd, k, if k == target { aescbc(&stored) } else { stored });
    }
    let markers: Vec<(String, String)> = markers(&pki)
        .into_iter()
        .filter(|(what, _)| what.ends_with("lb-signer"))
        .collect();
    assert_eq!(markers.len(), 2, "{markers:?}");
    let cfg_file = td.path().join("encryption.yaml");
    // it holds the encryption key: private from the start
    imgmode_support::fs::write_private(
        &cfg_file,
        &format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: key1\n        secret: {}\n  - identity: {{}}\n",
            imgmode_recert::text::b64_encode(&key)
        ),
    )
    .unwrap();
    let s = imgmode_recert::run(
        &RecertConfig {
            encryption_config: Some(cfg_file),
            ..cfg
        }
        .check()
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        s.etcd_values.get("encrypted"),
        Some(&1),
        "{:?}",
        s.etcd_values
    );
    let (_, after) = common::etcd_raw(&etcd)
        .into_iter()
        .find(|(k, _)| k == target)
        .unwrap();
    assert!(
        after.starts_with(prefix),
        "written back encrypted with key1"
    );
    let data = &after[prefix.len()..];
    let plain = openssl::symm::decrypt(
        openssl::symm::Cipher::aes_256_cbc(),
        &key,
        Some(&data[..16]),
        &data[16..],
    )
    .unwrap();
    let text = independent_text(&plain);
    assert!(
        text.contains("BEGIN"),
        "the secret still holds its PEM blocks"
    );
    let left: Vec<&String> = markers
        .iter()
        .filter(|(_, m)| text.contains(m.as_str()))
        .map(|(w, _)| w)
        .collect();
    assert!(
        left.is_empty(),
        "the encrypted secret still holds: {left:?}"
    );
}
