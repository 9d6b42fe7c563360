//! The formats `imgmode disk` writes: the raw disk [`super::build`] makes, converted to what the
//! platform that consumes it imports.
//!
//! - `raw`, `qcow2`: as written, and through `qemu-img convert`.
//! - `vmdk`: streamOptimized (compressed grains, one pass), the subformat vSphere imports from
//!   an OVA or `govc import.vmdk`.
//! - `vhd`: a fixed VHD (the data as is, then the 512-byte footer) whose virtual size is a
//!   whole number of MiB and equals the data's size exactly (`force_size`: no CHS rounding),
//!   which is what Azure accepts for a page blob; the footer is read back and checked.
//! - `ami`: a raw disk of whole GiB, as `aws ec2 import-snapshot --disk-container Format=raw`
//!   takes it (an EBS volume is a whole number of GiB).
//! - `gce`: `disk.raw` (whole GiB) alone in a gzipped tar of GNU's oldgnu format with its holes
//!   kept sparse, the archive `gcloud compute images create --source-uri` imports. GNU tar
//!   writes it: the tar crate writes no sparse entries, and a 10 GiB disk written dense would
//!   push every hole through gzip.

use anyhow::{bail, Context, Result};
use imgmode_support::cmd::Run;
use imgmode_support::size::{GIB, MIB};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Output format of the disk image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
    /// streamOptimized VMDK (vSphere).
    Vmdk,
    /// Fixed VHD, 1 MiB-aligned (Azure).
    Vhd,
    /// Raw, whole GiB (AWS import-snapshot).
    Ami,
    /// `disk.raw` in a gzipped oldgnu tar (Google Compute Engine).
    Gce,
}

impl DiskFormat {
    /// The name users give with `--format`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Vmdk => "vmdk",
            Self::Vhd => "vhd",
            Self::Ami => "ami",
            Self::Gce => "gce",
        }
    }

    /// The unit the disk's size must be a whole number of for the platform that imports it.
    pub fn size_unit(self) -> u64 {
        match self {
            Self::Ami | Self::Gce => GIB,
            _ => MIB,
        }
    }

    /// `size` rounded up to [`Self::size_unit`].
    pub fn round_size(self, size: u64) -> u64 {
        size.div_ceil(self.size_unit()) * self.size_unit()
    }

    /// The programs the conversion runs.
    pub fn tools(self) -> &'static [&'static str] {
        match self {
            Self::Raw | Self::Ami => &[],
            Self::Qcow2 | Self::Vmdk | Self::Vhd => &["qemu-img"],
            Self::Gce => &["tar", "gzip"],
        }
    }

    /// Is the output the raw disk itself (a rename or a sparse copy)?
    pub fn is_raw(self) -> bool {
        matches!(self, Self::Raw | Self::Ami)
    }
}

/// Write `raw` (a file named `disk.raw`, for `gce`) to `out` in `format`. `raw`'s size must
/// already be a whole number of the format's [`DiskFormat::size_unit`].
pub fn convert(raw: &Path, out: &Path, format: DiskFormat) -> Result<()> {
    let size = std::fs::metadata(raw)?.len();
    if size % format.size_unit() != 0 {
        bail!(
            "internal: the raw disk is {size} bytes, not a whole number of {} as {} needs",
            imgmode_support::size::human_size(format.size_unit()),
            format.name()
        );
    }
    let qemu = |opts: &[&str]| -> Result<()> {
        Run::new("qemu-img")
            .args(["convert", "-f", "raw", "-O"])
            .args(opts)
            .arg(raw)
            .arg(out)
            .output()
            .map(drop)
    };
    match format {
        DiskFormat::Raw | DiskFormat::Ami => {
            // Same filesystem: a rename; otherwise a sparse copy.
            if std::fs::rename(raw, out).is_err() {
                Run::new("cp")
                    .args(["--sparse=always", "--"])
                    .arg(raw)
                    .arg(out)
                    .output()?;
            }
        }
        DiskFormat::Qcow2 => qemu(&["qcow2"])?,
        DiskFormat::Vmdk => qemu(&["vmdk", "-o", "subformat=streamOptimized"])?,
        DiskFormat::Vhd => {
            qemu(&["vpc", "-o", "subformat=fixed,force_size=on"])?;
            check_vhd(out, size).context("checking the VHD footer qemu-img wrote")?;
        }
        DiskFormat::Gce => {
            if raw.file_name().and_then(|n| n.to_str()) != Some("disk.raw") {
                bail!("internal: the GCE archive's member must be named disk.raw");
            }
            let dir = raw.parent().context("the raw disk has no directory")?;
            Run::new("tar")
                .args(["--format=oldgnu", "--sparse", "--create", "--gzip"])
                .arg("--file")
                .arg(out)
                .arg("--directory")
                .arg(dir)
                .arg("disk.raw")
                .output()?;
        }
    }
    Ok(())
}

/// What a VHD footer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdFooter {
    /// The disk's size in bytes (the footer's current size).
    pub current_size: u64,
    /// 2 fixed, 3 dynamic, 4 differencing.
    pub disk_type: u32,
}

/// Read and check the footer of a fixed VHD as Azure takes it: the cookie `conectix`, a valid
/// checksum, type fixed, a current size that is a whole number of MiB, `data_size` when
/// given, and the file exactly that size plus the footer.
pub fn check_vhd(path: &Path, data_size: u64) -> Result<VhdFooter> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len < 512 {
        bail!("{} is too short to hold a VHD footer", path.display());
    }
    f.seek(SeekFrom::Start(len - 512))?;
    let mut b = [0u8; 512];
    f.read_exact(&mut b)?;
    let footer =
        parse_vhd_footer(&b).with_context(|| format!("the VHD footer of {}", path.display()))?;
    if footer.disk_type != 2 {
        bail!(
            "{} is a VHD of type {}, not fixed (2)",
            path.display(),
            footer.disk_type
        );
    }
    if footer.current_size % MIB != 0 || footer.current_size != data_size {
        bail!(
            "{}'s VHD size is {} bytes; expected {data_size}, a whole number of MiB",
            path.display(),
            footer.current_size
        );
    }
    if len != data_size + 512 {
        bail!(
            "{} is {len} bytes; a fixed VHD of {data_size} bytes has {} (data and footer)",
            path.display(),
            data_size + 512
        );
    }
    Ok(footer)
}

/// Parse the 512-byte VHD footer (big-endian fields; the checksum is the ones' complement of
/// the byte sum with the checksum field taken as zero).
pub fn parse_vhd_footer(b: &[u8; 512]) -> Result<VhdFooter> {
    if &b[0..8] != b"conectix" {
        bail!("no `conectix` cookie");
    }
    let be32 = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
    let be64 = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().unwrap());
    let sum: u32 = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .map(|(_, &x)| x as u32)
        .sum();
    if !sum != be32(64) {
        bail!("bad checksum");
    }
    Ok(VhdFooter {
        current_size: be64(48),
        disk_type: be32(60),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgmode_testkit::{require, Need};
    use serde_json::Value;
    use std::io::Write;

    /// A raw disk of `size` bytes with data at its start, in its middle and at its end, holes
    /// between.
    fn raw_disk(dir: &Path, size: u64) -> std::path::PathBuf {
        let p = dir.join("disk.raw");
        let mut f = std::fs::File::create(&p).unwrap();
        f.set_len(size).unwrap();
        for at in [0, size / 2, size - 4096] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&[0xa5u8; 4096]).unwrap();
        }
        p
    }

    /// `qemu-img info` reading `p` as `fmt` (a fixed VHD has its footer at the end only, so
    /// QEMU's probe takes it for raw: its consumers are told the format, as Azure is).
    fn qemu_info(p: &Path, fmt: &str) -> Value {
        let out = Run::new("qemu-img")
            .args(["info", "--output=json", "-f", fmt])
            .arg(p)
            .read()
            .unwrap();
        serde_json::from_str(&out).unwrap()
    }

    /// `qemu-img compare`: the converted disk reads back the raw disk's bytes.
    fn same_content(raw: &Path, out: &Path, fmt: &str) {
        Run::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", fmt])
            .arg(raw)
            .arg(out)
            .output()
            .unwrap();
    }

    #[test]
    fn sizes_round_up_to_the_platform_unit() {
        assert_eq!(DiskFormat::Vhd.round_size(10 * MIB + 1), 11 * MIB);
        assert_eq!(DiskFormat::Gce.round_size(10 * GIB + 1), 11 * GIB);
        assert_eq!(DiskFormat::Ami.round_size(3 * GIB), 3 * GIB);
        assert_eq!(DiskFormat::Qcow2.round_size(MIB), MIB);
    }

    #[test]
    fn vmdk_is_stream_optimized_and_passes_qemu_img_check() {
        require!(Need::Tool("qemu-img"));
        let td = tempfile::tempdir().unwrap();
        let raw = raw_disk(td.path(), 64 * MIB);
        let copy = td.path().join("orig.raw");
        std::fs::copy(&raw, &copy).unwrap();
        let out = td.path().join("disk.vmdk");
        convert(&raw, &out, DiskFormat::Vmdk).unwrap();
        let info = qemu_info(&out, "vmdk");
        assert_eq!(info["format"], "vmdk");
        assert_eq!(info["virtual-size"], 64 * MIB);
        assert_eq!(
            info["format-specific"]["data"]["create-type"], "streamOptimized",
            "{info}"
        );
        Run::new("qemu-img")
            .args(["check", "-f", "vmdk"])
            .arg(&out)
            .output()
            .unwrap();
        same_content(&copy, &out, "vmdk");
        // compressed grains: far smaller than the disk
        assert!(std::fs::metadata(&out).unwrap().len() < 4 * MIB);
    }

    #[test]
    fn vhd_is_fixed_aligned_and_its_footer_valid() {
        require!(Need::Tool("qemu-img"));
        let td = tempfile::tempdir().unwrap();
        let raw = raw_disk(td.path(), 65 * MIB);
        let out = td.path().join("disk.vhd");
        convert(&raw, &out, DiskFormat::Vhd).unwrap();
        let info = qemu_info(&out, "vpc");
        assert_eq!(info["format"], "vpc", "{info}");
        assert_eq!(info["virtual-size"], 65 * MIB, "{info}");
        assert_eq!(std::fs::metadata(&out).unwrap().len(), 65 * MIB + 512);
        let footer = check_vhd(&out, 65 * MIB).unwrap();
        assert_eq!(footer.disk_type, 2);
        same_content(&raw, &out, "vpc");
        // the footer check refuses what Azure would
        let mut b = [0u8; 512];
        let mut f = std::fs::File::open(&out).unwrap();
        f.seek(SeekFrom::End(-512)).unwrap();
        f.read_exact(&mut b).unwrap();
        b[100] ^= 1;
        assert!(parse_vhd_footer(&b)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
        assert!(check_vhd(&out, 64 * MIB).is_err());
        // a size that is not whole MiB is refused before qemu-img runs
        let odd = td.path().join("odd/disk.raw");
        std::fs::create_dir_all(odd.parent().unwrap()).unwrap();
        std::fs::File::create(&odd)
            .unwrap()
            .set_len(MIB + 512)
            .unwrap();
        let err = convert(&odd, &td.path().join("odd.vhd"), DiskFormat::Vhd).unwrap_err();
        assert!(err.to_string().contains("whole number"), "{err}");
    }

    #[test]
    fn gce_is_disk_raw_alone_in_a_sparse_oldgnu_tar_gz() {
        require!(
            Need::Tool("tar"),
            Need::Tool("gzip"),
            Need::Tool("qemu-img")
        );
        let td = tempfile::tempdir().unwrap();
        let raw = raw_disk(td.path(), GIB);
        let copy = td.path().join("orig.raw");
        Run::new("cp")
            .args(["--sparse=always"])
            .arg(&raw)
            .arg(&copy)
            .output()
            .unwrap();
        let out = td.path().join("image.tar.gz");
        convert(&raw, &out, DiskFormat::Gce).unwrap();
        // GNU tar lists exactly one member, disk.raw, of the disk's size
        let listing = Run::new("tar")
            .args(["--list", "--verbose", "--gzip", "--file"])
            .arg(&out)
            .read()
            .unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 1, "{listing}");
        let fields: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(fields[2], GIB.to_string(), "{listing}");
        assert_eq!(*fields.last().unwrap(), "disk.raw", "{listing}");
        // oldgnu (magic "ustar  \0") with a sparse header (type 'S'), holes not stored
        let mut gz = flate2::read::GzDecoder::new(std::fs::File::open(&out).unwrap());
        let mut header = [0u8; 512];
        gz.read_exact(&mut header).unwrap();
        assert_eq!(&header[257..265], b"ustar  \0");
        assert_eq!(header[156], b'S');
        assert!(std::fs::metadata(&out).unwrap().len() < MIB);
        // unpacked, it is the disk
        let x = td.path().join("x");
        std::fs::create_dir(&x).unwrap();
        Run::new("tar")
            .args(["--extract", "--gzip", "--file"])
            .arg(&out)
            .arg("--directory")
            .arg(&x)
            .output()
            .unwrap();
        same_content(&copy, &x.join("disk.raw"), "raw");
    }

    #[test]
    fn ami_is_the_raw_disk() {
        let td = tempfile::tempdir().unwrap();
        let raw = raw_disk(td.path(), GIB);
        let out = td.path().join("disk.ami.raw");
        convert(&raw, &out, DiskFormat::Ami).unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().len(), GIB);
        std::fs::File::create(&raw)
            .unwrap()
            .set_len(GIB + MIB)
            .unwrap();
        let err = convert(&raw, &td.path().join("y"), DiskFormat::Ami).unwrap_err();
        assert!(err.to_string().contains("whole number of 1.0 GiB"), "{err}");
    }
}
