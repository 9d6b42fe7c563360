//! The installation config (`ibi create-image`, `ibi install`) and the configuration ISO's
//! inputs (`ibi create-config-image`): every value checked before it reaches a file, a unit,
//! a certificate or a disk.

use super::{row, Row};

const IBI: &str = "apiVersion: v1beta1\nkind: ImageBasedInstallationConfig\nseedImage: quay.io/org/seed:4.17\nseedVersion: 4.17.0\ninstallationDisk: /dev/vda\npullSecret: '{\"auths\":{}}'\n";

/// `ibi create-image` of `IBI` with `from` replaced by `to` (appended when `from` is empty).
fn create(from: &str, to: &str, says: &str) -> Row {
    let cfg = if from.is_empty() {
        format!("{IBI}{to}")
    } else {
        assert!(IBI.contains(from), "{from}");
        IBI.replace(from, to)
    };
    row(
        1,
        says,
        &[
            "ibi",
            "create-image",
            "--config",
            "@D/ibi.yaml",
            "--dir",
            "@D/out",
        ],
    )
    .file("ibi.yaml", &cfg)
    .dir("out")
}

/// The installation config: `ImageBasedInstallationConfig`, field by field.
pub fn installation_config_rows() -> Vec<Row> {
    vec![
        create("", "metadata:\n  namespace: Bad_NS\n", "metadata.namespace \"Bad_NS\""),
        create("seedImage: quay.io/org/seed:4.17\n", "seedImage: \"quay.io/org/seed:4.17\\nExecStart=/bin/sh\"\n", "seedImage \"quay.io/org/seed:4.17\\nExecStart=/bin/sh\" holds the control character '\\n'"),
        create("seedImage: quay.io/org/seed:4.17\n", "seedImage: quay.io/org/seed 4.17\n", "seedImage \"quay.io/org/seed 4.17\" holds a space"),
        create("seedImage: quay.io/org/seed:4.17\n", "seedImage: ftp://h/seed\n", "seedImage \"ftp://h/seed\" is not an image reference"),
        create("seedImage: quay.io/org/seed:4.17\n", "", "seedImage is required"),
        create("installationDisk: /dev/vda\n", "installationDisk: \"/dev/vda\\nExecStartPre=/bin/sh\"\n", "installationDisk \"/dev/vda\\nExecStartPre=/bin/sh\" holds the control character"),
        create("installationDisk: /dev/vda\n", "installationDisk: vda\n", "installationDisk \"vda\" is not an absolute path to a disk"),
        create("installationDisk: /dev/vda\n", "installationDisk: /dev/../etc/passwd\n", "is not an absolute path to a disk"),
        create("installationDisk: /dev/vda\n", "installationDisk: /dev/disk/by-id/a b\n", "holds a space"),
        create("installationDisk: /dev/vda\n", "", "installationDisk is required"),
        create("seedVersion: 4.17.0\n", "seedVersion: '4.17'\n", "seedVersion \"4.17\" is not a release version"),
        create("seedVersion: 4.17.0\n", "seedVersion: \"4.17.0\\nx\"\n", "seedVersion \"4.17.0\\nx\" holds the control character"),
        create("seedVersion: 4.17.0\n", "seedVersion: v4.17.0\n", "is not a release version"),
        create("pullSecret: '{\"auths\":{}}'\n", "pullSecret: not-json\n", "pullSecret is not JSON"),
        create("pullSecret: '{\"auths\":{}}'\n", "pullSecret: '{}'\n", "pullSecret has no \"auths\" object"),
        create("", "sshKey: hello\n", "sshKey \"hello\" has line 1 that is not an OpenSSH public key"),
        create("", "extraPartitionLabel: bad label\n", "extraPartitionLabel \"bad label\" has ' ', which is not a letter"),
        create("", "extraPartitionLabel: varlibcontainers1\n", "a label has 1 to 16"),
        create("", "extraPartitionNumber: 0\n", "extraPartitionNumber 0 is not a GPT partition number (1 to 128)"),
        create("", "extraPartitionNumber: 999\n", "extraPartitionNumber 999 is not a GPT partition number"),
        create("", "extraPartitionNumber: -1\n", "extraPartitionNumber"),
        create("", "extraPartitionStart: banana\n", "extraPartitionStart \"banana\" is not a size"),
        create("", "releaseRegistry: quay .io\n", "releaseRegistry \"quay .io\" has the space character"),
        create("", "releaseRegistry: https://quay.io\n", "has a scheme; write HOST[:PORT][/PATH] without one"),
        create("", "imageDigestSources:\n- source: quay .io/org\n  mirrors: [m.example/org]\n", "imageDigestSources[0].source \"quay .io/org\""),
        create("", "imageDigestSources:\n- source: quay.io/org\n  mirrors: [\"http://m.example/org\"]\n", "imageDigestSources[0] mirror \"http://m.example/org\" has a scheme"),
        create("", "imageDigestSources:\n- source: quay.io/org\n", "imageDigestSources: quay.io/org has no mirrors"),
        create("", "imageDigestSources:\n- source: quay.io/org\n  mirror: [m.example/org]\n", "unknown field `mirror`"),
        create("", "proxy:\n  httpProxy: proxy.example:3128\n", "proxy.httpProxy \"proxy.example:3128\" is not an http:// or https:// URL"),
        create("", "proxy:\n  httpsProxy: \"http://p.example\\nEnvironment=X=1\"\n", "proxy.httpsProxy \"http://p.example\\nEnvironment=X=1\" holds the control character"),
        create("", "proxy:\n  httpProxy: http://p.example:99999\n", "has the port \"99999\", not 1 to 65535"),
        create("", "proxy:\n  httpProxy: http://p.example:3128\n  noProxy: a b\n", "proxy.noProxy \"a b\" has the entry"),
        create("", "additionalTrustBundle: not a certificate\n", "additionalTrustBundle"),
        create("", "metadata:\n  name: Bad_Name\n", "metadata.name \"Bad_Name\""),
        create("", "bogusField: 1\n", "unknown field `bogusField`"),
        create("", "ignitionConfigOverride: '{}'\n", "field ignitionConfigOverride is not supported by imgmode"),
        create("", "coreosInstallerArgs: [a]\n", "field coreosInstallerArgs is not supported"),
        create("kind: ImageBasedInstallationConfig\n", "kind: ImageBasedConfig\n", "ImageBasedConfig"),
        create("apiVersion: v1beta1\n", "apiVersion: v2\n", "v2"),
        create("", "networkConfig:\n  interfaces:\n  - name: \"eth0\\nDNS=6.6.6.6\"\n    type: ethernet\n", "networkConfig"),
        row(1, "reading", &["ibi", "create-image", "--config", "@D/nope.yaml", "--dir", "@D/out"]).dir("out"),
        row(1, "is not a directory", &["ibi", "create-image", "--config", "@D/ibi.yaml", "--dir", "@D/nodir"]).file("ibi.yaml", IBI),
        row(1, "no-such-image", &["ibi", "create-image", "--config", "@D/ibi.yaml", "--dir", "@D/out", "--image", "no-such-image"]).file("ibi.yaml", IBI).dir("out"),
        row(1, "pass --force", &["ibi", "create-image", "--config", "@D/ibi.yaml", "--dir", "@D/out"]).file("ibi.yaml", IBI).file("out/imgmode-ibi.iso", "earlier"),
        row(1, "installationDisk \"vda\" is not an absolute path to a disk", &["ibi", "install", "--config", "@D/ibi.yaml", "--state", "@D/state.json", "--mount-dir", "@D/mnt"])
            .file("ibi.yaml", &IBI.replace("/dev/vda", "vda")),
        row(1, "seedImage \"quay.io/org/seed:4.17\\nExecStart=/bin/sh\"", &["ibi", "install", "--config", "@D/ibi.yaml", "--state", "@D/state.json", "--mount-dir", "@D/mnt"])
            .file("ibi.yaml", &IBI.replace("seedImage: quay.io/org/seed:4.17", "seedImage: \"quay.io/org/seed:4.17\\nExecStart=/bin/sh\"")),
    ]
}

const IC: &str = "apiVersion: v1\nmetadata:\n  name: edge1\nbaseDomain: example.net\npullSecret: '{\"auths\":{}}'\n";
const IB: &str =
    "apiVersion: v1beta1\nkind: ImageBasedConfig\nmetadata:\n  name: edge1\nhostname: node7\n";

/// `ibi create-config-image --dir @D` of install-config.yaml `ic` and
/// image-based-config.yaml `ib` (None: the file is absent).
fn config_iso(ic: Option<&str>, ib: Option<&str>, says: &str) -> Row {
    let mut r = row(1, says, &["ibi", "create-config-image", "--dir", "@D"]);
    if let Some(ic) = ic {
        r = r.file("install-config.yaml", ic);
    }
    if let Some(ib) = ib {
        r = r.file("image-based-config.yaml", ib);
    }
    r
}

/// image-based-config.yaml with `extra` appended.
fn ib(extra: &str, says: &str) -> Row {
    config_iso(Some(IC), Some(&format!("{IB}{extra}")), says)
}

/// install-config.yaml with `extra` appended (or `from` replaced by `to`).
fn ic(from: &str, to: &str, says: &str) -> Row {
    let text = if from.is_empty() {
        format!("{IC}{to}")
    } else {
        assert!(IC.contains(from), "{from}");
        IC.replace(from, to)
    };
    config_iso(Some(&text), Some(IB), says)
}

/// The configuration ISO's inputs: install-config.yaml and image-based-config.yaml.
pub fn configuration_iso_rows() -> Vec<Row> {
    let long = "a".repeat(64);
    let huge = "h".repeat(1_000_000);
    vec![
        ic(
            "",
            "foo: bar\n",
            "unknown field \"foo\" (not a field of install-config.yaml",
        ),
        ic("", "platfrom:\n  none: {}\n", "unknown field \"platfrom\""),
        config_iso(
            Some(IC),
            Some(IB),
            "auth exists and is not a directory (a symlink or a file)",
        )
        .file("auth", "not a directory"),
        config_iso(
            Some(IC),
            Some(&IB.replace("node7", "Bad_Host")),
            "hostname \"Bad_Host\" is not a valid host name",
        ),
        config_iso(
            Some(IC),
            Some(&IB.replace("  name: edge1\n", "  name: edge1\n  namespace: Bad_NS\n")),
            "metadata.namespace \"Bad_NS\"",
        ),
        config_iso(
            Some(IC),
            Some(IB),
            "apps/v1 Deployment d: a real control plane stores it as Kubernetes protobuf",
        )
        .file(
            "extra-manifests/d.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n  namespace: x\n",
        ),
        config_iso(
            Some(&format!(
                "{IC}controlPlane:\n  name: master\n  replicas: 3\n"
            )),
            Some(IB),
            "controlPlane.replicas is 3; an image-based install makes a single-node cluster",
        ),
        config_iso(
            Some(IC),
            Some(&IB.replace("node7", &long)),
            "is not a valid host name",
        ),
        config_iso(
            Some(IC),
            Some(&IB.replace("node7", &huge)),
            "… (1000000 characters) is not a valid host name",
        ),
        config_iso(
            Some(IC),
            Some(&IB.replace("node7", "\"node7\\nevil\"")),
            "hostname \"node7\\nevil\" is not a valid host name",
        ),
        config_iso(
            Some(IC),
            Some(&IB.replace("hostname: node7\n", "")),
            "hostname is required",
        ),
        config_iso(
            Some(IC),
            Some(&IB.replace("ImageBasedConfig", "ImageBasedInstallationConfig")),
            "ImageBasedInstallationConfig",
        ),
        config_iso(Some(IC), None, "image-based-config.yaml"),
        config_iso(None, Some(IB), "install-config.yaml"),
        ib("clusterID: not-a-uuid\n", "clusterID \"not-a-uuid\""),
        ib("infraID: ../../x\n", "infraID \"../../x\""),
        ib(&format!("infraID: {long}\n"), "a DNS label has at most 63"),
        ib(
            "releaseRegistry: quay .io/x\n",
            "releaseRegistry \"quay .io/x\" has the space character",
        ),
        ib(
            "additionalNTPSources:\n- \"pool.ntp.org\\nserver evil\"\n",
            "additionalNTPSources entry \"pool.ntp.org\\nserver evil\"",
        ),
        ib(
            "additionalNTPSources:\n- exa_mple.org\n",
            "additionalNTPSources entry \"exa_mple.org\" is neither an IP address nor a DNS name",
        ),
        ib("nodeLabels:\n  bad key: x\n", "nodeLabels key \"bad key\""),
        ib("nodeLabels:\n  role: \"a b\"\n", "nodeLabels[role] \"a b\""),
        ib(
            "nodeLabels:\n  role: \"a\\nb\"\n",
            "nodeLabels[role] \"a\\nb\"",
        ),
        ib("nodeLabel: x\n", "unknown field `nodeLabel`"),
        ib("sshKey: hello\n", "unknown field `sshKey`"),
        ic(
            "name: edge1\n",
            "name: Bad_Name\n",
            "metadata.name \"Bad_Name\" is not a valid cluster name",
        ),
        ic(
            "baseDomain: example.net\n",
            "baseDomain: exa_mple.ORG\n",
            "baseDomain \"exa_mple.ORG\"",
        ),
        ic("baseDomain: example.net\n", "", "baseDomain is required"),
        ic(
            "baseDomain: example.net\n",
            "baseDomain: \"example.net\\nx\"\n",
            "baseDomain \"example.net\\nx\"",
        ),
        ic(
            "",
            "networking:\n  machineNetwork:\n  - cidr: 10.0.0.0/99\n",
            "has a prefix length that is longer than an IPv4 prefix can be (0 to 32)",
        ),
        ic(
            "",
            "networking:\n  machineNetwork:\n  - cidr: banana\n",
            "networking.machineNetwork cidr \"banana\" is not a CIDR",
        ),
        ic(
            "",
            "sshKey: hello\n",
            "sshKey \"hello\" has line 1 that is not an OpenSSH public key",
        ),
        ic(
            "pullSecret: '{\"auths\":{}}'\n",
            "pullSecret: not-json\n",
            "pullSecret is not JSON",
        ),
        ic(
            "pullSecret: '{\"auths\":{}}'\n",
            "pullSecret: '{}'\n",
            "pullSecret has no \"auths\" object",
        ),
        ic(
            "",
            "proxy:\n  httpProxy: proxy.example:3128\n",
            "proxy.httpProxy \"proxy.example:3128\" is not an http:// or https:// URL",
        ),
        ic(
            "",
            "additionalTrustBundle: not a certificate\n",
            "additionalTrustBundle",
        ),
        ic(
            "apiVersion: v1\n",
            "apiVersion: v2\n",
            "apiVersion must be v1",
        ),
    ]
}

/// networkConfig (nmstate) in image-based-config.yaml: names, addresses and routes.
pub fn network_config_rows() -> Vec<Row> {
    let eth = |body: &str| {
        format!("networkConfig:\n  interfaces:\n  - name: eth0\n    type: ethernet\n{body}")
    };
    vec![
        ib("networkConfig: \"::: not nmstate\"\n", "networkConfig is not an nmstate mapping"),
        ib("networkConfig:\n  interfaces:\n  - name: \"eth0\\nDNS=6.6.6.6\"\n    type: ethernet\n", "networkConfig"),
        ib("networkConfig:\n  interfaces:\n  - name: ../x\n    type: ethernet\n", "\"../x\""),
        ib("networkConfig:\n  interfaces:\n  - name: bond0\n    type: bond\n", "type bond is not supported"),
        ib(&eth("    mac-address: zz:zz\n"), "\"zz:zz\""),
        ib(&eth("    ipv4:\n      enabled: true\n      address:\n      - ip: 10.0.0.5\n        prefix-length: 77\n"), "prefix"),
        ib(&eth("    ipv4:\n      enabled: true\n      address:\n      - ip: 10.0.0.999\n        prefix-length: 24\n"), "\"10.0.0.999\""),
        ib(&format!("{}  dns-resolver:\n    config:\n      server:\n      - \"1.1.1.1\\nDNS=6.6.6.6\"\n", eth("")), "\"1.1.1.1\\nDNS=6.6.6.6\""),
        ib(&format!("{}  dns-resolver:\n    config:\n      search: [example.org]\n", eth("")), "\"search\" is not supported by imgmode"),
        ib(&format!("{}  routes:\n    config:\n    - destination: banana\n      next-hop-address: 10.0.0.1\n      next-hop-interface: eth0\n", eth("")), "route destination \"banana\" is not a CIDR"),
        ib(&format!("{}  routes:\n    config:\n    - destination: 0.0.0.0/0\n      next-hop-address: not-an-ip\n      next-hop-interface: eth0\n", eth("")), "\"not-an-ip\""),
        ib(&format!("{}  routes:\n    config:\n    - destination: 0.0.0.0/0\n      next-hop-address: 10.0.0.1\n      next-hop-interface: eth9\n", eth("")), "next-hop-interface \"eth9\" is not one of the interfaces"),
        ib(&format!("{}  routes:\n    config:\n    - destination: 0.0.0.0/0\n      next-hop-address: 10.0.0.1\n      table-id: main\n", eth("")), "route table-id \"main\" is not a routing table number"),
        ib(&eth("    mtu: 9000\n"), "\"mtu\" is not supported by imgmode (it applies name, type, state, identifier, mac-address, ipv4, ipv6); remove it"),
        ib(&eth("    ipv4:\n      enabled: true\n      dhcp-client-id: x\n"), "\"dhcp-client-id\" is not supported by imgmode"),
        ib(&eth("    ipv4:\n      enabled: true\n      address:\n      - ip: 10.0.0.5\n        prefix-length: 24\n        valid-lifetime: 1\n"), "\"valid-lifetime\" is not supported"),
        ib("networkConfig:\n  ovs-db: {}\n", "ovs-db is not supported by imgmode"),
        ib("networkConfig:\n  hostname: {}\n", "\"hostname\" is not supported by imgmode"),
    ]
}
