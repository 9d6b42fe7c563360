//! The seed flow `just build-seed` runs and the `seed` scenario verifies: the seed-system
//! image (the test cluster, `containerfiles/seed-system/`) built on the base, its disk booted,
//! the cluster healthy, `imgmode seed create` run in the guest onto an attached ext4 disk, the
//! VM powered off, and the seed image copied into the host's store and to an `oci-archive`.
//!
//! The host reads the guest's output disk with `debugfs` (no mount), and checks the seed with
//! the tools lifecycle-agent uses (`tar`, `gzip`, `openssl`), not with imgmode's own readers.

use crate::artifacts::{run, Artifacts, TEST_KARG, TEST_SSH_KEY};
use crate::layered::{imgmode_json, job, parse_phase, Phase};
use crate::qemu::{Boot, Vm, VmConfig};
use crate::scenarios::{diag_section, report_line, SHUTDOWN_TIMEOUT};
use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Waiting for the first-boot PKI and then making the seed under TCG.
const SEED_TIMEOUT: Duration = Duration::from_secs(1800);
/// The seed system's local store name, and the seed's.
pub const SEED_SYSTEM: &str = "imgmode-seed-system";
pub const SEED_IMAGE: &str = "imgmode-seed";
/// The file the seed VM deletes from /etc (Debian's base-files ships it).
const DELETED: &str = "/etc/issue.net";

/// What the flow made.
#[derive(Debug, Clone)]
pub struct SeedBuild {
    /// The seed in the local store.
    pub image: String,
    pub digest: String,
    pub archive: PathBuf,
    /// The OCI layout copied off the guest's disk.
    pub layout: PathBuf,
    /// The seed system's disk (reusable).
    pub disk: PathBuf,
    /// Facts and the `imgmode status` the guest reported before making the seed.
    pub phase: PhaseReport,
    /// The test cluster's identity (`identity.json`).
    pub identity: serde_json::Value,
    /// `imgmode seed create --format json`.
    pub created: serde_json::Value,
    pub vm_seconds: f64,
}

impl SeedBuild {
    /// The seed's OpenShift version (its test cluster's identity).
    pub fn version(&self) -> Result<&str> {
        self.identity["version"]
            .as_str()
            .context("the seed's identity has no version")
    }
}

#[derive(Debug, Clone)]
pub struct PhaseReport {
    pub facts: BTreeMap<String, String>,
    pub booted_id: String,
    pub booted_checksum: String,
}

#[derive(Deserialize)]
struct BuildOut {
    digest: String,
}

const SEED_SCRIPT: &str = r#"echo "IMGMODE-PHASE-1-BEGIN"
probe() { imgmode internal test-cluster probe --connect-to 127.0.0.1 >/dev/null 2>&1; }
i=0
until probe; do i=$((i + 1)); [ $i -gt 300 ] && break; sleep 2; done
echo "FACT healthy=$(yesno probe)"
if ! probe; then
  echo "DIAG-BEGIN"
  journalctl -b --no-pager -u etcd -u imgmode-test-cluster-init -u imgmode-apiserver | tail -60
  echo "DIAG-END"
  echo "IMGMODE-PHASE-1-END"
  exit 0
fi
echo "IDENTITY $(tr -d '\n' < /var/lib/imgmode-test-cluster/identity.json)"
echo "FACT hostname=$(hostname)"
echo "FACT deleted-existed=$(yesno test -e __DELETED__)"
echo "STATUS-BEGIN"; imgmode status --format json; echo "STATUS-END"
# /etc changes the seed must carry: one file added, one deleted
echo seed > /etc/imgmode-seed-marker
rm -f __DELETED__
mkdir -p /mnt/out
mount /dev/disk/by-id/virtio-seedout /mnt/out
echo "RUN imgmode seed create"
rc=0
imgmode seed create --output oci:/mnt/out/seed:latest --service imgmode-apiserver.service \
    --format json > /run/seed-create.json 2>/dev/console || rc=$?
echo "RC $rc"
echo "CREATED $(tr -d '\n' < /run/seed-create.json)"
echo "FACT restored=$(yesno probe)"
echo "FACT apiserver=$(systemctl is-active imgmode-apiserver.service)"
echo "FACT etcd=$(systemctl is-active etcd.service)"
sync
umount /mnt/out
echo "IMGMODE-PHASE-1-END"
systemctl poweroff
"#;

/// The manifest digest of the first image of an OCI layout.
fn layout_digest(layout: &Path) -> Result<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)
            .with_context(|| format!("reading {}/index.json", layout.display()))?;
    index["manifests"][0]["digest"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{}/index.json lists no manifest", layout.display()))
}

/// Every certificate file (`*.crt`) below `dir` is expired, by `openssl x509 -checkend 0`: it
/// must say "Certificate will expire"; any other answer (valid, or an openssl error) fails.
/// Returns how many were checked (at least one).
fn every_certificate_expired(dir: &Path) -> Result<usize> {
    let mut files = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "crt") {
                files.push(p);
            }
        }
    }
    ensure!(!files.is_empty(), "no certificate under {}", dir.display());
    for f in &files {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-checkend", "0", "-in"])
            .arg(f)
            .output()
            .context("running openssl (cargo xtask deps)")?;
        let said = String::from_utf8_lossy(&out.stdout);
        ensure!(
            said.contains("Certificate will expire"),
            "{} in the seed is not expired (openssl x509 -checkend 0: {} {}{}): recert force_expire missed it",
            f.display(),
            out.status,
            said.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(files.len())
}

/// Build the seed-system image and its disk (reused while the image digest is unchanged).
pub fn seed_system_disk(a: &Artifacts, dir: &Path, step: &dyn Fn(&str)) -> Result<PathBuf> {
    step("building the seed-system image (containerfiles/seed-system: etcd, the test cluster)");
    let out = imgmode_json(
        a,
        &[
            "build",
            "-q",
            "--format",
            "json",
            "-t",
            SEED_SYSTEM,
            &a.containerfiles.join("seed-system").display().to_string(),
        ],
    )?;
    let b: BuildOut = serde_json::from_str(&out).context("parsing imgmode build --format json")?;
    let disk = dir.join("seed-system.qcow2");
    let stamp = dir.join("seed-system.digest");
    if disk.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&b.digest) {
        step("the seed system's disk is up to date");
        return Ok(disk);
    }
    step("writing the seed system's disk");
    let key = dir.join("root.pub");
    std::fs::write(&key, format!("{TEST_SSH_KEY}\n"))?;
    let _ = std::fs::remove_file(&stamp);
    imgmode_json(
        a,
        &[
            "disk",
            SEED_SYSTEM,
            "--force",
            "--format",
            "qcow2",
            "--karg",
            TEST_KARG,
            "--root-ssh-key",
            &key.display().to_string(),
            "-o",
            &disk.display().to_string(),
        ],
    )?;
    std::fs::write(&stamp, &b.digest)?;
    Ok(disk)
}

/// The whole flow; `archive` is where the `oci-archive` goes.
pub async fn build_seed(
    a: &Artifacts,
    dir: &Path,
    archive: &Path,
    step: &(dyn Fn(&str) + Sync),
) -> Result<SeedBuild> {
    std::fs::create_dir_all(dir)?;
    let disk = seed_system_disk(a, dir, &|m| step(m))?;
    step("preparing the output disk (ext4, serial seedout)");
    let out_img = dir.join("seed-out.img");
    let _ = std::fs::remove_file(&out_img);
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "seedout"])
            .arg(&out_img)
            .arg("4G"),
        "mkfs.ext4 (seed output disk)",
    )?;
    step("booting the seed VM; waiting for the test cluster, then imgmode seed create");
    let cfg = VmConfig {
        extra_args: vec![
            "-drive".into(),
            format!("file={},format=raw,if=none,id=seedout", out_img.display()),
            "-device".into(),
            "virtio-blk-pci,drive=seedout,serial=seedout".into(),
        ],
        network: true,
        ..VmConfig::new(&disk, Boot::Bios)
    };
    let cfg = job(cfg, SEED_SCRIPT.replace("__DELETED__", DELETED));
    let vm_dir = dir.join("vm");
    let _ = std::fs::remove_dir_all(&vm_dir);
    std::fs::create_dir_all(&vm_dir)?;
    let mut vm = Vm::start(&cfg, &vm_dir).await?;
    let r = vm
        .wait_for_result("IMGMODE-PHASE-1-END", SEED_TIMEOUT)
        .await;
    if let Err(e) = r {
        let tail = vm.console_tail(40);
        let _ = vm.quit().await;
        return Err(e.context(format!("the seed VM (console tail):\n{tail}")));
    }
    let vm_seconds = vm.elapsed().as_secs_f64();
    let results = std::fs::read_to_string(vm_dir.join("results.log"))?;
    let p: Phase = parse_phase(&results, 1)?;
    let tail = vm.console_tail(40);
    let shut = vm.wait_shutdown(SHUTDOWN_TIMEOUT).await;
    if p.fact("healthy") != "yes" {
        let _ = shut;
        let diag = diag_section(&results);
        bail!("the test cluster never became healthy in the seed VM; its units' journal:\n{diag}");
    }
    let (_, rc, _) = p
        .runs
        .iter()
        .find(|(c, _, _)| c.starts_with("imgmode seed create"))
        .context("the guest did not run imgmode seed create")?;
    ensure!(
        *rc == 0,
        "imgmode seed create failed in the guest (rc {rc}); console tail:\n{tail}"
    );
    shut?;
    let booted = p.booted()?;
    let identity: serde_json::Value = serde_json::from_str(
        report_line(&results, "IDENTITY ").context("the guest reported no identity")?,
    )
    .context("parsing the test cluster's identity")?;
    let created: serde_json::Value = serde_json::from_str(
        report_line(&results, "CREATED ").context("the guest reported no seed create output")?,
    )
    .context("parsing imgmode seed create --format json")?;

    step("copying the seed off the guest's disk (debugfs rdump) into the store and an oci-archive");
    let layout_parent = dir.join("out");
    let _ = std::fs::remove_dir_all(&layout_parent);
    std::fs::create_dir_all(&layout_parent)?;
    run(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump /seed {}", layout_parent.display()))
            .arg(&out_img),
        "debugfs rdump",
    )?;
    let layout = layout_parent.join("seed");
    ensure!(
        layout.join("index.json").is_file(),
        "the guest's output disk holds no OCI layout at /seed"
    );
    let src = format!("oci:{}:latest", layout.display());
    imgmode_json(a, &["push", &src, SEED_IMAGE])?;
    let _ = std::fs::remove_file(archive);
    if let Some(p) = archive.parent() {
        std::fs::create_dir_all(p)?;
    }
    imgmode_json(
        a,
        &[
            "push",
            SEED_IMAGE,
            &format!("oci-archive:{}", archive.display()),
        ],
    )?;
    let _ = std::fs::remove_file(&out_img);
    std::fs::write(
        dir.join("created.json"),
        serde_json::to_vec_pretty(&created)?,
    )?;
    let digest = created["digest"].as_str().unwrap_or_default().to_string();
    Ok(SeedBuild {
        image: SEED_IMAGE.to_string(),
        digest,
        archive: archive.to_path_buf(),
        layout,
        disk,
        phase: PhaseReport {
            facts: p.facts.clone(),
            booted_id: booted.id.clone(),
            booted_checksum: booted.checksum.clone(),
        },
        identity,
        created,
        vm_seconds,
    })
}

/// The layer of the one-layer seed layout, extracted into `dest`.
/// The layer blobs of the (first) image of an OCI layout, in order.
pub fn layout_layers(layout: &Path) -> Result<Vec<PathBuf>> {
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let mdigest = layout_digest(layout)?;
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blob(&mdigest))?)?;
    Ok(manifest["layers"]
        .as_array()
        .with_context(|| format!("{}: the manifest has no layers", layout.display()))?
        .iter()
        .map(|l| blob(l["digest"].as_str().unwrap_or_default()))
        .collect())
}

pub(crate) fn extract_layer(layout: &Path, dest: &Path) -> Result<()> {
    let layers = layout_layers(layout)?;
    ensure!(
        layers.len() == 1,
        "the seed has {} layers, not 1",
        layers.len()
    );
    std::fs::create_dir_all(dest)?;
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(&layers[0])
            .arg("-C")
            .arg(dest),
        "tar -x (seed layer)",
    )?;
    Ok(())
}

/// `tar -tzf`: the member names of a tarball.
fn members(tarball: &Path) -> Result<Vec<String>> {
    let out = run(
        Command::new("tar").arg("-tzf").arg(tarball),
        &format!("tar -tzf {}", tarball.display()),
    )?;
    Ok(out.lines().map(str::to_string).collect())
}

/// The seed made in this run, shared by every scenario that needs one (made once per run).
static SHARED: tokio::sync::Mutex<Option<SeedBuild>> = tokio::sync::Mutex::const_new(None);

/// The seed of this run: the one the `seed` scenario made, or a new one made in `dir`.
pub async fn shared_seed(a: &Artifacts, dir: &Path) -> Result<SeedBuild> {
    let mut g = SHARED.lock().await;
    if let Some(s) = g.as_ref() {
        return Ok(s.clone());
    }
    let archive = dir.join("seed.oci-archive");
    let s = build_seed(a, dir, &archive, &|m| eprintln!("==> {m}")).await?;
    *g = Some(s.clone());
    Ok(s)
}

/// The `seed` scenario.
pub async fn seed_scenario(a: Artifacts, dir: PathBuf) -> Result<String> {
    let archive = dir.join("seed.oci-archive");
    let s = build_seed(&a, &dir, &archive, &|m| eprintln!("==> {m}")).await?;
    *SHARED.lock().await = Some(s.clone());
    let a2 = a.clone();
    tokio::task::spawn_blocking(move || verify(&a2, &dir, &s)).await?
}

fn verify(a: &Artifacts, dir: &Path, s: &SeedBuild) -> Result<String> {
    let f = |k: &str| s.phase.facts.get(k).map(String::as_str).unwrap_or("?");
    ensure!(
        f("restored") == "yes" && f("apiserver") == "active" && f("etcd") == "active",
        "the seed system was not restored after seed create: /readyz {}, apiserver {}, etcd {}",
        f("restored"),
        f("apiserver"),
        f("etcd")
    );
    // labels and cluster info, as imgmode reads them
    let out = imgmode_json(a, &["seed", "inspect", SEED_IMAGE, "--format", "json"])?;
    let ins: serde_json::Value = serde_json::from_str(&out).context("parsing seed inspect")?;
    ensure!(
        ins["format_version"] == 4,
        "format version {}",
        ins["format_version"]
    );
    let info = &ins["cluster_info"];
    let id = &s.identity;
    for (k, want) in [
        ("cluster_name", &id["clusterName"]),
        ("base_domain", &id["baseDomain"]),
        ("sno_hostname", &id["hostname"]),
        ("node_ip", &id["ip"]),
        ("seed_cluster_ocp_version", &id["version"]),
    ] {
        ensure!(
            &info[k] == want,
            "seed cluster info {k} is {}, the seed VM has {want}",
            info[k]
        );
    }
    let names: Vec<&str> = ins["files"]
        .as_array()
        .context("no file list")?
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    let origin = format!(
        "ostree-{}.origin",
        s.phase
            .booted_id
            .split_once('-')
            .map(|(_, r)| r)
            .unwrap_or_default()
    );
    let mut want: Vec<String> = [
        "containers.list",
        "etc.deletions",
        "etc.tgz",
        "imgmode",
        "lca-cli",
        "manifest.json",
        "mco-currentconfig.json",
        "ostree.tgz",
        "recert_config.json",
        "rpm-ostree.json",
        "var.tgz",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.push(origin.clone());
    want.sort();
    let mut got: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    got.sort();
    ensure!(
        got == want,
        "the seed holds {got:?}, expected exactly {want:?}"
    );
    let digest_in_store = ins["reference"].as_str().unwrap_or_default().to_string();

    // the content, read with the tools lifecycle-agent uses
    let x = dir.join("extracted");
    let _ = std::fs::remove_dir_all(&x);
    extract_layer(&s.layout, &x)?;
    let label_info = &ins["labels"]["com.openshift.lifecycle-agent.seed_cluster_info"];
    let manifest = std::fs::read_to_string(x.join("manifest.json"))?;
    ensure!(
        label_info.as_str() == Some(manifest.as_str()),
        "the seed_cluster_info label differs from manifest.json"
    );
    let rpm: serde_json::Value =
        serde_json::from_slice(&std::fs::read(x.join("rpm-ostree.json"))?)?;
    let booted = rpm["deployments"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["booted"] == true))
        .context("rpm-ostree.json has no booted deployment")?;
    ensure!(
        booted["checksum"] == s.phase.booted_checksum.as_str(),
        "rpm-ostree.json says the booted commit is {}, the seed VM booted {}",
        booted["checksum"],
        s.phase.booted_checksum
    );
    let c = &s.phase.booted_checksum;
    let ostree = members(&x.join("ostree.tgz"))?;
    let commit_obj = format!("./objects/{}/{}.commit", &c[..2], &c[2..]);
    ensure!(
        ostree.contains(&commit_obj),
        "ostree.tgz lacks the booted commit {commit_obj}"
    );
    ensure!(
        ostree.iter().any(|m| m == "./config"),
        "ostree.tgz lacks the repo config"
    );
    let deletions = std::fs::read_to_string(x.join("etc.deletions"))?;
    if f("deleted-existed") == "yes" {
        ensure!(
            deletions.lines().any(|l| l == DELETED),
            "etc.deletions does not list {DELETED}, deleted on the seed system: {deletions:?}"
        );
    } else {
        bail!("{DELETED} did not exist on the seed system; the etc.deletions check proves nothing");
    }
    let etc = members(&x.join("etc.tgz"))?;
    ensure!(
        etc.iter().any(|m| m == "etc/imgmode-seed-marker"),
        "etc.tgz lacks /etc/imgmode-seed-marker, added on the seed system"
    );
    ensure!(
        etc.iter().any(|m| m.starts_with("etc/kubernetes/")),
        "etc.tgz lacks /etc/kubernetes (the cluster's PKI)"
    );
    for m in ["etc/hostname", "etc/machine-id"] {
        ensure!(
            !etc.iter().any(|e| e == m),
            "etc.tgz carries the machine-specific {m}"
        );
    }
    let var = members(&x.join("var.tgz"))?;
    ensure!(
        var.iter().any(|m| m.starts_with("var/lib/etcd/")),
        "var.tgz lacks etcd's data (var/lib/etcd)"
    );
    for bad in ["var/log/", "var/tmp/"] {
        ensure!(
            !var.iter()
                .any(|m| m.starts_with(bad) && m.len() > bad.len()),
            "var.tgz carries content of {bad}"
        );
    }
    // recert force_expire: every certificate of the cluster's PKI in the seed is expired (only
    // the certificates are taken out: the PKI's private keys stay in the tarball)
    let pki = dir.join("pki");
    let _ = std::fs::remove_dir_all(&pki);
    std::fs::create_dir_all(&pki)?;
    run(
        Command::new("tar")
            .arg("-xzf")
            .arg(x.join("etc.tgz"))
            .arg("-C")
            .arg(&pki)
            .args(["--wildcards", "etc/kubernetes/*.crt"]),
        "tar -xzf etc.tgz (etc/kubernetes/*.crt)",
    )?;
    let expired = every_certificate_expired(&pki.join("etc/kubernetes"));
    std::fs::remove_dir_all(&pki)?;
    let expired = expired?;
    let manifest_digest = layout_digest(&s.layout)?;
    ensure!(
        manifest_digest == s.digest,
        "seed create reported {} but the stored seed's manifest is {manifest_digest}",
        s.digest
    );
    let origin_text = std::fs::read_to_string(x.join(&origin))?;
    ensure!(
        origin_text.contains("container-image-reference="),
        "{origin} is not the booted deployment's origin: {origin_text}"
    );

    // the compatibility gates against the real seed, before any layer is fetched
    let cfg = |version: &str| -> Result<PathBuf> {
        let p = dir.join(format!("ibi-{version}.yaml"));
        std::fs::write(
            &p,
            format!("apiVersion: v1beta1\nkind: ImageBasedInstallationConfig\nmetadata:\n  name: vmtest\nseedImage: {SEED_IMAGE}\nseedVersion: {version}\ninstallationDisk: /dev/vda\npullSecret: '{{\"auths\":{{}}}}'\n"),
        )?;
        Ok(p)
    };
    let version = id["version"].as_str().unwrap_or_default();
    imgmode_json(
        a,
        &[
            "seed",
            "check",
            SEED_IMAGE,
            "--config",
            &cfg(version)?.display().to_string(),
        ],
    )?;
    let bad = Command::new(&a.imgmode)
        .args(["seed", "check", SEED_IMAGE, "--config"])
        .arg(cfg("4.0.0")?)
        .output()?;
    let err = String::from_utf8_lossy(&bad.stderr);
    ensure!(
        !bad.status.success() && err.contains("seed version mismatch"),
        "seed check accepted a seedVersion mismatch: {err}"
    );
    let sizes: u64 = ins["files"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["size"].as_u64()).sum())
        .unwrap_or(0);
    Ok(format!(
        "seed {} ({}; {} files, {} MiB; {expired} certificates expired) from cluster {}.{} on {}; commit {}; VM {:.0}s; restored",
        s.digest,
        digest_in_store,
        got.len(),
        sizes >> 20,
        id["clusterName"].as_str().unwrap_or_default(),
        id["baseDomain"].as_str().unwrap_or_default(),
        id["hostname"].as_str().unwrap_or_default(),
        &c[..12],
        s.vm_seconds
    ))
}
