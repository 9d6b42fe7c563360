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

mod entry;
mod image;
mod name;
mod policy;
mod pool;
mod sparse;
mod write;
mod xattrs;

pub use image::{unpack_image, ImageUnpacked};
pub use name::Name;
pub use policy::{Budget, Policy, Special};
pub use xattrs::{acl_from_text, acl_from_text_with};

use crate::tarstream::TarReader;
use anyhow::{bail, Context, Result};
use cap_std::fs::Dir;
use entry::Extractor;
use std::io::Read;
use std::path::Path;

/// Zero padding allowed after the end-of-archive marker.
const TRAILING_MAX: u64 = 1 << 20;

/// What one archive held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
}

/// Regular files the caller takes instead of the extractor writing them: a tarball inside
/// the archive is unpacked as it streams past, with no copy of it on disk.
pub struct Divert<'a> {
    /// Names as the archive gives them, checked and without a leading `./` or `/` (`a/b`).
    pub names: &'a [String],
    /// Called with one of `names` and its member's data; what it leaves unread is skipped.
    pub take: &'a mut dyn FnMut(&str, &mut (dyn Read + Send)) -> Result<()>,
}

/// Unpack the tar stream `r` beneath `root` under `policy`, charging `budget`.
pub fn unpack(r: impl Read, root: &Dir, policy: &Policy, budget: &mut Budget) -> Result<Unpacked> {
    let mut t = TarReader::new(r);
    let mut x = Extractor::new(root, policy);
    while let Some(e) = t.next_entry()? {
        x.entry(&e, &mut t.data(), budget)?;
    }
    finish(t, x)
}

/// [`unpack`], handing the regular files `divert` names to it instead of writing them.
fn unpack_diverting(
    r: impl Read + Send,
    root: &Dir,
    policy: &Policy,
    budget: &mut Budget,
    d: Divert,
) -> Result<Unpacked> {
    let mut t = TarReader::new(r);
    let mut x = Extractor::new(root, policy);
    while let Some(e) = t.next_entry()? {
        if e.kind == Some(crate::tarstream::Kind::File) {
            let name = Name::parse(&e.path)?.0.join("/");
            if d.names.contains(&name) {
                (d.take)(&name, &mut t.data()).with_context(|| format!("{name} in the archive"))?;
                continue;
            }
        }
        x.entry(&e, &mut t.data(), budget)?;
    }
    finish(t, x)
}

/// The directories' modes and times, then the rest of the stream read to its end: a
/// verifying source (an image layer) checks its digest there. Writers pad archives with zeros
/// (GNU tar to 10 KiB records); anything else after the end-of-archive marker, or more
/// padding than any writer adds, is refused.
fn finish<R: Read>(t: TarReader<R>, mut x: Extractor) -> Result<Unpacked> {
    x.finish_dirs()?;
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
    unpack(r, &open_dest(dest)?, policy, budget)
        .with_context(|| format!("unpacking into {}", dest.display()))
}

/// [`unpack_into`], handing the regular files `divert` names to it instead of writing them.
pub fn unpack_into_diverting(
    r: impl Read + Send,
    dest: &Path,
    policy: &Policy,
    budget: &mut Budget,
    divert: Divert,
) -> Result<Unpacked> {
    unpack_diverting(r, &open_dest(dest)?, policy, budget, divert)
        .with_context(|| format!("unpacking into {}", dest.display()))
}

/// `dest`, created if missing, opened as the extractor's only authority.
fn open_dest(dest: &Path) -> Result<Dir> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    Dir::open_ambient_dir(dest, cap_std::ambient_authority())
        .with_context(|| format!("opening {}", dest.display()))
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

    /// A diverted member goes to the caller, read as it streams, and is not written; its
    /// name is matched as checked (`./x` is `x`); the rest is written as usual.
    #[test]
    fn diverted_members_go_to_the_caller_and_nowhere_else() {
        let d = tempfile::tempdir().unwrap();
        let archive = layer(&[
            ("./inner.tgz", Some("streamed bytes")),
            ("dir/", None),
            ("dir/inner.tgz", Some("not diverted: another name")),
            ("kept", Some("kept")),
        ]);
        let mut got = vec![];
        let diverted = ["inner.tgz".to_string()];
        let mut take = |name: &str, r: &mut (dyn Read + Send)| -> Result<()> {
            let mut s = String::new();
            r.read_to_string(&mut s)?;
            got.push((name.to_string(), s));
            Ok(())
        };
        let out = unpack_into_diverting(
            &archive[..],
            d.path(),
            &Policy::plain(),
            &mut Budget::new(1 << 20),
            Divert {
                names: &diverted,
                take: &mut take,
            },
        )
        .unwrap();
        assert_eq!(
            got,
            [("inner.tgz".to_string(), "streamed bytes".to_string())]
        );
        assert_eq!(names(d.path()), ["dir", "dir/inner.tgz", "kept"]);
        assert_eq!(out.entries, 3);
        // the caller's error names the member
        let mut fail = |_: &str, _: &mut (dyn Read + Send)| -> Result<()> { bail!("bad gzip") };
        let e = unpack_into_diverting(
            &archive[..],
            tempfile::tempdir().unwrap().path(),
            &Policy::plain(),
            &mut Budget::new(1 << 20),
            Divert {
                names: &diverted,
                take: &mut fail,
            },
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("inner.tgz in the archive: bad gzip"),
            "{e:#}"
        );
    }

    /// A fresh target and the layer policy without owners, setid bits or xattrs.
    fn layer_target() -> (tempfile::TempDir, Dir, Policy) {
        let d = tempfile::tempdir().unwrap();
        let root = Dir::open_ambient_dir(d.path(), cap_std::ambient_authority()).unwrap();
        let p = Policy {
            owners: false,
            setid: false,
            xattrs: false,
            ..Policy::image_layer()
        };
        (d, root, p)
    }

    /// Layers replay like an OCI runtime's: whiteouts remove, opaque directories hide the
    /// lower layers but keep what their own layer wrote, hard links reach lower layers,
    /// in-tree symlinks are followed (usrmerge's bin -> usr/bin).
    #[test]
    fn layers_apply_whiteouts_opaque_dirs_and_in_tree_symlinks() {
        let (d, root, p) = layer_target();
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

    /// With the writing threads, the archive's order still decides: a later entry of the same
    /// name wins (also when named through a symlink, and a directory over a file), a hard
    /// link finds a file still being written, a whiteout removes one; large files (written
    /// past the page cache where the filesystem allows) and small ones keep every byte.
    #[test]
    fn later_entries_win_over_files_still_being_written() {
        let (d, root, p) = layer_target();
        let big: String = (0..(3 << 20) + 1234)
            .map(|i: u32| char::from(b'a' + (i % 26) as u8))
            .collect();
        let aligned: String = big[..(2 << 20)].to_string();
        let mut items: Vec<(String, Option<String>)> = (0..300)
            .map(|i| (format!("many/f{i}"), Some(format!("{i}").repeat(i))))
            .collect();
        for (n, c) in [
            ("twice", Some("first")),
            ("twice", Some("second")),
            ("real/", None),
            ("real/f", Some("first")),
            ("alias", Some("->real")),
            ("alias/f", Some("second")),
            ("real/g", Some("linked")),
            ("link-via-alias", Some("=>alias/g")),
            ("was-file", Some("file")),
            ("was-file/", None),
            ("was-file/in", Some("in")),
            ("gone", Some("gone")),
            (".wh.gone", Some("")),
            ("big", Some(big.as_str())),
            ("aligned", Some(aligned.as_str())),
        ] {
            items.push((n.to_string(), c.map(str::to_string)));
        }
        let items: Vec<(&str, Option<&str>)> = items
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_deref()))
            .collect();
        let archive = layer(&items);
        let out = unpack(&archive[..], &root, &p, &mut Budget::new(64 << 20)).unwrap();
        let read = |n: &str| std::fs::read_to_string(d.path().join(n)).unwrap();
        assert_eq!(read("twice"), "second");
        assert_eq!(read("real/f"), "second");
        assert_eq!(read("link-via-alias"), "linked");
        assert_eq!(read("was-file/in"), "in");
        assert!(!d.path().join("gone").exists());
        assert_eq!(read("big"), big);
        assert_eq!(read("aligned"), aligned);
        for i in 0..300 {
            assert_eq!(read(&format!("many/f{i}")), format!("{i}").repeat(i));
        }
        assert_eq!(out.whiteouts, 1);
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
