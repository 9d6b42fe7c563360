//! The `registry-less-upgrade` scenario: registry-less day 2 with two nodes on a private link
//! and no other network. Node A installs from payload ISO v1, node B installs from A's
//! registry, and A imports payload ISO v2 when it is attached and upgrades from it.
//!
//! - **The payloads.** v1 holds this run's seed and release 1 (a small image standing in for a
//!   cluster release); v2 holds release 2 and the next OS (the seed system's image with one
//!   file more). All of them are pushed to a throwaway TLS registry, mirrored with `imgmode
//!   mirror`, and the registry is stopped before any VM starts.
//! - **Node A** installs from an installation ISO carrying v1. Its only NIC is on a link to B
//!   (QEMU socket networking: no host, no DHCP, no route out). On its installed system the link
//!   gets its static address as post-pivot's network step gives it (a `.network` file, networkd
//!   reconfigured) and the registry is restarted as post-pivot's drop-in does: its certificate is
//!   issued again to name the address (`imgmode payload tls`) and it listens on it. The test
//!   cluster's release is set to release 1 (`imgmode internal test-cluster upgrade`, as the
//!   cluster would run v1's release), and A prints `imgmode payload join-config`.
//! - **Node B**'s installation config is that part merged into an ordinary one (the seed by
//!   digest, a static address, the pull secret with the registry's credentials for A's
//!   address). B's live system pulls the seed by its original name through the mirror to A,
//!   whose CA it trusts through additionalTrustBundle; it is refused without credentials,
//!   installs the seed from A and boots the installed disk.
//! - **The upgrade.** An installation ISO carrying v2 is plugged into A as a new CD-ROM (QMP,
//!   a SCSI hot-plug). Its udev rule imports it with no command typed, the release record shows
//!   v2 available, and release 2's repository (new in v2) is pulled through the local
//!   registry by its original name. Node B, still running, copies v2 from A's registry as a
//!   control-plane node does (`imgmode payload pull`: the record image, then every image by
//!   digest, with the pull secret and A's CA), verifies it and records it available; a second
//!   pull copies nothing. Only then does the harness plug a second medium into A, which A waits
//!   for before it goes on (its switch and reboot would cut B's copy). Removing v1 is refused (the cluster runs its release). A
//!   switches its OS to v2's image by digest through port 22625 (the pull secret as bootc reads
//!   it, `/run/ostree/auth.json`), the cluster moves to release 2, and A reboots into the new
//!   OS. There removing v2 is refused (the booted deployment and the cluster use it) and
//!   removing v1 goes through.

use crate::harness::context::RunContext;
use crate::harness::guest::{
    job, parse_phase, phase, report_line, Phase, BOOT_TIMEOUT, SHUTDOWN_TIMEOUT,
};
use crate::harness::install_iso::{
    installation_iso, live_job, mirror_images, no_failed_live_units, push_next_os,
    push_release_image, seed_in_tls_registry,
};
use crate::harness::media::{blank_disk, cdrom};
use crate::harness::qemu::{Boot, Vm, VmConfig, SCSI_CONTROLLER};
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(1500);
/// Node A's import of v2 and its switch to v2's OS under TCG.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Node A's and node B's addresses on their link (a /24) and their NICs' MAC addresses.
const ADDR_A: &str = "10.78.0.10";
const ADDR_B: &str = "10.78.0.11";
const MAC_A: &str = "52:54:00:78:00:0a";
const MAC_B: &str = "52:54:00:78:00:0b";

/// "payload:s3cret-22625", the payload registry's credentials.
const AUTH: &str = "cGF5bG9hZDpzM2NyZXQtMjI2MjU=";

/// The installation config of either node: `__REST__` is the node's own part.
const IBI_CONFIG: &str = "apiVersion: v1beta1
kind: ImageBasedInstallationConfig
metadata:
  name: __NAME__
seedImage: __SEED__
seedVersion: __VERSION__
installationDisk: /dev/vda
pullSecret: '__SECRET__'
extraPartitionStart: -4G
proxy:
  httpProxy: http://proxy.site.invalid:3128
  httpsProxy: http://proxy.site.invalid:3128
  noProxy: 10.0.2.2,127.0.0.1,localhost,10.78.0.10
__REST__";

/// An installed node's link address as post-pivot's network step gives it (a `.network` file,
/// networkd reconfigured; post-pivot itself is held off here), waited for and reported.
const SET_LINK: &str = r#"mkdir -p /etc/systemd/network
printf '[Match]\nMACAddress=__LINK_MAC__\n\n[Network]\nDHCP=no\nAddress=__LINK_ADDR__/24\n' > /etc/systemd/network/10-imgmode-link.network
networkctl reload
networkctl reconfigure "$(ip -o link | awk -F': ' 'tolower($0) ~ /__LINK_MAC__/ {print $2; exit}')"
for i in $(seq 120); do ip -4 -o addr show | grep -q " __LINK_ADDR__/" && break; sleep 1; done
echo "FACT address=$(ip -4 -o addr show scope global | awk '{print $4}' | tr '\n' ' ')"
"#;

/// Node A's installed system, at every boot. The first: the link's static address as
/// post-pivot sets one, the registry restarted as post-pivot's drop-in does, what it names and
/// listens on, the cluster on release 1, the join config (phase 1); then, B installed, waiting
/// for payload ISO v2 to be plugged in and imported, the refused removal of v1, the switch to
/// v2's OS and the cluster's move to release 2 (phase 2), and a reboot. The second: the new
/// OS booted, v2 in use, v1 removed (phase 3).
const A_SCRIPT: &str = r#"grep -q "imgmode.live=" /proc/cmdline && exit 0
auth="$CREDENTIALS_DIRECTORY/vmtest.auth"
store=/var/lib/containers/imgmode-payload
etcd=http://127.0.0.1:2379
if [ -f /var/lib/imgmode-vmtest/upgraded ]; then
  echo "IMGMODE-PHASE-3-BEGIN"
  echo STATUS-BEGIN; imgmode status --format json; echo STATUS-END
  echo "FACT release-file=$(cat /usr/share/imgmode-vmtest/release 2>/dev/null || echo none)"
  run imgmode payload remove __V2__ --etcd-endpoint $etcd
  run imgmode payload remove __V1__ --etcd-endpoint $etcd
  echo "IRI $(tr -d '\n' < $store/internalreleaseimage.json)"
  echo "IMGMODE-PHASE-3-END"
  systemctl poweroff
  exit 0
fi
echo "IMGMODE-PHASE-1-BEGIN"
__SET_LINK__
run systemctl restart imgmode-payload-registry.service
echo "FACT registry=$(systemctl is-active imgmode-payload-registry.service)"
run journalctl -b -o cat -u imgmode-payload-tls.service
echo "FACT tls-names=$(openssl x509 -noout -ext subjectAltName -in /etc/imgmode/payload/tls.crt | tail -1 | tr -d ' ')"
echo "FACT listen=$(ss -Hltn 'sport = :22625' | awk '{print $4}' | sort | tr '\n' ' ')"
echo "FACT key-modes=$(stat -c '%a' /etc/imgmode/payload/ca.key /etc/imgmode/payload/tls.key | tr '\n' ' ')"
echo "JOINCONFIG $(imgmode payload join-config --registry __ADDR__ | base64 -w0)"
echo "REGCA $(base64 -w0 /etc/imgmode/payload/ca.crt)"
# the test cluster runs v1's release, as a cluster installed from v1 would
for i in $(seq 120); do imgmode internal test-cluster get /kubernetes.io/config.openshift.io/clusterversions/version >/dev/null 2>&1 && break; sleep 1; done
run imgmode internal test-cluster upgrade --to-image __R1__
echo "IMGMODE-PHASE-1-END"
# node B installs from here; then payload ISO v2 is plugged in as a new CD-ROM
for i in $(seq 3600); do [ -e /dev/sr1 ] && break; sleep 1; done
echo "IMGMODE-PHASE-2-BEGIN"
unit=imgmode-payload-import@sr1.service
# the device node comes before udev has started the unit: wait for the unit's main process to
# have exited (its exit time is set then), and for the unit to have left activating
for i in $(seq 1800); do
  ended=$(systemctl show -P ExecMainExitTimestampMonotonic "$unit")
  st=$(systemctl show -P ActiveState "$unit")
  [ -n "$ended" ] && [ "$ended" != 0 ] && [ "$st" != activating ] && break
  sleep 1
done
echo "FACT import-unit=$unit $(systemctl show -P Result "$unit") $(systemctl show -P ExecMainStatus "$unit")"
run journalctl -b -o cat -u "$unit"
echo "IRI $(tr -d '\n' < $store/internalreleaseimage.json)"
run skopeo inspect --no-tags --authfile "$auth" --format '{{.Digest}}' docker://__R2__
run imgmode payload remove __V1__ --etcd-endpoint $etcd
# node B copies v2 from here; the harness plugs in a second medium once it has
for i in $(seq 2400); do [ -e /dev/sr2 ] && break; sleep 1; done
echo "FACT b-copied=$([ -e /dev/sr2 ] && echo yes || echo no)"
# the pull secret where bootc (and imgmode's OS pulls, through ostree-ext) read it
install -m 0600 "$auth" /run/ostree/auth.json
run imgmode switch ostree-unverified-registry:__OS2__
rm -f /run/ostree/auth.json
run imgmode internal test-cluster upgrade --to-image __R2__
echo STATUS-BEGIN; imgmode status --format json; echo STATUS-END
mkdir -p /var/lib/imgmode-vmtest
touch /var/lib/imgmode-vmtest/upgraded
echo "IMGMODE-PHASE-2-END"
systemctl reboot
"#;

/// Node B's live system: its address, the seed by its original name through the mirror to A,
/// a pull from A without credentials. These checks run before the installation unit, which
/// waits for the network and trusts A's CA for its own pulls (the config's
/// additionalTrustBundle): here the address is waited for, and skopeo is given the CA.
const B_LIVE: &str = r#"echo "IMGMODE-PHASE-0-BEGIN"
__FAILED_UNITS__
auth="$CREDENTIALS_DIRECTORY/vmtest.auth"
for i in $(seq 180); do ip -4 -o addr show | grep -q " __ADDR_B__/" && break; sleep 1; done
echo "FACT address=$(ip -4 -o addr show scope global | awk '{print $4}' | tr '\n' ' ')"
mkdir -p /etc/containers/certs.d/__ADDR__:22625
cp "$CREDENTIALS_DIRECTORY/vmtest.regca" /etc/containers/certs.d/__ADDR__:22625/ca.crt
run skopeo inspect --no-tags --authfile "$auth" --format '{{.Digest}}' docker://__SEED__
run skopeo inspect --no-creds --raw docker://__ADDR__:22625/imgmode-seed@__DIGEST__
echo "IMGMODE-PHASE-0-END"
"#;

/// Node B's installed system: what it was installed from (phase 1); then, once A has imported
/// payload ISO v2 and serves its record, v2 copied from A by `imgmode payload pull` with the
/// pull secret and A's CA, verified, and recorded as available (phase 2). B serves no registry
/// of its own (it joined from A), so the copy goes to a store of its own path, which writes no
/// mirrors to a local registry.
const B_BOOTED: &str = r#"grep -q "imgmode.live=" /proc/cmdline && exit 0
echo "IMGMODE-PHASE-1-BEGIN"
echo "INSTALLED $(tr -d '\n' < /var/lib/imgmode/ibi-install.json)"
echo "IMGMODE-PHASE-1-END"
echo "IMGMODE-PHASE-2-BEGIN"
__SET_LINK__
auth="$CREDENTIALS_DIRECTORY/vmtest.auth"
store=/var/lib/containers/imgmode-vmtest-copy
mkdir -p /run/imgmode-vmtest-ca
cp "$CREDENTIALS_DIRECTORY/vmtest.regca" /run/imgmode-vmtest-ca/ca.crt
# A serves v2's record once its import is done
for i in $(seq 2400); do
  skopeo inspect --raw --authfile "$auth" --cert-dir /run/imgmode-vmtest-ca docker://__ADDR__:22625/imgmode-payloads:__V2HEX__ >/dev/null 2>&1 && break
  sleep 1
done
run imgmode payload pull --registry __ADDR__ --id __V2__ --store $store --pull-secret "$auth" --cert-dir /run/imgmode-vmtest-ca
run imgmode payload verify $store
run imgmode payload pull --id __V2__ --registry __ADDR__ --store $store --pull-secret "$auth" --cert-dir /run/imgmode-vmtest-ca
echo "IRI $(tr -d '\n' < $store/internalreleaseimage.json)"
echo "FACT leftovers=$(ls -A /var/lib/containers | grep -c imgmode-payload-pull)"
echo "IMGMODE-PHASE-2-END"
systemctl poweroff
"#;

/// B's static address on the link, as nmstate (its NIC found by MAC address).
fn b_network() -> String {
    format!("networkConfig:\n  interfaces:\n  - name: link0\n    type: ethernet\n    state: up\n    identifier: mac-address\n    mac-address: {MAC_B}\n    ipv4:\n      enabled: true\n      dhcp: false\n      address:\n      - ip: {ADDR_B}\n        prefix-length: 24\n    ipv6:\n      enabled: false\n")
}

/// A virtio NIC with `mac` on the link: `listen` for A (started first), `connect` for B.
fn link(port: u16, listen: bool, mac: &str) -> Vec<String> {
    let side = if listen { "listen" } else { "connect" };
    vec![
        "-netdev".into(),
        format!("socket,id=link,{side}=127.0.0.1:{port}"),
        "-device".into(),
        format!("virtio-net-pci,netdev=link,mac={mac}"),
    ]
}

/// An installation VM booting `iso` onto a blank disk in `dir`, with `extra` QEMU arguments.
fn node(
    dir: &Path,
    iso: &Path,
    extra: Vec<String>,
    booted: String,
    live: String,
) -> Result<VmConfig> {
    std::fs::create_dir_all(dir)?;
    let blank = dir.join("blank.qcow2");
    blank_disk(&blank)?;
    let mut args = cdrom(iso, "live", 0, Some(2)).to_vec();
    args.extend(extra);
    Ok(live_job(
        job(
            VmConfig {
                extra_args: args,
                network: false,
                memory_mib: 3072,
                ..VmConfig::new(&blank, Boot::Uefi)
            },
            booted,
        ),
        live,
    )
    // no cluster is configured (no configuration ISO): post-pivot is held off
    .unit_dropin(
        "imgmode-post-pivot.service",
        "[Unit]\nConditionKernelCommandLine=imgmode.vmtest.post-pivot\n",
    ))
}

/// What the scenario's images and payloads are.
struct Releases {
    seed: String,
    seed_digest: String,
    /// (reference by digest) of release 1 and 2.
    r1: String,
    r2: String,
    /// The next OS, by digest.
    os2: String,
    os2_digest: String,
    v1: String,
    v2: String,
}

/// The scenario's payloads, made on the host with the images they hold.
struct Payloads {
    rel: Releases,
    version: String,
    secret: String,
    iso_v1: PathBuf,
    iso_v2: PathBuf,
}

impl Payloads {
    /// The installation config of node `name` installing `seed`, with `rest` its own part.
    fn config(&self, name: &str, seed: &str, rest: &str) -> String {
        IBI_CONFIG
            .replace("__NAME__", name)
            .replace("__SEED__", seed)
            .replace("__VERSION__", &self.version)
            .replace("__SECRET__", &self.secret)
            .replace("__REST__", rest)
    }
}

/// The images pushed to a throwaway TLS registry, mirrored into payloads v1 and v2, and the
/// installation ISOs carrying them (node A's config); the registry is stopped on return.
async fn payloads(ctx: &RunContext, dir: &Path) -> Result<Payloads> {
    let a = &ctx.artifacts;
    let (_, version, reg) = seed_in_tls_registry(ctx, dir).await?;
    let (_, certs) = reg.tls.clone().context("the registry serves no TLS")?;
    let addr = reg.host_addr();
    let seed_by_tag = format!("{addr}/imgmode-seed:{version}");
    let r1 = push_release_image(dir, &addr, &certs, 1)?;
    let r2 = push_release_image(dir, &addr, &certs, 2)?;
    let os2 = push_next_os(a, dir, &addr, &certs)?;
    let v1 = mirror_images(
        a,
        &dir.join("payload-v1"),
        &[seed_by_tag.clone(), r1.clone()],
        &certs,
    )?;
    let v2 = mirror_images(
        a,
        &dir.join("payload-v2"),
        &[r2.clone(), os2.clone()],
        &certs,
    )?;
    let by_digest = |r: &str, d: &str| format!("{}@{d}", r.rsplit_once(':').map_or(r, |x| x.0));
    let rel = Releases {
        seed: by_digest(&seed_by_tag, &v1.digest(&seed_by_tag)?),
        seed_digest: v1.digest(&seed_by_tag)?,
        r1: by_digest(&r1, &v1.digest(&r1)?),
        r2: by_digest(&r2, &v2.digest(&r2)?),
        os2: by_digest(&os2, &v2.digest(&os2)?),
        os2_digest: v2.digest(&os2)?,
        v1: v1.id.clone(),
        v2: v2.id.clone(),
    };
    let secret = format!(
        r#"{{"auths":{{"{addr}":{{"auth":"eDp5"}},"localhost:22625":{{"auth":"{AUTH}"}},"{ADDR_A}:22625":{{"auth":"{AUTH}"}}}}}}"#
    );
    let mut p = Payloads {
        rel,
        version,
        secret,
        iso_v1: PathBuf::new(),
        iso_v2: PathBuf::new(),
    };
    let config_a = p.config("node-a", &seed_by_tag, "");
    p.iso_v1 =
        installation_iso(a, &dir.join("iso-v1"), &config_a, Some(&v1.dir))?.join("imgmode-ibi.iso");
    p.iso_v2 =
        installation_iso(a, &dir.join("iso-v2"), &config_a, Some(&v2.dir))?.join("imgmode-ibi.iso");
    // from here on nothing serves these images but node A's payloads
    drop(reg);
    Ok(p)
}

/// The `registry-less-upgrade` scenario.
pub async fn registry_less_upgrade(ctx: &RunContext, dir: &Path) -> Result<String> {
    let a = &ctx.artifacts;
    eprintln!("==> the payloads: v1 (the seed, release 1) and v2 (release 2, the next OS)");
    let p = payloads(ctx, dir).await?;
    let (rel, secret) = (&p.rel, &p.secret);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    eprintln!("==> node A: installs from payload ISO v1; its link to B gets {ADDR_A}");
    let fill_a = |s: &str| {
        s.replace("__SET_LINK__", SET_LINK)
            .replace("__LINK_MAC__", MAC_A)
            .replace("__LINK_ADDR__", ADDR_A)
            .replace("__ADDR__", ADDR_A)
            .replace("__V1__", &rel.v1)
            .replace("__V2__", &rel.v2)
            .replace("__R1__", &rel.r1)
            .replace("__R2__", &rel.r2)
            .replace("__OS2__", &rel.os2)
    };
    let mut extra = link(port, true, MAC_A);
    extra.extend(SCSI_CONTROLLER.map(String::from));
    let cfg_a = node(
        &dir.join("a"),
        &p.iso_v1,
        extra,
        fill_a(A_SCRIPT),
        "echo IMGMODE-PHASE-0-BEGIN\n__FAILED_UNITS__\necho IMGMODE-PHASE-0-END\n".into(),
    )?
    .unit_dropin(
        "imgmode-vmtest-live.service",
        "[Unit]\nAfter=imgmode-payload-registry.service\n",
    )
    .credential("vmtest.auth", secret.clone());
    let vm_dir_a = dir.join("a/vm");
    std::fs::create_dir_all(&vm_dir_a)?;
    let mut vm_a = Vm::start(&cfg_a, &vm_dir_a).await?;
    let (join, names, ca) = match serve_from_a(&mut vm_a).await {
        Ok(v) => v,
        Err(e) => return Err(a_failed(vm_a, e).await),
    };

    eprintln!("==> node B: its installation config from A's join-config; installs from A");
    let iso_b = installation_iso(
        a,
        &dir.join("iso-b"),
        &p.config("node-b", &rel.seed, &format!("{}{join}", b_network())),
        None,
    )?;
    let fill_b = |s: &str| {
        s.replace("__SET_LINK__", SET_LINK)
            .replace("__LINK_MAC__", MAC_B)
            .replace("__LINK_ADDR__", ADDR_B)
            .replace("__SEED__", &rel.seed)
            .replace("__V2HEX__", rel.v2.trim_start_matches("sha256:"))
            .replace("__V2__", &rel.v2)
            .replace("__ADDR_B__", ADDR_B)
            .replace("__ADDR__", ADDR_A)
            .replace("__DIGEST__", &rel.seed_digest)
    };
    let cfg_b = node(
        &dir.join("b"),
        &iso_b.join("imgmode-ibi.iso"),
        link(port, false, MAC_B),
        fill_b(B_BOOTED),
        fill_b(B_LIVE),
    )?
    .credential("vmtest.auth", secret.clone())
    .credential("vmtest.regca", ca);
    if let Err(e) = node_b(&mut vm_a, &cfg_b, &dir.join("b/vm"), &p.iso_v2, rel).await {
        return Err(a_failed(vm_a, e).await);
    }

    eprintln!("==> node A: upgraded from v2, v1 removed");
    let upgraded = async {
        let go = dir.join("b-copied.img");
        std::fs::write(&go, vec![0u8; 1 << 20])?;
        vm_a.attach_cdrom(&go, "go").await?;
        let p2 = phase(&mut vm_a, 2, UPGRADE_TIMEOUT).await?;
        let results = std::fs::read_to_string(vm_a.dir().join("results.log"))?;
        check_import_and_switch(&p2, &results, rel)?;
        let p3 = phase(&mut vm_a, 3, BOOT_TIMEOUT * 2 + TIMEOUT).await?;
        anyhow::Ok(p3)
    }
    .await;
    let p3 = match upgraded {
        Ok(p) => p,
        Err(e) => return Err(a_failed(vm_a, e).await),
    };
    let results = std::fs::read_to_string(vm_a.dir().join("results.log"))?;
    vm_a.wait_shutdown(SHUTDOWN_TIMEOUT)
        .await
        .context("node A did not power off cleanly")?;
    check_upgraded(&p3, &results, rel)?;
    Ok(format!(
        "two VMs on a private link and nothing else: node A installed from payload ISO v1 and served it on {ADDR_A}:22625 ({names}); node B, from A's imgmode payload join-config, pulled the seed {} by its original name through A (refused without credentials), installed and booted; payload ISO v2 plugged into A was imported by its udev rule (Available) and copied from A to B by imgmode payload pull (by digest, verified, Available on B), v1's removal refused while the cluster ran release 1, A switched to v2's OS {} through port 22625 and booted it, and then v2's removal was refused and v1's went through",
        rel.seed, rel.os2
    ))
}

/// Node B: installed from A and booted (phase 1); then payload ISO v2 plugged into A, and B's
/// copy of it from A (phase 2); B powered off. An error carries B's console tail.
async fn node_b(
    vm_a: &mut Vm,
    cfg_b: &VmConfig,
    vm_dir_b: &Path,
    iso_v2: &Path,
    rel: &Releases,
) -> Result<()> {
    std::fs::create_dir_all(vm_dir_b)?;
    let mut vm_b = Vm::start(cfg_b, vm_dir_b).await.context("node B")?;
    let installed = async {
        phase(&mut vm_b, 1, BOOT_TIMEOUT * 2 + TIMEOUT).await?;
        check_b(
            &std::fs::read_to_string(vm_b.dir().join("results.log"))?,
            rel,
        )
    }
    .await;
    if let Err(e) = installed {
        return Err(b_failed(vm_b, e).await);
    }
    eprintln!("==> node A: payload ISO v2 plugged in and imported; node B copies it from A");
    let copied = async {
        vm_a.attach_cdrom(iso_v2, "v2").await?;
        let p2 = phase(&mut vm_b, 2, UPGRADE_TIMEOUT).await?;
        let results = std::fs::read_to_string(vm_b.dir().join("results.log"))?;
        check_copy(&p2, &results, rel)
    }
    .await;
    if let Err(e) = copied {
        return Err(b_failed(vm_b, e).await);
    }
    vm_b.wait_shutdown(SHUTDOWN_TIMEOUT)
        .await
        .context("node B did not power off")?;
    Ok(())
}

/// Node B's console tail with `e`, B stopped.
async fn b_failed(vm: Vm, e: anyhow::Error) -> anyhow::Error {
    let tail = vm.console_tail(40);
    let _ = vm.quit().await;
    e.context(format!("node B (console tail):\n{tail}"))
}

/// Node B's phase 2: v2 copied from A by digest, verified, available; a second pull copies
/// nothing; no work directory left.
fn check_copy(p: &Phase, results: &str, rel: &Releases) -> Result<()> {
    ensure!(
        p.fact("address").trim() == format!("{ADDR_B}/24"),
        "node B's installed system should have only {ADDR_B} on the link: {}",
        p.fact("address")
    );
    let out = p
        .ran_ok(&format!("imgmode payload pull --registry {ADDR_A} --id"))
        .context("node B copying v2 from A")?;
    let hex = rel.v2.trim_start_matches("sha256:");
    ensure!(
        out.contains(&format!(
            "copied payload {} (2 image(s)) from docker://{ADDR_A}:22625/imgmode-payloads:{hex}",
            rel.v2
        )),
        "node B's pull of v2 printed:\n{out}"
    );
    p.ran_ok("imgmode payload verify")
        .context("node B's copy of v2")?;
    let again = p.ran_ok("imgmode payload pull --id")?;
    ensure!(
        again.contains("already") && !again.contains("copied payload"),
        "node B's second pull copied again:\n{again}"
    );
    let iri: serde_json::Value = serde_json::from_str(
        last_line(results, "IRI ").context("node B printed no InternalReleaseImage record")?,
    )?;
    ensure!(
        conditions(&iri, &rel.v2).contains(&("Available".into(), "True".into())),
        "node B's release record does not show v2 available: {iri}"
    );
    ensure!(
        p.fact("leftovers") == "0",
        "node B kept {} work directories of payload pull",
        p.fact("leftovers")
    );
    Ok(())
}

/// Node A's console tail with `e`, A stopped.
async fn a_failed(vm: Vm, e: anyhow::Error) -> anyhow::Error {
    let tail = vm.console_tail(40);
    let _ = vm.quit().await;
    e.context(format!("node A (console tail):\n{tail}"))
}

/// Node A's phases up to its join config: the live system healthy, the installed system
/// serving on its address with a certificate that names it, the cluster on release 1.
/// Returns the join config's text, the certificate's names and the registry's CA.
async fn serve_from_a(vm: &mut Vm) -> Result<(String, String, String)> {
    let live = phase(vm, 0, BOOT_TIMEOUT * 2).await?;
    no_failed_live_units(&live, "node A")?;
    let p = phase(vm, 1, BOOT_TIMEOUT * 2 + TIMEOUT).await?;
    ensure!(
        p.fact("address")
            .split_whitespace()
            .any(|a| a == format!("{ADDR_A}/24")),
        "node A's link has no {ADDR_A}: {}",
        p.fact("address")
    );
    p.ran_ok("systemctl restart imgmode-payload-registry.service")?;
    ensure!(
        p.fact("registry") == "active",
        "node A's registry is {} after its restart",
        p.fact("registry")
    );
    let names = p.fact("tls-names");
    ensure!(
        names.contains(&format!("IPAddress:{ADDR_A}")) && names.contains("DNS:localhost"),
        "node A's registry certificate does not name {ADDR_A} and localhost: {names}"
    );
    let tls_log = p.ran_ok("journalctl -b -o cat -u imgmode-payload-tls.service")?;
    ensure!(
        tls_log.contains("issued again for") && tls_log.contains(ADDR_A),
        "imgmode-payload-tls.service did not issue the certificate again for {ADDR_A}:\n{tls_log}"
    );
    let listen = p.fact("listen");
    ensure!(
        ["*:22625", "0.0.0.0:22625", "[::]:22625"]
            .iter()
            .any(|l| listen.split_whitespace().any(|x| x == *l)),
        "node A's registry does not listen on every address: {listen}"
    );
    ensure!(
        p.fact("key-modes") == "600 600",
        "node A's registry CA key and TLS key modes: {}",
        p.fact("key-modes")
    );
    p.ran_ok("imgmode internal test-cluster upgrade --to-image")?;
    let results = std::fs::read_to_string(vm.dir().join("results.log"))?;
    let decoded = |prefix: &str| -> Result<String> {
        use base64::Engine;
        let line = report_line(&results, prefix)
            .with_context(|| format!("node A printed no {prefix}line"))?;
        Ok(String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(line.trim())
                .with_context(|| format!("node A's {prefix}line is not base64"))?,
        )?)
    };
    let join = decoded("JOINCONFIG ")?;
    let ca = decoded("REGCA ")?;
    ensure!(
        join.contains(&format!("{ADDR_A}:22625/imgmode-seed"))
            && join.contains("additionalTrustBundle"),
        "node A's join config has no mirror to it or no CA:\n{join}"
    );
    ensure!(
        join.contains(ca.trim().lines().nth(1).unwrap_or("-")),
        "node A's join config does not carry its registry's CA:\n{join}"
    );
    Ok((join, names.to_string(), ca))
}

/// Node B: its live system reached the seed through A only, with credentials, and installed
/// it by digest.
fn check_b(results: &str, rel: &Releases) -> Result<()> {
    let live = parse_phase(results, 0).context("node B's live system reported nothing")?;
    no_failed_live_units(&live, "node B")?;
    ensure!(
        live.fact("address").trim() == format!("{ADDR_B}/24"),
        "node B's live system should have only {ADDR_B} on the link: {}",
        live.fact("address")
    );
    let (c, rc, out) = live.run_with(&format!("docker://{}", rel.seed))?;
    ensure!(
        *rc == 0 && out.lines().any(|l| l.trim() == rel.seed_digest),
        "node B: {c} (rc {rc}) did not resolve the seed through A's registry:\n{out}"
    );
    live.refused("--no-creds", "authentication required")
        .context("node B: a pull from A's registry without credentials must be refused")?;
    let installed: serde_json::Value = serde_json::from_str(
        report_line(results, "INSTALLED ").context("node B's installed system reported nothing")?,
    )?;
    ensure!(
        installed["seed"] == format!("docker://{}", rel.seed).as_str()
            && installed.get("seed_from").is_none(),
        "node B was not installed from {} pulled by its reference: {installed}",
        rel.seed
    );
    Ok(())
}

/// The rest of the last line of `results` that starts with `prefix` (a later phase's report).
fn last_line<'a>(results: &'a str, prefix: &str) -> Option<&'a str> {
    results.lines().rev().find_map(|l| l.strip_prefix(prefix))
}

/// The release record's conditions of payload `id`: (type, status) pairs.
fn conditions(iri: &serde_json::Value, id: &str) -> Vec<(String, String)> {
    iri["status"]["releases"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == id))
        .and_then(|r| r["conditions"].as_array())
        .map(|c| {
            c.iter()
                .map(|c| {
                    (
                        c["type"].as_str().unwrap_or_default().to_string(),
                        c["status"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Phase 2: v2 imported by the udev-started unit and available, its new repository pulled
/// through the local registry, v1's removal refused for the cluster's release, the switch to
/// v2's OS staged.
fn check_import_and_switch(p: &Phase, results: &str, rel: &Releases) -> Result<()> {
    ensure!(
        p.fact("b-copied") == "yes",
        "node A went on before node B had copied v2"
    );
    let unit = p.fact("import-unit");
    ensure!(
        unit.ends_with(".service success 0"),
        "payload ISO v2's import unit did not run to success: {unit}"
    );
    let iri: serde_json::Value = serde_json::from_str(
        last_line(results, "IRI ").context("no InternalReleaseImage record after the import")?,
    )?;
    ensure!(
        conditions(&iri, &rel.v2).contains(&("Available".into(), "True".into())),
        "the release record does not show v2 ({}) available: {iri}",
        rel.v2
    );
    let (c, rc, out) = p.run_with(&format!("docker://{}", rel.r2))?;
    let r2_digest = rel.r2.rsplit_once('@').map_or("?", |x| x.1);
    ensure!(
        *rc == 0 && out.lines().any(|l| l.trim() == r2_digest),
        "{c} (rc {rc}): release 2, new in v2, was not pulled through the local registry:\n{out}"
    );
    p.refused(
        &format!("imgmode payload remove {}", rel.v1),
        "the cluster's current release",
    )
    .context("removing v1 while the cluster runs its release")?;
    p.ran_ok("imgmode switch")?;
    let staged = p
        .staged()
        .context("no staged deployment after imgmode switch")?;
    ensure!(
        staged.container_image_reference_digest.as_deref() == Some(rel.os2_digest.as_str()),
        "the staged deployment runs {:?}, not v2's OS {}",
        staged.container_image_reference_digest,
        rel.os2_digest
    );
    p.ran_ok("imgmode internal test-cluster upgrade --to-image")?;
    Ok(())
}

/// Phase 3: v2's OS booted; v2's removal refused, v1's done.
fn check_upgraded(p: &Phase, results: &str, rel: &Releases) -> Result<()> {
    p.booted_image(&rel.os2_digest)
        .context("node A after the upgrade")?;
    ensure!(
        p.fact("release-file") == "2",
        "node A's new OS lacks the next release's file: {}",
        p.fact("release-file")
    );
    p.refused(
        &format!("imgmode payload remove {}", rel.v2),
        "booted deployment",
    )
    .context("removing v2, which the booted deployment runs")?;
    p.ran_ok(&format!("imgmode payload remove {}", rel.v1))
        .context("removing v1 once nothing uses it")?;
    let iri: serde_json::Value = serde_json::from_str(
        last_line(results, "IRI ").context("no InternalReleaseImage record at the end")?,
    )?;
    ensure!(
        iri["spec"]["releases"] == serde_json::json!([{"name": rel.v2}]),
        "the release record should hold v2 alone: {iri}"
    );
    Ok(())
}
