//! Helpers shared by the CLI integration tests.

use std::path::Path;
use std::process::{Command, Output};

/// Run the `imgmode` binary with its state and cache under `state`.
pub fn imgmode(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgmode"))
        .args(args)
        .env("IMGMODE_STATE_DIR", state.join("state"))
        .env("IMGMODE_CACHE_DIR", state.join("cache"))
        .env("RUST_LOG", "off")
        .output()
        .expect("running imgmode")
}

#[allow(unused_imports)] // not every test crate has a precondition
pub use imgmode_testkit::{require, Need};

/// What `imgmode ibi install` needs on this machine.
#[allow(dead_code)] // only the install tests use it
pub const INSTALL_NEEDS: [Need; 6] = [
    Need::Root,
    Need::Tool("skopeo"),
    Need::Tool("sgdisk"),
    Need::Tool("ostree"),
    Need::Tool("mkfs.vfat"),
    Need::Tool("mmd"),
];

/// Are the tests running as root? (For tests that check both sides; a test that needs root
/// says so with `require!(Need::Root)`.)
#[allow(dead_code)]
pub fn is_root() -> bool {
    Need::Root.missing().is_none()
}

/// Write an OCI layout holding one small image with the given labels (`{LAYER}` in them is
/// replaced by the layer's digest).
#[allow(dead_code)]
pub fn write_oci(dir: &Path, labels: &str, arch: &str) {
    // an uncompressed tar holding one file
    write_oci_layers(dir, labels, arch, &[tar_of(&[("etc/hello", "hello")])]);
}

/// An uncompressed tar of (path, content) files; a path ending in `/` is a directory.
#[allow(dead_code)]
pub fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut tar = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar);
        for (p, c) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(c.len() as u64);
            h.set_mode(0o644);
            if p.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
            }
            // the name raw, as a hostile writer would put it (tar's set_path refuses "..")
            h.as_gnu_mut().unwrap().name[..p.len()].copy_from_slice(p.as_bytes());
            h.set_cksum();
            b.append(&h, c.as_bytes()).unwrap();
        }
        b.finish().unwrap();
    }
    tar
}

/// Write `data` as a blob into `blobs` (a layout's `blobs/sha256`): its digest and size.
pub fn put_blob(blobs: &Path, data: &[u8]) -> (String, usize) {
    use sha2::Digest;
    let d = hex::encode(sha2::Sha256::digest(data));
    std::fs::write(blobs.join(&d), data).unwrap();
    (format!("sha256:{d}"), data.len())
}

/// Rewrite the one-image layout at `dir`: its manifest and config edited, every digest and
/// size after them made right again (as a tool writing such an image would).
#[allow(dead_code)]
pub fn rewrite_layout(
    dir: &Path,
    edit_manifest: impl FnOnce(&mut serde_json::Value),
    edit_config: impl FnOnce(&mut serde_json::Value),
) {
    let blobs = dir.join("blobs/sha256");
    let read = |d: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(blobs.join(d.trim_start_matches("sha256:"))).unwrap())
            .unwrap()
    };
    let put = |v: &serde_json::Value| put_blob(&blobs, &serde_json::to_vec(v).unwrap());
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mut manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let mut config = read(manifest["config"]["digest"].as_str().unwrap());
    edit_config(&mut config);
    let (c, cn) = put(&config);
    manifest["config"]["digest"] = c.into();
    manifest["config"]["size"] = cn.into();
    edit_manifest(&mut manifest);
    let (m, mn) = put(&manifest);
    index["manifests"][0]["digest"] = m.into();
    index["manifests"][0]["size"] = mn.into();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// An OCI layout of one image whose layers are the given uncompressed tars.
pub fn write_oci_layers(dir: &Path, labels: &str, arch: &str, layers: &[Vec<u8>]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| put_blob(&blobs, data);
    let layers: Vec<(String, usize)> = layers.iter().map(|l| put(l)).collect();
    // `{LAYER}` in the labels stands for the (first) layer's digest (e.g. for ostree.final-diffid)
    let labels = labels.replace("{LAYER}", &layers[0].0);
    let diff_ids: Vec<String> = layers.iter().map(|(d, _)| format!("\"{d}\"")).collect();
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{"Labels":{{{labels}}}}},"rootfs":{{"type":"layers","diff_ids":[{}]}},"history":[{{"created_by":"test"}}]}}"#,
        diff_ids.join(",")
    );
    let (config, config_size) = put(config.as_bytes());
    let descs: Vec<String> = layers
        .iter()
        .map(|(d, n)| {
            format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{n}}}"#)
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{}]}}"#,
        descs.join(",")
    );
    let (manifest, manifest_size) = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest}","size":{manifest_size}}}]}}"#
        ),
    )
    .unwrap();
}

/// The exact exit status of a run that was not a usage error: 0 on success, 1 on failure (never
/// clap's 2, nor 101 from a panic, nor death by a signal), per docs/errors.md.
#[allow(dead_code)]
pub fn assert_exit(out: &Output, args: &[&str]) {
    let want = if out.status.success() { 0 } else { 1 };
    assert_eq!(
        out.status.code(),
        Some(want),
        "imgmode {args:?} exited {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `imgmode` (state under `state`), asserting its exact exit status ([`assert_exit`]):
/// (success, stdout, stderr).
#[allow(dead_code)] // not every test crate runs commands this way
pub fn run(state: &Path, args: &[&str]) -> (bool, String, String) {
    let out = imgmode(state, args);
    assert_exit(&out, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `imgmode mirror --format json` of `images` into `dir`: (success, stderr, the JSON output).
#[allow(dead_code)]
pub fn mirror(state: &Path, dir: &Path, images: &[String]) -> (bool, String, serde_json::Value) {
    let mut args = vec!["mirror", "--format", "json", "--dir", dir.to_str().unwrap()];
    for i in images {
        args.extend(["--image", i.as_str()]);
    }
    let out = imgmode(state, &args);
    assert_exit(&out, &args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        serde_json::from_slice(&out.stdout).unwrap_or_default(),
    )
}

/// A one-image mirror directory: the test image of [`write_oci`] (`labels`, `arch`) written
/// to `src`, then `imgmode mirror`ed into `dir` as `name` (REPO:TAG); returns mirror's JSON.
#[allow(dead_code)]
pub fn mirror_test_image(
    state: &Path,
    src: &Path,
    dir: &Path,
    labels: &str,
    arch: &str,
    name: &str,
) -> serde_json::Value {
    write_oci(src, labels, arch);
    let (ok, err, out) = mirror(state, dir, &[format!("oci:{}={name}", src.display())]);
    assert!(ok, "imgmode mirror: {err}");
    out
}

/// A payload registry as imgmode writes it for a host (`root`'s `etc/imgmode/payload`), moved
/// to that root and a free loopback port and served by the real docker-registry (its log in
/// `log`); stopped when dropped.
#[allow(dead_code)]
pub struct PayloadRegistry {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for PayloadRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serve the payload registry whose files imgmode wrote under `root` (see [`PayloadRegistry`]).
#[allow(dead_code)]
pub fn serve_payload_registry(root: &Path, log: &Path) -> PayloadRegistry {
    use imgmode_ibi::payload::registry::{CONF_DIR, PORT};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = root.join(CONF_DIR);
    let yml = std::fs::read_to_string(conf.join("registry.yml"))
        .unwrap()
        .replace(&format!("/{CONF_DIR}"), conf.to_str().unwrap())
        .replace(&format!("127.0.0.1:{PORT}"), &format!("127.0.0.1:{port}"));
    std::fs::write(conf.join("registry.yml"), yml).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(conf.join("registry.yml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    wait_for_port(port);
    PayloadRegistry { child, port }
}

/// Wait (up to 10 s) until something listens on the loopback `port`.
#[allow(dead_code)]
pub fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
