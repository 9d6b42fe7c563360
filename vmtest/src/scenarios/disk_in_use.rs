//! `disk-in-use`: `imgmode ibi install` refuses a disk the running system uses. This machine's
//! kernel has no device-mapper and no md driver, so the cases that need them run in a guest:
//! the base disk booted with three more disks, on which the guest makes an active LVM volume
//! group (one disk) and an md RAID1 (two disks), each holding 8 MiB of data. Refused, before
//! anything is written: the volume group's member (by its kernel name and through a
//! `/dev/disk/by-id` link), an md member, and the disk holding the running root. Afterwards the
//! volume group, the array and both copies of the data are intact. Freed (the group
//! deactivated, the array stopped), the same disks pass the check and the install goes on to
//! its next step (which fails here, on purpose: the seed's registry does not exist), so the
//! refusals were for the use and nothing else.

use crate::harness::artifacts::run;
use crate::harness::context::RunContext;
use crate::harness::guest::{job, parse_phase, report_line, run_job, BOOT_TIMEOUT};
use crate::harness::qemu::{Boot, VmConfig};
use anyhow::{ensure, Context, Result};
use std::path::Path;
use std::process::Command;

/// The extra disks' serials (64 MiB each).
const DISKS: &[&str] = &["lvm1", "md1", "md2"];

const SCRIPT: &str = r#"echo "IMGMODE-PHASE-1-BEGIN"
conf() {
  printf 'apiVersion: v1beta1\nkind: ImageBasedInstallationConfig\nseedImage: registry.invalid/seed:4.17\nseedVersion: 4.17.0\ninstallationDisk: %s\npullSecret: %s\n' \
    "$1" "'{\"auths\":{}}'" > "/run/ibi-$2.yaml"
}
# printf, not echo: dash's echo would turn the JSON's \n escapes into line breaks
install() { run imgmode ibi install --config "/run/ibi-$1.yaml" --state "/run/ibi-$1.json"; printf 'STATE-%s %s\n' "$1" "$(tr -d '\n' < /run/ibi-$1.json 2>/dev/null)"; }
lvm=$(readlink -f /dev/disk/by-id/virtio-lvm1)
md1=$(readlink -f /dev/disk/by-id/virtio-md1)
md2=$(readlink -f /dev/disk/by-id/virtio-md2)
root=/dev/$(lsblk -no PKNAME "$(findmnt -n -o SOURCE /sysroot)")
echo "FACT root-disk=$root"
# an active volume group with a logical volume, and a RAID1, each holding the same data
pvcreate -q "$lvm"
vgcreate -q vmtestvg "$lvm"
lvcreate -q -y -L 16M -n data vmtestvg
mdadm --create /dev/md/vmtest --run --quiet --level=1 --raid-devices=2 --metadata=1.2 "$md1" "$md2"
udevadm settle
head -c 8388608 /dev/urandom > /run/data
dd if=/run/data of=/dev/vmtestvg/data bs=1M conv=fsync status=none
dd if=/run/data of=/dev/md/vmtest bs=1M conv=fsync status=none
conf "$lvm" lvm
conf /dev/disk/by-id/virtio-lvm1 lvmlink
conf "$md1" md
conf "$root" root
for c in lvm lvmlink md root; do install $c; done
echo "FACT vg=$(yesno vgs vmtestvg)"
echo "FACT lv-active=$(lvs --noheadings -o lv_active vmtestvg/data | tr -d ' ')"
echo "FACT lv-data=$(yesno cmp -n 8388608 /run/data /dev/vmtestvg/data)"
echo "FACT md-state=$(mdadm --detail /dev/md/vmtest | sed -n 's/^ *State : //p' | tr -d ' ')"
echo "FACT md-active=$(mdadm --detail /dev/md/vmtest | sed -n 's/^ *Active Devices : //p')"
echo "FACT md-data=$(yesno cmp -n 8388608 /run/data /dev/md/vmtest)"
# freed, the same disks pass the check: the install fails at its next step, the seed's gates
vgchange -q -an vmtestvg
mdadm --stop /dev/md/vmtest
udevadm settle
conf "$lvm" lvmfree
conf "$md1" mdfree
for c in lvmfree mdfree; do install $c; done
echo "FACT failed-units=$(systemctl list-units --failed --plain --no-legend | cut -d' ' -f1 | tr '\n' ' ')none"
echo "IMGMODE-PHASE-1-END"
systemctl poweroff
"#;

/// `disk-in-use`.
pub async fn disk_in_use(ctx: &RunContext, dir: &Path) -> Result<String> {
    let a = &ctx.artifacts;
    std::fs::create_dir_all(dir)?;
    let mut extra_args = vec![];
    for serial in DISKS {
        let img = dir.join(format!("{serial}.img"));
        let _ = std::fs::remove_file(&img);
        run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "raw"])
                .arg(&img)
                .arg("64M"),
            "qemu-img create (an extra disk)",
        )?;
        extra_args.extend([
            "-drive".to_string(),
            format!("file={},format=raw,if=none,id={serial}", img.display()),
            "-device".to_string(),
            format!("virtio-blk-pci,drive={serial},serial={serial}"),
        ]);
    }
    let cfg = job(
        VmConfig {
            extra_args,
            ..VmConfig::new(&a.base_disk, Boot::Bios)
        },
        SCRIPT.to_string(),
    );
    let results = run_job(
        &cfg,
        &dir.join("vm"),
        "the base disk with three more",
        BOOT_TIMEOUT,
    )
    .await?;
    for serial in DISKS {
        let _ = std::fs::remove_file(dir.join(format!("{serial}.img")));
    }
    let p = parse_phase(&results, 1)?;
    let state = |c: &str| -> Result<serde_json::Value> {
        let line = report_line(&results, &format!("STATE-{c} "))
            .with_context(|| format!("the guest reported no state for {c}"))?;
        serde_json::from_str(line).with_context(|| format!("the state of {c}: {line}"))
    };
    let root = p.fact("root-disk").to_string();
    for (c, part, want) in [
        (
            "lvm",
            "ibi-lvm.yaml",
            "is held by device-mapper vmtestvg-data",
        ),
        (
            "lvmlink",
            "ibi-lvmlink.yaml",
            "installationDisk /dev/disk/by-id/virtio-lvm1 is in use",
        ),
        ("md", "ibi-md.yaml", "is held by md"),
        ("root", "ibi-root.yaml", "is mounted on"),
    ] {
        p.refused(part, want)
            .with_context(|| format!("installationDisk for case {c}"))?;
        let s = state(c)?;
        ensure!(
            s["status"] == "failed" && s["step"] == "preflight",
            "case {c}: the refused install's state says {s}, expected failed at preflight"
        );
    }
    for c in ["lvmfree", "mdfree"] {
        let s = state(c)?;
        ensure!(
            s["status"] == "failed" && s["step"] == "seed-gates",
            "case {c}: once freed the disk must pass the check (failing later, at seed-gates, for the missing registry); the state says {s}"
        );
    }
    for (fact, want) in [
        ("vg", "yes"),
        ("lv-active", "active"),
        ("lv-data", "yes"),
        ("md-active", "2"),
        ("md-data", "yes"),
        ("failed-units", "none"),
    ] {
        ensure!(
            p.fact(fact) == want,
            "after the refusals: {fact} is {:?}, expected {want:?}",
            p.fact(fact)
        );
    }
    ensure!(
        p.fact("md-state").starts_with("clean") || p.fact("md-state").starts_with("active"),
        "after the refusals the array is {:?}",
        p.fact("md-state")
    );
    Ok(format!(
        "refused an active LVM volume group's member (by name and by-id link), an md RAID1 member and the running root's disk ({root}) at preflight; the volume group, the array ({}) and their data intact; freed, the same disks passed the check",
        p.fact("md-state")
    ))
}
