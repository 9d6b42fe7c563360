//! The node-side verbs: `imgmode upgrade`, `switch`, `rollback`, `apply-machineconfig`, `revert`.

use crate::args::node::{ApplyArgs, ApplyMachineconfigArgs, NodeArgs, SwitchArgs, UpgradeArgs};
use crate::cmd::ctx::Ctx;
use anyhow::Result;
use imgmode_image::imgref::{self, UserImageRef};
use imgmode_os::node::{self, UpdateOutcome};

pub fn upgrade(a: UpgradeArgs, cx: &Ctx) -> Result<()> {
    if a.auto {
        let target = node::current_imgref(&a.node.sysroot)?;
        if let Some(path) = node::missing_local_path(&target) {
            eprintln!(
                "{}",
                imgmode_support::validate::terminal_safe(&format!(
                    "imgmode upgrade: this node follows {target}, and {} is not on this machine: nothing to fetch. To receive updates, follow a registry: imgmode switch docker://REGISTRY/IMAGE (or write the disk with --target-imgref)",
                    path.display()
                ))
            );
            return Ok(());
        }
    }
    let opts = node::UpdateOpts {
        check: a.check,
        ..cx.update_opts()
    };
    let out = node::upgrade(&a.node.sysroot, &opts)?;
    finish_update(cx, &out, a.check, a.apply)
}

pub fn switch(a: SwitchArgs, cx: &Ctx) -> Result<()> {
    let target = match imgref::parse(&a.image)? {
        UserImageRef::Remote(r) => r,
        UserImageRef::Local(n) => anyhow::bail!(
            "{n:?} has no transport; name where the node fetches it, e.g. docker://registry.example.com/{n} or oci-archive:/path/{n}.tar"
        ),
    };
    let out = node::switch(&a.node.sysroot, &target, &cx.update_opts())?;
    finish_update(cx, &out, false, a.apply)
}

pub fn apply_machineconfig(a: ApplyMachineconfigArgs, cx: &Ctx) -> Result<()> {
    let mc = imgmode_layering::objects::MachineConfig::load(&a.file)?;
    let out =
        imgmode_layering::objects::apply_machineconfig(&a.node.sysroot, &mc, &cx.update_opts())?;
    finish_update(cx, &out, false, a.apply)
}

pub fn revert(a: ApplyArgs, cx: &Ctx) -> Result<()> {
    let out = imgmode_layering::objects::revert(&a.node.sysroot, &cx.update_opts())?;
    finish_update(cx, &out, false, a.apply)
}

pub fn rollback(a: ApplyArgs, cx: &Ctx) -> Result<()> {
    let ApplyArgs {
        apply,
        node: NodeArgs { sysroot },
    } = a;
    let out = node::rollback(&sysroot)?;
    cx.print(&out, |o| {
        let mut s = format!("Next boot: {}\nRollback: {}\n", o.next, o.previous);
        if let Some(d) = &o.dropped_staged {
            s.push_str(&format!("Dropped the staged deployment {d}\n"));
        }
        s
    })?;
    if apply {
        reboot()?;
    }
    Ok(())
}

fn finish_update(cx: &Ctx, out: &UpdateOutcome, check: bool, apply: bool) -> Result<()> {
    cx.print(out, |o| o.to_human(check))?;
    if apply && !out.unchanged && out.staged {
        reboot()?;
    }
    Ok(())
}

fn reboot() -> Result<()> {
    eprintln!("Rebooting into the new deployment.");
    imgmode_support::cmd::Run::new("systemctl")
        .arg("reboot")
        .run()
}
