//! recert: every name that goes into a certificate is a DNS name or an IP, from flags and from
//! `RECERT_CONFIG` alike.

use super::{row, Row};

/// `recert --static-dir @D/pki ARGS` refused with `says`.
fn recert(args: &[&str], says: &str) -> Row {
    let mut a = vec!["recert", "--static-dir", "@D/pki"];
    a.extend(args);
    row(1, says, &a).dir("pki")
}

/// recert through `RECERT_CONFIG` = `@D/recert.yaml` holding `yaml`.
fn config(yaml: &str, says: &str) -> Row {
    row(1, says, &["recert"])
        .file("recert.yaml", yaml)
        .dir("pki")
        .env("RECERT_CONFIG", "@D/recert.yaml")
}

pub fn recert_rows() -> Vec<Row> {
    vec![
        recert(
            &["--cluster-rename", "Bad_Name:exa_mple.ORG"],
            "which is not a lowercase letter, digit or '-'",
        ),
        recert(
            &["--cluster-rename", "name:example.org:../../x"],
            "infraID \"../../x\"",
        ),
        recert(
            &["--cluster-rename", "onlyname"],
            "cluster_rename \"onlyname\" is not name:domain[:infraID]",
        ),
        recert(&["--cluster-rename", "a:b\nc"], "\"b\\nc\""),
        recert(&["--cluster-rename", "a:example.org:x:y"], "cluster_rename"),
        recert(
            &["--cn-san-replace", "a:b\nc"],
            "new value \"b\\nc\" is neither an IP address nor a DNS name",
        ),
        recert(
            &["--cn-san-replace", "a\nb:c"],
            "it must be one line of printable text",
        ),
        recert(
            &["--cn-san-replace", "nocolon"],
            "cn_san_replace_rules entry \"nocolon\" is not old:new",
        ),
        recert(
            &["--cn-san-replace", "a:exa mple.org"],
            "is neither an IP address nor a DNS name",
        ),
        recert(
            &[
                "--hostname",
                "Bad_Host",
                "--etcd-endpoint",
                "http://127.0.0.1:1",
            ],
            "hostname \"Bad_Host\"",
        ),
        recert(
            &[
                "--hostname",
                "a\nb",
                "--etcd-endpoint",
                "http://127.0.0.1:1",
            ],
            "hostname \"a\\nb\"",
        ),
        recert(
            &["--hostname", "node1"],
            "hostname and ip need etcd_endpoint",
        ),
        recert(
            &["--ip", "999.1.1.1", "--etcd-endpoint", "http://127.0.0.1:1"],
            "ip \"999.1.1.1\" is not an IP address",
        ),
        recert(
            &["--etcd-endpoint", "not-a-url"],
            "etcd_endpoint \"not-a-url\" is not an http:// or https:// URL",
        ),
        recert(
            &["--etcd-endpoint", "http://a:99999"],
            "has the port \"99999\", not 1 to 65535",
        ),
        recert(
            &["--etcd-endpoint", "http://127.0.0.1:1"],
            "connecting to etcd at http://127.0.0.1:1",
        ),
        recert(
            &["--use-key", "cn_/nonexistent"],
            "use_key_rules entry \"cn_/nonexistent\" is not \"<CN> <key file>\"",
        ),
        recert(
            &["--use-cert", "@D/nonexistent.pem"],
            "reading use_cert_rules file @D/nonexistent.pem",
        ),
        recert(
            &["--static-dir", "@D/nowhere"],
            "static_dirs entry @D/nowhere is not a directory",
        ),
        row(
            1,
            "nothing to recert: give etcd_endpoint, static_dirs or static_files",
            &["recert"],
        ),
        config(
            "static_dirs: ['@D/pki']\ncluster_rename: Bad_Name:exa_mple.ORG\n",
            "which is not a lowercase letter, digit or '-'",
        ),
        config(
            "static_dirs: ['@D/pki']\ncn_san_replace_rules: [\"a:b\\nc\"]\n",
            "\"b\\nc\" is neither an IP address nor a DNS name",
        ),
        config(
            "static_dirs: ['@D/pki']\nbogus: 1\n",
            "unknown field `bogus`",
        ),
        config(
            "static_dirs: ['@D/pki']\nthreads: 0\n",
            "threads must be at least 1",
        ),
        config(
            "static_dirs: ['@D/pki']\nforce_expire: true\nextend_expiration: true\n",
            "force_expire and extend_expiration contradict each other",
        ),
        row(
            1,
            "RECERT_CONFIG is set",
            &["recert", "--static-dir", "@D/pki"],
        )
        .file("recert.yaml", "static_dirs: ['@D/pki']\n")
        .dir("pki")
        .env("RECERT_CONFIG", "@D/recert.yaml"),
    ]
}
