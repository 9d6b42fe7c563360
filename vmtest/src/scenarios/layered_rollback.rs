//! `layered-rollback`: a layered image built with `imgmode build` on the host, delivered to a
//! node from an `oci-archive:` on an attached disk and from a registry, switched to, rolled
//! back, applied and reverted through a MachineConfig; the power is cut as the revert's
//! finalize begins (the old deployment boots, `ostree fsck` is clean), and the revert is
//! done again.
//!
//! `update-timer` (here too: the same images, guest helpers and checks): a node following a
//! registry tag; the base image's update timer stages, with no command typed, a digest pushed
//! to the tag after the node booted, and the next boot runs it.
//!
//! The guest runs one job script per boot; the phase it is in lives in `/var` so that it
//! survives reboots, and every phase reports facts and `imgmode status --format json` between
//! `IMGMODE-PHASE-N-BEGIN` and `-END` markers.

use crate::harness::artifacts::{imgmode_json, Artifacts};
use crate::harness::context::RunContext;
use crate::harness::guest::{
    diag_section, job, phase, GuestDeployment, Phase, BOOT_TIMEOUT, SHUTDOWN_TIMEOUT,
};
use crate::harness::layered_image::{
    build_layered, job_vm, reset_during_finalize, LayeredImage, FORWARD_JOURNAL_SH, PHASE_TIMEOUT,
    UNFORWARD_JOURNAL_SH,
};
use crate::harness::media::payload_disk;
use crate::harness::qemu::{Boot, Vm, VmConfig};
use crate::harness::registry::Registry;
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};

/// Shared helpers of the guest scripts.
const SCRIPT_HEAD: &str = r#"state=/var/lib/imgmode-vmtest
mkdir -p "$state"
phase=$(cat "$state/phase" 2>/dev/null || echo 1)
echo "IMGMODE-PHASE-$phase-BEGIN"
facts() {
  echo "FACT remote-conf=$(yesno test -f /etc/rsyslog.d/remote.conf)"
  echo "FACT rsyslog=$(yesno sh -c 'dpkg-query -W -f="\${Status}" rsyslog | grep -q "install ok installed"')"
  echo "FACT karg=$(yesno grep -qw imgmode.layered=1 /proc/cmdline)"
  echo "FACT etc-marker=$(yesno test -f /etc/imgmode-vmtest-marker)"
  echo "STATUS-BEGIN"; imgmode status --format json; echo "STATUS-END"
}
next() { echo $((phase + 1)) > "$state/phase"; sync; }
end() { echo "IMGMODE-PHASE-$phase-END"; }
if [ -e /dev/disk/by-id/virtio-payload ]; then
  mkdir -p /mnt/payload
  mountpoint -q /mnt/payload || mount -o ro /dev/disk/by-id/virtio-payload /mnt/payload
fi
"#;

fn expect_facts(p: &Phase, n: u32, layered: bool) -> Result<()> {
    let want = if layered { "yes" } else { "no" };
    for k in ["remote-conf", "rsyslog", "karg"] {
        ensure!(
            p.fact(k) == want,
            "phase {n}: expected {k}={want} on the {} image, got {}",
            if layered { "layered" } else { "base" },
            p.fact(k)
        );
    }
    Ok(())
}

fn expect_booted(p: &Phase, n: u32, digest: &str, what: &str) -> Result<GuestDeployment> {
    let b = p.booted()?;
    ensure!(
        b.container_image_reference_digest.as_deref() == Some(digest),
        "phase {n}: booted {:?}, expected the {what} image {digest}",
        b.container_image_reference_digest
    );
    Ok(b)
}

/// `layered-rollback`.
pub async fn layered_rollback(ctx: &RunContext, dir: &Path) -> Result<String> {
    let a = &ctx.artifacts;
    let (a2, d2) = (a.clone(), dir.to_path_buf());
    let (layered, registry, payload, pushed) =
        tokio::task::spawn_blocking(move || publish_layered(&a2, &d2)).await??;
    ensure!(
        pushed == layered.digest,
        "the registry holds {pushed}, the store {}",
        layered.digest
    );
    let reg = registry.guest_addr();
    let mc = format!(
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n  name: os-layer-vmtest\n  labels:\n    machineconfiguration.openshift.io/role: worker\nspec:\n  osImageURL: {reg}/imgmode/layered@{}\n",
        layered.digest
    );
    let cfg = VmConfig {
        network: true,
        ..job_vm(a, &payload, rollback_script(&reg))
    }
    .credential("vmtest.mc", mc);
    let mut vm = Vm::start(&cfg, dir).await?;
    let result = check_phases(&mut vm, a, &layered, &reg).await;
    let secs = finish(vm, registry, result).await?;
    Ok(format!(
        "base -> layered {} (oci-archive) -> rollback -> MachineConfig (registry, by digest) -> revert, the power cut as its finalize began: the MachineConfig's deployment booted again, ostree fsck clean -> revert (a third one: nothing to revert); 6 boots in {secs:.0}s",
        layered.digest
    ))
}

/// Build the layered image, push it to a new registry under `dir` and to an `oci-archive` on
/// a payload disk: (the image, the registry, the payload disk, the digest the registry holds).
fn publish_layered(a: &Artifacts, dir: &Path) -> Result<(LayeredImage, Registry, PathBuf, String)> {
    let layered = build_layered(a)?;
    ensure!(
        layered.digest != a.base_digest,
        "the layered image has the base image's digest"
    );
    let registry = Registry::start(&dir.join("registry"))?;
    let dest = format!("docker://{}/imgmode/layered:1", registry.host_addr());
    let digestfile = dir.join("pushed.digest");
    imgmode_json(
        a,
        &[
            "push",
            "--tls-verify=false",
            "--digestfile",
            &digestfile.display().to_string(),
            "vmtest-layered",
            &dest,
        ],
    )?;
    let pushed = std::fs::read_to_string(&digestfile)?.trim().to_string();
    let archive = dir.join("layered.tar");
    let _ = std::fs::remove_file(&archive);
    imgmode_json(
        a,
        &[
            "push",
            "vmtest-layered",
            &format!("oci-archive:{}", archive.display()),
        ],
    )?;
    let payload = payload_disk(dir, &[("layered.tar", &archive)])?;
    std::fs::remove_file(&archive)?;
    Ok((layered, registry, payload, pushed))
}

/// The guest's registry entry for `reg` (plain HTTP), written in each scenario's first phase.
fn insecure_registry_sh(reg: &str) -> String {
    format!(
        r#"mkdir -p /etc/containers/registries.conf.d
printf '[[registry]]\nlocation = "{reg}"\ninsecure = true\n' > /etc/containers/registries.conf.d/50-vmtest.conf
"#
    )
}

/// The guest's job: one phase per boot (switch from the disk, upgrade --check, switch from the
/// registry and rollback, MachineConfig by digest, revert cut by the host at finalize,
/// `ostree fsck` and revert again); `reg` is the registry as the guest names it.
fn rollback_script(reg: &str) -> String {
    let registry = insecure_registry_sh(reg);
    format!(
        r#"{SCRIPT_HEAD}
case "$phase" in
1)
  {registry}
  echo marker > /etc/imgmode-vmtest-marker
  facts
  run imgmode switch oci-archive:/mnt/payload/layered.tar
  facts; next; end; systemctl --no-block reboot ;;
2)
  facts
  run imgmode upgrade --check --format json
  run imgmode switch ostree-unverified-registry:{reg}/imgmode/layered:1
  run imgmode rollback
  facts
  next; end; systemctl --no-block reboot ;;
3)
  facts
  run imgmode apply-machineconfig "$CREDENTIALS_DIRECTORY/vmtest.mc"
  next; end; systemctl --no-block reboot ;;
4)
  facts
  # the host cuts the power as this revert's finalize begins: ostree's log on the console
  {FORWARD_JOURNAL_SH}  run imgmode revert
  next; end; systemctl --no-block reboot ;;
5)
  facts
  run ostree fsck --quiet
  {UNFORWARD_JOURNAL_SH}  run imgmode revert
  next; end; systemctl --no-block reboot ;;
6)
  facts
  run imgmode revert
  end; systemctl --no-block poweroff ;;
esac
"#
    )
}

/// `update-timer`'s job: follow the registry's `auto:latest` (the base image, by tag); the
/// update timer, due a second after boot, finds it unchanged, then stages the digest the host
/// pushed to it; the next boot runs it.
fn timer_script(reg: &str) -> String {
    let registry = insecure_registry_sh(reg);
    format!(
        r#"{SCRIPT_HEAD}
case "$phase" in
1)
  {registry}
  facts
  run imgmode switch ostree-unverified-registry:{reg}/imgmode/auto:latest
  next; end; systemctl --no-block reboot ;;
2)
  facts
  # the update timer, due a second after boot instead of an hour (its unit is the image's);
  # an empty On*Sec= resets every timer of the unit, so it comes once, first
  d=/run/systemd/system/imgmode-fetch-apply-updates.timer.d
  mkdir -p "$d"
  printf '[Timer]\nOnBootSec=\nOnBootSec=1s\nOnUnitInactiveSec=3s\nRandomizedDelaySec=0\n' > "$d/vmtest.conf"
  systemctl daemon-reload
  systemctl restart imgmode-fetch-apply-updates.timer
  echo "FACT timer-enabled=$(systemctl is-enabled imgmode-fetch-apply-updates.timer)"
  # a first check finds the followed tag unchanged; then the host pushes a new digest to it
  svc=imgmode-fetch-apply-updates.service
  n=0; until [ "$(systemctl show -P ExecMainExitTimestampMonotonic $svc)" != 0 ]; do n=$((n+1)); [ $n -lt 300 ] || break; sleep 1; done
  echo "FACT first-run=$(yesno test "$(systemctl show -P ExecMainExitTimestampMonotonic $svc)" != 0)"
  echo "FACT first-result=$(systemctl show -P Result $svc)"
  echo "FACT staged-before-push=$(yesno sh -c 'imgmode status --format json | grep -q "\"staged\": true"')"
  echo "IMGMODE-PUSH-NOW"
  n=0; until imgmode status --format json | grep -q '"staged": true'; do n=$((n+1)); [ $n -lt 150 ] || break; systemctl is-failed -q $svc && break; sleep 2; done
  echo DIAG-BEGIN; journalctl -b -u $svc -o short-monotonic --no-pager | tail -40; echo DIAG-END
  systemctl stop imgmode-fetch-apply-updates.timer
  # a oneshot service is `activating` while it runs (is-active would say no at once)
  while [ "$(systemctl show -P ActiveState imgmode-fetch-apply-updates.service)" = activating ]; do sleep 1; done
  echo "FACT service-result=$(systemctl show -p Result --value imgmode-fetch-apply-updates.service)"
  echo "FACT service-runs=$(journalctl -b -u imgmode-fetch-apply-updates.service -o cat | grep -c 'Finished' || true)"
  facts
  next; end; systemctl --no-block reboot ;;
3)
  facts; end; systemctl --no-block poweroff ;;
esac
"#
    )
}

/// Follow the six phases and check each.
async fn check_phases(vm: &mut Vm, a: &Artifacts, layered: &LayeredImage, reg: &str) -> Result<()> {
    // 1: the base; switch to the layered image from the attached disk
    let p = phase(vm, 1, PHASE_TIMEOUT).await?;
    expect_facts(&p, 1, false)?;
    let base = expect_booted(&p, 1, &a.base_digest, "base")?;
    p.ran_ok("imgmode switch")?;
    let rep = parse_phase_status_after_switch(&p)?;
    ensure!(
        rep.container_image_reference_digest.as_deref() == Some(layered.digest.as_str()),
        "phase 1: the staged deployment is {:?}, not the layered image",
        rep.container_image_reference_digest
    );
    // 2: the layered image, /etc carried over by the 3-way merge; upgrade --check finds
    // nothing new; rollback
    let p = phase(vm, 2, BOOT_TIMEOUT + PHASE_TIMEOUT).await?;
    expect_facts(&p, 2, true)?;
    ensure!(
        p.fact("etc-marker") == "yes",
        "phase 2: a file written to /etc before the switch is missing after it"
    );
    let b = expect_booted(&p, 2, &layered.digest, "layered")?;
    ensure!(
        b.container_image_reference.as_deref()
            == Some("ostree-unverified-image:oci-archive:/mnt/payload/layered.tar"),
        "phase 2: origin {:?}",
        b.container_image_reference
    );
    let check = p.ran_ok("imgmode upgrade --check")?;
    ensure!(
        check.contains("\"unchanged\": true"),
        "phase 2: upgrade --check on an unchanged image said: {check}"
    );
    // a staged deployment (the same image by tag from the registry) is dropped by rollback
    p.ran_ok("imgmode switch")?;
    let rb = p.ran_ok("imgmode rollback")?;
    ensure!(
        rb.contains("Dropped the staged deployment"),
        "phase 2: rollback did not drop the staged deployment: {rb}"
    );
    ensure!(
        p.staged().is_none(),
        "phase 2: a staged deployment is still listed after rollback"
    );
    // 3: the base again, layered content gone; apply a MachineConfig by digest
    let p = phase(vm, 3, BOOT_TIMEOUT + PHASE_TIMEOUT).await?;
    expect_facts(&p, 3, false)?;
    expect_booted(&p, 3, &a.base_digest, "base")?;
    p.ran_ok("imgmode apply-machineconfig")?;
    // 4: the layered image from the registry, by digest; delete the MachineConfig
    let p = phase(vm, 4, BOOT_TIMEOUT + PHASE_TIMEOUT).await?;
    expect_facts(&p, 4, true)?;
    let b = expect_booted(&p, 4, &layered.digest, "layered")?;
    let want = format!(
        "ostree-unverified-registry:{reg}/imgmode/layered@{}",
        layered.digest
    );
    ensure!(
        b.container_image_reference.as_deref() == Some(want.as_str()),
        "phase 4: origin {:?}, expected {want}",
        b.container_image_reference
    );
    p.ran_ok("imgmode revert")?;
    // the power cut as the revert's finalize begins: the base deployment being written, the
    // boot configuration still naming the layered one
    ensure!(
        !reset_during_finalize(vm, 0.0).await?,
        "phase 4: the reset aimed as finalize began came after the bootloader swap"
    );
    // 5: the layered deployment again, its origin unchanged, the repository sound; revert
    let p = phase(vm, 5, BOOT_TIMEOUT + PHASE_TIMEOUT)
        .await
        .context("no sound boot after the reset during finalize")?;
    expect_facts(&p, 5, true)?;
    let b = expect_booted(&p, 5, &layered.digest, "layered")?;
    ensure!(
        b.container_image_reference.as_deref() == Some(want.as_str()),
        "phase 5 (after the reset): origin {:?}, expected {want}",
        b.container_image_reference
    );
    p.ran_ok("ostree fsck")
        .context("phase 5: ostree fsck after the reset")?;
    p.ran_ok("imgmode revert")?;
    // 6: back on the base, following the base image's reference again
    let p = phase(vm, 6, BOOT_TIMEOUT + PHASE_TIMEOUT).await?;
    expect_facts(&p, 6, false)?;
    let b = expect_booted(&p, 6, &a.base_digest, "base")?;
    ensure!(
        b.container_image_reference == base.container_image_reference,
        "phase 6: origin {:?}, expected the original {:?}",
        b.container_image_reference,
        base.container_image_reference
    );
    // the revert booted: the node's record of it is done with
    p.refused("imgmode revert", "an earlier revert went back to")
        .context("phase 6: imgmode revert after the revert booted")?;
    Ok(())
}

/// The end of a scenario's VM: after the phases' checks (`result`) the guest powers off by
/// itself; on a failure it is stopped. The registry stops either way. Returns the VM's
/// seconds.
async fn finish(vm: Vm, registry: Registry, result: Result<()>) -> Result<f64> {
    if let Err(e) = result {
        let _ = vm.quit().await;
        drop(registry);
        return Err(e);
    }
    let secs = vm.elapsed().as_secs_f64();
    vm.wait_shutdown(SHUTDOWN_TIMEOUT).await?;
    drop(registry);
    Ok(secs)
}

/// `update-timer`.
pub async fn update_timer(ctx: &RunContext, dir: &Path) -> Result<String> {
    let a = &ctx.artifacts;
    let a2 = a.clone();
    let layered = tokio::task::spawn_blocking(move || build_layered(&a2)).await??;
    let registry = Registry::start(&dir.join("registry"))?;
    // the tag the node follows holds the base image until the node booted it
    imgmode_json(
        a,
        &[
            "push",
            "--tls-verify=false",
            "imgmode-base",
            &format!("docker://{}/imgmode/auto:latest", registry.host_addr()),
        ],
    )?;
    let reg = registry.guest_addr();
    let cfg = job(
        VmConfig {
            network: true,
            ..VmConfig::new(&a.base_disk, Boot::Bios)
        },
        timer_script(&reg),
    );
    let mut vm = Vm::start(&cfg, dir).await?;
    let result = async {
        // 1: the base; follow the registry's auto:latest (the base image, by tag)
        let p = phase(&mut vm, 1, PHASE_TIMEOUT).await?;
        expect_facts(&p, 1, false)?;
        expect_booted(&p, 1, &a.base_digest, "base")?;
        p.ran_ok("imgmode switch")?;
        check_auto_update(&mut vm, a, &layered, &registry, &reg).await
    }
    .await;
    let secs = finish(vm, registry, result).await?;
    Ok(format!(
        "base -> follow a registry tag -> the update timer finds it unchanged, then stages the digest pushed to it ({}) -> booted; 3 boots in {secs:.0}s",
        layered.digest
    ))
}

/// `update-timer`'s phases 2 and 3: booted on the base from `auto:latest`, the update timer's
/// first check finds nothing new; the host pushes the layered image to the tag; the timer
/// stages it with no command run; the next boot is the layered image, still following the tag.
async fn check_auto_update(
    vm: &mut Vm,
    a: &Artifacts,
    layered: &LayeredImage,
    registry: &Registry,
    reg: &str,
) -> Result<()> {
    let follow = format!("ostree-unverified-registry:{reg}/imgmode/auto:latest");
    vm.wait_for_result("IMGMODE-PUSH-NOW", BOOT_TIMEOUT + PHASE_TIMEOUT)
        .await?;
    let (a2, dest) = (
        a.clone(),
        format!("docker://{}/imgmode/auto:latest", registry.host_addr()),
    );
    tokio::task::spawn_blocking(move || {
        imgmode_json(
            &a2,
            &["push", "--tls-verify=false", "vmtest-layered", &dest],
        )
    })
    .await??;
    let p = phase(vm, 2, PHASE_TIMEOUT).await?;
    expect_facts(&p, 2, false)?;
    let b = expect_booted(&p, 2, &a.base_digest, "base")?;
    ensure!(
        b.container_image_reference.as_deref() == Some(follow.as_str()),
        "phase 2: origin {:?}, expected {follow}",
        b.container_image_reference
    );
    for (fact, want) in [
        ("timer-enabled", "enabled"),
        ("first-run", "yes"),
        ("first-result", "success"),
        ("staged-before-push", "no"),
        ("service-result", "success"),
    ] {
        ensure!(
            p.fact(fact) == want,
            "phase 2 (the update timer): {fact} is {:?}, expected {want:?}; the service's journal:\n{}",
            p.fact(fact),
            diag_section(&std::fs::read_to_string(vm.dir().join("results.log"))?)
        );
    }
    let runs: u32 = p.fact("service-runs").parse().unwrap_or(0);
    ensure!(
        runs >= 2,
        "phase 2: the update service ran {runs} time(s); expected a check before the push and one after"
    );
    let staged = p
        .staged()
        .context("phase 2: the update timer staged nothing after the push")?;
    ensure!(
        staged.container_image_reference_digest.as_deref() == Some(layered.digest.as_str()),
        "phase 2: the timer staged {:?}, not the pushed {}",
        staged.container_image_reference_digest,
        layered.digest
    );
    let p = phase(vm, 3, BOOT_TIMEOUT + PHASE_TIMEOUT).await?;
    expect_facts(&p, 3, true)?;
    let b = expect_booted(&p, 3, &layered.digest, "layered")?;
    ensure!(
        b.container_image_reference.as_deref() == Some(follow.as_str()),
        "phase 3: origin {:?}, expected {follow}",
        b.container_image_reference
    );
    Ok(())
}

/// The staged deployment reported by the status after `imgmode switch` in phase 1 (the second
/// status of the phase).
fn parse_phase_status_after_switch(p: &Phase) -> Result<GuestDeployment> {
    match p.staged() {
        Some(d) => Ok(d),
        None => bail!("phase 1: no staged deployment after imgmode switch"),
    }
}
