//! `imgmode seed create`: capture a running, healthy seed system as a seed image in
//! lifecycle-agent's format, then bring the seed system back.
//!
//! Steps (each finished step leaves a marker in `<work>/checks/`, so running the same command
//! again after an interruption resumes where it stopped and never runs recert twice):
//! preflight (root, ostree-booted, nothing staged, output writable, free space) -> health
//! (services active, etcd answers, the API's `/readyz` with the admin kubeconfig) -> seed
//! cluster info -> containers.list -> stop the cluster services -> recert `force_expire`
//! -> stop etcd -> `var`, `etc` (+ `etc.deletions`), `ostree` tarballs -> `rpm-ostree.json`,
//! `mco-currentconfig.json`, the booted `.origin`, this binary -> the one-layer image ->
//! restore (etcd, recert `extend_expiration`, services, health again).

use crate::archive::{tar_create, Compression, Written};
use crate::image::{self, Output};
use crate::manifest::{AdditionalTrustBundle, SeedClusterInfo};
use crate::cluster::{check_health, etcd_objects, start_and_wait_healthy, systemctl, Cluster};
use crate::{LABEL_CLUSTER_INFO, LABEL_COMPRESSION, LABEL_FORMAT_VERSION, SEED_FORMAT_VERSION};
use anyhow::{bail, Context, Result};
use imgmode_support::cmd::{require_root, require_tools, Run};
use {imgmode_image::Store, imgmode_support::Steps};
use imgmode_recert::config::RecertConfig;
use imgmode_recert::etcd::EtcdObject;
use ostree_ext::ostree;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

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
];

/// `/etc` entries that belong to one machine (relative to `/etc`): never in `etc.tgz`.
pub const ETC_EXCLUDES: &[&str] = &[
    "hostname",
    "machine-id",
    "NetworkManager/system-connections",
    "machine-config-daemon/orig/var/lib/kubelet",
    "openvswitch/conf.db",
    "openvswitch/.conf.db.~lock~",
];

#[derive(Debug, Clone)]
pub struct CreateOpts {
    /// Where the seed image goes (local name or transport reference).
    pub output: String,
    /// `/` on the seed system.
    pub sysroot: PathBuf,
    /// Archives and checkpoints (`/var/tmp/imgmode-seed`: excluded from `var.tgz`).
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
}

impl CreateOpts {
    pub fn new(output: &str, self_exe: PathBuf, tool_version: &str) -> Self {
        CreateOpts {
            output: output.to_string(),
            sysroot: "/".into(),
            work_dir: "/var/tmp/imgmode-seed".into(),
            cluster: Cluster::default(),
            recert: true,
            restore: true,
            compression: Compression::default(),
            self_exe,
            tool_version: tool_version.to_string(),
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
    /// Seconds per step.
    pub timings: BTreeMap<String, f64>,
    pub restored: bool,
}

/// The run a work directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RunId {
    output: String,
    compression: String,
}

struct Ctx<'a> {
    o: &'a CreateOpts,
    work: PathBuf,
    checks: PathBuf,
    steps: Steps,
    created: Created,
}

impl Ctx<'_> {
    fn done(&self, step: &str) -> bool {
        self.checks.join(step).exists()
    }
    fn mark(&self, step: &str) -> Result<()> {
        std::fs::write(self.checks.join(step), b"done\n")?;
        Ok(())
    }
    /// Run `f` once: skipped when its marker exists.
    fn once(
        &mut self,
        step: &str,
        what: &str,
        f: impl FnOnce(&mut Self) -> Result<()>,
    ) -> Result<()> {
        if self.done(step) {
            self.steps.step(&format!("{what}: done in an earlier run"));
            return Ok(());
        }
        self.steps.step(what);
        let t0 = Instant::now();
        f(self).with_context(|| format!("seed create: {what}"))?;
        self.created
            .timings
            .insert(step.to_string(), t0.elapsed().as_secs_f64());
        self.mark(step)
    }
}

fn find<'a>(objects: &'a [EtcdObject], key: &str) -> Option<&'a serde_json::Value> {
    objects.iter().find(|o| o.key == key).map(|o| &o.value)
}

fn strings(v: &serde_json::Value, f: impl Fn(&serde_json::Value) -> Option<&str>) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(&f).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The seed cluster info, from etcd and the system.
pub fn gather_cluster_info(o: &CreateOpts, objects: &[EtcdObject]) -> Result<SeedClusterInfo> {
    let (name, domain, _) = imgmode_recert::etcd::cluster_identity(objects).context(
        "etcd has no kube-system/cluster-config-v1 install-config naming the cluster and base domain",
    )?;
    let (hostname, ip) = imgmode_recert::etcd::node_identity(objects)?
        .context("etcd has no node object under /kubernetes.io/minions/")?;
    let cv = find(
        objects,
        "/kubernetes.io/config.openshift.io/clusterversions/version",
    )
    .context("etcd has no ClusterVersion (config.openshift.io/clusterversions/version)")?;
    let version = cv["status"]["desired"]["version"]
        .as_str()
        .context("the ClusterVersion has no status.desired.version")?
        .to_string();
    let release_registry = cv["status"]["desired"]["image"]
        .as_str()
        .and_then(|i| i.split_once('/'))
        .map(|(r, _)| r.to_string())
        .unwrap_or_default();
    let proxy = find(
        objects,
        "/kubernetes.io/config.openshift.io/proxies/cluster",
    );
    let has_proxy = proxy.is_some_and(|p| {
        ["httpProxy", "httpsProxy"]
            .iter()
            .any(|k| p["spec"][k].as_str().is_some_and(|s| !s.is_empty()))
    });
    let network = find(
        objects,
        "/kubernetes.io/config.openshift.io/networks/cluster",
    );
    let install_config: serde_yaml::Value = find(
        objects,
        "/kubernetes.io/configmaps/kube-system/cluster-config-v1",
    )
    .and_then(|c| c["data"]["install-config"].as_str())
    .and_then(|t| serde_yaml::from_str(t).ok())
    .unwrap_or_default();
    let fips_kernel =
        std::fs::read_to_string("/proc/sys/crypto/fips_enabled").is_ok_and(|s| s.trim() == "1");
    let has_fips = install_config
        .get("fips")
        .and_then(|f| f.as_bool())
        .unwrap_or(fips_kernel);
    let machine_networks = install_config
        .get("networking")
        .and_then(|n| n.get("machineNetwork"))
        .and_then(|m| m.as_sequence())
        .map(|s| {
            s.iter()
                .filter_map(|e| e.get("cidr")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let user_ca = find(
        objects,
        "/kubernetes.io/configmaps/openshift-config/user-ca-bundle",
    )
    .is_some_and(|c| {
        c["data"]["ca-bundle.crt"]
            .as_str()
            .is_some_and(|s| !s.trim().is_empty())
    });
    let registries = std::fs::read_to_string(o.sysroot.join("etc/containers/registries.conf"))
        .unwrap_or_default();
    let container_storage = {
        let p = o.sysroot.join("var/lib/containers");
        let separate = std::process::Command::new("mountpoint")
            .arg("-q")
            .arg(&p)
            .status()
            .is_ok_and(|s| s.success());
        if separate {
            Run::new("findmnt")
                .args(["-n", "-o", "SOURCE", "--target"])
                .arg(&p)
                .read()
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        } else {
            String::new()
        }
    };
    let ingress_cn = objects
        .iter()
        .find(|o| o.key == "/kubernetes.io/secrets/openshift-ingress-operator/router-ca")
        .and_then(|o| o.value["data"]["tls.crt"].as_str())
        .and_then(|b| imgmode_recert::text::b64_decode(b).ok())
        .and_then(|pem| openssl::x509::X509::from_pem(&pem).ok())
        .and_then(|c| {
            c.subject_name()
                .entries_by_nid(openssl::nid::Nid::COMMONNAME)
                .next()
                .map(|e| String::from_utf8_lossy(e.data().as_slice()).into_owned())
        })
        .unwrap_or_default();
    Ok(SeedClusterInfo {
        seed_cluster_ocp_version: version,
        base_domain: domain,
        cluster_name: name,
        node_ip: ip.clone().unwrap_or_default(),
        node_ips: ip.into_iter().collect(),
        release_registry,
        mirror_registry_configured: registries.contains("[[registry.mirror]]"),
        sno_hostname: hostname,
        recert_image_pull_spec: o.tool_version.clone(),
        has_proxy,
        cluster_network_cidr: network
            .map(|n| strings(&n["spec"]["clusterNetwork"], |e| e["cidr"].as_str()))
            .unwrap_or_default(),
        service_network_cidr: network
            .map(|n| strings(&n["spec"]["serviceNetwork"], |e| e.as_str()))
            .unwrap_or_default(),
        has_fips,
        additional_trust_bundle: Some(AdditionalTrustBundle {
            has_user_ca_bundle: user_ca,
            proxy_configmap_name: proxy
                .and_then(|p| p["spec"]["trustedCA"]["name"].as_str())
                .unwrap_or_default()
                .to_string(),
        }),
        container_storage_mountpoint_target: container_storage,
        ingress_certificate_cn: ingress_cn,
        machine_networks,
    })
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
    ETC_EXCLUDES
        .iter()
        .any(|e| p == *e || p.strip_prefix(e).is_some_and(|r| r.starts_with('/')))
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
        ..Default::default()
    }
}

/// Run `imgmode seed create`.
pub fn create(o: &CreateOpts, store: &Store, steps: Steps) -> Result<Created> {
    // preflight: nothing is stopped or written before these pass
    require_root("imgmode seed create")?;
    require_tools(&["tar", "systemctl", "ostree", "du"])?;
    if !o.sysroot.join("run/ostree-booted").exists() {
        bail!("not an ostree-booted system ({} missing): seed create captures the booted ostree deployment of a seed system", o.sysroot.join("run/ostree-booted").display());
    }
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
    let work = o.work_dir.clone();
    let checks = work.join("checks");
    std::fs::create_dir_all(&checks)
        .with_context(|| format!("creating the work directory {}", work.display()))?;
    let run_id = RunId {
        output: o.output.clone(),
        compression: o.compression.name().to_string(),
    };
    let run_file = work.join("run.json");
    match std::fs::read_to_string(&run_file) {
        Ok(t) if serde_json::from_str::<RunId>(&t).ok().as_ref() != Some(&run_id) => bail!(
            "{} holds an interrupted seed creation with other options ({}); run that command again to resume it, or remove {} (and start the cluster services again) to start over",
            work.display(),
            t.trim(),
            work.display()
        ),
        Ok(_) => steps.step(&format!("resuming the seed creation in {}", work.display())),
        Err(_) => std::fs::write(&run_file, serde_json::to_vec(&run_id)?)?,
    }
    let mut c = Ctx {
        o,
        work: work.clone(),
        checks,
        steps,
        created: Created::default(),
    };
    let stopped = c.done("stop-services");
    if !stopped {
        // space: the archives and the layer holding them (gzip -1 leaves ~45% of a root
        // filesystem; count 60% twice)
        let repo = o.sysroot.join("ostree/repo");
        let total = du(&repo) + du(&o.sysroot.join("var")) + du(&o.sysroot.join("etc"));
        let need = total / 10 * 12 + (64 << 20);
        let free = imgmode_support::fs::free_bytes(&work)?;
        if free < need {
            let _ = std::fs::remove_dir_all(&work);
            bail!(
                "not enough space in {} for the seed archives: about {} MiB needed, {} MiB free; free space, or pass --work-dir on a larger filesystem",
                work.display(),
                need >> 20,
                free >> 20
            );
        }
        c.steps.step("checking the seed cluster's health");
        if let Err(e) = check_health(&o.cluster) {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
    }
    let res = capture(&mut c, &booted, &output, store);
    match res {
        Ok(()) => {}
        Err(e) if c.done("stop-services") => {
            return Err(e.context(format!(
                "the seed system's cluster services are stopped; run the same imgmode seed create again to resume from {}",
                work.display()
            )))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
    }
    let mut created = c.created;
    if o.restore {
        c.steps
            .step("restoring the seed system: etcd, recert extend_expiration, services");
        let t0 = Instant::now();
        restore(o)?;
        created.restored = true;
        created
            .timings
            .insert("restore".into(), t0.elapsed().as_secs_f64());
    } else {
        c.steps
            .step("leaving the cluster services stopped (--no-restore)");
    }
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    Ok(created)
}

fn capture(c: &mut Ctx, booted: &ostree::Deployment, output: &Output, store: &Store) -> Result<()> {
    let o = c.o;
    let work = c.work.clone();
    c.once(
        "cluster-info",
        "recording the seed cluster info (manifest.json)",
        |c| {
            let objects = etcd_objects(&o.cluster.etcd_endpoint)?;
            let info = gather_cluster_info(o, &objects)?;
            std::fs::write(work.join("manifest.json"), info.to_json())?;
            c.created.cluster_info = info;
            Ok(())
        },
    )?;
    c.created.cluster_info =
        SeedClusterInfo::parse(&std::fs::read_to_string(work.join("manifest.json"))?)?;
    c.once(
        "containers-list",
        "listing the container images (containers.list)",
        |_| {
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
        },
    )?;
    c.once("stop-services", "stopping the cluster services", |_| {
        for unit in &o.cluster.services {
            systemctl("stop", unit)?;
        }
        Ok(())
    })?;
    c.once("recert", "recert: force-expiring every certificate", |_| {
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
                serde_yaml::to_string(&summary)?,
            )?;
        }
        Ok(())
    })?;
    c.once("stop-etcd", "stopping etcd", |_| {
        if let Some(e) = &o.cluster.etcd_service {
            systemctl("stop", e)?;
        }
        Ok(())
    })?;
    let comp = o.compression;
    c.once("var", "archiving /var (var.tgz)", |c| {
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
        let w = tar_create(&args, None, &work.join(comp.file_name("var")), comp)?;
        c.created.tarballs.push(w);
        Ok(())
    })?;
    c.once(
        "post-pivot-unit",
        "adding the post-pivot unit to /etc (for the seed's copies)",
        |_| write_post_pivot_unit(o),
    )?;
    c.once(
        "etc",
        "archiving /etc changes (etc.tgz, etc.deletions)",
        |c| {
            let diff = Run::new("ostree")
                .args(["admin", "config-diff", "--sysroot"])
                .arg(&o.sysroot)
                .read()?;
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
            let w = tar_create(&args, Some(&list), &work.join(comp.file_name("etc")), comp)?;
            c.created.tarballs.push(w);
            Ok(())
        },
    )?;
    c.once(
        "ostree",
        "archiving the ostree repository (ostree.tgz)",
        |c| {
            let repo = o.sysroot.join("ostree/repo");
            let args = vec!["-C".into(), repo.display().to_string(), ".".into()];
            let w = tar_create(&args, None, &work.join(comp.file_name("ostree")), comp)?;
            c.created.tarballs.push(w);
            Ok(())
        },
    )?;
    c.once(
        "status",
        "recording rpm-ostree.json, mco-currentconfig.json and the origin",
        |_| {
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
        },
    )?;
    c.once("image", "writing the seed image", |c| {
        let mut files: Vec<String> = std::fs::read_dir(&work)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                !matches!(n.as_str(), "run.json" | "recert-summary.yaml") && !n.ends_with(".tmp")
            })
            .collect();
        files.sort();
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
                .tempdir_in(&work)?,
        };
        let digest = image::write_layout(
            &work,
            &files,
            &[("lca-cli", "imgmode")],
            &labels,
            imgmode_support::host::host_arch(),
            &imgmode_os::base::humantime_rfc3339(std::time::SystemTime::now()),
            staged.path(),
        )?;
        let reference = image::publish(store, staged, output)?;
        c.created.digest = digest;
        c.created.reference = reference;
        for f in files.iter().chain(std::iter::once(&"lca-cli".to_string())) {
            let n = if f == "lca-cli" { "imgmode" } else { f };
            c.created
                .files
                .insert(f.clone(), std::fs::metadata(work.join(n))?.len());
        }
        std::fs::write(work.join("created.json"), serde_json::to_vec(&c.created)?)?;
        Ok(())
    })?;
    if let Ok(t) = std::fs::read(work.join("created.json")) {
        let prev: Created = serde_json::from_slice(&t)?;
        let timings = std::mem::take(&mut c.created.timings);
        c.created = prev;
        c.created.timings.extend(timings);
    }
    Ok(())
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
    std::fs::write(&unit, crate::postpivot::unit_text(&o.cluster, "/usr/bin/imgmode"))?;
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(format!("../{}", crate::postpivot::UNIT), &link)?;
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
    if o.recert {
        let cfg = recert_config(o, false);
        imgmode_recert::run(&cfg.check()?).context("recert extend_expiration")?;
    }
    start_and_wait_healthy(&o.cluster, 120, "the seed system did not become healthy again")
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
    fn machine_specific_etc_is_excluded() {
        assert!(etc_excluded("hostname"));
        assert!(etc_excluded(
            "NetworkManager/system-connections/eth0.nmconnection"
        ));
        assert!(!etc_excluded("hostname.d"));
        assert!(!etc_excluded("kubernetes/kubeconfig"));
    }
}
