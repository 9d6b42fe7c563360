//! imgmode's VM test harness: QEMU under TCG, controlled through QMP, with the serial console
//! captured and results passed back on a virtio-serial port.
//!
//! - [`harness`]: the machinery (QEMU and QMP, the health unit, direct kernel boot, the guest
//!   job protocol, the shared images and seed, media, the throwaway registry).
//! - [`scenarios`]: one file per scenario, each built only from [`harness`].
//! - Here: selecting and sharding scenarios, running them (one at a time, or in lanes that
//!   run at once) with one [`RunContext`] for the run, and writing JUnit.
//!
//! Every scenario writes `target/vmtest/<scenario>/`: `console.log`, `qmp-events.jsonl`,
//! `results.log`, `qemu-cmdline.txt` and `junit.xml`; the run writes `target/vmtest/junit.xml`.
//!
//! Invariant: this is the only crate that starts VMs or talks QMP.

pub mod harness;
pub mod scenarios;

use anyhow::{bail, Result};
use harness::context::RunContext;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `--shard i/n`: run every n-th scenario starting at i (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("invalid shard {s:?}: expected i/n, e.g. 1/2"))?;
        let (index, count): (usize, usize) = (i.parse()?, n.parse()?);
        if count == 0 || index == 0 || index > count {
            bail!("invalid shard {s:?}: need 1 <= i <= n");
        }
        Ok(Self { index, count })
    }
}

/// Pick scenarios by name (all when `names` is empty; with `ci_tier`, the CI tier's), then by
/// shard.
pub fn select(
    names: &[String],
    shard: Option<Shard>,
    ci_tier: bool,
) -> Result<Vec<scenarios::Scenario>> {
    let all = scenarios::all();
    if ci_tier && !names.is_empty() {
        bail!("--ci-tier picks the scenarios itself; name none");
    }
    for n in names {
        if !all.iter().any(|s| s.name == n) {
            let known: Vec<_> = all.iter().map(|s| s.name).collect();
            bail!(
                "unknown scenario {n:?}; known scenarios: {}",
                known.join(", ")
            );
        }
    }
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|s| names.is_empty() || names.iter().any(|n| n == s.name))
        .filter(|s| !ci_tier || s.not_in_ci.is_none())
        .collect();
    Ok(match shard {
        None => chosen,
        Some(sh) => {
            // the shards are lanes on separate machines: what shares state stays together,
            // the rest is balanced by the scenarios' usual lengths; each in the suite's order
            let mut mine = plan(&chosen, sh.count)
                .into_iter()
                .nth(sh.index - 1)
                .unwrap_or_default();
            mine.sort_unstable();
            chosen
                .into_iter()
                .enumerate()
                .filter(|(i, _)| mine.contains(i))
                .map(|(_, s)| s)
                .collect()
        }
    })
}

/// Outcome of one scenario.
#[derive(Debug)]
pub struct Outcome {
    pub name: &'static str,
    pub seconds: f64,
    pub result: Result<String, String>,
}

/// The most lanes `cores` host cores carry: two cores per multi-threaded TCG VM, at least one
/// lane.
pub fn max_lanes(cores: usize) -> usize {
    (cores / 2).max(1)
}

/// Which scenarios each lane runs, as indexes into `chosen`, in run order.
///
/// With one lane: every scenario in the suite's order. With more: scenarios that share state
/// ([`scenarios::Scenario::shares`]) form one unit, kept in the suite's order and run by one
/// lane; units go, longest first by their estimates, to the lane with the least work so far.
pub fn plan_lanes(chosen: &[scenarios::Scenario], lanes: usize) -> Vec<Vec<usize>> {
    let lanes = lanes.clamp(1, chosen.len().max(1));
    plan(chosen, lanes)
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect()
}

/// [`plan_lanes`]' plan for exactly `lanes` lanes (`--shard i/n`: n of them), some perhaps
/// empty.
fn plan(chosen: &[scenarios::Scenario], lanes: usize) -> Vec<Vec<usize>> {
    let lanes = lanes.max(1);
    if lanes == 1 {
        return vec![(0..chosen.len()).collect()];
    }
    let mut units: Vec<Vec<usize>> = Vec::new();
    for (i, s) in chosen.iter().enumerate() {
        let with = s
            .shares
            .and_then(|key| units.iter().position(|u| chosen[u[0]].shares == Some(key)));
        match with {
            Some(u) => units[u].push(i),
            None => units.push(vec![i]),
        }
    }
    let cost = |u: &Vec<usize>| -> u32 { u.iter().map(|&i| chosen[i].est_seconds).sum() };
    // longest first; ties keep the suite's order
    units.sort_by_key(|u| std::cmp::Reverse(cost(u)));
    let mut plan: Vec<(u32, Vec<usize>)> = vec![(0, Vec::new()); lanes];
    for u in units {
        let lane = (0..lanes).min_by_key(|&l| plan[l].0).unwrap_or(0);
        plan[lane].0 += cost(&u);
        plan[lane].1.extend(u);
    }
    plan.into_iter().map(|(_, l)| l).collect()
}

/// Run scenarios, writing JUnit reports: in `lanes` lanes at once, each lane one scenario at
/// a time ([`plan_lanes`]); with one lane, in the suite's order. Each lane is a thread with its
/// own runtime; the run's [`RunContext`] is shared.
///
/// A TCG VM keeps about two cores busy: lanes pay only with two cores per lane
/// ([`max_lanes`]). On two cores, two lanes made every scenario about twice as slow (a boot
/// 88 to 99 s against 56 s alone, the seed 639 s against 285 s) and a 2-vCPU guest's kernel
/// died of an `int3` while patching its code across vCPUs the host had descheduled.
pub fn run(
    chosen: &[scenarios::Scenario],
    artifacts: &harness::artifacts::Artifacts,
    out_dir: &Path,
    opts: RunOpts,
) -> Result<Vec<Outcome>> {
    let RunOpts {
        keep,
        lanes,
        baselines,
        seed,
    } = opts;
    let mut ctx = RunContext::new(artifacts.clone(), seed);
    ctx.baselines = baselines;
    let plan = plan_lanes(chosen, lanes);
    if plan.len() > 1 {
        for (l, lane) in plan.iter().enumerate() {
            let names: Vec<&str> = lane.iter().map(|&i| chosen[i].name).collect();
            eprintln!("==> vmtest lane {}: {}", l + 1, names.join(", "));
        }
    }
    let done = std::sync::Mutex::new(Vec::<(usize, Outcome)>::new());
    std::thread::scope(|sc| -> Result<()> {
        let handles: Vec<_> = plan
            .iter()
            .enumerate()
            .map(|(l, lane)| {
                let (ctx, done) = (&ctx, &done);
                let label = if plan.len() > 1 {
                    format!(" [lane {}]", l + 1)
                } else {
                    String::new()
                };
                sc.spawn(move || -> Result<()> {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()?;
                    for &i in lane {
                        let o = run_one(&rt, ctx, &chosen[i], out_dir, keep, &label)?;
                        done.lock()
                            .map_err(|_| anyhow::anyhow!("a lane panicked"))?
                            .push((i, o));
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a vmtest lane panicked"))??;
        }
        Ok(())
    })?;
    let mut done = done
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a lane panicked"))?;
    done.sort_by_key(|(i, _)| *i);
    let outcomes: Vec<Outcome> = done.into_iter().map(|(_, o)| o).collect();
    write_junit(&out_dir.join("junit.xml"), &outcomes, out_dir)?;
    Ok(outcomes)
}

/// How [`run`] runs the chosen scenarios.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// Keep every scenario's disk overlays and firmware variables.
    pub keep: bool,
    /// Lanes to run in ([`plan_lanes`]).
    pub lanes: usize,
    /// Also measure the benchmarks' baselines ([`RunContext::baselines`]).
    pub baselines: bool,
    /// The run's seed when it was given one (pulled by digest, [`harness::handoff`]).
    pub seed: Option<harness::seed::SeedBuild>,
}

/// Run one scenario in its fresh directory; report it, write its JUnit, tidy its directory.
fn run_one(
    rt: &tokio::runtime::Runtime,
    ctx: &RunContext,
    s: &scenarios::Scenario,
    out_dir: &Path,
    keep: bool,
    label: &str,
) -> Result<Outcome> {
    let dir = out_dir.join(s.name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    eprintln!("==> vmtest {}{label}: {}", s.name, s.about);
    let start = Instant::now();
    let result = rt
        .block_on((s.run)(ctx, &dir))
        .map_err(|e| format!("{e:#}"));
    let seconds = start.elapsed().as_secs_f64();
    match &result {
        Ok(msg) => eprintln!("==> vmtest {}: PASS ({seconds:.0}s) {msg}", s.name),
        Err(e) => eprintln!(
            "==> vmtest {}: FAIL ({seconds:.0}s): {e}\n    logs: {}",
            s.name,
            dir.display()
        ),
    }
    let outcome = Outcome {
        name: s.name,
        seconds,
        result,
    };
    write_junit(
        &dir.join("junit.xml"),
        std::slice::from_ref(&outcome),
        out_dir,
    )?;
    if !keep {
        remove_disposable(&dir);
    }
    Ok(outcome)
}

/// Remove what a finished scenario no longer needs, at any depth under `dir`: VM disk
/// overlays, firmware variables, QMP sockets, ISOs and registry storage. Logs, results and
/// the shared seed (its archive, layout and seed-system disk) stay.
fn remove_disposable(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if name == "storage" && dir.file_name().is_some_and(|d| d == "registry") {
                let _ = std::fs::remove_dir_all(&p);
            } else {
                remove_disposable(&p);
            }
        } else if matches!(name.as_str(), "overlay.qcow2" | "OVMF_VARS.fd" | "qmp.sock")
            || name.ends_with(".iso")
        {
            let _ = std::fs::remove_file(&p);
        }
    }
}

fn write_junit(path: &Path, outcomes: &[Outcome], out_dir: &Path) -> Result<()> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("imgmode-vmtest");
    let mut suite = TestSuite::new("vmtest");
    for o in outcomes {
        let status = match &o.result {
            Ok(_) => TestCaseStatus::success(),
            Err(e) => {
                let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                st.set_message(e.lines().next().unwrap_or("failed").to_string());
                st.set_description(e.clone());
                st
            }
        };
        let mut case = TestCase::new(o.name, status);
        case.set_classname("vmtest");
        case.set_time(std::time::Duration::from_secs_f64(o.seconds));
        let console = console_path(out_dir, o.name);
        if let Ok(msg) = &o.result {
            case.set_system_out(msg.clone());
        } else if let Ok(text) = std::fs::read_to_string(&console) {
            let tail: Vec<&str> = text.lines().rev().take(200).collect();
            case.set_system_out(tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        suite.add_test_case(case);
    }
    report.add_test_suite(suite);
    std::fs::write(path, report.to_string()?)?;
    Ok(())
}

fn console_path(out_dir: &Path, name: &str) -> PathBuf {
    out_dir.join(name).join("console.log")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_scenarios() {
        let all: Vec<_> = select(&[], None, false)
            .unwrap()
            .iter()
            .map(|s| s.name)
            .collect();
        let mut union = Vec::new();
        for i in 1..=2 {
            let sh: Shard = format!("{i}/2").parse().unwrap();
            union.extend(select(&[], Some(sh), false).unwrap().iter().map(|s| s.name));
        }
        union.sort();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(union, sorted);
        // what shares the seed (or the layered images) is in one shard, in the suite's order
        for n in 2..=4 {
            for key in [scenarios::SEED, scenarios::LAYERED] {
                let holding: Vec<Vec<&str>> = (1..=n)
                    .map(|i| {
                        let sh: Shard = format!("{i}/{n}").parse().unwrap();
                        select(&[], Some(sh), true)
                            .unwrap()
                            .iter()
                            .filter(|s| s.shares == Some(key))
                            .map(|s| s.name)
                            .collect::<Vec<_>>()
                    })
                    .filter(|v| !v.is_empty())
                    .collect();
                assert_eq!(holding.len(), 1, "{key} over shards of {n}: {holding:?}");
            }
        }
        for (tier, want) in [
            (true, &["seed", "ibi"][..]),
            (
                false,
                &[
                    "seed",
                    "ibi",
                    "ibi-two-sites",
                    "registry-less",
                    "registry-less-upgrade",
                ][..],
            ),
        ] {
            let seed_shard: Vec<&str> = (1..=3)
                .map(|i| select(&[], Some(format!("{i}/3").parse().unwrap()), tier).unwrap())
                .find(|v| v.iter().any(|s| s.name == "seed"))
                .unwrap()
                .iter()
                .map(|s| s.name)
                .filter(|n| want.contains(n))
                .collect();
            assert_eq!(seed_shard, want);
        }
        assert!("0/2".parse::<Shard>().is_err());
        assert!("3/2".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }

    #[test]
    fn lanes_keep_shared_state_together_and_balance_the_rest() {
        // the full suite: the tier has one scenario of the layered images
        let chosen = select(&[], None, false).unwrap();
        assert_eq!(
            plan_lanes(&chosen, 1),
            vec![(0..chosen.len()).collect::<Vec<_>>()]
        );
        let plan = plan_lanes(&chosen, 2);
        assert_eq!(plan.len(), 2);
        let mut all: Vec<usize> = plan.concat();
        all.sort();
        assert_eq!(all, (0..chosen.len()).collect::<Vec<_>>());
        for key in [scenarios::SEED, scenarios::LAYERED] {
            let members: Vec<usize> = (0..chosen.len())
                .filter(|&i| chosen[i].shares == Some(key))
                .collect();
            assert!(members.len() >= 2, "{key}");
            let lane = plan.iter().find(|l| l.contains(&members[0])).unwrap();
            let order: Vec<usize> = lane
                .iter()
                .copied()
                .filter(|i| members.contains(i))
                .collect();
            assert_eq!(order, members, "{key}: one lane, the suite's order");
        }
        let load = |l: &Vec<usize>| -> u32 { l.iter().map(|&i| chosen[i].est_seconds).sum() };
        let total: u32 = chosen.iter().map(|s| s.est_seconds).sum();
        let (a, b) = (load(&plan[0]), load(&plan[1]));
        assert!(
            a.max(b) - a.min(b) <= total / 10,
            "unbalanced lanes: {a} s and {b} s"
        );
        assert_eq!((max_lanes(2), max_lanes(4), max_lanes(1)), (1, 2, 1));
        // more lanes than scenarios: one lane each
        let two = select(&["boot".into(), "seed".into()], None, false).unwrap();
        assert_eq!(plan_lanes(&two, 8).len(), 2);
    }

    #[test]
    fn unknown_scenarios_are_named() {
        let err = select(&["nope".into()], None, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown scenario \"nope\"") && err.contains("boot"),
            "{err}"
        );
    }

    #[test]
    fn junit_records_failures_with_console() {
        let td = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(td.path().join("boot")).unwrap();
        std::fs::write(
            td.path().join("boot/console.log"),
            "Kernel panic - not syncing\n",
        )
        .unwrap();
        let outcomes = vec![
            Outcome {
                name: "boot",
                seconds: 1.5,
                result: Err("boot failed: panic".into()),
            },
            Outcome {
                name: "boot-uefi",
                seconds: 2.0,
                result: Ok("fine".into()),
            },
        ];
        let p = td.path().join("junit.xml");
        write_junit(&p, &outcomes, td.path()).unwrap();
        let xml = std::fs::read_to_string(p).unwrap();
        assert!(
            xml.contains("tests=\"2\"") && xml.contains("failures=\"1\""),
            "{xml}"
        );
        assert!(xml.contains("Kernel panic"), "{xml}");
    }
}
