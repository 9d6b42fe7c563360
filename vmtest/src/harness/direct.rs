//! Direct kernel boot of a disk's default deployment: kernel, initramfs and options are read
//! from the boot entry ostree wrote on the disk's `boot` partition (`/loader/entries/*.conf`),
//! so QEMU can skip firmware and bootloader when a scenario only needs the OS.

use crate::harness::partitions;
use crate::harness::qemu::Boot;
use anyhow::{bail, ensure, Context, Result};
use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// A parsed BLS (Boot Loader Specification type 1) entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlsEntry {
    pub title: String,
    pub linux: String,
    pub initrd: String,
    pub options: String,
    pub version: String,
}

/// Parse a BLS entry (`key value` lines).
pub fn parse_bls(text: &str) -> Result<BlsEntry> {
    let mut e = BlsEntry::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let v = v.trim().to_string();
        match k {
            "title" => e.title = v,
            "linux" => e.linux = v,
            "initrd" => e.initrd = v,
            "options" => e.options = v,
            "version" => e.version = v,
            _ => {}
        }
    }
    if e.linux.is_empty() || e.initrd.is_empty() {
        bail!("boot entry has no linux or initrd line");
    }
    Ok(e)
}

/// Paths in entries may carry ostree's `/boot` prefix (the boot filesystem has a `boot -> .`
/// link); on the boot filesystem itself they start at its root.
fn on_bootfs(p: &str) -> &str {
    p.strip_prefix("/boot")
        .filter(|r| r.starts_with('/'))
        .unwrap_or(p)
}

/// Extract the default (highest version) boot entry's kernel and initramfs from a qcow2 disk
/// into `dir`, and return a [`Boot::Direct`] with the entry's options plus `extra_append`.
pub fn from_disk(disk: &Path, dir: &Path, extra_append: &str) -> Result<Boot> {
    std::fs::create_dir_all(dir)?;
    let raw = dir.join("disk.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(disk)
        .arg(&raw))?;
    let result = (|| {
        let boot = partitions::named(&raw, "boot")?;
        let bootfs = dir.join("boot.ext4");
        run(Command::new("dd")
            .arg(format!("if={}", raw.display()))
            .arg(format!("of={}", bootfs.display()))
            .arg("bs=512")
            .arg(format!("skip={}", boot.start))
            .arg(format!("count={}", boot.size))
            .arg("status=none"))?;
        let debugfs = |req: &str| -> Result<String> {
            Ok(String::from_utf8_lossy(&run(Command::new("debugfs")
                .args(["-R", req])
                .arg(&bootfs))?)
            .into_owned())
        };
        let listing = debugfs("ls -p /loader/entries")?;
        let mut entries: Vec<String> = listing
            .lines()
            .filter_map(|l| l.split('/').nth(5).map(str::to_string))
            .filter(|n| n.ends_with(".conf"))
            .collect();
        entries.sort();
        let name = entries
            .last()
            .context("no boot entries in /loader/entries")?;
        let entry = parse_bls(&debugfs(&format!("cat /loader/entries/{name}"))?)?;
        let kernel = dir.join("vmlinuz");
        let initrd = dir.join("initramfs.img");
        debugfs(&format!(
            "dump {} {}",
            on_bootfs(&entry.linux),
            kernel.display()
        ))?;
        debugfs(&format!(
            "dump {} {}",
            on_bootfs(&entry.initrd),
            initrd.display()
        ))?;
        ensure!(
            std::fs::metadata(&kernel)
                .map(|m| m.len() > 0)
                .unwrap_or(false),
            "could not extract {}",
            entry.linux
        );
        std::fs::remove_file(&bootfs).ok();
        Ok(Boot::Direct {
            kernel,
            initrd,
            append: format!("{} {extra_append}", entry.options)
                .trim()
                .to_string(),
        })
    })();
    std::fs::remove_file(&raw).ok();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bls_entries_parse() {
        let e = parse_bls(
            "title Debian GNU/Linux 13 (trixie) (ostree:0)\nversion 1\noptions root=LABEL=root rw ostree=/ostree/boot.1/default/abc/0\nlinux /boot/ostree/default-abc/vmlinuz-6.12\ninitrd /boot/ostree/default-abc/initramfs-6.12.img\n",
        )
        .unwrap();
        assert_eq!(
            e.options,
            "root=LABEL=root rw ostree=/ostree/boot.1/default/abc/0"
        );
        assert_eq!(on_bootfs(&e.linux), "/ostree/default-abc/vmlinuz-6.12");
        assert_eq!(on_bootfs("/ostree/x"), "/ostree/x");
        assert_eq!(on_bootfs("/bootx/y"), "/bootx/y");
        assert!(parse_bls("title x\n").is_err());
    }
}
