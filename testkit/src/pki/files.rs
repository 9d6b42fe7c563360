//! Where the generated PKI's files go, with the modes the cluster gives them.

use std::path::Path;

use anyhow::{Context, Result};

use super::certs::{Leaves, Names, Signers};
use super::{service_account_token, PkiSpec};
use imgmode_recert::keys::PrivateKey;
use imgmode_recert::text::{b64_encode, pem_encode};

/// Where the operators keep their static-pod resources (relative to the root).
pub(super) const SP: &str = "etc/kubernetes/static-pod-resources";

/// Write `rel` under `root` with `mode` from the start (keys are 0600 before they hold a
/// byte): a temporary file renamed into place, the directories made.
pub(super) fn write(root: &Path, rel: &str, text: &str, mode: u32) -> Result<()> {
    let p = root.join(rel);
    imgmode_support::fs::write_atomic(&p, text.as_bytes(), mode)
        .with_context(|| format!("writing {}", p.display()))
}

fn kubeconfig(server: &str, ca: &str, cert: &str, key: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: cluster\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\ncontexts:\n- name: {user}\n  context:\n    cluster: cluster\n    user: {user}\ncurrent-context: {user}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64_encode(ca.as_bytes()),
        b64_encode(cert.as_bytes()),
        b64_encode(key.as_bytes())
    )
}

/// The roots bundle, as kubelet and clients read it.
pub(super) fn write_roots_bundle(r: &Path, s: &Signers) -> Result<()> {
    let bundle: String = [
        &s.lb,
        &s.localhost,
        &s.ingress,
        &s.admin,
        &s.node_admin,
        &s.kubelet,
        &s.etcd,
    ]
    .iter()
    .map(|c| c.cert_pem())
    .collect();
    write(r, "etc/kubernetes/ca-bundle.crt", &bundle, 0o644)
}

/// kube-apiserver's serving pairs.
pub(super) fn write_apiserver_serving(r: &Path, l: &Leaves) -> Result<()> {
    for (dir, c) in [
        (
            "kube-apiserver-certs/secrets/external-loadbalancer-serving-certkey",
            &l.api_serving,
        ),
        (
            "kube-apiserver-certs/secrets/localhost-serving-cert-certkey",
            &l.localhost_serving,
        ),
    ] {
        write(r, &format!("{SP}/{dir}/tls.crt"), &c.cert_pem(), 0o644)?;
        write(r, &format!("{SP}/{dir}/tls.key"), &c.key_pem(), 0o600)?;
    }
    Ok(())
}

/// etcd's serving pair, its CA bundle and its signer's key.
pub(super) fn write_etcd(r: &Path, spec: &PkiSpec, s: &Signers, l: &Leaves) -> Result<()> {
    // etcd keeps PKCS#8 keys.
    let etcd_key = pem_encode(
        "PRIVATE KEY",
        &l.etcd_serving.key.to_pem_der("PRIVATE KEY")?,
    ) + "\n";
    write(
        r,
        &format!(
            "{SP}/etcd-certs/secrets/etcd-all-certs/etcd-serving-{}.crt",
            spec.hostname
        ),
        &l.etcd_serving.cert_pem(),
        0o644,
    )?;
    write(
        r,
        &format!(
            "{SP}/etcd-certs/secrets/etcd-all-certs/etcd-serving-{}.key",
            spec.hostname
        ),
        &etcd_key,
        0o600,
    )?;
    write(
        r,
        &format!("{SP}/etcd-certs/configmaps/etcd-serving-ca/ca-bundle.crt"),
        &s.etcd.cert_pem(),
        0o644,
    )?;
    write(
        r,
        &format!("{SP}/etcd-certs/secrets/etcd-signer/tls.key"),
        &s.etcd.key_pem(),
        0o600,
    )
}

/// Where kube-apiserver reads the CAs of the client certificates it accepts (relative to the
/// root): the admin kubeconfig signer's and the node's `system:admin` signer's.
pub const CLIENT_CA: &str =
    "etc/kubernetes/static-pod-resources/kube-apiserver-certs/configmaps/client-ca/ca-bundle.crt";

/// Signer keys live next to their certificates, as the operators keep them. The admin
/// kubeconfig signer is the exception, as in OpenShift: the cluster holds its certificate (in
/// the client CA bundle) and never its key.
pub(super) fn write_signers(r: &Path, s: &Signers) -> Result<()> {
    write(
        r,
        CLIENT_CA,
        &(s.admin.cert_pem() + &s.node_admin.cert_pem()),
        0o644,
    )?;
    for c in [
        &s.lb,
        &s.localhost,
        &s.node_admin,
        &s.kubelet,
        &s.csr,
        &s.ingress,
    ] {
        write(
            r,
            &format!("{SP}/signers/{}/tls.crt", c.name),
            &c.cert_pem(),
            0o644,
        )?;
        write(
            r,
            &format!("{SP}/signers/{}/tls.key", c.name),
            &c.key_pem(),
            0o600,
        )?;
    }
    Ok(())
}

/// The kubelet's client cert and key in one file; its serving pair; the intermediate's chain.
pub(super) fn write_kubelet(r: &Path, s: &Signers, l: &Leaves) -> Result<()> {
    write(
        r,
        "var/lib/kubelet/pki/kubelet-client-current.pem",
        &(l.node_client.cert_pem() + &l.node_client.key_pem()),
        0o600,
    )?;
    write(
        r,
        "var/lib/kubelet/pki/kubelet-server-current.pem",
        &(l.node_serving.cert_pem() + &s.csr.cert_pem() + &l.node_serving.key_pem()),
        0o600,
    )
}

/// The service-account signing key in PEM: the private key and its public key.
pub(super) struct SaPem {
    pub(super) key: String,
    pub(super) public: String,
}

/// kube-apiserver's service-account signing key and its public key.
pub(super) fn write_service_account_key(r: &Path, sa_key: &PrivateKey) -> Result<SaPem> {
    let sa_pem = pem_encode("RSA PRIVATE KEY", &sa_key.to_pem_der("RSA PRIVATE KEY")?) + "\n";
    let sa_pub = pem_encode("PUBLIC KEY", &sa_key.spki_der()) + "\n";
    write(
        r,
        &format!("{SP}/kube-apiserver-certs/secrets/service-account-key/service-account.key"),
        &sa_pem,
        0o600,
    )?;
    write(
        r,
        &format!(
            "{SP}/kube-apiserver-certs/configmaps/sa-token-signing-certs/service-account-001.pub"
        ),
        &sa_pub,
        0o644,
    )?;
    Ok(SaPem {
        key: sa_pem,
        public: sa_pub,
    })
}

/// The admin's kubeconfig with its embedded certificates.
pub(super) fn admin_kubeconfig(n: &Names, s: &Signers, l: &Leaves) -> String {
    kubeconfig(
        &n.server,
        &s.lb.cert_pem(),
        &l.admin.cert_pem(),
        &l.admin.key_pem(),
        "admin",
    )
}

/// The admin's and the kubelet's kubeconfigs, and a pod's service-account token.
pub(super) fn write_kubeconfigs(
    r: &Path,
    n: &Names,
    s: &Signers,
    l: &Leaves,
    sa_key: &PrivateKey,
) -> Result<()> {
    write(
        r,
        "etc/kubernetes/kubeconfig",
        &admin_kubeconfig(n, s, l),
        0o600,
    )?;
    write(
        r,
        "var/lib/kubelet/kubeconfig",
        &kubeconfig(
            &n.server,
            &s.lb.cert_pem(),
            &l.node_client.cert_pem(),
            &l.node_client.key_pem(),
            &n.node_cn,
        ),
        0o600,
    )?;
    let token = service_account_token(sa_key, "openshift-monitoring", "prometheus-k8s");
    write(r, "var/lib/kubelet/pods/prometheus/token", &token, 0o600)
}
