//! `imgmode payload pull`: a payload held by one node's store, served by the real
//! docker-registry with the payload registry's generated configuration (TLS from the node's CA,
//! the pull secret's credentials), is copied into another node's store by digest: the same
//! record, every blob verified, the InternalReleaseImage record Available; a second pull copies
//! nothing; wrong credentials and an untrusted CA are refused and leave no store behind.

mod common;
use common::{imgmode, mirror_test_image, require, run, Need};
use std::path::Path;

/// "payload:s3cret"
const SECRET: &str = r#"{"auths":{"localhost:22625":{"auth":"cGF5bG9hZDpzM2NyZXQ="}}}"#;

/// A node's payload registry over `store`, as its installed files configure it (a CA of its
/// own, the pull secret's credentials), under this test's `root`.
fn serve_node(t: &Path, root: &Path, store: &Path) -> common::PayloadRegistry {
    use imgmode_ibi::payload::registry::{write_files, Listen, RegistrySetup};
    let setup = RegistrySetup::new(SECRET).unwrap().for_this_host().unwrap();
    let payload = imgmode_image::mirror::Payload::read(store).unwrap();
    write_files(
        root,
        &setup.files(
            store.to_str().unwrap(),
            &payload,
            None,
            false,
            Listen::Loopback,
        ),
    )
    .unwrap();
    common::serve_payload_registry(root, &t.join("registry.log"))
}

#[test]
fn a_payload_is_copied_from_another_nodes_registry() {
    require!(Need::Tool("skopeo"), Need::Tool("docker-registry"));
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    let (src, dir) = (t.join("src"), t.join("payload"));
    mirror_test_image(t, &src, &dir, r#""n":"p""#, "amd64", "org/app:1.0");
    let (a, b) = (t.join("a/store"), t.join("b/store"));
    let (ok, out, err) = run(
        t,
        &[
            "payload",
            "add",
            dir.to_str().unwrap(),
            "--store",
            a.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    // node A's store serves each payload's record as an image, and still verifies
    let (ok, out, err) = run(t, &["payload", "verify", a.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let record = imgmode_image::mirror::Payload::read(&dir).unwrap();
    let root = t.join("a/root");
    let node = serve_node(t, &root, &a);
    let dial = format!("127.0.0.1:{}", node.port);
    let certs = root.join("etc/containers/certs.d/localhost:22625");
    let secret = t.join("pull-secret.json");
    // credentials: 0600 from the start
    imgmode_support::fs::write_private(&secret, SECRET).unwrap();
    let wrong = t.join("wrong.json");
    imgmode_support::fs::write_private(
        &wrong,
        &format!(r#"{{"auths":{{"{dial}":{{"auth":"cGF5bG9hZDpub3Bl"}}}}}}"#),
    )
    .unwrap();
    let pull = |extra: &[&str]| {
        let mut args = vec![
            "payload",
            "pull",
            "--registry",
            &dial,
            "--store",
            b.to_str().unwrap(),
        ];
        args.extend(extra);
        imgmode(t, &args)
    };
    let (c, s, w) = (
        certs.to_str().unwrap(),
        secret.to_str().unwrap(),
        wrong.to_str().unwrap(),
    );
    // refused: wrong credentials, and a CA this node does not trust; no store is left
    let out = pull(&["--cert-dir", c, "--authfile", w]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("listing the payloads the registry at") && err.contains("unauthorized"),
        "{err}"
    );
    let out = pull(&["--pull-secret", s]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("certificate"), "{err}");
    assert!(!b.exists(), "a refused pull leaves no store");
    let leftovers: Vec<_> = std::fs::read_dir(t.join("b"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // the pull secret's payload-registry credentials and A's CA: copied, the same record
    let out = pull(&["--cert-dir", c, "--pull-secret", s]);
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{so}{se}");
    let tag = &record.id["sha256:".len()..];
    assert!(
        so.contains(&format!(
            "copied payload {} (1 image(s)) from docker://{dial}/imgmode-payloads:{tag}",
            record.id
        )),
        "{so}"
    );
    let held = imgmode_ibi::payload::store::held(&b).unwrap();
    assert_eq!(held, vec![record.clone()], "B holds A's record as it was");
    let (ok, out, err) = run(t, &["payload", "verify", b.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let status = imgmode(
        t,
        &[
            "--format",
            "json",
            "payload",
            "status",
            "--store",
            b.to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let cond = &v[0]["release"]["conditions"];
    assert!(
        cond.as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Available"
                && c["status"] == "True"
                && c["message"].as_str().unwrap().contains(&dial)),
        "{v}"
    );
    // nothing is left of the work directory, and no credentials
    let left: Vec<_> = std::fs::read_dir(t.join("b"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["store"], "{left:?}");
    // again: nothing copied; and by ID
    let out = pull(&["--cert-dir", c, "--pull-secret", s, "--id", &record.id]);
    let so = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{so}");
    assert!(
        so.contains("holds the payload") && so.contains("already"),
        "{so}"
    );
    let out = pull(&["--cert-dir", c, "--pull-secret", s, "--id", "sha256:nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--id sha256:nope: not a payload ID"));
}
