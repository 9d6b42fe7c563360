//! `cargo xtask pipeline --local --shards N`: the pipeline's graph on one machine, as the
//! engines run it on many (`.github/workflows/ci.yml`, `tekton/`).
//!
//! 1. A registry on loopback (`docker-registry`, plain HTTP). The steps get a home of their
//!    own whose `.config/containers/registries.conf` marks it insecure, so that skopeo and
//!    `imgmode` (which read that file before the system's) reach it and the machine's
//!    configuration stays as it was; `CARGO_HOME` and `RUSTUP_HOME` keep naming the real ones.
//! 2. The build step, a process of its own: `vmtest --artifacts-to … --build-only` builds the
//!    base image, its disks and the seed once and pushes them.
//! 3. N shards, each a process of its own with its own empty image store
//!    (`IMGMODE_STATE_DIR`): `vmtest --shard i/N --artifacts-from …@DIGEST`, which pulls by
//!    digest and builds nothing (a pull that would build fails). As many run at once as the
//!    machine has room for VMs ([`imgmode_vmtest::max_lanes`]), the rest after them.
//! 4. The shards' JUnit merged into one report, whose scenarios must be exactly an unsharded
//!    run's; a summary of each step's time, and what N machines would take (the build step
//!    and the longest shard).
//!
//! Everything goes under `target/pipeline/`: each step's log and directory, `junit.xml`.

use anyhow::{ensure, Context, Result};
use imgmode_vmtest::harness::handoff::DIGEST_FILE;
use imgmode_vmtest::harness::registry::Registry;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// One step's process: what it was, its log, how long, whether it passed.
struct Step {
    name: String,
    log: PathBuf,
    seconds: f64,
    ok: bool,
}

/// Start `cmd` with its output into `log`.
fn spawn(mut cmd: Command, log: &Path) -> Result<std::process::Child> {
    let f = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdout(f.try_clone()?).stderr(f);
    cmd.spawn().with_context(|| format!("starting {cmd:?}"))
}

/// The lines of `log` that say what was pulled by digest.
fn pulls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("==> pulled") || l.starts_with("==> pulling"))
        .map(str::to_string)
        .collect()
}

/// How the steps' processes start: the xtask binary, in the checkout, with the steps' home.
struct Steps<'a> {
    exe: PathBuf,
    root: PathBuf,
    /// `(variable, value)` the steps get: `HOME` and the toolchain's homes.
    env: Vec<(&'static str, PathBuf)>,
    names: &'a [String],
    ci_tier: bool,
}

impl Steps<'_> {
    /// `xtask vmtest --out dir` over the pipeline's scenarios.
    fn vmtest(&self, dir: &Path) -> Command {
        let mut c = Command::new(&self.exe);
        c.current_dir(&self.root)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("vmtest")
            .arg("--out")
            .arg(dir);
        if self.ci_tier {
            c.arg("--ci-tier");
        }
        c.args(self.names);
        c
    }
}

/// The steps' home under `out`, whose containers `registries.conf` marks the loopback
/// `registry` insecure; the environment that gives it to them.
fn steps_env(out: &Path, registry: &Registry) -> Result<Vec<(&'static str, PathBuf)>> {
    let home = out.join("home");
    let conf = home.join(".config/containers/registries.conf");
    std::fs::create_dir_all(conf.parent().context("a parent")?)?;
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            registry.host_addr()
        ),
    )?;
    let real_home = PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?);
    let tool_home = |var: &str, dir: &str| {
        std::env::var_os(var).map_or_else(|| real_home.join(dir), PathBuf::from)
    };
    Ok(vec![
        ("CARGO_HOME", tool_home("CARGO_HOME", ".cargo")),
        ("RUSTUP_HOME", tool_home("RUSTUP_HOME", ".rustup")),
        ("HOME", home),
    ])
}

/// `cargo xtask pipeline --local [--shards N] [--all | SCENARIO...]`: `ci_tier` when no
/// scenario is named and not `--all`.
pub fn local(names: &[String], shards: usize, ci_tier: bool) -> Result<()> {
    ensure!(shards >= 1, "--shards: at least 1");
    let expect: Vec<&'static str> = imgmode_vmtest::select(names, None, ci_tier)?
        .iter()
        .map(|s| s.name)
        .collect();
    ensure!(!expect.is_empty(), "no scenario chosen");
    let root = crate::workspace_root();
    let out = root.join("target/pipeline");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let t0 = Instant::now();
    let registry = Registry::start(&out.join("registry"))?;
    let repo = format!("docker://{}/imgmode-vmtest", registry.host_addr());
    let steps = Steps {
        exe: std::env::current_exe().context("finding the xtask binary")?,
        env: steps_env(&out, &registry)?,
        root,
        names,
        ci_tier,
    };

    let build_dir = out.join("build");
    let mut cmd = steps.vmtest(&build_dir);
    cmd.args(["--build-only", "--artifacts-to", &repo]);
    let log = out.join("build.log");
    eprintln!("==> pipeline: the build step (log: {})", log.display());
    let t = Instant::now();
    let st = spawn(cmd, &log)?.wait()?;
    let build = Step {
        name: "build".into(),
        log,
        seconds: t.elapsed().as_secs_f64(),
        ok: st.success(),
    };
    ensure!(
        build.ok,
        "the build step failed ({st}); see {}",
        build.log.display()
    );
    let digest = std::fs::read_to_string(build_dir.join("artifacts").join(DIGEST_FILE))
        .context("the build step wrote no artifact digest")?;
    let from = format!("{repo}@{}", digest.trim());
    eprintln!(
        "==> pipeline: built and pushed in {:.0}s: {from}",
        build.seconds
    );
    let key = build_dir.join("artifacts/seed/seed-owner");
    let shard_steps = run_shards(&steps, &out, shards, &from, &key)?;
    drop(registry);

    // a shard that died before its report is named here, not as scenarios no shard ran
    for (i, s) in shard_steps.iter().enumerate() {
        let report = out.join(format!("shard-{}/junit.xml", i + 1));
        ensure!(
            s.ok || report.exists(),
            "pipeline: {} failed before it wrote its report; see {}",
            s.name,
            s.log.display()
        );
    }
    let reports: Vec<PathBuf> = (1..=shards)
        .map(|i| out.join(format!("shard-{i}/junit.xml")))
        .filter(|p| p.exists())
        .collect();
    let merged_path = out.join("junit.xml");
    let m = crate::pipelines::merge(&reports, &merged_path, Some(&expect))?;
    ensure!(
        m.passed.len() + m.failed.len() == expect.len(),
        "the shards ran {} scenario(s), an unsharded run {}",
        m.passed.len() + m.failed.len(),
        expect.len()
    );
    summary(
        &build,
        &shard_steps,
        &m,
        t0.elapsed().as_secs_f64(),
        &merged_path,
    );
    let failed: Vec<&str> = shard_steps
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.name.as_str())
        .collect();
    ensure!(
        failed.is_empty() && m.failed.is_empty(),
        "pipeline: failed: {} (scenarios: {}); see the logs under {}",
        failed.join(", "),
        m.failed.join(", "),
        out.display()
    );
    Ok(())
}

/// The shards, each `vmtest --shard i/N --artifacts-from from` in its own process, directory
/// and image store; as many at once as the machine has room for VMs.
fn run_shards(
    steps: &Steps,
    out: &Path,
    shards: usize,
    from: &str,
    key: &Path,
) -> Result<Vec<Step>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let at_once = imgmode_vmtest::max_lanes(cores);
    let mut done = Vec::new();
    let ids: Vec<usize> = (1..=shards).collect();
    for group in ids.chunks(at_once) {
        let mut running = Vec::new();
        for &i in group {
            let dir = out.join(format!("shard-{i}"));
            let mut cmd = steps.vmtest(&dir);
            cmd.env("IMGMODE_STATE_DIR", dir.join("state")).args([
                "--shard",
                &format!("{i}/{shards}"),
                "--artifacts-from",
                from,
            ]);
            if key.exists() {
                cmd.arg("--seed-owner-key").arg(key);
            }
            let log = out.join(format!("shard-{i}.log"));
            eprintln!("==> pipeline: shard {i}/{shards} (log: {})", log.display());
            running.push((i, log.clone(), Instant::now(), spawn(cmd, &log)?));
        }
        for (i, log, t, mut child) in running {
            let st = child.wait()?;
            let s = Step {
                name: format!("shard {i}/{shards}"),
                log,
                seconds: t.elapsed().as_secs_f64(),
                ok: st.success(),
            };
            eprintln!(
                "==> pipeline: {} {} in {:.0}s",
                s.name,
                if s.ok { "passed" } else { "FAILED" },
                s.seconds
            );
            done.push(s);
        }
    }
    Ok(done)
}

/// The run's table: each step, what it pulled, the merged result, one machine against N.
fn summary(build: &Step, shards: &[Step], m: &crate::pipelines::Merged, wall: f64, merged: &Path) {
    println!("| step | seconds | result | log |\n|---|---|---|---|");
    for s in std::iter::once(build).chain(shards) {
        println!(
            "| {} | {:.0} | {} | {} |",
            s.name,
            s.seconds,
            if s.ok { "passed" } else { "failed" },
            s.log.display()
        );
    }
    for s in shards {
        for l in pulls(&s.log) {
            println!("{}: {l}", s.name);
        }
    }
    let longest = shards.iter().map(|s| s.seconds).fold(0.0, f64::max);
    println!(
        "pipeline: {} passed, {} failed ({}); one machine {wall:.0}s; on {} machines about {:.0}s (the build step {:.0}s, then the longest shard {longest:.0}s)",
        m.passed.len(),
        m.failed.len(),
        merged.display(),
        shards.len(),
        build.seconds + longest,
        build.seconds
    );
}
