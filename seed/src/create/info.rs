//! The seed cluster info (`manifest.json` and the seed's cluster-info label), gathered from
//! etcd's objects and the seed system.

use super::CreateOpts;
use crate::manifest::{AdditionalTrustBundle, SeedClusterInfo};
use anyhow::{Context, Result};
use imgmode_recert::etcd::EtcdObject;
use imgmode_support::cmd::Run;
use std::path::Path;

fn find<'a>(objects: &'a [EtcdObject], key: &str) -> Option<&'a serde_json::Value> {
    objects.iter().find(|o| o.key == key).map(|o| &o.value)
}

fn strings(v: &serde_json::Value, f: impl Fn(&serde_json::Value) -> Option<&str>) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(&f).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The ClusterVersion's desired version and the registry of its release image.
fn cluster_version(objects: &[EtcdObject]) -> Result<(String, String)> {
    let cv = find(objects, crate::site::CLUSTER_VERSION)
        .context("etcd has no ClusterVersion (config.openshift.io/clusterversions/version)")?;
    let version = cv["status"]["desired"]["version"]
        .as_str()
        .context("the ClusterVersion has no status.desired.version")?
        .to_string();
    let release_registry = crate::site::seed_release_registry(objects).unwrap_or_default();
    Ok((version, release_registry))
}

/// The install-config of `kube-system/cluster-config-v1` (null when there is none).
fn install_config(objects: &[EtcdObject]) -> yaml_serde::Value {
    find(
        objects,
        "/kubernetes.io/configmaps/kube-system/cluster-config-v1",
    )
    .and_then(|c| c["data"]["install-config"].as_str())
    .and_then(|t| yaml_serde::from_str(t).ok())
    .unwrap_or_default()
}

/// The install-config's `networking.machineNetwork` CIDRs.
fn machine_networks(install_config: &yaml_serde::Value) -> Vec<String> {
    install_config
        .get("networking")
        .and_then(|n| n.get("machineNetwork"))
        .and_then(|m| m.as_sequence())
        .map(|s| {
            s.iter()
                .filter_map(|e| e.get("cidr")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The device of `/var/lib/containers` when it is a filesystem of its own ("" otherwise).
fn container_storage_source(sysroot: &Path) -> String {
    let p = sysroot.join("var/lib/containers");
    let separate = Run::new("mountpoint").arg("-q").arg(&p).succeeds();
    if separate {
        Run::new("findmnt")
            .args(["-n", "-o", "SOURCE", "--target"])
            .arg(&p)
            .read()
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    } else {
        String::new()
    }
}

/// The common name of the ingress operator's router CA ("" when there is none).
fn ingress_certificate_cn(objects: &[EtcdObject]) -> String {
    objects
        .iter()
        .find(|o| o.key == "/kubernetes.io/secrets/openshift-ingress-operator/router-ca")
        .and_then(|o| o.value["data"]["tls.crt"].as_str())
        .and_then(|b| imgmode_recert::text::b64_decode(b).ok())
        .and_then(|pem| openssl::x509::X509::from_pem(&pem).ok())
        .and_then(|c| {
            c.subject_name()
                .entries_by_nid(openssl::nid::Nid::COMMONNAME)
                .next()
                .map(|e| String::from_utf8_lossy(e.data().as_slice()).into_owned())
        })
        .unwrap_or_default()
}

/// The seed cluster info, from etcd and the system.
pub fn gather_cluster_info(o: &CreateOpts, objects: &[EtcdObject]) -> Result<SeedClusterInfo> {
    let (name, domain, _) = imgmode_recert::etcd::cluster_identity(objects).context(
        "etcd has no kube-system/cluster-config-v1 install-config naming the cluster and base domain",
    )?;
    let (hostname, ip) = imgmode_recert::etcd::node_identity(objects)?
        .context("etcd has no node object under /kubernetes.io/minions/")?;
    let (version, release_registry) = cluster_version(objects)?;
    let proxy = find(objects, crate::site::PROXY);
    let has_proxy = crate::site::seed_has_proxy(objects);
    let network = find(
        objects,
        "/kubernetes.io/config.openshift.io/networks/cluster",
    );
    let install_config = install_config(objects);
    let fips_kernel = imgmode_support::host::fips_enabled();
    let has_fips = install_config
        .get("fips")
        .and_then(|f| f.as_bool())
        .unwrap_or(fips_kernel);
    let user_ca = find(
        objects,
        "/kubernetes.io/configmaps/openshift-config/user-ca-bundle",
    )
    .is_some_and(|c| {
        c["data"]["ca-bundle.crt"]
            .as_str()
            .is_some_and(|s| !s.trim().is_empty())
    });
    let registries = std::fs::read_to_string(o.sysroot.join("etc/containers/registries.conf"))
        .unwrap_or_default();
    Ok(SeedClusterInfo {
        seed_cluster_ocp_version: version,
        base_domain: domain,
        cluster_name: name,
        node_ip: ip.clone().unwrap_or_default(),
        node_ips: ip.into_iter().collect(),
        release_registry,
        mirror_registry_configured: registries.contains("[[registry.mirror]]"),
        sno_hostname: hostname,
        recert_image_pull_spec: o.tool_version.clone(),
        has_proxy,
        cluster_network_cidr: network
            .map(|n| strings(&n["spec"]["clusterNetwork"], |e| e["cidr"].as_str()))
            .unwrap_or_default(),
        service_network_cidr: network
            .map(|n| strings(&n["spec"]["serviceNetwork"], |e| e.as_str()))
            .unwrap_or_default(),
        has_fips,
        additional_trust_bundle: Some(AdditionalTrustBundle {
            has_user_ca_bundle: user_ca,
            proxy_configmap_name: proxy
                .and_then(|p| p["spec"]["trustedCA"]["name"].as_str())
                .unwrap_or_default()
                .to_string(),
        }),
        container_storage_mountpoint_target: container_storage_source(&o.sysroot),
        ingress_certificate_cn: ingress_certificate_cn(objects),
        machine_networks: machine_networks(&install_config),
    })
}
