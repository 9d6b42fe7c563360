//! Live ISOs: a bootable image's own tree, booted from the ISO with a RAM layer on top.
//!
//! The ISO holds the image's kernel (`/live/vmlinuz`) and its own generic initramfs
//! (`/live/initrd.img`), its root filesystem (all of it but documentation and translations) as
//! a compressed read-only EROFS image (`/live/root.erofs`), and a small uncompressed cpio
//! (`/live/config.img`) the kernel unpacks after the initramfs: the units that mount the root
//! image under a tmpfs layer at `/sysroot` ([`crate::liveroot`]), and the caller's files, which
//! they copy into that layer. systemd then switches root as for an installed system; the ostree
//! layout is undone in the root image (`/usr/etc` becomes `/etc`; the kernel and the
//! initramfs stay out of it). The ISO stays mounted while the live system runs.
//!
//! Booting: GRUB from the image ([`crate::grub::Grub::iso_images`]) as the El Torito BIOS
//! no-emulation image and in a FAT image for UEFI, assembled by xorriso like `grub-mkrescue`
//! does, hybrid (MBR + GPT), so the same file boots from a CD or written to a USB disk.
//! Directories given in [`LiveOpts::iso_dirs`] are added to the ISO filesystem (the live
//! system finds it as `/dev/disk/by-label/<label>`).

use crate::liveroot;
pub use crate::liveroot::{is_live_root, ISO_DIR};
use anyhow::{bail, ensure, Context, Result};
use imgmode_image::cpio::{self, Meta};
use imgmode_image::store::Store;
use imgmode_support::cmd::{require_root, require_tools, Run};
use imgmode_support::progress::Steps;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What a file added to the live root filesystem is.
#[derive(Debug, Clone)]
pub enum Content {
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    Dir(u32),
}

/// A file added to the live root filesystem, at `path` (relative, as the live system sees
/// it: `etc/...`, `root/...`).
#[derive(Debug, Clone)]
pub struct LiveFile {
    pub path: String,
    pub content: Content,
}

impl LiveFile {
    pub fn file(path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            content: Content::File {
                data: data.into(),
                mode,
            },
        }
    }

    pub fn symlink(path: &str, target: &str) -> Self {
        Self {
            path: path.into(),
            content: Content::Symlink(target.into()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LiveOpts {
    pub image: String,
    pub output: PathBuf,
    /// The ISO's volume label (how GRUB and the live system find it).
    pub label: String,
    /// The boot menu entry's title.
    pub title: String,
    pub files: Vec<LiveFile>,
    /// Directories added to the ISO filesystem: (path on the ISO, directory on this host).
    pub iso_dirs: Vec<(String, PathBuf)>,
    /// Kernel arguments after the live system's own.
    pub kargs: Vec<String>,
    pub force: bool,
    pub store: Store,
    pub cache_dir: PathBuf,
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveOutcome {
    pub output: PathBuf,
    pub image: String,
    pub image_digest: String,
    pub commit: String,
    pub kernel: String,
    /// Bytes of the root filesystem tree, and of its compressed archive.
    pub rootfs_tree_bytes: u64,
    pub rootfs_bytes: u64,
    pub iso_bytes: u64,
}

/// The kernel arguments of every live system.
pub fn live_kargs(label: &str) -> Vec<String> {
    vec![
        "console=tty0".into(),
        "console=ttyS0,115200n8".into(),
        format!("imgmode.live={label}"),
        format!("modules-load={}", liveroot::EARLY_MODULES.join(",")),
    ]
}

/// Volume labels: what xorriso, GRUB's `search --label` and udev's by-label all take.
pub fn check_label(label: &str) -> Result<()> {
    ensure!(
        !label.is_empty()
            && label.len() <= 32
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "invalid ISO volume label {label:?}: 1 to 32 letters, digits, '-' or '_'"
    );
    Ok(())
}

/// Write the live ISO.
pub fn build(opts: &LiveOpts, steps: &Steps) -> Result<LiveOutcome> {
    let parent = check_opts(opts)?;
    let imgref = opts.store.resolve(&opts.image)?;
    require_root("writing a live ISO (the image's files keep their owners)")?;
    require_tools(&[
        "skopeo",
        "xorriso",
        "mkfs.vfat",
        "mmd",
        "mcopy",
        "mkfs.erofs",
    ])?;

    let work = imgmode_support::fs::WorkDir::new(&opts.cache_dir.join("work"), "live-")?;
    let w = work.path();
    let cache_key = match imgmode_image::imgref::parse(&opts.image)? {
        imgmode_image::imgref::UserImageRef::Local(name) => Some(opts.store.inspect(&name)?.digest),
        imgmode_image::imgref::UserImageRef::Remote(_) => None,
    };
    let root = match cache_key {
        Some(digest) => cached_root(opts, &imgref, &digest, steps)?,
        None => {
            steps.step(&format!("reading {}", imgref.imgref));
            prepare_root(&imgref, w, &w.join("root"), steps)?
        }
    };
    let tree = root.dir.join("tree");
    let kver = root.meta.kernel.clone();

    let iso = w.join("iso");
    std::fs::create_dir_all(iso.join("boot/grub"))?;
    std::fs::create_dir_all(iso.join("live"))?;
    std::fs::copy(
        tree.join(format!("usr/lib/modules/{kver}/vmlinuz")),
        iso.join("live/vmlinuz"),
    )?;
    link_or_copy(
        &tree.join(format!("usr/lib/modules/{kver}/initramfs.img")),
        &iso.join(liveroot::INITRD),
    )?;
    let rootfs = iso.join(liveroot::ROOT_IMAGE);
    link_or_copy(&root.dir.join(ROOTFS), &rootfs)?;
    let rootfs_bytes = std::fs::metadata(&rootfs)?.len();
    let config = iso.join("live/config.img");
    let mut files = opts.files.clone();
    files.extend(updated_stamps());
    files.extend(masked_in_live());
    write_config(&tree, &files, &opts.label, &config)?;

    steps.step("building GRUB for BIOS and UEFI from the image");
    let boot = write_boot(opts, &tree, w, &iso)?;

    steps.step("writing the ISO (xorriso)");
    write_iso(opts, parent, &iso, &boot)?;
    let RootMeta {
        commit,
        digest,
        kernel,
        tree_bytes,
    } = root.meta.clone();
    Ok(LiveOutcome {
        output: opts.output.clone(),
        image: imgref.to_string(),
        image_digest: digest,
        commit,
        kernel,
        rootfs_tree_bytes: tree_bytes,
        rootfs_bytes,
        iso_bytes: std::fs::metadata(&opts.output)?.len(),
    })
}

/// `/etc/.updated` and `/var/.updated` as systemd-update-done writes them, for the image's
/// `/usr` (mtime 0, as ostree keeps it): the image's caches are current, so the units of
/// `ConditionNeedsUpdate=` (ldconfig, the journal catalog: seconds under emulation, in the way
/// of sysinit.target and so of the install) do not run at every boot of a live system.
fn updated_stamps() -> Vec<LiveFile> {
    let stamp = "# This file was created by imgmode for the live system, as systemd-update-done\n\
                 # would: /usr's modification time, for which /etc and /var are up to date.\n\
                 TIMESTAMP_NSEC=0\n";
    ["etc/.updated", "var/.updated"]
        .iter()
        .map(|p| LiveFile::file(p, 0o644, stamp))
        .collect()
}

/// Generators the image has that have nothing to do in a live system, masked there (each is a
/// process systemd waits for before it starts any unit, and under emulation their start-up
/// is most of the switch to the live root):
/// - `ostree-system-generator`: the live root is no ostree deployment;
/// - `systemd-gpt-auto-generator`: the root is the RAM layer's overlay, and no partition of
///   this machine's disks (an installation target among them) is to be mounted by type;
/// - `systemd-hibernate-resume-generator`: a live system resumes nothing;
/// - `systemd-ssh-generator`: SSH over AF_VSOCK and a local socket; the live system's SSH
///   is `ssh.service` (systemd 257's generator also fails on a VM without a vsock CID);
/// - `systemd-system-update-generator`: no offline update runs in a live system;
/// - `systemd-tpm2-generator`: nothing in a live system waits for a TPM.
pub(crate) const MASKED_GENERATORS: &[&str] = &[
    "ostree-system-generator",
    "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator",
    "systemd-ssh-generator",
    "systemd-system-update-generator",
    "systemd-tpm2-generator",
];

/// Units the image has that a live system has no use for, masked there: each would start (a
/// process read from the ISO) while the live system's own work starts, or fire later on a
/// timer:
/// - LVM's monitoring and the orderly shutdown of device-mapper stacks (`lvm2-monitor`,
///   `blk-availability`): a live system sets up none;
/// - `systemd-binfmt`, `e2scrub_reap`: no foreign binaries, no ext4 snapshot of its own;
/// - the periodic timers (package lists, man pages, filesystem checks and trims, backups):
///   none of them is for a system that lives in RAM until its next boot.
pub(crate) const MASKED_UNITS: &[&str] = &[
    "lvm2-monitor.service",
    "blk-availability.service",
    "systemd-binfmt.service",
    "e2scrub_reap.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "man-db.timer",
    "xfs_scrub_all.timer",
];

/// [`MASKED_GENERATORS`] and [`MASKED_UNITS`] as links to `/dev/null` in
/// `/etc/systemd/system-generators` and `/etc/systemd/system`.
fn masked_in_live() -> Vec<LiveFile> {
    let generators = MASKED_GENERATORS
        .iter()
        .map(|g| format!("etc/systemd/system-generators/{g}"));
    let units = MASKED_UNITS
        .iter()
        .map(|u| format!("etc/systemd/system/{u}"));
    generators
        .chain(units)
        .map(|p| LiveFile::symlink(&p, "/dev/null"))
        .collect()
}

/// The options' checks, before anything is read: label, output, kernel arguments, ISO
/// directories. Returns the output's directory.
fn check_opts(opts: &LiveOpts) -> Result<&Path> {
    check_label(&opts.label)?;
    if opts.output.exists() && !opts.force {
        bail!(
            "output {} exists; pass --force to replace it",
            opts.output.display()
        );
    }
    let parent = imgmode_support::fs::output_parent(&opts.output)?;
    for k in &opts.kargs {
        ensure!(
            !k.is_empty() && !k.contains(['\n', '\'', '"', ';']),
            "invalid kernel argument {k:?}"
        );
    }
    for (p, d) in &opts.iso_dirs {
        ensure!(
            d.is_dir(),
            "{} (for {p} on the ISO) is not a directory",
            d.display()
        );
    }
    Ok(parent)
}

/// Fetch the image into a fresh repository in `w`, check its tree out at `dir/tree` and archive
/// it as the root image `dir/root.erofs`: the live root, described by `dir/meta.json`.
fn prepare_root(
    imgref: &ostree_ext::container::OstreeImageReference,
    w: &Path,
    dir: &Path,
    steps: &Steps,
) -> Result<LiveRoot> {
    let repo_dir = w.join("repo");
    crate::ostree::init_repo(&repo_dir, "bare")?;
    let repo = crate::ostree::open_repo(&repo_dir)?;
    let (commit, digest) = crate::disk::fetch_image(&repo, imgref, steps)?;
    std::fs::create_dir_all(dir)?;
    let tree = dir.join("tree");
    // a hard-link checkout: the tree keeps its files when the repository goes
    crate::ostree::checkout(&repo, &commit, &tree).context("checking out the image's tree")?;
    let kernel = kernel_version(&tree)?;
    steps.step("writing the root image (EROFS, LZ4HC)");
    let tree_bytes =
        liveroot::write_root_image(&tree, &kernel, &dir.join("stage"), &dir.join(ROOTFS))?;
    let meta = RootMeta {
        commit,
        digest,
        kernel,
        tree_bytes,
    };
    std::fs::write(dir.join(META), serde_json::to_vec(&meta)?)?;
    Ok(LiveRoot {
        dir: dir.to_path_buf(),
        meta,
        _lock: None,
    })
}

/// Version of the live root's layout and archive ([`live_name`], [`write_rootfs`]): part of the
/// cache key, so a change of either never reuses an older archive.
const LIVE_ROOT_VERSION: u32 = 3;
/// Live roots kept in the cache (each about the image's size and its archive's).
const KEEP_LIVE_ROOTS: usize = 2;
const ROOTFS: &str = "root.erofs";
const META: &str = "meta.json";

/// What a prepared live root is.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RootMeta {
    commit: String,
    digest: String,
    kernel: String,
    tree_bytes: u64,
}

/// A live root: `dir/tree` (the image's files), `dir/root.erofs` (its root image); a cached
/// one is held under a shared lock, so that no other build evicts it while it is read.
struct LiveRoot {
    dir: PathBuf,
    meta: RootMeta,
    _lock: Option<std::fs::File>,
}

/// The live root of the local image whose manifest digest is `digest`, from the cache
/// (`<cache>/live/`), prepared and stored there first when it is not in it. The image's
/// digest names its contents, so an entry never goes stale; the oldest entries beyond
/// [`KEEP_LIVE_ROOTS`] are removed. An ISO build of an image built earlier skips the import,
/// the checkout and the compression: most of its time.
fn cached_root(
    opts: &LiveOpts,
    imgref: &ostree_ext::container::OstreeImageReference,
    digest: &str,
    steps: &Steps,
) -> Result<LiveRoot> {
    use rustix::fs::{flock, FlockOperation};
    let cache = opts.cache_dir.join("live");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cache)
        .with_context(|| format!("creating {}", cache.display()))?;
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let entry = cache.join(format!("v{LIVE_ROOT_VERSION}-{hex}"));
    let lockfile = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cache.join(".lock"))?;
    let mut stored = false;
    for _ in 0..3 {
        flock(&lockfile, FlockOperation::LockShared).context("locking the live root cache")?;
        if entry.join(META).is_file() {
            // its last use, which eviction goes by
            std::fs::File::options()
                .write(true)
                .open(entry.join(META))?
                .set_modified(std::time::SystemTime::now())?;
            let meta: RootMeta = serde_json::from_slice(&std::fs::read(entry.join(META))?)
                .with_context(|| format!("reading {}", entry.join(META).display()))?;
            if !stored {
                steps.step(&format!(
                    "reusing the live root of {digest} from {} (no import, checkout or archive)",
                    entry.display()
                ));
            }
            return Ok(LiveRoot {
                dir: entry,
                meta,
                _lock: Some(lockfile),
            });
        }
        flock(&lockfile, FlockOperation::Unlock)?;
        steps.step(&format!("reading {} ({digest})", imgref.imgref));
        let work = imgmode_support::fs::WorkDir::new(&opts.cache_dir.join("work"), "liveroot-")?;
        let fresh = work.path().join("root");
        let root = prepare_root(imgref, work.path(), &fresh, steps)?;
        ensure!(
            root.meta.digest == digest,
            "the image changed while it was read ({digest}, then {}); build the ISO again",
            root.meta.digest
        );
        // an entry is whole or absent (eviction renames it away first); when another build
        // stored it meanwhile, that one stays
        if std::fs::rename(&fresh, &entry).is_err() && !entry.join(META).is_file() {
            imgmode_support::fs::remove_tree(&entry)?;
            std::fs::rename(&fresh, &entry)
                .with_context(|| format!("storing {}", entry.display()))?;
        }
        stored = true;
        if flock(&lockfile, FlockOperation::NonBlockingLockExclusive).is_ok() {
            evict_live_roots(&cache, &entry)?;
            flock(&lockfile, FlockOperation::Unlock)?;
        }
    }
    bail!(
        "the live root of {digest} was removed from {} while this build stored it, three times; is another imgmode filling the cache? Try again",
        cache.display()
    )
}

/// Remove the cached live roots beyond the [`KEEP_LIVE_ROOTS`] used last (`keep` always stays),
/// and what an earlier removal left.
fn evict_live_roots(cache: &Path, keep: &Path) -> Result<()> {
    let mut entries = vec![];
    let mut gone = vec![];
    for e in std::fs::read_dir(cache)? {
        let e = e?;
        let p = e.path();
        if p == keep || !e.file_type()?.is_dir() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".evict-") {
            gone.push(p);
            continue;
        }
        let used = std::fs::metadata(p.join(META))
            .and_then(|m| m.modified())
            .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
        entries.push((used, p, name));
    }
    entries.sort();
    let n = entries.len().saturating_sub(KEEP_LIVE_ROOTS - 1);
    for (_, p, name) in entries.into_iter().take(n) {
        // renamed first: a removal cut short leaves no entry that looks whole
        let to = cache.join(format!(".evict-{name}"));
        std::fs::rename(&p, &to).with_context(|| format!("removing {}", p.display()))?;
        gone.push(to);
    }
    for p in gone {
        imgmode_support::fs::remove_tree(&p)?;
    }
    Ok(())
}

/// Hard-link `from` at `to` (same filesystem), or copy it.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// GRUB's El Torito and UEFI images from the image's tree into `iso`, with the menu.
fn write_boot(opts: &LiveOpts, tree: &Path, w: &Path, iso: &Path) -> Result<crate::grub::IsoBoot> {
    let grub = crate::grub::Grub::from_deployment(tree)?;
    let gwork = w.join("grub");
    std::fs::create_dir_all(&gwork)?;
    let boot = grub.iso_images(&opts.label, &gwork)?;
    std::fs::rename(&boot.eltorito, iso.join("boot/grub/eltorito.img"))?;
    std::fs::rename(&boot.efi_img, iso.join("boot/efi.img"))?;
    let mut kargs = live_kargs(&opts.label);
    kargs.extend(opts.kargs.iter().cloned());
    std::fs::write(
        iso.join("boot/grub/grub.cfg"),
        grub_cfg(&opts.title, &kargs),
    )?;
    Ok(boot)
}

/// The hybrid ISO of `iso` (and the extra directories) by xorriso, written beside the output
/// and renamed to it.
fn write_iso(
    opts: &LiveOpts,
    parent: &Path,
    iso: &Path,
    boot: &crate::grub::IsoBoot,
) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix(".imgmode-iso-")
        .tempfile_in(parent)?
        .into_temp_path();
    let mut x = Run::new("xorriso")
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-graft-points",
            "-iso-level",
            "3",
        ])
        .args(["-V", &opts.label, "-r"])
        .args(["-b", "boot/grub/eltorito.img", "-no-emul-boot"])
        .args([
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "--grub2-boot-info",
        ])
        .arg("--grub2-mbr")
        .arg(&boot.hybrid_mbr)
        .args([
            "--efi-boot",
            "boot/efi.img",
            "-efi-boot-part",
            "--efi-boot-image",
        ])
        .arg("--protective-msdos-label")
        .arg("-o")
        .arg(&*tmp)
        .arg(iso);
    for (p, d) in &opts.iso_dirs {
        x = x.arg(format!("/{}={}", p.trim_matches('/'), d.display()));
    }
    x.output().context("xorriso could not write the ISO")?;
    // the live system's configuration may hold secrets (a pull secret, a registry's TLS key):
    // the ISO stays the owner's only, as tempfile made it
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    tmp.persist(&opts.output)
        .with_context(|| format!("writing {}", opts.output.display()))?;
    Ok(())
}

/// The one kernel version under usr/lib/modules (with its initramfs, as a bootable image has).
fn kernel_version(tree: &Path) -> Result<String> {
    let mut found = vec![];
    for e in std::fs::read_dir(tree.join("usr/lib/modules"))? {
        let e = e?;
        if e.path().join("vmlinuz").is_file() {
            found.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    match found.as_slice() {
        [k] => {
            // a bootable image (what `imgmode disk` and the installer require) also ships its
            // initramfs beside the kernel
            ensure!(
                tree.join(format!("usr/lib/modules/{k}/initramfs.img"))
                    .is_file(),
                "the image has no /usr/lib/modules/{k}/initramfs.img"
            );
            Ok(k.clone())
        }
        _ => bail!(
            "the image has {} kernels under /usr/lib/modules; a live ISO needs exactly one",
            found.len()
        ),
    }
}

/// The menu: one entry, booted after a second (as the installed disk's menu is; a key stops
/// the countdown to edit the entry), on the serial console too.
pub fn grub_cfg(title: &str, kargs: &[String]) -> String {
    let title = title.replace(['\'', '\n'], " ");
    format!(
        "# Written by imgmode.
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=1
menuentry '{title}' {{
  linux /live/vmlinuz {}
  initrd /{} /live/config.img
}}
",
        kargs.join(" "),
        liveroot::INITRD
    )
}

/// The tree path holding live path `path` (`etc/x` is `usr/etc/x`), symlinks in its parents
/// followed (`root` -> `var/roothome`); the result is the live path to write.
fn resolve(tree: &Path, path: &str) -> Result<String> {
    let mut parts: Vec<String> = path.split('/').map(str::to_string).collect();
    let mut i = 0;
    let mut hops = 0;
    while i + 1 < parts.len() {
        match std::fs::read_link(tree.join(tree_path(&parts[..=i].join("/")))) {
            Ok(t) => {
                hops += 1;
                ensure!(hops < 20, "too many symlinks resolving {path} in the image");
                let t = t.to_string_lossy().into_owned();
                let base: Vec<String> = if let Some(abs) = t.strip_prefix('/') {
                    abs.split('/').map(str::to_string).collect()
                } else {
                    let mut b: Vec<String> = parts[..i].to_vec();
                    for c in t.split('/') {
                        match c {
                            "" | "." => {}
                            ".." => {
                                b.pop();
                            }
                            c => b.push(c.to_string()),
                        }
                    }
                    b
                };
                let rest = parts[i + 1..].to_vec();
                parts = base.into_iter().filter(|c| !c.is_empty()).collect();
                parts.extend(rest);
                i = 0;
            }
            Err(_) => i += 1,
        }
    }
    Ok(parts.join("/"))
}

/// The live system's second archive, uncompressed: the initrd's units for the ISO labelled
/// `label` ([`liveroot::write_initrd_units`]) and the caller's files under
/// [`liveroot::FILES_DIR`], with their parent directories as the image has them (or root-owned
/// 0755); the initrd copies them into the live root's RAM layer.
fn write_config(tree: &Path, files: &[LiveFile], label: &str, out: &Path) -> Result<()> {
    let mut w = cpio::Writer::new(std::io::BufWriter::new(std::fs::File::create(out)?));
    liveroot::write_initrd_units(&mut w, label)?;
    let top = liveroot::FILES_DIR;
    w.dir(top, &Meta::root(0o755))?;
    let mut made = std::collections::BTreeSet::new();
    for f in files {
        ensure!(
            !f.path.is_empty()
                && !f.path.starts_with('/')
                && !f
                    .path
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == ".."),
            "invalid live file path {:?}",
            f.path
        );
        let path = resolve(tree, &f.path)?;
        let comps: Vec<&str> = path.split('/').collect();
        for n in 1..comps.len() {
            let d = comps[..n].join("/");
            if made.insert(d.clone()) {
                let m = match std::fs::symlink_metadata(tree.join(tree_path(&d))) {
                    Ok(md) if md.is_dir() => Meta {
                        mode: md.mode(),
                        uid: md.uid(),
                        gid: md.gid(),
                        mtime: 0,
                    },
                    Ok(_) => bail!("{d} is not a directory in the image"),
                    Err(_) => Meta::root(0o755),
                };
                w.dir(&format!("{top}/{d}"), &m)?;
            }
        }
        let name = format!("{top}/{path}");
        match &f.content {
            Content::File { data, mode } => w.bytes(&name, &Meta::root(*mode), data)?,
            Content::Symlink(t) => w.symlink(&name, t, &Meta::root(0o777))?,
            Content::Dir(mode) => {
                made.insert(path.clone());
                w.dir(&name, &Meta::root(*mode))?
            }
        }
    }
    w.finish()?.flush()?;
    Ok(())
}

/// The image tree's path of a live path (the inverse of [`live_name`]: `etc/x` is `usr/etc/x`).
fn tree_path(live: &str) -> String {
    if live == "etc" || live.starts_with("etc/") {
        format!("usr/{live}")
    } else {
        live.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path) -> LiveOpts {
        LiveOpts {
            image: "imgmode-base".into(),
            output: dir.join("out.iso"),
            label: "T".into(),
            title: "t".into(),
            files: vec![],
            iso_dirs: vec![],
            kargs: vec![],
            force: false,
            store: Store::new(dir.join("state")),
            cache_dir: dir.join("cache"),
        }
    }

    fn stored_root(cache: &Path, name: &str, age_s: u64) -> PathBuf {
        let e = cache.join(name);
        std::fs::create_dir_all(e.join("tree/usr")).unwrap();
        std::fs::write(e.join(ROOTFS), b"archive").unwrap();
        let meta = RootMeta {
            commit: "c".into(),
            digest: format!("sha256:{}", name.trim_start_matches("v1-")),
            kernel: "6.1".into(),
            tree_bytes: 7,
        };
        std::fs::write(e.join(META), serde_json::to_vec(&meta).unwrap()).unwrap();
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(age_s);
        std::fs::File::options()
            .write(true)
            .open(e.join(META))
            .unwrap()
            .set_modified(t)
            .unwrap();
        e
    }

    /// A stored live root is used as it is: the image (here an OCI directory that does not
    /// exist) is not read again, and the entry's last use moves to now.
    #[test]
    fn a_cached_live_root_is_reused_without_reading_the_image() {
        let d = tempfile::tempdir().unwrap();
        let o = opts(d.path());
        let hex = "ab".repeat(32);
        let e = stored_root(
            &o.cache_dir.join("live"),
            &format!("v{LIVE_ROOT_VERSION}-{hex}"),
            3600,
        );
        let imgref = ostree_ext::container::OstreeImageReference::try_from(
            format!(
                "ostree-unverified-image:oci:{}",
                d.path().join("absent").display()
            )
            .as_str(),
        )
        .unwrap();
        let root = cached_root(&o, &imgref, &format!("sha256:{hex}"), &Steps::new(true)).unwrap();
        assert_eq!(root.dir, e);
        assert_eq!(
            (root.meta.kernel.as_str(), root.meta.tree_bytes),
            ("6.1", 7)
        );
        let used = std::fs::metadata(e.join(META)).unwrap().modified().unwrap();
        assert!(used.elapsed().unwrap() < std::time::Duration::from_secs(600));
        // a different digest is not that entry: it is read from the image, which is absent
        let err = cached_root(
            &o,
            &imgref,
            &format!("sha256:{}", "cd".repeat(32)),
            &Steps::new(true),
        )
        .err()
        .expect("an absent image cannot be read");
        assert!(!format!("{err:#}").is_empty());
        assert!(e.join(META).is_file(), "a failed read removes no entry");
    }

    /// Eviction keeps the entry just stored and the roots used last, and removes what an
    /// interrupted removal left.
    #[test]
    fn eviction_keeps_the_live_roots_used_last() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path();
        let fresh = stored_root(cache, "v1-new", 9000);
        let recent = stored_root(cache, "v1-recent", 10);
        stored_root(cache, "v1-old", 5000);
        stored_root(cache, "v1-older", 8000);
        std::fs::create_dir_all(cache.join(".evict-v1-half/tree")).unwrap();
        std::fs::write(cache.join(".lock"), b"").unwrap();
        evict_live_roots(cache, &fresh).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".lock", "v1-new", "v1-recent"]);
        assert!(recent.join(ROOTFS).is_file());
    }

    #[test]
    fn the_live_system_has_its_update_stamps() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        std::fs::create_dir_all(t.join("usr/etc")).unwrap();
        std::fs::create_dir_all(t.join("var")).unwrap();
        let out = t.join("config.img");
        write_config(t, &updated_stamps(), "T", &out).unwrap();
        let entries = cpio::list(std::fs::File::open(&out).unwrap()).unwrap();
        for name in ["imgmode-live/etc/.updated", "imgmode-live/var/.updated"] {
            let e = entries.iter().find(|e| e.name == name).unwrap();
            assert_eq!(e.mode & 0o7777, 0o644);
            // its mtime is 0 (Meta::root), /usr's in an ostree image: ConditionNeedsUpdate
            // is false
            let text = String::from_utf8(e.data.clone()).unwrap();
            assert!(text.ends_with("TIMESTAMP_NSEC=0\n"), "{text}");
        }
    }

    #[test]
    fn the_live_system_masks_the_generators_and_units_it_has_no_use_for() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        std::fs::create_dir_all(t.join("usr/etc/systemd")).unwrap();
        let out = t.join("config.img");
        write_config(t, &masked_in_live(), "T", &out).unwrap();
        let entries = cpio::list(std::fs::File::open(&out).unwrap()).unwrap();
        let names = MASKED_GENERATORS
            .iter()
            .map(|g| format!("imgmode-live/etc/systemd/system-generators/{g}"))
            .chain(
                MASKED_UNITS
                    .iter()
                    .map(|u| format!("imgmode-live/etc/systemd/system/{u}")),
            );
        for name in names {
            let e = entries.iter().find(|e| e.name == name).unwrap();
            assert_eq!(e.mode & 0o170000, 0o120000, "{name} is a symlink");
            assert_eq!(e.data, b"/dev/null", "{name}");
        }
        // the consoles' gettys, the debug shell, SSH, the network and the clock stay
        for kept in ["systemd-getty-generator", "systemd-debug-generator"] {
            assert!(!MASKED_GENERATORS.contains(&kept));
        }
        for kept in [
            "ssh.service",
            "systemd-networkd.service",
            "systemd-timesyncd.service",
            "imgmode-ssh-keygen.service",
        ] {
            assert!(!MASKED_UNITS.contains(&kept));
        }
    }

    #[test]
    fn config_paths_follow_the_images_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        std::fs::create_dir_all(t.join("usr/etc/systemd")).unwrap();
        std::fs::create_dir_all(t.join("var")).unwrap();
        std::os::unix::fs::symlink("var/roothome", t.join("root")).unwrap();
        assert_eq!(
            resolve(t, "root/.ssh/authorized_keys").unwrap(),
            "var/roothome/.ssh/authorized_keys"
        );
        assert_eq!(
            resolve(t, "etc/systemd/system/x.service").unwrap(),
            "etc/systemd/system/x.service"
        );
        let files = vec![
            LiveFile::file("root/.ssh/authorized_keys", 0o600, "ssh-ed25519 AAAA k\n"),
            LiveFile::symlink(
                "etc/systemd/system/multi-user.target.wants/x.service",
                "../x.service",
            ),
        ];
        let out = t.join("config.img");
        write_config(t, &files, "T", &out).unwrap();
        let entries = cpio::list(std::fs::File::open(&out).unwrap()).unwrap();
        // the initrd's units first, then the caller's files
        let names: Vec<&str> = entries
            .iter()
            .map(|e| e.name.as_str())
            .skip_while(|n| *n != "imgmode-live")
            .skip(1)
            .map(|n| n.strip_prefix("imgmode-live/").unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "var",
                "var/roothome",
                "var/roothome/.ssh",
                "var/roothome/.ssh/authorized_keys",
                "etc",
                "etc/systemd",
                "etc/systemd/system",
                "etc/systemd/system/multi-user.target.wants",
                "etc/systemd/system/multi-user.target.wants/x.service"
            ]
        );
        assert!(write_config(t, &[LiveFile::file("../x", 0o644, "")], "T", &out).is_err());
        assert!(entries
            .iter()
            .any(|e| e.name == "etc/systemd/system/sysroot.mount"));
    }

    #[test]
    fn the_menu_boots_the_live_kernel_with_both_archives() {
        let c = grub_cfg("imgmode IBI", &live_kargs("imgmode-ibi"));
        assert!(c.contains("linux /live/vmlinuz console=tty0 "), "{c}");
        assert!(!c.contains("rdinit="), "{c}");
        assert!(
            c.contains(" modules-load=ahci,sr_mod,isofs,loop,erofs,overlay"),
            "{c}"
        );
        assert!(c.contains("imgmode.live=imgmode-ibi"));
        assert!(c.contains("initrd /live/initrd.img /live/config.img"));
        assert!(check_label("cluster config").is_err());
        assert!(check_label("imgmode-ibi").is_ok());
    }
}
