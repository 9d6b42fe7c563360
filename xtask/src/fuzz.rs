//! `cargo xtask fuzz --seconds N`: every cargo-fuzz target in `fuzz/` for N seconds each.
//!
//! The tar extractor's corpus starts from the hostile-archive regression corpus
//! (`builder/tests/hostile/make_corpus.py`), so the fuzzer begins where the known attacks
//! are. A crash stops the run with the artifact's path and the command that replays it;
//! each crash fixed becomes a regression test in the crate it crashed.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

pub const TARGETS: &[&str] = &["image_ref", "tar_extract", "configs", "recert_scan"];

pub fn run(root: &Path, seconds: u64, only: &[String]) -> Result<()> {
    for t in only {
        if !TARGETS.contains(&t.as_str()) {
            bail!(
                "unknown fuzz target {t:?}; the targets are {}",
                TARGETS.join(", ")
            );
        }
    }
    let have = |args: &[&str]| {
        Command::new("cargo")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have(&["+nightly", "--version"]) {
        bail!(
            "cargo xtask fuzz needs a nightly toolchain (sanitizers): rustup toolchain install nightly"
        );
    }
    if !have(&["+nightly", "fuzz", "--version"]) {
        // cargo-fuzz comes from crates.io like every other crate here
        crate::sh(Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]))
            .context("installing cargo-fuzz (cargo install cargo-fuzz)")?;
    }
    let corpus = root.join("fuzz/corpus/tar_extract");
    std::fs::create_dir_all(&corpus)?;
    let escape = root.join("fuzz/corpus/escape-target");
    std::fs::create_dir_all(&escape)?;
    crate::sh(
        Command::new("python3")
            .arg(root.join("builder/tests/hostile/make_corpus.py"))
            .arg(&corpus)
            .arg(&escape),
    )
    .context("writing the hostile-archive seed corpus (Debian package python3)")?;
    // the bomb is a gzip; the target reads plain tar streams
    let _ = std::fs::remove_file(corpus.join("decompression-bomb.tar.gz"));
    let mut failed = vec![];
    for t in TARGETS
        .iter()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == *t))
    {
        let st = Command::new("cargo")
            .current_dir(root)
            .args(["+nightly", "fuzz", "run", t, "--", "-rss_limit_mb=2048"])
            .arg(format!("-max_total_time={seconds}"))
            .status()
            .with_context(|| format!("running cargo fuzz run {t}"))?;
        if !st.success() {
            eprintln!(
                "==> {t}: the fuzzer found a failure; its input is under fuzz/artifacts/{t}/ \
                 (replay: cargo +nightly fuzz run {t} fuzz/artifacts/{t}/<file>)"
            );
            failed.push(*t);
        } else {
            eprintln!("==> {t}: no failure in {seconds} s");
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}
