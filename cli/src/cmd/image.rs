//! `imgmode images` and `imgmode image`.

use crate::args::image::{ImageCmd, UnpackArgs};
use crate::cmd::ctx::Ctx;
use anyhow::Result;

pub fn images(cx: &Ctx) -> Result<()> {
    let listing = cx.store().list()?;
    for u in &listing.unreadable {
        crate::output::warn(&format!(
            "skipping image {} in {}: {}; rebuild or push it again under that name, or remove it with: rm -rf {}",
            u.name,
            u.dir.display(),
            u.error,
            u.dir.display()
        ));
    }
    cx.print(&listing.images, |l| {
        let mut s = String::new();
        for i in l {
            s.push_str(&format!("{:<32} {}\n", i.name, i.digest));
        }
        s
    })
}

pub fn run(cmd: ImageCmd, cx: &Ctx) -> Result<()> {
    match cmd {
        ImageCmd::Unpack(a) => unpack(a, cx),
    }
}

fn unpack(a: UnpackArgs, cx: &Ctx) -> Result<()> {
    let max = a.max_size;
    let steps = cx.steps();
    let out = imgmode_image::extract::unpack_image(
        &cx.store(),
        &a.image,
        &a.dir,
        &a.registry.into(),
        max,
        &steps,
    )?;
    steps.finish();
    cx.print(&out, |o| {
        format!(
            "{} ({}) unpacked into {}: {} layers, {} entries, {} bytes, {} whiteouts, {:.1} s\n",
            o.image,
            o.manifest_digest,
            o.dir.display(),
            o.layers,
            o.entries,
            o.bytes,
            o.whiteouts,
            o.seconds
        )
    })
}
