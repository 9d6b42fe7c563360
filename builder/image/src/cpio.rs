//! The `newc` cpio format the Linux kernel unpacks as an initramfs.
//!
//! Live ISOs add their initrd units and the caller's files to the image's own initramfs as a
//! second, uncompressed archive, which the kernel unpacks over the first. Every entry has
//! `nlink` 1, which the kernel's unpacker needs no bookkeeping for.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// One entry's metadata.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// Permission bits (type bits are added by the writer).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
}

impl Meta {
    /// root:root with `mode`, mtime 0.
    pub fn root(mode: u32) -> Self {
        Self {
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }
}

/// Writes a `newc` archive.
pub struct Writer<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn pad(&mut self) -> Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.out.write_all(&[0u8; 3][..n])?;
        self.written += n as u64;
        Ok(())
    }

    fn header(
        &mut self,
        name: &str,
        mode: u32,
        m: &Meta,
        size: u64,
        rdev: (u32, u32),
    ) -> Result<()> {
        if name.is_empty() || name.starts_with('/') || name.contains('\0') {
            bail!("invalid cpio entry name {name:?}");
        }
        let size = u32::try_from(size)
            .with_context(|| format!("{name} is larger than the cpio format's 4 GiB"))?;
        let ino = self.ino;
        self.ino += 1;
        let h = format!(
            "{MAGIC}{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            m.uid,
            m.gid,
            1,
            m.mtime,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.written += (h.len() + name.len() + 1) as u64;
        self.pad()
    }

    pub fn dir(&mut self, name: &str, m: &Meta) -> Result<()> {
        self.header(name, S_IFDIR | (m.mode & 0o7777), m, 0, (0, 0))
    }

    pub fn symlink(&mut self, name: &str, target: &str, m: &Meta) -> Result<()> {
        self.header(name, S_IFLNK | 0o777, m, target.len() as u64, (0, 0))?;
        self.out.write_all(target.as_bytes())?;
        self.written += target.len() as u64;
        self.pad()
    }

    /// A regular file of `size` bytes read from `data`.
    pub fn file(&mut self, name: &str, m: &Meta, size: u64, data: impl Read) -> Result<()> {
        self.header(name, S_IFREG | (m.mode & 0o7777), m, size, (0, 0))?;
        let n = std::io::copy(&mut data.take(size), &mut self.out)?;
        if n != size {
            bail!("{name} changed while it was archived ({n} of {size} bytes)");
        }
        self.written += n;
        self.pad()
    }

    /// A regular file from memory.
    pub fn bytes(&mut self, name: &str, m: &Meta, data: &[u8]) -> Result<()> {
        self.file(name, m, data.len() as u64, data)
    }

    /// Write the trailer; returns the inner writer.
    pub fn finish(mut self) -> Result<W> {
        self.header(TRAILER, 0, &Meta::root(0), 0, (0, 0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One entry as read back by [`list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub mode: u32,
    pub uid: u32,
    pub data: Vec<u8>,
}

/// Read an uncompressed `newc` archive (every entry with its data), up to the trailer.
pub fn list(mut r: impl Read) -> Result<Vec<Entry>> {
    let mut out = vec![];
    let mut pos = 0u64;
    let skip = |r: &mut dyn Read, pos: &mut u64| -> Result<()> {
        let n = (4 - (*pos % 4)) % 4;
        let mut b = [0u8; 3];
        r.read_exact(&mut b[..n as usize])?;
        *pos += n;
        Ok(())
    };
    loop {
        let mut h = [0u8; 110];
        r.read_exact(&mut h).context("truncated cpio header")?;
        pos += 110;
        if &h[..6] != MAGIC.as_bytes() {
            bail!(
                "not a newc cpio archive (magic {:?})",
                String::from_utf8_lossy(&h[..6])
            );
        }
        let field = |i: usize| -> Result<u32> {
            let s = std::str::from_utf8(&h[6 + i * 8..14 + i * 8])?;
            Ok(u32::from_str_radix(s, 16)?)
        };
        let (mode, uid, size, namesize) = (field(1)?, field(2)?, field(6)?, field(11)?);
        let mut name = vec![0u8; namesize as usize];
        r.read_exact(&mut name)?;
        pos += namesize as u64;
        skip(&mut r, &mut pos)?;
        name.pop();
        let name = String::from_utf8(name)?;
        if name == TRAILER {
            return Ok(out);
        }
        let mut data = vec![0u8; size as usize];
        r.read_exact(&mut data)?;
        pos += size as u64;
        skip(&mut r, &mut pos)?;
        out.push(Entry {
            name,
            mode,
            uid,
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_symlinks_and_files_round_trip() {
        let mut w = Writer::new(Vec::new());
        w.dir("etc", &Meta::root(0o755)).unwrap();
        w.symlink("bin", "usr/bin", &Meta::root(0o777)).unwrap();
        let m = Meta {
            mode: 0o600,
            uid: 7,
            gid: 8,
            mtime: 0,
        };
        w.bytes("etc/secret", &m, b"live\n").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let entries = list(&bytes[..]).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["etc", "bin", "etc/secret"]);
        let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        assert_eq!(get("etc").mode, S_IFDIR | 0o755);
        assert_eq!(get("bin").data, b"usr/bin");
        assert_eq!(get("bin").mode & 0o170000, S_IFLNK);
        assert_eq!(get("etc/secret").data, b"live\n");
        assert_eq!(
            (get("etc/secret").mode, get("etc/secret").uid),
            (S_IFREG | 0o600, 7)
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let mut w = Writer::new(Vec::new());
        assert!(w.dir("/abs", &Meta::root(0o755)).is_err());
        assert!(w.dir("", &Meta::root(0o755)).is_err());
    }

    proptest::proptest! {
        /// Files written by the writer are listed back with their names, modes, owners and
        /// bytes, whatever the name lengths (the 4-byte padding rules) and contents.
        #[test]
        fn files_round_trip(
            files in proptest::collection::btree_map(
                "[a-z0-9._-]{1,60}",
                (0u32..0o7777, 0u32..70000, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..700)),
                1..10,
            )
        ) {
            let mut w = Writer::new(vec![]);
            for (name, (mode, uid, data)) in &files {
                let m = Meta { mode: *mode, uid: *uid, gid: 0, mtime: 0 };
                w.bytes(name, &m, data).unwrap();
            }
            let out = w.finish().unwrap();
            let got = list(&out[..]).unwrap();
            proptest::prop_assert_eq!(got.len(), files.len());
            for (e, (name, (mode, uid, data))) in got.iter().zip(&files) {
                proptest::prop_assert_eq!(&e.name, name);
                proptest::prop_assert_eq!(e.mode & 0o7777, *mode);
                proptest::prop_assert_eq!(e.uid, *uid);
                proptest::prop_assert_eq!(&e.data, data);
            }
        }
    }
}
