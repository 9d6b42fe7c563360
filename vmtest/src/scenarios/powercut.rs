//! `powercut`: hard resets (QMP `system_reset`) at points spread over upgrades between the
//! base and the layered image, both from `oci-archive`s on an attached disk; after each reset
//! the node boots the old or the new deployment and `ostree fsck` is clean.

use crate::harness::artifacts::{imgmode_json, Artifacts};
use crate::harness::context::RunContext;
use crate::harness::guest::{phase, Phase, BOOT_TIMEOUT};
use crate::harness::layered_image::{
    build_layered, job_vm, reset_during_finalize, LayeredImage, BOOTLOADER_SWAPPED,
    FORWARD_JOURNAL_SH, PHASE_TIMEOUT,
};
use crate::harness::media::payload_disk;
use crate::harness::qemu::Vm;
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a power cut is injected, relative to an upgrade.
#[derive(Debug, Clone, Copy)]
pub enum Cut {
    /// `delay` seconds after `imgmode switch` started (fetching, then staging).
    DuringSwitch(f64),
    /// `delay` seconds after `imgmode switch` said it began this step (`fetching` the layers,
    /// `staging` the deployment).
    AtStep(&'static str, f64),
    /// `delay` seconds after ostree began finalizing the staged deployment at shutdown.
    DuringFinalize(f64),
    /// As soon as ostree logs that the bootloader configuration was swapped.
    AfterBootloader,
}

/// Where a reset landed, as `powercut` tells from the guest's markers and ostree's log.
const FETCHING: &str = "fetching";
const STAGING: &str = "staging";
const AFTER_STAGING: &str = "after staging";
const FINALIZE_BEFORE_SWAP: &str = "finalize";
const FINALIZE_AFTER_SWAP: &str = "finalize (after the bootloader swap)";
const AFTER_SWAP: &str = "right after the bootloader update";

/// `powercut`'s cut: as finalize begins, the new deployment being written at shutdown while
/// the boot configuration still names the old one, which must boot with the repository sound.
/// A reset before finalize (fetching, staging) leaves only unreferenced objects or an
/// unreferenced, half-checked-out deployment beside the same boot configuration, and one
/// after the bootloader swap boots the new deployment: `powercut-spread` aims at all three.
pub const CUTS: &[Cut] = &[
    // the first boot runs the base image: the switch to the layered one is cut at shutdown
    Cut::DuringFinalize(0.0),
];

/// `powercut-spread`'s cuts: one aimed as fetching begins (objects being written: `ostree
/// fsck`) and one as staging begins (a deployment being checked out, before anything points
/// at it), then the same upgrade cut at times spread over it rather than aimed at its steps
/// (0.3 to 9 s into the switch, 0.5 to 1.6 s into finalize), and two right after the
/// bootloader swap (the new deployment must boot).
pub const SPREAD_CUTS: &[Cut] = &[
    // the first boot runs the base image: the switch to the layered one fetches layers
    Cut::AtStep(FETCHING, 0.2),
    Cut::AtStep(STAGING, 0.2),
    Cut::DuringSwitch(0.3),
    Cut::DuringFinalize(1.0),
    Cut::DuringSwitch(2.0),
    Cut::DuringFinalize(0.5),
    Cut::AfterBootloader,
    Cut::DuringSwitch(5.0),
    Cut::DuringFinalize(1.6),
    Cut::AfterBootloader,
    Cut::DuringSwitch(9.0),
];

/// The powercut guest job: every boot reports status, and every boot after a reset `ostree
/// fsck`; then it switches to the other image (layered <-> base, both from the attached disk)
/// and reboots.
fn powercut_script() -> String {
    format!("{POWERCUT_HEAD}{FORWARD_JOURNAL_SH}{POWERCUT_BODY}")
}

const POWERCUT_HEAD: &str = r#"state=/var/lib/imgmode-vmtest
mkdir -p "$state"
n=$(( $(cat "$state/boot" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$state/boot"; sync
"#;

const POWERCUT_BODY: &str = r#"mkdir -p /mnt/payload
mountpoint -q /mnt/payload || mount -o ro /dev/disk/by-id/virtio-payload /mnt/payload
echo "IMGMODE-PHASE-$n-BEGIN"
echo "STATUS-BEGIN"; imgmode status --format json; echo "STATUS-END"
# after each reset (the first boot's disk is the one imgmode disk wrote; a full fsck is about
# 85 s under TCG)
if [ "$n" -gt 1 ]; then run ostree fsck --quiet; fi
echo "IMGMODE-PHASE-$n-END"
if [ -f /etc/rsyslog.d/remote.conf ]; then target=base.tar; else target=layered.tar; fi
echo "SWITCH-START-$n"
# the switch's steps (stderr) as they come: a reset is aimed at the start of one
{ rc=0; imgmode switch "oci-archive:/mnt/payload/$target" 2>&1 >/dev/null || rc=$?; echo "SWITCH-RC-$n $rc"; } |
while IFS= read -r l; do
  case "$l" in
    SWITCH-RC-*) echo "$l" ;;
    *"] fetching "*) echo "SWITCH-STEP-$n fetching: $l" ;;
    *"] staging "*) echo "SWITCH-STEP-$n staging: $l" ;;
    *) echo "SWITCH-LOG-$n $l" ;;
  esac
done
sync
systemctl --no-block reboot
"#;

/// `powercut` (`cuts` = [`CUTS`]) and `powercut-spread` ([`SPREAD_CUTS`]): hard resets (QMP
/// `system_reset`) at points over upgrades; after each the node boots the old or the new
/// deployment and `ostree fsck` is clean, and the resets landed in every kind of point the cuts
/// aim at.
pub async fn powercut(ctx: &RunContext, dir: &Path, cuts: &[Cut]) -> Result<String> {
    let a = &ctx.artifacts;
    let (a2, d2) = (a.clone(), dir.to_path_buf());
    let (layered, payload) = tokio::task::spawn_blocking(move || stage_payload(&a2, &d2)).await??;
    let cfg = job_vm(a, &payload, powercut_script());
    let known = [a.base_digest.clone(), layered.digest.clone()];
    let mut vm = Vm::start(&cfg, dir).await?;
    let mut log = Vec::new();
    let mut landings: Vec<&str> = Vec::new();
    let result = async {
        let mut boot = 1u32;
        let mut p = phase(&mut vm, boot, PHASE_TIMEOUT).await?;
        for (i, cut) in cuts.iter().enumerate() {
            // the boot before the cut is sound
            let before = check_boot(&p, boot, &known)?;
            let landed = inject(&mut vm, *cut, boot, dir).await?;
            boot += 1;
            p = phase(&mut vm, boot, BOOT_TIMEOUT + PHASE_TIMEOUT)
                .await
                .with_context(|| format!("no sound boot after reset {} ({landed})", i + 1))?;
            let after = check_boot(&p, boot, &known)?;
            if landed == AFTER_SWAP || landed == FINALIZE_AFTER_SWAP {
                ensure!(
                    after != before,
                    "reset {} ({landed}) booted the old deployment {before}",
                    i + 1
                );
            }
            landings.push(landed);
            if landed == FETCHING || landed == STAGING {
                ensure!(
                    after == before,
                    "reset {} before the switch finished booted {after}, not the old {before}",
                    i + 1
                );
            }
            log.push(format!(
                "reset {} ({landed}): {} -> {}",
                i + 1,
                short(&before),
                short(&after)
            ));
        }
        // the cuts must have landed in every phase they aim at, not only where timing put them
        for (phase, any_of) in aimed_at(cuts) {
            ensure!(
                landings.iter().any(|l| any_of.contains(l)),
                "no reset landed {phase}; where they landed: {landings:?}"
            );
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    std::fs::write(dir.join("powercut.txt"), log.join("\n") + "\n")?;
    let _ = vm.quit().await;
    result?;
    let s = |n: usize| if n == 1 { "" } else { "s" };
    Ok(format!(
        "{} reset{} injected, {} boot{} after a reset good, ostree fsck clean after each: {}",
        cuts.len(),
        s(cuts.len()),
        log.len(),
        s(log.len()),
        log.join("; ")
    ))
}

/// The phases of an update `cuts` aim at, each with the landings that count as reaching it:
/// a cut into the switch must land while fetching (and one aimed at staging while staging), a
/// cut into finalize before the bootloader swap, a cut after the swap after it.
fn aimed_at(cuts: &[Cut]) -> Vec<(&'static str, &'static [&'static str])> {
    let mut phases: Vec<(&'static str, &'static [&'static str])> = Vec::new();
    let mut add = |p: (&'static str, &'static [&'static str])| {
        if !phases.iter().any(|q| q.0 == p.0) {
            phases.push(p);
        }
    };
    for c in cuts {
        match c {
            Cut::DuringSwitch(_) | Cut::AtStep(FETCHING, _) => add(("while fetching", &[FETCHING])),
            Cut::AtStep(_, _) => add(("while staging", &[STAGING])),
            Cut::DuringFinalize(_) => add((
                "finalize before the bootloader swap",
                &[FINALIZE_BEFORE_SWAP],
            )),
            Cut::AfterBootloader => add((
                "after the bootloader swap",
                &[AFTER_SWAP, FINALIZE_AFTER_SWAP],
            )),
        }
    }
    phases
}

/// The layered image, and a payload disk under `dir` holding it and the base image as
/// `oci-archive`s (`layered.tar`, `base.tar`).
fn stage_payload(a: &Artifacts, dir: &Path) -> Result<(LayeredImage, PathBuf)> {
    let layered = build_layered(a)?;
    let l = dir.join("layered.tar");
    let b = dir.join("base.tar");
    for (name, f) in [("vmtest-layered", &l), ("imgmode-base", &b)] {
        let _ = std::fs::remove_file(f);
        imgmode_json(a, &["push", name, &format!("oci-archive:{}", f.display())])?;
    }
    let payload = payload_disk(dir, &[("layered.tar", &l), ("base.tar", &b)])?;
    std::fs::remove_file(&l)?;
    std::fs::remove_file(&b)?;
    Ok((layered, payload))
}

/// Inject `cut` into boot `boot`: wait for its moment, reset, and tell where the reset landed.
async fn inject(vm: &mut Vm, cut: Cut, boot: u32, dir: &Path) -> Result<&'static str> {
    let results = || std::fs::read_to_string(vm_results(dir)).unwrap_or_default();
    let landed = match cut {
        Cut::DuringSwitch(d) | Cut::AtStep(_, d) => {
            let at = match cut {
                Cut::AtStep(step, _) => format!("SWITCH-STEP-{boot} {step}"),
                _ => format!("SWITCH-START-{boot}"),
            };
            vm.wait_for_result(&at, PHASE_TIMEOUT).await?;
            tokio::time::sleep(Duration::from_secs_f64(d)).await;
            vm.reset().await?;
            // where it landed, by what the switch had said before the reset
            let r = results();
            if r.contains(&format!("SWITCH-RC-{boot} ")) {
                AFTER_STAGING
            } else if r.contains(&format!("SWITCH-STEP-{boot} {STAGING}")) {
                STAGING
            } else {
                FETCHING
            }
        }
        Cut::DuringFinalize(d) => {
            vm.wait_for_result(&format!("SWITCH-RC-{boot} 0"), PHASE_TIMEOUT)
                .await?;
            if reset_during_finalize(vm, d).await? {
                FINALIZE_AFTER_SWAP
            } else {
                FINALIZE_BEFORE_SWAP
            }
        }
        Cut::AfterBootloader => {
            vm.wait_for_result(&format!("SWITCH-RC-{boot} 0"), PHASE_TIMEOUT)
                .await?;
            vm.wait_for_console(BOOTLOADER_SWAPPED, BOOT_TIMEOUT)
                .await?;
            vm.reset().await?;
            AFTER_SWAP
        }
    };
    Ok(landed)
}

fn vm_results(dir: &Path) -> PathBuf {
    dir.join("results.log")
}

fn short(digest: &str) -> String {
    digest.chars().take(19).collect()
}

/// A boot after a reset: booted one of the known images and `ostree fsck` passed.
/// Boot `n` ran the old or the new image and, after a reset (every boot but the first),
/// `ostree fsck` found the repository sound.
fn check_boot(p: &Phase, n: u32, known: &[String]) -> Result<String> {
    let b = p.booted()?;
    let d = b.container_image_reference_digest.unwrap_or_default();
    ensure!(
        known.contains(&d),
        "boot {n}: booted {d:?}, neither the old nor the new image"
    );
    if n > 1 {
        p.ran_ok("ostree fsck")
            .with_context(|| format!("boot {n}: ostree fsck"))?;
    }
    Ok(d)
}
