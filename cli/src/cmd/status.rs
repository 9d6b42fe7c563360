//! `imgmode status`.

use crate::args::node::StatusArgs;
use crate::cmd::ctx::Ctx;
use anyhow::Result;

pub fn status(a: StatusArgs, cx: &Ctx) -> Result<()> {
    let st = imgmode_os::ostree::sysroot_status(&a.sysroot)?;
    cx.print(&st, |s| s.to_human())
}
