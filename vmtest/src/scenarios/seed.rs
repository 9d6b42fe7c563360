//! The `seed` scenario: the run's seed made by the `build-seed` flow
//! ([`crate::harness::seed`]), then checked on the host with the tools lifecycle-agent uses
//! (`tar`, `gzip`, `openssl`), not with imgmode's own readers: its labels, file set, commit,
//! `etc.deletions` and expired certificates; and `imgmode seed check` gates against it. The
//! seed becomes the run's shared seed.

use crate::harness::artifacts::{imgmode_json, run, Artifacts};
use crate::harness::context::RunContext;
use crate::harness::seed::{extract_layer, layout_digest, SeedBuild, DELETED, SEED_IMAGE};
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every certificate below `dir` (each PEM block of each `*.crt` file) is expired, by
/// `openssl x509 -checkend 0`: it must say "Certificate will expire"; any other answer (valid,
/// or an openssl error) fails. The one exception is the admin kubeconfig CA, whose key the
/// cluster does not hold (as in OpenShift): recert keeps it as it is, so it stays valid.
/// Returns how many certificates were checked (at least one) and how many were that CA.
fn every_certificate_expired(dir: &Path) -> Result<(usize, usize)> {
    let mut files = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "crt") {
                files.push(p);
            }
        }
    }
    ensure!(!files.is_empty(), "no certificate under {}", dir.display());
    let (mut checked, mut admin_ca) = (0, 0);
    let one = dir.join(".one.pem");
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        let blocks: Vec<&str> = text
            .split_inclusive("-----END CERTIFICATE-----")
            .filter(|b| b.contains("-----BEGIN CERTIFICATE-----"))
            .collect();
        ensure!(!blocks.is_empty(), "{} holds no certificate", f.display());
        for b in blocks {
            std::fs::write(&one, format!("{}\n", b.trim()))?;
            let out = Command::new("openssl")
                .args(["x509", "-noout", "-subject", "-checkend", "0", "-in"])
                .arg(&one)
                .output()
                .context("running openssl (cargo xtask deps)")?;
            let said = String::from_utf8_lossy(&out.stdout);
            checked += 1;
            if said.contains("Certificate will expire") {
                continue;
            }
            if said.contains("admin-kubeconfig-signer") && said.contains("will not expire") {
                admin_ca += 1;
                continue;
            }
            bail!(
                "a certificate of {} in the seed is not expired (openssl x509 -subject -checkend 0: {} {}{}): recert force_expire missed it",
                f.display(),
                out.status,
                said.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let _ = std::fs::remove_file(&one);
    ensure!(
        admin_ca > 0,
        "the seed holds no admin kubeconfig CA certificate; the test cluster's client CA bundle is missing"
    );
    Ok((checked, admin_ca))
}

/// `tar -tzf`: the member names of a tarball.
fn members(tarball: &Path) -> Result<Vec<String>> {
    let out = run(
        Command::new("tar").arg("-tzf").arg(tarball),
        &format!("tar -tzf {}", tarball.display()),
    )?;
    Ok(out.lines().map(str::to_string).collect())
}

/// The `seed` scenario.
pub async fn seed_scenario(ctx: &RunContext, dir: &Path) -> Result<String> {
    let s = ctx.new_seed(dir).await?;
    let (a2, dir) = (ctx.artifacts.clone(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || verify(&a2, &dir, &s)).await?
}

fn verify(a: &Artifacts, dir: &Path, s: &SeedBuild) -> Result<String> {
    let f = |k: &str| s.phase.facts.get(k).map(String::as_str).unwrap_or("?");
    ensure!(
        f("restored") == "yes" && f("apiserver") == "active" && f("etcd") == "active",
        "the seed system was not restored after seed create: /readyz {}, apiserver {}, etcd {}",
        f("restored"),
        f("apiserver"),
        f("etcd")
    );
    ensure!(
        f("pull-secret-restored") == "yes",
        "the seed system's openshift-config/pull-secret was not put back after seed create"
    );
    let ins = inspect(a)?;
    let id = &s.identity;
    check_cluster_info(&ins, id)?;
    let (got, origin) = check_file_list(&ins, s)?;
    let digest_in_store = ins["reference"].as_str().unwrap_or_default().to_string();
    // the content, read with the tools lifecycle-agent uses
    let x = dir.join("extracted");
    let _ = std::fs::remove_dir_all(&x);
    extract_layer(&s.layout, &x)?;
    check_content(&ins, &x, s)?;
    check_etc_and_var(&x, f("deleted-existed"))?;
    no_seed_pull_secret(&x, f("seed-pull-secret"))?;
    let (expired, admin_ca) = expired_certificates(dir, &x)?;
    check_digest_and_origin(s, &x, &origin)?;
    check_gates(a, dir, id)?;
    let c = &s.phase.booted_checksum;
    let sizes: u64 = ins["files"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["size"].as_u64()).sum())
        .unwrap_or(0);
    Ok(format!(
        "seed {} ({}; {} files, {} MiB; {expired} certificates checked, all expired but the {admin_ca} copies of the admin kubeconfig CA, whose key the cluster does not hold; the placeholder pull secret in etcd, the seed system's put back) from cluster {}.{} on {}; commit {}; VM {:.0}s; restored",
        s.digest,
        digest_in_store,
        got.len(),
        sizes >> 20,
        id["clusterName"].as_str().unwrap_or_default(),
        id["baseDomain"].as_str().unwrap_or_default(),
        id["hostname"].as_str().unwrap_or_default(),
        &c[..12],
        s.vm_seconds
    ))
}

/// `imgmode seed inspect` of the seed, as imgmode reads its labels and cluster info.
fn inspect(a: &Artifacts) -> Result<serde_json::Value> {
    let out = imgmode_json(a, &["seed", "inspect", SEED_IMAGE, "--format", "json"])?;
    let ins: serde_json::Value = serde_json::from_str(&out).context("parsing seed inspect")?;
    ensure!(
        ins["format_version"] == 4,
        "format version {}",
        ins["format_version"]
    );
    Ok(ins)
}

/// The cluster info of the seed is the test cluster's identity.
fn check_cluster_info(ins: &serde_json::Value, id: &serde_json::Value) -> Result<()> {
    let info = &ins["cluster_info"];
    for (k, want) in [
        ("cluster_name", &id["clusterName"]),
        ("base_domain", &id["baseDomain"]),
        ("sno_hostname", &id["hostname"]),
        ("node_ip", &id["ip"]),
        ("seed_cluster_ocp_version", &id["version"]),
    ] {
        ensure!(
            &info[k] == want,
            "seed cluster info {k} is {}, the seed VM has {want}",
            info[k]
        );
    }
    Ok(())
}

/// The seed holds exactly the expected files; returns them and the name of the booted
/// deployment's origin file.
fn check_file_list(ins: &serde_json::Value, s: &SeedBuild) -> Result<(Vec<String>, String)> {
    let names: Vec<&str> = ins["files"]
        .as_array()
        .context("no file list")?
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    let origin = format!(
        "ostree-{}.origin",
        s.phase
            .booted_id
            .split_once('-')
            .map(|(_, r)| r)
            .unwrap_or_default()
    );
    let mut want: Vec<String> = [
        "containers.list",
        "etc.deletions",
        "etc.tgz",
        "imgmode",
        "lca-cli",
        "manifest.json",
        "mco-currentconfig.json",
        "ostree.tgz",
        "recert_config.json",
        "rpm-ostree.json",
        "var.tgz",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.push(origin.clone());
    want.sort();
    let mut got: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    got.sort();
    ensure!(
        got == want,
        "the seed holds {got:?}, expected exactly {want:?}"
    );
    Ok((got, origin))
}

/// The extracted seed `x`: the `seed_cluster_info` label is `manifest.json`, `rpm-ostree.json`
/// names the booted commit, and `ostree.tgz` holds it and the repo config.
fn check_content(ins: &serde_json::Value, x: &Path, s: &SeedBuild) -> Result<()> {
    let label_info = &ins["labels"]["com.openshift.lifecycle-agent.seed_cluster_info"];
    let manifest = std::fs::read_to_string(x.join("manifest.json"))?;
    ensure!(
        label_info.as_str() == Some(manifest.as_str()),
        "the seed_cluster_info label differs from manifest.json"
    );
    let rpm: serde_json::Value =
        serde_json::from_slice(&std::fs::read(x.join("rpm-ostree.json"))?)?;
    let booted = rpm["deployments"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["booted"] == true))
        .context("rpm-ostree.json has no booted deployment")?;
    ensure!(
        booted["checksum"] == s.phase.booted_checksum.as_str(),
        "rpm-ostree.json says the booted commit is {}, the seed VM booted {}",
        booted["checksum"],
        s.phase.booted_checksum
    );
    let c = &s.phase.booted_checksum;
    let ostree = members(&x.join("ostree.tgz"))?;
    let commit_obj = format!("./objects/{}/{}.commit", &c[..2], &c[2..]);
    ensure!(
        ostree.contains(&commit_obj),
        "ostree.tgz lacks the booted commit {commit_obj}"
    );
    ensure!(
        ostree.iter().any(|m| m == "./config"),
        "ostree.tgz lacks the repo config"
    );
    Ok(())
}

/// `etc.deletions` lists the file deleted on the seed system (`deleted_existed`: whether it
/// existed there), `etc.tgz` carries /etc's changes and no machine-specific file, `var.tgz`
/// etcd's data and no logs or temporary files.
fn check_etc_and_var(x: &Path, deleted_existed: &str) -> Result<()> {
    let deletions = std::fs::read_to_string(x.join("etc.deletions"))?;
    if deleted_existed == "yes" {
        ensure!(
            deletions.lines().any(|l| l == DELETED),
            "etc.deletions does not list {DELETED}, deleted on the seed system: {deletions:?}"
        );
    } else {
        bail!("{DELETED} did not exist on the seed system; the etc.deletions check proves nothing");
    }
    let etc = members(&x.join("etc.tgz"))?;
    ensure!(
        etc.iter().any(|m| m == "etc/imgmode-seed-marker"),
        "etc.tgz lacks /etc/imgmode-seed-marker, added on the seed system"
    );
    ensure!(
        etc.iter().any(|m| m.starts_with("etc/kubernetes/")),
        "etc.tgz lacks /etc/kubernetes (the cluster's PKI)"
    );
    for m in ["etc/hostname", "etc/machine-id"] {
        ensure!(
            !etc.iter().any(|e| e == m),
            "etc.tgz carries the machine-specific {m}"
        );
    }
    let var = members(&x.join("var.tgz"))?;
    ensure!(
        var.iter().any(|m| m.starts_with("var/lib/etcd/")),
        "var.tgz lacks etcd's data (var/lib/etcd)"
    );
    for bad in ["var/log/", "var/tmp/"] {
        ensure!(
            !var.iter()
                .any(|m| m.starts_with(bad) && m.len() > bad.len()),
            "var.tgz carries content of {bad}"
        );
    }
    Ok(())
}

/// etcd's database file in `var.tgz` holds the placeholder pull secret and no revision of the
/// seed system's own (`b64`, its `.dockerconfigjson` as etcd stored it). etcd's write-ahead
/// log is not checked: it keeps every write until etcd's own snapshot truncates it.
fn no_seed_pull_secret(x: &Path, b64: &str) -> Result<()> {
    ensure!(
        b64.len() > 16,
        "the seed system reported no pull secret before seed create ({b64:?})"
    );
    let var = members(&x.join("var.tgz"))?;
    let db = var
        .iter()
        .find(|m| m.starts_with("var/lib/etcd/") && m.ends_with("member/snap/db"))
        .context("var.tgz holds no etcd database (var/lib/etcd/.../member/snap/db)")?;
    let out = Command::new("tar")
        .arg("-xzOf")
        .arg(x.join("var.tgz"))
        .arg(db)
        .output()
        .context("tar (etcd's database from var.tgz)")?;
    ensure!(out.status.success(), "tar -xzOf var.tgz {db} failed");
    let has = |needle: &[u8]| out.stdout.windows(needle.len()).any(|w| w == needle);
    use base64::Engine;
    let b64e = base64::engine::general_purpose::STANDARD;
    // a Secret is Kubernetes protobuf in etcd (its data raw); as JSON it would be base64
    let raw = b64e
        .decode(b64)
        .context("the seed system's pull secret data is not base64")?;
    ensure!(
        !has(&raw) && !has(b64.as_bytes()),
        "the seed's etcd database ({db}) holds the seed system's pull secret"
    );
    let placeholder = r#"{"auths":{"registry.connect.redhat.com":{"username":"empty","password":"empty","auth":"ZW1wdHk6ZW1wdHk=","email":""}}}"#;
    ensure!(
        has(placeholder.as_bytes()) || has(b64e.encode(placeholder).as_bytes()),
        "the seed's etcd database ({db}) does not hold lifecycle-agent's placeholder pull secret"
    );
    Ok(())
}

/// The certificates of the cluster's PKI in the seed's `etc.tgz`: how many, all expired but the
/// admin kubeconfig CA's copies (how many).
fn expired_certificates(dir: &Path, x: &Path) -> Result<(usize, usize)> {
    // recert force_expire: every certificate of the cluster's PKI in the seed is expired (only
    // the certificates are taken out: the PKI's private keys stay in the tarball)
    let pki = dir.join("pki");
    let _ = std::fs::remove_dir_all(&pki);
    std::fs::create_dir_all(&pki)?;
    run(
        Command::new("tar")
            .arg("-xzf")
            .arg(x.join("etc.tgz"))
            .arg("-C")
            .arg(&pki)
            .args(["--wildcards", "etc/kubernetes/*.crt"]),
        "tar -xzf etc.tgz (etc/kubernetes/*.crt)",
    )?;
    let expired = every_certificate_expired(&pki.join("etc/kubernetes"));
    std::fs::remove_dir_all(&pki)?;
    expired
}

/// The stored seed's manifest is the one `seed create` reported, and the origin file is the
/// booted deployment's.
fn check_digest_and_origin(s: &SeedBuild, x: &Path, origin: &str) -> Result<()> {
    let manifest_digest = layout_digest(&s.layout)?;
    ensure!(
        manifest_digest == s.digest,
        "seed create reported {} but the stored seed's manifest is {manifest_digest}",
        s.digest
    );
    let origin_text = std::fs::read_to_string(x.join(origin))?;
    ensure!(
        origin_text.contains("container-image-reference="),
        "{origin} is not the booted deployment's origin: {origin_text}"
    );
    Ok(())
}

/// The compatibility gates against the real seed, before any layer is fetched: `imgmode seed
/// check` passes with the seed's version and refuses another.
fn check_gates(a: &Artifacts, dir: &Path, id: &serde_json::Value) -> Result<()> {
    // the seed system's cluster uses a proxy: an installation needs one
    let cfg = |version: &str, proxy: bool| -> Result<PathBuf> {
        let p = dir.join(format!("ibi-{version}-{proxy}.yaml"));
        let proxy = if proxy {
            "proxy:\n  httpProxy: http://proxy.site.invalid:3128\n"
        } else {
            ""
        };
        std::fs::write(
            &p,
            format!("apiVersion: v1beta1\nkind: ImageBasedInstallationConfig\nmetadata:\n  name: vmtest\nseedImage: {SEED_IMAGE}\nseedVersion: {version}\ninstallationDisk: /dev/vda\npullSecret: '{{\"auths\":{{}}}}'\n{proxy}"),
        )?;
        Ok(p)
    };
    let version = id["version"].as_str().unwrap_or_default();
    imgmode_json(
        a,
        &[
            "seed",
            "check",
            SEED_IMAGE,
            "--config",
            &cfg(version, true)?.display().to_string(),
        ],
    )?;
    for (config, refusal) in [
        (cfg("4.0.0", true)?, "seed version mismatch"),
        (cfg(version, false)?, "proxy mismatch"),
    ] {
        let bad = Command::new(&a.imgmode)
            .args(["seed", "check", SEED_IMAGE, "--config"])
            .arg(&config)
            .output()?;
        let err = String::from_utf8_lossy(&bad.stderr);
        ensure!(
            !bad.status.success() && err.contains(refusal),
            "seed check accepted {} (expected {refusal}): {err}",
            config.display()
        );
    }
    Ok(())
}
