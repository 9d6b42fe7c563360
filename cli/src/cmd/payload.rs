//! `imgmode payload` and `imgmode mirror`.

use crate::args::payload::{MirrorArgs, PayloadCmd};
use crate::cmd::ctx::Ctx;
use anyhow::{Context, Result};
use imgmode_ibi::payload::store::Users;
use imgmode_support::size::human_size;
use std::path::{Path, PathBuf};

pub fn run(cmd: PayloadCmd, cx: &Ctx) -> Result<()> {
    match cmd {
        PayloadCmd::Verify { dir } => verify(&dir, cx),
        PayloadCmd::Status { store, users } => status(&store, &users.users()?, cx),
        PayloadCmd::Add {
            source,
            store,
            mirrors,
            attached,
        } => add(&source, &store, mirrors.for_store(&store), attached, cx),
        PayloadCmd::Remove {
            id,
            store,
            users,
            mirrors,
        } => remove(&id, &store, &users.users()?, mirrors.for_store(&store)),
        PayloadCmd::OptOut { store, root, users } => opt_out(&root, &store, &users.users()?, cx),
        PayloadCmd::Tls {
            root,
            post_pivot_state,
        } => tls(&root, &post_pivot_state, cx),
        PayloadCmd::JoinConfig {
            registry,
            store,
            root,
        } => {
            let held = imgmode_image::mirror::Payload::read(&store).with_context(|| {
                format!(
                    "{} holds no payload record: this host serves no payload",
                    store.display()
                )
            })?;
            print!(
                "{}",
                imgmode_ibi::payload::serving::join_config(&root, &held, &registry)?
            );
            Ok(())
        }
    }
}

fn tls(root: &Path, post_pivot_state: &Path, cx: &Ctx) -> Result<()> {
    use imgmode_ibi::payload::serving;
    let want = serving::host_names(
        &imgmode_support::host::hostname()?,
        &serving::global_addresses()?,
        &post_pivot_state.join(imgmode_seed::postpivot::RECONFIGURED),
    )?;
    let t = serving::ensure_tls(root, &want)?;
    cx.print(&t, |t| {
        let names = t.names.iter().cloned().collect::<Vec<_>>().join(", ");
        if t.issued {
            format!("the payload registry's certificate issued again for {names}\n")
        } else {
            format!("the payload registry's certificate names {names} already\n")
        }
    })
}

fn verify(dir: &Path, cx: &Ctx) -> Result<()> {
    let v = imgmode_image::mirror::verify(dir)?;
    cx.print(&v, |v| {
        format!(
            "{}: payload {} ({} image(s), {}): {} blobs ({}) and {} links verified\n",
            dir.display(),
            v.payload.id,
            v.payload.images.len(),
            v.payload.architectures.join(", "),
            v.blobs,
            human_size(v.bytes),
            v.links
        )
    })
}

fn status(store: &Path, users: &Users, cx: &Ctx) -> Result<()> {
    let held = imgmode_ibi::payload::store::status(store, users)?;
    cx.print(&held, |held| {
        if held.is_empty() {
            return format!("{} holds no payload\n", store.display());
        }
        held.iter()
            .map(|h| {
                let mut s = format!(
                    "{} ({}){}\n",
                    h.payload.id,
                    h.payload.architectures.join(", "),
                    if h.in_use.is_empty() { "" } else { " in use" }
                );
                for i in &h.payload.images {
                    s.push_str(&format!("  {} {} ({})\n", i.name(), i.digest, i.source));
                }
                for u in &h.in_use {
                    s.push_str(&format!("  in use: {u}\n"));
                }
                if let Some(r) = &h.release {
                    for c in &r.conditions {
                        s.push_str(&format!(
                            "  {}={} since {} ({}){}\n",
                            c.kind,
                            c.status,
                            c.last_transition_time,
                            c.reason,
                            if c.message.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", c.message)
                            }
                        ));
                    }
                }
                s
            })
            .collect()
    })
}

fn add(
    source: &Path,
    store: &Path,
    mirrors: Option<PathBuf>,
    attached: bool,
    cx: &Ctx,
) -> Result<()> {
    let Some(a) =
        imgmode_ibi::payload::registry::add_from(store, source, mirrors.as_deref(), attached)?
    else {
        crate::output::say(&format!(
            "{} carries no payload; nothing to import",
            source.display()
        ));
        return Ok(());
    };
    cx.print(&a, |a| {
        if a.already_held {
            return format!(
                "{} holds the payload {} already ({} image(s), available); nothing copied\n",
                store.display(),
                a.payload.id,
                a.payload.images.len()
            );
        }
        format!(
            "added payload {} ({} image(s)) to {}\n",
            a.payload.id,
            a.payload.images.len(),
            store.display()
        )
    })
}

fn remove(id: &str, store: &Path, users: &Users, mirrors: Option<PathBuf>) -> Result<()> {
    let p = imgmode_ibi::payload::store::remove(store, id, users)?;
    if let Some(conf) = mirrors {
        imgmode_ibi::payload::registry::write_mirrors(store, &conf)?;
    }
    crate::output::say(&format!(
        "removed payload {} ({} image(s)) from {}",
        p.id,
        p.images.len(),
        store.display()
    ));
    Ok(())
}

pub fn mirror(a: MirrorArgs, cx: &Ctx) -> Result<()> {
    let opts = a.opts()?;
    let steps = cx.steps();
    let out = imgmode_image::mirror::mirror(&opts, &steps)?;
    steps.finish();
    cx.print(&out, |o| {
        let mut s = String::new();
        for i in &o.images {
            s.push_str(&format!(
                "{} -> {} ({}, {} manifest(s))\n",
                i.source,
                i.name(),
                i.digest,
                i.manifests
            ));
        }
        s.push_str(&format!(
            "{}: {} blobs ({}), {} new ({})\n",
            o.dir.display(),
            o.blobs,
            human_size(o.bytes),
            o.new_blobs,
            human_size(o.new_bytes)
        ));
        s
    })
}

fn opt_out(root: &Path, store: &Path, users: &Users, cx: &Ctx) -> Result<()> {
    let done = imgmode_ibi::payload::optout::opt_out(root, store, users, &mut |args| {
        imgmode_support::cmd::Run::new("systemctl")
            .args(args)
            .output()
            .map(|_| ())
    })?;
    cx.print(&done, |d| {
        if d.payloads.is_empty() && d.removed.is_empty() {
            return "this host serves no payload; nothing to opt out of\n".to_string();
        }
        let mut s = format!(
            "opted out: the payload registry stopped, {} payload(s) deleted ({})\n",
            d.payloads.len(),
            d.payloads.join(", ")
        );
        for p in &d.removed {
            s.push_str(&format!("  removed {}\n", p.display()));
        }
        s
    })
}
