//! `disk-formats`: the cloud and hypervisor formats of `imgmode disk` boot from their own
//! files, customised by a bootc-image-builder configuration.
//!
//! The base image is written twice with the same customisations: as a streamOptimized vmdk
//! from a `config.toml`, booted through OVMF (vSphere's EFI firmware), and as a fixed vhd from
//! the same settings in `config.json`, booted through SeaBIOS (Azure's generation 1). QEMU
//! reads each through its own format driver (the overlay's backing format is what `qemu-img
//! info` finds). In each guest: the configured user logs in over SSH with its key (to sshd on
//! 127.0.0.1), is in `wheel` (a group the file defines), its password hash verifies the
//! configured password, its home is its own and 0700; `/boot` and `/` have at least their
//! `minsize`; the kernel command line has the file's `append`; and `imgmode status` reports
//! the base image booted. Every disk written is also read on the host (a raw copy, `debugfs`):
//! the partitions' sizes, alice's entries in the deployment's `/etc`, her password hash, her
//! home and key, the boot entries' append. `disk-formats` (the CI tier's) writes both and
//! checks them on the host only; `disk-formats-vmdk` and `disk-formats-vhd` boot one each.

use crate::harness::artifacts::{run, ssh_keypair, write_secret, Artifacts};
use crate::harness::context::RunContext;
use crate::harness::guest::{account_sh, job, parse_phase, run_job, ssh_login_sh, BOOT_TIMEOUT};
use crate::harness::partitions;
use crate::harness::qemu::{Boot, VmConfig};
use anyhow::{ensure, Context, Result};
use std::path::Path;
use std::process::Command;

/// The configured user's password (test data: it reaches the guest as a credential).
const PASSWORD: &str = "vmtest correct horse";
/// The kernel argument of the file's `customizations.kernel.append`.
const APPEND_KARG: &str = "imgmode.vmtest.config=1";
/// `minsize` of `/boot` and `/`, in MiB.
const BOOT_MIB: u64 = 700;
const ROOT_MIB: u64 = 10 * 1024;

fn config_toml(key: &str) -> String {
    format!(
        r#"[[customizations.group]]
name = "wheel"

[[customizations.user]]
name = "alice"
password = "{PASSWORD}"
key = "{key}"
groups = ["wheel"]

[[customizations.filesystem]]
mountpoint = "/boot"
minsize = "{BOOT_MIB} MiB"

[[customizations.filesystem]]
mountpoint = "/"
minsize = "{} GiB"

[customizations.kernel]
append = "{APPEND_KARG}"
"#,
        ROOT_MIB / 1024
    )
}

fn config_json(key: &str) -> String {
    serde_json::json!({
        "customizations": {
            "group": [{"name": "wheel"}],
            "user": [{"name": "alice", "password": PASSWORD, "key": key, "groups": ["wheel"]}],
            "filesystem": [
                {"mountpoint": "/boot", "minsize": format!("{BOOT_MIB} MiB")},
                {"mountpoint": "/", "minsize": ROOT_MIB * 1024 * 1024},
            ],
            "kernel": {"append": APPEND_KARG},
        }
    })
    .to_string()
}

const SCRIPT: &str = r#"echo IMGMODE-PHASE-1-BEGIN
echo "FACT cmdline=$(cat /proc/cmdline)"
echo STATUS-BEGIN
imgmode status --format json
echo STATUS-END
echo "FACT sshd=$(systemctl is-active ssh.service)"
__SSH_LOGIN__
__ACCOUNT__
echo "FACT root-bytes=$(lsblk -bdno SIZE /dev/disk/by-label/root)"
echo IMGMODE-PHASE-1-END
systemctl poweroff
"#;

/// A format `disk-formats` writes from its configuration file, read back by QEMU's driver
/// for it, and booted through the firmware of the platform that takes it.
#[derive(Debug, Clone)]
pub struct Format {
    name: &'static str,
    qemu_format: &'static str,
    config: &'static str,
    boot: Boot,
    firmware: &'static str,
}

/// The streamOptimized vmdk, from `config.toml`, through OVMF (vSphere's EFI firmware).
pub const VMDK: Format = Format {
    name: "vmdk",
    qemu_format: "vmdk",
    config: "config.toml",
    boot: Boot::Uefi,
    firmware: "OVMF",
};
/// The fixed vhd, from `config.json`, through SeaBIOS (Azure's generation 1).
pub const VHD: Format = Format {
    name: "vhd",
    qemu_format: "vpc",
    config: "config.json",
    boot: Boot::Bios,
    firmware: "SeaBIOS",
};

/// `disk-formats` (`write` = [VMDK, VHD], `boot` = [VMDK]) and `disk-formats-vhd` (the vhd
/// written and booted): each format of `write` is written from its configuration and checked
/// on the host; those of `boot` are booted too, and the user logs in.
pub async fn disk_formats(
    ctx: &RunContext,
    dir: &Path,
    write: &[Format],
    boot: &[Format],
) -> Result<String> {
    let a = ctx.artifacts.clone();
    std::fs::create_dir_all(dir)?;
    let key_path = dir.join("alice");
    let public = ssh_keypair(&key_path, "imgmode-vmtest-alice")?;
    let private = std::fs::read_to_string(&key_path)?;
    // the configurations hold the user's password: 0600 from the start, removed after use
    write_secret(&dir.join("config.toml"), &config_toml(&public))?;
    write_secret(&dir.join("config.json"), &config_json(&public))?;
    let (mut said, mut checked) = (Vec::new(), Vec::new());
    for f in write {
        let (format, qemu_format, config, firmware) = (f.name, f.qemu_format, f.config, f.firmware);
        let disk = dir.join(format!("base.{format}"));
        let (a2, d2, c2, k2) = (a.clone(), disk.clone(), dir.join(config), public.clone());
        let info = tokio::task::spawn_blocking(move || {
            let (info, size) = write_disk(&a2, format, qemu_format, &c2, &d2)?;
            let read = settings_on_disk(&d2, qemu_format, size, &k2)
                .with_context(|| format!("the {format} disk ({config}), read on the host"))?;
            Ok::<_, anyhow::Error>(format!("{info}; read back: {read}"))
        })
        .await??;
        if !boot.iter().any(|b| b.name == format) {
            std::fs::remove_file(&disk)?;
            checked.push(format!("{format} ({info}, from {config})"));
            continue;
        }
        let vm = VmConfig {
            disk_format: Some(qemu_format),
            ..VmConfig::new(&disk, f.boot.clone())
        };
        let cfg = job(
            vm,
            SCRIPT
                .replace("__SSH_LOGIN__\n", &ssh_login_sh("alice"))
                .replace("__ACCOUNT__\n", &account_sh("alice")),
        )
        .credential("vmtest.userkey", private.clone())
        .credential("vmtest.password", PASSWORD);
        let results = run_job(
            &cfg,
            &dir.join(format!("vm-{format}")),
            &format!("the {format} disk"),
            BOOT_TIMEOUT,
        )
        .await?;
        std::fs::remove_file(&disk)?;
        check_guest(&a, &results).with_context(|| format!("the {format} disk ({config})"))?;
        said.push(format!("{format} ({info}) through {firmware}"));
    }
    for f in ["config.toml", "config.json", "alice", "alice.pub"] {
        std::fs::remove_file(dir.join(f))?;
    }
    let also = if checked.is_empty() {
        String::new()
    } else {
        format!(
            "wrote 0600 and checked on the host {} (not booted here)",
            checked.join(", ")
        )
    };
    if said.is_empty() {
        return Ok(also);
    }
    let also = if also.is_empty() {
        also
    } else {
        format!("; {also}")
    };
    Ok(format!(
        "booted {}; alice logged in with her key, in wheel, her password verifies; /boot and / at least their minsize; the append on the command line{also}",
        said.join(" and ")
    ))
}

/// `imgmode disk --format FORMAT --config CONFIG`, then the host's check of the file with
/// `qemu-img info` reading it as `qemu_format` (for vmdk the streamOptimized subformat, which
/// `qemu-img check` passes; for vhd a fixed VHD's size: the virtual size and the footer); a
/// summary.
fn write_disk(
    a: &Artifacts,
    format: &str,
    qemu_format: &str,
    config: &Path,
    disk: &Path,
) -> Result<(String, u64)> {
    run(
        Command::new(&a.imgmode)
            .args([
                "disk",
                "imgmode-base",
                "--quiet",
                "--force",
                "--format",
                format,
            ])
            .arg("--config")
            .arg(config)
            .arg("-o")
            .arg(disk),
        &format!("imgmode disk --format {format} --config"),
    )?;
    // the config holds a password: its hash makes the disk a secret
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(disk)?.permissions().mode() & 0o777;
    ensure!(
        mode == 0o600,
        "the {format} disk holds a password hash and is mode {mode:o}, not 0600"
    );
    let info = run(
        Command::new("qemu-img")
            .args(["info", "--output=json", "-f", qemu_format])
            .arg(disk),
        "qemu-img info",
    )?;
    let info: serde_json::Value = serde_json::from_str(&info)?;
    if format == "vmdk" {
        let sub = &info["format-specific"]["data"]["create-type"];
        ensure!(
            sub == "streamOptimized",
            "the vmdk is {sub}, not streamOptimized: {info}"
        );
        run(
            Command::new("qemu-img")
                .args(["check", "-f", "vmdk"])
                .arg(disk),
            "qemu-img check of the vmdk",
        )?;
    } else {
        let len = std::fs::metadata(disk)?.len();
        let size = info["virtual-size"].as_u64().unwrap_or(0);
        ensure!(
            size.is_multiple_of(1 << 20) && len == size + 512,
            "the vhd is {len} bytes for a virtual size of {size}: not a fixed, 1 MiB-aligned VHD"
        );
    }
    let size = info["virtual-size"]
        .as_u64()
        .context("qemu-img info gave no virtual size")?;
    Ok((format!("{qemu_format}, {} GiB", size >> 30), size))
}

/// The configuration's settings as the disk `image` (read as `qemu_format`, `size` bytes
/// virtual) holds them, read on
/// the host through a raw copy (0600: it holds the password's hash, removed after) and
/// `debugfs` over read-only loop devices: `/boot` and `/` at least their minsize; alice in the
/// deployment's `/etc/passwd` and in `wheel`, her shadow hash verifying the password; her home
/// in the stateroot's `/var` hers and 0700, with the key in `.ssh/authorized_keys`; the append
/// in every boot entry.
fn settings_on_disk(image: &Path, qemu_format: &str, size: u64, key: &str) -> Result<String> {
    let raw = image.with_extension("raw");
    write_secret(&raw, "")?;
    let result = (|| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&raw)?
            .set_len(size)?;
        run(
            Command::new("qemu-img")
                .args(["convert", "-n", "-f", qemu_format, "-O", "raw"])
                .arg(image)
                .arg(&raw),
            "qemu-img convert to raw",
        )?;
        settings_on_raw(&raw, key)
    })();
    std::fs::remove_file(&raw)?;
    result
}

fn settings_on_raw(raw: &Path, key: &str) -> Result<String> {
    let boot = partitions::named(raw, "boot")?;
    let root = partitions::named(raw, "root")?;
    ensure!(
        boot.bytes() >= BOOT_MIB << 20 && root.bytes() >= ROOT_MIB << 20,
        "/boot is {} MiB and / {} MiB, under their minsize of {BOOT_MIB} and {ROOT_MIB} MiB",
        boot.bytes() >> 20,
        root.bytes() >> 20
    );
    let b = boot.attach(raw)?;
    let entries: Vec<String> = b
        .ls("/loader/entries")?
        .into_iter()
        .filter(|n| n.ends_with(".conf"))
        .collect();
    ensure!(!entries.is_empty(), "no boot entry in /loader/entries");
    for e in &entries {
        let text = b.debugfs(&format!("cat /loader/entries/{e}"))?;
        ensure!(
            text.lines()
                .filter_map(|l| l.strip_prefix("options "))
                .any(|o| o.split_whitespace().any(|k| k == APPEND_KARG)),
            "the boot entry {e} lacks the append {APPEND_KARG}:\n{text}"
        );
    }
    drop(b);
    let r = root.attach(raw)?;
    let stateroot = "/ostree/deploy/default";
    let deploys = r.ls(&format!("{stateroot}/deploy"))?;
    let deploy = match deploys
        .iter()
        .filter(|n| !n.ends_with(".origin") && n.len() > 64)
        .collect::<Vec<_>>()[..]
    {
        [d] => format!("{stateroot}/deploy/{d}"),
        ref other => {
            anyhow::bail!("expected one deployment in {stateroot}/deploy, found {other:?}")
        }
    };
    let line = |file: &str, name: &str| -> Result<String> {
        let text = r.debugfs(&format!("cat {deploy}/etc/{file}"))?;
        text.lines()
            .find(|l| l.split(':').next() == Some(name))
            .map(str::to_string)
            .with_context(|| format!("the deployment's /etc/{file} has no entry for {name}"))
    };
    let passwd = line("passwd", "alice")?;
    let ids: Vec<&str> = passwd.split(':').skip(2).take(2).collect();
    ensure!(
        ids.len() == 2,
        "alice's passwd entry is malformed: {passwd}"
    );
    ensure!(
        line("group", "wheel")?
            .rsplit(':')
            .next()
            .is_some_and(|m| m.split(',').any(|u| u == "alice")),
        "alice is not in wheel in the deployment's /etc/group"
    );
    let hash = line("shadow", "alice")?
        .split(':')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let verifies = run(
        Command::new("perl")
            .args([
                "-e",
                r#"print crypt($ARGV[0], $ARGV[1]) eq $ARGV[1] ? "yes" : "no""#,
                PASSWORD,
            ])
            .arg(&hash),
        "perl crypt",
    )?;
    ensure!(
        verifies == "yes",
        "alice's shadow hash does not verify the config's password"
    );
    let home = format!("{stateroot}/var/home/alice");
    let stat = r.debugfs(&format!("stat {home}"))?;
    let field = |k: &str| {
        stat.split_whitespace()
            .skip_while(|w| *w != k)
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    ensure!(
        field("Mode:") == "0700" && [field("User:"), field("Group:")] == [ids[0], ids[1]],
        "alice's home {home} is mode {} of {}:{}, expected 0700 of her ids {}:{}",
        field("Mode:"),
        field("User:"),
        field("Group:"),
        ids[0],
        ids[1]
    );
    let keys = r.debugfs(&format!("cat {home}/.ssh/authorized_keys"))?;
    ensure!(
        keys.lines().any(|l| l.trim() == key.trim()),
        "alice's authorized_keys lacks the config's key"
    );
    Ok(format!(
        "alice {}:{} in wheel, her hash verifies the password, her home 0700 with the key; /boot {} MiB, / {} MiB; the append in {} boot entr{}",
        ids[0],
        ids[1],
        boot.bytes() >> 20,
        root.bytes() >> 20,
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" }
    ))
}

fn check_guest(a: &Artifacts, results: &str) -> Result<()> {
    let p = parse_phase(results, 1)?;
    p.booted_image(&a.base_digest)?;
    p.has_append_karg(APPEND_KARG)?;
    ensure!(p.fact("sshd") == "active", "sshd is {}", p.fact("sshd"));
    p.logged_in("alice", "wheel")?;
    p.account_applied("alice", BOOT_MIB << 20)?;
    ensure!(
        p.fact("root-bytes").parse::<u64>().unwrap_or(0) >= ROOT_MIB << 20,
        "/ is {} bytes, under its minsize of {ROOT_MIB} MiB",
        p.fact("root-bytes")
    );
    Ok(())
}
