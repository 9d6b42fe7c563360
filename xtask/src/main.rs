//! `cargo xtask`: developer and CI tasks.
//!
//! - `cargo xtask vmtest [SCENARIO...] [--list] [--keep] [--shard i/n] [--release] [--ci-tier]
//!   [--lanes N] [--baselines] [--artifacts-to REF [--build-only] | --artifacts-from REF
//!   [--seed-owner-key FILE]] [--out DIR]`
//! - `cargo xtask bench [--out FILE]`
//! - `cargo xtask test [--strict]`: the workspace's tests, with skipped tests counted and listed.
//! - `cargo xtask tidy`: the architecture rules of ARCHITECTURE.md, checked on the source.
//! - `cargo xtask ci [--no-vmtest]`: what `.ci/run` runs after installing packages.
//! - `cargo xtask lint-pipelines`, `cargo xtask junit-merge [--ci-tier] -o OUT REPORT...`: the
//!   pipeline definitions' linters, and one JUnit report of the shards' (`pipelines.rs`).
//! - `cargo xtask pipeline --local [--shards N] [--all | SCENARIO...]`: the pipeline's graph
//!   on this machine, by default over the CI tier as the engines run it (`pipeline.rs`).

mod bench;
mod fuzz;
mod pipeline;
mod pipelines;
mod tidy;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot images in QEMU and prove they work.
    Vmtest {
        /// Scenarios to run (default: all).
        scenarios: Vec<String>,
        #[command(flatten)]
        opts: VmtestOpts,
    },
    /// Measure speed against baselines in the same run; prints a table and writes JSON.
    Bench {
        /// Suites to run (default: all).
        #[arg(value_enum)]
        suites: Vec<bench::Suite>,
        #[arg(long, default_value = "target/bench/results.json")]
        out: PathBuf,
        /// Exit non-zero, naming them, when rows miss their targets.
        #[arg(long)]
        check: bool,
        /// Override a row's target, 'ROW<=X' (ROW: the row's name or its beginning).
        #[arg(long = "target", value_name = "ROW<=X")]
        targets: Vec<String>,
        /// ibi: read the figures the last `vmtest ibi` measured (both sides in that run)
        /// instead of running the scenario again.
        #[arg(long)]
        reuse_vmtest: bool,
        /// Keep the rows already in --out (another suite's run) and add this run's.
        #[arg(long)]
        append: bool,
    },
    /// Run every cargo-fuzz target (fuzz/) for some seconds each (nightly + cargo-fuzz).
    Fuzz {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Targets to run (default: all).
        targets: Vec<String>,
    },
    /// `cargo test --workspace`, then the tests that were skipped for want of root, a tool,
    /// a loop device, a port or tmpfs, counted and listed (`--strict`: such a test fails).
    Test {
        /// Fail every test that cannot run here (IMGMODE_TEST_STRICT=1), as CI does.
        #[arg(long)]
        strict: bool,
    },
    /// The architecture rules (crate graph, import circles, where `Command::new`, environment
    /// and `/proc` reads may appear, file and function lengths, the tool table), every
    /// violation printed.
    Tidy,
    /// fmt, clippy, tidy, the pipeline linters, the fuzz targets (clippy), strict tests and the
    /// VM scenarios of the CI tier, as CI runs them.
    Ci {
        /// Everything but the VM scenarios: a pipeline's checks job, whose shards run
        /// `vmtest --ci-tier --shard i/n`.
        #[arg(long)]
        no_vmtest: bool,
    },
    /// The pipeline definitions (`.github/workflows/`, `tekton/`) through their linters
    /// (action-validator, tekton-lint; `cargo xtask deps` installs them).
    LintPipelines,
    /// Merge the shards' JUnit reports into one, print a summary, fail when a scenario failed.
    JunitMerge {
        /// The shards' reports (`target/vmtest/junit.xml` of each).
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Where the merged report goes.
        #[arg(short, long)]
        out: PathBuf,
        /// Fail unless every scenario of the CI tier is in exactly one report.
        #[arg(long)]
        ci_tier: bool,
    },
    /// The CI pipeline's graph on this machine: a registry on loopback, the build step once
    /// (`vmtest --artifacts-to`), N shards as separate processes that only pull
    /// (`vmtest --shard i/N --artifacts-from`), their JUnit merged; under target/pipeline/.
    Pipeline {
        /// Scenarios to run (default: the CI tier, as the engines' definitions run it).
        scenarios: Vec<String>,
        /// On this machine (the engines run the definitions in .github/ and tekton/).
        #[arg(long, required = true)]
        local: bool,
        /// How many shards.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
        shards: u16,
        /// Every scenario (the full suite) instead of the CI tier.
        #[arg(long, conflicts_with = "scenarios")]
        all: bool,
    },
    /// Install the Debian packages imgmode needs (idempotent; needs root).
    Deps,
    /// Install what is missing, then build imgmode-base and target/imgmode-base.qcow2.
    Build,
    /// From nothing: base -> seed-system image -> disk -> seed VM (test cluster healthy) ->
    /// imgmode seed create in the guest -> the seed in the local store (imgmode-seed) and at
    /// target/seed/seed.oci-archive.
    BuildSeed,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn sh(cmd: &mut Command) -> Result<()> {
    eprintln!("==> {cmd:?}");
    let st = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

/// Build the imgmode binary the way tests use it, and return its path.
///
/// It is the binary `cargo test --workspace` builds (and leaves at `target/debug/imgmode`):
/// `cargo build -p imgmode` resolves the dependencies' features for that one package, which
/// makes 47 of its 301 libraries (the glib and ostree stack, ostree-ext, tonic, every
/// imgmode crate) different builds from the tests' ones. In CI, where the tests ran first,
/// this build is free instead of a second compile of most of the product.
pub fn build_imgmode() -> Result<PathBuf> {
    let root = workspace_root();
    sh(Command::new(env!("CARGO")).current_dir(&root).args([
        "test",
        "--workspace",
        "--no-run",
        "--quiet",
    ]))?;
    let bin = root.join("target/debug/imgmode");
    anyhow::ensure!(
        bin.is_file(),
        "cargo test --workspace --no-run left no {}",
        bin.display()
    );
    Ok(bin)
}

/// Build the imgmode binary as users install it (release), and return its path.
pub fn build_imgmode_release() -> Result<PathBuf> {
    let root = workspace_root();
    sh(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--quiet",
        "--release",
        "-p",
        "imgmode",
    ]))?;
    Ok(root.join("target/release/imgmode"))
}

/// How `cargo xtask vmtest` runs: its flags (also what `ci` and `bench ibi` run it with).
#[derive(clap::Args, Default)]
pub(crate) struct VmtestOpts {
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Keep disk overlays and firmware variables of every scenario.
    #[arg(long)]
    keep: bool,
    /// Run shard i of n (1-based), e.g. 1/2.
    #[arg(long)]
    shard: Option<imgmode_vmtest::Shard>,
    /// Put the release build of imgmode in the images (as users install it) instead of
    /// the debug build; `bench ibi` times it this way.
    #[arg(long)]
    release: bool,
    /// Run the CI tier: every scenario but those whose area others prove (`--list` with
    /// it says which are left out and why); what `cargo xtask ci` runs.
    #[arg(long)]
    ci_tier: bool,
    /// Run the scenarios in N lanes at once, each lane one VM scenario at a time;
    /// scenarios that share state (the seed, the layered images) keep to one lane. A TCG
    /// VM keeps two cores busy: at most one lane per two cores is allowed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    lanes: u16,
    /// Also measure the benchmarks' baselines in the scenarios that have one (`ibi`: its
    /// second host's installed disk booted again, three times) and write their figures
    /// (`target/vmtest/ibi-two-sites/timings.json`); `bench ibi` runs the scenario so, and
    /// `bench --reuse-vmtest` reads them.
    #[arg(long)]
    baselines: bool,
    /// Push what the scenarios share (the base image, its disks, the seed and its facts) to
    /// REF, `docker://HOST/REPOSITORY` or `oci:/DIR`, and print the artifact's digest
    /// (`docs/guide/pipelines.md`).
    #[arg(long, value_name = "REF")]
    artifacts_to: Option<imgmode_vmtest::harness::handoff::ArtifactsRef>,
    /// Pull what the scenarios share from REF (`…@sha256:DIGEST` pins the artifact) by
    /// digest instead of building it, the imgmode binary among it (this checkout's base
    /// definition must be the build step's).
    #[arg(long, value_name = "REF", conflicts_with_all = ["artifacts_to", "release"])]
    artifacts_from: Option<imgmode_vmtest::harness::handoff::ArtifactsRef>,
    /// With --artifacts-from: the seed owner's private key (the build step's
    /// `artifacts/seed/seed-owner`), which the artifacts never carry.
    #[arg(long, value_name = "FILE", requires = "artifacts_from")]
    seed_owner_key: Option<PathBuf>,
    /// With --artifacts-to: build and push what the chosen scenarios share, run none (a
    /// pipeline's build step).
    #[arg(long, requires = "artifacts_to", conflicts_with_all = ["keep", "lanes", "baselines", "list"])]
    build_only: bool,
    /// Where the scenarios' directories and junit.xml go.
    #[arg(long, value_name = "DIR", default_value = VMTEST_OUT)]
    out: VmtestOut,
}

/// Where `cargo xtask vmtest` writes unless told (`bench ibi` reads its timings there).
pub(crate) const VMTEST_OUT: &str = "target/vmtest";

/// `--out` of [`VmtestOpts`]: [`VMTEST_OUT`] also for the options `ci` and `bench` build
/// with `..VmtestOpts::default()` (a bare path's default would be the checkout's root).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct VmtestOut(PathBuf);

impl Default for VmtestOut {
    fn default() -> Self {
        VmtestOut(PathBuf::from(VMTEST_OUT))
    }
}

impl std::str::FromStr for VmtestOut {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(VmtestOut(PathBuf::from(s)))
    }
}

fn vmtest(names: Vec<String>, o: VmtestOpts) -> Result<()> {
    let VmtestOpts {
        list,
        keep,
        shard,
        release,
        ci_tier,
        lanes,
        baselines,
        artifacts_to,
        artifacts_from,
        seed_owner_key,
        build_only,
        out,
    } = o;
    let lanes = usize::from(lanes);
    let chosen = imgmode_vmtest::select(&names, shard, ci_tier)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if lanes > imgmode_vmtest::max_lanes(cores) {
        bail!(
            "--lanes {lanes}: a TCG VM keeps two cores busy and this machine has {cores}; run at most {} lane(s) here (more make every scenario slower, not the run faster)",
            imgmode_vmtest::max_lanes(cores)
        );
    }
    if list {
        for s in &chosen {
            println!("{:<12} {}", s.name, s.about);
        }
    }
    if ci_tier {
        for s in imgmode_vmtest::scenarios::all() {
            if let Some(why) = s.not_in_ci {
                eprintln!("==> vmtest {}: not in the CI tier: {why}", s.name);
            }
        }
    }
    if list {
        return Ok(());
    }
    if chosen.is_empty() {
        eprintln!("no scenario in this shard");
        return Ok(());
    }
    let root = workspace_root();
    let out = root.join(out.0);
    let (artifacts, seed) = shared_images(
        &chosen,
        &out,
        release,
        artifacts_from.as_ref(),
        artifacts_to.as_ref(),
        seed_owner_key.as_deref(),
    )?;
    if build_only {
        return Ok(());
    }
    let outcomes = imgmode_vmtest::run(
        &chosen,
        &artifacts,
        &out,
        imgmode_vmtest::RunOpts {
            keep,
            lanes,
            baselines,
            seed,
        },
    )?;
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    println!(
        "vmtest: {} passed, {} failed",
        outcomes.len() - failed,
        failed
    );
    if failed > 0 {
        // again at the very end, where a CI log's tail shows it: which failed, and why
        let mut names = Vec::new();
        for o in &outcomes {
            if let Err(e) = &o.result {
                names.push(o.name);
                let why: Vec<&str> = e.lines().take(FAILURE_LINES).collect();
                println!(
                    "vmtest: {} FAILED after {:.0}s: {}",
                    o.name,
                    o.seconds,
                    why.join("\n  ")
                );
            }
        }
        bail!(
            "{failed} VM scenario(s) failed ({}); logs under {}",
            names.join(", "),
            out.display()
        );
    }
    Ok(())
}

/// The images the `chosen` scenarios share, in `out/artifacts`: pulled by digest `from` a
/// build step, or built here (the `imgmode` binary with them; `release`: its release build);
/// pushed `to` a registry or layout, the seed made for it, when asked.
fn shared_images(
    chosen: &[imgmode_vmtest::scenarios::Scenario],
    out: &Path,
    release: bool,
    from: Option<&imgmode_vmtest::harness::handoff::ArtifactsRef>,
    to: Option<&imgmode_vmtest::harness::handoff::ArtifactsRef>,
    seed_owner_key: Option<&Path>,
) -> Result<(
    imgmode_vmtest::harness::artifacts::Artifacts,
    Option<imgmode_vmtest::harness::seed::SeedBuild>,
)> {
    let root = workspace_root();
    let raw = chosen
        .iter()
        .any(|s| imgmode_vmtest::scenarios::RAW_DISK_SCENARIOS.contains(&s.name));
    let need_seed = chosen
        .iter()
        .any(|s| s.shares == Some(imgmode_vmtest::scenarios::SEED));
    let definition = root.join("containerfiles/base");
    let shared = out.join("artifacts");
    let (artifacts, mut seed) = match from {
        // the build step's imgmode comes with its images: nothing of the product is compiled
        Some(from) => imgmode_vmtest::harness::handoff::pull(
            from,
            &imgmode_vmtest::harness::handoff::PullOpts {
                definition: &definition,
                dir: &shared,
                raw,
                seed_owner_key,
                need_seed,
            },
        )?,
        None => {
            let imgmode = if release {
                build_imgmode_release()?
            } else {
                build_imgmode()?
            };
            eprintln!("==> building the images the scenarios share");
            let a = imgmode_vmtest::harness::artifacts::build(&imgmode, &definition, &shared, raw)?;
            (a, None)
        }
    };
    if let Some(to) = to {
        if need_seed {
            seed = Some(build_shared_seed(&artifacts, &shared.join("seed"))?);
        }
        imgmode_vmtest::harness::handoff::push(to, &artifacts, seed.as_ref(), &shared)?;
    }
    Ok((artifacts, seed))
}

/// The seed a build step pushes for its shards, made in `dir` as `build-seed` makes it.
fn build_shared_seed(
    a: &imgmode_vmtest::harness::artifacts::Artifacts,
    dir: &Path,
) -> Result<imgmode_vmtest::harness::seed::SeedBuild> {
    eprintln!("==> making the seed the shards share");
    tokio::runtime::Runtime::new()?.block_on(imgmode_vmtest::harness::seed::build_seed(
        a,
        dir,
        &dir.join("seed.oci-archive"),
        &|m| eprintln!("==> {m}"),
    ))
}

/// Lines of a failed scenario's error repeated in the run's last lines.
const FAILURE_LINES: usize = 12;

/// The quick start's first command: packages, the base image and a bootable qcow2.
fn build_default() -> Result<()> {
    imgmode_deps::install()?;
    let root = workspace_root();
    let imgmode = build_imgmode()?;
    sh(Command::new(&imgmode)
        .args(["base", "build", "--definition"])
        .arg(root.join("containerfiles/base")))?;
    let disk = root.join("target/imgmode-base.qcow2");
    sh(Command::new(&imgmode)
        .args(["disk", "imgmode-base", "--format", "qcow2", "--force", "-o"])
        .arg(&disk))?;
    println!(
        "built imgmode-base and {}\nboot it: qemu-system-x86_64 -m 2048 -accel tcg -cpu max -nographic -drive file={},if=virtio",
        disk.display(),
        disk.display()
    );
    Ok(())
}

fn build_seed() -> Result<()> {
    imgmode_deps::install()?;
    let root = workspace_root();
    let imgmode = build_imgmode()?;
    let t0 = std::time::Instant::now();
    eprintln!("==> [1/5] the base image (imgmode base build; a cache hit when unchanged)");
    let a = imgmode_vmtest::harness::artifacts::base_image(
        &imgmode,
        &root.join("containerfiles/base"),
        None,
    )?;
    let dir = root.join("target/seed");
    let archive = dir.join("seed.oci-archive");
    let n = std::sync::atomic::AtomicUsize::new(1);
    let step = |m: &str| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        eprintln!("==> [{i}] [{:>4}s] {m}", t0.elapsed().as_secs());
    };
    let s = tokio::runtime::Runtime::new()?.block_on(imgmode_vmtest::harness::seed::build_seed(
        &a, &dir, &archive, &step,
    ))?;
    println!(
        "seed image {} ({}) in the local store, and {}\n  from the seed VM in {:.0}s (total {:.0}s); inspect it: imgmode seed inspect {}",
        s.image,
        s.digest,
        s.archive.display(),
        s.vm_seconds,
        t0.elapsed().as_secs_f64(),
        s.image
    );
    Ok(())
}

/// `imgmode-testkit`'s strict-mode variable and skip list (xtask cannot link testkit: it links
/// the builder, whose libostree `cargo xtask deps` installs; testkit's tests keep these equal).
const STRICT_ENV: &str = "IMGMODE_TEST_STRICT";
const SKIPS_FILE: &str = "test-skips.txt";

/// `cargo test --workspace`; skips (see `imgmode-testkit`) are counted and listed at the end,
/// and in strict mode a test that cannot run fails instead.
fn test(strict: bool) -> Result<()> {
    let root = workspace_root();
    let skips = root.join("target").join(SKIPS_FILE);
    let _ = std::fs::remove_file(&skips);
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(&root).args(["test", "--workspace"]);
    if strict {
        cmd.env(STRICT_ENV, "1");
    } else {
        cmd.env_remove(STRICT_ENV);
    }
    let result = sh(&mut cmd);
    let listed = std::fs::read_to_string(&skips).unwrap_or_default();
    let n = listed.lines().count();
    if n == 0 {
        println!("tests skipped: 0");
    } else {
        println!(
            "tests skipped: {n} (they need what this machine lacks; listed in {}):\n{listed}",
            skips.display()
        );
    }
    result
}

fn ci(no_vmtest: bool) -> Result<()> {
    let root = workspace_root();
    let cargo = env!("CARGO");
    sh(Command::new(cargo)
        .current_dir(&root)
        .args(["fmt", "--all", "--check"]))?;
    // --workspace takes in the fuzz targets (fuzz/), checked with the dependencies the rest
    // already checked; a check never links, so libfuzzer-sys's build script names this
    // library instead of compiling libFuzzer's C++ (cargo fuzz builds it: `cargo xtask fuzz`)
    sh(Command::new(cargo)
        .current_dir(&root)
        .env(
            "CUSTOM_LIBFUZZER_PATH",
            root.join("target/no-libfuzzer/libfuzzer.a"),
        )
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    tidy::run(&root)?;
    pipelines::lint(&root)?;
    test(true)?;
    if no_vmtest {
        return Ok(());
    }
    vmtest(
        Vec::new(),
        VmtestOpts {
            ci_tier: true,
            lanes: CI_LANES,
            ..VmtestOpts::default()
        },
    )
}

/// Lanes CI runs the VM scenarios in: one on the reference machine's two cores (a TCG VM keeps
/// both busy; see `imgmode_vmtest::run`).
const CI_LANES: u16 = 1;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Vmtest { scenarios, opts } => vmtest(scenarios, opts),
        Cmd::Bench {
            suites,
            out,
            check,
            targets,
            reuse_vmtest,
            append,
        } => bench::run(
            &workspace_root(),
            &out,
            &suites,
            check,
            &targets,
            reuse_vmtest,
            append,
        ),
        Cmd::Fuzz { seconds, targets } => fuzz::run(&workspace_root(), seconds, &targets),
        Cmd::Test { strict } => test(strict),
        Cmd::Tidy => tidy::run(&workspace_root()),
        Cmd::Ci { no_vmtest } => ci(no_vmtest),
        Cmd::LintPipelines => pipelines::lint(&workspace_root()),
        Cmd::JunitMerge {
            reports,
            out,
            ci_tier,
        } => pipelines::junit_merge(&reports, &out, ci_tier),
        Cmd::Pipeline {
            scenarios,
            local: _,
            shards,
            all,
        } => {
            let ci_tier = scenarios.is_empty() && !all;
            pipeline::local(&scenarios, usize::from(shards), ci_tier)
        }
        Cmd::Deps => imgmode_deps::install(),
        Cmd::Build => build_default(),
        Cmd::BuildSeed => build_seed(),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ci` and `bench ibi` build their options from the default: their scenarios must go
    /// where `vmtest`'s own default puts them, where `bench ibi` reads the timings.
    #[test]
    fn built_options_write_where_the_command_line_default_does() {
        assert_eq!(VmtestOpts::default().out, VmtestOut("target/vmtest".into()));
        let parsed = Cli::try_parse_from(["xtask", "vmtest", "boot"]).unwrap();
        match parsed.cmd {
            Cmd::Vmtest { opts, .. } => assert_eq!(opts.out, VmtestOpts::default().out),
            _ => panic!("not vmtest"),
        }
    }
}
