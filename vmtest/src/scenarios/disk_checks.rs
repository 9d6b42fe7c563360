//! `disk-checks` (host only): the disk images pass the filesystem and partition-table
//! checkers, and a too-small `--size` is refused.

use crate::harness::artifacts::Artifacts;
use crate::harness::partitions;
use anyhow::{bail, ensure, Context, Result};
use std::path::Path;

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

/// Check every filesystem of a raw disk read-only through loop devices.
fn fsck_partitions(raw: &Path) -> Result<Vec<String>> {
    use std::process::Command;
    let mut checked = Vec::new();
    for p in partitions::table(raw)? {
        let name = p.name.clone().unwrap_or_default();
        let fsck: &[&str] = match name.as_str() {
            "EFI-SYSTEM" => &["fsck.vfat", "-n"],
            "boot" => &["e2fsck", "-n", "-f"],
            "root" => {
                // ext4 or xfs: ask blkid on the loop device below
                &[]
            }
            _ => continue,
        };
        let lo = p.attach(raw)?;
        let dev = lo.dev.as_str();
        let result = (|| -> Result<()> {
            let args: Vec<&str> = if fsck.is_empty() {
                let ty = check(Command::new("blkid").args(["-o", "value", "-s", "TYPE", dev]))?;
                match ty.trim() {
                    "xfs" => vec!["xfs_repair", "-n"],
                    "ext4" => vec!["e2fsck", "-n", "-f"],
                    other => bail!("root partition has filesystem {other:?}"),
                }
            } else {
                fsck.to_vec()
            };
            check(Command::new(args[0]).args(&args[1..]).arg(dev))?;
            checked.push(format!("{name}:{}", args[0]));
            Ok(())
        })();
        drop(lo);
        result?;
    }
    Ok(checked)
}

/// `disk-checks`.
pub fn disk_checks(a: &Artifacts, dir: &Path) -> Result<String> {
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
