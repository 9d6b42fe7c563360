//! `imgmode ibi post-pivot`: the first boot of an installed seed copy. Run by
//! `imgmode-post-pivot.service`, which `imgmode seed create` puts in the seed's `/etc` (as
//! lifecycle-agent sneaks its post-pivot unit into the seed), with `Restart=on-failure`.
//!
//! Waits for the configuration ISO (volume label `cluster-config`), reads
//! `cluster-configuration/manifest.json` (a SeedReconfiguration), then: the network
//! (`networkConfig` as systemd-networkd files, applied first and waited for: the unit does not
//! wait for network-online.target, so a site without DHCP comes up on its static address), the
//! site's settings, SSH key for root, new
//! SSH host keys, the pull secret (`/var/lib/kubelet/config.json`; in etcd with the extra
//! manifests), the hostname, NTP sources; stops the cluster services, starts etcd, runs recert
//! (cluster rename `name:domain:infraID`, hostname, node IP, the configuration's signer keys as
//! `use_key_rules` and its admin CA certificate as `use_cert_rules`, lifetimes extended),
//! applies the extra manifests into etcd, starts the services, waits for the API's `/readyz`,
//! and disables itself. Each finished step is recorded in the state directory's step log
//! (`steps.json`), so a restart resumes and recert never runs twice; `done` makes the unit's
//! condition false for good.

use crate::cluster::{etcd_objects, start_and_wait_healthy, systemctl, Cluster};
use crate::reconfig::{SeedReconfiguration, EXTRA_MANIFESTS, MANIFEST_PATH, VOLUME_LABEL};
use anyhow::{bail, ensure, Context, Result};
use imgmode_recert::config::RecertConfig;
use imgmode_recert::etcd::EtcdObject;
use imgmode_support::cmd::Run;
use imgmode_support::fs::write_private;
use imgmode_support::steplog::StepLog;
use imgmode_support::Steps;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The unit's name (in the seed's `/etc/systemd/system`).
pub const UNIT: &str = "imgmode-post-pivot.service";
/// Where post-pivot keeps its step log, the manifest copy and recert's summary, and `done`
/// once everything is (the unit's condition).
pub const STATE_DIR: &str = "/var/lib/imgmode/post-pivot";
/// The step log in the state directory: [`imgmode_support::steplog::StepState`] as JSON.
pub const STEP_LOG: &str = "steps.json";
/// The step log's run: post-pivot has no options a resume must match.
const RUN: &str = "post-pivot";

#[derive(Debug, Clone)]
pub struct PostPivotOpts {
    /// The cluster: services, etcd, the node's kubeconfig, static dirs (as for seed create).
    pub cluster: Cluster,
    pub state_dir: PathBuf,
    /// How long to wait for the configuration ISO before failing (the unit then restarts).
    pub wait: Duration,
    /// Where the ISO is mounted.
    pub mount_dir: PathBuf,
}

/// The unit `seed create` writes: the cluster description of the seed run, so post-pivot
/// handles the same services.
pub fn unit_text(o: &Cluster, exe: &str) -> String {
    let mut args = String::new();
    for s in &o.services {
        args.push_str(&format!(" --service {s}"));
    }
    if let Some(e) = &o.etcd_service {
        args.push_str(&format!(" --etcd-service {e}"));
    }
    args.push_str(&format!(" --etcd-endpoint {}", o.etcd_endpoint));
    args.push_str(&format!(" --kubeconfig {}", o.kubeconfig.display()));
    for d in &o.static_dirs {
        args.push_str(&format!(" --static-dir {}", d.display()));
    }
    if let Some(p) = &o.encryption_config {
        args.push_str(&format!(" --encryption-config {}", p.display()));
    }
    format!(
        "# Written by imgmode seed create: reconfigures a copy of this seed from the cluster-config ISO.\n\
         [Unit]\nDescription=imgmode post-pivot: configure this seed copy from the cluster-config ISO\n\
         After=network.target systemd-networkd.service\n\
         ConditionPathExists=!{STATE_DIR}/done\n\n\
         [Service]\nType=oneshot\nRemainAfterExit=yes\nRestart=on-failure\nRestartSec=10\n\
         StandardOutput=journal+console\nStandardError=journal+console\n\
         ExecStart={exe} ibi post-pivot{args}\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    )
}

/// etcd key of a Kubernetes object: where a real control plane stores its group, version and
/// kind ([`imgmode_recert::etcd::storage_key`]).
pub fn object_key(v: &serde_json::Value) -> Result<String> {
    let kind = v["kind"].as_str().context("a manifest has no kind")?;
    let api_version = v["apiVersion"]
        .as_str()
        .with_context(|| format!("a manifest of kind {kind} has no apiVersion"))?;
    let name = v["metadata"]["name"]
        .as_str()
        .context("a manifest has no metadata.name")?;
    let ns = v["metadata"]["namespace"].as_str().unwrap_or_default();
    ensure!(
        !imgmode_recert::etcd::stored_as_protobuf(api_version)
            || imgmode_recert::kpb::writes_new(api_version, kind),
        "{api_version} {kind} {name}: a real control plane stores it as Kubernetes protobuf, which imgmode writes only for Secret, ConfigMap, Node and Namespace; apply it once the cluster runs"
    );
    imgmode_recert::etcd::storage_key(api_version, kind, ns, name)
}

/// OpenShift's `kube-system/kubeadmin` secret: the kubeadmin password's bcrypt hash.
pub fn kubeadmin_secret(hash: &str) -> serde_json::Value {
    use base64::Engine;
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": "kubeadmin", "namespace": "kube-system"},
        "data": {"kubeadmin": base64::engine::general_purpose::STANDARD.encode(hash)},
    })
}

/// Every object of the extra manifest files in `dir` (YAML or JSON, several per file).
pub fn read_extra_manifests(dir: &Path) -> Result<Vec<serde_json::Value>> {
    let mut out = vec![];
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for p in files {
        for v in manifest_docs(&p)? {
            object_key(&v).with_context(|| p.display().to_string())?;
            out.push(v);
        }
    }
    Ok(out)
}

/// The objects of one manifest file: YAML or JSON, several `---` documents, empty ones skipped.
pub fn manifest_docs(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = vec![];
    for doc in yaml_serde::Deserializer::from_str(&text) {
        let v = serde_json::Value::deserialize(doc)
            .with_context(|| format!("{}: not a YAML or JSON manifest", path.display()))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The configuration ISO's manifest, checked for what post-pivot needs.
pub fn parse_manifest(text: &str) -> Result<SeedReconfiguration> {
    let m: SeedReconfiguration = serde_json::from_str(text)
        .with_context(|| format!("the configuration ISO's {MANIFEST_PATH} is malformed"))?;
    ensure!(
        !m.cluster_name.is_empty() && !m.base_domain.is_empty() && !m.hostname.is_empty(),
        "the configuration ISO's {MANIFEST_PATH} names no cluster, base domain or hostname"
    );
    ensure!(
        m.api_version == crate::reconfig::API_VERSION,
        "the configuration ISO's {MANIFEST_PATH} has api_version {}; this imgmode reads {}: make the ISO with a matching imgmode ibi create-config-image",
        m.api_version,
        crate::reconfig::API_VERSION
    );
    ensure!(
        m.kubeconfig_crypto_retention.ingress_crypto.ingress_ca.trim().is_empty(),
        "the configuration ISO's {MANIFEST_PATH} gives ingress_crypto.ingress_ca, which imgmode does not apply (recert makes a new ingress CA); make the ISO without it"
    );
    crate::nmstate::to_networkd(&m.raw_nm_state_config)
        .with_context(|| format!("the configuration ISO's {MANIFEST_PATH}: raw_nm_state_config"))?;
    Ok(m)
}

/// Wait for the configuration ISO and copy its content into the state directory.
fn fetch_config(o: &PostPivotOpts) -> Result<()> {
    let dev = PathBuf::from(format!("/dev/disk/by-label/{VOLUME_LABEL}"));
    let deadline = Instant::now() + o.wait;
    while !dev.exists() {
        if Instant::now() > deadline {
            bail!(
                "the configuration ISO (volume label {VOLUME_LABEL}) is not attached after {} s; attach the ISO made by imgmode ibi create-config-image (post-pivot retries)",
                o.wait.as_secs()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    std::fs::create_dir_all(&o.mount_dir)?;
    Run::new("mount")
        .args(["-o", "ro"])
        .arg(&dev)
        .arg(&o.mount_dir)
        .output()
        .with_context(|| format!("mounting {}", dev.display()))?;
    let copied = (|| -> Result<()> {
        let manifest = o.mount_dir.join(MANIFEST_PATH);
        let text = std::fs::read_to_string(&manifest).with_context(|| {
            format!("the configuration ISO has no {MANIFEST_PATH}; make it with imgmode ibi create-config-image")
        })?;
        let extra = read_extra_manifests(&o.mount_dir.join(EXTRA_MANIFESTS))?;
        let m = parse_manifest(&text)?;
        write_private(&o.state_dir.join("manifest.json"), &text)?;
        write_private(
            &o.state_dir.join("extra-manifests.json"),
            &serde_json::to_string(&extra)?,
        )?;
        let rec = Reconfigured {
            cluster_name: m.cluster_name,
            base_domain: m.base_domain,
            cluster_id: m.cluster_id,
            infra_id: m.infra_id,
            hostname: m.hostname,
        };
        write_private(
            &o.state_dir.join(RECONFIGURED),
            &serde_json::to_string(&rec)?,
        )?;
        Ok(())
    })();
    let _ = Run::new("umount").arg(&o.mount_dir).output();
    copied
}

/// recert's configuration for a SeedReconfiguration (without the etcd endpoint and the
/// directories to scan): the cluster rename with the infra ID, hostname and node IP, and the
/// configuration's signer keys as `use_key_rules` and admin CA certificate as `use_cert_rules`,
/// written into `keys` (private). Lifetimes are extended: the seed's certificates were
/// force-expired.
pub fn recert_config(m: &SeedReconfiguration, keys: &Path, ip: &str) -> Result<RecertConfig> {
    std::fs::create_dir_all(keys)?;
    std::fs::set_permissions(keys, std::fs::Permissions::from_mode(0o700))?;
    let mut use_key_rules = vec![];
    for (cn, pem) in m.kept_keys() {
        let p = keys.join(format!("{cn}.key"));
        write_private(&p, pem)?;
        use_key_rules.push(format!("{cn} {}", p.display()));
    }
    let mut use_cert_rules = vec![];
    for (cn, pem) in m.kept_certs() {
        let p = keys.join(format!("{cn}.crt"));
        write_private(&p, pem)?;
        use_cert_rules.push(p);
    }
    let rename = if m.infra_id.is_empty() {
        format!("{}:{}", m.cluster_name, m.base_domain)
    } else {
        format!("{}:{}:{}", m.cluster_name, m.base_domain, m.infra_id)
    };
    Ok(RecertConfig {
        use_key_rules,
        use_cert_rules,
        cluster_rename: Some(rename),
        hostname: Some(m.hostname.clone()),
        ip: Some(ip.to_string()),
        extend_expiration: true,
        ..Default::default()
    })
}

/// What post-pivot made of the host, kept in its state (`reconfigured.json`): names only, no
/// secret.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Reconfigured {
    pub cluster_name: String,
    pub base_domain: String,
    pub cluster_id: String,
    pub infra_id: String,
    pub hostname: String,
}

/// The files of the state that hold secrets while post-pivot runs (the configuration's signer
/// keys, pull secret and extra manifests): removed, and the removal synced, before `done`.
const SECRET_STATE: &[&str] = &["manifest.json", "extra-manifests.json", "keys"];

/// Run post-pivot.
pub fn run(o: &PostPivotOpts, steps: Steps) -> Result<Reconfigured> {
    imgmode_support::cmd::require_root("imgmode ibi post-pivot")?;
    std::fs::create_dir_all(&o.state_dir)?;
    std::fs::set_permissions(&o.state_dir, std::fs::Permissions::from_mode(0o700))?;
    let (mut log, _) = StepLog::resume(&o.state_dir.join(STEP_LOG), RUN, steps)?;
    // every step done (a run stopped before `done`): the secrets may be gone already
    let r = if log.is_done(LAST_STEP) {
        Ok(())
    } else {
        run_steps(o, &mut log).map(|_| ())
    };
    let fin = log.finish(&r);
    r?;
    fin?;
    remove_secret_state(&o.state_dir)?;
    imgmode_support::fs::write_atomic(&o.state_dir.join("done"), b"done\n", 0o600)?;
    // the unit's condition (no `done`) keeps it from running again; disabling it tidies up
    // without reloading systemd (a reload runs every generator: seconds under emulation)
    let _ = Run::new("systemctl")
        .args(["disable", "--no-reload", UNIT])
        .output();
    let rec = std::fs::read(o.state_dir.join(RECONFIGURED))
        .with_context(|| format!("reading {}", o.state_dir.join(RECONFIGURED).display()))?;
    Ok(serde_json::from_slice(&rec)?)
}

/// Remove [`SECRET_STATE`] from the state directory `dir` (what is already gone is fine) and
/// make the removal durable.
fn remove_secret_state(dir: &Path) -> Result<()> {
    for f in SECRET_STATE {
        imgmode_support::fs::remove_path(&dir.join(f))?;
    }
    imgmode_support::fs::sync_dir(dir)
}

/// The last step of [`run_steps`].
const LAST_STEP: &str = "start";
/// [`Reconfigured`]'s file in the state directory.
pub const RECONFIGURED: &str = "reconfigured.json";

/// The steps, each skipped when the log records it as done.
fn run_steps(o: &PostPivotOpts, log: &mut StepLog) -> Result<SeedReconfiguration> {
    // the host's own SSH host keys need nothing of the configuration: kept when this boot made
    // them all, else `ssh-keygen -A` (an RSA key among them, seconds under emulation) alongside
    // the steps up to `host`, which waits for it
    let mut host_keys =
        (!log.is_done("host")).then(|| std::thread::spawn(|| own_ssh_host_keys(Path::new("/"))));
    // recert's keys need nothing of the configuration either: one worker starts making them
    // now, while the steps below mostly wait (for the ISO, the network, etcd); recert takes
    // them and adds its other workers (the keys stay in memory, made on this host)
    let mut keys = (!log.is_done("recert")).then(|| imgmode_recert::start_key_pool(1));
    log.once("config", "waiting for the configuration ISO", |_| {
        fetch_config(o)
    })?;
    let m: SeedReconfiguration =
        serde_json::from_slice(&std::fs::read(o.state_dir.join("manifest.json"))?)?;
    let extra: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(o.state_dir.join("extra-manifests.json"))?)?;
    let c = &o.cluster;
    log.once(
        "network",
        "the configuration's networkConfig on the host",
        |_| apply_network(&m),
    )?;
    let mut trust = log.once(
        "site",
        "the node IP's address up, the site's settings checked; proxy, trust bundle and release mirror on the host",
        |l| site_host_settings(c, &m, l.steps()),
    )?;
    log.once(
        "host",
        "SSH key, new SSH host keys, pull secret, hostname, NTP sources",
        |_| configure_host(&m, host_keys.take()),
    )?;
    log.once(
        "stop",
        "stopping the cluster services, starting etcd",
        |_| {
            for s in &c.services {
                systemctl("stop", s)?;
            }
            if let Some(e) = &c.etcd_service {
                systemctl("start", e)?;
            }
            Ok(())
        },
    )?;
    log.once(
        "recert",
        "recert: new certificates and keys, cluster renamed",
        |_| run_recert(o, &m, keys.take()),
    )?;
    log.once(
        "extra-manifests",
        "the site's cluster objects, the kubeadmin secret and the extra manifests into etcd",
        |_| put_manifests(c, &m, &extra),
    )?;
    log.once(
        "trust",
        "the trust store's update (started by site) finished",
        |_| finish_trust_store(trust.take()),
    )?;
    log.once("start", "starting the cluster services", |_| {
        start_and_wait_healthy(c, 180, "the cluster did not become healthy")
    })?;
    Ok(m)
}

/// Where timesyncd takes imgmode's NTP sources.
pub const TIMESYNCD_CONF: &str = "/etc/systemd/timesyncd.conf.d/50-imgmode.conf";

/// `additionalNTPSources` (chrony `server`/`pool` lines, as lifecycle-agent carries them) for
/// systemd-timesyncd: `[Time]` with `NTP=` naming them.
pub fn timesyncd_conf(chrony_config: &str) -> Result<String> {
    let mut servers = vec![];
    for l in chrony_config
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        let mut w = l.split_whitespace();
        match (w.next(), w.next()) {
            (Some("server" | "pool"), Some(host)) => servers.push(host),
            _ => bail!(
                "the configuration's NTP sources hold a line that is not a server or pool: {l:?}"
            ),
        }
    }
    Ok(format!("[Time]\nNTP={}\n", servers.join(" ")))
}

/// Restart `unit` if it runs, queued (`--no-block`): post-pivot goes on while systemd restarts
/// it (sshd's restart took 0.8 s under emulation, timesyncd's 0.6 s). A unit that does not come
/// back is the system's own failed unit, not post-pivot's.
fn restart_if_running(unit: &str) {
    let _ = Run::new("systemctl")
        .args(RESTART_QUEUED)
        .arg(unit)
        .output();
}
/// [`restart_if_running`]'s `systemctl` arguments before the unit's name.
const RESTART_QUEUED: [&str; 2] = ["try-restart", "--no-block"];

/// The configuration's NTP sources for the time service the system has: chrony (a sources
/// file) or systemd-timesyncd (a drop-in); refused when it has neither.
fn ntp_sources(chrony_config: &str) -> Result<()> {
    if Path::new("/etc/chrony").is_dir() {
        imgmode_support::fs::write_atomic(
            Path::new("/etc/chrony/sources.d/imgmode.sources"),
            chrony_config.as_bytes(),
            0o644,
        )?;
        restart_if_running("chrony.service");
        return Ok(());
    }
    if Path::new("/usr/lib/systemd/systemd-timesyncd").exists() {
        imgmode_support::fs::write_atomic(
            Path::new(TIMESYNCD_CONF),
            timesyncd_conf(chrony_config)?.as_bytes(),
            0o644,
        )?;
        restart_if_running("systemd-timesyncd.service");
        return Ok(());
    }
    bail!("the configuration gives additionalNTPSources, and this system has neither chrony nor systemd-timesyncd to use them; add one to the seed's image")
}

/// Where the first boot's `imgmode-ssh-keygen.service` (the base image's) writes `sha256sum`
/// lines of the SSH host keys when it made every one of them on this boot. It is in /run, a
/// tmpfs made anew at each boot: no image, seed or earlier boot can have left it there.
pub const HOST_KEYS_MADE_THIS_BOOT: &str = "run/imgmode/ssh-host-keys-made-this-boot";

/// The unit that makes the host keys a machine lacks at boot.
const HOST_KEYGEN_UNIT: &str = "imgmode-ssh-keygen.service";

/// SSH host keys under `root` that are this machine's alone: those this boot's key generation
/// made ([`HOST_KEYS_MADE_THIS_BOOT`] lists every private key there is, with its bytes'
/// sha256) are kept; any other set is made anew ([`regenerate_ssh_host_keys`]). Returns
/// whether the keys were kept. On `/`, waits for the boot's key generation first.
pub fn own_ssh_host_keys(root: &Path) -> Result<bool> {
    if root == Path::new("/") {
        // a oneshot being started is waited for; one that ran runs again and makes nothing
        let _ = Run::new("systemctl")
            .args(["start", HOST_KEYGEN_UNIT])
            .output();
    }
    if host_keys_made_this_boot(root)? {
        return Ok(true);
    }
    regenerate_ssh_host_keys(root)?;
    Ok(false)
}

/// Whether every SSH host private key under `root` (`etc/ssh/ssh_host_*_key`) is listed in
/// [`HOST_KEYS_MADE_THIS_BOOT`] with its sha256, and the list names no other key.
fn host_keys_made_this_boot(root: &Path) -> Result<bool> {
    use sha2::Digest;
    let Ok(list) = std::fs::read_to_string(root.join(HOST_KEYS_MADE_THIS_BOOT)) else {
        return Ok(false);
    };
    let mut listed = std::collections::BTreeMap::new();
    for line in list.lines().filter(|l| !l.trim().is_empty()) {
        let Some((hash, path)) = line.split_once("  ") else {
            return Ok(false);
        };
        let Some(name) = Path::new(path).file_name() else {
            return Ok(false);
        };
        listed.insert(name.to_os_string(), hash.to_string());
    }
    let dir = root.join("etc/ssh");
    let mut found = 0;
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name();
        let n = name.to_string_lossy();
        if !(n.starts_with("ssh_host_") && n.ends_with("_key")) {
            continue;
        }
        found += 1;
        let hash = hex::encode(sha2::Sha256::digest(std::fs::read(e.path())?));
        if listed.get(&name) != Some(&hash) {
            return Ok(false);
        }
    }
    Ok(found > 0 && found == listed.len())
}

/// New SSH host keys under `root` (`etc/ssh/ssh_host_*`): `ssh-keygen -A` makes every type
/// anew and whatever keys the seed carried go, so no two sites of one seed share a host key. A
/// system without an SSH server (no `etc/ssh/sshd_config`) is left alone.
///
/// The keys are made in a private directory beside the old ones and renamed over them, each
/// private key before its public one: sshd, which may be starting meanwhile (the first boot's
/// own key generation lets it), finds a whole set of keys at every moment. Removing the old
/// keys first made its start fail when it came in between.
pub fn regenerate_ssh_host_keys(root: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = root.join("etc/ssh");
    if !dir.join("sshd_config").exists() {
        return Ok(());
    }
    let scratch = dir.join(".imgmode-host-keys");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(scratch.join("etc/ssh"))
        .with_context(|| format!("creating {}", scratch.display()))?;
    Run::new("ssh-keygen")
        .arg("-A")
        .arg("-f")
        .arg(&scratch)
        .output()?;
    let names = |d: &Path| -> Result<Vec<std::ffi::OsString>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(d).with_context(|| format!("reading {}", d.display()))? {
            let name = e?.file_name();
            if name.to_string_lossy().starts_with("ssh_host_") {
                v.push(name);
            }
        }
        v.sort();
        Ok(v)
    };
    let made = names(&scratch.join("etc/ssh"))?;
    ensure!(!made.is_empty(), "ssh-keygen -A made no SSH host key");
    for n in &made {
        std::fs::rename(scratch.join("etc/ssh").join(n), dir.join(n))
            .with_context(|| format!("putting the new SSH host key {n:?} in place"))?;
    }
    for n in names(&dir)?.into_iter().filter(|n| !made.contains(n)) {
        std::fs::remove_file(dir.join(&n))
            .with_context(|| format!("removing the seed's SSH host key {n:?}"))?;
    }
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}

/// The site's trust files in the host's store ([`crate::site::TRUST_DIR`], named
/// [`crate::site::TRUST_PREFIX`]...); none when the store has no such directory.
fn trust_files() -> Result<Vec<PathBuf>> {
    let dir = Path::new(crate::site::TRUST_DIR);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        if e.file_name()
            .to_string_lossy()
            .starts_with(crate::site::TRUST_PREFIX)
        {
            out.push(e.path());
        }
    }
    Ok(out)
}

/// The site's settings checked before anything changes (install-config's `fips` against the
/// kernel, the node IP against the machine networks, the proxy and the seed-decided fields
/// against the seed's, through [`crate::site::cluster_updates`] on etcd as the seed left it),
/// then the host's side of the proxy, trust bundle and registry mirrors.
/// The trust store's update ([`crate::truststore`]: its links, hash links and bundle) is
/// started on a thread of its own, returned for the `trust` step to wait for.
fn site_host_settings(
    c: &Cluster,
    m: &SeedReconfiguration,
    steps: &Steps,
) -> Result<Option<TrustUpdate>> {
    crate::site::check_fips(&m.install_config, imgmode_support::host::fips_enabled())?;
    if let Some(e) = &c.etcd_service {
        steps.step(&format!("site: starting {e}"));
        systemctl("start", e)?;
    }
    steps.step("site: reading the cluster's objects");
    let existing = etcd_objects(c)?;
    // the network step's address (static or DHCP), which came up while etcd started
    steps.step("site: waiting for the node IP's address, then checking the site's settings");
    let ip = node_ip(m, NODE_IP_WAIT)?;
    crate::site::cluster_updates(&existing, m, Some(&ip))?;
    let files = crate::site::host_files(&existing, m)?;
    steps.step("site: writing the host's files");
    // a trust bundle of an earlier run (or the seed's) does not linger
    let mut trust_changed = Vec::new();
    for p in trust_files()? {
        if !files.iter().any(|f| f.path == p) {
            imgmode_support::fs::remove_path(&p)?;
            trust_changed.push(p);
        }
    }
    for f in &files {
        if f.path.starts_with(crate::site::TRUST_DIR) {
            trust_changed.push(f.path.clone());
        }
    }
    let mut units_changed = false;
    for f in &files {
        if !write_host_file(f)? {
            continue;
        }
        units_changed |= f.path.starts_with(SYSTEMD_UNITS_DIR);
    }
    // the trust store's update (an `openssl rehash` of every CA of the system) runs
    // alongside the next steps, and the `trust` step waits for it before the services start
    let trust = if Path::new(crate::site::TRUST_DIR).is_dir() {
        steps.step(
            "site: updating the trust store (links, hash links and bundle, in the background)",
        );
        Some(std::thread::spawn(move || {
            crate::truststore::update(&crate::truststore::Store::system(), &trust_changed)
        }))
    } else {
        None
    };
    // a reload runs every generator (seconds under emulation): only when a drop-in changed
    if units_changed {
        steps.step("site: reloading systemd (the proxy's drop-ins changed)");
        Run::new("systemctl").arg("daemon-reload").output()?;
    }
    Ok(trust)
}

/// Where the host's files that systemd reads as units live.
const SYSTEMD_UNITS_DIR: &str = "/etc/systemd/system";

/// One of the site's host files written (or removed), when it is not so already; whether it
/// changed. A file is the site's when it is a regular file (not a link) with the site's mode
/// and content; anything else there is replaced, as before.
fn write_host_file(f: &crate::site::HostFile) -> Result<bool> {
    let meta = match std::fs::symlink_metadata(&f.path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", f.path.display())),
    };
    match &f.content {
        Some(text) => {
            let same = meta
                .as_ref()
                .is_some_and(|m| m.is_file() && m.permissions().mode() & 0o7777 == f.mode)
                && std::fs::read(&f.path).ok().as_deref() == Some(text.as_bytes());
            if !same {
                // write_atomic makes the parent directories
                imgmode_support::fs::write_atomic(&f.path, text.as_bytes(), f.mode)?;
            }
            Ok(!same)
        }
        None if meta.is_none() => Ok(false),
        None => {
            imgmode_support::fs::remove_path(&f.path)?;
            Ok(true)
        }
    }
}

/// The trust store's update that [`site_host_settings`] started; in a run resumed after the
/// `site` step (the update's thread gone with the process that ran it), the update again, for
/// every trust file of the site.
fn finish_trust_store(started: Option<TrustUpdate>) -> Result<()> {
    match started {
        Some(t) => t
            .join()
            .map_err(|_| anyhow::anyhow!("the trust store's update panicked"))?,
        None if Path::new(crate::site::TRUST_DIR).is_dir() => {
            crate::truststore::update(&crate::truststore::Store::system(), &trust_files()?)
        }
        None => Ok(()),
    }
}

/// The trust store's update running on its own thread.
type TrustUpdate = std::thread::JoinHandle<Result<()>>;

/// How long post-pivot waits for the node IP's address: static addresses come at once, a DHCP
/// lease may take a while (post-pivot does not wait for network-online.target, which on a site
/// without DHCP only comes once the configuration's static network is applied).
const NODE_IP_WAIT: Duration = Duration::from_secs(120);

/// The node IP ([`crate::site::node_ip`]) from the host's addresses, waiting up to `wait` for
/// one (a DHCP lease, a static address being set).
fn node_ip(m: &SeedReconfiguration, wait: Duration) -> Result<String> {
    let deadline = Instant::now() + wait;
    loop {
        match crate::site::node_ip(m, &imgmode_support::host::global_ipv4s()?) {
            // five looks a second (each one `ip -4 addr show`): a lease is seen within 0.2 s
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            r => return r,
        }
    }
}

/// The configuration's `networkConfig` (nmstate) as systemd-networkd files, applied at once:
/// first, so that a site without DHCP has its static address before anything needs it.
fn apply_network(m: &SeedReconfiguration) -> Result<()> {
    let network = crate::nmstate::to_networkd(&m.raw_nm_state_config)?;
    if !network.is_empty() {
        let dir = Path::new("/etc/systemd/network");
        std::fs::create_dir_all(dir)?;
        for (name, content) in &network {
            std::fs::write(dir.join(name), content)?;
        }
        // networkd picks the files up; without it running they apply at the next boot
        let _ = Run::new("networkctl").arg("reload").output();
        let _ = Run::new("networkctl")
            .arg("reconfigure")
            .args(
                network
                    .iter()
                    .filter_map(|(n, _)| n.strip_prefix("10-imgmode-")?.strip_suffix(".network")),
            )
            .output();
    }
    Ok(())
}

/// New SSH host keys being made on a thread of their own.
type HostKeys = std::thread::JoinHandle<Result<bool>>;

/// Root's SSH key, new SSH host keys (those `started` made, or made now), the pull secret,
/// the hostname and the NTP sources.
fn configure_host(m: &SeedReconfiguration, started: Option<HostKeys>) -> Result<()> {
    // the site's keys replace whatever the seed carried: the seed's owner logs in nowhere
    let ak = Path::new("/root/.ssh/authorized_keys");
    let keys: Vec<&str> = m
        .ssh_key
        .lines()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    if keys.is_empty() {
        let _ = std::fs::remove_file(ak);
    } else {
        std::fs::create_dir_all("/root/.ssh")?;
        std::fs::set_permissions("/root/.ssh", std::fs::Permissions::from_mode(0o700))?;
        write_private(ak, &format!("{}\n", keys.join("\n")))?;
    }
    match started {
        Some(t) => t
            .join()
            .map_err(|_| anyhow::anyhow!("making the SSH host keys panicked"))??,
        None => own_ssh_host_keys(Path::new("/"))?,
    };
    // sshd (when it runs) serves the new keys
    restart_if_running("ssh.service");
    write_private(Path::new("/var/lib/kubelet/config.json"), &m.pull_secret)?;
    std::fs::write("/etc/hostname", format!("{}\n", m.hostname))?;
    Run::new("hostname").arg(&m.hostname).output()?;
    if !m.chrony_config.is_empty() {
        ntp_sources(&m.chrony_config)?;
    }
    Ok(())
}

/// recert with the configuration: new certificates under its signer keys, the cluster renamed.
fn run_recert(
    o: &PostPivotOpts,
    m: &SeedReconfiguration,
    keys: Option<imgmode_recert::keypool::KeyPool>,
) -> Result<()> {
    let c = &o.cluster;
    let ip = node_ip(m, Duration::ZERO)?;
    let mut cfg = recert_config(m, &o.state_dir.join("keys"), &ip)?;
    cfg.etcd_endpoint = Some(c.etcd_endpoint.clone());
    cfg.encryption_config = c.encryption_config.clone();
    cfg.static_dirs = c
        .static_dirs
        .iter()
        .filter(|d| d.is_dir())
        .cloned()
        .collect();
    cfg.summary_file = Some(o.state_dir.join("recert-summary.yaml"));
    imgmode_recert::run_with_pool(&cfg.check()?, keys)?;
    Ok(())
}

/// The site's pull secret (over the seed's placeholder, its metadata kept), the kubeadmin
/// secret (when the configuration has a password) and the extra manifests, put into etcd over
/// what is there.
fn put_manifests(c: &Cluster, m: &SeedReconfiguration, extra: &[serde_json::Value]) -> Result<()> {
    let ip = node_ip(m, Duration::ZERO)?;
    imgmode_support::runtime::block_on(async {
        let mut e = crate::cluster::connect_etcd(c).await?;
        let existing = crate::cluster::objects(&mut e).await?;
        let updates = crate::site::cluster_updates(&existing, m, Some(&ip))?;
        let mut objects = extra.to_vec();
        if !m.kubeadmin_password_hash.is_empty() {
            objects.insert(0, kubeadmin_secret(&m.kubeadmin_password_hash));
        }
        let site = crate::pullsecret::object(&m.pull_secret);
        let pull_secret = match existing.iter().find(|o| o.key == crate::pullsecret::KEY) {
            Some(o) => {
                let mut v = o.value.clone();
                v["type"] = site["type"].clone();
                v["data"] = site["data"].clone();
                v
            }
            None => site,
        };
        objects.insert(0, pull_secret);
        let keyed: Vec<(String, &serde_json::Value)> = objects
            .iter()
            .map(|v| Ok((object_key(v)?, v)))
            .collect::<Result<_>>()?;
        // every object encoded before the first write: one that cannot be stored fails the
        // step with etcd untouched
        for o in updates.iter().cloned().chain(
            keyed
                .iter()
                .map(|(k, v)| EtcdObject::over(&existing, k, (*v).clone())),
        ) {
            o.stored()
                .with_context(|| format!("the site's etcd object {}", o.key))?;
        }
        for o in &updates {
            e.put(o).await?;
        }
        // over what the updates left (a manifest may name an object they changed)
        let existing = crate::cluster::objects(&mut e).await?;
        for (key, v) in &keyed {
            e.put(&EtcdObject::over(&existing, key, (*v).clone()))
                .await?;
        }
        anyhow::Ok(())
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_running_service_is_restarted_without_waiting_for_it() {
        assert_eq!(RESTART_QUEUED, ["try-restart", "--no-block"]);
    }

    #[test]
    fn a_host_file_is_written_only_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unit.service.d/10-imgmode-proxy.conf");
        let f = crate::site::HostFile {
            path: path.clone(),
            content: Some("[Service]\n".into()),
            mode: 0o644,
        };
        assert!(write_host_file(&f).unwrap(), "a new file changes");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[Service]\n");
        assert!(
            !write_host_file(&f).unwrap(),
            "the same file again changes nothing"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(write_host_file(&f).unwrap(), "another mode is a change");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        // a link to the same content is not the site's file: replaced by one
        let elsewhere = dir.path().join("elsewhere.conf");
        std::fs::write(&elsewhere, "[Service]\n").unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert!(write_host_file(&f).unwrap(), "a link is replaced");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        let gone = crate::site::HostFile { content: None, ..f };
        assert!(write_host_file(&gone).unwrap(), "a removal changes");
        assert!(!path.exists());
        assert!(!write_host_file(&gone).unwrap(), "nothing to remove");
    }

    #[test]
    fn ntp_sources_become_a_timesyncd_drop_in() {
        assert_eq!(
            timesyncd_conf("server ntp1.example.org iburst\npool 2.pool.example.org iburst\n")
                .unwrap(),
            "[Time]\nNTP=ntp1.example.org 2.pool.example.org\n"
        );
        let e = timesyncd_conf("makestep 1 3\n").unwrap_err().to_string();
        assert!(e.contains("not a server or pool"), "{e}");
    }

    #[test]
    fn ssh_host_keys_are_made_anew() {
        imgmode_testkit::require!(imgmode_testkit::Need::Tool("ssh-keygen"));
        let td = tempfile::tempdir().unwrap();
        let ssh = td.path().join("etc/ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        // no SSH server: nothing made
        regenerate_ssh_host_keys(td.path()).unwrap();
        assert_eq!(std::fs::read_dir(&ssh).unwrap().count(), 0);
        std::fs::write(ssh.join("sshd_config"), "").unwrap();
        regenerate_ssh_host_keys(td.path()).unwrap();
        let first = std::fs::read(ssh.join("ssh_host_ed25519_key")).unwrap();
        std::fs::write(ssh.join("ssh_host_dsa_key"), "a seed's old key").unwrap();
        regenerate_ssh_host_keys(td.path()).unwrap();
        assert_ne!(
            std::fs::read(ssh.join("ssh_host_ed25519_key")).unwrap(),
            first
        );
        assert!(!ssh.join("ssh_host_dsa_key").exists(), "the seed's keys go");
        assert!(!ssh.join(".imgmode-host-keys").exists(), "no scratch left");
        for t in ["rsa", "ecdsa", "ed25519"] {
            let m = std::fs::metadata(ssh.join(format!("ssh_host_{t}_key"))).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{t}");
        }
    }

    #[test]
    fn host_keys_this_boot_made_are_kept_and_any_other_set_is_made_anew() {
        imgmode_testkit::require!(imgmode_testkit::Need::Tool("ssh-keygen"));
        let td = tempfile::tempdir().unwrap();
        let root = td.path();
        let ssh = root.join("etc/ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        std::fs::write(ssh.join("sshd_config"), "").unwrap();
        regenerate_ssh_host_keys(root).unwrap();
        // no list (keys from an earlier boot, or a seed): made anew
        let key = |t: &str| std::fs::read(ssh.join(format!("ssh_host_{t}_key"))).unwrap();
        let before = key("ed25519");
        assert!(!own_ssh_host_keys(root).unwrap());
        assert_ne!(key("ed25519"), before);
        // the list the boot's unit writes (`sha256sum /etc/ssh/ssh_host_*_key`): kept
        let list = |root: &Path| {
            use sha2::Digest;
            let mut out = String::new();
            for t in ["ecdsa", "ed25519", "rsa"] {
                let h = hex::encode(sha2::Sha256::digest(key(t)));
                out.push_str(&format!("{h}  /etc/ssh/ssh_host_{t}_key\n"));
            }
            let f = root.join(HOST_KEYS_MADE_THIS_BOOT);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, out).unwrap();
        };
        list(root);
        let made = key("rsa");
        assert!(own_ssh_host_keys(root).unwrap());
        assert_eq!(key("rsa"), made);
        // a key the list does not name, or one whose bytes changed: the whole set made anew
        std::fs::write(ssh.join("ssh_host_dsa_key"), "a seed's old key").unwrap();
        assert!(!own_ssh_host_keys(root).unwrap());
        assert!(!ssh.join("ssh_host_dsa_key").exists());
        assert_ne!(key("rsa"), made);
        list(root);
        std::fs::write(ssh.join("ssh_host_ecdsa_key"), "changed").unwrap();
        assert!(!host_keys_made_this_boot(root).unwrap());
    }

    #[test]
    fn malformed_configuration_is_named() {
        let e = parse_manifest("{not json").unwrap_err();
        assert!(
            format!("{e:#}").starts_with(
                "the configuration ISO's cluster-configuration/manifest.json is malformed"
            ),
            "{e:#}"
        );
        let e = parse_manifest(r#"{"api_version":1,"base_domain":"","cluster_name":"x","cluster_id":"","infra_id":"","hostname":"h","kubeconfig_crypto_retention":{"kube_api_crypto":{"serving_crypto":{"loadbalancer_external_signer_private_key":"","localhost_signer_private_key":"","service_network_signer_private_key":""},"client_auth_crypto":{"admin_ca_certificate":""}}},"kubeadmin_password_hash":"","pull_secret":"{}","install_config":""}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("names no cluster, base domain or hostname"),
            "{e}"
        );
        // a field imgmode does not apply is refused by name, never dropped
        let e = parse_manifest(r#"{"api_version":1,"base_domain":"d","cluster_name":"x","cluster_id":"","infra_id":"","hostname":"h","status_proxy":{},"kubeconfig_crypto_retention":{"kube_api_crypto":{"serving_crypto":{"loadbalancer_external_signer_private_key":"","localhost_signer_private_key":"","service_network_signer_private_key":""},"client_auth_crypto":{"admin_ca_certificate":""}}},"kubeadmin_password_hash":"","pull_secret":"{}","install_config":""}"#).unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown field `status_proxy`"),
            "{e:#}"
        );
        let good = r#"{"api_version":1,"base_domain":"d","cluster_name":"x","cluster_id":"","infra_id":"","hostname":"h","kubeconfig_crypto_retention":{"kube_api_crypto":{"serving_crypto":{"loadbalancer_external_signer_private_key":"","localhost_signer_private_key":"","service_network_signer_private_key":""},"client_auth_crypto":{"admin_ca_certificate":""}}},"kubeadmin_password_hash":"","pull_secret":"{}","install_config":""}"#;
        parse_manifest(good).unwrap();
        let e =
            parse_manifest(&good.replace(r#""api_version":1"#, r#""api_version":2"#)).unwrap_err();
        assert!(e.to_string().contains("has api_version 2"), "{e}");
        let e = parse_manifest(&good.replace(
            r#"}}},"kubeadmin"#,
            r#"}},"ingress_crypto":{"ingress_ca":"KEY"}},"kubeadmin"#,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("ingress_crypto.ingress_ca"), "{e}");
    }

    #[test]
    fn the_secret_state_goes_and_the_names_stay() {
        let td = tempfile::tempdir().unwrap();
        let d = td.path();
        write_private(&d.join("manifest.json"), "{}").unwrap();
        write_private(&d.join("extra-manifests.json"), "[]").unwrap();
        write_private(&d.join("keys/admin.key"), "KEY").unwrap();
        write_private(&d.join(RECONFIGURED), "{}").unwrap();
        remove_secret_state(d).unwrap();
        for f in SECRET_STATE {
            assert!(!d.join(f).exists(), "{f}");
        }
        assert!(d.join(RECONFIGURED).exists());
        // a second run (stopped before `done`) finds them gone already
        remove_secret_state(d).unwrap();
    }

    #[test]
    fn the_kubeadmin_secret_holds_the_hash() {
        use base64::Engine;
        let hash = bcrypt::hash("abcde-fghij-klmno-pqrst", 4).unwrap();
        let s = kubeadmin_secret(&hash);
        assert_eq!(
            object_key(&s).unwrap(),
            "/kubernetes.io/secrets/kube-system/kubeadmin"
        );
        let stored = base64::engine::general_purpose::STANDARD
            .decode(s["data"]["kubeadmin"].as_str().unwrap())
            .unwrap();
        assert!(bcrypt::verify(
            "abcde-fghij-klmno-pqrst",
            std::str::from_utf8(&stored).unwrap()
        )
        .unwrap());
    }

    #[test]
    fn objects_land_under_their_resource() {
        let cm =
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"ns"}});
        assert_eq!(object_key(&cm).unwrap(), "/kubernetes.io/configmaps/ns/a");
        let p = json!({"apiVersion":"config.openshift.io/v1","kind":"Proxy","metadata":{"name":"cluster"}});
        assert_eq!(
            object_key(&p).unwrap(),
            "/kubernetes.io/config.openshift.io/proxies/cluster"
        );
        let n = json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}});
        assert_eq!(object_key(&n).unwrap(), "/kubernetes.io/namespaces/x");
        assert!(object_key(&json!({"kind":"X","metadata":{"name":"x"}})).is_err());
        let d = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d","namespace":"x"}});
        let e = object_key(&d).unwrap_err().to_string();
        assert!(e.contains("stores it as Kubernetes protobuf"), "{e}");
    }

    #[test]
    fn the_unit_carries_the_seed_runs_cluster() {
        let o = Cluster {
            services: vec!["imgmode-apiserver.service".into()],
            ..Default::default()
        };
        let u = unit_text(&o, "/usr/bin/imgmode");
        assert!(u.contains("ExecStart=/usr/bin/imgmode ibi post-pivot --service imgmode-apiserver.service --etcd-service etcd.service --etcd-endpoint http://127.0.0.1:2379 --kubeconfig /etc/kubernetes/kubeconfig --static-dir /etc/kubernetes"), "{u}");
        assert!(u.contains("Restart=on-failure"));
        assert!(u.contains("ConditionPathExists=!/var/lib/imgmode/post-pivot/done"));
        // a site without DHCP reaches network-online only once post-pivot set its address
        assert!(!u.contains("network-online"), "{u}");
    }

    #[test]
    fn the_unit_reads_an_encrypted_cluster_with_its_configuration() {
        let o = Cluster {
            encryption_config: Some("/etc/kubernetes/encryption-config.yaml".into()),
            ..Default::default()
        };
        let u = unit_text(&o, "/usr/bin/imgmode");
        assert!(
            u.contains(" --encryption-config /etc/kubernetes/encryption-config.yaml\n"),
            "{u}"
        );
    }

    #[test]
    fn extra_manifests_are_read_from_yaml_and_json() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("a.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n  namespace: default\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: two\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("b.json"),
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"three","namespace":"x"}}"#,
        )
        .unwrap();
        let v = read_extra_manifests(d.path()).unwrap();
        let keys: Vec<String> = v.iter().map(|o| object_key(o).unwrap()).collect();
        assert_eq!(
            keys,
            vec![
                "/kubernetes.io/configmaps/default/one",
                "/kubernetes.io/namespaces/two",
                "/kubernetes.io/secrets/x/three"
            ]
        );
        std::fs::write(d.path().join("c.yaml"), "kind: ConfigMap\n").unwrap();
        assert!(read_extra_manifests(d.path()).is_err());
    }
}
