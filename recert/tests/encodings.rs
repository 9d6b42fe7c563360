//! recert on an etcd that holds what a real kube-apiserver stores: Secrets, ConfigMaps and the
//! Node as Kubernetes protobuf (`k8s\0` + `runtime.Unknown`), custom resources as JSON. Every
//! value is read back after the run with `protoc --decode_raw` (a decoder independent of
//! recert's own) and none holds a certificate, key or token of before. An encrypted value is
//! refused by name, and skipped (and counted) only when asked.

mod common;

use imgmode_recert::config::RecertConfig;
use imgmode_recert::etcd::EtcdObject;
use imgmode_recert::kpb;
use imgmode_testkit::pki::{self as testpki, PkiSpec};
use imgmode_testkit::{require, Need, TestEtcd};
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
/// included; a JSON value as it is.
fn independent_text(value: &[u8]) -> String {
    let Some(body) = value.strip_prefix(kpb::MAGIC) else {
        return String::from_utf8_lossy(value).into_owned();
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
    let mut encodings = std::collections::BTreeMap::<&str, usize>::new();
    for (k, v) in &pki.etcd_objects {
        let o = EtcdObject::new(k.clone(), v.clone());
        *encodings.entry(o.encoding()).or_default() += 1;
        put_raw(&etcd, k, o.stored().unwrap());
    }
    assert!(
        encodings["protobuf"] >= 10 && encodings["json"] >= 1,
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
    for (k, v) in common::etcd_raw(&etcd) {
        if k == enc {
            continue;
        }
        if kpb::is_protobuf(&v) {
            let d = kpb::decode(&v).unwrap();
            assert!(d.known, "{k}");
            assert!(
                k.starts_with("/kubernetes.io/secrets/")
                    || k.starts_with("/kubernetes.io/configmaps/")
                    || k.starts_with("/kubernetes.io/minions/"),
                "{k}"
            );
        } else {
            serde_json::from_slice::<serde_json::Value>(&v)
                .unwrap_or_else(|_| panic!("{k} is neither protobuf nor JSON"));
        }
    }
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
