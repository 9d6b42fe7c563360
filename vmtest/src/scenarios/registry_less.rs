//! The `registry-less` scenario: an installation ISO that carries a release payload installs
//! a host with QEMU's networking disabled entirely. The payload (`imgmode mirror` of this
//! run's seed, pushed to a throwaway TLS registry that is stopped before the VM starts) is
//! served on port 22625 in the live system, the seed is pulled through it by its original
//! name (the install pulls every blob of it), and after the reboot the installed system
//! serves its copy of the payload the same way (the seed's manifest and config, by the same
//! name). Both systems refuse a pull without the pull secret's credentials; on the installed
//! system a byte flipped in the config blob on disk is found by `imgmode payload verify` and
//! refused by a pull.

use crate::harness::context::RunContext;
use crate::harness::guest::{
    file_modes, job, parse_phase, report_line, run_job, Phase, BOOT_TIMEOUT,
};
use crate::harness::install_iso::{
    installation_iso, live_job, mirror_seed, no_failed_live_units, seed_in_tls_registry,
};
use crate::harness::media::{blank_disk, cdrom};
use crate::harness::qemu::{Boot, VmConfig};
use anyhow::{ensure, Context, Result};
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(1500);

/// The pull secret: anything for the seed's registry, the payload registry's credentials
/// ("payload:s3cret-22625") for localhost:22625.
const PULL_SECRET: &str = r#"{"auths":{"__REG__":{"auth":"eDp5"},"localhost:22625":{"auth":"cGF5bG9hZDpzM2NyZXQtMjI2MjU="}}}"#;

const IBI_CONFIG: &str = "apiVersion: v1beta1
kind: ImageBasedInstallationConfig
metadata:
  name: registry-less
seedImage: __REG__/imgmode-seed:__VERSION__
seedVersion: __VERSION__
installationDisk: /dev/vda
pullSecret: '__SECRET__'
extraPartitionStart: -3G
proxy:
  httpProxy: http://proxy.site.invalid:3128
  httpsProxy: http://proxy.site.invalid:3128
  noProxy: 10.0.2.2,127.0.0.1,localhost
";

/// Checks both systems run: the registry, pulls by the original name through it, the
/// refusal without credentials.
const PULL_CHECKS: &str = r#"auth="$CREDENTIALS_DIRECTORY/vmtest.auth"
echo "FACT nics=$(ls /sys/class/net | grep -vc '^lo$')"
echo "FACT registry=$(systemctl is-active imgmode-payload-registry.service)"
run skopeo inspect --no-tags --authfile "$auth" --format '{{.Digest}}' docker://__REG__/imgmode-seed:__VERSION__
run skopeo inspect --no-creds --raw docker://localhost:22625/imgmode-seed:__VERSION__
"#;

const LIVE_SCRIPT: &str = r#"echo "IMGMODE-PHASE-0-BEGIN"
__FAILED_UNITS__
__CHECKS__
filemodes live /etc/imgmode /root/.ssh /etc/containers /run/imgmode
echo "IMGMODE-PHASE-0-END"
"#;

const BOOTED_SCRIPT: &str = r#"grep -q "imgmode.live=" /proc/cmdline && exit 0
echo "IMGMODE-PHASE-1-BEGIN"
__CHECKS__
filemodes installed /etc/imgmode /var/lib/imgmode /etc/containers /root/.ssh /etc/systemd/system
echo "INSTALLED $(tr -d '\n' < /var/lib/imgmode/ibi-install.json)"
p=/var/lib/containers/imgmode-payload
# the installation ISO is still attached: its udev rule started the import unit at boot, which
# found the payload held and available (the install's record) and copied nothing
dev=$(blkid -L imgmode-ibi | head -1)
unit="imgmode-payload-import@${dev#/dev/}.service"
echo "FACT import-unit=$unit $(systemctl show -P Result "$unit") $(systemctl show -P ExecMainStatus "$unit")"
run journalctl -b -o cat -u "$unit"
echo "IRI $(tr -d '\n' < $p/internalreleaseimage.json)"
# the seed's config blob through the installed copy (skopeo checks its digest); the live
# system's install pulled every blob of the seed through its own
seed=docker://__REG__/imgmode-seed:__VERSION__
run skopeo inspect --config --authfile "$auth" "$seed"
run imgmode payload verify $p
# flip one byte of that blob in the installed copy: the seed's config, the blob that lists the
# layers' diff_ids and carries the seed's cluster info (the payload's record image has a
# config with diff_ids too, and which of the two find lists first varies with their digests)
config=$(find $p/docker/registry/v2/blobs -name data -size -1024k -exec grep -l '"diff_ids"' {} + | xargs -r grep -l 'lifecycle-agent.seed_cluster_info' | head -1)
echo "FACT config-blob=${config:-none}"
printf 'X' | dd of="${config:-/dev/null}" bs=1 seek=1 conv=notrunc status=none
run imgmode payload verify $p
run skopeo inspect --config --authfile "$auth" "$seed"
# opting out: the registry stopped, its files, mirrors, import rule and the store gone
run imgmode payload opt-out
echo "FACT opted-out=$(systemctl is-active imgmode-payload-registry.service) $(ls -d /etc/containers/registries.conf.d/60-imgmode-payload.conf /etc/udev/rules.d/70-imgmode-payload.rules /etc/imgmode/payload /etc/systemd/system/imgmode-payload-registry.service $p 2>/dev/null | wc -l) $(ss -Hltn 'sport = :22625' | wc -l)"
echo "IMGMODE-PHASE-1-END"
systemctl poweroff
"#;

/// The `registry-less` scenario.
pub async fn registry_less(ctx: &RunContext, dir: &Path) -> Result<String> {
    let a = &ctx.artifacts;
    eprintln!("==> the payload: the seed pushed to a TLS registry, then imgmode mirror");
    let (_, version, reg) = seed_in_tls_registry(ctx, dir).await?;
    let (_, certs) = reg.tls.clone().context("the registry serves no TLS")?;
    let addr = reg.host_addr();
    let (payload, seed_digest, mirror_seconds) = mirror_seed(a, dir, &addr, &version, &certs)?;
    let secret = PULL_SECRET.replace("__REG__", &addr);
    let config = IBI_CONFIG
        .replace("__REG__", &addr)
        .replace("__VERSION__", &version)
        .replace("__SECRET__", &secret);
    let isodir = installation_iso(a, &dir.join("iso"), &config, Some(&payload))?;
    // from here on nothing serves the seed but the payload
    drop(reg);

    eprintln!("==> booting the ISO with no network at all; install; reboot into the disk");
    let blank = dir.join("blank.qcow2");
    blank_disk(&blank)?;
    let fill = |s: &str| {
        s.replace("__CHECKS__", PULL_CHECKS)
            .replace("__REG__", &addr)
            .replace("__VERSION__", &version)
    };
    let cfg = live_job(
        job(
            VmConfig {
                extra_args: cdrom(&isodir.join("imgmode-ibi.iso"), "live", 0, Some(2)).to_vec(),
                network: false,
                memory_mib: 3072,
                ..VmConfig::new(&blank, Boot::Uefi)
            },
            fill(BOOTED_SCRIPT),
        ),
        fill(LIVE_SCRIPT),
    )
    .unit_dropin(
        "imgmode-vmtest-live.service",
        "[Unit]\nAfter=imgmode-payload-registry.service\n",
    )
    // this scenario configures no cluster (no configuration ISO): post-pivot is held off
    .unit_dropin(
        "imgmode-post-pivot.service",
        "[Unit]\nConditionKernelCommandLine=imgmode.vmtest.post-pivot\n",
    )
    .credential("vmtest.auth", secret.clone());
    let results = run_job(
        &cfg,
        &dir.join("vm"),
        "the registry-less install",
        BOOT_TIMEOUT * 2 + TIMEOUT,
    )
    .await?;

    let seed_ref = format!("docker://{addr}/imgmode-seed:{version}");
    for (n, what) in [(0u32, "the live system"), (1, "the installed system")] {
        let p = parse_phase(&results, n).with_context(|| format!("{what} reported nothing"))?;
        check_system(&p, what, &seed_ref, &seed_digest)?;
        // the registry's TLS key and htpasswd, the pull secret: none readable by others
        let tag = if n == 0 { "live" } else { "installed" };
        let listing = file_modes(&results, tag, what)?;
        std::fs::write(dir.join(format!("file-modes-{tag}.txt")), listing)?;
        if n == 0 {
            no_failed_live_units(&p, what)?;
        }
        if n == 1 {
            check_installed_payload(&p, &results)?;
        }
    }
    Ok(format!(
        "payload (the seed, mirrored in {mirror_seconds:.0}s) served on localhost:22625 in the live system and, copied to the disk, on the installed system, with no network interface at all: the seed resolved by its original name {seed_ref} on both (the live system installed it through the payload, the installed system served its config), a pull without credentials refused on both, a flipped blob found by payload verify and refused by a pull; the installation ISO, still attached, imported at boot by its udev rule (held already, nothing copied) and the InternalReleaseImage record showing the payload available; payload opt-out stopped the registry and removed its files, mirrors, import rule and store"
    ))
}

/// What both systems must show: no network interface, the payload registry active, the seed
/// pulled by its original name `seed_ref` through it (as `seed_digest`), and a pull without
/// credentials refused.
fn check_system(p: &Phase, what: &str, seed_ref: &str, seed_digest: &str) -> Result<()> {
    ensure!(
        p.fact("nics") == "0",
        "{what} has {} network interfaces; the VM must have none",
        p.fact("nics")
    );
    ensure!(
        p.fact("registry") == "active",
        "{what}: imgmode-payload-registry.service is {}",
        p.fact("registry")
    );
    let want = format!("--format {{{{.Digest}}}} {seed_ref}");
    let (c, rc, digest) = p.run_with(&want)?;
    ensure!(
        *rc == 0,
        "{what}: {c} failed (rc {rc}): the payload did not serve the seed by its name:\n{digest}"
    );
    ensure!(
        digest.trim() == seed_digest,
        "{what}: {seed_ref} resolved to {:?} through the payload, which holds {seed_digest}",
        digest.trim()
    );
    p.refused("--no-creds", "authentication required")
        .with_context(|| format!("{what}: a pull without credentials must be refused"))?;
    Ok(())
}

/// The installed system's payload: the install recorded it, the seed's config pulls through
/// it, `imgmode payload verify` passes and then finds a byte flipped in that blob, which a pull
/// refuses.
fn check_installed_payload(p: &Phase, results: &str) -> Result<()> {
    let installed: serde_json::Value =
        serde_json::from_str(report_line(results, "INSTALLED ").context("no install record")?)?;
    ensure!(
        installed["payload"]
            .as_str()
            .is_some_and(|s| s.starts_with("sha256:")),
        "the install record names no payload: {installed}"
    );
    ensure!(
        p.fact("config-blob").ends_with("/data"),
        "no blob of the installed payload is an image config (lists diff_ids): {}",
        p.fact("config-blob")
    );
    // the attached installation ISO's import, started by the udev rule with no command typed
    let unit = p.fact("import-unit");
    ensure!(
        unit.starts_with("imgmode-payload-import@sr") && unit.ends_with(".service success 0"),
        "the attached installation ISO's import unit did not run to success: {unit}"
    );
    let journal = p.runs_of("journalctl -b -o cat -u");
    ensure!(
        journal
            .first()
            .is_some_and(|j| j.2.contains("holds the payload") && j.2.contains("already")),
        "the import unit's journal does not say the payload was held already: {journal:?}"
    );
    let iri: serde_json::Value = serde_json::from_str(
        report_line(results, "IRI ").context("no InternalReleaseImage record")?,
    )?;
    let available = iri["status"]["releases"][0]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Available"))
        .map(|c| c["status"].clone());
    ensure!(
        iri["spec"]["releases"][0]["name"] == installed["payload"]
            && available == Some("True".into()),
        "the InternalReleaseImage record does not show the installed payload available: {iri}"
    );
    let opt_out = p.runs_of("imgmode payload opt-out");
    ensure!(
        opt_out.len() == 1 && opt_out[0].1 == 0,
        "imgmode payload opt-out failed: {opt_out:?}"
    );
    ensure!(
        p.fact("opted-out") == "inactive 0 0",
        "after opt-out the registry (is-active), its files and store (how many are left) and port {} (listeners) should be gone: {}",
        22625,
        p.fact("opted-out")
    );
    let pulls = p.runs_of("skopeo inspect --config");
    ensure!(
        pulls.len() == 2,
        "the installed system ran {} pulls of the seed's config",
        pulls.len()
    );
    ensure!(
        pulls[0].1 == 0,
        "pulling the seed's config through the installed payload failed:\n{}",
        pulls[0].2
    );
    let verifies = p.runs_of("imgmode payload verify");
    ensure!(
        verifies.len() == 2 && verifies[0].1 == 0,
        "the installed payload did not verify: {verifies:?}"
    );
    ensure!(
        verifies[1].1 != 0 && verifies[1].2.contains("is corrupted"),
        "a flipped byte in the payload was not found by imgmode payload verify: {}",
        verifies[1].2
    );
    ensure!(
        pulls[1].1 != 0 && pulls[1].2.contains("does not match"),
        "a pull of the tampered blob was not refused for its digest:\n{}",
        pulls[1].2
    );
    Ok(())
}
