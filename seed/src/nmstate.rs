//! The part of nmstate (`networkConfig` of ImageBasedConfig and ImageBasedInstallationConfig)
//! that a single-node host needs, written as systemd-networkd files (the network stack of the
//! base image): ethernet interfaces matched by name or MAC address, static IPv4/IPv6 addresses
//! or DHCP, routes, and DNS servers. Anything else (bonds, VLANs, OVS bridges) is refused by
//! name instead of being ignored.

use anyhow::{bail, Context, Result};
use serde_yaml::Value;

/// One `.network` file: (file name, content).
pub type NetworkFile = (String, String);

fn seq<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(|s| s.as_sequence())
        .map(|s| s.as_slice())
        .unwrap_or(&[])
}

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Translate nmstate YAML into `.network` files (`10-imgmode-<interface>.network`, so they win
/// over the image's DHCP default).
pub fn to_networkd(nmstate: &str) -> Result<Vec<NetworkFile>> {
    if nmstate.trim().is_empty() {
        return Ok(vec![]);
    }
    let v: Value = serde_yaml::from_str(nmstate).context("networkConfig is not YAML")?;
    let dns: Vec<String> = v
        .get("dns-resolver")
        .and_then(|d| d.get("config"))
        .map(|c| {
            seq(c, "server")
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let routes: Vec<Value> = v
        .get("routes")
        .map(|r| seq(r, "config").to_vec())
        .unwrap_or_default();
    let mut out = vec![];
    for (i, iface) in seq(&v, "interfaces").iter().enumerate() {
        let name = text(iface, "name")
            .with_context(|| format!("networkConfig interfaces[{i}] has no name"))?;
        let kind = text(iface, "type").unwrap_or_else(|| "ethernet".into());
        if kind != "ethernet" {
            bail!("networkConfig interface {name}: type {kind} is not supported by imgmode (ethernet only)");
        }
        if text(iface, "state").as_deref() == Some("absent") {
            continue;
        }
        let mut m = format!(
            "# Written by imgmode post-pivot from networkConfig (nmstate).\n[Match]\nName={name}\n"
        );
        if let Some(mac) = text(iface, "mac-address") {
            m.push_str(&format!("MACAddress={}\n", mac.to_ascii_lowercase()));
        }
        m.push_str("\n[Network]\n");
        let mut dhcp = vec![];
        let mut addresses = vec![];
        for fam in ["ipv4", "ipv6"] {
            let Some(f) = iface.get(fam) else { continue };
            if f.get("enabled").and_then(|e| e.as_bool()) == Some(false) {
                continue;
            }
            let auto = if fam == "ipv4" { "dhcp" } else { "autoconf" };
            if f.get(auto).and_then(|d| d.as_bool()) == Some(true)
                || (fam == "ipv6" && f.get("dhcp").and_then(|d| d.as_bool()) == Some(true))
            {
                dhcp.push(fam);
            }
            for a in seq(f, "address") {
                let ip = text(a, "ip").with_context(|| {
                    format!("networkConfig interface {name}: an {fam} address has no ip")
                })?;
                let len = text(a, "prefix-length").with_context(|| {
                    format!("networkConfig interface {name}: address {ip} has no prefix-length")
                })?;
                ip.parse::<std::net::IpAddr>().with_context(|| {
                    format!("networkConfig interface {name}: {ip:?} is not an IP address")
                })?;
                addresses.push(format!("{ip}/{len}"));
            }
        }
        match (dhcp.contains(&"ipv4"), dhcp.contains(&"ipv6")) {
            (true, true) => m.push_str("DHCP=yes\n"),
            (true, false) => m.push_str("DHCP=ipv4\n"),
            (false, true) => m.push_str("DHCP=ipv6\n"),
            (false, false) => m.push_str("DHCP=no\n"),
        }
        for a in &addresses {
            m.push_str(&format!("Address={a}\n"));
        }
        for d in &dns {
            m.push_str(&format!("DNS={d}\n"));
        }
        for r in routes
            .iter()
            .filter(|r| text(r, "next-hop-interface").is_none_or(|n| n == name))
        {
            let dest =
                text(r, "destination").context("networkConfig: a route has no destination")?;
            let gw = text(r, "next-hop-address")
                .context("networkConfig: a route has no next-hop-address")?;
            m.push_str(&format!("\n[Route]\nDestination={dest}\nGateway={gw}\n"));
            if let Some(metric) = text(r, "metric") {
                m.push_str(&format!("Metric={metric}\n"));
            }
        }
        out.push((format!("10-imgmode-{name}.network"), m));
    }
    for key in ["ovs-db", "ovn"] {
        if v.get(key).is_some() {
            bail!("networkConfig: {key} is not supported by imgmode");
        }
    }
    Ok(out)
}

/// The first static IPv4 address of the configuration (the node IP), if any.
pub fn first_static_ipv4(files: &[NetworkFile]) -> Option<String> {
    files.iter().find_map(|(_, c)| {
        c.lines().find_map(|l| {
            let a = l.strip_prefix("Address=")?;
            let ip = a.split('/').next()?;
            ip.parse::<std::net::Ipv4Addr>()
                .ok()
                .map(|_| ip.to_string())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_addresses_routes_and_dns() {
        let y = "interfaces:\n- name: enp1s0\n  type: ethernet\n  state: up\n  mac-address: 52:54:00:AA:BB:CC\n  ipv4:\n    enabled: true\n    dhcp: false\n    address:\n    - ip: 192.168.111.80\n      prefix-length: 24\n  ipv6:\n    enabled: false\ndns-resolver:\n  config:\n    server:\n    - 192.168.111.1\nroutes:\n  config:\n  - destination: 0.0.0.0/0\n    next-hop-address: 192.168.111.1\n    next-hop-interface: enp1s0\n    table-id: 254\n";
        let f = to_networkd(y).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(first_static_ipv4(&f).as_deref(), Some("192.168.111.80"));
        assert_eq!(f[0].0, "10-imgmode-enp1s0.network");
        let c = &f[0].1;
        for want in [
            "Name=enp1s0\n",
            "MACAddress=52:54:00:aa:bb:cc\n",
            "DHCP=no\n",
            "Address=192.168.111.80/24\n",
            "DNS=192.168.111.1\n",
            "[Route]\nDestination=0.0.0.0/0\nGateway=192.168.111.1\n",
        ] {
            assert!(c.contains(want), "{want:?} missing in:\n{c}");
        }
    }

    #[test]
    fn dhcp_empty_and_unsupported() {
        let f =
            to_networkd("interfaces:\n- name: eth0\n  ipv4:\n    enabled: true\n    dhcp: true\n")
                .unwrap();
        assert!(f[0].1.contains("DHCP=ipv4\n"));
        assert!(to_networkd("").unwrap().is_empty());
        let e = to_networkd("interfaces:\n- name: bond0\n  type: bond\n").unwrap_err();
        assert!(e.to_string().contains("type bond is not supported"), "{e}");
        let e = to_networkd("interfaces:\n- name: e\n  ipv4:\n    address:\n    - ip: 10.0.0.300\n      prefix-length: 8\n").unwrap_err();
        assert!(e.to_string().contains("is not an IP address"), "{e}");
    }
}
