//! IO adapters: a writer that hashes (sha256) and counts what passes through it, a file's
//! digest, and a reader that decompresses ahead on another thread.

use anyhow::{Context, Result};
use sha2::Digest;
use std::io::{Read, Write};
use std::path::Path;

/// A writer that hashes (SHA-256) and counts what passes through; `finish` gives the hex
/// digest and the byte count.
pub struct HashingWriter<W> {
    inner: W,
    hash: sha2::Sha256,
    n: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hash: sha2::Sha256::new(),
            n: 0,
        }
    }
    pub fn finish(mut self) -> Result<(String, u64)> {
        self.inner.flush()?;
        Ok((hex::encode(self.hash.finalize()), self.n))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// sha256 and size of a file.
pub fn hash_file(p: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(p).with_context(|| format!("reading {}", p.display()))?;
    let mut h = HashingWriter::new(std::io::sink());
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", p.display()))?;
    let (hex, n) = h.finish()?;
    Ok((format!("sha256:{hex}"), n))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_counting_and_reading_ahead() {
        let mut h = HashingWriter::new(Vec::new());
        h.write_all(b"abc").unwrap();
        let (hex, n) = h.finish().unwrap();
        assert_eq!(
            (hex.as_str(), n),
            (
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                3
            )
        );
        let td = tempfile::tempdir().unwrap();
        let f = td.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(hash_file(&f).unwrap(), (format!("sha256:{hex}"), 3));
        let data: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let mut out = vec![];
        read_ahead(std::io::Cursor::new(data.clone()))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }
}
