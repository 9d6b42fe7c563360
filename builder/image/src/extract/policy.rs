//! What an archive format may carry ([`Policy`], [`Special`]) and how many bytes an unpack
//! may still write ([`Budget`]).

use anyhow::{bail, Result};
use std::path::Path;

/// Where device nodes and FIFOs may be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// Neither (the seed image's layer, which holds plain files only).
    Refuse,
    /// Devices under `dev/`, FIFOs under `dev/`, `run/`, `tmp/`, `var/`.
    SystemPlaces,
}

/// What an archive format may carry.
#[derive(Debug, Clone)]
pub struct Policy {
    /// OCI layer semantics: `.wh.NAME` removes NAME, `.wh..wh..opq` hides the lower layers'
    /// contents of its directory.
    pub whiteouts: bool,
    /// Apply the archive's numeric owners (needs root); otherwise files belong to the caller.
    pub owners: bool,
    /// Keep setuid/setgid bits (only ever with `owners`).
    pub setid: bool,
    /// Restore extended attributes, POSIX ACLs and SELinux labels from PAX records.
    pub xattrs: bool,
    pub special: Special,
}

impl Policy {
    /// An OCI image layer: whiteouts, owners and setid bits when running as root, xattrs.
    pub fn image_layer() -> Self {
        let root = rustix::process::geteuid().is_root();
        Policy {
            whiteouts: true,
            owners: root,
            setid: root,
            xattrs: root,
            special: Special::SystemPlaces,
        }
    }

    /// A system tarball made by GNU tar with `--xattrs --acls --selinux --numeric-owner`
    /// (the seed's `ostree`, `etc` and `var` tarballs): everything restored as tar would.
    pub fn system_archive() -> Self {
        Policy {
            whiteouts: false,
            owners: true,
            setid: true,
            xattrs: true,
            special: Special::SystemPlaces,
        }
    }

    /// Plain files, directories and links only (the seed image's layer).
    pub fn plain() -> Self {
        Policy {
            whiteouts: false,
            owners: false,
            setid: false,
            xattrs: false,
            special: Special::Refuse,
        }
    }
}

/// How many bytes an unpack may still write; shared by the layers of one image.
#[derive(Debug, Clone)]
pub struct Budget {
    pub total: u64,
    pub left: u64,
}

impl Budget {
    pub fn new(total: u64) -> Self {
        Budget { total, left: total }
    }

    /// The free space of the filesystem holding `dir` (less 1 %, at least 64 MiB, kept
    /// free), capped by `max` when given.
    pub fn free_space(dir: &Path, max: Option<u64>) -> Result<Self> {
        let free = imgmode_support::fs::free_bytes(dir)?;
        let reserve = (free / 100).max(64 << 20);
        let b = free.saturating_sub(reserve);
        Ok(Budget::new(max.map_or(b, |m| m.min(b))))
    }

    pub(super) fn take(&mut self, name: &str, n: u64) -> Result<()> {
        if n > self.left {
            bail!(
                "hostile archive: entry {name:?} claims {n} bytes, more than the {} bytes left of \
                 the unpack budget ({} bytes): refused (a decompression bomb or a corrupt header; \
                 free space or raise --max-size if the image really is that big)",
                self.left,
                self.total
            );
        }
        self.left -= n;
        Ok(())
    }
}
