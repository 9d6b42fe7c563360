//! imgmode's VM test harness: QEMU under TCG, controlled through QMP, with the serial console
//! captured and results passed back on a virtio-serial port.
//!
//! - [`harness`]: the machinery (QEMU and QMP, the health unit, direct kernel boot, the guest
//!   job protocol, the shared images and seed, media, the throwaway registry).
//! - [`scenarios`]: one file per scenario, each built only from [`harness`].
//! - Here: selecting and sharding scenarios, running them one at a time with one
//!   [`RunContext`] for the run, and writing JUnit.
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
        Some(sh) => chosen
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % sh.count == sh.index - 1)
            .map(|(_, s)| s)
            .collect(),
    })
}

/// Outcome of one scenario.
#[derive(Debug)]
pub struct Outcome {
    pub name: &'static str,
    pub seconds: f64,
    pub result: Result<String, String>,
}

/// Run scenarios one at a time (2 cores: one TCG VM at a time), writing JUnit reports.
pub fn run(
    chosen: &[scenarios::Scenario],
    artifacts: &harness::artifacts::Artifacts,
    out_dir: &Path,
    keep: bool,
) -> Result<Vec<Outcome>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ctx = RunContext::new(artifacts.clone());
    let mut outcomes = Vec::new();
    for s in chosen {
        let dir = out_dir.join(s.name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        eprintln!("==> vmtest {}: {}", s.name, s.about);
        let start = Instant::now();
        let result = rt
            .block_on((s.run)(&ctx, &dir))
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
        outcomes.push(outcome);
    }
    write_junit(&out_dir.join("junit.xml"), &outcomes, out_dir)?;
    Ok(outcomes)
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
        assert!("0/2".parse::<Shard>().is_err());
        assert!("3/2".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
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
