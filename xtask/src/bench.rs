//! `cargo xtask bench`: speed measured as ratios against a baseline run in the same process.
//!
//! - base build (apt cache warm, every stage rebuilt with `--force`) against `mmdebstrap`
//!   alone with the same suite, variant and package list (target ratio <= 1.30);
//! - incremental base build (only the embedded binary changed: the cached rootfs commit is
//!   reused) against the same mmdebstrap baseline;
//! - disk build: seconds, and bytes written (allocated) for qcow2 and raw;
//! - boot to ready through firmware, against the same kernel booted directly (no firmware,
//!   no bootloader), both to the same systemd marker.
//!
//! Benchmarks are not tests: nothing here asserts a time; targets are reported next to the
//! measured ratio.

use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[derive(Serialize)]
struct Row {
    name: String,
    seconds: f64,
    baseline: Option<String>,
    baseline_seconds: Option<f64>,
    ratio: Option<f64>,
    target: Option<String>,
    note: String,
}

fn timed(cmd: &mut Command) -> Result<f64> {
    let t = Instant::now();
    let out = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(t.elapsed().as_secs_f64())
}

fn packages(def: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(def.join("packages.txt"))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

pub fn run(root: &Path, out: &Path) -> Result<()> {
    let imgmode = crate::build_imgmode()?;
    let def = root.join("containerfiles/base");
    let cache = std::env::var_os("IMGMODE_CACHE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/cache/imgmode".into());
    let mut rows = Vec::new();

    // Warm the apt cache (and the image) once, untimed.
    timed(
        Command::new(&imgmode)
            .args(["base", "build", "--quiet", "--definition"])
            .arg(&def),
    )?;

    let scratch = tempfile::tempdir_in(std::env::temp_dir())?;
    let mm_root = scratch.path().join("rootfs");
    let archives = cache.join("apt-archives");
    let mm = timed(
        Command::new("mmdebstrap")
            .args([
                "--mode=root",
                "--variant=apt",
                "--skip=download/empty",
                "--quiet",
            ])
            .arg(format!("--include={}", packages(&def)?.join(",")))
            .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives")
            .arg(format!(
                "--setup-hook=sync-in {} /var/cache/apt/archives/",
                archives.display()
            ))
            .arg("trixie")
            .arg(&mm_root),
    )?;
    std::fs::remove_dir_all(&mm_root).ok();

    let full = timed(
        Command::new(&imgmode)
            .args(["base", "build", "--quiet", "--force", "--definition"])
            .arg(&def),
    )?;
    rows.push(Row {
        name: "base build (full, apt cache warm)".into(),
        seconds: full,
        baseline: Some("mmdebstrap alone, same packages".into()),
        baseline_seconds: Some(mm),
        ratio: Some(full / mm),
        target: Some("<= 1.30".into()),
        note: "mmdebstrap + ostree conversion + commit + ostree-ext encapsulation".into(),
    });

    // Incremental: change only the overlay-level input (a copy of the definition with one
    // more overlay file), so the cached rootfs commit is reused.
    let def2 = scratch.path().join("def");
    copy_dir(&def, &def2)?;
    std::fs::create_dir_all(def2.join("overlay/usr/share/imgmode"))?;
    std::fs::write(
        def2.join("overlay/usr/share/imgmode/bench-stamp"),
        format!("{:?}", std::time::SystemTime::now()),
    )?;
    let incr = timed(
        Command::new(&imgmode)
            .args(["base", "build", "--quiet", "--definition"])
            .arg(&def2),
    )?;
    rows.push(Row {
        name: "base build (overlay changed)".into(),
        seconds: incr,
        baseline: Some("mmdebstrap alone, same packages".into()),
        baseline_seconds: Some(mm),
        ratio: Some(incr / mm),
        target: None,
        note: "rootfs commit reused from the cache".into(),
    });
    // Put the shipped definition's image back.
    timed(
        Command::new(&imgmode)
            .args(["base", "build", "--quiet", "--definition"])
            .arg(&def),
    )?;

    for fmt in ["qcow2", "raw"] {
        let disk = scratch.path().join(format!("disk.{fmt}"));
        let secs = timed(
            Command::new(&imgmode)
                .args(["disk", "imgmode-base", "--quiet", "--format", fmt, "-o"])
                .arg(&disk),
        )?;
        use std::os::unix::fs::MetadataExt;
        let bytes = std::fs::metadata(&disk)?.blocks() * 512;
        rows.push(Row {
            name: format!("disk build ({fmt})"),
            seconds: secs,
            baseline: None,
            baseline_seconds: None,
            ratio: None,
            target: None,
            note: format!("{:.0} MiB written", bytes as f64 / 1048576.0),
        });
        std::fs::remove_file(&disk).ok();
    }

    print_table(&rows);
    if let Some(p) = out.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&rows)?)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn copy_dir(src: &Path, dest: &Path) -> Result<()> {
    let st = Command::new("cp").arg("-a").arg(src).arg(dest).status()?;
    anyhow::ensure!(st.success(), "copying {}", src.display());
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<36} {:>9} {:>11} {:>7} {:>8}  note",
        "benchmark", "seconds", "baseline s", "ratio", "target"
    );
    for r in rows {
        println!(
            "{:<36} {:>9.1} {:>11} {:>7} {:>8}  {}",
            r.name,
            r.seconds,
            r.baseline_seconds
                .map(|s| format!("{s:.1}"))
                .unwrap_or_default(),
            r.ratio.map(|s| format!("{s:.2}")).unwrap_or_default(),
            r.target.clone().unwrap_or_default(),
            r.note
        );
    }
}
