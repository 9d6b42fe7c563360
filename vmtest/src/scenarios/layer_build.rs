//! `layer-build` (host only): `imgmode layer build` of a MachineOSConfig against a pool's
//! MachineConfigs, pushing to a throwaway registry; the MachineOSBuild it writes is checked,
//! and so are reuse, the rebuild annotation, retries of a broken build and refused configs.

use crate::harness::artifacts::Artifacts;
use crate::harness::registry::Registry;
use anyhow::{ensure, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The MachineOSConfig's Containerfile that builds.
const GOOD: &str = "FROM configs AS final\nCOPY --from=configs /etc/imgmode-mc.conf /usr/share/imgmode-mc.copy\nLABEL org.imgmode.test=layer-build";

/// `layer-build` (host only): `imgmode layer build` of a MachineOSConfig whose pool has a
/// MachineConfig with a file, a unit and a kernel argument; the MachineOSBuild succeeds and
/// names the pushed digest; a second run reuses it; the rebuild annotation rebuilds; a broken
/// Containerfile ends FAILED after the retries; bad configs are refused before building.
pub fn layer_build(a: &Artifacts, dir: &Path) -> Result<String> {
    let registry = Registry::start(&dir.join("registry"))?;
    let lb = LayerBuild::new(a, dir, &registry)?;
    let (b, pull) = good_build(&lb, &registry)?;
    reused_when_unchanged(&lb, &b)?;
    rebuilt_on_annotation(&lb, &b)?;
    broken_containerfile_fails(&lb)?;
    bad_configs_are_refused(&lb)?;
    drop(registry);
    Ok(format!(
        "{} Succeeded as {pull}; reused when unchanged; rebuilt on annotation; broken Containerfile FAILED at its first attempt, unreachable push after 4; 3 bad configs refused",
        b.metadata.name
    ))
}

/// The scenario's cluster configuration (a pool and its MachineConfig), where builds go, the
/// push spec, and the MachineOSConfig file each step writes.
struct LayerBuild<'a> {
    a: &'a Artifacts,
    cfgdir: PathBuf,
    out: PathBuf,
    push: String,
    cfg: PathBuf,
}

impl<'a> LayerBuild<'a> {
    fn new(a: &'a Artifacts, dir: &Path, registry: &Registry) -> Result<Self> {
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
        Ok(Self {
            a,
            cfgdir,
            out,
            push,
            cfg: dir.join("mosc.yaml"),
        })
    }

    /// A MachineOSConfig with `containerfile`, `extra_meta` added to its metadata.
    fn mosc(&self, containerfile: &str, extra_meta: &str) -> String {
        let push = &self.push;
        format!(
            "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineOSConfig\nmetadata:\n  name: layered-image\n{extra_meta}spec:\n  machineConfigPool:\n    name: layered\n  containerFile:\n  - containerfileArch: NoArch\n    content: |-\n{}\n  imageBuilder:\n    imageBuilderType: Job\n  renderedImagePushSpec: {push}\n  renderedImagePushSecret:\n    name: push-secret\n",
            containerfile
                .lines()
                .map(|l| format!("      {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    /// `imgmode layer build` of the MachineOSConfig file: (success, stdout, stderr).
    fn build(&self) -> Result<(bool, String, String)> {
        let (a, cfg, cfgdir, out) = (self.a, &self.cfg, &self.cfgdir, &self.out);
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
            .arg(cfgdir)
            .arg("--output-dir")
            .arg(out)
            .output()?;
        Ok((
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ))
    }
}

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

/// The MachineOSBuild's state: the type of its condition that is true.
fn state(m: &Mosb) -> String {
    m.status
        .conditions
        .iter()
        .find(|c| c.status == "True")
        .map(|c| c.type_.clone())
        .unwrap_or_default()
}

/// Step 1, a good build: the MachineOSBuild succeeds and names the pushed digest; the image has
/// the pool's file, unit and kernel argument, and the Containerfile's content. Returns the
/// build and its pull spec.
fn good_build(lb: &LayerBuild, registry: &Registry) -> Result<(Mosb, String)> {
    let push = &lb.push;
    std::fs::write(&lb.cfg, lb.mosc(GOOD, ""))?;
    let (ok, stdout, stderr) = lb.build()?;
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
    Ok((b, pull))
}

/// Step 2, unchanged: reused, not rebuilt.
fn reused_when_unchanged(lb: &LayerBuild, b: &Mosb) -> Result<()> {
    let (ok, stdout, stderr) = lb.build()?;
    ensure!(ok, "second imgmode layer build failed:\n{stderr}");
    let b2: Mosb = serde_json::from_str(&stdout)?;
    ensure!(
        b2.metadata.name == b.metadata.name
            && b2.status.attempts == 1
            && b2.status.build_start == b.status.build_start,
        "an unchanged MachineOSConfig was rebuilt: {stderr}"
    );
    Ok(())
}

/// Step 3, the rebuild annotation forces a build.
fn rebuilt_on_annotation(lb: &LayerBuild, b: &Mosb) -> Result<()> {
    std::fs::write(
        &lb.cfg,
        lb.mosc(
            GOOD,
            "  annotations:\n    machineconfiguration.openshift.io/rebuild: \"\"\n",
        ),
    )?;
    std::thread::sleep(Duration::from_millis(1100));
    let (ok, stdout, stderr) = lb.build()?;
    ensure!(ok, "the rebuild failed:\n{stderr}");
    let b3: Mosb = serde_json::from_str(&stdout)?;
    ensure!(
        state(&b3) == "Succeeded" && b3.status.build_start != b.status.build_start,
        "the rebuild annotation did not rebuild (build start {:?})",
        b3.status.build_start
    );
    Ok(())
}

/// Step 4, a broken Containerfile: FAILED at the first attempt (a build is deterministic);
/// a push to a registry that is not there: FAILED after 1 + 3 attempts.
fn broken_containerfile_fails(lb: &LayerBuild) -> Result<()> {
    let out = &lb.out;
    std::fs::write(
        &lb.cfg,
        lb.mosc("FROM configs AS final\nCOPY does-not-exist /x", ""),
    )?;
    let (ok, _, stderr) = lb.build()?;
    ensure!(!ok, "a broken Containerfile built");
    ensure!(
        stderr.contains("failed to build (not retried"),
        "unexpected failure message:\n{stderr}"
    );
    // the only failed record so far
    let failed = failed_record(out, "BuildFailed")?;
    ensure!(
        failed.contains("attempts: 1\n"),
        "the failed build does not record 1 attempt:\n{failed}"
    );
    // nothing listens on port 1: every push fails, and is retried
    let unreachable = lb
        .mosc(GOOD, "")
        .replace(&lb.push, "127.0.0.1:1/os/unreachable:latest");
    std::fs::write(&lb.cfg, unreachable)?;
    let (ok, _, stderr) = lb.build()?;
    ensure!(!ok, "a push to a closed port succeeded");
    ensure!(
        stderr.contains("failed to push 4 times"),
        "unexpected failure message:\n{stderr}"
    );
    let failed = failed_record(out, "127.0.0.1:1/os/unreachable")?;
    ensure!(
        failed.contains("attempts: 4\n"),
        "the failed push does not record 4 attempts:\n{failed}"
    );
    Ok(())
}

/// The MachineOSBuild record in `out` that failed and mentions `needle`.
fn failed_record(out: &std::path::Path, needle: &str) -> Result<String> {
    std::fs::read_dir(out)?
        .filter_map(|e| e.ok())
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .find(|t| t.contains("BuildFailed") && t.contains(needle))
        .with_context(|| format!("no MachineOSBuild records the failure of {needle}"))
}

/// Step 5, bad configs are refused before any build.
fn bad_configs_are_refused(lb: &LayerBuild) -> Result<()> {
    let (push, out) = (&lb.push, &lb.out);
    for (text, needle) in [
        (
            lb.mosc(GOOD, "").replace("NoArch", "ARM64"),
            "no Containerfile for AMD64",
        ),
        (
            lb.mosc(GOOD, "")
                .replace("name: layered\n", "name: nosuchpool\n"),
            "unknown machine config pool \"nosuchpool\"",
        ),
        (
            lb.mosc(GOOD, "")
                .replace(&format!("  renderedImagePushSpec: {push}\n"), ""),
            "no spec.renderedImagePushSpec",
        ),
    ] {
        std::fs::write(&lb.cfg, text)?;
        let before = std::fs::read_dir(out)?.count();
        let (ok, _, stderr) = lb.build()?;
        ensure!(
            !ok && stderr.contains(needle),
            "expected {needle:?}, got:\n{stderr}"
        );
        ensure!(
            std::fs::read_dir(out)?.count() == before,
            "a refused config wrote a MachineOSBuild"
        );
    }
    Ok(())
}
