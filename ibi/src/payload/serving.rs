//! The payload registry as the cluster's: reachable from the other nodes, and how a new node
//! installs from it.
//!
//! An installed host's registry listens on every address on port 22625 (the enhancement's
//! host network port; its `api-int` name is what the cluster's mirrors use). Its certificate
//! must name what other nodes dial, so before each start of the registry [`ensure_tls`]
//! (`imgmode payload tls`, run by [`TLS_UNIT`](crate::payload::registry::TLS_UNIT)) compares
//! the certificate's names with the host's: localhost, its host name, every global address
//! and, once post-pivot has named the cluster, `api-int.<cluster>.<baseDomain>`; when one is
//! missing it issues the certificate again under the host's own registry CA, so the other
//! nodes' trust in that CA holds. post-pivot sets the addresses and the cluster's name after
//! the registry first started, so its drop-in restarts the registry when it is done.
//!
//! [`join_config`] (`imgmode payload join-config`) writes what a new node's installation
//! config needs to install from this host with no other network: `imageDigestSources`
//! mirroring every repository the host holds to `<address>:22625`, and the registry's CA as
//! `additionalTrustBundle`; its pull secret needs the credentials of `localhost:22625` for
//! that address too.

use crate::payload::registry::{RegistrySetup, CA_KEY, CONF_DIR, LOOPBACK_NAMES, PORT, UNIT};
use crate::pki::{pem_cert, pem_key, server_cert, Signer};
use anyhow::{bail, ensure, Context, Result};
use imgmode_image::mirror::Payload;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;

/// What names this host: localhost and the loopback addresses, the host name, every global
/// address `addresses` lists, and `api-int.<cluster>.<baseDomain>` when `reconfigured` (post-
/// pivot's `reconfigured.json`) exists.
pub fn host_names(
    hostname: &str,
    addresses: &[String],
    reconfigured: &Path,
) -> Result<BTreeSet<String>> {
    let mut names: BTreeSet<String> = LOOPBACK_NAMES.iter().map(|n| n.to_string()).collect();
    let h = hostname.trim();
    if !h.is_empty() && h != "localhost" && h != "(none)" {
        names.insert(h.to_string());
    }
    names.extend(addresses.iter().cloned());
    if let Ok(text) = std::fs::read(reconfigured) {
        let r: imgmode_seed::postpivot::Reconfigured = serde_json::from_slice(&text)
            .with_context(|| format!("{} is malformed", reconfigured.display()))?;
        ensure!(
            !r.cluster_name.is_empty() && !r.base_domain.is_empty(),
            "{} names no cluster (clusterName and baseDomain)",
            reconfigured.display()
        );
        names.insert(format!("api-int.{}.{}", r.cluster_name, r.base_domain));
    }
    Ok(names)
}

/// The host's global addresses (`ip -j addr show scope global`), IPv4 and IPv6.
pub fn global_addresses() -> Result<Vec<String>> {
    let out = imgmode_support::cmd::Run::new("ip")
        .args(["-j", "addr", "show", "scope", "global"])
        .read()
        .context("listing the host's addresses (ip, from iproute2)")?;
    parse_addresses(&out)
}

fn parse_addresses(json: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(json).context("ip -j addr: not JSON")?;
    let mut out = vec![];
    for link in v.as_array().map(Vec::as_slice).unwrap_or_default() {
        for a in link["addr_info"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if let Some(ip) = a["local"].as_str() {
                if a["scope"] == "global" && ip.parse::<std::net::IpAddr>().is_ok() {
                    out.push(ip.to_string());
                }
            }
        }
    }
    Ok(out)
}

/// The DNS names and IP addresses the certificate `pem` names.
pub fn cert_names(pem: &str) -> Result<BTreeSet<String>> {
    let cert = openssl::x509::X509::from_pem(pem.as_bytes()).context("not a PEM certificate")?;
    let mut names = BTreeSet::new();
    for n in cert.subject_alt_names().iter().flatten() {
        if let Some(d) = n.dnsname() {
            names.insert(d.to_string());
        } else if let Some(ip) = n.ipaddress() {
            let addr = match ip.len() {
                4 => std::net::IpAddr::from(<[u8; 4]>::try_from(ip)?),
                16 => std::net::IpAddr::from(<[u8; 16]>::try_from(ip)?),
                _ => continue,
            };
            names.insert(addr.to_string());
        }
    }
    Ok(names)
}

/// What [`ensure_tls`] found or did.
#[derive(Debug, Clone, Serialize)]
pub struct Tls {
    /// The names the certificate holds now.
    pub names: BTreeSet<String>,
    /// Whether it was issued again.
    pub issued: bool,
}

/// The registry's certificate in `root`/[`CONF_DIR`] names every one of `want`: as it is, or
/// issued again (a new key) under the host's registry CA for `want`.
pub fn ensure_tls(root: &Path, want: &BTreeSet<String>) -> Result<Tls> {
    let dir = root.join(CONF_DIR);
    let setup = served(root)?;
    let current = cert_names(&setup.cert_pem)
        .with_context(|| format!("{}", dir.join("tls.crt").display()))?;
    if want.is_subset(&current) {
        return Ok(Tls {
            names: current,
            issued: false,
        });
    }
    let ca_key = dir.join(CA_KEY);
    let Some(ca_key_pem) = &setup.ca_key_pem else {
        let missing: Vec<&String> = want.difference(&current).collect();
        bail!(
            "the payload registry's certificate does not name {missing:?} and {} is missing, so it cannot be issued again: this host's registry was installed without its CA's key (an installation ISO's live system keeps none); reinstall the host from an installation ISO of this imgmode",
            ca_key.display()
        );
    };
    let signer = Signer {
        key: openssl::pkey::PKey::private_key_from_pem(ca_key_pem.as_bytes())
            .with_context(|| format!("{} is not a PEM key", ca_key.display()))?,
        cert: openssl::x509::X509::from_pem(setup.ca_pem.as_bytes()).with_context(|| {
            format!("{} is not a PEM certificate", dir.join("ca.crt").display())
        })?,
    };
    // the key's pair: a CA that does not sign with this key would issue an untrusted certificate
    ensure!(
        signer.cert.public_key()?.public_eq(&signer.key),
        "{} is not the key of {}",
        ca_key.display(),
        dir.join("ca.crt").display()
    );
    let names: Vec<&str> = want.iter().map(String::as_str).collect();
    let cn = want
        .iter()
        .find(|n| n.starts_with("api-int."))
        .map_or("localhost", String::as_str);
    let server = server_cert(&signer, cn, &names, 3650)?;
    // the key first: the registry is not running (this runs before it starts)
    imgmode_support::fs::write_atomic(&dir.join("tls.key"), pem_key(&server)?.as_bytes(), 0o600)?;
    imgmode_support::fs::write_atomic(&dir.join("tls.crt"), pem_cert(&server)?.as_bytes(), 0o644)?;
    Ok(Tls {
        names: want.clone(),
        issued: true,
    })
}

/// The registry's TLS and credentials this host serves with ([`RegistrySetup::read`]).
fn served(root: &Path) -> Result<RegistrySetup> {
    RegistrySetup::read(root)
        .context("this host serves no payload (imgmode ibi install writes the registry's files)")
}

/// A registry address as other nodes dial it: `host` or `host:port` (port 22625 when none).
pub fn registry_address(registry: &str) -> Result<(String, String)> {
    let r = registry.trim();
    ensure!(
        !r.is_empty() && !r.contains(['/', ' ', '@']),
        "--registry {registry:?}: give the host name or address other nodes reach this one by, e.g. api-int.<cluster>.<domain> or 192.0.2.10, optionally with :{PORT}"
    );
    // an IPv6 address is written in brackets when a port follows: [2001:db8::1]:22625
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .with_context(|| format!("--registry {registry:?}: no closing ]"))?;
        (h.to_string(), after.strip_prefix(':').map(str::to_string))
    } else if r.matches(':').count() > 1 {
        (r.to_string(), None)
    } else {
        match r.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.to_string())),
            None => (r.to_string(), None),
        }
    };
    // it reaches the printed config (in comments too): a DNS name or an address, nothing else
    imgmode_support::validate::field("--registry", "host", &host, imgmode_support::validate::host)?;
    let port = port.unwrap_or_else(|| PORT.to_string());
    ensure!(
        port.parse::<u16>().is_ok_and(|p| p != 0),
        "--registry {registry:?}: {port:?} is not a port"
    );
    let dial = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok((host, dial))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinConfig {
    image_digest_sources: Vec<crate::config::ImageDigestSource>,
    additional_trust_bundle: String,
}

/// The installation config's part for a node that installs from this host's registry at
/// `registry` (see the module's documentation): YAML, with comments saying what else it needs.
/// Refused when the registry's certificate (in `root`) does not name the host `registry` names,
/// as a pull from the new node would be.
pub fn join_config(root: &Path, held: &Payload, registry: &str) -> Result<String> {
    let (host, dial) = registry_address(registry)?;
    let setup = served(root)?;
    let names = cert_names(&setup.cert_pem)?;
    ensure!(
        names.contains(&host),
        "the payload registry's certificate does not name {host}, so a node dialling {dial} would refuse it; it names {}. Give one of those, or restart {UNIT} once {host} is this host's (its certificate is issued again for the host's names)",
        names.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    let ca = setup.ca_pem;
    let sources = held.sources();
    ensure!(
        !sources.is_empty(),
        "this host holds no payload image to serve (imgmode payload status)"
    );
    let cfg = JoinConfig {
        image_digest_sources: sources
            .iter()
            .map(|(src, repo)| crate::config::ImageDigestSource {
                source: src.clone(),
                mirrors: vec![format!("{dial}/{repo}")],
            })
            .collect(),
        additional_trust_bundle: ca,
    };
    let mut text = format!(
        "# imgmode payload join-config: merge into the installation config of a node that
# installs from this host's payload registry ({dial}) with no other network.
# - seedImage must name the seed by digest: these mirrors serve pulls by digest only.
#   The images this host holds:\n"
    );
    for i in held
        .images
        .iter()
        .filter(|i| !crate::payload::record_image::is_record_image(i))
    {
        let name = i.source.strip_prefix("docker://").unwrap_or(&i.source);
        let name = name.split('@').next().unwrap_or(name);
        let name = match name.rsplit_once(':') {
            Some((n, tag)) if !tag.contains('/') => n,
            _ => name,
        };
        text.push_str(&format!("#     {name}@{}\n", i.digest));
    }
    text.push_str(&format!(
        "# - pullSecret needs an auth for {dial}: the credentials it holds for localhost:{PORT}.
# - the node must reach {dial} (a route, and noProxy when it has a proxy).\n"
    ));
    text.push_str(&yaml_serde::to_string(&cfg)?);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::registry::{Listen, RegistrySetup};

    const SECRET: &str = r#"{"auths":{"localhost:22625":{"auth":"cGF5bG9hZDpzM2NyZXQ="}}}"#;

    fn installed(root: &Path) -> RegistrySetup {
        let s = RegistrySetup::new(SECRET).unwrap().for_this_host().unwrap();
        let files = s.files(
            crate::payload::registry::INSTALLED_ROOT,
            &Payload::default(),
            None,
            false,
            Listen::Cluster,
        );
        crate::payload::registry::write_files(root, &files).unwrap();
        s
    }

    #[test]
    fn the_host_is_named_by_its_addresses_and_its_cluster() {
        let td = tempfile::tempdir().unwrap();
        let rec = td.path().join("reconfigured.json");
        let addrs = vec!["10.78.0.10".to_string(), "fd00::10".to_string()];
        let n = host_names("node-a", &addrs, &rec).unwrap();
        assert_eq!(
            n.iter().map(String::as_str).collect::<Vec<_>>(),
            [
                "10.78.0.10",
                "127.0.0.1",
                "::1",
                "fd00::10",
                "localhost",
                "node-a"
            ]
        );
        std::fs::write(
            &rec,
            r#"{"cluster_name":"edge1","base_domain":"example.org","cluster_id":"x","infra_id":"y","hostname":"node-a"}"#,
        )
        .unwrap();
        let n = host_names("node-a", &addrs, &rec).unwrap();
        assert!(n.contains("api-int.edge1.example.org"), "{n:?}");
        std::fs::write(&rec, "{").unwrap();
        let e = host_names("node-a", &addrs, &rec).unwrap_err();
        assert!(format!("{e:#}").contains("is malformed"), "{e:#}");
        let json = r#"[{"ifname":"lo","addr_info":[]},{"ifname":"enp0s2","addr_info":[{"family":"inet","local":"10.78.0.10","prefixlen":24,"scope":"global"},{"family":"inet6","local":"fe80::1","scope":"link"}]}]"#;
        assert_eq!(parse_addresses(json).unwrap(), ["10.78.0.10"]);
    }

    /// The certificate is issued again only when a name is missing, under the same CA, with a
    /// new key written 0600; a host without the CA's key is told why it cannot be.
    #[test]
    fn the_certificate_is_issued_again_for_new_names_under_the_same_ca() {
        use std::os::unix::fs::PermissionsExt;
        let td = tempfile::tempdir().unwrap();
        let s = installed(td.path());
        let dir = td.path().join(CONF_DIR);
        let mode = |n: &str| std::fs::metadata(dir.join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(CA_KEY), 0o600);
        let base = host_names("", &[], Path::new("/nonexistent")).unwrap();
        let t = ensure_tls(td.path(), &base).unwrap();
        assert!(
            !t.issued,
            "the install's certificate names localhost: {t:?}"
        );
        let mut want = base.clone();
        want.insert("10.78.0.10".into());
        want.insert("api-int.edge1.example.org".into());
        let t = ensure_tls(td.path(), &want).unwrap();
        assert!(t.issued);
        let pem = std::fs::read_to_string(dir.join("tls.crt")).unwrap();
        assert_eq!(cert_names(&pem).unwrap(), want);
        let cert = openssl::x509::X509::from_pem(pem.as_bytes()).unwrap();
        let ca = openssl::x509::X509::from_pem(s.ca_pem.as_bytes()).unwrap();
        assert!(cert.verify(&ca.public_key().unwrap()).unwrap());
        let key = openssl::pkey::PKey::private_key_from_pem(
            std::fs::read(dir.join("tls.key")).unwrap().as_slice(),
        )
        .unwrap();
        assert!(cert.public_key().unwrap().public_eq(&key));
        assert_ne!(
            std::fs::read_to_string(dir.join("tls.key")).unwrap(),
            s.key_pem
        );
        assert_eq!(mode("tls.key"), 0o600);
        assert!(
            !ensure_tls(td.path(), &want).unwrap().issued,
            "named already"
        );
        std::fs::remove_file(dir.join(CA_KEY)).unwrap();
        want.insert("10.78.0.11".into());
        let e = ensure_tls(td.path(), &want).unwrap_err().to_string();
        assert!(
            e.contains("10.78.0.11") && e.contains("cannot be issued again"),
            "{e}"
        );
    }

    #[test]
    fn a_joining_node_gets_mirrors_to_this_host_and_its_ca() {
        let td = tempfile::tempdir().unwrap();
        let s = installed(td.path());
        let mut want = host_names("", &["10.78.0.10".into()], Path::new("/x")).unwrap();
        ensure_tls(td.path(), &want).unwrap();
        let d = format!("sha256:{}", "a".repeat(64));
        let held = Payload {
            id: "p".into(),
            images: vec![imgmode_image::mirror::Mirrored {
                source: "docker://quay.io/org/seed:4.17".into(),
                repo: "org/seed".into(),
                tag: Some("4.17".into()),
                digest: d.clone(),
                manifests: 1,
            }],
            architectures: vec!["amd64".into()],
        };
        let text = join_config(td.path(), &held, "10.78.0.10").unwrap();
        assert!(
            text.contains(&format!("#     quay.io/org/seed@{d}\n")),
            "{text}"
        );
        let v: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
        assert_eq!(v["imageDigestSources"][0]["source"], "quay.io/org/seed");
        assert_eq!(
            v["imageDigestSources"][0]["mirrors"][0],
            "10.78.0.10:22625/org/seed"
        );
        assert_eq!(v["additionalTrustBundle"].as_str().unwrap(), s.ca_pem);
        // the part parses as an installation config's fields
        let cfg: crate::config::ImageDigestSource =
            yaml_serde::from_value(v["imageDigestSources"][0].clone()).unwrap();
        assert_eq!(cfg.mirrors, ["10.78.0.10:22625/org/seed"]);
        let e = join_config(td.path(), &held, "10.78.0.99")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("does not name 10.78.0.99") && e.contains("10.78.0.10"),
            "{e}"
        );
        want.insert("fd00::10".into());
        ensure_tls(td.path(), &want).unwrap();
        let text = join_config(td.path(), &held, "[fd00::10]:22625").unwrap();
        assert!(text.contains("[fd00::10]:22625/org/seed"), "{text}");
        for bad in [
            "",
            "a/b",
            "h:0",
            "h:x",
            "[fd00::1",
            "a\nimageDigestSources: x",
            "A_B",
        ] {
            assert!(registry_address(bad).is_err(), "{bad}");
        }
        let e = join_config(td.path(), &Payload::default(), "10.78.0.10")
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no payload image"), "{e}");
    }

    #[test]
    fn the_units_restart_the_registry_with_its_names() {
        assert!(
            crate::payload::registry::POST_PIVOT_DROPIN.starts_with(&format!(
                "etc/systemd/system/{}.d/",
                imgmode_seed::postpivot::UNIT
            ))
        );
        let r = |p: &str| {
            let files = RegistrySetup::new(SECRET)
                .unwrap()
                .for_this_host()
                .unwrap()
                .files("/p", &Payload::default(), None, false, Listen::Cluster);
            match &files.iter().find(|f| f.path.ends_with(p)).unwrap().content {
                imgmode_os::live::Content::File { data, .. } => {
                    String::from_utf8(data.clone()).unwrap()
                }
                _ => panic!("{p}"),
            }
        };
        assert!(
            r(crate::payload::registry::POST_PIVOT_DROPIN).contains(&format!(
                "ExecStartPost=-/bin/systemctl --no-block try-restart {UNIT}"
            ))
        );
        assert!(r(crate::payload::registry::TLS_UNIT)
            .contains("ExecStart=/usr/bin/imgmode payload tls"));
        let unit = r(UNIT);
        assert!(
            unit.contains("Requires=imgmode-payload-tls.service"),
            "{unit}"
        );
        let yml = r("registry.yml");
        assert!(yml.contains("addr: \":22625\""), "{yml}");
    }
}
