//! Writes into the installed root once the seed's tarballs are in it. The seed comes from
//! someone else and may hold symlinks (`etc -> /`, `var/lib/containers -> /`), so every path
//! after the extraction is opened beneath a directory handle (`cap-std`): a path that would
//! leave the root through a symlink is refused, never followed onto the installer's own
//! files. The extractor itself already works this way ([`imgmode_image::extract`]).

use anyhow::{Context, Result};
use cap_std::fs::{Dir, Permissions, PermissionsExt};
use cap_std_ext::dirext::CapStdExtDirExt;
use std::path::{Component, Path, PathBuf};

/// A directory of the installed root (the deployment, the stateroot), as a handle.
pub(crate) struct InRoot {
    dir: Dir,
    /// Its path, for messages and for the mount points it vouches for.
    path: PathBuf,
    /// What it is, in messages ("the deployment").
    what: &'static str,
}

impl InRoot {
    pub(crate) fn open(path: &Path, what: &'static str) -> Result<Self> {
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())
            .with_context(|| format!("opening {what} {}", path.display()))?;
        Ok(InRoot {
            dir,
            path: path.to_path_buf(),
            what,
        })
    }

    /// The error for `rel`, naming the seed's symlink as the likely cause when the path left
    /// the root.
    fn err(&self, doing: &str, rel: &Path, e: std::io::Error) -> anyhow::Error {
        let escaped = e.kind() == std::io::ErrorKind::PermissionDenied
            || e.to_string().contains("outside of the filesystem");
        if escaped {
            anyhow::anyhow!(
                "{doing} {} in {} {}: the path leads outside it (through a symlink the seed holds: {e}); the seed is refused and nothing outside {} was touched",
                rel.display(),
                self.what,
                self.path.display(),
                self.path.display()
            )
        } else {
            anyhow::Error::new(e).context(format!(
                "{doing} {} in {} {}",
                rel.display(),
                self.what,
                self.path.display()
            ))
        }
    }

    /// Remove `rel` (a tree, a file or a link; never what a link points to). Returns whether
    /// it existed.
    pub(crate) fn remove(&self, rel: &Path) -> Result<bool> {
        self.check_way("removing", rel)?;
        let md = match self.dir.symlink_metadata(rel) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.err("removing", rel, e)),
        };
        if md.is_dir() {
            self.dir.remove_dir_all(rel)
        } else {
            self.dir.remove_file(rel)
        }
        .map_err(|e| self.err("removing", rel, e))?;
        Ok(true)
    }

    /// Every directory on the way to `rel` that is a symlink must resolve inside the root
    /// (`rel` itself is never followed: it is replaced or removed as it is).
    fn check_way(&self, doing: &str, rel: &Path) -> Result<()> {
        let mut prefix = PathBuf::new();
        let parent = rel.parent().unwrap_or(Path::new(""));
        for c in parent.components() {
            prefix.push(c);
            let Ok(md) = self.dir.symlink_metadata(&prefix) else {
                return Ok(());
            };
            if md.file_type().is_symlink() {
                if let Err(e) = self.dir.canonicalize(&prefix) {
                    anyhow::bail!(
                        "{doing} {} in {} {}: the path leads outside it ({} is a symlink the seed holds that leaves it: {e}); the seed is refused and nothing outside {} was touched",
                        rel.display(),
                        self.what,
                        self.path.display(),
                        prefix.display(),
                        self.path.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// `rel`'s parent directories, made when missing.
    fn parents(&self, rel: &Path) -> Result<()> {
        if let Some(p) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.dir
                .create_dir_all(p)
                .map_err(|e| self.err("creating", p, e))?;
        }
        Ok(())
    }

    /// Write `data` to `rel` with `mode` from the start (a temporary file, synced, renamed).
    pub(crate) fn write(&self, rel: &Path, data: &[u8], mode: u32) -> Result<()> {
        self.check_way("writing", rel)?;
        self.parents(rel)?;
        self.dir
            .atomic_write_with_perms(rel, data, Permissions::from_mode(mode))
            .map_err(|e| self.err("writing", rel, e))
    }

    /// A symlink at `rel` (replacing a file or link there) pointing to `target`, which is not
    /// resolved here.
    pub(crate) fn symlink(&self, target: &str, rel: &Path) -> Result<()> {
        self.check_way("linking", rel)?;
        self.parents(rel)?;
        match self.dir.symlink_metadata(rel) {
            Ok(md) if !md.is_dir() => self
                .dir
                .remove_file(rel)
                .map_err(|e| self.err("replacing", rel, e))?,
            _ => {}
        }
        self.dir
            .symlink_contents(target, rel)
            .map_err(|e| self.err("linking", rel, e))
    }

    /// A directory at `rel` with `mode`, made when missing.
    pub(crate) fn dir(&self, rel: &Path, mode: u32) -> Result<()> {
        // every component of a directory to make is on the way
        self.check_way("creating", &rel.join("x"))?;
        self.dir
            .create_dir_all(rel)
            .map_err(|e| self.err("creating", rel, e))?;
        self.dir
            .set_permissions(rel, Permissions::from_mode(mode))
            .map_err(|e| self.err("setting the mode of", rel, e))
    }

    /// The path of the directory `rel` (made when missing) for a mount on it, vouched for:
    /// no component of it is a symlink, so the mount lands where its name says.
    pub(crate) fn mount_point(&self, rel: &Path) -> Result<PathBuf> {
        let mut prefix = PathBuf::new();
        for c in rel.components() {
            prefix.push(c);
            match self.dir.symlink_metadata(&prefix) {
                Ok(md) if md.file_type().is_symlink() => anyhow::bail!(
                    "the mount point {} in {} {} is reached through a symlink ({} is one, from the seed); the seed is refused",
                    rel.display(),
                    self.what,
                    self.path.display(),
                    prefix.display()
                ),
                _ => {}
            }
        }
        self.dir
            .create_dir_all(rel)
            .map_err(|e| self.err("creating the mount point", rel, e))?;
        let real = self
            .dir
            .canonicalize(rel)
            .map_err(|e| self.err("resolving the mount point", rel, e))?;
        let plain: PathBuf = rel
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        anyhow::ensure!(
            real == plain,
            "the mount point {} in {} {} is reached through a symlink (it resolves to {}); the seed is refused",
            rel.display(),
            self.what,
            self.path.display(),
            real.display()
        );
        Ok(self.path.join(plain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile tree: `etc` and `var/lib/containers` to a directory outside, an in-tree link
    /// and a link through `..` past the top. Nothing outside the root is touched, in-tree work goes on.
    #[test]
    fn nothing_leaves_the_root() {
        let td = tempfile::tempdir().unwrap();
        let root = td.path().join("root");
        let outside = td.path().join("outside");
        std::fs::create_dir_all(root.join("var/lib")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), "host file").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("var/lib/containers")).unwrap();
        std::os::unix::fs::symlink("../../../outside", root.join("usr/lib/up")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        let r = InRoot::open(&root, "the deployment").unwrap();

        let e = r.remove(Path::new("etc/victim")).unwrap_err().to_string();
        assert!(e.contains("leads outside it"), "{e}");
        let e = r
            .write(Path::new("etc/systemd/system/x.mount"), b"x", 0o644)
            .unwrap_err()
            .to_string();
        assert!(e.contains("leads outside it"), "{e}");
        let e = r
            .symlink("../x.mount", Path::new("etc/wants/x.mount"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("leads outside it"), "{e}");
        let e = r
            .write(Path::new("usr/lib/up/victim"), b"x", 0o644)
            .unwrap_err()
            .to_string();
        assert!(e.contains("leads outside it"), "{e}");
        let e = r
            .mount_point(Path::new("var/lib/containers"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("leads outside it") || e.contains("symlink"),
            "{e}"
        );
        // an in-tree link is still not a place to mount on
        let e = r.mount_point(Path::new("lib")).unwrap_err().to_string();
        assert!(e.contains("through a symlink"), "{e}");
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "host file"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);

        // in-tree work goes on: a file through an in-tree link, modes from the start
        r.write(Path::new("lib/a/b.conf"), b"ok", 0o600).unwrap();
        let m = std::fs::metadata(root.join("usr/lib/a/b.conf")).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        r.symlink("../b.conf", Path::new("usr/lib/a/w/b.conf"))
            .unwrap();
        r.symlink("/usr/lib/a/b.conf", Path::new("usr/lib/a/w/b.conf"))
            .unwrap();
        assert!(r.remove(Path::new("usr/lib/a/w")).unwrap());
        assert!(!r.remove(Path::new("usr/lib/a/w")).unwrap());
        let p = r.mount_point(Path::new("var/lib/storage")).unwrap();
        assert_eq!(p, root.join("var/lib/storage"));
        assert!(p.is_dir());
    }
}
