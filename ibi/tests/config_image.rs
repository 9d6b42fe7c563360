//! The configuration ISO's promise: after post-pivot's recert (rename + the configuration's
//! signer keys) of a seed's PKI, `auth/kubeconfig` trusts the API's serving certificate under
//! the new name and the API's admin CA accepts its client certificate, while the seed's own CA
//! trusts nothing anymore. Checked with OpenSSL's verifier on recert's real output.

use imgmode_ibi::configiso;
use imgmode_seed::reconfig::SeedReconfiguration;
use imgmode_testkit::pki::{self as testpki, PkiSpec};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509StoreContext, X509VerifyResult, X509};
use std::process::Command;

/// Verify `leaf` (PEM, first certificate) against `anchors` (PEM bundle), with `host` checked.
fn verifies(anchors: &[u8], leaf: &[u8], host: Option<&str>) -> Result<(), String> {
    let mut sb = X509StoreBuilder::new().unwrap();
    for c in X509::stack_from_pem(anchors).unwrap() {
        sb.add_cert(c).unwrap();
    }
    if let Some(h) = host {
        let mut param = openssl::x509::verify::X509VerifyParam::new().unwrap();
        param.set_host(h).unwrap();
        sb.set_param(&param).unwrap();
    }
    let store = sb.build();
    let mut chain = X509::stack_from_pem(leaf).unwrap().into_iter();
    let leaf = chain.next().unwrap();
    let mut rest = Stack::new().unwrap();
    for c in chain {
        rest.push(c).unwrap();
    }
    let mut ctx = X509StoreContext::new().unwrap();
    let (ok, err) = ctx
        .init(&store, &leaf, &rest, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error()))
        })
        .unwrap();
    if ok && err == X509VerifyResult::OK {
        Ok(())
    } else {
        Err(err.error_string().to_string())
    }
}

fn kubeconfig_field(text: &str, name: &str) -> Vec<u8> {
    use base64::Engine;
    let v = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in the kubeconfig"));
    base64::engine::general_purpose::STANDARD.decode(v).unwrap()
}

/// No private key anywhere in the manifest verifies as the issuer of the admin client
/// certificate (the admin kubeconfig signer's key stays where the ISO was made).
fn assert_no_admin_signer_key(m: &SeedReconfiguration, kubeconfig: &str) {
    fn strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::String(s) => out.push(s),
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let client = X509::from_pem(&kubeconfig_field(kubeconfig, "client-certificate-data")).unwrap();
    let v = serde_json::to_value(m).unwrap();
    let mut all = vec![];
    strings(&v, &mut all);
    let keys: Vec<_> = all
        .into_iter()
        .filter(|s| s.contains("PRIVATE KEY"))
        .map(|s| openssl::pkey::PKey::private_key_from_pem(s.as_bytes()).unwrap())
        .collect();
    assert_eq!(
        keys.len(),
        3,
        "the three serving signers' keys, and no other"
    );
    for k in &keys {
        assert!(
            !client.verify(k).unwrap(),
            "the configuration holds the admin client certificate's signing key"
        );
    }
}

#[test]
fn recert_with_the_configuration_keeps_auth_kubeconfig_working() {
    imgmode_testkit::require!(imgmode_testkit::Need::Tool("xorriso"));
    let td = tempfile::tempdir().unwrap();
    let root = td.path().join("root");
    let spec = PkiSpec {
        extra_in_files_only: true,
        ..Default::default()
    };
    testpki::generate(&spec, &root).unwrap();
    let serving = root.join("etc/kubernetes/static-pod-resources/kube-apiserver-certs/secrets/external-loadbalancer-serving-certkey/tls.crt");
    let admin_ca = root.join(testpki::CLIENT_CA);
    let lb_ca = root.join("etc/kubernetes/static-pod-resources/signers/lb-signer/tls.crt");
    for p in [&serving, &admin_ca, &lb_ca] {
        assert!(p.is_file(), "testpki wrote no {}", p.display());
    }
    let seed_lb_ca = std::fs::read(&lb_ca).unwrap();

    // the configuration
    let conf = td.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("install-config.yaml"), "apiVersion: v1\nmetadata:\n  name: ibi1\nbaseDomain: example.org\npullSecret: '{\"auths\":{}}'\n").unwrap();
    std::fs::write(
        conf.join("image-based-config.yaml"),
        "apiVersion: v1beta1\nkind: ImageBasedConfig\nhostname: node1\n",
    )
    .unwrap();
    let made = configiso::create(&conf).unwrap();
    assert!(made.iso.is_file());
    let out = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(&made.iso)
        .args([
            "-pvd_info",
            "-extract",
            "/cluster-configuration/manifest.json",
        ])
        .arg(td.path().join("manifest.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Volume Id    : cluster-config"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let m: SeedReconfiguration =
        serde_json::from_slice(&std::fs::read(td.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m.cluster_name, "ibi1");
    assert_eq!(m.hostname, "node1");
    assert!(bcrypt::verify(
        std::fs::read_to_string(&made.kubeadmin_password).unwrap(),
        &m.kubeadmin_password_hash
    )
    .unwrap());
    assert_no_admin_signer_key(&m, &std::fs::read_to_string(&made.kubeconfig).unwrap());
    // a second run refuses to replace the first one's auth
    let e = configiso::create(&conf).unwrap_err().to_string();
    assert!(e.contains("exists; move it away"), "{e}");

    // post-pivot's recert, on the files
    let mut cfg =
        imgmode_seed::postpivot::recert_config(&m, &td.path().join("keys"), &spec.ip).unwrap();
    cfg.static_dirs = vec![root.clone()];
    // hostname, IP and infra ID changes read the old values from etcd; this check is files only
    cfg.hostname = None;
    cfg.ip = None;
    cfg.cluster_rename = Some("ibi1:example.org".into());
    imgmode_recert::run(&cfg.check().unwrap()).unwrap();

    let kc = std::fs::read_to_string(&made.kubeconfig).unwrap();
    assert!(
        kc.contains("server: https://api.ibi1.example.org:6443"),
        "{kc}"
    );
    let ca = kubeconfig_field(&kc, "certificate-authority-data");
    let client = kubeconfig_field(&kc, "client-certificate-data");
    let served = std::fs::read(&serving).unwrap();
    verifies(&ca, &served, Some("api.ibi1.example.org"))
        .expect("auth/kubeconfig trusts the renamed API serving certificate");
    verifies(&ca, &served, Some("api.seed.example.com")).expect_err("the old name is gone");
    verifies(&std::fs::read(&admin_ca).unwrap(), &client, None)
        .expect("the API's client CA bundle accepts auth/kubeconfig's client certificate");
    verifies(&seed_lb_ca, &served, None).expect_err("the seed's CA must not verify the copy");
}
