//! The seed's tarballs: GNU tar (xattrs, POSIX ACLs, SELinux labels, hardlinks, numeric
//! owners, as lifecycle-agent makes them) piped through the compressor here, written to a
//! temporary name and renamed when complete.

use anyhow::{bail, Context, Result};
use imgmode_image::extract::{unpack_into, Budget, Policy, Unpacked};
use imgmode_support::cmd::Run;
use imgmode_support::io::read_ahead;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// GNU tar options every seed tarball is made with.
pub const TAR_OPTS: &[&str] = &[
    "--xattrs",
    "--xattrs-include=*",
    "--acls",
    "--selinux",
    "--numeric-owner",
    "--sparse",
];

/// How the tarballs are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `.tgz`, readable by lifecycle-agent's `tar xzf`.
    Gzip(u32),
    /// `.tar.zst`: smaller and faster, read by imgmode only.
    Zstd(i32),
}

/// The seed tarballs' gzip level unless told otherwise.
pub const DEFAULT_GZIP_LEVEL: u32 = 2;

impl Default for Compression {
    /// gzip at level 2: what lifecycle-agent's tools can read, at a fraction of level 6's time
    /// (see `cargo xtask bench seed`). Level 2, not 1: gzip is zlib-ng here, whose level 1 is
    /// a quicker, looser match finder (about 12% larger on a seed's repository), while its
    /// level 2 is as small as zlib's level 1 and still faster.
    fn default() -> Self {
        Compression::Gzip(DEFAULT_GZIP_LEVEL)
    }
}

impl std::str::FromStr for Compression {
    type Err = anyhow::Error;
    /// `gzip`, `gzip:N` (1-9), `zstd`, `zstd:N` (1-19).
    fn from_str(s: &str) -> Result<Self> {
        let (name, level) = s.split_once(':').map_or((s, None), |(n, l)| (n, Some(l)));
        let level = |default: i64, max: i64| -> Result<i64> {
            match level {
                None => Ok(default),
                Some(l) => match l.parse::<i64>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(n),
                    _ => bail!("compression level {l:?} is not a number from 1 to {max}"),
                },
            }
        };
        match name {
            "gzip" => Ok(Compression::Gzip(
                level(DEFAULT_GZIP_LEVEL.into(), 9)? as u32
            )),
            "zstd" => Ok(Compression::Zstd(level(3, 19)? as i32)),
            _ => bail!("unknown compression {s:?}: use gzip[:1-9] or zstd[:1-19]"),
        }
    }
}

impl Compression {
    /// File name of the tarball `stem` (`etc` -> `etc.tgz`).
    pub fn file_name(&self, stem: &str) -> String {
        match self {
            Compression::Gzip(_) => format!("{stem}.tgz"),
            Compression::Zstd(_) => format!("{stem}.tar.zst"),
        }
    }

    /// Every name the tarball `stem` can have in a seed (gzip first, lifecycle-agent's).
    pub fn file_names(stem: &str) -> [String; 2] {
        [
            Compression::Gzip(1).file_name(stem),
            Compression::Zstd(3).file_name(stem),
        ]
    }

    pub fn name(&self) -> &'static str {
        match self {
            Compression::Gzip(_) => "gzip",
            Compression::Zstd(_) => "zstd",
        }
    }

    /// Compress everything `r` yields into `w`.
    pub fn compress(&self, r: &mut impl Read, w: impl Write) -> Result<u64> {
        match *self {
            Compression::Gzip(l) => {
                let mut e = flate2::write::GzEncoder::new(w, flate2::Compression::new(l));
                let n = std::io::copy(r, &mut e)?;
                e.finish()?.flush()?;
                Ok(n)
            }
            Compression::Zstd(l) => {
                let mut e = zstd::stream::write::Encoder::new(w, l)?;
                // both cores: the seed is made on a stopped cluster, nothing else runs
                let _ = e.multithread(
                    std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
                );
                let n = std::io::copy(r, &mut e)?;
                e.finish()?.flush()?;
                Ok(n)
            }
        }
    }
}

/// A decompressing reader chosen by the stream's magic bytes (gzip, zstd or plain tar).
pub fn decompressed<'a>(r: impl Read + Send + 'a) -> Result<Box<dyn Read + Send + 'a>> {
    let mut r = BufReader::with_capacity(1 << 20, r);
    let magic = {
        use std::io::BufRead;
        let b = r.fill_buf()?;
        b[..b.len().min(4)].to_vec()
    };
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// What one tarball took.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Written {
    pub path: PathBuf,
    /// tar stream bytes before compression.
    pub tar_bytes: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Run GNU tar with `args` (its `--create --file=-` and [`TAR_OPTS`] are added), compressing
/// its output into `out` (via `out.tmp`, renamed when tar and the compressor both succeeded).
pub fn tar_create(
    args: &[String],
    stdin: Option<&[u8]>,
    out: &Path,
    c: Compression,
) -> Result<Written> {
    let t0 = std::time::Instant::now();
    let tmp = out.with_extension("tmp");
    let (mut cmd, _) = Run::new("tar")
        .args(["--create", "--file=-"])
        .args(TAR_OPTS)
        .args(args)
        .into_command();
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().map_err(|e| Run::spawn_error_of("tar", e))?;
    let feeder = stdin.map(|data| {
        let mut w = child.stdin.take().expect("piped stdin");
        let data = data.to_vec();
        std::thread::spawn(move || w.write_all(&data))
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut stdout = child.stdout.take().expect("piped stdout");
    let file = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let res = c.compress(&mut stdout, file);
    let status = child.wait()?;
    let stderr = errs.join().unwrap_or_default();
    if let Some(f) = feeder {
        let _ = f.join();
    }
    let tar_bytes = match (res, status.success()) {
        (Ok(n), true) => n,
        (res, _) => {
            let _ = std::fs::remove_file(&tmp);
            if let Err(e) = res {
                return Err(e).with_context(|| format!("writing {}", out.display()));
            }
            bail!(
                "tar failed ({status}) writing {}:\n{}",
                out.display(),
                stderr.trim()
            );
        }
    };
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, out)?;
    Ok(Written {
        path: out.to_path_buf(),
        tar_bytes,
        bytes: std::fs::metadata(out)?.len(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Unpack a seed tarball (gzip, zstd or plain, told apart by magic) into `dest` with
/// imgmode's hardened extractor, restoring what GNU tar's options above captured: numeric
/// owners, modes (setuid included), xattrs, ACLs, SELinux labels, hardlinks, sparse files.
pub fn tar_extract(tarball: &Path, dest: &Path) -> Result<Unpacked> {
    let f =
        std::fs::File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    tar_extract_from(
        read_ahead(decompressed(f)?),
        dest,
        &Policy::system_archive(),
    )
    .with_context(|| format!("unpacking {}", tarball.display()))
}

/// [`tar_extract`] of a seed tarball read from `r` as it streams past (a member of the seed
/// image's layer, never written to disk): decompressed on this thread, written on another.
pub fn tar_extract_streamed(r: &mut (dyn Read + Send), dest: &Path) -> Result<Unpacked> {
    imgmode_support::io::pipe_through(
        |w| {
            std::io::copy(&mut decompressed(r)?, w).context("decompressing")?;
            Ok(())
        },
        |tar| tar_extract_from(tar, dest, &Policy::system_archive()),
    )
}

/// [`tar_extract_from`], handing the regular files `divert` names to it instead of writing
/// them (see [`imgmode_image::extract::Divert`]).
pub fn tar_extract_diverting(
    r: impl Read + Send,
    dest: &Path,
    policy: &Policy,
    divert: imgmode_image::extract::Divert,
) -> Result<Unpacked> {
    imgmode_image::extract::unpack_into_diverting(r, dest, policy, &mut free_space(dest)?, divert)
}

/// Unpack an uncompressed tar stream into `dest` under `policy`; what it unpacks may take
/// the free space of `dest`'s filesystem and no more (a decompression bomb stops there).
pub fn tar_extract_from(r: impl Read, dest: &Path, policy: &Policy) -> Result<Unpacked> {
    unpack_into(r, dest, policy, &mut free_space(dest)?)
}

/// `dest` (created if missing) and a budget of its filesystem's free space.
fn free_space(dest: &Path) -> Result<Budget> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    Budget::free_space(dest, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_names_and_levels() {
        assert_eq!("gzip".parse::<Compression>().unwrap(), Compression::Gzip(2));
        assert_eq!(Compression::default(), Compression::Gzip(2));
        assert_eq!(
            "gzip:6".parse::<Compression>().unwrap(),
            Compression::Gzip(6)
        );
        assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::Zstd(3));
        assert!("zstd:30".parse::<Compression>().is_err());
        assert!("xz".parse::<Compression>().is_err());
        assert_eq!(Compression::default().file_name("var"), "var.tgz");
        assert_eq!(Compression::Zstd(3).file_name("var"), "var.tar.zst");
    }

    /// GNU tar's stream through either compressor reads back (by magic) with the same
    /// entries, hardlinks and xattr-free modes intact; a failing tar leaves no output.
    #[test]
    fn tarballs_round_trip_and_failures_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("etc/sub")).unwrap();
        std::fs::write(src.join("etc/a"), "alpha\n").unwrap();
        std::fs::hard_link(src.join("etc/a"), src.join("etc/sub/a-link")).unwrap();
        for c in [Compression::Gzip(1), Compression::Zstd(3)] {
            let out = d.path().join(c.file_name("etc"));
            let w = tar_create(
                &["-C".into(), src.display().to_string(), "etc".into()],
                None,
                &out,
                c,
            )
            .unwrap();
            assert!(w.bytes > 0 && w.tar_bytes >= 3 * 512);
            let mut ar =
                tar::Archive::new(decompressed(std::fs::File::open(&out).unwrap()).unwrap());
            let mut names = vec![];
            for e in ar.entries().unwrap() {
                let e = e.unwrap();
                names.push((
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type().is_hard_link(),
                ));
            }
            names.sort();
            let plain: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(plain, vec!["etc/", "etc/a", "etc/sub/", "etc/sub/a-link"]);
            // the second name of the pair tar met is a hardlink to the first
            assert_eq!(names.iter().filter(|(_, l)| *l).count(), 1, "{names:?}");
        }
        let out = d.path().join("missing.tgz");
        let e = tar_create(
            &["-C".into(), src.display().to_string(), "nope".into()],
            None,
            &out,
            Compression::default(),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("tar failed"), "{e:#}");
        assert!(!out.exists() && !out.with_extension("tmp").exists());
    }

    /// Everything a system tarball records, per path: kind, mode, owner, size, content or
    /// link target, mtime, xattrs, and which paths share an inode.
    fn describe(root: &Path) -> Vec<String> {
        use std::os::unix::fs::MetadataExt;
        let mut out = vec![];
        let mut inodes: std::collections::BTreeMap<u64, String> = Default::default();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                let m = std::fs::symlink_metadata(&p).unwrap();
                let body = if m.is_symlink() {
                    format!("-> {}", std::fs::read_link(&p).unwrap().display())
                } else if m.is_dir() {
                    stack.push(p.clone());
                    String::new()
                } else if m.is_file() {
                    let data = std::fs::read(&p).unwrap();
                    imgmode_image::digest::sha256(&data)
                } else {
                    "special".into()
                };
                let mut xattrs = vec![];
                if !m.is_symlink() {
                    let mut names = vec![0u8; 4096];
                    let n = rustix::fs::listxattr(&p, &mut names).unwrap_or(0);
                    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
                        let name = String::from_utf8_lossy(name).into_owned();
                        let mut v = vec![0u8; 4096];
                        let k = rustix::fs::getxattr(&p, name.as_str(), &mut v).unwrap();
                        xattrs.push(format!("{name}={}", hex::encode(&v[..k])));
                    }
                    xattrs.sort();
                }
                let link = if m.is_file() && m.nlink() > 1 {
                    let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone());
                    format!("inode-of:{}", std::cmp::min(first.clone(), rel.clone()))
                } else {
                    String::new()
                };
                let mtime = if m.is_dir() || m.is_file() {
                    m.mtime()
                } else {
                    0
                };
                out.push(format!(
                    "{rel} {:o} {}:{} {} {body} {mtime} {xattrs:?} {}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    if m.is_dir() { 0 } else { m.size() },
                    if link.is_empty() { "" } else { "linked" },
                ));
            }
        }
        out.sort();
        out
    }

    /// What GNU tar wrote with the seed's options, the extractor restores as GNU tar would:
    /// modes (setuid, a read-only directory), owners, hardlinks, symlinks, a PAX sparse file
    /// with its hole kept, xattrs, a POSIX ACL (GNU tar's text form back to the kernel's),
    /// a FIFO under var/, mtimes.
    #[test]
    fn seed_tarballs_unpack_as_gnu_tar_made_them() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        imgmode_testkit::require!(imgmode_testkit::Need::Root);
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let v = src.join("var");
        std::fs::create_dir_all(v.join("lib/ro")).unwrap();
        std::fs::create_dir_all(v.join("log")).unwrap();
        std::fs::write(v.join("lib/ro/file"), "in a read-only directory\n").unwrap();
        std::fs::write(v.join("lib/suid"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(v.join("lib/suid"), std::fs::Permissions::from_mode(0o4750))
            .unwrap();
        std::os::unix::fs::chown(v.join("lib/suid"), Some(0), Some(4)).unwrap();
        std::fs::hard_link(v.join("lib/suid"), v.join("lib/suid-link")).unwrap();
        std::os::unix::fs::symlink("/usr/share/zoneinfo/UTC", v.join("lib/localtime")).unwrap();
        std::os::unix::fs::chown(v.join("lib/ro/file"), Some(1234), Some(5678)).unwrap();
        {
            use std::io::{Seek, SeekFrom};
            let mut f = std::fs::File::create(v.join("log/lastlog")).unwrap();
            f.seek(SeekFrom::Start(5_000_000)).unwrap();
            f.write_all(b"data after a hole").unwrap();
            f.set_len(10 << 20).unwrap();
        }
        rustix::fs::setxattr(
            v.join("log/lastlog"),
            "user.imgmode",
            b"kept",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let acl = imgmode_image::extract::acl_from_text(
            "user::rwx,group::r-x,group:4:r-x,mask::r-x,other::r-x",
        )
        .unwrap();
        let acl_set = rustix::fs::setxattr(
            v.join("log"),
            "system.posix_acl_access",
            &acl,
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            v.join("lib/fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o620),
            0,
        )
        .unwrap();
        // past the umask, which mknod applies (and an extractor must undo)
        std::fs::set_permissions(v.join("lib/fifo"), std::fs::Permissions::from_mode(0o622))
            .unwrap();
        std::fs::set_permissions(v.join("lib/ro"), std::fs::Permissions::from_mode(0o555)).unwrap();

        let tgz = d.path().join("var.tgz");
        // var/lib/ro/file named twice: GNU tar stores the second as a hard link to itself
        tar_create(
            &[
                "-C".into(),
                src.display().to_string(),
                "var".into(),
                "var/lib/ro/file".into(),
            ],
            None,
            &tgz,
            Compression::default(),
        )
        .unwrap();
        let dest = d.path().join("dest");
        let u = tar_extract(&tgz, &dest).unwrap();
        assert!(u.entries >= 10, "{u:?}");
        assert_eq!(describe(&src), describe(&dest));
        // the hole stayed a hole: 10 MiB long, a few blocks on disk
        let m = std::fs::metadata(dest.join("var/log/lastlog")).unwrap();
        assert_eq!(m.len(), 10 << 20);
        assert!(m.blocks() * 512 < 1 << 20, "{} blocks", m.blocks());
        if acl_set {
            let mut v = vec![0u8; 256];
            let n = rustix::fs::getxattr(dest.join("var/log"), "system.posix_acl_access", &mut v)
                .unwrap();
            assert_eq!(&v[..n], &acl[..]);
        }
    }
}
