//! Each payload's record served as an image of its own, `imgmode-payloads:<hex of the payload
//! ID>` (FROM scratch, one uncompressed layer holding `imgmode-payload.json`), so another node
//! learns what a payload holds through the same registry, credentials and TLS as its images
//! ([`crate::payload::peer`]). [`crate::payload::store`] writes them with the union record,
//! so `payload verify` checks them like any image, and `payload remove` drops them.

use anyhow::Result;
use imgmode_image::mirror::{self, Mirrored, Payload, PAYLOAD_RECORD};
use std::path::Path;

/// The repository of the record images.
pub const RECORDS_REPO: &str = "imgmode-payloads";
/// The `source` of a record image in the union record (no registry made it).
const RECORD_SOURCE: &str = "imgmode-payload-record";
/// The annotation and label that carry the payload's ID.
const ID_KEY: &str = "io.imgmode.payload.id";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// Whether `m` is a record image (not one of a payload's own images).
pub fn is_record_image(m: &Mirrored) -> bool {
    m.source.starts_with(RECORD_SOURCE)
}

/// The tag of `id`'s record image: its hex.
pub fn record_tag(id: &str) -> Result<String> {
    Ok(imgmode_image::digest::sha256_hex(id)?.to_string())
}

/// Write `p`'s record image into the blob store under `v2` (blobs already there are left) and
/// name it; the repository links are the caller's.
pub fn record_image(v2: &Path, p: &Payload) -> Result<Mirrored> {
    let layer = record_tar(&serde_json::to_vec_pretty(p)?)?;
    let layer_d = put_blob(v2, &layer)?;
    let mut config = serde_json::json!({
        "os": "linux",
        "config": { "Labels": { ID_KEY: p.id } },
        "rootfs": { "type": "layers", "diff_ids": [layer_d] },
    });
    if let Some(a) = p.architectures.first() {
        config["architecture"] = a.clone().into();
    }
    let config = serde_json::to_vec(&config)?;
    let config_d = put_blob(v2, &config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": { "mediaType": CONFIG_TYPE, "digest": config_d, "size": config.len() },
        "layers": [{ "mediaType": LAYER_TYPE, "digest": layer_d, "size": layer.len() }],
        "annotations": { ID_KEY: p.id },
    }))?;
    Ok(Mirrored {
        source: format!("{RECORD_SOURCE}:{}", p.id),
        repo: RECORDS_REPO.to_string(),
        tag: Some(record_tag(&p.id)?),
        digest: put_blob(v2, &manifest)?,
        manifests: 1,
    })
}

/// An uncompressed tar of `imgmode-payload.json` alone, the same bytes for the same record.
fn record_tar(record: &[u8]) -> Result<Vec<u8>> {
    let mut h = tar::Header::new_ustar();
    h.set_path(PAYLOAD_RECORD)?;
    h.set_size(record.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, record)?;
    Ok(b.into_inner()?)
}

/// `bytes` as a blob under `v2` (through a temporary name; one that hashes right is kept).
fn put_blob(v2: &Path, bytes: &[u8]) -> Result<String> {
    use sha2::Digest;
    let d = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
    let path = mirror::blob_path(v2, &d)?;
    let held = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file())
        && imgmode_support::io::hash_file(&path).is_ok_and(|(got, _)| got == d);
    if !held {
        imgmode_support::fs::write_atomic(&path, bytes, 0o644)?;
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn payload() -> Payload {
        let images = vec![Mirrored {
            source: "docker://quay.io/org/app:1.0".into(),
            repo: "org/app".into(),
            tag: Some("1.0".into()),
            digest: format!("sha256:{}", "a".repeat(64)),
            manifests: 1,
        }];
        Payload {
            id: mirror::payload_id(&images).unwrap(),
            images,
            architectures: vec!["amd64".into()],
        }
    }

    #[test]
    fn a_record_image_is_the_same_image_for_the_same_record() {
        let td = tempfile::tempdir().unwrap();
        let (a, b) = (td.path().join("a"), td.path().join("b"));
        let p = payload();
        let (ia, ib) = (record_image(&a, &p).unwrap(), record_image(&b, &p).unwrap());
        assert_eq!(ia, ib);
        assert!(is_record_image(&ia));
        assert_eq!(ia.tag.as_deref(), Some(&p.id["sha256:".len()..]));
        // the layer holds the record, byte for byte
        let raw = std::fs::read(mirror::blob_path(&a, &ia.digest).unwrap()).unwrap();
        let refs = mirror::parse_refs(&raw).unwrap();
        assert_eq!(refs.blobs.len(), 2, "a config and one layer");
        let layer = mirror::blob_path(&a, &refs.blobs[1].digest).unwrap();
        let mut ar = tar::Archive::new(std::fs::File::open(layer).unwrap());
        let mut e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some(PAYLOAD_RECORD));
        let mut text = String::new();
        e.read_to_string(&mut text).unwrap();
        assert_eq!(serde_json::from_str::<Payload>(&text).unwrap(), p);
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(mirror::blob_path(&a, &refs.blobs[0].digest).unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            config["architecture"], "amd64",
            "it adds no architecture the payload lacks"
        );
    }
}
