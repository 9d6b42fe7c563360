//! What every suite uses: the result row, imgmode's state directory and running commands.

use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// One benchmark's result: its time, its baseline's, their ratio and the target it is judged by.
#[derive(Clone, Default, Serialize, serde::Deserialize)]
pub(super) struct Row {
    pub(super) name: String,
    pub(super) seconds: f64,
    pub(super) baseline: Option<String>,
    pub(super) baseline_seconds: Option<f64>,
    pub(super) ratio: Option<f64>,
    pub(super) target: Option<String>,
    pub(super) note: String,
    /// What was compared with the baseline's output and found equal.
    #[serde(default)]
    pub(super) compared: Option<String>,
    /// Whether the ratio meets the target (`None`: no target).
    #[serde(default)]
    pub(super) met: Option<bool>,
}

/// imgmode's state directory, as the binary the benchmarks run resolves it.
pub(super) fn state_dir() -> PathBuf {
    std::env::var_os("IMGMODE_STATE_DIR").map_or_else(|| "/var/lib/imgmode".into(), PathBuf::from)
}

/// Where the benchmarks write their results and pictures: `target/bench/`.
pub(super) fn bench_dir(root: &Path) -> PathBuf {
    root.join("target/bench")
}

/// Run `cmd` to completion: its seconds (its stdout dropped; its stderr in the error).
pub(super) fn timed(cmd: &mut Command) -> Result<f64> {
    Ok(timed_lines(cmd)?.0)
}

/// Run `cmd` to completion, its stderr read as it comes: its seconds and each stderr line with
/// the second it arrived (for a per-phase timeline of its progress lines).
pub(super) fn timed_lines(cmd: &mut Command) -> Result<(f64, Vec<(f64, String)>)> {
    use std::io::BufRead;
    let t = Instant::now();
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut lines = Vec::new();
    for l in std::io::BufReader::new(child.stderr.take().context("no stderr pipe")?).split(b'\n') {
        lines.push((
            t.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&l?).into_owned(),
        ));
    }
    let status = child.wait()?;
    if !status.success() {
        let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        anyhow::bail!("{cmd:?} failed ({status}): {}", text.join("\n"));
    }
    Ok((t.elapsed().as_secs_f64(), lines))
}

/// Run `cmd` to completion: its stdout, or an error naming `what` with its stderr.
pub(super) fn stdout_of(cmd: &mut Command, what: &str) -> Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}
