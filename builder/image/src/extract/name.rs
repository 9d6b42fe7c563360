//! Names inside an archive, checked before anything is written under them.

use anyhow::{anyhow, bail, Result};
use std::path::PathBuf;

/// A name inside the archive, split into checked components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(pub(super) Vec<String>);

impl Name {
    /// Check a raw archive name: UTF-8, no `..`, leading `/` and `.` components dropped.
    pub fn parse(raw: &[u8]) -> Result<Self> {
        let s = std::str::from_utf8(raw).map_err(|_| {
            anyhow!(
                "hostile archive: entry name {:?} is not UTF-8: refused (ostree stores UTF-8 \
                 names only)",
                String::from_utf8_lossy(raw)
            )
        })?;
        if s.contains('\0') {
            bail!("hostile archive: entry name {s:?} holds a NUL byte: refused");
        }
        let mut parts = vec![];
        for c in s.split('/') {
            match c {
                "" | "." => {}
                ".." => bail!(
                    "hostile archive: entry {s:?} has a \"..\" component and would write outside \
                     the target: refused"
                ),
                c => parts.push(c.to_string()),
            }
        }
        Ok(Name(parts))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn path(&self) -> PathBuf {
        self.0.iter().collect()
    }

    pub(super) fn display(&self) -> String {
        self.0.join("/")
    }

    pub(super) fn parent(&self) -> PathBuf {
        self.0[..self.0.len() - 1].iter().collect()
    }

    pub(super) fn file_name(&self) -> &str {
        &self.0[self.0.len() - 1]
    }

    pub(super) fn under(&self, tops: &[&str]) -> bool {
        self.0.len() > 1 && tops.contains(&self.0[0].as_str())
    }
}
