//! The Kubernetes-style etcd objects of the generated PKI: secrets, configmaps, the node and
//! the cluster's infrastructure object.

use serde_json::json;

use super::certs::{Leaves, Names, Signers};
use super::files::{admin_kubeconfig, SaPem};
use super::{service_account_token, PkiSpec};
use imgmode_recert::keys::PrivateKey;
use imgmode_recert::text::b64_encode;

pub(super) fn secret(ns: &str, name: &str, data: &[(&str, &str)]) -> (String, serde_json::Value) {
    let mut d = serde_json::Map::new();
    for (k, v) in data {
        d.insert((*k).into(), json!(b64_encode(v.as_bytes())));
    }
    (
        format!("/kubernetes.io/secrets/{ns}/{name}"),
        json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": name, "namespace": ns}, "type": "kubernetes.io/tls", "data": d}),
    )
}

fn configmap(ns: &str, name: &str, data: &[(&str, &str)]) -> (String, serde_json::Value) {
    let mut d = serde_json::Map::new();
    for (k, v) in data {
        d.insert((*k).into(), json!(v));
    }
    (
        format!("/kubernetes.io/configmaps/{ns}/{name}"),
        json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": name, "namespace": ns}, "data": d}),
    )
}

/// The secrets that carry certificates, keys and kubeconfigs.
pub(super) fn tls_secrets(
    n: &Names,
    s: &Signers,
    l: &Leaves,
    sa: &SaPem,
) -> Vec<(String, serde_json::Value)> {
    vec![
        secret(
            "openshift-kube-apiserver",
            "external-loadbalancer-serving-certkey",
            &[
                ("tls.crt", &l.api_serving.cert_pem()),
                ("tls.key", &l.api_serving.key_pem()),
            ],
        ),
        secret(
            "openshift-ingress",
            "router-certs-default",
            &[
                ("tls.crt", &(l.router.cert_pem() + &s.ingress.cert_pem())),
                ("tls.key", &l.router.key_pem()),
            ],
        ),
        secret(
            "openshift-ingress-operator",
            "router-ca",
            &[
                ("tls.crt", &s.ingress.cert_pem()),
                ("tls.key", &s.ingress.key_pem()),
            ],
        ),
        secret(
            "openshift-kube-apiserver-operator",
            "loadbalancer-serving-signer",
            &[("tls.crt", &s.lb.cert_pem()), ("tls.key", &s.lb.key_pem())],
        ),
        secret(
            "openshift-kube-apiserver-operator",
            "node-system-admin-signer",
            &[
                ("tls.crt", &s.node_admin.cert_pem()),
                ("tls.key", &s.node_admin.key_pem()),
            ],
        ),
        secret(
            "openshift-kube-apiserver",
            "node-kubeconfigs",
            &[("lb-int.kubeconfig", &admin_kubeconfig(n, s, l))],
        ),
        secret(
            "openshift-etcd",
            "etcd-signer",
            &[
                ("tls.crt", &s.etcd.cert_pem()),
                ("tls.key", &s.etcd.key_pem()),
            ],
        ),
        secret(
            "openshift-kube-controller-manager",
            "service-account-private-key",
            &[
                ("service-account.key", &sa.key),
                ("service-account.pub", &sa.public),
            ],
        ),
    ]
}

/// The configmaps, the node and the cluster's infrastructure object.
pub(super) fn cluster_objects(
    spec: &PkiSpec,
    n: &Names,
    s: &Signers,
    sa: &SaPem,
) -> Vec<(String, serde_json::Value)> {
    let domain = &n.domain;
    vec![
        configmap(
            "openshift-config-managed",
            "kube-apiserver-server-ca",
            &[(
                "ca-bundle.crt",
                &(s.lb.cert_pem() + &s.localhost.cert_pem()),
            )],
        ),
        configmap(
            "openshift-config",
            "admin-kubeconfig-client-ca",
            &[("ca-bundle.crt", &s.admin.cert_pem())],
        ),
        configmap(
            "openshift-config-managed",
            "console-public",
            &[(
                "consoleURL",
                &format!("https://console-openshift-console.apps.{domain}"),
            )],
        ),
        configmap(
            "openshift-config",
            "bound-sa-token-signing-certs",
            &[("service-account-001.pub", &sa.public)],
        ),
        configmap(
            "kube-system",
            "cluster-config-v1",
            &[(
                "install-config",
                &format!(
                    "apiVersion: v1\nbaseDomain: {}\nmetadata:\n  name: {}\n",
                    spec.base_domain, spec.cluster_name
                ),
            )],
        ),
        (
            format!("/kubernetes.io/minions/{}", spec.hostname),
            json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": spec.hostname}, "status": {"addresses": [{"type": "InternalIP", "address": spec.ip}, {"type": "Hostname", "address": spec.hostname}]}}),
        ),
        (
            "/kubernetes.io/config.openshift.io/infrastructures/cluster".to_string(),
            json!({"kind": "Infrastructure", "apiVersion": "config.openshift.io/v1", "metadata": {"name": "cluster"}, "status": {"infrastructureName": spec.infra_id, "apiServerURL": format!("https://{}:6443", n.api)}}),
        ),
    ]
}

/// Service-account token secrets, signed by the service-account key.
pub(super) fn service_account_token_secrets(
    s: &Signers,
    sa_key: &PrivateKey,
) -> Vec<(String, serde_json::Value)> {
    let mut objs = vec![];
    for (ns, sa) in [
        ("openshift-monitoring", "prometheus-k8s"),
        ("openshift-ingress", "router"),
        ("kube-system", "default"),
    ] {
        let tok = service_account_token(sa_key, ns, sa);
        let (k, mut v) = secret(
            ns,
            &format!("{sa}-token"),
            &[("token", &tok), ("ca.crt", &s.lb.cert_pem())],
        );
        v["type"] = json!("kubernetes.io/service-account-token");
        objs.push((k, v));
    }
    objs
}
