//! `imgmode seed`.

use crate::args::seed::{SeedCheckArgs, SeedCmd, SeedCreateArgs};
use crate::cmd::ctx::Ctx;
use anyhow::{Context, Result};
use imgmode_ibi::config::ImageBasedInstallationConfig;
use imgmode_seed::{gates, image};

pub fn run(cmd: SeedCmd, cx: &Ctx) -> Result<()> {
    match cmd {
        SeedCmd::Create(a) => create(a, cx),
        SeedCmd::Inspect { image } => inspect(&image, cx),
        SeedCmd::Check(a) => check(a, cx),
    }
}

fn create(a: SeedCreateArgs, cx: &Ctx) -> Result<()> {
    let o = a.opts(cx.ambient.imgmode_binary()?)?;
    let c = imgmode_seed::create::create(&o, &cx.store(), cx.steps())?;
    cx.print(&c, |c| {
        let mut s = format!("seed image {} ({})\n", c.reference, c.digest);
        for (f, n) in &c.files {
            s.push_str(&format!("  {f:<40} {:>12}\n", n));
        }
        s
    })
}

fn inspect(arg: &str, cx: &Ctx) -> Result<()> {
    let i = image::inspect(&cx.store(), arg)?;
    let missing = image::missing_files(&i.files);
    cx.print(&i, |i| {
        let mut s = format!(
            "{}\n  format version {}, {}, seed version {}\n  cluster {}.{} node {} ({})\n",
            i.reference,
            i.format_version,
            i.architecture,
            i.cluster_info.seed_cluster_ocp_version,
            i.cluster_info.cluster_name,
            i.cluster_info.base_domain,
            i.cluster_info.sno_hostname,
            i.cluster_info.node_ip
        );
        for f in &i.files {
            s.push_str(&format!("  {:<40} {:>12}  {}\n", f.name, f.size, f.sha256));
        }
        s
    })?;
    if !missing.is_empty() {
        anyhow::bail!(
            "{arg} is not a complete seed: missing {}",
            missing.join(", ")
        );
    }
    Ok(())
}

fn check(a: SeedCheckArgs, cx: &Ctx) -> Result<()> {
    let SeedCheckArgs {
        image: arg,
        config,
        fips,
        arch,
    } = a;
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let cfg = ImageBasedInstallationConfig::parse(&text, &config.display().to_string())?;
    let h = image::read_header(&cx.store(), &arg, &Default::default())?;
    let arch = arch.unwrap_or_else(|| cx.ambient.arch.clone());
    let t = cfg.gate_target(&arch, fips);
    let info = gates::check(&h.labels, &h.architecture, &t)
        .with_context(|| format!("seed {arg} does not fit {}", config.display()))?;
    crate::output::say(&format!(
        "seed {arg} fits {}: format {}, seed version {}, {}",
        config.display(),
        imgmode_seed::SEED_FORMAT_VERSION,
        info.seed_cluster_ocp_version,
        h.architecture
    ));
    Ok(())
}
