//! `imgmode base` and `imgmode disk`.

use crate::args::base::{BaseBuildArgs, BaseCmd, DiskArgs};
use crate::cmd::ctx::Ctx;
use anyhow::Result;
use imgmode_os::{base, disk};

pub fn run(cmd: BaseCmd, cx: &Ctx) -> Result<()> {
    match cmd {
        BaseCmd::Build(a) => build(a, cx),
    }
}

fn build(a: BaseBuildArgs, cx: &Ctx) -> Result<()> {
    let exe = cx.ambient.imgmode_binary()?;
    let opts = a.opts(
        cx.store(),
        cx.ambient.cache_dir.clone(),
        exe,
        crate::cmd::meta::shell_files()?,
    );
    let out = base::build(&opts, &cx.steps())?;
    cx.print(&out, |o| {
        format!(
            "{} {}\n  reference: {}\n  digest: {}\n  commit: {}\n  version: {}\n",
            o.name,
            match (&o.reused_from, o.cached) {
                (Some(from), _) => format!("(reused from {from})"),
                (None, true) => "(cached)".to_string(),
                (None, false) => "(built)".to_string(),
            },
            o.reference,
            o.digest,
            o.commit,
            o.version
        )
    })
}

pub fn disk(a: DiskArgs, cx: &Ctx) -> Result<()> {
    let opts = a.opts(cx.store(), cx.ambient.cache_dir.clone())?;
    let out = disk::build(&opts, &cx.steps())?;
    crate::output::say(&format!(
        "wrote {} ({:?}, {} allocated) from {}",
        out.output.display(),
        out.format,
        imgmode_support::size::human_size(out.bytes_written),
        out.image_digest
    ));
    Ok(())
}
