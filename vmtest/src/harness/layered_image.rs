//! The layered image the layered-image scenarios deploy (`imgmode build` of the example
//! Containerfiles on the host), and the VM they boot it in: the base disk with a payload disk
//! attached and a job script run at every boot.

use crate::harness::artifacts::{imgmode_json, Artifacts};
use crate::harness::guest::job;
use crate::harness::qemu::{Boot, VmConfig};
use anyhow::{ensure, Context, Result};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// A phase that fetches and stages an image may import layers under TCG: give it time.
pub(crate) const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

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
