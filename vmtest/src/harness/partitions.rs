//! A raw disk image's partitions (`sfdisk --json`), and read-only loop devices over them that
//! the host reads with `debugfs` and the filesystem checkers (nothing is mounted).

use anyhow::{ensure, Context, Result};
use serde::Deserialize;
use std::path::Path;
use std::process::Command;

/// One partition of a disk image, in 512-byte sectors.
#[derive(Debug, Clone, Deserialize)]
pub struct Part {
    pub start: u64,
    pub size: u64,
    /// The GPT partition name (`boot`, `root`, `EFI-SYSTEM`, ...).
    pub name: Option<String>,
}

#[derive(Deserialize)]
struct Table {
    partitions: Vec<Part>,
}
#[derive(Deserialize)]
struct Sfdisk {
    partitiontable: Table,
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The partitions of the raw disk image `raw`.
pub fn table(raw: &Path) -> Result<Vec<Part>> {
    let json = output(Command::new("sfdisk").arg("--json").arg(raw))?;
    let t: Sfdisk = serde_json::from_str(&json).context("parsing sfdisk --json")?;
    Ok(t.partitiontable.partitions)
}

/// The partition named `name` of the raw disk image `raw`.
pub fn named(raw: &Path, name: &str) -> Result<Part> {
    table(raw)?
        .into_iter()
        .find(|p| p.name.as_deref() == Some(name))
        .with_context(|| format!("{} has no partition named {name}", raw.display()))
}

impl Part {
    pub fn bytes(&self) -> u64 {
        self.size * 512
    }

    /// A read-only loop device over this partition of `raw` (detached when dropped).
    pub fn attach(&self, raw: &Path) -> Result<LoopDev> {
        let dev = output(
            Command::new("losetup")
                .args(["--find", "--show", "--read-only"])
                .arg(format!("--offset={}", self.start * 512))
                .arg(format!("--sizelimit={}", self.size * 512))
                .arg(raw),
        )?
        .trim()
        .to_string();
        Ok(LoopDev { dev })
    }
}

/// A read-only loop device, detached when dropped.
pub struct LoopDev {
    pub dev: String,
}

impl LoopDev {
    /// `debugfs -R REQUEST` on the device (ext2/3/4): what it printed.
    pub fn debugfs(&self, request: &str) -> Result<String> {
        output(Command::new("debugfs").args(["-R", request, &self.dev]))
    }

    /// The names in directory `dir` (`debugfs ls -p`, whose lines are
    /// `/inode/mode/uid/gid/name/size/`), `.` and `..` among them.
    pub fn ls(&self, dir: &str) -> Result<Vec<String>> {
        Ok(self
            .debugfs(&format!("ls -p {dir}"))?
            .lines()
            .filter_map(|l| l.split('/').nth(5))
            .map(str::to_string)
            .collect())
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}
