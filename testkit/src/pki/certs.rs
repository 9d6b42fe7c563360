//! The certificates of the generated PKI: the cluster's names, the signers and the leaves.

use anyhow::Result;

use super::issue::{issue, Req, San};
use super::{Issued, PkiSpec};
use imgmode_recert::keys::KeyKind;

/// The key kind of most certificates and of the service-account key.
pub(super) const RSA: KeyKind = KeyKind::Rsa(2048);

/// The cluster's names, from the spec.
pub(super) struct Names {
    pub(super) domain: String,
    pub(super) api: String,
    pub(super) api_int: String,
    pub(super) apps: String,
    pub(super) node_cn: String,
    /// The API server's URL in kubeconfigs.
    pub(super) server: String,
}

impl Names {
    pub(super) fn new(spec: &PkiSpec) -> Self {
        let domain = format!("{}.{}", spec.cluster_name, spec.base_domain);
        let api_int = format!("api-int.{domain}");
        Names {
            api: format!("api.{domain}"),
            server: format!("https://{api_int}:6443"),
            api_int,
            apps: format!("*.apps.{domain}"),
            node_cn: format!("system:node:{}", spec.hostname),
            domain,
        }
    }
}

/// A signer to issue: a CA certificate of ten years.
fn ca(name: &'static str, subject: &'static str, kind: KeyKind) -> Req<'static> {
    Req {
        name,
        subject,
        kind,
        ca: true,
        client: false,
        server: false,
        sans: vec![],
        days: 3650,
    }
}

/// The signers: roots, and the kubelet signer's intermediate.
pub(super) struct Signers {
    pub(super) lb: Issued,
    pub(super) localhost: Issued,
    pub(super) ingress: Issued,
    /// The admin kubeconfig signer: its key stays with whoever made the cluster (the
    /// installer; the configuration ISO's maker), the cluster keeps its certificate only.
    pub(super) admin: Issued,
    /// Signs the node's own `system:admin` client (node-kubeconfigs, `/etc/kubernetes/kubeconfig`).
    pub(super) node_admin: Issued,
    pub(super) kubelet: Issued,
    pub(super) csr: Issued,
    pub(super) etcd: Issued,
}

impl Signers {
    pub(super) fn issue() -> Result<Self> {
        // Subjects are RFC 4514 strings (last RDN first), so "CN=x,OU=openshift" is encoded
        // OU then CN, as OpenShift's Go tooling encodes its signers: a configuration made by an
        // installer must name the signers byte for byte like the cluster does.
        let lb = issue(
            ca("lb-signer", "CN=kube-apiserver-lb-signer,OU=openshift", RSA),
            None,
        )?;
        let localhost = issue(
            ca(
                "localhost-signer",
                "CN=kube-apiserver-localhost-signer,OU=openshift",
                RSA,
            ),
            None,
        )?;
        let ingress = issue(
            ca(
                "ingress-signer",
                "CN=ingress-operator@1700000000",
                KeyKind::P256,
            ),
            None,
        )?;
        let admin = issue(
            ca(
                "admin-signer",
                "CN=admin-kubeconfig-signer,OU=openshift",
                RSA,
            ),
            None,
        )?;
        let node_admin = issue(
            ca(
                "node-system-admin-signer",
                "CN=openshift-kube-apiserver-operator_node-system-admin-signer@1700000000",
                RSA,
            ),
            None,
        )?;
        let kubelet = issue(
            ca("kubelet-signer", "CN=kubelet-signer,OU=openshift", RSA),
            None,
        )?;
        let csr = issue(
            ca(
                "csr-signer",
                "CN=openshift-kube-controller-manager-operator_csr-signer-signer@1700000000",
                RSA,
            ),
            Some(&kubelet),
        )?;
        let etcd = issue(
            ca("etcd-signer", "CN=etcd-signer,OU=openshift", KeyKind::P384),
            None,
        )?;
        Ok(Signers {
            lb,
            localhost,
            ingress,
            admin,
            node_admin,
            kubelet,
            csr,
            etcd,
        })
    }
}

/// The serving and client certificates.
pub(super) struct Leaves {
    pub(super) api_serving: Issued,
    pub(super) localhost_serving: Issued,
    pub(super) router: Issued,
    pub(super) admin: Issued,
    pub(super) node_client: Issued,
    pub(super) node_serving: Issued,
    pub(super) etcd_serving: Issued,
}

impl Leaves {
    pub(super) fn issue(spec: &PkiSpec, n: &Names, s: &Signers) -> Result<Self> {
        let (api_serving, localhost_serving, router) = Self::serving(n, s)?;
        let admin = issue(
            Req {
                name: "admin-client",
                subject: "O=system:masters,CN=system:admin",
                kind: RSA,
                ca: false,
                client: true,
                server: false,
                sans: vec![],
                days: 3650,
            },
            Some(&s.node_admin),
        )?;
        let (node_client, node_serving) = Self::kubelet(spec, n, s)?;
        let etcd_serving = issue(
            Req {
                name: "etcd-serving",
                subject: &format!(
                    "O=system:etcd-servers,CN=system:etcd-server:{}",
                    spec.hostname
                ),
                kind: KeyKind::P384,
                ca: false,
                client: true,
                server: true,
                sans: vec![
                    San::Dns("localhost"),
                    San::Dns(&spec.hostname),
                    San::Ip(&spec.ip),
                    San::Ip("127.0.0.1"),
                ],
                days: 1095,
            },
            Some(&s.etcd),
        )?;
        Ok(Leaves {
            api_serving,
            localhost_serving,
            router,
            admin,
            node_client,
            node_serving,
            etcd_serving,
        })
    }

    /// kube-apiserver's serving certificates (`api.`/`api-int.` and localhost) and the
    /// ingress router's (`*.apps.`).
    fn serving(n: &Names, s: &Signers) -> Result<(Issued, Issued, Issued)> {
        let api_serving = issue(
            Req {
                name: "lb-serving",
                subject: &format!("CN={}", n.api),
                kind: RSA,
                ca: false,
                client: false,
                server: true,
                sans: vec![San::Dns(&n.api), San::Dns(&n.api_int)],
                days: 30,
            },
            Some(&s.lb),
        )?;
        let localhost_serving = issue(
            Req {
                name: "localhost-serving",
                subject: "CN=127.0.0.1",
                kind: RSA,
                ca: false,
                client: false,
                server: true,
                sans: vec![San::Dns("localhost"), San::Ip("127.0.0.1"), San::Ip("::1")],
                days: 30,
            },
            Some(&s.localhost),
        )?;
        let router = issue(
            Req {
                name: "router-serving",
                subject: &format!("CN={}", n.apps),
                kind: KeyKind::P256,
                ca: false,
                client: false,
                server: true,
                sans: vec![San::Dns(&n.apps)],
                days: 730,
            },
            Some(&s.ingress),
        )?;
        Ok((api_serving, localhost_serving, router))
    }

    /// The kubelet's client and serving certificates, from the CSR signer.
    fn kubelet(spec: &PkiSpec, n: &Names, s: &Signers) -> Result<(Issued, Issued)> {
        let node_client = issue(
            Req {
                name: "kubelet-client",
                subject: &format!("O=system:nodes,CN={}", n.node_cn),
                kind: KeyKind::P256,
                ca: false,
                client: true,
                server: false,
                sans: vec![],
                days: 30,
            },
            Some(&s.csr),
        )?;
        let node_serving = issue(
            Req {
                name: "kubelet-serving",
                subject: &format!("O=system:nodes,CN={}", n.node_cn),
                kind: KeyKind::P256,
                ca: false,
                client: false,
                server: true,
                sans: vec![San::Dns(&spec.hostname), San::Ip(&spec.ip)],
                days: 30,
            },
            Some(&s.csr),
        )?;
        Ok((node_client, node_serving))
    }
}
