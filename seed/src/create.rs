//! `imgmode seed create`: capture a running, healthy seed system as a seed image in
//! lifecycle-agent's format, then bring the seed system back.
//!
//! Steps (each finished step is recorded in the step log `<work>/steps.json`, so running the
//! same command again after an interruption resumes where it stopped and never runs recert
//! twice):
//! preflight (root, ostree-booted, nothing staged, output writable, free space) -> health
//! (services active, etcd answers, the API's `/readyz` with the admin kubeconfig) -> seed
//! cluster info -> containers.list -> stop the cluster services -> recert `force_expire`
//! -> the pull secret in etcd replaced by a placeholder (saved in the work directory) -> stop
//! etcd -> `var`, `etc` (+ `etc.deletions`), `ostree` tarballs -> `rpm-ostree.json`,
//! `mco-currentconfig.json`, the booted `.origin`, this binary -> the one-layer image ->
//! restore (etcd, the pull secret, recert `extend_expiration`, services, health again).

use crate::archive::{tar_create, Compression, Written};
use crate::cluster::{check_health, etcd_objects, start_and_wait_healthy, systemctl, Cluster};
use crate::image::{self, Output};
use crate::manifest::SeedClusterInfo;
use crate::{LABEL_CLUSTER_INFO, LABEL_COMPRESSION, LABEL_FORMAT_VERSION, SEED_FORMAT_VERSION};
use anyhow::{anyhow, bail, ensure, Context, Result};
use imgmode_recert::config::RecertConfig;
use imgmode_support::cmd::{require_root, require_tools, Run};
use imgmode_support::steplog::{OtherRun, StepLog};
use ostree_ext::ostree;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use {imgmode_image::Store, imgmode_support::Steps};

mod info;
pub use info::gather_cluster_info;

/// `/var` content lifecycle-agent leaves out of `var.tgz` (anchored at `var/`), plus imgmode's
/// own caches.
pub const VAR_EXCLUDES: &[&str] = &[
    "var/tmp/*",
    "var/log/*",
    "var/lib/log/*",
    "var/lib/containers/*",
    "var/lib/kubelet/pods/*",
    "var/lib/cni/bin/*",
    "var/lib/ovn-ic/etc/ovnkube-node-certs/*",
    "var/lib/imgmode/images",
    "var/lib/imgmode/repo",
    "var/lib/imgmode/seed-work",
    // the seed host's own secrets and identity, which no site may inherit: root's SSH keys,
    // kubelet's pull secret (post-pivot writes the site's), systemd's credential key and
    // random seed, and a post-pivot state from an earlier install
    "var/roothome/.ssh/authorized_keys",
    "var/lib/kubelet/config.json",
    "var/lib/systemd/credential.secret",
    "var/lib/systemd/random-seed",
    "var/lib/imgmode/post-pivot",
];

/// `/etc` entries that belong to one machine (relative to `/etc`): never in `etc.tgz`.
pub const ETC_EXCLUDES: &[&str] = &[
    "hostname",
    "machine-id",
    "NetworkManager/system-connections",
    "machine-config-daemon/orig/var/lib/kubelet",
    "openvswitch/conf.db",
    "openvswitch/.conf.db.~lock~",
    // SSH host keys: every host makes its own
    "ssh/ssh_host_*",
];

#[derive(Debug, Clone)]
pub struct CreateOpts {
    /// Where the seed image goes (local name or transport reference).
    pub output: String,
    /// `/` on the seed system.
    pub sysroot: PathBuf,
    /// Archives and the step log ([`DEFAULT_WORK_DIR`]: excluded from `var.tgz`).
    pub work_dir: PathBuf,
    /// The seed system's cluster: its services, etcd, kubeconfig and static directories.
    pub cluster: Cluster,
    pub recert: bool,
    pub restore: bool,
    pub compression: Compression,
    /// This binary, shipped in the seed as `imgmode` and `lca-cli`.
    pub self_exe: PathBuf,
    /// Written as `recert_image_pull_spec`.
    pub tool_version: String,
    /// Make a seed of a system post-pivot configured for a site (an installed copy of a seed):
    /// refused unless asked, since that site's settings would travel with it; its post-pivot
    /// state is left out either way.
    pub allow_installed_copy: bool,
}

impl CreateOpts {
    pub fn new(output: &str, self_exe: PathBuf, tool_version: &str) -> Self {
        CreateOpts {
            output: output.to_string(),
            sysroot: "/".into(),
            work_dir: DEFAULT_WORK_DIR.into(),
            cluster: Cluster::default(),
            recert: true,
            restore: true,
            compression: Compression::default(),
            self_exe,
            tool_version: tool_version.to_string(),
            allow_installed_copy: false,
        }
    }
}

/// What a run made.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Created {
    pub reference: String,
    pub digest: String,
    pub cluster_info: SeedClusterInfo,
    pub files: BTreeMap<String, u64>,
    pub tarballs: Vec<Written>,
    /// Seconds per step (the step log's, earlier runs' included).
    pub timings: BTreeMap<String, f64>,
    pub restored: bool,
}

/// The run a work directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RunId {
    output: String,
    compression: String,
}

/// The step log in the work directory: [`imgmode_support::steplog::StepState`] as JSON, its
/// run the options that must match for a resume (`{"output":…,"compression":…}`).
pub const STEP_LOG: &str = "steps.json";
/// The seed system's own pull secret while the seed is captured (in the work directory, 0600),
/// put back into etcd by the restore.
const SAVED_PULL_SECRET: &str = "pull-secret.json";

struct Ctx<'a> {
    o: &'a CreateOpts,
    work: PathBuf,
    log: StepLog,
    created: Created,
}

/// `ostree admin config-diff` output: (modified or added, deleted), paths relative to `/etc`.
pub fn parse_config_diff(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut changed, mut deleted) = (vec![], vec![]);
    for line in text.lines() {
        let Some((kind, path)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let path = path.trim().trim_start_matches('/').to_string();
        if path.is_empty() {
            continue;
        }
        match kind {
            "D" => deleted.push(path),
            "M" | "A" => changed.push(path),
            _ => {}
        }
    }
    (changed, deleted)
}

/// Is `/etc/<p>` one of [`ETC_EXCLUDES`] or inside one?
pub fn etc_excluded(p: &str) -> bool {
    ETC_EXCLUDES.iter().any(|e| match e.strip_suffix('*') {
        // `dir/prefix*`: a name in dir starting with prefix (tar's --exclude glob)
        Some(prefix) => p.starts_with(prefix) && !p[prefix.len()..].contains('/'),
        None => p == *e || p.strip_prefix(e).is_some_and(|r| r.starts_with('/')),
    })
}

/// Bytes under `path` on its filesystem (`du -sxb`).
fn du(path: &Path) -> u64 {
    Run::new("du")
        .args(["-sxb"])
        .arg(path)
        .read()
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The synthesized MachineConfig when the system has none: the booted image and its kernel
/// arguments (without ostree's own `ostree=`).
fn synthesized_machineconfig(sysroot: &Path) -> Result<serde_json::Value> {
    let s = imgmode_os::ostree::load_sysroot(sysroot)?;
    let booted = s
        .booted_deployment()
        .context("no booted deployment: is this an ostree-booted system?")?;
    let options = booted
        .bootconfig()
        .and_then(|b| b.get("options"))
        .map(|o| o.to_string())
        .unwrap_or_default();
    let kargs: Vec<&str> = options
        .split_whitespace()
        .filter(|a| !a.starts_with("ostree=") && !a.starts_with("BOOT_IMAGE="))
        .collect();
    let status = imgmode_os::ostree::sysroot_status(sysroot)?;
    let b = status.deployments.iter().find(|d| d.booted);
    let url = b
        .and_then(|d| {
            let r = d.container_image_reference.as_deref()?;
            let digest = d.container_image_reference_digest.as_deref()?;
            let name = r.rsplit_once(':').map_or(r, |(n, _)| n);
            Some(format!("{name}@{digest}"))
        })
        .unwrap_or_default();
    Ok(json!({
        "apiVersion": "machineconfiguration.openshift.io/v1",
        "kind": "MachineConfig",
        "metadata": {"name": "rendered-master-seed"},
        "spec": {
            "osImageURL": url,
            "kernelArguments": kargs,
            "config": {"ignition": {"version": "3.4.0"}},
        },
    }))
}

fn recert_config(o: &CreateOpts, force_expire: bool) -> RecertConfig {
    RecertConfig {
        etcd_endpoint: Some(o.cluster.etcd_endpoint.clone()),
        static_dirs: o
            .cluster
            .static_dirs
            .iter()
            .filter(|d| d.is_dir())
            .cloned()
            .collect(),
        force_expire,
        extend_expiration: !force_expire,
        force_rerun: true,
        encryption_config: o.cluster.encryption_config.clone(),
        // an interrupted recert is finished, not planned again, when seed create resumes
        plan_file: Some(o.work_dir.join(if force_expire {
            "recert-expire.plan"
        } else {
            "recert-extend.plan"
        })),
        ..Default::default()
    }
}

/// Where `seed create` keeps its archives and checkpoints by default: under imgmode's state,
/// root's only (not `/var/tmp`, where anyone may plant a directory or a symlink first).
pub const DEFAULT_WORK_DIR: &str = "/var/lib/imgmode/seed-work";

/// The work directory, made 0700 when new; an existing one is trusted (its checkpoints and
/// tarballs resumed) only when it is a real directory of this user that nobody else may use.
pub fn prepare_work_dir(work: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::symlink_metadata(work) {
        Ok(m) => {
            let me = rustix::process::geteuid().as_raw();
            ensure!(
                m.is_dir(),
                "the work directory {} is not a directory (a symlink or a file); remove it or give another --work-dir",
                work.display()
            );
            ensure!(
                m.uid() == me && m.mode() & 0o077 == 0,
                "the work directory {} is not this user's alone (owner {}, mode {:o}); its checkpoints cannot be trusted: remove it or give another --work-dir",
                work.display(),
                m.uid(),
                m.mode() & 0o7777
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = work.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(work)
                .with_context(|| format!("creating the work directory {}", work.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", work.display())),
    }
}

/// Run `imgmode seed create`.
pub fn create(o: &CreateOpts, store: &Store, steps: Steps) -> Result<Created> {
    let (booted, output) = preflight(o)?;
    let work = o.work_dir.clone();
    prepare_work_dir(&work)?;
    let log = open_log(o, &work, steps)?;
    let mut c = Ctx {
        o,
        work: work.clone(),
        log,
        created: Created::default(),
    };
    if !c.log.is_done("stop-services") {
        if let Err(e) = check_before_stopping(&c) {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
    }
    let res = capture(&mut c, &booted, &output, store);
    if res.is_err() && c.log.is_done("stop-services") {
        // the work directory stays for the resume: its log names the failed step
        let _ = c.log.finish(&res);
    }
    match res {
        Ok(()) => {}
        Err(e) if c.log.is_done("stop-services") => {
            return Err(e.context(format!(
                "the seed system's cluster services are stopped; run the same imgmode seed create again to resume from {}",
                work.display()
            )));
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
    }
    let mut created = std::mem::take(&mut c.created);
    if o.restore {
        c.log.step(
            "restore",
            "restoring the seed system: etcd, recert extend_expiration, services",
        )?;
        let r = restore(o);
        let fin = c.log.finish(&r);
        r?;
        fin?;
        created.restored = true;
    } else {
        c.log
            .steps()
            .step("leaving the cluster services stopped (--no-restore)");
        // but not without its pull secret: etcd runs just long enough to take it back
        let r = put_pull_secret_back(o);
        c.log.finish(&r)?;
        r?;
    }
    created.timings = c.log.state().seconds.clone();
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    Ok(created)
}

/// Nothing is stopped or written before these pass: root, the tools, an ostree-booted system
/// with nothing staged, the output. Returns the booted deployment and the output.
fn preflight(o: &CreateOpts) -> Result<(ostree::Deployment, Output)> {
    require_root("imgmode seed create")?;
    require_tools(&["tar", "systemctl", "du"])?;
    if !o.sysroot.join("run/ostree-booted").exists() {
        bail!("not an ostree-booted system ({} missing): seed create captures the booted ostree deployment of a seed system", o.sysroot.join("run/ostree-booted").display());
    }
    refuse_installed_copy(o)?;
    let sysroot = imgmode_os::ostree::load_sysroot(&o.sysroot)?;
    let booted = sysroot
        .booted_deployment()
        .context("the sysroot has no booted deployment")?;
    if sysroot.staged_deployment().is_some() {
        bail!("a deployment is staged for the next boot; reboot into it or drop it (imgmode rollback) before making a seed");
    }
    let output = image::parse_output(&o.output)?;
    if matches!(output, Output::Transport(_)) {
        require_tools(&["skopeo"])?;
    }
    Ok((booted, output))
}

/// A system that post-pivot configured for a site (its state is under
/// `/var/lib/imgmode/post-pivot`) is not a seed system: its hostname, network, keys and cluster
/// name belong to that site.
fn refuse_installed_copy(o: &CreateOpts) -> Result<()> {
    let state = o.sysroot.join("var/lib/imgmode/post-pivot");
    if state.exists() && !o.allow_installed_copy {
        bail!(
            "this system is an installed copy of a seed, configured for a site by post-pivot ({} exists): a seed made from it would carry that site's hostname, network, SSH key and cluster name; make seeds on a seed system, or pass --allow-installed-copy to make one anyway (the post-pivot state is left out)",
            state.display()
        );
    }
    Ok(())
}

/// The step log of `work`: a new one, or the interrupted run's when it had the same options.
fn open_log(o: &CreateOpts, work: &Path, steps: Steps) -> Result<StepLog> {
    let run_id = serde_json::to_string(&RunId {
        output: o.output.clone(),
        compression: o.compression.name().to_string(),
    })?;
    let path = work.join(STEP_LOG);
    if !path.exists() && (work.join("run.json").exists() || work.join("checks").exists()) {
        bail!(
            "{} holds a seed creation started by an older imgmode (run.json and checks/, not {STEP_LOG}); finish it with that imgmode, or remove {} (and start the cluster services again) to start over",
            work.display(),
            work.display()
        );
    }
    let (log, resumed) = StepLog::resume(&path, &run_id, steps).map_err(|e| {
        match e.downcast_ref::<OtherRun>() {
            Some(other) => anyhow!(
                "{} holds an interrupted seed creation with other options ({}); run that command again to resume it (removing the directory instead loses the seed system's pull secret, which it holds while etcd has the seed's placeholder)",
                work.display(),
                other.run
            ),
            None => e,
        }
    })?;
    if resumed {
        log.steps()
            .step(&format!("resuming the seed creation in {}", work.display()));
    }
    Ok(log)
}

/// Before the services stop: room for the archives, and a healthy cluster.
fn check_before_stopping(c: &Ctx) -> Result<()> {
    let (o, work) = (c.o, &c.work);
    // space: the archives and the layer holding them (gzip -1 leaves ~45% of a root
    // filesystem; count 60% twice)
    let repo = o.sysroot.join("ostree/repo");
    let total = du(&repo) + du(&o.sysroot.join("var")) + du(&o.sysroot.join("etc"));
    let need = total / 10 * 12 + (64 << 20);
    let free = imgmode_support::fs::free_bytes(work)?;
    if free < need {
        bail!(
            "not enough space in {} for the seed archives: about {} MiB needed, {} MiB free; free space, or pass --work-dir on a larger filesystem",
            work.display(),
            need >> 20,
            free >> 20
        );
    }
    c.log.steps().step("checking the seed cluster's health");
    check_health(&o.cluster)
}

/// The capture, step by step; a step done in an earlier run of the same options is skipped.
fn capture(c: &mut Ctx, booted: &ostree::Deployment, output: &Output, store: &Store) -> Result<()> {
    let Ctx {
        o,
        work,
        log,
        created,
    } = c;
    let o = *o;
    let work = &*work;
    log.once(
        "cluster-info",
        "recording the seed cluster info (manifest.json)",
        |_| {
            let objects = etcd_objects(&o.cluster)?;
            let info = gather_cluster_info(o, &objects)?;
            std::fs::write(work.join("manifest.json"), info.to_json())?;
            created.cluster_info = info;
            Ok(())
        },
    )?;
    created.cluster_info =
        SeedClusterInfo::parse(&std::fs::read_to_string(work.join("manifest.json"))?)?;
    log.once(
        "containers-list",
        "listing the container images (containers.list)",
        |_| containers_list(work),
    )?;
    log.once("stop-services", "stopping the cluster services", |_| {
        for unit in &o.cluster.services {
            systemctl("stop", unit)?;
        }
        Ok(())
    })?;
    log.once("recert", "recert: force-expiring every certificate", |_| {
        recert_force_expire(o, work)
    })?;
    log.once(
        "pull-secret",
        "replacing the cluster's pull secret in etcd with a placeholder",
        |_| {
            if let Some(e) = &o.cluster.etcd_service {
                systemctl("start", e)?;
            }
            crate::pullsecret::replace_with_placeholder(&o.cluster, &work.join(SAVED_PULL_SECRET))?;
            Ok(())
        },
    )?;
    log.once("stop-etcd", "stopping etcd", |_| {
        if let Some(e) = &o.cluster.etcd_service {
            systemctl("stop", e)?;
        }
        Ok(())
    })?;
    log.once("var", "archiving /var (var.tgz)", |_| {
        created.tarballs.push(archive_var(o, work)?);
        Ok(())
    })?;
    log.once(
        "post-pivot-unit",
        "adding the post-pivot unit to /etc (for the seed's copies)",
        |_| write_post_pivot_unit(o),
    )?;
    log.once(
        "etc",
        "archiving /etc changes (etc.tgz, etc.deletions)",
        |_| {
            created.tarballs.push(archive_etc(o, work)?);
            Ok(())
        },
    )?;
    log.once(
        "ostree",
        "archiving the ostree repository (ostree.tgz)",
        |_| {
            let repo = o.sysroot.join("ostree/repo");
            let args = vec!["-C".into(), repo.display().to_string(), ".".into()];
            let comp = o.compression;
            let w = tar_create(&args, None, &work.join(comp.file_name("ostree")), comp)?;
            created.tarballs.push(w);
            Ok(())
        },
    )?;
    log.once(
        "status",
        "recording rpm-ostree.json, mco-currentconfig.json and the origin",
        |_| record_status(o, work, booted),
    )?;
    log.once("image", "writing the seed image", |_| {
        write_image(o, work, output, store, created)
    })?;
    if let Ok(t) = std::fs::read(work.join("created.json")) {
        *created = serde_json::from_slice(&t)?;
    }
    Ok(())
}

/// `containers.list`: the images in container storage.
fn containers_list(work: &Path) -> Result<()> {
    let mut images = vec![];
    if imgmode_support::cmd::which("podman").is_some() {
        let out = Run::new("podman")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .read()?;
        images.extend(
            out.lines()
                .filter(|l| !l.contains("<none>") && !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    images.sort();
    images.dedup();
    let mut text = images.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    std::fs::write(work.join("containers.list"), text)?;
    Ok(())
}

/// recert `force_expire` (its config recorded in `work` even with `--skip-recert`).
fn recert_force_expire(o: &CreateOpts, work: &Path) -> Result<()> {
    let cfg = recert_config(o, true);
    std::fs::write(
        work.join("recert_config.json"),
        serde_json::to_vec_pretty(&cfg)?,
    )?;
    if o.recert {
        if let Some(e) = &o.cluster.etcd_service {
            systemctl("start", e)?;
        }
        let summary = imgmode_recert::run(&cfg.check()?)?;
        std::fs::write(
            work.join("recert-summary.yaml"),
            yaml_serde::to_string(&summary)?,
        )?;
    }
    Ok(())
}

/// `var.tgz`: `/var` without [`VAR_EXCLUDES`] and shell histories.
fn archive_var(o: &CreateOpts, work: &Path) -> Result<Written> {
    let comp = o.compression;
    let mut args = vec!["--anchored".to_string()];
    for e in VAR_EXCLUDES {
        args.push(format!("--exclude={e}"));
    }
    args.extend([
        "--no-anchored".into(),
        "--exclude=.bash_history".into(),
        "-C".into(),
        o.sysroot.display().to_string(),
        "var".into(),
    ]);
    tar_create(&args, None, &work.join(comp.file_name("var")), comp)
}

/// `etc.deletions` and `etc.tgz`: what `ostree admin config-diff` names, without
/// [`ETC_EXCLUDES`].
fn archive_etc(o: &CreateOpts, work: &Path) -> Result<Written> {
    let comp = o.compression;
    let diff = imgmode_os::ostree::config_diff(&o.sysroot)?;
    let (changed, deleted) = parse_config_diff(&diff);
    let mut del = String::new();
    for d in &deleted {
        del.push_str(&format!("/etc/{d}\n"));
    }
    std::fs::write(work.join("etc.deletions"), del)?;
    let mut list = Vec::new();
    for p in changed.iter().filter(|p| !etc_excluded(p)) {
        list.extend_from_slice(format!("etc/{p}").as_bytes());
        list.push(0);
    }
    let mut args: Vec<String> = vec!["--anchored".into()];
    for e in ETC_EXCLUDES {
        args.push(format!("--exclude=etc/{e}"));
    }
    args.extend([
        "-C".into(),
        o.sysroot.display().to_string(),
        "--no-recursion".into(),
        "etc".into(),
        "--recursion".into(),
        "--null".into(),
        "-T".into(),
        "-".into(),
    ]);
    tar_create(&args, Some(&list), &work.join(comp.file_name("etc")), comp)
}

/// `rpm-ostree.json`, `mco-currentconfig.json`, the booted deployment's `.origin` and this
/// binary.
fn record_status(o: &CreateOpts, work: &Path, booted: &ostree::Deployment) -> Result<()> {
    let status = imgmode_os::ostree::sysroot_status(&o.sysroot)?;
    let rpm = json!({
        "deployments": status.deployments,
        "transaction": null,
        "cached-update": null,
        "update-driver": null,
    });
    std::fs::write(
        work.join("rpm-ostree.json"),
        serde_json::to_vec_pretty(&rpm)?,
    )?;
    let current = o.sysroot.join("etc/machine-config-daemon/currentconfig");
    let mc = match std::fs::read(&current) {
        Ok(b) => b,
        Err(_) => serde_json::to_vec_pretty(&synthesized_machineconfig(&o.sysroot)?)?,
    };
    std::fs::write(work.join("mco-currentconfig.json"), mc)?;
    let id = format!("{}.{}", booted.csum(), booted.deployserial());
    let origin = o.sysroot.join(format!(
        "ostree/deploy/{}/deploy/{id}.origin",
        booted.osname()
    ));
    std::fs::copy(&origin, work.join(format!("ostree-{id}.origin")))
        .with_context(|| format!("copying {}", origin.display()))?;
    let bin = work.join("imgmode");
    std::fs::copy(&o.self_exe, &bin)
        .with_context(|| format!("copying {}", o.self_exe.display()))?;
    Ok(())
}

/// The one-layer seed image of the work directory's files, published to `output`; what was
/// made goes into `created` and `created.json`.
fn write_image(
    o: &CreateOpts,
    work: &Path,
    output: &Output,
    store: &Store,
    created: &mut Created,
) -> Result<()> {
    let comp = o.compression;
    let files = seed_files(work, comp)?;
    let info = std::fs::read_to_string(work.join("manifest.json"))?;
    let labels = BTreeMap::from([
        (
            LABEL_FORMAT_VERSION.to_string(),
            SEED_FORMAT_VERSION.to_string(),
        ),
        (LABEL_CLUSTER_INFO.to_string(), info),
        (LABEL_COMPRESSION.to_string(), comp.name().to_string()),
    ]);
    let staged = match output {
        Output::Local(_) => store.staging()?,
        Output::Transport(_) => tempfile::Builder::new()
            .prefix(".image-")
            .tempdir_in(work)?,
    };
    let digest = image::write_layout(
        work,
        &files,
        &[("lca-cli", "imgmode")],
        &labels,
        imgmode_support::host::host_arch(),
        &imgmode_support::time::rfc3339(std::time::SystemTime::now()),
        staged.path(),
    )?;
    let reference = image::publish(store, staged, output)?;
    created.digest = digest;
    created.reference = reference;
    for f in files.iter().chain(std::iter::once(&"lca-cli".to_string())) {
        let n = if f == "lca-cli" { "imgmode" } else { f };
        created
            .files
            .insert(f.clone(), std::fs::metadata(work.join(n))?.len());
    }
    std::fs::write(work.join("created.json"), serde_json::to_vec(&created)?)?;
    Ok(())
}

/// The seed's files, by name: lifecycle-agent's fixed set (the `lca-cli` alias is added when
/// the image is written), the three tarballs and the booted deployment's origin. Nothing else
/// of the work directory goes in (its step log, recert's summary and plans, the seed system's
/// saved pull secret, temporaries).
fn seed_files(work: &Path, comp: Compression) -> Result<Vec<String>> {
    let mut files: Vec<String> = crate::FIXED_FILES
        .iter()
        .filter(|f| **f != "lca-cli")
        .map(|f| f.to_string())
        .chain(crate::TARBALLS.iter().map(|t| comp.file_name(t)))
        .collect();
    for e in std::fs::read_dir(work)? {
        let n = e?.file_name().to_string_lossy().into_owned();
        if n.starts_with("ostree-") && n.ends_with(".origin") {
            files.push(n);
        }
    }
    for f in &files {
        ensure!(
            work.join(f).is_file(),
            "the seed's {f} is missing from {}",
            work.display()
        );
    }
    files.sort();
    Ok(files)
}

/// The post-pivot unit and its enablement link, relative to the seed's root.
fn post_pivot_paths(o: &CreateOpts) -> (PathBuf, PathBuf) {
    let sd = o.sysroot.join("etc/systemd/system");
    (
        sd.join(crate::postpivot::UNIT),
        sd.join("multi-user.target.wants")
            .join(crate::postpivot::UNIT),
    )
}

/// Put `imgmode-post-pivot.service` (enabled) into the seed's /etc, so `etc.tgz` carries it to
/// every installed copy, as lifecycle-agent does with its post-pivot unit.
fn write_post_pivot_unit(o: &CreateOpts) -> Result<()> {
    let (unit, link) = post_pivot_paths(o);
    std::fs::create_dir_all(link.parent().expect("a parent"))?;
    std::fs::write(
        &unit,
        crate::postpivot::unit_text(&o.cluster, "/usr/bin/imgmode"),
    )?;
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(format!("../{}", crate::postpivot::UNIT), &link)?;
    Ok(())
}

/// The seed system's own pull secret back into etcd (started for it, and stopped again).
fn put_pull_secret_back(o: &CreateOpts) -> Result<()> {
    let saved = o.work_dir.join(SAVED_PULL_SECRET);
    if !saved.exists() {
        return Ok(());
    }
    if let Some(e) = &o.cluster.etcd_service {
        systemctl("start", e)?;
    }
    crate::pullsecret::put_back(&o.cluster, &saved)?;
    if let Some(e) = &o.cluster.etcd_service {
        systemctl("stop", e)?;
    }
    Ok(())
}

/// Bring the seed system back: etcd, certificates valid again, services, healthy.
pub fn restore(o: &CreateOpts) -> Result<()> {
    // the seed itself is not a copy: its post-pivot unit goes
    let (unit, link) = post_pivot_paths(o);
    let _ = std::fs::remove_file(link);
    let _ = std::fs::remove_file(unit);
    if let Some(e) = &o.cluster.etcd_service {
        systemctl("start", e)?;
    }
    crate::pullsecret::put_back(&o.cluster, &o.work_dir.join(SAVED_PULL_SECRET))?;
    if o.recert {
        let cfg = recert_config(o, false);
        imgmode_recert::run(&cfg.check()?).context("recert extend_expiration")?;
    }
    start_and_wait_healthy(
        &o.cluster,
        120,
        "the seed system did not become healthy again",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_diff_lines() {
        let (c, d) =
            parse_config_diff("M    hostname\nA    kubernetes\nA    my file\nD    motd\n\n");
        assert_eq!(c, vec!["hostname", "kubernetes", "my file"]);
        assert_eq!(d, vec!["motd"]);
    }

    #[test]
    fn an_installed_copy_is_refused_unless_asked() {
        let td = tempfile::tempdir().unwrap();
        let mut o = CreateOpts::new("seed", "/bin/true".into(), "imgmode test");
        o.sysroot = td.path().to_path_buf();
        refuse_installed_copy(&o).unwrap();
        std::fs::create_dir_all(td.path().join("var/lib/imgmode/post-pivot")).unwrap();
        let e = refuse_installed_copy(&o).unwrap_err().to_string();
        assert!(e.contains("pass --allow-installed-copy"), "{e}");
        o.allow_installed_copy = true;
        refuse_installed_copy(&o).unwrap();
    }

    #[test]
    fn a_work_directory_is_trusted_only_when_it_is_ours_alone() {
        use std::os::unix::fs::PermissionsExt;
        let td = tempfile::tempdir().unwrap();
        let fresh = td.path().join("a/work");
        prepare_work_dir(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        prepare_work_dir(&fresh).unwrap();
        let open = td.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_work_dir(&open).unwrap_err().to_string();
        assert!(e.contains("is not this user's alone"), "{e}");
        let link = td.path().join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        let e = prepare_work_dir(&link).unwrap_err().to_string();
        assert!(
            e.contains("is not a directory (a symlink or a file)"),
            "{e}"
        );
    }

    #[test]
    fn a_work_directory_resumes_only_the_same_options() {
        let td = tempfile::tempdir().unwrap();
        let mut o = CreateOpts::new("seed-a", "/usr/bin/imgmode".into(), "imgmode test");
        o.work_dir = td.path().to_path_buf();
        let mut log = open_log(&o, td.path(), Steps::hidden()).unwrap();
        log.once("cluster-info", "info", |_| Ok(())).unwrap();
        drop(log);
        let log = open_log(&o, td.path(), Steps::hidden()).unwrap();
        assert!(log.is_done("cluster-info"));
        assert_eq!(
            log.state().run,
            r#"{"output":"seed-a","compression":"gzip"}"#
        );
        o.output = "seed-b".into();
        let e = open_log(&o, td.path(), Steps::hidden()).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "{0} holds an interrupted seed creation with other options ({{\"output\":\"seed-a\",\"compression\":\"gzip\"}}); run that command again to resume it (removing the directory instead loses the seed system's pull secret, which it holds while etcd has the seed's placeholder)",
                td.path().display()
            )
        );

        // a work directory of the older checkpoint format is refused, never started over
        let old = tempfile::tempdir().unwrap();
        std::fs::create_dir(old.path().join("checks")).unwrap();
        std::fs::write(old.path().join("run.json"), "{}").unwrap();
        let e = open_log(&o, old.path(), Steps::hidden()).err().unwrap();
        assert!(e.to_string().contains("started by an older imgmode"), "{e}");
        assert!(old.path().join("run.json").exists());
    }

    #[test]
    fn machine_specific_etc_is_excluded() {
        assert!(etc_excluded("hostname"));
        assert!(etc_excluded(
            "NetworkManager/system-connections/eth0.nmconnection"
        ));
        assert!(!etc_excluded("hostname.d"));
        assert!(!etc_excluded("kubernetes/kubeconfig"));
        assert!(etc_excluded("ssh/ssh_host_ed25519_key"));
        assert!(etc_excluded("ssh/ssh_host_rsa_key.pub"));
        assert!(!etc_excluded("ssh/sshd_config"));
    }
}
