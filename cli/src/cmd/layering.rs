//! `imgmode build`, `push`, `layer` and `container` (lint, and ostree-ext's commands).

use crate::args::layering::{
    BuildArgs, ContainerArgs, LayerBuildArgs, LayerCmd, LintArgs, PushArgs,
};
use crate::cmd::ctx::Ctx;
use crate::output;
use anyhow::{Context, Result};
use imgmode_image::imgref::{self, UserImageRef};
use ostree_ext::container::{ImageReference, Transport};
use std::ffi::OsString;

pub fn build(a: BuildArgs, cx: &Ctx) -> Result<()> {
    let opts = a.opts(cx.store())?;
    let out = imgmode_layering::build::build(&opts, &cx.steps())?;
    cx.print(&out, |o| {
        let mut s = String::new();
        for w in o.lint.warnings().chain(o.lint.fatal()) {
            s.push_str(&format!("lint {}: {}\n", w.name, w.message));
        }
        s.push_str(&format!(
            "{}\n  reference: {}\n  digest: {}\n  layers: {} shared with the base, {} new\n",
            o.name, o.reference, o.digest, o.reused_layers, o.new_layers
        ));
        s
    })
}

pub fn push(a: PushArgs, cx: &Ctx) -> Result<()> {
    let PushArgs {
        src,
        dest,
        tls_verify,
        digestfile,
        preserve_digests,
    } = a;
    let store = cx.store();
    let src_ref = store.resolve(&src)?;
    imgmode_image::oci::check_oci_ref(&src_ref.imgref)?;
    if let Some(f) = &digestfile {
        writable_file(f, "--digestfile")?;
    }
    let dest_ref = match imgref::parse(&dest)? {
        UserImageRef::Remote(r) => r,
        UserImageRef::Local(name) => {
            // into the local store: a staging layout, renamed into place when complete
            let staged = store.staging()?;
            let digest = imgmode_layering::build::push(
                &src_ref.imgref,
                &ImageReference {
                    transport: Transport::OciDir,
                    name: staged.path().display().to_string(),
                },
                false,
                None,
                digestfile.as_deref(),
                preserve_digests,
            )?;
            store.publish(staged, &name)?;
            crate::output::say(&format!(
                "copied {src} to the local store as {name} ({digest})"
            ));
            return Ok(());
        }
    };
    // a layout or archive this push creates is removed again when the push fails
    let made = matches!(
        dest_ref.imgref.transport,
        Transport::OciDir | Transport::OciArchive | Transport::Dir
    )
    .then(|| imgmode_image::imgref::oci_dir_and_tag(&dest_ref.imgref.name).0)
    .filter(|p| !p.exists());
    let digest = imgmode_layering::build::push(
        &src_ref.imgref,
        &dest_ref.imgref,
        tls_verify,
        None,
        digestfile.as_deref(),
        preserve_digests,
    )
    .inspect_err(|_| {
        if let Some(p) = &made {
            let _ = imgmode_support::fs::remove_path(p);
        }
    })?;
    crate::output::say(&format!("pushed {src} to {dest} as {digest}"));
    Ok(())
}

pub fn layer(cmd: LayerCmd, cx: &Ctx) -> Result<()> {
    match cmd {
        LayerCmd::Build(a) => layer_build(a, cx),
    }
}

fn layer_build(a: LayerBuildArgs, cx: &Ctx) -> Result<()> {
    let opts = a.opts(cx.store());
    let b = imgmode_layering::machineos::layer_build(&opts, &cx.steps())?;
    cx.print(&b, |b| {
        format!(
            "{}: {}\n  image: {}\n",
            b.metadata.name,
            b.state().unwrap_or("-"),
            b.status.current_image_pull_spec.as_deref().unwrap_or("-")
        )
    })
}

/// `imgmode container lint ...` is imgmode's; any other `container` command is ostree-ext's.
pub fn container(a: ContainerArgs, cx: &Ctx) -> Result<()> {
    if a.is_lint() {
        return lint(a.lint_args(), cx);
    }
    let argv = ["ostree-container".into(), "container".into()]
        .into_iter()
        .chain(a.args);
    ostree_container(argv)
}

fn lint(a: LintArgs, cx: &Ctx) -> Result<()> {
    if a.list {
        for (name, sev, what) in imgmode_layering::lint::LINTS {
            crate::output::say(&format!(
                "{name:<18} {:<8} {what}",
                format!("{sev:?}").to_lowercase()
            ));
        }
        return Ok(());
    }
    let report = match (&a.image, &a.rootfs) {
        (Some(img), _) => imgmode_layering::image::lint_image(&cx.store(), img)?,
        (None, Some(dir)) => {
            let tree = imgmode_layering::tree::Tree::from_dir(dir, true)?;
            let mut r = imgmode_layering::lint::lint(
                &dir.display().to_string(),
                &tree,
                &Default::default(),
            );
            // A root directory has no labels to check.
            r.results.retain(|x| x.name != "bootc-label");
            r
        }
        (None, None) => unreachable!("clap requires one"),
    };
    output::print(a.format.unwrap_or(cx.format), &report, |r| r.to_human())?;
    match report.error() {
        Some(e) if !a.no_fail => Err(e),
        _ => Ok(()),
    }
}

/// Run ostree-ext's CLI (what `ostree container ...` execs) on the process's runtime.
pub fn ostree_container<I>(argv: I) -> Result<()>
where
    I: IntoIterator<Item = OsString>,
{
    let argv: Vec<OsString> = argv.into_iter().collect();
    imgmode_support::runtime::block_on(ostree_ext::cli::run_from_iter(argv))?
}

/// A file a verb will write: its directory exists, it is not a directory, and its name is one
/// line (it is printed and recorded).
fn writable_file(f: &std::path::Path, flag: &str) -> Result<()> {
    let shown = imgmode_support::validate::shown(&f.to_string_lossy());
    anyhow::ensure!(
        !f.to_string_lossy().contains(char::is_control),
        "{flag} {shown} holds a control character; name a file without one"
    );
    anyhow::ensure!(!f.is_dir(), "{flag} {shown} is a directory; name a file");
    imgmode_support::fs::output_parent(f).with_context(|| format!("{flag} {shown}"))?;
    Ok(())
}
