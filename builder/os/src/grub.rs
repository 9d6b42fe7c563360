//! GRUB for BIOS and UEFI, built from the image's own GRUB (like bootupd, the bootloader
//! comes from the OS image, never from the build host).
//!
//! Both firmware paths load an image made by `grub-mkimage` with the modules embedded and a
//! tiny embedded config that finds the `boot` filesystem by label and reads `/grub/grub.cfg`
//! there. That file is static: it hands over to `syslinux_configfile /loader/syslinux.cfg`,
//! the menu ostree's syslinux backend rewrites atomically whenever deployments change, so an
//! upgrade or rollback (or a power cut during one) never leaves a stale bootloader menu.
//!
//! BIOS: `boot.img` goes into the first 440 bytes of the protective MBR (partition table
//! kept) with the LBA of `core.img` patched in; `core.img` fills the BIOS boot partition with
//! its first-sector block list pointing at the rest of itself — what `grub-bios-setup` does
//! for an embedding partition. UEFI: the image is `/EFI/BOOT/BOOTX64.EFI` on the ESP, the
//! removable-media path that firmware boots without NVRAM entries.

use crate::partition::{Partition, BOOT_LABEL};
use anyhow::{bail, ensure, Context, Result};
use imgmode_support::cmd::Run;
use std::path::{Path, PathBuf};

const SECTOR: u64 = 512;
/// boot.img: LBA (u64) of core.img's first sector.
const KERNEL_SECTOR_OFFSET: usize = 0x5c;
/// boot.img: the BIOS drive to read from; 0xff means the boot drive.
const BOOT_DRIVE_OFFSET: usize = 0x64;
/// boot.img: jump that rejects drives not reported as hard disks; patched to two NOPs.
const DRIVE_CHECK_OFFSET: usize = 0x66;
/// Bytes of boot code in the MBR; the partition table follows.
const MBR_CODE: usize = 440;
/// core.img (diskboot): the first block list entry, at the end of its first sector.
const BLOCKLIST_OFFSET: usize = 0x200 - 12;
/// Segment the rest of core.img is loaded to (GRUB_BOOT_I386_PC_KERNEL_SEG + 0x20).
const CORE_SEGMENT: u16 = 0x820;

const COMMON_MODULES: &[&str] = &[
    "part_gpt",
    "ext2",
    "search",
    "search_label",
    "normal",
    "configfile",
    "syslinuxcfg",
    "linux",
    "echo",
    "test",
    "serial",
    "terminal",
    "boot",
    "minicmd",
    "cat",
    "ls",
];
const BIOS_MODULES: &[&str] = &["biosdisk", "linux16"];
const UEFI_MODULES: &[&str] = &["fat", "efi_gop"];
/// Live ISOs: the ISO 9660 filesystem, and the MBR/GPT of a hybrid ISO written to a disk.
const ISO_MODULES: &[&str] = &["iso9660", "part_msdos"];

/// The static grub.cfg on the boot partition.
pub const GRUB_CFG: &str = "\
# Written by imgmode. The boot menu is ostree's: /loader/syslinux.cfg on this filesystem,
# replaced atomically whenever deployments change. Do not add entries here.
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=1
# A syslinux DEFAULT without PROMPT translates to top-level linux/initrd commands (syslinux
# boots the default at once), so load it here and boot it. Should the file ever carry a
# menu instead, `boot` fails for want of a kernel and GRUB shows that menu.
syslinux_source /loader/syslinux.cfg
boot
";

/// GRUB as shipped in a deployment.
pub struct Grub {
    root: PathBuf,
}

impl Grub {
    /// Use the GRUB of the deployed tree at `root`.
    pub fn from_deployment(root: &Path) -> Result<Self> {
        let g = Self {
            root: root.to_path_buf(),
        };
        if !g.root.join("usr/bin/grub-mkimage").is_file() {
            bail!("the image ships no GRUB (usr/bin/grub-mkimage); install grub-common, grub-pc-bin and grub-efi-amd64-bin in the image");
        }
        Ok(g)
    }

    fn moddir(&self, platform: &str) -> Result<PathBuf> {
        let d = self.root.join("usr/lib/grub").join(platform);
        if !d.join("kernel.img").is_file() {
            let pkg = if platform == "i386-pc" {
                "grub-pc-bin"
            } else {
                "grub-efi-amd64-bin"
            };
            bail!("the image has no GRUB modules for {platform}; install {pkg} in the image or choose another --firmware");
        }
        Ok(d)
    }

    /// Run the image's grub-mkimage with the image's own dynamic loader and libraries, in a
    /// sandbox ([`Run::sandboxed`]: read-only, no network, writing one fresh directory only); the
    /// embedded config finds the filesystem labelled `label` and reads `prefix`/grub.cfg there.
    #[allow(clippy::too_many_arguments)]
    fn mkimage(
        &self,
        platform: &str,
        format: &str,
        modules: &[&str],
        label: &str,
        prefix: &str,
        out: &Path,
        work: &Path,
    ) -> Result<()> {
        let early = work.join(format!("early-{format}.cfg"));
        std::fs::write(
            &early,
            format!("search --no-floppy --label {label} --set=root\nset prefix=($root){prefix}\n"),
        )?;
        let libdir = self.root.join("usr/lib/x86_64-linux-gnu");
        let ld = libdir.join("ld-linux-x86-64.so.2");
        // the image's code, confined: it reads the deployment and its early config (bound back
        // in: a live installer's target is under the sandbox's fresh /run) and writes one
        // fresh directory
        let made = work.join(format!("mkimage-{format}"));
        let _ = std::fs::remove_dir_all(&made);
        std::fs::create_dir_all(&made)?;
        let made_file = made.join("image");
        Run::sandboxed(
            &ld,
            &[self.root.as_path(), work],
            &[&made],
            imgmode_support::host::root_is_initramfs(),
        )
        .arg("--library-path")
        .arg(&libdir)
        .arg(self.root.join("usr/bin/grub-mkimage"))
        .arg("-O")
        .arg(format)
        .arg("-d")
        .arg(self.moddir(platform)?)
        .arg("-c")
        .arg(&early)
        .arg("-p")
        .arg(prefix)
        .arg("-o")
        .arg(&made_file)
        .args(COMMON_MODULES)
        .args(modules)
        .output()
        .with_context(|| format!("building the GRUB {platform} image"))?;
        // what the sandboxed program left is untrusted: a regular file, read without following
        // a link (nor blocking on a FIFO), or nothing
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(
                    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
                )
                .open(&made_file)
                .with_context(|| {
                    format!("grub-mkimage left no regular file {}", made_file.display())
                })?
        };
        ensure!(
            f.metadata()?.is_file(),
            "grub-mkimage left {} as something else than a regular file",
            made_file.display()
        );
        let mut dest = std::fs::File::create(out)
            .with_context(|| format!("writing the GRUB {platform} image {}", out.display()))?;
        std::io::copy(&mut f, &mut dest)?;
        dest.sync_all()?;
        drop(f);
        std::fs::remove_dir_all(&made)?;
        Ok(())
    }

    /// Write /grub/grub.cfg into the boot filesystem tree.
    pub fn write_boot_config(&self, bootfs: &Path) -> Result<()> {
        let dir = bootfs.join("grub");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("grub.cfg"), GRUB_CFG)?;
        Ok(())
    }

    /// Put boot.img into the MBR and core.img into the BIOS boot partition.
    pub fn install_bios(&self, disk: &Path, part: &Partition, work: &Path) -> Result<()> {
        let core_path = work.join("core.img");
        self.mkimage(
            "i386-pc",
            "i386-pc",
            BIOS_MODULES,
            BOOT_LABEL,
            "/grub",
            &core_path,
            work,
        )?;
        let boot_img = std::fs::read(self.moddir("i386-pc")?.join("boot.img"))?;
        let core = std::fs::read(&core_path)?;
        let mbr = read_at(disk, 0, SECTOR as usize)?;
        let (mbr, core) = patch_bios(&boot_img, &mbr, core, part)?;
        imgmode_support::fs::write_at(disk, part.start, &core)?;
        imgmode_support::fs::write_at(disk, 0, &mbr)?;
        Ok(())
    }

    /// Put BOOTX64.EFI on the (already formatted) ESP.
    pub fn install_uefi(&self, disk: &Path, part: &Partition, work: &Path) -> Result<()> {
        let efi = work.join("BOOTX64.EFI");
        self.mkimage(
            "x86_64-efi",
            "x86_64-efi",
            UEFI_MODULES,
            BOOT_LABEL,
            "/grub",
            &efi,
            work,
        )?;
        let img = format!("{}@@{}", disk.display(), part.start);
        put_removable_efi(&img, &efi)?;
        Ok(())
    }
}

/// GRUB for a live ISO (El Torito): the BIOS no-emulation boot image and the FAT image
/// holding `/EFI/BOOT/BOOTX64.EFI`, both finding the ISO by its volume label and reading
/// `/boot/grub/grub.cfg` there.
pub struct IsoBoot {
    pub eltorito: PathBuf,
    pub efi_img: PathBuf,
    /// The hybrid MBR code (`boot_hybrid.img`) that lets BIOS boot the ISO written to a disk.
    pub hybrid_mbr: PathBuf,
}

impl Grub {
    /// Build the El Torito images for an ISO labelled `label` into `work`.
    pub fn iso_images(&self, label: &str, work: &Path) -> Result<IsoBoot> {
        if label.is_empty() || label.contains(|c: char| c.is_whitespace() || c == ')') {
            bail!("invalid ISO volume label {label:?}");
        }
        let eltorito = work.join("eltorito.img");
        let mut bios: Vec<&str> = BIOS_MODULES.to_vec();
        bios.extend(ISO_MODULES);
        self.mkimage(
            "i386-pc",
            "i386-pc-eltorito",
            &bios,
            label,
            "/boot/grub",
            &eltorito,
            work,
        )?;
        let efi = work.join("BOOTX64.EFI");
        let mut uefi: Vec<&str> = UEFI_MODULES.to_vec();
        uefi.extend(ISO_MODULES);
        self.mkimage(
            "x86_64-efi",
            "x86_64-efi",
            &uefi,
            label,
            "/boot/grub",
            &efi,
            work,
        )?;
        // a FAT image just big enough for the EFI binary
        let efi_img = work.join("efi.img");
        let kib = (std::fs::metadata(&efi)?.len() / 1024 + 512).div_ceil(64) * 64;
        Run::new("mkfs.vfat")
            .args(["-C", "-n", "IMGMODE-EFI"])
            .arg(&efi_img)
            .arg(kib.to_string())
            .output()
            .context("making the ISO's EFI boot image")?;
        let img = efi_img.display().to_string();
        put_removable_efi(&img, &efi)?;
        let hybrid_mbr = self.moddir("i386-pc")?.join("boot_hybrid.img");
        if !hybrid_mbr.is_file() {
            bail!("the image's GRUB has no i386-pc/boot_hybrid.img (grub-pc-bin)");
        }
        Ok(IsoBoot {
            eltorito,
            efi_img,
            hybrid_mbr,
        })
    }
}

/// Copy `efi` to `/EFI/BOOT/BOOTX64.EFI` (the removable-media path) of the FAT filesystem
/// `img` (an mtools image spec: a file, or `disk@@offset`).
fn put_removable_efi(img: &str, efi: &Path) -> Result<()> {
    Run::new("mmd")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", img, "::/EFI", "::/EFI/BOOT"])
        .output()?;
    Run::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", img])
        .arg(efi)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .output()?;
    Ok(())
}

fn read_at(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; len];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// Compute the MBR (boot code + the disk's partition table) and the patched core image.
pub fn patch_bios(
    boot_img: &[u8],
    mbr: &[u8],
    mut core: Vec<u8>,
    part: &Partition,
) -> Result<(Vec<u8>, Vec<u8>)> {
    if boot_img.len() != SECTOR as usize || mbr.len() != SECTOR as usize {
        bail!("boot.img and the MBR must be one sector each");
    }
    if core.len() < SECTOR as usize {
        bail!("core.img is smaller than a sector");
    }
    core.resize(core.len().div_ceil(SECTOR as usize) * SECTOR as usize, 0);
    if core.len() as u64 > part.size {
        bail!(
            "GRUB core image ({} bytes) does not fit the BIOS boot partition ({} bytes)",
            core.len(),
            part.size
        );
    }
    let core_lba = part.start / SECTOR;
    let sectors = (core.len() as u64 / SECTOR) as u16;
    let mut out = mbr.to_vec();
    out[..MBR_CODE].copy_from_slice(&boot_img[..MBR_CODE]);
    out[KERNEL_SECTOR_OFFSET..KERNEL_SECTOR_OFFSET + 8].copy_from_slice(&core_lba.to_le_bytes());
    out[BOOT_DRIVE_OFFSET] = 0xff;
    out[DRIVE_CHECK_OFFSET] = 0x90;
    out[DRIVE_CHECK_OFFSET + 1] = 0x90;
    let bl = BLOCKLIST_OFFSET;
    core[bl..bl + 8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    core[bl + 8..bl + 10].copy_from_slice(&(sectors - 1).to_le_bytes());
    core[bl + 10..bl + 12].copy_from_slice(&CORE_SEGMENT.to_le_bytes());
    Ok((out, core))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::Role;

    #[test]
    fn bios_patching_keeps_the_partition_table() {
        let boot = vec![0xAAu8; 512];
        let mut mbr = vec![0u8; 512];
        mbr[446..510].fill(0x11);
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        let core = vec![0u8; 512 * 3 + 7];
        let part = Partition {
            number: 1,
            role: Role::BiosBoot,
            label: "BIOS-BOOT".into(),
            type_code: "ef02",
            start: 2048 * 512,
            size: 1024 * 1024,
            filesystem: None,
        };
        let (m, c) = patch_bios(&boot, &mbr, core, &part).unwrap();
        assert_eq!(
            &m[446..512],
            &mbr[446..512],
            "partition table and signature kept"
        );
        assert_eq!(u64::from_le_bytes(m[0x5c..0x64].try_into().unwrap()), 2048);
        assert_eq!(m[0x64], 0xff);
        assert_eq!(&m[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(c.len(), 512 * 4, "padded to whole sectors");
        assert_eq!(
            u64::from_le_bytes(c[0x1f4..0x1fc].try_into().unwrap()),
            2049
        );
        assert_eq!(u16::from_le_bytes(c[0x1fc..0x1fe].try_into().unwrap()), 3);
        assert_eq!(
            u16::from_le_bytes(c[0x1fe..0x200].try_into().unwrap()),
            0x820
        );
    }

    #[test]
    fn oversized_core_is_refused() {
        let part = Partition {
            number: 1,
            role: Role::BiosBoot,
            label: "BIOS-BOOT".into(),
            type_code: "ef02",
            start: 1 << 20,
            size: 1024,
            filesystem: None,
        };
        let err = patch_bios(&[0; 512], &[0; 512], vec![0; 4096], &part).unwrap_err();
        assert!(err.to_string().contains("does not fit"));
    }
}
