//! `imgmode internal`: hidden verbs for tests, benchmarks and fixtures.

use crate::args::internal::{GenTestPkiArgs, InternalCmd, TestClusterCmd};
use crate::cmd::ctx::Ctx;
use crate::cmd::meta;
use anyhow::{Context, Result};
use imgmode_testkit::cluster as testcluster;
use std::path::{Path, PathBuf};

pub fn run(cmd: InternalCmd, cx: &Ctx) -> Result<()> {
    match cmd {
        InternalCmd::SeedUnpack { tarball, dir } => {
            imgmode_seed::archive::tar_extract(&tarball, &dir).map(drop)
        }
        InternalCmd::SeedArchive {
            compression,
            out,
            dir,
            paths,
        } => seed_archive(&compression, &out, &dir, paths),
        InternalCmd::TestCluster(c) => test_cluster(c, cx),
        InternalCmd::MmdebstrapArgs { definition, rootfs } => {
            mmdebstrap_args(&definition, &rootfs, cx)
        }
        InternalCmd::GenTestPki(a) => gen_test_pki(a),
        InternalCmd::ManPages { dir } => meta::man_pages(&dir),
        InternalCmd::GuideBlocks { scenario, check } => guide_blocks(&scenario, check.as_deref()),
    }
}

fn seed_archive(compression: &str, out: &Path, dir: &Path, paths: Vec<String>) -> Result<()> {
    let mut args = vec!["-C".to_string(), dir.display().to_string()];
    args.extend(paths);
    let w = imgmode_seed::archive::tar_create(&args, None, out, compression.parse()?)?;
    println!("{}", serde_json::to_string(&w)?);
    Ok(())
}

fn mmdebstrap_args(definition: &Path, rootfs: &Path, cx: &Ctx) -> Result<()> {
    let spec = imgmode_os::base::BaseSpec::load(definition)?;
    let args = imgmode_os::base::mmdebstrap_args(&spec, &cx.ambient.cache_dir, rootfs);
    println!("{}", serde_json::to_string(&args)?);
    Ok(())
}

/// `internal guide-blocks`: the guest script of a scenario's guide blocks, or the check of its
/// report (`imgmode_testkit::guide`).
fn guide_blocks(scenario: &str, check: Option<&std::path::Path>) -> Result<()> {
    use imgmode_testkit::guide;
    let blocks = guide::for_scenario(&guide::dir(), scenario)?;
    anyhow::ensure!(
        !blocks.is_empty(),
        "no guide block is marked sh vm={scenario} in {}",
        guide::dir().display()
    );
    match check {
        None => print!("{}", guide::guest_script(&blocks)),
        Some(path) => {
            let report = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let n = guide::check_report(&blocks, &report)?;
            crate::output::say(&format!(
                "{n} guide block(s) ran in {scenario} as the guides show"
            ));
        }
    }
    Ok(())
}

fn gen_test_pki(a: GenTestPkiArgs) -> Result<()> {
    let pki = imgmode_testkit::pki::generate(&a.spec(), &a.dir)?;
    if let Some(p) = a.etcd_objects {
        let map: serde_json::Map<String, serde_json::Value> =
            pki.etcd_objects.into_iter().collect();
        std::fs::write(&p, serde_json::to_vec_pretty(&map)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    println!("{} certificates under {}", pki.certs.len(), a.dir.display());
    Ok(())
}

fn test_cluster(cmd: TestClusterCmd, cx: &Ctx) -> Result<()> {
    match cmd {
        TestClusterCmd::Init(a) => {
            let id = testcluster::init(&a.opts(cx.ambient.hostname.clone()))?;
            println!("{}", serde_json::to_string(&id)?);
            Ok(())
        }
        TestClusterCmd::Serve {
            root,
            listen,
            etcd_endpoint,
        } => testcluster::serve(&root, &listen, &etcd_endpoint),
        TestClusterCmd::Keys {
            etcd_endpoint,
            static_dirs,
        } => keys(&etcd_endpoint, static_dirs),
        TestClusterCmd::Get { key, etcd_endpoint } => {
            // a key ending in '/' is a prefix: every object under it, as an array
            let v = if key.ends_with('/') {
                testcluster::list(&etcd_endpoint, &key)?
            } else {
                testcluster::get(&etcd_endpoint, &key)?
            };
            println!("{}", serde_json::to_string(&v)?);
            Ok(())
        }
        TestClusterCmd::Upgrade {
            to_image,
            etcd_endpoint,
        } => {
            println!("{}", testcluster::upgrade(&etcd_endpoint, &to_image)?);
            Ok(())
        }
        TestClusterCmd::Probe {
            kubeconfig,
            path,
            connect_to,
        } => probe(&kubeconfig, &path, connect_to.as_deref()),
    }
}

fn keys(etcd_endpoint: &str, static_dirs: Vec<PathBuf>) -> Result<()> {
    let dirs: Vec<PathBuf> = static_dirs.into_iter().filter(|d| d.is_dir()).collect();
    for (fp, at) in imgmode_recert::key_inventory(&dirs, Some(etcd_endpoint))? {
        println!("{fp} {at}");
    }
    Ok(())
}

fn probe(kubeconfig: &Path, path: &str, connect_to: Option<&str>) -> Result<()> {
    let creds = imgmode_seed::cluster::read_kubeconfig(kubeconfig)?;
    let (code, body) = imgmode_seed::cluster::probe(&creds, path, connect_to)?;
    println!("{body}");
    if code != 200 {
        anyhow::bail!("{}{path} answered {code}", creds.server);
    }
    Ok(())
}
