//! The steps of `imgmode ibi install`, in order, each its own function and each recorded in the
//! state file under its name: preflight, seed-gates, disk-cleanup (or disk-cleanup-skipped),
//! partition, seed-pull, seed-version, ostree-pull-local, deploy, boot-entries,
//! restore-var-etc, payload (with a payload), precache, bootloader, post-script (with a
//! script), finish.

use super::{
    booted_deployment, cleanup_disk, container_storage_unit, disk_size, etc_deletions,
    extra_partition, find_origin, kernel_arguments, missing_seed_files, pull_refs, registry_auth,
    root_needed, seed_tarball, InstallOpts, Installed, Mounts, CONTAINER_STORAGE, INSTALL_RECORD,
    WORK,
};
use crate::config::seed_reference;
use crate::inroot::InRoot;
use anyhow::{ensure, Context, Result};
use imgmode_image::extract::Divert;
use imgmode_image::skopeo::RegistryAuth;
use imgmode_os::partition::{ExtraPartition, Firmware, Layout, Partition, Role};
use imgmode_seed::archive::{
    tar_extract, tar_extract_diverting, tar_extract_streamed, Compression,
};
use imgmode_seed::gates;
use imgmode_seed::image;
use imgmode_seed::manifest::SeedClusterInfo;
use imgmode_support::cmd::{require_root, require_tools, Run};
use imgmode_support::size;
use imgmode_support::steplog::StepLog;
use imgmode_support::Steps;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The state file and the caller's progress printer: each step is recorded under its name
/// and its line printed.
pub(super) struct Log<'a> {
    pub(super) file: StepLog,
    pub(super) steps: &'a Steps,
}

impl Log<'_> {
    /// `name` starts; `what` is printed.
    fn step(&mut self, name: &str, what: &str) -> Result<()> {
        self.file.enter(name)?;
        self.steps.step(what);
        Ok(())
    }
}

/// The installation disk, checked.
struct Target {
    disk: PathBuf,
    block: bool,
    size: u64,
    /// The exclusive hold on the disk, from preflight through the wipe.
    claim: super::disk::Claimed,
}

/// A payload to copy: its directory, what it holds and the registry serving it.
type PayloadPlan = (
    PathBuf,
    imgmode_image::mirror::Payload,
    crate::payload::registry::RegistrySetup,
);

/// What the seed's labels and the config decide before the disk is touched.
struct Plan {
    seed: String,
    auth: RegistryAuth,
    /// Holds the files `auth` names.
    _secrets: tempfile::TempDir,
    extra: ExtraPartition,
    layout: Layout,
    payload: Option<PayloadPlan>,
}

impl Plan {
    fn part(&self, r: Role) -> Result<&Partition> {
        self.layout
            .get(r)
            .with_context(|| format!("the layout has no {r:?} partition"))
    }
}

/// The partitioned disk, its root and boot filesystems mounted at `root`.
struct Disk<'a> {
    mounts: Mounts,
    target: Target,
    plan: Plan,
    root: &'a Path,
    /// The extra partition is mounted on the stateroot's container storage.
    storage_mounted: bool,
}

/// The seed's unpacked files and what they name.
struct Seed {
    work: PathBuf,
    files: PathBuf,
    info: SeedClusterInfo,
    stateroot: String,
    commit: String,
    origin: PathBuf,
    kargs: Vec<String>,
    /// How many deployments the seed system had (rpm-ostree.json).
    deployments: usize,
}

/// Run the steps in order; nothing is written to the disk before seed-gates has passed.
pub(super) fn run(o: &InstallOpts, log: &mut Log) -> Result<Installed> {
    let t0 = Instant::now();
    log.step("preflight", "checking the installation disk and the tools")?;
    let target = preflight(o)?;
    let seed = o
        .seed_from
        .clone()
        .unwrap_or_else(|| seed_reference(&o.config.seed_image));
    log.step(
        "seed-gates",
        &format!("checking the seed {seed} (labels only)"),
    )?;
    let mut target = target;
    let plan = seed_gates(o, &target, seed)?;

    // the seed's gates took a while: the disk is checked again, still held
    super::disk::recheck(
        &format!("{}: installationDisk", o.config_name),
        &target.claim,
    )?;
    if o.config.skip_disk_cleanup {
        log.file.enter("disk-cleanup-skipped")?;
    } else {
        log.step(
            "disk-cleanup",
            &format!("cleaning {}", target.disk.display()),
        )?;
        cleanup_disk(&target.disk, target.block)?;
    }
    // partitions are made next: mkfs and mount claim them, which the exclusive open would
    // refuse; the disk's lock stays until the install ends, so udev does not take the
    // partition devices away to read the table again
    target.claim.release_keeping_lock()?;
    let extra = &plan.extra;
    log.step(
        "partition",
        &format!(
            "writing the partitions and filesystems ({}, extra partition {} {} at {})",
            size::human_size(target.size),
            extra.number,
            extra.label,
            extra.start
        ),
    )?;
    let mut d = partition(target, plan, &o.mount_dir)?;

    log.step(
        "seed-pull",
        &format!(
            "fetching the seed {} (its ostree tarball unpacked as it streams)",
            d.plan.seed
        ),
    )?;
    seed_pull(o, &d)?;
    log.file.enter("seed-version")?;
    let s = seed_version(o, d.root.join(WORK))?;
    log.step(
        "ostree-pull-local",
        "pulling the seed's commit into the new sysroot",
    )?;
    let prune = ostree_pull_local(d.root, &s)?;
    log.step(
        "deploy",
        &format!(
            "deploying {} in stateroot {} ({})",
            &s.commit[..12],
            s.stateroot,
            s.kargs.join(" ")
        ),
    )?;
    let deploy_dir = deploy(d.root, &s, prune, log)?;
    log.step(
        "restore-var-etc",
        "restoring var.tgz into the stateroot, etc.tgz and etc.deletions into the deployment",
    )?;
    let etc_deleted = restore_var_etc(&d, &s, &deploy_dir)?;

    // the extra partition is mounted on the stateroot's container storage: a real directory
    // there, not a symlink the seed's var.tgz planted
    let storage = InRoot::open(&stateroot_dir(&d, &s), "the stateroot")?
        .mount_point(Path::new(CONTAINER_STORAGE.trim_start_matches('/')))?;
    if let Some((_, p, _)) = &d.plan.payload {
        let what = format!(
            "copying the payload {} ({} image(s)) onto the {} partition",
            p.id,
            p.images.len(),
            d.plan.extra.label
        );
        log.step("payload", &what)?;
        payload(&mut d, &storage, &deploy_dir)?;
    }
    log.file.enter("precache")?;
    let images = precache(
        log.steps,
        &mut d,
        &s,
        &storage,
        o.config.release_registry.as_deref(),
    )?;
    log.step(
        "bootloader",
        "installing GRUB (BIOS and UEFI) from the deployment",
    )?;
    bootloader(&d, &s, &deploy_dir)?;
    if let Some(script) = &o.post_script {
        log.step(
            "post-script",
            &format!("running the post script {}", script.display()),
        )?;
        post_script(script, d.root, &deploy_dir, &s.stateroot)?;
    }
    log.step("finish", "removing the work files and unmounting")?;
    finish(o, d, s, images, etc_deleted, t0)
}

/// The tools, and the disk: it exists, is a block device or an image file, and nothing of the
/// running system uses it.
fn preflight(o: &InstallOpts) -> Result<Target> {
    let cfg = &o.config_name;
    require_root("imgmode ibi install (partitions, filesystems, ostree deploy)")?;
    require_tools(&[
        "sgdisk",
        "wipefs",
        "mkfs.ext4",
        "mkfs.vfat",
        "mmd",
        "mcopy",
        "mount",
        "umount",
        "skopeo",
    ])?;
    let disk = PathBuf::from(&o.config.installation_disk);
    let claim = super::disk::claim(&format!("{cfg}: installationDisk"), &disk)?;
    let size = disk_size(&disk)?;
    Ok(Target {
        block: claim.block,
        disk,
        size,
        claim,
    })
}

/// The seed's labels against the config and this machine, the layout on the disk, and the
/// payload (its architecture, and room on the extra partition).
fn seed_gates(o: &InstallOpts, t: &Target, seed: String) -> Result<Plan> {
    let (c, cfg) = (&o.config, &o.config_name);
    let secrets = tempfile::Builder::new()
        .prefix("imgmode-ibi-")
        .tempdir()
        .context("creating a private temporary directory")?;
    let auth = registry_auth(c, secrets.path())?;
    let header = image::read_header(&o.store, &seed, &auth)
        .with_context(|| format!("the seed image {seed} (seedImage in {cfg}) cannot be read"))?;
    let target = c.gate_target(&o.architecture, o.fips);
    gates::check(&header.labels, &header.architecture, &target)
        .with_context(|| format!("the seed {seed} does not fit {cfg}"))?;
    ensure!(
        header.layers.len() == 1,
        "the seed {seed} has {} layers; a seed image has exactly one",
        header.layers.len()
    );
    let layer_bytes = header.layers[0].2;
    let extra = extra_partition(c);
    let layout = Layout::with_extra(
        t.size,
        Firmware::Both,
        root_needed(layer_bytes),
        &extra,
        &format!("installationDisk {}", t.disk.display()),
    )?;
    let payload = match &o.payload {
        Some(dir) => Some(check_payload(o, dir, &layout, &extra)?),
        None => None,
    };
    // what passed the gates is what is installed: a registry's seed is pulled by the digest
    // of the manifest just read, never by its tag again
    let seed = pinned(&seed, &header.manifest_digest);
    Ok(Plan {
        seed,
        auth,
        _secrets: secrets,
        extra,
        layout,
        payload,
    })
}

/// A registry reference (`docker://REPO[:TAG][@DIGEST]`) pinned to `digest`; other
/// transports (a layout on the ISO, a local name) are returned as they are.
pub(super) fn pinned(seed: &str, digest: &str) -> String {
    let Some(rest) = seed.strip_prefix("docker://") else {
        return seed.to_string();
    };
    let repo = rest.split('@').next().unwrap_or(rest);
    let (path, last) = repo.rsplit_once('/').unwrap_or(("", repo));
    let last = last.split(':').next().unwrap_or(last);
    let repo = if path.is_empty() {
        last.to_string()
    } else {
        format!("{path}/{last}")
    };
    format!("docker://{repo}@{digest}")
}

/// The payload at `dir`: for this machine's architecture, and room for it on the extra
/// partition.
fn check_payload(
    o: &InstallOpts,
    dir: &Path,
    layout: &Layout,
    extra: &ExtraPartition,
) -> Result<PayloadPlan> {
    let p = imgmode_image::mirror::Payload::read(dir)?;
    ensure!(
        p.architectures.contains(&o.architecture),
        "the payload {} holds images for {}; this machine is {}",
        dir.display(),
        p.architectures.join(", "),
        o.architecture
    );
    let setup = crate::payload::registry::RegistrySetup::read(&o.payload_setup)?;
    let bytes = imgmode_support::fs::du_bytes(dir)?;
    let room = layout.get(Role::Extra).map_or(0, |p| p.size);
    ensure!(
        bytes + bytes / 10 + 64 * size::MIB <= room,
        "the payload {} takes {}; the {} partition ({}) cannot hold it: give extraPartitionStart more room",
        dir.display(),
        size::human_size(bytes),
        extra.label,
        size::human_size(room)
    );
    Ok((dir.to_path_buf(), p, setup))
}

/// The partition table and the filesystems; root and boot mounted at `root`.
fn partition(target: Target, plan: Plan, root: &Path) -> Result<Disk<'_>> {
    let disk = &target.disk;
    Run::new("sgdisk")
        .args(plan.layout.sgdisk_args())
        .arg(disk)
        .output()
        .with_context(|| format!("partitioning {}", disk.display()))?;
    if target.block {
        // the kernel's view only matters for the next boot; a busy table is fine here
        let _ = Run::new("partx").arg("-u").arg(disk).output();
    }
    for p in &plan.layout.partitions {
        match p.role {
            Role::Esp => imgmode_os::disk::mkfs_esp(disk, p)?,
            // on the partition's device when the kernel has one, where the mount reads it
            // (the whole disk's page cache and the partition's are not the same)
            Role::Boot | Role::Root | Role::Extra => {
                match super::disk::partition_device(disk, p.start, p.size)? {
                    Some(dev) => imgmode_os::disk::mkfs_ext4(
                        &dev,
                        &Partition {
                            start: 0,
                            ..p.clone()
                        },
                        None,
                    )?,
                    None => imgmode_os::disk::mkfs_ext4(disk, p, None)?,
                }
            }
            Role::BiosBoot => {}
        }
    }
    let mut mounts = Mounts { points: vec![] };
    mounts.mount(disk, plan.part(Role::Root)?, root)?;
    mounts.mount(disk, plan.part(Role::Boot)?, &root.join("boot"))?;
    Ok(Disk {
        mounts,
        target,
        plan,
        root,
        storage_mounted: false,
    })
}

/// The seed fetched onto the target's root filesystem and its layer unpacked there.
fn seed_pull(o: &InstallOpts, d: &Disk) -> Result<()> {
    let seed = &d.plan.seed;
    let work = d.root.join(WORK);
    let files = work.join("files");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // The seed's ostree tarball is unpacked as it streams out of the layer: never written
    // to the disk as a file, read back and then unpacked (two copies of its bytes saved).
    let repo = work.join("repo");
    let ostree_names = Compression::file_names("ostree");
    let mut streamed = None;
    // streamed from where the seed is (a registry through skopeo's image proxy, the ISO's
    // layout in place): no staging copy of the layer on the target
    let mut layer = imgmode_image::fetch::LayerStream::open(&o.store, seed, &d.plan.auth, 0)
        .with_context(|| format!("fetching the seed {seed}"))?;
    let mut take = |name: &str, r: &mut (dyn std::io::Read + Send)| -> Result<()> {
        ensure!(
            streamed.is_none(),
            "the seed {seed} holds two ostree tarballs ({} and {name})",
            streamed.as_deref().unwrap_or_default()
        );
        tar_extract_streamed(r, &repo)?;
        streamed = Some(name.to_string());
        Ok(())
    };
    tar_extract_diverting(
        imgmode_support::io::read_ahead(layer.reader()?),
        &files,
        &imgmode_image::extract::Policy::plain(),
        Divert {
            names: &ostree_names,
            take: &mut take,
        },
    )
    .context("unpacking the seed's layer")?;
    // the layer's digest and size, checked by its source once it has been read to the end
    layer
        .finish()
        .with_context(|| format!("fetching the seed {seed}"))?;
    let streamed: &[&str] = if streamed.is_some() { &["ostree"] } else { &[] };
    let missing = missing_seed_files(&files, streamed)?;
    ensure!(
        missing.is_empty(),
        "the seed {seed} is incomplete: missing {}",
        missing.join(", ")
    );
    Ok(())
}

/// `manifest.json`'s version against `seedVersion`; the booted deployment, its origin and
/// kernel arguments.
fn seed_version(o: &InstallOpts, work: PathBuf) -> Result<Seed> {
    let (c, cfg) = (&o.config, &o.config_name);
    let files = work.join("files");
    let info = SeedClusterInfo::parse(&std::fs::read_to_string(files.join("manifest.json"))?)
        .context("the seed's manifest.json")?;
    ensure!(
        info.seed_cluster_ocp_version == c.seed_version,
        "seed version mismatch: {cfg} asks for seedVersion {:?}, the seed's manifest.json says {:?}",
        c.seed_version,
        info.seed_cluster_ocp_version
    );
    let rpm = std::fs::read_to_string(files.join("rpm-ostree.json"))?;
    let (stateroot, commit) = booted_deployment(&rpm)?;
    let deployments = serde_json::from_str::<serde_json::Value>(&rpm)?["deployments"]
        .as_array()
        .map_or(0, Vec::len);
    let origin = files.join(format!("ostree-{commit}.0.origin"));
    let origin = if origin.is_file() {
        origin
    } else {
        find_origin(&files, &commit)?
    };
    let kargs = kernel_arguments(&std::fs::read_to_string(
        files.join("mco-currentconfig.json"),
    )?)?;
    Ok(Seed {
        work,
        files,
        info,
        stateroot,
        commit,
        origin,
        kargs,
        deployments,
    })
}

/// The new sysroot, and the seed's repository pulled into it; whether unreachable objects
/// came along (for the deploy to prune).
fn ostree_pull_local(m: &Path, s: &Seed) -> Result<bool> {
    let sysroot = imgmode_os::disk::init_sysroot(m, &s.stateroot)?;
    sysroot.unlock();
    drop(sysroot);
    // unpacked by seed-pull as the layer streamed past
    let seed_repo = s.work.join("repo");
    let repo = m.join("ostree/repo");
    let refs = imgmode_os::ostree::list_refs(&seed_repo, None)
        .context("listing the seed repository's refs")?;
    let wanted = pull_refs(&refs.join("\n"), &s.commit);
    // the unpacked repository is on the new root filesystem already: its object store moves
    // into the sysroot in one rename (a local pull links every object, seconds per thousand
    // under emulation); a seed in another repository mode is pulled
    let adopted = imgmode_os::ostree::adopt_objects(&repo, &seed_repo, &wanted)
        .context("moving the seed repository's objects into the new sysroot")?;
    if !adopted {
        imgmode_os::ostree::pull_local(&repo, &seed_repo, &wanted)
            .context("ostree pull-local from the seed's repository")?;
    }
    imgmode_support::fs::remove_tree(&seed_repo)?;
    // a pull took only what the refs and the booted commit reach; the seed's other
    // deployments' objects came along with the store, so they go once the new deployment
    // holds its commit
    Ok(adopted && s.deployments > 1)
}

/// The seed's commit deployed with its kernel arguments and origin; returns the deployment.
/// The deployment's tree (checkout, `/etc`, kernel and initramfs), then its boot entries (a
/// step of its own: ostree flushes the disk's pending writes, the seed's unpacked files among
/// them, before it writes them). The new sysroot's repository is pruned only when `prune`
/// (the seed's other deployments' objects came along): otherwise it holds what the seed's
/// refs reach and nothing else, and a prune would walk its every object for nothing.
fn deploy(m: &Path, s: &Seed, prune: bool, log: &mut Log) -> Result<PathBuf> {
    let (stateroot, commit) = (&s.stateroot, &s.commit);
    imgmode_os::ostree::admin_deploy(
        m,
        stateroot,
        &s.origin,
        &s.kargs,
        commit,
        prune,
        &mut || {
            log.step(
                "boot-entries",
                "writing the boot entries (the disk's pending writes flushed first)",
            )
        },
    )
    .with_context(|| format!("deploying the seed's commit {commit}"))?;
    let deploy_dir = m.join(format!("ostree/deploy/{stateroot}/deploy/{commit}.0"));
    ensure!(
        deploy_dir.join("usr").is_dir(),
        "ostree wrote no deployment at {}",
        deploy_dir.display()
    );
    Ok(deploy_dir)
}

/// `var.tgz` into the stateroot, `etc.tgz` and `etc.deletions` into the deployment, and the
/// container storage's mount unit; returns how many paths were deleted.
/// From here on every write into the deployment and the stateroot goes beneath their handles
/// ([`InRoot`]): the tarballs may have planted symlinks that lead out of them.
fn restore_var_etc(d: &Disk, s: &Seed, deploy_dir: &Path) -> Result<usize> {
    let stateroot = stateroot_dir(d, s);
    let top = |p: &Path| -> Result<std::collections::BTreeSet<std::ffi::OsString>> {
        std::fs::read_dir(p)?.map(|e| Ok(e?.file_name())).collect()
    };
    let before = top(&stateroot)?;
    tar_extract(&seed_tarball(&s.files, "var")?, &stateroot)?;
    // var.tgz holds var/ and nothing else: the stateroot's deployments stay ostree's
    for n in top(&stateroot)?.difference(&before) {
        ensure!(
            n == "var",
            "the seed's var.tgz wrote {} into the stateroot {}; a seed's var.tgz holds var/ only",
            n.to_string_lossy(),
            stateroot.display()
        );
    }
    ensure!(
        std::fs::symlink_metadata(deploy_dir)?.is_dir(),
        "the deployment {} is no longer a directory after var.tgz; the seed is refused",
        deploy_dir.display()
    );
    tar_extract(&seed_tarball(&s.files, "etc")?, deploy_dir)?;
    let deletions = etc_deletions(&std::fs::read_to_string(s.files.join("etc.deletions"))?)?;
    let r = InRoot::open(deploy_dir, "the deployment")?;
    for rel in &deletions {
        r.remove(rel).context("applying the seed's etc.deletions")?;
    }
    let units = Path::new("etc/systemd/system");
    let unit = "var-lib-containers.mount";
    r.write(
        &units.join(unit),
        container_storage_unit(&d.plan.extra.label).as_bytes(),
        0o644,
    )?;
    r.symlink(
        &format!("../{unit}"),
        &units.join("local-fs.target.wants").join(unit),
    )?;
    Ok(deletions.len())
}

/// The stateroot's directory (its `var`).
fn stateroot_dir(d: &Disk, s: &Seed) -> PathBuf {
    d.root.join(format!("ostree/deploy/{}", s.stateroot))
}

/// The payload onto the extra partition (mounted on `storage`) and its registry's files
/// into the deployment.
fn payload(d: &mut Disk, storage: &Path, deploy_dir: &Path) -> Result<()> {
    let Some((dir, p, setup)) = &d.plan.payload else {
        return Ok(());
    };
    d.mounts
        .mount(&d.target.disk, d.plan.part(Role::Extra)?, storage)?;
    d.storage_mounted = true;
    let name = crate::payload::registry::INSTALLED_ROOT
        .strip_prefix(CONTAINER_STORAGE)
        .context("the payload's place is not under the container storage")?
        .trim_start_matches('/');
    // blob by blob, each checked against its digest before it is renamed into place
    crate::payload::store::add(&storage.join(name), dir, &dir.display().to_string(), false)
        .context("copying the payload onto the disk")?;
    // this host's own CA and key: no two installs from one ISO share the registry's TLS key
    let setup = setup.for_this_host()?;
    let mut files = setup.files(
        crate::payload::registry::INSTALLED_ROOT,
        p,
        None,
        false,
        crate::payload::registry::Listen::Cluster,
    );
    // a later installation ISO (a newer release's payload) attached to the host is imported
    files.extend(crate::payload::registry::import_files(
        crate::config::INSTALL_ISO_LABEL,
    ));
    crate::payload::registry::write_files(deploy_dir, &files)
}

/// The images of `containers.list` into the extra partition (mounted on `storage`); returns
/// them.
/// Where precache pulls `img` from: the installation config's `releaseRegistry` in place of
/// the seed's release registry (same repository, same digest), else the image's own place.
/// The image is stored under its own name either way, as the cluster refers to it.
pub(crate) fn precache_source(
    img: &str,
    seed_registry: &str,
    site_registry: Option<&str>,
) -> String {
    match site_registry.map(str::trim).filter(|r| !r.is_empty()) {
        Some(site) if !seed_registry.is_empty() && site != seed_registry => img
            .strip_prefix(seed_registry)
            .and_then(|rest| rest.strip_prefix('/'))
            .map_or_else(|| img.to_string(), |rest| format!("{site}/{rest}")),
        _ => img.to_string(),
    }
}

fn precache(
    steps: &Steps,
    d: &mut Disk,
    s: &Seed,
    storage: &Path,
    release_registry: Option<&str>,
) -> Result<Vec<String>> {
    let list = std::fs::read_to_string(s.files.join("containers.list"))?;
    let images: Vec<String> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    steps.step(&format!(
        "precaching {} image(s) of containers.list into the {} partition",
        images.len(),
        d.plan.extra.label
    ));
    if images.is_empty() {
        return Ok(images);
    }
    if !d.storage_mounted {
        d.mounts
            .mount(&d.target.disk, d.plan.part(Role::Extra)?, storage)?;
        d.storage_mounted = true;
    }
    let runroot = s.work.join("runroot");
    for img in &images {
        let dest = format!(
            "containers-storage:[overlay@{}+{}]{img}",
            storage.join("storage").display(),
            runroot.display()
        );
        let src = precache_source(img, &s.info.release_registry, release_registry);
        imgmode_image::skopeo::Copy::new(format!("docker://{src}"), dest)
            .src_auth(&d.plan.auth)
            .retry_times(3)
            .run()
            .with_context(|| {
                format!("precaching {img} from {src} (containers.list of the seed)")
            })?;
    }
    Ok(images)
}

/// GRUB for BIOS and UEFI from the deployment's own files.
fn bootloader(d: &Disk, s: &Seed, deploy_dir: &Path) -> Result<()> {
    let grub = imgmode_os::grub::Grub::from_deployment(deploy_dir)?;
    grub.write_boot_config(&d.root.join("boot"))?;
    let gwork = s.work.join("grub");
    std::fs::create_dir_all(&gwork)?;
    grub.install_bios(&d.target.disk, d.plan.part(Role::BiosBoot)?, &gwork)?;
    grub.install_uefi(&d.target.disk, d.plan.part(Role::Esp)?, &gwork)
}

/// The post script, with the target mounted.
fn post_script(script: &Path, m: &Path, deploy_dir: &Path, stateroot: &str) -> Result<()> {
    Run::new(script)
        .env("IMGMODE_IBI_SYSROOT", m)
        .env("IMGMODE_IBI_DEPLOYMENT", deploy_dir)
        .env("IMGMODE_IBI_STATEROOT", stateroot)
        .output()
        .with_context(|| format!("the post script {} failed", script.display()))?;
    Ok(())
}

/// The work files removed, the install's record written, everything unmounted.
fn finish(
    o: &InstallOpts,
    mut d: Disk,
    s: Seed,
    images: Vec<String>,
    etc_deleted: usize,
    t0: Instant,
) -> Result<Installed> {
    imgmode_support::fs::remove_tree(&s.work)?;
    let mut installed = Installed {
        disk: d.target.disk.display().to_string(),
        seed: seed_reference(&o.config.seed_image),
        seed_from: o.seed_from.clone(),
        payload: d.plan.payload.as_ref().map(|(_, p, _)| p.id.clone()),
        seed_version: s.info.seed_cluster_ocp_version,
        stateroot: s.stateroot,
        commit: s.commit,
        kernel_arguments: s.kargs,
        layout: d.plan.layout,
        precached: images,
        etc_deleted,
        seconds: t0.elapsed().as_secs_f64(),
    };
    // what was installed, for the installed system's administrators
    InRoot::open(
        &d.root
            .join(format!("ostree/deploy/{}", installed.stateroot)),
        "the stateroot",
    )?
    .write(
        Path::new(INSTALL_RECORD.trim_start_matches('/')),
        &serde_json::to_vec_pretty(&installed)?,
        0o644,
    )?;
    let _ = Run::new("sync").output();
    d.mounts.unmount_all()?;
    installed.seconds = t0.elapsed().as_secs_f64();
    Ok(installed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn release_images_are_pulled_from_the_sites_release_registry() {
        let img = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:aa";
        assert_eq!(
            super::precache_source(img, "quay.io", Some("mirror.site:5000")),
            "mirror.site:5000/openshift-release-dev/ocp-v4.0-art-dev@sha256:aa"
        );
        assert_eq!(super::precache_source(img, "quay.io", None), img);
        assert_eq!(super::precache_source(img, "quay.io", Some("quay.io")), img);
        // another registry's image, or a registry whose name only begins the same
        assert_eq!(super::precache_source(img, "quay", Some("m:5000")), img);
        assert_eq!(
            super::precache_source("registry.redhat.io/x@sha256:bb", "quay.io", Some("m:5000")),
            "registry.redhat.io/x@sha256:bb"
        );
    }
}
