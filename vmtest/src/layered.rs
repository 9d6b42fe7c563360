//! Layered-image scenarios: a Containerfile built on the host with `imgmode build`, delivered to
//! a node from a registry and from an `oci-archive:` on an attached disk, switched to, rolled
//! back, applied and reverted through a MachineConfig.
//!
//! The guest runs one job script per boot (passed as a systemd credential); the phase it is in
//! lives in `/var` so that it survives reboots, and every phase reports facts and
//! `imgmode status --format json` between `IMGMODE-PHASE-N-BEGIN` and `-END` markers.

use crate::artifacts::Artifacts;
use crate::qemu::{Boot, Vm, VmConfig};
use crate::registry::Registry;
use crate::scenarios::{BOOT_TIMEOUT, SHUTDOWN_TIMEOUT};
use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A phase that fetches and stages an image may import layers under TCG: give it time.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

/// The layered image the scenarios deploy, built from the example Containerfiles: rsyslog with
/// `remote.conf` (package + file), then the kargs.d drop-in on top.
#[derive(Debug, Clone)]
pub struct LayeredImage {
    pub name: String,
    pub digest: String,
    /// `oci:` reference of the stored image.
    pub reference: String,
}

#[derive(Deserialize)]
struct BuildOut {
    name: String,
    reference: String,
    digest: String,
    reused_layers: usize,
}

/// Run the `imgmode` binary like a user; its stdout.
pub(crate) fn imgmode_json(a: &Artifacts, args: &[&str]) -> Result<String> {
    crate::artifacts::run(
        Command::new(&a.imgmode).args(args),
        &format!("imgmode {}", args.join(" ")),
    )
}

/// Build (podman's layer cache makes a repeat quick) the layered image.
pub fn build_layered(a: &Artifacts) -> Result<LayeredImage> {
    let cf = &a.containerfiles;
    let rsyslog = cf.join("layered/rsyslog");
    let kargs = cf.join("layered/kargs");
    let build = |args: &[&str]| -> Result<BuildOut> {
        let base = ["build", "-q", "--format", "json"];
        let out = imgmode_json(a, &[&base[..], args].concat())?;
        serde_json::from_str(&out).context("parsing imgmode build --format json")
    };
    let r = build(&["-t", "vmtest-rsyslog", &rsyslog.display().to_string()])?;
    ensure!(
        r.reused_layers >= 1,
        "vmtest-rsyslog shares no layer with imgmode-base"
    );
    let r = build(&[
        "-t",
        "vmtest-layered",
        "--build-arg",
        "BASE=vmtest-rsyslog",
        &kargs.display().to_string(),
    ])?;
    Ok(LayeredImage {
        name: r.name,
        digest: r.digest,
        reference: r.reference,
    })
}

/// An ext4 image holding `files` (name, source path), attached read-only as a virtio disk
/// with serial `payload` (`/dev/disk/by-id/virtio-payload` in the guest).
fn payload_disk(dir: &Path, files: &[(&str, &Path)]) -> Result<PathBuf> {
    let content = dir.join("payload");
    let _ = std::fs::remove_dir_all(&content);
    std::fs::create_dir_all(&content)?;
    let mut bytes = 0;
    for (name, src) in files {
        std::fs::copy(src, content.join(name))
            .with_context(|| format!("copying {}", src.display()))?;
        bytes += std::fs::metadata(src)?.len();
    }
    let img = dir.join("payload.img");
    let _ = std::fs::remove_file(&img);
    let size_mb = bytes / (1 << 20) * 12 / 10 + 64;
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "payload", "-d"])
        .arg(&content)
        .arg(&img)
        .arg(format!("{size_mb}M"))
        .output()
        .context("running mkfs.ext4")?;
    ensure!(
        out.status.success(),
        "mkfs.ext4 -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&content)?;
    Ok(img)
}

/// A oneshot unit that runs the script in the credential `script` (`vmtest.*` credentials
/// imported) with its output on the results port; `unit` goes into its `[Unit]` section.
pub(crate) fn results_unit(description: &str, unit: &str, script: &str) -> String {
    format!(
        r#"[Unit]
Description={description}
{unit}
[Service]
Type=oneshot
ImportCredential=vmtest.*
StandardOutput=file:/dev/virtio-ports/org.imgmode.results
StandardError=inherit
ExecStart=/bin/sh -c 'exec sh "$CREDENTIALS_DIRECTORY/{script}"'
"#
    )
}

/// What every guest script starts with: `set -eu`, a report of the status a script ended with
/// when it was not 0 (`IMGMODE-SCRIPT-FAILED rc=N`, which fails the wait for its result at
/// once), and the helpers: `yesno CMD` prints yes/no, `run CMD` prints the command, its output
/// and `RC <status>` (the one way a step may fail without ending the script).
pub(crate) const GUEST_PRELUDE: &str = r#"set -eu
trap 'rc=$?; [ "$rc" -eq 0 ] || echo "IMGMODE-SCRIPT-FAILED rc=$rc"' EXIT
yesno() { if "$@" >/dev/null 2>&1; then echo yes; else echo no; fi; }
run() { echo "RUN $*"; rc=0; "$@" 2>&1 || rc=$?; echo "RC $rc"; }
"#;

/// `script` with [`GUEST_PRELUDE`] in front.
pub(crate) fn guest_script(script: &str) -> String {
    format!("{GUEST_PRELUDE}{script}")
}

/// `cfg` with the job unit running `script` at every boot, once the boot's health report is
/// out (see [`VmConfig::job_unit`]).
pub(crate) fn job(cfg: VmConfig, script: String) -> VmConfig {
    let unit = results_unit(
        "imgmode vmtest: layered job",
        "After=multi-user.target network-online.target\nWants=network-online.target\n",
        "vmtest.script",
    );
    cfg.job_unit("imgmode-vmtest-job.service", &unit)
        .credential("vmtest.script", guest_script(&script))
}

/// The base disk booted through SeaBIOS with the payload disk attached and `script` run by
/// the job unit at every boot.
fn job_vm(a: &Artifacts, payload: &Path, script: String) -> VmConfig {
    let cfg = VmConfig {
        extra_args: vec![
            "-drive".into(),
            format!(
                "file={},format=raw,if=none,id=payload,readonly=on",
                payload.display()
            ),
            "-device".into(),
            "virtio-blk-pci,drive=payload,serial=payload".into(),
        ],
        ..VmConfig::new(&a.base_disk, Boot::Bios)
    };
    job(cfg, script)
}

/// Shared helpers of the guest scripts.
const SCRIPT_HEAD: &str = r#"state=/var/lib/imgmode-vmtest
mkdir -p "$state"
phase=$(cat "$state/phase" 2>/dev/null || echo 1)
echo "IMGMODE-PHASE-$phase-BEGIN"
facts() {
  echo "FACT remote-conf=$(yesno test -f /etc/rsyslog.d/remote.conf)"
  echo "FACT rsyslog=$(yesno sh -c 'dpkg-query -W -f="\${Status}" rsyslog | grep -q "install ok installed"')"
  echo "FACT karg=$(yesno grep -qw imgmode.layered=1 /proc/cmdline)"
  echo "FACT etc-marker=$(yesno test -f /etc/imgmode-vmtest-marker)"
  echo "STATUS-BEGIN"; imgmode status --format json; echo "STATUS-END"
}
next() { echo $((phase + 1)) > "$state/phase"; sync; }
end() { echo "IMGMODE-PHASE-$phase-END"; }
mkdir -p /mnt/payload
mountpoint -q /mnt/payload || mount -o ro /dev/disk/by-id/virtio-payload /mnt/payload
"#;

/// One phase's report.
#[derive(Debug, Default)]
pub(crate) struct Phase {
    pub(crate) facts: BTreeMap<String, String>,
    pub(crate) status: Option<GuestStatus>,
    /// (command, exit code, output)
    pub(crate) runs: Vec<(String, i32, String)>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct GuestStatus {
    pub(crate) deployments: Vec<GuestDeployment>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct GuestDeployment {
    pub(crate) booted: bool,
    pub(crate) staged: bool,
    #[serde(default)]
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) checksum: String,
    pub(crate) container_image_reference: Option<String>,
    pub(crate) container_image_reference_digest: Option<String>,
}

impl Phase {
    pub(crate) fn fact(&self, k: &str) -> &str {
        self.facts.get(k).map(String::as_str).unwrap_or("?")
    }

    pub(crate) fn booted(&self) -> Result<GuestDeployment> {
        self.status
            .as_ref()
            .and_then(|s| s.deployments.iter().find(|d| d.booted).cloned())
            .context("the guest's status lists no booted deployment")
    }

    fn staged(&self) -> Option<GuestDeployment> {
        self.status
            .as_ref()
            .and_then(|s| s.deployments.iter().find(|d| d.staged).cloned())
    }

    /// The first command whose line contains `part`: (command, exit status, output).
    pub(crate) fn run_with(&self, part: &str) -> Result<&(String, i32, String)> {
        self.runs
            .iter()
            .find(|(c, _, _)| c.contains(part))
            .with_context(|| format!("the guest ran no command with {part:?}"))
    }

    /// Every command whose line starts with `prefix`, in the order they ran.
    pub(crate) fn runs_of(&self, prefix: &str) -> Vec<&(String, i32, String)> {
        self.runs
            .iter()
            .filter(|(c, _, _)| c.starts_with(prefix))
            .collect()
    }

    /// The first command whose line contains `part` failed, and its output says `want`.
    pub(crate) fn refused(&self, part: &str, want: &str) -> Result<()> {
        let (c, rc, out) = self.run_with(part)?;
        ensure!(*rc != 0, "{c} succeeded; it must be refused");
        ensure!(
            out.contains(want),
            "{c} failed (rc {rc}) without saying {want:?}:\n{out}"
        );
        Ok(())
    }

    /// The one command whose line starts with `cmd`; it must have exited 0.
    pub(crate) fn ran_ok(&self, cmd: &str) -> Result<&str> {
        let (c, rc, out) = self
            .runs
            .iter()
            .find(|(c, _, _)| c.starts_with(cmd))
            .with_context(|| format!("the guest did not run {cmd:?}"))?;
        ensure!(*rc == 0, "{c} failed in the guest (rc {rc}):\n{out}");
        Ok(out)
    }
}

/// Parse the section of `results` between the phase's markers.
pub(crate) fn parse_phase(results: &str, n: u32) -> Result<Phase> {
    let begin = format!("IMGMODE-PHASE-{n}-BEGIN");
    let end = format!("IMGMODE-PHASE-{n}-END");
    let start = results
        .find(&begin)
        .with_context(|| format!("no {begin} in the results"))?;
    let body = &results[start + begin.len()..];
    let body = &body[..body
        .find(&end)
        .with_context(|| format!("no {end} in the results"))?];
    let mut p = Phase::default();
    let mut lines = body.lines().peekable();
    while let Some(l) = lines.next() {
        if let Some(f) = l.strip_prefix("FACT ") {
            if let Some((k, v)) = f.split_once('=') {
                p.facts.insert(k.to_string(), v.trim().to_string());
            }
        } else if l == "STATUS-BEGIN" {
            let mut json = String::new();
            for l in lines.by_ref() {
                if l == "STATUS-END" {
                    break;
                }
                json.push_str(l);
                json.push('\n');
            }
            p.status = Some(
                serde_json::from_str(&json)
                    .with_context(|| format!("parsing the guest's status: {json}"))?,
            );
        } else if let Some(cmd) = l.strip_prefix("RUN ") {
            let mut out = String::new();
            let mut rc = -1;
            for l in lines.by_ref() {
                if let Some(r) = l.strip_prefix("RC ") {
                    rc = r.trim().parse().unwrap_or(-1);
                    break;
                }
                out.push_str(l);
                out.push('\n');
            }
            p.runs.push((cmd.to_string(), rc, out));
        }
    }
    Ok(p)
}

/// Wait for phase `n` to end and parse it.
pub(crate) async fn phase(vm: &mut Vm, n: u32, timeout: Duration) -> Result<Phase> {
    vm.wait_for_result(&format!("IMGMODE-PHASE-{n}-END"), timeout)
        .await?;
    let results = std::fs::read_to_string(vm.dir().join("results.log"))?;
    parse_phase(&results, n)
}

fn expect_facts(p: &Phase, n: u32, layered: bool) -> Result<()> {
    let want = if layered { "yes" } else { "no" };
    for k in ["remote-conf", "rsyslog", "karg"] {
        ensure!(
            p.fact(k) == want,
            "phase {n}: expected {k}={want} on the {} image, got {}",
            if layered { "layered" } else { "base" },
            p.fact(k)
        );
    }
    Ok(())
}

fn expect_booted(p: &Phase, n: u32, digest: &str, what: &str) -> Result<GuestDeployment> {
    let b = p.booted()?;
    ensure!(
        b.container_image_reference_digest.as_deref() == Some(digest),
        "phase {n}: booted {:?}, expected the {what} image {digest}",
        b.container_image_reference_digest
    );
    Ok(b)
}

/// `layered-rollback`.
pub async fn layered_rollback(a: Artifacts, dir: PathBuf) -> Result<String> {
    let (a2, d2) = (a.clone(), dir.clone());
    let (layered, registry, payload, pushed) = tokio::task::spawn_blocking(move || -> Result<_> {
        let layered = build_layered(&a2)?;
        ensure!(
            layered.digest != a2.base_digest,
            "the layered image has the base image's digest"
        );
        let registry = Registry::start(&d2.join("registry"))?;
        let dest = format!("docker://{}/imgmode/layered:1", registry.host_addr());
        let digestfile = d2.join("pushed.digest");
        imgmode_json(
            &a2,
            &[
                "push",
                "--tls-verify=false",
                "--digestfile",
                &digestfile.display().to_string(),
                "vmtest-layered",
                &dest,
            ],
        )?;
        let pushed = std::fs::read_to_string(&digestfile)?.trim().to_string();
        let archive = d2.join("layered.tar");
        let _ = std::fs::remove_file(&archive);
        imgmode_json(
            &a2,
            &[
                "push",
                "vmtest-layered",
                &format!("oci-archive:{}", archive.display()),
            ],
        )?;
        let payload = payload_disk(&d2, &[("layered.tar", &archive)])?;
        std::fs::remove_file(&archive)?;
        Ok((layered, registry, payload, pushed))
    })
    .await??;
    ensure!(
        pushed == layered.digest,
        "the registry holds {pushed}, the store {}",
        layered.digest
    );
    let reg = registry.guest_addr();
    let mc = format!(
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n  name: os-layer-vmtest\n  labels:\n    machineconfiguration.openshift.io/role: worker\nspec:\n  osImageURL: {reg}/imgmode/layered@{}\n",
        layered.digest
    );
    let script = format!(
        r#"{SCRIPT_HEAD}
case "$phase" in
1)
  mkdir -p /etc/containers/registries.conf.d
  printf '[[registry]]\nlocation = "{reg}"\ninsecure = true\n' > /etc/containers/registries.conf.d/50-vmtest.conf
  echo marker > /etc/imgmode-vmtest-marker
  facts
  run imgmode switch oci-archive:/mnt/payload/layered.tar
  facts; next; end; systemctl --no-block reboot ;;
2)
  facts
  run imgmode upgrade --check --format json
  run imgmode switch ostree-unverified-registry:{reg}/imgmode/layered:1
  run imgmode rollback
  facts
  next; end; systemctl --no-block reboot ;;
3)
  facts
  run imgmode apply-machineconfig "$CREDENTIALS_DIRECTORY/vmtest.mc"
  next; end; systemctl --no-block reboot ;;
4)
  facts
  run imgmode revert
  next; end; systemctl --no-block reboot ;;
5)
  facts; end; systemctl --no-block poweroff ;;
esac
"#
    );
    let cfg = VmConfig {
        network: true,
        ..job_vm(&a, &payload, script)
    }
    .credential("vmtest.mc", mc);
    let mut vm = Vm::start(&cfg, &dir).await?;
    let result = async {
        // 1: the base; switch to the layered image from the attached disk
        let p = phase(&mut vm, 1, PHASE_TIMEOUT).await?;
        expect_facts(&p, 1, false)?;
        let base = expect_booted(&p, 1, &a.base_digest, "base")?;
        p.ran_ok("imgmode switch")?;
        let rep = parse_phase_status_after_switch(&p)?;
        ensure!(
            rep.container_image_reference_digest.as_deref() == Some(layered.digest.as_str()),
            "phase 1: the staged deployment is {:?}, not the layered image",
            rep.container_image_reference_digest
        );
        // 2: the layered image, /etc carried over by the 3-way merge; upgrade --check finds
        // nothing new; rollback
        let p = phase(&mut vm, 2, BOOT_TIMEOUT + PHASE_TIMEOUT).await?;
        expect_facts(&p, 2, true)?;
        ensure!(
            p.fact("etc-marker") == "yes",
            "phase 2: a file written to /etc before the switch is missing after it"
        );
        let b = expect_booted(&p, 2, &layered.digest, "layered")?;
        ensure!(
            b.container_image_reference.as_deref()
                == Some("ostree-unverified-image:oci-archive:/mnt/payload/layered.tar"),
            "phase 2: origin {:?}",
            b.container_image_reference
        );
        let check = p.ran_ok("imgmode upgrade --check")?;
        ensure!(
            check.contains("\"unchanged\": true"),
            "phase 2: upgrade --check on an unchanged image said: {check}"
        );
        // a staged deployment (the same image by tag from the registry) is dropped by rollback
        p.ran_ok("imgmode switch")?;
        let rb = p.ran_ok("imgmode rollback")?;
        ensure!(
            rb.contains("Dropped the staged deployment"),
            "phase 2: rollback did not drop the staged deployment: {rb}"
        );
        ensure!(
            p.staged().is_none(),
            "phase 2: a staged deployment is still listed after rollback"
        );
        // 3: the base again, layered content gone; apply a MachineConfig by digest
        let p = phase(&mut vm, 3, BOOT_TIMEOUT + PHASE_TIMEOUT).await?;
        expect_facts(&p, 3, false)?;
        expect_booted(&p, 3, &a.base_digest, "base")?;
        p.ran_ok("imgmode apply-machineconfig")?;
        // 4: the layered image from the registry, by digest; delete the MachineConfig
        let p = phase(&mut vm, 4, BOOT_TIMEOUT + PHASE_TIMEOUT).await?;
        expect_facts(&p, 4, true)?;
        let b = expect_booted(&p, 4, &layered.digest, "layered")?;
        let want = format!(
            "ostree-unverified-registry:{reg}/imgmode/layered@{}",
            layered.digest
        );
        ensure!(
            b.container_image_reference.as_deref() == Some(want.as_str()),
            "phase 4: origin {:?}, expected {want}",
            b.container_image_reference
        );
        p.ran_ok("imgmode revert")?;
        // 5: back on the base, following the base image's reference again
        let p = phase(&mut vm, 5, BOOT_TIMEOUT + PHASE_TIMEOUT).await?;
        expect_facts(&p, 5, false)?;
        let b = expect_booted(&p, 5, &a.base_digest, "base")?;
        ensure!(
            b.container_image_reference == base.container_image_reference,
            "phase 5: origin {:?}, expected the original {:?}",
            b.container_image_reference,
            base.container_image_reference
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        let _ = vm.quit().await;
        drop(registry);
        return Err(e);
    }
    let secs = vm.elapsed().as_secs_f64();
    vm.wait_shutdown(SHUTDOWN_TIMEOUT).await?;
    drop(registry);
    Ok(format!(
        "base -> layered {} (oci-archive) -> rollback -> MachineConfig (registry, by digest) -> revert; 5 boots in {secs:.0}s",
        layered.digest
    ))
}

/// The staged deployment reported by the status after `imgmode switch` in phase 1 (the second
/// status of the phase).
fn parse_phase_status_after_switch(p: &Phase) -> Result<GuestDeployment> {
    match p.staged() {
        Some(d) => Ok(d),
        None => bail!("phase 1: no staged deployment after imgmode switch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_unit_runs_its_script_after_multi_user_with_output_on_the_results_port() {
        let cfg = job(
            VmConfig::new("/d.qcow2", crate::qemu::Boot::Bios),
            "true".into(),
        );
        let unit = cfg
            .credential_value("systemd.extra-unit.imgmode-vmtest-job.service")
            .unwrap();
        assert_eq!(
            unit,
            "[Unit]\nDescription=imgmode vmtest: layered job\nAfter=multi-user.target network-online.target\nWants=network-online.target\n\n[Service]\nType=oneshot\nImportCredential=vmtest.*\nStandardOutput=file:/dev/virtio-ports/org.imgmode.results\nStandardError=inherit\nExecStart=/bin/sh -c 'exec sh \"$CREDENTIALS_DIRECTORY/vmtest.script\"'\n"
        );
        let live = crate::ibi::live_job(cfg, "__FAILED_UNITS__\n".into());
        let script = live.credential_value("vmtest.livescript").unwrap();
        assert!(script.ends_with("f=$(systemctl list-units --failed --all --no-legend --plain | cut -d' ' -f1 | tr '\\n' ' ')\necho \"FACT failed-units=${f:-none}\"\n"), "{script}");
        let unit = live
            .credential_value("systemd.extra-unit.imgmode-vmtest-live.service")
            .unwrap();
        assert!(unit.contains("\nRequires=dev-virtio\\x2dports-org.imgmode.results.device\n"));
        assert!(unit.contains("\"$CREDENTIALS_DIRECTORY/vmtest.livescript\""));
        assert!(unit.contains("ConditionKernelCommandLine=imgmode.live\n"));
    }

    #[test]
    fn phase_reports_parse() {
        let r = "junk\nIMGMODE-PHASE-2-BEGIN\nFACT karg=yes\nSTATUS-BEGIN\n{\"deployments\":[{\"booted\":true,\"staged\":false,\"container-image-reference\":\"x\",\"container-image-reference-digest\":\"sha256:1\"}]}\nSTATUS-END\nRUN imgmode rollback\nNext boot: a\nRC 0\nIMGMODE-PHASE-2-END\n";
        let p = parse_phase(r, 2).unwrap();
        assert_eq!(p.fact("karg"), "yes");
        assert_eq!(p.fact("rsyslog"), "?");
        assert_eq!(
            p.booted()
                .unwrap()
                .container_image_reference_digest
                .as_deref(),
            Some("sha256:1")
        );
        assert_eq!(p.ran_ok("imgmode rollback").unwrap(), "Next boot: a\n");
        assert!(p.ran_ok("imgmode switch").is_err());
        assert!(parse_phase(r, 3).is_err());
    }
}

/// `layer-build` (host only): `imgmode layer build` of a MachineOSConfig whose pool has a
/// MachineConfig with a file, a unit and a kernel argument; the MachineOSBuild succeeds and
/// names the pushed digest; a second run reuses it; the rebuild annotation rebuilds; a broken
/// Containerfile ends FAILED after the retries; bad configs are refused before building.
pub fn layer_build(a: &Artifacts, dir: &Path) -> Result<String> {
    let registry = Registry::start(&dir.join("registry"))?;
    let cfgdir = dir.join("cluster");
    let out = dir.join("builds");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&cfgdir)?;
    std::fs::write(
        cfgdir.join("pool.yaml"),
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfigPool\nmetadata:\n  name: layered\nspec:\n  machineConfigSelector:\n    matchExpressions:\n    - {key: machineconfiguration.openshift.io/role, operator: In, values: [worker, layered]}\n",
    )?;
    std::fs::write(
        cfgdir.join("50-worker.yaml"),
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n  name: 50-worker-chrony\n  labels: {machineconfiguration.openshift.io/role: worker}\nspec:\n  config:\n    ignition: {version: 3.2.0}\n    storage:\n      files:\n      - path: /etc/imgmode-mc.conf\n        mode: 420\n        contents: {source: 'data:,from%20the%20pool'}\n    systemd:\n      units:\n      - name: imgmode-mc.service\n        enabled: true\n        contents: \"[Service]\\nType=oneshot\\nExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\n\"\n  kernelArguments: [imgmode.pool=layered]\n",
    )?;
    let push = format!("{}/openshift/os-image:latest", registry.host_addr());
    let mosc = |containerfile: &str, extra_meta: &str| {
        format!(
            "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineOSConfig\nmetadata:\n  name: layered-image\n{extra_meta}spec:\n  machineConfigPool:\n    name: layered\n  containerFile:\n  - containerfileArch: NoArch\n    content: |-\n{}\n  imageBuilder:\n    imageBuilderType: Job\n  renderedImagePushSpec: {push}\n  renderedImagePushSecret:\n    name: push-secret\n",
            containerfile
                .lines()
                .map(|l| format!("      {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    let good = "FROM configs AS final\nCOPY --from=configs /etc/imgmode-mc.conf /usr/share/imgmode-mc.copy\nLABEL org.imgmode.test=layer-build";
    let cfg = dir.join("mosc.yaml");
    let run = |cfg: &Path| -> Result<(bool, String, String)> {
        let o = Command::new(&a.imgmode)
            .args([
                "layer",
                "build",
                "-q",
                "--format",
                "json",
                "--tls-verify=false",
            ])
            .arg(cfg)
            .args(["--base", "imgmode-base", "--machineconfigs"])
            .arg(&cfgdir)
            .arg("--output-dir")
            .arg(&out)
            .output()?;
        Ok((
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ))
    };
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Mosb {
        metadata: Meta,
        status: MosbStatus,
    }
    #[derive(Deserialize)]
    struct Meta {
        name: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct MosbStatus {
        conditions: Vec<Cond>,
        attempts: u32,
        build_start: Option<String>,
        current_image_pull_spec: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Cond {
        #[serde(rename = "type")]
        type_: String,
        status: String,
    }
    let state = |m: &Mosb| {
        m.status
            .conditions
            .iter()
            .find(|c| c.status == "True")
            .map(|c| c.type_.clone())
            .unwrap_or_default()
    };

    // 1. a good build
    std::fs::write(&cfg, mosc(good, ""))?;
    let (ok, stdout, stderr) = run(&cfg)?;
    ensure!(ok, "imgmode layer build failed:\n{stderr}");
    let b: Mosb = serde_json::from_str(&stdout).context("parsing the MachineOSBuild")?;
    ensure!(
        b.metadata.name.starts_with("layered-image-")
            && b.metadata.name.len() == "layered-image-".len() + 32,
        "MachineOSBuild name {:?} is not <config>-<hash>",
        b.metadata.name
    );
    ensure!(state(&b) == "Succeeded", "state {}", state(&b));
    let pull = b.status.current_image_pull_spec.clone().unwrap_or_default();
    let remote = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{push}"))
        .output()?;
    let remote = String::from_utf8_lossy(&remote.stdout).trim().to_string();
    ensure!(
        pull == format!("{}/openshift/os-image@{remote}", registry.host_addr()),
        "currentImagePullSpec {pull:?} is not the pushed digest {remote}"
    );
    // the image has the pool's file, unit, kernel argument, and the Containerfile's content
    let check = Command::new("podman")
        .args(["image", "mount", &b.metadata.name])
        .output()?;
    let mnt = PathBuf::from(String::from_utf8_lossy(&check.stdout).trim());
    let facts = (|| -> Result<()> {
        ensure!(
            std::fs::read_to_string(mnt.join("etc/imgmode-mc.conf"))
                .ok()
                .as_deref()
                == Some("from the pool"),
            "the rendered MachineConfig file is missing from the image"
        );
        ensure!(
            mnt.join("usr/share/imgmode-mc.copy").is_file(),
            "the MachineOSConfig's Containerfile did not run"
        );
        ensure!(
            mnt.join("etc/systemd/system/multi-user.target.wants/imgmode-mc.service")
                .is_symlink(),
            "the MachineConfig's unit is not enabled"
        );
        let kargs =
            std::fs::read_to_string(mnt.join("usr/lib/bootc/kargs.d/50-machineconfig.toml"))
                .unwrap_or_default();
        ensure!(kargs.contains("imgmode.pool=layered"), "kargs.d: {kargs:?}");
        Ok(())
    })();
    let _ = Command::new("podman")
        .args(["image", "unmount", &b.metadata.name])
        .output();
    facts?;

    // 2. unchanged: reused, not rebuilt
    let (ok, stdout, stderr) = run(&cfg)?;
    ensure!(ok, "second imgmode layer build failed:\n{stderr}");
    let b2: Mosb = serde_json::from_str(&stdout)?;
    ensure!(
        b2.metadata.name == b.metadata.name
            && b2.status.attempts == 1
            && b2.status.build_start == b.status.build_start,
        "an unchanged MachineOSConfig was rebuilt: {stderr}"
    );
    // 3. the rebuild annotation forces a build
    std::fs::write(
        &cfg,
        mosc(
            good,
            "  annotations:\n    machineconfiguration.openshift.io/rebuild: \"\"\n",
        ),
    )?;
    std::thread::sleep(Duration::from_millis(1100));
    let (ok, stdout, stderr) = run(&cfg)?;
    ensure!(ok, "the rebuild failed:\n{stderr}");
    let b3: Mosb = serde_json::from_str(&stdout)?;
    ensure!(
        state(&b3) == "Succeeded" && b3.status.build_start != b.status.build_start,
        "the rebuild annotation did not rebuild (build start {:?})",
        b3.status.build_start
    );

    // 4. a broken Containerfile: FAILED after 1 + 3 attempts
    std::fs::write(
        &cfg,
        mosc("FROM configs AS final\nCOPY does-not-exist /x", ""),
    )?;
    let (ok, _, stderr) = run(&cfg)?;
    ensure!(!ok, "a broken Containerfile built");
    ensure!(
        stderr.contains("failed 4 times"),
        "unexpected failure message:\n{stderr}"
    );
    let failed = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok())
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .find(|t| t.contains("BuildFailed"))
        .context("no MachineOSBuild records the failure")?;
    ensure!(
        failed.contains("attempts: 4"),
        "the failed build does not record 4 attempts"
    );

    // 5. bad configs are refused before any build
    for (text, needle) in [
        (
            mosc(good, "").replace("NoArch", "ARM64"),
            "no Containerfile for AMD64",
        ),
        (
            mosc(good, "").replace("name: layered\n", "name: nosuchpool\n"),
            "unknown machine config pool \"nosuchpool\"",
        ),
        (
            mosc(good, "").replace(&format!("  renderedImagePushSpec: {push}\n"), ""),
            "no spec.renderedImagePushSpec",
        ),
    ] {
        std::fs::write(&cfg, text)?;
        let before = std::fs::read_dir(&out)?.count();
        let (ok, _, stderr) = run(&cfg)?;
        ensure!(
            !ok && stderr.contains(needle),
            "expected {needle:?}, got:\n{stderr}"
        );
        ensure!(
            std::fs::read_dir(&out)?.count() == before,
            "a refused config wrote a MachineOSBuild"
        );
    }
    drop(registry);
    Ok(format!(
        "{} Succeeded as {pull}; reused when unchanged; rebuilt on annotation; broken Containerfile FAILED after 4 attempts; 3 bad configs refused",
        b.metadata.name
    ))
}

/// Where a power cut is injected, relative to an upgrade.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// `delay` seconds after `imgmode switch` started (fetching, then staging).
    DuringSwitch(f64),
    /// `delay` seconds after `imgmode switch` said it began this step (`fetching` the layers,
    /// `staging` the deployment).
    AtStep(&'static str, f64),
    /// `delay` seconds after ostree began finalizing the staged deployment at shutdown.
    DuringFinalize(f64),
    /// As soon as ostree logs that the bootloader configuration was swapped.
    AfterBootloader,
}

/// What ostree logs (forwarded to the console) once the new boot configuration is in place
/// ("Transaction complete; bootconfig swap: yes; ..." in 2025.2, "Bootloader updated;
/// bootconfig swap: yes; ..." before).
const BOOTLOADER_SWAPPED: &str = "bootconfig swap: yes";
/// Where a reset landed, as `powercut` tells from the guest's markers and ostree's log.
const FETCHING: &str = "fetching";
const STAGING: &str = "staging";
const AFTER_STAGING: &str = "after staging";
const FINALIZE_BEFORE_SWAP: &str = "finalize";
const FINALIZE_AFTER_SWAP: &str = "finalize (after the bootloader swap)";
const AFTER_SWAP: &str = "right after the bootloader update";

/// What ostree logs when finalization starts at shutdown.
const FINALIZING: &str = "Finalizing staged deployment";

/// The cuts, spread over an upgrade: 6 while fetching/staging (two of them as a step begins),
/// 4 during finalize, 2 right after the bootloader update.
const CUTS: &[Cut] = &[
    // the first boot runs the base image: the switch to the layered one fetches layers
    Cut::AtStep(FETCHING, 0.2),
    Cut::AtStep(STAGING, 0.2),
    Cut::DuringSwitch(0.3),
    Cut::DuringFinalize(0.0),
    Cut::AfterBootloader,
    Cut::DuringSwitch(2.0),
    Cut::DuringFinalize(0.5),
    Cut::DuringSwitch(5.0),
    Cut::DuringFinalize(1.0),
    Cut::AfterBootloader,
    Cut::DuringSwitch(9.0),
    Cut::DuringFinalize(1.6),
];

/// The powercut guest job: every boot reports status and `ostree fsck`, then switches to the
/// other image (layered <-> base, both from the attached disk) and reboots.
const POWERCUT_SCRIPT: &str = r#"state=/var/lib/imgmode-vmtest
mkdir -p "$state"
n=$(( $(cat "$state/boot" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$state/boot"; sync
if [ ! -f /etc/systemd/journald.conf.d/50-vmtest.conf ]; then
  mkdir -p /etc/systemd/journald.conf.d
  printf '[Journal]\nForwardToConsole=yes\nMaxLevelConsole=info\n' > /etc/systemd/journald.conf.d/50-vmtest.conf
  systemctl restart systemd-journald
fi
mkdir -p /mnt/payload
mountpoint -q /mnt/payload || mount -o ro /dev/disk/by-id/virtio-payload /mnt/payload
echo "IMGMODE-PHASE-$n-BEGIN"
echo "STATUS-BEGIN"; imgmode status --format json; echo "STATUS-END"
run ostree fsck --quiet
echo "IMGMODE-PHASE-$n-END"
if [ -f /etc/rsyslog.d/remote.conf ]; then target=base.tar; else target=layered.tar; fi
echo "SWITCH-START-$n"
# the switch's steps (stderr) as they come: a reset is aimed at the start of one
{ rc=0; imgmode switch "oci-archive:/mnt/payload/$target" 2>&1 >/dev/null || rc=$?; echo "SWITCH-RC-$n $rc"; } |
while IFS= read -r l; do
  case "$l" in
    SWITCH-RC-*) echo "$l" ;;
    *"] fetching "*) echo "SWITCH-STEP-$n fetching: $l" ;;
    *"] staging "*) echo "SWITCH-STEP-$n staging: $l" ;;
    *) echo "SWITCH-LOG-$n $l" ;;
  esac
done
sync
systemctl --no-block reboot
"#;

/// `powercut`: hard resets (QMP `system_reset`) at points spread over upgrades; after each the
/// node boots the old or the new deployment and `ostree fsck` is clean.
pub async fn powercut(a: Artifacts, dir: PathBuf) -> Result<String> {
    let (a2, d2) = (a.clone(), dir.clone());
    let (layered, payload) = tokio::task::spawn_blocking(move || -> Result<_> {
        let layered = build_layered(&a2)?;
        let l = d2.join("layered.tar");
        let b = d2.join("base.tar");
        for (name, f) in [("vmtest-layered", &l), ("imgmode-base", &b)] {
            let _ = std::fs::remove_file(f);
            imgmode_json(
                &a2,
                &["push", name, &format!("oci-archive:{}", f.display())],
            )?;
        }
        let payload = payload_disk(&d2, &[("layered.tar", &l), ("base.tar", &b)])?;
        std::fs::remove_file(&l)?;
        std::fs::remove_file(&b)?;
        Ok((layered, payload))
    })
    .await??;
    let cfg = job_vm(&a, &payload, POWERCUT_SCRIPT.to_string());
    let known = [a.base_digest.clone(), layered.digest.clone()];
    let mut vm = Vm::start(&cfg, &dir).await?;
    let mut log = Vec::new();
    let mut landings: Vec<&str> = Vec::new();
    let result = async {
        let mut boot = 1u32;
        let mut p = phase(&mut vm, boot, PHASE_TIMEOUT).await?;
        for (i, cut) in CUTS.iter().enumerate() {
            // the boot before the cut is sound
            let before = check_boot(&p, boot, &known)?;
            let results = || std::fs::read_to_string(vm_results(&dir)).unwrap_or_default();
            let swaps_before = vm.console().matches(BOOTLOADER_SWAPPED).count();
            let landed = match *cut {
                Cut::DuringSwitch(d) | Cut::AtStep(_, d) => {
                    let at = match *cut {
                        Cut::AtStep(step, _) => format!("SWITCH-STEP-{boot} {step}"),
                        _ => format!("SWITCH-START-{boot}"),
                    };
                    vm.wait_for_result(&at, PHASE_TIMEOUT).await?;
                    tokio::time::sleep(Duration::from_secs_f64(d)).await;
                    vm.reset().await?;
                    // where it landed, by what the switch had said before the reset
                    let r = results();
                    if r.contains(&format!("SWITCH-RC-{boot} ")) {
                        AFTER_STAGING
                    } else if r.contains(&format!("SWITCH-STEP-{boot} {STAGING}")) {
                        STAGING
                    } else {
                        FETCHING
                    }
                }
                Cut::DuringFinalize(d) => {
                    vm.wait_for_result(&format!("SWITCH-RC-{boot} 0"), PHASE_TIMEOUT)
                        .await?;
                    vm.wait_for_console(FINALIZING, BOOT_TIMEOUT).await?;
                    tokio::time::sleep(Duration::from_secs_f64(d)).await;
                    vm.reset().await?;
                    if vm.console().matches(BOOTLOADER_SWAPPED).count() > swaps_before {
                        FINALIZE_AFTER_SWAP
                    } else {
                        FINALIZE_BEFORE_SWAP
                    }
                }
                Cut::AfterBootloader => {
                    vm.wait_for_result(&format!("SWITCH-RC-{boot} 0"), PHASE_TIMEOUT)
                        .await?;
                    vm.wait_for_console(BOOTLOADER_SWAPPED, BOOT_TIMEOUT)
                        .await?;
                    vm.reset().await?;
                    AFTER_SWAP
                }
            };
            boot += 1;
            p = phase(&mut vm, boot, BOOT_TIMEOUT + PHASE_TIMEOUT)
                .await
                .with_context(|| format!("no sound boot after reset {} ({landed})", i + 1))?;
            let after = check_boot(&p, boot, &known)?;
            if landed == AFTER_SWAP || landed == FINALIZE_AFTER_SWAP {
                ensure!(
                    after != before,
                    "reset {} ({landed}) booted the old deployment {before}",
                    i + 1
                );
            }
            landings.push(landed);
            if landed == FETCHING || landed == STAGING {
                ensure!(
                    after == before,
                    "reset {} before the switch finished booted {after}, not the old {before}",
                    i + 1
                );
            }
            log.push(format!(
                "reset {} ({landed}): {} -> {}",
                i + 1,
                short(&before),
                short(&after)
            ));
        }
        // the cuts must have landed in every phase of an update, not only where timing put them
        for (phase, any_of) in [
            ("while fetching", &[FETCHING][..]),
            ("while staging", &[STAGING][..]),
            (
                "finalize before the bootloader swap",
                &[FINALIZE_BEFORE_SWAP][..],
            ),
            (
                "after the bootloader swap",
                &[AFTER_SWAP, FINALIZE_AFTER_SWAP][..],
            ),
        ] {
            ensure!(
                landings.iter().any(|l| any_of.contains(l)),
                "no reset landed {phase}; where they landed: {landings:?}"
            );
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    std::fs::write(dir.join("powercut.txt"), log.join("\n") + "\n")?;
    let _ = vm.quit().await;
    result?;
    Ok(format!(
        "{} resets injected, {} boots good, ostree fsck clean after each: {}",
        CUTS.len(),
        log.len(),
        log.join("; ")
    ))
}

fn vm_results(dir: &Path) -> PathBuf {
    dir.join("results.log")
}

fn short(digest: &str) -> String {
    digest.chars().take(19).collect()
}

/// A boot after a reset: booted one of the known images and `ostree fsck` passed.
fn check_boot(p: &Phase, n: u32, known: &[String]) -> Result<String> {
    let b = p.booted()?;
    let d = b.container_image_reference_digest.unwrap_or_default();
    ensure!(
        known.contains(&d),
        "boot {n}: booted {d:?}, neither the old nor the new image"
    );
    p.ran_ok("ostree fsck")
        .with_context(|| format!("boot {n}: ostree fsck"))?;
    Ok(d)
}
