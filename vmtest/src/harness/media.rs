//! Media the scenarios attach to VMs: a payload disk of files, a blank installation disk, ISOs
//! as CD-ROMs.

use crate::harness::artifacts::run;
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// An ext4 image holding `files` (name, source path), attached read-only as a virtio disk
/// with serial `payload` (`/dev/disk/by-id/virtio-payload` in the guest).
pub(crate) fn payload_disk(dir: &Path, files: &[(&str, &Path)]) -> Result<PathBuf> {
    let content = dir.join("payload");
    let _ = std::fs::remove_dir_all(&content);
    std::fs::create_dir_all(&content)?;
    let mut bytes = 0;
    for (name, src) in files {
        std::fs::copy(src, content.join(name))
            .with_context(|| format!("copying {}", src.display()))?;
        bytes += std::fs::metadata(src)?.len();
    }
    let img = dir.join("payload.img");
    let _ = std::fs::remove_file(&img);
    let size_mb = bytes / (1 << 20) * 12 / 10 + 64;
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "payload", "-d"])
        .arg(&content)
        .arg(&img)
        .arg(format!("{size_mb}M"))
        .output()
        .context("running mkfs.ext4")?;
    ensure!(
        out.status.success(),
        "mkfs.ext4 -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&content)?;
    Ok(img)
}

/// A blank 12 GiB qcow2 installation disk at `path` (replacing an earlier one).
pub(crate) fn blank_disk(path: &Path) -> Result<()> {
    let _ = std::fs::remove_file(path);
    run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(path)
            .arg("12G"),
        "qemu-img create (installation disk)",
    )?;
    Ok(())
}

/// QEMU arguments for `file` as a read-only CD on q35's AHCI port `port` (one unit each).
pub(crate) fn cdrom(file: &Path, id: &str, port: u32, bootindex: Option<u32>) -> [String; 4] {
    [
        "-drive".to_string(),
        format!(
            "file={},format=raw,media=cdrom,readonly=on,if=none,id={id}",
            file.display()
        ),
        "-device".to_string(),
        format!(
            "ide-cd,drive={id},bus=ide.{port}{}",
            bootindex
                .map(|i| format!(",bootindex={i}"))
                .unwrap_or_default()
        ),
    ]
}
