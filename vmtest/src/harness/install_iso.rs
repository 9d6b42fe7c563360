//! What the installation-ISO scenarios (`ibi`, `registry-less`) share: the live system's
//! checks, run by a unit of their own before the installation unit (`live_job`), and the
//! run's seed pushed to a throwaway TLS registry (`seed_in_tls_registry`), mirrored as a
//! payload (`mirror_seed`), and installation ISOs (`installation_iso`).

use crate::harness::artifacts::{run, write_secret, Artifacts};
use crate::harness::context::RunContext;
use crate::harness::guest::{guest_script, results_unit, Phase};
use crate::harness::health::FAILED_UNITS_SH;
use crate::harness::qemu::VmConfig;
use crate::harness::registry::Registry;
use crate::harness::seed::SeedBuild;
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `cfg` with the live system's checks: `script` run by a unit of its own before the
/// installation unit (the job unit of [`crate::harness::guest::job`] runs only after
/// multi-user.target, which the installation unit holds up until it reboots).
/// `__FAILED_UNITS__` in `script` becomes `FACT failed-units=...` (`none`): the live system's
/// startup ends in the install unit's reboot, so its health report may never come.
pub(crate) fn live_job(cfg: VmConfig, script: String) -> VmConfig {
    live_job_ordered(cfg, script, true)
}

/// [`live_job`], or for checks that need nothing before the install (no refusal on the
/// untouched disk; `before_install` false) beside the installation unit instead of holding it
/// up: a timed host's install starts when its live system is up, as a user's does (the checks
/// took about 3 s of the live system's startup under emulation).
pub(crate) fn live_job_ordered(cfg: VmConfig, script: String, before_install: bool) -> VmConfig {
    let failed_units = format!(
        "f=$({} | tr '\\n' ' ')\necho \"FACT failed-units=${{f:-none}}\"",
        FAILED_UNITS_SH
    );
    let script = script.replace("__FAILED_UNITS__", &failed_units);
    let unit = results_unit(
        "imgmode vmtest: the live system's checks",
        "ConditionKernelCommandLine=imgmode.live
# it runs early (before the install): wait for udev's name of the results port
Requires=dev-virtio\\x2dports-org.imgmode.results.device
After=dev-virtio\\x2dports-org.imgmode.results.device
",
        "vmtest.livescript",
    );
    let cfg = VmConfig {
        unfinished_startup: Some(
            "the installation ISO's unit installs and reboots during startup; the live checks \
             report the failed units instead (FACT failed-units)",
        ),
        ..cfg
    };
    cfg.extra_unit("imgmode-vmtest-live.service", &unit)
        .unit_dropin(
            "imgmode-ibi-install.service",
            if before_install {
                "[Unit]\nWants=imgmode-vmtest-live.service\nAfter=imgmode-vmtest-live.service\n"
            } else {
                "[Unit]\nWants=imgmode-vmtest-live.service\n"
            },
        )
        .credential("vmtest.livescript", guest_script(&script))
}

/// The live system must have no failed unit when its checks run.
pub(crate) fn no_failed_live_units(live: &Phase, host: &str) -> Result<()> {
    ensure!(
        live.fact("failed-units") == "none",
        "{host}: units failed in the live system: {}",
        live.fact("failed-units")
    );
    Ok(())
}

/// The run's shared seed, and a new TLS registry under `dir/registry` holding it as
/// `imgmode-seed:<version>` (pushed from the host as 127.0.0.1).
pub(crate) async fn seed_in_tls_registry(
    ctx: &RunContext,
    dir: &Path,
) -> Result<(SeedBuild, String, Registry)> {
    let seed = ctx.shared_seed(&dir.join("seed")).await?;
    let version = seed.version()?.to_string();
    let reg = Registry::start_tls(&dir.join("registry"))?;
    let (_, certs) = reg.tls.clone().context("the registry serves no TLS")?;
    run(
        Command::new("skopeo")
            // byte for byte: the registry holds the seed `seed create` made (its layer
            // uncompressed), as `seed create --output docker://...` would push it
            .args(["copy", "--quiet", "--preserve-digests"])
            .arg(format!("--dest-cert-dir={}", certs.display()))
            .arg(format!("oci-archive:{}", seed.archive.display()))
            .arg(format!(
                "docker://{}/imgmode-seed:{version}",
                reg.host_addr()
            )),
        "skopeo copy (seed to the registry)",
    )?;
    Ok((seed, version, reg))
}

/// `imgmode mirror` of the seed at `addr` (trusted through `certs`) into `dir/payload`:
/// (the payload, the seed's digest in it, the seconds the mirror took).
pub(crate) fn mirror_seed(
    a: &Artifacts,
    dir: &Path,
    addr: &str,
    version: &str,
    certs: &Path,
) -> Result<(PathBuf, String, f64)> {
    let src = format!("{addr}/imgmode-seed:{version}");
    let p = mirror_images(a, &dir.join("payload"), std::slice::from_ref(&src), certs)?;
    let digest = p.digest(&src)?;
    Ok((p.dir, digest, p.seconds))
}

/// A payload `imgmode mirror` made.
pub(crate) struct MirroredPayload {
    pub dir: PathBuf,
    /// The payload's ID.
    pub id: String,
    pub seconds: f64,
    record: serde_json::Value,
}

impl MirroredPayload {
    /// The manifest digest of the image mirrored from `source` (as given to the mirror).
    pub(crate) fn digest(&self, source: &str) -> Result<String> {
        let want = format!("docker://{source}");
        self.record["images"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["source"] == want.as_str()))
            .and_then(|i| i["digest"].as_str())
            .map(str::to_string)
            .with_context(|| format!("the payload record holds no {source}: {}", self.record))
    }
}

/// `imgmode mirror` of `images` (registry references, trusted through `certs`) into `dir`,
/// made anew.
pub(crate) fn mirror_images(
    a: &Artifacts,
    dir: &Path,
    images: &[String],
    certs: &Path,
) -> Result<MirroredPayload> {
    let _ = std::fs::remove_dir_all(dir);
    let t0 = std::time::Instant::now();
    let mut cmd = Command::new(&a.imgmode);
    cmd.arg("mirror");
    for i in images {
        cmd.args(["--image", i]);
    }
    run(
        cmd.arg("--dir").arg(dir).arg("--cert-dir").arg(certs),
        "imgmode mirror",
    )?;
    let seconds = t0.elapsed().as_secs_f64();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("imgmode-payload.json"))?)?;
    let id = record["id"]
        .as_str()
        .context("the payload record has no ID")?
        .to_string();
    Ok(MirroredPayload {
        dir: dir.to_path_buf(),
        id,
        seconds,
        record,
    })
}

/// A tiny image standing in for release `n` of a cluster (FROM scratch, one file naming it),
/// built by podman in `dir` and pushed to the TLS registry `addr` (trusted through `certs`)
/// as `imgmode-release:<n>`; its reference there.
pub(crate) fn push_release_image(dir: &Path, addr: &str, certs: &Path, n: u32) -> Result<String> {
    let ctx = dir.join(format!("release-{n}"));
    std::fs::create_dir_all(&ctx)?;
    std::fs::write(ctx.join("release"), format!("imgmode vmtest release {n}\n"))?;
    std::fs::write(
        ctx.join("Containerfile"),
        format!("FROM scratch\nCOPY release /release\nLABEL io.imgmode.vmtest.release={n}\n"),
    )?;
    let local = format!("localhost/imgmode-vmtest-release:{n}");
    run(
        Command::new("podman")
            .args(["build", "-q", "-t", &local])
            .arg(&ctx),
        "podman build (a release image)",
    )?;
    let dest = format!("{addr}/imgmode-release:{n}");
    run(
        Command::new("podman")
            .args(["push", "-q"])
            .arg(format!("--cert-dir={}", certs.display()))
            .arg(&local)
            .arg(format!("docker://{dest}")),
        "podman push (a release image)",
    )?;
    Ok(dest)
}

/// The run's seed-system image with one file more (`/usr/share/imgmode-vmtest/release`,
/// "2"): the OS of a next release, built by `imgmode build` and pushed to the TLS registry
/// `addr` (trusted through `certs`) as `imgmode-os:2`; its reference there.
pub(crate) fn push_next_os(a: &Artifacts, dir: &Path, addr: &str, certs: &Path) -> Result<String> {
    let ctx = dir.join("os-2");
    std::fs::create_dir_all(&ctx)?;
    std::fs::write(ctx.join("release"), "2\n")?;
    std::fs::write(
        ctx.join("Containerfile"),
        format!(
            "FROM {}\nCOPY release /usr/share/imgmode-vmtest/release\n",
            crate::harness::seed::SEED_SYSTEM
        ),
    )?;
    let out = crate::harness::artifacts::imgmode_json(
        a,
        &[
            "build",
            "-q",
            "--format",
            "json",
            "-t",
            "imgmode-vmtest-os2",
            &ctx.display().to_string(),
        ],
    )?;
    let built: serde_json::Value =
        serde_json::from_str(&out).context("parsing imgmode build --format json")?;
    let reference = built["reference"]
        .as_str()
        .context("imgmode build printed no reference")?;
    let dest = format!("{addr}/imgmode-os:2");
    run(
        Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("--dest-cert-dir={}", certs.display()))
            .arg(reference)
            .arg(format!("docker://{dest}")),
        "skopeo copy (the next OS to the registry)",
    )?;
    Ok(dest)
}

/// The installation ISO of the installation config `config` (`imgmode ibi create-image`),
/// in `isodir` (made anew), carrying `payload` when given (`--payload`).
pub(crate) fn installation_iso(
    a: &Artifacts,
    isodir: &Path,
    config: &str,
    payload: Option<&Path>,
) -> Result<PathBuf> {
    let _ = std::fs::remove_dir_all(isodir);
    std::fs::create_dir_all(isodir)?;
    let path = isodir.join("image-based-installation-config.yaml");
    // it holds the pull secret: 0600 from the start
    write_secret(&path, config)?;
    let mut cmd = Command::new(&a.imgmode);
    cmd.args(["ibi", "create-image", "--config"])
        .arg(&path)
        .arg("--dir")
        .arg(isodir);
    if let Some(p) = payload {
        cmd.arg("--payload").arg(p);
    }
    run(&mut cmd, "imgmode ibi create-image")?;
    Ok(isodir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::guest::job;
    use crate::harness::qemu::Boot;

    #[test]
    fn the_job_unit_runs_its_script_after_multi_user_with_output_on_the_results_port() {
        let cfg = job(VmConfig::new("/d.qcow2", Boot::Bios), "true".into());
        let unit = cfg
            .credential_value("systemd.extra-unit.imgmode-vmtest-job.service")
            .unwrap();
        assert_eq!(
            unit,
            "[Unit]\nDescription=imgmode vmtest: layered job\nAfter=multi-user.target network-online.target\nWants=network-online.target\n\n[Service]\nType=oneshot\nImportCredential=vmtest.*\nStandardOutput=file:/dev/virtio-ports/org.imgmode.results\nStandardError=inherit\nExecStart=/bin/sh -c 'exec sh \"$CREDENTIALS_DIRECTORY/vmtest.script\"'\n"
        );
        let live = live_job(cfg, "__FAILED_UNITS__\n".into());
        let script = live.credential_value("vmtest.livescript").unwrap();
        assert!(script.ends_with("f=$(systemctl list-units --failed --all --no-legend --plain | cut -d' ' -f1 | tr '\\n' ' ')\necho \"FACT failed-units=${f:-none}\"\n"), "{script}");
        let unit = live
            .credential_value("systemd.extra-unit.imgmode-vmtest-live.service")
            .unwrap();
        assert!(unit.contains("\nRequires=dev-virtio\\x2dports-org.imgmode.results.device\n"));
        assert!(unit.contains("\"$CREDENTIALS_DIRECTORY/vmtest.livescript\""));
        assert!(unit.contains("ConditionKernelCommandLine=imgmode.live\n"));
    }
}
