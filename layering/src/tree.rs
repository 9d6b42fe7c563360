//! The merged file tree of an image, as lints need it: every path with its type and link
//! target, but no file content.
//!
//! Built either by walking a directory (a mounted image, or `/` inside a container build) or
//! by replaying an OCI image's layer tarballs in order with their whiteouts applied, without
//! extracting anything.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(PathBuf),
    /// A hardlink inside a layer tarball; resolved to a file when the tree is complete.
    Hardlink(PathBuf),
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
}

/// Paths are relative to the image root, without a leading `/` (the root itself is not listed).
/// Names are raw bytes: a non-UTF-8 name is kept as it is so that lints can report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    pub entries: BTreeMap<PathBuf, Entry>,
}

/// Normalize a tar path: strip `./` and `/`, refuse `..`. `None` for the root itself.
fn normalize(p: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => bail!("layer entry {} has a `..` component", p.display()),
            Component::Prefix(_) => bail!("layer entry {} has a prefix", p.display()),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

impl Tree {
    pub fn get(&self, p: &str) -> Option<&Entry> {
        self.entries.get(Path::new(p))
    }

    /// Entries strictly below `dir` (a relative path such as `usr/lib/modules`).
    pub fn children<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = (&'a PathBuf, &'a Entry)> {
        let prefix = PathBuf::from(dir);
        self.entries
            .range(prefix.clone()..)
            .skip_while(move |(p, _)| *p == &prefix)
            .take_while(move |(p, _)| p.starts_with(dir))
    }

    /// Remove `p` and everything below it.
    fn remove_subtree(&mut self, p: &Path) {
        self.entries.remove(p);
        let below: Vec<PathBuf> = self
            .entries
            .range(p.to_path_buf()..)
            .map(|(k, _)| k.clone())
            .take_while(|k| k.starts_with(p))
            .collect();
        for k in below {
            self.entries.remove(&k);
        }
    }

    /// Apply one layer tarball (uncompressed) on top of the tree: OCI whiteouts
    /// (`.wh.NAME` removes NAME, `.wh..wh..opq` empties its directory), then the entries.
    pub fn apply_layer(&mut self, layer: impl Read) -> Result<()> {
        use imgmode_image::tarstream::{Kind as TarKind, TarReader};
        let mut t = TarReader::new(layer);
        let mut opaque = Vec::new();
        let mut added = HashSet::new();
        while let Some(e) = t.next_entry().context("reading a layer tarball")? {
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(&e.path));
            let Some(path) = normalize(&path)? else {
                continue;
            };
            let name = path.file_name().unwrap_or_default().as_bytes();
            if name == b".wh..wh..opq" {
                opaque.push(path.parent().map(Path::to_path_buf).unwrap_or_default());
                continue;
            }
            if let Some(victim) = name.strip_prefix(b".wh.") {
                let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
                let victim = parent.join(std::ffi::OsStr::from_bytes(victim));
                self.remove_subtree(&victim);
                continue;
            }
            let link = || PathBuf::from(std::ffi::OsStr::from_bytes(&e.link));
            let kind = match e.kind {
                Some(TarKind::File) => Kind::File,
                Some(TarKind::Directory) => Kind::Dir,
                Some(TarKind::Symlink) => Kind::Symlink(link()),
                Some(TarKind::HardLink) => Kind::Hardlink(normalize(&link())?.unwrap_or_default()),
                _ => Kind::Other,
            };
            // A non-directory replaces whatever was there, including a directory's subtree.
            if kind != Kind::Dir {
                self.remove_subtree(&path);
            }
            added.insert(path.clone());
            self.entries.insert(path, Entry { kind });
        }
        // to the stream's end (a verifying blob reader checks the layer's digest there)
        std::io::copy(&mut t.into_inner(), &mut std::io::sink()).context("reading a layer")?;
        // An opaque directory hides everything the lower layers had below it.
        for dir in opaque {
            let below: Vec<PathBuf> = self
                .children(dir.to_str().unwrap_or_default())
                .map(|(p, _)| p.clone())
                .filter(|p| !added.contains(p))
                .collect();
            for p in below {
                self.entries.remove(&p);
            }
        }
        self.resolve_hardlinks();
        Ok(())
    }

    fn resolve_hardlinks(&mut self) {
        let links: Vec<(PathBuf, PathBuf)> = self
            .entries
            .iter()
            .filter_map(|(p, e)| match &e.kind {
                Kind::Hardlink(t) => Some((p.clone(), t.clone())),
                _ => None,
            })
            .collect();
        for (p, target) in links {
            let resolved = self
                .entries
                .get(&target)
                .cloned()
                .unwrap_or(Entry { kind: Kind::File });
            self.entries.insert(p, resolved);
        }
    }

    /// Walk a directory tree (not following symlinks, not crossing into other filesystems
    /// below `root` when `one_fs` is set). Types come from the directory entries (no `stat`
    /// per file: a bootable image has ~50,000 entries); only directories are `stat`ed, and only
    /// for `one_fs`.
    pub fn from_dir(root: &Path, one_fs: bool) -> Result<Tree> {
        let mut t = Tree::default();
        let root_dev = std::fs::symlink_metadata(root)
            .with_context(|| format!("reading {}", root.display()))?
            .dev();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = root.join(&rel);
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
            };
            for de in rd {
                let de = de?;
                let p = rel.join(de.file_name());
                let ft = de.file_type()?;
                let kind = if ft.is_dir() {
                    if !one_fs || de.metadata()?.dev() == root_dev {
                        stack.push(p.clone());
                    }
                    Kind::Dir
                } else if ft.is_symlink() {
                    Kind::Symlink(std::fs::read_link(de.path())?)
                } else if ft.is_file() {
                    Kind::File
                } else {
                    Kind::Other
                };
                t.entries.insert(p, Entry { kind });
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A layer tarball from (path, kind) pairs; `Kind::File` entries hold 3 bytes.
    pub fn layer(entries: &[(&str, Kind)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, k) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            match k {
                Kind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, p, std::io::empty()).unwrap();
                }
                Kind::File => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(3);
                    b.append_data(&mut h, p, &b"abc"[..]).unwrap();
                }
                Kind::Symlink(t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, p, t).unwrap();
                }
                Kind::Hardlink(t) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, p, t).unwrap();
                }
                Kind::Other => {
                    h.set_entry_type(tar::EntryType::Fifo);
                    h.set_size(0);
                    b.append_data(&mut h, p, std::io::empty()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_and_replacements() {
        let mut t = Tree::default();
        t.apply_layer(
            &layer(&[
                ("usr", Kind::Dir),
                ("usr/a", Kind::File),
                ("usr/b", Kind::Dir),
                ("usr/b/c", Kind::File),
                ("opt", Kind::Dir),
                ("opt/x", Kind::File),
                ("link", Kind::Hardlink("usr/a".into())),
            ])[..],
        )
        .unwrap();
        assert_eq!(t.get("link").unwrap().kind, Kind::File);
        t.apply_layer(
            &layer(&[
                ("usr/.wh.a", Kind::File),
                ("usr/b", Kind::Symlink("a".into())),
                ("opt/.wh..wh..opq", Kind::File),
                ("opt/y", Kind::File),
            ])[..],
        )
        .unwrap();
        assert!(t.get("usr/a").is_none());
        assert!(
            t.get("usr/b/c").is_none(),
            "a symlink replaced the directory"
        );
        assert_eq!(t.get("usr/b").unwrap().kind, Kind::Symlink("a".into()));
        assert!(
            t.get("opt/x").is_none(),
            "opaque directory hides lower content"
        );
        assert!(t.get("opt/y").is_some());
        let kids: Vec<_> = t.children("usr").map(|(p, _)| p.clone()).collect();
        assert_eq!(kids, vec![PathBuf::from("usr/b")]);
    }

    #[test]
    fn dotdot_is_refused() {
        let mut raw = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Regular);
        // tar::Builder refuses `..`, so write the name into the header directly.
        h.as_old_mut().name[..8].copy_from_slice(b"../evil\0");
        h.set_cksum();
        raw.append(&h, std::io::empty()).unwrap();
        let bytes = raw.into_inner().unwrap();
        let err = Tree::default().apply_layer(&bytes[..]).unwrap_err();
        assert!(format!("{err:#}").contains("`..`"), "{err:#}");
    }

    #[test]
    fn walks_a_directory() {
        let td = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(td.path().join("var")).unwrap();
        std::os::unix::fs::symlink("../run", td.path().join("var/run")).unwrap();
        std::fs::write(td.path().join("f"), "x").unwrap();
        let t = Tree::from_dir(td.path(), true).unwrap();
        assert_eq!(
            t.get("var/run").unwrap().kind,
            Kind::Symlink("../run".into())
        );
        assert_eq!(t.get("f").unwrap().kind, Kind::File);
        assert_eq!(t.get("var").unwrap().kind, Kind::Dir);
    }
}
