//! The `*at` calls that make each kind of entry in its parent directory, never following the
//! final component, with the owner, mode, extended attributes and mtime the archive gives.

use super::sparse::SparseLayout;
use super::xattrs::{set_xattrs_fd, tolerated};
use crate::tarstream::Kind;
use anyhow::{bail, Context, Result};
use cap_std::fs::Dir;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::PathBuf;

/// An entry being made: its parent directory, its name there, its name in messages, and the
/// metadata it gets.
pub(super) struct Made<'a> {
    pub(super) parent: &'a Dir,
    pub(super) file: &'a str,
    pub(super) shown: &'a str,
    /// The archive's numeric owner, where the policy applies owners.
    pub(super) owner: Option<(u32, u32)>,
    pub(super) mode: u32,
    pub(super) mtime: i64,
    pub(super) xattrs: &'a [(String, Vec<u8>)],
}

/// A directory (made unless `existing`); its mode and mtime are set at the end.
pub(super) fn make_dir(m: &Made, existing: bool) -> Result<()> {
    let (parent, file, shown) = (m.parent, m.file, m.shown);
    if !existing {
        rustix::fs::mkdirat(parent, file, Mode::from_raw_mode(0o700))
            .with_context(|| format!("creating directory {shown:?}"))?;
    }
    let fd = rustix::fs::openat(
        parent,
        file,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening directory {shown:?}"))?;
    let f = std::fs::File::from(fd);
    if let Some((u, g)) = m.owner {
        std::os::unix::fs::fchown(&f, Some(u), Some(g))
            .with_context(|| format!("setting the owner of {shown:?}"))?;
    }
    set_xattrs_fd(&f, m.xattrs, shown)?;
    Ok(())
}

/// A symlink to `target`.
pub(super) fn make_symlink(m: &Made, target: &str) -> Result<()> {
    let (parent, file, shown) = (m.parent, m.file, m.shown);
    parent
        .symlink_contents(target, file)
        .with_context(|| format!("creating symlink {shown:?} -> {target:?}"))?;
    let by_path = proc_path(parent, file);
    if let Some((u, g)) = m.owner {
        std::os::unix::fs::lchown(&by_path, Some(u), Some(g))
            .with_context(|| format!("setting the owner of {shown:?}"))?;
    }
    for (k, v) in m.xattrs {
        rustix::fs::lsetxattr(&by_path, k.as_str(), v, XattrFlags::empty())
            .or_else(|e| tolerated(k, e))
            .with_context(|| format!("setting {k} on {shown:?}"))?;
    }
    set_mtime_at(parent, file, m.mtime)
}

/// A device node or FIFO.
pub(super) fn make_node(m: &Made, kind: Kind, dev_major: u32, dev_minor: u32) -> Result<()> {
    let (parent, file, shown, mode) = (m.parent, m.file, m.shown, m.mode);
    let ft = match kind {
        Kind::Char => FileType::CharacterDevice,
        Kind::Block => FileType::BlockDevice,
        _ => FileType::Fifo,
    };
    let dev = rustix::fs::makedev(dev_major, dev_minor);
    rustix::fs::mknodat(parent, file, ft, Mode::from_raw_mode(mode), dev)
        .with_context(|| format!("creating {kind:?} {shown:?}"))?;
    let by_path = proc_path(parent, file);
    if let Some((u, g)) = m.owner {
        std::os::unix::fs::lchown(&by_path, Some(u), Some(g))
            .with_context(|| format!("setting the owner of {shown:?}"))?;
    }
    // mknod applied the umask; the node just made is not a symlink
    rustix::fs::chmodat(parent, file, Mode::from_raw_mode(mode), AtFlags::empty())
        .with_context(|| format!("setting the mode of {shown:?}"))?;
    set_mtime_at(parent, file, m.mtime)
}

/// A regular file with `size` bytes of `data` (written at their offsets when `sparse`, so
/// holes stay holes); the bytes written.
pub(super) fn write_file(
    m: &Made,
    data: &mut impl Read,
    sparse: Option<&SparseLayout>,
    size: u64,
) -> Result<u64> {
    let (parent, file, shown) = (m.parent, m.file, m.shown);
    let fd = rustix::fs::openat(
        parent,
        file,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .with_context(|| format!("creating {shown:?}"))?;
    let mut f = std::fs::File::from(fd);
    let n = match sparse {
        Some(s) => s.copy(data, &mut f),
        None if size >= DIRECT_MIN => copy_direct(data, &f),
        None => std::io::copy(data, &mut f),
    }
    .with_context(|| format!("writing {shown:?}"))?;
    if n != size {
        bail!("entry {shown:?} is truncated: {n} of {size} bytes");
    }
    if let Some((u, g)) = m.owner {
        std::os::unix::fs::fchown(&f, Some(u), Some(g))
            .with_context(|| format!("setting the owner of {shown:?}"))?;
    }
    rustix::fs::fchmod(&f, Mode::from_raw_mode(m.mode))
        .with_context(|| format!("setting the mode of {shown:?}"))?;
    set_xattrs_fd(&f, m.xattrs, shown)?;
    rustix::fs::futimens(&f, &times(m.mtime))
        .with_context(|| format!("setting the mtime of {shown:?}"))?;
    Ok(n)
}

/// Files of at least this size are written with `O_DIRECT` where the filesystem allows it.
pub(super) const DIRECT_MIN: u64 = 1 << 20;

/// How much a direct write carries (and the aligned buffer it comes from).
const DIRECT_CHUNK: usize = 1 << 20;

/// Alignment of direct writes' buffers, offsets and lengths: any block size up to a page.
const DIRECT_ALIGN: usize = 4096;

/// Copy `data` to the new file `f` past the page cache (`O_DIRECT`): a large file of a seed
/// or an image is not read again while it is unpacked, and its pages neither need the copy
/// into the cache nor its writeback later. The tail that is no whole block, and everything on
/// a filesystem without direct I/O (tmpfs before Linux 6.6, some FUSE), goes through the cache
/// as usual.
fn copy_direct(data: &mut impl Read, f: &std::fs::File) -> std::io::Result<u64> {
    let mut raw = vec![0u8; DIRECT_CHUNK + DIRECT_ALIGN];
    let off = (DIRECT_ALIGN - raw.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
    let buf = &mut raw[off..off + DIRECT_CHUNK];
    let mut direct = rustix::fs::fcntl_setfl(f, OFlags::WRONLY | OFlags::DIRECT).is_ok();
    let mut done = 0u64;
    loop {
        let mut k = 0;
        while k < DIRECT_CHUNK {
            match data.read(&mut buf[k..]) {
                Ok(0) => break,
                Ok(r) => k += r,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let mut pos = 0;
        while pos < k {
            // whole blocks directly; the tail, or all of it once direct I/O is off, cached
            let end = if direct {
                pos + (k - pos) / DIRECT_ALIGN * DIRECT_ALIGN
            } else {
                k
            };
            if end == pos {
                rustix::fs::fcntl_setfl(f, OFlags::WRONLY)?;
                direct = false;
                continue;
            }
            match rustix::io::write(f, &buf[pos..end]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => pos += n,
                Err(rustix::io::Errno::INTR) => {}
                // a filesystem that takes the flag but not this write: the cache from here on
                Err(rustix::io::Errno::INVAL) if direct => {
                    rustix::fs::fcntl_setfl(f, OFlags::WRONLY)?;
                    direct = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        done += k as u64;
        if k < DIRECT_CHUNK {
            return Ok(done);
        }
    }
}

pub(super) fn times(mtime: i64) -> Timestamps {
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
