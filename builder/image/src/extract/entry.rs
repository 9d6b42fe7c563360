//! The extractor proper: each entry checked against the [`Policy`], its parent opened beneath
//! the target, what stood at its name cleared, and the entry made there by [`super::write`];
//! whiteouts and opaque directories applied, directory modes set last.

use super::name::Name;
use super::policy::{Budget, Policy, Special};
use super::pool::{FileKey, Job, WritePool};
use super::sparse::{PaxSparse, SparseLayout};
use super::write::{make_dir, make_node, make_symlink, times, write_file, Made, DIRECT_MIN};
use super::xattrs::acl_from_text;
use super::Unpacked;
use crate::tarstream::{Entry, Kind};
use anyhow::{anyhow, bail, Context, Result};
use cap_std::fs::Dir;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A directory entries go into, and its identity (device, inode).
pub(super) struct Parent {
    dir: Arc<Dir>,
    id: (u64, u64),
}

impl std::os::fd::AsFd for Parent {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

impl std::ops::Deref for Parent {
    type Target = Dir;
    fn deref(&self) -> &Dir {
        &self.dir
    }
}

pub(super) struct Extractor<'a> {
    root: &'a Dir,
    policy: &'a Policy,
    /// Everything this archive wrote, with its ancestors (an opaque whiteout keeps them).
    seen: HashSet<PathBuf>,
    /// Directories whose mode and mtime are set at the end (so read-only ones still fill).
    dirs: Vec<(Name, u32, i64)>,
    /// The last parent directory opened (archives list a directory's entries together);
    /// dropped whenever anything is removed, since a removal can change what a path means.
    cache: Option<(PathBuf, Parent)>,
    /// Directories hard link targets were found in (ostree-ext layers link every file into
    /// the repository's 256 object directories); cleared on every removal.
    link_dirs: std::collections::HashMap<PathBuf, Dir>,
    /// Small regular files are written by these workers (`None` on one CPU).
    pool: Option<WritePool>,
    pub(super) out: Unpacked,
}

/// Errors from cap-std that mean "this path leaves the target".
fn escapes(e: &std::io::Error) -> bool {
    e.to_string().contains("outside of the filesystem")
}

fn io_err(e: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(e)
}

/// Extended attributes: name, value.
type Xattrs = Vec<(String, Vec<u8>)>;

/// The extended attributes an entry's PAX records carry (as far as `policy` restores them)
/// and its PAX sparse records.
fn pax_records(e: &Entry, policy: &Policy) -> Result<(Xattrs, PaxSparse)> {
    let lossy = || String::from_utf8_lossy(&e.path).into_owned();
    let mut xattrs: Xattrs = vec![];
    let mut sp = PaxSparse::default();
    for (key, v) in &e.pax {
        let num = || {
            std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
        };
        match key.as_str() {
            "GNU.sparse.name" => sp.name = Some(v.clone()),
            "GNU.sparse.realsize" | "GNU.sparse.size" => sp.realsize = num(),
            "GNU.sparse.major" => sp.major = num(),
            "GNU.sparse.minor" => sp.minor = num(),
            "GNU.sparse.map" => sp.map = Some(String::from_utf8_lossy(v).into_owned()),
            "GNU.sparse.offset" | "GNU.sparse.numbytes" => bail!(
                "entry {:?} uses GNU tar's sparse format 0.0, which imgmode does not read: \
                 re-create the archive with GNU tar 1.27 or later",
                lossy()
            ),
            "SCHILY.acl.access" | "SCHILY.acl.default" if policy.xattrs => {
                let which = key.rsplit('.').next().unwrap_or("access");
                let bin = acl_from_text(&String::from_utf8_lossy(v))
                    .with_context(|| format!("entry {:?}: its ACL record {key}", lossy()))?;
                xattrs.push((format!("system.posix_acl_{which}"), bin));
            }
            "RHT.security.selinux" if policy.xattrs => {
                xattrs.push(("security.selinux".into(), v.clone()))
            }
            k if policy.xattrs && k.starts_with("SCHILY.xattr.") => {
                xattrs.push((k["SCHILY.xattr.".len()..].to_string(), v.clone()))
            }
            _ => {}
        }
    }
    Ok((xattrs, sp))
}

/// Device nodes and FIFOs only where `policy` allows them (checks that need nothing written).
fn check_special(policy: &Policy, kind: Kind, name: &Name, shown: &str) -> Result<()> {
    let refuse = policy.special == Special::Refuse;
    match kind {
        Kind::Char | Kind::Block if refuse || !name.under(&["dev"]) => bail!(
            "hostile archive: device node {shown:?} outside dev/: refused (device nodes are \
             allowed under dev/ only)"
        ),
        Kind::Fifo if refuse || !name.under(&["dev", "run", "tmp", "var"]) => {
            bail!("hostile archive: FIFO {shown:?} outside dev/, run/, tmp/ and var/: refused")
        }
        _ => {}
    }
    Ok(())
}

/// Where a file's data goes when it is sparse (old GNU `S` members, PAX sparse records), and
/// how many bytes the entry writes.
fn layout_and_size(e: &Entry, kind: Kind, sp: &PaxSparse) -> Result<(Option<SparseLayout>, u64)> {
    let sparse = match kind {
        Kind::GnuSparse => Some(SparseLayout {
            realsize: e.real_size.unwrap_or(0),
            map: Some(e.sparse.clone()),
        }),
        Kind::File => sp.layout()?,
        _ => None,
    };
    let size = match (&sparse, kind) {
        (Some(s), _) => s.realsize,
        (None, Kind::File) => e.size,
        _ => 0,
    };
    Ok((sparse, size))
}

/// A link's target, which must be UTF-8 (`None` for entries that are no links).
fn link_target(e: &Entry, kind: Kind, shown: &str) -> Result<Option<String>> {
    Ok(match kind {
        Kind::Symlink | Kind::HardLink => {
            Some(String::from_utf8(e.link.clone()).map_err(|_| {
                anyhow!("hostile archive: link {shown:?} has a non-UTF-8 target: refused")
            })?)
        }
        _ => None,
    })
}

impl<'a> Extractor<'a> {
    pub(super) fn new(root: &'a Dir, policy: &'a Policy) -> Self {
        Extractor {
            root,
            policy,
            seen: HashSet::new(),
            dirs: vec![],
            cache: None,
            link_dirs: Default::default(),
            pool: WritePool::for_this_machine(),
            out: Unpacked::default(),
        }
    }
}

impl Extractor<'_> {
    pub(super) fn entry(
        &mut self,
        e: &Entry,
        data: &mut impl Read,
        budget: &mut Budget,
    ) -> Result<()> {
        let lossy = || String::from_utf8_lossy(&e.path).into_owned();
        let Some(kind) = e.kind else {
            bail!(
                "entry {:?} has the unsupported tar type {:?}: refused",
                lossy(),
                e.type_byte as char
            );
        };
        let (xattrs, sp) = pax_records(e, self.policy)?;
        // a PAX sparse file is stored under a made-up name; its real one is GNU.sparse.name
        let name = Name::parse(sp.name.as_deref().unwrap_or(&e.path))?;
        let shown = name.display();
        self.out.entries += 1;
        if name.is_root() {
            if kind == Kind::Directory {
                return Ok(());
            }
            bail!(
                "hostile archive: a {kind:?} entry names the target directory itself ({:?}): refused",
                lossy()
            );
        }
        if self.policy.whiteouts && name.file_name().starts_with(".wh.") {
            self.wait_for_writes()?;
            return self.whiteout(&name);
        }
        let path = name.path();
        if self.pool.as_ref().is_some_and(|p| p.is_pending(&path)) {
            self.wait_for_writes()?;
        }
        check_special(self.policy, kind, &name, &shown)?;
        let (sparse, size) = layout_and_size(e, kind, &sp)?;
        budget.take(&shown, size)?;
        let mut mode = e.mode & 0o7777;
        if !(self.policy.setid && self.policy.owners) {
            mode &= !0o6000;
        }
        let link = link_target(e, kind, &shown)?;

        let parent = self.open_parent(&name)?;
        let file = name.file_name().to_string();
        let at: FileKey = (parent.id, file.clone());
        if self.pool.as_ref().is_some_and(|p| p.is_pending_at(&at)) {
            self.wait_for_writes()?;
        }
        let Some(existing_dir) =
            self.make_room(kind, &name, &parent, &file, link.as_deref(), &shown)?
        else {
            self.keep_parent(&name, parent);
            return Ok(());
        };
        let made = Made {
            parent: &parent,
            file: &file,
            shown: &shown,
            owner: self.policy.owners.then_some((e.uid as u32, e.gid as u32)),
            mode,
            mtime: e.mtime,
            xattrs: &xattrs,
        };
        match kind {
            Kind::Directory => {
                make_dir(&made, existing_dir)?;
                self.dirs.push((name.clone(), mode, e.mtime));
            }
            Kind::Symlink => make_symlink(&made, &link.expect("symlink target read above"))?,
            Kind::HardLink => self.make_hard_link(&made, link.expect("link target read above"))?,
            Kind::Char | Kind::Block | Kind::Fifo => {
                make_node(&made, kind, e.dev_major, e.dev_minor)?
            }
            // small regular files go to the workers; large and sparse ones are written here
            Kind::File if sparse.is_none() && size < DIRECT_MIN && self.pool.is_some() => {
                let mut bytes = Vec::with_capacity(size as usize);
                let n = data
                    .take(size)
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("writing {shown:?}"))? as u64;
                if n != size {
                    bail!("entry {shown:?} is truncated: {n} of {size} bytes");
                }
                let job = Job {
                    parent: parent.dir.clone(),
                    file: file.clone(),
                    shown: shown.clone(),
                    owner: made.owner,
                    mode,
                    mtime: e.mtime,
                    xattrs: xattrs.clone(),
                    data: bytes,
                };
                let pool = self.pool.as_mut().expect("checked above");
                pool.submit(path, at, job)?;
                self.out.bytes += size;
            }
            // regular files (and GNU sparse ones, whose holes stay holes)
            _ => self.out.bytes += write_file(&made, data, sparse.as_ref(), size)?,
        }
        self.keep_parent(&name, parent);
        if self.policy.whiteouts {
            let mut p = PathBuf::new();
            for c in &name.0 {
                p.push(c);
                self.seen.insert(p.clone());
            }
        }
        Ok(())
    }

    /// Clear what stands at the entry's name (tar's "later entry wins"): whether a directory
    /// stays there for a directory entry, or `None` when the entry is to be skipped.
    fn make_room(
        &mut self,
        kind: Kind,
        name: &Name,
        parent: &Dir,
        file: &str,
        link: Option<&str>,
        shown: &str,
    ) -> Result<Option<bool>> {
        let existing = rustix::fs::statat(parent, file, AtFlags::SYMLINK_NOFOLLOW).ok();
        let existing_dir = existing
            .as_ref()
            .is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        if kind == Kind::HardLink {
            // GNU tar stores a file named twice (a directory and a file in it both listed) as
            // a hard link to itself the second time: the file is already there, keep it
            let target = Name::parse(link.unwrap_or_default().as_bytes())?;
            if target == *name && existing.is_some() && !existing_dir {
                return Ok(None);
            }
        }
        if existing.is_some() && !(kind == Kind::Directory && existing_dir) {
            // what goes may hold files still being written
            self.wait_for_writes()?;
            self.link_dirs.clear();
            if existing_dir {
                parent.remove_dir_all(file).map_err(io_err)
            } else {
                parent.remove_file(file).map_err(io_err)
            }
            .with_context(|| format!("replacing {shown:?}"))?;
        }
        Ok(Some(existing_dir))
    }

    /// A hard link to a file this archive (or a lower layer) wrote, found beneath the root.
    fn make_hard_link(&mut self, m: &Made, link: String) -> Result<()> {
        let shown = m.shown;
        let target =
            Name::parse(link.as_bytes()).with_context(|| format!("hard link {shown:?}"))?;
        if target.is_root() {
            bail!("hostile archive: hard link {shown:?} names the target directory: refused");
        }
        if self
            .pool
            .as_ref()
            .is_some_and(|p| p.is_pending(&target.path()))
        {
            self.wait_for_writes()?;
        }
        let src = self.link_dir(&target).map_err(|e| {
            if escapes(&e) {
                anyhow!(
                    "hostile archive: hard link {shown:?} -> {:?} passes through a \
                     symlink that leads outside the target: refused",
                    target.display()
                )
            } else {
                anyhow!(
                    "hard link {shown:?} -> {:?}: {e} (the archive links to a file it \
                     has not written)",
                    target.display()
                )
            }
        })?;
        let mut linked =
            rustix::fs::linkat(src, target.file_name(), m.parent, m.file, AtFlags::empty());
        if linked == Err(rustix::io::Errno::NOENT) && self.pool.as_ref().is_some_and(|p| p.busy()) {
            // a target named through a symlink, still being written
            self.wait_for_writes()?;
            let src = self.link_dir(&target)?;
            linked =
                rustix::fs::linkat(src, target.file_name(), m.parent, m.file, AtFlags::empty());
        }
        if let Err(err) = linked {
            // the directory again: the wait above may have needed `self`
            let src = self.link_dir(&target)?;
            let what = rustix::fs::statat(src, target.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| FileType::from_raw_mode(st.st_mode));
            match what {
                Ok(FileType::Directory) => bail!(
                    "hostile archive: hard link {shown:?} -> {:?} names a directory \
                     (no filesystem links directories): refused",
                    target.display()
                ),
                Ok(_) => bail!("hard link {shown:?} -> {:?}: {err}", target.display()),
                Err(_) => bail!(
                    "hard link {shown:?} -> {:?}: the archive links to a file it has \
                     not written",
                    target.display()
                ),
            }
        }
        Ok(())
    }

    /// Open (creating what is missing, as tar does) the directory an entry goes into.
    fn open_parent(&mut self, name: &Name) -> Result<Parent> {
        let p = name.parent();
        match self.cache.take() {
            Some((cp, d)) if cp == p => Ok(d),
            _ => self.open_parent_uncached(name, &p),
        }
    }

    /// The directory holding a hard link's target, opened beneath the root.
    fn link_dir(&mut self, target: &Name) -> std::io::Result<&Dir> {
        let p = target.parent();
        if !self.link_dirs.contains_key(&p) {
            if self.link_dirs.len() >= 300 {
                self.link_dirs.clear();
            }
            let d = if p.as_os_str().is_empty() {
                self.root.try_clone()?
            } else {
                self.root.open_dir(&p)?
            };
            self.link_dirs.insert(p.clone(), d);
        }
        Ok(&self.link_dirs[&p])
    }

    /// Give back the directory [`Self::open_parent`] returned, for the next entry.
    fn keep_parent(&mut self, name: &Name, d: Parent) {
        self.cache = Some((name.parent(), d));
    }

    fn open_parent_uncached(&self, name: &Name, p: &Path) -> Result<Parent> {
        let dir = self.open_dir_beneath(name, p)?;
        let st = rustix::fs::fstat(&dir).with_context(|| {
            format!("entry {:?}: its directory {}", name.display(), p.display())
        })?;
        Ok(Parent {
            dir: Arc::new(dir),
            id: (st.st_dev, st.st_ino),
        })
    }

    fn open_dir_beneath(&self, name: &Name, p: &Path) -> Result<Dir> {
        let shown = name.display();
        let fail = |e: std::io::Error| {
            if escapes(&e) {
                anyhow!(
                    "hostile archive: entry {shown:?} passes through a symlink that leads outside \
                     the target: refused"
                )
            } else {
                anyhow!("entry {shown:?}: its directory {}: {e}", p.display())
            }
        };
        if p.as_os_str().is_empty() {
            return self.root.try_clone().map_err(fail);
        }
        match self.root.open_dir(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // create what is missing, then open again (which names an escape as such)
                let made = self.root.create_dir_all(p);
                match self.root.open_dir(p) {
                    Err(e) if !escapes(&e) => Err(fail(made.err().unwrap_or(e))),
                    r => r.map_err(fail),
                }
            }
            r => r.map_err(fail),
        }
    }

    fn whiteout(&mut self, name: &Name) -> Result<()> {
        self.out.whiteouts += 1;
        let parent = self.open_parent(name)?;
        self.link_dirs.clear();
        let f = name.file_name();
        if f == ".wh..wh..opq" {
            let dir = name.parent();
            return self.opaque(&parent, &dir);
        }
        let hidden = &f[".wh.".len()..];
        if matches!(hidden, "" | "." | "..") {
            bail!(
                "hostile archive: whiteout {:?} names {hidden:?}, not a file: refused",
                name.display()
            );
        }
        match parent.symlink_metadata(hidden) {
            Ok(m) if m.is_dir() => parent.remove_dir_all(hidden),
            Ok(_) => parent.remove_file(hidden),
            Err(_) => Ok(()),
        }
        .with_context(|| format!("applying whiteout {:?}", name.display()))
    }

    /// Remove what lower layers left in `dir` (everything this layer did not write).
    fn opaque(&self, d: &Dir, dir: &Path) -> Result<()> {
        for ent in d
            .entries()
            .context("reading a directory for an opaque whiteout")?
        {
            let ent = ent?;
            let n = ent.file_name();
            let p = dir.join(&n);
            let is_dir = ent.file_type()?.is_dir();
            if !self.seen.contains(&p) {
                if is_dir {
                    d.remove_dir_all(&n)?;
                } else {
                    d.remove_file(&n)?;
                }
            } else if is_dir {
                self.opaque(&d.open_dir(&n)?, &p)?;
            }
        }
        Ok(())
    }

    /// Wait for the files the workers are writing (and fail with their first error).
    fn wait_for_writes(&mut self) -> Result<()> {
        match self.pool.as_mut() {
            Some(p) => p.wait(),
            None => Ok(()),
        }
    }

    /// Directory modes and mtimes, deepest first, once every file is written.
    pub(super) fn finish_dirs(&mut self) -> Result<()> {
        self.wait_for_writes()?;
        let dirs = std::mem::take(&mut self.dirs);
        for (name, mode, mtime) in dirs.into_iter().rev() {
            let shown = name.display();
            let parent = self.open_parent(&name)?;
            let Ok(fd) = rustix::fs::openat(
                &parent,
                name.file_name(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) else {
                continue; // replaced by a later entry or a whiteout
            };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
                .with_context(|| format!("setting the mode of {shown:?}"))?;
            rustix::fs::futimens(&fd, &times(mtime))
                .with_context(|| format!("setting the mtime of {shown:?}"))?;
            self.keep_parent(&name, parent);
        }
        Ok(())
    }
}
