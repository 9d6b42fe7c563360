//! `key_inventory`: every private key of a tree by public-key fingerprint, so two clusters
//! made from one seed can be compared key by key.

use imgmode_recert::{key_inventory, RecertConfig};
use imgmode_testkit::pki::{self as testpki, PkiSpec};

#[test]
fn inventories_of_two_recerted_copies_are_disjoint() {
    let td = tempfile::tempdir().unwrap();
    let seed = td.path().join("seed");
    let spec = PkiSpec {
        extra_in_files_only: true,
        ..Default::default()
    };
    testpki::generate(&spec, &seed).unwrap();
    let before = key_inventory(std::slice::from_ref(&seed), None).unwrap();
    assert!(before.len() >= 8, "{before:?}");
    assert!(
        before
            .iter()
            .any(|(_, at)| at.contains("signers/lb-signer/tls.key")),
        "{before:?}"
    );
    assert!(before.iter().all(|(fp, _)| fp.len() == 64));

    let mut copies = vec![];
    for name in ["a", "b"] {
        let copy = td.path().join(name);
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&seed)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success());
        let cfg = RecertConfig {
            static_dirs: vec![copy.clone()],
            cluster_rename: Some(format!("{name}:example.org")),
            ..Default::default()
        };
        imgmode_recert::run(&cfg.check().unwrap()).unwrap();
        copies.push(key_inventory(&[copy], None).unwrap());
    }
    assert_eq!(copies[0].len(), before.len(), "every key is still found");
    let fps = |v: &[(String, String)]| -> std::collections::BTreeSet<String> {
        v.iter().map(|(f, _)| f.clone()).collect()
    };
    assert!(fps(&copies[0]).is_disjoint(&fps(&copies[1])));
    assert!(fps(&copies[0]).is_disjoint(&fps(&before)));
}
