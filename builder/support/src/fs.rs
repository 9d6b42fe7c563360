//! Filesystem helpers: atomic and private writes, scratch work directories under
//! `<cache>/work`, free space, writes at an offset.
//!
//! A build's scratch tree can hold an ostree deployment, and ostree marks every deployment root
//! immutable (`chattr +i`), so a plain recursive delete fails with EPERM and, because
//! `tempfile::TempDir` ignores errors on drop, would leave gigabytes behind on every run.
//! [`WorkDir`] clears those flags before removing the tree, and records its owner's pid so that
//! the next build can remove trees left by a process that was killed.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::IFlags;
use std::io::{Seek, SeekFrom, Write};

const OWNER_FILE: &str = ".imgmode-owner-pid";

/// Write `contents` to `path` with permission bits `mode`, by a temporary file in the same
/// directory renamed over `path` when complete; the directory is made. The temporary file is
/// created 0600 (tempfile's mode) and given `mode` before a byte is written; the data is synced
/// before the rename and the directory after it, so a crash leaves the old file or the new one,
/// never an empty or partial one.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    std::io::Write::write_all(&mut tmp, contents)?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    sync_dir(dir)
}

/// Make a directory's entries (a rename, a new file) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the directory {}", dir.display()))
}

/// Write a file only root can read (mode 0600), through a temporary name renamed when
/// complete; the parent directories are made.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, text.as_bytes(), 0o600)
}

/// A scratch directory removed (immutable flags and all) when dropped.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Create `<parent>/<prefix>XXXXXX`, first removing siblings whose owner process is gone.
    pub fn new(parent: &Path, prefix: &str) -> Result<Self> {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        sweep_stale(parent)?;
        let path = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(parent)
            .with_context(|| format!("creating a work directory in {}", parent.display()))?
            .keep();
        std::fs::write(path.join(OWNER_FILE), std::process::id().to_string())
            .with_context(|| format!("writing {}", path.join(OWNER_FILE).display()))?;
        Ok(WorkDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.path) {
            tracing::warn!("could not remove {}: {e:#}", self.path.display());
        }
    }
}

/// Remove a tree, clearing the immutable and append-only flags that block the removal.
pub fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    clear_flags(path)
        .with_context(|| format!("clearing immutable flags under {}", path.display()))?;
    std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
}

/// Remove `path` whatever it is: a directory tree ([`remove_tree`]), or a file or symlink (not
/// followed); a path that is not there is fine.
pub fn remove_path(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => remove_tree(path),
        Ok(_) => std::fs::remove_file(path).with_context(|| format!("removing {}", path.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn clear_flags(dir: &Path) -> Result<()> {
    let blocking = IFlags::IMMUTABLE | IFlags::APPEND;
    let f = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    // Filesystems without inode flags (tmpfs) cannot have set them either.
    if let Ok(flags) = rustix::fs::ioctl_getflags(&f) {
        if flags.intersects(IFlags::IMMUTABLE | IFlags::APPEND) {
            rustix::fs::ioctl_setflags(&f, flags - blocking)
                .with_context(|| format!("clearing the immutable flag of {}", dir.display()))?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            clear_flags(&entry.path())?;
        }
    }
    Ok(())
}

/// Remove work directories whose owner pid no longer runs (killed builds).
fn sweep_stale(parent: &Path) -> Result<()> {
    for entry in std::fs::read_dir(parent)? {
        let entry = entry?;
        let owner = entry.path().join(OWNER_FILE);
        let pid = match std::fs::read_to_string(&owner) {
            Ok(s) => s.trim().parse::<u32>().ok(),
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", owner.display())),
        };
        let alive = pid.is_some_and(crate::host::process_alive);
        if !alive {
            tracing::info!("removing stale work directory {}", entry.path().display());
            remove_tree(&entry.path())?;
        }
    }
    Ok(())
}

/// The directory an output file goes to (where its temporary file is made); it must exist.
pub fn output_parent(output: &Path) -> Result<&Path> {
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!("output directory {} does not exist", parent.display());
    }
    Ok(parent)
}

/// Bytes available on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    Ok(st.f_bavail * st.f_frsize)
}

/// Bytes used under `p` (du).
pub fn du_bytes(p: &Path) -> Result<u64> {
    let out = crate::cmd::Run::new("du")
        .args(["-s", "-B1", "--apparent-size"])
        .arg(p)
        .read()?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("unexpected du output {out:?}"))
}

/// Write `data` at byte `offset` of `path`.
pub fn write_at(path: &Path, offset: u64, data: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(data)?;
    f.sync_data()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_removes_the_tree() {
        let td = tempfile::tempdir().unwrap();
        let w = WorkDir::new(td.path(), "t-").unwrap();
        let p = w.path().to_path_buf();
        std::fs::create_dir_all(p.join("a/b")).unwrap();
        std::fs::write(p.join("a/b/f"), "x").unwrap();
        drop(w);
        assert!(!p.exists());
    }

    #[test]
    fn stale_directories_of_dead_owners_are_swept() {
        let td = tempfile::tempdir().unwrap();
        let stale = td.path().join("disk-old");
        std::fs::create_dir(&stale).unwrap();
        // pid 0 never names a user process.
        std::fs::write(stale.join(OWNER_FILE), "0").unwrap();
        let live = td.path().join("disk-live");
        std::fs::create_dir(&live).unwrap();
        std::fs::write(live.join(OWNER_FILE), std::process::id().to_string()).unwrap();
        let foreign = td.path().join("not-ours");
        std::fs::create_dir(&foreign).unwrap();

        let _w = WorkDir::new(td.path(), "t-").unwrap();
        assert!(!stale.exists());
        assert!(live.exists());
        assert!(foreign.exists());
    }

    #[test]
    fn immutable_deployment_roots_are_removed() {
        // Needs root and a filesystem with inode flags (ext4 here); ostree sets +i on deployments.
        imgmode_testkit::require!(imgmode_testkit::Need::Root);
        let td = tempfile::tempdir_in("/var/tmp").unwrap();
        let w = WorkDir::new(td.path(), "t-").unwrap();
        let deploy = w.path().join("ostree/deploy/default/deploy/abc.0");
        std::fs::create_dir_all(deploy.join("etc")).unwrap();
        let f = std::fs::File::open(&deploy).unwrap();
        match rustix::fs::ioctl_getflags(&f) {
            Ok(flags) => rustix::fs::ioctl_setflags(&f, flags | IFlags::IMMUTABLE).unwrap(),
            Err(_) => return,
        }
        drop(f);
        assert!(std::fs::remove_dir_all(w.path()).is_err());
        let p = w.path().to_path_buf();
        drop(w);
        assert!(!p.exists());
    }
}
