//! A generator of cluster PKIs shaped like a single-node OpenShift's: several root signers, an
//! intermediate, serving certificates for `api.`, `api-int.` and `*.apps.`, client
//! certificates, kubeconfigs with embedded certificates, a service-account signing key with
//! JWTs, all spread over files and Kubernetes-style etcd objects. Tests, benchmarks and the
//! test cluster's fixtures use it; it is not part of recert's behaviour.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use der::asn1::{BitString, Ia5String, OctetString};
use der::Encode;
use serde_json::json;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

use crate::keys::{self, KeyKind, PrivateKey};
use crate::text::{b64_encode, pem_encode, B64URL};
use base64::Engine;

const SERVER_AUTH: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const CLIENT_AUTH: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

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

pub enum San<'a> {
    Dns(&'a str),
    Ip(&'a str),
}

struct Req<'a> {
    name: &'a str,
    subject: &'a str,
    kind: KeyKind,
    ca: bool,
    client: bool,
    server: bool,
    sans: Vec<San<'a>>,
    days: u64,
}

fn issue(req: Req, issuer: Option<&Issued>) -> Result<Issued> {
    let key = PrivateKey::generate(req.kind)?;
    issue_with_key(req, key, issuer)
}

fn issue_with_key(req: Req, key: PrivateKey, issuer: Option<&Issued>) -> Result<Issued> {
    let spki = key.spki();
    let ski = crate::cert::key_id(&spki);
    let subject = Name::from_str(req.subject).context("subject")?;
    let (issuer_name, issuer_ski, signer) = match issuer {
        Some(i) => (i.subject.clone(), i.ski.clone(), &i.key),
        None => (subject.clone(), ski.clone(), &key),
    };
    let now = SystemTime::now();
    let validity = Validity {
        not_before: Time::try_from(now - Duration::from_secs(3600))?,
        not_after: Time::try_from(now + Duration::from_secs(req.days * 86400))?,
    };
    let mut exts = vec![];
    let mut push = |oid: &str, critical: bool, der: Vec<u8>| -> Result<()> {
        exts.push(Extension {
            extn_id: der::asn1::ObjectIdentifier::new(oid).expect("static OID"),
            critical,
            extn_value: OctetString::new(der)?,
        });
        Ok(())
    };
    let usages = if req.ca {
        KeyUsages::DigitalSignature | KeyUsages::KeyCertSign | KeyUsages::CRLSign
    } else {
        KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment
    };
    push("2.5.29.15", true, KeyUsage(usages).to_der()?)?;
    if !req.ca {
        let mut eku = vec![];
        if req.server {
            eku.push(SERVER_AUTH);
        }
        if req.client {
            eku.push(CLIENT_AUTH);
        }
        push("2.5.29.37", false, ExtendedKeyUsage(eku).to_der()?)?;
    }
    push(
        "2.5.29.19",
        true,
        BasicConstraints {
            ca: req.ca,
            path_len_constraint: None,
        }
        .to_der()?,
    )?;
    push(
        "2.5.29.14",
        false,
        SubjectKeyIdentifier(OctetString::new(ski.clone())?).to_der()?,
    )?;
    push(
        "2.5.29.35",
        false,
        AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(issuer_ski)?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        }
        .to_der()?,
    )?;
    if !req.sans.is_empty() {
        let mut names = vec![];
        for s in &req.sans {
            names.push(match s {
                San::Dns(d) => GeneralName::DnsName(Ia5String::new(d)?),
                San::Ip(ip) => {
                    let ip: std::net::IpAddr = ip.parse()?;
                    GeneralName::IpAddress(OctetString::new(match ip {
                        std::net::IpAddr::V4(v) => v.octets().to_vec(),
                        std::net::IpAddr::V6(v) => v.octets().to_vec(),
                    })?)
                }
            });
        }
        push("2.5.29.17", false, SubjectAltName(names).to_der()?)?;
    }
    let mut serial = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut serial);
    serial[0] = (serial[0] & 0x7f) | 1;
    let alg = signer.signature_algorithm();
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial)?,
        signature: alg.clone(),
        issuer: issuer_name,
        validity,
        subject: subject.clone(),
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(exts),
    };
    let sig = signer.sign_x509(&tbs.to_der()?);
    let der = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig)?,
    }
    .to_der()?;
    Ok(Issued {
        name: req.name.into(),
        der,
        key,
        subject,
        ski,
        issuer: issuer.map(|i| i.name.clone()),
    })
}

fn write(root: &Path, rel: &str, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("relative path has a parent"))?;
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn kubeconfig(server: &str, ca: &str, cert: &str, key: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: cluster\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\ncontexts:\n- name: {user}\n  context:\n    cluster: cluster\n    user: {user}\ncurrent-context: {user}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64_encode(ca.as_bytes()),
        b64_encode(cert.as_bytes()),
        b64_encode(key.as_bytes())
    )
}

/// A service-account token signed like kube-apiserver does (RS256, kid = key ID of the SPKI).
pub fn service_account_token(key: &PrivateKey, namespace: &str, sa: &str) -> String {
    let header = json!({"alg": key.jws_alg(), "kid": crate::plan::kube_kid(&key.spki_der())});
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

fn secret(ns: &str, name: &str, data: &[(&str, &str)]) -> (String, serde_json::Value) {
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

/// Generate the PKI under `root` (files) and return it with the etcd objects to load.
pub fn generate(spec: &PkiSpec, root: &Path) -> Result<Pki> {
    let domain = format!("{}.{}", spec.cluster_name, spec.base_domain);
    let api = format!("api.{domain}");
    let api_int = format!("api-int.{domain}");
    let apps = format!("*.apps.{domain}");
    let node_cn = format!("system:node:{}", spec.hostname);
    let rsa = KeyKind::Rsa(2048);
    let ca = |name: &'static str, subject: &'static str, kind| Req {
        name,
        subject,
        kind,
        ca: true,
        client: false,
        server: false,
        sans: vec![],
        days: 3650,
    };
    let mut certs = vec![];
    // Subjects are RFC 4514 strings (last RDN first), so "CN=x,OU=openshift" is encoded
    // OU then CN, as OpenShift's Go tooling encodes its signers: a configuration made by an
    // installer must name the signers byte for byte like the cluster does.
    let lb = issue(
        ca("lb-signer", "CN=kube-apiserver-lb-signer,OU=openshift", rsa),
        None,
    )?;
    let localhost = issue(
        ca(
            "localhost-signer",
            "CN=kube-apiserver-localhost-signer,OU=openshift",
            rsa,
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
    let admin_signer = issue(
        ca(
            "admin-signer",
            "CN=admin-kubeconfig-signer,OU=openshift",
            rsa,
        ),
        None,
    )?;
    let kubelet_signer = issue(
        ca("kubelet-signer", "CN=kubelet-signer,OU=openshift", rsa),
        None,
    )?;
    let csr_signer = issue(
        ca(
            "csr-signer",
            "CN=openshift-kube-controller-manager-operator_csr-signer-signer@1700000000",
            rsa,
        ),
        Some(&kubelet_signer),
    )?;
    let etcd_signer = issue(
        ca("etcd-signer", "CN=etcd-signer,OU=openshift", KeyKind::P384),
        None,
    )?;

    let api_serving = issue(
        Req {
            name: "lb-serving",
            subject: &format!("CN={api}"),
            kind: rsa,
            ca: false,
            client: false,
            server: true,
            sans: vec![San::Dns(&api), San::Dns(&api_int)],
            days: 30,
        },
        Some(&lb),
    )?;
    let localhost_serving = issue(
        Req {
            name: "localhost-serving",
            subject: "CN=127.0.0.1",
            kind: rsa,
            ca: false,
            client: false,
            server: true,
            sans: vec![San::Dns("localhost"), San::Ip("127.0.0.1"), San::Ip("::1")],
            days: 30,
        },
        Some(&localhost),
    )?;
    let router = issue(
        Req {
            name: "router-serving",
            subject: &format!("CN={apps}"),
            kind: KeyKind::P256,
            ca: false,
            client: false,
            server: true,
            sans: vec![San::Dns(&apps)],
            days: 730,
        },
        Some(&ingress),
    )?;
    let admin = issue(
        Req {
            name: "admin-client",
            subject: "O=system:masters,CN=system:admin",
            kind: rsa,
            ca: false,
            client: true,
            server: false,
            sans: vec![],
            days: 3650,
        },
        Some(&admin_signer),
    )?;
    let node_client = issue(
        Req {
            name: "kubelet-client",
            subject: &format!("O=system:nodes,CN={node_cn}"),
            kind: KeyKind::P256,
            ca: false,
            client: true,
            server: false,
            sans: vec![],
            days: 30,
        },
        Some(&csr_signer),
    )?;
    let node_serving = issue(
        Req {
            name: "kubelet-serving",
            subject: &format!("O=system:nodes,CN={node_cn}"),
            kind: KeyKind::P256,
            ca: false,
            client: false,
            server: true,
            sans: vec![San::Dns(&spec.hostname), San::Ip(&spec.ip)],
            days: 30,
        },
        Some(&csr_signer),
    )?;
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
        Some(&etcd_signer),
    )?;
    let sa_key = PrivateKey::generate(rsa)?;

    let r = root;
    let sp = "etc/kubernetes/static-pod-resources";
    // Roots bundle, as kubelet and clients read it.
    let bundle: String = [
        &lb,
        &localhost,
        &ingress,
        &admin_signer,
        &kubelet_signer,
        &etcd_signer,
    ]
    .iter()
    .map(|c| c.cert_pem())
    .collect();
    write(r, "etc/kubernetes/ca-bundle.crt", &bundle, 0o644)?;
    for (dir, c) in [
        (
            "kube-apiserver-certs/secrets/external-loadbalancer-serving-certkey",
            &api_serving,
        ),
        (
            "kube-apiserver-certs/secrets/localhost-serving-cert-certkey",
            &localhost_serving,
        ),
    ] {
        write(r, &format!("{sp}/{dir}/tls.crt"), &c.cert_pem(), 0o644)?;
        write(r, &format!("{sp}/{dir}/tls.key"), &c.key_pem(), 0o600)?;
    }
    // etcd keeps PKCS#8 keys.
    let etcd_key = pem_encode("PRIVATE KEY", &etcd_serving.key.to_pem_der("PRIVATE KEY")?) + "\n";
    write(
        r,
        &format!(
            "{sp}/etcd-certs/secrets/etcd-all-certs/etcd-serving-{}.crt",
            spec.hostname
        ),
        &etcd_serving.cert_pem(),
        0o644,
    )?;
    write(
        r,
        &format!(
            "{sp}/etcd-certs/secrets/etcd-all-certs/etcd-serving-{}.key",
            spec.hostname
        ),
        &etcd_key,
        0o600,
    )?;
    write(
        r,
        &format!("{sp}/etcd-certs/configmaps/etcd-serving-ca/ca-bundle.crt"),
        &etcd_signer.cert_pem(),
        0o644,
    )?;
    write(
        r,
        &format!("{sp}/etcd-certs/secrets/etcd-signer/tls.key"),
        &etcd_signer.key_pem(),
        0o600,
    )?;
    // Signer keys live next to their certificates, as the operators keep them.
    for c in [
        &lb,
        &localhost,
        &admin_signer,
        &kubelet_signer,
        &csr_signer,
        &ingress,
    ] {
        write(
            r,
            &format!("{sp}/signers/{}/tls.crt", c.name),
            &c.cert_pem(),
            0o644,
        )?;
        write(
            r,
            &format!("{sp}/signers/{}/tls.key", c.name),
            &c.key_pem(),
            0o600,
        )?;
    }
    // The kubelet's client cert and key in one file; its serving pair; the intermediate's chain.
    write(
        r,
        "var/lib/kubelet/pki/kubelet-client-current.pem",
        &(node_client.cert_pem() + &node_client.key_pem()),
        0o600,
    )?;
    write(
        r,
        "var/lib/kubelet/pki/kubelet-server-current.pem",
        &(node_serving.cert_pem() + &csr_signer.cert_pem() + &node_serving.key_pem()),
        0o600,
    )?;
    let sa_pem = pem_encode("RSA PRIVATE KEY", &sa_key.to_pem_der("RSA PRIVATE KEY")?) + "\n";
    let sa_pub = pem_encode("PUBLIC KEY", &sa_key.spki_der()) + "\n";
    write(
        r,
        &format!("{sp}/kube-apiserver-certs/secrets/service-account-key/service-account.key"),
        &sa_pem,
        0o600,
    )?;
    write(
        r,
        &format!(
            "{sp}/kube-apiserver-certs/configmaps/sa-token-signing-certs/service-account-001.pub"
        ),
        &sa_pub,
        0o644,
    )?;
    let server = format!("https://{api_int}:6443");
    write(
        r,
        "etc/kubernetes/kubeconfig",
        &kubeconfig(
            &server,
            &lb.cert_pem(),
            &admin.cert_pem(),
            &admin.key_pem(),
            "admin",
        ),
        0o600,
    )?;
    write(
        r,
        "var/lib/kubelet/kubeconfig",
        &kubeconfig(
            &server,
            &lb.cert_pem(),
            &node_client.cert_pem(),
            &node_client.key_pem(),
            &node_cn,
        ),
        0o600,
    )?;
    let token = service_account_token(&sa_key, "openshift-monitoring", "prometheus-k8s");
    write(r, "var/lib/kubelet/pods/prometheus/token", &token, 0o600)?;

    let mut objs = vec![
        secret(
            "openshift-kube-apiserver",
            "external-loadbalancer-serving-certkey",
            &[
                ("tls.crt", &api_serving.cert_pem()),
                ("tls.key", &api_serving.key_pem()),
            ],
        ),
        secret(
            "openshift-ingress",
            "router-certs-default",
            &[
                ("tls.crt", &(router.cert_pem() + &ingress.cert_pem())),
                ("tls.key", &router.key_pem()),
            ],
        ),
        secret(
            "openshift-ingress-operator",
            "router-ca",
            &[
                ("tls.crt", &ingress.cert_pem()),
                ("tls.key", &ingress.key_pem()),
            ],
        ),
        secret(
            "openshift-kube-apiserver-operator",
            "loadbalancer-serving-signer",
            &[("tls.crt", &lb.cert_pem()), ("tls.key", &lb.key_pem())],
        ),
        secret(
            "openshift-kube-apiserver",
            "node-kubeconfigs",
            &[(
                "lb-int.kubeconfig",
                &kubeconfig(
                    &server,
                    &lb.cert_pem(),
                    &admin.cert_pem(),
                    &admin.key_pem(),
                    "admin",
                ),
            )],
        ),
        secret(
            "openshift-etcd",
            "etcd-signer",
            &[
                ("tls.crt", &etcd_signer.cert_pem()),
                ("tls.key", &etcd_signer.key_pem()),
            ],
        ),
        secret(
            "openshift-kube-controller-manager",
            "service-account-private-key",
            &[
                ("service-account.key", &sa_pem),
                ("service-account.pub", &sa_pub),
            ],
        ),
        configmap(
            "openshift-config-managed",
            "kube-apiserver-server-ca",
            &[("ca-bundle.crt", &(lb.cert_pem() + &localhost.cert_pem()))],
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
            &[("service-account-001.pub", &sa_pub)],
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
            json!({"kind": "Infrastructure", "apiVersion": "config.openshift.io/v1", "metadata": {"name": "cluster"}, "status": {"infrastructureName": spec.infra_id, "apiServerURL": format!("https://{api}:6443")}}),
        ),
    ];
    for (ns, sa) in [
        ("openshift-monitoring", "prometheus-k8s"),
        ("openshift-ingress", "router"),
        ("kube-system", "default"),
    ] {
        let tok = service_account_token(&sa_key, ns, sa);
        let (k, mut v) = secret(
            ns,
            &format!("{sa}-token"),
            &[("token", &tok), ("ca.crt", &lb.cert_pem())],
        );
        v["type"] = json!("kubernetes.io/service-account-token");
        objs.push((k, v));
    }

    certs.extend([
        lb.clone(),
        localhost,
        ingress,
        admin_signer,
        kubelet_signer,
        csr_signer,
        etcd_signer,
    ]);
    certs.extend([
        api_serving,
        localhost_serving,
        router,
        admin,
        node_client,
        node_serving,
        etcd_serving,
    ]);

    for i in 0..spec.extra_leaves {
        let dns = format!("svc-{i}.apps.{domain}");
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
            Some(&lb),
        )?;
        if i % 2 == 0 || spec.extra_in_files_only {
            write(
                r,
                &format!("{sp}/extra/svc-{i}/tls.crt"),
                &c.cert_pem(),
                0o644,
            )?;
            write(
                r,
                &format!("{sp}/extra/svc-{i}/tls.key"),
                &c.key_pem(),
                0o600,
            )?;
        } else {
            objs.push(secret(
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
    Ok(Pki {
        spec: spec.clone(),
        root: root.to_path_buf(),
        certs,
        service_account_key: sa_key,
        etcd_objects: objs,
    })
}

/// The key kind in an SPKI, for callers that only have a certificate.
pub fn kind_of(der: &[u8]) -> Result<KeyKind> {
    keys::spki_kind(&crate::cert::Cert::parse(der)?.spki_der)
}
