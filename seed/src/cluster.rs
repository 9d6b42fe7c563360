//! The cluster on a seed system or an installed copy: which services run it, where etcd
//! answers, the admin kubeconfig, and the directories recert scans; and the health checks
//! seed create and post-pivot wait for (units active, etcd answers, the API's `/readyz` with
//! the admin kubeconfig's client certificate).

use anyhow::{bail, Context, Result};
use imgmode_recert::etcd::{Etcd, EtcdObject};
use imgmode_support::cmd::Run;
use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::X509;
use rand::Rng;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The services, etcd, kubeconfig and static directories of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Units stopped while the seed is captured (in this order; started in reverse).
    pub services: Vec<String>,
    /// etcd's unit: kept running for recert, stopped for the capture.
    pub etcd_service: Option<String>,
    pub etcd_endpoint: String,
    /// The admin kubeconfig whose server's `/readyz` must answer `ok`.
    pub kubeconfig: PathBuf,
    /// Address the health check connects to (the kubeconfig's host name is still verified).
    pub api_address: Option<String>,
    /// Directories recert scans.
    pub static_dirs: Vec<PathBuf>,
    /// The cluster's EncryptionConfiguration (kube-apiserver's `--encryption-provider-config`)
    /// when it encrypts etcd values at rest: they are read and written with its keys.
    pub encryption_config: Option<PathBuf>,
}

impl Default for Cluster {
    /// A single-node OpenShift cluster's layout.
    fn default() -> Self {
        Cluster {
            services: vec!["kubelet.service".into(), "crio.service".into()],
            etcd_service: Some("etcd.service".into()),
            etcd_endpoint: "http://127.0.0.1:2379".into(),
            kubeconfig: "/etc/kubernetes/kubeconfig".into(),
            api_address: Some("127.0.0.1".into()),
            static_dirs: vec![
                "/etc/kubernetes".into(),
                "/var/lib/kubelet".into(),
                "/etc/machine-config-daemon".into(),
            ],
            encryption_config: None,
        }
    }
}

/// `systemctl ACTION UNIT`, failing with systemctl's message.
pub fn systemctl(action: &str, unit: &str) -> Result<()> {
    Run::new("systemctl").arg(action).arg(unit).output()?;
    Ok(())
}

fn is_active(unit: &str) -> bool {
    Run::new("systemctl")
        .args(["is-active", "--quiet", unit])
        .succeeds()
}

/// The cluster's etcd, reading and writing values encrypted at rest with the keys of its
/// encryption configuration (when it has one).
pub async fn connect_etcd(o: &Cluster) -> Result<Etcd> {
    let e = Etcd::connect(&o.etcd_endpoint).await?;
    Ok(match &o.encryption_config {
        Some(path) => e.with_encryption(std::sync::Arc::new(
            imgmode_recert::encryption::EncryptionKeys::load(path).with_context(|| {
                format!("the cluster's encryption configuration {}", path.display())
            })?,
        )),
        None => e,
    })
}

/// Every `/kubernetes.io/` object `e` holds. A value that cannot be read (encrypted with no
/// encryption configuration given, an unknown encoding) fails by name: seed creation and
/// post-pivot must not pass over a pull secret or a key they cannot see.
pub async fn objects(e: &mut Etcd) -> Result<Vec<EtcdObject>> {
    Ok(e.scan_values(false).await?.0)
}

/// [`objects`] of the cluster's etcd.
pub fn etcd_objects(o: &Cluster) -> Result<Vec<EtcdObject>> {
    imgmode_support::runtime::block_on(async { objects(&mut connect_etcd(o).await?).await })?
}

/// Every health check, the first failure named.
pub fn check_health(o: &Cluster) -> Result<()> {
    for unit in o.etcd_service.iter().chain(&o.services) {
        if !is_active(unit) {
            bail!("seed system unhealthy: {unit} is not active (see systemctl status {unit}); start it, or name the cluster's units with --service");
        }
    }
    let objects = etcd_objects(o).context("seed system unhealthy: etcd does not answer")?;
    if objects.is_empty() {
        bail!(
            "seed system unhealthy: etcd at {} holds no /kubernetes.io/ objects",
            o.etcd_endpoint
        );
    }
    let creds = read_kubeconfig(&o.kubeconfig)
        .context("seed system unhealthy: cannot read the admin kubeconfig (--kubeconfig)")?;
    match probe(&creds, "/readyz", o.api_address.as_deref()) {
        Ok((200, body)) if body.trim() == "ok" => Ok(()),
        Ok((code, body)) => bail!(
            "seed system unhealthy: {}/readyz answered {code}: {}",
            creds.server,
            body.trim()
        ),
        Err(e) => Err(e).context(format!(
            "seed system unhealthy: the API health check {}/readyz failed",
            creds.server
        )),
    }
}

/// Start the cluster's services (in reverse stop order) and wait up to `secs` for every
/// health check to pass; `what` leads the error, which names the check that still fails.
pub fn start_and_wait_healthy(o: &Cluster, secs: u64, what: &str) -> Result<()> {
    for unit in o.services.iter().rev() {
        systemctl("start", unit)?;
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match check_health(o) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{what} within {secs} s")))
            }
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

/// The credentials of a kubeconfig's first cluster and user.
#[derive(Debug, Clone)]
pub struct KubeCreds {
    pub server: String,
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// Read a kubeconfig with embedded (`*-data`) credentials.
pub fn read_kubeconfig(path: &Path) -> Result<KubeCreds> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
    let v: yaml_serde::Value = yaml_serde::from_str(&text)
        .with_context(|| format!("parsing the kubeconfig {}", path.display()))?;
    let field = |section: &str, inner: &str, name: &str| -> Result<String> {
        v.get(section)
            .and_then(|s| s.get(0))
            .and_then(|s| s.get(inner))
            .and_then(|s| s.get(name))
            .and_then(|s| s.as_str())
            .map(str::to_string)
            .with_context(|| format!("{}: no {section}[0].{inner}.{name}", path.display()))
    };
    let b64 = |s: String| -> Result<Vec<u8>> {
        imgmode_recert::text::b64_decode(s.trim())
            .with_context(|| format!("{}: bad base64", path.display()))
    };
    Ok(KubeCreds {
        server: field("clusters", "cluster", "server")?,
        ca_pem: b64(field("clusters", "cluster", "certificate-authority-data")?)?,
        cert_pem: b64(field("users", "user", "client-certificate-data")?)?,
        key_pem: b64(field("users", "user", "client-key-data")?)?,
    })
}

/// GET `path` from the kubeconfig's server, verifying the server against the kubeconfig's CA
/// and presenting its client certificate. `connect_to` overrides the address connected to (the
/// server name is still what is verified, like `curl --resolve`). The status and body.
pub fn probe(creds: &KubeCreds, path: &str, connect_to: Option<&str>) -> Result<(u16, String)> {
    let url = creds
        .server
        .strip_prefix("https://")
        .with_context(|| format!("server {} is not https://", creds.server))?;
    let hostport = url.split('/').next().unwrap_or(url);
    let (host, port) = hostport
        .rsplit_once(':')
        .map_or((hostport, "443"), |(h, p)| (h, p));
    let mut b = SslConnector::builder(SslMethod::tls())?;
    let store = b.cert_store_mut();
    for c in X509::stack_from_pem(&creds.ca_pem)? {
        store.add_cert(c)?;
    }
    let mut chain = X509::stack_from_pem(&creds.cert_pem)?.into_iter();
    let leaf = chain
        .next()
        .context("the kubeconfig has no client certificate")?;
    b.set_certificate(&leaf)?;
    for c in chain {
        b.add_extra_chain_cert(c)?;
    }
    let key = openssl::pkey::PKey::private_key_from_pem(&creds.key_pem)?;
    b.set_private_key(&key)?;
    let connector = b.build();
    let addr = match connect_to {
        Some(a) => format!("{a}:{port}"),
        None => format!("{host}:{port}"),
    };
    let tcp = TcpStream::connect(&addr).with_context(|| format!("connecting to {addr}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut tls = connector
        .connect(host, tcp)
        .map_err(|e| anyhow::anyhow!("TLS with {addr} (verifying {host}): {e}"))?;
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| {
        format!(
            "no HTTP status from {addr}: it closed the connection (client certificate refused?)"
        )
    })?;
    let mut resp = Vec::new();
    let _ = tls.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status from {addr}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((code, body.to_string()))
}

/// A random (version 4) UUID, as OpenShift's cluster IDs are.
pub fn random_uuid() -> String {
    let b: [u8; 16] = rand::thread_rng().gen();
    let h = hex::encode(b);
    // version 4; variant 10xx
    let variant = ["8", "9", "a", "b"][(b[8] >> 6) as usize];
    format!(
        "{}-{}-4{}-{variant}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// `n` random lowercase letters and digits (infra ID suffixes, generated names).
pub fn random_suffix(n: usize) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut r = rand::thread_rng();
    (0..n).map(|_| A[r.gen_range(0..A.len())] as char).collect()
}
