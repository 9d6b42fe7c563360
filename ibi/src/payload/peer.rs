//! Payloads copied between control-plane nodes: each node holds its own copy and serves it on
//! port 22625, as the enhancement's nodes do, and a payload imported on one node (an attached
//! ISO) is copied to the others from its registry, by digest.
//!
//! - A store serves each payload's record as an image of its own
//!   ([`crate::payload::record_image`]), so another node learns what a payload holds through
//!   the same registry, credentials and TLS as its images.
//! - [`pull`]: `imgmode payload pull --registry HOST[:PORT]`: every payload the node at HOST
//!   serves (or the ones named) that this store does not hold yet is read from its record
//!   image, its images mirrored by digest into a work directory next to the store, the record
//!   checked against what arrived, and added through [`crate::payload::store`]'s add (verified
//!   again, recorded in the `InternalReleaseImage`, blobs hard-linked from the work directory).
//! - [`peer_auth`]: the auth file for the peer: a control-plane node's pull secret holds the
//!   payload registry's credentials for `localhost:22625`, which every node installed with it
//!   accepts.

use crate::payload::record_image::{record_tag, RECORDS_REPO};
use crate::payload::registry::HOST;
use crate::payload::release;
use crate::payload::store::{self, Added};
use anyhow::{bail, ensure, Context, Result};
use imgmode_image::mirror::{self, MirrorImage, MirrorOpts, Payload, PAYLOAD_RECORD};
use imgmode_image::skopeo::RegistryAuth;
use imgmode_support::progress::Steps;
use std::io::Read;
use std::path::Path;

/// A record is a list of image references: far below this.
const RECORD_MAX: u64 = 16 << 20;

/// The auth file (containers-auth.json) for pulling from `dial` with the pull secret
/// `pull_secret`: its own auth for `dial`, else the one it holds for [`HOST`] (the payload
/// registry's credentials, the same on every node installed with this pull secret).
pub fn peer_auth(pull_secret: &str, dial: &str) -> Result<String> {
    let v: serde_json::Value =
        serde_json::from_str(pull_secret).context("the pull secret is not JSON")?;
    let auth = v["auths"][dial]
        .get("auth")
        .or_else(|| v["auths"][HOST].get("auth"))
        .and_then(|a| a.as_str())
        .with_context(|| {
            format!("the pull secret holds no auth for {dial} or {HOST}: give --authfile with the credentials of the payload registry at {dial}")
        })?;
    Ok(serde_json::json!({ "auths": { dial: { "auth": auth } } }).to_string())
}

/// What [`pull`] did with one payload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pulled {
    #[serde(flatten)]
    pub added: Added,
    /// The record image it was read from.
    pub from: String,
}

/// Copy into `store` every payload the payload registry at `dial` serves, or those of `ids`,
/// that the store does not hold as available yet (see the module's documentation). `work`
/// is a directory on the store's filesystem for the images on their way in.
pub fn pull(
    store: &Path,
    dial: &str,
    ids: &[String],
    auth: &RegistryAuth,
    work: &Path,
    steps: &Steps,
) -> Result<Vec<Pulled>> {
    let ids = if ids.is_empty() {
        served_ids(dial, auth)?
    } else {
        ids.to_vec()
    };
    let mut out = vec![];
    for id in ids {
        let from = format!("docker://{dial}/{RECORDS_REPO}:{}", record_tag(&id)?);
        let held = store::held(store)?.into_iter().find(|p| p.id == id);
        let available = held.is_some()
            && release::InternalReleaseImage::read(store)?.is(&id, release::AVAILABLE);
        if let (Some(payload), true) = (held, available) {
            out.push(Pulled {
                added: Added {
                    payload,
                    already_held: true,
                },
                from,
            });
            continue;
        }
        steps.step(&format!("reading payload {id} from {dial}"));
        let dir = work.join(record_tag(&id)?);
        let claimed = read_record(&from, &id, auth, &dir.join("record"))?;
        let added = fetch(
            store,
            dial,
            &claimed,
            auth,
            &dir.join("mirror"),
            &from,
            steps,
        );
        let _ = imgmode_support::fs::remove_tree(&dir);
        out.push(Pulled {
            added: added?,
            from,
        });
    }
    Ok(out)
}

/// The payload IDs the registry at `dial` serves records of.
fn served_ids(dial: &str, auth: &RegistryAuth) -> Result<Vec<String>> {
    let tags = imgmode_image::skopeo::list_tags(&format!("docker://{dial}/{RECORDS_REPO}"), auth)
        .with_context(|| {
            format!("listing the payloads the registry at {dial} serves ({RECORDS_REPO}); a node whose store holds none, or one written before payloads were served to other nodes, serves no such repository until its next payload add or remove")
        })?;
    let ids: Vec<String> = tags
        .iter()
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|t| format!("sha256:{t}"))
        .collect();
    ensure!(
        !ids.is_empty(),
        "the registry at {dial} serves no payload record ({RECORDS_REPO} has no tags)"
    );
    Ok(ids)
}

/// The record behind `from`, which must describe the payload `id` (its ID recomputed).
fn read_record(from: &str, id: &str, auth: &RegistryAuth, dir: &Path) -> Result<Payload> {
    let _ = imgmode_support::fs::remove_tree(dir);
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    imgmode_image::skopeo::Copy::new(from, format!("dir:{}", dir.display()))
        .src_auth(auth)
        .preserve_digests()
        .run()
        .with_context(|| format!("reading the record image {from}"))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)
            .with_context(|| format!("{from}: the manifest is not JSON"))?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let [layer] = layers.as_slice() else {
        bail!("{from} is not a payload record image (it has not exactly one layer)");
    };
    let digest = layer["digest"].as_str().unwrap_or_default();
    let hex = imgmode_image::digest::sha256_hex(digest)
        .with_context(|| format!("{from}: its layer's digest {digest:?}"))?;
    let mut archive = tar::Archive::new(std::fs::File::open(dir.join(hex))?);
    let mut record = None;
    for e in archive.entries()? {
        let e = e?;
        if e.path()?.as_os_str() == PAYLOAD_RECORD {
            ensure!(e.size() <= RECORD_MAX, "{from}: its record is too large");
            let mut text = vec![];
            e.take(RECORD_MAX).read_to_end(&mut text)?;
            record = Some(text);
        }
    }
    let text = record.with_context(|| format!("{from} holds no {PAYLOAD_RECORD}"))?;
    let p: Payload = serde_json::from_slice(&text)
        .with_context(|| format!("{from}: its {PAYLOAD_RECORD} is malformed"))?;
    let computed = mirror::payload_id(&p.images)?;
    ensure!(
        p.id == id && computed == id,
        "{from} describes the payload {} (its images sum to {computed}), not {id}; the node serves a damaged record",
        p.id
    );
    Ok(p)
}

/// Mirror `claimed`'s images from `dial` by digest into `dir`, check them against the record,
/// and add them to `store` as the payload `claimed` (its images' own sources kept).
fn fetch(
    store: &Path,
    dial: &str,
    claimed: &Payload,
    auth: &RegistryAuth,
    dir: &Path,
    from: &str,
    steps: &Steps,
) -> Result<Added> {
    let opts = MirrorOpts {
        images: claimed
            .images
            .iter()
            .map(|i| MirrorImage {
                source: format!("docker://{dial}/{}@{}", i.repo, i.digest),
                repo: i.repo.clone(),
                tag: i.tag.clone(),
            })
            .collect(),
        dir: dir.to_path_buf(),
        auth: auth.clone(),
    };
    store::record_importing(
        store,
        claimed,
        from,
        &format!(
            "copying {} image(s) from {dial} by digest",
            claimed.images.len()
        ),
    )?;
    let got = match mirror::mirror(&opts, steps) {
        Ok(o) => o,
        Err(e) => {
            store::record_failure(store, claimed, from, &format!("{e:#}"))?;
            return Err(e.context(format!("copying the payload {} from {dial}", claimed.id)));
        }
    };
    for i in &claimed.images {
        ensure!(
            got.images
                .iter()
                .any(|g| g.repo == i.repo && g.tag == i.tag && g.digest == i.digest),
            "{dial} served {}@{} as something else; the payload {} was not added",
            i.repo,
            i.digest,
            claimed.id
        );
    }
    // the record as the payload's first node holds it: the images' own sources (the mirrors
    // and imageDigestSources name them), checked against the blobs by add's verify
    mirror::write_json(&dir.join(PAYLOAD_RECORD), claimed)?;
    store::add_staged(store, dir, from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_is_reached_with_the_payload_registrys_credentials() {
        let secret = r#"{"auths":{"localhost:22625":{"auth":"cGF5bG9hZDpzM2NyZXQ="},"quay.io":{"auth":"eDp5"}}}"#;
        let a: serde_json::Value =
            serde_json::from_str(&peer_auth(secret, "10.0.0.1:22625").unwrap()).unwrap();
        assert_eq!(
            a,
            serde_json::json!({"auths":{"10.0.0.1:22625":{"auth":"cGF5bG9hZDpzM2NyZXQ="}}}),
            "only the peer's entry, and nothing else of the pull secret"
        );
        let own = r#"{"auths":{"10.0.0.1:22625":{"auth":"b3duOnB3"},"localhost:22625":{"auth":"cGF5bG9hZDpzM2NyZXQ="}}}"#;
        assert!(peer_auth(own, "10.0.0.1:22625")
            .unwrap()
            .contains("b3duOnB3"));
        let e = peer_auth(r#"{"auths":{}}"#, "10.0.0.1:22625").unwrap_err();
        assert!(e.to_string().contains("--authfile"), "{e}");
    }
}
