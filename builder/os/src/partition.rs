//! The GPT layout of imgmode disk images, computed without touching a disk.
//!
//! ```text
//! BIOS-BOOT   1 MiB    EF02  GRUB core.img for BIOS boot      (firmware bios|both)
//! EFI-SYSTEM  127 MiB  EF00  vfat, /EFI/BOOT/BOOTX64.EFI      (firmware uefi|both)
//! boot        512 MiB  8300  ext4 "boot": kernels, BLS entries, loader/syslinux.cfg, grub/
//! root        rest     8304  ext4 or xfs "root": the ostree sysroot
//! ```
//!
//! Both firmware paths run GRUB built from the image's own modules; GRUB reads the boot menu
//! that ostree's syslinux backend rewrites atomically on every deployment change, so upgrades
//! and rollbacks need no bootloader reconfiguration.

use anyhow::{bail, Result};
use imgmode_support::size::{human_size, parse_size, GIB, MIB};
use serde::Serialize;

/// Space reserved at the end of the disk for the backup GPT.
const GPT_TAIL: u64 = MIB;

/// Which firmware the disk must boot from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi,
    Both,
}

impl Firmware {
    pub fn bios(self) -> bool {
        matches!(self, Firmware::Bios | Firmware::Both)
    }
    pub fn uefi(self) -> bool {
        matches!(self, Firmware::Uefi | Firmware::Both)
    }
}

/// The root filesystem type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RootFs {
    Ext4,
    Xfs,
}

impl RootFs {
    pub fn name(self) -> &'static str {
        match self {
            RootFs::Ext4 => "ext4",
            RootFs::Xfs => "xfs",
        }
    }
}

/// What a partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    BiosBoot,
    Esp,
    Boot,
    Root,
    /// The installer's extra partition (container storage), after the root partition.
    Extra,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    pub number: u32,
    pub role: Role,
    /// GPT partition name and filesystem label.
    pub label: String,
    /// sgdisk type code.
    pub type_code: &'static str,
    pub start: u64,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<&'static str>,
}

/// The installer's extra partition (container storage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraPartition {
    pub label: String,
    pub number: u32,
    /// sgdisk-style start: `-40G` (from the end) or `100G` (from the start).
    pub start: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub disk_size: u64,
    pub partitions: Vec<Partition>,
}

pub const ESP_LABEL: &str = "EFI-SYSTEM";
pub const BOOT_LABEL: &str = "boot";
pub const ROOT_LABEL: &str = "root";
pub const BOOT_SIZE: u64 = 512 * MIB;
const ESP_SIZE: u64 = 127 * MIB;
const BIOS_SIZE: u64 = MIB;

impl Layout {
    /// Lay out a disk of `disk_size` bytes; the root partition takes what is left and must
    /// be at least `root_needed` bytes.
    pub fn new(
        disk_size: u64,
        firmware: Firmware,
        root_fs: RootFs,
        root_needed: u64,
    ) -> Result<Self> {
        Self::with_boot_size(disk_size, firmware, root_fs, root_needed, BOOT_SIZE)
    }

    /// The smallest disk (whole MiB) whose root partition holds `root_needed` bytes, with a
    /// `/boot` partition of `boot_size` bytes and `firmware`'s partitions.
    pub fn min_disk_size(firmware: Firmware, root_needed: u64, boot_size: u64) -> u64 {
        let mut fixed = MIB + boot_size;
        if firmware.bios() {
            fixed += BIOS_SIZE;
        }
        if firmware.uefi() {
            fixed += ESP_SIZE;
        }
        (fixed + root_needed + GPT_TAIL).div_ceil(MIB) * MIB
    }

    /// [`Layout::new`] with a `/boot` partition of `boot_size` bytes (whole MiB).
    pub fn with_boot_size(
        disk_size: u64,
        firmware: Firmware,
        root_fs: RootFs,
        root_needed: u64,
        boot_size: u64,
    ) -> Result<Self> {
        let mut parts = Vec::new();
        let mut at = MIB; // first usable aligned offset after the primary GPT
        let mut push = |role, label: &str, type_code, size: u64, fs| {
            let number = parts.len() as u32 + 1;
            parts.push(Partition {
                number,
                role,
                label: label.to_string(),
                type_code,
                start: at,
                size,
                filesystem: fs,
            });
            at += size;
        };
        if firmware.bios() {
            push(Role::BiosBoot, "BIOS-BOOT", "ef02", BIOS_SIZE, None);
        }
        if firmware.uefi() {
            push(Role::Esp, ESP_LABEL, "ef00", ESP_SIZE, Some("vfat"));
        }
        push(Role::Boot, BOOT_LABEL, "8300", boot_size, Some("ext4"));
        let fixed = at;
        let min_disk = Self::min_disk_size(firmware, root_needed, boot_size);
        if disk_size < min_disk {
            bail!(
                "disk size {} is too small for this image: at least {} is needed (root filesystem {}, boot partitions {}); pass --size {}",
                human_size(disk_size),
                human_size(min_disk),
                human_size(root_needed),
                human_size(fixed),
                human_size_arg(min_disk)
            );
        }
        let root_size = (disk_size - GPT_TAIL - at) / MIB * MIB;
        parts.push(Partition {
            number: parts.len() as u32 + 1,
            role: Role::Root,
            label: ROOT_LABEL.to_string(),
            type_code: "8304",
            start: at,
            size: root_size,
            filesystem: Some(root_fs.name()),
        });
        Ok(Self {
            disk_size,
            partitions: parts,
        })
    }

    /// The installer's layout: [`Layout::new`]'s partitions with the root partition ending
    /// where an extra partition (number `number`, GPT name and label `label`) starts.
    /// `start` is sgdisk-style: `-40G` is 40 GiB before the end of the disk, `100G` an
    /// offset from its start. `what` names the disk in messages.
    pub fn with_extra(
        disk_size: u64,
        firmware: Firmware,
        root_needed: u64,
        extra: &ExtraPartition,
        what: &str,
    ) -> Result<Self> {
        let end = disk_size.saturating_sub(GPT_TAIL) / MIB * MIB;
        let fixed = BIOS_SIZE + ESP_SIZE + BOOT_SIZE + MIB;
        // the smallest disk for this start: the partitions, the root minimum, the extra
        // partition (at least 1 GiB when its start is absolute) and the backup GPT
        let (start, min_disk) = match extra.start.strip_prefix('-') {
            Some(back) => {
                let back = parse_size(back)?.div_ceil(MIB) * MIB;
                (end.checked_sub(back), fixed + root_needed + back + GPT_TAIL)
            }
            None => {
                let at = parse_size(&extra.start)? / MIB * MIB;
                (Some(at), at.max(fixed + root_needed) + GIB + GPT_TAIL)
            }
        };
        let start = match start {
            Some(s) if s < end && s >= fixed + root_needed => s,
            _ => bail!(
                "{what} ({}) is too small: the root filesystem needs at least {} before the extra partition, which starts at {} ({}); at least {} is needed, or move the extra partition with extraPartitionStart",
                human_size(disk_size),
                human_size(root_needed),
                extra.start,
                match start {
                    Some(s) if s < end => format!("{} from the end", human_size(end - s)),
                    Some(_) => "past the end of the disk".to_string(),
                    None => "before the start of the disk".to_string(),
                },
                human_size(min_disk),
            ),
        };
        if extra.number == 0 || extra.number > 128 {
            bail!(
                "extraPartitionNumber {} is out of range (1-128)",
                extra.number
            );
        }
        let mut l = Layout::new(start + GPT_TAIL, firmware, RootFs::Ext4, root_needed)?;
        if l.partitions.iter().any(|p| p.number == extra.number) {
            bail!(
                "extraPartitionNumber {} is taken by the {} partition; choose a number above {}",
                extra.number,
                l.partitions[extra.number as usize - 1].label,
                l.partitions.len()
            );
        }
        if l.partitions.iter().any(|p| p.label == extra.label) {
            bail!(
                "extraPartitionLabel {:?} is the name of another partition",
                extra.label
            );
        }
        l.partitions.push(Partition {
            number: extra.number,
            role: Role::Extra,
            label: extra.label.clone(),
            type_code: "8300",
            start,
            size: end - start,
            filesystem: Some("ext4"),
        });
        l.disk_size = disk_size;
        Ok(l)
    }

    pub fn get(&self, role: Role) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.role == role)
    }

    /// sgdisk arguments that create this table on an empty disk. `--clear` starts from an empty
    /// GPT in memory, written once with the new partitions: `--zap-all` wrote the wiped table
    /// first, and sgdisk sleeps a second after each write before asking the kernel to re-read
    /// it (2.2 s against 1.0 s here; both disks it writes are empty or wiped before).
    pub fn sgdisk_args(&self) -> Vec<String> {
        let mut a = vec!["--clear".to_string(), "--disk-guid=R".to_string()];
        for p in &self.partitions {
            a.push(format!(
                "--new={}:{}:{}",
                p.number,
                p.start / 512,
                (p.start + p.size) / 512 - 1
            ));
            a.push(format!("--typecode={}:{}", p.number, p.type_code));
            a.push(format!("--change-name={}:{}", p.number, p.label));
        }
        a
    }
}

/// A size rounded up to a whole MiB, as a `--size` argument.
fn human_size_arg(b: u64) -> String {
    format!("{}M", b.div_ceil(MIB))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        for fw in [Firmware::Both, Firmware::Bios, Firmware::Uefi] {
            let l = Layout::new(10 * GIB, fw, RootFs::Ext4, 2 * GIB).unwrap();
            insta::assert_yaml_snapshot!(format!("layout_{fw:?}").to_lowercase(), l);
            // partitions are contiguous, MiB-aligned and inside the disk
            let mut at = MIB;
            for p in &l.partitions {
                assert_eq!(p.start, at);
                assert_eq!(p.start % MIB, 0);
                at += p.size;
            }
            assert!(at + MIB <= l.disk_size);
        }
    }

    #[test]
    fn sgdisk_arguments() {
        let l = Layout::new(4 * GIB, Firmware::Both, RootFs::Xfs, GIB).unwrap();
        insta::assert_snapshot!(l.sgdisk_args().join("\n"));
    }

    #[test]
    fn too_small_says_how_much_is_needed() {
        let err = Layout::new(GIB, Firmware::Both, RootFs::Ext4, 2 * GIB)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is too small for this image: at least 2.6 GiB is needed"),
            "{err}"
        );
        assert!(err.contains("pass --size 2690M"), "{err}");
    }

    fn extra(start: &str, number: u32) -> ExtraPartition {
        ExtraPartition {
            label: "varlibcontainers".into(),
            number,
            start: start.into(),
        }
    }

    #[test]
    fn extra_partition_takes_the_end_of_the_disk() {
        let l =
            Layout::with_extra(50 * GIB, Firmware::Both, 4 * GIB, &extra("-40G", 5), "d").unwrap();
        let root = l.get(Role::Root).unwrap();
        let x = l.get(Role::Extra).unwrap();
        assert_eq!(x.number, 5);
        assert_eq!(x.label, "varlibcontainers");
        assert_eq!(
            root.start + root.size,
            x.start,
            "root ends where the extra partition starts"
        );
        assert_eq!(
            x.start + x.size,
            50 * GIB - MIB,
            "the backup GPT stays free"
        );
        assert_eq!(x.size, 40 * GIB);
        assert_eq!(l.disk_size, 50 * GIB);
        let args = l.sgdisk_args().join(" ");
        assert!(args.contains("--change-name=5:varlibcontainers"), "{args}");
        // an absolute start
        let l =
            Layout::with_extra(50 * GIB, Firmware::Both, 4 * GIB, &extra("20G", 6), "d").unwrap();
        assert_eq!(l.get(Role::Extra).unwrap().start, 20 * GIB);
    }

    #[test]
    fn extra_partition_errors_say_what_is_needed() {
        let e = Layout::with_extra(
            20 * GIB,
            Firmware::Both,
            4 * GIB,
            &extra("-40G", 5),
            "/dev/vdb",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("/dev/vdb (20.0 GiB) is too small"), "{e}");
        assert!(e.contains("at least 44.6 GiB is needed"), "{e}");
        let e = Layout::with_extra(50 * GIB, Firmware::Both, 4 * GIB, &extra("-40G", 3), "d")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("extraPartitionNumber 3 is taken by the boot partition"),
            "{e}"
        );
        assert!(Layout::with_extra(50 * GIB, Firmware::Both, GIB, &extra("-4X", 5), "d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10G").unwrap(), 10 * GIB);
        assert_eq!(parse_size("512MiB").unwrap(), 512 * MIB);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10Q")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
    }
}
