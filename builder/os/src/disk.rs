//! `imgmode disk`: write a bootable disk image (raw, qcow2, vmdk, vhd, ami, gce) from a bootable
//! container image, customised by the flags and by a bootc-image-builder `--config` file.
//!
//! Steps:
//! 1. preflight: root, tools, output path, image reference, and the image's manifest and
//!    config read through containers-image-proxy (bootc label, architecture) before any layer
//!    is fetched;
//! 2. an ostree sysroot is built in a work directory: `init-fs`, stateroot `default`, the image
//!    imported and deployed with ostree-ext (origin `container-image-reference=` records where
//!    upgrades come from), ostree's `syslinux` bootloader backend writing
//!    `/boot/loader/syslinux.cfg`;
//! 3. the deployment gets `/etc/fstab` for `/boot` (and the ESP), the user customizations, and
//!    its stateroot `/var` seeded from the image; the config's users and groups
//!    ([`users`]) and its `/` and `/boot` minimum sizes are applied, and an account or size
//!    the image cannot take is refused before the disk is written;
//! 4. the GPT of [`crate::partition::Layout`] is written with sgdisk, filesystems are made
//!    from directories (`mkfs.ext4 -d`, mkfs.vfat + mtools, mkfs.xfs through a loop device),
//!    and GRUB from the image's own modules is installed for BIOS and UEFI ([`crate::grub`]);
//! 5. the raw disk is converted to the asked [`format`] and renamed over the output path only
//!    when complete.

use crate::partition::{self, Firmware, Layout, Role, RootFs};
use anyhow::{anyhow, bail, Context, Result};
use imgmode_image::store::Store;
use imgmode_support::cmd::{require_root, require_tools, Run};
use imgmode_support::fs::{du_bytes, output_parent};
use imgmode_support::host::host_arch;
use imgmode_support::progress::Steps;
use imgmode_support::size;
use ostree_ext::container::store::{ImageImporter, PrepareResult};
use ostree_ext::container::{self as oc, OstreeImageReference};
use ostree_ext::{gio, ostree};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub mod config;
pub mod format;
mod users;

use config::BuildConfig;
pub use format::DiskFormat;

/// Stateroot (osname) of the deployment written to disks.
pub const STATEROOT: &str = "default";
/// Kernel arguments every disk gets; user `--karg`s follow.
pub const BASE_KARGS: &[&str] = &[
    "root=LABEL=root",
    "rw",
    "console=tty0",
    "console=ttyS0,115200n8",
];
const DEFAULT_SIZE: u64 = 10 * size::GIB;

#[derive(Debug, Clone)]
pub struct DiskOpts {
    pub image: String,
    pub output: PathBuf,
    pub format: DiskFormat,
    pub size: Option<u64>,
    pub kargs: Vec<String>,
    pub root_fs: RootFs,
    pub firmware: Firmware,
    pub root_ssh_key: Option<PathBuf>,
    pub root_password_hash: Option<String>,
    /// A bootc-image-builder build configuration (`config.toml` or `config.json`).
    pub config: Option<PathBuf>,
    /// The reference recorded as the deployment's origin (where upgrades look); defaults to
    /// the source image.
    pub target_imgref: Option<String>,
    /// The disk is the payload of an installer ISO (`imgmode iso`): the config's
    /// `[customizations.installer]` is accepted (it is refused otherwise), and without `size`
    /// the disk is the smallest that holds the image (the installer grows the root partition
    /// to the target disk).
    pub for_installer: bool,
    pub force: bool,
    pub store: Store,
    pub cache_dir: PathBuf,
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiskOutcome {
    pub output: PathBuf,
    pub format: DiskFormat,
    pub image: String,
    pub image_digest: String,
    pub commit: String,
    pub layout: Layout,
    /// Bytes actually allocated by the output file.
    pub bytes_written: u64,
}

/// What [`preflight`] found: the resolved references and the configuration file.
#[derive(Debug)]
pub struct Checked {
    pub imgref: OstreeImageReference,
    pub target: Option<OstreeImageReference>,
    pub config: BuildConfig,
}

/// Check what can be checked without reading the image; nothing is written.
pub fn preflight(opts: &DiskOpts) -> Result<Checked> {
    if opts.output.exists() && !opts.force {
        bail!(
            "output {} exists; pass --force to replace it",
            opts.output.display()
        );
    }
    output_parent(&opts.output)?;
    if let Some(k) = &opts.root_ssh_key {
        let text = std::fs::read_to_string(k)
            .with_context(|| format!("reading --root-ssh-key {}", k.display()))?;
        if let Err(p) = imgmode_support::validate::ssh_public_keys(&text) {
            bail!(
                "--root-ssh-key {} does not look like an OpenSSH public key: it {p}",
                k.display()
            );
        }
    }
    if let Some(h) = &opts.root_password_hash {
        if !h.starts_with('$') || h.contains(':') || h.contains(char::is_control) || h.contains(' ')
        {
            bail!("--root-password-hash must be a crypt(3) hash such as the output of `openssl passwd -6`");
        }
    }
    let config = match &opts.config {
        Some(p) => BuildConfig::load(p)?,
        None => BuildConfig::default(),
    };
    if config.customizations.installer.is_some() && !opts.for_installer {
        bail!(
            "--config {}: customizations.installer is for the installer ISO (imgmode iso); imgmode disk writes no installer: leave it out of this file",
            opts.config.as_deref().unwrap_or(Path::new("")).display()
        );
    }
    for k in opts.kargs.iter().chain(&config.kargs("--config")?) {
        if k.is_empty() || k.contains(char::is_control) || (k.contains(' ') && !k.contains('"')) {
            bail!(
                "invalid kernel argument {}: one argument per --karg, no control characters (quote a value with spaces: name=\"a b\")",
                imgmode_support::validate::shown(k)
            );
        }
    }
    let imgref = opts.store.resolve(&opts.image)?;
    check_local_layout(&imgref)?;
    let target = opts
        .target_imgref
        .as_deref()
        .map(|t| opts.store.resolve(t).context("--target-imgref"))
        .transpose()?;
    require_root("writing a disk image (ostree deploy with file ownership, mkfs)")?;
    let mut tools = vec!["sgdisk", "mkfs.ext4", "skopeo"];
    if opts.firmware.uefi() {
        tools.extend(["mkfs.vfat", "mmd", "mcopy"]);
    }
    if opts.root_fs == RootFs::Xfs {
        tools.extend(["mkfs.xfs", "losetup", "mount"]);
    }
    tools.extend(opts.format.tools());
    if config
        .customizations
        .user
        .iter()
        .any(|u| u.password.as_ref().is_some_and(|p| !p.is_hash()))
    {
        tools.push("openssl");
    }
    require_tools(&tools)?;
    Ok(Checked {
        imgref,
        target,
        config,
    })
}

/// Write the disk image.
pub fn build(opts: &DiskOpts, steps: &Steps) -> Result<DiskOutcome> {
    let Checked {
        imgref,
        target,
        config,
    } = preflight(opts)?;

    let work = imgmode_support::fs::WorkDir::new(&opts.cache_dir.join("work"), "disk-")?;
    let sysroot_dir = work.path().join("sysroot");

    steps.step(&format!("reading {}", imgref.imgref));
    let sysroot = init_sysroot(&sysroot_dir, STATEROOT)?;
    let (commit, digest) = fetch_image(&sysroot.repo(), &imgref, steps)?;
    crate::ostree::require_one_kernel(&sysroot_dir.join("ostree/repo"), &commit)?;

    steps.step("deploying");
    let deploy_dir = deploy(
        opts,
        &config,
        sysroot,
        &sysroot_dir,
        &imgref,
        target.as_ref(),
    )?;
    customize(opts, &config, &sysroot_dir, &deploy_dir)?;

    // Split the tree: /boot goes to its own partition.
    let bootfs = work.path().join("bootfs");
    std::fs::rename(sysroot_dir.join("boot"), &bootfs)?;
    std::fs::create_dir(sysroot_dir.join("boot"))?;
    std::fs::set_permissions(
        sysroot_dir.join("boot"),
        std::fs::Permissions::from_mode(0o755),
    )?;

    let (size, layout) = plan_layout(opts, &config, &sysroot_dir, &bootfs, steps)?;

    steps.step("installing the bootloader files");
    let grub = crate::grub::Grub::from_deployment(&deploy_dir)?;
    grub.write_boot_config(&bootfs)?;

    steps.step(&format!(
        "writing the {} disk ({}, firmware {:?})",
        size::human_size(size),
        opts.format.name(),
        opts.firmware
    ));
    let raw = work.path().join("disk.raw");
    write_disk(&raw, &layout, &sysroot_dir, &bootfs, &grub, work.path())?;
    // a password's hash in the image makes the disk a secret: its owner's only
    let secret = opts.root_password_hash.is_some()
        || config
            .customizations
            .user
            .iter()
            .any(|u| u.password.is_some());
    publish(opts, &raw, secret, steps)?;
    let bytes_written = allocated_bytes(&opts.output)?;
    Ok(DiskOutcome {
        output: opts.output.clone(),
        format: opts.format,
        image: imgref.to_string(),
        image_digest: digest,
        commit,
        layout,
        bytes_written,
    })
}

/// The disk's size and layout: the `/boot` partition at least its `minsize` and big enough
/// for two deployments' kernels, the root at least what the image needs (and its `minsize`),
/// the disk `--size` or what those need, rounded up to the format's size unit.
fn plan_layout(
    opts: &DiskOpts,
    config: &BuildConfig,
    rootdir: &Path,
    bootdir: &Path,
    steps: &Steps,
) -> Result<(u64, Layout)> {
    let root_used = du_bytes(rootdir)?;
    let boot_used = du_bytes(bootdir)?;
    // Room for a second deployment's kernel and initramfs during upgrades.
    let boot_needed = boot_used * 2 + 32 * size::MIB;
    config::check_minsize(config, "/boot", boot_needed)?;
    let boot_size = config
        .minsize("/boot")
        .map_or(partition::BOOT_SIZE, |m| m.div_ceil(size::MIB) * size::MIB)
        .max(partition::BOOT_SIZE);
    if boot_needed > boot_size {
        bail!(
            "the image's kernel and initramfs take {} in /boot; the {} boot partition cannot hold two deployments; give /boot a larger minsize in --config",
            size::human_size(boot_used),
            size::human_size(boot_size)
        );
    }
    // Filesystem overhead plus room for /var and one more deployment's changed files.
    let image_needs = root_used + root_used / 5 + 512 * size::MIB;
    config::check_minsize(config, "/", image_needs)?;
    let root_needed = config.minsize("/").unwrap_or(0).max(image_needs);
    let extra_boot = boot_size - partition::BOOT_SIZE;
    let wanted = match (opts.size, opts.for_installer) {
        (Some(s), _) => s,
        (None, true) => Layout::min_disk_size(opts.firmware, root_needed, boot_size),
        (None, false) => DEFAULT_SIZE.max(root_needed + extra_boot + size::GIB),
    };
    let size = opts.format.round_size(wanted);
    if size != wanted {
        steps.step(&format!(
            "{} disks are whole {}: the disk is {size} bytes, not {wanted}",
            opts.format.name(),
            size::human_size(opts.format.size_unit())
        ));
    }
    let layout = Layout::with_boot_size(size, opts.firmware, opts.root_fs, root_needed, boot_size)?;
    Ok((size, layout))
}

/// Deploy the fetched image into the sysroot with the base, the caller's and the config's
/// kernel arguments; the deployment's directory. The sysroot is unlocked and closed.
fn deploy(
    opts: &DiskOpts,
    config: &BuildConfig,
    sysroot: ostree::Sysroot,
    sysroot_dir: &Path,
    imgref: &OstreeImageReference,
    target: Option<&OstreeImageReference>,
) -> Result<PathBuf> {
    let mut kargs: Vec<String> = BASE_KARGS.iter().map(|s| s.to_string()).collect();
    kargs.extend(opts.kargs.iter().cloned());
    kargs.extend(config.kargs("--config")?);
    let kargs_ref: Vec<&str> = kargs.iter().map(|s| s.as_str()).collect();
    let mut dopts = oc::deploy::DeployOpts::default();
    dopts.kargs = Some(&kargs_ref);
    dopts.target_imgref = target;
    imgmode_support::runtime::block_on(oc::deploy::deploy(
        &sysroot,
        STATEROOT,
        imgref,
        Some(dopts),
    ))?
    .with_context(|| format!("deploying {}", imgref.imgref))?;
    sysroot.load(gio::Cancellable::NONE)?;
    let deployment = sysroot
        .deployments()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("ostree wrote no deployment"))?;
    let deploy_dir = sysroot_dir.join(sysroot.deployment_dirpath(&deployment).as_str());
    sysroot.unlock();
    Ok(deploy_dir)
}

/// The raw disk at the output path in the asked format, through a temporary name in the
/// output's directory (created 0600); readable by all (0644) unless `secret`.
fn publish(opts: &DiskOpts, raw: &Path, secret: bool, steps: &Steps) -> Result<()> {
    let parent = output_parent(&opts.output)?;
    let tmp_out = tempfile::Builder::new()
        .prefix(".imgmode-disk-")
        .tempfile_in(parent)?
        .into_temp_path();
    if !opts.format.is_raw() {
        steps.step(&format!("converting to {}", opts.format.name()));
    }
    format::convert(raw, &tmp_out, opts.format)?;
    let mode = if secret { 0o600 } else { 0o644 };
    std::fs::set_permissions(&tmp_out, std::fs::Permissions::from_mode(mode))?;
    tmp_out
        .persist(&opts.output)
        .with_context(|| format!("writing {}", opts.output.display()))?;
    Ok(())
}

/// `ostree admin init-fs` + `os-init` of `stateroot` with the syslinux backend prepared
/// (`boot/` may be a mounted filesystem). The sysroot is returned locked.
pub fn init_sysroot(dir: &Path, stateroot: &str) -> Result<ostree::Sysroot> {
    std::fs::create_dir_all(dir)?;
    crate::ostree::init_fs(dir)?;
    let repo = dir.join("ostree/repo");
    for (k, v) in [
        ("sysroot.bootloader", "syslinux"),
        ("sysroot.readonly", "false"),
    ] {
        crate::ostree::config_set(&repo, k, v)?;
    }
    // ostree's syslinux backend keeps its menu at boot/loader/syslinux.cfg and expects
    // boot/syslinux/syslinux.cfg to link to it; loader.0 is the empty "before" state.
    let boot = dir.join("boot");
    std::fs::create_dir_all(boot.join("loader.0"))?;
    std::fs::write(boot.join("loader.0/syslinux.cfg"), "")?;
    std::os::unix::fs::symlink("loader.0", boot.join("loader"))?;
    std::fs::create_dir_all(boot.join("syslinux"))?;
    std::os::unix::fs::symlink("../loader/syslinux.cfg", boot.join("syslinux/syslinux.cfg"))?;
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(dir)));
    sysroot.load(gio::Cancellable::NONE)?;
    sysroot.init_osname(stateroot, gio::Cancellable::NONE)?;
    sysroot.load(gio::Cancellable::NONE)?;
    sysroot.lock()?;
    Ok(sysroot)
}

/// Read the manifest and config first (labels, architecture), then import the layers.
/// Returns the merge commit and the manifest digest.
pub(crate) fn fetch_image(
    repo: &ostree::Repo,
    imgref: &OstreeImageReference,
    steps: &Steps,
) -> Result<(String, String)> {
    imgmode_support::runtime::block_on(async {
        // Manifest and config only: refuse what cannot boot before any layer is fetched.
        let (_, _, config) = oc::fetch_manifest_and_config(imgref)
            .await
            .map_err(|e| image_error(imgref, e))?;
        check_config(imgref, &config)?;
        let mut imp = ImageImporter::new(repo, imgref, crate::proxy_config())
            .await
            .map_err(|e| image_error(imgref, e))?;
        let prep = imp.prepare().await.map_err(|e| image_error(imgref, e))?;
        let state = match prep {
            PrepareResult::AlreadyPresent(s) => s,
            PrepareResult::Ready(prep) => {
                steps.step(&format!(
                    "importing {} layer(s) ({})",
                    prep.layers.len() + 1,
                    size::human_size(prep.manifest.layers().iter().map(|l| l.size()).sum())
                ));
                imp.import(prep).await?
            }
        };
        Ok::<_, anyhow::Error>((
            state.merge_commit.clone(),
            state.manifest_digest.to_string(),
        ))
    })?
}

/// What the containers-image library (through skopeo or its image proxy) says when an image is
/// not there, as opposed to unreachable or refused:
/// - `manifest unknown`, `name unknown`: a registry's MANIFEST_UNKNOWN (no such tag or digest)
///   and NAME_UNKNOWN (no such repository);
/// - `no such file or directory`: an `oci:` layout, `oci-archive:` or `dir:` path that is not
///   there;
/// - `no descriptor found`: an `oci:` layout without a manifest of that name;
/// - `no such image`: `containers-storage:` without it;
/// - `not found`: the rest (`docker-archive:` and `containers-storage:` say it so).
///
/// Never "does not exist": Docker Hub says "repository does not exist or may require
/// authorization" for a repository it will not show, which is a credentials problem.
const IMAGE_MISSING: [&str; 6] = [
    "manifest unknown",
    "name unknown",
    "no such file or directory",
    "no descriptor found",
    "no such image",
    "not found",
];

/// Whether an error's text (`{e:#}`, with its causes) says the image is not there
/// ([`IMAGE_MISSING`]); `disk` and `base build --cache-from` decide on it.
pub(crate) fn says_image_missing(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    IMAGE_MISSING.iter().any(|m| text.contains(m))
}

fn image_error(imgref: &OstreeImageReference, e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    if says_image_missing(&text) {
        anyhow!("image {} not found: {text}", imgref.imgref)
    } else {
        explain_config_error(e).context(format!("reading image {}", imgref.imgref))
    }
}

/// The ostree importer's serde message for a config without `history` (optional in the OCI
/// spec, required by the importer), said in words.
pub(crate) fn explain_config_error(e: anyhow::Error) -> anyhow::Error {
    if format!("{e:#}").contains("missing field `history`") {
        e.context("the image's config has no history: the OCI spec allows that, but the ostree importer imgmode deploys with needs it; rebuild the image with podman or buildah (they record it)")
    } else {
        e
    }
}

/// Do an image's labels (looked up by `label`) mark it bootable: `containers.bootc=1`, or
/// the older `ostree.bootable=true`?
pub fn is_bootable<'a>(label: impl Fn(&str) -> Option<&'a str>) -> bool {
    label("containers.bootc") == Some("1") || label("ostree.bootable") == Some("true")
}

/// An `oci:` layout (a local name resolves to one) is checked before any work directory is
/// made: exactly the image its tag names, bootable, for this architecture, and with what the
/// ostree importer needs of its config (`history`, optional in the OCI spec, is required there).
pub fn check_local_layout(imgref: &OstreeImageReference) -> Result<()> {
    use ostree_ext::container::Transport;
    if imgref.imgref.transport != Transport::OciDir {
        return Ok(());
    }
    let (dir, tag) = imgmode_image::imgref::oci_dir_and_tag(&imgref.imgref.name);
    if !dir.join("index.json").is_file() {
        // the importer names a missing layout
        return Ok(());
    }
    let img = imgmode_image::store::OciImage::open_tagged(&dir, tag)?;
    check_config(imgref, &img.config)?;
    if !img.has_history {
        bail!(
            "image {} has no history in its config: the OCI spec allows that, but the ostree importer imgmode deploys with needs it; rebuild the image with podman or buildah (they record it)",
            imgref.imgref
        );
    }
    Ok(())
}

/// Refuse images that are not bootable or not for this architecture.
pub fn check_config(
    imgref: &OstreeImageReference,
    config: &ostree_ext::oci_spec::image::ImageConfiguration,
) -> Result<()> {
    let labels = config
        .config()
        .as_ref()
        .and_then(|c| c.labels().clone())
        .unwrap_or_default();
    if !is_bootable(|k| labels.get(k).map(String::as_str)) {
        bail!(
            "image {} is not bootable: it has neither the label containers.bootc=1 nor ostree.bootable=true; build it FROM a bootc base image such as imgmode-base",
            imgref.imgref
        );
    }
    let arch = config.architecture().to_string();
    if arch != host_arch() {
        bail!(
            "image {} has architecture {arch}; expected {}",
            imgref.imgref,
            host_arch()
        );
    }
    Ok(())
}

/// fstab, the stateroot's /var, root's customizations and the config's accounts.
fn customize(opts: &DiskOpts, config: &BuildConfig, sysroot: &Path, deploy: &Path) -> Result<()> {
    // Like bootc systems, the ESP is not mounted at runtime: only bootloader updates touch it.
    let fstab = format!("LABEL={} /boot ext4 defaults 1 2\n", partition::BOOT_LABEL);
    let etc = deploy.join("etc");
    let existing = std::fs::read_to_string(etc.join("fstab")).unwrap_or_default();
    let kept: String = existing
        .lines()
        .filter(|l| !l.trim_start().starts_with("LABEL=boot") && !l.contains("/boot/efi"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(etc.join("fstab"), format!("{kept}{fstab}"))?;

    let var = sysroot.join("ostree/deploy").join(STATEROOT).join("var");
    // ostree before 2024 does not seed the stateroot /var from the commit; do it once here
    // (cp -n never replaces what ostree itself wrote).
    Run::new("cp")
        .args(["-a", "-n", "--"])
        .arg(format!("{}/.", deploy.join("var").display()))
        .arg(&var)
        .output()
        .context("seeding /var of the stateroot")?;

    if let Some(key) = &opts.root_ssh_key {
        let home = var.join("roothome");
        let ssh = home.join(".ssh");
        std::fs::create_dir_all(&ssh)?;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))?;
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700))?;
        let ak = ssh.join("authorized_keys");
        std::fs::write(&ak, std::fs::read_to_string(key)?)?;
        std::fs::set_permissions(&ak, std::fs::Permissions::from_mode(0o600))?;
    }
    if let Some(hash) = &opts.root_password_hash {
        let shadow = etc.join("shadow");
        let text =
            std::fs::read_to_string(&shadow).context("reading /etc/shadow of the deployment")?;
        let new = set_root_hash(&text, hash)?;
        std::fs::write(&shadow, new)?;
    }
    users::apply(config, deploy, &var)
}

/// Replace root's password field in a shadow file.
pub fn set_root_hash(shadow: &str, hash: &str) -> Result<String> {
    let mut found = false;
    let out: Vec<String> = shadow
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(':').collect();
            if f.first() == Some(&"root") && f.len() > 1 {
                found = true;
                f[1] = hash;
                f.join(":")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        bail!("the image's /etc/shadow has no root entry");
    }
    Ok(out.join("\n") + "\n")
}

fn allocated_bytes(p: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(p)?.blocks() * 512)
}

fn write_disk(
    raw: &Path,
    layout: &Layout,
    rootdir: &Path,
    bootdir: &Path,
    grub: &crate::grub::Grub,
    work: &Path,
) -> Result<()> {
    let f = std::fs::File::create(raw)?;
    f.set_len(layout.disk_size)?;
    drop(f);
    Run::new("sgdisk")
        .args(layout.sgdisk_args())
        .arg(raw)
        .output()?;
    for p in &layout.partitions {
        match p.role {
            Role::BiosBoot => grub.install_bios(raw, p, work)?,
            Role::Esp => {
                mkfs_esp(raw, p)?;
                grub.install_uefi(raw, p, work)?;
            }
            Role::Boot => mkfs_ext4(raw, p, Some(bootdir))?,
            Role::Root => match p.filesystem {
                Some("xfs") => mkfs_xfs(raw, p, rootdir)?,
                _ => mkfs_ext4(raw, p, Some(rootdir))?,
            },
            Role::Extra => mkfs_ext4(raw, p, None)?,
        }
    }
    Ok(())
}

/// Format partition `p` of `disk` (an image file or a block device) as the vfat ESP.
pub fn mkfs_esp(disk: &Path, p: &partition::Partition) -> Result<()> {
    Run::new("mkfs.vfat")
        .args(["-I", "-F", "32", "-s", "1", "-n", &p.label])
        .arg(format!("--offset={}", p.start / 512))
        .arg(disk)
        .arg((p.size / 1024).to_string())
        .output()
        .with_context(|| format!("making the {} filesystem", p.label))?;
    Ok(())
}

/// Make an ext4 filesystem labelled like partition `p` of `disk` (an image file or a block
/// device), filled from `dir` when given.
pub fn mkfs_ext4(disk: &Path, p: &partition::Partition, dir: Option<&Path>) -> Result<()> {
    let mut cmd = Run::new("mkfs.ext4")
        .args(["-F", "-q", "-L", &p.label])
        .arg(format!("-E offset={}", p.start).replace(' ', ""));
    if let Some(dir) = dir {
        cmd = cmd.arg("-d").arg(dir);
    }
    cmd.arg(disk)
        .arg(format!("{}k", p.size / 1024))
        .output()
        .with_context(|| format!("making the {} filesystem", p.label))?;
    Ok(())
}

fn mkfs_xfs(raw: &Path, p: &partition::Partition, dir: &Path) -> Result<()> {
    let loopdev = Run::new("losetup")
        .args(["--find", "--show"])
        .arg(format!("--offset={}", p.start))
        .arg(format!("--sizelimit={}", p.size))
        .arg(raw)
        .read()?
        .trim()
        .to_string();
    let result = (|| -> Result<()> {
        Run::new("mkfs.xfs")
            .args(["-f", "-q", "-L", &p.label, &loopdev])
            .output()?;
        let mnt = tempfile::tempdir()?;
        Run::new("mount").arg(&loopdev).arg(mnt.path()).output()?;
        let copy = Run::new("cp")
            .args(["-a", "--"])
            .arg(format!("{}/.", dir.display()))
            .arg(mnt.path())
            .output();
        let umount = Run::new("umount").arg(mnt.path()).output();
        copy?;
        umount?;
        Ok(())
    })();
    let detach = Run::new("losetup").args(["-d", &loopdev]).output();
    result?;
    detach?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each marker, as the tools print it, reads as a missing image; credentials, trust and
    /// network failures do not, Docker Hub's "does not exist or may require authorization"
    /// among them.
    #[test]
    fn missing_images_are_told_from_unreadable_ones() {
        for missing in [
            "reading manifest latest in 127.0.0.1:5000/x: manifest unknown",
            "initializing source docker://127.0.0.1:5000/nope:1: reading manifest 1 in 127.0.0.1:5000/nope: name unknown: repository name not known to registry",
            "open /tmp/layout/index.json: no such file or directory",
            "choosing image instance: no descriptor found for reference \"other\"",
            "reading image: no such image",
            "Error: docker-archive:/tmp/a.tar: image not found",
        ] {
            assert!(says_image_missing(missing), "{missing}");
        }
        for m in IMAGE_MISSING {
            assert!(says_image_missing(&m.to_uppercase()), "{m}");
        }
        for unreadable in [
            "reading manifest latest in docker.io/library/private: requested access to the resource is denied",
            "repository does not exist or may require 'docker login'",
            "unauthorized: authentication required",
            "pinging container registry 127.0.0.1:5000: Get \"https://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused",
            "tls: failed to verify certificate: x509: certificate signed by unknown authority",
            "open /tmp/layout/index.json: permission denied",
        ] {
            assert!(!says_image_missing(unreadable), "{unreadable}");
        }
    }

    #[test]
    fn root_password_hash_is_set() {
        let s = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n";
        let out = set_root_hash(s, "$6$salt$hash").unwrap();
        assert!(out.starts_with("root:$6$salt$hash:19000:"));
        assert!(out.contains("daemon:*:"));
        assert!(set_root_hash("daemon:*:1::::::\n", "$6$x").is_err());
    }

    fn opts(dir: &Path) -> DiskOpts {
        DiskOpts {
            image: "imgmode-base".into(),
            output: dir.join("disk.qcow2"),
            format: DiskFormat::Qcow2,
            size: None,
            kargs: vec![],
            root_fs: RootFs::Ext4,
            firmware: Firmware::Both,
            root_ssh_key: None,
            root_password_hash: None,
            config: None,
            target_imgref: None,
            for_installer: false,
            force: false,
            store: Store::new(dir.join("state")),
            cache_dir: dir.join("cache"),
        }
    }

    #[test]
    fn existing_output_needs_force() {
        let td = tempfile::tempdir().unwrap();
        let o = opts(td.path());
        std::fs::write(&o.output, "precious").unwrap();
        let err = preflight(&o).unwrap_err().to_string();
        assert!(err.contains("pass --force"), "{err}");
        assert_eq!(std::fs::read_to_string(&o.output).unwrap(), "precious");
    }

    #[test]
    fn bad_customizations_are_refused() {
        let td = tempfile::tempdir().unwrap();
        let mut o = opts(td.path());
        o.root_password_hash = Some("plaintext".into());
        assert!(preflight(&o).unwrap_err().to_string().contains("crypt(3)"));
        let mut o = opts(td.path());
        let key = td.path().join("key.pub");
        std::fs::write(&key, "not a key").unwrap();
        o.root_ssh_key = Some(key);
        assert!(preflight(&o)
            .unwrap_err()
            .to_string()
            .contains("OpenSSH public key"));
        let mut o = opts(td.path());
        o.output = td.path().join("missing-dir/disk.raw");
        assert!(preflight(&o)
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }
}
