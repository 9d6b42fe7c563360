//! The site's settings of a SeedReconfiguration that post-pivot applies beyond recert's rename
//! and keys: what goes into the cluster's objects in etcd ([`cluster_updates`]) and what goes
//! onto the host ([`host_files`], [`node_ip`], [`check_fips`]).
//!
//! | Setting | Cluster | Host |
//! |---|---|---|
//! | `cluster_id` | ClusterVersion `version` `spec.clusterID` | |
//! | `node_labels` | the Node's `metadata.labels` | |
//! | `proxy` | Proxy `cluster` `spec` and `status` | `/etc/mco/proxy.env`, crio's and kubelet's environment |
//! | `additionalTrustBundle` | ConfigMap `openshift-config/user-ca-bundle`; Proxy `spec.trustedCA` with a proxy or `additionalTrustBundlePolicy: Always` | the system trust store |
//! | `release_registry` | ImageDigestMirrorSet `imgmode-release-registry` | a `registries.conf.d` mirror |
//! | install-config `imageDigestSources` | ImageDigestMirrorSet `imgmode-image-digest-sources` | a `registries.conf.d` mirror |
//! | `install_config` | ConfigMap `kube-system/cluster-config-v1`; the fields the seed decides (networks, network type, feature set and gates, capabilities, CPU partitioning, platform) must match the seed's | (`fips`: checked against the kernel) |
//! | `machine_networks` | | the node IP recert writes: the host's address in them |
//!
//! As lifecycle-agent requires, a seed made with a proxy installs only with one and a seed made
//! without one only without (the proxy is part of the seed's rendered machine configuration).

use anyhow::{bail, ensure, Context, Result};
use imgmode_recert::etcd::{EtcdObject, NODES};
use serde_json::{json, Value};
use std::path::PathBuf;

use crate::reconfig::SeedReconfiguration;

pub const CLUSTER_VERSION: &str = "/kubernetes.io/config.openshift.io/clusterversions/version";
pub const PROXY: &str = "/kubernetes.io/config.openshift.io/proxies/cluster";
pub const USER_CA_BUNDLE: &str = "/kubernetes.io/configmaps/openshift-config/user-ca-bundle";
pub const CLUSTER_CONFIG: &str = "/kubernetes.io/configmaps/kube-system/cluster-config-v1";
pub const RELEASE_MIRROR_NAME: &str = "imgmode-release-registry";
pub const RELEASE_MIRROR: &str =
    "/kubernetes.io/config.openshift.io/imagedigestmirrorsets/imgmode-release-registry";

/// Where the machine config daemon keeps the proxy's environment (crio and kubelet read it).
pub const PROXY_ENV: &str = "/etc/mco/proxy.env";
/// The units whose environment takes the proxy.
pub const PROXY_UNITS: &[&str] = &["crio.service", "kubelet.service"];
/// The site's trust bundle in Debian's local trust store (one file per certificate).
pub const TRUST_DIR: &str = "/usr/local/share/ca-certificates";
/// The prefix of those files.
pub const TRUST_PREFIX: &str = "openshift-config-user-ca-bundle";
/// The release registry's mirror on the host.
pub const RELEASE_MIRROR_CONF: &str = "/etc/containers/registries.conf.d/50-imgmode-release.conf";
/// install-config's imageDigestSources as an ImageDigestMirrorSet and on the host.
pub const DIGEST_MIRRORS_NAME: &str = "imgmode-image-digest-sources";
pub const DIGEST_MIRRORS: &str =
    "/kubernetes.io/config.openshift.io/imagedigestmirrorsets/imgmode-image-digest-sources";
pub const DIGEST_MIRRORS_CONF: &str =
    "/etc/containers/registries.conf.d/50-imgmode-digest-sources.conf";

/// A source and its mirrors (an ImageDigestMirrorSet's entry).
pub type DigestMirror = (String, Vec<String>);

/// install-config's `imageDigestSources` and its older spelling `imageContentSources`, each
/// location checked before it reaches registries.conf.
pub fn digest_sources(install_config: &str) -> Result<Vec<DigestMirror>> {
    use imgmode_support::validate as v;
    if install_config.trim().is_empty() {
        return Ok(vec![]);
    }
    let ic: yaml_serde::Value = yaml_serde::from_str(install_config)
        .context("the configuration's install-config is not YAML")?;
    let mut out = vec![];
    for field in ["imageDigestSources", "imageContentSources"] {
        let Some(list) = ic.get(field).and_then(|l| l.as_sequence()) else {
            continue;
        };
        for (i, e) in list.iter().enumerate() {
            let what = format!("{field}[{i}]");
            let source = e
                .get("source")
                .and_then(|s| s.as_str())
                .with_context(|| format!("install-config.yaml {what} has no source"))?;
            v::field(
                "install-config.yaml",
                &format!("{what}.source"),
                source,
                v::registry_location,
            )?;
            let mut mirrors = vec![];
            for m in e
                .get("mirrors")
                .and_then(|m| m.as_sequence())
                .map_or(&[][..], |m| m.as_slice())
            {
                let m = m
                    .as_str()
                    .with_context(|| format!("install-config.yaml {what}: a mirror is not text"))?;
                v::field(
                    "install-config.yaml",
                    &format!("{what} mirror"),
                    m,
                    v::registry_location,
                )?;
                mirrors.push(m.to_string());
            }
            ensure!(
                !mirrors.is_empty(),
                "install-config.yaml {what} ({source}) has no mirrors"
            );
            out.push((source.to_string(), mirrors));
        }
    }
    Ok(out)
}

/// registries.conf entries mirroring each source, by digest only (as OpenShift renders an
/// ImageDigestMirrorSet); the locations must be checked already.
pub fn mirrors_conf(header: &str, entries: &[DigestMirror]) -> String {
    let mut out = format!("# {header}\n");
    for (source, mirrors) in entries {
        out.push_str(&format!(
            "\n[[registry]]\nprefix = \"{source}\"\nlocation = \"{source}\"\n"
        ));
        for m in mirrors {
            out.push_str(&format!(
                "\n[[registry.mirror]]\nlocation = \"{m}\"\npull-from-mirror = \"digest-only\"\n"
            ));
        }
    }
    out
}

fn idms(existing: &[EtcdObject], key: &str, name: &str, entries: &[DigestMirror]) -> EtcdObject {
    let mut o = object(existing, key, json!({}));
    let list: Vec<Value> = entries
        .iter()
        .map(|(s, m)| json!({"source": s, "mirrors": m}))
        .collect();
    o.value = json!({"kind": "ImageDigestMirrorSet", "apiVersion": "config.openshift.io/v1",
        "metadata": {"name": name}, "spec": {"imageDigestMirrors": list}});
    o
}

fn find<'a>(existing: &'a [EtcdObject], key: &str) -> Option<&'a EtcdObject> {
    existing.iter().find(|o| o.key == key)
}

/// The object at `key` to change: the existing one (its revision kept for the guarded write)
/// or `fresh` when there is none.
fn object(existing: &[EtcdObject], key: &str, fresh: Value) -> EtcdObject {
    find(existing, key)
        .cloned()
        .unwrap_or_else(|| EtcdObject::new(key, fresh))
}

/// The cluster's release registry: the registry part of its ClusterVersion's desired image
/// (what a seed records as `release_registry`).
pub fn seed_release_registry(existing: &[EtcdObject]) -> Option<String> {
    let cv = find(existing, CLUSTER_VERSION)?;
    let (registry, _) = cv.value["status"]["desired"]["image"]
        .as_str()?
        .split_once('/')?;
    Some(registry.to_string())
}

/// Whether the cluster has a proxy (its Proxy object names one).
pub fn seed_has_proxy(existing: &[EtcdObject]) -> bool {
    find(existing, PROXY).is_some_and(|p| {
        ["httpProxy", "httpsProxy"]
            .iter()
            .any(|k| p.value["spec"][k].as_str().is_some_and(|s| !s.is_empty()))
    })
}

/// The Node with the configuration's `nodeLabels` and, with `node_ip`, the site's InternalIP
/// and Hostname addresses; `None` when that changes nothing.
fn node_update(
    existing: &[EtcdObject],
    m: &SeedReconfiguration,
    node_ip: Option<&str>,
) -> Result<Option<EtcdObject>> {
    let Some(seed_node) = imgmode_recert::etcd::the_node(existing).context("the Node")? else {
        if !m.node_labels.is_empty() {
            bail!("nodeLabels: the seed's etcd holds no node object under {NODES}");
        }
        return Ok(None);
    };
    let mut node = seed_node.clone();
    if !m.node_labels.is_empty() && !node.value["metadata"]["labels"].is_object() {
        node.value["metadata"]["labels"] = json!({});
    }
    for (k, v) in &m.node_labels {
        node.value["metadata"]["labels"][k.as_str()] = json!(v);
    }
    if let Some(ip) = node_ip {
        let mut addrs: Vec<serde_json::Value> = node.value["status"]["addresses"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["type"] != "InternalIP" && a["type"] != "Hostname")
            .collect();
        addrs.insert(0, json!({"type": "InternalIP", "address": ip}));
        if !m.hostname.is_empty() {
            addrs.insert(1, json!({"type": "Hostname", "address": m.hostname}));
        }
        node.value["status"]["addresses"] = json!(addrs);
    }
    Ok((node.value != seed_node.value).then_some(node))
}

/// The cluster objects the site's settings change, each to be written over the revision it
/// was read at; with `node_ip`, the Node's InternalIP and Hostname addresses become the site's
/// (what the kubelet reports when it starts). Refuses a proxy setting that does not match the
/// seed's.
pub fn cluster_updates(
    existing: &[EtcdObject],
    m: &SeedReconfiguration,
    node_ip: Option<&str>,
) -> Result<Vec<EtcdObject>> {
    let mut out = vec![];
    let cluster_ic = cluster_install_config(existing, m)?;
    let site_proxy = m.proxy.as_ref().filter(|p| p.is_set());
    match (seed_has_proxy(existing), site_proxy.is_some()) {
        (true, false) => bail!("proxy mismatch: the seed's cluster uses a proxy and the configuration (install-config.yaml proxy) sets none; give the site's proxy, or install a seed made without one"),
        (false, true) => bail!("proxy mismatch: the configuration sets a proxy and the seed's cluster uses none; install a seed made from a cluster with a proxy"),
        _ => {}
    }
    if !m.cluster_id.is_empty() {
        let mut cv = find(existing, CLUSTER_VERSION).cloned().with_context(|| {
            format!(
                "the seed's etcd has no ClusterVersion ({CLUSTER_VERSION}) to give the cluster ID"
            )
        })?;
        cv.value["spec"]["clusterID"] = json!(m.cluster_id);
        out.push(cv);
    }
    if let Some(node) = node_update(existing, m, node_ip)? {
        out.push(node);
    }
    let bundle = m.additional_trust_bundle.user_ca_bundle.trim();
    if !bundle.is_empty() {
        let mut cm = object(
            existing,
            USER_CA_BUNDLE,
            json!({"kind": "ConfigMap", "apiVersion": "v1",
                   "metadata": {"name": "user-ca-bundle", "namespace": "openshift-config"}}),
        );
        cm.value["data"] = json!({ "ca-bundle.crt": format!("{bundle}\n") });
        out.push(cm);
    }
    let trusted_ca =
        !bundle.is_empty() && (site_proxy.is_some() || trust_bundle_always(&m.install_config)?);
    if site_proxy.is_some() || trusted_ca {
        let mut p = object(
            existing,
            PROXY,
            json!({"kind": "Proxy", "apiVersion": "config.openshift.io/v1",
                   "metadata": {"name": "cluster"}, "spec": {}}),
        );
        if let Some(sp) = site_proxy {
            for (k, v) in [
                ("httpProxy", &sp.http_proxy),
                ("httpsProxy", &sp.https_proxy),
            ] {
                p.value["spec"][k] = json!(v);
                p.value["status"][k] = json!(v);
            }
            p.value["spec"]["noProxy"] = json!(sp.no_proxy);
            p.value["status"]["noProxy"] = json!(effective_no_proxy(m, &cluster_ic));
        }
        if trusted_ca {
            p.value["spec"]["trustedCA"] = json!({"name": "user-ca-bundle"});
        }
        out.push(p);
    }
    if !m.install_config.trim().is_empty() {
        let mut cm = find(existing, CLUSTER_CONFIG).cloned().with_context(|| {
            format!("the seed's etcd has no {CLUSTER_CONFIG} to take the install-config")
        })?;
        cm.value["data"]["install-config"] = json!(cluster_ic);
        out.push(cm);
    }
    if let Some(seed_reg) = release_mirror_source(existing, m) {
        let entry = (seed_reg, vec![m.release_registry.trim().to_string()]);
        out.push(idms(
            existing,
            RELEASE_MIRROR,
            RELEASE_MIRROR_NAME,
            &[entry],
        ));
    }
    let sources = digest_sources(&m.install_config)?;
    if !sources.is_empty() {
        out.push(idms(
            existing,
            DIGEST_MIRRORS,
            DIGEST_MIRRORS_NAME,
            &sources,
        ));
    }
    Ok(out)
}

/// install-config fields the seed's cluster decides, with the installer's default where it
/// has one: a site leaves them out (the seed's stay) or repeats the seed's value (its default
/// when the seed's install-config has none); any other value is refused by name.
const SEED_FIXED: &[(&[&str], Option<&str>)] = &[
    (&["networking", "networkType"], Some("OVNKubernetes")),
    (
        &["networking", "clusterNetwork"],
        Some("[{cidr: 10.128.0.0/14, hostPrefix: 23}]"),
    ),
    (&["networking", "serviceNetwork"], Some("[172.30.0.0/16]")),
    (&["featureSet"], Some("Default")),
    (&["featureGates"], None),
    (&["capabilities"], None),
    (&["cpuPartitioningMode"], Some("None")),
    (&["platform"], Some("{none: {}}")),
    (&["publish"], Some("External")),
    (&["credentialsMode"], None),
    (&["operatorPublishingStrategy"], None),
];

/// install-config's `additionalTrustBundlePolicy`: whether the trust bundle becomes the
/// cluster proxy's trusted CA always, or only with a proxy (the installer's default).
fn trust_bundle_always(install_config: &str) -> Result<bool> {
    if install_config.trim().is_empty() {
        return Ok(false);
    }
    let ic: yaml_serde::Value = yaml_serde::from_str(install_config)
        .context("the configuration's install-config is not YAML")?;
    match ic.get("additionalTrustBundlePolicy").map(|p| p.as_str()) {
        None | Some(Some("Proxyonly")) => Ok(false),
        Some(Some("Always")) => Ok(true),
        Some(other) => bail!(
            "install-config.yaml additionalTrustBundlePolicy is {}; it is Proxyonly or Always",
            other.unwrap_or("not text")
        ),
    }
}

fn get_path<'a>(v: &'a yaml_serde::Value, path: &[&str]) -> Option<&'a yaml_serde::Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

/// The install-config the installed cluster keeps (`kube-system/cluster-config-v1`): the
/// site's, with the seed-decided fields it leaves out taken from the seed's; a seed-decided
/// field the site sets otherwise than the seed is refused.
pub fn merged_install_config(seed_ic: &str, site_ic: &str) -> Result<String> {
    use yaml_serde::Value as Y;
    let seed: Y = yaml_serde::from_str(seed_ic)
        .context("the seed's install-config (kube-system/cluster-config-v1) is not YAML")?;
    let mut site: Y =
        yaml_serde::from_str(site_ic).context("the configuration's install-config is not YAML")?;
    for (path, default) in SEED_FIXED {
        let name = path.join(".");
        let seed_v = get_path(&seed, path)
            .cloned()
            .or_else(|| default.map(|d| yaml_serde::from_str(d).expect("a default is YAML")));
        match (get_path(&site, path), &seed_v) {
            (None, None) => {}
            (Some(v), Some(want)) if v == want || (name == "featureSet" && v == &Y::from("")) => {}
            (Some(v), want) => bail!(
                "install-config.yaml {name} is {}, and the seed's cluster has {}: a seed's {name} cannot change; make the seed from a cluster with this {name}, or leave {name} out",
                yaml_serde::to_string(v).unwrap_or_default().trim(),
                want.as_ref().map_or("none".to_string(), |w| yaml_serde::to_string(w)
                    .unwrap_or_default()
                    .trim()
                    .to_string())
            ),
            (None, Some(want)) => {
                if get_path(&seed, path).is_some() {
                    let mut cur = &mut site;
                    for k in &path[..path.len() - 1] {
                        if cur.get(k).is_none() {
                            cur.as_mapping_mut()
                                .context("the configuration's install-config is not a mapping")?
                                .insert(Y::from(*k), Y::Mapping(Default::default()));
                        }
                        cur = cur.get_mut(k).expect("just made");
                    }
                    cur.as_mapping_mut()
                        .context("the configuration's install-config is not a mapping")?
                        .insert(Y::from(path[path.len() - 1]), want.clone());
                }
            }
        }
    }
    // the cluster's record of its install-config holds no pull secret (as the installer
    // keeps it): the secret lives in openshift-config/pull-secret only
    if let Some(map) = site.as_mapping_mut() {
        map.remove("pullSecret");
    }
    Ok(yaml_serde::to_string(&site)?)
}

/// The seed's release registry when the site's `release_registry` differs from it: the
/// release's images are then pulled by digest from the site's registry instead.
fn release_mirror_source(existing: &[EtcdObject], m: &SeedReconfiguration) -> Option<String> {
    let site = m.release_registry.trim();
    if site.is_empty() {
        return None;
    }
    seed_release_registry(existing).filter(|seed| seed != site)
}

/// One file post-pivot writes on the host: path, content, mode. `None` content removes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    pub path: PathBuf,
    pub content: Option<String>,
    pub mode: u32,
}

/// A file the site's settings do not call for: removed.
fn gone(path: &str) -> HostFile {
    HostFile {
        path: PathBuf::from(path),
        content: None,
        mode: 0o644,
    }
}

fn file(path: &str, content: String) -> HostFile {
    HostFile {
        path: PathBuf::from(path),
        content: Some(content),
        mode: 0o644,
    }
}

/// The cluster's own destinations that never go through the proxy, after the site's
/// `noProxy`: what OpenShift's network operator puts in the Proxy's `status.noProxy` (local
/// addresses, the service domains, the internal API name, and the machine, cluster and
/// service networks of the install-config as the cluster keeps it).
pub fn effective_no_proxy(m: &SeedReconfiguration, cluster_ic: &str) -> String {
    let ic: yaml_serde::Value = yaml_serde::from_str(cluster_ic).unwrap_or_default();
    let mut out: Vec<String> = m
        .proxy
        .as_ref()
        .map(|p| {
            p.no_proxy
                .split(',')
                .map(|s| s.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    out.extend(
        ["localhost", "127.0.0.1", ".svc", ".cluster.local"]
            .iter()
            .map(|s| s.to_string()),
    );
    if !m.cluster_name.is_empty() && !m.base_domain.is_empty() {
        out.push(format!("api-int.{}.{}", m.cluster_name, m.base_domain));
    }
    out.extend(m.machine_networks.iter().cloned());
    let net = |k: &str| -> Vec<String> {
        ic.get("networking")
            .and_then(|n| n.get(k))
            .and_then(|l| l.as_sequence())
            .map(|l| {
                l.iter()
                    .filter_map(|e| e.get("cidr").unwrap_or(e).as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    out.extend(net("machineNetwork"));
    out.extend(net("clusterNetwork"));
    out.extend(net("serviceNetwork"));
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|s| !s.is_empty() && seen.insert(s.clone()));
    out.join(",")
}

/// The install-config the cluster keeps once the site's settings are applied: the site's
/// merged over the seed's record ([`merged_install_config`]), or the seed's when the site
/// gives none.
pub fn cluster_install_config(existing: &[EtcdObject], m: &SeedReconfiguration) -> Result<String> {
    let seed_ic = find(existing, CLUSTER_CONFIG)
        .and_then(|o| o.value["data"]["install-config"].as_str())
        .unwrap_or_default();
    if m.install_config.trim().is_empty() {
        Ok(seed_ic.to_string())
    } else {
        merged_install_config(seed_ic, &m.install_config)
    }
}

/// The proxy's environment (`KEY=value` lines, in both spellings programs read), with the
/// cluster's own destinations in `NO_PROXY`.
pub fn proxy_env(existing: &[EtcdObject], m: &SeedReconfiguration) -> Result<Option<String>> {
    let Some(p) = m.proxy.as_ref().filter(|p| p.is_set()) else {
        return Ok(None);
    };
    let no_proxy = effective_no_proxy(m, &cluster_install_config(existing, m)?);
    Ok(Some(proxy_env_text(p, &no_proxy)))
}

/// The environment file's text for `p` with `no_proxy` as its `NO_PROXY`: each set variable in
/// both spellings programs read.
pub fn proxy_env_text(p: &crate::reconfig::Proxy, no_proxy: &str) -> String {
    let mut s = String::new();
    for (k, v) in [
        ("HTTP_PROXY", p.http_proxy.as_str()),
        ("HTTPS_PROXY", p.https_proxy.as_str()),
        ("NO_PROXY", no_proxy),
    ] {
        if !v.is_empty() {
            s.push_str(&format!("{k}={v}\n{}={v}\n", k.to_ascii_lowercase()));
        }
    }
    s
}

/// The proxy's drop-in for the unit `unit`.
fn proxy_drop_in(unit: &str) -> String {
    format!("/etc/systemd/system/{unit}.d/10-imgmode-proxy.conf")
}

/// The drop-ins that give the cluster's services ([`PROXY_UNITS`]) the proxy's environment
/// ([`PROXY_ENV`]), as a cluster with a proxy has them (its machine config writes them). Their
/// content never changes: a site whose seed had a proxy rewrites only the environment file,
/// which systemd reads as each service starts, so no reload is needed.
pub fn proxy_drop_ins() -> Vec<HostFile> {
    PROXY_UNITS
        .iter()
        .map(|u| {
            file(
                &proxy_drop_in(u),
                format!(
                    "# The cluster's proxy (imgmode).\n[Service]\nEnvironmentFile={PROXY_ENV}\n"
                ),
            )
        })
        .collect()
}

/// The host files of the proxy, the trust bundle and the registry mirrors, given etcd as the
/// seed left it; a setting the site does not give removes its file.
pub fn host_files(existing: &[EtcdObject], m: &SeedReconfiguration) -> Result<Vec<HostFile>> {
    let seed_release_registry = seed_release_registry(existing);
    let seed_release_registry = seed_release_registry.as_deref();
    let mut out = vec![];
    // without a proxy, its drop-ins go with its environment (a drop-in naming a file that is
    // gone would keep the services from starting)
    let env = proxy_env(existing, m)?;
    out.push(HostFile {
        path: PROXY_ENV.into(),
        content: env.clone(),
        mode: 0o644,
    });
    match env {
        Some(_) => out.extend(proxy_drop_ins()),
        None => out.extend(PROXY_UNITS.iter().map(|u| gone(&proxy_drop_in(u)))),
    }
    let bundle = m.additional_trust_bundle.user_ca_bundle.trim();
    if !bundle.is_empty() {
        let certs = openssl::x509::X509::stack_from_pem(bundle.as_bytes())
            .context("additionalTrustBundle is not PEM certificates")?;
        for (i, c) in certs.iter().enumerate() {
            let pem = String::from_utf8(c.to_pem()?)?;
            out.push(file(&format!("{TRUST_DIR}/{TRUST_PREFIX}-{i}.crt"), pem));
        }
    }
    let site = m.release_registry.trim();
    if let Some(seed) = seed_release_registry.filter(|s| !site.is_empty() && *s != site) {
        out.push(file(
            RELEASE_MIRROR_CONF,
            mirrors_conf(
                "Written by imgmode post-pivot: the site's release registry (releaseRegistry).",
                &[(seed.to_string(), vec![site.to_string()])],
            ),
        ));
    } else {
        out.push(gone(RELEASE_MIRROR_CONF));
    }
    let sources = digest_sources(&m.install_config)?;
    if !sources.is_empty() {
        out.push(file(
            DIGEST_MIRRORS_CONF,
            mirrors_conf(
                "Written by imgmode post-pivot: install-config.yaml imageDigestSources.",
                &sources,
            ),
        ));
    } else {
        out.push(gone(DIGEST_MIRRORS_CONF));
    }
    Ok(out)
}

/// The node IP recert writes: the configuration's `node_ip`; else the host's first address in
/// one of `machine_networks`; else its first address. An address outside every machine
/// network is refused.
pub fn node_ip(m: &SeedReconfiguration, host_addrs: &[String]) -> Result<String> {
    let nets = &m.machine_networks;
    let inside = |ip: &str| {
        nets.is_empty()
            || nets
                .iter()
                .any(|n| imgmode_support::validate::cidr_contains(n, ip))
    };
    if !m.node_ip.is_empty() {
        if !inside(&m.node_ip) {
            bail!(
                "the configuration's node IP {} is outside machineNetwork ({}); fix install-config.yaml networking.machineNetwork",
                m.node_ip,
                nets.join(", ")
            );
        }
        return Ok(m.node_ip.clone());
    }
    host_addrs
        .iter()
        .find(|a| inside(a))
        .cloned()
        .with_context(|| {
            if host_addrs.is_empty() {
                "no global IPv4 address on this host to be the node IP; check networkConfig"
                    .to_string()
            } else {
                format!(
                    "no address of this host ({}) is in machineNetwork ({}); fix networkConfig or install-config.yaml networking.machineNetwork",
                    host_addrs.join(", "),
                    nets.join(", ")
                )
            }
        })
}

/// install-config's `fips` against the kernel's FIPS mode (which the seed's image decides):
/// a mismatch is refused before anything changes.
pub fn check_fips(install_config: &str, fips_enabled: bool) -> Result<()> {
    if install_config.trim().is_empty() {
        return Ok(());
    }
    let v: yaml_serde::Value = yaml_serde::from_str(install_config)
        .context("the configuration's install-config is not YAML")?;
    let fips = v.get("fips").and_then(|f| f.as_bool()).unwrap_or(false);
    match (fips, fips_enabled) {
        (true, false) => bail!("install-config.yaml sets fips: true and this seed's system is not in FIPS mode; install a seed made from a FIPS cluster, or remove fips"),
        (false, true) => bail!("this seed's system runs in FIPS mode and install-config.yaml does not set fips: true; set it, or install a seed made without FIPS"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconfig::{Proxy, TrustBundle};
    use std::path::Path;

    fn obj(key: &str, value: Value, rev: i64) -> EtcdObject {
        EtcdObject {
            key: key.into(),
            value,
            mod_revision: rev,
            protobuf: None,
            encrypted: None,
        }
    }

    fn seed() -> Vec<EtcdObject> {
        vec![
            obj(
                CLUSTER_VERSION,
                json!({"kind": "ClusterVersion", "spec": {"clusterID": "seed-id"},
                       "status": {"desired": {"image": "quay.io/openshift-release-dev/ocp-release@sha256:aa"}}}),
                7,
            ),
            obj(
                "/kubernetes.io/minions/node1",
                json!({"kind": "Node", "metadata": {"name": "node1", "labels": {"a": "1"}}}),
                8,
            ),
            obj(
                PROXY,
                json!({"kind": "Proxy", "metadata": {"name": "cluster"}, "spec": {"trustedCA": {"name": ""}}}),
                9,
            ),
            obj(
                CLUSTER_CONFIG,
                json!({"kind": "ConfigMap", "data": {"install-config": "seed"}}),
                10,
            ),
        ]
    }

    fn pem() -> String {
        let key = openssl::pkey::PKey::generate_ed25519().unwrap();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "site-ca").unwrap();
        let name = name.build();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, openssl::hash::MessageDigest::null()).unwrap();
        String::from_utf8(b.build().to_pem().unwrap()).unwrap()
    }

    #[test]
    fn every_cluster_setting_lands_in_its_object() {
        let bundle = pem();
        let m = SeedReconfiguration {
            cluster_id: "11111111-2222-4333-8444-555555555555".into(),
            node_labels: [("node-role.kubernetes.io/edge".to_string(), String::new())].into(),
            additional_trust_bundle: TrustBundle {
                user_ca_bundle: bundle.clone(),
            },
            install_config: "apiVersion: v1\nmetadata:\n  name: site\n".into(),
            release_registry: "mirror.site.example:5000".into(),
            ..Default::default()
        };
        let u = cluster_updates(&seed(), &m, None).unwrap();
        let get = |k: &str| u.iter().find(|o| o.key == k).unwrap();
        assert_eq!(
            get(CLUSTER_VERSION).value["spec"]["clusterID"],
            m.cluster_id
        );
        assert_eq!(get(CLUSTER_VERSION).mod_revision, 7);
        let node = get("/kubernetes.io/minions/node1");
        assert_eq!(node.value["metadata"]["labels"]["a"], "1");
        assert_eq!(
            node.value["metadata"]["labels"]["node-role.kubernetes.io/edge"],
            ""
        );
        // with the node IP, the Node's addresses are the site's (as its kubelet reports them)
        let with_ip = cluster_updates(&seed(), &m, Some("10.77.0.60")).unwrap();
        let n = with_ip
            .iter()
            .find(|o| o.key == "/kubernetes.io/minions/node1")
            .unwrap();
        assert_eq!(
            n.value["status"]["addresses"][0],
            json!({"type": "InternalIP", "address": "10.77.0.60"})
        );
        assert_eq!(
            n.value["metadata"]["labels"]["node-role.kubernetes.io/edge"],
            ""
        );
        assert_eq!(
            get(USER_CA_BUNDLE).value["data"]["ca-bundle.crt"],
            format!("{}\n", bundle.trim())
        );
        assert_eq!(get(USER_CA_BUNDLE).mod_revision, 0);
        // no proxy and the default policy (Proxyonly): the bundle is not the proxy's CA
        assert!(u.iter().all(|o| o.key != PROXY));
        let always = SeedReconfiguration {
            install_config: "apiVersion: v1\nadditionalTrustBundlePolicy: Always\n".into(),
            ..m.clone()
        };
        let u2 = cluster_updates(&seed(), &always, None).unwrap();
        let p = u2.iter().find(|o| o.key == PROXY).unwrap();
        assert_eq!(p.value["spec"]["trustedCA"]["name"], "user-ca-bundle");
        let bad = SeedReconfiguration {
            install_config: "apiVersion: v1\nadditionalTrustBundlePolicy: Sometimes\n".into(),
            ..m.clone()
        };
        let e = cluster_updates(&seed(), &bad, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("additionalTrustBundlePolicy is Sometimes"),
            "{e}"
        );
        assert_eq!(
            get(CLUSTER_CONFIG).value["data"]["install-config"],
            m.install_config
        );
        let idms = &get(RELEASE_MIRROR).value["spec"]["imageDigestMirrors"][0];
        assert_eq!(idms["source"], "quay.io");
        assert_eq!(idms["mirrors"][0], "mirror.site.example:5000");
        // the same registry as the seed's: no mirror
        let same = SeedReconfiguration {
            release_registry: "quay.io".into(),
            ..Default::default()
        };
        assert!(cluster_updates(&seed(), &same, None).unwrap().is_empty());
    }

    #[test]
    fn a_proxy_must_match_the_seeds() {
        let proxy = Proxy {
            http_proxy: "http://proxy.site:3128".into(),
            https_proxy: String::new(),
            no_proxy: ".site".into(),
        };
        let m = SeedReconfiguration {
            proxy: Some(proxy.clone()),
            ..Default::default()
        };
        let e = cluster_updates(&seed(), &m, None).unwrap_err().to_string();
        assert!(
            e.starts_with("proxy mismatch: the configuration sets a proxy"),
            "{e}"
        );
        let mut proxied = seed();
        proxied[2].value["spec"]["httpProxy"] = json!("http://proxy.seed:3128");
        let e = cluster_updates(&proxied, &SeedReconfiguration::default(), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("proxy mismatch: the seed's cluster uses a proxy"),
            "{e}"
        );
        let m = SeedReconfiguration {
            cluster_name: "site".into(),
            base_domain: "example.org".into(),
            machine_networks: vec!["10.0.2.0/24".into()],
            ..m
        };
        let u = cluster_updates(&proxied, &m, None).unwrap();
        assert_eq!(u[0].key, PROXY);
        assert_eq!(u[0].value["spec"]["httpProxy"], "http://proxy.site:3128");
        assert_eq!(u[0].value["spec"]["noProxy"], ".site");
        // the cluster's own destinations never go through the proxy (the seed's
        // install-config here names no networks)
        let internal =
            ".site,localhost,127.0.0.1,.svc,.cluster.local,api-int.site.example.org,10.0.2.0/24";
        assert_eq!(u[0].value["status"]["noProxy"], internal);
        let files = host_files(&proxied, &m).unwrap();
        assert_eq!(
            files[0].content.as_deref().unwrap(),
            format!("HTTP_PROXY=http://proxy.site:3128\nhttp_proxy=http://proxy.site:3128\nNO_PROXY={internal}\nno_proxy={internal}\n")
        );
        assert!(files[1..=PROXY_UNITS.len()].iter().all(|f| f
            .content
            .as_deref()
            .unwrap()
            .contains("EnvironmentFile=/etc/mco/proxy.env")));
        // no mirrors asked: their files go
        assert!(files[PROXY_UNITS.len() + 1..]
            .iter()
            .all(|f| f.content.is_none()));
        assert_eq!(files.len(), 3 + PROXY_UNITS.len());
    }

    #[test]
    fn trust_bundle_and_release_mirror_reach_the_host() {
        let (a, b) = (pem(), pem());
        let m = SeedReconfiguration {
            additional_trust_bundle: TrustBundle {
                user_ca_bundle: format!("{a}{b}"),
            },
            release_registry: "mirror.site.example:5000".into(),
            ..Default::default()
        };
        let files = host_files(&seed(), &m).unwrap();
        assert_eq!(files[0].content, None, "no proxy: its environment goes");
        let n = PROXY_UNITS.len();
        assert!(
            files[1..=n]
                .iter()
                .all(|f| f.content.is_none() && f.path.ends_with("10-imgmode-proxy.conf")),
            "no proxy: its drop-ins go too"
        );
        let files = &files[n..];
        assert_eq!(
            files[1].path,
            PathBuf::from(format!("{TRUST_DIR}/{TRUST_PREFIX}-0.crt"))
        );
        assert_eq!(files[1].content.as_deref(), Some(a.as_str()));
        assert_eq!(files[2].content.as_deref(), Some(b.as_str()));
        let conf = files[3].content.as_deref().unwrap();
        assert!(conf.contains("prefix = \"quay.io\""), "{conf}");
        assert!(
            conf.contains("location = \"mirror.site.example:5000\""),
            "{conf}"
        );
        let mut same = seed();
        same[0].value["status"]["desired"]["image"] = json!("mirror.site.example:5000/r@sha256:aa");
        let files = host_files(&same, &m).unwrap();
        let files = &files[n..];
        assert_eq!(files.len(), 5);
        assert!(files[3..].iter().all(|f| f.content.is_none()), "no mirror");
    }

    #[test]
    fn the_node_ip_is_the_hosts_address_in_the_machine_network() {
        let addrs = vec!["192.168.1.5".to_string(), "10.0.2.15".to_string()];
        let mut m = SeedReconfiguration::default();
        assert_eq!(node_ip(&m, &addrs).unwrap(), "192.168.1.5");
        m.machine_networks = vec!["10.0.2.0/24".into()];
        assert_eq!(node_ip(&m, &addrs).unwrap(), "10.0.2.15");
        m.machine_networks = vec!["172.16.0.0/12".into()];
        let e = node_ip(&m, &addrs).unwrap_err().to_string();
        assert!(e.contains("no address of this host (192.168.1.5, 10.0.2.15) is in machineNetwork (172.16.0.0/12)"), "{e}");
        m.node_ip = "172.16.0.9".into();
        assert_eq!(node_ip(&m, &addrs).unwrap(), "172.16.0.9");
        m.node_ip = "10.9.9.9".into();
        assert!(node_ip(&m, &addrs).is_err());
    }

    #[test]
    fn seed_decided_install_config_fields_are_kept_or_refused() {
        let seed = "apiVersion: v1\nfips: false\nnetworking:\n  clusterNetwork:\n  - cidr: 10.128.0.0/14\n    hostPrefix: 23\n  serviceNetwork:\n  - 172.30.0.0/16\n";
        // left out: the seed's stay in the cluster's record
        let m = merged_install_config(seed, "apiVersion: v1\nmetadata:\n  name: site\npullSecret: '{\"auths\":{\"r\":{\"auth\":\"c2l0ZTpzM2NyZXQ=\"}}}'\nnetworking:\n  machineNetwork:\n  - cidr: 10.0.2.0/24\n").unwrap();
        assert!(
            !m.contains("pullSecret") && !m.contains("c2l0ZTpzM2NyZXQ="),
            "{m}"
        );
        let v: yaml_serde::Value = yaml_serde::from_str(&m).unwrap();
        assert_eq!(
            v["networking"]["serviceNetwork"][0],
            yaml_serde::Value::from("172.30.0.0/16")
        );
        assert_eq!(
            v["networking"]["machineNetwork"][0]["cidr"],
            yaml_serde::Value::from("10.0.2.0/24")
        );
        assert_eq!(v["metadata"]["name"], yaml_serde::Value::from("site"));
        // repeated, or the installer's default where the seed recorded none
        merged_install_config(seed, "apiVersion: v1\nnetworking:\n  serviceNetwork:\n  - 172.30.0.0/16\n  networkType: OVNKubernetes\nplatform:\n  none: {}\nfeatureSet: Default\n").unwrap();
        for (site, field) in [
            (
                "networking:\n  serviceNetwork:\n  - 10.96.0.0/12\n",
                "networking.serviceNetwork",
            ),
            (
                "networking:\n  networkType: OpenShiftSDN\n",
                "networking.networkType",
            ),
            ("featureSet: TechPreviewNoUpgrade\n", "featureSet"),
            (
                "capabilities:\n  baselineCapabilitySet: None\n",
                "capabilities",
            ),
            ("platform:\n  baremetal: {}\n", "platform"),
        ] {
            let e = merged_install_config(seed, &format!("apiVersion: v1\n{site}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("install-config.yaml {field} is ")),
                "{e}"
            );
            assert!(e.contains("cannot change"), "{e}");
        }
    }

    #[test]
    fn install_config_digest_sources_become_mirrors() {
        let ic = "apiVersion: v1\nimageDigestSources:\n- source: quay.io/openshift-release-dev/ocp-release\n  mirrors:\n  - mirror.site:5000/ocp/release\nimageContentSources:\n- source: registry.redhat.io\n  mirrors:\n  - mirror.site:5000/rh\n";
        let m = SeedReconfiguration {
            install_config: ic.into(),
            ..Default::default()
        };
        let u = cluster_updates(&seed(), &m, None).unwrap();
        let o = u.iter().find(|o| o.key == DIGEST_MIRRORS).unwrap();
        assert_eq!(
            o.value["spec"]["imageDigestMirrors"],
            json!([{"source": "quay.io/openshift-release-dev/ocp-release", "mirrors": ["mirror.site:5000/ocp/release"]},
                   {"source": "registry.redhat.io", "mirrors": ["mirror.site:5000/rh"]}])
        );
        let files = host_files(&seed(), &m).unwrap();
        let conf = files
            .iter()
            .find(|f| f.path == Path::new(DIGEST_MIRRORS_CONF))
            .and_then(|f| f.content.clone())
            .unwrap();
        assert!(conf.contains("prefix = \"registry.redhat.io\"\nlocation = \"registry.redhat.io\"\n\n[[registry.mirror]]\nlocation = \"mirror.site:5000/rh\"\npull-from-mirror = \"digest-only\""), "{conf}");
        for (bad, want) in [
            ("imageDigestSources:\n- source: quay.io\n", "has no mirrors"),
            (
                "imageDigestSources:\n- source: \"quay.io\\\"\\n[x]\"\n  mirrors: [m.site]\n",
                "imageDigestSources[0].source",
            ),
        ] {
            let e = digest_sources(&format!("apiVersion: v1\n{bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn fips_must_match_the_seed() {
        check_fips("", false).unwrap();
        check_fips("apiVersion: v1\nfips: false\n", false).unwrap();
        check_fips("apiVersion: v1\nfips: true\n", true).unwrap();
        let e = check_fips("apiVersion: v1\nfips: true\n", false)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("install-config.yaml sets fips: true"), "{e}");
        assert!(check_fips("apiVersion: v1\n", true).is_err());
    }
}
