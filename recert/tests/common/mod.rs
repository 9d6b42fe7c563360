//! What recert's integration tests share: a runtime and etcd's raw values.

use imgmode_testkit::TestEtcd;

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every value under `/kubernetes.io/`, as stored.
pub fn etcd_raw(etcd: &TestEtcd) -> Vec<(String, Vec<u8>)> {
    rt().block_on(async {
        let mut c = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
            .await
            .unwrap();
        let r = c
            .get(
                "/kubernetes.io/",
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        r.kvs()
            .iter()
            .map(|kv| (kv.key_str().unwrap().to_string(), kv.value().to_vec()))
            .collect()
    })
}
