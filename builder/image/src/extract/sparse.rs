//! PAX sparse files (GNU formats 0.1 and 1.0): their records, their maps, and their data
//! written at its offsets.

use anyhow::{bail, Context, Result};
use std::io::{Read, Seek};

/// The PAX records of a GNU sparse file (formats 0.1 and 1.0).
#[derive(Default)]
pub(super) struct PaxSparse {
    pub(super) name: Option<Vec<u8>>,
    pub(super) realsize: Option<u64>,
    pub(super) major: Option<u64>,
    pub(super) minor: Option<u64>,
    pub(super) map: Option<String>,
}

/// Where a PAX sparse file's data goes: `map` (0.1, in the record) or read from the front of
/// the data (1.0, decimal lines padded to a block).
pub(super) struct SparseLayout {
    pub(super) realsize: u64,
    pub(super) map: Option<Vec<(u64, u64)>>,
}

/// No sparse map is allowed more chunks than this (a map is memory before it is data).
const MAX_SPARSE_CHUNKS: usize = 1 << 20;

impl PaxSparse {
    pub(super) fn layout(&self) -> Result<Option<SparseLayout>> {
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
    pub(super) fn copy(&self, r: &mut impl Read, f: &mut std::fs::File) -> std::io::Result<u64> {
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
