//! The plan recert commits, kept on disk while it commits. Every etcd object and file that
//! changes, with its new content, and the summary are written (0600, synced, by temporary name)
//! before the first change; the journal is deleted after the last change and the summary. A run
//! that finds a journal does not plan again: it writes every entry again (each write makes the
//! entry's content whole, whatever it was), writes the summary and deletes the journal. So an
//! interruption anywhere in the commit leaves a cluster the next run finishes with exactly the
//! keys and certificates the first run chose, never a mix of two plans.
//!
//! The journal holds the new private keys: it lives next to the summary file (or where
//! `plan_file` says), private to its owner, and no longer than the commit.

use crate::etcd::{Etcd, EtcdObject};
use crate::summary::Summary;
use anyhow::{Context, Result};
use imgmode_support::runtime::block_on;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
pub(crate) struct Journal {
    pub(crate) objects: Vec<EtcdObject>,
    pub(crate) files: Vec<(PathBuf, String)>,
    pub(crate) summary: Summary,
}

/// Where the journal of a run with this configuration lives: `plan_file`, else next to the
/// summary file (`<summary_file>.plan`); `None` without either (no resume is possible).
pub(crate) fn path(cfg: &crate::RecertConfig) -> Option<PathBuf> {
    cfg.plan_file.clone().or_else(|| {
        cfg.summary_file.as_ref().map(|s| {
            let mut p = s.clone().into_os_string();
            p.push(".plan");
            PathBuf::from(p)
        })
    })
}

impl Journal {
    /// Write it (0600, synced with its directory) before anything changes.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        imgmode_support::fs::write_private(path, &serde_json::to_string(self)?)
            .with_context(|| format!("writing recert's plan {}", path.display()))
    }

    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading recert's plan {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "recert's plan {} is damaged; the cluster is half re-signed: restore it from a backup",
                path.display()
            )
        })
    }

    /// Delete it, syncing its directory, once the commit and the summary are done.
    pub(crate) fn remove(path: &Path) -> Result<()> {
        imgmode_support::fs::remove_path(path)?;
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            imgmode_support::fs::sync_dir(d)?;
        }
        Ok(())
    }
}

/// Make every entry of the journal true, then every file. A first run writes each object
/// guarded by the revision it was scanned at (a concurrent writer fails the run); a resumed
/// run writes the objects whose value differs over the revision they have now (the run that
/// wrote the journal may have changed them already). `interrupt_after` stops after that many
/// writes (tests).
pub(crate) fn apply(
    etcd: Option<&mut Etcd>,
    objects: &[EtcdObject],
    files: &[(PathBuf, String)],
    resume: bool,
    interrupt_after: Option<usize>,
    written: &mut Vec<String>,
) -> Result<()> {
    // a write is counted once it is made: a run that fails before its first write changed
    // nothing (and its caller may plan again)
    let interrupt = |written: &Vec<String>| -> Result<()> {
        if interrupt_after == Some(written.len()) {
            anyhow::bail!(
                "recert interrupted after {} writes (a test's interruption)",
                written.len()
            );
        }
        Ok(())
    };
    anyhow::ensure!(
        objects.is_empty() || etcd.is_some(),
        "recert's plan holds {} etcd objects and no etcd_endpoint is given; run it with the same etcd_endpoint to finish the plan",
        objects.len()
    );
    if let (Some(e), false) = (etcd, objects.is_empty()) {
        let now: BTreeMap<String, EtcdObject> = if resume {
            block_on(e.scan())??
                .into_iter()
                .map(|o| (o.key.clone(), o))
                .collect()
        } else {
            BTreeMap::new()
        };
        for obj in objects {
            interrupt(written)?;
            let current = now.get(&obj.key);
            if !resume {
                block_on(e.put(obj))??;
            } else if !current.is_some_and(|c| c.value == obj.value) {
                let put = EtcdObject {
                    mod_revision: current.map_or(0, |c| c.mod_revision),
                    ..obj.clone()
                };
                block_on(e.put(&put))??;
            }
            written.push(format!("etcd {}", obj.key));
        }
    }
    let mut dirs = std::collections::BTreeSet::new();
    for (path, text) in files {
        interrupt(written)?;
        crate::filesystem::write_atomic(path, text.as_bytes())?;
        written.push(format!("file {}", path.display()));
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_path_buf());
        }
    }
    // the renames are durable before the plan may go
    for d in dirs {
        imgmode_support::fs::sync_dir(&d)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_lives_where_it_is_told_or_next_to_the_summary() {
        let mut c = crate::RecertConfig::default();
        assert_eq!(path(&c), None);
        c.summary_file = Some("/s/summary.yaml".into());
        assert_eq!(path(&c), Some(PathBuf::from("/s/summary.yaml.plan")));
        c.plan_file = Some("/p/plan".into());
        assert_eq!(path(&c), Some(PathBuf::from("/p/plan")));
    }
}
