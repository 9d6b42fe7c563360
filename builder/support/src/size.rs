//! Sizes: the binary units, parsing `10G`-style arguments, and printing sizes for people.

use anyhow::{bail, Result};

pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * MIB;

/// Parse sizes such as `10G`, `512M`, `2GiB`, `1073741824`.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        anyhow::anyhow!(
            "invalid size {s:?}: expected a number with an optional unit (K, M, G, T), e.g. 10G"
        )
    })?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1024,
        "m" | "mib" | "mb" => MIB,
        "g" | "gib" | "gb" => GIB,
        "t" | "tib" | "tb" => 1024 * GIB,
        other => bail!("invalid size {s:?}: unknown unit {other:?}; use K, M, G or T"),
    };
    n.checked_mul(mult)
        .ok_or_else(|| anyhow::anyhow!("invalid size {s:?}: too large"))
}

/// A size for people: GiB with one decimal from 1 GiB, whole MiB below.
pub fn human_size(b: u64) -> String {
    if b >= GIB {
        format!("{:.1} GiB", b as f64 / GIB as f64)
    } else {
        format!("{:.0} MiB", b as f64 / MIB as f64)
    }
}
