//! Digests: checked before they become a path or a URL, verified while a blob streams.

use anyhow::{bail, Result};
use sha2::Digest as _;
use std::io::Read;

/// The hex part of a digest string after checking its form: a known algorithm (`sha256`,
/// `sha512`), exactly as many hex digits as it produces, lowercase only (the OCI spec's
/// rule; `SHA256:ABC…` would name a different path on a case-sensitive filesystem).
pub fn hex_of(d: &str) -> Result<&str> {
    let Some((algo, hex)) = d.split_once(':') else {
        bail!("malformed digest {d:?}: expected ALGORITHM:HEX, e.g. sha256:<64 hex digits>");
    };
    let len = match algo {
        "sha256" => 64,
        "sha512" => 128,
        _ => bail!("digest {d:?} uses the unsupported algorithm {algo:?} (sha256 or sha512)"),
    };
    if hex.len() != len
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        bail!("malformed digest {d:?}: {algo} takes {len} lowercase hex digits");
    }
    Ok(hex)
}

/// The hex part of a `sha256:` digest (what imgmode's blob stores are named by).
pub fn sha256_hex(d: &str) -> Result<&str> {
    let hex = hex_of(d)?;
    if !d.starts_with("sha256:") {
        bail!("digest {d:?} is not sha256 (the only algorithm imgmode stores blobs by)");
    }
    Ok(hex)
}

/// The sha256 digest of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Fail unless `data` has `size` bytes and the `sha256` digest `want`.
pub fn verify_bytes(what: &str, data: &[u8], want: &str, size: Option<u64>) -> Result<()> {
    sha256_hex(want)?;
    if let Some(s) = size {
        if s != data.len() as u64 {
            bail!(
                "{what} {want} is corrupted: {} bytes where its descriptor says {s}",
                data.len()
            );
        }
    }
    let got = sha256(data);
    if got != want {
        bail!("{what} {want} is corrupted: its content hashes to {got}");
    }
    Ok(())
}

/// A reader that hashes and counts a blob as it streams and fails the read that would end
/// it (or run past its size) when the size or the digest is wrong, so no consumer ever sees
/// a clean end of a bad blob.
pub struct VerifyingReader<R> {
    inner: R,
    hash: sha2::Sha256,
    n: u64,
    /// `None`: a layer's uncompressed content, checked against its diff ID (no size known).
    size: Option<u64>,
    want: String,
    done: bool,
}

impl<R: Read> VerifyingReader<R> {
    /// `want` must be a sha256 digest (checked here).
    pub fn new(inner: R, want: &str, size: u64) -> Result<Self> {
        sha256_hex(want)?;
        Ok(Self {
            inner,
            hash: sha2::Sha256::new(),
            n: 0,
            size: Some(size),
            want: want.to_string(),
            done: false,
        })
    }

    /// A layer's uncompressed stream, checked against `diff_id` (the image config's
    /// `rootfs.diff_ids` entry) when it ends.
    pub fn diff_id(inner: R, diff_id: &str) -> Result<Self> {
        let mut r = Self::new(inner, diff_id, 0)?;
        r.size = None;
        Ok(r)
    }

    fn corrupt(&self, why: String) -> std::io::Error {
        let what = match self.size {
            Some(_) => format!("blob {} is corrupted or truncated", self.want),
            None => format!(
                "a layer does not match the diff ID {} the image config gives it (rootfs.diff_ids)",
                self.want
            ),
        };
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {why}"))
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let got = self.inner.read(buf)?;
        self.n += got as u64;
        if let Some(size) = self.size.filter(|s| self.n > *s) {
            return Err(self.corrupt(format!("more than the {size} bytes its descriptor says")));
        }
        self.hash.update(&buf[..got]);
        if got == 0 && !buf.is_empty() {
            if let Some(size) = self.size.filter(|s| self.n != *s) {
                return Err(self.corrupt(format!("{} of {size} bytes", self.n)));
            }
            let h = std::mem::take(&mut self.hash);
            let digest = format!("sha256:{}", hex::encode(h.finalize()));
            if digest != self.want {
                return Err(self.corrupt(format!("its content hashes to {digest}")));
            }
            self.done = true;
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_strings_are_checked_before_use() {
        let good = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(hex_of(&good).unwrap(), "ab".repeat(32));
        assert!(hex_of(&format!("sha512:{}", "0".repeat(128))).is_ok());
        for (bad, why) in [
            (format!("sha256:{}", "AB".repeat(32)), "lowercase"),
            (format!("sha256:{}", "ab".repeat(31)), "64 lowercase"),
            (format!("sha256:../../{}", "a".repeat(58)), "lowercase"),
            (format!("md5:{}", "a".repeat(32)), "unsupported algorithm"),
            ("sha256".to_string(), "malformed"),
            (format!("sha256:{}/x", "a".repeat(62)), "lowercase"),
        ] {
            let e = hex_of(&bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(sha256_hex(&format!("sha512:{}", "0".repeat(128))).is_err());
    }

    fn read_all(data: &[u8], want: &str, size: u64) -> std::io::Result<Vec<u8>> {
        let mut out = vec![];
        VerifyingReader::new(data, want, size)
            .unwrap()
            .read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn streamed_blobs_are_verified_at_their_end() {
        let data = b"hello blob".repeat(1000);
        let d = sha256(&data);
        assert_eq!(read_all(&data, &d, data.len() as u64).unwrap(), data);
        // truncated
        let e = read_all(&data[..100], &d, data.len() as u64).unwrap_err();
        assert!(e.to_string().contains("100 of 10000 bytes"), "{e}");
        // longer than its descriptor
        let e = read_all(&data, &d, 50).unwrap_err();
        assert!(e.to_string().contains("more than the 50 bytes"), "{e}");
        // one flipped byte
        let mut bad = data.clone();
        bad[5000] ^= 1;
        let e = read_all(&bad, &d, data.len() as u64).unwrap_err();
        assert!(e.to_string().contains("hashes to sha256:"), "{e}");
        assert!(verify_bytes("manifest", &bad, &d, None).is_err());
        verify_bytes("manifest", &data, &d, Some(data.len() as u64)).unwrap();
    }
}
