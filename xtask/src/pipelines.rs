//! The CI pipeline definitions in the repository (`.github/workflows/`, `tekton/`): their
//! linters, installed and run, and the merge of the shards' JUnit reports.
//!
//! - GitHub Actions workflows are checked by action-validator (the workflow schema
//!   SchemaStore publishes, which GitHub's editor tooling uses), Tekton Tasks and Pipelines by
//!   IBM's tekton-lint (references, parameters, workspaces). Both come from npm at pinned
//!   versions into the cache directory, by `cargo xtask deps` ([`imgmode_deps::LINTERS`]).
//! - `cargo xtask junit-merge` makes one report of the shards' `junit.xml` (quick-junit reads
//!   and writes them); with `--ci-tier` every scenario of the tier must be in exactly one.

use anyhow::{bail, ensure, Context, Result};
use imgmode_deps::lint_dir;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The definitions `lint` checks: (GitHub workflows, Tekton files), each list sorted.
fn definitions(root: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let list = |dir: &Path, exts: &[&str]| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| exts.contains(&e))
            })
            .collect();
        v.sort();
        ensure!(!v.is_empty(), "no pipeline definition in {}", dir.display());
        Ok(v)
    };
    Ok((
        list(&root.join(".github/workflows"), &["yml", "yaml"])?,
        list(&root.join("tekton"), &["yaml", "yml"])?,
    ))
}

/// `cargo xtask lint-pipelines`: every workflow through action-validator, the Tekton files
/// together through tekton-lint (a Pipeline's task references resolve across files), no
/// warning allowed.
pub fn lint(root: &Path) -> Result<()> {
    let dir = lint_dir();
    let bin = |name: &str| -> Result<PathBuf> {
        let p = dir.join("node_modules/.bin").join(name);
        ensure!(
            p.exists(),
            "{name} is not installed under {}; run `cargo xtask deps`",
            dir.display()
        );
        Ok(p)
    };
    let (workflows, tekton) = definitions(root)?;
    let validator = bin("action-validator")?;
    for w in &workflows {
        crate::sh(Command::new(&validator).arg(w))
            .with_context(|| format!("{}: action-validator refused it", w.display()))?;
    }
    crate::sh(
        Command::new(bin("tekton-lint")?)
            .args(["--color", "false", "--max-warnings", "0"])
            .args(&tekton),
    )
    .context("tekton-lint refused the Tekton definitions")?;
    eprintln!(
        "==> pipelines: {} workflow(s) and {} Tekton file(s) pass their linters",
        workflows.len(),
        tekton.len()
    );
    Ok(())
}

/// What [`merge`] made of the shards' reports.
#[derive(Debug, PartialEq)]
pub struct Merged {
    pub passed: Vec<String>,
    pub failed: Vec<String>,
    /// The longest shard's scenario seconds, and the sum over the shards.
    pub longest_shard_seconds: f64,
    pub total_seconds: f64,
}

/// Merge JUnit reports (one per shard, as `cargo xtask vmtest --shard` writes them) into one
/// at `out`. A test case in two reports is refused, and with `expect` every named case must be
/// in one of them.
pub fn merge(inputs: &[PathBuf], out: &Path, expect: Option<&[&str]>) -> Result<Merged> {
    use quick_junit::{Report, TestCaseStatus, TestSuite};
    ensure!(!inputs.is_empty(), "junit-merge: no report to merge");
    let mut merged = Report::new("imgmode-vmtest");
    let mut suite = TestSuite::new("vmtest");
    let mut seen: Vec<(String, String)> = Vec::new();
    let (mut longest, mut total) = (0f64, 0f64);
    let (mut passed, mut failed) = (Vec::new(), Vec::new());
    for path in inputs {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let report = Report::deserialize_from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a JUnit report: {e}", path.display()))?;
        let mut shard_seconds = 0f64;
        for s in report.test_suites {
            for case in s.test_cases {
                let name = case.name.to_string();
                if let Some((_, other)) = seen.iter().find(|(n, _)| *n == name) {
                    bail!(
                        "junit-merge: {name} is in {} and in {other}: the shards overlap",
                        path.display()
                    );
                }
                seen.push((name.clone(), path.display().to_string()));
                shard_seconds += case.time.map_or(0.0, |t| t.as_secs_f64());
                if matches!(case.status, TestCaseStatus::Success { .. }) {
                    passed.push(name);
                } else {
                    failed.push(name);
                }
                suite.add_test_case(case);
            }
        }
        longest = longest.max(shard_seconds);
        total += shard_seconds;
    }
    if let Some(expect) = expect {
        let missing: Vec<&str> = expect
            .iter()
            .copied()
            .filter(|n| !seen.iter().any(|(s, _)| s == n))
            .collect();
        ensure!(
            missing.is_empty(),
            "junit-merge: no shard ran {}; every scenario of the CI tier must run in one",
            missing.join(", ")
        );
    }
    merged.add_test_suite(suite);
    std::fs::write(out, merged.to_string()?)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(Merged {
        passed,
        failed,
        longest_shard_seconds: longest,
        total_seconds: total,
    })
}

/// `cargo xtask junit-merge [--ci-tier] -o OUT REPORT...`: merge, print a summary, fail when a
/// scenario failed.
pub fn junit_merge(inputs: &[PathBuf], out: &Path, ci_tier: bool) -> Result<()> {
    let tier: Vec<&'static str> = imgmode_vmtest::select(&[], None, true)?
        .iter()
        .map(|s| s.name)
        .collect();
    let m = merge(inputs, out, ci_tier.then_some(tier.as_slice()))?;
    println!(
        "junit-merge: {} report(s), {} passed, {} failed; the longest shard ran {:.0}s of scenarios, all shards {:.0}s; wrote {}",
        inputs.len(),
        m.passed.len(),
        m.failed.len(),
        m.longest_shard_seconds,
        m.total_seconds,
        out.display()
    );
    ensure!(
        m.failed.is_empty(),
        "junit-merge: failed: {}",
        m.failed.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

    fn report(dir: &Path, name: &str, cases: &[(&str, bool, f64)]) -> PathBuf {
        let mut r = Report::new("imgmode-vmtest");
        let mut s = TestSuite::new("vmtest");
        for (n, ok, secs) in cases {
            let st = if *ok {
                TestCaseStatus::success()
            } else {
                TestCaseStatus::non_success(NonSuccessKind::Failure)
            };
            let mut c = TestCase::new(*n, st);
            c.set_time(std::time::Duration::from_secs_f64(*secs));
            s.add_test_case(c);
        }
        r.add_test_suite(s);
        let p = dir.join(name);
        std::fs::write(&p, r.to_string().unwrap()).unwrap();
        p
    }

    #[test]
    fn shards_merge_into_one_report_with_every_case_once() {
        let d = tempfile::tempdir().unwrap();
        let a = report(
            d.path(),
            "a.xml",
            &[("boot", true, 50.0), ("seed", true, 300.0)],
        );
        let b = report(d.path(), "b.xml", &[("ibi", false, 800.0)]);
        let out = d.path().join("out.xml");
        let m = merge(
            &[a.clone(), b.clone()],
            &out,
            Some(&["boot", "seed", "ibi"]),
        )
        .unwrap();
        assert_eq!(m.passed, ["boot", "seed"]);
        assert_eq!(m.failed, ["ibi"]);
        assert_eq!(m.longest_shard_seconds, 800.0);
        assert_eq!(m.total_seconds, 1150.0);
        let back = Report::deserialize_from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(back.tests, 3);
        assert_eq!(back.failures, 1);
        // a scenario no shard ran, and one two shards ran, are refused by name
        let e = merge(
            std::slice::from_ref(&a),
            &out,
            Some(&["boot", "seed", "ibi"]),
        )
        .unwrap_err();
        assert!(format!("{e}").contains("no shard ran ibi"), "{e}");
        let e = merge(&[a.clone(), a], &out, None).unwrap_err();
        assert!(format!("{e}").contains("the shards overlap"), "{e}");
        std::fs::write(d.path().join("bad.xml"), "not xml").unwrap();
        assert!(merge(&[d.path().join("bad.xml")], &out, None).is_err());
    }

    #[test]
    fn every_pipeline_definition_is_found() {
        let root = crate::workspace_root();
        let (w, t) = definitions(&root).unwrap();
        assert!(w.iter().any(|p| p.ends_with(".github/workflows/ci.yml")));
        assert!(t.iter().any(|p| p.ends_with("tekton/pipeline.yaml")));
        // both engines build the shared images once, run the same shards of the same tier
        // on them (pulled by digest), then merge with the same check
        let gh = std::fs::read_to_string(&w[0]).unwrap();
        let tk = std::fs::read_to_string(root.join("tekton/tasks.yaml")).unwrap();
        for text in [&gh, &tk] {
            assert!(text.contains("cargo xtask ci --no-vmtest"));
            assert!(text.contains("cargo xtask vmtest --ci-tier --build-only --artifacts-to"));
            assert!(text.contains("handoff.digest"));
            assert!(text.contains("cargo xtask vmtest --ci-tier --shard"));
            assert!(text.contains("--artifacts-from \"$ARTIFACTS\""));
            assert!(text.contains("--seed-owner-key"));
            assert!(text.contains("cargo xtask junit-merge --ci-tier"));
        }
    }
}
