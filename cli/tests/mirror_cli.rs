//! `imgmode mirror`: images (single and manifest lists, from OCI layouts) into the
//! distribution layout; a stock docker-registry serves them by tag and digest; blobs are
//! shared, a second run fetches nothing, a corrupted source and a full disk are refused
//! before any repository links to anything.

mod common;
use common::{imgmode, mirror, mirror_test_image, require, run, write_oci, Need};
use std::path::Path;
use std::process::Command;

fn index_digest(layout: &Path) -> (String, u64) {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    (
        v["manifests"][0]["digest"].as_str().unwrap().to_string(),
        v["manifests"][0]["size"].as_u64().unwrap(),
    )
}

/// An OCI layout whose top entry is an image index of an amd64 and an arm64 image.
fn write_list(dir: &Path) -> String {
    use sha2::Digest;
    write_oci(dir, r#""n":"amd""#, "amd64");
    let (m1, s1) = index_digest(dir);
    write_oci(dir, r#""n":"arm""#, "arm64");
    let (m2, s2) = index_digest(dir);
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{m1}","size":{s1},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{m2}","size":{s2},"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#
    );
    let d = hex::encode(sha2::Sha256::digest(list.as_bytes()));
    std::fs::write(dir.join(format!("blobs/sha256/{d}")), &list).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:{d}","size":{}}}]}}"#,
            list.len()
        ),
    )
    .unwrap();
    format!("sha256:{d}")
}

/// `docker-registry serve` over `root` (read-only) on a free loopback port.
struct Served(std::process::Child, u16);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(root: &Path, work: &Path) -> Served {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = work.join("registry.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    readonly:\n      enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            root.display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for_port(port);
    Served(child, port)
}

fn skopeo(args: &[&str]) -> (bool, String) {
    let out = Command::new("skopeo").args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn mirrored_images_are_served_by_a_stock_registry() {
    require!(Need::Tool("skopeo"), Need::Tool("docker-registry"));
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    let (one, two, list) = (t.join("one"), t.join("two"), t.join("list"));
    write_oci(&one, r#""n":"one""#, "amd64");
    write_oci(&two, r#""n":"two""#, "amd64");
    let list_digest = write_list(&list);
    let (one_digest, _) = index_digest(&one);
    let dir = t.join("mirror");
    let images = vec![
        format!("oci:{}=test/one:v1", one.display()),
        format!("oci:{}=test/two:v2", two.display()),
        format!("oci:{}=test/list:multi", list.display()),
    ];
    let (ok, err, out) = mirror(t, &dir, &images);
    assert!(ok, "{err}");
    assert_eq!(out["images"][0]["digest"], one_digest.as_str());
    assert_eq!(out["images"][2]["digest"], list_digest.as_str());
    assert_eq!(out["images"][2]["manifests"], 3);
    // one layer shared by all four images: stored once
    let layer_links = |repo: &str| {
        std::fs::read_dir(dir.join(format!(
            "docker/registry/v2/repositories/{repo}/_layers/sha256"
        )))
        .unwrap()
        .count()
    };
    assert_eq!(layer_links("test/one"), 2);
    assert_eq!(layer_links("test/list"), 3);
    let blobs = out["blobs"].as_u64().unwrap();
    assert_eq!(blobs, 10, "{out}");
    assert!(!dir.join(".imgmode-mirror-staging").exists());
    assert_eq!(out["payload"]["images"].as_array().unwrap().len(), 3);
    assert_eq!(
        out["payload"]["architectures"],
        serde_json::json!(["amd64", "arm64"])
    );
    let (ok, stdout, err) = run(
        t,
        &[
            "payload",
            "verify",
            dir.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["blobs"], 10);

    // a second run fetches nothing new
    let (ok, err, again) = mirror(t, &dir, &images);
    assert!(ok, "{err}");
    assert_eq!(again["new_blobs"], 0, "{again}");

    // a stock registry serves them, by tag and by digest
    let reg = serve(&dir, t);
    let base = format!("docker://127.0.0.1:{}", reg.1);
    let (ok, text) = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("{base}/test/one:v1"),
    ]);
    assert!(ok && text.trim() == one_digest, "{text}");
    let (ok, text) = skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("{base}/test/one@{one_digest}"),
        &format!("oci:{}", t.join("pulled").display()),
    ]);
    assert!(ok, "pull by digest: {text}");
    let (ok, text) = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("{base}/test/list:multi"),
    ]);
    assert!(ok && text.contains("arm64"), "the list: {text}");
    let (ok, text) = skopeo(&[
        "copy",
        "--quiet",
        "--all",
        "--src-tls-verify=false",
        &format!("{base}/test/list@{list_digest}"),
        &format!("oci:{}", t.join("pulled-list").display()),
    ]);
    assert!(ok, "pull the list by digest: {text}");
    drop(reg);

    // a tampered blob is found, by name
    let layer = dir.join(format!(
        "docker/registry/v2/blobs/sha256/{}",
        &one_digest[7..9]
    ));
    let data = layer.join(&one_digest[7..]).join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&data, bytes).unwrap();
    let (ok, _, err) = run(t, &["payload", "verify", dir.to_str().unwrap()]);
    assert!(!ok && err.contains("is corrupted"), "{err}");
    assert!(err.contains(&one_digest[7..]), "{err}");
}

#[test]
fn a_corrupted_source_is_refused_and_nothing_is_linked() {
    require!(Need::Tool("skopeo"));
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    let src = t.join("src");
    write_oci(&src, r#""n":"bad""#, "amd64");
    // flip a byte of the layer (the largest blob)
    let layer = std::fs::read_dir(src.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[600] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    let dir = t.join("mirror");
    let (ok, err, _) = mirror(t, &dir, &[format!("oci:{}=test/bad:v1", src.display())]);
    assert!(!ok, "a corrupted blob was mirrored");
    assert!(
        err.contains("does not match") || err.contains("Digest did not match"),
        "{err}"
    );
    assert!(!dir.join("docker/registry/v2/repositories").exists());
    // bad arguments name what is wrong
    let (ok, err, _) = mirror(t, &dir, &[format!("oci:{}", src.display())]);
    assert!(!ok && err.contains("names no repository"), "{err}");
    let (ok, err, _) = mirror(t, &dir, &["oci:/nonexistent=test/x:v1".to_string()]);
    assert!(!ok && err.contains("cannot be read"), "{err}");
}

#[test]
fn not_enough_space_is_refused_before_writing() {
    require!(Need::Tool("skopeo"), Need::Tmpfs);
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    let src = t.join("src");
    write_oci(&src, r#""n":"x""#, "amd64");
    let small = t.join("small");
    std::fs::create_dir(&small).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success());
    let dir = small.join("mirror");
    let (ok, err, _) = mirror(t, &dir, &[format!("oci:{}=test/x:v1", src.display())]);
    let entries = std::fs::read_dir(&dir).map(|r| r.count()).unwrap_or(0);
    let _ = Command::new("umount").arg(&small).status();
    assert!(!ok && err.contains("free; mirroring needs"), "{err}");
    assert_eq!(entries, 0, "something was written");
}

/// The payload registry's generated configuration, served by the real docker-registry:
/// TLS from its CA, the pull secret's credentials accepted, anything else refused, pushes
/// refused (read-only).
#[test]
fn the_payload_registry_authenticates_like_the_pull_secret() {
    use imgmode_ibi::payload::registry::{write_files, RegistrySetup};
    require!(Need::Tool("skopeo"), Need::Tool("docker-registry"));
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    let (src, dir) = (t.join("src"), t.join("payload"));
    mirror_test_image(t, &src, &dir, r#""n":"p""#, "amd64", "org/app:1.0");
    // "payload:s3cret"
    let secret = r#"{"auths":{"localhost:22625":{"auth":"cGF5bG9hZDpzM2NyZXQ="}}}"#;
    let setup = RegistrySetup::new(secret).unwrap();
    let payload = imgmode_image::mirror::Payload::read(&dir).unwrap();
    let root = t.join("root");
    write_files(
        &root,
        &setup.files(
            dir.to_str().unwrap(),
            &payload,
            None,
            true,
            imgmode_ibi::payload::registry::Listen::Loopback,
        ),
    )
    .unwrap();
    let served = common::serve_payload_registry(&root, &t.join("registry.log"));
    let port = served.port;
    let certs = root.join("etc/containers/certs.d/localhost:22625");
    let cert_dir = format!("--cert-dir={}", certs.display());
    let image = format!("docker://localhost:{port}/org/app:1.0");
    let good = skopeo(&[
        "inspect",
        "--raw",
        &cert_dir,
        "--creds",
        "payload:s3cret",
        &image,
    ]);
    let none = skopeo(&["inspect", "--raw", &cert_dir, "--no-creds", &image]);
    let wrong = skopeo(&[
        "inspect",
        "--raw",
        &cert_dir,
        "--creds",
        "payload:nope",
        &image,
    ]);
    let untrusted = skopeo(&["inspect", "--raw", "--creds", "payload:s3cret", &image]);
    let push = skopeo(&[
        "copy",
        "--dest-cert-dir",
        certs.to_str().unwrap(),
        "--dest-creds",
        "payload:s3cret",
        &format!("oci:{}", src.display()),
        &format!("docker://localhost:{port}/org/pushed:1"),
    ]);
    drop(served);
    assert!(good.0, "with the pull secret's credentials: {}", good.1);
    assert!(good.1.contains("schemaVersion"));
    assert!(
        !none.0 && none.1.contains("authentication required"),
        "{}",
        none.1
    );
    assert!(!wrong.0, "a wrong password was accepted");
    assert!(
        !untrusted.0 && untrusted.1.contains("certificate"),
        "{}",
        untrusted.1
    );
    assert!(!push.0, "the payload registry accepted a push");
}

/// A host's payload store: two payloads added (shared blobs stored once), status lists them
/// and what is in use, removing the one in use is refused, removing the other deletes its
/// tags and the blobs only it used, and the store still verifies.
#[test]
fn payloads_are_added_listed_and_removed_unless_in_use() {
    require!(Need::Tool("skopeo"), Need::Tool("etcd"));
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    let (a, b) = (t.join("a"), t.join("b"));
    let (pa, pb) = (t.join("payload-a"), t.join("payload-b"));
    mirror_test_image(t, &a, &pa, r#""n":"a""#, "amd64", "rel/a:1");
    mirror_test_image(t, &b, &pb, r#""n":"b""#, "amd64", "rel/b:2");
    let store = t.join("store");
    let storage = t.join("storage");
    let s = store.to_str().unwrap();
    let run = |args: &[&str]| run(t, args);
    let mirrors = t.join("etc/60-imgmode-payload.conf");
    let mut ids = vec![];
    for p in [&pa, &pb] {
        let (ok, out, err) = run(&[
            "payload",
            "add",
            p.to_str().unwrap(),
            "--store",
            s,
            "--mirrors-conf",
            mirrors.to_str().unwrap(),
            "--format",
            "json",
        ]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["already_held"], false, "{out}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    // the mirrors file is written for what the store holds (these payloads' images came from
    // oci: layouts, which no registries.conf mirror names: the header alone)
    assert!(std::fs::read_to_string(&mirrors)
        .unwrap()
        .starts_with("# Written by imgmode"));
    // the InternalReleaseImage record: both wanted, both available, with their images
    let iri: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("internalreleaseimage.json")).unwrap())
            .unwrap();
    assert_eq!(iri["kind"], "InternalReleaseImage");
    assert_eq!(
        iri["spec"]["releases"].as_array().unwrap().len(),
        2,
        "{iri}"
    );
    for r in iri["status"]["releases"].as_array().unwrap() {
        let cond = |k: &str| {
            r["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == k)
                .unwrap()["status"]
                .clone()
        };
        assert_eq!(
            (cond("Importing"), cond("Available"), cond("Degraded")),
            ("False".into(), "True".into(), "False".into()),
            "{iri}"
        );
        assert_eq!(r["images"].as_array().unwrap().len(), 1, "{iri}");
    }
    // an attached medium's import (what the udev-started unit runs): held and available
    // already, nothing is copied again; a source without a payload is left alone
    let (ok, out, err) = run(&[
        "payload",
        "add",
        "--attached",
        pa.to_str().unwrap(),
        "--store",
        s,
    ]);
    assert!(
        ok && out.contains("already") && out.contains(&ids[0]),
        "{out}{err}"
    );
    let (ok, out, err) = run(&[
        "payload",
        "add",
        "--attached",
        a.to_str().unwrap(),
        "--store",
        s,
    ]);
    assert!(ok && out.contains("carries no payload"), "{out}{err}");
    let (ok, _, err) = run(&["payload", "status", "--store", s]);
    assert!(ok && err.is_empty(), "{err}");
    let blob_count = || {
        std::fs::read_dir(store.join("docker/registry/v2/blobs/sha256"))
            .unwrap()
            .map(|p| std::fs::read_dir(p.unwrap().path()).unwrap().count())
            .sum::<usize>()
    };
    // a: manifest, config, layer; b: manifest, config (the layer is shared); and each
    // payload's record image (manifest, config, the record's layer) that other nodes copy it by
    assert_eq!(blob_count(), 5 + 2 * 3);
    // a blob the store holds is trusted only after it hashes to its name again: damaged, it
    // is copied again when a payload that needs it is added
    let damaged = std::fs::read_dir(store.join("docker/registry/v2/blobs/sha256"))
        .unwrap()
        .flat_map(|p| std::fs::read_dir(p.unwrap().path()).unwrap())
        .map(|b| b.unwrap().path().join("data"))
        .next()
        .unwrap();
    let good = std::fs::read(&damaged).unwrap();
    std::fs::write(&damaged, b"damaged").unwrap();
    for p in [&pa, &pb] {
        let (ok, _, err) = run(&["payload", "add", p.to_str().unwrap(), "--store", s]);
        assert!(ok, "{err}");
    }
    assert_eq!(
        std::fs::read(&damaged).unwrap(),
        good,
        "the damaged blob was kept"
    );
    assert_eq!(blob_count(), 5 + 2 * 3);
    // payload a's image is in the container storage: in use
    let (a_digest, _) = index_digest(&a);
    std::fs::create_dir_all(storage.join("overlay-images")).unwrap();
    std::fs::write(
        storage.join("overlay-images/images.json"),
        format!(r#"[{{"id":"x","names":["rel/a:1"],"digest":"{a_digest}"}}]"#),
    )
    .unwrap();
    let st = storage.to_str().unwrap();
    let (ok, out, err) = run(&[
        "payload",
        "status",
        "--store",
        s,
        "--storage",
        st,
        "--format",
        "json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    let in_use: Vec<bool> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|h| !h["in_use"].as_array().unwrap().is_empty())
        .collect();
    let a_pos = v
        .as_array()
        .unwrap()
        .iter()
        .position(|h| h["payload"]["id"] == ids[0].as_str())
        .unwrap();
    assert!(in_use[a_pos] && !in_use[1 - a_pos], "{out}");
    let (ok, _, err) = run(&["payload", "remove", &ids[0], "--store", s, "--storage", st]);
    assert!(!ok && err.contains("is in use"), "{err}");
    // opting out is refused as long, naming the payload, and changes nothing
    let root = t.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let (ok, _, err) = run(&[
        "payload",
        "opt-out",
        "--store",
        s,
        "--storage",
        st,
        "--root",
        root.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("would delete payloads in use") && err.contains(&ids[0]),
        "{err}"
    );
    assert_eq!(blob_count(), 5 + 2 * 3);
    // a host that serves nothing has nothing to opt out of
    let (ok, out, err) = run(&[
        "payload",
        "opt-out",
        "--store",
        t.join("no-store").to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("nothing to opt out of"), "{out}{err}");
    let (ok, out, err) = run(&["payload", "status", "--store", s, "--storage", st]);
    assert!(ok, "{err}");
    assert!(
        out.contains("Available=True since ") && out.contains("(ReleaseCopied)"),
        "{out}"
    );
    // the cluster's current release (its ClusterVersion in etcd, by digest) is a user too:
    // payload b holds it, so b stays until the cluster has moved on
    let etcd = imgmode_testkit::TestEtcd::start();
    let (b_digest, _) = index_digest(&b);
    let cv = |image: &str| {
        imgmode_support::runtime::block_on(async {
            let mut e = imgmode_recert::etcd::Etcd::connect(&etcd.endpoint).await?;
            let key = "/kubernetes.io/config.openshift.io/clusterversions/version";
            let old = e.get(key).await?;
            let value = serde_json::json!({"apiVersion": "config.openshift.io/v1",
                "kind": "ClusterVersion", "metadata": {"name": "version"},
                "status": {"desired": {"image": image}}});
            let obj = match old {
                Some(o) => imgmode_recert::etcd::EtcdObject { value, ..o },
                None => imgmode_recert::etcd::EtcdObject::new(key, value),
            };
            e.put(&obj).await
        })
        .unwrap()
        .unwrap()
    };
    cv(&format!("quay.io/rel/b@{b_digest}"));
    let with_etcd = |id: &str| {
        run(&[
            "payload",
            "remove",
            id,
            "--store",
            s,
            "--storage",
            st,
            "--etcd-endpoint",
            &etcd.endpoint,
        ])
    };
    let (ok, _, err) = with_etcd(&ids[1]);
    assert!(
        !ok && err.contains("is in use")
            && err.contains("the cluster's current release quay.io/rel/b@"),
        "{err}"
    );
    // a release by tag cannot be matched to a payload: refused, saying so
    cv("quay.io/rel/b:4.18");
    let (ok, _, err) = with_etcd(&ids[1]);
    assert!(!ok && err.contains("is named by tag"), "{err}");
    // the cluster moved on to another release (the test cluster's upgrade, as `oc adm upgrade
    // --to-image` would move it; by tag it is refused): b may go
    cv(&format!("quay.io/rel/b@{b_digest}"));
    let upgrade = |image: &str| {
        run(&[
            "internal",
            "test-cluster",
            "upgrade",
            "--to-image",
            image,
            "--etcd-endpoint",
            &etcd.endpoint,
        ])
    };
    let (ok, _, err) = upgrade("quay.io/rel/other:4.19");
    assert!(!ok && err.contains("name the release by digest"), "{err}");
    let other = format!("quay.io/rel/other@sha256:{}", "e".repeat(64));
    let (ok, out, err) = upgrade(&other);
    assert!(
        ok && out.trim() == format!("quay.io/rel/b@{b_digest}"),
        "{out}{err}"
    );
    let cv_now = imgmode_testkit::cluster::get(
        &etcd.endpoint,
        "/kubernetes.io/config.openshift.io/clusterversions/version",
    )
    .unwrap();
    assert_eq!(cv_now["spec"]["desiredUpdate"]["image"], other.as_str());
    assert_eq!(cv_now["status"]["history"][0]["image"], other.as_str());
    let (ok, _, err) = run(&[
        "payload",
        "remove",
        &ids[1],
        "--store",
        s,
        "--storage",
        st,
        "--etcd-endpoint",
        &etcd.endpoint,
        "--mirrors-conf",
        mirrors.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(blob_count(), 3 + 3);
    let iri: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("internalreleaseimage.json")).unwrap())
            .unwrap();
    assert_eq!(
        iri["spec"]["releases"],
        serde_json::json!([{"name": ids[0]}]),
        "{iri}"
    );
    assert_eq!(
        iri["status"]["releases"].as_array().unwrap().len(),
        1,
        "{iri}"
    );
    assert!(mirrors.is_file(), "payload a is still held");
    assert!(!store.join("docker/registry/v2/repositories/rel/b").exists());
    assert!(store
        .join("docker/registry/v2/repositories/rel/a/_manifests/tags/1/current/link")
        .is_file());
    let (ok, _, err) = run(&["payload", "verify", s]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["payload", "remove", &ids[1], "--store", s, "--storage", st]);
    assert!(!ok && err.contains("holds no payload"), "{err}");
}

/// A payload whose image an ostree deployment runs is in use: `payload status` names the
/// deployment, `payload remove` is refused naming it, and once the deployment is gone the
/// removal goes through. The deployment is a real one (`ostree admin deploy`) of a commit
/// carrying the image's manifest, as the container importer writes it.
#[test]
fn a_payload_a_deployment_runs_is_not_removed() {
    require!(Need::Tool("skopeo"), Need::Tool("ostree"));
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    let (a, pa) = (t.join("a"), t.join("payload-a"));
    mirror_test_image(t, &a, &pa, r#""n":"a""#, "amd64", "rel/a:1");
    let store = t.join("store");
    let storage = t.join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let (s, st) = (store.to_str().unwrap(), storage.to_str().unwrap());
    let (ok, out, err) = run(
        t,
        &[
            "payload",
            "add",
            pa.to_str().unwrap(),
            "--store",
            s,
            "--format",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // a sysroot deploying a commit of image a (its manifest and digest in the commit's
    // metadata, the keys the container importer writes)
    let sysroot = t.join("sysroot");
    let tree = t.join("tree");
    std::fs::create_dir_all(tree.join("usr/lib/modules/6.1.0-test")).unwrap();
    std::fs::create_dir_all(tree.join("usr/etc")).unwrap();
    std::fs::write(tree.join("usr/lib/modules/6.1.0-test/vmlinuz"), "k").unwrap();
    std::fs::write(tree.join("usr/lib/modules/6.1.0-test/initramfs.img"), "i").unwrap();
    std::fs::write(tree.join("usr/etc/os-release"), "ID=test\n").unwrap();
    let (digest, _) = index_digest(&a);
    let manifest = std::fs::read_to_string(
        a.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    std::fs::create_dir_all(&sysroot).unwrap();
    let ostree = |args: &[String]| {
        let o = Command::new("ostree").args(args).output().unwrap();
        assert!(
            o.status.success(),
            "ostree {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let sr = format!("--sysroot={}", sysroot.display());
    ostree(&[
        "admin".into(),
        "init-fs".into(),
        "--modern".into(),
        sysroot.display().to_string(),
    ]);
    ostree(&[
        "admin".into(),
        "os-init".into(),
        "default".into(),
        sr.clone(),
    ]);
    let commit = ostree(&[
        "commit".into(),
        format!("--repo={}/ostree/repo", sysroot.display()),
        "--branch=test".into(),
        format!("--tree=dir={}", tree.display()),
        format!("--add-metadata-string=ostree.manifest-digest={digest}"),
        format!("--add-metadata-string=ostree.manifest={manifest}"),
    ]);
    ostree(&[
        "admin".into(),
        "deploy".into(),
        sr.clone(),
        "--os=default".into(),
        "test".into(),
    ]);
    let deployment = format!("the deployment default-{commit}.0");

    let sysroot_s = sysroot.to_str().unwrap();
    let users = ["--store", s, "--storage", st, "--sysroot", sysroot_s];
    let (ok, out, err) = run(
        t,
        &[&["payload", "status"][..], &users, &["--format", "json"]].concat(),
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["in_use"][0]["digest"], digest.as_str(), "{out}");
    assert_eq!(v[0]["in_use"][0]["by"][0], deployment.as_str(), "{out}");
    let (ok, out, err) = run(t, &[&["payload", "status"][..], &users].concat());
    assert!(
        ok && out.contains(&format!("in use: {digest} by {deployment}")),
        "{out}{err}"
    );
    let (ok, _, err) = run(t, &[&["payload", "remove", &id][..], &users].concat());
    assert!(
        !ok && err.contains(&format!(
            "the payload {id} is in use: {digest} by {deployment}"
        )),
        "{err}"
    );
    assert!(store.join("docker/registry/v2/repositories/rel/a").exists());
    // without a sysroot (a host that is not an ostree system) nothing runs it
    let plain = t.join("plain-root");
    std::fs::create_dir_all(&plain).unwrap();
    let (ok, out, err) = run(
        t,
        &[
            "payload",
            "status",
            "--store",
            s,
            "--storage",
            st,
            "--sysroot",
            plain.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["in_use"],
        serde_json::json!([])
    );
    // the deployment gone, the payload goes
    ostree(&["admin".into(), "undeploy".into(), sr, "0".into()]);
    let (ok, _, err) = run(t, &[&["payload", "remove", &id][..], &users].concat());
    assert!(ok, "{err}");
    assert!(!store.join("docker/registry/v2/repositories/rel/a").exists());
}

/// `payload add` from an ISO that carries /payload (as an installation ISO made with
/// --payload does), mounted read-only while it is copied.
#[test]
fn a_payload_is_added_from_an_iso() {
    require!(Need::Tool("skopeo"), Need::Tool("xorriso"), Need::Root);
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    let payload = t.join("payload");
    let out = mirror_test_image(
        t,
        &t.join("src"),
        &payload,
        r#""n":"iso""#,
        "amd64",
        "rel/iso:1",
    );
    let iso = t.join("extended.iso");
    let st = Command::new("xorriso")
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-r",
            "-V",
            "imgmode-ibi",
            "-graft-points",
            "-o",
        ])
        .arg(&iso)
        .arg(format!("/payload={}", payload.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let store = t.join("store");
    let s = store.to_str().unwrap();
    let (ok, stdout, err) = run(
        t,
        &[
            "payload",
            "add",
            iso.to_str().unwrap(),
            "--store",
            s,
            "--format",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["id"], out["payload"]["id"]);
    let (ok, _, err) = run(t, &["payload", "verify", s]);
    assert!(ok, "{err}");
    // an ISO without a payload says so
    let empty = t.join("empty.iso");
    std::fs::create_dir(t.join("nothing")).unwrap();
    std::fs::write(t.join("nothing/README"), "no payload here").unwrap();
    let st = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-r", "-o"])
        .arg(&empty)
        .arg(t.join("nothing"))
        .status()
        .unwrap();
    assert!(st.success());
    let (ok, _, err) = run(
        t,
        &["payload", "add", empty.to_str().unwrap(), "--store", s],
    );
    assert!(!ok && err.contains("carries no payload"), "{err}");
}

/// An ISO whose payload the filesystem cannot hold is refused before anything is copied, with
/// the size it needs; the filesystem is left as it was.
#[test]
fn a_payload_iso_larger_than_the_free_space_is_refused_before_copying() {
    require!(
        Need::Tool("skopeo"),
        Need::Tool("xorriso"),
        Need::Root,
        Need::Tmpfs
    );
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    let payload = t.join("payload");
    mirror_test_image(
        t,
        &t.join("src"),
        &payload,
        r#""n":"big""#,
        "amd64",
        "rel/big:1",
    );
    let iso = t.join("payload.iso");
    let st = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-r", "-graft-points", "-o"])
        .arg(&iso)
        .arg(format!("/payload={}", payload.display()))
        .status()
        .unwrap();
    assert!(st.success());
    // an 8 MiB filesystem: less than the payload and the 16 MiB kept to spare
    let small = t.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success(), "mounting an 8 MiB tmpfs failed");
    let result = std::panic::catch_unwind(|| {
        // a host's store, which records the failed import (a store is never made for one)
        let store = small.join("store");
        std::fs::create_dir_all(&store).unwrap();
        let (ok, _, err) = run(
            t,
            &[
                "payload",
                "add",
                iso.to_str().unwrap(),
                "--store",
                store.to_str().unwrap(),
            ],
        );
        assert!(!ok, "added onto a filesystem too small: {err}");
        let iso9660 = std::fs::read_to_string("/proc/filesystems")
            .unwrap()
            .contains("iso9660");
        if iso9660 {
            // mounted: the store's own check names the bytes it lacks
            assert!(
                err.contains("free; the payload") && err.contains("more"),
                "{err}"
            );
        } else {
            assert!(
                err.contains("carries a payload of")
                    && err.contains(&format!("is read into {} first", small.display()))
                    && err.contains("it needs"),
                "{err}"
            );
        }
        let left: Vec<_> = std::fs::read_dir(&small)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "store")
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        assert!(
            !store.join("docker").exists(),
            "blobs were copied into the store"
        );
        {
            // the record says why: Degraded, with the message
            let iri: serde_json::Value = serde_json::from_slice(
                &std::fs::read(store.join("internalreleaseimage.json")).unwrap(),
            )
            .unwrap();
            let c = &iri["status"]["releases"][0]["conditions"];
            let deg = c
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Degraded")
                .unwrap();
            assert_eq!(deg["status"], "True", "{iri}");
            assert_eq!(deg["reason"], "ImportFailed", "{iri}");
            assert!(deg["message"].as_str().unwrap().contains("free"), "{iri}");
        }
    });
    let _ = Command::new("umount").arg(&small).status();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// An installed host's registry names the host (`payload tls`: its addresses, host name and
/// the cluster post-pivot named), and `payload join-config` points a new node at it, refused
/// for a name the certificate lacks; without the CA's key a missing name is refused by name.
#[test]
fn the_registry_names_this_host_and_a_new_node_is_pointed_at_it() {
    use imgmode_ibi::payload::registry::{write_files, Listen, RegistrySetup, CA_KEY, CONF_DIR};
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    let root = t.join("root");
    let secret = r#"{"auths":{"localhost:22625":{"auth":"cGF5bG9hZDpzM2NyZXQ="}}}"#;
    let setup = RegistrySetup::new(secret).unwrap().for_this_host().unwrap();
    let store = t.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let digest = format!("sha256:{}", "b".repeat(64));
    let payload = imgmode_image::mirror::Payload {
        id: "sha256:p1".into(),
        images: vec![imgmode_image::mirror::Mirrored {
            source: "docker://quay.io/edge/seed:4.17".into(),
            repo: "edge/seed".into(),
            tag: Some("4.17".into()),
            digest: digest.clone(),
            manifests: 1,
        }],
        architectures: vec!["amd64".into()],
    };
    std::fs::write(
        store.join(imgmode_image::mirror::PAYLOAD_RECORD),
        serde_json::to_vec(&payload).unwrap(),
    )
    .unwrap();
    write_files(
        &root,
        &setup.files("/p", &payload, None, false, Listen::Cluster),
    )
    .unwrap();
    let pp = t.join("post-pivot");
    std::fs::create_dir_all(&pp).unwrap();
    std::fs::write(
        pp.join("reconfigured.json"),
        r#"{"cluster_name":"edge1","base_domain":"example.org","cluster_id":"c","infra_id":"i","hostname":"h"}"#,
    )
    .unwrap();
    let (r, s, pps) = (
        root.to_str().unwrap(),
        store.to_str().unwrap(),
        pp.to_str().unwrap(),
    );
    let tls = ["payload", "tls", "--root", r, "--post-pivot-state", pps];
    let (ok, out, err) = run(t, &tls);
    assert!(ok, "{err}");
    assert!(
        out.contains("issued again for") && out.contains("api-int.edge1.example.org"),
        "{out}"
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(out.contains(host.trim()), "{out}");
    let (ok, out, _) = run(t, &tls);
    assert!(
        ok && out.contains("names") && out.contains("already"),
        "{out}"
    );
    let join = |registry: &str| {
        imgmode(
            t,
            &[
                "payload",
                "join-config",
                "--registry",
                registry,
                "--root",
                r,
                "--store",
                s,
            ],
        )
    };
    let out = join("api-int.edge1.example.org");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("#     quay.io/edge/seed@{digest}"))
            && text.contains("- api-int.edge1.example.org:22625/edge/seed"),
        "{text}"
    );
    let out = join("10.9.9.9");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the payload registry's certificate does not name 10.9.9.9"),
        "{err}"
    );
    let out = join("a/b");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("give the host name or address other nodes reach this one by"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // a host whose registry has no CA key cannot name a new cluster
    std::fs::remove_file(root.join(CONF_DIR).join(CA_KEY)).unwrap();
    std::fs::write(
        pp.join("reconfigured.json"),
        r#"{"cluster_name":"edge2","base_domain":"example.org","cluster_id":"c","infra_id":"i","hostname":"h"}"#,
    )
    .unwrap();
    let out = imgmode(t, &tls);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("api-int.edge2.example.org")
            && err.contains("is missing, so it cannot be issued again"),
        "{err}"
    );
}

/// A real cluster's etcd serves HTTPS and requires client certificates: the cluster's current
/// release is read with `--etcd-cacert`, `--etcd-cert` and `--etcd-key`; without them, or with a
/// client certificate it does not trust, the command fails saying so and removes nothing.
#[test]
fn the_cluster_release_is_read_from_an_etcd_that_requires_client_certificates() {
    use imgmode_ibi::pki::{ca, leaf, pem_cert, pem_key};
    use imgmode_recert::etcd::ClientTls;
    require!(Need::Tool("skopeo"), Need::Tool("etcd"));
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    let payload = t.join("payload");
    mirror_test_image(
        t,
        &t.join("src"),
        &payload,
        r#""n":"r""#,
        "amd64",
        "rel/r:1",
    );
    let store = t.join("store");
    let (s, st) = (store.to_str().unwrap(), t.join("storage"));
    std::fs::create_dir_all(&st).unwrap();
    let (ok, out, err) = run(
        t,
        &[
            "payload",
            "add",
            payload.to_str().unwrap(),
            "--store",
            s,
            "--format",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let record = imgmode_image::mirror::Payload::read(&payload).unwrap();
    let digest = record.images[0].digest.clone();
    // the etcd's PKI: its CA, a serving certificate for 127.0.0.1, a client certificate; and a
    // client certificate of another CA
    // the keys among them 0600 from the start, as every file holding a key
    let write = |name: &str, text: String| {
        let p = t.join(name);
        imgmode_support::fs::write_atomic(&p, text.as_bytes(), 0o600).unwrap();
        p
    };
    let signer = ca("etcd-signer", 1).unwrap();
    let server = leaf(&signer, None, "etcd", &["127.0.0.1"], true, 1).unwrap();
    let client = leaf(
        &signer,
        Some("system:etcd-peers"),
        "etcd-client",
        &[],
        false,
        1,
    )
    .unwrap();
    let other = ca("someone-else", 1).unwrap();
    let stranger = leaf(&other, None, "stranger", &[], false, 1).unwrap();
    let ca_pem = write("ca.crt", pem_cert(&signer).unwrap());
    let server_tls = ClientTls {
        ca: ca_pem.clone(),
        cert: write("server.crt", pem_cert(&server).unwrap()),
        key: write("server.key", pem_key(&server).unwrap()),
    };
    let client_tls = ClientTls {
        ca: ca_pem.clone(),
        cert: write("client.crt", pem_cert(&client).unwrap()),
        key: write("client.key", pem_key(&client).unwrap()),
    };
    let etcd = imgmode_testkit::TestEtcd::start_tls(&server_tls, &client_tls);
    assert!(etcd.endpoint.starts_with("https://"), "{}", etcd.endpoint);
    let key = "/kubernetes.io/config.openshift.io/clusterversions/version";
    imgmode_support::runtime::block_on(async {
        let mut e =
            imgmode_recert::etcd::Etcd::connect_with(&etcd.endpoint, Some(&client_tls)).await?;
        let value = serde_json::json!({"apiVersion": "config.openshift.io/v1",
            "kind": "ClusterVersion", "metadata": {"name": "version"},
            "status": {"desired": {"image": format!("quay.io/rel/r@{digest}")}}});
        e.put(&imgmode_recert::etcd::EtcdObject::new(key, value))
            .await
    })
    .unwrap()
    .unwrap();
    let remove = |tls: Option<(&Path, &Path, &Path)>| {
        let mut args = vec![
            "payload".to_string(),
            "remove".into(),
            id.clone(),
            "--store".into(),
            s.into(),
            "--storage".into(),
            st.display().to_string(),
            "--etcd-endpoint".into(),
            etcd.endpoint.clone(),
        ];
        if let Some((ca, cert, k)) = tls {
            for (flag, p) in [
                ("--etcd-cacert", ca),
                ("--etcd-cert", cert),
                ("--etcd-key", k),
            ] {
                args.push(flag.into());
                args.push(p.display().to_string());
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        imgmode(t, &args)
    };
    let out = remove(Some((&ca_pem, &client_tls.cert, &client_tls.key)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is in use") && err.contains("the cluster's current release quay.io/rel/r@"),
        "{err}"
    );
    let out = remove(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("serves HTTPS: give its CA, a client certificate and its key"),
        "{err}"
    );
    let (sc, sk) = (
        write("stranger.crt", pem_cert(&stranger).unwrap()),
        write("stranger.key", pem_key(&stranger).unwrap()),
    );
    let out = remove(Some((&ca_pem, &sc, &sk)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("connecting to etcd at https://"), "{err}");
    // the flags come together
    let out = imgmode(
        t,
        &[
            "payload",
            "status",
            "--store",
            s,
            "--etcd-endpoint",
            &etcd.endpoint,
            "--etcd-cacert",
            ca_pem.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        store.join("docker/registry/v2/repositories/rel/r").is_dir(),
        "nothing was removed"
    );
}
