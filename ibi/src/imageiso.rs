//! `imgmode iso`: an unattended installer ISO for any bootable image (what
//! bootc-image-builder's `anaconda-iso` makes), on imgmode's live ISO.
//!
//! Building ([`create`]):
//! 1. the image becomes a raw disk through `imgmode disk`'s own code ([`imgmode_os::disk`],
//!    `for_installer`): the config's users, groups, filesystem sizes and kernel arguments are
//!    applied there, and the disk is the smallest that holds the image;
//! 2. the raw disk is compressed with zstd into the ISO's `imgmode/disk.raw.zst`, and
//!    `imgmode/install.json` ([`Record`]) records its size and SHA-256, its root partition and
//!    the disk the config names (`[customizations.installer] installation-disk`);
//! 3. a live ISO of the live image (`imgmode-base` unless `--live-image`) whose unit mounts the
//!    ISO by its label and runs `imgmode install-from-iso --reboot` ([`install`]).
//!
//! Installing is [`install::install`]: the disk is claimed as `imgmode ibi install` claims it
//! (refused while anything uses it), the disk image streamed onto it, checked against its
//! SHA-256, and its root partition and filesystem grown to the end of the disk.

use anyhow::{ensure, Context, Result};
use imgmode_image::Store;
use imgmode_os::disk::{self, config::BuildConfig, DiskFormat, DiskOpts};
use imgmode_os::live::{self, LiveFile, LiveOpts, LiveOutcome};
use imgmode_os::partition::{Firmware, Role, RootFs};
use imgmode_support::fs::output_parent;
use imgmode_support::Steps;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub mod install;

/// The ISO's volume label.
pub const LABEL: &str = "imgmode-install";
/// Where the live system mounts the ISO.
pub const ISO_MOUNT: &str = "/run/imgmode/install-iso";
/// The ISO's directory holding the disk image and its record.
pub const ISO_DIR: &str = "imgmode";
/// Where the live system finds that directory (`imgmode install-from-iso`'s default).
pub const ISO_MOUNT_DIR: &str = "/run/imgmode/install-iso/imgmode";
/// The record's file name in [`ISO_DIR`].
pub const RECORD: &str = "install.json";
/// The compressed disk image's file name in [`ISO_DIR`].
pub const DISK_FILE: &str = "disk.raw.zst";
/// The installation unit of the live system.
pub const UNIT: &str = "imgmode-install-from-iso.service";

/// What the ISO installs, as `imgmode/install.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Record {
    /// The image, as `imgmode iso` was given it.
    pub image: String,
    /// Its manifest digest.
    pub image_digest: String,
    /// The compressed disk image, a file name in the same directory.
    pub disk_file: String,
    /// Bytes of the disk image (uncompressed).
    pub disk_size: u64,
    /// SHA-256 (hex) of the uncompressed disk image.
    pub disk_sha256: String,
    /// The root partition, which the install grows to the end of the disk.
    pub root: RootPartition,
    /// The disk the config names; without it, the machine's one disk that could be a target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installation_disk: Option<String>,
}

/// The root partition of the disk image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RootPartition {
    /// 1-based partition number.
    pub number: u32,
    /// First byte.
    pub start: u64,
    /// GPT type code (sgdisk's spelling, e.g. `8304`).
    pub type_code: String,
    /// GPT name and filesystem label.
    pub label: String,
    /// `ext4` or `xfs`.
    pub filesystem: String,
}

#[derive(Debug, Clone)]
pub struct IsoOpts {
    /// The bootable image to install.
    pub image: String,
    pub output: PathBuf,
    /// A bootc-image-builder configuration (users, groups, minsizes, kernel append, and
    /// `[customizations.installer]`).
    pub config: Option<PathBuf>,
    pub kargs: Vec<String>,
    pub root_fs: RootFs,
    /// The reference the installed system follows for upgrades (default: the image).
    pub target_imgref: Option<String>,
    /// The live system's image (the base image by default).
    pub live_image: String,
    pub force: bool,
    pub store: Store,
    pub cache_dir: PathBuf,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedIso {
    pub iso: PathBuf,
    pub record: Record,
    /// Bytes of the compressed disk image on the ISO.
    pub disk_file_bytes: u64,
    pub live: LiveOutcome,
}

/// Write the installer ISO at `o.output`.
pub fn create(o: &IsoOpts, steps: &Steps) -> Result<CreatedIso> {
    ensure!(
        o.force || !o.output.exists(),
        "output {} exists; pass --force to replace it",
        o.output.display()
    );
    output_parent(&o.output)?;
    let installation_disk = match &o.config {
        Some(p) => BuildConfig::load(p)?
            .installation_disk()
            .map(str::to_string),
        None => None,
    };
    // the live system's image is checked before the disk is written
    o.store.resolve(&o.live_image).context("--live-image")?;
    let work = imgmode_support::fs::WorkDir::new(&o.cache_dir.join("work"), "iso-")?;
    let raw = work.path().join("disk.raw");
    let d = disk::build(
        &DiskOpts {
            image: o.image.clone(),
            output: raw.clone(),
            format: DiskFormat::Raw,
            size: None,
            kargs: o.kargs.clone(),
            root_fs: o.root_fs,
            firmware: Firmware::Both,
            root_ssh_key: None,
            root_password_hash: None,
            config: o.config.clone(),
            target_imgref: o.target_imgref.clone(),
            for_installer: true,
            force: true,
            store: o.store.clone(),
            cache_dir: o.cache_dir.clone(),
        },
        steps,
    )?;
    let root = d
        .layout
        .partitions
        .iter()
        .find(|p| p.role == Role::Root)
        .context("the disk's layout has no root partition")?;
    let iso_dir = work.path().join(ISO_DIR);
    std::fs::create_dir(&iso_dir)?;
    steps.step(&format!(
        "compressing the {} disk image (zstd)",
        imgmode_support::size::human_size(d.layout.disk_size)
    ));
    let (sha, size, packed) = compress(&raw, &iso_dir.join(DISK_FILE))?;
    std::fs::remove_file(&raw)?;
    ensure!(
        size == d.layout.disk_size,
        "the raw disk holds {size} bytes, its layout {}",
        d.layout.disk_size
    );
    let record = Record {
        image: o.image.clone(),
        image_digest: d.image_digest.clone(),
        disk_file: DISK_FILE.into(),
        disk_size: size,
        disk_sha256: sha,
        root: RootPartition {
            number: root.number,
            start: root.start,
            type_code: root.type_code.to_string(),
            label: root.label.clone(),
            filesystem: root.filesystem.unwrap_or("ext4").to_string(),
        },
        installation_disk,
    };
    std::fs::write(
        iso_dir.join(RECORD),
        serde_json::to_string_pretty(&record)? + "\n",
    )?;
    let live = live::build(
        &LiveOpts {
            image: o.live_image.clone(),
            output: o.output.clone(),
            label: LABEL.into(),
            title: format!("imgmode: install {}", o.image),
            files: live_files(&record),
            iso_dirs: vec![(ISO_DIR.to_string(), iso_dir)],
            kargs: vec![],
            force: o.force,
            store: o.store.clone(),
            cache_dir: o.cache_dir.clone(),
        },
        steps,
    )?;
    Ok(CreatedIso {
        iso: o.output.clone(),
        record,
        disk_file_bytes: packed,
        live,
    })
}

/// `raw` compressed with zstd into `out`; the raw bytes' SHA-256 (hex) and count, and the
/// compressed size.
fn compress(raw: &Path, out: &Path) -> Result<(String, u64, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut input = std::fs::File::open(raw)?;
    // the disk image holds the config's password hashes, if any: its owner's only
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)?;
    let mut enc = zstd::stream::write::Encoder::new(std::io::BufWriter::new(f), 3)?;
    enc.include_checksum(true)?;
    let mut hashing = imgmode_support::io::HashingWriter::new(&mut enc);
    std::io::copy(&mut input, &mut hashing)?;
    let (sha, total) = hashing.finish()?;
    let mut w = enc.finish()?;
    w.flush()?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok((sha, total, f.metadata()?.len()))
}

/// The live system's files: the ISO's mount unit and the installation unit (enabled).
fn live_files(r: &Record) -> Vec<LiveFile> {
    let unit = format!(
        "# Written by imgmode iso.
[Unit]
Description=imgmode: install {image} from the installer ISO
ConditionKernelCommandLine=imgmode.live={LABEL}
RequiresMountsFor={ISO_MOUNT}
After=systemd-udev-settle.service

[Service]
Type=oneshot
ExecStart=/usr/bin/imgmode install-from-iso --reboot {ISO_MOUNT_DIR}
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
",
        image = r.image.replace('%', "%%").replace('\n', " "),
    );
    vec![
        LiveFile::file(
            &format!(
                "etc/systemd/system/{}",
                crate::installiso::mount_unit_name(ISO_MOUNT)
            ),
            0o644,
            crate::installiso::iso_mount_unit(LABEL, ISO_MOUNT),
        ),
        LiveFile::file(&format!("etc/systemd/system/{UNIT}"), 0o644, unit),
        LiveFile::symlink(
            &format!("etc/systemd/system/multi-user.target.wants/{UNIT}"),
            &format!("../{UNIT}"),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            image: "quay.io/org/os:1".into(),
            image_digest: "sha256:aa".into(),
            disk_file: DISK_FILE.into(),
            disk_size: 3 << 30,
            disk_sha256: "00".repeat(32),
            root: RootPartition {
                number: 4,
                start: 530 << 20,
                type_code: "8304".into(),
                label: "root".into(),
                filesystem: "ext4".into(),
            },
            installation_disk: Some("/dev/vda".into()),
        }
    }

    #[test]
    fn the_mount_directory_is_the_isos_directory_under_its_mount() {
        assert_eq!(ISO_MOUNT_DIR, format!("{ISO_MOUNT}/{ISO_DIR}"));
    }

    #[test]
    fn the_record_reads_back_and_refuses_unknown_fields() {
        let r = record();
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"installationDisk\":\"/dev/vda\""), "{text}");
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
        let extra = text.replacen('{', "{\"wipeAll\":true,", 1);
        let err = serde_json::from_str::<Record>(&extra)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `wipeAll`"), "{err}");
    }

    #[test]
    fn the_live_system_mounts_the_iso_and_runs_the_install_then_reboots() {
        let files = live_files(&record());
        let unit = files
            .iter()
            .find(|f| f.path == format!("etc/systemd/system/{UNIT}"))
            .unwrap();
        let live::Content::File { data, .. } = &unit.content else {
            panic!("not a file")
        };
        let text = String::from_utf8_lossy(data);
        assert!(text.contains(&format!(
            "ExecStart=/usr/bin/imgmode install-from-iso --reboot {ISO_MOUNT_DIR}"
        )));
        assert!(text.contains(&format!("RequiresMountsFor={ISO_MOUNT}")));
        assert!(text.contains(&format!("ConditionKernelCommandLine=imgmode.live={LABEL}")));
        let mount = files
            .iter()
            .find(|f| f.path.ends_with("run-imgmode-install\\x2diso.mount"))
            .expect("the ISO's mount unit");
        let live::Content::File { data, .. } = &mount.content else {
            panic!("not a file")
        };
        let text = String::from_utf8_lossy(data);
        assert!(
            text.contains(&format!("What={}\n", imgmode_os::live::ISO_DIR))
                && text.contains("Options=bind,ro\n")
                && text.contains(LABEL),
            "{text}"
        );
        assert!(files
            .iter()
            .any(|f| f.path == format!("etc/systemd/system/multi-user.target.wants/{UNIT}")));
    }

    #[test]
    fn compress_records_the_raw_bytes_digest() {
        use sha2::Digest;
        let td = tempfile::tempdir().unwrap();
        let raw = td.path().join("disk.raw");
        let f = std::fs::File::create(&raw).unwrap();
        f.set_len(9 << 20).unwrap();
        imgmode_support::fs::write_at(&raw, 5 << 20, b"data in the middle").unwrap();
        let out = td.path().join("disk.raw.zst");
        let (sha, n, packed) = compress(&raw, &out).unwrap();
        assert_eq!(n, 9 << 20);
        let bytes = std::fs::read(&raw).unwrap();
        assert_eq!(sha, hex::encode(sha2::Sha256::digest(&bytes)));
        assert!(packed < 64 << 10, "{packed}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the compressed disk image's mode");
        let back = zstd::decode_all(std::fs::File::open(&out).unwrap()).unwrap();
        assert_eq!(back, bytes);
    }
}
