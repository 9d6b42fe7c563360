//! On-cluster-style builds without a cluster: `imgmode layer build machineosconfig.yaml`.
//!
//! A `MachineOSConfig` names a pool, Containerfiles per architecture and where to push. Its
//! Containerfile starts `FROM configs AS final`; `configs` is the base image with the pool's
//! rendered MachineConfig applied (files, systemd units, kernel arguments), generated here as
//! a first build stage. Each build is recorded as a `MachineOSBuild` YAML named
//! `<config>-<hash>` (the hash covers the config's spec, the rendered MachineConfig and the
//! base digest), whose conditions move PREPARED -> BUILDING -> SUCCEEDED or FAILED (a failed
//! build at once, a failed push after three retries); a build found still BUILDING is marked INTERRUPTED and redone; a SUCCEEDED build is
//! reused unless the config carries the `machineconfiguration.openshift.io/rebuild`
//! annotation. The pushed image's digested pull spec lands in `status.currentImagePullSpec`.

use crate::objects::{ObjectMeta, API_VERSION};
use anyhow::{anyhow, bail, Context, Result};
use imgmode_support::yaml::parse as parse_yaml;
use ostree_ext::container::{ImageReference, Transport};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use {imgmode_image::Store, imgmode_support::Steps};

pub const REBUILD_ANNOTATION: &str = "machineconfiguration.openshift.io/rebuild";
pub const ROLE_LABEL: &str = "machineconfiguration.openshift.io/role";
/// Pools every OpenShift cluster has.
pub const DEFAULT_POOLS: &[&str] = &["master", "worker"];
/// How many times a failed push is retried (a failed build is not: it would fail the same way).
pub const RETRIES: u32 = 3;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineOSConfig {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: MachineOSConfigSpec,
    /// What a cluster reports (an object saved with `oc get -o yaml`); never read: the build's
    /// state is the MachineOSBuild record.
    #[serde(default, skip_serializing)]
    pub status: Option<yaml_serde::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineOSConfigSpec {
    pub machine_config_pool: NameRef,
    #[serde(default)]
    pub container_file: Vec<ContainerFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_builder: Option<yaml_serde::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image_pull_secret: Option<NameRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered_image_push_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered_image_push_secret: Option<NameRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NameRef {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerFile {
    #[serde(default = "no_arch")]
    pub containerfile_arch: String,
    pub content: String,
}

fn no_arch() -> String {
    "NoArch".into()
}

impl MachineOSConfig {
    pub fn from_yaml(text: &str, what: &str) -> Result<Self> {
        let m: MachineOSConfig = parse_yaml(text, what)?;
        crate::objects::check_type_meta(
            what,
            &m.kind,
            &m.api_version,
            &m.metadata,
            "MachineOSConfig",
        )?;
        Ok(m)
    }

    /// The Containerfile for this machine: its architecture's, else the NoArch one.
    pub fn containerfile(&self) -> Result<&str> {
        let arch = imgmode_support::host::containerfile_arch();
        self.spec
            .container_file
            .iter()
            .find(|c| c.containerfile_arch.eq_ignore_ascii_case(arch))
            .or_else(|| {
                self.spec
                    .container_file
                    .iter()
                    .find(|c| c.containerfile_arch.eq_ignore_ascii_case("NoArch"))
            })
            .map(|c| c.content.as_str())
            .ok_or_else(|| {
                let have: Vec<&str> = self
                    .spec
                    .container_file
                    .iter()
                    .map(|c| c.containerfile_arch.as_str())
                    .collect();
                anyhow!(
                    "MachineOSConfig {} has no Containerfile for {arch}: spec.containerFile has [{}]; add one with containerfileArch: {arch} or NoArch",
                    self.metadata.name,
                    have.join(", ")
                )
            })
    }

    pub fn push_spec(&self) -> Result<&str> {
        if let Some(p) = self
            .spec
            .rendered_image_push_spec
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            imgmode_support::validate::field(
                &format!("MachineOSConfig {}", self.metadata.name),
                "spec.renderedImagePushSpec",
                p,
                |s| {
                    imgmode_support::validate::single_line(s)?;
                    imgmode_image::imgref::parse(&format!("docker://{s}"))
                        .map(|_| ())
                        .map_err(|e| {
                            format!("is not a registry reference (REGISTRY/REPO:TAG): {e}")
                        })
                },
            )?;
        }
        self.spec
            .rendered_image_push_spec
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "MachineOSConfig {} has no spec.renderedImagePushSpec: say where the built image goes, e.g. registry.example.com/os/{}:latest",
                    self.metadata.name,
                    self.metadata.name
                )
            })
    }
}

/// The pools and MachineConfigs the build renders from (a directory of YAML files, several
/// documents per file allowed).
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// pool name -> roles whose MachineConfigs it takes
    pub pools: BTreeMap<String, Vec<String>>,
    pub machineconfigs: Vec<yaml_serde::Value>,
}

impl ClusterConfig {
    pub fn defaults() -> Self {
        let mut c = ClusterConfig::default();
        for p in DEFAULT_POOLS {
            c.pools.insert(p.to_string(), vec![p.to_string()]);
        }
        c
    }

    /// Read every `MachineConfig` and `MachineConfigPool` under `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let mut c = Self::defaults();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f)?;
            for doc in yaml_serde::Deserializer::from_str(&text) {
                let v = yaml_serde::Value::deserialize(doc)
                    .with_context(|| format!("parsing {}", f.display()))?;
                match v.get("kind").and_then(|k| k.as_str()) {
                    Some("MachineConfig") => c.machineconfigs.push(v),
                    Some("MachineConfigPool") => {
                        let name = v["metadata"]["name"]
                            .as_str()
                            .ok_or_else(|| {
                                anyhow!(
                                    "{}: a MachineConfigPool without metadata.name",
                                    f.display()
                                )
                            })?
                            .to_string();
                        c.pools.insert(name.clone(), pool_roles(&v, &name));
                    }
                    _ => {}
                }
            }
        }
        Ok(c)
    }

    /// The MachineConfigs of `pool`, sorted by name (MCO renders in name order).
    pub fn for_pool(&self, pool: &str) -> Result<Vec<&yaml_serde::Value>> {
        let roles = self.pools.get(pool).ok_or_else(|| {
            anyhow!(
                "unknown machine config pool {pool:?}: known pools are {}; define it with a MachineConfigPool in --machineconfigs",
                self.pools.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        let mut mcs: Vec<&yaml_serde::Value> = self
            .machineconfigs
            .iter()
            .filter(|m| {
                m["metadata"]["labels"][ROLE_LABEL]
                    .as_str()
                    .is_some_and(|r| roles.iter().any(|x| x == r))
            })
            .collect();
        mcs.sort_by_key(|m| m["metadata"]["name"].as_str().unwrap_or("").to_string());
        Ok(mcs)
    }
}

/// The roles a MachineConfigPool selects: `matchLabels` or `matchExpressions` (operator In) on
/// the role label; its own name when it has no selector.
fn pool_roles(v: &yaml_serde::Value, name: &str) -> Vec<String> {
    let sel = &v["spec"]["machineConfigSelector"];
    let mut roles = Vec::new();
    if let Some(r) = sel["matchLabels"][ROLE_LABEL].as_str() {
        roles.push(r.to_string());
    }
    if let Some(exprs) = sel["matchExpressions"].as_sequence() {
        for e in exprs {
            if e["key"].as_str() == Some(ROLE_LABEL) && e["operator"].as_str() == Some("In") {
                for r in e["values"].as_sequence().into_iter().flatten() {
                    if let Some(r) = r.as_str() {
                        roles.push(r.to_string());
                    }
                }
            }
        }
    }
    if roles.is_empty() {
        roles.push(name.to_string());
    }
    roles
}

/// The pool's MachineConfigs merged: what `configs` adds to the base image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Rendered {
    pub name: String,
    /// path -> (mode, content)
    pub files: BTreeMap<String, (u32, Vec<u8>)>,
    /// unit name -> (contents, enabled)
    pub units: BTreeMap<String, (Option<String>, bool)>,
    pub kernel_arguments: Vec<String>,
}

/// Decode an Ignition `contents.source` data URL.
pub fn decode_data_url(src: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let rest = src.strip_prefix("data:").ok_or_else(|| {
        anyhow!("file source {src:?} is not a data: URL (remote sources are not fetched)")
    })?;
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| anyhow!("malformed data URL {src:?}"))?;
    if meta.ends_with(";base64") {
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| anyhow!("data URL with bad base64: {e}"))
    } else {
        percent_decode(data)
    }
}

fn percent_decode(s: &str) -> Result<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| anyhow!("bad percent escape in data URL"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Merge MachineConfigs in order; later ones win for the same file or unit.
pub fn render(pool: &str, mcs: &[&yaml_serde::Value]) -> Result<Rendered> {
    let mut r = Rendered::default();
    let mut names = Vec::new();
    for mc in mcs {
        let name = mc["metadata"]["name"].as_str().unwrap_or("?");
        names.push(name.to_string());
        let spec = &mc["spec"];
        for unsupported in ["extensions", "kernelType", "fips", "osImageURL"] {
            let v = &spec[unsupported];
            let empty = v.is_null()
                || v.as_sequence().is_some_and(|s| s.is_empty())
                || v.as_str().is_some_and(|s| s.is_empty() || s == "default")
                || v.as_bool() == Some(false);
            if !empty {
                bail!(
                    "MachineConfig {name}: spec.{unsupported} is not supported when rendering a pool for an image build; put it into the Containerfile"
                );
            }
        }
        for f in spec["config"]["storage"]["files"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let path = f["path"]
                .as_str()
                .ok_or_else(|| anyhow!("MachineConfig {name}: a file without path"))?;
            if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
                bail!("MachineConfig {name}: file path {path:?} must be absolute without ..");
            }
            let mode = f["mode"].as_u64().unwrap_or(0o644) as u32;
            let data = match f["contents"]["source"].as_str() {
                Some(src) => {
                    decode_data_url(src).with_context(|| format!("MachineConfig {name}: {path}"))?
                }
                None => Vec::new(),
            };
            r.files.insert(path.to_string(), (mode, data));
        }
        for u in spec["config"]["systemd"]["units"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let uname = u["name"]
                .as_str()
                .ok_or_else(|| anyhow!("MachineConfig {name}: a unit without name"))?;
            if uname.contains('/') {
                bail!("MachineConfig {name}: bad unit name {uname:?}");
            }
            r.units.insert(
                uname.to_string(),
                (
                    u["contents"].as_str().map(str::to_string),
                    u["enabled"].as_bool().unwrap_or(false),
                ),
            );
        }
        for k in spec["kernelArguments"].as_sequence().into_iter().flatten() {
            if let Some(k) = k.as_str() {
                if !r.kernel_arguments.iter().any(|x| x == k) {
                    r.kernel_arguments.push(k.to_string());
                }
            }
        }
    }
    let digest = hex::encode(sha2::Sha256::digest(names.join("\n").as_bytes()));
    r.name = format!("rendered-{pool}-{}", &digest[..32]);
    Ok(r)
}

impl Rendered {
    /// Write the `configs` stage's content under `root` (copied onto the base image).
    pub fn write_root(&self, root: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for (path, (mode, data)) in &self.files {
            let p = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap())?;
            std::fs::write(&p, data)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
        }
        let sd = root.join("etc/systemd/system");
        for (name, (contents, enabled)) in &self.units {
            std::fs::create_dir_all(&sd)?;
            if let Some(c) = contents {
                std::fs::write(sd.join(name), c)?;
            }
            if *enabled {
                let wants = sd.join("multi-user.target.wants");
                std::fs::create_dir_all(&wants)?;
                let target = if contents.is_some() {
                    format!("/etc/systemd/system/{name}")
                } else {
                    format!("/usr/lib/systemd/system/{name}")
                };
                let _ = std::fs::remove_file(wants.join(name));
                std::os::unix::fs::symlink(target, wants.join(name))?;
            }
        }
        if !self.kernel_arguments.is_empty() {
            let d = root.join(imgmode_os::node::KARGS_D);
            std::fs::create_dir_all(&d)?;
            let list: Vec<String> = self
                .kernel_arguments
                .iter()
                .map(|k| serde_json::to_string(k).expect("a string serializes"))
                .collect();
            std::fs::write(
                d.join("50-machineconfig.toml"),
                format!("# {}\nkargs = [{}]\n", self.name, list.join(", ")),
            )?;
        }
        Ok(())
    }
}

/// One condition of a MachineOSBuild.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

pub const STATES: &[&str] = &["Prepared", "Building", "Succeeded", "Interrupted", "Failed"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachineOSBuild {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: MachineOSBuildSpec,
    #[serde(default)]
    pub status: MachineOSBuildStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachineOSBuildSpec {
    pub machine_os_config: NameRef,
    pub machine_config: NameRef,
    pub rendered_image_push_spec: String,
    pub base_image: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MachineOSBuildStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digested_image_push_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_image_pull_spec: Option<String>,
}

fn now() -> String {
    imgmode_support::time::rfc3339(std::time::SystemTime::now())
}

impl MachineOSBuild {
    /// The state whose condition is True.
    pub fn state(&self) -> Option<&str> {
        self.status
            .conditions
            .iter()
            .find(|c| c.status == "True")
            .map(|c| c.type_.as_str())
    }

    /// Make `state` the one True condition.
    pub fn set_state(&mut self, state: &str, reason: &str, message: &str) {
        let t = now();
        let old = self.status.conditions.clone();
        self.status.conditions = STATES
            .iter()
            .map(|s| {
                let status = if *s == state { "True" } else { "False" };
                match old.iter().find(|c| c.type_ == *s) {
                    Some(c) if c.status == status => c.clone(),
                    _ => Condition {
                        type_: s.to_string(),
                        status: status.into(),
                        reason: if *s == state {
                            reason.into()
                        } else {
                            String::new()
                        },
                        message: if *s == state {
                            message.into()
                        } else {
                            String::new()
                        },
                        last_transition_time: t.clone(),
                    },
                }
            })
            .collect();
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::objects::write_atomic(path, yaml_serde::to_string(self)?.as_bytes())
    }

    pub fn load(path: &Path) -> Result<Option<Self>> {
        crate::objects::read_optional(path)?
            .map(|t| parse_yaml(&t, &path.display().to_string()))
            .transpose()
    }
}

/// `imgmode layer build` options.
#[derive(Debug, Clone)]
pub struct LayerBuildOpts {
    pub config: PathBuf,
    /// The base image (a local name or a transport reference).
    pub base: String,
    pub machineconfigs: Option<PathBuf>,
    /// Where MachineOSBuild objects are written.
    pub output_dir: PathBuf,
    pub store: Store,
    pub tls_verify: bool,
    pub authfile: Option<PathBuf>,
}

/// The pull spec of `spec` (`host/repo:tag` or `host/repo`) with `digest` instead of the tag.
pub fn digested(spec: &str, digest: &str) -> String {
    let bare = spec.split_once('@').map(|(n, _)| n).unwrap_or(spec);
    let name = match bare.rsplit_once(':') {
        Some((n, tag)) if !tag.contains('/') => n,
        _ => bare,
    };
    format!("{name}@{digest}")
}

/// Build (or reuse) the MachineOSBuild for a MachineOSConfig.
pub fn layer_build(opts: &LayerBuildOpts, steps: &Steps) -> Result<MachineOSBuild> {
    let mosc = MachineOSConfig::from_yaml(
        &std::fs::read_to_string(&opts.config)
            .with_context(|| format!("reading {}", opts.config.display()))?,
        &opts.config.display().to_string(),
    )?;
    let containerfile = mosc.containerfile()?.to_string();
    let push_spec = mosc.push_spec()?.to_string();
    let cluster = match &opts.machineconfigs {
        Some(d) => ClusterConfig::load(d)?,
        None => ClusterConfig::defaults(),
    };
    let pool = &mosc.spec.machine_config_pool.name;
    let rendered = render(pool, &cluster.for_pool(pool)?)?;

    // the base: podman's name for it, and its digest (part of the build's identity)
    let (from, base_digest) = base_image(opts)?;
    let mut h = sha2::Sha256::new();
    h.update(serde_json::to_vec(&mosc.spec)?);
    h.update(serde_json::to_vec(&rendered)?);
    h.update(base_digest.as_bytes());
    let hash = hex::encode(h.finalize());
    let name = format!("{}-{}", mosc.metadata.name, &hash[..32]);
    let path = opts.output_dir.join(format!("{name}.yaml"));

    let rebuild = mosc.metadata.annotations.contains_key(REBUILD_ANNOTATION);
    let mut mosb = match MachineOSBuild::load(&path)? {
        Some(b) if b.state() == Some("Succeeded") && !rebuild => {
            steps.step(&format!(
                "{name} already built; add the {REBUILD_ANNOTATION} annotation to rebuild"
            ));
            return Ok(b);
        }
        Some(mut b) if b.state() == Some("Building") => {
            b.set_state(
                "Interrupted",
                "BuildInterrupted",
                "the previous build did not finish",
            );
            b.save(&path)?;
            b
        }
        Some(b) => b,
        None => new_build(&mosc, &name, &rendered.name, &push_spec, &base_digest),
    };
    mosb.status.digested_image_push_spec = None;
    mosb.status.current_image_pull_spec = None;
    mosb.set_state("Prepared", "Prepared", "build context prepared");
    mosb.save(&path)?;

    // the build context: configs stage + the user's Containerfile
    let ctx = tempfile::Builder::new().prefix("imgmode-mosb-").tempdir()?;
    rendered.write_root(&ctx.path().join("configs-root"))?;
    std::fs::create_dir_all(ctx.path().join("configs-root"))?;
    std::fs::write(
        ctx.path().join("Containerfile"),
        format!(
            "# generated by imgmode layer build for MachineOSConfig {} ({})\nFROM {from} AS configs\nCOPY configs-root/ /\n\n{containerfile}\n",
            mosc.metadata.name, rendered.name
        ),
    )?;
    let job = BuildJob {
        opts,
        context: ctx.path(),
        tag: &name,
        push_spec: &push_spec,
        record: &path,
    };
    job.run(mosb, steps)
}

/// The base image: podman's name for it, and its digest.
fn base_image(opts: &LayerBuildOpts) -> Result<(String, String)> {
    let not_bootable = |labels: &BTreeMap<String, String>| {
        (!imgmode_os::disk::is_bootable(|k| labels.get(k).map(String::as_str))).then(|| {
            anyhow!(
                "the base image {} is not bootable: it has neither the label containers.bootc=1 nor ostree.bootable=true; give a bootc base image such as imgmode-base",
                opts.base
            )
        })
    };
    Ok(match imgmode_image::imgref::parse(&opts.base)? {
        imgmode_image::imgref::UserImageRef::Local(n) => {
            let stored = opts.store.inspect(&n)?;
            if let Some(e) = not_bootable(&stored.labels) {
                return Err(e);
            }
            (crate::build::containers_storage_name(&n)?, stored.digest)
        }
        imgmode_image::imgref::UserImageRef::Remote(r) => {
            let auth = imgmode_image::skopeo::RegistryAuth::default();
            let config: serde_json::Value = serde_json::from_slice(
                &imgmode_image::skopeo::inspect_config(&r.imgref.to_string(), &auth)
                    .with_context(|| format!("inspecting the base image {}", opts.base))?,
            )
            .with_context(|| format!("the base image {}'s config is not JSON", opts.base))?;
            let labels: BTreeMap<String, String> =
                serde_json::from_value(config["config"]["Labels"].clone()).unwrap_or_default();
            if let Some(e) = not_bootable(&labels) {
                return Err(e);
            }
            let d = imgmode_image::skopeo::inspect_digest(&r.imgref.to_string(), &auth)
                .with_context(|| format!("inspecting the base image {}", opts.base))?;
            let from = match r.imgref.transport {
                ostree_ext::container::Transport::Registry => r.imgref.name.clone(),
                _ => r.imgref.to_string(),
            };
            (from, d.trim().to_string())
        }
    })
}

/// A MachineOSBuild not started yet.
fn new_build(
    mosc: &MachineOSConfig,
    name: &str,
    rendered: &str,
    push_spec: &str,
    base_digest: &str,
) -> MachineOSBuild {
    MachineOSBuild {
        api_version: API_VERSION.into(),
        kind: "MachineOSBuild".into(),
        metadata: ObjectMeta {
            name: name.to_string(),
            labels: [(
                "machineconfiguration.openshift.io/machine-os-config".to_string(),
                mosc.metadata.name.clone(),
            )]
            .into(),
            annotations: Default::default(),
        },
        spec: MachineOSBuildSpec {
            machine_os_config: NameRef {
                name: mosc.metadata.name.clone(),
            },
            machine_config: NameRef {
                name: rendered.to_string(),
            },
            rendered_image_push_spec: push_spec.to_string(),
            base_image: base_digest.to_string(),
        },
        status: Default::default(),
    }
}

/// One MachineOSBuild's image build and push, from a prepared context, recorded in `record`.
struct BuildJob<'a> {
    opts: &'a LayerBuildOpts,
    /// The build context, its `Containerfile` included.
    context: &'a Path,
    tag: &'a str,
    push_spec: &'a str,
    record: &'a Path,
}

impl BuildJob<'_> {
    /// Build and push, retried [`RETRIES`] times; every state saved as it is reached.
    fn run(&self, mut mosb: MachineOSBuild, steps: &Steps) -> Result<MachineOSBuild> {
        let (name, push_spec, path) = (self.tag, self.push_spec, self.record);
        mosb.status.build_start = Some(now());
        let mut last_err = None;
        for attempt in 1..=RETRIES + 1 {
            mosb.status.attempts = attempt;
            mosb.set_state(
                "Building",
                "Building",
                &format!("attempt {attempt} of {}", RETRIES + 1),
            );
            mosb.save(path)?;
            steps.step(&format!("building {name} (attempt {attempt})"));
            match self.build_and_push(steps) {
                Ok(digest) => {
                    let spec = digested(push_spec, &digest);
                    mosb.status.digested_image_push_spec = Some(spec.clone());
                    mosb.status.current_image_pull_spec = Some(spec);
                    mosb.status.build_end = Some(now());
                    mosb.set_state("Succeeded", "Succeeded", "the image was built and pushed");
                    mosb.save(path)?;
                    return Ok(mosb);
                }
                Err((stage, e)) => {
                    mosb.set_state(
                        "Failed",
                        "BuildFailed",
                        &format!("attempt {attempt}: {e:#}"),
                    );
                    mosb.save(path)?;
                    if stage == Stage::Build {
                        // the same inputs build the same way: retrying cannot help
                        mosb.status.build_end = Some(now());
                        mosb.save(path)?;
                        return Err(e.context(format!(
                            "MachineOSBuild {name} failed to build (not retried: the same Containerfile and inputs fail the same way); see {}",
                            path.display()
                        )));
                    }
                    last_err = Some(e);
                }
            }
        }
        mosb.status.build_end = Some(now());
        mosb.save(path)?;
        Err(last_err.expect("at least one attempt").context(format!(
            "MachineOSBuild {name} failed to push {} times; see {}",
            RETRIES + 1,
            path.display()
        )))
    }

    /// One attempt: the image built and pushed; the pushed digest, or the stage that failed.
    fn build_and_push(&self, steps: &Steps) -> std::result::Result<String, (Stage, anyhow::Error)> {
        let opts = self.opts;
        crate::build::build(
            &crate::build::BuildOpts {
                containerfile: self.context.join("Containerfile"),
                context: self.context.to_path_buf(),
                tag: self.tag.to_string(),
                build_args: vec![],
                store: opts.store.clone(),
                no_lint_fail: false,
                no_cache: false,
            },
            steps,
        )
        .map_err(|e| (Stage::Build, e))?;
        let push_spec = self.push_spec;
        steps.step(&format!("pushing to {push_spec}"));
        let src = opts
            .store
            .oci_ref(self.tag)
            .map_err(|e| (Stage::Build, e))?;
        crate::build::push(
            &src,
            &ImageReference {
                transport: Transport::Registry,
                name: push_spec.to_string(),
            },
            opts.tls_verify,
            opts.authfile.as_deref(),
            None,
            false,
        )
        .map_err(|e| (Stage::Push, e))
    }
}

/// Where an attempt failed: a build is deterministic (not retried), a push may be transient.
#[derive(Debug, PartialEq, Eq)]
enum Stage {
    Build,
    Push,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOSC: &str = r#"apiVersion: machineconfiguration.openshift.io/v1
kind: MachineOSConfig
metadata:
  name: layered-image
spec:
  machineConfigPool:
    name: layered
  containerFile:
  - containerfileArch: NoArch
    content: |-
      FROM configs AS final
      RUN echo hi
  imageBuilder:
    imageBuilderType: Job
  baseImagePullSecret:
    name: global-pull-secret-copy
  renderedImagePushSpec: registry.example.com:5000/openshift/os-image:latest
  renderedImagePushSecret:
    name: builder-dockercfg
"#;

    #[test]
    fn documentation_example_parses() {
        let m = MachineOSConfig::from_yaml(MOSC, "m.yaml").unwrap();
        assert!(m
            .containerfile()
            .unwrap()
            .starts_with("FROM configs AS final"));
        assert_eq!(
            m.push_spec().unwrap(),
            "registry.example.com:5000/openshift/os-image:latest"
        );
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let arm = MOSC.replace("NoArch", "ARM64");
        let err = MachineOSConfig::from_yaml(&arm, "m.yaml")
            .unwrap()
            .containerfile()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no Containerfile for AMD64") && err.contains("ARM64"),
            "{err}"
        );
        let nopush = MOSC.replace(
            "  renderedImagePushSpec: registry.example.com:5000/openshift/os-image:latest\n",
            "",
        );
        let err = MachineOSConfig::from_yaml(&nopush, "m.yaml")
            .unwrap()
            .push_spec()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no spec.renderedImagePushSpec"), "{err}");
        let err =
            MachineOSConfig::from_yaml(&MOSC.replace("imageBuilder:", "imageBuildr:"), "m.yaml")
                .unwrap_err()
                .to_string();
        assert!(err.contains("imageBuildr"), "{err}");
        let err = ClusterConfig::defaults()
            .for_pool("layered")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown machine config pool \"layered\"")
                && err.contains("master, worker"),
            "{err}"
        );
    }

    #[test]
    fn pools_render_files_units_kargs() {
        let td = tempfile::tempdir().unwrap();
        std::fs::write(
            td.path().join("pool.yaml"),
            "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfigPool\nmetadata:\n  name: layered\nspec:\n  machineConfigSelector:\n    matchExpressions:\n    - {key: machineconfiguration.openshift.io/role, operator: In, values: [worker, layered]}\n",
        )
        .unwrap();
        std::fs::write(
            td.path().join("mcs.yaml"),
            "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n  name: 50-motd\n  labels: {machineconfiguration.openshift.io/role: worker}\nspec:\n  config:\n    ignition: {version: 3.2.0}\n    storage:\n      files:\n      - path: /etc/motd\n        mode: 420\n        contents: {source: 'data:,hello%20world'}\n      - path: /etc/b64\n        contents: {source: 'data:text/plain;base64,aGk='}\n    systemd:\n      units:\n      - name: demo.service\n        enabled: true\n        contents: \"[Service]\\nExecStart=/bin/true\\n\"\n  kernelArguments: [nosmt]\n---\napiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n  name: 99-master\n  labels: {machineconfiguration.openshift.io/role: master}\nspec:\n  kernelArguments: [master-only]\n",
        )
        .unwrap();
        let c = ClusterConfig::load(td.path()).unwrap();
        let r = render("layered", &c.for_pool("layered").unwrap()).unwrap();
        assert_eq!(r.files["/etc/motd"], (420, b"hello world".to_vec()));
        assert_eq!(r.files["/etc/b64"].1, b"hi".to_vec());
        assert_eq!(r.kernel_arguments, vec!["nosmt"]);
        assert!(r.name.starts_with("rendered-layered-"));
        let root = td.path().join("root");
        r.write_root(&root).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("etc/motd")).unwrap(),
            "hello world"
        );
        assert_eq!(
            std::fs::read_link(
                root.join("etc/systemd/system/multi-user.target.wants/demo.service")
            )
            .unwrap(),
            Path::new("/etc/systemd/system/demo.service")
        );
        let k = std::fs::read_to_string(
            root.join(imgmode_os::node::KARGS_D)
                .join("50-machineconfig.toml"),
        )
        .unwrap();
        assert_eq!(
            imgmode_os::node::parse_kargs_toml(&k).unwrap(),
            vec!["nosmt"]
        );
    }

    #[test]
    fn build_states() {
        let mut b = MachineOSBuild {
            api_version: API_VERSION.into(),
            kind: "MachineOSBuild".into(),
            metadata: ObjectMeta {
                name: "x-1".into(),
                ..Default::default()
            },
            spec: MachineOSBuildSpec {
                machine_os_config: NameRef { name: "x".into() },
                machine_config: NameRef {
                    name: "rendered-worker-1".into(),
                },
                rendered_image_push_spec: "r/x:latest".into(),
                base_image: "sha256:1".into(),
            },
            status: Default::default(),
        };
        assert_eq!(b.state(), None);
        b.set_state("Building", "Building", "attempt 1");
        assert_eq!(b.state(), Some("Building"));
        assert_eq!(b.status.conditions.len(), 5);
        b.set_state("Succeeded", "Succeeded", "ok");
        assert_eq!(
            b.status
                .conditions
                .iter()
                .filter(|c| c.status == "True")
                .count(),
            1
        );
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("b.yaml");
        b.save(&p).unwrap();
        assert_eq!(MachineOSBuild::load(&p).unwrap().unwrap(), b);
        assert_eq!(
            digested("r.example.com:5000/a/b:latest", "sha256:9"),
            "r.example.com:5000/a/b@sha256:9"
        );
        assert_eq!(
            digested("r.example.com:5000/a/b", "sha256:9"),
            "r.example.com:5000/a/b@sha256:9"
        );
    }
}
