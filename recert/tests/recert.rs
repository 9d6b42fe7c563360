//! recert end to end on generated PKIs: files and a real etcd on a loopback port.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use imgmode_recert::cert::Cert;
use imgmode_recert::config::RecertConfig;
use imgmode_recert::registry::Registry;
use imgmode_recert::text;
use imgmode_testkit::pki::{self as testpki, Pki, PkiSpec};
use imgmode_testkit::TestEtcd as Etcd;

fn start_etcd() -> Etcd {
    Etcd::start()
}

fn load(etcd: &Etcd, pki: &Pki) {
    common::rt().block_on(async {
        let mut c = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
            .await
            .unwrap();
        for (k, v) in &pki.etcd_objects {
            c.put(k.as_str(), serde_json::to_vec(v).unwrap(), None)
                .await
                .unwrap();
        }
    });
}

fn etcd_dump(etcd: &Etcd) -> Vec<(String, String)> {
    common::etcd_raw(etcd)
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
        .collect()
}

/// Every file's content plus every etcd value, with secrets' base64 data decoded.
fn everything(root: &Path, etcd: Option<&Etcd>) -> Vec<(String, String)> {
    let mut out = vec![];
    let files = imgmode_recert::filesystem::scan(&[root.to_path_buf()], &[]).unwrap();
    for f in files {
        out.push((f.location(), f.text));
    }
    if let Some(e) = etcd {
        for (k, v) in etcd_dump(e) {
            let json: serde_json::Value = serde_json::from_str(&v).unwrap();
            if let Some(data) = json.get("data").and_then(|d| d.as_object()) {
                for (f, val) in data {
                    let s = val.as_str().unwrap();
                    let t = if k.contains("/secrets/") {
                        String::from_utf8(text::b64_decode(s).unwrap()).unwrap()
                    } else {
                        s.to_string()
                    };
                    out.push((format!("etcd {k} {f}"), t));
                }
            }
        }
    }
    out
}

fn registry_of(all: &[(String, String)]) -> Registry {
    let mut reg = Registry::default();
    for (loc, t) in all {
        reg.scan_text(loc, t, true).unwrap();
    }
    reg
}

fn config(root: &Path, etcd: Option<&Etcd>, summary: &Path) -> RecertConfig {
    RecertConfig {
        static_dirs: vec![root.to_path_buf()],
        etcd_endpoint: etcd.map(|e| e.endpoint.clone()),
        summary_file: Some(summary.to_path_buf()),
        threads: Some(2),
        ..Default::default()
    }
}

fn openssl_verify(root: &Path, intermediates: &[&Path], leaf: &Path) -> bool {
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-CAfile"]).arg(root);
    for i in intermediates {
        cmd.arg("-untrusted").arg(i);
    }
    let out = cmd.arg(leaf).output().expect("openssl must be installed");
    out.status.success()
}

#[test]
fn recert_regenerates_renames_and_rewrites_files_and_etcd() {
    use imgmode_testkit::Need;
    imgmode_testkit::require!(Need::Tool("etcd"), Need::Tool("openssl"));
    let etcd = start_etcd();
    let td = tempfile::tempdir().unwrap();
    let root = td.path().join("root");
    let pki = testpki::generate(&PkiSpec::default(), &root).unwrap();
    load(&etcd, &pki);
    let before = everything(&root, Some(&etcd));
    let old = registry_of(&before);
    assert_eq!(
        old.certs.len(),
        pki.certs.len(),
        "every generated certificate is found"
    );

    // The cluster holds the admin kubeconfig CA's certificate but not its key (as in
    // OpenShift): like post-pivot, give recert a new one to put in its place.
    let other = testpki::generate(&PkiSpec::default(), &td.path().join("other")).unwrap();
    let new_admin_ca = td.path().join("admin-ca.crt");
    std::fs::write(&new_admin_ca, other.cert("admin-signer").cert_pem()).unwrap();

    // A dry run writes nothing but the summary.
    let dry_summary = td.path().join("dry.yaml");
    let mut cfg = config(&root, Some(&etcd), &dry_summary);
    cfg.use_cert_rules = vec![new_admin_ca.clone()];
    cfg.dry_run = true;
    cfg.cluster_rename = Some("new:example.org:new-9qz".into());
    let s = imgmode_recert::run(&cfg.clone().check().unwrap()).unwrap();
    assert!(s.regenerated.certificates == pki.certs.len());
    assert_eq!(
        everything(&root, Some(&etcd)),
        before,
        "dry run changed something"
    );

    let summary = td.path().join("summary.yaml");
    let clean = td.path().join("summary-clean.yaml");
    let mut cfg = config(&root, Some(&etcd), &summary);
    cfg.use_cert_rules = vec![new_admin_ca.clone()];
    cfg.summary_file_clean = Some(clean.clone());
    cfg.cluster_rename = Some("new:example.org:new-9qz".into());
    cfg.hostname = Some("new-node".into());
    cfg.ip = Some("10.0.0.7".into());
    cfg.cn_san_replace_rules = vec!["never.example.net:other.example.net".into()];
    let s = imgmode_recert::run(&cfg.clone().check().unwrap()).unwrap();
    assert_eq!(s.regenerated.certificates, pki.certs.len());
    assert_eq!(s.regenerated.private_keys, old.keys.len());
    assert_eq!(s.regenerated.jwts, 3, "{:?}", s.jwts);

    let after = everything(&root, Some(&etcd));
    let new = registry_of(&after);

    // Nothing old remains: keys (by public key), certificates, signatures, JWTs.
    let old_spkis: HashSet<_> = old.keys.iter().map(|k| k.key.spki_der()).collect();
    for k in &new.keys {
        assert!(
            !old_spkis.contains(&k.key.spki_der()),
            "old key at {:?}",
            k.locations
        );
    }
    for (spki, locs) in &new.public_keys {
        assert!(!old_spkis.contains(spki), "old public key at {locs:?}");
    }
    let old_sigs: HashSet<Vec<u8>> = old
        .certs
        .iter()
        .map(|c| c.cert.cert.signature.raw_bytes().to_vec())
        .collect();
    for c in &new.certs {
        assert!(
            !old_sigs.contains(c.cert.cert.signature.raw_bytes()),
            "old signature at {:?}",
            c.locations
        );
    }
    let old_tokens: HashSet<_> = old.jwts.iter().map(|j| j.0.clone()).collect();
    assert!(new.jwts.iter().all(|j| !old_tokens.contains(&j.0)));
    assert_eq!(new.certs.len(), old.certs.len());

    // Every chain verifies, by signature and with openssl; the old root validates nothing.
    let graph = imgmode_recert::plan::issuer_graph(&new);
    let dir = td.path().join("verify");
    std::fs::create_dir(&dir).unwrap();
    let write = |name: String, c: &Cert| {
        let p = dir.join(name);
        std::fs::write(&p, text::pem_encode("CERTIFICATE", &c.der)).unwrap();
        p
    };
    for (i, c) in new.certs.iter().enumerate() {
        let mut chain = vec![];
        let mut cur = i;
        loop {
            let j = graph[cur]
                .unwrap_or_else(|| panic!("no issuer for {}", new.certs[cur].cert.subject()));
            if j == cur {
                break;
            }
            chain.push(j);
            cur = j;
        }
        let leaf = write(format!("{i}-leaf.pem"), &c.cert);
        let root_pem = write(format!("{i}-root.pem"), &new.certs[cur].cert);
        let inter: Vec<PathBuf> = chain[..chain.len().saturating_sub(1)]
            .iter()
            .map(|&j| write(format!("{i}-inter-{j}.pem"), &new.certs[j].cert))
            .collect();
        let inter_refs: Vec<&Path> = inter.iter().map(|p| p.as_path()).collect();
        assert!(
            openssl_verify(&root_pem, &inter_refs, &leaf),
            "openssl verify failed for {}",
            c.cert.subject()
        );
        let old_root = old
            .certs
            .iter()
            .find(|o| o.cert.subject() == new.certs[cur].cert.subject())
            .unwrap();
        assert!(
            !c.cert.signed_by(&old_root.cert.spki_der),
            "old root validates {}",
            c.cert.subject()
        );
        if i != cur {
            let old_root_pem = write(format!("{i}-oldroot.pem"), &old_root.cert);
            assert!(
                !openssl_verify(&old_root_pem, &inter_refs, &leaf),
                "old root verifies {}",
                c.cert.subject()
            );
        }
    }

    // Names: the new cluster domain, hostname and IP; nothing of the seed's.
    let sans: HashSet<String> = new.certs.iter().flat_map(|c| c.cert.sans()).collect();
    for want in [
        "api.new.example.org",
        "api-int.new.example.org",
        "*.apps.new.example.org",
        "new-node",
        "10.0.0.7",
    ] {
        assert!(sans.contains(want), "no SAN {want} in {sans:?}");
    }
    for c in &new.certs {
        let names = format!(
            "{} {} {:?}",
            c.cert.subject(),
            c.cert.issuer(),
            c.cert.sans()
        );
        assert!(
            !names.contains("seed.example.com")
                && !names.contains("seed-node")
                && !names.contains("192.168.126.10"),
            "{names}"
        );
    }
    assert!(new
        .certs
        .iter()
        .any(|c| c.cert.subject().contains("system:node:new-node")));
    let all_text: String = after.iter().map(|(_, t)| t.as_str()).collect();
    assert!(
        !all_text.contains("api-int.seed.example.com"),
        "kubeconfig server URL not renamed"
    );
    assert!(all_text.contains("server: https://api-int.new.example.org:6443"));
    assert!(all_text.contains("https://console-openshift-console.apps.new.example.org"));

    // JWTs verify with the new service-account key, and its kid changed with it.
    let sa_new = new
        .keys
        .iter()
        .find(|k| {
            k.locations
                .iter()
                .any(|l| l.contains("service-account.key"))
        })
        .unwrap();
    for (tok, locs) in &new.jwts {
        let parts: Vec<&str> = tok.split('.').collect();
        use base64::Engine;
        let sig = text::B64URL.decode(parts[2]).unwrap();
        let msg = format!("{}.{}", parts[0], parts[1]);
        assert!(
            imgmode_recert::keys::verify(
                &sa_new.key.spki_der(),
                &imgmode_recert::keys::SHA256_WITH_RSA,
                msg.as_bytes(),
                &sig,
                true
            ),
            "{locs:?}"
        );
        let header: serde_json::Value =
            serde_json::from_slice(&text::B64URL.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header["kid"],
            imgmode_recert::plan::kube_kid(&sa_new.key.spki_der())
        );
    }

    // The summaries hold no key material, and say what matched nothing.
    for p in [&summary, &clean] {
        let t = std::fs::read_to_string(p).unwrap();
        assert!(
            !t.contains("PRIVATE KEY")
                && old
                    .jwts
                    .iter()
                    .chain(&new.jwts)
                    .all(|(tok, _)| !t.contains(tok.as_str()))
                && text::walk(&t, "", &mut |_p: &text::Place, item: text::Item| {
                    assert!(!matches!(item, text::Item::Jwt(_)), "a JWT in the summary");
                    Ok(None)
                })
                .is_ok(),
            "{}",
            p.display()
        );
        for k in old.keys.iter().chain(new.keys.iter()) {
            let der = k.key.to_pem_der(k.key.default_label()).unwrap();
            assert!(!t.contains(&text::b64_encode(&der)[..40]));
        }
        assert!(
            t.contains("scan_ms") && t.contains("key_generation_ms") && t.contains("commit_ms")
        );
        assert!(
            t.contains(
                "cn_san_replace_rules rule never.example.net -> other.example.net matched nothing"
            ),
            "{t}"
        );
    }
    assert!(std::fs::read_to_string(&summary)
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert!(!std::fs::read_to_string(&clean)
        .unwrap()
        .contains("BEGIN CERTIFICATE"));

    // A second run refuses unless forced.
    let err = imgmode_recert::run(&cfg.clone().check().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("already recerted"), "{err}");
}

#[test]
fn two_recerts_of_one_seed_share_no_secret() {
    let td = tempfile::tempdir().unwrap();
    let seed = td.path().join("seed");
    testpki::generate(&PkiSpec::default(), &seed).unwrap();
    let mut keys = vec![];
    for n in ["a", "b"] {
        let copy = td.path().join(n);
        assert!(Command::new("cp")
            .arg("-a")
            .arg(&seed)
            .arg(&copy)
            .status()
            .unwrap()
            .success());
        let cfg = config(&copy, None, &td.path().join(format!("{n}.yaml")));
        imgmode_recert::run(&cfg.check().unwrap()).unwrap();
        let reg = registry_of(&everything(&copy, None));
        keys.push(
            reg.keys
                .iter()
                .map(|k| k.key.spki_der())
                .collect::<HashSet<_>>(),
        );
    }
    assert!(!keys[0].is_empty());
    assert!(
        keys[0].is_disjoint(&keys[1]),
        "two recerts share a private key"
    );
}

#[test]
fn bad_input_is_named_and_leaves_the_tree_alone() {
    let td = tempfile::tempdir().unwrap();
    let root = td.path().join("root");
    let pki = testpki::generate(&PkiSpec::default(), &root).unwrap();
    let before = everything(&root, None);

    // etcd unreachable: fails before touching the filesystem.
    let mut cfg = config(&root, None, &td.path().join("s.yaml"));
    cfg.etcd_endpoint = Some(format!("http://127.0.0.1:{}", imgmode_testkit::free_port()));
    let err = format!(
        "{:#}",
        imgmode_recert::run(&cfg.check().unwrap()).unwrap_err()
    );
    assert!(err.contains("connecting to etcd at"), "{err}");
    assert_eq!(everything(&root, None), before);

    // Ed448 keys cannot be regenerated: the error names the file.
    let ed = openssl::pkey::PKey::generate_ed448()
        .unwrap()
        .private_key_to_pkcs8()
        .unwrap();
    let ed_path = root.join("etc/ed.key");
    imgmode_support::fs::write_private(&ed_path, &text::pem_encode("PRIVATE KEY", &ed)).unwrap();
    let err = format!(
        "{:#}",
        imgmode_recert::run(
            &config(&root, None, &td.path().join("s.yaml"))
                .check()
                .unwrap()
        )
        .unwrap_err()
    );
    assert!(err.contains("Ed448") && err.contains("etc/ed.key"), "{err}");
    std::fs::remove_file(&ed_path).unwrap();

    // Unparseable PEM: skipped with file and line, or fatal when asked.
    let bad = root.join("etc/bad.crt");
    std::fs::write(
        &bad,
        "x\n-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let mut strict = config(&root, None, &td.path().join("s.yaml"));
    strict.fail_on_invalid_pem = true;
    let err = format!(
        "{:#}",
        imgmode_recert::run(&strict.check().unwrap()).unwrap_err()
    );
    assert!(err.contains("etc/bad.crt line 2"), "{err}");

    // A certificate whose issuer is missing is kept and reported.
    let orphan = pki.cert("lb-serving");
    std::fs::remove_dir_all(root.join("etc/kubernetes/static-pod-resources/signers")).unwrap();
    let keep_only = td.path().join("orphan");
    std::fs::create_dir(&keep_only).unwrap();
    std::fs::write(keep_only.join("tls.crt"), orphan.cert_pem()).unwrap();
    std::fs::write(keep_only.join("bad.crt"), std::fs::read(&bad).unwrap()).unwrap();
    let s = imgmode_recert::run(
        &config(&keep_only, None, &td.path().join("o.yaml"))
            .check()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(s.regenerated.certificates, 0);
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("kept certificate") && w.contains("was not found")),
        "{:?}",
        s.warnings
    );
    assert!(
        s.warnings.iter().any(|w| w.contains("bad.crt line 2")),
        "{:?}",
        s.warnings
    );
    assert_eq!(
        std::fs::read_to_string(keep_only.join("tls.crt")).unwrap(),
        orphan.cert_pem()
    );
}

#[test]
fn force_expire_and_use_rules_keep_what_they_say() {
    let td = tempfile::tempdir().unwrap();
    let root = td.path().join("root");
    let pki = testpki::generate(&PkiSpec::default(), &root).unwrap();
    let lb = pki.cert("lb-signer");
    let ingress = pki.cert("ingress-signer");
    let given_key = td.path().join("lb.key");
    std::fs::write(&given_key, lb.key_pem()).unwrap();
    let given_cert = td.path().join("ingress.crt");
    std::fs::write(&given_cert, ingress.cert_pem()).unwrap();

    let mut cfg = config(&root, None, &td.path().join("s.yaml"));
    cfg.force_expire = true;
    cfg.use_key_rules = vec![format!("kube-apiserver-lb-signer {}", given_key.display())];
    cfg.use_cert_rules = vec![given_cert.clone()];
    let s = imgmode_recert::run(&cfg.check().unwrap()).unwrap();
    assert!(
        s.warnings.iter().all(|w| !w.contains("use_")),
        "{:?}",
        s.warnings
    );

    let new = registry_of(&everything(&root, None));
    let now = std::time::SystemTime::now();
    let lb_spki = lb.key.spki_der();
    let ingress_der = &ingress.der;
    let admin_ca = &pki.cert("admin-signer").der;
    for c in &new.certs {
        if &c.cert.der == ingress_der || &c.cert.der == admin_ca {
            continue;
        }
        assert!(c.cert.not_after() < now, "{} not expired", c.cert.subject());
    }
    // The admin kubeconfig CA, whose key the cluster does not hold, is kept, and said so.
    assert!(new.certs.iter().any(|c| &c.cert.der == admin_ca));
    assert!(
        s.warnings.iter().any(|w| w.contains("kept certificate")
            && w.contains("admin-kubeconfig-signer")
            && w.contains("private key was not found")),
        "{:?}",
        s.warnings
    );
    // The lb signer kept the given key, was re-signed (new signature), and still signs its leaf.
    let new_lb = new
        .certs
        .iter()
        .find(|c| c.cert.subject().contains("kube-apiserver-lb-signer"))
        .unwrap();
    assert_eq!(new_lb.cert.spki_der, lb_spki);
    assert_ne!(new_lb.cert.der, lb.der);
    let serving = new
        .certs
        .iter()
        .find(|c| c.cert.sans().iter().any(|s| s.starts_with("api.")))
        .unwrap();
    assert!(serving.cert.signed_by(&lb_spki));
    assert_ne!(serving.cert.spki_der, pki.cert("lb-serving").key.spki_der());
    // The ingress signer is the given certificate, byte for byte, with its key kept.
    assert!(new.certs.iter().any(|c| &c.cert.der == ingress_der));
    assert!(new
        .keys
        .iter()
        .any(|k| k.key.spki_der() == ingress.key.spki_der()));
}

/// What a seed's creation does to the seed system: force_expire, then extend_expiration. The
/// certificates are valid again afterwards, for their original lifetimes (the seed system keeps
/// working), not just for the hour force_expire leaves.
#[test]
fn extend_after_force_expire_restores_the_lifetimes() {
    let td = tempfile::tempdir().unwrap();
    let root = td.path().join("root");
    testpki::generate(&PkiSpec::default(), &root).unwrap();
    let mut cfg = config(&root, None, &td.path().join("s1.yaml"));
    cfg.force_expire = true;
    imgmode_recert::run(&cfg.check().unwrap()).unwrap();
    let mut cfg = config(&root, None, &td.path().join("s2.yaml"));
    cfg.extend_expiration = true;
    imgmode_recert::run(&cfg.check().unwrap()).unwrap();
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(86400);
    let reg = registry_of(&everything(&root, None));
    assert!(!reg.certs.is_empty());
    for c in &reg.certs {
        // testpki's shortest lifetime is 30 days
        assert!(
            c.cert.not_after() > now + 29 * day,
            "{} expires at {:?}",
            c.cert.subject(),
            c.cert.not_after()
        );
    }
}

/// The plan recert left when interrupted, as (etcd key or file path -> new content).
fn journal_contents(plan: &Path) -> Vec<(String, String)> {
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(plan).unwrap()).unwrap();
    let mut out: Vec<(String, String)> = j["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f[0].as_str().unwrap().to_string(),
                f[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for o in j["objects"].as_array().unwrap() {
        out.push((
            o["key"].as_str().unwrap().to_string(),
            serde_json::to_string(&o["value"]).unwrap(),
        ));
    }
    out
}

/// Every planned write of `plan` holds in `root` and `etcd`, no seed key survives, the plan is
/// gone and a further run refuses.
fn finished_as_planned(
    what: &str,
    planned: &[(String, String)],
    cfg: &RecertConfig,
    root: &Path,
    etcd: &Etcd,
    seed_keys: &HashSet<Vec<u8>>,
) {
    let dump = etcd_dump(etcd);
    for (at, content) in planned {
        let now = if at.starts_with("/kubernetes.io/") {
            dump.iter().find(|(k, _)| k == at).map(|(_, v)| {
                serde_json::to_string(&serde_json::from_str::<serde_json::Value>(v).unwrap())
                    .unwrap()
            })
        } else {
            std::fs::read_to_string(at).ok()
        };
        assert_eq!(now.as_ref(), Some(content), "{what}: {at}");
    }
    for k in &registry_of(&everything(root, Some(etcd))).keys {
        assert!(
            !seed_keys.contains(&k.key.spki_der()),
            "{what}: a seed key survives at {:?}",
            k.locations
        );
    }
    assert!(
        !cfg.summary_file
            .as_ref()
            .unwrap()
            .with_extension("yaml.plan")
            .exists(),
        "{what}: the plan outlived the commit"
    );
    let again = imgmode_recert::run(&cfg.clone().check().unwrap()).unwrap_err();
    assert!(
        again.to_string().contains("already recerted"),
        "{what}: {again}"
    );
}

/// A fresh copy of the seed tree at `root`, and the seed's objects back in `etcd`.
fn fresh_copy(seed: &Path, root: &Path, etcd: &Etcd, pki: &Pki) {
    let _ = std::fs::remove_dir_all(root);
    assert!(Command::new("cp")
        .arg("-a")
        .arg(seed)
        .arg(root)
        .status()
        .unwrap()
        .success());
    load(etcd, pki);
}

/// A crash anywhere in the commit, then recert run again: the second run finishes the first
/// one's plan. Every file and object holds exactly what the plan says (no mix of two plans),
/// no seed key survives, the plan (which holds private keys, 0600) is gone, and a third run
/// refuses. First for real at a few places of a first run; then, with one plan, after each
/// of its writes in turn (a resumed run makes the same writes in the same order, so it stops
/// where a first run would have).
#[test]
fn an_interrupted_commit_is_finished_by_the_next_run() {
    use imgmode_testkit::Need;
    use std::os::unix::fs::PermissionsExt;
    imgmode_testkit::require!(Need::Tool("etcd"));
    let td = tempfile::tempdir().unwrap();
    let seed = td.path().join("seed");
    let pki = testpki::generate(&PkiSpec::default(), &seed).unwrap();
    let etcd = start_etcd();
    load(&etcd, &pki);
    let seed_keys: HashSet<Vec<u8>> = registry_of(&everything(&seed, Some(&etcd)))
        .keys
        .iter()
        .map(|k| k.key.spki_der())
        .collect();
    let root = td.path().join("copy");
    let summary = td.path().join("s.yaml");
    let plan = td.path().join("s.yaml.plan");
    let mut cfg = config(&root, Some(&etcd), &summary);
    cfg.cluster_rename = Some("new:example.org".into());
    let kept_plan = td.path().join("kept.plan");
    let mut total = 0;
    // stopped before its first write, a run changed nothing: its plan goes, the next plans anew
    fresh_copy(&seed, &root, &etcd, &pki);
    cfg.interrupt_after_writes = Some(0);
    let e = imgmode_recert::run(&cfg.clone().check().unwrap()).unwrap_err();
    assert!(
        format!("{e:#}").contains("interrupted after 0 writes"),
        "{e:#}"
    );
    assert!(!plan.exists(), "a plan of which nothing was written stayed");
    let untouched: HashSet<Vec<u8>> = registry_of(&everything(&root, Some(&etcd)))
        .keys
        .iter()
        .map(|k| k.key.spki_der())
        .collect();
    assert!(
        untouched == seed_keys,
        "a run stopped before its first write changed keys"
    );
    for n in [1usize, 2, 7] {
        fresh_copy(&seed, &root, &etcd, &pki);
        let _ = std::fs::remove_file(&summary);
        cfg.interrupt_after_writes = Some(n);
        let e = imgmode_recert::run(&cfg.clone().check().unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains("interrupted after"), "{e:#}");
        assert!(!summary.exists(), "an interrupted run wrote its summary");
        assert_eq!(
            std::fs::metadata(&plan).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let planned = journal_contents(&plan);
        total = planned.len();
        if n == 1 {
            std::fs::copy(&plan, &kept_plan).unwrap();
        }
        cfg.interrupt_after_writes = None;
        let s = imgmode_recert::run(&cfg.clone().check().unwrap()).unwrap();
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("resumed an interrupted run")),
            "{:?}",
            s.warnings
        );
        finished_as_planned(
            &format!("a first run stopped after {n} writes"),
            &planned,
            &cfg,
            &root,
            &etcd,
            &seed_keys,
        );
    }
    assert!(total > 10, "the plan writes {total} things");
    let planned = journal_contents(&kept_plan);
    for n in 1..total {
        fresh_copy(&seed, &root, &etcd, &pki);
        let _ = std::fs::remove_file(&summary);
        std::fs::copy(&kept_plan, &plan).unwrap();
        cfg.interrupt_after_writes = Some(n);
        let e = imgmode_recert::run(&cfg.clone().check().unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains("interrupted after"), "{e:#}");
        cfg.interrupt_after_writes = None;
        imgmode_recert::run(&cfg.clone().check().unwrap()).unwrap();
        finished_as_planned(
            &format!("stopped after {n} writes"),
            &planned,
            &cfg,
            &root,
            &etcd,
            &seed_keys,
        );
    }
}
