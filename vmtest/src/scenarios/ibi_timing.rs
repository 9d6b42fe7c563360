//! The `ibi` scenario's benchmark figures: host 2's run (the installation ISO booted onto a
//! blank disk until post-pivot is done) cut into phases on the host's clock, and the
//! baseline measured in the same run, the same installed disk booted again on the same
//! machine, when the run measures baselines (`cargo xtask bench ibi` reads both from
//! `timings.json`).

use crate::harness::guest::{job, report_line, run_job_timed, BOOT_TIMEOUT};
use crate::harness::qemu::{Boot, VmConfig};
use crate::harness::timeline::{console_lines, steps_of, Marker, Timeline, BOOT_MARKERS};
use anyhow::{Context, Result};
use std::path::Path;

/// The hosts' memory: the live system's writes stay in RAM. The benchmark's plain boot is the same
/// machine (the kernel's early boot takes longer with more memory to set up).
pub(crate) const HOST_MEMORY_MIB: u32 = 3072;

/// The IBI benchmark's figures, measured in an `ibi` run with the baselines
/// (`cargo xtask vmtest --baselines`) and written to its `timings.json` (read by `cargo xtask
/// bench ibi`, which runs the scenario so). The host without
/// refusal phases (host 2, SeaBIOS, the seed on its ISO) is timed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Timings {
    /// Wall clock from QEMU's start with the installation ISO and a blank disk until the
    /// installed system's startup was over with post-pivot done.
    pub end_to_end: f64,
    /// Wall clock from QEMU's start until the same installed disk, booted again through the
    /// same firmware, was over its startup: the baseline, measured in the same run.
    pub plain_boot: f64,
    /// Guest uptimes, for the note: the live system up, the install, the first boot's
    /// post-pivot done.
    pub live_boot: f64,
    pub install: f64,
    pub first_boot_ready: f64,
    /// Both runs cut into phases on the host's clock (`target/bench/ibi-phases.*`).
    #[serde(default)]
    pub phases: Timeline,
    #[serde(default)]
    pub plain_phases: Timeline,
}

/// Host 2's run from QEMU's start to post-pivot done (`end`), cut at its console's lines: the
/// live system's boot, the install (its progress lines nested), the reboot into the disk and
/// post-pivot (its step log's steps nested).
pub(crate) fn ibi_phases(dir: &Path, results: &str, end: f64) -> Result<Timeline> {
    let lines = console_lines(dir)?;
    // GRUB's lines show where its terminal is the serial console (the ISO's menu is; the
    // disk's may show nothing before the kernel)
    let markers = [
        Marker::new("firmware", ""),
        Marker::optional("GRUB menu (ISO)", "GNU GRUB"),
        Marker::optional("GRUB loads the live system", "Booting `"),
        Marker::new("kernel and initrd until the ISO", "Linux version"),
        Marker::new(
            "live root: ISO, root image, RAM layer",
            "Starting imgmode-live-root",
        ),
        Marker::new("live userspace", "Welcome to"),
        Marker::new("install", "==> ["),
        // the installer's summary, its last line: then the live system goes down (forced: no
        // "Stopping" lines)
        Marker::new("live system shutdown", "installed seed "),
        Marker::new("firmware and GRUB (disk)", "reboot: Restarting"),
        Marker::new("kernel and initrd", "Linux version"),
        Marker::new("userspace to post-pivot", "Welcome to"),
        Marker::new("post-pivot", "Starting imgmode-post-pivot"),
        // post-pivot's own last line: systemd prints no "Finished" for a unit on the console
        // once its idle pipe is closed (no_console_output while such a unit runs)
        Marker::new("to ready", "post-pivot done: "),
    ];
    let mut t = Timeline::from_console(
        "image-based install, QEMU start to post-pivot done",
        &lines,
        &markers,
        end,
    )?;
    t.nest_progress("install", &lines)?;
    let state: serde_json::Value = serde_json::from_str(
        report_line(results, "POSTPIVOTSTEPS ")
            .context("the guest reported no post-pivot steps")?,
    )
    .context("post-pivot's step log")?;
    t.nest("post-pivot", &steps_of(&state)?)?;
    Ok(t)
}

/// A plain boot of `disk` through `boot` on the hosts' machine (their memory): wall-clock
/// seconds from QEMU's start until startup was over (the job runs after the boot's health
/// report), and its phases; the best of [`PLAIN_RUNS`] boots.
pub async fn plain_boot(disk: &Path, boot: Boot, dir: &Path) -> Result<(f64, Timeline)> {
    let script = "echo IMGMODE-PHASE-1-BEGIN\necho \"UPTIME-READY $(cut -d' ' -f1 /proc/uptime)\"\necho IMGMODE-PHASE-1-END\nsystemctl poweroff\n";
    let cfg = job(
        VmConfig {
            memory_mib: HOST_MEMORY_MIB,
            ..VmConfig::new(disk, boot)
        },
        script.to_string(),
    );
    // TCG boot times vary by seconds from one boot to the next: the best of PLAIN_RUNS is the
    // baseline (the lower the baseline, the harder the ratio's target)
    let mut best: Option<(f64, Timeline)> = None;
    for i in 0..PLAIN_RUNS {
        let d = dir.join(format!("run-{}", i + 1));
        let (_, ready) = run_job_timed(&cfg, &d, "the plain boot", BOOT_TIMEOUT, true).await?;
        let ready = ready.context("the plain boot reported no UPTIME-READY")?;
        if best.as_ref().is_none_or(|b| ready < b.0) {
            let phases = Timeline::from_console(
                &format!(
                    "plain boot of the installed disk, QEMU start to ready (best of {PLAIN_RUNS})"
                ),
                &console_lines(&d)?,
                &BOOT_MARKERS,
                ready,
            )?;
            best = Some((ready, phases));
        }
    }
    best.context("no plain boot ran")
}

/// How many times the plain boot runs (its best counts). Three: two boots of the same disk in
/// one run have differed by 2 s, and the baseline of two runs a day apart by 11 s (28.3 s
/// against 39.6 s) while the IBI side moved by 6 s.
pub const PLAIN_RUNS: usize = 3;
