//! The summary file: what was found where, what was regenerated, rule matches, warnings and
//! per-phase timings. Private keys and tokens are never part of it; the clean variant also leaves
//! out the new certificates.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::plan::CertReport;
use crate::rename::RuleReport;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Counts {
    pub certificates: usize,
    pub private_keys: usize,
    pub public_keys: usize,
    pub jwts: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyReport {
    pub kind: String,
    pub action: String,
    pub locations: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JwtReport {
    /// Always redacted: the token itself is a credential.
    pub token: String,
    pub regenerated: bool,
    pub locations: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Timings {
    pub scan_ms: u128,
    /// Wall time of the key-generation pool, from its start during the scan to its last key.
    pub key_generation_ms: u128,
    /// Of that, the time spent waiting for keys after the scan.
    pub key_generation_wait_ms: u128,
    pub processing_ms: u128,
    pub commit_ms: u128,
    pub total_ms: u128,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterRenameReport {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub tool: String,
    pub dry_run: bool,
    pub threads: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_rename: Option<ClusterRenameReport>,
    pub found: Counts,
    pub regenerated: Counts,
    pub ssh_host_keys_regenerated: Vec<String>,
    pub locations_by_kind: std::collections::BTreeMap<String, usize>,
    /// etcd's values under `/kubernetes.io/` by how they are stored
    /// ([`crate::etcd::ENCODINGS`]): none is passed over without being counted.
    #[serde(default)]
    pub etcd_values: std::collections::BTreeMap<String, usize>,
    pub rules: Vec<RuleReport>,
    pub certificates: Vec<CertReport>,
    pub private_keys: Vec<KeyReport>,
    pub jwts: Vec<JwtReport>,
    pub written: Vec<String>,
    pub warnings: Vec<String>,
    pub timings: Timings,
}

impl Summary {
    pub fn to_yaml(&self, clean: bool) -> Result<String> {
        let mut s = self.clone();
        if clean {
            for c in &mut s.certificates {
                c.pem = None;
            }
        }
        Ok(yaml_serde::to_string(&s)?)
    }

    pub fn write(&self, path: &Path, clean: bool) -> Result<()> {
        let text = self.to_yaml(clean)?;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        crate::filesystem::write_atomic(path, text.as_bytes())
            .with_context(|| format!("writing the summary {}", path.display()))?;
        Ok(())
    }
}
