//! A strict streaming tar reader for the extractor: ustar, GNU (long names, base-256
//! numbers, old sparse files) and POSIX pax (length-prefixed records, so values may hold
//! newlines, as GNU tar's ACL text and binary xattrs do).
//!
//! It exists because the `tar` crate splits pax records at newlines, which drops every record
//! after an ACL and lets a crafted value smuggle records. Here one parser decides every name,
//! size and link target, and the extractor checks exactly what this returns.

use anyhow::{bail, Context, Result};
use std::io::Read;

pub const BLOCK: usize = 512;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    HardLink,
    Symlink,
    Char,
    Block,
    Directory,
    Fifo,
    /// Old GNU sparse file (`S`): data chunks at the offsets of `Entry::sparse`.
    GnuSparse,
}

/// One member, with pax and GNU records applied.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub kind: Option<Kind>,
    /// The type byte as found (for messages about unsupported types).
    pub type_byte: u8,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    /// Bytes of data stored in the archive for this member.
    pub size: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Every pax record of this member, in order (global ones first).
    pub pax: Vec<(String, Vec<u8>)>,
    /// Old GNU sparse map and logical size.
    pub sparse: Vec<(u64, u64)>,
    pub real_size: Option<u64>,
}

impl Entry {
    pub fn pax(&self, key: &str) -> Option<&[u8]> {
        self.pax
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

/// Cap on the size of pax records, long names and sparse extension headers (metadata is
/// held in memory; a hostile archive must not make that unbounded).
const MAX_META: u64 = 1 << 20;

pub struct TarReader<R> {
    r: R,
    /// Data (and padding) of the current member not yet read.
    left: u64,
    pad: u64,
    global: Vec<(String, Vec<u8>)>,
    done: bool,
    /// Bytes consumed from `r`.
    pub offset: u64,
}

fn field(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    &b[..end]
}

/// A header's checksum as the unsigned and as the signed sum of its bytes (old writers used
/// the signed one), the checksum field counted as spaces.
fn checksums(h: &[u8; BLOCK]) -> (u64, i64) {
    let (mut u, mut s) = (0u64, 0i64);
    for (i, b) in h.iter().enumerate() {
        let (bu, bs) = if (148..156).contains(&i) {
            (32, 32)
        } else {
            (*b as u64, *b as i8 as i64)
        };
        u += bu;
        s += bs;
    }
    (u, s)
}

/// An octal or base-256 numeric header field.
pub fn number(b: &[u8], what: &str) -> Result<u64> {
    if b[0] & 0x80 != 0 {
        if b[0] == 0xff {
            bail!("the header's {what} is negative");
        }
        let mut v: u64 = (b[0] & 0x7f) as u64;
        for c in &b[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(*c as u64))
                .with_context(|| format!("the header's {what} does not fit 64 bits"))?;
        }
        return Ok(v);
    }
    let s = std::str::from_utf8(field(b)).unwrap_or("?");
    let s = s.trim_matches(|c| c == ' ' || c == '\0');
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).with_context(|| format!("the header's {what} {s:?} is not octal"))
}

/// Parse pax records (`LEN KEY=VALUE\n`), where LEN counts the whole record.
pub fn pax_records(mut data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = vec![];
    while !data.is_empty() {
        if data.iter().all(|b| *b == 0) {
            break;
        }
        let sp = data
            .iter()
            .position(|b| *b == b' ')
            .filter(|i| *i <= 20)
            .context("malformed pax record: no length")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .context("malformed pax record length")?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            bail!("malformed pax record: its length {len} does not end at a newline");
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|b| *b == b'=')
            .context("malformed pax record: no '='")?;
        let key = std::str::from_utf8(&rec[..eq])
            .context("malformed pax record: key is not UTF-8")?
            .to_string();
        out.push((key, rec[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

fn parse_u64(v: &[u8], key: &str) -> Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("pax record {key} is not a number"))
}

impl<R: Read> TarReader<R> {
    pub fn new(r: R) -> Self {
        TarReader {
            r,
            left: 0,
            pad: 0,
            global: vec![],
            done: false,
            offset: 0,
        }
    }

    pub fn into_inner(self) -> R {
        self.r
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            let n = self
                .r
                .read(&mut buf[got..])
                .context("reading the archive")?;
            if n == 0 {
                if got == 0 {
                    return Ok(false);
                }
                bail!(
                    "the archive is truncated (a partial block at byte {})",
                    self.offset
                );
            }
            got += n;
            self.offset += n as u64;
        }
        Ok(true)
    }

    fn skip(&mut self, mut n: u64) -> Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            if !self.read_exact(&mut buf[..k])? {
                bail!("the archive is truncated (a member's data ends early)");
            }
            n -= k as u64;
        }
        Ok(())
    }

    /// The whole data of a metadata member (pax records, long names).
    fn meta(&mut self, size: u64, what: &str) -> Result<Vec<u8>> {
        if size > MAX_META {
            bail!("hostile archive: a {what} of {size} bytes (more than {MAX_META}): refused");
        }
        let mut v = vec![0u8; size as usize];
        if !self.read_exact(&mut v)? {
            bail!("the archive is truncated (in a {what})");
        }
        self.skip(padding(size))?;
        Ok(v)
    }

    /// The next member, or `None` at the end-of-archive marker (or a clean end of stream).
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        if self.done {
            return Ok(None);
        }
        // finish the previous member
        let rest = self.left + self.pad;
        self.left = 0;
        self.pad = 0;
        self.skip(rest)?;
        let mut e = Entry {
            pax: self.global.clone(),
            ..Default::default()
        };
        let mut meta = Meta::default();
        let Some(h) = self.member_header(&mut e, &mut meta)? else {
            self.done = true;
            return Ok(None);
        };
        let gnu = apply_header(&mut e, &h, meta.long_name, meta.long_link)?;
        if e.kind == Some(Kind::GnuSparse) {
            self.old_sparse_map(&mut e, &h, gnu)?;
        }
        // pax records override the header
        apply_pax(&mut e, &meta.local)?;
        e.pax.extend(meta.local);
        self.left = e.size;
        self.pad = padding(e.size);
        Ok(Some(e))
    }

    /// Read headers up to the member's own, collecting the metadata members before it (pax
    /// records, global ones into `e` too, and GNU long names) into `meta`; `None` at the end.
    fn member_header(&mut self, e: &mut Entry, meta: &mut Meta) -> Result<Option<[u8; BLOCK]>> {
        let mut h = [0u8; BLOCK];
        loop {
            if !self.read_exact(&mut h)? {
                return Ok(None);
            }
            if h.iter().all(|b| *b == 0) {
                return Ok(None);
            }
            let (sum, signed) = checksums(&h);
            let want = number(&h[148..156], "checksum")?;
            if sum != want && signed != want as i64 {
                bail!(
                    "the archive is corrupt: header checksum mismatch at byte {} (not a tar \
                     archive, or damaged)",
                    self.offset - BLOCK as u64
                );
            }
            let size = number(&h[124..136], "size")?;
            match h[156] {
                b'x' => {
                    let d = self.meta(size, "pax header")?;
                    meta.local.extend(pax_records(&d)?);
                }
                b'g' => {
                    let d = self.meta(size, "pax global header")?;
                    let recs = pax_records(&d)?;
                    self.global.extend(recs.iter().cloned());
                    e.pax.extend(recs);
                }
                b'L' => {
                    let d = self.meta(size, "GNU long name")?;
                    meta.long_name = Some(field(&d).to_vec());
                }
                b'K' => {
                    let d = self.meta(size, "GNU long link name")?;
                    meta.long_link = Some(field(&d).to_vec());
                }
                t => {
                    e.type_byte = t;
                    e.kind = kind_of(t);
                    return Ok(Some(h));
                }
            }
        }
    }

    /// An old GNU sparse member's map: four chunks in the header, 21 in each extension block.
    fn old_sparse_map(&mut self, e: &mut Entry, h: &[u8; BLOCK], gnu: bool) -> Result<()> {
        if !gnu {
            bail!("a GNU sparse member without a GNU header");
        }
        e.real_size = Some(number(&h[483..495], "sparse real size")?);
        let push = |b: &[u8], e: &mut Entry| -> Result<()> {
            let off = number(&b[..12], "sparse offset")?;
            let len = number(&b[12..24], "sparse length")?;
            if off != 0 || len != 0 {
                e.sparse.push((off, len));
            }
            Ok(())
        };
        for i in 0..4 {
            push(&h[386 + i * 24..386 + (i + 1) * 24], e)?;
        }
        let mut more = h[482] != 0;
        while more {
            let mut x = [0u8; BLOCK];
            if !self.read_exact(&mut x)? {
                bail!("the archive is truncated (in a sparse map)");
            }
            for i in 0..21 {
                push(&x[i * 24..(i + 1) * 24], e)?;
            }
            more = x[504] != 0;
            if e.sparse.len() > 1 << 20 {
                bail!("hostile archive: a sparse map of more than 2^20 chunks: refused");
            }
        }
        Ok(())
    }

    /// Read the current member's data.
    pub fn data(&mut self) -> Data<'_, R> {
        Data { t: self }
    }
}

/// What the metadata members before a header said.
#[derive(Default)]
struct Meta {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    /// This member's own pax records.
    local: Vec<(String, Vec<u8>)>,
}

/// The kind a header's type byte names (`None`: a type this reader does not support).
fn kind_of(t: u8) -> Option<Kind> {
    match t {
        b'0' | b'\0' | b'7' => Some(Kind::File),
        b'1' => Some(Kind::HardLink),
        b'2' => Some(Kind::Symlink),
        b'3' => Some(Kind::Char),
        b'4' => Some(Kind::Block),
        b'5' => Some(Kind::Directory),
        b'6' => Some(Kind::Fifo),
        b'S' => Some(Kind::GnuSparse),
        _ => None,
    }
}

/// The member header's own fields (names, mode, owners, mtime, size, device numbers), a GNU
/// long name or link name taking the place of the header's; whether it is a GNU header.
fn apply_header(
    e: &mut Entry,
    h: &[u8; BLOCK],
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
) -> Result<bool> {
    let ustar = &h[257..263] == b"ustar\0";
    let gnu = &h[257..265] == b"ustar  \0";
    let mut path = field(&h[..100]).to_vec();
    if ustar && h[345] != 0 {
        let mut p = field(&h[345..500]).to_vec();
        p.push(b'/');
        p.extend_from_slice(&path);
        path = p;
    }
    e.path = long_name.unwrap_or(path);
    e.link = long_link.unwrap_or_else(|| field(&h[157..257]).to_vec());
    // old tars mark directories by a trailing slash on a regular file
    if e.kind == Some(Kind::File) && h[156] == b'\0' && e.path.ends_with(b"/") {
        e.kind = Some(Kind::Directory);
    }
    e.mode = (number(&h[100..108], "mode")? & 0o7777) as u32;
    e.uid = number(&h[108..116], "uid")?;
    e.gid = number(&h[116..124], "gid")?;
    e.mtime = number(&h[136..148], "mtime")? as i64;
    e.size = number(&h[124..136], "size")?;
    if ustar || gnu {
        e.dev_major = number(&h[329..337], "device major")? as u32;
        e.dev_minor = number(&h[337..345], "device minor")? as u32;
    }
    Ok(gnu)
}

/// The member's pax records over its header's fields.
fn apply_pax(e: &mut Entry, local: &[(String, Vec<u8>)]) -> Result<()> {
    for (k, v) in local {
        match k.as_str() {
            "path" => e.path = v.clone(),
            "linkpath" => e.link = v.clone(),
            "size" => e.size = parse_u64(v, k)?,
            "uid" => e.uid = parse_u64(v, k)?,
            "gid" => e.gid = parse_u64(v, k)?,
            "mtime" => {
                let s = String::from_utf8_lossy(v);
                e.mtime = s
                    .split('.')
                    .next()
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(e.mtime);
            }
            _ => {}
        }
    }
    Ok(())
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// The data of the current member (a `Read` that ends where the member does).
pub struct Data<'a, R> {
    t: &'a mut TarReader<R>,
}

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.t.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let k = (buf.len() as u64).min(self.t.left) as usize;
        let n = self.t.r.read(&mut buf[..k])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the archive is truncated (a member's data ends early)",
            ));
        }
        self.t.left -= n as u64;
        self.t.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(data: &[u8]) -> Result<Vec<(Entry, Vec<u8>)>> {
        let mut t = TarReader::new(data);
        let mut out = vec![];
        while let Some(e) = t.next_entry()? {
            let mut d = vec![];
            t.data().read_to_end(&mut d)?;
            out.push((e, d));
        }
        Ok(out)
    }

    #[test]
    fn pax_values_may_hold_newlines() {
        let v = b"user::rwx\ngroup::r-x\nother::r--\n";
        let rec = |k: &str, v: &[u8]| {
            let body = [k.as_bytes(), b"=", v, b"\n"].concat();
            let mut len = body.len() + 3;
            if format!("{len} ").len() + body.len() != len {
                len += 1;
            }
            [format!("{len} ").as_bytes(), &body].concat()
        };
        let data = [rec("SCHILY.acl.access", v), rec("path", b"a/b")].concat();
        let r = pax_records(&data).unwrap();
        assert_eq!(r[0], ("SCHILY.acl.access".into(), v.to_vec()));
        assert_eq!(r[1], ("path".into(), b"a/b".to_vec()));
        for (rec, says) in [
            (
                &b"99 path=x\n"[..],
                "malformed pax record: its length 99 does not end at a newline",
            ),
            (&b"6 abc\n"[..], "malformed pax record: no '='"),
            (&b"x path=a\n"[..], "malformed pax record length"),
        ] {
            let err = format!("{:#}", pax_records(rec).unwrap_err());
            assert!(err.contains(says), "{err}");
        }
    }

    /// The reader agrees with the tar crate's writer on ustar, GNU long names, pax paths,
    /// and data framing; truncation and checksum damage are errors.
    #[test]
    fn reads_what_tar_writers_write() {
        let mut b = tar::Builder::new(vec![]);
        let long = format!("dir/{}", "n".repeat(150));
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o4755);
        h.set_uid(1 << 40);
        b.append_data(&mut h, &long, &b"hello"[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "link", "/usr/share/x").unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        b.append_pax_extensions([("path", &b"pax/name"[..]), ("SCHILY.xattr.user.a", b"1\n2")])
            .unwrap();
        b.append_data(&mut h, "short", &b"abc"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let es = entries(&data).unwrap();
        assert_eq!(es.len(), 3);
        assert_eq!(es[0].0.path, long.as_bytes());
        assert_eq!((es[0].0.mode, es[0].0.uid), (0o4755, 1 << 40));
        assert_eq!(es[0].1, b"hello");
        assert_eq!(
            (es[1].0.kind, &es[1].0.link[..]),
            (Some(Kind::Symlink), &b"/usr/share/x"[..])
        );
        assert_eq!(es[2].0.path, b"pax/name");
        assert_eq!(es[2].0.pax("SCHILY.xattr.user.a"), Some(&b"1\n2"[..]));
        assert_eq!(es[2].1, b"abc");
        // truncated in the data
        assert!(entries(&data[..BLOCK * 3 + 2]).is_err());
        // damaged header
        let mut bad = data.clone();
        bad[BLOCK * 2 + 10] ^= 0x55;
        assert!(format!("{:#}", entries(&bad).unwrap_err()).contains("checksum"));
    }

    proptest::proptest! {
        /// Whatever names, modes, owners and contents a tar writer (the tar crate, GNU and
        /// pax headers) puts in, the reader returns, member for member.
        #[test]
        fn members_round_trip(
            files in proptest::collection::vec(
                ("[a-z0-9_-][a-z0-9._-]{0,39}(/[a-z0-9_-][a-z0-9._-]{0,89}){0,3}", 0u32..0o7777, 0u64..(1u64 << 33),
                 proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000)),
                1..8,
            ),
            pax_value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let mut b = tar::Builder::new(vec![]);
            for (i, (name, mode, uid, data)) in files.iter().enumerate() {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(*mode);
                h.set_uid(*uid);
                if i == 0 {
                    b.append_pax_extensions([("SCHILY.xattr.user.v", pax_value.as_slice())]).unwrap();
                }
                b.append_data(&mut h, name, data.as_slice()).unwrap();
            }
            let raw = b.into_inner().unwrap();
            let got = entries(&raw).unwrap();
            proptest::prop_assert_eq!(got.len(), files.len());
            for ((e, d), (name, mode, uid, data)) in got.iter().zip(&files) {
                proptest::prop_assert_eq!(&e.path, name.as_bytes());
                proptest::prop_assert_eq!((e.mode, e.uid), (*mode, *uid));
                proptest::prop_assert_eq!(d, data);
            }
            proptest::prop_assert_eq!(got[0].0.pax("SCHILY.xattr.user.v"), Some(pax_value.as_slice()));
        }

        /// Any prefix of a valid archive is read as complete members then an error or a
        /// clean end, never a panic or a member past the cut.
        #[test]
        fn truncation_never_panics(cut in 0usize..6000) {
            let mut b = tar::Builder::new(vec![]);
            let mut h = tar::Header::new_gnu();
            h.set_size(3000);
            b.append_data(&mut h, "a", &[7u8; 3000][..]).unwrap();
            let raw = b.into_inner().unwrap();
            let cut = cut.min(raw.len());
            if let Ok(es) = entries(&raw[..cut]) {
                for (e, d) in es {
                    proptest::prop_assert_eq!(d.len() as u64, e.size);
                }
            }
        }
    }
}
