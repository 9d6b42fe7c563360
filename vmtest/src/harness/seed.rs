//! The seed flow `just build-seed` runs and the `seed` scenario verifies: the seed-system
//! image (the test cluster, `containerfiles/seed-system/`) built on the base, its disk booted,
//! the cluster healthy, `imgmode seed create` run in the guest onto an attached ext4 disk, the
//! VM powered off, and the seed image copied into the host's store and to an `oci-archive`.
//!
//! The host reads the guest's output disk with `debugfs` (no mount). A run makes its seed once
//! and shares it ([`crate::harness::context::RunContext::shared_seed`]); the `seed` scenario's
//! checks of it are in `scenarios/seed.rs`.

use crate::harness::artifacts::{imgmode_json, run, ssh_keypair, Artifacts, TEST_KARG};
use crate::harness::guest::{
    diag_section, file_modes, job, key_inventory, parse_phase, report_line, GuestDeployment, Phase,
    SHUTDOWN_TIMEOUT,
};
use crate::harness::qemu::{Boot, Vm, VmConfig};
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
pub(crate) const DELETED: &str = "/etc/issue.net";

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
    /// The private key root's `authorized_keys` on the seed system accepts (the seed's owner;
    /// no installed copy may accept it).
    pub owner_key: PathBuf,
    /// Facts and the `imgmode status` the guest reported before making the seed.
    pub phase: PhaseReport,
    /// The test cluster's identity (`identity.json`).
    pub identity: serde_json::Value,
    /// `imgmode seed create --format json`.
    pub created: serde_json::Value,
    /// The seed system's private keys before it was made a seed: fingerprint -> where
    /// (`imgmode internal test-cluster keys`).
    pub keys: BTreeMap<String, String>,
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
# the seed's private keys (fingerprints and where): no site installed from it may hold one
echo "KEYS-BEGIN"; imgmode internal test-cluster keys; echo "KEYS-END"
echo "FACT hostname=$(hostname)"
echo "FACT deleted-existed=$(yesno test -e __DELETED__)"
echo "STATUS-BEGIN"; imgmode status --format json; echo "STATUS-END"
# /etc changes the seed must carry: one file added, one deleted
echo seed > /etc/imgmode-seed-marker
rm -f __DELETED__
mkdir -p /mnt/out
mount /dev/disk/by-id/virtio-seedout /mnt/out
ps() { imgmode internal test-cluster get /kubernetes.io/secrets/openshift-config/pull-secret; }
ps_before=$(ps)
echo "FACT seed-pull-secret=$(echo "$ps_before" | sed -n 's/.*"\.dockerconfigjson":"\([^"]*\)".*/\1/p')"
echo "RUN imgmode seed create"
rc=0
imgmode seed create --output oci:/mnt/out/seed:latest --service imgmode-apiserver.service \
    --format json > /run/seed-create.json 2>/dev/console || rc=$?
echo "RC $rc"
echo "CREATED $(tr -d '\n' < /run/seed-create.json)"
echo "FACT restored=$(yesno probe)"
echo "FACT apiserver=$(systemctl is-active imgmode-apiserver.service)"
echo "FACT etcd=$(systemctl is-active etcd.service)"
echo "FACT pull-secret-restored=$(yesno test "$ps_before" = "$(ps)")"
filemodes seed /mnt/out/seed /var/lib/imgmode /etc/kubernetes /var/lib/kubelet /var/lib/etcd /root/.ssh /etc/ssh
sync
umount /mnt/out
echo "IMGMODE-PHASE-1-END"
systemctl poweroff
"#;

/// The manifest digest of the first image of an OCI layout.
pub(crate) fn layout_digest(layout: &Path) -> Result<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)
            .with_context(|| format!("reading {}/index.json", layout.display()))?;
    index["manifests"][0]["digest"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{}/index.json lists no manifest", layout.display()))
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
    let owner = dir.join("seed-owner");
    if disk.exists()
        && owner.exists()
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&b.digest)
    {
        step("the seed system's disk is up to date");
        return Ok(disk);
    }
    step("writing the seed system's disk");
    let _ = std::fs::remove_file(&stamp);
    ssh_keypair(&owner, "imgmode-vmtest-seed-owner")?;
    let key = owner.with_extension("pub");
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
    let out_img = output_disk(dir)?;
    step("booting the seed VM; waiting for the test cluster, then imgmode seed create");
    let made = run_seed_vm(dir, &disk, &out_img).await?;

    step("copying the seed off the guest's disk (debugfs rdump) into the store and an oci-archive");
    let layout = copy_seed_off(a, dir, &out_img, archive)?;
    let _ = std::fs::remove_file(&out_img);
    std::fs::write(
        dir.join("created.json"),
        serde_json::to_vec_pretty(&made.created)?,
    )?;
    let digest = made.created["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok(SeedBuild {
        image: SEED_IMAGE.to_string(),
        digest,
        archive: archive.to_path_buf(),
        layout,
        owner_key: dir.join("seed-owner"),
        disk,
        phase: PhaseReport {
            facts: made.phase.facts.clone(),
            booted_id: made.booted.id.clone(),
            booted_checksum: made.booted.checksum.clone(),
        },
        identity: made.identity,
        created: made.created,
        keys: made.keys,
        vm_seconds: made.vm_seconds,
    })
}

/// A new ext4 disk (`seed-out.img` in `dir`) that the seed VM writes its seed to.
fn output_disk(dir: &Path) -> Result<PathBuf> {
    let out_img = dir.join("seed-out.img");
    let _ = std::fs::remove_file(&out_img);
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "seedout"])
            .arg(&out_img)
            .arg("4G"),
        "mkfs.ext4 (seed output disk)",
    )?;
    Ok(out_img)
}

/// What the seed VM reported: its phase, the deployment it booted, the test cluster's
/// identity and `imgmode seed create --format json`.
struct SeedVmReport {
    phase: Phase,
    booted: GuestDeployment,
    identity: serde_json::Value,
    created: serde_json::Value,
    keys: BTreeMap<String, String>,
    vm_seconds: f64,
}

/// Boot the seed system's `disk` with `out_img` attached; the guest waits for the test
/// cluster, runs `imgmode seed create` onto `out_img` and powers off.
async fn run_seed_vm(dir: &Path, disk: &Path, out_img: &Path) -> Result<SeedVmReport> {
    let cfg = VmConfig {
        extra_args: vec![
            "-drive".into(),
            format!("file={},format=raw,if=none,id=seedout", out_img.display()),
            "-device".into(),
            "virtio-blk-pci,drive=seedout,serial=seedout".into(),
        ],
        network: true,
        ..VmConfig::new(disk, Boot::Bios)
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
    // what seed create wrote (the seed, its state) and the secrets it handled, with modes
    std::fs::write(
        dir.join("file-modes-seed.txt"),
        file_modes(&results, "seed", "the seed system")?,
    )?;
    let booted = p.booted()?;
    let identity: serde_json::Value = serde_json::from_str(
        report_line(&results, "IDENTITY ").context("the guest reported no identity")?,
    )
    .context("parsing the test cluster's identity")?;
    let created: serde_json::Value = serde_json::from_str(
        report_line(&results, "CREATED ").context("the guest reported no seed create output")?,
    )
    .context("parsing imgmode seed create --format json")?;
    let keys = key_inventory("the seed system", &results)?;
    Ok(SeedVmReport {
        phase: p,
        booted,
        identity,
        created,
        keys,
        vm_seconds,
    })
}

/// Read the seed's OCI layout off the guest's output disk (`debugfs rdump`), push it into the
/// local store as [`SEED_IMAGE`] and from there to the `oci-archive` at `archive`; returns the
/// layout's path.
fn copy_seed_off(a: &Artifacts, dir: &Path, out_img: &Path, archive: &Path) -> Result<PathBuf> {
    let layout_parent = dir.join("out");
    let _ = std::fs::remove_dir_all(&layout_parent);
    std::fs::create_dir_all(&layout_parent)?;
    run(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump /seed {}", layout_parent.display()))
            .arg(out_img),
        "debugfs rdump",
    )?;
    let layout = layout_parent.join("seed");
    ensure!(
        layout.join("index.json").is_file(),
        "the guest's output disk holds no OCI layout at /seed"
    );
    store_seed(a, &layout, archive)?;
    Ok(layout)
}

/// The seed's OCI layout into the local store as [`SEED_IMAGE`], and from there to the
/// `oci-archive` at `archive`, byte for byte: its layer stays uncompressed as `seed create`
/// wrote it (and as `seed create --output docker://...` pushes it), so every scenario installs
/// the seed a user's registry holds, not a recompressed copy.
pub(crate) fn store_seed(a: &Artifacts, layout: &Path, archive: &Path) -> Result<()> {
    let src = format!("oci:{}:latest", layout.display());
    imgmode_json(a, &["push", "--preserve-digests", &src, SEED_IMAGE])?;
    let _ = std::fs::remove_file(archive);
    if let Some(p) = archive.parent() {
        std::fs::create_dir_all(p)?;
    }
    imgmode_json(
        a,
        &[
            "push",
            "--preserve-digests",
            SEED_IMAGE,
            &format!("oci-archive:{}", archive.display()),
        ],
    )?;
    Ok(())
}

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

/// The layer of the one-layer seed layout, extracted into `dest`.
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
