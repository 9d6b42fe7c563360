//! `imgmode install-from-iso [--disk DISK] [DIR]`: what the live system of an `imgmode iso`
//! runs (DIR: the ISO's `imgmode/` directory, mounted).
//!
//! 1. The record (`install.json`) is read and checked; the disk is `--disk`, else the one the
//!    record names, else the machine's one disk that could be a target (not read-only, not
//!    removable, not a loop, RAM, optical or virtual device, and not in use); several are
//!    refused with their names.
//! 2. The disk is claimed as `imgmode ibi install` claims it: refused while anything uses it,
//!    held exclusively, checked again right before the first write, and refused when smaller
//!    than the disk image.
//! 3. The disk image is streamed onto it: decompressed on another thread, runs of zeros
//!    written as zeroed ranges (`fallocate`), every byte counted into its SHA-256. A wrong
//!    size or digest clears the disk's partition tables and fails: a half-written disk never
//!    boots.
//! 4. The backup GPT moves to the disk's end, the root partition grows to it (same number,
//!    start, type, name and GUID) and so does its filesystem (`resize2fs`, or `xfs_growfs`).

use super::{Record, RECORD};
use crate::install::disk::{claim, recheck, users};
use anyhow::{anyhow, bail, ensure, Context, Result};
use imgmode_support::cmd::{require_root, require_tools, Run};
use imgmode_support::size::human_size;
use imgmode_support::Steps;
use serde::Serialize;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct InstallOpts {
    /// The ISO's `imgmode/` directory.
    pub dir: PathBuf,
    /// The disk to write, overriding the record's.
    pub disk: Option<PathBuf>,
}

/// What was installed.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub image: String,
    pub image_digest: String,
    pub disk: PathBuf,
    /// Bytes of the disk, and of its root partition once grown.
    pub disk_bytes: u64,
    pub root_bytes: u64,
    pub seconds: f64,
}

/// Bytes handled at a time: a run of zeros this long becomes one zeroed range.
const CHUNK: usize = 4 << 20;

/// Install the ISO's disk image onto the disk.
pub fn install(o: &InstallOpts, steps: &Steps) -> Result<Installed> {
    let t0 = std::time::Instant::now();
    let record_path = o.dir.join(RECORD);
    let r = read_record(&record_path)?;
    let image_file = o.dir.join(&r.disk_file);
    ensure!(
        image_file.is_file(),
        "{}: diskFile {} is not on the ISO; the ISO is incomplete, write it again with imgmode iso",
        record_path.display(),
        image_file.display()
    );
    require_root("writing a disk")?;
    let mut tools = vec!["sgdisk", "losetup"];
    if r.root.filesystem == "xfs" {
        tools.extend(["xfs_growfs", "mount", "umount"]);
    } else {
        tools.extend(["e2fsck", "resize2fs"]);
    }
    require_tools(&tools)?;
    let (disk, named) = match (&o.disk, &r.installation_disk) {
        (Some(d), _) => (d.clone(), "--disk".to_string()),
        (None, Some(d)) => (
            PathBuf::from(d),
            format!(
                "{}: installationDisk (from the config's [customizations.installer] installation-disk)",
                record_path.display()
            ),
        ),
        (None, None) => (
            pick_disk()?,
            "the machine's one disk (found, as neither the config nor --disk names one):".into(),
        ),
    };
    let mut claimed = claim(&named, &disk)?;
    let disk_bytes = crate::install::disk_size(&disk)?;
    ensure!(
        disk_bytes >= r.disk_size,
        "{named} {} holds {}; the disk image of {} needs at least {}: install onto a larger disk",
        disk.display(),
        human_size(disk_bytes),
        r.image,
        human_size(r.disk_size)
    );
    steps.step(&format!(
        "writing {} ({}) onto {} ({})",
        r.image,
        human_size(r.disk_size),
        disk.display(),
        human_size(disk_bytes)
    ));
    recheck(&named, &claimed)?;
    let target = match claimed.file() {
        Some(f) => f.try_clone()?,
        None => std::fs::OpenOptions::new().write(true).open(&disk)?,
    };
    if let Err(e) = write_image(&image_file, &target, &r, claimed.block) {
        let cleared = clear_tables(&target, disk_bytes);
        return Err(match cleared {
            Ok(()) => e.context(format!(
                "writing {}; its partition tables were cleared, so it does not boot half written",
                disk.display()
            )),
            Err(c) => e.context(format!(
                "writing {}; clearing its partition tables failed too ({c:#}): wipe it (wipefs -a) before booting from it",
                disk.display()
            )),
        });
    }
    drop(target);
    // the kernel reads the new partition table when nothing holds the disk
    claimed.release();
    steps.step("growing the root partition and filesystem to the end of the disk");
    let root_bytes = grow(&disk, &r)?;
    Ok(Installed {
        image: r.image,
        image_digest: r.image_digest,
        disk,
        disk_bytes,
        root_bytes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The record, read and checked.
fn read_record(path: &Path) -> Result<Record> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading {}: is this an ISO written by imgmode iso, mounted there?",
            path.display()
        )
    })?;
    let r: Record =
        serde_json::from_slice(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let w = path.display();
    imgmode_support::validate::field(
        &w.to_string(),
        "diskFile",
        &r.disk_file,
        imgmode_support::validate::file_name,
    )?;
    ensure!(
        r.disk_sha256.len() == 64 && r.disk_sha256.bytes().all(|b| b.is_ascii_hexdigit()),
        "{w}: diskSha256 is not a SHA-256 in hex"
    );
    ensure!(
        matches!(r.root.filesystem.as_str(), "ext4" | "xfs"),
        "{w}: root.filesystem {:?} is neither ext4 nor xfs",
        r.root.filesystem
    );
    ensure!(
        r.root.number >= 1 && r.root.start.is_multiple_of(512) && r.root.start < r.disk_size,
        "{w}: root partition {} at byte {} does not fit a disk of {} bytes",
        r.root.number,
        r.root.start,
        r.disk_size
    );
    for (name, v) in [
        ("root.typeCode", &r.root.type_code),
        ("root.label", &r.root.label),
    ] {
        ensure!(
            !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{w}: {name} {v:?} is not a GPT type code or name imgmode writes"
        );
    }
    Ok(r)
}

/// Stream the compressed disk image onto `target` at offset 0 and check its size and digest.
fn write_image(image_file: &Path, target: &File, r: &Record, block: bool) -> Result<()> {
    use sha2::Digest;
    let dec = zstd::stream::read::Decoder::new(File::open(image_file)?)?;
    let mut src = imgmode_support::io::read_ahead(dec);
    let zeros = vec![0u8; CHUNK];
    let mut buf = vec![0u8; CHUNK];
    let mut sha = sha2::Sha256::new();
    let mut at = 0u64;
    loop {
        let n = fill(&mut src, &mut buf)
            .with_context(|| format!("decompressing {}", image_file.display()))?;
        if n == 0 {
            break;
        }
        ensure!(
            at + n as u64 <= r.disk_size,
            "{} holds more than the {} bytes its record says",
            image_file.display(),
            r.disk_size
        );
        let data = &buf[..n];
        sha.update(data);
        // a slice comparison is a memcmp: fast in any build
        if data == &zeros[..n] {
            zero_range(target, at, n as u64, block)?;
        } else {
            target.write_all_at(data, at)?;
        }
        at += n as u64;
    }
    ensure!(
        at == r.disk_size,
        "{} holds {at} bytes; its record says {}: the ISO is damaged, write it again",
        image_file.display(),
        r.disk_size
    );
    let got = hex::encode(sha.finalize());
    ensure!(
        got == r.disk_sha256,
        "{} has SHA-256 {got}; its record says {}: the ISO is damaged, write it again",
        image_file.display(),
        r.disk_sha256
    );
    target.sync_all()?;
    Ok(())
}

/// Read until `buf` is full or the stream ends; the bytes read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `len` bytes at `at` made zero without writing them: a zeroed range on a block device, a hole
/// in a file; written out when the device or filesystem cannot.
fn zero_range(f: &File, at: u64, len: u64, block: bool) -> Result<()> {
    use rustix::fs::FallocateFlags as F;
    let mode = if block {
        F::ZERO_RANGE | F::KEEP_SIZE
    } else {
        F::PUNCH_HOLE | F::KEEP_SIZE
    };
    if rustix::fs::fallocate(f, mode, at, len).is_err() {
        let zeros = vec![0u8; len as usize];
        f.write_all_at(&zeros, at)?;
    }
    Ok(())
}

/// Zero the primary and backup GPT (and the protective MBR): the disk reads as blank.
fn clear_tables(f: &File, disk_bytes: u64) -> Result<()> {
    let head = vec![0u8; (1u64 << 20).min(disk_bytes) as usize];
    f.write_all_at(&head, 0)?;
    let tail = (64u64 << 10).min(disk_bytes);
    f.write_all_at(&vec![0u8; tail as usize], disk_bytes - tail)?;
    f.sync_all()?;
    Ok(())
}

/// Move the backup GPT to the end of the disk, grow the root partition to it and its
/// filesystem with it; the root partition's bytes.
fn grow(disk: &Path, r: &Record) -> Result<u64> {
    let n = r.root.number;
    let info = |what: &str| -> Result<String> {
        Run::new("sgdisk")
            .arg(format!("--info={n}"))
            .arg(disk)
            .read()
            .with_context(|| format!("reading {what} of partition {n} of {}", disk.display()))
    };
    let before = info("the GPT entry")?;
    let guid = field(&before, "Partition unique GUID:")?;
    let first = sector(&field(&before, "First sector:")?)?;
    ensure!(
        first * 512 == r.root.start,
        "partition {n} of {} starts at sector {first}, not where the disk image's root does",
        disk.display()
    );
    Run::new("sgdisk")
        .args(["--move-second-header", &format!("--delete={n}")])
        .arg(format!("--new={n}:{first}:0"))
        .arg(format!("--typecode={n}:{}", r.root.type_code))
        .arg(format!("--change-name={n}:{}", r.root.label))
        .arg(format!("--partition-guid={n}:{guid}"))
        .arg(disk)
        .output()
        .with_context(|| format!("growing partition {n} of {}", disk.display()))?;
    let last = sector(&field(&info("the grown GPT entry")?, "Last sector:")?)?;
    let bytes = (last + 1 - first) * 512;
    let loopdev = Run::new("losetup")
        .args(["--find", "--show"])
        .arg(format!("--offset={}", r.root.start))
        .arg(format!("--sizelimit={bytes}"))
        .arg(disk)
        .read()?
        .trim()
        .to_string();
    let grown = grow_fs(&loopdev, &r.root.filesystem);
    let detached = Run::new("losetup").args(["-d", &loopdev]).output();
    grown.with_context(|| format!("growing the root filesystem of {}", disk.display()))?;
    detached?;
    Ok(bytes)
}

fn grow_fs(dev: &str, fs: &str) -> Result<()> {
    if fs == "xfs" {
        let mnt = tempfile::tempdir()?;
        Run::new("mount").arg(dev).arg(mnt.path()).output()?;
        let grown = Run::new("xfs_growfs").arg(mnt.path()).output();
        let unmounted = Run::new("umount").arg(mnt.path()).output();
        grown?;
        unmounted?;
        return Ok(());
    }
    Run::new("e2fsck").args(["-f", "-p", dev]).output()?;
    Run::new("resize2fs").arg(dev).output()?;
    Ok(())
}

/// The text after `key` on its line of sgdisk's `--info`.
fn field(info: &str, key: &str) -> Result<String> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| anyhow!("sgdisk --info printed no {key:?}"))
}

/// The sector number at the start of sgdisk's `1085440 (at 530.0 MiB)`.
fn sector(v: &str) -> Result<u64> {
    v.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("sgdisk printed sector {v:?}"))
}

/// The one whole disk of this machine that could be the target.
fn pick_disk() -> Result<PathBuf> {
    const NOT_TARGETS: &[&str] = &["loop", "ram", "zram", "sr", "dm-", "md", "nbd", "fd"];
    let sys = Path::new("/sys/block");
    let mut found = Vec::new();
    for e in std::fs::read_dir(sys).context("reading /sys/block")? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if NOT_TARGETS.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let attr = |a: &str| {
            std::fs::read_to_string(sys.join(&name).join(a))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let bytes = attr("size").parse::<u64>().unwrap_or(0) * 512;
        if attr("ro") == "1" || attr("removable") == "1" || bytes == 0 {
            continue;
        }
        if !users(&name)?.is_empty() {
            continue;
        }
        found.push((name, bytes));
    }
    match found.as_slice() {
        [(name, _)] => Ok(PathBuf::from("/dev").join(name)),
        [] => bail!("found no disk to install onto (every disk is read-only, removable or in use); name one with --disk"),
        many => bail!(
            "found {} disks that could be the target ({}); name one: installation-disk under [customizations.installer] in imgmode iso's --config, or --disk",
            many.len(),
            many.iter()
                .map(|(n, b)| format!("/dev/{n} {}", human_size(*b)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imageiso::{RootPartition, DISK_FILE};

    fn record(size: u64, sha: &str) -> Record {
        Record {
            image: "imgmode-base".into(),
            image_digest: "sha256:aa".into(),
            disk_file: DISK_FILE.into(),
            disk_size: size,
            disk_sha256: sha.into(),
            root: RootPartition {
                number: 1,
                start: 1 << 20,
                type_code: "8304".into(),
                label: "root".into(),
                filesystem: "ext4".into(),
            },
            installation_disk: None,
        }
    }

    /// A disk image of `size` bytes with data at a few offsets, compressed into `dir`.
    fn image(dir: &Path, size: u64) -> (PathBuf, Vec<u8>, String) {
        use sha2::Digest;
        let mut raw = vec![0u8; size as usize];
        raw[..4].copy_from_slice(b"head");
        raw[(5 << 20) + 7..(5 << 20) + 11].copy_from_slice(b"mid!");
        let end = raw.len();
        raw[end - 4..].copy_from_slice(b"tail");
        let zst = dir.join(DISK_FILE);
        std::fs::write(&zst, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
        let sha = hex::encode(sha2::Sha256::digest(&raw));
        (zst, raw, sha)
    }

    #[test]
    fn the_image_lands_byte_for_byte_over_old_data() {
        let td = tempfile::tempdir().unwrap();
        let size = 13u64 << 20;
        let (zst, raw, sha) = image(td.path(), size);
        let disk = td.path().join("disk.img");
        // old data everywhere, and a disk larger than the image
        std::fs::write(&disk, vec![0xa5u8; (size + (3 << 20)) as usize]).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        write_image(&zst, &f, &record(size, &sha), false).unwrap();
        let got = std::fs::read(&disk).unwrap();
        assert!(got[..size as usize] == raw[..], "the image differs");
        assert!(got[size as usize..].iter().all(|&b| b == 0xa5));
    }

    #[test]
    fn a_damaged_image_is_refused_and_the_disk_left_blank() {
        let td = tempfile::tempdir().unwrap();
        let size = 9u64 << 20;
        let (zst, _, sha) = image(td.path(), size);
        let disk = td.path().join("disk.img");
        std::fs::write(&disk, vec![0xa5u8; size as usize]).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        let wrong = sha.replace(&sha[..2], if &sha[..2] == "00" { "11" } else { "00" });
        let err = write_image(&zst, &f, &record(size, &wrong), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("the ISO is damaged"), "{err}");
        let err = write_image(&zst, &f, &record(size - 512, &sha), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds more than"), "{err}");
        clear_tables(&f, size).unwrap();
        let got = std::fs::read(&disk).unwrap();
        assert!(got[..1 << 20].iter().all(|&b| b == 0));
        assert!(got[got.len() - (64 << 10)..].iter().all(|&b| b == 0));
    }

    #[test]
    fn records_that_could_lead_writes_astray_are_refused() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join(RECORD);
        let good = record(4 << 30, &"ab".repeat(32));
        for (what, bad, msg) in [
            (
                "a path",
                Record {
                    disk_file: "../etc/shadow".into(),
                    ..good.clone()
                },
                "diskFile",
            ),
            (
                "no digest",
                Record {
                    disk_sha256: "x".into(),
                    ..good.clone()
                },
                "diskSha256",
            ),
            (
                "a root past the end",
                Record {
                    root: RootPartition {
                        start: 5 << 30,
                        ..good.root.clone()
                    },
                    ..good.clone()
                },
                "does not fit a disk of",
            ),
            (
                "an option as a name",
                Record {
                    root: RootPartition {
                        label: "root --zap-all".into(),
                        ..good.root.clone()
                    },
                    ..good.clone()
                },
                "root.label",
            ),
        ] {
            std::fs::write(&p, serde_json::to_string(&bad).unwrap()).unwrap();
            let err = read_record(&p).unwrap_err().to_string();
            assert!(err.contains(msg), "{what}: {err}");
        }
        std::fs::write(&p, serde_json::to_string(&good).unwrap()).unwrap();
        assert_eq!(read_record(&p).unwrap(), good);
    }

    #[test]
    fn sgdisk_info_is_read() {
        let info = "Partition GUID code: 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 (Linux x86-64 root (/))\nPartition unique GUID: 1B5B2C4D-0000-4000-8000-00000000ABCD\nFirst sector: 1085440 (at 530.0 MiB)\nLast sector: 6287359 (at 3.0 GiB)\n";
        assert_eq!(
            field(info, "Partition unique GUID:").unwrap(),
            "1B5B2C4D-0000-4000-8000-00000000ABCD"
        );
        assert_eq!(
            sector(&field(info, "First sector:").unwrap()).unwrap(),
            1085440
        );
        assert_eq!(
            sector(&field(info, "Last sector:").unwrap()).unwrap(),
            6287359
        );
        assert!(field(info, "Partition name:").is_err());
    }
}
