//! The `ibi` scenario: image-based installation from the installation ISO, end to end. For
//! each of two hosts, `imgmode ibi create-image` writes an ISO and `imgmode ibi
//! create-config-image` a configuration ISO; the VM has a blank disk first in its boot order,
//! so the firmware boots the ISO; the live system (the ISO's root image under a RAM layer) reports on itself, refuses bad
//! configs with the disk untouched (host 1), and its unit installs the seed and reboots into
//! the disk, where post-pivot runs with the configuration ISO: the seed's commit, /etc and
//! /var, container storage on the extra partition, the new name, hostname and keys
//! (`auth/kubeconfig` works, the seed's does not; the extra manifest in etcd). Host 1 boots
//! through OVMF on a private network with no DHCP server, where its live system and then its
//! installed system take static addresses from `networkConfig`, and pulls from a TLS registry
//! (trust bundle, pull secret) on that network; host 2 boots
//! through SeaBIOS and installs from the seed embedded in its ISO after the registry is gone.
//! Neither host holds a private key of the seed system's, and the two share none.
//! `ibi` (the CI tier's) installs host 1 only; `ibi-two-sites` both.

use crate::harness::artifacts::{guide_blocks, run, ssh_keypair, write_secret, Artifacts};
use crate::harness::context::RunContext;
use crate::harness::guest::{
    diag_section, file_modes, job, key_inventory, parse_phase, report_line, run_job_timed, Phase,
    BOOT_TIMEOUT,
};
use crate::harness::install_iso::{live_job_ordered, no_failed_live_units, seed_in_tls_registry};
use crate::harness::media::{blank_disk, cdrom};
use crate::harness::privnet::{self, PrivateNet};
use crate::harness::qemu::{Boot, VmConfig};
use crate::harness::secrets::{no_admin_signer_key, private_outputs};
use crate::harness::seed::{extract_layer, SeedBuild};
use crate::harness::timeline::Timeline;
use crate::scenarios::ibi_site;
use crate::scenarios::ibi_timing::{ibi_phases, plain_boot, Timings, HOST_MEMORY_MIB};
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Installing under TCG: fetching and unpacking the seed, pull-local, deploy.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);
/// Post-pivot under TCG: waiting for the ISO, recert of the test cluster, services, /readyz.
const POST_PIVOT_TIMEOUT: Duration = Duration::from_secs(600);
const INSTALL_CONFIG: &str = "apiVersion: v1\nmetadata:\n  name: __NAME__\nbaseDomain: example.org\ncontrolPlane:\n  name: master\n  replicas: 1\nplatform:\n  none: {}\npullSecret: '{\"auths\":{\"vmtest-ibi-registry.example\":{\"auth\":\"eDp5\"}}}'\nsshKey: __SSHKEY__\n";
const IMAGE_BASED_CONFIG: &str = "apiVersion: v1beta1\nkind: ImageBasedConfig\nmetadata:\n  name: __NAME__\nhostname: __HOST__\nadditionalNTPSources:\n- ntp1.example.org\n- ntp2.example.org\n";
const EXTRA_MANIFEST: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: imgmode-extra\n  namespace: default\ndata:\n  origin: from-the-config-iso\n";
/// The partition label the scenario's config asks for.
const EXTRA_LABEL: &str = "containers";

/// The installation config; the registry serves TLS from the scenario's CA (the trust bundle).
const IBI_CONFIG: &str = "apiVersion: v1beta1
kind: ImageBasedInstallationConfig
metadata:
  name: vmtest
seedImage: __REG__/imgmode-seed:__VERSION__
seedVersion: __VERSION__
installationDisk: /dev/vda
pullSecret: '{\"auths\":{\"__REG__\":{\"auth\":\"dm10ZXN0OnZtdGVzdA==\"}}}'
sshKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKd9b2hxQ3JtY2ZxQ1k5b2l4d0ZxVnRrR0lqU0N0eHd4 imgmode-vmtest-live
extraPartitionLabel: __LABEL__
extraPartitionStart: -2G
additionalTrustBundle: |
__BUNDLE__";

const LIVE_SCRIPT: &str = r#"echo "IMGMODE-PHASE-0-BEGIN"
echo "UPTIME-LIVE $(cut -d' ' -f1 /proc/uptime)"
__FAILED_UNITS__
c=/etc/imgmode/image-based-installation-config.yaml
echo "FACT live-root=$(findmnt -n -o FSTYPE /)"
echo "FACT live-root-image=$(findmnt -n -o FSTYPE /run/imgmode-live/root)"
echo "FACT live-root-layer=$(findmnt -n -o FSTYPE /run/imgmode-live/rw)"
echo "FACT live-firmware=$(test -d /sys/firmware/efi && echo uefi || echo bios)"
echo "FACT live-ssh-key=$(yesno grep -q imgmode-vmtest-live /root/.ssh/authorized_keys)"
echo "FACT live-unit=$(systemctl is-enabled imgmode-ibi-install.service)"
echo "FACT live-config-mode=$(stat -c %a $c)"
if [ "__NETWORK__" = yes ]; then
  # the addresses once the network is up: networkConfig's static one on the host without DHCP,
  # the only host whose live addresses are checked (the others' installs do not wait on this)
  /usr/lib/systemd/systemd-networkd-wait-online --any --timeout=120 >/dev/null 2>&1 || echo "FACT network-wait=timed-out"
  echo "FACT live-address=$(ip -4 -o addr show scope global | awk '{print $4}' | tr '\n' ' ')"
  echo "FACT live-dhcp-leases=$(ls /run/systemd/netif/leases 2>/dev/null | wc -l)"
fi
if [ "__REFUSALS__" = yes ]; then
  # this unit runs before the install unit (and its wait for the network): wait here too, so
  # the refusals meet the registry and not a missing route
  /usr/lib/systemd/systemd-networkd-wait-online --any --timeout=120 >/dev/null 2>&1 || echo "FACT network-wait=timed-out"
  sed 's/^seedVersion: .*/seedVersion: 4.0.0-other/' $c > /run/ibi-version.yaml
  sed 's|^installationDisk: .*|installationDisk: /dev/disk/by-id/virtio-nosuchdisk|' $c > /run/ibi-nodisk.yaml
  run imgmode ibi install --config /run/ibi-version.yaml --state /run/ibi-version-state.json
  echo "VERSIONSTATE $(tr -d '\n' < /run/ibi-version-state.json)"
  run imgmode ibi install --config /run/ibi-nodisk.yaml --state /run/ibi-nodisk-state.json
  echo "FACT untouched=$(yesno cmp -s -n 4194304 /dev/vda /dev/zero)"
fi
filemodes live /etc/imgmode /root/.ssh /etc/containers /etc/ssh /run/imgmode
echo "IMGMODE-PHASE-0-END"
"#;

const BOOTED_SCRIPT: &str = r#"# the job unit comes with every boot; the live system has its own checks
grep -q "imgmode.live=" /proc/cmdline && exit 0
echo "IMGMODE-PHASE-1-BEGIN"
# post-pivot runs before multi-user.target; on failure it restarts, so wait for its marker
i=0
until test -f /var/lib/imgmode/post-pivot/done; do i=$((i + 1)); [ $i -gt 3000 ] && break; sleep 0.2; done
echo "UPTIME-READY $(cut -d' ' -f1 /proc/uptime)"
echo "POSTPIVOTSTEPS $(tr -d '\n' < /var/lib/imgmode/post-pivot/steps.json)"
echo "FACT post-pivot-done=$(yesno test -f /var/lib/imgmode/post-pivot/done)"
echo "FACT post-pivot-enabled=$(systemctl is-enabled imgmode-post-pivot.service 2>/dev/null)"
if ! test -f /var/lib/imgmode/post-pivot/done; then
  echo "DIAG-BEGIN"; journalctl -b --no-pager -u imgmode-post-pivot | tail -60; echo "DIAG-END"
fi
echo "INSTALLED $(tr -d '\n' < /var/lib/imgmode/ibi-install.json)"
echo "FACT hostname=$(hostname)"
echo "FACT ssh-key=$(yesno grep -q imgmode-vmtest-ibi /root/.ssh/authorized_keys)"
echo "FACT authorized-keys=$(grep -c . /root/.ssh/authorized_keys)"
echo "FACT post-pivot-secrets=$(cd /var/lib/imgmode/post-pivot && ls -d manifest.json extra-manifests.json keys 2>/dev/null | tr '\n' ' ')none"
echo "FACT post-pivot-state-mode=$(stat -c %a /var/lib/imgmode/post-pivot)"
echo "FACT pull-secret=$(yesno grep -q vmtest-ibi-registry /var/lib/kubelet/config.json)"
# SSH: the site's key logs in, the seed owner's does not; the host keys are this host's own
install -m 600 "$CREDENTIALS_DIRECTORY/vmtest.sitekey" /run/vmtest-sitekey
install -m 600 "$CREDENTIALS_DIRECTORY/vmtest.seedkey" /run/vmtest-seedkey
sshtry() { ssh -i "$1" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=30 root@127.0.0.1 true 2>/dev/null; }
echo "FACT sshd=$(systemctl is-active ssh.service)"
echo "FACT ssh-site-key=$(yesno sshtry /run/vmtest-sitekey)"
echo "FACT ssh-seed-key=$(yesno sshtry /run/vmtest-seedkey)"
rm -f /run/vmtest-sitekey /run/vmtest-seedkey
echo "HOSTKEYS $(for f in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf "$f" | cut -d' ' -f2; done | tr '\n' ' ')"
run imgmode internal test-cluster probe --kubeconfig "$CREDENTIALS_DIRECTORY/vmtest.kubeconfig" --connect-to 127.0.0.1
run imgmode internal test-cluster probe --kubeconfig "$CREDENTIALS_DIRECTORY/vmtest.seedkubeconfig" --connect-to 127.0.0.1
run imgmode internal test-cluster get /kubernetes.io/configmaps/default/imgmode-extra
echo "KUBEADMIN $(imgmode internal test-cluster get /kubernetes.io/secrets/kube-system/kubeadmin)"
echo "PULLSECRET $(imgmode internal test-cluster get /kubernetes.io/secrets/openshift-config/pull-secret)"
echo "FACT ntp=$(sed -n 's/^NTP=//p' /etc/systemd/timesyncd.conf.d/50-imgmode.conf | tr ' ' ',')"
__SITE__filemodes installed /var/lib/imgmode /etc/imgmode /etc/systemd/system /root/.ssh /var/lib/kubelet /etc/ssh /etc/containers /etc/kubernetes /var/lib/etcd
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

/// A guest's `/proc/uptime` seconds reported on a `<tag> <seconds>` line.
fn uptime(results: &str, tag: &str) -> Result<f64> {
    report_line(results, &format!("{tag} "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("the guest reported no {tag}"))
}

/// The `ibi` scenario (`two_sites` false: host 1 only, the CI tier's) and `ibi-two-sites`
/// (`two_sites`: host 2 too, and what the two share).
pub async fn ibi(ctx: &RunContext, dir: &Path, two_sites: bool) -> Result<String> {
    let a = &ctx.artifacts;
    ensure!(
        two_sites || !ctx.baselines,
        "the IBI benchmark's baseline boots the second site's disk again: run ibi-two-sites"
    );
    eprintln!("==> pushing the seed to a registry (TLS, the scenario's CA)");
    let (seed, version, reg) = seed_in_tls_registry(ctx, dir).await?;
    let (ca, _) = reg.tls.clone().context("the registry serves no TLS")?;

    // the seed's own admin kubeconfig, as the seed VM had it
    let seedfiles = dir.join("seedfiles");
    let _ = std::fs::remove_dir_all(&seedfiles);
    extract_layer(&seed.layout, &seedfiles)?;
    let seed_kubeconfig = run(
        Command::new("tar")
            .arg("-xzOf")
            .arg(seedfiles.join("etc.tgz"))
            .arg("etc/kubernetes/kubeconfig"),
        "tar (the seed's kubeconfig from etc.tgz)",
    )?;

    let all = hosts();
    let hosts = if two_sites { &all[..] } else { &all[..1] };
    // host 1's network: no DHCP server, the registry forwarded onto it
    let mut net = PrivateNet::create()?;
    net.forward(reg.port)?;
    // the ISOs while the registry runs: host 1's live system pulls the seed from it (as the
    // private network's host), host 2's ISO carries a copy made here (from 127.0.0.1)
    let mut isos = vec![];
    for h in hosts {
        let reg_addr = if h.embed_seed {
            reg.host_addr()
        } else if h.no_dhcp {
            format!("{}:{}", privnet::HOST_ADDR, reg.port)
        } else {
            reg.guest_addr()
        };
        isos.push(make_isos(a, dir, h, &reg_addr, &version, &ca)?);
    }
    let r1 = boot_host(
        dir,
        &hosts[0],
        &isos[0],
        &seed,
        &seed_kubeconfig,
        Some(&net),
        &a.imgmode,
    )
    .await?;
    no_seed_key("host 1", &seed, &r1)?;
    let host1 = format!(
        "host 1 (OVMF): the installation ISO ({:.0} MiB, made in {:.0}s) booted from a CD onto a blank disk, ran from its root image under a RAM layer (root {}), refused a seed version mismatch and a missing disk with the disk untouched, installed seed {version} from a TLS registry (trust bundle, pull secret) in {:.0}s and rebooted into commit {}; post-pivot renamed the cluster to ibi1.example.org (host node1) from a configuration ISO without the admin signer's key, auth/kubeconfig reached /readyz, the seed's kubeconfig was refused, the extra manifest and the site's pull secret are in etcd, SSH takes the site's key and refuses the seed owner's; none of its {} private keys is one of the seed system's {}; the configuration's cluster ID, node labels, proxy, trust bundle and release mirror are in the cluster's objects and on the host, and on a private network with no DHCP server its live system installed over the installation config's static address and its installed system came up on the configuration's (no DHCP lease in either); live boot {:.0}s + install {:.0}s + first boot to post-pivot done {:.0}s",
        isos[0].iso_mib,
        isos[0].seconds,
        r1.live_root,
        r1.install,
        &r1.commit[..12],
        r1.keys.len(),
        seed.keys.len(),
        r1.live_boot,
        r1.install,
        r1.first_boot_ready,
    );
    drop(net);
    drop(reg);
    if !two_sites {
        return Ok(host1);
    }
    let second = second_site(ctx, dir, &hosts[1], &isos[1], &seed, &seed_kubeconfig, &r1).await?;
    Ok(format!("{host1}; {second}"))
}

/// `ibi-two-sites`' second site `h` (after host 1, `r1`): installed from the seed its ISO
/// carries with no registry, then checked for the seed's keys and for any key host 1 holds; with
/// `--baselines`, its installed disk booted again for the IBI benchmark. Returns what it proved.
async fn second_site(
    ctx: &RunContext,
    dir: &Path,
    h: &Host,
    isos: &Isos,
    seed: &SeedBuild,
    seed_kubeconfig: &str,
    r1: &HostResult,
) -> Result<String> {
    let r2 = boot_host(
        dir,
        h,
        isos,
        seed,
        seed_kubeconfig,
        None,
        &ctx.artifacts.imgmode,
    )
    .await?;
    if ctx.baselines {
        // the benchmark's baseline, in this run: host 2's installed disk booted again
        let configured = dir.join(format!("{}/overlay.qcow2", h.name));
        let (plain, plain_phases) =
            plain_boot(&configured, h.boot.clone(), &dir.join("plain-boot")).await?;
        let timings = Timings {
            end_to_end: r2.wall_ready,
            plain_boot: plain,
            live_boot: r2.live_boot,
            install: r2.install,
            first_boot_ready: r2.first_boot_ready,
            phases: r2.phases.clone(),
            plain_phases,
        };
        std::fs::write(
            dir.join("timings.json"),
            serde_json::to_vec_pretty(&timings)?,
        )?;
    }
    no_seed_key("host 2", seed, &r2)?;
    let shared = shared_keys(&r1.keys, &r2.keys);
    ensure!(
        shared.is_empty(),
        "two hosts from one seed share {} private key(s): {}",
        shared.len(),
        shared.join(", ")
    );
    let shared_host_keys: Vec<&String> = r1
        .host_keys
        .iter()
        .filter(|k| r2.host_keys.contains(k))
        .collect();
    ensure!(
        shared_host_keys.is_empty(),
        "two hosts from one seed share SSH host keys: {shared_host_keys:?}"
    );
    Ok(format!(
        "host 2 (SeaBIOS) installed from the seed embedded in its ISO ({:.0} MiB) with the registry gone, holds none of the seed's private keys either, and shares none of its {} private keys with host 1's {} and none of its SSH host keys",
        isos.iso_mib,
        r2.keys.len(),
        r1.keys.len()
    ))
}

/// Every private key of the seed system was replaced on the site `r` (`who`): it holds none.
fn no_seed_key(who: &str, seed: &SeedBuild, r: &HostResult) -> Result<()> {
    let kept = shared_keys(&seed.keys, &r.keys);
    ensure!(
        kept.is_empty(),
        "{who} kept {} of the seed's private keys: {}",
        kept.len(),
        kept.join(", ")
    );
    Ok(())
}

/// The private keys (fingerprints) both inventories hold, each with where `a` and `b` keep it.
fn shared_keys(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    a.iter()
        .filter_map(|(k, at)| b.get(k).map(|bt| format!("{k} ({at} / {bt})")))
        .collect()
}

/// Host 1: UEFI, the seed from the registry on a private network without DHCP, the refused
/// installs first, an extra manifest; host 2: BIOS, the seed embedded in its ISO.
fn hosts() -> [Host; 2] {
    [
        Host {
            name: "ibi1",
            hostname: "node1",
            extra_manifest: true,
            boot: Boot::Uefi,
            embed_seed: false,
            refusals: true,
            no_dhcp: true,
        },
        Host {
            name: "ibi2",
            hostname: "node2",
            extra_manifest: false,
            boot: Boot::Bios,
            embed_seed: true,
            refusals: false,
            no_dhcp: false,
        },
    ]
}

/// One host: its configuration, and how its installation ISO is made and booted.
struct Host {
    name: &'static str,
    hostname: &'static str,
    extra_manifest: bool,
    /// Firmware of the VM: the ISO and then the installed disk boot through it.
    boot: Boot,
    embed_seed: bool,
    /// Run the refused installs in the live system before its own install.
    refusals: bool,
    /// On a private network with no DHCP server ([`privnet`]): the live system takes a static
    /// address from the installation config's networkConfig and reaches the registry with it,
    /// the installed system another from the configuration's; otherwise QEMU user networking
    /// with its DHCP.
    no_dhcp: bool,
}

/// A host's two ISOs.
struct Isos {
    conf: PathBuf,
    /// The private key of the configuration's `sshKey`.
    site_key: PathBuf,
    install_iso: PathBuf,
    iso_mib: f64,
    seconds: f64,
    /// The trust bundle the configurations give (the registry's CA).
    trust_bundle: String,
}

/// What a host's VM proved.
struct HostResult {
    /// fingerprint -> location of every private key
    keys: BTreeMap<String, String>,
    /// The SSH host keys' fingerprints.
    host_keys: Vec<String>,
    live_boot: f64,
    live_root: String,
    install: f64,
    first_boot_ready: f64,
    /// Wall clock from QEMU's start to the installed system's post-pivot done.
    wall_ready: f64,
    commit: String,
    /// That span cut into phases.
    phases: Timeline,
}

/// `h`'s configuration ISO (`imgmode ibi create-config-image`) and installation ISO
/// (`imgmode ibi create-image`, seed from `reg`, trusted through `ca`).
fn make_isos(
    a: &Artifacts,
    dir: &Path,
    h: &Host,
    reg: &str,
    version: &str,
    ca: &str,
) -> Result<Isos> {
    eprintln!(
        "==> {}: the configuration ISO (imgmode ibi create-config-image)",
        h.name
    );
    let conf = dir.join(format!("config-{}", h.name));
    let _ = std::fs::remove_dir_all(&conf);
    std::fs::create_dir_all(&conf)?;
    // the site's SSH key: a real pair, so the installed host can be logged in to with it
    let site_key = dir.join(format!("site-key-{}", h.name));
    let site_pub = ssh_keypair(&site_key, "imgmode-vmtest-ibi")?;
    let bundle: String = ca.lines().map(|l| format!("  {l}\n")).collect();
    // the install config and the installation config hold pull secrets: 0600 from the start
    write_secret(
        &conf.join("install-config.yaml"),
        &format!("{INSTALL_CONFIG}{}", ibi_site::install_config(h.no_dhcp))
            .replace("__NAME__", h.name)
            .replace("__SSHKEY__", &site_pub)
            .replace("__BUNDLE__", &bundle),
    )?;
    std::fs::write(
        conf.join("image-based-config.yaml"),
        IMAGE_BASED_CONFIG
            .replace("__NAME__", h.name)
            .replace("__HOST__", h.hostname)
            + &ibi_site::image_based_config(h.name, h.no_dhcp),
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
    no_admin_signer_key(h.name, &conf)?;
    private_outputs(
        &[
            (conf.join("imagebasedconfig.iso"), 0o600),
            (conf.join("auth"), 0o700),
            (conf.join("auth/kubeconfig"), 0o600),
            (conf.join("auth/kubeadmin-password"), 0o600),
        ],
        &dir.join(format!("file-modes-host-{}.txt", h.name)),
    )?;

    eprintln!(
        "==> {}: the installation ISO (imgmode ibi create-image{})",
        h.name,
        if h.embed_seed { " --embed-seed" } else { "" }
    );
    let isodir = dir.join(format!("iso-{}", h.name));
    let _ = std::fs::remove_dir_all(&isodir);
    std::fs::create_dir_all(&isodir)?;
    let config = isodir.join("image-based-installation-config.yaml");
    write_secret(
        &config,
        &(IBI_CONFIG
            .replace("__REG__", reg)
            .replace("__VERSION__", version)
            .replace("__LABEL__", EXTRA_LABEL)
            .replace("__BUNDLE__", &bundle)
            + &ibi_site::installation_config(h.no_dhcp)),
    )?;
    let t0 = std::time::Instant::now();
    let mut cmd = Command::new(&a.imgmode);
    cmd.args(["ibi", "create-image", "--config"])
        .arg(&config)
        .arg("--dir")
        .arg(&isodir);
    if h.embed_seed {
        cmd.arg("--embed-seed");
    }
    run(&mut cmd, "imgmode ibi create-image")?;
    let seconds = t0.elapsed().as_secs_f64();
    let install_iso = isodir.join("imgmode-ibi.iso");
    // it carries the pull secret (and, with a payload, the registry's key and htpasswd)
    private_outputs(
        &[(install_iso.clone(), 0o600)],
        &dir.join(format!("file-modes-host-iso-{}.txt", h.name)),
    )?;
    let iso_mib = std::fs::metadata(&install_iso)
        .context("imgmode ibi create-image wrote no imgmode-ibi.iso")?
        .len() as f64
        / (1024.0 * 1024.0);
    Ok(Isos {
        conf,
        site_key,
        install_iso,
        iso_mib,
        seconds,
        trust_bundle: ca.to_string(),
    })
}

/// Boot `h`'s VM: a blank disk first in the boot order, the installation ISO second, the
/// configuration ISO attached. The live system installs and reboots into the disk, where
/// post-pivot runs; then check the live system's report, the installed system and
/// post-pivot's result.
async fn boot_host(
    dir: &Path,
    h: &Host,
    isos: &Isos,
    seed: &SeedBuild,
    seed_kubeconfig: &str,
    net: Option<&PrivateNet>,
    imgmode: &Path,
) -> Result<HostResult> {
    let conf = &isos.conf;
    let blank = dir.join(format!("blank-{}.qcow2", h.name));
    blank_disk(&blank)?;
    let kubeconfig = std::fs::read_to_string(conf.join("auth/kubeconfig"))?;

    eprintln!(
        "==> {}: booting the installation ISO ({:?}) with a blank disk and the configuration ISO",
        h.name, h.boot
    );
    let mut extra_args = cdrom(&isos.install_iso, "live", 0, Some(2)).to_vec();
    extra_args.extend(cdrom(&conf.join("imagebasedconfig.iso"), "cfg", 1, None));
    if let Some(net) = net {
        extra_args.extend(net.qemu_args(ibi_site::MAC));
    }
    // a host without refusals or a network wait checks its live system beside the install
    let cfg = live_job_ordered(
        job(
            VmConfig {
                extra_args,
                network: net.is_none(),
                memory_mib: HOST_MEMORY_MIB,
                ..VmConfig::new(&blank, h.boot.clone())
            },
            BOOTED_SCRIPT.replace(
                "__SITE__",
                &format!(
                    "{}{}",
                    ibi_site::SCRIPT,
                    guide_blocks(imgmode, "ibi", None)?
                ),
            ),
        ),
        LIVE_SCRIPT
            .replace("__REFUSALS__", if h.refusals { "yes" } else { "no" })
            .replace("__NETWORK__", if h.no_dhcp { "yes" } else { "no" }),
        h.refusals || h.no_dhcp,
    )
    .credential("vmtest.kubeconfig", kubeconfig)
    .credential("vmtest.seedkubeconfig", seed_kubeconfig.to_string())
    .credential("vmtest.sitekey", std::fs::read_to_string(&isos.site_key)?)
    .credential(
        "vmtest.seedkey",
        std::fs::read_to_string(&seed.owner_key).with_context(|| {
            format!(
                "the seed owner's key {} (made with the seed system's disk)",
                seed.owner_key.display()
            )
        })?,
    );
    let (results, wall_ready) = run_job_timed(
        &cfg,
        &dir.join(h.name),
        &format!("{}: install from the ISO, then the installed disk", h.name),
        BOOT_TIMEOUT * 2 + INSTALL_TIMEOUT + POST_PIVOT_TIMEOUT,
        true,
    )
    .await?;
    let wall_ready = wall_ready.context("the installed system reported no UPTIME-READY")?;

    let firmware = match h.boot {
        Boot::Bios => "bios",
        _ => "uefi",
    };
    let (live_root, live_boot) = check_live(h, &results, firmware)?;
    let (install, b, commit) = check_installed(h, &results, seed, firmware)?;
    // every file the install, post-pivot and the live system wrote, with its mode: no secret
    // readable by group or others (the listings stay in the scenario's directory)
    for tag in ["live", "installed"] {
        let listing = file_modes(&results, tag, h.name)?;
        std::fs::write(
            dir.join(h.name).join(format!("file-modes-{tag}.txt")),
            listing,
        )?;
    }
    check_cluster(h, conf, &b, &results)?;
    ibi_site::check(h.name, &b, &results, &isos.trust_bundle, h.no_dhcp)?;
    // the image-based install guide's blocks (sh vm=ibi), run on the installed system
    guide_blocks(imgmode, "ibi", Some(&dir.join(h.name).join("results.log")))?;
    let keys = key_inventory(h.name, &results)?;
    let host_keys: Vec<String> = report_line(&results, "HOSTKEYS ")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    ensure!(
        host_keys.len() >= 3 && host_keys.iter().all(|k| k.starts_with("SHA256:")),
        "{}: the installed system lists SSH host keys {host_keys:?}; expected rsa, ecdsa and ed25519",
        h.name
    );
    Ok(HostResult {
        keys,
        host_keys,
        live_boot,
        live_root,
        install,
        first_boot_ready: uptime(&results, "UPTIME-READY")?,
        phases: ibi_phases(&dir.join(h.name), &results, wall_ready)?,
        wall_ready,
        commit,
    })
}

/// The live system's report (phase 0): no failed unit, the ISO's root image under a RAM
/// layer as its root, booted through
/// `firmware`, the ISO's key, unit and config; with refusals, the refused installs left the
/// disk untouched. Returns the live root's filesystem and the live system's uptime.
fn check_live(h: &Host, results: &str, firmware: &str) -> Result<(String, f64)> {
    // the live system
    let l = parse_phase(results, 0)
        .with_context(|| format!("{}: the live system reported nothing", h.name))?;
    no_failed_live_units(&l, h.name)?;
    let live_root = l.fact("live-root").to_string();
    for (fact, want) in [
        ("live-root", "overlay"),
        ("live-root-image", "erofs"),
        ("live-root-layer", "tmpfs"),
        ("live-firmware", firmware),
        ("live-ssh-key", "yes"),
        ("live-unit", "enabled"),
        ("live-config-mode", "600"),
    ] {
        ensure!(
            l.fact(fact) == want,
            "{}: the live system: {fact} is {:?}, expected {want:?}",
            h.name,
            l.fact(fact)
        );
    }
    if h.no_dhcp {
        // networkConfig of the installation config: the live system's only address is the
        // static one (no DHCP lease), and the install pulls the seed through it
        let addrs: Vec<&str> = l.fact("live-address").split_whitespace().collect();
        ensure!(
            addrs == [ibi_site::LIVE_ADDRESS],
            "{}: the live system's addresses are {addrs:?}, expected only {} from networkConfig",
            h.name,
            ibi_site::LIVE_ADDRESS
        );
        ensure!(
            l.fact("live-dhcp-leases") == "0",
            "{}: the live system holds {} DHCP lease(s); networkConfig turned DHCP off",
            h.name,
            l.fact("live-dhcp-leases")
        );
    }
    if h.refusals {
        // bad input first: refused before the disk is touched
        l.refused("ibi-version.yaml", "seed version mismatch")?;
        l.refused(
            "ibi-nodisk.yaml",
            "installationDisk /dev/disk/by-id/virtio-nosuchdisk does not exist",
        )?;
        let vstate: serde_json::Value = serde_json::from_str(
            report_line(results, "VERSIONSTATE ").context("no state of the refused install")?,
        )?;
        ensure!(
            vstate["status"] == "failed" && vstate["step"] == "seed-gates",
            "the refused install's state file says {vstate}, expected failed at seed-gates"
        );
        ensure!(
            l.fact("untouched") == "yes",
            "the refused installs wrote to the installation disk (its first 4 MiB are not zero)"
        );
    }
    let live_boot = uptime(results, "UPTIME-LIVE")?;
    Ok((live_root, live_boot))
}

/// The installed system's report (phase 1): the install's record, post-pivot done, the
/// seed's commit booted, and the installed system's facts. Returns the install's seconds, the
/// phase and the booted commit.
fn check_installed(
    h: &Host,
    results: &str,
    seed: &SeedBuild,
    firmware: &str,
) -> Result<(f64, Phase, String)> {
    // the install's record on the installed system
    let installed: serde_json::Value = serde_json::from_str(
        report_line(results, "INSTALLED ")
            .with_context(|| format!("{}: the installed system has no install record", h.name))?,
    )
    .with_context(|| format!("{}: the install record is not JSON", h.name))?;
    let want_from = h
        .embed_seed
        .then_some("oci:/run/imgmode/iso/seed")
        .map(str::to_string);
    ensure!(
        installed["seed_from"].as_str().map(str::to_string) == want_from
            && installed["disk"] == "/dev/vda"
            && installed["seed"]
                .as_str()
                .is_some_and(|s| s.ends_with(&format!(
                    "/imgmode-seed:{}",
                    seed.version().unwrap_or_default()
                ))),
        "{}: the install record says {installed}",
        h.name
    );
    let install = installed["seconds"]
        .as_f64()
        .context("the install record has no seconds")?;
    let b = parse_phase(results, 1)?;
    if b.fact("post-pivot-done") != "yes" {
        let diag = diag_section(results);
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
        ("firmware", firmware),
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
        // the site's key replaced the seed's: it is the only one
        ("authorized-keys", "1"),
        // post-pivot removed the configuration's keys, pull secret and manifests
        ("post-pivot-secrets", "none"),
        ("post-pivot-state-mode", "700"),
        ("pull-secret", "yes"),
        // sshd runs, takes the site's key and refuses the seed owner's
        ("sshd", "active"),
        ("ssh-site-key", "yes"),
        ("ssh-seed-key", "no"),
        // additionalNTPSources, for the base image's systemd-timesyncd
        ("ntp", "ntp1.example.org,ntp2.example.org"),
    ] {
        ensure!(
            b.fact(fact) == want,
            "{}: the installed system: {fact} is {:?}, expected {want:?}",
            h.name,
            b.fact(fact)
        );
    }
    Ok((install, b, booted.checksum))
}

/// Post-pivot's result: `auth/kubeconfig` of the configuration `conf` reaches /readyz, the
/// seed's kubeconfig does not, the extra manifest is in etcd, the kubeadmin secret holds the
/// hash of `auth/kubeadmin-password`, the cluster's pull secret is the site's.
fn check_cluster(h: &Host, conf: &Path, b: &Phase, results: &str) -> Result<()> {
    // auth/kubeconfig of the configuration reaches /readyz: the served certificate names
    // api.<name>.example.org and chains to the configuration's signer, and the API accepts
    // the configuration's admin client certificate
    let body = b.ran_ok("imgmode internal test-cluster probe --kubeconfig ")?;
    ensure!(
        body.trim() == "ok",
        "{}: /readyz with auth/kubeconfig answered {body:?}",
        h.name
    );
    b.refused("vmtest.seedkubeconfig", "TLS with").with_context(|| {
        format!(
            "{}: the seed's kubeconfig (its CA and admin certificate) must not work after post-pivot",
            h.name
        )
    })?;
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
        report_line(results, "KUBEADMIN ").context("the guest reported no kubeadmin secret")?,
    )
    .with_context(|| format!("{}: no kube-system/kubeadmin secret in etcd", h.name))?;
    let hash = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["kubeadmin"].as_str().unwrap_or_default())
            .context("the kubeadmin secret's data is not base64")?
    };
    // openshift-config/pull-secret is the site's, over the seed's placeholder
    let secret: serde_json::Value = serde_json::from_str(
        report_line(results, "PULLSECRET ").context("the guest reported no pull secret")?,
    )
    .with_context(|| format!("{}: no openshift-config/pull-secret in etcd", h.name))?;
    let dockerconfig = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(
                secret["data"][".dockerconfigjson"]
                    .as_str()
                    .unwrap_or_default(),
            )
            .context("the pull secret's data is not base64")?
    };
    ensure!(
        dockerconfig == br#"{"auths":{"vmtest-ibi-registry.example":{"auth":"eDp5"}}}"#,
        "{}: openshift-config/pull-secret in etcd is not the site's: {}",
        h.name,
        String::from_utf8_lossy(&dockerconfig)
    );
    let password = std::fs::read_to_string(conf.join("auth/kubeadmin-password"))?;
    ensure!(
        bcrypt::verify(password.trim(), &String::from_utf8_lossy(&hash)).unwrap_or(false),
        "{}: the kube-system/kubeadmin secret does not hold the hash of auth/kubeadmin-password",
        h.name
    );
    Ok(())
}
