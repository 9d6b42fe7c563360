//! A generator of cluster PKIs shaped like a single-node OpenShift's: several root signers, an
//! intermediate, serving certificates for `api.`, `api-int.` and `*.apps.`, client
//! certificates, kubeconfigs with embedded certificates, a service-account signing key with
//! JWTs, all spread over files and Kubernetes-style etcd objects. Tests, benchmarks and the
//! test cluster's fixtures use it; it is not part of recert's behaviour.

mod certs;
mod files;
mod issue;
mod objects;

use std::path::{Path, PathBuf};

use anyhow::Result;
use base64::Engine;
use serde_json::json;
use x509_cert::name::Name;

use certs::{Leaves, Names, Signers, RSA};
use files::SP;
use imgmode_recert::keys::{self, KeyKind, PrivateKey};
use imgmode_recert::text::{pem_encode, B64URL};
use issue::{issue, Req};

pub use files::CLIENT_CA;
pub use issue::San;

/// What to generate.
#[derive(Debug, Clone)]
pub struct PkiSpec {
    pub cluster_name: String,
    pub base_domain: String,
    pub infra_id: String,
    pub hostname: String,
    pub ip: String,
    /// Additional serving certificates under the load-balancer signer, half in files and half in
    /// etcd, to scale the PKI for benchmarks.
    pub extra_leaves: usize,
    /// Key kind of those extra leaves.
    pub extra_leaf_key: KeyKind,
    /// Put every extra leaf in files (for runs without etcd).
    pub extra_in_files_only: bool,
}

impl Default for PkiSpec {
    fn default() -> Self {
        PkiSpec {
            cluster_name: "seed".into(),
            base_domain: "example.com".into(),
            infra_id: "seed-x7k2p".into(),
            hostname: "seed-node".into(),
            ip: "192.168.126.10".into(),
            extra_leaves: 0,
            extra_leaf_key: KeyKind::Rsa(2048),
            extra_in_files_only: false,
        }
    }
}

/// One issued certificate with its key.
#[derive(Clone)]
pub struct Issued {
    pub name: String,
    pub der: Vec<u8>,
    pub key: PrivateKey,
    pub subject: Name,
    pub ski: Vec<u8>,
    pub issuer: Option<String>,
}

impl Issued {
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.der) + "\n"
    }
    pub fn key_pem(&self) -> String {
        let label = self.key.default_label();
        pem_encode(label, &self.key.to_pem_der(label).expect("encoding")) + "\n"
    }
}

/// The generated PKI: where everything went.
pub struct Pki {
    pub spec: PkiSpec,
    pub root: PathBuf,
    /// Every certificate, roots first.
    pub certs: Vec<Issued>,
    pub service_account_key: PrivateKey,
    pub etcd_objects: Vec<(String, serde_json::Value)>,
}

impl Pki {
    pub fn cert(&self, name: &str) -> &Issued {
        self.certs
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no certificate {name}"))
    }

    /// The chain of `name` up to (excluding) its root, leaf first, and the root.
    pub fn chain(&self, name: &str) -> (Vec<&Issued>, &Issued) {
        let mut chain = vec![];
        let mut cur = self.cert(name);
        while let Some(i) = &cur.issuer {
            chain.push(cur);
            cur = self.cert(i);
        }
        (chain, cur)
    }
}

/// A service-account token signed like kube-apiserver does (RS256, kid = key ID of the SPKI).
pub fn service_account_token(key: &PrivateKey, namespace: &str, sa: &str) -> String {
    let header =
        json!({"alg": key.jws_alg(), "kid": imgmode_recert::plan::kube_kid(&key.spki_der())});
    let claims = json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/service-account.name": sa,
        "sub": format!("system:serviceaccount:{namespace}:{sa}"),
    });
    let msg = format!(
        "{}.{}",
        B64URL.encode(serde_json::to_vec(&header).expect("json")),
        B64URL.encode(serde_json::to_vec(&claims).expect("json"))
    );
    let sig = key.sign_jws(msg.as_bytes());
    format!("{msg}.{}", B64URL.encode(sig))
}

/// Generate the PKI under `root` (files) and return it with the etcd objects to load.
pub fn generate(spec: &PkiSpec, root: &Path) -> Result<Pki> {
    let names = Names::new(spec);
    let signers = Signers::issue()?;
    let leaves = Leaves::issue(spec, &names, &signers)?;
    let sa_key = PrivateKey::generate(RSA)?;

    files::write_roots_bundle(root, &signers)?;
    files::write_apiserver_serving(root, &leaves)?;
    files::write_etcd(root, spec, &signers, &leaves)?;
    files::write_signers(root, &signers)?;
    files::write_kubelet(root, &signers, &leaves)?;
    let sa = files::write_service_account_key(root, &sa_key)?;
    files::write_kubeconfigs(root, &names, &signers, &leaves, &sa_key)?;

    let mut objs = objects::tls_secrets(&names, &signers, &leaves, &sa);
    objs.extend(objects::cluster_objects(spec, &names, &signers, &sa));
    objs.extend(objects::service_account_token_secrets(&signers, &sa_key));

    let mut certs = vec![];
    certs.extend([
        signers.lb.clone(),
        signers.localhost,
        signers.ingress,
        signers.admin,
        signers.node_admin,
        signers.kubelet,
        signers.csr,
        signers.etcd,
    ]);
    certs.extend([
        leaves.api_serving,
        leaves.localhost_serving,
        leaves.router,
        leaves.admin,
        leaves.node_client,
        leaves.node_serving,
        leaves.etcd_serving,
    ]);
    extra_leaves(spec, &names, &signers.lb, root, &mut certs, &mut objs)?;
    Ok(Pki {
        spec: spec.clone(),
        root: root.to_path_buf(),
        certs,
        service_account_key: sa_key,
        etcd_objects: objs,
    })
}

/// `spec.extra_leaves` serving certificates under the load-balancer signer, every other one
/// in files (all of them with `extra_in_files_only`) and the rest in etcd secrets.
fn extra_leaves(
    spec: &PkiSpec,
    n: &Names,
    lb: &Issued,
    r: &Path,
    certs: &mut Vec<Issued>,
    objs: &mut Vec<(String, serde_json::Value)>,
) -> Result<()> {
    for i in 0..spec.extra_leaves {
        let dns = format!("svc-{i}.apps.{}", n.domain);
        let c = issue(
            Req {
                name: "extra",
                subject: &format!("CN={dns}"),
                kind: spec.extra_leaf_key,
                ca: false,
                client: false,
                server: true,
                sans: vec![San::Dns(&dns)],
                days: 365,
            },
            Some(lb),
        )?;
        if i % 2 == 0 || spec.extra_in_files_only {
            files::write(
                r,
                &format!("{SP}/extra/svc-{i}/tls.crt"),
                &c.cert_pem(),
                0o644,
            )?;
            files::write(
                r,
                &format!("{SP}/extra/svc-{i}/tls.key"),
                &c.key_pem(),
                0o600,
            )?;
        } else {
            objs.push(objects::secret(
                "extra",
                &format!("svc-{i}"),
                &[("tls.crt", &c.cert_pem()), ("tls.key", &c.key_pem())],
            ));
        }
        certs.push(Issued {
            name: format!("extra-{i}"),
            ..c
        });
    }
    Ok(())
}

/// The key kind in an SPKI, for callers that only have a certificate.
pub fn kind_of(der: &[u8]) -> Result<KeyKind> {
    keys::spki_kind(&imgmode_recert::cert::Cert::parse(der)?.spki_der)
}
