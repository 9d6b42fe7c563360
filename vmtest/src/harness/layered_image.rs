//! The layered image the layered-image scenarios deploy (`imgmode build` of the example
//! Containerfiles on the host), and the VM they boot it in: the base disk with a payload disk
//! attached and a job script run at every boot.

use crate::harness::artifacts::{imgmode_json, Artifacts};
use crate::harness::guest::{job, BOOT_TIMEOUT};
use crate::harness::qemu::{Boot, Vm, VmConfig};
use anyhow::{ensure, Context, Result};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// A phase that fetches and stages an image may import layers under TCG: give it time.
pub(crate) const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

/// What ostree logs (forwarded to the console) once the new boot configuration is in place
/// ("Transaction complete; bootconfig swap: yes; ..." in 2025.2, "Bootloader updated;
/// bootconfig swap: yes; ..." before).
pub(crate) const BOOTLOADER_SWAPPED: &str = "bootconfig swap: yes";

/// What ostree logs when finalization starts at shutdown.
pub(crate) const FINALIZING: &str = "Finalizing staged deployment";

/// Guest shell: forward the journal to the console (once; journald restarted), so that the
/// host sees ostree's finalize messages at shutdown ([`FINALIZING`], [`BOOTLOADER_SWAPPED`]).
pub(crate) const FORWARD_JOURNAL_SH: &str = r#"if [ ! -f /etc/systemd/journald.conf.d/50-vmtest.conf ]; then
  mkdir -p /etc/systemd/journald.conf.d
  printf '[Journal]\nForwardToConsole=yes\nMaxLevelConsole=info\n' > /etc/systemd/journald.conf.d/50-vmtest.conf
  systemctl restart systemd-journald
fi
"#;

/// Guest shell: stop forwarding the journal to the console (from the next boot on).
pub(crate) const UNFORWARD_JOURNAL_SH: &str = "rm -f /etc/systemd/journald.conf.d/50-vmtest.conf\n";

/// Cut the power (QMP `system_reset`) `delay` seconds after ostree began finalizing the staged
/// deployment at shutdown (the guest must forward its journal: [`FORWARD_JOURNAL_SH`]).
/// Whether the reset came after the bootloader swap.
pub(crate) async fn reset_during_finalize(vm: &mut Vm, delay: f64) -> Result<bool> {
    let swaps_before = vm.console().matches(BOOTLOADER_SWAPPED).count();
    vm.wait_for_console(FINALIZING, BOOT_TIMEOUT).await?;
    tokio::time::sleep(Duration::from_secs_f64(delay)).await;
    vm.reset().await?;
    Ok(vm.console().matches(BOOTLOADER_SWAPPED).count() > swaps_before)
}

/// The layered image the scenarios deploy, built from the example Containerfiles: rsyslog with
/// `remote.conf` (package + file), then the kargs.d drop-in on top.
#[derive(Debug, Clone)]
pub struct LayeredImage {
    pub name: String,
    pub digest: String,
    /// `oci:` reference of the stored image.
    pub reference: String,
}

#[derive(Deserialize)]
struct BuildOut {
    name: String,
    reference: String,
    digest: String,
    reused_layers: usize,
}

/// One build of the layered images at a time in a run whose lanes run at once: both write
/// the same names in the store.
static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Build (podman's layer cache makes a repeat quick) the layered image.
pub fn build_layered(a: &Artifacts) -> Result<LayeredImage> {
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let cf = &a.containerfiles;
    let rsyslog = cf.join("layered/rsyslog");
    let kargs = cf.join("layered/kargs");
    let build = |args: &[&str]| -> Result<BuildOut> {
        let base = ["build", "-q", "--format", "json"];
        let out = imgmode_json(a, &[&base[..], args].concat())?;
        serde_json::from_str(&out).context("parsing imgmode build --format json")
    };
    let r = build(&["-t", "vmtest-rsyslog", &rsyslog.display().to_string()])?;
    ensure!(
        r.reused_layers >= 1,
        "vmtest-rsyslog shares no layer with imgmode-base"
    );
    let r = build(&[
        "-t",
        "vmtest-layered",
        "--build-arg",
        "BASE=vmtest-rsyslog",
        &kargs.display().to_string(),
    ])?;
    Ok(LayeredImage {
        name: r.name,
        digest: r.digest,
        reference: r.reference,
    })
}

/// The base disk booted through SeaBIOS with the payload disk attached and `script` run by
/// the job unit at every boot.
pub(crate) fn job_vm(a: &Artifacts, payload: &Path, script: String) -> VmConfig {
    let cfg = VmConfig {
        extra_args: vec![
            "-drive".into(),
            format!(
                "file={},format=raw,if=none,id=payload,readonly=on",
                payload.display()
            ),
            "-device".into(),
            "virtio-blk-pci,drive=payload,serial=payload".into(),
        ],
        ..VmConfig::new(&a.base_disk, Boot::Bios)
    };
    job(cfg, script)
}
