//! `imgmode ibi install`: image-based installation of a seed onto a disk, the steps of
//! lifecycle-agent's `lca-cli ibi`, run by the installation ISO's unit (or by hand on any
//! machine, onto a block device or a disk image file).
//!
//! Nothing touches the target disk before every check has passed: the configuration, the disk
//! (exists, not in use, big enough for the seed and the extra partition) and the seed's
//! compatibility gates, read from its labels without fetching its layer. Then, in order:
//!
//! 1. disk cleanup (`wipefs` of the disk and its partitions) unless `skipDiskCleanup`;
//! 2. the base OS: imgmode's GPT layout (BIOS boot, ESP, `boot`, `root`) and the extra
//!    partition for container storage (`extraPartitionLabel/Number/Start`), filesystems made;
//! 3. the seed fetched onto the target's root filesystem and its layer unpacked there;
//!    `manifest.json`'s version must equal `seedVersion`;
//! 4. `ostree.tgz` unpacked and `ostree pull-local`ed into the new sysroot's repository;
//! 5. `os-init` of the seed's stateroot, deploy of the seed's booted commit (from
//!    `rpm-ostree.json`) with the kernel arguments of `mco-currentconfig.json` and the seed's
//!    `.origin`;
//! 6. `var.tgz` into the stateroot, `etc.tgz` into the deployment, `etc.deletions` applied;
//!    a mount unit for the extra partition at `/var/lib/containers`;
//! 7. the images of `containers.list` precached into the extra partition;
//! 8. GRUB from the deployment's own files for BIOS and UEFI (the menu is ostree's);
//! 9. the optional post script, then the work files removed and everything unmounted.
//!
//! lca writes RHCOS with coreos-installer first and removes that deployment at the end;
//! imgmode writes the partitions and the bootloader itself from the seed's own commit, so the
//! installed disk holds exactly one deployment and there is no live-OS deployment to remove.
//! A state file (the step log's [`imgmode_support::steplog::StepState`]) records the current
//! step, the steps done with their seconds and, on failure, the error.

use crate::config::{
    ImageBasedInstallationConfig, DEFAULT_EXTRA_PARTITION_NUMBER, DEFAULT_EXTRA_PARTITION_START,
};
use anyhow::{bail, ensure, Context, Result};
use imgmode_image::skopeo::RegistryAuth;
use imgmode_os::partition::{ExtraPartition, Layout, Partition};
use imgmode_support::cmd::Run;
use imgmode_support::size;
use imgmode_support::steplog::StepLog;
use serde::Serialize;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use {imgmode_image::Store, imgmode_support::Steps};

pub(crate) mod disk;
mod steps;

/// Where container storage is mounted on the installed system.
pub const CONTAINER_STORAGE: &str = "/var/lib/containers";
/// The install's record on the installed system (under `/var`): [`Installed`] as JSON.
pub const INSTALL_RECORD: &str = "/var/lib/imgmode/ibi-install.json";
/// The work directory on the target's root filesystem (removed at the end).
const WORK: &str = ".imgmode-ibi";

#[derive(Debug, Clone)]
pub struct InstallOpts {
    pub config: ImageBasedInstallationConfig,
    /// The config file's name, for messages.
    pub config_name: String,
    /// Where the target's filesystems are mounted while installing.
    pub mount_dir: PathBuf,
    /// The state file (current step, steps done, error).
    pub state_file: PathBuf,
    /// Run after everything is written, with the target mounted.
    pub post_script: Option<PathBuf>,
    /// Read the seed from here instead of `seedImage` (the copy embedded in an installation
    /// ISO); `seedImage` is still what the installed system records.
    pub seed_from: Option<String>,
    /// A release payload (mirror directory) to copy onto the container storage partition and
    /// serve on the installed system; the registry's TLS and credentials are read from
    /// `payload_setup`/etc/imgmode/payload (the live system's).
    pub payload: Option<PathBuf>,
    pub payload_setup: PathBuf,
    /// The machine's OCI architecture and FIPS mode (the seed gates).
    pub architecture: String,
    pub fips: bool,
    pub store: Store,
}

/// What was installed.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub disk: String,
    /// `seedImage` as a reference (what the installed system came from).
    pub seed: String,
    /// Where the seed was read from when not from `seedImage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed_from: Option<String>,
    /// The ID of the release payload copied to the disk and served on port 22625.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    pub seed_version: String,
    pub stateroot: String,
    pub commit: String,
    pub kernel_arguments: Vec<String>,
    pub layout: Layout,
    pub precached: Vec<String>,
    pub etc_deleted: usize,
    pub seconds: f64,
}

/// The extra partition the config asks for.
pub fn extra_partition(c: &ImageBasedInstallationConfig) -> ExtraPartition {
    ExtraPartition {
        label: c.extra_partition_label().to_string(),
        number: c
            .extra_partition_number
            .unwrap_or(DEFAULT_EXTRA_PARTITION_NUMBER),
        start: c
            .extra_partition_start
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_EXTRA_PARTITION_START.to_string()),
    }
}

/// Room the root filesystem needs for a seed whose layer is `layer_bytes` (streamed, never
/// stored): the unpacked files, the unpacked repository (ostree.tgz expands about 2.5 times)
/// and the deployment's own files, with 1 GiB to spare.
pub fn root_needed(layer_bytes: u64) -> u64 {
    layer_bytes * 4 + size::GIB
}

/// Size of a block device or image file.
pub(crate) fn disk_size(path: &Path) -> Result<u64> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(f.seek(SeekFrom::End(0))?)
}

/// Filesystems mounted for the install, unmounted in reverse order on drop.
struct Mounts {
    points: Vec<PathBuf>,
}

impl Mounts {
    /// Mount partition `p` of `disk` on `at`: the kernel's partition device when it has one
    /// (see [`disk::partition_device`]), else a loop device at its offset (a disk image file).
    fn mount(&mut self, disk: &Path, p: &Partition, at: &Path) -> Result<()> {
        std::fs::create_dir_all(at)?;
        let mount = match disk::partition_device(disk, p.start, p.size)? {
            Some(dev) => Run::new("mount").arg(dev),
            None => Run::new("mount")
                .arg("-o")
                .arg(format!("loop,offset={},sizelimit={}", p.start, p.size))
                .arg(disk),
        };
        mount
            .arg(at)
            .output()
            .with_context(|| format!("mounting the {} partition on {}", p.label, at.display()))?;
        self.points.push(at.to_path_buf());
        Ok(())
    }

    fn unmount_all(&mut self) -> Result<()> {
        let mut first_err = None;
        while let Some(p) = self.points.pop() {
            if let Err(e) = Run::new("umount").arg(&p).output() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        let _ = self.unmount_all();
    }
}

/// Run the installation.
pub fn install(o: &InstallOpts, steps: &Steps) -> Result<Installed> {
    let mut log = steps::Log {
        file: StepLog::fresh(&o.state_file, Steps::hidden())?,
        steps,
    };
    let r = steps::run(o, &mut log);
    let _ = log.file.finish(&r);
    r
}

/// The seed's booted deployment from `rpm-ostree.json`: (stateroot, checksum).
pub fn booted_deployment(rpm_ostree_json: &str) -> Result<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(rpm_ostree_json).context("parsing the seed's rpm-ostree.json")?;
    let d = v["deployments"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["booted"] == true))
        .context("the seed's rpm-ostree.json has no booted deployment")?;
    let csum = d["checksum"].as_str().unwrap_or_default();
    let os = d["osname"]
        .as_str()
        .or(d["stateroot"].as_str())
        .unwrap_or_default();
    ensure!(
        csum.len() == 64 && csum.bytes().all(|b| b.is_ascii_hexdigit()),
        "the seed's rpm-ostree.json names no valid booted checksum ({csum:?})"
    );
    ensure!(
        !os.is_empty() && !os.contains('/') && !os.starts_with('.'),
        "the seed's rpm-ostree.json names no valid stateroot ({os:?})"
    );
    Ok((os.to_string(), csum.to_string()))
}

/// Kernel arguments for the installed deployment: imgmode's disk arguments (root, consoles),
/// then the seed's `spec.kernelArguments` from `mco-currentconfig.json` (a later argument
/// with the same value is not repeated; `ostree=` and `BOOT_IMAGE=` are ostree's own).
pub fn kernel_arguments(mco_currentconfig: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(mco_currentconfig)
        .context("parsing the seed's mco-currentconfig.json")?;
    let mut out: Vec<String> = imgmode_os::disk::BASE_KARGS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let seed = v["spec"]["kernelArguments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for a in seed.iter().filter_map(|a| a.as_str()) {
        for a in a.split_whitespace() {
            if a.starts_with("ostree=") || a.starts_with("BOOT_IMAGE=") {
                continue;
            }
            if !out.iter().any(|x| x == a) {
                out.push(a.to_string());
            }
        }
    }
    Ok(out)
}

/// `etc.deletions` lines as paths relative to the deployment: each must be an absolute path
/// under `/etc` without `.` or `..` components.
pub fn etc_deletions(text: &str) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        let rel = l.strip_prefix("/etc/").with_context(|| {
            format!(
                "etc.deletions line {}: {l:?} is not a path under /etc",
                i + 1
            )
        })?;
        let p = Path::new(rel);
        ensure!(
            !rel.is_empty()
                && p.components()
                    .all(|c| matches!(c, std::path::Component::Normal(_))),
            "etc.deletions line {}: {l:?} is not a plain path under /etc",
            i + 1
        );
        out.push(Path::new("etc").join(p));
    }
    Ok(out)
}

/// The systemd mount unit for the extra partition.
fn container_storage_unit(label: &str) -> String {
    format!(
        "# Written by imgmode ibi install: container storage on the installer's extra partition.\n\
         [Unit]\nDescription=Container storage (partition {label})\nBefore=local-fs.target\n\n\
         [Mount]\nWhat=/dev/disk/by-partlabel/{label}\nWhere={CONTAINER_STORAGE}\nType=ext4\nOptions=defaults\n\n\
         [Install]\nWantedBy=local-fs.target\n"
    )
}

/// skopeo's credentials from the config: the pull secret as an auth file, the trust bundle as
/// a certificate directory, both in `dir` (private).
pub(crate) fn registry_auth(c: &ImageBasedInstallationConfig, dir: &Path) -> Result<RegistryAuth> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let secret: serde_json::Value = serde_json::from_str(&c.pull_secret)
        .context("pullSecret is not JSON; it must be a pull secret such as {\"auths\":{...}}")?;
    ensure!(
        secret.get("auths").is_some_and(|a| a.is_object()),
        "pullSecret has no \"auths\" object"
    );
    let authfile = dir.join("auth.json");
    imgmode_support::fs::write_private(&authfile, &c.pull_secret)?;
    let cert_dir = match c.additional_trust_bundle.as_deref().map(str::trim) {
        Some(b) if !b.is_empty() => {
            ensure!(
                b.contains("-----BEGIN CERTIFICATE-----"),
                "additionalTrustBundle holds no PEM certificate"
            );
            let d = dir.join("certs");
            std::fs::create_dir_all(&d)?;
            std::fs::write(d.join("additional-trust-bundle.crt"), format!("{b}\n"))?;
            Some(d)
        }
        _ => None,
    };
    Ok(RegistryAuth {
        authfile: Some(authfile),
        cert_dir,
        tls_verify: None,
    })
}

/// `wipefs` every partition of a block device, then the disk itself.
fn cleanup_disk(disk: &Path, block: bool) -> Result<()> {
    if block {
        let parts = Run::new("lsblk")
            .args(["-lnpo", "NAME"])
            .arg(disk)
            .read()
            .unwrap_or_default();
        for p in parts
            .lines()
            .skip(1)
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            Run::new("wipefs")
                .args(["--all", "--force", p])
                .output()
                .with_context(|| format!("wiping {p}"))?;
        }
    }
    Run::new("wipefs")
        .args(["--all", "--force"])
        .arg(disk)
        .output()
        .with_context(|| format!("wiping {}", disk.display()))?;
    Ok(())
}

/// The refs to pull from the seed's repository: everything but the deployment refs
/// (`ostree/N/N/N`, which the new sysroot writes itself), plus the booted commit.
fn pull_refs(refs: &str, commit: &str) -> Vec<String> {
    let deployment_ref = |r: &str| {
        r.strip_prefix("ostree/").is_some_and(|rest| {
            rest.split('/').count() == 3 && rest.split('/').all(|n| n.parse::<u32>().is_ok())
        })
    };
    let mut out: Vec<String> = refs
        .lines()
        .map(str::trim)
        .filter(|r| !r.is_empty() && !deployment_ref(r))
        .map(str::to_string)
        .collect();
    out.push(commit.to_string());
    out
}

/// The seed's tarball by stem (`ostree` -> `ostree.tgz` or `ostree.tar.zst`).
fn seed_tarball(files: &Path, stem: &str) -> Result<PathBuf> {
    for name in imgmode_seed::archive::Compression::file_names(stem) {
        let p = files.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("the seed has no {stem}.tgz")
}

fn find_origin(files: &Path, commit: &str) -> Result<PathBuf> {
    for e in std::fs::read_dir(files)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("ostree-{commit}.")) && name.ends_with(".origin") {
            return Ok(files.join(name));
        }
    }
    bail!("the seed has no ostree-{commit}.<serial>.origin for its booted deployment")
}

/// Required seed files missing from the unpacked layer; the tarballs of `streamed` (stems)
/// were unpacked as the layer streamed past, so they are not looked for in `files`.
fn missing_seed_files(files: &Path, streamed: &[&str]) -> Result<Vec<String>> {
    let mut missing: Vec<String> = imgmode_seed::FIXED_FILES
        .iter()
        .filter(|f| **f != "lca-cli" && !files.join(f).exists())
        .map(|f| f.to_string())
        .collect();
    for stem in imgmode_seed::TARBALLS {
        if !streamed.contains(stem) && seed_tarball(files, stem).is_err() {
            missing.push(format!("{stem}.tgz"));
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::seed_reference;

    #[test]
    fn a_registry_seed_is_pulled_by_the_digest_its_gates_read() {
        let d = format!("sha256:{}", "ab".repeat(32));
        for (seed, want) in [
            (
                "docker://quay.io/org/seed:4.17",
                format!("docker://quay.io/org/seed@{d}"),
            ),
            (
                "docker://10.0.2.2:5000/imgmode-seed:4.17.0",
                format!("docker://10.0.2.2:5000/imgmode-seed@{d}"),
            ),
            (
                &format!("docker://quay.io/org/seed@sha256:{}", "cd".repeat(32)),
                format!("docker://quay.io/org/seed@{d}"),
            ),
            ("oci:/run/iso/seed", "oci:/run/iso/seed".to_string()),
        ] {
            assert_eq!(steps::pinned(seed, &d), want, "{seed}");
        }
    }

    #[test]
    fn seed_image_without_transport_is_a_registry_reference() {
        assert_eq!(
            seed_reference("quay.io/org/seed:4.17"),
            "docker://quay.io/org/seed:4.17"
        );
        assert_eq!(
            seed_reference("10.0.2.2:5000/imgmode-seed:4.17.0"),
            "docker://10.0.2.2:5000/imgmode-seed:4.17.0"
        );
        assert_eq!(
            seed_reference("oci:/srv/seed:latest"),
            "oci:/srv/seed:latest"
        );
        assert_eq!(seed_reference("imgmode-seed"), "imgmode-seed");
    }

    #[test]
    fn booted_deployment_and_kernel_arguments() {
        let rpm = r#"{"deployments":[
            {"id":"default-aa.1","osname":"default","checksum":"1111111111111111111111111111111111111111111111111111111111111111","booted":false},
            {"id":"default-bb.0","osname":"default","checksum":"2222222222222222222222222222222222222222222222222222222222222222","booted":true}]}"#;
        let (os, c) = booted_deployment(rpm).unwrap();
        assert_eq!(os, "default");
        assert!(c.starts_with("2222"));
        let e = booted_deployment(r#"{"deployments":[]}"#).unwrap_err();
        assert!(e.to_string().contains("no booted deployment"), "{e}");

        let mco = r#"{"spec":{"kernelArguments":["root=LABEL=root","rw","console=ttyS0,115200n8","imgmode.vmtest=1 quiet","ostree=/ostree/boot.1/x"]}}"#;
        let k = kernel_arguments(mco).unwrap();
        assert_eq!(k[0], "root=LABEL=root");
        assert_eq!(k.iter().filter(|a| *a == "rw").count(), 1, "{k:?}");
        assert!(
            k.ends_with(&["imgmode.vmtest=1".to_string(), "quiet".to_string()]),
            "{k:?}"
        );
        assert!(!k.iter().any(|a| a.starts_with("ostree=")));
    }

    #[test]
    fn etc_deletions_stay_under_etc() {
        let d = etc_deletions("/etc/issue.net\n\n/etc/ssh/sshd_config.d/x.conf\n").unwrap();
        assert_eq!(
            d,
            vec![
                PathBuf::from("etc/issue.net"),
                PathBuf::from("etc/ssh/sshd_config.d/x.conf")
            ]
        );
        for bad in ["/etc/../usr/bin/sh", "/usr/bin/sh", "etc/x", "/etc/"] {
            let e = etc_deletions(bad).unwrap_err().to_string();
            assert!(e.starts_with("etc.deletions line 1:"), "{bad}: {e}");
        }
    }

    #[test]
    fn deployment_refs_are_not_pulled() {
        let refs = "ostree/0/1/0\nostree/container/image/docker_3A__2F__2F_x\nostree/container/blob/sha256_3A_ab\n";
        let r = pull_refs(refs, "abc");
        assert_eq!(
            r,
            vec![
                "ostree/container/image/docker_3A__2F__2F_x",
                "ostree/container/blob/sha256_3A_ab",
                "abc"
            ]
        );
    }

    #[test]
    fn the_extra_partition_defaults_follow_the_installer() {
        let c = ImageBasedInstallationConfig::parse(
            "apiVersion: v1beta1\nkind: ImageBasedInstallationConfig\nseedImage: s/x\nseedVersion: 4.17.0\ninstallationDisk: /dev/vda\npullSecret: '{\"auths\":{}}'\n",
            "cfg",
        )
        .unwrap();
        assert_eq!(
            extra_partition(&c),
            ExtraPartition {
                label: "varlibcontainers".into(),
                number: 5,
                start: "-40G".into()
            }
        );
        let unit = container_storage_unit("varlibcontainers");
        assert!(unit.contains("What=/dev/disk/by-partlabel/varlibcontainers"));
        assert!(unit.contains("Where=/var/lib/containers"));
    }
}
