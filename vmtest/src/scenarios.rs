//! VM scenarios. Each proves one claim end to end or fails with its console log saved; none
//! warns and continues.

use crate::artifacts::Artifacts;
use crate::qemu::{Boot, Vm, VmConfig};
use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// Per-stage timeouts (TCG boots take 25-40 s here; leave headroom for a loaded machine).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(120);

/// A scenario: a name, what it proves, and how.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&Artifacts, &Path) -> futures::future::BoxFuture<'static, Result<String>>,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .finish()
    }
}

/// Every scenario, in the order `cargo xtask vmtest` runs them.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "boot",
            about:
                "the base qcow2 boots through SeaBIOS and GRUB; status reports the image's commit",
            run: |a, d| Box::pin(boot(a.clone(), d.to_path_buf(), Mode::Bios)),
        },
        Scenario {
            name: "boot-uefi",
            about: "the same disk boots through OVMF and GRUB EFI",
            run: |a, d| Box::pin(boot(a.clone(), d.to_path_buf(), Mode::Uefi)),
        },
        Scenario {
            name: "boot-raw",
            about: "the raw disk of the same image boots through SeaBIOS and GRUB",
            run: |a, d| Box::pin(boot(a.clone(), d.to_path_buf(), Mode::BiosRaw)),
        },
        Scenario {
            name: "boot-direct",
            about: "the deployment boots with -kernel/-initrd/-append taken from the disk's boot entry",
            run: |a, d| Box::pin(boot(a.clone(), d.to_path_buf(), Mode::Direct)),
        },
        Scenario {
            name: "degraded-boot",
            about: "the harness catches a degraded system: the base disk booted with a unit that fails at boot is refused, naming the unit and its journal",
            run: |a, d| Box::pin(degraded_boot(a.clone(), d.to_path_buf())),
        },
        Scenario {
            name: "layered-rollback",
            about: "a layered image built with imgmode build: switch from an oci-archive on a disk, rollback, MachineConfig by digest from a registry, revert",
            run: |a, d| Box::pin(crate::layered::layered_rollback(a.clone(), d.to_path_buf())),
        },
        Scenario {
            name: "powercut",
            about: "12 hard resets spread over upgrades (at least one while fetching, while staging, in finalize before the bootloader swap, and after it): the old or the new deployment always boots and ostree fsck is clean",
            run: |a, d| Box::pin(crate::layered::powercut(a.clone(), d.to_path_buf())),
        },
        Scenario {
            name: "layer-build",
            about: "imgmode layer build: MachineOSConfig + pool MachineConfigs -> pushed image and a MachineOSBuild (reuse, rebuild annotation, FAILED after retries, bad configs)",
            run: |a, d| {
                let (a, d) = (a.clone(), d.to_path_buf());
                Box::pin(async move {
                    tokio::task::spawn_blocking(move || crate::layered::layer_build(&a, &d)).await?
                })
            },
        },
        Scenario {
            name: "seed",
            about: "just build-seed: the test cluster boots healthy, imgmode seed create in the guest, the seed's labels, file set, commit, etc.deletions and expired certificates checked on the host; seed check gates",
            run: |a, d| Box::pin(crate::seed::seed_scenario(a.clone(), d.to_path_buf())),
        },
        Scenario {
            name: "ibi",
            about: "imgmode ibi create-image: the installation ISO boots (OVMF and SeaBIOS) with a blank disk, runs from RAM, refuses a seed version mismatch and a missing disk with the disk untouched, installs this run's seed (from a TLS registry with the trust bundle and pull secret, or embedded in the ISO with the registry gone) and reboots into it; with the cluster-config ISO post-pivot renames the cluster (auth/kubeconfig works, the seed's does not, extra manifest in etcd); the two hosts share no private key",
            run: |a, d| Box::pin(crate::ibi::ibi(a.clone(), d.to_path_buf())),
        },
        Scenario {
            name: "registry-less",
            about: "imgmode ibi create-image --payload: with no network interface at all, the live system serves the payload (this run's seed, imgmode mirror) on localhost:22625 with TLS and the pull secret's credentials, installs the seed through it, and the installed system serves its copy after the reboot; pulls without credentials are refused, a flipped blob is found by payload verify and refused by a pull",
            run: |a, d| Box::pin(crate::registryless::registry_less(a.clone(), d.to_path_buf())),
        },
        Scenario {
            name: "disk-checks",
            about: "qcow2 passes qemu-img check; raw (xfs root) passes sgdisk -v, e2fsck, fsck.vfat, xfs_repair; too-small --size is refused",
            run: |a, d| {
                let (a, d) = (a.clone(), d.to_path_buf());
                Box::pin(async move {
                    tokio::task::spawn_blocking(move || disk_checks(&a, &d)).await?
                })
            },
        },
    ]
}

fn check(cmd: &mut std::process::Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    Ok(text)
}

#[derive(Deserialize)]
struct SfdiskPart {
    start: u64,
    size: u64,
    name: Option<String>,
}
#[derive(Deserialize)]
struct SfdiskTable {
    partitions: Vec<SfdiskPart>,
}
#[derive(Deserialize)]
struct Sfdisk {
    partitiontable: SfdiskTable,
}

/// Check every filesystem of a raw disk read-only through loop devices.
fn fsck_partitions(raw: &Path) -> Result<Vec<String>> {
    use std::process::Command;
    let json = check(Command::new("sfdisk").arg("--json").arg(raw))?;
    let table: Sfdisk = serde_json::from_str(&json).context("parsing sfdisk --json")?;
    let mut checked = Vec::new();
    for p in table.partitiontable.partitions {
        let name = p.name.unwrap_or_default();
        let fsck: &[&str] = match name.as_str() {
            "EFI-SYSTEM" => &["fsck.vfat", "-n"],
            "boot" => &["e2fsck", "-n", "-f"],
            "root" => {
                // ext4 or xfs: ask blkid on the loop device below
                &[]
            }
            _ => continue,
        };
        let dev = check(
            Command::new("losetup")
                .args(["--find", "--show", "--read-only"])
                .arg(format!("--offset={}", p.start * 512))
                .arg(format!("--sizelimit={}", p.size * 512))
                .arg(raw),
        )?
        .trim()
        .to_string();
        let result = (|| -> Result<()> {
            let args: Vec<&str> = if fsck.is_empty() {
                let ty = check(Command::new("blkid").args(["-o", "value", "-s", "TYPE", &dev]))?;
                match ty.trim() {
                    "xfs" => vec!["xfs_repair", "-n"],
                    "ext4" => vec!["e2fsck", "-n", "-f"],
                    other => bail!("root partition has filesystem {other:?}"),
                }
            } else {
                fsck.to_vec()
            };
            check(Command::new(args[0]).args(&args[1..]).arg(&dev))?;
            checked.push(format!("{name}:{}", args[0]));
            Ok(())
        })();
        let _ = Command::new("losetup").args(["-d", &dev]).status();
        result?;
    }
    Ok(checked)
}

fn disk_checks(a: &Artifacts, dir: &Path) -> Result<String> {
    use std::process::Command;
    check(Command::new("qemu-img").arg("check").arg(&a.base_disk))?;

    // the shared qcow2 (ext4 root, both firmwares) as raw
    let shared_raw = dir.join("shared.raw");
    check(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&a.base_disk)
            .arg(&shared_raw),
    )?;
    let v = check(Command::new("sgdisk").arg("-v").arg(&shared_raw))?;
    ensure!(v.contains("No problems found"), "sgdisk -v: {v}");
    let mut checked = fsck_partitions(&shared_raw)?;
    std::fs::remove_file(&shared_raw)?;

    // raw output with an xfs root
    let xfs = dir.join("xfs.raw");
    check(
        Command::new(&a.imgmode)
            .args([
                "disk",
                "imgmode-base",
                "--quiet",
                "--format",
                "raw",
                "--root-fs",
                "xfs",
                "--size",
                "4G",
                "-o",
            ])
            .arg(&xfs),
    )?;
    let v = check(Command::new("sgdisk").arg("-v").arg(&xfs))?;
    ensure!(v.contains("No problems found"), "sgdisk -v: {v}");
    checked.extend(fsck_partitions(&xfs)?);
    std::fs::remove_file(&xfs)?;

    // too small: refused with the size needed, nothing written
    let small = dir.join("small.raw");
    let out = Command::new(&a.imgmode)
        .args([
            "disk",
            "imgmode-base",
            "--quiet",
            "--format",
            "raw",
            "--size",
            "1G",
            "-o",
        ])
        .arg(&small)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1),
        "a 1G disk was not refused: {err}"
    );
    ensure!(
        err.contains("is too small for this image") && err.contains("pass --size"),
        "unexpected message: {err}"
    );
    ensure!(
        !small.exists(),
        "a refused disk left {} behind",
        small.display()
    );
    Ok(format!("checked {}", checked.join(", ")))
}

/// The guest job: report `imgmode status --format json` on the results port.
const STATUS_UNIT: &str = r#"[Unit]
Description=imgmode vmtest: report deployment status
After=multi-user.target

[Service]
Type=oneshot
StandardOutput=file:/dev/virtio-ports/org.imgmode.results
StandardError=journal
ExecStart=/bin/sh -c 'echo "IMGMODE-CMDLINE $$(cat /proc/cmdline)"; echo "IMGMODE-AUTHKEY $$(cat /root/.ssh/authorized_keys)"; echo "IMGMODE-OSTREE-CONTAINER $$(ostree container image list --repo=/ostree/repo | tr "\n" " ")"; echo IMGMODE-STATUS-BEGIN; imgmode status --format json; echo IMGMODE-DONE rc=$$?'
"#;

/// What a guest script printed between `DIAG-BEGIN` and `DIAG-END` ("" when nothing).
pub(crate) fn diag_section(report: &str) -> &str {
    report
        .split_once("DIAG-BEGIN")
        .and_then(|(_, r)| r.split_once("DIAG-END"))
        .map_or("", |(d, _)| d)
}

/// The value of a `PREFIX rest` line in the guest's report.
pub(crate) fn report_line<'a>(report: &'a str, prefix: &str) -> Option<&'a str> {
    report
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
}

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
enum Mode {
    Bios,
    BiosRaw,
    Uefi,
    Direct,
}

/// A unit that reports readiness on the results port once startup is over (a job: it runs
/// after the boot's health report).
const READY_UNIT: &str = "\
[Unit]
Description=imgmode vmtest: ready marker
After=multi-user.target

[Service]
Type=oneshot
StandardOutput=file:/dev/virtio-ports/org.imgmode.results
ExecStart=/bin/echo IMGMODE-READY
";

/// Seconds from QEMU start until the guest's startup is over (`running`) and it says so; the VM
/// is stopped afterwards. Used by the benchmarks.
pub async fn time_to_ready(disk: &Path, boot: Boot, dir: &Path) -> Result<f64> {
    let cfg = VmConfig::new(disk, boot).job_unit("imgmode-ready.service", READY_UNIT);
    let mut vm = Vm::start(&cfg, dir).await?;
    let r = vm.wait_for_result("IMGMODE-READY", BOOT_TIMEOUT).await;
    let secs = vm.elapsed().as_secs_f64();
    vm.quit().await?;
    r?;
    Ok(secs)
}

async fn boot(a: Artifacts, dir: std::path::PathBuf, mode: Mode) -> Result<String> {
    let firmware = match mode {
        Mode::Bios | Mode::BiosRaw => Boot::Bios,
        Mode::Uefi => Boot::Uefi,
        Mode::Direct => {
            let (disk, d) = (a.base_disk.clone(), dir.join("direct"));
            tokio::task::spawn_blocking(move || crate::direct::from_disk(&disk, &d, "")).await??
        }
    };
    let disk = if mode == Mode::BiosRaw {
        &a.base_raw
    } else {
        &a.base_disk
    };
    let cfg = VmConfig::new(disk, firmware).job_unit("imgmode-vmtest.service", STATUS_UNIT);
    let mut vm = Vm::start(&cfg, &dir).await?;
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
    let cmdline = report_line(&report, "IMGMODE-CMDLINE").unwrap_or_default();
    ensure!(
        cmdline
            .split_whitespace()
            .any(|a| a == crate::artifacts::TEST_KARG),
        "--karg {} is not on the kernel command line: {cmdline}",
        crate::artifacts::TEST_KARG
    );
    // `ostree container` runs ostree-ext through /usr/libexec/libostree/ext/ostree-container
    // (imgmode) and must see the image the disk was deployed from.
    let listed = report_line(&report, "IMGMODE-OSTREE-CONTAINER").unwrap_or_default();
    ensure!(
        listed.contains("imgmode-base/latest"),
        "`ostree container image list` in the guest does not list the deployed image: {listed:?}"
    );
    ensure!(
        report_line(&report, "IMGMODE-AUTHKEY") == Some(crate::artifacts::TEST_SSH_KEY),
        "root's authorized_keys does not hold the --root-ssh-key key: {:?}",
        report_line(&report, "IMGMODE-AUTHKEY")
    );
    ensure!(
        vm.query_status().await? == "running",
        "VM not running before powerdown"
    );
    vm.powerdown().await?;
    let events = vm.wait_shutdown(SHUTDOWN_TIMEOUT).await?;
    Ok(format!(
        "booted {got} ({}) in {:.0}s; clean ACPI shutdown; {} QMP events",
        a.base_digest,
        booted_after.as_secs_f64(),
        events.len()
    ))
}

/// The unit `degraded-boot` adds: it fails at every boot.
const BROKEN_UNIT: &str = "imgmode-vmtest-broken.service";

/// `degraded-boot`: the base disk with one unit that fails at boot. The boot's health report
/// must say `degraded`, and waiting for the job's result must fail naming the unit and
/// carrying its journal, so that no scenario can pass on a degraded system.
async fn degraded_boot(a: Artifacts, dir: std::path::PathBuf) -> Result<String> {
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
    let mut vm = Vm::start(&cfg, &dir).await?;
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

    #[test]
    fn scenario_names_are_unique() {
        let mut names: Vec<_> = all().iter().map(|s| s.name).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
