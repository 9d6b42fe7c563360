//! The test cluster: a stand-in for a single-node control plane, enough to give seed creation,
//! IBI and recert real work (design decision 7). It is a test-harness fixture, reached through
//! the hidden `imgmode internal test-cluster` and used by `containerfiles/seed-system/`.
//!
//! - [`init`] (first boot): a cluster identity (name, base domain, cluster ID, infra ID), an
//!   OpenShift-shaped PKI from recert's generator (files under `/etc/kubernetes` and
//!   `/var/lib/kubelet`, secrets and configmaps in etcd), and the cluster-scoped objects seed
//!   creation reads (ClusterVersion, Network, Proxy, install-config), and with a proxy the
//!   host's side of it (`/etc/mco/proxy.env` and the services' drop-ins) as a cluster has it.
//! - [`serve`]: the "API server": HTTPS with the API serving certificate, requires a client
//!   certificate issued by a CA of the client CA bundle (the admin kubeconfig signer, whose key
//!   the cluster does not hold, or the node's `system:admin` signer), answers `/readyz` and `/healthz` by
//!   reading etcd, `/version` with the ClusterVersion.
//! - [`probe`]: the client side, with a kubeconfig's CA and client certificate (what
//!   `imgmode seed create` uses to decide the cluster is healthy).

use crate::pki::{self as testpki, PkiSpec};
use anyhow::{bail, Context, Result};
use base64::Engine;
use imgmode_recert::etcd::{Etcd, EtcdObject};
use imgmode_recert::keys::KeyKind;
use imgmode_seed::cluster::{random_suffix, random_uuid};
use imgmode_support::host::first_global_ipv4;
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Static pod resources, as OpenShift lays them out (relative to the root).
pub const STATIC_POD_RESOURCES: &str = "etc/kubernetes/static-pod-resources";
/// The admin kubeconfig testpki writes (relative to the root).
pub const ADMIN_KUBECONFIG: &str = "etc/kubernetes/kubeconfig";
/// The API port.
pub const API_PORT: u16 = 6443;

/// The host's side of the cluster's proxy under `root`, as a cluster's machine config leaves
/// it: the environment file and the services' drop-ins naming it (which post-pivot finds
/// already there on a site with a proxy, so it reloads no unit).
fn proxy_host_files(root: &Path, p: &imgmode_seed::reconfig::Proxy) -> Result<()> {
    let under = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let env_file = imgmode_seed::site::HostFile {
        path: imgmode_seed::site::PROXY_ENV.into(),
        content: Some(imgmode_seed::site::proxy_env_text(p, &p.no_proxy)),
        mode: 0o644,
    };
    for f in std::iter::once(env_file).chain(imgmode_seed::site::proxy_drop_ins()) {
        let path = under(&f.path);
        // write_atomic makes the parent directories
        let content = f.content.unwrap_or_default();
        imgmode_support::fs::write_atomic(&path, content.as_bytes(), f.mode)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// What `init` needs.
#[derive(Debug, Clone)]
pub struct InitOpts {
    /// Where the PKI's files go (`/` on the seed system).
    pub root: PathBuf,
    /// Marker and identity record (`/var/lib/imgmode-test-cluster`).
    pub state_dir: PathBuf,
    pub etcd_endpoint: String,
    pub cluster_name: String,
    pub base_domain: String,
    /// The cluster version (what `seedVersion` is compared with).
    pub version: String,
    /// The release image pull spec (its registry becomes `release_registry`).
    pub release_image: String,
    /// Extra serving certificates (P-256), half in files and half in etcd.
    pub extra_leaves: usize,
    /// Defaults: the kernel's hostname and the first global IPv4 address.
    pub hostname: Option<String>,
    pub ip: Option<String>,
    /// The cluster's proxy (none by default).
    pub proxy: Option<imgmode_seed::reconfig::Proxy>,
}

/// The identity `init` made, kept in `<state_dir>/identity.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub cluster_name: String,
    pub base_domain: String,
    pub cluster_id: String,
    pub infra_id: String,
    pub hostname: String,
    pub ip: String,
    pub version: String,
    pub certificates: usize,
    pub etcd_objects: usize,
}

/// The test cluster's etcd at `etcd_endpoint` (its values are not encrypted).
fn at(etcd_endpoint: &str) -> imgmode_seed::cluster::Cluster {
    imgmode_seed::cluster::Cluster {
        etcd_endpoint: etcd_endpoint.to_string(),
        ..Default::default()
    }
}

/// One etcd object's JSON value by key.
pub fn get(etcd_endpoint: &str, key: &str) -> Result<serde_json::Value> {
    let objects = imgmode_seed::cluster::etcd_objects(&at(etcd_endpoint))?;
    objects
        .into_iter()
        .find(|o| o.key == key)
        .map(|o| o.value)
        .with_context(|| format!("etcd at {etcd_endpoint} has no object {key}"))
}

/// Every object under the key prefix `prefix`, as a JSON array.
pub fn list(etcd_endpoint: &str, prefix: &str) -> Result<serde_json::Value> {
    let objects = imgmode_seed::cluster::etcd_objects(&at(etcd_endpoint))?;
    Ok(objects
        .into_iter()
        .filter(|o| o.key.starts_with(prefix))
        .map(|o| o.value)
        .collect())
}

/// The test cluster's stand-in for `oc adm upgrade --to-image IMAGE`, with the cluster
/// version operator's part done at once: the ClusterVersion's `spec.desiredUpdate` names
/// `image`, `status.desired.image` becomes it and `status.history` gains it, completed, first.
/// Returns the release it ran before.
pub fn upgrade(etcd_endpoint: &str, image: &str) -> Result<String> {
    anyhow::ensure!(
        image.contains('@'),
        "--to-image {image}: name the release by digest (IMAGE@sha256:...), as an upgrade to an explicit image must"
    );
    let key = imgmode_seed::site::CLUSTER_VERSION;
    imgmode_support::runtime::block_on(async {
        let mut e = Etcd::connect(etcd_endpoint).await?;
        let mut cv = e
            .get(key)
            .await?
            .with_context(|| format!("etcd at {etcd_endpoint} holds no ClusterVersion ({key})"))?;
        let before = cv.value["status"]["desired"]["image"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let v = &mut cv.value;
        v["spec"]["desiredUpdate"] = json!({"image": image, "force": false});
        v["status"]["desired"]["image"] = json!(image);
        let entry = json!({"state": "Completed", "image": image, "verified": false});
        match v["status"]["history"].as_array_mut() {
            Some(h) => h.insert(0, entry),
            None => v["status"]["history"] = json!([entry]),
        }
        e.put(&cv).await?;
        Ok(before)
    })?
}

/// The cluster-scoped objects beyond the PKI, as OpenShift keeps them.
pub fn cluster_objects(
    id: &Identity,
    release_image: &str,
    proxy: Option<&imgmode_seed::reconfig::Proxy>,
) -> Vec<(String, serde_json::Value)> {
    let mut proxy_spec = json!({"trustedCA": {"name": ""}});
    if let Some(p) = proxy {
        proxy_spec["httpProxy"] = json!(p.http_proxy);
        proxy_spec["httpsProxy"] = json!(p.https_proxy);
        proxy_spec["noProxy"] = json!(p.no_proxy);
    }
    let install_config = format!(
        "apiVersion: v1\nbaseDomain: {}\nmetadata:\n  name: {}\nfips: false\nnetworking:\n  clusterNetwork:\n  - cidr: 10.128.0.0/14\n    hostPrefix: 23\n  machineNetwork:\n  - cidr: {}/24\n  serviceNetwork:\n  - 172.30.0.0/16\n",
        id.base_domain,
        id.cluster_name,
        id.ip.rsplit_once('.').map_or(id.ip.clone(), |(a, _)| format!("{a}.0"))
    );
    // the seed system's own registry credentials, which no seed may carry
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("seed-owner:{}", random_suffix(24)));
    let pull_secret = format!(r#"{{"auths":{{"quay.io":{{"auth":"{auth}"}}}}}}"#);
    vec![
        (
            imgmode_seed::pullsecret::KEY.into(),
            imgmode_seed::pullsecret::object(&pull_secret),
        ),
        (
            "/kubernetes.io/configmaps/kube-system/cluster-config-v1".into(),
            json!({"kind": "ConfigMap", "apiVersion": "v1",
                "metadata": {"name": "cluster-config-v1", "namespace": "kube-system"},
                "data": {"install-config": install_config}}),
        ),
        (
            "/kubernetes.io/config.openshift.io/clusterversions/version".into(),
            json!({"kind": "ClusterVersion", "apiVersion": "config.openshift.io/v1",
                "metadata": {"name": "version"},
                "spec": {"clusterID": id.cluster_id, "channel": "stable"},
                "status": {"desired": {"version": id.version, "image": release_image}}}),
        ),
        (
            "/kubernetes.io/config.openshift.io/networks/cluster".into(),
            json!({"kind": "Network", "apiVersion": "config.openshift.io/v1",
                "metadata": {"name": "cluster"},
                "spec": {"clusterNetwork": [{"cidr": "10.128.0.0/14", "hostPrefix": 23}],
                         "serviceNetwork": ["172.30.0.0/16"], "networkType": "OVNKubernetes"}}),
        ),
        (
            "/kubernetes.io/config.openshift.io/proxies/cluster".into(),
            json!({"kind": "Proxy", "apiVersion": "config.openshift.io/v1",
                "metadata": {"name": "cluster"}, "spec": proxy_spec}),
        ),
    ]
}

/// First boot: make the identity and PKI, load etcd. Does nothing when already initialized.
pub fn init(o: &InitOpts) -> Result<Identity> {
    let marker = o.state_dir.join("identity.json");
    if let Ok(text) = std::fs::read_to_string(&marker) {
        return serde_json::from_str(&text)
            .with_context(|| format!("reading {}", marker.display()));
    }
    let hostname = match &o.hostname {
        Some(h) => h.clone(),
        None => imgmode_support::host::hostname()?,
    };
    let ip = match &o.ip {
        Some(i) => i.clone(),
        None => first_global_ipv4()?,
    };
    let spec = PkiSpec {
        cluster_name: o.cluster_name.clone(),
        base_domain: o.base_domain.clone(),
        infra_id: format!("{}-{}", o.cluster_name, random_suffix(5)),
        hostname: hostname.clone(),
        ip: ip.clone(),
        extra_leaves: o.extra_leaves,
        extra_leaf_key: KeyKind::P256,
        extra_in_files_only: false,
    };
    let pki = testpki::generate(&spec, &o.root).context("generating the cluster PKI")?;
    let mut id = Identity {
        cluster_name: o.cluster_name.clone(),
        base_domain: o.base_domain.clone(),
        cluster_id: random_uuid(),
        infra_id: spec.infra_id.clone(),
        hostname,
        ip,
        version: o.version.clone(),
        certificates: pki.certs.len(),
        etcd_objects: 0,
    };
    // later entries win: the full install-config replaces testpki's short one
    let mut objects: Vec<(String, serde_json::Value)> = pki.etcd_objects;
    objects.extend(cluster_objects(&id, &o.release_image, o.proxy.as_ref()));
    let mut map = std::collections::BTreeMap::new();
    for (k, v) in objects {
        map.insert(k, v);
    }
    id.etcd_objects = map.len();
    imgmode_support::runtime::block_on(async {
        let mut etcd = Etcd::connect(&o.etcd_endpoint).await?;
        for (key, value) in map {
            // built-in kinds as Kubernetes protobuf, custom resources as JSON: what a real
            // kube-apiserver stores
            etcd.put(&EtcdObject::new(key, value)).await?;
        }
        anyhow::Ok(())
    })??;
    if let Some(p) = &o.proxy {
        proxy_host_files(&o.root, p)?;
    }
    std::fs::create_dir_all(&o.state_dir)?;
    let tmp = o.state_dir.join(".identity.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&id)?)?;
    std::fs::rename(&tmp, &marker)?;
    Ok(id)
}

/// Where `serve` finds its certificates (relative to the root).
pub fn serving_paths(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let sp = root.join(STATIC_POD_RESOURCES);
    let s = sp.join("kube-apiserver-certs/secrets/external-loadbalancer-serving-certkey");
    (
        s.join("tls.crt"),
        s.join("tls.key"),
        root.join(testpki::CLIENT_CA),
    )
}

/// Read one HTTP/1.1 request line (headers are read and ignored).
fn read_request(s: &mut impl Read) -> Result<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&b[..n]);
        if buf.len() > 64 * 1024 {
            bail!("request headers too large");
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(path)) => Ok(path.to_string()),
        _ => bail!("unsupported request {line:?}"),
    }
}

fn respond(s: &mut impl Write, code: u16, body: &str) -> Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    write!(
        s,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()?;
    Ok(())
}

/// What the health path reports: etcd answers and holds the cluster's objects.
async fn etcd_health(endpoint: &str) -> Result<String> {
    let mut etcd = Etcd::connect(endpoint).await?;
    let objects = etcd.scan().await?;
    let version = objects
        .iter()
        .find(|o| o.key == "/kubernetes.io/config.openshift.io/clusterversions/version")
        .context("etcd holds no ClusterVersion")?;
    Ok(serde_json::to_string(&version.value["status"]["desired"])?)
}

/// Serve the API endpoint until killed.
pub fn serve(root: &Path, listen: &str, etcd_endpoint: &str) -> Result<()> {
    let (crt, key, client_ca) = serving_paths(root);
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    b.set_certificate_chain_file(&crt)
        .with_context(|| format!("loading {}", crt.display()))?;
    b.set_private_key_file(&key, SslFiletype::PEM)
        .with_context(|| format!("loading {}", key.display()))?;
    b.set_ca_file(&client_ca)
        .with_context(|| format!("loading {}", client_ca.display()))?;
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    let acceptor = std::sync::Arc::new(b.build());
    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    eprintln!("test-cluster API listening on {listen}");
    for conn in listener.incoming() {
        let Ok(tcp) = conn else { continue };
        let (acceptor, etcd) = (acceptor.clone(), etcd_endpoint.to_string());
        std::thread::spawn(move || {
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(mut tls) = acceptor.accept(tcp) else {
                return;
            };
            let Ok(path) = read_request(&mut tls) else {
                let _ = respond(&mut tls, 503, "bad request");
                return;
            };
            let health = || imgmode_support::runtime::block_on(etcd_health(&etcd))?;
            let _ = match path.as_str() {
                "/readyz" | "/healthz" | "/livez" => match health() {
                    Ok(_) => respond(&mut tls, 200, "ok"),
                    Err(e) => respond(&mut tls, 503, &format!("etcd: {e:#}")),
                },
                "/version" => match health() {
                    Ok(v) => respond(&mut tls, 200, &v),
                    Err(e) => respond(&mut tls, 503, &format!("etcd: {e:#}")),
                },
                _ => respond(&mut tls, 404, "not found"),
            };
            let _ = tls.shutdown();
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgmode_seed::cluster::{probe, read_kubeconfig, KubeCreds};

    #[test]
    fn a_cluster_with_a_proxy_carries_the_drop_ins_post_pivot_writes() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let p = imgmode_seed::reconfig::Proxy {
            http_proxy: "http://proxy.seed:3128".into(),
            no_proxy: ".svc".into(),
            ..Default::default()
        };
        proxy_host_files(root.path(), &p).unwrap();
        let under = |p: &Path| root.path().join(p.strip_prefix("/").unwrap());
        let drop_ins = imgmode_seed::site::proxy_drop_ins();
        assert_eq!(drop_ins.len(), imgmode_seed::site::PROXY_UNITS.len());
        // the same bytes and mode: post-pivot finds them already there and reloads nothing
        for f in drop_ins {
            let path = under(&f.path);
            assert_eq!(std::fs::read_to_string(&path).unwrap(), f.content.unwrap());
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, f.mode, "{}", path.display());
        }
        let env = std::fs::read_to_string(under(Path::new(imgmode_seed::site::PROXY_ENV))).unwrap();
        assert_eq!(
            env,
            "HTTP_PROXY=http://proxy.seed:3128\nhttp_proxy=http://proxy.seed:3128\nNO_PROXY=.svc\nno_proxy=.svc\n"
        );
    }

    #[test]
    fn uuids_are_version_4() {
        for _ in 0..50 {
            let u = random_uuid();
            let parts: Vec<&str> = u.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                vec![8, 4, 4, 4, 12]
            );
            assert!(parts[2].starts_with('4'));
            assert!("89ab".contains(&parts[3][..1]), "{u}");
        }
        assert_ne!(random_uuid(), random_uuid());
    }

    /// The fixture end to end without etcd: the generated PKI serves TLS that requires the
    /// admin client certificate, and the admin kubeconfig verifies the server.
    #[test]
    fn kubeconfig_reaches_the_api_endpoint_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let spec = PkiSpec {
            extra_in_files_only: true,
            ..Default::default()
        };
        testpki::generate(&spec, dir.path()).unwrap();
        let (crt, key, ca) = serving_paths(dir.path());
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        b.set_certificate_chain_file(&crt).unwrap();
        b.set_private_key_file(&key, SslFiletype::PEM).unwrap();
        b.set_ca_file(&ca).unwrap();
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        let acceptor = b.build();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for conn in listener.incoming().take(2) {
                if let Ok(mut tls) = acceptor.accept(conn.unwrap()) {
                    let p = read_request(&mut tls).unwrap();
                    respond(&mut tls, 200, &p).unwrap();
                }
            }
        });
        let mut creds = read_kubeconfig(&dir.path().join(ADMIN_KUBECONFIG)).unwrap();
        creds.server = creds.server.replace(":6443", &format!(":{port}"));
        assert!(creds
            .server
            .starts_with("https://api-int.seed.example.com:"));
        let (code, body) = probe(&creds, "/readyz", Some("127.0.0.1")).unwrap();
        assert_eq!((code, body.as_str()), (200, "/readyz"));
        // a certificate no client CA issued (the API's own serving pair) is refused
        let other = KubeCreds {
            cert_pem: std::fs::read(&crt).unwrap(),
            key_pem: std::fs::read(&key).unwrap(),
            ..creds.clone()
        };
        let e = probe(&other, "/readyz", Some("127.0.0.1")).unwrap_err();
        // refused during the handshake (TLS 1.2) or right after it (TLS 1.3 checks the client
        // certificate after the client finished): either way no answer comes back
        let e = format!("{e:#}");
        assert!(
            e.contains("no HTTP status") || e.contains("TLS with"),
            "{e}"
        );
        server.join().unwrap();
    }
}
