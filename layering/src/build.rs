//! `imgmode build`: a Containerfile built by podman (`--isolation chroot`), linted, and stored
//! in the local OCI store.
//!
//! Base images named in `FROM` that live in the local store are copied into containers-storage
//! first (as `localhost/NAME:TAG`, skipped when podman has that image ID already). After the
//! build, the mounted image is linted while its new layers are read back from
//! containers-storage uncompressed; then it is re-assembled in the store: layers whose diff ID matches a layer of a local base image reuse that base's
//! compressed blob byte for byte, so a node that runs the base fetches only the new layers;
//! new layers are gzip-compressed. The image config (and so every diff ID) is kept unchanged.

use crate::lint::LintReport;
use crate::tree::Tree;
use anyhow::{anyhow, bail, Context, Result};
pub use imgmode_image::oci::canonical_json;
use imgmode_image::oci::{put_blob, BlobWriter};
use imgmode_image::skopeo::{self, RegistryAuth};
use imgmode_image::store::OciImage;
use imgmode_support::cmd::{require_tools, Run};
use ostree_ext::container::ImageReference;
use ostree_ext::oci_spec::image::{
    DescriptorBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use {imgmode_image::Store, imgmode_support::Steps};

#[derive(Debug, Clone)]
pub struct BuildOpts {
    pub containerfile: PathBuf,
    pub context: PathBuf,
    /// Local store name (`NAME[:TAG]`) of the result.
    pub tag: String,
    /// `KEY=VALUE` build arguments.
    pub build_args: Vec<String>,
    pub store: Store,
    /// Skip the lints (they still run, but fatal results only warn).
    pub no_lint_fail: bool,
    /// Do not use podman's layer cache.
    pub no_cache: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildOutcome {
    pub name: String,
    pub reference: String,
    pub digest: String,
    pub labels: BTreeMap<String, String>,
    /// Layers shared byte for byte with a local base image.
    pub reused_layers: usize,
    /// Layers the build added.
    pub new_layers: usize,
    pub lint: LintReport,
}

/// One `FROM` of a Containerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    pub image: String,
    pub stage: Option<String>,
}

/// The `FROM` lines, with `ARG` defaults and build arguments substituted and flags skipped.
pub fn parse_froms(text: &str, build_args: &[String]) -> Vec<From> {
    let mut args: HashMap<String, String> = HashMap::new();
    // Join continuation lines first.
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    let given: HashMap<&str, &str> = build_args
        .iter()
        .filter_map(|a| a.split_once('='))
        .collect();
    let mut out = Vec::new();
    for line in joined.lines() {
        let line = line.trim();
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if first.eq_ignore_ascii_case("ARG") {
            for w in words {
                let (k, v) = w.split_once('=').unwrap_or((w, ""));
                let v = given.get(k).copied().unwrap_or(v).trim_matches('"');
                args.insert(k.to_string(), v.to_string());
            }
        } else if first.eq_ignore_ascii_case("FROM") {
            let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
            let Some(image) = rest.first() else { continue };
            let mut image = image.to_string();
            for (k, v) in &args {
                image = image
                    .replace(&format!("${{{k}}}"), v)
                    .replace(&format!("${k}"), v);
            }
            let stage = match rest.get(1..3) {
                Some([kw, name]) if kw.eq_ignore_ascii_case("AS") => Some(name.to_string()),
                _ => None,
            };
            out.push(From { image, stage });
        }
    }
    out
}

/// The containers-storage name of a local store name.
pub fn containers_storage_name(name: &str) -> Result<String> {
    let (repo, tag) = Store::split_name(name)?;
    Ok(format!("localhost/{repo}:{tag}"))
}

/// The image ID (config digest, hex) podman has under `reference`.
fn podman_image_id(reference: &str) -> Option<String> {
    Run::new("podman")
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .read()
        .ok()
        .map(|s| s.trim().to_string())
}

/// Make the local store image `name` (opened as `image`) available to podman as
/// `localhost/NAME:TAG`.
pub fn ensure_in_containers_storage(name: &str, image: &OciImage) -> Result<String> {
    let cs = containers_storage_name(name)?;
    // The image ID is the config digest, which a copy keeps (the manifest may be rewritten).
    let id = image.manifest.config().digest().digest().to_string();
    if podman_image_id(&cs).as_deref() == Some(id.as_str()) {
        return Ok(cs);
    }
    skopeo::Copy::new(
        format!("oci:{}", image.dir.display()),
        format!("containers-storage:{cs}"),
    )
    .run()
    .with_context(|| format!("copying {name} into containers-storage for podman"))?;
    Ok(cs)
}

/// Copy `src` to `dest` with skopeo (`imgmode push`, MachineOSBuild pushes), every blob byte
/// for byte when `preserve_digests`. Returns the manifest digest at the destination, which is
/// also written to `digestfile` when given.
pub fn push(
    src: &ImageReference,
    dest: &ImageReference,
    tls_verify: bool,
    authfile: Option<&Path>,
    digestfile: Option<&Path>,
    preserve_digests: bool,
) -> Result<String> {
    let td = tempfile::tempdir()?;
    let df = digestfile.map_or_else(|| td.path().join("digest"), Path::to_path_buf);
    let auth = RegistryAuth {
        authfile: authfile.map(Path::to_path_buf),
        tls_verify: Some(tls_verify),
        ..Default::default()
    };
    let copy = skopeo::Copy::new(src.to_string(), dest.to_string())
        .dest_auth(&auth)
        .digestfile(&df);
    let copy = if preserve_digests {
        copy.preserve_digests()
    } else {
        copy
    };
    copy.run()
        .with_context(|| format!("pushing {src} to {dest}"))?;
    Ok(std::fs::read_to_string(&df)
        .with_context(|| format!("reading {}", df.display()))?
        .trim()
        .to_string())
}

/// Check what can be checked before podman runs.
pub fn preflight(opts: &BuildOpts) -> Result<String> {
    let text = std::fs::read_to_string(&opts.containerfile).with_context(|| {
        format!(
            "reading the Containerfile {}; pass -f PATH",
            opts.containerfile.display()
        )
    })?;
    if !opts.context.is_dir() {
        bail!(
            "the build context {} is not a directory",
            opts.context.display()
        );
    }
    Store::split_name(&opts.tag)?;
    for a in &opts.build_args {
        if !a.contains('=') {
            bail!("--build-arg {a:?} is not KEY=VALUE");
        }
        if a.contains(char::is_control) {
            bail!(
                "--build-arg {} holds a control character; a build argument is one line",
                imgmode_support::validate::shown(a)
            );
        }
    }
    require_tools(&["podman", "skopeo"])?;
    Ok(text)
}

/// Build, lint and store.
pub fn build(opts: &BuildOpts, steps: &Steps) -> Result<BuildOutcome> {
    let text = preflight(opts)?;
    let froms = parse_froms(&text, &opts.build_args);
    if froms.is_empty() {
        bail!(
            "{} has no FROM line; start from a bootable image, e.g. FROM imgmode-base",
            opts.containerfile.display()
        );
    }
    let stages: Vec<&str> = froms.iter().filter_map(|f| f.stage.as_deref()).collect();
    // Local store images named in FROM: handed to podman, and their layers reused below.
    let mut bases = Vec::new();
    for f in &froms {
        let name = f.image.strip_prefix("localhost/").unwrap_or(&f.image);
        if stages.contains(&name) || !imgmode_image::imgref::is_local_name(name) {
            continue;
        }
        if opts.store.contains(name)? {
            steps.step(&format!("making {name} available to podman"));
            let image = OciImage::open(&opts.store.image_dir(name)?)?;
            ensure_in_containers_storage(name, &image)?;
            bases.push(image);
        }
    }

    steps.step("podman build");
    let cs = containers_storage_name(&opts.tag)?;
    // the image this build replaces under the tag (dropped once the tag has moved on)
    let previous = image_id(&cs);
    let mut cmd = Run::new("podman")
        .args(["build", "--isolation", "chroot", "--layers", "-f"])
        .arg(&opts.containerfile)
        .args(["-t", &cs]);
    for a in &opts.build_args {
        cmd = cmd.args(["--build-arg", a]);
    }
    if opts.no_cache {
        cmd = cmd.arg("--no-cache");
    }
    cmd.arg(&opts.context)
        .stdout_to_stderr()
        .run()
        .map_err(|e| {
            anyhow!(
                "{e}\nthe Containerfile {} did not build; podman's messages above say where",
                opts.containerfile.display()
            )
        })?;

    steps.step("linting and storing");
    // Reading the image back out of containers-storage and walking its mounted tree are
    // independent: do both at once.
    let (exported, tree) = std::thread::scope(|sc| {
        let export = sc.spawn(|| export_raw(&opts.store, &cs, &bases));
        let tree = mounted_tree(&cs);
        let exported = export
            .join()
            .unwrap_or_else(|_| Err(anyhow!("exporting {cs} panicked")));
        (exported, tree)
    });
    let (raw_dir, built, tree) = match (exported, tree) {
        (Ok((d, b)), Ok(t)) => (d, b, t),
        (Err(e), _) | (_, Err(e)) => {
            remove_tag(&cs);
            return Err(e);
        }
    };
    let report = crate::lint::lint(&cs, &tree, &built.labels());
    if let Some(err) = report.error() {
        if !opts.no_lint_fail {
            remove_tag(&cs);
            return Err(err.context(format!(
                "the image built from {} is not a bootable image; nothing was stored",
                opts.containerfile.display()
            )));
        }
    }
    if let Some(old) = previous.filter(|old| image_id(&cs).as_ref() != Some(old)) {
        // untagged now; podman refuses (and we leave it) if a container or image still uses it
        let _ = Run::new("podman").args(["rmi", &old]).output();
    }
    let (digest, reused, new) = assemble(&opts.store, &cs, &opts.tag, &bases, raw_dir, &built)?;
    let stored = opts.store.inspect(&opts.tag)?;
    debug_assert_eq!(stored.digest, digest);
    Ok(BuildOutcome {
        name: opts.tag.clone(),
        reference: stored.reference,
        digest,
        labels: stored.labels,
        reused_layers: reused,
        new_layers: new,
        lint: report,
    })
}

/// The ID of the image `name` in containers-storage, if there is one.
fn image_id(name: &str) -> Option<String> {
    Run::new("podman")
        .args(["image", "inspect", "--format", "{{.Id}}", name])
        .read()
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn remove_tag(cs: &str) {
    let _ = Run::new("podman").args(["rmi", "--force", cs]).output();
}

/// The file tree of an image in containers-storage, through `podman image mount`.
pub fn mounted_tree(cs: &str) -> Result<Tree> {
    let mnt = Run::new("podman")
        .args(["image", "mount", cs])
        .read()
        .with_context(|| format!("mounting {cs} to lint it"))?;
    let mnt = PathBuf::from(mnt.trim());
    let tree = Tree::from_dir(&mnt, false);
    let _ = Run::new("podman").args(["image", "unmount", cs]).output();
    tree
}

/// Copy `cs` out of containers-storage into a staging OCI layout, uncompressed, without the
/// layers `bases` already have.
fn export_raw(
    store: &Store,
    cs: &str,
    bases: &[OciImage],
) -> Result<(tempfile::TempDir, OciImage)> {
    let raw_dir = store.staging()?;
    let raw = raw_dir.path().join("oci");
    // Layers the bases already have need not be read out of containers-storage (for a bootable
    // base that is hundreds of MB): containers-storage offers each layer by its diff ID, and
    // an OCI destination that already holds a blob of that digest skips it. Empty placeholders
    // stand in for those blobs; they are never read (such layers take the base's compressed
    // blob below) and are deleted with the staging directory.
    std::fs::create_dir_all(raw.join("blobs/sha256"))?;
    for b in bases {
        for d in b.config.rootfs().diff_ids() {
            if let Some(hex) = d.strip_prefix("sha256:") {
                if hex.len() == 64 && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    std::fs::write(raw.join("blobs/sha256").join(hex), b"")?;
                }
            }
        }
    }
    skopeo::Copy::new(
        format!("containers-storage:{cs}"),
        format!("oci:{}", raw.display()),
    )
    .accept_uncompressed_layers()
    .run()
    .with_context(|| format!("reading {cs} back from containers-storage"))?;
    let built = OciImage::open(&raw)?;
    Ok((raw_dir, built))
}

/// Write the image exported by [`export_raw`] into the store as `name`: base layers by
/// reference to the bases' blobs, new layers gzipped. Returns (manifest digest, reused
/// layers, new layers).
fn assemble(
    store: &Store,
    cs: &str,
    name: &str,
    bases: &[OciImage],
    raw_dir: tempfile::TempDir,
    built: &OciImage,
) -> Result<(String, usize, usize)> {
    let diff_ids = built.config.rootfs().diff_ids().clone();
    if diff_ids.len() != built.manifest.layers().len() {
        bail!(
            "{cs}: the config lists {} diff IDs for {} layers",
            diff_ids.len(),
            built.manifest.layers().len()
        );
    }
    // diff ID -> (base image, layer descriptor)
    let mut known = HashMap::new();
    for b in bases {
        for (d, l) in b.config.rootfs().diff_ids().iter().zip(b.manifest.layers()) {
            known.entry(d.clone()).or_insert((b, l.clone()));
        }
    }
    let staging = store.staging()?;
    let out = staging.path();
    std::fs::create_dir_all(out.join("blobs/sha256"))?;
    std::fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let (mut reused, mut new) = (0, 0);
    let mut layers = Vec::new();
    for (i, (diff_id, l)) in diff_ids.iter().zip(built.manifest.layers()).enumerate() {
        if let Some((base, desc)) = known.get(diff_id) {
            let src = base.blob(desc.digest().as_ref())?;
            let dst = out.join("blobs/sha256").join(desc.digest().digest());
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
            }
            layers.push(desc.clone());
            reused += 1;
            continue;
        }
        // a new layer: gzip it (fast level, as the base image's layers)
        let mut enc =
            flate2::write::GzEncoder::new(BlobWriter::new(out)?, flate2::Compression::fast());
        let mut src = built.open_layer(i)?;
        std::io::copy(&mut src, &mut enc).with_context(|| format!("compressing layer {i}"))?;
        let (digest, size) = enc.finish()?.finish()?;
        let mut b = DescriptorBuilder::default()
            .media_type(MediaType::ImageLayerGzip)
            .digest(digest.parse::<ostree_ext::oci_spec::image::Digest>()?)
            .size(size);
        if let Some(a) = l.annotations() {
            b = b.annotations(a.clone());
        }
        layers.push(b.build()?);
        new += 1;
    }
    let config_bytes = std::fs::read(built.blob(built.manifest.config().digest().as_ref())?)?;
    let config_digest = put_blob(out, &config_bytes)?;
    let config_desc = DescriptorBuilder::default()
        .media_type(MediaType::ImageConfig)
        .digest(config_digest.parse::<ostree_ext::oci_spec::image::Digest>()?)
        .size(config_bytes.len() as u64)
        .build()?;
    let mut mb = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc)
        .layers(layers);
    if let Some(a) = built.manifest.annotations() {
        mb = mb.annotations(a.clone());
    }
    let manifest_bytes = canonical_json(&mb.build()?)?;
    let manifest_digest = put_blob(out, &manifest_bytes)?;
    let (_, tag) = Store::split_name(name)?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .manifests(vec![DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(manifest_digest.parse::<ostree_ext::oci_spec::image::Digest>()?)
            .size(manifest_bytes.len() as u64)
            .annotations(HashMap::from([(
                "org.opencontainers.image.ref.name".to_string(),
                tag.to_string(),
            )]))
            .build()?])
        .build()?;
    std::fs::write(out.join("index.json"), canonical_json(&index)?)?;
    drop(raw_dir);
    store.publish(staging, name)?;
    Ok((manifest_digest, reused, new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn froms_with_args_stages_and_flags() {
        let cf = "ARG BASE=imgmode-base\n# comment\nFROM --platform=linux/amd64 ${BASE} AS build\nRUN x \\\n  y\nfrom build as final\nFROM $BASE\n";
        let f = parse_froms(cf, &[]);
        assert_eq!(
            f,
            vec![
                From {
                    image: "imgmode-base".into(),
                    stage: Some("build".into())
                },
                From {
                    image: "build".into(),
                    stage: Some("final".into())
                },
                From {
                    image: "imgmode-base".into(),
                    stage: None
                },
            ]
        );
        let f = parse_froms(cf, &["BASE=other:v2".into()]);
        assert_eq!(f[0].image, "other:v2");
    }

    #[test]
    fn preflight_says_what_is_wrong() {
        let td = tempfile::tempdir().unwrap();
        let opts = BuildOpts {
            containerfile: td.path().join("Containerfile"),
            context: td.path().to_path_buf(),
            tag: "layered".into(),
            build_args: vec![],
            store: Store::new(td.path().join("state")),
            no_lint_fail: false,
            no_cache: false,
        };
        let err = preflight(&opts).unwrap_err().to_string();
        assert!(err.contains("reading the Containerfile"), "{err}");
        std::fs::write(&opts.containerfile, "FROM imgmode-base\n").unwrap();
        let bad = BuildOpts {
            tag: "Bad Tag".into(),
            ..opts.clone()
        };
        assert!(preflight(&bad)
            .unwrap_err()
            .to_string()
            .contains("invalid local image name"));
        let bad = BuildOpts {
            build_args: vec!["NOEQUALS".into()],
            ..opts.clone()
        };
        assert!(preflight(&bad)
            .unwrap_err()
            .to_string()
            .contains("KEY=VALUE"));
        let bad = BuildOpts {
            context: td.path().join("nope"),
            ..opts
        };
        assert!(preflight(&bad)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
    }
}
