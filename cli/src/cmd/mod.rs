//! Dispatch: each verb to its area's function.

mod base;
mod ctx;
mod ibi;
mod image;
mod internal;
mod layering;
mod meta;
mod node;
mod payload;
mod recert;
mod seed;
mod status;

use crate::ambient::Ambient;
use crate::args::{Cli, Command};
use anyhow::Result;
use ctx::Ctx;

pub use layering::ostree_container;

/// Run a parsed command line.
pub fn run(cli: Cli, ambient: &Ambient) -> Result<()> {
    let cx = Ctx::new(&cli.global, ambient);
    match cli.command {
        Command::Base(c) => base::run(c, &cx),
        Command::Disk(a) => base::disk(a, &cx),
        Command::Iso(a) => ibi::iso(a, &cx),
        Command::InstallFromIso(a) => ibi::install_from_iso(a, &cx),
        Command::Images => image::images(&cx),
        Command::Build(a) => layering::build(a, &cx),
        Command::Push(a) => layering::push(a, &cx),
        Command::Upgrade(a) => node::upgrade(a, &cx),
        Command::Switch(a) => node::switch(a, &cx),
        Command::Rollback(a) => node::rollback(a, &cx),
        Command::ApplyMachineconfig(a) => node::apply_machineconfig(a, &cx),
        Command::Revert(a) => node::revert(a, &cx),
        Command::Layer(c) => layering::layer(c, &cx),
        Command::Seed(c) => seed::run(c, &cx),
        Command::Ibi(c) => ibi::run(c, &cx),
        Command::Payload(c) => payload::run(c, &cx),
        Command::Image(c) => image::run(c, &cx),
        Command::Mirror(a) => payload::mirror(a, &cx),
        Command::Status(a) => status::status(a, &cx),
        Command::Recert(a) => recert::recert(a, &cx),
        Command::Completions { shell } => meta::completions(shell),
        Command::InstallExtras { prefix } => meta::install_extras(&prefix),
        Command::Internal(c) => internal::run(c, &cx),
        Command::Container(a) => layering::container(a, &cx),
    }
}
