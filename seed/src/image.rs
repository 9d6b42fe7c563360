//! The seed OCI image: one uncompressed layer (`FROM scratch`; its files are compressed
//! tarballs already) holding the seed files at the root, the seed labels, written as canonical
//! JSON. Reading: labels and architecture come from the image config alone (no layer is
//! fetched); `inspect` reads the layer for the file list.

use crate::gates;
use crate::manifest::SeedClusterInfo;
use anyhow::{bail, Context, Result};
use imgmode_image::imgref::{self, UserImageRef};
use imgmode_image::oci::{canonical_json, put_blob, BlobWriter};
use imgmode_image::skopeo::{self, RegistryAuth};
use imgmode_image::Store;
use imgmode_support::io::HashingWriter;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// Write an OCI layout at `out` (which must not exist) holding `files` (names in `dir`) as one
/// layer, with `labels`. `links` are (name, target) hardlinks inside the layer. The manifest
/// digest.
pub fn write_layout(
    dir: &Path,
    files: &[String],
    links: &[(&str, &str)],
    labels: &BTreeMap<String, String>,
    architecture: &str,
    created: &str,
    out: &Path,
) -> Result<String> {
    std::fs::create_dir_all(out.join("blobs/sha256"))?;
    std::fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut b = tar::Builder::new(BlobWriter::new(out)?);
    b.mode(tar::HeaderMode::Deterministic);
    for f in files {
        let p = dir.join(f);
        let mut file =
            std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
        let meta = file.metadata()?;
        let mut h = tar::Header::new_gnu();
        h.set_size(meta.len());
        h.set_mode(if is_executable(&meta) { 0o755 } else { 0o644 });
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, f, &mut file)
            .with_context(|| format!("adding {f} to the seed layer"))?;
    }
    for (name, target) in links {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        h.set_mode(0o755);
        b.append_link(&mut h, name, target)?;
    }
    let (diff_id, size) = b.into_inner()?.finish()?;
    let config = json!({
        "architecture": architecture,
        "os": "linux",
        "created": created,
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "imgmode seed create"}],
    });
    let config_bytes = canonical_json(&config)?;
    let config_digest = put_blob(out, &config_bytes)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_bytes.len()},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": diff_id, "size": size}],
    });
    let manifest_bytes = canonical_json(&manifest)?;
    let manifest_digest = put_blob(out, &manifest_bytes)?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest_bytes.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
    });
    std::fs::write(out.join("index.json"), canonical_json(&index)?)?;
    Ok(manifest_digest)
}

fn is_executable(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode() & 0o111 != 0
}

/// Where a finished layout goes.
pub enum Output {
    /// A name in the local store.
    Local(String),
    /// A containers-transports(5) reference skopeo writes.
    Transport(String),
}

/// `PATH[:TAG]` of an `oci:` or `oci-archive:` reference.
fn path_and_tag(rest: &str) -> (PathBuf, Option<&str>) {
    match rest.rsplit_once(':') {
        Some((p, t)) => (PathBuf::from(p), Some(t)),
        None => (PathBuf::from(rest), None),
    }
}

/// Parse `--output` and check it can be written, before any work starts.
pub fn parse_output(arg: &str) -> Result<Output> {
    match imgref::parse(arg)? {
        UserImageRef::Local(name) => {
            Store::split_name(&name)?;
            Ok(Output::Local(name))
        }
        UserImageRef::Remote(r) => {
            let s = r.imgref.to_string();
            let checked = |p: PathBuf| -> Result<()> {
                let parent = p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                if !parent.is_dir() {
                    bail!(
                        "cannot write the seed to {arg}: {} is not a directory",
                        parent.display()
                    );
                }
                let probe = tempfile::tempfile_in(parent);
                if let Err(e) = probe {
                    bail!(
                        "cannot write the seed to {arg}: {} is not writable ({e})",
                        parent.display()
                    );
                }
                Ok(())
            };
            if let Some(rest) = s.strip_prefix("oci-archive:") {
                let (p, _) = path_and_tag(rest);
                if p.exists() {
                    bail!("{} exists; remove it or choose another output", p.display());
                }
                checked(p)?;
            } else if let Some(rest) = s.strip_prefix("oci:") {
                checked(path_and_tag(rest).0)?;
            }
            Ok(Output::Transport(s))
        }
    }
}

/// Publish the layout in `staged` (a directory made by [`Store::staging`] for local outputs).
pub fn publish(store: &Store, staged: tempfile::TempDir, out: &Output) -> Result<String> {
    match out {
        Output::Local(name) => {
            let p = store.publish(staged, name)?;
            Ok(format!("oci:{}", p.display()))
        }
        Output::Transport(r) => {
            let src = format!("oci:{}", staged.path().display());
            if let Some(rest) = r.strip_prefix("oci-archive:") {
                // written next to the destination, renamed when complete
                let (path, tag) = path_and_tag(rest);
                let tmp = path.with_file_name(format!(
                    ".{}.tmp",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ));
                let _ = std::fs::remove_file(&tmp);
                let dest = match tag {
                    Some(t) => format!("oci-archive:{}:{t}", tmp.display()),
                    None => format!("oci-archive:{}", tmp.display()),
                };
                let res = skopeo::Copy::new(&src, &dest).preserve_digests().run();
                if let Err(e) = res {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e).with_context(|| format!("writing {r}"));
                }
                std::fs::rename(&tmp, &path)?;
            } else {
                // --preserve-digests: the layer stays uncompressed (its tarballs are compressed
                // already) and the image keeps the digest seed create reports
                skopeo::Copy::new(&src, r)
                    .preserve_digests()
                    .run()
                    .with_context(|| format!("writing the seed image to {r}"))?;
            }
            Ok(r.clone())
        }
    }
}

/// Labels, architecture and the manifest's layers of any image, from its manifest and config
/// only.
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    pub reference: String,
    /// The sha256 of the manifest read (what a pull by digest fetches again, exactly).
    pub manifest_digest: String,
    pub labels: BTreeMap<String, String>,
    pub architecture: String,
    /// (media type, digest, size)
    pub layers: Vec<(String, String, u64)>,
}

/// Read [`Header`] without fetching a layer: an OCI layout (`oci:DIR[:TAG]`, a stored image)
/// in place, its manifest and config checked against their digests; any other transport with
/// `skopeo inspect --raw` and `--config`.
pub fn read_header(store: &Store, arg: &str, auth: &RegistryAuth) -> Result<Header> {
    let resolved = store.resolve(arg)?;
    // a layout is read here: two skopeo processes cost seconds in an installation ISO's
    // live system (TCG), for two small files
    if let Some(image) = imgmode_image::oci::open_layout(arg, &resolved.imgref)
        .with_context(|| format!("reading the seed image {arg}"))?
    {
        let labels = image.labels();
        return Ok(Header {
            reference: resolved.imgref.to_string(),
            manifest_digest: image.manifest_digest,
            labels,
            architecture: image.config.architecture().to_string(),
            layers: image
                .manifest
                .layers()
                .iter()
                .map(|l| (l.media_type().to_string(), l.digest().to_string(), l.size()))
                .collect(),
        });
    }
    inspect_header(resolved.imgref.to_string(), arg, auth)
}

/// [`Header`] of the image `r` (a transport reference) through skopeo.
fn inspect_header(r: String, arg: &str, auth: &RegistryAuth) -> Result<Header> {
    let inspect = |extra: &str| -> Result<serde_json::Value> {
        let out = match extra {
            "--raw" => skopeo::inspect_raw(&r, auth),
            _ => skopeo::inspect_config(&r, auth),
        }
        .with_context(|| format!("reading the seed image {arg}"))?;
        serde_json::from_slice(&out)
            .with_context(|| format!("parsing skopeo inspect {extra} of {arg}"))
    };
    let raw =
        skopeo::inspect_raw(&r, auth).with_context(|| format!("reading the seed image {arg}"))?;
    let manifest_digest = imgmode_image::digest::sha256(&raw);
    let manifest: serde_json::Value = serde_json::from_slice(&raw)
        .with_context(|| format!("parsing skopeo inspect --raw of {arg}"))?;
    if manifest.get("manifests").is_some() {
        bail!("{arg} is a manifest list; name the seed image for one architecture (by digest)");
    }
    let config = inspect("--config")?;
    let labels = config["config"]["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let layers = manifest["layers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| {
                    (
                        l["mediaType"].as_str().unwrap_or_default().to_string(),
                        l["digest"].as_str().unwrap_or_default().to_string(),
                        l["size"].as_u64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Header {
        reference: r,
        manifest_digest,
        labels,
        architecture: config["architecture"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        layers,
    })
}

/// One file of a seed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SeedFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// For a hardlink entry: the file it names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_to: Option<String>,
}

/// `imgmode seed inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub reference: String,
    pub format_version: u32,
    pub labels: BTreeMap<String, String>,
    pub architecture: String,
    pub cluster_info: SeedClusterInfo,
    pub files: Vec<SeedFile>,
}

/// The files of a seed layer stream.
pub fn list_layer(r: impl Read) -> Result<Vec<SeedFile>> {
    use imgmode_image::tarstream::{Kind, TarReader};
    let mut t = TarReader::new(r);
    let mut out = vec![];
    while let Some(e) = t.next_entry()? {
        let name = String::from_utf8_lossy(&e.path)
            .trim_start_matches("./")
            .to_string();
        match e.kind {
            Some(Kind::HardLink) => out.push(SeedFile {
                name,
                size: 0,
                sha256: String::new(),
                link_to: Some(String::from_utf8_lossy(&e.link).into_owned()),
            }),
            Some(Kind::File) => {
                let mut h = HashingWriter::new(std::io::sink());
                std::io::copy(&mut t.data(), &mut h)?;
                let (sha256, size) = h.finish()?;
                out.push(SeedFile {
                    name,
                    size,
                    sha256,
                    link_to: None,
                });
            }
            _ => {}
        }
    }
    // to the end of the stream, where a verifying blob reader checks the layer's digest
    std::io::copy(&mut t.into_inner(), &mut std::io::sink()).context("reading the seed's layer")?;
    for i in 0..out.len() {
        if let Some(t) = out[i].link_to.clone() {
            if let Some(f) = out.iter().find(|f| f.name == t && f.link_to.is_none()) {
                let (size, sha) = (f.size, f.sha256.clone());
                out[i].size = size;
                out[i].sha256 = sha;
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Read everything `seed inspect` shows (the layer is fetched and read once).
pub fn inspect(store: &Store, arg: &str) -> Result<Inspection> {
    let h = read_header(store, arg, &RegistryAuth::default())?;
    let (format_version, cluster_info) = gates::read_labels(&h.labels)?;
    if h.layers.len() != 1 {
        bail!(
            "{arg} has {} layers; a seed image has exactly one",
            h.layers.len()
        );
    }
    let opened = imgmode_image::oci::open_image(store, arg)?;
    let files = list_layer(opened.image.open_layer(0)?)?;
    Ok(Inspection {
        reference: h.reference,
        format_version,
        labels: h.labels,
        architecture: h.architecture,
        cluster_info,
        files,
    })
}

/// The seed's missing required files, by the inspection's list (empty when complete).
pub fn missing_files(files: &[SeedFile]) -> Vec<String> {
    let has = |n: &str| files.iter().any(|f| f.name == n);
    let mut missing: Vec<String> = crate::FIXED_FILES
        .iter()
        .filter(|n| !has(n))
        .map(|n| n.to_string())
        .collect();
    for stem in crate::TARBALLS {
        if !crate::archive::Compression::file_names(stem)
            .iter()
            .any(|n| has(n))
        {
            missing.push(format!("{stem}.tgz"));
        }
    }
    if !files
        .iter()
        .any(|f| f.name.starts_with("ostree-") && f.name.ends_with(".origin"))
    {
        missing.push("ostree-<deployment>.origin".into());
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_layout_lists_its_files_and_links() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("manifest.json"), "{}").unwrap();
        std::fs::write(src.join("imgmode"), "#!/bin/sh\n").unwrap();
        let labels = BTreeMap::from([("a".to_string(), "b".to_string())]);
        let write = |out: &Path| {
            write_layout(
                &src,
                &["imgmode".into(), "manifest.json".into()],
                &[("lca-cli", "imgmode")],
                &labels,
                "amd64",
                "2026-01-01T00:00:00Z",
                out,
            )
            .unwrap()
        };
        let out = d.path().join("oci");
        let digest = write(&out);
        let img = imgmode_image::store::OciImage::open(&out).unwrap();
        assert_eq!(img.labels(), labels);
        assert_eq!(img.manifest.layers().len(), 1);
        let files = list_layer(img.open_layer(0).unwrap()).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, vec!["imgmode", "lca-cli", "manifest.json"]);
        assert_eq!(files[1].sha256, files[0].sha256);
        assert_eq!(files[2].size, 2);
        // the same content gives the same digest
        assert_eq!(digest, write(&d.path().join("oci2")));
        let m = missing_files(&files);
        assert!(m.contains(&"ostree.tgz".to_string()) && m.contains(&"etc.deletions".to_string()));
    }

    /// A layout's header read in place is the one skopeo's two inspections give.
    #[test]
    fn a_layouts_header_read_in_place_is_skopeos() {
        use imgmode_testkit::Need;
        imgmode_testkit::require!(Need::Tool("skopeo"));
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("manifest.json"), "{}").unwrap();
        let labels = BTreeMap::from([
            (
                "com.openshift.lifecycle-agent.seed_format_version".to_string(),
                "3".to_string(),
            ),
            ("a".to_string(), "b".to_string()),
        ]);
        let out = d.path().join("oci");
        let digest = write_layout(
            &src,
            &["manifest.json".into()],
            &[],
            &labels,
            "amd64",
            "2026-01-01T00:00:00Z",
            &out,
        )
        .unwrap();
        let store = Store::new(d.path().join("state"));
        let arg = format!("oci:{}", out.display());
        let auth = RegistryAuth::default();
        let native = read_header(&store, &arg, &auth).unwrap();
        let r = store.resolve(&arg).unwrap().imgref.to_string();
        let skopeo = inspect_header(r, &arg, &auth).unwrap();
        assert_eq!(native.manifest_digest, digest);
        assert_eq!(native.labels, labels);
        assert_eq!(
            serde_json::to_value(&native).unwrap(),
            serde_json::to_value(&skopeo).unwrap()
        );
        // a layout that is not one is refused by name, as skopeo would refuse it
        std::fs::remove_file(out.join("index.json")).unwrap();
        let e = format!("{:#}", read_header(&store, &arg, &auth).unwrap_err());
        assert!(e.contains("no index.json"), "{e}");
    }
}
