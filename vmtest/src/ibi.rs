//! The `ibi-install` scenario: `imgmode ibi install` in a running imgmode system (the base
//! disk, standing in for the live installation environment) writes this run's seed, pulled
//! from a registry with the config's pull secret, onto a blank virtio disk; bad configs are
//! refused with the disk untouched; then the installed disk alone boots through OVMF and GRUB
//! with its configuration ISO: the seed's commit, /etc and /var, container storage on the extra
//! partition, and post-pivot's result (new name, hostname, keys; `auth/kubeconfig` works, the
//! seed's does not; the extra manifest in etcd). A second host from the same seed with another
//! configuration shares no private key with the first.

use crate::artifacts::{run, Artifacts};
use crate::layered::{job, parse_phase};
use crate::qemu::{Boot, Vm, VmConfig};
use crate::registry::Registry;
use crate::scenarios::{diag_section, report_line, BOOT_TIMEOUT, SHUTDOWN_TIMEOUT};
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Installing under TCG: fetching and unpacking the seed, pull-local, deploy.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(1500);
/// Post-pivot under TCG: waiting for the ISO, recert of the test cluster, services, /readyz.
const POST_PIVOT_TIMEOUT: Duration = Duration::from_secs(600);
const INSTALL_CONFIG: &str = "apiVersion: v1\nmetadata:\n  name: __NAME__\nbaseDomain: example.org\nnetworking:\n  machineNetwork:\n  - cidr: 10.0.2.0/24\ncontrolPlane:\n  name: master\n  replicas: 1\nplatform:\n  none: {}\npullSecret: '{\"auths\":{\"vmtest-ibi-registry.example\":{\"auth\":\"eDp5\"}}}'\nsshKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKd9b2hxQ3JtY2ZxQ1k5b2l4d0ZxVnRrR0lqU0N0eHd4 imgmode-vmtest-ibi\n";
const IMAGE_BASED_CONFIG: &str = "apiVersion: v1beta1\nkind: ImageBasedConfig\nmetadata:\n  name: __NAME__\nhostname: __HOST__\nreleaseRegistry: quay.io\n";
const EXTRA_MANIFEST: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: imgmode-extra\n  namespace: default\ndata:\n  origin: from-the-config-iso\n";
/// The partition label the scenario's config asks for.
const EXTRA_LABEL: &str = "containers";

const INSTALL_SCRIPT: &str = r#"set -u
echo "IMGMODE-PHASE-1-BEGIN"
uptime() { cut -d' ' -f1 /proc/uptime; }
echo "UPTIME-LIVE $(uptime)"
yesno() { if "$@" >/dev/null 2>&1; then echo yes; else echo no; fi; }
run() { echo "RUN $*"; "$@" 2>&1; echo "RC $?"; }
mkdir -p /etc/containers/registries.conf.d
printf '[[registry]]\nlocation = "__REG__"\ninsecure = true\n' > /etc/containers/registries.conf.d/50-vmtest.conf
target=/dev/disk/by-id/virtio-target
cat > /run/ibi.yaml <<'EOF'
apiVersion: v1beta1
kind: ImageBasedInstallationConfig
metadata:
  name: vmtest
seedImage: __REG__/imgmode-seed:__VERSION__
seedVersion: __VERSION__
installationDisk: /dev/disk/by-id/virtio-target
pullSecret: '{"auths":{"__REG__":{"auth":"dm10ZXN0OnZtdGVzdA=="}}}'
extraPartitionLabel: __LABEL__
extraPartitionStart: -2G
shutdown: true
EOF
sed 's/^seedVersion: .*/seedVersion: 4.0.0-other/' /run/ibi.yaml > /run/ibi-version.yaml
sed 's|^installationDisk: .*|installationDisk: /dev/disk/by-id/virtio-nosuchdisk|' /run/ibi.yaml > /run/ibi-nodisk.yaml
run imgmode ibi install --config /run/ibi-version.yaml --state /run/ibi-version-state.json
echo "VERSIONSTATE $(tr -d '\n' < /run/ibi-version-state.json)"
run imgmode ibi install --config /run/ibi-nodisk.yaml --state /run/ibi-nodisk-state.json
echo "FACT untouched=$(yesno cmp -s -n 4194304 $target /dev/zero)"
echo "UPTIME-INSTALL-START $(uptime)"
run imgmode ibi install --config /run/ibi.yaml --state /run/ibi-state.json
echo "UPTIME-INSTALL-END $(uptime)"
echo "STATE $(tr -d '\n' < /run/ibi-state.json)"
sed 's|virtio-target$|virtio-target2|' /run/ibi.yaml > /run/ibi2.yaml
run imgmode ibi install --config /run/ibi2.yaml --state /run/ibi2-state.json
echo "IMGMODE-PHASE-1-END"
systemctl poweroff
"#;

const BOOTED_SCRIPT: &str = r#"set -u
echo "IMGMODE-PHASE-1-BEGIN"
yesno() { if "$@" >/dev/null 2>&1; then echo yes; else echo no; fi; }
run() { echo "RUN $*"; "$@" 2>&1; echo "RC $?"; }
# post-pivot runs before multi-user.target; on failure it restarts, so wait for its marker
i=0
until test -f /var/lib/imgmode/post-pivot/done; do i=$((i + 1)); [ $i -gt 300 ] && break; sleep 2; done
echo "UPTIME-READY $(cut -d' ' -f1 /proc/uptime)"
echo "FACT post-pivot-done=$(yesno test -f /var/lib/imgmode/post-pivot/done)"
echo "FACT post-pivot-enabled=$(systemctl is-enabled imgmode-post-pivot.service 2>/dev/null)"
if ! test -f /var/lib/imgmode/post-pivot/done; then
  echo "DIAG-BEGIN"; journalctl -b --no-pager -u imgmode-post-pivot | tail -60; echo "DIAG-END"
fi
echo "FACT hostname=$(hostname)"
echo "FACT ssh-key=$(yesno grep -q imgmode-vmtest-ibi /root/.ssh/authorized_keys)"
echo "FACT pull-secret=$(yesno grep -q vmtest-ibi-registry /var/lib/kubelet/config.json)"
run imgmode internal test-cluster probe --kubeconfig "$CREDENTIALS_DIRECTORY/vmtest.kubeconfig" --connect-to 127.0.0.1
run imgmode internal test-cluster probe --kubeconfig "$CREDENTIALS_DIRECTORY/vmtest.seedkubeconfig" --connect-to 127.0.0.1
run imgmode internal test-cluster get /kubernetes.io/configmaps/default/imgmode-extra
echo "KUBEADMIN $(imgmode internal test-cluster get /kubernetes.io/secrets/kube-system/kubeadmin)"
echo "KEYS-BEGIN"; imgmode internal test-cluster keys; echo "KEYS-END"
echo "FACT firmware=$(test -d /sys/firmware/efi && echo uefi || echo bios)"
echo "FACT karg=$(yesno grep -qw imgmode.vmtest=1 /proc/cmdline)"
echo "FACT marker=$(yesno test -f /etc/imgmode-seed-marker)"
echo "FACT deleted=$(yesno test ! -e /etc/issue.net)"
echo "FACT identity=$(yesno test -s /var/lib/imgmode-test-cluster/identity.json)"
echo "FACT etcd-data=$(yesno sh -c 'test -n "$(ls -A /var/lib/etcd)"')"
src=$(findmnt -n -o SOURCE /var/lib/containers)
echo "FACT containers-partlabel=$(lsblk -no PARTLABEL "$src" 2>/dev/null)"
echo "FACT containers-fs=$(findmnt -n -o FSTYPE /var/lib/containers)"
echo "STATUS-BEGIN"; imgmode status --format json; echo "STATUS-END"
echo "IMGMODE-PHASE-1-END"
systemctl poweroff
"#;

/// Boot `cfg`, wait for the phase's end marker, and read the results (console tail on error).
async fn run_job(cfg: &VmConfig, dir: &Path, what: &str, timeout: Duration) -> Result<String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut vm = Vm::start(cfg, dir).await?;
    if let Err(e) = vm.wait_for_result("IMGMODE-PHASE-1-END", timeout).await {
        let tail = vm.console_tail(40);
        let _ = vm.quit().await;
        return Err(e.context(format!("{what} (console tail):\n{tail}")));
    }
    let results = std::fs::read_to_string(dir.join("results.log"))?;
    vm.wait_shutdown(SHUTDOWN_TIMEOUT)
        .await
        .with_context(|| format!("{what} did not power off"))?;
    Ok(results)
}

/// A guest's `/proc/uptime` seconds reported on a `<tag> <seconds>` line.
fn uptime(results: &str, tag: &str) -> Result<f64> {
    report_line(results, &format!("{tag} "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("the guest reported no {tag}"))
}

/// Seconds of the last `ibi-install` run, written to `timings.json` for `cargo xtask bench
/// ibi`: guest uptimes (firmware excluded) of the installation environment when it was up, the
/// first install, and the installed host's first boot until post-pivot was done.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Timings {
    pub live_boot: f64,
    pub install: f64,
    pub first_boot_ready: f64,
    /// The first host's disk after post-pivot (a qcow2 overlay over the installed disk).
    pub configured_disk: PathBuf,
}

impl Timings {
    /// IBI end to end: the installation environment's boot, the install, the first boot.
    pub fn end_to_end(&self) -> f64 {
        self.live_boot + self.install + self.first_boot_ready
    }
}

/// A plain boot of `disk` through OVMF: guest uptime when multi-user is reached.
pub async fn plain_boot(disk: &Path, dir: &Path) -> Result<f64> {
    let script = "echo IMGMODE-PHASE-1-BEGIN\necho \"UPTIME-READY $(cut -d' ' -f1 /proc/uptime)\"\necho IMGMODE-PHASE-1-END\nsystemctl poweroff\n";
    let cfg = job(VmConfig::new(disk, Boot::Uefi), script.to_string());
    let results = run_job(&cfg, dir, "the plain boot", BOOT_TIMEOUT).await?;
    uptime(&results, "UPTIME-READY")
}

/// The `ibi-install` scenario.
pub async fn ibi_install(a: Artifacts, dir: PathBuf) -> Result<String> {
    let seed = crate::seed::shared_seed(&a, &dir.join("seed")).await?;
    let version = seed.identity["version"]
        .as_str()
        .context("the seed's identity has no version")?
        .to_string();

    eprintln!("==> pushing the seed to a registry");
    let reg = Registry::start(&dir.join("registry"))?;
    run(
        Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", seed.archive.display()))
            .arg(format!(
                "docker://{}/imgmode-seed:{version}",
                reg.host_addr()
            )),
        "skopeo copy (seed to the registry)",
    )?;
    let targets = [dir.join("target.qcow2"), dir.join("target2.qcow2")];
    for t in &targets {
        let _ = std::fs::remove_file(t);
        run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(t)
                .arg("12G"),
            "qemu-img create (installation disk)",
        )?;
    }

    eprintln!("==> installing from the base system onto two blank disks");
    let script = INSTALL_SCRIPT
        .replace("__REG__", &reg.guest_addr())
        .replace("__VERSION__", &version)
        .replace("__LABEL__", EXTRA_LABEL);
    let mut extra_args = vec![];
    for (t, serial) in targets.iter().zip(["target", "target2"]) {
        extra_args.extend([
            "-drive".to_string(),
            format!("file={},format=qcow2,if=none,id={serial}", t.display()),
            "-device".to_string(),
            format!("virtio-blk-pci,drive={serial},serial={serial}"),
        ]);
    }
    let cfg = job(
        VmConfig {
            extra_args,
            network: true,
            ..VmConfig::new(&a.base_disk, Boot::Bios)
        },
        script,
    );
    let t0 = std::time::Instant::now();
    let results = run_job(
        &cfg,
        &dir.join("install"),
        "the installing VM",
        INSTALL_TIMEOUT,
    )
    .await?;
    let install_seconds = t0.elapsed().as_secs_f64();
    drop(reg);
    let p = parse_phase(&results, 1)?;

    // bad input first: refused before the disk is touched
    let refused = |cmd: &str, want: &str| -> Result<()> {
        let (c, rc, out) = p
            .runs
            .iter()
            .find(|(c, _, _)| c.contains(cmd))
            .with_context(|| format!("the guest did not run {cmd}"))?;
        ensure!(*rc != 0, "{c} succeeded; it must be refused");
        ensure!(
            out.contains(want),
            "{c} failed without saying {want:?}:\n{out}"
        );
        Ok(())
    };
    refused("ibi-version.yaml", "seed version mismatch")?;
    refused(
        "ibi-nodisk.yaml",
        "installationDisk /dev/disk/by-id/virtio-nosuchdisk does not exist",
    )?;
    let vstate: serde_json::Value = serde_json::from_str(
        report_line(&results, "VERSIONSTATE ").context("no state of the refused install")?,
    )?;
    ensure!(
        vstate["status"] == "failed" && vstate["step"] == "seed-gates",
        "the refused install's state file says {vstate}, expected failed at seed-gates"
    );
    ensure!(
        p.fact("untouched") == "yes",
        "the refused installs wrote to the installation disk (its first 4 MiB are not zero)"
    );
    let out = p.ran_ok("imgmode ibi install --config /run/ibi.yaml")?;
    let state: serde_json::Value = serde_json::from_str(
        report_line(&results, "STATE ").context("no state file of the install")?,
    )?;
    ensure!(
        state["status"] == "done",
        "the install's state file says {state}; output:\n{out}"
    );
    p.ran_ok("imgmode ibi install --config /run/ibi2.yaml")?;
    let live_boot = uptime(&results, "UPTIME-LIVE")?;
    let install =
        uptime(&results, "UPTIME-INSTALL-END")? - uptime(&results, "UPTIME-INSTALL-START")?;

    // the seed's own admin kubeconfig, as the seed VM had it
    let seedfiles = dir.join("seedfiles");
    let _ = std::fs::remove_dir_all(&seedfiles);
    crate::seed::extract_layer(&seed.layout, &seedfiles)?;
    let seed_kubeconfig = run(
        Command::new("tar")
            .arg("-xzOf")
            .arg(seedfiles.join("etc.tgz"))
            .arg("etc/kubernetes/kubeconfig"),
        "tar (the seed's kubeconfig from etc.tgz)",
    )?;

    let host1 = Host {
        name: "ibi1",
        hostname: "node1",
        extra_manifest: true,
    };
    let (keys1, first_boot_ready, commit) =
        boot_host(&a, &dir, &targets[0], &host1, &seed, &seed_kubeconfig).await?;
    let timings = Timings {
        live_boot,
        install,
        first_boot_ready,
        configured_disk: dir.join("installed-ibi1/overlay.qcow2"),
    };
    std::fs::write(
        dir.join("timings.json"),
        serde_json::to_vec_pretty(&timings)?,
    )?;
    let host2 = Host {
        name: "ibi2",
        hostname: "node2",
        extra_manifest: false,
    };
    let (keys2, _, _) = boot_host(&a, &dir, &targets[1], &host2, &seed, &seed_kubeconfig).await?;
    let shared: Vec<&String> = keys1.keys().filter(|k| keys2.contains_key(*k)).collect();
    ensure!(
        shared.is_empty(),
        "two hosts from one seed share {} private key(s): {}",
        shared.len(),
        shared
            .iter()
            .map(|k| format!("{k} ({} / {})", keys1[*k], keys2[*k]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(format!(
        "seed {version} installed twice from {} in {install_seconds:.0}s (version mismatch and missing disk refused, disk untouched); host 1 booted {} through OVMF with its cluster-config ISO: post-pivot renamed the cluster to ibi1.example.org (host node1), auth/kubeconfig reached /readyz, the seed's kubeconfig was refused, the extra manifest is in etcd; live boot {live_boot:.0}s + install {install:.0}s + first boot to post-pivot done {first_boot_ready:.0}s; the seed's /etc, /var and {EXTRA_LABEL} on /var/lib/containers; host 2 (ibi2) shares none of its {} private keys with host 1's {}",
        seed.image,
        &commit[..12],
        keys2.len(),
        keys1.len()
    ))
}

/// One installed host's configuration.
struct Host {
    name: &'static str,
    hostname: &'static str,
    extra_manifest: bool,
}

/// Make `h`'s configuration ISO, boot `disk` with it through OVMF, check the installed system
/// and post-pivot; returns its private keys (fingerprint -> location), the guest's uptime when
/// post-pivot was done, and the booted commit.
async fn boot_host(
    a: &Artifacts,
    dir: &Path,
    disk: &Path,
    h: &Host,
    seed: &crate::seed::SeedBuild,
    seed_kubeconfig: &str,
) -> Result<(BTreeMap<String, String>, f64, String)> {
    eprintln!(
        "==> {}: the configuration ISO (imgmode ibi create-config-image)",
        h.name
    );
    let conf = dir.join(format!("config-{}", h.name));
    let _ = std::fs::remove_dir_all(&conf);
    std::fs::create_dir_all(&conf)?;
    std::fs::write(
        conf.join("install-config.yaml"),
        INSTALL_CONFIG.replace("__NAME__", h.name),
    )?;
    std::fs::write(
        conf.join("image-based-config.yaml"),
        IMAGE_BASED_CONFIG
            .replace("__NAME__", h.name)
            .replace("__HOST__", h.hostname),
    )?;
    if h.extra_manifest {
        std::fs::create_dir_all(conf.join("extra-manifests"))?;
        std::fs::write(conf.join("extra-manifests/extra.yaml"), EXTRA_MANIFEST)?;
    }
    run(
        Command::new(&a.imgmode)
            .args(["ibi", "create-config-image", "--dir"])
            .arg(&conf),
        "imgmode ibi create-config-image",
    )?;
    let kubeconfig = std::fs::read_to_string(conf.join("auth/kubeconfig"))?;

    eprintln!(
        "==> {}: booting the installed disk alone through OVMF with the configuration ISO",
        h.name
    );
    let cfg = job(
        VmConfig {
            extra_args: vec![
                "-drive".into(),
                format!(
                    "file={},format=raw,media=cdrom,readonly=on,if=none,id=cfg",
                    conf.join("imagebasedconfig.iso").display()
                ),
                "-device".into(),
                "ide-cd,drive=cfg".into(),
            ],
            network: true,
            ..VmConfig::new(disk, Boot::Uefi)
        },
        BOOTED_SCRIPT.to_string(),
    )
    .credential("vmtest.kubeconfig", kubeconfig)
    .credential("vmtest.seedkubeconfig", seed_kubeconfig.to_string());
    let results = run_job(
        &cfg,
        &dir.join(format!("installed-{}", h.name)),
        &format!("the installed disk of {}", h.name),
        BOOT_TIMEOUT + POST_PIVOT_TIMEOUT,
    )
    .await?;
    let b = parse_phase(&results, 1)?;
    if b.fact("post-pivot-done") != "yes" {
        let diag = diag_section(&results);
        bail!(
            "{}: post-pivot did not finish on the installed disk; its journal:\n{diag}",
            h.name
        );
    }
    let booted = b.booted()?;
    ensure!(
        booted.checksum == seed.phase.booted_checksum,
        "{}: the installed disk booted commit {}, the seed system ran {}",
        h.name,
        booted.checksum,
        seed.phase.booted_checksum
    );
    for (fact, want) in [
        ("firmware", "uefi"),
        ("karg", "yes"),
        ("marker", "yes"),
        ("deleted", "yes"),
        ("identity", "yes"),
        ("etcd-data", "yes"),
        ("containers-partlabel", EXTRA_LABEL),
        ("containers-fs", "ext4"),
        ("post-pivot-enabled", "disabled"),
        ("hostname", h.hostname),
        ("ssh-key", "yes"),
        ("pull-secret", "yes"),
    ] {
        ensure!(
            b.fact(fact) == want,
            "{}: the installed system: {fact} is {:?}, expected {want:?}",
            h.name,
            b.fact(fact)
        );
    }
    // auth/kubeconfig of the configuration reaches /readyz: the served certificate names
    // api.<name>.example.org and chains to the configuration's signer, and the API accepts
    // the configuration's admin client certificate
    let body = b.ran_ok("imgmode internal test-cluster probe --kubeconfig ")?;
    ensure!(
        body.trim() == "ok",
        "{}: /readyz with auth/kubeconfig answered {body:?}",
        h.name
    );
    let (c, rc, out) = b
        .runs
        .iter()
        .find(|(c, _, _)| c.contains("vmtest.seedkubeconfig"))
        .context("the guest did not probe with the seed's kubeconfig")?;
    ensure!(
        *rc != 0 && out.contains("TLS with"),
        "{}: the seed's kubeconfig (its CA and admin certificate) still works after post-pivot: {c} -> rc {rc}:\n{out}",
        h.name
    );
    if h.extra_manifest {
        let cm = b.ran_ok("imgmode internal test-cluster get")?;
        ensure!(
            cm.contains("\"imgmode-extra\"") && cm.contains("from-the-config-iso"),
            "{}: the extra manifest is not in etcd as written: {cm}",
            h.name
        );
    }
    // the kubeadmin secret holds the hash of auth/kubeadmin-password
    let secret: serde_json::Value = serde_json::from_str(
        report_line(&results, "KUBEADMIN ").context("the guest reported no kubeadmin secret")?,
    )
    .with_context(|| format!("{}: no kube-system/kubeadmin secret in etcd", h.name))?;
    let hash = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["kubeadmin"].as_str().unwrap_or_default())
            .context("the kubeadmin secret's data is not base64")?
    };
    let password = std::fs::read_to_string(conf.join("auth/kubeadmin-password"))?;
    ensure!(
        bcrypt::verify(password.trim(), &String::from_utf8_lossy(&hash)).unwrap_or(false),
        "{}: the kube-system/kubeadmin secret does not hold the hash of auth/kubeadmin-password",
        h.name
    );
    let keys: BTreeMap<String, String> = results
        .split_once("KEYS-BEGIN")
        .and_then(|(_, r)| r.split_once("KEYS-END"))
        .map_or("", |(k, _)| k)
        .lines()
        .filter_map(|l| l.trim().split_once(' '))
        .map(|(f, at)| (f.to_string(), at.to_string()))
        .collect();
    ensure!(
        keys.len() >= 8,
        "{}: the key inventory lists {} private keys; the test cluster has more",
        h.name,
        keys.len()
    );
    Ok((keys, uptime(&results, "UPTIME-READY")?, booted.checksum))
}
