//! The `ibi` scenario's site settings: what the configuration gives beyond the names and keys
//! (cluster ID, node labels, proxy, trust bundle, release registry, machine network, `fips`,
//! the live system's static network), and the checks that each reached its place on the
//! installed host: the cluster's objects in etcd and the host's files.
//!
//! The seed system's cluster uses a proxy (the test cluster's first boot is given one), so its
//! seeds install only with a proxy, as lifecycle-agent requires; the site's proxy leaves the
//! scenario's registry (`10.0.2.2`, or the private network's host) out, so the live system
//! pulls from it directly.
//!
//! Host 1 runs on a private network with no DHCP server ([`crate::harness::privnet`]): its
//! live system and its installed system take static addresses from the installation config's
//! and the configuration's `networkConfig`, and the machine network is the private one.

use crate::harness::guest::{report_line, Phase};
use crate::harness::privnet;
use anyhow::{ensure, Context, Result};

/// The site's proxy (nothing listens there; every address the scenario uses is in noProxy).
pub const SITE_PROXY: &str = "http://proxy.site.invalid:3128";
const NO_PROXY: &str = "10.0.2.2,10.77.0.1,127.0.0.1,localhost,.example.org";
/// The site's release registry (the seed's is quay.io).
pub const RELEASE_MIRROR: &str = "mirror.vmtest.example:5000";
/// The live system's static address of host 1 (no DHCP on its network).
pub const LIVE_ADDRESS: &str = "10.77.0.50/24";
/// The installed system's static address of host 1, from the configuration ISO (another one
/// than the live system's, so that it cannot be a leftover of the install).
pub const INSTALLED_ADDRESS: &str = "10.77.0.60/24";
/// The MAC address of the private network's NIC (QEMU's default for a first NIC).
pub const MAC: &str = "52:54:00:12:34:56";

/// install-config.yaml's site part; `__BUNDLE__` is the trust bundle, indented.
pub fn install_config(no_dhcp: bool) -> String {
    let net = if no_dhcp {
        privnet::CIDR
    } else {
        "10.0.2.0/24"
    };
    format!("networking:\n  machineNetwork:\n  - cidr: {net}\nproxy:\n  httpProxy: {SITE_PROXY}\n  httpsProxy: {SITE_PROXY}\n  noProxy: {NO_PROXY}\nfips: false\nadditionalTrustBundle: |\n__BUNDLE__")
}

/// nmstate for the private network's NIC (found by its MAC address): `address`, DHCP off, the
/// host as gateway and DNS server.
fn network_config(address: &str) -> String {
    let (ip, prefix) = address.split_once('/').expect("an address/prefix");
    let gw = privnet::HOST_ADDR;
    format!("networkConfig:\n  interfaces:\n  - name: site0\n    type: ethernet\n    state: up\n    identifier: mac-address\n    mac-address: {MAC}\n    ipv4:\n      enabled: true\n      dhcp: false\n      address:\n      - ip: {ip}\n        prefix-length: {prefix}\n    ipv6:\n      enabled: false\n  routes:\n    config:\n    - destination: 0.0.0.0/0\n      next-hop-address: {gw}\n      next-hop-interface: site0\n  dns-resolver:\n    config:\n      server:\n      - {gw}\n")
}

/// image-based-config.yaml's site part; with `no_dhcp`, the installed system's static network.
pub fn image_based_config(host: &str, no_dhcp: bool) -> String {
    let mut s = format!(
        "clusterID: {}\nreleaseRegistry: {RELEASE_MIRROR}\nnodeLabels:\n  node-role.kubernetes.io/edge: \"\"\n  site: {host}\n",
        cluster_id(host)
    );
    if no_dhcp {
        s.push_str(&network_config(INSTALLED_ADDRESS));
    }
    s
}

/// The installation config's site part: the proxy, and with `no_dhcp` the live system's
/// static network.
pub fn installation_config(no_dhcp: bool) -> String {
    let mut s = format!(
        "proxy:\n  httpProxy: {SITE_PROXY}\n  httpsProxy: {SITE_PROXY}\n  noProxy: {NO_PROXY}\n"
    );
    if no_dhcp {
        s.push_str(&network_config(LIVE_ADDRESS));
    }
    s
}

/// The host's cluster ID: one per host, so the check sees the configuration's and not the
/// seed's.
pub fn cluster_id(host: &str) -> String {
    let n: u64 = host.bytes().map(u64::from).sum();
    format!("5eed51e0-0000-4000-8000-{n:012x}")
}

/// The installed system's report of the settings (in the booted job, after post-pivot).
pub const SCRIPT: &str = r#"for k in config.openshift.io/clusterversions/version config.openshift.io/proxies/cluster configmaps/openshift-config/user-ca-bundle config.openshift.io/imagedigestmirrorsets/imgmode-release-registry minions/; do
  # printf, not echo: dash's echo turns the JSON's escaped newlines into line breaks
  printf 'SITEOBJ %s %s\n' "$k" "$(imgmode internal test-cluster get /kubernetes.io/$k)"
done
echo "FACT proxy-env=$(yesno grep -qx 'HTTPS_PROXY=http://proxy.site.invalid:3128' /etc/mco/proxy.env)"
echo "FACT proxy-dropins=$(grep -l '^EnvironmentFile=/etc/mco/proxy.env$' /etc/systemd/system/crio.service.d/10-imgmode-proxy.conf /etc/systemd/system/kubelet.service.d/10-imgmode-proxy.conf 2>/dev/null | wc -l)"
ca=/usr/local/share/ca-certificates/openshift-config-user-ca-bundle-0.crt
body=$(grep -v -- ----- "$ca" 2>/dev/null | tr -d '\n')
store=$(tr -d '\n' < /etc/ssl/certs/ca-certificates.crt)
case "$store" in *"$body"*) instore=yes;; *) instore=no;; esac
echo "FACT trust-store=$(test -n "$body" && echo $instore || echo no-file)"
# its hash link too: found by subject in the links directory alone (no bundle file)
echo "FACT trust-hash-link=$(yesno openssl verify -no-CAfile -CApath /etc/ssl/certs "$ca")"
echo "FACT trust-dangling-links=$(find /etc/ssl/certs -xtype l | wc -l)"
echo "SITECA $body"
echo "FACT release-mirror=$(yesno grep -q 'location = "mirror.vmtest.example:5000"' /etc/containers/registries.conf.d/50-imgmode-release.conf)"
echo "FACT node-address=$(ip -4 -o addr show scope global | awk '{print $4}' | head -1)"
echo "FACT dhcp-leases=$(ls /run/systemd/netif/leases 2>/dev/null | wc -l)"
"#;

/// One object the guest printed (`SITEOBJ <key> <json>`).
fn object(results: &str, key: &str) -> Result<serde_json::Value> {
    let line = report_line(results, &format!("SITEOBJ {key} "))
        .with_context(|| format!("the installed system printed no {key}"))?;
    serde_json::from_str(line)
        .with_context(|| format!("/kubernetes.io/{key} is not in etcd: {line}"))
}

/// Every site setting in its place on the installed host `host` (whose report is `b` and
/// `results`); `ca` is the trust bundle the configuration gave.
pub(crate) fn check(host: &str, b: &Phase, results: &str, ca: &str, no_dhcp: bool) -> Result<()> {
    let cv = object(results, "config.openshift.io/clusterversions/version")?;
    ensure!(
        cv["spec"]["clusterID"] == cluster_id(host).as_str(),
        "{host}: ClusterVersion's clusterID is {}, the configuration's is {}",
        cv["spec"]["clusterID"],
        cluster_id(host)
    );
    let nodes = object(results, "minions/")?;
    let [node] = nodes.as_array().map(Vec::as_slice).unwrap_or_default() else {
        anyhow::bail!("{host}: etcd holds {nodes} as nodes; a single-node cluster has one");
    };
    let labels = &node["metadata"]["labels"];
    ensure!(
        labels["node-role.kubernetes.io/edge"] == "" && labels["site"] == host,
        "{host}: the Node's labels are {labels}, without the configuration's nodeLabels"
    );
    let ip = node["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
        .and_then(|x| x["address"].as_str())
        .unwrap_or_default();
    let host_ip = b.fact("node-address").split('/').next().unwrap_or_default();
    let (net, want) = if no_dhcp {
        (
            privnet::CIDR,
            INSTALLED_ADDRESS.split('/').next().unwrap_or_default(),
        )
    } else {
        ("10.0.2.0/24", "10.0.2.15")
    };
    ensure!(
        ip == host_ip && ip == want,
        "{host}: the Node's InternalIP is {ip:?}; the host's address in machineNetwork {net} is {host_ip:?}, expected {want}"
    );
    if no_dhcp {
        ensure!(
            b.fact("dhcp-leases") == "0",
            "{host}: the installed system holds {} DHCP lease(s) on a network without DHCP",
            b.fact("dhcp-leases")
        );
    }
    let proxy = object(results, "config.openshift.io/proxies/cluster")?;
    ensure!(
        proxy["spec"]["httpProxy"] == SITE_PROXY
            && proxy["spec"]["noProxy"] == NO_PROXY
            && proxy["spec"]["trustedCA"]["name"] == "user-ca-bundle",
        "{host}: the cluster's Proxy is {proxy}, not the configuration's proxy and trust bundle"
    );
    let bundle = object(results, "configmaps/openshift-config/user-ca-bundle")?;
    ensure!(
        bundle["data"]["ca-bundle.crt"].as_str().map(str::trim) == Some(ca.trim()),
        "{host}: openshift-config/user-ca-bundle does not hold the configuration's additionalTrustBundle: {bundle}"
    );
    let idms = object(
        results,
        "config.openshift.io/imagedigestmirrorsets/imgmode-release-registry",
    )?;
    let m = &idms["spec"]["imageDigestMirrors"][0];
    ensure!(
        m["source"] == "quay.io" && m["mirrors"][0] == RELEASE_MIRROR,
        "{host}: the release registry's ImageDigestMirrorSet is {idms}"
    );
    let body: String = ca.lines().filter(|l| !l.starts_with("-----")).collect();
    ensure!(
        report_line(results, "SITECA ").map(str::trim) == Some(body.trim()),
        "{host}: the host's trust store file is not the configuration's trust bundle"
    );
    for (fact, want) in [
        ("proxy-env", "yes"),
        ("proxy-dropins", "2"),
        ("trust-store", "yes"),
        ("trust-hash-link", "yes"),
        ("trust-dangling-links", "0"),
        ("release-mirror", "yes"),
    ] {
        ensure!(
            b.fact(fact) == want,
            "{host}: the installed system: {fact} is {:?}, expected {want:?}",
            b.fact(fact)
        );
    }
    Ok(())
}
