//! The one tar extractor every unpack path uses: OCI image layers (`imgmode image unpack`),
//! the seed's layer and its `ostree`/`etc`/`var` tarballs (`imgmode ibi install`).
//!
//! The archives come from other people and are unpacked as root onto disks that will boot,
//! so the target directory is the only authority the extractor has:
//!
//! - every entry's parent is opened through `cap-std` beneath the target; a symlink that
//!   leads outside it (absolute, or `..` past the top) is refused when an entry would pass
//!   through it, in-tree symlinks work as they do on the booted system (`bin -> usr/bin`);
//! - the entry itself is made with `*at` calls on the parent's descriptor and never follows
//!   a symlink: a name that already exists is replaced (tar's "later entry wins"), so a
//!   symlink followed by a file of the same name writes a new file, not through the link;
//! - names come from the effective header (PAX `path`/`linkpath` and GNU long names already
//!   applied), so what is checked is what is written.
//!
//! Policy, stated: `..` anywhere in a name or hard link target is refused; a leading `/` is
//! dropped (GNU tar's default); an entry naming the target itself is refused unless it is a
//! directory (then it is skipped: the target keeps its own mode and owner); names and link
//! targets must be UTF-8 (ostree, which every imgmode root ends up in, stores UTF-8 names
//! only); device nodes only under `dev/`, FIFOs only under `dev/`, `run/`, `tmp/` and
//! `var/`, and neither where the [`Policy`] allows no special files; setuid/setgid bits are
//! kept only where the format carries them (image layers and system tarballs, with owners
//! applied) and dropped otherwise; every entry's size counts against a byte [`Budget`]
//! before a byte of it is written, which stops decompression bombs and absurd headers.

use crate::tarstream::{Entry, Kind, TarReader};
use anyhow::{anyhow, bail, Context, Result};
use cap_std::fs::Dir;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use std::collections::HashSet;
use std::io::{Read, Seek};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

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

    fn take(&mut self, name: &str, n: u64) -> Result<()> {
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

/// Zero padding allowed after the end-of-archive marker.
const TRAILING_MAX: u64 = 1 << 20;

/// What one archive held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
}

/// Unpack the tar stream `r` beneath `root` under `policy`, charging `budget`.
pub fn unpack(r: impl Read, root: &Dir, policy: &Policy, budget: &mut Budget) -> Result<Unpacked> {
    let mut t = TarReader::new(r);
    let mut x = Extractor {
        root,
        policy,
        seen: HashSet::new(),
        dirs: vec![],
        cache: None,
        link_dirs: Default::default(),
        out: Unpacked::default(),
    };
    while let Some(e) = t.next_entry()? {
        x.entry(&e, &mut t.data(), budget)?;
    }
    x.finish_dirs()?;
    // Read to the stream's end: a verifying source (an image layer) checks its digest there.
    // Writers pad archives with zeros (GNU tar to 10 KiB records); anything else after the
    // end-of-archive marker, or more padding than any writer adds, is refused.
    let mut rest = t.into_inner().take(TRAILING_MAX + 1);
    let mut buf = vec![0u8; 64 << 10];
    let mut trailing = 0u64;
    loop {
        let n = rest.read(&mut buf).context("reading the archive")?;
        if n == 0 {
            break;
        }
        trailing += n as u64;
        if trailing > TRAILING_MAX || buf[..n].iter().any(|b| *b != 0) {
            bail!(
                "hostile archive: data follows its end-of-archive marker (more than zero padding \
                 of at most {TRAILING_MAX} bytes): refused"
            );
        }
    }
    Ok(x.out)
}

/// [`unpack`] into the directory `dest` (created if missing).
pub fn unpack_into(
    r: impl Read,
    dest: &Path,
    policy: &Policy,
    budget: &mut Budget,
) -> Result<Unpacked> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let root = Dir::open_ambient_dir(dest, cap_std::ambient_authority())
        .with_context(|| format!("opening {}", dest.display()))?;
    unpack(r, &root, policy, budget).with_context(|| format!("unpacking into {}", dest.display()))
}

/// What `imgmode image unpack` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageUnpacked {
    pub image: String,
    pub manifest_digest: String,
    pub dir: PathBuf,
    pub layers: usize,
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
    pub seconds: f64,
}

/// `imgmode image unpack`: the image's layers, in order, with whiteouts applied, into a
/// staging directory beside `dir` that becomes `dir` only when every layer unpacked and
/// verified (like `umoci unpack`'s rootfs). `dir` must not exist or be empty.
pub fn unpack_image(
    store: &crate::Store,
    image: &str,
    dir: &Path,
    auth: &crate::skopeo::RegistryAuth,
    max_bytes: Option<u64>,
    steps: &imgmode_support::progress::Steps,
) -> Result<ImageUnpacked> {
    let t0 = std::time::Instant::now();
    if let Ok(mut rd) = std::fs::read_dir(dir) {
        if rd.next().is_some() {
            bail!(
                "{} exists and is not empty: imgmode image unpack writes a new directory only \
                 (remove it or choose another)",
                dir.display()
            );
        }
    } else if dir.exists() {
        bail!("{} exists and is not a directory", dir.display());
    }
    let parent = imgmode_support::fs::output_parent(dir)?;
    steps.step(&format!("opening {image}"));
    let opened = crate::oci::open_image_with(store, image, auth, parent)?;
    let img = &opened.image;
    let layers = img.manifest.layers().len();
    let compressed: u64 = img.manifest.layers().iter().map(|l| l.size()).sum();
    let mut budget = Budget::free_space(parent, max_bytes)?;
    let staging = tempfile::Builder::new()
        .prefix(".imgmode-unpack-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
    let root = Dir::open_ambient_dir(staging.path(), cap_std::ambient_authority())?;
    let policy = Policy::image_layer();
    let mut total = Unpacked::default();
    for i in 0..layers {
        let l = &img.manifest.layers()[i];
        steps.step(&format!(
            "layer {}/{layers} {} ({} bytes compressed of {compressed})",
            i + 1,
            l.digest(),
            l.size()
        ));
        let u =
            unpack(read_ahead(img.open_layer(i)?), &root, &policy, &mut budget).map_err(|e| {
                // a damaged blob is named as such even where the damage broke the tar stream first
                let blob = img.blob(l.digest().as_ref());
                match blob.and_then(|b| crate::mirror::hash_file(&b)) {
                    Ok((d, n)) if d != l.digest().to_string() || n != l.size() => anyhow!(
                        "blob {} is corrupted or truncated: {n} bytes hashing to {d} ({e:#})",
                        l.digest()
                    ),
                    _ => e,
                }
                .context(format!(
                    "unpacking layer {} ({}) of {image}",
                    i + 1,
                    l.digest()
                ))
            })?;
        total.entries += u.entries;
        total.bytes += u.bytes;
        total.whiteouts += u.whiteouts;
    }
    drop(root);
    // the staging directory was made 0700; the root filesystem's top is 0755
    std::fs::set_permissions(
        staging.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    if dir.exists() {
        std::fs::remove_dir(dir)
            .with_context(|| format!("replacing the empty {}", dir.display()))?;
    }
    std::fs::rename(staging.path(), dir)
        .with_context(|| format!("moving the unpacked image to {}", dir.display()))?;
    Ok(ImageUnpacked {
        image: image.to_string(),
        manifest_digest: img.manifest_digest.clone(),
        dir: dir.to_path_buf(),
        layers,
        entries: total.entries,
        bytes: total.bytes,
        whiteouts: total.whiteouts,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Decompress on another thread: `r` is read ahead in 256 KiB chunks (at most 2 MiB queued)
/// while the caller writes files, as `tar` reading from a `gzip -d` pipe does. Errors from
/// `r` arrive in order, after the chunks before them.
pub fn read_ahead(mut r: impl Read + Send + 'static) -> impl Read {
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(8);
    std::thread::spawn(move || loop {
        let mut buf = vec![0u8; 256 << 10];
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                buf.truncate(n);
                if tx.send(Ok(buf)).is_err() {
                    break; // the reader went away
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.send(Err(e));
                break;
            }
        }
    });
    ReadAhead {
        rx,
        cur: Vec::new(),
        pos: 0,
    }
}

struct ReadAhead {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.cur = chunk?;
                    self.pos = 0;
                }
                Err(_) => return Ok(0), // the sender finished: end of stream
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A name inside the archive, split into checked components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(Vec<String>);

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

    fn display(&self) -> String {
        self.0.join("/")
    }

    fn parent(&self) -> PathBuf {
        self.0[..self.0.len() - 1].iter().collect()
    }

    fn file_name(&self) -> &str {
        &self.0[self.0.len() - 1]
    }

    fn under(&self, tops: &[&str]) -> bool {
        self.0.len() > 1 && tops.contains(&self.0[0].as_str())
    }
}

struct Extractor<'a> {
    root: &'a Dir,
    policy: &'a Policy,
    /// Everything this archive wrote, with its ancestors (an opaque whiteout keeps them).
    seen: HashSet<PathBuf>,
    /// Directories whose mode and mtime are set at the end (so read-only ones still fill).
    dirs: Vec<(Name, u32, i64)>,
    /// The last parent directory opened (archives list a directory's entries together);
    /// dropped whenever anything is removed, since a removal can change what a path means.
    cache: Option<(PathBuf, Dir)>,
    /// Directories hard link targets were found in (ostree-ext layers link every file into
    /// the repository's 256 object directories); cleared on every removal.
    link_dirs: std::collections::HashMap<PathBuf, Dir>,
    out: Unpacked,
}

/// Errors from cap-std that mean "this path leaves the target".
fn escapes(e: &std::io::Error) -> bool {
    e.to_string().contains("outside of the filesystem")
}

fn io_err(e: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(e)
}

impl Extractor<'_> {
    fn entry(&mut self, e: &Entry, data: &mut impl Read, budget: &mut Budget) -> Result<()> {
        let lossy = || String::from_utf8_lossy(&e.path).into_owned();
        let Some(kind) = e.kind else {
            bail!(
                "entry {:?} has the unsupported tar type {:?}: refused",
                lossy(),
                e.type_byte as char
            );
        };
        let mut xattrs: Vec<(String, Vec<u8>)> = vec![];
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
                "SCHILY.acl.access" | "SCHILY.acl.default" if self.policy.xattrs => {
                    let which = key.rsplit('.').next().unwrap_or("access");
                    let bin = acl_from_text(&String::from_utf8_lossy(v))
                        .with_context(|| format!("entry {:?}: its ACL record {key}", lossy()))?;
                    xattrs.push((format!("system.posix_acl_{which}"), bin));
                }
                "RHT.security.selinux" if self.policy.xattrs => {
                    xattrs.push(("security.selinux".into(), v.clone()))
                }
                k if self.policy.xattrs && k.starts_with("SCHILY.xattr.") => {
                    xattrs.push((k["SCHILY.xattr.".len()..].to_string(), v.clone()))
                }
                _ => {}
            }
        }
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
            return self.whiteout(&name);
        }
        // checks that need nothing written
        let refuse = self.policy.special == Special::Refuse;
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
        budget.take(&shown, size)?;
        let mut mode = e.mode & 0o7777;
        if !(self.policy.setid && self.policy.owners) {
            mode &= !0o6000;
        }
        let mtime = e.mtime;
        let (uid, gid) = (e.uid, e.gid);
        let link = match kind {
            Kind::Symlink | Kind::HardLink => {
                Some(String::from_utf8(e.link.clone()).map_err(|_| {
                    anyhow!("hostile archive: link {shown:?} has a non-UTF-8 target: refused")
                })?)
            }
            _ => None,
        };

        let parent = self.open_parent(&name)?;
        let file = name.file_name().to_string();
        let existing = rustix::fs::statat(&parent, file.as_str(), AtFlags::SYMLINK_NOFOLLOW).ok();
        let existing_dir = existing
            .as_ref()
            .is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        if kind == Kind::HardLink {
            // GNU tar stores a file named twice (a directory and a file in it both listed) as
            // a hard link to itself the second time: the file is already there, keep it
            let target = Name::parse(link.as_deref().unwrap_or_default().as_bytes())?;
            if target == name && existing.is_some() && !existing_dir {
                self.keep_parent(&name, parent);
                return Ok(());
            }
        }
        if existing.is_some() && !(kind == Kind::Directory && existing_dir) {
            self.link_dirs.clear();
            if existing_dir {
                parent.remove_dir_all(&file).map_err(io_err)
            } else {
                parent.remove_file(&file).map_err(io_err)
            }
            .with_context(|| format!("replacing {shown:?}"))?;
        }
        let owner = self.policy.owners.then_some((uid as u32, gid as u32));
        match kind {
            Kind::Directory => {
                if !existing_dir {
                    rustix::fs::mkdirat(&parent, file.as_str(), Mode::from_raw_mode(0o700))
                        .with_context(|| format!("creating directory {shown:?}"))?;
                }
                let fd = rustix::fs::openat(
                    &parent,
                    file.as_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .with_context(|| format!("opening directory {shown:?}"))?;
                let f = std::fs::File::from(fd);
                if let Some((u, g)) = owner {
                    std::os::unix::fs::fchown(&f, Some(u), Some(g))
                        .with_context(|| format!("setting the owner of {shown:?}"))?;
                }
                set_xattrs_fd(&f, &xattrs, &shown)?;
                self.dirs.push((name.clone(), mode, mtime));
            }
            Kind::Symlink => {
                let target = link.expect("symlink target read above");
                parent
                    .symlink_contents(&target, &file)
                    .with_context(|| format!("creating symlink {shown:?} -> {target:?}"))?;
                let by_path = proc_path(&parent, &file);
                if let Some((u, g)) = owner {
                    std::os::unix::fs::lchown(&by_path, Some(u), Some(g))
                        .with_context(|| format!("setting the owner of {shown:?}"))?;
                }
                for (k, v) in &xattrs {
                    rustix::fs::lsetxattr(&by_path, k.as_str(), v, XattrFlags::empty())
                        .or_else(|e| tolerated(k, e))
                        .with_context(|| format!("setting {k} on {shown:?}"))?;
                }
                set_mtime_at(&parent, &file, mtime)?;
            }
            Kind::HardLink => {
                let target = Name::parse(link.expect("link target read above").as_bytes())
                    .with_context(|| format!("hard link {shown:?}"))?;
                if target.is_root() {
                    bail!(
                        "hostile archive: hard link {shown:?} names the target directory: refused"
                    );
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
                let linked = rustix::fs::linkat(
                    src,
                    target.file_name(),
                    &parent,
                    file.as_str(),
                    AtFlags::empty(),
                );
                if let Err(err) = linked {
                    let what =
                        rustix::fs::statat(src, target.file_name(), AtFlags::SYMLINK_NOFOLLOW)
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
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let ft = match kind {
                    Kind::Char => FileType::CharacterDevice,
                    Kind::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rustix::fs::makedev(e.dev_major, e.dev_minor);
                rustix::fs::mknodat(&parent, file.as_str(), ft, Mode::from_raw_mode(mode), dev)
                    .with_context(|| format!("creating {kind:?} {shown:?}"))?;
                let by_path = proc_path(&parent, &file);
                if let Some((u, g)) = owner {
                    std::os::unix::fs::lchown(&by_path, Some(u), Some(g))
                        .with_context(|| format!("setting the owner of {shown:?}"))?;
                }
                // mknod applied the umask; the node just made is not a symlink
                rustix::fs::chmodat(
                    &parent,
                    file.as_str(),
                    Mode::from_raw_mode(mode),
                    AtFlags::empty(),
                )
                .with_context(|| format!("setting the mode of {shown:?}"))?;
                set_mtime_at(&parent, &file, mtime)?;
            }
            _ => {
                // regular files (and GNU sparse ones, whose holes stay holes)
                let fd = rustix::fs::openat(
                    &parent,
                    file.as_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .with_context(|| format!("creating {shown:?}"))?;
                let mut f = std::fs::File::from(fd);
                let n = match &sparse {
                    Some(s) => s.copy(data, &mut f),
                    None => std::io::copy(data, &mut f),
                }
                .with_context(|| format!("writing {shown:?}"))?;
                if n != size {
                    bail!("entry {shown:?} is truncated: {n} of {size} bytes");
                }
                self.out.bytes += n;
                if let Some((u, g)) = owner {
                    std::os::unix::fs::fchown(&f, Some(u), Some(g))
                        .with_context(|| format!("setting the owner of {shown:?}"))?;
                }
                rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))
                    .with_context(|| format!("setting the mode of {shown:?}"))?;
                set_xattrs_fd(&f, &xattrs, &shown)?;
                rustix::fs::futimens(&f, &times(mtime))
                    .with_context(|| format!("setting the mtime of {shown:?}"))?;
            }
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

    /// Open (creating what is missing, as tar does) the directory an entry goes into.
    fn open_parent(&mut self, name: &Name) -> Result<Dir> {
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
    fn keep_parent(&mut self, name: &Name, d: Dir) {
        self.cache = Some((name.parent(), d));
    }

    fn open_parent_uncached(&self, name: &Name, p: &Path) -> Result<Dir> {
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

    /// Directory modes and mtimes, deepest first.
    fn finish_dirs(&mut self) -> Result<()> {
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

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn set_mtime_at(parent: &Dir, file: &str, mtime: i64) -> Result<()> {
    rustix::fs::utimensat(parent, file, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)
        .with_context(|| format!("setting the mtime of {file:?}"))
}

/// The path of `file` in `parent` through the descriptor (for the calls that have no `*at`
/// form without unsafe code: lchown, lsetxattr); the final component is never followed.
fn proc_path(parent: &Dir, file: &str) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!(
        "/proc/self/fd/{}/{file}",
        parent.as_fd().as_raw_fd()
    ))
}

/// SELinux labels cannot be set where the kernel has no SELinux (GNU tar warns and goes on);
/// every other attribute must be set.
fn tolerated(key: &str, e: rustix::io::Errno) -> rustix::io::Result<()> {
    if key == "security.selinux"
        && matches!(e, rustix::io::Errno::NOTSUP | rustix::io::Errno::INVAL)
    {
        Ok(())
    } else {
        Err(e)
    }
}

fn set_xattrs_fd(f: &impl AsFd, xattrs: &[(String, Vec<u8>)], shown: &str) -> Result<()> {
    for (k, v) in xattrs {
        rustix::fs::fsetxattr(f, k.as_str(), v, XattrFlags::empty())
            .or_else(|e| tolerated(k, e))
            .with_context(|| format!("setting {k} on {shown:?}"))?;
    }
    Ok(())
}

/// The PAX records of a GNU sparse file (formats 0.1 and 1.0).
#[derive(Default)]
struct PaxSparse {
    name: Option<Vec<u8>>,
    realsize: Option<u64>,
    major: Option<u64>,
    minor: Option<u64>,
    map: Option<String>,
}

/// Where a PAX sparse file's data goes: `map` (0.1, in the record) or read from the front of
/// the data (1.0, decimal lines padded to a block).
struct SparseLayout {
    realsize: u64,
    map: Option<Vec<(u64, u64)>>,
}

/// No sparse map is allowed more chunks than this (a map is memory before it is data).
const MAX_SPARSE_CHUNKS: usize = 1 << 20;

impl PaxSparse {
    fn layout(&self) -> Result<Option<SparseLayout>> {
        let (Some(major), Some(realsize)) = (self.major, self.realsize) else {
            if self.map.is_some() {
                // format 0.1 names no major version
                return Ok(Some(SparseLayout {
                    realsize: self
                        .realsize
                        .context("a sparse map without GNU.sparse.size")?,
                    map: Some(parse_map(self.map.as_deref().unwrap_or(""))?),
                }));
            }
            return Ok(None);
        };
        match (major, self.minor) {
            (1, Some(0)) => Ok(Some(SparseLayout {
                realsize,
                map: None,
            })),
            (0, Some(1)) => Ok(Some(SparseLayout {
                realsize,
                map: Some(parse_map(self.map.as_deref().unwrap_or(""))?),
            })),
            (ma, mi) => bail!("unsupported GNU sparse format {ma}.{mi:?}"),
        }
    }
}

fn parse_map(text: &str) -> Result<Vec<(u64, u64)>> {
    let nums: Vec<u64> = text
        .split([',', '\n'])
        .filter(|s| !s.is_empty())
        .take(2 * MAX_SPARSE_CHUNKS + 1)
        .map(|s| {
            s.parse::<u64>()
                .with_context(|| format!("sparse map number {s:?}"))
        })
        .collect::<Result<_>>()?;
    if !nums.len().is_multiple_of(2) || nums.len() > 2 * MAX_SPARSE_CHUNKS {
        bail!("malformed sparse map ({} numbers)", nums.len());
    }
    Ok(nums.chunks(2).map(|c| (c[0], c[1])).collect())
}

impl SparseLayout {
    /// Write the chunks at their offsets (holes stay holes); the logical size.
    fn copy(&self, r: &mut impl Read, f: &mut std::fs::File) -> std::io::Result<u64> {
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        let map = match &self.map {
            Some(m) => m.clone(),
            None => {
                // 1.0: "N\n" then N pairs of "offset\nsize\n", padded to 512 bytes
                let mut text = Vec::new();
                let mut block = [0u8; 512];
                loop {
                    r.read_exact(&mut block)?;
                    text.extend_from_slice(&block);
                    let lines = text.iter().filter(|b| **b == b'\n').count();
                    let s = std::str::from_utf8(&text).unwrap_or("");
                    let n: usize = s
                        .split('\n')
                        .next()
                        .and_then(|l| l.parse().ok())
                        .ok_or_else(|| bad("malformed sparse map".into()))?;
                    if n > MAX_SPARSE_CHUNKS {
                        return Err(bad(format!("sparse map of {n} chunks")));
                    }
                    if lines > 2 * n {
                        let s = String::from_utf8_lossy(&text);
                        let nums: Vec<&str> = s.split('\n').skip(1).take(2 * n).collect();
                        break parse_map(&nums.join(",")).map_err(|e| bad(e.to_string()))?;
                    }
                }
            }
        };
        let mut end = 0u64;
        for (off, len) in map {
            if off < end || !matches!(off.checked_add(len), Some(e) if e <= self.realsize) {
                return Err(bad(format!(
                    "sparse chunk {off}+{len} overlaps or passes the file's size {}",
                    self.realsize
                )));
            }
            f.seek(std::io::SeekFrom::Start(off))?;
            let n = std::io::copy(&mut r.take(len), f)?;
            if n != len {
                return Err(bad(format!(
                    "sparse chunk at {off} truncated: {n} of {len} bytes"
                )));
            }
            end = off + len;
        }
        f.set_len(self.realsize)?;
        Ok(self.realsize)
    }
}

/// A POSIX ACL in GNU tar's text form (`user::rwx,group:4:r-x,...`, newline or comma
/// separated, `#` comments, numeric ids) as the kernel's `system.posix_acl_*` value.
pub fn acl_from_text(text: &str) -> Result<Vec<u8>> {
    acl_from_text_with(text, &host_ids)
}

/// A user (`true`) or group name's id in this system's `/etc/passwd` or `/etc/group` (as
/// GNU tar resolves ACL names when it unpacks).
fn host_ids(user: bool, name: &str) -> Option<u32> {
    let file = if user { "/etc/passwd" } else { "/etc/group" };
    std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(name)).then(|| f.nth(1)?.parse().ok())?
    })
}

/// [`acl_from_text`] with names resolved by `ids`.
pub fn acl_from_text_with(text: &str, ids: &dyn Fn(bool, &str) -> Option<u32>) -> Result<Vec<u8>> {
    let mut entries: Vec<(u16, u32, u16)> = vec![];
    for item in text.split(['\n', ',']) {
        let item = item.split('#').next().unwrap_or("").trim();
        if item.is_empty() {
            continue;
        }
        let mut f = item.splitn(3, ':');
        let (tag, q, perm) = (f.next().unwrap_or(""), f.next(), f.next());
        let (q, perm) = match (q, perm) {
            (Some(q), Some(p)) => (q, p),
            // `other::r-x` has an empty qualifier; `o:r-x` none at all
            (Some(p), None) => ("", p),
            _ => bail!("ACL entry {item:?} has no permissions"),
        };
        let perms = perm.trim().chars().try_fold(0u16, |acc, c| match c {
            'r' => Ok(acc | 4),
            'w' => Ok(acc | 2),
            'x' => Ok(acc | 1),
            '-' => Ok(acc),
            _ => Err(anyhow!("ACL entry {item:?} has the permission {c:?}")),
        })?;
        let user = matches!(tag, "user" | "u");
        let id = |q: &str| -> Result<u32> {
            q.parse().ok().or_else(|| ids(user, q)).ok_or_else(|| {
                anyhow!(
                    "ACL entry {item:?} names the {} {q:?}, which this system does not know",
                    if user { "user" } else { "group" }
                )
            })
        };
        const UNDEF: u32 = u32::MAX;
        let (t, i) = match (tag, q.is_empty()) {
            ("user" | "u", true) => (0x01, UNDEF),
            ("user" | "u", false) => (0x02, id(q)?),
            ("group" | "g", true) => (0x04, UNDEF),
            ("group" | "g", false) => (0x08, id(q)?),
            ("mask" | "m", _) => (0x10, UNDEF),
            ("other" | "o", _) => (0x20, UNDEF),
            _ => bail!("ACL entry {item:?} has the unknown tag {tag:?}"),
        };
        entries.push((t, i, perms));
    }
    entries.sort();
    let mut out = 2u32.to_le_bytes().to_vec();
    for (t, i, p) in entries {
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&p.to_le_bytes());
        out.extend_from_slice(&i.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer from (path, content) pairs: content `None` makes a directory, `Some("->x")` a
    /// symlink to x, `Some("=>x")` a hard link to x.
    fn layer(items: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(vec![]);
        for (p, c) in items {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            match c {
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, p, std::io::empty()).unwrap();
                }
                Some(t) if t.starts_with("->") => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, p, &t[2..]).unwrap();
                }
                Some(t) if t.starts_with("=>") => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, p, &t[2..]).unwrap();
                }
                Some(t) => {
                    h.set_size(t.len() as u64);
                    b.append_data(&mut h, p, t.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn names(root: &Path) -> Vec<String> {
        let mut out = vec![];
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let m = std::fs::symlink_metadata(&p).unwrap();
                if m.is_dir() {
                    stack.push(p.clone());
                }
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
        out.sort();
        out
    }

    /// Layers replay like an OCI runtime's: whiteouts remove, opaque directories hide the
    /// lower layers but keep what their own layer wrote, hard links reach lower layers,
    /// in-tree symlinks are followed (usrmerge's bin -> usr/bin).
    #[test]
    fn layers_apply_whiteouts_opaque_dirs_and_in_tree_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let root = Dir::open_ambient_dir(d.path(), cap_std::ambient_authority()).unwrap();
        let p = Policy {
            owners: false,
            setid: false,
            xattrs: false,
            ..Policy::image_layer()
        };
        let mut budget = Budget::new(1 << 20);
        let lower = layer(&[
            ("usr/bin/", None),
            ("bin", Some("->usr/bin")),
            ("etc/", None),
            ("etc/old", Some("old")),
            ("etc/keep", Some("keep")),
            ("opt/a/", None),
            ("opt/a/lower", Some("lower")),
            ("opt/a/sub/", None),
            ("opt/a/sub/x", Some("x")),
        ]);
        unpack(&lower[..], &root, &p, &mut budget).unwrap();
        let upper = layer(&[
            ("etc/.wh.old", Some("")),
            ("bin/tool", Some("tool")),
            ("etc/keep-link", Some("=>etc/keep")),
            ("opt/a/sub/", None),
            ("opt/a/mine", Some("mine")),
            ("opt/a/.wh..wh..opq", Some("")),
        ]);
        let u = unpack(&upper[..], &root, &p, &mut budget).unwrap();
        assert_eq!(u.whiteouts, 2);
        assert_eq!(
            names(d.path()),
            [
                "bin",
                "etc",
                "etc/keep",
                "etc/keep-link",
                "opt",
                "opt/a",
                "opt/a/mine",
                "opt/a/sub",
                "usr",
                "usr/bin",
                "usr/bin/tool"
            ]
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(d.path().join("etc/keep"))
                .unwrap()
                .nlink(),
            2
        );
        assert_eq!(budget.left, (1 << 20) - 3 - 4 - 5 - 1 - 4 - 4);
    }

    /// A hard link to a directory, or to a name the archive never wrote, fails with a
    /// message naming which of the two it was, and writes no link.
    #[test]
    fn hard_links_to_directories_or_unwritten_names_are_refused_by_name() {
        for (entries, says) in [
            (
                &[("etc/", None), ("dirlink", Some("=>etc"))][..],
                "hostile archive: hard link \"dirlink\" -> \"etc\" names a directory",
            ),
            (
                &[("etc/", None), ("ghost", Some("=>etc/never"))][..],
                "hard link \"ghost\" -> \"etc/never\": the archive links to a file it has not written",
            ),
            (
                &[("ghost", Some("=>no/such/dir"))][..],
                "the archive links to a file it has not written",
            ),
        ] {
            let d = tempfile::tempdir().unwrap();
            let err = unpack_into(&layer(entries)[..], d.path(), &Policy::plain(), &mut Budget::new(100))
                .unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(says), "{msg}");
            assert!(!names(d.path()).iter().any(|n| n.ends_with("link") || n == "ghost"));
        }
    }

    /// Zero padding after the end-of-archive marker is what writers add; anything else there
    /// (data, or more padding than a writer adds) is refused, and so is a corrupt stream.
    #[test]
    fn trailing_data_and_corrupt_streams_are_refused() {
        let good = layer(&[("a", Some("x"))]);
        let unpack = |data: &[u8]| {
            let d = tempfile::tempdir().unwrap();
            unpack_into(data, d.path(), &Policy::plain(), &mut Budget::new(1 << 30))
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
        };
        let padded = [&good[..], &[0u8; 8192][..]].concat();
        unpack(&padded).unwrap();
        for tail in [
            &b"GARBAGE"[..],
            &vec![0u8; (TRAILING_MAX + 512) as usize][..],
        ] {
            let err = unpack(&[&good[..], tail].concat()).unwrap_err();
            assert!(
                err.contains("hostile archive: data follows its end-of-archive marker"),
                "{err}"
            );
        }
        // a header whose checksum does not match, and an archive cut in a member's data
        let mut bad = good.clone();
        bad[0] ^= 0x20;
        let err = unpack(&bad).unwrap_err();
        assert!(
            err.contains("the archive is corrupt: header checksum mismatch at byte 0"),
            "{err}"
        );
        let err = unpack(&good[..512 + 1]).unwrap_err();
        assert!(err.contains("the archive is truncated"), "{err}");
    }

    /// A read-only directory is still filled; its mode lands at the end.
    #[test]
    fn read_only_directories_get_their_mode_last() {
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(vec![]);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o555);
        h.set_size(0);
        b.append_data(&mut h, "ro/", std::io::empty()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(2);
        b.append_data(&mut h, "ro/f", &b"ok"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let p = Policy {
            owners: false,
            ..Policy::plain()
        };
        unpack_into(&data[..], d.path(), &p, &mut Budget::new(100)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(d.path().join("ro")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o555);
        assert_eq!(std::fs::read(d.path().join("ro/f")).unwrap(), b"ok");
    }

    #[test]
    fn acl_text_becomes_the_kernels_form() {
        let ids = |user: bool, n: &str| (!user && n == "adm").then_some(4);
        let bin = acl_from_text_with(
            "user::rwx\ngroup::r-x\t#effective:r-x\ngroup:adm:r-x\nmask::r-x\nother::r-x\n",
            &ids,
        )
        .unwrap();
        // version 2, then (tag, perm, id) sorted by tag
        assert_eq!(&bin[..4], &2u32.to_le_bytes());
        assert_eq!(bin.len(), 4 + 5 * 8);
        assert_eq!(&bin[4 + 2 * 8..4 + 3 * 8], &[8, 0, 5, 0, 4, 0, 0, 0]);
        let e = acl_from_text_with("group:nobody-here:r-x", &ids).unwrap_err();
        assert!(e.to_string().contains("does not know"), "{e}");
        assert!(acl_from_text_with("user::rwz", &ids).is_err());
    }
}
