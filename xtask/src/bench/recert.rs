//! recert on generated PKIs (`cargo xtask bench recert`).

use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::common::{timed, Row};

/// recert on PKIs of about 100 and 1,000 certificates (RSA 2048 leaves, all in files), with 1
/// and 2 key-generation threads; the baseline is the 1-thread run on the same PKI.
pub(super) fn run(imgmode: &Path, rows: &mut Vec<Row>) -> Result<()> {
    // The generated PKI's fixed part has 14 certificates (13 in files).
    const FIXED: usize = 13;
    for total in [100usize, 1000] {
        let scratch = tempfile::tempdir_in(std::env::temp_dir())?;
        let seed = scratch.path().join("seed");
        let gen = timed(
            Command::new(imgmode)
                .args(["internal", "gen-test-pki", "--extra-leaves"])
                .arg((total - FIXED).to_string())
                .arg(&seed),
        )?;
        eprintln!("generated a {total}-certificate PKI in {gen:.1} s");
        let mut one_thread = None;
        let mut written_one: Option<Vec<String>> = None;
        for threads in [1usize, 2] {
            let copy = scratch.path().join(format!("t{threads}"));
            crate::sh(Command::new("cp").arg("-a").arg(&seed).arg(&copy))?;
            let t = Instant::now();
            let out = Command::new(imgmode)
                .args([
                    "recert",
                    "--format",
                    "json",
                    "--cluster-rename",
                    "bench:example.org",
                ])
                .arg("--threads")
                .arg(threads.to_string())
                .arg("--static-dir")
                .arg(&copy)
                .output()?;
            let secs = t.elapsed().as_secs_f64();
            if !out.status.success() {
                anyhow::bail!("recert failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let s: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            // every certificate and key found was regenerated, but the certificates recert
            // keeps and says so (the admin kubeconfig CA, whose key the cluster does not
            // hold), and both thread counts wrote the same files
            let kept = s["certificates"].as_array().map_or(0, |c| {
                c.iter()
                    .filter(|c| c["action"].get("keep").is_some())
                    .count()
            });
            anyhow::ensure!(
                kept <= 1,
                "recert ({threads} threads) kept {kept} certificates; only the admin kubeconfig CA may stay"
            );
            for (kind, allowed) in [("certificates", kept), ("private_keys", 0)] {
                let (found, regenerated) = (
                    s["found"][kind].as_u64().unwrap_or(0),
                    s["regenerated"][kind].as_u64().unwrap_or(0),
                );
                anyhow::ensure!(
                    found == regenerated + allowed as u64 && found > 0,
                    "recert ({threads} threads) found {found} {kind} but regenerated {regenerated} (and kept {allowed})"
                );
            }
            let mut written: Vec<String> = s["written"]
                .as_array()
                .context("recert's summary lists no written files")?
                .iter()
                .filter_map(|w| w.as_str())
                .map(|w| w.replace(&copy.display().to_string(), ""))
                .collect();
            written.sort();
            let same_files = written_one.get_or_insert_with(|| written.clone()) == &written;
            anyhow::ensure!(
                same_files,
                "recert with {threads} threads wrote other files than with 1"
            );
            let compared = format!(
                "{} certificates found, all regenerated but the {kept} recert keeps (the admin kubeconfig CA, whose key the cluster does not hold); {} keys found, all regenerated; {} files written, the same with 1 and 2 threads",
                s["found"]["certificates"],
                s["found"]["private_keys"],
                written.len()
            );
            let ms = |k: &str| s["timings"][k].as_u64().unwrap_or(0);
            let note = format!(
                "{} certs, {} keys; scan {} ms, key generation {} ms (waited {} ms after the scan), processing {} ms, commit {} ms",
                s["regenerated"]["certificates"],
                s["regenerated"]["private_keys"],
                ms("scan_ms"),
                ms("key_generation_ms"),
                ms("key_generation_wait_ms"),
                ms("processing_ms"),
                ms("commit_ms")
            );
            let base = *one_thread.get_or_insert(secs);
            rows.push(Row {
                name: format!("recert {total} certificates, {threads} thread(s)"),
                seconds: secs,
                baseline: (threads > 1).then(|| "same PKI, 1 thread".into()),
                baseline_seconds: (threads > 1).then_some(base),
                ratio: (threads > 1).then_some(secs / base),
                target: None,
                note,
                compared: Some(compared),
                ..Row::default()
            });
            std::fs::remove_dir_all(&copy).ok();
        }
    }
    Ok(())
}
