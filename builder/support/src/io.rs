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
    ChunkReader::new(rx)
}

/// Hand a stream to another thread: `produce` writes it (in 256 KiB chunks, at most 2 MiB
/// queued) while `consume` reads it on a scoped thread, as `gzip -d | tar -x` does across two
/// processes; returns what `consume` returns. When both fail, the producer's error is given
/// unless it only says that the consumer stopped reading.
pub fn pipe_through<T: Send>(
    produce: impl FnOnce(&mut dyn Write) -> Result<()>,
    consume: impl FnOnce(&mut dyn Read) -> Result<T> + Send,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(8);
    std::thread::scope(|s| {
        let reader = s.spawn(move || consume(&mut ChunkReader::new(rx)));
        let mut w = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let produced = produce(&mut w).and_then(|()| Ok(w.flush()?));
        drop(w);
        let consumed = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reading thread panicked"))?;
        match (produced, consumed) {
            (Ok(()), c) => c,
            (Err(p), Err(c)) if is_broken_pipe(&p) => Err(c),
            (Err(p), _) => Err(p),
        }
    })
}

const CHUNK: usize = 256 << 10;

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The writing end of [`pipe_through`].
struct ChunkWriter {
    tx: std::sync::mpsc::SyncSender<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = b.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the reading side stopped early",
            )
        })
    }
}

/// Where a [`ChunkReader`] takes its chunks from: `None` at the end of the stream.
pub trait Chunks {
    fn next_chunk(&mut self) -> Option<std::io::Result<Vec<u8>>>;
}

impl Chunks for std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
    fn next_chunk(&mut self) -> Option<std::io::Result<Vec<u8>>> {
        self.recv().ok() // the sender finished: end of stream
    }
}

/// The receiving end of chunks an async task sends (read from a thread outside the runtime).
impl Chunks for tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
    fn next_chunk(&mut self) -> Option<std::io::Result<Vec<u8>>> {
        self.blocking_recv()
    }
}

/// A reader of a stream that arrives in chunks from another thread or task; an error
/// arrives in order, after the chunks before it.
pub struct ChunkReader<C> {
    chunks: C,
    cur: Vec<u8>,
    pos: usize,
}

impl<C: Chunks> ChunkReader<C> {
    pub fn new(chunks: C) -> Self {
        Self {
            chunks,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl<C: Chunks> Read for ChunkReader<C> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.chunks.next_chunk() {
                Some(chunk) => {
                    self.cur = chunk?;
                    self.pos = 0;
                }
                None => return Ok(0),
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

    #[test]
    fn a_pipe_through_a_thread_carries_the_stream_and_the_right_error() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
        let got = pipe_through(
            |w| {
                for c in data.chunks(100_000) {
                    w.write_all(c)?;
                }
                Ok(())
            },
            |r| {
                let mut v = vec![];
                r.read_to_end(&mut v)?;
                Ok(v)
            },
        )
        .unwrap();
        assert_eq!(got, data);
        // the reader stops: its error, not the writer's broken pipe
        let e = pipe_through(
            |w| loop {
                w.write_all(&[0u8; 4096])?;
            },
            |r| -> Result<()> {
                let mut b = [0u8; 10];
                r.read_exact(&mut b)?;
                anyhow::bail!("hostile archive")
            },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "hostile archive");
        // the writer fails: its error, whatever the reader made of the short stream
        let e = pipe_through(
            |w| {
                w.write_all(b"abc")?;
                anyhow::bail!("corrupt gzip")
            },
            |r| {
                let mut v = vec![];
                r.read_to_end(&mut v)?;
                Ok(v)
            },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "corrupt gzip");
    }
}
