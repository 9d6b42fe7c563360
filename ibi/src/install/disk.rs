//! The installation disk: resolved once to a whole disk, refused when anything uses it, and
//! held (an exclusive open and a BSD lock, as udev and other installers honour) from the check
//! through the wipe, with the check repeated right before the wipe.
//!
//! "In use" is read from the kernel (sysfs and the mount table by device number), not from
//! paths: the disk or a partition mounted (directly or through device-mapper, md or LVM), in
//! use as swap, held by another block device (a device-mapper target, an md array, a LVM
//! physical volume), or the whole disk named through a link or by a partition. A disk image
//! file is refused while a loop device is attached to it.

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The disk an install writes, claimed.
pub(crate) struct Claimed {
    /// The disk (a block device node, or a disk image file), as the config named it.
    pub path: PathBuf,
    pub block: bool,
    /// The exclusive open with its lock; dropped after the wipe.
    lock: Option<File>,
    /// After the wipe: a plain read-only open of the block device holding its BSD lock until
    /// the install ends (see [`Claimed::release_keeping_lock`]).
    udev_lock: Option<File>,
}

impl Claimed {
    /// Give up the hold entirely: the kernel and udev read the disk's new partition table.
    pub fn release(&mut self) {
        self.lock = None;
        self.udev_lock = None;
    }

    /// Give up the exclusive open (before partitions are made: mkfs and mount claim them) but
    /// keep the disk's BSD lock, on a plain open, until the claim is dropped. udev leaves a
    /// locked disk alone (systemd's block device locking): unlocked, every close of the disk
    /// written (sgdisk, the ESP's mkfs.vfat and mtools at an offset) made udev re-read its
    /// partition table, which takes every partition device away for a moment; an install that
    /// looked for one then (an IBI benchmark run did) found none.
    pub fn release_keeping_lock(&mut self) -> Result<()> {
        if self.lock.take().is_none() || !self.block {
            return Ok(());
        }
        let file = File::open(&self.path)
            .with_context(|| format!("opening {} again", self.path.display()))?;
        // udev may take a shared lock for a moment in between: wait for it
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("locking {} (flock)", self.path.display()))?;
        self.udev_lock = Some(file);
        Ok(())
    }

    /// The exclusive open of a block device (read and write), while it is held.
    pub fn file(&self) -> Option<&File> {
        self.lock.as_ref()
    }
}

/// Resolve, check and claim `disk`; `named` says in messages where it was named (`FILE:
/// installationDisk`).
pub(crate) fn claim(named: &str, disk: &Path) -> Result<Claimed> {
    let meta = std::fs::metadata(disk).with_context(|| {
        format!(
            "{named} {} does not exist; name a disk of this machine (lsblk lists them), e.g. /dev/disk/by-id/...",
            disk.display()
        )
    })?;
    let ft = meta.file_type();
    if ft.is_file() {
        if let Some(loop_dev) = attached_loop(disk)? {
            bail!(
                "{named} {} is in use ({loop_dev} is attached to it); detach it with losetup -d {loop_dev} first",
                disk.display()
            );
        }
        return Ok(Claimed {
            path: disk.to_path_buf(),
            block: false,
            lock: None,
            udev_lock: None,
        });
    }
    if !ft.is_block_device() {
        bail!(
            "{named} {} is neither a block device nor a disk image file",
            disk.display()
        );
    }
    let name = sys_name(&meta)?;
    let sys = Path::new("/sys/class/block").join(&name);
    if sys.join("partition").exists() {
        let parent = std::fs::canonicalize(&sys)
            .ok()
            .and_then(|p| {
                p.parent()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_default();
        bail!(
            "{named} {} is the partition {name}; name the whole disk (/dev/{parent}): the install replaces its partition table",
            disk.display()
        );
    }
    refuse_if_used(named, disk, &name)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc_o_excl())
        .open(disk)
        .map_err(|e| {
            anyhow::anyhow!(
                "{named} {} is in use (the kernel refuses an exclusive open: {e}); imgmode does not write a disk the running system uses",
                disk.display()
            )
        })?;
    lock_exclusive(&file, LOCK_WAIT).map_err(|e| {
        anyhow::anyhow!(
            "{named} {} is locked by another program (udev or another installer: {e}) and stayed so for {} s; wait for it and run again",
            disk.display(),
            LOCK_WAIT.as_secs()
        )
    })?;
    Ok(Claimed {
        path: disk.to_path_buf(),
        block: true,
        lock: Some(file),
        udev_lock: None,
    })
}

/// How long [`claim`] waits for a disk's BSD lock. udev holds it (shared) while it processes
/// the disk's events: right after boot, during its coldplug, that can be seconds, and an
/// installer that starts then (the live systems' do) meets it. Another installer holds it for
/// its whole run.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `flock(LOCK_EX)` on `file`, tried every 0.1 s for up to `wait`; the last error when it
/// stays held.
fn lock_exclusive(file: &File, wait: std::time::Duration) -> std::io::Result<()> {
    let t0 = std::time::Instant::now();
    loop {
        match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK && t0.elapsed() < wait => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The check again, right before the wipe (minutes may have passed since [`claim`]).
pub(crate) fn recheck(named: &str, c: &Claimed) -> Result<()> {
    if !c.block {
        if let Some(loop_dev) = attached_loop(&c.path)? {
            bail!(
                "{named} {} came into use ({loop_dev} was attached to it); nothing was written",
                c.path.display()
            );
        }
        return Ok(());
    }
    let name = sys_name(&std::fs::metadata(&c.path)?)?;
    refuse_if_used(named, &c.path, &name)
}

fn refuse_if_used(named: &str, disk: &Path, name: &str) -> Result<()> {
    let users = users(name)?;
    if !users.is_empty() {
        bail!(
            "{named} {} is in use ({}); imgmode does not write a disk the running system uses",
            disk.display(),
            users.join(", ")
        );
    }
    Ok(())
}

/// O_EXCL: for a block device, the open fails while the kernel holds the device (mounted,
/// swap, a device-mapper or md member).
fn libc_o_excl() -> i32 {
    rustix::fs::OFlags::EXCL.bits() as i32
}

/// The kernel's name of a block device (`vda`, `loop0`), from its device number.
fn sys_name(meta: &std::fs::Metadata) -> Result<String> {
    let rdev = meta.rdev();
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let link = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let target = std::fs::canonicalize(&link).with_context(|| {
        format!(
            "the kernel has no block device {major}:{minor} ({})",
            link.display()
        )
    })?;
    Ok(target
        .file_name()
        .context("a block device without a name")?
        .to_string_lossy()
        .into_owned())
}

/// What uses the disk `name`: mounts, swap and holders of it, its partitions and everything
/// built on them.
pub(crate) fn users(name: &str) -> Result<Vec<String>> {
    let class = Path::new("/sys/class/block");
    let mut devices = vec![name.to_string()];
    let disk_dir = class.join(name);
    for e in
        std::fs::read_dir(&disk_dir).with_context(|| format!("reading {}", disk_dir.display()))?
    {
        let n = e?.file_name().to_string_lossy().into_owned();
        if n.starts_with(name) && disk_dir.join(&n).join("partition").exists() {
            devices.push(n);
        }
    }
    let mut out = vec![];
    // holders, transitively: device-mapper (LVM, dm-crypt, multipath), md
    let mut all: BTreeSet<String> = devices.iter().cloned().collect();
    let mut stack = devices.clone();
    while let Some(d) = stack.pop() {
        let Ok(holders) = std::fs::read_dir(class.join(&d).join("holders")) else {
            continue;
        };
        for h in holders {
            let h = h?.file_name().to_string_lossy().into_owned();
            let what = std::fs::read_to_string(class.join(&h).join("dm/name"))
                .map(|n| format!("device-mapper {}", n.trim()))
                .unwrap_or_else(|_| h.clone());
            if devices.contains(&d) {
                out.push(format!(
                    "{d} is held by {what} (LVM, dm-crypt, md or multipath)"
                ));
            }
            if all.insert(h.clone()) {
                stack.push(h);
            }
        }
    }
    let numbers: BTreeSet<String> = all
        .iter()
        .filter_map(|d| std::fs::read_to_string(class.join(d).join("dev")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    for (dev, target) in imgmode_support::host::mount_devices()? {
        if numbers.contains(&dev) {
            out.push(format!("device {dev} is mounted on {target}"));
        }
    }
    for swap in imgmode_support::host::swaps() {
        let Ok(m) = std::fs::metadata(&swap) else {
            continue;
        };
        let n = format!(
            "{}:{}",
            rustix::fs::major(m.rdev()),
            rustix::fs::minor(m.rdev())
        );
        if m.file_type().is_block_device() && numbers.contains(&n) {
            out.push(format!("{swap} is in use as swap"));
        }
    }
    Ok(out)
}

/// The kernel's device node of the partition of the block device `disk` that starts at byte
/// `start` and spans `size` bytes (sysfs counts 512-byte sectors), when the kernel knows it
/// so. The install makes and mounts its filesystems there: through a loop device over the
/// whole disk every block written would pass through the page cache twice (and a loop device
/// over a disk whose partition is also a device writes the same blocks through two caches).
/// A disk that can have partition devices (any but a loop device without partition scanning)
/// is given up to [`PARTITION_WAIT`] for the partition to appear, then refused.
pub(crate) fn partition_device(disk: &Path, start: u64, size: u64) -> Result<Option<PathBuf>> {
    let meta = std::fs::metadata(disk).with_context(|| format!("reading {}", disk.display()))?;
    if !meta.file_type().is_block_device() {
        return Ok(None);
    }
    let sys = Path::new("/sys/class/block").join(sys_name(&meta)?);
    let partitioned =
        std::fs::read_to_string(sys.join("loop/partscan")).map_or(true, |v| v.trim() == "1");
    let t0 = std::time::Instant::now();
    loop {
        if let Some(part) = partition_named(&sys, start, size) {
            let dev = Path::new("/dev").join(part);
            if dev.exists() {
                return Ok(Some(dev));
            }
        }
        if !partitioned {
            return Ok(None);
        }
        if t0.elapsed() > PARTITION_WAIT {
            bail!(
                "the kernel shows no partition of {} starting at byte {start} ({size} bytes) {} s after the partition table was written; \
                 check that nothing else rewrote it (partx --show {})",
                disk.display(),
                PARTITION_WAIT.as_secs(),
                disk.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// How long [`partition_device`] waits for the kernel's partition device.
const PARTITION_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The name of the partition under the disk's sysfs directory `sys_disk` that starts at byte
/// `start` and spans `size` bytes.
fn partition_named(sys_disk: &Path, start: u64, size: u64) -> Option<std::ffi::OsString> {
    let sectors = |dir: &Path, f: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    std::fs::read_dir(sys_disk)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|dir| dir.join("partition").exists())
        .find(|dir| {
            sectors(dir, "start") == Some(start / 512) && sectors(dir, "size") == Some(size / 512)
        })
        .and_then(|dir| dir.file_name().map(|n| n.to_os_string()))
}

/// The loop device attached to the file `path`, if any.
fn attached_loop(path: &Path) -> Result<Option<String>> {
    let want = std::fs::canonicalize(path)?;
    let Ok(entries) = std::fs::read_dir("/sys/class/block") else {
        return Ok(None);
    };
    for e in entries {
        let e = e?;
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.starts_with("loop") {
            continue;
        }
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            if Path::new(b.trim()) == want {
                return Ok(Some(format!("/dev/{n}")));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_udev_holds_for_a_while_is_waited_for_one_held_on_is_not() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("disk");
        std::fs::write(&path, b"").unwrap();
        let mine = File::open(&path).unwrap();
        // udev's shared lock while it processes the disk's events, released after 0.3 s
        let udev = File::open(&path).unwrap();
        rustix::fs::flock(&udev, rustix::fs::FlockOperation::LockShared).unwrap();
        let t0 = std::time::Instant::now();
        let held = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(udev);
        });
        lock_exclusive(&mine, std::time::Duration::from_secs(10)).unwrap();
        assert!(t0.elapsed() >= std::time::Duration::from_millis(300));
        held.join().unwrap();
        // now held by this open: another one waits out its time and gets the error
        let other = File::open(&path).unwrap();
        let e = lock_exclusive(&other, std::time::Duration::from_millis(250)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
    }

    #[test]
    fn a_partition_is_found_by_its_place_on_the_disk() {
        // the kernel's view of a disk, as sysfs shows it (in 512-byte sectors)
        let sys = tempfile::tempdir().unwrap();
        let disk = sys.path().join("vda");
        for (name, start, size) in [("vda1", 2048, 2048), ("vda4", 4096, 32768)] {
            let d = disk.join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("partition"), "1\n").unwrap();
            std::fs::write(d.join("start"), format!("{start}\n")).unwrap();
            std::fs::write(d.join("size"), format!("{size}\n")).unwrap();
        }
        // a directory of the disk that is not a partition, with the same figures
        std::fs::create_dir_all(disk.join("queue")).unwrap();
        std::fs::write(disk.join("queue/start"), "4096\n").unwrap();
        std::fs::write(disk.join("queue/size"), "32768\n").unwrap();
        let found = partition_named(&disk, 4096 * 512, 32768 * 512);
        assert_eq!(found.as_deref(), Some(std::ffi::OsStr::new("vda4")));
        assert_eq!(
            partition_named(&disk, 4096 * 512, 2048 * 512),
            None,
            "a partition of another size is not the one asked for"
        );
        assert_eq!(partition_named(&disk, 0, 2048 * 512), None);
        // a disk image file has no partition devices: the install mounts through a loop device
        let img = sys.path().join("disk.img");
        std::fs::write(&img, b"").unwrap();
        assert_eq!(
            partition_device(&img, 2048 * 512, 2048 * 512).unwrap(),
            None
        );
    }
}
