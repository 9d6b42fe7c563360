//! The part of nmstate (`networkConfig` of ImageBasedConfig and ImageBasedInstallationConfig)
//! that a single-node host needs, written as systemd-networkd files (the network stack of the
//! base image): ethernet interfaces matched by name, by name and MAC address, or by MAC address
//! alone (`identifier: mac-address`), static IPv4/IPv6 addresses
//! or DHCP, routes, and DNS servers. Anything else (bonds, VLANs, OVS bridges) is refused by
//! name instead of being ignored.

use anyhow::{bail, Context, Result};
use imgmode_support::validate as v;
use yaml_serde::Value;

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
    let v: Value = yaml_serde::from_str(nmstate).context("networkConfig is not YAML")?;
    if v.is_null() {
        return Ok(vec![]);
    }
    if !v.is_mapping() {
        bail!("networkConfig is not an nmstate mapping (interfaces, dns-resolver, routes)");
    }
    for key in ["ovs-db", "ovn"] {
        if v.get(key).is_some() {
            bail!("networkConfig: {key} is not supported by imgmode");
        }
    }
    known_keys(
        "networkConfig",
        &v,
        &["interfaces", "dns-resolver", "routes"],
    )?;
    if let Some(d) = v.get("dns-resolver") {
        known_keys("networkConfig dns-resolver", d, &["config"])?;
        if let Some(c) = d.get("config") {
            known_keys("networkConfig dns-resolver config", c, &["server"])?;
        }
    }
    if let Some(r) = v.get("routes") {
        known_keys("networkConfig routes", r, &["config"])?;
        for (i, route) in seq(r, "config").iter().enumerate() {
            known_keys(
                &format!("networkConfig routes config[{i}]"),
                route,
                &[
                    "destination",
                    "next-hop-address",
                    "next-hop-interface",
                    "metric",
                    "table-id",
                ],
            )?;
            if let Some(n) = text(route, "next-hop-interface") {
                let named = seq(&v, "interfaces")
                    .iter()
                    .any(|i| text(i, "name").as_deref() == Some(n.as_str()));
                if !named {
                    bail!(
                        "networkConfig routes config[{i}]: next-hop-interface {} is not one of the interfaces; add it under interfaces or drop the route",
                        v::shown(&n)
                    );
                }
            }
        }
    }
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
    for d in &dns {
        v::field("networkConfig", "dns-resolver server", d, v::ip)?;
    }
    let mut out = vec![];
    for (i, iface) in seq(&v, "interfaces").iter().enumerate() {
        out.extend(interface_file(i, iface, &dns, &routes)?);
    }
    Ok(out)
}

/// Refuse any key of the mapping `v` that imgmode does not apply, by name (a setting written
/// and silently ignored is worse than one refused).
fn known_keys(what: &str, v: &Value, allowed: &[&str]) -> Result<()> {
    if let Some(k) = imgmode_support::yaml::unknown_key(v, allowed) {
        bail!(
            "{what}: {} is not supported by imgmode (it applies {}); remove it",
            v::shown(k),
            allowed.join(", ")
        );
    }
    Ok(())
}

/// The `[Match]` section of interface `name`: by name, by name and MAC address, or (nmstate's
/// `identifier: mac-address`) by MAC address alone, the name then only naming the profile.
fn match_section(name: &str, iface: &Value) -> Result<String> {
    // nmstate's `identifier: mac-address`: the MAC address finds the interface and the name
    // only names the profile (the kernel's name need not be known)
    let by_mac = match text(iface, "identifier").as_deref() {
        None | Some("name") => false,
        Some("mac-address") => true,
        Some(other) => bail!(
            "networkConfig interface {name}: identifier {} is not name or mac-address",
            v::shown(other)
        ),
    };
    let mut m = String::from("# Written by imgmode from networkConfig (nmstate).\n[Match]\n");
    if by_mac {
        // bridges, bonds and VLANs can carry the NIC's MAC address: the NIC only
        m.push_str("Type=ether\n");
    } else {
        m.push_str(&format!("Name={name}\n"));
    }
    match text(iface, "mac-address") {
        Some(mac) => {
            v::field("networkConfig", "mac-address", &mac, mac_address)?;
            m.push_str(&format!("MACAddress={}\n", mac.to_ascii_lowercase()));
        }
        None if by_mac => {
            bail!("networkConfig interface {name}: identifier mac-address needs a mac-address")
        }
        None => {}
    }
    Ok(m)
}

/// One interface's `.network` file; `None` for an interface that is `absent`.
fn interface_file(
    i: usize,
    iface: &Value,
    dns: &[String],
    routes: &[Value],
) -> Result<Option<NetworkFile>> {
    let name = text(iface, "name")
        .with_context(|| format!("networkConfig interfaces[{i}] has no name"))?;
    known_keys(
        &format!("networkConfig interfaces[{i}]"),
        iface,
        &[
            "name",
            "type",
            "state",
            "identifier",
            "mac-address",
            "ipv4",
            "ipv6",
        ],
    )?;
    // it names a file and goes into one
    v::field("networkConfig", "interface name", &name, interface_name)?;
    let kind = text(iface, "type").unwrap_or_else(|| "ethernet".into());
    if kind != "ethernet" {
        bail!("networkConfig interface {name}: type {kind} is not supported by imgmode (ethernet only)");
    }
    if text(iface, "state").as_deref() == Some("absent") {
        return Ok(None);
    }
    let mut m = match_section(&name, iface)?;
    m.push_str("\n[Network]\n");
    let mut dhcp = vec![];
    let mut addresses = vec![];
    for fam in ["ipv4", "ipv6"] {
        let Some(f) = iface.get(fam) else { continue };
        let what = format!("networkConfig interface {name} {fam}");
        known_keys(&what, f, &["enabled", "dhcp", "autoconf", "address"])?;
        for a in seq(f, "address") {
            known_keys(&format!("{what} address"), a, &["ip", "prefix-length"])?;
        }
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
            let addr = ip.parse::<std::net::IpAddr>().with_context(|| {
                format!("networkConfig interface {name}: {ip:?} is not an IP address")
            })?;
            let n: u32 = len.parse().map_err(|_| {
                anyhow::anyhow!(
                    "networkConfig interface {name}: address {ip} has the prefix-length {}, not a number",
                    v::shown(&len)
                )
            })?;
            v::prefix_length(addr.is_ipv6(), n).map_err(|p| {
                anyhow::anyhow!(
                    "networkConfig interface {name}: address {ip} has a prefix-length that {p}"
                )
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
    for d in dns {
        m.push_str(&format!("DNS={d}\n"));
    }
    for r in routes
        .iter()
        .filter(|r| text(r, "next-hop-interface").is_none_or(|n| n == name))
    {
        let dest = text(r, "destination").context("networkConfig: a route has no destination")?;
        let gw = text(r, "next-hop-address")
            .context("networkConfig: a route has no next-hop-address")?;
        v::field("networkConfig", "route destination", &dest, v::cidr)?;
        v::field("networkConfig", "route next-hop-address", &gw, v::ip)?;
        if let Some(metric) = text(r, "metric") {
            v::field("networkConfig", "route metric", &metric, |m| {
                m.parse::<u32>()
                    .map(|_| ())
                    .map_err(|_| "is not a number".to_string())
            })?;
        }
        m.push_str(&format!("\n[Route]\nDestination={dest}\nGateway={gw}\n"));
        if let Some(metric) = text(r, "metric") {
            m.push_str(&format!("Metric={metric}\n"));
        }
        if let Some(table) = text(r, "table-id") {
            v::field("networkConfig", "route table-id", &table, |t| {
                match t.parse::<u32>() {
                    Ok(n) if n > 0 => Ok(()),
                    _ => Err("is not a routing table number (1 to 4294967295; 254 is main)".into()),
                }
            })?;
            m.push_str(&format!("Table={table}\n"));
        }
    }
    Ok(Some((format!("10-imgmode-{name}.network"), m)))
}

/// A network interface name as the kernel allows it (1 to 15 bytes, no '/', no white space
/// or control characters); it also names the `.network` file.
fn interface_name(s: &str) -> Result<(), v::Problem> {
    v::file_name(s)?;
    if s.len() > 15 {
        return Err(format!(
            "is {} bytes long; an interface name has at most 15",
            s.len()
        ));
    }
    if s.chars().any(char::is_whitespace) || s.contains(':') {
        return Err("has white space or ':', which interface names cannot hold".into());
    }
    Ok(())
}

/// `52:54:00:AA:BB:CC`.
fn mac_address(s: &str) -> Result<(), v::Problem> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        Ok(())
    } else {
        Err("is not a MAC address (six pairs of hexadecimal digits, ':' between)".into())
    }
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
            "[Route]\nDestination=0.0.0.0/0\nGateway=192.168.111.1\nTable=254\n",
        ] {
            assert!(c.contains(want), "{want:?} missing in:\n{c}");
        }
    }

    #[test]
    fn an_interface_found_by_its_mac_address_alone() {
        let y = "interfaces:\n- name: site0\n  identifier: mac-address\n  mac-address: 52:54:00:12:34:56\n  ipv4:\n    enabled: true\n    address:\n    - ip: 10.0.2.50\n      prefix-length: 24\n";
        let f = to_networkd(y).unwrap();
        assert_eq!(f[0].0, "10-imgmode-site0.network");
        assert!(
            f[0].1
                .contains("[Match]\nType=ether\nMACAddress=52:54:00:12:34:56\n"),
            "{}",
            f[0].1
        );
        assert!(!f[0].1.contains("Name="), "{}", f[0].1);
        let e = to_networkd("interfaces:\n- name: site0\n  identifier: mac-address\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("identifier mac-address needs a mac-address"),
            "{e}"
        );
        let e = to_networkd("interfaces:\n- name: site0\n  identifier: path\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("identifier \"path\" is not name or mac-address"),
            "{e}"
        );
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

    #[test]
    fn values_that_would_reach_files_unchecked_are_refused() {
        let iface = |name: &str, ip: &str, len: &str| {
            format!("interfaces:\n- name: {name:?}\n  ipv4:\n    address:\n    - ip: {ip}\n      prefix-length: {len}\n")
        };
        for (yaml, want) in [
            (iface("eth0\nName=*", "10.0.0.2", "24"), "interface name"),
            (iface("../../x", "10.0.0.2", "24"), "interface name"),
            (iface("averyveryverylongname", "10.0.0.2", "24"), "at most 15"),
            (
                iface("eth0", "10.0.0.2", "77"),
                "is longer than an IPv4 prefix can be (0 to 32",
            ),
            (iface("eth0", "fd00::2", "129"), "0 to 128"),
            (
                "interfaces:\n- name: eth0\ndns-resolver:\n  config:\n    server:\n    - \"1.1.1.1\\nDNS=evil\"\n".to_string(),
                "dns-resolver server",
            ),
            (
                "interfaces:\n- name: eth0\nroutes:\n  config:\n  - destination: 0.0.0.0/99\n    next-hop-address: 10.0.0.1\n".to_string(),
                "route destination",
            ),
            (
                "interfaces:\n- name: eth0\n  mac-address: zz\n".to_string(),
                "mac-address",
            ),
        ] {
            let e = format!("{:#}", to_networkd(&yaml).unwrap_err());
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }
}
