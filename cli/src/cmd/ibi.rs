//! `imgmode ibi`: image-based installation.

use crate::args::ibi::{
    CreateImageArgs, IbiCmd, InstallArgs, InstallFromIsoArgs, IsoArgs, Machine, PostPivotArgs,
};
use crate::cmd::ctx::Ctx;
use anyhow::{Context, Result};
use imgmode_ibi::config::ImageBasedInstallationConfig;
use imgmode_support::size::human_size;
use std::path::Path;

pub fn run(cmd: IbiCmd, cx: &Ctx) -> Result<()> {
    match cmd {
        IbiCmd::CreateConfigImage { dir } => create_config_image(&dir, cx),
        IbiCmd::PostPivot(a) => post_pivot(a, cx),
        IbiCmd::Install(a) => install(a, cx),
        IbiCmd::CreateImage(a) => create_image(a, cx),
    }
}

fn create_config_image(dir: &Path, cx: &Ctx) -> Result<()> {
    let c = imgmode_ibi::configiso::create(dir)?;
    cx.print(&c, |c| {
        format!(
            "wrote {} for cluster {}.{} (host {}, cluster ID {}, infra ID {}, {} extra manifest file(s))\n  {}\n  {}\n",
            c.iso.display(),
            c.cluster_name,
            c.base_domain,
            c.hostname,
            c.cluster_id,
            c.infra_id,
            c.extra_manifests,
            c.kubeconfig.display(),
            c.kubeadmin_password.display()
        )
    })
}

fn post_pivot(a: PostPivotArgs, cx: &Ctx) -> Result<()> {
    let m = imgmode_seed::postpivot::run(&a.into(), cx.steps())?;
    // names only: the configuration's keys are gone from the state by now
    crate::output::say(&format!(
        "post-pivot done: cluster {}.{} (infra ID {}), host {}",
        m.cluster_name, m.base_domain, m.infra_id, m.hostname
    ));
    Ok(())
}

fn install(a: InstallArgs, cx: &Ctx) -> Result<()> {
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let cfg = ImageBasedInstallationConfig::parse(&text, &a.config.display().to_string())?;
    let reboot = a.reboot;
    let machine = Machine {
        architecture: cx.ambient.arch.clone(),
        fips: cx.ambient.fips,
        store: cx.store(),
    };
    let o = a.opts(cfg, machine);
    let steps = cx.steps();
    let out = imgmode_ibi::install::install(&o, &steps)?;
    steps.finish();
    cx.print(&out, |i| {
        format!(
            "installed seed {} ({}) on {}: stateroot {}, commit {}, {} image(s) precached, in {:.0}s\n",
            i.seed,
            i.seed_version,
            i.disk,
            i.stateroot,
            i.commit,
            i.precached.len(),
            i.seconds
        )
    })?;
    if reboot {
        restart(o.config.shutdown)?;
    }
    Ok(())
}

/// What follows the installation: `poweroff` when the config says `shutdown: true`, else
/// `reboot`.
fn restart_action(shutdown: bool) -> &'static str {
    if shutdown {
        "poweroff"
    } else {
        "reboot"
    }
}

/// `systemctl`'s arguments after the installation. In a live system (`live`: its root is the
/// RAM layer's overlay) the services are not stopped one by one (`--force`): nothing there
/// outlives the boot, the installed disk is unmounted already, and systemd still ends every
/// process, unmounts what is left and syncs before the reset. Anywhere else the services
/// stop in order.
fn restart_args(shutdown: bool, live: bool) -> Vec<&'static str> {
    let mut args = vec![restart_action(shutdown)];
    if live {
        args.push("--force");
    }
    args
}

/// After the installation: reboot, or power off when the config says `shutdown: true`.
fn restart(shutdown: bool) -> Result<()> {
    // mounts that cannot be read (no /proc) are no live system's: the services stop in order
    let live = imgmode_support::host::mounts().is_ok_and(|m| imgmode_os::live::is_live_root(&m));
    let args = restart_args(shutdown, live);
    imgmode_support::cmd::Run::new("systemctl")
        .args(&args)
        .output()
        .with_context(|| format!("systemctl {}", args.join(" ")))?;
    Ok(())
}

fn create_image(a: CreateImageArgs, cx: &Ctx) -> Result<()> {
    let o = a.opts(cx.store(), cx.ambient.cache_dir.clone());
    let steps = cx.steps();
    let c = imgmode_ibi::installiso::create_image(&o, &steps)?;
    steps.finish();
    cx.print(&c, |c| {
        format!(
            "wrote {} ({}): installs {} ({}) onto {}{}; live system {} (kernel {}, root filesystem {} in a {} archive)\n",
            c.iso.display(),
            human_size(c.live.iso_bytes),
            c.seed,
            c.seed_version,
            c.installation_disk,
            c.embedded_seed
                .as_deref()
                .map(|d| format!(", seed embedded ({d})"))
                .unwrap_or_default(),
            c.live.image,
            c.live.kernel,
            human_size(c.live.rootfs_tree_bytes),
            human_size(c.live.rootfs_bytes)
        )
    })
}

/// `imgmode iso`.
pub fn iso(a: IsoArgs, cx: &Ctx) -> Result<()> {
    let o = a.opts(cx.store(), cx.ambient.cache_dir.clone());
    let steps = cx.steps();
    let c = imgmode_ibi::imageiso::create(&o, &steps)?;
    steps.finish();
    cx.print(&c, |c| {
        format!(
            "wrote {} ({}): installs {} ({}) onto {}; disk image {} ({} compressed); live system {} (kernel {})\n",
            c.iso.display(),
            human_size(c.live.iso_bytes),
            c.record.image,
            c.record.image_digest,
            c.record
                .installation_disk
                .as_deref()
                .unwrap_or("the machine's one disk"),
            human_size(c.record.disk_size),
            human_size(c.disk_file_bytes),
            c.live.image,
            c.live.kernel,
        )
    })
}

/// `imgmode install-from-iso`.
pub fn install_from_iso(a: InstallFromIsoArgs, cx: &Ctx) -> Result<()> {
    let steps = cx.steps();
    let i = imgmode_ibi::imageiso::install::install(
        &imgmode_ibi::imageiso::install::InstallOpts {
            dir: a.dir,
            disk: a.disk,
        },
        &steps,
    )?;
    steps.finish();
    cx.print(&i, |i| {
        format!(
            "installed {} ({}) on {} ({}, root partition {}) in {:.0}s\n",
            i.image,
            i.image_digest,
            i.disk.display(),
            human_size(i.disk_bytes),
            human_size(i.root_bytes),
            i.seconds
        )
    })?;
    if a.reboot {
        restart(false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn shutdown_powers_off_instead_of_rebooting() {
        assert_eq!(super::restart_action(true), "poweroff");
        assert_eq!(super::restart_action(false), "reboot");
        // a live system's services are not stopped one by one; another system's are
        assert_eq!(super::restart_args(false, true), ["reboot", "--force"]);
        assert_eq!(super::restart_args(true, true), ["poweroff", "--force"]);
        assert_eq!(super::restart_args(false, false), ["reboot"]);
    }
}
