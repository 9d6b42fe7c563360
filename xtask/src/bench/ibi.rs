//! IBI end to end, from `cargo xtask vmtest ibi-two-sites`.

use anyhow::{Context, Result};
use std::path::Path;

use super::common::Row;

/// IBI end to end, from the last `cargo xtask vmtest ibi-two-sites` (guest uptimes: the
/// live ISO system's boot, the install, the first boot until post-pivot is done),
/// against a plain boot of that host's configured disk measured now, the same way.
pub(super) fn run(root: &Path, reuse: bool, rows: &mut Vec<Row>) -> Result<()> {
    // The scenario measures both sides in one run: host 2's installation ISO booted onto a
    // blank disk until post-pivot is done, then the same installed disk booted again.
    // `--reuse-vmtest` reads the figures of the last `vmtest ibi-two-sites` instead of running it again.
    if !reuse {
        // the binary users install, in every image of the run (the live system's installer,
        // the seed's post-pivot and recert)
        crate::vmtest(
            vec!["ibi-two-sites".into()],
            crate::VmtestOpts {
                release: true,
                lanes: 1,
                baselines: true,
                ..crate::VmtestOpts::default()
            },
        )?;
    }
    let path = root
        .join(crate::VMTEST_OUT)
        .join("ibi-two-sites/timings.json");
    let t: imgmode_vmtest::scenarios::ibi_timing::Timings = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| {
            format!(
                "no {}: the last `cargo xtask vmtest ibi-two-sites` did not measure the baseline; run `cargo xtask vmtest ibi-two-sites --release --baselines` or the bench without --reuse-vmtest",
                path.display()
            )
        })?,
    )?;
    // the per-phase breakdown of both sides, as tables and pictures
    let out = super::common::bench_dir(root);
    t.phases.write(&out.join("ibi-phases"))?;
    t.plain_phases.write(&out.join("ibi-plain-boot-phases"))?;
    rows.push(Row {
        name: "IBI end to end (TCG)".into(),
        seconds: t.end_to_end,
        baseline: Some(format!(
            "plain boot of the installed disk, same machine, best of {}",
            imgmode_vmtest::scenarios::ibi_timing::PLAIN_RUNS
        )),
        baseline_seconds: Some(t.plain_boot),
        ratio: Some(t.end_to_end / t.plain_boot),
        target: Some("<= 3".into()),
        note: format!(
            "release build; wall clock from QEMU start (SeaBIOS, seed on the ISO, no refusal phase) to post-pivot done, against QEMU start to startup over; guest uptimes: live system up {:.0}s, install {:.0}s, first boot to post-pivot done {:.0}s",
            t.live_boot, t.install, t.first_boot_ready
        ),
        ..Row::default()
    });
    Ok(())
}
