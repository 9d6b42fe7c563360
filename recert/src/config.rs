//! recert's configuration. Field names are those of the recert tool users already know, so a
//! `RECERT_CONFIG` file written for it reads the same here.

use imgmode_support::validate as v;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RecertConfig {
    /// Scan and plan, write nothing but the summary.
    pub dry_run: bool,
    /// etcd client URL, e.g. `http://127.0.0.1:2379`.
    pub etcd_endpoint: Option<String>,
    /// Directories scanned recursively.
    pub static_dirs: Vec<PathBuf>,
    /// Single files scanned.
    pub static_files: Vec<PathBuf>,
    /// `old:new` rules for exact CN and SAN values.
    pub cn_san_replace_rules: Vec<String>,
    /// `<CN> <key file>`: the certificate with that subject CN keeps the given key instead of a
    /// new one (and signs its children with it).
    pub use_key_rules: Vec<String>,
    /// A PEM certificate file that replaces, as is, the certificate with the same subject.
    pub use_cert_rules: Vec<PathBuf>,
    /// `name:domain[:infraID]`: the new cluster name and base domain.
    pub cluster_rename: Option<String>,
    /// The new hostname (the old one is read from the node object in etcd).
    pub hostname: Option<String>,
    /// The new node IP (the old one is read from the node object in etcd).
    pub ip: Option<String>,
    pub summary_file: Option<PathBuf>,
    /// A summary with only counts, kinds and locations.
    pub summary_file_clean: Option<PathBuf>,
    /// Make every regenerated certificate already expired (for seeds).
    pub force_expire: bool,
    /// Re-date every regenerated certificate from now, keeping its lifetime.
    pub extend_expiration: bool,
    /// Directory holding `ssh_host_*_key` files to replace with new keys.
    pub regenerate_server_ssh_keys: Option<PathBuf>,
    /// Key-generation threads (default: the number of CPUs).
    pub threads: Option<usize>,
    /// Fail on a PEM block that does not parse instead of skipping it with a warning.
    pub fail_on_invalid_pem: bool,
    /// Run even though the summary file says this tree was already recerted.
    pub force_rerun: bool,
    /// imgmode: skip an etcd value recert cannot read (encrypted, neither JSON nor Kubernetes
    /// protobuf, a protobuf kind it does not read holding a PEM block) instead of failing;
    /// whatever keys it holds stay. The summary counts them under `skipped`.
    pub skip_unreadable_values: bool,
    /// imgmode: the cluster's EncryptionConfiguration (`apiserver.config.k8s.io/v1`): etcd
    /// values encrypted with its `aescbc` or `aesgcm` keys are read and written back with the
    /// key they were read with.
    pub encryption_config: Option<PathBuf>,
    /// imgmode: where the plan is kept while it is committed (default: the summary file's
    /// path plus `.plan`); a run that finds it finishes that plan.
    pub plan_file: Option<PathBuf>,
    /// Tests: stop the commit after this many writes, as a crash would.
    #[serde(skip)]
    pub interrupt_after_writes: Option<usize>,
}

/// `cluster_rename` parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterRename {
    pub name: String,
    pub domain: String,
    pub infra_id: Option<String>,
}

impl ClusterRename {
    /// `name:domain[:infraID]`; the name and infra ID are DNS labels and the domain a DNS
    /// name (RFC 1123, lowercase), because they become certificate names.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        let (name, domain, infra) = match parts.as_slice() {
            _ if parts.iter().any(|p| p.is_empty()) => bail!(
                "cluster_rename {} is not name:domain[:infraID] (e.g. new-sno:example.com)",
                v::shown(s)
            ),
            [name, domain] => (*name, *domain, None),
            [name, domain, infra] => (*name, *domain, Some(*infra)),
            _ => bail!(
                "cluster_rename {} is not name:domain[:infraID] (e.g. new-sno:example.com)",
                v::shown(s)
            ),
        };
        v::field("cluster_rename", "name", name, v::dns_label)?;
        v::field("cluster_rename", "domain", domain, v::dns_name)?;
        if let Some(i) = infra {
            v::field("cluster_rename", "infraID", i, v::dns_label)?;
        }
        Ok(ClusterRename {
            name: name.to_string(),
            domain: domain.to_string(),
            infra_id: infra.map(str::to_string),
        })
    }
}

/// `old:new` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplaceRule {
    pub old: String,
    pub new: String,
}

impl ReplaceRule {
    pub fn parse(s: &str) -> Result<Self> {
        match s.split_once(':') {
            Some((old, new)) if !old.is_empty() && !new.is_empty() && !new.contains(':') => {
                v::field("cn_san_replace_rules", "old value", old, v::single_line)?;
                // the new value becomes a CN or SAN: a DNS name (maybe a wildcard) or an IP
                let host = new.strip_prefix("*.").unwrap_or(new);
                v::field("cn_san_replace_rules", "new value", new, |_| v::host(host))?;
                Ok(ReplaceRule {
                    old: old.into(),
                    new: new.into(),
                })
            }
            _ => bail!("cn_san_replace_rules entry {s:?} is not old:new (e.g. api.seed.example.com:api.new.example.com)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseKeyRule {
    pub cn: String,
    pub key_file: PathBuf,
}

impl UseKeyRule {
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().rsplit_once(' ') {
            Some((cn, path)) if !cn.trim().is_empty() && !path.is_empty() => Ok(UseKeyRule {
                cn: cn.trim().into(),
                key_file: path.into(),
            }),
            _ => bail!("use_key_rules entry {s:?} is not \"<CN> <key file>\" (e.g. \"kube-apiserver-lb-signer /keys/lb.key\")"),
        }
    }
}

/// Read the configuration file named by `RECERT_CONFIG` (YAML, which includes JSON).
pub fn load_file(path: &Path) -> Result<RecertConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading RECERT_CONFIG file {}", path.display()))?;
    parse(&text).with_context(|| format!("parsing RECERT_CONFIG file {}", path.display()))
}

pub fn parse(text: &str) -> Result<RecertConfig> {
    Ok(yaml_serde::from_str(text)?)
}

/// The configuration checked and with its rules parsed.
#[derive(Debug, Clone)]
pub struct Checked {
    pub cfg: RecertConfig,
    pub rename: Option<ClusterRename>,
    pub cn_san_rules: Vec<ReplaceRule>,
    pub use_keys: Vec<UseKeyRule>,
    pub threads: usize,
}

/// An etcd client URL: `http://HOST:PORT` or `https://HOST:PORT` (a host name or an IP).
fn etcd_url(s: &str) -> std::result::Result<(), v::Problem> {
    v::single_line(s)?;
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| {
            "is not an http:// or https:// URL (e.g. http://127.0.0.1:2379)".to_string()
        })?;
    v::proxy_url(&format!("http://{rest}")).map_err(|p| {
        p.replace(
            "a proxy URL is http[s]://[USER:PASSWORD@]HOST[:PORT]",
            "an etcd endpoint is http[s]://HOST:PORT",
        )
    })
}

impl RecertConfig {
    pub fn check(self) -> Result<Checked> {
        if self.etcd_endpoint.is_none()
            && self.static_dirs.is_empty()
            && self.static_files.is_empty()
        {
            bail!("nothing to recert: give etcd_endpoint, static_dirs or static_files");
        }
        if self.force_expire && self.extend_expiration {
            bail!("force_expire and extend_expiration contradict each other; choose one");
        }
        for d in &self.static_dirs {
            if !d.is_dir() {
                bail!("static_dirs entry {} is not a directory", d.display());
            }
        }
        for f in &self.static_files {
            if !f.is_file() {
                bail!("static_files entry {} is not a file", f.display());
            }
        }
        if (self.hostname.is_some() || self.ip.is_some()) && self.etcd_endpoint.is_none() {
            bail!("hostname and ip need etcd_endpoint: the old values are read from the node object in etcd");
        }
        for (name, f) in [
            ("summary_file", &self.summary_file),
            ("summary_file_clean", &self.summary_file_clean),
        ] {
            if let Some(f) = f {
                v::field("recert", name, &f.to_string_lossy(), v::single_line)?;
            }
        }
        if let Some(e) = &self.etcd_endpoint {
            v::field("recert", "etcd_endpoint", e, etcd_url)?;
        }
        if let Some(h) = &self.hostname {
            v::field("recert", "hostname", h, v::dns_name)?;
        }
        if let Some(ip) = &self.ip {
            ip.parse::<std::net::IpAddr>()
                .with_context(|| format!("ip {ip:?} is not an IP address"))?;
        }
        let threads = match self.threads {
            Some(0) => bail!("threads must be at least 1"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(Checked {
            rename: self
                .cluster_rename
                .as_deref()
                .map(ClusterRename::parse)
                .transpose()?,
            cn_san_rules: self
                .cn_san_replace_rules
                .iter()
                .map(|r| ReplaceRule::parse(r))
                .collect::<Result<_>>()?,
            use_keys: self
                .use_key_rules
                .iter()
                .map(|r| UseKeyRule::parse(r))
                .collect::<Result<_>>()?,
            threads,
            cfg: self,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_recert_style_yaml_and_json() {
        let y = parse(
            "dry_run: true\netcd_endpoint: http://127.0.0.1:2379\nstatic_dirs: [/etc/kubernetes]\ncluster_rename: new:example.org:infra-1\ncn_san_replace_rules: ['a.x:b.x']\nthreads: 2\n",
        )
        .unwrap();
        assert!(y.dry_run);
        assert_eq!(y.threads, Some(2));
        let j = parse(r#"{"dry_run": true, "etcd_endpoint": "http://127.0.0.1:2379", "static_dirs": ["/etc/kubernetes"], "cluster_rename": "new:example.org:infra-1", "cn_san_replace_rules": ["a.x:b.x"], "threads": 2}"#).unwrap();
        assert_eq!(y, j);
        let err = parse("dry-run: true\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `dry-run`"), "{err}");
    }

    #[test]
    fn rules_parse_or_say_the_expected_shape() {
        assert_eq!(
            ClusterRename::parse("sno:example.com").unwrap(),
            ClusterRename {
                name: "sno".into(),
                domain: "example.com".into(),
                infra_id: None
            }
        );
        assert_eq!(
            ClusterRename::parse("sno:example.com:sno-x7k2")
                .unwrap()
                .infra_id
                .as_deref(),
            Some("sno-x7k2")
        );
        for bad in ["sno", "sno:", ":example.com", "a:b:c:d"] {
            let e = ClusterRename::parse(bad).unwrap_err().to_string();
            assert!(e.contains("name:domain[:infraID]"), "{bad}: {e}");
        }
        let e = ClusterRename::parse("Bad_Name:exa_mple.ORG")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cluster_rename: name \"Bad_Name\" has 'B'"),
            "{e}"
        );
        let e = ClusterRename::parse("sno:exa_mple.org")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster_rename: domain \"exa_mple.org\""), "{e}");
        assert!(ReplaceRule::parse("a:b").is_ok());
        assert!(ReplaceRule::parse("api.old.x:*.apps.new.x").is_ok());
        assert!(ReplaceRule::parse("old:10.0.0.1").is_ok());
        assert!(ReplaceRule::parse("ab").is_err());
        let e = ReplaceRule::parse("a:b\nc").unwrap_err().to_string();
        assert!(e.contains("new value \"b\\nc\""), "{e}");
        let k = UseKeyRule::parse("kube-apiserver-lb-signer /k/lb.key").unwrap();
        assert_eq!(k.cn, "kube-apiserver-lb-signer");
        assert!(UseKeyRule::parse("/k/lb.key").is_err());
    }

    #[test]
    fn contradictions_and_empty_configs_are_refused() {
        let e = RecertConfig::default().check().unwrap_err().to_string();
        assert!(e.contains("nothing to recert"), "{e}");
        let c = RecertConfig {
            static_files: vec!["/etc/hostname".into()],
            force_expire: true,
            extend_expiration: true,
            ..Default::default()
        };
        assert!(c.check().unwrap_err().to_string().contains("contradict"));
    }
}
