//! What the installation-ISO scenarios (`ibi`, `registry-less`) share: the live system's
//! checks, run by a unit of their own before the installation unit (`live_job`), and the
//! run's seed pushed to a throwaway TLS registry (`seed_in_tls_registry`).

use crate::harness::artifacts::run;
use crate::harness::context::RunContext;
use crate::harness::guest::{guest_script, results_unit, Phase};
use crate::harness::health::FAILED_UNITS_SH;
use crate::harness::qemu::VmConfig;
use crate::harness::registry::Registry;
use crate::harness::seed::SeedBuild;
use anyhow::{ensure, Context, Result};
use std::path::Path;
use std::process::Command;

/// `cfg` with the live system's checks: `script` run by a unit of its own before the
/// installation unit (the job unit of [`crate::harness::guest::job`] runs only after
/// multi-user.target, which the installation unit holds up until it reboots).
/// `__FAILED_UNITS__` in `script` becomes `FACT failed-units=...` (`none`): the live system's
/// startup ends in the install unit's reboot, so its health report may never come.
pub(crate) fn live_job(cfg: VmConfig, script: String) -> VmConfig {
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
            "[Unit]\nWants=imgmode-vmtest-live.service\nAfter=imgmode-vmtest-live.service\n",
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
            .args(["copy", "--quiet"])
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
