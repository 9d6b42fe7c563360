//! The boot scenarios: `boot`, `boot-uefi`, `boot-raw` and `boot-direct` boot the shared disk
//! through SeaBIOS, OVMF, as raw, and with QEMU loading the kernel, and check what
//! `imgmode status` reports in the guest (`boot` also runs the guides' `sh vm=boot` blocks);
//! `degraded-boot` adds a unit that fails at boot and proves the harness refuses such a boot.

use crate::harness::artifacts::{guide_blocks, TEST_KARG, TEST_SSH_KEY};
use crate::harness::context::RunContext;
use crate::harness::direct;
use crate::harness::guest::{report_line, BOOT_TIMEOUT, SHUTDOWN_TIMEOUT};
use crate::harness::qemu::{Boot, Vm, VmConfig};
use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use std::path::Path;

/// The guest job: report `imgmode status --format json` on the results port.
const STATUS_UNIT: &str = r#"[Unit]
Description=imgmode vmtest: report deployment status
After=multi-user.target

[Service]
Type=oneshot
ImportCredential=vmtest.*
StandardOutput=file:/dev/virtio-ports/org.imgmode.results
StandardError=journal
ExecStart=/bin/sh -c 'if [ -f "$$CREDENTIALS_DIRECTORY/vmtest.guide" ]; then sh "$$CREDENTIALS_DIRECTORY/vmtest.guide"; fi; echo "IMGMODE-CMDLINE $$(cat /proc/cmdline)"; echo "IMGMODE-AUTHKEY $$(cat /root/.ssh/authorized_keys)"; echo "IMGMODE-OSTREE-CONTAINER $$(ostree container image list --repo=/ostree/repo | tr "\n" " ")"; echo IMGMODE-STATUS-BEGIN; imgmode status --format json; echo IMGMODE-DONE rc=$$?'
"#;

#[derive(Debug, Deserialize)]
struct Deployment {
    checksum: String,
    booted: bool,
    #[serde(rename = "container-image-reference")]
    container_image_reference: Option<String>,
    #[serde(rename = "container-image-reference-digest")]
    digest: Option<String>,
    #[serde(rename = "base-checksum")]
    base_checksum: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Status {
    deployments: Vec<Deployment>,
}

/// Parse the guest's report: JSON between the BEGIN marker and `IMGMODE-DONE rc=N`.
fn parse_status_report(report: &str) -> Result<String> {
    let start = report
        .find("IMGMODE-STATUS-BEGIN")
        .context("report has no IMGMODE-STATUS-BEGIN marker")?;
    let body = &report[start + "IMGMODE-STATUS-BEGIN".len()..];
    let end = body
        .find("IMGMODE-DONE")
        .context("report has no IMGMODE-DONE marker")?;
    let rc = body[end..].trim_start_matches("IMGMODE-DONE rc=").trim();
    ensure!(
        rc.starts_with('0'),
        "imgmode status failed in the guest (rc={rc}):\n{}",
        &body[..end]
    );
    Ok(body[..end].trim().to_string())
}

/// How a boot scenario starts the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Bios,
    BiosRaw,
    Uefi,
    Direct,
}

/// `boot`, `boot-uefi`, `boot-raw` and `boot-direct`.
pub(crate) async fn boot(ctx: &RunContext, dir: &Path, mode: Mode) -> Result<String> {
    let a = &ctx.artifacts;
    let firmware = match mode {
        Mode::Bios | Mode::BiosRaw => Boot::Bios,
        Mode::Uefi => Boot::Uefi,
        Mode::Direct => {
            let (disk, d) = (a.base_disk.clone(), dir.join("direct"));
            tokio::task::spawn_blocking(move || direct::from_disk(&disk, &d, "")).await??
        }
    };
    let disk = if mode == Mode::BiosRaw {
        &a.base_raw
    } else {
        &a.base_disk
    };
    let mut cfg = VmConfig::new(disk, firmware).job_unit("imgmode-vmtest.service", STATUS_UNIT);
    // `boot` runs the guides' blocks marked for it (docs/guide/, sh vm=boot) before the status
    let guide = mode == Mode::Bios;
    if guide {
        cfg = cfg.credential("vmtest.guide", guide_blocks(&a.imgmode, "boot", None)?);
    }
    let mut vm = Vm::start(&cfg, dir).await?;
    // GRUB must have run: its menu is the proof that firmware loaded our bootloader.
    let result = async { vm.wait_for_result("IMGMODE-DONE", BOOT_TIMEOUT).await }.await;
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = vm.quit().await;
            return Err(e);
        }
    };
    let booted_after = vm.elapsed();
    let console = vm.console();
    let guide_note = if guide {
        // the guest's report as the results port captured it
        let file = dir.join("results.log");
        format!(
            "; {}",
            guide_blocks(&a.imgmode, "boot", Some(&file))?.trim()
        )
    } else {
        String::new()
    };
    let json = parse_status_report(&report)?;
    std::fs::write(dir.join("status.json"), &json)?;
    let status: Status = serde_json::from_str(&json).context("parsing the guest's status JSON")?;
    let booted = status
        .deployments
        .iter()
        .find(|d| d.booted)
        .context("status lists no booted deployment")?;
    let want_commit = a
        .base_labels
        .get("ostree.commit")
        .context("the base image has no ostree.commit label")?;
    let got = booted.base_checksum.as_deref().unwrap_or(&booted.checksum);
    if got != want_commit {
        bail!(
            "booted commit {got} (deployment {}) is not the image's ostree.commit {want_commit}",
            booted.checksum
        );
    }
    ensure!(
        booted.digest.as_deref() == Some(a.base_digest.as_str()),
        "booted image digest {:?} is not the image's {}",
        booted.digest,
        a.base_digest
    );
    let imgref = booted
        .container_image_reference
        .as_deref()
        .context("the booted deployment records no image reference")?;
    ensure!(
        imgref.starts_with("ostree-unverified-image:"),
        "unexpected origin {imgref}"
    );
    // GRUB's `linux` command prepends BOOT_IMAGE= to the kernel command line; QEMU's
    // -kernel does not. That tells which path loaded the kernel.
    let via_grub = console.contains("Command line: BOOT_IMAGE=");
    if mode == Mode::Direct {
        ensure!(
            !via_grub,
            "GRUB loaded the kernel although QEMU was given it directly"
        );
    } else {
        ensure!(
            via_grub,
            "the kernel command line has no BOOT_IMAGE=: the disk was not booted through GRUB"
        );
    }
    guest_facts(&report)?;
    ensure!(
        vm.query_status().await? == "running",
        "VM not running before powerdown"
    );
    vm.powerdown().await?;
    let events = vm.wait_shutdown(SHUTDOWN_TIMEOUT).await?;
    Ok(format!(
        "booted {got} ({}) in {:.0}s; clean ACPI shutdown; {} QMP events{guide_note}",
        a.base_digest,
        booted_after.as_secs_f64(),
        events.len()
    ))
}

/// The guest's facts besides the status: the test kernel argument, `ostree container` (imgmode
/// as ostree-ext) listing the deployed image, and root's key from `--root-ssh-key`.
fn guest_facts(report: &str) -> Result<()> {
    let cmdline = report_line(report, "IMGMODE-CMDLINE").unwrap_or_default();
    ensure!(
        cmdline.split_whitespace().any(|a| a == TEST_KARG),
        "--karg {} is not on the kernel command line: {cmdline}",
        TEST_KARG
    );
    // `ostree container` runs ostree-ext through /usr/libexec/libostree/ext/ostree-container
    // (imgmode) and must see the image the disk was deployed from.
    let listed = report_line(report, "IMGMODE-OSTREE-CONTAINER").unwrap_or_default();
    ensure!(
        listed.contains("imgmode-base/latest"),
        "`ostree container image list` in the guest does not list the deployed image: {listed:?}"
    );
    ensure!(
        report_line(report, "IMGMODE-AUTHKEY") == Some(TEST_SSH_KEY),
        "root's authorized_keys does not hold the --root-ssh-key key: {:?}",
        report_line(report, "IMGMODE-AUTHKEY")
    );
    Ok(())
}

/// The unit `degraded-boot` adds: it fails at every boot.
const BROKEN_UNIT: &str = "imgmode-vmtest-broken.service";

/// `degraded-boot`: the base disk with one unit that fails at boot. The boot's health report
/// must say `degraded`, and waiting for the job's result must fail naming the unit and
/// carrying its journal, so that no scenario can pass on a degraded system.
pub(crate) async fn degraded_boot(ctx: &RunContext, dir: &Path) -> Result<String> {
    let a = &ctx.artifacts;
    let cfg = VmConfig::new(&a.base_disk, Boot::Bios)
        .job_unit("imgmode-vmtest.service", STATUS_UNIT)
        .extra_unit(
            BROKEN_UNIT,
            "[Unit]\nDescription=imgmode vmtest: a unit that fails at boot\n[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo imgmode-vmtest-broken-on-purpose; exit 3'\n",
        )
        .unit_dropin(
            "multi-user.target~imgmode-vmtest-broken",
            &format!("[Unit]\nWants={BROKEN_UNIT}\n"),
        );
    let mut vm = Vm::start(&cfg, dir).await?;
    let r = vm.wait_for_result("IMGMODE-DONE", BOOT_TIMEOUT).await;
    let health = vm.health();
    let _ = vm.quit().await;
    let err = match r {
        Ok(_) => bail!("a boot with {BROKEN_UNIT} failed was accepted: {health:?}"),
        Err(e) => format!("{e:#}"),
    };
    for want in [
        "ended startup \"degraded\"",
        &format!("failed units: {BROKEN_UNIT}"),
        "imgmode-vmtest-broken-on-purpose",
    ] {
        ensure!(
            err.contains(want),
            "the degraded boot's error does not say {want:?}:\n{err}"
        );
    }
    Ok(format!(
        "refused as it must be: {}",
        err.lines().next().unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_report_parsing() {
        let r = "noise\nIMGMODE-STATUS-BEGIN\n{\"deployments\":[]}\nIMGMODE-DONE rc=0";
        assert_eq!(parse_status_report(r).unwrap(), "{\"deployments\":[]}");
        let bad = "IMGMODE-STATUS-BEGIN\nerror: x\nIMGMODE-DONE rc=1";
        assert!(parse_status_report(bad)
            .unwrap_err()
            .to_string()
            .contains("rc=1"));
        assert!(parse_status_report("IMGMODE-DONE rc=0").is_err());
    }
}
