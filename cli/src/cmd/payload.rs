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
        PayloadCmd::Pull {
            registry,
            ids,
            store,
            mirrors,
            authfile,
            pull_secret,
            cert_dir,
        } => {
            let conf = mirrors.for_store(&store);
            let from = Peer {
                registry: &registry,
                authfile,
                pull_secret: &pull_secret,
                cert_dir,
            };
            pull(&from, &ids, &store, conf.as_deref(), cx)
        }
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

/// The node `payload pull` copies from, and how it is reached.
struct Peer<'a> {
    registry: &'a str,
    authfile: Option<PathBuf>,
    pull_secret: &'a Path,
    cert_dir: Option<PathBuf>,
}

fn pull(from: &Peer, ids: &[String], store: &Path, conf: Option<&Path>, cx: &Ctx) -> Result<()> {
    use imgmode_ibi::payload::peer;
    let (_, dial) = imgmode_ibi::payload::serving::registry_address(from.registry)?;
    for id in ids {
        imgmode_ibi::payload::record_image::record_tag(id)
            .with_context(|| format!("--id {id}: not a payload ID"))?;
    }
    // the work directory sits next to the store (same filesystem: the blobs are linked in)
    let parent = store.parent().unwrap_or(Path::new("/"));
    let work = imgmode_support::fs::WorkDir::new(parent, ".imgmode-payload-pull-")?;
    let authfile = match &from.authfile {
        Some(f) => f.clone(),
        None => {
            let secret = std::fs::read_to_string(from.pull_secret).with_context(|| {
                format!(
                    "reading the pull secret {} (give --authfile, or --pull-secret with the cluster's pull secret)",
                    from.pull_secret.display()
                )
            })?;
            // 0600 inside the work directory (0700), removed with it
            let f = work.path().join("auth.json");
            imgmode_support::fs::write_private(&f, &peer::peer_auth(&secret, &dial)?)?;
            f
        }
    };
    let auth = imgmode_image::skopeo::RegistryAuth {
        authfile: Some(authfile),
        cert_dir: from.cert_dir.clone(),
        tls_verify: None,
    };
    let steps = cx.steps();
    let pulled = peer::pull(store, &dial, ids, &auth, work.path(), &steps)?;
    steps.finish();
    if let (Some(conf), true) = (conf, pulled.iter().any(|p| !p.added.already_held)) {
        imgmode_ibi::payload::registry::write_mirrors(store, conf)?;
    }
    cx.print(&pulled, |pulled| {
        pulled
            .iter()
            .map(|p| {
                let a = &p.added;
                if a.already_held {
                    format!(
                        "{} holds the payload {} already (available); nothing copied\n",
                        store.display(),
                        a.payload.id
                    )
                } else {
                    format!(
                        "copied payload {} ({} image(s)) from {} into {}\n",
                        a.payload.id,
                        a.payload.images.len(),
                        p.from,
                        store.display()
                    )
                }
            })
            .collect()
    })
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
