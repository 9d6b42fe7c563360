//! The filesystem half: which files hold secrets, and writing them back atomically.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Files larger than this are not configuration.
const MAX_FILE: u64 = 16 << 20;

/// A text file that may hold secrets.
pub struct TextFile {
    pub path: PathBuf,
    pub text: String,
}

impl TextFile {
    pub fn location(&self) -> String {
        format!("file {}", self.path.display())
    }
}

fn interesting(text: &str) -> bool {
    text.contains("-----BEGIN ") || text.contains("eyJ") || text.contains("-data:")
}

fn read_candidate(path: &Path, out: &mut Vec<TextFile>) -> Result<()> {
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Ok(());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    // Binary files cannot hold PEM, kubeconfig or JWT text.
    if let Ok(text) = String::from_utf8(bytes) {
        if interesting(&text) {
            out.push(TextFile {
                path: path.to_path_buf(),
                text,
            });
        }
    }
    Ok(())
}

fn walk_dir(dir: &Path, out: &mut Vec<TextFile>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let ft = e.file_type()?;
        // Symlinks are not followed: their targets are scanned where they live, if configured.
        if ft.is_dir() {
            walk_dir(&e.path(), out)?;
        } else if ft.is_file() {
            read_candidate(&e.path(), out)?;
        }
    }
    Ok(())
}

/// Read every candidate file under `dirs` and every one of `files`.
pub fn scan(dirs: &[PathBuf], files: &[PathBuf]) -> Result<Vec<TextFile>> {
    let mut out = vec![];
    for d in dirs {
        walk_dir(d, &mut out)?;
    }
    for f in files {
        read_candidate(f, &mut out)?;
    }
    // A file named in both places is one container.
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup_by(|a, b| a.path == b.path);
    Ok(out)
}

/// Replace (or create) `path` with `contents`, keeping an existing file's mode and owner:
/// write a temporary file next to it, then rename over it.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    // A new file gets 0644 and the caller's owner.
    let meta = match std::fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".recert-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    std::fs::write(tmp.path(), contents)
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    std::fs::set_permissions(
        tmp.path(),
        std::fs::Permissions::from_mode(
            meta.as_ref()
                .map_or(0o644, |m| m.permissions().mode() & 0o7777),
        ),
    )?;
    if let (Some(m), true) = (&meta, rustix::process::geteuid().is_root()) {
        std::os::unix::fs::chown(tmp.path(), Some(m.uid()), Some(m.gid()))
            .with_context(|| format!("setting the owner of {}", tmp.path().display()))?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_keeps_mode() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("k.key");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_dir(td.path()).unwrap().count(), 1);
    }

    #[test]
    fn scan_skips_binaries_and_symlinks() {
        let td = tempfile::tempdir().unwrap();
        std::fs::write(td.path().join("a.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        std::fs::write(td.path().join("b.bin"), [0xff, 0xfe, 0x00]).unwrap();
        std::fs::write(td.path().join("c.txt"), "hello").unwrap();
        std::os::unix::fs::symlink(td.path().join("a.crt"), td.path().join("d.crt")).unwrap();
        let found = scan(&[td.path().to_path_buf()], &[td.path().join("a.crt")]).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|f| f.path.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["a.crt"]);
    }
}
