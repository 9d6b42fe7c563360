//! `install-iso`: `imgmode iso` makes an unattended installer ISO of the base image from a
//! bootc-image-builder configuration; a VM with two blank disks boots it (SeaBIOS, from a CD),
//! its live system installs onto the disk the configuration names and reboots into it.
//!
//! The configuration names `/dev/vda` (`[customizations.installer] installation-disk`) and
//! carries a user with a password, a key and a group, a `/boot` minsize and a kernel argument.
//! The second disk, larger and just as blank, must stay untouched (no cluster of its qcow2
//! written). On the installed system: the base image booted; the root partition and its
//! filesystem grew from the disk image's size to the 12 GiB disk; the user logs in over SSH
//! with the key and is in `wheel`, its password hash verifies the password, its home is its
//! own and 0700; `/boot` has its minsize; the argument is on the kernel command line.

use crate::harness::artifacts::{run, ssh_keypair, write_secret, Artifacts};
use crate::harness::context::RunContext;
use crate::harness::guest::{account_sh, job, parse_phase, run_job, ssh_login_sh, BOOT_TIMEOUT};
use crate::harness::media::{blank_disk, cdrom};
use crate::harness::qemu::{Boot, VmConfig};
use anyhow::{ensure, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The kernel argument of the configuration's `append`.
const APPEND_KARG: &str = "imgmode.vmtest.iso=1";
/// The user's password (test data: it reaches the guest as a credential).
const PASSWORD: &str = "vmtest battery staple";
/// `minsize` of `/boot`, in MiB (more than the disk writer's default).
const BOOT_MIB: u64 = 700;
/// Writing the disk image under TCG, growing it, then the first boot.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);

fn config_toml(key: &str) -> String {
    format!(
        r#"[[customizations.group]]
name = "wheel"

[[customizations.user]]
name = "bob"
password = "{PASSWORD}"
key = "{key}"
groups = ["wheel"]

[[customizations.filesystem]]
mountpoint = "/boot"
minsize = "{BOOT_MIB} MiB"

[customizations.kernel]
append = "{APPEND_KARG}"

[customizations.installer]
unattended = true
installation-disk = "/dev/vda"
"#
    )
}

/// The installed system's report.
const SCRIPT: &str = r#"echo IMGMODE-PHASE-1-BEGIN
echo "FACT cmdline=$(cat /proc/cmdline)"
echo STATUS-BEGIN
imgmode status --format json
echo STATUS-END
echo "FACT root-disk=$(lsblk -no PKNAME /dev/disk/by-label/root)"
echo "FACT root-part-bytes=$(lsblk -bdno SIZE /dev/disk/by-label/root)"
echo "FACT root-fs-bytes=$(df -B1 --output=size /sysroot | tail -1 | tr -d ' ')"
__SSH_LOGIN__
__ACCOUNT__
echo IMGMODE-PHASE-1-END
systemctl poweroff
"#;

/// What `imgmode iso --format json` says of the ISO it wrote.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct IsoRecord {
    disk_size: u64,
    installation_disk: Option<String>,
}

/// `install-iso`.
pub async fn install_iso(ctx: &RunContext, dir: &Path) -> Result<String> {
    let a = ctx.artifacts.clone();
    std::fs::create_dir_all(dir)?;
    let key_path = dir.join("bob");
    let public = ssh_keypair(&key_path, "imgmode-vmtest-bob")?;
    let private = std::fs::read_to_string(&key_path)?;
    // the configuration holds the user's password: 0600 from the start, removed after use
    let config = dir.join("config.toml");
    write_secret(&config, &config_toml(&public))?;
    let iso = dir.join("install.iso");
    let (a2, c2, i2) = (a.clone(), config.clone(), iso.clone());
    let (record, iso_mib) = tokio::task::spawn_blocking(move || write_iso(&a2, &c2, &i2)).await??;
    ensure!(
        record.installation_disk.as_deref() == Some("/dev/vda"),
        "the ISO's record names the disk {:?}, not the config's /dev/vda",
        record.installation_disk
    );
    let target = dir.join("target.qcow2");
    blank_disk(&target)?;
    let decoy = dir.join("decoy.qcow2");
    run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&decoy)
            .arg("16G"),
        "qemu-img create (the second disk)",
    )?;
    let mut extra_args = vec![
        "-drive".to_string(),
        format!(
            "file={},format=qcow2,if=none,id=decoy,cache=unsafe",
            decoy.display()
        ),
        "-device".to_string(),
        "virtio-blk-pci,drive=decoy,serial=decoy".to_string(),
    ];
    extra_args.extend(cdrom(&iso, "live", 0, Some(2)));
    let cfg = job(
        VmConfig {
            extra_args,
            memory_mib: 3072,
            unfinished_startup: Some(
                "the installer ISO's unit installs and reboots during the live system's startup",
            ),
            ..VmConfig::new(&target, Boot::Bios)
        },
        SCRIPT
            .replace("__SSH_LOGIN__\n", &ssh_login_sh("bob"))
            .replace("__ACCOUNT__\n", &account_sh("bob")),
    )
    .credential("vmtest.userkey", private)
    .credential("vmtest.password", PASSWORD);
    let results = run_job(
        &cfg,
        &dir.join("vm"),
        "the installer ISO, then the installed disk",
        BOOT_TIMEOUT * 2 + INSTALL_TIMEOUT,
    )
    .await?;
    let grown = check_installed(&a, &results, record.disk_size)?;
    check_untouched(&decoy)?;
    for f in [&key_path, &key_path.with_extension("pub"), &config, &iso] {
        std::fs::remove_file(f)?;
    }
    Ok(format!(
        "imgmode iso wrote a {iso_mib} MiB ISO carrying a {} MiB disk image of imgmode-base; booted from a CD beside two blank disks, it installed onto the config's /dev/vda and rebooted into it (the other disk untouched); the root partition and filesystem grew to {grown} MiB; bob logged in over SSH with the config's key, in wheel, his password verifies and his home is his own; /boot has its {BOOT_MIB} MiB minsize; the config's append on the command line",
        record.disk_size >> 20
    ))
}

/// `imgmode iso --config` into `iso`; the record it reports and the ISO's size in MiB.
fn write_iso(a: &Artifacts, config: &Path, iso: &Path) -> Result<(IsoRecord, u64)> {
    let out = run(
        Command::new(&a.imgmode)
            .args(["iso", "imgmode-base", "--format", "json", "--config"])
            .arg(config)
            .arg("-o")
            .arg(iso),
        "imgmode iso --config",
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("imgmode iso's JSON")?;
    let record: IsoRecord =
        serde_json::from_value(v["record"].clone()).context("imgmode iso's record")?;
    Ok((record, std::fs::metadata(iso)?.len() >> 20))
}

/// The installed system booted the base image from `vda`, grown past the disk image's size;
/// the user and the kernel argument of the config. The root filesystem's size in MiB.
fn check_installed(a: &Artifacts, results: &str, image_bytes: u64) -> Result<u64> {
    let p = parse_phase(results, 1)?;
    p.booted_image(&a.base_digest)
        .context("the installed system")?;
    ensure!(
        p.fact("root-disk") == "vda",
        "the root filesystem is on {:?}, not on the config's /dev/vda",
        p.fact("root-disk")
    );
    let bytes = |f: &str| p.fact(f).parse::<u64>().unwrap_or(0);
    // the 12 GiB disk less the boot partitions: far more than the disk image held
    for f in ["root-part-bytes", "root-fs-bytes"] {
        ensure!(
            bytes(f) > image_bytes + (4 << 30) && bytes(f) > 10 << 30,
            "{f} is {} on the 12 GiB disk: the root was not grown from the disk image's {image_bytes} bytes",
            p.fact(f)
        );
    }
    p.logged_in("bob", "wheel")?;
    p.account_applied("bob", BOOT_MIB << 20)?;
    p.has_append_karg(APPEND_KARG)?;
    Ok(bytes("root-fs-bytes") >> 20)
}

/// No cluster of the second disk was written.
fn check_untouched(decoy: &Path) -> Result<()> {
    let map = run(
        Command::new("qemu-img")
            .args(["map", "--output=json"])
            .arg(decoy),
        "qemu-img map (the second disk)",
    )?;
    let map: Vec<serde_json::Value> = serde_json::from_str(&map)?;
    let written: Vec<&serde_json::Value> = map.iter().filter(|m| m["data"] == true).collect();
    ensure!(
        written.is_empty(),
        "the installer wrote to the disk the config did not name: {written:?}"
    );
    Ok(())
}
