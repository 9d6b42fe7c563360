//! Facts about the machine imgmode runs on, in the spellings images use.

use anyhow::{Context, Result};

/// The architecture name images use for this machine.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The first global IPv4 address (`ip -4 -o addr show scope global`).
pub fn first_global_ipv4() -> Result<String> {
    let text = crate::cmd::Run::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .read()?;
    text.lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .filter_map(|a| a.split('/').next())
        .map(str::to_string)
        .next()
        .context("no global IPv4 address on this machine; pass --ip")
}

