//! Host-side checks of the installer's secret outputs: their modes, and that the configuration
//! ISO carries no key of the admin kubeconfig signer (checked with OpenSSL's tools).

use crate::harness::artifacts::run;
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The host-side outputs that hold secrets have exactly these modes; the listing goes to `out`.
pub(crate) fn private_outputs(files: &[(PathBuf, u32)], out: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut listing = String::new();
    for (p, want) in files {
        let mode = std::fs::metadata(p)
            .with_context(|| format!("{} was not written", p.display()))?
            .permissions()
            .mode()
            & 0o777;
        listing.push_str(&format!("{mode:o} {}\n", p.display()));
        ensure!(
            mode == *want,
            "{} is mode {mode:o}; it holds secrets and must be {want:o}",
            p.display()
        );
    }
    std::fs::write(out, listing)?;
    Ok(())
}

/// The configuration ISO carries no key that can sign admin client certificates: the
/// manifest's admin CA issued `auth/kubeconfig`'s client certificate (OpenSSL verifies it),
/// and none of the manifest's private keys has that CA's public key.
pub(crate) fn no_admin_signer_key(host: &str, conf: &Path) -> Result<()> {
    use base64::Engine;
    // the manifest and the keys taken out of it: a private directory (0700), removed on every
    // way out
    let tmp = tempfile::Builder::new()
        .prefix(".check-")
        .tempdir_in(conf)?;
    let chk = tmp.path();
    let manifest = chk.join("manifest.json");
    run(
        Command::new("xorriso")
            .args(["-osirrox", "on", "-indev"])
            .arg(conf.join("imagebasedconfig.iso"))
            .args(["-extract", "/cluster-configuration/manifest.json"])
            .arg(&manifest),
        "xorriso (the configuration ISO's manifest)",
    )?;
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest)?)?;
    let admin_ca = m["kubeconfig_crypto_retention"]["kube_api_crypto"]["client_auth_crypto"]
        ["admin_ca_certificate"]
        .as_str()
        .context("the manifest has no admin_ca_certificate")?;
    std::fs::write(chk.join("admin-ca.pem"), admin_ca)?;
    let kc = std::fs::read_to_string(conf.join("auth/kubeconfig"))?;
    let client = kc
        .lines()
        .find_map(|l| l.trim().strip_prefix("client-certificate-data: "))
        .context("auth/kubeconfig has no client certificate")?;
    std::fs::write(
        chk.join("client.pem"),
        base64::engine::general_purpose::STANDARD.decode(client)?,
    )?;
    run(
        Command::new("openssl")
            .args(["verify", "-partial_chain", "-CAfile"])
            .arg(chk.join("admin-ca.pem"))
            .arg(chk.join("client.pem")),
        "openssl verify (auth/kubeconfig's client certificate under the manifest's admin CA)",
    )?;
    let ca_key = run(
        Command::new("openssl")
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(chk.join("admin-ca.pem")),
        "openssl x509 -pubkey",
    )?;
    fn keys<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::String(s) if s.contains("PRIVATE KEY") => out.push(s),
            serde_json::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| keys(v, out)),
            _ => {}
        }
    }
    let mut found = vec![];
    keys(&m, &mut found);
    ensure!(
        !found.is_empty(),
        "{}: the manifest holds no signer key",
        host
    );
    for (i, k) in found.iter().enumerate() {
        let p = chk.join(format!("key-{i}.pem"));
        std::fs::write(&p, k)?;
        let public = run(
            Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&p),
            "openssl pkey -pubout",
        )?;
        ensure!(
            public != ca_key,
            "{}: the configuration ISO holds the admin kubeconfig signer's private key",
            host
        );
    }
    Ok(())
}
